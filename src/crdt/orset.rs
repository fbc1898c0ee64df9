//! Add-wins observed-remove set with a causal context (Almeida et al. 2018, "AWORSet";
//! Bieniusa et al. 2012): each element maps to the dots of the adds that created it; a
//! remove drops those dots but keeps them in the causal context, so no per-element
//! tombstone outlives the remove.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

#[allow(unused_imports)]
use super::Dot;
use super::{ActorId, DotSet};

/// An add-wins OR-Set of byte-string elements.
///
/// Join of `(s1, c1)` and `(s2, c2)`: a dot survives if both stores hold it, or one store
/// holds it and the other context has not seen it; contexts are unioned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrSet {
    /// Element → dots of the adds that are still live.
    pub(crate) entries: BTreeMap<Bytes, BTreeSet<Dot>>,
    /// Every dot this replica has seen (live or removed).
    pub(crate) context: DotSet,
}

impl OrSet {
    /// Adds `elem` with a fresh dot of `actor`; the element's older dots are replaced (the
    /// delta's context covers them). Returns the delta.
    pub fn add(&mut self, actor: ActorId, elem: Bytes) -> OrSet {
        todo!()
    }
    /// Removes `elem` (the dots observed here); returns the delta (no entries, a context of
    /// the removed dots). Removing an absent element returns an empty delta.
    pub fn remove(&mut self, elem: &[u8]) -> OrSet {
        todo!()
    }
    /// Joins `other`; true if `self` changed.
    pub fn merge(&mut self, other: &OrSet) -> bool {
        todo!()
    }
    /// Whether `elem` is present.
    pub fn contains(&self, elem: &[u8]) -> bool {
        todo!()
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
    /// The causal context (every dot seen).
    pub fn context(&self) -> &DotSet {
        &self.context
    }
    /// What a replica whose context is `seen` lacks: the entries with dots outside `seen`,
    /// and the context `self.context − (live dots ∩ seen)` — which carries the removes the
    /// other replica has not seen yet without dropping dots both still hold. Joining the
    /// result into any replica whose context is `seen` equals joining `self`.
    pub fn delta_since(&self, seen: &DotSet) -> OrSet {
        todo!()
    }
    /// Splits into parts whose joins equal `self`, each with at most `max_elements`
    /// entries; removes travel in the last part.
    pub fn split(&self, max_elements: usize) -> Vec<OrSet> {
        todo!()
    }
}
