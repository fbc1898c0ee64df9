//! `macula-loadtest flood`: what a connection flood does to a node and to the users it
//! already serves, on loopback only (issue 12). Three phases:
//!
//! 1. **baseline** (`--baseline-secs`, 5): the witness alone;
//! 2. **flood** (`--flood-secs`, 10, and at most `--max-attempts`): the witness while
//!    `--concurrency` tasks make connection attempts from `--sources` loopback addresses
//!    (`flood/attack.rs`: TLS handshakes that never send `connect`, half-open handshakes
//!    from deaf sockets, sessions that connect and idle; `--kind`, default all three
//!    mixed); the phase lasts until every flood connection is closed (at most 2 s more);
//!    or, with `--kind publish`, while `--concurrency` clients publish QoS 0 flat out
//!    (`flood/publishers.rs`) to a sink client;
//! 3. **recovery** (`--recovery-secs`, 5): the witness alone again.
//!
//! The witness (`flood/witness.rs`) is one client publishing QoS 1 messages to itself at
//! `--witness-rate` per second, timed publish → delivery; a newcomer client also connects
//! every `--newcomer-ms`. The flood runs on a runtime and threads of its own, but on the same
//! cores as the node and the witness. The node's `/metrics` counters (refused by reason,
//! Retries, accepted) are read around the flood, and the receive-buffer drops of its UDP
//! socket; its resident memory (`VmRSS` of `/proc/<pid>/status`) is sampled every 100 ms,
//! and read once more after `--settle-secs`.
//!
//! `macula-loadtest flood --spawn --json flood.json` starts a bridge (127.0.0.1) and a node
//! (127.0.0.2) with `limits.max_connections = --max-connections` (1,024),
//! `limits.max_connections_per_source = --max-per-source` (256) and
//! `limits.handshake_retry_above = --retry-above` (256), and `rate.client` from
//! `--rate-client-msgs` / `--rate-client-bytes` (0: none; default: the built-in limit). Without `--spawn`,
//! `--addr` names a node on this machine's loopback (anything else is refused), `--admin`
//! its admin listener and `--pid` its process, each optional.

mod attack;
mod publishers;
mod witness;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::time::Instant;

use crate::spawn::{self, Fleet};
use attack::Kind;

/// Arguments of `macula-loadtest flood`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Start a bridge (127.0.0.1) and one node (127.0.0.2) as child processes.
    #[arg(long)]
    spawn: bool,
    /// Node to flood (without --spawn); must be a 127.0.0.0/8 address.
    #[arg(long, default_value = "127.0.0.1:9444")]
    addr: String,
    /// Admin listener of that node, for its `/metrics` (without --spawn; loopback).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Process id of that node, for its memory (without --spawn).
    #[arg(long)]
    pid: Option<u32>,
    /// Kind of flood: `mix` (the three connection kinds at once, a third of the tasks
    /// each), `handshake`, `half-open`, `idle`, or `publish` (`--concurrency` clients
    /// publishing QoS 0 flat out).
    #[arg(long, value_enum, default_value_t = KindArg::Mix)]
    kind: KindArg,
    /// Attempts under way at once.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Source addresses of the flood: 127.0.0.20, .21, …; the first makes half the attempts.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Most flood attempts in all.
    #[arg(long, default_value_t = 200_000)]
    max_attempts: u64,
    /// Most completed flood connections held at once (beyond: the oldest is closed).
    #[arg(long, default_value_t = 4096)]
    max_held: usize,
    /// Seconds of the witness alone before the flood.
    #[arg(long, default_value_t = 5)]
    baseline_secs: u64,
    /// Most seconds of flood.
    #[arg(long, default_value_t = 10)]
    flood_secs: u64,
    /// Seconds of the witness alone after the flood.
    #[arg(long, default_value_t = 5)]
    recovery_secs: u64,
    /// Seconds after the recovery phase before the node's memory is read the last time.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// Witness messages per second (QoS 1, to itself).
    #[arg(long, default_value_t = 200)]
    witness_rate: u32,
    /// Milliseconds between newcomer connects (0: none).
    #[arg(long, default_value_t = 500)]
    newcomer_ms: u64,
    /// `limits.max_connections` of the spawned node.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// `limits.max_connections_per_source` of the spawned node.
    #[arg(long, default_value_t = 256)]
    max_per_source: usize,
    /// `limits.handshake_retry_above` of the spawned node.
    #[arg(long, default_value_t = 256)]
    retry_above: usize,
    /// `limits.handshakes_per_source_per_sec` of the spawned node (0: unpaced; default: the
    /// built-in one).
    #[arg(long)]
    handshake_rate: Option<u32>,
    /// `rate.client.msgs` of the spawned node (per client connection; 0: none; default:
    /// the built-in one).
    #[arg(long)]
    rate_client_msgs: Option<u32>,
    /// `rate.client.bytes` of the spawned node (per client connection; 0: none; default:
    /// the built-in one).
    #[arg(long)]
    rate_client_bytes: Option<u32>,
    /// Realm to join.
    #[arg(long, default_value = "io.macula")]
    realm: String,
    /// TLS server name of the node.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KindArg {
    Mix,
    Handshake,
    HalfOpen,
    Idle,
    Publish,
}

