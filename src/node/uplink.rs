//! The uplink: one task per node keeps a session to a bridge (or a fleet worker),
//! announces interest, relays, acknowledges, and reconnects with backoff. In a fleet
//! (`docs/FLEET.md`) it follows redirects, keeps the directory of workers the bridge sends,
//! and connects to its cluster's owner first; QoS 1 custody and the de-duplication window
//! survive every move.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use quinn::{Connection, Endpoint, RecvStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::pubsub::{self, ReadCtx, UPLINK_LINK};
use super::{gossip, rpc, writer_config, Shared};
use crate::dedup::DedupWindow;
use crate::defaults;
use crate::fleet::hash::{cluster_key, Placement, Worker};
use crate::session::read::{read_loop, Fatal, Flow, FrameHandler};
use crate::session::{self, open_session, Outbound, ReliableState, SessionError};
use crate::wire::{
    self, Connect, ErrorCode, FleetMember, FleetView, Frame, FrameDecoder, MemberStatus,
    MessageType, NodeId, Pong, PubAck, Qos, RawFrame, Redirect, Role, WireError,
};

/// The uplink task: connect, announce interest, relay, reconnect with backoff.
pub(super) async fn run_uplink(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    ctrl_rx: mpsc::Receiver<Outbound>,
    data_rx: mpsc::Receiver<Outbound>,
    cancel: CancellationToken,
) {
    let limits = shared.cfg.limits.clone();
    let configured = shared.cfg.node.uplink.clone().unwrap_or_default();
    let mut target = configured.clone();
    // A redirect's delay replaces the backoff before the next attempt.
    let mut redirect_delay: Option<Duration> = None;
    // The worker whose session or handshake failed last, and when.
    let mut lost: Option<(String, Instant)> = None;
    let server_name = shared.cfg.node.uplink_server_name.clone();
    let mut state = ReliableState::new(
        limits.max_inflight as usize,
        Duration::from_millis(limits.ack_timeout_ms),
        Duration::from_millis(limits.uplink_settle_ms),
        shared.metrics.clone(),
    );
    let (acks_tx, acks_rx) = session::ack_channel(limits.max_inflight as usize);
    let mut queues = session::ReliableQueues {
        ctrl: ctrl_rx,
        data: data_rx,
        acks: acks_rx,
    };
    let mut dedup = DedupWindow::new(limits.dedup_window);
    let mut backoff = session::backoff::Backoff::new(
        limits.reconnect_initial_backoff(),
        limits.reconnect_max_backoff(),
    );
    let wcfg = writer_config(&shared);
    let mut attempt: u64 = 0;
    let mut sessions: u64 = 0;
    while !cancel.is_cancelled() {
        if let Some(d) = redirect_delay.take() {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(d) => {}
            }
        } else if attempt > 0 {
            shared.metrics.uplink_reconnects_total.inc();
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
        attempt += 1;
        let conn = match connect_uplink(&shared, &endpoint, &target, &server_name).await {
            Ok(c) => c,
            Err(e) => {
                debug!(uplink = %target, error = %e, "uplink connect failed");
                lost = Some((target.clone(), Instant::now()));
                target = shared.fleet.next_target(&configured, Some(&target));
                continue;
            }
        };
        let (mut send, recv, decoder, welcome) = match open_session(
            &conn,
            connect_frame(&shared),
            limits.max_frame_size,
        )
        .await
        {
            Ok(s) => s,
            Err(SessionError::Redirected(r)) => {
                shared.fleet.in_row.fetch_add(1, Ordering::Relaxed);
                let just_lost = lost.as_ref().is_some_and(|(a, at)| {
                    *a == r.addr && at.elapsed() < defaults::FLEET_LOST_WORKER_MEMORY
                });
                if just_lost {
                    // The worker that sent it has not yet noticed that one die.
                    info!(from = %target, to = %r.addr, "redirect to the worker just lost; trying another");
                    target = shared.fleet.next_target(&configured, Some(&r.addr));
                } else {
                    info!(from = %target, to = %r.addr, reason = %r.reason, "redirected");
                    shared.metrics.fleet.redirects_followed_total.inc();
                    target = r.addr;
                    redirect_delay = Some(Duration::from_millis(r.delay_ms.into()));
                }
                continue;
            }
            Err(e) => {
                warn!(uplink = %target, error = %e, "uplink session refused");
                target = shared.fleet.next_target(&configured, Some(&target));
                continue;
            }
        };
        backoff.reset();
        state.window = (welcome.max_inflight as usize).max(1);
        shared.uplink_up.store(true, Ordering::Relaxed);
        shared
            .metrics
            .connections_open
            .with_label_values(&["uplink"])
            .inc();
        info!(uplink = %target, "uplink connected");
        let bridge_id = welcome.node_id;
        shared.fleet.connected_to(Some(bridge_id), &shared.metrics);
        shared
            .gossip
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
            let mut r = pubsub::relay_mut(&shared);
            let held = r.held(UPLINK_LINK);
            r.unsubscribe(UPLINK_LINK, &held);
            r.set_unknown(UPLINK_LINK, true);
            while queues.ctrl.try_recv().is_ok() {}
            session::interest::snapshot_frames(&r.told(UPLINK_LINK))
        };
        let settle = Settle::default();
        let mut ok = true;
        for f in announce.into_iter().chain(rpc::all_store_frames(&shared)) {
            if send.write_all(&f).await.is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            let session_cancel = CancellationToken::new();
            let writer = async {
                let r = session::run_reliable_writer(
                    &mut send,
                    &mut state,
                    &mut queues,
                    &session_cancel,
                    &wcfg,
                )
                .await;
                conn.close(0u32.into(), b"uplink writer ended");
                r
            };
            let reader = async {
                let r = uplink_reader(
                    &shared,
                    recv,
                    decoder,
                    &mut dedup,
                    &acks_tx,
                    &ThisSession {
                        bridge_id,
                        settle: &settle,
                    },
                )
                .await;
                session_cancel.cancel();
                r
            };
            let settled = async {
                if let Some(t) = settle_until {
                    tokio::time::sleep_until(t.into()).await;
                }
                settle.mark(&shared, Settle::SETTLED);
            };
            let stop = async {
                cancel.cancelled().await;
                session_cancel.cancel();
                conn.close((ErrorCode::ShuttingDown as u32).into(), b"shutting down");
            };
            let (w, r) = tokio::select! {
                (w, r, ()) = async { tokio::join!(writer, reader, settled) } => (w, r),
                _ = stop => (Ok(()), Ok(())),
            };
            debug!(writer = ?w.err(), reader = ?r.err(), "uplink session ended");
        }
        shared
            .metrics
            .connections_open
            .with_label_values(&["uplink"])
            .dec();
        shared.uplink_up.store(false, Ordering::Relaxed);
        shared.fleet.connected_to(None, &shared.metrics);
        shared.gossip.send(gossip::Cmd::PeerDown(bridge_id, None));
        rpc::uplink_lost(&shared);
        let redirect = shared
            .fleet
            .redirect
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match redirect {
            Some(r) => {
                info!(from = %target, to = %r.addr, reason = %r.reason, unacked = state.unacked(), "redirected; moving");
                shared.fleet.in_row.fetch_add(1, Ordering::Relaxed);
                shared.metrics.fleet.redirects_followed_total.inc();
                target = r.addr;
                redirect_delay = Some(Duration::from_millis(r.delay_ms.into()));
                backoff.reset();
            }
            None => {
                warn!(uplink = %target, unacked = state.unacked(), "uplink lost; reconnecting");
                lost = Some((target.clone(), Instant::now()));
                target = shared.fleet.next_target(&configured, Some(&target));
            }
        }
    }
}

