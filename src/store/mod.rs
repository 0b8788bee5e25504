//! For store implementors: the [`KeyStore`] trait, the [`KeyRecord`] a
//! store keeps, and the [conformance suite](conformance) every store must
//! pass. The stores keyward ships are at the crate root:
//! [`MemoryStore`](crate::MemoryStore), `SqliteStore` (feature `sqlite`)
//! and `PostgresStore` (feature `postgres`).
//!
//! A store does only what must be atomic: insert without overwriting,
//! conditional update, delete, forward-only last-used writes, and paged
//! reads. Every rule (who may do what, expiry, permissions) lives in
//! [`Keyward`](crate::Keyward), once, not in each store.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::token::KeyId;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;
pub(crate) mod memory;
mod outbox;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "metrics")]
pub(crate) mod timed;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::{AuditSettings, SqlAuditTrail};
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

pub use crate::key::KeyRecord;
pub use crate::token::KeyHash;
pub use outbox::{Delivery, DeliveryState, Outbox, OutboxCounts, Settlement, StoredEndpoint};
/// The sqlx version the SQL stores are built on, for building pools
/// (`SqlitePool`, `PgPool`) of the same version.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use sqlx;

/// Which keys a maintenance sweep must look at: see
/// [`KeyStore::scan_due`]. Every bound is inclusive; `None` selects nothing
/// by that rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepDue {
    /// The sweep's "now".
    pub now: DateTime<Utc>,
    /// Live keys (not revoked) expiring after `now` and at or before this
    /// instant: due an expiry warning.
    pub expiring_before: Option<DateTime<Utc>>,
    /// Active keys (not revoked, not expired at `now`) whose last use, or
    /// creation if never used, is at or before this instant: due an
    /// inactivity warning or deletion.
    pub idle_since: Option<DateTime<Utc>>,
    /// Revoked keys revoked at or before this instant, and unrevoked keys
    /// that expired at or before it: due to be purged.
    pub ended_before: Option<DateTime<Utc>>,
}

impl SweepDue {
    /// Whether `record` is due: the rule [`KeyStore::scan_due`] applies.
    pub fn matches(&self, r: &KeyRecord) -> bool {
        let live = r.revoked_at.is_none();
        let expiring = live
            && self
                .expiring_before
                .zip(r.expires_at)
                .is_some_and(|(before, e)| e > self.now && e <= before);
        let active = live && r.expires_at.is_none_or(|e| e > self.now);
        let idle = active
            && self
                .idle_since
                .is_some_and(|since| r.last_used_at.unwrap_or(r.created_at) <= since);
        let ended = self.ended_before.is_some_and(|before| match r.revoked_at {
            Some(revoked) => revoked <= before,
            None => r.expires_at.is_some_and(|e| e <= before),
        });
        expiring || idle || ended
    }
}

/// Told by a store when keys change, so that caches in front of it (the
/// verification cache of every [`Keyward`](crate::Keyward)) drop what they
/// hold. See [`KeyStore::subscribe`].
pub trait ChangeListener: Send + Sync + 'static {
    /// The key with this id was created, changed or deleted.
    fn changed(&self, id: &KeyId);
    /// Changes may have been missed (e.g. a notification channel dropped
    /// and reconnected): forget everything.
    fn reset(&self);
    /// Whether changes are being reported now: `false` while a
    /// notification channel is down (changes may be missed), `true` once
    /// it is back (after a [`reset`](Self::reset)). Caches serve nothing
    /// past its time limit while the feed is down. The default ignores it.
    fn feed(&self, live: bool) {
        let _ = live;
    }
}

/// The listeners of one store: a building block for [`KeyStore`]
/// implementations that report changes. Holds listeners weakly, so a
/// dropped [`Keyward`](crate::Keyward) unsubscribes itself.
pub struct Subscribers {
    listeners: Mutex<Vec<Weak<dyn ChangeListener>>>,
    /// Whether changes are being reported now (see
    /// [`ChangeListener::feed`]).
    live: std::sync::atomic::AtomicBool,
}

