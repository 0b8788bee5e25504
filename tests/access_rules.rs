//! Step 10's access rules through the public API: IP allowlists (IPv4,
//! IPv6, IPv4-mapped, bounds), `not_before`, tenant key policies, roles,
//! named limits with costs (all or nothing under concurrency) and the
//! credits a key spent.

mod common;

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Duration;
use common::CountingStore;
use keyward::{
    Actor, Catalog, Clock, Dimension, IpAllowlist, KeyError, KeyUpdate, Keyward, KeywardBuilder,
    ManualClock, MemoryAuditSink, NamedLimit, NewKey, PolicyRule, RateLimit, TenantPolicy,
    VerifyError, VerifyRequest,
};

fn catalog() -> Catalog {
    Catalog::builder()
        .resource("contacts", ["read", "write"])
        .resource("tickets", ["read", "write"])
        .resource("admin", ["read", "write"])
        .role("support", ["contacts:read", "tickets:*"])
        .build()
        .expect("valid catalog")
}

struct Setup {
    keys: Keyward,
    clock: ManualClock,
    store: CountingStore,
}

fn setup(configure: impl FnOnce(KeywardBuilder) -> KeywardBuilder) -> Setup {
    let store = CountingStore::default();
    let clock = ManualClock::default();
    let keys = configure(
        Keyward::builder(store.clone(), catalog())
            .clock(clock.clone())
            .audit(MemoryAuditSink::default()),
    )
    .build()
    .expect("valid config");
    Setup { keys, clock, store }
}

fn admin(keys: &Keyward, tenant: &str) -> Actor {
    Actor::new("admin_1", tenant)
        .permissions(keys.catalog().all())
        .may_manage_keys(true)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn from(addr: &str) -> VerifyRequest<'static> {
    VerifyRequest::new().client_ip(ip(addr))
}

fn list(s: &str) -> IpAllowlist {
    s.parse().expect("allowlist")
}

/// A key of `acme` holding every permission (so, as an actor, it may
/// manage keys), with `new`'s other settings.
async fn manager_key(keys: &Keyward, new: NewKey) -> keyward::IssuedKey {
    let new = new.permission_set(keys.catalog().all());
    keys.create(&admin(keys, "acme"), new)
        .await
        .expect("a manager key")
}

async fn issue(keys: &Keyward, new: NewKey) -> String {
    let issued = keys
        .create(&admin(keys, "acme"), new)
        .await
        .expect("created");
    issued.token.expose_secret().to_string()
}

