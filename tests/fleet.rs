//! A fleet behaves as one: several `Keyward` instances, each with its own
//! pool and its own `RedisLimiter`, on one throwaway PostgreSQL and one
//! throwaway Redis. Shared key limits and tenant quotas (exact and
//! batched), exact credits, one bootstrap key, and Redis outages.

mod common;

use std::num::NonZeroU32;
use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use common::pg::PgServer;
use common::redis_server::RedisServer;
use common::{admin, capture_logs, catalog};
use keyward::{
    Accuracy, Actor, AuditAction, AuditOutcome, Keyward, KeywardBuilder, LimiterClock, ManualClock,
    MemoryAuditSink, NewKey, OnOutage, PostgresStore, RateLimit, RedisLimiter, RedisLimiterBuilder,
    SystemClock, VerifyError,
};

/// Both servers, or `None` to skip (never under `CI=true`).
fn servers() -> Option<(PgServer, RedisServer)> {
    Some((PgServer::start()?, RedisServer::start()?))
}

/// Instances on one database and one Redis.
struct Fleet {
    keys: Vec<Keyward>,
    /// Each instance's limiter, as it was given to it.
    limiters: Vec<RedisLimiter>,
    /// The instances' clock (frozen unless a test moves it).
    clock: ManualClock,
    audit: MemoryAuditSink,
}

/// Limiter settings for tests that count what Redis decides: on the
/// instances' (frozen) clock, and patient, so that a loaded CI machine
/// cannot make a call late enough to be decided locally.
fn counting() -> RedisLimiterBuilder {
    RedisLimiter::builder()
        .clock(LimiterClock::Instance)
        .timeout(StdDuration::from_secs(1))
        .retry_every(StdDuration::from_secs(1))
}

/// `n` instances on one database and one Redis, each with its own store
/// (pool) and limiter (connection, from `limiter`), sharing one clock
/// and one audit trail; `configure` adjusts each builder.
async fn fleet(
    pg: &str,
    redis: &str,
    n: usize,
    limiter: impl Fn() -> RedisLimiterBuilder,
    configure: impl Fn(KeywardBuilder) -> KeywardBuilder,
) -> Fleet {
    let clock = ManualClock::default();
    let audit = MemoryAuditSink::default();
    let mut keys = Vec::new();
    let mut limiters = Vec::new();
    for _ in 0..n {
        let store = PostgresStore::connect(pg).await.expect("connect postgres");
        let shared = limiter().connect(redis).await.expect("connect redis");
        limiters.push(shared.clone());
        let b = Keyward::builder(store, catalog())
            .clock(clock.clone())
            .audit(audit.clone())
            .rate_limiter(shared);
        keys.push(configure(b).build().expect("config"));
    }
    Fleet {
        keys,
        limiters,
        clock,
        audit,
    }
}

/// Sends `total` verifications, round-robin over `instances` and
/// `tokens`, 50 at a time; how many were admitted, and every refusal.
async fn spread(
    instances: &[Keyward],
    tokens: &[String],
    total: usize,
) -> (usize, Vec<VerifyError>) {
    let mut admitted = 0;
    let mut refused = Vec::new();
    let mut sent = 0;
    while sent < total {
        let mut wave = Vec::new();
        for i in sent..total.min(sent + 50) {
            let keys = instances[i % instances.len()].clone();
            let token = tokens[i % tokens.len()].clone();
            wave.push(tokio::spawn(async move {
                keys.verify(&token).await.map(|_| ())
            }));
        }
        sent += wave.len();
        for t in wave {
            match t.await.expect("no panic") {
                Ok(()) => admitted += 1,
                Err(e) => refused.push(e),
            }
        }
    }
    (admitted, refused)
}

/// No outage happened: every decision was Redis's.
fn no_outage(audit: &MemoryAuditSink) {
    let outages = audit
        .events()
        .into_iter()
        .filter(|e| e.action == AuditAction::LimiterOutage)
        .count();
    assert_eq!(
        outages, 0,
        "Redis was taken to be down: the count is not the fleet's"
    );
}

fn per_minute(n: u32) -> RateLimit {
    RateLimit::per_minute(n).expect("valid")
}

