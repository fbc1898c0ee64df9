//! The gossip engine that replicates one [`CrdtMap`](crate::crdt::CrdtMap) between the edge nodes of a cluster
//! (issue 4). Pure (sans-IO): no tokio, no clock reads, no sockets — the async driver passes
//! the wall clock (`now_ms`) and a random number generator in, and sends the returned
//! [`Message`]s as wire frames 0x70–0x74.
//!
//! Two mechanisms, after Almeida, Shoker, Baquero, "Delta State Replicated Data Types"
//! (JPDC 2018), Algorithm 1, with a rumor-mongering buffer (Demers et al., "Epidemic
//! Algorithms for Replicated Database Maintenance", PODC 1987):
//! - **Push** (every [`GossipConfig::push_interval`]): the join of the buffered deltas —
//!   local updates and the incoming states that changed the store, each kept for
//!   [`GossipConfig::push_rounds`] rounds — goes to [`GossipConfig::fanout`] random peers.
//! - **Anti-entropy** (every [`GossipConfig::anti_entropy_interval`]): push-pull-push with the
//!   peer synced longest ago. `Pull{digest}` → `PullReply{delta the puller lacks, wants}` →
//!   `Sync{delta for the wants}` → `SyncReply`. Large digests and states are split into key
//!   ranges and parts bounded by [`GossipConfig::max_message_bytes`].
//!
//! Every incoming state is decoded under [`Limits`], its far-future registers are dropped
//! (clock skew), and only then merged; a refused message never modifies the store.
//! [`sim`] is a deterministic discrete-event simulation of a whole cluster.

mod engine;
pub mod sim;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_guard;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::crdt::{CrdtError, Limits};

pub use engine::Gossip;

/// Peers are named by their 32-byte node id.
pub type PeerId = crate::crdt::ActorId;

/// Most messages per peer remembered for duplicate detection.
pub const DUPLICATE_WINDOW: usize = 8;
/// Most anti-entropy rounds open at once, in each direction (rounds we started, rounds we
/// answered); the oldest is forgotten first.
pub const MAX_OPEN_ROUNDS: usize = 64;

/// Tuning of one [`Gossip`] engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipConfig {
    /// The driver's push timer (default 1 s).
    pub push_interval: Duration,
    /// Peers per push round (default 3).
    pub fanout: usize,
    /// The driver's anti-entropy timer (default 30 s). Open rounds older than twice this are
    /// forgotten.
    pub anti_entropy_interval: Duration,
    /// Push rounds a delta stays in the buffer (default 4).
    pub push_rounds: u32,
    /// Bound on each encoded state or digest in one message (default 60,000 bytes).
    pub max_message_bytes: usize,
    /// Bounds on the store and on every decoded state and digest.
    pub limits: Limits,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            push_interval: Duration::from_secs(1),
            fanout: 3,
            anti_entropy_interval: Duration::from_secs(30),
            push_rounds: 4,
            max_message_bytes: 60_000,
            limits: Limits::default(),
        }
    }
}

/// One message between two engines; maps 1:1 onto the wire frames 0x70–0x74 (the driver
/// adds realm, scope and sender).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// 0x70: part `part` of `parts` of the join of the sender's push buffer (an encoded
    /// [`CrdtMap`](crate::crdt::CrdtMap)).
    Push {
        /// Index of this part, from 0.
        part: u16,
        /// Number of parts of this push.
        parts: u16,
        /// Encoded [`CrdtMap`](crate::crdt::CrdtMap).
        state: Bytes,
    },
    /// 0x71: the sender's digest of its keys in `[from_key, to_key)` (`None` = no upper
    /// bound).
    Pull {
        /// Anti-entropy round, chosen by the puller.
        round: u64,
        /// First key of the range (inclusive).
        from_key: String,
        /// End of the range (exclusive); `None` = to the end.
        to_key: Option<String>,
        /// Encoded [`Digest`](crate::crdt::Digest) of the puller's keys in the range.
        digest: Bytes,
    },
    /// 0x72: answer to a [`Message::Pull`]: what the puller lacks in the range, and what
    /// the answerer wants from the puller.
    PullReply {
        /// The Pull's round.
        round: u64,
        /// The Pull's range start.
        from_key: String,
        /// The Pull's range end.
        to_key: Option<String>,
        /// Encoded [`CrdtMap`](crate::crdt::CrdtMap): a part of the delta the puller lacks.
        state: Bytes,
        /// Encoded partial [`Digest`](crate::crdt::Digest) of keys the answerer wants (with
        /// its own summaries); empty bytes when this part carries none.
        wants: Bytes,
        /// Index of this part within the range, from 0.
        part: u16,
        /// Number of parts for the range.
        parts: u16,
    },
    /// 0x73: the puller's delta for the answerer's wants.
    Sync {
        /// The round.
        round: u64,
        /// Encoded [`CrdtMap`](crate::crdt::CrdtMap).
        state: Bytes,
        /// Index of this part, from 0.
        part: u16,
        /// Number of parts of this sync.
        parts: u16,
    },
    /// 0x74: acknowledges a [`Message::Sync`] part.
    SyncReply {
        /// The round.
        round: u64,
        /// Keys the Sync part changed.
        merged: u32,
    },
}

