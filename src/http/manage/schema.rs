//! The bodies of the management API, as JSON and as OpenAPI schemas. Keys
//! and events are shown through views of their own, so that the API's
//! shape is stated here, once, and not by the core's types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::audit::AuditRecord;
use crate::key::{KeyInfo, KeyStatus};
use crate::limit::RateLimit;

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum Status {
    /// It verifies.
    Active,
    /// It passed its expiry; final.
    Expired,
    /// It was revoked and can be reactivated.
    Revoked,
}

impl From<KeyStatus> for Status {
    fn from(s: KeyStatus) -> Self {
        match s {
            KeyStatus::Active => Self::Active,
            KeyStatus::Expired => Self::Expired,
            KeyStatus::Revoked => Self::Revoked,
        }
    }
}

impl From<Status> for KeyStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Active => Self::Active,
            Status::Expired => Self::Expired,
            Status::Revoked => Self::Revoked,
        }
    }
}

/// A rate limit: `max` requests per `per_seconds`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RateLimitView {
    /// Requests allowed per period.
    max: u32,
    /// The period, in seconds (fractions for periods under a second).
    per_seconds: f64,
}

impl From<RateLimit> for RateLimitView {
    fn from(l: RateLimit) -> Self {
        Self {
            max: l.max(),
            per_seconds: l.per().as_seconds_f64(),
        }
    }
}

/// An API key as its managers see it: everything but the secret.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct KeyView {
    /// The public id, used in the paths of this API.
    id: String,
    /// The public start of the token, e.g. `sk_AbCd1234_`.
    prefix: String,
    /// The tenant the key belongs to.
    tenant: String,
    /// Its label.
    name: String,
    /// What it may do, canonical names (`contacts:write` implies
    /// `contacts:read`, and both are listed).
    permissions: Vec<String>,
    /// Where it stands, as of the response.
    status: Status,
    /// Who created it.
    created_by: String,
    /// When it was created.
    created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it is revoked.
    revoked_at: Option<DateTime<Utc>>,
    /// When it last verified, if ever.
    last_used_at: Option<DateTime<Utc>>,
    /// The host's JSON.
    metadata: Option<Value>,
    /// Its own rate limit; `null` uses the service's default.
    rate_limit: Option<RateLimitView>,
    /// Uses left, for a usage-limited key.
    remaining: Option<u64>,
    /// The key it replaced by a roll.
    rolled_from: Option<String>,
    /// The key that replaced it by a roll.
    rolled_to: Option<String>,
    /// The networks it accepts requests from (CIDRs); `null`: any.
    allowed_ips: Option<Vec<String>>,
    /// Before this instant it is refused.
    not_before: Option<DateTime<Utc>>,
    /// The roles it holds; `permissions` includes theirs.
    roles: Vec<String>,
    /// Its named rate limits.
    limits: Vec<LimitView>,
    /// Uses a usage-limited key spent in all (each verify's cost).
    credits_spent: u64,
    /// When a secret scanner reported the key's token in public.
    exposed_at: Option<DateTime<Utc>>,
}

/// A named rate limit: `max` per `per_seconds`, charged each request's
/// cost.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitView {
    /// 1 to 32 of `a-z 0-9 _ - .`, e.g. `tokens`.
    pub(super) name: String,
    /// Units allowed per period (and the largest burst).
    pub(super) max: u32,
    /// The period, in seconds: 60 for a minute, 86400 for a day.
    pub(super) per_seconds: f64,
}

impl From<KeyInfo> for KeyView {
    fn from(k: KeyInfo) -> Self {
        Self {
            id: k.id.as_str().to_string(),
            prefix: k.prefix.as_str().to_string(),
            tenant: k.tenant,
            name: k.name,
            permissions: k.permissions.names().map(str::to_string).collect(),
            status: k.status.into(),
            created_by: k.created_by,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
            metadata: k.metadata,
            rate_limit: k.rate_limit.map(Into::into),
            remaining: k.remaining,
            rolled_from: k.rolled_from.map(|i| i.as_str().to_string()),
            rolled_to: k.rolled_to.map(|i| i.as_str().to_string()),
            allowed_ips: k
                .allowed_ips
                .map(|a| a.networks().iter().map(ToString::to_string).collect()),
            not_before: k.not_before,
            roles: k.roles,
            limits: k
                .limits
                .into_iter()
                .map(|l| LimitView {
                    name: l.name,
                    max: l.limit.max(),
                    per_seconds: l.limit.per().as_seconds_f64(),
                })
                .collect(),
            credits_spent: k.credits_spent,
            exposed_at: k.exposed_at,
        }
    }
}

/// A new key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateKey {
    /// 1 to 100 characters.
    pub(super) name: String,
    /// Canonical names from the catalog, none by default. The caller must
    /// hold every one.
    #[serde(default)]
    pub(super) permissions: Vec<String>,
    /// A tenant at or below the caller's (with nested tenants); the
    /// caller's by default.
    pub(super) tenant: Option<String>,
    /// When it stops working. Give this or `expires_in_seconds`, not both;
    /// neither takes the caller's own expiry, if any.
    pub(super) expires_at: Option<DateTime<Utc>>,
    /// Seconds from now until it stops working: 3600 for a temporary key
    /// of an hour.
    pub(super) expires_in_seconds: Option<i64>,
    /// Free-form JSON, at most 16 KiB.
    pub(super) metadata: Option<Value>,
    /// Its own limit, in requests per minute; no looser than the caller's.
    pub(super) rate_limit_per_minute: Option<u32>,
    /// Networks (CIDRs or single addresses, IPv4 or IPv6) it accepts
    /// requests from; within the caller's own, if it has one.
    pub(super) allowed_ips: Option<Vec<String>>,
    /// Refused before this instant.
    pub(super) not_before: Option<DateTime<Utc>>,
    /// Roles of the catalog it holds.
    #[serde(default)]
    pub(super) roles: Vec<String>,
    /// Named rate limits, charged each request's cost.
    #[serde(default)]
    pub(super) limits: Vec<LimitView>,
}

