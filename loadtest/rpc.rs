//! The `rpc` scenario: calls across the bridge hierarchy (`docs/DISCOVERY.md`).
//!
//! With `--spawn` it starts the topology of [`crate::topology`] (city, two streets, cluster `a`
//! under street 1 and cluster `b` under street 2), registers an echo procedure from provider
//! clients on cluster a's nodes and calls it from caller clients on cluster b's nodes, so every
//! call's lookup and route climb street → city → street. Before the clock starts, each caller
//! calls until one call succeeds (the warm-up, reported apart). Afterwards it reads every
//! process's `/metrics` for the lookup caches, routing hops and failovers. Flags:
//! `docs/LOADTEST.md`.

mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use macula::client::{Client, ClientOptions, Registration};
use tokio::task::JoinSet;

use crate::spawn::{self, Fleet};
use crate::topology::{Topology, TopologySpec};
use report::{CallStats, KillReport, Latency, Report, Warmup, MISMATCH};

/// Arguments of `macula-loadtest rpc`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Start the hierarchy (city, two streets, clusters a and b) as child processes.
    #[arg(long)]
    spawn: bool,
    /// Calls per second across all callers; 0 = as fast as possible (`--concurrency` calls in
    /// flight per caller).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of calling (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Size of each call's arguments, bytes (echoed back by the provider).
    #[arg(long, default_value_t = 128)]
    payload: usize,
    /// Timeout of each call, ms.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// Provider clients, each on a different node of cluster a (with --spawn) or spread over
    /// --provider-addr.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    providers: u64,
    /// Caller clients, spread over cluster b's nodes (with --spawn) or over --caller-addr.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    callers: u64,
    /// With --rate 0: calls in flight per caller.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// Procedure the providers register and the callers call.
    #[arg(long, default_value = "loadtest.echo")]
    procedure: String,
    /// SIGKILL the node hosting the first provider this many seconds into the run (needs
    /// --spawn and --providers ≥ 2): exercises failover.
    #[arg(long)]
    kill_provider_at: Option<f64>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Node a provider connects to, without --spawn (repeatable; providers take them in turn).
    #[arg(long, default_value = "127.0.0.1:9444")]
    provider_addr: Vec<String>,
    /// Node a caller connects to, without --spawn (repeatable; callers take them in turn).
    #[arg(long, default_value = "127.0.0.1:9445")]
    caller_addr: Vec<String>,
    /// Admin listener (host:port) of a process of the deployment, without --spawn
    /// (repeatable): its /metrics is read for the cache, hops and failover figures.
    #[arg(long)]
    admin_addr: Vec<SocketAddr>,
    /// Realm to join.
    #[arg(long, default_value = "io.macula")]
    realm: String,
    /// TLS server name of the nodes.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// With --spawn: nodes per cluster (providers go on distinct nodes of cluster a).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    cluster_nodes: u64,
    /// With --spawn: all processes on 127.0.0.1 instead of 127.0.0.1, .2, .3, ….
    #[arg(long)]
    single_ip: bool,
    /// Bound of the warm-up (every caller's first successful call), seconds.
    #[arg(long, default_value_t = 30)]
    warmup_timeout: u64,
    /// With --spawn: start the topology, wait until every process is ready, print it and exit
    /// (no clients).
    #[arg(long, requires = "spawn")]
    topology_only: bool,
}

impl Args {
    fn check(&self) -> Result<()> {
        if self.spawn {
            ensure!(
                self.providers <= self.cluster_nodes,
                "--providers {} needs as many nodes in cluster a (--cluster-nodes {})",
                self.providers,
                self.cluster_nodes
            );
        }
        if let Some(at) = self.kill_provider_at {
            ensure!(self.spawn, "--kill-provider-at needs --spawn");
            ensure!(
                self.providers >= 2,
                "--kill-provider-at needs --providers 2 or more (someone to fail over to)"
            );
            ensure!(
                at > 0.0 && at < self.duration as f64,
                "--kill-provider-at must be inside the run (0 < {at} < --duration {})",
                self.duration
            );
        }
        Ok(())
    }

    fn opts(&self, addr: &str) -> ClientOptions {
        ClientOptions {
            addr: addr.to_string(),
            server_name: self.server_name.clone(),
            realm: self.realm.clone(),
            ..ClientOptions::default()
        }
    }
}

/// Where the clients go and which processes the report reads.
struct Plan {
    provider_addrs: Vec<String>,
    caller_addrs: Vec<String>,
    /// Fleet index of the node hosting the first provider (for `--kill-provider-at`).
    first_provider_node: Option<usize>,
}

