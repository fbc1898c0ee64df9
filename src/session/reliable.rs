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
use crate::wire::{Frame, MessageId, Ping, PubAck};

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
    /// QoS 0 publishes written in sessions that ended before the peer confirmed reading them
    /// (monotonic; [`Qos0Ledger`]): they may have been lost with the connection.
    pub qos0_unconfirmed: Arc<AtomicU64>,
    q0: Qos0Ledger,
    metrics: Arc<Metrics>,
}

/// What the peer confirmed of the QoS 0 publishes written in one session.
///
/// QoS 0 has no acknowledgement (`docs/PROTOCOL.md` §8), and what QUIC had accepted but not
/// delivered when a connection dies is lost without a trace per frame. So the writer
/// confirms them in bulk: each [`RETRANSMIT_TICK`] in which QoS 0 publishes were written it
/// sends a `PING` whose `correlation_id` marks how many ([`Qos0Ledger::ping`]); the stream is
/// ordered, so the peer's `PONG` ([`Qos0Ledger::on_pong`]) confirms every publish written
/// before that `PING` was read. When the session ends, those written after the last
/// confirmed mark are counted as unconfirmed ([`Qos0Ledger::end`]): an upper bound of what
/// was lost, at most one tick plus a round trip of traffic above the truth.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Qos0Ledger {
    /// The session's number (tags its marks, so a late `PONG` of an earlier session is
    /// ignored).
    session: u64,
    /// QoS 0 publishes written this session.
    written: u64,
    /// The largest mark the peer confirmed.
    confirmed: u64,
    /// The last mark sent in a `PING`.
    pinged: u64,
}

/// Bits of a `PING`'s `correlation_id` that carry the mark; the ones above carry the session.
const MARK_BITS: u32 = 40;
const MARK_MASK: u64 = (1 << MARK_BITS) - 1;

impl Qos0Ledger {
    /// Starts a new session: nothing written, nothing confirmed.
    pub fn begin(&mut self) {
        *self = Qos0Ledger {
            session: self.session.wrapping_add(1),
            ..Qos0Ledger::default()
        };
    }

    /// One QoS 0 publish was written.
    pub fn written(&mut self) {
        self.written += 1;
    }

    /// The `PING` correlation id that asks the peer to confirm what was written so far, or
    /// `None` when nothing new was written since the last one.
    pub fn ping(&mut self) -> Option<u64> {
        if self.written == self.pinged {
            return None;
        }
        self.pinged = self.written;
        Some((self.session << MARK_BITS) | (self.written & MARK_MASK))
    }

    /// The peer answered a `PING` with `correlation_id`: what was written before it arrived.
    /// A `PONG` of another session, or to a `PING` this writer did not send, changes nothing.
    pub fn on_pong(&mut self, correlation_id: u64) {
        let (session, mark) = (correlation_id >> MARK_BITS, correlation_id & MARK_MASK);
        if session == self.session & (u64::MAX >> MARK_BITS) && mark <= self.pinged {
            self.confirmed = self.confirmed.max(mark);
        }
    }

    /// Ends the session: how many of its QoS 0 publishes the peer never confirmed.
    pub fn end(&mut self) -> u64 {
        let unconfirmed = self.written - self.confirmed.min(self.written);
        self.written = self.confirmed;
        unconfirmed
    }
}

