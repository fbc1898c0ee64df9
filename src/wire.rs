//! Wire protocol v1: the frame header, the message set and their MessagePack bodies.
//!
//! A frame is an 8-byte [`Header`] followed by a body of `body_len` bytes holding one
//! MessagePack map with string keys. Frames travel on one bidirectional QUIC stream per
//! connection, opened by the connecting side; [`FrameDecoder`] cuts them out of the byte
//! stream (coalesced and split frames both work) and [`RawFrame::decode`] /
//! [`RawFrame::publish_view`] turn a body into a [`Frame`] or a borrowed [`PublishView`].
//!
//! This module is pure: no I/O, no clocks, no tokio. The normative, language-neutral
//! description is `docs/PROTOCOL.md`; the source is the Macula design v0.16, wire section,
//! with its defects fixed (framing over a stream, a maximum frame size, one canonical key
//! schema, acknowledgements, error frames and correlation ids).

use bytes::{BufMut, Bytes, BytesMut};

mod codec;
mod dht_rpc;
mod fleet;
mod framing;
mod gossip;
mod msgpack;
mod publish;
mod revocation;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_dht_rpc;
#[cfg(test)]
mod tests_fleet;
#[cfg(test)]
mod tests_gossip;
#[cfg(test)]
mod tests_revocation;

pub use codec::{encode_publish, publish_body_len, PublishView, RawFrame};
pub use dht_rpc::{
    BridgePath, Call, FindNode, FindNodeReply, FindValue, FindValueReply, Register, Reply,
    RpcError, Store, StoreAck, Unregister, WireContact, WireRecord, MAX_CONTACTS, MAX_DHT_VALUE,
    MAX_HOPS, MAX_PATH, MAX_PROCEDURES, MAX_RECORDS,
};
pub use fleet::{
    FleetMember, FleetView, MemberStatus, Redirect, MAX_FLEET_MEMBERS, MAX_FLEET_STRING,
};
pub use framing::FrameDecoder;
pub use gossip::{
    GossipPull, GossipPullReply, GossipPush, GossipSync, GossipSyncReply, MAX_GOSSIP_KEY,
    MAX_GOSSIP_NAME, MAX_GOSSIP_STATE,
};
pub use revocation::{RevocationList, MAX_REVOCATION_LIST};

/// The only protocol version this build speaks (header byte 0, `Connect.versions`).
pub const PROTOCOL_VERSION: u8 = 1;

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 8;

/// Default largest accepted frame BODY, in bytes (1 MiB); the header is not counted.
/// Each side announces its own limit in `Connect.max_frame_size` / `Connected.max_frame_size`.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 1 << 20;

/// End-to-end message identifier, 16 bytes: bytes 0..8 are the publisher's random session id,
/// bytes 8..16 a big-endian u64 sequence number the publisher increments per message.
/// It is minted once by the original publisher and never rewritten by a relay (de-duplication key).
pub type MessageId = [u8; 16];

/// A 256-bit node identity (Macula design: 256-bit ids, XOR distance).
pub type NodeId = [u8; 32];

/// Builds a [`MessageId`] from a publisher session id and a sequence number.
pub fn message_id(session: [u8; 8], seq: u64) -> MessageId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&session);
    id[8..].copy_from_slice(&seq.to_be_bytes());
    id
}

/// Splits a [`MessageId`] into its publisher session id and sequence number.
pub fn message_id_parts(id: &MessageId) -> ([u8; 8], u64) {
    let mut session = [0u8; 8];
    session.copy_from_slice(&id[..8]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&id[8..]);
    (session, u64::from_be_bytes(seq))
}

/// Picks the version to speak from the versions a peer offered in `Connect.versions`:
/// the highest version both sides speak, or `None` (answer [`ErrorCode::UnsupportedVersion`]).
pub fn negotiate_version(offered: &[u8]) -> Option<u8> {
    offered
        .contains(&PROTOCOL_VERSION)
        .then_some(PROTOCOL_VERSION)
}