/// The phases, in order; index into the per-phase figures.
const PHASES: [&str; 3] = ["baseline", "flood", "recovery"];

/// How often the node's memory is sampled.
const RSS_EVERY: Duration = Duration::from_millis(100);

/// Worker threads of the flood's runtime.
const FLOOD_THREADS: usize = 2;

/// How often the node's open connections are read during the flood.
const GAUGE_EVERY: Duration = Duration::from_secs(1);

/// The JSON report.
#[derive(Serialize, Debug)]
struct Report {
    target: SocketAddr,
    spawned: bool,
    /// The spawned node's limits (`--spawn` only).
    limits: Option<Limits>,
    kind: Vec<Kind>,
    concurrency: usize,
    sources: Vec<IpAddr>,
    max_attempts: u64,
    /// The connection flood (kinds other than `publish`).
    flood: Option<attack::FloodReport>,
    /// The publish flood (`--kind publish`).
    publish: Option<publishers::PublishReport>,
    /// From the node's `/metrics` (`None` without an admin address).
    server: Option<ServerReport>,
    /// Per phase (baseline, flood, recovery).
    witness: BTreeMap<&'static str, witness::WitnessPhase>,
    /// Sessions the witness client re-established (0: its session survived the flood).
    witness_reconnects: u64,
    /// Per phase; empty with `--newcomer-ms 0`.
    newcomers: BTreeMap<&'static str, witness::NewcomerPhase>,
    /// The node's resident memory, KiB (`None` without a process id).
    rss_kib: Option<RssReport>,
    /// Datagrams the kernel dropped for want of receive-buffer room.
    udp_drops: UdpDrops,
    /// CPU time used per phase (baseline, flood, recovery), seconds.
    cpu_s: CpuReport,
}

/// CPU seconds (user + system) per phase: the node's (`None` without a process id) and this
/// load generator's (the witness and the flood together).
#[derive(Serialize, Debug, Default)]
struct CpuReport {
    node: Option<[f64; 3]>,
    loadtest: Option<[f64; 3]>,
}

#[derive(Serialize, Debug, Clone, Copy)]
struct Limits {
    max_connections: usize,
    max_connections_per_source: usize,
    handshake_retry_above: usize,
    handshakes_per_source_per_sec: u32,
    rate_client: macula::rate::RateLimits,
}

/// Deltas of the node's counters.
#[derive(Serialize, Debug)]
struct ServerReport {
    /// Attempts refused for a bound during the flood (`reason` max_connections + per_source).
    refused: f64,
    /// Those per second of flood.
    refused_per_s: f64,
    /// Retries sent during the flood (`macula_handshake_retries_total`; a retransmitted
    /// Initial of an unanswered attempt is answered again).
    retries: f64,
    /// Handshakes completed during the flood (`macula_connections_accepted_total`, every role).
    accepted: f64,
    /// Most client connections open at once during the flood (`macula_connections_open`,
    /// read every second).
    open_clients_peak: f64,
    /// Client connections open at the last reading (the witness has closed by then).
    open_clients_after: f64,
    /// `macula_connections_rejected_total` by reason during the flood (non-zero only).
    rejected_during: BTreeMap<String, f64>,
    /// The same from the end of the flood to the last reading (handshakes that time out
    /// later, sessions that never sent `connect`).
    rejected_after: BTreeMap<String, f64>,
}

