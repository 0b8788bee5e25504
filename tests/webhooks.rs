//! Webhooks end to end: events written with their change, delivered by
//! the worker to a real HTTP receiver on loopback that checks every
//! signature with its own few lines of HMAC-SHA256 (not keyward's), and
//! drops a `webhook-id` it has seen, as a receiver must.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use chrono::{Duration, Utc};
use keyward::webhook::{EventType, HttpTransport, NewEndpoint, TransportError, WebhookTransport};
use keyward::{
    Actor, Catalog, Clock, DeliverySettings, Keyward, LeakResponse, ManualClock, MemoryAuditSink,
    MemoryStore, NewKey, RateLimit, SqliteStore, SystemClock, TenantPolicy,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use common::TempDir;

// ---------------------------------------------------------------------
// The receiver's own check of the Standard Webhooks signature.

/// HMAC-SHA256 (RFC 2104), from SHA-256 alone.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Whether the headers sign `body` under `secret` (`whsec_…`), with the
/// timestamp within five minutes of `now`.
fn signed(secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> bool {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (id, ts, sig) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    );
    let Ok(at) = ts.parse::<i64>() else {
        return false;
    };
    if (now - at).abs() > 300 || id.is_empty() {
        return false;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let Ok(key) = b64.decode(secret.trim_start_matches("whsec_")) else {
        return false;
    };
    let mut content = format!("{id}.{ts}.").into_bytes();
    content.extend_from_slice(body);
    let expected = b64.encode(hmac_sha256(&key, &content));
    sig.split(' ').any(|s| s == format!("v1,{expected}"))
}

/// What a receiver took: one entry per first sight of a `webhook-id`.
#[derive(Debug, Clone)]
struct Event {
    id: String,
    kind: String,
    data: Value,
}

/// A receiver's state: its secret, whether it refuses (503) for now,
/// what it took, how often it was called, and bad signatures.
struct Inbox {
    secret: Mutex<String>,
    refusing: AtomicBool,
    events: Mutex<Vec<Event>>,
    seen: Mutex<HashMap<String, usize>>,
    calls: AtomicUsize,
    refused: AtomicUsize,
    forged: AtomicUsize,
    now: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl Inbox {
    fn new(now: impl Fn() -> i64 + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            secret: Mutex::new(String::new()),
            refusing: AtomicBool::new(false),
            events: Mutex::default(),
            seen: Mutex::default(),
            calls: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            forged: AtomicUsize::new(0),
            now: Box::new(now),
        })
    }

    fn set_secret(&self, secret: &str) {
        *self.secret.lock().unwrap_or_else(PoisonError::into_inner) = secret.to_string();
    }

    /// Takes one POST: 401 if the signature is not the secret's, 503 while
    /// refusing, else 204 (a seen id is answered, not taken again).
    fn take(&self, headers: &HeaderMap, body: &[u8]) -> StatusCode {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let secret = self
            .secret
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if !signed(&secret, headers, body, (self.now)()) {
            self.forged.fetch_add(1, Ordering::SeqCst);
            return StatusCode::UNAUTHORIZED;
        }
        if self.refusing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let id = headers["webhook-id"].to_str().expect("ascii").to_string();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        *seen.entry(id.clone()).or_default() += 1;
        if seen[&id] == 1 {
            let body: Value = serde_json::from_slice(body).expect("a JSON body");
            self.events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Event {
                    id,
                    kind: body["type"].as_str().expect("type").to_string(),
                    data: body["data"].clone(),
                });
        }
        StatusCode::NO_CONTENT
    }

    fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `(type, key_id)` of every event taken.
    fn kinds(&self) -> Vec<(String, String)> {
        let mut kinds: Vec<(String, String)> = self
            .events()
            .into_iter()
            .map(|e| (e.kind, e.data["key_id"].as_str().unwrap_or("").to_string()))
            .collect();
        kinds.sort();
        kinds
    }

    /// Waits up to `secs` for `n` events.
    async fn wait_for(&self, n: usize, secs: u64) {
        for _ in 0..secs * 20 {
            if self.events().len() >= n {
                return;
            }
            tokio::time::sleep(StdDuration::from_millis(50)).await;
        }
        panic!(
            "expected {n} events, got {:?} ({} calls, {} forged)",
            self.kinds(),
            self.calls.load(Ordering::SeqCst),
            self.forged.load(Ordering::SeqCst)
        );
    }
}