/// The 8-byte frame header.
///
/// Layout: byte 0 version, byte 1 message type, byte 2 flags (sent as 0 in v1, ignored on
/// receive), byte 3 reserved (must be 0; [`FrameDecoder`] rejects anything else with
/// [`WireError::Reserved`]), bytes 4..8 body length in bytes as u32 big-endian.
/// [`Header::decode`] does not validate; [`FrameDecoder::next_frame`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version of the frame (byte 0); [`PROTOCOL_VERSION`] in v1.
    pub version: u8,
    /// Raw message type (byte 1); see [`MessageType`] and [`is_reserved_macula_type`].
    pub msg_type: u8,
    /// Flags (byte 2): 0 when sent by v1, ignored on receive.
    pub flags: u8,
    /// Length of the body that follows the header, in bytes.
    pub body_len: u32,
}

impl Header {
    /// Reads a header from its 8 bytes without validating it (the reserved byte is dropped).
    pub fn decode(buf: &[u8; HEADER_LEN]) -> Header {
        Header {
            version: buf[0],
            msg_type: buf[1],
            flags: buf[2],
            body_len: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        }
    }

    /// Writes the 8 header bytes to `dst`, with the reserved byte set to 0.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(self.version);
        dst.put_u8(self.msg_type);
        dst.put_u8(self.flags);
        dst.put_u8(0);
        dst.put_u32(self.body_len);
    }
}

/// The message types v1 implements (header byte 1). Ids follow the Macula design v0.16
/// (`store_ack`, `register` and `unregister` are new ids). The DHT and RPC types are
/// implemented by the DHT/RPC services (issue 3); until those exist, nodes and bridges
/// refuse them with a non-fatal `PROTOCOL` error. The gossip types (0x70–0x74) carry
/// delta-state CRDT replication; components that do not replicate state refuse or ignore
/// them like any other frame they do not handle.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Opens a session (client or node → relay). Body: [`Connect`].
    Connect = 0x01,
    /// Announces an orderly close. Body: [`Disconnect`].
    Disconnect = 0x02,
    /// Application round-trip probe (liveness is QUIC's, `docs/PROTOCOL.md` §9). Body: [`Ping`].
    Ping = 0x03,
    /// Answer to a ping. Body: [`Pong`].
    Pong = 0x04,
    /// Accepts a session (answer to `Connect`). Body: [`Connected`].
    Connected = 0x05,
    /// Reports an error. Body: [`ErrorFrame`].
    Error = 0x06,
    /// A bridge worker sends a node to the worker owning its cluster. Body: [`Redirect`].
    Redirect = 0x07,
    /// A worker's view of its fleet (membership gossip, node directory). Body: [`FleetView`].
    FleetView = 0x08,
    /// A bridge tells a child bridge the chain of bridges above it (loop detection). Body:
    /// [`BridgePath`].
    BridgePath = 0x09,
    /// An operator-signed revocation list, spread between the bridges and nodes of a realm
    /// (`docs/AUTH.md`, "Revocation"). Body: [`RevocationList`].
    RevocationList = 0x0A,
    /// Publishes one message. Body: [`Publish`].
    Publish = 0x10,
    /// Adds subscription patterns. Body: [`Subscribe`].
    Subscribe = 0x11,
    /// Removes subscription patterns. Body: [`Unsubscribe`].
    Unsubscribe = 0x12,
    /// Acknowledges QoS 1 publishes. Body: [`PubAck`].
    PubAck = 0x14,
    /// Answers `Subscribe` / `Unsubscribe` (and `Register` / `Unregister`). Body: [`SubAck`].
    SubAck = 0x15,
    /// Invokes a procedure. Body: [`Call`].
    Call = 0x20,
    /// Outcome of a call. Body: [`Reply`].
    Reply = 0x21,
    /// Client → node: provides procedures. Body: [`Register`].
    Register = 0x26,
    /// Client → node: withdraws procedures. Body: [`Unregister`].
    Unregister = 0x27,
    /// Kademlia FIND_NODE. Body: [`FindNode`].
    FindNode = 0x40,
    /// Answer to `FindNode`. Body: [`FindNodeReply`].
    FindNodeReply = 0x41,
    /// Kademlia STORE. Body: [`Store`].
    Store = 0x42,
    /// Kademlia FIND_VALUE. Body: [`FindValue`].
    FindValue = 0x43,
    /// Answer to `FindValue`. Body: [`FindValueReply`].
    FindValueReply = 0x44,
    /// Answer to `Store`. Body: [`StoreAck`].
    StoreAck = 0x45,
    /// Pushes a CRDT delta. Body: [`GossipPush`].
    GossipPush = 0x70,
    /// Opens an anti-entropy round with a digest of a key range. Body: [`GossipPull`].
    GossipPull = 0x71,
    /// Answer to `GossipPull`. Body: [`GossipPullReply`].
    GossipPullReply = 0x72,
    /// The state the puller's peer asked for. Body: [`GossipSync`].
    GossipSync = 0x73,
    /// Answer to `GossipSync`, closes the round. Body: [`GossipSyncReply`].
    GossipSyncReply = 0x74,
}

