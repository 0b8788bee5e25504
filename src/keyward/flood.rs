//! Cache misses past the budget of store reads
//! ([`KeywardBuilder::unknown_id_reads`](super::KeywardBuilder::unknown_id_reads)):
//! refused unread, counted, audited once a second; and the background
//! load of the ids known to exist, which are read past the budget.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::Keyward;
use crate::cache::{Presence, ReadPermit};
use crate::error::{StoreError, VerifyError};
use crate::telemetry::CacheResult;
use crate::token::{DisplayPrefix, KeyId};

/// How often, at most, refusals past the budget are audited (and
/// logged), in microseconds: one event for all refused since the last.
const AUDIT_EVERY_US: i64 = 1_000_000;
/// Ids per page of the scan that loads the known ids.
#[cfg(feature = "tokio")]
const SCAN_PAGE: usize = 20_000;
/// Most ids held: past it the set is not kept (about 16 bytes an id),
/// and past the budget only ids found in the cache are answered.
#[cfg(feature = "tokio")]
const MAX_KNOWN: usize = 16_777_216;

/// Refusals past the budget since the last audit of them.
#[derive(Debug)]
pub(super) struct Unread {
    last_audit_us: AtomicI64,
    since: AtomicU64,
}

impl Default for Unread {
    fn default() -> Self {
        Self {
            last_audit_us: AtomicI64::new(i64::MIN),
            since: AtomicU64::new(0),
        }
    }
}

impl Unread {
    /// Counts one refusal at `now_us`; when an audit is due, the number
    /// refused since the last (this one included).
    fn count(&self, now_us: i64) -> Option<u64> {
        self.since.fetch_add(1, Ordering::Relaxed);
        let last = self.last_audit_us.load(Ordering::Relaxed);
        if now_us.saturating_sub(last) < AUDIT_EVERY_US
            || self
                .last_audit_us
                .compare_exchange(last, now_us, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        Some(self.since.swap(0, Ordering::AcqRel))
    }
}

impl Keyward {
    /// Whether a cache miss on `id` may read the store: within the budget,
    /// or known to exist. Past the budget, before the known ids were ever
    /// loaded, it begins their load and reads while it runs, within a
    /// budget ten times the rate (the same burst), so that a cold start
    /// busier than the budget refuses no real key and a flood during the
    /// load is still bounded.
    ///
    /// # Errors
    /// [`VerifyError::Invalid`] without a read, or [`VerifyError::Store`]
    /// if the id cannot be told: the known ids cannot be loaded (no tokio
    /// runtime, a load failed a moment ago, too many to keep).
    pub(super) fn may_read(
        &self,
        id: &KeyId,
        prefix: DisplayPrefix,
        now_us: i64,
    ) -> Result<(), VerifyError> {
        let err = match self.inner.cache.may_read(id, now_us) {
            ReadPermit::Read => return Ok(()),
            ReadPermit::Refuse { load } => {
                if load {
                    self.load_known_ids(now_us);
                }
                VerifyError::Invalid
            }
            ReadPermit::Unloaded => {
                let cache = &self.inner.cache;
                if self.load_known_ids(now_us) && cache.take_loading_read(now_us) {
                    return Ok(());
                }
                // The load may have ended meanwhile: ask the set again.
                match cache.presence(id, now_us) {
                    Presence::Known => return Ok(()),
                    Presence::Absent { .. } => VerifyError::Invalid,
                    // "Cannot tell", which a client retries; never "no
                    // such key" for what may be a real one.
                    Presence::Unloaded { .. } => VerifyError::Store(StoreError::Unavailable {
                        message: "past the budget of store reads, and the ids known to exist \
                                  are not loaded"
                            .into(),
                        source: None,
                    }),
                }
            }
        };
        Err(self.refuse_unread((*id, prefix), now_us, err))
    }

