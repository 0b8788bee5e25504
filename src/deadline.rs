//! Deadlines for store calls on any executor.
//!
//! A verify must not wait on a sick store for longer than its timeout,
//! whatever runtime the host uses (tokio's timers panic outside a tokio
//! runtime with timers on). One timer thread per process, started on
//! first use, wakes the futures whose deadline passed; a future that
//! finishes first takes its entry back. The timer reads the monotonic
//! clock: deadlines are about real waiting, not about the injectable
//! [`Clock`](crate::Clock) that key lifetimes follow.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Runs `work` for at most `limit`: `None` if it had not finished by then
/// (and it is dropped). `work` is already pinned (a boxed future, say): a
/// deadline adds no allocation of its own.
pub(crate) fn within<F: Future + Unpin>(limit: Duration, work: F) -> Within<F> {
    Within {
        work,
        at: Instant::now().checked_add(limit),
        entry: None,
    }
}

/// The future of [`within`].
pub(crate) struct Within<F> {
    work: F,
    /// `None`: too far away to represent, so never.
    at: Option<Instant>,
    /// Where this future's waker is in the timer.
    entry: Option<Entry>,
}

type Entry = (Instant, u64);

impl<F: Future + Unpin> Future for Within<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(out) = Pin::new(&mut this.work).poll(cx) {
            this.forget();
            return Poll::Ready(Some(out));
        }
        let Some(at) = this.at else {
            return Poll::Pending;
        };
        if Instant::now() >= at {
            this.forget();
            return Poll::Ready(None);
        }
        match timer() {
            Some(timer) => this.entry = Some(timer.register(this.entry, at, cx.waker())),
            // No timer thread could be started: wait as long as the work.
            None => this.at = None,
        }
        Poll::Pending
    }
}

impl<F> Within<F> {
    fn forget(&mut self) {
        if let (Some(entry), Some(timer)) = (self.entry.take(), TIMER.get()) {
            timer.lock().waiting.remove(&entry);
        }
    }
}

impl<F> Drop for Within<F> {
    fn drop(&mut self) {
        self.forget();
    }
}

struct Timer {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    next_id: u64,
    waiting: BTreeMap<Entry, Waker>,
}

static TIMER: OnceLock<Timer> = OnceLock::new();
static STARTED: OnceLock<bool> = OnceLock::new();

/// The timer, its thread started on first use; `None` if the thread could
/// not be started.
fn timer() -> Option<&'static Timer> {
    let timer = TIMER.get_or_init(|| Timer {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
    });
    let started = STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("keyward-deadline".into())
            .spawn(move || timer.run());
        if let Err(e) = &spawned {
            tracing::error!(target: "keyward", error = %e, "could not start the deadline timer; store calls will not time out");
        }
        spawned.is_ok()
    });
    started.then_some(timer)
}

impl Timer {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts (or refreshes) a waker to wake at `at`.
    fn register(&self, entry: Option<Entry>, at: Instant, waker: &Waker) -> Entry {
        let mut state = self.lock();
        if let Some(old) = entry.and_then(|e| state.waiting.get_mut(&e)) {
            if !old.will_wake(waker) {
                old.clone_from(waker);
            }
            // `entry` is `Some` here.
            return entry.unwrap_or((at, 0));
        }
        state.next_id = state.next_id.wrapping_add(1);
        let entry = (at, state.next_id);
        let earliest = state
            .waiting
            .keys()
            .next()
            .is_none_or(|first| entry < *first);
        state.waiting.insert(entry, waker.clone());
        drop(state);
        if earliest {
            self.changed.notify_one();
        }
        entry
    }

    fn run(&self) {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(entry) = state.waiting.first_key_value().map(|(k, _)| *k) {
                if entry.0 > now {
                    break;
                }
                if let Some(waker) = state.waiting.remove(&entry) {
                    due.push(waker);
                }
            }
            if !due.is_empty() {
                drop(state);
                due.into_iter().for_each(Waker::wake);
                state = self.lock();
                continue;
            }
            let wait = state
                .waiting
                .first_key_value()
                .map(|(k, _)| k.0.saturating_duration_since(now));
            state = match wait {
                Some(wait) => {
                    self.changed
                        .wait_timeout(state, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_finishes_in_time_is_kept() {
        let out = within(Duration::from_secs(5), Box::pin(async { 7 })).await;
        assert_eq!(out, Some(7));
    }

    #[tokio::test]
    async fn work_that_hangs_is_given_up() {
        let start = Instant::now();
        let out = within(Duration::from_millis(30), std::future::pending::<()>()).await;
        assert_eq!(out, None);
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    /// Not only on tokio: any executor, here a bare thread-parking one.
    #[test]
    fn works_without_a_tokio_runtime() {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(within(
            Duration::from_millis(20),
            std::future::pending::<()>()
        ));
        let out = loop {
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(out) => break out,
                Poll::Pending => std::thread::park(),
            }
        };
        assert_eq!(out, None);
    }
}