impl MessageType {
    /// Every message type v1 implements, in id order.
    pub const ALL: [MessageType; 30] = [
        MessageType::Connect,
        MessageType::Disconnect,
        MessageType::Ping,
        MessageType::Pong,
        MessageType::Connected,
        MessageType::Error,
        MessageType::Redirect,
        MessageType::FleetView,
        MessageType::BridgePath,
        MessageType::RevocationList,
        MessageType::Publish,
        MessageType::Subscribe,
        MessageType::Unsubscribe,
        MessageType::PubAck,
        MessageType::SubAck,
        MessageType::Call,
        MessageType::Reply,
        MessageType::Register,
        MessageType::Unregister,
        MessageType::FindNode,
        MessageType::FindNodeReply,
        MessageType::Store,
        MessageType::FindValue,
        MessageType::FindValueReply,
        MessageType::StoreAck,
        MessageType::GossipPush,
        MessageType::GossipPull,
        MessageType::GossipPullReply,
        MessageType::GossipSync,
        MessageType::GossipSyncReply,
    ];

    /// The type for a raw header byte, `None` when v1 does not implement it.
    pub fn from_u8(b: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as u8 == b)
    }

    /// Stable snake_case name ("connect", "publish", "puback", …), used as a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageType::Connect => "connect",
            MessageType::Disconnect => "disconnect",
            MessageType::Ping => "ping",
            MessageType::Pong => "pong",
            MessageType::Connected => "connected",
            MessageType::Error => "error",
            MessageType::Redirect => "redirect",
            MessageType::FleetView => "fleet_view",
            MessageType::BridgePath => "bridge_path",
            MessageType::RevocationList => "revocation_list",
            MessageType::Publish => "publish",
            MessageType::Subscribe => "subscribe",
            MessageType::Unsubscribe => "unsubscribe",
            MessageType::PubAck => "puback",
            MessageType::SubAck => "suback",
            MessageType::Call => "call",
            MessageType::Reply => "reply",
            MessageType::Register => "register",
            MessageType::Unregister => "unregister",
            MessageType::FindNode => "find_node",
            MessageType::FindNodeReply => "find_node_reply",
            MessageType::Store => "store",
            MessageType::FindValue => "find_value",
            MessageType::FindValueReply => "find_value_reply",
            MessageType::StoreAck => "store_ack",
            MessageType::GossipPush => "gossip_push",
            MessageType::GossipPull => "gossip_pull",
            MessageType::GossipPullReply => "gossip_pull_reply",
            MessageType::GossipSync => "gossip_sync",
            MessageType::GossipSyncReply => "gossip_sync_reply",
        }
    }
}

