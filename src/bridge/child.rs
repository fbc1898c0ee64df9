//! Child links (see the parent module): a session accepted with role `node` — a node's
//! uplink or a child bridge's parent link — or a fleet peer link, admitted, registered in
//! the realm's relay, link table, gossip and fleet, and read until it ends
//! ([`serve_node`], [`run_link`], the frame dispatch [`handle_node_frame`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::Connection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::fleet::{self, Fleet};
use super::gossip::{self, BridgeGossip};
use super::pubsub::{relay_mut, tell, BridgePubSub};
use super::rpc::{BridgeRpc, Link};
use super::{lock, Realm, Realms};
use crate::metrics::Metrics;
use crate::relay::RouteCache;
use crate::router::{GroupNames, PeerKey};
use crate::session::link::{LinkActor, LinkIo, LinkTasks};
use crate::session::read::{Fatal, Flow, FrameHandler};
use crate::session::{self, accept_session, AckTrack, PeerTx, WriterConfig};
use crate::wire::{ErrorCode, Frame, MessageType, NodeId, RawFrame, Role, SubAck};

/// What serving a child link takes: who this bridge is and how it admits, the link
/// settings, the realms and the subsystems a child link feeds (pub/sub, RPC, gossip, the
/// fleet). Built once by `bridge::start`; the accept loop and the fleet task (which dials
/// the peer links) share it.
pub(super) struct ChildEnv {
    /// This bridge's id (a child bridge with it is a loop).
    pub(super) node_id: NodeId,
    /// This process's key: proves `node_id` to every peer (`docs/AUTH.md`).
    pub(super) identity: crate::identity::Identity,
    /// Admission rules, this bridge's own credential and the revocation lists (`auth.*`).
    pub(super) auth: crate::auth::Auth,
    /// The rate limits of node uplinks and child-bridge links (`rate.*`).
    pub(super) rates: crate::rate::Rates,
    /// `limits.*`: frame size, queues, windows, timeouts.
    pub(super) limits: crate::config::LimitsConfig,
    /// `transport.keep_alive_ms`, the keep-alive asked of accepted sessions.
    pub(super) keep_alive_ms: u64,
    /// `bridge.fleet.handoff_grace_ms`: how long a lingering link's interest is held.
    pub(super) handoff_grace: Duration,
    /// The process's metrics.
    pub(super) metrics: Arc<Metrics>,
    /// Every realm of the bridge.
    pub(super) realms: Arc<Realms>,
    /// The route-table keys handed to links.
    pub(super) keys: LinkKeys,
    /// Pub/sub relaying and interest.
    pub(super) pubsub: Arc<BridgePubSub>,
    /// DHT and RPC: calls in flight, the level's lookup cache, lookups in flight.
    pub(super) rpc: Arc<BridgeRpc>,
    /// The queue into the gossip task (children's stores).
    pub(super) gossip: Arc<BridgeGossip>,
    /// The fleet this bridge is a worker of (`bridge.fleet.name`), if any.
    pub(super) fleet: Option<Arc<Fleet>>,
    /// Where the links' writers run (the bridge's tracker, joined on shutdown).
    pub(super) tracker: TaskTracker,
    /// Cancelled when the bridge shuts down (ends a lingering link's grace).
    pub(super) shutdown: CancellationToken,
}

/// The route-table keys of links: group numbers by name (the nodes of one cluster, the
/// workers of one child fleet, this bridge's fleet peers each share one) and link numbers.
/// Built by `bridge::start` from the groups it holds for the process's life (the fleet's).
pub(super) struct LinkKeys {
    /// Group numbers of the clusters connected (realm + cluster name → group): the nodes of
    /// one cluster share a group, so they neither hear each other's interest nor receive each
    /// other's publishes through the bridge — they reach each other over their mesh.
    groups: Mutex<GroupNames>,
    /// The next link number.
    next: AtomicU64,
}

