//! The bridge fleet (`docs/FLEET.md`): the workers serving one level as one logical bridge.
//!
//! - **Membership.** One task per worker owns the [`Membership`] table. Every second it sends
//!   its view ([`FleetView`]) over every peer link (the view doubles as the heartbeat), ticks
//!   the failure detector, resolves `bridge.fleet.dns`, dials the workers it has no link to,
//!   and rebalances. Views received are merged; a view from another fleet or with other
//!   settings is refused and counted.
//! - **Peer links.** Workers keep one link per pair of workers and realm. Both sides dial
//!   what they know; when two links between the same pair exist, both keep the one dialed by
//!   the lower id ([`prefer_new_link`]), so they converge on one. A peer link is a child link
//!   whose route-table entry sits in the shared fleet group: a worker tells its peers the
//!   interest of its own nodes only, and never relays what a peer sent to another peer, so
//!   every publish crosses at most one worker-to-worker hop and is never delivered twice.
//! - **Ownership.** [`crate::fleet::hash::Placement`] over the `Alive` and `Suspect` members
//!   maps each (realm, cluster) to its owner. A node connecting to a worker that does not own
//!   its cluster gets a [`Redirect`] to the owner, unless the owner has no link up here (it
//!   may be dying; this worker serves the node meanwhile) or the node says it was redirected
//!   [`defaults::FLEET_MAX_REDIRECTS`] times in a row (workers disagree during a membership
//!   change; the node stays, and is moved once they agree).
//! - **Child bridges** are placed and redirected like nodes, by `child_key`: the workers
//!   of one child fleet by their fleet's name (they stay together, as a cluster's nodes do),
//!   any other child bridge by its node id. Their parent links follow redirects
//!   (`bridge/parent.rs`, [`crate::fleet::follow`]).
//! - **Rebalancing and drain.** After a membership change, nodes whose cluster moved are
//!   redirected with a random delay of up to `bridge.fleet.redirect_jitter_ms`. A draining
//!   worker announces itself `Draining` (it owns nothing then), redirects every node, and is
//!   drained when no node link and no held interest remains.
//! - **Handoff grace.** The interest of a link that ended without an orderly close (a worker
//!   killed, a node redirected away) is held for `bridge.fleet.handoff_grace_ms`: QoS 1
//!   publishes matching it are relayed to a closed link and stay unacknowledged, so their
//!   publishers resend them, by which time the subscribers' nodes have re-homed and announced
//!   their interest at their new worker. Receivers de-duplicate.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use quinn::Connection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{lock, rpc::Link, Realm};
use crate::config::Config;
use crate::defaults;
use crate::fleet::hash::{child_bridge_key, cluster_key, Placement};
use crate::fleet::membership::{DetectorConfig, Membership};
use crate::metrics::Metrics;
use crate::router::PeerKey;
use crate::session::{self, Outbound};
use crate::wire::{
    self, Connect, ErrorCode, FleetMember, FleetView, Frame, MemberStatus, NodeId, Redirect, Store,
};

/// Name of the route-table group every peer link is in (see the module docs).
pub(super) const GROUP: &str = "\0fleet";
/// Capability a worker's `connect` carries when it dials another worker.
pub(super) const CAP_PEER: &str = "fleet-peer";
/// Prefix of the capability carrying the dialer's settings digest (16 hex digits).
const CAP_CONFIG: &str = "fleet-config=";
use crate::fleet::CAP_FLEET;
pub use crate::fleet::CAP_REDIRECTS;
/// How long a redirected node has to leave before it is redirected again; after
/// [`MAX_REDIRECT_TRIES`] tries its link is closed.
const REDIRECT_RETRY: Duration = Duration::from_secs(5);
/// Redirects sent to one node link before it is closed as not following them.
const MAX_REDIRECT_TRIES: u32 = 3;
/// Queue into the fleet task (views and link events); a full queue drops a view, which the
/// next second's view replaces.
const CMD_QUEUE: usize = 1024;

