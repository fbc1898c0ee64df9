//! The bridge's gossip task (`docs/GOSSIP.md`, "Across levels").
//!
//! A bridge is a member of the gossip of each child below it: it keeps a replica of every
//! child's store — a cluster's store (scope = the cluster's name, peers = the cluster's nodes
//! connected here) or a child bridge's level store (scope = `<level>/<id prefix>`) — and takes
//! part in its pushes and anti-entropy like any node. After a child's replica changes, the
//! bridge folds it into its own **level store** for the realm ([`super::aggregate`]), which it
//! gossips with its parent bridge (scope `<its level>/<its id prefix>`). Realms never mix: every
//! store belongs to one realm and frames of another realm are refused.
//!
//! One task owns every engine ([`GossipTask`]); link readers check frames and queue them to
//! it through [`BridgeGossip`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::aggregate::{self, Change};
use super::Realm;
use crate::auth::Grant;
use crate::crdt::ActorId;
use crate::gossip::{Gossip, GossipConfig, GossipStats, Message};
use crate::metrics::Metrics;
use crate::router::PeerKey;
use crate::session::Outbound;
use crate::state::{self, hex_id};
use crate::wire::{ErrorCode, NodeId, RawFrame};

/// Commands queued to the gossip task at most (beyond it frames are dropped and counted as
/// `overloaded`; anti-entropy repairs what they carried).
pub const GOSSIP_QUEUE: usize = 4096;

/// Most child stores one bridge replicates (all realms); a frame for a new store beyond it is
/// refused (`too_large`).
pub const MAX_CHILD_STORES: usize = 4096;

/// A child store without any link for this long is withdrawn from the level store and
/// dropped.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// What the gossip task is asked to do.
pub enum Cmd {
    /// A gossip message from a child link (already checked: sender = the link's node, realm =
    /// the link's realm, scope allowed for it).
    Child {
        /// Realm.
        realm: Arc<str>,
        /// Store.
        scope: String,
        /// Child bridge (its set elements are tagged) or node.
        is_bridge: bool,
        /// The sender.
        from: NodeId,
        /// The link's key.
        key: PeerKey,
        /// The link's control queue.
        tx: mpsc::Sender<Outbound>,
        /// What the link's credential permits (`None`: everything): bounds the keys its
        /// states may write (`state`, and `register` / `subscribe` for `$rpc/` / `$sub/`).
        grant: Option<Arc<Grant>>,
        /// The message.
        msg: Message,
    },
    /// A child link closed.
    ChildDown {
        /// Realm.
        realm: Arc<str>,
        /// The node.
        from: NodeId,
        /// The link's key.
        key: PeerKey,
    },
    /// The parent link of a realm came up.
    ParentUp {
        /// Realm.
        realm: Arc<str>,
        /// The parent bridge's id.
        id: NodeId,
        /// The parent session's control queue.
        tx: mpsc::Sender<Outbound>,
    },
    /// The parent link of a realm went down.
    ParentDown {
        /// Realm.
        realm: Arc<str>,
    },
    /// A gossip message from the parent (already checked: sender = the parent, realm, scope =
    /// this bridge's level store).
    Parent {
        /// Realm.
        realm: Arc<str>,
        /// The parent's id.
        from: NodeId,
        /// The message.
        msg: Message,
    },
}

/// The gossip subsystem as the links see it: the queue into the gossip task, the JSON view
/// of the stores, and what checking a frame takes (this bridge's level scope, the metrics).
/// Built once with its task by [`BridgeGossip::new`] (from `bridge::start`); the child and
/// parent links hold it.
pub struct BridgeGossip {
    tx: mpsc::Sender<Cmd>,
    /// `{realm: {"level": {key: value}, "scope": "<level>/<id>", "children": {scope: keys}}}`,
    /// refreshed every push interval when something changed.
    pub json: Arc<ArcSwap<serde_json::Value>>,
    /// This bridge's level store's scope ([`level_scope`]).
    scope: String,
    /// The process's metrics (`macula_gossip_*`).
    metrics: Arc<Metrics>,
}

