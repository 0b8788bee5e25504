//! HTTP integration (feature `axum`): a [`tower::Layer`] that authenticates
//! every request, axum extractors, a per-route permission layer, and one
//! JSON error shape for every refusal.
//!
//! ```
//! use axum::{routing::get, Router};
//! use keyward::http::{require, Authenticated, KeywardLayer};
//! use keyward::{Catalog, Keyward, MemoryStore};
//!
//! async fn list_contacts(key: Authenticated) -> String {
//!     format!("contacts of {}", key.tenant())
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let catalog = Catalog::builder().resource("contacts", ["read", "write"]).build()?;
//! let keys = Keyward::builder(MemoryStore::new(), catalog).build()?;
//! let app: Router = Router::new()
//!     .route("/v1/contacts", get(list_contacts))
//!     .route_layer(require(keys.catalog(), "contacts:read")?)
//!     .layer(KeywardLayer::new(keys));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! Keys are read from `x-api-key`, then `Authorization: Bearer`, unless
//! [`KeywardLayer::key_sources`] says otherwise. Every refusal is an
//! [`ApiError`] rendered as
//! `{"error":{"code":"unauthorized","message":"Missing or invalid API key."}}`
//! (plus the key's display prefix when the token was well-formed, never
//! the secret), with `Retry-After` where a time is known; a host can
//! replace the rendering with [`KeywardLayer::error_renderer`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::header::{HeaderName, AUTHORIZATION, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::error::{Forbidden, KeyError, VerifyError};
use crate::key::Verified;
use crate::permission::{Catalog, Permission, PermissionError};
use crate::token::DisplayPrefix;
use crate::Keyward;

/// Where a request may carry its key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySource {
    /// The whole value of a header, e.g. `x-api-key: sk_…`.
    Header(HeaderName),
    /// `Authorization: Bearer sk_…` (scheme case-insensitive).
    Bearer,
}

