//! Metrics of CRDT gossip (`docs/GOSSIP.md`): rounds, bytes, merges, conflicts, refusals,
//! state size and anti-entropy freshness. Labels come from the fixed sets below.

use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::gossip::GossipStats;

/// Values of the `reason` label of `macula_gossip_refused_total`: the CRDT and gossip error
/// labels, plus `forged` (a frame whose `sender` is not the link's peer), `wrong_scope` (a
/// realm or store this process does not replicate with that peer), `overloaded` (the gossip
/// task's queue was full) and `other`.
pub const REFUSALS: [&str; 17] = [
    "malformed",
    "too_large",
    "type_mismatch",
    "clock_skew",
    "invalid_op",
    "unknown_peer",
    "duplicate",
    "unexpected_reply",
    "forged",
    "wrong_scope",
    "overloaded",
    "bad_frame",
    "forged_actor",
    "reserved_key",
    "denied",
    "quota",
    "other",
];

/// Gossip metrics, registered in the process registry by [`super::Metrics::new`].
pub struct GossipMetrics {
    /// `macula_gossip_rounds_total{kind}`: push rounds that sent something (`push`) and
    /// anti-entropy exchanges started (`anti_entropy`).
    pub rounds_total: IntCounterVec,
    /// `macula_gossip_messages_sent_total`: gossip frames sent.
    pub messages_sent_total: IntCounter,
    /// `macula_gossip_bytes_sent_total`: encoded state and digest bytes sent.
    pub bytes_sent_total: IntCounter,
    /// `macula_gossip_bytes_received_total`: encoded state and digest bytes received.
    pub bytes_received_total: IntCounter,
    /// `macula_gossip_deltas_merged_total`: incoming states that changed the local state.
    pub deltas_merged_total: IntCounter,
    /// `macula_gossip_redundant_total`: incoming states that changed nothing (already known).
    pub redundant_total: IntCounter,
    /// `macula_gossip_conflicts_total`: keys merged with concurrent updates on both sides.
    pub conflicts_total: IntCounter,
    /// `macula_gossip_refused_total{reason}`: messages or keys refused, by [`REFUSALS`].
    pub refused_total: IntCounterVec,
    /// `macula_gossip_state_bytes`: encoded size of all replicated stores of this process.
    pub state_bytes: IntGauge,
    /// `macula_gossip_keys`: keys in all replicated stores of this process.
    pub keys: IntGauge,
    /// `macula_gossip_stores`: replicated stores held (1 on a node; per realm and child on a
    /// bridge).
    pub stores: IntGauge,
    /// `macula_gossip_anti_entropy_age_seconds{peer}`: seconds since the last completed
    /// anti-entropy exchange with each mesh peer (node mode; `peer` = the first 16 hex digits
    /// of its node id; removed when the peer leaves).
    pub anti_entropy_age_seconds: GaugeVec,
    /// `macula_gossip_anti_entropy_max_age_seconds`: the largest of those ages over every
    /// peer of every store (both modes; bridges do not export per-peer series).
    pub anti_entropy_max_age_seconds: Gauge,
    /// `macula_gossip_keys_retired_total`: keys garbage-collected (keys left with no live
    /// content: emptied sets, removed registers and counters; their dead value is kept as a
    /// retired key, `docs/GOSSIP.md`).
    pub keys_retired_total: IntCounter,
    /// `macula_gossip_registry_lookups_total`: provider lookups answered from the cluster's
    /// gossiped service registry (`$rpc/<procedure>`), without a DHT query.
    pub registry_lookups_total: IntCounter,
}

