//! Webhooks on the [`Keyward`]: the notice a change gives, the
//! deliveries it makes (one per endpoint of the key's tenant, and of the
//! tenants above it with nested tenants, that wants it), and the
//! management of endpoints. The deliveries are written with the change
//! ([`KeyStore::insert_with`](crate::store::KeyStore::insert_with) and its
//! siblings); the worker (`deliver.rs`, feature `webhooks`) sends them.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::Keyward;
use crate::audit::{AuditAction, AuditEvent, AuditOutcome};
use crate::authority::ensure_manager;
use crate::cache::CachedKey;
use crate::error::{KeyError, StoreError, VerifyError, WebhookError};
use crate::key::{Actor, KeyRecord};
use crate::store::{Delivery, Outbox, StoredEndpoint};
use crate::token::{fill_base62, DisplayPrefix, EntropyError, KeyId};
use crate::webhook::{
    url_problem, CreatedEndpoint, EventType, NewEndpoint, WebhookEndpoint, LIMIT_EVENT_WINDOW,
    MAX_DESCRIPTION_CHARS, MAX_ENDPOINTS,
};

/// What a change tells the endpoints: its type, who made it, and what
/// else the event carries (`data`, besides the key's id, prefix, tenant
/// and name).
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    kind: EventType,
    actor: Option<String>,
    extra: Map<String, Value>,
}

impl Notice {
    /// A notice of `kind` by `actor`.
    pub(crate) fn new(kind: EventType, actor: &str) -> Self {
        Self {
            kind,
            actor: Some(actor.to_string()),
            extra: Map::new(),
        }
    }

    /// With `data.<name>` set to `value`.
    pub(crate) fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(name.to_string(), value.into());
        self
    }

    /// The notice a management action gives, if it gives one.
    pub(super) fn of_action(action: AuditAction, actor: &Actor) -> Option<Self> {
        let kind = match action {
            AuditAction::Revoke => EventType::Revoked,
            AuditAction::Reactivate => EventType::Reactivated,
            _ => return None,
        };
        Some(Self::new(kind, actor.id()))
    }

    /// Whether the change from `before` to `after` is what the notice
    /// announces: revoking a revoked key, or reactivating an active one,
    /// announces nothing.
    pub(super) fn happened(&self, before: &KeyRecord, after: &KeyRecord) -> bool {
        match self.kind {
            EventType::Revoked => before.revoked_at.is_none() && after.revoked_at.is_some(),
            EventType::Reactivated => before.revoked_at.is_some() && after.revoked_at.is_none(),
            _ => true,
        }
    }
}

/// What an event is about: a key's public parts.
pub(super) struct Subject<'a> {
    id: KeyId,
    prefix: DisplayPrefix,
    tenant: &'a str,
    name: &'a str,
}

/// Keys whose last limit event is remembered; past this, old entries go,
/// and if none is old, the event is skipped.
const LIMIT_EVENT_KEYS: usize = 10_000;

/// When each key's last `key.limit_exceeded` was written.
#[derive(Debug, Default)]
pub(super) struct LimitSampler(Mutex<HashMap<KeyId, i64>>);

impl LimitSampler {
    /// Whether a key refused at `now_us` is due an event; if so, it is
    /// not due again for a window.
    fn due(&self, id: KeyId, now_us: i64) -> bool {
        let window = i64::try_from(LIMIT_EVENT_WINDOW.as_micros()).unwrap_or(i64::MAX);
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if last.get(&id).is_some_and(|at| now_us - at < window) {
            return false;
        }
        if last.len() >= LIMIT_EVENT_KEYS && !last.contains_key(&id) {
            last.retain(|_, at| now_us - *at < window);
            if last.len() >= LIMIT_EVENT_KEYS {
                return false;
            }
        }
        last.insert(id, now_us);
        true
    }
}

/// `prefix` and 24 base62 characters from the OS random source.
pub(crate) fn random_id(prefix: &str) -> Result<String, EntropyError> {
    let mut body = [0u8; 24];
    fill_base62(&mut body)?;
    Ok(format!(
        "{prefix}{}",
        std::str::from_utf8(&body).unwrap_or_default()
    ))
}

/// An instant as the payloads write it.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn no_entropy(e: EntropyError) -> StoreError {
    StoreError::unavailable("no webhook message id could be drawn", e)
}

