//! The bridge hierarchy of `docs/DISCOVERY.md` as child processes: one city bridge, street
//! bridges under it, and clusters of nodes under the streets. Shared by `macula-loadtest rpc`
//! and the integration tests (`tests/common` includes this file next to `spawn.rs`).
//!
//! ```text
//!                 city            (--level city, no parent)
//!               /      \
//!        street-1      street-2   (--level street --parent <city>)
//!        a1 a2 a3      b1 b2 b3   (--cluster a|b --uplink <street>; a2, a3 --seed a1)
//! ```
//!
//!
//! With [`TopologySpec::cities`] ≥ 1 a region bridge is on top instead, with that many city
//! bridges under it and the streets spread over the cities in order (street `s` under city
//! `s × cities / streets`): street → city → region → city → street.
//!
//! Process `i` listens on `127.0.0.(i+1)` (city on .1, the streets next, then the nodes in
//! cluster order), or all on 127.0.0.1 with [`TopologySpec::single_ip`].

use std::net::SocketAddr;

use anyhow::{ensure, Context, Result};

use super::spawn::Fleet;

/// Name of the configuration file [`TopologySpec::config`] is written to, in the fleet directory.
pub const CONFIG_FILE: &str = "macula.toml";

/// One cluster: `nodes` nodes named `node-<name>1` … uplinked to one street bridge.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Cluster id (`--cluster`), also the node-name prefix.
    pub name: String,
    /// Index of the street bridge the nodes uplink to (0 = `street-1`).
    pub street: usize,
    /// Number of nodes (≥ 1); every node after the first gets `--seed <first node>`.
    pub nodes: usize,
    /// Realm of the nodes (`--realm`); `None`: the nodes' default (`io.macula`).
    pub realm: Option<String>,
}

/// What [`Topology::spawn`] starts.
#[derive(Debug, Clone)]
pub struct TopologySpec {
    /// Street bridges under the city (≥ 1), named `street-1` ….
    pub streets: usize,
    /// The clusters, in start order.
    pub clusters: Vec<ClusterSpec>,
    /// Realms every bridge accepts (`--realm`, repeated); empty: the bridges' default.
    pub bridge_realms: Vec<String>,
    /// TOML written to [`CONFIG_FILE`] in the fleet directory and given to every process
    /// (bridges and nodes) with `--config`; `None`: no file.
    pub config: Option<String>,
    /// Start every process on 127.0.0.1 instead of one loopback address each.
    pub single_ip: bool,
    /// City bridges under a region bridge (0: no region, one city on top).
    pub cities: usize,
}

impl ClusterSpec {
    /// Cluster `name` of `nodes` nodes under street `street` (0-based), default realm.
    pub fn new(name: &str, street: usize, nodes: usize) -> ClusterSpec {
        ClusterSpec {
            name: name.into(),
            street,
            nodes,
            realm: None,
        }
    }

    /// The same cluster in `realm`.
    pub fn in_realm(mut self, realm: &str) -> ClusterSpec {
        self.realm = Some(realm.into());
        self
    }
}

impl TopologySpec {
    /// The standard topology: a city, two streets, cluster `a` under street 1 and cluster `b`
    /// under street 2, `nodes_per_cluster` nodes each, default realm, no config file.
    pub fn two_streets(nodes_per_cluster: usize) -> TopologySpec {
        TopologySpec {
            streets: 2,
            clusters: vec![
                ClusterSpec::new("a", 0, nodes_per_cluster),
                ClusterSpec::new("b", 1, nodes_per_cluster),
            ],
            bridge_realms: Vec::new(),
            config: None,
            single_ip: false,
            cities: 0,
        }
    }

    /// Number of processes [`Topology::spawn`] starts.
    pub fn processes(&self) -> usize {
        1 + self.cities + self.streets + self.clusters.iter().map(|c| c.nodes).sum::<usize>()
    }
}

/// Indices into [`Fleet::procs`] of a spawned topology.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The city bridge (the first city when there is a region).
    pub city: usize,
    /// The region bridge, when [`TopologySpec::cities`] ≥ 1.
    pub region: Option<usize>,
    /// Every city bridge, `city-1` first.
    pub cities: Vec<usize>,
    /// The street bridges, `street-1` first.
    pub streets: Vec<usize>,
    /// Each cluster's name and its nodes, first (the seed) first.
    pub clusters: Vec<(String, Vec<usize>)>,
}

