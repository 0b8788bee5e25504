//! Bounds on store reads for ids the cache does not know: a budget of
//! reads, and the ids known to exist, which are read past it.
//!
//! CRC32 is public, so anyone can make well-formed tokens with random ids,
//! and each new id would cost a store read. Each instance grants reads of
//! ids it has not seen exist at a bounded rate (the budget). Past it, an
//! id is read only if it is in [`KnownIds`], the set of every stored id,
//! loaded once a flood begins and kept in step by the change feed; any
//! other id is refused without a read, with the same answer as an unknown
//! one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use super::table::IdHash;
use super::IdSet;
use crate::limit::{gcra_now, Gcra, RateLimit};
use crate::token::KeyId;

/// Whether a cache miss may read the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadPermit {
    /// Read it: the id is known to exist, or the budget allows a read.
    Read,
    /// Past the budget and not known to exist: refuse it without a read.
    /// `load`: the set of known ids should be loaded (again).
    Refuse { load: bool },
    /// Past the budget, and the set of known ids was never loaded: read
    /// if a load of it is under way (begin one), so that a cold start
    /// busier than the budget refuses no real key; otherwise the id cannot
    /// be told.
    Unloaded,
}

/// A GCRA budget of store reads, shared by every miss of an instance.
#[derive(Debug)]
pub(crate) struct ReadBudget {
    gcra: Option<Gcra>,
    tat: AtomicU64,
}

impl ReadBudget {
    /// `None`: no bound.
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        Self {
            gcra: limit.map(|l| l.gcra()),
            tat: AtomicU64::new(0),
        }
    }

    /// Whether every read is granted.
    pub(crate) fn unbounded(&self) -> bool {
        self.gcra.is_none()
    }

    /// Whether a [`ReadBudget::take`] at `now_us` would find none left:
    /// a load, no write.
    #[inline]
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn spent(&self, now_us: i64) -> bool {
        self.gcra
            .as_ref()
            .is_some_and(|g| g.spent(&self.tat, gcra_now(now_us)))
    }

    /// Takes one read at `now_us`, if there is one to take.
    pub(crate) fn take(&self, now_us: i64) -> bool {
        self.gcra
            .is_none_or(|g| g.check(&self.tat, gcra_now(now_us)).is_ok())
    }

    /// Gives back a read taken by [`ReadBudget::take`] and not made.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn refund(&self) {
        if let Some(g) = &self.gcra {
            g.refund(&self.tat);
        }
    }
}

/// Whether an id is among the ids known to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    /// It is: read it past the budget.
    Known,
    /// It is not in the set, which may have missed a change (a reset of
    /// the feed) or be old (`reload`: a load should begin).
    Absent { reload: bool },
    /// The set was never loaded (or could not be kept: `kept` false).
    Unloaded { kept: bool },
}

#[derive(Debug)]
struct Known {
    /// Every stored id, as far as this instance knows (a superset: ids
    /// deleted since it was loaded may stay). `None`: not loaded.
    ids: Option<IdSet>,
    /// Ids reported while a load was under way, which its scan may have
    /// passed already (at most [`MAX_DURING`]).
    during: IdSet,
    /// More than [`MAX_DURING`] were reported during the load.
    overflowed: bool,
    /// Bumped by every reset: a load begun before it is not trusted.
    generation: u64,
    /// When `ids` was loaded, in clock microseconds.
    loaded_at_us: i64,
    /// A reset came after the load: changes may have been missed, so the
    /// set is loaded again (and used meanwhile).
    stale: bool,
}

/// The ids of the store, loaded on demand; see the module docs. (Loaded
/// by a task: without the `tokio` feature, never.)
#[derive(Debug)]
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) struct KnownIds {
    known: RwLock<Known>,
    loading: AtomicBool,
    /// No load begins before this instant (microseconds): after one that
    /// failed or was not trusted, [`RETRY_US`] later.
    retry_at_us: AtomicI64,
    /// The store holds more ids than are kept: never loaded again.
    too_many: AtomicBool,
    hash: IdHash,
}

/// How long after a failed (or untrusted) load the next may begin.
const RETRY_US: i64 = 10_000_000;
/// How old a loaded set may be before a flood loads it again: it is kept
/// in step by the feed, and this bounds what a feed that does not see
/// every writer (another process on a SQLite file) leaves out.
const RELOAD_US: i64 = 300_000_000;
/// How old a set that may have missed a change must be before a flood
/// loads it again: a flapping feed does not rescan the store more often.
const MIN_RELOAD_US: i64 = 60_000_000;
/// Most ids noted while a load is under way (past it, the load is not
/// trusted, and loaded again).
const MAX_DURING: usize = 100_000;

