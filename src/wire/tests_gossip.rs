//! Tests of the gossip frames (0x70–0x74): round trips, bounds and field validation, and
//! the strategy that adds these frames to the codec property tests of `tests.rs`, plus
//! hostile bodies under every gossip header.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::msgpack::{put_bin, put_bool, put_map_len, put_str, put_uint};
use super::tests::{hex, one_frame, raw};
use super::*;

const GOSSIP_TYPES: [MessageType; 5] = [
    MessageType::GossipPush,
    MessageType::GossipPull,
    MessageType::GossipPullReply,
    MessageType::GossipSync,
    MessageType::GossipSyncReply,
];

fn push(state_len: usize) -> GossipPush {
    GossipPush {
        realm: "io.macula".into(),
        scope: "street-1".into(),
        sender: [0x11; 32],
        part: 0,
        parts: 1,
        state: Bytes::from(vec![0xab; state_len]),
    }
}

fn pull(to_key: Option<&str>) -> GossipPull {
    GossipPull {
        realm: "io.macula".into(),
        scope: "street-1".into(),
        sender: [0x22; 32],
        round: 7,
        from_key: "a".into(),
        to_key: to_key.map(Into::into),
        digest: Bytes::from_static(b"digest"),
    }
}

fn pull_reply(to_key: Option<&str>, part: u16, parts: u16) -> GossipPullReply {
    GossipPullReply {
        realm: "io.macula".into(),
        scope: "city".into(),
        sender: [0x33; 32],
        round: u64::MAX,
        from_key: String::new(),
        to_key: to_key.map(Into::into),
        state: Bytes::from_static(b"state"),
        wants: Bytes::new(),
        part,
        parts,
    }
}

fn sync(part: u16, parts: u16) -> GossipSync {
    GossipSync {
        realm: "io.macula".into(),
        scope: "street-1".into(),
        sender: [0x44; 32],
        round: 9,
        state: Bytes::from_static(b"delta"),
        part,
        parts,
    }
}

fn sync_reply() -> GossipSyncReply {
    GossipSyncReply {
        realm: "io.macula".into(),
        scope: "street-1".into(),
        sender: [0x55; 32],
        round: 9,
        merged: 3,
    }
}

/// Encodes `f` and decodes it back through the stream decoder (limit raised for big bodies).
fn reencode(f: &Frame) -> Result<Frame, WireError> {
    let mut d = FrameDecoder::new(u32::MAX);
    d.extend(&f.to_bytes());
    d.next_frame()
        .expect("valid header")
        .expect("whole frame")
        .decode()
}

fn assert_invalid(f: &Frame, want: &'static str) {
    let e = reencode(f).unwrap_err();
    assert!(
        matches!(e, WireError::InvalidField { field, .. } if field == want),
        "{f:?}: expected InvalidField({want}), got {e:?}"
    );
    assert_eq!(e.code(), ErrorCode::MalformedBody);
}

#[test]
fn gossip_types_are_known_and_labelled() {
    for (t, b, label) in [
        (MessageType::GossipPush, 0x70, "gossip_push"),
        (MessageType::GossipPull, 0x71, "gossip_pull"),
        (MessageType::GossipPullReply, 0x72, "gossip_pull_reply"),
        (MessageType::GossipSync, 0x73, "gossip_sync"),
        (MessageType::GossipSyncReply, 0x74, "gossip_sync_reply"),
    ] {
        assert_eq!(t as u8, b);
        assert_eq!(MessageType::from_u8(b), Some(t));
        assert_eq!(t.as_str(), label);
        assert!(!is_reserved_macula_type(b));
        assert!(MessageType::ALL.contains(&t));
    }
    assert!(is_reserved_macula_type(0x80) && MessageType::from_u8(0x80).is_none());
    assert!(is_reserved_macula_type(0x61) && !is_reserved_macula_type(0x75));
    assert_eq!(MessageType::from_u8(0x75), None);
}

#[test]
fn sync_reply_snapshot() {
    let f = Frame::GossipSyncReply(sync_reply());
    let bytes = f.to_bytes();
    // {"realm": "io.macula", "scope": "street-1", "sender": bin 32, "round": 9, "merged": 3}
    let want = concat!(
        "0174000000000058",
        "85",
        "a57265616c6d",
        "a9696f2e6d6163756c61",
        "a573636f7065",
        "a8737472656574 2d31",
        "a673656e646572",
        "c420",
        "5555555555555555555555555555555555555555555555555555555555555555",
        "a5726f756e64",
        "09",
        "a66d6572676564",
        "03",
    )
    .replace(' ', "");
    assert_eq!(hex(&bytes), want);
    assert_eq!(bytes.len(), f.encoded_len());
    assert_eq!(one_frame(&bytes).decode().unwrap(), f);
}

