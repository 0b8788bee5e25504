//! [`require`](super::require): a route layer that lets a request through only if its
//! key holds one permission.

use std::future::Future;
use std::sync::Arc;

use axum::response::Response;
use http::Request;
use tower::Layer;
use tracing::Span;

use super::service::{Authorize, Gate};
use super::{missing_layer, render_with, ApiError};
use crate::error::Forbidden;
use crate::keyward::Verified;
use crate::permission::{Catalog, ExprError, Permission, PermissionError, PermissionExpr};

/// A layer that lets a request through only if its key holds one
/// permission: `router.route_layer(require(keys.catalog(), "contacts:write")?)`.
/// Needs [`KeywardLayer`](super::KeywardLayer) outside it.
///
/// # Errors
/// [`PermissionError`] at start-up when the catalog has no such
/// permission: a typo fails the build of the router, not a request.
pub fn require(catalog: &Catalog, permission: &str) -> Result<RequirePermission, PermissionError> {
    let p = catalog.parse(permission)?;
    Ok(RequirePermission {
        need: Need::One(p),
        name: Arc::from(catalog.name(p).unwrap_or(permission)),
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
    let expr = catalog.expression(expression)?;
    Ok(RequirePermission {
        name: Arc::from(expr.to_string()),
        need: Need::Expr(expr),
    })
}

/// See [`require`](super::require) and [`require_expr`](super::require_expr).
#[derive(Debug, Clone)]
pub struct RequirePermission {
    need: Need,
    name: Arc<str>,
}

/// What a route needs.
#[derive(Debug, Clone)]
enum Need {
    One(Permission),
    Expr(PermissionExpr),
}

impl Need {
    fn met_by(&self, key: &Verified) -> bool {
        match self {
            Self::One(p) => key.allows(*p),
            Self::Expr(e) => key.satisfies(e),
        }
    }
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
    fn admit<B: Send + 'static>(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Result<(Request<B>, Span), Response>> + Send + 'static {
        let refusal = match req.extensions().get::<Verified>() {
            Some(v) if self.need.met_by(v) => None,
            Some(v) => Some(
                ApiError::from_forbidden(&Forbidden::Missing(self.name.to_string()))
                    .with_key(Some(v.display_prefix())),
            ),
            None => Some(missing_layer()),
        };
        let decided = match refusal {
            None => Ok((req, Span::none())),
            Some(err) => Err(render_with(req.extensions(), err)),
        };
        std::future::ready(decided)
    }
}
