//! De-duplication window benchmarks: one insert into a [`DedupWindow`] at the default
//! capacity, for one publisher session sending in sequence, 64 sessions interleaved, and
//! random ids (every insert a new session: the lane bound and its LRU eviction at work).
//!
//! Run: `cargo bench --bench dedup` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use macula::dedup::DedupWindow;
use macula::defaults::DEDUP_WINDOW;
use macula::wire::message_id;

/// xorshift64*: a fixed pseudo-random stream, no dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn dedup(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedup");
    g.throughput(Throughput::Elements(1));

    let mut w = DedupWindow::new(DEDUP_WINDOW);
    let mut seq = 1_000u64;
    g.bench_function("1_session_sequential", |b| {
        b.iter(|| {
            seq += 1;
            black_box(w.insert(message_id([7; 8], black_box(seq))))
        })
    });

    let mut w = DedupWindow::new(DEDUP_WINDOW);
    let sessions: Vec<[u8; 8]> = (0..64u64)
        .map(|s| (s * 0x9e37_79b9).to_le_bytes())
        .collect();
    let mut n = 0u64;
    g.bench_function("64_sessions_interleaved", |b| {
        b.iter(|| {
            n += 1;
            let session = sessions[(n % 64) as usize];
            black_box(w.insert(message_id(session, black_box(n / 64))))
        })
    });

    let mut w = DedupWindow::new(DEDUP_WINDOW);
    let mut state = 0x1234_5678_9abc_def1u64;
    g.bench_function("random_ids", |b| {
        b.iter(|| {
            let session = next(&mut state).to_le_bytes();
            black_box(w.insert(message_id(session, next(&mut state))))
        })
    });

    g.finish();
}

criterion_group!(benches, dedup);
criterion_main!(benches);
