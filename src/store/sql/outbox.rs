//! The webhook outbox in SQL: endpoints, deliveries, claims by lease
//! (one conditional update, which a concurrent claim of the same row
//! re-checks once the first commits, and so skips), and the statements
//! that put a change's deliveries in the change's transaction.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{int, map_err, text, time, Dialect, Kind, SqlEngine, Value};
use crate::error::StoreError;
use crate::store::{Delivery, DeliveryState, Outbox, OutboxCounts, Settlement, StoredEndpoint};
use crate::webhook::{EventType, WebhookSecret};

/// The columns of a delivery, in the order statements name and read them.
const DELIVERY: &str = "id, message_id, endpoint_id, tenant, event_type, payload, created_at, \
     state, attempts, next_attempt_at, last_error, retrying_since";
const DELIVERY_KINDS: &[Kind] = &[
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Time,
    Kind::Text,
    Kind::Int,
    Kind::Time,
    Kind::Text,
    Kind::Time,
];
/// The columns of an endpoint, in order.
const ENDPOINT: &str = "id, tenant, url, secret, event_types, description, created_by, created_at";
const ENDPOINT_KINDS: &[Kind] = &[
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Time,
];

/// The outbox's statements, built once for a dialect.
#[derive(Debug)]
pub(super) struct OutboxStatements {
    pub(super) enqueue: Arc<str>,
    claim: Arc<str>,
    delivered: Arc<str>,
    purge: Arc<str>,
    release: Arc<str>,
    retry: Arc<str>,
    dead: Arc<str>,
    replay: Arc<str>,
    counts: Arc<str>,
    put_endpoint: Arc<str>,
    endpoints: Arc<str>,
    endpoint: Arc<str>,
    delete_endpoint: Arc<str>,
    delete_deliveries: Arc<str>,
}

impl OutboxStatements {
    pub(super) fn new(d: &dyn Dialect) -> Self {
        let (o, e) = (d.outbox_table(), d.endpoints_table());
        let s = |sql: String| -> Arc<str> { d.placeholders(sql).into() };
        Self {
            enqueue: s(format!(
                "INSERT INTO {o} ({DELIVERY}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (id) DO NOTHING"
            )),
            // The oldest due of each endpoint, `?5` at most, oldest first;
            // the outer conditions are those a concurrent claim re-checks.
            claim: s(format!(
                "UPDATE {o} SET lease_owner = ?1, lease_until = ?2, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM (SELECT id, next_attempt_at, row_number() OVER \
                 (PARTITION BY endpoint_id ORDER BY next_attempt_at, id) AS n FROM {o} \
                 WHERE state = 'pending' AND next_attempt_at <= ?3 \
                 AND (lease_until IS NULL OR lease_until < ?3)) AS due WHERE n <= ?5 \
                 ORDER BY next_attempt_at, id LIMIT ?4) \
                 AND state = 'pending' AND (lease_until IS NULL OR lease_until < ?3) \
                 RETURNING {DELIVERY}"
            )),
            delivered: s(format!(
                "DELETE FROM {o} WHERE id = ?1 AND lease_owner = ?2"
            )),
            purge: s(format!(
                "DELETE FROM {o} WHERE state = 'dead' AND next_attempt_at < ?1"
            )),
            release: s(format!(
                "UPDATE {o} SET lease_owner = NULL, lease_until = NULL, \
                 attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
                 WHERE id = ?1 AND lease_owner = ?2"
            )),
            retry: s(format!(
                "UPDATE {o} SET lease_owner = NULL, lease_until = NULL, \
                 next_attempt_at = ?3, last_error = ?4 WHERE id = ?1 AND lease_owner = ?2"
            )),
            dead: s(format!(
                "UPDATE {o} SET lease_owner = NULL, lease_until = NULL, state = 'dead', \
                 last_error = ?3, next_attempt_at = ?4 WHERE id = ?1 AND lease_owner = ?2"
            )),
            replay: s(format!(
                "UPDATE {o} SET state = 'pending', attempts = 0, next_attempt_at = ?3, \
                 retrying_since = ?3, lease_owner = NULL, lease_until = NULL WHERE state = 'dead' AND endpoint_id IN \
                 (SELECT id FROM {e} WHERE tenant = ?1 AND (?2 = '' OR id = ?2))"
            )),
            counts: s(format!(
                "SELECT state, CAST(count(*) AS BIGINT) FROM {o} \
                 WHERE ?1 = '' OR endpoint_id = ?1 GROUP BY state"
            )),
            put_endpoint: s(format!(
                "INSERT INTO {e} ({ENDPOINT}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (id) DO NOTHING"
            )),
            endpoints: s(format!(
                "SELECT {ENDPOINT} FROM {e} WHERE tenant = ?1 ORDER BY id"
            )),
            endpoint: s(format!("SELECT {ENDPOINT} FROM {e} WHERE id = ?1")),
            delete_endpoint: s(format!(
                "DELETE FROM {e} WHERE id = ?1 AND tenant = ?2 RETURNING CAST(1 AS BIGINT)"
            )),
            delete_deliveries: s(format!("DELETE FROM {o} WHERE endpoint_id = ?1")),
        }
    }
}

