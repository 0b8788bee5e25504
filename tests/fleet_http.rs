//! Two processes of the example server (`examples/server.rs`, as built by
//! `cargo test --all-features`) on one throwaway PostgreSQL and one
//! throwaway Redis, driven over HTTP: one bootstrap key between them, the
//! shared 429, and a revoke on one refused by the other.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::pg::PgServer;
use common::redis_server::RedisServer;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// The example binary next to this test's directory, or `None` (skip,
/// but never under `CI=true`).
fn example_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/fleet_http-… → target/<profile>/examples/server
    let path = exe.parent()?.parent()?.join("examples").join("server");
    if path.exists() {
        return Some(path);
    }
    let reason = format!(
        "{} is not built; `cargo test --all-features` builds it",
        path.display()
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and {reason}"
    );
    eprintln!("skipping: {reason}");
    None
}

/// One server process; killed on drop.
struct Instance {
    child: Child,
    /// Its URL, once it listens.
    base: String,
    /// Every line it printed, as it prints them.
    lines: mpsc::Receiver<String>,
    /// Where its log goes, for a failure message.
    log: common::TempDir,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(bin: &PathBuf, pg: &str, redis: &str) -> Instance {
    let log = common::TempDir::new("fleet-http");
    let stderr = std::fs::File::create(log.path().join("stderr")).expect("log file");
    // PORT=0: the server binds a free port and says which.
    let mut child = Command::new(bin)
        .env("PORT", "0")
        .env("DATABASE_URL", pg)
        .env("REDIS_URL", redis)
        // About sharing, not timeouts: a loaded machine must not turn a
        // late answer into a local decision.
        .env("REDIS_TIMEOUT_MS", "1000")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start the example server");
    let stdout = child.stdout.take().expect("piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Instance {
        child,
        base: String::new(),
        lines,
        log,
    }
}

impl Instance {
    /// Waits for "listening on http://…" and notes the URL; the
    /// bootstrap token, if this instance printed one.
    fn started(&mut self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut token = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                let log = std::fs::read_to_string(self.log.path().join("stderr"));
                panic!(
                    "the server did not start; it logged:\n{}",
                    log.unwrap_or_default()
                );
            };
            let line = line.trim();
            if line.starts_with("sk_") {
                token = Some(line.to_string());
            }
            if let Some(rest) = line.strip_prefix("listening on ") {
                assert!(
                    line.contains("PostgreSQL") && line.contains("Redis"),
                    "{line}"
                );
                self.base = rest.split_whitespace().next().expect("a URL").to_string();
                return token;
            }
        }
    }
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
