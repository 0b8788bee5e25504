//! Importing keys from another system: [`Keyward::import`]. Each row is
//! checked as [`Keyward::create`] checks a new key, then stored under the
//! hash it brings; the id is the token's (keyward tokens) or derived from
//! the hash (legacy tokens), so a second run finds every key in place.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, SubsecRound, Utc};
use serde::Serialize;

use super::Keyward;
use crate::audit::AuditAction;
use crate::authority::{authorize, ensure_manager};
use crate::error::{Dimension, KeyError, StoreError};
use crate::import::{ImportRow, ImportedSecret, RowError};
use crate::key::{Actor, KeyRecord};
use crate::legacy;
use crate::tenant_policy::Scope;
use crate::token::{DisplayPrefix, KeyHash, KeyId};

/// Whether `actor` may import: a manager, and not a usage-limited key
/// (whose keys must take their uses from its own, which an import of
/// many keys does not do).
fn import_allowed(actor: &Actor) -> Result<(), KeyError> {
    ensure_manager(actor)?;
    if actor.key_id().is_some() && (actor.uses.is_some() || actor.refill.is_some()) {
        return Err(KeyError::BoundExceeded {
            dimension: Dimension::Usage,
        });
    }
    Ok(())
}

/// How [`Keyward::import`] runs.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ImportOptions {
    /// Check every row and report, but store nothing.
    pub dry_run: bool,
}

impl ImportOptions {
    /// Import for real.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only check and report (`true`), or import (`false`).
    #[must_use]
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}

/// What [`Keyward::import`] did, or in a dry run would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ImportReport {
    /// Whether nothing was stored.
    pub dry_run: bool,
    /// Keys imported (in a dry run: that would be).
    pub imported: u64,
    /// Rows whose key is stored already, with the same hash: imported by
    /// an earlier run, or twice in this one.
    pub already_present: u64,
    /// Rows refused, each with its line and reason.
    pub rejected: Vec<RowError>,
}

/// Rows checked and stored in batches of this many.
const BATCH: usize = 500;

/// A checked row: a record to store, or a key seen earlier in the run.
enum Checked {
    New(Box<KeyRecord>),
    Again,
}

/// An import under way.
struct Run {
    report: ImportReport,
    /// Every key id this run has checked, and its hash.
    seen: HashMap<KeyId, KeyHash>,
    /// Checked rows not yet stored, and how many per tenant (which a
    /// tenant's cap on active keys counts too).
    pending: Vec<(u64, KeyRecord)>,
    pending_in: HashMap<String, u64>,
}

/// Why a row went nowhere: refused (with the refusal's code when the
/// rules refused it, for the audit trail), or the store failed (which
/// ends the import).
enum Failed {
    Row(String, Option<&'static str>),
    Store(StoreError),
}

fn refused(reason: impl Into<String>) -> Failed {
    Failed::Row(reason.into(), None)
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<KeyError> for Failed {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Store(e) => Self::Store(e),
            // The tenant text is not quoted: a token pasted in the wrong
            // column must not reach the report.
            KeyError::InvalidTenant(_) => Self::Row(
                "invalid tenant: lowercase letters, digits, `-` and `_`, at or (with nested tenants) below the importer's".into(),
                Some(e.code()),
            ),
            other => Self::Row(other.to_string(), Some(other.code())),
        }
    }
}

