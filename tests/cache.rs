//! The verification cache: hot keys and unknown ids cost one store read per
//! time limit, memory stays bounded, and changes made elsewhere win.

mod common;

use chrono::Duration;
use common::forge::{same_id_other_secret, unknown_token};
use common::{admin, catalog, create_keys, harness_with, CountingStore};
use keyward::{Keyward, KeywardBuilder, ManualClock, MemoryStore, NewKey, RateLimit, VerifyError};

#[tokio::test]
async fn a_hot_key_reads_the_store_once_per_time_limit() {
    let h = harness_with(|b| b.cache_ttl(Duration::seconds(10)));
    let issued = h
        .keys
        .create(&admin(&h.keys, "acme"), NewKey::new("zapier"))
        .await
        .expect("create");
    let token = issued.token.expose_secret();
    let before = h.store.gets();
    for _ in 0..1000 {
        h.keys.verify(token).await.expect("valid");
    }
    assert_eq!(h.store.gets() - before, 1, "1,000 verifies, one read");
    h.clock.advance(Duration::milliseconds(9_999));
    h.keys.verify(token).await.expect("valid");
    assert_eq!(
        h.store.gets() - before,
        1,
        "still fresh just before the limit"
    );
    h.clock.advance(Duration::milliseconds(1));
    h.keys.verify(token).await.expect("valid");
    assert_eq!(h.store.gets() - before, 2, "re-read at the limit");
}

#[tokio::test]
async fn refusals_of_a_cached_key_are_classified_without_the_store() {
    let h = harness_with(|b| b.cache_ttl(Duration::seconds(10)));
    let issued = h
        .keys
        .create(&admin(&h.keys, "acme"), NewKey::new("zapier"))
        .await
        .expect("create");
    let token = issued.token.expose_secret();
    h.keys.verify(token).await.expect("valid");
    let before = h.store.gets();
    // One character changed: the checksum no longer matches.
    let mut typo = token.as_bytes().to_vec();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ascii");
    assert!(matches!(
        h.keys.verify(&typo).await,
        Err(VerifyError::Malformed)
    ));
    // Same id, another secret with a correct checksum: a wrong key.
    assert!(matches!(
        h.keys.verify(&same_id_other_secret(token)).await,
        Err(VerifyError::Invalid)
    ));
    // An unknown id refused once is refused again from memory.
    let unknown = unknown_token(7);
    for _ in 0..3 {
        assert!(matches!(
            h.keys.verify(&unknown).await,
            Err(VerifyError::Invalid)
        ));
    }
    assert_eq!(h.store.gets() - before, 1, "one read, for the unknown id");
    h.keys.verify(token).await.expect("still valid");
}

#[tokio::test]
async fn unknown_ids_cost_one_read_each_per_time_limit() {
    let h = harness_with(|b| b);
    for round in 0..3 {
        for n in 0..1000 {
            assert!(matches!(
                h.keys.verify(&unknown_token(n)).await,
                Err(VerifyError::Invalid)
            ));
        }
        assert_eq!(h.store.gets(), 1000, "round {round}: one read per id");
    }
    h.clock.advance(Duration::seconds(10));
    let _ = h.keys.verify(&unknown_token(0)).await;
    assert_eq!(h.store.gets(), 1001, "forgotten after the time limit");
}

#[tokio::test]
async fn a_flood_of_unknown_ids_stays_bounded_and_keeps_known_keys() {
    // Every id read (no read budget, tests/flood.rs): the map's bound.
    let h = harness_with(|b| {
        b.unknown_cache_capacity(1_000)
            .cache_capacity(100)
            .unknown_id_reads(None)
    });
    let issued = h
        .keys
        .create(&admin(&h.keys, "acme"), NewKey::new("zapier"))
        .await
        .expect("create");
    let token = issued.token.expose_secret();
    h.keys.verify(token).await.expect("valid");
    let reads = h.store.gets();
    for n in 0..20_000 {
        let _ = h.keys.verify(&unknown_token(n)).await;
        assert!(
            h.keys.cache_stats().unknown_ids <= 1_008,
            "bounded (16 shards rounded up)"
        );
    }
    assert_eq!(h.store.gets() - reads, 20_000, "each new id is read once");
    h.keys.verify(token).await.expect("valid");
    assert_eq!(
        h.store.gets() - reads,
        20_000,
        "the flood did not evict the known key"
    );
    assert_eq!(h.keys.cache_stats().keys, 1);
}

