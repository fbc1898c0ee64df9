//! A map of named CRDTs (one replicated store, e.g. one realm's state of one cluster), its
//! digest for anti-entropy, and the operations clients apply through a node.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use super::{ActorId, CrdtError, DotSet, GCounter, Hlc, LwwRegister, OrSet, PnCounter};

/// The type of a key's value. Wire tags in parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Kind {
    /// [`OrSet`] (1).
    OrSet = 1,
    /// [`LwwRegister`] (2).
    Lww = 2,
    /// [`GCounter`] (3).
    GCounter = 3,
    /// [`PnCounter`] (4).
    PnCounter = 4,
}

impl Kind {
    /// The kind for a wire tag.
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::OrSet),
            2 => Some(Kind::Lww),
            3 => Some(Kind::GCounter),
            4 => Some(Kind::PnCounter),
            _ => None,
        }
    }
    /// Stable name: `or_set`, `lww`, `g_counter`, `pn_counter`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::OrSet => "or_set",
            Kind::Lww => "lww",
            Kind::GCounter => "g_counter",
            Kind::PnCounter => "pn_counter",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One named value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crdt {
    /// An add-wins OR-Set.
    OrSet(OrSet),
    /// A LWW-Register.
    Lww(LwwRegister),
    /// A G-Counter.
    GCounter(GCounter),
    /// A PN-Counter.
    PnCounter(PnCounter),
}

/// What a replica has seen of one key: the causal context of its value. A peer sends what
/// is not covered by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Summary {
    /// The replica does not hold the key.
    Absent,
    /// An OR-Set's causal context.
    OrSet(DotSet),
    /// A register's `(ts, actor)`.
    Lww(Hlc, ActorId),
    /// A G-Counter's per-actor counts.
    GCounter(GCounter),
    /// A PN-Counter's per-actor counts.
    PnCounter(PnCounter),
}

/// Key → [`Summary`]: what a replica has (a full digest) or wants (a partial one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Digest {
    /// Per-key summaries.
    pub entries: BTreeMap<String, Summary>,
}

/// An update a client applies to a key. The first operation on a key fixes its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// OR-Set add.
    SetAdd(Bytes),
    /// OR-Set remove.
    SetRemove(Bytes),
    /// LWW-Register write (`put`).
    Put(Bytes),
    /// G-Counter increment.
    Increment(u64),
    /// PN-Counter add (negative decrements).
    Add(i64),
}

impl Op {
    /// The kind of key this operation applies to.
    pub fn kind(&self) -> Kind {
        match self {
            Op::SetAdd(_) | Op::SetRemove(_) => Kind::OrSet,
            Op::Put(_) => Kind::Lww,
            Op::Increment(_) => Kind::GCounter,
            Op::Add(_) => Kind::PnCounter,
        }
    }
}

/// A key's value as an application reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The present elements of an OR-Set, in byte order.
    Set(Vec<Bytes>),
    /// A register's value and timestamp.
    Register(Bytes, Hlc),
    /// A G-Counter's value.
    GCounter(u64),
    /// A PN-Counter's value.
    PnCounter(i64),
}

/// Bounds on one store, checked on every local operation, merge and decode (remote input
/// must not grow memory without bound). Defaults in [`Limits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most keys in one map (default 4,096).
    pub max_keys: usize,
    /// Longest key name, bytes (default 256).
    pub max_key_bytes: usize,
    /// Most elements in one OR-Set (default 16,384).
    pub max_elements: usize,
    /// Largest OR-Set element or register value, bytes (default 8,192).
    pub max_value_bytes: usize,
    /// Most actors in one counter or causal context (default 4,096).
    pub max_actors: usize,
    /// Most ranges in one causal context (default 65,536).
    pub max_ranges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_keys: 4096,
            max_key_bytes: 256,
            max_elements: 16_384,
            max_value_bytes: 8192,
            max_actors: 4096,
            max_ranges: 65_536,
        }
    }
}

/// What one [`CrdtMap::merge`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Keys whose value changed.
    pub changed: usize,
    /// Keys where the two sides had concurrent updates: neither summary covered the other
    /// (OR-Set, counters), or two different actors' register writes met (LWW).
    pub conflicts: usize,
    /// Keys refused, with the reason (type mismatch, limit); the rest was merged.
    pub refused: Vec<(String, CrdtError)>,
}

/// A map of named CRDTs: the unit that gossip replicates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CrdtMap {
    pub(crate) entries: BTreeMap<String, Crdt>,
}

impl CrdtMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
    /// Applies a local operation to `key` as `actor` at `ts` (used by [`Op::Put`] only)
    /// and returns the delta to gossip.
    ///
    /// Errors: [`CrdtError::TypeMismatch`] if `key` holds another kind;
    /// [`CrdtError::TooLarge`] for a limit; [`CrdtError::InvalidOp`] on counter overflow.
    pub fn apply(
        &mut self,
        key: &str,
        op: Op,
        actor: ActorId,
        ts: Hlc,
        limits: &Limits,
    ) -> Result<CrdtMap, CrdtError> {
        todo!()
    }
    /// Joins `other` into `self` key by key. Keys of another kind than the local one, and
    /// keys beyond `limits`, are refused (listed in [`MergeStats::refused`]) and left as
    /// they were; every other key is merged.
    pub fn merge(&mut self, other: &CrdtMap, limits: &Limits) -> MergeStats {
        todo!()
    }
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<Value> {
        todo!()
    }
    /// The raw CRDT under `key`.
    pub fn crdt(&self, key: &str) -> Option<&Crdt> {
        self.entries.get(key)
    }
    /// Inserts or replaces a raw CRDT (used by aggregation; bypasses merge).
    pub fn insert(&mut self, key: String, value: Crdt) {
        self.entries.insert(key, value);
    }
    /// Iterates over keys and values in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Crdt)> + '_ {
        self.entries.iter()
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// True if there is no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// A full digest: every key's summary.
    pub fn digest(&self) -> Digest {
        todo!()
    }
    /// Everything a replica with full digest `seen` lacks: for each local key, its
    /// delta since the remote summary (the whole value when the key is absent from
    /// `seen`); keys with nothing new are left out. Joining the result into that replica
    /// equals joining `self`.
    pub fn delta_since(&self, seen: &Digest) -> CrdtMap {
        todo!()
    }
    /// Like [`CrdtMap::delta_since`] but only for the keys listed in `wants` (a partial
    /// digest); a key listed with [`Summary::Absent`] is sent whole.
    pub fn delta_for(&self, wants: &Digest) -> CrdtMap {
        todo!()
    }
    /// The keys of `remote` (a full digest) whose summary is not covered by ours, with our
    /// summary ([`Summary::Absent`] when we lack the key): what to ask the remote for.
    pub fn wants(&self, remote: &Digest) -> Digest {
        todo!()
    }
    /// Splits into parts whose encodings are at most about `max_bytes` each (a key whose
    /// value alone is larger is split with [`OrSet::split`]; a register or counter larger
    /// than `max_bytes` is sent alone). Joining all parts equals joining `self`.
    pub fn split(&self, max_bytes: usize) -> Vec<CrdtMap> {
        todo!()
    }
}
