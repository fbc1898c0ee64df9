//! RPC on a node (`docs/DISCOVERY.md`, "Calls"): the registry of local providers, provider
//! records advertised in the cluster DHT and up to the bridge, the caller-side lookup (own node,
//! then the node's cache over the cluster DHT and the bridge levels), provider choice with
//! failover, and the routing of calls and replies between clients, mesh peers and the uplink.
//!
//! [`NodeRpc`] owns that state and is given, once, what it needs of the rest of the node
//! ([`RpcEnv`]); the node's links call its methods.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::debug;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::UplinkTx;
use crate::dht::Id;
use crate::escalation::{self, Answer, LookupError, Provider, Source};
use crate::metrics::Metrics;
use crate::router::PeerKey;
use crate::rpc::{
    order_providers, procedure_key, validate_procedure, Pending, PendingCalls, ProviderRecord,
};
use crate::session::{Outbound, PeerTx};
use crate::wire::{
    Call, ErrorCode, FindValue, FindValueReply, Frame, NodeId, Register, Reply, RpcError, Store,
    SubAck, Unregister, WireContact, MAX_HOPS,
};

/// Key of the uplink in the pending-call table (client and mesh keys count up from 1).
pub const UPLINK_LINK: PeerKey = u64::MAX - 1;

/// Most procedures one client connection may provide.
pub const MAX_PROCEDURES_PER_CLIENT: usize = 1024;

/// How long a provider whose attempt failed is tried last (10 s: longer than a bridge needs to
/// notice a dead link, 3 s, and withdraw its records).
pub const SUSPECT_FOR: Duration = Duration::from_secs(10);

/// Most providers remembered as suspect (beyond it the oldest entries are dropped).
pub const MAX_SUSPECTS: usize = 1024;

/// Most escalated lookups waiting for the bridge at once.
const MAX_ESCALATIONS: usize = 4096;

/// Procedures whose advertisement changed, queued for [`NodeRpc::run_advertiser`] (a name is queued
/// once per change; beyond the bound the periodic refresh catches up).
pub const ADVERT_QUEUE: usize = 4096;

/// Where a call's reply goes.
pub enum Back {
    /// Back over this link (a client, or a mesh peer) with the call id it came with.
    Link(PeerTx),
    /// Back up the uplink.
    Uplink,
    /// To a call this node originated.
    Local(oneshot::Sender<Result<Bytes, RpcError>>),
}

/// Local providers: which client connections provide which procedures.
#[derive(Default)]
pub struct Registry {
    by_proc: HashMap<String, Vec<PeerTx>>,
    by_client: HashMap<PeerKey, HashSet<String>>,
    rr: u64,
}

impl Registry {
    /// Adds `procs` for `tx`; returns the client's count and the procedures this node newly
    /// provides. Errors: the per-client bound.
    fn register(&mut self, tx: &PeerTx, procs: &[String]) -> Result<(usize, Vec<String>), String> {
        let held = self.by_client.entry(tx.key).or_default();
        let fresh: Vec<&String> = procs.iter().filter(|p| !held.contains(*p)).collect();
        if held.len() + fresh.len() > MAX_PROCEDURES_PER_CLIENT {
            return Err(format!(
                "a client provides at most {MAX_PROCEDURES_PER_CLIENT} procedures"
            ));
        }
        let mut new = Vec::new();
        for p in fresh {
            held.insert(p.clone());
            let list = self.by_proc.entry(p.clone()).or_default();
            if list.is_empty() {
                new.push(p.clone());
            }
            list.push(tx.clone());
        }
        Ok((held.len(), new))
    }