#[test]
fn every_gossip_frame_round_trips() {
    let frames = [
        Frame::GossipPush(push(0)),
        Frame::GossipPush(push(100)),
        Frame::GossipPush(GossipPush {
            part: 2,
            parts: 3,
            ..push(10)
        }),
        Frame::GossipPull(pull(None)),
        Frame::GossipPull(pull(Some("m"))),
        Frame::GossipPullReply(pull_reply(None, 0, 1)),
        Frame::GossipPullReply(pull_reply(Some("zz"), 4, 5)),
        Frame::GossipPullReply(pull_reply(Some(""), u16::MAX - 1, u16::MAX)),
        Frame::GossipSync(sync(0, 1)),
        Frame::GossipSync(sync(1, 2)),
        Frame::GossipSyncReply(sync_reply()),
    ];
    for f in frames {
        let bytes = f.to_bytes();
        assert_eq!(bytes.len(), f.encoded_len());
        let raw = one_frame(&bytes);
        assert_eq!(raw.msg_type(), Some(f.msg_type()));
        assert_eq!(raw.decode().unwrap(), f);
    }
}

#[test]
fn absent_to_key_is_omitted_and_nil_means_absent() {
    let f = Frame::GossipPull(pull(None));
    let body = &f.to_bytes()[HEADER_LEN..];
    assert_eq!(body[0], 0x86, "six keys, no to_key");
    assert!(!hex(body).contains(&hex(b"to_key")));
    let with = Frame::GossipPull(pull(Some("m")));
    assert_eq!(with.to_bytes()[HEADER_LEN], 0x87);

    // {realm, scope, sender, round, from_key, to_key: nil, digest}
    let mut b = BytesMut::new();
    put_map_len(&mut b, 7);
    put_str(&mut b, "realm");
    put_str(&mut b, "io.macula");
    put_str(&mut b, "scope");
    put_str(&mut b, "street-1");
    put_str(&mut b, "sender");
    put_bin(&mut b, &[0x22; 32]);
    put_str(&mut b, "round");
    put_uint(&mut b, 7);
    put_str(&mut b, "from_key");
    put_str(&mut b, "a");
    put_str(&mut b, "to_key");
    b.extend_from_slice(&[0xc0]);
    put_str(&mut b, "digest");
    put_bin(&mut b, b"digest");
    assert_eq!(raw(0x71, &b).decode().unwrap(), f);
}

