//! `RedisLimiter` on its own, against a throwaway Redis: the same
//! decisions as the built-in GCRA, bounded Redis memory, leases given
//! back, settings and errors.

mod common;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::redis_server::RedisServer;
use keyward::{
    Accuracy, Bucket, Decision, KeyId, LimiterClock, LocalLimiter, ManualClock, RateLimit,
    RateLimiter, RedisLimiter, RedisLimiterError,
};
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

fn at(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().expect("in range")
}

const T0: i64 = 1_800_000_000_000_000;

/// Batched mode with leases of `lease`.
fn batched(lease: u32) -> Accuracy {
    Accuracy::Batched {
        lease: NonZeroU32::new(lease).expect("non-zero"),
    }
}

/// Settings for tests about what Redis decides, not about timeouts: a
/// loaded machine must not turn a late answer into a local decision.
///
/// The tests name their times (`at(T0 + …)`): the limiter decides by
/// them, not by Redis's clock.
fn patient() -> keyward::RedisLimiterBuilder {
    RedisLimiter::builder()
        .clock(LimiterClock::Instance)
        .timeout(StdDuration::from_secs(1))
        .retry_every(StdDuration::from_secs(1))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Request by request, the shared limiter (exact) decides as the
    /// built-in one does, retry times included (to the microsecond).
    #[test]
    fn decides_like_the_local_limiter(
        max in 1u32..20,
        per_ms in 1u64..3_000,
        gaps_us in proptest::collection::vec(0i64..400_000, 1..120),
    ) {
        let Some(redis) = RedisServer::start() else { return Ok(()) };
        let rt = runtime();
        // Whole microseconds per request, as the script counts them.
        let per_ms = per_ms.max(u64::from(max));
        let per_ms = per_ms - per_ms % u64::from(max);
        let limit = RateLimit::new(max, Duration::milliseconds(per_ms as i64)).expect("valid");
        let shared = rt
            .block_on(RedisLimiter::builder()
                    .clock(LimiterClock::Instance)
                    .timeout(StdDuration::from_secs(2))
                    .retry_every(StdDuration::from_secs(2))
                    .connect(&redis.url()))
            .expect("connect");
        let clock = ManualClock::new(at(T0));
        let local = LocalLimiter::new(Arc::new(clock.clone()));
        let id = KeyId::random().expect("entropy");
        let mut now = T0;
        for gap in gaps_us {
            now += gap;
            clock.set(at(now));
            let theirs = local.check_now(Bucket::Key(id), limit);
            let ours = rt.block_on(shared.check(Bucket::Key(id), limit, at(now)));
            prop_assert_eq!(ours, theirs, "at +{} µs", now - T0);
        }
        prop_assert!(shared.is_shared());
    }
}

#[test]
fn buckets_expire_from_redis_once_refilled() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rt = runtime();
    let shared = rt
        .block_on(patient().namespace("t1").connect(&redis.url()))
        .expect("connect");
    let limit = RateLimit::new(10, Duration::seconds(10)).expect("valid");
    let now = Utc::now();
    for t in ["a", "b", "c"] {
        let d = rt.block_on(shared.check(Bucket::Tenant(t), limit, now));
        assert_eq!(d, Decision::Allow);
    }
    assert!(shared.is_shared());
    let keys = redis.command("KEYS t1:*");
    assert_eq!(keys.matches("t1:q:10/10000:").count(), 3, "{keys}");
    // One request refills in 1 s: the keys live that long.
    let ttl = redis.command("PTTL t1:q:10/10000:a");
    let ms: i64 = ttl.trim().trim_start_matches(':').parse().expect("integer");
    assert!((500..=1_000).contains(&ms), "{ttl}");
    std::thread::sleep(StdDuration::from_millis(1_100));
    // (EXISTS sees an expired key as gone even before Redis reclaims it.)
    let left = redis.command("EXISTS t1:q:10/10000:a t1:q:10/10000:b t1:q:10/10000:c");
    assert_eq!(left, ":0");
}

#[test]
fn namespaces_keep_limits_apart() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rt = runtime();
    let limit = RateLimit::per_minute(1).expect("valid");
    let a = rt
        .block_on(patient().namespace("a").connect(&redis.url()))
        .expect("connect");
    let b = rt
        .block_on(patient().namespace("b").connect(&redis.url()))
        .expect("connect");
    let now = at(T0);
    let bucket = Bucket::Tenant("acme");
    assert_eq!(rt.block_on(a.check(bucket, limit, now)), Decision::Allow);
    assert!(matches!(
        rt.block_on(a.check(bucket, limit, now)),
        Decision::Deny { .. }
    ));
    assert_eq!(rt.block_on(b.check(bucket, limit, now)), Decision::Allow);
}

