//! DHT and RPC frames at a bridge (`docs/DISCOVERY.md`): `store` into the subtree index,
//! `find_value` answered from the index, the lookup cache or the parent, `call` routed by its
//! `target` and its `reply` mapped back along the reverse path. The same functions serve
//! child links (node uplinks, child bridges) and the parent link; [`Link::parent`] tells them
//! apart where the rules differ. [`BridgeRpc`] owns the state (calls in flight, the level's
//! lookup cache, the lookup permits); the realm's index and links come with each call.
//!
//! Error choices (every one is answered at once and counted, never a stall):
//! - `store` refused: an `error` frame with the correlation id — `LIMIT_EXCEEDED` for a TTL
//!   above `dht.max_record_ttl_ms` (`store_refused{reason="ttl"}`) or a full index
//!   (`reason="full"`), `MALFORMED_BODY` for a value that is not a provider record naming its
//!   publisher (`reason="invalid"`).
//! - `find_value`: a loop (path naming this bridge, a duplicate, or
//!   [`crate::escalation::MAX_HOPS`] ids already)
//!   → `PROTOCOL` error frame; too many lookups in flight → `LIMIT_EXCEEDED`; a failed
//!   escalation (parent down, timeout, parent error) → `INTERNAL` error frame, so the asker
//!   can tell "could not ask" from "not found" and does not cache a false negative.
//! - `call`: a `reply` with `HOPS_EXCEEDED`, `INVALID` (no target, zero timeout),
//!   `UNREACHABLE` (no route, next hop full or closed, link lost while pending) or
//!   `OVERLOADED` (`rpc.max_pending` calls in flight).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::calls::{Back, CallRefused, Calls};
use super::index::{IndexError, IndexedRecord, NewCopy, RecordKey, Removal, SubtreeIndex};
use super::{lock, Realm, HOUSEKEEPING_INTERVAL};
use crate::dht::Id;
use crate::escalation::{Answer, EscalationPath, LookupCache, LookupError, Provider, Source};
use crate::metrics::quota::Table;
use crate::metrics::Metrics;
use crate::quota::Tenant;
use crate::router::PeerKey;
use crate::rpc::{Pending, ProviderRecord};
use crate::session::{error_frame, Outbound, PeerTx};
use crate::wire::{
    Call, ErrorCode, FindValue, FindValueReply, Frame, NodeId, Reply, RpcError, Store, StoreAck,
    WireContact, WireRecord, MAX_HOPS as MAX_CALL_HOPS, MAX_RECORDS,
};

/// The sending half of one link, as call routing and lookups see it.
#[derive(Clone, Debug)]
pub(super) struct Link {
    /// Process-local key of the link (a fresh one per parent session).
    pub(super) key: PeerKey,
    /// The link's control queue (DHT and RPC frames go there).
    pub(super) ctrl: mpsc::Sender<Outbound>,
    /// Largest frame the peer accepts, bytes including the header.
    pub(super) max_frame: usize,
    /// Whether this is the link to the parent bridge.
    pub(super) parent: bool,
    /// For a node's uplink, the node's id: such a link may only store records it publishes
    /// itself (a child bridge's link, `None`, stores on behalf of its subtree).
    pub(super) node: Option<NodeId>,
    /// Whether this is a link to another worker of the fleet (`bridge/fleet.rs`).
    pub(super) peer: bool,
    /// What the child's credential permits (`None`: everything; always `None` for the
    /// parent and fleet peers).
    pub(super) grant: Option<Arc<crate::auth::Grant>>,
    /// Whose quota share what this link stores and calls is charged to (`docs/AUTH.md`,
    /// "Quotas"): the child's proven node id; exempt for the parent and fleet peers.
    pub(super) tenant: Tenant,
}

impl Link {
    /// The link of an accepted child session; `node` as in [`Link::node`]; `tenant` as in
    /// [`Link::tenant`].
    pub(super) fn child(tx: &PeerTx, node: Option<NodeId>, tenant: Tenant) -> Link {
        Link {
            key: tx.key,
            ctrl: tx.ctrl.clone(),
            max_frame: tx.max_frame,
            parent: false,
            node,
            peer: false,
            grant: None,
            tenant,
        }
    }

