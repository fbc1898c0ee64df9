//! Body codec: owned [`Frame`]s to bytes and back, plus the publish hot path
//! ([`encode_publish`], [`RawFrame::publish_view`]) that neither allocates nor copies payloads.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::msgpack;
use super::{
    Connect, Connected, Disconnect, ErrorFrame, Frame, Header, MessageId, MessageType, NodeId,
    Ping, Pong, PubAck, Publish, Qos, Role, SubAck, Subscribe, Unsubscribe, WireError, HEADER_LEN,
    PROTOCOL_VERSION,
};
use dht_rpc::{
    BridgePathDe, BridgePathSer, CallDe, CallSer, FindNodeDe, FindNodeReplyDe, FindNodeReplySer,
    FindNodeSer, FindValueDe, FindValueReplyDe, FindValueReplySer, FindValueSer, ProceduresDe,
    ProceduresSer, ReplyDe, ReplySer, StoreAckMsg, StoreDe, StoreSer,
};
use fleet::{FleetViewDe, FleetViewSer, RedirectDe, RedirectSer};
use gossip::{
    GossipPullDe, GossipPullReplyDe, GossipPullReplySer, GossipPullSer, GossipPushDe,
    GossipPushSer, GossipSyncDe, GossipSyncReplyDe, GossipSyncReplySer, GossipSyncSer,
};
use revocation::{RevocationListDe, RevocationListSer};

mod dht_rpc;
mod fleet;
mod gossip;
mod revocation;

/// Appends a complete publish frame (header + body) to `dst` without building a [`Publish`];
/// the only allocation is `dst` growing. `retain` is not written (false).
///
/// Body keys, in order: `topic`, `payload`, `qos`, `message_id`, then `ts_us` if `Some`.
/// Errors: [`WireError::FrameTooLarge`] if the body would exceed `u32::MAX` bytes (`dst`
/// unchanged). Compare [`publish_body_len`] with the peer's `max_frame_size` before calling.
pub fn encode_publish(
    dst: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: Qos,
    message_id: &MessageId,
    ts_us: Option<u64>,
) -> Result<(), WireError> {
    write_publish(dst, topic, payload, qos, false, message_id, ts_us, u32::MAX)
}

/// Exact body length, in bytes, of a publish written by [`encode_publish`] (header excluded)
/// for a topic of `topic_len` bytes and a payload of `payload_len` bytes.
pub fn publish_body_len(topic_len: usize, payload_len: usize, ts_us: Option<u64>) -> u64 {
    publish_len(topic_len, payload_len, false, ts_us)
}

/// A whole frame cut out of the stream buffer by [`super::FrameDecoder`]. `bytes` is
/// header + body and shares the stream buffer's memory (zero copy); the header has been
/// validated (version, reserved byte, length) but the body has not been parsed.
///
/// Holding a `RawFrame` (or a payload sliced from it) keeps the stream buffer's allocation
/// alive; copy the payload if it must outlive a long queue wait.
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// The parsed header.
    pub header: Header,
    /// Header + body, exactly `HEADER_LEN + header.body_len` bytes.
    pub bytes: Bytes,
}

impl RawFrame {
    /// The body (`bytes[8..]`), zero copy; empty if `bytes` is shorter than a header.
    pub fn body(&self) -> Bytes {
        self.bytes.slice(HEADER_LEN.min(self.bytes.len())..)
    }

    /// The message type, `None` when v1 does not implement it (answer `UnknownType`).
    pub fn msg_type(&self) -> Option<MessageType> {
        MessageType::from_u8(self.header.msg_type)
    }

