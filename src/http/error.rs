//! [`ApiError`]: one refusal shape for every framework, rendered as
//! keyward's JSON body or as RFC 9457 `application/problem+json`, with the
//! RFC 6750 `WWW-Authenticate: Bearer` challenge on 401, 403 and 400.

use std::fmt;
use std::time::Duration;

#[cfg(feature = "axum")]
use axum::response::{IntoResponse, Response};
#[cfg(feature = "axum")]
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};

use crate::error::{Forbidden, KeyError, VerifyError, STORE_UNAVAILABLE};
use crate::key::KeyStatus;
use crate::token::DisplayPrefix;

/// The realm of the `WWW-Authenticate` challenge unless
/// [`KeywardLayer::realm`](super::KeywardLayer::realm) says otherwise.
pub const DEFAULT_REALM: &str = "api";

/// The RFC 6750 §3.1 error code a challenge carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BearerError {
    /// 400: the request is malformed, e.g. two credentials or two tenant
    /// headers.
    InvalidRequest,
    /// 401: the presented key is malformed, unknown, expired, revoked or
    /// otherwise not valid.
    InvalidToken,
    /// 403: the key lacks the permission named in `scope`.
    InsufficientScope,
}

impl BearerError {
    /// The code as RFC 6750 spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
        }
    }
}

/// A refusal, in a form every framework can render: status, stable code,
/// message for humans, and what else is known. axum's `IntoResponse` renders
/// the default JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable, snake_case: `unauthorized`, `api_key_expired`, `forbidden`,
    /// `rate_limited`, … (see the README's table).
    pub code: &'static str,
    /// For humans; never contains a secret.
    pub message: String,
    /// The display prefix of the presented key, when it was well-formed.
    pub key: Option<DisplayPrefix>,
    /// The request field at fault (for 422).
    /// Boxed: a refusal may name a field the client sent that does not
    /// exist, and the error stays small enough to return by value.
    pub field: Option<Box<str>>,
    /// The permission the key lacks (for 403). Boxed to keep the error
    /// small enough to return by value.
    pub permission: Option<Box<str>>,
    /// When to retry (429, 503); sent as `Retry-After` in whole seconds.
    pub retry_after: Option<Duration>,
    /// The RFC 6750 error of the `WWW-Authenticate` challenge. Every 401
    /// carries a challenge; with a presented key it says `invalid_token`.
    pub bearer_error: Option<BearerError>,
}

