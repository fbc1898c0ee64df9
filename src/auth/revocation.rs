//! Revocation lists (`docs/AUTH.md`, "Revocation"): an operator-signed list of credential ids
//! that a realm no longer admits, applied at `connect` and to live sessions.
//!
//! Bytes: a MessagePack map (the *body*) followed by the 64-byte Ed25519 signature (RFC 8032)
//! by the issuing operator's key over [`SIGNING_CONTEXT`] ‖ body. Text: [`TEXT_PREFIX`] and the
//! bytes in unpadded base64url (RFC 4648 §5).
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `v` | uint | format version, 1 |
//! | `iss` | bin 32 | the issuing operator's public key |
//! | `realm` | str | the realm whose credentials it revokes |
//! | `seq` | uint | the list's version (`macula keys revoke` uses Unix seconds): a process never replaces a list by one with a lower `seq` |
//! | `ids` | array of bin 16 | the revoked credential ids, at most [`MAX_REVOKED`] |
//!
//! Each list is whole (not a delta): the newest replaces the older. Unknown keys make the
//! list malformed.

use std::collections::HashSet;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::identity::Identity;

/// Signed before the body (domain separation from credentials and proofs).
pub const SIGNING_CONTEXT: &[u8] = b"macula revocations v1\0";

/// Prefix of the text form.
pub const TEXT_PREFIX: &str = "mr1.";

/// Most ids in one list.
pub const MAX_REVOKED: usize = 10_000;

/// Most bytes in one list (body and signature): [`MAX_REVOKED`] ids of 18 bytes each (a bin 8
/// header and 16 bytes) and 1,024 bytes for the other keys and the signature. Longer input is
/// [`RevocationError::Malformed`] before it is parsed; the `revocation_list` frame
/// (`docs/PROTOCOL.md` §5.30) is bounded by the same value.
pub const MAX_LIST_BYTES: usize = MAX_REVOKED * 18 + 1024;

const SIGNATURE_LEN: usize = 64;

/// A verified revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocations {
    /// The issuer's public key (the caller checks it is an operator of `realm`).
    pub issuer: [u8; 32],
    /// The realm.
    pub realm: String,
    /// The list's version.
    pub seq: u64,
    /// The revoked credential ids.
    pub ids: HashSet<[u8; 16]>,
    /// The signed bytes the list was decoded from (what travels in a `revocation_list`
    /// frame).
    pub bytes: bytes::Bytes,
}

/// Why a revocation list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// Not a list: bad prefix, base64, MessagePack, field or size.
    #[error("malformed revocation list: {0}")]
    Malformed(String),
    /// The signature does not verify with the key the list names.
    #[error("revocation list signature does not verify")]
    BadSignature,
    /// Signed by a key that is not an operator of the realm.
    #[error("revocation list issuer is not an operator of realm {0:?}")]
    UnknownIssuer(String),
    /// For a realm without operator keys here (an open realm revokes nothing).
    #[error("revocation list for realm {0:?}, which has no operator keys here")]
    UnknownRealm(String),
}

impl RevocationError {
    /// The `outcome` label of `macula_revocation_lists_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            RevocationError::Malformed(_) => "malformed",
            RevocationError::BadSignature => "bad_signature",
            RevocationError::UnknownIssuer(_) => "unknown_issuer",
            RevocationError::UnknownRealm(_) => "unknown_realm",
        }
    }
}

#[derive(Serialize)]
struct BodySer<'a> {
    v: u64,
    #[serde(with = "serde_bytes")]
    iss: &'a [u8],
    realm: &'a str,
    seq: u64,
    ids: Vec<serde_bytes::ByteArray<16>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyDe {
    v: u64,
    #[serde(with = "serde_bytes")]
    iss: serde_bytes::ByteArray<32>,
    realm: String,
    seq: u64,
    ids: Vec<serde_bytes::ByteArray<16>>,
}

fn malformed(e: impl std::fmt::Display) -> RevocationError {
    RevocationError::Malformed(e.to_string())
}

impl Revocations {
    /// Signs a list revoking `ids` in `realm`, version `seq`, with `operator`'s key: its
    /// bytes. Errors: more than [`MAX_REVOKED`] ids ([`RevocationError::Malformed`]).
    pub fn issue(
        operator: &Identity,
        realm: &str,
        seq: u64,
        ids: &[[u8; 16]],
    ) -> Result<Vec<u8>, RevocationError> {
        if ids.len() > MAX_REVOKED {
            return Err(malformed(format!("more than {MAX_REVOKED} ids")));
        }
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let body = rmp_serde::to_vec_named(&BodySer {
            v: 1,
            iss: &operator.public_key(),
            realm,
            seq,
            ids: sorted
                .into_iter()
                .map(serde_bytes::ByteArray::new)
                .collect(),
        })
        .map_err(malformed)?;
        let mut signed = SIGNING_CONTEXT.to_vec();
        signed.extend_from_slice(&body);
        let mut out = body;
        out.extend_from_slice(&operator.sign(&signed));
        Ok(out)
    }

