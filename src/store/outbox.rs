//! The webhook outbox a store keeps: endpoints, and the deliveries
//! waiting to be sent. Events are written with the change that caused
//! them ([`KeyStore::insert_with`](super::KeyStore::insert_with) and its
//! siblings), so none is lost when the process dies between the two; a
//! delivery worker on any instance claims them with a lease.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::token::EntropyError;
use crate::webhook::{EventType, WebhookSecret};

/// An endpoint as stored: where a tenant's events go.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoredEndpoint {
    /// `ep_` and 24 base62 characters.
    pub id: String,
    /// The tenant whose keys' events it receives (with nested tenants,
    /// also those of the tenants below it).
    pub tenant: String,
    /// Where messages are POSTed.
    pub url: String,
    /// The signing secret.
    pub secret: WebhookSecret,
    /// The event types it wants; empty for all.
    pub event_types: Vec<EventType>,
    /// A note of its owner's.
    pub description: String,
    /// The actor who made it.
    pub created_by: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

impl StoredEndpoint {
    /// An endpoint of `tenant` at `url`, made by `created_by` at
    /// `created_at`, wanting every event; its secret is drawn anew.
    ///
    /// # Errors
    /// [`EntropyError`] if the random source fails.
    pub fn new(
        id: String,
        tenant: String,
        url: String,
        created_by: String,
        created_at: DateTime<Utc>,
    ) -> Result<Self, EntropyError> {
        Ok(Self {
            id,
            tenant,
            url,
            secret: WebhookSecret::generate()?,
            event_types: Vec::new(),
            description: String::new(),
            created_by,
            created_at,
        })
    }

    /// Only these event types.
    pub fn with_event_types(mut self, types: Vec<EventType>) -> Self {
        self.event_types = types;
        self
    }

    /// With this note.
    pub fn with_description(mut self, description: String) -> Self {
        self.description = description;
        self
    }

    /// Whether it wants events of `kind`.
    pub fn wants(&self, kind: EventType) -> bool {
        self.event_types.is_empty() || self.event_types.contains(&kind)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// Given up on: it kept failing past the worker's deadline. An
    /// operator's replay makes it pending again.
    Dead,
}

impl DeliveryState {
    /// `pending` or `dead`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Dead => "dead",
        }
    }

    /// The state stored as `s`.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for any other text.
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "pending" => Ok(Self::Pending),
            "dead" => Ok(Self::Dead),
            other => Err(StoreError::Corrupt(format!(
                "unknown delivery state {other:?}"
            ))),
        }
    }
}

/// One message for one endpoint. A delivered message leaves the outbox.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Delivery {
    /// `dlv_` and 24 base62 characters: this row.
    pub id: String,
    /// `msg_` and 24 base62 characters: the `webhook-id`, the same for
    /// every endpoint of the message and on every retry.
    pub message_id: String,
    /// The endpoint's id.
    pub endpoint_id: String,
    /// The tenant of the key the event is about.
    pub tenant: String,
    /// The event's type (`key.revoked`, …).
    pub event_type: String,
    /// The body to send, JSON.
    pub payload: String,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not to be sent before.
    pub next_attempt_at: DateTime<Utc>,
    /// When its current run of attempts began: its event's time, or its
    /// last replay. The worker gives up some time after it.
    pub retrying_since: DateTime<Utc>,
    /// Pending or dead.
    pub state: DeliveryState,
    /// What went wrong with the last attempt (a status or a transport
    /// failure; never a response body).
    pub last_error: Option<String>,
}

impl Delivery {
    /// A new delivery of a message, due at once.
    pub fn new(
        id: String,
        message_id: String,
        endpoint_id: String,
        tenant: String,
        event_type: String,
        payload: String,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            message_id,
            endpoint_id,
            tenant,
            event_type,
            payload,
            created_at,
            attempts: 0,
            next_attempt_at: created_at,
            retrying_since: created_at,
            state: DeliveryState::Pending,
            last_error: None,
        }
    }
}

/// How an attempt ended, for [`Outbox::settle`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Settlement {
    /// The endpoint took it (2xx): it leaves the outbox.
    Delivered,
    /// It failed; try again at `at`.
    Retry {
        /// The next attempt's time.
        at: DateTime<Utc>,
        /// What went wrong.
        error: String,
    },
    /// It failed for the last time: keep it as dead until replayed (or
    /// purged).
    Dead {
        /// When it went dead (kept as its `next_attempt_at`).
        at: DateTime<Utc>,
        /// What went wrong.
        error: String,
    },
    /// It was not attempted (its endpoint had enough in flight): give it
    /// back as it was, its attempt not counted.
    Release,
}

/// How many deliveries wait, and how many are dead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxCounts {
    /// Waiting to be sent (or retried).
    pub pending: u64,
    /// Given up on.
    pub dead: u64,
}

/// A store's webhook outbox. Several instances may share one: a claim
/// leases deliveries to one worker until the lease ends, so no delivery
/// is sent by two workers at once.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Adds deliveries (on their own, not with a change of a key).
    async fn enqueue(&self, deliveries: &[Delivery]) -> Result<(), StoreError>;

    /// Leases to `owner`, until `lease_until`, up to `limit` pending
    /// deliveries due at `now` whose lease (if any) has ended, oldest due
    /// first, and at most `per_endpoint` of one endpoint (so that one
    /// endpoint's backlog never keeps the others waiting); each comes
    /// back with its attempt counted. Two claims never take one delivery.
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
        per_endpoint: usize,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Ends an attempt of a delivery `owner` holds; `false` (and nothing
    /// changed) if the lease is lost or the delivery gone.
    async fn settle(
        &self,
        id: &str,
        owner: &str,
        settlement: &Settlement,
    ) -> Result<bool, StoreError>;

    /// Makes dead deliveries pending again, due at `now`, with their
    /// attempts reset and retrying since `now`: of `tenant`'s endpoints,
    /// and of one endpoint if given. How many.
    async fn replay(
        &self,
        tenant: &str,
        endpoint_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Deletes dead deliveries that went dead (stopped retrying) before
    /// `before`, so that an endpoint gone for good does not grow the
    /// outbox for ever. How many.
    async fn purge_dead(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Pending and dead deliveries of one endpoint, or of all.
    async fn counts(&self, endpoint_id: Option<&str>) -> Result<OutboxCounts, StoreError>;

    /// Stores a new endpoint.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; a taken id is
    /// [`StoreError::Corrupt`] (ids are random).
    async fn put_endpoint(&self, endpoint: &StoredEndpoint) -> Result<(), StoreError>;

    /// The endpoints of exactly `tenant`, by id.
    async fn endpoints(&self, tenant: &str) -> Result<Vec<StoredEndpoint>, StoreError>;

    /// One endpoint, by id.
    async fn endpoint(&self, id: &str) -> Result<Option<StoredEndpoint>, StoreError>;

    /// Deletes an endpoint of `tenant` and its deliveries; whether it was
    /// there.
    async fn delete_endpoint(&self, tenant: &str, id: &str) -> Result<bool, StoreError>;
}
