//! An API service protected by keyward, on an embedded SQLite file, or
//! as one instance of a fleet sharing PostgreSQL and Redis.
//!
//! ```sh
//! cargo run --example server --features axum,sqlite            # 127.0.0.1:3000
//! PORT=8080 KEYWARD_DB=/tmp/keys.db cargo run --example server --features axum,sqlite
//! # A fleet member: keys in PostgreSQL, limits shared through Redis.
//! DATABASE_URL=postgres://localhost/keys REDIS_URL=redis://127.0.0.1:6379 \
//!   cargo run --example server --features axum,sqlite,postgres,redis
//! ```
//!
//! Environment: `PORT` (default 3000; 0 picks a free one); `DATABASE_URL`,
//! a `postgres://` URL for [`PostgresStore`](keyward::PostgresStore) or an
//! SQLite file (also `KEYWARD_DB`; default `keyward-server.db`);
//! `REDIS_URL`, when set, shares rate limits and tenant quotas through
//! [`RedisLimiter`](keyward::RedisLimiter), waiting `REDIS_TIMEOUT_MS`
//! (default 50) for each decision. A Redis that is down at start does not
//! stop the service: limits are counted per instance until it answers.
//!
//! On first start it prints a bootstrap admin key, once (once per fleet:
//! instances starting together create one key). Routes:
//!
//! - `/`: the key-settings page (plain HTML, CSS and JS from `page/`):
//!   sign in with an admin key, then create, list, change, revoke,
//!   reactivate, roll and delete keys.
//! - `GET /v1/contacts` (`contacts:read`), `POST /v1/contacts`
//!   (`contacts:write`): a small demo resource, per tenant.
//! - `/api-keys`: keyward's management router
//!   ([`Management`](keyward::http::manage::Management)); admin keys
//!   holding `api_keys:read` read, `api_keys:write` change. Its OpenAPI
//!   document is `/api-keys/openapi.json`. The audit trail is kept in the
//!   key database.
//!
//! Lost every admin key? `cargo run --example server --features
//! axum,sqlite -- --recover-admin` mints a
//! new one in the same database, prints it once, records it in the audit
//! trail, and exits. It needs access to the database, which is the
//! operator's proof of authority.
//!
//! With feature `webhooks` it delivers key events (created, revoked,
//! leaked, the sweep's warnings, …) to the webhook endpoints tenants make
//! at `/api-keys/webhook-endpoints`; see `examples/webhook_receiver.rs`
//! for a receiver, and `KEYWARD_WEBHOOKS_ALLOW_LOCAL=1` to let it listen
//! on this machine.
//!
//! It runs the maintenance sweep hourly (logging inactivity and expiry
//! warnings) and, on Ctrl-C or SIGTERM, stops accepting requests, finishes
//! those in flight and writes pending "last used" times before exiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use keyward::http::manage::Management;
use keyward::http::{
    require, ApiError, Authenticated, ClientAddress, JsonBody, KeywardLayer, ProxyHeader,
};
use keyward::{
    Actor, AuditSettings, AuditTrail, Catalog, Keyward, NewKey, SqlAuditTrail, SqliteStore,
    TracingAuditSink,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// The permissions of this service.
///
/// # Panics
/// Never: the catalog is fixed and valid (a test builds it).
pub fn catalog() -> Catalog {
    Catalog::builder()
        .resource("contacts", ["read", "write"])
        .resource("api_keys", ["read", "write"])
        .build()
        .expect("a valid catalog")
}

/// The tenant of the bootstrap admin key.
pub const ADMIN_TENANT: &str = "default";

/// Opens (or creates) the SQLite key database and, if the admin tenant
/// holds no key, creates the bootstrap admin key and returns its token.
///
/// # Errors
/// The database cannot be opened or written.
pub async fn open(
    db: &std::path::Path,
) -> Result<(Keyward, Option<String>), Box<dyn std::error::Error>> {
    let store = SqliteStore::open(db).await?;
    let keys = Keyward::builder(store, catalog()).build()?;
    let token = bootstrap(&keys).await?;
    Ok((keys, token))
}

/// Creates the bootstrap admin key if the admin tenant holds no key, and
/// returns its token (shown once). Instances of a fleet starting together
/// create one key between them.
///
/// # Errors
/// The store cannot be read or written.
pub async fn bootstrap(keys: &Keyward) -> Result<Option<String>, keyward::KeyError> {
    let setup = Actor::new("bootstrap", ADMIN_TENANT)
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let admin = NewKey::new("bootstrap admin").permission_set(keys.catalog().all());
    let issued = keys.bootstrap(&setup, admin).await?;
    Ok(issued.map(|k| k.token.expose_secret().to_string()))
}

/// The key store the environment names: `DATABASE_URL` as a
/// `postgres://` URL (with the `postgres` feature), or the SQLite file
/// `DATABASE_URL` (a path or `sqlite://` URL) or `KEYWARD_DB` names,
/// `keyward-server.db` by default. Also what to print about it (never the
/// URL, which may hold a password). The audit trail is kept in the same
/// database.
async fn store_from_env() -> Result<Store, Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").ok();
    let scheme = url
        .as_deref()
        .and_then(|u| u.split_once(':'))
        .map(|(s, _)| s.to_ascii_lowercase());
    if let (Some(url), Some("postgres" | "postgresql")) = (url.as_deref(), scheme.as_deref()) {
        #[cfg(feature = "postgres")]
        {
            let store = keyward::PostgresStore::connect(url).await?;
            let trail = store.audit_trail(AuditSettings::default());
            return Ok((Arc::new(store), trail, "keys in PostgreSQL".into()));
        }
        #[cfg(not(feature = "postgres"))]
        {
            let _ = url;
            return Err(
                "DATABASE_URL is a PostgreSQL URL: build with `--features postgres`".into(),
            );
        }
    }
    let path = match (url, scheme.as_deref()) {
        (Some(u), Some("sqlite")) => {
            let rest = &u["sqlite:".len()..];
            rest.strip_prefix("//").unwrap_or(rest).to_string()
        }
        (Some(u), _) if u.contains("://") => {
            return Err(
                "DATABASE_URL: give a postgres:// URL, a sqlite:// URL or a file path".into(),
            )
        }
        (Some(path), _) => path,
        (None, _) => std::env::var("KEYWARD_DB").unwrap_or_else(|_| "keyward-server.db".into()),
    };
    let store = SqliteStore::open(std::path::Path::new(&path)).await?;
    let trail = store.audit_trail(AuditSettings::default());
    Ok((Arc::new(store), trail, format!("keys in {path}")))
}

