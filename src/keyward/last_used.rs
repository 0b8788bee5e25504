//! Coalescing of "last used" writes: at most one per key per interval,
//! written in batches off the request path.

use std::collections::HashMap;
#[cfg(feature = "tokio")]
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};

use super::Keyward;
use crate::cache::CachedKey;
use crate::clock::micros_to_time;
use crate::error::StoreError;
use crate::store::KeyStore;
use crate::token::KeyId;

/// Pending last-used entries that force a flush regardless of time.
const MAX_PENDING: usize = 4096;
/// Most pending last-used entries kept while the store fails.
const MAX_PENDING_HARD: usize = 65_536;

impl Keyward {
    /// `work` (store calls), given up after the store timeout.
    #[cfg(feature = "tokio")]
    pub(super) async fn deadline<T>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        let limit = self.inner.store_timeout;
        match crate::deadline::within(limit, Box::pin(work)).await {
            Some(result) => result,
            None => Err(self.timed_out()),
        }
    }

    /// Writes every pending "last used" instant to the store now. Call it
    /// at shutdown so that the last minute of use is not lost.
    ///
    /// # Errors
    /// [`StoreError`]; the entries stay pending and are retried.
    pub async fn flush_last_used(&self) -> Result<usize, StoreError> {
        let now = self.now();
        let flushed = self.inner.last_used.flush(&*self.inner.store, now).await;
        self.inner.telemetry.backlog(self.inner.last_used.len());
        flushed
    }

    /// Starts writing the pending "last used" instants on a background
    /// task, unless one is running: a request never waits for the store's
    /// write lock. Without a tokio runtime (or the `tokio` feature) the
    /// entries stay pending, bounded, for the next
    /// [`Keyward::flush_last_used`] or [`Keyward::sweep`].
    pub(super) fn schedule_flush(&self, now_us: i64) {
        self.inner.telemetry.backlog(self.inner.last_used.len());
        #[cfg(feature = "tokio")]
        {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let last_used = &self.inner.last_used;
            if last_used.flushing.swap(true, Ordering::AcqRel) {
                return;
            }
            let keys = self.clone();
            runtime.spawn(async move {
                let inner = &*keys.inner;
                // Cleared however the task ends, even if it is dropped
                // with its runtime.
                let _running = Running(&inner.last_used.flushing);
                let now = micros_to_time(now_us);
                let flushed = keys.deadline(inner.last_used.flush(&*inner.store, now));
                if let Err(e) = flushed.await {
                    // The entries stay pending and go with the next flush.
                    tracing::warn!(target: "keyward", error = %e, "could not record last-used times; will retry");
                }
                inner.telemetry.backlog(inner.last_used.len());
            });
        }
        #[cfg(not(feature = "tokio"))]
        let _ = now_us;
    }
}

/// Clears a "running" flag when dropped.
#[cfg(feature = "tokio")]
struct Running<'a>(&'a AtomicBool);

#[cfg(feature = "tokio")]
impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Coalesces "last used" writes: at most one per key per interval.
///
/// A successful verify whose stored `last_used_at` is older than the
/// interval leaves an entry here; entries go to the store in one batch
/// when the previous flush is an interval old (or many are pending), on a
/// background task, never inside the request, or when the host calls
/// [`Keyward::flush_last_used`] or [`Keyward::sweep`].
pub(super) struct LastUsed {
    pub(super) interval: Duration,
    interval_us: i64,
    state: Mutex<Pending>,
    /// A background flush is running: at most one at a time.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    flushing: AtomicBool,
}

struct Pending {
    entries: HashMap<KeyId, DateTime<Utc>>,
    last_flush: Option<DateTime<Utc>>,
    /// When the last flush failed, if the last flush failed.
    failed_at: Option<DateTime<Utc>>,
}

impl LastUsed {
    /// At most one write per key per `interval`.
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            interval,
            interval_us: interval.num_microseconds().unwrap_or(i64::MAX),
            state: Mutex::new(Pending {
                entries: HashMap::new(),
                last_flush: None,
                failed_at: None,
            }),
            flushing: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes a use; returns whether a flush is due. A key seen within the
    /// interval costs one atomic read here, no lock.
    #[inline]
    pub(super) fn note(&self, key: &CachedKey, now_us: i64) -> bool {
        let last = key.last_used_us.load(Ordering::Relaxed);
        if last != i64::MIN && now_us.saturating_sub(last) < self.interval_us {
            return false;
        }
        self.note_locked(key, now_us)
    }

    /// [`LastUsed::note`] of a use the store does not know yet, once an
    /// interval.
    #[cold]
    #[inline(never)]
    fn note_locked(&self, key: &CachedKey, now_us: i64) -> bool {
        let now = micros_to_time(now_us);
        let mut p = self.lock();
        if p.entries.len() >= MAX_PENDING_HARD && !p.entries.contains_key(&key.id) {
            // The store has been failing for a while: bound memory. This
            // use is not recorded (and not marked as seen, so the key's
            // next use after the store is back will be).
            return false;
        }
        key.last_used_us.fetch_max(now_us, Ordering::Relaxed);
        let at = p.entries.entry(key.id).or_insert(now);
        *at = (*at).max(now);
        // While the store is failing, retry once per interval, not on
        // every verify.
        let failing = p.failed_at.is_some_and(|f| now - f < self.interval);
        (!failing && p.entries.len() >= MAX_PENDING)
            || p.last_flush.is_none_or(|f| now - f >= self.interval)
    }

    /// How many last-used times wait to be written.
    pub(super) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub(super) fn pending(&self, id: &KeyId) -> Option<DateTime<Utc>> {
        self.lock().entries.get(id).copied()
    }

    pub(super) fn forget(&self, id: &KeyId) {
        self.lock().entries.remove(id);
    }

    pub(super) async fn flush(
        &self,
        store: &dyn KeyStore,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        // Copied, not drained: entries leave only once written, so a
        // flush whose future is dropped (a cancelled request) loses nothing.
        let batch: Vec<(KeyId, DateTime<Utc>)> = {
            let mut p = self.lock();
            p.last_flush = Some(now);
            p.entries.iter().map(|(id, at)| (*id, *at)).collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let result = store.record_last_used(&batch).await;
        let mut p = self.lock();
        match result {
            Ok(()) => {
                p.failed_at = None;
                for (id, at) in &batch {
                    // A newer use noted meanwhile stays pending.
                    if p.entries.get(id) == Some(at) {
                        p.entries.remove(id);
                    }
                }
                // A backlog (from a store outage, or no runtime to flush
                // in the background) does not keep its memory once written.
                if p.entries.capacity() > MAX_PENDING && p.entries.len() < MAX_PENDING / 4 {
                    p.entries.shrink_to(MAX_PENDING / 4);
                }
                Ok(batch.len())
            }
            Err(e) => {
                p.failed_at = Some(now);
                Err(e)
            }
        }
    }
}
