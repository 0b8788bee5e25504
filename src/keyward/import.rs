//! Importing keys from another system: [`Keyward::import`]. Each row is
//! checked as [`Keyward::create`] checks a new key, then stored under the
//! hash it brings; the id is the token's (keyward tokens) or derived from
//! the hash (legacy tokens), so a second run finds every key in place.

use std::collections::HashSet;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;

use super::Keyward;
use crate::audit::AuditAction;
use crate::authority::{authorize, ensure_manager};
use crate::error::{KeyError, StoreError};
use crate::import::{ImportRow, ImportedSecret, RowError};
use crate::key::{Actor, KeyRecord};
use crate::legacy;
use crate::tenant_policy::Scope;
use crate::token::{DisplayPrefix, KeyHash, KeyId};

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
    seen: HashSet<KeyId>,
    pending: Vec<(u64, KeyRecord)>,
}

/// Why a row went nowhere: refused, or the store failed (which ends the
/// import).
enum Failed {
    Row(String),
    Store(StoreError),
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
            other => Self::Row(other.to_string()),
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
        ensure_manager(actor)?;
        let mut run = Run {
            report: ImportReport {
                dry_run: options.dry_run,
                ..ImportReport::default()
            },
            seen: HashSet::new(),
            pending: Vec::with_capacity(BATCH),
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
            match self.checked(actor, row, &mut run.seen).await {
                Ok(Checked::New(record)) => run.pending.push((line, *record)),
                Ok(Checked::Again) => run.report.already_present += 1,
                Err(Failed::Row(reason)) => run.report.rejected.push(RowError { line, reason }),
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

    /// The record a row describes, checked as [`Keyward::create`] checks
    /// a new key; `Again` for a key this run has seen already.
    async fn checked(
        &self,
        actor: &Actor,
        row: ImportRow,
        seen: &mut HashSet<KeyId>,
    ) -> Result<Checked, Failed> {
        let (id, prefix, hash) = self.proof(&row.secret)?;
        if seen.contains(&id) {
            return Ok(Checked::Again);
        }
        let rules = self.fresh_rules().await?;
        let now = self.now();
        let mut record = self.draft(actor, row.key, &rules.roles, now)?;
        record.id = id;
        record.prefix = prefix;
        record.hash = hash;
        brought_times(&mut record, row.created_at, row.last_used_at, now)?;
        authorize(&rules, actor, None, Some(&record))?;
        self.obey_policy(&rules, &record, Scope::Create).await?;
        seen.insert(id);
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
                held.push(self.inner.store.get(&r.id).await?.map(|k| k.hash));
            }
            held
        } else {
            self.insert_keys(&records).await?
        };
        for ((line, record), held) in lines.into_iter().zip(&records).zip(placed) {
            match held {
                None => {
                    run.report.imported += 1;
                    if !options.dry_run {
                        let key = Some((record.id, record.prefix, record.tenant.as_str()));
                        self.audit_manage(AuditAction::Import, actor, key, &Ok::<(), KeyError>(()));
                    }
                }
                Some(hash) if hash.ct_eq(&record.hash) => run.report.already_present += 1,
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
                Err(_) => Err(Failed::Row(format!(
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
                    None => Err(Failed::Row(format!(
                        "no legacy format with prefix {:?} is accepted (KeywardBuilder::legacy_format)",
                        prefix.chars().take(40).collect::<String>()
                    ))),
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
    let fail = |reason: &str| Err(Failed::Row(reason.into()));
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
