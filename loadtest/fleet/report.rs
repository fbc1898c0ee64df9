//! The fleet section of the `pubsub` report (`docs/LOADTEST.md`, "Fleet mode").

use std::collections::BTreeMap;

use serde::Serialize;

/// One worker as seen at a moment of the run (`per_worker` in the report).
#[derive(Serialize, Debug, Clone)]
pub struct WorkerState {
    pub name: String,
    /// Hex node id (its `/fleet` `self`), `null` if never read.
    pub id: Option<String>,
    pub addr: String,
    /// The process runs (a draining worker is alive until it exits).
    pub alive: bool,
    /// Its `/fleet` `draining`, `null` when unreadable.
    pub draining: Option<bool>,
    /// `macula_fleet_clusters_connected`, `null` when unreadable.
    pub clusters_connected: Option<u64>,
    /// `macula_fleet_clusters_owned`, `null` when unreadable.
    pub clusters_owned: Option<u64>,
    /// Exit code once exited on its own (a drained worker: 0 expected).
    pub exit_code: Option<i32>,
    /// Signal that ended it (9 for a killed worker).
    pub exit_signal: Option<i32>,
}

/// A cluster whose owner changed across an event (names of workers, or hex ids of unknown ones).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub cluster: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// How a drained worker ended.
#[derive(Serialize, Debug, Clone, Default)]
pub struct ExitReport {
    /// It exited within [`super::DRAIN_EXIT_DEADLINE`] of its SIGTERM.
    pub exited: bool,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// From SIGTERM to exit.
    pub after_ms: Option<u64>,
}

/// One event in the report.
#[derive(Serialize, Debug, Clone)]
pub struct EventReport {
    /// `kill`, `add` or `drain`.
    pub kind: &'static str,
    /// The worker killed, added or drained.
    pub worker: Option<String>,
    /// Why that worker.
    pub choice: String,
    /// Requested time, s from the start of publishing.
    pub scheduled_at_s: f64,
    /// Actual time (later when the previous event's re-homing took longer).
    pub at_s: f64,
    /// From the event until the fleet is re-homed (see the module doc); null past
    /// [`super::REHOME_DEADLINE`].
    pub rehome_ms: Option<u64>,
    /// When not re-homed: what still blocked it at the deadline (at most 20 lines).
    pub rehome_blockers: Vec<String>,
    /// Clusters whose owner changed (the workers' `/fleet` views before the event and once
    /// re-homed).
    pub moved: Vec<Move>,
    /// A drain: how the worker ended.
    pub exit: Option<ExitReport>,
    /// The event could not be carried out (e.g. the new worker never became ready).
    pub error: Option<String>,
}

/// The report's fleet section (flattened into the pubsub report).
#[derive(Serialize, Debug, Clone, Default)]
pub struct FleetReport {
    /// Workers at start.
    pub workers: usize,
    pub clusters: usize,
    pub nodes_per_cluster: usize,
    /// From the start of the processes until every node was re-homed to its cluster's owner.
    pub startup_rehome_ms: Option<u64>,
    /// Per event kind: [`EventReport::rehome_ms`].
    pub rehome_ms: BTreeMap<&'static str, Option<u64>>,
    /// `before_<event>` and `end`: every worker's state.
    pub per_worker: BTreeMap<String, Vec<WorkerState>>,
    pub events: Vec<EventReport>,
    /// The add event's moves, and how many went to the new worker / between the old ones.
    pub moved: Option<Vec<Move>>,
    pub moved_to_new: Option<usize>,
    pub moved_between_old: Option<usize>,
    /// Sum over the nodes of `macula_fleet_redirects_followed_total`, at the end.
    pub redirects_followed: u64,
    /// QoS 1 publishes never acknowledged to their publisher (not counted as lost).
    pub unacked: u64,
    /// Deliveries more than 1 s after their publish (e.g. held or re-sent across an event).
    pub delivered_after_1s: u64,
    /// At the end, per process still running: its non-zero `macula_messages_dropped_total`
    /// samples by `reason` (a drop under QoS 1 is re-sent, so it costs latency, not a loss).
    pub drops: BTreeMap<String, BTreeMap<String, u64>>,
    /// Directory of the processes' logs, when kept.
    pub logs: Option<String>,
}