fn code<T: std::fmt::Debug>(r: Result<T, VerifyError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

#[tokio::test]
async fn an_allowlist_admits_its_networks_over_ipv4_ipv6_and_mapped_addresses() {
    let s = setup(|b| b);
    let t = issue(
        &s.keys,
        NewKey::new("office").allowed_ips(list("203.0.113.0/24, 2001:db8:1::/48")),
    )
    .await;
    for (addr, want) in [
        ("203.0.113.77", "ok"),
        ("::ffff:203.0.113.77", "ok"),
        ("2001:db8:1:2::9", "ok"),
        ("203.0.114.1", "ip_not_allowed"),
        ("::ffff:198.51.100.1", "ip_not_allowed"),
        ("2001:db8:2::1", "ip_not_allowed"),
        ("::1", "ip_not_allowed"),
    ] {
        assert_eq!(
            code(s.keys.verify_with(&t, from(addr)).await),
            want,
            "{addr}"
        );
    }
    // No address given: refused, not waved through.
    assert_eq!(code(s.keys.verify(&t).await), "ip_not_allowed");
    // A key without an allowlist is served from anywhere, or from nowhere known.
    let open = issue(&s.keys, NewKey::new("open")).await;
    assert_eq!(
        code(s.keys.verify_with(&open, from("192.0.2.1")).await),
        "ok"
    );
    assert_eq!(code(s.keys.verify(&open).await), "ok");
}

#[tokio::test]
async fn the_address_is_told_only_after_the_secret_is_proven() {
    let s = setup(|b| b);
    let t = issue(
        &s.keys,
        NewKey::new("office").allowed_ips(list("10.0.0.0/8")),
    )
    .await;
    let wrong = common::forge::same_id_other_secret(&t);
    // Cold (from the store) and then cached: a wrong secret from outside
    // the list is only ever `invalid`.
    for _ in 0..2 {
        assert_eq!(
            code(s.keys.verify_with(&wrong, from("192.0.2.1")).await),
            "invalid"
        );
    }
    assert_eq!(
        code(s.keys.verify_with(&t, from("192.0.2.1")).await),
        "ip_not_allowed"
    );
}

#[tokio::test]
async fn a_key_allowlist_stays_within_its_creators() {
    let s = setup(|b| b);
    let parent = manager_key(
        &s.keys,
        NewKey::new("parent").allowed_ips(list("10.0.0.0/8")),
    )
    .await;
    let verified = s
        .keys
        .verify_with(parent.token.expose_secret(), from("10.1.1.1"))
        .await
        .expect("verifies");
    let actor = verified.actor().may_manage_keys(true);
    // Without one, the child inherits the parent's.
    let child = s
        .keys
        .create(&actor, NewKey::new("child"))
        .await
        .expect("child");
    assert_eq!(child.key.allowed_ips, Some(list("10.0.0.0/8")));
    // A narrower one is allowed; a wider or disjoint one is not.
    let narrow = NewKey::new("narrow").allowed_ips(list("10.2.0.0/16"));
    assert!(s.keys.create(&actor, narrow).await.is_ok());
    for wider in ["0.0.0.0/0", "10.0.0.0/7", "10.0.0.0/8, 192.0.2.0/24"] {
        let err = s
            .keys
            .create(&actor, NewKey::new("wide").allowed_ips(list(wider)))
            .await
            .expect_err("wider than the creator");
        assert!(
            matches!(
                err,
                KeyError::BoundExceeded {
                    dimension: Dimension::Network
                }
            ),
            "{wider}: {err:?}"
        );
    }
    // Nor can the child's allowlist be removed by that actor.
    let err = s
        .keys
        .update(&actor, &child.key.id, KeyUpdate::new().allowed_ips(None))
        .await
        .expect_err("no allowlist is wider");
    assert!(matches!(
        err,
        KeyError::BoundExceeded {
            dimension: Dimension::Network
        }
    ));
}

#[tokio::test]
async fn an_allowlist_change_reaches_a_cached_key() {
    let s = setup(|b| b);
    let issued = s
        .keys
        .create(&admin(&s.keys, "acme"), NewKey::new("office"))
        .await
        .expect("created");
    let t = issued.token.expose_secret();
    assert_eq!(code(s.keys.verify_with(t, from("192.0.2.1")).await), "ok");
    s.keys
        .update(
            &admin(&s.keys, "acme"),
            &issued.key.id,
            KeyUpdate::new().allowed_ips(Some(list("10.0.0.0/8"))),
        )
        .await
        .expect("updated");
    assert_eq!(
        code(s.keys.verify_with(t, from("192.0.2.1")).await),
        "ip_not_allowed"
    );
    assert_eq!(code(s.keys.verify_with(t, from("10.0.0.1")).await), "ok");
}

#[tokio::test]
async fn not_before_is_honoured_on_the_cached_path_too() {
    let s = setup(|b| b);
    let start = s.clock.now() + Duration::hours(1);
    let t = issue(&s.keys, NewKey::new("later").not_before(start)).await;
    assert_eq!(code(s.keys.verify(&t).await), "api_key_not_yet_valid");
    // Cached now; still refused until the instant.
    s.clock.advance(Duration::minutes(59));
    assert_eq!(code(s.keys.verify(&t).await), "api_key_not_yet_valid");
    s.clock.advance(Duration::minutes(1));
    assert_eq!(code(s.keys.verify(&t).await), "ok");
    // It must come before the expiry.
    let err = s
        .keys
        .create(
            &admin(&s.keys, "acme"),
            NewKey::new("never")
                .expires_in(Duration::hours(1))
                .not_before(s.clock.now() + Duration::hours(2)),
        )
        .await
        .expect_err("not_before after expiry");
    assert!(matches!(err, KeyError::InvalidNotBefore));
}

fn policy_rule(err: KeyError) -> (String, PolicyRule) {
    match err {
        KeyError::PolicyViolation { tenant, rule } => (tenant, rule),
        other => panic!("expected a policy violation, got {other:?}"),
    }
}

#[tokio::test]
async fn a_lifetime_policy_refuses_a_400_day_key_and_a_key_without_expiry() {
    let s = setup(|b| {
        b.nested_tenants(true).tenant_policy(
            "agency",
            TenantPolicy::new().max_lifetime(Duration::days(366)),
        )
    });
    let boss = admin(&s.keys, "agency");
    let long = NewKey::new("long").expires_in(Duration::days(400));
    let (tenant, rule) = policy_rule(s.keys.create(&boss, long).await.expect_err("400 days"));
    assert_eq!(
        (tenant.as_str(), rule.clone()),
        ("agency", PolicyRule::MaxLifetime(Duration::days(366)))
    );
    assert_eq!(rule.as_str(), "max_lifetime");
    let forever = NewKey::new("forever");
    let err = s.keys.create(&boss, forever).await.expect_err("no expiry");
    assert!(err.to_string().contains("max_lifetime"), "{err}");
    // Inherited by a tenant below.
    let below = NewKey::new("below")
        .tenant("agency/loc1")
        .expires_in(Duration::days(400));
    let (tenant, rule) = policy_rule(s.keys.create(&boss, below).await.expect_err("inherited"));
    assert_eq!(
        (tenant.as_str(), rule.as_str()),
        ("agency/loc1", "max_lifetime")
    );
    // Within it, fine; another tenant has no policy.
    let ok = NewKey::new("ok").expires_in(Duration::days(366));
    assert!(s.keys.create(&boss, ok).await.is_ok());
    let other = admin(&s.keys, "globex");
    assert!(s.keys.create(&other, NewKey::new("free")).await.is_ok());
}

#[tokio::test]
async fn required_expiry_active_key_cap_ceiling_and_allowlist_each_name_their_rule() {
    let s = setup(|b| {
        let catalog = catalog();
        let ceiling = catalog
            .parse_set(["contacts:*", "tickets:read"])
            .expect("set");
        b.nested_tenants(true)
            .tenant_policy(
                "acme",
                TenantPolicy::new()
                    .require_expiry()
                    .max_active_keys(2)
                    .permission_ceiling(ceiling),
            )
            .tenant_policy("acme/eu", TenantPolicy::new().require_ip_allowlist())
    });
    let boss = admin(&s.keys, "acme");
    let day = || NewKey::new("k").expires_in(Duration::days(1));
    let rule = |r: Result<keyward::IssuedKey, KeyError>| policy_rule(r.expect_err("refused")).1;
    assert_eq!(
        rule(s.keys.create(&boss, NewKey::new("k")).await),
        PolicyRule::ExpiryRequired
    );
    assert_eq!(
        rule(
            s.keys
                .create(&boss, day().permissions(["tickets:write", "admin:read"]))
                .await
        ),
        PolicyRule::PermissionCeiling(vec!["tickets:write".into(), "admin:read".into()])
    );
    // Roles count against the ceiling too.
    assert_eq!(
        rule(s.keys.create(&boss, day().roles(["support"])).await).as_str(),
        "permission_ceiling"
    );
    assert_eq!(
        rule(s.keys.create(&boss, day().tenant("acme/eu")).await),
        PolicyRule::IpAllowlistRequired
    );
    let eu = day().tenant("acme/eu").allowed_ips(list("192.0.2.0/24"));
    assert!(
        s.keys.create(&boss, eu).await.is_ok(),
        "the cap is per tenant"
    );
    let first = s.keys.create(&boss, day()).await.expect("first");
    s.keys.create(&boss, day()).await.expect("second");
    assert_eq!(
        rule(s.keys.create(&boss, day()).await),
        PolicyRule::MaxActiveKeys(2)
    );
    // Revoking one makes room; reactivating it then is refused.
    s.keys.revoke(&boss, &first.key.id).await.expect("revoked");
    let third = s.keys.create(&boss, day()).await.expect("room again");
    let err = s
        .keys
        .reactivate(&boss, &first.key.id)
        .await
        .expect_err("full");
    assert_eq!(policy_rule(err).1.as_str(), "max_active_keys");
    // An update above the ceiling is refused; a rename of any key is not.
    let err = s
        .keys
        .update(
            &boss,
            &third.key.id,
            KeyUpdate::new().permissions(["admin:read"]),
        )
        .await
        .expect_err("above the ceiling");
    assert_eq!(policy_rule(err).1.as_str(), "permission_ceiling");
    assert!(s.keys.rename(&boss, &third.key.id, "renamed").await.is_ok());
}

#[tokio::test]
async fn roles_grant_their_permissions_and_a_change_reaches_cached_keys() {
    let s = setup(|b| b);
    let ops = admin(&s.keys, "acme").may_manage_roles(true);
    let issued = s
        .keys
        .create(&ops, NewKey::new("helpdesk").roles(["support"]))
        .await
        .expect("created");
    assert_eq!(issued.key.roles, ["support"]);
    let t = issued.token.expose_secret();
    let v = s.keys.verify(t).await.expect("verifies");
    assert!(v.require("tickets:write").is_ok() && v.require("contacts:read").is_ok());
    assert!(v.require("contacts:write").is_err());
    let gets = s.store.gets();
    s.keys
        .set_role(&ops, "support", ["tickets:read"])
        .await
        .expect("redefined");
    let v = s.keys.verify(t).await.expect("verifies");
    assert!(
        v.require("tickets:write").is_err(),
        "the cached key changed"
    );
    assert!(v.require("contacts:read").is_err());
    assert!(s.store.gets() > gets, "the key was read again");
    // A new role, defined at run time, can be given.
    s.keys
        .set_role(&ops, "auditor", ["admin:read"])
        .await
        .expect("defined");
    let audit = s
        .keys
        .create(&ops, NewKey::new("a").roles(["auditor"]))
        .await
        .expect("ok");
    let v = s
        .keys
        .verify(audit.token.expose_secret())
        .await
        .expect("verifies");
    assert!(v.require("admin:read").is_ok());
    let err = s
        .keys
        .create(&ops, NewKey::new("x").roles(["nobody"]))
        .await
        .expect_err("unknown");
    assert!(
        matches!(err, KeyError::UnknownRole(ref r) if r == "nobody"),
        "{err:?}"
    );
}

#[tokio::test]
async fn roles_obey_the_authority_rule() {
    let s = setup(|b| b);
    let weak = Actor::new("u2", "acme")
        .permissions(s.keys.catalog().parse_set(["contacts:read"]).expect("set"))
        .may_manage_keys(true)
        .may_manage_roles(true);
    let err = s
        .keys
        .create(&weak, NewKey::new("x").roles(["support"]))
        .await
        .expect_err("the role holds more than the actor");
    assert!(
        matches!(err, KeyError::PermissionEscalation { ref missing } if missing.contains(&"tickets:write".to_string())),
        "{err:?}"
    );
    // Nor may it redefine a role beyond what it holds.
    let err = s
        .keys
        .set_role(&weak, "support", ["contacts:read"])
        .await
        .expect_err("old role");
    assert_eq!(err.code(), "permission_escalation");
    let err = s
        .keys
        .set_role(&weak, "Bad Name", ["contacts:read"])
        .await
        .expect_err("name");
    assert_eq!(err.code(), "invalid_role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn named_limits_are_all_or_nothing_under_concurrency() {
    let s = setup(|b| b);
    let per_minute = |n| RateLimit::per_minute(n).expect("valid");
    let t = issue(
        &s.keys,
        NewKey::new("llm")
            .limit("requests", per_minute(40))
            .limit("tokens", per_minute(1_000)),
    )
    .await;
    let keys = Arc::new(s.keys.clone());
    let t = Arc::new(t);
    // 200 requests race, each costing 1 request and 30 tokens: 33 fit the
    // tokens, 40 the requests. Exactly 33 pass, whatever the interleaving.
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (keys, t) = (keys.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let req = VerifyRequest::new().limit_cost("tokens", 30);
            keys.verify_with(&t, req)
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    VerifyError::LimitExceeded { limit, .. } => format!("limit_exceeded {limit}"),
                    other => other.code().to_string(),
                })
        }));
    }
    let mut passed = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => passed += 1,
            Err(code) => assert_eq!(code, "limit_exceeded tokens"),
        }
    }
    assert_eq!(passed, 33);
    // None of the 167 refused was charged to `requests`: 7 requests of
    // 1 token still fit (33 + 7 = 40), then none.
    let light = VerifyRequest::new().limit_cost("tokens", 1);
    for i in 0..7 {
        assert!(keys.verify_with(&t, light).await.is_ok(), "request {i}");
    }
    match keys.verify_with(&t, light).await {
        Err(VerifyError::LimitExceeded { limit, retry_after }) => {
            assert_eq!(&*limit, "requests");
            assert!(retry_after > Duration::zero());
        }
        other => panic!("expected the requests limit, got {other:?}"),
    }
}

