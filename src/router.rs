//! Link keys and groups: how a process names its connections for the relay core
//! (`crate::relay`). A key is unique per connection for the life of the process; its upper 32
//! bits are its group. A bridge puts the nodes of one cluster in one group (they reach each
//! other over their mesh) and the workers of its fleet in another; links of one group are not
//! told each other's interest and do not receive each other's publishes.

use std::collections::HashMap;

/// Identifies one connected peer inside a process (never reused while the process lives).
pub type PeerKey = u64;

/// The group of a peer key: its upper 32 bits. Group 0 means "no group": such a peer is only
/// ever itself.
pub fn group_of(key: PeerKey) -> u32 {
    (key >> 32) as u32
}

/// A peer key in `group` (see [`group_of`]) with process-local sequence number `seq`.
pub fn grouped_key(group: u32, seq: u32) -> PeerKey {
    (u64::from(group) << 32) | u64::from(seq)
}

/// Interned group numbers for names (a bridge's clusters), reference-counted so a name whose
/// last peer left is forgotten: the map holds at most one entry per connected peer, however
/// many names remote peers announce over time.
#[derive(Debug, Default)]
pub struct GroupNames {
    by_name: HashMap<String, (u32, usize)>,
    next: u32,
}

impl GroupNames {
    /// The group of `name` (non-zero), taking one reference.
    pub fn acquire(&mut self, name: &str) -> u32 {
        if let Some((g, refs)) = self.by_name.get_mut(name) {
            *refs += 1;
            return *g;
        }
        self.next = self.next.wrapping_add(1).max(1);
        self.by_name.insert(name.to_string(), (self.next, 1));
        self.next
    }

    /// Drops one reference to `name`; the name is forgotten with its last reference.
    pub fn release(&mut self, name: &str) {
        if let Some((_, refs)) = self.by_name.get_mut(name) {
            *refs -= 1;
            if *refs == 0 {
                self.by_name.remove(name);
            }
        }
    }

    /// Names currently held.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no name is held.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Whether peers `a` and `b` are the same peer or in the same non-zero group.
pub fn same_group(a: PeerKey, b: PeerKey) -> bool {
    a == b || (group_of(a) != 0 && group_of(a) == group_of(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_interned_and_forgotten() {
        let mut g = GroupNames::default();
        let a = g.acquire("realm/a");
        assert_eq!(g.acquire("realm/a"), a);
        let b = g.acquire("realm/b");
        assert_ne!(a, b);
        assert!(a != 0 && b != 0);
        g.release("realm/a");
        assert_eq!(g.len(), 2);
        g.release("realm/a");
        g.release("realm/b");
        assert!(g.is_empty());
        g.release("never");
    }
}