    /// Removes `procs` of client `key`; returns its count and the procedures no longer provided.
    fn unregister(&mut self, key: PeerKey, procs: &[String]) -> (usize, Vec<String>) {
        let mut gone = Vec::new();
        let Some(held) = self.by_client.get_mut(&key) else {
            return (0, gone);
        };
        for p in procs {
            if held.remove(p) {
                if let Some(list) = self.by_proc.get_mut(p) {
                    list.retain(|t| t.key != key);
                    if list.is_empty() {
                        self.by_proc.remove(p);
                        gone.push(p.clone());
                    }
                }
            }
        }
        let n = held.len();
        if n == 0 {
            self.by_client.remove(&key);
        }
        (n, gone)
    }

    fn remove_client(&mut self, key: PeerKey) -> Vec<String> {
        let procs: Vec<String> = self
            .by_client
            .get(&key)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default();
        self.unregister(key, &procs).1
    }

    /// A local provider of `proc`, round-robin.
    fn pick(&mut self, proc: &str) -> Option<PeerTx> {
        let list = self.by_proc.get(proc)?;
        self.rr = self.rr.wrapping_add(1);
        list.get((self.rr % list.len() as u64) as usize).cloned()
    }

    fn provides(&self, proc: &str) -> bool {
        self.by_proc.contains_key(proc)
    }

    fn procedures(&self) -> Vec<String> {
        self.by_proc.keys().cloned().collect()
    }
}

/// What the node's RPC needs of the rest of the node: who it is, its settings and the
/// handles of the links and stores it routes over.
pub struct RpcEnv {
    /// The node's realm (`node.realm`): procedure keys are scoped to it.
    pub realm: String,
    /// The node's cluster (`node.cluster`), written into its provider records.
    pub cluster: String,
    /// This node's id.
    pub node_id: NodeId,
    /// Where the other nodes of the cluster reach this one (the `sender` of escalations).
    pub contact_addr: std::net::SocketAddr,
    /// `rpc.max_attempts`.
    pub max_attempts: usize,
    /// The largest frame sent on the uplink, bytes (the bridge runs the node's limits).
    pub uplink_max_frame: usize,
    /// `dht.record_ttl_ms`, clamped to the wire's `u32`.
    pub record_ttl_ms: u32,
    /// The uplink's queues, when an uplink is configured.
    pub uplink: Option<UplinkTx>,
    /// Links to the other nodes of the cluster (calls to providers there).
    pub mesh: Arc<super::mesh::Mesh>,
    /// The cluster DHT (provider records).
    pub dht: Arc<crate::dht::service::DhtService>,
    /// The cluster's replicated store (the gossiped service registry).
    pub gossip: Arc<super::gossip::GossipHandle>,
    /// The queue into [`NodeRpc::run_advertiser`].
    pub advert_tx: mpsc::Sender<String>,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Where calls from clients run (the node's tracker, joined on shutdown).
    pub tasks: TaskTracker,
}

/// The node's RPC: the registry of local providers, calls in flight, escalations, the lookup
/// cache, and the routing of calls and replies over the node's links. It owns its state; the
/// node's links call it through their contexts.
pub struct NodeRpc {
    registry: Mutex<Registry>,
    pending: Mutex<PendingCalls<Back>>,
    escalations: Mutex<HashMap<u64, oneshot::Sender<Result<FindValueReply, String>>>>,
    next_corr: AtomicU64,
    rr: AtomicU64,
    /// Providers whose last attempt failed (timeout, unreachable), until when they are tried
    /// last: calls right after a provider dies go to the others first instead of each waiting
    /// its attempt share. Bounded by [`MAX_SUSPECTS`].
    suspects: Mutex<HashMap<[u8; 32], Instant>>,
    /// Whether the uplink session is up (calls and lookups fail over at once while it is not).
    uplink_up: AtomicBool,
    /// The node's lookup cache (level `cluster`).
    cache: escalation::LookupCache,
    /// Who this node is, its settings, and the handles RPC routes over.
    env: RpcEnv,
}

impl NodeRpc {
    /// Empty state with a pending-call bound (`rpc.max_pending`) and a cache, over `env`.
    pub fn new(max_pending: usize, cache: escalation::LookupCache, env: RpcEnv) -> Self {
        NodeRpc {
            registry: Mutex::default(),
            pending: Mutex::new(PendingCalls::new(max_pending)),
            escalations: Mutex::default(),
            next_corr: AtomicU64::new(1),
            rr: AtomicU64::new(0),
            suspects: Mutex::default(),
            uplink_up: AtomicBool::new(false),
            cache,
            env,
        }
    }

