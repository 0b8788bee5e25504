//! PostgresStore against a real, throwaway PostgreSQL server: conformance,
//! cross-instance revocation through LISTEN/NOTIFY, migrations, outages.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use common::pg::PgServer;
use common::{admin, catalog};
use keyward::store::conformance;
use keyward::store::KeyStore;
use keyward::{Keyward, NewKey, PostgresStore, StoreError, VerifyError};

async fn pool(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(StdDuration::from_secs(2))
        .connect(url)
        .await
        .expect("connect to the test server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms_in_fresh_schemas() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let pool = pool(&server.url()).await;
    let n = AtomicUsize::new(0);
    conformance::run(|| {
        let schema = format!("conformance_{}", n.fetch_add(1, Ordering::SeqCst));
        let pool = pool.clone();
        async move {
            PostgresStore::builder(pool)
                .schema(schema)
                .build()
                .await
                .expect("store in a fresh schema")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_concurrent_starts_migrate_once() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let pool = pool(&server.url()).await;
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { PostgresStore::builder(pool).schema("fleet").build().await })
        })
        .collect();
    for s in starts {
        s.await.expect("join").expect("every instance starts");
    }
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM fleet.keyward_migrations")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(versions, 5, "each of the five migrations recorded once");
    // Reopening an existing schema changes nothing and keeps the keys.
    let store = PostgresStore::builder(pool.clone())
        .schema("fleet")
        .build()
        .await
        .expect("reopen");
    let keys = Keyward::builder(store.clone(), catalog())
        .build()
        .expect("config");
    let issued = keys
        .create(&admin(&keys, "acme"), NewKey::new("ci"))
        .await
        .expect("create");
    let again = PostgresStore::builder(pool)
        .schema("fleet")
        .build()
        .await
        .expect("reopen");
    assert!(again.get(&issued.key.id).await.expect("get").is_some());
}

#[tokio::test]
async fn invalid_schema_names_are_refused() {
    // No server needed: the name is checked before any query. A lazy pool
    // never connects.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .expect("lazy pool");
    for bad in ["Auth", "a\"; DROP TABLE x; --", ""] {
        let err = PostgresStore::builder(pool.clone())
            .schema(bad)
            .build()
            .await
            .expect_err("invalid schema");
        assert!(err.to_string().contains("invalid schema name"), "{err}");
    }
}

/// Two instances, each with its own pool and store, on one database; the
/// cache time limit is ten minutes, so only the change feed can explain a
/// prompt refusal.
async fn two_instances(url: &str) -> (Keyward, Keyward) {
    let mut out = Vec::new();
    for _ in 0..2 {
        let store = PostgresStore::connect(url).await.expect("connect");
        out.push(
            Keyward::builder(store, catalog())
                .cache_ttl(Duration::minutes(10))
                .build()
                .expect("config"),
        );
    }
    let b = out.pop().expect("two");
    let a = out.pop().expect("two");
    (a, b)
}

/// Polls `check` every half millisecond until it holds; the time it took.
async fn time_until(mut check: impl AsyncFnMut() -> bool) -> StdDuration {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < StdDuration::from_secs(5),
            "not seen within 5 s: the change feed is not working"
        );
        tokio::time::sleep(StdDuration::from_micros(500)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_on_one_instance_is_refused_by_another_within_milliseconds() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let (a, b) = two_instances(&server.url()).await;
    let actor = admin(&a, "acme");
    // Let both listeners attach (a reset on attach would also clear the
    // cache, which would make the measurement meaningless).
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    let mut delays = Vec::new();
    for i in 0..20 {
        let issued = a
            .create(&actor, NewKey::new(format!("key {i}")))
            .await
            .expect("create");
        let token = issued.token.expose_secret().to_string();
        b.verify(&token).await.expect("valid on b");
        b.verify(&token).await.expect("cached on b");
        a.revoke(&actor, &issued.key.id).await.expect("revoke on a");
        let delay =
            time_until(async || matches!(b.verify(&token).await, Err(VerifyError::Revoked))).await;
        delays.push(delay);
        // And back: reactivation travels the same way.
        a.reactivate(&actor, &issued.key.id)
            .await
            .expect("reactivate");
        time_until(async || b.verify(&token).await.is_ok()).await;
    }
    delays.sort();
    eprintln!(
        "revoke on A -> refused on B: median {:?}, max {:?} over {} keys",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        delays.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_permission_changes_reach_the_other_instance() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let (a, b) = two_instances(&server.url()).await;
    let actor = admin(&a, "acme");
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    let issued = a
        .create(&actor, NewKey::new("ci").permissions(["contacts:write"]))
        .await
        .expect("create");
    let token = issued.token.expose_secret().to_string();
    assert!(b
        .verify(&token)
        .await
        .expect("valid")
        .require("contacts:write")
        .is_ok());
    a.set_permissions(&actor, &issued.key.id, ["contacts:read"])
        .await
        .expect("re-permission");
    time_until(async || {
        b.verify(&token)
            .await
            .is_ok_and(|v| v.require("contacts:write").is_err())
    })
    .await;
    a.delete(&actor, &issued.key.id).await.expect("delete");
    time_until(async || matches!(b.verify(&token).await, Err(VerifyError::Invalid))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_a_store_error_never_an_accept() {
    let Some(mut server) = PgServer::start() else {
        return;
    };
    let pool = pool(&server.url()).await;
    let store = PostgresStore::builder(pool).build().await.expect("store");
    let keys = Keyward::builder(store, catalog())
        .cache_ttl(Duration::zero())
        .store_timeout(Duration::milliseconds(300))
        .build()
        .expect("config");
    let actor = admin(&keys, "acme");
    let issued = keys
        .create(&actor, NewKey::new("ci"))
        .await
        .expect("create");
    let token = issued.token.expose_secret().to_string();
    keys.verify(&token).await.expect("valid while up");
    server.stop();
    // Finding 7 of step 6: with the database down, an uncached verify
    // waited 2-5 s for the pool. Now it answers by the store timeout
    // (300 ms here; the bound below only leaves room for a slow machine).
    for _ in 0..3 {
        let started = std::time::Instant::now();
        match keys.verify(&token).await {
            Err(VerifyError::Store(StoreError::Unavailable { source, message })) => {
                assert!(
                    source.is_some() || message.contains("did not answer within 300 ms"),
                    "the driver error is kept as the source, or the deadline named: {message}"
                );
            }
            other => panic!("expected a store error, got {other:?}"),
        }
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1_800),
            "a verify waited {:?} on a database that is down",
            started.elapsed()
        );
    }
    assert!(matches!(
        keys.revoke(&actor, &issued.key.id).await,
        Err(keyward::KeyError::Store(_))
    ));
    assert!(server.restart(), "server back");
    let mut ok = false;
    for _ in 0..100 {
        if keys.verify(&token).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert!(ok, "verifies again once the database is back");
}

/// A key cached on b (the other instance): the setup of the feed tests.
async fn cached_on_b(a: &Keyward, b: &Keyward) -> (keyward::KeyId, String) {
    let issued = a
        .create(&admin(a, "acme"), NewKey::new("ci"))
        .await
        .expect("create");
    let token = issued.token.expose_secret().to_string();
    b.verify(&token).await.expect("valid on b");
    (issued.key.id, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_in_sql_by_an_operator_reach_every_cache() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let (a, b) = two_instances(&server.url()).await;
    let operator = pool(&server.url()).await;
    tokio::time::sleep(StdDuration::from_millis(300)).await;

    // An emergency revocation by hand: no version bump.
    let (id, token) = cached_on_b(&a, &b).await;
    sqlx::query("UPDATE keyward_keys SET revoked_at = now() WHERE id = $1")
        .bind(id.as_str())
        .execute(&operator)
        .await
        .expect("revoke in SQL");
    time_until(async || matches!(b.verify(&token).await, Err(VerifyError::Revoked))).await;

    // Last-use bookkeeping alone is not announced (caches do not hold it),
    // but a TRUNCATE clears every cache.
    let (_, token) = cached_on_b(&a, &b).await;
    sqlx::query("TRUNCATE keyward_keys")
        .execute(&operator)
        .await
        .expect("truncate");
    time_until(async || matches!(b.verify(&token).await, Err(VerifyError::Invalid))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_feed_connection_clears_the_cache_on_reconnect() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let (a, b) = two_instances(&server.url()).await;
    let operator = pool(&server.url()).await;
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    let (id, token) = cached_on_b(&a, &b).await;
    // Kill every listening connection, then revoke while they are down:
    // the notification is lost, so only the reset on reconnect can help.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'",
    )
    .fetch_all(&operator)
    .await
    .expect("terminate listeners");
    assert_eq!(killed.len(), 2, "both instances were listening");
    a.revoke(&admin(&a, "acme"), &id)
        .await
        .expect("revoke on a");
    let delay =
        time_until(async || matches!(b.verify(&token).await, Err(VerifyError::Revoked))).await;
    eprintln!("feed killed, revoke on A -> refused on B after {delay:?}");
}
