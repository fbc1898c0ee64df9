//! Tests of the wire codec: exact-bytes snapshots, edge cases, and property tests
//! (round trip, computed length, arbitrary splits, no panics on hostile input).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::msgpack::{put_bin, put_map_len, put_str, put_uint};
use super::*;

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(super) fn one_frame(bytes: &[u8]) -> RawFrame {
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
    d.extend(bytes);
    let f = d.next_frame().expect("valid header").expect("whole frame");
    assert_eq!(d.buffered(), 0);
    f
}

/// A raw frame of type `t` with a hand-built body.
pub(super) fn raw(t: u8, body: &[u8]) -> RawFrame {
    let mut b = BytesMut::new();
    Header {
        version: PROTOCOL_VERSION,
        msg_type: t,
        flags: 0,
        body_len: body.len() as u32,
    }
    .encode(&mut b);
    b.extend_from_slice(body);
    one_frame(&b)
}

fn sample_publish() -> Publish {
    Publish {
        topic: "a.b".into(),
        payload: Bytes::from_static(b"hi"),
        qos: Qos::AtLeastOnce,
        retain: false,
        message_id: message_id([1, 2, 3, 4, 5, 6, 7, 8], 42),
        ts_us: Some(1_700_000_000_000_000),
    }
}

/// The example frame quoted in docs/PROTOCOL.md.
const PUBLISH_HEX: &str = concat!(
    "0110000000000048",
    "85",
    "a5746f706963",
    "a3612e62",
    "a77061796c6f6164",
    "c4026869",
    "a3716f73",
    "01",
    "aa6d6573736167655f6964",
    "c410",
    "0102030405060708",
    "000000000000002a",
    "a574735f7573",
    "cf00060a24181e4000",
);

#[test]
fn header_snapshot_and_round_trip() {
    let h = Header {
        version: 1,
        msg_type: 0x10,
        flags: 0,
        body_len: 0x0102_0304,
    };
    let mut b = BytesMut::new();
    h.encode(&mut b);
    assert_eq!(hex(&b), "0110000001020304");
    let arr: [u8; 8] = b[..].try_into().unwrap();
    assert_eq!(Header::decode(&arr), h);
}

#[test]
fn publish_snapshot() {
    let f = Frame::Publish(sample_publish());
    let bytes = f.to_bytes();
    assert_eq!(hex(&bytes), PUBLISH_HEX);
    let mut hot = BytesMut::new();
    let p = sample_publish();
    encode_publish(
        &mut hot,
        &p.topic,
        &p.payload,
        p.qos,
        &p.message_id,
        p.ts_us,
    )
    .unwrap();
    assert_eq!(&hot[..], &bytes[..]);
    assert_eq!(one_frame(&bytes).decode().unwrap(), f);
}

/// The example connect quoted in docs/PROTOCOL.md.
const CONNECT_HEX: &str = concat!(
    "010100000000008d",
    "88",
    "a876657273696f6e73",
    "9101",
    "a76e6f64655f6964",
    "c420",
    "1111111111111111111111111111111111111111111111111111111111111111",
    "a57265616c6d",
    "a9696f2e6d6163756c61",
    "a7636c7573746572",
    "a0",
    "a4726f6c65",
    "a6636c69656e74",
    "ac6361706162696c6974696573",
    "90",
    "ae6d61785f6672616d655f73697a65",
    "ce00100000",
    "ae636f7272656c6174696f6e5f6964",
    "01",
);

#[test]
fn connect_snapshot() {
    let f = Frame::Connect(Connect {
        versions: vec![1],
        node_id: [0x11; 32],
        realm: "io.macula".into(),
        cluster: String::new(),
        role: Role::Client,
        capabilities: vec![],
        max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        correlation_id: 1,
        proof: None,
        credential: None,
    });
    let bytes = f.to_bytes();
    assert_eq!(hex(&bytes), CONNECT_HEX);
    assert_eq!(one_frame(&bytes).decode().unwrap(), f);
}

#[test]
fn protocol_doc_quotes_the_snapshots() {
    let doc = include_str!("../../docs/PROTOCOL.md");
    assert!(
        doc.contains(PUBLISH_HEX),
        "docs/PROTOCOL.md §11 publish is out of date"
    );
    assert!(
        doc.contains(CONNECT_HEX),
        "docs/PROTOCOL.md §11 connect is out of date"
    );
}

