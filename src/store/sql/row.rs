//! The row of `keyward_keys`: its columns, declared once, and its
//! conversion to and from [`KeyRecord`], by column name.

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::key::KeyRecord;
use crate::limit::RateLimit;
use crate::policy::{Refill, WarningMark};
use crate::token::{KeyHash, KeyId};

/// How a column travels between Rust and SQL. Every column is read as
/// nullable; `NOT NULL` is the schema's to enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Bytes,
    Int,
    /// An instant: microseconds in SQLite, `timestamptz` in PostgreSQL.
    Time,
    /// JSON, as text in transit: `jsonb` in PostgreSQL.
    Json,
}

/// The columns of `keyward_keys`, in the order every statement names and
/// binds them.
pub(crate) const COLUMNS: [(&str, Kind); 31] = [
    ("id", Kind::Text),
    ("prefix", Kind::Text),
    ("hash", Kind::Bytes),
    ("tenant", Kind::Text),
    ("name", Kind::Text),
    ("permissions", Kind::Text),
    ("created_by", Kind::Text),
    ("created_at", Kind::Time),
    ("expires_at", Kind::Time),
    ("revoked_at", Kind::Time),
    ("last_used_at", Kind::Time),
    ("metadata", Kind::Json),
    ("version", Kind::Int),
    ("rate_limit_max", Kind::Int),
    ("rate_limit_per_ms", Kind::Int),
    ("remaining", Kind::Int),
    ("refill_amount", Kind::Int),
    ("refill_every_secs", Kind::Int),
    ("last_refill_at", Kind::Time),
    ("inactivity_deadline", Kind::Time),
    ("inactivity_before_secs", Kind::Int),
    ("expiry_deadline", Kind::Time),
    ("expiry_before_secs", Kind::Int),
    ("rolled_from", Kind::Text),
    ("rolled_to", Kind::Text),
    ("allowed_ips", Kind::Text),
    ("not_before", Kind::Time),
    ("roles", Kind::Text),
    ("limits", Kind::Text),
    ("credits_spent", Kind::Int),
    ("exposed_at", Kind::Time),
];

/// The columns an update writes; the others never change after insert
/// (`version` is bumped, the bookkeeping columns have their own writes).
pub(crate) const UPDATED: [&str; 19] = [
    "name",
    "permissions",
    "expires_at",
    "revoked_at",
    "metadata",
    "rate_limit_max",
    "rate_limit_per_ms",
    "refill_amount",
    "refill_every_secs",
    "inactivity_deadline",
    "inactivity_before_secs",
    "expiry_deadline",
    "expiry_before_secs",
    "rolled_to",
    "allowed_ips",
    "not_before",
    "roles",
    "limits",
    "exposed_at",
];

/// One value, in driver-neutral form. No `Debug`: it may hold the hash.
#[derive(Clone, PartialEq)]
pub(crate) enum Value {
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    Int(Option<i64>),
    Time(Option<DateTime<Utc>>),
}

/// The position of column `name` in [`COLUMNS`].
pub(crate) fn position(name: &str) -> usize {
    COLUMNS
        .iter()
        .position(|(n, _)| *n == name)
        .unwrap_or_else(|| unreachable!("no column {name}"))
}

/// One row: a value per column of [`COLUMNS`], read and written by name.
pub(crate) struct Row(Vec<Value>);

impl Row {
    /// A row read from the database, in [`COLUMNS`] order.
    pub(crate) fn from_values(values: Vec<Value>) -> Self {
        Self(values)
    }

    /// The value of column `name`.
    pub(crate) fn get(&self, name: &str) -> Value {
        self.0[position(name)].clone()
    }

    fn set(&mut self, name: &str, value: Value) {
        self.0[position(name)] = value;
    }

    fn text(&self, name: &str) -> Option<String> {
        match &self.0[position(name)] {
            Value::Text(t) => t.clone(),
            _ => None,
        }
    }

    fn int(&self, name: &str) -> Option<i64> {
        match self.0[position(name)] {
            Value::Int(n) => n,
            _ => None,
        }
    }

    fn time(&self, name: &str) -> Option<DateTime<Utc>> {
        match self.0[position(name)] {
            Value::Time(t) => t,
            _ => None,
        }
    }

    /// Every value, in [`COLUMNS`] order.
    pub(crate) fn into_values(self) -> Vec<Value> {
        self.0
    }

