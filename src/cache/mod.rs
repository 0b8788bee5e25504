//! The verification cache: one implementation in the core, in front of
//! every store.
//!
//! It holds what a verify needs of each recently seen key (never the
//! metadata), and remembers recently seen unknown ids, so that neither a
//! hot key nor a flood of made-up ids reaches the store more than once per
//! `ttl`. Both maps are bounded in entries and sharded, so a flood of
//! unknown ids never evicts known keys.
//!
//! Staleness is bounded twice: by the store's change feed
//! ([`KeyStore::subscribe`](crate::store::KeyStore::subscribe)), which drops an
//! entry the moment its key changes, and by `ttl`, the fallback when a feed
//! is missing or has dropped. A load that raced an invalidation is used
//! once and not cached (each shard counts its invalidations), so a
//! revocation can never be undone by a slow read.
//!
//! Concurrent misses on one id share one store read: the first becomes the
//! leader ([`Cache::begin_load`]), the others wait for it and then look
//! again, so a burst on a just-expired hot key, or many requests with one
//! made-up id, cost one read.

use std::collections::{HashMap, HashSet};

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

mod entry;
mod flight;
mod flood;
mod table;

pub(crate) use entry::CachedKey;
use flight::Flights;
pub(crate) use flight::Load;
pub(crate) use flood::{Presence, ReadBudget, ReadPermit};
/// A set of ids, hashed with the cache's keyed hash.
pub(crate) type IdSet = HashSet<KeyId, IdHash>;
use flood::KnownIds;
use table::{fold, IdHash, Table};

use crate::limit::{gcra_now, Stash};
use crate::store::ChangeListener;
use crate::token::KeyId;

/// Stripes of the unknown-id map, the in-flight loads and the
/// invalidation counters.
const SHARDS: usize = 16;
/// Table slots checked for stale entries on each insert.
const PURGE_STEP: usize = 8;

/// The answer of [`Cache::get`].
pub(crate) enum Lookup {
    /// A fresh entry.
    Hit(Held),
    /// The id was looked up recently and does not exist.
    Unknown,
    /// Ask the store; pass the ticket to [`Cache::put`].
    Miss(Ticket),
}

/// Where [`Cache::locate`] found an id: a slot of its probe run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Located(usize);

/// Proof of the shard's invalidation count before a store read.
pub(crate) struct Ticket {
    shard: usize,
    epoch: u64,
}

/// A cached entry as a lookup hands it out: a guard on the table's slot,
/// or an entry that is not (or no longer) in the table.
pub(crate) type Held = arc_swap::Guard<Arc<CachedKey>>;

/// What only writers touch, under one mutex.
#[derive(Default)]
struct Writer {
    len: usize,
    /// Where the incremental purge of stale entries goes on.
    cursor: usize,
}

type UnknownShard = HashMap<KeyId, i64, IdHash>;

/// Bounded, time-limited, lock-free to read; see the module docs.
pub(crate) struct Cache {
    table: Table,
    writer: Mutex<Writer>,
    /// Limiter states of keys not in the table, shared with the limits:
    /// taken after `writer` when both are.
    stash: Arc<Mutex<Stash>>,
    /// Bumped by every invalidation, per stripe of ids.
    epochs: [AtomicU64; SHARDS],
    unknown: Box<[RwLock<(UnknownShard, i64)>]>,
    inflight: Box<[Mutex<Flights>]>,
    hash: IdHash,
    ttl_us: i64,
    /// How long past `ttl_us` an entry may still be served while it is
    /// read again in the background (0: never); only while the feed is
    /// live.
    stale_us: AtomicI64,
    /// Whether the store's change feed is reporting now.
    feed_live: AtomicBool,
    capacity: usize,
    unknown_per_shard: usize,
    /// Store reads granted for ids not known to exist.
    budget: ReadBudget,
    /// Past it, while the known ids load for the first time: ten times
    /// its rate, with its burst.
    loading_budget: ReadBudget,
    /// The ids known to exist, once a flood needed them.
    pub(crate) known: KnownIds,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("ttl_us", &self.ttl_us)
            .field("capacity", &self.capacity)
            .field("unknown_per_shard", &self.unknown_per_shard)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// `capacity` known keys and `unknown_capacity` unknown ids at most,
    /// each entry trusted for `ttl_us` microseconds (0: never cache).
    pub(crate) fn new(
        capacity: usize,
        unknown_capacity: usize,
        ttl_us: i64,
        stash: Arc<Mutex<Stash>>,
    ) -> Self {
        let slots = capacity
            .saturating_mul(2)
            .max(16)
            .checked_next_power_of_two()
            .unwrap_or(1 << (usize::BITS - 2));
        let hash = IdHash::random();
        Self {
            table: Table::new(slots),
            writer: Mutex::new(Writer::default()),
            stash,
            epochs: Default::default(),
            unknown: (0..SHARDS)
                .map(|_| RwLock::new((HashMap::with_hasher(hash), 0)))
                .collect(),
            inflight: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hash,
            ttl_us,
            stale_us: AtomicI64::new(0),
            feed_live: AtomicBool::new(true),
            capacity,
            unknown_per_shard: unknown_capacity.div_ceil(SHARDS),
            budget: ReadBudget::new(None),
            loading_budget: ReadBudget::new(None),
            known: KnownIds::new(hash),
        }
    }

