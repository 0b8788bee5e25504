//! Lifecycle policies, each driven by a `ManualClock`: inactivity expiry
//! and warnings, rotation, rate limits, quotas, usage limits, tenants.

mod common;

use chrono::Duration;
use common::{admin, harness, harness_with, Harness};
use keyward::{
    Actor, AuditAction, Clock, ExpiryWarnings, InactivityPolicy, KeyError, KeyStatus, Keyward,
    MemoryStore, NewKey, RateLimit, Refill, RemovalReason, Retention, VerifyError, WarningKind,
};

fn days(n: i64) -> Duration {
    Duration::days(n)
}

#[tokio::test]
async fn inactive_key_is_refused_at_day_90_and_deleted_by_sweep() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let k = h
        .keys
        .create(&a, NewKey::new("idle"))
        .await
        .expect("created");
    let t = k.token.expose_secret();
    h.clock.advance(days(90) - Duration::seconds(1));
    h.keys
        .verify(t)
        .await
        .expect("still active a second before day 90");
    // That use restarted the clock; let 90 days pass without one.
    h.clock.advance(days(90));
    let err = h.keys.verify(t).await.expect_err("inactive");
    assert!(matches!(err, VerifyError::Inactive), "{err:?}");
    assert_eq!(err.code(), "api_key_inactive");
    // Refused before any sweep, and the refusal did not count as a use.
    let report = h.keys.sweep().await.expect("sweep");
    assert_eq!(report.deleted.len(), 1);
    assert_eq!(report.deleted[0].key_id, k.key.id);
    assert_eq!(report.deleted[0].reason, RemovalReason::Inactive);
    assert!(
        matches!(h.keys.verify(t).await, Err(VerifyError::Invalid)),
        "deleted for good"
    );
    assert!(matches!(
        h.keys.get(&a, &k.key.id).await,
        Err(KeyError::NotFound(_))
    ));
    let events = h.audit.take();
    assert!(events.iter().any(|e| e.action == AuditAction::Delete
        && e.actor.as_deref() == Some(keyward::SWEEP_ACTOR)
        && e.key_prefix == Some(k.key.prefix)));
}

#[tokio::test]
async fn a_never_used_key_counts_from_creation() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let k = h
        .keys
        .create(&a, NewKey::new("never used"))
        .await
        .expect("created");
    h.clock.advance(days(90));
    assert!(matches!(
        h.keys.verify(k.token.expose_secret()).await,
        Err(VerifyError::Inactive)
    ));
}

/// Sweeps four times a day for `days` days, starting now; returns the day
/// (since the start) and kind of every warning.
async fn sweep_daily(h: &Harness, days: i64) -> Vec<(i64, WarningKind, i64)> {
    let start = h.clock.now();
    let mut seen = Vec::new();
    for _ in 0..days * 4 {
        h.clock.advance(Duration::hours(6));
        let report = h.keys.sweep().await.expect("sweep");
        for w in report.warnings {
            let day = (h.clock.now() - start).num_hours() as f64 / 24.0;
            seen.push((day.ceil() as i64, w.kind, w.before.num_days()));
        }
    }
    seen
}

#[tokio::test]
async fn warnings_at_15_7_and_1_days_once_each() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    h.keys
        .create(&a, NewKey::new("idle"))
        .await
        .expect("created");
    let seen = sweep_daily(&h, 89).await;
    assert_eq!(
        seen,
        vec![
            (75, WarningKind::Inactivity, 15),
            (83, WarningKind::Inactivity, 7),
            (89, WarningKind::Inactivity, 1),
        ]
    );
    let report = {
        h.clock.advance(days(1));
        h.keys.sweep().await.expect("sweep")
    };
    assert!(report.warnings.is_empty());
    assert_eq!(report.deleted.len(), 1, "deleted at day 90");
}