/// A child (a node or a child bridge) connected to this worker, as rebalancing sees it.
struct ChildNode {
    realm: Arc<str>,
    cluster: String,
    key: u64,
    ctrl: mpsc::Sender<Outbound>,
    conn: Connection,
    /// When the last redirect was sent, and how many were sent.
    redirected: Option<(Instant, u32)>,
}

/// The link currently used toward one worker in one realm.
struct PeerSlot {
    key: PeerKey,
    dialer: NodeId,
    conn: Connection,
    link: Link,
}

/// What the accept path and rebalancing read: rebuilt by the fleet task on every change.
pub(super) struct Directory {
    placement: Placement,
    /// Every known member (this worker first).
    members: Vec<FleetMember>,
    /// Workers with at least one peer link up.
    linked: HashSet<NodeId>,
    /// The `fleet_view` frame nodes receive as their directory.
    frame: Bytes,
}

impl Directory {
    /// Whether nodes may be sent to `id`: a link to it is up and it is not suspected.
    fn reachable(&self, id: &NodeId) -> bool {
        self.linked.contains(id)
            && self
                .members
                .iter()
                .any(|m| &m.id == id && m.status == MemberStatus::Alive)
    }

    fn addr_of(&self, id: &NodeId) -> Option<&str> {
        self.members
            .iter()
            .find(|m| &m.id == id)
            .map(|m| m.addr.as_str())
    }
}

enum Cmd {
    View(FleetView),
    LinkUp(NodeId),
    LinkDown(NodeId),
    DialEnded(String, Arc<str>),
}

/// The fleet state shared by the accept path, the links and the fleet task, with what
/// admission, rebalancing and record sync count and tell apart (the metrics, the peer links'
/// route-table group). Built once by [`Fleet::new`] (from `bridge::start`).
pub(super) struct Fleet {
    name: String,
    digest: u64,
    me: NodeId,
    advertise: String,
    jitter_ms: u64,
    dir: ArcSwap<Directory>,
    cmds: mpsc::Sender<Cmd>,
    draining: AtomicBool,
    /// Cancelled to start a drain (SIGTERM, `POST /drain`).
    pub(super) drain: CancellationToken,
    /// Cancelled when the drain is complete.
    pub(super) drained: CancellationToken,
    children: Mutex<HashMap<PeerKey, ChildNode>>,
    peers: Mutex<HashMap<(NodeId, Arc<str>), PeerSlot>>,
    /// Links whose interest is held for the handoff grace.
    pub(super) lingering: AtomicUsize,
    /// `/fleet` as JSON.
    pub(super) json: Arc<ArcSwap<serde_json::Value>>,
    /// The route-table group of peer links ([`GROUP`]): records stored through them are
    /// not this worker's own.
    group: u32,
    /// The process's metrics (`macula_fleet_*`).
    metrics: Arc<Metrics>,
    /// The name the other workers' certificates are checked for when this one dials them
    /// (`bridge.parent_server_name`).
    server_name: String,
}

/// The settings digest two workers must share: FNV-1a over the fleet name, level, realms
/// and hashing scheme.
pub fn config_digest(cfg: &Config) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for x in b.iter().chain(&[0xff]) {
            h ^= u64::from(*x);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(cfg.bridge.fleet.name.as_deref().unwrap_or("").as_bytes());
    eat(cfg.bridge.level.to_string().as_bytes());
    let mut realms = cfg.bridge.realms.clone();
    realms.sort();
    for r in &realms {
        eat(r.as_bytes());
    }
    eat(b"rendezvous-v1");
    h
}

/// Whether to replace the link to a peer that dialer `old` made by one `new` made, given
/// `me` and the `peer`: the link dialed by the lower id wins; between two links dialed by the
/// same side, the newer (the older one is presumably dead).
pub fn prefer_new_link(me: &NodeId, peer: &NodeId, old: &NodeId, new: &NodeId) -> bool {
    let preferred = if me < peer { me } else { peer };
    new == preferred || old != preferred
}

/// Whether a `connect` comes from another worker of a fleet.
pub(super) fn is_peer(c: &Connect) -> bool {
    c.capabilities.iter().any(|x| x == CAP_PEER)
}

