//! The Rust client API: connect to a node, publish, subscribe, unsubscribe; provide
//! procedures and call them (RPC).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use bytes::Bytes;
//! use macula::client::{CallError, Client, ClientOptions};
//! use macula::wire::Qos;
//! let client = Client::connect(ClientOptions::default()).await?;
//! let mut sub = client.subscribe("sensors.*.temp").await?;
//! client.publish("sensors.kitchen.temp", "21.5".into(), Qos::AtLeastOnce).await?;
//! let msg = sub.recv().await.expect("delivered");
//! assert_eq!(msg.topic(), "sensors.kitchen.temp");
//!
//! // Provide a procedure: the handler runs for every call the node routes here.
//! let reg = client.register("io.example.echo", |args: Bytes| async move { Ok(args) }).await?;
//! // Call a procedure (any provider in the realm); wait at most 2 s.
//! let out: Result<Bytes, CallError> =
//!     client.call("io.example.echo", Bytes::from_static(b"hi"), Duration::from_secs(2)).await;
//! match out {
//!     Ok(reply) => assert_eq!(&reply[..], b"hi"),
//!     Err(e) => eprintln!("call failed: {} ({e})", e.kind()),
//! }
//! reg.unregister().await?;
//! # Ok(()) }
//! ```
//!
//! One QUIC connection, one bidirectional stream. A background writer batches
//! outgoing frames and keeps QoS 1 publishes until the node acknowledges them (at
//! most the node's `max_inflight` at once: `publish` waits for room — that is the
//! backpressure). A background reader de-duplicates deliveries by message id and
//! hands each to every local [`Subscription`] whose pattern matches; it also hands
//! `reply` frames to the calls waiting for them and starts a handler task for each
//! `call` the node routes to this client (see [`Client::register`], [`Client::call`]).
//! After a reconnect the client subscribes its patterns and registers its procedures
//! again before sending anything else.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use quinn::{Connection, Endpoint, RecvStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{TlsConfig, TransportConfig};
use crate::dedup::DedupWindow;
use crate::fleet::follow::Follower;
use crate::metrics::Metrics;
use crate::session::redial::{Dial, Redialer};
use crate::session::{
    self, now_us, open_session, Outbound, ReliableState, SessionError, WriterConfig,
};
use crate::topic::{self, PatternTrie, TopicError};
use crate::wire::{
    self, Connect, Frame, FrameDecoder, MessageId, Qos, Role, Subscribe, Unsubscribe, WireError,
};

mod read;
mod rpc;
#[cfg(test)]
mod tests;

pub use rpc::{CallError, Registration, DEFAULT_MAX_HANDLERS, DEFAULT_MAX_PENDING_CALLS};

