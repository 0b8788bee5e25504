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
//! ([`KeyStore::subscribe`](crate::KeyStore::subscribe)), which drops an
//! entry the moment its key changes, and by `ttl`, the fallback when a feed
//! is missing or has dropped. A load that raced an invalidation is used
//! once and not cached (each shard counts its invalidations), so a
//! revocation can never be undone by a slow read.
//!
//! Concurrent misses on one id share one store read: the first becomes the
//! leader ([`Cache::begin_load`]), the others wait for it and then look
//! again, so a burst on a just-expired hot key, or many requests with one
//! made-up id, cost one read.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll, Waker};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use crate::key::KeyStatus;
use crate::limit::{gcra_now, KeySlot, RateLimit, Stash, Tenant};
use crate::permission::PermissionSet;
use crate::policy::Refill;
use crate::store::ChangeListener;
use crate::token::{DisplayPrefix, KeyHash, KeyId};

/// Stripes of the unknown-id map, the in-flight loads and the
/// invalidation counters.
const SHARDS: usize = 16;
/// Table slots checked for stale entries on each insert.
const PURGE_STEP: usize = 8;

/// What a verify needs of one key, with permissions already parsed and
/// times in microseconds. Per-key limiter state lives here too: one
/// place, one cache miss. `repr(C)`, in the order a verify reads: what
/// the lookup and the checks read comes first, together.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct CachedKey {
    pub(crate) id: KeyId,
    /// When it was read from the store, in clock microseconds.
    loaded_at: i64,
    pub(crate) hash: KeyHash,
    /// `i64::MAX`: never.
    pub(crate) expires_us: i64,
    /// Latest use known here, in microseconds since the epoch
    /// (`i64::MIN`: none): the stored `last_used_at` at load, moved forward
    /// by this instance's verifies.
    pub(crate) last_used_us: AtomicI64,
    pub(crate) created_us: i64,
    /// The key's rate limit and its state: the instance's default if the
    /// key has none.
    pub(crate) slot: KeySlot,
    pub(crate) revoked: bool,
    /// Usage-limited: every verify asks the store for a credit.
    pub(crate) metered: bool,
    /// Held in the table, so `slot` holds the key's limiter state;
    /// otherwise the stash does.
    cached: bool,
    pub(crate) tenant: Arc<Tenant>,
    pub(crate) permissions: PermissionSet,
    pub(crate) name: Box<str>,
    pub(crate) prefix: DisplayPrefix,
    /// What only usage-limited or rolled keys have, which verify reads
    /// only off the hot path: boxed, and absent for most keys.
    cold: Option<Box<Cold>>,
}

/// The rarely set part of a [`CachedKey`].
#[derive(Debug)]
struct Cold {
    refill: Option<Refill>,
    /// The key that replaced this one by a roll: a usage-limited key in
    /// its grace period draws on its successor's uses.
    rolled_to: Option<KeyId>,
}

impl CachedKey {
    pub(crate) fn new(
        record: &crate::key::KeyRecord,
        permissions: PermissionSet,
        tenant: Arc<Tenant>,
        default_limit: Option<RateLimit>,
    ) -> Self {
        Self {
            hash: record.hash,
            id: record.id,
            slot: KeySlot::new(record.rate_limit.or(default_limit)),
            last_used_us: AtomicI64::new(
                record
                    .last_used_at
                    .map_or(i64::MIN, |u| u.timestamp_micros()),
            ),
            expires_us: record.expires_at.map_or(i64::MAX, |e| e.timestamp_micros()),
            created_us: record.created_at.timestamp_micros(),
            loaded_at: 0,
            revoked: record.revoked_at.is_some(),
            metered: record.remaining.is_some() || record.refill.is_some(),
            cached: false,
            tenant,
            permissions,
            name: record.name.as_str().into(),
            prefix: record.prefix,
            cold: (record.refill.is_some() || record.rolled_to.is_some()).then(|| {
                Box::new(Cold {
                    refill: record.refill,
                    rolled_to: record.rolled_to,
                })
            }),
        }
    }

