//! `macula node`: the lean edge mode.
//!
//! A node accepts application clients over QUIC (role `client`), keeps their
//! subscriptions in a [`RouteTable`], delivers publishes locally, and holds one
//! uplink to its bridge (role `node`) for everything that crosses clusters:
//!
//! - it announces to the bridge the union of its clients' patterns (a pattern is
//!   sent when its first holder appears and withdrawn when its last one leaves);
//! - the bridge announces back which patterns the *rest* of the realm wants; a local
//!   publish goes up only when that remote interest matches its topic;
//! - a publish that came down from the bridge is delivered locally and never sent
//!   back up (no re-fan-out: the tree cannot amplify);
//! - QoS 1 publishes going up stay in the uplink's custody until the bridge
//!   acknowledges them and are retransmitted after a timeout or a reconnect;
//!   publishes coming down are de-duplicated by message id.

mod gossip;
mod mesh;
mod rpc;
mod uplink;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use quinn::{Connection, RecvStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, Instrument};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::router::{PatternChange, Peers, RouteTable};
pub use crate::server::ServerHandle;
use crate::session::{
    self, accept_session, fill, observe_latency, Offer, Outbound, PeerTx, SessionError,
    WriterConfig,
};
use crate::topic::PatternTrie;
use crate::wire::{
    self, ErrorCode, Frame, FrameDecoder, MessageType, NodeId, Qos, RawFrame, Role, SubAck,
    Subscribe, Unsubscribe,
};

/// Most patterns per `SUBSCRIBE` frame a node sends when re-announcing its interest.
const PATTERNS_PER_FRAME: usize = 1000;

/// A running node; see [`ServerHandle`].
pub type NodeHandle = ServerHandle;

/// What local publishers and the uplink reader share.
struct Shared {
    realm: String,
    cluster: String,
    node_id: NodeId,
    cfg: Config,
    metrics: Arc<Metrics>,
    local: RouteTable<PeerTx>,
    uplink: Option<UplinkTx>,
    remote: ArcSwap<RemoteInterest>,
    next_key: AtomicU64,
    /// Where the other nodes of the cluster reach this one (its DHT contact address).
    advertise: SocketAddr,
    /// Links to the other nodes of the cluster.
    mesh: Arc<mesh::Mesh>,
    /// What each mesh peer's clients subscribed to (by mesh link key): a local publish goes
    /// straight to the peers that want it, never through the bridge.
    mesh_interest: RouteTable<PeerTx>,
    /// The cluster DHT.
    dht: Arc<crate::dht::service::DhtService>,
    /// RPC: local providers, calls in flight, the lookup cache.
    rpc: rpc::NodeRpc,
    /// Cancelled when the node stops.
    shutdown: CancellationToken,
    /// Whether the uplink session is up (calls and lookups fail over at once while it is not).
    uplink_up: AtomicBool,
    /// Procedures whose advertisement changed, handled in order by one task.
    advert_tx: mpsc::Sender<String>,
    /// The queue into the gossip task (the cluster's replicated CRDT store).
    gossip: gossip::GossipHandle,
    /// The bridge fleet as the uplink sees it (directory, redirects).
    fleet: uplink::UplinkFleet,
}

/// Queues into the uplink task.
#[derive(Clone)]
struct UplinkTx {
    ctrl: mpsc::Sender<Outbound>,
    data: mpsc::Sender<Outbound>,
}

/// Correlation id of the interest announcement a node sends first on every
/// uplink session. The bridge queues the realm's current interest before it
/// answers this `SUBSCRIBE`, so its `SUBACK` marks "interest snapshot complete".
const INTEREST_SYNC: u64 = u64::MAX;

/// What the rest of the realm wants, as last told by the bridge.
#[derive(Clone)]
struct RemoteInterest {
    trie: PatternTrie<()>,
    /// False until the bridge's interest snapshot of this session is complete
    /// (and before the first session): interest is unknown, so every QoS 1
    /// publish goes into the uplink's custody rather than being judged unwanted.
    synced: bool,
    /// Until then (just after a reconnect) every QoS 1 publish goes up: the bridge
    /// may have restarted and still be relearning the other nodes' interest.
    settle_until: Option<Instant>,
}