/// The gossip task: the receiving end of [`BridgeGossip`]'s queue and what its engines read.
/// Built by [`BridgeGossip::new`]; [`GossipTask::run`] consumes it.
pub struct GossipTask {
    rx: mpsc::Receiver<Cmd>,
    env: TaskEnv,
}

/// What the gossip task's steps read: fixed for the process's life.
struct TaskEnv {
    /// The engines' settings (`gossip.*`).
    cfg: GossipConfig,
    /// This bridge's id (the sender of its frames; its engines' actor).
    node_id: NodeId,
    /// This bridge's level store's scope ([`level_scope`]).
    scope: String,
    /// The realms served (one level store each).
    realms: Vec<Arc<str>>,
    /// The process's metrics (`macula_gossip_*`, permission denials).
    metrics: Arc<Metrics>,
    /// Where the JSON view is published (shared with [`BridgeGossip::json`]).
    json: Arc<ArcSwap<serde_json::Value>>,
}

impl BridgeGossip {
    /// The handle and the task of bridge `node_id` serving `realms`, with the gossip
    /// settings and level of `cfg`.
    pub fn new(
        cfg: &crate::config::Config,
        node_id: NodeId,
        realms: Vec<Arc<str>>,
        metrics: Arc<Metrics>,
    ) -> (BridgeGossip, GossipTask) {
        let (tx, rx) = mpsc::channel(GOSSIP_QUEUE);
        let json = Arc::new(ArcSwap::from_pointee(serde_json::json!({})));
        let scope = level_scope(cfg.bridge.level, &node_id);
        let env = TaskEnv {
            cfg: state::engine_config(cfg),
            node_id,
            scope: scope.clone(),
            realms,
            metrics: metrics.clone(),
            json: json.clone(),
        };
        let handle = BridgeGossip {
            tx,
            json,
            scope,
            metrics,
        };
        (handle, GossipTask { rx, env })
    }

    /// Queues `cmd`; false when the queue is full.
    pub fn send(&self, cmd: Cmd) -> bool {
        self.tx.try_send(cmd).is_ok()
    }
}

/// The scope of a level store: `<level>/<first 8 hex digits of the bridge's id>`.
fn level_scope(level: crate::escalation::Level, node_id: &NodeId) -> String {
    format!("{level}/{}", &hex_id(node_id)[..8])
}

/// Who a child link is.
pub struct ChildInfo {
    /// Its node id (authenticated by the session).
    pub node_id: NodeId,
    /// Its cluster (nodes) or `bridge-<level>` (child bridges).
    pub cluster: String,
    /// Whether it is a child bridge.
    pub is_bridge: bool,
}

impl BridgeGossip {
    /// Handles a gossip frame from child link `key` of `realm`: decodes it and checks the
    /// sender, realm and scope, then queues it. Refusals are counted and answered with an
    /// error frame.
    pub fn on_child_frame(
        &self,
        realm: &Realm,
        child: &ChildInfo,
        key: PeerKey,
        tx: &mpsc::Sender<Outbound>,
        raw: &RawFrame,
    ) -> Result<(), (ErrorCode, String)> {
        let m = &self.metrics.gossip;
        let Some(inc) = state::decode_gossip(raw, &child.node_id, m)? else {
            return Ok(());
        };
        let scope_ok = if child.is_bridge {
            inc.scope
                .rsplit_once('/')
                .is_some_and(|(_, id)| id == &hex_id(&child.node_id)[..8])
        } else {
            inc.scope == child.cluster
        };
        if *inc.realm != *realm.name || !scope_ok {
            m.refused("wrong_scope");
            return Err((
                ErrorCode::UnknownRealm,
                format!(
                    "gossip for {}/{} is not accepted on this link",
                    inc.realm, inc.scope
                ),
            ));
        }
        // The link's grant, as the link table holds it (fleet peers have none).
        let grant = super::lock(&realm.links)
            .get(&key)
            .and_then(|l| l.grant.clone());
        let ok = self.send(Cmd::Child {
            realm: realm.name.clone(),
            scope: inc.scope,
            is_bridge: child.is_bridge,
            from: inc.sender,
            key,
            tx: tx.clone(),
            grant,
            msg: inc.msg,
        });
        if !ok {
            m.refused("overloaded");
        }
        Ok(())
    }

