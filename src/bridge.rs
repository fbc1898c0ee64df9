//! `macula bridge`: relays pub/sub between the nodes of the clusters below it, keeps the
//! subtree index of their provider records, answers and escalates lookups, and routes calls.
//!
//! **Pub/sub, at every level.** Routing is by interest only, on the pure relay core
//! ([`crate::relay`]; the binding to queues is `bridge/pubsub.rs`). Each realm has one
//! [`Relay`] of its links: the children (node uplinks and child bridges' parent links), the
//! fleet peers and, with `bridge.parents` set, the parent link. A publish from a child goes to
//! the children of *other* clusters holding a matching pattern, to the parent if the rest of
//! the hierarchy wants it, and to the fleet peers; a publish from the parent goes down to the
//! children that want it — never back to where it came from, never to another realm. Each
//! child is told the interest of everyone it can reach (other clusters, the parent); the
//! parent is told the minimal cover of the subtree's. Child bridges are told the chain of
//! bridges above them (`bridge_path`) and a loop in the parent configuration is refused, so
//! the hierarchy is a tree and every message crosses each link at most once: the N²
//! amplification of the Erlang mesh (Macula v0.16 defect 4) is impossible by construction.
//!
//! QoS 1 acknowledgements are chained: the bridge acknowledges a publish to the link it came
//! from only after every link it relayed it to has acknowledged it ([`AckTrack`]), across
//! any number of levels. If a bridge dies first, the origin still holds the publish and sends
//! it again; receivers de-duplicate by message id. While the parent link is down a QoS 1
//! publish the parent may want is held unacknowledged for the same reason.
//!
//! **Discovery and RPC** (`docs/DISCOVERY.md`, "Bridge: subtree index, advertisement,
//! escalation" and "Calls"). A *child link* is any session accepted here with role `node`: a
//! node's uplink or a child bridge's parent link — both are served by the same code.
//! - `store` from a child goes into the realm's [`index::SubtreeIndex`] (TTL-enforced, bounded
//!   per link and in total), which also routes calls: publisher node id → child link.
//! - `find_value` from a child is answered from the index, else (below the top) through the
//!   bridge's [`LookupCache`] at its level, whose misses ask the parent bridge.
//! - `call` with a `target` goes down the child link the target is routed through, else up to
//!   the parent, else is answered `UNREACHABLE`; its `reply` comes back the same way.
//! - With `bridge.parents` set, one task per realm keeps a link to the first parent that
//!   accepts (`bridge/parent.rs`) and advertises the index to it, aggregated.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use quinn::Connection;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, Instrument};

use crate::config::Config;
use crate::escalation::LookupCache;
use crate::metrics::Metrics;
use crate::relay::{LinkId, Relay, Route};
use crate::router::PeerKey;
pub use crate::server::ServerHandle;
use crate::session::{self, accept_session, AckTrack, Outbound, PeerTx, WriterConfig};
use crate::wire::{ErrorCode, Frame, MessageType, NodeId, RawFrame, Role, SubAck};

pub mod aggregate;
mod calls;
pub mod fleet;
mod gossip;
pub mod index;
mod parent;
mod pubsub;
mod rpc;
#[cfg(test)]
mod tests;

use index::{IndexLimits, SubtreeIndex};
use parent::ParentSession;
pub use pubsub::PATTERNS_PER_FRAME;
use pubsub::{relay_mut, remove_link, tell, BridgePubSub, FIRST_LINK_KEY};
use rpc::Link;

/// A running bridge; see [`ServerHandle`].
pub type BridgeHandle = ServerHandle;

/// Most `find_value` lookups a bridge answers concurrently through its cache and parent;
/// beyond it a lookup is refused with a `LIMIT_EXCEEDED` error frame carrying its correlation
/// id. Each holds at most one query to the parent, so this also bounds those.
pub const MAX_LOOKUPS: usize = 1024;