/// A change to a key, applied all or nothing: fields left out stay as
/// they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateKey {
    /// A new name.
    pub(super) name: Option<String>,
    /// New permissions, replacing the old.
    pub(super) permissions: Option<Vec<String>>,
    /// A number sets the key's own limit (requests per minute); `null`
    /// goes back to the service's default.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    pub(super) rate_limit_per_minute: Option<Option<u32>>,
    /// A list sets the networks it accepts requests from; `null` lets it
    /// be used from anywhere.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub(super) allowed_ips: Option<Option<Vec<String>>>,
    /// An instant sets `not_before`; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub(super) not_before: Option<Option<DateTime<Utc>>>,
    /// New roles, replacing the old.
    pub(super) roles: Option<Vec<String>>,
    /// New named limits, replacing the old (`[]` removes them).
    pub(super) limits: Option<Vec<LimitView>>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// How to roll a key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RollKey {
    /// How long the old key keeps working beside the new one, in seconds:
    /// 0 ends it at once. Required: an instant revocation is never a
    /// default.
    pub(super) grace_seconds: i64,
}

/// A key and its token. The token is shown once: this response is the
/// only copy.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Created {
    /// The plaintext token. Store it now.
    pub(super) token: String,
    /// The key.
    pub(super) key: KeyView,
}

/// A page of keys, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct KeyList {
    /// The keys.
    pub(super) data: Vec<KeyView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub(super) next_cursor: Option<String>,
}

/// Which keys to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// The `next_cursor` of the previous page.
    pub(super) cursor: Option<String>,
    /// Keys per page, 1 to 100; 20 by default.
    pub(super) limit: Option<usize>,
    /// Only keys of this status.
    pub(super) status: Option<Status>,
    /// Only keys whose name contains this text, ignoring case.
    pub(super) name: Option<String>,
    /// A tenant at or below the caller's; the caller's by default.
    pub(super) tenant: Option<String>,
}

/// One entry of the audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EventView {
    /// Its place in the trail; later events have larger numbers.
    seq: u64,
    /// When it happened.
    at: DateTime<Utc>,
    /// What was done: `create`, `revoke`, `reactivate`, `roll`, `update`,
    /// `delete`, `verify`, …
    action: String,
    /// `success`, `denied` or `failed`.
    outcome: String,
    /// Why it was refused or failed, e.g. `forbidden`.
    reason: Option<String>,
    /// Who acted.
    actor: Option<String>,
    /// The tenant acted in.
    tenant: Option<String>,
    /// The key acted on.
    key_id: Option<String>,
    /// Its display prefix.
    key_prefix: Option<String>,
    /// The other key: the new key of a roll.
    related_key_id: Option<String>,
    /// More about it, as JSON text: a leak's `url` and `source`.
    detail: Option<String>,
}

impl From<AuditRecord> for EventView {
    fn from(r: AuditRecord) -> Self {
        Self {
            seq: r.seq,
            at: r.at,
            action: r.action,
            outcome: r.outcome,
            reason: r.reason,
            actor: r.actor,
            tenant: r.tenant,
            key_id: r.key_id,
            key_prefix: r.key_prefix,
            related_key_id: r.related_key_id,
            detail: r.detail,
        }
    }
}

/// A page of audit events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EventList {
    /// The events.
    pub(super) data: Vec<EventView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub(super) next_cursor: Option<String>,
}

/// Which events of a key to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct KeyEventParams {
    /// The `next_cursor` of the previous page.
    pub(super) cursor: Option<String>,
    /// Events per page, 1 to 200; 50 by default.
    pub(super) limit: Option<usize>,
}

/// Which events of a tenant to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EventParams {
    /// The `next_cursor` of the previous page.
    pub(super) cursor: Option<String>,
    /// Events per page, 1 to 200; 50 by default.
    pub(super) limit: Option<usize>,
    /// A tenant at or below the caller's; the caller's by default.
    pub(super) tenant: Option<String>,
}

/// One permission of the catalog.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PermissionView {
    /// Its canonical name, e.g. `contacts:write`.
    pub(super) name: String,
    /// The action, e.g. `write`.
    pub(super) action: String,
    /// What holding it grants besides itself, e.g. `contacts:read`.
    pub(super) implies: Vec<String>,
}

/// One resource of the catalog and its actions.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ResourceView {
    /// The resource, e.g. `contacts`.
    pub(super) name: String,
    /// Its permissions, in declaration order.
    pub(super) permissions: Vec<PermissionView>,
}

/// The permissions keys can hold.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CatalogView {
    /// The resources, in declaration order.
    pub(super) resources: Vec<ResourceView>,
}

/// Who the caller is to this API.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MeView {
    /// The actor's id: a key's id, or the host's name for a person.
    pub(super) actor: String,
    /// The actor's tenant.
    pub(super) tenant: String,
    /// What the actor holds; it can grant no more.
    pub(super) permissions: Vec<String>,
}

/// A refusal.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ErrorBody {
    /// What went wrong.
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ErrorDetail {
    /// Stable, snake_case: see the README's table.
    code: String,
    /// For people; never contains a secret.
    message: String,
    /// The display prefix of the presented key.
    key: Option<String>,
    /// The request field or parameter at fault.
    field: Option<String>,
    /// The permission lacking.
    permission: Option<String>,
    /// When to retry, in seconds.
    retry_after_seconds: Option<u64>,
}
