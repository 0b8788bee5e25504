//! The webhook outbox: deliveries written with their change or not at
//! all, claims that lease each delivery to one worker, settlements by the
//! holder only, replays of dead deliveries, endpoints kept per tenant.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Duration;

use super::{record, t0};
use crate::error::StoreError;
use crate::store::{Delivery, DeliveryState, KeyStore, Outbox, Settlement, StoredEndpoint};
use crate::webhook::EventType;

fn delivery(n: usize, endpoint: &str) -> Delivery {
    Delivery::new(
        format!("dlv_{n:024}"),
        format!("msg_{n:024}"),
        endpoint.to_string(),
        "acme".into(),
        "key.revoked".into(),
        format!(r#"{{"type":"key.revoked","n":{n}}}"#),
        t0(),
    )
}

fn endpoint(id: &str, tenant: &str) -> StoredEndpoint {
    StoredEndpoint::new(
        id.to_string(),
        tenant.to_string(),
        "https://hooks.example.com/in".into(),
        "user_1".into(),
        t0(),
    )
    .expect("OS randomness")
    .with_event_types(vec![EventType::Revoked, EventType::Leaked])
    .with_description("ops".into())
}

fn outbox_of<S: KeyStore>(store: &S) -> Option<&dyn Outbox> {
    let outbox = store.outbox();
    if outbox.is_none() {
        eprintln!("conformance: the store keeps no webhook outbox; its checks are skipped");
    }
    outbox
}

/// Every pending delivery due by `at`, claimed by a throwaway owner.
async fn all_due(outbox: &dyn Outbox, at: chrono::DateTime<chrono::Utc>) -> Vec<Delivery> {
    let lease = at + Duration::seconds(60);
    outbox
        .claim("conformance-reader", at, lease, 1000, 1000)
        .await
        .expect("claim must succeed")
}

pub(super) async fn deliveries_land_with_their_change_or_not_at_all<S: KeyStore>(store: Arc<S>) {
    let Some(outbox) = outbox_of(&*store) else {
        return;
    };
    let r = record("acme");
    store
        .insert_with(&r, &[delivery(1, "ep_a")])
        .await
        .expect("insert_with must succeed");
    // A duplicate insert writes neither the key nor its deliveries.
    let dup = store.insert_with(&r, &[delivery(2, "ep_a")]).await;
    assert!(
        matches!(dup, Err(StoreError::Duplicate(_))),
        "a duplicate insert_with is Duplicate"
    );
    let mut stale = store.get(&r.id).await.expect("get").expect("stored");
    stale.name = "changed".into();
    let v = store
        .update_with(&stale, &[delivery(3, "ep_a")])
        .await
        .expect("update_with must succeed");
    // An update that loses the race writes no deliveries.
    let lost = store.update_with(&stale, &[delivery(4, "ep_a")]).await;
    assert!(
        matches!(lost, Err(StoreError::Conflict(_))),
        "a stale update_with is Conflict"
    );
    assert_eq!(v, stale.version + 1);
    // Deleting a missing key writes no deliveries.
    let gone = record("acme");
    let deleted = store.delete_with(&gone.id, &[delivery(5, "ep_a")]).await;
    assert!(
        !deleted.expect("delete_with must succeed"),
        "nothing to delete"
    );
    assert!(store
        .delete_with(&r.id, &[delivery(6, "ep_a"), delivery(7, "ep_b")])
        .await
        .expect("delete_with must succeed"));
    let mut found: Vec<String> = all_due(outbox, t0())
        .await
        .into_iter()
        .map(|d| d.message_id)
        .collect();
    found.sort();
    let want: Vec<String> = [1, 3, 6, 7]
        .iter()
        .map(|n| format!("msg_{n:024}"))
        .collect();
    assert_eq!(
        found, want,
        "exactly the deliveries of changes that happened are kept"
    );
    assert!(store.get(&r.id).await.expect("get").is_none());
}

pub(super) async fn claims_lease_settle_and_replay<S: KeyStore>(store: Arc<S>) {
    let Some(outbox) = outbox_of(&*store) else {
        return;
    };
    outbox
        .put_endpoint(&endpoint("ep_a", "acme"))
        .await
        .expect("put_endpoint");
    let batch: Vec<Delivery> = (0..5).map(|n| delivery(n, "ep_a")).collect();
    outbox.enqueue(&batch).await.expect("enqueue");
    // Enqueueing the same delivery again keeps one.
    outbox.enqueue(&batch[..1]).await.expect("enqueue");
    let now = t0();
    let lease = now + Duration::seconds(30);
    let a = outbox.claim("a", now, lease, 3, 100).await.expect("claim");
    assert_eq!(a.len(), 3, "a claim takes up to its limit");
    assert!(a
        .iter()
        .all(|d| d.attempts == 1 && d.state == DeliveryState::Pending));
    let b = outbox.claim("b", now, lease, 10, 100).await.expect("claim");
    assert_eq!(
        b.len(),
        2,
        "a second claim takes only what the first did not"
    );
    assert!(outbox
        .claim("c", now, lease, 10, 100)
        .await
        .expect("claim")
        .is_empty());
    assert!(
        !outbox
            .settle(&a[0].id, "b", &Settlement::Delivered)
            .await
            .expect("settle"),
        "only the holder of a lease settles it"
    );
    assert!(outbox
        .settle(&a[0].id, "a", &Settlement::Delivered)
        .await
        .expect("settle"));
    let later = now + Duration::seconds(10);
    let retry = Settlement::Retry {
        at: later,
        error: "the endpoint answered 503".into(),
    };
    assert!(outbox.settle(&a[1].id, "a", &retry).await.expect("settle"));
    let dead = Settlement::Dead {
        at: now,
        error: "gave up".into(),
    };
    assert!(outbox.settle(&a[2].id, "a", &dead).await.expect("settle"));
    // A release gives a delivery back untouched, its attempt uncounted.
    let mine = outbox
        .claim("e", later + Duration::seconds(1), lease, 1, 100)
        .await
        .expect("claim");
    assert_eq!((mine.len(), mine[0].attempts), (1, 2));
    assert!(outbox
        .settle(&mine[0].id, "e", &Settlement::Release)
        .await
        .expect("settle"));
    // Before its time a retry is not due; b's leases still hold.
    assert!(outbox
        .claim("c", now + Duration::seconds(5), lease, 10, 100)
        .await
        .expect("claim")
        .is_empty());
    let again = outbox
        .claim("c", later, lease, 10, 100)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id.as_str(), again[0].attempts),
        (a[1].id.as_str(), 2)
    );
    assert_eq!(
        again[0].last_error.as_deref(),
        Some("the endpoint answered 503")
    );
    // After its lease ends, what b holds may be claimed by another.
    let expired = outbox.claim(
        "d",
        lease + Duration::seconds(1),
        lease + Duration::seconds(60),
        10,
        100,
    );
    let expired: HashSet<String> = expired
        .await
        .expect("claim")
        .into_iter()
        .map(|d| d.id)
        .collect();
    let held_by_b: HashSet<String> = b.iter().map(|d| d.id.clone()).collect();
    assert!(
        held_by_b.is_subset(&expired),
        "expired leases are claimed again"
    );
    assert!(
        !outbox
            .settle(&b[0].id, "b", &Settlement::Delivered)
            .await
            .expect("settle"),
        "a lost lease settles nothing"
    );
    let counts = outbox.counts(Some("ep_a")).await.expect("counts");
    assert_eq!((counts.pending, counts.dead), (3, 1));
    assert_eq!(
        outbox
            .counts(Some("ep_other"))
            .await
            .expect("counts")
            .pending,
        0
    );
    // Replays are per tenant: another tenant's replay touches nothing.
    assert_eq!(
        outbox.replay("globex", None, later).await.expect("replay"),
        0
    );
    assert_eq!(
        outbox
            .replay("acme", Some("ep_a"), later)
            .await
            .expect("replay"),
        1
    );
    let counts = outbox.counts(None).await.expect("counts");
    assert_eq!((counts.pending, counts.dead), (4, 0));
    let replayed = all_due(outbox, lease + Duration::seconds(120)).await;
    let r = replayed
        .iter()
        .find(|d| d.id == a[2].id)
        .expect("the dead delivery is due again");
    assert_eq!(r.attempts, 1, "a replay starts its attempts again");
    assert_eq!(r.retrying_since, later, "and its retry window");
    assert_eq!(r.created_at, t0(), "not its event's time");
}

