//! Subsumption of subscription patterns: which patterns a link must advertise upward so that
//! every pattern its subtree holds is covered, with nothing redundant (`a.**` covers `a.b.*`).
//!
//! [`covers`] is a sufficient test, not an exact one: when it says `p` covers `q`, every topic
//! matching `q` matches `p`; a few exotic pairs it cannot prove (`**.*` covers `*.**`) are
//! simply both advertised, which costs a pattern upstream and never a message.

use std::collections::HashSet;

use crate::topic::{is_wildcard, PatternTrie};

/// One change to what a link advertises: `true` when `pattern` starts being advertised,
/// `false` when it stops.
pub type CoverChange = (String, bool);

/// Whether every topic matched by pattern `q` is matched by pattern `p`; see
/// [`crate::topic::covers`] (sound, not complete).
pub use crate::topic::covers;

/// The patterns told to one link and the minimal cover of them it advertises.
///
/// Invariants (checked by the property tests): `advertised ⊆ told`; every told pattern is
/// covered by an advertised one; no advertised pattern is covered by another.
#[derive(Debug, Default)]
pub struct Cover {
    told: HashSet<String>,
    advertised: HashSet<String>,
    /// The advertised patterns, for "is this literal covered" in one trie walk.
    trie: PatternTrie<()>,
    /// The advertised patterns holding a wildcard (the only ones that can cover one).
    wild: Vec<String>,
}

impl Cover {
    /// An empty cover.
    pub fn new() -> Self {
        Self::default()
    }

    /// The advertised patterns (a minimal cover of the told ones), in no order.
    pub fn advertised(&self) -> impl Iterator<Item = &str> {
        self.advertised.iter().map(String::as_str)
    }

    /// Whether `p` is among the told patterns.
    pub fn is_told(&self, p: &str) -> bool {
        self.told.contains(p)
    }

    /// Number of told patterns.
    pub fn told_len(&self) -> usize {
        self.told.len()
    }

    /// `p` is now wanted; appends to `out` what the link must now advertise or withdraw
    /// (additions before the withdrawals they make redundant).
    pub fn add(&mut self, p: &str, out: &mut Vec<CoverChange>) {
        if !self.told.insert(p.to_string()) || self.is_covered(p) {
            return;
        }
        self.advertise(p, out);
    }

    /// `p` is no longer wanted; appends the changes to `out` (what `p` covered and nothing
    /// else does is advertised before `p` is withdrawn).
    pub fn remove(&mut self, p: &str, out: &mut Vec<CoverChange>) {
        if !self.told.remove(p) || !self.advertised.contains(p) {
            return;
        }
        self.unadvertise(p);
        if !is_wildcard(p) {
            // A literal covers only itself: nothing else was hidden behind it.
            out.push((p.to_string(), false));
            return;
        }
        // O(told patterns) covering checks: only a wildcard's withdrawal pays this.
        let mut orphans: Vec<String> = self.told.iter().filter(|q| covers(p, q)).cloned().collect();
        // Wildcards first: they tend to cover the literals, which then need no entry.
        orphans.sort_by_key(|q| !is_wildcard(q));
        for q in orphans {
            if !self.is_covered(&q) {
                self.advertise(&q, out);
            }
        }
        out.push((p.to_string(), false));
    }

    fn is_covered(&self, p: &str) -> bool {
        if self.advertised.contains(p) {
            return true;
        }
        if is_wildcard(p) {
            self.wild.iter().any(|a| covers(a, p))
        } else {
            // A literal pattern is a valid topic: covered iff some advertised pattern matches it.
            self.trie.any_match(p)
        }
    }

    fn advertise(&mut self, p: &str, out: &mut Vec<CoverChange>) {
        out.push((p.to_string(), true));
        if is_wildcard(p) {
            let redundant: Vec<String> = self
                .advertised
                .iter()
                .filter(|q| q.as_str() != p && covers(p, q))
                .cloned()
                .collect();
            for q in redundant {
                self.unadvertise(&q);
                out.push((q, false));
            }
            self.wild.push(p.to_string());
        }
        self.advertised.insert(p.to_string());
        self.trie.insert(p, ());
    }

    fn unadvertise(&mut self, p: &str) {
        self.advertised.remove(p);
        self.trie.remove(p);
        if let Some(i) = self.wild.iter().position(|w| w == p) {
            self.wild.swap_remove(i);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn covers_examples() {
        assert!(covers("a.**", "a.b.*"));
        assert!(covers("a.**", "a"));
        assert!(covers("**", "x.**.y"));
        assert!(covers("a.*", "a.b"));
        assert!(covers("a.*.c", "a.*.c"));
        assert!(
            !covers("a.*", "a.**"),
            "`*` is one segment, `**` may be many"
        );
        assert!(!covers("a.b", "a.*"));
        assert!(!covers("a.*", "a.b.c"));
        assert!(!covers("a.**.c", "a.b"));
        assert!(covers("a.**.c", "a.b.*.c"));
    }

    /// A random valid, normalised pattern over segments `a`, `b`, `*` and `**` (1–3 of them).
    pub(in crate::relay) fn pattern() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "b", Just("*".to_string()), "\\*\\*"], 1..4)
            .prop_map(|s| crate::topic::normalize_pattern(&s.join(".")).expect("valid"))
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..5).prop_map(|s| s.join("."))
    }

    proptest! {
        /// Soundness: when `covers(p, q)`, no topic matches q without matching p.
        #[test]
        fn covers_is_sound(p in pattern(), q in pattern(), ts in proptest::collection::vec(topic(), 40)) {
            if covers(&p, &q) {
                for t in &ts {
                    if crate::topic::matches(&q, t) {
                        prop_assert!(crate::topic::matches(&p, t), "{p} covers {q} but not {t}");
                    }
                }
            }
        }

        /// The cover invariants hold after any sequence of adds and removes, and the changes
        /// it emitted, applied in order, give exactly the advertised set.
        #[test]
        fn cover_stays_minimal_and_complete(ops in proptest::collection::vec((any::<bool>(), pattern()), 1..60)) {
            let mut c = Cover::new();
            let mut remote: HashSet<String> = HashSet::new();
            let mut out = Vec::new();
            for (add, p) in ops {
                out.clear();
                if add { c.add(&p, &mut out) } else { c.remove(&p, &mut out) }
                for (q, on) in &out {
                    if *on { remote.insert(q.clone()); } else { remote.remove(q); }
                }
                let adv: HashSet<String> = c.advertised().map(str::to_string).collect();
                prop_assert_eq!(&adv, &remote);
                for a in &adv {
                    prop_assert!(c.told.contains(a));
                    prop_assert!(!adv.iter().any(|b| b != a && covers(b, a)), "{a} is redundant");
                }
                for t in &c.told {
                    prop_assert!(adv.iter().any(|a| covers(a, t)), "{t} is not covered");
                }
            }
        }
    }
}