/// How to reach a node.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port` of the node (default `127.0.0.1:9444`).
    pub addr: String,
    /// TLS server name to verify (default `localhost`).
    pub server_name: String,
    /// Realm to join (default `io.macula`); must be the node's realm.
    pub realm: String,
    /// TLS settings (default: development mode, accepts the node's self-signed certificate).
    pub tls: TlsConfig,
    /// QUIC transport settings.
    pub transport: TransportConfig,
    /// Where client-side TLS material lives (unused in development mode).
    pub data_dir: PathBuf,
    /// Largest frame body this client accepts, in bytes.
    pub max_frame_size: u32,
    /// Outgoing queue length, in frames.
    pub queue: usize,
    /// Buffer of each subscription, in messages. QoS 0 deliveries beyond it are
    /// dropped (counted in [`ClientStats::dropped`]); QoS 1 deliveries wait.
    pub subscription_buffer: usize,
    /// De-duplication window per publisher session, in sequence numbers: a duplicate
    /// delivery is dropped while its sequence is less than this behind the highest seen
    /// from its publisher's session ([`DedupWindow`]).
    pub dedup_window: usize,
    /// Retransmit an unacknowledged QoS 1 publish after this long.
    pub ack_timeout: Duration,
    /// Reconnect when the connection is lost (default true): the client then
    /// re-subscribes every pattern and re-sends every unacknowledged QoS 1 publish.
    pub reconnect: bool,
    /// First reconnect delay; doubles (with jitter) up to `reconnect_max_backoff`.
    pub reconnect_initial_backoff: Duration,
    /// Largest reconnect delay.
    pub reconnect_max_backoff: Duration,
    /// Most handler tasks (calls from the node to procedures this client registered)
    /// running at once; a call beyond it is answered `OVERLOADED` (default
    /// [`DEFAULT_MAX_HANDLERS`] = 1024; 0 counts as 1).
    pub rpc_max_handlers: usize,
    /// Most calls this client has in flight at once; [`Client::call`] beyond it fails with
    /// [`CallError::Overloaded`] (default [`DEFAULT_MAX_PENDING_CALLS`] = 65,536; 0 counts
    /// as 1).
    pub rpc_max_pending: usize,
    /// The key that proves this client's node id at `connect` (`docs/AUTH.md`). Default
    /// `None`: a fresh key per [`Client`]. A client with a `credential` needs the key that
    /// credential names.
    pub identity: Option<crate::identity::Identity>,
    /// The operator-signed credential presented at `connect` (bytes; `auth::Credential::from_text`
    /// reads the `mc1.…` form). Needed by nodes whose realm has operator keys. Default `None`.
    pub credential: Option<bytes::Bytes>,
    /// A QUIC endpoint to connect through instead of binding a UDP socket of its own. Default
    /// `None`: each [`Client`] binds one (about 250–400 KB of process memory and a socket
    /// each). Many clients may share one endpoint, with one socket and one quinn endpoint
    /// driver for all of them; a load generator with thousands of clients needs this.
    /// [`Client::shared_endpoint`] makes one. The endpoint's default client configuration is
    /// used, so `tls`, `transport` and `data_dir` are not read when this is set.
    pub endpoint: Option<Endpoint>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let cfg = crate::config::Config::default();
        ClientOptions {
            addr: format!("127.0.0.1:{}", cfg.node.listen.port()),
            server_name: "localhost".into(),
            realm: cfg.node.realm,
            tls: cfg.tls,
            transport: cfg.transport,
            data_dir: cfg.data_dir,
            max_frame_size: cfg.limits.max_frame_size,
            queue: cfg.limits.outbound_queue,
            subscription_buffer: 65_536,
            dedup_window: cfg.limits.dedup_window,
            ack_timeout: Duration::from_millis(cfg.limits.ack_timeout_ms),
            reconnect: true,
            reconnect_initial_backoff: Duration::from_millis(
                cfg.limits.reconnect_initial_backoff_ms,
            ),
            reconnect_max_backoff: Duration::from_millis(cfg.limits.reconnect_max_backoff_ms),
            rpc_max_handlers: DEFAULT_MAX_HANDLERS,
            rpc_max_pending: DEFAULT_MAX_PENDING_CALLS,
            identity: None,
            credential: None,
            endpoint: None,
        }
    }
}

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Resolving, binding or connecting failed.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// Target.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The session failed (handshake refused, connection lost, protocol error).
    #[error("session: {0}")]
    Session(#[from] SessionError),
    /// A topic or pattern is invalid (checked before sending).
    #[error("invalid topic {topic:?}: {source}")]
    InvalidTopic {
        /// The offending topic or pattern.
        topic: String,
        /// Why.
        source: TopicError,
    },
    /// A procedure name is invalid (checked before sending: 1–255 bytes of printable ASCII
    /// without spaces, see [`crate::rpc::validate_procedure`]).
    #[error("invalid procedure {procedure:?}: {reason}")]
    InvalidProcedure {
        /// The offending name.
        procedure: String,
        /// Why.
        reason: String,
    },
    /// Encoding failed (e.g. the frame exceeds the node's max frame size).
    #[error("encode: {0}")]
    Wire(#[from] WireError),
    /// The node refused a request with an error frame.
    #[error("node refused: code {code}: {message}")]
    Refused {
        /// Error code (see `docs/PROTOCOL.md`).
        code: u16,
        /// The node's message.
        message: String,
    },
    /// The node did not answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
}

/// Counters of one client (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Publishes handed to the connection.
    pub published: u64,
    /// QoS 1 publishes acknowledged by the node.
    pub acked: u64,
    /// Deliveries handed to subscriptions.
    pub received: u64,
    /// Deliveries dropped as duplicates.
    pub duplicates: u64,
    /// QoS 0 deliveries dropped because a subscription buffer was full.
    pub dropped: u64,
    /// Sessions re-established after the connection to the node was lost.
    pub reconnects: u64,
    /// QoS 0 publishes [`Client::publish`] accepted whose arrival the node had not confirmed
    /// when their session ended (the connection was lost, or the client closed): they may
    /// have been lost. An upper bound, above the truth by at most ~100 ms plus a round trip
    /// of publishing per lost session (`docs/PROTOCOL.md` §8, "QoS 0 and lost sessions").
    /// QoS 1 publishes are never lost this way: they are re-sent until acknowledged.
    pub qos0_unconfirmed: u64,
    /// Calls made with [`Client::call`].
    pub calls: u64,
    /// Calls made with [`Client::call`] that returned an error (any [`CallError`]).
    pub call_errors: u64,
    /// Calls from the node that a registered handler answered (ok or error; not counted:
    /// calls answered `UNKNOWN_PROCEDURE` or `OVERLOADED`, handlers dropped at their
    /// timeout).
    pub handled: u64,
    /// Replies dropped because no call waited for them any more (it had timed out or
    /// failed).
    pub late_replies: u64,
}

