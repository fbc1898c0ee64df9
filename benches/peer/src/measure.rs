//! What every peer measures, the way `macula-loadtest pubsub` measures it: the same payload
//! stamp, the same pacing, the same drain rule and the same JSON report fields.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The load shape shared by every peer (flags of the same names as `macula-loadtest pubsub`).
#[derive(clap::Args, Debug, Clone)]
pub struct Load {
    /// Messages per second across all publishers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Payload size in bytes (at least 16: sequence number and send time).
    #[arg(long, default_value_t = 128)]
    pub payload: usize,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Subscriber connections; each receives every publisher's messages.
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Seconds to wait for in-flight messages after publishing stops.
    #[arg(long, default_value_t = 10)]
    pub drain: u64,
    /// Write the JSON report here as well as to stdout.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// Latency percentiles in µs.
#[derive(Serialize, Debug, Default)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// The report: the fields `macula-loadtest pubsub` writes under the same names.
#[derive(Serialize, Debug)]
pub struct Report {
    pub scenario: &'static str,
    pub system: String,
    pub rate_target: u64,
    pub duration_s: u64,
    pub payload_bytes: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub throughput_msgs_per_s: f64,
    pub publish_rate_msgs_per_s: f64,
    pub latency_us: Latency,
}

/// Stamps `body` (at least 16 bytes): publisher id in the top 16 bits of a u64 sequence, then
/// nanoseconds since `base`, both big-endian (as `macula-loadtest`).
pub fn stamp(body: &mut [u8], pub_id: u64, seq: u64, base: Instant) {
    body[..8].copy_from_slice(&((pub_id << 48) | seq).to_be_bytes());
    body[8..16].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
}

/// A publisher's pacing, as `macula-loadtest`'s: `rate` messages per second on a 1 ms tick,
/// or, flat out (`rate` 0), 256 messages per wake-up with a yield between batches.
pub struct Pacer {
    rate: u64,
    dur: Duration,
    start: Instant,
    tick: tokio::time::Interval,
    reported: u64,
    live: Arc<Live>,
}

impl Pacer {
    pub fn new(rate: u64, dur: Duration, live: Arc<Live>) -> Pacer {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        Pacer {
            rate,
            dur,
            start: Instant::now(),
            tick,
            reported: 0,
            live,
        }
    }

    /// The sequence number to publish up to now, having published up to `seq`; `None` once
    /// the run is over.
    pub fn due(&self, seq: u64) -> Option<u64> {
        let elapsed = self.start.elapsed();
        if elapsed >= self.dur {
            return None;
        }
        Some(if self.rate == 0 {
            seq + 256
        } else {
            (self.rate as f64 * elapsed.as_secs_f64()) as u64
        })
    }

