//! Verify over each shipped store, cached and cold, in one run.
//!
//! `cargo bench --bench stores --features sqlite,postgres`. PostgreSQL is a
//! throwaway server started from the system binaries (as in the tests).
//! Groups:
//! - `stores/cached/{memory,sqlite,postgres}`: a hot key, served by the
//!   verification cache (no store access)
//! - `stores/cold/{memory,sqlite,postgres}`: the cache turned off
//!   (`cache_ttl(0)`): one store read per verify (SQLite file in WAL mode;
//!   PostgreSQL over loopback TCP)
//!
//! - `stores/bare/{sqlite,postgres}`: the store's own point query (the
//!   same columns, by primary key) through the same driver and pool, with
//!   nothing of keyward around it: what a cold verify is measured against
//! - a flood, after the groups (not criterion): valid cached keys verified
//!   one after another while another task verifies made-up tokens as fast
//!   as it can, over SQLite on a two-worker runtime; the valid keys' p50
//!   and p99 latency without a flood, with one (default read budget) and
//!   with one and no budget, and the store reads the flood caused.
//!
//! Each store holds 1,000 keys. After the run, the ratios are printed from
//! criterion's estimates, with the CPU model.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use keyward::store::KeyStore;
use keyward::{Actor, Catalog, Keyward, MemoryStore, NewKey, NoAudit};
use keyward::{PostgresStore, SqliteStore};

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
#[path = "support/estimates.rs"]
mod estimates;
#[path = "support/timing.rs"]
mod timing;

const KEYS: usize = 1_000;

fn catalog() -> Catalog {
    Catalog::builder()
        .resource("contacts", ["read", "write"])
        .build()
        .expect("valid catalog")
}

/// A cached and an uncached instance over `store`, and the tokens of its
/// keys.
async fn setup(store: impl KeyStore + Clone) -> (Keyward, Keyward, Vec<String>) {
    let cached = Keyward::builder(store.clone(), catalog())
        .audit(NoAudit)
        .build()
        .expect("valid config");
    // The cache off: every verify is a miss and reads the store. (Past the
    // read budget the loaded known ids would let them through too; no
    // budget keeps the figure free of that load.)
    let cold = Keyward::builder(store, catalog())
        .audit(NoAudit)
        .cache_ttl(chrono::Duration::zero())
        .unknown_id_reads(None)
        .build()
        .expect("valid config");
    let admin = Actor::new("admin", "acme")
        .permissions(cached.catalog().all())
        .may_manage_keys(true);
    let mut tokens = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let k = cached
            .create(
                &admin,
                NewKey::new(format!("key {i}")).permissions(["contacts:write"]),
            )
            .await
            .expect("created");
        tokens.push(k.token.expose_secret().to_string());
    }
    let token = &tokens[KEYS / 2];
    cached.verify(token).await.expect("valid");
    cold.verify(token).await.expect("valid");
    (cached, cold, tokens)
}

/// The columns the stores read, for the bare query.
const COLUMNS: &str = "id, prefix, hash, tenant, name, permissions, created_by, created_at, \
    expires_at, revoked_at, last_used_at, metadata, version, rate_limit_max, rate_limit_per_ms, \
    remaining, refill_amount, refill_every_secs, last_refill_at, inactivity_deadline, \
    inactivity_before_secs, expiry_deadline, expiry_before_secs, rolled_from, rolled_to, \
    allowed_ips, not_before, roles, limits, credits_spent, exposed_at";

/// What one flood scenario measured.
struct Flooded {
    p50_ns: u64,
    p99_ns: u64,
    /// Made-up tokens verified per second.
    flood_rate: f64,
    /// Store reads of made-up ids per second, after the first second.
    reads_per_s: f64,
    /// Store reads of made-up ids in the flood's first second (the first
    /// load of the known ids falls in it).
    first_second_reads: usize,
}

