//! A cached verify with limits shared through Redis, beside the built-in
//! limiter and the bare Redis round trip, in one run.
//!
//! `cargo bench --bench fleet --features redis`. Redis is a throwaway
//! `redis-server` on a random loopback port (as in the tests). Groups:
//! - `fleet/verify/{local,redis_exact,redis_batched}`: a hot key (in the
//!   verification cache, in-memory store) with a rate limit, counted by
//!   the built-in limiter, by `RedisLimiter` in exact mode (one script
//!   call per verify), and in batched mode (leases of 100);
//! - `fleet/redis/{ping,script,script_instance_clock}`: the bare round
//!   trip (`PING` on the same kind of connection) and one limiter
//!   decision (the script call), on Redis's clock and on the instance's.
//!
//! The limiters keep their defaults but a 1 s timeout and retry interval
//! (not 50 and 250 ms): a slow answer must not be timed as a local
//! decision, and the bench asserts that no outage began.
//!
//! After the run, the ratios to `fleet/verify/local` and to the `PING`
//! round trip are printed from criterion's estimates, with the CPU model.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::Criterion;
use keyward::{
    Accuracy, Actor, Bucket, Catalog, KeyId, Keyward, LimiterClock, MemoryStore, NewKey, NoAudit,
    RateLimit, RateLimiter, RedisLimiter,
};

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
#[path = "support/estimates.rs"]
mod estimates;
#[path = "support/timing.rs"]
mod timing;

fn catalog() -> Catalog {
    Catalog::builder()
        .resource("contacts", ["read", "write"])
        .build()
        .expect("valid catalog")
}

/// A limit no bench run reaches: a million a second, bursts of a billion.
fn roomy() -> RateLimit {
    RateLimit::new(1_000_000_000, chrono::Duration::seconds(1000)).expect("valid")
}

/// An instance counting limits with `limiter` (or the built-in one), and
/// a token of a key it has cached.
async fn instance(limiter: Option<RedisLimiter>) -> (Keyward, String) {
    let mut b = Keyward::builder(MemoryStore::new(), catalog()).audit(NoAudit);
    if let Some(l) = limiter {
        b = b.rate_limiter(l);
    }
    let keys = b.build().expect("valid config");
    let admin = Actor::new("admin", "acme")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let issued = keys
        .create(
            &admin,
            NewKey::new("bench")
                .permissions(["contacts:read"])
                .rate_limit(roomy()),
        )
        .await
        .expect("created");
    let token = issued.token.expose_secret().to_string();
    keys.verify(&token).await.expect("valid");
    (keys, token)
}

/// Prints the ratios of this run, from criterion's estimates.
fn report() {
    println!(
        "\nratios (criterion's estimates, this run, {}):",
        estimates::cpu_model()
    );
    let local = estimates::estimate_ns("fleet_verify/local");
    let ping = estimates::estimate_ns("fleet_redis/ping");
    for name in ["local", "redis_exact", "redis_batched"] {
        if let (Some(t), Some(base), Some(ping)) = (
            estimates::estimate_ns(&format!("fleet_verify/{name}")),
            local,
            ping,
        ) {
            println!(
                "  verify {name:<14} {t:>9.0} ns = {:>7.1}x local = {:.3} PING round trips",
                t / base,
                t / ping
            );
        }
    }
    if let (Some(t), Some(ping)) = (
        estimates::estimate_ns("fleet_redis/script_instance_clock"),
        ping,
    ) {
        println!(
            "  script, instance clock {t:>9.0} ns = {:.2}x a PING round trip",
            t / ping
        );
    }
    if let (Some(script), Some(ping)) = (estimates::estimate_ns("fleet_redis/script"), ping) {
        println!(
            "  script call    {script:>9.0} ns = {:.2}x a PING round trip ({ping:.0} ns)",
            script / ping
        );
    }
}

fn main() {
    estimates::begin();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = common::redis_server::RedisServer::start().expect("redis-server is needed");
    let url = server.url();
    // Patient: a slow answer must not be timed as a local decision.
    let patient = || {
        RedisLimiter::builder()
            .timeout(Duration::from_secs(1))
            .retry_every(Duration::from_secs(1))
    };
    let exact = rt.block_on(patient().connect(&url)).expect("Redis");
    let exact_instance_clock = rt
        .block_on(patient().clock(LimiterClock::Instance).connect(&url))
        .expect("Redis");
    let batched = rt
        .block_on(
            patient()
                .accuracy(Accuracy::Batched {
                    lease: NonZeroU32::new(100).expect("non-zero"),
                })
                .connect(&url),
        )
        .expect("Redis");
    let (local, local_token) = rt.block_on(instance(None));
    let (shared, shared_token) = rt.block_on(instance(Some(exact.clone())));
    let (leased, leased_token) = rt.block_on(instance(Some(batched.clone())));
    let mut conn = rt
        .block_on(async {
            let client = redis::Client::open(url.as_str())?;
            redis::aio::ConnectionManager::new(client).await
        })
        .expect("Redis");
    let id = KeyId::random().expect("entropy");

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    {
        let mut g = c.benchmark_group("fleet/verify");
        timing::bench_verify(&mut g, &rt, "local", &local, &local_token);
        timing::bench_verify(&mut g, &rt, "redis_exact", &shared, &shared_token);
        timing::bench_verify(&mut g, &rt, "redis_batched", &leased, &leased_token);
        g.finish();
    }
    {
        let mut g = c.benchmark_group("fleet/redis");
        let conn = &mut conn;
        let ping = async || {
            let mut c = conn.clone();
            let pong: String = redis::cmd("PING").query_async(&mut c).await.expect("PONG");
            black_box(pong);
        };
        timing::bench_async(&mut g, &rt, "ping", ping);
        let script = async || {
            let now = chrono::Utc::now();
            black_box(exact.check(Bucket::Key(id), roomy(), now).await);
        };
        timing::bench_async(&mut g, &rt, "script", script);
        let instance_clock = async || {
            let now = chrono::Utc::now();
            black_box(
                exact_instance_clock
                    .check(Bucket::Key(id), roomy(), now)
                    .await,
            );
        };
        timing::bench_async(&mut g, &rt, "script_instance_clock", instance_clock);
        g.finish();
    }
    c.final_summary();
    // Every figure above is of Redis deciding, not of a fallback.
    assert!(
        exact.is_shared() && batched.is_shared(),
        "Redis was taken to be down during the run"
    );
    report();
    drop(server);
}
