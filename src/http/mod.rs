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

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::header::{HeaderName, AUTHORIZATION};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use tower::{Layer, Service};
use tracing::Instrument;

mod error;

pub use error::{ApiError, BearerError, DEFAULT_REALM};

use crate::error::Forbidden;
use crate::keyward::Verified;
use crate::permission::{Catalog, Permission, PermissionError};
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

/// Turns an [`ApiError`] into a response: see
/// [`KeywardLayer::error_renderer`].
pub type ErrorRenderer = Arc<dyn Fn(ApiError) -> Response + Send + Sync>;

fn default_renderer() -> ErrorRenderer {
    Arc::new(IntoResponse::into_response)
}

/// The renderer and realm in force, put in request extensions by the
/// layer so that [`RequirePermission`] and the extractors use the host's
/// too.
#[derive(Clone)]
struct Renderer {
    render: ErrorRenderer,
    realm: Arc<str>,
}

struct Config {
    sources: Vec<KeySource>,
    tenant_header: Option<HeaderName>,
    render: ErrorRenderer,
    realm: Arc<str>,
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
                realm: Arc::from(DEFAULT_REALM),
            }),
        }
    }

    fn config(mut self, f: impl FnOnce(&mut Config)) -> Self {
        let old = &self.config;
        let mut config = Config {
            sources: old.sources.clone(),
            tenant_header: old.tenant_header.clone(),
            render: old.render.clone(),
            realm: old.realm.clone(),
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

    /// The realm of the `WWW-Authenticate: Bearer` challenge on 401s, 403s
    /// and 400s of this layer and the permission layers inside it.
    /// Defaults to [`DEFAULT_REALM`] (`api`). Characters a quoted string
    /// cannot hold (`"`, `\\`, non-ASCII, control) are dropped.
    pub fn realm(self, realm: &str) -> Self {
        let clean: String = realm
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
            .take(100)
            .collect();
        let realm: Arc<str> = if clean.trim().is_empty() {
            Arc::from(DEFAULT_REALM)
        } else {
            Arc::from(clean.trim())
        };
        self.config(|c| c.realm = realm)
    }

    /// Renders refusals as RFC 9457 `application/problem+json` (see
    /// [`ApiError::to_problem_json`]) instead of keyward's JSON shape.
    pub fn problem_json(self) -> Self {
        self.error_renderer(ApiError::into_problem_response)
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

/// The presented key, or why there is none usable: 401 without a key
/// (or with an unreadable one), 400 `invalid_request` for a key given
/// twice, in one header or in two sources (RFC 6750 §3.1), rather than
/// guess which one a proxy and the application each read.
fn extract<'h>(headers: &'h HeaderMap, sources: &[KeySource]) -> Result<&'h str, ApiError> {
    let twice = || ApiError::invalid_request("Send one API key, in one header.");
    let unreadable = || ApiError {
        bearer_error: Some(BearerError::InvalidToken),
        ..ApiError::unauthorized()
    };
    let mut found = None;
    for source in sources {
        let name = match source {
            KeySource::Header(name) => name,
            KeySource::Bearer => &AUTHORIZATION,
        };
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else {
            continue;
        };
        if values.next().is_some() {
            return Err(twice());
        }
        let value = value.to_str().map_err(|_| unreadable())?;
        let token = match source {
            KeySource::Header(_) => Some(value.trim()),
            KeySource::Bearer => {
                let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
                // Another scheme (Basic, …) is not an API key.
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            }
        };
        if let Some(token) = token {
            if found.replace(token).is_some() {
                return Err(twice());
            }
        }
    }
    found.ok_or_else(ApiError::unauthorized)
}

/// The tenant a request names in `name`: exactly one value. Its form is
/// checked by [`Keyward::verify_for_tenant`], never trimmed or normalised.
fn tenant_of<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<&'h str, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::invalid_request(format!(
            "Send one {name} header."
        )));
    }
    match first.map(HeaderValue::to_str) {
        Some(Ok(t)) if !t.is_empty() => Ok(t),
        _ => Err(ApiError {
            code: "tenant_required",
            ..ApiError::invalid_request(format!("The {name} header is required."))
        }),
    }
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
            let tenant = tenant_of(headers, name).map_err(|e| e.with_key(prefix))?;
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
                    req.extensions_mut().insert(Renderer {
                        render: config.render.clone(),
                        realm: config.realm.clone(),
                    });
                    let response = inner.call(req).instrument(span).await?;
                    Ok(response.map(Body::new))
                }
                Err(e) => Ok(render(&config.render, &config.realm, e)),
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
    /// key's prefix and an `insufficient_scope` challenge (in
    /// [`DEFAULT_REALM`]: a handler's error does not know the layer's
    /// realm; the [`require`] route layer uses it).
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
        Some(Renderer { render: r, realm }) => render(r, realm, err),
        None => err.into_response(),
    }
}

