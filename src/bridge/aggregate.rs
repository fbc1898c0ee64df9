//! Aggregation of a child's replicated store into the bridge's level store
//! (`docs/GOSSIP.md`, "Across levels"). Pure.
//!
//! A bridge holds a replica of each child's store (a cluster's store, or a child bridge's
//! level store) and folds it into its own level's store for the realm, so the level above
//! sees summaries per child, not every node's detail:
//! - **OR-Set** `K` (application key): the level's `K` holds `child ‖ 0x00 ‖ e` for each
//!   element `e` of the child's `K` (for a child bridge, `e` with its own child tag
//!   stripped): which child holds what, one level deep.
//! - **System sets** `$rpc/<p>`, `$sub/<pattern>`: the level's key holds `child ‖ 0x00` while
//!   the child's set is not empty (which children provide `p` / want `pattern`).
//!   `$clusters` holds `child ‖ 0x00` while the child has members (a cluster: `$members` not
//!   empty; a child bridge: its `$clusters` not empty).
//! - **G-Counter** `K`: one entry per child (actor = SHA-256 of the child's name) whose value
//!   (count − base) is the child's total; **PN-Counter** likewise with the child's increments
//!   and decrements. A total that grows raises the count; one that shrinks (the child
//!   removed the key, or part of it: an observed reset) raises the base to the count and the
//!   count by the new total, so both stay monotone and per-actor max merge keeps the level
//!   right at every level. A child that removed the key (it is retired there) contributes 0;
//!   a child store that is gone (timed out) keeps its last totals, as before removals.
//! - **LWW-Register** `K`: the child's register merged as it is (the latest write wins),
//!   its removal (a tombstone, kept while the key is retired) too.
//! - `$members`, `$meta/…`: not aggregated (node detail stays in the cluster).
//!
//! Elements are added and removed through the level store's own OR-Set operations, with the
//! bridge as actor; [`reconcile`] computes what to do so that the level's elements tagged
//! with `child` equal what the child has now.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest as _, Sha256};

use crate::crdt::{ActorId, Crdt, CrdtMap, GCounter, Op, PnCounter};
use crate::state::{MEMBERS_KEY, META_PREFIX, RPC_PREFIX, SUB_PREFIX};

/// Key of the level's set of children with members.
pub const CLUSTERS_KEY: &str = "$clusters";

/// What to do to the level store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Apply a local operation (OR-Set adds and removes).
    Apply(String, Op),
    /// Join a state (counters, registers).
    Merge(CrdtMap),
}

/// The actor id standing for `child` in aggregated counters.
pub fn child_actor(child: &str) -> ActorId {
    ActorId(Sha256::digest(child.as_bytes()).into())
}

/// `child ‖ 0x00 ‖ inner`.
pub fn tagged(child: &str, inner: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(child.len() + 1 + inner.len());
    b.put_slice(child.as_bytes());
    b.put_u8(0);
    b.put_slice(inner);
    b.freeze()
}

/// The element with its first tag (up to and including the first 0x00) removed; the element
/// itself when it has none.
pub fn untagged(e: &[u8]) -> &[u8] {
    match e.iter().position(|&b| b == 0) {
        Some(i) => &e[i + 1..],
        None => e,
    }
}

fn is_system_set(key: &str) -> bool {
    key.starts_with(RPC_PREFIX) || key.starts_with(SUB_PREFIX)
}

fn skipped(key: &str) -> bool {
    key == MEMBERS_KEY || key.starts_with(META_PREFIX) || key == CLUSTERS_KEY
}

