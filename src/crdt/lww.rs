//! Last-writer-wins register (Shapiro et al. 2011, spec. 8 "LWW-Register"), ordered by a
//! hybrid logical clock with ties broken by actor id.

use bytes::Bytes;

use super::{ActorId, Hlc};

/// A register holding one value; the write with the greatest `(ts, actor)` wins.
/// The default register (ts 0, empty value) is "never written" and loses to every write.
/// Two writes with equal `(ts, actor)` but different values (only a misbehaving writer
/// produces them) are ordered by value, so the merge stays a join.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LwwRegister {
    /// The current value.
    pub value: Bytes,
    /// When it was written.
    pub ts: Hlc,
    /// Who wrote it (tie breaker).
    pub actor: ActorId,
}

impl LwwRegister {
    /// Writes `value` at `ts` by `actor`; returns the delta (the new register itself).
    /// A write with a smaller `(ts, actor)` than the current one changes nothing.
    /// (When the write loses, the returned delta is the unchanged current register.)
    pub fn set(&mut self, value: Bytes, ts: Hlc, actor: ActorId) -> LwwRegister {
        let write = LwwRegister { value, ts, actor };
        self.merge(&write);
        self.clone()
    }
    /// Joins `other` into `self`; true if `self` changed.
    pub fn merge(&mut self, other: &LwwRegister) -> bool {
        if other.order_key() > self.order_key() {
            *self = other.clone();
            true
        } else {
            false
        }
    }
    /// The total order of registers: `(ts, actor)`, then the value.
    fn order_key(&self) -> (Hlc, &ActorId, &[u8]) {
        (self.ts, &self.actor, &self.value)
    }
    /// True if it was ever written.
    pub fn is_set(&self) -> bool {
        self.ts != Hlc::default()
    }
}