/// Receive-buffer drops: a flood that outruns the node's QUIC endpoint loses the witness's
/// packets too (QUIC recovers them after a probe timeout, which shows as latency).
#[derive(Serialize, Debug, Default)]
struct UdpDrops {
    /// At the node's UDP socket during the flood (`drops` in `/proc/net/udp`; `None`
    /// unless the socket is in this network namespace).
    node_socket_during: Option<u64>,
    /// The same from the end of the flood to the last reading.
    node_socket_after: Option<u64>,
    /// Every UDP socket of this network namespace during the flood (`RcvbufErrors` of
    /// `/proc/net/snmp`: the flood's own sockets too).
    host_during: Option<u64>,
}

#[derive(Serialize, Debug, Default)]
struct RssReport {
    /// At the end of the baseline.
    before: u64,
    /// Highest sample during the flood and its clean-up.
    peak_during: u64,
    /// Highest sample during the recovery phase.
    peak_recovery: u64,
    /// After the recovery phase and `--settle-secs`.
    after: u64,
    /// `VmHWM` at the end: the highest since the process started.
    high_water: u64,
}

/// Runs the scenario; errors only on setup failures.
pub async fn run(a: Args) -> Result<()> {
    if a.concurrency == 0 || a.sources == 0 || a.witness_rate == 0 {
        bail!("--concurrency, --sources and --witness-rate must be at least 1");
    }
    if a.sources > 200 {
        bail!("--sources must be at most 200 (127.0.0.20 to 127.0.0.219)");
    }
    let sources: Vec<IpAddr> = (0..a.sources)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 20 + i)))
        .collect();
    let mut fleet = None;
    let (target, admin, pid, limits) = if a.spawn {
        let mut f = Fleet::new(spawn::macula_bin()?)?;
        let b = f.bridge("bridge", "127.0.0.1", &[])?;
        let up = f.procs[b].quic;
        let limits = Limits {
            max_connections: a.max_connections,
            max_connections_per_source: a.max_per_source,
            handshake_retry_above: a.retry_above,
            handshakes_per_source_per_sec: (a.handshake_rate)
                .unwrap_or(macula::defaults::HANDSHAKES_PER_SOURCE_PER_SEC),
            rate_client: macula::rate::RateLimits {
                msgs: (a.rate_client_msgs).unwrap_or(macula::defaults::RATE_CLIENT.msgs),
                bytes: (a.rate_client_bytes).unwrap_or(macula::defaults::RATE_CLIENT.bytes),
            },
        };
        f.env(
            "MACULA_LIMITS__HANDSHAKES_PER_SOURCE_PER_SEC",
            &limits.handshakes_per_source_per_sec.to_string(),
        );
        f.env(
            "MACULA_RATE__CLIENT__MSGS",
            &limits.rate_client.msgs.to_string(),
        );
        f.env(
            "MACULA_RATE__CLIENT__BYTES",
            &limits.rate_client.bytes.to_string(),
        );
        f.env(
            "MACULA_LIMITS__MAX_CONNECTIONS",
            &limits.max_connections.to_string(),
        );
        f.env(
            "MACULA_LIMITS__MAX_CONNECTIONS_PER_SOURCE",
            &limits.max_connections_per_source.to_string(),
        );
        f.env(
            "MACULA_LIMITS__HANDSHAKE_RETRY_ABOVE",
            &limits.handshake_retry_above.to_string(),
        );
        let n = f.node("node", "127.0.0.2", "flood", up, &[])?;
        f.wait_ready(Duration::from_secs(20)).await?;
        let (quic, admin, pid) = (f.procs[n].quic, f.procs[n].admin, f.pid(n));
        eprintln!(
            "spawned bridge {up}, node {quic} (logs in {})",
            f.dir.path().display()
        );
        fleet = Some(f);
        (quic, Some(admin), pid, Some(limits))
    } else {
        let target = loopback(&a.addr).await?;
        if let Some(admin) = a.admin {
            if !admin.ip().is_loopback() {
                bail!("--admin {admin} is not a loopback address");
            }
        }
        (target, a.admin, a.pid, None)
    };
    let result = scenario(&a, target, admin, pid, sources, limits).await;
    if let Some(f) = fleet.as_mut() {
        f.stop().await;
    }
    let report = result?;
    print_summary(&report);
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(p) = &a.json {
        std::fs::write(p, &json).with_context(|| format!("write {}", p.display()))?;
        eprintln!("report written to {}", p.display());
    } else {
        println!("{json}");
    }
    Ok(())
}