/// The changes that make the level store's view of `child` equal to `child_store`
/// (`child_is_bridge`: the child is a bridge level store, whose set elements are tagged).
/// An empty `child_store` withdraws everything the child contributed to sets.
pub fn reconcile(
    level: &CrdtMap,
    child: &str,
    child_store: &CrdtMap,
    child_is_bridge: bool,
) -> Vec<Change> {
    let mut out = Vec::new();
    let mut merge = CrdtMap::new();
    let mut set_keys: BTreeSet<String> = BTreeSet::new();
    // Expected elements per set key.
    let mut expected: Vec<(String, BTreeSet<Bytes>)> = Vec::new();
    let has_members = match (
        child_is_bridge,
        child_store.crdt(if child_is_bridge {
            CLUSTERS_KEY
        } else {
            MEMBERS_KEY
        }),
    ) {
        (_, Some(Crdt::OrSet(s))) => !s.is_empty(),
        _ => false,
    };
    let mut clusters = BTreeSet::new();
    if has_members {
        clusters.insert(tagged(child, b""));
    }
    expected.push((CLUSTERS_KEY.to_string(), clusters));
    set_keys.insert(CLUSTERS_KEY.to_string());
    let me = child_actor(child);
    for (key, value) in child_store.iter().chain(child_store.iter_retired()) {
        if skipped(key) {
            continue;
        }
        let retired = child_store.crdt(key).is_none();
        match value {
            Crdt::OrSet(_) if retired => {}
            Crdt::OrSet(s) => {
                let want: BTreeSet<Bytes> = if is_system_set(key) {
                    if s.is_empty() {
                        BTreeSet::new()
                    } else {
                        [tagged(child, b"")].into()
                    }
                } else {
                    s.elements()
                        .map(|e| {
                            let inner = if child_is_bridge { untagged(e) } else { &e[..] };
                            tagged(child, inner)
                        })
                        .collect()
                };
                set_keys.insert(key.clone());
                expected.push((key.clone(), want));
            }
            Crdt::Lww(r) => {
                if r.is_set() && level_kind_ok(level, key, value) {
                    merge.insert(key.clone(), Crdt::Lww(r.clone()));
                }
            }
            Crdt::GCounter(_) | Crdt::PnCounter(_) => {
                if !level_kind_ok(level, key, value) {
                    continue;
                }
                let (p, n, empty) = match value {
                    Crdt::GCounter(c) => (c.value(), 0, Crdt::GCounter(GCounter::default())),
                    Crdt::PnCounter(c) => (
                        c.p.value(),
                        c.n.value(),
                        Crdt::PnCounter(PnCounter::default()),
                    ),
                    _ => unreachable!("matched above"),
                };
                let held = level.held(key).unwrap_or(&empty);
                if let Some(d) = counter_change(held, &me, p, n) {
                    merge.insert(key.clone(), d);
                }
            }
        }
    }
    // Sets the level has with this child's elements but the child no longer has as a key.
    let prefix = tagged(child, b"");
    for (key, value) in level.iter() {
        if let Crdt::OrSet(s) = value {
            if !set_keys.contains(key) && s.elements().any(|e| e.starts_with(&prefix)) {
                expected.push((key.clone(), BTreeSet::new()));
            }
        }
    }
    for (key, want) in expected {
        let have: BTreeSet<Bytes> = match level.crdt(&key) {
            Some(Crdt::OrSet(s)) => s
                .elements()
                .filter(|e| e.starts_with(&prefix))
                .cloned()
                .collect(),
            Some(_) => continue, // the level holds another kind: refused, nothing to do
            None => BTreeSet::new(),
        };
        for e in want.difference(&have) {
            out.push(Change::Apply(key.clone(), Op::SetAdd(e.clone())));
        }
        for e in have.difference(&want) {
            out.push(Change::Apply(key.clone(), Op::SetRemove(e.clone())));
        }
    }
    if !merge.is_empty() {
        out.push(Change::Merge(merge));
    }
    out
}

/// The join that makes `actor`'s contribution to the level's counter `held` equal `p`
/// (increments) and `n` (decrements; a G-Counter's is 0); `None` when it already does, or
/// `held` is no counter. Counts and bases only grow: a contribution that must shrink gets
/// its base raised to its count and its count raised by the new total. Skipped (`None`) at
/// u64 overflow.
fn counter_change(held: &Crdt, actor: &ActorId, p: u64, n: u64) -> Option<Crdt> {
    fn half(level: Option<&GCounter>, actor: &ActorId, want: u64) -> Option<GCounter> {
        let (count, base) = level.map_or((0, 0), |g| (g.get(actor), g.base_of(actor)));
        let now = count - base;
        let (count, base) = match want.cmp(&now) {
            std::cmp::Ordering::Equal => return None,
            std::cmp::Ordering::Greater => (base.checked_add(want)?, base),
            std::cmp::Ordering::Less => (count.checked_add(want)?, count),
        };
        let mut g = GCounter::default();
        if count > 0 {
            g.counts.insert(*actor, count);
            if base > 0 {
                g.base.insert(*actor, base);
            }
        }
        Some(g)
    }
    match held {
        Crdt::GCounter(g) => half(Some(g), actor, p).map(Crdt::GCounter),
        Crdt::PnCounter(c) => {
            let (dp, dn) = (half(Some(&c.p), actor, p), half(Some(&c.n), actor, n));
            if dp.is_none() && dn.is_none() {
                return None;
            }
            Some(Crdt::PnCounter(PnCounter {
                p: dp.unwrap_or_default(),
                n: dn.unwrap_or_default(),
            }))
        }
        _ => None,
    }
}

