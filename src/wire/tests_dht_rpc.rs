//! Tests of the DHT and RPC frames: exact-bytes snapshots (quoted in docs/PROTOCOL.md),
//! bounds and field validation, and the strategy that adds these frames to the codec
//! property tests of `tests.rs` (round trip, length, splits, hostile input).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::msgpack::{put_bin, put_bool, put_map_len, put_str, put_uint};
use super::tests::{hex, one_frame, raw};
use super::*;

/// The example `call` quoted in docs/PROTOCOL.md.
const CALL_HEX: &str = concat!(
    "0120000000000063",
    "86",
    "a763616c6c5f6964",
    "07",
    "a970726f636564757265",
    "a87376632e6563686f",
    "a461726773",
    "c4026869",
    "aa74696d656f75745f6d73",
    "cd1388",
    "a66f726967696e",
    "c420",
    "2222222222222222222222222222222222222222222222222222222222222222",
    "a4686f7073",
    "00",
);

/// The example `find_node` quoted in docs/PROTOCOL.md.
const FIND_NODE_HEX: &str = concat!(
    "0140000000000080",
    "83",
    "ae636f7272656c6174696f6e5f6964",
    "01",
    "a6746172676574",
    "c420",
    "3333333333333333333333333333333333333333333333333333333333333333",
    "a673656e646572",
    "82",
    "a76e6f64655f6964",
    "c420",
    "1111111111111111111111111111111111111111111111111111111111111111",
    "a461646472",
    "ae3139322e302e322e313a39343433",
);

fn sample_call() -> Call {
    Call {
        call_id: 7,
        procedure: "svc.echo".into(),
        args: Bytes::from_static(b"hi"),
        timeout_ms: 5000,
        origin: [0x22; 32],
        hops: 0,
        target: None,
    }
}

fn contact(b: u8) -> WireContact {
    WireContact {
        node_id: [b; 32],
        addr: format!("192.0.2.{b}:9443"),
    }
}

