//! One table of requests, run over real HTTP on loopback against the axum
//! adapter and the actix-web adapter (the actix example): every refusal
//! must come back with the same status, JSON body, `WWW-Authenticate`
//! challenge and `Retry-After`, and as the table expects.

mod common;

#[allow(dead_code)]
#[path = "../examples/actix.rs"]
mod actix_example;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Duration;
use http::HeaderName;
use keyward::http::{require, Authenticated, KeywardLayer};
use keyward::store::KeyStore;
use keyward::{Actor, IpAllowlist, Keyward, ManualClock, NewKey, RateLimit};
use serde_json::{json, Value};

use common::DownStore;

const TENANT: &str = "x-tenant-name";

/// A request of the table: which key (by role), where, how.
struct Case {
    name: &'static str,
    post: bool,
    key: Option<&'static str>,
    bearer: bool,
    /// Send the key in both headers.
    twice: bool,
    tenant: Option<&'static str>,
    /// Requests made first with the same key (a rate limit to exhaust).
    before: usize,
    status: u16,
    code: Option<&'static str>,
    challenge: Option<&'static str>,
    retry_after: bool,
}

const fn case(name: &'static str, key: Option<&'static str>, status: u16) -> Case {
    Case {
        name,
        post: false,
        key,
        bearer: false,
        twice: false,
        tenant: Some("acme"),
        before: 0,
        status,
        code: None,
        challenge: None,
        retry_after: false,
    }
}