    /// Handles a gossip frame from the parent of `realm`.
    pub fn on_parent_frame(
        &self,
        realm: &Arc<str>,
        parent: NodeId,
        raw: &RawFrame,
    ) -> Result<(), (ErrorCode, String)> {
        let m = &self.metrics.gossip;
        let Some(inc) = state::decode_gossip(raw, &parent, m)? else {
            return Ok(());
        };
        if *inc.realm != **realm || inc.scope != self.scope {
            m.refused("wrong_scope");
            return Err((
                ErrorCode::UnknownRealm,
                format!(
                    "gossip for {}/{} is not accepted from the parent",
                    inc.realm, inc.scope
                ),
            ));
        }
        if !self.send(Cmd::Parent {
            realm: realm.clone(),
            from: parent,
            msg: inc.msg,
        }) {
            m.refused("overloaded");
        }
        Ok(())
    }
}

struct ChildStore {
    g: Gossip,
    is_bridge: bool,
    links: HashMap<NodeId, (PeerKey, mpsc::Sender<Outbound>)>,
    /// Changed since it was last folded into the level store.
    dirty: bool,
    /// Since when it has had no link.
    orphan_since: Option<Instant>,
    prev: GossipStats,
}

struct LevelStore {
    g: Gossip,
    parent: Option<(NodeId, mpsc::Sender<Outbound>)>,
    prev: GossipStats,
}

impl GossipTask {
    /// Runs the gossip task until `cancel` or until every [`BridgeGossip`] is dropped.
    pub async fn run(self, cancel: CancellationToken) {
        let GossipTask { rx, env } = self;
        run(&env, rx, cancel).await
    }
}

