//! Metrics of discovery and RPC: the cluster DHT, escalated lookups, the bridge's subtree
//! index and calls. Labels come from the small fixed sets below (STYLE 8).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Values of the `outcome` label of `macula_rpc_calls_total`: a reply, or why there was none
/// (the typed errors of [`crate::client::CallError`]), or `rejected` for a call refused before
/// it was tried (malformed, over `rpc.max_pending`, hop limit).
pub const RPC_OUTCOMES: [&str; 6] = [
    "ok",
    "no_provider",
    "timeout",
    "all_providers_failed",
    "remote",
    "rejected",
];

/// Values of the `result` label of `macula_dht_lookups_total`.
pub const LOOKUP_RESULTS: [&str; 3] = ["found", "not_found", "error"];

/// Values of the `reason` label of `macula_dht_store_refused_total`.
pub const STORE_REFUSALS: [&str; 5] = ["ttl", "too_large", "full", "denied", "invalid"];

/// Upper bounds of `macula_rpc_duration_seconds` and `macula_dht_lookup_duration_seconds`,
/// seconds: 50 µs to 10 s.
pub const DURATION_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of `macula_dht_routing_hops`: 0 (answered inside the cluster) to 8 bridge
/// levels (the escalation hop limit).
pub const HOP_BUCKETS: [f64; 9] = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];

/// Discovery and RPC metrics, registered in the process registry by [`super::Metrics::new`].
pub struct RpcMetrics {
    /// `macula_rpc_calls_total{outcome}`: calls originated by this node's clients, by
    /// [`RPC_OUTCOMES`]; counted once per call, when it ends.
    pub calls_total: IntCounterVec,
    calls: Vec<IntCounter>,
    /// `macula_rpc_duration_seconds`: time from a client's CALL to the REPLY sent back to it,
    /// seconds, all outcomes ([`DURATION_BUCKETS`]).
    pub duration_seconds: Histogram,
    /// `macula_rpc_attempts_total`: CALLs sent to a provider (first tries and failovers).
    pub attempts_total: IntCounter,
    /// `macula_rpc_failovers_total`: attempts after the first (another provider tried after
    /// a timeout or a provider loss).
    pub failovers_total: IntCounter,
    /// `macula_rpc_forwarded_total`: CALLs this process forwarded toward a provider (mesh peer,
    /// uplink, child or parent bridge).
    pub forwarded_total: IntCounter,
    /// `macula_rpc_pending`: calls in flight in this process (originated or forwarded),
    /// bounded by `rpc.max_pending`.
    pub pending: IntGauge,
    /// `macula_rpc_unknown_replies_total`: REPLYs whose call id matched no call in flight
    /// (late, duplicated or forged); dropped.
    pub unknown_replies_total: IntCounter,
    /// `macula_dht_lookups_total{result}`: provider lookups by a node (cluster DHT, then the
    /// bridge levels), by [`LOOKUP_RESULTS`].
    pub lookups_total: IntCounterVec,
    lookups: Vec<IntCounter>,
    /// `macula_dht_lookup_duration_seconds`: time of a provider lookup that was not answered
    /// from the node's own cache, seconds.
    pub lookup_duration_seconds: Histogram,
    /// `macula_dht_routing_hops`: how far a node's provider lookup went: 0 = answered in the
    /// cluster's DHT, n = answered n bridge levels up ([`HOP_BUCKETS`]).
    pub routing_hops: Histogram,
    /// `macula_dht_queries_total`: DHT queries (FIND_NODE, FIND_VALUE, STORE) sent to peers.
    pub dht_queries_total: IntCounter,
    /// `macula_dht_query_failures_total`: DHT queries that timed out or failed.
    pub dht_query_failures_total: IntCounter,
    /// `macula_dht_unknown_replies_total`: DHT replies with an unknown correlation id; dropped.
    pub dht_unknown_replies_total: IntCounter,
    /// `macula_dht_store_refused_total{reason}`: STOREs refused, by [`STORE_REFUSALS`].
    pub store_refused_total: IntCounterVec,
    store_refused: Vec<IntCounter>,
    /// `macula_dht_records`: records held (the node's DHT store, or a bridge's subtree index).
    pub records: IntGauge,
    /// `macula_dht_contacts`: contacts in the node's routing table.
    pub contacts: IntGauge,
    /// `macula_mesh_peers`: open connections to other nodes of the cluster.
    pub mesh_peers: IntGauge,
    /// `macula_escalations_total`: lookups this process sent to the level above (a node to its
    /// bridge, a bridge to its parent).
    pub escalations_total: IntCounter,
}

