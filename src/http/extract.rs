//! Reading a request: the presented key and the named tenant from
//! headers, and the [`Authenticated`](super::Authenticated) extractor.

use axum::extract::FromRequestParts;
use axum::response::Response;
use http::header::{HeaderName, AUTHORIZATION};
use http::request::Parts;
use http::{HeaderMap, HeaderValue};

use super::{missing_layer, render_with, ApiError, BearerError, KeySource};
use crate::keyward::Verified;

/// The presented key, or why there is none usable: 401 without a key
/// (or with an unreadable one), 400 `invalid_request` for a key given
/// twice, in one header or in two sources (RFC 6750 §3.1), rather than
/// guess which one a proxy and the application each read.
pub(super) fn extract<'h>(
    headers: &'h HeaderMap,
    sources: &[KeySource],
) -> Result<&'h str, ApiError> {
    let twice = || ApiError::invalid_request("Send one API key, in one header.");
    let unreadable = || ApiError {
        bearer_error: Some(BearerError::InvalidToken),
        ..ApiError::unauthorized()
    };
    let mut found = None;
    for source in sources {
        let name = match source {
            KeySource::Header(name) => name,
            KeySource::Bearer => &AUTHORIZATION,
        };
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else {
            continue;
        };
        if values.next().is_some() {
            return Err(twice());
        }
        let value = value.to_str().map_err(|_| unreadable())?;
        let token = match source {
            KeySource::Header(_) => Some(value.trim()),
            KeySource::Bearer => {
                let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
                // Another scheme (Basic, …) is not an API key.
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            }
        };
        if let Some(token) = token {
            if found.replace(token).is_some() {
                return Err(twice());
            }
        }
    }
    found.ok_or_else(ApiError::unauthorized)
}

/// The tenant a request names in `name`: exactly one value. Its form is
/// checked by [`Keyward::verify_for_tenant`], never trimmed or normalised.
pub(super) fn tenant_of<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<&'h str, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::invalid_request(format!(
            "Send one {name} header."
        )));
    }
    match first.map(HeaderValue::to_str) {
        Some(Ok(t)) if !t.is_empty() => Ok(t),
        _ => Err(ApiError {
            code: "tenant_required",
            ..ApiError::invalid_request(format!("The {name} header is required."))
        }),
    }
}

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
        self.0
            .require(permission)
            .map_err(|e| ApiError::from_forbidden(&e).with_key(Some(self.0.display_prefix())))
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