/// The placement key of a child's `connect` and the name `/fleet` shows for it: a node is
/// placed by its cluster; a child bridge (`bridge`) by its fleet, `fleet/<name>`, when it is
/// a worker of one, else by its node id, `bridge/<hex id>` ([`child_bridge_key`]).
pub(super) fn child_key(c: &Connect, bridge: bool) -> (u64, String) {
    if !bridge {
        return (cluster_key(&c.realm, &c.cluster), c.cluster.clone());
    }
    let fleet = crate::fleet::fleet_of(&c.capabilities);
    let name = match fleet {
        Some(f) => format!("fleet/{f}"),
        None => format!("bridge/{}", hex(&c.node_id)),
    };
    (child_bridge_key(&c.realm, &c.node_id, fleet), name)
}

/// Whether a placement name from [`child_key`] is a child bridge's (`/` occurs in no
/// cluster name).
fn is_bridge_name(name: &str) -> bool {
    name.contains('/')
}

/// How many redirects in a row a node says it followed.
fn redirects_of(c: &Connect) -> u32 {
    c.capabilities
        .iter()
        .find_map(|x| x.strip_prefix(CAP_REDIRECTS))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn now_json(
    dir: &Directory,
    me: &NodeId,
    draining: bool,
    children: &[(String, String, usize, bool, String)],
) -> serde_json::Value {
    serde_json::json!({
        "self": hex(me),
        "draining": draining,
        "members": dir.members.iter().map(|m| serde_json::json!({
            "id": hex(&m.id),
            "addr": m.addr,
            "weight": m.weight,
            "incarnation": m.incarnation,
            "status": m.status.as_str(),
            "linked": dir.linked.contains(&m.id),
        })).collect::<Vec<_>>(),
        "clusters": children.iter().map(|(realm, cluster, nodes, owned, owner)| serde_json::json!({
            "realm": realm, "cluster": cluster, "nodes": nodes, "owned": owned, "owner": owner,
        })).collect::<Vec<_>>(),
    })
}

/// Lowercase hex of an id.
pub use crate::state::hex_id as hex;

impl Fleet {
    /// The fleet of a bridge whose `bridge.fleet.name` is set, and the receiving end of its
    /// task's queue; `None` for a single bridge. `group` is the peer links' route-table
    /// group ([`GROUP`]).
    pub(super) fn new(
        cfg: &Config,
        me: NodeId,
        local: SocketAddr,
        group: u32,
        metrics: Arc<Metrics>,
    ) -> Option<(Arc<Fleet>, FleetTask)> {
        let f = &cfg.bridge.fleet;
        let name = f.name.clone()?;
        let advertise = f.advertise.unwrap_or(local).to_string();
        let incarnation = crate::state::now_ms();
        let own = FleetMember {
            id: me,
            addr: advertise.clone(),
            weight: f.weight,
            incarnation,
            status: MemberStatus::Alive,
        };
        let detector = DetectorConfig {
            suspect_after: Duration::from_millis(f.suspect_after_ms),
            suspicion_timeout: Duration::from_millis(f.suspicion_timeout_ms),
            ..DetectorConfig::default()
        };
        let membership = Membership::new(own, detector, Instant::now());
        let (tx, rx) = mpsc::channel(CMD_QUEUE);
        let digest = config_digest(cfg);
        let dir = build_directory(&membership, &HashSet::new(), &name, digest);
        let fleet = Arc::new(Fleet {
            name,
            digest,
            me,
            advertise,
            jitter_ms: f.redirect_jitter_ms,
            dir: ArcSwap::from_pointee(dir),
            cmds: tx,
            draining: AtomicBool::new(false),
            drain: CancellationToken::new(),
            drained: CancellationToken::new(),
            children: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            lingering: AtomicUsize::new(0),
            json: Arc::new(ArcSwap::from_pointee(serde_json::Value::Null)),
            group,
            metrics,
            server_name: cfg.bridge.parent_server_name.clone(),
        });
        let seeds = f.peers.clone();
        let dns = f
            .dns
            .clone()
            .map(|d| (d, Duration::from_millis(f.dns_interval_ms)));
        Some((
            fleet,
            FleetTask {
                rx,
                membership,
                seeds,
                dns,
            },
        ))
    }

    /// The capabilities of a `connect` to another worker.
    fn peer_capabilities(&self) -> Vec<String> {
        vec![
            CAP_PEER.to_string(),
            format!("{CAP_FLEET}{}", self.name),
            format!("{CAP_CONFIG}{:016x}", self.digest),
        ]
    }

    /// Checks a peer's `connect`: same fleet, same settings. Errors: `FLEET_MISMATCH` with
    /// the reason (counted).
    pub(super) fn check_peer(&self, c: &Connect) -> Result<(), (ErrorCode, String)> {
        let cap = |p: &str| {
            c.capabilities
                .iter()
                .find_map(|x| x.strip_prefix(p).map(str::to_string))
        };
        let refused = |reason: &'static str, msg: String| {
            self.metrics
                .fleet
                .refused_total
                .with_label_values(&[reason])
                .inc();
            Err((ErrorCode::FleetMismatch, msg))
        };
        if cap(CAP_FLEET).as_deref() != Some(self.name.as_str()) {
            return refused("fleet", format!("this worker serves fleet {:?}", self.name));
        }
        if cap(CAP_CONFIG) != Some(format!("{:016x}", self.digest)) {
            return refused(
                "config",
                format!(
                    "fleet {:?} settings differ (level, realms or hashing)",
                    self.name
                ),
            );
        }
        Ok(())
    }

    /// Decides whether a child's `connect` (a node's or a child bridge's) is served here,
    /// given its placement `key` ([`child_key`]); `Some` is the redirect to send.
    pub(super) fn admit(&self, c: &Connect, key: u64) -> Option<Redirect> {
        let dir = self.dir.load();
        let owner = dir.placement.owner(key)?;
        if owner == self.me || !dir.reachable(&owner) {
            return None;
        }
        if redirects_of(c) >= defaults::FLEET_MAX_REDIRECTS {
            self.metrics
                .fleet
                .refused_total
                .with_label_values(&["redirect_loop"])
                .inc();
            return None;
        }
        let addr = dir.addr_of(&owner)?.to_string();
        let reason = if self.draining.load(Ordering::Relaxed) {
            "drain"
        } else {
            "connect"
        };
        self.metrics
            .fleet
            .redirects_sent_total
            .with_label_values(&[reason])
            .inc();
        Some(Redirect {
            owner,
            addr,
            delay_ms: 0,
            reason: reason.into(),
        })
    }

    /// Registers a peer link; `false`: a better link to that peer exists, close this one.
    pub(super) fn peer_link_up(
        &self,
        peer: NodeId,
        realm: &Arc<str>,
        key: PeerKey,
        dialer: NodeId,
        conn: &Connection,
        link: Link,
    ) -> bool {
        let mut peers = lock(&self.peers);
        let slot = (peer, realm.clone());
        if let Some(old) = peers.get(&slot) {
            if !prefer_new_link(&self.me, &peer, &old.dialer, &dialer) {
                return false;
            }
            old.conn.close(
                (ErrorCode::Protocol as u32).into(),
                b"superseded by the preferred link",
            );
        }
        peers.insert(
            slot,
            PeerSlot {
                key,
                dialer,
                conn: conn.clone(),
                link,
            },
        );
        drop(peers);
        let _ = self.cmds.try_send(Cmd::LinkUp(peer));
        true
    }

    /// Unregisters a peer link (if it is still the one in use).
    pub(super) fn peer_link_down(&self, peer: NodeId, realm: &Arc<str>, key: PeerKey) {
        let mut peers = lock(&self.peers);
        let slot = (peer, realm.clone());
        if peers.get(&slot).is_some_and(|s| s.key == key) {
            peers.remove(&slot);
        }
        drop(peers);
        let _ = self.cmds.try_send(Cmd::LinkDown(peer));
    }

    /// The peer links of `realm` (for forwarding provider records).
    pub(super) fn peer_links(&self, realm: &str) -> Vec<Link> {
        lock(&self.peers)
            .iter()
            .filter(|((_, r), _)| &**r == realm)
            .map(|(_, s)| s.link.clone())
            .collect()
    }

    /// Forwards a `store` that arrived on `from` to every peer link of `realm`, unless `from`
    /// is a peer link itself (records cross one fleet hop).
    pub(super) fn forward_store(&self, realm: &str, from: &Link, s: &Store, metrics: &Metrics) {
        if from.peer {
            return;
        }
        for link in self.peer_links(realm) {
            if link.send(Frame::Store(s.clone())) {
                metrics
                    .fleet
                    .forwarded_total
                    .with_label_values(&["store"])
                    .inc();
            }
        }
    }

    /// A child link (a node or a child bridge) came up: remembered for rebalancing, given
    /// the directory. `placed` is its placement key and name ([`child_key`]).
    pub(super) fn child_up(
        &self,
        key: PeerKey,
        realm: &Arc<str>,
        placed: (u64, String),
        ctrl: &mpsc::Sender<Outbound>,
        conn: &Connection,
    ) {
        let _ = ctrl.try_send(Outbound::Frame(self.dir.load().frame.clone()));
        lock(&self.children).insert(
            key,
            ChildNode {
                realm: realm.clone(),
                cluster: placed.1,
                key: placed.0,
                ctrl: ctrl.clone(),
                conn: conn.clone(),
                redirected: None,
            },
        );
    }

    /// A child link ended; returns whether it had been redirected (a handoff).
    pub(super) fn child_down(&self, key: PeerKey) -> bool {
        lock(&self.children)
            .remove(&key)
            .is_some_and(|c| c.redirected.is_some())
    }

    /// Whether this worker is draining.
    pub(super) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Sends `frame` to every child link (nodes and child bridges).
    fn to_children(&self, frame: &Bytes) {
        for c in lock(&self.children).values() {
            let _ = c.ctrl.try_send(Outbound::Frame(frame.clone()));
        }
    }

    /// Sends `frame` to every peer link.
    fn to_peers(&self, frame: &Bytes) {
        for s in lock(&self.peers).values() {
            let _ = s.link.ctrl.try_send(Outbound::Frame(frame.clone()));
        }
    }
}

