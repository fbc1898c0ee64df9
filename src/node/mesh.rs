//! The intra-cluster mesh: direct QUIC connections between the nodes of one cluster, found
//! through `node.seeds` and the cluster's DHT (`docs/DISCOVERY.md`, "Topology and links").
//!
//! Each mesh link is one session (role `node`, capability `mesh`, same realm and cluster) on
//! the other node's client listener, whoever dialled it. A link carries the DHT queries and
//! replies and calls routed to a provider on the peer; it never carries traffic for anything
//! outside the cluster. One task per link reads it; a writer task drains its queues.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::gossip::{self, GossipHandle};
use super::pubsub::{PubSub, ReadCtx};
use super::{rpc, NodeFacts};
use crate::dht::service::DhtTransport;
use crate::dht::{Contact, Id};
use crate::relay::LinkId;
use crate::router::PeerKey;
use crate::session::backoff::Schedule;
use crate::session::redial::DialError;
use crate::session::{self, interest, open_session, AckTrack, Outbound, PeerTx};
use crate::wire::{
    self, Connect, ErrorCode, Frame, FrameDecoder, MessageType, NodeId, RawFrame, Role,
};

/// Capability a node announces on a mesh session.
pub const MESH_CAPABILITY: &str = "mesh";

/// How often the mesh maintainer dials contacts it has no link to, and seeds while the mesh is
/// empty.
pub const MAINTAIN_INTERVAL: Duration = Duration::from_secs(2);

/// Every this many maintainer ticks (30 s) the node re-runs FIND_NODE for its own id.
const BOOTSTRAP_EVERY: u64 = 15;

/// Dial requests queued at most (a flood of contacts cannot queue more).
const DIAL_QUEUE: usize = 64;

/// How long a mesh peer's interest is kept after its link is lost, waiting for a new link
/// (the maintainer redials every [`MAINTAIN_INTERVAL`]). Meanwhile a QoS 1 publish that
/// interest wants is held: counted toward its acknowledgement but never acknowledged, so the
/// publishing client keeps custody and retransmits it (`limits.ack_timeout_ms`) until the new
/// link carries it, or the hold ends and the peer's interest is forgotten.
pub const MESH_HOLD: Duration = Duration::from_secs(10);

/// Most peers held at once (a flood of short-lived sessions under fresh node ids cannot
/// keep more); a link lost beyond this is forgotten at once.
const MAX_HELD: usize = 64;

/// A mesh peer's link of the relay: it outlives one session (the peer's interest is held
/// through a reconnect) and belongs to the newest session.
#[derive(Debug)]
struct RelayLink {
    link: LinkId,
    /// The session (connection key) that owns it; `None` while held.
    owner: Option<PeerKey>,
    /// When its last session ended (held since).
    down_since: Option<Instant>,
}

/// An open mesh link: its queues and what the peer's credential grants (`None`: everything).
struct Linked {
    tx: PeerTx,
    grant: Option<Arc<crate::auth::Grant>>,
}

/// The open mesh links by peer node id (the newest link wins when both sides dialled), and the
/// dial queue. Shared by the DHT transport, the call router and the link tasks.
pub struct Mesh {
    links: Mutex<HashMap<NodeId, Linked>>,
    /// How many open links have a grant (0: [`Mesh::may_provide`] checks nothing).
    restricted: AtomicUsize,
    relay_links: Mutex<HashMap<NodeId, RelayLink>>,
    dial_tx: mpsc::Sender<SocketAddr>,
}

impl Mesh {
    /// An empty mesh and the receiver of its dial requests (for [`run_dialer`]).
    pub fn new() -> (Arc<Mesh>, mpsc::Receiver<SocketAddr>) {
        let (dial_tx, dial_rx) = mpsc::channel(DIAL_QUEUE);
        (
            Arc::new(Mesh {
                links: Mutex::new(HashMap::new()),
                restricted: AtomicUsize::new(0),
                relay_links: Mutex::new(HashMap::new()),
                dial_tx,
            }),
            dial_rx,
        )
    }