/// True for the other message ids of the Erlang-era Macula (v0.16) that v1 does not implement:
/// 0x13, 0x22–0x25, 0x30–0x32, 0x50–0x57, 0x60–0x61, 0x80–0x89 (0x70–0x74 are the gossip
/// types, implemented).
/// A receiver answers [`ErrorCode::UnknownType`] and keeps the stream open, as for any other
/// unknown type; this only tells the two cases apart (for logs and metrics).
pub fn is_reserved_macula_type(b: u8) -> bool {
    matches!(
        b,
        0x13 | 0x22..=0x25 | 0x30..=0x32 | 0x50..=0x57 | 0x60..=0x61 | 0x80..=0x89
    )
}

/// Error codes carried in [`ErrorFrame::code`] and [`Disconnect::code`]. The same u16 values
/// are used as QUIC application close codes (RFC 9000 §19.19, CONNECTION_CLOSE 0x1d).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// Protocol violation (bad reserved byte, frame out of sequence, …). Fatal.
    Protocol = 1,
    /// A header declared a body larger than the receiver's maximum. Fatal.
    FrameTooLarge = 2,
    /// No common protocol version (header byte 0 or `Connect.versions`). Fatal.
    UnsupportedVersion = 3,
    /// Message type not implemented; the frame is skipped and the stream stays usable.
    UnknownType = 4,
    /// The body is not a valid map for its type (missing key, wrong type, bad length).
    MalformedBody = 5,
    /// The realm named in `Connect` is not served here. Fatal.
    UnknownRealm = 6,
    /// A topic or pattern is not valid syntax.
    InvalidTopic = 7,
    /// A frame other than `Connect` arrived before the session was established. Fatal.
    NotConnected = 8,
    /// QoS 2 or higher was requested; v1 supports 0 and 1.
    UnsupportedQos = 9,
    /// More unacknowledged QoS 1 publishes than the announced `max_inflight`.
    InflightExceeded = 10,
    /// The peer did not read fast enough and its queue overflowed. Fatal.
    SlowConsumer = 11,
    /// The node is draining; reconnect elsewhere. Fatal.
    ShuttingDown = 12,
    /// An internal error in the node.
    Internal = 13,
    /// The stream ended inside a frame. Fatal.
    Truncated = 14,
    /// A configured limit (subscriptions, topics per frame, …) was exceeded.
    LimitExceeded = 15,
    /// A second `Connect` on an established session. Fatal.
    AlreadyConnected = 16,
    /// A bridge worker of another fleet, or of the same fleet with different settings,
    /// tried to peer. Fatal.
    FleetMismatch = 17,
    /// A bridge's parent chain would form a loop: a child bridge that is this bridge or one
    /// of its ancestors, or a parent whose path names this bridge. Fatal.
    LoopDetected = 18,
    /// The peer did not prove the node id it claims (no or a bad `proof` in `connect` or
    /// `connected`, `docs/AUTH.md`), or its credential was refused. Fatal.
    Unauthenticated = 19,
    /// A proven, admitted peer asked for something its credential does not grant (a role
    /// it does not have at `connect`). Fatal before `connected`.
    PermissionDenied = 20,
}