impl Keyward {
    /// The store's outbox, if it keeps one.
    fn outbox_of(&self) -> Option<&dyn Outbox> {
        self.inner.store.outbox()
    }

    /// The deliveries `notices` about `record` make: one per notice and
    /// endpoint that wants it (none without an outbox).
    pub(super) async fn deliveries(
        &self,
        record: &KeyRecord,
        notices: &[Notice],
    ) -> Result<Vec<Delivery>, StoreError> {
        let subject = Subject {
            id: record.id,
            prefix: record.prefix,
            tenant: &record.tenant,
            name: &record.name,
        };
        self.deliveries_about(&subject, notices).await
    }

    async fn deliveries_about(
        &self,
        record: &Subject<'_>,
        notices: &[Notice],
    ) -> Result<Vec<Delivery>, StoreError> {
        let Some(outbox) = self.outbox_of().filter(|_| !notices.is_empty()) else {
            return Ok(Vec::new());
        };
        let mut endpoints = Vec::new();
        for tenant in self.lineage(record.tenant) {
            endpoints.extend(outbox.endpoints(tenant).await?);
        }
        let mut deliveries = Vec::new();
        for notice in notices {
            let wanted: Vec<&StoredEndpoint> =
                endpoints.iter().filter(|e| e.wants(notice.kind)).collect();
            if !wanted.is_empty() {
                deliveries.extend(self.message(record, notice, &wanted)?);
            }
        }
        Ok(deliveries)
    }

    /// One message of `notice` about `record`, for each of `endpoints`.
    fn message(
        &self,
        record: &Subject<'_>,
        notice: &Notice,
        endpoints: &[&StoredEndpoint],
    ) -> Result<Vec<Delivery>, StoreError> {
        let now = self.now();
        let mut data = Map::new();
        data.insert("key_id".into(), record.id.as_str().into());
        data.insert("key_prefix".into(), record.prefix.as_str().into());
        data.insert("tenant".into(), record.tenant.into());
        data.insert("name".into(), record.name.into());
        data.insert("actor".into(), notice.actor.clone().into());
        data.extend(notice.extra.clone());
        let payload = json!({
            "type": notice.kind.as_str(),
            "timestamp": rfc3339(now),
            "data": data,
        })
        .to_string();
        let message = random_id("msg_").map_err(no_entropy)?;
        endpoints
            .iter()
            .map(|e| {
                Ok(Delivery::new(
                    random_id("dlv_").map_err(no_entropy)?,
                    message.clone(),
                    e.id.clone(),
                    record.tenant.to_string(),
                    notice.kind.as_str().to_string(),
                    payload.clone(),
                    now,
                ))
            })
            .collect()
    }