/// The gossip task's loop: pushes and anti-entropy on their timers, commands as they come.
async fn run(env: &TaskEnv, mut rx: mpsc::Receiver<Cmd>, cancel: CancellationToken) {
    let cfg = env.cfg.clone();
    let me = state::incarnation_actor(&env.node_id);
    let scope = env.scope.clone();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut children: HashMap<(Arc<str>, String), ChildStore> = HashMap::new();
    let mut levels: HashMap<Arc<str>, LevelStore> = env
        .realms
        .iter()
        .map(|r| {
            (
                r.clone(),
                LevelStore {
                    g: Gossip::new(me, cfg.clone()),
                    parent: None,
                    prev: GossipStats::default(),
                },
            )
        })
        .collect();
    let mut push = tokio::time::interval(cfg.push_interval);
    push.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ae = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_millis(rand::random_range(500..=1500)),
        cfg.anti_entropy_interval,
    );
    ae.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changed = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = push.tick() => {
                for ((realm, scope), c) in children.iter_mut() {
                    let out = c.g.on_push_tick(&mut rng);
                    send_child(env, realm, scope, c, out);
                }
                changed |= fold(env, &mut children, &mut levels);
                for (realm, l) in levels.iter_mut() {
                    let out = l.g.on_push_tick(&mut rng);
                    send_parent(env, realm, &scope, l, out);
                }
                if changed {
                    publish_json(env, &children, &levels, &scope);
                    changed = false;
                }
            }
            _ = ae.tick() => {
                let now = state::now_ms();
                for ((realm, scope), c) in children.iter_mut() {
                    let out = c.g.on_anti_entropy_tick(now, &mut rng);
                    send_child(env, realm, scope, c, out);
                }
                for (realm, l) in levels.iter_mut() {
                    let out = l.g.on_anti_entropy_tick(now, &mut rng);
                    send_parent(env, realm, &scope, l, out);
                }
            }
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                changed = true;
                match cmd {
                    Cmd::Child { realm, scope: child_scope, is_bridge, from, key, tx, grant, msg } => {
                        let k = (realm.clone(), child_scope.clone());
                        if !children.contains_key(&k) {
                            if children.len() >= MAX_CHILD_STORES {
                                env.metrics.gossip.refused("too_large");
                                continue;
                            }
                            children.insert(k.clone(), ChildStore {
                                g: Gossip::new(me, cfg.clone()),
                                is_bridge,
                                links: HashMap::new(),
                                dirty: false,
                                orphan_since: None,
                                prev: GossipStats::default(),
                            });
                        }
                        let c = children.get_mut(&k).expect("inserted above");
                        if c.links.insert(from, (key, tx)).is_none() {
                            c.g.add_peer(ActorId(from));
                        }
                        c.orphan_since = None;
                        let before = c.g.stats().deltas_merged;
                        let mut policy =
                            |k: &str, kind| state::link_policy(grant.as_deref(), k, kind, &env.metrics);
                        match c.g.handle_with(ActorId(from), msg, state::now_ms(), &mut policy) {
                            Ok(out) => send_child(env, &realm, &child_scope, c, out),
                            Err(e) => debug!(child = %child_scope, error = %e, "gossip refused"),
                        }
                        audit_forged(&mut c.g, &from, &realm, &child_scope);
                        c.dirty |= c.g.stats().deltas_merged != before;
                        env.metrics.gossip.record(&mut c.prev, c.g.stats());
                    }
                    Cmd::ChildDown { realm, from, key } => {
                        for ((r, _), c) in children.iter_mut() {
                            if *r != realm {
                                continue;
                            }
                            if c.links.get(&from).is_some_and(|(k, _)| *k == key) {
                                c.links.remove(&from);
                                c.g.remove_peer(&ActorId(from));
                                if c.links.is_empty() {
                                    c.orphan_since = Some(Instant::now());
                                }
                            }
                        }
                    }
                    Cmd::ParentUp { realm, id, tx } => {
                        if let Some(l) = levels.get_mut(&realm) {
                            if let Some((old, _)) = l.parent.take() {
                                l.g.remove_peer(&ActorId(old));
                            }
                            l.parent = Some((id, tx));
                            l.g.add_peer(ActorId(id));
                            let out = l.g.on_anti_entropy_tick(state::now_ms(), &mut rng);
                            send_parent(env, &realm, &scope, l, out);
                        }
                    }
                    Cmd::ParentDown { realm } => {
                        if let Some(l) = levels.get_mut(&realm) {
                            if let Some((old, _)) = l.parent.take() {
                                l.g.remove_peer(&ActorId(old));
                            }
                        }
                    }
                    Cmd::Parent { realm, from, msg } => {
                        if let Some(l) = levels.get_mut(&realm) {
                            let now = state::now_ms();
                            match l.g.handle_with(ActorId(from), msg, now, &mut state::check_remote_key) {
                                Ok(out) => send_parent(env, &realm, &scope, l, out),
                                Err(e) => debug!(error = %e, "gossip from the parent refused"),
                            }
                            audit_forged(&mut l.g, &from, &realm, &scope);
                            env.metrics.gossip.record(&mut l.prev, l.g.stats());
                        }
                    }
                }
            }
        }
    }
}

/// Writes the audit line of a state refused as forged (the other refusals are counted only).
fn audit_forged(g: &mut Gossip, from: &NodeId, realm: &str, scope: &str) {
    if let Some(key) = g.take_forged() {
        crate::audit::crdt_forged(from, realm, scope, &key);
    }
}