/// A key store, its audit trail, and what to print about them.
type Store = (Arc<dyn keyward::store::KeyStore>, SqlAuditTrail, String);

/// Shares rate limits and quotas through the Redis `REDIS_URL` names, if
/// set (with the `redis` feature), waiting `REDIS_TIMEOUT_MS` (default 50)
/// for each decision. A Redis that is down at start does not stop the
/// service: it starts with limits counted per instance, and shares them
/// once Redis answers.
async fn limits_from_env(
    builder: keyward::KeywardBuilder,
) -> Result<(keyward::KeywardBuilder, &'static str), Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("REDIS_URL") else {
        return Ok((builder, "limits per instance"));
    };
    #[cfg(feature = "redis")]
    {
        let timeout = match std::env::var("REDIS_TIMEOUT_MS") {
            Ok(ms) => ms
                .parse()
                .map_err(|_| format!("REDIS_TIMEOUT_MS={ms:?} is not a number of milliseconds"))?,
            Err(_) => 50,
        };
        let timeout = std::time::Duration::from_millis(timeout);
        let settings = || {
            keyward::RedisLimiter::builder()
                .timeout(timeout)
                .retry_every(timeout.max(std::time::Duration::from_millis(250)))
        };
        let limiter = match settings().connect(&url).await {
            Ok(limiter) => limiter,
            Err(keyward::RedisLimiterError::Connect(why)) => {
                tracing::warn!(error = %why, "Redis unavailable at start; limits are counted per instance until it answers");
                settings().connect_lazy(&url)?
            }
            Err(e) => return Err(e.into()),
        };
        Ok((builder.rate_limiter(limiter), "limits shared through Redis"))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (url, builder);
        Err("REDIS_URL is set: build with `--features redis`".into())
    }
}

