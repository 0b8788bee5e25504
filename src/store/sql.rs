//! What the SQL stores share: one row shape, its conversion to and from
//! [`KeyRecord`], and the mapping of driver errors to [`StoreError`].

use chrono::{DateTime, Utc};

use super::Credit;
use crate::error::StoreError;
use crate::key::KeyRecord;
use crate::limit::RateLimit;
use crate::policy::{Refill, WarningMark};
use crate::token::{KeyHash, KeyId};

/// The columns of `keyward_keys`, in the order every `SELECT` names them
/// and [`Row`] holds them.
macro_rules! columns {
    () => {
        "id, prefix, hash, tenant, name, permissions, created_by, created_at, expires_at, \
         revoked_at, last_used_at, metadata, version, rate_limit_max, rate_limit_per_ms, \
         remaining, refill_amount, refill_every_secs, last_refill_at, inactivity_deadline, \
         inactivity_before_secs, expiry_deadline, expiry_before_secs, rolled_from, rolled_to"
    };
}
pub(super) use columns;

/// [`SweepDue::matches`](super::SweepDue::matches) in SQL, with `?2` = now,
/// `?3` = expiring_before, `?4` = idle_since, `?5` = ended_before (`NULL`
/// bounds select nothing). Each branch is a range on one indexed column or
/// expression: `expires_at`, `coalesce(last_used_at, created_at)`,
/// `revoked_at`.
macro_rules! due_clause {
    () => {
        "(revoked_at IS NULL AND expires_at > ?2 AND expires_at <= ?3) \
         OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2) \
             AND coalesce(last_used_at, created_at) <= ?4) \
         OR revoked_at <= ?5 \
         OR (revoked_at IS NULL AND expires_at <= ?5)"
    };
}
pub(super) use due_clause;

/// `remaining` moved by `?2` uses ([`KeyStore::adjust_credits`]), never
/// past the largest count keyward stores.
///
/// [`KeyStore::adjust_credits`]: crate::KeyStore::adjust_credits
macro_rules! adjust_expr {
    () => {
        "CASE WHEN ?2 > 0 AND remaining > 9223372036854775807 - ?2 \
         THEN 9223372036854775807 ELSE remaining + ?2 END"
    };
}
pub(super) use adjust_expr;

/// A take that returned the uses now left.
pub(super) fn credit_taken(left: i64) -> Credit {
    Credit::Consumed {
        remaining: u64::try_from(left).unwrap_or(0),
    }
}

/// Why a take took nothing, from the key's `remaining` column (`None`: no
/// such key).
pub(super) fn credit_untaken(row: Option<Option<i64>>) -> Credit {
    match row {
        None => Credit::Missing,
        Some(None) => Credit::Unlimited,
        Some(Some(_)) => Credit::Exhausted,
    }
}

/// One row, in driver-neutral types. No `Debug`: it holds the hash.
pub(super) struct Row {
    pub id: String,
    pub prefix: String,
    pub hash: Vec<u8>,
    pub tenant: String,
    pub name: String,
    /// JSON array of canonical permission names.
    pub permissions: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// JSON text.
    pub metadata: Option<String>,
    pub version: i64,
    pub rate_limit_max: Option<i64>,
    pub rate_limit_per_ms: Option<i64>,
    pub remaining: Option<i64>,
    pub refill_amount: Option<i64>,
    pub refill_every_secs: Option<i64>,
    pub last_refill_at: Option<DateTime<Utc>>,
    pub inactivity_deadline: Option<DateTime<Utc>>,
    pub inactivity_before_secs: Option<i64>,
    pub expiry_deadline: Option<DateTime<Utc>>,
    pub expiry_before_secs: Option<i64>,
    pub rolled_from: Option<String>,
    pub rolled_to: Option<String>,
}

/// Counts are `u64` in Rust and signed 64-bit in SQL; keyward caps them at
/// [`MAX_USES`](crate::MAX_USES), so saturating never changes a value it
/// wrote.
pub(super) fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_sql(n: i64, what: &str, id: &str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| corrupt(id, what))
}

fn corrupt(id: &str, what: &str) -> StoreError {
    // The id is public; never echo other column values (a hash).
    let id: String = id.chars().take(16).collect();
    StoreError::Corrupt(format!("key {id:?}: invalid {what}"))
}

