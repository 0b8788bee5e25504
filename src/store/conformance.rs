//! The behaviour every [`KeyStore`] must have, as runnable checks.
//!
//! keyward runs this suite against each store it ships; run it against
//! yours. Each check gets a fresh, empty store from your factory. A failed
//! check panics with a message naming the rule, like an assertion in a
//! test. Call it from a multi-threaded tokio runtime so the concurrency
//! checks really race:
//!
//! ```
//! # async fn demo() {
//! use keyward::MemoryStore;
//! use keyward::store::conformance;
//!
//! // In a test: #[tokio::test(flavor = "multi_thread")]
//! conformance::run(|| async { MemoryStore::new() }).await;
//! # }
//! ```

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::{Credit, KeyStore, RefillDue, SweepDue};
use crate::error::StoreError;
use crate::key::KeyRecord;
use crate::limit::RateLimit;
use crate::policy::{Refill, WarningMark};
use crate::token::{KeyHash, KeyId, TokenFormat};

/// Runs every check, each against a fresh store from `new_store`.
///
/// # Panics
/// When the store breaks a rule; the message names it.
pub async fn run<S, F, Fut>(new_store: F)
where
    S: KeyStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    insert_then_get_round_trips(Arc::new(new_store().await)).await;
    duplicate_insert_is_refused(Arc::new(new_store().await)).await;
    concurrent_inserts_of_one_id_admit_one(Arc::new(new_store().await)).await;
    update_is_conditional_on_version(Arc::new(new_store().await)).await;
    update_leaves_last_used_and_immutable_fields(Arc::new(new_store().await)).await;
    last_used_only_moves_forward(Arc::new(new_store().await)).await;
    concurrent_updates_admit_one_per_version(Arc::new(new_store().await)).await;
    last_used_and_updates_do_not_lose_each_other(Arc::new(new_store().await)).await;
    delete_is_final(Arc::new(new_store().await)).await;
    tenants_are_isolated_and_paged(Arc::new(new_store().await)).await;
    scan_visits_every_key_once_in_order(Arc::new(new_store().await)).await;
    credits_are_consumed_and_refilled(Arc::new(new_store().await)).await;
    concurrent_credits_never_overspend(Arc::new(new_store().await)).await;
    credits_move_in_bulk_and_never_below_zero(Arc::new(new_store().await)).await;
    credits_and_updates_do_not_lose_each_other(Arc::new(new_store().await)).await;
    changes_are_reported_to_subscribers(Arc::new(new_store().await)).await;
    scan_due_selects_exactly_the_due_keys(Arc::new(new_store().await)).await;
}

#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<KeyId>>);

impl super::ChangeListener for Recorder {
    fn changed(&self, id: &KeyId) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(*id);
    }
    fn reset(&self) {}
}

impl Recorder {
    fn count(&self, id: KeyId) -> usize {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().filter(|s| **s == id).count()
    }

    /// Lets reports of earlier operations arrive (stores may report the
    /// same change more than once, e.g. locally and through a database
    /// channel), then returns how many there are.
    async fn settle(&self, id: KeyId) -> usize {
        let mut last = self.count(id);
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let now = self.count(id);
            if now == last {
                return now;
            }
            last = now;
        }
    }

    /// Waits up to 5 s for a report about `id` beyond the first `seen`.
    async fn wait_beyond(&self, id: KeyId, seen: usize, what: &str) {
        for _ in 0..500 {
            if self.count(id) > seen {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("a store that subscribes must report {what}");
    }
}

async fn changes_are_reported_to_subscribers<S: KeyStore>(store: Arc<S>) {
    let recorder = Arc::new(Recorder::default());
    let weak: std::sync::Weak<Recorder> = Arc::downgrade(&recorder);
    if !store.subscribe(weak) {
        return;
    }
    let r = record("acme");
    store.insert(&r).await.expect("insert must succeed");
    recorder.wait_beyond(r.id, 0, "an insert").await;
    let seen = recorder.settle(r.id).await;
    let mut changed = r.clone();
    changed.revoked_at = Some(t0());
    store.update(&changed).await.expect("update must succeed");
    recorder.wait_beyond(r.id, seen, "an update").await;
    let seen = recorder.settle(r.id).await;
    assert!(store.delete(&r.id).await.expect("delete must succeed"));
    recorder.wait_beyond(r.id, seen, "a delete").await;
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_893_456_000, 0).unwrap_or_default()
}

