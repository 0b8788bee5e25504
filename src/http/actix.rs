//! actix-web integration (feature `actix`): [`KeywardMiddleware`]
//! authenticates every request, [`Authenticated`] extracts the verified
//! key, [`require`] guards a route or scope by permission. Keys are read,
//! verified and refused exactly as the axum adapter does: the same key
//! sources, tenant header, client address, JSON errors and
//! `WWW-Authenticate` challenges (the verification and the
//! [`ApiError`] are shared, not copied).
//!
//! ```
//! use actix_web::{web, App, HttpResponse};
//! use keyward::http::actix::{require, Authenticated, KeywardMiddleware};
//! use keyward::{Catalog, Keyward, MemoryStore};
//!
//! async fn list_contacts(key: Authenticated) -> HttpResponse {
//!     HttpResponse::Ok().body(format!("contacts of {}", key.tenant()))
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let catalog = Catalog::builder().resource("contacts", ["read", "write"]).build()?;
//! let keys = Keyward::builder(MemoryStore::new(), catalog.clone()).build()?;
//! let read = require(&catalog, "contacts:read")?;
//! let app = App::new()
//!     .wrap(KeywardMiddleware::new(keys))
//!     .route("/v1/contacts", web::get().to(list_contacts).wrap(read));
//! # let _ = app;
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::StatusCode;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use http::header::HeaderName;
use tracing::Instrument;

use super::authenticate::{authenticate, key_span};
use super::client::ClientAddress;
use super::error::clean_realm;
use super::headers::Headers;
use super::requirement::{missing_layer, require_named, Requirement};
use super::{default_sources, ApiError, KeySource, DEFAULT_REALM};
use crate::keyward::{Keyward, Verified};
use crate::permission::{Catalog, ExprError, PermissionError};

impl Headers for actix_web::http::header::HeaderMap {
    fn values<'a>(&'a self, name: &HeaderName) -> impl DoubleEndedIterator<Item = &'a [u8]> {
        // actix-web speaks `http` 0.2: its header names are another type.
        self.get_all(name.as_str())
            .map(actix_web::http::header::HeaderValue::as_bytes)
    }
}

/// An [`ApiError`] as an actix-web response in `realm`: the status, the
/// default JSON body ([`ApiError::to_json`]), `Retry-After` and the
/// `WWW-Authenticate` challenge, as the axum adapter renders it.
pub fn error_response(err: &ApiError, realm: &str) -> HttpResponse {
    let realm = clean_realm(realm);
    let status =
        StatusCode::from_u16(err.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    if let Some(retry) = err.retry_after_header() {
        response.insert_header(("retry-after", retry));
    }
    if let Some(challenge) = err
        .challenge(&realm)
        .and_then(|v| v.to_str().ok().map(String::from))
    {
        response.insert_header(("www-authenticate", challenge));
    }
    response.json(err.to_json())
}

/// A handler may return `Result<_, ApiError>`: rendered in
/// [`DEFAULT_REALM`] (the middleware's realm applies to its own
/// refusals, [`require`]'s and the extractor's).
impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        error_response(self, DEFAULT_REALM)
    }
}

/// The middleware's realm, for refusals further in.
#[derive(Clone)]
struct Realm(Arc<str>);

fn realm_of(req: &HttpRequest) -> Arc<str> {
    req.extensions()
        .get::<Realm>()
        .map_or_else(|| Arc::from(DEFAULT_REALM), |r| r.0.clone())
}

/// The middleware's settings.
#[derive(Clone)]
struct Config {
    sources: Vec<KeySource>,
    tenant_header: Option<HeaderName>,
    client: ClientAddress,
    realm: Arc<str>,
}

/// Authenticates every request with a [`Keyward`]: reads the key,
/// verifies it (with the tenant header and client address, if
/// configured), and refuses with an [`ApiError`] or passes the request on
/// with the [`Verified`] key in its extensions (read it with
/// [`Authenticated`]).
#[derive(Clone)]
#[must_use]
pub struct KeywardMiddleware {
    keys: Keyward,
    config: Arc<Config>,
}

impl fmt::Debug for KeywardMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeywardMiddleware")
            .field("sources", &self.config.sources)
            .field("tenant_header", &self.config.tenant_header)
            .finish_non_exhaustive()
    }
}

impl KeywardMiddleware {
    /// Keys from `x-api-key`, then `Authorization: Bearer`; no tenant
    /// check; the client address is the connection's peer.
    pub fn new(keys: Keyward) -> Self {
        Self {
            keys,
            config: Arc::new(Config {
                sources: default_sources(),
                tenant_header: None,
                client: ClientAddress::peer(),
                realm: Arc::from(DEFAULT_REALM),
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = (*self.config).clone();
        f(&mut config);
        self.config = Arc::new(config);
        self
    }

    /// Where to look for the key, in order.
    pub fn key_sources(self, sources: impl IntoIterator<Item = KeySource>) -> Self {
        let sources: Vec<KeySource> = sources.into_iter().collect();
        self.with(|c| c.sources = sources)
    }

    /// Each request must name its tenant in this header (e.g.
    /// `x-tenant-name`), and the key must belong to it.
    pub fn tenant_header(self, name: HeaderName) -> Self {
        self.with(|c| c.tenant_header = Some(name))
    }

    /// Where the client address checked against allowlists comes from:
    /// the connection's peer by default, or forwarding headers behind
    /// trusted proxies.
    pub fn client_address(self, client: ClientAddress) -> Self {
        self.with(|c| c.client = client)
    }

    /// The realm of the `WWW-Authenticate` challenge (default `api`).
    pub fn realm(self, realm: &str) -> Self {
        let realm = clean_realm(realm);
        self.with(|c| c.realm = realm)
    }
}

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

impl<S, B> Transform<S, ServiceRequest> for KeywardMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = KeywardService<S>;
    type InitError = ();
    type Future = Ready<Result<KeywardService<S>, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(KeywardService {
            service: Rc::new(service),
            keys: self.keys.clone(),
            config: self.config.clone(),
        }))
    }
}