    /// Procedures provided by this node's clients.
    pub fn procedures(&self) -> Vec<String> {
        self.registry.lock().expect("registry lock").procedures()
    }

    /// The uplink session came up (`true`) or went down.
    pub fn set_uplink_up(&self, up: bool) {
        self.uplink_up.store(up, Ordering::Relaxed);
    }

    /// Sends a reply to wherever `back` says.
    fn respond(&self, back: Back, call_id: u64, result: Result<Bytes, RpcError>) {
        match back {
            Back::Local(tx) => {
                let _ = tx.send(result);
            }
            Back::Link(tx) => {
                let _ =
                    tx.ctrl
                        .try_send(Outbound::Frame(reply_bytes(call_id, result, tx.max_frame)));
            }
            Back::Uplink => {
                if let Some(up) = &self.env.uplink {
                    let f = reply_bytes(call_id, result, self.env.uplink_max_frame);
                    let _ = up.ctrl.try_send(Outbound::Frame(f));
                }
            }
        }
    }

    // ---------------------------------------------------------------- registration

    /// `register` from a client.
    pub fn on_register(&self, me: &PeerTx, r: Register) {
        if let Some(bad) = r
            .procedures
            .iter()
            .find_map(|p| validate_procedure(p).err())
        {
            me.send_error(
                &self.env.metrics,
                ErrorCode::MalformedBody,
                bad,
                Some(r.correlation_id),
            );
            return;
        }
        let res = self
            .registry
            .lock()
            .expect("registry lock")
            .register(me, &r.procedures);
        match res {
            Ok((count, new)) => {
                for p in new {
                    self.advertise(p);
                }
                me.send_ctrl(Frame::SubAck(SubAck {
                    correlation_id: r.correlation_id,
                    count: count as u32,
                }));
            }
            Err(msg) => me.send_error(
                &self.env.metrics,
                ErrorCode::LimitExceeded,
                msg,
                Some(r.correlation_id),
            ),
        }
    }

    /// `unregister` from a client.
    pub fn on_unregister(&self, me: &PeerTx, u: Unregister) {
        let (count, gone) = self
            .registry
            .lock()
            .expect("registry lock")
            .unregister(me.key, &u.procedures);
        for p in gone {
            self.withdraw(p);
        }
        me.send_ctrl(Frame::SubAck(SubAck {
            correlation_id: u.correlation_id,
            count: count as u32,
        }));
    }

    /// A client left: its procedures go, and calls waiting on it fail over.
    pub fn client_gone(&self, key: PeerKey) {
        let gone = self
            .registry
            .lock()
            .expect("registry lock")
            .remove_client(key);
        for p in gone {
            self.withdraw(p);
        }
        self.link_closed(key);
    }

    fn record(&self) -> Bytes {
        ProviderRecord {
            node_id: self.env.node_id,
            cluster: self.env.cluster.clone(),
        }
        .encode()
    }

    /// The uplink `store` advertising `proc` (`ttl_ms = 0` withdraws).
    pub fn store_frame(&self, proc: &str, ttl_ms: u32) -> Bytes {
        Frame::Store(Store {
            correlation_id: self.next_corr.fetch_add(1, Ordering::Relaxed),
            key: procedure_key(&self.env.realm, proc),
            value: self.record(),
            ttl_ms,
            publisher: self.env.node_id,
            name: Some(proc.to_string()),
        })
        .to_bytes()
    }

    fn advertise(&self, proc: String) {
        if self.env.advert_tx.try_send(proc).is_err() {
            debug!("advertisement queue full; the periodic refresh will catch up");
        }
    }

