//! Rolling a key: a successor with the same grants, the old key working
//! through a grace period, uses moved and never multiplied.

use chrono::{DateTime, Duration, SubsecRound, Utc};

use super::webhooks::{rfc3339, Notice};
use super::{latest, Keyward, MAX_USES, UPDATE_ATTEMPTS};
use crate::audit::AuditAction;
use crate::authority::authorize;
use crate::error::{KeyError, StoreError};
use crate::key::{Actor, IssuedKey, KeyRecord, KeyStatus};
use crate::store::Credit;
use crate::tenant_policy::Scope;
use crate::token::{DisplayPrefix, KeyHash, KeyId};
use crate::webhook::EventType;

impl Keyward {
    /// Rotates a key: issues a new key with the same name, tenant,
    /// permissions, expiry, rate limit, usage limit and metadata, and
    /// returns its token once. The old key keeps working until `now +
    /// grace`, never past its own expiry; a zero grace revokes it at once.
    /// The audit event names both keys; the new key's
    /// [`KeyInfo::rolled_from`](crate::KeyInfo::rolled_from) names the old and the old key's
    /// [`KeyInfo::rolled_to`](crate::KeyInfo::rolled_to) the new.
    ///
    /// A rolled key is done: it can be neither rolled again (even during
    /// its grace) nor reactivated.
    ///
    /// **Uses move, never multiply.** A usage-limited key's remaining uses
    /// move to the new key, atomically; during its grace the old key draws
    /// on the new key's uses, so the two together never get more than the
    /// old key had. Once the new key is rolled in turn, its uses have moved
    /// on and the old key's draws find none.
    ///
    /// **Limits carry over.** With the built-in limiter, the new key starts
    /// with what the old one spent of its rate limit and named limits, so
    /// a key cannot refill them by rolling itself. (During the grace each
    /// key counts its own requests from there. A host's limiter, such as
    /// `RedisLimiter`, keeps its own state by key id: there the new key
    /// starts afresh.)
    ///
    /// # Errors
    /// [`KeyError::NotActive`] for a revoked or expired key,
    /// [`KeyError::RolledAway`] for a key already rolled,
    /// [`KeyError::InvalidGrace`] for a negative grace,
    /// [`KeyError::Outranked`] if the key holds more than the actor;
    /// [`KeyError::Forbidden`], [`KeyError::NotFound`],
    /// [`KeyError::Store`].
    pub async fn roll(
        &self,
        actor: &Actor,
        id: &KeyId,
        grace: Duration,
    ) -> Result<IssuedKey, KeyError> {
        let result = self.roll_inner(actor, id, grace).await;
        let (key, related) = match &result {
            Ok((old, new)) => (Some((*id, *old, new.key.tenant.as_str())), Some(new.key.id)),
            Err(_) => (None, None),
        };
        self.audit_manage_related(AuditAction::Roll, actor, key, related, &result);
        result.map(|(_, new)| new)
    }