    /// Bounds the store reads of ids not known to exist (`None`: no
    /// bound); see [`Cache::may_read`].
    pub(crate) fn bound_reads(&mut self, budget: Option<crate::limit::RateLimit>) {
        self.budget = ReadBudget::new(budget);
        let loading = budget.map(|b| {
            // Ten times as many over ten times the period, then at ten
            // times the rate: the same burst over a tenth of the period.
            let per_ms = (b.per().num_milliseconds() / 10).max(1);
            crate::limit::RateLimit::new(b.max(), chrono::Duration::milliseconds(per_ms))
                .unwrap_or(b)
        });
        self.loading_budget = ReadBudget::new(loading);
    }

    /// One read past the budget while the known ids load for the first
    /// time, if the larger budget of that window has one.
    pub(crate) fn take_loading_read(&self, now: i64) -> bool {
        self.loading_budget.take(now)
    }

    /// Whether `id` is in the set of ids known to exist (after a miss).
    pub(crate) fn presence(&self, id: &KeyId, now: i64) -> Presence {
        let feed_down = !self.feed_live.load(Ordering::Acquire);
        self.known.presence(id, now, feed_down)
    }

    /// Whether a miss on `id` may read the store: an id known to exist
    /// (in the set, or in the table past its time limit) always may; any
    /// other only within the budget of reads.
    pub(crate) fn may_read(&self, id: &KeyId, now: i64) -> ReadPermit {
        if self.budget.unbounded() {
            return ReadPermit::Read;
        }
        match self.presence(id, now) {
            Presence::Known => ReadPermit::Read,
            Presence::Absent { .. } | Presence::Unloaded { .. }
                if self.find(id).is_some() || self.budget.take(now) =>
            {
                ReadPermit::Read
            }
            Presence::Absent { reload } => ReadPermit::Refuse { load: reload },
            Presence::Unloaded { .. } => ReadPermit::Unloaded,
        }
    }

    /// Lets entries be served up to `stale_us` past their time limit
    /// while the feed is live (for a store whose feed sees every writer).
    pub(crate) fn allow_stale(&self, stale_us: i64) {
        self.stale_us.store(stale_us.max(0), Ordering::Release);
    }

    /// Whether an entry loaded at `loaded_at` may be served at `now`, past
    /// its time limit, while it is read again.
    fn servable_stale(&self, loaded_at: i64, now: i64) -> bool {
        let stale = self.stale_us.load(Ordering::Relaxed);
        stale > 0
            && now >= loaded_at
            && now.saturating_sub(loaded_at) < self.ttl_us.saturating_add(stale)
            && self.feed_live.load(Ordering::Acquire)
    }

    /// The stripe of `id` for the unknown map, loads and epochs.
    fn stripe(&self, id: &KeyId) -> usize {
        // Middle bits: the maps index by the low bits and tag entries with
        // the top seven, so a stripe taken from either would leave each
        // shard's map a fraction of its buckets or tags.
        (self.hash.of(id) >> 32) as usize % SHARDS
    }

    fn unknown_read(&self, i: usize) -> RwLockReadGuard<'_, (UnknownShard, i64)> {
        self.unknown[i]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn unknown_write(&self, i: usize) -> RwLockWriteGuard<'_, (UnknownShard, i64)> {
        self.unknown[i]
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stash(&self) -> MutexGuard<'_, Stash> {
        self.stash.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fresh(&self, loaded_at: i64, now: i64) -> bool {
        now.saturating_sub(loaded_at) < self.ttl_us && now >= loaded_at
    }

