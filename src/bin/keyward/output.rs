//! What the tool prints: text for people, or one JSON document with
//! `--json`. Only a token just created is ever printed, once.

use std::io::Write;

use keyward::import::RowError;
use keyward::webhook::WebhookEndpoint;
use keyward::{AuditRecord, IssuedKey, KeyId, KeyInfo, SweepReport};
use serde::Serialize;
use serde_json::json;

use crate::exit;
use crate::failure::Failure;

/// Writes `text` to stdout; a closed pipe is not a failure of the
/// command (`keyward keys list | head`).
fn print(text: &str) -> Result<u8, Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(exit::OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::OK),
        Err(e) => Err(Failure::new(
            exit::INTERNAL,
            "output",
            format!("cannot write the output: {e}"),
        )),
    }
}

fn print_json(value: &impl Serialize) -> Result<u8, Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(exit::INTERNAL, "output", e.to_string()))?;
    print(&format!("{text}\n"))
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

fn describe(k: &KeyInfo) -> String {
    let permissions: Vec<&str> = k.permissions.names().collect();
    let mut s = format!(
        "id:          {}\nprefix:      {}\nname:        {}\ntenant:      {}\nstatus:      {}\npermissions: {}\n",
        k.id,
        k.prefix,
        k.name,
        k.tenant,
        k.status,
        permissions.join(" ")
    );
    if !k.roles.is_empty() {
        s.push_str(&format!("roles:       {}\n", k.roles.join(" ")));
    }
    s.push_str(&format!(
        "created:     {} by {}\nexpires:     {}\nlast used:   {}\n",
        time(Some(k.created_at)),
        k.created_by,
        time(k.expires_at),
        time(k.last_used_at)
    ));
    if let Some(at) = k.revoked_at {
        s.push_str(&format!("revoked:     {}\n", time(Some(at))));
    }
    if let Some(to) = k.rolled_to {
        s.push_str(&format!("rolled to:   {to}\n"));
    }
    s
}

/// One key.
pub fn key(json: bool, k: &KeyInfo) -> Result<u8, Failure> {
    if json {
        print_json(k)
    } else {
        print(&describe(k))
    }
}

/// A list of keys.
pub fn keys(json: bool, list: &[KeyInfo]) -> Result<u8, Failure> {
    if json {
        return print_json(&list);
    }
    let mut s = format!(
        "{:<8}  {:<20}  {:<8}  {:<20}  NAME\n",
        "ID", "PREFIX", "STATUS", "TENANT"
    );
    for k in list {
        s.push_str(&format!(
            "{:<8}  {:<20}  {:<8}  {:<20}  {}\n",
            k.id,
            k.prefix.as_str(),
            k.status.to_string(),
            k.tenant,
            k.name
        ));
    }
    print(&s)
}

/// A key just created (or rolled in): its token, shown this once. A
/// token that cannot be written is lost: that is a failure, naming the
/// key to revoke.
pub fn issued(json: bool, issued: &IssuedKey) -> Result<u8, Failure> {
    let token = issued.token.expose_secret();
    let text = if json {
        let mut text = serde_json::to_string_pretty(&json!({ "token": token, "key": issued.key }))
            .map_err(|e| Failure::new(exit::INTERNAL, "output", e.to_string()))?;
        text.push('\n');
        text
    } else {
        eprintln!("The token is shown once: store it now. keyward keeps only its hash.");
        format!("token:       {token}\n{}", describe(&issued.key))
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| {
            Failure::new(
                exit::INTERNAL,
                "output",
                format!(
                    "key {} was created but its token could not be written ({e}); revoke it and create another",
                    issued.key.id
                ),
            )
        })?;
    Ok(exit::OK)
}

/// A key deleted.
pub fn deleted(json: bool, id: &KeyId) -> Result<u8, Failure> {
    if json {
        print_json(&json!({ "deleted": id }))
    } else {
        print(&format!("deleted {id}\n"))
    }
}

/// What the sweep did.
pub fn sweep(json: bool, report: &SweepReport) -> Result<u8, Failure> {
    if json {
        return print_json(report);
    }
    let mut s = format!(
        "scanned {} keys: {} warnings, {} deleted for inactivity, {} purged\n",
        report.scanned,
        report.warnings.len(),
        report.deleted.len(),
        report.purged.len()
    );
    for w in &report.warnings {
        s.push_str(&format!(
            "warning  {}  {:?} deadline {} ({})\n",
            w.key_id,
            w.kind,
            time(Some(w.deadline)),
            w.tenant
        ));
    }
    for k in report.deleted.iter().chain(&report.purged) {
        s.push_str(&format!(
            "removed  {}  {:?} ({})\n",
            k.key_id, k.reason, k.tenant
        ));
    }
    print(&s)
}

/// An import's totals, over every tenant of the file.
#[derive(Debug, Default, Serialize)]
pub struct ImportTotals {
    pub dry_run: bool,
    pub imported: u64,
    pub already_present: u64,
    pub rejected: Vec<RowError>,
}

/// What an import did.
pub fn import(json: bool, totals: &ImportTotals) -> Result<u8, Failure> {
    if json {
        return print_json(totals);
    }
    let verb = if totals.dry_run {
        "would import"
    } else {
        "imported"
    };
    let mut s = format!(
        "{verb} {} keys; {} already present; {} rows rejected\n",
        totals.imported,
        totals.already_present,
        totals.rejected.len()
    );
    for e in &totals.rejected {
        s.push_str(&format!("line {}: {}\n", e.line, e.reason));
    }
    print(&s)
}

/// Audit events, newest first.
pub fn audit(json: bool, events: &[AuditRecord]) -> Result<u8, Failure> {
    if json {
        return print_json(&events);
    }
    let mut s = String::new();
    for e in events {
        s.push_str(&format!(
            "{}  {:<16} {:<8} {:<24} actor={} tenant={} key={} ({}){}\n",
            e.at.format("%Y-%m-%d %H:%M:%S"),
            e.action,
            e.outcome,
            e.reason.as_deref().unwrap_or("-"),
            e.actor.as_deref().unwrap_or("-"),
            e.tenant.as_deref().unwrap_or("-"),
            e.key_id.as_deref().unwrap_or("-"),
            e.key_prefix.as_deref().unwrap_or("-"),
            e.related_key_id
                .as_deref()
                .map(|r| format!(" related={r}"))
                .unwrap_or_default()
        ));
    }
    print(&s)
}

/// Webhook endpoints (never their secrets).
pub fn endpoints(json: bool, list: &[WebhookEndpoint]) -> Result<u8, Failure> {
    if json {
        return print_json(&list);
    }
    let mut s = String::new();
    for e in list {
        let types: Vec<&str> = e.event_types.iter().map(|t| t.as_str()).collect();
        s.push_str(&format!(
            "{}  {}  pending={} dead={}  {}\n",
            e.id,
            e.url,
            e.pending,
            e.dead,
            if types.is_empty() {
                "all events".to_string()
            } else {
                types.join(",")
            }
        ));
    }
    print(&s)
}

/// How many dead deliveries were replayed.
pub fn replayed(json: bool, n: u64) -> Result<u8, Failure> {
    if json {
        print_json(&json!({ "replayed": n }))
    } else {
        print(&format!("{n} dead deliveries are due again\n"))
    }
}

/// A failure, on stderr.
pub fn failure(json: bool, f: &Failure) {
    if json {
        eprintln!(
            "{}",
            json!({ "error": { "code": f.kind, "message": f.message } })
        );
    } else {
        eprintln!("error: {}", f.message);
    }
}
