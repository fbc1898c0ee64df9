//! `macula node`: the lean edge mode.
//!
//! A node accepts application clients over QUIC (role `client`), keeps their
//! subscriptions in the relay core ([`crate::relay::Relay`], see `node/pubsub.rs`),
//! delivers publishes locally and to the other nodes of its cluster, and holds one
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
//!
//! Each subsystem owns its state and is given, once, what it uses: `NodeFacts` (who the
//! node is, its limits, metrics and tracker) is shared by the contexts of the client
//! sessions (`ClientEnv`), the mesh (`mesh::MeshEnv`) and the uplink (`uplink::UplinkEnv`);
//! pub/sub, RPC (`rpc::RpcEnv`) and gossip (`gossip::GossipEnv`) hold their own handles.

mod gossip;
mod mesh;
mod pins;
mod pubsub;
mod rpc;
mod uplink;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quinn::Connection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, Instrument};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::relay::{LinkKind, Relay};
pub use crate::server::ServerHandle;
use crate::session::{self, accept_session, Outbound, PeerTx, WriterConfig};
use crate::wire::{self, ErrorCode, Frame, MessageType, NodeId, Qos, RawFrame, Role, SubAck};
use pubsub::ReadCtx;

/// A running node; see [`ServerHandle`].
pub type NodeHandle = ServerHandle;

/// Who this node is and how its links run: facts fixed when it starts, and the counter its
/// link keys are drawn from. Built once by [`start`]; shared (`Arc`) by the contexts of the
/// client sessions, the mesh and the uplink.
struct NodeFacts {
    /// This node's id (the hash of its key).
    node_id: NodeId,
    /// `node.realm`.
    realm: String,
    /// `node.cluster`.
    cluster: String,
    /// This process's key; proves `node_id` to every peer (`docs/AUTH.md`).
    identity: crate::identity::Identity,
    /// `limits.*`: frame sizes, windows, timeouts and backoffs of the node's links.
    limits: crate::config::LimitsConfig,
    /// `transport.keep_alive_ms`, announced to the peers this node accepts.
    keep_alive_ms: u64,
    /// The process's metrics.
    metrics: Arc<Metrics>,
    /// Every task the node starts, joined (within `limits.drain_grace_ms`) when it stops.
    tasks: TaskTracker,
    /// The next link key: client sessions, mesh links and mesh peers' relay links share one key
    /// space (the relay's links and RPC's pending calls are keyed by it).
    next_key: AtomicU64,
}