/// Period of the housekeeping sweep: expired index records are removed (and withdrawn
/// upward) and calls past their deadline are forgotten. 1 s.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// What every connection task of a bridge shares.
struct Shared {
    /// Admission rules and this bridge's own credential (`auth.*`).
    auth: crate::auth::Auth,
    /// The rate limits of node uplinks and child-bridge links (`rate.*`).
    rates: crate::rate::Rates,
    /// This process's key; proves `node_id` to every peer (`docs/AUTH.md`).
    identity: crate::identity::Identity,
    node_id: NodeId,
    cfg: Config,
    metrics: Arc<Metrics>,
    realms: Arc<Realms>,
    /// Pub/sub relaying and interest.
    pubsub: Arc<BridgePubSub>,
    next_key: AtomicU64,
    /// Group numbers of the clusters connected (realm + cluster name → group): the nodes of
    /// one cluster share a group, so they neither hear each other's interest nor receive each
    /// other's publishes through the bridge — they reach each other over their mesh.
    groups: Mutex<crate::router::GroupNames>,
    /// DHT and RPC: calls in flight, the level's lookup cache, lookups in flight.
    rpc: Arc<rpc::BridgeRpc>,
    tracker: TaskTracker,
    /// The queue into the gossip task (children's stores and the level store).
    gossip: Arc<gossip::BridgeGossip>,
    /// The fleet this bridge is a worker of (`bridge.fleet.name`), if any.
    fleet: Option<Arc<fleet::Fleet>>,
    /// Cancelled when the bridge shuts down.
    shutdown: CancellationToken,
}

/// Every realm of a bridge, by name (`bridge.realms`).
type Realms = HashMap<String, Arc<Realm>>;

/// The state of one realm.
struct Realm {
    name: Arc<str>,
    /// Pub/sub interest of every link of the realm (children, fleet peers, the parent) and
    /// the routing rules over it (`crate::relay`). Publishes take the read lock; interest
    /// changes take the write lock and send their deltas before releasing it (in order).
    relay: RwLock<Relay<PeerTx>>,
    /// The parent link's key in `relay` (the same across its sessions, so its interest
    /// survives a reconnect), when a parent is configured.
    up: Option<LinkId>,
    /// Provider records of the subtree, routes, and what the parent was told.
    index: Mutex<SubtreeIndex>,
    /// The interest patterns each link and tenant holds (`quota.interest_*`); locked inside
    /// the relay's write lock.
    interest_quota: Mutex<crate::quota::Ledger>,
    /// Open child links, by key (targets of routed calls).
    links: Mutex<HashMap<PeerKey, Link>>,
    /// The parent link's session while it is up.
    parent: ArcSwapOption<ParentSession>,
    /// Whether a parent is configured (`bridge.parents` not empty).
    has_parent: bool,
    /// Wakes the parent link's advertiser when the index has changes for it.
    upward: Notify,
    /// The bridges above this one, parent first, as the parent's last `bridge_path` said;
    /// empty while the parent link is down. A child bridge named here is refused.
    ancestry: Mutex<Vec<NodeId>>,
    /// Control queues of the child-bridge links, which are told this bridge's path.
    child_bridges: Mutex<HashMap<LinkId, mpsc::Sender<Outbound>>>,
    /// Set when the parent link ended on a loop (the redial then keeps backing off).
    looped: std::sync::atomic::AtomicBool,
}

