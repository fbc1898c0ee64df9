//! Feeds arbitrary bytes to the credential decoder (`macula::auth::Credential`), as bytes and
//! as text, and checks whatever decodes against a realm. Must never panic; a decoded
//! credential re-checks the same way twice.
//!
//! Run: `cargo +nightly fuzz run decode_credential` from the crate root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use macula::auth::{Admission, Credential, Role};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Credential::decode(data) {
        let ops = [c.issuer];
        let a = c.check(&c.claims.realm, &c.claims.subject, &ops, 0);
        assert_eq!(a, c.check(&c.claims.realm, &c.claims.subject, &ops, 0));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(bytes) = Credential::from_text(text) {
            let _ = Credential::decode(&bytes);
        }
    }
    let admission = Admission::new([("io.macula".to_string(), vec![[7u8; 32]])].into());
    let _ = admission.admit(
        "io.macula",
        &[1; 32],
        Some(data),
        (Role::Node, "street-7"),
        1,
    );
});