impl RpcMetrics {
    /// Creates and registers the families. Panics on a duplicate registration (a programming
    /// error: one per registry).
    pub fn new(r: &Registry) -> RpcMetrics {
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            r.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            r.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            let v = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            r.register(Box::new(v.clone())).expect("registered once");
            let children = values.iter().map(|l| v.with_label_values(&[l])).collect();
            (v, children)
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid histogram");
            r.register(Box::new(h.clone())).expect("registered once");
            h
        };
        let (calls_total, calls) = vec(
            "macula_rpc_calls_total",
            "Calls originated by local clients, by outcome.",
            "outcome",
            &RPC_OUTCOMES,
        );
        let (lookups_total, lookups) = vec(
            "macula_dht_lookups_total",
            "Provider lookups, by result.",
            "result",
            &LOOKUP_RESULTS,
        );
        let (store_refused_total, store_refused) = vec(
            "macula_dht_store_refused_total",
            "DHT STOREs refused, by reason.",
            "reason",
            &STORE_REFUSALS,
        );
        RpcMetrics {
            calls_total,
            calls,
            duration_seconds: histogram(
                "macula_rpc_duration_seconds",
                "Time from a client's CALL to the REPLY sent back to it.",
                &DURATION_BUCKETS,
            ),
            attempts_total: counter("macula_rpc_attempts_total", "CALLs sent to a provider."),
            failovers_total: counter(
                "macula_rpc_failovers_total",
                "Attempts after the first: another provider tried.",
            ),
            forwarded_total: counter(
                "macula_rpc_forwarded_total",
                "CALLs forwarded toward a provider.",
            ),
            pending: gauge("macula_rpc_pending", "Calls in flight in this process."),
            unknown_replies_total: counter(
                "macula_rpc_unknown_replies_total",
                "REPLYs matching no call in flight; dropped.",
            ),
            lookups_total,
            lookups,
            lookup_duration_seconds: histogram(
                "macula_dht_lookup_duration_seconds",
                "Time of provider lookups not answered from the node's cache.",
                &DURATION_BUCKETS,
            ),
            routing_hops: histogram(
                "macula_dht_routing_hops",
                "Bridge levels a provider lookup climbed (0: answered in the cluster).",
                &HOP_BUCKETS,
            ),
            dht_queries_total: counter("macula_dht_queries_total", "DHT queries sent to peers."),
            dht_query_failures_total: counter(
                "macula_dht_query_failures_total",
                "DHT queries that timed out or failed.",
            ),
            dht_unknown_replies_total: counter(
                "macula_dht_unknown_replies_total",
                "DHT replies with an unknown correlation id; dropped.",
            ),
            store_refused_total,
            store_refused,
            records: gauge("macula_dht_records", "DHT records held."),
            contacts: gauge("macula_dht_contacts", "Contacts in the DHT routing table."),
            mesh_peers: gauge(
                "macula_mesh_peers",
                "Open connections to other nodes of the cluster.",
            ),
            escalations_total: counter(
                "macula_escalations_total",
                "Lookups sent to the level above.",
            ),
        }
    }

    /// Counts one finished call with `outcome`, one of [`RPC_OUTCOMES`] (else `rejected`).
    pub fn call(&self, outcome: &str) {
        let i = RPC_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(RPC_OUTCOMES.len() - 1);
        self.calls[i].inc();
    }

    /// Counts one lookup with `result`, one of [`LOOKUP_RESULTS`] (else `error`).
    pub fn lookup(&self, result: &str) {
        let i = LOOKUP_RESULTS
            .iter()
            .position(|o| *o == result)
            .unwrap_or(LOOKUP_RESULTS.len() - 1);
        self.lookups[i].inc();
    }

    /// Counts one refused STORE with `reason`, one of [`STORE_REFUSALS`] (else `invalid`).
    pub fn store_refused(&self, reason: &str) {
        let i = STORE_REFUSALS
            .iter()
            .position(|o| *o == reason)
            .unwrap_or(STORE_REFUSALS.len() - 1);
        self.store_refused[i].inc();
    }
}