/// What a reliable link's reader hands its writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    /// The peer acknowledged QoS 1 publishes.
    PubAck(PubAck),
    /// The peer answered a `PING` (its correlation id): QoS 0 written before it arrived.
    Pong(u64),
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
            qos0_unconfirmed: Arc::new(AtomicU64::new(0)),
            q0: Qos0Ledger::default(),
            metrics,
        }
    }

    /// Ends the current session's QoS 0 accounting once its reader has ended: the `PUBACK`s
    /// and `PONG`s it passed on and the writer did not take yet are applied, then what the
    /// session wrote and the peer did not confirm is added to
    /// [`ReliableState::qos0_unconfirmed`]; returns that number.
    pub fn end_session(&mut self, queues: &mut ReliableQueues) -> u64 {
        let now = Instant::now();
        while let Ok(c) = queues.acks.try_recv() {
            self.on_confirm(c, now);
        }
        let n = self.q0.end();
        if n > 0 {
            self.qos0_unconfirmed.fetch_add(n, Ordering::Relaxed);
            self.metrics.dropped_n("session_lost", n);
        }
        n
    }

    /// Counts `n` QoS 0 publishes that were never written (queued when their link closed
    /// for good) in [`ReliableState::qos0_unconfirmed`].
    pub fn never_sent(&self, n: u64) {
        self.qos0_unconfirmed.fetch_add(n, Ordering::Relaxed);
    }

    fn on_confirm(&mut self, c: Confirm, now: Instant) {
        match c {
            Confirm::PubAck(a) => self.on_puback(a, now),
            Confirm::Pong(corr) => self.q0.on_pong(corr),
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
    /// `PUBACK`s and `PONG`s the reader received.
    pub acks: mpsc::Receiver<Confirm>,
}

/// Writer for the connecting side (client → node, node → bridge), which keeps
/// custody of QoS 1 publishes until acknowledged. `queues.acks` carries the `PUBACK` and
/// `PONG` frames the reader received. QoS 0 publishes (the data queue's plain frames) are
/// confirmed in bulk by a `PING` each tick in which some were written ([`Qos0Ledger`]); the
/// caller ends the session's account with [`ReliableState::end_session`]. Returns when
/// cancelled, when the queues close, or on a write error; `state` survives for the next
/// session.
pub async fn run_reliable_writer(
    send: &mut SendStream,
    state: &mut ReliableState,
    queues: &mut ReliableQueues,
    cancel: &CancellationToken,
    cfg: &WriterConfig,
) -> Result<(), SessionError> {
    let mut batch = Batch::new();
    state.session_started = Instant::now();
    state.q0.begin();
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
                state.on_confirm(ack, now);
                while let Ok(ack) = queues.acks.try_recv() {
                    state.on_confirm(ack, now);
                }
                false
            }
            i = queues.ctrl.recv() => match i { Some(i) => { items.push(i); false } None => true },
            i = queues.data.recv(), if room > 0 => match i {
                Some(i) => {
                    if matches!(i, Outbound::Frame(_)) {
                        state.q0.written();
                    }
                    items.push(i);
                    false
                }
                None => true,
            },
            _ = tick.tick() => {
                if let Some(corr) = state.q0.ping() {
                    let ping = Frame::Ping(Ping { correlation_id: corr });
                    batch.push_frame(ping.to_bytes(), &cfg.metrics);
                }
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
                Ok(Outbound::Frame(f)) => {
                    state.q0.written();
                    batch.push_frame(f, &cfg.metrics)
                }
                Ok(Outbound::Tracked(f, _)) => batch.push_frame(f, &cfg.metrics),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` QoS 0 publishes written.
    fn write(l: &mut Qos0Ledger, n: u32) {
        for _ in 0..n {
            l.written();
        }
    }

    /// A `PONG` confirms what was written before its `PING`, not what came after.
    #[test]
    fn a_pong_confirms_what_its_ping_followed() {
        let mut l = Qos0Ledger::default();
        l.begin();
        assert_eq!(l.ping(), None, "nothing written, nothing to confirm");
        write(&mut l, 5);
        let first = l.ping().expect("5 to confirm");
        assert_eq!(l.ping(), None, "one ping per new mark");
        write(&mut l, 3);
        l.on_pong(first);
        assert_eq!(l.end(), 3, "the 3 written after the ping are unconfirmed");
    }

    /// A `PONG` of an earlier session, or to a mark never sent, confirms nothing.
    #[test]
    fn foreign_pongs_confirm_nothing() {
        let mut l = Qos0Ledger::default();
        l.begin();
        write(&mut l, 4);
        let old = l.ping().expect("mark");
        assert_eq!(l.end(), 4);
        l.begin();
        write(&mut l, 4);
        l.on_pong(old);
        let now = l.ping().expect("mark");
        l.on_pong(now + 1);
        l.on_pong(7); // session 0: a peer's own ping id, not ours
        assert_eq!(l.end(), 4);
    }

    /// Everything confirmed: a lost session loses nothing that was written.
    #[test]
    fn all_confirmed_counts_nothing() {
        let mut l = Qos0Ledger::default();
        l.begin();
        write(&mut l, 10);
        let m = l.ping().expect("mark");
        l.on_pong(m);
        assert_eq!(l.end(), 0);
        assert_eq!(l.end(), 0, "ending twice counts once");
    }
}