impl NodeFacts {
    /// A fresh link key.
    fn next_key(&self) -> crate::router::PeerKey {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Where a link's tasks run: the node's tracker, inside `span`.
    fn link_tasks(&self, span: tracing::Span) -> LinkTasks {
        LinkTasks {
            tracker: self.tasks.clone(),
            span,
        }
    }

    /// How a link's writer runs: `limits.slow_consumer_timeout_ms` per write.
    fn writer_config(&self) -> WriterConfig {
        WriterConfig {
            write_timeout: Duration::from_millis(self.limits.slow_consumer_timeout_ms.max(1)),
            metrics: self.metrics.clone(),
        }
    }
}

/// What a client session needs of the rest of the node: who it is, admission and rate
/// limits, and the subsystems a client uses (pub/sub, RPC, the replicated store). Built once by
/// [`start`]; shared by the sessions of the client listener.
struct ClientEnv {
    /// Who this node is, its limits, metrics and tracker.
    node: Arc<NodeFacts>,
    /// Admission rules (`auth.*`).
    auth: crate::auth::Auth,
    /// The rate limits of client sessions (`rate.*`).
    rates: crate::rate::Rates,
    /// Pub/sub: the relay over every link (clients, mesh peers, the uplink, the registry).
    pubsub: Arc<pubsub::PubSub>,
    /// RPC: local providers, calls in flight, the lookup cache.
    rpc: Arc<rpc::NodeRpc>,
    /// The gossip task (clients' `$crdt.*` calls).
    gossip: Arc<gossip::GossipHandle>,
    /// The mesh's context: a mesh session a peer opens on the client listener is handed to it.
    mesh: Arc<mesh::MeshEnv>,
}

/// Queues into the uplink task.
#[derive(Clone)]
struct UplinkTx {
    ctrl: mpsc::Sender<Outbound>,
    data: mpsc::Sender<Outbound>,
    /// Whether a session with the bridge is up (set by the uplink task): while it is down,
    /// nothing drains the custody queue.
    connected: Arc<std::sync::atomic::AtomicBool>,
    /// Set (and notified) when an interest change could not be queued to the bridge: the
    /// session's view of our interest is then wrong, so the uplink task ends the session and
    /// the next one announces the whole interest again. Cleared at each announcement.
    interest_lost: Arc<(std::sync::atomic::AtomicBool, tokio::sync::Notify)>,
    /// `limits.qos0_stall_ms`: how long a QoS 0 publish waits for room in `data` while the
    /// session is up ([`crate::session::offer_best_effort`]).
    qos0_stall: Duration,
    /// Set while the uplink sheds QoS 0 (its queue stayed full for `qos0_stall`).
    shedding: Arc<std::sync::atomic::AtomicBool>,
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
    let identity = crate::identity::Identity::load_or_create(&cfg.data_dir)?;
    let auth = crate::auth::Auth::from_config(&cfg.auth).map_err(anyhow::Error::msg)?;
    if !auth.admission.required(&cfg.node.realm) {
        tracing::warn!(realm = %cfg.node.realm, "realm is open: anyone who proves a key is admitted (set auth.operators, docs/AUTH.md)");
    }
    let node_id: NodeId = identity.node_id();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let limits = &cfg.limits;
    let (uplink, uplink_rx) = match &cfg.node.uplink {
        Some(target) => {
            let (ctrl_tx, ctrl_rx) = mpsc::channel(limits.max_inflight as usize + 1024);
            let (data_tx, data_rx) = mpsc::channel(limits.outbound_queue);
            let tx = UplinkTx {
                ctrl: ctrl_tx,
                data: data_tx,
                connected: Arc::default(),
                interest_lost: Arc::default(),
                qos0_stall: Duration::from_millis(cfg.limits.qos0_stall_ms),
                shedding: Arc::default(),
            };
            (
                Some(tx.clone()),
                Some((target.clone(), tx, ctrl_rx, data_rx)),
            )
        }
        None => (None, None),
    };
    let advertise = cfg.node.advertise.unwrap_or(local_addr);
    let (mesh, dial_rx) = mesh::Mesh::new();
    let (advert_tx, advert_rx) = mpsc::channel(rpc::ADVERT_QUEUE);
    let (gossip_handle, gossip_rx) = gossip::GossipHandle::new(gossip::GossipEnv {
        realm: cfg.node.realm.clone(),
        cluster: cfg.node.cluster.clone(),
        node_id,
        advertise,
        engine: crate::state::engine_config(&cfg),
        uplink: uplink.clone(),
        metrics: metrics.clone(),
        tasks: tracker.clone(),
        writer_quota: (cfg.crdt.writer_max_keys, cfg.crdt.writer_max_bytes),
    });
    let gossip_handle = Arc::new(gossip_handle);
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
    let rpc = Arc::new(rpc::NodeRpc::new(
        cfg.rpc.max_pending,
        cache,
        rpc::RpcEnv {
            realm: cfg.node.realm.clone(),
            cluster: cfg.node.cluster.clone(),
            node_id,
            contact_addr: advertise,
            max_attempts: cfg.rpc.max_attempts as usize,
            uplink_max_frame: limits.max_frame_size as usize + wire::HEADER_LEN,
            record_ttl_ms: cfg.dht.record_ttl_ms.min(u64::from(u32::MAX)) as u32,
            uplink: uplink.clone(),
            mesh: mesh.clone(),
            dht: dht.clone(),
            gossip: gossip_handle.clone(),
            advert_tx,
            metrics: metrics.clone(),
            tasks: tracker.clone(),
        },
    ));
    let dev_tls = cfg.tls.mode == crate::config::TlsMode::Development;
    let pins = (dev_tls && cfg.node.uplink_pin_key && cfg.node.uplink.is_some())
        .then(|| pins::KnownBridges::load(&cfg.data_dir, cfg.node.uplink_accept_new_key));
    let node = Arc::new(NodeFacts {
        node_id,
        realm: cfg.node.realm.clone(),
        cluster: cfg.node.cluster.clone(),
        identity,
        limits: limits.clone(),
        keep_alive_ms: cfg.transport.keep_alive_ms,
        metrics: metrics.clone(),
        tasks: tracker.clone(),
        next_key: AtomicU64::new(1),
    });
    let pubsub = Arc::new(pubsub::PubSub::new(
        node_relay(limits.max_subscriptions_per_connection, uplink.is_some()),
        uplink.clone(),
        gossip_handle.clone(),
        &node_id,
        metrics.clone(),
    ));
    let mesh_env = Arc::new(mesh::MeshEnv {
        node: node.clone(),
        auth: auth.clone(),
        server_name: cfg.node.uplink_server_name.clone(),
        advertise,
        mesh: mesh.clone(),
        dht: dht.clone(),
        pubsub: pubsub.clone(),
        rpc: rpc.clone(),
        gossip: gossip_handle.clone(),
        shutdown: shutdown.clone(),
    });
    let client_ep = crate::transport::client_endpoint(
        "0.0.0.0:0".parse().expect("valid literal"),
        &cfg.tls,
        &cfg.transport,
        &cfg.data_dir,
    )?;
    let fleet = uplink::UplinkFleet::new(&cfg.node.realm, &cfg.node.cluster);
    let uplink_fleet = fleet.json.clone();
    if let Some((target, queues, ctrl_rx, data_rx)) = uplink_rx {
        let env = Arc::new(uplink::UplinkEnv {
            node: node.clone(),
            auth: auth.clone(),
            pins,
            target,
            server_name: cfg.node.uplink_server_name.clone(),
            queues,
            fleet,
            pubsub: pubsub.clone(),
            rpc: rpc.clone(),
            gossip: gossip_handle.clone(),
        });
        let (ep, cancel) = (client_ep.clone(), shutdown.clone());
        tracker.spawn(
            uplink::run_uplink(env, ep, ctrl_rx, data_rx, cancel).instrument(info_span!("uplink")),
        );
    }
    let client_env = Arc::new(ClientEnv {
        node,
        auth: auth.clone(),
        rates: crate::rate::Rates::new(
            cfg.rate.client,
            cfg.rate.realm,
            Duration::from_millis(cfg.rate.burst_ms),
            limits
                .max_frame_size
                .saturating_add(crate::defaults::FRAME_HEADER_SIZE),
        ),
        pubsub,
        rpc: rpc.clone(),
        gossip: gossip_handle.clone(),
        mesh: mesh_env.clone(),
    });
    tracker.spawn(
        mesh::run_dialer(mesh_env.clone(), client_ep, dial_rx, shutdown.clone())
            .instrument(info_span!("mesh")),
    );
    tracker.spawn(
        mesh::run_maintainer(mesh_env, cfg.node.seeds.clone(), shutdown.clone())
            .instrument(info_span!("mesh")),
    );
    tracker.spawn(run_housekeeping(
        rpc.clone(),
        uplink,
        cfg.dht.record_ttl_ms,
        shutdown.clone(),
    ));
    if let Some(w) = crate::auth::revocation_watcher(&auth, &cfg.auth, &metrics, &shutdown) {
        tracker.spawn(w);
    }
    let leave = CancellationToken::new();
    let left = Arc::new(tokio::sync::Notify::new());
    tracker.spawn(
        gossip::run(
            gossip_handle.clone(),
            gossip_rx,
            leave.clone(),
            left.clone(),
            shutdown.clone(),
        )
        .instrument(info_span!("gossip")),
    );
    tracker.spawn(rpc.run_advertiser(advert_rx, shutdown.clone()));
    tracker.spawn(crate::server::accept_loop(
        endpoint.clone(),
        crate::server::gate::GateLimits::of(&cfg.limits),
        "client",
        metrics,
        tracker.clone(),
        shutdown.clone(),
        move |conn| {
            let env = client_env.clone();
            let span = info_span!("client", remote.addr = %conn.remote_address());
            async move { serve_client(env, conn).await }.instrument(span)
        },
    ));
    info!(listen = %local_addr, realm = %cfg.node.realm, cluster = %cfg.node.cluster, "node started");
    Ok(NodeHandle {
        local_addr,
        node_id,
        shutdown,
        tracker,
        endpoint,
        state: gossip_handle.json.clone(),
        leave: Some((leave, left)),
        fleet: None,
        uplink_fleet: Some(uplink_fleet),
    })
}

/// The node's relay: the registry link, and the uplink (interest unknown until its first
/// snapshot) when one is configured.
fn node_relay(max_patterns: usize, uplink: bool) -> Relay<PeerTx> {
    let mut relay = Relay::new(max_patterns);
    relay.add_link(pubsub::REGISTRY_LINK, LinkKind::Mesh, None);
    if uplink {
        relay.add_link(pubsub::UPLINK_LINK, LinkKind::Uplink, None);
        relay.set_unknown(pubsub::UPLINK_LINK, true);
    }
    relay
}

async fn serve_client(env: Arc<ClientEnv>, conn: Connection) {
    let metrics = env.node.metrics.clone();
    let limits = &env.node.limits;
    let (mut send, recv, decoder, connect) =
        match accept_session(&conn, limits.max_frame_size).await {
            Ok(s) => s,
            Err(e) => return session::reject_before_connect(&conn, &metrics, e).await,
        };
    metrics.frames_in.inc(MessageType::Connect as u8, 0);
    if connect.role == Role::Node && connect.versions.contains(&wire::PROTOCOL_VERSION) {
        return mesh::serve_accepted(env.mesh.clone(), conn, send, recv, decoder, connect).await;
    }
    if let Err((code, msg)) =
        session::check_connect(&connect, Role::Client, |r| r == env.node.realm)
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
    let admitted = match env.auth.admit(&connect, crate::auth::Role::Client, &conn) {
        Ok(a) => a,
        Err(e) => {
            let corr = connect.correlation_id;
            return session::refuse_admission(&conn, &mut send, &metrics, &e, corr).await;
        }
    };
    let key = env.node.next_key();
    let peer = session::accept_peer(
        key,
        &conn,
        &connect,
        &env.node.identity,
        limits,
        env.node.keep_alive_ms,
    );
    let span = tracing::debug_span!("link", kind = "client", remote.addr = %conn.remote_address());
    let io = LinkIo {
        conn,
        send,
        recv,
        decoder,
    };
    let (mut actor, tx, _) = LinkActor::start(
        io,
        peer,
        None,
        env.node.writer_config(),
        env.node.link_tasks(span),
    );
    env.pubsub.add_link(key, LinkKind::Client, Some(tx.clone()));
    let mut link = ClientLink {
        env: &env,
        me: &tx,
        ctx: ReadCtx::new(),
        slow: Duration::from_millis(env.node.limits.slow_consumer_timeout_ms),
        grant: admitted.grant.clone(),
        client_id: connect.node_id,
        throttle: env.rates.throttle(&connect.realm, admitted.credential),
    };
    let end = actor
        .read(&mut link, std::future::pending())
        .await
        .orderly();
    env.pubsub.remove_link(key);
    env.rpc.client_gone(key);
    actor.finish(end.map(|_| ())).await;
}

use session::link::{LinkActor, LinkIo, LinkTasks};
use session::read::{Fatal, Flow, FrameHandler};

/// A client session's frame handler.
struct ClientLink<'a> {
    env: &'a ClientEnv,
    me: &'a PeerTx,
    ctx: ReadCtx,
    slow: Duration,
    /// What the client's credential permits (`None`: everything).
    grant: Option<Arc<crate::auth::Grant>>,
    /// The client's proven node id (its share of the cluster's store is charged to it).
    client_id: NodeId,
    /// The session's rate limits (`rate.client`, `rate.realm`, the credential's `lim`).
    throttle: crate::rate::Throttle,
}

