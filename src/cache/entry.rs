//! [`CachedKey`]: what a verify needs of one key.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::access::IpAllowlist;
use crate::key::KeyStatus;
use crate::limit::{Costs, KeySlot, NamedSlot, RateLimit, Subject, Tenant};
use crate::permission::PermissionSet;
use crate::policy::Refill;
use crate::token::{DisplayPrefix, KeyHash, KeyId};

/// What a verify needs of one key, with permissions already parsed and
/// times in microseconds. Per-key limiter state lives here too: one
/// place, one cache miss. `repr(C)`: what an accepting verify reads (the
/// lookup, the checks, the built-in limiter, the permissions) comes
/// first, together, so that an accept touches as few cache lines of the
/// entry as it can (at a million keys each is a miss); what only a
/// refusal, a host's limiter or a caller reads comes last.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct CachedKey {
    pub(crate) id: KeyId,
    /// When it was read from the store, in clock microseconds.
    pub(super) loaded_at: i64,
    pub(crate) hash: KeyHash,
    /// `i64::MAX`: never.
    pub(crate) expires_us: i64,
    /// Latest use known here, in microseconds since the epoch
    /// (`i64::MIN`: none): the stored `last_used_at` at load, moved forward
    /// by this instance's verifies.
    pub(crate) last_used_us: AtomicI64,
    pub(crate) created_us: i64,
    pub(crate) revoked: bool,
    /// Usage-limited: every verify asks the store for a credit.
    pub(crate) metered: bool,
    /// Held in the table, so `slot` holds the key's limiter state;
    /// otherwise the stash does.
    pub(super) cached: bool,
    /// A background read of this key is under way (stale-while-revalidate:
    /// one per entry).
    pub(crate) refreshing: AtomicBool,
    /// What only some keys have (a refill, a successor, access rules):
    /// boxed, and absent for most keys, whose verify reads only that it
    /// is absent.
    cold: Option<Box<Cold>>,
    pub(crate) tenant: Arc<Tenant>,
    /// The key's rate limit (the instance's default if the key has none)
    /// as GCRA parameters, and its state: read by every verify.
    pub(crate) slot: KeySlot,
    pub(crate) permissions: PermissionSet,
    /// The same rate limit as written, for a host's limiter.
    pub(crate) limit: Option<RateLimit>,
    pub(crate) name: Box<str>,
    pub(crate) prefix: DisplayPrefix,
}

/// The rarely set part of a [`CachedKey`].
#[derive(Debug)]
struct Cold {
    refill: Option<Refill>,
    /// The key that replaced this one by a roll: a usage-limited key in
    /// its grace period draws on its successor's uses.
    rolled_to: Option<KeyId>,
    /// `i64::MIN`: no `not_before`.
    not_before_us: i64,
    /// Where the key may be used from, if it is restricted.
    allowed_ips: Option<IpAllowlist>,
    /// The key's named limits (state in [`Limits`](crate::limit::Limits)).
    named: Box<[NamedSlot]>,
}

impl Cold {
    /// The rarely set part of `record`, if it has any.
    fn of(record: &crate::key::KeyRecord) -> Option<Self> {
        let any = record.refill.is_some()
            || record.rolled_to.is_some()
            || record.not_before.is_some()
            || record.allowed_ips.is_some()
            || !record.limits.is_empty();
        any.then(|| Self {
            refill: record.refill,
            rolled_to: record.rolled_to,
            not_before_us: record.not_before.map_or(i64::MIN, |t| t.timestamp_micros()),
            allowed_ips: record.allowed_ips.clone(),
            named: NamedSlot::of(&record.limits),
        })
    }
}

impl CachedKey {
    pub(crate) fn new(
        record: &crate::key::KeyRecord,
        permissions: PermissionSet,
        tenant: Arc<Tenant>,
        default_limit: Option<RateLimit>,
    ) -> Self {
        let limit = record.rate_limit.or(default_limit);
        Self {
            hash: record.hash,
            id: record.id,
            slot: KeySlot::new(limit),
            last_used_us: AtomicI64::new(
                record
                    .last_used_at
                    .map_or(i64::MIN, |u| u.timestamp_micros()),
            ),
            expires_us: record.expires_at.map_or(i64::MAX, |e| e.timestamp_micros()),
            created_us: record.created_at.timestamp_micros(),
            loaded_at: 0,
            revoked: record.revoked_at.is_some(),
            metered: record.remaining.is_some() || record.refill.is_some(),
            cached: false,
            tenant,
            permissions,
            name: record.name.as_str().into(),
            limit,
            prefix: record.prefix,
            cold: Cold::of(record).map(Box::new),
            refreshing: AtomicBool::new(false),
        }
    }

