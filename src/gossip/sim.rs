//! Deterministic discrete-event simulation of a gossiping cluster: `nodes` [`Gossip`]
//! engines with a full membership view, virtual time, seeded randomness, message loss,
//! latency and churn. No sockets, no tokio, no wall clock: the same [`SimConfig`] always
//! gives the same [`SimReport`].
//!
//! At t = 0 each of the first `updates` nodes adds its id to the OR-Set `members` and
//! increments the G-Counter `hits`. The run ends when every node is live (the churned ones
//! are back) and all stores are equal and hold all of these updates (checked at every push
//! interval), or at `max_sim_seconds`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{Gossip, GossipConfig, Message, PeerId};
use crate::crdt::{ActorId, Crdt, Op, Value};

/// Virtual wall clock at t = 0 (ms since the Unix epoch), so HLC timestamps look real.
const EPOCH_MS: u64 = 1_700_000_000_000;

/// Parameters of one simulated run.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Cluster size.
    pub nodes: usize,
    /// Seed of the run's only random number generator.
    pub seed: u64,
    /// Probability that a message is dropped (default 0.01).
    pub loss: f64,
    /// Fraction of nodes that go down during the first seconds and come back (default 0.05).
    pub churn: f64,
    /// Nodes that each apply one update at t = 0 (default: all; clamped to `nodes`).
    pub updates: usize,
    /// Push timer, ms (default 1,000).
    pub push_interval_ms: u64,
    /// Anti-entropy timer, ms (default 30,000).
    pub anti_entropy_interval_ms: u64,
    /// One-way latency, ms (default 5; each message gets up to +50 % jitter).
    pub latency_ms: u64,
    /// Give up after this much virtual time (default 600 s).
    pub max_sim_seconds: u64,
    /// Window in which churned nodes go down, ms from t = 0 (default 5,000).
    pub churn_window_ms: u64,
    /// How long a churned node stays down: uniform in `[min, max]` ms (default 2,000–10,000).
    pub down_ms: (u64, u64),
    /// The engines' configuration (intervals are overridden by the fields above).
    pub gossip: GossipConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 100,
            seed: 1,
            loss: 0.01,
            churn: 0.05,
            updates: usize::MAX,
            push_interval_ms: 1000,
            anti_entropy_interval_ms: 30_000,
            latency_ms: 5,
            max_sim_seconds: 600,
            churn_window_ms: 5000,
            down_ms: (2000, 10_000),
            gossip: GossipConfig::default(),
        }
    }
}

/// Outcome of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// Cluster size.
    pub nodes: usize,
    /// Nodes that applied an update at t = 0.
    pub updates: usize,
    /// Nodes that went down and came back.
    pub churned: usize,
    /// Push rounds (push intervals) until every live node's store was equal and held every
    /// update.
    pub rounds_to_converge: u64,
    /// Virtual seconds until convergence (or until the run gave up).
    pub sim_seconds: f64,
    /// Mean bytes ([`Message::payload_len`]) sent per node until convergence.
    pub bytes_per_node: u64,
    /// Messages sent until convergence.
    pub messages: u64,
    /// Whether the run converged within `max_sim_seconds`.
    pub converged: bool,
    /// Messages dropped by the random loss.
    pub lost_messages: u64,
    /// Messages dropped because their receiver was down.
    pub dropped_at_down_nodes: u64,
    /// Messages of each kind sent: push, pull, pull_reply, sync, sync_reply.
    pub messages_by_kind: [u64; 5],
    /// Messages refused by their receiver (any reason, e.g. duplicates).
    pub refused: u64,
    /// Push rounds that sent something, summed over nodes.
    pub push_rounds: u64,
    /// Anti-entropy rounds started, summed over nodes.
    pub anti_entropy_rounds: u64,
}

