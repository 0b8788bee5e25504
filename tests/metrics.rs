//! The example server's `/metrics` (feature `metrics`, Prometheus text
//! format through `metrics-exporter-prometheus`), scraped over HTTP from
//! the example process and parsed: the counters move as requests come.

mod common;

use std::collections::HashMap;

use common::server_process::{example_binary, Instance};
use reqwest::{Client, StatusCode};
use serde_json::json;

/// Every sample of a Prometheus text exposition: `name{labels}` (labels
/// as written) to value. Comments and blank lines are skipped; a line
/// that is neither a comment nor a sample fails the test.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "not a metric name: {line:?}"
        );
        samples.insert(series.to_string(), value);
    }
    samples
}

async fn scrape(http: &Client, base: &str) -> HashMap<String, f64> {
    let res = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status(), StatusCode::OK);
    let kind = res.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(kind.starts_with("text/plain"), "{kind}");
    parse(&res.text().await.expect("body"))
}

fn get(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_serves_metrics_that_move_with_requests() {
    let Some(bin) = example_binary() else { return };
    let dir = common::TempDir::new("metrics");
    let db = dir.path().join("keys.db");
    let mut server = Instance::spawn(&bin, &[("KEYWARD_DB", db.to_str().expect("utf-8"))], &[]);
    let admin = server.started().expect("a bootstrap key");
    let base = server.base.clone();
    let http = Client::new();
    let call = |token: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}/v1/contacts"))
                .header("x-api-key", token)
                .send()
                .await
                .expect("request")
                .status()
        }
    };
    assert_eq!(call(admin.clone()).await, StatusCode::OK);
    let before = scrape(&http, &base).await;
    let ok = r#"keyward_verifications_total{outcome="ok"}"#;
    let invalid = r#"keyward_verifications_total{outcome="invalid"}"#;
    let hits = r#"keyward_cache_lookups_total{result="hit"}"#;
    assert!(get(&before, ok) >= 1.0, "{before:?}");

    // Three good requests (cached), two with a well-formed unknown key.
    for _ in 0..3 {
        assert_eq!(call(admin.clone()).await, StatusCode::OK);
    }
    let unknown = common::forge::unknown_token(7);
    for _ in 0..2 {
        assert_eq!(call(unknown.clone()).await, StatusCode::UNAUTHORIZED);
    }
    // A key created through the management API: a store insert.
    let created = http
        .post(format!("{base}/api-keys"))
        .header("x-api-key", &admin)
        .json(&json!({"name": "metrics", "permissions": ["contacts:read"]}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), StatusCode::CREATED);

    let after = scrape(&http, &base).await;
    // The management call verified the admin key once more.
    assert_eq!(get(&after, ok) - get(&before, ok), 4.0, "{after:?}");
    assert_eq!(get(&after, invalid) - get(&before, invalid), 2.0);
    assert!(get(&after, hits) - get(&before, hits) >= 4.0);
    let inserts = r#"keyward_store_call_duration_seconds_count{operation="insert"}"#;
    assert!(
        get(&after, inserts) > get(&before, inserts),
        "a store insert was timed: {after:?}"
    );
    assert!(after
        .keys()
        .any(|k| k.starts_with("keyward_last_used_backlog")));
    // The webhook worker reports the outbox after each round.
    #[cfg(feature = "webhooks")]
    {
        let queue = r#"keyward_webhook_queue{state="pending"}"#;
        let mut seen = scrape(&http, &base).await;
        for _ in 0..50 {
            if seen.contains_key(queue) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            seen = scrape(&http, &base).await;
        }
        assert_eq!(seen.get(queue), Some(&0.0), "the outbox gauge: {seen:?}");
    }
    // Nothing in the exposition is a secret.
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    assert!(!text.contains(&admin[12..]) && !text.contains(&admin[..12]));
}
