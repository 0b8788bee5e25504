//! [`require`](super::require): a route layer that lets a request through only if its
//! key holds one permission.

use std::sync::Arc;

use http::Request;
use tower::Layer;
use tracing::Span;

use super::render_with;
use super::requirement::Requirement;
use super::service::{Admission, Authorize, Gate};
use crate::keyward::Verified;
use crate::permission::{Catalog, ExprError, PermissionError};

/// A layer that lets a request through only if its key holds one
/// permission: `router.route_layer(require(keys.catalog(), "contacts:write")?)`.
/// Needs [`KeywardLayer`](super::KeywardLayer) outside it.
///
/// # Errors
/// [`PermissionError`] at start-up when the catalog has no such
/// permission: a typo fails the build of the router, not a request.
pub fn require(catalog: &Catalog, permission: &str) -> Result<RequirePermission, PermissionError> {
    Ok(RequirePermission {
        need: Arc::new(Requirement::one(catalog, permission)?),
    })
}

/// A layer that lets a request through only if its key satisfies a
/// permission expression, compiled here once:
/// `require_expr(keys.catalog(), "contacts:read and (tickets:write or admin:*)")?`.
/// The check is a few bit tests and allocates nothing. A refusal is 403
/// `forbidden` whose `permission` is the expression. Needs
/// [`KeywardLayer`](super::KeywardLayer) outside it.
///
/// # Errors
/// [`ExprError`] at start-up: a syntax error or an unknown permission.
pub fn require_expr(catalog: &Catalog, expression: &str) -> Result<RequirePermission, ExprError> {
    Ok(RequirePermission {
        need: Arc::new(Requirement::expr(catalog, expression)?),
    })
}

/// See [`require`](super::require) and [`require_expr`](super::require_expr).
#[derive(Debug, Clone)]
pub struct RequirePermission {
    /// Shared: the router clones the service for every request.
    need: Arc<Requirement>,
}

impl<S> Layer<S> for RequirePermission {
    type Service = RequireService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize::new(inner, self.clone())
    }
}

/// The service [`RequirePermission`] wraps around yours.
pub type RequireService<S> = Authorize<S, RequirePermission>;

impl Gate for RequirePermission {
    fn admit<B: Send + 'static>(&self, req: Request<B>) -> Admission<B> {
        match self.need.check(req.extensions().get::<Verified>()) {
            Ok(()) => Admission::Admit(req, Span::none()),
            Err(err) => Admission::Refuse(render_with(req.extensions(), err)),
        }
    }
}
