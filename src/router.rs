//! Interest table: which peers hold which subscription patterns, with a lock-free
//! read snapshot for the publish hot path.
//!
//! Writers (subscribe, unsubscribe, peer join/leave — the control path) take a mutex on
//! the master table, apply the change and publish a new immutable [`RouteSnapshot`]
//! through an [`ArcSwap`]. Readers (every publish) load the current snapshot without a
//! lock and walk its [`PatternTrie`]. A snapshot rebuild costs O(total patterns); that
//! trades subscription-churn cost for a lock-free publish path (see
//! `docs/ARCHITECTURE.md`, "Routing").
//!
//! The same table serves a node (targets = local client connections) and a bridge
//! (one table per realm, targets = node connections). Every change reports, per
//! pattern, the holder set before and after, which is what interest propagation
//! needs (a node tells its bridge when a pattern appears or disappears; a bridge tells
//! each node when the *other* nodes' interest in a pattern appears or disappears).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::topic::PatternTrie;

/// Identifies one connected peer inside a process (never reused while the process lives).
pub type PeerKey = u64;

/// The group of a peer key: its upper 32 bits. A bridge puts the nodes of one cluster in one
/// group (they reach each other over their mesh): peers of one group are not told each
/// other's interest ([`interest_delta`], [`RouteTable::add_peer`]) and do not receive each
/// other's publishes. Group 0 means "no group": such a peer is only ever itself.
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

/// Immutable routing view used on the hot path.
pub struct RouteSnapshot<T> {
    trie: PatternTrie<Vec<u32>>,
    targets: Vec<(PeerKey, T)>,
}

impl<T> RouteSnapshot<T> {
    fn empty() -> Self {
        RouteSnapshot {
            trie: PatternTrie::new(),
            targets: Vec::new(),
        }
    }

    /// Appends to `out` the index of every target holding a pattern that matches
    /// `topic`, each target once (sorted). `out` is cleared first; reuse it across
    /// calls so the hot path does not allocate.
    pub fn collect(&self, topic: &str, out: &mut Vec<u32>) {
        out.clear();
        self.trie
            .for_each_match(topic, |idxs| out.extend_from_slice(idxs));
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }

    /// True when any pattern matches `topic`.
    pub fn any_match(&self, topic: &str) -> bool {
        self.trie.any_match(topic)
    }

    /// The target at `idx` (an index returned by [`collect`](Self::collect)).
    pub fn target(&self, idx: u32) -> &(PeerKey, T) {
        &self.targets[idx as usize]
    }

    /// Number of distinct patterns held by anyone.
    pub fn patterns(&self) -> usize {
        self.trie.len()
    }
}

/// Read access to the registered peers while the table is locked.
pub struct Peers<'a, T>(&'a HashMap<PeerKey, PeerEntry<T>>);

impl<'a, T> Peers<'a, T> {
    /// Every registered peer and its target.
    pub fn iter(&self) -> impl Iterator<Item = (PeerKey, &'a T)> + 'a {
        self.0.iter().map(|(k, e)| (*k, &e.target))
    }
}

/// How one pattern's holder set changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternChange {
    /// The normalised pattern.
    pub pattern: String,
    /// Holders before the change.
    pub before: BTreeSet<PeerKey>,
    /// Holders after the change.
    pub after: BTreeSet<PeerKey>,
}

/// Error from [`RouteTable::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The peer would hold more patterns than allowed.
    #[error("subscription limit exceeded: {held} held, limit {limit}")]
    LimitExceeded {
        /// Patterns already held.
        held: usize,
        /// Configured limit per connection.
        limit: usize,
    },
    /// The peer is not registered (already disconnected).
    #[error("peer is not registered")]
    UnknownPeer,
}

struct PeerEntry<T> {
    target: T,
    patterns: BTreeSet<String>,
}

struct Master<T> {
    peers: HashMap<PeerKey, PeerEntry<T>>,
    holders: HashMap<String, BTreeSet<PeerKey>>,
}