    fn withdraw(&self, proc: String) {
        self.advertise(proc);
    }

    /// Publishes and withdraws provider records one procedure at a time, in the order the
    /// registry changed: for each name it reads the registry *now* and publishes (own store, the k
    /// closest nodes, the uplink) or withdraws accordingly, so a quick register → unregister never
    /// leaves a stale record behind.
    pub async fn run_advertiser(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::Receiver<String>,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let proc = tokio::select! {
                _ = cancel.cancelled() => return,
                p = rx.recv() => match p { Some(p) => p, None => return },
            };
            let provided = self.registry.lock().expect("registry lock").provides(&proc);
            let key = procedure_key(&self.env.realm, &proc);
            let me = crate::state::hex_id(&self.env.node_id);
            let op = if provided {
                crate::crdt::Op::SetAdd(me.into())
            } else {
                crate::crdt::Op::SetRemove(me.into())
            };
            self.env.gossip.update(super::gossip::rpc_key(&proc), op);
            if let Some(up) = &self.env.uplink {
                let ttl = if provided { self.env.record_ttl_ms } else { 0 };
                let _ = up
                    .ctrl
                    .try_send(Outbound::Frame(self.store_frame(&proc, ttl)));
            }
            if provided {
                let acked = self
                    .env
                    .dht
                    .publish_named(Id(key), self.record(), &proc)
                    .await;
                debug!(procedure = %proc, acked, "provider record published");
            } else {
                self.env.dht.withdraw(Id(key)).await;
                self.cache
                    .invalidate(self.env.realm.as_str().into(), Id(key))
                    .await;
                debug!(procedure = %proc, "provider record withdrawn");
            }
        }
    }

    /// The uplink `store`s re-advertising every local procedure (sent on every uplink session and
    /// every `record_ttl_ms / 2`).
    pub fn all_store_frames(&self) -> Vec<Bytes> {
        let ttl = self.env.record_ttl_ms;
        self.procedures()
            .iter()
            .map(|p| self.store_frame(p, ttl))
            .collect()
    }

    // ---------------------------------------------------------------- calls in

    /// A link closed: every call forwarded over it is answered `UNREACHABLE`.
    pub fn link_closed(&self, key: PeerKey) {
        let drained = self.pending.lock().expect("pending lock").drain_link(key);
        for p in drained {
            self.respond(
                p.back,
                p.back_call_id,
                Err(err(
                    RpcError::UNREACHABLE,
                    "the link toward the provider closed",
                )),
            );
        }
        self.set_pending_gauge();
    }

    fn set_pending_gauge(&self) {
        let n = self.pending.lock().expect("pending lock").len();
        self.env.metrics.rpc.pending.set(n as i64);
    }

    /// Drops calls past their deadline (their callers have given up) and escalations nobody waits
    /// for. Call about every second.
    pub fn sweep(&self) {
        let expired = self
            .pending
            .lock()
            .expect("pending lock")
            .expire(Instant::now());
        drop(expired);
        self.escalations
            .lock()
            .expect("escalations lock")
            .retain(|_, tx| !tx.is_closed());
        self.set_pending_gauge();
    }

    /// A `reply` arrived over link `key` (a client, a mesh peer or [`UPLINK_LINK`]).
    pub fn reply_arrived(&self, key: PeerKey, r: Reply) {
        let entry = self
            .pending
            .lock()
            .expect("pending lock")
            .take(r.call_id, key);
        match entry {
            Some(p) => self.respond(p.back, p.back_call_id, r.result),
            None => self.env.metrics.rpc.unknown_replies_total.inc(),
        }
        self.set_pending_gauge();
    }

