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
//! - `GET /v1/contacts` (`contacts:read`), `POST /v1/contacts`
//!   (`contacts:write`): a small demo resource, per tenant.
//! - `/api-keys` (`api_keys:read` to read, `api_keys:write` to change):
//!   `POST` create (returns the token once, `Cache-Control: no-store`),
//!   `GET` list, `GET /{id}`, `PATCH /{id}` (name, permissions, rate limit:
//!   all or nothing), `POST /{id}/revoke`, `POST /{id}/reactivate`,
//!   `POST /{id}/roll` (grace), `DELETE /{id}`.
//!
//! A key acting here is bounded by itself: what it creates or changes
//! never holds more than it does (keyward's [`authority`](keyward::authority)).
//!
//! It runs the maintenance sweep hourly (logging inactivity and expiry
//! warnings) and, on Ctrl-C or SIGTERM, stops accepting requests, finishes
//! those in flight and writes pending "last used" times before exiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderValue, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use keyward::http::{require, ApiError, Authenticated, KeywardLayer};
use keyward::{Actor, Catalog, KeyId, KeyInfo, KeyUpdate, Keyward, NewKey, RateLimit, SqliteStore};
use serde::{Deserialize, Serialize};
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
/// URL, which may hold a password).
async fn store_from_env(
) -> Result<(Arc<dyn keyward::store::KeyStore>, String), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").ok();
    let scheme = url
        .as_deref()
        .and_then(|u| u.split_once(':'))
        .map(|(s, _)| s.to_ascii_lowercase());
    if let (Some(url), Some("postgres" | "postgresql")) = (url.as_deref(), scheme.as_deref()) {
        #[cfg(feature = "postgres")]
        {
            let store = keyward::PostgresStore::connect(url).await?;
            return Ok((Arc::new(store), "keys in PostgreSQL".into()));
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
    Ok((Arc::new(store), format!("keys in {path}")))
}

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
    keys: Keyward,
    contacts: Arc<Mutex<HashMap<String, Vec<Value>>>>,
}

/// The whole service: the demo resource and the management API, behind
/// the keyward layer.
///
/// # Panics
/// If `keys` was built with another catalog than [`catalog`].
pub fn app(keys: Keyward) -> Router {
    let catalog = keys.catalog().clone();
    let need = |p: &str| require(&catalog, p).expect("permission in the catalog");
    let state = AppState {
        keys: keys.clone(),
        contacts: Arc::default(),
    };
    let contacts = Router::new()
        .route(
            "/v1/contacts",
            get(list_contacts).route_layer(need("contacts:read")),
        )
        .route(
            "/v1/contacts",
            post(add_contact).route_layer(need("contacts:write")),
        );
    let read_keys = Router::new()
        .route("/api-keys", get(list_keys))
        .route("/api-keys/{id}", get(get_key))
        .route_layer(need("api_keys:read"));
    let write_keys = Router::new()
        .route("/api-keys", post(create_key))
        .route(
            "/api-keys/{id}",
            axum::routing::patch(update_key).delete(delete_key),
        )
        .route("/api-keys/{id}/revoke", post(revoke_key))
        .route("/api-keys/{id}/reactivate", post(reactivate_key))
        .route("/api-keys/{id}/roll", post(roll_key))
        .route_layer(need("api_keys:write"));
    Router::new()
        .merge(contacts)
        .merge(read_keys)
        .merge(write_keys)
        .layer(KeywardLayer::new(keys))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such route.") })
        .with_state(state)
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
    Body(c): Body<NewContact>,
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

// ---- the management API ----

/// The calling key as a key manager (the route layer checked its
/// `api_keys:*` permission).
fn manager(key: &Authenticated) -> Actor {
    key.actor().may_manage_keys(true)
}

fn key_id(raw: &str) -> Result<KeyId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No API key with this id.",
        )
    })
}

/// A JSON body whose errors are API errors: 415 without a JSON content
/// type, 400 for broken JSON, 422 naming the field for the rest.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send a JSON body with Content-Type: application/json.",
            )),
            Err(JsonRejection::JsonDataError(e)) => {
                let text = e.body_text();
                let mut err = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    text.clone(),
                );
                err.field = field_of(&text);
                Err(err)
            }
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                e.body_text(),
            )),
        }
    }
}

/// The field a deserialization error names, if it is one of ours.
fn field_of(text: &str) -> Option<&'static str> {
    const FIELDS: &[&str] = &[
        "name",
        "email",
        "permissions",
        "expires_at",
        "expires_in_seconds",
        "metadata",
        "rate_limit_per_minute",
        "grace_seconds",
    ];
    // "…target type: permissions[0]: invalid type…" or "missing field `name`".
    let path = text
        .split_once("target type: ")
        .map(|(_, rest)| rest.split([':', '[', '.']).next().unwrap_or(""));
    let quoted = text.split('`').nth(1);
    FIELDS
        .iter()
        .copied()
        .find(|f| quoted == Some(*f) || path == Some(*f))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    #[serde(default)]
    permissions: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
    expires_in_seconds: Option<i64>,
    metadata: Option<Value>,
    rate_limit_per_minute: Option<u32>,
}