#[tokio::test]
async fn known_keys_are_bounded_too() {
    let h = harness_with(|b| b.cache_capacity(64));
    let actor = admin(&h.keys, "acme");
    for i in 0..300 {
        let issued = h
            .keys
            .create(&actor, NewKey::new(format!("key {i}")))
            .await
            .expect("create");
        h.keys
            .verify(issued.token.expose_secret())
            .await
            .expect("valid");
        assert!(h.keys.cache_stats().keys <= 64);
    }
}

/// Two instances on one store that reports changes (the in-memory store
/// does, for everything done through it).
fn pair(store: &MemoryStore, clock: &ManualClock) -> (Keyward, Keyward) {
    let build = || {
        Keyward::builder(store.clone(), catalog())
            .clock(clock.clone())
            .cache_ttl(Duration::minutes(10))
            .build()
            .expect("valid config")
    };
    (build(), build())
}

#[tokio::test]
async fn changes_on_one_instance_reach_the_others_cache_at_once() {
    let store = MemoryStore::new();
    let clock = ManualClock::default();
    let (a, b) = pair(&store, &clock);
    let actor = admin(&a, "acme");
    let issued = a
        .create(&actor, NewKey::new("ci").permissions(["contacts:write"]))
        .await
        .expect("create");
    let token = issued.token.expose_secret();
    let id = issued.key.id;
    assert!(b
        .verify(token)
        .await
        .expect("valid")
        .require("contacts:write")
        .is_ok());

    a.set_permissions(&actor, &id, ["contacts:read"])
        .await
        .expect("re-permission");
    let v = b.verify(token).await.expect("valid");
    assert!(
        v.require("contacts:write").is_err(),
        "new permissions, no clock moved"
    );

    a.revoke(&actor, &id).await.expect("revoke");
    assert!(matches!(b.verify(token).await, Err(VerifyError::Revoked)));
    a.reactivate(&actor, &id).await.expect("reactivate");
    b.verify(token).await.expect("valid again");

    a.delete(&actor, &id).await.expect("delete");
    assert!(matches!(b.verify(token).await, Err(VerifyError::Invalid)));
}

#[tokio::test]
async fn a_key_created_elsewhere_is_not_hidden_by_a_remembered_miss() {
    let store = MemoryStore::new();
    let clock = ManualClock::default();
    let (a, b) = pair(&store, &clock);
    let issued = a
        .create(&admin(&a, "acme"), NewKey::new("ci"))
        .await
        .expect("create");
    // Forget it on b's side by deleting through b, then make b remember the
    // miss, then restore the record directly in the shared store.
    let record = keyward::store::KeyStore::get(&store, &issued.key.id)
        .await
        .expect("get")
        .expect("exists");
    b.delete(&admin(&b, "acme"), &issued.key.id)
        .await
        .expect("delete");
    assert!(matches!(
        b.verify(issued.token.expose_secret()).await,
        Err(VerifyError::Invalid)
    ));
    keyward::store::KeyStore::insert(&store, &record)
        .await
        .expect("insert");
    b.verify(issued.token.expose_secret())
        .await
        .expect("the insert cleared the remembered miss");
}

#[tokio::test]
async fn without_a_change_feed_staleness_is_bounded_by_the_time_limit() {
    // CountingStore does not forward `subscribe`: like a custom store with
    // no change feed.
    let store = CountingStore::default();
    let clock = ManualClock::default();
    let build = || {
        Keyward::builder(store.clone(), catalog())
            .clock(clock.clone())
            .cache_ttl(Duration::seconds(5))
            .build()
            .expect("valid config")
    };
    let (a, b) = (build(), build());
    let actor = admin(&a, "acme");
    let issued = a.create(&actor, NewKey::new("ci")).await.expect("create");
    let token = issued.token.expose_secret();
    b.verify(token).await.expect("valid");
    a.revoke(&actor, &issued.key.id).await.expect("revoke");
    assert!(
        matches!(a.verify(token).await, Err(VerifyError::Revoked)),
        "the revoking instance sees it at once"
    );
    clock.advance(Duration::milliseconds(4_999));
    b.verify(token)
        .await
        .expect("the other instance may trust its copy for the time limit");
    clock.advance(Duration::milliseconds(1));
    assert!(matches!(b.verify(token).await, Err(VerifyError::Revoked)));
}

