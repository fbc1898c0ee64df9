//! Offering a frame to a peer's bounded data queue: QoS 0 back-pressure with a per-publish
//! stall budget and per-consumer shedding, QoS 1 with the slow-consumer timeout
//! (`docs/ARCHITECTURE.md`, "Full queues").

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{close_slow_consumer, Outbound, PeerTx};
use crate::metrics::Metrics;

/// Outcome of offering a frame to a peer's data queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued.
    Queued,
    /// QoS 0 and the queue stayed full (past `qos0_stall`, or at once while the peer is
    /// shedding): dropped for this peer only.
    QueueFull,
    /// QoS 1 and the queue stayed full past the slow-consumer timeout: the peer
    /// was disconnected.
    SlowConsumer,
    /// The peer is gone.
    Closed,
    /// The frame exceeds what the peer accepts.
    TooLarge,
}

impl PeerTx {
    /// Offers `item` to the data queue. When it is full:
    /// - QoS 0 waits for room within what is left of this publish's `budget`
    ///   ([`offer_best_effort`]);
    /// - QoS 1 waits up to `slow_timeout`, then closes the peer as a slow consumer
    ///   ([`close_slow_consumer`], counted in `metrics`).
    pub async fn offer(
        &self,
        item: Outbound,
        reliable: bool,
        slow_timeout: Duration,
        budget: &mut StallBudget,
        metrics: &Metrics,
    ) -> Offer {
        if !reliable {
            return offer_best_effort(&self.data, item, budget, &self.shedding, metrics).await;
        }
        match self.data.try_send(item) {
            Ok(()) => Offer::Queued,
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Closed,
            Err(mpsc::error::TrySendError::Full(item)) => {
                match tokio::time::timeout(slow_timeout, self.data.send(item)).await {
                    Ok(Ok(())) => Offer::Queued,
                    Ok(Err(_)) => Offer::Closed,
                    Err(_) => {
                        close_slow_consumer(&self.conn, metrics, "outbound queue full");
                        Offer::SlowConsumer
                    }
                }
            }
        }
    }
}

/// How long one publish may still wait, in total over all its consumers, for room in full
/// outbound queues (`limits.qos0_stall_ms`). Made per publish; the clock is read only when a
/// queue is found full, so the common path costs nothing.
#[derive(Debug, Clone, Copy)]
pub struct StallBudget {
    stall: Duration,
    until: Option<tokio::time::Instant>,
}

impl StallBudget {
    /// A whole budget of `stall` (zero: never wait).
    pub fn new(stall: Duration) -> Self {
        StallBudget { stall, until: None }
    }

    /// Whether waiting is configured at all.
    fn enabled(&self) -> bool {
        !self.stall.is_zero()
    }

    /// The deadline of this publish's waiting, fixed the first time a queue is found full.
    fn deadline(&mut self) -> tokio::time::Instant {
        *self
            .until
            .get_or_insert_with(|| tokio::time::Instant::now() + self.stall)
    }
}