/// Locks `m`, ignoring poisoning: every critical section here leaves its data consistent
/// (no code inside them panics by design), so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts a bridge from `cfg`: the QUIC listener, the housekeeping task and, when
/// `bridge.parents` is set, one parent-link task per realm. Errors: binding or TLS setup
/// failed.
pub async fn start(cfg: Config, metrics: Arc<Metrics>) -> anyhow::Result<BridgeHandle> {
    let endpoint = crate::transport::server_endpoint(
        cfg.bridge.listen,
        &cfg.tls,
        &cfg.transport,
        &cfg.data_dir,
    )?;
    let local_addr = endpoint.local_addr()?;
    let identity = crate::identity::Identity::load_or_create(&cfg.data_dir)?;
    let auth = crate::auth::Auth::from_config(&cfg.auth).map_err(anyhow::Error::msg)?;
    for realm in &cfg.bridge.realms {
        if !auth.admission.required(realm) {
            tracing::warn!(%realm, "realm is open: anyone who proves a key is admitted (set auth.operators, docs/AUTH.md)");
        }
    }
    let node_id: NodeId = identity.node_id();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let has_parent = !cfg.bridge.parents.is_empty();
    let realms: Arc<Realms> = cfg
        .bridge
        .realms
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut relay = Relay::new(cfg.limits.max_subscriptions_per_connection);
            // Keys below `FIRST_LINK_KEY` are the parent links' (group 0, never reused).
            let up = has_parent.then_some(i as LinkId + 1);
            if let Some(up) = up {
                relay.add_link(up, crate::relay::LinkKind::Uplink, None);
                // Until the parent's interest snapshot arrives, QoS 1 goes up (held).
                relay.set_unknown(up, true);
            }
            let realm = Realm {
                name: Arc::from(r.as_str()),
                relay: RwLock::new(relay),
                up,
                index: Mutex::new(SubtreeIndex::new(
                    IndexLimits {
                        total: cfg.quota.records_total,
                        ..IndexLimits::default()
                    },
                    cfg.quota.records(),
                    has_parent,
                )),
                interest_quota: Mutex::new(crate::quota::Ledger::new(cfg.quota.interest())),
                links: Mutex::new(HashMap::new()),
                parent: ArcSwapOption::empty(),
                has_parent,
                upward: Notify::new(),
                ancestry: Mutex::new(Vec::new()),
                child_bridges: Mutex::new(HashMap::new()),
                looped: std::sync::atomic::AtomicBool::new(false),
            };
            (r.clone(), Arc::new(realm))
        })
        .collect::<Realms>()
        .into();
    let level = cfg.bridge.level;
    let cache = LookupCache::new(level, cfg.cache.for_level(level), &metrics.cache);
    let realm_names = cfg.bridge.realms.iter().map(|r| Arc::from(r.as_str()));
    let (gossip_handle, gossip_task) =
        gossip::BridgeGossip::new(&cfg, node_id, realm_names.collect(), metrics.clone());
    let state_json = gossip_handle.json.clone();
    let mut groups = crate::router::GroupNames::default();
    // The route-table group of peer links, held for the process's life (it never changes).
    let fleet_group = groups.acquire(fleet::GROUP);
    let (fleet, fleet_task) =
        match fleet::Fleet::new(&cfg, node_id, local_addr, fleet_group, metrics.clone()) {
            Some((f, t)) => (Some(f), Some(t)),
            None => (None, None),
        };
    let shared = Arc::new(Shared {
        rates: crate::rate::Rates::new(
            cfg.rate.link,
            cfg.rate.realm,
            Duration::from_millis(cfg.rate.burst_ms),
            cfg.limits
                .max_frame_size
                .saturating_add(crate::defaults::FRAME_HEADER_SIZE),
        ),
        auth,
        identity,
        node_id,
        metrics: metrics.clone(),
        pubsub: Arc::new(BridgePubSub {
            node_id,
            fleet_group,
            metrics: metrics.clone(),
            realms: realms.clone(),
        }),
        realms,
        next_key: AtomicU64::new(FIRST_LINK_KEY),
        groups: Mutex::new(groups),
        rpc: Arc::new(rpc::BridgeRpc::new(
            &cfg,
            node_id,
            local_addr,
            cache,
            fleet.clone(),
            metrics.clone(),
            tracker.clone(),
        )),
        tracker: tracker.clone(),
        gossip: Arc::new(gossip_handle),
        fleet,
        shutdown: shutdown.clone(),
        cfg,
    });
    tracker.spawn(
        gossip_task
            .run(shutdown.clone())
            .instrument(info_span!("gossip")),
    );
    let client_ep = if has_parent || fleet_task.is_some() {
        let bind: SocketAddr = if local_addr.is_ipv6() {
            "[::]:0".parse().expect("valid literal")
        } else {
            "0.0.0.0:0".parse().expect("valid literal")
        };
        Some(crate::transport::client_endpoint(
            bind,
            &shared.cfg.tls,
            &shared.cfg.transport,
            &shared.cfg.data_dir,
        )?)
    } else {
        None
    };
    if let (Some(task), Some(ep)) = (fleet_task, &client_ep) {
        tracker.spawn(
            fleet::run(shared.clone(), task, ep.clone(), shutdown.clone())
                .instrument(info_span!("fleet")),
        );
    }
    if let (true, Some(client_ep)) = (has_parent, &client_ep) {
        let cfg = &shared.cfg;
        let parent_env = Arc::new(parent::ParentEnv {
            node_id,
            identity: shared.identity.clone(),
            auth: shared.auth.clone(),
            parents: cfg.bridge.parents.clone(),
            server_name: cfg.bridge.parent_server_name.clone(),
            level,
            fleet_name: cfg.bridge.fleet.name.clone(),
            record_ttl_ms: cfg.dht.record_ttl_ms,
            limits: cfg.limits.clone(),
            metrics: shared.metrics.clone(),
            rpc: shared.rpc.clone(),
            gossip: shared.gossip.clone(),
            pubsub: shared.pubsub.clone(),
            tracker: tracker.clone(),
        });
        for realm in shared.realms.values() {
            let span = info_span!("parent", realm = %realm.name);
            tracker.spawn(
                parent::run_parent(
                    parent_env.clone(),
                    realm.clone(),
                    client_ep.clone(),
                    shutdown.clone(),
                )
                .instrument(span),
            );
        }
    }
    tracker.spawn(
        shared
            .rpc
            .clone()
            .housekeeping(shared.realms.values().cloned().collect(), shutdown.clone()),
    );
    let auth_cfg = &shared.cfg.auth;
    if let Some(w) =
        crate::auth::revocation_watcher(&shared.auth, auth_cfg, &shared.metrics, &shutdown)
    {
        tracker.spawn(w);
    }
    let s = shared.clone();
    tracker.spawn(crate::server::accept_loop(
        endpoint.clone(),
        crate::server::gate::GateLimits::of(&shared.cfg.limits),
        "node",
        metrics,
        tracker.clone(),
        shutdown.clone(),
        move |conn| {
            let s = s.clone();
            let span = info_span!("node", remote.addr = %conn.remote_address());
            async move { serve_node(s, conn).await }.instrument(span)
        },
    ));
    info!(
        listen = %local_addr,
        realms = ?shared.cfg.bridge.realms,
        level = %level,
        parents = ?shared.cfg.bridge.parents,
        "bridge started"
    );
    let fleet_handle = shared.fleet.as_ref().map(|f| crate::server::FleetHandle {
        drain: f.drain.clone(),
        drained: f.drained.clone(),
        grace: Duration::from_millis(shared.cfg.bridge.fleet.drain_grace_ms),
        json: f.json.clone(),
    });
    Ok(BridgeHandle {
        local_addr,
        node_id,
        shutdown,
        tracker,
        endpoint,
        state: state_json,
        leave: None,
        fleet: fleet_handle,
        uplink_fleet: None,
    })
}

