//! Per-connection plumbing shared by the node, the bridge and the client: the
//! outbound queues, the batching writer tasks, the session handshake and the
//! reader loop helpers.
//!
//! Every Macula QUIC connection carries one bidirectional stream, opened by the
//! connecting side, with frames in both directions (`docs/PROTOCOL.md`, "Streams").
//! Each side runs one reader (the task that owns the connection) and one writer task.
//! Writers drain two bounded queues — control first, then data — in batches and
//! write each batch with one `write_all_chunks` call, so a burst of small messages
//! costs one stream write rather than one per message. Acknowledgements queued for
//! the peer are coalesced into as few `PUBACK` frames as possible.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::router::PeerKey;
use crate::wire::{
    self, Connect, Connected, ErrorCode, ErrorFrame, Frame, FrameDecoder, MessageId, MessageType,
    PubAck, RawFrame, WireError,
};

/// Most frames a writer takes from its queues for one batched write.
pub const WRITE_BATCH: usize = 512;
/// Most message ids in one `PUBACK` frame (18 bytes each → ~74 KB, below any sane max frame).
pub const MAX_ACKS_PER_FRAME: usize = 4096;
/// Largest chunk read from a stream at once, in bytes.
pub const READ_CHUNK: usize = 256 * 1024;
/// How long a session may take from QUIC handshake to `CONNECTED`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing writer waits for the peer to read the final frames.
pub const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// One item for a connection's writer.
#[derive(Debug)]
pub enum Outbound {
    /// A complete encoded frame, written as is (zero copy for relayed publishes).
    Frame(Bytes),
    /// A QoS 1 publish relayed by a bridge: written, then remembered until the peer
    /// acknowledges it, when `track` counts down toward the upstream acknowledgement.
    Tracked(Bytes, Arc<AckTrack>),
    /// A QoS 1 publish this side is responsible for: kept until acknowledged and
    /// retransmitted after a timeout or a reconnect (reliable writers only).
    Custody(MessageId, Bytes),
    /// Acknowledge this message id to the peer (coalesced into `PUBACK.ids`).
    Ack(MessageId),
    /// Tell the peer no subscriber wanted this message (`PUBACK.no_route`).
    NoRoute(MessageId),
}

/// Countdown for a QoS 1 publish a bridge relayed to several nodes: when every
/// recipient has acknowledged, the upstream node gets its acknowledgement. Dropped
/// without reaching zero (a recipient vanished), nothing is acknowledged and the
/// upstream node retransmits after its ack timeout; receivers de-duplicate.
#[derive(Debug)]
pub struct AckTrack {
    /// The message id.
    pub id: MessageId,
    remaining: AtomicU32,
    upstream: mpsc::Sender<Outbound>,
}

impl AckTrack {
    /// A countdown from `recipients`, acknowledging to `upstream` (its control queue).
    pub fn new(id: MessageId, recipients: u32, upstream: mpsc::Sender<Outbound>) -> Arc<Self> {
        Arc::new(AckTrack {
            id,
            remaining: AtomicU32::new(recipients),
            upstream,
        })
    }

    /// One recipient acknowledged; returns true when this was the last one.
    pub fn ack_one(&self) -> bool {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The upstream control queue is sized for its in-flight window; if it is
            // full anyway the upstream retransmits after its ack timeout.
            let _ = self.upstream.try_send(Outbound::Ack(self.id));
            true
        } else {
            false
        }
    }
}

/// Applies a `PUBACK` received on a link to the countdowns of the tracked frames written to
/// it (`pending`, in write order: the peer acknowledges in the order it read them, though one
/// `PUBACK` batches its `ids` and `no_route` apart). Frames are taken in write order until
/// every id the ack names has been settled; a frame taken that it does not name was skipped
/// by the peer and is dropped unacknowledged (its origin retransmits it).
pub fn settle_tracked(pending: &mut mpsc::Receiver<Arc<AckTrack>>, ack: &PubAck) {
    // Each list is in write order on its own: merge them as the frames come out, O(n).
    let (mut ids, mut no_route) = (ack.ids.iter().peekable(), ack.no_route.iter().peekable());
    while ids.peek().is_some() || no_route.peek().is_some() {
        let Ok(track) = pending.try_recv() else { break };
        if ids.peek() == Some(&&track.id) {
            ids.next();
        } else if no_route.peek() == Some(&&track.id) {
            no_route.next();
        } else {
            continue;
        }
        track.ack_one();
    }
}