async fn scenario(
    a: &Args,
    target: SocketAddr,
    admin: Option<SocketAddr>,
    pid: Option<u32>,
    sources: Vec<IpAddr>,
    limits: Option<Limits>,
) -> Result<Report> {
    let opts = crate::pubsub::client_opts(&target.to_string(), &a.server_name, &a.realm);
    let phase = Arc::new(AtomicUsize::new(0));
    let rss = pid.map(|pid| RssSampler::start(pid, phase.clone()));
    let w =
        witness::Witness::start(opts.clone(), a.witness_rate, phase.clone(), PHASES.len()).await?;
    let newcomers = (a.newcomer_ms > 0).then(|| {
        let o = macula::client::ClientOptions {
            reconnect: false,
            ..opts.clone()
        };
        let every = Duration::from_millis(a.newcomer_ms);
        witness::Newcomers::start(o, every, phase.clone(), PHASES.len())
    });

    let me = std::process::id();
    let cpu = |pid: Option<u32>| pid.and_then(cpu_secs);
    let c0 = (cpu(pid), cpu(Some(me)));
    eprintln!("baseline: {} s", a.baseline_secs);
    tokio::time::sleep(Duration::from_secs(a.baseline_secs)).await;
    let rss_before = rss.as_ref().and_then(|r| r.read());
    let m0 = scrape(admin).await;
    let d0 = (udp_socket_drops(target), udp_rcvbuf_errors());
    let c1 = (cpu(pid), cpu(Some(me)));

    let kinds = match a.kind {
        KindArg::Mix => attack::ALL.to_vec(),
        KindArg::Handshake => vec![Kind::Handshake],
        KindArg::HalfOpen => vec![Kind::HalfOpen],
        KindArg::Idle => vec![Kind::Idle],
        KindArg::Publish => vec![],
    };
    let plan = attack::Plan {
        target,
        server_name: a.server_name.clone(),
        realm: a.realm.clone(),
        sources: sources.clone(),
        kinds: kinds.clone(),
        concurrency: a.concurrency,
        max_attempts: a.max_attempts,
        max_held: a.max_held,
    };
    eprintln!(
        "flood: {} s at most, {} attempts at most, {} at once from {} sources",
        a.flood_secs,
        a.max_attempts,
        a.concurrency,
        sources.len()
    );
    phase.store(1, Ordering::Relaxed);
    let until = Instant::now() + Duration::from_secs(a.flood_secs);
    let gauge = admin.map(|admin| OpenGauge::start(admin, until));
    let (flood, publish) = if a.kind == KindArg::Publish {
        eprintln!("publish flood: {} flat-out publishers", a.concurrency);
        let (o, n) = (opts.clone(), a.concurrency);
        let report = apart(until, move |u| publishers::run(o, n, u)).await?;
        (None, Some(report))
    } else {
        (
            Some(apart(until, move |u| attack::run(plan, u)).await?),
            None,
        )
    };
    let flood_secs = match (&flood, &publish) {
        (Some(f), _) => f.secs,
        (_, Some(p)) => p.secs,
        _ => 0.0,
    };
    let open_clients_peak = match gauge {
        Some(g) => g.finish().await,
        None => 0.0,
    };
    let m1 = scrape(admin).await;
    let d1 = (udp_socket_drops(target), udp_rcvbuf_errors());
    let c2 = (cpu(pid), cpu(Some(me)));

    eprintln!("recovery: {} s", a.recovery_secs);
    phase.store(2, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(a.recovery_secs)).await;
    let c3 = (cpu(pid), cpu(Some(me)));
    let (witness, witness_reconnects) = w.finish(Duration::from_secs(2)).await;
    let newcomers = match newcomers {
        Some(n) => n.finish().await,
        None => Vec::new(),
    };
    phase.store(3, Ordering::Relaxed);
    eprintln!("settling: {} s", a.settle_secs);
    tokio::time::sleep(Duration::from_secs(a.settle_secs)).await;
    let m2 = scrape(admin).await;
    let d2 = udp_socket_drops(target);
    let rss_kib = rss.map(|r| r.finish(rss_before));

    let server = match (m0, m1, m2) {
        (Some(m0), Some(m1), Some(m2)) => {
            Some(server_report(&m0, &m1, &m2, flood_secs, open_clients_peak))
        }
        _ => None,
    };
    Ok(Report {
        target,
        spawned: a.spawn,
        limits,
        kind: kinds,
        concurrency: a.concurrency,
        sources,
        max_attempts: a.max_attempts,
        flood,
        publish,
        server,
        witness: PHASES.into_iter().zip(witness).collect(),
        witness_reconnects,
        newcomers: PHASES.into_iter().zip(newcomers).collect(),
        rss_kib,
        cpu_s: CpuReport {
            node: phases_apart([c0.0, c1.0, c2.0, c3.0]),
            loadtest: phases_apart([c0.1, c1.1, c2.1, c3.1]),
        },
        udp_drops: UdpDrops {
            node_socket_during: d1.0.zip(d0.0).map(|(b, a)| b.saturating_sub(a)),
            node_socket_after: d2.zip(d1.0).map(|(b, a)| b.saturating_sub(a)),
            host_during: d1.1.zip(d0.1).map(|(b, a)| b.saturating_sub(a)),
        },
    })
}