/// A refusal, in a form every framework can render: status, stable code,
/// message for humans, and what else is known. [`IntoResponse`] renders
/// the default JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable, snake_case: `unauthorized`, `api_key_expired`, `forbidden`,
    /// `rate_limited`, … (see the README's table).
    pub code: &'static str,
    /// For humans; never contains a secret.
    pub message: String,
    /// The display prefix of the presented key, when it was well-formed.
    pub key: Option<DisplayPrefix>,
    /// The request field at fault (for 422).
    pub field: Option<&'static str>,
    /// The permission the key lacks (for 403).
    pub permission: Option<String>,
    /// When to retry (429, 503); sent as `Retry-After` in whole seconds.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with no extra details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            key: None,
            field: None,
            permission: None,
            retry_after: None,
        }
    }

    /// 401 `unauthorized`: no key, or one that is malformed or unknown.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid API key.",
        )
    }

    /// 422 naming the request field at fault.
    pub fn invalid(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
        }
    }

    /// The same error naming the presented key by its display prefix.
    pub fn with_key(mut self, key: Option<DisplayPrefix>) -> Self {
        self.key = key;
        self
    }

    /// The refusal of a verification.
    pub fn from_verify(err: &VerifyError) -> Self {
        let e = |status, code, message: &str| Self::new(status, code, message);
        match err {
            VerifyError::Malformed | VerifyError::Invalid => Self::unauthorized(),
            VerifyError::Expired => e(
                StatusCode::UNAUTHORIZED,
                "api_key_expired",
                "API key has expired",
            ),
            VerifyError::Revoked => e(
                StatusCode::UNAUTHORIZED,
                "api_key_revoked",
                "API key has been revoked.",
            ),
            VerifyError::Inactive => e(
                StatusCode::UNAUTHORIZED,
                "api_key_inactive",
                "API key was disabled after a long time without use; create a new key.",
            ),
            VerifyError::WrongTenant => e(
                StatusCode::UNAUTHORIZED,
                "wrong_tenant",
                "API key does not belong to this tenant.",
            ),
            VerifyError::RateLimited { retry_after } => Self {
                retry_after: Some(positive(*retry_after)),
                ..e(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Rate limit exceeded for this API key.",
                )
            },
            VerifyError::QuotaExceeded { retry_after } => Self {
                retry_after: Some(positive(*retry_after)),
                ..e(
                    StatusCode::TOO_MANY_REQUESTS,
                    "quota_exceeded",
                    "Request quota exceeded for this tenant.",
                )
            },
            VerifyError::UsageExceeded => e(
                StatusCode::TOO_MANY_REQUESTS,
                "usage_exceeded",
                "API key has no uses left.",
            ),
            _ => Self {
                retry_after: Some(Duration::from_secs(1)),
                ..e(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "API keys cannot be checked right now; retry shortly.",
                )
            },
        }
    }

    /// 403 `forbidden` naming the missing permission (or 500 for a
    /// permission the catalog does not have: the host's mistake).
    pub fn from_forbidden(err: &Forbidden) -> Self {
        match err {
            Forbidden::Missing(p) => Self {
                permission: Some(p.clone()),
                ..Self::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("API key lacks permission `{p}`."),
                )
            },
            _ => {
                tracing::error!(target: "keyward", error = %err, "route requires an unknown permission");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "The server is misconfigured.",
                )
            }
        }
    }

    /// The refusal of a management call (create, revoke, …).
    pub fn from_key_error(err: &KeyError) -> Self {
        fn e(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
            ApiError::new(status, code, message)
        }
        match err {
            KeyError::Forbidden { .. } => e(
                StatusCode::FORBIDDEN,
                "forbidden",
                "This API key may not manage API keys.",
            ),
            KeyError::NotFound(id) => e(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("No API key with id {id}."),
            ),
            KeyError::InvalidName(why) => {
                Self::invalid("name", "invalid_name", format!("Invalid name: {why}."))
            }
            KeyError::PermissionEscalation { missing } => Self {
                permission: missing.first().cloned(),
                ..e(
                    StatusCode::FORBIDDEN,
                    "permission_escalation",
                    format!(
                        "A key cannot hold more than its creator; you lack {}.",
                        missing.join(", ")
                    ),
                )
            },
            KeyError::Permission(p) => {
                Self::invalid("permissions", "unknown_permission", p.to_string())
            }
            KeyError::InvalidExpiry => Self::invalid(
                "expires_at",
                "invalid_expiry",
                "The expiry must be in the future and no later than 9999-12-31.",
            ),
            KeyError::NotActive { .. } => e(StatusCode::CONFLICT, "not_active", err.to_string()),
            KeyError::InvalidGrace => Self::invalid(
                "grace_seconds",
                "invalid_grace",
                "The grace period must be zero or positive.",
            ),
            KeyError::InvalidTenant(_) => {
                Self::invalid("tenant", "invalid_tenant", err.to_string())
            }
            KeyError::InvalidMetadata(why) => Self::invalid(
                "metadata",
                "invalid_metadata",
                format!("Invalid metadata: {why}."),
            ),
            KeyError::Store(_) | KeyError::Entropy(_) => Self {
                retry_after: Some(Duration::from_secs(1)),
                ..e(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "API keys cannot be managed right now; retry shortly.",
                )
            },
            _ => {
                tracing::error!(target: "keyward", error = %err, "management call failed");
                e(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "The request could not be completed.",
                )
            }
        }
    }

    /// The default body: `{"error":{"code":…,"message":…}}`, plus `key`,
    /// `field`, `permission` and `retry_after_seconds` when known.
    pub fn to_json(&self) -> serde_json::Value {
        let mut error = serde_json::Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.clone().into());
        if let Some(k) = &self.key {
            error.insert("key".into(), k.as_str().into());
        }
        if let Some(f) = self.field {
            error.insert("field".into(), f.into());
        }
        if let Some(p) = &self.permission {
            error.insert("permission".into(), p.clone().into());
        }
        if let Some(r) = self.retry_after {
            error.insert("retry_after_seconds".into(), retry_secs(r).into());
        }
        serde_json::json!({ "error": error })
    }
}

