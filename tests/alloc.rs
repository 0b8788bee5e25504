//! The hot path allocates nothing: a counting global allocator watches
//! `Keyward::verify` of a cached, valid key with every per-request feature
//! on (rate limit, tenant quota, last-used tracking, the default audit
//! sink, a tenant check), on the system clock.

#![allow(unsafe_code)] // the counting allocator only

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

mod common;

use chrono::{DateTime, Utc};
use common::admin;
use common::forge::{same_id_other_secret, unknown_token};
use keyward::{
    Bucket, Catalog, Decision, IpAllowlist, Keyward, MemoryStore, NewKey, RateLimit, RateLimiter,
    VerifyError, VerifyRequest,
};

/// Counts allocations made on threads that asked to be watched, so other
/// test threads do not disturb the count.
struct Counting;

thread_local! {
    static WATCHED: Cell<bool> = const { Cell::new(false) };
    /// Allocations of this thread while watched: per thread, so that a
    /// test that expects allocations does not show them to another
    /// running at the same time.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the thread-local may be gone while a thread exits.
    if WATCHED.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: defers every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's layout, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: as given by the caller, who allocated `ptr` here.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: allocated by this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocations made on this thread while `f` runs.
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    WATCHED.with(|w| w.set(true));
    let out = f();
    WATCHED.with(|w| w.set(false));
    (ALLOCATIONS.with(Cell::get) - before, out)
}

/// Polls a future that never waits to completion, on this thread.
fn run<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A `Keyward` with every per-request feature on, and the token of one
/// key of tenant `acme` that may read contacts.
fn keyward_and_token() -> (Keyward, String) {
    let catalog = Catalog::builder()
        .resource("contacts", ["read", "write"])
        .build()
        .expect("catalog");
    let keys = Keyward::builder(MemoryStore::new(), catalog)
        .rate_limit(RateLimit::per_second(1_000_000).expect("valid"))
        .tenant_quota(RateLimit::per_second(1_000_000).expect("valid"))
        .build()
        .expect("config");
    let new = NewKey::new("zapier").permissions(["contacts:read"]);
    let issued = run(keys.create(&admin(&keys, "acme"), new)).expect("created");
    let token = issued.token.expose_secret().to_string();
    (keys, token)
}

#[test]
fn verifying_a_cached_key_allocates_nothing() {
    let (keys, token) = keyward_and_token();
    let read = keys.catalog().parse("contacts:read").expect("known");
    // Permission expressions, compiled once, checked per request.
    let rule = keys
        .catalog()
        .expression("contacts:read and (contacts:write or contacts:read)")
        .expect("compiles");
    let stricter = keys
        .catalog()
        .require_all(["contacts:*"])
        .expect("compiles");
    // Warm up: the first verify reads the store and fills the cache, notes
    // the first use, and sets up this thread's state in the cache's
    // reclamation scheme.
    for _ in 0..3 {
        run(keys.verify(&token)).expect("valid");
    }

    let (count, ok) = allocations(|| {
        let mut ok = 0;
        for _ in 0..10_000 {
            let v = run(keys.verify(&token)).expect("valid");
            ok += usize::from(
                v.allows(read)
                    && v.tenant() == "acme"
                    && v.satisfies(&rule)
                    && !v.satisfies(&stricter),
            );
            let v = run(keys.verify_for_tenant(&token, "acme")).expect("valid");
            ok += usize::from(v.display_prefix().as_str().starts_with("sk_"));
        }
        ok
    });
    assert_eq!(ok, 20_000, "every verify succeeded");
    assert_eq!(count, 0, "allocations on the hot path");
}

#[test]
fn a_cached_verify_with_an_allowlist_an_expression_and_a_cost_allocates_nothing() {
    let (keys, _) = keyward_and_token();
    let per_second = |n| RateLimit::per_second(n).expect("valid");
    // Ten networks, the client's in the last; two named limits charged
    // the request's cost.
    let nets: Vec<String> = (0..9)
        .map(|i| format!("10.{i}.0.0/16"))
        .chain(["2001:db8::/32".to_string()])
        .collect();
    let new = NewKey::new("llm")
        .permissions(["contacts:read"])
        .allowed_ips(IpAllowlist::new(&nets).expect("allowlist"))
        .limit("requests", per_second(1_000_000))
        .limit("tokens", per_second(4_000_000));
    let issued = run(keys.create(&admin(&keys, "acme"), new)).expect("created");
    let token = issued.token.expose_secret().to_string();
    let rule = keys
        .catalog()
        .expression("contacts:read and (contacts:write or contacts:read)")
        .expect("compiles");
    let client: std::net::IpAddr = "2001:db8::42".parse().expect("address");
    let outside: std::net::IpAddr = "192.0.2.1".parse().expect("address");
    let costs = [("requests", 1)];
    let req = VerifyRequest::new()
        .tenant("acme")
        .client_ip(client)
        .cost(3)
        .limit_costs(&costs);
    for _ in 0..3 {
        run(keys.verify_with(&token, req)).expect("valid");
    }
    let (count, ok) = allocations(|| {
        let mut ok = 0;
        for _ in 0..10_000 {
            let v = run(keys.verify_with(&token, req)).expect("valid");
            ok += usize::from(v.satisfies(&rule));
            let refused = run(keys.verify_with(&token, req.client_ip(outside)));
            ok += usize::from(matches!(refused, Err(VerifyError::IpNotAllowed)));
        }
        ok
    });
    assert_eq!(ok, 20_000, "every verify decided as expected");
    assert_eq!(count, 0, "allocations on the hot path");
}