    /// Fully decodes the body into an owned [`Frame`]; a publish payload, DHT values, call
    /// arguments, reply results and gossip states, digests and wants are zero-copy slices of
    /// `self.bytes`.
    ///
    /// Errors: [`WireError::UnknownType`] for types v1 does not implement;
    /// [`WireError::Malformed`] if the body is not exactly one map (depth ≤ 16) with the
    /// required keys and types, a bounded list is longer than its bound
    /// ([`MAX_CONTACTS`](super::MAX_CONTACTS), [`MAX_RECORDS`](super::MAX_RECORDS),
    /// [`MAX_PROCEDURES`](super::MAX_PROCEDURES)), or a `reply` carries both or neither of
    /// `ok` / `error`; [`WireError::InvalidField`] for a `node_id`, `target`, `key`,
    /// `publisher` or `origin` that is not 32 bytes, a DHT `value` over
    /// [`MAX_DHT_VALUE`](super::MAX_DHT_VALUE) bytes, a `message_id` (or an id in `ids` /
    /// `no_route`) that is not 16 bytes, an unknown `role`, or `retain: true`; for a gossip
    /// frame, a `sender` that is not 32 bytes, an empty `realm` / `scope` or one over
    /// [`MAX_GOSSIP_NAME`](super::MAX_GOSSIP_NAME) bytes, a `from_key` / `to_key` over
    /// [`MAX_GOSSIP_KEY`](super::MAX_GOSSIP_KEY) bytes, a `state`, `digest` or `wants` over
    /// [`MAX_GOSSIP_STATE`](super::MAX_GOSSIP_STATE) bytes, `parts` 0 or `part` ≥ `parts`;
    /// [`WireError::UnsupportedQos`] for qos ≥ 2; for a `revocation_list`, a `list` that
    /// is empty or over [`MAX_REVOCATION_LIST`](super::MAX_REVOCATION_LIST) bytes.
    pub fn decode(&self) -> Result<Frame, WireError> {
        let t = self.checked_type()?;
        let body = self.body_slice();
        check_body(t, body)?;
        let frame = match t {
            MessageType::Connect => {
                let w: ConnectDe = de(t, body)?;
                Frame::Connect(Connect {
                    versions: w.versions,
                    node_id: node_id(w.node_id)?,
                    realm: w.realm,
                    cluster: w.cluster,
                    role: match w.role.as_str() {
                        "client" => Role::Client,
                        "node" => Role::Node,
                        other => {
                            return Err(WireError::InvalidField {
                                field: "role",
                                reason: format!("expected \"client\" or \"node\", got {other:?}"),
                            })
                        }
                    },
                    capabilities: w.capabilities,
                    max_frame_size: w.max_frame_size,
                    correlation_id: w.correlation_id,
                    proof: proof(w.public_key, w.proof)?,
                    credential: credential(w.credential)?,
                })
            }
            MessageType::Connected => {
                let w: ConnectedDe = de(t, body)?;
                Frame::Connected(Connected {
                    version: w.version,
                    node_id: node_id(w.node_id)?,
                    realm: w.realm,
                    max_frame_size: w.max_frame_size,
                    max_inflight: w.max_inflight,
                    keepalive_ms: w.keepalive_ms,
                    correlation_id: w.correlation_id,
                    proof: proof(w.public_key, w.proof)?,
                    credential: credential(w.credential)?,
                })
            }
            MessageType::Disconnect => {
                let w: DisconnectMsg = de(t, body)?;
                Frame::Disconnect(Disconnect {
                    code: w.code,
                    reason: w.reason,
                })
            }
            MessageType::Ping => {
                let w: CorrMsg = de(t, body)?;
                Frame::Ping(Ping {
                    correlation_id: w.correlation_id,
                })
            }
            MessageType::Pong => {
                let w: CorrMsg = de(t, body)?;
                Frame::Pong(Pong {
                    correlation_id: w.correlation_id,
                })
            }
            MessageType::Error => {
                let w: ErrorMsg = de(t, body)?;
                Frame::Error(ErrorFrame {
                    code: w.code,
                    message: w.message,
                    correlation_id: w.correlation_id,
                })
            }
            MessageType::Publish => {
                let v = publish_view_of(body)?;
                Frame::Publish(Publish {
                    topic: v.topic.to_owned(),
                    payload: self.bytes.slice_ref(v.payload),
                    qos: v.qos,
                    retain: v.retain,
                    message_id: v.message_id,
                    ts_us: v.ts_us,
                })
            }
            MessageType::Subscribe => {
                let w: SubscribeDe = de(t, body)?;
                Frame::Subscribe(Subscribe {
                    topics: w.topics,
                    qos: qos(w.qos)?,
                    correlation_id: w.correlation_id,
                })
            }
            MessageType::Unsubscribe => {
                let w: UnsubscribeDe = de(t, body)?;
                Frame::Unsubscribe(Unsubscribe {
                    topics: w.topics,
                    correlation_id: w.correlation_id,
                })
            }
            MessageType::PubAck => {
                let w: PubAckDe = de(t, body)?;
                Frame::PubAck(PubAck {
                    ids: ids("ids", &w.ids)?,
                    no_route: ids("no_route", &w.no_route)?,
                })
            }
            MessageType::SubAck => {
                let w: SubAckMsg = de(t, body)?;
                Frame::SubAck(SubAck {
                    correlation_id: w.correlation_id,
                    count: w.count,
                })
            }
            MessageType::Call => Frame::Call(de::<CallDe>(t, body)?.check(&self.bytes)?),
            MessageType::Reply => Frame::Reply(de::<ReplyDe>(t, body)?.check(&self.bytes)?),
            MessageType::Register => Frame::Register(de::<ProceduresDe>(t, body)?.register()),
            MessageType::Unregister => Frame::Unregister(de::<ProceduresDe>(t, body)?.unregister()),
            MessageType::FindNode => Frame::FindNode(de::<FindNodeDe>(t, body)?.check()?),
            MessageType::FindNodeReply => {
                Frame::FindNodeReply(de::<FindNodeReplyDe>(t, body)?.check()?)
            }
            MessageType::Store => Frame::Store(de::<StoreDe>(t, body)?.check(&self.bytes)?),
            MessageType::FindValue => Frame::FindValue(de::<FindValueDe>(t, body)?.check()?),
            MessageType::FindValueReply => {
                Frame::FindValueReply(de::<FindValueReplyDe>(t, body)?.check(&self.bytes)?)
            }
            MessageType::StoreAck => Frame::StoreAck(de::<StoreAckMsg>(t, body)?.check()),
            MessageType::Redirect => Frame::Redirect(de::<RedirectDe>(t, body)?.check()?),
            MessageType::FleetView => Frame::FleetView(de::<FleetViewDe>(t, body)?.check()?),
            MessageType::BridgePath => Frame::BridgePath(de::<BridgePathDe>(t, body)?.check()?),
            MessageType::RevocationList => {
                Frame::RevocationList(de::<RevocationListDe>(t, body)?.check(&self.bytes)?)
            }
            MessageType::GossipPush => {
                Frame::GossipPush(de::<GossipPushDe>(t, body)?.check(&self.bytes)?)
            }
            MessageType::GossipPull => {
                Frame::GossipPull(de::<GossipPullDe>(t, body)?.check(&self.bytes)?)
            }
            MessageType::GossipPullReply => {
                Frame::GossipPullReply(de::<GossipPullReplyDe>(t, body)?.check(&self.bytes)?)
            }
            MessageType::GossipSync => {
                Frame::GossipSync(de::<GossipSyncDe>(t, body)?.check(&self.bytes)?)
            }
            MessageType::GossipSyncReply => {
                Frame::GossipSyncReply(de::<GossipSyncReplyDe>(t, body)?.check()?)
            }
        };
        Ok(frame)
    }