fn connect_frame(shared: &Shared) -> Connect {
    Connect {
        versions: vec![wire::PROTOCOL_VERSION],
        node_id: shared.node_id,
        realm: shared.realm.clone(),
        cluster: shared.cluster.clone(),
        role: Role::Node,
        capabilities: ["pubsub".to_string(), "qos1".to_string()]
            .into_iter()
            .chain(shared.fleet.capability())
            .collect(),
        max_frame_size: shared.cfg.limits.max_frame_size,
        correlation_id: 1,
    }
}

async fn connect_uplink(
    _shared: &Shared,
    endpoint: &Endpoint,
    target: &str,
    server_name: &str,
) -> anyhow::Result<Connection> {
    let addr = tokio::net::lookup_host(target)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{target} resolved to no address"))?;
    let conn = tokio::time::timeout(
        defaults::UPLINK_CONNECT_TIMEOUT,
        endpoint.connect(addr, server_name)?,
    )
    .await??;
    Ok(conn)
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
    fn mark(&self, shared: &Shared, bit: u8) {
        let now = self.0.fetch_or(bit, Ordering::AcqRel) | bit;
        if now == Self::SYNCED | Self::SETTLED {
            pubsub::relay_mut(shared).set_unknown(UPLINK_LINK, false);
        }
    }
}

