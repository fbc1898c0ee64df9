//! Bodies of the DHT frames (0x40–0x45) and the RPC frames (0x20, 0x21, 0x26, 0x27) that
//! issue 3 needs: Kademlia queries and their replies, and calls routed to registered
//! procedures. Encoded and decoded by the codec like every other body (`docs/PROTOCOL.md`
//! §5.12–§5.21, semantics in §12 and §13).
//!
//! Sources: the Kademlia paper (Maymounkov & Mazières, 2002) for `FIND_NODE`, `STORE` and
//! `FIND_VALUE`; the Macula design v0.16 (wire section) for the message ids and the RPC
//! concepts, with its defects fixed: every query carries a correlation id and every call a
//! hop count. Bounds on list and value sizes are checked on decode ([`WireError::Malformed`]
//! for a list that is too long, [`WireError::InvalidField`] for a value that is too large);
//! the encoder does not check them, so senders keep within them.

use std::net::SocketAddr;

use bytes::Bytes;

use super::{NodeId, WireError};
use crate::dht::{Contact, Id};

/// Most contacts in a `find_node_reply` / `find_value_reply` `nodes` list (the reference
/// node sends at most k = 20; the bound leaves room for larger k).
pub const MAX_CONTACTS: usize = 64;

/// Most records in a `find_value_reply` `values` list.
pub const MAX_RECORDS: usize = 32;

/// Largest DHT record value, in bytes (64 KiB), in `store` and in `find_value_reply`.
pub const MAX_DHT_VALUE: usize = 65_536;

/// Most procedure names in one `register` / `unregister`.
pub const MAX_PROCEDURES: usize = 256;

/// Largest `hops` a node accepts in a [`Call`]; a call that arrives with more is answered
/// with a [`Reply`] carrying [`RpcError::HOPS_EXCEEDED`] instead of being forwarded.
pub const MAX_HOPS: u8 = 16;

/// A DHT contact as carried on the wire: a map `{node_id, addr}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireContact {
    /// `"node_id"`: the node's id, SHA-256 of its Ed25519 public key (bin, exactly 32 bytes).
    pub node_id: NodeId,
    /// `"addr"`: where the node accepts QUIC connections, `"ip:port"` (str; `[v6]:port` for
    /// IPv6). Not parsed by the codec; [`Contact::try_from`] parses it.
    pub addr: String,
}

impl From<&Contact> for WireContact {
    fn from(c: &Contact) -> Self {
        WireContact {
            node_id: *c.id.as_bytes(),
            addr: c.addr.to_string(),
        }
    }
}

impl TryFrom<&WireContact> for Contact {
    type Error = WireError;

    /// Errors: [`WireError::InvalidField`] (`addr`) when `addr` is not a socket address.
    fn try_from(c: &WireContact) -> Result<Self, WireError> {
        let addr: SocketAddr = c.addr.parse().map_err(|e| WireError::InvalidField {
            field: "addr",
            reason: format!("{:?} is not an ip:port address: {e}", c.addr),
        })?;
        Ok(Contact {
            id: Id::from_bytes(c.node_id),
            addr,
        })
    }
}

/// `find_node` (0x40): asks for the contacts closest to `target` the receiver knows
/// (Kademlia `FIND_NODE`). Answered by [`FindNodeReply`] with the same correlation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindNode {
    /// `"correlation_id"` (uint64): echoed in the reply.
    pub correlation_id: u64,
    /// `"target"`: the id looked up (bin, exactly 32 bytes).
    pub target: NodeId,
    /// `"sender"`: the querying node, so the receiver can add it to its routing table.
    pub sender: WireContact,
}

/// `find_node_reply` (0x41): answer to [`FindNode`] (or to [`FindValue`] when the receiver
/// holds no value: see [`FindValueReply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindNodeReply {
    /// `"correlation_id"` (uint64): copied from the query.
    pub correlation_id: u64,
    /// `"nodes"` (array of contact maps, at most [`MAX_CONTACTS`]): the closest contacts the
    /// receiver knows, closest first; may be empty.
    pub nodes: Vec<WireContact>,
}