impl Topology {
    /// Starts the processes of `spec` in `fleet` (bridges top-down, then each cluster's seed
    /// node before the others). Does not wait: call [`Fleet::wait_ready`] next.
    ///
    /// Errors: an invalid spec (no street, a cluster under a missing street or without nodes,
    /// more than 254 addresses), a failed config write or spawn.
    pub fn spawn(fleet: &mut Fleet, spec: &TopologySpec) -> Result<Topology> {
        ensure!(spec.streets >= 1, "a topology needs at least one street");
        ensure!(
            spec.single_ip || spec.processes() <= 254,
            "{} processes do not fit on 127.0.0.1-254; use single_ip",
            spec.processes()
        );
        for c in &spec.clusters {
            ensure!(c.nodes >= 1, "cluster {} has no nodes", c.name);
            ensure!(
                c.street < spec.streets,
                "cluster {} is under street {} of {}",
                c.name,
                c.street + 1,
                spec.streets
            );
        }
        let mut common = Vec::new();
        if let Some(toml) = &spec.config {
            let path = fleet.write_file(CONFIG_FILE, toml)?;
            common.push("--config".to_string());
            common.push(path.display().to_string());
        }
        let mut bridge_extra = common.clone();
        for r in &spec.bridge_realms {
            bridge_extra.push("--realm".into());
            bridge_extra.push(r.clone());
        }
        let bridge_extra: Vec<&str> = bridge_extra.iter().map(String::as_str).collect();

        let mut next_ip = 0usize;
        let mut ip = || {
            next_ip += 1;
            if spec.single_ip {
                "127.0.0.1".to_string()
            } else {
                format!("127.0.0.{next_ip}")
            }
        };
        let (region, cities) = if spec.cities == 0 {
            let city = fleet
                .bridge_with("city", &ip(), "city", &[], &bridge_extra)
                .context("spawn city")?;
            (None, vec![city])
        } else {
            let region = fleet
                .bridge_with("region", &ip(), "region", &[], &bridge_extra)
                .context("spawn region")?;
            let region_addr = fleet.procs[region].quic;
            let mut cities = Vec::new();
            for c in 0..spec.cities {
                let name = format!("city-{}", c + 1);
                let i = fleet
                    .bridge_with(&name, &ip(), "city", &[region_addr], &bridge_extra)
                    .with_context(|| format!("spawn {name}"))?;
                cities.push(i);
            }
            (Some(region), cities)
        };
        let mut streets = Vec::new();
        for s in 0..spec.streets {
            let name = format!("street-{}", s + 1);
            let city_addr = fleet.procs[cities[s * cities.len() / spec.streets]].quic;
            let i = fleet
                .bridge_with(&name, &ip(), "street", &[city_addr], &bridge_extra)
                .with_context(|| format!("spawn {name}"))?;
            streets.push(i);
        }
        let mut clusters = Vec::new();
        for c in &spec.clusters {
            let uplink = fleet.procs[streets[c.street]].quic;
            let mut extra = common.clone();
            if let Some(r) = &c.realm {
                extra.push("--realm".into());
                extra.push(r.clone());
            }
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            let mut nodes: Vec<usize> = Vec::new();
            for n in 0..c.nodes {
                let name = format!("node-{}{}", c.name, n + 1);
                let seeds: Vec<SocketAddr> = nodes
                    .first()
                    .map(|&s| fleet.procs[s].quic)
                    .into_iter()
                    .collect();
                let i = fleet
                    .node_with(&name, &ip(), &c.name, uplink, &seeds, &extra)
                    .with_context(|| format!("spawn {name}"))?;
                nodes.push(i);
            }
            clusters.push((c.name.clone(), nodes));
        }
        Ok(Topology {
            city: cities[0],
            region,
            cities,
            streets,
            clusters,
        })
    }

    /// The nodes of cluster `name`, seed first. Panics if the topology has no such cluster (a
    /// programming error of the caller, which built the spec).
    pub fn cluster(&self, name: &str) -> &[usize] {
        self.clusters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, nodes)| nodes.as_slice())
            .unwrap_or_else(|| panic!("no cluster {name:?} in this topology"))
    }

    /// A one-line description: process names with their QUIC addresses.
    pub fn describe(&self, fleet: &Fleet) -> String {
        let name = |i: usize| format!("{} {}", fleet.procs[i].name, fleet.procs[i].quic);
        let mut parts: Vec<String> = self.region.iter().map(|&i| name(i)).collect();
        parts.extend(self.cities.iter().map(|&i| name(i)));
        parts.extend(self.streets.iter().map(|&i| name(i)));
        for (_, nodes) in &self.clusters {
            parts.extend(nodes.iter().map(|&i| name(i)));
        }
        parts.join(", ")
    }
}
