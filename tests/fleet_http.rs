//! Two processes of the example server (`examples/server`, as built by
//! `cargo test --all-features`) on one throwaway PostgreSQL and one
//! throwaway Redis, driven over HTTP: one bootstrap key between them, the
//! shared 429, and a revoke on one refused by the other.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::pg::PgServer;
use common::redis_server::RedisServer;
use common::server_process::{example_binary, Instance};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

fn spawn(bin: &Path, pg: &str, redis: &str) -> Instance {
    Instance::spawn(
        bin,
        &[
            ("DATABASE_URL", pg),
            ("REDIS_URL", redis),
            // About sharing, not timeouts: a loaded machine must not turn a
            // late answer into a local decision.
            ("REDIS_TIMEOUT_MS", "1000"),
        ],
        &[],
    )
}

async fn get(http: &Client, base: &str, token: &str) -> StatusCode {
    http.get(format!("{base}/v1/contacts"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_share_limits_and_revocations() {
    let Some(bin) = example_binary() else { return };
    let Some(pg) = PgServer::start() else { return };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // Started together: one bootstrap key between them.
    let mut a = spawn(&bin, &pg.url(), &redis.url());
    let mut b = spawn(&bin, &pg.url(), &redis.url());
    let tokens: Vec<String> = [a.started(), b.started()].into_iter().flatten().collect();
    for instance in [&a, &b] {
        let said = &instance.listening;
        assert!(
            said.contains("PostgreSQL") && said.contains("Redis"),
            "{said}"
        );
    }
    assert_eq!(
        tokens.len(),
        1,
        "exactly one instance printed a bootstrap key"
    );
    let admin = &tokens[0];
    let http = Client::new();

    // A key limited to 10 a minute, created on A.
    let created: Value = http
        .post(format!("{}/api-keys", a.base))
        .bearer_auth(admin)
        .json(&json!({"name": "zapier", "permissions": ["contacts:read"], "rate_limit_per_minute": 10}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let token = created["token"].as_str().expect("token").to_string();
    let id = created["key"]["id"].as_str().expect("id").to_string();

    // 30 requests, alternating A and B: 10 pass, fleet-wide.
    let start = Instant::now();
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..30 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        match get(&http, base, &token).await {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    let elapsed = start.elapsed();
    // One more refills every 6 s.
    let refilled = usize::try_from(elapsed.as_secs() / 6).expect("small");
    println!("over HTTP: {ok} of 30 passed, {limited} got 429, in {elapsed:?}");
    assert!((10..=10 + refilled).contains(&ok), "{ok} passed");

    // A revoke on A is refused by B, which had the key cached.
    let revoked = http
        .post(format!("{}/api-keys/{id}/revoke", a.base))
        .bearer_auth(admin)
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), StatusCode::OK);
    let start = Instant::now();
    loop {
        let status = get(&http, &b.base, &token).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "B still answers {status}"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    println!("revoked on A, refused by B after {:?}", start.elapsed());
}
