//! The cache's own guarantees: races with invalidation, eviction,
//! probe runs, limiter state kept across eviction.

use super::*;
use crate::key::sample_record;
use crate::limit::{RateLimit, Tenant};
use crate::permission::Catalog;

fn new_cache(capacity: usize, unknown: usize, ttl_us: i64) -> Cache {
    let stash = Arc::new(Mutex::new(Stash::for_capacity(capacity)));
    Cache::new(capacity, unknown, ttl_us, stash)
}

fn key() -> CachedKey {
    let record = sample_record("acme");
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
    assert_eq!(cache.len(), (0, 0, 0));
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

#[test]
fn stale_entries_are_served_only_within_their_window_and_while_the_feed_is_live() {
    let ttl = 1_000_000;
    let cache = new_cache(100, 100, ttl);
    let k = key();
    let id = k.id;
    let Lookup::Miss(ticket) = cache.get(&id, 0) else {
        panic!("empty cache must miss");
    };
    cache.put(ticket, &id, Some(k), 0);
    assert!(matches!(cache.hit(&id, ttl - 1), Some((_, false))), "fresh");
    assert!(cache.hit(&id, ttl).is_none(), "no stale window by default");
    cache.allow_stale(10 * ttl);
    assert!(matches!(cache.hit(&id, ttl), Some((_, true))), "stale");
    assert!(
        matches!(cache.get(&id, ttl), Lookup::Miss(_)),
        "a lookup that must be fresh misses"
    );
    // Entries in their stale window are not purged (the whole table swept).
    for _ in 0..cache.table.slots.len() {
        cache.purge_some(&mut cache.writer(), 2 * ttl);
    }
    assert!(matches!(cache.hit(&id, 2 * ttl), Some((_, true))));
    // The feed is down: a change may have been missed.
    cache.feed(false);
    assert!(
        cache.hit(&id, 2 * ttl).is_none(),
        "not while the feed is down"
    );
    assert!(
        matches!(cache.hit(&id, ttl - 1), Some((_, false))),
        "fresh still is"
    );
    cache.feed(true);
    assert!(matches!(cache.hit(&id, 2 * ttl), Some((_, true))));
    assert!(cache.hit(&id, 11 * ttl).is_none(), "past the window");
    // A read that did not replace it drops it; another entry's does not.
    let (held, _) = cache.hit(&id, 2 * ttl).expect("held");
    let other = Arc::new(key());
    cache.drop_if_still(&other);
    assert!(cache.hit(&id, 2 * ttl).is_some(), "not another entry's");
    cache.drop_if_still(&held);
    assert!(cache.hit(&id, 2 * ttl).is_none(), "dropped");
    // Past its window an entry is purged.
    let k = key();
    let id = k.id;
    let Lookup::Miss(ticket) = cache.get(&id, 0) else {
        panic!("must miss");
    };
    cache.put(ticket, &id, Some(k), 0);
    for _ in 0..cache.table.slots.len() {
        cache.purge_some(&mut cache.writer(), 12 * ttl);
    }
    assert!(cache.find(&id).is_none(), "purged past its window");
}

/// Lookups racing a writer that fills, evicts and removes (so entries
/// move back in their runs) only ever hand out the entry of the id asked
/// for (a lookup that races a move may miss, which reads the store).
#[test]
fn lookups_racing_writes_never_hand_out_another_keys_entry() {
    let cache = Arc::new(new_cache(64, 64, i64::MAX / 4));
    let ids: Vec<KeyId> = (0..200).map(|_| key().id).collect();
    let resident = key();
    let resident_id = resident.id;
    let Lookup::Miss(ticket) = cache.get(&resident_id, 0) else {
        panic!("must miss");
    };
    cache.put(ticket, &resident_id, Some(resident), 0);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (cache, ids, stop) = (cache.clone(), ids.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut found, mut resident_found, mut rounds) = (0u64, 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    for id in &ids {
                        if let Some(e) = cache.find(id) {
                            assert_eq!(e.id, *id, "another key's entry");
                            found += 1;
                        }
                        // A verify's way: the slot by ids, then the entry.
                        let located = cache.locate(id);
                        if let Some((e, _)) = located.and_then(|at| cache.hit_at(at, id, 0)) {
                            assert_eq!(e.id, *id, "another key's entry, by locate");
                            found += 1;
                        }
                    }
                    let e = cache.find(&resident_id);
                    assert!(e.as_ref().is_none_or(|e| e.id == resident_id));
                    resident_found += u64::from(e.is_some());
                    rounds += 1;
                }
                (found, resident_found, rounds)
            })
        })
        .collect();
    for round in 0..50 {
        for &id in &ids {
            if let Lookup::Miss(ticket) = cache.get(&id, 0) {
                let mut record = sample_record("acme");
                record.id = id;
                let catalog = Catalog::builder().build().expect("empty catalog");
                let tenant = Arc::new(Tenant::new("acme", None));
                let fresh = CachedKey::new(&record, catalog.none(), tenant, None);
                cache.put(ticket, &id, Some(fresh), 0);
            }
            if round % 2 == 1 {
                cache.invalidate(&id);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let (found, resident_found, rounds) = r.join().expect("no reader panicked");
        assert!(found > 0, "some lookups found their key");
        assert!(rounds > 0 && resident_found <= rounds);
    }
}

/// A verify finds a key's slot, hashes, then takes the entry: a removal in
/// between that shifts the entry back in its run must not make it a miss.
#[test]
fn an_entry_shifted_back_after_it_was_located_is_still_found() {
    let cache = new_cache(64, 64, i64::MAX / 4);
    let first = key();
    let home = cache.start(&first.id);
    // Another key whose run starts at the same slot: it sits after `first`.
    let second = std::iter::repeat_with(key)
        .find(|k| cache.start(&k.id) == home)
        .expect("some id lands there");
    let (first_id, second_id) = (first.id, second.id);
    for k in [first, second] {
        let id = k.id;
        let Lookup::Miss(ticket) = cache.get(&id, 0) else {
            panic!("must miss");
        };
        cache.put(ticket, &id, Some(k), 0);
    }
    let at = cache.locate(&second_id).expect("cached");
    cache.invalidate(&first_id);
    let (entry, _) = cache.hit_at(at, &second_id, 0).expect("still cached");
    assert_eq!(entry.id, second_id);
}
