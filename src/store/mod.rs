//! Persistence: the [`KeyStore`] trait and the stores keyward ships.
//!
//! A store does only what must be atomic: insert without overwriting,
//! conditional update, delete, forward-only last-used writes, and paged
//! reads. Every rule (who may do what, expiry, permissions) lives in
//! [`Keyward`](crate::Keyward), once, not in each store.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::key::KeyRecord;
use crate::token::KeyId;

#[cfg(feature = "conformance")]
pub mod conformance;
mod memory;

pub use memory::MemoryStore;

/// Where keys live. Implement it to keep keys in your own database; check
/// an implementation with [`conformance::run`] (feature `conformance`).
///
/// Records are ordered by [`KeyId`] (byte order of the id string) wherever
/// a method pages.
///
/// A complete, if simple, implementation:
///
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::Mutex;
/// use async_trait::async_trait;
/// use chrono::{DateTime, Utc};
/// use keyward::{KeyId, KeyRecord, KeyStore, StoreError};
///
/// #[derive(Debug, Default)]
/// struct MapStore(Mutex<BTreeMap<KeyId, KeyRecord>>);
///
/// impl MapStore {
///     fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<KeyId, KeyRecord>> {
///         self.0.lock().unwrap_or_else(|e| e.into_inner())
///     }
/// }
///
/// #[async_trait]
/// impl KeyStore for MapStore {
///     async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
///         let mut map = self.map();
///         if map.contains_key(&record.id) {
///             return Err(StoreError::Duplicate(record.id));
///         }
///         let mut stored = record.clone();
///         stored.version = 0;
///         map.insert(record.id, stored);
///         Ok(())
///     }
///     async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
///         Ok(self.map().get(id).cloned())
///     }
///     async fn update(&self, record: &KeyRecord) -> Result<u64, StoreError> {
///         let mut map = self.map();
///         let stored = map.get_mut(&record.id).ok_or(StoreError::NotFound(record.id))?;
///         if stored.version != record.version {
///             return Err(StoreError::Conflict(record.id));
///         }
///         stored.name = record.name.clone();
///         stored.permissions = record.permissions.clone();
///         stored.expires_at = record.expires_at;
///         stored.revoked_at = record.revoked_at;
///         stored.metadata = record.metadata.clone();
///         stored.version += 1;
///         Ok(stored.version)
///     }
///     async fn delete(&self, id: &KeyId) -> Result<bool, StoreError> {
///         Ok(self.map().remove(id).is_some())
///     }
///     async fn list_by_tenant(&self, tenant: &str, after: Option<&KeyId>, limit: usize)
///         -> Result<Vec<KeyRecord>, StoreError> {
///         Ok(self.map().values()
///             .filter(|r| r.tenant == tenant && after.map_or(true, |a| r.id > *a))
///             .take(limit).cloned().collect())
///     }
///     async fn scan(&self, after: Option<&KeyId>, limit: usize)
///         -> Result<Vec<KeyRecord>, StoreError> {
///         Ok(self.map().values()
///             .filter(|r| after.map_or(true, |a| r.id > *a))
///             .take(limit).cloned().collect())
///     }
///     async fn record_last_used(&self, batch: &[(KeyId, DateTime<Utc>)]) -> Result<(), StoreError> {
///         let mut map = self.map();
///         for (id, at) in batch {
///             if let Some(r) = map.get_mut(id) {
///                 r.last_used_at = r.last_used_at.max(Some(*at));
///             }
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait KeyStore: std::fmt::Debug + Send + Sync + 'static {
    /// Stores a new record with `version` 0.
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] if a record with the same id exists; the
    /// existing record is left as it was.
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError>;

    /// The record with this id, if any.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// Replaces the mutable fields (`name`, `permissions`, `expires_at`,
    /// `revoked_at`, `metadata`) of the stored record, but only if its
    /// `version` still equals `record.version`; then bumps the version and
    /// returns the new one. Must not change `last_used_at`, which belongs
    /// to [`KeyStore::record_last_used`], nor the immutable fields.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the version differs (a concurrent change
    /// won), [`StoreError::NotFound`] if the record is gone.
    async fn update(&self, record: &KeyRecord) -> Result<u64, StoreError>;

    /// Deletes the record; `true` if it existed.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn delete(&self, id: &KeyId) -> Result<bool, StoreError>;

    /// Up to `limit` records of `tenant` with ids greater than `after`, in
    /// id order.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    async fn list_by_tenant(
        &self,
        tenant: &str,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError>;

    /// Up to `limit` records of any tenant with ids greater than `after`, in
    /// id order: the paged walk maintenance passes make.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    async fn scan(&self, after: Option<&KeyId>, limit: usize)
        -> Result<Vec<KeyRecord>, StoreError>;

    /// Moves `last_used_at` of each listed key forward to the given instant
    /// (never backward), in one batch. Unknown ids are skipped. Does not
    /// bump `version`, so it never conflicts with management changes.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn record_last_used(&self, batch: &[(KeyId, DateTime<Utc>)]) -> Result<(), StoreError>;
}

macro_rules! forward_store {
    ($ty:ty) => {
        #[async_trait]
        impl<T: KeyStore + ?Sized> KeyStore for $ty {
            async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
                (**self).insert(record).await
            }
            async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
                (**self).get(id).await
            }
            async fn update(&self, record: &KeyRecord) -> Result<u64, StoreError> {
                (**self).update(record).await
            }
            async fn delete(&self, id: &KeyId) -> Result<bool, StoreError> {
                (**self).delete(id).await
            }
            async fn list_by_tenant(
                &self,
                tenant: &str,
                after: Option<&KeyId>,
                limit: usize,
            ) -> Result<Vec<KeyRecord>, StoreError> {
                (**self).list_by_tenant(tenant, after, limit).await
            }
            async fn scan(
                &self,
                after: Option<&KeyId>,
                limit: usize,
            ) -> Result<Vec<KeyRecord>, StoreError> {
                (**self).scan(after, limit).await
            }
            async fn record_last_used(
                &self,
                batch: &[(KeyId, DateTime<Utc>)],
            ) -> Result<(), StoreError> {
                (**self).record_last_used(batch).await
            }
        }
    };
}

forward_store!(Arc<T>);
forward_store!(Box<T>);