    /// The link to `id`, if one is open.
    pub fn get(&self, id: &NodeId) -> Option<PeerTx> {
        let links = self.links.lock().expect("mesh lock");
        links.get(id).map(|l| l.tx.clone())
    }

    /// Whether node `id` may be handed calls of `procedure`: `false` only while it has a link
    /// whose credential does not permit `register` of it (`rpc::bound::may_provide`). Takes
    /// no lock while no link has a grant.
    pub fn may_provide(&self, id: &NodeId, procedure: &str) -> bool {
        if self.restricted.load(Ordering::Relaxed) == 0 {
            return true;
        }
        let links = self.links.lock().expect("mesh lock");
        match links.get(id).and_then(|l| l.grant.as_deref()) {
            Some(g) => rpc::bound::may_provide(g, procedure),
            None => true,
        }
    }

    /// Peers with an open link.
    pub fn len(&self) -> usize {
        self.links.lock().expect("mesh lock").len()
    }

    /// Whether no link is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, id: NodeId, tx: PeerTx, grant: Option<Arc<crate::auth::Grant>>) {
        let mut links = self.links.lock().expect("mesh lock");
        links.insert(id, Linked { tx, grant });
        self.count_restricted(&links);
    }

    /// Removes the link to `id` if it is still the one keyed `key` (an older duplicate link
    /// closing leaves the newer one in place). Returns whether it was removed.
    fn remove(&self, id: &NodeId, key: PeerKey) -> bool {
        let mut links = self.links.lock().expect("mesh lock");
        if links.get(id).map(|l| l.tx.key) == Some(key) {
            links.remove(id);
            self.count_restricted(&links);
            true
        } else {
            false
        }
    }

    /// Recounts the links with a grant (under the links' lock; links change rarely).
    fn count_restricted(&self, links: &HashMap<NodeId, Linked>) {
        let n = links.values().filter(|l| l.grant.is_some()).count();
        self.restricted.store(n, Ordering::Relaxed);
    }

    /// The relay link of peer `id`, now owned by the session keyed `key`: the held one when
    /// the peer had a link lately, else a fresh id from `fresh`.
    fn attach(&self, id: NodeId, key: PeerKey, fresh: impl FnOnce() -> LinkId) -> LinkId {
        let mut links = self.relay_links.lock().expect("mesh lock");
        let entry = links.entry(id).or_insert_with(|| RelayLink {
            link: fresh(),
            owner: None,
            down_since: None,
        });
        entry.owner = Some(key);
        entry.down_since = None;
        entry.link
    }

    /// The session keyed `key` of peer `id` ended. If it owned the peer's relay link, the link
    /// is held from `now` (`Some(true)`), or forgotten when [`MAX_HELD`] peers are held
    /// already (`Some(false)`: the caller removes it from the relay). `None`: a newer session
    /// owns the link.
    fn detach(&self, id: &NodeId, key: PeerKey, now: Instant) -> Option<(LinkId, bool)> {
        let mut links = self.relay_links.lock().expect("mesh lock");
        let entry = links.get(id)?;
        if entry.owner != Some(key) {
            return None;
        }
        let link = entry.link;
        let held = links.values().filter(|l| l.owner.is_none()).count();
        if held >= MAX_HELD {
            links.remove(id);
            return Some((link, false));
        }
        let entry = links.get_mut(id).expect("present");
        entry.owner = None;
        entry.down_since = Some(now);
        Some((link, true))
    }

    /// The relay links held longer than [`MESH_HOLD`] as of `now`, forgotten (the caller
    /// removes them from the relay).
    fn expire(&self, now: Instant) -> Vec<LinkId> {
        let mut links = self.relay_links.lock().expect("mesh lock");
        let mut gone = Vec::new();
        links.retain(|_, l| match l.down_since {
            Some(t) if now.duration_since(t) >= MESH_HOLD => {
                gone.push(l.link);
                false
            }
            _ => true,
        });
        gone
    }

    /// Asks the dialer to connect to `addr` (dropped when the queue is full; the maintainer asks
    /// again).
    pub fn dial(&self, addr: SocketAddr) {
        let _ = self.dial_tx.try_send(addr);
    }
}