pub(super) async fn concurrent_claims_never_share_a_delivery<S: KeyStore>(store: Arc<S>) {
    if outbox_of(&*store).is_none() {
        return;
    }
    let batch: Vec<Delivery> = (0..60).map(|n| delivery(n, "ep_a")).collect();
    store
        .outbox()
        .expect("outbox")
        .enqueue(&batch)
        .await
        .expect("enqueue");
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let outbox = store.outbox().expect("outbox");
            let owner = format!("w{worker}");
            let mut mine = Vec::new();
            loop {
                let lease = t0() + Duration::seconds(60);
                let got = outbox
                    .claim(&owner, t0(), lease, 4, 100)
                    .await
                    .expect("claim");
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|d| d.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for id in task.await.expect("claimer") {
            assert!(seen.insert(id), "two concurrent claims took one delivery");
        }
    }
    assert_eq!(seen.len(), 60, "every delivery is claimed");
}

pub(super) async fn endpoints_are_kept_per_tenant<S: KeyStore>(store: Arc<S>) {
    let Some(outbox) = outbox_of(&*store) else {
        return;
    };
    let e = endpoint("ep_one", "acme");
    outbox.put_endpoint(&e).await.expect("put_endpoint");
    outbox
        .put_endpoint(&endpoint("ep_two", "acme"))
        .await
        .expect("put_endpoint");
    outbox
        .put_endpoint(&endpoint("ep_three", "globex"))
        .await
        .expect("put_endpoint");
    assert!(
        outbox.put_endpoint(&e).await.is_err(),
        "an endpoint id is taken once"
    );
    let acme = outbox.endpoints("acme").await.expect("endpoints");
    assert_eq!(
        acme.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["ep_one", "ep_two"]
    );
    assert_eq!(
        acme[0], e,
        "an endpoint round-trips, secret and event types included"
    );
    assert_eq!(
        outbox
            .endpoint("ep_three")
            .await
            .expect("endpoint")
            .map(|e| e.tenant),
        Some("globex".into())
    );
    assert!(outbox
        .endpoint("ep_none")
        .await
        .expect("endpoint")
        .is_none());
    outbox
        .enqueue(&[delivery(1, "ep_one"), delivery(2, "ep_two")])
        .await
        .expect("enqueue");
    assert!(
        !outbox
            .delete_endpoint("globex", "ep_one")
            .await
            .expect("delete"),
        "not another tenant's"
    );
    assert!(outbox
        .delete_endpoint("acme", "ep_one")
        .await
        .expect("delete"));
    assert!(!outbox
        .delete_endpoint("acme", "ep_one")
        .await
        .expect("delete"));
    let left: Vec<String> = all_due(outbox, t0())
        .await
        .into_iter()
        .map(|d| d.endpoint_id)
        .collect();
    assert_eq!(left, ["ep_two"], "an endpoint's deliveries go with it");
}

