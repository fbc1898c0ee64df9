//! Feeds arbitrary bytes to the revocation-list decoder (`macula::auth::revocation`), as
//! bytes and as text. Must never panic; a decoded list holds at most `MAX_REVOKED` ids.
//!
//! Run: `cargo +nightly fuzz run decode_revocation` from the crate root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use macula::auth::revocation::{Revocations, MAX_REVOKED};

fuzz_target!(|data: &[u8]| {
    if let Ok(l) = Revocations::decode(data) {
        assert!(l.ids.len() <= MAX_REVOKED);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(bytes) = Revocations::from_text(text) {
            let _ = Revocations::decode(&bytes);
        }
    }
});
