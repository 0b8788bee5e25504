//! The leaked-key endpoint for GitHub's secret scanning partner program
//! (feature `axum`): [`secret_scanning`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::ApiError;
use crate::keyward::Keyward;
use crate::leak::{parse_reports, ScannerKeys, SignatureError, MAX_REPORT_BYTES};

/// A router answering GitHub's leaked-token reports at `POST /`: nest it
/// where GitHub is told to post, e.g.
/// `app.nest("/secret-scanning", secret_scanning(keys, scanner))`.
///
/// A report is read only once its `Github-Public-Key-Signature` (ECDSA
/// P-256 over the raw body, by the key `Github-Public-Key-Identifier`
/// names) verifies with `scanner`: unsigned, mis-signed and unknown-key
/// reports get 401 `invalid_signature`. A verified report is answered
/// with GitHub's feedback format, one entry per token (see
/// [`Keyward::report_leaks`]); every true positive's key is revoked.
///
/// ```
/// use std::sync::Arc;
/// use keyward::http::secret_scanning;
/// use keyward::leak::ScannerKeys;
/// use keyward::{Catalog, Keyward, MemoryStore};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let catalog = Catalog::builder().resource("contacts", ["read"]).build()?;
/// let keys = Keyward::builder(MemoryStore::new(), catalog).build()?;
/// // GitHub's keys: given here, or fetched by a KeyFetcher of the host's.
/// let scanner = Arc::new(ScannerKeys::new());
/// let app: axum::Router = axum::Router::new().nest("/secret-scanning", secret_scanning(keys, scanner));
/// # let _ = app;
/// # Ok(()) }
/// ```
pub fn secret_scanning(keys: Keyward, scanner: Arc<ScannerKeys>) -> Router {
    Router::new()
        .route("/", post(report))
        .layer(DefaultBodyLimit::max(MAX_REPORT_BYTES))
        .with_state((keys, scanner))
}

async fn report(
    State((keys, scanner)): State<(Keyward, Arc<ScannerKeys>)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let verified = scanner
        .verify(
            header("github-public-key-identifier"),
            header("github-public-key-signature"),
            &body,
        )
        .await;
    if let Err(e) = verified {
        tracing::warn!(target: "keyward", error = %e, "a leaked-key report was refused");
        let code = match e {
            SignatureError::Unsigned => "unsigned_report",
            _ => "invalid_signature",
        };
        return ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string()).into_response();
    }
    let reports = match parse_reports(&body) {
        Ok(reports) => reports,
        Err(why) => return ApiError::invalid_request(why).into_response(),
    };
    match keys.report_leaks(&reports).await {
        Ok(feedback) => {
            let mut response = Json(feedback).into_response();
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => ApiError::from_verify(&crate::error::VerifyError::Store(e)).into_response(),
    }
}
