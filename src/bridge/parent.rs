//! The parent link of one realm: a child bridge's connection to the level above
//! (`docs/DISCOVERY.md`, "Topology and links"), the bridge-side twin of a node's uplink.
//!
//! One task per realm (when `bridge.parents` is set) dials the parents in order and keeps
//! the first that accepts, reconnecting with exponential backoff and jitter, and declares it
//! dead after [`defaults::UPLINK_DEAD_AFTER`] of silence (heartbeat every
//! [`defaults::UPLINK_HEARTBEAT`], as [`session::Liveness`] does for node uplinks). It
//! connects with role `node`, the realm, cluster `bridge-<level>` and capability `bridge`: the
//! parent serves it exactly like a node uplink.
//!
//! While a session is up the task
//! - **advertises** the realm's subtree index, aggregated: everything on (re)connection, then
//!   each change ([`super::index::Upward`]) as the index reports it, and everything again
//!   every `dht.record_ttl_ms / 2`. Records are stored with `ttl_ms = dht.record_ttl_ms`
//!   whatever their remaining lifetime here; a record that goes here is withdrawn explicitly;
//! - **carries lookups** this bridge escalates ([`ParentSession::find_value`], correlated by
//!   id, at most [`super::MAX_LOOKUPS`] in flight);
//! - **routes calls** the parent sends down, and replies to calls this bridge sent up.
//!
//! The parent's interest frames (`subscribe` / `unsubscribe` it pushes to every node link) are
//! ignored: pub/sub does not cross bridge levels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::index::{RecordKey, Upward};
use super::rpc::{self, Link};
use super::{lock, Realm, Shared};
use crate::defaults;
use crate::escalation::{LookupError, ESCALATION_TIMEOUT};
use crate::session::{
    self, fill, open_session, Liveness, Outbound, ReliableQueues, ReliableState, SessionError,
    WriterConfig,
};
use crate::wire::{
    self, Connect, Connected, ErrorCode, FindValue, FindValueReply, Frame, FrameDecoder,
    MessageType, NodeId, Pong, RawFrame, Role, Store, WireContact,
};

/// Most index changes taken from the index at once (one lock hold) for the parent.
pub const UPWARD_BATCH: usize = 256;

/// Shortest period of the full re-advertisement, whatever `dht.record_ttl_ms` says.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);

/// Why dialing a parent failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The parent's `host:port` did not resolve.
    #[error("resolving {addr}: {source}")]
    Resolve {
        /// The configured parent.
        addr: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The parent's `host:port` resolved to no address.
    #[error("{addr} resolved to no address")]
    NoAddress {
        /// The configured parent.
        addr: String,
    },
    /// quinn refused to start the connection (bad server name, endpoint closed).
    #[error("connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[from] quinn::ConnectionError),
    /// The QUIC handshake took longer than [`session::HANDSHAKE_TIMEOUT`].
    #[error("handshake timed out")]
    Timeout,
    /// The parent refused the session (`CONNECT` answered by an error) or broke the handshake.
    #[error("session: {0}")]
    Session(#[from] SessionError),
}

type Answer = Result<FindValueReply, String>;

/// One session with the parent, shared with lookups and call routing while it is up.
pub(super) struct ParentSession {
    /// The link's sending half (key unique to this session).
    pub(super) link: Link,
    /// Lookups waiting for their `find_value_reply`, by correlation id.
    queries: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_corr: AtomicU64,
}

impl ParentSession {
    fn new(link: Link) -> Self {
        ParentSession {
            link,
            queries: Mutex::new(HashMap::new()),
            next_corr: AtomicU64::new(1),
        }
    }

    fn next_corr(&self) -> u64 {
        self.next_corr.fetch_add(1, Ordering::Relaxed)
    }

    /// Asks the parent for the records under `key`; `path` already ends with this bridge.
    /// Waits at most [`ESCALATION_TIMEOUT`].
    ///
    /// Errors: [`LookupError::Timeout`]; [`LookupError::Upstream`] when the frame cannot be
    /// queued, the session ends first, or the parent answers with an error frame.
    pub(super) async fn find_value(
        &self,
        key: RecordKey,
        path: Vec<NodeId>,
        sender: WireContact,
    ) -> Result<FindValueReply, LookupError> {
        let corr = self.next_corr();
        let (tx, rx) = oneshot::channel();
        lock(&self.queries).insert(corr, tx);
        // Removes the entry however this future ends (answer, timeout, cancellation).
        let _forget = Forget {
            queries: &self.queries,
            corr,
        };
        let sent = self.link.send(Frame::FindValue(FindValue {
            correlation_id: corr,
            key,
            sender,
            path,
        }));
        if !sent {
            return Err(LookupError::Upstream("parent link queue full".into()));
        }
        match tokio::time::timeout(ESCALATION_TIMEOUT, rx).await {
            Err(_) => Err(LookupError::Timeout),
            Ok(Err(_)) => Err(LookupError::Upstream("parent link closed".into())),
            Ok(Ok(Err(msg))) => Err(LookupError::Upstream(msg)),
            Ok(Ok(Ok(reply))) => Ok(reply),
        }
    }

    /// Hands an answer to the lookup waiting for `corr`; false if none waits.
    fn complete(&self, corr: u64, answer: Answer) -> bool {
        match lock(&self.queries).remove(&corr) {
            Some(tx) => {
                let _ = tx.send(answer);
                true
            }
            None => false,
        }
    }

    /// The session ended: every waiting lookup fails at once.
    fn close(&self) {
        lock(&self.queries).clear();
    }
}

struct Forget<'a> {
    queries: &'a Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    corr: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.queries).remove(&self.corr);
    }
}

