//! `Keyward::bootstrap`: a tenant's first key, once, audited, and not
//! blocked by a key of another tenant that collides with its id.

mod common;

use common::{catalog, harness};
use keyward::store::KeyStore;
use keyward::{Actor, AuditAction, AuditOutcome, KeyError, Keyward, MemoryStore, NewKey};

fn setup(keys: &Keyward, tenant: &str) -> Actor {
    Actor::new("setup", tenant)
        .permissions(keys.catalog().all())
        .may_manage_keys(true)
}

fn admin_key(keys: &Keyward) -> NewKey {
    NewKey::new("admin").permission_set(keys.catalog().all())
}

#[tokio::test]
async fn a_tenant_is_bootstrapped_once_and_again_only_when_emptied() {
    let h = harness();
    let keys = &h.keys;
    let first = keys
        .bootstrap(&setup(keys, "default"), admin_key(keys))
        .await
        .expect("bootstrap")
        .expect("created");
    let again = keys
        .bootstrap(&setup(keys, "default"), admin_key(keys))
        .await
        .expect("bootstrap");
    assert!(again.is_none());
    keys.revoke(&setup(keys, "default"), &first.key.id)
        .await
        .expect("revoke");
    assert!(
        keys.bootstrap(&setup(keys, "default"), admin_key(keys))
            .await
            .expect("bootstrap")
            .is_none(),
        "a revoked key counts"
    );
    keys.delete(&setup(keys, "default"), &first.key.id)
        .await
        .expect("delete");
    assert!(
        keys.bootstrap(&setup(keys, "default"), admin_key(keys))
            .await
            .expect("bootstrap")
            .is_some(),
        "an emptied tenant starts again"
    );
    let created: Vec<_> = h
        .audit
        .events()
        .into_iter()
        .filter(|e| e.action == AuditAction::Create)
        .collect();
    assert_eq!(created.len(), 2, "each creation audited once, nothing else");
}

#[tokio::test]
async fn a_refused_bootstrap_is_audited() {
    let h = harness();
    let keys = &h.keys;
    let outsider = setup(keys, "acme");
    let err = keys
        .bootstrap(&outsider, admin_key(keys).tenant("globex"))
        .await
        .expect_err("not acme's tenant");
    assert!(matches!(err, KeyError::Forbidden { .. }), "{err:?}");
    let events = h.audit.events();
    let last = events.last().expect("an event");
    assert_eq!(last.action, AuditAction::Create);
    assert_eq!(last.outcome, AuditOutcome::Denied("forbidden"));
}

#[tokio::test]
async fn a_key_of_another_tenant_on_the_derived_id_does_not_block_it() {
    // The id tenant `a`'s bootstrap key gets, learnt from another store.
    let their_store = MemoryStore::new();
    let elsewhere = Keyward::builder(their_store.clone(), catalog())
        .build()
        .expect("config");
    let theirs = elsewhere
        .bootstrap(&setup(&elsewhere, "a"), admin_key(&elsewhere))
        .await
        .expect("bootstrap")
        .expect("created");
    // Here, a key of tenant `b` holds that id (a tenant name chosen to
    // collide).
    let store = MemoryStore::new();
    let mut squatter = their_store
        .get(&theirs.key.id)
        .await
        .expect("read")
        .expect("there");
    squatter.tenant = "b".into();
    store.insert(&squatter).await.expect("insert");
    let keys = Keyward::builder(store, catalog()).build().expect("config");
    let ours = keys
        .bootstrap(&setup(&keys, "a"), admin_key(&keys))
        .await
        .expect("bootstrap")
        .expect("created, on the next derived id");
    assert_ne!(ours.key.id, theirs.key.id);
    assert_eq!(ours.key.tenant, "a");
    assert!(keys
        .bootstrap(&setup(&keys, "a"), admin_key(&keys))
        .await
        .expect("bootstrap")
        .is_none());
}