impl LinkKeys {
    /// Keys in `groups`, numbered from `first`.
    pub(super) fn new(groups: GroupNames, first: u64) -> Self {
        LinkKeys {
            groups: Mutex::new(groups),
            next: AtomicU64::new(first),
        }
    }

    /// A fresh key in group `name` (taking a share of it), or in group 0 for `None`.
    fn acquire(&self, name: Option<&str>) -> PeerKey {
        let group = match name {
            Some(name) => self.groups.lock().expect("groups lock").acquire(name),
            None => 0,
        };
        let seq = self.next.fetch_add(1, Ordering::Relaxed) as u32;
        crate::router::grouped_key(group, seq)
    }

    /// Gives back the share of group `name` taken by [`LinkKeys::acquire`].
    fn release(&self, name: Option<&str>) {
        if let Some(name) = name {
            self.groups.lock().expect("groups lock").release(name);
        }
    }
}

/// What a child link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkKind {
    /// A node's uplink; the nodes of one cluster share a route-table group.
    Node,
    /// A child bridge's parent link (group 0, or the group of its child fleet).
    ChildBridge,
    /// Another worker of this bridge's fleet (the fleet group); `dialer` dialed it.
    Peer {
        /// The worker that dialed the link.
        dialer: NodeId,
    },
}

/// Who is at the other end of a link.
pub(super) struct Remote {
    /// Its node id (authenticated by the session).
    pub(super) node_id: NodeId,
    /// Its cluster (`connect.cluster`; empty for a fleet peer dialed here).
    pub(super) cluster: String,
    /// The largest frame it accepts, bytes including the header.
    pub(super) max_frame_size: u32,
}

pub(super) async fn serve_node(env: Arc<ChildEnv>, conn: Connection) {
    let metrics = env.metrics.clone();
    let limits = &env.limits;
    let (mut send, recv, decoder, connect) =
        match accept_session(&conn, limits.max_frame_size).await {
            Ok(s) => s,
            Err(e) => return session::reject_before_connect(&conn, &metrics, e).await,
        };
    metrics.frames_in.inc(MessageType::Connect as u8, 0);
    let realms = &env.realms;
    let mut checked = session::check_connect(&connect, Role::Node, |r| realms.contains_key(r));
    let kind = if fleet::is_peer(&connect) {
        if checked.is_ok() {
            checked = match &env.fleet {
                Some(f) => f.check_peer(&connect),
                None => Err((
                    ErrorCode::FleetMismatch,
                    "this bridge is not a fleet worker".into(),
                )),
            };
        }
        LinkKind::Peer {
            dialer: connect.node_id,
        }
    } else if connect.capabilities.iter().any(|c| c == "bridge") {
        LinkKind::ChildBridge
    } else {
        LinkKind::Node
    };
    if let (LinkKind::ChildBridge, Ok(()), Some(realm)) =
        (kind, &checked, env.realms.get(&connect.realm))
    {
        if connect.node_id == env.node_id || lock(&realm.ancestry).contains(&connect.node_id) {
            checked = Err((
                ErrorCode::LoopDetected,
                "this child bridge is this bridge or one above it: a loop in the parent configuration".into(),
            ));
        }
    }
    if let Err((code, msg)) = checked {
        return session::refuse(
            &conn,
            Some(&mut send),
            &metrics,
            code,
            &msg,
            Some(connect.correlation_id),
        )
        .await;
    }
    // A node's uplink needs a `node` credential, a child bridge or a fleet peer a `bridge`
    // one (in a realm with operator keys, `docs/AUTH.md`).
    let role = match kind {
        LinkKind::Node => crate::auth::Role::Node,
        LinkKind::ChildBridge | LinkKind::Peer { .. } => crate::auth::Role::Bridge,
    };
    // Kept for the link's life: a revoked credential's link is closed.
    let admitted = match env.auth.admit(&connect, role, &conn) {
        Ok(a) => a,
        Err(e) => {
            let corr = connect.correlation_id;
            return session::refuse_admission(&conn, &mut send, &metrics, &e, corr).await;
        }
    };
    if let (LinkKind::Node | LinkKind::ChildBridge, Some(f)) = (kind, &env.fleet) {
        let (placement, name) = fleet::child_key(&connect, kind == LinkKind::ChildBridge);
        if let Some(r) = f.admit(&connect, placement) {
            debug!(child = %name, owner = %r.addr, "redirecting a child to its owner");
            let _ = send.write_all(&Frame::Redirect(r).to_bytes()).await;
            let _ = send.finish();
            tokio::time::sleep(Duration::from_millis(100)).await;
            conn.close(0u32.into(), b"redirected");
            return;
        }
    }
    let realm = env.realms[&connect.realm].clone();
    let remote = Remote {
        node_id: connect.node_id,
        cluster: connect.cluster.clone(),
        max_frame_size: connect.max_frame_size,
    };
    let io = LinkIo {
        conn,
        send,
        recv,
        decoder,
    };
    // A fleet peer relays the whole realm for its worker: its credential bounds admission
    // only (`docs/AUTH.md`, "Permissions").
    let grant = (admitted.grant.clone()).filter(|_| !matches!(kind, LinkKind::Peer { .. }));
    // Rate limits too bind node uplinks and child bridges only (`rate.link`, `lim`).
    let throttle = match kind {
        LinkKind::Peer { .. } => crate::rate::Throttle::default(),
        _ => env.rates.throttle(&connect.realm, admitted.credential),
    };
    run_link(
        env.clone(),
        realm,
        io,
        remote,
        kind,
        Some(&connect),
        (grant, throttle),
    )
    .await;
}