impl Default for Subscribers {
    /// No listeners; the feed live (a store that reports its own changes
    /// never misses one).
    fn default() -> Self {
        Self {
            listeners: Mutex::default(),
            live: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

impl std::fmt::Debug for Subscribers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribers")
            .field("listeners", &self.live().len())
            .finish()
    }
}

impl Subscribers {
    /// Adds a listener, and tells it whether the feed is live.
    pub fn add(&self, listener: Weak<dyn ChangeListener>) {
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|l| l.strong_count() > 0);
        if let Some(l) = listener.upgrade() {
            l.feed(self.live.load(std::sync::atomic::Ordering::Acquire));
        }
        listeners.push(listener);
    }

    /// Tells every live listener whether changes are being reported now.
    pub fn feed(&self, live: bool) {
        self.live.store(live, std::sync::atomic::Ordering::Release);
        for l in self.live() {
            l.feed(live);
        }
    }

    fn live(&self) -> Vec<Arc<dyn ChangeListener>> {
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.iter().filter_map(Weak::upgrade).collect()
    }

    /// Tells every live listener that `id` changed.
    pub fn changed(&self, id: &KeyId) {
        for l in self.live() {
            l.changed(id);
        }
    }

    /// Tells every live listener to forget everything.
    pub fn reset(&self) {
        for l in self.live() {
            l.reset();
        }
    }
}

/// A role defined at run time: a name and the permissions it bundles, as
/// written (see [`Keyward::set_role`](crate::Keyward::set_role)).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoleDefinition {
    /// The role's name.
    pub name: String,
    /// Its permissions, canonical names.
    pub permissions: Vec<String>,
}

/// A refill to apply before consuming a use: see
/// [`KeyStore::consume_credit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefillDue {
    /// `remaining` after the refill.
    pub amount: u64,
    /// Refill only if `last_refill_at` is at or before this instant (or
    /// unset).
    pub if_refilled_before: DateTime<Utc>,
    /// The new `last_refill_at` when refilled.
    pub now: DateTime<Utc>,
}

/// The result of [`KeyStore::consume_credit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credit {
    /// The key has no usage limit; nothing changed.
    Unlimited,
    /// The uses asked for were taken; this many are left.
    Consumed {
        /// Uses left after them: at most [`MAX_USES`](crate::MAX_USES)
        /// (keyward reads more as that).
        remaining: u64,
    },
    /// Fewer uses left than asked for; nothing taken.
    Exhausted,
    /// No such key.
    Missing,
}

/// Applies [`KeyStore::consume_credit`]'s rule to one record in memory:
/// for stores that lock a record and then decide in Rust.
pub fn apply_credit(record: &mut KeyRecord, cost: u64, refill: Option<RefillDue>) -> Credit {
    let Some(remaining) = record.remaining else {
        return Credit::Unlimited;
    };
    let mut remaining = remaining;
    // Only a key that has a refill now is refilled, whatever a caller
    // holding an older copy of it asks.
    if let Some(r) = refill.filter(|_| record.refill.is_some()) {
        if record
            .last_refill_at
            .is_none_or(|t| t <= r.if_refilled_before)
        {
            remaining = r.amount;
            record.last_refill_at = Some(r.now);
        }
    }
    // A key with no uses left is refused even at cost 0.
    let result = match remaining.checked_sub(cost).filter(|_| remaining > 0) {
        None => Credit::Exhausted,
        Some(left) => {
            remaining = left;
            record.credits_spent = record.credits_spent.saturating_add(cost);
            Credit::Consumed { remaining }
        }
    };
    record.remaining = Some(remaining);
    result
}

/// Applies [`KeyStore::adjust_credits`]'s rule to one record in memory.
pub fn apply_adjust(record: &mut KeyRecord, delta: i64) -> Credit {
    let Some(remaining) = record.remaining else {
        return Credit::Unlimited;
    };
    let taken = delta.unsigned_abs();
    let next = if delta < 0 {
        match remaining.checked_sub(taken) {
            Some(n) => n,
            None => return Credit::Exhausted,
        }
    } else {
        remaining.saturating_add(taken).min(crate::key::MAX_USES)
    };
    record.remaining = Some(next);
    Credit::Consumed { remaining: next }
}