#[test]
fn sender_must_be_32_bytes() {
    let body = |sender_len: usize| {
        let mut b = BytesMut::new();
        put_map_len(&mut b, 5);
        put_str(&mut b, "realm");
        put_str(&mut b, "r");
        put_str(&mut b, "scope");
        put_str(&mut b, "s");
        put_str(&mut b, "sender");
        put_bin(&mut b, &vec![1; sender_len]);
        put_str(&mut b, "round");
        put_uint(&mut b, 1);
        put_str(&mut b, "merged");
        put_uint(&mut b, 0);
        b
    };
    assert!(raw(0x74, &body(32)).decode().is_ok());
    for len in [0, 31, 33] {
        let e = raw(0x74, &body(len)).decode().unwrap_err();
        assert!(
            matches!(
                e,
                WireError::InvalidField {
                    field: "sender",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.code(), ErrorCode::MalformedBody);
    }
}

#[test]
fn realm_and_scope_are_non_empty_and_bounded() {
    let at_max = "r".repeat(MAX_GOSSIP_NAME);
    let f = Frame::GossipPush(GossipPush {
        realm: at_max.clone(),
        scope: at_max.clone(),
        ..push(1)
    });
    assert_eq!(reencode(&f).unwrap(), f);
    let over = "r".repeat(MAX_GOSSIP_NAME + 1);
    for (realm, scope, field) in [
        ("", "s", "realm"),
        (over.as_str(), "s", "realm"),
        ("r", "", "scope"),
        ("r", over.as_str(), "scope"),
    ] {
        let (realm, scope) = (realm.to_string(), scope.to_string());
        assert_invalid(
            &Frame::GossipPush(GossipPush {
                realm: realm.clone(),
                scope: scope.clone(),
                ..push(1)
            }),
            field,
        );
        assert_invalid(
            &Frame::GossipPull(GossipPull {
                realm: realm.clone(),
                scope: scope.clone(),
                ..pull(None)
            }),
            field,
        );
        assert_invalid(
            &Frame::GossipPullReply(GossipPullReply {
                realm: realm.clone(),
                scope: scope.clone(),
                ..pull_reply(None, 0, 1)
            }),
            field,
        );
        assert_invalid(
            &Frame::GossipSync(GossipSync {
                realm: realm.clone(),
                scope: scope.clone(),
                ..sync(0, 1)
            }),
            field,
        );
        assert_invalid(
            &Frame::GossipSyncReply(GossipSyncReply {
                realm,
                scope,
                ..sync_reply()
            }),
            field,
        );
    }
}

#[test]
fn keys_are_bounded() {
    let at_max = "k".repeat(MAX_GOSSIP_KEY);
    let over = "k".repeat(MAX_GOSSIP_KEY + 1);
    let ok = Frame::GossipPull(GossipPull {
        from_key: at_max.clone(),
        to_key: Some(at_max.clone()),
        ..pull(None)
    });
    assert_eq!(reencode(&ok).unwrap(), ok);
    assert_invalid(
        &Frame::GossipPull(GossipPull {
            from_key: over.clone(),
            ..pull(None)
        }),
        "from_key",
    );
    assert_invalid(&Frame::GossipPull(pull(Some(over.as_str()))), "to_key");
    assert_invalid(
        &Frame::GossipPullReply(GossipPullReply {
            from_key: over.clone(),
            ..pull_reply(None, 0, 1)
        }),
        "from_key",
    );
    assert_invalid(
        &Frame::GossipPullReply(pull_reply(Some(over.as_str()), 0, 1)),
        "to_key",
    );
}

#[test]
fn payloads_are_bounded() {
    let max = || Bytes::from(vec![7; MAX_GOSSIP_STATE]);
    let over = || Bytes::from(vec![7; MAX_GOSSIP_STATE + 1]);
    let at_max = [
        Frame::GossipPush(push(MAX_GOSSIP_STATE)),
        Frame::GossipPull(GossipPull {
            digest: max(),
            ..pull(None)
        }),
        Frame::GossipPullReply(GossipPullReply {
            state: max(),
            wants: max(),
            ..pull_reply(None, 0, 1)
        }),
        Frame::GossipSync(GossipSync {
            state: max(),
            ..sync(0, 1)
        }),
    ];
    for f in at_max {
        assert_eq!(reencode(&f).unwrap(), f);
    }
    assert_invalid(&Frame::GossipPush(push(MAX_GOSSIP_STATE + 1)), "state");
    assert_invalid(
        &Frame::GossipPull(GossipPull {
            digest: over(),
            ..pull(None)
        }),
        "digest",
    );
    assert_invalid(
        &Frame::GossipPullReply(GossipPullReply {
            state: over(),
            ..pull_reply(None, 0, 1)
        }),
        "state",
    );
    assert_invalid(
        &Frame::GossipPullReply(GossipPullReply {
            wants: over(),
            ..pull_reply(None, 0, 1)
        }),
        "wants",
    );
    assert_invalid(
        &Frame::GossipSync(GossipSync {
            state: over(),
            ..sync(0, 1)
        }),
        "state",
    );
}

#[test]
fn part_must_be_below_parts() {
    for (part, parts, field) in [
        (0, 0, "parts"),
        (1, 0, "parts"),
        (1, 1, "part"),
        (5, 3, "part"),
    ] {
        assert_invalid(
            &Frame::GossipPush(GossipPush {
                part,
                parts,
                ..push(1)
            }),
            field,
        );
        assert_invalid(
            &Frame::GossipPullReply(pull_reply(None, part, parts)),
            field,
        );
        assert_invalid(&Frame::GossipSync(sync(part, parts)), field);
    }
}

#[test]
fn missing_or_mistyped_keys_are_malformed() {
    // A sync_reply body without `merged`.
    let mut b = BytesMut::from(&Frame::GossipSyncReply(sync_reply()).to_bytes()[HEADER_LEN..]);
    b[0] = 0x84;
    b.truncate(b.len() - (1 + 6 + 1)); // drop `a6 "merged" 03`
    let e = raw(0x74, &b).decode().unwrap_err();
    assert!(
        matches!(e, WireError::Malformed { msg_type: 0x74, .. }),
        "{e:?}"
    );

    // `parts` above u16::MAX, `state` as an integer, `part` as a bool. (A str where a bin is
    // expected is accepted, as for every bin field of the codec.)
    let push_body = |parts: u64, state_as_int: bool, part_bool: bool| {
        let mut b = BytesMut::new();
        put_map_len(&mut b, 6);
        put_str(&mut b, "realm");
        put_str(&mut b, "r");
        put_str(&mut b, "scope");
        put_str(&mut b, "s");
        put_str(&mut b, "sender");
        put_bin(&mut b, &[1; 32]);
        put_str(&mut b, "part");
        if part_bool {
            put_bool(&mut b, true);
        } else {
            put_uint(&mut b, 0);
        }
        put_str(&mut b, "parts");
        put_uint(&mut b, parts);
        put_str(&mut b, "state");
        if state_as_int {
            put_uint(&mut b, 7);
        } else {
            put_bin(&mut b, b"x");
        }
        b
    };
    assert!(raw(0x70, &push_body(1, false, false)).decode().is_ok());
    for body in [
        push_body(65_536, false, false),
        push_body(1, true, false),
        push_body(1, false, true),
    ] {
        let e = raw(0x70, &body).decode().unwrap_err();
        assert!(
            matches!(e, WireError::Malformed { msg_type: 0x70, .. }),
            "{e:?}"
        );
        assert_eq!(e.code(), ErrorCode::MalformedBody);
    }
    // A body of another type under a gossip header.
    let e = raw(0x73, &Frame::GossipPush(push(1)).to_bytes()[HEADER_LEN..])
        .decode()
        .unwrap_err();
    assert!(matches!(e, WireError::Malformed { msg_type: 0x73, .. }));
}

#[test]
fn gossip_payloads_are_zero_copy() {
    let f = one_frame(&Frame::GossipPullReply(pull_reply(None, 0, 1)).to_bytes());
    let Frame::GossipPullReply(r) = f.decode().unwrap() else {
        panic!("not a pull reply")
    };
    let range = f.bytes.as_ptr() as usize..f.bytes.as_ptr() as usize + f.bytes.len();
    assert!(range.contains(&(r.state.as_ptr() as usize)));
    let f = one_frame(&Frame::GossipPull(pull(None)).to_bytes());
    let Frame::GossipPull(p) = f.decode().unwrap() else {
        panic!("not a pull")
    };
    let range = f.bytes.as_ptr() as usize..f.bytes.as_ptr() as usize + f.bytes.len();
    assert!(range.contains(&(p.digest.as_ptr() as usize)));
}

// ---------------------------------------------------------------- strategies

fn name_s() -> impl Strategy<Value = String> {
    // At most 60 chars of at most 4 bytes: within MAX_GOSSIP_NAME.
    "\\PC{1,60}"
}

fn key_s() -> impl Strategy<Value = String> {
    "\\PC{0,60}"
}

fn blob() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..400).prop_map(Bytes::from)
}

