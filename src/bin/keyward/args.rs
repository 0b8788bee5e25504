//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  unexpected failure
  2  the command line is wrong
  3  the configuration is wrong (catalog file, --actor, database URL, no such SQLite file, no [lifecycle] for sweep)
  4  the key named does not exist
  5  refused (invalid id, name, permission or tenant; a tenant policy; a key that cannot be rolled)
  6  the database could not be reached or failed, or a change's audit event could not be written
  7  an import finished with rejected rows (the others were imported)

Changes reach a running service at once on PostgreSQL (its change feed);
on SQLite, within the service's cache_ttl (10 s by default).
The tool migrates the schema as the service does: use the keyward
version of your service.";

/// Manage the API keys of a keyward key database.
///
/// The database is the operator's proof of authority: whoever may open it
/// may manage every key in it. Every change is recorded in the audit
/// trail, in the same database, under the actor's name.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// The key database: `sqlite:PATH` (or a file path) or a
    /// `postgres://` URL. Default: `DATABASE_URL`, then the SQLite file
    /// `KEYWARD_DB` names, as the example service reads them.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub db: Option<String>,

    /// The catalog file (TOML: resources, actions, implications, roles);
    /// see the README's "Command line".
    #[arg(long, global = true, env = "KEYWARD_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// Who is acting, as the audit trail names it. Default: `cli:$USER`.
    #[arg(long, global = true, env = "KEYWARD_ACTOR")]
    pub actor: Option<String>,

    /// Machine-readable output: one JSON document on stdout (errors as
    /// `{"error": {"code", "message"}}` on stderr).
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, show and change keys.
    #[command(subcommand)]
    Keys(Keys),
    /// Recovery: mint an admin key.
    #[command(subcommand)]
    Admin(Admin),
    /// Run the maintenance sweep once: inactivity deletion, expiry and
    /// inactivity warnings, retention, by the catalog file's
    /// `[lifecycle]` (which it requires).
    Sweep,
    /// Import keys from another system: CSV or JSON lines (see the
    /// README's "Migrating existing keys").
    Import(Import),
    /// Read the audit trail, newest first.
    Audit(Audit),
    /// A tenant's webhook endpoints, and replays of their dead
    /// deliveries (the service's delivery worker sends them).
    #[command(subcommand)]
    Webhooks(Webhooks),
}

/// `keyward webhooks …`
#[derive(Debug, Subcommand)]
pub enum Webhooks {
    /// The tenant's endpoints, with their waiting and dead deliveries.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Make the tenant's dead deliveries due again (of one endpoint, if
    /// given). Audited.
    Replay {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Only this endpoint's (`ep_…`).
        #[arg(long)]
        endpoint: Option<String>,
    },
}

/// `keyward keys …`
#[derive(Debug, Subcommand)]
pub enum Keys {
    /// Create a key; its token is printed once.
    Create(Create),
    /// List keys, newest first.
    List {
        /// Only this tenant's keys (default: every tenant's).
        #[arg(long)]
        tenant: Option<String>,
        /// Only keys in this state.
        #[arg(long)]
        status: Option<Status>,
    },
    /// Show one key.
    Show {
        /// The key id (8 letters and digits).
        id: String,
    },
    /// Revoke a key: it stops working (see below for how soon a running
    /// service notices) and can be reactivated.
    Revoke {
        /// The key id.
        id: String,
    },
    /// Reactivate a revoked key.
    Reactivate {
        /// The key id.
        id: String,
    },
    /// Delete a key for good.
    Delete {
        /// The key id.
        id: String,
    },
    /// Roll a key: a new key (token printed once) replaces it; the old
    /// one keeps working for the grace period.
    Roll {
        /// The key id.
        id: String,
        /// How long the old key keeps working, e.g. `1h`, `0s`.
        #[arg(long, value_parser = crate::config::duration)]
        grace: chrono::Duration,
    },
    /// Rename a key.
    Rename {
        /// The key id.
        id: String,
        /// The new name.
        name: String,
    },
}

/// `keyward keys create`
#[derive(Debug, Args)]
pub struct Create {
    /// The tenant the key belongs to.
    #[arg(long)]
    pub tenant: String,
    /// The key's name, e.g. `Zapier production`.
    #[arg(long)]
    pub name: String,
    /// Permissions, e.g. `contacts:read` (repeat, or separate by spaces).
    #[arg(long = "perm", num_args = 1..)]
    pub perms: Vec<String>,
    /// Roles the catalog defines (repeat, or separate by spaces).
    #[arg(long = "role", num_args = 1..)]
    pub roles: Vec<String>,
    /// When it expires, from now, e.g. `30d`, `12h`.
    #[arg(long, value_parser = crate::config::duration)]
    pub expires_in: Option<chrono::Duration>,
    /// Let the key manage keys: adds the catalog file's management
    /// permissions.
    #[arg(long)]
    pub manager: bool,
}

/// A key's state.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Status {
    /// It verifies.
    Active,
    /// It was revoked.
    Revoked,
    /// It passed its expiry.
    Expired,
}

/// `keyward admin …`
#[derive(Debug, Subcommand)]
pub enum Admin {
    /// Mint a key holding every permission of the catalog, in `tenant`,
    /// whatever keys exist: the documented recovery when every admin key
    /// is lost. Audited. The token is printed once.
    Bootstrap {
        /// The tenant of the admin key (the example service's is
        /// `default`).
        #[arg(long)]
        tenant: String,
    },
}

/// `keyward import`
#[derive(Debug, Args)]
pub struct Import {
    /// The file: `.csv` is read as CSV (a header row naming the fields),
    /// anything else as JSON lines; `-` reads stdin.
    pub file: PathBuf,
    /// Check every row and report, but store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How to read the file, whatever its name.
    #[arg(long)]
    pub format: Option<FileFormat>,
    /// The tenant of rows that name none.
    #[arg(long)]
    pub tenant: Option<String>,
}

/// An import file's format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FileFormat {
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// `keyward audit`
#[derive(Debug, Args)]
pub struct Audit {
    /// Only this tenant's events.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this key's events.
    #[arg(long)]
    pub key: Option<String>,
    /// Only events of the last while, e.g. `1d`, `2h`.
    #[arg(long, value_parser = crate::config::duration)]
    pub since: Option<chrono::Duration>,
    /// At most this many events.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}