fn build_directory(m: &Membership, linked: &HashSet<NodeId>, name: &str, digest: u64) -> Directory {
    let members = m.view();
    let frame = Frame::FleetView(FleetView {
        fleet: name.to_string(),
        config: digest,
        sender: m.me(),
        members: members.clone(),
    })
    .to_bytes();
    Directory {
        placement: Placement::new(&m.owners()),
        members,
        linked: linked.clone(),
        frame,
    }
}

/// A view from a peer link, for the fleet task. Views for another fleet or with other
/// settings are refused and counted; a full queue drops the view (the next one replaces it).
pub(super) fn on_view(
    fleet: Option<&Fleet>,
    from: &NodeId,
    raw: &wire::RawFrame,
) -> Result<(), (ErrorCode, String)> {
    let Some(fleet) = fleet else {
        return Err((
            ErrorCode::Protocol,
            "this bridge is not a fleet worker".into(),
        ));
    };
    let v = match raw.decode() {
        Ok(Frame::FleetView(v)) => v,
        Ok(_) => unreachable!("decode follows the header type"),
        Err(e) => return Err((e.code(), e.to_string())),
    };
    if v.fleet != fleet.name || v.config != fleet.digest || &v.sender != from {
        fleet
            .metrics
            .fleet
            .refused_total
            .with_label_values(&["view"])
            .inc();
        return Err((
            ErrorCode::FleetMismatch,
            "view of another fleet or sender".into(),
        ));
    }
    let _ = fleet.cmds.try_send(Cmd::View(v));
    Ok(())
}