/// Renders with `renderer`, then sets the challenge in `realm`: the
/// protocol header is the layer's, whatever the renderer does.
fn render(renderer: &ErrorRenderer, realm: &str, err: ApiError) -> Response {
    let challenge = err.challenge(realm);
    let mut response = renderer(err);
    if let Some(value) = challenge {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    response
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
    use super::error::retry_secs;
    use super::*;
    use crate::error::{KeyError, VerifyError};
    use crate::{Actor, MemoryStore, NewKey};
    use axum::response::IntoResponse;
    use http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
    use http::HeaderValue;
    use std::io::Write;
    use std::sync::Mutex;
    use std::time::Duration;
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
        let refused = |pairs: &[(&'static str, &str)]| extract(&headers(pairs), &s).err();
        for two in [
            &[("x-api-key", "sk_a"), ("authorization", "Bearer sk_b")][..],
            &[("x-api-key", "sk_a"), ("x-api-key", "sk_a")],
            &[
                ("authorization", "Bearer sk_a"),
                ("authorization", "Bearer sk_b"),
            ],
        ] {
            let e = refused(two).expect("refused");
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{two:?}");
            assert_eq!(e.code, "invalid_request");
        }
        // Basic beside an API key is not a second API key.
        assert_eq!(
            got(&[("x-api-key", "sk_a"), ("authorization", "Basic dXNlcg==")]),
            Some("sk_a".into())
        );
        assert_eq!(got(&[("authorization", "Basic sk_b")]), None);
        assert_eq!(got(&[("authorization", "Bearer")]), Some(String::new()));
        assert_eq!(got(&[("authorization", "sk_b")]), None);
        assert_eq!(got(&[]), None);
        let only_bearer = [KeySource::Bearer];
        assert!(extract(&headers(&[("x-api-key", "sk_a")]), &only_bearer).is_err());
    }

    /// Finding 9 of step 6: RFC 9110 §15.5.2 and RFC 6750 §3 challenges.
    #[test]
    fn challenges_follow_rfc_6750() {
        let challenge = |e: ApiError| {
            e.into_response()
                .headers()
                .get(WWW_AUTHENTICATE)
                .map(|v| v.to_str().expect("ascii").to_string())
        };
        assert_eq!(
            challenge(ApiError::unauthorized()).as_deref(),
            Some(r#"Bearer realm="api""#),
            "no credentials: a bare challenge"
        );
        for e in [
            VerifyError::Malformed,
            VerifyError::Invalid,
            VerifyError::Expired,
            VerifyError::Revoked,
            VerifyError::Inactive,
            VerifyError::WrongTenant,
        ] {
            assert_eq!(
                ApiError::from_verify(&e)
                    .challenge("crm")
                    .map(|v| v.to_str().expect("ascii").to_string())
                    .as_deref(),
                Some(r#"Bearer realm="crm", error="invalid_token""#),
                "{e:?}"
            );
        }
        assert_eq!(
            challenge(ApiError::from_forbidden(&Forbidden::Missing(
                "contacts:write".into()
            )))
            .as_deref(),
            Some(r#"Bearer realm="api", error="insufficient_scope", scope="contacts:write""#)
        );
        assert_eq!(
            challenge(ApiError::invalid_request("two keys")).as_deref(),
            Some(r#"Bearer realm="api", error="invalid_request""#)
        );
        let limited = VerifyError::RateLimited {
            retry_after: chrono::Duration::seconds(1),
        };
        assert_eq!(challenge(ApiError::from_verify(&limited)), None);
        let tenant = VerifyError::InvalidTenant(crate::tenant::InvalidTenant::DotSegment);
        let e = ApiError::from_verify(&tenant);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_tenant")
        );
        let e = ApiError::from_key_error(&KeyError::InvalidTenant("a/../b".into()));
        assert_eq!(
            (e.status, e.code, e.field),
            (StatusCode::BAD_REQUEST, "invalid_tenant", Some("tenant"))
        );
    }

    #[tokio::test]
    async fn problem_json_is_rfc_9457() {
        let e = ApiError::from_forbidden(&Forbidden::Missing("contacts:write".into()));
        let response = e.into_problem_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert!(response.headers().contains_key(WWW_AUTHENTICATE));
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["type"], "about:blank");
        assert_eq!(body["title"], "Forbidden");
        assert_eq!(body["status"], 403);
        assert_eq!(body["code"], "forbidden");
        assert_eq!(body["permission"], "contacts:write");
        assert!(body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("contacts:write")));
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
            let presented = ApiError {
                bearer_error: Some(BearerError::InvalidToken),
                ..ApiError::unauthorized()
            };
            assert_eq!(ApiError::from_verify(&e), presented, "one answer for both");
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
