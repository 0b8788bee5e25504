//! The README's quickstart: create a key, verify it, check permissions,
//! revoke it, with keys in an embedded SQLite file. Run with
//! `cargo run --example quickstart --features sqlite`.

use chrono::Duration;
use keyward::{Actor, Catalog, Keyward, NewKey, SqliteStore, VerifyError};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let catalog = Catalog::builder()
        .resource("contacts", ["read", "write"])
        .resource("users", ["read"])
        .build()?;
    // Created and migrated on first open; keys survive restarts.
    let store = SqliteStore::open("keyward-quickstart.db").await?;
    let keys = Keyward::builder(store, catalog).build()?;

    let admin = Actor::new("user_42", "acme")
        .permissions(keys.catalog().parse_set(["contacts:write", "users:read"])?)
        .may_manage_keys(true);

    let issued = keys
        .create(
            &admin,
            NewKey::new("Zapier sync")
                .permissions(["contacts:write"])
                .expires_in(Duration::days(30)),
        )
        .await?;
    println!("shown once: {}", issued.token.expose_secret());

    let auth = keys.verify(issued.token.expose_secret()).await?;
    auth.require("contacts:read")?; // write implies read
    assert!(auth.require("users:read").is_err());

    keys.revoke(&admin, &issued.key.id).await?;
    assert!(matches!(
        keys.verify(issued.token.expose_secret()).await,
        Err(VerifyError::Revoked)
    ));
    Ok(())
}
