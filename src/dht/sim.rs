//! Deterministic simulation of a Kademlia network on a virtual clock (no sockets, no
//! threads): a few hundred nodes, each with its own [`RoutingTable`] and [`RecordStore`],
//! joined one by one through a seed node; lookups are driven through the sans-IO [`Lookup`]
//! API exactly as the service will drive them, with random per-reply latencies and failed
//! nodes that never answer (so their queries time out on the virtual clock).
//!
//! Simplifications, stated so the figures are read correctly: a liveness ping asked for by
//! [`Observe::PingOldest`] is answered instantly from the node's true state; replies are
//! never lost except by failed nodes; each lookup runs alone (no concurrent lookups).
//! The figures printed (`--nocapture`) are the ones quoted in `docs/DHT.md`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::id::bucket_index;
use super::*;

/// Nodes in the simulated network.
const NODES: usize = 250;
/// Share of nodes failed in the failure scenarios, percent.
const FAILED_PERCENT: usize = 20;
/// Query timeout on the virtual clock, ms.
const TIMEOUT_MS: u64 = 1_000;
/// One-way latency range of a reply, ms.
const LATENCY_MS: std::ops::RangeInclusive<u64> = 5..=80;

struct SimNode {
    contact: Contact,
    table: RoutingTable,
    store: RecordStore,
    alive: bool,
}

struct Net {
    nodes: Vec<SimNode>,
    index: HashMap<NodeId, usize>,
    now: Timestamp,
    rng: StdRng,
    params: LookupParams,
}

/// Aggregate figures of a batch of lookups.
#[derive(Default)]
struct Figures {
    lookups: u32,
    exact: u32,
    overlap_sum: f64,
    min_overlap: f64,
    rounds: u64,
    queries: u64,
    timeouts: u64,
    max_in_flight: u32,
}

impl Figures {
    fn add(&mut self, stats: &LookupStats, overlap: f64) {
        if self.lookups == 0 {
            self.min_overlap = 1.0;
        }
        self.lookups += 1;
        self.exact += u32::from(overlap == 1.0);
        self.overlap_sum += overlap;
        self.min_overlap = self.min_overlap.min(overlap);
        self.rounds += u64::from(stats.rounds);
        self.queries += u64::from(stats.queries);
        self.timeouts += u64::from(stats.timeouts);
        self.max_in_flight = self.max_in_flight.max(stats.max_in_flight);
    }

    fn report(&self, label: &str) {
        let n = f64::from(self.lookups.max(1));
        eprintln!(
            "[dht sim] {label}: {} lookups, exact {}/{} ({:.1} %), mean overlap {:.3}, min overlap {:.3}, \
             avg rounds {:.2}, avg messages {:.1}, avg timeouts {:.2}, max in flight {}",
            self.lookups,
            self.exact,
            self.lookups,
            100.0 * f64::from(self.exact) / n,
            self.overlap_sum / n,
            self.min_overlap,
            self.rounds as f64 / n,
            self.queries as f64 / n,
            self.timeouts as f64 / n,
            self.max_in_flight,
        );
    }
}

