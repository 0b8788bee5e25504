//! Floods of made-up tokens: a budget of store reads for ids not known to
//! exist, the ids known to exist read past it, and the refusals counted
//! and audited, sampled.

mod common;

use common::forge::unknown_token;
use common::{admin, create_keys, harness_with, settle};
use keyward::{AuditOutcome, NewKey, RateLimit, VerifyError};

fn budget(per_second: u32) -> Option<RateLimit> {
    Some(RateLimit::per_second(per_second).expect("valid"))
}

/// Verifies `n` made-up tokens from `from` on; all refused as unknown.
async fn flood(keys: &keyward::Keyward, from: u64, n: u64) {
    for i in from..from + n {
        let got = keys.verify(&unknown_token(i)).await;
        assert!(matches!(got, Err(VerifyError::Invalid)), "{i}: {got:?}");
    }
}

#[tokio::test]
async fn a_flood_costs_the_store_its_budget_and_real_keys_still_verify() {
    let h = harness_with(|b| b.unknown_id_reads(budget(10)));
    let admin = admin(&h.keys, "acme");
    let tokens = create_keys(&h.keys, 30).await;
    // None of them is cached (a write drops its id from the cache).
    let before = h.store.gets();
    flood(&h.keys, 0, 11).await;
    // The first miss past the budget began loading the ids that exist
    // (and was read: until that load ends, misses are); once loaded, they
    // are read past the budget, and the flood reads nothing.
    assert_eq!(h.store.gets() - before, 11);
    settle().await;
    assert_eq!(h.keys.cache_stats().known_ids, 30);
    for t in &tokens {
        h.keys
            .verify(t)
            .await
            .expect("a real key, read past the budget");
    }
    assert_eq!(h.store.gets() - before, 11 + 30);
    flood(&h.keys, 1_000, 200).await;
    assert_eq!(h.store.gets() - before, 11 + 30, "the flood reads nothing");

    // A key created here now is known at once.
    let late = h
        .keys
        .create(&admin, NewKey::new("late"))
        .await
        .expect("created");
    h.keys
        .verify(late.token.expose_secret())
        .await
        .expect("known");

    // After a second the budget has ten reads again.
    h.clock.advance(chrono::Duration::seconds(1));
    let before = h.store.gets();
    flood(&h.keys, 2_000, 50).await;
    assert_eq!(h.store.gets() - before, 10);
}

