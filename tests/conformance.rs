//! The store conformance suite against every store keyward ships.

mod common;

use keyward::store::conformance;
use keyward::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance::run(|| async { MemoryStore::new() }).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_store_conforms() {
    conformance::run(|| async {
        keyward::SqliteStore::in_memory()
            .await
            .expect("in-memory SQLite")
    })
    .await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_store_conforms() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = common::TempDir::new("conformance");
    let n = AtomicUsize::new(0);
    conformance::run(|| {
        let path = dir
            .path()
            .join(format!("keys-{}.db", n.fetch_add(1, Ordering::SeqCst)));
        async move { keyward::SqliteStore::open(path).await.expect("SQLite file") }
    })
    .await;
}
