//! Single-flight loads: concurrent misses on one id share one store read.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use super::Cache;
use crate::token::KeyId;

/// The reads in progress in one shard.
pub(super) type Flights = HashMap<KeyId, Arc<Flight>>;

/// One store read in progress for an id; followers wait on it.
#[derive(Default)]
pub(super) struct Flight {
    done: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

/// Who reads the store for a missed id: see [`Cache::begin_load`].
pub(crate) enum Load {
    /// Read the store; dropping the guard (after [`Cache::put`], or on
    /// error or cancellation) releases the followers.
    Leader(LoadGuard),
    /// Another request is reading it: await, then look again.
    Follower(WaitLoad),
}

/// Held by the leader of a load; releases followers on drop.
pub(crate) struct LoadGuard {
    cache: Arc<Cache>,
    id: KeyId,
    flight: Arc<Flight>,
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        let shard = self.cache.stripe(&self.id);
        {
            let mut inflight = self.cache.inflight[shard]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if inflight
                .get(&self.id)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                inflight.remove(&self.id);
            }
        }
        self.flight.done.store(true, Ordering::Release);
        let wakers = std::mem::take(
            &mut *self
                .flight
                .wakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for w in wakers {
            w.wake();
        }
    }
}

/// Resolves when the leader's load is over (whatever its outcome).
pub(crate) struct WaitLoad(Arc<Flight>);

impl Future for WaitLoad {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.done.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let mut wakers = self.0.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked again under the lock the leader takes to wake: no lost
        // wake-up.
        if self.0.done.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Cache {
    /// Makes the caller the one that reads `id` from the store, or tells
    /// it to wait for the request already doing so.
    pub(crate) fn begin_load(self: &Arc<Self>, id: &KeyId) -> Load {
        let mut inflight = self.inflight[self.stripe(id)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = inflight.get(id) {
            return Load::Follower(WaitLoad(flight.clone()));
        }
        let flight = Arc::new(Flight::default());
        inflight.insert(*id, flight.clone());
        Load::Leader(LoadGuard {
            cache: self.clone(),
            id: *id,
            flight,
        })
    }
}