impl ApiError {
    /// An error with no extra details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            key: None,
            field: None,
            permission: None,
            retry_after: None,
            bearer_error: None,
        }
    }

    /// 401 `unauthorized` for a request without a key: the challenge
    /// names no error (RFC 6750 §3.1).
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid API key.",
        )
    }

    /// 400 `invalid_request`: the request is ambiguous, e.g. it carries two
    /// keys or names two tenants.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self {
            bearer_error: Some(BearerError::InvalidRequest),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        }
    }

    /// 422 naming the request field at fault.
    pub fn invalid(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
        }
    }

    /// The same error naming the presented key by its display prefix.
    pub fn with_key(mut self, key: Option<DisplayPrefix>) -> Self {
        self.key = key;
        self
    }

    /// The refusal of a verification. Every 401 here had a key presented,
    /// so its challenge says `invalid_token`.
    pub fn from_verify(err: &VerifyError) -> Self {
        // The codes are the library's (`VerifyError::code`).
        let e = |status, message: &str| Self::new(status, err.code(), message);
        let mut out = match err {
            VerifyError::Malformed | VerifyError::Invalid => Self::unauthorized(),
            VerifyError::Expired => e(StatusCode::UNAUTHORIZED, "API key has expired"),
            VerifyError::Revoked => e(StatusCode::UNAUTHORIZED, "API key has been revoked."),
            VerifyError::Inactive => e(
                StatusCode::UNAUTHORIZED,
                "API key was disabled after a long time without use; create a new key.",
            ),
            VerifyError::WrongTenant => e(
                StatusCode::UNAUTHORIZED,
                "API key does not belong to this tenant.",
            ),
            VerifyError::InvalidTenant(why) => Self {
                field: Some("tenant".into()),
                ..e(StatusCode::BAD_REQUEST, &format!("Invalid tenant: {why}."))
            },
            VerifyError::RateLimited { retry_after } => Self {
                retry_after: Some(positive(*retry_after)),
                ..e(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Rate limit exceeded for this API key.",
                )
            },
            VerifyError::QuotaExceeded { retry_after } => Self {
                retry_after: Some(positive(*retry_after)),
                ..e(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Request quota exceeded for this tenant.",
                )
            },
            VerifyError::UsageExceeded => {
                e(StatusCode::TOO_MANY_REQUESTS, "API key has no uses left.")
            }
            VerifyError::NotYetValid => e(
                StatusCode::UNAUTHORIZED,
                "API key is not valid yet; it works from its not_before time.",
            ),
            VerifyError::IpNotAllowed => e(
                StatusCode::FORBIDDEN,
                "API key may not be used from this IP address.",
            ),
            VerifyError::LimitExceeded { limit, retry_after } => Self {
                retry_after: Some(positive(*retry_after)),
                ..e(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("Limit `{limit}` exceeded for this API key."),
                )
            },
            _ => Self {
                retry_after: Some(Duration::from_secs(1)),
                ..e(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "API keys cannot be checked right now; retry shortly.",
                )
            },
        };
        if out.status == StatusCode::UNAUTHORIZED {
            out.bearer_error = Some(BearerError::InvalidToken);
        }
        out
    }

    /// 403 `forbidden` naming the missing permission (or 500 for a
    /// permission the catalog does not have: the host's mistake).
    pub fn from_forbidden(err: &Forbidden) -> Self {
        match err {
            Forbidden::Missing(p) => Self {
                permission: Some(p.as_str().into()),
                bearer_error: Some(BearerError::InsufficientScope),
                ..Self::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("API key lacks permission `{p}`."),
                )
            },
            _ => {
                tracing::error!(target: "keyward", error = %err, "route requires an unknown permission");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "The server is misconfigured.",
                )
            }
        }
    }

    /// The refusal of a management call (create, revoke, …).
    pub fn from_key_error(err: &KeyError) -> Self {
        // The codes are the library's (`KeyError::code`), but for a
        // failed store, which is `store_unavailable` as in verification.
        let e = |status, message: String| Self::new(status, err.code(), message);
        match err {
            KeyError::Forbidden { .. } => e(
                StatusCode::FORBIDDEN,
                "This API key may not manage API keys.".into(),
            ),
            KeyError::NotFound(id) => e(
                StatusCode::NOT_FOUND,
                format!("No API key with id {id}."),
            ),
            KeyError::InvalidName(why) => {
                Self::invalid("name", err.code(), format!("Invalid name: {why}."))
            }
            KeyError::PermissionEscalation { missing } => Self {
                permission: missing.first().map(|p| p.as_str().into()),
                ..e(
                    StatusCode::FORBIDDEN,
                    format!(
                        "A key cannot hold more than its creator; you lack {}.",
                        missing.join(", ")
                    ),
                )
            },
            KeyError::Permission(p) => {
                Self::invalid("permissions", err.code(), p.to_string())
            }
            KeyError::InvalidExpiry => Self::invalid(
                "expires_at",
                err.code(),
                "The expiry must be in the future and no later than 9999-12-31.",
            ),
            KeyError::NotActive { status, .. } => e(
                StatusCode::CONFLICT,
                match status {
                    KeyStatus::Expired => "This API key has expired: an expired key can be neither reactivated nor rolled. Create a new key instead.",
                    KeyStatus::Revoked => "This API key is revoked: reactivate it first.",
                    _ => "This API key is not active.",
                }
                .into(),
            ),
            KeyError::RolledAway { successor, .. } => e(
                StatusCode::CONFLICT,
                format!("This API key was rolled and replaced by {successor}: it can be neither reactivated nor rolled again. Use the new key."),
            ),
            KeyError::Outranked { dimension, .. } => e(
                StatusCode::FORBIDDEN,
                format!(
                    "This API key holds more than yours ({dimension}); only a manager holding at least as much may change it."
                ),
            ),
            KeyError::Exposed(id) => e(
                StatusCode::CONFLICT,
                format!("API key {id} was revoked because its token leaked: it cannot be reactivated. Create a new key."),
            ),
            KeyError::BoundExceeded { dimension } => e(
                StatusCode::FORBIDDEN,
                format!(
                    "A key cannot hold more than its manager: its {dimension} would exceed yours."
                ),
            ),
            KeyError::InvalidGrace => Self::invalid(
                "grace_seconds",
                err.code(),
                "The grace period must be zero or positive.",
            ),
            // A tenant outside the grammar is refused as a bad request
            // (400), like the tenant header, never normalised.
            KeyError::InvalidTenant(_) => Self {
                status: StatusCode::BAD_REQUEST,
                ..Self::invalid("tenant", err.code(), err.to_string())
            },
            KeyError::InvalidMetadata(why) => Self::invalid(
                "metadata",
                err.code(),
                format!("Invalid metadata: {why}."),
            ),
            KeyError::UnknownRole(_) | KeyError::InvalidRole(_) => {
                Self::invalid("roles", err.code(), err.to_string())
            }
            KeyError::InvalidLimit(_) => Self::invalid("limits", err.code(), err.to_string()),
            KeyError::InvalidNotBefore => Self::invalid("not_before", err.code(), err.to_string()),
            // The policy is named in the code's companion field and the
            // message: `policy_violation`, e.g. "max_lifetime: ...".
            KeyError::PolicyViolation { rule, .. } => Self {
                field: Some(rule.as_str().into()),
                ..e(StatusCode::FORBIDDEN, err.to_string())
            },
            KeyError::Store(_) | KeyError::Entropy(_) => Self {
                retry_after: Some(Duration::from_secs(1)),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    STORE_UNAVAILABLE,
                    "API keys cannot be managed right now; retry shortly.",
                )
            },
            _ => {
                tracing::error!(target: "keyward", error = %err, "management call failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "The request could not be completed.",
                )
            }
        }
    }

    /// The default body: `{"error":{"code":…,"message":…}}`, plus `key`,
    /// `field`, `permission` and `retry_after_seconds` when known.
    pub fn to_json(&self) -> serde_json::Value {
        let mut error = serde_json::Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.clone().into());
        if let Some(k) = &self.key {
            error.insert("key".into(), k.as_str().into());
        }
        if let Some(f) = &self.field {
            error.insert("field".into(), f.to_string().into());
        }
        if let Some(p) = &self.permission {
            error.insert("permission".into(), p.to_string().into());
        }
        if let Some(r) = self.retry_after {
            error.insert("retry_after_seconds".into(), retry_secs(r).into());
        }
        serde_json::json!({ "error": error })
    }

    /// The RFC 9457 problem details body: `type` (`about:blank`: the
    /// status says it all), `title` (the status's reason phrase),
    /// `status`, `detail` (the message), and the extension members `code`,
    /// `key`, `field`, `permission` and `retry_after_seconds` when known.
    pub fn to_problem_json(&self) -> serde_json::Value {
        let mut problem = serde_json::Map::new();
        problem.insert("type".into(), "about:blank".into());
        problem.insert(
            "title".into(),
            self.status.canonical_reason().unwrap_or("Error").into(),
        );
        problem.insert("status".into(), self.status.as_u16().into());
        problem.insert("detail".into(), self.message.clone().into());
        if let serde_json::Value::Object(mut fields) = self.to_json() {
            if let Some(serde_json::Value::Object(error)) = fields.remove("error") {
                for (k, v) in error {
                    if k != "message" {
                        problem.insert(k, v);
                    }
                }
            }
        }
        serde_json::Value::Object(problem)
    }

    /// The `WWW-Authenticate` value for this error in `realm`, if it
    /// carries one: every 401, and the 403 and 400 that name a
    /// [`BearerError`]. [`KeywardLayer`](super::KeywardLayer) sets it with
    /// its realm whatever the renderer; rendered alone, an error uses
    /// [`DEFAULT_REALM`].
    pub fn challenge(&self, realm: &str) -> Option<HeaderValue> {
        if self.status != StatusCode::UNAUTHORIZED && self.bearer_error.is_none() {
            return None;
        }
        let mut value = format!("Bearer realm=\"{realm}\"");
        if let Some(error) = self.bearer_error {
            value.push_str(&format!(", error=\"{}\"", error.as_str()));
            if error == BearerError::InsufficientScope {
                if let Some(p) = &self.permission {
                    value.push_str(&format!(", scope=\"{p}\""));
                }
            }
        }
        HeaderValue::from_str(&value).ok()
    }

    /// Renders as RFC 9457 `application/problem+json`, with the same
    /// status and headers as the default rendering. Use it as the layer's
    /// renderer with [`KeywardLayer::problem_json`](super::KeywardLayer::problem_json).
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn into_problem_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.to_problem_json())).into_response();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        self.add_headers(&mut response);
        response
    }

    /// The `Retry-After` value (whole seconds, at least 1), when a time
    /// is known.
    pub fn retry_after_header(&self) -> Option<String> {
        self.retry_after.map(|r| retry_secs(r).max(1).to_string())
    }

    #[cfg(feature = "axum")]
    fn add_headers(&self, response: &mut Response) {
        let headers = response.headers_mut();
        if let Some(v) = self
            .retry_after_header()
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            headers.insert(RETRY_AFTER, v);
        }
        if let Some(v) = self.challenge(DEFAULT_REALM) {
            headers.insert(WWW_AUTHENTICATE, v);
        }
    }
}