#[tokio::test]
async fn warnings_are_given_once_across_instances() {
    let store = MemoryStore::new();
    let clock = keyward::ManualClock::default();
    let make = || {
        Keyward::builder(store.clone(), common::catalog())
            .clock(clock.clone())
            .build()
            .expect("valid")
    };
    let (a, b) = (make(), make());
    a.create(&admin(&a, "acme"), NewKey::new("k"))
        .await
        .expect("created");
    clock.advance(days(76));
    let (ra, rb) = tokio::join!(a.sweep(), b.sweep());
    let total = ra.expect("sweep").warnings.len() + rb.expect("sweep").warnings.len();
    assert_eq!(total, 1, "two instances sweeping together warn once");
    assert!(a.sweep().await.expect("sweep").warnings.is_empty());
    assert!(b.sweep().await.expect("sweep").warnings.is_empty());
}

#[tokio::test]
async fn a_use_at_day_80_resets_the_cycle() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let k = h.keys.create(&a, NewKey::new("k")).await.expect("created");
    let first = sweep_daily(&h, 80).await;
    assert_eq!(first, vec![(75, WarningKind::Inactivity, 15)]);
    h.keys
        .verify(k.token.expose_secret())
        .await
        .expect("used at day 80");
    let second = sweep_daily(&h, 100).await;
    // Day 80 + 75 = 155 is day 75 of the new cycle.
    assert_eq!(
        second,
        vec![
            (75, WarningKind::Inactivity, 15),
            (83, WarningKind::Inactivity, 7),
            (89, WarningKind::Inactivity, 1),
        ],
        "the cycle restarts from the use"
    );
    assert!(
        matches!(
            h.keys.verify(k.token.expose_secret()).await,
            Err(VerifyError::Invalid)
        ),
        "deleted at day 170"
    );
}

#[tokio::test]
async fn inactivity_can_be_configured_or_switched_off() {
    let h = harness_with(|b| b.inactivity(InactivityPolicy::disabled()));
    let a = admin(&h.keys, "acme");
    let k = h.keys.create(&a, NewKey::new("k")).await.expect("created");
    h.clock.advance(days(3650));
    h.keys
        .verify(k.token.expose_secret())
        .await
        .expect("no inactivity expiry");
    assert!(h.keys.sweep().await.expect("sweep").deleted.is_empty());

    let h = harness_with(|b| {
        b.inactivity(InactivityPolicy {
            after: Some(days(30)),
            warn_before: vec![days(3)],
        })
    });
    let a = admin(&h.keys, "acme");
    h.keys.create(&a, NewKey::new("k")).await.expect("created");
    assert_eq!(
        sweep_daily(&h, 29).await,
        vec![(27, WarningKind::Inactivity, 3)]
    );
    assert!(Keyward::builder(MemoryStore::new(), common::catalog())
        .inactivity(InactivityPolicy::after(Duration::zero()))
        .build()
        .is_err());
}

#[tokio::test]
async fn expiring_keys_are_reported_and_dead_keys_purged_after_retention() {
    let h = harness_with(|b| {
        b.inactivity(InactivityPolicy::disabled())
            .expiry_warnings(ExpiryWarnings::default())
            .retention(Retention {
                purge_after: Some(days(30)),
            })
    });
    let a = admin(&h.keys, "acme");
    let temp = h
        .keys
        .create(&a, NewKey::new("temp").expires_in(days(20)))
        .await
        .expect("created");
    let revoked = h
        .keys
        .create(&a, NewKey::new("revoked"))
        .await
        .expect("created");
    h.keys.revoke(&a, &revoked.key.id).await.expect("revoked");
    let seen = sweep_daily(&h, 20).await;
    assert_eq!(
        seen,
        vec![
            (5, WarningKind::Expiry, 15),
            (13, WarningKind::Expiry, 7),
            (19, WarningKind::Expiry, 1)
        ]
    );
    assert_eq!(
        h.keys.get(&a, &temp.key.id).await.expect("kept").status,
        KeyStatus::Expired
    );
    h.clock.advance(days(10));
    let report = h.keys.sweep().await.expect("sweep");
    assert_eq!(report.purged.len(), 1, "revoked 30 days ago");
    assert_eq!(report.purged[0].key_id, revoked.key.id);
    assert_eq!(report.purged[0].reason, RemovalReason::Retention);
    h.clock.advance(days(20));
    let report = h.keys.sweep().await.expect("sweep");
    assert_eq!(report.purged.len(), 1, "expired 30 days ago");
    assert_eq!(report.purged[0].key_id, temp.key.id);
    assert!(h.keys.list(&a, "acme").await.expect("list").is_empty());
}

