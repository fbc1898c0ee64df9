//! The writer of a session: batches of frames and acknowledgements copied into one buffer
//! per write, and the accepting side's writer task with its in-flight window of tracked
//! frames.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{Connection, SendStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    close_slow_consumer, AckTrack, Outbound, SessionError, CLOSE_LINGER, MAX_ACKS_PER_FRAME,
    WRITE_BATCH,
};
use crate::metrics::Metrics;
use crate::wire::{Frame, MessageId, MessageType, PubAck};

/// Accumulates one batch of outgoing frames and acknowledgements.
///
/// Frames are copied into one contiguous buffer: quinn keeps a stream's unsent
/// data as a list of segments and scans it for every packet it builds, so handing
/// it hundreds of ~160-byte `Bytes` per batch cost a third of a node's CPU
/// (profiled: `StreamsState::write_stream_frames`), while one memcpy per frame
/// into a batch buffer is a few nanoseconds.
pub(super) struct Batch {
    /// `PUBACK` frames, written before the data.
    head: BytesMut,
    /// The batch's frames, back to back.
    body: BytesMut,
    pub(super) acks: Vec<MessageId>,
    pub(super) no_route: Vec<MessageId>,
    pub(super) frames: usize,
}

/// Initial capacity of a batch buffer; it grows for larger batches.
const BATCH_BUFFER: usize = 64 * 1024;

impl Batch {
    pub(super) fn new() -> Self {
        Batch {
            head: BytesMut::new(),
            body: BytesMut::with_capacity(BATCH_BUFFER),
            acks: Vec::new(),
            no_route: Vec::new(),
            frames: 0,
        }
    }

    pub(super) fn push_frame(&mut self, frame: Bytes, metrics: &Metrics) {
        metrics
            .frames_out
            .inc(frame.get(1).copied().unwrap_or(0), frame.len());
        self.frames += 1;
        self.body.extend_from_slice(&frame);
    }

    /// Encodes pending acks as PUBACK frames, placed before the data in this batch.
    pub(super) fn seal(&mut self, metrics: &Metrics) {
        while !self.acks.is_empty() || !self.no_route.is_empty() {
            let a: Vec<MessageId> = self
                .acks
                .drain(..self.acks.len().min(MAX_ACKS_PER_FRAME))
                .collect();
            let n: Vec<MessageId> = self
                .no_route
                .drain(..self.no_route.len().min(MAX_ACKS_PER_FRAME))
                .collect();
            let before = self.head.len();
            // A PUBACK of at most 2 × 4096 ids stays far below u32::MAX.
            if Frame::PubAck(PubAck {
                ids: a,
                no_route: n,
            })
            .encode(&mut self.head)
            .is_ok()
            {
                metrics
                    .frames_out
                    .inc(MessageType::PubAck as u8, self.head.len() - before);
            }
        }
    }

    /// Adds one queued item. A tracked frame's countdown is the caller's: here it is dropped,
    /// so that publish is never acknowledged upstream (its origin re-sends it).
    pub(super) fn push_item(&mut self, item: Outbound, metrics: &Metrics) {
        match item {
            Outbound::Frame(f) | Outbound::Custody(_, f) | Outbound::Tracked(f, _) => {
                self.push_frame(f, metrics)
            }
            Outbound::Ack(id) => self.acks.push(id),
            Outbound::NoRoute(id) => self.no_route.push(id),
        }
    }

    /// Seals and writes what the batch holds, if anything. A write not done within
    /// `cfg.write_timeout` closes `conn` as a slow consumer.
    pub(super) async fn flush(
        &mut self,
        send: &mut SendStream,
        conn: &Connection,
        cfg: &WriterConfig,
    ) -> Result<(), SessionError> {
        if self.is_empty() {
            return Ok(());
        }
        self.seal(&cfg.metrics);
        let r = self.write(send, cfg.write_timeout).await;
        if matches!(r, Err(SessionError::Timeout(_))) {
            close_slow_consumer(conn, &cfg.metrics, "write timed out");
        }
        r
    }

    pub(super) fn is_empty(&self) -> bool {
        self.head.is_empty()
            && self.body.is_empty()
            && self.acks.is_empty()
            && self.no_route.is_empty()
    }