    /// Borrowed view of a publish body; no allocation, no copy.
    ///
    /// Errors: as [`RawFrame::decode`]; [`WireError::Malformed`] if this is not a publish.
    pub fn publish_view(&self) -> Result<PublishView<'_>, WireError> {
        let t = self.checked_type()?;
        if t != MessageType::Publish {
            return Err(WireError::Malformed {
                msg_type: self.header.msg_type,
                reason: "publish_view called on a non-publish frame".into(),
            });
        }
        super::publish::parse_publish(self.body_slice())
    }

    fn checked_type(&self) -> Result<MessageType, WireError> {
        self.msg_type().ok_or(WireError::UnknownType {
            msg_type: self.header.msg_type,
        })
    }

    /// The body's `correlation_id`, read leniently (the rest of the body is skipped, not
    /// checked): lets an error about a body that does not decode still name its request.
    /// `None` when the body is no map or has no unsigned `correlation_id`.
    pub fn peek_correlation_id(&self) -> Option<u64> {
        super::msgpack::peek_uint(self.body_slice(), "correlation_id")
    }

    fn body_slice(&self) -> &[u8] {
        &self.bytes[HEADER_LEN.min(self.bytes.len())..]
    }
}

/// Borrowed, zero-allocation view of a publish body for the routing hot path.
/// Field meanings as in [`Publish`]; `retain` is always false (true is rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishView<'a> {
    /// The topic, borrowed from the frame.
    pub topic: &'a str,
    /// The payload, borrowed from the frame.
    pub payload: &'a [u8],
    /// QoS 0 or 1.
    pub qos: Qos,
    /// Always false in v1.
    pub retain: bool,
    /// The end-to-end message id.
    pub message_id: MessageId,
    /// Publisher wall clock, µs since the Unix epoch, if sent.
    pub ts_us: Option<u64>,
}