fn positive(d: chrono::Duration) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
}

/// Whole seconds, rounded up, at least 1.
fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.to_json())).into_response();
        if let Some(r) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&retry_secs(r).max(1).to_string()) {
                response.headers_mut().insert(RETRY_AFTER, v);
            }
        }
        response
    }
}

impl From<KeyError> for ApiError {
    fn from(err: KeyError) -> Self {
        Self::from_key_error(&err)
    }
}

impl From<Forbidden> for ApiError {
    fn from(err: Forbidden) -> Self {
        Self::from_forbidden(&err)
    }
}

/// Turns an [`ApiError`] into a response: see
/// [`KeywardLayer::error_renderer`].
pub type ErrorRenderer = Arc<dyn Fn(ApiError) -> Response + Send + Sync>;

fn default_renderer() -> ErrorRenderer {
    Arc::new(IntoResponse::into_response)
}

/// The renderer in force, put in request extensions by the layer so that
/// [`RequirePermission`] and the extractors use the host's too.
#[derive(Clone)]
struct Renderer(ErrorRenderer);

struct Config {
    sources: Vec<KeySource>,
    tenant_header: Option<HeaderName>,
    render: ErrorRenderer,
}

/// Authenticates every request with a [`Keyward`]: reads the key, verifies
/// it (with the tenant from a header, if configured), and either refuses
/// with an [`ApiError`] or passes the request on with the [`Verified`] key
/// in its extensions (read it with [`Authenticated`]) and a `tracing` span
/// `api_key` carrying the key's display prefix and tenant.
#[derive(Clone)]
#[must_use]
pub struct KeywardLayer {
    keys: Keyward,
    config: Arc<Config>,
}

impl fmt::Debug for KeywardLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeywardLayer")
            .field("sources", &self.config.sources)
            .field("tenant_header", &self.config.tenant_header)
            .finish_non_exhaustive()
    }
}

impl KeywardLayer {
    /// Keys from `x-api-key`, then `Authorization: Bearer`; no tenant
    /// check; the default JSON errors.
    pub fn new(keys: Keyward) -> Self {
        Self {
            keys,
            config: Arc::new(Config {
                sources: vec![
                    KeySource::Header(HeaderName::from_static("x-api-key")),
                    KeySource::Bearer,
                ],
                tenant_header: None,
                render: default_renderer(),
            }),
        }
    }

    fn config(mut self, f: impl FnOnce(&mut Config)) -> Self {
        let old = &self.config;
        let mut config = Config {
            sources: old.sources.clone(),
            tenant_header: old.tenant_header.clone(),
            render: old.render.clone(),
        };
        f(&mut config);
        self.config = Arc::new(config);
        self
    }

    /// Where to look for the key, in order; the first source present is
    /// used.
    pub fn key_sources(self, sources: impl IntoIterator<Item = KeySource>) -> Self {
        let sources: Vec<KeySource> = sources.into_iter().collect();
        self.config(|c| c.sources = sources)
    }

    /// Turns tenant checking on: each request must name its tenant in this
    /// header (e.g. `x-tenant-name`), and the key must belong to it (or,
    /// with nested tenants, to an ancestor).
    pub fn tenant_header(self, name: HeaderName) -> Self {
        self.config(|c| c.tenant_header = Some(name))
    }

    /// Replaces how refusals are rendered (the layer's, the permission
    /// layer's and the extractors').
    pub fn error_renderer(
        self,
        render: impl Fn(ApiError) -> Response + Send + Sync + 'static,
    ) -> Self {
        let render: ErrorRenderer = Arc::new(render);
        self.config(|c| c.render = render)
    }
}

impl<S> Layer<S> for KeywardLayer {
    type Service = KeywardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KeywardService {
            inner,
            keys: self.keys.clone(),
            config: self.config.clone(),
        }
    }
}

