//! Bounded window of recently seen message ids, for end-to-end de-duplication.
//!
//! Every Macula message carries a 16-byte id set once by its publisher (see
//! `docs/PROTOCOL.md`, "Message ids"). Receivers — a node taking publishes from its
//! uplink, a client taking deliveries from its node — remember the last `capacity` ids
//! and drop a message whose id is still in the window. Retransmissions after a
//! reconnect therefore reach the application once (Macula v0.16 defect 4: each hop
//! minted a new id, so nothing could be de-duplicated).
//!
//! The window is FIFO: the oldest id is forgotten when a new one arrives at capacity.
//! Memory is `capacity × ~40 bytes`. The set uses std's SipHash (`RandomState`) because
//! ids come from remote peers and a keyed hash resists collision floods.

use std::collections::{HashSet, VecDeque};

use crate::wire::MessageId;

/// FIFO window of the last `capacity` message ids seen.
#[derive(Debug)]
pub struct DedupWindow {
    seen: HashSet<MessageId>,
    order: VecDeque<MessageId>,
    capacity: usize,
}

impl DedupWindow {
    /// A window remembering at most `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        DedupWindow {
            seen: HashSet::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
        }
    }

    /// Records `id`; returns `true` if it was new and `false` if it is a duplicate
    /// still inside the window.
    pub fn insert(&mut self, id: MessageId) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.order.push_back(id);
        true
    }

    /// Whether `id` is inside the window.
    pub fn contains(&self, id: &MessageId) -> bool {
        self.seen.contains(id)
    }

    /// Ids currently remembered (≤ capacity).
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing has been seen yet.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u64) -> MessageId {
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&n.to_be_bytes());
        id
    }

    #[test]
    fn duplicate_inside_window_is_rejected() {
        let mut w = DedupWindow::new(4);
        assert!(w.insert(id(1)));
        assert!(!w.insert(id(1)));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn oldest_is_forgotten_at_capacity() {
        let mut w = DedupWindow::new(2);
        assert!(w.insert(id(1)));
        assert!(w.insert(id(2)));
        assert!(w.insert(id(3)));
        assert!(!w.contains(&id(1)));
        assert!(w.insert(id(1)), "forgotten id counts as new");
        assert_eq!(w.len(), 2);
    }

    proptest! {
        #[test]
        fn never_exceeds_capacity_and_matches_reference(cap in 1usize..16, ids in proptest::collection::vec(0u64..24, 0..200)) {
            let mut w = DedupWindow::new(cap);
            let mut reference: VecDeque<u64> = VecDeque::new();
            for n in ids {
                let expect_new = !reference.contains(&n);
                prop_assert_eq!(w.insert(id(n)), expect_new);
                if expect_new {
                    if reference.len() == cap { reference.pop_front(); }
                    reference.push_back(n);
                }
                prop_assert!(w.len() <= cap);
                prop_assert_eq!(w.len(), reference.len());
            }
        }
    }
}
