//! Fleet mode of `macula-loadtest pubsub --spawn --workers N` (issue 5): a sharded fleet of
//! bridge workers for one level, clusters of nodes uplinked to them, and the events of a run
//! (a worker killed, a worker added, a worker drained) with what they did to cluster ownership.
//!
//! ```text
//!   worker-1 … worker-N    127.0.0.1 … .N       macula bridge --fleet loadtest
//!                                                  --fleet-peer <every other worker>
//!   node-c0-1 … node-cC-K  the next addresses   macula node --cluster c<i> --uplink <worker i % N>
//!                                                  (node-c<i>-2 … --seed node-c<i>-1)
//!   worker-N+1             after the nodes      started by --add-worker-at,
//!                                                  --fleet-peer <the live workers>
//! ```
//!
//! A node usually starts on a worker that does not own its cluster, so it is redirected. What
//! the run observes comes from the admin listeners: a worker's `GET /fleet` (its id, members,
//! and the clusters connected to it with their owner), a node's `GET /fleet` (uplink, owner,
//! connected) and its `/metrics` (`macula_fleet_uplink_is_owner`,
//! `macula_fleet_redirects_followed_total`).
//!
//! A fleet is *re-homed* when every live worker sees the expected membership (after a kill or
//! a drain: the worker is no longer `alive`; after an add: the new worker is `alive`) and every
//! node reports `macula_fleet_uplink_is_owner` 1, is connected to a live worker whose id its
//! `/fleet` gives as owner, and that worker claims the node's cluster (`owned`). The membership
//! part keeps a measurement from ending before the fleet has even noticed the event.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tokio::task::JoinHandle;

use crate::spawn::{self, Fleet};

mod observe;
mod report;

use observe::{get_json, get_metrics, label, observe_blocking, Observation, WorkerView};
pub use report::{EventReport, ExitReport, FleetReport, Move, WorkerState};

/// `--fleet` name every worker gets.
pub const FLEET_NAME: &str = "loadtest";
/// How often the re-homing condition is polled.
pub const POLL: Duration = Duration::from_millis(50);
/// Bound of one re-homing wait (at start and after each event); past it `rehome_ms` is null.
pub const REHOME_DEADLINE: Duration = Duration::from_secs(60);
/// Bound of the waits for every process to answer `/health/ready`, for the workers' ids and for
/// every node to be connected.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Bound of the wait for a drained worker to exit, from its SIGTERM (the default grace period
/// of a drain is 30 s); past it the worker is killed and reported as not exited.
pub const DRAIN_EXIT_DEADLINE: Duration = Duration::from_secs(40);

/// What [`WorkerFleet::spawn`] starts.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Bridge workers at start (≥ 1).
    pub workers: usize,
    /// Clusters `c0` … (≥ 1).
    pub clusters: usize,
    /// Nodes per cluster (≥ 1).
    pub nodes_per_cluster: usize,
    /// `--realm` of every process; `None`: their default (`io.macula`).
    pub realm: Option<String>,
    /// Every process on 127.0.0.1 instead of one loopback address each.
    pub single_ip: bool,
}

/// What happens to the fleet during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    /// SIGKILL the worker owning the most clusters.
    Kill,
    /// Start one more worker.
    Add,
    /// SIGTERM (drain) the worker owning the most clusters.
    Drain,
}

/// One scheduled event.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// What to do.
    pub kind: EventKind,
    /// When, from the start of publishing.
    pub at: Duration,
}

/// The spawned fleet: workers, clusters of nodes, and what happened to them.
pub struct WorkerFleet {
    /// The processes.
    pub fleet: Fleet,
    workers: Vec<Worker>,
    /// Per cluster `c<i>`: its nodes (fleet indices), seed first.
    clusters: Vec<Vec<usize>>,
    realm: String,
    realm_args: Vec<String>,
    ips: IpAlloc,
    report: FleetReport,
}

struct Worker {
    name: String,
    proc: usize,
    id: Option<String>,
    fate: Fate,
}

