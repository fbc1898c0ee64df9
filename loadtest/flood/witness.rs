//! What a well-behaved user sees during `macula-loadtest flood`: the *witness*, one client that
//! publishes QoS 1 messages on a topic it subscribes to, at a fixed rate, and times each one
//! from publish to delivery back to it; and the *newcomers*, a fresh client connecting (and
//! closing again) at a fixed interval, which shows whether a new user still gets in.
//!
//! Both record per phase (baseline, flood, recovery): a message or a connect belongs to the
//! phase in which it started.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use macula::client::{Client, ClientOptions};
use macula::wire::Qos;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// The topic the witness publishes on and subscribes to.
const TOPIC: &str = "flood.witness";

/// Longest wait for a newcomer's connect (QUIC + TLS + `connect`/`connected`).
const NEWCOMER_TIMEOUT: Duration = Duration::from_secs(3);

/// What the witness saw in one phase.
#[derive(Serialize, Debug, Default)]
pub struct WitnessPhase {
    /// Messages published (QoS 1).
    pub sent: u64,
    /// Messages delivered back.
    pub delivered: u64,
    /// Messages not delivered by the end of the run.
    pub lost: u64,
    /// Publishes that failed.
    pub errors: u64,
    /// Publish → delivery, µs.
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// What the newcomers saw in one phase.
#[derive(Serialize, Debug, Default)]
pub struct NewcomerPhase {
    /// Connects started.
    pub tried: u64,
    /// Connects that completed the `connect` handshake.
    pub ok: u64,
    /// Connects refused, timed out (after 3 s) or failed otherwise.
    pub failed: u64,
    /// Connect time of the successful ones, ms.
    pub p50_ms: f64,
    pub max_ms: f64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// The running witness.
pub struct Witness {
    client: Client,
    acc: Arc<Mutex<Acc>>,
    stop_publishing: CancellationToken,
    stop_receiving: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

/// The running newcomer probes.
pub struct Newcomers {
    phases: Arc<Mutex<Vec<NewcomerAcc>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Witness {
    /// Connects the witness to `opts.addr`, subscribes, and starts publishing `rate` messages
    /// per second into phase 0 of `phases`.
    pub async fn start(
        opts: ClientOptions,
        rate: u32,
        phase: Arc<AtomicUsize>,
        phases: usize,
    ) -> Result<Witness> {
        let client = Client::connect(opts).await.context("witness connect")?;
        let mut sub = client.subscribe(TOPIC).await.context("witness subscribe")?;
        let acc = Arc::new(Mutex::new(Acc::new(phases)));
        let stop_publishing = CancellationToken::new();
        let stop_receiving = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let (a, stop) = (acc.clone(), stop_receiving.clone());
        tasks.spawn(async move {
            loop {
                let m = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = sub.recv() => match m { Some(m) => m, None => break },
                };
                let Some(seq) = m.payload.get(..8).and_then(|b| b.try_into().ok()) else {
                    continue;
                };
                lock(&a).delivered(u64::from_be_bytes(seq));
            }
        });
        let (c, a, stop, ph) = (client.clone(), acc.clone(), stop_publishing.clone(), phase);
        let every = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut seq = 0u64;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                seq += 1;
                let p = ph.load(Ordering::Relaxed);
                lock(&a).sent(seq, p);
                let payload = bytes::Bytes::copy_from_slice(&seq.to_be_bytes());
                if c.publish(TOPIC, payload, Qos::AtLeastOnce).await.is_err() {
                    lock(&a).failed(seq, p);
                }
            }
        });
        Ok(Witness {
            client,
            acc,
            stop_publishing,
            stop_receiving,
            tasks,
        })
    }

    /// Stops publishing, waits at most `grace` for the messages still on their way, closes
    /// the client and returns each phase's figures and the witness's reconnects (0: its
    /// session never broke).
    pub async fn finish(mut self, grace: Duration) -> (Vec<WitnessPhase>, u64) {
        self.stop_publishing.cancel();
        let until = Instant::now() + grace;
        while Instant::now() < until && !lock(&self.acc).pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop_receiving.cancel();
        while self.tasks.join_next().await.is_some() {}
        let reconnects = self.client.stats().reconnects;
        self.client.close().await;
        let acc = std::mem::replace(&mut *lock(&self.acc), Acc::new(0));
        (acc.report(), reconnects)
    }
}