#[tokio::test]
async fn a_cost_spends_that_many_credits_and_the_spend_is_readable() {
    let s = setup(|b| b);
    let ops = admin(&s.keys, "acme");
    let issued = s
        .keys
        .create(&ops, NewKey::new("metered").remaining(100))
        .await
        .expect("created");
    let t = issued.token.expose_secret();
    let v = s
        .keys
        .verify_with(t, VerifyRequest::new().cost(30))
        .await
        .expect("30");
    assert_eq!(v.remaining(), Some(70));
    let v = s
        .keys
        .verify_with(t, VerifyRequest::new().cost(70))
        .await
        .expect("70");
    assert_eq!(v.remaining(), Some(0));
    assert_eq!(
        code(s.keys.verify_with(t, VerifyRequest::new().cost(1)).await),
        "usage_exceeded"
    );
    let info = s.keys.get(&ops, &issued.key.id).await.expect("read");
    assert_eq!((info.remaining, info.credits_spent), (Some(0), 100));
    // A refused cost spends nothing.
    let other = s
        .keys
        .create(&ops, NewKey::new("m2").remaining(5))
        .await
        .expect("created");
    let t2 = other.token.expose_secret();
    assert_eq!(
        code(s.keys.verify_with(t2, VerifyRequest::new().cost(6)).await),
        "usage_exceeded"
    );
    let info = s.keys.get(&ops, &other.key.id).await.expect("read");
    assert_eq!((info.remaining, info.credits_spent), (Some(5), 0));
}

