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
use crate::permission::{Catalog, Permission, PermissionError};

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
        permission: p,
        name: Arc::from(catalog.name(p).unwrap_or(permission)),
    })
}

/// See [`require`](super::require).
#[derive(Debug, Clone)]
pub struct RequirePermission {
    permission: Permission,
    name: Arc<str>,
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
            Some(v) if v.allows(self.permission) => None,
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
