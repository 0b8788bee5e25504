//! keyward: API-key authentication for Rust services.
//!
//! Issue keys that look like `sk_xxxxxxxx_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx`,
//! show the plaintext once, store only its SHA-256, and verify presented
//! tokens in constant time against a permission lattice and a lifecycle
//! (expiry, revocation, deletion). Persistence is yours: anything that
//! implements the async [`KeyStore`](store::KeyStore) trait; keyward ships [`MemoryStore`],
//! an embedded SQLite store (feature `sqlite`) and a PostgreSQL store with
//! cross-instance cache invalidation (feature `postgres`). A bounded
//! verification cache in the core keeps hot verifies off the store.
//!
//! # Quickstart
//!
//! ```
//! use chrono::Duration;
//! use keyward::{Actor, Catalog, Keyward, MemoryStore, NewKey, VerifyError};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let catalog = Catalog::builder()
//!         .resource("contacts", ["read", "write"])
//!         .resource("users", ["read"])
//!         .build()?;
//!     let keys = Keyward::builder(MemoryStore::new(), catalog).build()?;
//!
//!     let admin = Actor::new("user_42", "acme")
//!         .permissions(keys.catalog().parse_set(["contacts:write", "users:read"])?)
//!         .may_manage_keys(true);
//!
//!     let issued = keys
//!         .create(&admin, NewKey::new("Zapier sync").permissions(["contacts:write"]).expires_in(Duration::days(30)))
//!         .await?;
//!     println!("shown once: {}", issued.token.expose_secret());
//!
//!     let auth = keys.verify(issued.token.expose_secret()).await?;
//!     auth.require("contacts:read")?; // write implies read
//!     assert!(auth.require("users:read").is_err());
//!
//!     keys.revoke(&admin, &issued.key.id).await?;
//!     assert!(matches!(keys.verify(issued.token.expose_secret()).await, Err(VerifyError::Revoked)));
//!     Ok(())
//! }
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `conformance` | no | [`store::conformance`]: the test suite every [`KeyStore`](store::KeyStore) must pass |
//! | `tokio` | no | `Keyward::spawn_sweeper`: the maintenance sweep on a tokio interval |
//! | `sqlite` | no | `SqliteStore`: one SQLite file (bundled SQLite, WAL), via sqlx |
//! | `postgres` | no | `PostgresStore`: shared PostgreSQL with `LISTEN/NOTIFY` cache invalidation, via sqlx |
//! | `axum` | no | `http`: a tower layer that authenticates every request, axum extractors, per-route permission layers, JSON errors, and `http::manage`, the key-management router with its OpenAPI 3.1 document |
//! | `redis` | no | `RedisLimiter`: rate limits and tenant quotas shared by a fleet through Redis, exact or batched, with a fallback while Redis is down |
//! | `webhooks` | no | `Keyward::spawn_webhook_worker` and `webhook::HttpTransport`: key events delivered to [`webhook`] endpoints, signed as Standard Webhooks |
//!
//! # Where things are
//!
//! Everything a host uses is at the crate root. Four modules hold the
//! rest: [`store`] (for implementing a [`KeyStore`](store::KeyStore), and
//! its conformance suite), [`tenant`] (tenant paths), [`webhook`] (event
//! types, endpoint secrets and signatures) and `http` (feature `axum`). [`authority`] states the rule of key management.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod access;
mod admission;
mod audit;
pub mod authority;
mod cache;
mod clock;
mod deadline;
mod error;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod grpc;
#[cfg(any(feature = "axum", feature = "actix", feature = "tonic"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "axum", feature = "actix", feature = "tonic")))
)]
pub mod http;
pub mod import;
mod key;
mod keyward;
#[cfg(feature = "leaks")]
#[cfg_attr(docsrs, doc(cfg(feature = "leaks")))]
pub mod leak;
mod legacy;
mod limit;
mod permission;
mod policy;
mod role;
pub mod store;
mod telemetry;
pub mod tenant;
mod tenant_policy;
mod token;
pub mod webhook;

/// The README's examples run as doctests too (they use the SQLite store,
/// axum, actix-web, tonic and the webhook worker).
#[cfg(all(
    doctest,
    feature = "sqlite",
    feature = "axum",
    feature = "actix",
    feature = "tonic",
    feature = "webhooks"
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use crate::access::{InvalidAllowlist, IpAllowlist, MAX_NETWORKS};
pub use crate::audit::{
    AuditAction, AuditEvent, AuditOutcome, AuditPage, AuditQuery, AuditRecord, AuditSink,
    AuditTrail, MemoryAuditSink, NoAudit, TracingAuditSink, MAX_PAGE_EVENTS,
};
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::error::{
    BoxError, ConfigError, Dimension, Forbidden, KeyError, StoreError, VerifyError, WebhookError,
};
pub use crate::key::{Actor, IssuedKey, KeyInfo, KeyStatus, NewKey, MAX_USES};
#[cfg(feature = "leaks")]
#[cfg_attr(docsrs, doc(cfg(feature = "leaks")))]
pub use crate::keyward::SECRET_SCANNING_ACTOR;
pub use crate::keyward::{
    CacheStats, ImportOptions, ImportReport, InvalidCursor, KeyCursor, KeyPage, KeyQuery,
    KeyUpdate, Keyward, KeywardBuilder, Verified, VerifyFuture, VerifyRequest, MAX_METADATA_BYTES,
    MAX_NAME_CHARS, MAX_PAGE_KEYS, SWEEP_ACTOR,
};
#[cfg(feature = "webhooks")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhooks")))]
pub use crate::keyward::{DeliveryRound, DeliverySettings};
pub use crate::legacy::{Charset, InvalidLegacyFormat, LegacyFormat};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use crate::limit::{
    Accuracy, LimiterClock, OnOutage, RedisLimiter, RedisLimiterBuilder, RedisLimiterError,
};
pub use crate::limit::{
    Bucket, Charge, Decision, InvalidNamedLimit, InvalidRateLimit, LocalLimiter, NamedDecision,
    NamedLimit, RateLimit, RateLimiter, MAX_NAMED_LIMITS,
};
pub use crate::permission::{
    Catalog, CatalogBuilder, CatalogError, ExprError, Permission, PermissionError, PermissionExpr,
    PermissionSet, MAX_ALTERNATIVES, MAX_PERMISSIONS,
};
pub use crate::policy::{
    ExpiryWarnings, InactivityPolicy, Refill, RemovalReason, Retention, SweepReport, SweepWarning,
    SweptKey, WarningKind, WarningMark,
};
pub use crate::store::memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use crate::store::postgres::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use crate::store::sqlite::SqliteStore;
pub use crate::store::RoleDefinition;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use crate::store::{AuditSettings, SqlAuditTrail};
pub use crate::tenant_policy::{LeakResponse, PolicyRule, TenantPolicy};
pub use crate::token::{
    DisplayPrefix, EntropyError, InvalidKeyId, InvalidPrefix, KeyId, MalformedToken, ParsedToken,
    SecretToken, TokenFormat,
};
/// A network (`10.0.0.0/8`, `2001:db8::/32`), from the `ipnet` crate: what
/// [`IpAllowlist::networks`] holds and
/// [`ClientAddress::behind_proxies`](crate::http::ClientAddress::behind_proxies) takes.
pub use ipnet::IpNet;