/// Sending half of a connection, shared with whoever routes to it.
#[derive(Clone, Debug)]
pub struct PeerTx {
    /// Process-local key of the peer.
    pub key: PeerKey,
    /// Control queue (written before data).
    pub ctrl: mpsc::Sender<Outbound>,
    /// Data queue (publishes).
    pub data: mpsc::Sender<Outbound>,
    /// The connection, to close it on a policy violation (slow consumer).
    pub conn: Connection,
    /// Largest frame the peer accepts, in bytes including the header.
    pub max_frame: usize,
    /// `limits.qos0_stall_ms`: the [`StallBudget`] a publish routed here starts with when it
    /// meets its first full queue; zero: drop at once.
    pub qos0_stall: Duration,
    /// Set while this peer is shedding: its data queue stayed full for `qos0_stall`, so QoS 0
    /// offers that find it full are dropped without waiting until it has drained to half.
    /// Shared by every clone of this handle.
    pub shedding: Arc<AtomicBool>,
}

impl PeerTx {
    /// Answers with a non-fatal error frame (the session goes on) and counts it.
    pub fn send_error(&self, metrics: &Metrics, code: ErrorCode, msg: String, corr: Option<u64>) {
        metrics.protocol_error(code.as_str());
        let _ = self
            .ctrl
            .try_send(Outbound::Frame(error_frame(code, msg, corr)));
    }

    /// Checks `action` on `name` against the session's `grant` (`None`: nothing is
    /// restricted). A denial is answered with a non-fatal `PERMISSION_DENIED` error frame
    /// carrying `corr`, counted in `macula_permission_denied_total{action}` and written to
    /// the audit log; `false` then.
    pub fn permit(
        &self,
        grant: Option<&crate::auth::Grant>,
        action: crate::auth::Action,
        name: &str,
        metrics: &Metrics,
        corr: Option<u64>,
    ) -> bool {
        let Some(g) = grant else { return true };
        match g.check(action, name) {
            Ok(()) => true,
            Err(msg) => {
                metrics.permission_denied(action);
                self.send_error(metrics, ErrorCode::PermissionDenied, msg, corr);
                false
            }
        }
    }

    /// [`PeerTx::permit`] for a `publish`: a denied one is dropped (reason `denied`) and,
    /// at QoS 1, answered `puback.no_route` (final, §8).
    pub fn permit_publish(
        &self,
        grant: Option<&crate::auth::Grant>,
        view: &wire::PublishView<'_>,
        metrics: &Metrics,
    ) -> bool {
        if self.permit(
            grant,
            crate::auth::Action::Publish,
            view.topic,
            metrics,
            None,
        ) {
            return true;
        }
        metrics.dropped("denied");
        if view.qos == wire::Qos::AtLeastOnce {
            let _ = self.ctrl.try_send(Outbound::NoRoute(view.message_id));
        }
        false
    }

    /// Queues a control frame (best effort: a full control queue means the peer
    /// is not reading, and its writer will time out).
    pub fn send_ctrl(&self, frame: Frame) {
        let _ = self.ctrl.try_send(Outbound::Frame(frame.to_bytes()));
    }

    /// The frame's message type; an unknown one is answered with a non-fatal `UNKNOWN_TYPE`
    /// error frame (counted) and gives `None` (the frame is skipped, §4).
    pub fn msg_type(&self, raw: &RawFrame, metrics: &Metrics) -> Option<MessageType> {
        let t = raw.msg_type();
        if t.is_none() {
            self.send_error(
                metrics,
                ErrorCode::UnknownType,
                format!("unknown message type 0x{:02x}", raw.header.msg_type),
                None,
            );
        }
        t
    }