impl Keyward {
    /// Imports keys from another system (or another keyward deployment):
    /// each row is checked as [`create`](Self::create) checks a new key
    /// (the actor's authority, the catalog, tenant policies) and stored
    /// with the hash it brings, so that its token keeps working. A row may
    /// bring a keyward token or its hash and id, or a token of a
    /// [`LegacyFormat`](crate::LegacyFormat) this instance accepts, or its
    /// hash. Rows that fail go into the report with their reason; the
    /// others are imported.
    ///
    /// Idempotent: a key's id is a function of its token (keyward tokens
    /// carry it, legacy ids are derived from the hash), so a row whose key
    /// is stored already, with the same hash, is counted as
    /// `already_present`, and one whose id is held by another key is
    /// refused. Each imported key is audited
    /// ([`AuditAction::Import`](crate::AuditAction::Import)).
    ///
    /// **A deleted key comes back** when a later run imports its row
    /// again: keyward keeps no record of deleted ids. Take such rows out
    /// of the file, or revoke keys (a revoked key stays, refused) rather
    /// than delete them. A row's id is the importer's to choose (a keyward
    /// token carries its id), so an importer may take any free id.
    ///
    /// A usage-limited key cannot import (its keys would have to take
    /// their uses from its own). A tenant's cap on active keys counts the
    /// rows of the run.
    ///
    /// A row's `created_at` is kept, and its `last_used_at` starts the
    /// inactivity clock (a key last used longer ago than the
    /// [`InactivityPolicy`](crate::InactivityPolicy) allows is inactive at
    /// once, as it would have been here); a row that brings a creation
    /// time but no last use counts as used at its import.
    ///
    /// `rows` is read as it goes (e.g. from
    /// [`import::read_jsonl`](crate::import::read_jsonl) over a file).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use keyward::import::read_jsonl;
    /// use keyward::{Actor, Catalog, Charset, ImportOptions, Keyward, LegacyFormat, MemoryStore};
    ///
    /// let catalog = Catalog::builder().resource("contacts", ["read"]).build()?;
    /// let acme = LegacyFormat::new("acme_live_", Charset::Alphanumeric, 32..=32)?;
    /// let keys = Keyward::builder(MemoryStore::new(), catalog.clone()).legacy_format(acme).build()?;
    /// let operator = Actor::new("ops", "acme").permissions(catalog.all()).may_manage_keys(true);
    ///
    /// let old = "acme_live_4eC39HqLyjWDarjtT1zdp7dc4eC39HqL";
    /// let file = format!(r#"{{"token": "{old}", "name": "Zapier", "permissions": ["contacts:read"]}}"#);
    /// let report = keys.import(&operator, read_jsonl(file.as_bytes()), ImportOptions::new()).await?;
    /// assert_eq!(report.imported, 1);
    /// assert!(keys.verify(old).await?.require("contacts:read").is_ok());
    ///
    /// let again = keys.import(&operator, read_jsonl(file.as_bytes()), ImportOptions::new()).await?;
    /// assert_eq!((again.imported, again.already_present), (0, 1));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`KeyError::Forbidden`] if the actor may not manage keys;
    /// [`KeyError::Store`] when the store fails (the rows before are
    /// imported; run it again to import the rest).
    pub async fn import<I>(
        &self,
        actor: &Actor,
        rows: I,
        options: ImportOptions,
    ) -> Result<ImportReport, KeyError>
    where
        I: IntoIterator<Item = Result<ImportRow, RowError>>,
    {
        let allowed = import_allowed(actor);
        if allowed.is_err() {
            self.audit_manage(AuditAction::Import, actor, None, &allowed);
            allowed?;
        }
        let mut run = Run {
            report: ImportReport {
                dry_run: options.dry_run,
                ..ImportReport::default()
            },
            seen: HashMap::new(),
            pending: Vec::with_capacity(BATCH),
            pending_in: HashMap::new(),
        };
        for row in rows {
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    run.report.rejected.push(e);
                    continue;
                }
            };
            let line = row.line;
            match self.checked(actor, row, &mut run).await {
                Ok(Checked::New(record)) => {
                    *run.pending_in.entry(record.tenant.clone()).or_default() += 1;
                    run.pending.push((line, *record));
                }
                Ok(Checked::Again) => run.report.already_present += 1,
                Err(Failed::Row(reason, code)) => {
                    if let Some(code) = code {
                        self.audit_refused_row(actor, code);
                    }
                    run.report.rejected.push(RowError { line, reason });
                }
                Err(Failed::Store(e)) => return Err(e.into()),
            }
            if run.pending.len() == BATCH {
                self.place(actor, &mut run, options).await?;
            }
        }
        self.place(actor, &mut run, options).await?;
        let report = run.report;
        tracing::info!(
            target: "keyward",
            actor = actor.id(),
            dry_run = report.dry_run,
            imported = report.imported,
            already_present = report.already_present,
            rejected = report.rejected.len(),
            "import finished"
        );
        Ok(report)
    }

    /// A row the rules refused, in the audit trail (the report has its
    /// line).
    fn audit_refused_row(&self, actor: &Actor, code: &'static str) {
        self.inner.audit.record(&crate::audit::AuditEvent {
            at: self.now(),
            action: AuditAction::Import,
            outcome: crate::audit::AuditOutcome::Denied(code),
            actor: Some(actor.id().to_string()),
            tenant: Some(actor.tenant().to_string()),
            key_id: None,
            key_prefix: None,
            related_key_id: None,
            detail: None,
        });
    }

    /// The record a row describes, checked as [`Keyward::create`] checks
    /// a new key; `Again` for a key this run has seen already.
    async fn checked(
        &self,
        actor: &Actor,
        row: ImportRow,
        run: &mut Run,
    ) -> Result<Checked, Failed> {
        let (id, prefix, hash) = self.proof(&row.secret)?;
        if let Some(seen) = run.seen.get(&id) {
            return if seen.ct_eq(&hash) {
                Ok(Checked::Again)
            } else {
                Err(refused(format!(
                    "key id {id} is named by an earlier row with another secret"
                )))
            };
        }
        let rules = self.fresh_rules().await?;
        let now = self.now();
        let mut record = self.draft(actor, row.key, &rules.roles, now)?;
        record.id = id;
        record.prefix = prefix;
        record.hash = hash;
        brought_times(&mut record, row.created_at, row.last_used_at, now)?;
        authorize(&rules, actor, None, Some(&record))?;
        self.policy_check(Scope::Create)(&rules, &record)?;
        let pending = run.pending_in.get(&record.tenant).copied().unwrap_or(0);
        self.obey_count(&record.tenant, None, pending).await?;
        run.seen.insert(id, hash);
        Ok(Checked::New(Box::new(record)))
    }

    /// Stores the pending records (in a dry run, only looks whether their
    /// ids are free) and reports each.
    async fn place(
        &self,
        actor: &Actor,
        run: &mut Run,
        options: ImportOptions,
    ) -> Result<(), KeyError> {
        let pending = std::mem::take(&mut run.pending);
        let (lines, records): (Vec<u64>, Vec<KeyRecord>) = pending.into_iter().unzip();
        let placed = if options.dry_run {
            let mut held = Vec::with_capacity(records.len());
            for r in &records {
                held.push(self.inner.store.get(&r.id).await?);
            }
            held
        } else {
            self.insert_keys(&records).await?
        };
        for ((line, record), held) in lines.into_iter().zip(&records).zip(placed) {
            if let Some(n) = run.pending_in.get_mut(&record.tenant) {
                *n = n.saturating_sub(1);
            }
            match held {
                None => {
                    run.report.imported += 1;
                    if !options.dry_run {
                        let key = Some((record.id, record.prefix, record.tenant.as_str()));
                        self.audit_manage(AuditAction::Import, actor, key, &Ok::<(), KeyError>(()));
                    }
                }
                // The same key: the same secret, in the same tenant.
                Some(held) if held.hash.ct_eq(&record.hash) && held.tenant == record.tenant => {
                    run.report.already_present += 1;
                }
                Some(_) => run.report.rejected.push(RowError {
                    line,
                    reason: format!(
                        "key id {} is held by another key (an id collision, or the row's id is wrong)",
                        record.id
                    ),
                }),
            }
        }
        Ok(())
    }

    /// The id, display prefix and hash a row's secret proves.
    fn proof(&self, secret: &ImportedSecret) -> Result<(KeyId, DisplayPrefix, KeyHash), Failed> {
        match secret {
            ImportedSecret::Token(token) => match self.parse(token.expose_secret()) {
                Ok(p) => Ok((p.id(), p.display_prefix(), p.hash())),
                Err(_) => Err(refused(format!(
                    "the token is neither of this instance's format ({}_…, with a valid checksum) nor of a legacy format it accepts",
                    self.inner.format.prefix()
                ))),
            },
            ImportedSecret::KeywardHash { id, hash } => {
                let prefix = format!("{}_{id}_", self.inner.format.prefix());
                Ok((*id, DisplayPrefix::new(prefix.as_bytes()), *hash))
            }
            ImportedSecret::LegacyHash { prefix, hash } => {
                match self.inner.legacy.iter().find(|f| f.prefix() == prefix) {
                    Some(f) => Ok((legacy::key_id(hash), f.display_prefix(), *hash)),
                    None => Err(refused(
                        "the row's prefix is not that of a legacy format this instance accepts (KeywardBuilder::legacy_format)",
                    )),
                }
            }
        }
    }
}