impl Net {
    /// `n` nodes with random ids, joined one after another through node 0 (the seed): each
    /// newcomer looks up its own id, then refreshes every bucket farther than its closest
    /// neighbour (the paper, §2.3, "joining the network").
    fn build(n: usize, seed: u64) -> (Net, Figures) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut nodes = Vec::with_capacity(n);
        let mut index = HashMap::with_capacity(n);
        for i in 0..n {
            let id = Id::random(&mut rng);
            let addr = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 9443));
            index.insert(id, i);
            nodes.push(SimNode {
                contact: Contact { id, addr },
                table: RoutingTable::new(id),
                store: RecordStore::new(id),
                alive: true,
            });
        }
        let params = LookupParams {
            query_timeout_ms: TIMEOUT_MS,
            ..LookupParams::default()
        };
        let mut net = Net {
            nodes,
            index,
            now: Timestamp(0),
            rng,
            params,
        };
        let mut join = Figures::default();
        for i in 1..n {
            let seed_contact = net.nodes[0].contact;
            net.observe(i, seed_contact);
            let own = net.nodes[i].contact.id;
            let (_, stats) = net.lookup(i, own, LookupKind::FindNode);
            join.add(&stats, 1.0);
            let Some(nearest) = net.nodes[i].table.closest(&own, 1).first().copied() else {
                continue;
            };
            let depth = bucket_index(&own, &nearest.id).expect("never self");
            for b in 0..depth {
                let target = own.random_in_bucket(b, &mut net.rng);
                let (_, stats) = net.lookup(i, target, LookupKind::FindNode);
                join.add(&stats, 1.0);
            }
        }
        (net, join)
    }

    fn observe(&mut self, at: usize, c: Contact) {
        let now = self.now;
        if let Observe::PingOldest { oldest, .. } = self.nodes[at].table.observe(c, now) {
            let alive = self.nodes[self.index[&oldest.id]].alive;
            self.nodes[at].table.ping_result(&oldest.id, alive, now);
        }
    }

    /// Fails `percent` % of the nodes (never node `spare`), chosen at random.
    fn fail(&mut self, percent: usize, spare: usize) {
        let want = self.nodes.len() * percent / 100;
        let mut failed = 0;
        while failed < want {
            let i = self.rng.random_range(0..self.nodes.len());
            if i != spare && self.nodes[i].alive {
                self.nodes[i].alive = false;
                failed += 1;
            }
        }
    }

    fn random_live(&mut self) -> usize {
        loop {
            let i = self.rng.random_range(0..self.nodes.len());
            if self.nodes[i].alive {
                return i;
            }
        }
    }

    /// The true `k` closest live nodes to `target`, other than `exclude`, by brute force.
    fn true_closest(&self, target: &Id, exclude: usize) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| n.alive && *i != exclude)
            .map(|(_, n)| n.contact.id)
            .collect();
        ids.sort_by_key(|id| target.distance(id));
        ids.truncate(self.params.k);
        ids
    }

    /// Runs one lookup by node `from` to completion on the virtual clock. Checks on every
    /// step that the in-flight count, tracked independently here, never exceeds alpha.
    fn lookup(&mut self, from: usize, target: Id, kind: LookupKind) -> (Outcome, LookupStats) {
        let own = self.nodes[from].contact;
        let seeds = self.nodes[from].table.closest(&target, self.params.k);
        let mut lookup = Lookup::new(own.id, target, kind, seeds, self.params);
        // (delivery time, sequence, correlation id, responder)
        let mut events: BinaryHeap<Reverse<(Timestamp, u64, u64, usize)>> = BinaryHeap::new();
        let mut outstanding: HashMap<u64, Timestamp> = HashMap::new();
        let mut seq = 0u64;
        loop {
            let mut outcome = None;
            for action in lookup.poll(self.now) {
                match action {
                    Action::Send { to, correlation_id } => {
                        outstanding.insert(correlation_id, self.now);
                        let j = self.index[&to.id];
                        if self.nodes[j].alive {
                            let at = self.now.plus_millis(self.rng.random_range(LATENCY_MS));
                            events.push(Reverse((at, seq, correlation_id, j)));
                            seq += 1;
                        }
                    }
                    Action::Done(o) => outcome = Some(o),
                }
            }
            let now = self.now;
            outstanding.retain(|_, sent| now.millis_since(*sent) < TIMEOUT_MS);
            assert!(
                outstanding.len() <= self.params.alpha,
                "more than alpha in flight"
            );
            if let Some(o) = outcome {
                // What the service does: a node that failed a query leaves the table.
                let table = &mut self.nodes[from].table;
                for c in lookup.failed() {
                    table.remove(&c.id, now);
                }
                table.mark_lookup(&target, now);
                return (o, lookup.stats());
            }
            assert_eq!(outstanding.len(), lookup.in_flight());
            let next_event = events.peek().map(|Reverse(e)| e.0);
            let deliver = match (next_event, lookup.next_timeout()) {
                (Some(e), Some(t)) => e <= t,
                (Some(_), None) => true,
                (None, Some(t)) => {
                    self.now = t;
                    false
                }
                (None, None) => false, // nothing pending: the next poll finishes
            };
            if deliver {
                let Reverse((at, _, cid, j)) = events.pop().expect("peeked");
                self.now = at;
                outstanding.remove(&cid);
                let reply = self.answer(j, own, &target, kind);
                let responder = self.nodes[j].contact;
                let status = lookup.on_reply(cid, &responder.id, reply, self.now);
                if matches!(status, ReplyStatus::Accepted | ReplyStatus::Late) {
                    self.observe(from, responder);
                }
            } else if let (Some(_), Some(t)) = (next_event, lookup.next_timeout()) {
                self.now = t;
            }
        }
    }

    /// Node `j`'s answer to a query from `querier` (which it adds to its table, as Kademlia
    /// nodes do with every sender).
    fn answer(&mut self, j: usize, querier: Contact, target: &Id, kind: LookupKind) -> Reply {
        self.observe(j, querier);
        let node = &self.nodes[j];
        if kind == LookupKind::FindValue {
            if let Some(r) = node.store.get(target, self.now).next() {
                return Reply::Value(r.value.clone());
            }
        }
        Reply::Nodes(node.table.closest(target, self.params.k))
    }

    /// One bucket-refresh round (the paper, §2.3): every live node runs a lookup for a
    /// random id in each of its stale buckets. Returns the lookup figures.
    fn refresh_all(&mut self, interval_ms: u64) -> Figures {
        let mut fig = Figures::default();
        self.now = self.now.plus_millis(interval_ms);
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                continue;
            }
            for b in self.nodes[i].table.stale_buckets(self.now, interval_ms) {
                let target = self.nodes[i].contact.id.random_in_bucket(b, &mut self.rng);
                let (_, stats) = self.lookup(i, target, LookupKind::FindNode);
                fig.add(&stats, 1.0);
            }
        }
        fig
    }

    fn overlap(got: &[Contact], want: &[NodeId]) -> f64 {
        if want.is_empty() {
            return 1.0;
        }
        let hits = want
            .iter()
            .filter(|id| got.iter().any(|c| c.id == **id))
            .count();
        hits as f64 / want.len() as f64
    }

    /// Runs `count` FIND_NODE lookups for random targets from random live nodes, comparing
    /// each result with the brute-force answer.
    fn find_node_batch(&mut self, count: usize) -> Figures {
        let mut fig = Figures::default();
        for _ in 0..count {
            let from = self.random_live();
            let target = Id::random(&mut self.rng);
            let (outcome, stats) = self.lookup(from, target, LookupKind::FindNode);
            let Outcome::Nodes(got) = outcome else {
                panic!("FIND_NODE returned a value");
            };
            let want = self.true_closest(&target, from);
            let got_ids: Vec<NodeId> = got.iter().map(|c| c.id).collect();
            let overlap = if got_ids == want {
                1.0
            } else {
                Self::overlap(&got, &want).min(0.999_999)
            };
            fig.add(&stats, overlap);
        }
        fig
    }
}