impl ErrorCode {
    /// Every error code, in numeric order.
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::Protocol,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownType,
        ErrorCode::MalformedBody,
        ErrorCode::UnknownRealm,
        ErrorCode::InvalidTopic,
        ErrorCode::NotConnected,
        ErrorCode::UnsupportedQos,
        ErrorCode::InflightExceeded,
        ErrorCode::SlowConsumer,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::Truncated,
        ErrorCode::LimitExceeded,
        ErrorCode::AlreadyConnected,
        ErrorCode::FleetMismatch,
        ErrorCode::LoopDetected,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
    ];

    /// The code for a raw u16, `None` if unknown (keep the raw value, e.g. in [`ErrorFrame`]).
    pub fn from_u16(v: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u16 == v)
    }

    /// Stable snake_case name, used as a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::Protocol => "protocol",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::UnknownRealm => "unknown_realm",
            ErrorCode::InvalidTopic => "invalid_topic",
            ErrorCode::NotConnected => "not_connected",
            ErrorCode::UnsupportedQos => "unsupported_qos",
            ErrorCode::InflightExceeded => "inflight_exceeded",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::Truncated => "truncated",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::AlreadyConnected => "already_connected",
            ErrorCode::FleetMismatch => "fleet_mismatch",
            ErrorCode::LoopDetected => "loop_detected",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
        }
    }

    /// True when the connection must be closed after reporting this error (send the
    /// `Error` frame, then close with this code); false when the stream stays usable.
    /// `PROTOCOL` is fatal except for a frame of a type its link does not carry, which is
    /// answered and dropped (`docs/PROTOCOL.md` §4, §6); before `CONNECTED` every error is
    /// fatal (§7).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ErrorCode::FrameTooLarge
                | ErrorCode::UnsupportedVersion
                | ErrorCode::Protocol
                | ErrorCode::Truncated
                | ErrorCode::UnknownRealm
                | ErrorCode::NotConnected
                | ErrorCode::ShuttingDown
                | ErrorCode::SlowConsumer
                | ErrorCode::AlreadyConnected
                | ErrorCode::FleetMismatch
                | ErrorCode::LoopDetected
                | ErrorCode::Unauthenticated
        )
    }
}

/// Delivery guarantee, u8 on the wire. 2 (exactly once) and above are rejected with
/// [`WireError::UnsupportedQos`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// 0: fire and forget; may be dropped under load, never acknowledged.
    AtMostOnce = 0,
    /// 1: acknowledged with [`PubAck`], re-sent with the same message id until acknowledged;
    /// duplicates are removed by message id.
    AtLeastOnce = 1,
}

impl Qos {
    /// The QoS for a wire value; `Err(UnsupportedQos)` for 2 and above.
    pub fn from_u8(v: u8) -> Result<Self, WireError> {
        match v {
            0 => Ok(Qos::AtMostOnce),
            1 => Ok(Qos::AtLeastOnce),
            qos => Err(WireError::UnsupportedQos { qos }),
        }
    }
}

/// What the connecting side is; wire string `"client"` or `"node"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An application client (publishes and subscribes for itself).
    Client,
    /// A Macula node (relay / bridge) peering with this one.
    Node,
}

impl Role {
    /// The wire string, `"client"` or `"node"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Node => "node",
        }
    }
}

/// A side's proof of its node id (`docs/AUTH.md`, "Identity"): its Ed25519 public key,
/// whose SHA-256 is the node id it claims, and its signature over the session transcript
/// (the side's context string and this connection's TLS exporter; [`crate::identity`]).
/// On the wire: the keys `"public_key"` (bin, 32 bytes) and `"proof"` (bin, 64 bytes) of
/// `connect` and `connected`, both present or both absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Ed25519 public key (RFC 8032 §5.1.5 encoding).
    pub public_key: [u8; 32],
    /// Ed25519 signature (RFC 8032 §5.1.6) over the transcript.
    pub signature: [u8; 64],
}

/// `connect` (0x01): first frame of the connecting side. Answered by [`Connected`] or by an
/// [`ErrorFrame`] with the same `correlation_id` followed by close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// `"versions"`: protocol versions the sender speaks (array of u8).
    pub versions: Vec<u8>,
    /// `"node_id"`: the sender's identity (bin, exactly 32 bytes).
    pub node_id: NodeId,
    /// `"realm"`: the tenant namespace, reverse-DNS (e.g. `io.macula`).
    pub realm: String,
    /// `"cluster"`: the sender's cluster name; may be `""` for clients.
    pub cluster: String,
    /// `"role"`: `"client"` or `"node"`.
    pub role: Role,
    /// `"capabilities"` (optional, default empty): feature names the sender supports.
    pub capabilities: Vec<String>,
    /// `"max_frame_size"`: the largest body, in bytes, the sender accepts.
    pub max_frame_size: u32,
    /// `"correlation_id"`: echoed in the answer.
    pub correlation_id: u64,
    /// `"public_key"` + `"proof"`: the proof of `node_id` (required by the acceptor; the
    /// session code fills it in, [`crate::session::open_session`]).
    pub proof: Option<Proof>,
    /// `"credential"` (optional bin, at most [`crate::auth::credential::MAX_CREDENTIAL_BYTES`]):
    /// the operator-signed credential admitting the sender (`docs/AUTH.md`).
    pub credential: Option<Bytes>,
}