/// The service [`KeywardLayer`] wraps around yours.
#[derive(Clone)]
pub struct KeywardService<S> {
    inner: S,
    keys: Keyward,
    config: Arc<Config>,
}

impl<S> fmt::Debug for KeywardService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeywardService").finish_non_exhaustive()
    }
}

/// The presented key, or why there is none usable.
fn extract<'h>(headers: &'h HeaderMap, sources: &[KeySource]) -> Result<&'h str, ApiError> {
    for source in sources {
        let name = match source {
            KeySource::Header(name) => name,
            KeySource::Bearer => &AUTHORIZATION,
        };
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else {
            continue;
        };
        // Two values for one credential header: refuse rather than guess
        // which one a proxy and the application each read.
        if values.next().is_some() {
            return Err(ApiError::unauthorized());
        }
        let value = value.to_str().map_err(|_| ApiError::unauthorized())?;
        match source {
            KeySource::Header(_) => return Ok(value.trim()),
            KeySource::Bearer => {
                let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
                if scheme.eq_ignore_ascii_case("bearer") {
                    return Ok(rest.trim());
                }
                // Another scheme (Basic, …) is not an API key.
            }
        }
    }
    Err(ApiError::unauthorized())
}

async fn authenticate(
    keys: &Keyward,
    config: &Config,
    headers: &HeaderMap,
) -> Result<Verified, ApiError> {
    let token = extract(headers, &config.sources)?;
    let prefix = keys
        .token_format()
        .parse(token)
        .ok()
        .map(|p| p.display_prefix());
    let result = match &config.tenant_header {
        None => keys.verify(token).await,
        Some(name) => {
            let tenant = match headers.get(name).map(HeaderValue::to_str) {
                Some(Ok(t)) if !t.trim().is_empty() => t.trim(),
                _ => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "tenant_required",
                        format!("The {name} header is required."),
                    )
                    .with_key(prefix))
                }
            };
            keys.verify_for_tenant(token, tenant).await
        }
    };
    result.map_err(|e| ApiError::from_verify(&e).with_key(prefix))
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for KeywardService<S>
where
    S: Service<Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let keys = self.keys.clone();
        let config = self.config.clone();
        Box::pin(async move {
            match authenticate(&keys, &config, req.headers()).await {
                Ok(verified) => {
                    let span = tracing::info_span!(
                        "api_key",
                        key = %verified.display_prefix(),
                        tenant = %verified.tenant(),
                    );
                    req.extensions_mut().insert(verified);
                    req.extensions_mut().insert(Renderer(config.render.clone()));
                    let response = inner.call(req).instrument(span).await?;
                    Ok(response.map(Body::new))
                }
                Err(e) => Ok((config.render)(e)),
            }
        })
    }
}

/// The verified key of the request: an axum extractor (needs
/// [`KeywardLayer`] on the route). Derefs to [`Verified`].
#[derive(Debug, Clone)]
pub struct Authenticated(pub Verified);

impl std::ops::Deref for Authenticated {
    type Target = Verified;

    fn deref(&self) -> &Verified {
        &self.0
    }
}

impl Authenticated {
    /// The key must hold `permission`; otherwise a 403 naming it, with the
    /// key's prefix.
    ///
    /// # Errors
    /// [`ApiError`] 403 `forbidden`.
    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        self.0
            .require(permission)
            .map_err(|e| ApiError::from_forbidden(&e).with_key(Some(self.0.display_prefix())))
    }
}

/// Renders `err` with the host's renderer when the layer installed one.
fn render_with(parts_ext: &http::Extensions, err: ApiError) -> Response {
    match parts_ext.get::<Renderer>() {
        Some(Renderer(render)) => render(err),
        None => err.into_response(),
    }
}

fn missing_layer() -> ApiError {
    tracing::error!(target: "keyward", "KeywardLayer is not installed on this route");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "The server is misconfigured.",
    )
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        match parts.extensions.get::<Verified>() {
            Some(v) => Ok(Self(v.clone())),
            None => Err(render_with(&parts.extensions, missing_layer())),
        }
    }
}