#[test]
fn a_slow_key_in_batched_mode_gets_its_whole_limit() {
    // 10 a minute, leased 5 at a time, used once every 7 s: each lease
    // expires with 4 unspent, which go back with the next call. Kept,
    // they would cost 30 s of refill per request.
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rt = runtime();
    let shared = rt
        .block_on(
            patient()
                .accuracy(batched(5))
                .lease_ttl(StdDuration::from_secs(1))
                .connect(&redis.url()),
        )
        .expect("connect");
    let limit = RateLimit::per_minute(10).expect("valid");
    let id = KeyId::random().expect("entropy");
    for i in 0..30 {
        let now = at(T0 + i * 7_000_000);
        let d = match shared.try_check(Bucket::Key(id), limit, now) {
            Some(d) => d,
            None => rt.block_on(shared.check(Bucket::Key(id), limit, now)),
        };
        assert_eq!(d, Decision::Allow, "request {i}");
    }
    assert!(shared.is_shared(), "every decision was Redis's");
}

#[test]
fn a_lease_is_handed_out_without_redis_and_then_refused_locally() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rt = runtime();
    let shared = rt
        .block_on(patient().accuracy(batched(4)).connect(&redis.url()))
        .expect("connect");
    let limit = RateLimit::per_minute(6).expect("valid");
    let now = at(T0);
    let bucket = Bucket::Tenant("acme");
    assert_eq!(
        shared.try_check(bucket, limit, now),
        None,
        "nothing leased yet"
    );
    assert_eq!(
        rt.block_on(shared.check(bucket, limit, now)),
        Decision::Allow
    );
    let calls = redis.calls("evalsha");
    for _ in 0..3 {
        assert_eq!(shared.try_check(bucket, limit, now), Some(Decision::Allow));
    }
    assert_eq!(shared.try_check(bucket, limit, now), None, "lease spent");
    assert_eq!(
        rt.block_on(shared.check(bucket, limit, now)),
        Decision::Allow
    );
    assert_eq!(
        rt.block_on(shared.check(bucket, limit, now)),
        Decision::Allow
    );
    // The 7th is refused by Redis, then locally until its retry time.
    for _ in 0..2 {
        assert_eq!(shared.try_check(bucket, limit, now), None);
    }
    let refused = rt.block_on(shared.check(bucket, limit, now));
    assert_eq!(
        refused,
        Decision::Deny {
            retry_after: Duration::seconds(10)
        }
    );
    assert_eq!(shared.try_check(bucket, limit, now), Some(refused));
    assert_eq!(
        redis.calls("evalsha") - calls,
        1 + 1,
        "one lease, one refusal"
    );
    assert!(shared.is_shared());
}

#[test]
fn bad_settings_and_unreachable_servers_are_errors() {
    let rt = runtime();
    let err = rt
        .block_on(RedisLimiter::connect("http://127.0.0.1:1"))
        .expect_err("not redis");
    assert!(matches!(err, RedisLimiterError::InvalidUrl(_)), "{err}");
    let err = rt
        .block_on(
            RedisLimiter::builder()
                .namespace("")
                .connect("redis://127.0.0.1:1"),
        )
        .expect_err("empty namespace");
    assert!(matches!(err, RedisLimiterError::Config(_)), "{err}");
    let err = rt
        .block_on(
            RedisLimiter::builder()
                .timeout(StdDuration::ZERO)
                .connect("redis://127.0.0.1:1"),
        )
        .expect_err("zero timeout");
    assert!(matches!(err, RedisLimiterError::Config(_)), "{err}");
    // A closed port: refused within the connect timeout.
    let port = common::free_port();
    let start = std::time::Instant::now();
    let err = rt
        .block_on(
            RedisLimiter::builder()
                .connect_timeout(StdDuration::from_millis(500))
                .connect(&format!("redis://127.0.0.1:{port}")),
        )
        .expect_err("nothing listens");
    assert!(matches!(err, RedisLimiterError::Connect(_)), "{err}");
    assert!(start.elapsed() < StdDuration::from_secs(3));
}

