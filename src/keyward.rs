//! [`Keyward`]: issues, verifies and manages keys over a [`KeyStore`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};

use crate::audit::{AuditAction, AuditEvent, AuditOutcome, AuditSink, TracingAuditSink};
use crate::clock::{Clock, SystemClock};
use crate::error::{ConfigError, KeyError, StoreError, VerifyError};
use crate::key::{
    Actor, Expiry, Grant, IssuedKey, KeyInfo, KeyRecord, KeyStatus, NewKey, Verified,
};
use crate::permission::{Catalog, PermissionSet};
use crate::store::KeyStore;
use crate::token::{DisplayPrefix, KeyHash, KeyId, TokenFormat};

/// Longest key name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 100;
/// Largest metadata, in bytes of compact JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// How many times a management call re-reads and retries after losing a
/// race with a concurrent change.
const UPDATE_ATTEMPTS: usize = 8;
/// Records per page when a call walks the store.
const PAGE: usize = 500;
/// Pending last-used entries that force a flush regardless of time.
const MAX_PENDING: usize = 4096;

/// Builds a [`Keyward`]. Made by [`Keyward::builder`]; every setting
/// documents its default.
#[must_use]
pub struct KeywardBuilder {
    store: Arc<dyn KeyStore>,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    prefix: String,
    audit: Arc<dyn AuditSink>,
    last_used_interval: Duration,
}

impl fmt::Debug for KeywardBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeywardBuilder")
            .field("store", &self.store)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl KeywardBuilder {
    /// The clock every time rule reads. Defaults to [`SystemClock`]; tests
    /// use a [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The type prefix of issued tokens: 1–10 ASCII letters and digits.
    /// Defaults to `sk`. Only tokens with this prefix verify.
    pub fn token_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Where audit events go. Defaults to [`TracingAuditSink`].
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Arc::new(sink);
        self
    }

    /// The least time between two writes of one key's "last used" instant:
    /// successful verifications in between only update memory. Defaults to
    /// one minute; must be positive.
    pub fn last_used_interval(mut self, interval: Duration) -> Self {
        self.last_used_interval = interval;
        self
    }

    /// Checks the settings and builds.
    ///
    /// # Errors
    /// [`ConfigError`] for an invalid token prefix or a non-positive
    /// interval.
    pub fn build(self) -> Result<Keyward, ConfigError> {
        let format = TokenFormat::new(&self.prefix)?;
        if self.last_used_interval <= Duration::zero() {
            return Err(ConfigError::Invalid {
                setting: "last_used_interval",
                reason: "must be positive",
            });
        }
        Ok(Keyward {
            inner: Arc::new(Inner {
                store: self.store,
                catalog: self.catalog,
                clock: self.clock,
                format,
                audit: self.audit,
                last_used: LastUsed {
                    interval: self.last_used_interval,
                    state: Mutex::new(Pending {
                        entries: HashMap::new(),
                        last_flush: None,
                    }),
                },
            }),
        })
    }
}

/// Issues, verifies and manages API keys. Cheap to clone (shared); build
/// one per process with [`Keyward::builder`].
#[derive(Clone)]
pub struct Keyward {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn KeyStore>,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    format: TokenFormat,
    audit: Arc<dyn AuditSink>,
    last_used: LastUsed,
}

impl fmt::Debug for Keyward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyward")
            .field("store", &self.inner.store)
            .field("catalog", &self.inner.catalog)
            .field("format", &self.inner.format)
            .finish_non_exhaustive()
    }
}

/// Compared against when the id is unknown, so that an unknown id and a
/// wrong secret cost the same hash comparison.
const DECOY: KeyHash = KeyHash::from_bytes([0x5a; 32]);

impl Keyward {
    /// Starts building over `store` with the permissions of `catalog`.
    pub fn builder(store: impl KeyStore, catalog: Catalog) -> KeywardBuilder {
        KeywardBuilder {
            store: Arc::new(store),
            catalog,
            clock: Arc::new(SystemClock),
            prefix: "sk".into(),
            audit: Arc::new(TracingAuditSink),
            last_used_interval: Duration::minutes(1),
        }
    }

