//! Keys created in a SQLite file survive the process being killed: a child
//! process creates keys and prints each token once `create` returned; the
//! parent kills it with SIGKILL mid-stream, reopens the file and verifies
//! every printed token.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{admin, catalog, TempDir};
use keyward::{Keyward, NewKey, SqliteStore};

const CHILD_ENV: &str = "KEYWARD_DURABILITY_CHILD_DB";

/// The child's side: runs only when the parent re-executes this test
/// binary with the database path in `CHILD_ENV`.
#[tokio::test]
async fn child_creates_keys_until_killed() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return; // an ordinary test run: nothing to do
    };
    let store = SqliteStore::open(path).await.expect("open");
    let keys = Keyward::builder(store, catalog()).build().expect("config");
    let actor = admin(&keys, "acme");
    for i in 0.. {
        let issued = keys
            .create(&actor, NewKey::new(format!("key {i}")))
            .await
            .expect("create");
        // Printed only after the create returned: the parent may count on it.
        println!("TOKEN {}", issued.token.expose_secret());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_kill_9() {
    let dir = TempDir::new("durability");
    let db = dir.path().join("keys.db");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_creates_keys_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut tokens = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child output");
        if let Some(token) = line.strip_prefix("TOKEN ") {
            tokens.push(token.to_string());
            if tokens.len() == 200 {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL the child mid-stream");
    let status = child.wait().expect("reap");
    assert!(!status.success(), "the child was killed, not finished");
    assert_eq!(tokens.len(), 200, "the child printed 200 tokens");

    let store = SqliteStore::open(&db)
        .await
        .expect("reopen after the crash");
    // What makes a returned create durable beyond a process crash (a
    // power loss too): checked on the pool's connections.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut conn = store.pool().acquire().await.expect("connection");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .expect("pragma");
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .expect("pragma");
        assert_eq!(
            (sync, journal.as_str()),
            (2, "wal"),
            "synchronous = FULL in WAL mode"
        );
        held.push(conn); // the next round gets another connection
    }
    drop(held);
    let keys = Keyward::builder(store, catalog()).build().expect("config");
    for token in &tokens {
        keys.verify(token)
            .await
            .unwrap_or_else(|e| panic!("a key whose creation returned was lost: {e}"));
    }
    let listed = keys
        .list(&admin(&keys, "acme"), "acme")
        .await
        .expect("list");
    assert!(listed.len() >= 200, "{} keys listed", listed.len());
}
