//! The parent link of one realm: a child bridge's connection to the level above
//! (`docs/DISCOVERY.md`, "Topology and links"), the bridge-side twin of a node's uplink.
//!
//! One task per realm (when `bridge.parents` is set) dials the parents in order and keeps
//! the first that accepts, reconnecting with exponential backoff and jitter; QUIC declares it
//! dead after `transport.link_idle_timeout_ms` (3 s) in which nothing, not even an
//! acknowledgement of a keep-alive, arrived (as for node uplinks, `docs/PROTOCOL.md` §9). It
//! connects with role `node`, the realm, cluster `bridge-<level>` and capability `bridge`: the
//! parent serves it exactly like a node uplink. A fleet worker adds `fleet=<name>`: its
//! parent groups the workers of one fleet as one child (`docs/FLEET.md`, "Fleets inside the
//! hierarchy").
//!
//! **A parent level served by a fleet** places this bridge like a node
//! ([`crate::fleet::hash::child_bridge_key`]): the link follows `redirect` frames (refusing
//! the `connect`, or during a session), keeps the directory (`fleet_view`) and dials the owner
//! first, and after losing its worker re-homes on another, never back to the one just lost
//! for [`defaults::FLEET_LOST_WORKER_MEMORY`] ([`Follower`], the node uplink's rules).
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
//! - **relays pub/sub** both ways (`crate::relay`): the parent link is the realm relay's
//!   uplink, so the parent is told the minimal cover of the subtree's interest (on each new
//!   session all of it, the last `subscribe` carrying `INTEREST_SYNC`), the parent's
//!   interest (what the rest of the hierarchy wants) reaches every child, publishes from the
//!   children that the rest wants go up, and publishes from the parent go down to the
//!   children that want them, never back up. QoS 1 acknowledgements chain across the link
//!   both ways (`AckTrack`). The link keeps its key and its interest across sessions: while
//!   it is down, or until a new session's interest snapshot is complete, QoS 1 publishes
//!   routed to it are held unacknowledged (their origins keep custody and resend them);
//!   patterns the new snapshot no longer holds are then withdrawn.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::gossip::BridgeGossip;
use super::index::{RecordKey, Upward};
use super::pubsub::BridgePubSub;
use super::rpc::BridgeRpc;
use super::rpc::Link;
use super::{lock, Realm};
use crate::defaults;
use crate::escalation::{Level, LookupError, ESCALATION_TIMEOUT};
use crate::fleet::follow::{Followed, Follower};
use crate::metrics::Metrics;
use crate::session::link::{LinkActor, LinkIo, LinkTasks};
use crate::session::read::{Fatal, Flow, FrameHandler, ReadEnd};
use crate::session::redial::{quic_connect, Dial, DialError, Redialer};
use crate::session::{self, open_session, AckTrack, Outbound, PeerTx, WriterConfig};
use crate::wire::{
    self, Connect, Connected, ErrorCode, FindValue, FindValueReply, Frame, FrameDecoder,
    MessageType, NodeId, Pong, RawFrame, Role, Store, WireContact,
};

/// Most index changes taken from the index at once (one lock hold) for the parent.
pub const UPWARD_BATCH: usize = 256;

/// Shortest period of the full re-advertisement, whatever `dht.record_ttl_ms` says.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);

type Answer = Result<FindValueReply, String>;

