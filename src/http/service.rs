//! The one tower service behind [`KeywardLayer`](super::KeywardLayer)
//! and [`require`](super::require): a [`Gate`] decides, the service runs
//! the inner service or answers with the gate's refusal.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::response::Response;
use http::Request;
use tower::Service;
use tracing::{Instrument, Span};

/// Decides whether a request goes on: with what it learned put in the
/// request, and the span to run the inner service in; or refused, with
/// the response to send. [`KeywardLayer`](super::KeywardLayer) and
/// [`require`](super::require) are gates; wrap a service in a gate of
/// your own with [`Authorize::new`].
///
/// ```
/// use std::future::Future;
///
/// use axum::response::{IntoResponse, Response};
/// use axum::http::{Request, StatusCode};
/// use keyward::http::{Authorize, Gate};
/// use keyward::Verified;
/// use tracing::Span;
///
/// /// Lets through only keys of tenant `ops` (inside `KeywardLayer`).
/// #[derive(Clone)]
/// struct OpsOnly;
///
/// impl Gate for OpsOnly {
///     fn admit<B: Send + 'static>(
///         &self,
///         req: Request<B>,
///     ) -> impl Future<Output = Result<(Request<B>, Span), Response>> + Send + 'static {
///         let ops = req.extensions().get::<Verified>().is_some_and(|v| v.tenant() == "ops");
///         std::future::ready(if ops {
///             Ok((req, Span::none()))
///         } else {
///             Err(StatusCode::FORBIDDEN.into_response())
///         })
///     }
/// }
///
/// # fn wrap<S>(inner: S) -> Authorize<S, OpsOnly> {
/// Authorize::new(inner, OpsOnly)
/// # }
/// ```
pub trait Gate: Clone + Send + Sync + 'static {
    /// The decision for `req`.
    fn admit<B: Send + 'static>(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Result<(Request<B>, Span), Response>> + Send + 'static;
}

/// Runs the inner service for the requests its gate admits. Built by the
/// layers: see [`KeywardService`](super::KeywardService) and
/// [`RequireService`](super::RequireService).
#[derive(Clone)]
pub struct Authorize<S, G> {
    inner: S,
    gate: G,
}

impl<S, G> Authorize<S, G> {
    /// Runs `inner` for the requests `gate` admits.
    pub fn new(inner: S, gate: G) -> Self {
        Self { inner, gate }
    }
}

impl<S, G: fmt::Debug> fmt::Debug for Authorize<S, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorize")
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

impl<S, G, ReqBody, ResBody> Service<Request<ReqBody>> for Authorize<S, G>
where
    S: Service<Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    G: Gate,
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
        // The clone that was polled ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let admitted = self.gate.admit(req);
        Box::pin(async move {
            match admitted.await {
                Ok((req, span)) => Ok(inner.call(req).instrument(span).await?.map(Body::new)),
                Err(refusal) => Ok(refusal),
            }
        })
    }
}
