//! The maintenance sweep: inactivity deletion, expiry and inactivity
//! warnings, and purging after the retention period.

use chrono::{DateTime, Duration, SubsecRound, Utc};

use super::webhooks::{rfc3339, Notice};
use super::{earliest, latest, Keyward, PAGE, UPDATE_ATTEMPTS};
use crate::audit::AuditAction;
use crate::error::StoreError;
use crate::key::{KeyRecord, KeyStatus};
use crate::policy::{
    due_warning, RemovalReason, SweepReport, SweepWarning, SweptKey, WarningKind, WarningMark,
};
use crate::store::SweepDue;
use crate::webhook::EventType;

/// The actor named in audit events of the maintenance sweep.
pub const SWEEP_ACTOR: &str = "keyward:sweep";

impl Keyward {
    /// When an active key will be deleted for disuse, if the policy is on.
    pub(super) fn inactivity_deadline(&self, record: &KeyRecord) -> Option<DateTime<Utc>> {
        let after = self.inner.lifecycle.inactivity.after?;
        let last = record
            .last_used_at
            .max(self.inner.last_used.pending(&record.id))
            .map_or(record.created_at, |u| u.max(record.created_at))
            // A key that only starts working later is not idle before.
            .max(record.not_before.unwrap_or(record.created_at));
        // To the microsecond, as stored in the warning mark.
        last.checked_add_signed(after).map(|d| d.trunc_subsecs(6))
    }

    /// The maintenance pass; run it periodically (hourly is plenty), on one
    /// instance or many. It walks the store in pages of 500 and:
    ///
    /// - deletes active keys unused for the inactivity period;
    /// - warns, once per key and threshold, of keys that will be deleted
    ///   for disuse or whose fixed expiry is near (using a key starts a new
    ///   cycle); the mark is written with a conditional update, so
    ///   concurrent sweeps on several instances warn once;
    /// - purges revoked and expired keys after the retention period, if
    ///   one is set.
    ///
    /// It first writes this instance's pending "last used" instants. Every
    /// deletion and warning is also an audit event by [`SWEEP_ACTOR`].
    ///
    /// # Errors
    /// [`StoreError`] when the store fails; what was done before stays done.
    pub async fn sweep(&self) -> Result<SweepReport, StoreError> {
        let inner = &*self.inner;
        self.flush_last_used().await?;
        let now = self.now();
        let due = self.sweep_due(now);
        let mut report = SweepReport::default();
        let mut after = None;
        loop {
            let page = inner.store.scan_due(&due, after.as_ref(), PAGE).await?;
            let full = page.len() == PAGE;
            after = page.last().map(|r| r.id);
            for record in page {
                report.scanned += 1;
                self.sweep_one(record, now, &mut report).await?;
            }
            if !full {
                break;
            }
        }
        inner.limits.evict_idle(self.now_us());
        Ok(report)
    }

    /// The keys a sweep at `now` must look at: expiring within the longest
    /// expiry warning, idle past the inactivity period less its longest
    /// warning, or ended before the retention period.
    fn sweep_due(&self, now: DateTime<Utc>) -> SweepDue {
        let inner = &*self.inner;
        let longest = |w: &[Duration]| w.iter().copied().max();
        let expiring_before = longest(&inner.lifecycle.expiry_warnings.warn_before).map(|w| {
            now.checked_add_signed(w)
                .unwrap_or_else(latest)
                .min(latest())
        });
        let idle_since = inner.lifecycle.inactivity.after.map(|after| {
            let warn =
                longest(&inner.lifecycle.inactivity.warn_before).unwrap_or_else(Duration::zero);
            now.checked_add_signed(warn)
                .and_then(|t| t.checked_sub_signed(after))
                .unwrap_or_else(earliest)
                .max(earliest())
        });
        let ended_before = inner.lifecycle.retention.purge_after.map(|keep| {
            now.checked_sub_signed(keep)
                .unwrap_or_else(earliest)
                .max(earliest())
        });
        SweepDue {
            now,
            expiring_before,
            idle_since,
            ended_before,
        }
    }