    /// A `call` with a target arrived from a mesh peer or the uplink: deliver it to a local
    /// provider, or (from the uplink only) pass it to the mesh peer it names.
    pub fn routed_call(&self, back: Back, call: Call, from_uplink: bool) {
        if call.hops > MAX_HOPS {
            return self.respond(
                back,
                call.call_id,
                Err(err(RpcError::HOPS_EXCEEDED, "hop limit exceeded")),
            );
        }
        match call.target {
            Some(t) if t == self.env.node_id => self.invoke_local(back, call),
            Some(t) if from_uplink => match self.env.mesh.get(&t) {
                Some(peer) => {
                    let deadline = deadline_of(call.timeout_ms);
                    self.forward(back, call, peer.key, peer.max_frame, deadline, |f| {
                        peer.ctrl.try_send(Outbound::Frame(f)).is_ok()
                    });
                }
                None => self.respond(
                    back,
                    call.call_id,
                    Err(err(
                        RpcError::UNREACHABLE,
                        "target is not reachable from this node",
                    )),
                ),
            },
            Some(_) => self.respond(
                back,
                call.call_id,
                Err(err(RpcError::UNREACHABLE, "target is not this node")),
            ),
            None => self.respond(
                back,
                call.call_id,
                Err(err(RpcError::INVALID, "a routed call needs a target")),
            ),
        }
    }

    /// Hands a call to a local provider client (round-robin), remembering where the reply goes.
    fn invoke_local(&self, back: Back, call: Call) {
        let provider = self
            .registry
            .lock()
            .expect("registry lock")
            .pick(&call.procedure);
        let Some(client) = provider else {
            return self.respond(
                back,
                call.call_id,
                Err(err(
                    RpcError::UNKNOWN_PROCEDURE,
                    format!("{:?} is not provided here", call.procedure),
                )),
            );
        };
        let deadline = deadline_of(call.timeout_ms);
        self.forward(back, call, client.key, client.max_frame, deadline, |f| {
            client.ctrl.try_send(Outbound::Frame(f)).is_ok()
        });
    }

