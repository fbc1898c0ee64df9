//! Per-writer quotas on one replicated store (issue 12; `docs/AUTH.md`, "Quotas"): what each
//! local writer — a client of this node, known by its proven node id, which in a realm with
//! operator keys is its credential's subject — holds in its cluster's store, in keys and in
//! bytes, so that one client cannot take the whole store's budget (`crdt.max_keys`,
//! `crdt.max_store_bytes`) and starve the others. Pure: no tokio, no clock.
//!
//! Accounting ([`approx_size`](super::approx_size) bytes, the store's own measure):
//! - a key is one **entry** of the writer whose write created it at this node, until the key
//!   leaves the store;
//! - the **bytes** a write adds to a key (the growth of its size) are charged to the writer;
//!   bytes its own write removes from the key are released from its charge on that key;
//! - when a key shrinks or goes for another reason (another writer, a peer's merge, garbage
//!   collection), [`WriterQuota::reconcile`] releases charges on it until they are no more than
//!   its size, the latest writers' first; the owner of the store calls it for the keys a
//!   change touched, or for all keys once per gossip round.
//!
//! Keys only peers or the node itself write are not charged here: the store's own bounds hold
//! them. A write is checked *before* it is applied, against an upper bound of its growth
//! ([`CrdtMap::growth_bound`](super::CrdtMap::growth_bound), what the store bound is checked
//! with), and charged with its actual growth after ([`WriterQuota::written`]).

use std::collections::HashMap;

use crate::quota::{Ledger, QuotaError, QuotaLimits, Tenant, Usage};
use crate::wire::NodeId;

/// The keys and bytes each writer holds in one store (module documentation). Bounded: a key
/// is tracked while a local writer's charge on it is; a writer while it holds anything.
#[derive(Debug, Clone)]
pub struct WriterQuota {
    /// One ledger link ("slot") per (key, writer) with a charge.
    ledger: Ledger,
    keys: HashMap<String, Vec<Slot>>,
    next_slot: u64,
}

/// One writer's charge on one key.
#[derive(Debug, Clone, Copy)]
struct Slot {
    writer: NodeId,
    id: u64,
}

impl WriterQuota {
    /// An empty account: each writer may hold `max_keys` keys it created and `max_bytes`
    /// bytes it wrote (`crdt.writer_max_keys`, `crdt.writer_max_bytes`).
    pub fn new(max_keys: usize, max_bytes: usize) -> WriterQuota {
        WriterQuota {
            ledger: Ledger::new(QuotaLimits {
                tenant_entries: max_keys,
                tenant_bytes: max_bytes,
                ..QuotaLimits::UNBOUNDED
            }),
            keys: HashMap::new(),
            next_slot: 0,
        }
    }

    /// Whether `writer` may make a write that creates a key (`creates`) and grows the store by
    /// at most `growth` bytes. Nothing is changed. Errors: [`QuotaError::TenantEntries`] or
    /// [`QuotaError::TenantBytes`] with what the writer holds.
    pub fn check(&self, writer: NodeId, creates: bool, growth: usize) -> Result<(), QuotaError> {
        let add = Usage::new(usize::from(creates), growth);
        self.ledger.check(Tenant::Subject(writer), add)
    }

    /// Records a write of `writer` to `key` that took the key's size from `before` to `after`
    /// (`None`: absent). Charged whatever it is: the write was checked ([`Self::check`])
    /// against an upper bound of this growth before it was applied.
    pub fn written(&mut self, writer: NodeId, key: &str, before: Option<usize>, after: usize) {
        let created = before.is_none();
        let before = before.unwrap_or(0);
        let slot = self.slot(writer, key);
        let grow = Usage::new(usize::from(created), after.saturating_sub(before));
        self.ledger.force(slot, Tenant::Subject(writer), grow);
        let shrink = before.saturating_sub(after);
        if shrink > 0 {
            self.ledger.release(slot, Usage::new(0, shrink));
        }
        self.reconcile(key, Some(after));
    }

    /// Brings the charges on `key` in line with its size now (`None`: it left the store):
    /// all released if it is gone, else released until they total at most `size`, the
    /// latest writers' first. Entries stay with the creator while the key is present.
    pub fn reconcile(&mut self, key: &str, size: Option<usize>) {
        let Some(slots) = self.keys.get_mut(key) else {
            return;
        };
        match size {
            None => {
                for s in slots.drain(..) {
                    self.ledger.release_link(s.id);
                }
            }
            Some(size) => {
                let held: usize = slots
                    .iter()
                    .map(|s| self.ledger.link_usage(s.id).bytes)
                    .sum();
                let mut excess = held.saturating_sub(size);
                for s in slots.iter().rev() {
                    if excess == 0 {
                        break;
                    }
                    let b = self.ledger.link_usage(s.id).bytes.min(excess);
                    self.ledger.release(s.id, Usage::new(0, b));
                    excess -= b;
                }
                // A slot that holds nothing is gone from the ledger: forget it here too.
                slots.retain(|s| self.ledger.link_usage(s.id) != Usage::default());
            }
        }
        if slots.is_empty() {
            self.keys.remove(key);
        }
    }

