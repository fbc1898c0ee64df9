//! Last-writer-wins register (Shapiro et al. 2011, spec. 8 "LWW-Register"), ordered by a
//! hybrid logical clock with ties broken by actor id.
//!
//! **Removal.** A removal is a write like any other, of a *tombstone* (no value) stamped at
//! the time of the removal: it wins over older writes and loses to newer ones, so a register
//! whose winning write is a tombstone reads as absent and is garbage-collected
//! (`super::gc`), and a later write brings the key back.

use bytes::Bytes;

use super::{ActorId, Hlc};

/// A register holding one value; the write with the greatest `(ts, actor)` wins.
/// The default register (ts 0, empty value) is "never written" and loses to every write.
/// Two writes with equal `(ts, actor)` but different values (only a misbehaving writer
/// produces them) are ordered by tombstone (after a value), then by value, so the merge
/// stays a join.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LwwRegister {
    /// The current value (empty for a tombstone).
    pub value: Bytes,
    /// When it was written.
    pub ts: Hlc,
    /// Who wrote it (tie breaker).
    pub actor: ActorId,
    /// True when the winning write is a removal (module docs).
    pub deleted: bool,
}

impl LwwRegister {
    /// Writes `value` at `ts` by `actor`; returns the delta (the new register itself).
    /// A write with a smaller `(ts, actor)` than the current one changes nothing.
    /// (When the write loses, the returned delta is the unchanged current register.)
    pub fn set(&mut self, value: Bytes, ts: Hlc, actor: ActorId) -> LwwRegister {
        let write = LwwRegister {
            value,
            ts,
            actor,
            deleted: false,
        };
        self.merge(&write);
        self.clone()
    }
    /// Removes the value: writes a tombstone at `ts` by `actor`; returns the delta (the
    /// register itself, as [`LwwRegister::set`]).
    pub fn delete(&mut self, ts: Hlc, actor: ActorId) -> LwwRegister {
        let write = LwwRegister {
            value: Bytes::new(),
            ts,
            actor,
            deleted: true,
        };
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
    /// The total order of registers: `(ts, actor)`, then tombstone, then the value.
    fn order_key(&self) -> (Hlc, &ActorId, bool, &[u8]) {
        (self.ts, &self.actor, self.deleted, &self.value)
    }
    /// True if it was ever written (a tombstone counts).
    pub fn is_set(&self) -> bool {
        self.ts != Hlc::default()
    }
    /// True when it holds no value: never written, or removed.
    pub fn is_dead(&self) -> bool {
        self.deleted || !self.is_set()
    }
}