    /// `tenant` and, with nested tenants, every tenant above it.
    fn lineage<'t>(&self, tenant: &'t str) -> Vec<&'t str> {
        let mut lineage = vec![tenant];
        if self.inner.nested {
            let mut rest = tenant;
            while let Some((parent, _)) = rest.rsplit_once('/') {
                lineage.push(parent);
                rest = parent;
            }
        }
        lineage
    }

    /// Notes a key refused for a limit: at most one `key.limit_exceeded`
    /// per key per [`LIMIT_EVENT_WINDOW`], written by a background task
    /// (none without a tokio runtime). No write causes it, so it is not
    /// in a change's transaction: one in flight when the process dies is
    /// lost.
    pub(super) fn limit_exceeded(&self, entry: &CachedKey, err: &VerifyError, now_us: i64) {
        let retry_after = match err {
            VerifyError::RateLimited { retry_after }
            | VerifyError::QuotaExceeded { retry_after }
            | VerifyError::LimitExceeded { retry_after, .. } => Some(*retry_after),
            VerifyError::UsageExceeded => None,
            _ => return,
        };
        if self.outbox_of().is_none() || !self.inner.limit_events.due(entry.id, now_us) {
            return;
        }
        #[cfg(not(feature = "tokio"))]
        let _ = retry_after;
        #[cfg(feature = "tokio")]
        {
            let mut notice = Notice::new(EventType::LimitExceeded, "keyward:verify")
                .with("limit", err.code())
                .with("retry_after_ms", retry_after.map(|r| r.num_milliseconds()));
            if let VerifyError::LimitExceeded { limit, .. } = err {
                notice = notice.with("limit_name", limit.as_ref());
            }
            notice.actor = None;
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let keys = self.clone();
            let (id, prefix, tenant, name) = (
                entry.id,
                entry.prefix,
                entry.tenant.name.to_string(),
                entry.name.to_string(),
            );
            runtime.spawn(async move {
                let subject = Subject {
                    id,
                    prefix,
                    tenant: &tenant,
                    name: &name,
                };
                let written = async {
                    let deliveries = keys
                        .deliveries_about(&subject, std::slice::from_ref(&notice))
                        .await?;
                    match keys.outbox_of() {
                        Some(outbox) if !deliveries.is_empty() => outbox.enqueue(&deliveries).await,
                        _ => Ok(()),
                    }
                };
                if let Err(e) = keys.deadline(written).await {
                    tracing::warn!(target: "keyward", key = %prefix, error = %e, "could not write a limit_exceeded webhook");
                }
            });
        }
    }

    fn managing_outbox(&self, actor: &Actor) -> Result<&dyn Outbox, WebhookError> {
        ensure_manager(actor).map_err(|e| match e {
            KeyError::Forbidden { actor } => WebhookError::Forbidden { actor },
            _ => WebhookError::Forbidden {
                actor: actor.id().to_string(),
            },
        })?;
        self.outbox_of().ok_or(WebhookError::Unsupported)
    }

    /// Makes a webhook endpoint for the actor's tenant, with a new
    /// signing secret shown this once. The actor must manage keys. The
    /// endpoint receives the events of the tenant's keys (with nested
    /// tenants, of the tenants below it too) that it wants.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use keyward::webhook::{EventType, NewEndpoint};
    /// use keyward::{Actor, Catalog, Keyward, MemoryStore};
    ///
    /// let keys = Keyward::builder(MemoryStore::new(), Catalog::builder().resource("contacts", ["read"]).build()?).build()?;
    /// let admin = Actor::new("user_1", "acme").may_manage_keys(true);
    /// let made = keys
    ///     .create_endpoint(&admin, NewEndpoint::new("https://hooks.acme.example/keys")
    ///         .event_types([EventType::Revoked, EventType::Leaked]))
    ///     .await?;
    /// assert!(made.secret.expose_secret().starts_with("whsec_"));
    /// assert_eq!(keys.endpoints(&admin).await?.len(), 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`WebhookError::Forbidden`], [`WebhookError::InvalidUrl`],
    /// [`WebhookError::InvalidDescription`],
    /// [`WebhookError::TooManyEndpoints`], [`WebhookError::Unsupported`],
    /// [`WebhookError::Store`], [`WebhookError::Entropy`].
    pub async fn create_endpoint(
        &self,
        actor: &Actor,
        new: NewEndpoint,
    ) -> Result<CreatedEndpoint, WebhookError> {
        let result = self.create_endpoint_inner(actor, new).await;
        let detail = result.as_ref().ok().map(|c| {
            // Where it sends, without a query (which may carry a token).
            let url = c.endpoint.url.split(['?', '#']).next().unwrap_or("");
            json!({ "endpoint": c.endpoint.id, "url": url }).to_string()
        });
        self.record_endpoint_event(AuditAction::CreateEndpoint, actor, detail, &result);
        result
    }

    async fn create_endpoint_inner(
        &self,
        actor: &Actor,
        new: NewEndpoint,
    ) -> Result<CreatedEndpoint, WebhookError> {
        let outbox = self.managing_outbox(actor)?;
        if let Some(problem) = url_problem(&new.url) {
            return Err(WebhookError::InvalidUrl(problem));
        }
        let description = new.description.trim();
        if description.chars().count() > MAX_DESCRIPTION_CHARS
            || description.chars().any(char::is_control)
        {
            return Err(WebhookError::InvalidDescription);
        }
        let tenant = actor.tenant().to_string();
        if outbox.endpoints(&tenant).await?.len() >= MAX_ENDPOINTS {
            return Err(WebhookError::TooManyEndpoints { max: MAX_ENDPOINTS });
        }
        let stored = StoredEndpoint::new(
            random_id("ep_")?,
            tenant,
            new.url,
            actor.id().to_string(),
            self.now(),
        )?
        .with_event_types(new.event_types)
        .with_description(description.to_string());
        outbox.put_endpoint(&stored).await?;
        let secret = stored.secret.clone();
        Ok(CreatedEndpoint {
            endpoint: view(stored, Default::default()),
            secret,
        })
    }

    /// The endpoints of the actor's tenant, with their waiting and dead
    /// deliveries.
    ///
    /// # Errors
    /// [`WebhookError::Forbidden`], [`WebhookError::Unsupported`],
    /// [`WebhookError::Store`].
    pub async fn endpoints(&self, actor: &Actor) -> Result<Vec<WebhookEndpoint>, WebhookError> {
        let outbox = self.managing_outbox(actor)?;
        let mut views = Vec::new();
        for e in outbox.endpoints(actor.tenant()).await? {
            let counts = outbox.counts(Some(&e.id)).await?;
            views.push(view(e, counts));
        }
        Ok(views)
    }

    /// Deletes an endpoint of the actor's tenant, and every delivery
    /// waiting for it.
    ///
    /// # Errors
    /// [`WebhookError::NotFound`], [`WebhookError::Forbidden`],
    /// [`WebhookError::Unsupported`], [`WebhookError::Store`].
    pub async fn delete_endpoint(&self, actor: &Actor, id: &str) -> Result<(), WebhookError> {
        let result = async {
            let outbox = self.managing_outbox(actor)?;
            if outbox.delete_endpoint(actor.tenant(), id).await? {
                Ok(())
            } else {
                Err(WebhookError::NotFound(shorten(id)))
            }
        }
        .await;
        let known = result.is_ok().then_some(id);
        self.audit_endpoint(AuditAction::DeleteEndpoint, actor, known, &result);
        result
    }

    /// Makes the dead deliveries of the actor's tenant pending again (of
    /// one endpoint, if given), due now with their attempts reset: after
    /// a receiver's outage outlasted the retries. How many.
    ///
    /// # Errors
    /// [`WebhookError::NotFound`] for an endpoint not of the tenant,
    /// [`WebhookError::Forbidden`], [`WebhookError::Unsupported`],
    /// [`WebhookError::Store`].
    pub async fn replay_webhooks(
        &self,
        actor: &Actor,
        endpoint: Option<&str>,
    ) -> Result<u64, WebhookError> {
        let result = async {
            let outbox = self.managing_outbox(actor)?;
            if let Some(id) = endpoint {
                let owned = outbox.endpoint(id).await?;
                if owned.is_none_or(|e| e.tenant != actor.tenant()) {
                    return Err(WebhookError::NotFound(shorten(id)));
                }
            }
            Ok(outbox.replay(actor.tenant(), endpoint, self.now()).await?)
        }
        .await;
        self.audit_endpoint(AuditAction::ReplayWebhooks, actor, endpoint, &result);
        result
    }

    fn audit_endpoint<T>(
        &self,
        action: AuditAction,
        actor: &Actor,
        endpoint: Option<&str>,
        result: &Result<T, WebhookError>,
    ) {
        let detail = endpoint.map(|id| json!({ "endpoint": shorten(id) }).to_string());
        self.record_endpoint_event(action, actor, detail, result);
    }

    fn record_endpoint_event<T>(
        &self,
        action: AuditAction,
        actor: &Actor,
        detail: Option<String>,
        result: &Result<T, WebhookError>,
    ) {
        let outcome = match result {
            Ok(_) => AuditOutcome::Success,
            Err(e @ (WebhookError::Store(_) | WebhookError::Entropy(_))) => {
                AuditOutcome::Failed(e.code())
            }
            Err(e) => AuditOutcome::Denied(e.code()),
        };
        self.inner.audit.record(&AuditEvent {
            at: self.now(),
            action,
            outcome,
            actor: Some(actor.id().to_string()),
            tenant: Some(actor.tenant().to_string()),
            key_id: None,
            key_prefix: None,
            related_key_id: None,
            detail,
        });
    }
}

/// An id from outside, cut to a length that is safe to echo.
fn shorten(id: &str) -> String {
    id.chars().filter(|c| !c.is_control()).take(40).collect()
}

fn view(e: StoredEndpoint, counts: crate::store::OutboxCounts) -> WebhookEndpoint {
    WebhookEndpoint {
        id: e.id,
        tenant: e.tenant,
        url: e.url,
        event_types: e.event_types,
        description: e.description,
        created_by: e.created_by,
        created_at: e.created_at,
        pending: counts.pending,
        dead: counts.dead,
    }
}