    /// Counts what was published up to `seq` and waits for the next batch.
    pub async fn wait(&mut self, seq: u64) {
        self.live
            .sent
            .fetch_add(seq - self.reported, Ordering::Relaxed);
        self.reported = seq;
        if self.rate != 0 {
            self.tick.tick().await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// Joins the publishers (each returns how many it sent), then waits for the subscribers
/// ([`drain`]); returns what each publisher sent and how long publishing took.
pub async fn published(
    pubs: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
    base: Instant,
    live: &Live,
    load: &Load,
) -> anyhow::Result<(Vec<u64>, Duration)> {
    let mut sent_by = Vec::new();
    for t in pubs {
        sent_by.push(t.await??);
    }
    let publish_elapsed = base.elapsed();
    let expected = sent_by.iter().sum::<u64>() * load.subscribers as u64;
    drain(live, expected, Duration::from_secs(load.drain)).await;
    Ok((sent_by, publish_elapsed))
}

/// Per-publisher rate for `load` (0 = flat out).
pub fn per_publisher_rate(load: &Load) -> u64 {
    if load.rate == 0 {
        0
    } else {
        (load.rate / load.publishers as u64).max(1)
    }
}

/// Counters shared between the subscribers and the driver.
#[derive(Default)]
pub struct Live {
    /// Every delivery, all subscribers.
    pub delivered: AtomicU64,
    /// Every message published.
    pub sent: AtomicU64,
    /// Set when the driver stops waiting.
    pub stop: AtomicBool,
}

/// One subscriber's bookkeeping: which (publisher, sequence) it has seen, and latencies.
pub struct Tracker {
    seen: Vec<Vec<u64>>,
    pub delivered: u64,
    pub duplicated: u64,
    pub hist: Histogram<u64>,
    pub last: Option<Instant>,
    base: Instant,
    live: Arc<Live>,
}

impl Tracker {
    pub fn new(base: Instant, live: Arc<Live>) -> Tracker {
        Tracker {
            seen: Vec::new(),
            delivered: 0,
            duplicated: 0,
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            last: None,
            base,
            live,
        }
    }

    /// Records a batch of received payloads (shorter than 16 bytes: ignored).
    pub fn record<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) {
        let now_ns = self.base.elapsed().as_nanos() as u64;
        let mut n = 0;
        for p in payloads {
            if p.len() < 16 {
                continue;
            }
            n += 1;
            let key = u64::from_be_bytes(p[..8].try_into().expect("8 bytes"));
            let sent_ns = u64::from_be_bytes(p[8..16].try_into().expect("8 bytes"));
            let (publisher, seq) = ((key >> 48) as usize, (key & ((1 << 48) - 1)) as usize);
            if publisher >= self.seen.len() {
                self.seen.resize_with(publisher + 1, Vec::new);
            }
            let bits = &mut self.seen[publisher];
            let (w, b) = (seq / 64, seq % 64);
            if w >= bits.len() {
                bits.resize(w + 1, 0);
            }
            if bits[w] & (1 << b) != 0 {
                self.duplicated += 1;
                continue;
            }
            bits[w] |= 1 << b;
            self.delivered += 1;
            let _ = self
                .hist
                .record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
        }
        if n > 0 {
            self.live.delivered.fetch_add(n, Ordering::Relaxed);
            self.last = Some(Instant::now());
        }
    }

    /// Unique messages seen from `publisher`.
    pub fn unique(&self, publisher: usize) -> u64 {
        self.seen.get(publisher).map_or(0, |bits| {
            bits.iter().map(|w| u64::from(w.count_ones())).sum()
        })
    }
}

/// Waits for the subscribers as `macula-loadtest` does: until everything expected arrived, the
/// drain deadline passed, or deliveries stopped for a second. Then tells them to stop.
pub async fn drain(live: &Live, expected: u64, drain: Duration) {
    let deadline = Instant::now() + drain;
    let mut last = (live.delivered.load(Ordering::Relaxed), Instant::now());
    loop {
        let now = live.delivered.load(Ordering::Relaxed);
        if now >= expected || Instant::now() >= deadline {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    live.stop.store(true, Ordering::Release);
}

/// Builds the report from the publishers' counts and the subscribers' trackers (every
/// subscriber is owed every publisher's messages).
pub fn report(
    system: &str,
    load: &Load,
    base: Instant,
    sent_by: &[u64],
    publish_elapsed: Duration,
    trackers: &[Tracker],
) -> anyhow::Result<Report> {
    let sent: u64 = sent_by.iter().sum();
    let expected = sent * trackers.len() as u64;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut delivered, mut duplicated, mut lost) = (0, 0, 0);
    let mut last = base;
    for t in trackers {
        delivered += t.delivered;
        duplicated += t.duplicated;
        for (p, &owed) in sent_by.iter().enumerate() {
            lost += owed.saturating_sub(t.unique(p));
        }
        hist.add(&t.hist)?;
        if let Some(l) = t.last {
            last = last.max(l);
        }
    }
    let span = last.duration_since(base).max(publish_elapsed).as_secs_f64();
    Ok(Report {
        scenario: "pubsub",
        system: system.to_string(),
        rate_target: load.rate,
        duration_s: load.duration,
        payload_bytes: load.payload,
        publishers: load.publishers,
        subscribers: load.subscribers,
        sent,
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
    })
}

/// Prints the report and writes it to `--json`.
pub fn emit(report: &Report, load: &Load) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    println!("{text}");
    if let Some(p) = &load.json {
        std::fs::write(p, &text)?;
    }
    Ok(())
}