/// A realistic record in `tenant` with a fresh random id.
fn record(tenant: &str) -> KeyRecord {
    let id = KeyId::random().expect("OS randomness");
    let token = TokenFormat::default().generate(id).expect("OS randomness");
    KeyRecord {
        id,
        prefix: token.display_prefix(),
        hash: KeyHash::of(token.expose_secret().as_bytes()),
        tenant: tenant.to_string(),
        name: "conformance key".to_string(),
        permissions: vec!["contacts:read".into(), "contacts:write".into()],
        created_by: "user_1".to_string(),
        created_at: t0(),
        expires_at: Some(t0() + Duration::days(30)),
        revoked_at: None,
        last_used_at: None,
        metadata: Some(serde_json::json!({"integration": "zapier", "n": 1})),
        version: 0,
        rate_limit: Some(RateLimit::per_minute(200).expect("valid")),
        remaining: None,
        refill: None,
        last_refill_at: None,
        inactivity_warning: None,
        expiry_warning: None,
        rolled_from: Some(KeyId::random().expect("OS randomness")),
        rolled_to: None,
    }
}

async fn get<S: KeyStore>(store: &S, id: &KeyId) -> KeyRecord {
    store
        .get(id)
        .await
        .expect("get must succeed")
        .expect("the record must exist")
}

async fn insert_then_get_round_trips<S: KeyStore>(store: Arc<S>) {
    let mut r = record("acme");
    r.version = 41; // the store, not the caller, sets the first version
    store.insert(&r).await.expect("insert must succeed");
    r.version = 0;
    assert_eq!(
        get(&*store, &r.id).await,
        r,
        "get must return what insert stored, at version 0"
    );
    let other = KeyId::random().expect("OS randomness");
    assert!(
        store.get(&other).await.expect("get must succeed").is_none(),
        "get of an unknown id must be None"
    );
}

async fn duplicate_insert_is_refused<S: KeyStore>(store: Arc<S>) {
    let first = record("acme");
    store.insert(&first).await.expect("insert must succeed");
    let mut second = record("globex");
    second.id = first.id;
    match store.insert(&second).await {
        Err(StoreError::Duplicate(id)) => assert_eq!(id, first.id),
        other => panic!("a second insert with the same id must be Duplicate, got {other:?}"),
    }
    assert_eq!(
        get(&*store, &first.id).await,
        first,
        "a refused insert must not overwrite"
    );
}

async fn concurrent_inserts_of_one_id_admit_one<S: KeyStore>(store: Arc<S>) {
    let base = record("acme");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let mut r = base.clone();
            r.name = format!("racer {i}");
            tokio::spawn(async move { store.insert(&r).await.is_ok() })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.expect("task must not panic"));
    }
    assert_eq!(
        wins, 1,
        "exactly one of 16 concurrent inserts of one id must succeed"
    );
}

async fn update_is_conditional_on_version<S: KeyStore>(store: Arc<S>) {
    let mut r = record("acme");
    store.insert(&r).await.expect("insert must succeed");
    r.name = "renamed".into();
    r.permissions = vec!["contacts:read".into()];
    r.revoked_at = Some(t0() + Duration::hours(1));
    r.expires_at = Some(t0() + Duration::hours(2));
    r.metadata = None;
    r.rate_limit = Some(RateLimit::per_second(5).expect("valid"));
    r.refill = Refill::new(10, Duration::days(1));
    let mark = WarningMark {
        deadline: t0() + Duration::days(90),
        before_secs: 86_400,
    };
    r.inactivity_warning = Some(mark);
    r.expiry_warning = Some(mark);
    let v1 = store
        .update(&r)
        .await
        .expect("update at the current version must succeed");
    assert!(v1 > r.version, "update must bump the version");
    r.version = v1;
    assert_eq!(
        get(&*store, &r.id).await,
        r,
        "update must store every mutable field"
    );

    let mut stale = r.clone();
    stale.version = 0;
    stale.name = "stale".into();
    assert!(
        matches!(store.update(&stale).await, Err(StoreError::Conflict(_))),
        "update at an old version must be Conflict"
    );
    assert_eq!(
        get(&*store, &r.id).await.name,
        "renamed",
        "a conflicting update must not write"
    );

    let missing = record("acme");
    assert!(
        matches!(store.update(&missing).await, Err(StoreError::NotFound(_))),
        "update of a missing record must be NotFound"
    );
}