    /// The entry of empty table slots.
    fn empty() -> Self {
        let catalog = crate::permission::Catalog::empty();
        Self {
            hash: KeyHash::from_bytes([0; 32]),
            id: KeyId::NONE,
            slot: KeySlot::new(None),
            last_used_us: AtomicI64::new(i64::MIN),
            expires_us: i64::MIN,
            created_us: 0,
            loaded_at: i64::MIN,
            revoked: true,
            metered: false,
            cached: false,
            tenant: Arc::new(Tenant::new("", None)),
            permissions: catalog.none(),
            name: "".into(),
            prefix: DisplayPrefix::default(),
            cold: None,
        }
    }

    /// How a usage-limited key refills, if it does.
    pub(crate) fn refill(&self) -> Option<&Refill> {
        self.cold.as_ref()?.refill.as_ref()
    }

    /// The key that replaced this one by a roll, if any.
    pub(crate) fn rolled_to(&self) -> Option<KeyId> {
        self.cold.as_ref()?.rolled_to
    }

    pub(crate) fn status(&self, now_us: i64) -> KeyStatus {
        if self.revoked {
            KeyStatus::Revoked
        } else if self.expires_us <= now_us {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }

    /// When the key expires, if ever.
    pub(crate) fn expires_at(&self) -> Option<DateTime<Utc>> {
        (self.expires_us != i64::MAX)
            .then(|| DateTime::from_timestamp_micros(self.expires_us))
            .flatten()
    }

    /// When it was read from the store, in clock microseconds.
    pub(crate) fn loaded_at_us(&self) -> i64 {
        self.loaded_at
    }

    /// Whether `slot` holds the key's limiter state (the entry is in the
    /// table); otherwise the stash does.
    pub(crate) fn cached(&self) -> bool {
        self.cached
    }

    /// The latest use known here, or the creation if never used: where
    /// the inactivity period starts, in microseconds.
    pub(crate) fn last_active_us(&self) -> i64 {
        self.last_used_us
            .load(Ordering::Relaxed)
            .max(self.created_us)
    }
}

/// The answer of [`Cache::get`].
pub(crate) enum Lookup {
    /// A fresh entry.
    Hit(Held),
    /// The id was looked up recently and does not exist.
    Unknown,
    /// Ask the store; pass the ticket to [`Cache::put`].
    Miss(Ticket),
}

/// Proof of the shard's invalidation count before a store read.
pub(crate) struct Ticket {
    shard: usize,
    epoch: u64,
}

/// The reads in progress in one shard.
type Flights = HashMap<KeyId, Arc<Flight>>;

/// One store read in progress for an id; followers wait on it.
#[derive(Default)]
struct Flight {
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

/// A keyed hash of ids: ids are chosen by whoever sends a token, so an
/// unkeyed hash (say, the id's bytes) would let a flood pile into one
/// slot run or shard. One 64×64→128-bit multiply, folded: a few cycles.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdHash {
    k0: u64,
    k1: u64,
}

impl IdHash {
    fn random() -> Self {
        // A per-process random seed is all that is needed here; std's
        // RandomState keys come from the OS once and are cheap after.
        let seed = std::hash::RandomState::new();
        let k0 = seed.hash_one(0x6b65_7977_6172_6431_u64);
        let k1 = seed.hash_one(0x6b65_7977_6172_6432_u64) | 1;
        Self { k0, k1 }
    }

    #[inline]
    fn of(&self, id: &KeyId) -> u64 {
        fold(id.as_u64() ^ self.k0, self.k1)
    }
}

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m >> 64) as u64 ^ m as u64
}

impl BuildHasher for IdHash {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            keys: *self,
            state: self.k0,
        }
    }
}

/// The [`Hasher`] of [`IdHash`]: [`KeyId`] writes one `u64`.
pub(crate) struct IdHasher {
    keys: IdHash,
    state: u64,
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.state = fold(self.state ^ n, self.keys.k1);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

/// An open-addressing table (linear probing, at most half full) of
/// entries, each slot swapped atomically: a lookup takes no lock and
/// writes no shared memory, so threads verifying the same key do not
/// contend on the cache. Allocated once at twice the capacity (8 bytes a
/// slot), so a lookup follows no pointer to find the table.
///
/// An empty slot holds the table's `empty` entry (an id no token can
/// name), so that a lookup hands out a guard of a plain `Arc`: a
/// [`Verified`](crate::Verified) keeps that guard and costs no
/// reference-count traffic on the key's entry.
struct Table {
    slots: Box<[ArcSwap<CachedKey>]>,
    mask: usize,
    empty: Arc<CachedKey>,
}

impl Table {
    fn new(size: usize) -> Self {
        let empty = Arc::new(CachedKey::empty());
        Self {
            slots: (0..size).map(|_| ArcSwap::new(empty.clone())).collect(),
            mask: size - 1,
            empty,
        }
    }

