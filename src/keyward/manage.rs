//! Key management: create, read, change, roll, revoke, reactivate and
//! delete. Every call that writes asks
//! [`authorize`](crate::authority) first: a key never holds more than the
//! actor who created or last changed it.

use chrono::{DateTime, Duration, SubsecRound, Utc};

use super::webhooks::{rfc3339, Notice};
use super::{latest, Keyward, RoleMap, MAX_METADATA_BYTES, MAX_NAME_CHARS, MAX_USES};
use crate::access::IpAllowlist;
use crate::audit::AuditAction;
use crate::authority::{authorize, carved_uses, ensure_manager, limit_within, Rules};
use crate::error::{Dimension, KeyError, StoreError};
use crate::key::{Actor, Expiry, Grant, IssuedKey, KeyInfo, KeyRecord, KeyStatus, NewKey};
use crate::limit::{checked_limits, NamedLimit, RateLimit};
use crate::permission::PermissionSet;
use crate::policy::Refill;
use crate::store::Credit;
use crate::tenant;
use crate::tenant_policy::Scope;
use crate::token::{DisplayPrefix, KeyHash, KeyId};
use crate::webhook::EventType;

/// A change to a key's name, permissions and rate limit, applied all or
/// nothing by [`Keyward::update`]. Fields left `None` stay as they are.
///
/// ```
/// use keyward::KeyUpdate;
/// let update = KeyUpdate::new().name("CI deploy").permissions(["contacts:read"]);
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct KeyUpdate {
    name: Option<String>,
    permissions: Option<Grant>,
    rate_limit: Option<Option<RateLimit>>,
    allowed_ips: Option<Option<IpAllowlist>>,
    not_before: Option<Option<DateTime<Utc>>>,
    roles: Option<Vec<String>>,
    limits: Option<Vec<NamedLimit>>,
}

impl KeyUpdate {
    /// A change that changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new name (1–100 characters after trimming).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// New permissions, in any written form, replacing the old ones.
    pub fn permissions<I, S>(mut self, permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.permissions = Some(Grant::Names(
            permissions.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// New permissions as a parsed set.
    pub fn permission_set(mut self, permissions: PermissionSet) -> Self {
        self.permissions = Some(Grant::Set(permissions));
        self
    }

    /// A new rate limit; `None` goes back to the instance's default.
    pub fn rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// A new IP allowlist; `None` lets the key be used from any address
    /// (refused when the actor has an allowlist, or a tenant policy
    /// requires one).
    pub fn allowed_ips(mut self, allowlist: Option<IpAllowlist>) -> Self {
        self.allowed_ips = Some(allowlist);
        self
    }

    /// A new `not_before`; `None` lets the key work at once.
    pub fn not_before(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.not_before = Some(at);
        self
    }

    /// New roles, replacing the old ones.
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = Some(roles.into_iter().map(Into::into).collect());
        self
    }

    /// New named limits, replacing the old ones (an empty list removes
    /// them all).
    pub fn limits(mut self, limits: impl IntoIterator<Item = NamedLimit>) -> Self {
        self.limits = Some(limits.into_iter().collect());
        self
    }

    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.permissions.is_none()
            && self.rate_limit.is_none()
            && self.allowed_ips.is_none()
            && self.not_before.is_none()
            && self.roles.is_none()
            && self.limits.is_none()
    }
}

impl Keyward {
    /// What [`authorize`] needs of this instance.
    pub(super) fn rules(&self) -> Rules<'_> {
        Rules {
            catalog: &self.inner.catalog,
            nested: self.inner.nested,
            default_limit: self.inner.key_limit,
            roles: self.inner.roles.current(),
        }
    }