enum Fate {
    Running,
    Killed,
    Draining {
        since: Instant,
        event: usize,
        watch: JoinHandle<(std::io::Result<ExitStatus>, Instant)>,
    },
    Exited(ExitReport),
}

impl WorkerFleet {
    /// Starts the workers (all ports chosen first, so each gets every other as `--fleet-peer`)
    /// and the nodes. Does not wait: call [`WorkerFleet::start`] next.
    ///
    /// Errors: an invalid spec, more processes than loopback addresses, a failed spawn.
    pub fn spawn(bin: PathBuf, spec: &FleetSpec) -> Result<WorkerFleet> {
        ensure!(spec.workers >= 1, "--workers must be at least 1");
        ensure!(spec.clusters >= 1, "--clusters must be at least 1");
        ensure!(
            spec.nodes_per_cluster >= 1,
            "--nodes-per-cluster must be at least 1"
        );
        let processes = spec.workers + spec.clusters * spec.nodes_per_cluster + 1;
        ensure!(
            spec.single_ip || processes <= 254,
            "{processes} processes do not fit on 127.0.0.1-254; use --single-ip"
        );
        let mut fleet = Fleet::new(bin)?;
        let mut ips = IpAlloc {
            next: 0,
            single: spec.single_ip,
        };
        let realm_args: Vec<String> = match &spec.realm {
            Some(r) => vec!["--realm".into(), r.clone()],
            None => Vec::new(),
        };
        let quics = (0..spec.workers)
            .map(|_| spawn::free_udp(&ips.next()))
            .collect::<Result<Vec<_>>>()?;
        let mut workers = Vec::new();
        for (w, quic) in quics.iter().enumerate() {
            let peers: Vec<SocketAddr> = quics
                .iter()
                .enumerate()
                .filter(|&(o, _)| o != w)
                .map(|(_, p)| *p)
                .collect();
            let name = format!("worker-{}", w + 1);
            let proc = start_worker(&mut fleet, &name, *quic, &worker_args(&peers, &realm_args))?;
            workers.push(Worker {
                name,
                proc,
                id: None,
                fate: Fate::Running,
            });
        }
        let extra: Vec<&str> = realm_args.iter().map(String::as_str).collect();
        let mut clusters = Vec::new();
        for c in 0..spec.clusters {
            let uplink = quics[c % quics.len()];
            let mut nodes: Vec<usize> = Vec::new();
            for k in 0..spec.nodes_per_cluster {
                let name = format!("node-c{c}-{}", k + 1);
                let seeds: Vec<SocketAddr> = nodes
                    .first()
                    .map(|&s| fleet.procs[s].quic)
                    .into_iter()
                    .collect();
                let i = fleet
                    .node_with(&name, &ips.next(), &format!("c{c}"), uplink, &seeds, &extra)
                    .with_context(|| format!("spawn {name}"))?;
                nodes.push(i);
            }
            clusters.push(nodes);
        }
        Ok(WorkerFleet {
            fleet,
            workers,
            clusters,
            realm: spec.realm.clone().unwrap_or_else(|| "io.macula".into()),
            realm_args,
            ips,
            report: FleetReport {
                workers: spec.workers,
                clusters: spec.clusters,
                nodes_per_cluster: spec.nodes_per_cluster,
                ..FleetReport::default()
            },
        })
    }

    /// QUIC address of the first node of cluster `c` (where its clients connect).
    pub fn cluster_addr(&self, c: usize) -> SocketAddr {
        self.fleet.procs[self.clusters[c][0]].quic
    }