/// Master interest table plus its published snapshot.
pub struct RouteTable<T> {
    master: Mutex<Master<T>>,
    snapshot: ArcSwap<RouteSnapshot<T>>,
    max_patterns_per_peer: usize,
}

impl<T: Clone> RouteTable<T> {
    /// An empty table; each peer may hold at most `max_patterns_per_peer` patterns.
    pub fn new(max_patterns_per_peer: usize) -> Self {
        RouteTable {
            master: Mutex::new(Master {
                peers: HashMap::new(),
                holders: HashMap::new(),
            }),
            snapshot: ArcSwap::from_pointee(RouteSnapshot::empty()),
            max_patterns_per_peer,
        }
    }

    /// The current snapshot (lock-free).
    pub fn load(&self) -> Arc<RouteSnapshot<T>> {
        self.snapshot.load_full()
    }

    /// Registers a peer with no patterns. `initial` runs under the table lock with
    /// every pattern held by the other peers, so the new peer can be told the current
    /// interest before any later change is emitted.
    pub fn add_peer(&self, key: PeerKey, target: T, initial: impl FnOnce(&T, Vec<String>)) {
        let mut m = self.lock();
        let others: Vec<String> = m
            .holders
            .iter()
            .filter(|(_, h)| h.iter().any(|k| !same_group(*k, key)))
            .map(|(p, _)| p.clone())
            .collect();
        initial(&target, others);
        m.peers.insert(
            key,
            PeerEntry {
                target,
                patterns: BTreeSet::new(),
            },
        );
    }