/// `connected` (0x05): the accepting side's answer to [`Connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// `"version"`: the negotiated protocol version, used for all following frames.
    pub version: u8,
    /// `"node_id"`: the answering node's identity (bin, exactly 32 bytes).
    pub node_id: NodeId,
    /// `"realm"`: the realm the session is bound to.
    pub realm: String,
    /// `"max_frame_size"`: the largest body, in bytes, the sender of this frame accepts.
    pub max_frame_size: u32,
    /// `"max_inflight"`: QoS 1 unacknowledged publishes the receiver of this frame may have
    /// outstanding toward the sender.
    pub max_inflight: u32,
    /// `"keepalive_ms"`: ping interval in milliseconds when the connection is idle.
    pub keepalive_ms: u32,
    /// `"correlation_id"`: copied from the [`Connect`].
    pub correlation_id: u64,
    /// `"public_key"` + `"proof"`: the acceptor's proof of `node_id`.
    pub proof: Option<Proof>,
    /// `"credential"` (bin, optional, at most 2,048 bytes): the acceptor's credential, sent by
    /// a node accepting a mesh link so that the dialling node admits it as the acceptor
    /// admitted the dialler (PROTOCOL §7a, `docs/AUTH.md`). Absent elsewhere.
    pub credential: Option<Bytes>,
}

/// `disconnect` (0x02): orderly close; the sender closes the connection after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// `"code"`: 0 for a normal close, else an [`ErrorCode`] value.
    pub code: u16,
    /// `"reason"`: human-readable text, may be empty.
    pub reason: String,
}

/// `ping` (0x03): liveness probe, answered by a [`Pong`] with the same id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// `"correlation_id"`: echoed in the pong.
    pub correlation_id: u64,
}

/// `pong` (0x04): answer to a [`Ping`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    /// `"correlation_id"`: copied from the ping.
    pub correlation_id: u64,
}

/// `error` (0x06): reports an error; if [`ErrorCode::is_fatal`] the sender closes afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// `"code"`: raw error code, may be one this build does not know ([`ErrorCode::from_u16`]).
    pub code: u16,
    /// `"message"`: human-readable text, may be empty.
    pub message: String,
    /// `"correlation_id"` (optional): the id of the request that failed, if it had one.
    pub correlation_id: Option<u64>,
}

/// `publish` (0x10): one message for a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// `"topic"`: dot-separated topic (syntax is checked by the topic module, not here).
    pub topic: String,
    /// `"payload"`: opaque bytes (bin); a zero-copy slice of the frame after decoding.
    pub payload: Bytes,
    /// `"qos"`: 0 or 1.
    pub qos: Qos,
    /// `"retain"` (optional, default false): v1 has no retained messages, so decoding
    /// `true` fails with [`WireError::InvalidField`].
    pub retain: bool,
    /// `"message_id"`: end-to-end id (bin, exactly 16 bytes), the de-duplication key.
    pub message_id: MessageId,
    /// `"ts_us"` (optional): publisher wall clock, µs since the Unix epoch, for latency metrics.
    pub ts_us: Option<u64>,
}

/// `subscribe` (0x11): adds patterns; answered by [`SubAck`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// `"topics"`: patterns (`*` one segment, `**` zero or more).
    pub topics: Vec<String>,
    /// `"qos"`: the highest QoS to deliver with (0 or 1).
    pub qos: Qos,
    /// `"correlation_id"`: echoed in the suback.
    pub correlation_id: u64,
}

/// `unsubscribe` (0x12): removes patterns; answered by [`SubAck`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// `"topics"`: patterns exactly as subscribed.
    pub topics: Vec<String>,
    /// `"correlation_id"`: echoed in the suback.
    pub correlation_id: u64,
}

