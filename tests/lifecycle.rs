//! Key lifecycle through the public API: create, verify, revoke,
//! reactivate, rename, re-permission, delete, list, and every error.

mod common;

use chrono::Duration;
use common::{admin, harness, CountingStore, DownStore};
use keyward::{
    Actor, AuditAction, AuditOutcome, Forbidden, KeyError, KeyStatus, Keyward, NewKey, VerifyError,
};

#[tokio::test]
async fn quickstart_flow() {
    let h = harness();
    let admin = Actor::new("user_42", "acme")
        .permissions(
            h.keys
                .catalog()
                .parse_set(["contacts:write", "users:read"])
                .expect("known"),
        )
        .may_manage_keys(true);
    let issued = h
        .keys
        .create(
            &admin,
            NewKey::new("Zapier sync")
                .permissions(["contacts:write"])
                .expires_in(Duration::days(30)),
        )
        .await
        .expect("created");
    assert_eq!(issued.key.status, KeyStatus::Active);
    assert_eq!(issued.key.created_by, "user_42");
    assert_eq!(
        issued.key.expires_at,
        Some(h.clock.now_for_test() + Duration::days(30))
    );
    let auth = h
        .keys
        .verify(issued.token.expose_secret())
        .await
        .expect("verifies");
    assert_eq!(auth.name(), "Zapier sync");
    assert_eq!(auth.tenant(), "acme");
    assert_eq!(auth.display_prefix(), issued.key.prefix);
    auth.require("contacts:read").expect("write implies read");
    auth.require("read:contacts").expect("action:resource form");
    assert_eq!(
        auth.require("users:read"),
        Err(Forbidden::Missing("users:read".into()))
    );
    assert_eq!(
        auth.require("nope:read"),
        Err(Forbidden::Unknown("nope:read".into()))
    );
    let fast = h.keys.catalog().parse("contacts:write").expect("known");
    assert!(auth.allows(fast));

    h.keys
        .revoke(&admin, &issued.key.id)
        .await
        .expect("revoked");
    assert!(matches!(
        h.keys.verify(issued.token.expose_secret()).await,
        Err(VerifyError::Revoked)
    ));
    let listed = h.keys.list(&admin, "acme").await.expect("listed");
    assert_eq!(listed.len(), 1, "a revoked key stays listed");
    assert_eq!(listed[0].status, KeyStatus::Revoked);

    h.keys
        .reactivate(&admin, &issued.key.id)
        .await
        .expect("reactivated");
    h.keys
        .verify(issued.token.expose_secret())
        .await
        .expect("verifies again");

    h.keys
        .delete(&admin, &issued.key.id)
        .await
        .expect("deleted");
    assert!(matches!(
        h.keys.verify(issued.token.expose_secret()).await,
        Err(VerifyError::Invalid)
    ));
    assert!(h
        .keys
        .list(&admin, "acme")
        .await
        .expect("listed")
        .is_empty());
    assert!(matches!(
        h.keys.get(&admin, &issued.key.id).await,
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        h.keys.delete(&admin, &issued.key.id).await,
        Err(KeyError::NotFound(_))
    ));
}

trait NowForTest {
    fn now_for_test(&self) -> chrono::DateTime<chrono::Utc>;
}
impl NowForTest for keyward::ManualClock {
    fn now_for_test(&self) -> chrono::DateTime<chrono::Utc> {
        keyward::Clock::now(self)
    }
}

#[tokio::test]
async fn expiry_is_enforced_and_reported_only_to_the_secret_holder() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let temp = h
        .keys
        .create(
            &a,
            NewKey::new("Docs playground (temp)")
                .permissions(["leads:*"])
                .expires_in(Duration::hours(1)),
        )
        .await
        .expect("created");
    h.clock.advance(Duration::minutes(59));
    h.keys
        .verify(temp.token.expose_secret())
        .await
        .expect("valid before expiry");
    h.clock.advance(Duration::minutes(1));
    let err = h
        .keys
        .verify(temp.token.expose_secret())
        .await
        .expect_err("expired");
    assert!(matches!(err, VerifyError::Expired));
    assert_eq!(err.to_string(), "API key has expired");
    assert_eq!(
        h.keys.get(&a, &temp.key.id).await.expect("get").status,
        KeyStatus::Expired
    );

    // Same id, wrong secret: Invalid, not Expired.
    let s = temp.token.expose_secret();
    let forged = forge_same_id(&h.keys, s);
    assert!(matches!(
        h.keys.verify(&forged).await,
        Err(VerifyError::Invalid)
    ));
}

