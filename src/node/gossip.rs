//! The node's gossip task: one replica of the cluster's CRDT store (`docs/GOSSIP.md`).
//!
//! One task owns the [`Gossip`] engine; link readers, clients and the RPC advertiser talk to
//! it through one bounded queue ([`GossipHandle`]). Its peers are the mesh links and the
//! uplink's bridge (a member of the cluster's gossip). It pushes deltas every
//! `gossip.push_interval_ms`, runs anti-entropy every `gossip.anti_entropy_interval_ms`, keeps
//! this node in `$members` (re-adding itself if someone removed it while it was cut off) and
//! removes members unreachable for [`MEMBER_TIMEOUT`].
//!
//! The handle is given, once, what the gossip code needs of the rest of the node
//! ([`GossipEnv`]); no function here sees more of the node than that.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::UplinkTx;
use crate::crdt::writers::WriterQuota;
use crate::crdt::{ActorId, CrdtError, Op, Value};
use crate::gossip::{Gossip, GossipConfig, GossipStats, Message};
use crate::metrics::Metrics;
use crate::quota::QuotaError;
use crate::session::{Outbound, PeerTx};
use crate::state::{self, hex_id, MEMBERS_KEY, META_PREFIX, RPC_PREFIX, SUB_PREFIX};
use crate::wire::{ErrorCode, NodeId, RawFrame};

/// Commands queued to the gossip task at most (beyond it gossip frames are dropped and
/// counted as `overloaded`; anti-entropy repairs what they carried).
pub const GOSSIP_QUEUE: usize = 1024;

/// A member without a link for this long is removed from `$members` (it re-adds itself
/// when it comes back).
pub const MEMBER_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach a gossip peer.
pub enum PeerLink {
    /// A mesh link.
    Mesh(PeerTx),
    /// The uplink (the peer is the bridge).
    Uplink,
}

/// What the gossip task is asked to do.
pub enum Cmd {
    /// A gossip message arrived from an authenticated peer.
    Message {
        /// The peer.
        from: NodeId,
        /// The message.
        msg: Message,
        /// What the peer's credential permits (a mesh peer's; `None`: everything): the keys
        /// of its states are checked against it ([`state::link_policy`]).
        grant: Option<Arc<crate::auth::Grant>>,
    },
    /// A link to a peer came up.
    PeerUp(NodeId, PeerLink),
    /// A link went down (`key`: the mesh link's key, so an older duplicate closing keeps
    /// the newer link; `None` for the uplink).
    PeerDown(NodeId, Option<u64>),
    /// A local update; the reply (if asked for) tells whether it was applied.
    Update {
        /// Key.
        key: String,
        /// Operation.
        op: Op,
        /// The client that asked (its proven node id), charged for what it adds
        /// ([`WriterQuota`]); `None` for the node's own keys.
        writer: Option<NodeId>,
        /// Where to answer.
        reply: Option<oneshot::Sender<Result<(), CrdtError>>>,
    },
    /// Reads a key.
    Get {
        /// Key.
        key: String,
        /// Where to answer.
        reply: oneshot::Sender<Option<Value>>,
    },
}

/// What the node's gossip needs of the rest of the node: who it is, the engine's tuning and
/// the uplink it reaches the bridge over. Built once by `node::start`.
pub struct GossipEnv {
    /// The node's realm (`node.realm`): the store's scope with `cluster`.
    pub realm: String,
    /// The node's cluster (`node.cluster`): the store replicates among its nodes.
    pub cluster: String,
    /// This node's id (its actor in the store, its `$members` entry).
    pub node_id: NodeId,
    /// Where the other nodes of the cluster reach this one (its `$members` entry).
    pub advertise: SocketAddr,
    /// The engine's tuning (`gossip.*`).
    pub engine: GossipConfig,
    /// The uplink's queues, when an uplink is configured (the bridge is a gossip peer).
    pub uplink: Option<UplinkTx>,
    /// The process's metrics (`macula_gossip_*`).
    pub metrics: Arc<Metrics>,
    /// Where clients' `$crdt.*` calls run (the node's tracker, joined on shutdown).
    pub tasks: TaskTracker,
    /// What one client may hold in the store: (keys it created, bytes it wrote)
    /// (`crdt.writer_max_keys`, `crdt.writer_max_bytes`; [`crate::crdt::writers`]).
    pub writer_quota: (usize, usize),
}