/// What the mesh's dialer, maintainer and links need of the rest of the node: who it is, its
/// credential, and the subsystems a mesh link carries traffic for (DHT, pub/sub, RPC, gossip).
/// Built once by `node::start`; shared by the mesh tasks and the client listener, which hands
/// it the mesh sessions peers open there.
pub(super) struct MeshEnv {
    /// Who this node is, its limits, metrics and tracker.
    pub(super) node: Arc<NodeFacts>,
    /// Admission of accepted peers (role `node`) and the credential presented when dialling.
    pub(super) auth: crate::auth::Auth,
    /// The TLS server name dialled (`node.uplink_server_name`).
    pub(super) server_name: String,
    /// This node's own contact address (never dialled).
    pub(super) advertise: SocketAddr,
    /// The open links and the dial queue.
    pub(super) mesh: Arc<Mesh>,
    /// The cluster DHT, fed by the links.
    pub(super) dht: Arc<crate::dht::service::DhtService>,
    /// Pub/sub: each peer is a relay link.
    pub(super) pubsub: Arc<PubSub>,
    /// RPC: calls routed to and from the peers.
    pub(super) rpc: Arc<rpc::NodeRpc>,
    /// The gossip task: each peer is a gossip peer; its members are dialled.
    pub(super) gossip: Arc<GossipHandle>,
    /// Cancelled when the node stops (accepted links end with it).
    pub(super) shutdown: CancellationToken,
}

/// The DHT's transport: frames go over the mesh link to the contact; a contact without a link
/// is dialled and the query fails at once (the lookup moves on to other contacts).
pub struct MeshTransport {
    /// The mesh.
    pub mesh: Arc<Mesh>,
}

impl DhtTransport for MeshTransport {
    fn send(&self, to: &Contact, frame: Frame) -> bool {
        match self.mesh.get(&to.id.0) {
            Some(tx) => tx.ctrl.try_send(Outbound::Frame(frame.to_bytes())).is_ok(),
            None => {
                self.mesh.dial(to.addr);
                false
            }
        }
    }
}

/// Most addresses the dialer keeps a backoff for; beyond it the schedule of addresses not
/// being dialled is forgotten (they may be dialled at once again).
const MAX_SCHEDULED: usize = 256;

/// The dialer's state: addresses being dialled (or linked through a dial of ours), and each
/// address's redial backoff (`limits.reconnect_*_backoff_ms`).
struct Dials {
    busy: HashSet<SocketAddr>,
    schedule: Schedule<SocketAddr>,
}

/// The dialer task: connects to the addresses asked for, at most one attempt per address at a
/// time and, while an address stays unreachable, at most one per step of its backoff; runs
/// each resulting link.
pub async fn run_dialer(
    env: Arc<MeshEnv>,
    endpoint: Endpoint,
    mut dial_rx: mpsc::Receiver<SocketAddr>,
    cancel: CancellationToken,
) {
    let limits = &env.node.limits;
    let dials = Arc::new(Mutex::new(Dials {
        busy: HashSet::new(),
        schedule: Schedule::new(
            limits.reconnect_initial_backoff(),
            limits.reconnect_max_backoff(),
        ),
    }));
    loop {
        let addr = tokio::select! {
            _ = cancel.cancelled() => return,
            a = dial_rx.recv() => match a { Some(a) => a, None => return },
        };
        if addr == env.advertise {
            continue;
        }
        {
            let mut d = dials.lock().expect("dial lock");
            if d.busy.contains(&addr) || !d.schedule.try_dial(addr, Instant::now()) {
                continue;
            }
            if d.schedule.len() > MAX_SCHEDULED {
                let Dials { busy, schedule } = &mut *d;
                schedule.retain(|a| busy.contains(a) || *a == addr);
            }
            d.busy.insert(addr);
        }
        let s = env.clone();
        let ep = endpoint.clone();
        let dials = dials.clone();
        let cancel = cancel.clone();
        env.node.tasks.spawn(async move {
            let r = dial(&s, &ep, addr, &dials, &cancel).await;
            if let Err(e) = r {
                debug!(peer = %addr, error = %e, "mesh dial failed");
            }
            dials.lock().expect("dial lock").busy.remove(&addr);
        });
    }
}