    /// The permission catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The token format (type prefix) of this instance.
    pub fn token_format(&self) -> &TokenFormat {
        &self.inner.format
    }

    /// Checks a presented token: shape and checksum (no store access if
    /// wrong), then the stored hash in constant time, then status.
    ///
    /// # Errors
    /// [`VerifyError::Malformed`], [`VerifyError::Invalid`] (unknown key
    /// or wrong secret, indistinguishable), then, only for the right
    /// secret, [`VerifyError::Revoked`] or [`VerifyError::Expired`];
    /// [`VerifyError::Store`] when the store cannot be asked.
    pub async fn verify(&self, token: &str) -> Result<Verified, VerifyError> {
        let inner = &*self.inner;
        let Ok(parsed) = inner.format.parse(token) else {
            self.audit_verify(None, "malformed", None);
            return Err(VerifyError::Malformed);
        };
        let id = parsed.id();
        let prefix = parsed.display_prefix();
        let hash = parsed.hash();
        let record = match inner.store.get(&id).await {
            Ok(r) => r,
            Err(e) => {
                self.audit_verify(Some((id, prefix)), "store_unavailable", None);
                return Err(VerifyError::Store(e));
            }
        };
        let matches = match &record {
            Some(r) => r.hash.ct_eq(&hash),
            None => {
                let _ = DECOY.ct_eq(&hash);
                false
            }
        };
        let record = match record {
            Some(r) if matches => r,
            _ => {
                self.audit_verify(Some((id, prefix)), "invalid", None);
                return Err(VerifyError::Invalid);
            }
        };
        let now = inner.clock.now();
        match KeyStatus::of(&record, now) {
            KeyStatus::Active => {}
            KeyStatus::Revoked => {
                self.audit_verify(Some((id, prefix)), "revoked", Some(&record.tenant));
                return Err(VerifyError::Revoked);
            }
            KeyStatus::Expired => {
                self.audit_verify(Some((id, prefix)), "expired", Some(&record.tenant));
                return Err(VerifyError::Expired);
            }
        }
        if inner.last_used.note(id, record.last_used_at, now) {
            self.flush_last_used_inner(now).await;
        }
        let permissions = self.stored_permissions(&record);
        Ok(Verified {
            id,
            prefix,
            tenant: record.tenant,
            name: record.name,
            permissions,
            expires_at: record.expires_at,
        })
    }

    /// [`Keyward::verify`], then requires the key to belong to `tenant`
    /// (e.g. from an `X-Tenant-Name` header).
    ///
    /// # Errors
    /// As [`Keyward::verify`], and [`VerifyError::WrongTenant`].
    pub async fn verify_for_tenant(
        &self,
        token: &str,
        tenant: &str,
    ) -> Result<Verified, VerifyError> {
        let v = self.verify(token).await?;
        if v.tenant != tenant {
            self.audit_verify(Some((v.id, v.prefix)), "wrong_tenant", Some(tenant));
            return Err(VerifyError::WrongTenant);
        }
        Ok(v)
    }

    /// Creates a key in the actor's tenant. The returned
    /// [`IssuedKey::token`] is the only copy of the plaintext.
    ///
    /// # Errors
    /// [`KeyError::Forbidden`] if the actor may not manage keys;
    /// [`KeyError::InvalidName`], [`KeyError::Permission`],
    /// [`KeyError::PermissionEscalation`] (naming every permission the
    /// actor lacks), [`KeyError::InvalidExpiry`],
    /// [`KeyError::InvalidMetadata`]; [`KeyError::Store`].
    pub async fn create(&self, actor: &Actor, new: NewKey) -> Result<IssuedKey, KeyError> {
        let result = self.create_inner(actor, new).await;
        let key = result.as_ref().ok().map(|k| (k.key.id, k.key.prefix));
        self.audit_manage(AuditAction::Create, actor, key, &result);
        result
    }

