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
/// Records per page of the scan that loads the known ids.
#[cfg(feature = "tokio")]
const SCAN_PAGE: usize = 5_000;
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
    /// loaded, waits for their load (bounded, like the whole verify, by
    /// the store timeout), so that a cold start busier than the budget
    /// refuses no real key.
    ///
    /// # Errors
    /// [`VerifyError::Invalid`] without a read, or [`VerifyError::Store`]
    /// if the known ids could not be loaded.
    pub(super) async fn may_read(
        &self,
        id: &KeyId,
        prefix: DisplayPrefix,
        now_us: i64,
    ) -> Result<(), VerifyError> {
        let known = &self.inner.cache.known;
        match self.inner.cache.may_read(id, now_us) {
            ReadPermit::Read => return Ok(()),
            ReadPermit::Refuse { load } => {
                if load {
                    self.load_known_ids(now_us);
                }
            }
            ReadPermit::AwaitLoad => {
                let ended = known.ended();
                self.load_known_ids(now_us);
                if known.loading() {
                    ended.await;
                    match known.presence(id, now_us) {
                        Presence::Known => return Ok(()),
                        Presence::Absent { .. } => {}
                        Presence::Unloaded { .. } => {
                            let err = VerifyError::Store(StoreError::Unavailable {
                                message: "the ids known to exist could not be loaded; \
                                          past the read budget an id is not read without them"
                                    .into(),
                                source: None,
                            });
                            return Err(self.refuse(Some((*id, prefix)), err));
                        }
                    }
                }
            }
        }
        Err(self.refuse_unread((*id, prefix), now_us))
    }

    /// Refuses a token whose id is not known to exist, past the budget of
    /// reads, without reading the store: the answer of an unknown id.
    fn refuse_unread(&self, key: (KeyId, DisplayPrefix), now_us: i64) -> VerifyError {
        let err = VerifyError::Invalid;
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
    /// under way (or failed a moment ago). Without a tokio runtime there
    /// is none: past the budget, only ids in the cache are answered.
    pub(super) fn load_known_ids(&self, now_us: i64) {
        #[cfg(feature = "tokio")]
        {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let Some(generation) = self.inner.cache.known.begin_load(now_us) else {
                return;
            };
            let keys = self.clone();
            runtime.spawn(async move {
                let known = &keys.inner.cache.known;
                match keys.scan_ids().await {
                    Ok(Some(ids)) => {
                        tracing::info!(target: "keyward", ids = ids.len(), "loaded the ids known to exist");
                        known.end_load(generation, Some(ids), keys.now_us());
                    }
                    Ok(None) => {
                        tracing::warn!(target: "keyward", max = MAX_KNOWN, "too many keys to keep their ids: past the read budget, only cached keys are read");
                        known.give_up();
                    }
                    Err(e) => {
                        tracing::warn!(target: "keyward", error = %e, "could not load the ids known to exist; trying again in 10 s");
                        known.end_load(generation, None, keys.now_us());
                    }
                }
            });
        }
        #[cfg(not(feature = "tokio"))]
        let _ = now_us;
    }

    /// Every stored id, page by page; `None` if there are too many to
    /// keep.
    #[cfg(feature = "tokio")]
    async fn scan_ids(&self) -> Result<Option<crate::cache::IdSet>, crate::error::StoreError> {
        let mut ids = self.inner.cache.known.empty();
        let mut after: Option<KeyId> = None;
        loop {
            let page = self
                .deadline(self.inner.store.scan(after.as_ref(), SCAN_PAGE))
                .await?;
            ids.extend(page.iter().map(|r| r.id));
            if ids.len() > MAX_KNOWN {
                return Ok(None);
            }
            match page.last() {
                Some(last) if page.len() == SCAN_PAGE => after = Some(last.id),
                _ => return Ok(Some(ids)),
            }
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