async fn dial(
    env: &Arc<MeshEnv>,
    endpoint: &Endpoint,
    addr: SocketAddr,
    dials: &Mutex<Dials>,
    cancel: &CancellationToken,
) -> Result<(), DialError> {
    let conn = tokio::time::timeout(
        session::HANDSHAKE_TIMEOUT,
        endpoint.connect(addr, &env.server_name)?,
    )
    .await
    .map_err(|_| DialError::Timeout)??;
    let connect = Connect {
        versions: vec![wire::PROTOCOL_VERSION],
        node_id: env.node.node_id,
        realm: env.node.realm.clone(),
        cluster: env.node.cluster.clone(),
        role: Role::Node,
        capabilities: vec![MESH_CAPABILITY.into()],
        max_frame_size: env.node.limits.max_frame_size,
        correlation_id: 1,
        proof: None,
        credential: env.auth.credential.clone(),
    };
    let (send, recv, decoder, welcome) = open_session(
        &conn,
        connect,
        env.node.limits.max_frame_size,
        &env.node.identity,
    )
    .await?;
    if welcome.node_id == env.node.node_id {
        conn.close(0u32.into(), b"dialled myself");
        return Ok(());
    }
    // The node that answered must hold a `node` credential of this cluster too: both ends
    // of a mesh link admit each other (PROTOCOL §7a).
    let (realm, cluster) = (&env.node.realm, &env.node.cluster);
    let admitted = match env.auth.admit_acceptor(realm, &welcome, cluster, &conn) {
        Ok(a) => a,
        Err(e) => {
            let metrics = &env.node.metrics;
            let reason = e.reason();
            metrics
                .connections_rejected_total
                .with_label_values(&[reason])
                .inc();
            debug!(peer = %Id(welcome.node_id), reason, error = %e, "mesh peer refused");
            conn.close((e.code() as u32).into(), e.to_string().as_bytes());
            return Err(DialError::Refused(e));
        }
    };
    // The address is known on this side (we dialled it): the peer becomes a DHT contact.
    let peer = Contact {
        id: Id(welcome.node_id),
        addr,
    };
    {
        // Linked: once this link is lost the peer is redialled at once.
        let mut d = dials.lock().expect("dial lock");
        d.busy.remove(&addr);
        d.schedule.forget(&addr);
    }
    let io = LinkIo {
        conn,
        send,
        recv,
        decoder,
    };
    let window = welcome.max_inflight as usize;
    let peer_at = (welcome.node_id, Some(peer));
    run_link(
        env.clone(),
        io,
        (peer_at, admitted),
        (welcome.max_frame_size, window),
        cancel,
    )
    .await;
    Ok(())
}