    /// The zero-copy view of a `publish` frame; one whose body does not decode is answered
    /// with a non-fatal error frame, counted as `dropped{reason="invalid"}`, and gives `None`.
    pub fn publish_view<'a>(
        &self,
        raw: &'a RawFrame,
        metrics: &Metrics,
    ) -> Option<wire::PublishView<'a>> {
        match raw.publish_view() {
            Ok(v) => Some(v),
            Err(e) => {
                self.send_error(metrics, e.code(), e.to_string(), None);
                metrics.dropped("invalid");
                None
            }
        }
    }

    /// The `publish` frame `raw`, decoded and checked ([`check_publish`]) before it is
    /// routed. A refused one is answered with its error frame and counted as
    /// `dropped{reason="invalid"}`, and if it is QoS 1 and its id readable, acknowledged in
    /// `no_route` so its sender stops re-sending it (`docs/PROTOCOL.md` §8); then `None`.
    pub fn accept_publish<'a>(
        &self,
        raw: &'a RawFrame,
        metrics: &Metrics,
    ) -> Option<wire::PublishView<'a>> {
        let view = self.publish_view(raw, metrics)?;
        if let Err((code, msg)) = check_publish(raw, &view) {
            self.send_error(metrics, code, msg, None);
            metrics.dropped("invalid");
            if view.qos == wire::Qos::AtLeastOnce {
                let _ = self.ctrl.try_send(Outbound::NoRoute(view.message_id));
            }
            return None;
        }
        Some(view)
    }

    /// Handles a `PUBACK` from a link that acknowledges tracked publishes: applied to
    /// `pending` ([`settle_tracked`]); one that does not decode is answered with its error
    /// frame (counted).
    pub fn on_tracked_puback(
        &self,
        raw: &RawFrame,
        pending: &mut mpsc::Receiver<Arc<AckTrack>>,
        metrics: &Metrics,
    ) {
        match raw.decode() {
            Ok(Frame::PubAck(a)) => settle_tracked(pending, &a),
            Ok(_) => unreachable!("decode follows the header type"),
            Err(e) => self.send_error(metrics, e.code(), e.to_string(), None),
        }
    }

    /// Answers a `PING` frame with its `PONG`; a malformed one with a `MALFORMED_BODY` error
    /// frame (counted, carrying the correlation id when readable).
    pub fn pong(&self, raw: &RawFrame, metrics: &Metrics) {
        match raw.decode() {
            Ok(Frame::Ping(p)) => self.send_ctrl(Frame::Pong(wire::Pong {
                correlation_id: p.correlation_id,
            })),
            Ok(_) => unreachable!("decode follows the header type"),
            Err(e) => self.send_error(metrics, e.code(), e.to_string(), raw.peek_correlation_id()),
        }
    }

    /// Answers a `PUBACK` that does not decode with its error frame (counted); `true` when
    /// it did decode. The acceptor uses this where it takes nothing from client acks.
    pub fn check_puback(&self, raw: &RawFrame, metrics: &Metrics) -> bool {
        match raw.decode() {
            Ok(_) => true,
            Err(e) => {
                self.send_error(metrics, e.code(), e.to_string(), None);
                false
            }
        }
    }
}

/// Checks a parsed `publish` before it is routed: header `flags` must be 0 in v1 (relays
/// forward a publish byte for byte, so a relay that ignored them would pass them on;
/// `MALFORMED_BODY`), and the topic must be valid (`INVALID_TOPIC`). The message names the
/// message id in hex (`docs/PROTOCOL.md` §6). A refused QoS 1 publish is answered
/// `puback.no_route` by the caller, so that its sender stops re-sending it (§8).
pub fn check_publish(
    raw: &RawFrame,
    view: &wire::PublishView<'_>,
) -> Result<(), (ErrorCode, String)> {
    // Runs per publish: the id is formatted only for an error.
    let id = || -> String { view.message_id.iter().map(|b| format!("{b:02x}")).collect() };
    if raw.header.flags != 0 {
        return Err((
            ErrorCode::MalformedBody,
            format!(
                "publish {}: header flags {:#04x}, must be 0",
                id(),
                raw.header.flags
            ),
        ));
    }
    crate::topic::validate_topic(view.topic).map_err(|e| {
        (
            ErrorCode::InvalidTopic,
            format!("publish {}: topic {:?}: {e}", id(), view.topic),
        )
    })
}

/// Validates a `CONNECT`: a version both sides speak, the `role` this side
/// accepts, and a realm `accepts_realm` allows. Errors: `UNSUPPORTED_VERSION`,
/// `PROTOCOL` (wrong role), `UNKNOWN_REALM` — all fatal for the session.
pub fn check_connect(
    c: &Connect,
    role: wire::Role,
    accepts_realm: impl Fn(&str) -> bool,
) -> Result<(), (ErrorCode, String)> {
    if !c.versions.contains(&wire::PROTOCOL_VERSION) {
        return Err((
            ErrorCode::UnsupportedVersion,
            format!(
                "versions {:?} not supported; this peer speaks {}",
                c.versions,
                wire::PROTOCOL_VERSION
            ),
        ));
    }
    if c.role != role {
        return Err((
            ErrorCode::Protocol,
            format!("role {:?} not accepted here", c.role),
        ));
    }
    if !accepts_realm(&c.realm) {
        return Err((
            ErrorCode::UnknownRealm,
            format!("unknown realm {:?}", c.realm),
        ));
    }
    Ok(())
}

