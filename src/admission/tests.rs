//! The order of the decision and every outcome, pinned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::cache::{Cache, Held, Lookup};
use crate::key::{sample_record, KeyRecord};
use crate::limit::{Bucket, Decision, RateLimit, RateLimiter, Stash};
use crate::permission::Catalog;

const NOW: i64 = 1_700_000_000_000_000;

fn record(tenant: &str) -> KeyRecord {
    sample_record(tenant)
}

/// Limits with `quota` for every tenant (and `host` for a limiter), and
/// a cache sharing their stash.
fn limits(quota: Option<RateLimit>, host: Option<Arc<dyn RateLimiter>>) -> (Limits, Cache) {
    let stash = Arc::new(Mutex::new(Stash::for_capacity(16)));
    let cache = Cache::new(16, 16, 1_000_000_000, stash.clone());
    (Limits::new(host, quota, HashMap::new(), stash), cache)
}

/// `record` as a cached entry (so its limiter state lives in the entry).
fn cached(record: &KeyRecord, limits: &Limits, cache: &Cache) -> Held {
    let catalog = Catalog::builder().build().expect("empty catalog");
    let entry = CachedKey::new(record, catalog.none(), limits.tenant(&record.tenant), None);
    cache.invalidate(&record.id);
    let Lookup::Miss(ticket) = cache.get(&record.id, NOW) else {
        panic!("a new key misses")
    };
    cache
        .put(ticket, &record.id, Some(entry), NOW)
        .expect("an entry")
}

fn req(tenant: Option<&str>, idle: Idle) -> Request<'_> {
    Request {
        tenant,
        now_us: NOW,
        idle,
        nested: true,
        client_ip: None,
        costs: Costs::ONE,
    }
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().expect("address")
}

fn code(v: Verdict) -> &'static str {
    match v {
        Verdict::Admit => "admit",
        Verdict::Refuse(e) => e.code(),
        Verdict::Await(Gate::Inactivity) => "await inactivity",
        Verdict::Await(Gate::Limits(_)) => "await limits",
        Verdict::Await(Gate::Credit) => "await credit",
        Verdict::Await(_) => "await other",
    }
}

/// The decision for a request naming no tenant, by a key in use.
fn plain(e: &CachedKey, limits: &Limits) -> &'static str {
    code(admit(e, &req(None, Idle::No), limits, Gate::FIRST))
}

fn per_minute(n: u32) -> RateLimit {
    RateLimit::per_minute(n).expect("valid")
}

#[test]
fn an_active_key_of_the_right_tenant_is_admitted() {
    let (limits, cache) = limits(None, None);
    let e = cached(&record("acme"), &limits, &cache);
    assert_eq!(plain(&e, &limits), "admit");
    assert_eq!(
        code(admit(
            &e,
            &req(Some("acme"), Idle::No),
            &limits,
            Gate::FIRST
        )),
        "admit"
    );
}

#[test]
fn status_comes_first_revoked_before_expired() {
    let (limits, cache) = limits(None, None);
    let mut r = record("acme");
    r.revoked_at = Some(DateTime::UNIX_EPOCH);
    r.expires_at = Some(DateTime::UNIX_EPOCH);
    r.rate_limit = Some(per_minute(1));
    let e = cached(&r, &limits, &cache);
    // Revoked, whatever the tenant, idleness or limits say.
    let wrong = req(Some("globex"), Idle::Yes);
    assert_eq!(
        code(admit(&e, &wrong, &limits, Gate::FIRST)),
        "api_key_revoked"
    );
    r.revoked_at = None;
    let e = cached(&r, &limits, &cache);
    assert_eq!(
        code(admit(&e, &wrong, &limits, Gate::FIRST)),
        "api_key_expired"
    );
}

#[test]
fn the_tenant_comes_before_inactivity_and_limits() {
    let (limits, cache) = limits(Some(per_minute(1)), None);
    let mut r = record("acme");
    r.rate_limit = Some(per_minute(1));
    let e = cached(&r, &limits, &cache);
    let verdict = admit(&e, &req(Some("globex"), Idle::Yes), &limits, Gate::FIRST);
    assert_eq!(code(verdict), "wrong_tenant");
    // Nothing was counted: the one request a minute is still there.
    assert_eq!(plain(&e, &limits), "admit");
}

#[test]
fn a_descendant_is_served_only_with_nested_tenants() {
    let (limits, cache) = limits(None, None);
    let e = cached(&record("agency"), &limits, &cache);
    let mut r = req(Some("agency/loc1"), Idle::No);
    assert_eq!(code(admit(&e, &r, &limits, Gate::FIRST)), "admit");
    r.nested = false;
    assert_eq!(code(admit(&e, &r, &limits, Gate::FIRST)), "wrong_tenant");
    let child = cached(&record("agency/loc1"), &limits, &cache);
    let up = req(Some("agency"), Idle::No);
    assert_eq!(
        code(admit(&child, &up, &limits, Gate::FIRST)),
        "wrong_tenant"
    );
}

