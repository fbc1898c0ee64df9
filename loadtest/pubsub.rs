//! The `pubsub` scenario.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::BytesMut;
use hdrhistogram::Histogram;
use macula::client::{Client, ClientOptions, Subscription};
use macula::wire::Qos;
use serde::Serialize;

use crate::fleet::{Event, EventKind, FleetReport, FleetSpec, WorkerFleet};
use crate::spawn::{self, Fleet};

/// Arguments of `macula-loadtest pubsub`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Start a bridge and two nodes as child processes of the `macula` binary.
    #[arg(long)]
    spawn: bool,
    /// Messages per second across all publishers; 0 = as fast as possible.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Payload size in bytes (at least 16: sequence number and send time).
    #[arg(long, default_value_t = 128)]
    payload: usize,
    /// 0 = at most once, 1 = at least once (acknowledged hop by hop).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Publisher connections (all to the publishing node).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscriber connections (all to the subscribing node).
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Node the publishers connect to (without --spawn).
    #[arg(long, default_value = "127.0.0.1:9444")]
    pub_addr: String,
    /// Node the subscribers connect to (without --spawn).
    #[arg(long, default_value = "127.0.0.1:9445")]
    sub_addr: String,
    /// Realm to join.
    #[arg(long, default_value = "io.macula")]
    realm: String,
    /// TLS server name of the nodes.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Seconds to wait for in-flight messages after publishing stops.
    #[arg(long, default_value_t = 10)]
    drain: u64,
    /// Spawn all processes on one loopback address instead of 127.0.0.1/.2/.3.
    #[arg(long)]
    single_ip: bool,
    /// Connect subscribers to the publishers' node: measures one node relaying
    /// between two of its clients (no bridge hop).
    #[arg(long)]
    same_node: bool,
    /// With --spawn: put node-b in node-a's cluster (seeded with node-a), so publishes cross
    /// the cluster's mesh link instead of the bridge.
    #[arg(long)]
    same_cluster: bool,
    /// With --spawn: a fleet of N bridge workers (`--fleet loadtest`) and `--clusters`
    /// clusters instead of one bridge and two nodes; 0 = one bridge.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// With --workers: clusters c0, c1, … (default 12); cluster i publishes to cluster i+1.
    #[arg(long)]
    clusters: Option<usize>,
    /// With --workers: nodes per cluster.
    #[arg(long, default_value_t = 1)]
    nodes_per_cluster: usize,
    /// With --workers: SIGKILL the worker owning the most clusters this many seconds into
    /// the run.
    #[arg(long)]
    kill_worker_at: Option<f64>,
    /// With --workers: start one more worker this many seconds into the run.
    #[arg(long)]
    add_worker_at: Option<f64>,
    /// With --workers: SIGTERM (drain) the worker owning the most clusters this many seconds
    /// into the run.
    #[arg(long)]
    drain_worker_at: Option<f64>,
    /// With --spawn: bridge levels between the publishers' and the subscribers' clusters. 1: one
    /// bridge and two nodes; 2: street → city → street (`a` and `b` under two streets of one
    /// city); 3: street → city → region → city → street (the streets under different cities).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    levels: u8,
    /// With --spawn: keep the processes' logs (their directory is printed) even when the run
    /// succeeds.
    #[arg(long)]
    keep_logs: bool,
    /// All clients connect through one QUIC endpoint (one UDP socket,
    /// `ClientOptions::endpoint`) instead of one each: thousands of subscribers cost the load
    /// generator far less memory.
    #[arg(long)]
    shared_endpoint: bool,
    /// The QUIC ACK frequency the clients ask of their node (`transport.ack_eliciting_threshold`
    /// of their `ClientOptions`; 0: off). Spawned processes take theirs from
    /// `MACULA_TRANSPORT__ACK_ELICITING_THRESHOLD` in the environment, as any setting.
    #[arg(long)]
    ack_eliciting_threshold: Option<u64>,
}

