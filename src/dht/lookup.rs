//! The iterative FIND_NODE / FIND_VALUE lookup (the paper, §2.3), as a sans-IO state machine.
//!
//! A [`Lookup`] starts from seed contacts (the caller's `closest(target, k)`), keeps a
//! candidate list sorted by distance to the target, and asks the closest unqueried
//! candidates for *their* closest contacts, up to `alpha` queries in flight **in parallel**
//! (Macula v0.16 defect 7: the Erlang code sent them one after another).
//!
//! Driving it:
//! 1. [`Lookup::poll`]`(now)` returns [`Action::Send`] for each query to start (the caller
//!    sends FIND_NODE / FIND_VALUE for the target with that correlation id) and, once,
//!    [`Action::Done`] with the [`Outcome`]. It also fails queries older than
//!    `query_timeout_ms`, which frees their slot.
//! 2. [`Lookup::on_reply`] feeds a reply; [`Lookup::on_error`] a query that failed early
//!    (connection refused, stream reset).
//! 3. Call `poll` again after every input and when [`Lookup::next_timeout`] is reached.
//!
//! **Termination** (the paper, §2.3, in the "strict" form also used by libp2p): the lookup
//! ends when the `k` closest candidates that have not failed have all responded — nothing
//! among them is unqueried or in flight. Queries still in flight to farther nodes are then
//! abandoned (their late replies get [`ReplyStatus::Finished`]). A FIND_VALUE lookup ends at
//! the first value. The lookup also ends after `max_queries` queries, returning the best it
//! has.
//!
//! **Bounds**: at most `max_candidates` (default 3k) candidates are kept — the farthest are
//! dropped — and only the first `k` contacts of a reply are read, so a hostile peer returning
//! thousands of contacts costs neither memory nor time. Correlation ids are `first_id`,
//! `first_id + 1`, … (see [`Lookup::with_first_correlation_id`]); a reply with an unknown id
//! or from a peer other than the one asked is ignored and reported as such.

use super::id::{Distance, Id, NodeId};
use super::table::Contact;
use super::{Timestamp, ALPHA, K};

/// Default time a query may stay unanswered before it counts as failed, in ms: 5 s, the RPC
/// timeout of Macula v0.16.
pub const QUERY_TIMEOUT_MS: u64 = 5_000;

/// What a lookup looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    /// FIND_NODE: the `k` nodes closest to the target (the paper, §2.3).
    FindNode,
    /// FIND_VALUE: a record stored under the target key, or the `k` closest nodes if none
    /// answers with one (the paper, §2.3).
    FindValue,
}

/// Tuning of a [`Lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupParams {
    /// Queries in flight at once (default [`ALPHA`] = 3; at least 1).
    pub alpha: usize,
    /// Result size and termination window (default [`K`] = 20; at least 1).
    pub k: usize,
    /// Time after which an unanswered query fails, in ms (default [`QUERY_TIMEOUT_MS`]).
    pub query_timeout_ms: u64,
    /// Candidates kept, closest first (default 3k = 60; at least `k`).
    pub max_candidates: usize,
    /// Queries sent before the lookup gives up and returns what it has (default 10k = 200).
    pub max_queries: usize,
}

impl Default for LookupParams {
    fn default() -> Self {
        LookupParams {
            alpha: ALPHA,
            k: K,
            query_timeout_ms: QUERY_TIMEOUT_MS,
            max_candidates: 3 * K,
            max_queries: 10 * K,
        }
    }
}

/// Work for the caller, returned by [`Lookup::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a FIND_NODE / FIND_VALUE query for the lookup's target to `to`, carrying
    /// `correlation_id`, and feed the answer to [`Lookup::on_reply`].
    Send {
        /// The node to ask.
        to: Contact,
        /// Id pairing the reply with this query (unique within the lookup).
        correlation_id: u64,
    },
    /// The lookup is over (returned once).
    Done(Outcome),
}

/// Result of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The closest nodes that responded, closest first, at most `k` (fewer if the network
    /// is smaller or too many failed). Also the result of a FIND_VALUE that found no value.
    Nodes(Vec<Contact>),
    /// A FIND_VALUE reply carrying a value.
    Value {
        /// The value bytes as the peer returned them.
        value: Vec<u8>,
        /// The node that returned it.
        from: Contact,
        /// The closest node that responded without the value: where the paper (§2.3)
        /// suggests caching the value.
        cache_at: Option<Contact>,
    },
}

