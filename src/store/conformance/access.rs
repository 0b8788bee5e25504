//! Checks of access rules on records, credits spent by cost, and roles.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{get, record};
use crate::store::{Credit, KeyStore, RoleDefinition};

pub(super) async fn access_rules_are_updated_and_kept<S: KeyStore>(store: Arc<S>) {
    let r = record("acme");
    store.insert(&r).await.expect("insert must succeed");
    let stored = get(&*store, &r.id).await;
    assert_eq!(
        stored.allowed_ips, r.allowed_ips,
        "allowed_ips must round-trip"
    );
    assert_eq!(
        stored.not_before, r.not_before,
        "not_before must round-trip"
    );
    assert_eq!(stored.roles, r.roles, "roles must round-trip");
    assert_eq!(stored.limits, r.limits, "limits must round-trip");
    let mut changed = stored.clone();
    changed.allowed_ips = Some("192.0.2.0/24".parse().expect("allowlist"));
    changed.not_before = None;
    changed.roles = vec![];
    changed.limits = vec![];
    store.update(&changed).await.expect("update must succeed");
    let after = get(&*store, &r.id).await;
    assert_eq!(
        after.allowed_ips, changed.allowed_ips,
        "update must write allowed_ips"
    );
    assert_eq!(after.not_before, None, "update must write not_before");
    assert!(after.roles.is_empty(), "update must write roles");
    assert!(after.limits.is_empty(), "update must write limits");
}

pub(super) async fn credits_are_spent_by_cost<S: KeyStore>(store: Arc<S>) {
    let mut r = record("acme");
    r.remaining = Some(10);
    r.credits_spent = 0;
    store.insert(&r).await.expect("insert must succeed");
    let taken = store.consume_credit(&r.id, 4, None).await;
    assert_eq!(
        taken.expect("consume must succeed"),
        Credit::Consumed { remaining: 6 },
        "a cost of 4 takes 4 uses"
    );
    let over = store.consume_credit(&r.id, 7, None).await;
    assert_eq!(
        over.expect("consume must succeed"),
        Credit::Exhausted,
        "a cost above what is left takes nothing"
    );
    let free = store.consume_credit(&r.id, 0, None).await;
    assert_eq!(free.expect("consume"), Credit::Consumed { remaining: 6 });
    let after = get(&*store, &r.id).await;
    assert_eq!(
        after.remaining,
        Some(6),
        "an exhausted take changes nothing"
    );
    assert_eq!(
        after.credits_spent, 4,
        "credits_spent counts every use taken"
    );
    assert_eq!(
        after.version, r.version,
        "spending must not bump the version"
    );
    // Concurrent costs never overspend, and the spent count is exact.
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.consume_credit(&r.id, 2, None).await })
        })
        .collect();
    let mut ok = 0;
    for h in handles {
        if let Ok(Ok(Credit::Consumed { .. })) = h.await {
            ok += 1;
        }
    }
    assert_eq!(ok, 3, "6 uses left serve exactly three takes of 2");
    let after = get(&*store, &r.id).await;
    assert_eq!((after.remaining, after.credits_spent), (Some(0), 10));
    let free = store.consume_credit(&r.id, 0, None).await;
    assert_eq!(
        free.expect("consume must succeed"),
        Credit::Exhausted,
        "a key with no use left is refused even at cost 0"
    );
}

#[derive(Default)]
struct Resets(AtomicUsize);

impl crate::store::ChangeListener for Resets {
    fn changed(&self, _: &crate::token::KeyId) {}
    fn reset(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

pub(super) async fn roles_are_defined_and_announced<S: KeyStore>(store: Arc<S>) {
    assert!(store.roles().await.expect("roles must succeed").is_empty());
    let resets = Arc::new(Resets::default());
    let weak: std::sync::Weak<Resets> = Arc::downgrade(&resets);
    let reports = store.subscribe(weak);
    let support = RoleDefinition {
        name: "support".into(),
        permissions: vec!["contacts:read".into()],
    };
    store
        .put_role(&support)
        .await
        .expect("put_role must succeed");
    let wider = RoleDefinition {
        permissions: vec!["contacts:read".into(), "tickets:write".into()],
        ..support.clone()
    };
    store.put_role(&wider).await.expect("put_role must succeed");
    let admin = RoleDefinition {
        name: "admin".into(),
        permissions: vec![],
    };
    store.put_role(&admin).await.expect("put_role must succeed");
    let mut roles = store.roles().await.expect("roles must succeed");
    roles.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        roles,
        [admin, wider],
        "a redefined role replaces the old one"
    );
    if reports {
        for _ in 0..500 {
            if resets.0.load(Ordering::SeqCst) > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("a store that subscribes must announce a role change as a reset");
    }
}