impl Args {
    /// Checks the flag combinations; returns the fleet events in time order.
    fn events(&self) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        for (flag, at, kind) in [
            ("--kill-worker-at", self.kill_worker_at, EventKind::Kill),
            ("--add-worker-at", self.add_worker_at, EventKind::Add),
            ("--drain-worker-at", self.drain_worker_at, EventKind::Drain),
        ] {
            let Some(at) = at else { continue };
            ensure!(self.workers > 0, "{flag} needs --workers");
            ensure!(
                at > 0.0 && at < self.duration as f64,
                "{flag} must be inside the run (0 < {at} < --duration {})",
                self.duration
            );
            events.push(Event {
                kind,
                at: Duration::from_secs_f64(at),
            });
        }
        if self.workers == 0 {
            ensure!(
                self.clusters.is_none() && self.nodes_per_cluster == 1,
                "--clusters and --nodes-per-cluster need --workers"
            );
            return Ok(events);
        }
        ensure!(self.spawn, "--workers needs --spawn");
        ensure!(
            !self.same_node && !self.same_cluster,
            "--same-node and --same-cluster do not apply with --workers"
        );
        ensure!(
            self.publishers == 1 && self.subscribers == 1,
            "--publishers / --subscribers do not apply with --workers (one of each per cluster)"
        );
        let removed = events.iter().filter(|e| e.kind != EventKind::Add).count();
        ensure!(
            removed == 0 || self.workers > removed,
            "--kill-worker-at / --drain-worker-at need a worker left to take over (--workers {})",
            self.workers
        );
        events.sort_by_key(|e| (e.at, e.kind));
        Ok(events)
    }

    fn clusters(&self) -> usize {
        self.clusters.unwrap_or(DEFAULT_CLUSTERS)
    }
}

/// Latency percentiles in µs.
#[derive(Serialize, Debug, Default)]
pub struct Latency {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

/// The JSON report.
#[derive(Serialize, Debug)]
pub struct Report {
    scenario: &'static str,
    spawned: bool,
    same_node: bool,
    rate_target: u64,
    duration_s: u64,
    payload_bytes: usize,
    qos: u8,
    publishers: usize,
    subscribers: usize,
    sent: u64,
    acked: u64,
    expected: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    throughput_msgs_per_s: f64,
    publish_rate_msgs_per_s: f64,
    latency_us: Latency,
    node_drops: Option<f64>,
    /// Sessions the publishers and subscribers re-established during the run.
    reconnects: u64,
    /// QoS 0 publishes the publishers wrote in sessions lost before their node confirmed
    /// them (`ClientStats::qos0_unconfirmed`, taken before the clients close).
    qos0_unconfirmed: u64,
    /// With --workers only.
    #[serde(flatten)]
    fleet: Option<FleetReport>,
}

const DATA_TOPIC: &str = "loadtest.data";
const PROBE_TOPIC: &str = "loadtest.probe";
const PATTERN: &str = "loadtest.**";
/// `--clusters` when not given.
const DEFAULT_CLUSTERS: usize = 12;
/// UDP socket buffer requested for `--shared-endpoint`, bytes: 32 MiB (the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`, and the client logs a warning then).
const SHARED_SOCKET_BUFFER: usize = 32 << 20;

/// Who publishes and subscribes where.
struct Plan {
    pubs: Vec<PubSpec>,
    subs: Vec<SubSpec>,
}

/// One publisher connection: its node and topic (its index is its publisher id).
struct PubSpec {
    addr: String,
    topic: String,
}

/// One subscriber connection.
struct SubSpec {
    addr: String,
    pattern: String,
    /// Deliveries on other topics (probes) are not counted.
    data_topic: String,
    /// Published by `from[0]` until this subscriber receives one, before the clock starts.
    probe_topic: String,
    /// Publishers whose every message this subscriber should receive.
    from: Vec<usize>,
}

impl Plan {
    /// Every subscriber receives every publisher's messages (the two-node scenario).
    fn all_to_all(a: &Args, pub_addr: &str, sub_addr: &str) -> Plan {
        Plan {
            pubs: (0..a.publishers)
                .map(|_| PubSpec {
                    addr: pub_addr.into(),
                    topic: DATA_TOPIC.into(),
                })
                .collect(),
            subs: (0..a.subscribers)
                .map(|_| SubSpec {
                    addr: sub_addr.into(),
                    pattern: PATTERN.into(),
                    data_topic: DATA_TOPIC.into(),
                    probe_topic: PROBE_TOPIC.into(),
                    from: (0..a.publishers).collect(),
                })
                .collect(),
        }
    }