/// Runs the scenario; returns an error (non-zero exit) on setup failures.
pub async fn run(a: Args) -> Result<()> {
    a.check()?;
    let mut fleet = None;
    let plan = if a.spawn {
        let mut f = Fleet::new(spawn::macula_bin()?)?;
        let mut spec = TopologySpec::two_streets(a.cluster_nodes as usize);
        spec.single_ip = a.single_ip;
        let topo = Topology::spawn(&mut f, &spec)?;
        eprintln!(
            "spawned {} processes: {} (logs in {})",
            f.procs.len(),
            topo.describe(&f),
            f.dir.path().display()
        );
        let (ca, cb) = (topo.cluster("a"), topo.cluster("b"));
        let addr = |i: usize| f.procs[i].quic.to_string();
        let plan = Plan {
            provider_addrs: (0..a.providers as usize).map(|i| addr(ca[i])).collect(),
            caller_addrs: (0..a.callers as usize)
                .map(|i| addr(cb[i % cb.len()]))
                .collect(),
            first_provider_node: Some(ca[0]),
        };
        fleet = Some(f);
        plan
    } else {
        let spread = |addrs: &[String], n: u64| -> Vec<String> {
            (0..n as usize)
                .map(|i| addrs[i % addrs.len()].clone())
                .collect()
        };
        Plan {
            provider_addrs: spread(&a.provider_addr, a.providers),
            caller_addrs: spread(&a.caller_addr, a.callers),
            first_provider_node: None,
        }
    };
    let result = tokio::select! {
        r = async {
            if let Some(f) = fleet.as_mut() {
                f.wait_ready(Duration::from_secs(30)).await?;
                eprintln!("all {} processes ready (/health/ready)", f.procs.len());
                if a.topology_only {
                    return Ok(None);
                }
            }
            scenario(&a, &plan, fleet.as_mut()).await.map(Some)
        } => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Some(mut f) = fleet {
        f.stop().await;
        if result.is_err() {
            eprintln!("child logs kept in {}", f.dir.keep().display());
        }
    }
    let Some(report) = result? else {
        return Ok(());
    };
    print!("{}", report.human());
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(p, text).with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
}

/// Live counters for the progress line.
#[derive(Default)]
struct Progress {
    calls: AtomicU64,
    ok: AtomicU64,
}

async fn scenario(a: &Args, plan: &Plan, mut fleet: Option<&mut Fleet>) -> Result<Report> {
    let timeout = Duration::from_millis(a.timeout_ms);
    // Providers first, so the callers' first lookups can already find them.
    let mut providers: Vec<(Client, Registration, Arc<AtomicU64>)> = Vec::new();
    for addr in &plan.provider_addrs {
        let c = Client::connect(a.opts(addr))
            .await
            .with_context(|| format!("provider connect {addr}"))?;
        let invoked = Arc::new(AtomicU64::new(0));
        let n = invoked.clone();
        let reg = c
            .register(&a.procedure, move |args: Bytes| {
                n.fetch_add(1, Ordering::Relaxed);
                async move { Ok(args) }
            })
            .await
            .with_context(|| format!("register {} at {addr}", a.procedure))?;
        providers.push((c, reg, invoked));
    }
    // With --spawn, wait until the top bridge's index lists every provider: the callers'
    // first lookup is cached for minutes, and an answer taken before a provider's
    // advertisement arrived would leave that provider out for the whole run.
    if let Some(top) = fleet
        .as_deref()
        .and_then(|f| f.procs.iter().find(|p| p.name == "city"))
        .map(|p| p.admin)
    {
        let want = plan.provider_addrs.len() as f64;
        let deadline = std::time::Instant::now() + Duration::from_secs(a.warmup_timeout);
        loop {
            let records = tokio::task::spawn_blocking(move || {
                crate::spawn::http_get(top, "/metrics")
                    .map(|(_, body)| crate::spawn::metric_sum(&body, "macula_dht_records"))
                    .unwrap_or(0.0)
            })
            .await?;
            if records >= want {
                break;
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("the city lists {records} provider records, expected {want}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut callers = Vec::new();
    for addr in &plan.caller_addrs {
        callers.push(
            Client::connect(a.opts(addr))
                .await
                .with_context(|| format!("caller connect {addr}"))?,
        );
    }

    let warmup = warm_up(a, &callers, timeout).await?;
    eprintln!(
        "warm-up: every caller got a reply ({} calls, {:.1} s)",
        warmup.calls, warmup.seconds
    );
    let targets = scrape_targets(a, fleet.as_deref());
    let before = scrape(&targets).await?;

    let base = Instant::now();
    let dur = Duration::from_secs(a.duration);
    let progress = Arc::new(Progress::default());
    let mut tasks = JoinSet::new();
    let n = callers.len() as u64;
    for (i, c) in callers.iter().enumerate() {
        let i = i as u64;
        // Spread the rate; the first `rate % n` callers take one call/s more.
        let rate = a.rate / n + u64::from(i < a.rate % n);
        let job = CallerJob {
            client: c.clone(),
            procedure: a.procedure.clone(),
            id: i,
            rate,
            concurrency: a.concurrency,
            payload: a.payload,
            timeout,
            base,
            dur,
            progress: progress.clone(),
        };
        if a.rate == 0 {
            tasks.spawn(job.flat_out());
        } else if rate > 0 {
            tasks.spawn(job.paced());
        }
    }
    let ticker = tokio::spawn(print_progress(progress.clone(), base));

    let mut kill = None;
    if let (Some(at), Some(f), Some(node)) = (
        a.kill_provider_at,
        fleet.as_deref_mut(),
        plan.first_provider_node,
    ) {
        tokio::time::sleep_until((base + Duration::from_secs_f64(at)).into()).await;
        let at = base.elapsed();
        f.kill(node).await;
        eprintln!("[{:>5.1}s] killed {}", at.as_secs_f64(), f.procs[node].name);
        kill = Some((f.procs[node].name.clone(), at));
    }

    let mut stats = CallStats::new();
    while let Some(r) = tasks.join_next().await {
        stats.merge(&r?);
    }
    let elapsed = base.elapsed().as_secs_f64().max(1e-9);
    ticker.abort();

    let targets = scrape_targets(a, fleet.as_deref());
    let after = scrape(&targets).await?;
    let read_any = after.iter().any(|(_, s)| s.is_some());
    let provider_invocations = providers
        .iter()
        .map(|(_, _, n)| n.load(Ordering::Relaxed))
        .collect();
    for c in callers {
        c.close().await;
    }
    // Closing the connection withdraws the registrations (a killed provider node's client
    // cannot unregister anyway).
    for (c, _registration, _) in providers {
        c.close().await;
    }
    Ok(Report {
        scenario: "rpc",
        spawned: a.spawn,
        procedure: a.procedure.clone(),
        rate_target: a.rate,
        duration_s: a.duration,
        payload_bytes: a.payload,
        timeout_ms: a.timeout_ms,
        providers: plan.provider_addrs.len(),
        callers: plan.caller_addrs.len(),
        concurrency: a.concurrency as usize,
        warmup,
        calls: stats.calls,
        ok: stats.ok,
        errors: stats.error_map(),
        latency_us: Latency::of(&stats.hist),
        calls_per_s: stats.calls as f64 / elapsed,
        ok_per_s: stats.ok as f64 / elapsed,
        provider_invocations,
        kill: kill.map(|(node, at)| KillReport::new(node, at, &stats)),
        cache: read_any.then(|| report::cache_report(&before, &after)),
        routing_hops: read_any.then(|| report::hops_report(&after)),
        failovers: read_any.then(|| report::failovers(&after)),
    })
}

/// Each caller calls until its first success (the route and the caches are then warm), within
/// `--warmup-timeout` for all of them. A caller whose first calls fail waits 100 ms between
/// tries: "not found" answers come back at once and are cached for seconds anyway.
async fn warm_up(a: &Args, callers: &[Client], timeout: Duration) -> Result<Warmup> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.warmup_timeout);
    let mut stats = CallStats::new();
    let probe = Bytes::from_static(b"warm-up");
    for c in callers {
        loop {
            let t = Instant::now();
            let outcome = call_once(c, &a.procedure, probe.clone(), timeout).await;
            let ok = outcome.is_ok();
            stats.record(start, t, outcome);
            if ok {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "warm-up: no successful call within {} s ({} calls, errors {:?})",
                    a.warmup_timeout,
                    stats.calls,
                    stats.errors
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(Warmup {
        calls: stats.calls,
        ok: stats.ok,
        errors: stats.error_map(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One call; its latency if the reply equals `args`, else its error kind.
async fn call_once(
    c: &Client,
    procedure: &str,
    args: Bytes,
    timeout: Duration,
) -> Result<Duration, &'static str> {
    let t = Instant::now();
    match c.call(procedure, args.clone(), timeout).await {
        Ok(reply) if reply == args => Ok(t.elapsed()),
        Ok(_) => Err(MISMATCH),
        Err(e) => Err(e.kind()),
    }
}

/// What one caller does during the run.
struct CallerJob {
    client: Client,
    procedure: String,
    id: u64,
    /// Calls per second of this caller (paced mode).
    rate: u64,
    /// Calls in flight (flat-out mode).
    concurrency: u64,
    payload: usize,
    timeout: Duration,
    base: Instant,
    dur: Duration,
    progress: Arc<Progress>,
}

impl CallerJob {
    /// Arguments of call `seq`: `payload` bytes starting with (caller id, seq), so a reply
    /// carrying another call's arguments is caught as a mismatch.
    fn args(&self, seq: u64) -> Bytes {
        let mut body = vec![0x5a; self.payload];
        let key = ((self.id << 40) | seq).to_be_bytes();
        let n = body.len().min(key.len());
        body[..n].copy_from_slice(&key[..n]);
        Bytes::from(body)
    }

    fn count(&self, ok: bool) {
        self.progress.calls.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.progress.ok.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Open loop: starts calls at `rate`/s whatever the replies do (each call its own task, so
    /// a slow reply does not delay the next call; at most rate × timeout are in flight).
    async fn paced(self) -> CallStats {
        let job = Arc::new(self);
        let mut stats = CallStats::new();
        let mut inflight = JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut seq = 0u64;
        loop {
            let elapsed = job.base.elapsed();
            if elapsed >= job.dur {
                break;
            }
            let target = (job.rate as f64 * elapsed.as_secs_f64()) as u64;
            while seq < target {
                let j = job.clone();
                let args = j.args(seq);
                inflight.spawn(async move {
                    let t = Instant::now();
                    let outcome = call_once(&j.client, &j.procedure, args, j.timeout).await;
                    j.count(outcome.is_ok());
                    (t, outcome)
                });
                seq += 1;
            }
            while let Some(done) = inflight.try_join_next() {
                if let Ok((t, outcome)) = done {
                    stats.record(job.base, t, outcome);
                }
            }
            tick.tick().await;
        }
        while let Some(done) = inflight.join_next().await {
            if let Ok((t, outcome)) = done {
                stats.record(job.base, t, outcome);
            }
        }
        stats
    }

    /// Closed loop: `concurrency` workers, each calling again as soon as its call ends.
    async fn flat_out(self) -> CallStats {
        let job = Arc::new(self);
        let mut workers = JoinSet::new();
        for w in 0..job.concurrency {
            let j = job.clone();
            workers.spawn(async move {
                let mut stats = CallStats::new();
                let mut seq = w << 32;
                while j.base.elapsed() < j.dur {
                    let t = Instant::now();
                    let outcome = call_once(&j.client, &j.procedure, j.args(seq), j.timeout).await;
                    j.count(outcome.is_ok());
                    stats.record(j.base, t, outcome);
                    seq += 1;
                }
                stats
            });
        }
        let mut stats = CallStats::new();
        while let Some(Ok(s)) = workers.join_next().await {
            stats.merge(&s);
        }
        stats
    }
}

async fn print_progress(p: Arc<Progress>, base: Instant) {
    let mut last = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let (calls, ok) = (
            p.calls.load(Ordering::Relaxed),
            p.ok.load(Ordering::Relaxed),
        );
        eprintln!(
            "[{:>5.1}s] calls {:>9} ({:>7}/s)  ok {:>9}  failed {:>7}",
            base.elapsed().as_secs_f64(),
            calls,
            calls - last,
            ok,
            calls - ok,
        );
        last = calls;
    }
}

/// The processes whose `/metrics` the report reads: every spawned process (`None` for a killed
/// one), or the `--admin-addr` list.
fn scrape_targets(a: &Args, fleet: Option<&Fleet>) -> Vec<(String, Option<SocketAddr>)> {
    match fleet {
        Some(f) => f
            .procs
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), f.is_running(i).then_some(p.admin)))
            .collect(),
        None => a
            .admin_addr
            .iter()
            .map(|addr| (addr.to_string(), Some(*addr)))
            .collect(),
    }
}

async fn scrape(
    targets: &[(String, Option<SocketAddr>)],
) -> Result<Vec<(String, Option<report::Scraped>)>> {
    let targets = targets.to_vec();
    Ok(tokio::task::spawn_blocking(move || report::scrape(&targets)).await?)
}
