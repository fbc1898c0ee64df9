//! `macula`: the bridge worker and edge node binary. Thin: parse the command line,
//! load the configuration, start logging, run the mode, wait for a signal, drain.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use macula::config::Config;
use macula::metrics::Metrics;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "macula", version, about = "Macula bridge worker and edge node")]
struct Cli {
    /// TOML configuration file (layered over built-in defaults, under MACULA_* env and flags).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (development certificate, state).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log filter, tracing EnvFilter syntax (e.g. `info`, `macula=debug`).
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a bridge worker: relay pub/sub between the nodes connected to it.
    Bridge(BridgeArgs),
    /// Run an edge node: serve local clients, uplink to a bridge.
    Node(NodeArgs),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Keys and credentials: generate, show, sign, inspect (docs/AUTH.md).
    Keys {
        #[command(subcommand)]
        cmd: keys::KeysCmd,
    },
}

#[derive(clap::Args, Default)]
#[command(args_conflicts_with_subcommands = true)]
struct BridgeArgs {
    #[command(subcommand)]
    action: Option<BridgeCmd>,
    /// UDP address for QUIC from nodes (default 0.0.0.0:9443).
    #[arg(long)]
    listen: Option<String>,
    /// Admin HTTP address for /metrics, /health, /state, /fleet, /drain (default 127.0.0.1:8080).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Realm this bridge accepts (repeatable; default io.macula).
    #[arg(long = "realm")]
    realms: Vec<String>,
    /// Level this bridge serves: street, neighborhood, city, province, country, region, global
    /// (default street).
    #[arg(long)]
    level: Option<String>,
    /// Parent bridge (the level above), host:port (repeatable, tried in order; default none:
    /// this bridge is the top).
    #[arg(long = "parent")]
    parents: Vec<String>,
    /// Join the fleet of workers of this name (docs/FLEET.md; default: a single bridge).
    #[arg(long)]
    fleet: Option<String>,
    /// Another worker of the fleet, host:port (repeatable; the rest are learned by gossip).
    #[arg(long = "fleet-peer")]
    fleet_peers: Vec<String>,
    /// Resolve this host:port for the fleet's workers (a Kubernetes headless service).
    #[arg(long)]
    fleet_dns: Option<String>,
    /// This worker's relative share of clusters, 1-1000 (default 100).
    #[arg(long)]
    weight: Option<u32>,
    /// Address workers and nodes reach this worker at (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
}

#[derive(Subcommand)]
enum BridgeCmd {
    /// Drain a running fleet worker through its admin listener: it stops accepting nodes,
    /// redirects them to their new owners, finishes in-flight QoS 1 messages and exits.
    Drain {
        /// The worker's admin address, host:port.
        #[arg(long, default_value = "127.0.0.1:8080")]
        admin: String,
        /// A file holding the admin token (needed when the worker is not on this host's
        /// loopback; `auth.admin_token_file` on the worker).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
}

#[derive(clap::Args, Default)]
struct NodeArgs {
    /// UDP address for QUIC from clients (default 0.0.0.0:9444).
    #[arg(long)]
    listen: Option<String>,
    /// Admin HTTP address (default 127.0.0.1:8081).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Realm of this node (default io.macula).
    #[arg(long)]
    realm: Option<String>,
    /// Cluster id (default "default").
    #[arg(long)]
    cluster: Option<String>,
    /// Bridge to uplink to, host:port (default 127.0.0.1:9443).
    #[arg(long)]
    uplink: Option<String>,
    /// Run without an uplink.
    #[arg(long, conflicts_with = "uplink")]
    standalone: bool,
    /// Another node of this cluster to join the mesh through, host:port (repeatable).
    #[arg(long = "seed")]
    seeds: Vec<String>,
    /// Address the other nodes of the cluster reach this one at (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the effective configuration; exit 1 with the reason if it is invalid.
    Check,
}

/// Command-line overrides, the last figment layer. Only `Some` fields are set.
#[derive(Serialize, Default)]
struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bridge: Option<BridgeOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<NodeOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<LogOverrides>,
}