    /// One publisher and one subscriber on the first node of each cluster; cluster i
    /// publishes to `loadtest.c<i+1>.data`, so every message crosses clusters.
    fn ring(w: &WorkerFleet, clusters: usize) -> Plan {
        Plan {
            pubs: (0..clusters)
                .map(|i| PubSpec {
                    addr: w.cluster_addr(i).to_string(),
                    topic: format!("loadtest.c{}.data", (i + 1) % clusters),
                })
                .collect(),
            subs: (0..clusters)
                .map(|j| SubSpec {
                    addr: w.cluster_addr(j).to_string(),
                    pattern: format!("loadtest.c{j}.**"),
                    data_topic: format!("loadtest.c{j}.data"),
                    probe_topic: format!("loadtest.c{j}.probe"),
                    from: vec![(j + clusters - 1) % clusters],
                })
                .collect(),
        }
    }
}

/// What `--spawn` started.
enum Spawned {
    /// Nothing: an existing deployment.
    External,
    /// One bridge and two nodes.
    Pair(Fleet),
    /// A fleet of bridge workers.
    Workers(Box<WorkerFleet>),
}

impl Spawned {
    fn fleet(&self) -> Option<&Fleet> {
        match self {
            Spawned::External => None,
            Spawned::Pair(f) => Some(f),
            Spawned::Workers(w) => Some(&w.fleet),
        }
    }
}

fn opts(addr: &str, a: &Args) -> ClientOptions {
    let mut o = client_opts(addr, &a.server_name, &a.realm);
    if let Some(t) = a.ack_eliciting_threshold {
        o.transport.ack_eliciting_threshold = t;
    }
    o
}

/// Options of a load-generating client of `realm` at `addr` (TLS name `server_name`).
pub(crate) fn client_opts(addr: &str, server_name: &str, realm: &str) -> ClientOptions {
    ClientOptions {
        addr: addr.to_string(),
        server_name: server_name.to_string(),
        realm: realm.to_string(),
        ..ClientOptions::default()
    }
}

/// Runs the scenario; returns an error (non-zero exit) only on setup failures.
pub async fn run(a: Args) -> Result<()> {
    if a.payload < 16 {
        bail!("--payload must be at least 16 bytes");
    }
    let events = a.events()?;
    let (mut spawned, plan) = spawn_for(&a)?;
    let result = tokio::select! {
        r = async {
            match &mut spawned {
                Spawned::Pair(f) => f.wait_ready(Duration::from_secs(20)).await?,
                Spawned::Workers(w) => w.start().await?,
                Spawned::External => {}
            }
            scenario(&a, &plan, &mut spawned, &events).await
        } => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let keep = a.keep_logs || result.as_ref().map_or(true, Report::anomalies);
    let fleet = match spawned {
        Spawned::External => None,
        Spawned::Pair(f) => Some(f),
        Spawned::Workers(w) => Some(w.fleet),
    };
    let mut logs = None;
    if let Some(mut f) = fleet {
        f.stop().await;
        if keep {
            let dir = f.dir.keep();
            eprintln!("child logs kept in {}", dir.display());
            logs = Some(dir.display().to_string());
        }
    }
    let mut report = result?;
    if let Some(fr) = report.fleet.as_mut() {
        fr.logs = logs;
    }
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(p) = &a.json {
        std::fs::write(p, &text).with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
}

impl Report {
    /// A fleet run whose figures deserve the processes' logs (loss, duplicates, an event
    /// that went wrong).
    fn anomalies(&self) -> bool {
        self.fleet
            .as_ref()
            .is_some_and(|f| self.lost > 0 || self.duplicated > 0 || WorkerFleet::anomalies(f))
    }
}

/// Starts the processes `--spawn` asks for (not waiting for them) and places the clients.
fn spawn_for(a: &Args) -> Result<(Spawned, Plan)> {
    ensure!(
        a.levels == 1 || a.workers == 0,
        "--levels and --workers do not combine (a fleet serves one level)"
    );
    if !a.spawn {
        let sa = if a.same_node {
            &a.pub_addr
        } else {
            &a.sub_addr
        };
        return Ok((Spawned::External, Plan::all_to_all(a, &a.pub_addr, sa)));
    }
    if a.workers > 0 {
        let spec = FleetSpec {
            workers: a.workers,
            clusters: a.clusters(),
            nodes_per_cluster: a.nodes_per_cluster,
            realm: (a.realm != "io.macula").then(|| a.realm.clone()),
            single_ip: a.single_ip,
        };
        let w = WorkerFleet::spawn(spawn::macula_bin()?, &spec)?;
        eprintln!(
            "spawned {} (logs in {})",
            w.describe(),
            w.fleet.dir.path().display()
        );
        let plan = Plan::ring(&w, spec.clusters);
        return Ok((Spawned::Workers(Box::new(w)), plan));
    }
    if a.levels > 1 {
        ensure!(
            !a.same_node && !a.same_cluster,
            "--same-node and --same-cluster need --levels 1"
        );
        let mut f = Fleet::new(spawn::macula_bin()?)?;
        let mut spec = crate::topology::TopologySpec::two_streets(1);
        spec.single_ip = a.single_ip;
        if a.levels == 3 {
            spec.cities = 2;
        }
        let t = crate::topology::Topology::spawn(&mut f, &spec)?;
        let pa = f.procs[t.cluster("a")[0]].quic.to_string();
        let sa = f.procs[t.cluster("b")[0]].quic.to_string();
        eprintln!(
            "spawned {} levels: {} (logs in {})",
            a.levels,
            t.describe(&f),
            f.dir.path().display()
        );
        let plan = Plan::all_to_all(a, &pa, &sa);
        return Ok((Spawned::Pair(f), plan));
    }
    let mut f = Fleet::new(spawn::macula_bin()?)?;
    let (ip_b, ip_1, ip_2) = if a.single_ip {
        ("127.0.0.1", "127.0.0.1", "127.0.0.1")
    } else {
        ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    };
    let b = f.bridge("bridge", ip_b, &[])?;
    let bridge_addr = f.procs[b].quic;
    let n1 = f.node("node-a", ip_1, "cluster-a", bridge_addr, &[])?;
    ensure!(
        !(a.same_node && a.same_cluster),
        "--same-node and --same-cluster exclude each other"
    );
    let n2 = if a.same_cluster {
        let seed = f.procs[n1].quic;
        f.node_with("node-b", ip_2, "cluster-a", bridge_addr, &[seed], &[])?
    } else {
        f.node("node-b", ip_2, "cluster-b", bridge_addr, &[])?
    };
    let (pa, sa) = (f.procs[n1].quic.to_string(), f.procs[n2].quic.to_string());
    let sa = if a.same_node { pa.clone() } else { sa };
    eprintln!(
        "spawned bridge {bridge_addr}, node-a {pa}, node-b {sa} (logs in {})",
        f.dir.path().display()
    );
    let plan = Plan::all_to_all(a, &pa, &sa);
    Ok((Spawned::Pair(f), plan))
}

struct SubResult {
    seen: Vec<Vec<u64>>,
    delivered: u64,
    duplicated: u64,
    hist: Histogram<u64>,
    last: Option<Instant>,
}

async fn scenario(
    a: &Args,
    plan: &Plan,
    spawned: &mut Spawned,
    events: &[Event],
) -> Result<Report> {
    let fleet_mode = matches!(spawned, Spawned::Workers(_));
    let qos = if a.qos == 1 {
        Qos::AtLeastOnce
    } else {
        Qos::AtMostOnce
    };
    let shared = match (a.shared_endpoint, plan.subs.first()) {
        (true, Some(spec)) => {
            // One socket takes every client's bursts (a fan-out publish arrives as one
            // datagram per subscriber at once): ask for a larger buffer than one client's.
            let mut o = opts(&spec.addr, a);
            o.transport.udp_socket_buffer = SHARED_SOCKET_BUFFER;
            Some(
                Client::shared_endpoint(&o)
                    .await
                    .context("shared endpoint")?,
            )
        }
        _ => None,
    };
    let opts = |addr: &str| ClientOptions {
        endpoint: shared.clone(),
        ..opts(addr, a)
    };
    let mut subs = Vec::new();
    let mut sub_clients = Vec::new();
    for spec in &plan.subs {
        let c = Client::connect(opts(&spec.addr))
            .await
            .with_context(|| format!("subscriber connect to {}", spec.addr))?;
        subs.push(c.subscribe(&spec.pattern).await.context("subscribe")?);
        sub_clients.push(c);
    }
    let mut pubs = Vec::new();
    for spec in &plan.pubs {
        pubs.push(
            Client::connect(opts(&spec.addr))
                .await
                .with_context(|| format!("publisher connect to {}", spec.addr))?,
        );
    }
    // Wait until every route is live: probes until every subscriber sees one.
    let within = Duration::from_secs(if fleet_mode { 30 } else { 20 });
    let deadline = Instant::now() + within;
    for (s, spec) in subs.iter_mut().zip(&plan.subs) {
        loop {
            pubs[spec.from[0]]
                .publish(&spec.probe_topic, "probe".into(), Qos::AtMostOnce)
                .await?;
            match tokio::time::timeout(Duration::from_millis(100), s.recv()).await {
                Ok(Some(m)) if m.topic() == spec.probe_topic => break,
                Ok(Some(_)) => {}
                Ok(None) => bail!("subscriber connection closed"),
                Err(_) if Instant::now() > deadline => bail!(
                    "route {} not established within {within:?}",
                    spec.probe_topic
                ),
                Err(_) => {}
            }
        }
    }
    // Drain leftover probes.
    futures_util::future::join_all(subs.iter_mut().map(|s| async move {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), s.recv()).await {}
    }))
    .await;

    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let total_sent = Arc::new(AtomicU64::new(0));
    let sent_done = Arc::new(AtomicBool::new(false));

    // Subscribers.
    let mut sub_tasks = Vec::new();
    let delivered_live = Arc::new(AtomicU64::new(0));
    let mut unique_live = Vec::new();
    for (s, spec) in subs.into_iter().zip(&plan.subs) {
        let unique = Arc::new(AtomicU64::new(0));
        unique_live.push(unique.clone());
        let watch = SubWatch {
            data_topic: spec.data_topic.clone(),
            base,
            live: delivered_live.clone(),
            unique,
            stop: stop.clone(),
        };
        sub_tasks.push(tokio::spawn(subscriber(s, watch)));
    }

    // Publishers.
    let per_pub_rate = a.rate / plan.pubs.len() as u64;
    let mut pub_tasks = Vec::new();
    for (i, (p, spec)) in pubs.iter().zip(&plan.pubs).enumerate() {
        let p = p.clone();
        let total = total_sent.clone();
        let pub_plan = PubPlan {
            pub_id: i as u64,
            topic: spec.topic.clone(),
            rate: if a.rate == 0 { 0 } else { per_pub_rate.max(1) },
            dur: Duration::from_secs(a.duration),
            payload: a.payload,
            qos,
            base,
        };
        pub_tasks.push(tokio::spawn(publisher(p, pub_plan, total)));
    }

    // Live progress.
    let progress = {
        let total = total_sent.clone();
        let live = delivered_live.clone();
        let sent_done = sent_done.clone();
        tokio::spawn(async move {
            let mut last = (0u64, 0u64);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let (s, d) = (total.load(Ordering::Relaxed), live.load(Ordering::Relaxed));
                eprintln!(
                    "[{:>5.1}s] sent {:>10} ({:>8}/s)  delivered {:>10} ({:>8}/s)",
                    base.elapsed().as_secs_f64(),
                    s,
                    s - last.0,
                    d,
                    d - last.1
                );
                last = (s, d);
                if sent_done.load(Ordering::Relaxed) && d >= s {
                    break;
                }
            }
        })
    };