fn sample_store(value_len: usize) -> Store {
    Store {
        correlation_id: 3,
        key: [0x44; 32],
        value: Bytes::from(vec![0xab; value_len]),
        ttl_ms: 300_000,
        publisher: [0x55; 32],
        name: Some("io.macula.echo".into()),
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

#[test]
fn call_snapshot() {
    let f = Frame::Call(sample_call());
    let bytes = f.to_bytes();
    assert_eq!(hex(&bytes), CALL_HEX);
    assert_eq!(bytes.len(), f.encoded_len());
    assert_eq!(one_frame(&bytes).decode().unwrap(), f);
}

#[test]
fn find_node_snapshot() {
    let f = Frame::FindNode(FindNode {
        correlation_id: 1,
        target: [0x33; 32],
        sender: WireContact {
            node_id: [0x11; 32],
            addr: "192.0.2.1:9443".into(),
        },
    });
    let bytes = f.to_bytes();
    assert_eq!(hex(&bytes), FIND_NODE_HEX);
    assert_eq!(one_frame(&bytes).decode().unwrap(), f);
}

#[test]
fn protocol_doc_quotes_the_dht_rpc_snapshots() {
    let doc = include_str!("../../docs/PROTOCOL.md");
    assert!(
        doc.contains(CALL_HEX),
        "docs/PROTOCOL.md §11 call is out of date"
    );
    assert!(
        doc.contains(FIND_NODE_HEX),
        "docs/PROTOCOL.md §11 find_node is out of date"
    );
}

#[test]
fn reply_and_small_snapshots() {
    let ok = Frame::Reply(Reply {
        call_id: 7,
        result: Ok(Bytes::from_static(b"hi")),
    });
    // {"call_id": 7, "ok": bin "hi"}
    assert_eq!(
        hex(&ok.to_bytes()),
        "0121000000000011_82a763616c6c5f696407a26f6bc4026869".replace('_', "")
    );
    let err = Frame::Reply(Reply {
        call_id: 7,
        result: Err(RpcError::new(RpcError::NO_PROVIDER, "")),
    });
    // {"call_id": 7, "error": {"code": 1, "message": ""}}
    assert_eq!(
        hex(&err.to_bytes()),
        "0121000000000020_82a763616c6c5f696407a56572726f72_82a4636f646501a76d657373616765a0"
            .replace('_', "")
    );
    let ack = Frame::StoreAck(StoreAck {
        correlation_id: 3,
        stored: true,
    });
    // {"correlation_id": 3, "stored": true}
    assert_eq!(
        hex(&ack.to_bytes()),
        "0145000000000019_82ae636f7272656c6174696f6e5f696403a673746f726564c3".replace('_', "")
    );
    // Empty optional lists are omitted: {"correlation_id": 3}.
    let empty = Frame::FindValueReply(FindValueReply {
        correlation_id: 3,
        values: vec![],
        nodes: vec![],
        depth: 0,
    });
    assert_eq!(
        hex(&empty.to_bytes()),
        "0144000000000011_81ae636f7272656c6174696f6e5f696403".replace('_', "")
    );
    for f in [ok, err, ack, empty] {
        assert_eq!(one_frame(&f.to_bytes()).decode().unwrap(), f);
    }
}

#[test]
fn new_types_are_known_and_labelled() {
    for (b, label) in [
        (0x20, "call"),
        (0x21, "reply"),
        (0x26, "register"),
        (0x27, "unregister"),
        (0x40, "find_node"),
        (0x41, "find_node_reply"),
        (0x42, "store"),
        (0x43, "find_value"),
        (0x44, "find_value_reply"),
        (0x45, "store_ack"),
    ] {
        let t = MessageType::from_u8(b).expect("implemented");
        assert_eq!(t.as_str(), label);
        assert!(!is_reserved_macula_type(b));
    }
    for b in [0x22, 0x25, 0x30, 0x50] {
        assert!(is_reserved_macula_type(b) && MessageType::from_u8(b).is_none());
    }
    assert_eq!(MessageType::from_u8(0x46), None);
    assert!(!is_reserved_macula_type(0x46));
}

#[test]
fn bounds_match_the_dht_core() {
    assert_eq!(MAX_DHT_VALUE, crate::dht::store::MAX_VALUE_LEN);
    assert_eq!(MAX_RECORDS, crate::dht::store::MAX_RECORDS_PER_KEY);
    const { assert!(MAX_CONTACTS >= crate::dht::K) };
}

#[test]
fn too_many_contacts_is_malformed() {
    let reply = |n: u8| {
        Frame::FindNodeReply(FindNodeReply {
            correlation_id: 9,
            nodes: (0..n).map(contact).collect(),
        })
    };
    let at_max = reply(64);
    assert_eq!(reencode(&at_max).unwrap(), at_max);
    let e = reencode(&reply(65)).unwrap_err();
    assert!(
        matches!(e, WireError::Malformed { msg_type: 0x41, .. }),
        "{e:?}"
    );
    assert_eq!(e.code(), ErrorCode::MalformedBody);

    let nodes = (0..65).map(contact).collect();
    let fvr = Frame::FindValueReply(FindValueReply {
        correlation_id: 9,
        values: vec![],
        nodes,
        depth: 0,
    });
    let e = reencode(&fvr).unwrap_err();
    assert!(matches!(e, WireError::Malformed { msg_type: 0x44, .. }));
}

#[test]
fn too_many_records_or_procedures_is_malformed() {
    let record = WireRecord {
        value: Bytes::from_static(b"v"),
        publisher: [1; 32],
        ttl_ms: 1,
    };
    let fvr = |n: usize| {
        Frame::FindValueReply(FindValueReply {
            correlation_id: 1,
            values: vec![record.clone(); n],
            nodes: vec![contact(1)],
            depth: 0,
        })
    };
    assert_eq!(reencode(&fvr(32)).unwrap(), fvr(32));
    let e = reencode(&fvr(33)).unwrap_err();
    assert!(matches!(e, WireError::Malformed { msg_type: 0x44, .. }));

    let procs = |n: usize| (0..n).map(|i| format!("p{i}")).collect::<Vec<_>>();
    let reg = Frame::Register(Register {
        correlation_id: 1,
        procedures: procs(256),
    });
    assert_eq!(reencode(&reg).unwrap(), reg);
    let e = reencode(&Frame::Register(Register {
        correlation_id: 1,
        procedures: procs(257),
    }))
    .unwrap_err();
    assert!(matches!(e, WireError::Malformed { msg_type: 0x26, .. }));
    let e = reencode(&Frame::Unregister(Unregister {
        correlation_id: 1,
        procedures: procs(257),
    }))
    .unwrap_err();
    assert!(matches!(e, WireError::Malformed { msg_type: 0x27, .. }));
}

#[test]
fn oversized_dht_value_is_invalid() {
    let at_max = Frame::Store(sample_store(MAX_DHT_VALUE));
    assert_eq!(reencode(&at_max).unwrap(), at_max);
    let e = reencode(&Frame::Store(sample_store(MAX_DHT_VALUE + 1))).unwrap_err();
    assert!(
        matches!(e, WireError::InvalidField { field: "value", .. }),
        "{e:?}"
    );
    assert_eq!(e.code(), ErrorCode::MalformedBody);

    let fvr = Frame::FindValueReply(FindValueReply {
        correlation_id: 1,
        values: vec![WireRecord {
            value: Bytes::from(vec![0; MAX_DHT_VALUE + 1]),
            publisher: [1; 32],
            ttl_ms: 1,
        }],
        nodes: vec![],
        depth: 0,
    });
    let e = reencode(&fvr).unwrap_err();
    assert!(matches!(e, WireError::InvalidField { field: "value", .. }));
}

/// A store body with keys and publisher of the given lengths.
fn store_body(key_len: usize, publisher_len: usize) -> BytesMut {
    let mut b = BytesMut::new();
    put_map_len(&mut b, 5);
    put_str(&mut b, "correlation_id");
    put_uint(&mut b, 1);
    put_str(&mut b, "key");
    put_bin(&mut b, &vec![7; key_len]);
    put_str(&mut b, "value");
    put_bin(&mut b, b"v");
    put_str(&mut b, "ttl_ms");
    put_uint(&mut b, 1000);
    put_str(&mut b, "publisher");
    put_bin(&mut b, &vec![8; publisher_len]);
    b
}

#[test]
fn ids_must_be_32_bytes() {
    assert!(raw(0x42, &store_body(32, 32)).decode().is_ok());
    let e = raw(0x42, &store_body(31, 32)).decode().unwrap_err();
    assert!(
        matches!(e, WireError::InvalidField { field: "key", .. }),
        "{e:?}"
    );
    assert_eq!(e.code(), ErrorCode::MalformedBody);
    let e = raw(0x42, &store_body(32, 33)).decode().unwrap_err();
    assert!(matches!(
        e,
        WireError::InvalidField {
            field: "publisher",
            ..
        }
    ));

    // A contact's node_id inside find_node: {correlation_id, target, sender: {node_id, addr}}.
    let find_node = |target: usize, node: usize| {
        let mut b = BytesMut::new();
        put_map_len(&mut b, 3);
        put_str(&mut b, "correlation_id");
        put_uint(&mut b, 1);
        put_str(&mut b, "target");
        put_bin(&mut b, &vec![1; target]);
        put_str(&mut b, "sender");
        put_map_len(&mut b, 2);
        put_str(&mut b, "node_id");
        put_bin(&mut b, &vec![2; node]);
        put_str(&mut b, "addr");
        put_str(&mut b, "[::1]:9443");
        b
    };
    assert!(raw(0x40, &find_node(32, 32)).decode().is_ok());
    let e = raw(0x40, &find_node(31, 32)).decode().unwrap_err();
    assert!(matches!(
        e,
        WireError::InvalidField {
            field: "target",
            ..
        }
    ));
    let e = raw(0x40, &find_node(32, 0)).decode().unwrap_err();
    assert!(matches!(
        e,
        WireError::InvalidField {
            field: "node_id",
            ..
        }
    ));

    let mut call = BytesMut::from(&Frame::Call(sample_call()).to_bytes()[HEADER_LEN..]);
    // The body ends with `c4 20 <origin: 32 bytes>` then `a4 "hops" 00` (6 bytes).
    let origin = call.len() - 6 - 32;
    assert_eq!(&call[origin - 2..origin], &[0xc4, 0x20]);
    call[origin - 1] = 31; // declare bin 31 and drop one byte
    call = [&call[..origin], &call[origin + 1..]].concat()[..].into();
    let e = raw(0x20, &call).decode().unwrap_err();
    assert!(matches!(
        e,
        WireError::InvalidField {
            field: "origin",
            ..
        }
    ));
}

/// A reply body: `call_id` then the given entries, already encoded.
fn reply_body(ok: Option<&[u8]>, error: Option<(u16, &str)>, nil_ok: bool) -> BytesMut {
    let mut b = BytesMut::new();
    let n = 1 + u32::from(ok.is_some() || nil_ok) + u32::from(error.is_some());
    put_map_len(&mut b, n);
    put_str(&mut b, "call_id");
    put_uint(&mut b, 5);
    if let Some(v) = ok {
        put_str(&mut b, "ok");
        put_bin(&mut b, v);
    } else if nil_ok {
        put_str(&mut b, "ok");
        b.extend_from_slice(&[0xc0]);
    }
    if let Some((code, msg)) = error {
        put_str(&mut b, "error");
        put_map_len(&mut b, 2);
        put_str(&mut b, "code");
        put_uint(&mut b, u64::from(code));
        put_str(&mut b, "message");
        put_str(&mut b, msg);
    }
    b
}

#[test]
fn reply_needs_exactly_one_outcome() {
    let both = raw(0x21, &reply_body(Some(b"r"), Some((4, "boom")), false));
    let e = both.decode().unwrap_err();
    assert!(
        matches!(e, WireError::Malformed { msg_type: 0x21, ref reason } if reason.contains("both")),
        "{e:?}"
    );
    assert_eq!(e.code(), ErrorCode::MalformedBody);
    let neither = raw(0x21, &reply_body(None, None, false))
        .decode()
        .unwrap_err();
    assert!(
        matches!(neither, WireError::Malformed { msg_type: 0x21, ref reason } if reason.contains("neither"))
    );
    // `ok: nil` means absent.
    assert!(raw(0x21, &reply_body(None, None, true)).decode().is_err());
    let Frame::Reply(r) = raw(0x21, &reply_body(None, Some((4, "boom")), true))
        .decode()
        .unwrap()
    else {
        panic!("not a reply")
    };
    assert_eq!(r.result, Err(RpcError::new(RpcError::REMOTE, "boom")));
    let Frame::Reply(r) = raw(0x21, &reply_body(Some(b""), None, false))
        .decode()
        .unwrap()
    else {
        panic!("not a reply")
    };
    assert_eq!(r.result, Ok(Bytes::new()));
}

#[test]
fn optional_lists_default_to_empty_and_unknown_keys_are_ignored() {
    // {"correlation_id": 1, "values": nil, "future": [1]}
    let mut b = BytesMut::new();
    put_map_len(&mut b, 3);
    put_str(&mut b, "correlation_id");
    put_uint(&mut b, 1);
    put_str(&mut b, "values");
    b.extend_from_slice(&[0xc0]);
    put_str(&mut b, "future");
    b.extend_from_slice(&[0x91, 0x01]);
    let f = raw(0x44, &b).decode().unwrap();
    assert_eq!(
        f,
        Frame::FindValueReply(FindValueReply {
            correlation_id: 1,
            values: vec![],
            nodes: vec![],
            depth: 0,
        })
    );

    let mut ack = BytesMut::new();
    put_map_len(&mut ack, 3);
    put_str(&mut ack, "stored");
    put_bool(&mut ack, false);
    put_str(&mut ack, "x");
    put_str(&mut ack, "y");
    put_str(&mut ack, "correlation_id");
    put_uint(&mut ack, 2);
    assert_eq!(
        raw(0x45, &ack).decode().unwrap(),
        Frame::StoreAck(StoreAck {
            correlation_id: 2,
            stored: false
        })
    );
}

#[test]
fn out_of_range_integers_are_malformed() {
    let mut call = BytesMut::from(&Frame::Call(sample_call()).to_bytes()[HEADER_LEN..]);
    call.truncate(call.len() - 1);
    put_uint(&mut call, 256); // hops is a uint8
    let e = raw(0x20, &call).decode().unwrap_err();
    assert!(matches!(e, WireError::Malformed { msg_type: 0x20, .. }));
}

#[test]
fn payloads_are_zero_copy() {
    let f = one_frame(&Frame::Store(sample_store(100)).to_bytes());
    let Frame::Store(s) = f.decode().unwrap() else {
        panic!("not a store")
    };
    let range = f.bytes.as_ptr() as usize..f.bytes.as_ptr() as usize + f.bytes.len();
    assert!(range.contains(&(s.value.as_ptr() as usize)));
    let f = one_frame(&Frame::Call(sample_call()).to_bytes());
    let Frame::Call(c) = f.decode().unwrap() else {
        panic!("not a call")
    };
    let range = f.bytes.as_ptr() as usize..f.bytes.as_ptr() as usize + f.bytes.len();
    assert!(range.contains(&(c.args.as_ptr() as usize)));
}

#[test]
fn wire_contact_converts_to_dht_contact() {
    let c = crate::dht::Contact {
        id: crate::dht::Id::from_bytes([9; 32]),
        addr: "[2001:db8::1]:9443".parse().unwrap(),
    };
    let w = WireContact::from(&c);
    assert_eq!(w.addr, "[2001:db8::1]:9443");
    assert_eq!(crate::dht::Contact::try_from(&w).unwrap(), c);
    let bad = WireContact {
        node_id: [9; 32],
        addr: "not-an-addr".into(),
    };
    assert!(matches!(
        crate::dht::Contact::try_from(&bad),
        Err(WireError::InvalidField { field: "addr", .. })
    ));
}

// ---------------------------------------------------------------- strategies

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

#[test]
fn bridge_path_round_trips_and_is_bounded() {
    let f = Frame::BridgePath(BridgePath {
        path: vec![[1; 32], [2; 32]],
    });
    assert_eq!(reencode(&f).unwrap(), f);
    let body = |ids: &[&[u8]]| {
        let mut b = BytesMut::new();
        put_map_len(&mut b, 1);
        put_str(&mut b, "path");
        // fixarray (at most 15) or array16.
        if ids.len() < 16 {
            b.extend_from_slice(&[0x90 | ids.len() as u8]);
        } else {
            b.extend_from_slice(&[0xdc, 0, ids.len() as u8]);
        }
        for id in ids {
            put_bin(&mut b, id);
        }
        b
    };
    let decode = |b: &[u8]| raw(MessageType::BridgePath as u8, b).decode();
    assert!(decode(&body(&[&[7; 32]])).is_ok());
    assert!(matches!(
        decode(&body(&[])),
        Err(WireError::InvalidField { field: "path", .. })
    ));
    assert!(decode(&body(&[&[7; 31]])).is_err(), "ids are 32 bytes");
    let many: Vec<&[u8]> = (0..=MAX_PATH).map(|_| &[7u8; 32][..]).collect();
    assert!(decode(&body(&many)).is_err(), "at most MAX_PATH ids");
}

fn blob() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..400).prop_map(Bytes::from)
}

