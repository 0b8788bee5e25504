//! What each command does, through keyward's public API.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read};

use chrono::Utc;
use keyward::import::{read_csv, read_jsonl, ImportRow, RowError};
use keyward::{
    Actor, AuditQuery, AuditTrail, ImportOptions, KeyError, KeyId, KeyInfo, KeyStatus, NewKey,
    MAX_PAGE_EVENTS,
};

use crate::args::{Admin, Audit, Cli, Command, Create, FileFormat, Import, Keys, Status, Webhooks};
use crate::config::{open, Opened};
use crate::exit;
use crate::failure::Failure;
use crate::output;

/// Runs the command; the exit code on success.
pub async fn run(cli: Cli) -> Result<u8, Failure> {
    let who = match &cli.actor {
        Some(name) => crate::config::actor_name(name)?.to_string(),
        None => format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "operator".into())
        ),
    };
    // The input first: a missing file must not create a database.
    let input = match &cli.command {
        Command::Import(import) => Some(open_input(&import.file)?),
        _ => None,
    };
    // Only a bootstrap or a real import may create a SQLite file.
    let creates = match &cli.command {
        Command::Admin(_) => true,
        Command::Import(import) => !import.dry_run,
        _ => false,
    };
    let changes = !matches!(
        &cli.command,
        Command::Audit(_)
            | Command::Keys(Keys::List { .. } | Keys::Show { .. })
            | Command::Webhooks(Webhooks::List { .. })
    ) && !matches!(&cli.command, Command::Import(i) if i.dry_run);
    let opened = open(cli.db.as_deref(), cli.catalog.as_deref(), creates).await?;
    let cx = Context {
        opened,
        who,
        json: cli.json,
    };
    let result = match cli.command {
        Command::Keys(keys) => cx.keys(keys).await,
        Command::Admin(Admin::Bootstrap { tenant }) => cx.bootstrap(&tenant).await,
        Command::Sweep => cx.sweep().await,
        Command::Import(import) => match input {
            Some(input) => cx.import(import, input).await,
            None => Err(Failure::new(exit::INTERNAL, "internal", "no input")),
        },
        Command::Audit(audit) => cx.audit(audit).await,
        Command::Webhooks(w) => cx.webhooks(w).await,
    };
    // What was done is in the trail before the process ends; a change
    // whose event could not be written is not a success.
    if !cx.opened.trail.flush().await && changes {
        let done = result.is_ok();
        let f = Failure::new(
            exit::UNAVAILABLE,
            "audit_unavailable",
            if done {
                "the change was made, but its audit event could not be written to the database"
            } else {
                "the audit trail could not be written to the database"
            },
        );
        if let Err(e) = &result {
            output::failure(cx.json, e);
        }
        return Err(f);
    }
    result
}

