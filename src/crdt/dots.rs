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
        self.ranges.is_empty()
    }
    /// Whether `dot` is in the set.
    pub fn contains(&self, dot: &Dot) -> bool {
        match self.ranges.get(&dot.actor) {
            Some(rs) => range_index(rs, dot.counter).is_some(),
            None => false,
        }
    }
    /// Adds one dot (merging adjacent ranges).
    pub fn insert(&mut self, dot: Dot) {
        self.insert_range(dot.actor, dot.counter, dot.counter);
    }
    /// Adds every dot of `other`.
    pub fn union(&mut self, other: &DotSet) {
        self.union_changed(other);
    }
    /// The dots of `self` that are not in `other`.
    pub fn difference(&self, other: &DotSet) -> DotSet {
        let mut out = DotSet::new();
        for (actor, rs) in &self.ranges {
            let left = match other.ranges.get(actor) {
                Some(theirs) => diff_ranges(rs, theirs),
                None => rs.clone(),
            };
            if !left.is_empty() {
                out.ranges.insert(*actor, left);
            }
        }
        out
    }
    /// True if every dot of `other` is in `self`.
    pub fn covers(&self, other: &DotSet) -> bool {
        other.ranges.iter().all(|(actor, theirs)| {
            let Some(ours) = self.ranges.get(actor) else {
                return false;
            };
            // Ours are non-adjacent, so each of their ranges must lie inside one of ours.
            theirs.iter().all(|&(lo, hi)| match range_index(ours, lo) {
                Some(i) => hi <= ours[i].1,
                None => false,
            })
        })
    }
    /// The next unused counter for `actor`: highest counter seen + 1 (1 when none).
    pub fn next_counter(&self, actor: &ActorId) -> u64 {
        self.ranges
            .get(actor)
            .and_then(|rs| rs.last())
            .map_or(1, |&(_, hi)| hi.saturating_add(1))
    }
    /// Number of ranges over all actors (the encoded size is proportional to it).
    pub fn range_count(&self) -> usize {
        self.ranges.values().map(Vec::len).sum()
    }
    /// Iterates over `(actor, lo, hi)` ranges in order.
    pub fn iter_ranges(&self) -> impl Iterator<Item = (&ActorId, u64, u64)> + '_ {
        self.ranges
            .iter()
            .flat_map(|(a, rs)| rs.iter().map(move |&(lo, hi)| (a, lo, hi)))
    }

    /// Number of actors with at least one dot.
    pub(crate) fn actor_count(&self) -> usize {
        self.ranges.len()
    }
    /// The set of the given dots.
    pub(crate) fn from_dots<'a>(dots: impl IntoIterator<Item = &'a Dot>) -> DotSet {
        let mut s = DotSet::new();
        for d in dots {
            s.insert(*d);
        }
        s
    }
    /// Adds the dots `actor:lo..=hi` (`lo ≤ hi`), keeping the ranges normalized.
    pub(crate) fn insert_range(&mut self, actor: ActorId, lo: u64, hi: u64) {
        debug_assert!(lo <= hi);
        let v = self.ranges.entry(actor).or_default();
        // Ranges i..j touch or overlap [lo, hi]; both predicates are monotone because the
        // ranges are sorted, disjoint and non-adjacent.
        let i = v.partition_point(|&(_, h)| h.saturating_add(1) < lo);
        let j = v.partition_point(|&(l, _)| l <= hi.saturating_add(1));
        let (mut lo, mut hi) = (lo, hi);
        if i < j {
            lo = lo.min(v[i].0);
            hi = hi.max(v[j - 1].1);
        }
        v.splice(i..j, [(lo, hi)]);
    }
    /// [`DotSet::union`]; true if `self` changed.
    pub(crate) fn union_changed(&mut self, other: &DotSet) -> bool {
        let mut changed = false;
        for (actor, theirs) in &other.ranges {
            match self.ranges.get_mut(actor) {
                None => {
                    self.ranges.insert(*actor, theirs.clone());
                    changed = true;
                }
                Some(ours) => {
                    let merged = union_ranges(ours, theirs);
                    if merged != *ours {
                        *ours = merged;
                        changed = true;
                    }
                }
            }
        }
        changed
    }
}

/// The index of the range of `rs` that holds `c`.
fn range_index(rs: &[(u64, u64)], c: u64) -> Option<usize> {
    let i = rs.partition_point(|&(_, hi)| hi < c);
    (i < rs.len() && rs[i].0 <= c).then_some(i)
}

/// Union of two normalized range lists, normalized.
fn union_ranges(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = if j >= b.len() || (i < a.len() && a[i].0 <= b[j].0) {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        match out.last_mut() {
            Some(last) if next.0 <= last.1.saturating_add(1) => last.1 = last.1.max(next.1),
            _ => out.push(next),
        }
    }
    out
}

/// `a − b` for normalized range lists, normalized.
fn diff_ranges(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(lo, hi) in a {
        while j < b.len() && b[j].1 < lo {
            j += 1;
        }
        let mut cur = lo;
        let mut done = false;
        while j < b.len() && b[j].0 <= hi {
            if b[j].0 > cur {
                out.push((cur, b[j].0 - 1));
            }
            if b[j].1 >= hi {
                done = true;
                break;
            }
            cur = b[j].1 + 1;
            j += 1;
        }
        if !done {
            out.push((cur, hi));
        }
    }
    out
}

#[cfg(test)]
mod unit {
    use super::*;

    fn a(n: u8) -> ActorId {
        ActorId([n; 32])
    }
    fn d(n: u8, c: u64) -> Dot {
        Dot {
            actor: a(n),
            counter: c,
        }
    }

    #[test]
    fn insert_merges_adjacent_and_difference_splits() {
        let mut s = DotSet::new();
        for c in [1, 3, 2, 7, 5, 6] {
            s.insert(d(1, c));
        }
        assert_eq!(s.ranges[&a(1)], vec![(1, 3), (5, 7)]);
        s.insert(d(1, 4));
        assert_eq!(s.ranges[&a(1)], vec![(1, 7)]);
        assert_eq!(s.next_counter(&a(1)), 8);
        assert_eq!(s.next_counter(&a(2)), 1);
        let hole = DotSet::from_dots(&[d(1, 2), d(1, 5), d(1, 7), d(2, 1)]);
        let diff = s.difference(&hole);
        assert_eq!(diff.ranges[&a(1)], vec![(1, 1), (3, 4), (6, 6)]);
        assert!(s.covers(&diff));
        assert!(!diff.covers(&s));
        assert!(!s.covers(&hole));
        let mut u = diff.clone();
        u.union(&hole);
        let mut expect = s.clone();
        expect.insert(d(2, 1));
        assert_eq!(u, expect);
        assert!(s.difference(&s).is_empty());
    }

    #[test]
    fn extremes_do_not_overflow() {
        let mut s = DotSet::new();
        s.insert(d(1, u64::MAX));
        s.insert(d(1, u64::MAX - 1));
        assert_eq!(s.ranges[&a(1)], vec![(u64::MAX - 1, u64::MAX)]);
        assert_eq!(s.next_counter(&a(1)), u64::MAX);
        assert!(s.contains(&d(1, u64::MAX)));
        assert!(!s.contains(&d(1, 1)));
    }
}