    async fn create_inner(&self, actor: &Actor, new: NewKey) -> Result<IssuedKey, KeyError> {
        let inner = &*self.inner;
        ensure_manager(actor)?;
        let name = check_name(&new.name)?;
        let permissions = self.grantable(actor, new.grant)?;
        let now = inner.clock.now();
        let expires_at = match new.expiry {
            None => None,
            Some(Expiry::At(t)) if t > now => Some(t),
            Some(Expiry::In(d)) if d > Duration::zero() => {
                Some(now.checked_add_signed(d).ok_or(KeyError::InvalidExpiry)?)
            }
            Some(_) => return Err(KeyError::InvalidExpiry),
        };
        if let Some(m) = &new.metadata {
            let len = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
            if len > MAX_METADATA_BYTES {
                return Err(KeyError::InvalidMetadata("larger than 16 KiB as JSON"));
            }
        }
        // Ids are 47.6 random bits: a collision is rare but possible in a
        // large store, so a duplicate means "draw again", not failure.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let id = KeyId::random()?;
            let token = inner.format.generate(id)?;
            let record = KeyRecord {
                id,
                prefix: token.display_prefix(),
                hash: KeyHash::of(token.expose_secret().as_bytes()),
                tenant: actor.tenant().to_string(),
                name: name.clone(),
                permissions: permissions.names().map(str::to_string).collect(),
                created_by: actor.id().to_string(),
                created_at: now,
                expires_at,
                revoked_at: None,
                last_used_at: None,
                metadata: new.metadata.clone(),
                version: 0,
            };
            match inner.store.insert(&record).await {
                Ok(()) => {
                    let key = self.info(record, now);
                    return Ok(IssuedKey { token, key });
                }
                Err(StoreError::Duplicate(_)) if attempt < 4 => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Revokes a key: it stops verifying at once (with
    /// [`VerifyError::Revoked`]) but stays listed and can be reactivated.
    /// Revoking a revoked key changes nothing.
    ///
    /// # Errors
    /// [`KeyError::Forbidden`], [`KeyError::NotFound`], [`KeyError::Store`].
    pub async fn revoke(&self, actor: &Actor, id: &KeyId) -> Result<KeyInfo, KeyError> {
        self.modify(actor, id, AuditAction::Revoke, |r, now| {
            r.revoked_at.get_or_insert(now);
            Ok(())
        })
        .await
    }

    /// Undoes [`Keyward::revoke`]. An expired key stays expired.
    ///
    /// # Errors
    /// [`KeyError::Forbidden`], [`KeyError::NotFound`], [`KeyError::Store`].
    pub async fn reactivate(&self, actor: &Actor, id: &KeyId) -> Result<KeyInfo, KeyError> {
        self.modify(actor, id, AuditAction::Reactivate, |r, _| {
            r.revoked_at = None;
            Ok(())
        })
        .await
    }

    /// Renames a key (1–100 characters after trimming).
    ///
    /// # Errors
    /// [`KeyError::InvalidName`], [`KeyError::Forbidden`],
    /// [`KeyError::NotFound`], [`KeyError::Store`].
    pub async fn rename(&self, actor: &Actor, id: &KeyId, name: &str) -> Result<KeyInfo, KeyError> {
        let name = match ensure_manager(actor).and_then(|()| check_name(name)) {
            Ok(name) => name,
            Err(e) => {
                let result = Err(e);
                self.audit_manage(AuditAction::Rename, actor, None, &result);
                return result;
            }
        };
        self.modify(actor, id, AuditAction::Rename, |r, _| {
            r.name.clone_from(&name);
            Ok(())
        })
        .await
    }

    /// Replaces a key's permissions. Like at creation, the new set must be
    /// a subset of the actor's permissions.
    ///
    /// # Errors
    /// [`KeyError::Permission`], [`KeyError::PermissionEscalation`],
    /// [`KeyError::Forbidden`], [`KeyError::NotFound`], [`KeyError::Store`].
    pub async fn set_permissions<I, S>(
        &self,
        actor: &Actor,
        id: &KeyId,
        permissions: I,
    ) -> Result<KeyInfo, KeyError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let grant = Grant::Names(permissions.into_iter().map(Into::into).collect());
        let set = match ensure_manager(actor).and_then(|()| self.grantable(actor, grant)) {
            Ok(set) => set,
            Err(e) => {
                let result = Err(e);
                self.audit_manage(AuditAction::SetPermissions, actor, None, &result);
                return result;
            }
        };
        let names: Vec<String> = set.names().map(str::to_string).collect();
        self.modify(actor, id, AuditAction::SetPermissions, |r, _| {
            r.permissions.clone_from(&names);
            Ok(())
        })
        .await
    }

    /// Deletes a key for good. Only audit events remember it.
    ///
    /// # Errors
    /// [`KeyError::Forbidden`], [`KeyError::NotFound`], [`KeyError::Store`].
    pub async fn delete(&self, actor: &Actor, id: &KeyId) -> Result<(), KeyError> {
        let result = async {
            let record = self.load_for(actor, id).await?;
            if self.inner.store.delete(id).await? {
                self.inner.last_used.forget(id);
                Ok(record.prefix)
            } else {
                Err(KeyError::NotFound(*id))
            }
        }
        .await;
        let key = result.as_ref().ok().map(|p| (*id, *p));
        self.audit_manage(AuditAction::Delete, actor, key, &result);
        result.map(|_| ())
    }

    /// One key of the actor's tenant.
    ///
    /// # Errors
    /// [`KeyError::Forbidden`], [`KeyError::NotFound`], [`KeyError::Store`].
    pub async fn get(&self, actor: &Actor, id: &KeyId) -> Result<KeyInfo, KeyError> {
        let record = self.load_for(actor, id).await?;
        Ok(self.info(record, self.inner.clock.now()))
    }

    /// Every key of `tenant`, in id order, read from the store in pages.
    ///
    /// # Errors
    /// [`KeyError::Forbidden`] if the actor may not manage keys or belongs
    /// to another tenant; [`KeyError::Store`].
    pub async fn list(&self, actor: &Actor, tenant: &str) -> Result<Vec<KeyInfo>, KeyError> {
        ensure_manager(actor)?;
        if actor.tenant() != tenant {
            return Err(KeyError::Forbidden {
                actor: actor.id().to_string(),
            });
        }
        let now = self.inner.clock.now();
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .inner
                .store
                .list_by_tenant(tenant, after.as_ref(), PAGE)
                .await?;
            let full = page.len() == PAGE;
            after = page.last().map(|r| r.id);
            out.extend(page.into_iter().map(|r| self.info(r, now)));
            if !full {
                return Ok(out);
            }
        }
    }

    /// Writes every pending "last used" instant to the store now. Call it
    /// at shutdown so that the last minute of use is not lost.
    ///
    /// # Errors
    /// [`StoreError`]; the entries stay pending and are retried.
    pub async fn flush_last_used(&self) -> Result<usize, StoreError> {
        let now = self.inner.clock.now();
        self.inner.last_used.flush(&*self.inner.store, now).await
    }

    async fn flush_last_used_inner(&self, now: DateTime<Utc>) {
        if let Err(e) = self.inner.last_used.flush(&*self.inner.store, now).await {
            // A verify that succeeded stays a success; the entries stay
            // pending and go with the next flush.
            tracing::warn!(target: "keyward", error = %e, "could not record last-used times; will retry");
        }
    }

    /// Reads the key and checks the actor may manage it. Another tenant's
    /// key is `NotFound`, exactly like a missing one.
    async fn load_for(&self, actor: &Actor, id: &KeyId) -> Result<KeyRecord, KeyError> {
        ensure_manager(actor)?;
        match self.inner.store.get(id).await? {
            Some(r) if r.tenant == actor.tenant() => Ok(r),
            _ => Err(KeyError::NotFound(*id)),
        }
    }

    /// Read, change, conditionally write; on a lost race, read again.
    async fn modify(
        &self,
        actor: &Actor,
        id: &KeyId,
        action: AuditAction,
        change: impl Fn(&mut KeyRecord, DateTime<Utc>) -> Result<(), KeyError>,
    ) -> Result<KeyInfo, KeyError> {
        let result = async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let mut record = self.load_for(actor, id).await?;
                let now = self.inner.clock.now();
                change(&mut record, now)?;
                match self.inner.store.update(&record).await {
                    Ok(version) => {
                        record.version = version;
                        return Ok(self.info(record, now));
                    }
                    Err(StoreError::Conflict(_)) if attempt < UPDATE_ATTEMPTS => continue,
                    Err(StoreError::NotFound(_)) => return Err(KeyError::NotFound(*id)),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        .await;
        let key = result.as_ref().ok().map(|k| (k.id, k.prefix));
        self.audit_manage(action, actor, key, &result);
        result
    }

    /// The permissions `grant` names, if the actor may grant them.
    fn grantable(&self, actor: &Actor, grant: Grant) -> Result<PermissionSet, KeyError> {
        let catalog = &self.inner.catalog;
        let wanted = match grant {
            Grant::Names(names) => catalog.parse_set(&names)?,
            Grant::Set(set) if set.catalog() == catalog => set,
            Grant::Set(_) => return Err(KeyError::CatalogMismatch),
        };
        let held = match actor.permission_set() {
            Some(set) if set.catalog() == catalog => set.clone(),
            Some(_) => return Err(KeyError::CatalogMismatch),
            None => catalog.none(),
        };
        if wanted.is_subset_of(&held) {
            Ok(wanted)
        } else {
            Err(KeyError::PermissionEscalation {
                missing: wanted.missing_from(&held),
            })
        }
    }

    fn stored_permissions(&self, record: &KeyRecord) -> PermissionSet {
        let (set, unknown) = self
            .inner
            .catalog
            .parse_stored(record.permissions.iter().map(String::as_str));
        if !unknown.is_empty() {
            tracing::warn!(
                target: "keyward",
                key = %record.prefix,
                ?unknown,
                "stored permissions are no longer in the catalog; the key does not hold them"
            );
        }
        set
    }

    fn info(&self, record: KeyRecord, now: DateTime<Utc>) -> KeyInfo {
        let permissions = self.stored_permissions(&record);
        let status = KeyStatus::of(&record, now);
        let last_used_at = record
            .last_used_at
            .max(self.inner.last_used.pending(&record.id));
        KeyInfo {
            id: record.id,
            prefix: record.prefix,
            tenant: record.tenant,
            name: record.name,
            permissions,
            status,
            created_by: record.created_by,
            created_at: record.created_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            last_used_at,
            metadata: record.metadata,
        }
    }

    fn audit_verify(
        &self,
        key: Option<(KeyId, DisplayPrefix)>,
        reason: &'static str,
        tenant: Option<&str>,
    ) {
        let outcome = if reason == "store_unavailable" {
            AuditOutcome::Failed(reason)
        } else {
            AuditOutcome::Denied(reason)
        };
        self.inner.audit.record(&AuditEvent {
            at: self.inner.clock.now(),
            action: AuditAction::Verify,
            outcome,
            actor: None,
            tenant: tenant.map(str::to_string),
            key_id: key.map(|k| k.0),
            key_prefix: key.map(|k| k.1),
        });
    }

    fn audit_manage<T>(
        &self,
        action: AuditAction,
        actor: &Actor,
        key: Option<(KeyId, DisplayPrefix)>,
        result: &Result<T, KeyError>,
    ) {
        let outcome = match result {
            Ok(_) => AuditOutcome::Success,
            Err(e @ (KeyError::Store(_) | KeyError::Entropy(_))) => AuditOutcome::Failed(e.code()),
            Err(e) => AuditOutcome::Denied(e.code()),
        };
        let key_id = key.map(|k| k.0).or(match result {
            Err(KeyError::NotFound(id)) => Some(*id),
            _ => None,
        });
        self.inner.audit.record(&AuditEvent {
            at: self.inner.clock.now(),
            action,
            outcome,
            actor: Some(actor.id().to_string()),
            tenant: Some(actor.tenant().to_string()),
            key_id,
            key_prefix: key.map(|k| k.1),
        });
    }
}

fn ensure_manager(actor: &Actor) -> Result<(), KeyError> {
    if actor.can_manage() {
        Ok(())
    } else {
        Err(KeyError::Forbidden {
            actor: actor.id().to_string(),
        })
    }
}

fn check_name(name: &str) -> Result<String, KeyError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 {
        Err(KeyError::InvalidName("the name is empty"))
    } else if chars > MAX_NAME_CHARS {
        Err(KeyError::InvalidName(
            "the name is longer than 100 characters",
        ))
    } else if name.chars().any(char::is_control) {
        Err(KeyError::InvalidName(
            "the name contains control characters",
        ))
    } else {
        Ok(name.to_string())
    }
}

/// Coalesces "last used" writes: at most one per key per interval.
///
/// A successful verify whose stored `last_used_at` is older than the
/// interval leaves an entry here; entries go to the store in one batch
/// when the previous flush is an interval old (or many are pending), or
/// when the host calls [`Keyward::flush_last_used`].
struct LastUsed {
    interval: Duration,
    state: Mutex<Pending>,
}

struct Pending {
    entries: HashMap<KeyId, DateTime<Utc>>,
    last_flush: Option<DateTime<Utc>>,
}

impl LastUsed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes a use; returns whether a flush is due.
    fn note(&self, id: KeyId, stored: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        if stored.is_some_and(|s| now - s < self.interval) {
            return false;
        }
        let mut p = self.lock();
        let at = p.entries.entry(id).or_insert(now);
        *at = (*at).max(now);
        p.entries.len() >= MAX_PENDING || p.last_flush.is_none_or(|f| now - f >= self.interval)
    }

