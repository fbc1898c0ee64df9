//! A map of named CRDTs (one replicated store, e.g. one realm's state of one cluster), its
//! digest for anti-entropy, and the operations clients apply through a node.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use super::encode::single_len;
use super::gc::{Retired, RetiredBounds};
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
    /// Removes the key's content, whatever its kind (`docs/GOSSIP.md`, "Removing a key"): an
    /// OR-Set's every element, a register's value (a tombstone write), a counter's every
    /// observed count (observed reset). The key is then garbage-collected; writes the
    /// removal had not seen still count.
    Delete,
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
    /// The kind of key this operation applies to; `None` for [`Op::Delete`] (any kind).
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Op::Delete => None,
            Op::SetAdd(_) | Op::SetRemove(_) => Some(Kind::OrSet),
            Op::Put(_) => Some(Kind::Lww),
            Op::Increment(_) => Some(Kind::GCounter),
            Op::Add(_) => Some(Kind::PnCounter),
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
    /// Bound on a whole store's approximate size ([`CrdtMap::approx_bytes`]), bytes
    /// (default 32 MiB): a local operation or a merged key that would pass it is refused with
    /// [`CrdtError::Quota`] (`store bytes`). Not applied to decoded messages (their bound is
    /// the frame's).
    pub max_store_bytes: usize,
    /// Bound on the present elements' bytes of one OR-Set (default 1 MiB), checked like
    /// `max_elements` (`set bytes`); without it `max_elements` × `max_value_bytes` allowed
    /// 128 MiB in one key.
    pub max_set_bytes: usize,
    /// Most garbage-collected keys a store keeps retired (default 16,384; `super::gc`);
    /// beyond it, or beyond `max_store_bytes` of retired keys, the key retired longest ago
    /// is forgotten.
    pub max_retired: usize,
}

