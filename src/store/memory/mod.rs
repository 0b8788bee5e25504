//! An in-memory [`KeyStore`]: for tests, examples and single-process hosts
//! that do not need keys to survive a restart.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    apply_adjust, apply_credit, apply_update, ChangeListener, Credit, Delivery, KeyStore, Outbox,
    RefillDue, RoleDefinition, Subscribers,
};

mod outbox;
use crate::error::StoreError;
use crate::key::KeyRecord;
use crate::token::KeyId;

#[derive(Debug, Default)]
struct Maps {
    by_id: HashMap<KeyId, KeyRecord>,
    roles: std::collections::BTreeMap<String, RoleDefinition>,
    // Ordered indexes for paging; kept in step with `by_id`.
    order: BTreeSet<KeyId>,
    by_tenant: BTreeSet<(String, KeyId)>,
    /// Webhook endpoints and deliveries (`outbox.rs`).
    outbox: outbox::Deliveries,
}

impl Maps {
    /// Every id greater than `after`, in id order: the walk of `scan` and
    /// `scan_ids`.
    fn ids_after<'m>(&'m self, after: Option<&'m KeyId>) -> impl Iterator<Item = &'m KeyId> + 'm {
        self.order
            .range(after.copied().unwrap_or(MIN_ID)..)
            .filter(move |id| after != Some(*id))
    }
}

/// Keys in a hash map behind a lock; lost when the process ends. Clones
/// share the same keys, and tell every subscriber of any clone about
/// changes.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    maps: Arc<RwLock<Maps>>,
    subscribers: Arc<Subscribers>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored keys.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // The maps are consistent after every critical section, so a poisoned
    // lock (a panic elsewhere) is safe to keep using.
    fn read(&self) -> RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.insert_with(record, &[]).await
    }

    async fn insert_with(
        &self,
        record: &KeyRecord,
        deliveries: &[Delivery],
    ) -> Result<(), StoreError> {
        let mut m = self.write();
        if m.by_id.contains_key(&record.id) {
            return Err(StoreError::Duplicate(record.id));
        }
        let mut stored = record.clone();
        stored.version = 0;
        m.order.insert(record.id);
        m.by_tenant.insert((record.tenant.clone(), record.id));
        m.by_id.insert(record.id, stored);
        m.outbox.add(deliveries);
        drop(m);
        self.subscribers.changed(&record.id);
        Ok(())
    }

    async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.read().by_id.get(id).cloned())
    }

    async fn update(&self, record: &KeyRecord) -> Result<u64, StoreError> {
        self.update_with(record, &[]).await
    }

    async fn update_with(
        &self,
        record: &KeyRecord,
        deliveries: &[Delivery],
    ) -> Result<u64, StoreError> {
        let mut m = self.write();
        let stored = m
            .by_id
            .get_mut(&record.id)
            .ok_or(StoreError::NotFound(record.id))?;
        if stored.version != record.version {
            return Err(StoreError::Conflict(record.id));
        }
        let version = apply_update(stored, record);
        m.outbox.add(deliveries);
        drop(m);
        self.subscribers.changed(&record.id);
        Ok(version)
    }

    async fn delete(&self, id: &KeyId) -> Result<bool, StoreError> {
        self.delete_with(id, &[]).await
    }

    async fn delete_with(&self, id: &KeyId, deliveries: &[Delivery]) -> Result<bool, StoreError> {
        let mut m = self.write();
        match m.by_id.remove(id) {
            Some(r) => {
                m.order.remove(id);
                m.by_tenant.remove(&(r.tenant, *id));
                m.outbox.add(deliveries);
                drop(m);
                self.subscribers.changed(id);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn list_by_tenant(
        &self,
        tenant: &str,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let m = self.read();
        let tenant = tenant.to_string();
        let range = m
            .by_tenant
            .range((tenant.clone(), after.copied().unwrap_or(MIN_ID))..);
        Ok(range
            .take_while(|(t, _)| *t == tenant)
            .filter(|(_, id)| after != Some(id))
            .take(limit)
            .filter_map(|(_, id)| m.by_id.get(id).cloned())
            .collect())
    }

    async fn scan(
        &self,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let m = self.read();
        Ok(m.ids_after(after)
            .take(limit)
            .filter_map(|id| m.by_id.get(id).cloned())
            .collect())
    }

    async fn scan_ids(
        &self,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyId>, StoreError> {
        let m = self.read();
        Ok(m.ids_after(after).take(limit).copied().collect())
    }

    async fn record_last_used(&self, batch: &[(KeyId, DateTime<Utc>)]) -> Result<(), StoreError> {
        let mut m = self.write();
        for (id, at) in batch {
            if let Some(r) = m.by_id.get_mut(id) {
                r.last_used_at = r.last_used_at.max(Some(*at));
            }
        }
        Ok(())
    }

    async fn consume_credit(
        &self,
        id: &KeyId,
        cost: u64,
        refill: Option<RefillDue>,
    ) -> Result<Credit, StoreError> {
        let mut m = self.write();
        Ok(m.by_id
            .get_mut(id)
            .map_or(Credit::Missing, |r| apply_credit(r, cost, refill)))
    }

    async fn roles(&self) -> Result<Vec<RoleDefinition>, StoreError> {
        Ok(self.read().roles.values().cloned().collect())
    }

    async fn put_role(&self, role: &RoleDefinition) -> Result<(), StoreError> {
        self.write().roles.insert(role.name.clone(), role.clone());
        self.subscribers.reset();
        Ok(())
    }

    async fn adjust_credits(&self, id: &KeyId, delta: i64) -> Result<Credit, StoreError> {
        let mut m = self.write();
        Ok(m.by_id
            .get_mut(id)
            .map_or(Credit::Missing, |r| apply_adjust(r, delta)))
    }

    fn subscribe(&self, listener: Weak<dyn ChangeListener>) -> bool {
        self.subscribers.add(listener);
        true
    }

    fn outbox(&self) -> Option<&dyn Outbox> {
        Some(self)
    }

    /// One process: every change goes through this store.
    fn feed_sees_every_writer(&self) -> bool {
        true
    }
}

/// The smallest id: `00000000` ('0' is the first base62 character).
const MIN_ID: KeyId = KeyId::MIN;