/// Body of a reply to a lookup query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The responder's closest contacts to the target (at most `k` are read).
    Nodes(Vec<Contact>),
    /// The value stored under the target key (FIND_VALUE only).
    Value(Vec<u8>),
}

/// How [`Lookup::on_reply`] handled a reply; everything but `Accepted` and `Late` means the
/// reply was ignored (callers count those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    /// Paired with an in-flight query and used.
    Accepted,
    /// Paired with a query that had already timed out; used anyway (the node is alive).
    Late,
    /// No query of this lookup has that correlation id.
    UnknownCorrelation,
    /// The correlation id belongs to a query sent to another node.
    WrongPeer,
    /// The query was already answered or failed by [`Lookup::on_error`].
    Duplicate,
    /// The lookup is over.
    Finished,
}

/// Counters of one lookup, for metrics (`macula_dht_routing_hops`) and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Queries sent (messages).
    pub queries: u32,
    /// Replies accepted (including late ones).
    pub replies: u32,
    /// Queries failed by timeout.
    pub timeouts: u32,
    /// Queries failed by [`Lookup::on_error`].
    pub errors: u32,
    /// Replies ignored (unknown correlation, wrong peer, duplicate, after the end).
    pub ignored: u32,
    /// Most queries in flight at once (never above `alpha`).
    pub max_in_flight: u32,
    /// Rounds: the largest hop count of a node that responded, where seeds are hop 1 and a
    /// contact learned from a hop-h reply is hop h + 1. With alpha-parallel queries this is
    /// the number of sequential round trips the lookup needed.
    pub rounds: u32,
}

/// One iterative lookup. See the module doc for the protocol.
#[derive(Debug, Clone)]
pub struct Lookup {
    local: NodeId,
    target: Id,
    kind: LookupKind,
    params: LookupParams,
    /// Sorted by distance to `target`, closest first; at most `max_candidates` plus the
    /// in-flight ones that would otherwise have been dropped.
    candidates: Vec<Candidate>,
    next_cid: u64,
    first_cid: u64,
    in_flight: usize,
    value: Option<(Vec<u8>, Contact)>,
    finished: bool,
    stats: LookupStats,
}

impl Lookup {
    /// A lookup by the node `local` (never queried, never returned) for `target`, starting
    /// from `seeds` (usually the local table's `closest(target, k)`; duplicates and `local`
    /// are skipped).
    pub fn new(
        local: NodeId,
        target: Id,
        kind: LookupKind,
        seeds: Vec<Contact>,
        mut params: LookupParams,
    ) -> Self {
        params.alpha = params.alpha.max(1);
        params.k = params.k.max(1);
        params.max_candidates = params.max_candidates.max(params.k);
        let mut l = Lookup {
            local,
            target,
            kind,
            params,
            candidates: Vec::with_capacity(params.max_candidates + params.alpha),
            next_cid: 0,
            first_cid: 0,
            in_flight: 0,
            value: None,
            finished: false,
            stats: LookupStats::default(),
        };
        for c in seeds {
            l.add_candidate(c, 1);
        }
        l
    }

    /// Makes correlation ids start at `first` (before the first `poll`), so a caller running
    /// several lookups can give each a disjoint range (e.g. `lookup_number << 32`).
    pub fn with_first_correlation_id(mut self, first: u64) -> Self {
        if self.stats.queries == 0 {
            self.first_cid = first;
            self.next_cid = first;
        }
        self
    }

    /// The target id.
    pub fn target(&self) -> Id {
        self.target
    }

    /// FIND_NODE or FIND_VALUE.
    pub fn kind(&self) -> LookupKind {
        self.kind
    }

    /// Queries in flight now (≤ alpha).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// True once [`Action::Done`] was returned.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Counters so far.
    pub fn stats(&self) -> LookupStats {
        self.stats
    }

