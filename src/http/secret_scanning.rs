//! The leaked-key endpoint for GitHub's secret scanning partner program
//! (feature `axum`): [`secret_scanning`].

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::ApiError;
use crate::audit::AuditOutcome;
use crate::keyward::Keyward;
use crate::leak::{parse_reports, ScannerKeys, SignatureError, MAX_REPORT_BYTES};

/// A router answering GitHub's leaked-token reports at `POST /`: nest it
/// where GitHub is told to post, e.g.
/// `app.nest("/secret-scanning", secret_scanning(keys, scanner))`.
///
/// A report is parsed only once its `Github-Public-Key-Signature` (ECDSA
/// P-256 over the raw body, by the key `Github-Public-Key-Identifier`
/// names) verifies with `scanner`, and its body is read only once the
/// headers name a known key and a well-formed signature: unsigned reports
/// get 401 `unsigned_report`, mis-signed and unknown-key ones 401
/// `invalid_signature`. Every report, answered or refused, is audited
/// (`leak_report`). A verified report is answered
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
        .with_state((keys, scanner))
}

async fn report(
    State((keys, scanner)): State<(Keyward, Arc<ScannerKeys>)>,
    request: Request,
) -> Response {
    let refuse = |keys: &Keyward, err: ApiError| {
        keys.audit_leak_report(AuditOutcome::Denied(err.code));
        err.into_response()
    };
    // The headers first: an unsigned or unknown-key report is refused
    // before its body is read.
    let (id, signature) = {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        (
            header("github-public-key-identifier"),
            header("github-public-key-signature"),
        )
    };
    let prepared = match scanner.prepare(id.as_deref(), signature.as_deref()).await {
        Ok(prepared) => prepared,
        Err(e) => return refuse(&keys, signature_refusal(&e)),
    };
    let body = match axum::body::to_bytes(request.into_body(), MAX_REPORT_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            let why = format!("the report is larger than {MAX_REPORT_BYTES} bytes");
            return refuse(&keys, ApiError::invalid_request(why));
        }
    };
    if let Err(e) = prepared.verify(&body) {
        return refuse(&keys, signature_refusal(&e));
    }
    let reports = match parse_reports(&body) {
        Ok(reports) => reports,
        Err(why) => return refuse(&keys, ApiError::invalid_request(why)),
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

fn signature_refusal(e: &SignatureError) -> ApiError {
    tracing::warn!(target: "keyward", error = %e, "a leaked-key report was refused");
    let code = match e {
        SignatureError::Unsigned => "unsigned_report",
        _ => "invalid_signature",
    };
    ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string())
}
