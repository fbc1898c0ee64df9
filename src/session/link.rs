//! The link actor: one per QUIC connection that carries a session, whatever its kind.
//!
//! Every link — a client session at a node, a mesh link, a bridge's child and peer links, its
//! parent link, a node's uplink and the client library's session — is the same machine: a
//! connection with one bidirectional stream, a writer draining bounded queues in batches, the
//! one read loop ([`super::read::read_loop`]) handing each decoded frame to the kind's
//! [`FrameHandler`], and an orderly end. What differs is the handler and what the kind does
//! when the link comes and goes; this module writes the rest once, in the shape of
//! iroh-relay's per-client actor (`iroh-relay/src/server/client.rs`: a handle, an actor
//! whose tasks run inside a span naming the peer, aborted on drop).
//!
//! Two writers exist, because two kinds of custody exist (`docs/ARCHITECTURE.md`, "QoS 1"):
//! - [`LinkActor`]: the **relaying** side (node → client, bridge → child, either end of a
//!   mesh or parent link). Its writer ([`super::run_writer`]) writes [`Outbound::Tracked`]
//!   frames whose custody stays with their origin, at most a window of them unacknowledged;
//!   the handler settles them from the peer's `PUBACK`s ([`super::settle_tracked`]).
//! - [`run_reliable`]: the **originating** side (client → node, node → bridge). Its writer
//!   ([`super::run_reliable_writer`]) keeps custody of QoS 1 publishes across sessions and
//!   retransmits them; the reader runs as its own task so receiving and sending use
//!   different cores.
//!
//! Liveness is QUIC's (keep-alive and idle timeout, set on the connection when it is dialled,
//! `docs/PROTOCOL.md` §9); a dead peer ends the read loop with [`ReadEnd::Closed`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span};

use super::read::{read_loop, Fatal, FrameHandler, ReadEnd};
use super::{
    close, error_frame, run_writer, AcceptedPeer, AckTrack, Outbound, PeerTx, ReliableQueues,
    ReliableState, SessionError, WriterConfig,
};
use crate::metrics::Metrics;
use crate::wire::{ErrorCode, FrameDecoder};

/// How long [`LinkActor::finish`] waits for the writer to write what it holds (the error frame
/// last of all) before the connection is closed under it.
pub const WRITER_DRAIN: Duration = Duration::from_secs(1);

/// Where a link's tasks run: on the process's tracker (so its shutdown waits for them too,
/// `docs/OPERATIONS.md`, "Signals and shutdown"), inside the link's span (`link`, with the
/// link's `kind` and `peer.id` or `remote.addr`).
#[derive(Debug, Clone)]
pub struct LinkTasks {
    /// The process's task tracker.
    pub tracker: TaskTracker,
    /// The link's span.
    pub span: Span,
}

impl LinkTasks {
    fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task.instrument(self.span.clone()))
    }
}

/// A session's connection and stream, fresh from the handshake
/// ([`super::accept_session`] / [`super::open_session`]).
#[derive(Debug)]
pub struct LinkIo {
    /// The QUIC connection.
    pub conn: Connection,
    /// The stream's sending half.
    pub send: SendStream,
    /// The stream's receiving half.
    pub recv: RecvStream,
    /// The decoder holding whatever the handshake read past its own frame.
    pub decoder: FrameDecoder,
}

/// A running link on the relaying side: owns the connection, the writer task draining the
/// link's bounded queues, the receiving half with its decoder, and the span every task of the
/// link runs in. Built by [`LinkActor::start`], read by [`LinkActor::read`] (once), ended by
/// [`LinkActor::finish`]; dropped without `finish`, its writer is aborted.
pub struct LinkActor {
    conn: Connection,
    ctrl: mpsc::Sender<Outbound>,
    recv: RecvStream,
    decoder: FrameDecoder,
    writer: Option<JoinHandle<Result<(), SessionError>>>,
    cancel: CancellationToken,
    span: Span,
    metrics: Arc<Metrics>,
}

impl LinkActor {
    /// Starts the writer of `io` over the queues of `peer` (built by [`super::peer_queues`] or
    /// [`super::accept_peer`]) on `tasks`. With `window = Some(n)` the writer keeps at most
    /// `n` tracked frames unacknowledged (the peer's `max_inflight`, at least 1) and the
    /// returned receiver yields their countdowns in write order, for the handler to settle
    /// from the peer's `PUBACK`s; with `None` tracked frames are written untracked (a client
    /// session: custody ends at the node). Returns the actor and the link's [`PeerTx`].
    pub fn start(
        io: LinkIo,
        peer: AcceptedPeer,
        window: Option<usize>,
        cfg: WriterConfig,
        tasks: LinkTasks,
    ) -> (LinkActor, PeerTx, Option<mpsc::Receiver<Arc<AckTrack>>>) {
        let LinkIo {
            conn,
            send,
            recv,
            decoder,
        } = io;
        let AcceptedPeer {
            tx,
            ctrl_rx,
            data_rx,
        } = peer;
        let (pending_tx, pending_rx) = match window {
            Some(n) => {
                let (t, r) = mpsc::channel(n.max(1));
                (Some(t), Some(r))
            }
            None => (None, None),
        };
        let cancel = CancellationToken::new();
        let metrics = cfg.metrics.clone();
        let writer = {
            let (conn, cancel) = (conn.clone(), cancel.clone());
            tasks.spawn(async move {
                let r = run_writer(
                    conn.clone(),
                    send,
                    ctrl_rx,
                    data_rx,
                    pending_tx,
                    cancel,
                    cfg,
                )
                .await;
                if let Err(e) = &r {
                    // The reader must not wait on a link nothing can be written to.
                    tracing::debug!(error = %e, "writer ended");
                    conn.close(0u32.into(), b"writer ended");
                }
                r
            })
        };
        let actor = LinkActor {
            conn,
            ctrl: tx.ctrl.clone(),
            recv,
            decoder,
            writer: Some(writer),
            cancel,
            span: tasks.span,
            metrics,
        };
        (actor, tx, pending_rx)
    }