#[tokio::test]
async fn by_default_revoked_keys_are_kept() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let k = h.keys.create(&a, NewKey::new("k")).await.expect("created");
    h.keys.revoke(&a, &k.key.id).await.expect("revoked");
    h.clock.advance(days(400));
    let report = h.keys.sweep().await.expect("sweep");
    assert!(report.purged.is_empty() && report.deleted.is_empty());
    assert_eq!(
        h.keys.get(&a, &k.key.id).await.expect("kept").status,
        KeyStatus::Revoked
    );
}

#[tokio::test]
async fn sweep_pages_through_many_keys() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    for i in 0..1_234 {
        h.keys
            .create(&a, NewKey::new(format!("k{i}")))
            .await
            .expect("created");
    }
    h.clock.advance(days(10));
    let report = h.keys.sweep().await.expect("sweep");
    assert_eq!(
        report.scanned, 0,
        "nothing is due: the store hands the sweep no key"
    );
    h.clock.advance(days(66));
    let report = h.keys.sweep().await.expect("sweep");
    assert_eq!(report.scanned, 1_234);
    assert_eq!(report.warnings.len(), 1_234);
    h.clock.advance(days(14));
    let report = h.keys.sweep().await.expect("sweep");
    assert_eq!(report.deleted.len(), 1_234);
    assert!(h.store.inner.is_empty());
}

#[tokio::test]
async fn roll_honours_grace_and_caps_it_by_the_old_expiry() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let old = h
        .keys
        .create(
            &a,
            NewKey::new("CI")
                .permissions(["contacts:write"])
                .expires_in(days(10))
                .rate_limit(RateLimit::per_minute(50).expect("valid"))
                .metadata(serde_json::json!({"ci": true})),
        )
        .await
        .expect("created");
    let new = h
        .keys
        .roll(&a, &old.key.id, Duration::hours(24))
        .await
        .expect("rolled");
    assert_ne!(new.key.id, old.key.id);
    assert_eq!(new.key.name, "CI");
    assert_eq!(new.key.permissions, old.key.permissions);
    assert_eq!(new.key.rate_limit, old.key.rate_limit);
    assert_eq!(new.key.metadata, old.key.metadata);
    assert_eq!(
        new.key.expires_at, old.key.expires_at,
        "a roll never extends the lifetime"
    );
    assert_eq!(new.key.rolled_from, Some(old.key.id));
    h.clock.advance(Duration::hours(23));
    h.keys
        .verify(old.token.expose_secret())
        .await
        .expect("old key works during grace");
    h.keys
        .verify(new.token.expose_secret())
        .await
        .expect("new key works");
    h.clock.advance(Duration::hours(1));
    assert!(matches!(
        h.keys.verify(old.token.expose_secret()).await,
        Err(VerifyError::Expired)
    ));
    h.keys
        .verify(new.token.expose_secret())
        .await
        .expect("new key still works");

    // Grace longer than the remaining life is capped by the old expiry.
    let capped = h
        .keys
        .roll(&a, &new.key.id, days(30))
        .await
        .expect("rolled");
    let old_after = h.keys.get(&a, &new.key.id).await.expect("get");
    assert_eq!(
        old_after.expires_at, new.key.expires_at,
        "capped by its own expiry"
    );
    assert_eq!(capped.key.rolled_from, Some(new.key.id));

    // The audit trail links old and new.
    let roll = h
        .audit
        .take()
        .into_iter()
        .filter(|e| e.action == AuditAction::Roll)
        .collect::<Vec<_>>();
    assert_eq!(roll.len(), 2);
    assert_eq!(roll[0].key_id, Some(old.key.id));
    assert_eq!(roll[0].related_key_id, Some(new.key.id));
}

