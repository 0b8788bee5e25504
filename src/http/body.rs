//! Reading requests: JSON bodies and query strings whose every fault is an
//! [`ApiError`] naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::StatusCode;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A JSON body as an axum extractor whose refusals are [`ApiError`]s:
/// 415 `unsupported_media_type` without a JSON content type, 400
/// `invalid_json` for broken JSON, 422 `unknown_field`, `missing_field` or
/// `invalid_field` naming the field.
///
/// ```
/// use keyward::http::{ApiError, JsonBody};
///
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct NewContact { name: String }
///
/// async fn add_contact(JsonBody(c): JsonBody<NewContact>) -> Result<String, ApiError> {
///     Ok(c.name)
/// }
/// # let _ = axum::routing::post::<_, _, ()>(add_contact);
/// ```
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send a JSON body with Content-Type: application/json.",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "The body is too large.",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    "The body could not be read.",
                )
            }
        })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(de) {
            Ok(v) => Ok(Self(v)),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if inner.is_data() {
                    Err(field_error(&path, &inner.to_string()))
                } else {
                    Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_json",
                        format!(
                            "The body is not valid JSON: {}.",
                            without_position(&inner.to_string())
                        ),
                    ))
                }
            }
        }
    }
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// A query string: 422 `invalid_query` naming the parameter at fault.
pub(crate) struct Query<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Self).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            ApiError {
                code: "invalid_query",
                ..field_error(&path, &message)
            }
        })
    }
}

/// The 422 of a body or query that does not fit its type: the field is
/// the one serde names in backquotes (unknown or missing), else the path.
fn field_error(path: &str, message: &str) -> ApiError {
    let named = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("unknown field") || message.starts_with("missing field"));
    let (code, field) = match named {
        Some(name) if message.starts_with("unknown field") => ("unknown_field", name.to_string()),
        Some(name) => ("missing_field", name.to_string()),
        None => (
            "invalid_field",
            path.split(['[', '.']).next().unwrap_or("").to_string(),
        ),
    };
    let field: String = field.chars().filter(|c| !c.is_control()).take(64).collect();
    let message = without_position(message);
    let message = match code {
        "unknown_field" => format!(
            "Unknown field `{field}`: {}.",
            message.split_once(", ").map_or("", |(_, rest)| rest)
        ),
        "missing_field" => format!("The field `{field}` is required."),
        _ => format!("Invalid `{field}`: {message}."),
    };
    ApiError {
        field: (!field.is_empty() && field != "?").then_some(field.into_boxed_str()),
        ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
}

/// serde_json's message without " at line 1 column 9".
fn without_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_name_their_field() {
        let e = field_error(
            ".",
            "unknown field `grace`, expected `grace_seconds` at line 1 column 8",
        );
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("unknown_field", Some("grace"))
        );
        assert_eq!(
            e.message,
            "Unknown field `grace`: expected `grace_seconds`."
        );
        let e = field_error(".", "missing field `grace_seconds` at line 1 column 2");
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("missing_field", Some("grace_seconds"))
        );
        let e = field_error(
            "permissions[0]",
            "invalid type: integer `1`, expected a string at line 1 column 17",
        );
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("invalid_field", Some("permissions"))
        );
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn json_content_types() {
        let mut h = http::HeaderMap::new();
        assert!(!is_json(&h));
        for (v, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/jsonx", false),
        ] {
            h.insert(CONTENT_TYPE, v.parse().expect("header"));
            assert_eq!(is_json(&h), ok, "{v}");
        }
    }
}
