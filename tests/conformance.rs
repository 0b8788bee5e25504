//! The store conformance suite against every store keyward ships.

use keyward::store::conformance;
use keyward::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance::run(|| async { MemoryStore::new() }).await;
}
