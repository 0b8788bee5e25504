//! The key-management API as a router a host nests, e.g. under
//! `/api-keys`: create, list (paged, newest first, filtered), get, change
//! (all or nothing), revoke, reactivate, roll, delete, and the audit
//! trail, with its OpenAPI 3.1 document at `openapi.json`.
//!
//! ```
//! use axum::Router;
//! use keyward::http::manage::Management;
//! use keyward::{Catalog, Keyward, MemoryAuditSink, MemoryStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let catalog = Catalog::builder()
//!     .resource("contacts", ["read", "write"])
//!     .resource("api_keys", ["read", "write"])
//!     .build()?;
//! let trail = MemoryAuditSink::default();
//! let keys = Keyward::builder(MemoryStore::new(), catalog).audit(trail.clone()).build()?;
//! // Admin keys holding `api_keys:read` may read, `api_keys:write` may change.
//! let app: Router = Router::new().nest(
//!     "/api-keys",
//!     Management::new(keys).audit_trail(trail).base_path("/api-keys").router()?,
//! );
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! Every response is `Cache-Control: no-store`; every refusal, 404 and 405
//! included, is the one JSON error shape (see [`ApiError`]).

mod about;
mod actor;
mod events;
mod keys;
mod openapi;
mod schema;
mod webhooks;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::request::Parts;

pub use actor::{Access, ApiKeyActors, ResolveActor};

use crate::audit::AuditTrail;
use crate::http::{ApiError, ClientAddress};
use crate::key::Actor;
use crate::keyward::Keyward;
use crate::permission::PermissionError;

/// The permission the default [`ApiKeyActors`] needs to read.
pub const READ_PERMISSION: &str = "api_keys:read";
/// The permission the default [`ApiKeyActors`] needs to change keys.
pub const WRITE_PERMISSION: &str = "api_keys:write";

/// Builds the management router: see the [module docs](self).
#[must_use]
pub struct Management {
    keys: Keyward,
    actors: Option<Arc<dyn ResolveActor>>,
    trail: Option<Arc<dyn AuditTrail>>,
    base_path: String,
    client: ClientAddress,
    webhooks: bool,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("trail", &self.trail)
            .field("base_path", &self.base_path)
            .finish_non_exhaustive()
    }
}

impl Management {
    /// The API over `keys`. Unless [`Management::actors`] says otherwise,
    /// callers are admin API keys: [`ApiKeyActors`] with
    /// [`READ_PERMISSION`] and [`WRITE_PERMISSION`].
    pub fn new(keys: Keyward) -> Self {
        Self {
            keys,
            actors: None,
            trail: None,
            base_path: "/".into(),
            client: ClientAddress::peer(),
            webhooks: false,
        }
    }

    /// Serves the webhook endpoint routes (`/webhook-endpoints`: make,
    /// list, delete, replay), for callers holding [`WRITE_PERMISSION`]
    /// (listing: [`READ_PERMISSION`]). Off by default: turn it on where
    /// a delivery worker runs
    /// ([`Keyward::spawn_webhook_worker`](crate::Keyward::spawn_webhook_worker),
    /// feature `webhooks`), or deliveries wait for one.
    pub fn webhooks(mut self, serve: bool) -> Self {
        self.webhooks = serve;
        self
    }

    /// Where the default actors' client address comes from, for admin
    /// keys with an IP allowlist: as
    /// [`KeywardLayer::client_address`](crate::http::KeywardLayer::client_address).
    /// Defaults to the connection's peer. (Actors set with
    /// [`Management::actors`] decide for themselves.)
    pub fn client_address(mut self, client: ClientAddress) -> Self {
        self.client = client;
        self
    }

    /// Who may act, and as whom: e.g. the host's signed-in users.
    pub fn actors(mut self, actors: impl ResolveActor) -> Self {
        self.actors = Some(Arc::new(actors));
        self
    }

    /// Where the audit routes read events: the trail the [`Keyward`]
    /// writes to (e.g. [`SqliteStore::audit_trail`]). Without one, they
    /// answer 404 `no_audit_trail`.
    ///
    /// [`SqliteStore::audit_trail`]: https://docs.rs/keyward/latest/keyward/struct.SqliteStore.html#method.audit_trail
    pub fn audit_trail(mut self, trail: impl AuditTrail) -> Self {
        self.trail = Some(Arc::new(trail));
        self
    }