#[test]
fn no_error_or_debug_output_shows_the_password() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rt = runtime();
    let secret = "hunter2-very-secret";
    let url = format!("redis://user:{secret}@127.0.0.1:{}", redis.port());
    // The server has no such user: AUTH fails.
    let err = rt
        .block_on(RedisLimiter::connect(&url))
        .expect_err("auth fails");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(secret), "{shown}");
    let err = rt
        .block_on(RedisLimiter::connect(&format!("redis://:{secret}@[::1")))
        .expect_err("broken URL");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(secret), "{shown}");
    let ok = rt
        .block_on(RedisLimiter::connect(&redis.url()))
        .expect("connect");
    assert!(!format!("{ok:?}").contains("127.0.0.1"), "{ok:?}");
}

#[test]
fn exact_mode_repeats_a_refusal_without_asking_redis_again() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rt = runtime();
    let shared = rt
        .block_on(patient().connect(&redis.url()))
        .expect("connect");
    let limit = RateLimit::per_minute(1).expect("valid");
    let bucket = Bucket::Tenant("acme");
    let now = at(T0);
    let calls = redis.calls("evalsha");
    assert_eq!(
        rt.block_on(shared.check(bucket, limit, now)),
        Decision::Allow
    );
    let refused = rt.block_on(shared.check(bucket, limit, now));
    assert!(matches!(refused, Decision::Deny { .. }));
    for i in 0..1_000 {
        let later = at(T0 + i * 1_000);
        let d = shared
            .try_check(bucket, limit, later)
            .unwrap_or_else(|| rt.block_on(shared.check(bucket, limit, later)));
        assert!(matches!(d, Decision::Deny { .. }), "{i}: {d:?}");
    }
    assert_eq!(redis.calls("evalsha") - calls, 2, "one allow, one refusal");
    // Once the wait is over, Redis is asked again.
    let after = at(T0 + 60_000_000);
    assert_eq!(shared.try_check(bucket, limit, after), None);
    assert_eq!(
        rt.block_on(shared.check(bucket, limit, after)),
        Decision::Allow
    );
    assert!(shared.is_shared());
}

#[test]
fn a_returned_lease_gives_back_only_what_is_still_ahead() {
    // 1,000 a second. A leases 100 at 0 ms and spends 1; B leases 1,000
    // at 150 ms (the bucket is at 1,150 ms). At 1,000 ms, A's lease has
    // expired, and its 99 unspent requests (1–100 ms) have long refilled:
    // giving them back would let 99 more through than the limit.
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rt = runtime();
    let lease = |n| {
        patient()
            .accuracy(batched(n))
            .lease_ttl(StdDuration::from_millis(900))
    };
    let url = redis.url();
    let a = rt.block_on(lease(100).connect(&url)).expect("connect");
    let b = rt.block_on(lease(1_000).connect(&url)).expect("connect");
    let exact = rt
        .block_on(patient().connect(&redis.url()))
        .expect("connect");
    let limit = RateLimit::per_second(1_000).expect("valid");
    let bucket = Bucket::Tenant("acme");
    assert_eq!(rt.block_on(a.check(bucket, limit, at(T0))), Decision::Allow);
    assert_eq!(
        rt.block_on(b.check(bucket, limit, at(T0 + 150_000))),
        Decision::Allow
    );
    let now = at(T0 + 1_000_000);
    // A's next request gives its lease back and leases 100 more.
    assert_eq!(rt.block_on(a.check(bucket, limit, now)), Decision::Allow);
    let mut more = 100;
    while rt.block_on(exact.check(bucket, limit, now)) == Decision::Allow {
        more += 1;
    }
    // At 1,000 ms the bucket (at 1,150 ms, 999 ms of tolerance) has room
    // for 850.
    assert_eq!(more, 850);
    assert!(a.is_shared() && b.is_shared() && exact.is_shared());
}

/// A TCP proxy to Redis whose connections can be made to go silent: they
/// stay open but nothing crosses them any more, as when a peer vanishes
/// from the network (no FIN, no RST). New connections work.
struct Proxy {
    port: u16,
    accepted: Arc<AtomicUsize>,
    /// Connections numbered up to this are silent.
    silent_upto: Arc<AtomicUsize>,
    /// How long a new connection waits before anything crosses it (ms).
    delay_ms: Arc<AtomicUsize>,
}

/// Copies `r` to `w` until connection `me` is silenced; then swallows
/// what comes, and never closes.
async fn pipe(me: usize, silent: Arc<AtomicUsize>, mut r: OwnedReadHalf, mut w: OwnedWriteHalf) {
    let mut buf = [0u8; 4096];
    while let Ok(k) = r.read(&mut buf).await {
        if k == 0 {
            break;
        }
        if me <= silent.load(Ordering::SeqCst) {
            continue;
        }
        if w.write_all(&buf[..k]).await.is_err() {
            break;
        }
    }
    std::future::pending::<()>().await;
}

