//! Fleet placement benchmarks (issue 5): the cost of one owner lookup for 3, 8 and 64 workers
//! with the fleet's [`Placement`] (rendezvous) and, for comparison, the ring (160 vnodes) and
//! Maglev (M = 65,537); the cost of building each on a membership change; and
//! [`cluster_key`]. Workers and keys are `macula::fleet::hash::{sample_workers, sample_keys}`
//! (equal weights unless the name says `weighted`: one worker at 200).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use macula::fleet::hash::{
    cluster_key, sample_keys, sample_workers, Maglev, Placement, Ring, Scheme, Worker,
};

const SIZES: [usize; 3] = [3, 8, 64];

/// Looks up the owner of 1,024 keys in turn, one per iteration.
fn lookups<S: Scheme>(b: &mut criterion::Bencher<'_>, scheme: &S, keys: &[u64]) {
    let mut i = 0usize;
    b.iter(|| {
        i = (i + 1) & 1023;
        black_box(scheme.owner(black_box(keys[i])))
    })
}

fn weighted(n: usize) -> Vec<Worker> {
    let mut w = sample_workers(n);
    w[0].weight = 200;
    w
}

fn bench(c: &mut Criterion) {
    let keys = sample_keys(1024);

    let mut g = c.benchmark_group("fleet/owner");
    for n in SIZES {
        let workers = sample_workers(n);
        g.bench_with_input(BenchmarkId::new("placement", n), &n, |b, _| {
            lookups(b, &Placement::new(&workers), &keys)
        });
        g.bench_with_input(BenchmarkId::new("placement_weighted", n), &n, |b, _| {
            lookups(b, &Placement::new(&weighted(n)), &keys)
        });
        g.bench_with_input(BenchmarkId::new("ring", n), &n, |b, _| {
            lookups(b, &Ring::new(&workers), &keys)
        });
        g.bench_with_input(BenchmarkId::new("maglev", n), &n, |b, _| {
            lookups(b, &Maglev::new(&workers), &keys)
        });
    }
    g.finish();

    let mut g = c.benchmark_group("fleet/build");
    for n in SIZES {
        let workers = sample_workers(n);
        g.bench_with_input(BenchmarkId::new("placement", n), &n, |b, _| {
            b.iter(|| Placement::new(black_box(&workers)))
        });
        g.bench_with_input(BenchmarkId::new("ring", n), &n, |b, _| {
            b.iter(|| Ring::new(black_box(&workers)))
        });
        g.bench_with_input(BenchmarkId::new("maglev", n), &n, |b, _| {
            b.iter(|| Maglev::new(black_box(&workers)))
        });
    }
    g.finish();

    c.bench_function("fleet/cluster_key", |b| {
        b.iter(|| cluster_key(black_box("io.macula"), black_box("cluster-12345")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