#[derive(Serialize, Default)]
struct BridgeOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    realms: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parents: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: Option<FleetOverrides>,
}

#[derive(Serialize, Default)]
struct FleetOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise: Option<String>,
}

#[derive(Serialize, Default)]
struct NodeOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    realm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uplink: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seeds: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise: Option<String>,
}

#[derive(Serialize, Default)]
struct LogOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<String>,
}

fn overrides(cli: &Cli) -> Overrides {
    let mut o = Overrides {
        data_dir: cli.data_dir.clone(),
        log: cli
            .log_level
            .clone()
            .map(|l| LogOverrides { level: Some(l) }),
        ..Default::default()
    };
    match &cli.cmd {
        Cmd::Bridge(b) => {
            o.bridge = Some(BridgeOverrides {
                listen: b.listen.clone(),
                admin_listen: b.admin_listen.clone(),
                realms: (!b.realms.is_empty()).then(|| b.realms.clone()),
                level: b.level.clone(),
                parents: (!b.parents.is_empty()).then(|| b.parents.clone()),
                fleet: Some(FleetOverrides {
                    name: b.fleet.clone(),
                    peers: (!b.fleet_peers.is_empty()).then(|| b.fleet_peers.clone()),
                    dns: b.fleet_dns.clone(),
                    weight: b.weight,
                    advertise: b.advertise.clone(),
                }),
            })
        }
        Cmd::Node(n) => {
            o.node = Some(NodeOverrides {
                listen: n.listen.clone(),
                admin_listen: n.admin_listen.clone(),
                realm: n.realm.clone(),
                cluster: n.cluster.clone(),
                uplink: n.uplink.clone(),
                seeds: (!n.seeds.is_empty()).then(|| n.seeds.clone()),
                advertise: n.advertise.clone(),
            })
        }
        Cmd::Config { .. } | Cmd::Keys { .. } => {}
    }
    o
}

#[path = "cli/keys.rs"]
mod keys;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Keys { cmd } = cli.cmd {
        return match keys::run(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("macula keys: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Cmd::Bridge(BridgeArgs {
        action: Some(BridgeCmd::Drain { admin, token_file }),
        ..
    }) = &cli.cmd
    {
        return drain_remote(admin, token_file.as_deref());
    }
    let mut cfg = match Config::load(cli.config.as_deref(), &overrides(&cli))
        .and_then(|c| c.validate().map(|_| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("macula: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if let Cmd::Node(n) = &cli.cmd {
        if n.standalone {
            cfg.node.uplink = None;
        }
    }
    if let Cmd::Config {
        cmd: ConfigCmd::Check,
    } = &cli.cmd
    {
        print!("{}", cfg.to_toml());
        return ExitCode::SUCCESS;
    }
    let _audit_guard = match init_logging(&cfg) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("macula: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("macula: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.cmd, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "fatal");
            eprintln!("macula: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The process log (stderr; `log.*`) and, with `audit.file` set, the audit log: events of
/// target `macula::audit` as flat JSON lines through a bounded, lossy, non-blocking writer
/// (`macula::audit`). The returned guard flushes the audit writer when dropped.
fn init_logging(
    cfg: &Config,
) -> anyhow::Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level))
        .add_directive(format!("{}=off", macula::audit::TARGET).parse()?);
    let main = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let main = if cfg.log.json {
        main.json().boxed()
    } else {
        main.boxed()
    };
    let (audit, guard) = match cfg.audit.file.as_deref() {
        None => (None, None),
        Some(file) => {
            let (writer, guard) = if file == "stdout" {
                tracing_appender::non_blocking(std::io::stdout())
            } else {
                let w = macula::audit::SizeRotating::open(file.as_ref(), cfg.audit.max_bytes)
                    .map_err(|e| anyhow::anyhow!("audit log {file}: {e}"))?;
                tracing_appender::non_blocking(w)
            };
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(writer)
                .with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target(macula::audit::TARGET, tracing::Level::INFO),
                );
            (Some(layer), Some(guard))
        }
    };
    tracing_subscriber::registry()
        .with(main.with_filter(filter))
        .with(audit)
        .init();
    Ok(guard)
}