#[derive(Debug)]
enum Event {
    PushTick(usize),
    AntiEntropyTick(usize),
    Deliver {
        from: usize,
        to: usize,
        msg: Message,
    },
    Down(usize),
    Up(usize),
    Check,
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap is a max-heap, the earliest event must come first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct World {
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    rng: StdRng,
    ids: Vec<PeerId>,
    nodes: Vec<Gossip>,
    down: Vec<bool>,
    report: SimReport,
    bytes_sent: u64,
    loss: f64,
    latency_ms: u64,
}

impl World {
    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            event,
        });
    }

    fn send(&mut self, now: u64, from: usize, out: Vec<(PeerId, Message)>) {
        for (to, msg) in out {
            let to = self.index(&to);
            self.report.messages += 1;
            self.bytes_sent += msg.payload_len() as u64;
            self.report.messages_by_kind[usize::from(msg.frame_type() - 0x70)] += 1;
            if self.loss > 0.0 && self.rng.random_bool(self.loss) {
                self.report.lost_messages += 1;
                continue;
            }
            let jitter = self.rng.random_range(0..=self.latency_ms / 2);
            self.schedule(
                now + self.latency_ms + jitter,
                Event::Deliver { from, to, msg },
            );
        }
    }

    fn index(&self, id: &PeerId) -> usize {
        // Ids are the big-endian node index (see `node_id`).
        let mut b = [0u8; 8];
        b.copy_from_slice(&id.0[24..32]);
        let i = u64::from_be_bytes(b) as usize;
        debug_assert_eq!(self.ids[i], *id);
        i
    }

    /// No node is down (churned nodes are back), every node holds every update, and all
    /// stores are equal.
    fn converged(&self, updates: usize) -> bool {
        if self.down.iter().any(|d| *d) {
            return false;
        }
        let mut first = None;
        for g in &self.nodes {
            let store = g.store();
            if updates > 0 {
                let hits = store.get("hits");
                if hits != Some(Value::GCounter(updates as u64)) {
                    return false;
                }
                match store.crdt("members") {
                    Some(Crdt::OrSet(s)) if s.len() == updates => {}
                    _ => return false,
                }
            }
            match first {
                None => first = Some(store),
                Some(f) if f != store => return false,
                Some(_) => {}
            }
        }
        true
    }
}

/// The id of simulated node `i`: a scrambled `i` in the first 8 bytes (ids look random, like
/// the SHA-256 node ids of real nodes), `i` big-endian in the last 8.
pub fn node_id(i: usize) -> ActorId {
    let mut id = [0u8; 32];
    let mixed = (i as u64 ^ 0x5a5a_5a5a).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    id[0..8].copy_from_slice(&mixed.to_be_bytes());
    id[24..32].copy_from_slice(&(i as u64).to_be_bytes());
    ActorId(id)
}