fn batched(lease: u32) -> Accuracy {
    Accuracy::Batched {
        lease: NonZeroU32::new(lease).expect("non-zero"),
    }
}

/// A key of `tenant` limited to `limit`, created on `keys`.
async fn key(keys: &Keyward, tenant: &str, limit: Option<RateLimit>) -> String {
    let mut new = NewKey::new("integration").permissions(["contacts:read"]);
    if let Some(l) = limit {
        new = new.rate_limit(l);
    }
    let issued = keys
        .create(&admin(keys, tenant), new)
        .await
        .expect("create");
    issued.token.expose_secret().to_string()
}

/// Every refusal is the limit's own (nothing else went wrong).
fn all_limited(refused: &[VerifyError], quota: bool) {
    for e in refused {
        let ok = if quota {
            matches!(e, VerifyError::QuotaExceeded { .. })
        } else {
            matches!(e, VerifyError::RateLimited { .. })
        };
        assert!(ok, "unexpected refusal: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_key_limit_exactly() {
    let Some((pg, redis)) = servers() else { return };
    let Fleet { keys, audit, .. } = fleet(&pg.url(), &redis.url(), 3, counting, |b| b).await;
    let token = key(&keys[0], "acme", Some(per_minute(200))).await;
    let start = Instant::now();
    let (admitted, refused) = spread(&keys, &[token], 1_000).await;
    println!(
        "exact, key limit 200/min: {admitted} of 1000 admitted in {:?}",
        start.elapsed()
    );
    no_outage(&audit);
    assert_eq!(admitted, 200);
    all_limited(&refused, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_real_clock_exact_mode_admits_the_limit_plus_what_refilled() {
    let Some((pg, redis)) = servers() else { return };
    // The system clock, and Redis's (the default) for the limiter.
    let limiter = || counting().clock(LimiterClock::Redis);
    let Fleet { keys, audit, .. } = fleet(&pg.url(), &redis.url(), 3, limiter, |b| {
        b.clock(SystemClock)
    })
    .await;
    let token = key(&keys[0], "acme", Some(per_minute(200))).await;
    let start = Instant::now();
    let (admitted, refused) = spread(&keys, &[token], 1_000).await;
    let elapsed = start.elapsed();
    // 200 at once, then one every 300 ms.
    let refilled = usize::try_from(elapsed.as_millis() / 300).expect("small") + 1;
    println!("exact, system clock: {admitted} of 1000 admitted in {elapsed:?}");
    no_outage(&audit);
    assert!(admitted >= 200, "{admitted}");
    assert!(admitted <= 200 + refilled, "{admitted} > 200 + {refilled}");
    all_limited(&refused, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_mode_over_admits_by_at_most_one_lease_per_instance() {
    let Some((pg, redis)) = servers() else { return };
    let lease = 10;
    let limiter = || counting().accuracy(batched(lease));
    let Fleet { keys, audit, .. } = fleet(&pg.url(), &redis.url(), 3, limiter, |b| b).await;
    let token = key(&keys[0], "acme", Some(per_minute(200))).await;
    let calls_before = redis.calls("evalsha");
    let (admitted, refused) = spread(&keys, &[token], 1_000).await;
    let calls = redis.calls("evalsha") - calls_before;
    println!("batched (lease {lease}), key limit 200/min: {admitted} of 1000 admitted, {calls} script calls");
    no_outage(&audit);
    let bound = 200 + 3 * (lease as usize - 1);
    assert!(admitted <= bound, "{admitted} > {bound}");
    // Leases are spent before new ones are taken: at most a lease each
    // is left unspent at the end.
    assert!(admitted >= 200 - 3 * (lease as usize - 1), "{admitted}");
    // At most one call per lease, plus one refusal per instance (then
    // repeated locally, the clock being frozen).
    assert!(
        calls <= 200 / u64::from(lease) + 3 + 3 + 3,
        "{calls} script calls"
    );
    all_limited(&refused, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_quota_is_shared_by_the_fleet() {
    let Some((pg, redis)) = servers() else { return };
    let quota = |b: KeywardBuilder| {
        b.tenant_quota(per_minute(200))
            .tenant_quota_for("small", per_minute(20))
    };
    for accuracy in [Accuracy::Exact, batched(10)] {
        let limiter = || {
            counting()
                .accuracy(accuracy)
                .namespace(format!("{accuracy:?}"))
        };
        let Fleet { keys, audit, .. } = fleet(&pg.url(), &redis.url(), 3, limiter, quota).await;
        let tenant = format!("acme{}", u8::from(accuracy != Accuracy::Exact));
        let mut tokens = Vec::new();
        for _ in 0..3 {
            tokens.push(key(&keys[0], &tenant, None).await);
        }
        let (admitted, refused) = spread(&keys, &tokens, 1_000).await;
        println!("{accuracy:?}, tenant quota 200/min over 3 keys: {admitted} of 1000 admitted");
        no_outage(&audit);
        match accuracy {
            Accuracy::Exact => assert_eq!(admitted, 200),
            _ => assert!((200 - 27..=200 + 27).contains(&admitted), "{admitted}"),
        }
        all_limited(&refused, true);
        // A per-tenant override is applied the same way fleet-wide.
        let small = key(&keys[1], "small", None).await;
        let (admitted, refused) = spread(&keys, &[small], 100).await;
        println!("{accuracy:?}, tenant_quota_for 20/min: {admitted} of 100 admitted");
        match accuracy {
            Accuracy::Exact => assert_eq!(admitted, 20),
            _ => assert!((20 - 18..=20 + 27).contains(&admitted), "{admitted}"),
        }
        all_limited(&refused, true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_changed_on_one_instance_applies_on_all() {
    let Some((pg, redis)) = servers() else { return };
    let Fleet { keys, clock, .. } = fleet(&pg.url(), &redis.url(), 3, counting, |b| b).await;
    let token = key(&keys[0], "acme", Some(per_minute(200))).await;
    // Every instance has the key cached, with its first limit.
    for k in &keys {
        k.verify(&token).await.expect("admitted");
    }
    let id = keys[0]
        .token_format()
        .parse(&token)
        .expect("our token")
        .id();
    keys[0]
        .set_rate_limit(&admin(&keys[0], "acme"), &id, Some(per_minute(5)))
        .await
        .expect("set");
    // The change reaches the other caches through the change feed.
    let start = Instant::now();
    let mut seen = false;
    while start.elapsed() < StdDuration::from_secs(5) {
        let (admitted, _) = spread(&keys[1..], std::slice::from_ref(&token), 40).await;
        if admitted <= 5 {
            seen = true;
            break;
        }
        clock.advance(Duration::minutes(2));
    }
    assert!(seen, "the new limit did not reach the other instances");
    clock.advance(Duration::minutes(2));
    let (admitted, refused) = spread(&keys, &[token], 100).await;
    assert_eq!(admitted, 5, "the new limit, fleet-wide");
    all_limited(&refused, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_reaches_a_cached_key_on_another_instance() {
    let Some((pg, redis)) = servers() else { return };
    let Fleet { keys, .. } = fleet(&pg.url(), &redis.url(), 2, counting, |b| b).await;
    let ops = admin(&keys[0], "acme").may_manage_roles(true);
    keys[0]
        .set_role(&ops, "support", ["contacts:read"])
        .await
        .expect("defined");
    let issued = keys[0]
        .create(&ops, NewKey::new("helpdesk").roles(["support"]))
        .await
        .expect("create");
    let token = issued.token.expose_secret().to_string();
    // Cached on the other instance, with the role as it was.
    let v = keys[1].verify(&token).await.expect("admitted");
    assert!(v.require("contacts:read").is_ok() && v.require("contacts:write").is_err());
    keys[0]
        .set_role(&ops, "support", ["contacts:write", "leads:read"])
        .await
        .expect("redefined");
    // The change feed tells the other instance; nothing waits for a TTL.
    let start = Instant::now();
    let mut seen = false;
    while start.elapsed() < StdDuration::from_secs(5) {
        let v = keys[1].verify(&token).await.expect("admitted");
        if v.require("contacts:write").is_ok() {
            assert!(v.require("leads:read").is_ok());
            seen = true;
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    println!(
        "role change seen on the other instance after {:?}",
        start.elapsed()
    );
    assert!(
        seen,
        "the role change did not reach the other instance's cache"
    );
    let roles = keys[1].roles().await.expect("roles");
    assert!(roles
        .iter()
        .any(|(n, p)| n == "support" && p.names().any(|x| x == "leads:read")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_limits_are_all_or_nothing_across_the_fleet() {
    let Some((pg, redis)) = servers() else { return };
    let Fleet { keys, audit, .. } = fleet(&pg.url(), &redis.url(), 3, counting, |b| b).await;
    let issued = keys[0]
        .create(
            &admin(&keys[0], "acme"),
            NewKey::new("llm")
                .limit("requests", per_minute(40))
                .limit("tokens", per_minute(1_000)),
        )
        .await
        .expect("create");
    let token = issued.token.expose_secret().to_string();
    // 150 requests of 30 tokens race over three instances: 33 fit.
    let mut tasks = Vec::new();
    for i in 0..150 {
        let k = keys[i % 3].clone();
        let t = token.clone();
        tasks.push(tokio::spawn(async move {
            let req = keyward::VerifyRequest::new().limit_cost("tokens", 30);
            k.verify_with(&t, req).await.map(|_| ())
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        match t.await.expect("no panic") {
            Ok(()) => admitted += 1,
            Err(e) => assert!(
                matches!(e, VerifyError::LimitExceeded { ref limit, .. } if &**limit == "tokens"),
                "{e:?}"
            ),
        }
    }
    no_outage(&audit);
    assert_eq!(admitted, 33, "exactly what the tokens allow, fleet-wide");
    // The refused were charged nothing: 7 one-token requests still fit
    // the requests limit (33 + 7 = 40), then none.
    let light = keyward::VerifyRequest::new().limit_cost("tokens", 1);
    for i in 0..7 {
        let r = keys[i % 3].verify_with(&token, light).await;
        assert!(r.is_ok(), "request {i}: {r:?}");
    }
    let over = keys[1].verify_with(&token, light).await;
    assert!(
        matches!(over, Err(VerifyError::LimitExceeded { ref limit, .. }) if &**limit == "requests"),
        "{over:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_stay_exact_across_three_instances() {
    let Some((pg, redis)) = servers() else { return };
    let Fleet { keys, .. } = fleet(&pg.url(), &redis.url(), 3, counting, |b| b).await;
    let issued = keys[0]
        .create(
            &admin(&keys[0], "acme"),
            NewKey::new("metered")
                .permissions(["contacts:read"])
                .remaining(100),
        )
        .await
        .expect("create");
    let token = issued.token.expose_secret().to_string();
    let (admitted, refused) = spread(&keys, &[token], 300).await;
    println!("credits: {admitted} of 300 admitted with 100 uses");
    assert_eq!(admitted, 100);
    for e in &refused {
        assert!(matches!(e, VerifyError::UsageExceeded), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_create_one_bootstrap_key() {
    let Some(pg) = PgServer::start() else {
        return;
    };
    let mut keys = Vec::new();
    for _ in 0..4 {
        let store = PostgresStore::connect(&pg.url()).await.expect("connect");
        keys.push(Keyward::builder(store, catalog()).build().expect("config"));
    }
    let tasks: Vec<_> = keys
        .iter()
        .cloned()
        .map(|k| {
            tokio::spawn(async move {
                let setup = Actor::new("bootstrap", "default")
                    .permissions(k.catalog().all())
                    .may_manage_keys(true);
                let new = NewKey::new("admin").permission_set(k.catalog().all());
                k.bootstrap(&setup, new).await.expect("bootstrap")
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        created += usize::from(t.await.expect("no panic").is_some());
    }
    assert_eq!(created, 1);
    let listed = keys[0]
        .list(&admin(&keys[0], "default"), "default")
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
}

/// A fleet of two whose Redis dies mid-run and comes back.
struct Outage {
    redis: RedisServer,
    _pg: PgServer,
    keys: Vec<Keyward>,
    token: String,
    /// Another key, for finding out when Redis is back.
    probe: String,
    audit: MemoryAuditSink,
    limiters: Vec<RedisLimiter>,
}

async fn outage(policy: OnOutage) -> Option<Outage> {
    let (pg, redis) = servers()?;
    // A late answer before the kill would be decided locally and blur
    // the counts: 200 ms, still short of the one second within which
    // sharing must resume.
    let limiter = || {
        RedisLimiter::builder()
            .clock(LimiterClock::Instance)
            .on_outage(policy)
            .timeout(StdDuration::from_millis(200))
    };
    let Fleet {
        keys,
        limiters,
        audit,
        ..
    } = fleet(&pg.url(), &redis.url(), 2, limiter, |b| b).await;
    let token = key(&keys[0], "acme", Some(per_minute(50))).await;
    let probe = key(&keys[0], "acme", Some(per_minute(1_000))).await;
    Some(Outage {
        redis,
        _pg: pg,
        keys,
        token,
        probe,
        audit,
        limiters,
    })
}

impl Outage {
    fn events(&self, action: AuditAction) -> Vec<AuditOutcome> {
        self.audit
            .events()
            .into_iter()
            .filter(|e| e.action == action)
            .map(|e| e.outcome)
            .collect()
    }

    /// Verifies round-robin until every limiter shares again; how long
    /// that took after Redis answered again.
    async fn until_shared(&mut self) -> StdDuration {
        self.redis.restart();
        let start = Instant::now();
        while !self.limiters.iter().all(RedisLimiter::is_shared) {
            assert!(
                start.elapsed() < StdDuration::from_secs(5),
                "never shared again"
            );
            for k in &self.keys {
                let _ = k.verify(&self.probe).await;
            }
            tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
        start.elapsed()
    }
}

#[tokio::test]
async fn when_redis_dies_limits_fall_back_to_each_instance_then_are_shared_again() {
    let (logs, _guard) = capture_logs(tracing::Level::INFO);
    let Some(mut o) = outage(OnOutage::FallBackToLocal).await else {
        return;
    };
    let (admitted, _) = spread(&o.keys, std::slice::from_ref(&o.token), 28).await;
    assert_eq!(admitted, 28, "shared, within the limit");
    // One more on each, in turn: the first last hears of 29 spent, the
    // second of 30.
    for k in &o.keys {
        k.verify(&o.token).await.expect("within the limit");
    }
    o.redis.kill();
    // Each instance counts alone now, from the state Redis last gave it:
    // the limit still holds per instance, never none at all, and does
    // not start afresh (which would admit 100).
    let (admitted, refused) = spread(&o.keys, std::slice::from_ref(&o.token), 300).await;
    println!("fallback: {admitted} of 300 admitted by 2 instances with Redis down");
    assert_eq!(admitted, 21 + 20, "what each instance knew was left");
    all_limited(&refused, false);
    assert!(o.limiters.iter().all(|l| !l.is_shared()));
    assert_eq!(
        o.events(AuditAction::LimiterOutage),
        vec![AuditOutcome::Failed("limiter_unavailable"); 2],
        "one event per instance and outage"
    );
    let warned = logs.text().matches("Redis unavailable;").count();
    assert_eq!(
        warned,
        2,
        "logged once per instance and outage:\n{}",
        logs.text()
    );
    let took = o.until_shared().await;
    println!("shared again {took:?} after Redis restarted");
    assert!(took < StdDuration::from_secs(1), "{took:?}");
    assert_eq!(o.events(AuditAction::LimiterRecovered).len(), 2);
    // Redis restarted empty: 50 more, counted across the fleet again.
    let (admitted, _) = spread(&o.keys, std::slice::from_ref(&o.token), 200).await;
    assert_eq!(admitted, 50);
}

#[tokio::test]
async fn fail_closed_admits_nothing_while_redis_is_down() {
    let Some(mut o) = outage(OnOutage::Refuse).await else {
        return;
    };
    let (admitted, _) = spread(&o.keys, std::slice::from_ref(&o.token), 10).await;
    assert_eq!(admitted, 10);
    o.redis.kill();
    let (admitted, refused) = spread(&o.keys, std::slice::from_ref(&o.token), 200).await;
    assert_eq!(admitted, 0, "fail closed");
    for e in &refused {
        assert!(matches!(e, VerifyError::LimiterUnavailable), "{e:?}");
    }
    let took = o.until_shared().await;
    println!("fail-closed: admitting again {took:?} after Redis restarted");
    assert!(took < StdDuration::from_secs(1), "{took:?}");
    o.keys[0].verify(&o.token).await.expect("admitted again");
    assert!(o.limiters.iter().all(RedisLimiter::is_shared));
}