/// A message delivered to a subscription. Topic and payload share the received
/// frame's memory (no copy).
#[derive(Debug, Clone)]
pub struct Message {
    topic: Bytes,
    /// The payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: Qos,
    /// Id set by the publisher.
    pub message_id: MessageId,
    /// Publisher's wall clock at publish, µs since the Unix epoch.
    pub ts_us: Option<u64>,
}

impl Message {
    /// The concrete topic it was published on.
    pub fn topic(&self) -> &str {
        // Validated as UTF-8 when the frame was decoded.
        std::str::from_utf8(&self.topic).unwrap_or("")
    }
}

/// A stream of messages matching one pattern. Dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::Receiver<Message>,
    id: u64,
    pattern: String,
    inner: Arc<Inner>,
}

impl Subscription {
    /// The next message; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// Takes up to `limit` ready messages into `out` (waits for at least one);
    /// returns how many, 0 once the connection is closed.
    pub async fn recv_many(&mut self, out: &mut Vec<Message>, limit: usize) -> usize {
        self.rx.recv_many(out, limit).await
    }

    /// The (normalised) pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.inner.remove_sub(self.id, &self.pattern);
    }
}

type SubTrie = PatternTrie<Vec<(u64, mpsc::Sender<Message>)>>;

struct Inner {
    /// The current connection (replaced on reconnect).
    conn: Mutex<Connection>,
    ctrl: mpsc::Sender<Outbound>,
    data: mpsc::Sender<Outbound>,
    subs: Mutex<SubTrie>,
    subs_snap: ArcSwap<SubTrie>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<u32, ClientError>>>>,
    next_corr: AtomicU64,
    next_sub: AtomicU64,
    session_id: [u8; 8],
    next_seq: AtomicU64,
    published: AtomicU64,
    published_qos1: AtomicU64,
    acked: Arc<AtomicU64>,
    acked_notify: Arc<Notify>,
    /// [`ReliableState::qos0_unconfirmed`].
    qos0_unconfirmed: Arc<AtomicU64>,
    received: AtomicU64,
    duplicates: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    subscription_buffer: usize,
    /// Set by [`Client::close`] before it sends `DISCONNECT`: the session that ends then is
    /// not redialled.
    closing: std::sync::atomic::AtomicBool,
    cancel: CancellationToken,
    tasks: TaskTracker,
    max_frame: u32,
    rpc: rpc::RpcState,
}