    #[inline]
    fn occupied(&self, e: &Arc<CachedKey>) -> bool {
        !Arc::ptr_eq(e, &self.empty)
    }

    /// Empties slot `i`, returning what it held.
    fn take(&self, i: usize) -> Option<Arc<CachedKey>> {
        let old = self.slots[i].swap(self.empty.clone());
        self.occupied(&old).then_some(old)
    }
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
    capacity: usize,
    unknown_per_shard: usize,
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
            capacity,
            unknown_per_shard: unknown_capacity.div_ceil(SHARDS),
        }
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

    /// Walks `id`'s probe run: the slot holding it and its entry, or the
    /// empty slot that ends the run and `None`. (The table is at most half
    /// full, so every run ends.)
    #[inline]
    fn probe(&self, id: &KeyId) -> (usize, Option<Held>) {
        let table = &self.table;
        let mut i = self.hash.of(id) as usize & table.mask;
        for _ in 0..table.slots.len() {
            let slot = table.slots[i].load();
            if slot.id == *id {
                return (i, Some(slot));
            }
            if !table.occupied(&slot) {
                break;
            }
            i = (i + 1) & table.mask;
        }
        (i, None)
    }

    /// The entry for `id` in the table, fresh or not.
    #[inline]
    fn find(&self, id: &KeyId) -> Option<Held> {
        self.probe(id).1
    }

    /// A fresh entry for `id`, from the table alone (no lock).
    #[inline]
    pub(crate) fn hit(&self, id: &KeyId, now: i64) -> Option<Held> {
        self.find(id).filter(|e| self.fresh(e.loaded_at, now))
    }

    /// Whether `id` was looked up recently and does not exist (after
    /// [`Cache::hit`] found nothing).
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
        self.table.slots[i].store(entry);
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
            let e = table.slots[j].load_full();
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
                table.slots[hole].store(e);
                table.slots[j].store(table.empty.clone());
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
            if table.occupied(&table.slots[i].load()) {
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
            let slot = table.slots[i].load();
            let stale = table.occupied(&slot) && !self.fresh(slot.loaded_at, now);
            drop(slot);
            if stale {
                self.remove_at(w, table, i);
            }
        }
    }

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

    /// Drops the entry for `id` so the next lookup reads the store, without
    /// invalidating loads in flight (the key did not change).
    pub(crate) fn forget(&self, id: &KeyId) {
        let mut w = self.writer();
        self.remove(&mut w, id);
        self.unknown_write(self.stripe(id)).0.remove(id);
    }

    /// Drops what is known of `id`, and makes loads in flight not cache.
    pub(crate) fn invalidate(&self, id: &KeyId) {
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

    /// Entries held: (known keys, unknown ids).
    pub(crate) fn len(&self) -> (usize, usize) {
        let keys = self.writer().len;
        let unknown = (0..SHARDS).map(|i| self.unknown_read(i).0.len()).sum();
        (keys, unknown)
    }
}

impl ChangeListener for Cache {
    fn changed(&self, id: &KeyId) {
        self.invalidate(id);
    }

