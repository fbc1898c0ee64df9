//! Feeds arbitrary bytes to the CRDT state and digest decoders (what a gossip frame's `state`,
//! `digest` and `wants` carry): they must return an error or a value, never panic, and a
//! decoded state must encode and decode to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use macula::crdt::{CrdtMap, Digest, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(m) = CrdtMap::decode(data, &limits) {
        let mut again = Vec::new();
        m.encode(&mut again);
        assert_eq!(CrdtMap::decode(&again, &limits).ok(), Some(m));
    }
    let _ = Digest::decode(data, &limits);
});