impl Newcomers {
    /// Every `every`, connects one more client with `opts` (no reconnect), records the
    /// outcome in the current `phase`, and closes it again.
    pub fn start(
        opts: ClientOptions,
        every: Duration,
        phase: Arc<AtomicUsize>,
        phases: usize,
    ) -> Newcomers {
        let acc = Arc::new(Mutex::new(
            (0..phases).map(|_| NewcomerAcc::new()).collect::<Vec<_>>(),
        ));
        let stop = CancellationToken::new();
        let (a, s) = (acc.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut probes = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = s.cancelled() => break,
                    _ = tick.tick() => {}
                    // Reap finished probes as they end (the set stays small).
                    Some(_) = probes.join_next(), if !probes.is_empty() => continue,
                }
                let p = phase.load(Ordering::Relaxed);
                let (o, a) = (opts.clone(), a.clone());
                probes.spawn(async move {
                    let started = Instant::now();
                    let r = tokio::time::timeout(NEWCOMER_TIMEOUT, Client::connect(o)).await;
                    let took = started.elapsed();
                    let outcome = match r {
                        Ok(Ok(c)) => {
                            c.close().await;
                            Ok(took)
                        }
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no answer within {NEWCOMER_TIMEOUT:?}")),
                    };
                    if let Some(ph) = lock(&a).get_mut(p) {
                        ph.record(outcome);
                    }
                });
            }
            while probes.join_next().await.is_some() {}
        });
        Newcomers {
            phases: acc,
            stop,
            task,
        }
    }

    /// Stops the probes (waiting for those under way) and returns each phase's figures.
    pub async fn finish(self) -> Vec<NewcomerPhase> {
        self.stop.cancel();
        let _ = self.task.await;
        let phases = std::mem::take(&mut *lock(&self.phases));
        phases.into_iter().map(NewcomerAcc::report).collect()
    }
}

/// The witness's counts: messages on their way (sequence number → sent at, phase) and each
/// phase's histogram and counters.
struct Acc {
    pending: HashMap<u64, (Instant, usize)>,
    phases: Vec<(Histogram<u64>, WitnessPhase)>,
}

impl Acc {
    fn new(phases: usize) -> Acc {
        Acc {
            pending: HashMap::new(),
            phases: (0..phases)
                .map(|_| (histogram(), WitnessPhase::default()))
                .collect(),
        }
    }

    fn sent(&mut self, seq: u64, phase: usize) {
        self.pending.insert(seq, (Instant::now(), phase));
        if let Some((_, p)) = self.phases.get_mut(phase) {
            p.sent += 1;
        }
    }

    fn failed(&mut self, seq: u64, phase: usize) {
        self.pending.remove(&seq);
        if let Some((_, p)) = self.phases.get_mut(phase) {
            p.errors += 1;
        }
    }

    fn delivered(&mut self, seq: u64) {
        let Some((at, phase)) = self.pending.remove(&seq) else {
            return; // a duplicate, or one already given up on
        };
        if let Some((h, p)) = self.phases.get_mut(phase) {
            p.delivered += 1;
            h.saturating_record(at.elapsed().as_micros() as u64);
        }
    }

    fn report(mut self) -> Vec<WitnessPhase> {
        for (_, (_, phase)) in self.pending.drain() {
            if let Some((_, p)) = self.phases.get_mut(phase) {
                p.lost += 1;
            }
        }
        self.phases
            .into_iter()
            .map(|(h, mut p)| {
                if !h.is_empty() {
                    p.p50_us = h.value_at_quantile(0.5);
                    p.p99_us = h.value_at_quantile(0.99);
                    p.max_us = h.max();
                }
                p
            })
            .collect()
    }
}

struct NewcomerAcc {
    hist: Histogram<u64>,
    report: NewcomerPhase,
}

impl NewcomerAcc {
    fn new() -> NewcomerAcc {
        NewcomerAcc {
            hist: histogram(),
            report: NewcomerPhase::default(),
        }
    }

    fn record(&mut self, outcome: Result<Duration, String>) {
        self.report.tried += 1;
        match outcome {
            Ok(took) => {
                self.report.ok += 1;
                self.hist.saturating_record(took.as_micros() as u64);
            }
            Err(e) => {
                self.report.failed += 1;
                self.report.first_error.get_or_insert(e);
            }
        }
    }

    fn report(self) -> NewcomerPhase {
        let mut r = self.report;
        if !self.hist.is_empty() {
            r.p50_ms = self.hist.value_at_quantile(0.5) as f64 / 1e3;
            r.max_ms = self.hist.max() as f64 / 1e3;
        }
        r
    }
}

/// A histogram of µs from 1 µs to 60 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