    fn pending(&self, id: &KeyId) -> Option<DateTime<Utc>> {
        self.lock().entries.get(id).copied()
    }

    fn forget(&self, id: &KeyId) {
        self.lock().entries.remove(id);
    }

    async fn flush(&self, store: &dyn KeyStore, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let batch: Vec<(KeyId, DateTime<Utc>)> = {
            let mut p = self.lock();
            p.last_flush = Some(now);
            p.entries.drain().collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match store.record_last_used(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                let mut p = self.lock();
                for (id, at) in batch {
                    let e = p.entries.entry(id).or_insert(at);
                    *e = (*e).max(at);
                }
                Err(e)
            }
        }
    }
}

impl KeyError {
    /// A stable snake_case code for the error, for audit events and API
    /// responses: `forbidden`, `not_found`, `invalid_name`,
    /// `permission_escalation`, `unknown_permission`, `catalog_mismatch`,
    /// `invalid_expiry`, `invalid_metadata`, `entropy`, `store`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::InvalidName(_) => "invalid_name",
            Self::PermissionEscalation { .. } => "permission_escalation",
            Self::Permission(_) => "unknown_permission",
            Self::CatalogMismatch => "catalog_mismatch",
            Self::InvalidExpiry => "invalid_expiry",
            Self::InvalidMetadata(_) => "invalid_metadata",
            Self::Entropy(_) => "entropy",
            Self::Store(_) => "store",
        }
    }
}

impl VerifyError {
    /// A stable snake_case code for the error, for API responses:
    /// `malformed`, `invalid`, `api_key_expired`, `revoked`,
    /// `wrong_tenant`, `store_unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Invalid => "invalid",
            Self::Expired => "api_key_expired",
            Self::Revoked => "revoked",
            Self::WrongTenant => "wrong_tenant",
            Self::Store(_) => "store_unavailable",
        }
    }
}