/// Runs the flood that `make` starts (given the flood's end) on a runtime and threads of its
/// own, so the witness's tasks do not queue behind hundreds of flood tasks in one scheduler
/// (they still share the machine's cores); its report.
async fn apart<T, F, Fut>(until: Instant, make: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Instant) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let until = until.into_std();
    std::thread::Builder::new()
        .name("flood".into())
        .spawn(move || {
            let run = || -> Result<T> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(FLOOD_THREADS)
                    .thread_name("flood")
                    .enable_all()
                    .build()?;
                rt.block_on(make(Instant::from_std(until)))
            };
            let _ = tx.send(run());
        })
        .context("start the flood thread")?;
    rx.await
        .context("the flood thread ended without a report")?
}

/// `addr` as a socket address on 127.0.0.0/8, or an error: the flood never leaves this
/// machine's loopback.
async fn loopback(addr: &str) -> Result<SocketAddr> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolve --addr {addr}"))?
        .collect();
    match resolved.iter().find(|s| s.is_ipv4()) {
        Some(s) if resolved.iter().all(|s| s.ip().is_loopback()) => Ok(*s),
        _ => bail!(
            "--addr {addr} resolves to {resolved:?}: the flood targets 127.0.0.0/8 only \
             (loopback on this machine; IPv6 has one loopback address, too few sources)"
        ),
    }
}

/// The node's counters of interest.
#[derive(Debug, Clone, Default)]
struct Scrape {
    rejected: BTreeMap<String, f64>,
    retries: f64,
    accepted: f64,
    open_clients: f64,
}

/// Reads `/metrics` of `admin` (`None` without one, or when it does not answer).
async fn scrape(admin: Option<SocketAddr>) -> Option<Scrape> {
    let admin = admin?;
    let body = tokio::task::spawn_blocking(move || spawn::http_get(admin, "/metrics"))
        .await
        .ok()?;
    let body = match body {
        Ok((200, b)) => b,
        Ok((code, _)) => {
            eprintln!("warning: {admin}/metrics answered HTTP {code}");
            return None;
        }
        Err(e) => {
            eprintln!("warning: {admin}/metrics: {e:#}");
            return None;
        }
    };
    let rejected = spawn::metric_samples(&body, "macula_connections_rejected_total")
        .into_iter()
        .map(|(labels, v)| (label_value(&labels).to_string(), v))
        .collect();
    Some(Scrape {
        rejected,
        retries: spawn::metric_sum(&body, "macula_handshake_retries_total"),
        accepted: spawn::metric_sum(&body, "macula_connections_accepted_total"),
        open_clients: open_clients(&body).unwrap_or(0.0),
    })
}