fn table() -> Vec<Case> {
    vec![
        Case {
            challenge: Some(r#"Bearer realm="api""#),
            code: Some("unauthorized"),
            ..case("no key", None, 401)
        },
        Case {
            challenge: Some(r#"Bearer realm="api", error="invalid_token""#),
            code: Some("unauthorized"),
            ..case("malformed key", Some("malformed"), 401)
        },
        Case {
            challenge: Some(r#"error="invalid_token""#),
            code: Some("unauthorized"),
            ..case("unknown key", Some("unknown"), 401)
        },
        Case {
            code: Some("api_key_revoked"),
            challenge: Some(r#"error="invalid_token""#),
            ..case("revoked key", Some("revoked"), 401)
        },
        Case {
            code: Some("api_key_expired"),
            challenge: Some(r#"error="invalid_token""#),
            ..case("expired key", Some("expired"), 401)
        },
        Case {
            code: Some("wrong_tenant"),
            ..case("another tenant's key", Some("globex"), 401)
        },
        Case {
            tenant: None,
            code: Some("tenant_required"),
            challenge: Some(r#"error="invalid_request""#),
            ..case("no tenant header", Some("reader"), 400)
        },
        Case {
            tenant: Some("Not A Tenant"),
            code: Some("invalid_tenant"),
            ..case("malformed tenant", Some("reader"), 400)
        },
        Case {
            twice: true,
            code: Some("invalid_request"),
            challenge: Some(r#"error="invalid_request""#),
            ..case("two keys", Some("reader"), 400)
        },
        Case {
            post: true,
            code: Some("forbidden"),
            challenge: Some(r#"error="insufficient_scope", scope="contacts:write""#),
            ..case("reader writes", Some("reader"), 403)
        },
        Case {
            code: Some("forbidden"),
            challenge: Some(r#"error="insufficient_scope", scope="contacts:read""#),
            ..case("a key without permissions reads", Some("nobody"), 403)
        },
        Case {
            code: Some("ip_not_allowed"),
            ..case("outside the allowlist", Some("office"), 403)
        },
        // The peer address reaches verification: allowlisted loopback works.
        case("inside the allowlist", Some("loopback"), 200),
        Case {
            before: 1,
            code: Some("rate_limited"),
            retry_after: true,
            ..case("rate limited", Some("limited"), 429)
        },
        case("reader reads", Some("reader"), 200),
        Case {
            bearer: true,
            ..case("reader reads with a bearer token", Some("reader"), 200)
        },
        Case {
            post: true,
            ..case("writer writes", Some("writer"), 201)
        },
    ]
}

/// Keys for every role of the table, in `keys`.
async fn tokens(keys: &Keyward, clock: &ManualClock) -> HashMap<&'static str, String> {
    let admin = Actor::new("setup", "acme")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let make = |new: NewKey| {
        let admin = admin.clone();
        async move {
            keys.create(&admin, new)
                .await
                .expect("create")
                .token
                .expose_secret()
                .to_string()
        }
    };
    let read = || NewKey::new("k").permissions(["contacts:read"]);
    let mut t = HashMap::new();
    t.insert("reader", make(read()).await);
    t.insert(
        "writer",
        make(NewKey::new("w").permissions(["contacts:write"])).await,
    );
    let revoked = make(read()).await;
    let id = keys.verify(&revoked).await.expect("valid").id();
    keys.revoke(&admin, &id).await.expect("revoke");
    t.insert("revoked", revoked);
    t.insert("expired", make(read().expires_in(Duration::hours(1))).await);
    let office: IpAllowlist = "10.0.0.0/8".parse().expect("allowlist");
    t.insert("office", make(read().allowed_ips(office)).await);
    let loopback: IpAllowlist = "127.0.0.1/32, ::1/128".parse().expect("allowlist");
    t.insert("loopback", make(read().allowed_ips(loopback)).await);
    t.insert("nobody", make(NewKey::new("no permissions")).await);
    t.insert(
        "limited",
        make(read().rate_limit(RateLimit::per_minute(1).expect("valid"))).await,
    );
    let globex = Actor::new("setup", "globex")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let theirs = keys.create(&globex, read()).await.expect("create");
    t.insert("globex", theirs.token.expose_secret().to_string());
    t.insert("malformed", "sk_not_a_token".to_string());
    t.insert("unknown", common::forge::unknown_token(42));
    clock.advance(Duration::hours(2));
    t
}

fn keyward(store: impl KeyStore) -> (Keyward, ManualClock) {
    let clock = ManualClock::default();
    let keys = Keyward::builder(store, actix_example::catalog())
        .clock(clock.clone())
        .build()
        .expect("keyward");
    (keys, clock)
}

/// The axum adapter, configured as the actix example is.
async fn serve_axum(keys: Keyward) -> String {
    async fn list(key: Authenticated) -> Json<Value> {
        Json(json!({ "tenant": key.tenant() }))
    }
    async fn create(key: Authenticated) -> (http::StatusCode, Json<Value>) {
        (
            http::StatusCode::CREATED,
            Json(json!({ "tenant": key.tenant() })),
        )
    }
    let read = require(keys.catalog(), "contacts:read").expect("permission");
    let write = require(keys.catalog(), "contacts:write").expect("permission");
    let app = Router::new()
        .route(
            "/v1/contacts",
            get(list)
                .route_layer(read)
                .merge(post(create).route_layer(write)),
        )
        .layer(KeywardLayer::new(keys).tenant_header(HeaderName::from_static(TENANT)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    format!("http://{addr}")
}

/// The actix example, on its own actix system; stopped by the handle.
fn serve_actix(keys: Keyward) -> (String, actix_web::dev::ServerHandle) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let contacts = actix_web::web::Data::new(actix_example::Contacts::default());
            let routes = actix_example::routes(keys, contacts).expect("routes");
            let server =
                actix_web::HttpServer::new(move || actix_web::App::new().configure(routes.clone()))
                    .workers(1)
                    .listen(listener)
                    .expect("listen")
                    .run();
            let _ = tx.send(server.handle());
            let _ = server.await;
        });
    });
    let handle = rx.recv().expect("the actix server started");
    (format!("http://{addr}"), handle)
}

/// What a response says, with what varies between two runs (the key's
/// display prefix, the seconds to wait) normalised.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    body: Value,
    challenge: Option<String>,
    retry_after: bool,
}

async fn request(
    client: &reqwest::Client,
    base: &str,
    case: &Case,
    tokens: &HashMap<&'static str, String>,
) -> Seen {
    let url = format!("{base}/v1/contacts");
    let build = || {
        let mut r = if case.post {
            client.post(&url).json(&json!({ "name": "Ada" }))
        } else {
            client.get(&url)
        };
        if let Some(t) = case.tenant {
            r = r.header(TENANT, t);
        }
        if let Some(role) = case.key {
            let token = &tokens[role];
            if case.bearer || case.twice {
                r = r.header("authorization", format!("Bearer {token}"));
            }
            if !case.bearer || case.twice {
                r = r.header("x-api-key", token.as_str());
            }
        }
        r
    };
    for _ in 0..case.before {
        build().send().await.expect("request");
    }
    let response = build().send().await.expect("request");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (status, challenge, retry_after) = (
        response.status().as_u16(),
        header("www-authenticate"),
        header("retry-after").is_some(),
    );
    let mut body: Value = response.json().await.unwrap_or(Value::Null);
    // A success's body is the handler's, not keyward's.
    if status < 300 {
        body = Value::Null;
    }
    if let Some(error) = body.get_mut("error").and_then(Value::as_object_mut) {
        if let Some(key) = error.get_mut("key") {
            *key = json!("<key>");
        }
        if let Some(secs) = error.get_mut("retry_after_seconds") {
            *secs = json!(secs.is_u64());
        }
    }
    Seen {
        status,
        body,
        challenge,
        retry_after,
    }
}

async fn run_table(base: &str, tokens: &HashMap<&'static str, String>) -> Vec<Seen> {
    let client = reqwest::Client::new();
    let mut seen = Vec::new();
    for case in table() {
        seen.push(request(&client, base, &case, tokens).await);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_and_actix_refuse_alike() {
    let (axum_keys, axum_clock) = keyward(keyward::MemoryStore::new());
    let axum_tokens = tokens(&axum_keys, &axum_clock).await;
    let axum_base = serve_axum(axum_keys).await;
    let from_axum = run_table(&axum_base, &axum_tokens).await;

    let (actix_keys, actix_clock) = keyward(keyward::MemoryStore::new());
    let actix_tokens = tokens(&actix_keys, &actix_clock).await;
    let (actix_base, handle) = serve_actix(actix_keys);
    let from_actix = run_table(&actix_base, &actix_tokens).await;
    handle.stop(true).await;

    for ((case, a), b) in table().iter().zip(&from_axum).zip(&from_actix) {
        assert_eq!(a, b, "{}: axum and actix differ", case.name);
        assert_eq!(a.status, case.status, "{}: {a:?}", case.name);
        if let Some(code) = case.code {
            assert_eq!(a.body["error"]["code"], code, "{}: {a:?}", case.name);
        }
        match case.challenge {
            Some(expected) => assert!(
                a.challenge.as_deref().is_some_and(|c| c.contains(expected)),
                "{}: challenge {:?}",
                case.name,
                a.challenge
            ),
            None if a.status == 401 => assert!(a.challenge.is_some(), "{}", case.name),
            None => {}
        }
        assert_eq!(a.retry_after, case.retry_after, "{}: {a:?}", case.name);
        let body = a.body.to_string();
        let real = |t: &&String| t.len() > 40;
        for token in actix_tokens
            .values()
            .chain(axum_tokens.values())
            .filter(real)
        {
            if let Some(secret) = token.get(12..) {
                assert!(!body.contains(secret), "{}: a secret in {body}", case.name);
            }
        }
    }
    // The key is named by its display prefix when the token was readable.
    let revoked = table()
        .iter()
        .position(|c| c.name == "revoked key")
        .expect("case");
    assert_eq!(from_actix[revoked].body["error"]["key"], "<key>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_503_with_retry_after_in_both() {
    let token = common::forge::unknown_token(7);
    let tokens: HashMap<&'static str, String> = [("unknown", token)].into_iter().collect();
    let case = case("store down", Some("unknown"), 503);
    let client = reqwest::Client::new();

    let (keys, _) = keyward(DownStore);
    let axum_base = serve_axum(keys).await;
    let a = request(&client, &axum_base, &case, &tokens).await;

    let (keys, _) = keyward(DownStore);
    let (actix_base, handle) = serve_actix(keys);
    let b = request(&client, &actix_base, &case, &tokens).await;
    handle.stop(true).await;

    assert_eq!(a, b);
    assert_eq!(a.status, 503);
    assert_eq!(a.body["error"]["code"], "store_unavailable");
    assert!(a.retry_after);
}