    /// The entry of empty table slots.
    pub(super) fn empty() -> Self {
        let catalog = crate::permission::Catalog::empty();
        Self {
            hash: KeyHash::from_bytes([0; 32]),
            id: KeyId::NONE,
            slot: KeySlot::new(None),
            limit: None,
            last_used_us: AtomicI64::new(i64::MIN),
            expires_us: i64::MIN,
            created_us: 0,
            loaded_at: i64::MIN,
            revoked: true,
            metered: false,
            cached: false,
            tenant: Arc::new(Tenant::new("", None)),
            permissions: catalog.none(),
            name: "".into(),
            prefix: DisplayPrefix::default(),
            cold: None,
            refreshing: AtomicBool::new(false),
        }
    }

    /// What a request by this key, for `acting_for` at `now_us`, is
    /// counted against.
    #[inline]
    pub(crate) fn subject<'a>(
        &'a self,
        acting_for: Option<&'a str>,
        now_us: i64,
        costs: Costs<'a>,
    ) -> Subject<'a> {
        Subject {
            id: self.id,
            slot: &self.slot,
            limit: &self.limit,
            in_cache: self.cached,
            tenant: &self.tenant,
            acting_for,
            now_us,
            named: self.named(),
            costs,
        }
    }

    /// Before this instant (microseconds) the key is refused; `i64::MIN`:
    /// no such rule.
    #[inline]
    pub(crate) fn not_before_us(&self) -> i64 {
        self.cold.as_ref().map_or(i64::MIN, |c| c.not_before_us)
    }

    /// Where the key may be used from, if it is restricted.
    #[inline]
    pub(crate) fn allowed_ips(&self) -> Option<&IpAllowlist> {
        self.cold.as_ref()?.allowed_ips.as_ref()
    }

    /// The key's named limits.
    #[inline]
    pub(crate) fn named(&self) -> &[NamedSlot] {
        self.cold.as_ref().map_or(&[], |c| &c.named)
    }

    /// How a usage-limited key refills, if it does.
    pub(crate) fn refill(&self) -> Option<&Refill> {
        self.cold.as_ref()?.refill.as_ref()
    }

    /// The key that replaced this one by a roll, if any.
    pub(crate) fn rolled_to(&self) -> Option<KeyId> {
        self.cold.as_ref()?.rolled_to
    }

    pub(crate) fn status(&self, now_us: i64) -> KeyStatus {
        if self.revoked {
            KeyStatus::Revoked
        } else if self.expires_us <= now_us {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }

    /// When the key expires, if ever.
    pub(crate) fn expires_at(&self) -> Option<DateTime<Utc>> {
        (self.expires_us != i64::MAX)
            .then(|| DateTime::from_timestamp_micros(self.expires_us))
            .flatten()
    }

    /// When it was read from the store, in clock microseconds.
    pub(crate) fn loaded_at_us(&self) -> i64 {
        self.loaded_at
    }

    /// The latest use known here, or the creation if never used (or the
    /// `not_before`, if later): where the inactivity period starts, in
    /// microseconds.
    pub(crate) fn last_active_us(&self) -> i64 {
        self.last_used_us
            .load(Ordering::Relaxed)
            .max(self.created_us)
            .max(self.not_before_us())
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    /// Where each field an accepting verify reads ends, in bytes from the
    /// entry's start.
    fn hot_ends() -> [usize; 14] {
        macro_rules! end {
            ($field:ident, $ty:ty) => {
                offset_of!(CachedKey, $field) + size_of::<$ty>()
            };
        }
        [
            end!(id, KeyId),
            end!(loaded_at, i64),
            end!(hash, KeyHash),
            end!(expires_us, i64),
            end!(last_used_us, AtomicI64),
            end!(created_us, i64),
            end!(revoked, bool),
            end!(metered, bool),
            end!(cached, bool),
            end!(refreshing, AtomicBool),
            end!(cold, Option<Box<Cold>>),
            end!(tenant, Arc<Tenant>),
            end!(slot, KeySlot),
            end!(permissions, PermissionSet),
        ]
    }

    /// Everything an accepting verify reads lies in the first 160 bytes,
    /// before anything it does not read: with the `Arc`'s two counts in
    /// front, three cache lines, or four. The `cold` pointer and the
    /// `refreshing` flag once sat at the end, past the name.
    #[test]
    fn what_a_verify_reads_comes_first() {
        let hot_end = hot_ends().into_iter().max().unwrap_or(usize::MAX);
        assert!(hot_end <= 160, "hot fields end at {hot_end}");
        for tail in [
            offset_of!(CachedKey, limit),
            offset_of!(CachedKey, name),
            offset_of!(CachedKey, prefix),
        ] {
            assert!(tail >= hot_end, "a field no accept reads at {tail}");
        }
    }

    /// 216 bytes: with the `Arc`'s counts, 232 requested per key, which
    /// keeps a cached key (table slots included) under 256 bytes.
    #[test]
    fn an_entry_is_216_bytes() {
        assert_eq!(size_of::<CachedKey>(), 216);
    }
}