async fn run(cmd: Cmd, cfg: Config) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let state_slot: Arc<arc_swap::ArcSwapOption<arc_swap::ArcSwap<serde_json::Value>>> =
        Arc::default();
    let fleet_slot: Arc<arc_swap::ArcSwapOption<arc_swap::ArcSwap<serde_json::Value>>> =
        Arc::default();
    let drain_slot: Arc<arc_swap::ArcSwapOption<CancellationToken>> = Arc::default();
    let admin_cancel = CancellationToken::new();
    let grace = Duration::from_millis(cfg.limits.drain_grace_ms);
    let admin_addr = match cmd {
        Cmd::Bridge(_) => cfg.bridge.admin_listen,
        _ => cfg.node.admin_listen,
    };
    let admin = match admin_addr {
        Some(addr) => {
            let listener = macula::admin::bind(addr).await?;
            tracing::info!(admin = %listener.local_addr()?, "admin listener started");
            let state = macula::admin::AdminState {
                metrics: metrics.clone(),
                ready: ready.clone(),
                state: state_slot.clone(),
                fleet: fleet_slot.clone(),
                drain: drain_slot.clone(),
                token: match &cfg.auth.admin_token_file {
                    Some(p) => Some(macula::admin::read_token(p).map_err(anyhow::Error::msg)?),
                    None => None,
                },
            };
            Some(tokio::spawn(macula::admin::serve_listener(
                listener,
                state,
                admin_cancel.clone(),
            )))
        }
        None => None,
    };
    match cmd {
        Cmd::Bridge(_) => {
            let h = macula::bridge::start(cfg, metrics).await?;
            state_slot.store(Some(h.state.clone()));
            let drain = match &h.fleet {
                Some(f) => {
                    fleet_slot.store(Some(f.json.clone()));
                    drain_slot.store(Some(Arc::new(f.drain.clone())));
                    f.drain.clone()
                }
                None => CancellationToken::new(),
            };
            ready.store(true, Ordering::Release);
            tokio::select! {
                _ = wait_for_signal() => {}
                _ = drain.cancelled() => tracing::info!("drain requested"),
            }
            ready.store(false, Ordering::Release);
            tracing::info!("shutting down");
            h.shutdown(grace).await;
        }
        Cmd::Node(_) => {
            let h = macula::node::start(cfg, metrics).await?;
            state_slot.store(Some(h.state.clone()));
            fleet_slot.store(h.uplink_fleet.clone());
            ready.store(true, Ordering::Release);
            wait_for_signal().await;
            ready.store(false, Ordering::Release);
            tracing::info!("shutting down");
            h.shutdown(grace).await;
        }
        Cmd::Config { .. } | Cmd::Keys { .. } => unreachable!("handled before the runtime starts"),
    }
    admin_cancel.cancel();
    if let Some(a) = admin {
        let _ = a.await;
    }
    Ok(())
}

/// `macula bridge drain`: `POST /drain` to a worker's admin listener; exit 0 on 202.
fn drain_remote(admin: &str, token_file: Option<&std::path::Path>) -> ExitCode {
    use std::io::{Read, Write};
    let auth = match token_file.map(std::fs::read_to_string) {
        None => String::new(),
        Some(Ok(t)) => format!(
            "Authorization: Bearer {}\r\n",
            t.lines().next().unwrap_or("").trim()
        ),
        Some(Err(e)) => {
            eprintln!("macula: cannot read the admin token file: {e}");
            return ExitCode::from(2);
        }
    };
    let result = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(admin)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "POST /drain HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })();
    match result {
        Ok(resp) if resp.starts_with("HTTP/1.1 202") => {
            println!("{admin}: draining");
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            eprintln!(
                "macula: drain refused by {admin}: {}",
                resp.lines().next().unwrap_or("")
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("macula: cannot reach {admin}: {e}");
            ExitCode::from(1)
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
