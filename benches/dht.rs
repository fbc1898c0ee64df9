//! DHT benchmarks: `RoutingTable::closest` on a table of 2,000 contacts (20 in each of the
//! 100 farthest buckets, so every bucket visited is full), `closest` on a realistic table
//! built by observing 2,000 random ids (only ~log2(2,000) buckets fill: ~150 contacts), and
//! `observe` of a contact already in the table (the per-message hot path).

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use macula::dht::{Contact, Id, RoutingTable, Timestamp, K};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn contact(id: Id, i: usize) -> Contact {
    Contact {
        id,
        addr: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 9443)),
    }
}

/// 2,000 contacts: K = 20 in each of buckets 0..100.
fn dense_table(rng: &mut StdRng) -> RoutingTable {
    let own = Id::random(rng);
    let mut table = RoutingTable::new(own);
    for i in 0..2_000 {
        let id = own.random_in_bucket(i / K, rng);
        table.observe(contact(id, i), Timestamp(i as u64));
    }
    assert_eq!(table.len(), 2_000);
    table
}

/// 2,000 random ids observed: what a node of a 2,000-node network would hold.
fn random_table(rng: &mut StdRng) -> RoutingTable {
    let mut table = RoutingTable::new(Id::random(rng));
    for i in 0..2_000 {
        table.observe(contact(Id::random(rng), i), Timestamp(i as u64));
    }
    table
}

fn bench_closest(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(42);
    let mut group = c.benchmark_group("dht_closest");
    group.throughput(Throughput::Elements(1));
    let tables = [
        ("dense_2000", dense_table(&mut rng)),
        ("random_2000_observed", random_table(&mut rng)),
    ];
    let targets: Vec<Id> = (0..64).map(|_| Id::random(&mut rng)).collect();
    for (name, table) in &tables {
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("k20", name), table, |b, t| {
            b.iter(|| {
                i = (i + 1) % targets.len();
                t.closest(black_box(&targets[i]), K)
            })
        });
    }
    // Targets in the owner's deep buckets walk many buckets before finding k contacts.
    let (_, dense) = &tables[0];
    let near = dense.own_id().random_in_bucket(150, &mut rng);
    group.bench_function("k20/dense_2000_near_self", |b| {
        b.iter(|| dense.closest(black_box(&near), K))
    });
    group.finish();
}

fn bench_observe(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut table = dense_table(&mut rng);
    let known: Vec<Contact> = table.iter().copied().step_by(37).collect();
    let mut group = c.benchmark_group("dht_observe");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    let mut now = 10_000u64;
    group.bench_function("known_contact/dense_2000", |b| {
        b.iter(|| {
            i = (i + 1) % known.len();
            now += 1;
            table.observe(black_box(known[i]), Timestamp(now))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_closest, bench_observe);
criterion_main!(benches);
