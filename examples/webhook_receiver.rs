//! A tiny webhook receiver: checks each message's Standard Webhooks
//! signature with the endpoint's secret, drops a `webhook-id` it has
//! seen, and prints the event.
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_… PORT=4000 cargo run --example webhook_receiver --features axum
//! ```
//!
//! Make the endpoint (`http://127.0.0.1:4000/hook`) through the example
//! server's `/api-keys/webhook-endpoints`, run the server with
//! `KEYWARD_WEBHOOKS_ALLOW_LOCAL=1`, and watch key events arrive.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use keyward::webhook::{verify, WebhookSecret};

struct Receiver {
    secret: WebhookSecret,
    seen: Mutex<HashSet<String>>,
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = verify(&r.secret, &id, &timestamp, &signature, &body, now) {
        eprintln!("refused a message: {e}");
        return StatusCode::UNAUTHORIZED;
    }
    // At least once: a retry of a message already taken is answered, not
    // processed again.
    if !r
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.clone())
    {
        return StatusCode::NO_CONTENT;
    }
    println!("{id} {}", String::from_utf8_lossy(&body));
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("WEBHOOK_SECRET")
        .map_err(|_| "set WEBHOOK_SECRET to the endpoint's secret (whsec_…)")?;
    let secret = WebhookSecret::parse(&secret)?;
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4000);
    let receiver = Arc::new(Receiver {
        secret,
        seen: Mutex::new(HashSet::new()),
    });
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("receiving on http://{}/hook", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
