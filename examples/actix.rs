//! An actix-web service protected by keyward: `GET /v1/contacts` needs
//! `contacts:read`, `POST /v1/contacts` needs `contacts:write`; each
//! request names its tenant in `x-tenant-name`.
//!
//! ```sh
//! cargo run --example actix --features actix        # 127.0.0.1:8080
//! curl -H "x-api-key: sk_…" -H "x-tenant-name: acme" localhost:8080/v1/contacts
//! ```
//!
//! It prints a key that reads and one that writes. Refusals are the axum
//! adapter's, byte for byte: the same JSON errors and challenges.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::{web, App, HttpResponse, HttpServer};
use keyward::http::actix::{require, Authenticated, KeywardMiddleware};
use keyward::http::ApiError;
use keyward::{Actor, Catalog, Keyward, MemoryStore, NewKey};
use serde::Deserialize;

/// The permissions of this service.
///
/// # Panics
/// Never: the catalog is fixed and valid.
pub fn catalog() -> Catalog {
    Catalog::builder()
        .resource("contacts", ["read", "write"])
        .build()
        .expect("a valid catalog")
}

/// Contacts per tenant, in memory.
#[derive(Debug, Default)]
pub struct Contacts(Mutex<HashMap<String, Vec<String>>>);

/// A contact to add.
#[derive(Debug, Deserialize)]
pub struct NewContact {
    /// Its name.
    pub name: String,
}

async fn list(key: Authenticated, contacts: web::Data<Contacts>) -> HttpResponse {
    let book = contacts
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    HttpResponse::Ok().json(book.get(key.tenant()).cloned().unwrap_or_default())
}

async fn create(
    key: Authenticated,
    contacts: web::Data<Contacts>,
    body: web::Json<NewContact>,
) -> Result<HttpResponse, ApiError> {
    // The route's guard checked contacts:write. A handler refuses with
    // the same error shape.
    if body.name.trim().is_empty() {
        return Err(ApiError::invalid(
            "name",
            "invalid_name",
            "The name is required.",
        ));
    }
    let mut book = contacts
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    book.entry(key.tenant().to_string())
        .or_default()
        .push(body.name.clone());
    Ok(HttpResponse::Created().json(serde_json::json!({ "name": body.name })))
}

/// The routes, behind keyward: `App::new().configure(routes(keys, …))`.
///
/// # Errors
/// Never with [`catalog`]: its permissions exist.
pub fn routes(
    keys: Keyward,
    contacts: web::Data<Contacts>,
) -> Result<impl Fn(&mut web::ServiceConfig) + Clone, keyward::PermissionError> {
    let read = require(keys.catalog(), "contacts:read")?;
    let write = require(keys.catalog(), "contacts:write")?;
    let keyward =
        KeywardMiddleware::new(keys).tenant_header(http::HeaderName::from_static("x-tenant-name"));
    Ok(move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(contacts.clone()).service(
            web::scope("/v1")
                .wrap(keyward.clone())
                .route("/contacts", web::get().to(list).wrap(read.clone()))
                .route("/contacts", web::post().to(create).wrap(write.clone())),
        );
    })
}

#[allow(dead_code)]
#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = Keyward::builder(MemoryStore::new(), catalog()).build()?;
    let admin = Actor::new("setup", "acme")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let reader = keys
        .create(&admin, NewKey::new("reader").permissions(["contacts:read"]))
        .await?;
    let writer = keys
        .create(
            &admin,
            NewKey::new("writer").permissions(["contacts:write"]),
        )
        .await?;
    println!("reads (tenant acme):  {}", reader.token.expose_secret());
    println!("writes (tenant acme): {}", writer.token.expose_secret());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let routes = routes(keys, web::Data::new(Contacts::default()))?;
    println!("listening on 127.0.0.1:{port}");
    HttpServer::new(move || App::new().configure(routes.clone()))
        .bind(("127.0.0.1", port))?
        .run()
        .await?;
    Ok(())
}