impl KnownIds {
    pub(crate) fn new(hash: IdHash) -> Self {
        Self {
            known: RwLock::new(Known {
                ids: None,
                during: IdSet::with_hasher(hash),
                overflowed: false,
                generation: 0,
                loaded_at_us: i64::MIN,
                stale: false,
            }),
            loading: AtomicBool::new(false),
            retry_at_us: AtomicI64::new(i64::MIN),
            too_many: AtomicBool::new(false),
            hash,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.known.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Known> {
        self.known.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `id` is known to exist at `now_us`, and whether the set
    /// should be loaded again: it is old, or may have missed a change (a
    /// reset, or `feed_down`: the change feed is not reporting), and at
    /// least [`MIN_RELOAD_US`] old.
    pub(crate) fn presence(&self, id: &KeyId, now_us: i64, feed_down: bool) -> Presence {
        let known = self.read();
        let age = now_us.saturating_sub(known.loaded_at_us);
        match &known.ids {
            Some(ids) if ids.contains(id) => Presence::Known,
            Some(_) => Presence::Absent {
                reload: age >= RELOAD_US || ((known.stale || feed_down) && age >= MIN_RELOAD_US),
            },
            None => Presence::Unloaded {
                kept: !self.too_many.load(Ordering::Acquire),
            },
        }
    }

    /// `id` exists, or may: it was read, or reported changed (a create).
    pub(crate) fn note(&self, id: &KeyId) {
        let loading = self.loading.load(Ordering::Acquire);
        {
            let known = self.read();
            let present = known.ids.as_ref().map(|ids| ids.contains(id));
            if !loading && present != Some(false) {
                return;
            }
        }
        let mut known = self.write();
        if let Some(ids) = known.ids.as_mut() {
            ids.insert(*id);
        }
        if self.loading.load(Ordering::Acquire) {
            if known.during.len() < MAX_DURING {
                known.during.insert(*id);
            } else {
                known.overflowed = true;
            }
        }
    }

    /// The feed was reset: changes may have been missed. The set stays in
    /// use (it misses at most keys created meanwhile) and is loaded again
    /// when a flood next needs it.
    pub(crate) fn reset(&self) {
        let mut known = self.write();
        known.stale = true;
        known.generation = known.generation.wrapping_add(1);
    }

    /// Whether a load is under way.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn loading(&self) -> bool {
        self.loading.load(Ordering::Acquire)
    }

    /// Claims the load: `Some(generation)` for the one caller that should
    /// scan the store; `None` if a load is under way, one failed less than
    /// [`RETRY_US`] ago, or the store holds too many ids to keep.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn begin_load(&self, now_us: i64) -> Option<u64> {
        if self.too_many.load(Ordering::Acquire)
            || now_us < self.retry_at_us.load(Ordering::Acquire)
            || self.loading.load(Ordering::Acquire)
            || self.loading.swap(true, Ordering::AcqRel)
        {
            return None;
        }
        let mut known = self.write();
        known.during.clear();
        known.overflowed = false;
        Some(known.generation)
    }

    /// An empty set to fill, with the cache's keyed hash.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn empty(&self) -> IdSet {
        IdSet::with_hasher(self.hash)
    }

