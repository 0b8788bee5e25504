//! [`StoreError`]: what a store reports. Apart from the other errors,
//! which name key states, so that the lowest layers (stores, the audit
//! trail) can use it without reaching up to keys.

use crate::token::KeyId;

/// A boxed error from a store's backend, kept as the source of a
/// [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a [`KeyStore`](crate::store::KeyStore) reports. Kinds the core acts on are
/// variants; a backend's own error is kept as the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `insert` found a key with the same id.
    #[error("a key with id {0} already exists")]
    Duplicate(KeyId),
    /// A conditional update lost a race: the record changed since it was
    /// read. Read it again and retry.
    #[error("key {0} was changed concurrently; read it again and retry")]
    Conflict(KeyId),
    /// The record to update does not exist (any more).
    #[error("key {0} is not in the store")]
    NotFound(KeyId),
    /// The backend could not be reached or failed; retry later.
    #[error("key store unavailable: {message}")]
    Unavailable {
        /// What failed, without secrets.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The backend returned data keyward cannot read.
    #[error("key store returned invalid data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// An [`StoreError::Unavailable`] wrapping a backend error.
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}