/// Sets the creation and last-use times a row brings, if they make sense
/// at `now`.
fn brought_times(
    record: &mut KeyRecord,
    created_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), Failed> {
    let fail = |reason: &str| Err(refused(reason));
    // Within what every store keeps (PostgreSQL refuses years before 1).
    let plausible = |t: &DateTime<Utc>| (1970..=9999).contains(&t.year());
    if !created_at.iter().chain(&last_used_at).all(plausible) {
        return fail("created_at and last_used_at must lie between 1970 and 9999");
    }
    // Stores keep microseconds.
    let (created_at, last_used_at) = (
        created_at.map(|t| t.trunc_subsecs(6)),
        last_used_at.map(|t| t.trunc_subsecs(6)),
    );
    if let Some(at) = created_at {
        if at > now {
            return fail("created_at is in the future");
        }
        record.created_at = at;
    }
    if let Some(at) = last_used_at {
        if at > now {
            return fail("last_used_at is in the future");
        }
        if at < record.created_at {
            return fail("last_used_at is before created_at");
        }
        record.last_used_at = Some(at);
    } else if created_at.is_some() {
        // The old system's creation time, but no last use: the inactivity
        // clock starts at the import, so that no key is dead on arrival.
        record.last_used_at = Some(now);
    }
    Ok(())
}
