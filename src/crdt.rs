//! Conflict-free replicated data types for shared state without consensus (issue 4).
//!
//! Pure code: no tokio, no clock reads (callers pass the wall clock in). The types follow
//! the causal, delta-state formulation:
//! - Shapiro, Preguiça, Baquero, Zawirski, "Conflict-free Replicated Data Types" (SSS 2011)
//!   and the companion technical report "A comprehensive study of CRDTs" (INRIA RR-7506):
//!   G-Counter, PN-Counter, LWW-Register, OR-Set.
//! - Almeida, Shoker, Baquero, "Delta State Replicated Data Types" (JPDC 2018): every
//!   mutator returns a *delta* (a small state) that joins like a full state; dot stores and
//!   causal contexts make the OR-Set's removes tombstone-free (its add-wins "AWORSet").
//! - Bieniusa et al., "An Optimized Conflict-free Replicated Set" (2012): removes keep only
//!   the causal context, not per-element tombstones.
//! - Kulkarni et al., "Logical Physical Clocks" (OPODIS 2014): the hybrid logical clock
//!   ([`Hlc`]) that orders LWW writes.
//!
//! Shapes: an actor is a 32-byte replica id ([`ActorId`], a node id or a bridge-minted id);
//! a [`Dot`] is `(actor, counter ≥ 1)`; a [`DotSet`] is a set of dots kept as per-actor
//! ranges (a causal context); a [`CrdtMap`] maps key names to one [`Crdt`] each.
//! The wire encoding (MessagePack with an actor table) is in `docs/CRDT.md`.

mod clock;
mod counter;
mod dots;
mod encode;
mod gc;
mod lww;
mod map;
mod orset;
mod own;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_gc;
pub mod writers;

pub use clock::{Hlc, HlcClock, MAX_CLOCK_SKEW_MS};
pub use counter::{GCounter, PnCounter};
pub use dots::{ActorId, Dot, DotSet};
pub use lww::LwwRegister;
pub use map::{approx_size, Crdt, CrdtMap, Digest, Kind, Limits, MergeStats, Op, Summary, Value};
pub use orset::OrSet;

/// Why a CRDT operation, merge or decode was refused. Each variant is counted by the
/// gossip service under its [`CrdtError::as_str`] label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrdtError {
    /// An operation or a merged value's type differs from the key's existing type.
    #[error("key {key:?} holds a {have}, not a {got}")]
    TypeMismatch {
        /// The key name.
        key: String,
        /// The kind stored locally.
        have: Kind,
        /// The kind of the operation or incoming value.
        got: Kind,
    },
    /// An encoded state or digest is not valid (bad MessagePack, bad index, bad range, …).
    #[error("malformed state: {0}")]
    Malformed(String),
    /// A state, key, value or element exceeds a [`Limits`] bound.
    #[error("{what} exceeds the limit of {limit}")]
    TooLarge {
        /// What was too large ("keys", "elements", "value bytes", "key bytes", …).
        what: &'static str,
        /// The bound.
        limit: usize,
    },
    /// A timestamp is more than [`MAX_CLOCK_SKEW_MS`] ahead of the local wall clock.
    #[error("timestamp {remote_ms} ms is {ahead_ms} ms ahead of the local clock")]
    ClockSkew {
        /// The remote wall-clock part, ms since the Unix epoch.
        remote_ms: u64,
        /// How far ahead of local time it is, ms.
        ahead_ms: u64,
    },
    /// A G-Counter was asked to decrease, or a counter would overflow u64.
    #[error("invalid operation: {0}")]
    InvalidOp(&'static str),
    /// An incoming state claims more for the receiving replica's own actor than that replica
    /// has written (a counter entry above its own, a dot it never made, a register it never
    /// wrote): only an actor writes its own entries, so the key is forged (by the sender or
    /// by whoever it relays). That key is refused; the label of its count.
    #[error("key {key:?} claims entries of this replica's own actor that it never wrote")]
    Forged {
        /// The first key found forged.
        key: String,
    },
    /// An incoming key in the reserved namespace (`$…`) that is not one of the system keys
    /// its store holds, or a system key of the wrong kind (`docs/GOSSIP.md`).
    #[error("key {key:?} is reserved")]
    Reserved {
        /// The key name.
        key: String,
    },
    /// The sender's credential does not permit writing the key (`docs/AUTH.md`,
    /// "Permissions"); the key is left out, the rest is merged.
    #[error("{why}")]
    Denied {
        /// The key name.
        key: String,
        /// The permission error's text.
        why: String,
    },
    /// A bound on the whole store or on one writer's share of it is reached (`what`:
    /// `store bytes`, `writer keys`, `writer bytes`, `set bytes`); nothing was changed.
    #[error("{what} quota of {limit} reached")]
    Quota {
        /// Which quota.
        what: &'static str,
        /// The bound (bytes or keys).
        limit: usize,
    },
}

impl CrdtError {
    /// Stable snake_case label for metrics: `type_mismatch`, `malformed`, `too_large`,
    /// `clock_skew`, `invalid_op`, `forged_actor`, `reserved_key`, `denied`, `quota`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CrdtError::TypeMismatch { .. } => "type_mismatch",
            CrdtError::Malformed(_) => "malformed",
            CrdtError::TooLarge { .. } => "too_large",
            CrdtError::ClockSkew { .. } => "clock_skew",
            CrdtError::InvalidOp(_) => "invalid_op",
            CrdtError::Forged { .. } => "forged_actor",
            CrdtError::Reserved { .. } => "reserved_key",
            CrdtError::Denied { .. } => "denied",
            CrdtError::Quota { .. } => "quota",
        }
    }
}