impl Limits {
    fn retired(&self) -> RetiredBounds {
        RetiredBounds {
            keys: self.max_retired,
            bytes: self.max_store_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_keys: crate::defaults::CRDT_MAX_KEYS,
            max_key_bytes: 256,
            max_elements: 16_384,
            max_value_bytes: 8192,
            max_actors: 4096,
            max_ranges: 65_536,
            max_store_bytes: crate::defaults::CRDT_MAX_STORE_BYTES,
            max_set_bytes: crate::defaults::CRDT_MAX_SET_BYTES,
            max_retired: crate::defaults::CRDT_MAX_RETIRED,
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
///
/// A store also keeps its garbage-collected keys ([`CrdtMap::retire_dead`])
/// and its approximate size ([`CrdtMap::approx_bytes`]). Two maps are equal when they hold
/// the same keys and values and the same retired keys.
#[derive(Debug, Clone, Default)]
pub struct CrdtMap {
    pub(crate) entries: BTreeMap<String, Crdt>,
    pub(crate) retired: Retired,
    /// Σ [`approx_size`] over `entries` (kept by `apply`, `merge`, `insert`, `retire_dead`
    /// and `decode`; maps built otherwise — deltas — do not use it).
    pub(crate) bytes: usize,
}

impl PartialEq for CrdtMap {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries && self.retired == other.retired
    }
}

impl Eq for CrdtMap {}

impl CrdtMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
    /// Applies a local operation to `key` as `actor` at `ts` (used by [`Op::Put`] and
    /// [`Op::Delete`] of a register) and returns the delta to gossip: a map holding just
    /// `key`'s delta. A missing key is created with the operation's kind.
    ///
    /// [`Op::SetRemove`] of a present element also records a fresh dot of `actor` in the
    /// set's causal context (and the delta's): a remove is then visible in the context, so
    /// a peer whose context already covered ours learns of it through
    /// [`CrdtMap::delta_since`] / [`CrdtMap::wants`] (dots of one actor stay contiguous, so
    /// this costs no range).
    ///
    /// [`Op::Delete`] removes a live key's content whatever its kind (an OR-Set's elements
    /// as [`Op::SetRemove`] does, a register by a tombstone written at `ts`, a counter by
    /// [`GCounter::reset`]); the key is then dead and [`CrdtMap::retire_dead`] collects it.
    /// On a missing or retired key it changes nothing and returns an empty map.
    ///
    /// A retired key ([`CrdtMap::retire_dead`]) keeps its kind: a write of that kind brings
    /// it back from its kept value (so an OR-Set's dots continue where they stopped, a
    /// counter's bases still hide what was removed), a remove changes nothing, another kind
    /// of operation is a type mismatch.
    ///
    /// Errors: [`CrdtError::TypeMismatch`] if `key` holds another kind;
    /// [`CrdtError::TooLarge`] for a limit; [`CrdtError::Quota`] when the store or the set
    /// would pass `max_store_bytes` / `max_set_bytes`; [`CrdtError::InvalidOp`] on counter
    /// overflow. The store is unchanged on every error.
    pub fn apply(
        &mut self,
        key: &str,
        op: Op,
        actor: ActorId,
        ts: Hlc,
        limits: &Limits,
    ) -> Result<CrdtMap, CrdtError> {
        let Some(kind) = op.kind() else {
            return Ok(self.delete(key, actor, ts));
        };
        if let Some(dead) = self.retired_value(key) {
            if dead.kind() != kind {
                return Err(CrdtError::TypeMismatch {
                    key: key.to_owned(),
                    have: dead.kind(),
                    got: kind,
                });
            }
            if let Op::SetRemove(_) = op {
                let mut out = CrdtMap::new();
                out.entries
                    .insert(key.to_owned(), Crdt::OrSet(OrSet::default()));
                return Ok(out);
            }
        }
        match self.entries.get(key) {
            Some(existing) if existing.kind() != kind => {
                return Err(CrdtError::TypeMismatch {
                    key: key.to_owned(),
                    have: existing.kind(),
                    got: kind,
                });
            }
            Some(_) => {}
            None => {
                if self.entries.len() >= limits.max_keys {
                    return Err(too_large("keys", limits.max_keys));
                }
                if key.len() > limits.max_key_bytes {
                    return Err(too_large("key bytes", limits.max_key_bytes));
                }
            }
        }
        let empty = match self.retired_value(key) {
            Some(dead) => dead.clone(),
            None => Crdt::empty(kind),
        };
        let current = self.entries.get(key).unwrap_or(&empty);
        check_op(current, &op, &actor, limits)?;
        let before = self.entries.get(key).map_or(0, |v| approx_size(key, v));
        if self.bytes - before + op_growth(key, current, &op) > limits.max_store_bytes {
            return Err(CrdtError::Quota {
                what: "store bytes",
                limit: limits.max_store_bytes,
            });
        }
        if !self.entries.contains_key(key) {
            self.retired.take(key);
            self.entries.insert(key.to_owned(), empty);
        }
        let value = self.entries.get_mut(key).expect("inserted above");
        let delta = match (&mut *value, op) {
            (Crdt::OrSet(s), Op::SetAdd(elem)) => Crdt::OrSet(s.add(actor, elem)),
            (Crdt::OrSet(s), Op::SetRemove(elem)) => Crdt::OrSet(s.remove_as(actor, &elem)),
            (Crdt::Lww(r), Op::Put(v)) => Crdt::Lww(r.set(v, ts, actor)),
            (Crdt::GCounter(c), Op::Increment(n)) => Crdt::GCounter(c.increment(actor, n)?),
            (Crdt::PnCounter(c), Op::Add(n)) => Crdt::PnCounter(c.add(actor, n)?),
            _ => unreachable!("kind checked above"),
        };
        self.bytes = self.bytes - before + approx_size(key, value);
        let mut out = CrdtMap::new();
        out.entries.insert(key.to_owned(), delta);
        Ok(out)
    }
    /// [`Op::Delete`] (see [`CrdtMap::apply`]): the delta, empty when `key` is not live.
    fn delete(&mut self, key: &str, actor: ActorId, ts: Hlc) -> CrdtMap {
        let mut out = CrdtMap::new();
        let Some(value) = self.entries.get_mut(key) else {
            return out;
        };
        let before = approx_size(key, value);
        let delta = match value {
            Crdt::OrSet(s) if !s.is_empty() => Crdt::OrSet(s.clear_as(actor)),
            Crdt::Lww(r) if !r.deleted => Crdt::Lww(r.delete(ts, actor)),
            Crdt::GCounter(c) if !c.is_dead() => Crdt::GCounter(c.reset()),
            Crdt::PnCounter(c) if !c.is_dead() => Crdt::PnCounter(c.reset()),
            _ => return out,
        };
        self.bytes = self.bytes - before + approx_size(key, value);
        out.entries.insert(key.to_owned(), delta);
        out
    }
    /// Joins `other` into `self` key by key. Keys of another kind than the local one, and
    /// keys beyond `limits`, are refused (listed in [`MergeStats::refused`]) and left as
    /// they were; every other key is merged.
    ///
    /// A key is refused when its kind differs, when it is new and the map already holds
    /// `max_keys` keys (or its name is longer than `max_key_bytes`), when the merged
    /// value would exceed `max_elements`, `max_actors`, `max_ranges`, `max_value_bytes` or
    /// `max_set_bytes`, or when the store would pass `max_store_bytes`.
    ///
    /// A retired key is joined against its kept value: the result stays retired while it
    /// holds no live content, and becomes a live key again (under the same bounds as a new
    /// key) when a write the kept value has not seen arrives.
    pub fn merge(&mut self, other: &CrdtMap, limits: &Limits) -> MergeStats {
        let mut stats = MergeStats::default();
        for (key, theirs) in &other.entries {
            let Some(ours) = self.entries.get_mut(key) else {
                let revived;
                let value = match self.retired.get(key) {
                    None => theirs,
                    Some(dead) if dead.kind() == theirs.kind() => {
                        let mut v = dead.clone();
                        let changed = v.merge(theirs);
                        if v.is_dead() {
                            if changed {
                                self.retired.update(key, v);
                                stats.changed += 1;
                            }
                            continue;
                        }
                        revived = v;
                        &revived
                    }
                    Some(dead) => {
                        stats.refused.push((
                            key.clone(),
                            CrdtError::TypeMismatch {
                                key: key.clone(),
                                have: dead.kind(),
                                got: theirs.kind(),
                            },
                        ));
                        continue;
                    }
                };
                let size = approx_size(key, value);
                let refused = if self.entries.len() >= limits.max_keys {
                    Some(too_large("keys", limits.max_keys))
                } else if key.len() > limits.max_key_bytes {
                    Some(too_large("key bytes", limits.max_key_bytes))
                } else if self.bytes + size > limits.max_store_bytes {
                    Some(CrdtError::Quota {
                        what: "store bytes",
                        limit: limits.max_store_bytes,
                    })
                } else {
                    check_value(value, limits).err()
                };
                match refused {
                    Some(e) => stats.refused.push((key.clone(), e)),
                    None => {
                        self.retired.take(key);
                        self.entries.insert(key.clone(), value.clone());
                        self.bytes += size;
                        stats.changed += 1;
                    }
                }
                continue;
            };
            if ours.kind() != theirs.kind() {
                stats.refused.push((
                    key.clone(),
                    CrdtError::TypeMismatch {
                        key: key.clone(),
                        have: ours.kind(),
                        got: theirs.kind(),
                    },
                ));
                continue;
            }
            let conflict = is_conflict(ours, theirs);
            let before = approx_size(key, ours);
            // A join grows a value by at most the incoming value's size.
            let room = self.bytes - before + approx_size(key, theirs) <= limits.max_store_bytes;
            let changed = if room && fits_without_check(ours, theirs, limits) {
                ours.merge(theirs)
            } else {
                let mut merged = ours.clone();
                let changed = merged.merge(theirs);
                if let Err(e) = check_value(&merged, limits) {
                    stats.refused.push((key.clone(), e));
                    continue;
                }
                if self.bytes - before + approx_size(key, &merged) > limits.max_store_bytes {
                    stats.refused.push((
                        key.clone(),
                        CrdtError::Quota {
                            what: "store bytes",
                            limit: limits.max_store_bytes,
                        },
                    ));
                    continue;
                }
                *ours = merged;
                changed
            };
            self.bytes = self.bytes - before + approx_size(key, ours);
            stats.changed += usize::from(changed);
            stats.conflicts += usize::from(conflict);
        }
        stats
    }
    /// An upper bound of the bytes `op` on `key` adds to the store's size (what the write
    /// is checked against `max_store_bytes` with); the per-writer quota checks it before the
    /// write ([`super::writers`]).
    pub fn growth_bound(&self, key: &str, op: &Op) -> usize {
        let before = self.key_bytes(key);
        let Some(kind) = op.kind() else {
            return 0;
        };
        let grown = match (self.entries.get(key), self.retired.get(key)) {
            (Some(v), _) => op_growth(key, v, op),
            (None, Some(dead)) => op_growth(key, dead, op),
            (None, None) => op_growth(key, &Crdt::empty(kind), op),
        };
        grown.saturating_sub(before.unwrap_or(0))
    }
    /// [`approx_size`] of `key` and its value, bytes, if present.
    pub fn key_bytes(&self, key: &str) -> Option<usize> {
        self.entries.get(key).map(|v| approx_size(key, v))
    }
    /// The value of `key`, if present (a key with no live content — removed, not yet
    /// collected — reads as absent).
    pub fn get(&self, key: &str) -> Option<Value> {
        Some(match self.entries.get(key).filter(|v| !v.is_dead())? {
            Crdt::OrSet(s) => Value::Set(s.elements().cloned().collect()),
            Crdt::Lww(r) => Value::Register(r.value.clone(), r.ts),
            Crdt::GCounter(c) => Value::GCounter(c.value()),
            Crdt::PnCounter(c) => Value::PnCounter(c.value()),
        })
    }
    /// The raw CRDT under `key`.
    pub fn crdt(&self, key: &str) -> Option<&Crdt> {
        self.entries.get(key)
    }
    /// Inserts or replaces a raw CRDT (used by aggregation; bypasses merge and the limits).
    pub fn insert(&mut self, key: String, value: Crdt) {
        let size = approx_size(&key, &value);
        if let Some(old) = self.entries.insert(key.clone(), value) {
            self.bytes -= approx_size(&key, &old);
        }
        self.bytes += size;
    }
    /// Approximate size of the live keys, bytes: Σ over keys of [`approx_size`]. What
    /// [`Limits::max_store_bytes`] bounds. (Retired keys are bounded apart,
    /// [`CrdtMap::retired_bytes`].)
    pub fn approx_bytes(&self) -> usize {
        self.bytes
    }
    /// Garbage collection (`super::gc`): every key of `keys` with no live content (an
    /// OR-Set with no element, a register whose winning write is a removal, a counter whose
    /// every count a removal observed) leaves the key table; its dead value is kept as a
    /// retired key (at most `limits.max_retired` keys and `limits.max_store_bytes` bytes,
    /// the oldest forgotten first). Returns how many keys were retired.
    ///
    /// Meant for stores, after a change to `keys`: a delta's dead value is a removal to
    /// send, not garbage.
    pub fn retire_dead<'k>(
        &mut self,
        keys: impl IntoIterator<Item = &'k str>,
        limits: &Limits,
    ) -> usize {
        let mut n = 0;
        for key in keys {
            if !self.entries.get(key).is_some_and(Crdt::is_dead) {
                continue;
            }
            let Some((key, value)) = self.entries.remove_entry(key) else {
                continue;
            };
            self.bytes -= approx_size(&key, &value);
            self.retired.put(key, value, limits.retired());
            n += 1;
        }
        n
    }
    /// The dead value kept for a retired key.
    pub fn retired_value(&self, key: &str) -> Option<&Crdt> {
        self.retired.get(key)
    }
    /// The value held for `key`, live or retired (dead): what a merge joins against.
    pub fn held(&self, key: &str) -> Option<&Crdt> {
        self.entries.get(key).or_else(|| self.retired.get(key))
    }
    /// The retired keys and their dead values, in key order.
    pub fn iter_retired(&self) -> impl Iterator<Item = (&String, &Crdt)> + '_ {
        self.retired.iter()
    }
    /// Number of retired keys.
    pub fn retired_len(&self) -> usize {
        self.retired.len()
    }
    /// Approximate size of the retired keys, bytes ([`approx_size`] of each dead value).
    pub fn retired_bytes(&self) -> usize {
        self.retired.bytes()
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
    ///
    /// A retired key is summarized by its kept dead value.
    pub fn digest(&self) -> Digest {
        let mut entries: BTreeMap<String, Summary> = self
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), v.summary()))
            .collect();
        for (k, dead) in self.retired.iter() {
            entries.insert(k.clone(), dead.summary());
        }
        Digest { entries }
    }
    /// Everything a replica with full digest `seen` lacks: for each local key, its
    /// delta since the remote summary (the whole value when the key is absent from
    /// `seen`); keys with nothing new are left out. Joining the result into that replica
    /// equals joining `self`.
    ///
    /// Per key: omitted when the remote summary covers ours; otherwise the OR-Set's
    /// [`OrSet::delta_since`], the whole register, or the counter entries above the
    /// remote's ([`GCounter::delta_since`]). A key whose remote summary is of another kind
    /// is sent whole (the receiver refuses and counts it).
    ///
    /// Retired keys take part with their kept dead values (so a removal reaches a replica
    /// that still holds the content).
    pub fn delta_since(&self, seen: &Digest) -> CrdtMap {
        let mut out = CrdtMap::new();
        for (key, value) in self.entries.iter().chain(self.retired.iter()) {
            let delta = match seen.entries.get(key) {
                None => Some(value.clone()),
                Some(summary) => value.delta_against(summary),
            };
            if let Some(delta) = delta {
                out.entries.insert(key.clone(), delta);
            }
        }
        out
    }
    /// Like [`CrdtMap::delta_since`] but only for the keys listed in `wants` (a partial
    /// digest); a key listed with [`Summary::Absent`] is sent whole.
    pub fn delta_for(&self, wants: &Digest) -> CrdtMap {
        let mut out = CrdtMap::new();
        for (key, summary) in &wants.entries {
            let Some(value) = self.entries.get(key).or_else(|| self.retired.get(key)) else {
                continue;
            };
            if let Some(delta) = value.delta_against(summary) {
                out.entries.insert(key.clone(), delta);
            }
        }
        out
    }
    /// The keys of `remote` (a full digest) whose summary is not covered by ours, with our
    /// summary ([`Summary::Absent`] when we lack the key): what to ask the remote for.
    pub fn wants(&self, remote: &Digest) -> Digest {
        let mut out = Digest::default();
        for (key, theirs) in &remote.entries {
            let held = self.entries.get(key).or_else(|| self.retired.get(key));
            let ours = held.map_or(View::Absent, View::of_value);
            if !ours.covers(&View::of_summary(theirs)) {
                let ours = held.map_or(Summary::Absent, Crdt::summary);
                out.entries.insert(key.clone(), ours);
            }
        }
        out
    }
    /// Splits into parts whose encodings are at most about `max_bytes` each (a key whose
    /// value alone is larger is split with [`OrSet::split`]; a register or counter larger
    /// than `max_bytes` is sent alone). Joining all parts equals joining `self`.
    ///
    /// Keys are packed greedily in key order by the size of their single-key encoding (a
    /// conservative bound on their share of a part). An empty map gives no parts.
    pub fn split(&self, max_bytes: usize) -> Vec<CrdtMap> {
        let mut parts = Vec::new();
        let mut current = CrdtMap::new();
        let mut current_bytes = 0usize;
        for (key, value) in &self.entries {
            let size = single_len(key, value);
            if size > max_bytes {
                if let Crdt::OrSet(set) = value {
                    if !current.is_empty() {
                        parts.push(std::mem::take(&mut current));
                        current_bytes = 0;
                    }
                    for chunk in split_set(key, set, size, max_bytes) {
                        let mut part = CrdtMap::new();
                        part.entries.insert(key.clone(), Crdt::OrSet(chunk));
                        parts.push(part);
                    }
                    continue;
                }
            }
            if !current.is_empty() && current_bytes.saturating_add(size) > max_bytes {
                parts.push(std::mem::take(&mut current));
                current_bytes = 0;
            }
            current.entries.insert(key.clone(), value.clone());
            current_bytes = current_bytes.saturating_add(size);
        }
        if !current.is_empty() {
            parts.push(current);
        }
        parts
    }
}