#[tokio::test]
async fn a_zero_time_limit_reads_the_store_every_time() {
    let h = harness_with(|b| b.cache_ttl(Duration::zero()));
    let issued = h
        .keys
        .create(&admin(&h.keys, "acme"), NewKey::new("zapier"))
        .await
        .expect("create");
    let before = h.store.gets();
    for _ in 0..10 {
        h.keys
            .verify(issued.token.expose_secret())
            .await
            .expect("valid");
        let _ = h.keys.verify(&unknown_token(7)).await;
    }
    assert_eq!(h.store.gets() - before, 20);
    assert_eq!(h.keys.cache_stats().keys, 0);
}

#[tokio::test]
async fn a_stale_copy_is_re_read_before_refusing_an_inactive_key() {
    // b reads the key at day 89.5 (last used at day 0) and trusts that
    // copy for a day; a uses the key at day 89.6 and records it. At day
    // 90.1 b's copy says "unused for 90 days", but the store knows better.
    let store = CountingStore::default();
    let clock = ManualClock::default();
    let build = || {
        Keyward::builder(store.clone(), catalog())
            .clock(clock.clone())
            .cache_ttl(Duration::days(1))
            .build()
            .expect("valid config")
    };
    let (a, b) = (build(), build());
    let issued = a
        .create(&admin(&a, "acme"), NewKey::new("ci"))
        .await
        .expect("create");
    let token = issued.token.expose_secret();
    a.verify(token).await.expect("used at day 0");
    a.flush_last_used().await.expect("flush");
    clock.advance(Duration::hours(89 * 24 + 12));
    // A refused request loads the key into b's cache without using it.
    assert!(matches!(
        b.verify_for_tenant(token, "globex").await,
        Err(VerifyError::WrongTenant)
    ));
    clock.advance(Duration::hours(2));
    a.verify(token).await.expect("day 89.6: active");
    a.flush_last_used().await.expect("flush");
    let reads = store.gets();
    clock.advance(Duration::hours(12));
    b.verify(token)
        .await
        .expect("b's copy says inactive; the store says used at day 89.6");
    assert_eq!(store.gets() - reads, 1, "one re-read");
}

#[tokio::test]
async fn a_down_store_refuses_unknown_keys_with_a_store_error() {
    let keys = Keyward::builder(common::DownStore, catalog())
        .build()
        .expect("valid config");
    for _ in 0..2 {
        assert!(matches!(
            keys.verify(&unknown_token(1)).await,
            Err(VerifyError::Store(_))
        ));
    }
    assert_eq!(keys.cache_stats().unknown_ids, 0, "errors are not cached");
}

