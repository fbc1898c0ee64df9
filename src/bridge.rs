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
//! from only after every link it relayed it to has acknowledged it
//! ([`AckTrack`](crate::session::AckTrack)), across any number of levels. If a bridge dies
//! first, the origin still holds the publish and sends it again; receivers de-duplicate by
//! message id. While the parent link is down a QoS 1 publish the parent may want is held
//! unacknowledged for the same reason.
//!
//! **Discovery and RPC** (`docs/DISCOVERY.md`, "Bridge: subtree index, advertisement,
//! escalation" and "Calls"). A *child link* is any session accepted here with role `node`: a
//! node's uplink or a child bridge's parent link — both are served by the same code
//! (`bridge/child.rs`).
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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, info_span, Instrument};

use crate::config::Config;
use crate::escalation::LookupCache;
use crate::metrics::Metrics;
use crate::relay::{LinkId, Relay};
use crate::router::PeerKey;
pub use crate::server::ServerHandle;
use crate::session::{Outbound, PeerTx};
use crate::wire::NodeId;

pub mod aggregate;
mod calls;
mod child;
pub mod fleet;
mod gossip;
pub mod index;
mod parent;
mod pubsub;
mod rpc;
#[cfg(test)]
mod tests;

use child::{ChildEnv, LinkKeys};
use index::{IndexLimits, SubtreeIndex};
use parent::ParentSession;
pub use pubsub::PATTERNS_PER_FRAME;
use pubsub::{BridgePubSub, FIRST_LINK_KEY};
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
    let pubsub = Arc::new(BridgePubSub {
        node_id,
        fleet_group,
        metrics: metrics.clone(),
        realms: realms.clone(),
    });
    let rpc = Arc::new(rpc::BridgeRpc::new(
        &cfg,
        node_id,
        local_addr,
        cache,
        fleet.clone(),
        metrics.clone(),
        tracker.clone(),
    ));
    let gossip = Arc::new(gossip_handle);
    tracker.spawn(
        gossip_task
            .run(shutdown.clone())
            .instrument(info_span!("gossip")),
    );
    let children = Arc::new(ChildEnv {
        node_id,
        identity: identity.clone(),
        auth: auth.clone(),
        rates: crate::rate::Rates::new(
            cfg.rate.link,
            cfg.rate.realm,
            Duration::from_millis(cfg.rate.burst_ms),
            cfg.limits
                .max_frame_size
                .saturating_add(crate::defaults::FRAME_HEADER_SIZE),
        ),
        limits: cfg.limits.clone(),
        keep_alive_ms: cfg.transport.keep_alive_ms,
        handoff_grace: Duration::from_millis(cfg.bridge.fleet.handoff_grace_ms),
        metrics: metrics.clone(),
        realms: realms.clone(),
        keys: LinkKeys::new(groups, FIRST_LINK_KEY),
        pubsub: pubsub.clone(),
        rpc: rpc.clone(),
        gossip: gossip.clone(),
        fleet: fleet.clone(),
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
    });
    let client_ep = if has_parent || fleet_task.is_some() {
        let bind: SocketAddr = if local_addr.is_ipv6() {
            "[::]:0".parse().expect("valid literal")
        } else {
            "0.0.0.0:0".parse().expect("valid literal")
        };
        Some(crate::transport::client_endpoint(
            bind,
            &cfg.tls,
            &cfg.transport,
            &cfg.data_dir,
        )?)
    } else {
        None
    };
    if let (Some(task), Some(ep)) = (fleet_task, &client_ep) {
        tracker.spawn(
            fleet::run(children.clone(), task, ep.clone(), shutdown.clone())
                .instrument(info_span!("fleet")),
        );
    }
    if let (true, Some(client_ep)) = (has_parent, &client_ep) {
        let parent_env = Arc::new(parent::ParentEnv {
            node_id,
            identity,
            auth: auth.clone(),
            parents: cfg.bridge.parents.clone(),
            server_name: cfg.bridge.parent_server_name.clone(),
            level,
            fleet_name: cfg.bridge.fleet.name.clone(),
            record_ttl_ms: cfg.dht.record_ttl_ms,
            limits: cfg.limits.clone(),
            metrics: metrics.clone(),
            rpc: rpc.clone(),
            gossip,
            pubsub,
            tracker: tracker.clone(),
        });
        for realm in realms.values() {
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
    tracker.spawn(rpc.housekeeping(realms.values().cloned().collect(), shutdown.clone()));
    if let Some(w) = crate::auth::revocation_watcher(&auth, &cfg.auth, &metrics, &shutdown) {
        tracker.spawn(w);
    }
    tracker.spawn(crate::server::accept_loop(
        endpoint.clone(),
        crate::server::gate::GateLimits::of(&cfg.limits),
        "node",
        metrics,
        tracker.clone(),
        shutdown.clone(),
        move |conn| {
            let env = children.clone();
            let span = info_span!("node", remote.addr = %conn.remote_address());
            async move { child::serve_node(env, conn).await }.instrument(span)
        },
    ));
    info!(
        listen = %local_addr,
        realms = ?cfg.bridge.realms,
        level = %level,
        parents = ?cfg.bridge.parents,
        "bridge started"
    );
    let fleet_handle = fleet.as_ref().map(|f| crate::server::FleetHandle {
        drain: f.drain.clone(),
        drained: f.drained.clone(),
        grace: Duration::from_millis(cfg.bridge.fleet.drain_grace_ms),
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