    /// Queues `frame` (best effort: a full queue means the peer is not reading; the frame is
    /// dropped and the peer's own timeout answers for it). Returns whether it was queued.
    pub(super) fn send(&self, frame: Frame) -> bool {
        self.ctrl
            .try_send(Outbound::Frame(frame.to_bytes()))
            .is_ok()
    }

    /// Answers with a non-fatal error frame and counts it.
    pub(super) fn send_error(
        &self,
        metrics: &Metrics,
        code: ErrorCode,
        msg: impl Into<String>,
        corr: Option<u64>,
    ) {
        metrics.protocol_error(code.as_str());
        let _ = self
            .ctrl
            .try_send(Outbound::Frame(error_frame(code, msg, corr)));
    }
}

/// A bridge's DHT and RPC: calls forwarded and not yet answered, the lookup cache of its
/// level and the bound on lookups in flight. It owns that state; the links call it
/// (`ChildEnv::rpc`, `ParentEnv::rpc`) with the realm a frame belongs to.
pub(super) struct BridgeRpc {
    /// Calls forwarded by this bridge and not yet answered (`rpc.max_pending`), with each
    /// caller's quota share (`quota.calls_per_tenant`).
    calls: Mutex<Calls<mpsc::Sender<Outbound>>>,
    /// Answers from the parent level, for `bridge.level`'s TTLs.
    cache: LookupCache,
    /// Permits for concurrent lookups ([`super::MAX_LOOKUPS`]).
    lookups: Arc<Semaphore>,
    /// This bridge's id (the hop it adds to escalation paths).
    node_id: NodeId,
    /// The QUIC listener's address (the `sender` contact of escalated lookups).
    local_addr: SocketAddr,
    /// `dht.max_record_ttl_ms`: longer `store`s are refused.
    max_record_ttl_ms: u64,
    /// `dht.record_ttl_ms`: the lifetime given to records answered from the cache.
    record_ttl_ms: u64,
    /// The fleet this bridge is a worker of: `store`s from its own children go to the peers.
    fleet: Option<Arc<super::fleet::Fleet>>,
    metrics: Arc<Metrics>,
    /// Where lookups run (the bridge's tracker, joined on shutdown).
    tracker: TaskTracker,
}

impl BridgeRpc {
    /// The DHT and RPC of bridge `node_id` listening on `local_addr`, with the call bound
    /// and record lifetimes of `cfg` and the level cache `cache`.
    pub(super) fn new(
        cfg: &crate::config::Config,
        node_id: NodeId,
        local_addr: SocketAddr,
        cache: LookupCache,
        fleet: Option<Arc<super::fleet::Fleet>>,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
    ) -> BridgeRpc {
        BridgeRpc {
            calls: Mutex::new(Calls::new(
                cfg.rpc.max_pending,
                cfg.quota.calls(cfg.rpc.max_pending),
            )),
            cache,
            lookups: Arc::new(Semaphore::new(super::MAX_LOOKUPS)),
            node_id,
            local_addr,
            max_record_ttl_ms: cfg.dht.max_record_ttl_ms,
            record_ttl_ms: cfg.dht.record_ttl_ms,
            fleet,
            metrics,
            tracker,
        }
    }

    /// Handles a decoded DHT/RPC frame from a child link.
    pub(super) fn on_child_frame(self: &Arc<Self>, realm: &Arc<Realm>, from: &Link, frame: Frame) {
        match frame {
            Frame::Store(s) => self.on_store(realm, from, s),
            Frame::FindValue(f) => self.on_find_value(realm, from, f),
            Frame::Call(c) => self.on_call(realm, from, c),
            Frame::Reply(r) => self.on_reply(from, r),
            // Answers to queries a bridge never sends down.
            _ => self.metrics.rpc.dht_unknown_replies_total.inc(),
        }
    }