/// Serves a mesh session a peer opened on our listener (its `CONNECT` was read already).
pub async fn serve_accepted(
    env: Arc<MeshEnv>,
    conn: Connection,
    mut send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
    connect: Connect,
) {
    let metrics = &env.node.metrics;
    let refuse = |code, msg: String| (code, msg);
    let problem = if connect.realm != env.node.realm {
        Some(refuse(
            ErrorCode::UnknownRealm,
            format!(
                "mesh peer of realm {:?}, this node is in {:?}",
                connect.realm, env.node.realm
            ),
        ))
    } else if connect.cluster != env.node.cluster {
        Some(refuse(
            ErrorCode::Protocol,
            format!(
                "mesh peer of cluster {:?}, this node is in {:?}",
                connect.cluster, env.node.cluster
            ),
        ))
    } else if connect.node_id == env.node.node_id {
        Some(refuse(
            ErrorCode::Protocol,
            "a node cannot mesh with itself".into(),
        ))
    } else {
        None
    };
    if let Some((code, msg)) = problem {
        debug!(%msg, "mesh peer refused");
        return session::refuse(
            &conn,
            Some(&mut send),
            metrics,
            code,
            &msg,
            Some(connect.correlation_id),
        )
        .await;
    }
    // Kept for the link's life: a revoked credential's link is closed.
    let admitted = match env.auth.admit(&connect, crate::auth::Role::Node, &conn) {
        Ok(a) => a,
        Err(e) => {
            let corr = connect.correlation_id;
            return session::refuse_admission(&conn, &mut send, metrics, &e, corr).await;
        }
    };
    // Answer CONNECTED first, then run the link like a dialled one.
    let welcome = Frame::Connected(wire::Connected {
        version: wire::PROTOCOL_VERSION,
        node_id: env.node.node_id,
        realm: env.node.realm.clone(),
        max_frame_size: env.node.limits.max_frame_size,
        max_inflight: env.node.limits.max_inflight,
        keepalive_ms: env.node.keep_alive_ms.min(u64::from(u32::MAX)) as u32,
        correlation_id: connect.correlation_id,
        proof: env
            .node
            .identity
            .prove_on(&conn, crate::identity::Side::Acceptor)
            .ok(),
        // The dialler admits this node in turn.
        credential: env.auth.credential.clone(),
    });
    if send.write_all(&welcome.to_bytes()).await.is_err() {
        return;
    }
    // `connect` carries no window: the peer is a node of this cluster, configured alike.
    let window = env.node.limits.max_inflight as usize;
    let io = LinkIo {
        conn,
        send,
        recv,
        decoder,
    };
    let limits = (connect.max_frame_size, window);
    let stop = CancellationToken::new();
    let peer_at = ((connect.node_id, None), admitted);
    run_link(env.clone(), io, peer_at, limits, &stop).await;
}

/// Runs one established mesh link until it ends: registers it, feeds the DHT, reads frames,
/// and on the end removes it, holds the peer's interest ([`MESH_HOLD`]) and fails the calls
/// forwarded over it. `(peer_id, contact)`: the peer, and its DHT contact when this side
/// dialled it; `admitted`: what the peer's credential grants (kept for the link's life: a
/// revoked credential's link is closed); `(max_frame_size, window)`: the largest frame body
/// the peer accepts (bytes) and how many QoS 1 publishes it may owe acknowledgements for.
async fn run_link(
    env: Arc<MeshEnv>,
    io: LinkIo,
    ((peer_id, contact), admitted): ((NodeId, Option<Contact>), crate::auth::Admitted),
    (max_frame_size, window): (u32, usize),
    stop: &CancellationToken,
) {
    let limits = &env.node.limits;
    let key = env.node.next_key();
    // Both nodes may dial each other at once: of two links between the same pair, the one
    // dialled by the lower node id is kept and the other closed, so a pair has one link (one
    // copy of each publish, one place its interest lives).
    let dialled_by_me = contact.is_some();
    let canonical = dialled_by_me == (env.node.node_id < peer_id);
    if let Some(existing) = env.mesh.get(&peer_id) {
        if !canonical {
            debug!(peer = %Id(peer_id), "duplicate mesh link; keeping the other one");
            io.conn.close(0u32.into(), b"duplicate mesh link");
            return;
        }
        existing
            .conn
            .close(0u32.into(), b"duplicate mesh link (replaced)");
    }
    let peer = session::peer_queues(key, &io.conn, max_frame_size, limits);
    let span = tracing::debug_span!("link", kind = "mesh", peer.id = %Id(peer_id));
    // The chained acknowledgement: QoS 1 publishes written to the peer, in order, until it
    // acknowledges them (at most `window` outstanding; the writer waits beyond that). A
    // crashed peer is detected by QUIC (`transport.link_idle_timeout_ms`, 3 s: keep-alive
    // PINGs are acknowledged by the peer's QUIC stack however busy it is), so calls forwarded
    // to it fail over in ~3 s, not at the 30 s idle timeout of other connections.
    let (mut actor, tx, pending) = LinkActor::start(
        io,
        peer,
        Some(window),
        env.node.writer_config(),
        env.node.link_tasks(span),
    );
    let pending = pending.expect("a windowed link has a pending queue");
    env.mesh.insert(peer_id, tx.clone(), admitted.grant.clone());
    // The peer's relay link (held from its last session, if any) now routes here; tell the
    // peer what our clients want. Later changes follow on the same queue.
    let link = env.mesh.attach(peer_id, key, || env.node.next_key());
    env.pubsub.mesh_up(link, tx.clone());
    env.node.metrics.rpc.mesh_peers.set(env.mesh.len() as i64);
    env.gossip.send(gossip::Cmd::PeerUp(
        peer_id,
        gossip::PeerLink::Mesh(tx.clone()),
    ));
    env.node
        .metrics
        .connections_accepted_total
        .with_label_values(&["node"])
        .inc();
    info!(peer = %Id(peer_id), "mesh link up");
    if let Some(c) = contact {
        env.dht.observe(c);
    }
    // Introduce ourselves to the peer's DHT: a FIND_NODE carries our contact (and teaches us
    // the peer's view of the cluster).
    {
        let dht = env.dht.clone();
        env.node.tasks.spawn(async move {
            dht.bootstrap().await;
        });
    }
    let revocations =
        (env.auth).revocation_link(&env.node.realm, peer_id, &tx.ctrl, &env.node.metrics);
    let mut handler = MeshLink {
        env: &env,
        me: &tx,
        link,
        peer_id,
        grant: admitted.grant.clone(),
        revocations,
        pending,
        ctx: ReadCtx::new(),
        slow: Duration::from_millis(env.node.limits.slow_consumer_timeout_ms),
    };
    let stopped = async {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = env.shutdown.cancelled() => {}
        }
    };
    let end = actor
        .read(&mut handler, stopped)
        .await
        .orderly()
        .map(|_| ());
    if env.mesh.remove(&peer_id, key) {
        info!(peer = %Id(peer_id), "mesh link down");
    }
    // Publishes the peer had not acknowledged are dropped with `pending`: their publishers
    // still hold them and retransmit.
    drop(handler);
    match env.mesh.detach(&peer_id, key, Instant::now()) {
        Some((link, true)) => env.pubsub.mesh_down(link),
        Some((link, false)) => env.pubsub.remove_link(link),
        None => {}
    }
    env.gossip.send(gossip::Cmd::PeerDown(peer_id, Some(key)));
    env.node.metrics.rpc.mesh_peers.set(env.mesh.len() as i64);
    env.rpc.link_closed(key);
    if let Err((code, msg)) = &end {
        warn!(peer = %Id(peer_id), code = code.as_str(), %msg, "mesh link failed");
    }
    actor.finish(end).await;
}