impl Proxy {
    async fn start(to: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let silent_upto = Arc::new(AtomicUsize::new(0));
        let delay_ms = Arc::new(AtomicUsize::new(0));
        let (count, silent, delay) = (accepted.clone(), silent_upto.clone(), delay_ms.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let me = count.fetch_add(1, Ordering::SeqCst) + 1;
                let (silent, delay) = (silent.clone(), delay.load(Ordering::SeqCst));
                tokio::spawn(async move {
                    tokio::time::sleep(StdDuration::from_millis(delay as u64)).await;
                    let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::spawn(pipe(me, silent.clone(), ri, wo));
                    tokio::spawn(pipe(me, silent, ro, wi));
                });
            }
        });
        Self {
            port,
            accepted,
            silent_upto,
            delay_ms,
        }
    }

    /// Silences every connection made so far.
    fn silence_existing(&self) {
        self.silent_upto
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_connection_that_goes_silent_is_replaced() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let proxy = Proxy::start(redis.port()).await;
    let shared = RedisLimiter::connect(&format!("redis://127.0.0.1:{}", proxy.port))
        .await
        .expect("connect");
    let limit = RateLimit::per_minute(1_000).expect("valid");
    let bucket = Bucket::Tenant("acme");
    let now = at(T0);
    assert_eq!(shared.check(bucket, limit, now).await, Decision::Allow);
    proxy.silence_existing();
    // Three timeouts start the outage (decided locally meanwhile).
    for _ in 0..3 {
        assert_eq!(shared.check(bucket, limit, now).await, Decision::Allow);
    }
    assert!(!shared.is_shared(), "three silent calls in a row");
    // The next retry goes over a new connection, which works.
    let start = std::time::Instant::now();
    while !shared.is_shared() {
        assert!(
            start.elapsed() < StdDuration::from_secs(3),
            "still down: the silent connection was kept"
        );
        let _ = shared.check(bucket, limit, now).await;
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    println!(
        "shared again {:?} after the connection went silent",
        start.elapsed()
    );
}

#[tokio::test]
async fn an_outage_ends_even_when_connecting_takes_longer_than_the_timeout() {
    // A retry has 50 ms; a new connection takes 150 ms to answer (TLS, a
    // far zone, a busy host). It is made in the background, so retries
    // find it ready.
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let proxy = Proxy::start(redis.port()).await;
    let shared = RedisLimiter::connect(&format!("redis://127.0.0.1:{}", proxy.port))
        .await
        .expect("connect");
    let limit = RateLimit::per_minute(1_000).expect("valid");
    let bucket = Bucket::Tenant("acme");
    let now = at(T0);
    assert_eq!(shared.check(bucket, limit, now).await, Decision::Allow);
    proxy.delay_ms.store(150, Ordering::SeqCst);
    proxy.silence_existing();
    for _ in 0..3 {
        assert_eq!(shared.check(bucket, limit, now).await, Decision::Allow);
    }
    assert!(!shared.is_shared());
    let start = std::time::Instant::now();
    while !shared.is_shared() {
        assert!(
            start.elapsed() < StdDuration::from_secs(3),
            "never shared again: each retry had to connect within its timeout"
        );
        let _ = shared.check(bucket, limit, now).await;
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    println!("shared again {:?} after connecting slowly", start.elapsed());
}

#[test]
fn one_slow_call_is_decided_alone_and_starts_no_outage() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rt = runtime();
    let shared = rt
        .block_on(RedisLimiter::connect(&redis.url()))
        .expect("connect");
    let limit = RateLimit::per_minute(1_000).expect("valid");
    let bucket = Bucket::Tenant("acme");
    for i in 0..20 {
        let now = at(T0 + i);
        assert_eq!(
            rt.block_on(shared.check(bucket, limit, now)),
            Decision::Allow
        );
    }
    // Redis stalls for 200 ms: the one call made meanwhile times out
    // after 50 ms and is decided locally.
    assert_eq!(redis.command("CLIENT PAUSE 200 ALL"), "+OK");
    let start = std::time::Instant::now();
    let d = rt.block_on(shared.check(bucket, limit, at(T0 + 100)));
    let took = start.elapsed();
    assert_eq!(d, Decision::Allow, "decided locally");
    assert!(
        took >= StdDuration::from_millis(50) && took < StdDuration::from_millis(200),
        "{took:?}: not the timeout"
    );
    assert!(
        shared.is_shared(),
        "one failure among 21 calls is no outage"
    );
    std::thread::sleep(StdDuration::from_millis(200));
    assert_eq!(
        rt.block_on(shared.check(bucket, limit, at(T0 + 200))),
        Decision::Allow
    );
}

#[test]
fn batched_mode_over_admits_by_one_lease_per_instance_at_most() {
    // 30 a minute; three instances leasing 10 at a time, leases kept two
    // minutes. At t0 each takes a lease and spends one request of it: the
    // bucket is spent. A minute later it has refilled, and the leases
    // still hold 9 each: 30 + 3 × 9 pass then, the documented bound
    // (limit + instances × (lease − 1)), and no more.
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rt = runtime();
    let limit = RateLimit::per_minute(30).expect("valid");
    let bucket = Bucket::Tenant("acme");
    let fleet: Vec<RedisLimiter> = (0..3)
        .map(|_| {
            rt.block_on(
                patient()
                    .accuracy(batched(10))
                    .lease_ttl(StdDuration::from_secs(120))
                    .connect(&redis.url()),
            )
            .expect("connect")
        })
        .collect();
    let decide = |l: &RedisLimiter, now| {
        l.try_check(bucket, limit, now)
            .unwrap_or_else(|| rt.block_on(l.check(bucket, limit, now)))
    };
    for l in &fleet {
        assert_eq!(decide(l, at(T0)), Decision::Allow);
    }
    let later = at(T0 + 60_000_000);
    let mut admitted = 0;
    for _ in 0..40 {
        for l in &fleet {
            admitted += usize::from(decide(l, later) == Decision::Allow);
        }
    }
    assert_eq!(admitted, 30 + 3 * 9);
    assert!(fleet.iter().all(RedisLimiter::is_shared));
}

#[tokio::test]
async fn a_limiter_made_while_redis_is_down_shares_once_it_is_up() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    redis.kill();
    let err = RedisLimiter::builder()
        .connect_timeout(StdDuration::from_millis(300))
        .connect(&redis.url())
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, RedisLimiterError::Connect(_)), "{err}");
    let shared = RedisLimiter::builder()
        .connect_lazy(&redis.url())
        .expect("a valid URL is enough");
    let limit = RateLimit::per_minute(2).expect("valid");
    let bucket = Bucket::Tenant("acme");
    let now = at(T0);
    // Decided locally, never unlimited.
    let mut admitted = 0;
    for _ in 0..5 {
        admitted += usize::from(shared.check(bucket, limit, now).await == Decision::Allow);
    }
    assert_eq!(admitted, 2);
    assert!(!shared.is_shared());
    redis.restart();
    let start = std::time::Instant::now();
    while !shared.is_shared() {
        assert!(start.elapsed() < StdDuration::from_secs(3), "never shared");
        let _ = shared.check(bucket, limit, now).await;
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    // Redis counts from here: it had seen nothing of this bucket.
    assert_eq!(
        shared.check(Bucket::Tenant("other"), limit, now).await,
        Decision::Allow
    );
}