pub(super) fn encode_frame(f: &Frame, dst: &mut BytesMut, max: u32) -> Result<(), WireError> {
    let p = match f {
        Frame::Publish(p) => p,
        _ => {
            let start = dst.len();
            dst.put_bytes(0, HEADER_LEN);
            serialize_body(f, &mut dst.writer());
            return finish(dst, start, f.msg_type(), max);
        }
    };
    let id = &p.message_id;
    write_publish(dst, &p.topic, &p.payload, p.qos, p.retain, id, p.ts_us, max)
}

pub(super) fn encoded_len(f: &Frame) -> usize {
    let body = match f {
        Frame::Publish(p) => publish_len(p.topic.len(), p.payload.len(), p.retain, p.ts_us),
        _ => {
            let mut counter = Counter(0);
            serialize_body(f, &mut counter);
            counter.0
        }
    };
    HEADER_LEN + body as usize
}

#[allow(clippy::too_many_arguments)]
fn write_publish(
    dst: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: Qos,
    retain: bool,
    message_id: &MessageId,
    ts_us: Option<u64>,
    max: u32,
) -> Result<(), WireError> {
    let len = publish_len(topic.len(), payload.len(), retain, ts_us);
    if len > u64::from(max) {
        return Err(WireError::FrameTooLarge { len, max });
    }
    dst.reserve(HEADER_LEN + len as usize);
    let start = dst.len();
    dst.put_bytes(0, HEADER_LEN);
    msgpack::put_map_len(dst, 4 + u32::from(retain) + u32::from(ts_us.is_some()));
    msgpack::put_str(dst, "topic");
    msgpack::put_str(dst, topic);
    msgpack::put_str(dst, "payload");
    msgpack::put_bin(dst, payload);
    msgpack::put_str(dst, "qos");
    msgpack::put_uint(dst, qos as u64);
    if retain {
        msgpack::put_str(dst, "retain");
        msgpack::put_bool(dst, true);
    }
    msgpack::put_str(dst, "message_id");
    msgpack::put_bin(dst, message_id);
    if let Some(ts) = ts_us {
        msgpack::put_str(dst, "ts_us");
        msgpack::put_uint(dst, ts);
    }
    finish(dst, start, MessageType::Publish, max)
}

fn publish_len(topic_len: usize, payload_len: usize, retain: bool, ts_us: Option<u64>) -> u64 {
    use msgpack::{bin_size, str_size, uint_size};
    let mut n = 1 // map header, at most 6 entries
        + str_size(5) + str_size(topic_len)
        + str_size(7) + bin_size(payload_len)
        + str_size(3) + 1
        + str_size(10) + bin_size(16);
    if retain {
        n += str_size(6) + 1;
    }
    if let Some(ts) = ts_us {
        n += str_size(5) + uint_size(ts);
    }
    n
}

/// Patches the header at `start` once the body is written; on overflow restores `dst`.
fn finish(dst: &mut BytesMut, start: usize, t: MessageType, max: u32) -> Result<(), WireError> {
    let len = (dst.len() - start - HEADER_LEN) as u64;
    if len > u64::from(max) {
        dst.truncate(start);
        return Err(WireError::FrameTooLarge { len, max });
    }
    let header = Header {
        version: PROTOCOL_VERSION,
        msg_type: t as u8,
        flags: 0,
        body_len: len as u32,
    };
    header.encode(&mut &mut dst[start..start + HEADER_LEN]);
    Ok(())
}