/// Redirects every node whose cluster another linked worker owns (all of them when
/// draining), with jitter; closes links that ignored [`MAX_REDIRECT_TRIES`] redirects.
fn rebalance(fleet: &Fleet) {
    let dir = fleet.dir.load();
    let now = Instant::now();
    let draining = fleet.is_draining();
    let reason = if draining { "drain" } else { "rebalance" };
    let mut children = lock(&fleet.children);
    for c in children.values_mut() {
        let Some(owner) = dir.placement.owner(c.key) else {
            continue;
        };
        if owner == fleet.me || !dir.reachable(&owner) {
            continue;
        }
        let Some(addr) = dir.addr_of(&owner) else {
            continue;
        };
        let tries = match c.redirected {
            Some((at, _)) if now.duration_since(at) < REDIRECT_RETRY => continue,
            Some((_, n)) => n,
            None => 0,
        };
        if tries >= MAX_REDIRECT_TRIES {
            fleet
                .metrics
                .fleet
                .refused_total
                .with_label_values(&["ignored_redirect"])
                .inc();
            session::close(&c.conn, ErrorCode::ShuttingDown, "redirect not followed");
            continue;
        }
        let delay_ms = if fleet.jitter_ms == 0 {
            0
        } else {
            rand::random_range(0..=fleet.jitter_ms)
        };
        let frame = Frame::Redirect(Redirect {
            owner,
            addr: addr.to_string(),
            delay_ms: delay_ms as u32,
            reason: reason.into(),
        })
        .to_bytes();
        if c.ctrl.try_send(Outbound::Frame(frame)).is_ok() {
            fleet
                .metrics
                .fleet
                .redirects_sent_total
                .with_label_values(&[reason])
                .inc();
            debug!(realm = %c.realm, cluster = %c.cluster, owner = %addr, "redirecting node");
        }
        c.redirected = Some((now, tries + 1));
    }
}