/// The parent-link task of `realm`: dial, serve the session, reconnect, until `cancel`.
pub(super) async fn run_parent(
    shared: Arc<Shared>,
    realm: Arc<Realm>,
    endpoint: Endpoint,
    cancel: CancellationToken,
) {
    let limits = &shared.cfg.limits;
    let initial = Duration::from_millis(limits.reconnect_initial_backoff_ms.max(1));
    let max = Duration::from_millis(limits.reconnect_max_backoff_ms.max(1));
    let mut backoff = initial;
    let mut attempt: u64 = 0;
    while !cancel.is_cancelled() {
        if attempt > 0 {
            let jitter = rand::random_range(0..=backoff.as_millis() as u64 / 4);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
            }
            backoff = (backoff * 2).min(max);
        }
        attempt += 1;
        let dialed = tokio::select! {
            _ = cancel.cancelled() => break,
            d = dial_first(&shared, &realm, &endpoint) => d,
        };
        let Some(dialed) = dialed else {
            continue;
        };
        backoff = initial;
        let parent = dialed.parent.clone();
        info!(parent = %parent, "parent link connected");
        serve(&shared, &realm, dialed, &cancel).await;
        if !cancel.is_cancelled() {
            warn!(parent = %parent, "parent link lost; reconnecting");
        }
    }
}

/// An open session with a parent, fresh from the handshake.
struct Dialed {
    /// The configured `host:port` that accepted.
    parent: String,
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
    /// The parent's `CONNECTED`: its frame size and in-flight limits.
    welcome: Connected,
}

/// Tries every configured parent in order; the first session that opens wins.
async fn dial_first(shared: &Shared, realm: &Realm, endpoint: &Endpoint) -> Option<Dialed> {
    for parent in &shared.cfg.bridge.parents {
        match dial(shared, realm, endpoint, parent).await {
            Ok(d) => return Some(d),
            Err(e) => debug!(parent = %parent, error = %e, "parent connect failed"),
        }
    }
    None
}

