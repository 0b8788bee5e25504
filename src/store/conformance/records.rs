//! Checks of the records themselves: insert, conditional update, delete,
//! last use, paging.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Duration;

use super::{get, record, t0};
use crate::error::StoreError;
use crate::limit::RateLimit;
use crate::policy::{Refill, WarningMark};
use crate::store::KeyStore;
use crate::token::{KeyHash, KeyId};

pub(super) async fn insert_then_get_round_trips<S: KeyStore>(store: Arc<S>) {
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

pub(super) async fn duplicate_insert_is_refused<S: KeyStore>(store: Arc<S>) {
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

pub(super) async fn inserts_in_bulk_skip_taken_ids<S: KeyStore>(store: Arc<S>) {
    let held = record("acme");
    store.insert(&held).await.expect("insert must succeed");
    // More than one SQL batch, with the taken id in the middle.
    let mut batch: Vec<crate::key::KeyRecord> = (0..1203).map(|_| record("acme")).collect();
    let mut intruder = record("globex");
    intruder.id = held.id;
    intruder.hash = crate::token::KeyHash::from_bytes([7; 32]);
    batch.insert(600, intruder);
    batch[1].version = 9;
    let placed = store
        .insert_many(&batch)
        .await
        .expect("insert_many must succeed");
    assert_eq!(placed.len(), batch.len(), "one answer per record");
    for (i, (r, p)) in batch.iter().zip(&placed).enumerate() {
        if i == 600 {
            assert_eq!(p.as_ref(), Some(&held), "a taken id answers the holder");
        } else {
            assert_eq!(*p, None, "a free id is stored");
            let mut expected = r.clone();
            expected.version = 0;
            assert_eq!(
                get(&*store, &r.id).await,
                expected,
                "stored as given, at version 0"
            );
        }
    }
    assert_eq!(
        get(&*store, &held.id).await,
        held,
        "the holder is left as it was"
    );
    let again = store
        .insert_many(&batch[..3])
        .await
        .expect("insert_many must succeed");
    let stored: Vec<_> = batch[..3]
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.version = 0;
            Some(r)
        })
        .collect();
    assert_eq!(
        again, stored,
        "a second insert of the same records stores nothing"
    );
    assert!(
        store
            .insert_many(&[])
            .await
            .expect("an empty batch")
            .is_empty(),
        "an empty batch answers nothing"
    );
}

pub(super) async fn concurrent_inserts_of_one_id_admit_one<S: KeyStore>(store: Arc<S>) {
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

pub(super) async fn update_is_conditional_on_version<S: KeyStore>(store: Arc<S>) {
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

pub(super) async fn update_leaves_last_used_and_immutable_fields<S: KeyStore>(store: Arc<S>) {
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

pub(super) async fn last_used_only_moves_forward<S: KeyStore>(store: Arc<S>) {
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

pub(super) async fn concurrent_updates_admit_one_per_version<S: KeyStore>(store: Arc<S>) {
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

pub(super) async fn last_used_and_updates_do_not_lose_each_other<S: KeyStore>(store: Arc<S>) {
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

pub(super) async fn delete_is_final<S: KeyStore>(store: Arc<S>) {
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

pub(super) async fn tenants_are_isolated_and_paged<S: KeyStore>(store: Arc<S>) {
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

pub(super) async fn scan_visits_every_key_once_in_order<S: KeyStore>(store: Arc<S>) {
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
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .scan_ids(after.as_ref(), 100)
            .await
            .expect("scan_ids must succeed");
        assert!(page.len() <= 100, "a page must hold at most `limit` ids");
        ids.extend(page.iter().copied());
        if page.len() < 100 {
            break;
        }
        after = page.last().copied();
    }
    assert_eq!(
        ids, expected,
        "scan_ids must visit every id once, in id order"
    );
}