/// What the uplink reader knows of its session.
#[derive(Clone, Copy)]
struct ThisSession<'a> {
    bridge_id: NodeId,
    settle: &'a Settle,
}

/// Reads what the bridge sends: publishes for local subscribers, acknowledgements
/// of our publishes, and the realm's interest.
async fn uplink_reader(
    shared: &Arc<Shared>,
    mut recv: RecvStream,
    mut decoder: FrameDecoder,
    dedup: &mut DedupWindow,
    acks_tx: &mpsc::Sender<PubAck>,
    this: &ThisSession<'_>,
) -> Result<(), SessionError> {
    let mut link = UplinkLink {
        shared,
        up: shared
            .uplink
            .as_ref()
            .expect("uplink reader runs only with an uplink"),
        dedup,
        acks_tx,
        this: *this,
        ctx: ReadCtx::new(),
        slow: Duration::from_millis(shared.cfg.limits.slow_consumer_timeout_ms),
    };
    read_loop(&mut recv, &mut decoder, Some(&shared.metrics), &mut link)
        .await
        .into_session()
}

/// The uplink's frame handler.
struct UplinkLink<'a> {
    shared: &'a Arc<Shared>,
    up: &'a super::UplinkTx,
    dedup: &'a mut DedupWindow,
    acks_tx: &'a mpsc::Sender<PubAck>,
    this: ThisSession<'a>,
    ctx: ReadCtx,
    slow: Duration,
}

