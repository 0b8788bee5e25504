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

mod body;
mod client;
mod error;
mod extract;
mod layer;
pub mod manage;
mod require;
mod service;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::header::HeaderName;
use http::StatusCode;

pub use body::JsonBody;
pub(crate) use body::Query;
pub use client::{ClientAddress, ProxyHeader};
pub use error::{ApiError, BearerError, DEFAULT_REALM};
pub use extract::Authenticated;
pub use layer::{Authenticate, KeywardLayer, KeywardService};
pub use require::{require, require_expr, RequirePermission, RequireService};
pub use service::{Authorize, Gate};

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
pub type ErrorRenderer = Arc<dyn Fn(ApiError) -> Response + Send + Sync>;

fn default_renderer() -> ErrorRenderer {
    Arc::new(IntoResponse::into_response)
}

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

/// Renders `err` with the host's renderer when the layer installed one.
pub(crate) fn render_with(parts_ext: &http::Extensions, err: ApiError) -> Response {
    match parts_ext.get::<Renderer>() {
        Some(Renderer { render: r, realm }) => render(r, realm, err),
        None => err.into_response(),
    }
}

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

/// The refusal of a route whose [`KeywardLayer`] is missing: the host's
/// mistake, logged.
pub(crate) fn missing_layer() -> ApiError {
    tracing::error!(target: "keyward", "KeywardLayer is not installed on this route");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "The server is misconfigured.",
    )
}
