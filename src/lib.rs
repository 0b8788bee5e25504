//! keyward: API-key authentication for Rust services.
//!
//! Issue keys that look like `sk_xxxxxxxx_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx`,
//! show the plaintext once, store only its SHA-256, and verify presented
//! tokens in constant time against a permission lattice and a lifecycle
//! (expiry, revocation, deletion). Persistence is yours: anything that
//! implements the async [`KeyStore`] trait; keyward ships [`MemoryStore`],
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
//! | `conformance` | no | [`store::conformance`]: the test suite every [`KeyStore`] must pass |
//! | `tokio` | no | `Keyward::spawn_sweeper`: the maintenance sweep on a tokio interval |
//! | `sqlite` | no | `store::SqliteStore`: one SQLite file (bundled SQLite, WAL), via sqlx |
//! | `postgres` | no | `store::PostgresStore`: shared PostgreSQL with `LISTEN/NOTIFY` cache invalidation, via sqlx |
//! | `axum` | no | `http`: a tower layer that authenticates every request, axum extractors, per-route permission layers, JSON errors |
//!
//! # Where things are
//!
//! - [`token`]: the token format, parsing, hashing, the [`SecretToken`] type.
//! - [`permission`]: [`Catalog`], [`PermissionSet`], [`Permission`].
//! - [`key`]: [`Actor`], [`NewKey`], [`KeyRecord`], [`KeyInfo`], [`Verified`].
//! - [`store`]: [`KeyStore`], [`MemoryStore`], `SqliteStore`,
//!   `PostgresStore`, the change feed ([`ChangeListener`]).
//! - [`authority`]: the rule of key management, in every dimension.
//! - [`tenant`]: the canonical tenant path and which tenant covers which.
//! - [`policy`]: inactivity expiry, warnings, retention, refills.
//! - [`limit`]: [`RateLimit`], [`RateLimiter`], [`LocalLimiter`].
//! - [`audit`]: [`AuditEvent`] and the sinks.
//! - [`clock`]: [`Clock`], [`SystemClock`], [`ManualClock`].
//! - [`error`]: one error enum per concern.
//! - `http` (feature `axum`): `KeywardLayer`, `Authenticated`, `require`,
//!   `ApiError`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admission;
pub mod audit;
pub mod authority;
mod cache;
pub mod clock;
mod deadline;
pub mod error;
#[cfg(feature = "axum")]
pub mod http;
pub mod key;
mod keyward;
pub mod limit;
pub mod permission;
pub mod policy;
pub mod store;
pub mod tenant;
pub mod token;

/// The README's examples run as doctests too (they use the SQLite store
/// and axum).
#[cfg(all(doctest, feature = "sqlite", feature = "axum"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use crate::audit::{
    AuditAction, AuditEvent, AuditOutcome, AuditSink, MemoryAuditSink, NoAudit, TracingAuditSink,
};
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::error::{
    BoxError, ConfigError, Dimension, Forbidden, KeyError, StoreError, VerifyError,
};
pub use crate::key::{Actor, IssuedKey, KeyInfo, KeyRecord, KeyStatus, NewKey};
pub use crate::keyward::{
    CacheStats, KeyUpdate, Keyward, KeywardBuilder, Verified, VerifyFuture, MAX_METADATA_BYTES,
    MAX_NAME_CHARS, MAX_USES, SWEEP_ACTOR,
};
pub use crate::limit::{Bucket, Decision, InvalidRateLimit, LocalLimiter, RateLimit, RateLimiter};
pub use crate::permission::{
    Catalog, CatalogBuilder, CatalogError, Permission, PermissionError, PermissionSet,
};
pub use crate::policy::{
    ExpiryWarnings, InactivityPolicy, Refill, RemovalReason, Retention, SweepReport, SweepWarning,
    SweptKey, WarningKind, WarningMark,
};
pub use crate::store::{ChangeListener, Credit, KeyStore, MemoryStore, RefillDue};
pub use crate::token::{
    DisplayPrefix, EntropyError, InvalidKeyId, InvalidPrefix, KeyHash, KeyId, MalformedToken,
    ParsedToken, SecretToken, TokenFormat,
};