#[tokio::test]
async fn zero_grace_revokes_and_dead_keys_cannot_roll() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let k = h
        .keys
        .create(&a, NewKey::new("k").expires_in(days(1)))
        .await
        .expect("created");
    let new = h
        .keys
        .roll(&a, &k.key.id, Duration::zero())
        .await
        .expect("rolled");
    assert!(matches!(
        h.keys.verify(k.token.expose_secret()).await,
        Err(VerifyError::Revoked)
    ));
    match h.keys.roll(&a, &k.key.id, Duration::zero()).await {
        Err(KeyError::RolledAway { successor, .. }) => assert_eq!(successor, new.key.id),
        other => panic!("a rolled key cannot be rolled again: {other:?}"),
    }
    h.clock.advance(days(2));
    assert!(matches!(
        h.keys.roll(&a, &new.key.id, Duration::hours(1)).await,
        Err(KeyError::NotActive {
            status: KeyStatus::Expired,
            ..
        })
    ));
    let live = h
        .keys
        .create(&a, NewKey::new("live"))
        .await
        .expect("created");
    assert!(matches!(
        h.keys.roll(&a, &live.key.id, Duration::seconds(-1)).await,
        Err(KeyError::InvalidGrace)
    ));
    let other = admin(&h.keys, "globex");
    assert!(matches!(
        h.keys.roll(&other, &live.key.id, Duration::zero()).await,
        Err(KeyError::NotFound(_))
    ));
}