fn contact_s() -> impl Strategy<Value = WireContact> {
    let addr = prop_oneof![
        any::<std::net::SocketAddr>().prop_map(|a| a.to_string()),
        text(),
    ];
    (any::<[u8; 32]>(), addr).prop_map(|(node_id, addr)| WireContact { node_id, addr })
}

fn contacts_s() -> impl Strategy<Value = Vec<WireContact>> {
    prop::collection::vec(contact_s(), 0..=20)
}

fn record_s() -> impl Strategy<Value = WireRecord> {
    (blob(), any::<[u8; 32]>(), any::<u32>()).prop_map(|(value, publisher, ttl_ms)| WireRecord {
        value,
        publisher,
        ttl_ms,
    })
}

/// Every DHT and RPC frame, within the decoder's bounds; used by `tests::frame_s`.
pub(super) fn dht_rpc_frame_s() -> impl Strategy<Value = Frame> {
    let result = prop_oneof![
        blob().prop_map(Ok),
        (any::<u16>(), text()).prop_map(|(code, message)| Err(RpcError { code, message })),
    ];
    let procedures = || prop::collection::vec(text(), 0..20);
    prop_oneof![
        prop::collection::vec(any::<[u8; 32]>(), 1..=MAX_PATH)
            .prop_map(|path| Frame::BridgePath(BridgePath { path })),
        (any::<u64>(), any::<[u8; 32]>(), contact_s()).prop_map(
            |(correlation_id, target, sender)| Frame::FindNode(FindNode {
                correlation_id,
                target,
                sender
            })
        ),
        (any::<u64>(), contacts_s()).prop_map(|(correlation_id, nodes)| {
            Frame::FindNodeReply(FindNodeReply {
                correlation_id,
                nodes,
            })
        }),
        (
            any::<u64>(),
            any::<[u8; 32]>(),
            blob(),
            any::<u32>(),
            any::<[u8; 32]>()
        )
            .prop_map(|(correlation_id, key, value, ttl_ms, publisher)| {
                Frame::Store(Store {
                    correlation_id,
                    key,
                    value,
                    ttl_ms,
                    publisher,
                    name: None,
                })
            }),
        (any::<u64>(), any::<bool>()).prop_map(|(correlation_id, stored)| {
            Frame::StoreAck(StoreAck {
                correlation_id,
                stored,
            })
        }),
        (
            any::<u64>(),
            any::<[u8; 32]>(),
            contact_s(),
            prop::collection::vec(any::<[u8; 32]>(), 0..=3)
        )
            .prop_map(|(correlation_id, key, sender, path)| {
                Frame::FindValue(FindValue {
                    correlation_id,
                    key,
                    sender,
                    path,
                })
            }),
        (
            any::<u64>(),
            prop::collection::vec(record_s(), 0..=4),
            contacts_s(),
            any::<u8>()
        )
            .prop_map(|(correlation_id, values, nodes, depth)| {
                Frame::FindValueReply(FindValueReply {
                    correlation_id,
                    values,
                    nodes,
                    depth,
                })
            }),
        (
            any::<u64>(),
            text(),
            blob(),
            any::<u32>(),
            any::<[u8; 32]>(),
            any::<u8>(),
            prop::option::of(any::<[u8; 32]>())
        )
            .prop_map(
                |(call_id, procedure, args, timeout_ms, origin, hops, target)| {
                    Frame::Call(Call {
                        call_id,
                        procedure,
                        args,
                        timeout_ms,
                        origin,
                        hops,
                        target,
                    })
                }
            ),
        (any::<u64>(), result)
            .prop_map(|(call_id, result)| Frame::Reply(Reply { call_id, result })),
        (any::<u64>(), procedures()).prop_map(|(correlation_id, procedures)| {
            Frame::Register(Register {
                correlation_id,
                procedures,
            })
        }),
        (any::<u64>(), procedures()).prop_map(|(correlation_id, procedures)| {
            Frame::Unregister(Unregister {
                correlation_id,
                procedures,
            })
        }),
    ]
}
