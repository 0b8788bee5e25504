//! gRPC integration (feature `tonic`): a tower layer for tonic servers
//! that verifies the API key in each call's metadata, checks the
//! permission its method needs, and refuses with gRPC statuses.
//!
//! tonic's interceptors are synchronous; a key check may need the store,
//! so this is a layer: `Server::builder().layer(GrpcLayer::new(…))`.
//!
//! ```
//! use keyward::grpc::{GrpcLayer, MethodPermissions};
//! use keyward::{Catalog, Keyward, MemoryStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let catalog = Catalog::builder().resource("contacts", ["read", "write"]).build()?;
//! let keys = Keyward::builder(MemoryStore::new(), catalog.clone()).build()?;
//! let methods = MethodPermissions::new(&catalog)
//!     .method("/contacts.v1.Contacts/List", "contacts:read")?
//!     .method("/contacts.v1.Contacts/Create", "contacts:write")?
//!     .public("/grpc.health.v1.Health/Check")?;
//! let layer = GrpcLayer::new(keys, methods);
//! // tonic::transport::Server::builder().layer(layer).add_service(…)
//! # let _ = layer;
//! # Ok(()) }
//! ```
//!
//! The key is read from the `x-api-key` metadata entry, then
//! `authorization: Bearer …`. A verified call carries the
//! [`Verified`] key in its extensions
//! (`request.extensions().get::<Verified>()`). Refusals, from the same
//! verification and the same [`ApiError`] as the HTTP adapters:
//!
//! | refusal | status |
//! |---|---|
//! | no key, malformed, unknown, revoked, expired, inactive, not yet valid, wrong tenant | `UNAUTHENTICATED` |
//! | missing permission, address not allowed, a method with no permission mapped | `PERMISSION_DENIED` |
//! | rate limit, quota, uses, named limit | `RESOURCE_EXHAUSTED`, with `google.rpc.RetryInfo` when a time is known |
//! | the store cannot be asked | `UNAVAILABLE`, with `RetryInfo` |
//! | two keys, a bad tenant header | `INVALID_ARGUMENT` |
//!
//! The message names the key by its display prefix, never the secret; the
//! metadata entry `keyward-error-code` carries the stable code
//! (`api_key_revoked`, `rate_limited`, …).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HeaderName;
use http::StatusCode;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use crate::http::authenticate::authenticate;
use crate::http::requirement::Requirement;
use crate::http::{ApiError, ClientAddress, KeySource};
use crate::keyward::{Keyward, Verified};
use crate::permission::{Catalog, PermissionError};

/// What a method needs.
#[derive(Debug, Clone)]
enum Need {
    /// No key at all (health checks, reflection).
    Public,
    /// A valid key holding this permission.
    Permission(Requirement),
    /// A valid key.
    AnyKey,
    /// Nothing: the method is mapped to no permission.
    Unmapped,
}

/// Which permission each gRPC method needs, by its path
/// (`/package.Service/Method`) or its service (`package.Service`). A
/// method neither names is refused with `PERMISSION_DENIED` unless
/// [`MethodPermissions::any_key_for_unlisted`] says otherwise: a method
/// added later is closed until someone decides.
#[derive(Clone)]
#[must_use]
pub struct MethodPermissions {
    catalog: Catalog,
    methods: HashMap<String, Need>,
    services: HashMap<String, Need>,
    unlisted: Need,
}

impl fmt::Debug for MethodPermissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodPermissions")
            .field("methods", &self.methods.keys())
            .field("services", &self.services.keys())
            .finish_non_exhaustive()
    }
}

impl MethodPermissions {
    /// No method mapped yet; permissions are names of `catalog`.
    pub fn new(catalog: &Catalog) -> Self {
        Self {
            catalog: catalog.clone(),
            methods: HashMap::new(),
            services: HashMap::new(),
            unlisted: Need::Unmapped,
        }
    }

    /// Method `path` (`/package.Service/Method`, exactly as gRPC sends
    /// it) needs `permission`.
    ///
    /// # Errors
    /// [`MethodMapError::Path`] for a path not of that form;
    /// [`MethodMapError::Permission`] for a permission the catalog does
    /// not have.
    pub fn method(mut self, path: &str, permission: &str) -> Result<Self, MethodMapError> {
        let path = method_path(path)?;
        let need = Need::Permission(Requirement::one(&self.catalog, permission)?);
        self.methods.insert(path, need);
        Ok(self)
    }

    /// Every method of `service` (`package.Service`) not mapped on its own
    /// needs `permission`.
    ///
    /// # Errors
    /// As [`MethodPermissions::method`].
    pub fn service(mut self, service: &str, permission: &str) -> Result<Self, MethodMapError> {
        let service = service_name(service)?;
        let need = Need::Permission(Requirement::one(&self.catalog, permission)?);
        self.services.insert(service, need);
        Ok(self)
    }