/// Refuses a session: error frame on `send` when there is one (best effort, waits
/// at most [`CLOSE_LINGER`] for the peer to read it), then a QUIC close with the same code.
pub async fn refuse(
    conn: &Connection,
    send: Option<&mut SendStream>,
    metrics: &Metrics,
    code: ErrorCode,
    msg: &str,
    corr: Option<u64>,
) {
    metrics.protocol_error(code.as_str());
    if let Some(send) = send {
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            send.write_all(&error_frame(code, msg, corr)).await?;
            send.finish()?;
            send.stopped()
                .await
                .map(|_| ())
                .map_err(quinn::WriteError::from)
        })
        .await;
    }
    close(conn, code, msg);
}

/// Refuses a session the admission rules turned away (`docs/AUTH.md`): counted in
/// `macula_connections_rejected_total{reason}`, then [`refuse`] with the error's code
/// (`UNAUTHENTICATED` or `PERMISSION_DENIED`) and the `connect`'s correlation id.
pub async fn refuse_admission(
    conn: &Connection,
    send: &mut SendStream,
    metrics: &Metrics,
    error: &crate::auth::AdmissionError,
    corr: u64,
) {
    metrics
        .connections_rejected_total
        .with_label_values(&[error.reason()])
        .inc();
    tracing::debug!(remote.addr = %conn.remote_address(), reason = error.reason(), %error, "admission refused");
    refuse(
        conn,
        Some(send),
        metrics,
        error.code(),
        &error.to_string(),
        Some(corr),
    )
    .await;
}

/// A session that ended before its `CONNECT` was accepted ([`accept_session`]).
#[derive(Debug)]
pub struct NotAccepted {
    /// The stream's sending half, when the peer opened the stream: the error frame goes
    /// out on it before the close.
    pub send: Option<SendStream>,
    /// What went wrong.
    pub error: SessionError,
    /// The `correlation_id` of the refused `connect`, when it could be read.
    pub correlation_id: Option<u64>,
}

/// Ends a session whose `CONNECT` could not be read or accepted. Before `CONNECTED` every
/// error is fatal (`docs/PROTOCOL.md` §7): an error frame with the code (and the
/// `connect`'s correlation id, when readable) goes out on the stream, the writer waits at
/// most [`CLOSE_LINGER`] for the peer to receive it, then the connection is closed with
/// the same code. A non-`connect` first frame is `NOT_CONNECTED`, no `connect` within
/// [`HANDSHAKE_TIMEOUT`] is `PROTOCOL`; a vanished peer is only logged.
pub async fn reject_before_connect(conn: &Connection, metrics: &Metrics, refused: NotAccepted) {
    let NotAccepted {
        mut send,
        error,
        correlation_id,
    } = refused;
    let (code, msg) = match &error {
        SessionError::Wire(w) => (w.code(), w.to_string()),
        SessionError::Protocol(m) => (ErrorCode::NotConnected, m.clone()),
        SessionError::Timeout(_) => (ErrorCode::Protocol, error.to_string()),
        SessionError::Unauthenticated(e) => {
            metrics
                .connections_rejected_total
                .with_label_values(&[e.reason()])
                .inc();
            (ErrorCode::Unauthenticated, e.to_string())
        }
        _ => {
            tracing::debug!(error = %error, "session ended before connect");
            return;
        }
    };
    tracing::debug!(%msg, "session refused");
    refuse(conn, send.as_mut(), metrics, code, &msg, correlation_id).await;
}

/// An accepted session's sending half and the receiving ends its writer drains.
pub struct AcceptedPeer {
    /// Routing handle of the peer.
    pub tx: PeerTx,
    /// Control queue receiver (for [`run_writer`]).
    pub ctrl_rx: mpsc::Receiver<Outbound>,
    /// Data queue receiver (for [`run_writer`]).
    pub data_rx: mpsc::Receiver<Outbound>,
}