#[test]
fn ping_and_error_snapshots() {
    let ping = Frame::Ping(Ping { correlation_id: 7 }).to_bytes();
    assert_eq!(
        hex(&ping),
        "0103000000000011_81ae636f7272656c6174696f6e5f696407".replace('_', "")
    );
    let err = Frame::Error(ErrorFrame {
        code: 9,
        message: String::new(),
        correlation_id: None,
    })
    .to_bytes();
    // {"code": 9, "message": ""}: the absent optional key is omitted.
    assert_eq!(
        hex(&err),
        "0106000000000010_82a4636f646509a76d657373616765a0".replace('_', "")
    );
}

#[test]
fn message_type_and_error_code_tables() {
    for t in MessageType::ALL {
        assert_eq!(MessageType::from_u8(t as u8), Some(t));
        assert!(!is_reserved_macula_type(t as u8));
    }
    let labels: std::collections::HashSet<_> =
        MessageType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(labels.len(), MessageType::ALL.len());
    assert_eq!(MessageType::PubAck.as_str(), "puback");
    assert_eq!(MessageType::from_u8(0x13), None);
    assert!(is_reserved_macula_type(0x13) && is_reserved_macula_type(0x89));
    assert!(!is_reserved_macula_type(0x8a) && !is_reserved_macula_type(0x00));
    for (i, c) in ErrorCode::ALL.iter().enumerate() {
        assert_eq!(*c as u16, i as u16 + 1);
        assert_eq!(ErrorCode::from_u16(*c as u16), Some(*c));
    }
    assert_eq!(ErrorCode::from_u16(0), None);
    assert_eq!(ErrorCode::from_u16(21), None);
    assert!(ErrorCode::Unauthenticated.is_fatal());
    assert!(ErrorCode::LoopDetected.is_fatal());
    assert_eq!(ErrorCode::SlowConsumer.as_str(), "slow_consumer");
    assert!(ErrorCode::Truncated.is_fatal() && !ErrorCode::UnknownType.is_fatal());
    assert!(!ErrorCode::InflightExceeded.is_fatal() && !ErrorCode::MalformedBody.is_fatal());
}

#[test]
fn message_id_layout_and_negotiation() {
    let id = message_id([9; 8], 0x0102);
    assert_eq!(&id[8..], &[0, 0, 0, 0, 0, 0, 1, 2]);
    assert_eq!(message_id_parts(&id), ([9; 8], 0x0102));
    assert_eq!(negotiate_version(&[2, 1]), Some(1));
    assert_eq!(negotiate_version(&[2]), None);
    assert_eq!(negotiate_version(&[]), None);
}