    /// [`Self::reconcile`] for every tracked key, `size_of` giving each key's size now.
    pub fn reconcile_all(&mut self, size_of: impl Fn(&str) -> Option<usize>) {
        let keys: Vec<String> = self.keys.keys().cloned().collect();
        for k in keys {
            let size = size_of(&k);
            self.reconcile(&k, size);
        }
    }

    /// What `writer` holds: keys it created that are still present, bytes it wrote.
    pub fn usage(&self, writer: &NodeId) -> Usage {
        self.ledger.tenant_usage(writer)
    }

    /// Keys with a writer's charge on them.
    pub fn tracked_keys(&self) -> usize {
        self.keys.len()
    }

    /// The ledger slot of `writer` on `key`, made if new.
    fn slot(&mut self, writer: NodeId, key: &str) -> u64 {
        let slots = self.keys.entry(key.to_string()).or_default();
        if let Some(s) = slots.iter().find(|s| s.writer == writer) {
            return s.id;
        }
        self.next_slot += 1;
        let id = self.next_slot;
        slots.push(Slot { writer, id });
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: NodeId = [1; 32];
    const B: NodeId = [2; 32];

    #[test]
    fn a_writer_holds_the_keys_it_created_and_the_bytes_it_wrote() {
        let mut q = WriterQuota::new(2, 1000);
        q.check(A, true, 300).unwrap();
        q.written(A, "a.1", None, 300);
        q.written(A, "a.2", None, 200);
        assert_eq!(q.usage(&A), Usage::new(2, 500));
        // A third key is over the key share; growing a held key is not.
        let e = q.check(A, true, 10).unwrap_err();
        assert_eq!(e.reason(), "tenant_entries");
        q.check(A, false, 500).unwrap();
        assert_eq!(q.check(A, false, 501).unwrap_err().reason(), "tenant_bytes");
        // B is not affected by A's use.
        q.check(B, true, 1000).unwrap();
        // A key that leaves the store frees its entry and bytes.
        q.reconcile("a.1", None);
        assert_eq!(q.usage(&A), Usage::new(1, 200));
        q.check(A, true, 10).unwrap();
    }

    #[test]
    fn another_writers_growth_is_its_own_and_a_shrink_releases_the_latest_first() {
        let mut q = WriterQuota::new(10, 10_000);
        q.written(A, "set", None, 400);
        // B adds to A's key: B pays for what it added, A keeps only its own.
        q.written(B, "set", Some(400), 700);
        assert_eq!(q.usage(&A), Usage::new(1, 400));
        assert_eq!(q.usage(&B), Usage::new(0, 300));
        // A peer's merge shrinks the key to 500: the latest writer's charge goes first.
        q.reconcile("set", Some(500));
        assert_eq!(q.usage(&B), Usage::new(0, 100));
        assert_eq!(q.usage(&A), Usage::new(1, 400));
        // A's own removal releases A's charge on the key.
        q.written(A, "set", Some(500), 200);
        assert_eq!(q.usage(&A).bytes + q.usage(&B).bytes, 200);
        assert_eq!(q.usage(&A).entries, 1);
        q.reconcile_all(|_| None);
        assert_eq!(q.usage(&A), Usage::default());
        assert_eq!(q.usage(&B), Usage::default());
        assert_eq!(q.tracked_keys(), 0);
    }

    proptest! {
        /// Whatever the writes and shrinks, after a reconcile the charges on a key never
        /// exceed its size, a checked writer never holds more than its share, and nothing is
        /// tracked once every key is gone.
        #[test]
        fn charges_stay_within_sizes_and_shares(
            ops in proptest::collection::vec((0u8..3, 0u8..4, 0usize..600, any::<bool>()), 1..200)
        ) {
            let (max_keys, max_bytes) = (3, 2_000);
            let mut q = WriterQuota::new(max_keys, max_bytes);
            let mut sizes: HashMap<String, usize> = HashMap::new();
            for (w, k, size, by_peer) in ops {
                let (writer, key) = ([w; 32], format!("k{k}"));
                let before = sizes.get(&key).copied();
                if by_peer {
                    // A peer's merge: any size, or gone.
                    if size < 100 { sizes.remove(&key); } else { sizes.insert(key.clone(), size); }
                    q.reconcile(&key, sizes.get(&key).copied());
                } else {
                    let grow = size.saturating_sub(before.unwrap_or(0));
                    if q.check(writer, before.is_none(), grow).is_ok() {
                        sizes.insert(key.clone(), size);
                        q.written(writer, &key, before, size);
                    }
                }
                for w in 0..3u8 {
                    let u = q.usage(&[w; 32]);
                    prop_assert!(u.entries <= max_keys && u.bytes <= max_bytes, "{u:?}");
                }
                let held: usize = (0..3u8).map(|w| q.usage(&[w; 32]).bytes).sum();
                prop_assert!(held <= sizes.values().sum::<usize>());
            }
            q.reconcile_all(|_| None);
            prop_assert_eq!(q.tracked_keys(), 0);
            for w in 0..3u8 {
                prop_assert_eq!(q.usage(&[w; 32]), Usage::default());
            }
        }
    }
}
