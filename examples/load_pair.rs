//! The demo endpoint twice, for a load comparison: `GET /v1/contacts`
//! behind `KeywardLayer` + `require("contacts:read")` on one port, and the
//! same handler with the layer removed on another. `scripts/http-load`
//! drives both with `wrk` in one run.
//!
//! ```sh
//! cargo run --release --example load_pair --features axum,sqlite
//! ```
//!
//! Prints `protected=<url> bare=<url> token=<token>` on one line, then
//! serves until killed. The key store is a SQLite file in a temporary
//! directory, as in the example server.

use axum::routing::get;
use axum::{Extension, Json, Router};
use keyward::http::{require, Authenticated, KeywardLayer};
use keyward::{Actor, Catalog, Keyward, NewKey, SqliteStore};
use serde_json::{json, Value};

/// The handler both routers serve: a small JSON list for the caller's
/// tenant.
async fn contacts(tenant: &str) -> Json<Value> {
    Json(json!({ "data": [{ "name": "Ada", "tenant": tenant }] }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("keyward-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(&dir.join("keys.db")).await?;
    let catalog = Catalog::builder()
        .resource("contacts", ["read", "write"])
        .build()?;
    let keys = Keyward::builder(store, catalog).build()?;
    let admin = Actor::new("load", "default")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let issued = keys
        .create(&admin, NewKey::new("load").permissions(["contacts:read"]))
        .await?;

    let protected = Router::new()
        .route(
            "/v1/contacts",
            get(|key: Authenticated| async move { contacts(key.tenant()).await }),
        )
        .route_layer(require(keys.catalog(), "contacts:read")?)
        .layer(KeywardLayer::new(keys.clone()));
    let bare = Router::new()
        .route(
            "/v1/contacts",
            get(|Extension(tenant): Extension<&'static str>| async move { contacts(tenant).await }),
        )
        .layer(Extension("default"));

    let a = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let b = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "protected=http://{} bare=http://{} token={}",
        a.local_addr()?,
        b.local_addr()?,
        issued.token.expose_secret()
    );
    let serve_a = tokio::spawn(async move { axum::serve(a, protected).await });
    let serve_b = tokio::spawn(async move { axum::serve(b, bare).await });
    tokio::select! {
        r = serve_a => r??,
        r = serve_b => r??,
        _ = tokio::signal::ctrl_c() => {}
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