    /// [`Keyward::rules`] with the roles read again if they may have
    /// changed.
    pub(super) async fn fresh_rules(&self) -> Result<Rules<'_>, KeyError> {
        self.inner.roles.fresh(&*self.inner.store).await?;
        Ok(self.rules())
    }

    /// Creates a key in the actor's tenant (or, with nested tenants, in a
    /// tenant below it given by [`NewKey::tenant`]). The returned
    /// [`IssuedKey::token`] is the only copy of the plaintext.
    ///
    /// The key holds no more than the actor in any dimension (see
    /// [`authority`](crate::authority)). Left unset, its expiry and rate
    /// limit are the actor's: a key created by a key that expires or is
    /// limited gets the same bounds. A key created by a usage-limited key
    /// needs its own usage limit, taken from the creator's uses.
    ///
    /// # Errors
    /// [`KeyError::Forbidden`] if the actor may not manage keys;
    /// [`KeyError::InvalidName`], [`KeyError::InvalidTenant`],
    /// [`KeyError::Permission`], [`KeyError::PermissionEscalation`] (naming
    /// every permission the actor lacks), [`KeyError::BoundExceeded`] (a
    /// later expiry, looser rate limit or more uses than the actor's),
    /// [`KeyError::InvalidExpiry`], [`KeyError::InvalidMetadata`];
    /// [`KeyError::Store`].
    pub async fn create(&self, actor: &Actor, new: NewKey) -> Result<IssuedKey, KeyError> {
        let result = self.create_inner(actor, new, None).await;
        let key = result
            .as_ref()
            .ok()
            .map(|k| (k.key.id, k.key.prefix, k.key.tenant.as_str()));
        self.audit_manage(AuditAction::Create, actor, key, &result);
        result
    }

    /// Creates `new`, as [`create`](Self::create) does, unless its tenant
    /// already holds a key (revoked keys count): the first key of a
    /// deployment, such as a bootstrap admin key printed at first start.
    /// `Ok(None)` when a key was there already. A tenant whose keys have
    /// all been deleted (or purged by the sweep) holds none: it can be
    /// bootstrapped again.
    ///
    /// Safe for every instance of a fleet to call as it starts, all at
    /// once: exactly one creates the key. (Its id is derived from the
    /// tenant, so a second instance's insert collides instead of adding
    /// another key. Ids are not secret: the bootstrap key of a tenant has
    /// the same id in every deployment. Should keys of other tenants hold
    /// all four ids derived from it, names chosen to collide, the key is
    /// created with a random id and a warning, and instances starting at
    /// that very moment may each create one.)
    ///
    /// ```
    /// use keyward::{Actor, Catalog, Keyward, MemoryStore, NewKey};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let catalog = Catalog::builder().resource("api_keys", ["read", "write"]).build()?;
    /// let keys = Keyward::builder(MemoryStore::new(), catalog).build()?;
    /// let setup = Actor::new("setup", "default")
    ///     .permissions(keys.catalog().all())
    ///     .may_manage_keys(true);
    /// let admin = || NewKey::new("admin").permission_set(keys.catalog().all());
    /// let first = keys.bootstrap(&setup, admin()).await?;
    /// assert!(first.is_some(), "created, token shown once");
    /// let again = keys.bootstrap(&setup, admin()).await?;
    /// assert!(again.is_none(), "the tenant holds a key already");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`create`](Self::create).
    pub async fn bootstrap(
        &self,
        actor: &Actor,
        new: NewKey,
    ) -> Result<Option<IssuedKey>, KeyError> {
        let result = self.bootstrap_inner(actor, new).await;
        // A creation or a refusal is audited; finding a key there is not.
        if !matches!(result, Ok(None)) {
            let key = match &result {
                Ok(Some(k)) => Some((k.key.id, k.key.prefix, k.key.tenant.as_str())),
                _ => None,
            };
            self.audit_manage(AuditAction::Create, actor, key, &result);
        }
        result
    }

    async fn bootstrap_inner(
        &self,
        actor: &Actor,
        new: NewKey,
    ) -> Result<Option<IssuedKey>, KeyError> {
        let tenant = new
            .tenant
            .clone()
            .unwrap_or_else(|| actor.tenant().to_string());
        // Whether another tenant holds keys is not the actor's to learn.
        self.ensure_manages_tenant(actor, &tenant)?;
        if !self
            .inner
            .store
            .list_by_tenant(&tenant, None, 1)
            .await?
            .is_empty()
        {
            return Ok(None);
        }
        // Ids derived from the tenant, in turn: a collision with a key of
        // this tenant means another instance bootstrapped it; one with a
        // key of another tenant (a name chosen to collide) moves on to
        // the next id; one with a key deleted since tries the id again.
        let mut attempt = 0u8;
        for _ in 0..8 {
            let id = KeyId::derived(&[tenant.as_bytes(), &[0, attempt]].concat());
            match self.create_inner(actor, new.clone(), Some(id)).await {
                Err(KeyError::Store(StoreError::Duplicate(_))) => {
                    match self.inner.store.get(&id).await? {
                        Some(held) if held.tenant == tenant => return Ok(None),
                        Some(_) if attempt < 3 => attempt += 1,
                        Some(_) => break,
                        None => {}
                    }
                }
                other => return other.map(Some),
            }
        }
        // Every derived id is held by another tenant's key, made to
        // collide. The key is created with a random id rather than never:
        // against instances starting together, no longer exactly once.
        tracing::warn!(target: "keyward", tenant = %tenant, "every bootstrap key id of this tenant is held by another tenant's key; creating the key with a random id");
        self.create_inner(actor, new, None).await.map(Some)
    }

    /// That `actor` may manage keys, and those of `tenant`: a canonical
    /// tenant path at or (with nested tenants) below its own.
    pub(super) fn ensure_manages_tenant(
        &self,
        actor: &Actor,
        tenant: &str,
    ) -> Result<(), KeyError> {
        ensure_manager(actor)?;
        if !tenant::is_valid(tenant) {
            return Err(KeyError::InvalidTenant(tenant.chars().take(200).collect()));
        }
        if !tenant::covers(actor.tenant(), tenant, self.inner.nested) {
            return Err(KeyError::Forbidden {
                actor: actor.id().to_string(),
            });
        }
        Ok(())
    }

    async fn create_inner(
        &self,
        actor: &Actor,
        new: NewKey,
        fixed: Option<KeyId>,
    ) -> Result<IssuedKey, KeyError> {
        ensure_manager(actor)?;
        let rules = self.fresh_rules().await?;
        let now = self.now();
        let draft = self.draft(actor, new, &rules.roles, now)?;
        authorize(&rules, actor, None, Some(&draft))?;
        self.obey_policy(&rules, &draft, Scope::Create).await?;
        let carved = match carved_uses(actor, &draft)? {
            Some((from, uses)) => self.take_uses(&from, uses).await?.map(|n| (from, n)),
            None => None,
        };
        let created = [Notice::new(EventType::Created, actor.id())
            .with("expires_at", draft.expires_at.map(rfc3339))];
        let inserted = self
            .insert_new(fixed, &created, |id, prefix, hash| KeyRecord {
                id,
                prefix,
                hash,
                ..draft.clone()
            })
            .await;
        let (token, record) = match inserted {
            Ok(done) => done,
            Err(e) => {
                if let Some((from, uses)) = carved {
                    self.give_back(&from, uses).await;
                }
                return Err(e);
            }
        };
        let key = self.info(record, now);
        Ok(IssuedKey { token, key })
    }

    /// The key `new` asks for, as `actor` creates it at `now`: every
    /// field checked, and what it leaves unset inherited from the actor
    /// (expiry, rate limit, uses, allowlist, named limits). Whether the
    /// actor may create it is [`authorize`]'s question.
    pub(super) fn draft(
        &self,
        actor: &Actor,
        new: NewKey,
        roles: &RoleMap,
        now: DateTime<Utc>,
    ) -> Result<KeyRecord, KeyError> {
        let name = check_name(&new.name)?;
        let tenant = new.tenant.unwrap_or_else(|| actor.tenant().to_string());
        let permissions = self.grant_set(new.grant)?;
        let expires_at = expiry_at(new.expiry, actor, now)?;
        if let Some(m) = &new.metadata {
            check_metadata(m)?;
        }
        let refill = new.refill.map(|r| Refill {
            amount: r.amount.min(MAX_USES),
            every_secs: r.every_secs.clamp(1, Refill::MAX_EVERY_SECS),
        });
        // A person's usage bound is a cap per key, inherited; a key's uses
        // are split, so they are never inherited (see carved_uses).
        let inherited = actor.uses.filter(|_| actor.key_id().is_none());
        let remaining = new
            .remaining
            .or(refill.map(|r| r.amount))
            .or(inherited)
            .map(|n| n.min(MAX_USES));
        let roles = check_roles(new.roles, roles)?;
        // A key actor's named limits are inherited where not set.
        let mut limits = new.limits;
        for a in &actor.limits {
            if !limits.iter().any(|l| l.name == a.name) {
                limits.push(a.clone());
            }
        }
        let limits = checked_limits(limits)?;
        let not_before = check_not_before(new.not_before, expires_at)?;
        Ok(KeyRecord {
            id: KeyId::NONE,
            prefix: DisplayPrefix::default(),
            hash: KeyHash::from_bytes([0; 32]),
            tenant,
            name,
            permissions: permissions.names().map(str::to_string).collect(),
            created_by: actor.id().to_string(),
            created_at: now,
            expires_at,
            revoked_at: None,
            last_used_at: None,
            metadata: new.metadata,
            version: 0,
            rate_limit: new.rate_limit.or_else(|| self.inherited_limit(actor)),
            remaining,
            refill,
            last_refill_at: remaining.is_some().then_some(now),
            inactivity_warning: None,
            expiry_warning: None,
            rolled_from: None,
            rolled_to: None,
            allowed_ips: new.allowed_ips.or_else(|| actor.allowed_ips.clone()),
            not_before,
            roles,
            limits,
            credits_spent: 0,
            exposed_at: None,
        })
    }

    /// Takes `uses` from key `from`, all or none; `Some(uses)` when taken,
    /// `None` when `from` turned out not to be usage-limited.
    async fn take_uses(&self, from: &KeyId, uses: u64) -> Result<Option<u64>, KeyError> {
        let delta = i64::try_from(uses).unwrap_or(i64::MAX);
        match self.inner.store.adjust_credits(from, -delta).await? {
            Credit::Consumed { .. } => Ok(Some(uses)),
            Credit::Unlimited => Ok(None),
            Credit::Exhausted => Err(KeyError::BoundExceeded {
                dimension: Dimension::Usage,
            }),
            _ => Err(KeyError::NotFound(*from)),
        }
    }

    /// Gives back uses taken for a key that was then not created. Logged
    /// if the store fails: the uses are lost, never doubled.
    pub(super) async fn give_back(&self, to: &KeyId, uses: u64) {
        let delta = i64::try_from(uses).unwrap_or(i64::MAX);
        if let Err(e) = self.inner.store.adjust_credits(to, delta).await {
            tracing::warn!(target: "keyward", key = %to, uses, error = %e, "could not give back uses taken for a key that was not created");
        }
    }

    /// The rate limit a key created by `actor` without one gets: the
    /// actor's, when the instance's default is looser than it.
    fn inherited_limit(&self, actor: &Actor) -> Option<RateLimit> {
        actor
            .rate_limit
            .filter(|bound| !limit_within(self.inner.key_limit, Some(*bound)))
    }

    /// Revokes a key: it stops verifying at once (with
    /// [`VerifyError::Revoked`](crate::VerifyError::Revoked)) but stays
    /// listed and can be reactivated. Revoking a revoked key changes
    /// nothing. The actor must hold at least as much as the key.
    ///
    /// # Errors
    /// [`KeyError::Forbidden`], [`KeyError::NotFound`],
    /// [`KeyError::Outranked`], [`KeyError::Store`].
    pub async fn revoke(&self, actor: &Actor, id: &KeyId) -> Result<KeyInfo, KeyError> {
        self.modify(actor, id, AuditAction::Revoke, |r, now| {
            r.revoked_at.get_or_insert(now);
            Ok(())
        })
        .await
    }

    /// Undoes [`Keyward::revoke`]; an active key stays as it is. Reviving a
    /// key grants its permissions again, so the actor must hold at least as
    /// much as the key, or a demoted manager could restore what an admin
    /// took away.
    ///
    /// # Errors
    /// [`KeyError::NotActive`] for an expired key (expiry is final),
    /// [`KeyError::RolledAway`] for a key replaced by a roll (a leaked key
    /// rolled away never comes back), [`KeyError::Exposed`] for a key
    /// revoked because its token leaked, [`KeyError::Outranked`],
    /// [`KeyError::Forbidden`], [`KeyError::NotFound`], [`KeyError::Store`].
    pub async fn reactivate(&self, actor: &Actor, id: &KeyId) -> Result<KeyInfo, KeyError> {
        // A revoked key coming back counts against its tenant's cap, and
        // must hold no more than its tenant's policy allows now.
        let checked = async {
            self.obey_count_for(actor, id).await?;
            self.fresh_rules().await
        };
        let rules = match checked.await {
            Ok(rules) => rules,
            Err(e) => {
                let result = Err(e);
                self.audit_manage(AuditAction::Reactivate, actor, None, &result);
                return result;
            }
        };
        let policy = self.policy_check(Scope::Change);
        self.modify(actor, id, AuditAction::Reactivate, |r, now| {
            if let Some(successor) = r.rolled_to {
                return Err(KeyError::RolledAway {
                    id: r.id,
                    successor,
                });
            }
            // A token found in public is never trusted again.
            if r.revoked_at.is_some() && r.exposed_at.is_some() {
                return Err(KeyError::Exposed(r.id));
            }
            if r.expires_at.is_some_and(|e| e <= now) {
                return Err(KeyError::NotActive {
                    id: r.id,
                    status: KeyStatus::Expired,
                });
            }
            if r.revoked_at.is_some() {
                policy(&rules, r)?;
            }
            r.revoked_at = None;
            Ok(())
        })
        .await
    }

    /// Renames a key (1–100 characters after trimming).
    ///
    /// # Errors
    /// As [`Keyward::update`].
    pub async fn rename(&self, actor: &Actor, id: &KeyId, name: &str) -> Result<KeyInfo, KeyError> {
        self.update_as(actor, id, KeyUpdate::new().name(name), AuditAction::Rename)
            .await
    }

    /// Replaces a key's permissions. Like at creation, the new set must be
    /// a subset of the actor's permissions, and so must the old one.
    ///
    /// # Errors
    /// As [`Keyward::update`].
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
        let update = KeyUpdate::new().permissions(permissions);
        self.update_as(actor, id, update, AuditAction::SetPermissions)
            .await
    }

    /// Sets or clears (`None`: back to the instance's default) a key's own
    /// rate limit. The result may be no looser than the actor's own limit.
    ///
    /// # Errors
    /// As [`Keyward::update`].
    pub async fn set_rate_limit(
        &self,
        actor: &Actor,
        id: &KeyId,
        limit: Option<RateLimit>,
    ) -> Result<KeyInfo, KeyError> {
        let update = KeyUpdate::new().rate_limit(limit);
        self.update_as(actor, id, update, AuditAction::SetRateLimit)
            .await
    }

    /// Changes a key's name, permissions and rate limit at once, all or
    /// nothing: every field is checked before anything is written, and
    /// the write is one conditional update. The actor must hold at least
    /// as much as the key before and after.
    ///
    /// # Errors
    /// [`KeyError::InvalidName`], [`KeyError::Permission`],
    /// [`KeyError::CatalogMismatch`], [`KeyError::PermissionEscalation`],
    /// [`KeyError::BoundExceeded`], [`KeyError::Outranked`],
    /// [`KeyError::Forbidden`], [`KeyError::NotFound`], [`KeyError::Store`].
    pub async fn update(
        &self,
        actor: &Actor,
        id: &KeyId,
        update: KeyUpdate,
    ) -> Result<KeyInfo, KeyError> {
        self.update_as(actor, id, update, AuditAction::Update).await
    }

    async fn update_as(
        &self,
        actor: &Actor,
        id: &KeyId,
        update: KeyUpdate,
        action: AuditAction,
    ) -> Result<KeyInfo, KeyError> {
        let checked = (|| {
            ensure_manager(actor)?;
            let name = update.name.as_deref().map(check_name).transpose()?;
            let permissions = update
                .permissions
                .map(|g| self.grant_set(g))
                .transpose()?
                .map(|set| set.names().map(str::to_string).collect::<Vec<_>>());
            let limits = update.limits.map(checked_limits).transpose()?;
            Ok((name, permissions, limits))
        })();
        let (name, permissions, limits) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                let result = Err(e);
                self.audit_manage(action, actor, None, &result);
                return result;
            }
        };
        let rules = match self.fresh_rules().await {
            Ok(rules) => rules,
            Err(e) => {
                let result = Err(e);
                self.audit_manage(action, actor, None, &result);
                return result;
            }
        };
        // A rename or a new rate limit leaves what the key holds as it
        // was: a key made before a policy tightened can still be renamed.
        let holds_more =
            permissions.is_some() || update.roles.is_some() || update.allowed_ips.is_some();
        let policy = self.policy_check(Scope::Change);
        self.modify(actor, id, action, |r, _| {
            if let Some(name) = &name {
                r.name.clone_from(name);
            }
            if let Some(permissions) = &permissions {
                r.permissions.clone_from(permissions);
            }
            if let Some(limit) = update.rate_limit {
                r.rate_limit = limit;
            }
            if let Some(allowed) = &update.allowed_ips {
                r.allowed_ips.clone_from(allowed);
            }
            if let Some(not_before) = update.not_before {
                r.not_before = check_not_before(not_before, r.expires_at)?;
            }
            if let Some(roles) = &update.roles {
                r.roles = check_roles(roles.clone(), &self.inner.roles.current())?;
            }
            if let Some(limits) = &limits {
                r.limits.clone_from(limits);
            }
            if holds_more {
                policy(&rules, r)?;
            }
            Ok(())
        })
        .await
    }

    /// Deletes a key for good. Only audit events remember it. The actor
    /// must hold at least as much as the key.
    ///
    /// # Errors
    /// [`KeyError::Forbidden`], [`KeyError::NotFound`],
    /// [`KeyError::Outranked`], [`KeyError::Store`].
    pub async fn delete(&self, actor: &Actor, id: &KeyId) -> Result<(), KeyError> {
        let result = async {
            let record = self.load_for(actor, id).await?;
            authorize(&self.rules(), actor, Some(&record), None)?;
            let deleted = Notice::new(EventType::Deleted, actor.id()).with("reason", "deleted");
            if self.delete_key(&record, &[deleted]).await? {
                Ok((record.prefix, record.tenant))
            } else {
                Err(KeyError::NotFound(*id))
            }
        }
        .await;
        let key = result.as_ref().ok().map(|(p, t)| (*id, *p, t.as_str()));
        self.audit_manage(AuditAction::Delete, actor, key, &result);
        result.map(|_| ())
    }

    /// One key of the actor's tenant (or, with nested tenants, below it).
    ///
    /// # Errors
    /// [`KeyError::Forbidden`], [`KeyError::NotFound`], [`KeyError::Store`].
    pub async fn get(&self, actor: &Actor, id: &KeyId) -> Result<KeyInfo, KeyError> {
        let record = self.load_for(actor, id).await?;
        Ok(self.info(record, self.now()))
    }

    /// The permissions `grant` names, parsed in this catalog. Whether the
    /// actor may grant them is [`authorize`]'s question.
    fn grant_set(&self, grant: Grant) -> Result<PermissionSet, KeyError> {
        let catalog = &self.inner.catalog;
        match grant {
            Grant::Names(names) => Ok(catalog.parse_set(&names)?),
            Grant::Set(set) if set.catalog() == catalog => Ok(set),
            Grant::Set(_) => Err(KeyError::CatalogMismatch),
        }
    }
}