    /// The row of `r`.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if a JSON value cannot be encoded.
    pub(crate) fn from_record(r: &KeyRecord) -> Result<Self, StoreError> {
        let json = |what| move |_| StoreError::Corrupt(format!("cannot encode {what}"));
        let text = |s: &str| Value::Text(Some(s.to_string()));
        let int = |n: Option<i64>| Value::Int(n);
        let time = |t: Option<DateTime<Utc>>| Value::Time(t);
        let mut row = Self(COLUMNS.iter().map(|_| Value::Int(None)).collect());
        row.set("id", text(r.id.as_str()));
        row.set("prefix", text(r.prefix.as_str()));
        row.set("hash", Value::Bytes(Some(r.hash.as_bytes().to_vec())));
        row.set("tenant", text(&r.tenant));
        row.set("name", text(&r.name));
        let permissions = serde_json::to_string(&r.permissions).map_err(json("permissions"))?;
        row.set("permissions", Value::Text(Some(permissions)));
        row.set("created_by", text(&r.created_by));
        row.set("created_at", time(Some(r.created_at)));
        row.set("expires_at", time(r.expires_at));
        row.set("revoked_at", time(r.revoked_at));
        row.set("last_used_at", time(r.last_used_at));
        let metadata = r.metadata.as_ref().map(serde_json::to_string);
        let metadata = metadata.transpose().map_err(json("metadata"))?;
        row.set("metadata", Value::Text(metadata));
        row.set("version", int(Some(to_sql(r.version))));
        row.set(
            "rate_limit_max",
            int(r.rate_limit.map(|l| i64::from(l.max()))),
        );
        row.set(
            "rate_limit_per_ms",
            int(r.rate_limit.map(|l| l.per().num_milliseconds())),
        );
        row.set("remaining", int(r.remaining.map(to_sql)));
        row.set("refill_amount", int(r.refill.map(|f| to_sql(f.amount))));
        row.set(
            "refill_every_secs",
            int(r.refill.map(|f| to_sql(f.every_secs))),
        );
        row.set("last_refill_at", time(r.last_refill_at));
        row.set(
            "inactivity_deadline",
            time(r.inactivity_warning.map(|w| w.deadline)),
        );
        row.set(
            "inactivity_before_secs",
            int(r.inactivity_warning.map(|w| w.before_secs)),
        );
        row.set(
            "expiry_deadline",
            time(r.expiry_warning.map(|w| w.deadline)),
        );
        row.set(
            "expiry_before_secs",
            int(r.expiry_warning.map(|w| w.before_secs)),
        );
        let id_text = |id: Option<KeyId>| Value::Text(id.map(|id| id.as_str().to_string()));
        row.set("rolled_from", id_text(r.rolled_from));
        row.set("rolled_to", id_text(r.rolled_to));
        let allowed = r.allowed_ips.as_ref().map(serde_json::to_string);
        let allowed = allowed.transpose().map_err(json("allowed_ips"))?;
        row.set("allowed_ips", Value::Text(allowed));
        row.set("not_before", time(r.not_before));
        row.set("exposed_at", time(r.exposed_at));
        let list = |v: &[String]| {
            (!v.is_empty())
                .then(|| serde_json::to_string(v))
                .transpose()
        };
        row.set("roles", Value::Text(list(&r.roles).map_err(json("roles"))?));
        let limits = (!r.limits.is_empty()).then(|| serde_json::to_string(&r.limits));
        let limits = limits.transpose().map_err(json("limits"))?;
        row.set("limits", Value::Text(limits));
        row.set("credits_spent", int(Some(to_sql(r.credits_spent))));
        Ok(row)
    }

    /// The record this row holds.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] naming the key and the column that cannot
    /// be read (never echoing a value: it may be the hash).
    pub(crate) fn into_record(self) -> Result<KeyRecord, StoreError> {
        let id_text = self.text("id").unwrap_or_default();
        let bad = |what: &str| corrupt(&id_text, what);
        let required = |name: &str| self.text(name).ok_or_else(|| bad(name));
        let key_id = |name: &str| {
            self.text(name)
                .map(|t| t.parse::<KeyId>().map_err(|_| bad(name)))
                .transpose()
        };
        let count = |name: &str| {
            self.int(name)
                .map(|n| u64::try_from(n).map_err(|_| bad(name)))
                .transpose()
        };
        let hash: [u8; 32] = match self.get("hash") {
            Value::Bytes(Some(b)) => b.as_slice().try_into().map_err(|_| bad("hash"))?,
            _ => return Err(bad("hash")),
        };
        let metadata = self.text("metadata").map(|m| serde_json::from_str(&m));
        let allowed_ips = self.text("allowed_ips").map(|a| serde_json::from_str(&a));
        let roles = self.text("roles").map(|a| serde_json::from_str(&a));
        let limits = self.text("limits").map(|a| serde_json::from_str(&a));
        Ok(KeyRecord {
            id: id_text.parse().map_err(|_| bad("id"))?,
            prefix: required("prefix")?.parse().map_err(|_| bad("prefix"))?,
            hash: KeyHash::from_bytes(hash),
            tenant: required("tenant")?,
            name: required("name")?,
            permissions: serde_json::from_str(&required("permissions")?)
                .map_err(|_| bad("permissions"))?,
            created_by: required("created_by")?,
            created_at: self.time("created_at").ok_or_else(|| bad("created_at"))?,
            expires_at: self.time("expires_at"),
            revoked_at: self.time("revoked_at"),
            last_used_at: self.time("last_used_at"),
            metadata: metadata.transpose().map_err(|_| bad("metadata"))?,
            version: count("version")?.ok_or_else(|| bad("version"))?,
            rate_limit: self.rate_limit().map_err(|()| bad("rate limit"))?,
            remaining: count("remaining")?,
            refill: match (count("refill_amount")?, count("refill_every_secs")?) {
                (None, None) => None,
                (Some(amount), Some(every_secs)) => Some(Refill { amount, every_secs }),
                _ => return Err(bad("refill")),
            },
            last_refill_at: self.time("last_refill_at"),
            inactivity_warning: self
                .mark("inactivity_deadline", "inactivity_before_secs")
                .map_err(|()| bad("inactivity warning"))?,
            expiry_warning: self
                .mark("expiry_deadline", "expiry_before_secs")
                .map_err(|()| bad("expiry warning"))?,
            rolled_from: key_id("rolled_from")?,
            rolled_to: key_id("rolled_to")?,
            allowed_ips: allowed_ips.transpose().map_err(|_| bad("allowed_ips"))?,
            not_before: self.time("not_before"),
            exposed_at: self.time("exposed_at"),
            roles: roles
                .transpose()
                .map_err(|_| bad("roles"))?
                .unwrap_or_default(),
            limits: limits
                .transpose()
                .map_err(|_| bad("limits"))?
                .unwrap_or_default(),
            credits_spent: count("credits_spent")?.unwrap_or(0),
        })
    }