/// A delivery's values, in [`DELIVERY`]'s order.
pub(super) fn delivery_args(d: &Delivery) -> Vec<Value> {
    vec![
        text(&d.id),
        text(&d.message_id),
        text(&d.endpoint_id),
        text(&d.tenant),
        text(&d.event_type),
        text(&d.payload),
        time(Some(d.created_at)),
        text(d.state.as_str()),
        int(i64::from(d.attempts)),
        time(Some(d.next_attempt_at)),
        Value::Text(d.last_error.clone()),
        time(Some(d.retrying_since)),
    ]
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("invalid {what} row"))
}

fn delivery_of(row: Vec<Value>) -> Result<Delivery, StoreError> {
    let bad = || corrupt("webhook delivery");
    let [Value::Text(Some(id)), Value::Text(Some(message_id)), Value::Text(Some(endpoint_id)), Value::Text(Some(tenant)), Value::Text(Some(event_type)), Value::Text(Some(payload)), Value::Time(Some(created_at)), Value::Text(Some(state)), Value::Int(Some(attempts)), Value::Time(Some(next_attempt_at)), Value::Text(last_error), Value::Time(Some(retrying_since))] =
        <[Value; 12]>::try_from(row).map_err(|_| bad())?
    else {
        return Err(bad());
    };
    Ok(Delivery {
        id,
        message_id,
        endpoint_id,
        tenant,
        event_type,
        payload,
        created_at,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at,
        retrying_since,
        state: DeliveryState::parse(&state)?,
        last_error,
    })
}

fn endpoint_of(row: Vec<Value>) -> Result<StoredEndpoint, StoreError> {
    let bad = || corrupt("webhook endpoint");
    let [Value::Text(Some(id)), Value::Text(Some(tenant)), Value::Text(Some(url)), Value::Text(Some(secret)), Value::Text(Some(types)), Value::Text(Some(description)), Value::Text(Some(created_by)), Value::Time(Some(created_at))] =
        <[Value; 8]>::try_from(row).map_err(|_| bad())?
    else {
        return Err(bad());
    };
    let secret = WebhookSecret::parse(&secret).map_err(|_| bad())?;
    let event_types: Vec<EventType> = serde_json::from_str(&types).map_err(|_| bad())?;
    Ok(StoredEndpoint {
        id,
        tenant,
        url,
        secret,
        event_types,
        description,
        created_by,
        created_at,
    })
}

impl SqlEngine {
    /// The statements that write `deliveries` with a change.
    pub(super) fn enqueue_all(&self, deliveries: &[Delivery]) -> Vec<(Arc<str>, Vec<Value>)> {
        deliveries
            .iter()
            .map(|d| (self.outbox.enqueue.clone(), delivery_args(d)))
            .collect()
    }

    async fn deliveries(
        &self,
        sql: &Arc<str>,
        args: Vec<Value>,
        what: &'static str,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = self.dialect.fetch_values(sql, args, DELIVERY_KINDS).await;
        rows.map_err(map_err(what))?
            .into_iter()
            .map(delivery_of)
            .collect()
    }

    async fn endpoint_rows(
        &self,
        sql: &Arc<str>,
        args: Vec<Value>,
    ) -> Result<Vec<StoredEndpoint>, StoreError> {
        let rows = self.dialect.fetch_values(sql, args, ENDPOINT_KINDS).await;
        // A row this version cannot read (an event type of a newer
        // version, say) is passed over: it must not stop the writes of
        // keys whose events fan out past it.
        Ok(rows
            .map_err(map_err("reading webhook endpoints"))?
            .into_iter()
            .filter_map(|row| match endpoint_of(row) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::warn!(target: "keyward", error = %e, "a webhook endpoint row could not be read; it is passed over");
                    None
                }
            })
            .collect())
    }
}