/// The uses left a verify reports are exact at both ends: the largest
/// allowance a key may hold, a check that spends nothing, the last use.
#[tokio::test]
async fn uses_left_are_reported_exactly_from_the_most_to_none() {
    let s = setup(|b| b);
    let t = &issue(&s.keys, NewKey::new("most").remaining(u64::MAX)).await;
    let free = VerifyRequest::new().cost(0);
    let v = s.keys.verify_with(t, free).await.expect("cost 0");
    assert_eq!(v.remaining(), Some(keyward::MAX_USES), "clamped, unspent");
    let v = s.keys.verify(t).await.expect("one use");
    assert_eq!(v.remaining(), Some(keyward::MAX_USES - 1));
    assert_eq!(v.clone().remaining(), Some(keyward::MAX_USES - 1));
    let t = &issue(&s.keys, NewKey::new("one").remaining(1)).await;
    assert_eq!(
        s.keys
            .verify_with(t, free)
            .await
            .expect("cost 0")
            .remaining(),
        Some(1)
    );
    assert_eq!(s.keys.verify(t).await.expect("last").remaining(), Some(0));
    assert_eq!(code(s.keys.verify(t).await), "usage_exceeded");
    let unmetered = issue(&s.keys, NewKey::new("plain")).await;
    assert_eq!(
        s.keys.verify(&unmetered).await.expect("valid").remaining(),
        None
    );
}