/// The route-table group name of the workers of child fleet `fleet` in `realm`: NUL-separated
/// so that no cluster's group (`realm NUL cluster`, cluster names hold no NUL) can equal it.
fn child_fleet_group(realm: &str, fleet: &str) -> String {
    format!("{realm}\0\0fleet\0{fleet}")
}

/// Runs an established child link (a node, a child bridge, or a fleet peer) until it ends,
/// then removes its routes, records and calls. `accepted` is the peer's `connect` when this
/// side accepted the session (the `CONNECTED` answer is queued first); `None` when this side
/// dialed it (a fleet peer link). `grant` bounds what the child may do (its credential's
/// permissions; `None`: everything), `throttle` how fast (its rate limits).
pub(super) async fn run_link(
    env: Arc<ChildEnv>,
    realm: Arc<Realm>,
    io: LinkIo,
    remote: Remote,
    kind: LinkKind,
    accepted: Option<&crate::wire::Connect>,
    (grant, throttle): (Option<Arc<crate::auth::Grant>>, crate::rate::Throttle),
) {
    let metrics = env.metrics.clone();
    let limits = &env.limits;
    // The nodes of a cluster share its group; the workers of a child fleet share theirs
    // (one logical child: they reach each other over their peer links, docs/FLEET.md); other
    // child bridges stand alone (group 0); this bridge's own fleet peers share the fleet group.
    let group_name = match kind {
        LinkKind::Node => Some(format!("{}\0{}", realm.name, remote.cluster)),
        LinkKind::ChildBridge => accepted
            .and_then(|c| crate::fleet::fleet_of(&c.capabilities))
            .map(|f| child_fleet_group(&realm.name, f)),
        LinkKind::Peer { .. } => Some(fleet::GROUP.to_string()),
    };
    let key = env.keys.acquire(group_name.as_deref());
    let group = crate::router::group_of(key);
    let conn = io.conn.clone();
    let peer = match accepted {
        Some(connect) => session::accept_peer(
            key,
            &conn,
            connect,
            &env.identity,
            limits,
            env.keep_alive_ms,
        ),
        None => session::peer_queues(key, &conn, remote.max_frame_size, limits),
    };
    let tx = peer.tx.clone();
    let ctrl_tx = tx.ctrl.clone();
    // A child's quota share is its holder's (its proven node id); fleet peers are exempt.
    let tenant = match kind {
        LinkKind::Peer { .. } => crate::quota::Tenant::Exempt,
        LinkKind::Node | LinkKind::ChildBridge => crate::quota::Tenant::Subject(remote.node_id),
    };
    let node = (kind == LinkKind::Node).then_some(remote.node_id);
    let mut link = Link::child(&tx, node, tenant);
    link.peer = matches!(kind, LinkKind::Peer { .. });
    link.grant = grant;
    if let (LinkKind::Peer { dialer }, Some(f)) = (kind, &env.fleet) {
        if !f.peer_link_up(
            remote.node_id,
            &realm.name,
            key,
            dialer,
            &conn,
            link.clone(),
        ) {
            env.metrics
                .fleet
                .refused_total
                .with_label_values(&["duplicate"])
                .inc();
            env.keys.release(group_name.as_deref());
            conn.close(0u32.into(), b"duplicate fleet link");
            return;
        }
    }
    let child = gossip::ChildInfo {
        node_id: remote.node_id,
        cluster: remote.cluster.clone(),
        is_bridge: kind == LinkKind::ChildBridge,
    };
    lock(&realm.links).insert(key, link.clone());
    let relay_kind = match kind {
        LinkKind::Peer { .. } => crate::relay::LinkKind::Peer,
        LinkKind::Node | LinkKind::ChildBridge => crate::relay::LinkKind::Child,
    };
    {
        let mut r = relay_mut(&realm);
        let first = r.add_link(key, relay_kind, Some(Arc::new(tx.clone())));
        tell(&r, &[first]);
    }
    if kind == LinkKind::ChildBridge {
        tx.send_ctrl(Frame::BridgePath(env.pubsub.own_path(&realm)));
        lock(&realm.child_bridges).insert(key, tx.ctrl.clone());
    }
    // Revocation lists spread over every child and peer link (dropped with the link).
    let revocations = (env.auth).revocation_link(&realm.name, remote.node_id, &tx.ctrl, &metrics);
    let child_fleet = kind == LinkKind::ChildBridge && group != 0;
    if child_fleet {
        metrics.fleet.child_workers.inc();
    }
    match (kind, &env.fleet, accepted) {
        (LinkKind::Node | LinkKind::ChildBridge, Some(f), Some(c)) => {
            if kind == LinkKind::ChildBridge {
                metrics.fleet.child_bridges.inc();
            }
            let placed = fleet::child_key(c, kind == LinkKind::ChildBridge);
            f.child_up(key, &realm.name, placed, &ctrl_tx, &conn)
        }
        (LinkKind::Peer { .. }, Some(f), _) => f.sync_records(&realm, &link),
        _ => {}
    }
    info!(realm = %realm.name, cluster = %remote.cluster, kind = ?kind, "link up");
    let wcfg = WriterConfig {
        write_timeout: Duration::from_millis(limits.slow_consumer_timeout_ms.max(1)),
        metrics: metrics.clone(),
    };
    let span = tracing::debug_span!(
        "link",
        kind = ?kind,
        realm = %realm.name,
        peer.id = %crate::state::hex_id(&remote.node_id),
    );
    // The child's window is this side's `max_inflight` (its `connect` carries none).
    let window = Some(limits.max_inflight as usize);
    let tasks = LinkTasks {
        tracker: env.tracker.clone(),
        span,
    };
    let (mut actor, _, pending) = LinkActor::start(io, peer, window, wcfg, tasks);
    // A dead child is detected by QUIC: its dialer asked for a 3 s idle timeout with 1 s
    // keep-alives (`transport.link_*`), so its routes, records and calls in flight go within
    // seconds, not at the 30 s default.
    let mut reader = ChildReader {
        ctx: FrameCtx {
            env: &env,
            realm: &realm,
            link: &link,
            child: &child,
            me: &tx,
            revocations: &revocations,
        },
        scratch: RouteCache::new(),
        pending: pending.expect("a windowed link has a pending queue"),
        slow: Duration::from_millis(limits.slow_consumer_timeout_ms),
        throttle,
    };
    let end = actor
        .read(&mut reader, std::future::pending())
        .await
        .orderly();
    drop(reader);
    drop(revocations);
    let orderly = matches!(end, Ok(true));
    let mut handoff = false;
    if let Some(f) = &env.fleet {
        match kind {
            LinkKind::Node | LinkKind::ChildBridge => {
                if kind == LinkKind::ChildBridge {
                    metrics.fleet.child_bridges.dec();
                }
                handoff = f.child_down(key);
                if handoff {
                    metrics.fleet.handoffs_total.inc();
                }
            }
            LinkKind::Peer { .. } => f.peer_link_down(remote.node_id, &realm.name, key),
        }
    }
    if child_fleet {
        metrics.fleet.child_workers.dec();
    }
    // A worker of a child fleet that died (no orderly close) is held like a fleet link: its
    // nodes re-home on the other workers within the grace, which then announce their
    // interest here (docs/FLEET.md, "Fleets inside the hierarchy").
    let linger = match (&env.fleet, kind) {
        (Some(_), LinkKind::Node | LinkKind::ChildBridge) => !orderly || handoff,
        (Some(_), LinkKind::Peer { .. }) => !orderly,
        (None, LinkKind::ChildBridge) => child_fleet && !orderly,
        _ => false,
    };
    if !matches!(kind, LinkKind::Peer { .. }) {
        env.gossip.send(gossip::Cmd::ChildDown {
            realm: realm.name.clone(),
            from: remote.node_id,
            key,
        });
    }
    env.rpc.link_closed(&realm, key);
    lock(&realm.child_bridges).remove(&key);
    info!(realm = %realm.name, cluster = %remote.cluster, kind = ?kind, orderly, linger, "link down");
    actor.finish(end.map(|_| ())).await;
    if linger {
        // Hold the link's interest (see `bridge/fleet.rs`, "Handoff grace").
        if let Some(f) = &env.fleet {
            f.lingering.fetch_add(1, Ordering::Relaxed);
        }
        metrics.fleet.lingering_links.inc();
        let grace = env.handoff_grace;
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = env.shutdown.cancelled() => {}
        }
    }
    env.pubsub.remove_link(&realm, key);
    env.keys.release(group_name.as_deref());
    if linger {
        if let Some(f) = &env.fleet {
            f.lingering.fetch_sub(1, Ordering::Relaxed);
        }
        metrics.fleet.lingering_links.dec();
    }
}