/// A connection to a node. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// A client QUIC endpoint for `opts` (its TLS, transport and data directory), bound to an
    /// ephemeral port on every IPv4 address (IPv6 when `opts.addr` resolves to IPv6), for
    /// many clients to share through [`ClientOptions::endpoint`]. The clients' connections
    /// are multiplexed on its one UDP socket by connection ID (RFC 9000 §5.2).
    ///
    /// Errors: [`ClientError::Connect`] (resolve, bind or TLS setup).
    pub async fn shared_endpoint(opts: &ClientOptions) -> Result<Endpoint, ClientError> {
        let addr = resolve(&opts.addr).await?;
        Self::bind_endpoint(opts, addr.is_ipv6()).map_err(|e| ClientError::Connect {
            addr: opts.addr.clone(),
            reason: e.to_string(),
        })
    }

    fn bind_endpoint(
        opts: &ClientOptions,
        ipv6: bool,
    ) -> Result<Endpoint, crate::transport::TransportError> {
        let bind = if ipv6 { "[::]:0" } else { "0.0.0.0:0" };
        crate::transport::client_endpoint(
            bind.parse().expect("valid literal"),
            &opts.tls,
            &opts.transport,
            &opts.data_dir,
        )
    }

    /// Connects and completes the `CONNECT`/`CONNECTED` handshake.
    ///
    /// Errors: [`ClientError::Connect`] (resolve/bind/QUIC), [`ClientError::Session`]
    /// (refused, e.g. unknown realm → `SessionError::Peer { code: 6, .. }`).
    pub async fn connect(opts: ClientOptions) -> Result<Client, ClientError> {
        let cerr = |reason: String| ClientError::Connect {
            addr: opts.addr.clone(),
            reason,
        };
        let endpoint = match &opts.endpoint {
            Some(shared) => shared.clone(),
            None => {
                let addr = resolve(&opts.addr).await?;
                Self::bind_endpoint(&opts, addr.is_ipv6()).map_err(|e| cerr(e.to_string()))?
            }
        };
        let identity = opts
            .identity
            .clone()
            .unwrap_or_else(crate::identity::Identity::generate);
        let first = establish(
            &opts,
            &endpoint,
            &identity,
            &opts.addr,
            session::HANDSHAKE_TIMEOUT,
        )
        .await?;
        let welcome = &first.welcome;
        let (ctrl_tx, ctrl_rx) = mpsc::channel(welcome.max_inflight as usize + 1024);
        let (data_tx, data_rx) = mpsc::channel(opts.queue.max(1));
        let (acks_tx, acks_rx) = session::ack_channel(welcome.max_inflight as usize);
        let queues = session::ReliableQueues {
            ctrl: ctrl_rx,
            data: data_rx,
            acks: acks_rx,
        };
        // Client-side counters are not exported; a private registry keeps them apart.
        let metrics = Metrics::new();
        let state = ReliableState::new(
            welcome.max_inflight as usize,
            opts.ack_timeout,
            Duration::ZERO,
            metrics.clone(),
        );
        let inner = Arc::new(Inner {
            conn: Mutex::new(first.conn.clone()),
            ctrl: ctrl_tx,
            data: data_tx,
            subs: Mutex::new(PatternTrie::new()),
            subs_snap: ArcSwap::from_pointee(PatternTrie::new()),
            pending: Mutex::new(HashMap::new()),
            next_corr: AtomicU64::new(2),
            next_sub: AtomicU64::new(1),
            session_id: rand::random(),
            next_seq: AtomicU64::new(0),
            published: AtomicU64::new(0),
            published_qos1: AtomicU64::new(0),
            acked: state.acked.clone(),
            acked_notify: state.acked_notify.clone(),
            qos0_unconfirmed: state.qos0_unconfirmed.clone(),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            subscription_buffer: opts.subscription_buffer.max(1),
            closing: Default::default(),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            max_frame: welcome.max_frame_size,
            rpc: rpc::RpcState::new(opts.rpc_max_handlers, opts.rpc_max_pending),
        });
        let manager = SessionManager {
            inner: inner.clone(),
            opts,
            endpoint,
            identity,
            state,
            queues,
            acks_tx,
            dedup: None,
            wcfg: WriterConfig {
                write_timeout: Duration::from_secs(30),
                metrics,
            },
        };
        inner.tasks.spawn(manager.run(first));
        inner.tasks.close();
        Ok(Client { inner })
    }

    /// Publishes `payload` on `topic`. Returns once the frame is queued; with QoS 1
    /// it waits while `max_inflight` publishes are unacknowledged. Use
    /// [`flush`](Self::flush) to wait for acknowledgements.
    ///
    /// Errors: [`ClientError::InvalidTopic`], [`ClientError::Wire`] (too large),
    /// [`ClientError::Closed`].
    pub async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: Qos,
    ) -> Result<MessageId, ClientError> {
        let mut buf = BytesMut::new();
        self.publish_buf(&mut buf, topic, &payload, qos).await
    }

    /// Like [`publish`](Self::publish) but encodes into `arena`, so a publishing
    /// loop that reuses one arena allocates once per ~64 KiB instead of once per
    /// message.
    pub async fn publish_buf(
        &self,
        arena: &mut BytesMut,
        topic: &str,
        payload: &[u8],
        qos: Qos,
    ) -> Result<MessageId, ClientError> {
        topic::validate_topic(topic).map_err(|source| ClientError::InvalidTopic {
            topic: topic.into(),
            source,
        })?;
        let inner = &self.inner;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&inner.session_id);
        id[8..].copy_from_slice(&inner.next_seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        if arena.capacity() - arena.len() < payload.len() + topic.len() + 64 {
            arena.reserve((payload.len() + topic.len() + 64).max(64 * 1024));
        }
        wire::encode_publish(arena, topic, payload, qos, &id, Some(now_us()))?;
        let frame = arena.split().freeze();
        if frame.len() > inner.max_frame as usize + wire::HEADER_LEN {
            return Err(ClientError::Wire(WireError::FrameTooLarge {
                len: frame.len() as u64,
                max: inner.max_frame,
            }));
        }
        let item = match qos {
            Qos::AtMostOnce => Outbound::Frame(frame),
            Qos::AtLeastOnce => {
                inner.published_qos1.fetch_add(1, Ordering::Relaxed);
                Outbound::Custody(id, frame)
            }
        };
        inner
            .data
            .send(item)
            .await
            .map_err(|_| ClientError::Closed)?;
        inner.published.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Waits until every QoS 1 publish made so far is acknowledged (or `timeout`).
    pub async fn flush(&self, timeout: Duration) -> Result<(), ClientError> {
        let inner = &self.inner;
        let target = inner.published_qos1.load(Ordering::Acquire);
        let wait = async {
            loop {
                let notified = inner.acked_notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if inner.acked.load(Ordering::Acquire) >= target {
                    return Ok(());
                }
                if inner.cancel.is_cancelled() {
                    return Err(ClientError::Closed);
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::Timeout("acknowledgements"))?
    }

    /// Subscribes to `pattern` (`*` = one segment, `**` = zero or more). Resolves when
    /// the node confirms with `SUBACK`.
    ///
    /// Errors: [`ClientError::InvalidTopic`], [`ClientError::Refused`],
    /// [`ClientError::Timeout`], [`ClientError::Closed`].
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, ClientError> {
        let pattern =
            topic::normalize_pattern(pattern).map_err(|source| ClientError::InvalidTopic {
                topic: pattern.into(),
                source,
            })?;
        let inner = &self.inner;
        let (tx, rx) = mpsc::channel(inner.subscription_buffer);
        let id = inner.next_sub.fetch_add(1, Ordering::Relaxed);
        {
            let mut subs = inner.subs.lock().unwrap_or_else(|e| e.into_inner());
            subs.entry_or_insert_with(&pattern, Vec::new).push((id, tx));
            inner.subs_snap.store(Arc::new(subs.clone()));
        }
        let sub = Subscription {
            rx,
            id,
            pattern: pattern.clone(),
            inner: inner.clone(),
        };
        let corr = inner.next_corr.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::Subscribe(Subscribe {
            topics: vec![pattern],
            qos: Qos::AtLeastOnce,
            correlation_id: corr,
        });
        inner.request(corr, frame).await?;
        Ok(sub)
    }

    /// Unsubscribes explicitly and waits for the node's confirmation.
    pub async fn unsubscribe(&self, sub: Subscription) -> Result<(), ClientError> {
        let pattern = sub.pattern.clone();
        let still_held = {
            let inner = &self.inner;
            let mut subs = inner.subs.lock().unwrap_or_else(|e| e.into_inner());
            let held = Inner::remove_local(&mut subs, sub.id, &pattern);
            inner.subs_snap.store(Arc::new(subs.clone()));
            held
        };
        std::mem::forget(sub);
        if still_held {
            return Ok(());
        }
        let corr = self.inner.next_corr.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::Unsubscribe(Unsubscribe {
            topics: vec![pattern],
            correlation_id: corr,
        });
        self.inner.request(corr, frame).await.map(|_| ())
    }

    /// Current counters.
    pub fn stats(&self) -> ClientStats {
        let i = &self.inner;
        ClientStats {
            published: i.published.load(Ordering::Relaxed),
            acked: i.acked.load(Ordering::Relaxed),
            received: i.received.load(Ordering::Relaxed),
            duplicates: i.duplicates.load(Ordering::Relaxed),
            dropped: i.dropped.load(Ordering::Relaxed),
            reconnects: i.reconnects.load(Ordering::Relaxed),
            qos0_unconfirmed: i.qos0_unconfirmed.load(Ordering::Relaxed),
            calls: i.rpc.calls.load(Ordering::Relaxed),
            call_errors: i.rpc.call_errors.load(Ordering::Relaxed),
            handled: i.rpc.handled.load(Ordering::Relaxed),
            late_replies: i.rpc.late_replies.load(Ordering::Relaxed),
        }
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Closes gracefully, as NATS's `drain` does, within
    /// [`defaults::CLIENT_CLOSE_DRAIN`](crate::defaults::CLIENT_CLOSE_DRAIN) (2 s): waits
    /// until the QoS 1 publishes made so far are acknowledged ([`Client::flush`]), queues
    /// `DISCONNECT` behind the publishes still queued, and waits until the node — having read
    /// everything before it — closes the connection (PROTOCOL §5.3). Then it closes the
    /// connection itself and waits for the background tasks. What is still queued when the
    /// bound passes, or when the connection is down, is never sent
    /// ([`ClientStats::qos0_unconfirmed`]). Subscriptions end; handlers stop.
    pub async fn close(self) {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + crate::defaults::CLIENT_CLOSE_DRAIN;
        let _ = self.flush(crate::defaults::CLIENT_CLOSE_DRAIN).await;
        let conn = inner.conn.lock().unwrap_or_else(|e| e.into_inner()).clone();
        inner.closing.store(true, Ordering::Release);
        let bye = Frame::Disconnect(wire::Disconnect {
            code: 0,
            reason: "bye".into(),
        });
        // On the data queue: written after every publish queued before it.
        let queued =
            tokio::time::timeout_at(deadline, inner.data.send(Outbound::Frame(bye.to_bytes())))
                .await;
        if matches!(queued, Ok(Ok(()))) {
            let _ = tokio::time::timeout_at(deadline, conn.closed()).await;
        }
        inner.cancel.cancel();
        conn.close(0u32.into(), b"bye");
        let _ = tokio::time::timeout(Duration::from_secs(2), inner.tasks.wait()).await;
    }
}

impl Inner {
    async fn request(&self, corr: u64, frame: Frame) -> Result<u32, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(corr, tx);
        self.ctrl
            .send(Outbound::Frame(frame.to_bytes()))
            .await
            .map_err(|_| ClientError::Closed)?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&corr);
                Err(ClientError::Timeout("SUBACK"))
            }
        }
    }

    fn resolve(&self, corr: u64, r: Result<u32, ClientError>) -> bool {
        match self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&corr)
        {
            Some(tx) => {
                let _ = tx.send(r);
                true
            }
            None => false,
        }
    }

    fn fail_pending(&self, _err: Option<SessionError>) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Removes subscription `id`; true if another local subscription still holds the pattern.
    fn remove_local(subs: &mut SubTrie, id: u64, pattern: &str) -> bool {
        let mut still = false;
        if let Some(v) = subs.get_mut(pattern) {
            v.retain(|(i, _)| *i != id);
            still = !v.is_empty();
        }
        if !still {
            subs.remove(pattern);
        }
        still
    }

    fn remove_sub(&self, id: u64, pattern: &str) {
        let still = {
            let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
            let held = Self::remove_local(&mut subs, id, pattern);
            self.subs_snap.store(Arc::new(subs.clone()));
            held
        };
        if !still {
            let corr = self.next_corr.fetch_add(1, Ordering::Relaxed);
            let f = Frame::Unsubscribe(Unsubscribe {
                topics: vec![pattern.to_string()],
                correlation_id: corr,
            });
            let _ = self.ctrl.try_send(Outbound::Frame(f.to_bytes()));
        }
    }
}