    /// A `store` from a child: validated, then stored, refreshed or (`ttl_ms = 0`) withdrawn.
    /// Answered by `store_ack` (`stored: true`) or an error frame (module documentation).
    fn on_store(&self, realm: &Realm, from: &Link, s: Store) {
        let metrics = &self.metrics;
        let corr = Some(s.correlation_id);
        let refuse = |reason: &'static str, code: ErrorCode, msg: String| {
            metrics.rpc.store_refused(reason);
            from.send_error(metrics, code, msg, corr);
        };
        let max_ttl = self.max_record_ttl_ms;
        if u64::from(s.ttl_ms) > max_ttl {
            let msg = format!("ttl_ms {} above the maximum {max_ttl}", s.ttl_ms);
            return refuse("ttl", ErrorCode::LimitExceeded, msg);
        }
        if from.node.is_some_and(|id| id != s.publisher) {
            let msg = "a node stores only the records it publishes itself".to_string();
            return refuse("invalid", ErrorCode::MalformedBody, msg);
        }
        // A name must be the key's: it is kept in the index and sent upward, where a parent
        // checks it against this bridge's permissions.
        let named = s.name.as_deref().filter(|_| s.ttl_ms > 0);
        if named.is_some_and(|n| crate::rpc::procedure_key(&realm.name, n) != s.key) {
            let msg = "the name is not the key's procedure".to_string();
            return refuse("invalid", ErrorCode::MalformedBody, msg);
        }
        // A link whose credential restricts registrations must name the procedure
        // (withdrawals are always allowed).
        if let Some(g) = from.grant.as_deref().filter(|_| s.ttl_ms > 0) {
            let action = crate::auth::Action::Register;
            let checked = match named {
                Some(n) => g.check(action, n),
                None if g.permissions.rule(action).is_open() => Ok(()),
                None => Err("permission denied: register needs the procedure's name".into()),
            };
            if let Err(msg) = checked {
                metrics.permission_denied(action);
                return refuse("denied", ErrorCode::PermissionDenied, msg);
            }
        }
        let record = if s.ttl_ms == 0 {
            None
        } else {
            match ProviderRecord::decode(&s.value) {
                Ok(r) if r.node_id == s.publisher => Some(r),
                Ok(_) => {
                    let msg = "provider record node_id differs from the publisher".to_string();
                    return refuse("invalid", ErrorCode::MalformedBody, msg);
                }
                Err(e) => return refuse("invalid", ErrorCode::MalformedBody, e.to_string()),
            }
        };
        let now = Instant::now();
        let ttl = Duration::from_millis(s.ttl_ms.into());
        let result = self.with_index(realm, |ix| match record {
            Some(record) => {
                let copy = NewCopy {
                    key: s.key,
                    publisher: s.publisher,
                    record,
                    name: named.map(Arc::from),
                };
                ix.store(from.key, from.tenant, copy, ttl, now)
            }
            None => Ok(ix.withdraw(from.key, s.key, s.publisher)),
        });
        match result {
            Ok(removal) => {
                self.forget_providers(&removal);
                if let Some(fleet) = &self.fleet {
                    fleet.forward_store(&realm.name, from, &s, &self.metrics);
                }
                // Records forwarded by a fleet peer are not acknowledged (nobody waits for it).
                if !from.peer {
                    from.send(Frame::StoreAck(StoreAck {
                        correlation_id: s.correlation_id,
                        stored: true,
                    }));
                }
            }
            Err(e) => {
                if let IndexError::Quota(q) = &e {
                    metrics.quota.refused(Table::Records, q);
                }
                refuse("full", ErrorCode::LimitExceeded, e.to_string())
            }
        }
    }

    /// A `find_value` from a child: loop check, then the index, then (below the top) the cache
    /// and the parent, in a task of its own so the link's reader goes on.
    fn on_find_value(self: &Arc<Self>, realm: &Arc<Realm>, from: &Link, fv: FindValue) {
        let metrics = &self.metrics;
        let corr = Some(fv.correlation_id);
        if from.parent {
            let msg = "find_value is not accepted from the parent";
            return from.send_error(metrics, ErrorCode::Protocol, msg, corr);
        }
        let hops = u8::try_from(fv.path.len()).unwrap_or(u8::MAX);
        let visited = fv.path.into_iter().map(Id::from_bytes).collect();
        let path = EscalationPath::from_parts(hops, visited).and_then(|mut p| {
            p.next_hop(Id::from_bytes(self.node_id))?;
            Ok(p)
        });
        let path = match path {
            Ok(p) => p,
            Err(e) => return from.send_error(metrics, ErrorCode::Protocol, e.to_string(), corr),
        };
        let held = lock(&realm.index).get(&fv.key, Instant::now(), MAX_RECORDS);
        if !held.is_empty() {
            let values = held.iter().map(indexed_to_wire).collect();
            return reply_values(from, fv.correlation_id, values, 0);
        }
        if !realm.has_parent {
            return reply_values(from, fv.correlation_id, Vec::new(), 0);
        }
        let Ok(permit) = self.lookups.clone().try_acquire_owned() else {
            let msg = "too many lookups in flight";
            return from.send_error(metrics, ErrorCode::LimitExceeded, msg, corr);
        };
        let (this, realm, from) = (self.clone(), realm.clone(), from.clone());
        self.tracker.spawn(async move {
            let _permit = permit;
            this.lookup(&realm, &from, fv.correlation_id, fv.key, path)
                .await;
        });
    }

    /// Answers one lookup through the cache, whose miss asks the parent (single flight).
    async fn lookup(
        &self,
        realm: &Realm,
        from: &Link,
        corr: u64,
        key: RecordKey,
        path: EscalationPath,
    ) {
        let depth = AtomicU8::new(0);
        let up_path: Vec<NodeId> = path.visited().iter().map(|id| *id.as_bytes()).collect();
        let upstream = || self.escalate(realm, key, up_path, &depth);
        let result = self
            .cache
            .get_or_escalate(realm.name.clone(), Id::from_bytes(key), upstream)
            .await;
        match result {
            Ok((answer, source)) => {
                let depth = match source {
                    Source::Upstream => depth.load(Ordering::Relaxed).saturating_add(1),
                    Source::Cache => 0,
                };
                let values = answer_to_wire(&answer, self.record_ttl_ms);
                reply_values(from, corr, values, depth);
            }
            Err(e) => {
                let msg = format!("lookup failed: {e}");
                from.send_error(&self.metrics, ErrorCode::Internal, msg, Some(corr));
            }
        }
    }

    /// The upstream query of a cache miss: `find_value` to the parent with `path` (which ends
    /// with this bridge), bounded by [`crate::escalation::ESCALATION_TIMEOUT`]. Errors:
    /// [`LookupError::Upstream`] when the parent link is down or answered an error,
    /// [`LookupError::Timeout`].
    async fn escalate(
        &self,
        realm: &Realm,
        key: RecordKey,
        path: Vec<NodeId>,
        depth: &AtomicU8,
    ) -> Result<Answer, LookupError> {
        let session = realm
            .parent
            .load_full()
            .ok_or_else(|| LookupError::Upstream("parent link not connected".into()))?;
        self.metrics.rpc.escalations_total.inc();
        let sender = WireContact {
            node_id: self.node_id,
            addr: self.local_addr.to_string(),
        };
        let reply = session.find_value(key, path, sender).await?;
        depth.store(reply.depth, Ordering::Relaxed);
        let mut providers = Vec::with_capacity(reply.values.len());
        for r in &reply.values {
            match ProviderRecord::decode(&r.value) {
                Ok(rec) => providers.push(Provider {
                    node_id: r.publisher,
                    cluster: rec.cluster,
                    via: String::new(),
                }),
                Err(_) => self
                    .metrics
                    .protocol_error(ErrorCode::MalformedBody.as_str()),
            }
        }
        Ok(Answer::found(providers))
    }

    /// A `call` from a child or the parent: forwarded toward its target or answered with an
    /// error `reply` (module documentation).
    pub(super) fn on_call(&self, realm: &Realm, from: &Link, call: Call) {
        let metrics = &self.metrics;
        let call_id = call.call_id;
        let fail = |code: u16, msg: &str| {
            from.send(Frame::Reply(Reply {
                call_id,
                result: Err(RpcError::new(code, msg)),
            }));
        };
        if call.hops > MAX_CALL_HOPS {
            return fail(RpcError::HOPS_EXCEEDED, "too many hops");
        }
        let Some(target) = call.target else {
            return fail(RpcError::INVALID, "a call reaching a bridge needs a target");
        };
        if call.timeout_ms == 0 {
            return fail(RpcError::INVALID, "timeout_ms is 0");
        }
        if let Some(Err(m)) = from
            .grant
            .as_deref()
            .map(|g| g.check(crate::auth::Action::Call, &call.procedure))
        {
            metrics.permission_denied(crate::auth::Action::Call);
            return fail(RpcError::PERMISSION_DENIED, &m);
        }
        let Some(out) = next_hop(realm, from, &target) else {
            // Whatever this bridge cached about the target is stale: it is gone from here.
            self.cache.invalidate_provider(&target);
            return fail(RpcError::UNREACHABLE, "no route to the target");
        };
        let entry = Pending {
            back: Back {
                link: from.key,
                tx: from.ctrl.clone(),
            },
            back_call_id: call_id,
            out_link: out.key,
            target: Some(target),
            deadline: Instant::now()
                + Duration::from_millis(
                    call.timeout_ms.min(crate::rpc::MAX_CALL_TIMEOUT_MS).into(),
                ),
        };
        let inserted = {
            let mut calls = lock(&self.calls);
            let r = calls.insert(from.tenant, entry);
            metrics.rpc.pending.set(calls.len() as i64);
            r
        };
        let id = match inserted {
            Ok(id) => id,
            Err(e) => {
                if let CallRefused::Quota(q) = &e {
                    metrics.quota.refused(Table::Calls, q);
                }
                return fail(RpcError::OVERLOADED, &e.to_string());
            }
        };
        let frame = Frame::Call(Call {
            call_id: id,
            hops: call.hops + 1,
            ..call
        })
        .to_bytes();
        if frame.len() > out.max_frame || out.ctrl.try_send(Outbound::Frame(frame)).is_err() {
            let mut calls = lock(&self.calls);
            calls.take(id, out.key);
            metrics.rpc.pending.set(calls.len() as i64);
            drop(calls);
            return fail(RpcError::UNREACHABLE, "the next hop cannot take the call");
        }
        metrics.rpc.forwarded_total.inc();
    }

    /// A `reply` on `from`: sent back with the call id the call arrived with; unknown (late,
    /// duplicated, forged, or from another link) → counted and dropped.
    pub(super) fn on_reply(&self, from: &Link, reply: Reply) {
        let metrics = &self.metrics;
        let pending = {
            let mut calls = lock(&self.calls);
            let p = calls.take(reply.call_id, from.key);
            metrics.rpc.pending.set(calls.len() as i64);
            p
        };
        match pending {
            Some(p) => {
                // A provider found unreachable further on is dropped from this level's cache too,
                // so lookups through this bridge stop naming it before its TTL runs out.
                if let (Some(t), Err(e)) = (&p.target, &reply.result) {
                    if e.code == RpcError::UNREACHABLE || e.code == RpcError::UNKNOWN_PROCEDURE {
                        self.cache.invalidate_provider(t);
                    }
                }
                let frame = Frame::Reply(Reply {
                    call_id: p.back_call_id,
                    result: reply.result,
                });
                if p.back
                    .tx
                    .try_send(Outbound::Frame(frame.to_bytes()))
                    .is_err()
                {
                    metrics.dropped("queue_full");
                }
            }
            None => metrics.rpc.unknown_replies_total.inc(),
        }
    }

    /// A link closed (child or parent): every call forwarded over it is answered `UNREACHABLE`
    /// at once, and its records and routes leave the index.
    pub(super) fn link_closed(&self, realm: &Realm, key: PeerKey) {
        lock(&realm.links).remove(&key);
        let drained = {
            let mut calls = lock(&self.calls);
            // Calls that came from this link have nobody to answer any more.
            calls.drop_origin(key);
            let d = calls.drain_link(key);
            self.metrics.rpc.pending.set(calls.len() as i64);
            d
        };
        for p in drained {
            let frame = Frame::Reply(Reply {
                call_id: p.back_call_id,
                result: Err(RpcError::new(
                    RpcError::UNREACHABLE,
                    "the link toward the target closed",
                )),
            });
            let _ = p.back.tx.try_send(Outbound::Frame(frame.to_bytes()));
        }
        let removal = self.with_index(realm, |ix| ix.remove_link(key));
        self.forget_providers(&removal);
    }

    /// Runs [`BridgeRpc::sweep`] over `realms` every [`HOUSEKEEPING_INTERVAL`] until `cancel`.
    pub(super) async fn housekeeping(
        self: Arc<Self>,
        realms: Vec<Arc<Realm>>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.sweep(&realms, Instant::now()),
            }
        }
    }

    /// Removes expired index records (withdrawn upward, their providers forgotten by the cache
    /// when they lost their last route) and forgets calls past their deadline: their callers
    /// have given up, so they are dropped without a reply.
    fn sweep(&self, realms: &[Arc<Realm>], now: Instant) {
        for realm in realms {
            let removal = self.with_index(realm, |ix| ix.expire(now));
            self.forget_providers(&removal);
        }
        let expired = {
            let mut calls = lock(&self.calls);
            let e = calls.expire(now);
            self.metrics.rpc.pending.set(calls.len() as i64);
            e
        };
        if !expired.is_empty() {
            debug!(
                calls = expired.len(),
                "forwarded calls expired without a reply"
            );
        }
    }

    /// Runs `f` on the realm's index, then updates `macula_dht_records` and wakes the parent
    /// link's advertiser if the index has changes for it.
    fn with_index<R>(&self, realm: &Realm, f: impl FnOnce(&mut SubtreeIndex) -> R) -> R {
        let (r, delta, upward) = {
            let mut ix = lock(&realm.index);
            let before = ix.len();
            let r = f(&mut ix);
            (r, ix.len() as i64 - before as i64, ix.upward_pending())
        };
        if delta != 0 {
            self.metrics.rpc.records.add(delta);
        }
        if upward {
            realm.upward.notify_one();
        }
        r
    }

    /// Drops cached answers listing providers that lost their last route here.
    fn forget_providers(&self, removal: &Removal) {
        for node in &removal.gone {
            self.cache.invalidate_provider(node);
        }
    }
}

