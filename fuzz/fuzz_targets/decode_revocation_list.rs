//! Feeds arbitrary bytes, as the body of a `revocation_list` frame (0x0A), to the frame
//! decoder, and what decodes to the list verifier (`macula::auth::revocation`) against an
//! operator table, as a receiving bridge or node does. Must never panic; a decoded `list`
//! is 1 to `MAX_REVOCATION_LIST` bytes and re-encodes to itself.
//!
//! Run: `cargo +nightly fuzz run decode_revocation_list` from the crate root.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use macula::auth::revocation::Revocations;
use macula::wire::{Frame, FrameDecoder, MessageType, MAX_REVOCATION_LIST};

fuzz_target!(|data: &[u8]| {
    let mut framed = vec![1, MessageType::RevocationList as u8, 0, 0];
    framed.extend_from_slice(&(data.len() as u32).to_be_bytes());
    framed.extend_from_slice(data);
    let mut d = FrameDecoder::new(u32::MAX);
    d.extend(&framed);
    let Ok(Some(raw)) = d.next_frame() else {
        return;
    };
    let Ok(f) = raw.decode() else {
        return;
    };
    let Frame::RevocationList(l) = &f else {
        panic!("a revocation_list header decodes to a revocation_list");
    };
    assert!(!l.list.is_empty() && l.list.len() <= MAX_REVOCATION_LIST);
    let mut again = FrameDecoder::new(u32::MAX);
    again.extend(&f.to_bytes());
    let re = again.next_frame().expect("valid header").expect("whole frame");
    assert_eq!(re.decode().expect("re-encoded body is valid"), f);
    let operators = HashMap::from([("io.macula".to_string(), vec![[7u8; 32]])]);
    let _ = Revocations::verify(&l.list, &operators);
});