    /// Forwards `call` over a link with a fresh call id; on a full table or queue the caller gets
    /// `OVERLOADED` at once.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        back: Back,
        mut call: Call,
        out_link: PeerKey,
        max_frame: usize,
        deadline: Instant,
        send: impl FnOnce(Bytes) -> bool,
    ) {
        let back_call_id = call.call_id;
        let target = call.target;
        let inserted = {
            let mut pending = self.pending.lock().expect("pending lock");
            if pending.is_full() {
                Err(back)
            } else {
                Ok(pending
                    .insert(Pending {
                        back,
                        back_call_id,
                        out_link,
                        target,
                        deadline,
                    })
                    .expect("not full"))
            }
        };
        let id = match inserted {
            Ok(id) => id,
            Err(back) => {
                return self.respond(
                    back,
                    back_call_id,
                    Err(err(RpcError::OVERLOADED, "too many calls in flight")),
                )
            }
        };
        call.call_id = id;
        call.timeout_ms = call.timeout_ms.min(crate::rpc::MAX_CALL_TIMEOUT_MS);
        let frame = Frame::Call(call).to_bytes();
        let failure = if frame.len() > max_frame {
            Some(err(
                RpcError::INVALID,
                format!(
                    "call of {} bytes exceeds the next hop's max frame",
                    frame.len()
                ),
            ))
        } else if !send(frame) {
            Some(err(
                RpcError::OVERLOADED,
                "the link toward the provider is congested",
            ))
        } else {
            self.env.metrics.rpc.forwarded_total.inc();
            None
        };
        if let Some(e) = failure {
            let taken = self
                .pending
                .lock()
                .expect("pending lock")
                .take(id, out_link);
            if let Some(p) = taken {
                self.respond(p.back, p.back_call_id, Err(e));
            }
        }
        self.set_pending_gauge();
    }

    // ---------------------------------------------------------------- calls out

    /// A `call` from a local client (no target): look the procedure up, choose providers, try at
    /// most `rpc.max_attempts` of them, answer the client. Runs as its own task.
    pub fn client_call(self: &Arc<Self>, client: &PeerTx, call: Call) {
        if let Err(msg) = validate_procedure(&call.procedure) {
            self.env.metrics.rpc.call("rejected");
            return self.respond(
                Back::Link(client.clone()),
                call.call_id,
                Err(err(RpcError::INVALID, msg)),
            );
        }
        if call.timeout_ms == 0 {
            self.env.metrics.rpc.call("rejected");
            return self.respond(
                Back::Link(client.clone()),
                call.call_id,
                Err(err(RpcError::INVALID, "timeout_ms must be > 0")),
            );
        }
        let this = self.clone();
        let client = client.clone();
        self.env.tasks.spawn(async move {
            let start = Instant::now();
            let deadline = deadline_of(call.timeout_ms);
            let result = this.run_call(&call.procedure, call.args, deadline).await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => match e.code {
                    RpcError::NO_PROVIDER => "no_provider",
                    RpcError::TIMEOUT => "timeout",
                    RpcError::ALL_PROVIDERS_FAILED => "all_providers_failed",
                    RpcError::REMOTE => "remote",
                    _ => "rejected",
                },
            };
            this.env.metrics.rpc.call(outcome);
            this.env
                .metrics
                .rpc
                .duration_seconds
                .observe(start.elapsed().as_secs_f64());
            this.respond(Back::Link(client), call.call_id, result);
        });
    }

    /// Lookup, provider choice and failover for one call.
    async fn run_call(
        self: &Arc<Self>,
        procedure: &str,
        args: Bytes,
        deadline: Instant,
    ) -> Result<Bytes, RpcError> {
        let looked_up = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            self.lookup(procedure),
        )
        .await;
        let Ok(looked_up) = looked_up else {
            return Err(err(
                RpcError::TIMEOUT,
                format!("the lookup of {procedure:?} did not finish within the call's timeout"),
            ));
        };
        let providers = match looked_up {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => {
                return Err(err(
                    RpcError::NO_PROVIDER,
                    format!("no provider of {procedure:?}"),
                ))
            }
            Err(e) => {
                return Err(err(
                    RpcError::NO_PROVIDER,
                    format!("lookup of {procedure:?} failed: {e}"),
                ))
            }
        };
        let rr = self.rr.fetch_add(1, Ordering::Relaxed);
        let mut order = order_providers(&providers, &self.env.node_id, &self.env.cluster, rr);
        {
            let now = Instant::now();
            let mut suspects = self.suspects.lock().expect("suspects lock");
            suspects.retain(|_, until| *until > now);
            if !suspects.is_empty() {
                // Stable: the policy's order holds within the trusted and the suspect providers.
                order.sort_by_key(|p| suspects.contains_key(&p.node_id));
            }
        }
        let attempts = order.len().min(self.env.max_attempts);
        let mut last = None;
        for (i, p) in order.iter().take(attempts).enumerate() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let share = (deadline - now) / (attempts - i) as u32;
            if i > 0 {
                self.env.metrics.rpc.failovers_total.inc();
            }
            self.env.metrics.rpc.attempts_total.inc();
            match self.attempt(p, procedure, args.clone(), share).await {
                Ok(b) => return Ok(b),
                Err(e)
                    if matches!(
                        e.code,
                        RpcError::UNREACHABLE
                            | RpcError::UNKNOWN_PROCEDURE
                            | RpcError::TIMEOUT
                            | RpcError::OVERLOADED
                    ) =>
                {
                    debug!(procedure, provider = %Id(p.node_id), error = %e, "attempt failed; failing over");
                    if p.node_id != self.env.node_id {
                        self.cache.invalidate_provider(&p.node_id);
                        let mut suspects = self.suspects.lock().expect("suspects lock");
                        if suspects.len() >= MAX_SUSPECTS {
                            if let Some(oldest) =
                                suspects.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k)
                            {
                                suspects.remove(&oldest);
                            }
                        }
                        suspects.insert(p.node_id, Instant::now() + SUSPECT_FOR);
                    }
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        if Instant::now() >= deadline {
            return Err(err(
                RpcError::TIMEOUT,
                format!("no reply from a provider of {procedure:?} in time"),
            ));
        }
        Err(err(
            RpcError::ALL_PROVIDERS_FAILED,
            match last {
                Some(e) => format!("every provider of {procedure:?} tried failed; last: {e}"),
                None => format!("no provider of {procedure:?} could be tried"),
            },
        ))
    }

    /// One attempt at provider `p`, waiting at most `budget`.
    async fn attempt(
        self: &Arc<Self>,
        p: &ProviderRecord,
        procedure: &str,
        args: Bytes,
        budget: Duration,
    ) -> Result<Bytes, RpcError> {
        let (tx, rx) = oneshot::channel();
        let call = Call {
            call_id: 0,
            procedure: procedure.to_string(),
            args,
            timeout_ms: budget.as_millis().clamp(1, u128::from(u32::MAX)) as u32,
            origin: self.env.node_id,
            hops: 0,
            target: Some(p.node_id),
        };
        let deadline = Instant::now() + budget;
        if p.node_id == self.env.node_id {
            self.invoke_local(Back::Local(tx), call);
        } else if let Some(peer) = self.env.mesh.get(&p.node_id) {
            self.forward(
                Back::Local(tx),
                call,
                peer.key,
                peer.max_frame,
                deadline,
                |f| peer.ctrl.try_send(Outbound::Frame(f)).is_ok(),
            );
        } else if let (Some(up), true) = (&self.env.uplink, self.uplink_up.load(Ordering::Relaxed))
        {
            let max = self.env.uplink_max_frame;
            self.forward(Back::Local(tx), call, UPLINK_LINK, max, deadline, |f| {
                up.ctrl.try_send(Outbound::Frame(f)).is_ok()
            });
        } else {
            return Err(err(RpcError::UNREACHABLE, "no route to the provider"));
        }
        match tokio::time::timeout(budget, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(err(RpcError::UNREACHABLE, "the call was dropped")),
            Err(_) => Err(err(
                RpcError::TIMEOUT,
                "no reply within the attempt's share",
            )),
        }
    }

    /// The uplink closed: escalations waiting on it fail now.
    pub fn uplink_lost(&self) {
        self.escalations.lock().expect("escalations lock").clear();
        self.link_closed(UPLINK_LINK);
    }
}