/// A store (a host's own) that answers a credit with more uses left than
/// any key may hold is read as holding `MAX_USES`.
#[tokio::test]
async fn uses_left_a_store_overstates_are_read_as_the_most_a_key_holds() {
    let s = setup(|b| b);
    let t = &issue(&s.keys, NewKey::new("metered").remaining(10)).await;
    s.store.overstate_credits.store(true, Ordering::SeqCst);
    let v = s.keys.verify(t).await.expect("valid");
    assert_eq!(v.remaining(), Some(keyward::MAX_USES));
}

#[tokio::test]
async fn bad_named_limits_are_refused() {
    let s = setup(|b| b);
    let l = RateLimit::per_minute(1).expect("valid");
    let err = s
        .keys
        .create(
            &admin(&s.keys, "acme"),
            NewKey::new("x").limit("Has Space", l),
        )
        .await
        .expect_err("bad name");
    assert_eq!(err.code(), "invalid_limit");
    assert!(NamedLimit::new("ok_name", l).is_ok());
}

// Findings of the step-10 security review: each fails on the code
// before its fix.

#[tokio::test]
async fn a_key_cannot_strip_or_loosen_its_own_named_limits() {
    let s = setup(|b| b);
    let per_minute = |n| RateLimit::per_minute(n).expect("valid");
    let parent = manager_key(
        &s.keys,
        NewKey::new("customer").limit("tokens", per_minute(100)),
    )
    .await;
    let v = s
        .keys
        .verify(parent.token.expose_secret())
        .await
        .expect("verifies");
    let actor = v.actor().may_manage_keys(true);
    let err = s
        .keys
        .update(&actor, &parent.key.id, KeyUpdate::new().limits([]))
        .await
        .expect_err("stripping its own limit");
    assert!(
        matches!(
            err,
            KeyError::BoundExceeded {
                dimension: Dimension::NamedLimits
            }
        ),
        "{err:?}"
    );
    let looser = NamedLimit::new("tokens", per_minute(1_000)).expect("name");
    let err = s
        .keys
        .update(&actor, &parent.key.id, KeyUpdate::new().limits([looser]))
        .await
        .expect_err("loosening its own limit");
    assert!(
        matches!(
            err,
            KeyError::BoundExceeded {
                dimension: Dimension::NamedLimits
            }
        ),
        "{err:?}"
    );
    // A child inherits the limit; a tighter one is fine.
    let child = s
        .keys
        .create(&actor, NewKey::new("child"))
        .await
        .expect("child");
    assert_eq!(child.key.limits.len(), 1);
    assert_eq!(child.key.limits[0].limit, per_minute(100));
    let tighter = NewKey::new("tight").limit("tokens", per_minute(10));
    assert!(s.keys.create(&actor, tighter).await.is_ok());
}