/// Creates the bounded queues of a session (control: `max_inflight` + 1024, so
/// acknowledgements owed never block; data: `outbound_queue`) toward a peer that accepts
/// frames of up to `peer_max_frame_size` body bytes.
pub fn peer_queues(
    key: PeerKey,
    conn: &Connection,
    peer_max_frame_size: u32,
    limits: &crate::config::LimitsConfig,
) -> AcceptedPeer {
    let (ctrl_tx, ctrl_rx) = mpsc::channel(limits.max_inflight as usize + 1024);
    let (data_tx, data_rx) = mpsc::channel(limits.outbound_queue.max(1));
    let tx = PeerTx {
        key,
        ctrl: ctrl_tx,
        data: data_tx,
        conn: conn.clone(),
        max_frame: peer_max_frame_size as usize + wire::HEADER_LEN,
        qos0_stall: Duration::from_millis(limits.qos0_stall_ms),
        shedding: Arc::new(AtomicBool::new(false)),
    };
    AcceptedPeer {
        tx,
        ctrl_rx,
        data_rx,
    }
}

/// [`peer_queues`] for a validated session, with the `CONNECTED` answer carrying this
/// side's limits and its proof of `identity`'s node id queued first.
pub fn accept_peer(
    key: PeerKey,
    conn: &Connection,
    connect: &Connect,
    identity: &crate::identity::Identity,
    limits: &crate::config::LimitsConfig,
    keepalive_ms: u64,
) -> AcceptedPeer {
    let peer = peer_queues(key, conn, connect.max_frame_size, limits);
    peer.tx.send_ctrl(Frame::Connected(Connected {
        version: wire::PROTOCOL_VERSION,
        node_id: identity.node_id(),
        proof: identity
            .prove_on(conn, crate::identity::Side::Acceptor)
            .ok(),
        realm: connect.realm.clone(),
        max_frame_size: limits.max_frame_size,
        max_inflight: limits.max_inflight,
        keepalive_ms: keepalive_ms.min(u64::from(u32::MAX)) as u32,
        correlation_id: connect.correlation_id,
        credential: None,
    }));
    peer
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The QUIC connection failed or was closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to the stream failed.
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from the stream failed.
    #[error("read: {0}")]
    Read(#[from] quinn::ReadError),
    /// The peer sent something that makes the stream untrustworthy.
    #[error("wire: {0}")]
    Wire(#[from] WireError),
    /// The peer answered with an error frame.
    #[error("peer error {code}: {message}")]
    Peer {
        /// Raw error code.
        code: u16,
        /// Peer's message.
        message: String,
    },
    /// The peer broke the session protocol (e.g. no CONNECT first).
    #[error("protocol: {0}")]
    Protocol(String),
    /// A step took too long.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The peer's stream ended.
    #[error("stream closed by peer")]
    Eof,
    /// A bridge worker answered `connect` with a redirect to the owner of this node's
    /// cluster (`docs/FLEET.md`).
    #[error("redirected to {} ({})", .0.addr, .0.reason)]
    Redirected(wire::Redirect),
    /// The other side did not prove the node id it claims (`docs/AUTH.md`).
    #[error("unauthenticated: {0}")]
    Unauthenticated(#[from] crate::identity::ProofError),
}

/// Closes `conn` at once with the application code `SLOW_CONSUMER` and `reason`, counted
/// once per connection in `macula_protocol_errors_total{code="slow_consumer"}`. No error
/// frame: the peer is not reading its stream, so the QUIC close code is the signal
/// (`docs/PROTOCOL.md` §6). The session's reader then ends and its routes are removed.
pub fn close_slow_consumer(conn: &Connection, metrics: &Metrics, reason: &str) {
    if conn.close_reason().is_none() {
        metrics.protocol_error(ErrorCode::SlowConsumer.as_str());
        tracing::info!(remote.addr = %conn.remote_address(), reason, "closing a slow consumer");
        close(conn, ErrorCode::SlowConsumer, reason);
    }
}

/// Closes `conn` with the application error `code` and a human-readable reason.
pub fn close(conn: &Connection, code: ErrorCode, reason: &str) {
    conn.close(VarInt::from_u32(code as u16 as u32), reason.as_bytes());
}

/// Encodes an error frame.
pub fn error_frame(
    code: ErrorCode,
    message: impl Into<String>,
    correlation_id: Option<u64>,
) -> Bytes {
    Frame::Error(ErrorFrame {
        code: code as u16,
        message: message.into(),
        correlation_id,
    })
    .to_bytes()
}

/// Reads the next chunk of `recv` into `decoder`. Returns `false` at end of stream
/// (after checking no partial frame is left).
pub async fn fill(recv: &mut RecvStream, decoder: &mut FrameDecoder) -> Result<bool, SessionError> {
    match recv.read_chunk(READ_CHUNK, true).await? {
        Some(chunk) => {
            decoder.extend_bytes(chunk.bytes);
            Ok(true)
        }
        None => {
            decoder.finish()?;
            Ok(false)
        }
    }
}

/// Reads until one whole frame is available.
pub async fn next_frame(
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<RawFrame, SessionError> {
    loop {
        if let Some(f) = decoder.next_frame()? {
            return Ok(f);
        }
        if !fill(recv, decoder).await? {
            return Err(SessionError::Eof);
        }
    }
}

/// Server side of the handshake: accepts the stream and reads the `CONNECT` frame, all
/// within [`HANDSHAKE_TIMEOUT`]. A first frame of another type is a `NOT_CONNECTED`
/// protocol error; a `connect` that does not decode is its wire error (e.g.
/// `MALFORMED_BODY`), with its correlation id when that much of the body is readable; a
/// `connect` whose `proof` does not prove its `node_id` on this connection is
/// [`SessionError::Unauthenticated`] (`docs/AUTH.md`). Errors come with the stream's
/// sending half, for [`reject_before_connect`].
pub async fn accept_session(
    conn: &Connection,
    max_frame_size: u32,
) -> Result<(SendStream, RecvStream, FrameDecoder, Connect), NotAccepted> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let refused = |send, error, correlation_id| NotAccepted {
        send,
        error,
        correlation_id,
    };
    let (send, mut recv) = match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(refused(None, e.into(), None)),
        Err(_) => return Err(refused(None, SessionError::Timeout("handshake"), None)),
    };
    let mut decoder = FrameDecoder::new(max_frame_size);
    let raw = match tokio::time::timeout_at(deadline, next_frame(&mut recv, &mut decoder)).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(e)) => return Err(refused(Some(send), e, None)),
        Err(_) => {
            return Err(refused(
                Some(send),
                SessionError::Timeout("handshake"),
                None,
            ))
        }
    };
    if raw.msg_type() != Some(MessageType::Connect) {
        let got = raw.msg_type().map_or_else(
            || format!("type 0x{:02x}", raw.header.msg_type),
            |t| t.as_str().into(),
        );
        let e = SessionError::Protocol(format!("expected connect, got {got}"));
        return Err(refused(Some(send), e, None));
    }
    match raw.decode() {
        // A connect of another version is refused by `check_connect` (its proof, if any,
        // follows that version's rules).
        Ok(Frame::Connect(c)) if !c.versions.contains(&wire::PROTOCOL_VERSION) => {
            Ok((send, recv, decoder, c))
        }
        Ok(Frame::Connect(c)) => {
            let side = crate::identity::Side::Initiator;
            match crate::identity::verify_on(conn, side, &c.node_id, c.proof.as_ref()) {
                Ok(()) => Ok((send, recv, decoder, c)),
                Err(e) => {
                    let role = c.role.as_str();
                    let why = Err(e.reason());
                    crate::audit::admission(conn.remote_address(), &c.realm, role, &c.node_id, why);
                    Err(refused(Some(send), e.into(), Some(c.correlation_id)))
                }
            }
        }
        Ok(_) => unreachable!("decode follows the header type"),
        Err(e) => {
            let corr = raw.peek_correlation_id();
            Err(refused(Some(send), e.into(), corr))
        }
    }
}

