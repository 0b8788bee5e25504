//! HTTP integration: with feature `axum`, a `tower::Layer` that
//! authenticates every request, axum extractors, a per-route permission
//! layer and the management router; with feature `actix`, the same for
//! actix-web ([`actix`]). Both, and the gRPC layer (feature `tonic`),
//! verify a request's key through one function and refuse with one
//! [`ApiError`] shape.
//!
//! ```
//! # #[cfg(feature = "axum")] {
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
//! # main().unwrap();
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

#[cfg(feature = "actix")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix")))]
pub mod actix;
pub(crate) mod authenticate;
#[cfg(feature = "axum")]
mod body;
mod client;
mod error;
#[cfg(feature = "axum")]
mod extract;
pub(crate) mod headers;
#[cfg(feature = "axum")]
mod layer;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod manage;
#[cfg(feature = "axum")]
mod require;
pub(crate) mod requirement;
#[cfg(feature = "axum")]
mod secret_scanning;
#[cfg(feature = "axum")]
mod service;
#[cfg(all(test, feature = "axum"))]
mod tests;

#[cfg(feature = "axum")]
use std::sync::Arc;

#[cfg(feature = "axum")]
use axum::response::{IntoResponse, Response};
use http::header::HeaderName;

#[cfg(feature = "axum")]
pub use body::JsonBody;
#[cfg(feature = "axum")]
pub(crate) use body::Query;
pub use client::{ClientAddress, ProxyHeader};
pub use error::{ApiError, BearerError, DEFAULT_REALM};
#[cfg(feature = "axum")]
pub use extract::Authenticated;
#[cfg(feature = "axum")]
pub use layer::{Authenticate, KeywardLayer, KeywardService};
#[cfg(feature = "axum")]
pub use require::{require, require_expr, RequirePermission, RequireService};
#[cfg(feature = "axum")]
pub(crate) use requirement::missing_layer;
#[cfg(feature = "axum")]
pub use secret_scanning::secret_scanning;
#[cfg(feature = "axum")]
pub use service::{Admission, Authorize, AuthorizeFuture, Decision, Gate};

/// Where a request may carry its key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySource {
    /// The whole value of a header, e.g. `x-api-key: sk_…`.
    Header(HeaderName),
    /// `Authorization: Bearer sk_…` (scheme case-insensitive).
    Bearer,
}

/// Where a key is read unless configured otherwise: `x-api-key`, then
/// `Authorization: Bearer`. The layer's default and the management
/// router's.
pub(crate) fn default_sources() -> Vec<KeySource> {
    vec![
        KeySource::Header(HeaderName::from_static("x-api-key")),
        KeySource::Bearer,
    ]
}

/// Turns an [`ApiError`] into a response: see
/// [`KeywardLayer::error_renderer`].
#[cfg(feature = "axum")]
pub type ErrorRenderer = Arc<dyn Fn(ApiError) -> Response + Send + Sync>;

#[cfg(feature = "axum")]
fn default_renderer() -> ErrorRenderer {
    Arc::new(IntoResponse::into_response)
}

#[cfg(feature = "axum")]
/// The renderer and realm in force, put in request extensions by the
/// layer so that [`RequirePermission`] and the extractors use the host's
/// too.
#[derive(Clone)]
pub(crate) struct Renderer {
    /// How refusals are rendered.
    pub(crate) render: ErrorRenderer,
    /// The realm of challenges.
    pub(crate) realm: Arc<str>,
}

#[cfg(feature = "axum")]
/// Renders `err` with the host's renderer when the layer installed one.
pub(crate) fn render_with(parts_ext: &http::Extensions, err: ApiError) -> Response {
    match parts_ext.get::<Renderer>() {
        Some(Renderer { render: r, realm }) => render(r, realm, err),
        None => err.into_response(),
    }
}

#[cfg(feature = "axum")]
/// Renders with `renderer`, then sets the challenge in `realm`: the
/// protocol header is the layer's, whatever the renderer does.
pub(crate) fn render(renderer: &ErrorRenderer, realm: &str, err: ApiError) -> Response {
    let challenge = err.challenge(realm);
    let mut response = renderer(err);
    if let Some(value) = challenge {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    response
}