/// The queue into the gossip task, what it publishes for other tasks, and what the gossip code
/// needs of the node ([`GossipEnv`]). Built by `node::start`; shared by the links, pub/sub and
/// RPC.
pub struct GossipHandle {
    tx: mpsc::Sender<Cmd>,
    /// The cluster's members other than this node: id and address (the mesh maintainer dials
    /// those without a link).
    pub members: ArcSwap<Vec<(NodeId, SocketAddr)>>,
    /// The store as JSON (admin `/state`), refreshed every push interval.
    pub json: Arc<ArcSwap<serde_json::Value>>,
    /// The service registry (`$rpc/<procedure>` → providing nodes of this cluster), refreshed
    /// every push interval: the first place a call's lookup looks after the node itself.
    pub providers: ArcSwap<HashMap<String, Vec<NodeId>>>,
    env: GossipEnv,
}

impl GossipHandle {
    /// A handle over `env` and the receiver the task reads.
    pub fn new(env: GossipEnv) -> (GossipHandle, mpsc::Receiver<Cmd>) {
        let (tx, rx) = mpsc::channel(GOSSIP_QUEUE);
        (
            GossipHandle {
                tx,
                members: ArcSwap::from_pointee(Vec::new()),
                json: Arc::new(ArcSwap::from_pointee(serde_json::json!({}))),
                providers: ArcSwap::from_pointee(HashMap::new()),
                env,
            },
            rx,
        )
    }

    /// Queues `cmd`; false when the queue is full or the task is gone.
    pub fn send(&self, cmd: Cmd) -> bool {
        self.tx.try_send(cmd).is_ok()
    }

    /// Fire-and-forget local update (registry, subscriptions).
    pub fn update(&self, key: String, op: Op) {
        let _ = self.tx.try_send(Cmd::Update {
            key,
            op,
            writer: None,
            reply: None,
        });
    }

    /// Handles a gossip frame read from a link to `peer`: decodes it, checks that its sender
    /// is the link's authenticated peer and that it is for this node's realm and cluster, and
    /// queues it with `grant`, what the peer's credential permits (its state's keys are
    /// checked against it). Refusals are counted (`macula_gossip_refused_total{reason}`).
    pub fn on_frame(
        &self,
        peer: NodeId,
        raw: &RawFrame,
        grant: Option<&Arc<crate::auth::Grant>>,
    ) -> Result<(), (ErrorCode, String)> {
        let env = &self.env;
        let metrics = &env.metrics.gossip;
        let Some(inc) = state::decode_gossip(raw, &peer, metrics)? else {
            return Ok(());
        };
        if inc.realm != env.realm || inc.scope != env.cluster {
            metrics.refused("wrong_scope");
            return Err((
                ErrorCode::UnknownRealm,
                format!(
                    "gossip for {}/{}; this node replicates {}/{}",
                    inc.realm, inc.scope, env.realm, env.cluster
                ),
            ));
        }
        if !self.send(Cmd::Message {
            from: peer,
            msg: inc.msg,
            grant: grant.cloned(),
        }) {
            metrics.refused("overloaded");
        }
        Ok(())
    }
}