/// `puback` (0x14): acknowledges QoS 1 publishes, batched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAck {
    /// `"ids"`: ids delivered or taken into custody (array of bin 16).
    pub ids: Vec<MessageId>,
    /// `"no_route"` (optional, default empty): ids accepted but no subscriber had interest.
    pub no_route: Vec<MessageId>,
}

/// `suback` (0x15): answer to [`Subscribe`] / [`Unsubscribe`], and to [`Register`] /
/// [`Unregister`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// `"correlation_id"`: copied from the request.
    pub correlation_id: u64,
    /// `"count"`: number of patterns (for `register` / `unregister`: procedures) the
    /// connection now holds.
    pub count: u32,
}

/// Any v1 frame, decoded and owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// See [`Connect`].
    Connect(Connect),
    /// See [`Connected`].
    Connected(Connected),
    /// See [`Disconnect`].
    Disconnect(Disconnect),
    /// See [`Ping`].
    Ping(Ping),
    /// See [`Pong`].
    Pong(Pong),
    /// See [`ErrorFrame`].
    Error(ErrorFrame),
    /// See [`Redirect`].
    Redirect(Redirect),
    /// See [`FleetView`].
    FleetView(FleetView),
    /// See [`BridgePath`].
    BridgePath(BridgePath),
    /// See [`RevocationList`].
    RevocationList(RevocationList),
    /// See [`Publish`].
    Publish(Publish),
    /// See [`Subscribe`].
    Subscribe(Subscribe),
    /// See [`Unsubscribe`].
    Unsubscribe(Unsubscribe),
    /// See [`PubAck`].
    PubAck(PubAck),
    /// See [`SubAck`].
    SubAck(SubAck),
    /// See [`Call`].
    Call(Call),
    /// See [`Reply`].
    Reply(Reply),
    /// See [`Register`].
    Register(Register),
    /// See [`Unregister`].
    Unregister(Unregister),
    /// See [`FindNode`].
    FindNode(FindNode),
    /// See [`FindNodeReply`].
    FindNodeReply(FindNodeReply),
    /// See [`Store`].
    Store(Store),
    /// See [`FindValue`].
    FindValue(FindValue),
    /// See [`FindValueReply`].
    FindValueReply(FindValueReply),
    /// See [`StoreAck`].
    StoreAck(StoreAck),
    /// See [`GossipPush`].
    GossipPush(GossipPush),
    /// See [`GossipPull`].
    GossipPull(GossipPull),
    /// See [`GossipPullReply`].
    GossipPullReply(GossipPullReply),
    /// See [`GossipSync`].
    GossipSync(GossipSync),
    /// See [`GossipSyncReply`].
    GossipSyncReply(GossipSyncReply),
}

impl Frame {
    /// The message type of this frame.
    pub fn msg_type(&self) -> MessageType {
        match self {
            Frame::Connect(_) => MessageType::Connect,
            Frame::Connected(_) => MessageType::Connected,
            Frame::Disconnect(_) => MessageType::Disconnect,
            Frame::Ping(_) => MessageType::Ping,
            Frame::Pong(_) => MessageType::Pong,
            Frame::Error(_) => MessageType::Error,
            Frame::Redirect(_) => MessageType::Redirect,
            Frame::FleetView(_) => MessageType::FleetView,
            Frame::BridgePath(_) => MessageType::BridgePath,
            Frame::RevocationList(_) => MessageType::RevocationList,
            Frame::Publish(_) => MessageType::Publish,
            Frame::Subscribe(_) => MessageType::Subscribe,
            Frame::Unsubscribe(_) => MessageType::Unsubscribe,
            Frame::PubAck(_) => MessageType::PubAck,
            Frame::SubAck(_) => MessageType::SubAck,
            Frame::Call(_) => MessageType::Call,
            Frame::Reply(_) => MessageType::Reply,
            Frame::Register(_) => MessageType::Register,
            Frame::Unregister(_) => MessageType::Unregister,
            Frame::FindNode(_) => MessageType::FindNode,
            Frame::FindNodeReply(_) => MessageType::FindNodeReply,
            Frame::Store(_) => MessageType::Store,
            Frame::FindValue(_) => MessageType::FindValue,
            Frame::FindValueReply(_) => MessageType::FindValueReply,
            Frame::StoreAck(_) => MessageType::StoreAck,
            Frame::GossipPush(_) => MessageType::GossipPush,
            Frame::GossipPull(_) => MessageType::GossipPull,
            Frame::GossipPullReply(_) => MessageType::GossipPullReply,
            Frame::GossipSync(_) => MessageType::GossipSync,
            Frame::GossipSyncReply(_) => MessageType::GossipSyncReply,
        }
    }