/// A well-formed token (valid checksum) with the same id but another secret.
fn forge_same_id(keys: &Keyward, token: &str) -> String {
    let forged = common::forge::same_id_other_secret(token);
    assert_ne!(forged, token);
    assert!(
        keys.token_format().parse(&forged).is_ok(),
        "forged token must be well-formed"
    );
    forged
}

#[tokio::test]
async fn unknown_id_and_wrong_secret_are_the_same_answer() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let k = h.keys.create(&a, NewKey::new("k")).await.expect("created");
    let wrong_secret = forge_same_id(&h.keys, k.token.expose_secret());
    let other = h
        .keys
        .create(&a, NewKey::new("other"))
        .await
        .expect("created");
    let other_token = other.token.expose_secret().to_string();
    h.keys.delete(&a, &other.key.id).await.expect("deleted");
    let e1 = h
        .keys
        .verify(&wrong_secret)
        .await
        .expect_err("wrong secret");
    let e2 = h.keys.verify(&other_token).await.expect_err("unknown id");
    assert_eq!(e1.to_string(), e2.to_string());
    assert!(matches!(
        (e1, e2),
        (VerifyError::Invalid, VerifyError::Invalid)
    ));

    // A revoked key with a wrong secret is Invalid too: status needs the secret.
    h.keys.revoke(&a, &k.key.id).await.expect("revoked");
    assert!(matches!(
        h.keys.verify(&wrong_secret).await,
        Err(VerifyError::Invalid)
    ));
}

#[tokio::test]
async fn tenant_checks() {
    let h = harness();
    let acme = admin(&h.keys, "acme");
    let globex = admin(&h.keys, "globex");
    let k = h
        .keys
        .create(&acme, NewKey::new("k"))
        .await
        .expect("created");
    let t = k.token.expose_secret();
    h.keys
        .verify_for_tenant(t, "acme")
        .await
        .expect("own tenant");
    assert!(matches!(
        h.keys.verify_for_tenant(t, "globex").await,
        Err(VerifyError::WrongTenant)
    ));
    // Another tenant's admin cannot see or touch the key: NotFound, no leak.
    assert!(matches!(
        h.keys.get(&globex, &k.key.id).await,
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        h.keys.revoke(&globex, &k.key.id).await,
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        h.keys.delete(&globex, &k.key.id).await,
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        h.keys.list(&globex, "acme").await,
        Err(KeyError::Forbidden { .. })
    ));
    assert!(h
        .keys
        .list(&globex, "globex")
        .await
        .expect("own list")
        .is_empty());
    h.keys.verify(t).await.expect("untouched");
}

#[tokio::test]
async fn only_managers_manage() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let k = h.keys.create(&a, NewKey::new("k")).await.expect("created");
    let member = Actor::new("user_7", "acme").permissions(h.keys.catalog().all());
    assert!(matches!(
        h.keys.create(&member, NewKey::new("x")).await,
        Err(KeyError::Forbidden { .. })
    ));
    assert!(matches!(
        h.keys.revoke(&member, &k.key.id).await,
        Err(KeyError::Forbidden { .. })
    ));
    assert!(matches!(
        h.keys.rename(&member, &k.key.id, "y").await,
        Err(KeyError::Forbidden { .. })
    ));
    assert!(matches!(
        h.keys
            .set_permissions(&member, &k.key.id, ["contacts:read"])
            .await,
        Err(KeyError::Forbidden { .. })
    ));
    assert!(matches!(
        h.keys.list(&member, "acme").await,
        Err(KeyError::Forbidden { .. })
    ));
    assert!(matches!(
        h.keys.get(&member, &k.key.id).await,
        Err(KeyError::Forbidden { .. })
    ));
    let e = h
        .keys
        .delete(&member, &k.key.id)
        .await
        .expect_err("forbidden");
    assert_eq!(e.to_string(), "actor `user_7` may not manage API keys here");
}

