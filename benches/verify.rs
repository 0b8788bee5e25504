//! Verification throughput.
//!
//! `cargo bench --bench verify`. Groups:
//! - `verify/valid/{1k,1M}`: a valid key against 1,000 and 1,000,000 stored keys
//! - `verify/wrong_secret`, `verify/unknown_id`: well-formed, refused
//! - `verify/malformed`: refused by the parser
//! - `baseline/sha256_token`: a bare SHA-256 of one token, the floor

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use keyward::{Actor, Catalog, Keyward, MemoryStore, NewKey, NoAudit, SecretToken};
use sha2::{Digest, Sha256};

#[path = "../tests/common/forge.rs"]
mod forge;

/// Polls a future that never waits (the in-memory store never does) to
/// completion without a runtime, so the figures are keyward's alone.
fn run<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn setup(n: usize) -> (Keyward, Vec<SecretToken>) {
    let catalog = Catalog::builder()
        .resource("contacts", ["read", "write"])
        .resource("users", ["read"])
        .build()
        .expect("valid catalog");
    let keys = Keyward::builder(MemoryStore::new(), catalog)
        .audit(NoAudit)
        .build()
        .expect("valid config");
    let admin = Actor::new("admin", "acme")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let mut tokens = Vec::with_capacity(16);
    for i in 0..n {
        let k = run(keys.create(
            &admin,
            NewKey::new(format!("key {i}")).permissions(["contacts:write"]),
        ))
        .expect("created");
        if tokens.len() < 16 {
            tokens.push(k.token);
        }
    }
    (keys, tokens)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify");
    for (label, n) in [("1k", 1_000usize), ("1M", 1_000_000)] {
        let (keys, tokens) = setup(n);
        let token = tokens[0].expose_secret().to_string();
        run(keys.verify(&token)).expect("valid");
        g.bench_function(format!("valid/{label}"), |b| {
            b.iter(|| run(keys.verify(black_box(&token))).expect("valid"))
        });
        if n == 1_000 {
            // Same id, other secret, valid checksum: reaches the hash compare.
            let wrong = forge::same_id_other_secret(&token);
            g.bench_function("wrong_secret", |b| {
                b.iter(|| run(keys.verify(black_box(&wrong))).expect_err("refused"))
            });
            let (_, others) = setup(1);
            let unknown = others[0].expose_secret().to_string();
            g.bench_function("unknown_id", |b| {
                b.iter(|| run(keys.verify(black_box(&unknown))).expect_err("refused"))
            });
            let mut bad = token.clone().into_bytes();
            bad[20] = if bad[20] == b'a' { b'b' } else { b'a' };
            let bad = String::from_utf8(bad).expect("ascii");
            g.bench_function("malformed", |b| {
                b.iter(|| run(keys.verify(black_box(&bad))).expect_err("refused"))
            });
        }
    }
    g.finish();

    let (_, tokens) = setup(1);
    let token = tokens[0].expose_secret().to_string();
    c.bench_function("baseline/sha256_token", |b| {
        b.iter(|| Sha256::digest(black_box(token.as_bytes())))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