    /// Decodes `bytes` and verifies the signature against the key the body names. Errors:
    /// [`RevocationError::Malformed`], [`RevocationError::BadSignature`]. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Revocations, RevocationError> {
        if bytes.len() <= SIGNATURE_LEN {
            return Err(malformed("shorter than a signature"));
        }
        if bytes.len() > MAX_LIST_BYTES {
            return Err(malformed("too large"));
        }
        let (body, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let b: BodyDe = rmp_serde::from_slice(body).map_err(malformed)?;
        if b.v != 1 {
            return Err(malformed(format!("version {} (this build reads 1)", b.v)));
        }
        if b.ids.len() > MAX_REVOKED {
            return Err(malformed(format!("more than {MAX_REVOKED} ids")));
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(&b.iss)
            .map_err(|_| RevocationError::BadSignature)?;
        let sig = ed25519_dalek::Signature::from_slice(sig).map_err(malformed)?;
        let mut signed = SIGNING_CONTEXT.to_vec();
        signed.extend_from_slice(body);
        key.verify_strict(&signed, &sig)
            .map_err(|_| RevocationError::BadSignature)?;
        Ok(Revocations {
            issuer: b.iss.into_array(),
            realm: b.realm,
            seq: b.seq,
            ids: b.ids.into_iter().map(|i| i.into_array()).collect(),
            bytes: bytes::Bytes::copy_from_slice(bytes),
        })
    }

    /// Decodes `bytes` ([`Revocations::decode`]) and checks that the list's realm has
    /// operator keys in `operators` (realm → keys) and that its issuer is one of them.
    /// Errors: [`RevocationError`], every variant. Never panics.
    pub fn verify(
        bytes: &[u8],
        operators: &std::collections::HashMap<String, Vec<[u8; 32]>>,
    ) -> Result<Revocations, RevocationError> {
        let list = Revocations::decode(bytes)?;
        match operators.get(&list.realm).filter(|k| !k.is_empty()) {
            None => Err(RevocationError::UnknownRealm(list.realm)),
            Some(keys) if !keys.contains(&list.issuer) => {
                Err(RevocationError::UnknownIssuer(list.realm))
            }
            Some(_) => Ok(list),
        }
    }

    /// The text form of list bytes.
    pub fn to_text(bytes: &[u8]) -> String {
        format!(
            "{TEXT_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// The bytes of a text list (surrounding whitespace ignored). Errors:
    /// [`RevocationError::Malformed`].
    pub fn from_text(text: &str) -> Result<Vec<u8>, RevocationError> {
        let b64 = text
            .trim()
            .strip_prefix(TEXT_PREFIX)
            .ok_or_else(|| malformed(format!("text does not start with {TEXT_PREFIX:?}")))?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(malformed)
    }

    /// Reads and verifies a file of text lists (one per line, blank lines ignored) against
    /// `operators` (realm → keys): the lists, each for a realm with operator keys and signed
    /// by one of them. Errors: a message naming the file and the problem.
    pub fn read_file(
        path: &std::path::Path,
        operators: &std::collections::HashMap<String, Vec<[u8; 32]>>,
    ) -> Result<Vec<Revocations>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("revocation file {}: {e}", path.display()))?;
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let list = Revocations::from_text(line)
                .and_then(|b| Revocations::verify(&b, operators))
                .map_err(|e| format!("revocation file {}: {e}", path.display()))?;
            out.push(list);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_list_round_trips_and_verifies() {
        let op = Identity::from_secret(&[1; 32]);
        let bytes = Revocations::issue(&op, "io.macula", 7, &[[3; 16], [2; 16], [3; 16]]).unwrap();
        let l = Revocations::decode(&bytes).unwrap();
        assert_eq!(
            (l.issuer, l.realm.as_str(), l.seq),
            (op.public_key(), "io.macula", 7)
        );
        assert_eq!(l.ids, HashSet::from([[2; 16], [3; 16]]));
        let text = Revocations::to_text(&bytes);
        assert_eq!(Revocations::from_text(&format!("{text}\n")).unwrap(), bytes);
        let mut flipped = bytes.clone();
        let n = flipped.len() - 70;
        flipped[n] ^= 1;
        assert!(Revocations::decode(&flipped).is_err());
    }

    #[test]
    fn a_file_accepts_only_the_realms_operators() {
        let op = Identity::from_secret(&[1; 32]);
        let other = Identity::from_secret(&[2; 32]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked");
        let ops =
            std::collections::HashMap::from([("io.macula".to_string(), vec![op.public_key()])]);
        let good =
            Revocations::to_text(&Revocations::issue(&op, "io.macula", 1, &[[9; 16]]).unwrap());
        std::fs::write(&path, format!("{good}\n\n")).unwrap();
        assert_eq!(Revocations::read_file(&path, &ops).unwrap().len(), 1);
        let forged =
            Revocations::to_text(&Revocations::issue(&other, "io.macula", 2, &[[9; 16]]).unwrap());
        std::fs::write(&path, forged).unwrap();
        assert!(Revocations::read_file(&path, &ops)
            .unwrap_err()
            .contains("not an operator"));
        let elsewhere = Revocations::issue(&op, "io.other", 3, &[[9; 16]]).unwrap();
        assert_eq!(
            Revocations::verify(&elsewhere, &ops),
            Err(RevocationError::UnknownRealm("io.other".into()))
        );
        let forged = Revocations::issue(&other, "io.macula", 2, &[[9; 16]]).unwrap();
        let e = Revocations::verify(&forged, &ops).unwrap_err();
        assert_eq!(e.reason(), "unknown_issuer");
        let mut flipped = forged.clone();
        let n = flipped.len() - 1;
        flipped[n] ^= 1;
        assert_eq!(
            Revocations::verify(&flipped, &ops),
            Err(RevocationError::BadSignature)
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Revocations::decode(&bytes);
            let _ = Revocations::from_text(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn truncation_is_refused(cut in 0usize..200) {
            let op = Identity::from_secret(&[1; 32]);
            let bytes = Revocations::issue(&op, "io.macula", 1, &[[4; 16], [5; 16]]).unwrap();
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(Revocations::decode(&bytes[..cut]).is_err());
        }
    }
}