/// `(part, parts)` with `part < parts`.
fn parts_s() -> impl Strategy<Value = (u16, u16)> {
    (1u16..=u16::MAX).prop_flat_map(|parts| (0..parts, Just(parts)))
}

fn head_s() -> impl Strategy<Value = (String, String, NodeId)> {
    (name_s(), name_s(), any::<[u8; 32]>())
}

/// Every gossip frame, within the decoder's bounds; used by `tests::frame_s`.
pub(super) fn gossip_frame_s() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (head_s(), parts_s(), blob()).prop_map(|((realm, scope, sender), (part, parts), state)| {
            Frame::GossipPush(GossipPush {
                realm,
                scope,
                sender,
                part,
                parts,
                state,
            })
        }),
        (
            head_s(),
            any::<u64>(),
            key_s(),
            prop::option::of(key_s()),
            blob()
        )
            .prop_map(
                |((realm, scope, sender), round, from_key, to_key, digest)| {
                    Frame::GossipPull(GossipPull {
                        realm,
                        scope,
                        sender,
                        round,
                        from_key,
                        to_key,
                        digest,
                    })
                }
            ),
        (
            head_s(),
            (any::<u64>(), key_s(), prop::option::of(key_s())),
            blob(),
            blob(),
            parts_s()
        )
            .prop_map(
                |(
                    (realm, scope, sender),
                    (round, from_key, to_key),
                    state,
                    wants,
                    (part, parts),
                )| {
                    Frame::GossipPullReply(GossipPullReply {
                        realm,
                        scope,
                        sender,
                        round,
                        from_key,
                        to_key,
                        state,
                        wants,
                        part,
                        parts,
                    })
                }
            ),
        (head_s(), any::<u64>(), blob(), parts_s()).prop_map(
            |((realm, scope, sender), round, state, (part, parts))| {
                Frame::GossipSync(GossipSync {
                    realm,
                    scope,
                    sender,
                    round,
                    state,
                    part,
                    parts,
                })
            }
        ),
        (head_s(), any::<u64>(), any::<u32>()).prop_map(
            |((realm, scope, sender), round, merged)| {
                Frame::GossipSyncReply(GossipSyncReply {
                    realm,
                    scope,
                    sender,
                    round,
                    merged,
                })
            }
        ),
    ]
}

