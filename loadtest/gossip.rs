//! The `gossip` scenario: convergence of CRDT state gossip across a cluster.
//!
//! `--simulate` runs the deterministic discrete-event simulation of [`macula::gossip::sim`]
//! (virtual time, no sockets) and prints its report. The real-process runs are in
//! `tests/gossip.rs`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use macula::gossip::sim::{simulate, SimConfig};

/// Arguments of `macula-loadtest gossip`.
#[derive(clap::Args, Debug, Clone)]
pub struct GossipArgs {
    /// Run the deterministic simulation (the only mode implemented here).
    #[arg(long)]
    simulate: bool,
    /// Cluster size.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    nodes: u64,
    /// Seed of the simulation's random number generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Probability that a message is dropped.
    #[arg(long, default_value_t = 0.01)]
    loss: f64,
    /// Fraction of nodes that go down during the first seconds and come back.
    #[arg(long, default_value_t = 0.05)]
    churn: f64,
    /// Nodes that each apply one update at t = 0 (default: all).
    #[arg(long)]
    updates: Option<usize>,
    /// Push interval, ms.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    push_interval_ms: u64,
    /// Anti-entropy interval, ms.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    anti_entropy_interval_ms: u64,
    /// One-way latency, ms.
    #[arg(long, default_value_t = 5)]
    latency_ms: u64,
    /// Give up after this many virtual seconds.
    #[arg(long, default_value_t = 600)]
    max_sim_seconds: u64,
    /// Also write the JSON report to this file.
    #[arg(long, alias = "json")]
    out: Option<PathBuf>,
}

/// Runs the scenario: prints the report as pretty JSON on stdout.
pub fn run(a: GossipArgs) -> Result<()> {
    if !a.simulate {
        bail!("only --simulate is implemented here; the real-process runs are in tests/gossip.rs");
    }
    if !(0.0..=1.0).contains(&a.loss) || !(0.0..=1.0).contains(&a.churn) {
        bail!("--loss and --churn must be in [0, 1]");
    }
    let cfg = SimConfig {
        nodes: a.nodes as usize,
        seed: a.seed,
        loss: a.loss,
        churn: a.churn,
        updates: a.updates.unwrap_or(usize::MAX),
        push_interval_ms: a.push_interval_ms,
        anti_entropy_interval_ms: a.anti_entropy_interval_ms,
        latency_ms: a.latency_ms,
        max_sim_seconds: a.max_sim_seconds,
        ..SimConfig::default()
    };
    let started = Instant::now();
    let report = simulate(&cfg);
    eprintln!(
        "simulated {} nodes in {:.2} s of real time",
        cfg.nodes,
        started.elapsed().as_secs_f64()
    );
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(p) = &a.out {
        std::fs::write(p, &text).with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
}