impl FrameHandler for ClientLink<'_> {
    async fn on_frame(&mut self, raw: &RawFrame) -> Result<Flow, Fatal> {
        let grant = self.grant.as_ref();
        let end = handle_client_frame(
            self.env,
            (self.me, self.client_id),
            raw,
            &mut self.ctx,
            self.slow,
            grant,
        )
        .await?;
        Ok(if end.is_some() {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }

    fn on_chunk(&mut self) {
        self.ctx.now_us = session::now_us();
    }

    fn throttle(&self) -> Option<&crate::rate::Throttle> {
        Some(&self.throttle).filter(|t| !t.is_unlimited())
    }
}

/// Handles one frame from a client. `Ok(Some(()))` ends the session cleanly.
async fn handle_client_frame(
    env: &ClientEnv,
    (me, client_id): (&PeerTx, NodeId),
    raw: &RawFrame,
    ctx: &mut ReadCtx,
    slow: Duration,
    granted: Option<&Arc<crate::auth::Grant>>,
) -> Result<Option<()>, Fatal> {
    use crate::auth::Action;
    let grant = granted.map(|g| &**g);
    let metrics = &env.node.metrics;
    let Some(t) = me.msg_type(raw, metrics) else {
        return Ok(None);
    };
    match t {
        MessageType::Publish => {
            let Some(view) = me.accept_publish(raw, metrics) else {
                return Ok(None);
            };
            if !me.permit_publish(grant, &view, metrics) {
                return Ok(None);
            }
            let reliable = view.qos == Qos::AtLeastOnce;
            metrics.messages_published_total.inc();
            let up = reliable.then_some(&me.ctrl);
            let out = env
                .pubsub
                .forward(me.key, &raw.bytes, &view, ctx, slow, up)
                .await;
            if out.unacked {
                // The uplink's custody is full while the bridge is away: the client re-sends.
                return Ok(None);
            }
            if let Some(track) = out.track {
                // Acknowledged (`ids`) when the mesh peers it went to have acknowledged it too.
                track.ack_one();
                return Ok(None);
            }
            // `ids` once queued for someone, `no_route` when nobody wanted it (§8).
            let ack = match out.now {
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
            let corr = Some(req.correlation_id);
            if req.subscribe
                && !req
                    .patterns
                    .iter()
                    .all(|p| me.permit(grant, Action::Subscribe, p, metrics, corr))
            {
                return Ok(None);
            }
            let count = match env
                .pubsub
                .change_interest(me.key, &req.patterns, req.subscribe)
            {
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
            };
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
            Ok(Frame::Register(r)) => {
                let corr = Some(r.correlation_id);
                if r.procedures
                    .iter()
                    .all(|p| me.permit(grant, Action::Register, p, metrics, corr))
                {
                    env.rpc.on_register(me, r)
                }
            }
            Ok(Frame::Unregister(u)) => env.rpc.on_unregister(me, u),
            Ok(Frame::Call(c)) if c.hops > wire::MAX_HOPS => {
                metrics.rpc.call("rejected");
                let e = wire::RpcError::new(wire::RpcError::HOPS_EXCEEDED, "hop limit exceeded");
                rpc::reply_link(me, c.call_id, Err(e));
            }
            Ok(Frame::Call(c)) if c.procedure.starts_with("$crdt.") => {
                gossip::client_op(&env.gossip, (me, client_id), c, granted.cloned())
            }
            Ok(Frame::Call(c)) => match grant.map(|g| g.check(Action::Call, &c.procedure)) {
                Some(Err(m)) => {
                    metrics.permission_denied(Action::Call);
                    metrics.rpc.call("rejected");
                    let e = wire::RpcError::new(wire::RpcError::PERMISSION_DENIED, m);
                    rpc::reply_link(me, c.call_id, Err(e));
                }
                _ => env.rpc.client_call(me, c),
            },
            Ok(Frame::Reply(r)) => env.rpc.reply_arrived(me.key, r),
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

/// Periodic work of `rpc`: sweep calls past their deadline (every second) and re-advertise the
/// local procedures on `uplink` every `record_ttl_ms / 2` (`dht.record_ttl_ms`; at least 500 ms).
async fn run_housekeeping(
    rpc: Arc<rpc::NodeRpc>,
    uplink: Option<UplinkTx>,
    record_ttl_ms: u64,
    cancel: CancellationToken,
) {
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let refresh_every = Duration::from_millis((record_ttl_ms / 2).max(500));
    let mut refresh =
        tokio::time::interval_at(tokio::time::Instant::now() + refresh_every, refresh_every);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sweep.tick() => rpc.sweep(),
            _ = refresh.tick() => {
                if let Some(up) = &uplink {
                    for f in rpc.all_store_frames() {
                        let _ = up.ctrl.try_send(Outbound::Frame(f));
                    }
                }
            }
        }
    }
}