    async fn roll_inner(
        &self,
        actor: &Actor,
        id: &KeyId,
        grace: Duration,
    ) -> Result<(DisplayPrefix, IssuedKey), KeyError> {
        if grace < Duration::zero() {
            return Err(KeyError::InvalidGrace);
        }
        let old = self.load_for(actor, id).await?;
        let rules = self.fresh_rules().await?;
        authorize(&rules, actor, Some(&old), None)?;
        let now = self.now();
        rollable(&old, now)?;
        let draft = KeyRecord {
            created_by: actor.id().to_string(),
            created_at: now,
            revoked_at: None,
            last_used_at: None,
            version: 0,
            // Its own permissions, canonical (its roles' stay roles: a
            // later change of a role reaches the successor too).
            permissions: self
                .inner
                .catalog
                .parse_stored(old.permissions.iter().map(String::as_str))
                .0
                .names()
                .map(str::to_string)
                .collect(),
            inactivity_warning: None,
            expiry_warning: None,
            rolled_from: Some(old.id),
            rolled_to: None,
            credits_spent: 0,
            // A new secret: not exposed.
            exposed_at: None,
            ..old.clone()
        };
        authorize(&rules, actor, None, Some(&draft))?;
        // The ceiling and allowlist rules of its tenant, as they are now
        // (not the lifetime: a roll keeps the old key's expiry). A key
        // that breaks them can still be revoked.
        self.policy_check(Scope::Change)(&rules, &draft)?;
        let successor = KeyId::random()?;
        let token = self.inner.format.generate(successor)?;
        let ended = self.end_for_roll(actor, &old, successor, grace).await?;
        let undo = Unroll {
            old: &old,
            ended: &ended,
            successor,
        };
        // Then what is left of its uses moves, all at once: a use racing
        // the roll is counted once, on one side or the other.
        let moved = match old.remaining {
            Some(_) => match self.take_all_uses(id).await {
                Ok(moved) => Some(moved),
                Err(e) => {
                    self.unroll(&undo, None).await;
                    return Err(e);
                }
            },
            None => None,
        };
        let record = KeyRecord {
            id: successor,
            prefix: token.display_prefix(),
            hash: KeyHash::of(token.expose_secret().as_bytes()),
            remaining: moved.or(draft.remaining),
            ..draft
        };
        // What is stored is what is authorized, not only the draft.
        let stored = match authorize(&rules, actor, None, Some(&record)) {
            Ok(()) => {
                let grace_until = ended.revoked_at.or(ended.expires_at);
                let rolled = Notice::new(EventType::Rolled, actor.id())
                    .with("rolled_from", old.id.as_str())
                    .with("grace_until", grace_until.map(rfc3339));
                let inserted = self.insert_key(&record, &[rolled]).await;
                inserted.map_err(KeyError::from)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            // All or nothing: the old key works again, with its uses.
            self.unroll(&undo, moved).await;
            return Err(e);
        }
        // What the old key spent of its limits, the new one has spent:
        // a key cannot refill its limits by rolling itself.
        self.inner.cache.inherit_limit(&old.id, successor);
        self.inner.limits.inherit(&old.id, successor);
        let key = self.info(record, now);
        Ok((old.prefix, IssuedKey { token, key }))
    }

    /// Marks the old key as rolled to `successor`, first: from then on its
    /// uses come from the successor's, and it can be neither rolled again
    /// nor reactivated. It works until `now + grace` (never past its own
    /// expiry); a zero grace revokes it. The old key as written.
    async fn end_for_roll(
        &self,
        actor: &Actor,
        old: &KeyRecord,
        successor: KeyId,
        grace: Duration,
    ) -> Result<KeyRecord, KeyError> {
        self.modify_record(actor, &old.id, &[], |r, now| {
            rollable(r, now)?;
            // The successor copies the key as it was read: a change made
            // since (a narrower permission set, say) must not be lost, so
            // such a roll is refused; retry it.
            if r.version != old.version {
                return Err(KeyError::Store(StoreError::Conflict(r.id)));
            }
            r.rolled_to = Some(successor);
            // Its uses come from the successor now, refills included.
            r.refill = None;
            if grace == Duration::zero() {
                r.revoked_at = Some(now);
            } else {
                let until = now
                    .checked_add_signed(grace)
                    .unwrap_or_else(latest)
                    .min(latest())
                    .trunc_subsecs(6);
                r.expires_at = Some(r.expires_at.map_or(until, |e| e.min(until)));
            }
            Ok(())
        })
        .await
    }

    /// Takes every use left of a usage-limited key; how many. A key that
    /// is gone, or no longer usage-limited, is an error: a roll never
    /// turns a limited key into an unlimited one.
    async fn take_all_uses(&self, id: &KeyId) -> Result<u64, KeyError> {
        let store = &*self.inner.store;
        for _ in 0..UPDATE_ATTEMPTS {
            let record = store.get(id).await?.ok_or(KeyError::NotFound(*id))?;
            let Some(left) = record.remaining else {
                return Err(KeyError::Store(StoreError::Conflict(*id)));
            };
            // At most `MAX_USES`, as any key holds (a host's store may
            // report more): what is taken, and what the successor gets.
            let taken = left.min(MAX_USES);
            let delta = i64::try_from(taken).unwrap_or(i64::MAX);
            match store.adjust_credits(id, -delta).await? {
                Credit::Consumed { .. } => return Ok(taken),
                // A use landed between the read and the take: read again.
                Credit::Exhausted => continue,
                Credit::Missing => return Err(KeyError::NotFound(*id)),
                _ => return Err(KeyError::Store(StoreError::Conflict(*id))),
            }
        }
        Err(KeyError::Store(StoreError::Conflict(*id)))
    }
    /// Undoes a roll whose new key could not be stored: the old key gets
    /// back its uses, refill and no successor, and its status and expiry
    /// unless it was changed since the roll wrote it (a revocation made
    /// meanwhile stays, even one that kept the roll's instant). Not
    /// authorized again: it takes back this call's own change. Logged if
    /// it fails.
    async fn unroll(&self, undo: &Unroll<'_>, moved: Option<u64>) {
        let (old, store) = (undo.old, &*self.inner.store);
        if let Some(uses) = moved {
            self.give_back(&old.id, uses).await;
        }
        for _ in 0..UPDATE_ATTEMPTS {
            let mut record = match store.get(&old.id).await {
                Ok(Some(r)) if r.rolled_to == Some(undo.successor) => r,
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(target: "keyward", key = %old.prefix, error = %e, "could not undo a failed roll");
                    return;
                }
            };
            if record.version == undo.ended.version {
                record.revoked_at = old.revoked_at;
                record.expires_at = old.expires_at;
            }
            record.rolled_to = None;
            record.refill = old.refill;
            match self.update_key(&record, &[]).await {
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => {
                    tracing::error!(target: "keyward", key = %old.prefix, error = %e, "could not undo a failed roll");
                    return;
                }
                Ok(_) => return,
            }
        }
    }
}

/// What a roll changed on the old key, to take back if the new key cannot
/// be stored.
struct Unroll<'a> {
    old: &'a KeyRecord,
    /// The old key as the roll wrote it, with the version of that write.
    ended: &'a KeyRecord,
    successor: KeyId,
}
/// A key can be rolled: active, and not rolled already.
fn rollable(key: &KeyRecord, now: DateTime<Utc>) -> Result<(), KeyError> {
    if let Some(successor) = key.rolled_to {
        return Err(KeyError::RolledAway {
            id: key.id,
            successor,
        });
    }
    match KeyStatus::of(key, now) {
        KeyStatus::Active => Ok(()),
        status => Err(KeyError::NotActive { id: key.id, status }),
    }
}
