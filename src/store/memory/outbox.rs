//! The [`MemoryStore`]'s webhook outbox, under the same lock as its keys:
//! a change and its deliveries land together.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use crate::error::StoreError;
use crate::store::{Delivery, DeliveryState, Outbox, OutboxCounts, Settlement, StoredEndpoint};

/// A delivery and who holds it until when.
#[derive(Debug)]
struct Held {
    delivery: Delivery,
    lease: Option<(String, DateTime<Utc>)>,
}

/// Endpoints and deliveries.
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    endpoints: BTreeMap<String, StoredEndpoint>,
    rows: BTreeMap<String, Held>,
}

impl Deliveries {
    /// Adds deliveries, each once (a delivery id already there is kept).
    pub(super) fn add(&mut self, deliveries: &[Delivery]) {
        for d in deliveries {
            self.rows.entry(d.id.clone()).or_insert_with(|| Held {
                delivery: d.clone(),
                lease: None,
            });
        }
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn enqueue(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        self.write().outbox.add(deliveries);
        Ok(())
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
        per_endpoint: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut m = self.write();
        let mut due: Vec<&mut Held> = m
            .outbox
            .rows
            .values_mut()
            .filter(|h| {
                h.delivery.state == DeliveryState::Pending
                    && h.delivery.next_attempt_at <= now
                    && h.lease.as_ref().is_none_or(|(_, until)| *until < now)
            })
            .collect();
        due.sort_by(|a, b| {
            (a.delivery.next_attempt_at, &a.delivery.id)
                .cmp(&(b.delivery.next_attempt_at, &b.delivery.id))
        });
        let mut taken: std::collections::HashMap<String, usize> = Default::default();
        Ok(due
            .into_iter()
            .filter(|h| {
                let n = taken.entry(h.delivery.endpoint_id.clone()).or_default();
                *n += 1;
                *n <= per_endpoint
            })
            .take(limit)
            .map(|h| {
                h.lease = Some((owner.to_string(), lease_until));
                h.delivery.attempts = h.delivery.attempts.saturating_add(1);
                h.delivery.clone()
            })
            .collect())
    }

    async fn settle(
        &self,
        id: &str,
        owner: &str,
        settlement: &Settlement,
    ) -> Result<bool, StoreError> {
        let mut m = self.write();
        let rows = &mut m.outbox.rows;
        let held = rows
            .get(id)
            .is_some_and(|h| h.lease.as_ref().is_some_and(|(o, _)| o == owner));
        if !held {
            return Ok(false);
        }
        match settlement {
            Settlement::Delivered => {
                rows.remove(id);
            }
            Settlement::Retry { at, error } => {
                if let Some(h) = rows.get_mut(id) {
                    h.lease = None;
                    h.delivery.next_attempt_at = *at;
                    h.delivery.last_error = Some(error.clone());
                }
            }
            Settlement::Release => {
                if let Some(h) = rows.get_mut(id) {
                    h.lease = None;
                    h.delivery.attempts = h.delivery.attempts.saturating_sub(1);
                }
            }
            Settlement::Dead { at, error } => {
                if let Some(h) = rows.get_mut(id) {
                    h.lease = None;
                    h.delivery.state = DeliveryState::Dead;
                    h.delivery.next_attempt_at = *at;
                    h.delivery.last_error = Some(error.clone());
                }
            }
        }
        Ok(true)
    }

    async fn replay(
        &self,
        tenant: &str,
        endpoint_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut m = self.write();
        let outbox = &mut m.outbox;
        let of_tenant: Vec<&String> = outbox
            .endpoints
            .values()
            .filter(|e| e.tenant == tenant && endpoint_id.is_none_or(|id| e.id == id))
            .map(|e| &e.id)
            .collect();
        let mut n = 0;
        for h in outbox.rows.values_mut() {
            let d = &mut h.delivery;
            if d.state == DeliveryState::Dead && of_tenant.contains(&&d.endpoint_id) {
                d.state = DeliveryState::Pending;
                d.attempts = 0;
                d.next_attempt_at = now;
                d.retrying_since = now;
                h.lease = None;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn purge_dead(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut m = self.write();
        let rows = &mut m.outbox.rows;
        let was = rows.len();
        rows.retain(|_, h| {
            h.delivery.state != DeliveryState::Dead || h.delivery.next_attempt_at >= before
        });
        Ok((was - rows.len()) as u64)
    }

    async fn counts(&self, endpoint_id: Option<&str>) -> Result<OutboxCounts, StoreError> {
        let m = self.read();
        let mut counts = OutboxCounts::default();
        for h in m.outbox.rows.values() {
            if endpoint_id.is_some_and(|e| h.delivery.endpoint_id != e) {
                continue;
            }
            match h.delivery.state {
                DeliveryState::Pending => counts.pending += 1,
                DeliveryState::Dead => counts.dead += 1,
            }
        }
        Ok(counts)
    }

    async fn put_endpoint(&self, endpoint: &StoredEndpoint) -> Result<(), StoreError> {
        let mut m = self.write();
        if m.outbox.endpoints.contains_key(&endpoint.id) {
            return Err(StoreError::Corrupt(format!(
                "webhook endpoint id {} is taken",
                endpoint.id
            )));
        }
        m.outbox
            .endpoints
            .insert(endpoint.id.clone(), endpoint.clone());
        Ok(())
    }

    async fn endpoints(&self, tenant: &str) -> Result<Vec<StoredEndpoint>, StoreError> {
        let m = self.read();
        Ok(m.outbox
            .endpoints
            .values()
            .filter(|e| e.tenant == tenant)
            .cloned()
            .collect())
    }

    async fn endpoint(&self, id: &str) -> Result<Option<StoredEndpoint>, StoreError> {
        Ok(self.read().outbox.endpoints.get(id).cloned())
    }

    async fn delete_endpoint(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let mut m = self.write();
        let outbox = &mut m.outbox;
        if outbox.endpoints.get(id).is_none_or(|e| e.tenant != tenant) {
            return Ok(false);
        }
        outbox.endpoints.remove(id);
        outbox.rows.retain(|_, h| h.delivery.endpoint_id != id);
        Ok(true)
    }
}