#[derive(Clone)]
struct AppState {
    contacts: Arc<Mutex<HashMap<String, Vec<Value>>>>,
}

/// The whole service: the key-settings page, the demo resource behind
/// the keyward layer, and the management router at `/api-keys`, reading
/// its audit events from `trail`.
///
/// # Panics
/// If `keys` was built with another catalog than [`catalog`].
pub fn app(keys: Keyward, trail: Option<Arc<dyn AuditTrail>>) -> Router {
    app_behind(keys, trail, ClientAddress::peer())
}

/// [`app`], reading client addresses (for keys with an IP allowlist) as
/// `client` says: the peer, or behind trusted proxies.
///
/// # Panics
/// If `keys` was built with another catalog than [`catalog`].
pub fn app_behind(
    keys: Keyward,
    trail: Option<Arc<dyn AuditTrail>>,
    client: ClientAddress,
) -> Router {
    let catalog = keys.catalog().clone();
    let need = |p: &str| require(&catalog, p).expect("permission in the catalog");
    let state = AppState {
        contacts: Arc::default(),
    };
    let contacts = Router::new()
        .route(
            "/v1/contacts",
            get(list_contacts).route_layer(need("contacts:read")),
        )
        .route(
            "/v1/contacts",
            axum::routing::post(add_contact).route_layer(need("contacts:write")),
        )
        .layer(KeywardLayer::new(keys.clone()).client_address(client.clone()))
        .with_state(state);
    // The webhook routes where this build delivers (feature `webhooks`).
    let mut manage = Management::new(keys)
        .base_path("/api-keys")
        .client_address(client)
        .webhooks(cfg!(feature = "webhooks"));
    if let Some(trail) = trail {
        manage = manage.audit_trail(trail);
    }
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/app.css", get(page::style))
        .merge(contacts)
        .nest(
            "/api-keys",
            manage.router().expect("api_keys:* in the catalog"),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such route.") })
}

/// The key-settings page: three static files, compiled in.
mod page {
    use super::*;

    /// Scripts and styles from this origin only; no inline script, no
    /// framing: a page that handles admin keys.
    const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
        img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
        base-uri 'none'; form-action 'none'";

    fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
        (
            [
                (CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
                (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            body,
        )
    }

    pub(super) async fn index() -> impl IntoResponse {
        file("text/html; charset=utf-8", include_str!("page/index.html"))
    }

    pub(super) async fn script() -> impl IntoResponse {
        file(
            "text/javascript; charset=utf-8",
            include_str!("page/app.js"),
        )
    }

    pub(super) async fn style() -> impl IntoResponse {
        file("text/css; charset=utf-8", include_str!("page/app.css"))
    }
}

// ---- the demo resource ----

async fn list_contacts(State(s): State<AppState>, key: Authenticated) -> Json<Value> {
    let all = s.contacts.lock().unwrap_or_else(PoisonError::into_inner);
    let mine = all.get(key.tenant()).cloned().unwrap_or_default();
    Json(json!({ "data": mine }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewContact {
    name: String,
    email: Option<String>,
}

async fn add_contact(
    State(s): State<AppState>,
    key: Authenticated,
    JsonBody(c): JsonBody<NewContact>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = c.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid(
            "name",
            "invalid_name",
            "Give a name of 1 to 200 characters.",
        ));
    }
    let contact = json!({ "name": name, "email": c.email });
    let mut all = s.contacts.lock().unwrap_or_else(PoisonError::into_inner);
    let mine = all.entry(key.tenant().to_string()).or_default();
    if mine.len() >= 1_000 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_contacts",
            "This demo keeps 1,000 contacts per tenant.",
        ));
    }
    mine.push(contact.clone());
    Ok((StatusCode::CREATED, Json(contact)))
}

/// Mints a new admin key for an operator who lost every admin key: in the
/// admin tenant, holding every permission, recorded in the audit trail as
/// made by `operator-recovery`. The token is returned once.
///
/// # Errors
/// The store cannot be written.
pub async fn recover_admin(keys: &Keyward) -> Result<String, keyward::KeyError> {
    let operator = Actor::new("operator-recovery", ADMIN_TENANT)
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let stamp = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let admin =
        NewKey::new(format!("recovered admin ({stamp})")).permission_set(keys.catalog().all());
    let issued = keys.create(&operator, admin).await?;
    Ok(issued.token.expose_secret().to_string())
}

/// Starts the webhook delivery worker (feature `webhooks`): the events of
/// every tenant's keys go to the endpoints made through
/// `/api-keys/webhook-endpoints`. `KEYWARD_WEBHOOKS_ALLOW_LOCAL=1` lets
/// endpoints be plain `http://` on this machine or network (the
/// walkthrough's receiver): never in production.
#[cfg(feature = "webhooks")]
fn webhook_worker(
    keys: &Keyward,
) -> Result<tokio::task::JoinHandle<()>, Box<dyn std::error::Error>> {
    let local = std::env::var("KEYWARD_WEBHOOKS_ALLOW_LOCAL").as_deref() == Ok("1");
    let transport = keyward::webhook::HttpTransport::builder()
        .allow_private_networks(local)
        .allow_plain_http(local)
        .build()?;
    println!(
        "webhooks: delivering to {} endpoints",
        if local {
            "any (local allowed)"
        } else {
            "public HTTPS"
        }
    );
    Ok(keys.spawn_webhook_worker(Arc::new(transport), keyward::DeliverySettings::default()))
}

/// Mounts GitHub's leaked-token endpoint at `POST /secret-scanning` when
/// `GITHUB_SECRET_SCANNING_KEYS` names a file of GitHub's public keys
/// (the JSON of `https://api.github.com/meta/public_keys/secret_scanning`,
/// downloaded by the operator: the service makes no outbound request).
fn with_secret_scanning(app: Router, keys: &Keyward) -> Result<Router, Box<dyn std::error::Error>> {
    let Ok(path) = std::env::var("GITHUB_SECRET_SCANNING_KEYS") else {
        return Ok(app);
    };
    #[derive(Deserialize)]
    struct Listed {
        public_keys: Vec<keyward::leak::ScannerKey>,
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("GITHUB_SECRET_SCANNING_KEYS={path:?}: {e}"))?;
    let listed: Listed = serde_json::from_str(&text)
        .map_err(|e| format!("GITHUB_SECRET_SCANNING_KEYS={path:?}: not GitHub's key list: {e}"))?;
    let mut scanner = keyward::leak::ScannerKeys::new();
    for key in &listed.public_keys {
        scanner = scanner.with_key(&key.key_identifier, &key.key)?;
    }
    println!(
        "leaked-token reports accepted at POST /secret-scanning ({} GitHub keys)",
        listed.public_keys.len()
    );
    Ok(app.nest(
        "/secret-scanning",
        keyward::http::secret_scanning(keys.clone(), Arc::new(scanner)),
    ))
}

/// Whether the operator asked for a new admin key: `--recover-admin`.
/// A flag, not an environment variable: one left set in a unit file would
/// mint an admin key into the logs at every restart.
fn recovery_asked() -> bool {
    std::env::args().skip(1).any(|a| a == "--recover-admin")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// The recorder of keyward's metrics (feature `metrics`), installed
/// before anything is verified: metric handles bind to the recorder
/// installed when they are made.
#[cfg(feature = "metrics")]
type Metrics = metrics_exporter_prometheus::PrometheusHandle;
#[cfg(not(feature = "metrics"))]
type Metrics = ();

fn install_metrics() -> Result<Metrics, Box<dyn std::error::Error>> {
    #[cfg(feature = "metrics")]
    return Ok(metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?);
    #[cfg(not(feature = "metrics"))]
    Ok(())
}

/// `GET /metrics`: keyward's metrics in Prometheus text format (feature
/// `metrics`). Without the feature, the app as it is.
fn with_metrics(app: Router, metrics: Metrics) -> Router {
    #[cfg(feature = "metrics")]
    {
        let scrape = get(move || {
            let text = metrics.render();
            async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
        });
        app.route("/metrics", scrape)
    }
    #[cfg(not(feature = "metrics"))]
    {
        let () = metrics;
        app
    }
}

/// `KEYWARD_TRUSTED_PROXIES=10.0.0.0/8,...`: the load balancers in
/// front, whose `X-Forwarded-For` names the client; unset, the peer is.
fn client_from_env() -> Result<ClientAddress, Box<dyn std::error::Error>> {
    let Ok(list) = std::env::var("KEYWARD_TRUSTED_PROXIES") else {
        return Ok(ClientAddress::peer());
    };
    let proxies = list
        .split(',')
        .map(|n| n.trim().parse::<keyward::IpNet>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("KEYWARD_TRUSTED_PROXIES={list:?}: {e}"))?;
    Ok(ClientAddress::behind_proxies(
        proxies,
        ProxyHeader::XForwardedFor,
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // The unit without the `metrics` feature.
    #[allow(clippy::let_unit_value)]
    let metrics = install_metrics()?;
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PORT={p:?} is not a port number"))?,
        Err(_) => 3000,
    };
    let (store, trail, where_keys) = store_from_env().await?;
    let (builder, how_limited) = limits_from_env(Keyward::builder(store, catalog())).await?;
    let keys = builder.audit((trail.clone(), TracingAuditSink)).build()?;
    if recovery_asked() {
        let token = recover_admin(&keys).await?;
        trail.flush().await;
        println!("New admin key (shown once, store it now):\n\n    {token}\n");
        println!("Revoke the lost admin keys on the key-settings page.");
        return Ok(());
    }
    if let Some(token) = bootstrap(&keys).await? {
        println!("Bootstrap admin key (shown once, store it now):\n\n    {token}\n");
    }
    let sweeper = keys.spawn_sweeper(std::time::Duration::from_secs(3600), |report| match report {
        Ok(r) => {
            for w in &r.warnings {
                tracing::warn!(key = %w.prefix, tenant = %w.tenant, kind = ?w.kind, deadline = %w.deadline, "API key warning");
            }
            for d in &r.deleted {
                tracing::info!(key = %d.prefix, tenant = %d.tenant, "API key deleted for disuse");
            }
        }
        Err(e) => tracing::error!(error = %e, "sweep failed"),
    });
    #[cfg(feature = "webhooks")]
    let webhooks = webhook_worker(&keys)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "listening on http://{} ({where_keys}, {how_limited})",
        listener.local_addr()?
    );
    // Peer addresses reach the layer: keys with an IP allowlist need them.
    let client = client_from_env()?;
    let app = app_behind(keys.clone(), Some(Arc::new(trail.clone())), client);
    let app = with_secret_scanning(app, &keys)?;
    let service =
        with_metrics(app, metrics).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    sweeper.abort();
    #[cfg(feature = "webhooks")]
    webhooks.abort();
    let flushed = keys.flush_last_used().await?;
    trail.flush().await;
    println!("stopped; wrote {flushed} pending last-used times");
    Ok(())
}