/// A layer that lets a request through only if its key holds one
/// permission: `router.route_layer(require(keys.catalog(), "contacts:write")?)`.
/// Needs [`KeywardLayer`] outside it.
///
/// # Errors
/// [`PermissionError`] at start-up when the catalog has no such
/// permission: a typo fails the build of the router, not a request.
pub fn require(catalog: &Catalog, permission: &str) -> Result<RequirePermission, PermissionError> {
    let p = catalog.parse(permission)?;
    Ok(RequirePermission {
        permission: p,
        name: Arc::from(catalog.name(p).unwrap_or(permission)),
    })
}

/// See [`require`].
#[derive(Debug, Clone)]
pub struct RequirePermission {
    permission: Permission,
    name: Arc<str>,
}

impl<S> Layer<S> for RequirePermission {
    type Service = RequireService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireService {
            inner,
            permission: self.permission,
            name: self.name.clone(),
        }
    }
}

/// The service [`RequirePermission`] wraps around yours.
#[derive(Debug, Clone)]
pub struct RequireService<S> {
    inner: S,
    permission: Permission,
    name: Arc<str>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireService<S>
where
    S: Service<Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let refusal = match req.extensions().get::<Verified>() {
            Some(v) if v.allows(self.permission) => None,
            Some(v) => Some(
                ApiError::from_forbidden(&Forbidden::Missing(self.name.to_string()))
                    .with_key(Some(v.display_prefix())),
            ),
            None => Some(missing_layer()),
        };
        if let Some(err) = refusal {
            let response = render_with(req.extensions(), err);
            return Box::pin(async move { Ok(response) });
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { Ok(inner.call(req).await?.map(Body::new)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, MemoryStore, NewKey};
    use std::io::Write;
    use std::sync::Mutex;
    use tower::ServiceExt;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    fn defaults() -> Vec<KeySource> {
        vec![
            KeySource::Header(HeaderName::from_static("x-api-key")),
            KeySource::Bearer,
        ]
    }

    #[test]
    fn extract_reads_the_first_source_present() {
        let s = defaults();
        let got =
            |pairs: &[(&'static str, &str)]| extract(&headers(pairs), &s).ok().map(str::to_owned);
        assert_eq!(got(&[("x-api-key", " sk_a ")]), Some("sk_a".into()));
        assert_eq!(
            got(&[("authorization", "Bearer sk_b")]),
            Some("sk_b".into())
        );
        assert_eq!(
            got(&[("authorization", "BEARER   sk_b ")]),
            Some("sk_b".into())
        );
        assert_eq!(
            got(&[("x-api-key", "sk_a"), ("authorization", "Bearer sk_b")]),
            Some("sk_a".into())
        );
        assert_eq!(got(&[("authorization", "Basic sk_b")]), None);
        assert_eq!(got(&[("authorization", "Bearer")]), Some(String::new()));
        assert_eq!(got(&[("authorization", "sk_b")]), None);
        assert_eq!(got(&[]), None);
        assert_eq!(got(&[("x-api-key", "sk_a"), ("x-api-key", "sk_a")]), None);
        let only_bearer = [KeySource::Bearer];
        assert!(extract(&headers(&[("x-api-key", "sk_a")]), &only_bearer).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_secs(30)), 30);
        assert_eq!(retry_secs(Duration::from_millis(30_001)), 31);
        let e = ApiError::from_verify(&VerifyError::RateLimited {
            retry_after: chrono::Duration::zero(),
        });
        let response = e.into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "1", "never Retry-After: 0");
    }

    #[test]
    fn http_codes_are_the_library_codes() {
        let secs = chrono::Duration::seconds(3);
        for e in [
            VerifyError::Expired,
            VerifyError::Revoked,
            VerifyError::Inactive,
            VerifyError::WrongTenant,
            VerifyError::RateLimited { retry_after: secs },
            VerifyError::QuotaExceeded { retry_after: secs },
            VerifyError::UsageExceeded,
        ] {
            assert_eq!(ApiError::from_verify(&e).code, e.code());
        }
        for e in [VerifyError::Malformed, VerifyError::Invalid] {
            assert_eq!(ApiError::from_verify(&e), ApiError::unauthorized());
        }
        for e in [
            KeyError::NotFound("abcdefgh".parse().expect("id")),
            KeyError::InvalidExpiry,
            KeyError::InvalidGrace,
            KeyError::PermissionEscalation {
                missing: vec!["contacts:write".into()],
            },
        ] {
            assert_eq!(ApiError::from_key_error(&e).code, e.code());
        }
    }

    async fn keys_and_token() -> (Keyward, String) {
        let catalog = Catalog::builder()
            .resource("contacts", ["read", "write"])
            .build()
            .expect("catalog");
        let keys = Keyward::builder(MemoryStore::new(), catalog)
            .build()
            .expect("config");
        let boss = Actor::new("boss", "acme")
            .permissions(keys.catalog().all())
            .may_manage_keys(true);
        let created = keys
            .create(&boss, NewKey::new("k").permissions(["contacts:read"]))
            .await
            .expect("create");
        let token = created.token.expose_secret().to_string();
        (keys, token)
    }

    /// The layer and the permission layer wrap any tower service, whatever
    /// its body types: here plain `String`s, no axum router.
    #[tokio::test]
    async fn the_layers_wrap_a_plain_tower_service() {
        let (keys, token) = keys_and_token().await;
        let inner = tower::service_fn(|req: Request<String>| async move {
            let tenant = req
                .extensions()
                .get::<Verified>()
                .map(|v| v.tenant().to_string())
                .unwrap_or_default();
            Ok::<_, std::convert::Infallible>(http::Response::new(tenant))
        });
        let read = require(keys.catalog(), "contacts:read").expect("permission");
        let write = require(keys.catalog(), "contacts:write").expect("permission");
        let layer = KeywardLayer::new(keys);
        let request = |token: &str| {
            Request::builder()
                .header("x-api-key", token)
                .body(String::new())
                .expect("request")
        };
        let svc = layer.layer(read.layer(inner));
        let ok = svc
            .clone()
            .oneshot(request(&token))
            .await
            .expect("infallible");
        assert_eq!(ok.status(), StatusCode::OK);
        let body = axum::body::to_bytes(ok.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(&body[..], b"acme");
        let refused = svc.oneshot(request("sk_nope")).await.expect("infallible");
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

        let svc = layer.layer(write.layer(inner));
        let refused = svc.oneshot(request(&token)).await.expect("infallible");
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(refused.into_body(), 1024)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"]["permission"], "contacts:write");
        assert_eq!(body["error"]["key"], serde_json::json!(&token[..12]));
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Handlers' logs carry the key's display prefix and tenant from the
    /// layer's span, and never the secret.
    #[tokio::test]
    async fn handler_logs_carry_the_prefix_and_tenant_never_the_secret() {
        let (keys, token) = keys_and_token().await;
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let inner = tower::service_fn(|_req: Request<String>| async {
            tracing::info!("handled");
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        });
        let svc = KeywardLayer::new(keys).layer(inner);
        let bearer = format!("Bearer {token}");
        let req = Request::builder()
            .header("authorization", bearer)
            .body(String::new())
            .expect("request");
        let res = svc.oneshot(req).await.expect("infallible");
        assert_eq!(res.status(), StatusCode::OK);
        let logged = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        let line = logged
            .lines()
            .find(|l| l.contains("handled"))
            .unwrap_or_else(|| panic!("no handler log in {logged:?}"));
        assert!(line.contains(&format!("key={}", &token[..12])), "{line}");
        assert!(line.contains("tenant=acme"), "{line}");
        assert!(
            !logged.contains(&token[12..]),
            "the secret was logged: {logged}"
        );
    }
}