impl Row {
    pub(super) fn from_record(r: &KeyRecord) -> Result<Self, StoreError> {
        let json = |what| move |_| StoreError::Corrupt(format!("cannot encode {what}"));
        Ok(Self {
            id: r.id.as_str().to_string(),
            prefix: r.prefix.as_str().to_string(),
            hash: r.hash.as_bytes().to_vec(),
            tenant: r.tenant.clone(),
            name: r.name.clone(),
            permissions: serde_json::to_string(&r.permissions).map_err(json("permissions"))?,
            created_by: r.created_by.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            last_used_at: r.last_used_at,
            metadata: r
                .metadata
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(json("metadata"))?,
            version: to_sql(r.version),
            rate_limit_max: r.rate_limit.map(|l| i64::from(l.max())),
            rate_limit_per_ms: r.rate_limit.map(|l| l.per().num_milliseconds()),
            remaining: r.remaining.map(to_sql),
            refill_amount: r.refill.map(|f| to_sql(f.amount)),
            refill_every_secs: r.refill.map(|f| to_sql(f.every_secs)),
            last_refill_at: r.last_refill_at,
            inactivity_deadline: r.inactivity_warning.map(|w| w.deadline),
            inactivity_before_secs: r.inactivity_warning.map(|w| w.before_secs),
            expiry_deadline: r.expiry_warning.map(|w| w.deadline),
            expiry_before_secs: r.expiry_warning.map(|w| w.before_secs),
            rolled_from: r.rolled_from.map(|id| id.as_str().to_string()),
            rolled_to: r.rolled_to.map(|id| id.as_str().to_string()),
        })
    }

    pub(super) fn into_record(self) -> Result<KeyRecord, StoreError> {
        let id_text = self.id;
        let bad = |what: &str| corrupt(&id_text, what);
        let id: KeyId = id_text.parse().map_err(|_| bad("id"))?;
        let hash: [u8; 32] = self.hash.as_slice().try_into().map_err(|_| bad("hash"))?;
        let rate_limit = match (self.rate_limit_max, self.rate_limit_per_ms) {
            (None, None) => None,
            (Some(max), Some(per_ms)) => {
                let max = u32::try_from(max).map_err(|_| bad("rate limit"))?;
                let per =
                    chrono::Duration::try_milliseconds(per_ms).ok_or_else(|| bad("rate limit"))?;
                Some(RateLimit::new(max, per).map_err(|_| bad("rate limit"))?)
            }
            _ => return Err(bad("rate limit")),
        };
        let refill = match (self.refill_amount, self.refill_every_secs) {
            (None, None) => None,
            (Some(amount), Some(every)) => Some(Refill {
                amount: from_sql(amount, "refill", &id_text)?,
                every_secs: from_sql(every, "refill", &id_text)?,
            }),
            _ => return Err(bad("refill")),
        };
        let mark =
            |deadline: Option<DateTime<Utc>>, before: Option<i64>, what| match (deadline, before) {
                (None, None) => Ok(None),
                (Some(deadline), Some(before_secs)) => Ok(Some(WarningMark {
                    deadline,
                    before_secs,
                })),
                _ => Err(bad(what)),
            };
        Ok(KeyRecord {
            id,
            prefix: self.prefix.parse().map_err(|_| bad("prefix"))?,
            hash: KeyHash::from_bytes(hash),
            tenant: self.tenant,
            name: self.name,
            permissions: serde_json::from_str(&self.permissions).map_err(|_| bad("permissions"))?,
            created_by: self.created_by,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            last_used_at: self.last_used_at,
            metadata: self
                .metadata
                .map(|m| serde_json::from_str(&m))
                .transpose()
                .map_err(|_| bad("metadata"))?,
            version: from_sql(self.version, "version", &id_text)?,
            rate_limit,
            remaining: self
                .remaining
                .map(|n| from_sql(n, "remaining", &id_text))
                .transpose()?,
            refill,
            last_refill_at: self.last_refill_at,
            inactivity_warning: mark(
                self.inactivity_deadline,
                self.inactivity_before_secs,
                "inactivity warning",
            )?,
            expiry_warning: mark(
                self.expiry_deadline,
                self.expiry_before_secs,
                "expiry warning",
            )?,
            rolled_from: self
                .rolled_from
                .map(|r| r.parse().map_err(|_| bad("rolled_from")))
                .transpose()?,
            rolled_to: self
                .rolled_to
                .map(|r| r.parse().map_err(|_| bad("rolled_to")))
                .transpose()?,
        })
    }
}

/// Maps a driver error: data it cannot decode is [`StoreError::Corrupt`];
/// everything else (connection, pool, I/O, lock timeouts, server errors)
/// is [`StoreError::Unavailable`] with the driver's error as the source.
pub(super) fn map_err(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(format!("{what}: {e}")),
        other => StoreError::unavailable(format!("{what} failed"), other),
    }
}

/// `None` ids become the empty string, which sorts before every id.
pub(super) fn after_text(after: Option<&KeyId>) -> &str {
    after.map_or("", |a| a.as_str())
}

/// Page sizes as SQL integers.
pub(super) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
