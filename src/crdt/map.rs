//! A map of named CRDTs (one replicated store, e.g. one realm's state of one cluster), its
//! digest for anti-entropy, and the operations clients apply through a node.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use super::encode::single_len;
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
    /// and returns the delta to gossip: a map holding just `key`'s delta. A missing key is
    /// created with the operation's kind.
    ///
    /// [`Op::SetRemove`] of a present element also records a fresh dot of `actor` in the
    /// set's causal context (and the delta's): a remove is then visible in the context, so
    /// a peer whose context already covered ours learns of it through
    /// [`CrdtMap::delta_since`] / [`CrdtMap::wants`] (dots of one actor stay contiguous, so
    /// this costs no range).
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
        let kind = op.kind();
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
        let empty = Crdt::empty(kind);
        let current = self.entries.get(key).unwrap_or(&empty);
        check_op(current, &op, &actor, limits)?;
        let value = self
            .entries
            .entry(key.to_owned())
            .or_insert_with(|| Crdt::empty(kind));
        let delta = match (value, op) {
            (Crdt::OrSet(s), Op::SetAdd(elem)) => Crdt::OrSet(s.add(actor, elem)),
            (Crdt::OrSet(s), Op::SetRemove(elem)) => Crdt::OrSet(s.remove_as(actor, &elem)),
            (Crdt::Lww(r), Op::Put(v)) => Crdt::Lww(r.set(v, ts, actor)),
            (Crdt::GCounter(c), Op::Increment(n)) => Crdt::GCounter(c.increment(actor, n)?),
            (Crdt::PnCounter(c), Op::Add(n)) => Crdt::PnCounter(c.add(actor, n)?),
            _ => unreachable!("kind checked above"),
        };
        let mut out = CrdtMap::new();
        out.entries.insert(key.to_owned(), delta);
        Ok(out)
    }
    /// Joins `other` into `self` key by key. Keys of another kind than the local one, and
    /// keys beyond `limits`, are refused (listed in [`MergeStats::refused`]) and left as
    /// they were; every other key is merged.
    ///
    /// A key is refused when its kind differs, when it is new and the map already holds
    /// `max_keys` keys (or its name is longer than `max_key_bytes`), or when the merged
    /// value would exceed `max_elements`, `max_actors`, `max_ranges` or `max_value_bytes`.
    pub fn merge(&mut self, other: &CrdtMap, limits: &Limits) -> MergeStats {
        let mut stats = MergeStats::default();
        for (key, theirs) in &other.entries {
            let Some(ours) = self.entries.get_mut(key) else {
                let refused = if self.entries.len() >= limits.max_keys {
                    Some(too_large("keys", limits.max_keys))
                } else if key.len() > limits.max_key_bytes {
                    Some(too_large("key bytes", limits.max_key_bytes))
                } else {
                    check_value(theirs, limits).err()
                };
                match refused {
                    Some(e) => stats.refused.push((key.clone(), e)),
                    None => {
                        self.entries.insert(key.clone(), theirs.clone());
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
            let changed = if fits_without_check(ours, theirs, limits) {
                ours.merge(theirs)
            } else {
                let mut merged = ours.clone();
                let changed = merged.merge(theirs);
                if let Err(e) = check_value(&merged, limits) {
                    stats.refused.push((key.clone(), e));
                    continue;
                }
                *ours = merged;
                changed
            };
            stats.changed += usize::from(changed);
            stats.conflicts += usize::from(conflict);
        }
        stats
    }
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<Value> {
        Some(match self.entries.get(key)? {
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
        Digest {
            entries: self
                .entries
                .iter()
                .map(|(k, v)| (k.clone(), v.summary()))
                .collect(),
        }
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
    pub fn delta_since(&self, seen: &Digest) -> CrdtMap {
        let mut out = CrdtMap::new();
        for (key, value) in &self.entries {
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
            if let Some(delta) = self.entries.get(key).and_then(|v| v.delta_against(summary)) {
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
            let ours = self.entries.get(key).map_or(View::Absent, View::of_value);
            if !ours.covers(&View::of_summary(theirs)) {
                let ours = self.entries.get(key).map_or(Summary::Absent, Crdt::summary);
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
