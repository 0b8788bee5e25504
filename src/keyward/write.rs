//! The persistence write path: every write of a key goes through
//! [`Keyward::insert_key`], [`Keyward::update_key`] or
//! [`Keyward::delete_key`], which drop the cached copy (unless the write
//! surely did not happen) and, for a deletion, the pending last use.
//! Management calls reach them through [`Keyward::modify_record`]: read,
//! authorize, change, authorize, conditionally write, retry on a lost
//! race.

use chrono::{DateTime, Utc};

use super::webhooks::Notice;
use super::{Keyward, UPDATE_ATTEMPTS};
use crate::audit::AuditAction;
use crate::authority::authorize;
use crate::authority::ensure_manager;
use crate::error::{KeyError, StoreError};
use crate::key::{Actor, KeyInfo, KeyRecord};
use crate::tenant;
use crate::token::{DisplayPrefix, KeyHash, KeyId, SecretToken};

impl Keyward {
    /// Inserts a new key, with the deliveries of `notice` in the same
    /// transaction.
    pub(super) async fn insert_key(
        &self,
        record: &KeyRecord,
        notices: &[Notice],
    ) -> Result<(), StoreError> {
        let deliveries = self.deliveries(record, notices).await?;
        let inserted = self.inner.store.insert_with(record, &deliveries).await;
        self.written(&record.id, inserted)
    }

    /// Inserts each record whose id is free; for each, `None` if stored
    /// or the record holding its id (see [`KeyStore::insert_many`]).
    ///
    /// [`KeyStore::insert_many`]: crate::store::KeyStore::insert_many
    pub(super) async fn insert_keys(
        &self,
        records: &[KeyRecord],
    ) -> Result<Vec<Option<KeyRecord>>, StoreError> {
        let placed = self.inner.store.insert_many(records).await;
        if let Ok(placed) = &placed {
            for (record, _) in records.iter().zip(placed).filter(|(_, p)| p.is_none()) {
                self.inner.cache.invalidate(&record.id);
            }
        }
        placed
    }

    /// Writes a changed key if its version is still the stored one, with
    /// the deliveries of `notice` in the same transaction; the new
    /// version.
    pub(super) async fn update_key(
        &self,
        record: &KeyRecord,
        notices: &[Notice],
    ) -> Result<u64, StoreError> {
        let deliveries = self.deliveries(record, notices).await?;
        let updated = self.inner.store.update_with(record, &deliveries).await;
        self.written(&record.id, updated)
    }

    /// Deletes a key, with the deliveries of `notices` about it (as it
    /// was) in the same transaction; whether it was there.
    pub(super) async fn delete_key(
        &self,
        record: &KeyRecord,
        notices: &[Notice],
    ) -> Result<bool, StoreError> {
        let id = &record.id;
        let deliveries = self.deliveries(record, notices).await?;
        let deleted = self.inner.store.delete_with(id, &deliveries).await;
        let deleted = self.written(id, deleted)?;
        if deleted {
            self.inner.last_used.forget(id);
        }
        Ok(deleted)
    }

    /// After a write of `id`: the cached copy goes, unless the write
    /// surely did not happen (an error may come after the write
    /// committed).
    fn written<T>(&self, id: &KeyId, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if !matches!(
            result,
            Err(StoreError::Conflict(_) | StoreError::Duplicate(_))
        ) {
            self.inner.cache.invalidate(id);
        }
        result
    }

    /// Reads the key and checks the actor may manage keys and reach its
    /// tenant. Another tenant's key is `NotFound`, exactly like a missing
    /// one.
    pub(super) async fn load_for(&self, actor: &Actor, id: &KeyId) -> Result<KeyRecord, KeyError> {
        ensure_manager(actor)?;
        match self.inner.store.get(id).await? {
            Some(r) if tenant::covers(actor.tenant(), &r.tenant, self.inner.nested) => Ok(r),
            _ => Err(KeyError::NotFound(*id)),
        }
    }
    /// Read, authorize, change, authorize, conditionally write, audit.
    pub(super) async fn modify(
        &self,
        actor: &Actor,
        id: &KeyId,
        action: AuditAction,
        change: impl Fn(&mut KeyRecord, DateTime<Utc>) -> Result<(), KeyError>,
    ) -> Result<KeyInfo, KeyError> {
        let notice = Notice::of_action(action, actor);
        let result = self
            .modify_unaudited(actor, id, notice.as_slice(), change)
            .await;
        let key = result
            .as_ref()
            .ok()
            .map(|k| (k.id, k.prefix, k.tenant.as_str()));
        self.audit_manage(action, actor, key, &result);
        result
    }
    /// Read; check the actor dominates the key; change; check the actor
    /// dominates the result; conditionally write. On a lost race, read
    /// again.
    pub(super) async fn modify_unaudited(
        &self,
        actor: &Actor,
        id: &KeyId,
        notices: &[Notice],
        change: impl Fn(&mut KeyRecord, DateTime<Utc>) -> Result<(), KeyError>,
    ) -> Result<KeyInfo, KeyError> {
        let now = self.now();
        let record = self.modify_record(actor, id, notices, change).await?;
        Ok(self.info(record, now))
    }
    /// [`Keyward::modify_unaudited`], answering the record as written,
    /// with its new version. Each of `notices` goes out with the write if
    /// the change is what it announces.
    pub(super) async fn modify_record(
        &self,
        actor: &Actor,
        id: &KeyId,
        notices: &[Notice],
        change: impl Fn(&mut KeyRecord, DateTime<Utc>) -> Result<(), KeyError>,
    ) -> Result<KeyRecord, KeyError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let before = self.load_for(actor, id).await?;
            let rules = self.fresh_rules().await?;
            authorize(&rules, actor, Some(&before), None)?;
            let now = self.now();
            let mut record = before.clone();
            change(&mut record, now)?;
            authorize(&rules, actor, None, Some(&record))?;
            let happened: Vec<Notice> = notices
                .iter()
                .filter(|n| n.happened(&before, &record))
                .cloned()
                .collect();
            match self.update_key(&record, &happened).await {
                Ok(version) => {
                    record.version = version;
                    return Ok(record);
                }
                Err(StoreError::Conflict(_)) if attempt < UPDATE_ATTEMPTS => continue,
                Err(StoreError::NotFound(_)) => return Err(KeyError::NotFound(*id)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Draws a fresh id (or takes `fixed`) and token, builds the record
    /// with `build(id, prefix, hash)` and inserts it. Ids are 47.6 random
    /// bits: a collision is rare but possible in a large store, so a
    /// duplicate of a random id means "draw again" (up to 4 draws), not
    /// failure; a duplicate of a fixed one is returned.
    pub(super) async fn insert_new(
        &self,
        fixed: Option<KeyId>,
        notices: &[Notice],
        build: impl Fn(KeyId, DisplayPrefix, KeyHash) -> KeyRecord,
    ) -> Result<(SecretToken, KeyRecord), KeyError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A fixed id is tried once: its collision is the answer.
            let id = match fixed {
                Some(id) => id,
                None => KeyId::random()?,
            };
            let token = self.inner.format.generate(id)?;
            let hash = KeyHash::of(token.expose_secret().as_bytes());
            let record = build(id, token.display_prefix(), hash);
            match self.insert_key(&record, notices).await {
                Ok(()) => return Ok((token, record)),
                Err(StoreError::Duplicate(_)) if attempt < 4 && fixed.is_none() => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}