impl GossipMetrics {
    /// Registers the gossip metrics in `r`.
    pub fn new(r: &Registry) -> GossipMetrics {
        let counter = |name: &str, help: &str| super::register(r, super::counter(name, help));
        let gauge = |name: &str, help: &str| super::register(r, super::gauge(name, help));
        let vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            let v = super::register(r, super::counter_vec(name, help, label));
            for l in values {
                v.with_label_values(&[l]);
            }
            v
        };
        let anti_entropy_age_seconds = GaugeVec::new(
            Opts::new(
                "macula_gossip_anti_entropy_age_seconds",
                "Seconds since the last completed anti-entropy exchange with each mesh peer.",
            ),
            &["peer"],
        )
        .expect("valid metric");
        let anti_entropy_age_seconds = super::register(r, anti_entropy_age_seconds);
        let anti_entropy_max_age_seconds = Gauge::new(
            "macula_gossip_anti_entropy_max_age_seconds",
            "Largest time since the last completed anti-entropy exchange, over all peers, seconds.",
        )
        .expect("valid metric");
        let anti_entropy_max_age_seconds = super::register(r, anti_entropy_max_age_seconds);
        GossipMetrics {
            rounds_total: vec(
                "macula_gossip_rounds_total",
                "Gossip rounds: delta pushes that sent something, anti-entropy exchanges started.",
                "kind",
                &["push", "anti_entropy"],
            ),
            messages_sent_total: counter(
                "macula_gossip_messages_sent_total",
                "Gossip frames sent.",
            ),
            bytes_sent_total: counter(
                "macula_gossip_bytes_sent_total",
                "Encoded CRDT state and digest bytes sent by gossip.",
            ),
            bytes_received_total: counter(
                "macula_gossip_bytes_received_total",
                "Encoded CRDT state and digest bytes received by gossip.",
            ),
            deltas_merged_total: counter(
                "macula_gossip_deltas_merged_total",
                "Incoming gossip states that changed the local state.",
            ),
            redundant_total: counter(
                "macula_gossip_redundant_total",
                "Incoming gossip states that changed nothing.",
            ),
            conflicts_total: counter(
                "macula_gossip_conflicts_total",
                "Keys merged with concurrent updates on both sides.",
            ),
            refused_total: vec(
                "macula_gossip_refused_total",
                "Gossip messages or keys refused, by reason.",
                "reason",
                &REFUSALS,
            ),
            state_bytes: gauge(
                "macula_gossip_state_bytes",
                "Encoded size of the replicated CRDT stores of this process, bytes.",
            ),
            keys: gauge(
                "macula_gossip_keys",
                "Keys in the replicated CRDT stores of this process.",
            ),
            stores: gauge(
                "macula_gossip_stores",
                "Replicated CRDT stores held by this process.",
            ),
            anti_entropy_age_seconds,
            anti_entropy_max_age_seconds,
            keys_retired_total: counter(
                "macula_gossip_keys_retired_total",
                "Keys garbage-collected: emptied sets, removed registers and counters.",
            ),
            registry_lookups_total: counter(
                "macula_gossip_registry_lookups_total",
                "Provider lookups answered from the gossiped service registry.",
            ),
        }
    }

    /// Counts one refusal; an unknown `reason` counts as `other`.
    pub fn refused(&self, reason: &str) {
        let r = if REFUSALS.contains(&reason) {
            reason
        } else {
            "other"
        };
        self.refused_total.with_label_values(&[r]).inc();
    }

    /// Adds what an engine's monotone counters moved since `prev`, then sets `prev = now`.
    pub fn record(&self, prev: &mut GossipStats, now: &GossipStats) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        self.rounds_total
            .with_label_values(&["push"])
            .inc_by(d(prev.push_rounds, now.push_rounds));
        self.rounds_total
            .with_label_values(&["anti_entropy"])
            .inc_by(d(prev.anti_entropy_rounds, now.anti_entropy_rounds));
        self.messages_sent_total
            .inc_by(d(prev.messages_sent, now.messages_sent));
        self.bytes_sent_total
            .inc_by(d(prev.bytes_sent, now.bytes_sent));
        self.bytes_received_total
            .inc_by(d(prev.bytes_received, now.bytes_received));
        self.deltas_merged_total
            .inc_by(d(prev.deltas_merged, now.deltas_merged));
        self.redundant_total
            .inc_by(d(prev.redundant, now.redundant));
        self.conflicts_total
            .inc_by(d(prev.conflicts, now.conflicts));
        self.keys_retired_total
            .inc_by(d(prev.keys_retired, now.keys_retired));
        for (reason, n) in &now.refused {
            let before = prev.refused.get(reason).copied().unwrap_or(0);
            let moved = d(before, *n);
            if moved > 0 {
                let r = if REFUSALS.contains(reason) {
                    *reason
                } else {
                    "other"
                };
                self.refused_total.with_label_values(&[r]).inc_by(moved);
            }
        }
        *prev = now.clone();
    }
}
