//! Garbage collection of keys with no live content.
//!
//! A key with no live content — an OR-Set whose last element was removed, a register whose
//! winning write is a removal (tombstone), a counter whose every count a removal observed —
//! holds nothing an application can read, but its metadata still matters: the set's causal
//! context, the tombstone's timestamp, the counter's bases are what stop an old write — a
//! delta still in some push buffer, or a replica that has not seen the removal — from
//! bringing the content back (Almeida et al. 2018, §5: the causal context, not the dot store,
//! records removals). So a store does not forget such a key:
//! [`super::CrdtMap::retire_dead`] moves it out of the key table (where it counted against
//! [`super::Limits::max_keys`] and was read, listed and summed like a live key) into a table
//! of **retired keys**, which keeps that metadata (the dead value itself).
//!
//! A retired key takes part in gossip like its dead value (it is in the digest and in
//! deltas, an incoming state is joined against it, and it comes back as a live key when a
//! write the metadata has not seen arrives, or a local write is made). The table is bounded
//! by [`super::Limits::max_retired`] keys and by [`super::Limits::max_store_bytes`] bytes
//! ([`super::approx_size`]); beyond either the key retired longest ago is forgotten. That is
//! the one place where a removal can be undone: if a replica still holding content removed
//! before that oldest retirement gossips it again, the content comes back (the same
//! trade-off as any bounded tombstone store; `docs/GOSSIP.md`, "Garbage collection").

use std::collections::BTreeMap;

use super::Crdt;

/// The retired keys of one store with their dead values, oldest first for eviction.
#[derive(Debug, Clone, Default)]
pub(crate) struct Retired {
    by_key: BTreeMap<String, (u64, Crdt)>,
    order: BTreeMap<u64, String>,
    next: u64,
    /// Σ [`super::approx_size`] over the retired keys.
    bytes: usize,
}

impl PartialEq for Retired {
    /// Equal when the same keys are retired with the same values (the retirement order is
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

/// Bounds of the retired table: most keys, most bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetiredBounds {
    pub(crate) keys: usize,
    pub(crate) bytes: usize,
}

impl Retired {
    /// The dead value kept for `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&Crdt> {
        self.by_key.get(key).map(|(_, c)| c)
    }
    /// Removes and returns the value kept for `key`.
    pub(crate) fn take(&mut self, key: &str) -> Option<Crdt> {
        let (seq, value) = self.by_key.remove(key)?;
        self.order.remove(&seq);
        self.bytes -= super::approx_size(key, &value);
        Some(value)
    }
    /// Keeps `value` for `key` (replacing an older one; the key counts as retired now),
    /// then forgets the oldest retirements beyond `max` keys or bytes (the newest is always
    /// kept). Returns how many were forgotten.
    pub(crate) fn put(&mut self, key: String, value: Crdt, max: RetiredBounds) -> usize {
        self.take(&key);
        let seq = self.next;
        self.next += 1;
        self.bytes += super::approx_size(&key, &value);
        self.order.insert(seq, key.clone());
        self.by_key.insert(key, (seq, value));
        let mut evicted = 0;
        while self.by_key.len() > 1 && (self.by_key.len() > max.keys || self.bytes > max.bytes) {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, v)) = self.by_key.remove(&oldest) {
                self.bytes -= super::approx_size(&oldest, &v);
            }
            evicted += 1;
        }
        evicted
    }
    /// Replaces the value of a retired `key` without changing its place in the order.
    pub(crate) fn update(&mut self, key: &str, value: Crdt) {
        if let Some(e) = self.by_key.get_mut(key) {
            self.bytes =
                self.bytes - super::approx_size(key, &e.1) + super::approx_size(key, &value);
            e.1 = value;
        }
    }
    /// Number of retired keys.
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
    /// Σ [`super::approx_size`] over the retired keys, bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
    /// The retired keys and their dead values, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &Crdt)> + '_ {
        self.by_key.iter().map(|(k, (_, c))| (k, c))
    }
}
