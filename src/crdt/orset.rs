//! Add-wins observed-remove set with a causal context (Almeida et al. 2018, "AWORSet";
//! Bieniusa et al. 2012): each element maps to the dots of the adds that created it; a
//! remove drops those dots but keeps them in the causal context, so no per-element
//! tombstone outlives the remove.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::{ActorId, Dot, DotSet};

/// An add-wins OR-Set of byte-string elements.
///
/// Join of `(s1, c1)` and `(s2, c2)`: a dot survives if both stores hold it, or one store
/// holds it and the other context has not seen it; contexts are unioned.
#[derive(Clone, Default)]
pub struct OrSet {
    /// Element → dots of the adds that are still live.
    pub(crate) entries: BTreeMap<Bytes, BTreeSet<Dot>>,
    /// Every dot this replica has seen (live or removed).
    pub(crate) context: DotSet,
    /// Reverse index of `entries`: live dot → its element. Derived from `entries` (kept in
    /// step by every mutation), so it takes no part in equality; it lets a merge find the
    /// local dots an incoming context covers without scanning every entry.
    index: BTreeMap<Dot, Bytes>,
    /// Σ of the present elements' lengths, bytes (derived from `entries`, kept in step).
    bytes: usize,
}

impl PartialEq for OrSet {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries && self.context == other.context
    }
}

impl Eq for OrSet {}

impl std::fmt::Debug for OrSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrSet")
            .field("entries", &self.entries)
            .field("context", &self.context)
            .finish()
    }
}