    /// Appends header + body to `dst`.
    ///
    /// Errors: [`WireError::FrameTooLarge`] if the body exceeds `u32::MAX` bytes; `dst` is
    /// then left as it was. Checking the peer's announced `max_frame_size` is the caller's
    /// job: use [`Frame::encode_limited`] or compare [`Frame::encoded_len`] first.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), WireError> {
        self.encode_limited(dst, u32::MAX)
    }

    /// Like [`Frame::encode`], but fails with [`WireError::FrameTooLarge`] (leaving `dst`
    /// unchanged) when the body would exceed `max_body` bytes, e.g. the peer's `max_frame_size`.
    pub fn encode_limited(&self, dst: &mut BytesMut, max_body: u32) -> Result<(), WireError> {
        codec::encode_frame(self, dst, max_body)
    }

    /// Exact encoded length in bytes, header included (what [`Frame::encode`] appends).
    pub fn encoded_len(&self) -> usize {
        codec::encoded_len(self)
    }

    /// Encodes into a fresh buffer. Panics only if the body exceeds `u32::MAX` bytes,
    /// which no frame built from in-memory values below 4 GiB can reach.
    pub fn to_bytes(&self) -> Bytes {
        let mut dst = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut dst)
            .expect("frame body fits in u32 (frames are built from in-memory values)");
        dst.freeze()
    }
}

/// Errors of the wire codec and framing. Map to a wire code with [`WireError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Header byte 0 is not [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {got}")]
    UnsupportedVersion {
        /// The version byte received.
        got: u8,
    },
    /// Header byte 3 (reserved) is not 0.
    #[error("reserved header byte is {byte:#04x}, must be 0")]
    Reserved {
        /// The reserved byte received.
        byte: u8,
    },
    /// The body is larger than the limit, in bytes.
    #[error("frame body of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Declared or produced body length, in bytes.
        len: u64,
        /// The limit in force, in bytes.
        max: u32,
    },
    /// The message type is not implemented by v1 (decoding only; framing passes it through).
    #[error("unknown message type {msg_type:#04x}")]
    UnknownType {
        /// The raw message type.
        msg_type: u8,
    },
    /// The body is not a valid MessagePack map for its type.
    #[error("malformed body for message type {msg_type:#04x}: {reason}")]
    Malformed {
        /// The raw message type.
        msg_type: u8,
        /// What was wrong.
        reason: String,
    },
    /// A field decoded but its value is not allowed (wrong byte length, unknown role, …).
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// The map key.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// QoS 2 or higher.
    #[error("unsupported qos {qos}")]
    UnsupportedQos {
        /// The QoS received (saturated at 255).
        qos: u8,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame with {buffered} bytes buffered")]
    Truncated {
        /// Bytes left in the decoder.
        buffered: usize,
    },
}

impl WireError {
    /// The [`ErrorCode`] to report to the peer for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            WireError::Reserved { .. } => ErrorCode::Protocol,
            WireError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            WireError::UnknownType { .. } => ErrorCode::UnknownType,
            WireError::Malformed { .. } | WireError::InvalidField { .. } => {
                ErrorCode::MalformedBody
            }
            WireError::UnsupportedQos { .. } => ErrorCode::UnsupportedQos,
            WireError::Truncated { .. } => ErrorCode::Truncated,
        }
    }
}