/// Where a call for `target` goes from `from`: the child link the target is routed through
/// (not `from`), else the parent unless the call came from it.
fn next_hop(realm: &Realm, from: &Link, target: &NodeId) -> Option<Link> {
    let child = lock(&realm.index).route(target, Some(from.key));
    if let Some(link) = child.and_then(|k| lock(&realm.links).get(&k).cloned()) {
        return Some(link);
    }
    if from.parent {
        return None;
    }
    realm.parent.load_full().map(|s| s.link.clone())
}

fn reply_values(from: &Link, corr: u64, values: Vec<WireRecord>, depth: u8) {
    from.send(Frame::FindValueReply(FindValueReply {
        correlation_id: corr,
        values,
        nodes: Vec::new(),
        depth,
    }));
}

fn ttl_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn indexed_to_wire(r: &IndexedRecord) -> WireRecord {
    WireRecord {
        value: r.record.encode(),
        publisher: r.publisher,
        ttl_ms: ttl_ms(r.remaining).max(1),
    }
}

/// The records of a cached answer. The cache keeps no per-record lifetime, so each carries
/// `record_ttl_ms` (the lifetime a publisher gives its records).
fn answer_to_wire(answer: &Answer, record_ttl_ms: u64) -> Vec<WireRecord> {
    let Answer::Found(providers) = answer else {
        return Vec::new();
    };
    let ttl = u32::try_from(record_ttl_ms).unwrap_or(u32::MAX);
    providers
        .iter()
        .take(MAX_RECORDS)
        .map(|p| WireRecord {
            value: ProviderRecord {
                node_id: p.node_id,
                cluster: p.cluster.clone(),
            }
            .encode(),
            publisher: p.node_id,
            ttl_ms: ttl,
        })
        .collect()
}