impl Message {
    /// Wire type of the message (0x70–0x74).
    pub fn frame_type(&self) -> u8 {
        match self {
            Message::Push { .. } => 0x70,
            Message::Pull { .. } => 0x71,
            Message::PullReply { .. } => 0x72,
            Message::Sync { .. } => 0x73,
            Message::SyncReply { .. } => 0x74,
        }
    }

    /// Stable name: `push`, `pull`, `pull_reply`, `sync`, `sync_reply`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Message::Push { .. } => "push",
            Message::Pull { .. } => "pull",
            Message::PullReply { .. } => "pull_reply",
            Message::Sync { .. } => "sync",
            Message::SyncReply { .. } => "sync_reply",
        }
    }

    /// Approximate body size on the wire: the byte fields plus a few bytes per scalar
    /// (what [`GossipStats::bytes_sent`] / [`GossipStats::bytes_received`] count).
    pub fn payload_len(&self) -> usize {
        match self {
            Message::Push { state, .. } => state.len() + 6,
            Message::Pull {
                from_key,
                to_key,
                digest,
                ..
            } => 9 + from_key.len() + to_key.as_ref().map_or(1, |k| k.len() + 1) + digest.len(),
            Message::PullReply {
                from_key,
                to_key,
                state,
                wants,
                ..
            } => {
                15 + from_key.len()
                    + to_key.as_ref().map_or(1, |k| k.len() + 1)
                    + state.len()
                    + wants.len()
            }
            Message::Sync { state, .. } => 15 + state.len(),
            Message::SyncReply { .. } => 14,
        }
    }

    /// A 64-bit hash of every field (duplicate detection).
    pub(crate) fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        // `DefaultHasher::new()` has fixed keys: the same message hashes alike every time.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.frame_type().hash(&mut h);
        match self {
            Message::Push { part, parts, state } => (part, parts, state).hash(&mut h),
            Message::Pull {
                round,
                from_key,
                to_key,
                digest,
            } => (round, from_key, to_key, digest).hash(&mut h),
            Message::PullReply {
                round,
                from_key,
                to_key,
                state,
                wants,
                part,
                parts,
            } => (round, from_key, to_key, state, wants, part, parts).hash(&mut h),
            Message::Sync {
                round,
                state,
                part,
                parts,
            } => (round, state, part, parts).hash(&mut h),
            Message::SyncReply { round, merged } => (round, merged).hash(&mut h),
        }
        h.finish()
    }
}

/// Why an incoming message was refused. A refused message never modifies the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    /// A malformed or oversized state or digest, an invalid part number or key range.
    #[error(transparent)]
    Crdt(#[from] CrdtError),
    /// The sender is not in the peer set.
    #[error("message from a peer that is not in the peer set")]
    UnknownPeer,
    /// Byte-identical to one of the last [`DUPLICATE_WINDOW`] messages from this peer
    /// (SyncReplies, which carry no state, are not checked).
    #[error("duplicate of a recent message from this peer")]
    Duplicate,
    /// A PullReply, Sync or SyncReply for a round (or key range) we have no record of.
    #[error("reply for an unknown anti-entropy round")]
    UnexpectedReply,
}

impl GossipError {
    /// Stable snake_case label for metrics: the [`CrdtError::as_str`] label for
    /// [`GossipError::Crdt`], else `unknown_peer`, `duplicate`, `unexpected_reply`.
    pub fn as_str(&self) -> &'static str {
        match self {
            GossipError::Crdt(e) => e.as_str(),
            GossipError::UnknownPeer => "unknown_peer",
            GossipError::Duplicate => "duplicate",
            GossipError::UnexpectedReply => "unexpected_reply",
        }
    }
}

/// Monotone counters of one engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Push rounds that sent something.
    pub push_rounds: u64,
    /// Anti-entropy rounds started (Pulls sent).
    pub anti_entropy_rounds: u64,
    /// Messages returned for sending (ticks and replies).
    pub messages_sent: u64,
    /// [`Message::payload_len`] of the messages sent.
    pub bytes_sent: u64,
    /// [`Message::payload_len`] of the messages handled (refused ones included).
    pub bytes_received: u64,
    /// Incoming non-empty states that changed something.
    pub deltas_merged: u64,
    /// Incoming non-empty states that changed nothing.
    pub redundant: u64,
    /// Keys with concurrent updates met while merging incoming states.
    pub conflicts: u64,
    /// Keys garbage-collected: keys left with no live content (emptied sets, removed
    /// registers and counters), moved to the store's retired keys ([`CrdtMap::retire_dead`](crate::crdt::CrdtMap::retire_dead)).
    pub keys_retired: u64,
    /// Refusals by [`GossipError::as_str`] / [`CrdtError::as_str`] label: whole messages,
    /// and single keys (type mismatch, limits, clock skew) of otherwise merged states.
    pub refused: BTreeMap<&'static str, u64>,
}

impl GossipStats {
    pub(crate) fn refuse(&mut self, label: &'static str) {
        *self.refused.entry(label).or_default() += 1;
    }
}