impl RemoteInterest {
    fn unknown() -> Self {
        RemoteInterest {
            trie: PatternTrie::new(),
            synced: false,
            settle_until: None,
        }
    }

    /// Whether a publish on `topic` should go up. While interest is unknown or
    /// settling, every QoS 1 publish goes up (a `no_route` answer inside the
    /// settle window is retried); QoS 0 follows the known interest only.
    fn wants(&self, topic: &str, reliable: bool) -> bool {
        if reliable {
            if !self.synced {
                return true;
            }
            if let Some(t) = self.settle_until {
                if Instant::now() < t {
                    return true;
                }
            }
        }
        self.trie.any_match(topic)
    }
}

/// Starts a node from `cfg`: binds the client listener and, if configured, starts
/// the uplink. Errors: binding or TLS setup failed.
pub async fn start(cfg: Config, metrics: Arc<Metrics>) -> anyhow::Result<NodeHandle> {
    let endpoint = crate::transport::server_endpoint(
        cfg.node.listen,
        &cfg.tls,
        &cfg.transport,
        &cfg.data_dir,
    )?;
    let local_addr = endpoint.local_addr()?;
    let node_id: NodeId = crate::transport::node_identity(&cfg.data_dir)?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let limits = &cfg.limits;
    let (uplink, uplink_rx) = if cfg.node.uplink.is_some() {
        let (ctrl_tx, ctrl_rx) = mpsc::channel(limits.max_inflight as usize + 1024);
        let (data_tx, data_rx) = mpsc::channel(limits.outbound_queue);
        (
            Some(UplinkTx {
                ctrl: ctrl_tx,
                data: data_tx,
            }),
            Some((ctrl_rx, data_rx)),
        )
    } else {
        (None, None)
    };
    let advertise = cfg.node.advertise.unwrap_or(local_addr);
    let (mesh, dial_rx) = mesh::Mesh::new();
    let (advert_tx, advert_rx) = mpsc::channel(rpc::ADVERT_QUEUE);
    let (gossip_handle, gossip_rx) = gossip::GossipHandle::new();
    let dht = crate::dht::service::DhtService::new(
        crate::dht::service::DhtParams::from_config(
            crate::dht::Contact {
                id: crate::dht::Id(node_id),
                addr: advertise,
            },
            &cfg.dht,
        ),
        Arc::new(mesh::MeshTransport { mesh: mesh.clone() }),
        metrics.clone(),
    );
    let cache = crate::escalation::LookupCache::new(
        crate::escalation::Level::Cluster,
        cfg.cache.for_level(crate::escalation::Level::Cluster),
        &metrics.cache,
    );
    let shared = Arc::new(Shared {
        realm: cfg.node.realm.clone(),
        cluster: cfg.node.cluster.clone(),
        node_id,
        metrics: metrics.clone(),
        local: RouteTable::new(limits.max_subscriptions_per_connection),
        uplink,
        remote: ArcSwap::from_pointee(RemoteInterest::unknown()),
        next_key: AtomicU64::new(1),
        advertise,
        mesh,
        mesh_interest: RouteTable::new(limits.max_subscriptions_per_connection),
        dht,
        rpc: rpc::NodeRpc::new(cfg.rpc.max_pending, cache),
        shutdown: shutdown.clone(),
        uplink_up: AtomicBool::new(false),
        advert_tx,
        gossip: gossip_handle,
        fleet: uplink::UplinkFleet::new(&cfg.node.realm, &cfg.node.cluster),
        cfg,
    });
    let client_ep = crate::transport::client_endpoint(
        "0.0.0.0:0".parse().expect("valid literal"),
        &shared.cfg.tls,
        &shared.cfg.transport,
        &shared.cfg.data_dir,
    )?;
    if let Some((ctrl_rx, data_rx)) = uplink_rx {
        let s = shared.clone();
        let cancel = shutdown.clone();
        let ep = client_ep.clone();
        tracker.spawn(
            uplink::run_uplink(s, ep, ctrl_rx, data_rx, cancel).instrument(info_span!("uplink")),
        );
    }
    tracker.spawn(
        mesh::run_dialer(shared.clone(), client_ep, dial_rx, shutdown.clone())
            .instrument(info_span!("mesh")),
    );
    tracker.spawn(
        mesh::run_maintainer(
            shared.clone(),
            shared.cfg.node.seeds.clone(),
            shutdown.clone(),
        )
        .instrument(info_span!("mesh")),
    );
    tracker.spawn(run_housekeeping(shared.clone(), shutdown.clone()));
    let leave = CancellationToken::new();
    let left = Arc::new(tokio::sync::Notify::new());
    tracker.spawn(
        gossip::run(
            shared.clone(),
            gossip_rx,
            leave.clone(),
            left.clone(),
            shutdown.clone(),
        )
        .instrument(info_span!("gossip")),
    );
    tracker.spawn(rpc::run_advertiser(
        shared.clone(),
        advert_rx,
        shutdown.clone(),
    ));
    let s = shared.clone();
    tracker.spawn(crate::server::accept_loop(
        endpoint.clone(),
        shared.cfg.limits.max_connections,
        "client",
        metrics,
        tracker.clone(),
        shutdown.clone(),
        move |conn| {
            let s = s.clone();
            let span = info_span!("client", remote.addr = %conn.remote_address());
            async move { serve_client(s, conn).await }.instrument(span)
        },
    ));
    info!(listen = %local_addr, realm = %shared.realm, cluster = %shared.cluster, "node started");
    Ok(NodeHandle {
        local_addr,
        node_id,
        shutdown,
        tracker,
        endpoint,
        state: shared.gossip.json.clone(),
        leave: Some((leave, left)),
        fleet: None,
        uplink_fleet: Some(shared.fleet.json.clone()),
    })
}

