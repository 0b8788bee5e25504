//! Reading the audit trail back: [`AuditTrail`] answers queries per
//! tenant and per key, newest first, in pages.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::AuditEvent;
use crate::error::store::StoreError;
use crate::token::KeyId;

/// Most events one page holds.
pub const MAX_PAGE_EVENTS: usize = 200;
/// Events per page unless [`AuditQuery::limit`] says otherwise.
const DEFAULT_PAGE_EVENTS: usize = 50;

/// Which events an [`AuditTrail`] returns: newest first, optionally of
/// one tenant or one key, before a sequence number.
///
/// ```
/// use keyward::AuditQuery;
/// let query = AuditQuery::new().tenant("acme").limit(20);
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct AuditQuery {
    tenant: Option<String>,
    key: Option<KeyId>,
    before: Option<u64>,
    limit: Option<usize>,
}

impl AuditQuery {
    /// Every event, 50 from the newest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only events in this tenant (exactly: not its descendants).
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Only events about this key: those acting on it, and rolls that
    /// name it as the new key.
    pub fn key(mut self, id: KeyId) -> Self {
        self.key = Some(id);
        self
    }

    /// Only events older than the one numbered `seq`: the next page after
    /// one whose [`AuditPage::next`] was `seq`.
    pub fn before(mut self, seq: u64) -> Self {
        self.before = Some(seq);
        self
    }

    /// Events per page, 1 to [`MAX_PAGE_EVENTS`] (larger values are
    /// lowered to it, 0 raised to 1). Defaults to 50.
    pub fn limit(mut self, events: usize) -> Self {
        self.limit = Some(events);
        self
    }

    /// The tenant asked for, if any.
    pub fn tenant_filter(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The key asked for, if any.
    pub fn key_filter(&self) -> Option<&KeyId> {
        self.key.as_ref()
    }

    /// The sequence number events must be below, if any.
    pub fn before_filter(&self) -> Option<u64> {
        self.before
    }

    /// The page size in force, 1 to [`MAX_PAGE_EVENTS`].
    pub fn page_size(&self) -> usize {
        self.limit
            .unwrap_or(DEFAULT_PAGE_EVENTS)
            .clamp(1, MAX_PAGE_EVENTS)
    }

    /// Whether the event numbered `seq` is one this query asks for.
    pub fn matches(&self, seq: u64, event: &AuditEvent) -> bool {
        self.before.is_none_or(|b| seq < b)
            && self
                .tenant
                .as_deref()
                .is_none_or(|t| event.tenant.as_deref() == Some(t))
            && self
                .key
                .is_none_or(|k| event.key_id == Some(k) || event.related_key_id == Some(k))
    }
}

/// An event as the trail keeps it: numbered, with every name in text so
/// that events written by another version of keyward still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// Its place in the trail: later events have larger numbers.
    pub seq: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What was done: an [`AuditAction`](super::AuditAction) name, e.g.
    /// `create`, `roll`.
    pub action: String,
    /// `success`, `denied` or `failed`.
    pub outcome: String,
    /// The reason code of a refusal or failure, e.g. `forbidden`.
    pub reason: Option<String>,
    /// The acting person or key.
    pub actor: Option<String>,
    /// The tenant acted in.
    pub tenant: Option<String>,
    /// The key acted on.
    pub key_id: Option<String>,
    /// Its display prefix.
    pub key_prefix: Option<String>,
    /// The second key involved: the new key of a roll.
    pub related_key_id: Option<String>,
    /// More about it, as compact JSON (a leak's `url` and `source`).
    pub detail: Option<String>,
}

impl AuditRecord {
    /// The record of `event`, numbered `seq`.
    pub fn of(seq: u64, event: &AuditEvent) -> Self {
        Self {
            seq,
            at: event.at,
            action: event.action.as_str().to_string(),
            outcome: event.outcome.as_str().to_string(),
            reason: event.outcome.reason().map(str::to_string),
            actor: event.actor.clone(),
            tenant: event.tenant.clone(),
            key_id: event.key_id.map(|k| k.as_str().to_string()),
            key_prefix: event.key_prefix.map(|p| p.as_str().to_string()),
            related_key_id: event.related_key_id.map(|k| k.as_str().to_string()),
            detail: event.detail.clone(),
        }
    }
}

/// One page of the trail, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditPage {
    /// The events, newest first.
    pub events: Vec<AuditRecord>,
    /// Pass to [`AuditQuery::before`] for the next page; `None` on the
    /// last page.
    pub next: Option<u64>,
}

impl AuditPage {
    /// The page `query` asks for, from the matching records, newest first
    /// (at most one more than a page is read).
    pub fn from_newest(records: impl Iterator<Item = AuditRecord>, query: &AuditQuery) -> Self {
        let size = query.page_size();
        let mut events: Vec<AuditRecord> = records.take(size + 1).collect();
        let next = (events.len() > size).then(|| events[size - 1].seq);
        events.truncate(size);
        Self { events, next }
    }
}

/// An audit trail that can be read back: per tenant and per key, newest
/// first, in pages. [`MemoryAuditSink`](super::MemoryAuditSink) is one;
/// with the `sqlite` or `postgres` feature, so is the sink that writes
/// events to the key database (`SqliteStore::audit_trail`,
/// `PostgresStore::audit_trail`).
///
/// ```
/// use async_trait::async_trait;
/// use keyward::{AuditPage, AuditQuery, AuditTrail, StoreError};
///
/// /// A trail that has forgotten everything.
/// #[derive(Debug)]
/// struct Forgetful;
///
/// #[async_trait]
/// impl AuditTrail for Forgetful {
///     async fn query(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
///         Ok(AuditPage::from_newest(std::iter::empty(), query))
///     }
/// }
/// ```
#[async_trait]
pub trait AuditTrail: fmt::Debug + Send + Sync + 'static {
    /// The events `query` asks for, newest first. Events recorded before
    /// the call are included.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the trail cannot be read.
    async fn query(&self, query: &AuditQuery) -> Result<AuditPage, StoreError>;
}

#[async_trait]
impl<T: AuditTrail + ?Sized> AuditTrail for std::sync::Arc<T> {
    async fn query(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        (**self).query(query).await
    }
}