/// The gossip task. `leave` starts the graceful leave (remove this node from `$members`, push
/// it to the peers, then notify `left`); `cancel` ends the task.
pub async fn run(
    handle: Arc<GossipHandle>,
    mut rx: mpsc::Receiver<Cmd>,
    leave: CancellationToken,
    left: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    let env = &handle.env;
    let cfg = env.engine.clone();
    let push_every = cfg.push_interval;
    let ae_every = cfg.anti_entropy_interval;
    let me = env.node_id;
    let mut g = Gossip::new(state::incarnation_actor(&me), cfg);
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut links: HashMap<NodeId, PeerLink> = HashMap::new();
    let mut mesh_keys: HashMap<NodeId, u64> = HashMap::new();
    let mut absent_since: HashMap<NodeId, Instant> = HashMap::new();
    let me_elem = state::member_element(&me, env.advertise);
    let meta = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "addr": env.advertise.to_string(),
        "cluster": env.cluster,
        "started_ms": state::now_ms(),
    });
    let _ = g.apply(MEMBERS_KEY, Op::SetAdd(me_elem.clone()), state::now_ms());
    let _ = g.apply(
        &format!("{META_PREFIX}{}", hex_id(&me)),
        Op::Put(Bytes::from(meta.to_string())),
        state::now_ms(),
    );
    let mut push = tokio::time::interval(push_every);
    push.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first anti-entropy soon after start (a joining node catches up at once), then
    // every interval.
    let first = Duration::from_millis(rand::random_range(500..=1500));
    let mut ae = tokio::time::interval_at(tokio::time::Instant::now() + first, ae_every);
    ae.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev = GossipStats::default();
    let mut writers = WriterQuota::new(env.writer_quota.0, env.writer_quota.1);
    env.metrics.gossip.stores.set(1);
    let mut leaving = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = leave.cancelled(), if !leaving => {
                // Leave: remove ourselves and push it (a few rounds cover a cluster; the
                // peers and the bridge spread it further). The refutation below is off now.
                leaving = true;
                let _ = g.apply(MEMBERS_KEY, Op::SetRemove(me_elem.clone()), state::now_ms());
                let rounds = links.len().div_ceil(g.config().fanout.max(1)).max(1) + 1;
                for _ in 0..rounds {
                    let out = g.on_push_tick(&mut rng);
                    send_all(env, &links, out);
                }
                info!("left the cluster's membership");
                left.notify_one();
            }
            _ = push.tick() => {
                let out = g.on_push_tick(&mut rng);
                send_all(env, &links, out);
                expire_members(me, &mut g, &links, &mut absent_since);
                publish_view(&handle, &g, &links);
                // Keys peers changed or removed no longer charge their local writers.
                if writers.tracked_keys() > 0 {
                    writers.reconcile_all(|k| g.store().key_bytes(k));
                }
            }
            _ = ae.tick() => {
                let out = g.on_anti_entropy_tick(state::now_ms(), &mut rng);
                send_all(env, &links, out);
            }
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    Cmd::Message { from, msg, grant } => {
                        let now = state::now_ms();
                        let mut policy =
                            |k: &str, kind| state::link_policy(grant.as_deref(), k, kind, &env.metrics);
                        match g.handle_with(ActorId(from), msg, now, &mut policy) {
                            Ok(out) => send_all(env, &links, out),
                            Err(e) => debug!(peer = %hex_id(&from), error = %e, "gossip refused"),
                        }
                        if let Some(key) = g.take_forged() {
                            crate::audit::crdt_forged(&from, &env.realm, &env.cluster, &key);
                        }
                        // Refute a removal that happened while we were cut off.
                        let present = matches!(
                            g.store().crdt(MEMBERS_KEY),
                            Some(crate::crdt::Crdt::OrSet(s)) if s.contains(&me_elem)
                        );
                        if !present && !leaving {
                            info!("re-adding this node to $members");
                            let _ = g.apply(MEMBERS_KEY, Op::SetAdd(me_elem.clone()), state::now_ms());
                        }
                    }
                    Cmd::PeerUp(id, link) => {
                        if let PeerLink::Mesh(tx) = &link {
                            mesh_keys.insert(id, tx.key);
                        }
                        links.insert(id, link);
                        absent_since.remove(&id);
                        g.add_peer(ActorId(id));
                        // A new peer gets an anti-entropy exchange now (it may be new or back
                        // from a partition).
                        let out = g.on_anti_entropy_tick(state::now_ms(), &mut rng);
                        send_all(env, &links, out);
                    }
                    Cmd::PeerDown(id, key) => {
                        if key.is_none() || mesh_keys.get(&id) == key.as_ref() {
                            mesh_keys.remove(&id);
                            links.remove(&id);
                            g.remove_peer(&ActorId(id));
                            env.metrics
                                .gossip
                                .anti_entropy_age_seconds
                                .remove_label_values(&[&hex_id(&id)[..16]])
                                .ok();
                        }
                    }
                    Cmd::Update { key, op, writer, reply } => {
                        let r = match writer {
                            None => g.apply(&key, op, state::now_ms()),
                            Some(w) => write_as(env, &mut g, &mut writers, w, &key, op),
                        };
                        let r = r.inspect_err(|e| env.metrics.gossip.refused(e.as_str()));
                        if let Some(reply) = reply {
                            let _ = reply.send(r);
                        }
                    }
                    Cmd::Get { key, reply } => {
                        let _ = reply.send(g.store().get(&key));
                    }
                }
            }
        }
        env.metrics.gossip.record(&mut prev, g.stats());
    }
}

