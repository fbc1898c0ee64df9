//! The connecting side's writer (client → node, node → bridge): QoS 1 custody
//! until acknowledged, and retransmission on a timer and after a reconnect. (A dead peer is
//! detected by QUIC itself: `transport.link_keep_alive_ms` / `link_idle_timeout_ms`.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::SendStream;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Batch, Outbound, SessionError, WriterConfig, WRITE_BATCH};
use crate::metrics::Metrics;
use crate::wire::{MessageId, PubAck};

/// One QoS 1 publish awaiting its acknowledgement.
#[derive(Debug)]
struct Unacked {
    seq: u64,
    frame: Bytes,
    due: Instant,
    attempts: u32,
}

/// Timer-driven retransmissions of one publish before it is given up (counted as
/// `macula_messages_dropped_total{reason="retries_exhausted"}`). Resends after a
/// reconnect do not count: a bridge restart never makes a node give up.
pub const MAX_RETRANSMITS: u32 = 20;

/// State of a reliable writer (client → node, node → bridge). It outlives a
/// connection: after a reconnect every unacknowledged publish is written again, in
/// the order it was first sent.
pub struct ReliableState {
    unacked: HashMap<MessageId, Unacked>,
    next_seq: u64,
    /// Most unacknowledged publishes at once (the peer's `max_inflight`).
    pub window: usize,
    /// Retransmit a publish not acknowledged after this long.
    pub ack_timeout: Duration,
    /// After a (re)connect, the peer's interest table may still be filling up: a
    /// `no_route` answer within this window is retried, not final.
    pub settle: Duration,
    session_started: Instant,
    /// Publishes settled so far (monotonic): acknowledged, answered `no_route` after
    /// the settle window, or given up after [`MAX_RETRANSMITS`].
    pub acked: Arc<AtomicU64>,
    /// Woken whenever publishes are acknowledged.
    pub acked_notify: Arc<Notify>,
    metrics: Arc<Metrics>,
}

/// How soon a `no_route` answer inside the settle window is retried.
pub const NO_ROUTE_RETRY: Duration = Duration::from_millis(200);
/// How often a reliable writer looks for publishes due for retransmission.
pub const RETRANSMIT_TICK: Duration = Duration::from_millis(100);

impl ReliableState {
    /// Fresh state with the given window and timeouts.
    pub fn new(
        window: usize,
        ack_timeout: Duration,
        settle: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        ReliableState {
            unacked: HashMap::new(),
            next_seq: 0,
            window: window.max(1),
            ack_timeout,
            settle,
            session_started: Instant::now(),
            acked: Arc::new(AtomicU64::new(0)),
            acked_notify: Arc::new(Notify::new()),
            metrics,
        }
    }

    /// Publishes awaiting acknowledgement.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    fn on_puback(&mut self, ack: PubAck, now: Instant) {
        let mut done = 0u64;
        for id in ack.ids {
            if self.unacked.remove(&id).is_some() {
                done += 1;
            }
        }
        let settling = now.duration_since(self.session_started) < self.settle;
        for id in ack.no_route {
            if settling {
                if let Some(u) = self.unacked.get_mut(&id) {
                    u.due = now + NO_ROUTE_RETRY;
                }
            } else if self.unacked.remove(&id).is_some() {
                self.metrics.dropped("no_route");
                done += 1;
            }
        }
        if done > 0 {
            self.metrics.inflight_messages.sub(done as i64);
            self.acked.fetch_add(done, Ordering::Release);
            self.acked_notify.notify_waiters();
        }
    }

    fn take_custody(&mut self, id: MessageId, frame: Bytes, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let due = now + self.ack_timeout;
        if self
            .unacked
            .insert(
                id,
                Unacked {
                    seq,
                    frame,
                    due,
                    attempts: 0,
                },
            )
            .is_none()
        {
            self.metrics.inflight_messages.inc();
        }
    }

    fn due_frames(&mut self, now: Instant, all: bool) -> Vec<Bytes> {
        if !all {
            let before = self.unacked.len();
            self.unacked
                .retain(|_, u| u.due > now || u.attempts < MAX_RETRANSMITS);
            let given_up = (before - self.unacked.len()) as u64;
            if given_up > 0 {
                self.metrics.dropped_n("retries_exhausted", given_up);
                self.metrics.inflight_messages.sub(given_up as i64);
                self.acked.fetch_add(given_up, Ordering::Release);
                self.acked_notify.notify_waiters();
            }
        }
        let mut due: Vec<(u64, Bytes)> = self
            .unacked
            .values_mut()
            .filter(|u| all || u.due <= now)
            .map(|u| {
                if !all {
                    u.attempts += 1;
                }
                u.due = now + Duration::max(self.ack_timeout, NO_ROUTE_RETRY);
                (u.seq, u.frame.clone())
            })
            .collect();
        due.sort_unstable_by_key(|(s, _)| *s);
        due.into_iter().map(|(_, f)| f).collect()
    }
}