use crate::session::link::{LinkActor, LinkIo};
use crate::session::read::{self, Fatal, Flow};

/// A mesh link's frame handler.
struct MeshLink<'a> {
    env: &'a MeshEnv,
    me: &'a PeerTx,
    /// The peer's relay link.
    link: LinkId,
    peer_id: NodeId,
    /// What the peer node's credential permits (`None`: everything): its publishes,
    /// subscriptions, the state it gossips, the provider records it stores and the calls it
    /// routes here are bounded by it, as at a bridge (`rpc::bound`).
    grant: Option<Arc<crate::auth::Grant>>,
    /// The link's registration for revocation lists (dropped with the handler).
    revocations: crate::auth::RevocationLink,
    /// Tracked publishes written to the peer, awaiting its `puback`.
    pending: mpsc::Receiver<Arc<AckTrack>>,
    ctx: ReadCtx,
    slow: Duration,
}

impl read::FrameHandler for MeshLink<'_> {
    async fn on_frame(&mut self, raw: &RawFrame) -> Result<Flow, Fatal> {
        let MeshLink {
            env,
            me,
            link,
            peer_id,
            grant,
            revocations,
            pending,
            ctx,
            slow,
        } = self;
        let (env, me, link, peer_id, slow) = (*env, *me, *link, *peer_id, *slow);
        let realm = env.node.realm.as_str();
        let (granted, grant) = (grant.as_ref(), grant.as_deref());
        let metrics = &env.node.metrics;
        let Some(t) = me.msg_type(raw, metrics) else {
            return Ok(Flow::Continue);
        };
        match t {
            MessageType::Publish => {
                let Some(view) = me.accept_publish(raw, metrics) else {
                    return Ok(Flow::Continue);
                };
                if !me.permit_publish(grant, &view, metrics) {
                    return Ok(Flow::Continue);
                }
                // Delivered here only: a mesh publish is never forwarded again. A QoS 1 one is
                // acknowledged once queued for our clients (`no_route` when none wanted it).
                let taken = env
                    .pubsub
                    .forward(link, &raw.bytes, &view, ctx, slow, None)
                    .await;
                if view.qos == crate::wire::Qos::AtLeastOnce {
                    let ack = match taken.now {
                        0 => Outbound::NoRoute(view.message_id),
                        _ => Outbound::Ack(view.message_id),
                    };
                    let _ = me.ctrl.try_send(ack);
                }
            }
            MessageType::PubAck => me.on_tracked_puback(raw, pending, metrics),
            MessageType::Subscribe | MessageType::Unsubscribe => {
                let mut req = match session::decode_interest(raw) {
                    Ok(r) => r,
                    Err((code, msg, corr)) => {
                        me.send_error(metrics, code, msg, corr);
                        return Ok(Flow::Continue);
                    }
                };
                if req.subscribe && grant.is_some() {
                    // Each refused pattern gets its own error; the others are taken.
                    let (action, corr) = (crate::auth::Action::Subscribe, Some(req.correlation_id));
                    req.patterns
                        .retain(|p| me.permit(grant, action, p, metrics, corr));
                }
                if let Err(e) = env
                    .pubsub
                    .change_interest(link, &req.patterns, req.subscribe)
                {
                    metrics.interest_refused_total.inc();
                    me.send_error(metrics, ErrorCode::LimitExceeded, e.to_string(), None);
                    // Its interest stays unknown: QoS 1 keeps going to it (§8a).
                } else if req.correlation_id == interest::INTEREST_SYNC {
                    // The end of the peer's snapshot: our own was queued before this (§8a).
                    me.send_ctrl(Frame::SubAck(wire::SubAck {
                        correlation_id: interest::INTEREST_SYNC,
                        count: 0,
                    }));
                }
            }
            MessageType::SubAck => match raw.decode() {
                Ok(Frame::SubAck(a)) if a.correlation_id == interest::INTEREST_SYNC => {
                    // Everything the peer's clients want has arrived.
                    env.pubsub.mesh_synced(link);
                }
                Ok(_) => {}
                Err(e) => metrics.protocol_error(e.code().as_str()),
            },
            MessageType::FindNode | MessageType::FindValue | MessageType::Store => {
                match raw.decode() {
                    Ok(f) => {
                        // The querier's contact, believed only when it names the peer
                        // this link authenticated (no planting of other nodes' ids).
                        let sender = match &f {
                            Frame::FindNode(q) => Some(&q.sender),
                            Frame::FindValue(q) => Some(&q.sender),
                            _ => None,
                        };
                        let from = sender
                            .filter(|s| s.node_id == peer_id)
                            .and_then(|s| Contact::try_from(s).ok());
                        // A peer bounded by a credential stores only records of procedures
                        // it may register (withdrawals always).
                        if let (Some(g), Frame::Store(s)) = (grant, &f) {
                            if let Err(e) = rpc::bound::check_store(g, realm, &peer_id, s) {
                                metrics.rpc.store_refused(e.reason);
                                if e.code == ErrorCode::PermissionDenied {
                                    metrics.permission_denied(crate::auth::Action::Register);
                                }
                                let corr = Some(s.correlation_id);
                                me.send_error(metrics, e.code, e.message, corr);
                                return Ok(Flow::Continue);
                            }
                        }
                        let peer = Some(crate::dht::Id::from_bytes(peer_id));
                        if let Some(reply) = env.dht.handle_query_as(peer, from.as_ref(), &f) {
                            me.send_ctrl(reply);
                        }
                    }
                    Err(e) => me.send_error(metrics, e.code(), e.to_string(), None),
                }
            }
            MessageType::FindNodeReply
            | MessageType::FindValueReply
            | MessageType::StoreAck
            | MessageType::Error => match raw.decode() {
                Ok(f) => {
                    if !env.dht.handle_reply(&f) {
                        if let Frame::Error(e) = &f {
                            debug!(code = e.code, message = %e.message, "mesh peer reported an error");
                        }
                    }
                }
                Err(e) => metrics.protocol_error(e.code().as_str()),
            },
            MessageType::Call => match raw.decode() {
                Ok(Frame::Call(call)) => {
                    // A peer bounded by a credential routes here only calls it may make.
                    match grant.map(|g| rpc::bound::check_call(g, &call.procedure)) {
                        Some(Err(e)) => {
                            metrics.permission_denied(crate::auth::Action::Call);
                            rpc::reply_link(me, call.call_id, Err(e));
                        }
                        _ => env
                            .rpc
                            .routed_call(rpc::Back::Link(me.clone()), call, false),
                    }
                }
                Ok(_) => unreachable!("decode follows the header type"),
                Err(e) => me.send_error(metrics, e.code(), e.to_string(), None),
            },
            MessageType::Reply => match raw.decode() {
                Ok(Frame::Reply(r)) => env.rpc.reply_arrived(me.key, r),
                Ok(_) => unreachable!("decode follows the header type"),
                Err(e) => me.send_error(metrics, e.code(), e.to_string(), None),
            },
            MessageType::GossipPush
            | MessageType::GossipPull
            | MessageType::GossipPullReply
            | MessageType::GossipSync
            | MessageType::GossipSyncReply => {
                if let Err((code, msg)) = env.gossip.on_frame(peer_id, raw, granted) {
                    me.send_error(metrics, code, msg, None);
                }
            }
            MessageType::RevocationList => {
                if let Err(e) = env.auth.on_revocation_list(revocations, raw, metrics) {
                    me.send_error(metrics, e.code(), e.to_string(), None);
                }
            }
            MessageType::Ping => me.pong(raw, &env.node.metrics),
            MessageType::Pong => {}
            MessageType::Disconnect => return Ok(Flow::Stop),
            other => me.send_error(
                metrics,
                ErrorCode::Protocol,
                format!("{} is not accepted on a mesh link", other.as_str()),
                None,
            ),
        }
        Ok(Flow::Continue)
    }

    fn on_chunk(&mut self) {
        self.ctx.now_us = session::now_us();
    }
}