    /// Where `id`'s probe run starts.
    #[inline(always)]
    fn start(&self, id: &KeyId) -> usize {
        self.hash.of(id) as usize & self.table.mask
    }

    /// Walks `id`'s probe run: the slot holding it and its entry, or the
    /// empty slot that ends the run and `None`. (The table is at most half
    /// full, so every run ends.)
    #[inline(always)]
    fn probe(&self, id: &KeyId) -> (usize, Option<Held>) {
        self.probe_from(self.start(id), id)
    }

    /// [`Cache::probe`] from slot `from` of `id`'s run on. Always inlined, as
    /// are [`Cache::find`] and [`Cache::hit_at`]: an entry returned through
    /// memory is read back in wider loads than the stores that wrote it, a
    /// stall on every verify.
    #[inline(always)]
    fn probe_from(&self, from: usize, id: &KeyId) -> (usize, Option<Held>) {
        let table = &self.table;
        let mut i = from;
        for _ in 0..table.slots.len() {
            match self.walk_ids(i, id.as_u64()) {
                Ok(at) => {
                    // The entry is checked too: a writer may have changed
                    // the slot between the two reads; then the probe goes
                    // on. (An entry another took this slot from is further
                    // along; one a removal shifted back is earlier, which
                    // `Cache::hit_at` probes again for.) Under the writer's
                    // lock the two always agree, so `insert` never takes
                    // such a slot for an empty one.
                    let entry = table.slots[at].entry.load();
                    if entry.id == *id {
                        return (at, Some(entry));
                    }
                    i = (at + 1) & table.mask;
                }
                Err(end) => return (end, None),
            }
        }
        (i, None)
    }

    /// The walk of every probe, by the slots' ids alone: from slot `i`
    /// on, the first slot holding id `want` (`Ok`), or the empty slot
    /// that ends the run (`Err`).
    #[inline(always)]
    fn walk_ids(&self, mut i: usize, want: u64) -> Result<usize, usize> {
        let table = &self.table;
        for _ in 0..table.slots.len() {
            let at = table.id_at(i);
            if at == want {
                return Ok(i);
            }
            if table.is_empty_id(at) {
                return Err(i);
            }
            i = (i + 1) & table.mask;
        }
        Err(i)
    }

    /// The entry for `id` in the table, fresh or not.
    #[inline(always)]
    fn find(&self, id: &KeyId) -> Option<Held> {
        self.probe(id).1
    }

    /// Whether `id` is in the table, and where: its ids alone, a plain
    /// load per slot, no guard taken and no entry read. A verify asks this
    /// first and hashes the token only for an id that is there, while the
    /// table's memory is on its way (at a million keys, a cache miss the
    /// hash then hides), and takes the entry with [`Cache::hit_at`].
    #[inline(always)]
    pub(crate) fn locate(&self, id: &KeyId) -> Option<Located> {
        self.walk_ids(self.start(id), id.as_u64()).ok().map(Located)
    }

    /// [`Cache::hit_at`] from the start of `id`'s run.
    #[cfg(test)]
    pub(crate) fn hit(&self, id: &KeyId, now: i64) -> Option<(Held, bool)> {
        self.hit_at(Located(self.start(id)), id, now)
    }

    /// An entry for `id`, from the table alone (no lock), and whether it
    /// is past its time limit (served stale: read it again), probing from
    /// where [`Cache::locate`] found `id`. A write since may have moved the
    /// entry on in its run (the probe follows it) or back (a removal
    /// shifts later entries back): then it is probed for again from the
    /// run's start. Gone, it is a miss, and a miss reads the store.
    #[inline(always)]
    pub(crate) fn hit_at(&self, at: Located, id: &KeyId, now: i64) -> Option<(Held, bool)> {
        let entry = match self.probe_from(at.0, id).1 {
            Some(entry) => entry,
            None => self.probe(id).1?,
        };
        if self.fresh(entry.loaded_at, now) {
            Some((entry, false))
        } else if self.servable_stale(entry.loaded_at, now) {
            Some((entry, true))
        } else {
            None
        }
    }

    /// Gives key `to` the limiter state of key `from` (a roll's successor
    /// its predecessor's): what `from` spent, `to` has spent, so a key
    /// cannot start its limit afresh by rolling itself. Kept in the stash,
    /// where `to`'s entry finds it when it is loaded.
    pub(crate) fn inherit_limit(&self, from: &KeyId, to: KeyId) {
        let cached = self.find(from).filter(|e| e.id == *from);
        let mut stash = self.stash();
        let tat = cached
            .map(|e| e.slot.state())
            .into_iter()
            .chain(stash.peek(from))
            .max();
        if let Some(tat) = tat {
            stash.keep(to, tat);
        }
    }