/// A child link's frame handler.
struct ChildReader<'a> {
    ctx: FrameCtx<'a>,
    scratch: RouteCache<PeerTx>,
    /// Tracked frames written to the child, in order, awaiting its `puback`.
    pending: mpsc::Receiver<Arc<AckTrack>>,
    slow: Duration,
    /// The link's rate limits (none for a fleet peer).
    throttle: crate::rate::Throttle,
}

impl FrameHandler for ChildReader<'_> {
    async fn on_frame(&mut self, raw: &RawFrame) -> Result<Flow, Fatal> {
        let (scratch, pending) = (&mut self.scratch, &mut self.pending);
        let end = handle_node_frame(&self.ctx, raw, scratch, pending, self.slow).await?;
        Ok(if end { Flow::Stop } else { Flow::Continue })
    }

    fn throttle(&self) -> Option<&crate::rate::Throttle> {
        Some(&self.throttle).filter(|t| !t.is_unlimited())
    }
}

/// Who a frame came from: the bridge, the child link's realm and its sending halves.
struct FrameCtx<'a> {
    env: &'a ChildEnv,
    realm: &'a Arc<Realm>,
    link: &'a Link,
    child: &'a gossip::ChildInfo,
    me: &'a PeerTx,
    /// The link's registration for revocation lists.
    revocations: &'a crate::auth::RevocationLink,
}