#[tokio::test]
async fn a_rolled_key_keeps_its_roles_as_roles_and_its_access_rules() {
    let s = setup(|b| b);
    let ops = admin(&s.keys, "acme").may_manage_roles(true);
    let old = s
        .keys
        .create(
            &ops,
            NewKey::new("helpdesk")
                .roles(["support"])
                .allowed_ips(list("10.0.0.0/8")),
        )
        .await
        .expect("created");
    let rolled = s
        .keys
        .roll(&ops, &old.key.id, Duration::zero())
        .await
        .expect("rolled");
    assert_eq!(rolled.key.roles, ["support"]);
    assert_eq!(rolled.key.allowed_ips, Some(list("10.0.0.0/8")));
    s.keys
        .set_role(&ops, "support", ["contacts:read"])
        .await
        .expect("narrowed");
    let v = s
        .keys
        .verify_with(rolled.token.expose_secret(), from("10.0.0.1"))
        .await
        .expect("verifies");
    assert!(
        v.require("tickets:write").is_err(),
        "the role's old grant was copied"
    );
    assert!(v.require("contacts:read").is_ok());
}

#[tokio::test]
async fn only_an_operator_sets_roles_and_a_ceiling_bounds_what_roles_grant() {
    let s = setup(|b| {
        let ceiling = catalog().parse_set(["contacts:*"]).expect("set");
        b.tenant_policy("capped", TenantPolicy::new().permission_ceiling(ceiling))
    });
    let manager = admin(&s.keys, "acme");
    let err = s
        .keys
        .set_role(&manager, "support", ["contacts:read"])
        .await
        .expect_err("not an operator");
    assert!(matches!(err, KeyError::Forbidden { .. }), "{err:?}");
    // A key actor is never an operator, whatever it asks.
    let k = s
        .keys
        .create(
            &manager,
            NewKey::new("k").permission_set(s.keys.catalog().all()),
        )
        .await
        .expect("k");
    let v = s
        .keys
        .verify(k.token.expose_secret())
        .await
        .expect("verifies");
    let key_actor = v.actor().may_manage_keys(true).may_manage_roles(true);
    assert!(s
        .keys
        .set_role(&key_actor, "support", ["contacts:read"])
        .await
        .is_err());
    // The capped tenant's key holds a role within the ceiling; the role
    // widens later: the key still holds no more than the ceiling.
    let ops = admin(&s.keys, "capped").may_manage_roles(true);
    s.keys
        .set_role(&ops, "helper", ["contacts:read"])
        .await
        .expect("defined");
    let capped = s
        .keys
        .create(&ops, NewKey::new("c").roles(["helper"]))
        .await
        .expect("within");
    s.keys
        .set_role(&ops, "helper", ["contacts:read", "admin:write"])
        .await
        .expect("widened");
    let v = s
        .keys
        .verify(capped.token.expose_secret())
        .await
        .expect("verifies");
    assert!(v.require("contacts:read").is_ok());
    assert!(
        v.require("admin:write").is_err(),
        "above the tenant's ceiling"
    );
}