    /// Purges, deletes or warns of one key, re-reading it after losing a
    /// race with another sweep or a management call.
    async fn sweep_one(
        &self,
        mut record: KeyRecord,
        now: DateTime<Utc>,
        report: &mut SweepReport,
    ) -> Result<(), StoreError> {
        for attempt in 1..=UPDATE_ATTEMPTS {
            if KeyStatus::of(&record, now) != KeyStatus::Active {
                if self.purge_due(&record, now) {
                    self.sweep_delete(&record, RemovalReason::Retention, &mut report.purged)
                        .await?;
                }
                return Ok(());
            }
            let idle_until = self.inactivity_deadline(&record);
            if idle_until.is_some_and(|d| now >= d) {
                // Re-read: a use elsewhere may have landed since the page was read.
                let fresh = self.inner.store.get(&record.id).await?;
                let still = fresh.as_ref().and_then(|f| self.inactivity_deadline(f));
                if still.is_some_and(|d| now >= d) {
                    self.sweep_delete(&record, RemovalReason::Inactive, &mut report.deleted)
                        .await?;
                }
                return Ok(());
            }
            let (changed, warnings) = self.warnings_due(&record, idle_until, now);
            if warnings.is_empty() {
                return Ok(());
            }
            let notices: Vec<Notice> = warnings
                .iter()
                .map(|(kind, mark)| {
                    let kind = match kind {
                        WarningKind::Inactivity => EventType::InactivityWarning,
                        WarningKind::Expiry => EventType::ExpiryWarning,
                    };
                    Notice::new(kind, SWEEP_ACTOR)
                        .with("deadline", rfc3339(mark.deadline))
                        .with("before_secs", mark.before_secs)
                })
                .collect();
            match self.update_key(&changed, &notices).await {
                Ok(_) => {
                    self.report_warnings(&record, warnings, report);
                    return Ok(());
                }
                // Another sweep or a management call won: re-read and decide again.
                Err(StoreError::Conflict(_)) if attempt < UPDATE_ATTEMPTS => {
                    match self.inner.store.get(&record.id).await? {
                        Some(fresh) => record = fresh,
                        None => return Ok(()),
                    }
                }
                Err(StoreError::NotFound(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether a revoked or expired key has outlived the retention period.
    fn purge_due(&self, record: &KeyRecord, now: DateTime<Utc>) -> bool {
        let since = record.revoked_at.or(record.expires_at);
        let keep = self.inner.lifecycle.retention.purge_after;
        keep.zip(since)
            .is_some_and(|(keep, since)| now - since >= keep)
    }

    /// The warnings due at `now` for an active key that will be deleted
    /// for disuse at `idle_until` (if the policy is on), and the key with
    /// their marks set, so that each is sent once.
    fn warnings_due(
        &self,
        record: &KeyRecord,
        idle_until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> (KeyRecord, Vec<(WarningKind, WarningMark)>) {
        let policy = &self.inner.lifecycle;
        let mut changed = record.clone();
        let mut warnings = Vec::new();
        let checks = [
            (
                WarningKind::Inactivity,
                idle_until,
                &policy.inactivity.warn_before,
                &mut changed.inactivity_warning,
            ),
            (
                WarningKind::Expiry,
                record.expires_at,
                &policy.expiry_warnings.warn_before,
                &mut changed.expiry_warning,
            ),
        ];
        for (kind, deadline, thresholds, mark) in checks {
            let Some(deadline) = deadline else {
                continue;
            };
            if let Some(due) = due_warning(thresholds, deadline, now, *mark) {
                *mark = Some(due);
                warnings.push((kind, due));
            }
        }
        (changed, warnings)
    }

    /// Audits and reports warnings whose marks were written.
    fn report_warnings(
        &self,
        record: &KeyRecord,
        warnings: Vec<(WarningKind, WarningMark)>,
        report: &mut SweepReport,
    ) {
        for (kind, mark) in warnings {
            self.audit_sweep(AuditAction::Warn, record, None);
            report.warnings.push(SweepWarning {
                kind,
                key_id: record.id,
                prefix: record.prefix,
                tenant: record.tenant.clone(),
                name: record.name.clone(),
                created_by: record.created_by.clone(),
                deadline: mark.deadline,
                before: mark.before(),
            });
        }
    }

    async fn sweep_delete(
        &self,
        record: &KeyRecord,
        reason: RemovalReason,
        into: &mut Vec<SweptKey>,
    ) -> Result<(), StoreError> {
        let why = match reason {
            RemovalReason::Inactive => "inactive",
            RemovalReason::Retention => "retention",
        };
        let deleted = Notice::new(EventType::Deleted, SWEEP_ACTOR).with("reason", why);
        if self.delete_key(record, &[deleted]).await? {
            self.audit_sweep(AuditAction::Delete, record, None);
            into.push(SweptKey {
                key_id: record.id,
                prefix: record.prefix,
                tenant: record.tenant.clone(),
                name: record.name.clone(),
                reason,
            });
        }
        Ok(())
    }

    /// Runs [`Keyward::sweep`] every `every` (at least one second) on the
    /// tokio runtime, handing each result to `on_report`, e.g. to send the
    /// warnings as notifications. Abort the returned handle to stop it.
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn spawn_sweeper<F>(
        &self,
        every: std::time::Duration,
        mut on_report: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: FnMut(Result<SweepReport, StoreError>) + Send + 'static,
    {
        let keys = self.clone();
        let every = every.max(std::time::Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                on_report(keys.sweep().await);
            }
        })
    }
}