pub(super) mod bound;
mod lookup;

fn err(code: u16, msg: impl Into<String>) -> RpcError {
    RpcError::new(code, msg)
}

/// A `reply` frame no larger than `max_frame` bytes: a result too large for the next hop is
/// replaced by a `REMOTE` error saying so (never a frame the peer would refuse and close on).
/// Answers call `call_id` over a client or mesh link.
pub fn reply_link(tx: &PeerTx, call_id: u64, result: Result<Bytes, RpcError>) {
    let _ = tx
        .ctrl
        .try_send(Outbound::Frame(reply_bytes(call_id, result, tx.max_frame)));
}

fn reply_bytes(call_id: u64, result: Result<Bytes, RpcError>, max_frame: usize) -> Bytes {
    let f = Frame::Reply(Reply { call_id, result }).to_bytes();
    if f.len() <= max_frame {
        return f;
    }
    Frame::Reply(Reply {
        call_id,
        result: Err(err(
            RpcError::REMOTE,
            format!(
                "reply of {} bytes exceeds the next hop's max frame",
                f.len()
            ),
        )),
    })
    .to_bytes()
}

/// A call's deadline from its `timeout_ms`, clamped to [`crate::rpc::MAX_CALL_TIMEOUT_MS`].
fn deadline_of(timeout_ms: u32) -> Instant {
    Instant::now()
        + Duration::from_millis(u64::from(timeout_ms.min(crate::rpc::MAX_CALL_TIMEOUT_MS)))
}