    /// Whether `id` was looked up recently and does not exist (after
    /// [`Cache::locate`] or [`Cache::hit_at`] found nothing).
    pub(crate) fn known_unknown(&self, id: &KeyId, now: i64) -> bool {
        let shard = self.unknown_read(self.stripe(id));
        shard.0.get(id).is_some_and(|at| self.fresh(*at, now))
    }

    pub(crate) fn get(&self, id: &KeyId, now: i64) -> Lookup {
        match self.find(id) {
            Some(entry) if self.fresh(entry.loaded_at, now) => return Lookup::Hit(entry),
            None if self.known_unknown(id, now) => return Lookup::Unknown,
            _ => {}
        }
        let shard = self.stripe(id);
        Lookup::Miss(Ticket {
            shard,
            epoch: self.epochs[shard].load(Ordering::Acquire),
        })
    }

    /// Caches what the store returned for `id` (`None`: no such key),
    /// unless the key was invalidated since the ticket was taken. Returns
    /// the entry for the caller to use either way.
    pub(crate) fn put(
        &self,
        ticket: Ticket,
        id: &KeyId,
        key: Option<CachedKey>,
        now: i64,
    ) -> Option<Held> {
        let mut w = self.writer();
        self.stash().advance(gcra_now(now));
        let current = self.epochs[ticket.shard].load(Ordering::Acquire) == ticket.epoch;
        let Some(mut key) = key else {
            if current && self.ttl_us > 0 {
                self.remove(&mut w, id);
                self.remember_unknown(id, now);
            }
            return None;
        };
        key.loaded_at = now;
        self.known.note(id);
        let cache = current && self.ttl_us > 0 && self.capacity > 0;
        key.cached = cache;
        let previous = self.find(id);
        let mut tat = previous.as_ref().map_or(0, |p| p.slot.state());
        if let Some(last) = previous
            .as_ref()
            .map(|p| p.last_used_us.load(Ordering::Relaxed))
        {
            key.last_used_us.fetch_max(last, Ordering::Relaxed);
        }
        if !cache {
            // The limiter state stays in (or goes to) the stash.
            if tat > 0 {
                self.stash().keep(*id, tat);
            }
            return Some(Held::from_inner(Arc::new(key)));
        }
        if let Some(stashed) = self.stash().take(id) {
            tat = tat.max(stashed);
        }
        key.slot.restore(tat);
        let entry = Arc::new(key);
        self.unknown_write(self.stripe(id)).0.remove(id);
        if previous.is_none() && w.len >= self.capacity {
            self.evict_one(&mut w);
        }
        self.purge_some(&mut w, now);
        self.insert(&mut w, entry.clone());
        // A stale entry answers verifies while it is read again: what
        // they counted after its state was copied above is taken on now
        // that they find the new entry.
        if let Some(p) = previous {
            entry.slot.catch_up(p.slot.state());
            entry
                .last_used_us
                .fetch_max(p.last_used_us.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        Some(Held::from_inner(entry))
    }

    fn remember_unknown(&self, id: &KeyId, now: i64) {
        if self.unknown_per_shard == 0 {
            return;
        }
        let mut shard = self.unknown_write(self.stripe(id));
        let (map, purged_at) = &mut *shard;
        if now.saturating_sub(*purged_at) >= self.ttl_us / 2 {
            *purged_at = now;
            map.retain(|_, at| self.fresh(*at, now));
        }
        if map.len() >= self.unknown_per_shard && !map.contains_key(id) {
            // In the map's (keyed) order: an attacker cannot aim it.
            if let Some(k) = map.keys().next().copied() {
                map.remove(&k);
            }
        }
        map.insert(*id, now);
    }

    /// Puts `entry` in the table, replacing the entry of the same id.
    fn insert(&self, w: &mut Writer, entry: Arc<CachedKey>) {
        let (i, replaced) = self.probe(&entry.id);
        if replaced.is_none() {
            w.len += 1;
        }
        drop(replaced);
        self.table.put(i, entry);
    }

    /// Takes `id` out of the table (its limiter state to the stash), and
    /// closes the gap so later entries of its run stay reachable.
    fn remove(&self, w: &mut Writer, id: &KeyId) {
        let (i, found) = self.probe(id);
        if found.is_some() {
            drop(found);
            self.remove_at(w, &self.table, i);
        }
    }

    fn remove_at(&self, w: &mut Writer, table: &Table, mut hole: usize) {
        if let Some(old) = table.take(hole) {
            self.stash().keep(old.id, old.slot.state());
            w.len -= 1;
        }
        // Backward-shift deletion (no tombstones). A lookup racing it may
        // miss an entry for a moment: it then reads the store, which is
        // always correct.
        let mut j = hole;
        loop {
            j = (j + 1) & table.mask;
            let e = table.slots[j].entry.load_full();
            if !table.occupied(&e) {
                return;
            }
            let home = self.hash.of(&e.id) as usize & table.mask;
            // Move e back if its home is not within (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                table.put(hole, e);
                drop(table.take(j));
                hole = j;
            }
        }
    }

    /// Makes room for one entry: removes the first entry found from a
    /// position the caller cannot predict.
    fn evict_one(&self, w: &mut Writer) {
        let table = &self.table;
        let start = fold(w.cursor as u64 ^ self.hash.k0, self.hash.k1) as usize;
        w.cursor = w.cursor.wrapping_add(1);
        for k in 0..table.slots.len() {
            let i = (start + k) & table.mask;
            if table.occupied(&table.slots[i].entry.load()) {
                self.remove_at(w, table, i);
                return;
            }
        }
    }

    /// Removes stale entries from the next few slots: memory held by keys
    /// no longer used goes back without a full sweep.
    fn purge_some(&self, w: &mut Writer, now: i64) {
        let table = &self.table;
        for _ in 0..PURGE_STEP {
            let i = w.cursor & table.mask;
            w.cursor = w.cursor.wrapping_add(1);
            let slot = table.slots[i].entry.load();
            let stale = table.occupied(&slot)
                && !self.fresh(slot.loaded_at, now)
                && !self.servable_stale(slot.loaded_at, now);
            drop(slot);
            if stale {
                self.remove_at(w, table, i);
            }
        }
    }

    /// Drops `entry` if the table still holds it, this very entry (a
    /// background read did not replace it: it failed, or raced a change
    /// and was not cached), so that the next lookup reads the store: a
    /// stale entry is never served on after its read went wrong.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn drop_if_still(&self, entry: &Arc<CachedKey>) {
        let mut w = self.writer();
        let (i, found) = self.probe(&entry.id);
        let same = found.as_ref().is_some_and(|f| Arc::ptr_eq(f, entry));
        drop(found);
        if same {
            self.remove_at(&mut w, &self.table, i);
        }
    }

