//! Body of the `revocation_list` frame (0x0A): one realm's operator-signed revocation list,
//! spread between the bridges and nodes of the realm (`docs/PROTOCOL.md` §5.30, semantics in
//! `docs/AUTH.md`, "Revocation").
//!
//! The wire layer carries the list's bytes opaquely and bounds them on decode
//! ([`WireError::InvalidField`] above [`MAX_REVOCATION_LIST`] bytes); the receiver verifies
//! the signature and the `seq` ([`crate::auth::Auth::on_revocation_list`]).
//!
//! [`WireError::InvalidField`]: super::WireError::InvalidField

use bytes::Bytes;

/// Largest `list` in a `revocation_list` frame, in bytes: the largest list
/// ([`crate::auth::revocation::MAX_LIST_BYTES`], 181,024 bytes for 10,000 ids).
pub const MAX_REVOCATION_LIST: usize = crate::auth::revocation::MAX_LIST_BYTES;

/// `revocation_list` (0x0A): a revocation list (`docs/AUTH.md`, "Revocation") the sender
/// holds in force, for the receiver to verify, apply if newer and pass on. Never answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    /// `"list"` (bin, 1..=[`MAX_REVOCATION_LIST`] bytes): the signed list, exactly as
    /// `macula keys revoke` wrote it (the bytes of its `mr1.` text form); a zero-copy slice of
    /// the frame after decoding.
    pub list: Bytes,
}