#[test]
fn the_counter_sees_allocations() {
    // The test above can fail: an allocation on the watched thread counts.
    let (count, v) = allocations(|| vec![1u8; 16]);
    assert_eq!(v.len(), 16);
    assert_eq!(count, 1);
}

#[test]
fn refusing_bad_tokens_allocates_nothing_either() {
    let (keys, token) = keyward_and_token();
    run(keys.verify(&token)).expect("valid");
    let garbage = "sk_not-a-token";
    let bad_checksum = "sk_AAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
    // Well-formed, with a correct checksum: an id nobody has, and the
    // cached key's id with another secret.
    let unknown = unknown_token(42);
    let wrong_secret = same_id_other_secret(&token);
    // Warm up: the unknown id is read from the store once, then remembered.
    for _ in 0..3 {
        assert!(matches!(
            run(keys.verify(&unknown)),
            Err(VerifyError::Invalid)
        ));
    }
    let (count, ()) = allocations(|| {
        for _ in 0..10_000 {
            assert!(matches!(
                run(keys.verify(garbage)),
                Err(VerifyError::Malformed)
            ));
            assert!(matches!(
                run(keys.verify(bad_checksum)),
                Err(VerifyError::Malformed)
            ));
            assert!(matches!(
                run(keys.verify(&unknown)),
                Err(VerifyError::Invalid)
            ));
            assert!(matches!(
                run(keys.verify(&wrong_secret)),
                Err(VerifyError::Invalid)
            ));
        }
    });
    assert_eq!(count, 0, "allocations refusing bad tokens");
}

/// A host's limiter that answers every limit at once when `at_once`, and
/// otherwise only when awaited; it counts what it is asked and refuses
/// nothing.
#[derive(Debug, Default)]
struct HostLimiter {
    at_once: bool,
    asked: AtomicUsize,
}

#[async_trait::async_trait]
impl RateLimiter for HostLimiter {
    async fn check(&self, _: Bucket<'_>, _: RateLimit, _: DateTime<Utc>) -> Decision {
        self.asked.fetch_add(1, Ordering::Relaxed);
        Decision::Allow
    }

    fn try_check(&self, _: Bucket<'_>, _: RateLimit, _: DateTime<Utc>) -> Option<Decision> {
        self.at_once.then(|| {
            self.asked.fetch_add(1, Ordering::Relaxed);
            Decision::Allow
        })
    }
}

/// Allocations of 1,000 verifies of one cached key over `limiter`, and
/// how many limits it was asked.
fn verifies_over(limiter: HostLimiter) -> (usize, usize) {
    let limiter = std::sync::Arc::new(limiter);
    let catalog = Catalog::builder().resource("contacts", ["read"]).build();
    let keys = Keyward::builder(MemoryStore::new(), catalog.expect("catalog"))
        .rate_limit(RateLimit::per_second(1_000_000).expect("valid"))
        .tenant_quota(RateLimit::per_second(1_000_000).expect("valid"))
        .rate_limiter(SharedLimiter(limiter.clone()))
        .build()
        .expect("config");
    let issued = run(keys.create(&admin(&keys, "acme"), NewKey::new("ci"))).expect("created");
    let token = issued.token.expose_secret();
    for _ in 0..3 {
        run(keys.verify(token)).expect("valid");
    }
    let before = limiter.asked.load(Ordering::Relaxed);
    let (count, ()) = allocations(|| {
        for _ in 0..1_000 {
            run(keys.verify(token)).expect("valid");
        }
    });
    (count, limiter.asked.load(Ordering::Relaxed) - before)
}

/// Lets the test keep a handle on the limiter it gives away.
#[derive(Debug)]
struct SharedLimiter(std::sync::Arc<HostLimiter>);

#[async_trait::async_trait]
impl RateLimiter for SharedLimiter {
    async fn check(&self, b: Bucket<'_>, l: RateLimit, now: DateTime<Utc>) -> Decision {
        self.0.check(b, l, now).await
    }

    fn try_check(&self, b: Bucket<'_>, l: RateLimit, now: DateTime<Utc>) -> Option<Decision> {
        self.0.try_check(b, l, now)
    }
}

