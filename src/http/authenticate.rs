//! Verifying the key a request presents: one function for every
//! framework adapter (axum's layer and management router, tonic,
//! actix-web), so that each refuses alike.

use std::net::IpAddr;

use http::header::HeaderName;

use super::headers::{extract, tenant_of, Headers};
use super::{ApiError, KeySource};
use crate::keyward::{Keyward, Pending, Verified, VerifyFuture, VerifyRequest};
use crate::token::DisplayPrefix;

/// Where a verification stands after [`start`]: decided, or waiting on
/// the store (or a host's limiter), to be finished by [`finish`].
pub(crate) enum Started {
    Done(Result<Verified, ApiError>),
    Pending(Pending),
}

/// Verifies the key a request presents in one of `sources` (with the
/// tenant in `tenant_header`, if any): the layer's check, and the
/// management router's when no layer ran before it, tonic's and
/// actix-web's.
pub(crate) async fn authenticate<H: Headers + ?Sized>(
    keys: &Keyward,
    sources: &[KeySource],
    tenant_header: Option<&HeaderName>,
    headers: &H,
    client_ip: Option<IpAddr>,
) -> Result<Verified, ApiError> {
    match start(keys, sources, tenant_header, headers, client_ip) {
        Started::Done(result) => result,
        Started::Pending(pending) => {
            finish(keys, sources, tenant_header, headers, client_ip, pending).await
        }
    }
}

/// [`authenticate`] as far as it goes without awaiting: for a cached key,
/// the answer, with nothing cloned or allocated on the way.
pub(crate) fn start<H: Headers + ?Sized>(
    keys: &Keyward,
    sources: &[KeySource],
    tenant_header: Option<&HeaderName>,
    headers: &H,
    client_ip: Option<IpAddr>,
) -> Started {
    let (token, req) = match request(keys, sources, tenant_header, headers, client_ip) {
        Ok(request) => request,
        Err(e) => return Started::Done(Err(e)),
    };
    match keys.verify_now(token, &req) {
        Ok(result) => Started::Done(result.map_err(|e| refusal(keys, token, &e))),
        Err(pending) => Started::Pending(pending),
    }
}

/// The rest of an [`authenticate`] that [`start`] left pending, for the
/// same request.
pub(crate) async fn finish<H: Headers + ?Sized>(
    keys: &Keyward,
    sources: &[KeySource],
    tenant_header: Option<&HeaderName>,
    headers: &H,
    client_ip: Option<IpAddr>,
    pending: Pending,
) -> Result<Verified, ApiError> {
    // The same headers give the same token and request as in `start`.
    let (token, req) = request(keys, sources, tenant_header, headers, client_ip)?;
    let result = VerifyFuture::resume(keys, token, req, pending).await;
    result.map_err(|e| refusal(keys, token, &e))
}

/// The token a request presents and what [`Keyward::verify_with`] is to
/// know of the request.
fn request<'h, H: Headers + ?Sized>(
    keys: &Keyward,
    sources: &[KeySource],
    tenant_header: Option<&HeaderName>,
    headers: &'h H,
    client_ip: Option<IpAddr>,
) -> Result<(&'h str, VerifyRequest<'h>), ApiError> {
    let token = extract(headers, sources)?;
    let mut req = VerifyRequest::new();
    if let Some(ip) = client_ip {
        req = req.client_ip(ip);
    }
    if let Some(name) = tenant_header {
        let tenant = tenant_of(headers, name).map_err(|e| e.with_key(prefix(keys, token)))?;
        req = req.tenant(tenant);
    }
    Ok((token, req))
}

/// The `api_key` span a verified request is served in (target
/// `keyward::http`, whatever the framework), carrying the key's display
/// prefix and tenant; made only when a `tracing` subscriber records
/// `INFO` (the same level test that `span!` makes before anything else).
/// Otherwise `Span::none()`: a disabled span would still be entered and
/// left on every poll and, with `tracing`'s `log` feature on, offered to
/// the `log` crate each time.
#[cfg(any(feature = "axum", feature = "actix"))]
pub(crate) fn key_span(verified: &Verified) -> tracing::Span {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    let info = LevelFilter::INFO;
    if info <= STATIC_MAX_LEVEL && info <= LevelFilter::current() {
        tracing::info_span!(
            target: "keyward::http",
            "api_key",
            key = %verified.display_prefix(),
            tenant = %verified.tenant(),
        )
    } else {
        tracing::Span::none()
    }
}

/// The refusal of `token`, naming its key by display prefix when it has
/// the shape of one (taken only on refusal: an accept never parses twice).
fn refusal(keys: &Keyward, token: &str, e: &crate::VerifyError) -> ApiError {
    ApiError::from_verify(e).with_key(prefix(keys, token))
}

fn prefix(keys: &Keyward, token: &str) -> Option<DisplayPrefix> {
    keys.parse(token).ok().map(|p| p.display_prefix())
}