/// Handles one frame from a child link; `Ok(true)` ends the session cleanly.
async fn handle_node_frame(
    ctx: &FrameCtx<'_>,
    raw: &RawFrame,
    scratch: &mut RouteCache<PeerTx>,
    pending: &mut mpsc::Receiver<Arc<AckTrack>>,
    slow: Duration,
) -> Result<bool, Fatal> {
    use crate::auth::Action;
    let FrameCtx { env, realm, me, .. } = *ctx;
    let grant = ctx.link.grant.as_deref();
    let metrics = &env.metrics;
    let Some(t) = me.msg_type(raw, metrics) else {
        return Ok(false);
    };
    match t {
        MessageType::Publish => {
            let Some(view) = me.accept_publish(raw, metrics) else {
                return Ok(false);
            };
            if !me.permit_publish(grant, &view, metrics) {
                return Ok(false);
            }
            metrics.messages_published_total.inc();
            (env.pubsub)
                .relay_publish(realm, me, raw, &view, scratch, slow)
                .await;
        }
        MessageType::PubAck => me.on_tracked_puback(raw, pending, metrics),
        MessageType::Subscribe | MessageType::Unsubscribe => {
            let req = match session::decode_interest(raw) {
                Ok(r) => r,
                Err((code, msg, corr)) => {
                    me.send_error(metrics, code, msg, corr);
                    return Ok(false);
                }
            };
            // A link's interest is its subtree's: the patterns its credential permits are
            // taken, each refused one is answered with its own error.
            let corr = Some(req.correlation_id);
            let mut patterns = req.patterns;
            if req.subscribe && grant.is_some() {
                patterns.retain(|p| me.permit(grant, Action::Subscribe, p, metrics, corr));
            }
            let count = match (env.pubsub).change_interest(realm, me.key, &patterns, req.subscribe)
            {
                Ok(n) => n,
                Err(e) => {
                    metrics.interest_refused_total.inc();
                    me.send_error(
                        metrics,
                        ErrorCode::LimitExceeded,
                        e.to_string(),
                        Some(req.correlation_id),
                    );
                    return Ok(false);
                }
            };
            me.send_ctrl(Frame::SubAck(SubAck {
                correlation_id: req.correlation_id,
                count: count as u32,
            }));
        }
        MessageType::Ping => me.pong(raw, metrics),
        MessageType::Disconnect => return Ok(true),
        MessageType::Connect => {
            return Err((ErrorCode::AlreadyConnected, "connect sent twice".into()))
        }
        MessageType::Error => {
            if let Ok(Frame::Error(e)) = raw.decode() {
                debug!(code = e.code, message = %e.message, "node reported an error");
            }
        }
        MessageType::Pong | MessageType::SubAck => {}
        MessageType::RevocationList => {
            if let Err(e) = env.auth.on_revocation_list(ctx.revocations, raw, metrics) {
                me.send_error(metrics, e.code(), e.to_string(), None);
            }
        }
        MessageType::FleetView if ctx.link.peer => {
            if let Err((code, msg)) = fleet::on_view(env.fleet.as_deref(), &ctx.child.node_id, raw)
            {
                me.send_error(metrics, code, msg, None);
            }
        }
        MessageType::GossipPush
        | MessageType::GossipPull
        | MessageType::GossipPullReply
        | MessageType::GossipSync
        | MessageType::GossipSyncReply => {
            if let Err((code, msg)) =
                (env.gossip).on_child_frame(realm, ctx.child, me.key, &me.ctrl, raw)
            {
                me.send_error(metrics, code, msg, None);
            }
        }
        MessageType::Store
        | MessageType::FindValue
        | MessageType::Call
        | MessageType::Reply
        | MessageType::StoreAck
        | MessageType::FindValueReply
        | MessageType::FindNodeReply => match raw.decode() {
            Ok(frame) => env.rpc.on_child_frame(realm, ctx.link, frame),
            Err(e) => me.send_error(metrics, e.code(), e.to_string(), raw.peek_correlation_id()),
        },
        other => me.send_error(
            metrics,
            ErrorCode::Protocol,
            format!("{} is not accepted from a node", other.as_str()),
            None,
        ),
    }
    Ok(false)
}