/// Client side of the handshake: opens the stream, sends `connect` as `identity` (its
/// `node_id` and `proof` are filled in here), waits for `CONNECTED` (or an error frame,
/// returned as [`SessionError::Peer`]) and checks the acceptor's proof of its `node_id`
/// (else [`SessionError::Unauthenticated`], and the connection is closed with
/// `UNAUTHENTICATED`).
pub async fn open_session(
    conn: &Connection,
    mut connect: Connect,
    max_frame_size: u32,
    identity: &crate::identity::Identity,
) -> Result<(SendStream, RecvStream, FrameDecoder, Connected), SessionError> {
    use crate::identity::Side;
    connect.node_id = identity.node_id();
    connect.proof = Some(identity.prove_on(conn, Side::Initiator)?);
    let fut = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&Frame::Connect(connect).to_bytes()).await?;
        let mut decoder = FrameDecoder::new(max_frame_size);
        let raw = next_frame(&mut recv, &mut decoder).await?;
        match raw.decode()? {
            Frame::Connected(c) => {
                let proof = c.proof.as_ref();
                if let Err(e) = crate::identity::verify_on(conn, Side::Acceptor, &c.node_id, proof)
                {
                    close(conn, ErrorCode::Unauthenticated, &e.to_string());
                    return Err(e.into());
                }
                Ok((send, recv, decoder, c))
            }
            Frame::Redirect(r) => Err(SessionError::Redirected(r)),
            Frame::Error(e) => Err(SessionError::Peer {
                code: e.code,
                message: e.message,
            }),
            other => Err(SessionError::Protocol(format!(
                "expected connected, got {}",
                other.msg_type().as_str()
            ))),
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
        .await
        .map_err(|_| SessionError::Timeout("handshake"))?
}