/// `store` (0x42): asks the receiver to keep a record under `key` (Kademlia `STORE`).
/// Answered by [`StoreAck`]; a refusal comes as an `error` frame carrying the correlation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// `"correlation_id"` (uint64): echoed in the [`StoreAck`] or the `error`.
    pub correlation_id: u64,
    /// `"key"`: the record key, `SHA-256("macula-dht-v1\0" ‖ realm ‖ 0x00 ‖ name)`
    /// (bin, exactly 32 bytes).
    pub key: NodeId,
    /// `"value"`: the record value (bin, at most [`MAX_DHT_VALUE`] bytes, else
    /// [`WireError::InvalidField`]); a zero-copy slice of the frame after decoding.
    pub value: Bytes,
    /// `"ttl_ms"` (uint32): how long the record lives, in milliseconds from receipt.
    pub ttl_ms: u32,
    /// `"publisher"`: node id of the node that published the record (bin, exactly 32 bytes).
    pub publisher: NodeId,
    /// `"name"` (str, optional, at most [`crate::rpc::MAX_PROCEDURE_LEN`] bytes): the
    /// procedure the record advertises, when `key` is a procedure key. A receiver that checks
    /// register permissions (`docs/AUTH.md`) needs it and checks that `key` is its key.
    pub name: Option<String>,
}

/// `store_ack` (0x45): answer to [`Store`]. Errors (a full store, a bad record) are not
/// acknowledged with `stored: false` but reported in an `error` frame carrying the
/// correlation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreAck {
    /// `"correlation_id"` (uint64): copied from the [`Store`].
    pub correlation_id: u64,
    /// `"stored"` (bool): true when the record was stored or refreshed; false when the
    /// receiver accepted the request but chose not to keep the record (it MAY decline, e.g.
    /// when it is not among the k closest nodes to the key). Refusals are `error` frames.
    pub stored: bool,
}

/// `find_value` (0x43): asks for the records under `key`, or else the closest contacts
/// (Kademlia `FIND_VALUE`). Answered by [`FindValueReply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindValue {
    /// `"correlation_id"` (uint64): echoed in the reply.
    pub correlation_id: u64,
    /// `"key"`: the record key (bin, exactly 32 bytes).
    pub key: NodeId,
    /// `"sender"`: the querying node.
    pub sender: WireContact,
    /// `"path"` (optional, default `[]`; array of bin, exactly 32 bytes each, at most
    /// [`MAX_PATH`]): the bridges this lookup has already climbed through, lowest first. Empty
    /// inside a cluster and on the first escalation; each bridge appends its own id before
    /// asking its parent, and refuses a lookup whose path already names it (a loop in a
    /// misconfigured parent chain, see [`crate::escalation::EscalationPath`]).
    pub path: Vec<NodeId>,
}

/// Most bridge ids in a [`FindValue`] or [`BridgePath`] `path` (as
/// [`crate::escalation::MAX_VISITED`]).
pub const MAX_PATH: usize = 16;

/// `bridge_path` (0x09): a bridge tells a child bridge the chain of bridges above that child,
/// nearest first: the sender itself, then the sender's parent, and so on up to the top. Sent
/// on a child-bridge link when it comes up and again whenever the sender's own chain changes
/// (its parent link came up or went down). A bridge whose parent's path names the bridge
/// itself is in a loop: it closes its parent link with `LOOP_DETECTED`. A bridge refuses a
/// child bridge that is itself or one of its ancestors, with the same code
/// (`docs/PROTOCOL.md` §5.29).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePath {
    /// `"path"` (array of bin, exactly 32 bytes each, 1..=[`MAX_PATH`]): the sender first.
    pub path: Vec<NodeId>,
}

/// One record in a [`FindValueReply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRecord {
    /// `"value"`: the record value (bin, at most [`MAX_DHT_VALUE`] bytes); zero-copy.
    pub value: Bytes,
    /// `"publisher"`: node id of the record's publisher (bin, exactly 32 bytes).
    pub publisher: NodeId,
    /// `"ttl_ms"` (uint32): the record's **remaining** lifetime at the replier, in ms.
    pub ttl_ms: u32,
}

/// `find_value_reply` (0x44): answer to [`FindValue`]: the records held under the key
/// and/or the closest contacts (both lists may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindValueReply {
    /// `"correlation_id"` (uint64): copied from the query.
    pub correlation_id: u64,
    /// `"values"` (optional, default `[]`; array of record maps, at most [`MAX_RECORDS`]).
    pub values: Vec<WireRecord>,
    /// `"nodes"` (optional, default `[]`; array of contact maps, at most [`MAX_CONTACTS`]).
    pub nodes: Vec<WireContact>,
    /// `"depth"` (optional uint8, default 0): how many bridge levels above the answering
    /// bridge the lookup climbed before an answer was found (0: the bridge asked answered
    /// itself, from its subtree index or its cache). Feeds `macula_dht_routing_hops`.
    pub depth: u8,
}

