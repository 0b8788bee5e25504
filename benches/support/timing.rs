//! Timing async work with criterion: many iterations inside one
//! `block_on`, so that entering the runtime is not in the figure.

use std::hint::black_box;
use std::time::Instant;

use criterion::measurement::WallTime;
use criterion::BenchmarkGroup;
use keyward::Keyward;

/// Times `iters` runs of `f` inside one `block_on`.
pub fn bench_async<F: AsyncFn()>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    f: F,
) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    f().await;
                }
                start.elapsed()
            })
        })
    });
}

/// Times verifies of `token`, a valid key of `keys`.
pub fn bench_verify(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    keys: &Keyward,
    token: &str,
) {
    bench_async(g, rt, name, async || {
        black_box(keys.verify(black_box(token)).await.expect("valid"));
    });
}
