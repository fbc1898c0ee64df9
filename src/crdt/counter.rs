//! G-Counter and PN-Counter (Shapiro et al. 2011, spec. 6 and 7): one monotone count per
//! actor; merge takes the per-actor maximum.
//!
//! **Removal (observed reset).** A counter also keeps, per actor, the part of its count a
//! removal has observed (its *base*, ≤ the count; also a per-actor maximum under merge), and
//! reads as Σ (count − base). A removal raises every base to its count: the value becomes 0,
//! and increments the removal had not seen — concurrent ones, or later ones — still count
//! (add-wins, like an OR-Set's remove). A counter whose every base equals its count holds no
//! live content and is garbage-collected (`super::gc`). Both maps are join-semilattices
//! under per-actor max and the invariant base ≤ count survives the join (each side holds it,
//! so max(b₁, b₂) ≤ max(c₁, c₂)): merge stays a join.

use std::collections::BTreeMap;

use super::{ActorId, CrdtError};

/// Grow-only counter: value = Σ over actors of (count − base). Actors with a count of 0,
/// and bases of 0, are not stored (so equal counters are structurally equal).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GCounter {
    /// Per-actor counts.
    pub counts: BTreeMap<ActorId, u64>,
    /// Per-actor part of the count that a removal observed (≤ the actor's count; module
    /// docs). Empty for a counter never removed.
    pub base: BTreeMap<ActorId, u64>,
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
    /// Joins `other` (per-actor max of counts and of bases); true if `self` changed.
    pub fn merge(&mut self, other: &GCounter) -> bool {
        let mut changed = false;
        for (actor, &c) in &other.counts {
            if c > self.get(actor) {
                self.counts.insert(*actor, c);
                changed = true;
            }
        }
        for (actor, &b) in &other.base {
            if b > self.base_of(actor) {
                self.base.insert(*actor, b);
                changed = true;
            }
        }
        changed
    }
    /// Observed reset: raises every actor's base to its count, so the value reads 0 until
    /// the next increment (module docs). Returns the delta (every entry whose base rose,
    /// with its count); empty when nothing changed.
    pub fn reset(&mut self) -> GCounter {
        let mut delta = GCounter::default();
        for (actor, &c) in &self.counts {
            if self.base_of(actor) < c {
                delta.counts.insert(*actor, c);
                delta.base.insert(*actor, c);
            }
        }
        self.base.extend(delta.base.iter().map(|(a, &b)| (*a, b)));
        delta
    }
    /// True when no actor counts above its base: nothing live (never incremented, or
    /// everything removed).
    pub fn is_dead(&self) -> bool {
        self.counts.iter().all(|(a, &c)| c <= self.base_of(a))
    }
    /// The counter's value, Σ (count − base), saturating at u64::MAX.
    pub fn value(&self) -> u64 {
        self.counts.iter().fold(0u64, |acc, (a, &c)| {
            acc.saturating_add(c.saturating_sub(self.base_of(a)))
        })
    }
    /// The entries whose count or base exceeds `seen`'s (what a replica at `seen` lacks),
    /// each with its count and base (so every delta keeps base ≤ count).
    pub fn delta_since(&self, seen: &GCounter) -> GCounter {
        let mut out = GCounter::default();
        for (a, &c) in &self.counts {
            let b = self.base_of(a);
            if c > seen.get(a) || b > seen.base_of(a) {
                out.counts.insert(*a, c);
                if b > 0 {
                    out.base.insert(*a, b);
                }
            }
        }
        out
    }
    /// True if every count and base of `other` is ≤ the one here.
    pub fn covers(&self, other: &GCounter) -> bool {
        other.counts.iter().all(|(a, &c)| c <= self.get(a))
            && other.base.iter().all(|(a, &b)| b <= self.base_of(a))
    }
    /// `actor`'s count (0 when absent).
    pub(crate) fn get(&self, actor: &ActorId) -> u64 {
        self.counts.get(actor).copied().unwrap_or(0)
    }
    /// `actor`'s base (0 when absent).
    pub(crate) fn base_of(&self, actor: &ActorId) -> u64 {
        self.base.get(actor).copied().unwrap_or(0)
    }
    /// The exact value, Σ (count − base).
    fn sum(&self) -> u128 {
        self.counts
            .iter()
            .map(|(a, &c)| u128::from(c.saturating_sub(self.base_of(a))))
            .sum()
    }
}

/// Positive-negative counter: a G-Counter of increments `p` and one of decrements `n`;
/// value = value(p) − value(n), each Σ (count − base).
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
    /// value(p) − value(n), saturating to the i64 range.
    pub fn value(&self) -> i64 {
        let v = i128::try_from(self.p.sum()).unwrap_or(i128::MAX)
            - i128::try_from(self.n.sum()).unwrap_or(i128::MAX);
        v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }
    /// Observed reset of both halves ([`GCounter::reset`]); returns the delta.
    pub fn reset(&mut self) -> PnCounter {
        PnCounter {
            p: self.p.reset(),
            n: self.n.reset(),
        }
    }
    /// True when both halves hold nothing live ([`GCounter::is_dead`]).
    pub fn is_dead(&self) -> bool {
        self.p.is_dead() && self.n.is_dead()
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
