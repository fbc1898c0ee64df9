//! Escalation cache benchmarks: `LookupCache::get_or_escalate` answered from a cached entry
//! (the hot path of every repeated lookup at a bridge), positive and negative, on a cache
//! holding 10,000 entries (the default bound). The upstream closure is never called.
//!
//! criterion's `async_tokio` feature is not enabled, so each iteration drives the lookup with
//! `block_on` of a current-thread runtime; that overhead is part of the measurement and is
//! measured alone in `escalation/block_on_baseline`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use macula::dht::Id;
use macula::escalation::{
    Answer, CacheConfig, CacheMetrics, Level, LookupCache, LookupError, Provider,
};
use prometheus::Registry;

fn provider(n: u8) -> Provider {
    Provider {
        node_id: [n; 32],
        cluster: format!("cluster-{n}"),
        via: format!("street-{n}"),
    }
}

fn never_called() -> std::future::Ready<Result<Answer, LookupError>> {
    unreachable!("the benchmarked key is cached")
}

fn bench_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let metrics = CacheMetrics::new(&Registry::new()).expect("fresh registry");
    let cache = LookupCache::new(
        Level::Street,
        CacheConfig::for_level(Level::Street),
        &metrics,
    );
    let realm: Arc<str> = Arc::from("io.macula");
    let found = Answer::found(vec![provider(1), provider(2), provider(3)]);
    rt.block_on(async {
        for i in 0..10_000 {
            let key = Id::scoped("io.macula", &format!("svc.{i}"));
            let answer = if i % 2 == 0 {
                found.clone()
            } else {
                Answer::NotFound
            };
            cache
                .get_or_escalate(realm.clone(), key, || async { Ok(answer) })
                .await
                .expect("insert");
        }
        cache.run_pending_tasks().await;
    });
    let hit_key = Id::scoped("io.macula", "svc.0");
    let negative_key = Id::scoped("io.macula", "svc.1");

    let mut g = c.benchmark_group("escalation");
    g.bench_function("cache_hit", |b| {
        b.iter(|| {
            rt.block_on(cache.get_or_escalate(realm.clone(), black_box(hit_key), never_called))
                .expect("hit")
        })
    });
    g.bench_function("negative_hit", |b| {
        b.iter(|| {
            rt.block_on(cache.get_or_escalate(realm.clone(), black_box(negative_key), never_called))
                .expect("hit")
        })
    });
    g.bench_function("block_on_baseline", |b| {
        b.iter(|| rt.block_on(async { black_box(1u64) }))
    });
    g.finish();
}

criterion_group!(benches, bench_hit);
criterion_main!(benches);
