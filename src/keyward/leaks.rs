//! Leaked-key reports: [`Keyward::report_leaks`]. Each reported token is
//! checked as a verify checks it (shape and checksum, then the stored
//! hash in constant time); a key's token is a true positive and the key
//! is revoked at once.

use std::collections::HashMap;

use super::webhooks::Notice;
use super::Keyward;
use crate::audit::{AuditAction, AuditEvent, AuditOutcome};
use crate::error::{KeyError, StoreError};
use crate::key::Actor;
use crate::leak::{Label, LeakFeedback, LeakReport};
use crate::tenant_policy::LeakResponse;
use crate::token::KeyHash;
use crate::webhook::EventType;

/// The actor of revocations for leaked keys, as the audit trail names it.
pub const SECRET_SCANNING_ACTOR: &str = "keyward:secret-scanning";

impl Keyward {
    /// Answers a scanner's report of leaked tokens (verify its signature
    /// first: [`ScannerKeys::verify`](crate::leak::ScannerKeys::verify)).
    /// For each token, the feedback GitHub's partner program takes:
    /// `true_positive` for a key's token, and the key is revoked and
    /// marked exposed (audited as `revoke` by [`SECRET_SCANNING_ACTOR`],
    /// with the report's `url` and `source` as the event's detail; sent
    /// as `key.leaked` and `key.revoked` webhooks), or, for a tenant
    /// whose policy is [`LeakResponse::Notify`](crate::LeakResponse::Notify),
    /// only marked exposed (audited as `leak`, sent as `key.leaked`);
    /// `false_positive` for anything else.
    ///
    /// A token is only ever compared through its hash, as a verify
    /// compares it. A malformed token, a wrong checksum, an unknown id (one
    /// that never existed or was deleted) and another secret all answer
    /// `false_positive` alike: the answer says no more than the id does.
    /// A key already revoked or expired is still a true positive.
    ///
    /// A token reported more than once is looked at once; a key revoked
    /// (or, under `Notify`, marked) already is not written again. Every
    /// report is audited (`leak_report`).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read or written (the keys
    /// of tokens before the failure are revoked; report again).
    pub async fn report_leaks(
        &self,
        reports: &[LeakReport],
    ) -> Result<Vec<LeakFeedback>, StoreError> {
        let answered = self.answer_leaks(reports).await;
        self.audit_leak_report(match &answered {
            Ok(_) => AuditOutcome::Success,
            Err(_) => AuditOutcome::Failed(crate::error::STORE_UNAVAILABLE),
        });
        answered
    }

    async fn answer_leaks(&self, reports: &[LeakReport]) -> Result<Vec<LeakFeedback>, StoreError> {
        let mut feedback = Vec::with_capacity(reports.len());
        // A token reported twice is looked at once.
        let mut seen: HashMap<[u8; 32], Label> = HashMap::new();
        let mut revoked = 0u64;
        for report in reports {
            let hash = KeyHash::of(report.token.as_bytes());
            let label = match seen.get(hash.as_bytes()) {
                Some(label) => *label,
                None => {
                    let label = self.leaked(report).await?;
                    if label == Label::TruePositive {
                        revoked += 1;
                    }
                    seen.insert(*hash.as_bytes(), label);
                    label
                }
            };
            feedback.push(LeakFeedback {
                token_hash: hash.to_hex(),
                token_type: report.token_type.chars().take(100).collect(),
                label,
            });
        }
        tracing::info!(target: "keyward", tokens = reports.len(), true_positives = revoked, "leaked-key report answered");
        Ok(feedback)
    }

    /// A report, answered or refused, in the audit trail.
    pub(crate) fn audit_leak_report(&self, outcome: AuditOutcome) {
        self.inner.audit.record(&AuditEvent {
            at: self.now(),
            action: AuditAction::LeakReport,
            outcome,
            actor: Some(SECRET_SCANNING_ACTOR.to_string()),
            tenant: None,
            key_id: None,
            key_prefix: None,
            related_key_id: None,
            detail: None,
        });
    }

    /// Whether `report` names a key's token; if so, the key is revoked
    /// or marked exposed, as its tenant's policy says.
    async fn leaked(&self, report: &LeakReport) -> Result<Label, StoreError> {
        let Ok(parsed) = self.parse(&report.token) else {
            return Ok(Label::FalsePositive);
        };
        let id = parsed.id();
        let Some(record) = self.inner.store.get(&id).await? else {
            return Ok(Label::FalsePositive);
        };
        if !record.hash.ct_eq(&parsed.hash()) {
            return Ok(Label::FalsePositive);
        }
        let shorten = |s: Option<&str>| -> String {
            s.unwrap_or("-")
                .chars()
                .filter(|c| !c.is_control())
                .take(512)
                .collect()
        };
        let (url, source) = (
            shorten(report.url.as_deref()),
            shorten(report.source.as_deref()),
        );
        let response = self.inner.policies.on_leak(&record.tenant);
        let done = record.revoked_at.is_some()
            || (response == LeakResponse::Notify && record.exposed_at.is_some());
        if done {
            // Revoked (or marked) already: nothing to write; a token
            // repeated in many reports must not turn into as many writes.
            tracing::warn!(target: "keyward", key = %record.prefix, key_id = %id, url, source, "a leaked key was reported again");
            return Ok(Label::TruePositive);
        }
        let actor = Actor::new(SECRET_SCANNING_ACTOR, &record.tenant)
            .permissions(self.inner.catalog.all())
            .may_manage_keys(true);
        let revoke = response == LeakResponse::Revoke;
        // Where a token that still works can be fetched is told to no
        // reader or endpoint (only the operator's log has it): a reader
        // must not learn how to act as a key it could not manage.
        let shown_url = revoke.then_some(url.as_str());
        let leaked = Notice::new(EventType::Leaked, SECRET_SCANNING_ACTOR)
            .with("url", shown_url)
            .with("source", source.as_str())
            .with("revoked", revoke);
        let mut notices = vec![leaked];
        if revoke {
            notices.push(Notice::new(EventType::Revoked, SECRET_SCANNING_ACTOR));
        }
        let result = self
            .modify_unaudited(&actor, &id, &notices, |r, now| {
                r.exposed_at.get_or_insert(now);
                if revoke {
                    r.revoked_at.get_or_insert(now);
                }
                Ok(())
            })
            .await;
        let detail = serde_json::json!({ "url": shown_url, "source": source }).to_string();
        let action = if revoke {
            AuditAction::Revoke
        } else {
            AuditAction::Leak
        };
        self.audit_manage_detailed(action, &actor, &result, detail);
        match result {
            Ok(_) => {
                tracing::warn!(target: "keyward", key = %record.prefix, key_id = %id, tenant = %record.tenant, url, source, revoked = revoke, "a leaked key was reported");
            }
            // Deleted meanwhile: exposed all the same, nothing more to do.
            Err(KeyError::NotFound(_)) => {
                tracing::warn!(target: "keyward", key = %record.prefix, key_id = %id, url, source, "a leaked key was reported; it is gone");
            }
            Err(KeyError::Store(e)) => return Err(e),
            Err(e) => {
                tracing::error!(target: "keyward", key = %record.prefix, key_id = %id, error = %e, "a leaked key could not be revoked");
            }
        }
        Ok(Label::TruePositive)
    }
}