#[tokio::test]
async fn roll_and_reactivate_obey_a_policy_tightened_since() {
    let store = CountingStore::default();
    let clock = ManualClock::default();
    let build = |policy: Option<TenantPolicy>| {
        let b = Keyward::builder(store.clone(), catalog()).clock(clock.clone());
        match policy {
            Some(p) => b.tenant_policy("acme", p),
            None => b,
        }
        .build()
        .expect("config")
    };
    let before = build(None);
    let ops = admin(&before, "acme");
    let a = before.create(&ops, NewKey::new("a")).await.expect("a");
    let b = before.create(&ops, NewKey::new("b")).await.expect("b");
    before.revoke(&ops, &b.key.id).await.expect("revoked");
    let after = build(Some(TenantPolicy::new().require_ip_allowlist()));
    let err = after
        .roll(&ops, &a.key.id, Duration::hours(1))
        .await
        .expect_err("no allowlist");
    assert_eq!(policy_rule(err).1, PolicyRule::IpAllowlistRequired);
    let err = after
        .reactivate(&ops, &b.key.id)
        .await
        .expect_err("no allowlist");
    assert_eq!(policy_rule(err).1, PolicyRule::IpAllowlistRequired);
    // A rename of a key made before the policy still works, and a revoke.
    assert!(after.rename(&ops, &a.key.id, "renamed").await.is_ok());
    assert!(after.revoke(&ops, &a.key.id).await.is_ok());
}