/// Copies the fields [`KeyStore::update`] writes from `from` into `into`
/// and bumps the version: for stores that update a record in memory.
pub fn apply_update(into: &mut KeyRecord, from: &KeyRecord) -> u64 {
    into.name.clone_from(&from.name);
    into.permissions.clone_from(&from.permissions);
    into.expires_at = from.expires_at;
    into.revoked_at = from.revoked_at;
    into.metadata.clone_from(&from.metadata);
    into.rate_limit = from.rate_limit;
    into.refill = from.refill;
    into.inactivity_warning = from.inactivity_warning;
    into.expiry_warning = from.expiry_warning;
    into.rolled_to = from.rolled_to;
    into.allowed_ips.clone_from(&from.allowed_ips);
    into.not_before = from.not_before;
    into.roles.clone_from(&from.roles);
    into.limits.clone_from(&from.limits);
    into.exposed_at = from.exposed_at;
    into.version += 1;
    into.version
}

/// Where keys live. Implement it to keep keys in your own database; check
/// an implementation with [`conformance::run`] (feature `conformance`).
///
/// Records are ordered by [`KeyId`] (byte order of the id string) wherever
/// a method pages.
///
/// A complete, if simple, implementation:
///
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::Mutex;
/// use async_trait::async_trait;
/// use chrono::{DateTime, Utc};
/// use keyward::{KeyId, StoreError};
/// use keyward::store::{
///     apply_adjust, apply_credit, apply_update, Credit, KeyRecord, KeyStore, RefillDue,
///     RoleDefinition,
/// };
///
/// #[derive(Debug, Default)]
/// struct MapStore {
///     keys: Mutex<BTreeMap<KeyId, KeyRecord>>,
///     roles: Mutex<BTreeMap<String, RoleDefinition>>,
/// }
///
/// impl MapStore {
///     fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<KeyId, KeyRecord>> {
///         self.keys.lock().unwrap_or_else(|e| e.into_inner())
///     }
/// }
///
/// #[async_trait]
/// impl KeyStore for MapStore {
///     async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
///         let mut map = self.map();
///         if map.contains_key(&record.id) {
///             return Err(StoreError::Duplicate(record.id));
///         }
///         let mut stored = record.clone();
///         stored.version = 0;
///         map.insert(record.id, stored);
///         Ok(())
///     }
///     async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
///         Ok(self.map().get(id).cloned())
///     }
///     async fn update(&self, record: &KeyRecord) -> Result<u64, StoreError> {
///         let mut map = self.map();
///         let stored = map.get_mut(&record.id).ok_or(StoreError::NotFound(record.id))?;
///         if stored.version != record.version {
///             return Err(StoreError::Conflict(record.id));
///         }
///         Ok(apply_update(stored, record))
///     }
///     async fn delete(&self, id: &KeyId) -> Result<bool, StoreError> {
///         Ok(self.map().remove(id).is_some())
///     }
///     async fn list_by_tenant(&self, tenant: &str, after: Option<&KeyId>, limit: usize)
///         -> Result<Vec<KeyRecord>, StoreError> {
///         Ok(self.map().values()
///             .filter(|r| r.tenant == tenant && after.map_or(true, |a| r.id > *a))
///             .take(limit).cloned().collect())
///     }
///     async fn scan(&self, after: Option<&KeyId>, limit: usize)
///         -> Result<Vec<KeyRecord>, StoreError> {
///         Ok(self.map().values()
///             .filter(|r| after.map_or(true, |a| r.id > *a))
///             .take(limit).cloned().collect())
///     }
///     async fn record_last_used(&self, batch: &[(KeyId, DateTime<Utc>)]) -> Result<(), StoreError> {
///         let mut map = self.map();
///         for (id, at) in batch {
///             if let Some(r) = map.get_mut(id) {
///                 r.last_used_at = r.last_used_at.max(Some(*at));
///             }
///         }
///         Ok(())
///     }
///     async fn consume_credit(&self, id: &KeyId, cost: u64, refill: Option<RefillDue>)
///         -> Result<Credit, StoreError> {
///         Ok(self.map().get_mut(id).map_or(Credit::Missing, |r| apply_credit(r, cost, refill)))
///     }
///     async fn adjust_credits(&self, id: &KeyId, delta: i64) -> Result<Credit, StoreError> {
///         Ok(self.map().get_mut(id).map_or(Credit::Missing, |r| apply_adjust(r, delta)))
///     }
///     async fn roles(&self) -> Result<Vec<RoleDefinition>, StoreError> {
///         Ok(self.roles.lock().unwrap().values().cloned().collect())
///     }
///     async fn put_role(&self, role: &RoleDefinition) -> Result<(), StoreError> {
///         self.roles.lock().unwrap().insert(role.name.clone(), role.clone());
///         Ok(()) // no subscribers: this store reports no changes
///     }
/// }
/// ```
#[async_trait]
pub trait KeyStore: std::fmt::Debug + Send + Sync + 'static {
    /// Stores a new record with `version` 0.
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] if a record with the same id exists; the
    /// existing record is left as it was.
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError>;

    /// Stores each record whose id is free (`version` 0), as one batch
    /// where the store can: what [`Keyward::import`](crate::Keyward::import)
    /// writes with. For each record, in order, `None` if it was stored, or
    /// the record that holds its id (which is left as it was). The
    /// records' ids are distinct.
    ///
    /// The default calls [`insert`](Self::insert) and
    /// [`get`](Self::get) for each; the SQL stores write a batch in one
    /// statement.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`];
    /// [`StoreError::Conflict`] when an id is taken and freed again three
    /// times over. Records before the failure may have been stored.
    async fn insert_many(
        &self,
        records: &[KeyRecord],
    ) -> Result<Vec<Option<KeyRecord>>, StoreError> {
        let mut placed = Vec::with_capacity(records.len());
        for record in records {
            placed.push(insert_or_holder(self, record).await?);
        }
        Ok(placed)
    }

    /// The record with this id, if any.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// Replaces the mutable fields (`name`, `permissions`, `expires_at`,
    /// `revoked_at`, `metadata`, `rate_limit`, `refill`,
    /// `inactivity_warning`, `expiry_warning`) of the stored record, but
    /// only if its `version` still equals `record.version`; then bumps the
    /// version and returns the new one ([`apply_update`] does exactly
    /// this). Must not change `last_used_at` (owned by
    /// [`KeyStore::record_last_used`]), `remaining` and `last_refill_at`
    /// (owned by [`KeyStore::consume_credit`]), nor the immutable fields.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the version differs (a concurrent change
    /// won), [`StoreError::NotFound`] if the record is gone.
    async fn update(&self, record: &KeyRecord) -> Result<u64, StoreError>;

    /// Deletes the record; `true` if it existed.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn delete(&self, id: &KeyId) -> Result<bool, StoreError>;

    /// Up to `limit` records of `tenant` with ids greater than `after`, in
    /// id order.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    async fn list_by_tenant(
        &self,
        tenant: &str,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError>;

    /// Up to `limit` records of any tenant with ids greater than `after`, in
    /// id order: the paged walk maintenance passes make.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    async fn scan(&self, after: Option<&KeyId>, limit: usize)
        -> Result<Vec<KeyRecord>, StoreError>;

    /// Up to `limit` ids of any tenant greater than `after`, in id order:
    /// the walk that loads the set of ids known to exist (see
    /// [`KeywardBuilder::unknown_id_reads`](crate::KeywardBuilder::unknown_id_reads)).
    ///
    /// The default takes them from [`KeyStore::scan`], 5,000 records at a
    /// time; a store that can read the ids alone should, since a load
    /// walks every key.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    async fn scan_ids(
        &self,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyId>, StoreError> {
        const RECORDS: usize = 5_000;
        let mut ids: Vec<KeyId> = Vec::new();
        let mut from = after.copied();
        while ids.len() < limit {
            let want = RECORDS.min(limit - ids.len());
            let page = self.scan(from.as_ref(), want).await?;
            ids.extend(page.iter().map(|r| r.id));
            match page.last() {
                Some(last) if page.len() == want => from = Some(last.id),
                _ => break,
            }
        }
        Ok(ids)
    }

    /// Up to `limit` records matching `due` ([`SweepDue::matches`]) with
    /// ids greater than `after`, in id order: the keys a maintenance sweep
    /// must look at, so that it need not read every key.
    ///
    /// The default walks [`KeyStore::scan`] and filters; stores with
    /// indexes on expiry, last activity and revocation should answer it
    /// with one query.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Corrupt`].
    async fn scan_due(
        &self,
        due: &SweepDue,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = after.copied();
        let page = limit.clamp(1, 500);
        while out.len() < limit {
            let batch = self.scan(cursor.as_ref(), page).await?;
            let full = batch.len() == page;
            cursor = batch.last().map(|r| r.id);
            out.extend(batch.into_iter().filter(|r| due.matches(r)));
            if !full {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Moves `last_used_at` of each listed key forward to the given instant
    /// (never backward), in one batch. Unknown ids are skipped. Does not
    /// bump `version`, so it never conflicts with management changes.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn record_last_used(&self, batch: &[(KeyId, DateTime<Utc>)]) -> Result<(), StoreError>;

    /// Takes `cost` uses of a usage-limited key, atomically: first, if
    /// `refill` is given, the stored key has a refill, and it was last
    /// refilled at or before
    /// `refill.if_refilled_before` (or never), sets `remaining` to
    /// `refill.amount` and `last_refill_at` to `refill.now`; then takes
    /// `cost` uses if at least that many are left, and at least one (and
    /// adds `cost` to `credits_spent`), or nothing ([`Credit::Exhausted`]:
    /// a key with no use left is refused even at cost 0). Concurrent
    /// calls never take more uses than there are ([`apply_credit`] is the
    /// rule for one locked record). Does not bump `version`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn consume_credit(
        &self,
        id: &KeyId,
        cost: u64,
        refill: Option<RefillDue>,
    ) -> Result<Credit, StoreError>;

    /// Moves many uses of a usage-limited key at once, atomically, without
    /// a refill: a negative `delta` takes `-delta` uses only if at least
    /// that many are left ([`Credit::Exhausted`] and no change otherwise);
    /// a positive one gives uses back, capped at [`MAX_USES`](crate::key::MAX_USES).
    /// Answers [`Credit::Consumed`] with the uses now left,
    /// [`Credit::Unlimited`] (no change) for a key without a usage limit,
    /// [`Credit::Missing`] for no such key. [`apply_adjust`] is the rule
    /// for one locked record. Does not bump `version`.
    ///
    /// keyward uses it to split uses, never copy them: a key created by a
    /// usage-limited key takes its uses from its creator's, and a roll
    /// moves the old key's uses to the new one.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn adjust_credits(&self, id: &KeyId, delta: i64) -> Result<Credit, StoreError>;

    /// Every role defined at run time, by name.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn roles(&self) -> Result<Vec<RoleDefinition>, StoreError>;

    /// Defines role `role.name`, or redefines it, and then tells every
    /// subscriber to forget everything ([`ChangeListener::reset`]): any
    /// cached key may hold the role. A store shared by several processes
    /// tells theirs too, if it can (PostgreSQL does, through its change
    /// feed).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn put_role(&self, role: &RoleDefinition) -> Result<(), StoreError>;

    /// Asks the store to tell `listener` whenever a key changes, including
    /// changes made by other processes if the store can see them; returns
    /// whether it will. The default reports nothing (returns `false`);
    /// caches in front of such a store rely on their time limit alone.
    ///
    /// [`MemoryStore`](crate::MemoryStore) and `SqliteStore` report the changes
    /// made through them; `PostgresStore` also reports
    /// every other instance's changes, through `LISTEN/NOTIFY`.
    fn subscribe(&self, listener: Weak<dyn ChangeListener>) -> bool {
        let _ = listener;
        false
    }

    /// Whether [`subscribe`](Self::subscribe)'s reports include every
    /// writer's changes, not only those made through this store value:
    /// then a cache may answer from an entry past its time limit while it
    /// reads the key again in the background (stale-while-revalidate),
    /// since a change would have dropped the entry. `PostgresStore` (its
    /// triggers see every writer) and [`MemoryStore`](crate::MemoryStore)
    /// (one process) say yes; `SqliteStore` says no (another process, such
    /// as the command-line tool, may write the file). The default says no.
    fn feed_sees_every_writer(&self) -> bool {
        false
    }

    /// The store's webhook outbox, if it keeps one. The default keeps
    /// none: events are not recorded, and endpoints cannot be made.
    /// Every store keyward ships keeps one.
    fn outbox(&self) -> Option<&dyn Outbox> {
        None
    }

    /// [`insert`](Self::insert), and, if the record was stored, the
    /// `deliveries` it causes, in one transaction: both or neither.
    ///
    /// The default inserts, then enqueues: a crash between the two loses
    /// the deliveries. The stores keyward ships write both at once.
    ///
    /// # Errors
    /// As [`insert`](Self::insert); [`StoreError::Unavailable`] if there
    /// are deliveries and no [`outbox`](Self::outbox).
    async fn insert_with(
        &self,
        record: &KeyRecord,
        deliveries: &[Delivery],
    ) -> Result<(), StoreError> {
        self.insert(record).await?;
        enqueue_after(self, deliveries).await
    }

    /// [`update`](Self::update), and, if the record was written, the
    /// `deliveries` it causes, in one transaction (see
    /// [`insert_with`](Self::insert_with)).
    ///
    /// # Errors
    /// As [`update`](Self::update).
    async fn update_with(
        &self,
        record: &KeyRecord,
        deliveries: &[Delivery],
    ) -> Result<u64, StoreError> {
        let version = self.update(record).await?;
        enqueue_after(self, deliveries).await?;
        Ok(version)
    }

    /// [`delete`](Self::delete), and, if the record was there, the
    /// `deliveries` it causes, in one transaction (see
    /// [`insert_with`](Self::insert_with)).
    ///
    /// # Errors
    /// As [`delete`](Self::delete).
    async fn delete_with(&self, id: &KeyId, deliveries: &[Delivery]) -> Result<bool, StoreError> {
        let deleted = self.delete(id).await?;
        if deleted {
            enqueue_after(self, deliveries).await?;
        }
        Ok(deleted)
    }
}

/// The default's second half of a write with deliveries.
async fn enqueue_after<S: KeyStore + ?Sized>(
    store: &S,
    deliveries: &[Delivery],
) -> Result<(), StoreError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    match store.outbox() {
        Some(outbox) => outbox.enqueue(deliveries).await,
        None => Err(StoreError::Unavailable {
            message: "this store keeps no webhook outbox".into(),
            source: None,
        }),
    }
}