/// Applies a client's write, charged to `writer` ([`WriterQuota`]): refused whole with
/// [`CrdtError::Quota`] (`writer keys` / `writer bytes`, counted in
/// `macula_quota_refused_total{table="crdt_writer"}`) when the key it would create or the
/// bytes it could add pass the client's share, re-checked once against the store as it is
/// now (peers may have removed what the client held).
fn write_as(
    env: &GossipEnv,
    g: &mut Gossip,
    writers: &mut WriterQuota,
    writer: NodeId,
    key: &str,
    op: Op,
) -> Result<(), CrdtError> {
    let before = g.store().key_bytes(key);
    let bound = g.store().growth_bound(key, &op);
    let mut checked = writers.check(writer, before.is_none(), bound);
    if checked.is_err() {
        writers.reconcile_all(|k| g.store().key_bytes(k));
        checked = writers.check(writer, before.is_none(), bound);
    }
    if let Err(e) = checked {
        use crate::metrics::quota::Table;
        env.metrics.quota.refused(Table::CrdtWriter, &e);
        let (what, limit) = match e {
            QuotaError::TenantEntries { limit, .. } => ("writer keys", limit),
            _ => ("writer bytes", env.writer_quota.1),
        };
        return Err(CrdtError::Quota { what, limit });
    }
    g.apply(key, op, state::now_ms())?;
    match g.store().key_bytes(key) {
        Some(after) => writers.written(writer, key, before, after),
        // An emptied set leaves the store at once (garbage collection).
        None => writers.reconcile(key, None),
    }
    Ok(())
}

/// Sends the engine's output over the peers' links.
fn send_all(env: &GossipEnv, links: &HashMap<NodeId, PeerLink>, out: Vec<(ActorId, Message)>) {
    for (peer, msg) in out {
        let Some(link) = links.get(&peer.0) else {
            continue;
        };
        let bytes = state::to_frame(&env.realm, &env.cluster, env.node_id, msg).to_bytes();
        let sent = match link {
            PeerLink::Mesh(tx) => tx.ctrl.try_send(Outbound::Frame(bytes)).is_ok(),
            PeerLink::Uplink => env
                .uplink
                .as_ref()
                .is_some_and(|up| up.ctrl.try_send(Outbound::Frame(bytes)).is_ok()),
        };
        if !sent {
            env.metrics.gossip.refused("overloaded");
        }
    }
}

/// Removes members other than `me` that have had no link for [`MEMBER_TIMEOUT`].
fn expire_members(
    me: NodeId,
    g: &mut Gossip,
    links: &HashMap<NodeId, PeerLink>,
    absent_since: &mut HashMap<NodeId, Instant>,
) {
    let Some(crate::crdt::Crdt::OrSet(set)) = g.store().crdt(MEMBERS_KEY) else {
        return;
    };
    let now = Instant::now();
    let mut expired = Vec::new();
    let mut seen = Vec::new();
    for elem in set.elements() {
        let Some((hex, _)) = state::parse_member(elem) else {
            continue;
        };
        let Some(id) = parse_hex_id(hex) else {
            continue;
        };
        if id == me || links.contains_key(&id) {
            continue;
        }
        seen.push(id);
        let since = *absent_since.entry(id).or_insert(now);
        if now.duration_since(since) >= MEMBER_TIMEOUT {
            expired.push(elem.clone());
        }
    }
    absent_since.retain(|id, _| seen.contains(id));
    for elem in expired {
        info!(member = %String::from_utf8_lossy(&elem), "member unreachable; removing it");
        let _ = g.apply(MEMBERS_KEY, Op::SetRemove(elem), state::now_ms());
    }
}

/// Publishes the member list (for the mesh maintainer) and the gauges.
fn publish_view(handle: &GossipHandle, g: &Gossip, links: &HashMap<NodeId, PeerLink>) {
    let mut members = Vec::new();
    if let Some(crate::crdt::Crdt::OrSet(set)) = g.store().crdt(MEMBERS_KEY) {
        for elem in set.elements() {
            if let Some((hex, addr)) = state::parse_member(elem) {
                if let Some(id) = parse_hex_id(hex) {
                    if id != handle.env.node_id {
                        members.push((id, addr));
                    }
                }
            }
        }
    }
    handle.members.store(Arc::new(members));
    handle.json.store(Arc::new(state::store_json(g.store())));
    let m = &handle.env.metrics.gossip;
    m.state_bytes.set(g.state_bytes() as i64);
    m.keys.set(g.store().len() as i64);
    let now = state::now_ms();
    let mut max_age = 0.0f64;
    for (id, link) in links {
        let age = g
            .last_anti_entropy(&ActorId(*id), now)
            .map(|ms| ms as f64 / 1000.0);
        let age = age.unwrap_or(f64::NAN);
        if let PeerLink::Mesh(_) = link {
            m.anti_entropy_age_seconds
                .with_label_values(&[&hex_id(id)[..16]])
                .set(age);
        }
        if age.is_finite() {
            max_age = max_age.max(age);
        }
    }
    m.anti_entropy_max_age_seconds.set(max_age);
}