/// `macula_connections_open{role="client"}` in a `/metrics` body.
fn open_clients(body: &str) -> Option<f64> {
    spawn::metric_samples(body, "macula_connections_open")
        .into_iter()
        .find(|(l, _)| l == "role=\"client\"")
        .map(|(_, v)| v)
}

/// `reason="per_source"` → `per_source`.
fn label_value(labels: &str) -> &str {
    labels
        .split_once('=')
        .map_or(labels, |(_, v)| v.trim_matches('"'))
}

fn server_report(m0: &Scrape, m1: &Scrape, m2: &Scrape, secs: f64, open_peak: f64) -> ServerReport {
    let delta = |a: &Scrape, b: &Scrape| -> BTreeMap<String, f64> {
        b.rejected
            .iter()
            .map(|(k, v)| (k.clone(), v - a.rejected.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, d)| *d != 0.0)
            .collect()
    };
    let during = delta(m0, m1);
    let refused = ["max_connections", "per_source"]
        .iter()
        .filter_map(|r| during.get(*r))
        .fold(0.0, |a, b| a + b); // `sum` of nothing is -0.0
    ServerReport {
        refused,
        refused_per_s: refused / secs.max(1e-9),
        retries: m1.retries - m0.retries,
        accepted: m1.accepted - m0.accepted,
        open_clients_peak: open_peak,
        open_clients_after: m2.open_clients,
        rejected_during: during,
        rejected_after: delta(m1, m2),
    }
}

/// Samples `VmRSS` of a process every [`RSS_EVERY`], keeping the highest per phase.
struct RssSampler {
    pid: u32,
    peaks: Arc<[AtomicU64; 4]>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32, phase: Arc<AtomicUsize>) -> RssSampler {
        let peaks: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
        let p = peaks.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RSS_EVERY);
            loop {
                tick.tick().await;
                if let Some(kib) = proc_status_kib(pid, "VmRSS:") {
                    let i = phase.load(Ordering::Relaxed).min(3);
                    p[i].fetch_max(kib, Ordering::Relaxed);
                }
            }
        });
        RssSampler { pid, peaks, task }
    }

    fn read(&self) -> Option<u64> {
        proc_status_kib(self.pid, "VmRSS:")
    }

    fn finish(self, before: Option<u64>) -> RssReport {
        self.task.abort();
        RssReport {
            before: before.unwrap_or(0),
            peak_during: self.peaks[1].load(Ordering::Relaxed),
            peak_recovery: self.peaks[2].load(Ordering::Relaxed),
            after: self.read().unwrap_or(0),
            high_water: proc_status_kib(self.pid, "VmHWM:").unwrap_or(0),
        }
    }
}

/// CPU seconds (user + system) process `pid` has used (`/proc/<pid>/stat`).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15 (proc(5)).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

/// The differences between four successive readings: the three phases.
fn phases_apart(r: [Option<f64>; 4]) -> Option<[f64; 3]> {
    let r = [r[0]?, r[1]?, r[2]?, r[3]?];
    Some([r[1] - r[0], r[2] - r[1], r[3] - r[2]])
}

/// The `drops` count of the IPv4 UDP socket bound to `addr` (`/proc/net/udp`).
fn udp_socket_drops(addr: SocketAddr) -> Option<u64> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    // The address as the kernel prints it: the 32-bit value in host byte order, hex.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.get(1) == Some(&local.as_str())).then(|| cols.last()?.parse().ok())?
    })
}

/// `Udp: RcvbufErrors` of `/proc/net/snmp`: datagrams dropped for want of buffer room, every
/// socket of this network namespace.
fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in KiB.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Reads `macula_connections_open{role="client"}` every [`GAUGE_EVERY`] until a deadline,
/// keeping the highest.
struct OpenGauge {
    task: tokio::task::JoinHandle<f64>,
}