#[test]
fn inactivity_comes_before_limits_and_counts_nothing() {
    let (limits, cache) = limits(None, None);
    let mut r = record("acme");
    r.rate_limit = Some(per_minute(1));
    let e = cached(&r, &limits, &cache);
    assert_eq!(
        code(admit(&e, &req(None, Idle::Yes), &limits, Gate::FIRST)),
        "api_key_inactive"
    );
    assert_eq!(
        code(admit(&e, &req(None, Idle::Unsure), &limits, Gate::FIRST)),
        "await inactivity"
    );
    assert_eq!(plain(&e, &limits), "admit");
    assert_eq!(plain(&e, &limits), "rate_limited");
}

#[test]
fn the_key_limit_comes_before_the_quota_which_counts_nothing_refused() {
    let (limits, cache) = limits(Some(per_minute(2)), None);
    let mut r = record("acme");
    r.rate_limit = Some(per_minute(1));
    let e = cached(&r, &limits, &cache);
    assert_eq!(plain(&e, &limits), "admit");
    assert_eq!(plain(&e, &limits), "rate_limited");
    // The quota counted one request only: another key of the tenant gets
    // the second.
    let other = cached(&record("acme"), &limits, &cache);
    assert_eq!(plain(&other, &limits), "admit");
    assert_eq!(plain(&other, &limits), "quota_exceeded");
}

#[test]
fn a_quota_refusal_gives_the_request_back_to_the_key() {
    let (limits, cache) = limits(Some(per_minute(1)), None);
    let mut r = record("acme");
    r.rate_limit = Some(per_minute(1));
    let busy = cached(&record("acme"), &limits, &cache);
    assert_eq!(plain(&busy, &limits), "admit");
    let e = cached(&r, &limits, &cache);
    for _ in 0..3 {
        // Refused by the quota, never by the key's own limit: the key's
        // one request is given back each time.
        assert_eq!(plain(&e, &limits), "quota_exceeded");
    }
}

#[test]
fn the_quota_of_the_tenant_acted_for_counts_too() {
    let (limits, cache) = limits(Some(per_minute(1)), None);
    let parent = cached(&record("agency"), &limits, &cache);
    let child = cached(&record("agency/loc1"), &limits, &cache);
    let for_child = req(Some("agency/loc1"), Idle::No);
    assert_eq!(
        code(admit(&child, &for_child, &limits, Gate::FIRST)),
        "admit"
    );
    // The child tenant's quota is spent: the parent's key acting for it
    // is refused, and its own tenant's quota gets the request back.
    assert_eq!(
        code(admit(&parent, &for_child, &limits, Gate::FIRST)),
        "quota_exceeded"
    );
    assert_eq!(plain(&parent, &limits), "admit");
}

#[test]
fn credits_come_last_after_the_limits_counted() {
    let (limits, cache) = limits(None, None);
    let mut r = record("acme");
    r.rate_limit = Some(per_minute(1));
    r.remaining = Some(5);
    let e = cached(&r, &limits, &cache);
    assert_eq!(plain(&e, &limits), "await credit");
    // Resuming at the credit counts nothing again.
    assert_eq!(
        code(admit(&e, &req(None, Idle::No), &limits, Gate::Credit)),
        "await credit"
    );
    assert_eq!(plain(&e, &limits), "rate_limited");
}

#[test]
fn resuming_at_a_quota_does_not_count_the_key_again() {
    let (limits, cache) = limits(None, None);
    let mut r = record("acme");
    r.rate_limit = Some(per_minute(1));
    let e = cached(&r, &limits, &cache);
    let from = Gate::Limits(Step::OwnQuota);
    for _ in 0..3 {
        assert_eq!(
            code(admit(&e, &req(None, Idle::No), &limits, from)),
            "admit"
        );
    }
    assert_eq!(plain(&e, &limits), "admit");
}

/// A host limiter that answers at once only for keys.
#[derive(Debug, Default)]
struct KeysOnly {
    checked: Mutex<Vec<String>>,
}

#[async_trait]
impl RateLimiter for KeysOnly {
    async fn check(&self, bucket: Bucket<'_>, _: RateLimit, _: DateTime<Utc>) -> Decision {
        self.checked
            .lock()
            .expect("lock")
            .push(format!("{bucket:?}"));
        Decision::Deny {
            retry_after: Duration::seconds(3),
        }
    }

    fn try_check(&self, bucket: Bucket<'_>, _: RateLimit, _: DateTime<Utc>) -> Option<Decision> {
        matches!(bucket, Bucket::Key(_)).then_some(Decision::Allow)
    }
}

