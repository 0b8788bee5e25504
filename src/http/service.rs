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
use pin_project_lite::pin_project;
use tower::Service;
use tracing::instrument::Instrumented;
use tracing::{Instrument, Span};

/// Decides whether a request goes on: with what it learned put in the
/// request, and the span to run the inner service in; or refused, with
/// the response to send; or later, when deciding must await.
/// [`KeywardLayer`](super::KeywardLayer) and [`require`](super::require)
/// are gates; wrap a service in a gate of your own with
/// [`Authorize::new`].
///
/// A gate that decides at once costs its service no allocation: the inner
/// service's future runs in place.
///
/// ```
/// use axum::response::IntoResponse;
/// use axum::http::{Request, StatusCode};
/// use keyward::http::{Admission, Authorize, Gate};
/// use keyward::Verified;
/// use tracing::Span;
///
/// /// Lets through only keys of tenant `ops` (inside `KeywardLayer`).
/// #[derive(Clone)]
/// struct OpsOnly;
///
/// impl Gate for OpsOnly {
///     fn admit<B: Send + 'static>(&self, req: Request<B>) -> Admission<B> {
///         let ops = req.extensions().get::<Verified>().is_some_and(|v| v.tenant() == "ops");
///         if ops {
///             Admission::Admit(req, Span::none())
///         } else {
///             Admission::Refuse(StatusCode::FORBIDDEN.into_response())
///         }
///     }
/// }
///
/// # fn wrap<S>(inner: S) -> Authorize<S, OpsOnly> {
/// Authorize::new(inner, OpsOnly)
/// # }
/// ```
///
/// A gate that must await (a lookup of its own) answers
/// [`Admission::later`] with the future that decides.
pub trait Gate: Clone + Send + Sync + 'static {
    /// The decision for `req`.
    fn admit<B: Send + 'static>(&self, req: Request<B>) -> Admission<B>;
}

/// What a [`Gate`] decided about a request.
pub enum Admission<B> {
    /// Let through: the request (with what the gate put in its
    /// extensions) and the span to run the inner service in.
    Admit(Request<B>, Span),
    /// Refused, with the response to send.
    Refuse(Response),
    /// Not decided without awaiting: the future that decides, as
    /// `Ok((request, span))` to let through or `Err(response)` to refuse.
    Await(Decision<B>),
}

/// The future of an [`Admission::Await`].
pub type Decision<B> = Pin<Box<dyn Future<Output = Result<(Request<B>, Span), Response>> + Send>>;

impl<B> Admission<B> {
    /// Decided by `decision` once it resolves.
    pub fn later(
        decision: impl Future<Output = Result<(Request<B>, Span), Response>> + Send + 'static,
    ) -> Self {
        Self::Await(Box::pin(decision))
    }
}

impl<B> From<Result<(Request<B>, Span), Response>> for Admission<B> {
    fn from(decided: Result<(Request<B>, Span), Response>) -> Self {
        match decided {
            Ok((req, span)) => Self::Admit(req, span),
            Err(refusal) => Self::Refuse(refusal),
        }
    }
}

impl<B> fmt::Debug for Admission<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Admit(..) => "Admission::Admit",
            Self::Refuse(_) => "Admission::Refuse",
            Self::Await(_) => "Admission::Await",
        })
    }
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

    /// The inner service that was polled ready, taken out; a clone stays
    /// behind for the next `poll_ready`.
    fn take_ready(&mut self) -> S
    where
        S: Clone,
    {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
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
    type Future = AuthorizeFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let state = match self.gate.admit(req) {
            // Decided now: the service that was polled ready takes the
            // request, and its future runs in place.
            Admission::Admit(req, span) => State::Inner {
                future: self.inner.call(req).instrument(span),
            },
            Admission::Refuse(refusal) => {
                // What the ready service reserved in `poll_ready` (a
                // concurrency slot, a buffer permit) goes with it.
                drop(self.take_ready());
                State::Refused {
                    refusal: Some(refusal),
                }
            }
            // Decided later: the ready service goes with the decision.
            Admission::Await(decision) => {
                let mut inner = self.take_ready();
                State::Gated {
                    future: Box::pin(async move {
                        match decision.await {
                            Ok((req, span)) => {
                                Ok(inner.call(req).instrument(span).await?.map(Body::new))
                            }
                            Err(refusal) => Ok(refusal),
                        }
                    }),
                }
            }
        };
        AuthorizeFuture { state }
    }
}

pin_project! {
    /// The future of [`Authorize`]: the inner service's future run in the
    /// gate's span, or the gate's refusal. It allocates only for a gate
    /// that had to await.
    pub struct AuthorizeFuture<F, E> {
        #[pin]
        state: State<F, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, E> {
        Inner { #[pin] future: Instrumented<F> },
        Refused { refusal: Option<Response> },
        Gated { future: Pin<Box<dyn Future<Output = Result<Response, E>> + Send>> },
    }
}

impl<F, E> fmt::Debug for AuthorizeFuture<F, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizeFuture").finish_non_exhaustive()
    }
}

impl<F, E, ResBody> Future for AuthorizeFuture<F, E>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(Body::new))),
            // Polled after completion: never resolves again.
            StateProj::Refused { refusal } => {
                refusal.take().map_or(Poll::Pending, |r| Poll::Ready(Ok(r)))
            }
            StateProj::Gated { future } => future.as_mut().poll(cx),
        }
    }
}
