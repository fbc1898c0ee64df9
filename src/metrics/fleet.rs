//! Metrics of the bridge fleet (`docs/FLEET.md`): membership, ownership, redirects,
//! handoffs, forwarding between workers and drain progress. Labels come from fixed sets.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Values of the `reason` label of `macula_fleet_redirects_sent_total`.
pub const REDIRECT_REASONS: [&str; 3] = ["connect", "rebalance", "drain"];

/// Values of the `kind` label of `macula_fleet_forwarded_total`.
pub const FORWARD_KINDS: [&str; 2] = ["publish", "store"];

/// Values of the `reason` label of `macula_fleet_refused_total`: a peer of another fleet
/// (`fleet`), of this fleet with different settings (`config`), a duplicate link between two
/// workers (`duplicate`), a view for another fleet (`view`), a node that did not follow a
/// redirect (`ignored_redirect`), a node accepted without being owner because it was
/// redirected too often (`redirect_loop`).
pub const REFUSALS: [&str; 6] = [
    "fleet",
    "config",
    "duplicate",
    "view",
    "ignored_redirect",
    "redirect_loop",
];

/// Member statuses, the `status` label values.
pub const STATUSES: [&str; 4] = ["alive", "suspect", "draining", "dead"];

/// Fleet metrics, registered in the process registry by [`super::Metrics::new`]. A node
/// exports only the `redirects_followed` and `uplink_is_owner` series with data.
pub struct FleetMetrics {
    /// `macula_fleet_members{status}`: known workers by status (this one included).
    pub members: IntGaugeVec,
    /// `macula_fleet_membership_changes_total{status}`: status changes seen, by new status.
    pub membership_changes_total: IntCounterVec,
    /// `macula_fleet_clusters_connected`: clusters with at least one node connected here
    /// (child bridges are not counted).
    pub clusters_connected: IntGauge,
    /// `macula_fleet_clusters_owned`: of those, the clusters this worker owns.
    pub clusters_owned: IntGauge,
    /// `macula_fleet_redirects_sent_total{reason}`: redirects sent to nodes and child bridges.
    pub redirects_sent_total: IntCounterVec,
    /// `macula_fleet_redirects_followed_total` (node, child bridge): redirects this node's
    /// uplink or this bridge's parent link followed.
    pub redirects_followed_total: IntCounter,
    /// `macula_fleet_uplink_is_owner` (node): 1 while the uplink is connected to the worker
    /// its directory names as the owner of its cluster (or there is no fleet), else 0.
    pub uplink_is_owner: IntGauge,
    /// `macula_fleet_handoffs_total`: node links that left this worker after a redirect.
    pub handoffs_total: IntCounter,
    /// `macula_fleet_forwarded_total{kind}`: publishes and provider records sent to other
    /// workers.
    pub forwarded_total: IntCounterVec,
    /// `forwarded_total{kind="publish"}`, resolved once for the publish path.
    pub forwarded_publish: IntCounter,
    /// `macula_fleet_refused_total{reason}`: see [`REFUSALS`].
    pub refused_total: IntCounterVec,
    /// `macula_fleet_peer_links`: open links to other workers (one per worker and realm).
    pub peer_links: IntGauge,
    /// `macula_fleet_lingering_links`: ended links whose interest is still held for
    /// `bridge.fleet.handoff_grace_ms`.
    pub lingering_links: IntGauge,
    /// `macula_fleet_draining`: 1 while this worker drains.
    pub draining: IntGauge,
    /// `macula_fleet_drain_remaining_links`: node links and held interests a drain still
    /// waits for.
    pub drain_remaining_links: IntGauge,
    /// `macula_fleet_child_bridges`: child-bridge links connected to this worker (placed
    /// and redirected like nodes).
    pub child_bridges: IntGauge,
    /// `macula_fleet_child_workers` (any bridge): child bridges connected here that are
    /// workers of a fleet (`fleet=<name>` in their `connect`); the workers of one fleet count
    /// as one child for routing.
    pub child_workers: IntGauge,
}

impl FleetMetrics {
    /// Registers the fleet metrics in `r`.
    pub fn new(r: &Registry) -> FleetMetrics {
        let counter = |name: &str, help: &str| super::register(r, super::counter(name, help));
        let gauge = |name: &str, help: &str| super::register(r, super::gauge(name, help));
        let vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            let v = super::register(r, super::counter_vec(name, help, label));
            for l in values {
                v.with_label_values(&[l]);
            }
            v
        };
        let members = super::register(
            r,
            IntGaugeVec::new(
                Opts::new("macula_fleet_members", "Known fleet workers by status."),
                &["status"],
            )
            .expect("valid metric options"),
        );
        for s in STATUSES {
            members.with_label_values(&[s]);
        }
        let forwarded_total = vec(
            "macula_fleet_forwarded_total",
            "Publishes and provider records sent to other workers.",
            "kind",
            &FORWARD_KINDS,
        );
        let forwarded_publish = forwarded_total.with_label_values(&["publish"]);
        FleetMetrics {
            members,
            membership_changes_total: vec(
                "macula_fleet_membership_changes_total",
                "Fleet member status changes seen, by new status.",
                "status",
                &STATUSES,
            ),
            clusters_connected: gauge(
                "macula_fleet_clusters_connected",
                "Clusters with at least one node connected to this worker.",
            ),
            clusters_owned: gauge(
                "macula_fleet_clusters_owned",
                "Clusters connected to this worker that it owns.",
            ),
            redirects_sent_total: vec(
                "macula_fleet_redirects_sent_total",
                "Redirects sent to nodes, by reason.",
                "reason",
                &REDIRECT_REASONS,
            ),
            redirects_followed_total: counter(
                "macula_fleet_redirects_followed_total",
                "Redirects this node followed.",
            ),
            uplink_is_owner: gauge(
                "macula_fleet_uplink_is_owner",
                "1 while the uplink is connected to the owner of this node's cluster.",
            ),
            handoffs_total: counter(
                "macula_fleet_handoffs_total",
                "Node links that left this worker after a redirect.",
            ),
            forwarded_total,
            forwarded_publish,
            refused_total: vec(
                "macula_fleet_refused_total",
                "Fleet peers, views and redirects refused or ignored, by reason.",
                "reason",
                &REFUSALS,
            ),
            peer_links: gauge(
                "macula_fleet_peer_links",
                "Open links to other workers of the fleet.",
            ),
            lingering_links: gauge(
                "macula_fleet_lingering_links",
                "Ended links whose interest is held for the handoff grace.",
            ),
            draining: gauge("macula_fleet_draining", "1 while this worker drains."),
            drain_remaining_links: gauge(
                "macula_fleet_drain_remaining_links",
                "Node links and held interests a drain still waits for.",
            ),
            child_bridges: gauge(
                "macula_fleet_child_bridges",
                "Child-bridge links connected to this worker.",
            ),
            child_workers: gauge(
                "macula_fleet_child_workers",
                "Child bridges connected here that are workers of a fleet.",
            ),
        }
    }
}
