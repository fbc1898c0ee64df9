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
mod lww;
mod map;
mod orset;
#[cfg(test)]
mod tests;

pub use clock::{Hlc, HlcClock, MAX_CLOCK_SKEW_MS};
pub use counter::{GCounter, PnCounter};
pub use dots::{ActorId, Dot, DotSet};
pub use lww::LwwRegister;
pub use map::{Crdt, CrdtMap, Digest, Kind, Limits, MergeStats, Op, Summary, Value};
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
}

impl CrdtError {
    /// Stable snake_case label for metrics: `type_mismatch`, `malformed`, `too_large`,
    /// `clock_skew`, `invalid_op`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CrdtError::TypeMismatch { .. } => "type_mismatch",
            CrdtError::Malformed(_) => "malformed",
            CrdtError::TooLarge { .. } => "too_large",
            CrdtError::ClockSkew { .. } => "clock_skew",
            CrdtError::InvalidOp(_) => "invalid_op",
        }
    }
}
