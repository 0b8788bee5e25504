//! The `keyward` command-line tool, run as a process against SQLite and
//! PostgreSQL: every command, the exit codes, the token printed once, and
//! the recovery of an operator whose admin keys are all gone.

mod common;

use std::path::PathBuf;

use assert_cmd::Command;
use keyward::{
    AuditSettings, Catalog, Charset, Keyward, LegacyFormat, NewKey, PostgresStore, SqliteStore,
    VerifyError,
};
use serde_json::Value;

use common::pg::PgServer;
use common::TempDir;

const CATALOG: &str = r#"
[resources]
contacts = ["read", "write"]
api_keys = ["read", "write"]

[roles]
support = ["contacts:read"]

[management]
permissions = ["api_keys:write"]

[[legacy_formats]]
prefix = "acme_live_"
charset = "alphanumeric"
min_length = 32
max_length = 32

[lifecycle]
inactivity_days = 0
"#;

/// A key database for the tool, and what keeps it alive.
struct Db {
    url: String,
    dir: TempDir,
    _pg: Option<PgServer>,
}

impl Db {
    fn sqlite() -> Self {
        let dir = TempDir::new("cli");
        let url = format!("sqlite:{}", dir.path().join("keys.db").display());
        std::fs::write(dir.path().join("catalog.toml"), CATALOG).expect("catalog");
        Self {
            url,
            dir,
            _pg: None,
        }
    }

    fn postgres() -> Option<Self> {
        let pg = PgServer::start()?;
        let dir = TempDir::new("cli-pg");
        std::fs::write(dir.path().join("catalog.toml"), CATALOG).expect("catalog");
        Some(Self {
            url: pg.url(),
            dir,
            _pg: Some(pg),
        })
    }

    fn catalog(&self) -> PathBuf {
        self.dir.path().join("catalog.toml")
    }