/// Valid cached keys of `keys` verified one after another for `secs`,
/// while (with `flood`) a task verifies made-up tokens as fast as it can.
fn flood_run(keys: &Keyward, tokens: &[String], flood: bool, secs: u64) -> Flooded {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for t in tokens {
            keys.verify(t).await.expect("valid");
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut first_load_reads = 0;
    let flooder = flood.then(|| {
        let (keys, stop, sent) = (keys.clone(), stop.clone(), sent.clone());
        rt.spawn(async move {
            let mut i = 1_000_000_000u64 + sent.load(Ordering::Relaxed);
            while !stop.load(Ordering::Relaxed) {
                let _ = black_box(keys.verify(&common::forge::unknown_token(i)).await);
                i += 1;
                sent.fetch_add(1, Ordering::Relaxed);
                if i.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
        })
    });
    if flood {
        // The first second of a flood: the budget runs out, the known ids
        // load, and until they are loaded misses are read within ten
        // times the budget. Measured from then on: the steady state.
        std::thread::sleep(Duration::from_secs(1));
        first_load_reads = keys.cache_stats().unknown_ids;
    }
    let unknown_before = keys.cache_stats().unknown_ids;
    let sent_before = sent.load(Ordering::Relaxed);
    let mut lat = Vec::with_capacity(1 << 20);
    let start = Instant::now();
    rt.block_on(async {
        let mut i = 0usize;
        while start.elapsed() < Duration::from_secs(secs) {
            let t = &tokens[i % tokens.len()];
            i += 1;
            let at = Instant::now();
            black_box(keys.verify(black_box(t)).await.expect("valid"));
            lat.push(at.elapsed().as_nanos() as u64);
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(f) = flooder {
        rt.block_on(f).expect("flood task");
    }
    let reads = keys
        .cache_stats()
        .unknown_ids
        .saturating_sub(unknown_before);
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    Flooded {
        p50_ns: at(0.50),
        p99_ns: at(0.99),
        flood_rate: (sent.load(Ordering::Relaxed) - sent_before) as f64 / elapsed,
        reads_per_s: reads as f64 / elapsed,
        first_second_reads: first_load_reads,
    }
}

/// The flood figures over `store`: no flood, a flood with the default
/// read budget, a flood with none.
fn flood_figures(store: &SqliteStore, tokens: &[String]) {
    let build = |budget: bool| {
        // Store reads are counted as the unknown ids the cache remembers:
        // room for every id a flood can send in the run, so that the
        // count is never capped.
        let b = Keyward::builder(store.clone(), catalog())
            .audit(NoAudit)
            .unknown_cache_capacity(16_777_216);
        let b = if budget { b } else { b.unknown_id_reads(None) };
        b.build().expect("valid config")
    };
    let tokens = &tokens[..100];
    let quiet = flood_run(&build(true), tokens, false, 3);
    let budget = flood_run(&build(true), tokens, true, 3);
    let open = flood_run(&build(false), tokens, true, 3);
    println!(
        "\nflood of made-up tokens over SQLite, 100 valid cached keys measured ({}):",
        estimates::cpu_model()
    );
    for (name, f) in [
        ("no flood", &quiet),
        ("flood, default budget", &budget),
        ("flood, no budget", &open),
    ] {
        println!(
            "  {name:<22} valid p50 {:>6} ns  p99 {:>7} ns ({:.2}x quiet)  flood {:>9.0}/s  store reads {:>7.0}/s (first second: {})",
            f.p50_ns,
            f.p99_ns,
            f.p99_ns as f64 / quiet.p99_ns as f64,
            f.flood_rate,
            f.reads_per_s,
            f.first_second_reads
        );
    }
    println!("  targets: p99 under a flood (default budget) <= 2x quiet; store reads <= the budget (1,000/s) after the first second");
}

fn main() {
    estimates::begin();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = common::TempDir::new("bench-stores");
    let server = common::pg::PgServer::start().expect("PostgreSQL server binaries are needed");
    let (mem, mem_cold, mem_tokens) = rt.block_on(setup(MemoryStore::new()));
    let sqlite = rt
        .block_on(SqliteStore::open(dir.path().join("bench.db")))
        .expect("SQLite");
    let (lite, lite_cold, lite_tokens) = rt.block_on(setup(sqlite.clone()));
    let pg_store = rt
        .block_on(PostgresStore::connect(&server.url()))
        .expect("PostgreSQL");
    let (pg, pg_cold, pg_tokens) = rt.block_on(setup(pg_store.clone()));
    let (mem_token, lite_token, pg_token) = (
        &mem_tokens[KEYS / 2],
        &lite_tokens[KEYS / 2],
        &pg_tokens[KEYS / 2],
    );

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    {
        let mut g = c.benchmark_group("stores/cached");
        timing::bench_verify(&mut g, &rt, "memory", &mem, mem_token);
        timing::bench_verify(&mut g, &rt, "sqlite", &lite, lite_token);
        timing::bench_verify(&mut g, &rt, "postgres", &pg, pg_token);
        g.finish();
    }
    {
        let mut g = c.benchmark_group("stores/cold");
        timing::bench_verify(&mut g, &rt, "memory", &mem_cold, mem_token);
        timing::bench_verify(&mut g, &rt, "sqlite", &lite_cold, lite_token);
        timing::bench_verify(&mut g, &rt, "postgres", &pg_cold, pg_token);
        g.finish();
    }
    {
        let mut g = c.benchmark_group("stores/bare");
        let id = lite_token[3..11].to_string();
        let sql: Arc<str> = format!("SELECT {COLUMNS} FROM keyward_keys WHERE id = ?1").into();
        let pool = sqlite.pool();
        timing::bench_async(&mut g, &rt, "sqlite", async || {
            // As the stores do: a statement built once, cached by the pool.
            let query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            let row = query.bind(&id).fetch_optional(pool).await;
            assert!(black_box(row.expect("read")).is_some());
        });
        let id = pg_token[3..11].to_string();
        let sql: Arc<str> =
            format!("SELECT {COLUMNS} FROM public.keyward_keys WHERE id = $1").into();
        let pool = pg_store.pool();
        timing::bench_async(&mut g, &rt, "postgres", async || {
            // As the stores do: a statement built once, cached by the pool.
            let query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            let row = query.bind(&id).fetch_optional(pool).await;
            assert!(black_box(row.expect("read")).is_some());
        });
        g.finish();
    }
    c.final_summary();

    println!(
        "\nratios (criterion's estimate, this run, {}):",
        estimates::cpu_model()
    );
    let ns = |id: &str| estimates::estimate_ns(id).unwrap_or(f64::NAN);
    let base = ns("stores_cached/memory");
    for store in ["memory", "sqlite", "postgres"] {
        let (cached, cold) = (
            ns(&format!("stores_cached/{store}")),
            ns(&format!("stores_cold/{store}")),
        );
        println!(
            "  {store:<8} cached {cached:>9.0} ns = {:.2}x memory (target <= 1.5x); cold {cold:>9.0} ns",
            cached / base
        );
    }
    let (cold, bare) = (ns("stores_cold/sqlite"), ns("stores_bare/sqlite"));
    println!(
        "  sqlite   cold verify {:.1} us (target <= 20 us); the bare query {:.1} us; cold / bare {:.2}x",
        cold / 1e3,
        bare / 1e3,
        cold / bare
    );
    let (cold, bare) = (ns("stores_cold/postgres"), ns("stores_bare/postgres"));
    println!(
        "  postgres cold verify {:.1} us; the bare query {:.1} us; cold / bare {:.2}x (target <= 1.2x)",
        cold / 1e3,
        bare / 1e3,
        cold / bare
    );
    rt.block_on(async {
        drop((lite, lite_cold, pg, pg_cold));
    });
    flood_figures(&sqlite, &lite_tokens);
    drop(server);
}
