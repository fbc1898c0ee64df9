//! Topic matcher benchmarks: `PatternTrie` matching at 10 / 1,000 / 100,000 patterns, insert +
//! remove churn, and `validate_topic`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use macula::topic::{validate_topic, PatternTrie};

const METRICS: [&str; 4] = ["temp", "humidity", "pressure", "co2"];

/// The `i`-th pattern of a realistic subscription mix over `sites` sites: 80 % literal
/// (`sensors.site3.dev17.temp`), 10 % one-segment wildcard (`sensors.site3.*.temp`),
/// 5 % tail wildcard (`sensors.site3.dev17.**`), 5 % leading wildcard (`**.dev17.alarm`).
fn pattern(i: usize, sites: usize) -> String {
    let site = i % sites;
    let dev = i / sites;
    let metric = METRICS[(i / 7) % METRICS.len()];
    match i % 20 {
        0..=15 => format!("sensors.site{site}.dev{dev}.{metric}"),
        16 | 17 => format!("sensors.site{site}.*.{metric}"),
        18 => format!("sensors.site{site}.dev{dev}.**"),
        _ => format!("**.dev{dev}.alarm"),
    }
}

fn build(n: usize) -> PatternTrie<usize> {
    let sites = (n / 50).clamp(1, 1_000);
    let mut trie = PatternTrie::new();
    for i in 0..n {
        trie.insert(&pattern(i, sites), i);
    }
    trie
}

fn bench_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    group.throughput(Throughput::Elements(1));
    for n in [10usize, 1_000, 100_000] {
        let trie = build(n);
        // A topic that hits a literal pattern and some wildcards, and one that hits nothing.
        let hit = "sensors.site0.dev0.temp";
        let miss = "sensors.site99999.dev99999.voltage";
        group.bench_with_input(BenchmarkId::new("for_each_match/hit", n), &trie, |b, t| {
            b.iter(|| {
                let mut count = 0usize;
                t.for_each_match(black_box(hit), |v| count += *v);
                count
            })
        });
        group.bench_with_input(BenchmarkId::new("for_each_match/miss", n), &trie, |b, t| {
            b.iter(|| {
                let mut count = 0usize;
                t.for_each_match(black_box(miss), |v| count += *v);
                count
            })
        });
        group.bench_with_input(BenchmarkId::new("any_match/hit", n), &trie, |b, t| {
            b.iter(|| t.any_match(black_box(hit)))
        });
    }
    group.finish();
}

fn bench_churn(c: &mut Criterion) {
    let base = build(1_000);
    // Patterns not already in `base`, so that each remove undoes exactly its insert.
    let extra: Vec<String> = (1_000..2_000)
        .map(|i| pattern(i, 20))
        .filter(|p| base.get(p).is_none())
        .collect();
    let mut trie = base.clone();
    let mut i = 0usize;
    c.bench_function("churn/insert_remove_1000", |b| {
        b.iter(|| {
            let p = &extra[i % extra.len()];
            i += 1;
            trie.insert(black_box(p), i);
            trie.remove(black_box(p))
        })
    });
}

fn bench_validate(c: &mut Criterion) {
    c.bench_function("validate_topic", |b| {
        b.iter(|| validate_topic(black_box("sensors.site-42.device_0017.temp")))
    });
}

criterion_group!(benches, bench_match, bench_churn, bench_validate);
criterion_main!(benches);