/// `call` (0x20): invokes `procedure` on one of its providers. Answered by exactly one
/// [`Reply`] with the same `call_id`, which travels back along the reverse path of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `"call_id"` (uint64): chosen by the sender of this hop, unique among its calls in
    /// flight on the connection; echoed in the [`Reply`]. A bridge forwarding the call
    /// picks its own id toward the next hop and maps the reply back.
    pub call_id: u64,
    /// `"procedure"` (str): the procedure name, e.g. `io.macula.echo`.
    pub procedure: String,
    /// `"args"` (bin): opaque arguments; a zero-copy slice of the frame after decoding.
    pub args: Bytes,
    /// `"timeout_ms"` (uint32): how long the caller waits for the reply, in milliseconds;
    /// forwarders pass on what remains.
    pub timeout_ms: u32,
    /// `"origin"`: node id of the caller's node (bin, exactly 32 bytes).
    pub origin: NodeId,
    /// `"hops"` (uint8): bridges crossed so far, incremented by each bridge; a receiver
    /// seeing more than [`MAX_HOPS`] answers [`RpcError::HOPS_EXCEEDED`].
    pub hops: u8,
    /// `"target"` (optional bin, exactly 32 bytes): node id of the provider's node, chosen by
    /// the caller's node after its lookup. Nodes and bridges route the call toward it; absent
    /// only on the first hop (client → its node), where the node chooses.
    pub target: Option<NodeId>,
}

/// Why a call failed: the `error` map of a [`Reply`], `{code, message}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rpc error {code}: {message}")]
pub struct RpcError {
    /// `"code"` (uint16): one of the well-known codes below, or an application code.
    pub code: u16,
    /// `"message"` (str): human-readable text, may be empty.
    pub message: String,
}

impl RpcError {
    /// No provider is registered for the procedure.
    pub const NO_PROVIDER: u16 = 1;
    /// No reply arrived within `timeout_ms`.
    pub const TIMEOUT: u16 = 2;
    /// Every provider tried failed (unreachable or closed).
    pub const ALL_PROVIDERS_FAILED: u16 = 3;
    /// The handler ran and returned an error; `message` is its text.
    pub const REMOTE: u16 = 4;
    /// The call arrived with `hops` above [`MAX_HOPS`] (a routing loop).
    pub const HOPS_EXCEEDED: u16 = 5;
    /// The provider does not know the procedure (e.g. unregistered meanwhile).
    pub const UNKNOWN_PROCEDURE: u16 = 6;
    /// The call's `target` cannot be reached from this hop (its node or the link toward it is
    /// gone, or no route is known). The caller's node fails over to another provider and drops
    /// the target from its cache.
    pub const UNREACHABLE: u16 = 7;
    /// This hop has too many calls in flight (`rpc.max_pending`); retry later.
    pub const OVERLOADED: u16 = 8;
    /// The call is malformed (bad procedure name, zero timeout, missing target on a hop that
    /// needs one).
    pub const INVALID: u16 = 9;
    /// The caller's credential does not permit calling the procedure (or, for `$crdt.update`,
    /// writing the key); `docs/AUTH.md`, "Permissions".
    pub const PERMISSION_DENIED: u16 = 10;
    /// A bound of the node's replicated store was reached (keys, bytes of the store or of one
    /// set, elements, value size; `docs/ERRORS.md`): the write was not applied. Retrying the
    /// same write fails the same way until something is removed.
    pub const LIMIT_EXCEEDED: u16 = 11;

    /// An error with the given code and message.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }
}

/// `reply` (0x21): the outcome of a [`Call`]. On the wire a map with `call_id` and exactly
/// one of `ok` (bin) or `error` (`{code, message}`); both or neither → [`WireError::Malformed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `"call_id"` (uint64): copied from the [`Call`].
    pub call_id: u64,
    /// `"ok"` (bin, zero-copy) for a result, `"error"` (map) for a failure.
    pub result: Result<Bytes, RpcError>,
}

/// `register` (0x26): client → node: this connection provides these procedures. Answered
/// by a `suback` carrying the correlation id and the number of procedures the connection
/// provides after the request (or an `error` with the correlation id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// `"correlation_id"` (uint64): echoed in the `suback`.
    pub correlation_id: u64,
    /// `"procedures"` (array of str, at most [`MAX_PROCEDURES`]): procedure names;
    /// registering a name already held is not an error.
    pub procedures: Vec<String>,
}

/// `unregister` (0x27): client → node: this connection no longer provides these procedures.
/// Answered like [`Register`] by a `suback` with the count now registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unregister {
    /// `"correlation_id"` (uint64): echoed in the `suback`.
    pub correlation_id: u64,
    /// `"procedures"` (array of str, at most [`MAX_PROCEDURES`]): names exactly as
    /// registered; unknown ones are ignored.
    pub procedures: Vec<String>,
}