    fn rate_limit(&self) -> Result<Option<RateLimit>, ()> {
        match (self.int("rate_limit_max"), self.int("rate_limit_per_ms")) {
            (None, None) => Ok(None),
            (Some(max), Some(per_ms)) => {
                let max = u32::try_from(max).map_err(|_| ())?;
                let per = chrono::Duration::try_milliseconds(per_ms).ok_or(())?;
                RateLimit::new(max, per).map(Some).map_err(|_| ())
            }
            _ => Err(()),
        }
    }

    fn mark(&self, deadline: &str, before: &str) -> Result<Option<WarningMark>, ()> {
        match (self.time(deadline), self.int(before)) {
            (None, None) => Ok(None),
            (Some(deadline), Some(before_secs)) => Ok(Some(WarningMark {
                deadline,
                before_secs,
            })),
            _ => Err(()),
        }
    }
}

/// Counts are `u64` in Rust and signed 64-bit in SQL; keyward caps them at
/// [`MAX_USES`](crate::MAX_USES), so saturating never changes a value it
/// wrote.
pub(crate) fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn corrupt(id: &str, what: &str) -> StoreError {
    // The id is public; never echo other column values (a hash).
    let id: String = id.chars().take(16).collect();
    StoreError::Corrupt(format!("key {id:?}: invalid {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_is_written_and_read_by_name() {
        let id = KeyId::random().expect("OS randomness");
        let token = crate::token::TokenFormat::default()
            .generate(id)
            .expect("OS randomness");
        let at = |s: i64| DateTime::from_timestamp(1_700_000_000 + s, 7_000).expect("time");
        let mark = |s| WarningMark {
            deadline: at(s),
            before_secs: 86_400,
        };
        let record = KeyRecord {
            id,
            prefix: token.display_prefix(),
            hash: KeyHash::of(token.expose_secret().as_bytes()),
            tenant: "agency/loc1".into(),
            name: "Zapier".into(),
            permissions: vec!["contacts:write".into()],
            created_by: "user_1".into(),
            created_at: at(0),
            expires_at: Some(at(9)),
            revoked_at: Some(at(3)),
            last_used_at: Some(at(2)),
            metadata: Some(serde_json::json!({"team": "ops"})),
            version: 7,
            rate_limit: Some(RateLimit::per_minute(60).expect("valid")),
            remaining: Some(40),
            refill: Some(Refill {
                amount: 50,
                every_secs: 3_600,
            }),
            last_refill_at: Some(at(1)),
            inactivity_warning: Some(mark(5)),
            expiry_warning: Some(mark(6)),
            rolled_from: Some(KeyId::random().expect("OS randomness")),
            rolled_to: Some(KeyId::random().expect("OS randomness")),
            allowed_ips: Some("10.0.0.0/8, ::1".parse().expect("list")),
            not_before: Some(at(4)),
            roles: vec!["support".into()],
            limits: vec![crate::limit::NamedLimit::new(
                "tokens",
                RateLimit::per_hour(1000).expect("valid"),
            )
            .expect("name")],
            credits_spent: 12,
            exposed_at: Some(at(8)),
        };
        let row = Row::from_record(&record).expect("encodes");
        for ((name, kind), value) in COLUMNS.iter().zip(row.0.iter()) {
            let matches = matches!(
                (kind, value),
                (Kind::Text | Kind::Json, Value::Text(_))
                    | (Kind::Bytes, Value::Bytes(_))
                    | (Kind::Int, Value::Int(_))
                    | (Kind::Time, Value::Time(_))
            );
            assert!(matches, "column {name} holds a value of another kind");
        }
        assert!(UPDATED.iter().all(|c| COLUMNS.iter().any(|(n, _)| n == c)));
        let back = row.into_record().expect("decodes");
        assert_eq!(back, record);
    }
}