#[test]
fn oversized_length_rejected_from_header_alone() {
    let mut d = FrameDecoder::new(1024);
    d.extend(&[1, 0x10, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    let err = d.next_frame().unwrap_err();
    assert_eq!(
        err,
        WireError::FrameTooLarge {
            len: u64::from(u32::MAX),
            max: 1024
        }
    );
    assert_eq!(err.code(), ErrorCode::FrameTooLarge);
    assert!(d.capacity() < 1024, "no memory reserved from the length");
    // Poisoned: the same error again, input discarded.
    d.extend(&[0; 64]);
    assert_eq!(d.buffered(), 0);
    assert_eq!(d.next_frame().unwrap_err(), err);
    assert_eq!(d.finish().unwrap_err(), err);
}

#[test]
fn body_exactly_at_max_accepted() {
    let mut d = FrameDecoder::new(4);
    d.extend(&[1, 0x03, 0, 0, 0, 0, 0, 4, 0x81, 0xa1, b'x', 0]);
    let f = d.next_frame().unwrap().unwrap();
    assert_eq!(f.header.body_len, 4);
}

#[test]
fn wrong_version_and_reserved_byte() {
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
    d.extend(&[2, 0x03, 0, 0, 0, 0, 0, 0]);
    let e = d.next_frame().unwrap_err();
    assert_eq!(e, WireError::UnsupportedVersion { got: 2 });
    assert_eq!(e.code(), ErrorCode::UnsupportedVersion);

    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
    d.extend(&[1, 0x03, 0, 7, 0, 0, 0, 0]);
    let e = d.next_frame().unwrap_err();
    assert_eq!(e, WireError::Reserved { byte: 7 });
    assert_eq!(e.code(), ErrorCode::Protocol);
}

#[test]
fn flags_are_ignored_on_receive() {
    let mut b = BytesMut::from(&Frame::Ping(Ping { correlation_id: 1 }).to_bytes()[..]);
    b[2] = 0xff;
    let f = one_frame(&b);
    assert_eq!(f.header.flags, 0xff);
    assert_eq!(f.decode().unwrap(), Frame::Ping(Ping { correlation_id: 1 }));
}

#[test]
fn unknown_type_passes_through_and_stream_continues() {
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
    d.extend(&[1, 0x22, 0, 0, 0, 0, 0, 2, 0x80, 0x80]);
    d.extend(&Frame::Pong(Pong { correlation_id: 3 }).to_bytes());
    let unknown = d.next_frame().unwrap().unwrap();
    assert_eq!(unknown.msg_type(), None);
    assert_eq!(&unknown.body()[..], &[0x80, 0x80]);
    let e = unknown.decode().unwrap_err();
    assert_eq!(e, WireError::UnknownType { msg_type: 0x22 });
    assert_eq!(e.code(), ErrorCode::UnknownType);
    let next = d.next_frame().unwrap().unwrap().decode().unwrap();
    assert_eq!(next, Frame::Pong(Pong { correlation_id: 3 }));
    assert!(d.next_frame().unwrap().is_none());
    d.finish().unwrap();
}

#[test]
fn finish_reports_truncation() {
    let bytes = Frame::Ping(Ping { correlation_id: 1 }).to_bytes();
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
    d.extend(&bytes[..5]);
    assert!(d.next_frame().unwrap().is_none());
    assert_eq!(
        d.finish().unwrap_err(),
        WireError::Truncated { buffered: 5 }
    );
    d.extend(&bytes[5..12]);
    assert!(d.next_frame().unwrap().is_none());
    assert_eq!(d.finish().unwrap_err().code(), ErrorCode::Truncated);
}

#[test]
fn publish_payload_is_zero_copy_and_view_matches() {
    let f = one_frame(&Frame::Publish(sample_publish()).to_bytes());
    let Frame::Publish(p) = f.decode().unwrap() else {
        panic!("not a publish")
    };
    let range = f.bytes.as_ptr() as usize..f.bytes.as_ptr() as usize + f.bytes.len();
    assert!(range.contains(&(p.payload.as_ptr() as usize)));
    let v = f.publish_view().unwrap();
    assert_eq!(
        (v.topic, v.payload, v.qos),
        ("a.b", &b"hi"[..], Qos::AtLeastOnce)
    );
    assert_eq!(
        (v.message_id, v.ts_us, v.retain),
        (p.message_id, p.ts_us, false)
    );
    let ping = one_frame(&Frame::Ping(Ping { correlation_id: 1 }).to_bytes());
    assert!(matches!(
        ping.publish_view(),
        Err(WireError::Malformed { .. })
    ));
}

/// A publish body with the given message id bytes, qos and retain flag.
fn publish_body(id: &[u8], qos: u64, retain: Option<bool>) -> BytesMut {
    let mut b = BytesMut::new();
    put_map_len(&mut b, 4 + u32::from(retain.is_some()));
    put_str(&mut b, "topic");
    put_str(&mut b, "t");
    put_str(&mut b, "payload");
    put_bin(&mut b, b"p");
    put_str(&mut b, "qos");
    put_uint(&mut b, qos);
    put_str(&mut b, "message_id");
    put_bin(&mut b, id);
    if let Some(r) = retain {
        put_str(&mut b, "retain");
        super::msgpack::put_bool(&mut b, r);
    }
    b
}

#[test]
fn field_validation() {
    let ok = raw(0x10, &publish_body(&[0; 16], 0, Some(false)));
    assert!(ok.decode().is_ok());
    let e = raw(0x10, &publish_body(&[0; 15], 0, None))
        .decode()
        .unwrap_err();
    assert!(matches!(
        e,
        WireError::InvalidField {
            field: "message_id",
            ..
        }
    ));
    let e = raw(0x10, &publish_body(&[0; 16], 2, None))
        .publish_view()
        .unwrap_err();
    assert_eq!(e, WireError::UnsupportedQos { qos: 2 });
    assert_eq!(e.code(), ErrorCode::UnsupportedQos);
    let e = raw(0x10, &publish_body(&[0; 16], 300, None))
        .decode()
        .unwrap_err();
    assert_eq!(e, WireError::UnsupportedQos { qos: 255 });
    let e = raw(0x10, &publish_body(&[0; 16], 1, Some(true)))
        .decode()
        .unwrap_err();
    assert!(matches!(
        e,
        WireError::InvalidField {
            field: "retain",
            ..
        }
    ));
    assert_eq!(e.code(), ErrorCode::MalformedBody);

    let mut c = BytesMut::new();
    put_map_len(&mut c, 7);
    for (k, v) in [("realm", "r"), ("cluster", ""), ("role", "client")] {
        put_str(&mut c, k);
        put_str(&mut c, v);
    }
    put_str(&mut c, "versions");
    c.extend_from_slice(&[0x91, 1]);
    put_str(&mut c, "max_frame_size");
    put_uint(&mut c, 1000);
    put_str(&mut c, "correlation_id");
    put_uint(&mut c, 1);
    put_str(&mut c, "node_id");
    let mut short = c.clone();
    put_bin(&mut c, &[7; 32]);
    put_bin(&mut short, &[7; 31]);
    // Capabilities absent → empty.
    let Frame::Connect(conn) = raw(0x01, &c).decode().unwrap() else {
        panic!("not a connect")
    };
    assert!(conn.capabilities.is_empty() && conn.role == Role::Client);
    let e = raw(0x01, &short).decode().unwrap_err();
    assert!(matches!(
        e,
        WireError::InvalidField {
            field: "node_id",
            ..
        }
    ));
}

#[test]
fn body_shape_checks() {
    let mut extra = publish_body(&[0; 16], 0, None);
    extra[0] += 1; // one more entry: an unknown key with a nested value is ignored
    put_str(&mut extra, "future_key");
    extra.extend_from_slice(&[0x92, 0x81, 0xa1, b'k', 0xc0, 0x01]);
    assert!(raw(0x10, &extra).decode().is_ok());

    let mut trailing = publish_body(&[0; 16], 0, None);
    trailing.extend_from_slice(&[0xc0]);
    let e = raw(0x10, &trailing).decode().unwrap_err();
    assert!(matches!(e, WireError::Malformed { msg_type: 0x10, .. }));
    assert_eq!(e.code(), ErrorCode::MalformedBody);

    // An array in place of the map, an empty body, a missing key, deep nesting.
    for body in [
        &[0x91, 0x07][..],
        &[],
        &[0x80],
        &[0x81, 0xa1, b'x', 0x91, 0x91, 0x91],
    ] {
        assert!(raw(0x03, body).decode().is_err());
    }
    let mut deep = vec![0x81, 0xa1, b'x'];
    deep.extend(std::iter::repeat_n(0x91, 10_000));
    deep.push(0xc0);
    assert!(matches!(
        raw(0x03, &deep).decode(),
        Err(WireError::Malformed { .. })
    ));
}

#[test]
fn correlation_id_is_read_from_bodies_that_do_not_decode() {
    let mut sub = BytesMut::new();
    put_map_len(&mut sub, 3);
    put_str(&mut sub, "topics");
    sub.extend_from_slice(&[0x91, 0xa1, b'a']);
    put_str(&mut sub, "qos");
    put_uint(&mut sub, 2);
    put_str(&mut sub, "correlation_id");
    put_uint(&mut sub, 70_000);
    let f = raw(0x11, &sub);
    assert_eq!(f.decode().unwrap_err().code(), ErrorCode::UnsupportedQos);
    assert_eq!(f.peek_correlation_id(), Some(70_000));

    // Found after an unknown nested key, before a value of the wrong type, in a register
    // missing its procedures; a bin key is tolerated like the decoder tolerates it.
    let mut reg = BytesMut::new();
    put_map_len(&mut reg, 3);
    put_str(&mut reg, "future");
    reg.extend_from_slice(&[0x92, 0x81, 0xa1, b'k', 0xc0, 0xc4, 0x01, 0x00]);
    put_bin(&mut reg, b"correlation_id");
    put_uint(&mut reg, 7);
    put_str(&mut reg, "procedures");
    put_uint(&mut reg, 1);
    let f = raw(0x26, &reg);
    assert_eq!(f.decode().unwrap_err().code(), ErrorCode::MalformedBody);
    assert_eq!(f.peek_correlation_id(), Some(7));

    // Nothing to read: not a map, absent, not an unsigned int, cut short.
    let mut neg = BytesMut::new();
    put_map_len(&mut neg, 1);
    put_str(&mut neg, "correlation_id");
    neg.extend_from_slice(&[0xff]);
    let mut cut = BytesMut::new();
    put_map_len(&mut cut, 2);
    put_str(&mut cut, "topics");
    cut.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
    for body in [
        &[0x91, 0x07][..],
        &[],
        &[0x80],
        &neg[..],
        &cut[..],
        &[0xc1, 0xff, 0x00],
    ] {
        assert_eq!(raw(0x11, body).peek_correlation_id(), None, "{}", hex(body));
    }
}

#[test]
fn nesting_limit_is_the_same_for_every_decoder() {
    // The body map is level 1; `levels` non-empty arrays under an unknown key follow it.
    let body = |levels: usize| {
        let mut b = publish_body(&[0; 16], 0, None);
        b[0] += 1;
        put_str(&mut b, "future_key");
        b.extend(std::iter::repeat_n(0x91, levels));
        b.extend_from_slice(&[0x00]);
        b
    };
    let ok = raw(0x10, &body(15));
    assert!(ok.decode().is_ok());
    assert!(ok.publish_view().is_ok());
    let deep = raw(0x10, &body(16));
    assert_eq!(deep.decode().unwrap_err().code(), ErrorCode::MalformedBody);
    assert_eq!(
        deep.publish_view().unwrap_err().code(),
        ErrorCode::MalformedBody
    );
    // An empty container at level 17 holds nothing deeper: accepted by both.
    let mut empty = body(15);
    empty.truncate(empty.len() - 1);
    empty.extend_from_slice(&[0x90]);
    let empty = raw(0x10, &empty);
    assert!(empty.decode().is_ok());
    assert!(empty.publish_view().is_ok());
}

#[test]
fn encode_limits_leave_dst_unchanged() {
    let mut p = sample_publish();
    p.payload = Bytes::from(vec![0u8; 100]);
    let f = Frame::Publish(p);
    let mut dst = BytesMut::from(&b"keep"[..]);
    let e = f.encode_limited(&mut dst, 50).unwrap_err();
    assert!(matches!(e, WireError::FrameTooLarge { max: 50, .. }));
    assert_eq!(&dst[..], b"keep");
    let sub = Frame::Subscribe(Subscribe {
        topics: vec!["x".repeat(100)],
        qos: Qos::AtMostOnce,
        correlation_id: 1,
    });
    assert!(sub.encode_limited(&mut dst, 50).is_err());
    assert_eq!(&dst[..], b"keep");
    sub.encode_limited(&mut dst, 1000).unwrap();
    assert_eq!(dst.len(), 4 + sub.encoded_len());
}

// ---------------------------------------------------------------- property tests

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

fn mid() -> impl Strategy<Value = MessageId> {
    any::<[u8; 16]>()
}

fn qos_s() -> impl Strategy<Value = Qos> {
    prop_oneof![Just(Qos::AtMostOnce), Just(Qos::AtLeastOnce)]
}

fn publish_s() -> impl Strategy<Value = Publish> {
    (
        text(),
        prop::collection::vec(any::<u8>(), 0..600),
        qos_s(),
        mid(),
        any::<Option<u64>>(),
    )
        .prop_map(|(topic, payload, qos, message_id, ts_us)| Publish {
            topic,
            payload: payload.into(),
            qos,
            retain: false,
            message_id,
            ts_us,
        })
}

/// Every frame type: the pub/sub frames here, the DHT/RPC frames of `tests_dht_rpc`, the
/// gossip frames of `tests_gossip` and `revocation_list`, weighted by how many types each
/// group has.
fn frame_s() -> impl Strategy<Value = Frame> {
    prop_oneof![
        11 => pubsub_frame_s(),
        10 => super::tests_dht_rpc::dht_rpc_frame_s(),
        5 => super::tests_gossip::gossip_frame_s(),
        1 => super::tests_revocation::revocation_frame_s(),
    ]
}

fn pubsub_frame_s() -> impl Strategy<Value = Frame> {
    let topics = || prop::collection::vec(text(), 0..5);
    prop_oneof![
        (
            prop::collection::vec(any::<u8>(), 0..4),
            any::<[u8; 32]>(),
            (text(), text()),
            any::<bool>(),
            prop::collection::vec(text(), 0..4),
            any::<u32>(),
            any::<u64>(),
        )
            .prop_map(
                |(versions, node_id, (realm, cluster), node, capabilities, mfs, cid)| {
                    Frame::Connect(Connect {
                        versions,
                        node_id,
                        realm,
                        cluster,
                        role: if node { Role::Node } else { Role::Client },
                        capabilities,
                        max_frame_size: mfs,
                        correlation_id: cid,
                        proof: None,
                        credential: None,
                    })
                }
            ),
        (
            any::<u8>(),
            any::<[u8; 32]>(),
            text(),
            any::<[u32; 3]>(),
            any::<u64>()
        )
            .prop_map(
                |(version, node_id, realm, [max_frame_size, max_inflight, keepalive_ms], cid)| {
                    Frame::Connected(Connected {
                        version,
                        node_id,
                        realm,
                        max_frame_size,
                        max_inflight,
                        keepalive_ms,
                        correlation_id: cid,
                        proof: None,
                        credential: (cid % 2 == 0)
                            .then(|| bytes::Bytes::from(vec![7u8; (cid % 300) as usize])),
                    })
                }
            ),
        (any::<u16>(), text())
            .prop_map(|(code, reason)| Frame::Disconnect(Disconnect { code, reason })),
        any::<u64>().prop_map(|correlation_id| Frame::Ping(Ping { correlation_id })),
        any::<u64>().prop_map(|correlation_id| Frame::Pong(Pong { correlation_id })),
        (any::<u16>(), text(), any::<Option<u64>>()).prop_map(|(code, message, cid)| {
            Frame::Error(ErrorFrame {
                code,
                message,
                correlation_id: cid,
            })
        }),
        publish_s().prop_map(Frame::Publish),
        (topics(), qos_s(), any::<u64>()).prop_map(|(topics, qos, correlation_id)| {
            Frame::Subscribe(Subscribe {
                topics,
                qos,
                correlation_id,
            })
        }),
        (topics(), any::<u64>()).prop_map(|(topics, correlation_id)| {
            Frame::Unsubscribe(Unsubscribe {
                topics,
                correlation_id,
            })
        }),
        (
            prop::collection::vec(mid(), 0..20),
            prop::collection::vec(mid(), 0..5)
        )
            .prop_map(|(ids, no_route)| Frame::PubAck(PubAck { ids, no_route })),
        (any::<u64>(), any::<u32>()).prop_map(|(correlation_id, count)| {
            Frame::SubAck(SubAck {
                correlation_id,
                count,
            })
        }),
    ]
}

/// Feeds `stream` to a decoder in the given chunk sizes and decodes every frame; chunks are
/// handed over alternately copied (`extend`) and whole (`extend_bytes`), so both paths and
/// every switch between them are exercised. The result is checked against the copying path
/// alone.
fn decode_chunked(stream: &[u8], cuts: &[usize]) -> Vec<Frame> {
    let mixed = decode_chunks(stream, cuts, |i| i % 2 == 1);
    let zero_copy = decode_chunks(stream, cuts, |_| true);
    let copied = decode_chunks(stream, cuts, |_| false);
    assert_eq!(mixed, copied);
    assert_eq!(zero_copy, copied);
    copied
}

fn decode_chunks(stream: &[u8], cuts: &[usize], whole: impl Fn(usize) -> bool) -> Vec<Frame> {
    let stream = Bytes::copy_from_slice(stream);
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
    let mut out = Vec::new();
    let mut pos = 0usize;
    for (i, &n) in cuts.iter().chain(std::iter::once(&usize::MAX)).enumerate() {
        let end = pos.saturating_add(n).min(stream.len());
        if whole(i) {
            d.extend_bytes(stream.slice(pos..end));
        } else {
            d.extend(&stream[pos..end]);
        }
        pos = end;
        while let Some(raw) = d.next_frame().expect("valid stream") {
            out.push(raw.decode().expect("valid frame"));
        }
        if pos == stream.len() {
            break;
        }
    }
    d.finish().expect("no partial frame left");
    out
}

/// Exercises every decoding entry point on `bytes`; only checks that nothing panics.
fn decode_everything(bytes: &[u8]) {
    let mut d = FrameDecoder::new(4096);
    d.extend(bytes);
    while let Ok(Some(raw)) = d.next_frame() {
        let _ = raw.decode();
        let _ = raw.publish_view();
        let _ = raw.peek_correlation_id();
        let _ = raw.body();
    }
    let _ = d.finish();
}

proptest! {
    #[test]
    fn round_trip_every_frame(f in frame_s()) {
        let bytes = f.to_bytes();
        prop_assert_eq!(bytes.len(), f.encoded_len());
        let raw = one_frame(&bytes);
        prop_assert_eq!(raw.header.body_len as usize, bytes.len() - HEADER_LEN);
        prop_assert_eq!(raw.msg_type(), Some(f.msg_type()));
        prop_assert_eq!(raw.decode().unwrap(), f);
    }

    #[test]
    fn hot_publish_encoder_matches_frame_encoder(p in publish_s()) {
        let mut hot = BytesMut::new();
        encode_publish(&mut hot, &p.topic, &p.payload, p.qos, &p.message_id, p.ts_us).unwrap();
        prop_assert_eq!(
            hot.len() as u64,
            HEADER_LEN as u64 + publish_body_len(p.topic.len(), p.payload.len(), p.ts_us)
        );
        let frame = Frame::Publish(p.clone());
        prop_assert_eq!(&hot[..], &frame.to_bytes()[..]);
        let raw = one_frame(&hot);
        let v = raw.publish_view().unwrap();
        prop_assert_eq!((v.topic, v.payload), (&p.topic[..], &p.payload[..]));
        prop_assert_eq!((v.qos, v.message_id, v.ts_us), (p.qos, p.message_id, p.ts_us));
    }

    #[test]
    fn any_split_yields_the_same_frames(
        frames in prop::collection::vec(frame_s(), 1..6),
        cuts in prop::collection::vec(0usize..64, 0..40),
    ) {
        let mut stream = BytesMut::new();
        for f in &frames {
            f.encode(&mut stream).unwrap();
        }
        prop_assert_eq!(decode_chunked(&stream, &cuts), frames.clone());
        prop_assert_eq!(decode_chunked(&stream, &[1; 0]), frames.clone());
        let bytewise = vec![1; stream.len()];
        prop_assert_eq!(decode_chunked(&stream, &bytewise), frames);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
        // Also behind a valid header of every type.
        for t in MessageType::ALL {
            let mut b = vec![1, t as u8, 0, 0];
            b.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            b.extend_from_slice(&bytes);
            decode_everything(&b);
        }
    }

    #[test]
    fn truncated_frames_never_panic(f in frame_s(), cut in any::<prop::sample::Index>()) {
        let bytes = f.to_bytes();
        let n = cut.index(bytes.len());
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        d.extend(&bytes[..n]);
        prop_assert!(d.next_frame().unwrap().is_none());
        prop_assert_eq!(d.finish().is_err(), n > 0);
        // A body cut short but declared whole must fail to decode, not panic.
        if n > HEADER_LEN {
            let mut short = BytesMut::from(&bytes[..n]);
            short[4..8].copy_from_slice(&((n - HEADER_LEN) as u32).to_be_bytes());
            decode_everything(&short);
        }
    }

    #[test]
    fn bit_flipped_frames_never_panic(
        f in frame_s(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let mut bytes = BytesMut::from(&f.to_bytes()[..]);
        for (i, bit) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        decode_everything(&bytes);
    }
}

/// The serde path (structure check + rmp-serde) that the hand-written parser replaces.
fn serde_view(body: &[u8]) -> Option<PublishView<'_>> {
    super::msgpack::check_single_map(body).ok()?;
    super::codec::publish_view_of(body).ok()
}

proptest! {
    #[test]
    fn hand_written_publish_parser_agrees_with_serde(
        p in publish_s(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let frame = Frame::Publish(p).to_bytes();
        let mut body = frame[HEADER_LEN..].to_vec();
        for (i, bit) in flips {
            let i = i.index(body.len());
            body[i] ^= 1 << bit;
        }
        if truncate {
            body.truncate(cut.index(body.len() + 1));
        }
        let fast = super::publish::parse_publish(&body).ok();
        prop_assert_eq!(fast, serde_view(&body));
    }

    #[test]
    fn hand_written_publish_parser_agrees_on_random_maps(body in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut framed = vec![0x86];
        framed.extend_from_slice(&body);
        prop_assert_eq!(super::publish::parse_publish(&framed).ok(), serde_view(&framed));
        prop_assert_eq!(super::publish::parse_publish(&body).ok(), serde_view(&body));
    }
}
