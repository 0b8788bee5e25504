//! [`KeywardLayer`](super::KeywardLayer): authenticates every request with a [`Keyward`].

use std::fmt;
use std::sync::Arc;

use axum::response::Response;
use http::header::HeaderName;
use http::Request;
use tower::Layer;
use tracing::Span;

use super::authenticate::{finish, key_span, start, Started};
use super::client::ClientAddress;
use super::service::{Admission, Authorize, Gate};
use super::{
    default_renderer, default_sources, render, ApiError, ErrorRenderer, KeySource, Renderer,
    DEFAULT_REALM,
};
use crate::keyward::{Keyward, Verified};

/// The layer's settings, shared by its services (one reference count to
/// clone a service by).
#[derive(Clone)]
struct Config {
    keys: Keyward,
    sources: Vec<KeySource>,
    tenant_header: Option<HeaderName>,
    client: ClientAddress,
    render: ErrorRenderer,
    realm: Arc<str>,
    /// The renderer or realm is the host's: put in each admitted request
    /// for the permission layers and extractors (which otherwise render
    /// the default, as this layer does: one allocation fewer a request).
    custom: bool,
}

/// Authenticates every request with a [`Keyward`]: reads the key, verifies
/// it (with the tenant from a header, if configured, and the client
/// address, see [`KeywardLayer::client_address`]), and either refuses
/// with an [`ApiError`] or passes the request on with the [`Verified`](crate::Verified) key
/// in its extensions (read it with [`Authenticated`](super::Authenticated)), in a `tracing` span
/// `api_key` (target `keyward::http`) carrying the key's display prefix
/// and tenant when a subscriber records `INFO`.
#[derive(Clone)]
#[must_use]
pub struct KeywardLayer {
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
            config: Arc::new(Config {
                keys,
                sources: default_sources(),
                tenant_header: None,
                client: ClientAddress::peer(),
                render: default_renderer(),
                realm: Arc::from(DEFAULT_REALM),
                custom: false,
            }),
        }
    }

    fn config(mut self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = (*self.config).clone();
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

    /// Where the client address checked against keys' IP allowlists
    /// comes from: by default the connection's peer (serve with
    /// `into_make_service_with_connect_info::<SocketAddr>()`; without it
    /// there is no address and keys with an allowlist are refused), or,
    /// behind trusted proxies, the forwarding header they write (see
    /// [`ClientAddress`]).
    pub fn client_address(self, client: ClientAddress) -> Self {
        self.config(|c| c.client = client)
    }

    /// The realm of the `WWW-Authenticate: Bearer` challenge on 401s, 403s
    /// and 400s of this layer and the permission layers inside it.
    /// Defaults to [`DEFAULT_REALM`](super::DEFAULT_REALM) (`api`). Characters a quoted string
    /// cannot hold (`"`, `\\`, non-ASCII, control) are dropped.
    pub fn realm(self, realm: &str) -> Self {
        let realm = super::error::clean_realm(realm);
        self.config(|c| {
            c.realm = realm;
            c.custom = true;
        })
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
        self.config(|c| {
            c.render = render;
            c.custom = true;
        })
    }
}

impl<S> Layer<S> for KeywardLayer {
    type Service = KeywardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize::new(
            inner,
            Authenticate {
                config: self.config.clone(),
            },
        )
    }
}

/// The service [`KeywardLayer`](super::KeywardLayer) wraps around yours.
pub type KeywardService<S> = Authorize<S, Authenticate>;

/// The gate of [`KeywardLayer`](super::KeywardLayer): verifies the request's key.
#[derive(Clone)]
pub struct Authenticate {
    config: Arc<Config>,
}

impl fmt::Debug for Authenticate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticate").finish_non_exhaustive()
    }
}

impl Gate for Authenticate {
    fn admit<B: Send + 'static>(&self, req: Request<B>) -> Admission<B> {
        let config = &*self.config;
        let client_ip = config.client.of(req.extensions(), req.headers());
        let tenant_header = config.tenant_header.as_ref();
        match start(
            &config.keys,
            &config.sources,
            tenant_header,
            req.headers(),
            client_ip,
        ) {
            // A cached key: decided here, with nothing cloned.
            Started::Done(result) => config.decide(req, result).into(),
            Started::Pending(pending) => {
                let config = self.config.clone();
                Admission::later(async move {
                    let result = finish(
                        &config.keys,
                        &config.sources,
                        config.tenant_header.as_ref(),
                        req.headers(),
                        client_ip,
                        pending,
                    )
                    .await;
                    config.decide(req, result)
                })
            }
        }
    }
}

impl Config {
    /// The request with its verified key (and the host's renderer) in its
    /// extensions, and the span to serve it in; or the refusal.
    // The error is the response to send, moved once: boxing it would cost
    // every refusal an allocation.
    #[allow(clippy::result_large_err)]
    fn decide<B>(
        &self,
        mut req: Request<B>,
        verified: Result<Verified, ApiError>,
    ) -> Result<(Request<B>, Span), Response> {
        let verified = verified.map_err(|e| render(&self.render, &self.realm, e))?;
        let span = key_span(&verified);
        req.extensions_mut().insert(verified);
        if self.custom {
            req.extensions_mut().insert(Renderer {
                render: self.render.clone(),
                realm: self.realm.clone(),
            });
        }
        Ok((req, span))
    }
}
