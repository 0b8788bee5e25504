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
//! Each store holds 1,000 keys. After the run, the ratios cached-store /
//! cached-memory are printed from criterion's estimates.

use std::time::Duration;

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

/// A cached and an uncached instance over `store`, and a token.
async fn setup(store: impl KeyStore + Clone) -> (Keyward, Keyward, String) {
    let build = |ttl: chrono::Duration| {
        Keyward::builder(store.clone(), catalog())
            .audit(NoAudit)
            .cache_ttl(ttl)
            .build()
            .expect("valid config")
    };
    let cached = build(chrono::Duration::seconds(10));
    let cold = build(chrono::Duration::zero());
    let admin = Actor::new("admin", "acme")
        .permissions(cached.catalog().all())
        .may_manage_keys(true);
    let mut token = String::new();
    for i in 0..KEYS {
        let k = cached
            .create(
                &admin,
                NewKey::new(format!("key {i}")).permissions(["contacts:write"]),
            )
            .await
            .expect("created");
        if i == KEYS / 2 {
            token = k.token.expose_secret().to_string();
        }
    }
    cached.verify(&token).await.expect("valid");
    cold.verify(&token).await.expect("valid");
    (cached, cold, token)
}

fn main() {
    estimates::begin();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = common::TempDir::new("bench-stores");
    let server = common::pg::PgServer::start().expect("PostgreSQL server binaries are needed");
    let (mem, mem_cold, mem_token) = rt.block_on(setup(MemoryStore::new()));
    let sqlite = rt
        .block_on(SqliteStore::open(dir.path().join("bench.db")))
        .expect("SQLite");
    let (lite, lite_cold, lite_token) = rt.block_on(setup(sqlite));
    let pg = rt
        .block_on(PostgresStore::connect(&server.url()))
        .expect("PostgreSQL");
    let (pg, pg_cold, pg_token) = rt.block_on(setup(pg));

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    {
        let mut g = c.benchmark_group("stores/cached");
        timing::bench_verify(&mut g, &rt, "memory", &mem, &mem_token);
        timing::bench_verify(&mut g, &rt, "sqlite", &lite, &lite_token);
        timing::bench_verify(&mut g, &rt, "postgres", &pg, &pg_token);
        g.finish();
    }
    {
        let mut g = c.benchmark_group("stores/cold");
        timing::bench_verify(&mut g, &rt, "memory", &mem_cold, &mem_token);
        timing::bench_verify(&mut g, &rt, "sqlite", &lite_cold, &lite_token);
        timing::bench_verify(&mut g, &rt, "postgres", &pg_cold, &pg_token);
        g.finish();
    }
    c.final_summary();

    println!(
        "\nratios (criterion's estimate, this run, {}):",
        estimates::cpu_model()
    );
    let base = estimates::estimate_ns("stores_cached/memory");
    for store in ["memory", "sqlite", "postgres"] {
        let cached = estimates::estimate_ns(&format!("stores_cached/{store}"));
        let cold = estimates::estimate_ns(&format!("stores_cold/{store}"));
        if let (Some(base), Some(cached), Some(cold)) = (base, cached, cold) {
            println!(
                "  {store:<8} cached {cached:>9.0} ns = {:.2}x memory (target <= 1.5x); cold {cold:>9.0} ns",
                cached / base
            );
        }
    }
    drop(server);
}