use crate::session::link::{LinkActor, LinkIo, LinkTasks};
use crate::session::read::{Fatal, Flow, FrameHandler};

/// What a child link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkKind {
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
struct Remote {
    node_id: NodeId,
    cluster: String,
    max_frame_size: u32,
}

async fn serve_node(shared: Arc<Shared>, conn: Connection) {
    let metrics = shared.metrics.clone();
    let limits = &shared.cfg.limits;
    let (mut send, recv, decoder, connect) =
        match accept_session(&conn, limits.max_frame_size).await {
            Ok(s) => s,
            Err(e) => return session::reject_before_connect(&conn, &metrics, e).await,
        };
    metrics.frames_in.inc(MessageType::Connect as u8, 0);
    let realms = &shared.realms;
    let mut checked = session::check_connect(&connect, Role::Node, |r| realms.contains_key(r));
    let kind = if fleet::is_peer(&connect) {
        if checked.is_ok() {
            checked = match &shared.fleet {
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
        (kind, &checked, shared.realms.get(&connect.realm))
    {
        if connect.node_id == shared.node_id || lock(&realm.ancestry).contains(&connect.node_id) {
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
    let admitted = match shared.auth.admit(&connect, role, &conn) {
        Ok(a) => a,
        Err(e) => {
            let corr = connect.correlation_id;
            return session::refuse_admission(&conn, &mut send, &metrics, &e, corr).await;
        }
    };
    if let (LinkKind::Node | LinkKind::ChildBridge, Some(f)) = (kind, &shared.fleet) {
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
    let realm = shared.realms[&connect.realm].clone();
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
        _ => shared.rates.throttle(&connect.realm, admitted.credential),
    };
    run_link(
        shared.clone(),
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
async fn run_link(
    shared: Arc<Shared>,
    realm: Arc<Realm>,
    io: LinkIo,
    remote: Remote,
    kind: LinkKind,
    accepted: Option<&crate::wire::Connect>,
    (grant, throttle): (Option<Arc<crate::auth::Grant>>, crate::rate::Throttle),
) {
    let metrics = shared.metrics.clone();
    let limits = &shared.cfg.limits;
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
    let group = match &group_name {
        Some(name) => shared.groups.lock().expect("groups lock").acquire(name),
        None => 0,
    };
    let release = |shared: &Shared| {
        if let Some(name) = &group_name {
            shared.groups.lock().expect("groups lock").release(name);
        }
    };
    let seq = shared.next_key.fetch_add(1, Ordering::Relaxed) as u32;
    let key = crate::router::grouped_key(group, seq);
    let conn = io.conn.clone();
    let peer = match accepted {
        Some(connect) => session::accept_peer(
            key,
            &conn,
            connect,
            &shared.identity,
            limits,
            shared.cfg.transport.keep_alive_ms,
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
    if let (LinkKind::Peer { dialer }, Some(f)) = (kind, &shared.fleet) {
        if !f.peer_link_up(
            remote.node_id,
            &realm.name,
            key,
            dialer,
            &conn,
            link.clone(),
        ) {
            shared
                .metrics
                .fleet
                .refused_total
                .with_label_values(&["duplicate"])
                .inc();
            release(&shared);
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
        tx.send_ctrl(Frame::BridgePath(shared.pubsub.own_path(&realm)));
        lock(&realm.child_bridges).insert(key, tx.ctrl.clone());
    }
    // Revocation lists spread over every child and peer link (dropped with the link).
    let revocations =
        (shared.auth).revocation_link(&realm.name, remote.node_id, &tx.ctrl, &metrics);
    let child_fleet = kind == LinkKind::ChildBridge && group != 0;
    if child_fleet {
        metrics.fleet.child_workers.inc();
    }
    match (kind, &shared.fleet, accepted) {
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
        tracker: shared.tracker.clone(),
        span,
    };
    let (mut actor, _, pending) = LinkActor::start(io, peer, window, wcfg, tasks);
    // A dead child is detected by QUIC: its dialer asked for a 3 s idle timeout with 1 s
    // keep-alives (`transport.link_*`), so its routes, records and calls in flight go within
    // seconds, not at the 30 s default.
    let mut reader = ChildReader {
        ctx: FrameCtx {
            shared: &shared,
            realm: &realm,
            link: &link,
            child: &child,
            me: &tx,
            revocations: &revocations,
        },
        scratch: Vec::new(),
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
    if let Some(f) = &shared.fleet {
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
    let linger = match (&shared.fleet, kind) {
        (Some(_), LinkKind::Node | LinkKind::ChildBridge) => !orderly || handoff,
        (Some(_), LinkKind::Peer { .. }) => !orderly,
        (None, LinkKind::ChildBridge) => child_fleet && !orderly,
        _ => false,
    };
    if !matches!(kind, LinkKind::Peer { .. }) {
        shared.gossip.send(gossip::Cmd::ChildDown {
            realm: realm.name.clone(),
            from: remote.node_id,
            key,
        });
    }
    shared.rpc.link_closed(&realm, key);
    lock(&realm.child_bridges).remove(&key);
    info!(realm = %realm.name, cluster = %remote.cluster, kind = ?kind, orderly, linger, "link down");
    actor.finish(end.map(|_| ())).await;
    if linger {
        // Hold the link's interest (see `bridge/fleet.rs`, "Handoff grace").
        if let Some(f) = &shared.fleet {
            f.lingering.fetch_add(1, Ordering::Relaxed);
        }
        metrics.fleet.lingering_links.inc();
        let grace = Duration::from_millis(shared.cfg.bridge.fleet.handoff_grace_ms);
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = shared.shutdown.cancelled() => {}
        }
    }
    remove_link(&realm, key);
    release(&shared);
    if linger {
        if let Some(f) = &shared.fleet {
            f.lingering.fetch_sub(1, Ordering::Relaxed);
        }
        metrics.fleet.lingering_links.dec();
    }
}

/// A child link's frame handler.
struct ChildReader<'a> {
    ctx: FrameCtx<'a>,
    scratch: Vec<Route<PeerTx>>,
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
    shared: &'a Arc<Shared>,
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
    scratch: &mut Vec<Route<PeerTx>>,
    pending: &mut mpsc::Receiver<Arc<AckTrack>>,
    slow: Duration,
) -> Result<bool, Fatal> {
    use crate::auth::Action;
    let FrameCtx {
        shared, realm, me, ..
    } = *ctx;
    let grant = ctx.link.grant.as_deref();
    let metrics = &shared.metrics;
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
            (shared.pubsub)
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
            let count =
                match (shared.pubsub).change_interest(realm, me.key, &patterns, req.subscribe) {
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
            if let Err(e) = shared
                .auth
                .on_revocation_list(ctx.revocations, raw, metrics)
            {
                me.send_error(metrics, e.code(), e.to_string(), None);
            }
        }
        MessageType::FleetView if ctx.link.peer => {
            if let Err((code, msg)) =
                fleet::on_view(shared.fleet.as_deref(), &ctx.child.node_id, raw)
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
                (shared.gossip).on_child_frame(realm, ctx.child, me.key, &me.ctrl, raw)
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
            Ok(frame) => shared.rpc.on_child_frame(realm, ctx.link, frame),
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