/// Keeps the mesh complete: dials the seeds until some link is up, then every
/// [`MAINTAIN_INTERVAL`] dials each DHT contact without a link (clusters are small: every node
/// links to every other), and runs the DHT's periodic work.
pub async fn run_maintainer(env: Arc<MeshEnv>, seeds: Vec<String>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(MAINTAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        // Learn the cluster: a FIND_NODE for our own id every tick while the mesh forms, then
        // every BOOTSTRAP_EVERY ticks (new nodes also announce themselves when they link).
        if !env.mesh.is_empty() && (n <= 5 || n % BOOTSTRAP_EVERY == 0) {
            let dht = env.dht.clone();
            env.node.tasks.spawn(async move { dht.bootstrap().await });
        }
        if env.mesh.is_empty() {
            for seed in &seeds {
                match tokio::net::lookup_host(seed.as_str()).await {
                    Ok(mut addrs) => {
                        if let Some(a) = addrs.next() {
                            env.mesh.dial(a);
                        }
                    }
                    Err(e) => debug!(seed = %seed, error = %e, "seed does not resolve"),
                }
            }
        }
        for c in env.dht.contacts() {
            if env.mesh.get(&c.id.0).is_none() {
                env.mesh.dial(c.addr);
            }
        }
        // Members learnt by gossip (through the bridge too) that the DHT has not shown yet.
        for (id, addr) in env.gossip.members.load().iter() {
            if env.mesh.get(id).is_none() {
                env.mesh.dial(*addr);
            }
        }
        for link in env.mesh.expire(Instant::now()) {
            debug!(
                link,
                "mesh peer did not come back; its interest is forgotten"
            );
            env.pubsub.remove_link(link);
        }
        env.dht.tick().await;
    }
}