/// Runs one simulation.
pub fn simulate(cfg: &SimConfig) -> SimReport {
    let n = cfg.nodes;
    let updates = cfg.updates.min(n);
    let push = cfg.push_interval_ms.max(1);
    let ae = cfg.anti_entropy_interval_ms.max(1);
    let mut gcfg = cfg.gossip.clone();
    gcfg.push_interval = Duration::from_millis(push);
    gcfg.anti_entropy_interval = Duration::from_millis(ae);

    let ids: Vec<PeerId> = (0..n).map(node_id).collect();
    let mut nodes: Vec<Gossip> = ids
        .iter()
        .map(|id| Gossip::new(*id, gcfg.clone()))
        .collect();
    for (i, g) in nodes.iter_mut().enumerate() {
        for (j, id) in ids.iter().enumerate() {
            if i != j {
                g.add_peer(*id);
            }
        }
    }
    let mut w = World {
        queue: BinaryHeap::new(),
        seq: 0,
        rng: StdRng::seed_from_u64(cfg.seed),
        ids,
        nodes,
        down: vec![false; n],
        report: SimReport {
            nodes: n,
            updates,
            churned: 0,
            rounds_to_converge: 0,
            sim_seconds: 0.0,
            bytes_per_node: 0,
            messages: 0,
            converged: false,
            lost_messages: 0,
            dropped_at_down_nodes: 0,
            messages_by_kind: [0; 5],
            refused: 0,
            push_rounds: 0,
            anti_entropy_rounds: 0,
        },
        bytes_sent: 0,
        loss: cfg.loss.clamp(0.0, 1.0),
        latency_ms: cfg.latency_ms,
    };

    // The updates at t = 0.
    for i in 0..updates {
        let id = Bytes::copy_from_slice(&w.ids[i].0);
        let g = &mut w.nodes[i];
        g.apply("members", Op::SetAdd(id), EPOCH_MS)
            .expect("OR-Set add");
        g.apply("hits", Op::Increment(1), EPOCH_MS)
            .expect("counter increment");
    }
    // Timers, each node's offset at random within its interval.
    for i in 0..n {
        let p = w.rng.random_range(0..push);
        let a = w.rng.random_range(0..ae);
        w.schedule(p, Event::PushTick(i));
        w.schedule(a, Event::AntiEntropyTick(i));
    }
    // Churn.
    let churned = ((n as f64) * cfg.churn.clamp(0.0, 1.0)).round() as usize;
    w.report.churned = churned;
    if churned > 0 {
        let (lo, hi) = (
            cfg.down_ms.0.min(cfg.down_ms.1),
            cfg.down_ms.1.max(cfg.down_ms.0),
        );
        for i in rand::seq::index::sample(&mut w.rng, n, churned) {
            let at = w.rng.random_range(0..=cfg.churn_window_ms);
            let len = w.rng.random_range(lo..=hi);
            w.schedule(at, Event::Down(i));
            w.schedule(at + len, Event::Up(i));
        }
    }
    w.schedule(push, Event::Check);

    let end = cfg.max_sim_seconds.saturating_mul(1000);
    let mut now = 0;
    while let Some(Scheduled { at, event, .. }) = w.queue.pop() {
        if at > end {
            now = end;
            break;
        }
        now = at;
        let wall = EPOCH_MS + now;
        match event {
            Event::PushTick(i) => {
                if !w.down[i] {
                    let out = w.nodes[i].on_push_tick(&mut w.rng);
                    w.send(now, i, out);
                }
                w.schedule(now + push, Event::PushTick(i));
            }
            Event::AntiEntropyTick(i) => {
                if !w.down[i] {
                    let out = w.nodes[i].on_anti_entropy_tick(wall, &mut w.rng);
                    w.send(now, i, out);
                }
                w.schedule(now + ae, Event::AntiEntropyTick(i));
            }
            Event::Deliver { from, to, msg } => {
                if w.down[to] {
                    w.report.dropped_at_down_nodes += 1;
                    continue;
                }
                let from_id = w.ids[from];
                match w.nodes[to].handle(from_id, msg, wall) {
                    Ok(out) => w.send(now, to, out),
                    Err(_) => w.report.refused += 1,
                }
            }
            Event::Down(i) => w.down[i] = true,
            Event::Up(i) => {
                // A rejoining node starts an anti-entropy round at once (as the driver does
                // on reconnect), on top of its regular timer.
                w.down[i] = false;
                let out = w.nodes[i].on_anti_entropy_tick(wall, &mut w.rng);
                w.send(now, i, out);
            }
            Event::Check => {
                if w.converged(updates) {
                    w.report.converged = true;
                    break;
                }
                w.schedule(now + push, Event::Check);
            }
        }
    }
    let r = &mut w.report;
    r.sim_seconds = now as f64 / 1000.0;
    r.rounds_to_converge = now.div_ceil(push);
    r.bytes_per_node = w.bytes_sent / n.max(1) as u64;
    r.push_rounds = w.nodes.iter().map(|g| g.stats().push_rounds).sum();
    r.anti_entropy_rounds = w.nodes.iter().map(|g| g.stats().anti_entropy_rounds).sum();
    w.report
}