impl OrSet {
    /// A set of the given entries and context, with its index built.
    pub(crate) fn from_parts(entries: BTreeMap<Bytes, BTreeSet<Dot>>, context: DotSet) -> OrSet {
        let mut pairs: Vec<(Dot, Bytes)> = entries
            .iter()
            .flat_map(|(e, dots)| dots.iter().map(move |d| (*d, e.clone())))
            .collect();
        pairs.sort_unstable_by_key(|p| p.0);
        OrSet {
            bytes: entries.keys().map(Bytes::len).sum(),
            entries,
            context,
            index: pairs.into_iter().collect(),
        }
    }
    /// A set of the given entries, context and already built index (`index` must be the
    /// reverse of `entries`).
    pub(crate) fn from_indexed(
        entries: BTreeMap<Bytes, BTreeSet<Dot>>,
        context: DotSet,
        index: BTreeMap<Dot, Bytes>,
    ) -> OrSet {
        let s = OrSet {
            bytes: entries.keys().map(Bytes::len).sum(),
            entries,
            context,
            index,
        };
        s.debug_check_index();
        s
    }
    /// Asserts (debug builds) that the index is exactly the reverse of `entries`.
    pub(crate) fn debug_check_index(&self) {
        if cfg!(debug_assertions) {
            let n: usize = self.entries.values().map(BTreeSet::len).sum();
            assert_eq!(n, self.index.len(), "OrSet index size");
            let bytes: usize = self.entries.keys().map(Bytes::len).sum();
            assert_eq!(bytes, self.bytes, "OrSet element bytes");
            for (e, dots) in &self.entries {
                assert!(!dots.is_empty(), "OrSet element without dots");
                for d in dots {
                    assert_eq!(self.index.get(d), Some(e), "OrSet index entry");
                }
            }
        }
    }
    /// Adds `elem` with a fresh dot of `actor`; the element's older dots are replaced (the
    /// delta's context covers them). Returns the delta.
    ///
    /// The fresh dot is `(actor, context.next_counter(actor))`; the delta is
    /// `({elem: {dot}}, old dots ∪ {dot})`.
    pub fn add(&mut self, actor: ActorId, elem: Bytes) -> OrSet {
        let dot = Dot {
            actor,
            counter: self.context.next_counter(&actor),
        };
        let mut delta_ctx = match self.entries.remove(&elem) {
            Some(old) => {
                self.bytes -= elem.len();
                for d in &old {
                    self.index.remove(d);
                }
                DotSet::from_dots(&old)
            }
            None => DotSet::new(),
        };
        delta_ctx.insert(dot);
        self.context.insert(dot);
        self.entries.insert(elem.clone(), BTreeSet::from([dot]));
        self.bytes += elem.len();
        self.index.insert(dot, elem.clone());
        OrSet {
            bytes: elem.len(),
            entries: BTreeMap::from([(elem.clone(), BTreeSet::from([dot]))]),
            context: delta_ctx,
            index: BTreeMap::from([(dot, elem)]),
        }
    }
    /// Removes `elem` (the dots observed here); returns the delta (no entries, a context of
    /// the removed dots). Removing an absent element returns an empty delta.
    pub fn remove(&mut self, elem: &[u8]) -> OrSet {
        match self.entries.remove(elem) {
            Some(dots) => {
                self.bytes -= elem.len();
                for d in &dots {
                    self.index.remove(d);
                }
                OrSet {
                    entries: BTreeMap::new(),
                    context: DotSet::from_dots(&dots),
                    index: BTreeMap::new(),
                    bytes: 0,
                }
            }
            None => OrSet::default(),
        }
    }
    /// [`OrSet::remove`], plus a fresh dot of `actor` recorded in the context (and the
    /// delta's context) when something was removed. The extra dot makes the remove visible
    /// in the causal context, so a peer whose context covers an older one still learns of
    /// it through digest-based anti-entropy ([`super::CrdtMap::apply`] removes this way).
    pub(crate) fn remove_as(&mut self, actor: ActorId, elem: &[u8]) -> OrSet {
        let delta = self.remove(elem);
        self.mark_removal(actor, delta)
    }
    /// Removes every element (observed remove of the whole set), recording one fresh dot of
    /// `actor` as [`OrSet::remove_as`] does; returns the delta (no element, a context with
    /// every removed dot and the fresh one). Empty when the set was.
    pub(crate) fn clear_as(&mut self, actor: ActorId) -> OrSet {
        let mut delta = OrSet::default();
        for (_, dots) in std::mem::take(&mut self.entries) {
            for d in dots {
                delta.context.insert(d);
            }
        }
        self.index.clear();
        self.bytes = 0;
        self.mark_removal(actor, delta)
    }
    /// Mints a fresh dot of `actor` into the context and `delta`'s when `delta` removed
    /// something; returns `delta`.
    fn mark_removal(&mut self, actor: ActorId, mut delta: OrSet) -> OrSet {
        if !delta.context.is_empty() {
            let dot = Dot {
                actor,
                counter: self.context.next_counter(&actor),
            };
            self.context.insert(dot);
            delta.context.insert(dot);
        }
        delta
    }
    /// Joins `other`; true if `self` changed.
    ///
    /// A dot `d` survives if `(d ∈ s1 ∧ d ∈ s2) ∨ (d ∈ s1 ∧ d ∉ c2) ∨ (d ∈ s2 ∧ d ∉ c1)`;
    /// elements left without dots vanish.
    pub fn merge(&mut self, other: &OrSet) -> bool {
        let mut changed = false;
        let OrSet {
            entries,
            context,
            index,
            bytes,
        } = self;
        // (b) Local dots that `other.context` covers, of elements `other` does not hold:
        // they are removed. Found by range queries on the index, not by a scan.
        let mut dropped: Vec<(Dot, Bytes)> = Vec::new();
        for (actor, lo, hi) in other.context.iter_ranges() {
            let from = Dot {
                actor: *actor,
                counter: lo,
            };
            let to = Dot {
                actor: *actor,
                counter: hi,
            };
            for (d, elem) in index.range(from..=to) {
                if !other.entries.contains_key(elem) {
                    dropped.push((*d, elem.clone()));
                }
            }
        }
        for (d, elem) in dropped {
            index.remove(&d);
            if let Some(dots) = entries.get_mut(&elem) {
                dots.remove(&d);
                if dots.is_empty() {
                    entries.remove(&elem);
                    *bytes -= elem.len();
                }
            }
            changed = true;
        }
        // (a) The elements `other` holds.
        for (elem, theirs) in &other.entries {
            match entries.get_mut(elem) {
                Some(ours) => {
                    let before = ours.len();
                    ours.retain(|d| {
                        let keep = theirs.contains(d) || !other.context.contains(d);
                        if !keep {
                            index.remove(d);
                        }
                        keep
                    });
                    changed |= ours.len() != before;
                    for d in theirs {
                        if !context.contains(d) && ours.insert(*d) {
                            index.insert(*d, elem.clone());
                            changed = true;
                        }
                    }
                    if ours.is_empty() {
                        entries.remove(elem);
                        *bytes -= elem.len();
                    }
                }
                None => {
                    let new: BTreeSet<Dot> = theirs
                        .iter()
                        .filter(|d| !context.contains(d))
                        .copied()
                        .collect();
                    if !new.is_empty() {
                        for d in &new {
                            index.insert(*d, elem.clone());
                        }
                        entries.insert(elem.clone(), new);
                        *bytes += elem.len();
                        changed = true;
                    }
                }
            }
        }
        changed |= context.union_changed(&other.context);
        self.debug_check_index();
        changed
    }
    /// Whether `elem` is present.
    pub fn contains(&self, elem: &[u8]) -> bool {
        self.entries.contains_key(elem)
    }
    /// Present elements, in byte order.
    pub fn elements(&self) -> impl Iterator<Item = &Bytes> + '_ {
        self.entries.keys()
    }
    /// Number of present elements.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// True if no element is present.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Σ of the present elements' lengths, bytes.
    pub fn element_bytes(&self) -> usize {
        self.bytes
    }
    /// The causal context (every dot seen).
    pub fn context(&self) -> &DotSet {
        &self.context
    }
    /// What a replica whose context is `seen` lacks: the entries with dots outside `seen`,
    /// and the context `self.context − (live dots ∩ seen)` — which carries the removes the
    /// other replica has not seen yet without dropping dots both still hold. Joining the
    /// result into any replica whose context is `seen` equals joining `self`.
    pub fn delta_since(&self, seen: &DotSet) -> OrSet {
        let mut entries = BTreeMap::new();
        let mut live_seen = DotSet::new();
        for (elem, dots) in &self.entries {
            let mut unseen = BTreeSet::new();
            for d in dots {
                if seen.contains(d) {
                    live_seen.insert(*d);
                } else {
                    unseen.insert(*d);
                }
            }
            if !unseen.is_empty() {
                entries.insert(elem.clone(), unseen);
            }
        }
        OrSet::from_parts(entries, self.context.difference(&live_seen))
    }
    /// Splits into parts whose joins equal `self`, each with at most `max_elements`
    /// entries; removes travel in the last part.
    ///
    /// Every part but the last carries a chunk of entries with a context of exactly the
    /// chunk's dots; the last carries the last chunk and `self.context` minus the dots of
    /// all other chunks. Joining all parts, in any order, into any replica equals joining
    /// `self`. An empty set gives one part (its context). `max_elements` 0 counts as 1.
    pub fn split(&self, max_elements: usize) -> Vec<OrSet> {
        let max = max_elements.max(1);
        let chunks: Vec<Vec<(&Bytes, &BTreeSet<Dot>)>> = self
            .entries
            .iter()
            .collect::<Vec<_>>()
            .chunks(max)
            .map(<[_]>::to_vec)
            .collect();
        let Some((last, rest)) = chunks.split_last() else {
            return vec![OrSet::from_parts(BTreeMap::new(), self.context.clone())];
        };
        let mut parts = Vec::with_capacity(chunks.len());
        let mut others = DotSet::new();
        for chunk in rest {
            let context = DotSet::from_dots(chunk.iter().flat_map(|(_, dots)| dots.iter()));
            others.union(&context);
            parts.push(OrSet::from_parts(
                chunk
                    .iter()
                    .map(|(e, d)| ((*e).clone(), (*d).clone()))
                    .collect(),
                context,
            ));
        }
        parts.push(OrSet::from_parts(
            last.iter()
                .map(|(e, d)| ((*e).clone(), (*d).clone()))
                .collect(),
            self.context.difference(&others),
        ));
        parts
    }
    /// Every live dot.
    pub(crate) fn live_dots(&self) -> impl Iterator<Item = &Dot> + '_ {
        self.entries.values().flatten()
    }
}