#[test]
fn a_host_limiter_that_answers_at_once_keeps_verify_allocation_free() {
    let (count, asked) = verifies_over(HostLimiter {
        at_once: true,
        ..HostLimiter::default()
    });
    assert_eq!(
        asked, 2_000,
        "the key's limit and its tenant's quota, each time"
    );
    assert_eq!(
        count, 0,
        "allocations with a host limiter that answers at once"
    );
    // One that must be awaited takes the slow path, which allocates: the
    // test above would see it.
    let (count, asked) = verifies_over(HostLimiter::default());
    assert_eq!(asked, 2_000);
    assert!(
        count >= 1_000,
        "an awaited limiter boxes the rest of the verify"
    );
}

/// With limits shared through Redis in batched mode, verifies answered
/// from the instance's lease allocate nothing either: only the call that
/// takes a new lease goes through the client (and allocates).
#[cfg(feature = "redis")]
#[test]
fn a_redis_lease_keeps_verify_allocation_free() {
    use keyward::{Accuracy, RedisLimiter};
    let Some(redis) = common::redis_server::RedisServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let limiter = rt
        .block_on(
            RedisLimiter::builder()
                .accuracy(Accuracy::Batched {
                    lease: std::num::NonZeroU32::new(100_000).expect("non-zero"),
                })
                .lease_ttl(std::time::Duration::from_secs(600))
                .timeout(std::time::Duration::from_secs(1))
                .retry_every(std::time::Duration::from_secs(1))
                .connect(&redis.url()),
        )
        .expect("connect");
    let handle = limiter.clone();
    let catalog = Catalog::builder().resource("contacts", ["read"]).build();
    let keys = Keyward::builder(MemoryStore::new(), catalog.expect("catalog"))
        .rate_limit(RateLimit::per_second(1_000_000).expect("valid"))
        .tenant_quota(RateLimit::per_second(1_000_000).expect("valid"))
        .rate_limiter(limiter)
        .build()
        .expect("config");
    let issued = run(keys.create(&admin(&keys, "acme"), NewKey::new("ci"))).expect("created");
    let token = issued.token.expose_secret();
    // The first verifies take a lease of the key's limit and one of the
    // tenant's quota, over Redis.
    for _ in 0..3 {
        rt.block_on(keys.verify(token)).expect("valid");
    }
    let (count, ()) = allocations(|| {
        for _ in 0..1_000 {
            run(keys.verify(token)).expect("valid");
        }
    });
    assert_eq!(count, 0, "allocations on a lease");
    // The leases came from Redis: no outage made these local decisions.
    assert!(handle.is_shared());
    assert_eq!(
        redis.calls("evalsha"),
        2,
        "one lease for the key, one for the tenant"
    );
}

/// The HTTP layers add to a request only the verified key in its
/// extensions: no boxed future, no clone of a service or of the layer's
/// settings, when the key is cached and the gates decide at once.
#[cfg(feature = "axum")]
#[test]
fn the_http_layers_allocate_only_the_keys_place_in_the_request() {
    use axum::body::Body;
    use http::Request;
    use keyward::http::{require, KeywardLayer};
    use tower::{Layer, Service};

    let (keys, token) = keyward_and_token();
    let handler = tower::service_fn(|_req: Request<()>| {
        std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(
            Body::empty(),
        )))
    });
    let guard = require(keys.catalog(), "contacts:read").expect("known");
    let mut protected = KeywardLayer::new(keys.clone()).layer(guard.layer(handler));
    let mut bare = handler;
    let requests = |n: usize| -> Vec<Request<()>> {
        (0..n)
            .map(|_| {
                Request::builder()
                    .header("x-api-key", token.as_str())
                    .body(())
                    .expect("request")
            })
            .collect()
    };
    let serve = |svc: &mut dyn FnMut(Request<()>) -> u16, reqs: Vec<Request<()>>| {
        allocations(|| {
            reqs.into_iter()
                .map(|r| usize::from(svc(r) == 200))
                .sum::<usize>()
        })
    };
    // Warm up: the first verify fills the cache.
    for req in requests(3) {
        assert_eq!(run(protected.call(req)).expect("served").status(), 200);
    }

    const N: usize = 1_000;
    let (with_layers, ok) = serve(
        &mut |r| run(protected.call(r)).expect("served").status().as_u16(),
        requests(N),
    );
    assert_eq!(ok, N, "every request admitted");
    let (without, ok) = serve(
        &mut |r| run(bare.call(r)).expect("served").status().as_u16(),
        requests(N),
    );
    assert_eq!(ok, N);
    // `http::Extensions` boxes its map, allocates the map's table and
    // boxes the value: three, for the key.
    assert!(
        with_layers <= without + 3 * N,
        "{with_layers} allocations with the layers, {without} without, for {N} requests"
    );
}