fn level_kind_ok(level: &CrdtMap, key: &str, value: &Crdt) -> bool {
    match level.held(key) {
        None => true,
        Some(l) => std::mem::discriminant(l) == std::mem::discriminant(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{Hlc, Limits, Value};

    fn actor(b: u8) -> ActorId {
        ActorId([b; 32])
    }

    /// Applies `changes` to `level` as the bridge (actor 9) would.
    fn apply(level: &mut CrdtMap, changes: Vec<Change>) {
        let l = Limits::default();
        for c in changes {
            match c {
                Change::Apply(k, op) => {
                    level.apply(&k, op, actor(9), Hlc::default(), &l).unwrap();
                }
                Change::Merge(d) => {
                    let s = level.merge(&d, &l);
                    assert!(s.refused.is_empty(), "{:?}", s.refused);
                }
            }
        }
    }

    fn cluster(members: &[&str], tags: &[&str], hits: u64) -> CrdtMap {
        let l = Limits::default();
        let mut m = CrdtMap::new();
        for (i, mem) in members.iter().enumerate() {
            m.apply(
                MEMBERS_KEY,
                Op::SetAdd(Bytes::from(mem.to_string())),
                actor(i as u8),
                Hlc::default(),
                &l,
            )
            .unwrap();
        }
        for t in tags {
            m.apply(
                "tags",
                Op::SetAdd(Bytes::from(t.to_string())),
                actor(1),
                Hlc::default(),
                &l,
            )
            .unwrap();
        }
        if hits > 0 {
            m.apply("hits", Op::Increment(hits), actor(1), Hlc::default(), &l)
                .unwrap();
        }
        m.apply(
            "$rpc/echo",
            Op::SetAdd("n1".into()),
            actor(1),
            Hlc::default(),
            &l,
        )
        .unwrap();
        m
    }

    fn set(level: &CrdtMap, key: &str) -> Vec<Bytes> {
        match level.get(key) {
            Some(Value::Set(v)) => v,
            None => Vec::new(),
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn children_are_summarised_per_child() {
        let mut level = CrdtMap::new();
        let a = cluster(&["n1", "n2"], &["x", "y"], 5);
        let b = cluster(&["n3"], &["x"], 2);
        let c = reconcile(&level, "a", &a, false);
        apply(&mut level, c);
        let c = reconcile(&level, "b", &b, false);
        apply(&mut level, c);
        assert_eq!(
            set(&level, "tags"),
            vec![tagged("a", b"x"), tagged("a", b"y"), tagged("b", b"x")]
        );
        assert_eq!(level.get("hits"), Some(Value::GCounter(7)));
        assert_eq!(
            set(&level, CLUSTERS_KEY),
            vec![tagged("a", b""), tagged("b", b"")]
        );
        assert_eq!(
            set(&level, "$rpc/echo"),
            vec![tagged("a", b""), tagged("b", b"")]
        );
        // Node detail stays below.
        assert!(level.get(MEMBERS_KEY).is_none());
        // Reconciling again changes nothing (idempotent).
        assert!(reconcile(&level, "a", &a, false)
            .iter()
            .all(|c| matches!(c, Change::Merge(_))));
    }

    #[test]
    fn a_removal_and_a_vanished_child_are_withdrawn() {
        let mut level = CrdtMap::new();
        let a = cluster(&["n1"], &["x", "y"], 1);
        let c = reconcile(&level, "a", &a, false);
        apply(&mut level, c);
        let a2 = cluster(&["n1"], &["y"], 3);
        let c = reconcile(&level, "a", &a2, false);
        apply(&mut level, c);
        assert_eq!(set(&level, "tags"), vec![tagged("a", b"y")]);
        assert_eq!(level.get("hits"), Some(Value::GCounter(3)));
        // The child's store is gone (timed out): its set contributions go; counters keep
        // their monotone totals.
        let c = reconcile(&level, "a", &CrdtMap::new(), false);
        apply(&mut level, c);
        assert!(set(&level, "tags").is_empty());
        assert!(set(&level, CLUSTERS_KEY).is_empty());
        assert!(set(&level, "$rpc/echo").is_empty());
        assert_eq!(level.get("hits"), Some(Value::GCounter(3)));
    }

    /// A child's removal of a counter or register reaches the level: the counter's
    /// contribution drops to 0 (and grows again from there), the register's tombstone wins
    /// over the older write; another child's contribution stays.
    #[test]
    fn a_childs_removals_reach_the_level() {
        let l = Limits::default();
        let at = |ms| Hlc {
            wall_ms: ms,
            logical: 0,
        };
        let mut level = CrdtMap::new();
        let mut a = CrdtMap::new();
        let mut b = CrdtMap::new();
        a.apply("hits", Op::Increment(5), actor(1), at(1), &l)
            .unwrap();
        a.apply("bal", Op::Add(-4), actor(1), at(1), &l).unwrap();
        a.apply("color", Op::Put("red".into()), actor(1), at(1), &l)
            .unwrap();
        b.apply("hits", Op::Increment(2), actor(2), at(1), &l)
            .unwrap();
        for (name, store) in [("a", &a), ("b", &b)] {
            let c = reconcile(&level, name, store, false);
            apply(&mut level, c);
        }
        assert_eq!(level.get("hits"), Some(Value::GCounter(7)));
        assert_eq!(level.get("bal"), Some(Value::PnCounter(-4)));
        for key in ["hits", "bal", "color"] {
            a.apply(key, Op::Delete, actor(1), at(2), &l).unwrap();
        }
        assert_eq!(a.retire_dead(["hits", "bal", "color"], &l), 3);
        let c = reconcile(&level, "a", &a, false);
        apply(&mut level, c);
        assert_eq!(level.get("hits"), Some(Value::GCounter(2)), "b's 2 stay");
        assert_eq!(level.get("bal"), None, "nothing live: reads as absent");
        assert_eq!(level.get("color"), None);
        // Counting again after the removal starts from 0.
        a.apply("hits", Op::Increment(1), actor(1), at(3), &l)
            .unwrap();
        let c = reconcile(&level, "a", &a, false);
        apply(&mut level, c);
        assert_eq!(level.get("hits"), Some(Value::GCounter(3)));
        // Reconciling again changes nothing (idempotent).
        let before = level.clone();
        let c = reconcile(&level, "a", &a, false);
        apply(&mut level, c);
        assert_eq!(level, before);
    }

    #[test]
    fn a_child_bridge_level_is_retagged_with_the_child() {
        // Street level store (as the city receives it): elements tagged by cluster.
        let mut street = CrdtMap::new();
        let c = reconcile(&street, "a", &cluster(&["n1"], &["x"], 4), false);
        apply(&mut street, c);
        let mut city = CrdtMap::new();
        let c = reconcile(&city, "street/1234", &street, true);
        apply(&mut city, c);
        assert_eq!(set(&city, "tags"), vec![tagged("street/1234", b"x")]);
        assert_eq!(set(&city, CLUSTERS_KEY), vec![tagged("street/1234", b"")]);
        assert_eq!(city.get("hits"), Some(Value::GCounter(4)));
    }

    #[test]
    fn registers_merge_as_they_are_and_kind_clashes_are_skipped() {
        let l = Limits::default();
        let mut child = CrdtMap::new();
        let ts = Hlc {
            wall_ms: 10,
            logical: 0,
        };
        child
            .apply("color", Op::Put("red".into()), actor(1), ts, &l)
            .unwrap();
        child
            .apply("tags", Op::Increment(1), actor(1), ts, &l)
            .unwrap();
        let mut level = CrdtMap::new();
        // The level already holds "tags" as a set from another child.
        level
            .apply("tags", Op::SetAdd(tagged("b", b"z")), actor(9), ts, &l)
            .unwrap();
        let c = reconcile(&level, "a", &child, false);
        apply(&mut level, c);
        assert_eq!(level.get("color"), Some(Value::Register("red".into(), ts)));
        assert_eq!(set(&level, "tags"), vec![tagged("b", b"z")]);
    }
}