    // Publishing, and meanwhile the fleet's events.
    let publishing = async {
        let mut sent = Vec::new();
        for t in pub_tasks {
            sent.push(t.await??);
        }
        Ok::<_, anyhow::Error>((sent, base.elapsed()))
    };
    let fleet_events = async {
        if let Spawned::Workers(w) = spawned {
            w.run_events(base, events).await;
        }
    };
    let (published, ()) = tokio::join!(publishing, fleet_events);
    let (sent_by, publish_elapsed) = published?;
    let sent: u64 = sent_by.iter().sum();
    let mut acked_by = vec![0u64; pubs.len()];
    if qos == Qos::AtLeastOnce {
        let wait = Duration::from_secs(a.drain.max(1));
        futures_util::future::join_all(pubs.iter().map(|p| p.flush(wait))).await;
        for (acked, p) in acked_by.iter_mut().zip(&pubs) {
            *acked = p.stats().acked;
        }
    }
    let acked: u64 = acked_by.iter().sum();
    sent_done.store(true, Ordering::Relaxed);
    // What each subscriber should receive: every message of its publishers; in fleet mode
    // with QoS 1, every acknowledged one (a publisher whose flush timed out may have
    // unacknowledged messages that are not a loss).
    let owed = |p: usize| {
        if fleet_mode && qos == Qos::AtLeastOnce {
            acked_by[p].min(sent_by[p])
        } else {
            sent_by[p]
        }
    };
    let owed_by_sub: Vec<u64> = plan
        .subs
        .iter()
        .map(|s| s.from.iter().map(|&p| owed(p)).sum())
        .collect();
    let expected: u64 = plan
        .subs
        .iter()
        .map(|s| s.from.iter().map(|&p| sent_by[p]).sum::<u64>())
        .sum();
    // Let subscribers drain, bounded: stop at the drain deadline, once everything owed
    // arrived, or (except fleet runs with QoS 1, where a re-sent message may take a while)
    // once deliveries stopped for a second (QoS 0 drops mean some messages never arrive).
    let drain_deadline = Instant::now() + Duration::from_secs(a.drain);
    let mut last = (delivered_live.load(Ordering::Relaxed), Instant::now());
    loop {
        let now_delivered = delivered_live.load(Ordering::Relaxed);
        let done = if fleet_mode {
            unique_live
                .iter()
                .zip(&owed_by_sub)
                .all(|(u, owed)| u.load(Ordering::Relaxed) >= *owed)
        } else {
            now_delivered >= expected
        };
        if done || Instant::now() >= drain_deadline {
            break;
        }
        if now_delivered != last.0 {
            last = (now_delivered, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(1)
            && !(fleet_mode && qos == Qos::AtLeastOnce)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Release);
    progress.abort();

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut delivered, mut duplicated, mut lost) = (0u64, 0u64, 0u64);
    let mut last_delivery = base;
    for (t, spec) in sub_tasks.into_iter().zip(&plan.subs) {
        let r = t.await?;
        delivered += r.delivered;
        duplicated += r.duplicated;
        for &p in &spec.from {
            let unique = r.seen.get(p).map_or(0, |bits| {
                bits.iter().map(|w| w.count_ones() as u64).sum::<u64>()
            });
            lost += owed(p).saturating_sub(unique);
        }
        hist.add(&r.hist)?;
        if let Some(l) = r.last {
            last_delivery = last_delivery.max(l);
        }
    }
    let node_drops = spawned.fleet().map(|f| {
        f.procs
            .iter()
            .filter_map(|p| spawn::http_get(p.admin, "/metrics").ok())
            .map(|(_, body)| spawn::metric_sum(&body, "macula_messages_dropped_total"))
            .sum()
    });
    let fleet = match spawned {
        Spawned::Workers(w) => {
            let mut f = w.finish().await;
            if qos == Qos::AtLeastOnce {
                f.unacked = sent.saturating_sub(acked);
            }
            f.delivered_after_1s = hist.count_between(1_000_000, u64::MAX);
            Some(f)
        }
        _ => None,
    };
    // Sessions the load generator's own clients had to re-establish (0: none died under load).
    let reconnects: u64 = pubs
        .iter()
        .chain(&sub_clients)
        .map(|c| c.stats().reconnects)
        .sum();
    let qos0_unconfirmed: u64 = pubs.iter().map(|c| c.stats().qos0_unconfirmed).sum();
    for p in pubs {
        p.close().await;
    }
    for c in sub_clients {
        c.close().await;
    }
    let span = last_delivery
        .duration_since(base)
        .max(publish_elapsed)
        .as_secs_f64();
    Ok(Report {
        scenario: "pubsub",
        spawned: a.spawn,
        same_node: a.same_node,
        rate_target: a.rate,
        duration_s: a.duration,
        payload_bytes: a.payload,
        qos: a.qos,
        publishers: plan.pubs.len(),
        subscribers: plan.subs.len(),
        sent,
        acked,
        expected,
        delivered,
        lost,
        duplicated,
        throughput_msgs_per_s: if span > 0.0 {
            delivered as f64 / span
        } else {
            0.0
        },
        publish_rate_msgs_per_s: sent as f64 / publish_elapsed.as_secs_f64().max(1e-9),
        latency_us: Latency {
            p50: hist.value_at_quantile(0.50),
            p90: hist.value_at_quantile(0.90),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
            mean: hist.mean(),
        },
        node_drops,
        reconnects,
        qos0_unconfirmed,
        fleet,
    })
}

/// What one publisher task does.
struct PubPlan {
    pub_id: u64,
    topic: String,
    rate: u64,
    dur: Duration,
    payload: usize,
    qos: Qos,
    base: Instant,
}

/// Publishes at `rate` msg/s (0 = flat out) for `dur`; returns how many were sent.
/// Payload: u64 publisher-local sequence (publisher id in the top 16 bits), u64 ns since `base`.
async fn publisher(p: Client, plan: PubPlan, total: Arc<AtomicU64>) -> Result<u64> {
    let PubPlan {
        pub_id,
        topic,
        rate,
        dur,
        payload,
        qos,
        base,
    } = plan;
    let mut arena = BytesMut::with_capacity(256 * 1024);
    let mut body = vec![0u8; payload];
    let start = Instant::now();
    let mut seq = 0u64;
    let mut reported = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        let elapsed = start.elapsed();
        if elapsed >= dur {
            break;
        }
        let target = if rate == 0 {
            seq + 256
        } else {
            (rate as f64 * elapsed.as_secs_f64()) as u64
        };
        while seq < target {
            let key = (pub_id << 48) | seq;
            body[..8].copy_from_slice(&key.to_be_bytes());
            body[8..16].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
            p.publish_buf(&mut arena, &topic, &body, qos).await?;
            seq += 1;
        }
        total.fetch_add(seq - reported, Ordering::Relaxed);
        reported = seq;
        if rate != 0 {
            tick.tick().await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    total.fetch_add(seq - reported, Ordering::Relaxed);
    Ok(seq)
}

/// What one subscriber task counts.
struct SubWatch {
    /// Only deliveries on this topic count (not probes).
    data_topic: String,
    base: Instant,
    /// Every delivery, all subscribers.
    live: Arc<AtomicU64>,
    /// This subscriber's first deliveries of a (publisher, sequence).
    unique: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

async fn subscriber(mut s: Subscription, watch: SubWatch) -> SubResult {
    let SubWatch {
        data_topic,
        base,
        live,
        unique,
        stop,
    } = watch;
    let mut r = SubResult {
        seen: Vec::new(),
        delivered: 0,
        duplicated: 0,
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        last: None,
    };
    let mut batch = Vec::with_capacity(1024);
    loop {
        batch.clear();
        let n = tokio::select! {
            n = s.recv_many(&mut batch, 1024) => n,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if stop.load(Ordering::Acquire) { break; }
                continue;
            }
        };
        if n == 0 {
            break;
        }
        let now_ns = base.elapsed().as_nanos() as u64;
        for m in &batch {
            if m.topic() != data_topic || m.payload.len() < 16 {
                continue;
            }
            let key = u64::from_be_bytes(m.payload[..8].try_into().expect("8 bytes"));
            let sent_ns = u64::from_be_bytes(m.payload[8..16].try_into().expect("8 bytes"));
            // One bitmap per publisher, indexed by its sequence number.
            let (publisher, seq) = ((key >> 48) as usize, (key & ((1 << 48) - 1)) as usize);
            if publisher >= r.seen.len() {
                r.seen.resize_with(publisher + 1, Vec::new);
            }
            let bits = &mut r.seen[publisher];
            let (w, b) = (seq / 64, seq % 64);
            if w >= bits.len() {
                bits.resize(w + 1, 0);
            }
            if bits[w] & (1 << b) != 0 {
                r.duplicated += 1;
                continue;
            }
            bits[w] |= 1 << b;
            r.delivered += 1;
            unique.fetch_add(1, Ordering::Relaxed);
            let _ = r
                .hist
                .record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
        }
        live.fetch_add(n as u64, Ordering::Relaxed);
        r.last = Some(Instant::now());
        // Past the drain: a backlog still arriving is not read on (it is what was lost).
        if stop.load(Ordering::Acquire) {
            break;
        }
    }
    r
}
