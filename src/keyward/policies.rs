//! Enforcing tenant key policies ([`crate::tenant_policy`]) in the
//! management calls: the rules on a key as a call leaves it, and the cap
//! on active keys, which needs the store.

use std::ops::ControlFlow;

use super::Keyward;
use crate::authority::{stored, Rules};
use crate::error::KeyError;
use crate::key::{Actor, KeyRecord, KeyStatus};
use crate::tenant_policy::{PolicyRule, Scope};
use crate::token::KeyId;

impl Keyward {
    /// `key` obeys its tenant's policy, and, for a new key, the tenant has
    /// room for another active key.
    pub(super) async fn obey_policy(
        &self,
        rules: &Rules<'_>,
        key: &KeyRecord,
        scope: Scope,
    ) -> Result<(), KeyError> {
        self.policy_check(scope)(rules, key)?;
        if scope == Scope::Create {
            self.obey_count(&key.tenant, None, 0).await?;
        }
        Ok(())
    }

    /// The rules of the policy of a key's tenant, for a key as `scope`
    /// leaves it.
    pub(super) fn policy_check(
        &self,
        scope: Scope,
    ) -> impl Fn(&Rules<'_>, &KeyRecord) -> Result<(), KeyError> + '_ {
        move |rules, key| {
            let effective = stored(rules, key);
            self.inner
                .policies
                .check(key, &effective, scope)
                .map_err(|rule| KeyError::PolicyViolation {
                    tenant: key.tenant.clone(),
                    rule,
                })
        }
    }

    /// The key `id` may become active again without passing its tenant's
    /// cap (nothing to check unless it is revoked now).
    pub(super) async fn obey_count_for(&self, actor: &Actor, id: &KeyId) -> Result<(), KeyError> {
        let record = self.load_for(actor, id).await?;
        if record.revoked_at.is_none() {
            return Ok(());
        }
        self.obey_count(&record.tenant, Some(id), 0).await
    }

    /// `tenant` holds fewer active keys than its policy's cap (not
    /// counting `except`, counting `pending` more about to be written).
    /// Checked before the write, so concurrent creations may pass the cap
    /// by the number that race.
    pub(super) async fn obey_count(
        &self,
        tenant: &str,
        except: Option<&KeyId>,
        pending: u64,
    ) -> Result<(), KeyError> {
        let Some(max) = self.inner.policies.max_active(tenant) else {
            return Ok(());
        };
        let now = self.now();
        let mut active = pending;
        self.tenant_pages(tenant, |page| {
            active += page
                .iter()
                .filter(|r| Some(&r.id) != except && KeyStatus::of(r, now) == KeyStatus::Active)
                .count() as u64;
            if active >= max {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await?;
        if active >= max {
            return Err(KeyError::PolicyViolation {
                tenant: tenant.to_string(),
                rule: PolicyRule::MaxActiveKeys(max),
            });
        }
        Ok(())
    }
}
