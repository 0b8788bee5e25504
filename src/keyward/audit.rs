//! What verification, management and the sweep record in the audit
//! trail: one event per call, naming keys by id and display prefix,
//! never by secret or hash.

use super::sweep::SWEEP_ACTOR;
use super::Keyward;
use crate::audit::{AuditAction, AuditEvent, AuditOutcome};
use crate::clock::micros_to_time;
use crate::error::{KeyError, VerifyError};
use crate::key::{Actor, KeyRecord};
use crate::token::{DisplayPrefix, KeyId};

impl Keyward {
    /// Records a refused verify: `key` when the token named one, the
    /// key's tenant once the secret was proven.
    pub(super) fn audit_verify(
        &self,
        key: Option<(KeyId, DisplayPrefix)>,
        err: &VerifyError,
        tenant: Option<&str>,
    ) {
        self.record_refusal(key, err, tenant, || None);
    }

    /// Records refusals past the read budget: `refused` of them since
    /// the last such event, `key` the latest.
    pub(super) fn audit_unread(
        &self,
        key: (KeyId, DisplayPrefix),
        err: &VerifyError,
        refused: u64,
    ) {
        self.record_refusal(Some(key), err, None, || {
            Some(format!(r#"{{"refused_unread":{refused}}}"#))
        });
    }

    /// A refused verify's event, built only if the sink wants refusals.
    fn record_refusal(
        &self,
        key: Option<(KeyId, DisplayPrefix)>,
        err: &VerifyError,
        tenant: Option<&str>,
        detail: impl FnOnce() -> Option<String>,
    ) {
        let audit = &*self.inner.audit;
        if !audit.wants_refusals() {
            return;
        }
        let outcome = match err {
            VerifyError::Store(_) | VerifyError::LimiterUnavailable => {
                AuditOutcome::Failed(err.code())
            }
            _ => AuditOutcome::Denied(err.code()),
        };
        audit.record(&AuditEvent {
            at: micros_to_time(self.now_us()),
            action: AuditAction::Verify,
            outcome,
            actor: None,
            tenant: tenant.map(str::to_string),
            key_id: key.map(|k| k.0),
            key_prefix: key.map(|k| k.1),
            related_key_id: None,
            detail: detail(),
        });
    }

    /// Records a management call by `actor` on `key` (id, prefix and
    /// tenant, when the call succeeded).
    pub(super) fn audit_manage<T>(
        &self,
        action: AuditAction,
        actor: &Actor,
        key: Option<(KeyId, DisplayPrefix, &str)>,
        result: &Result<T, KeyError>,
    ) {
        self.audit_manage_related(action, actor, key, None, result);
    }

    /// Records a management call that names a second key (a roll).
    pub(super) fn audit_manage_related<T>(
        &self,
        action: AuditAction,
        actor: &Actor,
        key: Option<(KeyId, DisplayPrefix, &str)>,
        related_key_id: Option<KeyId>,
        result: &Result<T, KeyError>,
    ) {
        self.audit_manage_event(action, actor, key, related_key_id, result, None);
    }

    fn audit_manage_event<T>(
        &self,
        action: AuditAction,
        actor: &Actor,
        key: Option<(KeyId, DisplayPrefix, &str)>,
        related_key_id: Option<KeyId>,
        result: &Result<T, KeyError>,
        detail: Option<String>,
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
            at: self.now(),
            action,
            outcome,
            actor: Some(actor.id().to_string()),
            // The key's tenant, so that a parent tenant's change to a
            // child's key is in the child's trail; the actor's when no key
            // was reached.
            tenant: Some(key.map_or(actor.tenant(), |k| k.2).to_string()),
            key_id,
            key_prefix: key.map(|k| k.1),
            related_key_id,
            detail,
        });
    }

    /// Records a management call with a detail (a leak's `url` and
    /// `source`): the key as the call left it.
    #[cfg(feature = "leaks")]
    pub(super) fn audit_manage_detailed(
        &self,
        action: AuditAction,
        actor: &Actor,
        result: &Result<crate::key::KeyInfo, KeyError>,
        detail: String,
    ) {
        let key = result
            .as_ref()
            .ok()
            .map(|k| (k.id, k.prefix, k.tenant.as_str()));
        self.audit_manage_event(action, actor, key, None, result, Some(detail));
    }

    /// Records what the sweep did to a key.
    pub(super) fn audit_sweep(
        &self,
        action: AuditAction,
        record: &KeyRecord,
        reason: Option<&'static str>,
    ) {
        self.inner.audit.record(&AuditEvent {
            at: self.now(),
            action,
            outcome: reason.map_or(AuditOutcome::Success, AuditOutcome::Denied),
            actor: Some(SWEEP_ACTOR.to_string()),
            tenant: Some(record.tenant.clone()),
            key_id: Some(record.id),
            key_prefix: Some(record.prefix),
            related_key_id: None,
            detail: None,
        });
    }
}
