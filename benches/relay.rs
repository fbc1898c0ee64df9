//! Relay core benchmarks: the cost of one subscribe + unsubscribe while other links hold
//! 1,000 / 10,000 patterns (incremental: O(the pattern × links told)), and the cost of
//! routing one publish. (Until commit bc0fb46 this also measured `router::RouteTable`, the
//! snapshot-rebuilding table the relay replaced; its figures are in `docs/BENCHMARKS.md`.)

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use macula::relay::{LinkKind, Relay};
use macula::router::grouped_key;

/// Links holding the background patterns (a bridge's children, one cluster each).
const LINKS: u64 = 20;

fn pattern(i: usize) -> String {
    match i % 10 {
        0 => format!("sensors.site{}.*.temp", i % 97),
        _ => format!("sensors.site{}.dev{i}.temp", i % 97),
    }
}

fn relay(held: usize) -> Relay<()> {
    let mut r = Relay::new(usize::MAX);
    for l in 0..LINKS {
        r.add_link(
            grouped_key(l as u32 + 1, l as u32),
            LinkKind::Child,
            Some(Arc::new(())),
        );
    }
    r.add_link(1, LinkKind::Uplink, Some(Arc::new(())));
    for i in 0..held {
        let l = grouped_key((i as u64 % LINKS) as u32 + 1, (i as u64 % LINKS) as u32);
        r.subscribe(l, &[pattern(i)]).expect("within limits");
    }
    r
}

fn bench_churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("subscribe_unsubscribe");
    let churn = vec!["churn.topic.x".to_string()];
    for held in [1_000usize, 10_000] {
        let mut r = relay(held);
        let link = grouped_key(1, 0);
        group.bench_with_input(BenchmarkId::new("relay", held), &held, |b, _| {
            b.iter(|| {
                let (_, d) = r.subscribe(link, &churn).expect("within limits");
                black_box(d);
                black_box(r.unsubscribe(link, &churn));
            })
        });
    }
    group.finish();
}

fn bench_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    let r = relay(10_000);
    let topic = "sensors.site5.dev5.temp";
    let mut out = Vec::new();
    group.bench_function("relay", |b| {
        b.iter(|| {
            r.route(1, black_box(topic), true, &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_churn, bench_route);
criterion_main!(benches);
