//! Wire codec benchmarks: encode / decode of a publish with a 128-byte payload, and
//! `FrameDecoder` throughput over a buffer of many coalesced frames.
//!
//! Run: `cargo bench --bench codec` (add `-- --quick` for a short run).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use macula::wire::{
    encode_publish, message_id, Frame, FrameDecoder, Publish, Qos, DEFAULT_MAX_FRAME_SIZE,
};

const TOPIC: &str = "io.macula.sensors.building-7.floor-3.temperature";
const FRAMES_PER_BUFFER: usize = 1024;

fn publish() -> Publish {
    Publish {
        topic: TOPIC.to_owned(),
        payload: Bytes::from(vec![0xab; 128]),
        qos: Qos::AtLeastOnce,
        retain: false,
        message_id: message_id([7; 8], 123_456),
        ts_us: Some(1_700_000_000_000_000),
    }
}

fn encode(c: &mut Criterion) {
    let p = publish();
    let frame = Frame::Publish(p.clone());
    let len = frame.encoded_len();
    let mut g = c.benchmark_group("encode_publish_128");
    g.throughput(Throughput::Bytes(len as u64));
    let mut dst = BytesMut::with_capacity(len * 2);
    g.bench_function("encode_publish", |b| {
        b.iter(|| {
            dst.clear();
            encode_publish(
                &mut dst,
                black_box(&p.topic),
                black_box(&p.payload),
                p.qos,
                &p.message_id,
                p.ts_us,
            )
            .expect("fits");
            black_box(dst.len())
        })
    });
    g.bench_function("frame_encode", |b| {
        b.iter(|| {
            dst.clear();
            black_box(&frame).encode(&mut dst).expect("fits");
            black_box(dst.len())
        })
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let bytes = Frame::Publish(publish()).to_bytes();
    let mut g = c.benchmark_group("decode_publish_128");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
    dec.extend(&bytes);
    let raw = dec.next_frame().expect("valid").expect("whole");
    g.bench_function("publish_view", |b| {
        b.iter(|| black_box(black_box(&raw).publish_view().expect("valid").payload.len()))
    });
    g.bench_function("decode_owned", |b| {
        b.iter(|| black_box(black_box(&raw).decode().expect("valid")))
    });
    g.finish();
}

fn framing(c: &mut Criterion) {
    let mut stream = BytesMut::new();
    for i in 0..FRAMES_PER_BUFFER {
        let mut p = publish();
        p.message_id = message_id([7; 8], i as u64);
        Frame::Publish(p).encode(&mut stream).expect("fits");
    }
    let stream = stream.freeze();
    let mut g = c.benchmark_group("frame_decoder");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("coalesced_1024_publishes", |b| {
        b.iter_batched(
            || FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE),
            |mut dec| {
                dec.extend(&stream);
                let mut n = 0usize;
                while let Some(raw) = dec.next_frame().expect("valid") {
                    n += raw.publish_view().expect("valid").payload.len();
                }
                black_box(n)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("chunks_of_1200_bytes", |b| {
        b.iter_batched(
            || FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE),
            |mut dec| {
                let mut n = 0usize;
                for chunk in stream.chunks(1200) {
                    dec.extend(chunk);
                    while let Some(raw) = dec.next_frame().expect("valid") {
                        n += raw.header.body_len as usize;
                    }
                }
                black_box(n)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, encode, decode, framing);
criterion_main!(benches);