/// One established session: the connection, its stream and the node's `CONNECTED`.
struct Established {
    conn: Connection,
    send: quinn::SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
    welcome: wire::Connected,
}

/// Resolves `target` (`host:port`) to its first address.
async fn resolve(target: &str) -> Result<std::net::SocketAddr, ClientError> {
    let cerr = |reason: String| ClientError::Connect {
        addr: target.to_string(),
        reason,
    };
    tokio::net::lookup_host(target)
        .await
        .map_err(|e| cerr(e.to_string()))?
        .next()
        .ok_or_else(|| cerr("no address".into()))
}

/// QUIC handshake with `target` (`host:port`, resolved again on every call, so a moved node
/// is found) within `timeout`, plus `CONNECT`/`CONNECTED`.
async fn establish(
    opts: &ClientOptions,
    endpoint: &Endpoint,
    identity: &crate::identity::Identity,
    target: &str,
    timeout: Duration,
) -> Result<Established, ClientError> {
    let cerr = |reason: String| ClientError::Connect {
        addr: target.to_string(),
        reason,
    };
    let addr = resolve(target).await?;
    let connecting = endpoint
        .connect(addr, &opts.server_name)
        .map_err(|e| cerr(e.to_string()))?;
    let conn = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ClientError::Timeout("QUIC handshake"))?
        .map_err(|e| cerr(e.to_string()))?;
    let connect = Connect {
        versions: vec![wire::PROTOCOL_VERSION],
        node_id: identity.node_id(),
        realm: opts.realm.clone(),
        cluster: String::new(),
        role: Role::Client,
        capabilities: vec!["pubsub".into(), "qos1".into()],
        max_frame_size: opts.max_frame_size,
        correlation_id: 1,
        proof: None,
        credential: opts.credential.clone(),
    };
    let (send, recv, decoder, welcome) =
        open_session(&conn, connect, opts.max_frame_size, identity).await?;
    Ok(Established {
        conn,
        send,
        recv,
        decoder,
        welcome,
    })
}

