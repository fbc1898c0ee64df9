//! `macula-loadtest`: the load generator Macula users run against their clusters.
//!
//! `macula-loadtest pubsub --spawn --rate 10000 --duration 30 --payload 128 --qos 1 --json out.json`
//! starts a bridge and two nodes (child processes of the `macula` binary next to
//! this one), connects publishers to one node and subscribers to the other, paces
//! the publishers, and reports sent / delivered / lost / duplicated, throughput
//! and latency percentiles (hdrhistogram). Without `--spawn` it uses
//! `--pub-addr` / `--sub-addr` of an existing deployment.
//!
//! `macula-loadtest pubsub --spawn --workers 3 --clusters 12 --kill-worker-at 8` starts a sharded
//! fleet of bridge workers instead (`loadtest/fleet.rs`): one publisher and one subscriber per
//! cluster, every message crossing clusters, and a worker killed, added or drained mid-run.
//!
//! `macula-loadtest rpc --spawn --rate 2000 --duration 30 --json rpc.json` starts the bridge
//! hierarchy (a city bridge, two street bridges, a cluster of three nodes under each street),
//! registers an echo procedure on one cluster and calls it from the other, and reports calls,
//! errors by kind, latency percentiles and the lookup caches' hits. Every flag:
//! `docs/LOADTEST.md`.
//!
//! `macula-loadtest clients --spawn --clients 5000` connects a crowd of clients to one node and
//! reports how fast they subscribed, how many sessions survived, the subscribe/unsubscribe
//! rate of one more client while the crowd's patterns are held, and the node's shutdown time.
//!
//! `macula-loadtest flood --spawn --json flood.json` floods one node with connection attempts
//! from loopback addresses (TLS handshakes that never send `connect`, half-open handshakes,
//! idle sessions; bounded in count and time) and reports what was refused, the latency of a
//! witness client before, during and after, and the node's memory.
//!
//! `macula-loadtest gossip --simulate --nodes 1000` runs the deterministic simulation of CRDT
//! state gossip and prints its report as JSON (flags: `macula-loadtest gossip --help`).

mod clients;
mod fleet;
mod flood;
mod gossip;
mod pubsub;
mod rpc;
#[allow(dead_code)] // kill/restart serve the integration tests, which share this module
mod spawn;
#[allow(dead_code)] // parts serve only the integration tests, which share this module
mod topology;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "macula-loadtest",
    version,
    about = "Load generator for Macula clusters"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Publish/subscribe across two nodes (through their bridge).
    Pubsub(pubsub::Args),
    /// Remote procedure calls across the bridge hierarchy (street → city → street).
    Rpc(rpc::Args),
    /// CRDT state gossip across a cluster (`--simulate`: deterministic simulation).
    Gossip(gossip::GossipArgs),
    /// Many clients on one node: setup rate, session survival, subscription churn, shutdown.
    Clients(clients::Args),
    /// A bounded connection flood on loopback: refusals, witness latency, node memory.
    Flood(flood::Args),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Pubsub(args) => rt.block_on(pubsub::run(args)),
        Cmd::Rpc(args) => rt.block_on(rpc::run(args)),
        Cmd::Gossip(args) => gossip::run(args),
        Cmd::Clients(args) => rt.block_on(clients::run(args)),
        Cmd::Flood(args) => rt.block_on(flood::run(args)),
    }
}
