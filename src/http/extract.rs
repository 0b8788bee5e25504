//! The [`Authenticated`](super::Authenticated) extractor of axum.

use axum::extract::FromRequestParts;
use axum::response::Response;
use http::request::Parts;

use super::{missing_layer, render_with, ApiError};
use crate::keyward::Verified;

/// The verified key of the request: an axum extractor (needs
/// [`KeywardLayer`](super::KeywardLayer) on the route). Derefs to [`Verified`].
#[derive(Debug, Clone)]
pub struct Authenticated(pub Verified);

impl std::ops::Deref for Authenticated {
    type Target = Verified;

    fn deref(&self) -> &Verified {
        &self.0
    }
}

impl Authenticated {
    /// The key must hold `permission`; otherwise a 403 naming it, with the
    /// key's prefix and an `insufficient_scope` challenge (in
    /// [`DEFAULT_REALM`](super::DEFAULT_REALM): a handler's error does not know the layer's
    /// realm; the [`require`](super::require) route layer uses it).
    ///
    /// # Errors
    /// [`ApiError`] 403 `forbidden`.
    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        super::requirement::require_named(&self.0, permission)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        match parts.extensions.get::<Verified>() {
            Some(v) => Ok(Self(v.clone())),
            None => Err(render_with(&parts.extensions, missing_layer())),
        }
    }
}
