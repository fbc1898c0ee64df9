//! The `pubsub` scenario.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use hdrhistogram::Histogram;
use macula::client::{Client, ClientOptions, Subscription};
use macula::wire::Qos;
use serde::Serialize;

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
}

const DATA_TOPIC: &str = "loadtest.data";
const PROBE_TOPIC: &str = "loadtest.probe";
const PATTERN: &str = "loadtest.**";

fn opts(addr: &str, a: &Args) -> ClientOptions {
    ClientOptions {
        addr: addr.to_string(),
        server_name: a.server_name.clone(),
        realm: a.realm.clone(),
        ..ClientOptions::default()
    }
}

/// Runs the scenario; returns an error (non-zero exit) only on setup failures.
pub async fn run(a: Args) -> Result<()> {
    if a.payload < 16 {
        bail!("--payload must be at least 16 bytes");
    }
    let mut fleet = None;
    let (pub_addr, sub_addr) = if a.spawn {
        let mut f = Fleet::new(spawn::macula_bin()?)?;
        let (ip_b, ip_1, ip_2) = if a.single_ip {
            ("127.0.0.1", "127.0.0.1", "127.0.0.1")
        } else {
            ("127.0.0.1", "127.0.0.2", "127.0.0.3")
        };
        let b = f.bridge("bridge", ip_b, &[])?;
        let bridge_addr = f.procs[b].quic;
        let n1 = f.node("node-a", ip_1, "cluster-a", bridge_addr, &[])?;
        let n2 = f.node("node-b", ip_2, "cluster-b", bridge_addr, &[])?;
        let (pa, sa) = (f.procs[n1].quic.to_string(), f.procs[n2].quic.to_string());
        let sa = if a.same_node { pa.clone() } else { sa };
        eprintln!(
            "spawned bridge {bridge_addr}, node-a {pa}, node-b {sa} (logs in {})",
            f.dir.path().display()
        );
        fleet = Some(f);
        (pa, sa)
    } else {
        let sa = if a.same_node {
            a.pub_addr.clone()
        } else {
            a.sub_addr.clone()
        };
        (a.pub_addr.clone(), sa)
    };
    let result = tokio::select! {
        r = async {
            if let Some(f) = fleet.as_mut() {
                f.wait_ready(Duration::from_secs(20)).await?;
            }
            scenario(&a, &pub_addr, &sub_addr, fleet.as_ref()).await
        } => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Some(mut f) = fleet {
        f.stop().await;
        if result.is_err() {
            eprintln!("child logs kept in {}", f.dir.keep().display());
        }
    }
    let report = result?;
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(p) = &a.json {
        std::fs::write(p, &text).with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
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
    pub_addr: &str,
    sub_addr: &str,
    fleet: Option<&Fleet>,
) -> Result<Report> {
    let qos = if a.qos == 1 {
        Qos::AtLeastOnce
    } else {
        Qos::AtMostOnce
    };
    let mut subs = Vec::new();
    let mut sub_clients = Vec::new();
    for _ in 0..a.subscribers {
        let c = Client::connect(opts(sub_addr, a))
            .await
            .context("subscriber connect")?;
        subs.push(c.subscribe(PATTERN).await.context("subscribe")?);
        sub_clients.push(c);
    }
    let mut pubs = Vec::new();
    for _ in 0..a.publishers {
        pubs.push(
            Client::connect(opts(pub_addr, a))
                .await
                .context("publisher connect")?,
        );
    }
    // Wait until the route across the bridge is live: probes until every subscriber sees one.
    let deadline = Instant::now() + Duration::from_secs(20);
    for s in subs.iter_mut() {
        loop {
            pubs[0]
                .publish(PROBE_TOPIC, "probe".into(), Qos::AtMostOnce)
                .await?;
            match tokio::time::timeout(Duration::from_millis(100), s.recv()).await {
                Ok(Some(m)) if m.topic() == PROBE_TOPIC => break,
                Ok(Some(_)) => {}
                Ok(None) => bail!("subscriber connection closed"),
                Err(_) if Instant::now() > deadline => bail!("route not established within 20 s"),
                Err(_) => {}
            }
        }
    }
    // Drain leftover probes.
    for s in subs.iter_mut() {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), s.recv()).await {}
    }

    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let total_sent = Arc::new(AtomicU64::new(0));
    let sent_done = Arc::new(AtomicBool::new(false));

    // Subscribers.
    let mut sub_tasks = Vec::new();
    let delivered_live = Arc::new(AtomicU64::new(0));
    for s in subs {
        let live = delivered_live.clone();
        let stop = stop.clone();
        sub_tasks.push(tokio::spawn(subscriber(s, base, live, stop)));
    }

    // Publishers.
    let per_pub_rate = a.rate / a.publishers as u64;
    let mut pub_tasks = Vec::new();
    for (i, p) in pubs.iter().enumerate() {
        let p = p.clone();
        let total = total_sent.clone();
        let payload = a.payload;
        let dur = Duration::from_secs(a.duration);
        let rate = if a.rate == 0 { 0 } else { per_pub_rate.max(1) };
        let pub_id = i as u64;
        pub_tasks.push(tokio::spawn(async move {
            publisher(
                p,
                PubPlan {
                    pub_id,
                    rate,
                    dur,
                    payload,
                    qos,
                    base,
                },
                total,
            )
            .await
        }));
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

    let mut sent = 0u64;
    for t in pub_tasks {
        sent += t.await??;
    }
    let publish_elapsed = base.elapsed();
    let mut acked = 0u64;
    if qos == Qos::AtLeastOnce {
        for p in &pubs {
            p.flush(Duration::from_secs(a.drain.max(1))).await.ok();
            acked += p.stats().acked;
        }
    }
    sent_done.store(true, Ordering::Relaxed);
    let expected_each = sent;
    // Let subscribers drain, bounded.
    // Stop at the drain deadline, or earlier once deliveries stopped for a second
    // (QoS 0 drops mean some messages never arrive).
    let drain_deadline = Instant::now() + Duration::from_secs(a.drain);
    let mut last = (delivered_live.load(Ordering::Relaxed), Instant::now());
    loop {
        let now_delivered = delivered_live.load(Ordering::Relaxed);
        if now_delivered >= expected_each * a.subscribers as u64 || Instant::now() >= drain_deadline
        {
            break;
        }
        if now_delivered != last.0 {
            last = (now_delivered, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Release);
    progress.abort();

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut delivered, mut duplicated, mut lost) = (0u64, 0u64, 0u64);
    let mut last_delivery = base;
    for t in sub_tasks {
        let r = t.await?;
        delivered += r.delivered;
        duplicated += r.duplicated;
        let unique = r
            .seen
            .iter()
            .flatten()
            .map(|w| w.count_ones() as u64)
            .sum::<u64>();
        lost += expected_each.saturating_sub(unique);
        hist.add(&r.hist)?;
        if let Some(l) = r.last {
            last_delivery = last_delivery.max(l);
        }
    }
    let node_drops = fleet.map(|f| {
        f.procs
            .iter()
            .filter_map(|p| spawn::http_get(p.admin, "/metrics").ok())
            .map(|(_, body)| spawn::metric_sum(&body, "macula_messages_dropped_total"))
            .sum()
    });
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
        publishers: a.publishers,
        subscribers: a.subscribers,
        sent,
        acked,
        expected: expected_each * a.subscribers as u64,
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
    })
}

/// Publishes at `rate` msg/s (0 = flat out) for `dur`; returns how many were sent.
/// Payload: u64 publisher-local sequence (publisher id in the top 16 bits), u64 ns since `base`.
/// What one publisher task does.
struct PubPlan {
    pub_id: u64,
    rate: u64,
    dur: Duration,
    payload: usize,
    qos: Qos,
    base: Instant,
}

async fn publisher(p: Client, plan: PubPlan, total: Arc<AtomicU64>) -> Result<u64> {
    let PubPlan {
        pub_id,
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
            p.publish_buf(&mut arena, DATA_TOPIC, &body, qos).await?;
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

async fn subscriber(
    mut s: Subscription,
    base: Instant,
    live: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> SubResult {
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
            if m.topic() != DATA_TOPIC || m.payload.len() < 16 {
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
            let _ = r
                .hist
                .record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
        }
        live.fetch_add(n as u64, Ordering::Relaxed);
        r.last = Some(Instant::now());
    }
    r
}