    pub(super) async fn write(
        &mut self,
        send: &mut SendStream,
        timeout: Duration,
    ) -> Result<(), SessionError> {
        if self.head.is_empty() && self.body.is_empty() {
            return Ok(());
        }
        let mut chunks = [self.head.split().freeze(), self.body.split().freeze()];
        let chunks: &mut [Bytes] = if chunks[0].is_empty() {
            &mut chunks[1..]
        } else {
            &mut chunks[..]
        };
        match tokio::time::timeout(timeout, send.write_all_chunks(chunks)).await {
            Ok(r) => r?,
            Err(_) => return Err(SessionError::Timeout("write")),
        }
        self.frames = 0;
        if self.body.capacity() < BATCH_BUFFER / 4 {
            self.body.reserve(BATCH_BUFFER);
        }
        Ok(())
    }
}

/// Settings of a writer task.
#[derive(Clone)]
pub struct WriterConfig {
    /// A batched write that takes longer is fatal for the session (slow or dead peer).
    pub write_timeout: Duration,
    /// Metrics to count frames into.
    pub metrics: Arc<Metrics>,
}

/// Writer for the accepting side (node → client, bridge → node). `pending` receives,
/// in write order, the [`AckTrack`] of every tracked frame; its capacity is the
/// in-flight window toward this peer, so the writer stops writing tracked frames
/// while the peer owes that many acknowledgements; meanwhile it writes control items only
/// (acknowledgements, interest), so two peers that both wait for acknowledgements (a mesh
/// or parent link with QoS 1 both ways) never wait on each other. A batch not written within
/// `cfg.write_timeout` (`slow_consumer_timeout_ms`) closes `conn` as a slow consumer
/// ([`close_slow_consumer`]) rather than leaving the peer a stream ended mid-frame.
pub async fn run_writer(
    conn: Connection,
    mut send: SendStream,
    mut ctrl_rx: mpsc::Receiver<Outbound>,
    mut data_rx: mpsc::Receiver<Outbound>,
    pending: Option<mpsc::Sender<Arc<AckTrack>>>,
    cancel: CancellationToken,
    cfg: WriterConfig,
) -> Result<(), SessionError> {
    let mut items = Vec::with_capacity(WRITE_BATCH);
    let mut batch = Batch::new();
    loop {
        let first = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            i = ctrl_rx.recv() => i,
            i = data_rx.recv() => i,
        };
        let closing = match first {
            Some(i) => {
                items.push(i);
                false
            }
            None => true,
        };
        if closing {
            while let Ok(item) = ctrl_rx.try_recv() {
                items.push(item);
            }
        } else {
            let room = WRITE_BATCH.saturating_sub(items.len());
            if room > 0 {
                while items.len() < WRITE_BATCH {
                    match ctrl_rx.try_recv().or_else(|_| data_rx.try_recv()) {
                        Ok(i) => items.push(i),
                        Err(_) => break,
                    }
                }
            }
        }
        for item in items.drain(..) {
            let Outbound::Tracked(f, track) = item else {
                batch.push_item(item, &cfg.metrics);
                continue;
            };
            if let Some(p) = &pending {
                let permit = match p.try_reserve() {
                    Ok(permit) => permit,
                    Err(mpsc::error::TrySendError::Closed(())) => return Err(SessionError::Eof),
                    Err(mpsc::error::TrySendError::Full(())) => {
                        // The peer owes a whole window of acknowledgements, and on a link
                        // where both sides send QoS 1 (mesh, parent) its own may wait for
                        // ours: write what is batched, and keep writing control items
                        // (acknowledgements first of all) until it acknowledges.
                        batch.flush(&mut send, &conn, &cfg).await?;
                        loop {
                            tokio::select! {
                                biased;
                                _ = cancel.cancelled() => return Ok(()),
                                r = p.reserve() => break r.map_err(|_| SessionError::Eof)?,
                                Some(i) = ctrl_rx.recv() => {
                                    batch.push_item(i, &cfg.metrics);
                                    while let Ok(i) = ctrl_rx.try_recv() {
                                        batch.push_item(i, &cfg.metrics);
                                    }
                                    batch.flush(&mut send, &conn, &cfg).await?;
                                }
                            }
                        }
                    }
                };
                permit.send(track);
            }
            batch.push_frame(f, &cfg.metrics);
        }
        batch.flush(&mut send, &conn, &cfg).await?;
        if closing {
            let _ = send.finish();
            let _ = tokio::time::timeout(CLOSE_LINGER, send.stopped()).await;
            return Ok(());
        }
    }
}
