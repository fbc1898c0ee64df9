//! nats-server measured like a Macula node: it starts a nats-server child on loopback (plain
//! TCP, or TLS with a throw-away CA), connects the subscribers and then the publishers with the
//! official client (async-nats), and reports as `macula-loadtest pubsub` does.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::measure::{self, Live, Load, Tracker};

/// Arguments of `macula-peer nats`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    load: Load,
    /// Serve TLS (a CA and a server certificate made for this run) and connect with TLS.
    #[arg(long)]
    tls: bool,
    /// The nats-server binary (Debian's package installs it on the PATH).
    #[arg(long, default_value = "nats-server")]
    nats_server: String,
}

const SUBJECT: &str = "loadtest.data";

/// Runs the scenario against a nats-server of its own.
pub async fn run(a: Args) -> Result<()> {
    anyhow::ensure!(a.load.payload >= 16, "--payload must be at least 16 bytes");
    let dir = tempfile::tempdir()?;
    let server = Server::start(&a.nats_server, dir.path(), a.tls)?;
    let result = scenario(&a, &server).await;
    drop(server);
    let report = result?;
    measure::emit(&report, &a.load)
}

/// A nats-server child, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    ca: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(bin: &str, dir: &Path, tls: bool) -> Result<Server> {
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut conf = format!("listen: \"{addr}\"\n");
        let mut ca = None;
        if tls {
            let (ca_path, cert, key) = crate::pki::ca_and_leaf(dir)?;
            conf.push_str(&format!(
                "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
                cert.display(),
                key.display()
            ));
            ca = Some(ca_path);
        }
        let conf_path = dir.join("nats.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {bin} (Debian: apt-get install nats-server)"))?;
        let server = Server { child, addr, ca };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("nats-server did not listen on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    async fn connect(&self) -> Result<async_nats::Client> {
        let mut opts = async_nats::ConnectOptions::new()
            // Large enough that the client never sheds a burst the subscriber keeps up with.
            .subscription_capacity(65_536);
        if let Some(ca) = &self.ca {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        Ok(opts.connect(self.addr.to_string()).await?)
    }
}

async fn scenario(a: &Args, server: &Server) -> Result<measure::Report> {
    let load = &a.load;
    let live = Arc::new(Live::default());
    let mut subs = Vec::new();
    let mut sub_clients = Vec::new();
    for _ in 0..load.subscribers {
        let c = server.connect().await.context("subscriber connect")?;
        subs.push(c.subscribe(SUBJECT).await?);
        sub_clients.push(c);
    }
    // A PING/PONG round trip per subscriber: the server has every SUB before anyone publishes.
    for c in &sub_clients {
        c.flush().await?;
    }
    let mut pubs = Vec::new();
    for _ in 0..load.publishers {
        pubs.push(server.connect().await.context("publisher connect")?);
    }
    let base = Instant::now();
    let sub_tasks: Vec<_> = subs
        .into_iter()
        .map(|s| {
            let live = live.clone();
            tokio::spawn(async move {
                let mut t = Tracker::new(base, live.clone());
                let mut batches = s.ready_chunks(1024);
                loop {
                    tokio::select! {
                        b = batches.next() => match b {
                            Some(b) => t.record(b.iter().map(|m| &m.payload[..])),
                            None => break,
                        },
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                    // Past the drain: a backlog still arriving is not read on (it was lost).
                    if live.stop.load(Ordering::Acquire) {
                        break;
                    }
                }
                t
            })
        })
        .collect();
    let rate = measure::per_publisher_rate(load);
    let dur = Duration::from_secs(load.duration);
    let pub_tasks: Vec<_> = pubs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (p, live, size) = (p.clone(), live.clone(), load.payload);
            tokio::spawn(async move {
                let mut body = vec![0u8; size];
                let mut pace = measure::Pacer::new(rate, dur, live);
                let mut seq = 0u64;
                while let Some(target) = pace.due(seq) {
                    while seq < target {
                        measure::stamp(&mut body, i as u64, seq, base);
                        p.publish(SUBJECT, Bytes::copy_from_slice(&body)).await?;
                        seq += 1;
                    }
                    pace.wait(seq).await;
                }
                p.flush().await?;
                anyhow::Ok(seq)
            })
        })
        .collect();
    let (sent_by, publish_elapsed) = measure::published(pub_tasks, base, &live, load).await?;
    let mut trackers = Vec::new();
    for t in sub_tasks {
        trackers.push(t.await?);
    }
    let system = if a.tls { "nats-tls" } else { "nats-tcp" };
    measure::report(system, load, base, &sent_by, publish_elapsed, &trackers)
}
