//! What a fleet run reads from the admin listeners: a worker's and a node's `GET /fleet`, and
//! the fleet metrics. Blocking HTTP (`spawn::http_get`): run it with `spawn_blocking`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{ensure, Context, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::spawn;

/// A worker's `GET /fleet`.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub(super) struct WorkerView {
    #[serde(rename = "self")]
    pub(super) me: String,
    pub(super) draining: bool,
    pub(super) members: Vec<Member>,
    pub(super) clusters: Vec<ClusterView>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub(super) struct Member {
    pub(super) id: String,
    pub(super) status: String,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub(super) struct ClusterView {
    pub(super) realm: String,
    pub(super) cluster: String,
    pub(super) owner: String,
    pub(super) owned: bool,
}

/// A node's `GET /fleet`.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub(super) struct NodeView {
    pub(super) uplink: Option<String>,
    pub(super) owner: Option<String>,
    pub(super) connected: bool,
}

pub(super) struct Observation {
    /// Worker index → its `/fleet` (None: unreadable).
    pub(super) workers: BTreeMap<usize, Option<WorkerView>>,
    /// Worker index → (clusters connected, clusters owned) gauges.
    pub(super) gauges: BTreeMap<usize, Option<(u64, u64)>>,
    pub(super) nodes: Vec<NodeObs>,
}

pub(super) struct NodeObs {
    pub(super) cluster: usize,
    pub(super) proc: usize,
    pub(super) view: Option<NodeView>,
    pub(super) is_owner: Option<f64>,
    pub(super) redirects: Option<f64>,
}

pub(super) fn observe_blocking(
    workers: &[(usize, SocketAddr)],
    nodes: &[(usize, usize, SocketAddr)],
    gauges: bool,
) -> Observation {
    let mut obs = Observation {
        workers: BTreeMap::new(),
        gauges: BTreeMap::new(),
        nodes: Vec::new(),
    };
    for &(w, admin) in workers {
        obs.workers.insert(w, get_json(admin, "/fleet").ok());
        if gauges {
            let g = get_metrics(admin).ok().and_then(|body| {
                Some((
                    first_sample(&body, "macula_fleet_clusters_connected")? as u64,
                    first_sample(&body, "macula_fleet_clusters_owned")? as u64,
                ))
            });
            obs.gauges.insert(w, g);
        }
    }
    for &(cluster, proc, admin) in nodes {
        let metrics = get_metrics(admin).ok();
        obs.nodes.push(NodeObs {
            cluster,
            proc,
            view: get_json(admin, "/fleet").ok(),
            is_owner: metrics
                .as_deref()
                .and_then(|b| first_sample(b, "macula_fleet_uplink_is_owner")),
            redirects: metrics
                .as_deref()
                .map(|b| spawn::metric_sum(b, "macula_fleet_redirects_followed_total")),
        });
    }
    obs
}

pub(super) fn get_json<T: DeserializeOwned>(admin: SocketAddr, path: &str) -> Result<T> {
    let (code, body) = spawn::http_get(admin, path)?;
    ensure!(code == 200, "GET {path} answered HTTP {code}");
    serde_json::from_str(&body).with_context(|| format!("GET {path}: {body}"))
}

pub(super) fn get_metrics(admin: SocketAddr) -> Result<String> {
    let (code, body) = spawn::http_get(admin, "/metrics")?;
    ensure!(code == 200, "GET /metrics answered HTTP {code}");
    Ok(body)
}

/// The value of label `key` in a sample's labels (`reason="no_route",…`), or all of them.
pub(super) fn label(labels: &str, key: &str) -> String {
    labels
        .split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix("=\""))
        .map_or_else(
            || labels.to_string(),
            |v| v.trim_end_matches('"').to_string(),
        )
}

pub(super) fn first_sample(body: &str, name: &str) -> Option<f64> {
    spawn::metric_samples(body, name).first().map(|s| s.1)
}