impl Crdt {
    /// True when it holds nothing an application reads: an OR-Set with no element, a
    /// register never written or removed, a counter with nothing above its bases.
    pub fn is_dead(&self) -> bool {
        match self {
            Crdt::OrSet(s) => s.is_empty(),
            Crdt::Lww(r) => r.is_dead(),
            Crdt::GCounter(c) => c.is_dead(),
            Crdt::PnCounter(c) => c.is_dead(),
        }
    }
    /// The kind of value.
    pub fn kind(&self) -> Kind {
        match self {
            Crdt::OrSet(_) => Kind::OrSet,
            Crdt::Lww(_) => Kind::Lww,
            Crdt::GCounter(_) => Kind::GCounter,
            Crdt::PnCounter(_) => Kind::PnCounter,
        }
    }
    /// What this replica has seen of the value: an OR-Set's context, a register's
    /// `(ts, actor)`, a counter's counts.
    pub fn summary(&self) -> Summary {
        match self {
            Crdt::OrSet(s) => Summary::OrSet(s.context().clone()),
            Crdt::Lww(r) => Summary::Lww(r.ts, r.actor),
            Crdt::GCounter(c) => Summary::GCounter(c.clone()),
            Crdt::PnCounter(c) => Summary::PnCounter(c.clone()),
        }
    }
    /// Joins `other` of the same kind; true if `self` changed. Values of another kind are
    /// ignored (false).
    pub fn merge(&mut self, other: &Crdt) -> bool {
        match (self, other) {
            (Crdt::OrSet(a), Crdt::OrSet(b)) => a.merge(b),
            (Crdt::Lww(a), Crdt::Lww(b)) => a.merge(b),
            (Crdt::GCounter(a), Crdt::GCounter(b)) => a.merge(b),
            (Crdt::PnCounter(a), Crdt::PnCounter(b)) => a.merge(b),
            _ => false,
        }
    }
    /// The empty value of `kind`.
    fn empty(kind: Kind) -> Crdt {
        match kind {
            Kind::OrSet => Crdt::OrSet(OrSet::default()),
            Kind::Lww => Crdt::Lww(LwwRegister::default()),
            Kind::GCounter => Crdt::GCounter(GCounter::default()),
            Kind::PnCounter => Crdt::PnCounter(PnCounter::default()),
        }
    }
    /// What a replica with `summary` of this key lacks; `None` when nothing.
    fn delta_against(&self, summary: &Summary) -> Option<Crdt> {
        match (self, summary) {
            (_, Summary::Absent) => Some(self.clone()),
            _ if View::of_summary(summary).covers(&View::of_value(self)) => None,
            (Crdt::OrSet(s), Summary::OrSet(seen)) => Some(Crdt::OrSet(s.delta_since(seen))),
            (Crdt::Lww(r), Summary::Lww(..)) => Some(Crdt::Lww(r.clone())),
            (Crdt::GCounter(c), Summary::GCounter(seen)) => {
                Some(Crdt::GCounter(c.delta_since(seen)))
            }
            (Crdt::PnCounter(c), Summary::PnCounter(seen)) => {
                Some(Crdt::PnCounter(c.delta_since(seen)))
            }
            // Another kind: send it whole, the receiver refuses and counts it.
            _ => Some(self.clone()),
        }
    }
}