    /// Ends the load begun at `generation` with the ids it scanned
    /// (`None`: it failed) and those noted meanwhile. If a reset came
    /// between, or too many were noted to be sure of, the set is used but
    /// marked stale, to be loaded again later.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn end_load(&self, generation: u64, ids: Option<IdSet>, now_us: i64) {
        let mut known = self.write();
        let retry = now_us.saturating_add(RETRY_US);
        let during = std::mem::replace(&mut known.during, self.empty());
        match ids {
            None => self.retry_at_us.store(retry, Ordering::Release),
            Some(mut ids) => {
                ids.extend(during);
                let trusted = known.generation == generation && !known.overflowed;
                if !trusted {
                    self.retry_at_us.store(retry, Ordering::Release);
                }
                known.ids = Some(ids);
                known.stale = !trusted;
                known.loaded_at_us = now_us;
            }
        }
        drop(known);
        self.loading.store(false, Ordering::Release);
    }

    /// The store holds more ids than are kept: drops the set and never
    /// loads it again (past the budget, only cached keys are read).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn give_up(&self) {
        self.too_many.store(true, Ordering::Release);
        let mut known = self.write();
        known.ids = None;
        known.during = self.empty();
        drop(known);
        self.loading.store(false, Ordering::Release);
    }

    /// Ids held (0 when not loaded).
    pub(crate) fn len(&self) -> usize {
        self.read().ids.as_ref().map_or(0, HashSet::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> KeyId {
        KeyId::derived(&[n])
    }

    #[test]
    fn the_budget_grants_its_burst_then_its_rate() {
        let budget = ReadBudget::new(Some(RateLimit::per_second(3).expect("valid")));
        let t0 = 1_000_000_000;
        assert!((0..3).all(|_| budget.take(t0)));
        assert!(!budget.take(t0));
        assert!(!budget.take(t0 + 300_000), "a third of a second: not yet");
        assert!(budget.take(t0 + 334_000));
        assert!(!budget.take(t0 + 334_000));
        let unbounded = ReadBudget::new(None);
        assert!((0..10_000).all(|_| unbounded.take(t0)));
    }

    const ABSENT_RELOAD: Presence = Presence::Absent { reload: true };
    const ABSENT: Presence = Presence::Absent { reload: false };

    #[test]
    fn ids_noted_during_a_load_are_kept() {
        let known = KnownIds::new(IdHash::random());
        assert_eq!(
            known.presence(&id(1), 0, false),
            Presence::Unloaded { kept: true }
        );
        known.note(&id(1));
        assert_eq!(known.len(), 0, "nothing to note into yet");

        let generation = known.begin_load(0).expect("first");
        assert!(known.begin_load(0).is_none(), "one load at a time");
        known.note(&id(2)); // created while the scan runs
        let mut scanned = known.empty();
        scanned.insert(id(1));
        known.end_load(generation, Some(scanned), 0);
        assert_eq!(known.presence(&id(1), 0, false), Presence::Known);
        assert_eq!(known.presence(&id(2), 0, false), Presence::Known);
        assert_eq!(known.presence(&id(3), 0, false), ABSENT);
        known.note(&id(3));
        assert_eq!(known.presence(&id(3), 0, false), Presence::Known);
        assert_eq!(known.len(), 3);
        // Old sets are loaded again.
        assert_eq!(known.presence(&id(4), RELOAD_US, false), ABSENT_RELOAD);
    }

    #[test]
    fn a_reset_keeps_the_set_in_use_and_asks_for_a_load_after_a_while() {
        let known = KnownIds::new(IdHash::random());
        let generation = known.begin_load(0).expect("first");
        let mut scanned = known.empty();
        scanned.insert(id(1));
        known.end_load(generation, Some(scanned), 0);

        known.reset();
        assert_eq!(
            known.presence(&id(1), 0, false),
            Presence::Known,
            "still in use"
        );
        assert_eq!(known.presence(&id(2), 0, false), ABSENT, "not at once");
        let later = MIN_RELOAD_US;
        assert_eq!(known.presence(&id(2), later, false), ABSENT_RELOAD);
        // A reset during the load: its scan is used, not trusted.
        let generation = known.begin_load(later).expect("again");
        known.reset();
        let mut scanned = known.empty();
        scanned.insert(id(2));
        known.end_load(generation, Some(scanned), later);
        assert_eq!(known.presence(&id(2), later, false), Presence::Known);
        assert_eq!(known.presence(&id(1), later, false), ABSENT, "rescanned");
        let again = later + MIN_RELOAD_US;
        assert_eq!(known.presence(&id(3), again, false), ABSENT_RELOAD);
        assert!(
            known.begin_load(later + RETRY_US - 1).is_none(),
            "not at once"
        );
        let generation = known.begin_load(again).expect("later");
        known.end_load(generation, Some(known.empty()), again);
        assert_eq!(
            known.presence(&id(3), again + MIN_RELOAD_US, false),
            ABSENT,
            "trusted"
        );
        // While the feed is down, a set a minute old is loaded again.
        assert_eq!(
            known.presence(&id(3), again + MIN_RELOAD_US, true),
            ABSENT_RELOAD
        );
    }

    #[test]
    fn a_failed_load_waits_and_too_many_ids_stop_loading() {
        let known = KnownIds::new(IdHash::random());
        let generation = known.begin_load(0).expect("first");
        known.end_load(generation, None, 5);
        assert_eq!(
            known.presence(&id(1), 5, false),
            Presence::Unloaded { kept: true }
        );
        assert!(known.begin_load(5 + RETRY_US - 1).is_none(), "not at once");
        assert!(known.begin_load(5 + RETRY_US).is_some(), "but later");
        known.give_up();
        assert!(known.begin_load(i64::MAX).is_none(), "never again");
        assert_eq!(
            known.presence(&id(1), 5, false),
            Presence::Unloaded { kept: false }
        );
    }

    #[test]
    fn too_many_noted_during_a_load_make_it_untrusted() {
        let known = KnownIds::new(IdHash::random());
        let generation = known.begin_load(0).expect("first");
        for n in 0..=MAX_DURING as u64 {
            known.note(&KeyId::derived(&n.to_le_bytes()));
        }
        known.end_load(generation, Some(known.empty()), 0);
        assert_eq!(known.presence(&id(200), 0, false), ABSENT);
        assert_eq!(
            known.presence(&id(200), MIN_RELOAD_US, false),
            ABSENT_RELOAD
        );
        assert_eq!(known.len(), MAX_DURING, "what was noted is kept");
    }
}