#[tokio::test]
async fn a_host_limiter_is_awaited_only_where_it_cannot_answer_at_once() {
    let host = Arc::new(KeysOnly::default());
    let (limits, cache) = limits(Some(per_minute(5)), Some(host.clone()));
    let mut r = record("acme");
    r.rate_limit = Some(per_minute(1));
    let e = cached(&r, &limits, &cache);
    let verdict = admit(&e, &req(None, Idle::No), &limits, Gate::FIRST);
    let Verdict::Await(Gate::Limits(step)) = verdict else {
        panic!("the quota must be awaited, got {}", code(verdict))
    };
    assert_eq!(step, Step::OwnQuota);
    assert!(host.checked.lock().expect("lock").is_empty());
    let counted = limits.count(&e.subject(None, NOW, Costs::ONE), step).await;
    assert_eq!(counted, Err(Refusal::Quota(Duration::seconds(3))));
    assert_eq!(*host.checked.lock().expect("lock"), ["Tenant(\"acme\")"]);
}

#[test]
fn not_before_is_part_of_status_and_counts_nothing() {
    let (limits, cache) = limits(None, None);
    let mut r = record("acme");
    r.not_before = DateTime::from_timestamp_micros(NOW + 1);
    r.rate_limit = Some(per_minute(1));
    let e = cached(&r, &limits, &cache);
    let wrong = req(Some("globex"), Idle::Yes);
    assert_eq!(
        code(admit(&e, &wrong, &limits, Gate::FIRST)),
        "api_key_not_yet_valid"
    );
    // Revoked still comes first.
    r.revoked_at = Some(DateTime::UNIX_EPOCH);
    let revoked = cached(&r, &limits, &cache);
    assert_eq!(plain(&revoked, &limits), "api_key_revoked");
    // From the instant itself, it works; nothing was counted before.
    r.revoked_at = None;
    r.not_before = DateTime::from_timestamp_micros(NOW);
    let e = cached(&r, &limits, &cache);
    assert_eq!(plain(&e, &limits), "admit");
}

#[test]
fn the_address_comes_after_status_and_before_the_tenant() {
    let (limits, cache) = limits(None, None);
    let mut r = record("acme");
    r.allowed_ips = Some("10.0.0.0/8, 2001:db8::/32".parse().expect("list"));
    r.rate_limit = Some(per_minute(1));
    let e = cached(&r, &limits, &cache);
    // No address at all: refused (fails closed).
    assert_eq!(plain(&e, &limits), "ip_not_allowed");
    let at = |addr: &str, tenant| Request {
        client_ip: Some(ip(addr)),
        ..req(tenant, Idle::No)
    };
    // Outside the list, even for the wrong tenant: the address is told first.
    assert_eq!(
        code(admit(
            &e,
            &at("192.0.2.1", Some("globex")),
            &limits,
            Gate::FIRST
        )),
        "ip_not_allowed"
    );
    assert_eq!(
        code(admit(
            &e,
            &at("10.9.9.9", Some("globex")),
            &limits,
            Gate::FIRST
        )),
        "wrong_tenant"
    );
    // Nothing was counted by the refusals: the one request a minute is there.
    assert_eq!(
        code(admit(
            &e,
            &at("::ffff:10.1.2.3", None),
            &limits,
            Gate::FIRST
        )),
        "admit"
    );
    r.revoked_at = Some(DateTime::UNIX_EPOCH);
    let revoked = cached(&r, &limits, &cache);
    assert_eq!(
        code(admit(
            &revoked,
            &at("192.0.2.1", None),
            &limits,
            Gate::FIRST
        )),
        "api_key_revoked"
    );
}

#[test]
fn named_limits_charge_the_cost_all_or_nothing_and_quotas_give_back() {
    let (limits, cache) = limits(Some(per_minute(3)), None);
    let mut r = record("acme");
    r.limits = vec![
        crate::limit::NamedLimit::new("requests", per_minute(10)).expect("name"),
        crate::limit::NamedLimit::new("tokens", per_minute(100)).expect("name"),
    ];
    let e = cached(&r, &limits, &cache);
    let costly = |cost| Request {
        costs: Costs {
            cost: 1,
            by_name: &[],
            one: Some(("tokens", cost)),
        },
        ..req(None, Idle::No)
    };
    assert_eq!(code(admit(&e, &costly(90), &limits, Gate::FIRST)), "admit");
    // 10 tokens left: 11 is refused, and `requests` is not charged for it.
    assert_eq!(
        code(admit(&e, &costly(11), &limits, Gate::FIRST)),
        "limit_exceeded"
    );
    assert_eq!(code(admit(&e, &costly(5), &limits, Gate::FIRST)), "admit");
    assert_eq!(code(admit(&e, &costly(5), &limits, Gate::FIRST)), "admit");
    // The tenant's quota of 3 refuses the fourth request: the 0 tokens it
    // would take are given back, as is its request.
    assert_eq!(
        code(admit(&e, &costly(0), &limits, Gate::FIRST)),
        "quota_exceeded"
    );
}
