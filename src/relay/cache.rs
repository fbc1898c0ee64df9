//! [`RouteCache`]: a reader's small cache of recent routing results, so a publisher that keeps
//! publishing to the same few topics does not walk the pattern trie for every message.
//!
//! The idea is NATS's per-connection subject cache (`pcache` in `nats-server/server/client.go`):
//! routing results are reused for as long as nothing that routing depends on has changed. Here
//! that is exact: a [`Relay`] counts every change to its links, targets and patterns in its
//! [`Relay::generation`], and a cache that finds the generation moved (or another relay) drops
//! every entry before it answers. A hit costs a few length and byte comparisons of the topic;
//! a miss costs one [`Relay::route`] and reuses the evicted entry's buffers, so a publisher that
//! cycles through more topics than the cache holds costs no allocation either.
//!
//! An entry holds clones of its targets' `Arc`s: a link removed from the relay stays referenced
//! by a cache until its reader routes its next publish (which sees the new generation) or ends.
//! That is at most [`ROUTE_CACHE_ENTRIES`] routes' worth of handles per reader.

use super::{LinkId, Relay, Route};

/// Entries one [`RouteCache`] holds (topics per reader); replaced round-robin when full.
pub const ROUTE_CACHE_ENTRIES: usize = 8;

struct Entry<T> {
    from: LinkId,
    reliable: bool,
    topic: String,
    routes: Vec<Route<T>>,
}

/// Recent `(from, topic, reliable) → routes` results of one reader (see the module docs).
/// Not shared: each reader owns one and passes it the relay it routes on.
pub struct RouteCache<T> {
    entries: Vec<Entry<T>>,
    /// `(relay id, generation)` the entries were computed at.
    stamp: (u64, u64),
    /// The entry replaced next when full.
    victim: usize,
    hits: u64,
    misses: u64,
}

