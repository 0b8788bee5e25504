//! Verification throughput, against the bare minimum and a peer, in one run.
//!
//! `cargo bench --bench verify --features tokio` runs every group, then prints each target's
//! ratio from criterion's estimates and writes them, with the figures the
//! plot needs, to `target/criterion/keyward-verify.json`
//! (`scripts/bench-plot` draws `docs/verify-throughput.svg` from it).
//! `KEYWARD_BENCH_QUICK=1` skips the 1,000,000-key sizes. A run that
//! leaves any row unmeasured (a filter, or the quick sizes) writes
//! `keyward-verify-partial.json` instead, and leaves the full run's file
//! as it was.
//!
//! Groups:
//! - `valid/{keyward,ideal}/{1k,10k,100k,1M}`: a valid key, picked in a
//!   fixed random order among all stored keys. `keyward` is the full
//!   `Keyward::verify` on default settings (in-memory store, a rate limit
//!   on every key, last-used tracking, the default audit sink, the cache's
//!   default time limits, entries past them read again in the
//!   background); `ideal` is the bare chain written out below, without
//!   the checksum (an accepted key need not pay for it).
//! - `defaults/{keyward,no_stale}/{1k,1M}`: as `valid/keyward`, measured
//!   once every entry is past its 10 s time limit at once (the worst
//!   case: every verify queues a background read); `no_stale` turns the
//!   stale answers off, so each such verify reads the store first.
//! - `valid/peer`: `prefixed-api-key` 0.3 parse and hash check of one key.
//! - `reject/{accept,wrong_secret,unknown_id,malformed,malformed_checksum,
//!   malformed_typo}`: 1,000 keys stored, one token repeated;
//!   `reject/floor` is the harness alone (a ready future, polled).
//! - `access/{none,allowlist10,named2_cost}`: a cached key verified with
//!   a client address (`Keyward::verify_with`): without an allowlist, with
//!   one of 10 networks (the client's matched last), and with two named
//!   limits charged a cost of 3.
//! - `threads/{one,two}/{different,same}`: one iteration is one verify
//!   per thread, so throughput(two) / throughput(one) = 2 × t(one) / t(two);
//!   `threads/ideal_{one,two}/same`: the ideal chain alike, on one key.

#![allow(unsafe_code)] // the counting allocator only

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::Criterion;
use keyward::{
    Actor, Catalog, Clock, IpAllowlist, Keyward, MemoryStore, NewKey, Permission, RateLimit,
    SystemClock, VerifyRequest,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[path = "support/estimates.rs"]
mod estimates;
#[path = "../tests/common/forge.rs"]
mod forge;

/// Live heap bytes (requested sizes), for bytes per cached key.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers to the system allocator; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: allocated above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as given by the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Polls a future that never waits (the in-memory store never does) to
/// completion without a runtime, so the figures are keyward's alone.
fn run<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A rate limit every key has and no bench reaches: the check runs, it
/// never refuses.
fn unreachable_limit() -> RateLimit {
    RateLimit::per_second(u32::MAX).expect("valid")
}

fn catalog() -> Catalog {
    Catalog::builder()
        .resource("contacts", ["read", "write"])
        .resource("users", ["read"])
        .build()
        .expect("valid catalog")
}

struct Setup {
    keys: Keyward,
    tokens: Vec<String>,
    read: Permission,
}

fn setup(n: usize) -> Setup {
    // The in-memory store reports every change to the cache, so the time
    // limit is only a fallback: at its longest, no entry is re-read while
    // a bench runs.
    setup_with(n, |b| b.cache_ttl(chrono::Duration::days(1)))
}

/// `n` keys, with the cache settings `configure` gives (capacity aside).
fn setup_with(
    n: usize,
    configure: impl FnOnce(keyward::KeywardBuilder) -> keyward::KeywardBuilder,
) -> Setup {
    let keys =
        configure(Keyward::builder(MemoryStore::new(), catalog()).rate_limit(unreachable_limit()))
            .cache_capacity(n.max(1_000))
            .build()
            .expect("valid config");
    let admin = Actor::new("admin", "acme")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let tokens = (0..n)
        .map(|i| {
            let k = run(keys.create(
                &admin,
                NewKey::new(format!("key {i}")).permissions(["contacts:write"]),
            ))
            .expect("created");
            k.token.expose_secret().to_string()
        })
        .collect();
    let read = keys.catalog().parse("contacts:read").expect("known");
    Setup { keys, tokens, read }
}

/// Verifies every token once, as a cold start does: past the read budget
/// and before the ids known to exist have loaded (in the background, on
/// the runtime's worker), a verify answers `Store` (503, try again), and
/// is tried again a millisecond later, as a client would.
fn fill(keys: &Keyward, tokens: &[String]) {
    for t in tokens {
        loop {
            match run(keys.verify(t)) {
                Ok(_) => break,
                Err(keyward::VerifyError::Store(_)) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("a valid key refused: {e}"),
            }
        }
    }
}

/// A fixed pseudo-random visiting order of `n` indices (xorshift), so both
/// sides of a comparison see the same sequence.
fn order(n: usize) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

// ---------------------------------------------------------------------
// The ideal chain: what any verify must do, and nothing else.

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static BASE62: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 62 {
        t[ALPHABET[i] as usize] = true;
        i += 1;
    }
    t
};