#[derive(Serialize)]
struct Created {
    /// Shown once: store it now.
    token: String,
    key: KeyInfo,
}

/// A response carrying a plaintext token: 201, and never cached by a
/// browser or proxy.
fn issued(created: Created) -> impl axum::response::IntoResponse {
    (
        StatusCode::CREATED,
        [(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(created),
    )
}

async fn create_key(
    State(s): State<AppState>,
    key: Authenticated,
    Body(body): Body<CreateKey>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let mut new = NewKey::new(body.name).permissions(body.permissions);
    match (body.expires_at, body.expires_in_seconds) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "expires_at",
                "invalid_expiry",
                "Give expires_at or expires_in_seconds, not both.",
            ))
        }
        (Some(at), None) => new = new.expires_at(at),
        (None, Some(secs)) => {
            let ttl = Duration::try_seconds(secs).ok_or_else(|| {
                ApiError::invalid("expires_in_seconds", "invalid_expiry", "Out of range.")
            })?;
            new = new.expires_in(ttl);
        }
        (None, None) => {}
    }
    if let Some(m) = body.metadata {
        new = new.metadata(m);
    }
    if let Some(n) = body.rate_limit_per_minute {
        new = new.rate_limit(per_minute(n)?);
    }
    let created = s.keys.create(&manager(&key), new).await?;
    Ok(issued(Created {
        token: created.token.expose_secret().to_string(),
        key: created.key,
    }))
}

fn per_minute(n: u32) -> Result<RateLimit, ApiError> {
    RateLimit::per_minute(n).map_err(|_| {
        ApiError::invalid(
            "rate_limit_per_minute",
            "invalid_rate_limit",
            "Must be at least 1.",
        )
    })
}

#[derive(Serialize)]
struct KeyList {
    data: Vec<KeyInfo>,
}

async fn list_keys(
    State(s): State<AppState>,
    key: Authenticated,
) -> Result<Json<KeyList>, ApiError> {
    let data = s.keys.list(&manager(&key), key.tenant()).await?;
    Ok(Json(KeyList { data }))
}

async fn get_key(
    State(s): State<AppState>,
    key: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    Ok(Json(s.keys.get(&manager(&key), &key_id(&id)?).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateKey {
    name: Option<String>,
    permissions: Option<Vec<String>>,
    /// A number sets the key's limit; `null` goes back to the default.
    #[serde(default, deserialize_with = "present")]
    rate_limit_per_minute: Option<Option<u32>>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

async fn update_key(
    State(s): State<AppState>,
    key: Authenticated,
    Path(id): Path<String>,
    Body(body): Body<UpdateKey>,
) -> Result<Json<KeyInfo>, ApiError> {
    let id = key_id(&id)?;
    let mut update = KeyUpdate::new();
    if let Some(name) = body.name {
        update = update.name(name);
    }
    if let Some(permissions) = body.permissions {
        update = update.permissions(permissions);
    }
    if let Some(limit) = body.rate_limit_per_minute {
        update = update.rate_limit(limit.map(per_minute).transpose()?);
    }
    if update.is_empty() {
        return Err(ApiError::invalid(
            "name",
            "empty_update",
            "Give a name, permissions, a rate limit, or several.",
        ));
    }
    // One call, one conditional write: all of it or none of it.
    Ok(Json(s.keys.update(&manager(&key), &id, update).await?))
}

async fn revoke_key(
    State(s): State<AppState>,
    key: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    Ok(Json(s.keys.revoke(&manager(&key), &key_id(&id)?).await?))
}

async fn reactivate_key(
    State(s): State<AppState>,
    key: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    Ok(Json(
        s.keys.reactivate(&manager(&key), &key_id(&id)?).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Roll {
    #[serde(default)]
    grace_seconds: i64,
}

async fn roll_key(
    State(s): State<AppState>,
    key: Authenticated,
    Path(id): Path<String>,
    Body(body): Body<Roll>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let grace = Duration::try_seconds(body.grace_seconds)
        .ok_or_else(|| ApiError::invalid("grace_seconds", "invalid_grace", "Out of range."))?;
    let rolled = s.keys.roll(&manager(&key), &key_id(&id)?, grace).await?;
    Ok(issued(Created {
        token: rolled.token.expose_secret().to_string(),
        key: rolled.key,
    }))
}

async fn delete_key(
    State(s): State<AppState>,
    key: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.keys.delete(&manager(&key), &key_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PORT={p:?} is not a port number"))?,
        Err(_) => 3000,
    };
    let (store, where_keys) = store_from_env().await?;
    let (builder, how_limited) = limits_from_env(Keyward::builder(store, catalog())).await?;
    let keys = builder.build()?;
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
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "listening on http://{} ({where_keys}, {how_limited})",
        listener.local_addr()?
    );
    axum::serve(listener, app(keys.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    sweeper.abort();
    let flushed = keys.flush_last_used().await?;
    println!("stopped; wrote {flushed} pending last-used times");
    Ok(())
}