#[tokio::test]
async fn rate_limit_lets_exactly_200_through_and_reports_retry_after() {
    let h = harness_with(|b| b.rate_limit(RateLimit::per_minute(200).expect("valid")));
    let a = admin(&h.keys, "acme");
    let k = h.keys.create(&a, NewKey::new("k")).await.expect("created");
    let other = h
        .keys
        .create(&a, NewKey::new("other"))
        .await
        .expect("created");
    let t = k.token.expose_secret();
    let mut ok = 0;
    let mut first_refusal = None;
    for _ in 0..300 {
        match h.keys.verify(t).await {
            Ok(_) => ok += 1,
            Err(VerifyError::RateLimited { retry_after }) => {
                first_refusal.get_or_insert(retry_after);
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 200, "exactly the limit gets through at once");
    assert_eq!(
        first_refusal,
        Some(Duration::milliseconds(300)),
        "one request refills every 60 s / 200"
    );
    // Limits are per key.
    h.keys
        .verify(other.token.expose_secret())
        .await
        .expect("another key has its own limit");
    h.clock.advance(Duration::milliseconds(299));
    assert!(matches!(
        h.keys.verify(t).await,
        Err(VerifyError::RateLimited { .. })
    ));
    h.clock.advance(Duration::milliseconds(1));
    h.keys.verify(t).await.expect("refilled after retry_after");
    // A full minute later, a full burst again.
    h.clock.advance(Duration::minutes(1));
    let again = {
        let mut n = 0;
        for _ in 0..300 {
            if h.keys.verify(t).await.is_ok() {
                n += 1;
            }
        }
        n
    };
    assert_eq!(again, 200);
}

#[tokio::test]
async fn per_key_limit_overrides_the_default() {
    let h = harness_with(|b| b.rate_limit(RateLimit::per_minute(200).expect("valid")));
    let a = admin(&h.keys, "acme");
    let k = h
        .keys
        .create(
            &a,
            NewKey::new("k").rate_limit(RateLimit::per_second(3).expect("valid")),
        )
        .await
        .expect("created");
    let t = k.token.expose_secret();
    for _ in 0..3 {
        h.keys.verify(t).await.expect("within 3/s");
    }
    assert!(matches!(
        h.keys.verify(t).await,
        Err(VerifyError::RateLimited { .. })
    ));
    h.keys
        .set_rate_limit(&a, &k.key.id, None)
        .await
        .expect("back to default");
    h.clock.advance(Duration::seconds(1));
    for _ in 0..150 {
        h.keys.verify(t).await.expect("within the default 200/min");
    }
}

#[tokio::test]
async fn tenant_quota_is_shared_across_keys() {
    let h = harness_with(|b| {
        b.tenant_quota(RateLimit::per_minute(10).expect("valid"))
            .tenant_quota_for("bigco", RateLimit::per_minute(100).expect("valid"))
    });
    let acme = admin(&h.keys, "acme");
    let k1 = h
        .keys
        .create(&acme, NewKey::new("k1"))
        .await
        .expect("created");
    let k2 = h
        .keys
        .create(&acme, NewKey::new("k2"))
        .await
        .expect("created");
    for i in 0..10 {
        let t = if i % 2 == 0 { &k1 } else { &k2 };
        h.keys
            .verify(t.token.expose_secret())
            .await
            .expect("within quota");
    }
    for k in [&k1, &k2] {
        match h.keys.verify(k.token.expose_secret()).await {
            Err(VerifyError::QuotaExceeded { retry_after }) => {
                assert_eq!(retry_after, Duration::seconds(6))
            }
            other => panic!("expected quota exceeded, got {other:?}"),
        }
    }
    let big = admin(&h.keys, "bigco");
    let b = h
        .keys
        .create(&big, NewKey::new("b"))
        .await
        .expect("created");
    for _ in 0..100 {
        h.keys
            .verify(b.token.expose_secret())
            .await
            .expect("bigco has its own, larger quota");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_are_exact_under_concurrency() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let k = h
        .keys
        .create(&a, NewKey::new("k").remaining(37))
        .await
        .expect("created");
    let token = k.token.expose_secret().to_string();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let keys = h.keys.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..20 {
                    match keys.verify(&token).await {
                        Ok(_) => ok += 1,
                        Err(VerifyError::UsageExceeded) => {}
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                    tokio::task::yield_now().await;
                }
                ok
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("no panic");
    }
    assert_eq!(
        total, 37,
        "160 concurrent verifies of a 37-use key succeed exactly 37 times"
    );
    let err = h.keys.verify(&token).await.expect_err("exhausted");
    assert_eq!(err.to_string(), "API key usage limit reached");
    assert_eq!(
        h.keys.get(&a, &k.key.id).await.expect("get").remaining,
        Some(0)
    );
}

#[tokio::test]
async fn credits_refill() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    let k = h
        .keys
        .create(
            &a,
            NewKey::new("k").refill(Refill::new(3, days(1)).expect("valid")),
        )
        .await
        .expect("created");
    let t = k.token.expose_secret();
    for _ in 0..3 {
        h.keys.verify(t).await.expect("within 3 a day");
    }
    assert!(matches!(
        h.keys.verify(t).await,
        Err(VerifyError::UsageExceeded)
    ));
    h.clock.advance(days(1));
    for _ in 0..3 {
        h.keys.verify(t).await.expect("refilled");
    }
    assert!(matches!(
        h.keys.verify(t).await,
        Err(VerifyError::UsageExceeded)
    ));
}

#[tokio::test]
async fn refused_requests_do_not_spend_credits() {
    let h = harness_with(|b| b.rate_limit(RateLimit::per_minute(1).expect("valid")));
    let a = admin(&h.keys, "acme");
    let k = h
        .keys
        .create(&a, NewKey::new("k").remaining(5))
        .await
        .expect("created");
    let t = k.token.expose_secret();
    h.keys.verify(t).await.expect("first");
    assert!(matches!(
        h.keys.verify(t).await,
        Err(VerifyError::RateLimited { .. })
    ));
    assert!(matches!(
        h.keys.verify_for_tenant(t, "globex").await,
        Err(VerifyError::WrongTenant)
    ));
    assert_eq!(
        h.keys.get(&a, &k.key.id).await.expect("get").remaining,
        Some(4)
    );
}

#[tokio::test]
async fn nested_tenants_reach_down_never_up_or_across() {
    let h = harness_with(|b| b.nested_tenants(true));
    let agency = admin(&h.keys, "agency");
    let loc1 = admin(&h.keys, "agency/loc1");
    let parent_key = h
        .keys
        .create(&agency, NewKey::new("agency key"))
        .await
        .expect("created");
    let child_key = h
        .keys
        .create(&loc1, NewKey::new("loc1 key"))
        .await
        .expect("created");
    let p = parent_key.token.expose_secret();
    let c = child_key.token.expose_secret();

    // A parent's key acts for its children.
    h.keys
        .verify_for_tenant(p, "agency")
        .await
        .expect("own tenant");
    h.keys
        .verify_for_tenant(p, "agency/loc1")
        .await
        .expect("child tenant");
    h.keys
        .verify_for_tenant(p, "agency/loc1/desk")
        .await
        .expect("grandchild");
    // A child's key never acts for its parent or siblings.
    h.keys
        .verify_for_tenant(c, "agency/loc1")
        .await
        .expect("own tenant");
    for t in ["agency", "agency/loc2", "agency2", "agency/loc10"] {
        assert!(
            matches!(
                h.keys.verify_for_tenant(c, t).await,
                Err(VerifyError::WrongTenant)
            ),
            "{t}"
        );
    }
    assert!(matches!(
        h.keys.verify_for_tenant(p, "agency2").await,
        Err(VerifyError::WrongTenant)
    ));

    // A parent's admin manages child keys and creates keys in child tenants.
    h.keys
        .get(&agency, &child_key.key.id)
        .await
        .expect("parent sees child's key");
    let made = h
        .keys
        .create(&agency, NewKey::new("for loc2").tenant("agency/loc2"))
        .await
        .expect("parent creates for a child");
    assert_eq!(made.key.tenant, "agency/loc2");
    assert_eq!(
        h.keys
            .list(&agency, "agency/loc1")
            .await
            .expect("list")
            .len(),
        1
    );
    // A child's admin cannot reach up or across.
    assert!(matches!(
        h.keys.get(&loc1, &parent_key.key.id).await,
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        h.keys.get(&loc1, &made.key.id).await,
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        h.keys
            .create(&loc1, NewKey::new("x").tenant("agency"))
            .await,
        Err(KeyError::InvalidTenant(_))
    ));
    assert!(matches!(
        h.keys.list(&loc1, "agency").await,
        Err(KeyError::Forbidden { .. })
    ));
    assert!(matches!(
        h.keys
            .create(&agency, NewKey::new("x").tenant("agency//x"))
            .await,
        Err(KeyError::InvalidTenant(_))
    ));
}

#[tokio::test]
async fn flat_tenants_do_not_nest() {
    let h = harness();
    let agency = admin(&h.keys, "agency");
    let k = h
        .keys
        .create(&agency, NewKey::new("k"))
        .await
        .expect("created");
    assert!(matches!(
        h.keys
            .verify_for_tenant(k.token.expose_secret(), "agency/loc1")
            .await,
        Err(VerifyError::WrongTenant)
    ));
    assert!(matches!(
        h.keys
            .create(&agency, NewKey::new("x").tenant("agency/loc1"))
            .await,
        Err(KeyError::InvalidTenant(_))
    ));
    let member = Actor::new("m", "agency");
    assert!(matches!(
        h.keys.roll(&member, &k.key.id, Duration::zero()).await,
        Err(KeyError::Forbidden { .. })
    ));
}

#[cfg(feature = "tokio")]
#[tokio::test(start_paused = true)]
async fn the_sweeper_runs_on_an_interval() {
    let h = harness();
    let a = admin(&h.keys, "acme");
    h.keys.create(&a, NewKey::new("k")).await.expect("created");
    h.clock.advance(days(80));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handle = h
        .keys
        .spawn_sweeper(std::time::Duration::from_secs(3600), move |r| {
            let _ = tx.send(r.map(|r| r.warnings.len()));
        });
    let first = rx.recv().await.expect("first sweep").expect("ok");
    assert_eq!(first, 1, "the first tick sweeps at once");
    let second = rx.recv().await.expect("second sweep").expect("ok");
    assert_eq!(second, 0, "an hour later: no repeat warning");
    handle.abort();
}