#[tokio::test]
async fn refusals_past_the_budget_are_audited_once_a_second_with_their_number() {
    let h = harness_with(|b| b.unknown_id_reads(budget(5)));
    flood(&h.keys, 0, 6).await;
    settle().await; // the known ids load
    flood(&h.keys, 100, 100).await;
    let sampled = |events: &[keyward::AuditEvent]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.outcome == AuditOutcome::Denied("invalid"))
            .filter_map(|e| e.detail.clone())
            .collect()
    };
    let events = h.audit.take();
    // Six read and refused as unknown (each audited as any refusal),
    // then one event for the first refused unread; the other 99 wait.
    assert_eq!(sampled(&events), [r#"{"refused_unread":1}"#]);
    let plain = events
        .iter()
        .filter(|e| e.outcome == AuditOutcome::Denied("invalid") && e.detail.is_none())
        .count();
    assert_eq!(
        plain, 6,
        "refusals past the budget are not audited one by one"
    );
    // A second later the budget has five reads again; the sixth id is
    // refused unread, and audited with the 99 refused since.
    h.clock.advance(chrono::Duration::seconds(1));
    flood(&h.keys, 1_000, 6).await;
    assert_eq!(sampled(&h.audit.take()), [r#"{"refused_unread":100}"#]);
}

#[tokio::test]
async fn the_default_budget_is_a_thousand_reads_and_none_turns_it_off() {
    let h = harness_with(|b| b);
    flood(&h.keys, 0, 1_001).await;
    settle().await;
    flood(&h.keys, 2_000, 499).await;
    assert_eq!(h.store.gets(), 1_001);

    let h = harness_with(|b| b.unknown_id_reads(None));
    flood(&h.keys, 0, 1_500).await;
    assert_eq!(h.store.gets(), 1_500, "no bound: every unknown id is read");
}

/// A cold start busier than the budget: every key is a miss, and none is
/// ever refused as unknown. Past the budget they are read while the known
/// ids load, within ten times the budget's rate; past that too, a real
/// key gets "cannot tell" (a store error, which a client retries), and
/// once the set is loaded, every one verifies.
#[tokio::test]
async fn a_cold_start_busier_than_the_budget_refuses_no_real_key() {
    let h = harness_with(|b| b.unknown_id_reads(budget(10)));
    let tokens = create_keys(&h.keys, 100).await;
    let before = h.store.gets();
    let (mut read, mut retry) = (0, Vec::new());
    for t in &tokens {
        match h.keys.verify(t).await {
            Ok(_) => read += 1,
            Err(VerifyError::Store(_)) => retry.push(t),
            Err(e) => panic!("a real key refused: {e:?}"),
        }
    }
    // The budget's burst of 10, then the load's burst of 10 more (the
    // manual clock stands still, so neither refills).
    assert_eq!((read, retry.len()), (20, 80));
    assert_eq!(h.store.gets() - before, 20, "one read each, no more");
    settle().await; // the load the budget's end began
    assert_eq!(h.keys.cache_stats().known_ids, 100);
    for t in retry {
        h.keys
            .verify(t)
            .await
            .expect("known now: read past the budget");
    }
    assert_eq!(h.store.gets() - before, 100);
    flood(&h.keys, 0, 100).await;
    assert_eq!(h.store.gets() - before, 100, "the flood read nothing");
}

/// Polls a future to completion without a runtime (the memory store
/// never waits): as a host without tokio would.
fn run_here<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Without a runtime the known ids cannot load: past the budget, a key
/// whose entry is still in the cache (past its time limit) is read; any
/// other id is answered "cannot tell" (a store error, which a client
/// retries), never "no such key", since it may be a real one.
#[test]
fn without_a_runtime_an_aged_entry_is_read_and_others_are_unanswerable() {
    let h = harness_with(|b| b.unknown_id_reads(budget(1)));
    let admin = admin(&h.keys, "acme");
    let k = run_here(h.keys.create(&admin, NewKey::new("k"))).expect("created");
    let token = k.token.expose_secret();
    run_here(h.keys.verify(token)).expect("valid");
    let cold = run_here(h.keys.create(&admin, NewKey::new("cold"))).expect("created");
    // Past the cache's time limit (no feed that sees every writer here,
    // so no stale answers): the next verify reads the store.
    h.clock.advance(chrono::Duration::seconds(11));
    let got = run_here(h.keys.verify(&unknown_token(0)));
    assert!(matches!(got, Err(VerifyError::Invalid)), "read: {got:?}");
    for i in 1..5 {
        let got = run_here(h.keys.verify(&unknown_token(i)));
        assert!(matches!(got, Err(VerifyError::Store(_))), "{got:?}");
    }
    assert_eq!(h.keys.cache_stats().known_ids, 0, "nothing could load them");
    let before = h.store.gets();
    run_here(h.keys.verify(token)).expect("its aged entry shows it exists");
    assert_eq!(h.store.gets() - before, 1);
    // A key never read here cannot be told while the budget is spent:
    // the documented cost of a flood without a runtime.
    let got = run_here(h.keys.verify(cold.token.expose_secret()));
    assert!(matches!(got, Err(VerifyError::Store(_))), "{got:?}");
    h.clock.advance(chrono::Duration::seconds(1));
    run_here(h.keys.verify(cold.token.expose_secret())).expect("within the budget again");
}

/// A store that answers `scan` and not `scan_ids` (as `CountingStore`)
/// gets the provided id walk: every id once, in order, read from `scan`
/// at most 5,000 records at a time whatever page of ids is asked for.
#[tokio::test]
async fn the_provided_id_walk_reads_records_a_few_thousand_at_a_time() {
    use keyward::store::KeyStore;
    let h = harness_with(|b| b);
    create_keys(&h.keys, 6_000).await;
    let before = h.store.calls();
    let ids = h.store.scan_ids(None, 20_000).await.expect("ids");
    assert_eq!(h.store.calls() - before, 2, "5,000 records, then 1,000");
    assert_eq!(ids.len(), 6_000);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in id order, once each"
    );
    let first = h.store.scan_ids(None, 10).await.expect("ids");
    assert_eq!(first, ids[..10]);
    let next = h.store.scan_ids(Some(&ids[9]), 10).await.expect("ids");
    assert_eq!(next, ids[10..20]);
    let last = h.store.scan_ids(ids.last(), 10).await.expect("ids");
    assert!(last.is_empty());
}
