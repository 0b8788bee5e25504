//! What the tool opens: the catalog file and the key database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Duration;
use keyward::store::KeyStore;
use keyward::{
    AuditSettings, Catalog, Charset, InactivityPolicy, Keyward, LegacyFormat, PermissionSet,
    Retention, SqlAuditTrail, SqliteStore, TenantPolicy,
};
use serde::Deserialize;

use crate::exit;
use crate::failure::Failure;

/// The catalog file: the service's permissions, and the settings of the
/// tokens it issues.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    /// The type prefix of issued tokens (default `sk`).
    token_prefix: Option<String>,
    /// Whether tenants are paths (`agency/location`).
    #[serde(default)]
    nested_tenants: bool,
    /// Whether `write` implies `read` (default true).
    write_implies_read: Option<bool>,
    /// Resource name → its actions.
    resources: BTreeMap<String, Vec<String>>,
    /// Action → the actions it implies.
    #[serde(default)]
    implies: BTreeMap<String, Vec<String>>,
    /// Role name → its permissions.
    #[serde(default)]
    roles: BTreeMap<String, Vec<String>>,
    /// What `--manager` grants.
    #[serde(default)]
    management: Management,
    /// Token formats of imported keys.
    #[serde(default)]
    legacy_formats: Vec<LegacyFile>,
    /// What the sweep enforces: stated, or `keyward sweep` refuses.
    lifecycle: Option<Lifecycle>,
    /// Tenant key policies, by tenant, as the service sets them.
    #[serde(default)]
    tenant_policies: BTreeMap<String, PolicyFile>,
}