    /// `path` needs no key: a method (`/package.Service/Method`) or a
    /// whole service (`package.Service`), e.g. health checks and
    /// reflection.
    ///
    /// # Errors
    /// [`MethodMapError::Path`] for a name of neither form.
    pub fn public(mut self, path: &str) -> Result<Self, MethodMapError> {
        if path.starts_with('/') {
            self.methods.insert(method_path(path)?, Need::Public);
        } else {
            self.services.insert(service_name(path)?, Need::Public);
        }
        Ok(self)
    }

    /// Methods not mapped need only a valid key (instead of being
    /// refused).
    pub fn any_key_for_unlisted(mut self) -> Self {
        self.unlisted = Need::AnyKey;
        self
    }

    /// What the method at `path` needs.
    fn need(&self, path: &str) -> &Need {
        if let Some(need) = self.methods.get(path) {
            return need;
        }
        // A service entry covers `/service/method` only: nothing with
        // more parts, which no gRPC call has.
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .filter(|(_, method)| !method.contains('/'))
            .map(|(s, _)| s);
        service
            .and_then(|s| self.services.get(s))
            .unwrap_or(&self.unlisted)
    }
}

/// A [`MethodPermissions`] entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MethodMapError {
    /// A method path is not `/package.Service/Method`, or a service name
    /// not `package.Service`: it would never match a call.
    #[error("{0:?} is not a gRPC method path (/package.Service/Method) or service name (package.Service)")]
    Path(String),
    /// The permission is not in the catalog.
    #[error(transparent)]
    Permission(#[from] PermissionError),
}

/// A name part of a path: letters, digits, `_` and `.` (no `/`, no
/// empty part).
fn is_name(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

fn method_path(path: &str) -> Result<String, MethodMapError> {
    let parts = path.strip_prefix('/').and_then(|p| p.split_once('/'));
    match parts {
        Some((service, method)) if is_name(service) && is_name(method) && !method.contains('.') => {
            Ok(path.to_string())
        }
        _ => Err(MethodMapError::Path(path.chars().take(100).collect())),
    }
}

fn service_name(service: &str) -> Result<String, MethodMapError> {
    if is_name(service) {
        Ok(service.to_string())
    } else {
        Err(MethodMapError::Path(service.chars().take(100).collect()))
    }
}

/// The layer's settings.
#[derive(Clone)]
struct Config {
    methods: MethodPermissions,
    sources: Vec<KeySource>,
    tenant_header: Option<HeaderName>,
    client: ClientAddress,
}

/// Authenticates every gRPC call with a [`Keyward`]: see the
/// [module docs](self).
#[derive(Clone)]
#[must_use]
pub struct GrpcLayer {
    keys: Keyward,
    config: Arc<Config>,
}

impl fmt::Debug for GrpcLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcLayer")
            .field("methods", &self.config.methods)
            .finish_non_exhaustive()
    }
}

impl GrpcLayer {
    /// Keys from `x-api-key`, then `authorization: Bearer`; each method
    /// needs what `methods` says; the client address is the connection's
    /// peer.
    pub fn new(keys: Keyward, methods: MethodPermissions) -> Self {
        Self {
            keys,
            config: Arc::new(Config {
                methods,
                sources: crate::http::default_sources(),
                tenant_header: None,
                client: ClientAddress::peer(),
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = (*self.config).clone();
        f(&mut config);
        self.config = Arc::new(config);
        self
    }

    /// Where to look for the key, in order (metadata names, lowercase).
    pub fn key_sources(self, sources: impl IntoIterator<Item = KeySource>) -> Self {
        let sources: Vec<KeySource> = sources.into_iter().collect();
        self.with(|c| c.sources = sources)
    }

    /// Each call must name its tenant in this metadata entry (e.g.
    /// `x-tenant-name`), and the key must belong to it.
    pub fn tenant_header(self, name: HeaderName) -> Self {
        self.with(|c| c.tenant_header = Some(name))
    }

    /// Where the client address checked against allowlists comes from:
    /// the connection's peer (tonic's `TcpConnectInfo`) by default, or
    /// forwarding headers behind trusted proxies.
    pub fn client_address(self, client: ClientAddress) -> Self {
        self.with(|c| c.client = client)
    }
}

impl<S> Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;

    fn layer(&self, inner: S) -> GrpcService<S> {
        GrpcService {
            inner,
            keys: self.keys.clone(),
            config: self.config.clone(),
        }
    }
}

/// The service [`GrpcLayer`] wraps around a tonic service.
#[derive(Clone)]
pub struct GrpcService<S> {
    inner: S,
    keys: Keyward,
    config: Arc<Config>,
}

impl<S> fmt::Debug for GrpcService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcService").finish_non_exhaustive()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B, RB> Service<http::Request<B>> for GrpcService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone is not ready; the ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (keys, config) = (self.keys.clone(), self.config.clone());
        Box::pin(async move {
            let peer = req
                .extensions()
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|info| info.remote_addr())
                .map(|addr| addr.ip());
            let path = req.uri().path().to_string();
            let admitted = admit(&keys, &config, &path, req.headers(), peer).await;
            match admitted {
                Ok(Some(verified)) => {
                    req.extensions_mut().insert(verified);
                }
                Ok(None) => {}
                Err(refusal) => return Ok(status_of(&refusal).into_http()),
            }
            let response = inner.call(req).await?;
            Ok(response.map(tonic::body::Body::new))
        })
    }
}