    /// Refuses a token whose id is not known to exist, past the budget of
    /// reads, without reading the store: with `err`, the answer of an
    /// unknown id (or, when the known ids could not be loaded, of a store
    /// that cannot be asked).
    fn refuse_unread(
        &self,
        key: (KeyId, DisplayPrefix),
        now_us: i64,
        err: VerifyError,
    ) -> VerifyError {
        let inner = &*self.inner;
        inner.telemetry.lookup(CacheResult::OverBudget);
        inner.telemetry.refused(&err);
        if let Some(refused) = inner.unread.count(now_us) {
            tracing::warn!(target: "keyward", refused, last = %key.1, "store reads of ids not known to exist are over budget: such ids are refused without a read");
            self.audit_unread(key, &err, refused);
        }
        err
    }

    /// Loads the ids known to exist, in the background, unless a load is
    /// under way (or failed a moment ago); whether one is under way now.
    /// Without a tokio runtime there is none.
    pub(super) fn load_known_ids(&self, now_us: i64) -> bool {
        #[cfg(feature = "tokio")]
        {
            let known = &self.inner.cache.known;
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return known.loading();
            };
            let Some(generation) = known.begin_load(now_us) else {
                return known.loading();
            };
            let mut load = Load {
                keys: self.clone(),
                generation,
                ended: false,
            };
            runtime.spawn(async move {
                match load.keys.stored_ids().await {
                    Ok(Some(ids)) => {
                        tracing::info!(target: "keyward", ids = ids.len(), "loaded the ids known to exist");
                        load.end(Some(ids));
                    }
                    Ok(None) => {
                        tracing::warn!(target: "keyward", max = MAX_KNOWN, "too many keys to keep their ids: past the read budget, only cached keys are read");
                        load.ended = true;
                        load.keys.inner.cache.known.give_up();
                    }
                    Err(e) => {
                        tracing::warn!(target: "keyward", error = %e, "could not load the ids known to exist; trying again in 10 s");
                        load.end(None);
                    }
                }
            });
            true
        }
        #[cfg(not(feature = "tokio"))]
        {
            let _ = now_us;
            false
        }
    }

    /// Every stored id, page by page; `None` if there are too many to
    /// keep.
    #[cfg(feature = "tokio")]
    async fn stored_ids(&self) -> Result<Option<crate::cache::IdSet>, crate::error::StoreError> {
        let mut ids = self.inner.cache.known.empty();
        let mut after: Option<KeyId> = None;
        loop {
            let page = self
                .deadline(self.inner.store.scan_ids(after.as_ref(), SCAN_PAGE))
                .await?;
            ids.extend(page.iter().copied());
            if ids.len() > MAX_KNOWN {
                return Ok(None);
            }
            match page.last() {
                Some(last) if page.len() == SCAN_PAGE => after = Some(*last),
                _ => return Ok(Some(ids)),
            }
        }
    }
}

/// A load of the known ids under way: ended as failed if its task is
/// dropped first (its runtime shut down) or panicked, so that the next
/// may begin and no verify waits on it.
#[cfg(feature = "tokio")]
struct Load {
    keys: Keyward,
    generation: u64,
    ended: bool,
}

#[cfg(feature = "tokio")]
impl Load {
    fn end(&mut self, ids: Option<crate::cache::IdSet>) {
        self.ended = true;
        let now = self.keys.now_us();
        self.keys
            .inner
            .cache
            .known
            .end_load(self.generation, ids, now);
    }
}

#[cfg(feature = "tokio")]
impl Drop for Load {
    fn drop(&mut self) {
        if !self.ended {
            self.end(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_audited_once_a_second_with_their_number() {
        let unread = Unread::default();
        assert_eq!(unread.count(10_000_000), Some(1), "the first at once");
        assert_eq!(unread.count(10_000_001), None);
        assert_eq!(unread.count(10_500_000), None);
        assert_eq!(unread.count(11_000_000), Some(3));
        assert_eq!(unread.count(11_000_000), None);
        assert_eq!(unread.count(12_500_000), Some(2));
    }
}