/// The service [`KeywardMiddleware`] wraps around yours.
pub struct KeywardService<S> {
    service: Rc<S>,
    keys: Keyward,
    config: Arc<Config>,
}

impl<S> fmt::Debug for KeywardService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeywardService").finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for KeywardService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<Result<Self::Response, Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let (service, keys, config) =
            (self.service.clone(), self.keys.clone(), self.config.clone());
        Box::pin(async move {
            let peer = req.peer_addr().map(|a| a.ip());
            let client_ip = config.client.resolve_in(peer, req.headers());
            let verified = authenticate(
                &keys,
                &config.sources,
                config.tenant_header.as_ref(),
                req.headers(),
                client_ip,
            )
            .await;
            match verified {
                Ok(verified) => {
                    let span = key_span(&verified);
                    req.extensions_mut().insert(verified);
                    req.extensions_mut().insert(Realm(config.realm.clone()));
                    let response = service.call(req).instrument(span).await?;
                    Ok(response.map_into_left_body())
                }
                Err(err) => {
                    let response = error_response(&err, &config.realm);
                    Ok(req.into_response(response).map_into_right_body())
                }
            }
        })
    }
}

/// The verified key of the request: an actix-web extractor (needs
/// [`KeywardMiddleware`] around the route). Derefs to [`Verified`].
#[derive(Debug, Clone)]
pub struct Authenticated(pub Verified);

impl std::ops::Deref for Authenticated {
    type Target = Verified;

    fn deref(&self) -> &Verified {
        &self.0
    }
}

impl Authenticated {
    /// The key must hold `permission`; otherwise a 403 naming it.
    ///
    /// # Errors
    /// [`ApiError`] 403 `forbidden` (500 for a permission the catalog
    /// does not have).
    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        require_named(&self.0, permission)
    }
}

/// The extractor's refusal: an [`ApiError`] in the middleware's realm.
#[derive(Debug)]
pub struct Refusal {
    error: ApiError,
    realm: Arc<str>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl ResponseError for Refusal {
    fn status_code(&self) -> StatusCode {
        self.error.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        error_response(&self.error, &self.realm)
    }
}

impl FromRequest for Authenticated {
    type Error = Refusal;
    type Future = Ready<Result<Self, Refusal>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let found = req.extensions().get::<Verified>().cloned();
        ready(found.map(Authenticated).ok_or_else(|| Refusal {
            error: missing_layer(),
            realm: realm_of(req),
        }))
    }
}

/// A middleware that lets a request through only if its key holds one
/// permission: `web::get().to(handler).wrap(require(&catalog,
/// "contacts:write")?)` (the handler first, then the guard), or around a
/// scope. Needs [`KeywardMiddleware`] outside it, and `catalog` must be
/// the [`Keyward`]'s (a requirement of another catalog refuses with 500).
///
/// # Errors
/// [`PermissionError`] at start-up when the catalog has no such
/// permission.
pub fn require(catalog: &Catalog, permission: &str) -> Result<RequirePermission, PermissionError> {
    Ok(RequirePermission {
        need: Arc::new(Requirement::one(catalog, permission)?),
    })
}

/// [`require`] for a permission expression, e.g.
/// `"contacts:read & leads:read"` (see
/// [`Catalog::expression`](crate::Catalog::expression)).
///
/// # Errors
/// [`ExprError`] at start-up for an expression that does not compile.
pub fn require_expr(catalog: &Catalog, expression: &str) -> Result<RequirePermission, ExprError> {
    Ok(RequirePermission {
        need: Arc::new(Requirement::expr(catalog, expression)?),
    })
}

/// The middleware [`require`] makes.
#[derive(Clone)]
pub struct RequirePermission {
    need: Arc<Requirement>,
}

impl fmt::Debug for RequirePermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequirePermission").finish_non_exhaustive()
    }
}

impl<S, B> Transform<S, ServiceRequest> for RequirePermission
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RequireService<S>;
    type InitError = ();
    type Future = Ready<Result<RequireService<S>, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequireService {
            service: Rc::new(service),
            need: self.need.clone(),
        }))
    }
}

/// The service [`RequirePermission`] wraps around yours.
pub struct RequireService<S> {
    service: Rc<S>,
    need: Arc<Requirement>,
}

impl<S> fmt::Debug for RequireService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireService").finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for RequireService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<Result<Self::Response, Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let checked = self.need.check(req.extensions().get::<Verified>());
        match checked {
            Ok(()) => {
                let service = self.service.clone();
                Box::pin(async move { Ok(service.call(req).await?.map_into_left_body()) })
            }
            Err(err) => {
                let response = error_response(&err, &realm_of(req.request()));
                Box::pin(ready(Ok(req.into_response(response).map_into_right_body())))
            }
        }
    }
}