/// What the parent links of a bridge take: who this bridge is, the settings of the link, and
/// the subsystems a parent session feeds (RPC, gossip, pub/sub). Built once by
/// `bridge::start` and shared by the parent-link task of every realm.
pub(super) struct ParentEnv {
    /// This bridge's id (its `connect`, loop detection, its placement in a parent fleet).
    pub(super) node_id: NodeId,
    /// This process's key: proves `node_id` to the parent (`docs/AUTH.md`).
    pub(super) identity: crate::identity::Identity,
    /// This bridge's credential and the revocation lists spread over the link.
    pub(super) auth: crate::auth::Auth,
    /// `bridge.parents`: dialed in order.
    pub(super) parents: Vec<String>,
    /// `bridge.parent_server_name`: the name the parents' certificates are checked for.
    pub(super) server_name: String,
    /// `bridge.level` (the `connect`'s cluster is `bridge-<level>`).
    pub(super) level: Level,
    /// `bridge.fleet.name`, when this bridge is a fleet worker.
    pub(super) fleet_name: Option<String>,
    /// `dht.record_ttl_ms`: the TTL of advertised records; half of it the refresh period.
    pub(super) record_ttl_ms: u64,
    /// `limits.*`: frame size, queues, backoff, slow-consumer timeout.
    pub(super) limits: crate::config::LimitsConfig,
    /// The process's metrics.
    pub(super) metrics: Arc<Metrics>,
    /// Lookups and calls the parent answers or sends down.
    pub(super) rpc: Arc<BridgeRpc>,
    /// The queue into the gossip task (the level store's peer is the parent).
    pub(super) gossip: Arc<BridgeGossip>,
    /// Pub/sub relaying and interest (the parent link is each realm relay's uplink).
    pub(super) pubsub: Arc<BridgePubSub>,
    /// Where the link's writer runs (the bridge's tracker, joined on shutdown).
    pub(super) tracker: tokio_util::task::TaskTracker,
}

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
    env: Arc<ParentEnv>,
    realm: Arc<Realm>,
    endpoint: Endpoint,
    cancel: CancellationToken,
) {
    let limits = &env.limits;
    let own_fleet = env.fleet_name.as_deref();
    let follow = Follower::new(crate::fleet::hash::child_bridge_key(
        &realm.name,
        &env.node_id,
        own_fleet,
    ));
    let mut redial = Redialer::new(
        env.parents.clone(),
        Arc::new(Mutex::new(follow)),
        session::backoff::Backoff::new(
            limits.reconnect_initial_backoff(),
            limits.reconnect_max_backoff(),
        ),
        env.metrics.fleet.redirects_followed_total.clone(),
    );
    // A dead fleet worker must not hold a re-homing bridge for the generic timeout.
    let timeouts = (session::HANDSHAKE_TIMEOUT, defaults::UPLINK_CONNECT_TIMEOUT);
    loop {
        let (parent, dialed) = {
            let (env, realm, endpoint) = (&env, &realm, &endpoint);
            let opened = redial
                .connect(&cancel, timeouts, |parent, extra, timeout| async move {
                    Dial::from(dial(env, realm, endpoint, &parent, extra, timeout).await)
                })
                .await;
            match opened {
                Some(o) => o,
                None => break,
            }
        };
        // A session that ended on a loop does not reset the backoff: the loop would
        // otherwise be re-dialed ten times a second.
        if !realm.looped.swap(false, Ordering::Relaxed) {
            redial.reset_backoff();
        }
        info!(parent = %parent, "parent link connected");
        serve(&env, &realm, dialed, redial.follower(), &cancel).await;
        if cancel.is_cancelled() {
            break;
        }
        if redial.ended(&parent) {
            info!(parent = %parent, "redirected by the parent fleet; moving");
        } else {
            warn!(parent = %parent, "parent link lost; reconnecting");
        }
    }
}

/// An open session with a parent, fresh from the handshake.
struct Dialed {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
    /// The parent's `CONNECTED`: its frame size and in-flight limits.
    welcome: Connected,
}