    /// Drops the entry for `id` so the next lookup reads the store, without
    /// invalidating loads in flight (the key did not change).
    pub(crate) fn forget(&self, id: &KeyId) {
        let mut w = self.writer();
        self.remove(&mut w, id);
        self.unknown_write(self.stripe(id)).0.remove(id);
    }

    /// Drops what is known of `id`, and makes loads in flight not cache.
    /// (The id goes to the known ids: a change may be a create.)
    pub(crate) fn invalidate(&self, id: &KeyId) {
        self.known.note(id);
        let mut w = self.writer();
        self.epochs[self.stripe(id)].fetch_add(1, Ordering::AcqRel);
        self.remove(&mut w, id);
        self.unknown_write(self.stripe(id)).0.remove(id);
    }

    /// Drops everything (limiter states go to the stash, as far as it
    /// holds them).
    pub(crate) fn clear(&self) {
        let mut w = self.writer();
        for e in &self.epochs {
            e.fetch_add(1, Ordering::AcqRel);
        }
        let table = &self.table;
        for i in 0..table.slots.len() {
            if let Some(old) = table.take(i) {
                self.stash().keep(old.id, old.slot.state());
            }
        }
        w.len = 0;
        for i in 0..SHARDS {
            self.unknown_write(i).0.clear();
        }
    }

    /// Entries held: (known keys, unknown ids, ids known to exist).
    pub(crate) fn len(&self) -> (usize, usize, usize) {
        let keys = self.writer().len;
        let unknown = (0..SHARDS).map(|i| self.unknown_read(i).0.len()).sum();
        (keys, unknown, self.known.len())
    }
}

impl ChangeListener for Cache {
    fn changed(&self, id: &KeyId) {
        self.invalidate(id);
    }

    fn reset(&self) {
        self.known.reset();
        self.clear();
    }

    /// While the feed is down, nothing is served past its time limit:
    /// a change may have been missed.
    fn feed(&self, live: bool) {
        self.feed_live.store(live, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;
