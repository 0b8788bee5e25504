//! The example service (`examples/server`) over real HTTP, for the tests
//! that drive it: served on a random loopback port, driven with reqwest.

#[path = "../../examples/server/main.rs"]
pub mod server;

use std::sync::Arc;

use axum::Router;
use keyward::{Actor, Keyward, ManualClock, MemoryAuditSink, NewKey, RateLimit, SqliteStore};
use reqwest::header::HeaderMap;
use reqwest::{Client, StatusCode};
use serde_json::Value;

/// Serves `app` on 127.0.0.1 at a random port; the base URL.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).await.expect("serve");
    });
    format!("http://{addr}")
}

pub struct Service {
    pub base: String,
    pub keys: Keyward,
    pub clock: ManualClock,
    pub store: SqliteStore,
    pub admin: String,
    pub http: Client,
    /// The audit events the service recorded.
    pub audit: MemoryAuditSink,
}

/// The example service over an in-memory SQLite store and a manual clock,
/// with its bootstrap admin key.
pub async fn example() -> Service {
    let store = SqliteStore::in_memory().await.expect("sqlite");
    let clock = ManualClock::default();
    let audit = MemoryAuditSink::default();
    let keys = Keyward::builder(store.clone(), server::catalog())
        .clock(clock.clone())
        .audit(audit.clone())
        .tenant_quota_for("quota-tenant", RateLimit::per_minute(1).expect("valid"))
        .build()
        .expect("config");
    let bootstrap = Actor::new("bootstrap", server::ADMIN_TENANT)
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let admin = keys
        .create(
            &bootstrap,
            NewKey::new("admin").permission_set(keys.catalog().all()),
        )
        .await
        .expect("admin key");
    let base = serve(server::app(keys.clone(), Some(Arc::new(audit.clone())))).await;
    Service {
        base,
        keys,
        clock,
        store,
        admin: admin.token.expose_secret().to_string(),
        http: Client::new(),
        audit,
    }
}

impl Service {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {text:?}"))
        };
        (status, headers, body)
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> (StatusCode, HeaderMap, Value) {
        self.call(reqwest::Method::GET, path, key, None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, HeaderMap, Value) {
        self.call(reqwest::Method::POST, path, Some(key), Some(body))
            .await
    }

    /// Creates a key through the API; (token, id).
    pub async fn create(&self, body: Value) -> (String, String) {
        let (status, _, created) = self.post("/api-keys", &self.admin, body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        (
            created["token"].as_str().expect("token").to_string(),
            created["key"]["id"].as_str().expect("id").to_string(),
        )
    }
}

pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}