    /// Where the host nests the router, for the OpenAPI document's server
    /// URL. Defaults to `/`.
    pub fn base_path(mut self, path: impl Into<String>) -> Self {
        self.base_path = path.into();
        self
    }

    /// The OpenAPI 3.1 document the router serves at `openapi.json`.
    pub fn openapi(&self) -> utoipa::openapi::OpenApi {
        openapi::document(&self.base_path, self.webhooks)
    }

    /// The router, to nest in the host's.
    ///
    /// # Errors
    /// With the default actors, [`PermissionError`] if the catalog lacks
    /// `api_keys:read` or `api_keys:write`.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Result<Router<S>, PermissionError> {
        let actors = match self.actors {
            Some(a) => a,
            None => Arc::new(
                ApiKeyActors::new(self.keys.clone(), READ_PERMISSION, WRITE_PERMISSION)?
                    .client_address(self.client),
            ),
        };
        let document = openapi::document(&self.base_path, self.webhooks)
            .to_json()
            .unwrap_or_else(|_| "{}".into());
        let catalog = serde_json::to_string(&about::catalog_view(self.keys.catalog()))
            .unwrap_or_else(|_| "{}".into());
        let ctx = Ctx(Arc::new(Inner {
            keys: self.keys,
            actors,
            trail: self.trail,
            document: document.into(),
            catalog: catalog.into(),
        }));
        let mut router = Router::new();
        if self.webhooks {
            router = router
                .route(
                    "/webhook-endpoints",
                    post(webhooks::create).get(webhooks::list),
                )
                .route(
                    "/webhook-endpoints/{endpoint_id}",
                    axum::routing::delete(webhooks::delete),
                )
                .route(
                    "/webhook-endpoints/{endpoint_id}/replay",
                    post(webhooks::replay),
                );
        }
        Ok(router
            .route("/", post(keys::create).get(keys::list))
            .route("/catalog", get(about::catalog))
            .route("/me", get(about::me))
            .route("/events", get(events::of_tenant))
            .route("/openapi.json", get(serve_document))
            .route(
                "/{id}",
                get(keys::get).patch(keys::update).delete(keys::delete),
            )
            .route("/{id}/revoke", post(keys::revoke))
            .route("/{id}/reactivate", post(keys::reactivate))
            .route("/{id}/roll", post(keys::roll))
            .route("/{id}/events", get(events::of_key))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::map_response(no_store))
            .with_state(ctx))
    }
}

/// The key id of the path: one that cannot be an id (or cannot even be
/// decoded) is a key that does not exist, answered as the JSON 404.
struct KeyPath(crate::token::KeyId);

impl FromRequestParts<Ctx> for KeyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Self, ApiError> {
        let not_found = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No API key with this id.",
            )
        };
        let Path(raw) = Path::<String>::from_request_parts(parts, ctx)
            .await
            .map_err(|_| not_found())?;
        raw.parse().map(Self).map_err(|_| not_found())
    }
}

/// What the handlers share.
#[derive(Clone)]
struct Ctx(Arc<Inner>);

struct Inner {
    keys: Keyward,
    actors: Arc<dyn ResolveActor>,
    trail: Option<Arc<dyn AuditTrail>>,
    /// The OpenAPI document and the catalog, rendered once.
    document: Bytes,
    catalog: Bytes,
}

impl std::ops::Deref for Ctx {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The actor of a reading request.
struct Reader(Actor);

/// The actor of a changing request.
struct Writer(Actor);

impl FromRequestParts<Ctx> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Self, ApiError> {
        ctx.actors.resolve(parts, Access::Read).await.map(Self)
    }
}

impl FromRequestParts<Ctx> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Self, ApiError> {
        ctx.actors.resolve(parts, Access::Write).await.map(Self)
    }
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "catalog", operation_id = "openapi",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json"))
)]
async fn serve_document(State(ctx): State<Ctx>) -> Response {
    json(&ctx.document)
}

/// A JSON body rendered before: a reference count, not a copy.
fn json(body: &Bytes) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body.clone(),
    )
        .into_response()
}

/// The refusal of a `cursor` no page of this API handed out.
fn invalid_cursor() -> ApiError {
    ApiError::invalid(
        "cursor",
        "invalid_cursor",
        "Invalid cursor: pass back the `next_cursor` of the previous page unchanged.",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such route.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This route does not answer this method; the Allow header lists those it does.",
    )
}

/// Key lists, tokens and audit events are for the caller only: never kept
/// by a browser or proxy cache.
async fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