impl OpenGauge {
    fn start(admin: SocketAddr, until: Instant) -> OpenGauge {
        let task = tokio::spawn(async move {
            let mut peak = 0.0f64;
            while Instant::now() < until {
                tokio::time::sleep(GAUGE_EVERY).await;
                let read = tokio::task::spawn_blocking(move || {
                    let (_, body) = spawn::http_get(admin, "/metrics").ok()?;
                    open_clients(&body)
                });
                if let Ok(Some(v)) = read.await {
                    peak = peak.max(v);
                }
            }
            peak
        });
        OpenGauge { task }
    }

    async fn finish(self) -> f64 {
        self.task.await.unwrap_or(0.0)
    }
}

fn print_summary(r: &Report) {
    if let Some(f) = &r.flood {
        eprintln!(
            "\nflood: {} attempts in {:.1} s ({:.0}/s), held at most {}",
            f.attempts, f.secs, f.attempts_per_s, f.held_peak
        );
        for (k, c) in &f.by_kind {
            eprintln!(
                "  {k:>9}: {} attempts, {} handshakes, {} sessions, {} refused, {} timed out, {} failed, {} cut",
                c.attempts, c.handshakes, c.sessions, c.refused, c.timed_out, c.failed, c.cut
            );
        }
    }
    if let Some(p) = &r.publish {
        eprintln!(
            "\npublish flood: {} publishers, {} sent in {:.1} s ({:.0}/s), {} delivered to the sink ({:.0}/s), {} failed {:?}",
            p.publishers, p.sent, p.secs, p.sent_per_s, p.delivered, p.delivered_per_s, p.failed, p.errors
        );
    }
    if let Some(s) = &r.server {
        eprintln!(
            "server: {:.0} refused ({:.0}/s), {:.0} retries, {:.0} accepted, {:.0} clients open at most",
            s.refused, s.refused_per_s, s.retries, s.accepted, s.open_clients_peak
        );
        eprintln!("  {:.0} clients open at the end", s.open_clients_after);
        eprintln!("  rejected during: {:?}", s.rejected_during);
        eprintln!("  rejected after:  {:?}", s.rejected_after);
    }
    for (p, w) in &r.witness {
        eprintln!(
            "witness {p:>8}: {} sent, {} delivered, {} lost, {} errors; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            w.sent,
            w.delivered,
            w.lost,
            w.errors,
            w.p50_us as f64 / 1e3,
            w.p99_us as f64 / 1e3,
            w.max_us as f64 / 1e3
        );
    }
    eprintln!("witness reconnects: {}", r.witness_reconnects);
    for (p, n) in &r.newcomers {
        eprintln!(
            "newcomers {p:>8}: {}/{} connected, p50 {:.1} ms, max {:.1} ms{}",
            n.ok,
            n.tried,
            n.p50_ms,
            n.max_ms,
            n.first_error
                .as_deref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        );
    }
    let cpu = |c: Option<[f64; 3]>| {
        c.map_or("-".to_string(), |c| {
            format!("{:.2} / {:.2} / {:.2} s", c[0], c[1], c[2])
        })
    };
    eprintln!(
        "CPU (baseline / flood / recovery): node {}, load generator {}",
        cpu(r.cpu_s.node),
        cpu(r.cpu_s.loadtest)
    );
    let d = &r.udp_drops;
    let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    eprintln!(
        "UDP receive drops: node socket {} during, {} after; whole host {} during",
        show(d.node_socket_during),
        show(d.node_socket_after),
        show(d.host_during)
    );
    if let Some(m) = &r.rss_kib {
        eprintln!(
            "node RSS: before {:.1} MiB, peak during {:.1} MiB, peak recovery {:.1} MiB, after {:.1} MiB (high water {:.1} MiB)",
            m.before as f64 / 1024.0,
            m.peak_during as f64 / 1024.0,
            m.peak_recovery as f64 / 1024.0,
            m.after as f64 / 1024.0,
            m.high_water as f64 / 1024.0
        );
    }
}
