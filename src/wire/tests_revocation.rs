//! Tests of the `revocation_list` frame (0x0A): an exact-bytes snapshot (quoted in
//! `docs/PROTOCOL.md` §5.30), round trips, the decode-time bound on `list`, and arbitrary,
//! truncated and bit-flipped bodies under its header.

use proptest::prelude::*;

use super::msgpack::{put_bin, put_map_len, put_str};
use super::tests::{hex, one_frame, raw};
use super::*;

/// `revocation_list` carrying the 3 bytes 01 02 03: `{"list": bin 010203}`.
const REVOCATION_LIST_HEX: &str = "010a00000000000b81a46c697374c403010203";

/// `revocation_list` frames with lists of 1 to 256 arbitrary bytes (for the stream tests).
pub(super) fn revocation_frame_s() -> impl Strategy<Value = Frame> {
    prop::collection::vec(any::<u8>(), 1..256)
        .prop_map(|l| Frame::RevocationList(RevocationList { list: l.into() }))
}

fn body(list_len: usize) -> Vec<u8> {
    let mut b = Vec::new();
    put_map_len(&mut b, 1);
    put_str(&mut b, "list");
    put_bin(&mut b, &vec![7; list_len]);
    b
}

fn decode(b: &[u8]) -> Result<Frame, WireError> {
    raw(MessageType::RevocationList as u8, b).decode()
}

#[test]
fn revocation_list_snapshot() {
    let f = Frame::RevocationList(RevocationList {
        list: Bytes::from_static(&[1, 2, 3]),
    });
    let bytes = f.to_bytes();
    assert_eq!(hex(&bytes), REVOCATION_LIST_HEX);
    assert_eq!(bytes.len(), f.encoded_len());
    assert_eq!(one_frame(&bytes).decode().unwrap(), f);
    let doc = include_str!("../../docs/PROTOCOL.md");
    assert!(
        doc.contains(REVOCATION_LIST_HEX),
        "docs/PROTOCOL.md §5.30 is out of date"
    );
}

#[test]
fn a_signed_list_travels_byte_for_byte_and_zero_copy() {
    let op = crate::identity::Identity::from_secret(&[1; 32]);
    let ids: Vec<[u8; 16]> = (0..crate::auth::revocation::MAX_REVOKED as u32)
        .map(|i| {
            let mut id = [0; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            id
        })
        .collect();
    let signed = crate::auth::revocation::Revocations::issue(&op, "io.macula", 1, &ids).unwrap();
    assert!(signed.len() <= MAX_REVOCATION_LIST, "the largest list fits");
    let f = Frame::RevocationList(RevocationList {
        list: signed.clone().into(),
    });
    let bytes = f.to_bytes();
    let rf = one_frame(&bytes);
    let Frame::RevocationList(l) = rf.decode().unwrap() else {
        panic!("not a revocation_list")
    };
    assert_eq!(&l.list[..], &signed[..]);
    assert!(
        rf.bytes.as_ptr_range().contains(&l.list.as_ptr()),
        "the list is a slice of the frame"
    );
}

#[test]
fn the_list_is_bounded_on_decode() {
    assert!(decode(&body(1)).is_ok());
    assert!(decode(&body(MAX_REVOCATION_LIST)).is_ok());
    for len in [0, MAX_REVOCATION_LIST + 1] {
        assert!(
            matches!(
                decode(&body(len)),
                Err(WireError::InvalidField { field: "list", .. })
            ),
            "{len} bytes"
        );
    }
    // A missing `list`, a `list` of another type, a body that is no map.
    let mut no_list = Vec::new();
    put_map_len(&mut no_list, 0);
    let mut as_str = Vec::new();
    put_map_len(&mut as_str, 1);
    put_str(&mut as_str, "list");
    put_str(&mut as_str, "abc");
    for b in [&no_list[..], &[0x91, 0x01][..], &[][..]] {
        assert_eq!(decode(b).unwrap_err().code(), ErrorCode::MalformedBody);
    }
    // `str` for `bin` is tolerated (§5), unknown keys are ignored.
    assert!(decode(&as_str).is_ok());
    let mut extra = Vec::new();
    put_map_len(&mut extra, 2);
    put_str(&mut extra, "list");
    put_bin(&mut extra, &[1]);
    put_str(&mut extra, "future");
    put_bin(&mut extra, &[2]);
    assert!(decode(&extra).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn revocation_lists_round_trip(list in prop::collection::vec(any::<u8>(), 1..2048)) {
        let f = Frame::RevocationList(RevocationList { list: list.into() });
        let bytes = f.to_bytes();
        prop_assert_eq!(bytes.len(), f.encoded_len());
        prop_assert_eq!(one_frame(&bytes).decode().unwrap(), f);
    }

    #[test]
    fn random_bodies_under_its_header_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut framed = vec![0x81];
        framed.extend_from_slice(&body);
        for b in [&body[..], &framed[..]] {
            if let Ok(f) = decode(b) {
                // Whatever decodes re-encodes to a frame that decodes to itself.
                prop_assert_eq!(one_frame(&f.to_bytes()).decode().unwrap(), f);
            }
        }
    }

    #[test]
    fn truncated_and_bit_flipped_bodies_never_panic(
        list in prop::collection::vec(any::<u8>(), 1..256),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let f = Frame::RevocationList(RevocationList { list: list.into() });
        let bytes = f.to_bytes();
        let body = &bytes[HEADER_LEN..];
        let _ = decode(&body[..cut.index(body.len())]);
        let mut flipped = body.to_vec();
        flipped[flip.index(body.len())] ^= 1 << bit;
        if let Ok(g) = decode(&flipped) {
            prop_assert_eq!(one_frame(&g.to_bytes()).decode().unwrap(), g);
        }
    }
}