/// Inserts `record`, or reads the record that holds its id; tries again
/// (at most three times) when the holder is deleted in between.
pub(crate) async fn insert_or_holder<S: KeyStore + ?Sized>(
    store: &S,
    record: &KeyRecord,
) -> Result<Option<KeyRecord>, StoreError> {
    for _ in 0..3 {
        match store.insert(record).await {
            Ok(()) => return Ok(None),
            Err(StoreError::Duplicate(_)) => {
                if let Some(held) = store.get(&record.id).await? {
                    return Ok(Some(held));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict(record.id))
}

/// Implements [`KeyStore`] for `$ty` by handing every call to the store
/// `$target` names (with `$this` bound to `self`): for smart pointers,
/// and for the SQL stores, whose work is done by their engine.
macro_rules! forward_store {
    ([$($generics:tt)*] $ty:ty, $this:ident => $target:expr) => {
        #[async_trait::async_trait]
        impl<$($generics)*> $crate::store::KeyStore for $ty {
            async fn insert(
                &self,
                record: &$crate::key::KeyRecord,
            ) -> Result<(), $crate::error::StoreError> {
                let $this = self;
                ($target).insert(record).await
            }
            async fn insert_many(
                &self,
                records: &[$crate::key::KeyRecord],
            ) -> Result<Vec<Option<$crate::key::KeyRecord>>, $crate::error::StoreError> {
                let $this = self;
                ($target).insert_many(records).await
            }
            async fn get(
                &self,
                id: &$crate::token::KeyId,
            ) -> Result<Option<$crate::key::KeyRecord>, $crate::error::StoreError> {
                let $this = self;
                ($target).get(id).await
            }
            async fn update(&self, record: &$crate::key::KeyRecord) -> Result<u64, $crate::error::StoreError> {
                let $this = self;
                ($target).update(record).await
            }
            async fn delete(&self, id: &$crate::token::KeyId) -> Result<bool, $crate::error::StoreError> {
                let $this = self;
                ($target).delete(id).await
            }
            async fn list_by_tenant(
                &self,
                tenant: &str,
                after: Option<&$crate::token::KeyId>,
                limit: usize,
            ) -> Result<Vec<$crate::key::KeyRecord>, $crate::error::StoreError> {
                let $this = self;
                ($target).list_by_tenant(tenant, after, limit).await
            }
            async fn scan(
                &self,
                after: Option<&$crate::token::KeyId>,
                limit: usize,
            ) -> Result<Vec<$crate::key::KeyRecord>, $crate::error::StoreError> {
                let $this = self;
                ($target).scan(after, limit).await
            }
            async fn scan_ids(
                &self,
                after: Option<&$crate::token::KeyId>,
                limit: usize,
            ) -> Result<Vec<$crate::token::KeyId>, $crate::error::StoreError> {
                let $this = self;
                ($target).scan_ids(after, limit).await
            }
            async fn scan_due(
                &self,
                due: &$crate::store::SweepDue,
                after: Option<&$crate::token::KeyId>,
                limit: usize,
            ) -> Result<Vec<$crate::key::KeyRecord>, $crate::error::StoreError> {
                let $this = self;
                ($target).scan_due(due, after, limit).await
            }
            async fn record_last_used(
                &self,
                batch: &[($crate::token::KeyId, chrono::DateTime<chrono::Utc>)],
            ) -> Result<(), $crate::error::StoreError> {
                let $this = self;
                ($target).record_last_used(batch).await
            }
            async fn consume_credit(
                &self,
                id: &$crate::token::KeyId,
                cost: u64,
                refill: Option<$crate::store::RefillDue>,
            ) -> Result<$crate::store::Credit, $crate::error::StoreError> {
                let $this = self;
                ($target).consume_credit(id, cost, refill).await
            }
            async fn roles(
                &self,
            ) -> Result<Vec<$crate::store::RoleDefinition>, $crate::error::StoreError> {
                let $this = self;
                ($target).roles().await
            }
            async fn put_role(
                &self,
                role: &$crate::store::RoleDefinition,
            ) -> Result<(), $crate::error::StoreError> {
                let $this = self;
                ($target).put_role(role).await
            }
            async fn adjust_credits(
                &self,
                id: &$crate::token::KeyId,
                delta: i64,
            ) -> Result<$crate::store::Credit, $crate::error::StoreError> {
                let $this = self;
                ($target).adjust_credits(id, delta).await
            }
            fn subscribe(
                &self,
                listener: std::sync::Weak<dyn $crate::store::ChangeListener>,
            ) -> bool {
                let $this = self;
                ($target).subscribe(listener)
            }
            fn outbox(&self) -> Option<&dyn $crate::store::Outbox> {
                let $this = self;
                ($target).outbox()
            }
            fn feed_sees_every_writer(&self) -> bool {
                let $this = self;
                ($target).feed_sees_every_writer()
            }
            async fn insert_with(
                &self,
                record: &$crate::key::KeyRecord,
                deliveries: &[$crate::store::Delivery],
            ) -> Result<(), $crate::error::StoreError> {
                let $this = self;
                ($target).insert_with(record, deliveries).await
            }
            async fn update_with(
                &self,
                record: &$crate::key::KeyRecord,
                deliveries: &[$crate::store::Delivery],
            ) -> Result<u64, $crate::error::StoreError> {
                let $this = self;
                ($target).update_with(record, deliveries).await
            }
            async fn delete_with(
                &self,
                id: &$crate::token::KeyId,
                deliveries: &[$crate::store::Delivery],
            ) -> Result<bool, $crate::error::StoreError> {
                let $this = self;
                ($target).delete_with(id, deliveries).await
            }
        }
    };
}
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use forward_store;

forward_store!([T: KeyStore + ?Sized] Arc<T>, this => &**this);
forward_store!([T: KeyStore + ?Sized] Box<T>, this => &**this);