/// The verified key of a call (`None` for a public method), or why not.
async fn admit(
    keys: &Keyward,
    config: &Config,
    path: &str,
    headers: &http::HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<Option<Verified>, ApiError> {
    let need = config.methods.need(path);
    match need {
        Need::Public => return Ok(None),
        // Refused before the key is verified: nothing is counted against
        // it for a call that could never succeed.
        Need::Unmapped => {
            let shown: String = path.chars().take(200).collect();
            return Err(ApiError {
                message: format!("No permission is mapped for method {shown}."),
                ..ApiError::new(StatusCode::FORBIDDEN, "forbidden", "")
            });
        }
        _ => {}
    }
    let client_ip = config.client.resolve_in(peer, headers);
    let verified = authenticate(
        keys,
        &config.sources,
        config.tenant_header.as_ref(),
        headers,
        client_ip,
    )
    .await?;
    match need {
        Need::Permission(requirement) => {
            requirement.check(Some(&verified))?;
            Ok(Some(verified))
        }
        Need::Public | Need::AnyKey | Need::Unmapped => Ok(Some(verified)),
    }
}

/// The gRPC status of a refusal: its code from the HTTP status, its
/// message with the key's display prefix, `RetryInfo` when a time is
/// known, and the stable code in `keyward-error-code`.
pub fn status_of(err: &ApiError) -> Status {
    let code = match err.status {
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidArgument,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::CONFLICT => Code::FailedPrecondition,
        _ => Code::Internal,
    };
    let message = match &err.key {
        Some(key) => format!("{} (key {key})", err.message),
        None => err.message.clone(),
    };
    let mut status = match err.retry_after {
        Some(retry) => {
            Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(retry)))
        }
        None => Status::new(code, message),
    };
    if let Ok(value) = MetadataValue::try_from(err.code) {
        status.metadata_mut().insert("keyward-error-code", value);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::builder()
            .resource("contacts", ["read", "write"])
            .build()
            .expect("catalog")
    }

    #[test]
    fn paths_that_could_never_match_are_refused() {
        let m = || MethodPermissions::new(&catalog());
        for bad in [
            "contacts.v1.Contacts/List",
            "/contacts.v1.Contacts",
            "/contacts.v1.Contacts/",
            "//List",
            "/a/b/c",
            "/a/b.c",
            "/a b/c",
            "",
        ] {
            assert!(
                matches!(
                    m().method(bad, "contacts:read"),
                    Err(MethodMapError::Path(_))
                ),
                "{bad:?}"
            );
        }
        for bad in ["", "/", "/svc/", "a/b", "a b"] {
            assert!(m().service(bad, "contacts:read").is_err(), "{bad:?}");
            assert!(m().public(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            m().method("/a.B/C", "contacts:fly"),
            Err(MethodMapError::Permission(_))
        ));
    }

    #[test]
    fn a_method_entry_beats_its_service_and_unlisted_methods_are_closed() {
        let map = MethodPermissions::new(&catalog())
            .service("contacts.v1.Contacts", "contacts:read")
            .and_then(|m| m.method("/contacts.v1.Contacts/Create", "contacts:write"))
            .and_then(|m| m.public("grpc.health.v1.Health"))
            .and_then(|m| m.public("/grpc.reflection.v1.ServerReflection/Info"))
            .expect("valid map");
        let is = |path: &str| match map.need(path) {
            Need::Public => "public".to_string(),
            Need::AnyKey => "any key".to_string(),
            Need::Unmapped => "closed".to_string(),
            Need::Permission(r) => format!("{r:?}"),
        };
        assert!(is("/contacts.v1.Contacts/Create").contains("contacts:write"));
        assert!(is("/contacts.v1.Contacts/List").contains("contacts:read"));
        assert_eq!(is("/grpc.health.v1.Health/Check"), "public");
        assert_eq!(is("/grpc.health.v1.Health/Watch"), "public");
        assert_eq!(is("/grpc.reflection.v1.ServerReflection/Info"), "public");
        assert_eq!(is("/grpc.reflection.v1.ServerReflection/Other"), "closed");
        for odd in [
            "/other.Service/Call",
            "/contacts.v1.contacts/List",
            "/contacts.v1.Contacts",
            "contacts.v1.Contacts/List",
            "",
        ] {
            let need = is(odd);
            assert!(
                need == "closed" || need.contains("contacts:read") || need == "public",
                "{odd}: {need}"
            );
            assert!(!need.contains("contacts:write") || odd == "/contacts.v1.Contacts/Create");
        }
        assert_eq!(is("/other.Service/Call"), "closed");
        assert_eq!(
            is("/grpc.health.v1.Health/../contacts.v1.Contacts/Create"),
            "closed"
        );
        let open = map.any_key_for_unlisted();
        assert!(matches!(open.need("/other.Service/Call"), Need::AnyKey));
    }
}