/// The receiving ends a reliable writer drains; they outlive one connection.
pub struct ReliableQueues {
    /// Control items (interest frames, acknowledgements owed to the peer).
    pub ctrl: mpsc::Receiver<Outbound>,
    /// Publishes.
    pub data: mpsc::Receiver<Outbound>,
    /// `PUBACK`s the reader received for our publishes.
    pub acks: mpsc::Receiver<PubAck>,
}

/// Writer for the connecting side (client → node, node → bridge), which keeps
/// custody of QoS 1 publishes until acknowledged. `queues.acks` carries the `PUBACK`
/// frames the reader received. Returns when cancelled, when the queues close, or
/// on a write error; `state` survives for the next session.
pub async fn run_reliable_writer(
    send: &mut SendStream,
    state: &mut ReliableState,
    queues: &mut ReliableQueues,
    cancel: &CancellationToken,
    cfg: &WriterConfig,
) -> Result<(), SessionError> {
    let mut batch = Batch::new();
    state.session_started = Instant::now();
    let resend = state.due_frames(Instant::now(), true);
    if !resend.is_empty() {
        state
            .metrics
            .qos1_retransmissions_total
            .inc_by(resend.len() as u64);
        for f in resend {
            batch.push_frame(f, &cfg.metrics);
        }
        batch.write(send, cfg.write_timeout).await?;
    }
    let mut tick = tokio::time::interval(RETRANSMIT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut items = Vec::with_capacity(WRITE_BATCH);
    loop {
        let room = state
            .window
            .saturating_sub(state.unacked.len())
            .min(WRITE_BATCH);
        let now_closing = tokio::select! {
            biased;
            _ = cancel.cancelled() => true,
            Some(ack) = queues.acks.recv() => {
                let now = Instant::now();
                state.on_puback(ack, now);
                while let Ok(ack) = queues.acks.try_recv() {
                    state.on_puback(ack, now);
                }
                false
            }
            i = queues.ctrl.recv() => match i { Some(i) => { items.push(i); false } None => true },
            i = queues.data.recv(), if room > 0 => match i { Some(i) => { items.push(i); false } None => true },
            _ = tick.tick() => {
                let due = state.due_frames(Instant::now(), false);
                if !due.is_empty() {
                    state.metrics.qos1_retransmissions_total.inc_by(due.len() as u64);
                    for f in due {
                        batch.push_frame(f, &cfg.metrics);
                    }
                }
                false
            }
        };
        if now_closing {
            return Ok(());
        }
        let now = Instant::now();
        while let Ok(i) = queues.ctrl.try_recv() {
            items.push(i);
        }
        let mut room = state.window.saturating_sub(state.unacked.len());
        for item in items.drain(..) {
            match item {
                Outbound::Frame(f) | Outbound::Tracked(f, _) => batch.push_frame(f, &cfg.metrics),
                Outbound::Custody(id, f) => {
                    room = room.saturating_sub(1);
                    state.take_custody(id, f.clone(), now);
                    batch.push_frame(f, &cfg.metrics);
                }
                Outbound::Ack(id) => batch.acks.push(id),
                Outbound::NoRoute(id) => batch.no_route.push(id),
            }
        }
        while room > 0 && batch.frames < WRITE_BATCH {
            match queues.data.try_recv() {
                Ok(Outbound::Custody(id, f)) => {
                    room -= 1;
                    state.take_custody(id, f.clone(), now);
                    batch.push_frame(f, &cfg.metrics);
                }
                Ok(Outbound::Frame(f)) | Ok(Outbound::Tracked(f, _)) => {
                    batch.push_frame(f, &cfg.metrics)
                }
                Ok(Outbound::Ack(id)) => batch.acks.push(id),
                Ok(Outbound::NoRoute(id)) => batch.no_route.push(id),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            batch.seal(&cfg.metrics);
            batch.write(send, cfg.write_timeout).await?;
        }
    }
}