fn serialize_body<W: std::io::Write>(f: &Frame, w: &mut W) {
    let mut ser = rmp_serde::Serializer::new(w).with_struct_map();
    let res = match f {
        Frame::Connect(c) => ConnectSer {
            versions: &c.versions,
            node_id: &c.node_id,
            realm: &c.realm,
            cluster: &c.cluster,
            role: c.role.as_str(),
            capabilities: &c.capabilities,
            max_frame_size: c.max_frame_size,
            correlation_id: c.correlation_id,
            public_key: key_bin(&c.proof),
            proof: signature_bin(&c.proof),
            credential: c.credential.as_deref().map(serde_bytes::Bytes::new),
        }
        .serialize(&mut ser),
        Frame::Connected(c) => ConnectedSer {
            version: c.version,
            node_id: &c.node_id,
            realm: &c.realm,
            max_frame_size: c.max_frame_size,
            max_inflight: c.max_inflight,
            keepalive_ms: c.keepalive_ms,
            correlation_id: c.correlation_id,
            public_key: key_bin(&c.proof),
            proof: signature_bin(&c.proof),
            credential: c.credential.as_deref().map(serde_bytes::Bytes::new),
        }
        .serialize(&mut ser),
        Frame::Disconnect(d) => DisconnectSer {
            code: d.code,
            reason: &d.reason,
        }
        .serialize(&mut ser),
        Frame::Ping(p) => CorrMsg {
            correlation_id: p.correlation_id,
        }
        .serialize(&mut ser),
        Frame::Pong(p) => CorrMsg {
            correlation_id: p.correlation_id,
        }
        .serialize(&mut ser),
        Frame::Error(e) => ErrorSer {
            code: e.code,
            message: &e.message,
            correlation_id: e.correlation_id,
        }
        .serialize(&mut ser),
        Frame::Subscribe(s) => SubscribeSer {
            topics: &s.topics,
            qos: s.qos as u8,
            correlation_id: s.correlation_id,
        }
        .serialize(&mut ser),
        Frame::Unsubscribe(u) => UnsubscribeSer {
            topics: &u.topics,
            correlation_id: u.correlation_id,
        }
        .serialize(&mut ser),
        Frame::PubAck(a) => PubAckSer {
            ids: &a.ids,
            no_route: &a.no_route,
        }
        .serialize(&mut ser),
        Frame::SubAck(s) => SubAckMsg {
            correlation_id: s.correlation_id,
            count: s.count,
        }
        .serialize(&mut ser),
        Frame::Call(m) => CallSer::from(m).serialize(&mut ser),
        Frame::Reply(m) => ReplySer::from(m).serialize(&mut ser),
        Frame::Register(m) => ProceduresSer::from(m).serialize(&mut ser),
        Frame::Unregister(m) => ProceduresSer::from(m).serialize(&mut ser),
        Frame::FindNode(m) => FindNodeSer::from(m).serialize(&mut ser),
        Frame::FindNodeReply(m) => FindNodeReplySer::from(m).serialize(&mut ser),
        Frame::Store(m) => StoreSer::from(m).serialize(&mut ser),
        Frame::FindValue(m) => FindValueSer::from(m).serialize(&mut ser),
        Frame::FindValueReply(m) => FindValueReplySer::from(m).serialize(&mut ser),
        Frame::StoreAck(m) => StoreAckMsg::from(m).serialize(&mut ser),
        Frame::Redirect(m) => RedirectSer::from(m).serialize(&mut ser),
        Frame::FleetView(m) => FleetViewSer::from(m).serialize(&mut ser),
        Frame::BridgePath(m) => BridgePathSer::from(m).serialize(&mut ser),
        Frame::RevocationList(m) => RevocationListSer::from(m).serialize(&mut ser),
        Frame::GossipPush(m) => GossipPushSer::from(m).serialize(&mut ser),
        Frame::GossipPull(m) => GossipPullSer::from(m).serialize(&mut ser),
        Frame::GossipPullReply(m) => GossipPullReplySer::from(m).serialize(&mut ser),
        Frame::GossipSync(m) => GossipSyncSer::from(m).serialize(&mut ser),
        Frame::GossipSyncReply(m) => GossipSyncReplySer::from(m).serialize(&mut ser),
        Frame::Publish(_) => unreachable!("publish bodies are hand-written by write_publish"),
    };
    res.expect("serializing plain fields into an infallible writer cannot fail");
}

