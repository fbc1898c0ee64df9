//! G-Counter and PN-Counter (Shapiro et al. 2011, spec. 6 and 7): one monotone count per
//! actor; merge takes the per-actor maximum.

use std::collections::BTreeMap;

use super::{ActorId, CrdtError};

/// Grow-only counter: value = sum of the per-actor counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GCounter {
    /// Per-actor counts.
    pub counts: BTreeMap<ActorId, u64>,
}

impl GCounter {
    /// Adds `n` to `actor`'s count; returns the delta `{actor: new count}`.
    ///
    /// Errors: [`CrdtError::InvalidOp`] if the count would overflow u64.
    pub fn increment(&mut self, actor: ActorId, n: u64) -> Result<GCounter, CrdtError> {
        todo!()
    }
    /// Joins `other` (per-actor max); true if `self` changed.
    pub fn merge(&mut self, other: &GCounter) -> bool {
        todo!()
    }
    /// The counter's value, saturating at u64::MAX.
    pub fn value(&self) -> u64 {
        todo!()
    }
    /// The entries whose count exceeds `seen`'s (what a replica at `seen` lacks).
    pub fn delta_since(&self, seen: &GCounter) -> GCounter {
        todo!()
    }
    /// True if every count of `other` is ≤ the count here.
    pub fn covers(&self, other: &GCounter) -> bool {
        todo!()
    }
}

/// Positive-negative counter: a G-Counter of increments `p` and one of decrements `n`;
/// value = Σp − Σn.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PnCounter {
    /// Increments.
    pub p: GCounter,
    /// Decrements.
    pub n: GCounter,
}

impl PnCounter {
    /// Adds `delta` (negative to decrement); returns the delta state.
    ///
    /// Errors: [`CrdtError::InvalidOp`] on overflow.
    pub fn add(&mut self, actor: ActorId, delta: i64) -> Result<PnCounter, CrdtError> {
        todo!()
    }
    /// Joins `other`; true if `self` changed.
    pub fn merge(&mut self, other: &PnCounter) -> bool {
        todo!()
    }
    /// Σp − Σn, saturating to the i64 range.
    pub fn value(&self) -> i64 {
        todo!()
    }
}
