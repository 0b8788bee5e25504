//! Verifying the key a request presents: one function for every
//! framework adapter (axum's layer and management router, tonic,
//! actix-web), so that each refuses alike.

use std::net::IpAddr;

use http::header::HeaderName;

use super::headers::{extract, tenant_of, Headers};
use super::{ApiError, KeySource};
use crate::keyward::{Keyward, Verified, VerifyRequest};

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
    let token = extract(headers, sources)?;
    let prefix = keys.parse(token).ok().map(|p| p.display_prefix());
    let mut req = VerifyRequest::new();
    if let Some(ip) = client_ip {
        req = req.client_ip(ip);
    }
    if let Some(name) = tenant_header {
        let tenant = tenant_of(headers, name).map_err(|e| e.with_key(prefix))?;
        req = req.tenant(tenant);
    }
    let result = keys.verify_with(token, req).await;
    result.map_err(|e| ApiError::from_verify(&e).with_key(prefix))
}
