//! G-Counter and PN-Counter (Shapiro et al. 2011, spec. 6 and 7): one monotone count per
//! actor; merge takes the per-actor maximum.

use std::collections::BTreeMap;

use super::{ActorId, CrdtError};

/// Grow-only counter: value = sum of the per-actor counts. Actors with a count of 0 are
/// not stored (so equal counters are structurally equal).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GCounter {
    /// Per-actor counts.
    pub counts: BTreeMap<ActorId, u64>,
}

impl GCounter {
    /// Adds `n` to `actor`'s count; returns the delta `{actor: new count}`.
    ///
    /// Errors: [`CrdtError::InvalidOp`] if the count would overflow u64.
    /// Incrementing by 0 changes nothing and returns an empty delta.
    pub fn increment(&mut self, actor: ActorId, n: u64) -> Result<GCounter, CrdtError> {
        let mut delta = GCounter::default();
        if n == 0 {
            return Ok(delta);
        }
        let cur = self.get(&actor);
        let new = cur
            .checked_add(n)
            .ok_or(CrdtError::InvalidOp("counter overflow"))?;
        self.counts.insert(actor, new);
        delta.counts.insert(actor, new);
        Ok(delta)
    }
    /// Joins `other` (per-actor max); true if `self` changed.
    pub fn merge(&mut self, other: &GCounter) -> bool {
        let mut changed = false;
        for (actor, &c) in &other.counts {
            if c > self.get(actor) {
                self.counts.insert(*actor, c);
                changed = true;
            }
        }
        changed
    }
    /// The counter's value, saturating at u64::MAX.
    pub fn value(&self) -> u64 {
        self.counts
            .values()
            .fold(0u64, |acc, &c| acc.saturating_add(c))
    }
    /// The entries whose count exceeds `seen`'s (what a replica at `seen` lacks).
    pub fn delta_since(&self, seen: &GCounter) -> GCounter {
        GCounter {
            counts: self
                .counts
                .iter()
                .filter(|(a, &c)| c > seen.get(a))
                .map(|(a, &c)| (*a, c))
                .collect(),
        }
    }
    /// True if every count of `other` is ≤ the count here.
    pub fn covers(&self, other: &GCounter) -> bool {
        other.counts.iter().all(|(a, &c)| c <= self.get(a))
    }
    /// `actor`'s count (0 when absent).
    fn get(&self, actor: &ActorId) -> u64 {
        self.counts.get(actor).copied().unwrap_or(0)
    }
    /// The exact sum of the counts.
    fn sum(&self) -> u128 {
        self.counts.values().map(|&c| u128::from(c)).sum()
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
    /// A negative `delta` increments `actor`'s count in `n` by `|delta|`.
    pub fn add(&mut self, actor: ActorId, delta: i64) -> Result<PnCounter, CrdtError> {
        let mut out = PnCounter::default();
        if delta >= 0 {
            out.p = self.p.increment(actor, delta.unsigned_abs())?;
        } else {
            out.n = self.n.increment(actor, delta.unsigned_abs())?;
        }
        Ok(out)
    }
    /// Joins `other`; true if `self` changed.
    pub fn merge(&mut self, other: &PnCounter) -> bool {
        let p = self.p.merge(&other.p);
        let n = self.n.merge(&other.n);
        p || n
    }
    /// Σp − Σn, saturating to the i64 range.
    pub fn value(&self) -> i64 {
        let v = i128::try_from(self.p.sum()).unwrap_or(i128::MAX)
            - i128::try_from(self.n.sum()).unwrap_or(i128::MAX);
        v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }
    /// True if both halves cover `other`'s.
    pub(crate) fn covers(&self, other: &PnCounter) -> bool {
        self.p.covers(&other.p) && self.n.covers(&other.n)
    }
    /// [`GCounter::delta_since`] on both halves.
    pub(crate) fn delta_since(&self, seen: &PnCounter) -> PnCounter {
        PnCounter {
            p: self.p.delta_since(&seen.p),
            n: self.n.delta_since(&seen.n),
        }
    }
    /// Number of distinct actors in `p` and `n`.
    pub(crate) fn actor_count(&self) -> usize {
        self.p.counts.len()
            + self
                .n
                .counts
                .keys()
                .filter(|a| !self.p.counts.contains_key(a))
                .count()
    }
}
