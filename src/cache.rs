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
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, Utc};

use crate::key::KeyStatus;
use crate::limit::RateLimit;
use crate::permission::PermissionSet;
use crate::policy::Refill;
use crate::store::ChangeListener;
use crate::token::{KeyHash, KeyId};

const SHARDS: usize = 16;

/// What a verify needs of one key, with permissions already parsed.
#[derive(Debug)]
pub(crate) struct CachedKey {
    pub(crate) id: KeyId,
    pub(crate) hash: KeyHash,
    pub(crate) tenant: String,
    pub(crate) name: String,
    pub(crate) permissions: PermissionSet,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) revoked_at: Option<DateTime<Utc>>,
    pub(crate) rate_limit: Option<RateLimit>,
    /// Usage-limited: every verify asks the store for a credit.
    pub(crate) metered: bool,
    pub(crate) refill: Option<Refill>,
    /// Latest use known here, in microseconds since the epoch
    /// (`i64::MIN`: none): the stored `last_used_at` at load, moved forward
    /// by this instance's verifies.
    pub(crate) last_used_us: AtomicI64,
    /// When it was read from the store, in clock microseconds.
    loaded_at: i64,
}

impl CachedKey {
    pub(crate) fn new(record: &crate::key::KeyRecord, permissions: PermissionSet) -> Self {
        Self {
            id: record.id,
            hash: record.hash,
            tenant: record.tenant.clone(),
            name: record.name.clone(),
            permissions,
            created_at: record.created_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            rate_limit: record.rate_limit,
            metered: record.remaining.is_some() || record.refill.is_some(),
            refill: record.refill,
            last_used_us: AtomicI64::new(
                record
                    .last_used_at
                    .map_or(i64::MIN, |u| u.timestamp_micros()),
            ),
            loaded_at: 0,
        }
    }

    pub(crate) fn status(&self, now: DateTime<Utc>) -> KeyStatus {
        if self.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if self.expires_at.is_some_and(|e| e <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }

    /// When it was read from the store, in clock microseconds.
    pub(crate) fn loaded_at_us(&self) -> i64 {
        self.loaded_at
    }

    /// The latest use known here, if any.
    pub(crate) fn last_used(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.last_used_us.load(Ordering::Relaxed))
    }

    /// The latest use known here, or the creation if never used: where
    /// the inactivity period starts.
    pub(crate) fn last_active(&self) -> DateTime<Utc> {
        self.last_used()
            .map_or(self.created_at, |u| u.max(self.created_at))
    }
}

/// The answer of [`Cache::get`].
pub(crate) enum Lookup {
    /// A fresh entry.
    Hit(Arc<CachedKey>),
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

#[derive(Default)]
struct Shard {
    keys: HashMap<KeyId, Arc<CachedKey>>,
    unknown: HashMap<KeyId, i64>,
    /// Bumped by every invalidation that touches this shard.
    epoch: u64,
    /// When stale entries were last swept out, in clock microseconds.
    purged_at: i64,
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
        let shard = self.cache.index(&self.id);
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

/// Bounded, sharded, time-limited; see the module docs.
pub(crate) struct Cache {
    shards: Box<[RwLock<Shard>]>,
    inflight: Box<[Mutex<Flights>]>,
    hasher: RandomState,
    ttl_us: i64,
    keys_per_shard: usize,
    unknown_per_shard: usize,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("ttl_us", &self.ttl_us)
            .field("keys_per_shard", &self.keys_per_shard)
            .field("unknown_per_shard", &self.unknown_per_shard)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// `capacity` known keys and `unknown_capacity` unknown ids at most,
    /// each entry trusted for `ttl_us` microseconds (0: never cache).
    pub(crate) fn new(capacity: usize, unknown_capacity: usize, ttl_us: i64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            inflight: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            ttl_us,
            keys_per_shard: capacity.div_ceil(SHARDS),
            unknown_per_shard: unknown_capacity.div_ceil(SHARDS),
        }
    }

    /// The shard of `id`, by a hash keyed per cache: ids are chosen by
    /// whoever sends a token, so an unkeyed choice (say, the last
    /// character) would let a flood pile into one shard.
    fn index(&self, id: &KeyId) -> usize {
        (self.hasher.hash_one(id) % SHARDS as u64) as usize
    }