async fn update_leaves_last_used_and_immutable_fields<S: KeyStore>(store: Arc<S>) {
    let r = record("acme");
    store.insert(&r).await.expect("insert must succeed");
    let used = t0() + Duration::minutes(5);
    store
        .record_last_used(&[(r.id, used)])
        .await
        .expect("record_last_used must succeed");
    // An update built from a copy read before the use must not erase it.
    let mut changed = r.clone();
    changed.name = "new name".into();
    changed.last_used_at = None;
    changed.tenant = "globex".into();
    changed.created_by = "intruder".into();
    changed.hash = KeyHash::from_bytes([7; 32]);
    changed.remaining = Some(1_000);
    changed.last_refill_at = Some(t0());
    changed.rolled_from = None;
    let successor = KeyId::random().expect("OS randomness");
    changed.rolled_to = Some(successor);
    changed.created_at = t0() - Duration::days(1);
    store.update(&changed).await.expect("update must succeed");
    let stored = get(&*store, &r.id).await;
    assert_eq!(stored.name, "new name");
    assert_eq!(
        stored.rolled_to,
        Some(successor),
        "update must write rolled_to"
    );
    assert_eq!(
        stored.last_used_at,
        Some(used),
        "update must not change last_used_at"
    );
    assert_eq!(stored.tenant, "acme", "update must not change the tenant");
    assert_eq!(
        stored.created_by, "user_1",
        "update must not change created_by"
    );
    assert_eq!(stored.hash, r.hash, "update must not change the hash");
    assert_eq!(stored.remaining, None, "update must not change remaining");
    assert_eq!(
        stored.last_refill_at, None,
        "update must not change last_refill_at"
    );
    assert_eq!(
        stored.rolled_from, r.rolled_from,
        "update must not change rolled_from"
    );
    assert_eq!(
        stored.created_at, r.created_at,
        "update must not change created_at"
    );
}

async fn last_used_only_moves_forward<S: KeyStore>(store: Arc<S>) {
    let a = record("acme");
    let b = record("acme");
    store.insert(&a).await.expect("insert must succeed");
    store.insert(&b).await.expect("insert must succeed");
    let unknown = KeyId::random().expect("OS randomness");
    let late = t0() + Duration::hours(2);
    let early = t0() + Duration::hours(1);
    store
        .record_last_used(&[(a.id, late), (b.id, early), (unknown, late)])
        .await
        .expect("a batch with an unknown id must succeed");
    store
        .record_last_used(&[(a.id, early)])
        .await
        .expect("record_last_used must succeed");
    store
        .record_last_used(&[])
        .await
        .expect("an empty batch must succeed");
    let a2 = get(&*store, &a.id).await;
    assert_eq!(
        a2.last_used_at,
        Some(late),
        "last_used_at must never move backward"
    );
    assert_eq!(get(&*store, &b.id).await.last_used_at, Some(early));
    assert_eq!(a2.version, 0, "record_last_used must not bump the version");
    assert!(
        store.get(&unknown).await.expect("get").is_none(),
        "record_last_used must not create records"
    );
}