async fn dial(
    env: &ParentEnv,
    realm: &Realm,
    endpoint: &Endpoint,
    parent: &str,
    redirects: Option<String>,
    timeout: Duration,
) -> Result<Dialed, DialError> {
    let conn = quic_connect(endpoint, parent, &env.server_name, timeout).await?;
    let connect = Connect {
        versions: vec![wire::PROTOCOL_VERSION],
        node_id: env.node_id,
        realm: realm.name.to_string(),
        cluster: format!("bridge-{}", env.level),
        role: Role::Node,
        capabilities: std::iter::once("bridge".to_string())
            .chain(
                env.fleet_name
                    .as_ref()
                    .map(|f| format!("{}{f}", crate::fleet::CAP_FLEET)),
            )
            .chain(redirects)
            .collect(),
        max_frame_size: env.limits.max_frame_size,
        correlation_id: 1,
        proof: None,
        credential: env.auth.credential.clone(),
    };
    match open_session(&conn, connect, env.limits.max_frame_size, &env.identity).await {
        Ok((send, recv, decoder, welcome)) => Ok(Dialed {
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
async fn serve(
    env: &ParentEnv,
    realm: &Arc<Realm>,
    d: Dialed,
    follow: &Mutex<Follower>,
    cancel: &CancellationToken,
) {
    let Dialed {
        conn,
        send,
        recv,
        decoder,
        welcome,
        ..
    } = d;
    let metrics = &env.metrics;
    let limits = &env.limits;
    let key = realm
        .up
        .expect("a parent link runs only when a parent is configured");
    let peer = session::peer_queues(key, &conn, welcome.max_frame_size, limits);
    let tx = peer.tx.clone();
    let ctrl_tx = tx.ctrl.clone();
    let wcfg = WriterConfig {
        write_timeout: Duration::from_millis(limits.slow_consumer_timeout_ms.max(1)),
        metrics: metrics.clone(),
    };
    let session = Arc::new(ParentSession::new(Link {
        key,
        ctrl: ctrl_tx.clone(),
        max_frame: tx.max_frame,
        parent: true,
        node: None,
        peer: false,
        grant: None,
        tenant: crate::quota::Tenant::Exempt,
    }));
    announce_interest(realm, &tx);
    // The parent holds nothing of ours on a new session: everything is stored again.
    lock(&realm.index).resync();
    realm.parent.store(Some(session.clone()));
    realm.upward.notify_one();
    let parent_id = welcome.node_id;
    env.gossip.send(super::gossip::Cmd::ParentUp {
        realm: realm.name.clone(),
        id: parent_id,
        tx: ctrl_tx.clone(),
    });
    let open = metrics.connections_open.with_label_values(&["uplink"]);
    open.inc();

    let span = tracing::debug_span!(
        "link",
        kind = "parent",
        realm = %realm.name,
        peer.id = %crate::state::hex_id(&parent_id),
    );
    let tasks = LinkTasks {
        tracker: env.tracker.clone(),
        span,
    };
    let io = LinkIo {
        conn: conn.clone(),
        send,
        recv,
        decoder,
    };
    let window = Some(welcome.max_inflight as usize);
    let (mut actor, _, pending) = LinkActor::start(io, peer, window, wcfg, tasks);
    let revocations = (env.auth).revocation_link(&realm.name, parent_id, &ctrl_tx, metrics);
    let link = ParentLink {
        session: &session,
        parent_id,
        me: &tx,
        follow,
        revocations: &revocations,
    };
    let mut reader = ParentReader {
        env,
        realm,
        link: &link,
        pending: pending.expect("a windowed link has a pending queue"),
        scratch: crate::relay::RouteCache::new(),
        seen: HashSet::new(),
        slow: Duration::from_millis(limits.slow_consumer_timeout_ms),
    };
    // The advertiser returns only when the session's queue closed.
    let stop = async {
        tokio::select! {
            _ = advertise(env.record_ttl_ms, realm, &session) => {}
            _ = cancel.cancelled() => {}
        }
    };
    let end = actor.read(&mut reader, stop).await;
    drop(reader);
    debug!(end = ?end, "parent session ended");
    if cancel.is_cancelled() {
        session::close(&conn, ErrorCode::ShuttingDown, "shutting down");
    }
    let end = match end {
        ReadEnd::Fatal(code, msg) => Err((code, msg)),
        _ => Ok(()),
    };
    actor.finish(end).await;
    realm.parent.store(None);
    lock(&realm.ancestry).clear();
    env.pubsub.push_path(realm);
    {
        // The interest stays (unknown until the next snapshot); held QoS 1 waits for it.
        let mut r = super::pubsub::relay_mut(realm);
        r.set_target(key, None);
        r.set_unknown(key, true);
    }
    env.gossip.send(super::gossip::Cmd::ParentDown {
        realm: realm.name.clone(),
    });
    session.close();
    env.rpc.link_closed(realm, key);
    open.dec();
}

/// Sends the index's changes to the parent as they come, and everything every
/// `record_ttl / 2` (`dht.record_ttl_ms`, ms). Returns only when the session's queue closed.
async fn advertise(record_ttl: u64, realm: &Realm, session: &ParentSession) {
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
                let (key, publisher, value, ttl, name) = match change {
                    Upward::Store {
                        key,
                        publisher,
                        record,
                        name,
                    } => (key, publisher, record.encode(), ttl_ms, name),
                    Upward::Withdraw { key, publisher } => {
                        (key, publisher, Default::default(), 0, None)
                    }
                };
                let frame = Frame::Store(Store {
                    correlation_id: session.next_corr(),
                    key,
                    value,
                    ttl_ms: ttl,
                    publisher,
                    // The name the child's STORE carried: a parent that restricts this
                    // bridge's registrations checks it (`docs/AUTH.md`, "Permissions").
                    name: name.as_deref().map(str::to_string),
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

/// The session's identity for the reader: its RPC side, the parent's id, its sending half.
struct ParentLink<'a> {
    session: &'a ParentSession,
    parent_id: NodeId,
    me: &'a PeerTx,
    /// What the link knows of a parent fleet (directory, redirects).
    follow: &'a Mutex<Follower>,
    /// The session's registration for revocation lists.
    revocations: &'a crate::auth::RevocationLink,
}

/// Queues the realm's whole upward interest (its minimal cover) for a new session, the last
/// `subscribe` carrying `INTEREST_SYNC`, and makes `tx` the parent link's target, under
/// one write lock: every later delta leaves after this snapshot.
fn announce_interest(realm: &Realm, tx: &PeerTx) {
    let mut r = super::pubsub::relay_mut(realm);
    r.set_target(tx.key, Some(Arc::new(tx.clone())));
    let told = r.told(tx.key);
    let chunks: Vec<&[String]> = if told.is_empty() {
        vec![&[]]
    } else {
        told.chunks(super::pubsub::PATTERNS_PER_FRAME).collect()
    };
    let last = chunks.len() - 1;
    for (i, c) in chunks.into_iter().enumerate() {
        let corr = if i == last {
            super::pubsub::INTEREST_SYNC
        } else {
            0
        };
        let _ = tx
            .ctrl
            .try_send(Outbound::Frame(super::pubsub::interest_frame(
                c, true, corr,
            )));
    }
}

/// The parent link's frame handler.
struct ParentReader<'a> {
    env: &'a ParentEnv,
    realm: &'a Arc<Realm>,
    link: &'a ParentLink<'a>,
    /// Tracked frames written to the parent, in order, awaiting its `puback`.
    pending: mpsc::Receiver<Arc<AckTrack>>,
    scratch: crate::relay::RouteCache<PeerTx>,
    /// Patterns the parent announced on this session (what survives its snapshot).
    seen: HashSet<String>,
    slow: Duration,
}

impl FrameHandler for ParentReader<'_> {
    async fn on_frame(&mut self, raw: &RawFrame) -> Result<Flow, Fatal> {
        let ParentReader {
            env,
            realm,
            link,
            pending,
            scratch,
            seen,
            slow,
        } = self;
        let (env, realm, link, slow) = (*env, *realm, *link, *slow);
        let metrics = &env.metrics;
        let me = link.me;
        match raw.msg_type() {
            Some(MessageType::Publish) => {
                let Some(view) = me.accept_publish(raw, metrics) else {
                    return Ok(Flow::Continue);
                };
                (env.pubsub)
                    .relay_publish(realm, me, raw, &view, scratch, slow)
                    .await;
            }
            Some(MessageType::PubAck) => me.on_tracked_puback(raw, pending, metrics),
            Some(MessageType::Subscribe | MessageType::Unsubscribe) => {
                on_interest(env, realm, me, raw, seen)
            }
            Some(MessageType::BridgePath) => match raw.decode() {
                Ok(Frame::BridgePath(p)) => {
                    if p.path.contains(&env.node_id) {
                        metrics.protocol_error(ErrorCode::LoopDetected.as_str());
                        warn!("the parent's path names this bridge: a loop in the parent configuration; closing the parent link");
                        realm.looped.store(true, Ordering::Relaxed);
                        session::close(
                            &me.conn,
                            ErrorCode::LoopDetected,
                            "parent path names this bridge",
                        );
                        return Err((ErrorCode::LoopDetected, "parent loop".into()));
                    }
                    *lock(&realm.ancestry) = p.path;
                    env.pubsub.push_path(realm);
                }
                Ok(_) => {}
                Err(e) => me.send_error(metrics, e.code(), e.to_string(), None),
            },
            Some(MessageType::RevocationList) => {
                if let Err(e) = env.auth.on_revocation_list(link.revocations, raw, metrics) {
                    me.send_error(metrics, e.code(), e.to_string(), None);
                }
            }
            Some(MessageType::FleetView | MessageType::Redirect) => {
                if on_fleet_frame(metrics, link, raw) {
                    return Ok(Flow::Stop);
                }
            }
            Some(MessageType::SubAck) => {
                if let Ok(Frame::SubAck(a)) = raw.decode() {
                    if a.correlation_id == super::pubsub::INTEREST_SYNC {
                        synced(&env.pubsub, realm, me.key, seen);
                    }
                }
            }
            _ => {
                if on_frame(env, realm, link.session, link.parent_id, raw) {
                    return Ok(Flow::Stop);
                }
            }
        }
        Ok(Flow::Continue)
    }
}

/// A `fleet_view` (the parent fleet's directory) or a `redirect` from the parent; `true`:
/// the redirect is taken and the session ends (the next dial goes to its target).
fn on_fleet_frame(metrics: &Metrics, link: &ParentLink<'_>, raw: &RawFrame) -> bool {
    match raw.decode() {
        Ok(Frame::FleetView(v)) => lock(link.follow).on_view(v.members),
        Ok(Frame::Redirect(r)) => {
            let (to, reason) = (r.addr.clone(), r.reason.clone());
            if lock(link.follow).on_redirect(r, Instant::now()) == Followed::Taken {
                metrics.fleet.redirects_followed_total.inc();
                info!(to = %to, reason = %reason, "the parent fleet redirects this bridge");
                return true;
            }
        }
        Ok(_) => {}
        Err(e) => link.me.send_error(metrics, e.code(), e.to_string(), None),
    }
    false
}

/// The parent's interest changed (what the rest of the hierarchy wants through it).
fn on_interest(
    env: &ParentEnv,
    realm: &Realm,
    me: &PeerTx,
    raw: &RawFrame,
    seen: &mut HashSet<String>,
) {
    let metrics = &env.metrics;
    let req = match session::decode_interest(raw) {
        Ok(r) => r,
        Err((code, msg, corr)) => return me.send_error(metrics, code, msg, corr),
    };
    match (env.pubsub).change_interest(realm, me.key, &req.patterns, req.subscribe) {
        Ok(_) => {
            for p in req.patterns {
                if req.subscribe {
                    seen.insert(p);
                } else {
                    seen.remove(&p);
                }
            }
        }
        Err(e) => {
            metrics.interest_refused_total.inc();
            warn!(error = %e, "parent interest refused");
            me.send_error(metrics, ErrorCode::LimitExceeded, e.to_string(), None);
        }
    }
}

/// The parent's interest snapshot of this session is complete: patterns kept from an earlier
/// session that it no longer holds are withdrawn, and the link's interest is known again.
fn synced(pubsub: &BridgePubSub, realm: &Realm, key: u64, seen: &HashSet<String>) {
    let stale: Vec<String> = super::pubsub::relay_ref(realm)
        .held(key)
        .into_iter()
        .filter(|p| !seen.contains(p))
        .collect();
    if !stale.is_empty() {
        let _ = pubsub.change_interest(realm, key, &stale, false);
    }
    super::pubsub::relay_mut(realm).set_unknown(key, false);
    debug!(
        stale = stale.len(),
        held = seen.len(),
        "parent interest synced"
    );
}

/// Handles one frame from the parent; `true` ends the session (the parent said goodbye).
fn on_frame(
    env: &ParentEnv,
    realm: &Arc<Realm>,
    session: &ParentSession,
    parent_id: NodeId,
    raw: &RawFrame,
) -> bool {
    let metrics = &env.metrics;
    let link = &session.link;
    let Some(t) = raw.msg_type() else {
        let msg = format!("unknown message type 0x{:02x}", raw.header.msg_type);
        link.send_error(metrics, ErrorCode::UnknownType, msg, None);
        return false;
    };
    match t {
        MessageType::Pong | MessageType::StoreAck => {
            trace!(frame = t.as_str(), "ignored from the parent")
        }
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
            if let Err((code, msg)) = (env.gossip).on_parent_frame(&realm.name, parent_id, raw) {
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
            Ok(Frame::Call(c)) => env.rpc.on_call(realm, link, c),
            Ok(Frame::Reply(r)) => env.rpc.on_reply(link, r),
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
