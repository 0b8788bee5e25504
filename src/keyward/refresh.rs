//! Background reads of keys served past their time limit
//! (stale-while-revalidate): a verify that answers from an aged entry
//! puts it on one of a few bounded queues (by id), and one task per queue
//! reads its keys again, one after another, so a slow read holds up only
//! its queue. The verify never spawns, allocates or waits for it. The
//! reads are bounded by a budget per instance
//! ([`KeywardBuilder::cache_refresh_reads`](crate::KeywardBuilder::cache_refresh_reads)):
//! past it, an aged entry answers on and is queued by a later verify.

use std::sync::Arc;

use super::Keyward;
use crate::cache::{CachedKey, ReadBudget};
use crate::limit::RateLimit;
#[cfg(feature = "tokio")]
use crate::telemetry::Refresh;

/// Entries waiting to be read again, at most, per queue: past it, an
/// aged entry is queued by a later verify (it is served meanwhile).
#[cfg(feature = "tokio")]
const QUEUE: usize = 1_024;
/// Queues, each with its task: reads of different keys in parallel.
#[cfg(feature = "tokio")]
const QUEUES: usize = 4;

#[cfg(feature = "tokio")]
type Sender = tokio::sync::mpsc::Sender<Arc<CachedKey>>;

/// The queues of an instance; their tasks are started by the first
/// entry, in the runtime of the verify that queues it (again if that
/// runtime has gone).
#[derive(Debug)]
pub(super) struct RefreshQueue {
    #[cfg(feature = "tokio")]
    tx: std::sync::Mutex<Vec<Sender>>,
    /// Background reads granted.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    budget: ReadBudget,
}

impl RefreshQueue {
    /// Queues whose reads are bounded by `budget` (`None`: no bound).
    pub(super) fn new(budget: Option<RateLimit>) -> Self {
        Self {
            #[cfg(feature = "tokio")]
            tx: std::sync::Mutex::default(),
            budget: ReadBudget::new(budget),
        }
    }
}

impl Keyward {
    /// Reads a key served past its time limit again, in the background:
    /// one read per entry (the entry's flag), shared with any load of the
    /// same id (the cache's single flight), cached unless the key changed
    /// meanwhile; if it was not cached (it failed, or raced a change) the
    /// stale entry goes too. Past the budget of background reads, or
    /// without a tokio runtime, the entry is served on (a later verify
    /// queues it) until its stale window ends, then read as any miss.
    #[inline(always)]
    pub(super) fn revalidate(&self, entry: &Arc<CachedKey>, now_us: i64) {
        #[cfg(feature = "tokio")]
        {
            use std::sync::atomic::Ordering;
            // Loads first, inline: a hot entry's line is not written on
            // every hit, nor the budget's past it, and past it the verify
            // makes no call.
            if entry.refreshing.load(Ordering::Relaxed) {
                return;
            }
            if self.inner.refresh.budget.spent(now_us) {
                self.inner.telemetry.refresh(Refresh::OverBudget);
                return;
            }
            self.request_refresh(entry, now_us);
        }
        #[cfg(not(feature = "tokio"))]
        let _ = (entry, now_us);
    }

    /// [`Keyward::revalidate`] once its loads found a read to take: out
    /// of line, so that an aged entry's hit past the budget costs the
    /// verify two loads (and, with the `metrics` feature, the count of
    /// it).
    #[cfg(feature = "tokio")]
    #[inline(never)]
    fn request_refresh(&self, entry: &Arc<CachedKey>, now_us: i64) {
        use std::sync::atomic::Ordering;
        let budget = &self.inner.refresh.budget;
        if !budget.take(now_us) {
            self.inner.telemetry.refresh(Refresh::OverBudget);
            return;
        }
        // A read granted and not made is given back: another verify
        // queued the entry first, or it could not be queued (a full
        // queue, no runtime; a later verify queues it).
        if entry.refreshing.swap(true, Ordering::AcqRel) {
            budget.refund();
        } else if self.enqueue_refresh(entry) {
            self.inner.telemetry.refresh(Refresh::Queued);
        } else {
            entry.refreshing.store(false, Ordering::Release);
            budget.refund();
        }
    }

    /// Queues `entry`, starting the queue's task if there is none (or its
    /// runtime is gone); whether it was queued.
    #[cfg(feature = "tokio")]
    fn enqueue_refresh(&self, entry: &Arc<CachedKey>) -> bool {
        use tokio::sync::mpsc::error::TrySendError;
        let mut tx = self
            .inner
            .refresh
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let queue = entry.id.as_u64() as usize % QUEUES;
        if let Some(sender) = tx.get(queue) {
            match sender.try_send(Arc::clone(entry)) {
                Ok(()) => return true,
                Err(TrySendError::Full(_)) => return false,
                Err(TrySendError::Closed(_)) => {}
            }
        }
        // None yet, or the runtime that ran them has gone: start them in
        // this verify's runtime.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        *tx = (0..QUEUES)
            .map(|_| {
                let (sender, rx) = tokio::sync::mpsc::channel(QUEUE);
                runtime.spawn(drain(Arc::downgrade(&self.inner), rx));
                sender
            })
            .collect();
        tx[queue].try_send(Arc::clone(entry)).is_ok()
    }

    /// Reads `entry`'s key again and caches it, or drops the entry.
    #[cfg(feature = "tokio")]
    async fn refresh(&self, entry: Arc<CachedKey>) {
        use crate::cache::Lookup;
        let id = entry.id;
        let now_us = self.now_us();
        let Lookup::Miss(ticket) = self.inner.cache.get(&id, now_us) else {
            // Read again meanwhile (a verify's miss, or a change). The
            // read granted is not given back: the store was read for the
            // key all the same, and a refund this late could be one the
            // budget has refilled since, granting a read twice.
            return;
        };
        if let Err(e) = self.deadline(self.load(ticket, &id, now_us)).await {
            tracing::warn!(target: "keyward", key = %entry.prefix, error = %e, "could not read a key again; it is read before its next answer");
        }
        // Replaced by the read, or dropped: never served stale on after a
        // read that failed or raced a change (the next verify reads the
        // store, and fails closed if it is down).
        self.inner.cache.drop_if_still(&entry);
    }
}

/// A queue's task: ends when the instance does (it holds no strong
/// reference between entries) or its runtime shuts down.
#[cfg(feature = "tokio")]
async fn drain(
    inner: std::sync::Weak<super::Inner>,
    mut rx: tokio::sync::mpsc::Receiver<Arc<CachedKey>>,
) {
    while let Some(entry) = rx.recv().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        Keyward { inner }.refresh(entry).await;
    }
}