/// Offers a QoS 0 `item` to the bounded queue `data` of one consumer. When it is full, waits
/// for room until `budget`'s deadline (`limits.qos0_stall_ms` after the first full queue this
/// publish met), so consumers that keep up slow the publisher (whose read loop stops, and QUIC
/// flow control reaches its sender) rather than losing messages, and one publish stalls at
/// most `qos0_stall_ms` however many of its consumers are full. A queue still full at the
/// deadline sets `shedding` (counted in `macula_slow_consumer_sheds_total`): from then on,
/// offers that find it full are dropped at once ([`Offer::QueueFull`]) until the queue has
/// drained to half. So a slow consumer loses only its own messages and costs a publisher at
/// most one stall per half queue it drains (`defaults::QOS0_STALL_MS`). A zero budget drops at
/// once.
pub async fn offer_best_effort(
    data: &mpsc::Sender<Outbound>,
    item: Outbound,
    budget: &mut StallBudget,
    shedding: &AtomicBool,
    metrics: &Metrics,
) -> Offer {
    match data.try_send(item) {
        Ok(()) => {
            if shedding.load(Ordering::Relaxed) && data.capacity() * 2 >= data.max_capacity() {
                shedding.store(false, Ordering::Relaxed);
            }
            Offer::Queued
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Offer::Closed,
        Err(mpsc::error::TrySendError::Full(item)) => {
            if !budget.enabled() || shedding.load(Ordering::Relaxed) {
                return Offer::QueueFull;
            }
            metrics.publish_stalls_total.inc();
            match tokio::time::timeout_at(budget.deadline(), data.send(item)).await {
                Ok(Ok(())) => Offer::Queued,
                Ok(Err(_)) => Offer::Closed,
                Err(_) => {
                    if !shedding.swap(true, Ordering::Relaxed) {
                        metrics.slow_consumer_sheds_total.inc();
                    }
                    Offer::QueueFull
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(n: u8) -> Outbound {
        Outbound::Frame(Bytes::from(vec![n]))
    }

    /// A consumer that drains within the stall: the QoS 0 offer waits and is queued, nothing
    /// is lost, and the stall is counted.
    #[tokio::test(start_paused = true)]
    async fn a_qos0_offer_waits_for_a_consumer_that_keeps_up() {
        let m = Metrics::new();
        let (tx, mut rx) = mpsc::channel(2);
        let shedding = AtomicBool::new(false);
        let stall = Duration::from_millis(50);
        for i in 0..2 {
            assert_eq!(
                offer_best_effort(&tx, frame(i), &mut StallBudget::new(stall), &shedding, &m).await,
                Offer::Queued
            );
        }
        let drain = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            rx.recv().await.unwrap();
            rx
        });
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            offer_best_effort(&tx, frame(2), &mut StallBudget::new(stall), &shedding, &m).await,
            Offer::Queued
        );
        assert_eq!(t0.elapsed(), Duration::from_millis(10));
        assert_eq!(m.publish_stalls_total.get(), 1);
        assert_eq!(m.slow_consumer_sheds_total.get(), 0);
        assert!(!shedding.load(Ordering::Relaxed));
        drop(drain.await.unwrap());
    }

    /// A consumer that stays full: one stall, then it sheds at once (no more waiting) until it
    /// has drained to half, and then it is waited for again.
    #[tokio::test(start_paused = true)]
    async fn a_stuck_consumer_sheds_its_own_qos0_until_it_drains_to_half() {
        let m = Metrics::new();
        let (tx, mut rx) = mpsc::channel(4);
        let shedding = AtomicBool::new(false);
        let stall = Duration::from_millis(50);
        for i in 0..4 {
            offer_best_effort(&tx, frame(i), &mut StallBudget::new(stall), &shedding, &m).await;
        }
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            offer_best_effort(&tx, frame(4), &mut StallBudget::new(stall), &shedding, &m).await,
            Offer::QueueFull
        );
        assert_eq!(t0.elapsed(), stall);
        assert!(shedding.load(Ordering::Relaxed));
        assert_eq!(m.slow_consumer_sheds_total.get(), 1);
        // Shedding: dropped without waiting.
        let t1 = tokio::time::Instant::now();
        for i in 5..10 {
            assert_eq!(
                offer_best_effort(&tx, frame(i), &mut StallBudget::new(stall), &shedding, &m).await,
                Offer::QueueFull
            );
        }
        assert_eq!(t1.elapsed(), Duration::ZERO);
        assert_eq!(m.publish_stalls_total.get(), 1);
        // One slot free: accepted, still shedding (less than half free).
        rx.recv().await.unwrap();
        assert_eq!(
            offer_best_effort(&tx, frame(10), &mut StallBudget::new(stall), &shedding, &m).await,
            Offer::Queued
        );
        assert!(shedding.load(Ordering::Relaxed));
        // Drained to half: the next offer ends the shedding.
        for _ in 0..3 {
            rx.recv().await.unwrap();
        }
        assert_eq!(
            offer_best_effort(&tx, frame(11), &mut StallBudget::new(stall), &shedding, &m).await,
            Offer::Queued
        );
        assert!(!shedding.load(Ordering::Relaxed));
        assert_eq!(m.slow_consumer_sheds_total.get(), 1);
    }

    /// A zero stall drops at once, as before issue 13.
    #[tokio::test(start_paused = true)]
    async fn a_zero_stall_drops_at_once() {
        let m = Metrics::new();
        let (tx, _rx) = mpsc::channel(1);
        let shedding = AtomicBool::new(false);
        offer_best_effort(
            &tx,
            frame(0),
            &mut StallBudget::new(Duration::ZERO),
            &shedding,
            &m,
        )
        .await;
        assert_eq!(
            offer_best_effort(
                &tx,
                frame(1),
                &mut StallBudget::new(Duration::ZERO),
                &shedding,
                &m
            )
            .await,
            Offer::QueueFull
        );
        assert_eq!(m.publish_stalls_total.get(), 0);
    }

    /// One publish, two stuck consumers: the publish waits once, for the budget in total (not
    /// per consumer), and both consumers then shed.
    #[tokio::test(start_paused = true)]
    async fn one_publish_stalls_at_most_its_budget_over_all_consumers() {
        let m = Metrics::new();
        let stall = Duration::from_millis(50);
        let (a, _ra) = mpsc::channel(1);
        let (b, _rb) = mpsc::channel(1);
        let (sa, sb) = (AtomicBool::new(false), AtomicBool::new(false));
        for (q, sh) in [(&a, &sa), (&b, &sb)] {
            let mut whole = StallBudget::new(stall);
            offer_best_effort(q, frame(0), &mut whole, sh, &m).await;
        }
        let mut budget = StallBudget::new(stall);
        let t0 = tokio::time::Instant::now();
        for (q, sh) in [(&a, &sa), (&b, &sb)] {
            assert_eq!(
                offer_best_effort(q, frame(1), &mut budget, sh, &m).await,
                Offer::QueueFull
            );
        }
        assert_eq!(t0.elapsed(), stall, "one stall in total");
        assert!(sa.load(Ordering::Relaxed) && sb.load(Ordering::Relaxed));
        assert_eq!(m.slow_consumer_sheds_total.get(), 2);
    }
}