impl<T> Default for RouteCache<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> RouteCache<T> {
    /// An empty cache (no allocation until the first route).
    pub fn new() -> Self {
        RouteCache {
            entries: Vec::new(),
            stamp: (u64::MAX, u64::MAX),
            victim: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// Where a publish on `topic` received from `from` goes, exactly as
    /// [`Relay::route`] would answer now: from the cache when `relay` has not changed since the
    /// entry was computed, else computed and remembered.
    pub fn routes(
        &mut self,
        relay: &Relay<T>,
        from: LinkId,
        topic: &str,
        reliable: bool,
    ) -> &[Route<T>] {
        let stamp = (relay.id, relay.generation);
        if self.stamp != stamp {
            self.entries.clear();
            self.victim = 0;
            self.stamp = stamp;
        }
        let found = self
            .entries
            .iter()
            .position(|e| e.from == from && e.reliable == reliable && e.topic == topic);
        let i = match found {
            Some(i) => {
                self.hits += 1;
                i
            }
            None => {
                self.misses += 1;
                let i = if self.entries.len() < ROUTE_CACHE_ENTRIES {
                    self.entries.push(Entry {
                        from,
                        reliable,
                        topic: String::new(),
                        routes: Vec::new(),
                    });
                    self.entries.len() - 1
                } else {
                    let i = self.victim;
                    self.victim = (i + 1) % ROUTE_CACHE_ENTRIES;
                    i
                };
                let e = &mut self.entries[i];
                e.from = from;
                e.reliable = reliable;
                e.topic.clear();
                e.topic.push_str(topic);
                relay.route(from, topic, reliable, &mut e.routes);
                i
            }
        };
        &self.entries[i].routes
    }

    /// Lookups answered from the cache and computed, since it was made.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::super::LinkKind;
    use super::*;
    use proptest::prelude::*;

    fn links(routes: &[Route<u32>]) -> Vec<(LinkId, Option<u32>)> {
        routes
            .iter()
            .map(|r| (r.link, r.target.as_deref().copied()))
            .collect()
    }

    fn direct(
        r: &Relay<u32>,
        from: LinkId,
        topic: &str,
        reliable: bool,
    ) -> Vec<(LinkId, Option<u32>)> {
        let mut out = Vec::new();
        r.route(from, topic, reliable, &mut out);
        links(&out)
    }

    #[test]
    fn a_repeated_topic_is_answered_from_the_cache_until_the_relay_changes() {
        let mut r: Relay<u32> = Relay::new(10);
        r.add_link(1, LinkKind::Client, Some(std::sync::Arc::new(10)));
        r.add_link(2, LinkKind::Client, Some(std::sync::Arc::new(20)));
        r.subscribe(2, &["a.*".into()]).unwrap();
        let mut c = RouteCache::new();
        assert_eq!(links(c.routes(&r, 1, "a.b", false)), vec![(2, Some(20))]);
        assert_eq!(links(c.routes(&r, 1, "a.b", false)), vec![(2, Some(20))]);
        assert_eq!(c.stats(), (1, 1));
        r.subscribe(1, &["a.b".into()]).unwrap();
        assert_eq!(
            links(c.routes(&r, 1, "a.b", false)),
            vec![(1, Some(10)), (2, Some(20))],
            "a subscribe invalidates"
        );
        r.set_target(2, None);
        assert_eq!(
            links(c.routes(&r, 1, "a.b", false)),
            vec![(1, Some(10)), (2, None)]
        );
        r.remove_link(2);
        assert_eq!(links(c.routes(&r, 1, "a.b", false)), vec![(1, Some(10))]);
        assert_eq!(c.stats(), (1, 4));
    }

    #[test]
    fn another_relay_never_sees_this_ones_entries() {
        let mut a: Relay<u32> = Relay::new(10);
        let mut b: Relay<u32> = Relay::new(10);
        for r in [&mut a, &mut b] {
            r.add_link(1, LinkKind::Client, None);
            r.add_link(2, LinkKind::Client, None);
        }
        a.subscribe(2, &["x".into()]).unwrap();
        let mut c = RouteCache::new();
        assert_eq!(c.routes(&a, 1, "x", false).len(), 1);
        assert_eq!(c.routes(&b, 1, "x", false).len(), 0);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Route(u8, u8, bool),
        Sub(u8, u8),
        Unsub(u8, u8),
        Target(u8, bool),
        Unknown(u8, bool),
        Remove(u8),
        Add(u8, u8),
    }

    const TOPICS: [&str; 12] = [
        "a", "a.b", "a.c", "b.c", "a.b.c", "x.y", "x.z", "q", "r.s", "t", "u.v", "w",
    ];
    const PATTERNS: [&str; 8] = ["a", "a.*", "a.**", "*.c", "x.*", "**", "q", "r.s"];
    const KINDS: [LinkKind; 3] = [LinkKind::Client, LinkKind::Mesh, LinkKind::Uplink];

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u8..6, 0u8..12, any::<bool>()).prop_map(|(f, t, q)| Step::Route(f, t, q)),
            2 => (0u8..6, 0u8..8).prop_map(|(l, p)| Step::Sub(l, p)),
            1 => (0u8..6, 0u8..8).prop_map(|(l, p)| Step::Unsub(l, p)),
            1 => (0u8..6, any::<bool>()).prop_map(|(l, on)| Step::Target(l, on)),
            1 => (0u8..6, any::<bool>()).prop_map(|(l, on)| Step::Unknown(l, on)),
            1 => (0u8..6).prop_map(Step::Remove),
            1 => (0u8..6, 0u8..3).prop_map(|(l, k)| Step::Add(l, k)),
        ]
    }

    proptest! {
        /// Whatever the interleaving of changes and lookups (more topics than entries
        /// included), the cache answers exactly what the relay answers.
        #[test]
        fn the_cache_always_answers_what_the_relay_answers(steps in proptest::collection::vec(step(), 1..200)) {
            let mut r: Relay<u32> = Relay::new(100);
            for l in 0..6u64 {
                r.add_link(l + 1, KINDS[(l % 3) as usize], Some(std::sync::Arc::new(l as u32)));
            }
            let mut c = RouteCache::new();
            for s in steps {
                match s {
                    Step::Route(f, t, q) => {
                        let (from, topic) = (u64::from(f) + 1, TOPICS[t as usize]);
                        let want = direct(&r, from, topic, q);
                        prop_assert_eq!(links(c.routes(&r, from, topic, q)), want);
                    }
                    Step::Sub(l, p) => { let _ = r.subscribe(u64::from(l) + 1, &[PATTERNS[p as usize].into()]); }
                    Step::Unsub(l, p) => { r.unsubscribe(u64::from(l) + 1, &[PATTERNS[p as usize].into()]); }
                    Step::Target(l, on) => r.set_target(u64::from(l) + 1, on.then(|| std::sync::Arc::new(99))),
                    Step::Unknown(l, on) => r.set_unknown(u64::from(l) + 1, on),
                    Step::Remove(l) => { r.remove_link(u64::from(l) + 1); }
                    Step::Add(l, k) => {
                        let link = u64::from(l) + 1;
                        if r.kind(link).is_none() {
                            r.add_link(link, KINDS[k as usize], None);
                        }
                    }
                }
            }
        }
    }
}