impl FrameHandler for UplinkLink<'_> {
    async fn on_frame(&mut self, raw: &RawFrame) -> Result<Flow, Fatal> {
        let UplinkLink {
            shared,
            up,
            dedup,
            acks_tx,
            this,
            ctx,
            slow,
        } = self;
        let (shared, up, acks_tx, slow) = (*shared, *up, *acks_tx, *slow);
        let ThisSession { bridge_id, settle } = *this;
        let metrics = &shared.metrics;
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
                    pubsub::forward(shared, UPLINK_LINK, &raw.bytes, &view, ctx, slow, None).await;
                } else {
                    metrics.messages_deduplicated_total.inc();
                }
                if reliable {
                    let _ = up.ctrl.try_send(Outbound::Ack(view.message_id));
                }
            }
            Some(MessageType::PubAck) => match raw.decode() {
                Ok(Frame::PubAck(a)) => {
                    let _ = acks_tx.try_send(a);
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
                if let Err(e) = pubsub::change_interest(shared, UPLINK_LINK, &patterns, add) {
                    // Too much interest to hold: treat it as unknown for the rest of the
                    // session (QoS 1 still goes up; the bridge routes it).
                    metrics.interest_refused_total.inc();
                    warn!(error = %e, "bridge interest refused; routing QoS 1 up regardless");
                    pubsub::relay_mut(shared).set_unknown(UPLINK_LINK, true);
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
                        Some(corr) => rpc::escalation_answered(
                            shared,
                            corr,
                            Err(format!("bridge error {}: {}", e.code, e.message)),
                        ),
                        None => {
                            warn!(code = e.code, message = %e.message, "bridge reported an error")
                        }
                    }
                }
            }
            Some(MessageType::Call) => match raw.decode() {
                Ok(Frame::Call(c)) => rpc::routed_call(shared, rpc::Back::Uplink, c, true),
                _ => metrics.protocol_error(ErrorCode::MalformedBody.as_str()),
            },
            Some(MessageType::Reply) => match raw.decode() {
                Ok(Frame::Reply(r)) => rpc::reply_arrived(shared, rpc::UPLINK_LINK, r),
                _ => metrics.protocol_error(ErrorCode::MalformedBody.as_str()),
            },
            Some(MessageType::FindValueReply) => match raw.decode() {
                Ok(Frame::FindValueReply(r)) => {
                    rpc::escalation_answered(shared, r.correlation_id, Ok(r))
                }
                _ => metrics.protocol_error(ErrorCode::MalformedBody.as_str()),
            },
            Some(MessageType::StoreAck) => {}
            Some(MessageType::SubAck) => {
                if let Ok(Frame::SubAck(a)) = raw.decode() {
                    if a.correlation_id == session::interest::INTEREST_SYNC {
                        settle.mark(shared, Settle::SYNCED);
                    }
                }
            }
            Some(MessageType::Pong) => {}
            Some(MessageType::FleetView) => match raw.decode() {
                Ok(Frame::FleetView(v)) if v.sender == bridge_id => {
                    shared.fleet.on_view(v, Some(metrics))
                }
                _ => metrics.protocol_error(ErrorCode::MalformedBody.as_str()),
            },
            Some(MessageType::Redirect) => match raw.decode() {
                Ok(Frame::Redirect(r)) => {
                    *shared
                        .fleet
                        .redirect
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
                    return Ok(Flow::Stop);
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
                if let Err((code, msg)) = gossip::on_frame(shared, bridge_id, raw) {
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
    up: &super::UplinkTx,
    metrics: &crate::metrics::Metrics,
    e: &WireError,
    corr: Option<u64>,
) {
    metrics.protocol_error(e.code().as_str());
    let f = session::error_frame(e.code(), e.to_string(), corr);
    let _ = up.ctrl.try_send(Outbound::Frame(f));
}

/// The node's side of a bridge fleet: the directory of workers its bridge sent, the
/// redirect to follow, and what `/fleet` and `macula_fleet_uplink_is_owner` report.
pub(super) struct UplinkFleet {
    realm: String,
    cluster: String,
    /// Members of the fleet, as last announced by the bridge (`None`: no fleet).
    members: ArcSwapOption<Vec<FleetMember>>,
    /// The owner of this node's cluster according to `members`.
    owner: ArcSwapOption<FleetMember>,
    /// The worker the uplink is connected to.
    connected: ArcSwapOption<NodeId>,
    /// A redirect received during a session, followed when the session has ended.
    redirect: Mutex<Option<Redirect>>,
    /// Redirects followed since the last session that was accepted.
    in_row: AtomicU32,
    /// `/fleet` as JSON.
    pub(super) json: Arc<ArcSwap<serde_json::Value>>,
}

impl UplinkFleet {
    pub(super) fn new(realm: &str, cluster: &str) -> UplinkFleet {
        let f = UplinkFleet {
            realm: realm.to_string(),
            cluster: cluster.to_string(),
            members: ArcSwapOption::empty(),
            owner: ArcSwapOption::empty(),
            connected: ArcSwapOption::empty(),
            redirect: Mutex::new(None),
            in_row: AtomicU32::new(0),
            json: Arc::new(ArcSwap::from_pointee(serde_json::Value::Null)),
        };
        f.publish(None);
        f
    }

    /// The `redirects=N` capability of the next `connect`, when redirects were followed.
    fn capability(&self) -> Option<String> {
        let n = self.in_row.load(Ordering::Relaxed);
        (n > 0).then(|| format!("{}{n}", crate::fleet::CAP_REDIRECTS))
    }

    /// A directory arrived from the bridge: the owner is recomputed.
    fn on_view(&self, view: FleetView, metrics: Option<&crate::metrics::Metrics>) {
        let owners: Vec<Worker> = view
            .members
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .map(|m| Worker {
                id: m.id,
                weight: m.weight,
            })
            .collect();
        let owner = Placement::new(&owners)
            .owner(cluster_key(&self.realm, &self.cluster))
            .and_then(|id| view.members.iter().find(|m| m.id == id).cloned());
        self.owner.store(owner.map(Arc::new));
        self.members.store(Some(Arc::new(view.members)));
        self.publish(metrics);
    }

    fn connected_to(&self, bridge: Option<NodeId>, metrics: &crate::metrics::Metrics) {
        if bridge.is_some() {
            self.in_row.store(0, Ordering::Relaxed);
        }
        self.connected.store(bridge.map(Arc::new));
        self.publish(Some(metrics));
    }

    fn publish(&self, metrics: Option<&crate::metrics::Metrics>) {
        let hex = crate::state::hex_id;
        let connected = self.connected.load_full();
        let owner = self.owner.load_full();
        let is_owner = match (&connected, &owner, self.members.load().is_some()) {
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
            "owner": owner.as_deref().map(|o| hex(&o.id)),
            "owner_addr": owner.as_deref().map(|o| o.addr.clone()),
            "is_owner": is_owner,
            "members": self.members.load().as_deref().map_or(0, Vec::len),
        })));
    }

    /// Where to connect next: the owner of this node's cluster when nothing failed
    /// (`avoid` is `None`); after a failure (`avoid`: the worker just lost or unreachable),
    /// the next worker of the directory after it, so repeated failures go round every
    /// worker; without a directory, the configured uplink.
    fn next_target(&self, configured: &str, avoid: Option<&str>) -> String {
        if avoid.is_none() {
            if let Some(o) = self.owner.load().as_deref() {
                return o.addr.clone();
            }
        }
        let members = self.members.load();
        let Some(members) = members.as_deref() else {
            return configured.to_string();
        };
        let mut live: Vec<&str> = members
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .map(|m| m.addr.as_str())
            .collect();
        live.sort_unstable();
        let owner = self.owner.load().as_deref().map(|o| o.addr.clone());
        let after = avoid.and_then(|a| live.iter().position(|x| *x == a));
        let pick = match after {
            // Not a member (a seed, or the configured uplink): the owner first.
            None if avoid.is_some() && owner.is_some() => return owner.unwrap_or_default(),
            Some(i) => live
                .iter()
                .cycle()
                .skip(i + 1)
                .take(live.len())
                .find(|x| Some(**x) != avoid),
            None => live.first(),
        };
        pick.map_or_else(|| configured.to_string(), |x| x.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(b: u8, status: MemberStatus) -> FleetMember {
        FleetMember {
            id: [b; 32],
            addr: format!("10.0.0.{b}:9443"),
            weight: 100,
            incarnation: 1,
            status,
        }
    }

    fn fleet_with(members: Vec<FleetMember>) -> UplinkFleet {
        let f = UplinkFleet::new("io.macula", "a");
        f.on_view(
            FleetView {
                fleet: "f".into(),
                config: 0,
                sender: [1; 32],
                members,
            },
            None,
        );
        f
    }

    #[test]
    fn the_owner_is_tried_first_then_the_others_in_turn() {
        let f = fleet_with(vec![
            member(1, MemberStatus::Alive),
            member(2, MemberStatus::Alive),
            member(3, MemberStatus::Alive),
        ]);
        let owner = f.owner.load_full().expect("an owner").addr.clone();
        assert_eq!(f.next_target("seed:1", None), owner);
        // The owner just failed: every other worker is tried before it comes round again.
        let mut seen = vec![owner.clone()];
        let mut avoid = owner.clone();
        for _ in 0..2 {
            let next = f.next_target("seed:1", Some(&avoid));
            assert!(!seen.contains(&next), "{next} twice");
            seen.push(next.clone());
            avoid = next;
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn dead_and_draining_workers_own_nothing_and_no_directory_means_the_seed() {
        assert_eq!(
            UplinkFleet::new("io.macula", "a").next_target("seed:1", None),
            "seed:1"
        );
        let f = fleet_with(vec![
            member(1, MemberStatus::Dead),
            member(2, MemberStatus::Draining),
            member(3, MemberStatus::Alive),
        ]);
        assert_eq!(f.next_target("seed:1", None), "10.0.0.3:9443");
        assert_eq!(f.next_target("seed:1", Some("10.0.0.3:9443")), "seed:1");
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
