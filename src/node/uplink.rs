//! The uplink: one task per node keeps a session to a bridge (or a fleet worker),
//! announces interest, relays, acknowledges, and reconnects with backoff. In a fleet
//! (`docs/FLEET.md`) it follows redirects, keeps the directory of workers the bridge sends,
//! and connects to its cluster's owner first; QoS 1 custody and the de-duplication window
//! survive every move.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::session::link::{run_reliable, StopClose};
use arc_swap::{ArcSwap, ArcSwapOption};
use quinn::{Endpoint, RecvStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::gossip::{self, GossipHandle};
use super::pubsub::{PubSub, ReadCtx, UPLINK_LINK};
use super::{pins, rpc, NodeFacts, UplinkTx};
use crate::dedup::DedupWindow;
use crate::defaults;
use crate::fleet::follow::{Followed, Follower};
use crate::fleet::hash::cluster_key;
use crate::session::read::{read_loop, Fatal, Flow, FrameHandler};
use crate::session::redial::{quic_connect, Dial, DialError, Redialer};
use crate::session::{self, open_session, Confirm, Outbound, ReliableState, SessionError};
use crate::wire::{
    self, Connect, ErrorCode, FleetView, Frame, FrameDecoder, MessageType, NodeId, Pong, Qos,
    RawFrame, Redirect, Role, WireError,
};

/// What the uplink task and its readers need of the rest of the node: who it is, where and how
/// it dials, its queues and fleet view, and the subsystems that traffic from the bridge goes
/// to. Built once by `node::start` when an uplink is configured; shared by the uplink task
/// and each session's reader.
pub(super) struct UplinkEnv {
    /// Who this node is, its limits, metrics and tracker.
    pub(super) node: Arc<NodeFacts>,
    /// The credential presented to the bridge; revocation lists from it.
    pub(super) auth: crate::auth::Auth,
    /// The pinned bridge keys (development TLS mode with `node.uplink_pin_key`).
    pub(super) pins: Option<pins::KnownBridges>,
    /// The configured bridge (`node.uplink`).
    pub(super) target: String,
    /// The TLS server name dialled (`node.uplink_server_name`).
    pub(super) server_name: String,
    /// The queues the task drains (pub/sub custody, RPC and lookups going up).
    pub(super) queues: UplinkTx,
    /// The bridge fleet as the uplink sees it (directory, redirects).
    pub(super) fleet: UplinkFleet,
    /// Pub/sub: publishes and interest from the bridge.
    pub(super) pubsub: Arc<PubSub>,
    /// RPC: calls, replies and lookup answers from the bridge.
    pub(super) rpc: Arc<rpc::NodeRpc>,
    /// The gossip task: the bridge is a gossip peer.
    pub(super) gossip: Arc<GossipHandle>,
}

/// The uplink task: connect, announce interest, relay, reconnect with backoff.
pub(super) async fn run_uplink(
    env: Arc<UplinkEnv>,
    endpoint: Endpoint,
    ctrl_rx: mpsc::Receiver<Outbound>,
    data_rx: mpsc::Receiver<Outbound>,
    cancel: CancellationToken,
) {
    let limits = env.node.limits.clone();
    let configured = env.target.clone();
    let server_name = env.server_name.clone();
    let mut state = ReliableState::new(
        limits.max_inflight as usize,
        Duration::from_millis(limits.ack_timeout_ms),
        Duration::from_millis(limits.uplink_settle_ms),
        env.node.metrics.clone(),
    );
    let (acks_tx, acks_rx) = session::ack_channel(limits.max_inflight as usize);
    let mut queues = session::ReliableQueues {
        ctrl: ctrl_rx,
        data: data_rx,
        acks: acks_rx,
    };
    let mut dedup = DedupWindow::new(limits.dedup_window);
    let mut redial = Redialer::new(
        vec![configured],
        env.fleet.follow.clone(),
        session::backoff::Backoff::new(
            limits.reconnect_initial_backoff(),
            limits.reconnect_max_backoff(),
        ),
        env.node.metrics.fleet.redirects_followed_total.clone(),
    )
    .counting_retries(env.node.metrics.uplink_reconnects_total.clone());
    let timeouts = (
        defaults::UPLINK_CONNECT_TIMEOUT,
        defaults::UPLINK_CONNECT_TIMEOUT,
    );
    let wcfg = env.node.writer_config();
    let mut sessions: u64 = 0;
    loop {
        let opened = {
            let (env, endpoint, server_name) = (&env, &endpoint, &server_name);
            redial
                .connect(&cancel, timeouts, |target, extra, timeout| async move {
                    let opened = async {
                        let conn = quic_connect(endpoint, &target, server_name, timeout).await?;
                        let frame = connect_frame(env, extra);
                        match open_session(
                            &conn,
                            frame,
                            env.node.limits.max_frame_size,
                            &env.node.identity,
                        )
                        .await
                        {
                            Ok(s) => {
                                match env.pins.as_ref().map(|p| p.check(&target, &s.3.node_id)) {
                                    Some(Err(msg)) => {
                                        env.node.metrics.uplink_key_refused_total.inc();
                                        tracing::error!(uplink = %target, "{msg}");
                                        let code = ErrorCode::Unauthenticated as u32;
                                        conn.close(code.into(), b"bridge key changed");
                                        Err(DialError::Session(SessionError::Protocol(msg)))
                                    }
                                    _ => Ok((conn, s)),
                                }
                            }
                            Err(e) => {
                                conn.close(0u32.into(), b"session refused");
                                if !matches!(e, SessionError::Redirected(_)) {
                                    warn!(uplink = %target, error = %e, "uplink session refused");
                                }
                                Err(DialError::Session(e))
                            }
                        }
                    };
                    Dial::from(opened.await)
                })
                .await
        };
        let Some((target, (conn, (mut send, recv, decoder, welcome)))) = opened else {
            break;
        };
        redial.reset_backoff();
        state.window = (welcome.max_inflight as usize).max(1);
        env.rpc.set_uplink_up(true);
        env.queues.connected.store(true, Ordering::Relaxed);
        env.node
            .metrics
            .connections_open
            .with_label_values(&["uplink"])
            .inc();
        info!(uplink = %target, "uplink connected");
        let bridge_id = welcome.node_id;
        env.fleet.connected_to(Some(bridge_id), &env.node.metrics);
        env.gossip
            .send(gossip::Cmd::PeerUp(bridge_id, gossip::PeerLink::Uplink));
        // The settle window matters only after a reconnect: the bridge may have
        // restarted and still be relearning the realm's interest while we hold
        // publishes accepted during the outage. On the first connect the bridge sends
        // the realm's complete interest straight away (and we hold nothing that was
        // meant for remote subscribers), so QoS 1 follows the known interest at once.
        let settle_until = (sessions > 0).then(|| Instant::now() + state.settle);
        sessions += 1;
        // Forget the previous session's view of the realm (the bridge sends it again), and
        // re-announce our interest: drain stale control items (old acks, old interest
        // deltas) and take the told set under the relay's lock, so every later delta
        // follows this snapshot.
        let announce = {
            let mut r = env.pubsub.relay_mut();
            let held = r.held(UPLINK_LINK);
            r.unsubscribe(UPLINK_LINK, &held);
            r.set_unknown(UPLINK_LINK, true);
            while queues.ctrl.try_recv().is_ok() {}
            // Announced whole below: nothing is lost to this session yet.
            env.queues.interest_lost.0.store(false, Ordering::Release);
            session::interest::snapshot_frames(&r.told(UPLINK_LINK))
        };
        let settle = Arc::new(Settle::default());
        let mut ok = true;
        for f in announce.into_iter().chain(env.rpc.all_store_frames()) {
            if send.write_all(&f).await.is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            let up = &env.queues;
            // After the drain above: the list in force goes out on this session.
            let revocations =
                (env.auth).revocation_link(&env.node.realm, bridge_id, &up.ctrl, &env.node.metrics);
            let mut link = UplinkLink {
                env: env.clone(),
                dedup,
                acks_tx: acks_tx.clone(),
                this: ThisSession {
                    bridge_id,
                    settle: settle.clone(),
                    revocations,
                },
                ctx: ReadCtx::new(),
                slow: Duration::from_millis(env.node.limits.slow_consumer_timeout_ms),
            };
            let reader = async move {
                let env = link.env.clone();
                let settled = async {
                    if let Some(t) = settle_until {
                        tokio::time::sleep_until(t.into()).await;
                    }
                    settle.mark(&env.pubsub, Settle::SETTLED);
                    std::future::pending::<()>().await
                };
                let lost = async {
                    let (flag, wake) = &*env.queues.interest_lost;
                    while !flag.load(Ordering::Acquire) {
                        wake.notified().await;
                    }
                };
                let read = link.read(recv, decoder);
                let r = tokio::select! {
                    r = read => r,
                    () = settled => unreachable!("pending never completes"),
                    () = lost => {
                        warn!("an interest change could not be queued; re-announcing in a new session");
                        Err(SessionError::Protocol("interest change lost (control queue full)".into()))
                    }
                };
                (r, link.dedup)
            };
            let span = tracing::debug_span!("link", kind = "uplink", uplink = %target);
            let on_stop = StopClose {
                code: Some(ErrorCode::ShuttingDown),
                finish: false,
            };
            let (w, r) = run_reliable(
                &conn,
                &mut send,
                &mut state,
                &mut queues,
                &wcfg,
                &env.node.link_tasks(span),
                reader,
                (cancel.cancelled(), on_stop),
            )
            .await;
            let r = match r {
                Ok((r, window)) => {
                    dedup = window;
                    r
                }
                Err(e) => {
                    dedup = DedupWindow::new(limits.dedup_window);
                    Err(SessionError::Protocol(format!("reader task failed: {e}")))
                }
            };
            debug!(writer = ?w.err(), reader = ?r.err(), "uplink session ended");
        }
        env.node
            .metrics
            .connections_open
            .with_label_values(&["uplink"])
            .dec();
        env.rpc.set_uplink_up(false);
        env.queues.connected.store(false, Ordering::Relaxed);
        env.fleet.connected_to(None, &env.node.metrics);
        env.gossip.send(gossip::Cmd::PeerDown(bridge_id, None));
        env.rpc.uplink_lost();
        if redial.ended(&target) {
            info!(from = %target, unacked = state.unacked(), "redirected; moving");
        } else {
            warn!(uplink = %target, unacked = state.unacked(), "uplink lost; reconnecting");
        }
    }
}

/// The uplink's `CONNECT`; `redirects`: the `redirects=N` capability when redirects were
/// followed in a row.
fn connect_frame(env: &UplinkEnv, redirects: Option<String>) -> Connect {
    Connect {
        versions: vec![wire::PROTOCOL_VERSION],
        node_id: env.node.node_id,
        realm: env.node.realm.clone(),
        cluster: env.node.cluster.clone(),
        role: Role::Node,
        capabilities: ["pubsub".to_string(), "qos1".to_string()]
            .into_iter()
            .chain(redirects)
            .collect(),
        max_frame_size: env.node.limits.max_frame_size,
        correlation_id: 1,
        proof: None,
        credential: env.auth.credential.clone(),
    }
}

/// Whether the uplink's interest is known in this session: the bridge's snapshot is
/// complete ([`Settle::SYNCED`]) and the settle window after a reconnect has passed
/// ([`Settle::SETTLED`]). Until both, every QoS 1 publish goes up.
#[derive(Default)]
struct Settle(AtomicU8);

impl Settle {
    const SYNCED: u8 = 1;
    const SETTLED: u8 = 2;

    /// Records one of the two conditions; the second one makes the interest known.
    fn mark(&self, pubsub: &PubSub, bit: u8) {
        let now = self.0.fetch_or(bit, Ordering::AcqRel) | bit;
        if now == Self::SYNCED | Self::SETTLED {
            pubsub.relay_mut().set_unknown(UPLINK_LINK, false);
        }
    }
}

/// What the uplink reader knows of its session.
struct ThisSession {
    bridge_id: NodeId,
    settle: Arc<Settle>,
    /// The session's registration for revocation lists (dropped with the session).
    revocations: crate::auth::RevocationLink,
}

/// The uplink's frame handler: reads what the bridge sends (publishes for local
/// subscribers, acknowledgements of our publishes, the realm's interest). It owns what it
/// needs, so it runs as its own task ([`run_reliable`]); the de-duplication window goes back
/// to the uplink task with the session's end.
struct UplinkLink {
    env: Arc<UplinkEnv>,
    dedup: DedupWindow,
    acks_tx: mpsc::Sender<Confirm>,
    this: ThisSession,
    ctx: ReadCtx,
    slow: Duration,
}

impl UplinkLink {
    /// Reads the session until it ends.
    async fn read(
        &mut self,
        mut recv: RecvStream,
        mut decoder: FrameDecoder,
    ) -> Result<(), SessionError> {
        let metrics = self.env.node.metrics.clone();
        read_loop(&mut recv, &mut decoder, Some(&metrics), self)
            .await
            .into_session()
    }
}

impl FrameHandler for UplinkLink {
    async fn on_frame(&mut self, raw: &RawFrame) -> Result<Flow, Fatal> {
        let UplinkLink {
            env,
            dedup,
            acks_tx,
            this,
            ctx,
            slow,
        } = self;
        let (env, acks_tx, slow) = (&*env, &*acks_tx, *slow);
        let up = &env.queues;
        let ThisSession {
            bridge_id,
            settle,
            revocations,
        } = &*this;
        let bridge_id = *bridge_id;
        let metrics = &env.node.metrics;
        match raw.msg_type() {
            Some(MessageType::Publish) => {
                let view = match raw.publish_view() {
                    Ok(v) => v,
                    Err(e) => {
                        metrics.protocol_error(e.code().as_str());
                        return Ok(Flow::Continue);
                    }
                };
                let reliable = view.qos == Qos::AtLeastOnce;
                if dedup.insert(view.message_id) {
                    env.pubsub
                        .forward(UPLINK_LINK, &raw.bytes, &view, ctx, slow, None)
                        .await;
                } else {
                    metrics.messages_deduplicated_total.inc();
                }
                if reliable {
                    let _ = up.ctrl.try_send(Outbound::Ack(view.message_id));
                }
            }
            Some(MessageType::PubAck) => match raw.decode() {
                Ok(Frame::PubAck(a)) => {
                    let _ = acks_tx.try_send(Confirm::PubAck(a));
                }
                Ok(_) => unreachable!("decode follows the header type"),
                Err(e) => answer_error(up, metrics, &e, None),
            },
            Some(MessageType::Subscribe) | Some(MessageType::Unsubscribe) => {
                let (patterns, add) = match session::decode_interest(raw) {
                    Ok(r) => (r.patterns, r.subscribe),
                    Err((code, _, _)) => {
                        metrics.protocol_error(code.as_str());
                        return Ok(Flow::Continue);
                    }
                };
                if let Err(e) = env.pubsub.change_interest(UPLINK_LINK, &patterns, add) {
                    // Too much interest to hold: treat it as unknown for the rest of the
                    // session (QoS 1 still goes up; the bridge routes it).
                    metrics.interest_refused_total.inc();
                    warn!(error = %e, "bridge interest refused; routing QoS 1 up regardless");
                    env.pubsub.relay_mut().set_unknown(UPLINK_LINK, true);
                }
            }
            Some(MessageType::Ping) => match raw.decode() {
                Ok(Frame::Ping(p)) => {
                    let pong = Frame::Pong(Pong {
                        correlation_id: p.correlation_id,
                    });
                    let _ = up.ctrl.try_send(Outbound::Frame(pong.to_bytes()));
                }
                Ok(_) => unreachable!("decode follows the header type"),
                Err(e) => answer_error(up, metrics, &e, raw.peek_correlation_id()),
            },
            Some(MessageType::Error) => {
                if let Ok(Frame::Error(e)) = raw.decode() {
                    match e.correlation_id {
                        Some(corr) => env.rpc.escalation_answered(
                            corr,
                            Err(format!("bridge error {}: {}", e.code, e.message)),
                        ),
                        // A publish the node's credential does not permit (the bridge
                        // counts and audits each; a flood of them must not flood this log).
                        None if e.code == ErrorCode::PermissionDenied as u16 => {
                            debug!(message = %e.message, "bridge refused a publish")
                        }
                        None => {
                            warn!(code = e.code, message = %e.message, "bridge reported an error")
                        }
                    }
                }
            }
            Some(MessageType::Call) => match raw.decode() {
                Ok(Frame::Call(c)) => env.rpc.routed_call(rpc::Back::Uplink, c, true),
                _ => metrics.protocol_error(ErrorCode::MalformedBody.as_str()),
            },
            Some(MessageType::Reply) => match raw.decode() {
                Ok(Frame::Reply(r)) => env.rpc.reply_arrived(rpc::UPLINK_LINK, r),
                _ => metrics.protocol_error(ErrorCode::MalformedBody.as_str()),
            },
            Some(MessageType::FindValueReply) => match raw.decode() {
                Ok(Frame::FindValueReply(r)) => {
                    env.rpc.escalation_answered(r.correlation_id, Ok(r))
                }
                _ => metrics.protocol_error(ErrorCode::MalformedBody.as_str()),
            },
            Some(MessageType::StoreAck) => {}
            Some(MessageType::RevocationList) => {
                if let Err(e) = env.auth.on_revocation_list(revocations, raw, metrics) {
                    answer_error(up, metrics, &e, None);
                }
            }
            Some(MessageType::SubAck) => {
                if let Ok(Frame::SubAck(a)) = raw.decode() {
                    if a.correlation_id == session::interest::INTEREST_SYNC {
                        settle.mark(&env.pubsub, Settle::SYNCED);
                    }
                }
            }
            Some(MessageType::Pong) => {
                if let Ok(Frame::Pong(p)) = raw.decode() {
                    let _ = acks_tx.try_send(Confirm::Pong(p.correlation_id));
                }
            }
            Some(MessageType::FleetView) => match raw.decode() {
                Ok(Frame::FleetView(v)) if v.sender == bridge_id => {
                    env.fleet.on_view(v, Some(metrics))
                }
                _ => metrics.protocol_error(ErrorCode::MalformedBody.as_str()),
            },
            Some(MessageType::Redirect) => match raw.decode() {
                Ok(Frame::Redirect(r)) => {
                    if env.fleet.on_redirect(r, metrics) {
                        return Ok(Flow::Stop);
                    }
                }
                _ => metrics.protocol_error(ErrorCode::MalformedBody.as_str()),
            },
            Some(
                MessageType::GossipPush
                | MessageType::GossipPull
                | MessageType::GossipPullReply
                | MessageType::GossipSync
                | MessageType::GossipSyncReply,
            ) => {
                if let Err((code, msg)) = env.gossip.on_frame(bridge_id, raw, None) {
                    debug!(code = code.as_str(), %msg, "gossip frame from the bridge refused");
                }
            }
            _ => metrics.protocol_error(ErrorCode::Protocol.as_str()),
        }
        Ok(Flow::Continue)
    }

    fn on_chunk(&mut self) {
        self.ctx.now_us = session::now_us();
    }
}

/// Answers a frame from the bridge that does not decode with a non-fatal error frame
/// (counted), carrying `corr` when the body's correlation id was readable.
fn answer_error(
    up: &UplinkTx,
    metrics: &crate::metrics::Metrics,
    e: &WireError,
    corr: Option<u64>,
) {
    metrics.protocol_error(e.code().as_str());
    let f = session::error_frame(e.code(), e.to_string(), corr);
    let _ = up.ctrl.try_send(Outbound::Frame(f));
}

/// The node's side of a bridge fleet: the directory of workers its bridge sent and the
/// redirect to follow (the [`Follower`] the uplink redials by), and what `/fleet` and
/// `macula_fleet_uplink_is_owner` report.
pub(super) struct UplinkFleet {
    /// Shared with the uplink's [`Redialer`]; fed by the uplink reader.
    follow: Arc<Mutex<Follower>>,
    /// The worker the uplink is connected to.
    connected: ArcSwapOption<NodeId>,
    /// `/fleet` as JSON.
    pub(super) json: Arc<ArcSwap<serde_json::Value>>,
}

impl UplinkFleet {
    pub(super) fn new(realm: &str, cluster: &str) -> UplinkFleet {
        let f = UplinkFleet {
            follow: Arc::new(Mutex::new(Follower::new(cluster_key(realm, cluster)))),
            connected: ArcSwapOption::empty(),
            json: Arc::new(ArcSwap::from_pointee(serde_json::Value::Null)),
        };
        f.publish(None);
        f
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Follower> {
        self.follow
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A directory arrived from the bridge: the owner is recomputed.
    fn on_view(&self, view: FleetView, metrics: Option<&crate::metrics::Metrics>) {
        self.lock().on_view(view.members);
        self.publish(metrics);
    }

    /// A redirect arrived during a session: `true` when it is followed (the session ends
    /// and the next dial goes to its target); one naming the worker just lost is ignored.
    fn on_redirect(&self, r: Redirect, metrics: &crate::metrics::Metrics) -> bool {
        let (to, reason) = (r.addr.clone(), r.reason.clone());
        let taken = self.lock().on_redirect(r, Instant::now()) == Followed::Taken;
        if taken {
            metrics.fleet.redirects_followed_total.inc();
            info!(to = %to, reason = %reason, "the bridge fleet redirects this node");
        }
        taken
    }

    fn connected_to(&self, bridge: Option<NodeId>, metrics: &crate::metrics::Metrics) {
        self.connected.store(bridge.map(Arc::new));
        self.publish(Some(metrics));
    }

    fn publish(&self, metrics: Option<&crate::metrics::Metrics>) {
        let hex = crate::state::hex_id;
        let connected = self.connected.load_full();
        let (owner, members) = {
            let f = self.lock();
            (f.owner_member().cloned(), f.members().map(<[_]>::len))
        };
        let is_owner = match (&connected, &owner, members.is_some()) {
            (None, _, _) => false,
            (Some(_), _, false) => true,
            (Some(c), Some(o), true) => **c == o.id,
            (Some(_), None, true) => false,
        };
        if let Some(m) = metrics {
            m.fleet.uplink_is_owner.set(i64::from(is_owner));
        }
        self.json.store(Arc::new(serde_json::json!({
            "connected": connected.is_some(),
            "uplink": connected.as_deref().map(hex),
            "owner": owner.as_ref().map(|o| hex(&o.id)),
            "owner_addr": owner.as_ref().map(|o| o.addr.clone()),
            "is_owner": is_owner,
            "members": members.unwrap_or(0),
        })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{FleetMember, MemberStatus};

    fn member(b: u8, status: MemberStatus) -> FleetMember {
        FleetMember {
            id: [b; 32],
            addr: format!("10.0.0.{b}:9443"),
            weight: 100,
            incarnation: 1,
            status,
        }
    }

    #[test]
    fn is_owner_follows_the_connection_and_the_directory() {
        let m = crate::metrics::Metrics::new();
        let f = UplinkFleet::new("io.macula", "a");
        f.connected_to(Some([5; 32]), &m);
        assert_eq!(
            m.fleet.uplink_is_owner.get(),
            1,
            "no fleet: any bridge is right"
        );
        f.on_view(
            FleetView {
                fleet: "f".into(),
                config: 0,
                sender: [5; 32],
                members: vec![
                    member(5, MemberStatus::Draining),
                    member(6, MemberStatus::Alive),
                ],
            },
            Some(&m),
        );
        assert_eq!(
            m.fleet.uplink_is_owner.get(),
            0,
            "connected to a draining worker"
        );
        f.connected_to(Some([6; 32]), &m);
        assert_eq!(m.fleet.uplink_is_owner.get(), 1);
        f.connected_to(None, &m);
        assert_eq!(m.fleet.uplink_is_owner.get(), 0);
    }
}