async fn concurrent_updates_admit_one_per_version<S: KeyStore>(store: Arc<S>) {
    let r = record("acme");
    store.insert(&r).await.expect("insert must succeed");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let mut r = r.clone();
            r.name = format!("writer {i}");
            tokio::spawn(async move { store.update(&r).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("task must not panic") {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("a losing concurrent update must be Conflict, got {e:?}"),
        }
    }
    assert_eq!(
        wins, 1,
        "exactly one of 16 updates at the same version must succeed"
    );
}

async fn last_used_and_updates_do_not_lose_each_other<S: KeyStore>(store: Arc<S>) {
    let r = record("acme");
    store.insert(&r).await.expect("insert must succeed");
    let id = r.id;
    let touches = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 1..=200 {
                store
                    .record_last_used(&[(id, t0() + Duration::seconds(i))])
                    .await
                    .expect("record_last_used must succeed");
                tokio::task::yield_now().await;
            }
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut done = 0;
                while done < 25 {
                    let mut cur = store.get(&id).await.expect("get").expect("exists");
                    cur.permissions = vec![format!("writer{w}:{done}")];
                    match store.update(&cur).await {
                        Ok(_) => done += 1,
                        Err(StoreError::Conflict(_)) => {}
                        Err(e) => panic!("update must succeed or conflict, got {e:?}"),
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    touches.await.expect("task must not panic");
    for w in writers {
        w.await.expect("task must not panic");
    }
    let end = get(&*store, &id).await;
    assert_eq!(
        end.last_used_at,
        Some(t0() + Duration::seconds(200)),
        "racing updates must not erase last-used writes"
    );
    assert_eq!(
        end.version, 100,
        "every one of 100 successful updates must count once"
    );
}

async fn delete_is_final<S: KeyStore>(store: Arc<S>) {
    let r = record("acme");
    let keep = record("acme");
    store.insert(&r).await.expect("insert must succeed");
    store.insert(&keep).await.expect("insert must succeed");
    assert!(
        store.delete(&r.id).await.expect("delete must succeed"),
        "delete of a present key is true"
    );
    assert!(
        !store.delete(&r.id).await.expect("delete must succeed"),
        "a second delete is false"
    );
    assert!(
        store.get(&r.id).await.expect("get").is_none(),
        "a deleted key must be gone"
    );
    assert!(
        matches!(store.update(&r).await, Err(StoreError::NotFound(_))),
        "update of a deleted key must be NotFound"
    );
    let listed = store.list_by_tenant("acme", None, 10).await.expect("list");
    assert_eq!(listed.len(), 1, "a deleted key must not be listed");
    assert_eq!(listed[0].id, keep.id);
    assert_eq!(
        store.scan(None, 10).await.expect("scan").len(),
        1,
        "a deleted key must not be scanned"
    );
}

async fn tenants_are_isolated_and_paged<S: KeyStore>(store: Arc<S>) {
    let mut acme = BTreeSet::new();
    for i in 0..25 {
        let tenant = if i % 2 == 0 { "acme" } else { "acme2" };
        let r = record(tenant);
        if tenant == "acme" {
            acme.insert(r.id);
        }
        store.insert(&r).await.expect("insert must succeed");
    }
    store
        .insert(&record("ac"))
        .await
        .expect("insert must succeed");
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_by_tenant("acme", after.as_ref(), 4)
            .await
            .expect("list must succeed");
        assert!(page.len() <= 4, "a page must hold at most `limit` records");
        assert!(
            page.iter().all(|r| r.tenant == "acme"),
            "list must return only the tenant's keys"
        );
        seen.extend(page.iter().map(|r| r.id));
        if page.len() < 4 {
            break;
        }
        after = page.last().map(|r| r.id);
    }
    let expected: Vec<KeyId> = acme.into_iter().collect();
    assert_eq!(
        seen, expected,
        "paging must return each of the tenant's keys once, in id order"
    );
    assert!(
        store
            .list_by_tenant("nobody", None, 10)
            .await
            .expect("list")
            .is_empty(),
        "an unknown tenant has no keys"
    );
}

async fn scan_visits_every_key_once_in_order<S: KeyStore>(store: Arc<S>) {
    let mut all = BTreeSet::new();
    for i in 0..1_234 {
        let r = record(&format!("tenant{}", i % 7));
        all.insert(r.id);
        store.insert(&r).await.expect("insert must succeed");
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .scan(after.as_ref(), 100)
            .await
            .expect("scan must succeed");
        assert!(
            page.len() <= 100,
            "a page must hold at most `limit` records"
        );
        seen.extend(page.iter().map(|r| r.id));
        if page.len() < 100 {
            break;
        }
        after = page.last().map(|r| r.id);
    }
    let expected: Vec<KeyId> = all.into_iter().collect();
    assert_eq!(
        seen, expected,
        "scan must visit every key once, in id order"
    );
}

async fn credits_are_consumed_and_refilled<S: KeyStore>(store: Arc<S>) {
    let unlimited = record("acme");
    store.insert(&unlimited).await.expect("insert must succeed");
    assert_eq!(
        store
            .consume_credit(&unlimited.id, None)
            .await
            .expect("consume"),
        Credit::Unlimited,
        "a key without remaining is unlimited"
    );
    assert_eq!(get(&*store, &unlimited.id).await.remaining, None);
    let missing = KeyId::random().expect("OS randomness");
    assert_eq!(
        store.consume_credit(&missing, None).await.expect("consume"),
        Credit::Missing
    );

    // A key without a refill (one that was rolled away, say) is never
    // refilled, whatever a caller holding an older copy asks.
    let mut plain = record("acme");
    plain.remaining = Some(0);
    store.insert(&plain).await.expect("insert must succeed");
    let due_anyway = RefillDue {
        amount: 5,
        if_refilled_before: t0() + Duration::days(1),
        now: t0() + Duration::days(1),
    };
    assert_eq!(
        store
            .consume_credit(&plain.id, Some(due_anyway))
            .await
            .expect("consume"),
        Credit::Exhausted,
        "only a key that has a refill is refilled"
    );

    let mut r = record("acme");
    r.remaining = Some(2);
    r.refill = Some(crate::Refill {
        amount: 5,
        every_secs: 86_400,
    });
    r.last_refill_at = Some(t0());
    store.insert(&r).await.expect("insert must succeed");
    let take = |refill| {
        let store = store.clone();
        async move {
            store
                .consume_credit(&r.id, refill)
                .await
                .expect("consume must succeed")
        }
    };
    assert_eq!(take(None).await, Credit::Consumed { remaining: 1 });
    assert_eq!(take(None).await, Credit::Consumed { remaining: 0 });
    assert_eq!(take(None).await, Credit::Exhausted);
    assert_eq!(
        get(&*store, &r.id).await.remaining,
        Some(0),
        "exhaustion must not go negative"
    );
    // Not due: last refilled at t0, due only if refilled at or before t0 - 1s.
    let not_due = RefillDue {
        amount: 5,
        if_refilled_before: t0() - Duration::seconds(1),
        now: t0(),
    };
    assert_eq!(take(Some(not_due)).await, Credit::Exhausted);
    let due = RefillDue {
        amount: 5,
        if_refilled_before: t0(),
        now: t0() + Duration::days(1),
    };
    assert_eq!(
        take(Some(due)).await,
        Credit::Consumed { remaining: 4 },
        "a due refill applies first"
    );
    let after = get(&*store, &r.id).await;
    assert_eq!(after.last_refill_at, Some(t0() + Duration::days(1)));
    assert_eq!(after.version, 0, "consume_credit must not bump the version");
    // The same refill again is no longer due: last_refill_at moved on.
    assert_eq!(take(Some(due)).await, Credit::Consumed { remaining: 3 });
}

async fn concurrent_credits_never_overspend<S: KeyStore>(store: Arc<S>) {
    let mut r = record("acme");
    r.remaining = Some(50);
    store.insert(&r).await.expect("insert must succeed");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut won = 0;
                for _ in 0..25 {
                    match store.consume_credit(&r.id, None).await.expect("consume") {
                        Credit::Consumed { .. } => won += 1,
                        Credit::Exhausted => {}
                        other => panic!("unexpected {other:?}"),
                    }
                    tokio::task::yield_now().await;
                }
                won
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task must not panic");
    }
    assert_eq!(
        total, 50,
        "200 concurrent uses of a 50-use key must succeed exactly 50 times"
    );
    assert_eq!(get(&*store, &r.id).await.remaining, Some(0));
}

async fn credits_move_in_bulk_and_never_below_zero<S: KeyStore>(store: Arc<S>) {
    let mut r = record("acme");
    r.remaining = Some(10);
    store.insert(&r).await.expect("insert must succeed");
    let adjust = |delta| {
        let store = store.clone();
        async move { store.adjust_credits(&r.id, delta).await.expect("adjust") }
    };
    assert_eq!(adjust(-4).await, Credit::Consumed { remaining: 6 });
    assert_eq!(
        adjust(-7).await,
        Credit::Exhausted,
        "taking more than is left must take nothing"
    );
    assert_eq!(get(&*store, &r.id).await.remaining, Some(6));
    assert_eq!(adjust(-6).await, Credit::Consumed { remaining: 0 });
    assert_eq!(adjust(3).await, Credit::Consumed { remaining: 3 });
    assert_eq!(
        adjust(i64::MAX).await,
        Credit::Consumed {
            remaining: crate::MAX_USES
        },
        "giving back is capped, never overflows"
    );
    assert_eq!(adjust(-i64::MAX).await, Credit::Consumed { remaining: 0 });
    let unlimited = record("acme");
    store.insert(&unlimited).await.expect("insert must succeed");
    assert_eq!(
        store
            .adjust_credits(&unlimited.id, -1)
            .await
            .expect("adjust"),
        Credit::Unlimited
    );
    assert_eq!(get(&*store, &unlimited.id).await.remaining, None);
    let missing = KeyId::random().expect("OS randomness");
    assert_eq!(
        store.adjust_credits(&missing, -1).await.expect("adjust"),
        Credit::Missing
    );
    assert_eq!(
        get(&*store, &r.id).await.version,
        0,
        "adjust_credits must not bump the version"
    );
    // Concurrent bulk takes never overspend either.
    assert_eq!(adjust(30).await, Credit::Consumed { remaining: 30 });
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut won = 0;
                for _ in 0..4 {
                    if let Credit::Consumed { .. } =
                        store.adjust_credits(&r.id, -3).await.expect("adjust")
                    {
                        won += 3;
                    }
                }
                won
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task must not panic");
    }
    assert_eq!(total, 30, "96 uses asked of 30: exactly 30 taken");
}