/// The import file, or stdin for `-`.
fn open_input(path: &std::path::Path) -> Result<Box<dyn Read>, Failure> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    let file = std::fs::File::open(path).map_err(|e| {
        Failure::new(
            exit::CONFIG,
            "config",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    Ok(Box::new(file))
}

/// Rows an import reads before it stores them, grouped by tenant.
const IMPORT_CHUNK: usize = 5000;

struct Context {
    opened: Opened,
    who: String,
    json: bool,
}

impl Context {
    /// The operator, acting in `tenant` with every permission.
    fn actor(&self, tenant: &str) -> Actor {
        Actor::new(self.who.clone(), tenant)
            .permissions(self.opened.keys.catalog().all())
            .may_manage_keys(true)
            .may_manage_roles(true)
    }

    /// The key `id` names and the operator of its tenant.
    async fn key(&self, id: &str) -> Result<(KeyId, Actor), Failure> {
        let id: KeyId = id.parse().map_err(|_| {
            // Never echoed: a pasted token is a secret.
            let hint = match self.opened.keys.token_format().parse(id) {
                Ok(token) => format!(
                    "; that is a token, whose key id is {} (revoke it if it was exposed)",
                    token.id()
                ),
                Err(_) => String::new(),
            };
            Failure::new(
                exit::REFUSED,
                "invalid_key_id",
                format!("not a key id (8 letters and digits){hint}"),
            )
        })?;
        match self.opened.store.get(&id).await? {
            Some(record) => Ok((id, self.actor(&record.tenant))),
            None => Err(KeyError::NotFound(id).into()),
        }
    }

    async fn keys(&self, command: Keys) -> Result<u8, Failure> {
        let keys = &self.opened.keys;
        match command {
            Keys::Create(create) => self.create(create).await,
            Keys::List { tenant, status } => {
                let list = self.list(tenant.as_deref(), status).await?;
                output::keys(self.json, &list)
            }
            Keys::Show { id } => {
                let (id, actor) = self.key(&id).await?;
                output::key(self.json, &keys.get(&actor, &id).await?)
            }
            Keys::Revoke { id } => {
                let (id, actor) = self.key(&id).await?;
                output::key(self.json, &keys.revoke(&actor, &id).await?)
            }
            Keys::Reactivate { id } => {
                let (id, actor) = self.key(&id).await?;
                output::key(self.json, &keys.reactivate(&actor, &id).await?)
            }
            Keys::Delete { id } => {
                let (id, actor) = self.key(&id).await?;
                keys.delete(&actor, &id).await?;
                output::deleted(self.json, &id)
            }
            Keys::Roll { id, grace } => {
                let (id, actor) = self.key(&id).await?;
                output::issued(self.json, &keys.roll(&actor, &id, grace).await?)
            }
            Keys::Rename { id, name } => {
                let (id, actor) = self.key(&id).await?;
                output::key(self.json, &keys.rename(&actor, &id, &name).await?)
            }
        }
    }

    async fn create(&self, create: Create) -> Result<u8, Failure> {
        let keys = &self.opened.keys;
        let names: Vec<&str> = create
            .perms
            .iter()
            .flat_map(|p| p.split([' ', ',']))
            .filter(|p| !p.is_empty())
            .collect();
        let mut permissions = keys
            .catalog()
            .parse_set(names)
            .map_err(|e| Failure::new(exit::REFUSED, "invalid_permission", e.to_string()))?;
        if create.manager {
            if self.opened.management.is_empty() {
                return Err(Failure::new(
                    exit::CONFIG,
                    "config",
                    "--manager: the catalog file names no [management] permissions",
                ));
            }
            permissions = permissions.union(&self.opened.management);
        }
        let roles: Vec<&str> = create
            .roles
            .iter()
            .flat_map(|r| r.split([' ', ',']))
            .filter(|r| !r.is_empty())
            .collect();
        let mut new = NewKey::new(&create.name)
            .tenant(&create.tenant)
            .permission_set(permissions)
            .roles(roles);
        if let Some(ttl) = create.expires_in {
            new = new.expires_in(ttl);
        }
        let issued = keys.create(&self.actor(&create.tenant), new).await?;
        output::issued(self.json, &issued)
    }

    /// Keys of `tenant`, or of every tenant, newest first.
    async fn list(
        &self,
        tenant: Option<&str>,
        status: Option<Status>,
    ) -> Result<Vec<KeyInfo>, Failure> {
        let tenants: Vec<String> = match tenant {
            Some(t) => vec![t.to_string()],
            None => self.tenants().await?.into_iter().collect(),
        };
        let mut all = Vec::new();
        for t in &tenants {
            all.extend(self.opened.keys.list(&self.actor(t), t).await?);
        }
        let wanted = status.map(|s| match s {
            Status::Active => KeyStatus::Active,
            Status::Revoked => KeyStatus::Revoked,
            Status::Expired => KeyStatus::Expired,
        });
        all.retain(|k| wanted.is_none_or(|w| k.status == w));
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    /// Every tenant that holds a key.
    async fn tenants(&self) -> Result<BTreeSet<String>, Failure> {
        let mut tenants = BTreeSet::new();
        let mut after = None;
        loop {
            let page = self.opened.store.scan(after.as_ref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            tenants.extend(page.into_iter().map(|r| r.tenant));
        }
        Ok(tenants)
    }

    async fn bootstrap(&self, tenant: &str) -> Result<u8, Failure> {
        let keys = &self.opened.keys;
        let stamp = Utc::now().format("%Y-%m-%d %H:%M UTC");
        let admin = NewKey::new(format!("recovered admin ({stamp})"))
            .tenant(tenant)
            .permission_set(keys.catalog().all());
        let issued = keys.create(&self.actor(tenant), admin).await?;
        output::issued(self.json, &issued)
    }

    async fn sweep(&self) -> Result<u8, Failure> {
        if !self.opened.lifecycle_stated {
            return Err(Failure::new(
                exit::CONFIG,
                "config",
                "the catalog file states no [lifecycle]: the sweep deletes keys by those rules, so state them as the service has them (inactivity_days, 0 for never; retention_days)",
            ));
        }
        let report = self.opened.keys.sweep().await?;
        output::sweep(self.json, &report)
    }

    async fn import(&self, import: Import, input: Box<dyn Read>) -> Result<u8, Failure> {
        let csv = match import.format {
            Some(FileFormat::Csv) => true,
            Some(FileFormat::Jsonl) => false,
            None => import
                .file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv")),
        };
        let mut rows: Box<dyn Iterator<Item = Result<ImportRow, RowError>>> = if csv {
            Box::new(read_csv(input))
        } else {
            Box::new(read_jsonl(BufReader::new(input)))
        };
        let options = ImportOptions::new().dry_run(import.dry_run);
        let mut total = output::ImportTotals {
            dry_run: import.dry_run,
            ..Default::default()
        };
        let mut rejected = Vec::new();
        // In chunks, each by the operator of each tenant it names.
        loop {
            let chunk: Vec<_> = rows.by_ref().take(IMPORT_CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            let mut by_tenant: BTreeMap<String, Vec<Result<ImportRow, RowError>>> = BTreeMap::new();
            for row in chunk {
                match row {
                    Ok(r) => match r.tenant().or(import.tenant.as_deref()).map(str::to_string) {
                        Some(t) => by_tenant.entry(t).or_default().push(Ok(r)),
                        None => rejected.push(RowError {
                            line: r.line,
                            reason: "no tenant: give the row one, or pass --tenant".into(),
                        }),
                    },
                    Err(e) => rejected.push(e),
                }
            }
            for (tenant, rows) in by_tenant {
                let report = self
                    .opened
                    .keys
                    .import(&self.actor(&tenant), rows, options)
                    .await?;
                total.imported += report.imported;
                total.already_present += report.already_present;
                rejected.extend(report.rejected);
            }
        }
        rejected.sort_by_key(|e| e.line);
        total.rejected = rejected;
        output::import(self.json, &total)?;
        Ok(if total.rejected.is_empty() {
            exit::OK
        } else {
            exit::REJECTED_ROWS
        })
    }

    async fn audit(&self, audit: Audit) -> Result<u8, Failure> {
        let mut query = AuditQuery::new().limit(audit.limit.clamp(1, MAX_PAGE_EVENTS));
        if let Some(t) = &audit.tenant {
            query = query.tenant(t);
        }
        if let Some(k) = &audit.key {
            query = query.key(k.parse().map_err(|_| {
                Failure::new(
                    exit::REFUSED,
                    "invalid_key_id",
                    "--key is not a key id (8 letters and digits)",
                )
            })?);
        }
        let since = audit.since.map(|d| Utc::now() - d);
        let mut events = Vec::new();
        'pages: loop {
            let page = self.opened.trail.query(&query).await?;
            for event in page.events {
                if since.is_some_and(|s| event.at < s) || events.len() >= audit.limit {
                    break 'pages;
                }
                events.push(event);
            }
            match page.next {
                Some(next) => query = query.before(next),
                None => break,
            }
        }
        output::audit(self.json, &events)
    }

    async fn webhooks(&self, command: Webhooks) -> Result<u8, Failure> {
        let keys = &self.opened.keys;
        match command {
            Webhooks::List { tenant } => {
                output::endpoints(self.json, &keys.endpoints(&self.actor(&tenant)).await?)
            }
            Webhooks::Replay { tenant, endpoint } => {
                let actor = self.actor(&tenant);
                let n = keys.replay_webhooks(&actor, endpoint.as_deref()).await?;
                output::replayed(self.json, n)
            }
        }
    }
}
