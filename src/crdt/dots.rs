//! Replica ids, dots and causal contexts (Almeida et al. 2018, §5: dot stores and causal
//! contexts).

use std::collections::BTreeMap;

/// A replica id: 32 bytes (a node id, or an id a bridge mints for one of its children).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ActorId(pub [u8; 32]);

/// One event of one replica: `(actor, counter)`, counter ≥ 1 and dense per actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// The replica that created the event.
    pub actor: ActorId,
    /// Its sequence number at that replica, from 1.
    pub counter: u64,
}

/// A set of dots, stored per actor as sorted, disjoint, non-adjacent inclusive ranges
/// `[lo, hi]` (so a context `{a:1..=n}` is one range, and any set — including one with
/// holes, as the OR-Set's delta contexts have — is representable). Used as the causal
/// context of an [`super::OrSet`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct DotSet {
    pub(crate) ranges: BTreeMap<ActorId, Vec<(u64, u64)>>,
}

impl DotSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }
    /// True if no dot is in the set.
    pub fn is_empty(&self) -> bool {
        todo!()
    }
    /// Whether `dot` is in the set.
    pub fn contains(&self, dot: &Dot) -> bool {
        todo!()
    }
    /// Adds one dot (merging adjacent ranges).
    pub fn insert(&mut self, dot: Dot) {
        todo!()
    }
    /// Adds every dot of `other`.
    pub fn union(&mut self, other: &DotSet) {
        todo!()
    }
    /// The dots of `self` that are not in `other`.
    pub fn difference(&self, other: &DotSet) -> DotSet {
        todo!()
    }
    /// True if every dot of `other` is in `self`.
    pub fn covers(&self, other: &DotSet) -> bool {
        todo!()
    }
    /// The next unused counter for `actor`: highest counter seen + 1 (1 when none).
    pub fn next_counter(&self, actor: &ActorId) -> u64 {
        todo!()
    }
    /// Number of ranges over all actors (the encoded size is proportional to it).
    pub fn range_count(&self) -> usize {
        todo!()
    }
    /// Iterates over `(actor, lo, hi)` ranges in order.
    pub fn iter_ranges(&self) -> impl Iterator<Item = (&ActorId, u64, u64)> + '_ {
        self.ranges
            .iter()
            .flat_map(|(a, rs)| rs.iter().map(move |&(lo, hi)| (a, lo, hi)))
    }
}