fn cluster_counts(fleet: &Fleet) -> (usize, usize) {
    let dir = fleet.dir.load();
    let children = lock(&fleet.children);
    let mut seen: HashMap<u64, bool> = HashMap::new();
    // Child bridges are placed too, but are not clusters.
    for c in children.values().filter(|c| !is_bridge_name(&c.cluster)) {
        seen.entry(c.key)
            .or_insert_with(|| dir.placement.owner(c.key) == Some(fleet.me));
    }
    (seen.len(), seen.values().filter(|o| **o).count())
}

fn publish_json(fleet: &Fleet) {
    let dir = fleet.dir.load();
    let mut by_cluster: HashMap<(Arc<str>, String), (usize, u64)> = HashMap::new();
    for c in lock(&fleet.children).values() {
        by_cluster
            .entry((c.realm.clone(), c.cluster.clone()))
            .or_insert((0, c.key))
            .0 += 1;
    }
    let mut rows: Vec<(String, String, usize, bool, String)> = by_cluster
        .into_iter()
        .map(|((realm, cluster), (n, key))| {
            let owner = dir.placement.owner(key);
            (
                realm.to_string(),
                cluster,
                n,
                owner == Some(fleet.me),
                owner.map(|o| hex(&o)).unwrap_or_default(),
            )
        })
        .collect();
    rows.sort();
    fleet.json.store(Arc::new(now_json(
        &dir,
        &fleet.me,
        fleet.is_draining(),
        &rows,
    )));
}

impl Fleet {
    /// Provider records stored by this worker's own children, to send to a peer whose link just
    /// came up (it learns the rest from the nodes' refreshes).
    pub(super) fn sync_records(&self, realm: &Realm, link: &Link) {
        let own = |k: PeerKey| crate::router::group_of(k) != self.group;
        let records = lock(&realm.index).copies_where(own, Instant::now());
        for c in records {
            let store = Store {
                key: c.key,
                value: c.value,
                publisher: c.publisher,
                ttl_ms: c.remaining.as_millis().min(u128::from(u32::MAX)) as u32,
                correlation_id: 0,
                // Fleet peers are not bound by permissions, but the peer advertises the record
                // upward too, where the name is checked.
                name: c.name.as_deref().map(str::to_string),
            };
            if link.send(Frame::Store(store)) {
                self.metrics
                    .fleet
                    .forwarded_total
                    .with_label_values(&["store"])
                    .inc();
            }
        }
    }
}

mod task;
#[cfg(test)]
mod tests;

pub(super) use task::{run, FleetTask};