/// A MessagePack value of a random type, sized around the gossip bounds.
#[derive(Debug, Clone)]
enum Val {
    Nil,
    Bool(bool),
    Uint(u64),
    Str(usize),
    Bin(usize),
    Absent,
}

fn val_s() -> impl Strategy<Value = Val> {
    let len = prop_oneof![
        0usize..4,
        30usize..34,
        250usize..260,
        Just(MAX_GOSSIP_STATE),
        Just(MAX_GOSSIP_STATE + 1),
    ];
    prop_oneof![
        Just(Val::Nil),
        Just(Val::Absent),
        any::<bool>().prop_map(Val::Bool),
        prop_oneof![0u64..4, Just(u64::from(u16::MAX) + 1), any::<u64>()].prop_map(Val::Uint),
        len.clone().prop_map(Val::Str),
        len.prop_map(Val::Bin),
    ]
}

const GOSSIP_KEYS: [&str; 12] = [
    "realm", "scope", "sender", "part", "parts", "state", "round", "from_key", "to_key", "digest",
    "wants", "merged",
];

/// A map body holding every gossip key (or not) with a value of any type.
fn garbage_map(vals: &[Val]) -> BytesMut {
    let mut b = BytesMut::new();
    let present = vals.iter().filter(|v| !matches!(v, Val::Absent)).count();
    put_map_len(&mut b, present as u32);
    for (k, v) in GOSSIP_KEYS.iter().zip(vals) {
        if matches!(v, Val::Absent) {
            continue;
        }
        put_str(&mut b, k);
        match v {
            Val::Nil => b.extend_from_slice(&[0xc0]),
            Val::Bool(x) => put_bool(&mut b, *x),
            Val::Uint(x) => put_uint(&mut b, *x),
            Val::Str(n) => put_str(&mut b, &"s".repeat(*n)),
            Val::Bin(n) => put_bin(&mut b, &vec![0x5a; *n]),
            Val::Absent => unreachable!(),
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn gossip_frames_round_trip(f in gossip_frame_s()) {
        let bytes = f.to_bytes();
        prop_assert_eq!(bytes.len(), f.encoded_len());
        let raw = one_frame(&bytes);
        prop_assert_eq!(raw.msg_type(), Some(f.msg_type()));
        prop_assert_eq!(raw.decode().unwrap(), f);
    }

    #[test]
    fn random_bodies_under_gossip_headers_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        for t in GOSSIP_TYPES {
            let mut framed = vec![0x87];
            framed.extend_from_slice(&body);
            for b in [&body[..], &framed[..]] {
                let _ = raw(t as u8, b).decode();
            }
        }
    }

    #[test]
    fn typed_garbage_under_gossip_headers_decodes_or_fails_cleanly(
        vals in prop::collection::vec(val_s(), GOSSIP_KEYS.len()),
    ) {
        let body = garbage_map(&vals);
        for t in GOSSIP_TYPES {
            let mut d = FrameDecoder::new(u32::MAX);
            let mut b = BytesMut::new();
            Header { version: PROTOCOL_VERSION, msg_type: t as u8, flags: 0, body_len: body.len() as u32 }
                .encode(&mut b);
            b.extend_from_slice(&body);
            d.extend(&b);
            let raw = d.next_frame().unwrap().unwrap();
            match raw.decode() {
                // Whatever decodes is a valid frame of that type and re-encodes to itself.
                Ok(f) => {
                    prop_assert_eq!(f.msg_type(), t);
                    prop_assert_eq!(reencode(&f).unwrap(), f);
                }
                Err(e) => prop_assert!(
                    matches!(e, WireError::Malformed { .. } | WireError::InvalidField { .. }),
                    "{:?}", e
                ),
            }
        }
    }
}