#[test]
fn on_redis_clock_an_instance_whose_clock_is_off_changes_nothing() {
    // Two instances, one an hour ahead. On Redis's clock they share one
    // timeline: the one behind waits the limit's own time, not an hour;
    // on the instances' clocks it would wait an hour.
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rt = runtime();
    let limit = RateLimit::per_minute(5).expect("valid");
    let now = Utc::now();
    let ahead = now + Duration::hours(1);
    let url = redis.url();
    for (clock, bucket) in [
        (LimiterClock::Redis, Bucket::Tenant("shared")),
        (LimiterClock::Instance, Bucket::Tenant("skewed")),
    ] {
        let connect = || patient().clock(clock).connect(&url);
        let fast = rt.block_on(connect()).expect("connect");
        let slow = rt.block_on(connect()).expect("connect");
        for _ in 0..5 {
            assert_eq!(
                rt.block_on(fast.check(bucket, limit, ahead)),
                Decision::Allow
            );
        }
        let Decision::Deny { retry_after } = rt.block_on(slow.check(bucket, limit, now)) else {
            panic!("{clock:?}: the bucket is spent");
        };
        match clock {
            LimiterClock::Redis => assert!(retry_after <= Duration::seconds(12), "{retry_after}"),
            _ => assert!(retry_after > Duration::minutes(60), "{retry_after}"),
        }
        assert!(fast.is_shared() && slow.is_shared());
    }
}