/// A governor clock reading the same coarse clock keyward reads.
#[derive(Clone, Copy, Default)]
struct Coarse;

impl governor::clock::Clock for Coarse {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_micros(SystemClock.now_micros() as u64)
    }
}

type Direct = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    Coarse,
    governor::middleware::NoOpMiddleware<Duration>,
>;

struct IdealKey {
    hash: [u8; 32],
    expires_us: i64,
    permissions: u64,
    limiter: Direct,
}

/// Multiplicative hashing of the id word: ids are random.
#[derive(Default)]
struct Fast(u64);

impl Hasher for Fast {
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type IdealMap = HashMap<u64, IdealKey, BuildHasherDefault<Fast>>;

fn ideal_map(tokens: &[String]) -> IdealMap {
    let quota = governor::Quota::per_second(std::num::NonZeroU32::MAX);
    tokens
        .iter()
        .map(|t| {
            let id = u64::from_le_bytes(t.as_bytes()[3..11].try_into().expect("8 bytes"));
            let key = IdealKey {
                hash: Sha256::digest(t.as_bytes()).into(),
                expires_us: i64::MAX,
                permissions: 0b11,
                limiter: governor::RateLimiter::direct_with_clock(quota, Coarse),
            };
            (id, key)
        })
        .collect()
}

/// Parse, hash, look up, compare, check expiry and a permission bit, count
/// one request.
#[inline(never)]
fn ideal_verify(map: &IdealMap, token: &str, bit: u64) -> bool {
    let t = token.as_bytes();
    if t.len() != 44 || &t[..3] != b"sk_" || t[11] != b'_' {
        return false;
    }
    if !t[3..11].iter().chain(&t[12..]).all(|&b| BASE62[b as usize]) {
        return false;
    }
    let id = u64::from_le_bytes(t[3..11].try_into().unwrap_or_default());
    let hash: [u8; 32] = Sha256::digest(t).into();
    let Some(key) = map.get(&id) else {
        return false;
    };
    let mut diff = 0u64;
    for (a, b) in key.hash.chunks_exact(8).zip(hash.chunks_exact(8)) {
        diff |= u64::from_le_bytes(a.try_into().unwrap_or_default())
            ^ u64::from_le_bytes(b.try_into().unwrap_or_default());
    }
    if !bool::from(diff.ct_eq(&0)) {
        return false;
    }
    SystemClock.now_micros() < key.expires_us
        && key.permissions & bit != 0
        && key.limiter.check().is_ok()
}

// ---------------------------------------------------------------------

/// `KEYWARD_BENCH_QUICK` is set: the 1,000,000-key sizes are skipped.
fn quick() -> bool {
    std::env::var_os("KEYWARD_BENCH_QUICK").is_some()
}

fn sizes() -> Vec<(&'static str, usize)> {
    let mut v = vec![("1k", 1_000), ("10k", 10_000), ("100k", 100_000)];
    if !quick() {
        v.push(("1M", 1_000_000));
    }
    v
}

/// Live bytes per cached key, measured while filling the cache.
#[derive(Default)]
struct Memory {
    keys: usize,
    per_key: f64,
    name_bytes: f64,
}

/// A runtime with one worker, entered by the bench thread, which runs the
/// background work of the default settings (refreshes, the known ids) on
/// the other core.
fn background_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn bench_sizes(c: &mut Criterion, memory: &mut Memory) {
    // Default settings: an entry older than 10 s answers while a worker
    // of this runtime reads it again (the larger sizes run long enough).
    let runtime = background_runtime();
    let _inside = runtime.enter();
    let mut g = c.benchmark_group("valid");
    for (label, n) in sizes() {
        let s = setup_with(n, |b| b);
        let order = order(n);
        // Fill the cache and measure what it holds per key: the last-used
        // writes are flushed first so that only the cache remains.
        run(s.keys.flush_last_used()).expect("flush");
        let before = LIVE.load(Ordering::SeqCst);
        fill(&s.keys, &s.tokens);
        run(s.keys.flush_last_used()).expect("flush");
        let after = LIVE.load(Ordering::SeqCst);
        assert_eq!(s.keys.cache_stats().keys, n, "all cached");
        if n >= memory.keys {
            let names: usize = (0..n).map(|i| format!("key {i}").len()).sum();
            *memory = Memory {
                keys: n,
                per_key: (after - before) as f64 / n as f64,
                name_bytes: names as f64 / n as f64,
            };
        }

        let mut i = 0usize;
        g.bench_function(format!("keyward/{label}"), |b| {
            b.iter(|| {
                let t = &s.tokens[order[i % n] as usize];
                i += 1;
                let v = run(s.keys.verify(black_box(t))).expect("valid");
                black_box(v.allows(s.read))
            })
        });
        drop(s.keys);
        let map = ideal_map(&s.tokens);
        let mut i = 0usize;
        g.bench_function(format!("ideal/{label}"), |b| {
            b.iter(|| {
                let t = &s.tokens[order[i % n] as usize];
                i += 1;
                assert!(ideal_verify(&map, black_box(t), 0b01));
            })
        });
    }

    // The peer: prefixed-api-key's parse and hash check of one key.
    let controller = prefixed_api_key::PrefixedApiKeyController::configure()
        .prefix("sk".to_owned())
        .seam_defaults()
        .finalize()
        .expect("peer config");
    let (pak, hash) = controller.generate_key_and_hash();
    let token = pak.to_string();
    g.bench_function("peer", |b| {
        b.iter(|| {
            let parsed =
                prefixed_api_key::PrefixedApiKey::from_string(black_box(&token)).expect("parses");
            assert!(controller.check_hash(&parsed, black_box(&hash)));
        })
    });
    g.finish();
}

/// The default cache settings (10 s fresh, then stale-while-revalidate for
/// 10 minutes), against the same ideal chain, in a tokio runtime whose
/// worker runs the background reads, measured once every entry is past its
/// time limit; and, in the same run, the same with stale answers turned
/// off: every entry past 10 s is read before its verify answers.
fn bench_defaults(c: &mut Criterion) {
    let runtime = background_runtime();
    let _inside = runtime.enter();
    let mut g = c.benchmark_group("defaults");
    for (label, n) in [("1k", 1_000), ("1M", 1_000_000)] {
        if n > 1_000 && quick() {
            continue;
        }
        let order = order(n);
        for (name, stale) in [
            ("keyward", None),
            ("no_stale", Some(chrono::Duration::zero())),
        ] {
            let s = setup_with(n, |b| match stale {
                Some(d) => b.cache_stale_for(d),
                None => b,
            });
            fill(&s.keys, &s.tokens);
            // Past the time limit (10 s, on the system clock): every entry
            // is due to be read again, as in a long-running service.
            std::thread::sleep(Duration::from_secs(11));
            let mut i = 0usize;
            g.bench_function(format!("{name}/{label}"), |b| {
                b.iter(|| {
                    let t = &s.tokens[order[i % n] as usize];
                    i += 1;
                    let v = run(s.keys.verify(black_box(t))).expect("valid");
                    black_box(v.allows(s.read))
                })
            });
        }
    }
    g.finish();
}

fn bench_rejections(c: &mut Criterion) {
    let s = setup(1_000);
    let token = s.tokens[0].clone();
    run(s.keys.verify(&token)).expect("valid");
    let mut g = c.benchmark_group("reject");
    // What the harness itself costs: polling a ready future to completion.
    g.bench_function("floor", |b| {
        b.iter(|| run(std::future::ready(black_box(1u64))))
    });
    g.bench_function("accept", |b| {
        b.iter(|| run(s.keys.verify(black_box(&token))).expect("valid"))
    });
    // Same id, other secret, valid checksum: reaches the hash compare.
    let wrong = forge::same_id_other_secret(&token);
    g.bench_function("wrong_secret", |b| {
        b.iter(|| run(s.keys.verify(black_box(&wrong))).expect_err("refused"))
    });
    let unknown = forge::unknown_token(7);
    let _ = run(s.keys.verify(&unknown));
    g.bench_function("unknown_id", |b| {
        b.iter(|| run(s.keys.verify(black_box(&unknown))).expect_err("refused"))
    });
    // Malformed: garbage of the wrong shape; a well-shaped token with a
    // wrong checksum and an id nobody has; and a real token with one
    // character changed (its id is cached, so the hash is compared first).
    let garbage = "Bearer 12345";
    g.bench_function("malformed", |b| {
        b.iter(|| run(s.keys.verify(black_box(garbage))).expect_err("refused"))
    });
    let mut bad_sum = forge::unknown_token(9).into_bytes();
    let last = bad_sum.len() - 1;
    bad_sum[last] = if bad_sum[last] == b'a' { b'b' } else { b'a' };
    let bad_sum = String::from_utf8(bad_sum).expect("ascii");
    g.bench_function("malformed_checksum", |b| {
        b.iter(|| run(s.keys.verify(black_box(&bad_sum))).expect_err("refused"))
    });
    let mut typo = token.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ascii");
    g.bench_function("malformed_typo", |b| {
        b.iter(|| run(s.keys.verify(black_box(&typo))).expect_err("refused"))
    });
    g.finish();
}

/// The cost of access rules on a cached verify: a key with an allowlist
/// of 10 networks (the client's checked last) beside one without, both
/// given the client address; and named limits charged a cost.
fn bench_access(c: &mut Criterion) {
    let s = setup(1_000);
    let admin = Actor::new("admin", "acme")
        .permissions(s.keys.catalog().all())
        .may_manage_keys(true);
    let nets: Vec<String> = (0..10).map(|i| format!("10.{i}.0.0/16")).collect();
    let issue = |new: NewKey| {
        let k = run(s.keys.create(&admin, new.permissions(["contacts:read"]))).expect("created");
        k.token.expose_secret().to_string()
    };
    let plain = issue(NewKey::new("plain"));
    let listed = issue(NewKey::new("listed").allowed_ips(IpAllowlist::new(&nets).expect("list")));
    let named = issue(
        NewKey::new("named")
            .limit("requests", unreachable_limit())
            .limit("tokens", unreachable_limit()),
    );
    let client: std::net::IpAddr = "10.9.1.2".parse().expect("address");
    let req = VerifyRequest::new().client_ip(client);
    for t in [&plain, &listed, &named] {
        run(s.keys.verify_with(t, req)).expect("valid");
    }
    let mut g = c.benchmark_group("access");
    g.bench_function("none", |b| {
        b.iter(|| run(s.keys.verify_with(black_box(&plain), black_box(req))).expect("valid"))
    });
    g.bench_function("allowlist10", |b| {
        b.iter(|| run(s.keys.verify_with(black_box(&listed), black_box(req))).expect("valid"))
    });
    let costly = req.cost(3);
    g.bench_function("named2_cost", |b| {
        b.iter(|| run(s.keys.verify_with(black_box(&named), black_box(costly))).expect("valid"))
    });
    g.finish();
}

/// `tokens.len()` threads, each calling `verify` `iters` times with its
/// token.
fn concurrent(verify: &(impl Fn(&str) + Sync), tokens: &[&str], iters: u64) -> Duration {
    let barrier = Barrier::new(tokens.len() + 1);
    std::thread::scope(|scope| {
        for t in tokens {
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                for _ in 0..iters {
                    verify(black_box(t));
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn bench_threads(c: &mut Criterion) {
    let s = setup(1_000);
    let (a, b2) = (s.tokens[0].as_str(), s.tokens[1].as_str());
    let keyward = |t: &str| {
        black_box(run(s.keys.verify(t)).expect("valid"));
    };
    let mut g = c.benchmark_group("threads");
    g.bench_function("one/different", |b| {
        b.iter_custom(|iters| concurrent(&keyward, &[a], iters))
    });
    g.bench_function("two/different", |b| {
        b.iter_custom(|iters| concurrent(&keyward, &[a, b2], iters))
    });
    g.bench_function("one/same", |b| {
        b.iter_custom(|iters| concurrent(&keyward, &[a], iters))
    });
    g.bench_function("two/same", |b| {
        b.iter_custom(|iters| concurrent(&keyward, &[a, a], iters))
    });
    // The ideal chain on one key from two threads: what one shared
    // limiter word allows any design that counts every request exactly.
    let map = ideal_map(&s.tokens);
    let ideal = |t: &str| assert!(ideal_verify(&map, t, 0b01));
    g.bench_function("ideal_one/same", |b| {
        b.iter_custom(|iters| concurrent(&ideal, &[a], iters))
    });
    g.bench_function("ideal_two/same", |b| {
        b.iter_custom(|iters| concurrent(&ideal, &[a, a], iters))
    });
    g.finish();
}

fn report(memory: &Memory) {
    let ns = |id: &str| estimates::estimate_ns(id).unwrap_or(f64::NAN);
    let mut rows: Vec<(String, f64, String, bool)> = Vec::new();
    let mut check = |name: String, value: f64, target: &str, ok: bool| {
        rows.push((name, value, target.to_string(), ok));
    };
    let sizes = sizes();
    for (label, _) in &sizes {
        let r = ns(&format!("valid/keyward/{label}")) / ns(&format!("valid/ideal/{label}"));
        let (target, limit) = if *label == "1M" {
            ("<= 1.5", 1.5)
        } else {
            ("<= 1.3", 1.3)
        };
        check(
            format!("keyward / ideal, {label} keys"),
            r,
            target,
            r <= limit,
        );
    }
    for (label, target, limit) in [("1k", "<= 1.3", 1.3), ("1M", "<= 1.5", 1.5)] {
        let ideal = ns(&format!("valid/ideal/{label}"));
        let r = ns(&format!("defaults/keyward/{label}")) / ideal;
        check(
            format!("keyward / ideal, {label} keys, default settings"),
            r,
            target,
            r <= limit,
        );
        let off = ns(&format!("defaults/no_stale/{label}")) / ideal;
        check(
            format!("  the same, stale answers off ({label})"),
            off,
            "-",
            true,
        );
    }
    let peer = ns("valid/peer") / ns("valid/keyward/1k");
    check(
        "prefixed-api-key / keyward, 1k".into(),
        peer,
        ">= 5",
        peer >= 5.0,
    );
    let diff = 2.0 * ns("threads/one/different") / ns("threads/two/different");
    check(
        "two threads / one, different keys".into(),
        diff,
        ">= 1.8",
        diff >= 1.8,
    );
    let same = 2.0 * ns("threads/one/same") / ns("threads/two/same");
    check(
        "two threads / one, same key".into(),
        same,
        ">= 1.3",
        same >= 1.3,
    );
    let ideal_same = 2.0 * ns("threads/ideal_one/same") / ns("threads/ideal_two/same");
    check("  the same, ideal chain".into(), ideal_same, "-", true);
    for what in [
        "wrong_secret",
        "unknown_id",
        "malformed",
        "malformed_checksum",
        "malformed_typo",
    ] {
        let r = ns(&format!("reject/{what}")) / ns("reject/accept");
        check(format!("{what} / accept"), r, "<= 1.0", r <= 1.0);
    }
    let floor = ns("reject/floor");
    for what in ["malformed", "malformed_checksum"] {
        let t = ns(&format!("reject/{what}"));
        check(format!("{what}, ns"), t, "< 20", t < 20.0);
        check(
            format!("{what}, ns, less the harness ({floor:.1} ns)"),
            t - floor,
            "< 20",
            t - floor < 20.0,
        );
    }
    let allow = ns("access/allowlist10") / ns("access/none");
    check(
        "allowlist of 10 / none, cached verify".into(),
        allow,
        "<= 1.2",
        allow <= 1.2,
    );
    let named = ns("access/named2_cost") / ns("access/none");
    check(
        "2 named limits + cost / none".into(),
        named,
        "<= 1.5",
        named <= 1.5,
    );
    let excl = memory.per_key - memory.name_bytes;
    check(
        format!("bytes per cached key, {} keys, name excluded", memory.keys),
        excl,
        "<= 256",
        excl <= 256.0,
    );

    println!(
        "\nkeyward verify targets (one run; ratios of criterion's estimates; {}):",
        estimates::cpu_model()
    );
    for (name, value, target, ok) in &rows {
        if target == "-" {
            // A figure to compare with, not a target.
            println!("  {name:<45} {value:>9.2}");
            continue;
        }
        if value.is_nan() {
            println!(
                "  {name:<45} {:>9}   target {target:<7} (not measured in this run)",
                "-"
            );
            continue;
        }
        println!(
            "  {name:<45} {value:>9.2}   target {target:<7} {}",
            if *ok { "met" } else { "MISSED" }
        );
    }
    println!(
        "  bytes per cached key, name included: {:.0} (requested sizes; malloc adds its own)",
        memory.per_key
    );

    let points: Vec<serde_json::Value> = sizes
        .iter()
        .map(|(label, n)| {
            serde_json::json!({
                "keys": n,
                "keyward_ns": ns(&format!("valid/keyward/{label}")),
                "ideal_ns": ns(&format!("valid/ideal/{label}")),
                "peer_ns": ns("valid/peer"),
            })
        })
        .collect();
    let summary = serde_json::json!({
        "points": points,
        "targets": rows.iter().map(|(n, v, t, ok)| serde_json::json!({
            "name": n, "value": v, "target": t, "met": ok
        })).collect::<Vec<_>>(),
        "bytes_per_key": memory.per_key,
        "name_bytes_per_key": memory.name_bytes,
        "reject_ns": {
            "floor": ns("reject/floor"),
            "accept": ns("reject/accept"),
            "wrong_secret": ns("reject/wrong_secret"),
            "unknown_id": ns("reject/unknown_id"),
            "malformed": ns("reject/malformed"),
            "malformed_checksum": ns("reject/malformed_checksum"),
            "malformed_typo": ns("reject/malformed_typo"),
        },
        "access_ns": {
            "none": ns("access/none"),
            "allowlist10": ns("access/allowlist10"),
            "named2_cost": ns("access/named2_cost"),
        },
        "threads_ns": {
            "one_different": ns("threads/one/different"),
            "two_different": ns("threads/two/different"),
            "one_same": ns("threads/one/same"),
            "two_same": ns("threads/two/same"),
            "ideal_one_same": ns("threads/ideal_one/same"),
            "ideal_two_same": ns("threads/ideal_two/same"),
        },
    });
    let dir = std::path::Path::new(
        &std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()),
    )
    .join("criterion");
    let _ = std::fs::create_dir_all(&dir);
    // A filtered or quick run leaves rows unmeasured: its figures go
    // beside the full run's, not over them (the plot reads the full run).
    let unmeasured = rows
        .iter()
        .filter(|(_, value, _, _)| value.is_nan())
        .count();
    let quick = quick();
    let complete = unmeasured == 0 && !quick;
    if !complete {
        println!(
            "  a partial run ({unmeasured} of {} rows unmeasured{}): the full run's file stays",
            rows.len(),
            if quick { ", quick sizes" } else { "" }
        );
    }
    let path = dir.join(if complete {
        "keyward-verify.json"
    } else {
        "keyward-verify-partial.json"
    });
    match std::fs::write(&path, summary.to_string()) {
        Ok(()) => println!("  written: {}", path.display()),
        Err(e) => println!("  could not write {}: {e}", path.display()),
    }
}

fn main() {
    estimates::begin();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut memory = Memory::default();
    bench_sizes(&mut c, &mut memory);
    bench_defaults(&mut c);
    bench_rejections(&mut c);
    bench_access(&mut c);
    bench_threads(&mut c);
    c.final_summary();
    report(&memory);
}