fn writer_config(shared: &Shared) -> WriterConfig {
    WriterConfig {
        write_timeout: Duration::from_millis(shared.cfg.limits.slow_consumer_timeout_ms.max(1)),
        metrics: shared.metrics.clone(),
    }
}

async fn serve_client(shared: Arc<Shared>, conn: Connection) {
    let metrics = shared.metrics.clone();
    let limits = &shared.cfg.limits;
    let (mut send, recv, decoder, connect) =
        match accept_session(&conn, limits.max_frame_size).await {
            Ok(s) => s,
            Err(e) => return session::reject_before_connect(&conn, &metrics, e).await,
        };
    metrics.frames_in.inc(MessageType::Connect as u8, 0);
    if connect.role == Role::Node && connect.versions.contains(&wire::PROTOCOL_VERSION) {
        return mesh::serve_accepted(shared, conn, send, recv, decoder, connect).await;
    }
    if let Err((code, msg)) = session::check_connect(&connect, Role::Client, |r| r == shared.realm)
    {
        debug!(%msg, "connect refused");
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
    let key = shared.next_key.fetch_add(1, Ordering::Relaxed);
    let session::AcceptedPeer {
        tx,
        ctrl_rx,
        data_rx,
    } = session::accept_peer(
        key,
        &conn,
        &connect,
        shared.node_id,
        limits,
        shared.cfg.transport.keep_alive_ms,
    );
    let ctrl_tx = tx.ctrl.clone();
    shared.local.add_peer(key, tx.clone(), |_, _| {});
    let cancel = CancellationToken::new();
    let writer = tokio::spawn(session::run_writer(
        conn.clone(),
        send,
        ctrl_rx,
        data_rx,
        None,
        cancel.clone(),
        writer_config(&shared),
    ));
    let end = client_reader(&shared, &tx, recv, decoder).await;
    shared
        .local
        .remove_peer(key, |changes, _| announce(&shared, changes));
    rpc::client_gone(&shared, key);
    session::finish_session(&conn, &ctrl_tx, cancel, writer, end, &metrics).await;
}

/// Sends pattern appearances / disappearances to the bridge and to every mesh peer (called
/// under the local table lock, so they leave in order).
fn announce(shared: &Shared, changes: &[PatternChange]) {
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for c in changes {
        if c.before.is_empty() && !c.after.is_empty() {
            added.push(c.pattern.clone());
        } else if !c.before.is_empty() && c.after.is_empty() {
            removed.push(c.pattern.clone());
        }
    }
    let me = crate::state::hex_id(&shared.node_id);
    for p in &added {
        shared.gossip.update(
            gossip::sub_key(p),
            crate::crdt::Op::SetAdd(me.clone().into()),
        );
    }
    for p in &removed {
        shared.gossip.update(
            gossip::sub_key(p),
            crate::crdt::Op::SetRemove(me.clone().into()),
        );
    }
    let mut frames = Vec::new();
    if !added.is_empty() {
        let f = Frame::Subscribe(Subscribe {
            topics: added,
            qos: Qos::AtLeastOnce,
            correlation_id: 0,
        });
        frames.push(f.to_bytes());
    }
    if !removed.is_empty() {
        let f = Frame::Unsubscribe(Unsubscribe {
            topics: removed,
            correlation_id: 0,
        });
        frames.push(f.to_bytes());
    }
    for f in frames {
        if let Some(up) = &shared.uplink {
            let _ = up.ctrl.try_send(Outbound::Frame(f.clone()));
        }
        shared.mesh.for_each(|peer| {
            if peer.ctrl.try_send(Outbound::Frame(f.clone())).is_err() {
                session::close_slow_consumer(&peer.conn, &shared.metrics, "control queue full");
            }
        });
    }
}

type Fatal = (ErrorCode, String);

/// Reads one client's frames until it leaves. Non-fatal problems are answered
/// with an error frame and counted; a fatal one is returned.
async fn client_reader(
    shared: &Arc<Shared>,
    me: &PeerTx,
    mut recv: RecvStream,
    mut decoder: FrameDecoder,
) -> Result<(), Fatal> {
    let metrics = &shared.metrics;
    let mut ctx = ReadCtx::new();
    let slow = Duration::from_millis(shared.cfg.limits.slow_consumer_timeout_ms);
    loop {
        loop {
            let raw = match decoder.next_frame() {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => return Err((e.code(), e.to_string())),
            };
            metrics.frames_in.inc(raw.header.msg_type, raw.bytes.len());
            if let Some(end) = handle_client_frame(shared, me, &raw, &mut ctx, slow).await? {
                return Ok(end);
            }
        }
        match fill(&mut recv, &mut decoder).await {
            Ok(true) => ctx.now_us = session::now_us(),
            Ok(false) => return Ok(()),
            Err(SessionError::Wire(e)) => return Err((e.code(), e.to_string())),
            Err(e) => {
                debug!(error = %e, "client stream ended");
                return Ok(());
            }
        }
    }
}

/// Handles one frame from a client. `Ok(Some(()))` ends the session cleanly.
async fn handle_client_frame(
    shared: &Arc<Shared>,
    me: &PeerTx,
    raw: &RawFrame,
    ctx: &mut ReadCtx,
    slow: Duration,
) -> Result<Option<()>, Fatal> {
    let metrics = &shared.metrics;
    let Some(t) = raw.msg_type() else {
        me.send_error(
            metrics,
            ErrorCode::UnknownType,
            format!("unknown message type 0x{:02x}", raw.header.msg_type),
            None,
        );
        return Ok(None);
    };
    match t {
        MessageType::Publish => {
            let view = match raw.publish_view() {
                Ok(v) => v,
                Err(e) => {
                    me.send_error(metrics, e.code(), e.to_string(), None);
                    metrics.dropped("invalid");
                    return Ok(None);
                }
            };
            let reliable = view.qos == Qos::AtLeastOnce;
            if let Err((code, msg)) = session::check_publish(raw, &view) {
                me.send_error(metrics, code, msg, None);
                metrics.dropped("invalid");
                if reliable {
                    // Refused for good: `no_route` stops the client re-sending it (§8).
                    let _ = me.ctrl.try_send(Outbound::NoRoute(view.message_id));
                }
                return Ok(None);
            }
            metrics.messages_published_total.inc();
            let mut taken = deliver_local(
                shared, &raw.bytes, view.topic, reliable, view.ts_us, ctx, slow,
            )
            .await;
            taken += deliver_mesh(shared, &raw.bytes, view.topic, reliable, ctx, slow).await;
            if let Some(up) = &shared.uplink {
                if shared.remote.load().wants(view.topic, reliable) {
                    if reliable {
                        if up
                            .data
                            .send(Outbound::Custody(view.message_id, raw.bytes.clone()))
                            .await
                            .is_ok()
                        {
                            metrics.messages_relayed_total.inc();
                            taken += 1;
                        }
                    } else if up.data.try_send(Outbound::Frame(raw.bytes.clone())).is_ok() {
                        metrics.messages_relayed_total.inc();
                    } else {
                        metrics.dropped("queue_full");
                    }
                }
            }
            // `ids` once queued for someone, `no_route` when nobody wanted it (§8).
            let ack = match taken {
                0 => Outbound::NoRoute(view.message_id),
                _ => Outbound::Ack(view.message_id),
            };
            if reliable && me.ctrl.try_send(ack).is_err() {
                me.send_error(
                    metrics,
                    ErrorCode::InflightExceeded,
                    "more QoS 1 publishes in flight than max_inflight".into(),
                    None,
                );
            }
        }
        MessageType::Subscribe | MessageType::Unsubscribe => {
            let req = match session::decode_interest(raw) {
                Ok(r) => r,
                Err((code, msg, corr)) => {
                    me.send_error(metrics, code, msg, corr);
                    return Ok(None);
                }
            };
            let emit = |c: &[PatternChange], _: Peers<'_, PeerTx>| announce(shared, c);
            let count = if req.subscribe {
                match shared.local.subscribe(me.key, &req.patterns, emit) {
                    Ok(n) => n,
                    Err(e) => {
                        me.send_error(
                            metrics,
                            ErrorCode::LimitExceeded,
                            e.to_string(),
                            Some(req.correlation_id),
                        );
                        return Ok(None);
                    }
                }
            } else {
                shared.local.unsubscribe(me.key, &req.patterns, emit)
            };
            metrics
                .subscriptions
                .set(shared.local.load().patterns() as i64);
            me.send_ctrl(Frame::SubAck(SubAck {
                correlation_id: req.correlation_id,
                count: count as u32,
            }));
        }
        MessageType::PubAck => {
            // The node is its clients' custody point and takes nothing from their acks (§8).
            me.check_puback(raw, metrics);
        }
        MessageType::Register
        | MessageType::Unregister
        | MessageType::Call
        | MessageType::Reply => match raw.decode() {
            Ok(Frame::Register(r)) => rpc::on_register(shared, me, r),
            Ok(Frame::Unregister(u)) => rpc::on_unregister(shared, me, u),
            Ok(Frame::Call(c)) if c.hops > wire::MAX_HOPS => {
                metrics.rpc.call("rejected");
                let e = wire::RpcError::new(wire::RpcError::HOPS_EXCEEDED, "hop limit exceeded");
                rpc::reply_link(me, c.call_id, Err(e));
            }
            Ok(Frame::Call(c)) => rpc::client_call(shared, me, c),
            Ok(Frame::Reply(r)) => rpc::reply_arrived(shared, me.key, r),
            Ok(_) => unreachable!("decode follows the header type"),
            Err(e) => me.send_error(metrics, e.code(), e.to_string(), raw.peek_correlation_id()),
        },
        MessageType::Ping => me.pong(raw, metrics),
        MessageType::Disconnect => return Ok(Some(())),
        MessageType::Connect => {
            return Err((ErrorCode::AlreadyConnected, "connect sent twice".into()));
        }
        MessageType::Error => {
            if let Ok(Frame::Error(e)) = raw.decode() {
                debug!(code = e.code, message = %e.message, "client reported an error");
            }
        }
        other => {
            me.send_error(
                metrics,
                ErrorCode::Protocol,
                format!("{} is not accepted from a client", other.as_str()),
                None,
            );
        }
    }
    Ok(None)
}

/// Per-reader scratch state for the delivery path, reused across frames so the
/// hot path neither allocates nor reads the clock per message.
struct ReadCtx {
    /// Indices of matching targets (cleared per publish).
    targets: Vec<u32>,
    /// Wall clock (µs since the Unix epoch) when the current chunk was received.
    now_us: u64,
}

impl ReadCtx {
    fn new() -> Self {
        ReadCtx {
            targets: Vec::new(),
            now_us: session::now_us(),
        }
    }
}

/// Offers one publish frame to every target of `snap` whose pattern matches `topic`; drops
/// are counted by reason. Returns how many targets queued it.
async fn fan_out(
    snap: &crate::router::RouteSnapshot<PeerTx>,
    metrics: &Metrics,
    frame: &Bytes,
    topic: &str,
    reliable: bool,
    ctx: &mut ReadCtx,
    slow: Duration,
) -> u64 {
    snap.collect(topic, &mut ctx.targets);
    let mut queued = 0;
    for &idx in ctx.targets.iter() {
        let (_, tx) = snap.target(idx);
        if frame.len() > tx.max_frame {
            metrics.dropped("too_large");
            continue;
        }
        match tx
            .offer(Outbound::Frame(frame.clone()), reliable, slow, metrics)
            .await
        {
            Offer::Queued => queued += 1,
            Offer::QueueFull => metrics.dropped("queue_full"),
            Offer::SlowConsumer => metrics.dropped("slow_consumer"),
            Offer::Closed | Offer::TooLarge => metrics.dropped("closed"),
        }
    }
    queued
}

/// Delivers one publish frame to every local client whose pattern matches (the publisher
/// too, when it holds one; one copy per client however many of its patterns match).
/// Returns how many clients queued it.
async fn deliver_local(
    shared: &Shared,
    frame: &Bytes,
    topic: &str,
    reliable: bool,
    ts_us: Option<u64>,
    ctx: &mut ReadCtx,
    slow: Duration,
) -> u64 {
    let metrics = &shared.metrics;
    let snap = shared.local.load();
    let n = fan_out(&snap, metrics, frame, topic, reliable, ctx, slow).await;
    metrics.messages_delivered_total.inc_by(n);
    for _ in 0..n {
        observe_latency(metrics, ts_us, ctx.now_us);
    }
    n
}

/// Sends one publish frame from a local client to every mesh peer whose clients want it (the
/// peer delivers it locally and never forwards it). Returns how many peers queued it.
async fn deliver_mesh(
    shared: &Shared,
    frame: &Bytes,
    topic: &str,
    reliable: bool,
    ctx: &mut ReadCtx,
    slow: Duration,
) -> u64 {
    let snap = shared.mesh_interest.load();
    if snap.patterns() == 0 {
        return 0;
    }
    let metrics = &shared.metrics;
    let n = fan_out(&snap, metrics, frame, topic, reliable, ctx, slow).await;
    metrics.messages_relayed_total.inc_by(n);
    n
}

/// Periodic work: sweep calls past their deadline (every second) and re-advertise the local
/// procedures to the bridge every `dht.record_ttl_ms / 2`.
async fn run_housekeeping(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let refresh_every = Duration::from_millis((shared.cfg.dht.record_ttl_ms / 2).max(500));
    let mut refresh =
        tokio::time::interval_at(tokio::time::Instant::now() + refresh_every, refresh_every);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sweep.tick() => rpc::sweep(&shared),
            _ = refresh.tick() => {
                if let Some(up) = &shared.uplink {
                    for f in rpc::all_store_frames(&shared) {
                        let _ = up.ctrl.try_send(Outbound::Frame(f));
                    }
                }
            }
        }
    }
}