    /// One line per process: name and QUIC address.
    pub fn describe(&self) -> String {
        self.fleet
            .procs
            .iter()
            .map(|p| format!("{} {}", p.name, p.quic))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Waits until every process is ready, every worker's id is known, every node is connected
    /// and then re-homed to its cluster's owner; records the time in `startup_rehome_ms`.
    ///
    /// Errors: a process that exits or is not ready, a worker without `/fleet`, a node not
    /// connected within [`READY_DEADLINE`] or not re-homed within [`REHOME_DEADLINE`].
    pub async fn start(&mut self) -> Result<()> {
        let t0 = Instant::now();
        self.fleet.wait_ready(READY_DEADLINE).await?;
        for w in 0..self.workers.len() {
            self.learn_id(w).await?;
        }
        self.wait_connected().await?;
        let expect = Expect {
            alive: self.running_ids(),
            gone: Vec::new(),
        };
        let (ms, blockers) = self.wait_rehomed(&expect, t0).await;
        match ms {
            Some(ms) => {
                eprintln!("fleet re-homed {ms} ms after start");
                self.report.startup_rehome_ms = Some(ms);
                Ok(())
            }
            None => bail!(
                "nodes not re-homed to their owners within {REHOME_DEADLINE:?}: {}",
                blockers.join("; ")
            ),
        }
    }

    /// Carries out `events` in time order, each at `base` + its time (or as soon as the
    /// previous one is re-homed). An event that fails is reported with its error; the run goes
    /// on.
    pub async fn run_events(&mut self, base: Instant, events: &[Event]) {
        let mut events = events.to_vec();
        events.sort_by_key(|e| (e.at, e.kind));
        for e in events {
            tokio::time::sleep_until((base + e.at).into()).await;
            let r = self.event(base, e).await;
            eprintln!(
                "[{:>5.1}s] {} {}: rehome {} ms, moved {}{}",
                r.at_s,
                r.kind,
                r.worker.as_deref().unwrap_or("-"),
                r.rehome_ms.map_or("-".into(), |m| m.to_string()),
                r.moved.len(),
                r.error
                    .as_deref()
                    .map_or(String::new(), |e| format!(", error: {e}")),
            );
            self.report.rehome_ms.insert(r.kind, r.rehome_ms);
            if r.kind == "add" {
                let new = r.worker.clone();
                let to_new = r.moved.iter().filter(|m| m.to == new).count();
                self.report.moved_to_new = Some(to_new);
                self.report.moved_between_old = Some(
                    r.moved
                        .iter()
                        .filter(|m| m.to.is_some() && m.to != new)
                        .count(),
                );
                self.report.moved = Some(r.moved.clone());
            }
            self.report.events.push(r);
        }
    }

    /// Ends the run's observations: waits for drained workers to exit (at most
    /// [`DRAIN_EXIT_DEADLINE`] from their SIGTERM), takes the final `per_worker` and the
    /// nodes' redirect counters. Call before stopping the processes.
    pub async fn finish(&mut self) -> FleetReport {
        for w in 0..self.workers.len() {
            let Fate::Draining { since, .. } = &self.workers[w].fate else {
                continue;
            };
            let deadline = *since + DRAIN_EXIT_DEADLINE;
            while matches!(self.workers[w].fate, Fate::Draining { .. }) && Instant::now() < deadline
            {
                tokio::time::sleep(POLL).await;
                self.reap().await;
            }
            if !matches!(self.workers[w].fate, Fate::Draining { .. }) {
                continue;
            }
            if let Fate::Draining { watch, event, .. } =
                std::mem::replace(&mut self.workers[w].fate, Fate::Killed)
            {
                // Not exited in time: aborting the watch drops (and kills) the child.
                watch.abort();
                eprintln!(
                    "{} did not exit within {DRAIN_EXIT_DEADLINE:?} of SIGTERM; killed",
                    self.workers[w].name
                );
                self.report.events[event].exit = Some(ExitReport::default());
            }
        }
        let end = self.snapshot().await;
        self.report
            .per_worker
            .insert("end".into(), end.states.clone());
        self.report.drops = self.drops().await;
        self.report.redirects_followed = end
            .obs
            .nodes
            .iter()
            .filter_map(|n| n.redirects)
            .sum::<f64>() as u64;
        self.report.clone()
    }

    /// Whether anything in the report deserves the processes' logs: an event that failed, a
    /// fleet not re-homed, a drained worker that did not exit cleanly.
    pub fn anomalies(report: &FleetReport) -> bool {
        report.events.iter().any(|e| {
            e.error.is_some()
                || e.rehome_ms.is_none()
                || e.exit
                    .as_ref()
                    .is_some_and(|x| !x.exited || x.code != Some(0))
        })
    }

    async fn event(&mut self, base: Instant, e: Event) -> EventReport {
        let kind = match e.kind {
            EventKind::Kill => "kill",
            EventKind::Add => "add",
            EventKind::Drain => "drain",
        };
        let before = self.snapshot().await;
        self.report
            .per_worker
            .insert(format!("before_{kind}"), before.states.clone());
        let t = Instant::now();
        let mut r = EventReport {
            kind,
            worker: None,
            choice: String::new(),
            scheduled_at_s: e.at.as_secs_f64(),
            at_s: t.duration_since(base).as_secs_f64(),
            rehome_ms: None,
            rehome_blockers: Vec::new(),
            moved: Vec::new(),
            exit: None,
            error: None,
        };
        let expect = match self.act(e.kind, &before, &mut r).await {
            Ok(expect) => expect,
            Err(err) => {
                r.error = Some(format!("{err:#}"));
                return r;
            }
        };
        let (ms, blockers) = self.wait_rehomed(&expect, t).await;
        r.rehome_ms = ms;
        r.rehome_blockers = blockers.into_iter().take(20).collect();
        let after = self.observe(false).await;
        r.moved = self.moves(&before.obs, &after);
        r
    }

    /// Does the event; returns what re-homed means afterwards.
    async fn act(
        &mut self,
        kind: EventKind,
        before: &Snapshot,
        r: &mut EventReport,
    ) -> Result<Expect> {
        match kind {
            EventKind::Kill | EventKind::Drain => {
                let (w, choice) = self.choose_victim(before)?;
                r.worker = Some(self.workers[w].name.clone());
                r.choice = choice;
                let proc = self.workers[w].proc;
                if kind == EventKind::Kill {
                    self.fleet.kill(proc).await;
                    self.workers[w].fate = Fate::Killed;
                } else {
                    let mut child = self
                        .fleet
                        .terminate_detached(proc)
                        .context("the worker is not running")?;
                    let since = Instant::now();
                    let watch = tokio::spawn(async move { (child.wait().await, Instant::now()) });
                    r.exit = Some(ExitReport::default());
                    self.workers[w].fate = Fate::Draining {
                        since,
                        event: self.report.events.len(),
                        watch,
                    };
                }
                Ok(Expect {
                    alive: self.running_ids(),
                    gone: self.workers[w].id.iter().cloned().collect(),
                })
            }
            EventKind::Add => {
                let peers: Vec<SocketAddr> = self
                    .workers
                    .iter()
                    .filter(|w| matches!(w.fate, Fate::Running))
                    .map(|w| self.fleet.procs[w.proc].quic)
                    .collect();
                let name = format!("worker-{}", self.workers.len() + 1);
                r.worker = Some(name.clone());
                r.choice = format!("new, --fleet-peer the {} live workers", peers.len());
                let quic = spawn::free_udp(&self.ips.next())?;
                let args = worker_args(&peers, &self.realm_args);
                let proc = start_worker(&mut self.fleet, &name, quic, &args)?;
                self.workers.push(Worker {
                    name,
                    proc,
                    id: None,
                    fate: Fate::Running,
                });
                self.fleet.wait_ready_one(proc, READY_DEADLINE).await?;
                self.learn_id(self.workers.len() - 1).await?;
                Ok(Expect {
                    alive: self.running_ids(),
                    gone: Vec::new(),
                })
            }
        }
    }

    /// The running worker owning the most clusters (ties: the first); without figures,
    /// worker-2 (or the first running one).
    fn choose_victim(&self, before: &Snapshot) -> Result<(usize, String)> {
        let running: Vec<usize> = (0..self.workers.len())
            .filter(|&w| matches!(self.workers[w].fate, Fate::Running))
            .collect();
        ensure!(
            running.len() >= 2,
            "{} running worker(s): none would be left to take over",
            running.len()
        );
        let best = running
            .iter()
            .filter_map(|&w| Some((before.states[w].clusters_owned?, w)))
            .max_by_key(|&(owned, w)| (owned, std::cmp::Reverse(w)));
        Ok(match best {
            Some((owned, w)) => (w, format!("owned the most clusters ({owned})")),
            None => {
                let w = if running.contains(&1) { 1 } else { running[0] };
                (w, "no ownership figures: the default worker".into())
            }
        })
    }

    /// Polls until re-homed per `expect`, from `since`; returns the ms, or `None` and the last
    /// blockers after [`REHOME_DEADLINE`].
    async fn wait_rehomed(
        &mut self,
        expect: &Expect,
        since: Instant,
    ) -> (Option<u64>, Vec<String>) {
        loop {
            self.reap().await;
            let obs = self.observe(false).await;
            let blockers = self.blockers(&obs, expect);
            if blockers.is_empty() {
                return (Some(since.elapsed().as_millis() as u64), blockers);
            }
            if since.elapsed() > REHOME_DEADLINE {
                return (None, blockers);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Why the fleet is not re-homed per `expect` (empty: it is).
    fn blockers(&self, obs: &Observation, expect: &Expect) -> Vec<String> {
        let mut out = Vec::new();
        for (&w, view) in &obs.workers {
            let name = &self.workers[w].name;
            let Some(v) = view else {
                out.push(format!("{name}: /fleet unreadable"));
                continue;
            };
            for id in &expect.alive {
                let status = if *id == v.me {
                    Some("alive")
                } else {
                    v.members
                        .iter()
                        .find(|m| m.id == *id)
                        .map(|m| m.status.as_str())
                };
                if status != Some("alive") {
                    out.push(format!(
                        "{name} sees {} as {}",
                        self.name_of(id),
                        status.unwrap_or("absent")
                    ));
                }
            }
            for id in &expect.gone {
                if v.members.iter().any(|m| m.id == *id && m.status == "alive") {
                    out.push(format!("{name} still sees {} alive", self.name_of(id)));
                }
            }
        }
        for n in &obs.nodes {
            let node = &self.fleet.procs[n.proc].name;
            let Some(v) = &n.view else {
                out.push(format!("{node}: /fleet unreadable"));
                continue;
            };
            if n.is_owner != Some(1.0) {
                out.push(format!(
                    "{node}: macula_fleet_uplink_is_owner {}",
                    n.is_owner.map_or("absent".into(), |x| x.to_string())
                ));
            }
            if !v.connected {
                out.push(format!("{node}: not connected"));
            }
            let Some(up) = &v.uplink else {
                out.push(format!("{node}: no uplink"));
                continue;
            };
            if v.owner.as_ref() != Some(up) {
                out.push(format!(
                    "{node}: uplink {} but owner {}",
                    self.name_of(up),
                    v.owner
                        .as_deref()
                        .map_or("null".into(), |o| self.name_of(o))
                ));
            }
            if expect.gone.contains(up) {
                out.push(format!("{node}: still on {}", self.name_of(up)));
                continue;
            }
            let cluster = format!("c{}", n.cluster);
            let worker = self
                .workers
                .iter()
                .position(|w| w.id.as_ref() == Some(up) && matches!(w.fate, Fate::Running));
            match worker.and_then(|w| obs.workers.get(&w)) {
                None => out.push(format!(
                    "{node}: uplink {} is no running worker",
                    self.name_of(up)
                )),
                Some(Some(wv)) => {
                    if !wv
                        .clusters
                        .iter()
                        .any(|c| c.cluster == cluster && c.realm == self.realm && c.owned)
                    {
                        out.push(format!(
                            "{node}: {} does not claim {cluster}",
                            self.name_of(up)
                        ));
                    }
                }
                Some(None) => {} // reported with the workers
            }
        }
        out
    }

    /// Clusters whose owner differs between two observations.
    fn moves(&self, before: &Observation, after: &Observation) -> Vec<Move> {
        let (b, a) = (self.owners(before), self.owners(after));
        let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| b.get(*k) != a.get(*k))
            .map(|k| Move {
                cluster: k.clone(),
                from: b.get(k).map(|id| self.name_of(id)),
                to: a.get(k).map(|id| self.name_of(id)),
            })
            .collect()
    }

    /// Cluster → owner id, from the workers' views (a worker claiming a cluster wins over
    /// another's view of it).
    fn owners(&self, obs: &Observation) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for v in obs.workers.values().flatten() {
            for c in v.clusters.iter().filter(|c| c.realm == self.realm) {
                if c.owned || !m.contains_key(&c.cluster) {
                    m.insert(c.cluster.clone(), c.owner.clone());
                }
            }
        }
        m
    }

    /// Every worker's state plus an observation (with the workers' metrics).
    async fn snapshot(&mut self) -> Snapshot {
        self.reap().await;
        let obs = self.observe(true).await;
        let states = self
            .workers
            .iter()
            .enumerate()
            .map(|(w, wk)| {
                let view = obs.workers.get(&w).and_then(|v| v.as_ref());
                let gauges = obs.gauges.get(&w).copied().flatten();
                let (exit_code, exit_signal) = match &wk.fate {
                    Fate::Killed => (None, Some(libc::SIGKILL)),
                    Fate::Exited(x) => (x.code, x.signal),
                    _ => (None, None),
                };
                WorkerState {
                    name: wk.name.clone(),
                    id: wk.id.clone(),
                    addr: self.fleet.procs[wk.proc].quic.to_string(),
                    alive: matches!(wk.fate, Fate::Running | Fate::Draining { .. }),
                    draining: view.map(|v| v.draining),
                    clusters_connected: gauges.map(|g| g.0),
                    clusters_owned: gauges.map(|g| g.1),
                    exit_code,
                    exit_signal,
                }
            })
            .collect();
        Snapshot { states, obs }
    }

    /// Reads the live workers' `/fleet` (running ones; with `gauges`, also draining ones and
    /// their metrics) and every node's `/fleet` and `/metrics`.
    async fn observe(&self, gauges: bool) -> Observation {
        let workers: Vec<(usize, SocketAddr)> = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| match w.fate {
                Fate::Running => true,
                Fate::Draining { .. } => gauges,
                _ => false,
            })
            .map(|(i, w)| (i, self.fleet.procs[w.proc].admin))
            .collect();
        let nodes: Vec<(usize, usize, SocketAddr)> = self
            .clusters
            .iter()
            .enumerate()
            .flat_map(|(c, nodes)| nodes.iter().map(move |&n| (c, n)))
            .map(|(c, n)| (c, n, self.fleet.procs[n].admin))
            .collect();
        tokio::task::spawn_blocking(move || observe_blocking(&workers, &nodes, gauges))
            .await
            .expect("observation task does not panic")
    }

    /// Moves exited drained workers from `Draining` to `Exited`.
    async fn reap(&mut self) {
        for w in &mut self.workers {
            let finished = matches!(&w.fate, Fate::Draining { watch, .. } if watch.is_finished());
            if !finished {
                continue;
            }
            let Fate::Draining {
                since,
                event,
                watch,
            } = std::mem::replace(&mut w.fate, Fate::Killed)
            else {
                unreachable!("checked above");
            };
            let x = match watch.await {
                Ok((Ok(status), at)) => ExitReport {
                    exited: true,
                    code: status.code(),
                    signal: status.signal(),
                    after_ms: Some(at.duration_since(since).as_millis() as u64),
                },
                _ => ExitReport::default(),
            };
            eprintln!("{} exited after drain: {x:?}", w.name);
            if let Some(e) = self.report.events.get_mut(event) {
                e.exit = Some(x.clone());
            }
            w.fate = Fate::Exited(x);
        }
    }

    /// Every running process's non-zero drop counters, by reason.
    async fn drops(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let procs: Vec<(String, SocketAddr)> = (0..self.fleet.procs.len())
            .filter(|&i| self.fleet.is_running(i))
            .map(|i| (self.fleet.procs[i].name.clone(), self.fleet.procs[i].admin))
            .collect();
        tokio::task::spawn_blocking(move || {
            procs
                .into_iter()
                .filter_map(|(name, admin)| {
                    let body = get_metrics(admin).ok()?;
                    let by_reason: BTreeMap<String, u64> =
                        spawn::metric_samples(&body, "macula_messages_dropped_total")
                            .into_iter()
                            .filter(|(_, v)| *v > 0.0)
                            .map(|(labels, v)| (label(&labels, "reason"), v as u64))
                            .collect();
                    (!by_reason.is_empty()).then_some((name, by_reason))
                })
                .collect()
        })
        .await
        .expect("metrics task does not panic")
    }

    /// Polls a worker's `/fleet` until it gives the worker's id.
    async fn learn_id(&mut self, w: usize) -> Result<()> {
        let admin = self.fleet.procs[self.workers[w].proc].admin;
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let r = tokio::task::spawn_blocking(move || get_json::<WorkerView>(admin, "/fleet"))
                .await
                .expect("GET task does not panic");
            match r {
                Ok(v) if !v.me.is_empty() => {
                    self.workers[w].id = Some(v.me);
                    return Ok(());
                }
                Ok(_) if Instant::now() > deadline => {
                    bail!("{}: /fleet has no \"self\"", self.workers[w].name)
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("{}: GET /fleet", self.workers[w].name)))
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Waits until every node's `/fleet` says connected.
    async fn wait_connected(&self) -> Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let obs = self.observe(false).await;
            let waiting: Vec<&str> = obs
                .nodes
                .iter()
                .filter(|n| !n.view.as_ref().is_some_and(|v| v.connected))
                .map(|n| self.fleet.procs[n.proc].name.as_str())
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "nodes not connected within {READY_DEADLINE:?}: {}",
                    waiting.join(", ")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn running_ids(&self) -> Vec<String> {
        self.workers
            .iter()
            .filter(|w| matches!(w.fate, Fate::Running))
            .filter_map(|w| w.id.clone())
            .collect()
    }

    /// A worker's name from its hex id (the id itself when unknown).
    fn name_of(&self, id: &str) -> String {
        self.workers
            .iter()
            .find(|w| w.id.as_deref() == Some(id))
            .map_or_else(|| id.to_string(), |w| w.name.clone())
    }
}

/// The arguments of a worker whose peers are `peers`.
fn worker_args(peers: &[SocketAddr], realm_args: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec!["--fleet".into(), FLEET_NAME.into()];
    for p in peers {
        args.push("--fleet-peer".into());
        args.push(p.to_string());
    }
    args.extend(realm_args.iter().cloned());
    args
}

/// Starts worker `name` on `quic` with `args` (from [`worker_args`]).
fn start_worker(fleet: &mut Fleet, name: &str, quic: SocketAddr, args: &[String]) -> Result<usize> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fleet
        .bridge_at(name, quic, &args)
        .with_context(|| format!("spawn {name}"))
}

/// Loopback addresses in start order: 127.0.0.1, .2, … (or always .1).
struct IpAlloc {
    next: usize,
    single: bool,
}

impl IpAlloc {
    fn next(&mut self) -> String {
        self.next += 1;
        if self.single {
            "127.0.0.1".into()
        } else {
            format!("127.0.0.{}", self.next)
        }
    }
}

/// What re-homed means after an event (hex ids).
struct Expect {
    /// Workers every live worker must list as `alive`.
    alive: Vec<String>,
    /// Workers no live worker may list as `alive`, and no node may be connected to.
    gone: Vec<String>,
}

struct Snapshot {
    states: Vec<WorkerState>,
    obs: Observation,
}