async fn credits_and_updates_do_not_lose_each_other<S: KeyStore>(store: Arc<S>) {
    let mut r = record("acme");
    r.remaining = Some(10);
    store.insert(&r).await.expect("insert must succeed");
    let stale = get(&*store, &r.id).await;
    for _ in 0..3 {
        store.consume_credit(&r.id, None).await.expect("consume");
    }
    let mut renamed = stale;
    renamed.name = "renamed".into();
    store.update(&renamed).await.expect("update must succeed");
    let end = get(&*store, &r.id).await;
    assert_eq!(
        end.remaining,
        Some(7),
        "an update from a stale read must not restore used credits"
    );
    assert_eq!(end.name, "renamed");
}

async fn scan_due_selects_exactly_the_due_keys<S: KeyStore>(store: Arc<S>) {
    let now = t0() + Duration::days(100);
    let day = Duration::days(1);
    // (expires_at, revoked_at, last_used_at) around every bound.
    type Times = (
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let shapes: Vec<Times> = vec![
        (None, None, None),                                // idle since creation (t0)
        (None, None, Some(now - day)),                     // recently used
        (None, None, Some(now - Duration::days(80))),      // idle exactly at the bound
        (None, None, Some(now - Duration::days(79))),      // just inside activity
        (Some(now + Duration::days(15)), None, Some(now)), // expiring at the bound
        (Some(now + Duration::days(16)), None, Some(now)), // expiring later
        (Some(now), None, Some(now)),                      // expired just now
        (
            Some(now - Duration::days(30)),
            None,
            Some(now - Duration::days(40)),
        ), // ended at the bound
        (Some(now - Duration::days(29)), None, None),      // ended, within retention
        (None, Some(now - Duration::days(30)), None),      // revoked at the bound
        (None, Some(now - Duration::days(2)), None),       // revoked recently (idle, but revoked)
        (Some(now + day), Some(now - Duration::days(31)), None), // revoked, would be expiring
    ];
    let mut all = Vec::new();
    for _ in 0..3 {
        for (expires_at, revoked_at, last_used_at) in &shapes {
            let mut r = record("acme");
            r.created_at = t0();
            r.expires_at = *expires_at;
            r.revoked_at = *revoked_at;
            r.last_used_at = *last_used_at;
            store.insert(&r).await.expect("insert must succeed");
            all.push(r);
        }
    }
    all.sort_by_key(|r| r.id);
    let cases = [
        SweepDue {
            now,
            expiring_before: Some(now + Duration::days(15)),
            idle_since: Some(now - Duration::days(80)),
            ended_before: Some(now - Duration::days(30)),
        },
        SweepDue {
            now,
            expiring_before: None,
            idle_since: Some(now - Duration::days(80)),
            ended_before: None,
        },
        SweepDue {
            now,
            expiring_before: Some(now + Duration::days(15)),
            idle_since: None,
            ended_before: None,
        },
        SweepDue {
            now,
            expiring_before: None,
            idle_since: None,
            ended_before: None,
        },
    ];
    for due in cases {
        let want: Vec<KeyId> = all
            .iter()
            .filter(|r| due.matches(r))
            .map(|r| r.id)
            .collect();
        // Paged by 4, as a sweep pages.
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .scan_due(&due, after.as_ref(), 4)
                .await
                .expect("scan_due must succeed");
            assert!(page.len() <= 4, "scan_due must respect the limit");
            after = page.last().map(|r| r.id);
            let done = page.len() < 4;
            got.extend(page.into_iter().map(|r| r.id));
            if done {
                break;
            }
        }
        assert_eq!(
            got, want,
            "scan_due must return exactly the keys SweepDue::matches selects, in id order ({due:?})"
        );
    }
}