/// Parses 64 hex digits into a node id.
pub fn parse_hex_id(hex: &str) -> Option<NodeId> {
    if hex.len() != 64 {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// The registry key of `procedure`.
pub fn rpc_key(procedure: &str) -> String {
    format!("{RPC_PREFIX}{procedure}")
}

/// The subscription key of `pattern`.
pub fn sub_key(pattern: &str) -> String {
    format!("{SUB_PREFIX}{pattern}")
}

/// The answer to a client request the gossip task cannot take now (its queue of
/// [`GOSSIP_QUEUE`] commands is full): `OVERLOADED`, counted as `overloaded`. A flood of
/// requests is refused rather than queued without bound.
fn busy(metrics: &Metrics) -> crate::wire::RpcError {
    metrics.gossip.refused("overloaded");
    crate::wire::RpcError::new(
        crate::wire::RpcError::OVERLOADED,
        "the node's gossip queue is full; retry later",
    )
}

/// Serves a client's `$crdt.update` / `$crdt.get` call (the client API of named keys):
/// decodes the args, asks the gossip task, and replies. A write is charged to `writer`, the
/// client's proven node id ([`WriterQuota`]). Errors are answered as RPC errors `INVALID`
/// (bad args, bad key, type mismatch), `PERMISSION_DENIED`, `LIMIT_EXCEEDED` (a bound of the
/// store: keys, bytes, elements, value size; or the client's share of it) or `OVERLOADED`.
pub fn client_op(
    gossip: &Arc<GossipHandle>,
    (client, writer): (&PeerTx, NodeId),
    call: crate::wire::Call,
    grant: Option<Arc<crate::auth::Grant>>,
) {
    use crate::auth::Action;
    use crate::wire::RpcError;
    let gossip = gossip.clone();
    let client = client.clone();
    let tasks = gossip.env.tasks.clone();
    tasks.spawn(async move {
        let invalid = |m: String| RpcError::new(RpcError::INVALID, m);
        let result: Result<Bytes, RpcError> = async {
            match call.procedure.as_str() {
                state::UPDATE_PROCEDURE => {
                    let a: state::UpdateArgs =
                        rmp_serde::from_slice(&call.args).map_err(|e| invalid(e.to_string()))?;
                    state::validate_app_key(&a.key).map_err(invalid)?;
                    if let Some(Err(m)) = grant.map(|g| g.check(Action::State, &a.key)) {
                        gossip.env.metrics.permission_denied(Action::State);
                        return Err(RpcError::new(RpcError::PERMISSION_DENIED, m));
                    }
                    let op = a.op().map_err(invalid)?;
                    let (tx, rx) = oneshot::channel();
                    let cmd = Cmd::Update {
                        key: a.key,
                        op,
                        writer: Some(writer),
                        reply: Some(tx),
                    };
                    if !gossip.send(cmd) {
                        return Err(busy(&gossip.env.metrics));
                    }
                    match rx.await {
                        Ok(Ok(())) => Ok(Bytes::new()),
                        Ok(Err(e @ (CrdtError::TooLarge { .. } | CrdtError::Quota { .. }))) => {
                            Err(RpcError::new(RpcError::LIMIT_EXCEEDED, e.to_string()))
                        }
                        Ok(Err(e)) => Err(invalid(e.to_string())),
                        Err(_) => Err(RpcError::new(RpcError::OVERLOADED, "gossip task gone")),
                    }
                }
                state::GET_PROCEDURE => {
                    let a: state::GetArgs =
                        rmp_serde::from_slice(&call.args).map_err(|e| invalid(e.to_string()))?;
                    let (tx, rx) = oneshot::channel();
                    if !gossip.send(Cmd::Get {
                        key: a.key,
                        reply: tx,
                    }) {
                        return Err(busy(&gossip.env.metrics));
                    }
                    let v = rx
                        .await
                        .map_err(|_| RpcError::new(RpcError::OVERLOADED, "gossip task gone"))?;
                    let wv = v.as_ref().map(state::WireValue::from);
                    let bytes = rmp_serde::to_vec(&wv).map_err(|e| invalid(e.to_string()))?;
                    Ok(Bytes::from(bytes))
                }
                other => Err(invalid(format!("unknown procedure {other:?}"))),
            }
        }
        .await;
        super::rpc::reply_link(&client, call.call_id, result);
    });
}
