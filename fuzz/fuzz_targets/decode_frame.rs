//! Feeds arbitrary bytes to `FrameDecoder` (whole, then in chunks whose sizes come from
//! the input) and decodes every frame it yields. Must never panic.
//!
//! Run: `cargo +nightly fuzz run decode_frame` from the crate root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use macula::wire::{FrameDecoder, RawFrame};

fn exercise(frame: &RawFrame) {
    let _ = frame.msg_type();
    let _ = frame.body();
    if let Ok(f) = frame.decode() {
        // A decoded frame re-encodes to something that decodes to the same frame.
        let again = f.to_bytes();
        let mut d = FrameDecoder::new(u32::MAX);
        d.extend(&again);
        let raw = d
            .next_frame()
            .expect("re-encoded header is valid")
            .expect("whole frame");
        assert_eq!(raw.decode().expect("re-encoded body is valid"), f);
    }
    let _ = frame.publish_view();
}

fuzz_target!(|data: &[u8]| {
    let mut whole = FrameDecoder::new(64 * 1024);
    whole.extend(data);
    while let Ok(Some(frame)) = whole.next_frame() {
        exercise(&frame);
    }
    let _ = whole.finish();

    // Same bytes in chunks sized by the first byte: framing must not depend on read sizes.
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut split = FrameDecoder::new(64 * 1024);
    let all = bytes::Bytes::copy_from_slice(data);
    for (i, chunk) in data.chunks(step).enumerate() {
        // Alternately copied and handed over whole (zero-copy framing).
        if i % 2 == 0 {
            split.extend(chunk);
        } else {
            let start = i * step;
            split.extend_bytes(all.slice(start..start + chunk.len()));
        }
        while let Ok(Some(frame)) = split.next_frame() {
            exercise(&frame);
        }
    }
    let _ = split.finish();
});