#[tokio::test]
async fn names_are_validated() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    for bad in [
        "",
        "   ",
        &"x".repeat(101),
        "line\nbreak",
        "evil\u{202E}gpj.exe",
        "zero\u{200B}width",
    ] {
        assert!(
            matches!(
                h.keys.create(&a, NewKey::new(bad)).await,
                Err(KeyError::InvalidName(_))
            ),
            "{bad:?} accepted"
        );
    }
    let k = h
        .keys
        .create(&a, NewKey::new(format!("  {}  ", "é".repeat(100))))
        .await
        .expect("100 chars");
    assert_eq!(k.key.name.chars().count(), 100);
    let renamed = h
        .keys
        .rename(&a, &k.key.id, " Clay ")
        .await
        .expect("renamed");
    assert_eq!(renamed.name, "Clay");
    assert!(matches!(
        h.keys.rename(&a, &k.key.id, "").await,
        Err(KeyError::InvalidName(_))
    ));
    let v = h
        .keys
        .verify(k.token.expose_secret())
        .await
        .expect("verifies");
    assert_eq!(v.name(), "Clay");
}

#[tokio::test]
async fn keys_never_exceed_their_creator() {
    let h = harness();
    let creator = Actor::new("user_9", "acme")
        .permissions(
            h.keys
                .catalog()
                .parse_set(["contacts:read", "leads:create"])
                .expect("known"),
        )
        .may_manage_keys(true);
    let err = h
        .keys
        .create(
            &creator,
            NewKey::new("k").permissions(["contacts:write", "users:read", "leads:read"]),
        )
        .await
        .expect_err("escalation");
    match &err {
        KeyError::PermissionEscalation { missing } => {
            assert_eq!(missing, &["contacts:write", "users:read"]);
        }
        other => panic!("expected escalation, got {other:?}"),
    }
    assert!(
        err.to_string().contains("contacts:write, users:read"),
        "{err}"
    );
    let unknown = h
        .keys
        .create(&creator, NewKey::new("k").permissions(["users:write"]))
        .await;
    assert!(matches!(unknown, Err(KeyError::Permission(_))));

    let k = h
        .keys
        .create(&creator, NewKey::new("k").permissions(["read:contacts"]))
        .await
        .expect("subset is fine");
    assert!(matches!(
        h.keys
            .set_permissions(&creator, &k.key.id, ["contacts:write"])
            .await,
        Err(KeyError::PermissionEscalation { .. })
    ));
    let changed = h
        .keys
        .set_permissions(&creator, &k.key.id, ["leads:create"])
        .await
        .expect("within the creator's");
    assert_eq!(changed.permissions.to_string(), "leads:read leads:create");
    let v = h
        .keys
        .verify(k.token.expose_secret())
        .await
        .expect("verifies");
    assert_eq!(
        v.require("contacts:read"),
        Err(Forbidden::Missing("contacts:read".into()))
    );
    v.require("leads:read").expect("create implies read");

    // A set from another catalog is refused, not silently reinterpreted.
    let foreign = common::catalog().all();
    let outsider = Actor::new("x", "acme")
        .permissions(foreign)
        .may_manage_keys(true);
    // Structurally equal catalogs are the same catalog.
    h.keys
        .create(&outsider, NewKey::new("ok"))
        .await
        .expect("equal catalogs match");
    let other = keyward::Catalog::builder()
        .resource("a", ["read"])
        .build()
        .expect("valid");
    let stranger = Actor::new("x", "acme")
        .permissions(other.all())
        .may_manage_keys(true);
    assert!(matches!(
        h.keys.create(&stranger, NewKey::new("no")).await,
        Err(KeyError::CatalogMismatch)
    ));
}

#[tokio::test]
async fn expiry_and_metadata_are_validated() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let past = keyward::Clock::now(&h.clock) - Duration::seconds(1);
    for new in [
        NewKey::new("k").expires_at(past),
        NewKey::new("k").expires_in(Duration::zero()),
        NewKey::new("k").expires_in(Duration::seconds(-5)),
        NewKey::new("k").expires_in(Duration::MAX),
    ] {
        assert!(matches!(
            h.keys.create(&a, new).await,
            Err(KeyError::InvalidExpiry)
        ));
    }
    let big = serde_json::json!({ "blob": "x".repeat(17 * 1024) });
    assert!(matches!(
        h.keys.create(&a, NewKey::new("k").metadata(big)).await,
        Err(KeyError::InvalidMetadata(_))
    ));
    let meta = serde_json::json!({"integration": "clay"});
    let k = h
        .keys
        .create(&a, NewKey::new("k").metadata(meta.clone()))
        .await
        .expect("created");
    assert_eq!(
        h.keys.get(&a, &k.key.id).await.expect("get").metadata,
        Some(meta)
    );
}