/// Folds every changed child store into its realm's level store, and withdraws (then drops)
/// child stores that have had no link for [`CHILD_TIMEOUT`]. Returns whether anything changed.
fn fold(
    env: &TaskEnv,
    children: &mut HashMap<(Arc<str>, String), ChildStore>,
    levels: &mut HashMap<Arc<str>, LevelStore>,
) -> bool {
    let now = Instant::now();
    let mut any = false;
    let mut gone = Vec::new();
    for ((realm, scope), c) in children.iter_mut() {
        let expired = c
            .orphan_since
            .is_some_and(|t| now.duration_since(t) >= CHILD_TIMEOUT);
        if !c.dirty && !expired {
            continue;
        }
        let Some(l) = levels.get_mut(realm) else {
            continue;
        };
        let empty = crate::crdt::CrdtMap::new();
        let source = if expired { &empty } else { c.g.store() };
        for change in aggregate::reconcile(l.g.store(), scope, source, c.is_bridge) {
            match change {
                Change::Apply(key, op) => {
                    if let Err(e) = l.g.apply(&key, op, state::now_ms()) {
                        env.metrics.gossip.refused(e.as_str());
                    }
                }
                Change::Merge(delta) => {
                    let stats = l.g.merge_local(&delta);
                    for (_, e) in &stats.refused {
                        env.metrics.gossip.refused(e.as_str());
                    }
                }
            }
        }
        c.dirty = false;
        any = true;
        if expired {
            gone.push((realm.clone(), scope.clone()));
        }
    }
    for k in gone {
        children.remove(&k);
    }
    let m = &env.metrics.gossip;
    m.stores.set((children.len() + levels.len()) as i64);
    m.keys.set(
        (children.values().map(|c| c.g.store().len()).sum::<usize>()
            + levels.values().map(|l| l.g.store().len()).sum::<usize>()) as i64,
    );
    m.state_bytes.set(
        (children.values().map(|c| c.g.state_bytes()).sum::<usize>()
            + levels.values().map(|l| l.g.state_bytes()).sum::<usize>()) as i64,
    );
    let now_ms = state::now_ms();
    let mut max_age = 0.0f64;
    for c in children.values() {
        for id in c.links.keys() {
            if let Some(ms) = c.g.last_anti_entropy(&ActorId(*id), now_ms) {
                max_age = max_age.max(ms as f64 / 1000.0);
            }
        }
    }
    m.anti_entropy_max_age_seconds.set(max_age);
    any
}

fn send_child(
    env: &TaskEnv,
    realm: &str,
    scope: &str,
    c: &mut ChildStore,
    out: Vec<(ActorId, Message)>,
) {
    send(env, realm, scope, out, |id| {
        c.links.get(id).map(|(_, tx)| tx)
    });
    env.metrics.gossip.record(&mut c.prev, c.g.stats());
}

fn send_parent(
    env: &TaskEnv,
    realm: &str,
    scope: &str,
    l: &mut LevelStore,
    out: Vec<(ActorId, Message)>,
) {
    let parent = &l.parent;
    send(env, realm, scope, out, |id| {
        parent.as_ref().filter(|(p, _)| p == id).map(|(_, tx)| tx)
    });
    env.metrics.gossip.record(&mut l.prev, l.g.stats());
}

/// Sends each message to its peer's control queue (`link` finds it; messages for a peer
/// without a link are dropped); a full queue is counted as `overloaded`.
fn send<'a>(
    env: &TaskEnv,
    realm: &str,
    scope: &str,
    out: Vec<(ActorId, Message)>,
    link: impl Fn(&NodeId) -> Option<&'a mpsc::Sender<Outbound>>,
) {
    for (peer, msg) in out {
        if let Some(tx) = link(&peer.0) {
            let f = state::to_frame(realm, scope, env.node_id, msg).to_bytes();
            if tx.try_send(Outbound::Frame(f)).is_err() {
                env.metrics.gossip.refused("overloaded");
            }
        }
    }
}

fn publish_json(
    env: &TaskEnv,
    children: &HashMap<(Arc<str>, String), ChildStore>,
    levels: &HashMap<Arc<str>, LevelStore>,
    scope: &str,
) {
    let mut out = serde_json::Map::new();
    for (realm, l) in levels {
        let kids: serde_json::Map<String, serde_json::Value> = children
            .iter()
            .filter(|((r, _), _)| r == realm)
            .map(|((_, s), c)| (s.clone(), serde_json::json!(c.g.store().len())))
            .collect();
        out.insert(
            realm.to_string(),
            serde_json::json!({
                "scope": scope,
                "level": state::store_json(l.g.store()),
                "children": kids,
            }),
        );
    }
    env.json.store(Arc::new(serde_json::Value::Object(out)));
}