/// Owns what outlives one connection — QoS 1 custody, the queues, the
/// de-duplication window — and re-establishes the session when it is lost.
struct SessionManager {
    inner: Arc<Inner>,
    opts: ClientOptions,
    endpoint: Endpoint,
    /// This client's key, made at `connect` (one per `Client`; it proves the node id).
    identity: crate::identity::Identity,
    state: ReliableState,
    queues: session::ReliableQueues,
    acks_tx: mpsc::Sender<session::Confirm>,
    dedup: Option<DedupWindow>,
    wcfg: WriterConfig,
}

impl SessionManager {
    async fn run(mut self, first: Established) {
        let inner = self.inner.clone();
        let mut dedup = self
            .dedup
            .take()
            .unwrap_or_else(|| DedupWindow::new(self.opts.dedup_window));
        let mut next = Some(first);
        // One target (the node; a node never redirects its clients), the shared redial loop:
        // the first attempt at once, then the backoff with jitter between rounds.
        let mut redial = Redialer::new(
            vec![self.opts.addr.clone()],
            Arc::new(Mutex::new(Follower::new(0))),
            session::backoff::Backoff::new(
                self.opts.reconnect_initial_backoff,
                self.opts.reconnect_max_backoff,
            ),
            self.wcfg.metrics.fleet.redirects_followed_total.clone(),
        );
        let timeouts = (session::HANDSHAKE_TIMEOUT, session::HANDSHAKE_TIMEOUT);
        loop {
            let est = match next.take() {
                Some(e) => e,
                None => {
                    let (opts, endpoint, identity) = (&self.opts, &self.endpoint, &self.identity);
                    let opened = redial
                        .connect(&inner.cancel, timeouts, |target, _, timeout| async move {
                            match establish(opts, endpoint, identity, &target, timeout).await {
                                Ok(e) => Dial::Open(e),
                                Err(ClientError::Session(SessionError::Redirected(r))) => {
                                    Dial::Redirected(r)
                                }
                                // The node refused us (e.g. the realm is gone): retrying
                                // cannot help.
                                Err(e @ ClientError::Session(SessionError::Peer { .. })) => {
                                    Dial::Refused(e)
                                }
                                Err(e) => Dial::Failed(e),
                            }
                        })
                        .await;
                    match opened {
                        Some((_, e)) => {
                            inner.reconnects.fetch_add(1, Ordering::Relaxed);
                            e
                        }
                        None => break,
                    }
                }
            };
            redial.reset_backoff();
            let Established {
                conn,
                mut send,
                recv,
                decoder,
                welcome,
            } = est;
            *inner.conn.lock().unwrap_or_else(|e| e.into_inner()) = conn.clone();
            inner.rpc.begin_session();
            self.state.window = (welcome.max_inflight as usize).max(1);
            if inner.reconnects.load(Ordering::Relaxed) > 0 && self.resume(&mut send).await.is_err()
            {
                conn.close(0u32.into(), b"resume failed");
                // The calls resume() drained may be lost with the stream.
                inner.rpc.fail_calls();
                continue;
            }
            let reader = {
                let (inner, acks) = (inner.clone(), self.acks_tx.clone());
                let mut window = dedup;
                async move {
                    let r = read::reader(&inner, recv, decoder, &mut window, &acks).await;
                    (r, window)
                }
            };
            let span =
                tracing::debug_span!("link", kind = "client", remote.addr = %conn.remote_address());
            // Closing: what the writer wrote (the DISCONNECT) is flushed before the stream ends.
            let on_stop = session::link::StopClose {
                code: None,
                finish: true,
            };
            let (w, r) = session::link::run_reliable(
                &conn,
                &mut send,
                &mut self.state,
                &mut self.queues,
                &self.wcfg,
                &session::link::LinkTasks {
                    tracker: inner.tasks.clone(),
                    span,
                },
                reader,
                (inner.cancel.cancelled(), on_stop),
            )
            .await;
            let r = match r {
                Ok((r, window)) => {
                    dedup = window;
                    r
                }
                Err(e) => {
                    dedup = DedupWindow::new(self.opts.dedup_window);
                    Err(SessionError::Protocol(format!("reader task failed: {e}")))
                }
            };
            tracing::debug!(writer = ?w.err(), reader = ?r.err(), "client session ended");
            // The node forgot the calls of this session: fail them now, not at their timeout.
            inner.rpc.fail_calls();
            inner.acked_notify.notify_waiters();
            if inner.cancel.is_cancelled()
                || inner.closing.load(Ordering::Acquire)
                || !self.opts.reconnect
            {
                break;
            }
            redial.ended(&self.opts.addr);
        }
        // Cancel first: a call or request that checks `cancel` after its waiter is in a
        // table is failed below; one that checks before sees the cancellation.
        inner.cancel.cancel();
        // QoS 0 publishes still queued never leave.
        self.queues.data.close();
        let mut never_sent = 0;
        while let Ok(item) = self.queues.data.try_recv() {
            never_sent += u64::from(matches!(item, Outbound::Frame(_)));
        }
        self.state.never_sent(never_sent);
        inner.fail_pending(None);
        inner.rpc.fail_calls();
        inner.rpc.clear_handlers();
        inner.acked_notify.notify_waiters();
    }