    fn read(&self, i: usize) -> RwLockReadGuard<'_, Shard> {
        self.shards[i]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, i: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[i]
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn fresh(&self, loaded_at: i64, now: i64) -> bool {
        now.saturating_sub(loaded_at) < self.ttl_us && now >= loaded_at
    }

    pub(crate) fn get(&self, id: &KeyId, now: i64) -> Lookup {
        let i = self.index(id);
        let shard = self.read(i);
        if let Some(entry) = shard.keys.get(id) {
            if self.fresh(entry.loaded_at, now) {
                return Lookup::Hit(entry.clone());
            }
        } else if let Some(at) = shard.unknown.get(id) {
            if self.fresh(*at, now) {
                return Lookup::Unknown;
            }
        }
        Lookup::Miss(Ticket {
            shard: i,
            epoch: shard.epoch,
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
    ) -> Option<Arc<CachedKey>> {
        let entry = key.map(|mut k| {
            k.loaded_at = now;
            Arc::new(k)
        });
        if self.ttl_us == 0 {
            return entry;
        }
        let mut shard = self.write(ticket.shard);
        if shard.epoch != ticket.epoch {
            return entry;
        }
        if now.saturating_sub(shard.purged_at) >= self.ttl_us / 2 {
            shard.purged_at = now;
            shard.keys.retain(|_, e| self.fresh(e.loaded_at, now));
            shard.unknown.retain(|_, at| self.fresh(*at, now));
        }
        match &entry {
            Some(e) => {
                shard.unknown.remove(id);
                if self.keys_per_shard == 0 {
                    return entry;
                }
                if shard.keys.len() >= self.keys_per_shard && !shard.keys.contains_key(id) {
                    evict_one(&mut shard.keys);
                }
                shard.keys.insert(*id, e.clone());
            }
            None => {
                shard.keys.remove(id);
                if self.unknown_per_shard == 0 {
                    return entry;
                }
                if shard.unknown.len() >= self.unknown_per_shard && !shard.unknown.contains_key(id)
                {
                    evict_one(&mut shard.unknown);
                }
                shard.unknown.insert(*id, now);
            }
        }
        entry
    }

    /// Makes the caller the one that reads `id` from the store, or tells
    /// it to wait for the request already doing so.
    pub(crate) fn begin_load(self: &Arc<Self>, id: &KeyId) -> Load {
        let mut inflight = self.inflight[self.index(id)]
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
        let mut shard = self.write(self.index(id));
        shard.keys.remove(id);
        shard.unknown.remove(id);
    }

    /// Drops what is known of `id`, and makes loads in flight not cache.
    pub(crate) fn invalidate(&self, id: &KeyId) {
        let mut shard = self.write(self.index(id));
        shard.epoch = shard.epoch.wrapping_add(1);
        shard.keys.remove(id);
        shard.unknown.remove(id);
    }

    /// Drops everything.
    pub(crate) fn clear(&self) {
        for i in 0..SHARDS {
            let mut shard = self.write(i);
            shard.epoch = shard.epoch.wrapping_add(1);
            shard.keys.clear();
            shard.unknown.clear();
        }
    }

    /// Entries held: (known keys, unknown ids).
    pub(crate) fn len(&self) -> (usize, usize) {
        (0..SHARDS).fold((0, 0), |(k, u), i| {
            let s = self.read(i);
            (k + s.keys.len(), u + s.unknown.len())
        })
    }
}

/// Removes one entry, in the map's (randomly seeded) order: cheap, and an
/// attacker cannot aim it at a chosen key.
fn evict_one<V>(map: &mut HashMap<KeyId, V>) {
    if let Some(k) = map.keys().next().copied() {
        map.remove(&k);
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
        };
        let catalog = Catalog::builder().build().expect("empty catalog");
        CachedKey::new(&record, catalog.none())
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_cached() {
        let cache = Cache::new(100, 100, 1_000_000);
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
        let cache = Cache::new(100, 100, 1_000_000);
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
}