#[test]
fn sim_find_node_healthy_and_with_failures() {
    let (mut net, join) = Net::build(NODES, 0x6d61_6375_6c61);
    join.report(&format!("join of {NODES} nodes (own id + bucket refresh)"));
    let live = net.nodes.iter().filter(|n| n.alive).count();
    assert_eq!(live, NODES);
    let sizes: Vec<usize> = net.nodes.iter().map(|n| n.table.len()).collect();
    eprintln!(
        "[dht sim] routing table sizes: min {}, mean {:.1}, max {}",
        sizes.iter().min().expect("nodes"),
        sizes.iter().sum::<usize>() as f64 / sizes.len() as f64,
        sizes.iter().max().expect("nodes"),
    );

    // (a) Healthy network: every lookup returns exactly the true k closest, in order.
    let healthy = net.find_node_batch(200);
    healthy.report("FIND_NODE, 0 % failed");
    assert_eq!(
        healthy.exact, healthy.lookups,
        "healthy lookups must be exact"
    );
    assert!(healthy.max_in_flight as usize <= ALPHA);
    assert_eq!(
        healthy.max_in_flight as usize, ALPHA,
        "lookups do run alpha in parallel"
    );

    // (b) 20 % of the nodes fail silently. Right after the failure every table still lists
    // the dead nodes, so replies carry fewer than k live contacts; lookups remove the nodes
    // that time out from the querier's table as they go.
    net.fail(FAILED_PERCENT, usize::MAX);
    let failed = net.find_node_batch(200);
    failed.report(&format!(
        "FIND_NODE, {FAILED_PERCENT} % failed, before any refresh"
    ));
    assert!(
        failed.timeouts > 0,
        "failed nodes were queried and timed out"
    );
    assert!(failed.max_in_flight as usize <= ALPHA);
    assert!(
        failed.overlap_sum / f64::from(failed.lookups) >= 0.9,
        "mean overlap with the k closest live nodes below 90 %"
    );

    // After one bucket-refresh round (hourly in the paper) the tables have shed the dead
    // nodes and lookups are exact again.
    let refresh = net.refresh_all(3_600_000);
    refresh.report("bucket refresh round after the failure");
    let after = net.find_node_batch(200);
    after.report(&format!(
        "FIND_NODE, {FAILED_PERCENT} % failed, after one refresh round"
    ));
    assert!(after.max_in_flight as usize <= ALPHA);
    assert_eq!(
        after.exact, after.lookups,
        "after a refresh lookups must return exactly the k closest live nodes"
    );
}