fn check_body(t: MessageType, body: &[u8]) -> Result<(), WireError> {
    msgpack::check_single_map(body).map_err(|reason| WireError::Malformed {
        msg_type: t as u8,
        reason: reason.into(),
    })
}

fn de<'a, T: Deserialize<'a>>(t: MessageType, body: &'a [u8]) -> Result<T, WireError> {
    rmp_serde::from_slice(body).map_err(|e| WireError::Malformed {
        msg_type: t as u8,
        reason: e.to_string(),
    })
}

/// The serde-based publish decoder: used by the owned decode and, in tests, as the
/// oracle the hand-written hot-path parser (`publish.rs`) is checked against.
pub(crate) fn publish_view_of(body: &[u8]) -> Result<PublishView<'_>, WireError> {
    let w: PublishDe = de(MessageType::Publish, body)?;
    if w.retain {
        return Err(WireError::InvalidField {
            field: "retain",
            reason: "retained messages are not supported in protocol v1".into(),
        });
    }
    let message_id = w
        .message_id
        .try_into()
        .map_err(|_| bad_len("message_id", 16, w.message_id.len()))?;
    Ok(PublishView {
        topic: w.topic,
        payload: w.payload,
        qos: qos(w.qos)?,
        retain: false,
        message_id,
        ts_us: w.ts_us,
    })
}

fn qos(v: u64) -> Result<Qos, WireError> {
    Qos::from_u8(u8::try_from(v).unwrap_or(u8::MAX))
}

fn key_bin(p: &Option<super::Proof>) -> Option<&serde_bytes::Bytes> {
    p.as_ref().map(|p| serde_bytes::Bytes::new(&p.public_key))
}

fn signature_bin(p: &Option<super::Proof>) -> Option<&serde_bytes::Bytes> {
    p.as_ref().map(|p| serde_bytes::Bytes::new(&p.signature))
}

/// `"public_key"` and `"proof"` of `connect` / `connected`: both or neither.
fn proof(
    key: Option<&serde_bytes::Bytes>,
    sig: Option<&serde_bytes::Bytes>,
) -> Result<Option<super::Proof>, WireError> {
    match (key, sig) {
        (None, None) => Ok(None),
        (Some(k), Some(s)) => Ok(Some(super::Proof {
            public_key: (&k[..])
                .try_into()
                .map_err(|_| bad_len("public_key", 32, k.len()))?,
            signature: (&s[..])
                .try_into()
                .map_err(|_| bad_len("proof", 64, s.len()))?,
        })),
        _ => Err(WireError::InvalidField {
            field: "proof",
            reason: "public_key and proof go together".into(),
        }),
    }
}

/// `"credential"` of `connect` and `connected`: at most [`MAX_CREDENTIAL_BYTES`](crate::auth::credential::MAX_CREDENTIAL_BYTES).
fn credential(c: Option<&serde_bytes::Bytes>) -> Result<Option<Bytes>, WireError> {
    use crate::auth::credential::MAX_CREDENTIAL_BYTES;
    match c {
        None => Ok(None),
        Some(c) if c.len() > MAX_CREDENTIAL_BYTES => Err(WireError::InvalidField {
            field: "credential",
            reason: format!("{} bytes, at most {MAX_CREDENTIAL_BYTES}", c.len()),
        }),
        Some(c) => Ok(Some(Bytes::copy_from_slice(c))),
    }
}

fn node_id(b: &[u8]) -> Result<NodeId, WireError> {
    b.try_into().map_err(|_| bad_len("node_id", 32, b.len()))
}

fn ids(field: &'static str, list: &[&serde_bytes::Bytes]) -> Result<Vec<MessageId>, WireError> {
    list.iter()
        .map(|b| MessageId::try_from(&b[..]).map_err(|_| bad_len(field, 16, b.len())))
        .collect()
}

fn bad_len(field: &'static str, want: usize, got: usize) -> WireError {
    WireError::InvalidField {
        field,
        reason: format!("expected {want} bytes, got {got}"),
    }
}

/// Byte counter used to compute encoded lengths without a buffer.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---- serde shapes of the bodies (keys are the field names) ----

