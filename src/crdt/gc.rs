//! Garbage collection of keys with no live content.
//!
//! An OR-Set whose last element was removed holds nothing an application can read, but its
//! causal context still matters: it is what stops an old add — a delta still in some push
//! buffer, or a replica that has not seen the remove — from bringing the element back
//! (Almeida et al. 2018, §5: the causal context, not the dot store, records removals). So a
//! store does not forget an empty OR-Set: [`super::CrdtMap::retire_empty`] moves it out of the
//! key table (where it counted against [`super::Limits::max_keys`] and was read, listed and
//! summed like a live key) into a table of **retired contexts**, a few ranges per key.
//!
//! A retired key takes part in gossip like an empty set (its context is in the digest and in
//! deltas, an incoming state is joined against it, and it comes back as a live key when an
//! add the context has not seen arrives, or a local add is made). The table is bounded by
//! [`super::Limits::max_retired`]; beyond it the key retired longest ago is forgotten. That is
//! the one place where a removal can be undone: if a replica still holding an element removed
//! before that oldest retirement gossips it again, the element comes back (the same trade-off
//! as any bounded tombstone store; `docs/GOSSIP.md`, "Garbage collection").

use std::collections::BTreeMap;

use super::DotSet;

/// The retired contexts of one store, oldest first for eviction.
#[derive(Debug, Clone, Default)]
pub(crate) struct Retired {
    by_key: BTreeMap<String, (u64, DotSet)>,
    order: BTreeMap<u64, String>,
    next: u64,
}

impl PartialEq for Retired {
    /// Equal when the same keys are retired with the same contexts (the retirement order is
    /// local bookkeeping).
    fn eq(&self, other: &Self) -> bool {
        self.by_key.len() == other.by_key.len()
            && self
                .by_key
                .iter()
                .zip(&other.by_key)
                .all(|((k1, (_, c1)), (k2, (_, c2)))| k1 == k2 && c1 == c2)
    }
}

impl Eq for Retired {}

impl Retired {
    /// The context kept for `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&DotSet> {
        self.by_key.get(key).map(|(_, c)| c)
    }
    /// Removes and returns the context kept for `key`.
    pub(crate) fn take(&mut self, key: &str) -> Option<DotSet> {
        let (seq, ctx) = self.by_key.remove(key)?;
        self.order.remove(&seq);
        Some(ctx)
    }
    /// Keeps `ctx` for `key` (replacing an older one; the key counts as retired now), then
    /// forgets the oldest retirements beyond `max` (at least one is kept). Returns how many
    /// were forgotten.
    pub(crate) fn put(&mut self, key: String, ctx: DotSet, max: usize) -> usize {
        self.take(&key);
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, key.clone());
        self.by_key.insert(key, (seq, ctx));
        let mut evicted = 0;
        while self.by_key.len() > max.max(1) {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.by_key.remove(&oldest);
            evicted += 1;
        }
        evicted
    }
    /// Replaces the context of a retired `key` without changing its place in the order.
    pub(crate) fn update(&mut self, key: &str, ctx: DotSet) {
        if let Some(e) = self.by_key.get_mut(key) {
            e.1 = ctx;
        }
    }
    /// Number of retired keys.
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
    /// The retired keys and their contexts, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &DotSet)> + '_ {
        self.by_key.iter().map(|(k, (_, c))| (k, c))
    }
}
