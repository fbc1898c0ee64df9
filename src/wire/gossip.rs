//! Bodies of the gossip frames (0x70–0x74): delta-state CRDT replication between nodes,
//! push and push-pull-push anti-entropy. Encoded and decoded by the codec like every other
//! body (`docs/PROTOCOL.md` §5.22–§5.26, semantics in §15).
//!
//! Source: the Macula design v0.16 (wire section) for the message ids. The wire layer does
//! not interpret the CRDT payloads: `state`, `digest` and `wants` are opaque byte strings
//! produced and read by the CRDT module. Every body names the store it belongs to
//! (`realm`, `scope`) and the sending node (`sender`, which receivers check against the
//! authenticated peer id). Bounds are checked on decode ([`WireError::InvalidField`]); the
//! encoder does not check them, so senders keep within them.
//!
//! [`WireError::InvalidField`]: super::WireError::InvalidField

use bytes::Bytes;

use super::NodeId;

/// Largest `state`, `digest` or `wants` in a gossip frame, in bytes (64 KiB). Larger
/// states are split into parts (`part` / `parts`).
pub const MAX_GOSSIP_STATE: usize = 65_536;

/// Longest `realm` or `scope` in a gossip frame, in bytes (both must also be non-empty).
pub const MAX_GOSSIP_NAME: usize = 255;

/// Longest `from_key` / `to_key` in a gossip frame, in bytes.
pub const MAX_GOSSIP_KEY: usize = 256;

/// `gossip_push` (0x70): a CRDT delta pushed to a peer, unsolicited and unanswered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipPush {
    /// `"realm"` (str, 1..=[`MAX_GOSSIP_NAME`] bytes): the realm the state belongs to.
    pub realm: String,
    /// `"scope"` (str, 1..=[`MAX_GOSSIP_NAME`] bytes): the replicated store, a cluster name
    /// or a bridge level store name.
    pub scope: String,
    /// `"sender"`: the sending node's id (bin, exactly 32 bytes); receivers check that it is
    /// the authenticated peer.
    pub sender: NodeId,
    /// `"part"` (uint16): index of this part, below `parts`.
    pub part: u16,
    /// `"parts"` (uint16, at least 1): how many parts the delta was split into.
    pub parts: u16,
    /// `"state"` (bin, at most [`MAX_GOSSIP_STATE`] bytes): an encoded CRDT delta, opaque to
    /// the wire layer; a zero-copy slice of the frame after decoding.
    pub state: Bytes,
}

/// `gossip_pull` (0x71): opens an anti-entropy round (A → B) with a digest of the sender's
/// keys in `[from_key, to_key)`. Answered by [`GossipPullReply`] with the same `round`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipPull {
    /// `"realm"`: as in [`GossipPush`].
    pub realm: String,
    /// `"scope"`: as in [`GossipPush`].
    pub scope: String,
    /// `"sender"`: as in [`GossipPush`].
    pub sender: NodeId,
    /// `"round"` (uint64): chosen by the puller, echoed in every frame of the round.
    pub round: u64,
    /// `"from_key"` (str, at most [`MAX_GOSSIP_KEY`] bytes): first key of the range
    /// (inclusive; `""` is the start of the key space).
    pub from_key: String,
    /// `"to_key"` (optional str, at most [`MAX_GOSSIP_KEY`] bytes): end of the range
    /// (exclusive); absent or nil: up to the end of the key space.
    pub to_key: Option<String>,
    /// `"digest"` (bin, at most [`MAX_GOSSIP_STATE`] bytes): an encoded digest of the
    /// sender's keys in the range; zero-copy.
    pub digest: Bytes,
}

/// `gossip_pull_reply` (0x72): answer to [`GossipPull`] (B → A): the state A lacks and the
/// keys for which B lacks something. May be split into parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipPullReply {
    /// `"realm"`: as in [`GossipPush`].
    pub realm: String,
    /// `"scope"`: as in [`GossipPush`].
    pub scope: String,
    /// `"sender"`: as in [`GossipPush`].
    pub sender: NodeId,
    /// `"round"` (uint64): copied from the pull.
    pub round: u64,
    /// `"from_key"`: copied from the pull.
    pub from_key: String,
    /// `"to_key"` (optional): copied from the pull.
    pub to_key: Option<String>,
    /// `"state"` (bin, at most [`MAX_GOSSIP_STATE`] bytes): encoded CRDT state the puller
    /// lacks; zero-copy.
    pub state: Bytes,
    /// `"wants"` (bin, at most [`MAX_GOSSIP_STATE`] bytes): an encoded partial digest, the
    /// replier's summaries of the keys where it lacks something; zero-copy.
    pub wants: Bytes,
    /// `"part"` (uint16): index of this part, below `parts`.
    pub part: u16,
    /// `"parts"` (uint16, at least 1): how many parts the reply was split into.
    pub parts: u16,
}

/// `gossip_sync` (0x73): third leg of the round (A → B): the state the replier asked for in
/// `wants`. Answered by [`GossipSyncReply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipSync {
    /// `"realm"`: as in [`GossipPush`].
    pub realm: String,
    /// `"scope"`: as in [`GossipPush`].
    pub scope: String,
    /// `"sender"`: as in [`GossipPush`].
    pub sender: NodeId,
    /// `"round"` (uint64): the round's id.
    pub round: u64,
    /// `"state"` (bin, at most [`MAX_GOSSIP_STATE`] bytes): encoded CRDT state; zero-copy.
    pub state: Bytes,
    /// `"part"` (uint16): index of this part, below `parts`.
    pub part: u16,
    /// `"parts"` (uint16, at least 1): how many parts the state was split into.
    pub parts: u16,
}

/// `gossip_sync_reply` (0x74): closes the round (B → A).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipSyncReply {
    /// `"realm"`: as in [`GossipPush`].
    pub realm: String,
    /// `"scope"`: as in [`GossipPush`].
    pub scope: String,
    /// `"sender"`: as in [`GossipPush`].
    pub sender: NodeId,
    /// `"round"` (uint64): copied from the sync.
    pub round: u64,
    /// `"merged"` (uint32): number of keys whose value changed when the state was merged.
    pub merged: u32,
}