async fn hook(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    inbox.take(&headers, &body)
}

/// Serves `inbox` at `http://127.0.0.1:{port}/hook`, until the test ends.
async fn receive(inbox: Arc<Inbox>, port: u16) {
    let app = Router::new().route("/hook", post(hook)).with_state(inbox);
    let mut tries = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => break l,
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(StdDuration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot listen on {port}: {e}"),
        }
    };
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
}

/// A transport that hands each message to an inbox in process (for the
/// tests that drive a manual clock, far from the receiver's real time).
struct InProcess(Arc<Inbox>);

/// A transport that hands each message to the inbox of its URL.
struct Routed(HashMap<String, Arc<Inbox>>);

#[async_trait]
impl WebhookTransport for Routed {
    async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> Result<u16, TransportError> {
        match self.0.get(url) {
            Some(inbox) => InProcess(Arc::clone(inbox)).post(url, headers, body).await,
            None => Err(TransportError(format!("no receiver at {url}"))),
        }
    }
}

#[async_trait]
impl WebhookTransport for InProcess {
    async fn post(
        &self,
        _url: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> Result<u16, TransportError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().expect("header value"));
        }
        Ok(self.0.take(&map, body).as_u16())
    }
}

fn catalog() -> Catalog {
    Catalog::builder()
        .resource("contacts", ["read", "write"])
        .implies("write", "read")
        .build()
        .expect("catalog")
}

fn admin(keys: &Keyward, tenant: &str) -> Actor {
    Actor::new("admin_1", tenant)
        .permissions(keys.catalog().all())
        .may_manage_keys(true)
}

fn local_transport() -> Arc<dyn WebhookTransport> {
    Arc::new(
        HttpTransport::builder()
            .allow_private_networks(true)
            .allow_plain_http(true)
            .timeout(StdDuration::from_secs(2))
            .build()
            .expect("transport"),
    )
}

fn quick() -> DeliverySettings {
    DeliverySettings::default()
        .poll_every(StdDuration::from_millis(20))
        .backoff(StdDuration::from_millis(50), StdDuration::from_millis(400))
        .lease(StdDuration::from_secs(10))
}

fn real_now() -> i64 {
    Utc::now().timestamp()
}

/// An endpoint of `admin`'s tenant at a free loopback port (where nothing
/// listens yet), and the inbox that holds its secret.
async fn loopback_endpoint(keys: &Keyward, admin: &Actor) -> (u16, Arc<Inbox>) {
    let port = common::free_port();
    let made = keys
        .create_endpoint(
            admin,
            NewEndpoint::new(format!("http://127.0.0.1:{port}/hook")),
        )
        .await
        .expect("endpoint");
    let inbox = Inbox::new(real_now);
    inbox.set_secret(made.secret.expose_secret());
    (port, inbox)
}

// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_was_down_gets_every_event_once() {
    let dir = TempDir::new("webhooks-down");
    let store = SqliteStore::open(dir.path().join("keys.db"))
        .await
        .expect("sqlite");
    let keys = Keyward::builder(store, catalog()).build().expect("config");
    let admin = admin(&keys, "acme");
    let (port, inbox) = loopback_endpoint(&keys, &admin).await;
    let worker = keys.spawn_webhook_worker(local_transport(), quick());

    // Changes while nothing listens: each event is in the outbox with
    // its change.
    let mut expected = Vec::new();
    let mut ids = Vec::new();
    for n in 0..4 {
        let k = keys
            .create(&admin, NewKey::new(format!("k{n}")))
            .await
            .expect("create");
        expected.push(("key.created".to_string(), k.key.id.to_string()));
        ids.push(k.key.id);
    }
    for id in &ids[..2] {
        keys.revoke(&admin, id).await.expect("revoke");
        expected.push(("key.revoked".to_string(), id.to_string()));
    }
    // Revoking a revoked key changes nothing, and says nothing.
    keys.revoke(&admin, &ids[0]).await.expect("revoke again");
    keys.reactivate(&admin, &ids[1]).await.expect("reactivate");
    expected.push(("key.reactivated".to_string(), ids[1].to_string()));
    let rolled = keys
        .roll(&admin, &ids[2], Duration::hours(1))
        .await
        .expect("roll");
    expected.push(("key.rolled".to_string(), rolled.key.id.to_string()));
    keys.delete(&admin, &ids[3]).await.expect("delete");
    expected.push(("key.deleted".to_string(), ids[3].to_string()));
    expected.sort();

    tokio::time::sleep(StdDuration::from_millis(800)).await;
    let waiting = keys.endpoints(&admin).await.expect("list");
    assert_eq!(
        waiting[0].pending,
        expected.len() as u64,
        "every event waits"
    );

    // Up, but failing for a while; then well.
    inbox.refusing.store(true, Ordering::SeqCst);
    receive(Arc::clone(&inbox), port).await;
    for _ in 0..200 {
        if inbox.refused.load(Ordering::SeqCst) >= expected.len() {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(25)).await;
    }
    assert!(
        inbox.refused.load(Ordering::SeqCst) >= expected.len(),
        "each event was refused at least once"
    );
    assert!(inbox.events().is_empty());
    inbox.refusing.store(false, Ordering::SeqCst);
    inbox.wait_for(expected.len(), 30).await;
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    worker.abort();

    assert_eq!(
        inbox.kinds(),
        expected,
        "every event, none twice after deduplication"
    );
    assert_eq!(
        inbox.forged.load(Ordering::SeqCst),
        0,
        "every message is signed"
    );
    let distinct: HashSet<String> = inbox.events().into_iter().map(|e| e.id).collect();
    assert_eq!(distinct.len(), expected.len(), "one webhook-id per event");
    let after = keys.endpoints(&admin).await.expect("list");
    assert_eq!(
        (after[0].pending, after[0].dead),
        (0, 0),
        "the outbox is empty"
    );
    // The payload names the key and who acted, never a secret.
    let created = inbox
        .events()
        .into_iter()
        .find(|e| e.kind == "key.rolled")
        .expect("rolled");
    assert_eq!(created.data["rolled_from"], ids[2].to_string());
    assert_eq!(created.data["actor"], "admin_1");
    assert!(created.data["grace_until"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_outbox() {
    let Some(server) = common::pg::PgServer::start() else {
        return;
    };
    let url = server.url();
    let open = || async {
        let store = keyward::PostgresStore::connect(&url)
            .await
            .expect("postgres");
        Keyward::builder(store, catalog()).build().expect("config")
    };
    let (a, b) = (open().await, open().await);
    let admin_a = admin(&a, "acme");
    let (port, inbox) = loopback_endpoint(&a, &admin_a).await;
    receive(Arc::clone(&inbox), port).await;
    let small = quick().batch(3);
    let workers = [
        a.spawn_webhook_worker(local_transport(), small.clone()),
        b.spawn_webhook_worker(local_transport(), small),
    ];
    let mut expected = 0;
    for n in 0..20 {
        let k = a
            .create(&admin_a, NewKey::new(format!("k{n}")))
            .await
            .expect("create");
        b.revoke(&admin(&b, "acme"), &k.key.id)
            .await
            .expect("revoke");
        expected += 2;
    }
    inbox.wait_for(expected, 60).await;
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    for w in workers {
        w.abort();
    }
    let seen = inbox
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(seen.len(), expected, "every event arrived");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "no delivery was sent by both instances: {twice:?}"
    );
    assert_eq!(inbox.forged.load(Ordering::SeqCst), 0);

    // A leak reported to one instance is refused by the other at once,
    // though it had the key cached.
    let leaked = a
        .create(&admin_a, NewKey::new("leaky"))
        .await
        .expect("create");
    let token = leaked.token.expose_secret().to_string();
    b.verify(&token).await.expect("cached on b");
    let report = serde_json::json!([{"token": token, "type": "keyward_api_key", "url": "https://github.com/o/r", "source": "content"}]);
    let reports = keyward::leak::parse_reports(report.to_string().as_bytes()).expect("report");
    let started = std::time::Instant::now();
    a.report_leaks(&reports).await.expect("answered");
    let mut refused = false;
    while started.elapsed() < StdDuration::from_secs(5) {
        if b.verify(&token).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    assert!(refused, "the other instance refuses a leaked key");
    println!(
        "a leaked key was refused by the other instance {:?} after the report",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_sweeps_warnings_and_deletions_arrive_as_webhooks() {
    let clock = ManualClock::default();
    let keys = Keyward::builder(MemoryStore::new(), catalog())
        .clock(clock.clone())
        .build()
        .expect("config");
    let admin = admin(&keys, "acme");
    let made = keys
        .create_endpoint(&admin, NewEndpoint::new("https://hooks.acme.example/keys"))
        .await
        .expect("endpoint");
    let c = clock.clone();
    let inbox = Inbox::new(move || c.now().timestamp());
    inbox.set_secret(made.secret.expose_secret());
    let transport: Arc<dyn WebhookTransport> = Arc::new(InProcess(Arc::clone(&inbox)));
    let idle = keys
        .create(&admin, NewKey::new("idle"))
        .await
        .expect("create");
    let ending = keys
        .create(&admin, NewKey::new("ending").expires_in(Duration::days(80)))
        .await
        .expect("create");
    let settings = DeliverySettings::default();
    keys.deliver_webhooks(&transport, &settings)
        .await
        .expect("round");
    assert_eq!(inbox.events().len(), 2, "the two creations");

    // 76 days idle: 14 days before deletion for disuse (the 15-day
    // warning), 4 days before `ending` expires (its 7-day warning).
    clock.advance(Duration::days(76));
    keys.sweep().await.expect("sweep");
    keys.deliver_webhooks(&transport, &settings)
        .await
        .expect("round");
    let warnings: Vec<(String, String, i64)> = inbox
        .events()
        .into_iter()
        .filter(|e| e.kind.ends_with("_warning"))
        .map(|e| {
            (
                e.kind,
                e.data["key_id"].as_str().expect("id").to_string(),
                e.data["before_secs"].as_i64().expect("threshold"),
            )
        })
        .collect();
    let day = 86_400;
    let (i, x) = (idle.key.id.to_string(), ending.key.id.to_string());
    let mut want = vec![
        ("key.inactivity_warning".to_string(), i.clone(), 15 * day),
        ("key.inactivity_warning".to_string(), x.clone(), 15 * day),
        ("key.expiry_warning".to_string(), x.clone(), 7 * day),
    ];
    want.sort();
    let mut got = warnings.clone();
    got.sort();
    assert_eq!(got, want);
    let deadline = inbox
        .events()
        .into_iter()
        .find(|e| e.kind == "key.expiry_warning")
        .expect("warning")
        .data["deadline"]
        .as_str()
        .expect("deadline")
        .to_string();
    assert!(deadline.starts_with(
        &ending
            .key
            .expires_at
            .expect("expiry")
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    ));

    // A second sweep the same day sends nothing again.
    keys.sweep().await.expect("sweep");
    keys.deliver_webhooks(&transport, &settings)
        .await
        .expect("round");
    assert_eq!(inbox.events().len(), 5);

    // Past 90 days idle, the idle key is deleted, and that is an event.
    clock.advance(Duration::days(15));
    keys.sweep().await.expect("sweep");
    keys.deliver_webhooks(&transport, &settings)
        .await
        .expect("round");
    let deleted = inbox
        .events()
        .into_iter()
        .find(|e| e.kind == "key.deleted")
        .expect("deleted");
    assert_eq!(deleted.data["key_id"], i);
    assert_eq!(deleted.data["reason"], "inactive");
    assert_eq!(deleted.data["actor"], keyward::SWEEP_ACTOR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_refusals_are_sampled_once_per_key_per_window() {
    let clock = ManualClock::default();
    let keys = Keyward::builder(MemoryStore::new(), catalog())
        .clock(clock.clone())
        .build()
        .expect("config");
    let admin = admin(&keys, "acme");
    let made = keys
        .create_endpoint(
            &admin,
            NewEndpoint::new("https://hooks.acme.example/keys")
                .event_types([EventType::LimitExceeded]),
        )
        .await
        .expect("endpoint");
    let c = clock.clone();
    let inbox = Inbox::new(move || c.now().timestamp());
    inbox.set_secret(made.secret.expose_secret());
    let transport: Arc<dyn WebhookTransport> = Arc::new(InProcess(Arc::clone(&inbox)));
    let limited = keys
        .create(
            &admin,
            NewKey::new("busy").rate_limit(RateLimit::per_minute(1).expect("limit")),
        )
        .await
        .expect("create");
    let token = limited.token.expose_secret();
    keys.verify(token).await.expect("the first use");
    for _ in 0..5 {
        keys.verify(token).await.expect_err("rate limited");
    }
    let settings = DeliverySettings::default();
    let mut rounds = 0;
    while inbox.events().is_empty() && rounds < 100 {
        tokio::time::sleep(StdDuration::from_millis(20)).await;
        keys.deliver_webhooks(&transport, &settings)
            .await
            .expect("round");
        rounds += 1;
    }
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    keys.deliver_webhooks(&transport, &settings)
        .await
        .expect("round");
    let events = inbox.events();
    assert_eq!(
        events.len(),
        1,
        "one event for five refusals in a window: {events:?}"
    );
    assert_eq!(events[0].kind, "key.limit_exceeded");
    assert_eq!(events[0].data["limit"], "rate_limited");
    assert!(events[0].data["retry_after_ms"].as_i64().expect("retry") > 0);
    assert!(events[0].data["actor"].is_null());

    clock.advance(Duration::seconds(61));
    keys.verify(token).await.expect("refilled");
    keys.verify(token).await.expect_err("rate limited again");
    for _ in 0..100 {
        keys.deliver_webhooks(&transport, &settings)
            .await
            .expect("round");
        if inbox.events().len() == 2 {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    assert_eq!(inbox.events().len(), 2, "a new window, a new event");
}

#[tokio::test]
async fn a_leak_revokes_or_only_marks_as_the_tenant_says_and_is_sent() {
    let audit = MemoryAuditSink::default();
    let keys = Keyward::builder(MemoryStore::new(), catalog())
        .clock(SystemClock)
        .audit(audit.clone())
        .tenant_policy("calm", TenantPolicy::new().on_leak(LeakResponse::Notify))
        .build()
        .expect("config");
    let mut inboxes = HashMap::new();
    let mut tokens = Vec::new();
    for tenant in ["acme", "calm"] {
        let a = admin(&keys, tenant);
        let url = format!("https://hooks.example/{tenant}");
        let made = keys
            .create_endpoint(&a, NewEndpoint::new(&url))
            .await
            .expect("endpoint");
        let inbox = Inbox::new(real_now);
        inbox.set_secret(made.secret.expose_secret());
        inboxes.insert(url, inbox);
        let k = keys.create(&a, NewKey::new("ci")).await.expect("create");
        tokens.push((k.key.id, k.token.expose_secret().to_string()));
    }
    let body = serde_json::json!([
        {"token": tokens[0].1, "type": "keyward_api_key", "url": "https://github.com/o/r/blob/main/.env", "source": "content"},
        {"token": tokens[1].1, "type": "keyward_api_key", "url": "https://gist.github.com/x", "source": "gist"},
    ]);
    let reports = keyward::leak::parse_reports(body.to_string().as_bytes()).expect("reports");
    let answer = keys.report_leaks(&reports).await.expect("answered");
    assert!(answer
        .iter()
        .all(|f| f.label == keyward::leak::Label::TruePositive));

    // acme (the default): revoked and marked. calm: still working, marked.
    assert!(keys.verify(&tokens[0].1).await.is_err());
    let calm = keys
        .verify(&tokens[1].1)
        .await
        .expect("a Notify tenant's key keeps working");
    drop(calm);
    let info = keys
        .get(&admin(&keys, "calm"), &tokens[1].0)
        .await
        .expect("get");
    assert!(info.exposed_at.is_some(), "marked exposed");
    let revoked = keys
        .get(&admin(&keys, "acme"), &tokens[0].0)
        .await
        .expect("get");
    assert!(revoked.exposed_at.is_some() && revoked.revoked_at.is_some());

    // The revocation is audited with the report's url and source.
    let events = audit.events();
    let revoke = events
        .iter()
        .find(|e| e.action == keyward::AuditAction::Revoke)
        .expect("a revoke event");
    assert_eq!(
        revoke.actor.as_deref(),
        Some(keyward::SECRET_SCANNING_ACTOR)
    );
    let detail: Value =
        serde_json::from_str(revoke.detail.as_deref().expect("detail")).expect("json");
    assert_eq!(detail["url"], "https://github.com/o/r/blob/main/.env");
    assert_eq!(detail["source"], "content");
    let marked = events
        .iter()
        .find(|e| e.action == keyward::AuditAction::Leak)
        .expect("a leak event");
    // A key that still works: where its token lies is told to nobody
    // who reads the trail or receives the tenant's events.
    let detail: Value =
        serde_json::from_str(marked.detail.as_deref().expect("detail")).expect("json");
    assert_eq!(detail["source"], "gist");
    assert!(detail["url"].is_null(), "{detail}");

    // Each tenant's endpoint hears of its own key only.
    let transport: Arc<dyn WebhookTransport> = Arc::new(Routed(inboxes.clone()));
    let settings = DeliverySettings::default();
    keys.deliver_webhooks(&transport, &settings)
        .await
        .expect("round");
    let mut kinds = Vec::new();
    for (url, inbox) in &inboxes {
        assert_eq!(inbox.forged.load(Ordering::SeqCst), 0);
        for e in inbox.events() {
            let tenant = e.data["tenant"].as_str().unwrap_or("").to_string();
            assert!(url.ends_with(&tenant), "{url} got an event of {tenant}");
            kinds.push((tenant, e.kind, e.data["revoked"].clone()));
        }
    }
    kinds.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let leaked: Vec<_> = kinds.iter().filter(|k| k.1 == "key.leaked").collect();
    assert_eq!(leaked.len(), 2, "{kinds:?}");
    assert_eq!(
        (leaked[0].0.as_str(), &leaked[0].2),
        ("acme", &Value::Bool(true))
    );
    assert_eq!(
        (leaked[1].0.as_str(), &leaked[1].2),
        ("calm", &Value::Bool(false))
    );
    assert!(kinds.iter().any(|k| k.0 == "acme" && k.1 == "key.revoked"));
    assert!(!kinds.iter().any(|k| k.0 == "calm" && k.1 == "key.revoked"));
    for inbox in inboxes.values() {
        for e in inbox.events() {
            assert!(
                !e.data.to_string().contains("gist.github.com"),
                "{:?}",
                e.data
            );
        }
    }
    // A key revoked for a leak never comes back.
    let back = keys.reactivate(&admin(&keys, "acme"), &tokens[0].0).await;
    assert!(
        matches!(back, Err(keyward::KeyError::Exposed(_))),
        "{back:?}"
    );

    // Reported again: nothing new is written.
    let count =
        |i: &HashMap<String, Arc<Inbox>>| i.values().map(|x| x.events().len()).sum::<usize>();
    let before = count(&inboxes);
    keys.report_leaks(&reports).await.expect("answered");
    keys.deliver_webhooks(&transport, &settings)
        .await
        .expect("round");
    assert_eq!(count(&inboxes), before, "a repeated report sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_written_before_a_kill_is_delivered_after_restart() {
    use common::server_process::{example_binary, Instance};
    let Some(bin) = example_binary() else { return };
    let dir = TempDir::new("webhooks-kill");
    let db = dir.path().join("keys.db");
    let db = db.to_str().expect("utf-8 path");
    let env = [("KEYWARD_DB", db), ("KEYWARD_WEBHOOKS_ALLOW_LOCAL", "1")];
    let mut first = Instance::spawn(&bin, &env, &[]);
    let admin = first.started().expect("a bootstrap key");
    assert!(first.listening.contains("listening"), "{}", first.listening);
    let http = reqwest::Client::new();
    let port = common::free_port();
    let made = http
        .post(format!("{}/api-keys/webhook-endpoints", first.base))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"url": format!("http://127.0.0.1:{port}/hook"), "event_types": ["key.created"]}))
        .send()
        .await
        .expect("create endpoint");
    assert_eq!(made.status(), reqwest::StatusCode::CREATED);
    let made: Value = made.json().await.expect("json");
    let secret = made["secret"].as_str().expect("a secret").to_string();
    // The change: its event is written with it. Nothing listens at the
    // endpoint, so it cannot have been delivered before the kill.
    let created: Value = http
        .post(format!("{}/api-keys", first.base))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "zapier", "permissions": ["contacts:read"]}))
        .send()
        .await
        .expect("create key")
        .json()
        .await
        .expect("json");
    let id = created["key"]["id"].as_str().expect("id").to_string();
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reaped");

    let inbox = Inbox::new(real_now);
    inbox.set_secret(&secret);
    receive(Arc::clone(&inbox), port).await;
    let mut second = Instance::spawn(&bin, &env, &[]);
    assert!(second.started().is_none(), "no second bootstrap key");
    // Due within its backoff (or, had the kill landed inside an attempt,
    // once that attempt's lease ends).
    inbox.wait_for(1, 150).await;
    let events = inbox.events();
    assert_eq!(events.len(), 1, "{:?}", inbox.kinds());
    assert_eq!(events[0].kind, "key.created");
    assert_eq!(events[0].data["key_id"], id);
    assert_eq!(inbox.forged.load(Ordering::SeqCst), 0);
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_managed_over_http_and_dead_deliveries_replayed() {
    let svc = common::example::example().await;
    let http = &svc.http;
    let api = format!("{}/api-keys", svc.base);
    let made = http
        .post(format!("{api}/webhook-endpoints"))
        .bearer_auth(&svc.admin)
        .json(&serde_json::json!({"url": "https://hooks.example/in", "event_types": ["key.revoked"], "description": "ops"}))
        .send()
        .await
        .expect("create");
    assert_eq!(made.status(), reqwest::StatusCode::CREATED);
    assert_eq!(
        made.headers()["cache-control"],
        "no-store",
        "the secret is never cached"
    );
    let made: Value = made.json().await.expect("json");
    let secret = made["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_"));
    let ep = made["endpoint"]["id"].as_str().expect("id").to_string();
    assert_eq!(
        made["endpoint"]["event_types"],
        serde_json::json!(["key.revoked"])
    );

    let listed = list_endpoints(http, &api, &svc.admin).await;
    assert_eq!(listed["endpoints"][0]["id"], ep.as_str());
    assert!(
        !listed.to_string().contains(&secret[6..]),
        "a listing never shows the secret"
    );

    for (body, field) in [
        (serde_json::json!({"url": "ftp://x"}), "url"),
        (
            serde_json::json!({"url": "https://x/", "event_types": ["key.exploded"]}),
            "event_types",
        ),
        (
            serde_json::json!({"url": "https://x/", "description": "x".repeat(201)}),
            "description",
        ),
    ] {
        let r = http
            .post(format!("{api}/webhook-endpoints"))
            .bearer_auth(&svc.admin)
            .json(&body)
            .send()
            .await
            .expect("create");
        assert_eq!(
            r.status(),
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        let r: Value = r.json().await.expect("json");
        assert_eq!(r["error"]["field"], field, "{r}");
    }

    // A revoke's event fails for good (the receiver rejects everything)
    // and goes dead; the replay makes it due again.
    let key = svc
        .keys
        .create(&svc_admin(&svc.keys), NewKey::new("ci"))
        .await
        .expect("create");
    svc.keys
        .revoke(&svc_admin(&svc.keys), &key.key.id)
        .await
        .expect("revoke");
    let clock = svc.clock.clone();
    let inbox = Inbox::new(move || clock.now().timestamp());
    inbox.set_secret("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let transport: Arc<dyn WebhookTransport> = Arc::new(InProcess(Arc::clone(&inbox)));
    let settings = DeliverySettings::default().give_up_after(StdDuration::from_secs(60));
    svc.clock.advance(Duration::seconds(30));
    let round = svc
        .keys
        .deliver_webhooks(&transport, &settings)
        .await
        .expect("round");
    assert_eq!((round.claimed, round.retried), (1, 1), "a 401 is retried");
    svc.clock.advance(Duration::seconds(60));
    let round = svc
        .keys
        .deliver_webhooks(&transport, &settings)
        .await
        .expect("round");
    assert_eq!(round.dead, 1, "past give_up_after it is dead");
    let listed = list_endpoints(http, &api, &svc.admin).await;
    assert_eq!(
        (
            listed["endpoints"][0]["pending"].as_u64(),
            listed["endpoints"][0]["dead"].as_u64()
        ),
        (Some(0), Some(1))
    );
    svc.clock.advance(Duration::days(1));
    assert_eq!(
        svc.keys
            .deliver_webhooks(&transport, &settings)
            .await
            .expect("round")
            .claimed,
        0,
        "dead stays dead"
    );

    inbox.set_secret(&secret);
    let replayed: Value = http
        .post(format!("{api}/webhook-endpoints/{ep}/replay"))
        .bearer_auth(&svc.admin)
        .send()
        .await
        .expect("replay")
        .json()
        .await
        .expect("json");
    assert_eq!(replayed["replayed"], 1);
    let round = svc
        .keys
        .deliver_webhooks(&transport, &settings)
        .await
        .expect("round");
    assert_eq!(round.delivered, 1);
    let events = inbox.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "key.revoked");

    // Another tenant's admin sees none of it and cannot touch it.
    let other = svc
        .keys
        .create(
            &Actor::new("root", "globex")
                .permissions(svc.keys.catalog().all())
                .may_manage_keys(true),
            NewKey::new("admin").permission_set(svc.keys.catalog().all()),
        )
        .await
        .expect("admin of another tenant");
    let other = other.token.expose_secret();
    let listed = list_endpoints(http, &api, other).await;
    assert_eq!(listed["endpoints"], serde_json::json!([]));
    for r in [
        http.delete(format!("{api}/webhook-endpoints/{ep}"))
            .bearer_auth(other)
            .send()
            .await,
        http.post(format!("{api}/webhook-endpoints/{ep}/replay"))
            .bearer_auth(other)
            .send()
            .await,
    ] {
        assert_eq!(r.expect("request").status(), reqwest::StatusCode::NOT_FOUND);
    }
    let deleted = http
        .delete(format!("{api}/webhook-endpoints/{ep}"))
        .bearer_auth(&svc.admin)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), reqwest::StatusCode::NO_CONTENT);
    let actions: Vec<&str> = svc
        .audit
        .events()
        .iter()
        .map(|e| e.action.as_str())
        .collect::<Vec<_>>()
        .leak()
        .to_vec();
    for a in ["create_endpoint", "replay_webhooks", "delete_endpoint"] {
        assert!(actions.contains(&a), "{a} is audited");
    }
}

/// `GET /webhook-endpoints` as the holder of `token`.
async fn list_endpoints(http: &reqwest::Client, api: &str, token: &str) -> Value {
    http.get(format!("{api}/webhook-endpoints"))
        .bearer_auth(token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json")
}

/// An admin of the example's admin tenant.
fn svc_admin(keys: &Keyward) -> Actor {
    Actor::new("admin_1", common::example::server::ADMIN_TENANT)
        .permissions(keys.catalog().all())
        .may_manage_keys(true)
}
