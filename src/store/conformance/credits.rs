//! Checks of usage credits: consumed, refilled, moved in bulk, never
//! overspent, never lost to a concurrent update.

use std::sync::Arc;

use chrono::Duration;

use super::{get, record, t0};
use crate::store::{Credit, KeyStore, RefillDue};
use crate::token::KeyId;

pub(super) async fn unlimited_and_missing_keys_have_no_credits<S: KeyStore>(store: Arc<S>) {
    let unlimited = record("acme");
    store.insert(&unlimited).await.expect("insert must succeed");
    assert_eq!(
        store
            .consume_credit(&unlimited.id, 1, None)
            .await
            .expect("consume"),
        Credit::Unlimited,
        "a key without remaining is unlimited"
    );
    assert_eq!(get(&*store, &unlimited.id).await.remaining, None);
    let missing = KeyId::random().expect("OS randomness");
    assert_eq!(
        store
            .consume_credit(&missing, 1, None)
            .await
            .expect("consume"),
        Credit::Missing
    );
}

pub(super) async fn credits_are_consumed_and_refilled<S: KeyStore>(store: Arc<S>) {
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
            .consume_credit(&plain.id, 1, Some(due_anyway))
            .await
            .expect("consume"),
        Credit::Exhausted,
        "only a key that has a refill is refilled"
    );

    let mut r = record("acme");
    r.remaining = Some(2);
    r.refill = Some(crate::policy::Refill {
        amount: 5,
        every_secs: 86_400,
    });
    r.last_refill_at = Some(t0());
    store.insert(&r).await.expect("insert must succeed");
    let take = |refill| {
        let store = store.clone();
        async move {
            store
                .consume_credit(&r.id, 1, refill)
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

pub(super) async fn concurrent_credits_never_overspend<S: KeyStore>(store: Arc<S>) {
    let mut r = record("acme");
    r.remaining = Some(50);
    store.insert(&r).await.expect("insert must succeed");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut won = 0;
                for _ in 0..25 {
                    match store.consume_credit(&r.id, 1, None).await.expect("consume") {
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

pub(super) async fn credits_move_in_bulk_and_never_below_zero<S: KeyStore>(store: Arc<S>) {
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
            remaining: crate::key::MAX_USES
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

pub(super) async fn credits_and_updates_do_not_lose_each_other<S: KeyStore>(store: Arc<S>) {
    let mut r = record("acme");
    r.remaining = Some(10);
    store.insert(&r).await.expect("insert must succeed");
    let stale = get(&*store, &r.id).await;
    for _ in 0..3 {
        store.consume_credit(&r.id, 1, None).await.expect("consume");
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