    /// Removes a peer and all its patterns; `emit` sees the resulting changes
    /// under the table lock.
    pub fn remove_peer(&self, key: PeerKey, emit: impl FnOnce(&[PatternChange], Peers<'_, T>)) {
        self.with_changes(emit, |m| {
            let Some(entry) = m.peers.remove(&key) else {
                return Vec::new();
            };
            entry
                .patterns
                .into_iter()
                .map(|p| Self::drop_holder(m, p, key))
                .collect()
        })
    }

    /// Adds `patterns` (already validated and normalised) for `key`. Patterns the
    /// peer already holds are ignored. `emit` sees the changes under the table lock
    /// (so interest frames leave in the order of the changes). Returns the number of
    /// patterns the peer now holds.
    ///
    /// Errors: [`RouteError::LimitExceeded`] (nothing is applied),
    /// [`RouteError::UnknownPeer`].
    pub fn subscribe(
        &self,
        key: PeerKey,
        patterns: &[String],
        emit: impl FnOnce(&[PatternChange], Peers<'_, T>),
    ) -> Result<usize, RouteError> {
        let limit = self.max_patterns_per_peer;
        let mut err = None;
        let mut held = 0;
        self.with_changes(emit, |m| {
            let Some(entry) = m.peers.get_mut(&key) else {
                err = Some(RouteError::UnknownPeer);
                return Vec::new();
            };
            let new: Vec<&String> = patterns
                .iter()
                .filter(|p| !entry.patterns.contains(*p))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if entry.patterns.len() + new.len() > limit {
                err = Some(RouteError::LimitExceeded {
                    held: entry.patterns.len(),
                    limit,
                });
                return Vec::new();
            }
            for p in &new {
                entry.patterns.insert((*p).clone());
            }
            held = entry.patterns.len();
            new.into_iter()
                .map(|p| {
                    let set = m.holders.entry(p.clone()).or_default();
                    let before = set.clone();
                    set.insert(key);
                    PatternChange {
                        pattern: p.clone(),
                        before,
                        after: set.clone(),
                    }
                })
                .collect()
        });
        match err {
            Some(e) => Err(e),
            None => Ok(held),
        }
    }

    /// Removes `patterns` for `key` (unknown ones are ignored); `emit` sees the
    /// changes under the lock. Returns the number of patterns the peer still holds.
    pub fn unsubscribe(
        &self,
        key: PeerKey,
        patterns: &[String],
        emit: impl FnOnce(&[PatternChange], Peers<'_, T>),
    ) -> usize {
        let mut held = 0;
        self.with_changes(emit, |m| {
            let Some(entry) = m.peers.get_mut(&key) else {
                return Vec::new();
            };
            let removed: Vec<String> = patterns
                .iter()
                .filter(|p| entry.patterns.remove(*p))
                .cloned()
                .collect();
            held = entry.patterns.len();
            removed
                .into_iter()
                .map(|p| Self::drop_holder(m, p, key))
                .collect()
        });
        held
    }

    /// Runs `f` with every held pattern while the table is locked: no change can be
    /// emitted between reading this set and whatever `f` does (a node uses it to
    /// re-announce its interest after an uplink reconnect).
    pub fn with_all_patterns<R>(&self, f: impl FnOnce(Vec<String>) -> R) -> R {
        let m = self.lock();
        f(m.holders.keys().cloned().collect())
    }

    fn drop_holder(m: &mut Master<T>, pattern: String, key: PeerKey) -> PatternChange {
        let set = m.holders.entry(pattern.clone()).or_default();
        let before = set.clone();
        set.remove(&key);
        let after = set.clone();
        if after.is_empty() {
            m.holders.remove(&pattern);
        }
        PatternChange {
            pattern,
            before,
            after,
        }
    }

    fn with_changes(
        &self,
        emit: impl FnOnce(&[PatternChange], Peers<'_, T>),
        f: impl FnOnce(&mut Master<T>) -> Vec<PatternChange>,
    ) {
        let mut m = self.lock();
        let changes = f(&mut m);
        if !changes.is_empty() {
            self.snapshot.store(Arc::new(Self::build(&m)));
            emit(&changes, Peers(&m.peers));
        }
    }

    fn build(m: &Master<T>) -> RouteSnapshot<T> {
        let mut index = HashMap::with_capacity(m.peers.len());
        let mut targets = Vec::with_capacity(m.peers.len());
        for (k, e) in &m.peers {
            if !e.patterns.is_empty() {
                index.insert(*k, targets.len() as u32);
                targets.push((*k, e.target.clone()));
            }
        }
        let mut trie = PatternTrie::new();
        for (pattern, holders) in &m.holders {
            let idxs: Vec<u32> = holders
                .iter()
                .filter_map(|k| index.get(k).copied())
                .collect();
            if !idxs.is_empty() {
                trie.insert(pattern, idxs);
            }
        }
        RouteSnapshot { trie, targets }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Master<T>> {
        // A panic while holding this lock would be a bug in this module; the table
        // itself stays consistent because every mutation completes before unlock.
        self.master.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Interest delta for one peer: whether the patterns held by *others* than
/// `peer` (peers outside its group, see [`group_of`]) changed between `before` and `after`. Returns `Some(true)` when the peer
/// must now be told the pattern is wanted, `Some(false)` when no longer, `None` when
/// unchanged. This is how a bridge tells each node what the rest of the realm wants
/// without echoing a node's own interest back to it.
pub fn interest_delta(change: &PatternChange, peer: PeerKey) -> Option<bool> {
    let had = change.before.iter().any(|k| !same_group(*k, peer));
    let has = change.after.iter().any(|k| !same_group(*k, peer));
    match (had, has) {
        (false, true) => Some(true),
        (true, false) => Some(false),
        _ => None,
    }
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

    #[test]
    fn groups_hide_interest_inside_a_cluster() {
        let a1 = grouped_key(7, 1);
        let a2 = grouped_key(7, 2);
        let b1 = grouped_key(8, 3);
        assert!(same_group(a1, a2) && !same_group(a1, b1));
        assert!(!same_group(1, 2) && same_group(1, 1), "group 0 is no group");
        let t: RouteTable<&'static str> = RouteTable::new(10);
        let mut told = Vec::new();
        t.add_peer(a1, "a1", |_, _| {});
        t.add_peer(a2, "a2", |_, _| {});
        t.subscribe(a1, &pats(&["x"]), |changes, _| {
            for c in changes {
                told.push((interest_delta(c, a2), interest_delta(c, b1)));
            }
        })
        .unwrap();
        // a2 (same cluster) is not told; a future b1 would be.
        assert_eq!(told, vec![(None, Some(true))]);
        let mut initial = Vec::new();
        t.add_peer(b1, "b1", |_, others| initial = others);
        assert_eq!(initial, pats(&["x"]));
        let a3 = grouped_key(7, 4);
        let mut initial = vec!["sentinel".to_string()];
        t.add_peer(a3, "a3", |_, others| initial = others);
        assert!(initial.is_empty(), "a cluster's own interest is not echoed");
    }

    fn pats(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn collect_finds_each_target_once() {
        let t: RouteTable<&'static str> = RouteTable::new(10);
        t.add_peer(1, "a", |_, _| {});
        t.add_peer(2, "b", |_, _| {});
        t.subscribe(1, &pats(&["x.*", "x.**"]), |_, _| {}).unwrap();
        t.subscribe(2, &pats(&["y"]), |_, _| {}).unwrap();
        let snap = t.load();
        let mut out = Vec::new();
        snap.collect("x.1", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(snap.target(out[0]).1, "a");
        snap.collect("y", &mut out);
        assert_eq!(snap.target(out[0]).1, "b");
        snap.collect("z", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn limit_is_enforced_without_partial_apply() {
        let t: RouteTable<()> = RouteTable::new(2);
        t.add_peer(1, (), |_, _| {});
        t.subscribe(1, &pats(&["a"]), |_, _| {}).unwrap();
        let err = t.subscribe(1, &pats(&["b", "c"]), |_, _| {}).unwrap_err();
        assert_eq!(err, RouteError::LimitExceeded { held: 1, limit: 2 });
        assert_eq!(t.with_all_patterns(|p| p), pats(&["a"]));
    }

    #[test]
    fn remove_peer_reports_changes_and_clears_snapshot() {
        let t: RouteTable<()> = RouteTable::new(10);
        t.add_peer(1, (), |_, _| {});
        t.add_peer(2, (), |_, _| {});
        t.subscribe(1, &pats(&["a"]), |_, _| {}).unwrap();
        t.subscribe(2, &pats(&["a"]), |_, _| {}).unwrap();
        let mut ch = Vec::new();
        t.remove_peer(1, |c, _| ch = c.to_vec());
        assert_eq!(ch.len(), 1);
        assert_eq!(
            interest_delta(&ch[0], 2),
            Some(false),
            "2 no longer sees others' interest"
        );
        assert_eq!(interest_delta(&ch[0], 3), None, "3 still sees 2's interest");
        t.remove_peer(2, |_, _| {});
        assert_eq!(t.load().patterns(), 0);
        assert!(t.with_all_patterns(|p| p).is_empty());
    }

    #[test]
    fn interest_delta_excludes_own_interest() {
        let t: RouteTable<()> = RouteTable::new(10);
        t.add_peer(1, (), |_, _| {});
        t.add_peer(2, (), |_, _| {});
        let mut ch = Vec::new();
        t.subscribe(1, &pats(&["a"]), |c, _| ch = c.to_vec())
            .unwrap();
        assert_eq!(
            interest_delta(&ch[0], 1),
            None,
            "own interest is not echoed"
        );
        assert_eq!(interest_delta(&ch[0], 2), Some(true));
        t.subscribe(2, &pats(&["a"]), |c, _| ch = c.to_vec())
            .unwrap();
        assert_eq!(
            interest_delta(&ch[0], 1),
            Some(true),
            "1 now sees 2's interest"
        );
        assert_eq!(interest_delta(&ch[0], 2), None);
        let mut initial = Vec::new();
        t.add_peer(3, (), |_, p| initial = p);
        assert_eq!(initial, pats(&["a"]), "a newcomer learns existing interest");
    }
}