/// The roles a key will hold: each defined, sorted, without duplicates.
fn check_roles(mut roles: Vec<String>, defined: &RoleMap) -> Result<Vec<String>, KeyError> {
    roles.sort();
    roles.dedup();
    match roles.iter().find(|r| !defined.contains_key(r.as_str())) {
        Some(unknown) => Err(KeyError::UnknownRole(unknown.chars().take(80).collect())),
        None => Ok(roles),
    }
}

/// A key's `not_before`, to the microsecond: before its expiry, no later
/// than the year 9999.
fn check_not_before(
    at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<Option<DateTime<Utc>>, KeyError> {
    let at = at.map(|t| t.trunc_subsecs(6));
    if at.is_some_and(|t| t > latest() || expires_at.is_some_and(|e| t >= e)) {
        return Err(KeyError::InvalidNotBefore);
    }
    Ok(at)
}

/// When a new key expires: as asked, or as its creator does; to the
/// microsecond, in the future and no later than the year 9999.
fn expiry_at(
    asked: Option<Expiry>,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, KeyError> {
    let expires_at = match asked {
        None => actor.expires_at,
        Some(Expiry::At(t)) => Some(t),
        Some(Expiry::In(d)) if d > Duration::zero() => {
            Some(now.checked_add_signed(d).ok_or(KeyError::InvalidExpiry)?)
        }
        Some(Expiry::In(_)) => return Err(KeyError::InvalidExpiry),
    }
    .map(|t| t.trunc_subsecs(6));
    if expires_at.is_some_and(|e| e <= now || e > latest()) {
        return Err(KeyError::InvalidExpiry);
    }
    Ok(expires_at)
}

fn check_metadata(metadata: &serde_json::Value) -> Result<(), KeyError> {
    let json = serde_json::to_string(metadata).unwrap_or_default();
    if json.len() > MAX_METADATA_BYTES {
        return Err(KeyError::InvalidMetadata("larger than 16 KiB as JSON"));
    }
    // PostgreSQL cannot store U+0000 in text or JSON.
    if json.contains("\\u0000") {
        return Err(KeyError::InvalidMetadata("contains a NUL character"));
    }
    Ok(())
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
    } else if name
        .chars()
        .any(|c| c.is_control() || is_invisible_format(c))
    {
        Err(KeyError::InvalidName(
            "the name contains control or invisible formatting characters",
        ))
    } else {
        Ok(name.to_string())
    }
}

/// Bidirectional overrides, zero-width and other invisible formatting
/// characters: they make a name display as something else in lists and
/// audit logs.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}