    /// Contacts whose query failed (timed out without a late reply, or
    /// [`on_error`](Self::on_error)), closest first. The caller should count these against
    /// the contacts in its routing table (e.g. [`RoutingTable::remove`] them), which is how
    /// dead nodes leave the tables (Macula v0.16 defects 7 and 12). Candidates dropped by the
    /// `max_candidates` bound are not listed.
    ///
    /// [`RoutingTable::remove`]: super::RoutingTable::remove
    pub fn failed(&self) -> impl Iterator<Item = &Contact> + '_ {
        self.candidates
            .iter()
            .filter(|c| matches!(c.state, State::TimedOut { .. } | State::Failed))
            .map(|c| &c.contact)
    }

    /// When the oldest in-flight query times out: the caller should `poll` then. `None`
    /// when nothing is in flight or the lookup is over.
    pub fn next_timeout(&self) -> Option<Timestamp> {
        if self.finished {
            return None;
        }
        self.candidates
            .iter()
            .filter_map(|c| match c.state {
                State::InFlight { sent_at, .. } => {
                    Some(sent_at.plus_millis(self.params.query_timeout_ms))
                }
                _ => None,
            })
            .min()
    }

    /// Advances the lookup at `now`: fails queries sent `query_timeout_ms` ago or earlier,
    /// then returns the queries to send (never more than alpha in flight) or, once,
    /// [`Action::Done`]. Returns nothing after `Done`.
    pub fn poll(&mut self, now: Timestamp) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.finished {
            return actions;
        }
        let timeout = self.params.query_timeout_ms;
        for c in &mut self.candidates {
            if let State::InFlight { cid, sent_at } = c.state {
                if now.millis_since(sent_at) >= timeout {
                    c.state = State::TimedOut { cid };
                    self.in_flight -= 1;
                    self.stats.timeouts += 1;
                }
            }
        }
        if let Some((value, from)) = self.value.take() {
            let cache_at = self
                .candidates
                .iter()
                .find(|c| c.state == State::Responded)
                .map(|c| c.contact);
            return self.finish(Outcome::Value {
                value,
                from,
                cache_at,
            });
        }
        // Walk the k closest candidates that have not failed.
        let mut seen = 0;
        let mut waiting = false;
        let max_queries = self.params.max_queries;
        for i in 0..self.candidates.len() {
            if seen == self.params.k {
                break;
            }
            match self.candidates[i].state {
                State::TimedOut { .. } | State::Failed => continue,
                State::Responded => {}
                State::InFlight { .. } => waiting = true,
                State::NotQueried => {
                    if self.in_flight < self.params.alpha
                        && (self.stats.queries as usize) < max_queries
                    {
                        let cid = self.next_cid;
                        self.next_cid += 1;
                        self.candidates[i].state = State::InFlight { cid, sent_at: now };
                        self.in_flight += 1;
                        self.stats.queries += 1;
                        self.stats.max_in_flight =
                            self.stats.max_in_flight.max(self.in_flight as u32);
                        actions.push(Action::Send {
                            to: self.candidates[i].contact,
                            correlation_id: cid,
                        });
                    }
                    waiting = true;
                }
            }
            seen += 1;
        }
        let stuck = self.in_flight == 0 && actions.is_empty();
        if !waiting || stuck {
            let nodes = self
                .candidates
                .iter()
                .filter(|c| c.state == State::Responded)
                .take(self.params.k)
                .map(|c| c.contact)
                .collect();
            return self.finish(Outcome::Nodes(nodes));
        }
        actions
    }

    /// Feeds the reply carrying `correlation_id` from node `from`, received at `now`.
    /// Contacts in a `Nodes` reply become candidates (the first `k`, skipping `local` and
    /// duplicates); a `Value` reply ends a FIND_VALUE lookup at the next `poll` (in a
    /// FIND_NODE lookup it counts as a reply without contacts).
    pub fn on_reply(
        &mut self,
        correlation_id: u64,
        from: &NodeId,
        reply: Reply,
        now: Timestamp,
    ) -> ReplyStatus {
        let _ = now;
        let status = self.pair(correlation_id, from);
        let idx = match status {
            Ok(idx) => idx,
            Err(s) => {
                self.stats.ignored += 1;
                return s;
            }
        };
        let late = matches!(self.candidates[idx].state, State::TimedOut { .. });
        if !late {
            self.in_flight -= 1;
        }
        self.candidates[idx].state = State::Responded;
        self.stats.replies += 1;
        let hop = self.candidates[idx].hop;
        self.stats.rounds = self.stats.rounds.max(hop);
        let responder = self.candidates[idx].contact;
        match reply {
            Reply::Value(value) if self.kind == LookupKind::FindValue => {
                if self.value.is_none() {
                    self.value = Some((value, responder));
                }
            }
            Reply::Value(_) => {}
            Reply::Nodes(contacts) => {
                for c in contacts.into_iter().take(self.params.k) {
                    self.add_candidate(c, hop + 1);
                }
            }
        }
        if late {
            ReplyStatus::Late
        } else {
            ReplyStatus::Accepted
        }
    }

    /// Marks the query `correlation_id` failed before its timeout (the transport reported an
    /// error); frees its slot. Returns false if no in-flight query has that id.
    pub fn on_error(&mut self, correlation_id: u64) -> bool {
        if self.finished {
            return false;
        }
        let Some(c) = self
            .candidates
            .iter_mut()
            .find(|c| matches!(c.state, State::InFlight { cid, .. } if cid == correlation_id))
        else {
            return false;
        };
        c.state = State::Failed;
        self.in_flight -= 1;
        self.stats.errors += 1;
        true
    }

    fn finish(&mut self, outcome: Outcome) -> Vec<Action> {
        self.finished = true;
        vec![Action::Done(outcome)]
    }

    /// Index of the candidate awaiting `cid` from `from`, or why the reply is ignored.
    fn pair(&self, cid: u64, from: &NodeId) -> Result<usize, ReplyStatus> {
        if self.finished {
            return Err(ReplyStatus::Finished);
        }
        if cid < self.first_cid || cid >= self.next_cid {
            return Err(ReplyStatus::UnknownCorrelation);
        }
        let found = self.candidates.iter().position(|c| match c.state {
            State::InFlight { cid: x, .. } | State::TimedOut { cid: x } => x == cid,
            _ => false,
        });
        match found {
            Some(i) if self.candidates[i].contact.id == *from => Ok(i),
            Some(_) => Err(ReplyStatus::WrongPeer),
            // Issued but answered, failed by error, or dropped from the candidate list.
            None => Err(ReplyStatus::Duplicate),
        }
    }

    fn add_candidate(&mut self, contact: Contact, hop: u32) {
        if contact.id == self.local {
            return;
        }
        let d = self.target.distance(&contact.id);
        let pos = match self.candidates.binary_search_by(|c| c.distance.cmp(&d)) {
            Ok(_) => return, // already known (distance identifies the id)
            Err(pos) => pos,
        };
        let max = self.params.max_candidates;
        if pos >= max {
            return;
        }
        self.candidates.insert(
            pos,
            Candidate {
                contact,
                distance: d,
                state: State::NotQueried,
                hop,
            },
        );
        // Drop the farthest candidates beyond the bound, keeping in-flight ones so their
        // replies still pair (at most alpha extra).
        let mut i = self.candidates.len();
        while self.candidates.len() > max && i > 0 {
            i -= 1;
            if !matches!(self.candidates[i].state, State::InFlight { .. }) {
                self.candidates.remove(i);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotQueried,
    InFlight {
        cid: u64,
        sent_at: Timestamp,
    },
    Responded,
    /// Timed out; a late reply is still accepted.
    TimedOut {
        cid: u64,
    },
    /// Failed by `on_error`.
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    contact: Contact,
    distance: Distance,
    state: State,
    hop: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn c(b: u8) -> Contact {
        let mut id = [0u8; 32];
        id[0] = b;
        Contact {
            id: Id(id),
            addr: SocketAddr::from(([10, 0, 0, b], 9443)),
        }
    }

    fn params(k: usize, alpha: usize) -> LookupParams {
        LookupParams {
            alpha,
            k,
            query_timeout_ms: 100,
            max_candidates: 3 * k,
            max_queries: 100,
        }
    }

    fn sends(actions: &[Action]) -> Vec<(Contact, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { to, correlation_id } => Some((*to, *correlation_id)),
                Action::Done(_) => None,
            })
            .collect()
    }

    const LOCAL: Id = Id([0xff; 32]);

    #[test]
    fn sends_alpha_queries_in_parallel_closest_first() {
        let target = Id::ZERO;
        let seeds = vec![c(9), c(1), c(5), c(3), c(7)];
        let mut l = Lookup::new(LOCAL, target, LookupKind::FindNode, seeds, params(4, 3));
        let s = sends(&l.poll(Timestamp(0)));
        let ids: Vec<u8> = s.iter().map(|(c, _)| c.id.0[0]).collect();
        assert_eq!(ids, vec![1, 3, 5]);
        assert_eq!(l.in_flight(), 3);
        assert!(sends(&l.poll(Timestamp(1))).is_empty(), "slots are full");
    }

    #[test]
    fn terminates_when_k_closest_responded() {
        let mut l = Lookup::new(
            LOCAL,
            Id::ZERO,
            LookupKind::FindNode,
            vec![c(8), c(9)],
            params(2, 3),
        );
        let s = sends(&l.poll(Timestamp(0)));
        assert_eq!(s.len(), 2);
        // 8 knows 2 and 4: closer; they get queried.
        assert_eq!(
            l.on_reply(
                s[0].1,
                &c(8).id,
                Reply::Nodes(vec![c(2), c(4)]),
                Timestamp(1)
            ),
            ReplyStatus::Accepted
        );
        let s2 = sends(&l.poll(Timestamp(1)));
        let ids: Vec<u8> = s2.iter().map(|(c, _)| c.id.0[0]).collect();
        assert_eq!(ids, vec![2, 4], "two slots free, 9 outside the k window");
        for (to, cid) in s2 {
            l.on_reply(cid, &to.id, Reply::Nodes(vec![]), Timestamp(2));
        }
        // 2 and 4 responded: the two closest; 9 still in flight but farther.
        assert_eq!(
            l.poll(Timestamp(2)),
            vec![Action::Done(Outcome::Nodes(vec![c(2), c(4)]))]
        );
        assert_eq!(
            l.on_reply(s[1].1, &c(9).id, Reply::Nodes(vec![]), Timestamp(3)),
            ReplyStatus::Finished
        );
        assert!(l.poll(Timestamp(3)).is_empty());
        assert_eq!(l.stats().rounds, 2);
    }

    #[test]
    fn timeouts_free_slots_and_are_skipped() {
        let mut l = Lookup::new(
            LOCAL,
            Id::ZERO,
            LookupKind::FindNode,
            vec![c(1), c(2), c(3)],
            params(2, 1),
        );
        let s = sends(&l.poll(Timestamp(0)));
        assert_eq!(s[0].0, c(1));
        assert_eq!(l.next_timeout(), Some(Timestamp(100)));
        assert!(sends(&l.poll(Timestamp(99))).is_empty());
        let s = sends(&l.poll(Timestamp(100)));
        assert_eq!(s[0].0, c(2), "1 timed out; its slot went to 2");
        l.on_reply(s[0].1, &c(2).id, Reply::Nodes(vec![]), Timestamp(101));
        let s = sends(&l.poll(Timestamp(101)));
        assert_eq!(s[0].0, c(3), "k = 2 window now reaches 3");
        l.on_reply(s[0].1, &c(3).id, Reply::Nodes(vec![]), Timestamp(102));
        assert_eq!(
            l.poll(Timestamp(102)),
            vec![Action::Done(Outcome::Nodes(vec![c(2), c(3)]))]
        );
        assert_eq!(l.stats().timeouts, 1);
        assert_eq!(l.failed().copied().collect::<Vec<_>>(), vec![c(1)]);
    }

    #[test]
    fn late_reply_is_used() {
        let mut l = Lookup::new(
            LOCAL,
            Id::ZERO,
            LookupKind::FindNode,
            vec![c(1), c(2)],
            params(2, 1),
        );
        let first = sends(&l.poll(Timestamp(0)))[0];
        let second = sends(&l.poll(Timestamp(100)))[0];
        assert_eq!(
            l.on_reply(first.1, &c(1).id, Reply::Nodes(vec![]), Timestamp(150)),
            ReplyStatus::Late
        );
        l.on_reply(second.1, &c(2).id, Reply::Nodes(vec![]), Timestamp(151));
        assert_eq!(
            l.poll(Timestamp(151)),
            vec![Action::Done(Outcome::Nodes(vec![c(1), c(2)]))]
        );
    }

    #[test]
    fn bogus_replies_are_ignored_and_reported() {
        let mut l = Lookup::new(
            LOCAL,
            Id::ZERO,
            LookupKind::FindNode,
            vec![c(1), c(2)],
            params(2, 2),
        );
        let s = sends(&l.poll(Timestamp(0)));
        let t = Timestamp(1);
        assert_eq!(
            l.on_reply(999, &c(1).id, Reply::Nodes(vec![c(0)]), t),
            ReplyStatus::UnknownCorrelation
        );
        assert_eq!(
            l.on_reply(s[0].1, &c(2).id, Reply::Nodes(vec![c(0)]), t),
            ReplyStatus::WrongPeer
        );
        assert_eq!(
            l.on_reply(s[0].1, &c(1).id, Reply::Nodes(vec![]), t),
            ReplyStatus::Accepted
        );
        assert_eq!(
            l.on_reply(s[0].1, &c(1).id, Reply::Nodes(vec![c(0)]), t),
            ReplyStatus::Duplicate
        );
        assert_eq!(l.stats().ignored, 3);
        assert_eq!(l.in_flight(), 1, "only the genuine reply freed a slot");
        assert!(l.on_error(s[1].1));
        assert!(!l.on_error(s[1].1));
        assert_eq!(
            l.poll(t),
            vec![Action::Done(Outcome::Nodes(vec![c(1)]))],
            "the injected contact 0 was never learned"
        );
    }

    #[test]
    fn hostile_flood_is_bounded() {
        let p = params(4, 3);
        let mut l = Lookup::new(LOCAL, Id::ZERO, LookupKind::FindNode, vec![c(200)], p);
        let s = sends(&l.poll(Timestamp(0)));
        let flood: Vec<Contact> = (0..5_000u32)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                Contact {
                    id: Id(id),
                    addr: SocketAddr::from(([10, 1, 0, 0], 1)),
                }
            })
            .collect();
        l.on_reply(s[0].1, &c(200).id, Reply::Nodes(flood), Timestamp(1));
        assert!(l.candidates.len() <= p.max_candidates);
        assert_eq!(
            l.candidates.len(),
            1 + p.k,
            "only k contacts of a reply are read"
        );
    }

    #[test]
    fn find_value_stops_at_first_value() {
        let mut l = Lookup::new(
            LOCAL,
            Id::ZERO,
            LookupKind::FindValue,
            vec![c(1), c(2), c(3)],
            params(3, 3),
        );
        let s = sends(&l.poll(Timestamp(0)));
        l.on_reply(s[0].1, &c(1).id, Reply::Nodes(vec![]), Timestamp(1));
        l.on_reply(s[1].1, &c(2).id, Reply::Value(b"v".to_vec()), Timestamp(2));
        assert_eq!(
            l.poll(Timestamp(2)),
            vec![Action::Done(Outcome::Value {
                value: b"v".to_vec(),
                from: c(2),
                cache_at: Some(c(1)),
            })]
        );
    }

    #[test]
    fn no_seeds_finishes_empty_and_local_is_skipped() {
        let mut l = Lookup::new(
            LOCAL,
            Id::ZERO,
            LookupKind::FindNode,
            vec![Contact {
                id: LOCAL,
                addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            }],
            params(2, 3),
        );
        assert_eq!(
            l.poll(Timestamp(0)),
            vec![Action::Done(Outcome::Nodes(vec![]))]
        );
        let mut l = Lookup::new(
            LOCAL,
            Id::ZERO,
            LookupKind::FindNode,
            vec![c(1)],
            params(2, 3),
        )
        .with_first_correlation_id(7 << 32);
        let s = sends(&l.poll(Timestamp(0)));
        assert_eq!(s[0].1, 7 << 32);
    }

    #[test]
    fn max_queries_bounds_the_lookup() {
        let mut p = params(20, 3);
        p.max_queries = 4;
        let seeds: Vec<Contact> = (1..30).map(c).collect();
        let mut l = Lookup::new(LOCAL, Id::ZERO, LookupKind::FindNode, seeds, p);
        let mut now = Timestamp(0);
        let mut done = None;
        for _ in 0..20 {
            for a in l.poll(now) {
                match a {
                    Action::Send { to, correlation_id } => {
                        l.on_reply(correlation_id, &to.id, Reply::Nodes(vec![]), now);
                    }
                    Action::Done(o) => done = Some(o),
                }
            }
            now = now.plus_millis(1);
        }
        assert_eq!(l.stats().queries, 4);
        assert_eq!(done, Some(Outcome::Nodes((1..5).map(c).collect())));
    }
}
