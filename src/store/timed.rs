//! [`Timed`]: a store whose every call is measured (feature `metrics`):
//! `keyward_store_call_duration_seconds` and
//! `keyward_store_call_errors_total` by operation. What the
//! [`Keyward`](crate::Keyward) reads and writes goes through it; the
//! store itself is unchanged.

use std::sync::{Arc, Weak};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    ChangeListener, Credit, Delivery, KeyStore, Outbox, RefillDue, RoleDefinition, SweepDue,
};
use crate::error::StoreError;
use crate::key::KeyRecord;
use crate::telemetry::store_call;
use crate::token::KeyId;

/// A store, measured.
#[derive(Debug)]
pub(crate) struct Timed(pub(crate) Arc<dyn KeyStore>);

/// Runs `$call`, recording its duration and failure as `$op`.
macro_rules! timed {
    ($op:literal, $call:expr) => {{
        let start = Instant::now();
        let result = $call.await;
        store_call($op, start.elapsed(), result.is_err());
        result
    }};
}

#[async_trait]
impl KeyStore for Timed {
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        timed!("insert", self.0.insert(record))
    }
    async fn insert_many(
        &self,
        records: &[KeyRecord],
    ) -> Result<Vec<Option<KeyRecord>>, StoreError> {
        timed!("insert_many", self.0.insert_many(records))
    }
    async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        timed!("get", self.0.get(id))
    }
    async fn update(&self, record: &KeyRecord) -> Result<u64, StoreError> {
        timed!("update", self.0.update(record))
    }
    async fn delete(&self, id: &KeyId) -> Result<bool, StoreError> {
        timed!("delete", self.0.delete(id))
    }
    async fn list_by_tenant(
        &self,
        tenant: &str,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        timed!(
            "list_by_tenant",
            self.0.list_by_tenant(tenant, after, limit)
        )
    }
    async fn scan(
        &self,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        timed!("scan", self.0.scan(after, limit))
    }
    async fn scan_ids(
        &self,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyId>, StoreError> {
        timed!("scan_ids", self.0.scan_ids(after, limit))
    }
    async fn scan_due(
        &self,
        due: &SweepDue,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        timed!("scan_due", self.0.scan_due(due, after, limit))
    }
    async fn record_last_used(&self, batch: &[(KeyId, DateTime<Utc>)]) -> Result<(), StoreError> {
        timed!("record_last_used", self.0.record_last_used(batch))
    }
    async fn consume_credit(
        &self,
        id: &KeyId,
        cost: u64,
        refill: Option<RefillDue>,
    ) -> Result<Credit, StoreError> {
        timed!("consume_credit", self.0.consume_credit(id, cost, refill))
    }
    async fn adjust_credits(&self, id: &KeyId, delta: i64) -> Result<Credit, StoreError> {
        timed!("adjust_credits", self.0.adjust_credits(id, delta))
    }
    async fn roles(&self) -> Result<Vec<RoleDefinition>, StoreError> {
        timed!("roles", self.0.roles())
    }
    async fn put_role(&self, role: &RoleDefinition) -> Result<(), StoreError> {
        timed!("put_role", self.0.put_role(role))
    }
    fn subscribe(&self, listener: Weak<dyn ChangeListener>) -> bool {
        self.0.subscribe(listener)
    }
    fn outbox(&self) -> Option<&dyn Outbox> {
        self.0.outbox()
    }
    fn feed_sees_every_writer(&self) -> bool {
        self.0.feed_sees_every_writer()
    }
    async fn insert_with(
        &self,
        record: &KeyRecord,
        deliveries: &[Delivery],
    ) -> Result<(), StoreError> {
        timed!("insert", self.0.insert_with(record, deliveries))
    }
    async fn update_with(
        &self,
        record: &KeyRecord,
        deliveries: &[Delivery],
    ) -> Result<u64, StoreError> {
        timed!("update", self.0.update_with(record, deliveries))
    }
    async fn delete_with(&self, id: &KeyId, deliveries: &[Delivery]) -> Result<bool, StoreError> {
        timed!("delete", self.0.delete_with(id, deliveries))
    }
}