#[async_trait]
impl Outbox for SqlEngine {
    async fn enqueue(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        for d in deliveries {
            let done = self
                .dialect
                .execute(&self.outbox.enqueue, delivery_args(d))
                .await;
            done.map_err(map_err("writing a webhook delivery"))?;
        }
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
        let args = vec![
            text(owner),
            time(Some(lease_until)),
            time(Some(now)),
            int(i64::try_from(limit).unwrap_or(i64::MAX)),
            int(i64::try_from(per_endpoint).unwrap_or(i64::MAX)),
        ];
        let claimed = self.deliveries(&self.outbox.claim, args, "claiming webhook deliveries");
        let mut claimed = claimed.await?;
        claimed.sort_by_key(|d| d.next_attempt_at);
        Ok(claimed)
    }

    async fn settle(
        &self,
        id: &str,
        owner: &str,
        settlement: &Settlement,
    ) -> Result<bool, StoreError> {
        let (sql, args) = match settlement {
            Settlement::Delivered => (&self.outbox.delivered, vec![text(id), text(owner)]),
            Settlement::Release => (&self.outbox.release, vec![text(id), text(owner)]),
            Settlement::Retry { at, error } => (
                &self.outbox.retry,
                vec![text(id), text(owner), time(Some(*at)), text(error)],
            ),
            Settlement::Dead { at, error } => (
                &self.outbox.dead,
                vec![text(id), text(owner), text(error), time(Some(*at))],
            ),
        };
        let done = self.dialect.execute(sql, args).await;
        Ok(done.map_err(map_err("settling a webhook delivery"))? > 0)
    }

    async fn replay(
        &self,
        tenant: &str,
        endpoint_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let args = vec![
            text(tenant),
            text(endpoint_id.unwrap_or("")),
            time(Some(now)),
        ];
        let done = self.dialect.execute(&self.outbox.replay, args).await;
        done.map_err(map_err("replaying webhook deliveries"))
    }

    async fn purge_dead(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = self
            .dialect
            .execute(&self.outbox.purge, vec![time(Some(before))])
            .await;
        done.map_err(map_err("purging dead webhook deliveries"))
    }

    async fn counts(&self, endpoint_id: Option<&str>) -> Result<OutboxCounts, StoreError> {
        let args = vec![text(endpoint_id.unwrap_or(""))];
        let kinds: &'static [Kind] = &[Kind::Text, Kind::Int];
        let rows = self
            .dialect
            .fetch_values(&self.outbox.counts, args, kinds)
            .await;
        let mut counts = OutboxCounts::default();
        for row in rows.map_err(map_err("counting webhook deliveries"))? {
            let [Value::Text(Some(state)), Value::Int(Some(n))] = row.as_slice() else {
                return Err(corrupt("webhook count"));
            };
            let n = u64::try_from(*n).unwrap_or(0);
            match DeliveryState::parse(state)? {
                DeliveryState::Pending => counts.pending += n,
                DeliveryState::Dead => counts.dead += n,
            }
        }
        Ok(counts)
    }

    async fn put_endpoint(&self, e: &StoredEndpoint) -> Result<(), StoreError> {
        let types = serde_json::to_string(&e.event_types)
            .map_err(|_| StoreError::Corrupt("cannot encode event types".into()))?;
        let args = vec![
            text(&e.id),
            text(&e.tenant),
            text(&e.url),
            text(e.secret.expose_secret()),
            text(&types),
            text(&e.description),
            text(&e.created_by),
            time(Some(e.created_at)),
        ];
        let done = self.dialect.execute(&self.outbox.put_endpoint, args).await;
        if done.map_err(map_err("writing a webhook endpoint"))? == 0 {
            return Err(StoreError::Corrupt(format!(
                "webhook endpoint id {} is taken",
                e.id
            )));
        }
        Ok(())
    }

    async fn endpoints(&self, tenant: &str) -> Result<Vec<StoredEndpoint>, StoreError> {
        self.endpoint_rows(&self.outbox.endpoints, vec![text(tenant)])
            .await
    }

    async fn endpoint(&self, id: &str) -> Result<Option<StoredEndpoint>, StoreError> {
        let rows = self.endpoint_rows(&self.outbox.endpoint, vec![text(id)]);
        Ok(rows.await?.pop())
    }

    async fn delete_endpoint(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let then = vec![(self.outbox.delete_deliveries.clone(), vec![text(id)])];
        let deleted = self
            .dialect
            .fetch_int_then(
                &self.outbox.delete_endpoint,
                vec![text(id), text(tenant)],
                then,
            )
            .await;
        Ok(deleted
            .map_err(map_err("deleting a webhook endpoint"))?
            .is_some())
    }
}