#[test]
fn sim_find_value_with_failures_and_ttl() {
    let (mut net, _) = Net::build(NODES, 0x5eed);
    const TTL_MS: u64 = 3_600_000;
    let keys: Vec<Key> = (0..20)
        .map(|i| Key::scoped("io.macula", &format!("svc.sim.{i}")))
        .collect();
    // Each key is published by a random node at the k closest nodes it finds.
    for (i, key) in keys.iter().enumerate() {
        let publisher = net.random_live();
        let (outcome, _) = net.lookup(publisher, *key, LookupKind::FindNode);
        let Outcome::Nodes(holders) = outcome else {
            panic!("FIND_NODE returned a value");
        };
        assert_eq!(holders.len(), K);
        let pid = net.nodes[publisher].contact.id;
        let now = net.now;
        for h in holders {
            let j = net.index[&h.id];
            net.nodes[j]
                .store
                .put(*key, format!("provider-{i}").into_bytes(), pid, TTL_MS, now)
                .expect("within limits");
        }
    }
    // (c) 20 % of the nodes fail (holders included); values are still found.
    net.fail(FAILED_PERCENT, usize::MAX);
    let mut fig = Figures::default();
    for _ in 0..5 {
        for (i, key) in keys.iter().enumerate() {
            let from = net.random_live();
            let (outcome, stats) = net.lookup(from, *key, LookupKind::FindValue);
            match outcome {
                Outcome::Value { value, from, .. } => {
                    assert_eq!(value, format!("provider-{i}").into_bytes());
                    assert!(net.nodes[net.index[&from.id]].alive);
                    fig.add(&stats, 1.0);
                }
                Outcome::Nodes(_) => fig.add(&stats, 0.0),
            }
        }
    }
    fig.report(&format!(
        "FIND_VALUE, {FAILED_PERCENT} % failed (overlap 1 = value found)"
    ));
    assert_eq!(
        fig.exact, fig.lookups,
        "every FIND_VALUE must find its value"
    );
    assert!(fig.max_in_flight as usize <= ALPHA);

    // TTL: past expiry no node returns the record, even before anyone runs `expire`.
    net.now = net.now.plus_millis(TTL_MS);
    let from = net.random_live();
    let (outcome, _) = net.lookup(from, keys[0], LookupKind::FindValue);
    assert!(
        matches!(outcome, Outcome::Nodes(ref n) if n.len() == K),
        "expired records are never served"
    );
}