impl Summary {
    /// The kind summarized; `None` for [`Summary::Absent`].
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Summary::Absent => None,
            Summary::OrSet(_) => Some(Kind::OrSet),
            Summary::Lww(..) => Some(Kind::Lww),
            Summary::GCounter(_) => Some(Kind::GCounter),
            Summary::PnCounter(_) => Some(Kind::PnCounter),
        }
    }
}

/// A borrowed [`Summary`], taken from a summary or straight from a value (no copy).
enum View<'a> {
    Absent,
    OrSet(&'a DotSet),
    Lww(Hlc, ActorId),
    GCounter(&'a GCounter),
    PnCounter(&'a PnCounter),
}

impl<'a> View<'a> {
    fn of_summary(s: &'a Summary) -> Self {
        match s {
            Summary::Absent => View::Absent,
            Summary::OrSet(c) => View::OrSet(c),
            Summary::Lww(ts, a) => View::Lww(*ts, *a),
            Summary::GCounter(c) => View::GCounter(c),
            Summary::PnCounter(c) => View::PnCounter(c),
        }
    }
    fn of_value(v: &'a Crdt) -> Self {
        match v {
            Crdt::OrSet(s) => View::OrSet(s.context()),
            Crdt::Lww(r) => View::Lww(r.ts, r.actor),
            Crdt::GCounter(c) => View::GCounter(c),
            Crdt::PnCounter(c) => View::PnCounter(c),
        }
    }
    /// Whether a replica with summary `self` has seen everything one with `theirs` has:
    /// anything covers `Absent`; `Absent` covers nothing else; OR-Set: context inclusion;
    /// LWW: `(ts, actor)` ours ≥ theirs; counters: per-actor ≤. Summaries of different kinds
    /// do not cover each other.
    fn covers(&self, theirs: &View<'_>) -> bool {
        match (self, theirs) {
            (_, View::Absent) => true,
            (View::OrSet(a), View::OrSet(b)) => a.covers(b),
            (View::Lww(t1, a1), View::Lww(t2, a2)) => (t1, a1) >= (t2, a2),
            (View::GCounter(a), View::GCounter(b)) => a.covers(b),
            (View::PnCounter(a), View::PnCounter(b)) => a.covers(b),
            _ => false,
        }
    }
}

/// Whether merging `theirs` into `ours` (same kind) meets concurrent updates.
fn is_conflict(ours: &Crdt, theirs: &Crdt) -> bool {
    match (ours, theirs) {
        (Crdt::Lww(a), Crdt::Lww(b)) => a != b && a.is_set() && b.is_set() && a.actor != b.actor,
        _ => {
            let (a, b) = (View::of_value(ours), View::of_value(theirs));
            !a.covers(&b) && !b.covers(&a)
        }
    }
}

/// Approximate size of `key` and its value, bytes: the key and the element or value bytes,
/// plus fixed costs of 64 per key, 48 per element or register, 24 per causal-context range
/// and 40 per counter entry. What [`Limits::max_store_bytes`] is measured in.
pub fn approx_size(key: &str, value: &Crdt) -> usize {
    64 + key.len()
        + match value {
            Crdt::OrSet(s) => s.element_bytes() + 48 * s.len() + 24 * s.context().range_count(),
            Crdt::Lww(r) => r.value.len() + 48,
            Crdt::GCounter(c) => 40 * c.counts.len(),
            Crdt::PnCounter(c) => 40 * (c.p.counts.len() + c.n.counts.len()),
        }
}

/// An upper bound of what `op` adds to [`approx_size`] of `current` under `key`.
fn op_growth(key: &str, current: &Crdt, op: &Op) -> usize {
    let base = approx_size(key, current);
    base + match op {
        Op::SetAdd(e) | Op::Put(e) => e.len() + 48 + 24,
        Op::SetRemove(_) | Op::Delete => 24,
        Op::Increment(_) | Op::Add(_) => 40,
    }
}

fn too_large(what: &'static str, limit: usize) -> CrdtError {
    CrdtError::TooLarge { what, limit }
}

/// Checks the limits a local operation on `current` (of the op's kind) could break.
fn check_op(current: &Crdt, op: &Op, actor: &ActorId, limits: &Limits) -> Result<(), CrdtError> {
    match (current, op) {
        (Crdt::OrSet(s), Op::SetAdd(elem)) => {
            if elem.len() > limits.max_value_bytes {
                return Err(too_large("value bytes", limits.max_value_bytes));
            }
            if !s.contains(elem) && s.len() >= limits.max_elements {
                return Err(too_large("elements", limits.max_elements));
            }
            if !s.contains(elem) && s.element_bytes() + elem.len() > limits.max_set_bytes {
                return Err(CrdtError::Quota {
                    what: "set bytes",
                    limit: limits.max_set_bytes,
                });
            }
            check_new_actor(s.context(), actor, limits)
        }
        (Crdt::OrSet(s), Op::SetRemove(elem)) if s.contains(elem) => {
            check_new_actor(s.context(), actor, limits)
        }
        (Crdt::Lww(_), Op::Put(v)) if v.len() > limits.max_value_bytes => {
            Err(too_large("value bytes", limits.max_value_bytes))
        }
        (Crdt::GCounter(c), Op::Increment(n)) if *n > 0 && !c.counts.contains_key(actor) => {
            if c.counts.len() >= limits.max_actors {
                return Err(too_large("actors", limits.max_actors));
            }
            Ok(())
        }
        (Crdt::PnCounter(c), Op::Add(n))
            if *n != 0 && !c.p.counts.contains_key(actor) && !c.n.counts.contains_key(actor) =>
        {
            if c.actor_count() >= limits.max_actors {
                return Err(too_large("actors", limits.max_actors));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Checks that minting a dot of `actor` keeps `context` within the limits.
fn check_new_actor(context: &DotSet, actor: &ActorId, limits: &Limits) -> Result<(), CrdtError> {
    if context.ranges.contains_key(actor) {
        return Ok(());
    }
    if context.actor_count() >= limits.max_actors {
        return Err(too_large("actors", limits.max_actors));
    }
    if context.range_count() >= limits.max_ranges {
        return Err(too_large("ranges", limits.max_ranges));
    }
    Ok(())
}

/// Checks a whole value against the limits (elements, value bytes, actors, ranges).
fn check_value(value: &Crdt, limits: &Limits) -> Result<(), CrdtError> {
    match value {
        Crdt::OrSet(s) => {
            if s.len() > limits.max_elements {
                return Err(too_large("elements", limits.max_elements));
            }
            if s.element_bytes() > limits.max_set_bytes {
                return Err(CrdtError::Quota {
                    what: "set bytes",
                    limit: limits.max_set_bytes,
                });
            }
            if s.context().actor_count() > limits.max_actors {
                return Err(too_large("actors", limits.max_actors));
            }
            if s.context().range_count() > limits.max_ranges {
                return Err(too_large("ranges", limits.max_ranges));
            }
            if s.elements().any(|e| e.len() > limits.max_value_bytes) {
                return Err(too_large("value bytes", limits.max_value_bytes));
            }
        }
        Crdt::Lww(r) => {
            if r.value.len() > limits.max_value_bytes {
                return Err(too_large("value bytes", limits.max_value_bytes));
            }
        }
        Crdt::GCounter(c) => {
            if c.counts.len() > limits.max_actors {
                return Err(too_large("actors", limits.max_actors));
            }
        }
        Crdt::PnCounter(c) => {
            if c.actor_count() > limits.max_actors {
                return Err(too_large("actors", limits.max_actors));
            }
        }
    }
    Ok(())
}

/// True when merging `theirs` into `ours` cannot break a limit both already meet (so the
/// merge can happen in place, without a trial copy).
fn fits_without_check(ours: &Crdt, theirs: &Crdt, limits: &Limits) -> bool {
    match (ours, theirs) {
        (Crdt::OrSet(a), Crdt::OrSet(b)) => {
            a.len() + b.len() <= limits.max_elements
                && a.element_bytes() + b.element_bytes() <= limits.max_set_bytes
                && a.context().actor_count() + b.context().actor_count() <= limits.max_actors
                && a.context().range_count() + b.context().range_count() <= limits.max_ranges
                && b.elements().all(|e| e.len() <= limits.max_value_bytes)
        }
        (Crdt::Lww(_), Crdt::Lww(b)) => b.value.len() <= limits.max_value_bytes,
        (Crdt::GCounter(a), Crdt::GCounter(b)) => {
            a.counts.len() + b.counts.len() <= limits.max_actors
        }
        (Crdt::PnCounter(a), Crdt::PnCounter(b)) => {
            a.actor_count() + b.actor_count() <= limits.max_actors
        }
        _ => false,
    }
}

/// Splits an OR-Set whose single-key encoding is `size` bytes into [`OrSet::split`] parts
/// that each encode within `max_bytes` under `key` (halving the chunk size until they do,
/// down to one element per part).
fn split_set(key: &str, set: &OrSet, size: usize, max_bytes: usize) -> Vec<OrSet> {
    let n = set.len().max(1);
    let mut per_part = (n.saturating_mul(max_bytes) / size.max(1)).clamp(1, n);
    loop {
        let parts = set.split(per_part);
        let biggest = parts
            .iter()
            .map(|p| single_len(key, &Crdt::OrSet(p.clone())))
            .max()
            .unwrap_or(0);
        if biggest <= max_bytes || per_part == 1 {
            return parts;
        }
        per_part = (per_part / 2).max(1);
    }
}