    fn reset(&self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyRecord;
    use crate::permission::Catalog;
    use crate::token::TokenFormat;

    fn new_cache(capacity: usize, unknown: usize, ttl_us: i64) -> Cache {
        let stash = Arc::new(Mutex::new(Stash::for_capacity(capacity)));
        Cache::new(capacity, unknown, ttl_us, stash)
    }

    fn key() -> CachedKey {
        let id = KeyId::random().expect("OS randomness");
        let token = TokenFormat::default().generate(id).expect("OS randomness");
        let record = KeyRecord {
            id,
            prefix: token.display_prefix(),
            hash: KeyHash::of(token.expose_secret().as_bytes()),
            tenant: "acme".into(),
            name: "k".into(),
            permissions: vec![],
            created_by: "u".into(),
            created_at: DateTime::UNIX_EPOCH,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            metadata: None,
            version: 0,
            rate_limit: None,
            remaining: None,
            refill: None,
            last_refill_at: None,
            inactivity_warning: None,
            expiry_warning: None,
            rolled_from: None,
            rolled_to: None,
        };
        let catalog = Catalog::builder().build().expect("empty catalog");
        let tenant = Arc::new(Tenant::new("acme", None));
        let limit = RateLimit::per_minute(2).expect("valid");
        CachedKey::new(&record, catalog.none(), tenant, Some(limit))
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_cached() {
        let cache = new_cache(100, 100, 1_000_000);
        let k = key();
        let id = k.id;
        let Lookup::Miss(ticket) = cache.get(&id, 0) else {
            panic!("empty cache must miss");
        };
        // The key is revoked while the (old) record is being read.
        cache.invalidate(&id);
        assert!(cache.put(ticket, &id, Some(k), 0).is_some(), "used once");
        assert!(matches!(cache.get(&id, 0), Lookup::Miss(_)), "not cached");
    }

    #[test]
    fn a_reset_drops_everything_and_in_flight_loads() {
        let cache = new_cache(100, 100, 1_000_000);
        let (a, b) = (key(), key());
        let (ida, idb) = (a.id, b.id);
        let Lookup::Miss(t) = cache.get(&ida, 0) else {
            panic!("miss")
        };
        cache.put(t, &ida, Some(a), 0);
        let Lookup::Miss(t) = cache.get(&idb, 0) else {
            panic!("miss")
        };
        cache.reset();
        cache.put(t, &idb, Some(b), 0);
        assert_eq!(cache.len(), (0, 0));
    }

    #[test]
    fn entries_stay_reachable_through_removals() {
        let cache = new_cache(3_000, 100, 1_000_000);
        let keys: Vec<CachedKey> = (0..3_000).map(|_| key()).collect();
        let ids: Vec<KeyId> = keys.iter().map(|k| k.id).collect();
        for k in keys {
            let id = k.id;
            let Lookup::Miss(t) = cache.get(&id, 0) else {
                panic!("miss")
            };
            assert!(cache.put(t, &id, Some(k), 0).is_some());
        }
        assert_eq!(cache.len().0, 3_000);
        // Remove every third key: the others must still be found.
        for id in ids.iter().step_by(3) {
            cache.invalidate(id);
        }
        for (n, id) in ids.iter().enumerate() {
            let hit = matches!(cache.get(id, 1), Lookup::Hit(_));
            assert_eq!(hit, n % 3 != 0, "key {n}");
        }
        assert_eq!(cache.len().0, 2_000);
    }

    #[test]
    fn a_full_cache_evicts_and_keeps_limiter_state_in_the_stash() {
        let cache = new_cache(10, 100, 1_000_000);
        let first = key();
        let id = first.id;
        let Lookup::Miss(t) = cache.get(&id, 0) else {
            panic!("miss")
        };
        let entry = cache.put(t, &id, Some(first), 0).expect("entry");
        let now = gcra_now(0);
        assert!(entry.slot.check(now).is_ok());
        assert!(entry.slot.check(now).is_ok());
        assert!(entry.slot.check(now).is_err());
        // Twenty other keys push it out.
        for _ in 0..20 {
            let k = key();
            let kid = k.id;
            let Lookup::Miss(t) = cache.get(&kid, 0) else {
                panic!("miss")
            };
            cache.put(t, &kid, Some(k), 0);
        }
        assert!(cache.len().0 <= 10);
        // Whether it was evicted or not, then after an invalidation, it is
        // still over its limit.
        for round in 0..2 {
            let entry = match cache.get(&id, 0) {
                Lookup::Hit(e) => e,
                Lookup::Miss(t) => {
                    let mut again = key();
                    again.id = id;
                    cache.put(t, &id, Some(again), 0).expect("entry")
                }
                Lookup::Unknown => panic!("known"),
            };
            assert!(entry.slot.check(now).is_err(), "round {round}");
            cache.invalidate(&id);
        }
    }
}