#[derive(Serialize)]
struct ConnectSer<'a> {
    versions: &'a [u8],
    #[serde(with = "serde_bytes")]
    node_id: &'a [u8],
    realm: &'a str,
    cluster: &'a str,
    role: &'a str,
    capabilities: &'a [String],
    max_frame_size: u32,
    correlation_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<&'a serde_bytes::Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proof: Option<&'a serde_bytes::Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<&'a serde_bytes::Bytes>,
}

#[derive(Deserialize)]
struct ConnectDe<'a> {
    versions: Vec<u8>,
    #[serde(with = "serde_bytes", borrow)]
    node_id: &'a [u8],
    realm: String,
    cluster: String,
    role: String,
    #[serde(default)]
    capabilities: Vec<String>,
    max_frame_size: u32,
    correlation_id: u64,
    #[serde(borrow, default)]
    public_key: Option<&'a serde_bytes::Bytes>,
    #[serde(borrow, default)]
    proof: Option<&'a serde_bytes::Bytes>,
    #[serde(borrow, default)]
    credential: Option<&'a serde_bytes::Bytes>,
}

#[derive(Serialize)]
struct ConnectedSer<'a> {
    version: u8,
    #[serde(with = "serde_bytes")]
    node_id: &'a [u8],
    realm: &'a str,
    max_frame_size: u32,
    max_inflight: u32,
    keepalive_ms: u32,
    correlation_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<&'a serde_bytes::Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proof: Option<&'a serde_bytes::Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<&'a serde_bytes::Bytes>,
}

#[derive(Deserialize)]
struct ConnectedDe<'a> {
    version: u8,
    #[serde(with = "serde_bytes", borrow)]
    node_id: &'a [u8],
    realm: String,
    max_frame_size: u32,
    max_inflight: u32,
    keepalive_ms: u32,
    correlation_id: u64,
    #[serde(borrow, default)]
    public_key: Option<&'a serde_bytes::Bytes>,
    #[serde(borrow, default)]
    proof: Option<&'a serde_bytes::Bytes>,
    #[serde(borrow, default)]
    credential: Option<&'a serde_bytes::Bytes>,
}

#[derive(Serialize)]
struct DisconnectSer<'a> {
    code: u16,
    reason: &'a str,
}

#[derive(Deserialize)]
struct DisconnectMsg {
    code: u16,
    reason: String,
}

#[derive(Serialize, Deserialize)]
struct SubAckMsg {
    correlation_id: u64,
    count: u32,
}

#[derive(Serialize, Deserialize)]
struct CorrMsg {
    correlation_id: u64,
}

#[derive(Serialize)]
struct ErrorSer<'a> {
    code: u16,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorMsg {
    code: u16,
    message: String,
    #[serde(default)]
    correlation_id: Option<u64>,
}

#[derive(Deserialize)]
struct PublishDe<'a> {
    topic: &'a str,
    #[serde(with = "serde_bytes", borrow)]
    payload: &'a [u8],
    qos: u64,
    #[serde(default)]
    retain: bool,
    #[serde(with = "serde_bytes", borrow)]
    message_id: &'a [u8],
    #[serde(default)]
    ts_us: Option<u64>,
}

#[derive(Serialize)]
struct SubscribeSer<'a> {
    topics: &'a [String],
    qos: u8,
    correlation_id: u64,
}

#[derive(Deserialize)]
struct SubscribeDe {
    topics: Vec<String>,
    qos: u64,
    correlation_id: u64,
}

#[derive(Serialize)]
struct UnsubscribeSer<'a> {
    topics: &'a [String],
    correlation_id: u64,
}

#[derive(Deserialize)]
struct UnsubscribeDe {
    topics: Vec<String>,
    correlation_id: u64,
}

#[derive(Serialize)]
struct PubAckSer<'a> {
    #[serde(serialize_with = "ser_ids")]
    ids: &'a [MessageId],
    #[serde(serialize_with = "ser_ids", skip_serializing_if = "<[_]>::is_empty")]
    no_route: &'a [MessageId],
}

#[derive(Deserialize)]
struct PubAckDe<'a> {
    #[serde(borrow)]
    ids: Vec<&'a serde_bytes::Bytes>,
    #[serde(default, borrow)]
    no_route: Vec<&'a serde_bytes::Bytes>,
}

fn ser_ids<S: serde::Serializer>(ids: &&[MessageId], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(|id| serde_bytes::Bytes::new(id)))
}