    /// `keyward --db … --catalog … ARGS`, with nothing from the
    /// environment.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
        c.env_remove("DATABASE_URL")
            .env_remove("KEYWARD_DB")
            .env_remove("KEYWARD_CATALOG")
            .env("KEYWARD_ACTOR", "cli:test")
            .arg("--db")
            .arg(&self.url)
            .arg("--catalog")
            .arg(self.catalog())
            .args(args);
        c
    }

    /// Runs and expects `code`; stdout as JSON (when `--json`) and stderr.
    fn run(&self, args: &[&str], code: i32) -> (String, String) {
        let out = self.cmd(args).output().expect("run keyward");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "keyward {args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        (stdout, stderr)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (stdout, _) = self.run(&all, 0);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }

    /// The same database's store, opened by the library.
    fn store(&self, rt: &tokio::runtime::Runtime) -> Box<dyn keyward::store::KeyStore> {
        rt.block_on(async {
            if self.url.starts_with("postgres") {
                let store = PostgresStore::connect(&self.url).await.expect("postgres");
                Box::new(store) as Box<dyn keyward::store::KeyStore>
            } else {
                let path = self.url.trim_start_matches("sqlite:");
                Box::new(SqliteStore::open(path).await.expect("sqlite"))
            }
        })
    }

    /// The same database, opened by the library, with the same catalog.
    fn keyward(&self, rt: &tokio::runtime::Runtime) -> Keyward {
        rt.block_on(async {
            let catalog = Catalog::builder()
                .resource("contacts", ["read", "write"])
                .resource("api_keys", ["read", "write"])
                .role("support", ["contacts:read"])
                .build()
                .expect("catalog");
            let builder = if self.url.starts_with("postgres") {
                let store = PostgresStore::connect(&self.url).await.expect("postgres");
                let trail = store.audit_trail(AuditSettings::default());
                Keyward::builder(store, catalog).audit(trail)
            } else {
                let path = self.url.trim_start_matches("sqlite:");
                let store = SqliteStore::open(path).await.expect("sqlite");
                Keyward::builder(store, catalog)
            };
            let acme = LegacyFormat::new("acme_live_", Charset::Alphanumeric, 32..=32);
            builder
                .legacy_format(acme.expect("format"))
                .build()
                .expect("keyward")
        })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no {pointer} in {v}"))
}

fn every_command(db: &Db) {
    let rt = runtime();
    // A fresh database: `admin bootstrap` creates it.
    let admin = db.json(&["admin", "bootstrap", "--tenant", "default"]);
    let admin_token = text(&admin, "/token").to_string();
    assert!(admin_token.starts_with("sk_"));
    assert!(admin["key"]["permissions"]
        .as_array()
        .is_some_and(|p| p.len() == 4));

    // create: the token once on stdout, a note on stderr, nothing else.
    let (stdout, stderr) = db.run(
        &[
            "keys",
            "create",
            "--tenant",
            "acme",
            "--name",
            "Zapier",
            "--perm",
            "contacts:read",
            "--expires-in",
            "30d",
        ],
        0,
    );
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .map(str::trim)
        .expect("a token line")
        .to_string();
    assert_eq!(stdout.matches(&token).count(), 1, "printed once: {stdout}");
    assert!(!stderr.contains(&token));
    assert!(stderr.contains("shown once"));
    let id = token[3..11].to_string();
    let keys = db.keyward(&rt);
    let verified = rt
        .block_on(keys.verify(&token))
        .expect("the new key verifies");
    assert_eq!(verified.tenant(), "acme");
    assert!(verified.expires_at().is_some());

    let manager = db.json(&[
        "keys",
        "create",
        "--tenant",
        "acme",
        "--name",
        "Ops",
        "--perm",
        "contacts:write",
        "--role",
        "support",
        "--manager",
    ]);
    let perms = manager["key"]["permissions"].to_string();
    assert!(
        perms.contains("api_keys:write") && perms.contains("api_keys:read"),
        "{perms}"
    );
    assert_eq!(manager["key"]["roles"][0], "support");

    // list, every tenant and one; by status.
    let all = db.json(&["keys", "list"]);
    assert_eq!(all.as_array().map(Vec::len), Some(3));
    let acme = db.json(&["keys", "list", "--tenant", "acme"]);
    assert_eq!(acme.as_array().map(Vec::len), Some(2));
    let (table, _) = db.run(&["keys", "list", "--tenant", "acme"], 0);
    assert!(table.contains("Zapier") && table.contains(&id), "{table}");
    assert!(!table.contains(&token));

    // show, rename, revoke, reactivate.
    let shown = db.json(&["keys", "show", &id]);
    assert_eq!(text(&shown, "/name"), "Zapier");
    assert!(
        !shown.to_string().contains(&token[12..]),
        "no secret in show"
    );
    assert_eq!(
        text(&db.json(&["keys", "rename", &id, "Zapier prod"]), "/name"),
        "Zapier prod"
    );
    assert_eq!(
        text(&db.json(&["keys", "revoke", &id]), "/status"),
        "revoked"
    );
    assert_eq!(
        db.json(&["keys", "list", "--status", "revoked"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let keys = db.keyward(&rt);
    assert!(matches!(
        rt.block_on(keys.verify(&token)),
        Err(VerifyError::Revoked)
    ));
    assert_eq!(
        text(&db.json(&["keys", "reactivate", &id]), "/status"),
        "active"
    );

    // roll: a new token, the old key rolled to it.
    let rolled = db.json(&["keys", "roll", &id, "--grace", "1h"]);
    let new_token = text(&rolled, "/token").to_string();
    let new_id = text(&rolled, "/key/id").to_string();
    assert_eq!(text(&db.json(&["keys", "show", &id]), "/rolled_to"), new_id);
    let keys = db.keyward(&rt);
    assert!(rt.block_on(keys.verify(&new_token)).is_ok());
    assert!(rt.block_on(keys.verify(&token)).is_ok(), "within the grace");

    // delete: gone, then not found.
    assert_eq!(
        text(&db.json(&["keys", "delete", &new_id]), "/deleted"),
        new_id
    );
    db.run(&["keys", "show", &new_id], 4);
    db.run(&["keys", "delete", &new_id], 4);

    // sweep.
    let swept = db.json(&["sweep"]);
    assert!(swept["scanned"].is_u64(), "{swept}");

    // import: JSON lines, a dry run, a second run, a rejected row.
    let legacy = format!(
        "acme_live_{}",
        "Q7x".repeat(11).get(..32).unwrap_or_default()
    );
    let file = db.dir.path().join("keys.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            serde_json::json!({"token": legacy, "name": "legacy", "tenant": "acme", "permissions": ["contacts:read"]}),
            serde_json::json!({"token": "acme_live_short", "name": "bad", "tenant": "acme"}),
        ),
    )
    .expect("file");
    let file = file.to_string_lossy().into_owned();
    let (dry, _) = db.run(&["--json", "import", &file, "--dry-run"], 7);
    let dry: Value = serde_json::from_str(&dry).expect("json");
    assert_eq!(
        (dry["imported"].as_u64(), dry["dry_run"].as_bool()),
        (Some(1), Some(true))
    );
    let keys = db.keyward(&rt);
    assert!(matches!(
        rt.block_on(keys.verify(&legacy)),
        Err(VerifyError::Invalid)
    ));
    let (first, _) = db.run(&["import", &file], 7);
    assert!(
        first.contains("imported 1 keys") && first.contains("line 2:"),
        "{first}"
    );
    let keys = db.keyward(&rt);
    assert!(
        rt.block_on(keys.verify(&legacy)).is_ok(),
        "the legacy token verifies"
    );
    let (again, _) = db.run(&["--json", "import", &file], 7);
    let again: Value = serde_json::from_str(&again).expect("json");
    assert_eq!(
        (
            again["imported"].as_u64(),
            again["already_present"].as_u64()
        ),
        (Some(0), Some(1))
    );

    // audit: every change, by the tool's actor.
    let events = db.json(&["audit", "--tenant", "acme", "--since", "1d"]);
    let actions: Vec<&str> = events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default())
        .collect();
    for action in [
        "create",
        "rename",
        "revoke",
        "reactivate",
        "roll",
        "delete",
        "import",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    let managed: Vec<&Value> = events
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["action"] != "verify" && e["actor"] != "keyward:sweep")
        .collect();
    assert!(
        managed.iter().all(|e| e["actor"] == "cli:test"),
        "{managed:?}"
    );
    let of_key = db.json(&["audit", "--key", &id]);
    assert!(of_key
        .as_array()
        .is_some_and(|e| !e.is_empty() && e.iter().all(|e| e["key_id"] == id)));
    let (log, _) = db.run(&["audit", "--limit", "2"], 0);
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(!log.contains(&token) && !log.contains(&admin_token));

    // Refusals and their exit codes.
    db.run(
        &[
            "keys",
            "create",
            "--tenant",
            "acme",
            "--name",
            "x",
            "--perm",
            "contacts:fly",
        ],
        5,
    );
    db.run(
        &["keys", "create", "--tenant", "Bad Tenant", "--name", "x"],
        5,
    );
    db.run(&["keys", "show", "not-an-id"], 5);
    db.run(&["keys", "roll", &id, "--grace", "soon"], 2);
    db.run(&["keys", "frobnicate"], 2);
    let (_, err) = db.run(&["--json", "keys", "show", "AAAAAAAA"], 4);
    let err: Value = serde_json::from_str(err.trim()).expect("a JSON error");
    assert_eq!(err["error"]["code"], "not_found");
}

fn exit_codes_of_configuration(db: &Db) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.env_remove("DATABASE_URL")
        .env_remove("KEYWARD_DB")
        .env_remove("KEYWARD_CATALOG")
        .args(["--db", &db.url, "keys", "list"]);
    c.assert().code(3);
    let missing = db.dir.path().join("missing.db");
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.env_remove("DATABASE_URL")
        .env_remove("KEYWARD_DB")
        .arg("--db")
        .arg(format!("sqlite:{}", missing.display()))
        .arg("--catalog")
        .arg(db.catalog())
        .args(["keys", "list"]);
    c.assert().code(3);
    assert!(!missing.exists(), "a typo makes no empty database");
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.env_remove("DATABASE_URL")
        .arg("--db")
        .arg("postgres://keyward@127.0.0.1:1/none")
        .arg("--catalog")
        .arg(db.catalog())
        .args(["keys", "list"]);
    c.assert().code(6);
    let bad = db.dir.path().join("bad.toml");
    std::fs::write(&bad, "[resources]\ncontacts = \"read\"\n").expect("write");
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.arg("--db")
        .arg(&db.url)
        .arg("--catalog")
        .arg(&bad)
        .args(["keys", "list"]);
    c.assert().code(3);
    // The environment the example service reads names the database too.
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.env("DATABASE_URL", &db.url)
        .env("KEYWARD_CATALOG", db.catalog())
        .args(["keys", "list"]);
    c.assert().code(0);
}

/// Every admin key deleted, then `admin bootstrap`, then management works
/// again with the new key.
fn a_locked_out_operator_recovers(db: &Db) {
    let rt = runtime();
    let first = db.json(&["admin", "bootstrap", "--tenant", "default"]);
    let second = db.json(&["admin", "bootstrap", "--tenant", "default"]);
    let old = [
        text(&first, "/token").to_string(),
        text(&second, "/token").to_string(),
    ];
    for id in [text(&first, "/key/id"), text(&second, "/key/id")] {
        db.run(&["keys", "delete", id], 0);
    }
    assert_eq!(
        db.json(&["keys", "list", "--tenant", "default"])
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let keys = db.keyward(&rt);
    for token in &old {
        assert!(
            matches!(rt.block_on(keys.verify(token)), Err(VerifyError::Invalid)),
            "locked out"
        );
    }

    let recovered = db.json(&["admin", "bootstrap", "--tenant", "default"]);
    let token = text(&recovered, "/token");
    let keys = db.keyward(&rt);
    let admin = rt
        .block_on(keys.verify(token))
        .expect("the recovered key verifies");
    // As the management API makes an actor of an admin key.
    let actor = admin.actor().may_manage_keys(true);
    let made = rt
        .block_on(keys.create(
            &actor,
            NewKey::new("after recovery").permissions(["contacts:read"]),
        ))
        .expect("management works again");
    assert_eq!(made.key.created_by, format!("key:{}", admin.id()));
    let trail = db.json(&["audit", "--tenant", "default", "--limit", "10"]);
    assert!(trail.as_array().is_some_and(|e| e
        .iter()
        .any(|e| e["action"] == "create" && e["key_id"] == text(&recovered, "/key/id"))));
}

#[test]
fn every_command_against_sqlite() {
    let db = Db::sqlite();
    every_command(&db);
    exit_codes_of_configuration(&db);
}

/// The tool's changes go to the outbox with them, for the service's
/// worker; an operator lists endpoints and replays dead deliveries.
fn webhooks_through_the_tool(db: &Db) {
    use keyward::store::Settlement;
    use keyward::webhook::NewEndpoint;
    let rt = runtime();
    db.json(&["admin", "bootstrap", "--tenant", "default"]);
    let keys = db.keyward(&rt);
    let acme = keyward::Actor::new("owner", "acme")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let made = rt
        .block_on(keys.create_endpoint(&acme, NewEndpoint::new("https://hooks.acme.example/k")))
        .expect("endpoint");
    let listed = db.json(&["webhooks", "list", "--tenant", "acme"]);
    assert_eq!(listed[0]["id"], made.endpoint.id.as_str());
    assert_eq!(listed[0]["pending"], 0);
    assert!(!listed.to_string().contains("whsec_"), "never a secret");
    let created = db.json(&[
        "keys",
        "create",
        "--tenant",
        "acme",
        "--name",
        "ci",
        "--perm",
        "contacts:read",
    ]);
    let id = text(&created, "/key/id").to_string();
    db.json(&["keys", "revoke", &id]);
    let listed = db.json(&["webhooks", "list", "--tenant", "acme"]);
    assert_eq!(
        listed[0]["pending"], 2,
        "created and revoked wait for the service"
    );
    // Both fail for good: dead, until the operator replays them.
    let store = db.store(&rt);
    let outbox = store
        .outbox()
        .expect("every store keyward ships keeps an outbox");
    rt.block_on(async {
        let now = chrono::Utc::now();
        let claimed = outbox
            .claim("test", now, now + chrono::Duration::minutes(1), 10, 10)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 2);
        for d in claimed {
            let dead = Settlement::Dead {
                at: now,
                error: "gone".into(),
            };
            assert!(outbox.settle(&d.id, "test", &dead).await.expect("settle"));
        }
    });
    let listed = db.json(&["webhooks", "list", "--tenant", "acme"]);
    assert_eq!(
        (listed[0]["pending"].as_u64(), listed[0]["dead"].as_u64()),
        (Some(0), Some(2))
    );
    // Another tenant's replay touches nothing; a wrong endpoint is 4.
    assert_eq!(
        db.json(&["webhooks", "replay", "--tenant", "globex"])["replayed"],
        0
    );
    db.run(
        &[
            "webhooks",
            "replay",
            "--tenant",
            "acme",
            "--endpoint",
            "ep_nope",
        ],
        4,
    );
    let replayed = db.json(&[
        "webhooks",
        "replay",
        "--tenant",
        "acme",
        "--endpoint",
        &made.endpoint.id,
    ]);
    assert_eq!(replayed["replayed"], 2);
    let listed = db.json(&["webhooks", "list", "--tenant", "acme"]);
    assert_eq!(listed[0]["pending"], 2);
}

#[test]
fn webhooks_through_the_tool_on_sqlite() {
    webhooks_through_the_tool(&Db::sqlite());
}

#[test]
fn webhooks_through_the_tool_on_postgres() {
    let Some(db) = Db::postgres() else { return };
    webhooks_through_the_tool(&db);
}

#[test]
fn every_command_against_postgres() {
    let Some(db) = Db::postgres() else { return };
    every_command(&db);
}

#[test]
fn a_locked_out_operator_recovers_on_sqlite() {
    a_locked_out_operator_recovers(&Db::sqlite());
}

#[test]
fn a_locked_out_operator_recovers_on_postgres() {
    let Some(db) = Db::postgres() else { return };
    a_locked_out_operator_recovers(&db);
}

/// The sweep runs by the rules the catalog file states, or not at all.
#[test]
fn the_sweep_obeys_the_stated_lifecycle() {
    let db = Db::sqlite();
    let file = db.dir.path().join("old.jsonl");
    let long_ago = (chrono::Utc::now() - chrono::Duration::days(200)).to_rfc3339();
    let row = serde_json::json!({
        "token": format!("acme_live_{:0>32}", 1), "name": "dormant", "tenant": "acme",
        "created_at": long_ago, "last_used_at": long_ago,
    });
    std::fs::write(&file, format!("{row}\n")).expect("file");
    db.run(&["import", &file.to_string_lossy()], 0);
    // inactivity_days = 0: kept.
    let swept = db.json(&["sweep"]);
    assert_eq!(
        swept["deleted"].as_array().map(Vec::len),
        Some(0),
        "{swept}"
    );
    assert_eq!(db.json(&["keys", "list"]).as_array().map(Vec::len), Some(1));
    // 90 days: deleted.
    let strict = CATALOG.replace("inactivity_days = 0", "inactivity_days = 90");
    std::fs::write(db.catalog(), strict).expect("catalog");
    let swept = db.json(&["sweep"]);
    assert_eq!(
        swept["deleted"].as_array().map(Vec::len),
        Some(1),
        "{swept}"
    );
    // No [lifecycle]: the sweep refuses rather than guess.
    let unstated = CATALOG.replace("[lifecycle]\ninactivity_days = 0\n", "");
    std::fs::write(db.catalog(), unstated).expect("catalog");
    let (_, err) = db.run(&["sweep"], 3);
    assert!(err.contains("[lifecycle]"), "{err}");
}

/// Mistakes an operator makes at 3 a.m. leak nothing and change nothing.
#[test]
fn mistakes_leak_no_secret_and_create_no_database() {
    let db = Db::sqlite();
    db.json(&["admin", "bootstrap", "--tenant", "default"]);
    let made = db.json(&["keys", "create", "--tenant", "acme", "--name", "x"]);
    let token = text(&made, "/token").to_string();
    let (_, err) = db.run(&["keys", "revoke", &token], 5);
    assert!(
        !err.contains(&token[12..]),
        "the token is not echoed: {err}"
    );
    assert!(err.contains(&token[3..11]), "its id is named: {err}");
    let (_, err) = db.run(&["--json", "keys", "show", &token], 5);
    assert!(!err.contains(&token[12..]));

    let missing = db.dir.path().join("never.db");
    let file = db.dir.path().join("rows.jsonl");
    std::fs::write(
        &file,
        "{\"token\":\"x\",\"name\":\"y\",\"tenant\":\"acme\"}\n",
    )
    .expect("file");
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.env_remove("DATABASE_URL")
        .arg("--db")
        .arg(format!("sqlite:{}", missing.display()))
        .arg("--catalog")
        .arg(db.catalog())
        .args(["import", "--dry-run"])
        .arg(&file);
    c.assert().code(3);
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.env_remove("DATABASE_URL")
        .arg("--db")
        .arg(format!("sqlite:{}", missing.display()))
        .arg("--catalog")
        .arg(db.catalog())
        .args(["import", "no-such-file.jsonl"]);
    c.assert().code(3);
    assert!(
        !missing.exists(),
        "neither a dry run nor a missing file creates a database"
    );

    db.run(&["--actor", "keyward:sweep", "keys", "list"], 3);
    db.run(&["--actor", "evil\u{1b}[2J", "keys", "list"], 3);
}

#[test]
fn an_import_of_csv_through_the_tool() {
    let db = Db::sqlite();
    let file = db.dir.path().join("keys.csv");
    let mut csv = String::from("token,name,tenant,permissions\n");
    for n in 0..300 {
        csv.push_str(&format!("acme_live_{n:0>32},Key {n},acme,contacts:read\n"));
    }
    csv.push_str(",no secret,acme,\n");
    std::fs::write(&file, csv).expect("file");
    let file = file.to_string_lossy().into_owned();
    let (out, _) = db.run(&["--json", "import", &file], 7);
    let report: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["imported"], 300);
    assert_eq!(report["rejected"][0]["line"], 302);
    let (out, _) = db.run(&["--json", "import", &file], 7);
    let report: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (
            report["imported"].as_u64(),
            report["already_present"].as_u64()
        ),
        (Some(0), Some(300))
    );
    let rt = runtime();
    let keys = db.keyward(&rt);
    let token = format!("acme_live_{:0>32}", 299);
    assert!(rt.block_on(keys.verify(&token)).is_ok());
}