pub(super) async fn dead_deliveries_are_purged_after_a_while<S: KeyStore>(store: Arc<S>) {
    let Some(outbox) = outbox_of(&*store) else {
        return;
    };
    let batch: Vec<Delivery> = (0..3).map(|n| delivery(n, "ep_a")).collect();
    outbox.enqueue(&batch).await.expect("enqueue");
    let lease = t0() + Duration::seconds(60);
    let held = outbox.claim("a", t0(), lease, 3, 100).await.expect("claim");
    assert_eq!(held.len(), 3);
    let ends = [
        Settlement::Dead {
            at: t0(),
            error: "gone".into(),
        },
        Settlement::Dead {
            at: t0() + Duration::days(10),
            error: "gone".into(),
        },
        Settlement::Retry {
            at: t0(),
            error: "503".into(),
        },
    ];
    for (d, end) in held.iter().zip(&ends) {
        assert!(outbox.settle(&d.id, "a", end).await.expect("settle"));
    }
    let purged = outbox
        .purge_dead(t0() + Duration::days(1))
        .await
        .expect("purge");
    assert_eq!(purged, 1, "only what went dead before the bound");
    let counts = outbox.counts(None).await.expect("counts");
    assert_eq!((counts.pending, counts.dead), (1, 1));
}

pub(super) async fn one_endpoints_backlog_never_fills_a_claim<S: KeyStore>(store: Arc<S>) {
    let Some(outbox) = outbox_of(&*store) else {
        return;
    };
    // Ten old deliveries for a slow endpoint, then two newer of another.
    let mut batch: Vec<Delivery> = (0..10).map(|n| delivery(n, "ep_slow")).collect();
    for n in 10..12 {
        let mut d = delivery(n, "ep_fast");
        d.created_at = t0() + Duration::seconds(1);
        d.next_attempt_at = d.created_at;
        batch.push(d);
    }
    outbox.enqueue(&batch).await.expect("enqueue");
    let at = t0() + Duration::seconds(5);
    let lease = at + Duration::seconds(60);
    let got = outbox.claim("a", at, lease, 6, 2).await.expect("claim");
    let per = |e: &str| got.iter().filter(|d| d.endpoint_id == e).count();
    assert_eq!(got.len(), 4, "two of each endpoint: {got:?}");
    assert_eq!((per("ep_slow"), per("ep_fast")), (2, 2));
    let slow: Vec<&str> = got
        .iter()
        .filter(|d| d.endpoint_id == "ep_slow")
        .map(|d| d.message_id.as_str())
        .collect();
    assert!(
        slow.contains(&format!("msg_{:024}", 0).as_str())
            && slow.contains(&format!("msg_{:024}", 1).as_str()),
        "the oldest of an endpoint first: {slow:?}"
    );
    let next = outbox.claim("b", at, lease, 100, 3).await.expect("claim");
    assert_eq!(next.len(), 3, "what the first claim left, three of it");
    assert!(next.iter().all(|d| d.endpoint_id == "ep_slow"));
}
