//! What the tool opens: the catalog file and the key database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Duration;
use keyward::store::KeyStore;
use keyward::{
    AuditSettings, Catalog, Charset, Keyward, LegacyFormat, PermissionSet, SqlAuditTrail,
    SqliteStore,
};
use serde::Deserialize;

use crate::commands::Failure;
use crate::exit;

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
        let trail = store.audit_trail(AuditSettings::default());
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
    let trail = store.audit_trail(AuditSettings::default());
    Ok((Arc::new(store), trail))
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
    let mut builder = Keyward::builder(store.clone(), catalog)
        .nested_tenants(file.nested_tenants)
        .audit(trail.clone());
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
    })
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
