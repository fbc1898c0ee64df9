//! Bodies of the fleet frames (0x07–0x08): a bridge worker redirecting a node to the worker
//! that owns its cluster, and the fleet's member list, gossiped between workers and given to
//! nodes as the directory of workers (`docs/PROTOCOL.md` §5.27–§5.28, semantics in
//! `docs/FLEET.md`).
//!
//! Bounds are checked on decode ([`WireError::InvalidField`]); the encoder does not check
//! them, so senders keep within them.
//!
//! [`WireError::InvalidField`]: super::WireError::InvalidField

use super::NodeId;

/// Most members in one [`FleetView`]. A fleet is a few to a few hundred workers; a view
/// announcing more is refused, so a peer cannot grow the member table without bound.
pub const MAX_FLEET_MEMBERS: usize = 1024;

/// Longest fleet name, address or reason string in a fleet frame, in bytes.
pub const MAX_FLEET_STRING: usize = 255;

/// `redirect` (0x07): the worker that received a node's session does not own the node's
/// cluster (or is draining) and names the worker that does. Sent instead of `connected` to
/// refuse a `connect`, or during a session to move the node. The node reconnects to `addr`
/// after `delay_ms` and the sender closes the session once the node has left (or after a
/// grace period).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `"owner"`: the id of the worker to connect to (bin, exactly 32 bytes).
    pub owner: NodeId,
    /// `"addr"` (str, 1..=[`MAX_FLEET_STRING`] bytes): its QUIC address, `host:port`.
    pub addr: String,
    /// `"delay_ms"` (uint32): how long to wait before reconnecting (jitter chosen by the
    /// sender, so a draining worker's nodes do not all arrive at once).
    pub delay_ms: u32,
    /// `"reason"` (str, at most [`MAX_FLEET_STRING`] bytes): `"connect"`, `"rebalance"` or
    /// `"drain"`.
    pub reason: String,
}

/// A member's status in a [`FleetView`], u8 on the wire. Precedence follows SWIM
/// (Das, Gupta & Motivala 2002, §4.2): for one incarnation, `Suspect` overrides `Alive`,
/// `Draining` overrides both, and `Dead` overrides everything; a higher incarnation
/// overrides any status of a lower one except `Dead`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum MemberStatus {
    /// Serving and owning its share of clusters.
    Alive = 0,
    /// Silent past the suspicion threshold; still owns its clusters until confirmed dead
    /// or it refutes the suspicion with a higher incarnation.
    Suspect = 1,
    /// Shutting down: owns nothing, redirects its nodes, still forwards.
    Draining = 2,
    /// Confirmed dead (or left): owns nothing.
    Dead = 3,
}

impl MemberStatus {
    /// The status for a wire byte; `None` above 3.
    pub fn from_u8(b: u8) -> Option<MemberStatus> {
        match b {
            0 => Some(MemberStatus::Alive),
            1 => Some(MemberStatus::Suspect),
            2 => Some(MemberStatus::Draining),
            3 => Some(MemberStatus::Dead),
            _ => None,
        }
    }

    /// Stable lowercase name, used as a metrics label and in `/fleet`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Draining => "draining",
            MemberStatus::Dead => "dead",
        }
    }
}

/// One worker in a [`FleetView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetMember {
    /// `"id"`: the worker's node id (bin, exactly 32 bytes).
    pub id: NodeId,
    /// `"addr"` (str, 1..=[`MAX_FLEET_STRING`] bytes): its QUIC address, `host:port`.
    pub addr: String,
    /// `"weight"` (uint32, 1..=1000): relative share of clusters (100 = normal).
    pub weight: u32,
    /// `"incarnation"` (uint64): raised only by the member itself, to refute a suspicion or
    /// announce a new status.
    pub incarnation: u64,
    /// `"status"` (uint8, see [`MemberStatus`]).
    pub status: MemberStatus,
}

/// `fleet_view` (0x08): the sender's view of its fleet. Between workers it is the membership
/// gossip (sent when it changes and every second); to a node it is the directory of workers,
/// from which the node computes its cluster's owner and connects there first next time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetView {
    /// `"fleet"` (str, 1..=[`MAX_FLEET_STRING`] bytes): the fleet's name.
    pub fleet: String,
    /// `"config"` (uint64): digest of the settings every worker of a fleet must share
    /// (name, level, realms, hashing scheme); a worker refuses a peer whose digest differs.
    pub config: u64,
    /// `"sender"`: the sending worker's id (bin, exactly 32 bytes).
    pub sender: NodeId,
    /// `"members"` (array of maps, at most [`MAX_FLEET_MEMBERS`]).
    pub members: Vec<FleetMember>,
}