#[tokio::test]
async fn invalid_cache_settings_are_refused() {
    for ttl in [Duration::seconds(-1), Duration::days(2)] {
        let err = Keyward::builder(MemoryStore::new(), catalog())
            .cache_ttl(ttl)
            .build()
            .expect_err("out of range");
        assert!(err.to_string().contains("cache_ttl"), "{err}");
    }
    // The slot table is allocated at build: no capacity-overflow panic or
    // abort for "unbounded".
    let err = Keyward::builder(MemoryStore::new(), catalog())
        .cache_capacity(usize::MAX)
        .build()
        .expect_err("too large");
    assert!(err.to_string().contains("cache_capacity"), "{err}");
    let err = Keyward::builder(MemoryStore::new(), catalog())
        .unknown_cache_capacity(usize::MAX)
        .build()
        .expect_err("too large");
    assert!(err.to_string().contains("unknown_cache_capacity"), "{err}");
    Keyward::builder(MemoryStore::new(), catalog())
        .cache_capacity(0)
        .build()
        .expect("zero turns the table off");
    for bad in [Duration::seconds(-1), Duration::days(2)] {
        let err = Keyward::builder(MemoryStore::new(), catalog())
            .cache_stale_for(bad)
            .build()
            .expect_err("out of range");
        assert!(err.to_string().contains("cache_stale_for"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_on_one_id_share_one_read() {
    let h = harness_with(|b| b.cache_ttl(Duration::seconds(10)));
    let issued = h
        .keys
        .create(&admin(&h.keys, "acme"), NewKey::new("zapier"))
        .await
        .expect("create");
    let token = issued.token.expose_secret().to_string();
    // Reads take 50 ms, so the 64 requests below all miss together.
    h.store
        .get_delay_ms
        .store(50, std::sync::atomic::Ordering::SeqCst);
    for (label, token) in [("a known key", token), ("a made-up id", unknown_token(9))] {
        h.clock.advance(Duration::seconds(10)); // every entry is stale now
        let before = h.store.gets();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let keys = h.keys.clone();
                let token = token.clone();
                tokio::spawn(async move { keys.verify(&token).await.is_ok() })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.expect("join"));
        }
        assert_eq!(
            h.store.gets() - before,
            1,
            "{label}: 64 concurrent misses, one read"
        );
        assert_eq!(ok, if label == "a known key" { 64 } else { 0 });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_read_does_not_strand_the_waiters() {
    let h = harness_with(|b| b);
    let issued = h
        .keys
        .create(&admin(&h.keys, "acme"), NewKey::new("zapier"))
        .await
        .expect("create");
    let token = issued.token.expose_secret().to_string();
    h.store
        .get_delay_ms
        .store(200, std::sync::atomic::Ordering::SeqCst);
    // The leader's request is dropped mid-read (a client hung up).
    let leader = {
        let keys = h.keys.clone();
        let token = token.clone();
        tokio::spawn(async move { keys.verify(&token).await.is_ok() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let follower = {
        let keys = h.keys.clone();
        let token = token.clone();
        tokio::spawn(async move { keys.verify(&token).await.is_ok() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    leader.abort();
    let done = tokio::time::timeout(std::time::Duration::from_secs(5), follower)
        .await
        .expect("the waiter is not stranded");
    assert!(
        done.expect("join"),
        "the waiter reads the key itself once the leader is gone"
    );
}

#[tokio::test]
async fn a_hammered_inactive_key_is_not_re_read_on_every_request() {
    let h = harness_with(|b| b.cache_ttl(Duration::minutes(5)));
    let issued = h
        .keys
        .create(&admin(&h.keys, "acme"), NewKey::new("old"))
        .await
        .expect("create");
    let token = issued.token.expose_secret();
    h.clock.advance(Duration::days(91));
    let before = h.store.gets();
    for _ in 0..100 {
        assert!(matches!(
            h.keys.verify(token).await,
            Err(VerifyError::Inactive)
        ));
    }
    assert_eq!(
        h.store.gets() - before,
        1,
        "read once (the copy is then known to be settled), not per request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_loses_no_last_used_write() {
    use std::sync::atomic::Ordering;
    let h = harness_with(|b| b);
    let issued = h
        .keys
        .create(&admin(&h.keys, "acme"), NewKey::new("zapier"))
        .await
        .expect("create");
    let token = issued.token.expose_secret().to_string();
    h.store.last_used_delay_ms.store(300, Ordering::SeqCst);
    h.store.fail_last_used.store(true, Ordering::SeqCst);
    // The first use starts a flush; the request is dropped meanwhile.
    let request = {
        let keys = h.keys.clone();
        tokio::spawn(async move { keys.verify(&token).await.is_ok() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    request.abort();
    let _ = request.await;
    h.store.last_used_delay_ms.store(0, Ordering::SeqCst);
    h.store.fail_last_used.store(false, Ordering::SeqCst);
    assert_eq!(
        h.keys.flush_last_used().await.expect("flush"),
        1,
        "still pending"
    );
    let info = h
        .keys
        .get(&admin(&h.keys, "acme"), &issued.key.id)
        .await
        .expect("get");
    assert!(info.last_used_at.is_some(), "the use was recorded");
}

/// A harness over a store whose feed sees every writer (as PostgreSQL's
/// and the memory store's do): past its time limit a cached key is
/// served stale while it is read again.
fn with_feed(stale: Duration) -> (Keyward, CountingStore, ManualClock) {
    feed_harness(|b| b.cache_stale_for(stale))
}

/// [`with_feed`]'s harness (a 10 s `cache_ttl`), with `configure` applied
/// to its builder.
fn feed_harness(
    configure: impl FnOnce(KeywardBuilder) -> KeywardBuilder,
) -> (Keyward, CountingStore, ManualClock) {
    let store = CountingStore {
        with_feed: true,
        ..CountingStore::default()
    };
    let clock = ManualClock::default();
    let keys = configure(
        Keyward::builder(store.clone(), catalog())
            .clock(clock.clone())
            .cache_ttl(Duration::seconds(10)),
    )
    .build()
    .expect("config");
    (keys, store, clock)
}

/// Waits (a little, in real time) for background reads to land.
async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_time_limit_a_busy_key_is_served_while_one_read_runs() {
    let (keys, store, clock) = with_feed(Duration::minutes(10));
    let issued = keys
        .create(&admin(&keys, "acme"), NewKey::new("zapier"))
        .await
        .expect("create");
    let token = issued.token.expose_secret();
    keys.verify(token).await.expect("valid");
    let before = store.gets();
    // Past the limit, with the store slow: no verify waits for it, and
    // a burst starts one read.
    store
        .get_delay_ms
        .store(200, std::sync::atomic::Ordering::SeqCst);
    clock.advance(Duration::seconds(11));
    let started = std::time::Instant::now();
    for _ in 0..100 {
        keys.verify(token).await.expect("served from the cache");
    }
    assert!(
        started.elapsed() < std::time::Duration::from_millis(150),
        "no verify waited for the 200 ms read: {:?}",
        started.elapsed()
    );
    until("one background read", || store.gets() - before == 1).await;
    store
        .get_delay_ms
        .store(0, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    assert_eq!(store.gets() - before, 1, "one read for the burst");
    // The entry is fresh again: nothing more is read within the limit.
    clock.advance(Duration::seconds(5));
    keys.verify(token).await.expect("valid");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(store.gets() - before, 1);
    // Past the stale window too, the read is synchronous again.
    clock.advance(Duration::minutes(11));
    keys.verify(token).await.expect("valid");
    assert_eq!(store.gets() - before, 2, "read before answering");
}

/// `n` keys over a feed that sees every writer, read into the cache,
/// with a budget of background reads set by `budget` (the default if it
/// sets none).
async fn aged_keys(
    n: usize,
    budget: impl FnOnce(KeywardBuilder) -> KeywardBuilder,
) -> (Keyward, CountingStore, ManualClock, Vec<String>) {
    let (keys, store, clock) = feed_harness(|b| budget(b.cache_capacity(n.max(1_000))));
    let tokens = create_keys(&keys, n).await;
    verify_all(&keys, &tokens).await;
    (keys, store, clock, tokens)
}

/// Verifies every token, each served from the cache.
async fn verify_all(keys: &Keyward, tokens: &[String]) {
    for t in tokens {
        keys.verify(t).await.expect("valid");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_reads_of_aged_keys_stay_within_their_budget() {
    let per_minute = RateLimit::new(5, Duration::minutes(1)).expect("limit");
    let (keys, store, clock, tokens) =
        aged_keys(20, |b| b.cache_refresh_reads(Some(per_minute))).await;
    let before = store.gets();
    clock.advance(Duration::seconds(11));
    // Every aged key answers at once, twice; five are read again.
    verify_all(&keys, &tokens).await;
    verify_all(&keys, &tokens).await;
    until("five background reads", || store.gets() - before == 5).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(store.gets() - before, 5, "no read past the budget");
    // A minute on, inside the stale window: the budget has refilled.
    clock.advance(Duration::minutes(1));
    verify_all(&keys, &tokens).await;
    until("five more", || store.gets() - before == 10).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(store.gets() - before, 10, "no read past the budget");
    // Past every entry's stale window, each key is read before its verify
    // answers, whatever the budget.
    clock.advance(Duration::minutes(11));
    let mid = store.gets();
    verify_all(&keys, &tokens).await;
    assert_eq!(store.gets() - mid, 20, "every key read before answering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_thousand_aged_keys_are_read_again_and_without_a_budget_all() {
    for (budget, reads) in [(Some(()), 1_000), (None, 1_100)] {
        let (keys, store, clock, tokens) = aged_keys(1_100, |b| match budget {
            Some(()) => b,
            None => b.cache_refresh_reads(None),
        })
        .await;
        let before = store.gets();
        clock.advance(Duration::seconds(11));
        verify_all(&keys, &tokens).await;
        for _ in 0..400 {
            if store.gets() - before >= reads {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(store.gets() - before, reads, "budget {budget:?}");
    }
}

/// Polls `f` once, outside any runtime.
fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_read_that_cannot_start_goes_back_to_the_budget() {
    let one = RateLimit::new(1, Duration::minutes(1)).expect("limit");
    let (keys, store, clock, tokens) = aged_keys(2, |b| b.cache_refresh_reads(Some(one))).await;
    let before = store.gets();
    clock.advance(Duration::seconds(11));
    // Verified on a thread outside any runtime: nothing can run the read.
    let (k, t) = (keys.clone(), tokens[0].clone());
    std::thread::spawn(move || poll_once(k.verify(&t)).expect("ready").expect("valid"))
        .join()
        .expect("verified");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(store.gets() - before, 0, "no read could start");
    // The read granted went back: the other aged key gets it.
    keys.verify(&tokens[1]).await.expect("valid");
    until("the read", || store.gets() - before == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_still_wins_at_once() {
    let (keys, store, clock) = with_feed(Duration::minutes(10));
    // The changes are made by another instance over the same store: they
    // reach this one through the feed alone.
    let other = Keyward::builder(store.clone(), catalog())
        .clock(clock.clone())
        .build()
        .expect("config");
    let admin = admin(&keys, "acme");
    let a = keys.create(&admin, NewKey::new("a")).await.expect("create");
    let b = keys.create(&admin, NewKey::new("b")).await.expect("create");
    for k in [&a, &b] {
        keys.verify(k.token.expose_secret()).await.expect("valid");
    }
    clock.advance(Duration::seconds(30));
    // A revocation reported by the feed drops the entry: never served
    // stale.
    other.revoke(&admin, &a.key.id).await.expect("revoke");
    assert!(matches!(
        keys.verify(a.token.expose_secret()).await,
        Err(VerifyError::Revoked)
    ));
    // So does a deletion.
    other.delete(&admin, &b.key.id).await.expect("delete");
    assert!(matches!(
        keys.verify(b.token.expose_secret()).await,
        Err(VerifyError::Invalid)
    ));
}

#[tokio::test]
async fn without_a_feed_that_sees_every_writer_the_time_limit_alone_rules() {
    // The memory store's feed sees every writer; this one reports
    // nothing (as a SQLite file another process writes).
    let h = harness_with(|b| {
        b.cache_ttl(Duration::seconds(10))
            .cache_stale_for(Duration::minutes(10))
    });
    let issued = h
        .keys
        .create(&admin(&h.keys, "acme"), NewKey::new("zapier"))
        .await
        .expect("create");
    let token = issued.token.expose_secret();
    h.keys.verify(token).await.expect("valid");
    let before = h.store.gets();
    h.clock.advance(Duration::seconds(11));
    h.keys.verify(token).await.expect("valid");
    assert_eq!(h.store.gets() - before, 1, "read before answering");
}

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_for_background_reads_are_counted_queued_or_over_budget() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let one = RateLimit::new(1, Duration::minutes(10)).expect("limit");
    let (keys, _store, clock) = feed_harness(|b| b.cache_refresh_reads(Some(one)));
    let tokens = create_keys(&keys, 3).await;
    // The instance's metric handles are registered at its first verify,
    // with the recorder in force then: this one. The store answers at
    // once, so each verify, the first reads too, ends in one poll.
    metrics::with_local_recorder(&recorder, || {
        let verify = |t: &String| {
            poll_once(keys.verify(t)).expect("ready").expect("valid");
        };
        tokens.iter().for_each(verify);
        clock.advance(Duration::seconds(11));
        tokens.iter().for_each(verify);
    });
    let text = recorder.handle().render();
    for line in [
        r#"keyward_cache_refreshes_total{result="queued"} 1"#,
        r#"keyward_cache_refreshes_total{result="over_budget"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
}