#[tokio::test]
async fn a_key_that_starts_later_is_not_idle_before_it_starts() {
    let s = setup(|b| b);
    let start = s.clock.now() + Duration::days(100);
    let t = issue(&s.keys, NewKey::new("later").not_before(start)).await;
    s.clock.advance(Duration::days(100));
    // 100 days after creation, past the 90-day inactivity period, but
    // only just valid: it works, and the sweep keeps it.
    assert_eq!(code(s.keys.verify(&t).await), "ok");
    let report = s.keys.sweep().await.expect("sweep");
    assert!(report.deleted.is_empty(), "{report:?}");
}

// Findings of the second review: each fails on the code before its fix.

#[tokio::test]
async fn retuning_a_named_limit_does_not_give_back_what_was_spent() {
    let s = setup(|b| b);
    let parent = manager_key(
        &s.keys,
        NewKey::new("customer").limit("tokens", RateLimit::per_minute(10).expect("valid")),
    )
    .await;
    let t = parent.token.expose_secret();
    let spend = |n| VerifyRequest::new().cost(n);
    let v = s.keys.verify_with(t, spend(10)).await.expect("all ten");
    assert_eq!(
        code(s.keys.verify_with(t, spend(1)).await),
        "limit_exceeded"
    );
    // Barely tighter, so the key may set it on itself.
    let barely = RateLimit::new(10, Duration::milliseconds(60_001)).expect("valid");
    let actor = v.actor().may_manage_keys(true);
    s.keys
        .update(
            &actor,
            &parent.key.id,
            KeyUpdate::new().limits([NamedLimit::new("tokens", barely).expect("name")]),
        )
        .await
        .expect("tightened");
    assert_eq!(
        code(s.keys.verify_with(t, spend(1)).await),
        "limit_exceeded",
        "the spent tokens stay spent"
    );
}

#[test]
fn a_local_limiter_keeps_limits_a_call_does_not_charge() {
    use keyward::{Charge, KeyId, LocalLimiter, NamedDecision};
    let clock = ManualClock::default();
    let limiter = LocalLimiter::new(Arc::new(clock));
    let key = KeyId::random().expect("OS randomness");
    let one = RateLimit::per_minute(1).expect("valid");
    let charge = |name| {
        let c = [Charge::new(name, one, 1)];
        limiter.check_named_now(key, &c)
    };
    assert_eq!(charge("search"), NamedDecision::Allow);
    assert_eq!(charge("export"), NamedDecision::Allow);
    // Alternating never resets the other: both are spent.
    assert!(matches!(charge("search"), NamedDecision::Deny { .. }));
    assert!(matches!(charge("export"), NamedDecision::Deny { .. }));
}

#[tokio::test]
async fn a_roll_carries_what_the_key_spent_of_its_limits() {
    let s = setup(|b| b);
    let per_minute = |n| RateLimit::per_minute(n).expect("valid");
    let old = manager_key(
        &s.keys,
        NewKey::new("busy")
            .rate_limit(per_minute(2))
            .limit("tokens", RateLimit::per_hour(10).expect("valid")),
    )
    .await;
    let t = old.token.expose_secret();
    s.keys
        .verify_with(t, VerifyRequest::new().cost(10))
        .await
        .expect("first");
    s.keys.verify(t).await.expect_err("tokens spent");
    // The key rolls itself: its successor has spent what it had.
    let v = s
        .keys
        .verify_with(t, VerifyRequest::new().cost(0))
        .await
        .expect("cost 0");
    let actor = v.actor().may_manage_keys(true);
    let rolled = s
        .keys
        .roll(&actor, &old.key.id, Duration::hours(1))
        .await
        .expect("rolled");
    let next = rolled.token.expose_secret();
    assert_eq!(
        code(s.keys.verify(next).await),
        "rate_limited",
        "two requests a minute, spent"
    );
    s.clock.advance(Duration::seconds(30));
    assert_eq!(
        code(s.keys.verify(next).await),
        "limit_exceeded",
        "the tokens spent stay spent"
    );
}