async fn dial(
    shared: &Shared,
    realm: &Realm,
    endpoint: &Endpoint,
    parent: &str,
) -> Result<Dialed, DialError> {
    let addr = tokio::net::lookup_host(parent)
        .await
        .map_err(|source| DialError::Resolve {
            addr: parent.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| DialError::NoAddress {
            addr: parent.to_string(),
        })?;
    let connecting = endpoint.connect(addr, &shared.cfg.bridge.parent_server_name)?;
    let conn = tokio::time::timeout(session::HANDSHAKE_TIMEOUT, connecting)
        .await
        .map_err(|_| DialError::Timeout)??;
    let connect = Connect {
        versions: vec![wire::PROTOCOL_VERSION],
        node_id: shared.node_id,
        realm: realm.name.to_string(),
        cluster: format!("bridge-{}", shared.cfg.bridge.level),
        role: Role::Node,
        capabilities: vec!["bridge".into()],
        max_frame_size: shared.cfg.limits.max_frame_size,
        correlation_id: 1,
    };
    match open_session(&conn, connect, shared.cfg.limits.max_frame_size).await {
        Ok((send, recv, decoder, welcome)) => Ok(Dialed {
            parent: parent.to_string(),
            conn,
            send,
            recv,
            decoder,
            welcome,
        }),
        Err(e) => {
            conn.close(0u32.into(), b"session refused");
            Err(e.into())
        }
    }
}

/// Serves one parent session until it ends or `cancel`; then the parent is marked down,
/// waiting lookups fail and calls forwarded up are answered `UNREACHABLE`.
async fn serve(shared: &Arc<Shared>, realm: &Arc<Realm>, d: Dialed, cancel: &CancellationToken) {
    let Dialed {
        conn,
        mut send,
        recv,
        decoder,
        welcome,
        ..
    } = d;
    let metrics = &shared.metrics;
    let limits = &shared.cfg.limits;
    let key = shared.next_key.fetch_add(1, Ordering::Relaxed);
    let (ctrl_tx, ctrl_rx) = mpsc::channel(limits.max_inflight as usize + 1024);
    // Nothing is published up: the data queue stays empty, its sender only keeps it open.
    let (_data_tx, data_rx) = mpsc::channel(1);
    let (_acks_tx, acks_rx) = session::ack_channel(1);
    let mut queues = ReliableQueues {
        ctrl: ctrl_rx,
        data: data_rx,
        acks: acks_rx,
    };
    let mut state = ReliableState::new(
        (welcome.max_inflight as usize).max(1),
        Duration::from_millis(limits.ack_timeout_ms),
        Duration::ZERO,
        metrics.clone(),
    );
    let wcfg = WriterConfig {
        write_timeout: Duration::from_millis(limits.slow_consumer_timeout_ms.max(1)),
        metrics: metrics.clone(),
    };
    let session = Arc::new(ParentSession::new(Link {
        key,
        ctrl: ctrl_tx.clone(),
        max_frame: welcome.max_frame_size as usize + wire::HEADER_LEN,
        parent: true,
        node: None,
        peer: false,
    }));
    // The parent holds nothing of ours on a new session: everything is stored again.
    lock(&realm.index).resync();
    realm.parent.store(Some(session.clone()));
    realm.upward.notify_one();
    let parent_id = welcome.node_id;
    shared.gossip.send(super::gossip::Cmd::ParentUp {
        realm: realm.name.clone(),
        id: parent_id,
        tx: ctrl_tx.clone(),
    });
    let open = metrics.connections_open.with_label_values(&["uplink"]);
    open.inc();

    let liveness = Liveness::new(defaults::UPLINK_HEARTBEAT, defaults::UPLINK_DEAD_AFTER);
    let session_cancel = CancellationToken::new();
    let writer = async {
        let r = session::run_reliable_writer(
            &mut send,
            &mut state,
            &mut queues,
            &session_cancel,
            &wcfg,
            Some(&liveness),
        )
        .await;
        conn.close(0u32.into(), b"parent writer ended");
        r
    };
    let reader = async {
        let r = read(shared, realm, &session, parent_id, recv, decoder, &liveness).await;
        session_cancel.cancel();
        r
    };
    tokio::select! {
        (w, r) = async { tokio::join!(writer, reader) } => {
            debug!(writer = ?w.err(), reader = ?r.err(), "parent session ended");
        }
        _ = advertise(shared, realm, &session) => {}
        _ = cancel.cancelled() => {
            conn.close((ErrorCode::ShuttingDown as u32).into(), b"shutting down");
        }
    }
    realm.parent.store(None);
    shared.gossip.send(super::gossip::Cmd::ParentDown {
        realm: realm.name.clone(),
    });
    session.close();
    rpc::link_closed(shared, realm, key);
    open.dec();
}

/// Sends the index's changes to the parent as they come, and everything every
/// `record_ttl_ms / 2`. Returns only when the session's queue closed.
async fn advertise(shared: &Shared, realm: &Realm, session: &ParentSession) {
    let record_ttl = shared.cfg.dht.record_ttl_ms;
    let period = Duration::from_millis(record_ttl / 2).max(MIN_REFRESH);
    let ttl_ms = u32::try_from(record_ttl).unwrap_or(u32::MAX);
    let start = tokio::time::Instant::now() + period;
    let mut refresh = tokio::time::interval_at(start, period);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = realm.upward.notified() => {}
            _ = refresh.tick() => lock(&realm.index).refresh_all(),
        }
        loop {
            let batch = lock(&realm.index).take_upward(UPWARD_BATCH);
            if batch.is_empty() {
                break;
            }
            for change in batch {
                let (key, publisher, value, ttl) = match change {
                    Upward::Store {
                        key,
                        publisher,
                        record,
                    } => (key, publisher, record.encode(), ttl_ms),
                    Upward::Withdraw { key, publisher } => (key, publisher, Default::default(), 0),
                };
                let frame = Frame::Store(Store {
                    correlation_id: session.next_corr(),
                    key,
                    value,
                    ttl_ms: ttl,
                    publisher,
                });
                // Backpressure, not loss: the changes leave in the order they were taken.
                let item = Outbound::Frame(frame.to_bytes());
                if session.link.ctrl.send(item).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads what the parent sends until the session ends.
async fn read(
    shared: &Arc<Shared>,
    realm: &Arc<Realm>,
    session: &ParentSession,
    parent_id: NodeId,
    mut recv: RecvStream,
    mut decoder: FrameDecoder,
    liveness: &Liveness,
) -> Result<(), SessionError> {
    loop {
        while let Some(raw) = decoder.next_frame()? {
            shared
                .metrics
                .frames_in
                .inc(raw.header.msg_type, raw.bytes.len());
            if on_frame(shared, realm, session, parent_id, &raw) {
                return Ok(());
            }
        }
        if !fill(&mut recv, &mut decoder).await? {
            return Err(SessionError::Eof);
        }
        liveness.touch();
    }
}

/// Handles one frame from the parent; `true` ends the session (the parent said goodbye).
fn on_frame(
    shared: &Arc<Shared>,
    realm: &Arc<Realm>,
    session: &ParentSession,
    parent_id: NodeId,
    raw: &RawFrame,
) -> bool {
    let metrics = &shared.metrics;
    let link = &session.link;
    let Some(t) = raw.msg_type() else {
        let msg = format!("unknown message type 0x{:02x}", raw.header.msg_type);
        link.send_error(metrics, ErrorCode::UnknownType, msg, None);
        return false;
    };
    match t {
        // Pub/sub does not cross bridge levels; the parent's interest is ignored.
        MessageType::Subscribe
        | MessageType::Unsubscribe
        | MessageType::SubAck
        | MessageType::PubAck
        | MessageType::Publish
        | MessageType::Pong
        | MessageType::StoreAck => trace!(frame = t.as_str(), "ignored from the parent"),
        MessageType::Ping => {
            if let Ok(Frame::Ping(p)) = raw.decode() {
                link.send(Frame::Pong(Pong {
                    correlation_id: p.correlation_id,
                }));
            }
        }
        MessageType::Disconnect => return true,
        MessageType::GossipPush
        | MessageType::GossipPull
        | MessageType::GossipPullReply
        | MessageType::GossipSync
        | MessageType::GossipSyncReply => {
            if let Err((code, msg)) =
                super::gossip::on_parent_frame(shared, &realm.name, parent_id, raw)
            {
                link.send_error(metrics, code, msg, None);
            }
        }
        _ => match raw.decode() {
            Ok(Frame::FindValueReply(r)) => {
                if !session.complete(r.correlation_id, Ok(r)) {
                    metrics.rpc.dht_unknown_replies_total.inc();
                }
            }
            Ok(Frame::Error(e)) => {
                let answered = e
                    .correlation_id
                    .is_some_and(|c| session.complete(c, Err(e.message.clone())));
                if !answered {
                    debug!(code = e.code, message = %e.message, "parent reported an error");
                }
            }
            Ok(Frame::Call(c)) => rpc::on_call(shared, realm, link, c),
            Ok(Frame::Reply(r)) => rpc::on_reply(shared, link, r),
            Ok(other) => {
                let msg = format!(
                    "{} is not accepted from a parent",
                    other.msg_type().as_str()
                );
                link.send_error(metrics, ErrorCode::Protocol, msg, None);
            }
            Err(e) => link.send_error(metrics, e.code(), e.to_string(), None),
        },
    }
    false
}