    /// Reads frames into `handler` until it stops, the peer ends the stream, the connection
    /// fails, a frame is fatal, or `stop` completes (then [`ReadEnd::Stopped`]). Frames are
    /// counted in `macula_frames_received_total`.
    pub async fn read<H: FrameHandler>(
        &mut self,
        handler: &mut H,
        stop: impl Future<Output = ()>,
    ) -> ReadEnd {
        let LinkActor {
            recv,
            decoder,
            metrics,
            span,
            ..
        } = self;
        let read = read_loop(recv, decoder, Some(metrics), handler);
        async {
            tokio::select! {
                end = read => end,
                () = stop => ReadEnd::Stopped,
            }
        }
        .instrument(span.clone())
        .await
    }

    /// Ends the link: on a fatal `end` its error frame goes out through the writer (counted
    /// in `macula_protocol_errors_total`); the writer is stopped and given [`WRITER_DRAIN`]
    /// to write what it holds, then the connection is closed with the error's code, or 0 on
    /// a clean end. Tracked frames the writer still held are dropped unacknowledged (their
    /// origins retransmit).
    pub async fn finish(mut self, end: Result<(), Fatal>) {
        if let Err((code, msg)) = &end {
            self.metrics.protocol_error(code.as_str());
            let _ = self
                .ctrl
                .try_send(Outbound::Frame(error_frame(*code, msg.clone(), None)));
        }
        self.cancel.cancel();
        if let Some(mut writer) = self.writer.take() {
            if tokio::time::timeout(WRITER_DRAIN, &mut writer)
                .await
                .is_err()
            {
                writer.abort();
            }
        }
        match end {
            Err((code, msg)) => close(&self.conn, code, &msg),
            Ok(()) => self.conn.close(0u32.into(), b"bye"),
        }
    }
}

impl Drop for LinkActor {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            w.abort();
        }
    }
}

/// How the originating side leaves a session it ends itself ([`run_reliable`]'s `stop`).
#[derive(Debug, Clone, Copy)]
pub struct StopClose {
    /// The QUIC application close code (`None`: 0, an orderly end).
    pub code: Option<ErrorCode>,
    /// Finish the stream before closing (whatever the writer wrote gets a chance to leave).
    pub finish: bool,
}

/// Runs one session of the originating side (a client's session with its node, a node's
/// uplink): `reader` — the kind's read loop over the session's receiving half — as its own
/// task on `tasks`, and the reliable writer over `send` here, until one of them ends or
/// `stop` completes. The reader's end stops the writer; the writer's end (a write error or
/// timeout, its queues closed) closes the connection, which ends the reader; `stop` closes
/// it with `on_stop`. `state` and `queues` outlive the session: what is unacknowledged is
/// written again on the next one, and the QoS 0 publishes the peer did not confirm are
/// counted in [`ReliableState::qos0_unconfirmed`]. Returns the writer's end and the reader's output (`Err`
/// if the reader task panicked).
#[allow(clippy::too_many_arguments)]
pub async fn run_reliable<R: Send + 'static>(
    conn: &Connection,
    send: &mut SendStream,
    state: &mut ReliableState,
    queues: &mut ReliableQueues,
    cfg: &WriterConfig,
    tasks: &LinkTasks,
    reader: impl Future<Output = R> + Send + 'static,
    (stop, on_stop): (impl Future<Output = ()>, StopClose),
) -> (Result<(), SessionError>, Result<R, tokio::task::JoinError>) {
    let session_cancel = CancellationToken::new();
    let mut reader = {
        let cancel = session_cancel.clone();
        tasks.spawn(async move {
            let r = reader.await;
            cancel.cancel();
            r
        })
    };
    let written = async {
        let r = super::run_reliable_writer(send, state, queues, &session_cancel, cfg).await;
        (r, false)
    }
    .instrument(tasks.span.clone());
    let (w, stopped) = tokio::select! {
        r = written => r,
        () = stop => (Ok(()), true),
    };
    if stopped {
        if on_stop.finish {
            let _ = send.finish();
        }
        match on_stop.code {
            Some(code) => close(conn, code, "closing"),
            None => conn.close(0u32.into(), b"bye"),
        }
    } else {
        conn.close(0u32.into(), b"session ended");
    }
    session_cancel.cancel();
    let r = match tokio::time::timeout(WRITER_DRAIN, &mut reader).await {
        Ok(r) => r,
        Err(_) => {
            // The connection is closed: a reader that is still running is stuck in a
            // handler (a full subscriber queue); it must not hold the redial.
            reader.abort();
            reader.await
        }
    };
    state.end_session(queues);
    (w, r)
}

#[cfg(test)]
mod tests;