pub mod backoff;
pub use offer::{offer_best_effort, Offer, StallBudget};
pub mod interest;
pub mod link;
mod offer;
pub mod read;
pub mod redial;
mod writer;
use writer::Batch;
pub use writer::{run_writer, WriterConfig};
mod reliable;
pub use interest::{decode_interest, InterestRequest};
pub use reliable::{
    run_reliable_writer, Confirm, Qos0Ledger, ReliableQueues, ReliableState, MAX_RETRANSMITS,
    NO_ROUTE_RETRY, RETRANSMIT_TICK,
};

/// Builds the channel pair that carries `PUBACK`s and `PONG`s from a reader to its reliable
/// writer.
pub fn ack_channel(window: usize) -> (mpsc::Sender<Confirm>, mpsc::Receiver<Confirm>) {
    mpsc::channel(window.clamp(64, 65_536))
}

/// Current wall-clock time in µs since the Unix epoch (for `ts_us`).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Observes the delivery latency of a publish carrying `ts_us`, as of `now`
/// (µs since the Unix epoch; readers take it once per received chunk).
pub fn observe_latency(metrics: &Metrics, ts_us: Option<u64>, now: u64) {
    if let Some(ts) = ts_us {
        if now >= ts {
            metrics
                .delivery_latency_seconds
                .observe((now - ts) as f64 / 1e6);
        }
    }
}

/// Maps a wire error to the code sent to the peer and counts it.
pub fn count_error(metrics: &Metrics, code: ErrorCode) {
    metrics.protocol_error(code.as_str());
}

/// Re-export for modules building connect frames.
pub use wire::PROTOCOL_VERSION;

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MessageId {
        [n; 16]
    }

    /// Tracks for ids `1..=n`, one recipient each, written in order; and their upstream.
    fn written(n: u8) -> (mpsc::Receiver<Arc<AckTrack>>, mpsc::Receiver<Outbound>) {
        let (up_tx, up_rx) = mpsc::channel(16);
        let (tx, rx) = mpsc::channel(16);
        for i in 1..=n {
            tx.try_send(AckTrack::new(id(i), 1, up_tx.clone())).unwrap();
        }
        (rx, up_rx)
    }

    fn acked(up: &mut mpsc::Receiver<Outbound>) -> Vec<MessageId> {
        std::iter::from_fn(|| match up.try_recv() {
            Ok(Outbound::Ack(i)) => Some(i),
            _ => None,
        })
        .collect()
    }

    #[test]
    fn settle_merges_ids_and_no_route_in_write_order() {
        let (mut pending, mut up) = written(4);
        // 1 and 3 had no route, 2 and 4 were delivered: one batched ack lists them apart.
        let ack = PubAck {
            ids: vec![id(2), id(4)],
            no_route: vec![id(1), id(3)],
        };
        settle_tracked(&mut pending, &ack);
        assert_eq!(acked(&mut up), vec![id(1), id(2), id(3), id(4)]);
        assert!(pending.try_recv().is_err());
    }

    #[test]
    fn settle_drops_what_the_peer_skipped_and_keeps_the_rest() {
        let (mut pending, mut up) = written(4);
        let ack = PubAck {
            ids: vec![id(2)],
            no_route: vec![],
        };
        settle_tracked(&mut pending, &ack);
        // 1 was skipped: never acknowledged upstream (its origin retransmits); 3 and 4 wait.
        assert_eq!(acked(&mut up), vec![id(2)]);
        assert_eq!(pending.try_recv().unwrap().id, id(3));
    }
}
