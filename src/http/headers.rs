//! Reading a request's headers, whatever the framework: the presented
//! key and the named tenant. axum, tonic and actix-web requests all read
//! through [`Headers`].

use http::header::{HeaderName, AUTHORIZATION};

use super::{ApiError, BearerError, KeySource};

/// Read access to a request's headers.
pub(crate) trait Headers {
    /// Every value of header `name`, in order.
    fn values<'a>(&'a self, name: &HeaderName) -> impl DoubleEndedIterator<Item = &'a [u8]>;
}

impl Headers for http::HeaderMap {
    fn values<'a>(&'a self, name: &HeaderName) -> impl DoubleEndedIterator<Item = &'a [u8]> {
        // By `HeaderName`: a lookup without parsing the name again.
        self.get_all(name).iter().map(http::HeaderValue::as_bytes)
    }
}

/// A header value as text: visible ASCII and tabs only, as
/// `HeaderValue::to_str` reads it.
pub(crate) fn visible(value: &[u8]) -> Option<&str> {
    // Without an early exit, the check runs over many bytes at a time.
    let shown = value
        .iter()
        .fold(true, |ok, &b| ok & (b == b'\t' || (32..127).contains(&b)));
    shown.then(|| std::str::from_utf8(value).ok()).flatten()
}

/// The presented key, or why there is none usable: 401 without a key
/// (or with an unreadable one), 400 `invalid_request` for a key given
/// twice, in one header or in two sources (RFC 6750 §3.1), rather than
/// guess which one a proxy and the application each read.
pub(crate) fn extract<'h, H: Headers + ?Sized>(
    headers: &'h H,
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
        let mut values = headers.values(name);
        let Some(value) = values.next() else {
            continue;
        };
        if values.next().is_some() {
            return Err(twice());
        }
        let value = visible(value).ok_or_else(unreadable)?;
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
pub(crate) fn tenant_of<'h, H: Headers + ?Sized>(
    headers: &'h H,
    name: &HeaderName,
) -> Result<&'h str, ApiError> {
    let mut values = headers.values(name);
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::invalid_request(format!(
            "Send one {name} header."
        )));
    }
    match first.map(visible) {
        Some(Some(t)) if !t.is_empty() => Ok(t),
        _ => Err(ApiError {
            code: "tenant_required",
            ..ApiError::invalid_request(format!("The {name} header is required."))
        }),
    }
}
