//! `macula-loadtest clients`: many clients on one node. Measures what a node does with a
//! crowd rather than a stream: how fast N clients connect and subscribe, how many sessions
//! survive a hold period (a session that dies is re-established by the client and counted
//! in its `reconnects`), how fast one more client can subscribe and unsubscribe while the
//! crowd's patterns are held, and how long the node takes to shut down (SIGTERM to exit)
//! with every client connected.
//!
//! `macula-loadtest clients --spawn --clients 5000 --patterns 1 --churn 2000` starts a bridge
//! and one node as child processes; without `--spawn`, `--addr` names an existing node (the
//! shutdown figure is then not measured).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use macula::client::{Client, ClientOptions};
use serde::Serialize;

use crate::spawn::{self, Fleet};

/// Arguments of `macula-loadtest clients`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Start a bridge and one node as child processes of the `macula` binary.
    #[arg(long)]
    spawn: bool,
    /// Node to connect to (without --spawn).
    #[arg(long, default_value = "127.0.0.1:9444")]
    addr: String,
    /// Client connections to open (each its own QUIC connection and UDP socket).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Distinct patterns each client subscribes to.
    #[arg(long, default_value_t = 1)]
    patterns: usize,
    /// Connections opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds to hold every connection before counting survivors.
    #[arg(long, default_value_t = 5)]
    hold: u64,
    /// Subscribe + unsubscribe round trips made by one more client while the crowd is held
    /// (each waits for its `suback`).
    #[arg(long, default_value_t = 1000)]
    churn: usize,
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

/// The JSON report.
#[derive(Serialize, Debug)]
struct Report {
    clients: usize,
    patterns_per_client: usize,
    /// Clients whose connect + subscribes completed.
    connected: usize,
    /// Connects or subscribes that failed.
    failed: u64,
    /// Seconds from the first connect to the last subscribe answered.
    setup_s: f64,
    /// Clients connected and subscribed per second.
    setup_per_s: f64,
    /// Sessions re-established by their clients during setup and hold (0: none died).
    reconnects: u64,
    /// Clients with no reconnect and not closed at the end of the hold.
    survived: usize,
    /// Subscribe + unsubscribe requests answered per second (each a round trip).
    churn_per_s: f64,
    /// Seconds from SIGTERM to the node's exit (`--spawn` only).
    shutdown_s: Option<f64>,
}

fn opts(a: &Args, addr: &str) -> ClientOptions {
    crate::pubsub::client_opts(addr, &a.server_name, &a.realm)
}

/// Runs the scenario; errors only on setup failures.
pub async fn run(a: Args) -> Result<()> {
    if a.clients == 0 || a.concurrency == 0 {
        bail!("--clients and --concurrency must be at least 1");
    }
    let mut fleet = None;
    let mut node = 0;
    let addr = if a.spawn {
        let mut f = Fleet::new(spawn::macula_bin()?)?;
        // Room for the crowd and the churning client.
        let cfg = format!("[limits]\nmax_connections = {}\n", a.clients + 16);
        let path = f.write_file("clients.toml", &cfg)?;
        let path = path.display().to_string();
        let b = f.bridge("bridge", "127.0.0.1", &[])?;
        let up = f.procs[b].quic;
        node = f.node("node", "127.0.0.2", "crowd", up, &["--config", &path])?;
        f.wait_ready(Duration::from_secs(20)).await?;
        let addr = f.procs[node].quic.to_string();
        eprintln!(
            "spawned bridge {up}, node {addr} (logs in {})",
            f.dir.path().display()
        );
        fleet = Some(f);
        addr
    } else {
        a.addr.clone()
    };
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(a.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..a.clients {
        let (o, sem, failed, n) = (opts(&a, &addr), sem.clone(), failed.clone(), a.patterns);
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("never closed");
            let c = match Client::connect(o).await {
                Ok(c) => c,
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            };
            let mut subs = Vec::with_capacity(n);
            for j in 0..n {
                match c.subscribe(&format!("crowd.c{i}.p{j}")).await {
                    Ok(s) => subs.push(s),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                }
            }
            Some((c, subs))
        });
    }
    let mut crowd = Vec::with_capacity(a.clients);
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(c)) = r {
            crowd.push(c);
        }
    }
    let setup = started.elapsed().as_secs_f64();
    eprintln!(
        "{} clients connected and subscribed in {setup:.1} s",
        crowd.len()
    );
    let churner = Client::connect(opts(&a, &addr))
        .await
        .context("churn client")?;
    let hold_until = Instant::now() + Duration::from_secs(a.hold);
    let churn_started = Instant::now();
    for k in 0..a.churn {
        let s = churner.subscribe(&format!("churn.k{k}")).await?;
        churner.unsubscribe(s).await?;
    }
    let churn_s = churn_started.elapsed().as_secs_f64();
    tokio::time::sleep_until(hold_until.into()).await;
    let reconnects: u64 = crowd.iter().map(|(c, _)| c.stats().reconnects).sum();
    let survived = crowd
        .iter()
        .filter(|(c, _)| c.stats().reconnects == 0 && !c.is_closed())
        .count();
    let mut shutdown_s = None;
    if let Some(f) = fleet.as_mut() {
        let t = Instant::now();
        if let Some(mut child) = f.terminate_detached(node) {
            child.wait().await?;
            shutdown_s = Some(t.elapsed().as_secs_f64());
        }
        f.stop().await;
    }
    let report = Report {
        clients: a.clients,
        patterns_per_client: a.patterns,
        connected: crowd.len(),
        failed: failed.load(Ordering::Relaxed),
        setup_s: setup,
        setup_per_s: crowd.len() as f64 / setup.max(1e-9),
        reconnects,
        survived,
        churn_per_s: (2 * a.churn) as f64 / churn_s.max(1e-9),
        shutdown_s,
    };
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(p) = &a.json {
        std::fs::write(p, &json).with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
}