/// The sweep's rules, as the service has them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Lifecycle {
    /// Delete keys unused this long; 0: never.
    inactivity_days: u32,
    /// Purge revoked and expired keys this long after; absent: keep them.
    retention_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    max_lifetime_days: Option<u32>,
    #[serde(default)]
    require_expiry: bool,
    max_active_keys: Option<u64>,
    #[serde(default)]
    require_ip_allowlist: bool,
    permission_ceiling: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Management {
    /// The permissions of a key that manages keys, e.g. `api_keys:write`.
    #[serde(default)]
    permissions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyFile {
    prefix: String,
    charset: LegacyCharset,
    min_length: usize,
    max_length: usize,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LegacyCharset {
    Alphanumeric,
    Hex,
    Base64url,
}

/// What the tool works with.
pub struct Opened {
    pub keys: Keyward,
    pub store: Arc<dyn KeyStore>,
    pub trail: SqlAuditTrail,
    /// What `--manager` grants.
    pub management: PermissionSet,
    /// Whether the catalog file states the sweep's rules.
    pub lifecycle_stated: bool,
}

fn config(message: impl Into<String>) -> Failure {
    Failure::new(exit::CONFIG, "config", message)
}

/// Reads the catalog file.
fn catalog(path: Option<&Path>) -> Result<(CatalogFile, Catalog), Failure> {
    let path = path.ok_or_else(|| {
        config("no catalog: give --catalog FILE (or KEYWARD_CATALOG); see the README's \"Command line\"")
    })?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| config(format!("cannot read the catalog {}: {e}", path.display())))?;
    let file: CatalogFile = toml::from_str(&text).map_err(|e| {
        config(format!(
            "the catalog {} is not valid: {}",
            path.display(),
            e.message()
        ))
    })?;
    let mut builder = Catalog::builder();
    if file.write_implies_read == Some(false) {
        builder = builder.without_write_implies_read();
    }
    for (resource, actions) in &file.resources {
        builder = builder.resource(resource, actions.iter().cloned());
    }
    for (action, implied) in &file.implies {
        for i in implied {
            builder = builder.implies(action, i);
        }
    }
    for (role, permissions) in &file.roles {
        builder = builder.role(role, permissions.iter().cloned());
    }
    let catalog = builder
        .build()
        .map_err(|e| config(format!("the catalog {} is not valid: {e}", path.display())))?;
    Ok((file, catalog))
}

/// The key database the command line or environment names. `create`
/// says whether a missing SQLite file may be created (bootstrap and
/// import); otherwise a typo would make an empty database.
async fn store(
    db: Option<&str>,
    create: bool,
) -> Result<(Arc<dyn KeyStore>, SqlAuditTrail), Failure> {
    let url = match db {
        Some(url) => url.to_string(),
        None => std::env::var("KEYWARD_DB").map_err(|_| {
            config("no database: give --db sqlite:PATH or --db postgres://… (or DATABASE_URL, or KEYWARD_DB)")
        })?,
    };
    let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    if matches!(scheme.as_deref(), Some("postgres" | "postgresql")) {
        let store = keyward::PostgresStore::connect(&url).await.map_err(|e| {
            Failure::new(
                exit::UNAVAILABLE,
                "store_unavailable",
                format!("cannot open the PostgreSQL database: {e}"),
            )
        })?;
        let trail = store.audit_trail(trail_settings());
        return Ok((Arc::new(store), trail));
    }
    let path = match scheme.as_deref() {
        Some("sqlite") => {
            let rest = &url["sqlite:".len()..];
            PathBuf::from(rest.strip_prefix("//").unwrap_or(rest))
        }
        _ if url.contains("://") => {
            return Err(config(
                "the database must be sqlite:PATH, a file path, or a postgres:// URL",
            ))
        }
        _ => PathBuf::from(&url),
    };
    if !create && !path.exists() {
        return Err(config(format!(
            "no database at {}: check --db (`admin bootstrap` and `import` create one)",
            path.display()
        )));
    }
    let store = SqliteStore::open(&path).await.map_err(|e| {
        Failure::new(
            exit::UNAVAILABLE,
            "store_unavailable",
            format!("cannot open {}: {e}", path.display()),
        )
    })?;
    let trail = store.audit_trail(trail_settings());
    Ok((Arc::new(store), trail))
}

/// The trail as the tool writes it: never pruned (pruning is the
/// service's job, by its own retention).
fn trail_settings() -> AuditSettings {
    AuditSettings::default().retention(None)
}

/// Opens the catalog and the database and builds the instance.
pub async fn open(
    db: Option<&str>,
    catalog_path: Option<&Path>,
    create: bool,
) -> Result<Opened, Failure> {
    let (file, catalog) = catalog(catalog_path)?;
    let management = catalog
        .parse_set(file.management.permissions.iter().map(String::as_str))
        .map_err(|e| config(format!("[management] permissions: {e}")))?;
    let (store, trail) = store(db, create).await?;
    let mut builder = Keyward::builder(store.clone(), catalog.clone())
        .nested_tenants(file.nested_tenants)
        .audit(trail.clone());
    if let Some(l) = &file.lifecycle {
        builder = builder.inactivity(match l.inactivity_days {
            0 => InactivityPolicy::disabled(),
            days => InactivityPolicy::after(Duration::days(i64::from(days))),
        });
        if let Some(days) = l.retention_days {
            builder = builder.retention(Retention {
                purge_after: Some(Duration::days(i64::from(days))),
            });
        }
    }
    for (tenant, p) in &file.tenant_policies {
        builder = builder.tenant_policy(tenant, policy(&catalog, tenant, p)?);
    }
    if let Some(prefix) = &file.token_prefix {
        builder = builder.token_prefix(prefix);
    }
    for f in &file.legacy_formats {
        let charset = match f.charset {
            LegacyCharset::Alphanumeric => Charset::Alphanumeric,
            LegacyCharset::Hex => Charset::Hex,
            LegacyCharset::Base64url => Charset::Base64Url,
        };
        let format = LegacyFormat::new(&f.prefix, charset, f.min_length..=f.max_length)
            .map_err(|e| config(format!("[[legacy_formats]]: {e}")))?;
        builder = builder.legacy_format(format);
    }
    let keys = builder
        .build()
        .map_err(|e| config(format!("the catalog's settings: {e}")))?;
    Ok(Opened {
        keys,
        store,
        trail,
        management,
        lifecycle_stated: file.lifecycle.is_some(),
    })
}

fn policy(catalog: &Catalog, tenant: &str, p: &PolicyFile) -> Result<TenantPolicy, Failure> {
    let mut policy = TenantPolicy::new();
    if let Some(days) = p.max_lifetime_days {
        policy = policy.max_lifetime(Duration::days(i64::from(days)));
    }
    if p.require_expiry {
        policy = policy.require_expiry();
    }
    if let Some(max) = p.max_active_keys {
        policy = policy.max_active_keys(max);
    }
    if p.require_ip_allowlist {
        policy = policy.require_ip_allowlist();
    }
    if let Some(ceiling) = &p.permission_ceiling {
        let set = catalog
            .parse_set(ceiling.iter().map(String::as_str))
            .map_err(|e| {
                config(format!(
                    "[tenant_policies.{tenant}] permission_ceiling: {e}"
                ))
            })?;
        policy = policy.permission_ceiling(set);
    }
    Ok(policy)
}

/// The acting operator's name, as the audit trail will show it: 1-100
/// visible characters, not one of keyward's own (`keyward:…`).
///
/// # Errors
/// A name the trail should not carry.
pub fn actor_name(name: &str) -> Result<&str, Failure> {
    let ok = !name.is_empty()
        && name.chars().count() <= 100
        && !name.chars().any(char::is_control)
        && !name.starts_with("keyward:");
    if ok {
        Ok(name)
    } else {
        Err(config(
            "--actor: 1-100 characters, no control characters, not starting with `keyward:`",
        ))
    }
}

/// A duration as `30d`, `12h`, `15m`, `45s` or `2w`.
///
/// # Errors
/// What is wrong, for clap to print.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: use e.g. 30d, 12h, 15m, 45s, 2w"))?;
    let limit = 100 * 365;
    let d = match unit {
        "s" => Duration::try_seconds(n),
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" if n <= limit => Duration::try_days(n),
        "w" if n <= limit / 7 => Duration::try_weeks(n),
        "d" | "w" => None,
        _ => return Err(format!("{text:?}: the unit must be s, m, h, d or w")),
    };
    d.filter(|d| *d <= Duration::days(limit))
        .ok_or_else(|| format!("{text:?} is longer than 100 years"))
}
