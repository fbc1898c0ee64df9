//! The `publish` flood: clients that publish QoS 0 messages as fast as they can (issue 12:
//! "a client publishing flat out cannot raise another client's p99 on the same node beyond a
//! documented factor"). Each of `--concurrency` publishers connects once and publishes
//! 128-byte messages on `flood.pub.<i>` until the flood's time is up; one sink client
//! subscribed to `flood.pub.**` takes every delivery, so the node pays for routing and
//! delivery as with a real subscriber.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::BytesMut;
use macula::client::{Client, ClientOptions};
use macula::wire::Qos;
use serde::Serialize;
use tokio::time::Instant;

/// Bytes of each flood message.
const PAYLOAD: usize = 128;

/// Messages between two yields of a publisher (so a sink on the same runtime gets turns).
const BATCH: u64 = 256;

/// What the publishers did.
#[derive(Serialize, Debug, Default)]
pub struct PublishReport {
    /// Publisher connections.
    pub publishers: usize,
    /// Seconds from the first publish to the end of the last.
    pub secs: f64,
    /// Messages the publishers wrote.
    pub sent: u64,
    /// Those per second.
    pub sent_per_s: f64,
    /// Messages the sink received.
    pub delivered: u64,
    /// Those per second.
    pub delivered_per_s: f64,
    /// Publishers whose session failed (its error is in `errors`).
    pub failed: usize,
    /// Up to five distinct errors, for the curious.
    pub errors: Vec<String>,
}

/// Runs `publishers` flat-out publishers and the sink, with client options `opts`, until
/// `until`. Errors: only when the sink cannot connect or subscribe.
pub async fn run(opts: ClientOptions, publishers: usize, until: Instant) -> Result<PublishReport> {
    let sink = Client::connect(opts.clone())
        .await
        .context("connect the flood's sink")?;
    let mut sub = sink
        .subscribe("flood.pub.**")
        .await
        .context("subscribe the flood's sink")?;
    let delivered = Arc::new(AtomicU64::new(0));
    let d = delivered.clone();
    let drain = tokio::spawn(async move {
        while let Ok(Some(_)) = tokio::time::timeout_at(until, sub.recv()).await {
            d.fetch_add(1, Ordering::Relaxed);
        }
    });
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..publishers {
        let o = opts.clone();
        tasks.spawn(async move { publish(o, format!("flood.pub.{i}"), until).await });
    }
    let mut report = PublishReport {
        publishers,
        ..Default::default()
    };
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(n)) => report.sent += n,
            Ok(Err((n, e))) => {
                report.sent += n;
                report.failed += 1;
                if report.errors.len() < 5 && !report.errors.contains(&e) {
                    report.errors.push(e);
                }
            }
            Err(e) => report.errors.push(format!("publisher task: {e}")),
        }
    }
    report.secs = started.elapsed().as_secs_f64();
    let _ = drain.await;
    sink.close().await;
    report.delivered = delivered.load(Ordering::Relaxed);
    report.sent_per_s = report.sent as f64 / report.secs.max(1e-9);
    report.delivered_per_s = report.delivered as f64 / report.secs.max(1e-9);
    Ok(report)
}

/// One publisher: connects, then publishes until `until` (a publish held back by the node's
/// flow control is cut there); the messages written, and the error that ended it early if
/// any.
async fn publish(opts: ClientOptions, topic: String, until: Instant) -> Result<u64, (u64, String)> {
    let c = Client::connect(opts)
        .await
        .map_err(|e| (0, format!("connect: {e}")))?;
    let mut arena = BytesMut::with_capacity(256 * 1024);
    let body = [0x5au8; PAYLOAD];
    let mut sent = 0u64;
    let flat_out = async {
        loop {
            for _ in 0..BATCH {
                c.publish_buf(&mut arena, &topic, &body, Qos::AtMostOnce)
                    .await
                    .map_err(|e| format!("publish: {e}"))?;
                sent += 1;
            }
            tokio::task::yield_now().await;
        }
    };
    let end: Result<(), String> = match tokio::time::timeout_at(until, flat_out).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    };
    c.close().await;
    end.map(|()| sent).map_err(|e| (sent, e))
}