    /// After a reconnect: announce every pattern and register every procedure again,
    /// then re-send the control frames queued during the outage (pending
    /// SUBSCRIBE/UNSUBSCRIBE/REGISTER/UNREGISTER requests keep their correlation ids, so
    /// their callers still get a SUBACK; CALLs only while their caller still waits).
    /// Acknowledgements and REPLYs owed to the previous session are dropped: the node
    /// forgot those deliveries and calls.
    async fn resume(&mut self, send: &mut quinn::SendStream) -> Result<(), quinn::WriteError> {
        let patterns: Vec<String> = {
            let subs = self.inner.subs.lock().unwrap_or_else(|e| e.into_inner());
            subs.iter().map(|(p, _)| p).collect()
        };
        let mut frames = Vec::new();
        for chunk in patterns.chunks(1000) {
            frames.push(
                Frame::Subscribe(Subscribe {
                    topics: chunk.to_vec(),
                    qos: Qos::AtLeastOnce,
                    correlation_id: 0,
                })
                .to_bytes(),
            );
        }
        frames.extend(rpc::register_frames(&self.inner.rpc.procedures()));
        while let Ok(item) = self.queues.ctrl.try_recv() {
            if let Outbound::Frame(f) = item {
                if self.inner.rpc.keep_on_resume(&f) {
                    frames.push(f);
                }
            }
        }
        for f in frames {
            send.write_all(&f).await?;
        }
        Ok(())
    }
}