/// A realm a quoted string can hold: characters it cannot (`"`, `\\`,
/// non-ASCII, control) dropped, at most 100; [`DEFAULT_REALM`] if
/// nothing is left.
#[cfg(any(feature = "axum", feature = "actix"))]
pub(crate) fn clean_realm(realm: &str) -> std::sync::Arc<str> {
    let clean: String = realm
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
        .take(100)
        .collect();
    if clean.trim().is_empty() {
        std::sync::Arc::from(DEFAULT_REALM)
    } else {
        std::sync::Arc::from(clean.trim())
    }
}

fn positive(d: chrono::Duration) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
}

/// Whole seconds, rounded up, at least 1.
pub(crate) fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.to_json())).into_response();
        self.add_headers(&mut response);
        response
    }
}

impl From<crate::error::WebhookError> for ApiError {
    fn from(err: crate::error::WebhookError) -> Self {
        use crate::error::WebhookError as W;
        let e = |status, message: String| Self::new(status, err.code(), message);
        match &err {
            W::Forbidden { .. } => e(
                StatusCode::FORBIDDEN,
                "This API key may not manage webhook endpoints.".into(),
            ),
            W::NotFound(id) => e(
                StatusCode::NOT_FOUND,
                format!("No webhook endpoint with id {id}."),
            ),
            W::InvalidUrl(why) => Self::invalid("url", err.code(), format!("Invalid URL: {why}.")),
            W::InvalidDescription => Self::invalid("description", err.code(), err.to_string()),
            W::TooManyEndpoints { .. } => e(StatusCode::CONFLICT, err.to_string()),
            W::Unsupported => e(
                StatusCode::NOT_IMPLEMENTED,
                "This service's key store keeps no webhook outbox.".into(),
            ),
            W::Store(_) | W::Entropy(_) => Self {
                retry_after: Some(Duration::from_secs(1)),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    STORE_UNAVAILABLE,
                    "Webhook endpoints cannot be managed right now; retry shortly.",
                )
            },
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(err: KeyError) -> Self {
        Self::from_key_error(&err)
    }
}

impl From<Forbidden> for ApiError {
    fn from(err: Forbidden) -> Self {
        Self::from_forbidden(&err)
    }
}
