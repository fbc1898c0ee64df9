//! CRDT benchmarks: the operations gossip performs per message — merging a delta into a store,
//! computing the delta a peer lacks, encoding and decoding a state — on stores of the size a
//! cluster keeps: one OR-Set of 1,000 elements added by 5 actors (every tenth removed again)
//! and 1,000 G-Counter keys — 1,001 keys, 41 KB encoded.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use macula::crdt::{ActorId, CrdtMap, Hlc, Limits, Op};

fn actor(i: u8) -> ActorId {
    ActorId([i; 32])
}

/// A map with one OR-Set `set` of `elements` elements added round-robin by 5 actors (every
/// tenth removed again), plus `keys` G-Counters.
fn store(elements: usize, keys: usize) -> CrdtMap {
    let l = Limits::default();
    let mut m = CrdtMap::new();
    for i in 0..elements {
        let e = Bytes::from(format!("element-{i:06}"));
        m.apply(
            "set",
            Op::SetAdd(e.clone()),
            actor((i % 5) as u8),
            Hlc::default(),
            &l,
        )
        .unwrap();
        if i % 10 == 0 {
            m.apply(
                "set",
                Op::SetRemove(e),
                actor((i % 5) as u8),
                Hlc::default(),
                &l,
            )
            .unwrap();
        }
    }
    for k in 0..keys {
        m.apply(
            &format!("counter-{k:05}"),
            Op::Increment(k as u64 + 1),
            actor(1),
            Hlc::default(),
            &l,
        )
        .unwrap();
    }
    m
}

fn bench(c: &mut Criterion) {
    let l = Limits::default();
    let base = store(1000, 1000);
    // A one-element delta, as a push carries after one client update.
    let mut other = base.clone();
    let delta = other
        .apply(
            "set",
            Op::SetAdd("new".into()),
            actor(9),
            Hlc::default(),
            &l,
        )
        .unwrap();
    c.bench_function("crdt/merge_one_delta_into_1001_keys", |b| {
        b.iter_batched(
            || base.clone(),
            |mut s| {
                black_box(s.merge(&delta, &l));
                s // dropped outside the measurement
            },
            criterion::BatchSize::LargeInput,
        )
    });
    c.bench_function("crdt/merge_full_state_1001_keys", |b| {
        b.iter_batched(
            || base.clone(),
            |mut s| {
                black_box(s.merge(&other, &l));
                s
            },
            criterion::BatchSize::LargeInput,
        )
    });
    let digest = base.digest();
    c.bench_function("crdt/digest_1001_keys", |b| {
        b.iter(|| black_box(base.digest()))
    });
    c.bench_function("crdt/delta_since_digest_1001_keys", |b| {
        b.iter(|| black_box(other.delta_since(&digest)))
    });
    let mut buf = Vec::new();
    base.encode(&mut buf);
    eprintln!("encoded store: {} bytes", buf.len());
    c.bench_function("crdt/encode_1001_keys", |b| {
        b.iter(|| {
            let mut v = Vec::with_capacity(buf.len());
            base.encode(&mut v);
            black_box(v)
        })
    });
    c.bench_function("crdt/decode_1001_keys", |b| {
        b.iter(|| black_box(CrdtMap::decode(&buf, &l).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