#[tokio::test]
async fn store_outage_is_an_error_never_an_accept() {
    let keys = Keyward::builder(DownStore, common::catalog())
        .build()
        .expect("valid");
    let a = admin(&keys, "acme");
    assert!(matches!(
        keys.create(&a, NewKey::new("k")).await,
        Err(KeyError::Store(_))
    ));
    // A well-formed token from another instance.
    let other = Keyward::builder(keyward::MemoryStore::new(), common::catalog())
        .build()
        .expect("valid");
    let k = other
        .create(&admin(&other, "acme"), NewKey::new("k"))
        .await
        .expect("created");
    let err = keys
        .verify(k.token.expose_secret())
        .await
        .expect_err("store down");
    assert!(matches!(err, VerifyError::Store(_)));
    assert_eq!(err.code(), "store_unavailable");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the store error is kept as the source"
    );
}

#[tokio::test]
async fn last_used_is_recorded_with_coalesced_writes() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let k = h.keys.create(&a, NewKey::new("k")).await.expect("created");
    let writes = || {
        h.store
            .last_used_writes
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let t = k.token.expose_secret();
    let first = keyward::Clock::now(&h.clock);
    h.keys.verify(t).await.expect("verifies");
    common::settle().await;
    assert_eq!(
        writes(),
        1,
        "the first use is written at once, in the background"
    );
    for _ in 0..100 {
        h.clock.advance(Duration::milliseconds(500));
        h.keys.verify(t).await.expect("verifies");
    }
    common::settle().await;
    assert_eq!(writes(), 1, "uses within the interval are not written");
    let shown = h
        .keys
        .get(&a, &k.key.id)
        .await
        .expect("get")
        .last_used_at
        .expect("used");
    assert_eq!(
        shown, first,
        "last used is precise to the interval (one minute)"
    );
    h.clock.advance(Duration::seconds(11));
    h.keys.verify(t).await.expect("verifies");
    common::settle().await;
    assert_eq!(writes(), 2, "one write per interval");
    let stored = h.store.inner.clone();
    let rec = keyward::store::KeyStore::get(&stored, &k.key.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(rec.last_used_at, Some(keyward::Clock::now(&h.clock)));

    // A use noted between background flushes waits in memory: shown by this
    // instance at once, written by the next flush (e.g. at shutdown).
    let other = h
        .keys
        .create(&a, NewKey::new("other"))
        .await
        .expect("created");
    h.clock.advance(Duration::seconds(1));
    h.keys
        .verify(other.token.expose_secret())
        .await
        .expect("verifies");
    common::settle().await;
    assert_eq!(writes(), 2, "not due yet");
    let rec = keyward::store::KeyStore::get(&stored, &other.key.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(rec.last_used_at, None);
    let now = keyward::Clock::now(&h.clock);
    assert_eq!(
        h.keys
            .get(&a, &other.key.id)
            .await
            .expect("get")
            .last_used_at,
        Some(now)
    );
    assert_eq!(h.keys.flush_last_used().await.expect("flushed"), 1);
    let rec = keyward::store::KeyStore::get(&stored, &other.key.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(rec.last_used_at, Some(now));
}

#[tokio::test]
async fn management_and_failures_are_audited_by_prefix() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let k = h.keys.create(&a, NewKey::new("k")).await.expect("created");
    h.keys.rename(&a, &k.key.id, "k2").await.expect("renamed");
    h.keys.revoke(&a, &k.key.id).await.expect("revoked");
    let _ = h.keys.verify(k.token.expose_secret()).await;
    let _ = h.keys.verify("garbage").await;
    let member = Actor::new("m", "acme");
    let _ = h.keys.create(&member, NewKey::new("x")).await;
    let events = h.audit.take();
    let summary: Vec<_> = events.iter().map(|e| (e.action, e.outcome)).collect();
    assert_eq!(
        summary,
        vec![
            (AuditAction::Create, AuditOutcome::Success),
            (AuditAction::Rename, AuditOutcome::Success),
            (AuditAction::Revoke, AuditOutcome::Success),
            (AuditAction::Verify, AuditOutcome::Denied("api_key_revoked")),
            (AuditAction::Verify, AuditOutcome::Denied("malformed")),
            (AuditAction::Create, AuditOutcome::Denied("forbidden")),
        ]
    );
    assert_eq!(events[0].key_prefix, Some(k.key.prefix));
    assert_eq!(events[0].actor.as_deref(), Some("admin_1"));
    assert_eq!(events[3].key_prefix, Some(k.key.prefix));
    assert_eq!(
        events[4].key_prefix, None,
        "nothing of a malformed token is recorded"
    );
    let secret = &k.token.expose_secret()[12..];
    for e in &events {
        let json = serde_json::to_string(e).expect("serializes");
        assert!(
            !json.contains(secret),
            "an audit event leaked the secret: {json}"
        );
        assert!(!e.to_string().contains(secret));
    }
}

#[tokio::test]
async fn a_custom_prefix_is_used_and_required() {
    let store = CountingStore::default();
    let keys = Keyward::builder(store, common::catalog())
        .token_prefix("rk")
        .build()
        .expect("valid");
    let k = keys
        .create(&admin(&keys, "acme"), NewKey::new("k"))
        .await
        .expect("created");
    assert!(k.token.expose_secret().starts_with("rk_"));
    assert!(k.key.prefix.as_str().starts_with("rk_") && k.key.prefix.as_str().len() == 12);
    keys.verify(k.token.expose_secret())
        .await
        .expect("verifies");
    let as_sk = format!("sk{}", &k.token.expose_secret()[2..]);
    assert!(matches!(
        keys.verify(&as_sk).await,
        Err(VerifyError::Malformed)
    ));
    assert!(
        Keyward::builder(CountingStore::default(), common::catalog())
            .token_prefix("s_k")
            .build()
            .is_err()
    );
    assert!(
        Keyward::builder(CountingStore::default(), common::catalog())
            .last_used_interval(Duration::zero())
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn list_pages_through_many_keys() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    for i in 0..1_203 {
        h.keys
            .create(&a, NewKey::new(format!("k{i}")))
            .await
            .expect("created");
    }
    h.keys
        .create(&admin(&h.keys, "globex"), NewKey::new("other"))
        .await
        .expect("created");
    let all = h.keys.list(&a, "acme").await.expect("listed");
    assert_eq!(all.len(), 1_203);
    assert!(
        all.windows(2)
            .all(|w| (w[0].created_at, w[0].id) > (w[1].created_at, w[1].id)),
        "newest first, no repeats"
    );
    // And page by page, 100 at a time, the same keys in the same order.
    let mut paged = Vec::new();
    let mut query = keyward::KeyQuery::new().limit(100);
    loop {
        let page = h.keys.list_page(&a, &query).await.expect("page");
        assert!(page.keys.len() <= 100);
        paged.extend(page.keys.into_iter().map(|k| k.id));
        match page.next {
            Some(next) => query = keyward::KeyQuery::new().limit(100).after(next),
            None => break,
        }
    }
    assert_eq!(paged, all.iter().map(|k| k.id).collect::<Vec<_>>());
}

#[tokio::test]
async fn issued_key_debug_never_shows_the_secret() {
    let h = harness();
    let k = h
        .keys
        .create(&admin(&h.keys, "acme"), NewKey::new("k"))
        .await
        .expect("created");
    let secret = &k.token.expose_secret()[12..];
    let shown = format!("{k:?}");
    assert!(!shown.contains(secret), "{shown}");
    let v = h
        .keys
        .verify(k.token.expose_secret())
        .await
        .expect("verifies");
    assert!(!format!("{v:?}").contains(secret));
}

#[tokio::test]
async fn a_demoted_manager_cannot_revive_a_key() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let k = h
        .keys
        .create(&a, NewKey::new("k").permissions(["contacts:write"]))
        .await
        .expect("created");
    h.keys.revoke(&a, &k.key.id).await.expect("revoked");
    let demoted = Actor::new("user_5", "acme")
        .permissions(
            h.keys
                .catalog()
                .parse_set(["contacts:read"])
                .expect("known"),
        )
        .may_manage_keys(true);
    match h.keys.reactivate(&demoted, &k.key.id).await {
        Err(KeyError::Outranked { dimension, .. }) => {
            assert_eq!(dimension, keyward::Dimension::Permissions)
        }
        other => panic!("expected the key to outrank the manager, got {other:?}"),
    }
    assert!(matches!(
        h.keys.verify(k.token.expose_secret()).await,
        Err(VerifyError::Revoked)
    ));
    h.keys
        .reactivate(&a, &k.key.id)
        .await
        .expect("a full admin may");
}

#[tokio::test]
async fn other_tenants_cannot_edit_keys() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let g = admin(&h.keys, "globex");
    let k = h.keys.create(&a, NewKey::new("k")).await.expect("created");
    assert!(matches!(
        h.keys.rename(&g, &k.key.id, "x").await,
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        h.keys.set_permissions(&g, &k.key.id, ["users:read"]).await,
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        h.keys.reactivate(&g, &k.key.id).await,
        Err(KeyError::NotFound(_))
    ));
    assert_eq!(h.keys.get(&a, &k.key.id).await.expect("get").name, "k");
}

#[tokio::test]
async fn a_failing_store_gets_one_last_used_retry_per_interval() {
    use std::sync::atomic::Ordering;
    // 4,200 keys read cold in one burst, the clock standing still: past
    // the read budget (tests/flood.rs), without it here.
    let h = common::harness_with(|b| b.unknown_id_reads(None));
    let a = admin(&h.keys, "acme");
    let mut tokens = Vec::new();
    for i in 0..4_200 {
        let k = h
            .keys
            .create(&a, NewKey::new(format!("k{i}")))
            .await
            .expect("created");
        tokens.push(k.token);
    }
    h.keys
        .verify(tokens[0].expose_secret())
        .await
        .expect("first use flushes at once");
    common::settle().await;
    h.store.fail_last_used.store(true, Ordering::SeqCst);
    let writes = || h.store.last_used_writes.load(Ordering::SeqCst);
    let before = writes();
    h.clock.advance(chrono::Duration::minutes(1));
    for t in &tokens {
        h.keys
            .verify(t.expose_secret())
            .await
            .expect("verifies succeed while last-used writes fail");
    }
    common::settle().await;
    assert_eq!(
        writes() - before,
        1,
        "4,200 uses (over the 4,096 batch size) with the store failing: one attempt, not one per verify"
    );
    h.store.fail_last_used.store(false, Ordering::SeqCst);
    h.clock.advance(chrono::Duration::minutes(1));
    h.keys
        .verify(tokens[0].expose_secret())
        .await
        .expect("valid");
    common::settle().await;
    assert_eq!(writes() - before, 2, "retried after an interval");
    let listed = h.keys.list(&a, "acme").await.expect("list");
    assert!(
        listed.iter().all(|k| k.last_used_at.is_some()),
        "no use was lost while the store failed"
    );
}

#[tokio::test]
async fn extreme_inputs_are_refused_or_capped_never_a_panic() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    // A refill period beyond any duration: capped, and verify works.
    let k = h
        .keys
        .create(
            &a,
            NewKey::new("metered").refill(keyward::Refill {
                amount: u64::MAX,
                every_secs: u64::MAX,
            }),
        )
        .await
        .expect("created");
    h.keys
        .verify(k.token.expose_secret())
        .await
        .expect("verifies");
    // Expiry after the year 9999: refused (SQL stores cannot keep it).
    let far = chrono::DateTime::from_timestamp(253_402_300_800, 0).expect("year 10000");
    assert!(matches!(
        h.keys.create(&a, NewKey::new("far").expires_at(far)).await,
        Err(KeyError::InvalidExpiry)
    ));
    // NUL in metadata: refused (PostgreSQL cannot keep it).
    assert!(matches!(
        h.keys
            .create(
                &a,
                NewKey::new("nul").metadata(serde_json::json!({"k": "a\u{0}b"}))
            )
            .await,
        Err(KeyError::InvalidMetadata(_))
    ));
    // An actor id that cannot be recorded may not act.
    let bad = keyward::Actor::new("admin\u{0}", "acme")
        .permissions(h.keys.catalog().all())
        .may_manage_keys(true);
    assert!(matches!(
        h.keys.create(&bad, NewKey::new("x")).await,
        Err(KeyError::Forbidden { .. })
    ));
}
