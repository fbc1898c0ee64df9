//! Pub/sub at a node: the relay core (`crate::relay`) bound to the node's links — its
//! clients ([`LinkKind::Client`]), the other nodes of its cluster ([`LinkKind::Mesh`]), its
//! uplink ([`UPLINK_LINK`], [`LinkKind::Uplink`]) and the cluster's subscription registry
//! ([`REGISTRY_LINK`]). The rules are the relay's, written once for every level: a client's
//! publish goes to local subscribers, to the mesh peers whose clients want it, and up when
//! the rest of the realm wants it; a publish from a mesh peer or from the bridge reaches
//! local clients only.
//!
//! The uplink's sending half is not a [`PeerTx`] (its session changes under the reliable
//! writer's custody), so its relay target is always `None` and its queues are
//! [`PubSub::uplink`]: QoS 1 publishes routed there are taken into custody (acknowledged to
//! the client at once, retransmitted until the bridge acknowledges them), QoS 0 ones queued
//! or dropped. Until the bridge's interest snapshot of a session is complete, and through
//! the settle window after a reconnect, the uplink's interest is unknown and every QoS 1
//! publish goes up ([`crate::relay::Relay::set_unknown`]).
//!
//! The registry link has no connection: it is told the patterns the node's clients hold
//! (a pattern when its first holder appears and when its last leaves), which become the
//! node's entries in the replicated subscription registry (`gossip::sub_key`).

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;

use super::{gossip, UplinkTx};
use crate::metrics::Metrics;
use crate::relay::{Delta, LinkId, LinkKind, Relay, RouteCache};
use crate::wire::NodeId;
use tokio::sync::mpsc;

use crate::session::{
    self, interest, observe_latency, AckTrack, Offer, Outbound, PeerTx, StallBudget,
};
use crate::wire::PublishView;

pub(super) use super::rpc::UPLINK_LINK;

/// The relay link standing for the cluster's subscription registry (no connection; key 0 is
/// never handed to a connection).
pub(super) const REGISTRY_LINK: LinkId = 0;

/// The node's pub/sub: who holds which pattern on which link (clients, mesh peers, the
/// uplink, the registry) and what the relay routes where. It owns its state; the node's
/// links call it through their contexts.
pub(super) struct PubSub {
    relay: RwLock<Relay<PeerTx>>,
    /// The uplink's queues (the reliable writer's custody), when an uplink is configured.
    uplink: Option<UplinkTx>,
    /// The cluster's replicated store: the registry link's deltas become `$sub/` entries.
    gossip: Arc<gossip::GossipHandle>,
    /// This node's id in hex, the registry entries' member.
    me: Arc<str>,
    metrics: Arc<Metrics>,
}

impl PubSub {
    /// Pub/sub over `relay` (built with its registry and uplink links), routing up through
    /// `uplink` and registering patterns as node `node_id` in `gossip`.
    pub(super) fn new(
        relay: Relay<PeerTx>,
        uplink: Option<UplinkTx>,
        gossip: Arc<gossip::GossipHandle>,
        node_id: &NodeId,
        metrics: Arc<Metrics>,
    ) -> PubSub {
        PubSub {
            relay: RwLock::new(relay),
            uplink,
            gossip,
            me: crate::state::hex_id(node_id).into(),
            metrics,
        }
    }

    /// Write access to the node's relay.
    pub(super) fn relay_mut(&self) -> RwLockWriteGuard<'_, Relay<PeerTx>> {
        self.relay.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Read access to the node's relay (the publish path).
    pub(super) fn relay_ref(&self) -> RwLockReadGuard<'_, Relay<PeerTx>> {
        self.relay.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends each link its interest delta (call it while holding the relay's write lock, so
    /// deltas leave in order): the registry's become gossip updates, the uplink's go on its
    /// control queue, a mesh peer's on its own (a peer whose control queue is full is closed as
    /// a slow consumer).
    pub(super) fn tell(&self, relay: &Relay<PeerTx>, deltas: &[Delta]) {
        for d in deltas {
            match d.link {
                REGISTRY_LINK => self.registry(d),
                UPLINK_LINK => {
                    if let Some(up) = &self.uplink {
                        for f in interest::delta_frames(d) {
                            // A full control queue: this change is lost to the session, so
                            // the session ends and the next one announces the whole interest.
                            if up.ctrl.try_send(Outbound::Frame(f)).is_err() {
                                let (lost, wake) = &*up.interest_lost;
                                use std::sync::atomic::Ordering;
                                let connected = up.connected.load(Ordering::Acquire);
                                if !lost.swap(true, Ordering::AcqRel) && connected {
                                    self.metrics.uplink_interest_resyncs_total.inc();
                                    wake.notify_one();
                                }
                                break;
                            }
                        }
                    }
                }
                link => {
                    let Some(tx) = relay.target(link) else {
                        continue;
                    };
                    for f in interest::delta_frames(d) {
                        if tx.ctrl.try_send(Outbound::Frame(f)).is_err() {
                            session::close_slow_consumer(
                                &tx.conn,
                                &self.metrics,
                                "control queue full",
                            );
                            break;
                        }
                    }
                }
            }
        }
    }

    /// The node's entries in the replicated subscription registry.
    fn registry(&self, d: &Delta) {
        let me = &self.me;
        for p in &d.add {
            self.gossip.update(
                gossip::sub_key(p),
                crate::crdt::Op::SetAdd(me.to_string().into()),
            );
        }
        for p in &d.remove {
            self.gossip.update(
                gossip::sub_key(p),
                crate::crdt::Op::SetRemove(me.to_string().into()),
            );
        }
    }

    /// Adds a link and tells it the interest it can forward to.
    pub(super) fn add_link(&self, link: LinkId, kind: LinkKind, tx: Option<PeerTx>) {
        let mut r = self.relay_mut();
        let first = r.add_link(link, kind, tx.map(std::sync::Arc::new));
        self.tell(&r, &[first]);
    }

    /// A session with a mesh peer started on the peer's relay link `link` (held from an earlier
    /// session, or new). What the link held is dropped: the peer sends its whole interest again,
    /// and until the end of that snapshot (its `INTEREST_SYNC`, [`Self::mesh_synced`]) the link's
    /// interest is unknown, so QoS 1 publishes go to it whatever their topic. The peer is told
    /// our clients' interest as a snapshot ending in `INTEREST_SYNC` (`docs/PROTOCOL.md` §8a).
    pub(super) fn mesh_up(&self, link: LinkId, tx: PeerTx) {
        let mut r = self.relay_mut();
        let stale = r.remove_link(link);
        self.tell(&r, &stale);
        let first = r.add_link(link, LinkKind::Mesh, Some(std::sync::Arc::new(tx.clone())));
        r.set_unknown(link, true);
        for f in interest::snapshot_frames(&first.add) {
            if tx.ctrl.try_send(Outbound::Frame(f)).is_err() {
                session::close_slow_consumer(&tx.conn, &self.metrics, "control queue full");
                break;
            }
        }
        self.metrics.subscriptions.set(r.patterns() as i64);
    }

    /// The peer on mesh link `link` has sent its whole interest: it is known from now on.
    pub(super) fn mesh_synced(&self, link: LinkId) {
        self.relay_mut().set_unknown(link, false);
    }

    /// The session of mesh link `link` ended: its interest is held (publishes it wants are
    /// routed to it with no target, so a QoS 1 one is never acknowledged and its publisher
    /// retransmits) until a new session takes the link over or the hold ends
    /// ([`super::mesh::MESH_HOLD`]). An unknown interest is not held: only known patterns are.
    pub(super) fn mesh_down(&self, link: LinkId) {
        let mut r = self.relay_mut();
        r.set_target(link, None);
        r.set_unknown(link, false);
    }

    /// Removes a link with its patterns and tells the others what changed.
    pub(super) fn remove_link(&self, link: LinkId) {
        let mut r = self.relay_mut();
        let deltas = r.remove_link(link);
        self.tell(&r, &deltas);
        self.metrics.subscriptions.set(r.patterns() as i64);
    }

    /// Applies a `subscribe` or `unsubscribe` from `link` and sends the resulting deltas.
    /// Returns how many patterns the link then holds.
    ///
    /// Errors: [`crate::relay::RelayError::LimitExceeded`] (nothing applied).
    pub(super) fn change_interest(
        &self,
        link: LinkId,
        patterns: &[String],
        subscribe: bool,
    ) -> Result<usize, crate::relay::RelayError> {
        let mut r = self.relay_mut();
        let (held, deltas) = if subscribe {
            r.subscribe(link, patterns)?
        } else {
            let d = r.unsubscribe(link, patterns);
            (r.held_count(link), d)
        };
        self.tell(&r, &deltas);
        self.metrics.subscriptions.set(r.patterns() as i64);
        Ok(held)
    }

    /// Forwards one publish frame received on link `from` wherever the relay routes it; drops
    /// are counted by reason. `upstream`: the control queue of the link it came from when that
    /// link is owed a chained acknowledgement (a client's QoS 1 publish); then each mesh peer
    /// routed to gets it tracked ([`Forwarded::track`]). A client's QoS 1 publish is
    /// acknowledged in `ids` when something took it, in `no_route` when nothing did
    /// (`docs/PROTOCOL.md` §8).
    pub(super) async fn forward(
        &self,
        from: LinkId,
        frame: &Bytes,
        view: &PublishView<'_>,
        ctx: &mut ReadCtx,
        slow: Duration,
        upstream: Option<&mpsc::Sender<Outbound>>,
    ) -> Forwarded {
        let metrics = &self.metrics;
        let reliable = view.qos == crate::wire::Qos::AtLeastOnce;
        let routes = {
            let relay = self.relay_ref();
            ctx.routes.routes(&relay, from, view.topic, reliable)
        };
        let mut out = Forwarded::default();
        // One QoS 0 stall budget for the whole publish, however many consumers are full.
        let mut budget: Option<StallBudget> = None;
        if reliable {
            if let Some(up) = upstream {
                let mesh = routes.iter().filter(|r| r.kind == LinkKind::Mesh).count() as u32;
                if mesh > 0 {
                    out.track = Some(AckTrack::new(view.message_id, mesh + 1, up.clone()));
                }
            }
        }
        for r in routes {
            if r.link == UPLINK_LINK {
                match self
                    .up(frame, view.message_id, reliable, slow, &mut budget)
                    .await
                {
                    Some(n) => out.now += n,
                    None => out.unacked = true,
                }
                continue;
            }
            let Some(tx) = &r.target else {
                // A mesh peer whose session is down, its interest held: a tracked publish is
                // never acknowledged by it, so the publisher retransmits.
                metrics.dropped("peer_down");
                continue;
            };
            if frame.len() > tx.max_frame {
                metrics.dropped("too_large");
                if let (LinkKind::Mesh, Some(t)) = (r.kind, &out.track) {
                    // Never deliverable there: not a reason to make the publisher resend forever.
                    t.ack_one();
                }
                continue;
            }
            let item = match (r.kind, &out.track) {
                (LinkKind::Mesh, Some(t)) => Outbound::Tracked(frame.clone(), t.clone()),
                _ => Outbound::Frame(frame.clone()),
            };
            let b = budget.get_or_insert_with(|| StallBudget::new(tx.qos0_stall));
            match tx.offer(item, reliable, slow, b, metrics).await {
                Offer::Queued => {
                    if r.kind == LinkKind::Client {
                        out.now += 1;
                        metrics.messages_delivered_total.inc();
                        observe_latency(metrics, view.ts_us, ctx.now_us);
                    } else {
                        if out.track.is_none() {
                            out.now += 1;
                        }
                        metrics.messages_relayed_total.inc();
                    }
                }
                Offer::QueueFull => metrics.dropped("queue_full"),
                Offer::SlowConsumer => metrics.dropped("slow_consumer"),
                Offer::Closed | Offer::TooLarge => metrics.dropped("closed"),
            }
        }
        out
    }

    /// Hands one publish to the uplink: QoS 1 into its custody, QoS 0 queued (waiting up to
    /// `limits.qos0_stall_ms` for room while the session is up) or dropped.
    /// `Some(1)` when taken, `Some(0)` when not (QoS 0, or the uplink is gone). A QoS 1
    /// publish that finds the custody queue full waits up to `slow` for room while the bridge
    /// session is up (the publisher is slowed, nothing is lost); while it is down, or past
    /// `slow`, it is not taken and `None` says to leave it unacknowledged: its publisher
    /// re-sends it (counted `dropped{reason="parent_down"}`, as a bridge does for its parent).
    /// So a bridge outage longer than the queue never blocks the client's session.
    async fn up(
        &self,
        frame: &Bytes,
        message_id: crate::wire::MessageId,
        reliable: bool,
        slow: Duration,
        budget: &mut Option<StallBudget>,
    ) -> Option<u64> {
        use tokio::sync::mpsc::error::TrySendError;
        let Some(up) = &self.uplink else {
            return Some(0);
        };
        let metrics = &self.metrics;
        if !reliable {
            // While the bridge session is down nothing drains the queue: no waiting then.
            let connected = up.connected.load(std::sync::atomic::Ordering::Relaxed);
            let mut down = StallBudget::new(Duration::ZERO);
            let b = if connected {
                budget.get_or_insert_with(|| StallBudget::new(up.qos0_stall))
            } else {
                &mut down
            };
            let item = Outbound::Frame(frame.clone());
            match crate::session::offer_best_effort(&up.data, item, b, &up.shedding, metrics).await
            {
                Offer::Queued => metrics.messages_relayed_total.inc(),
                _ => metrics.dropped("queue_full"),
            }
            return Some(0);
        }
        let custody = Outbound::Custody(message_id, frame.clone());
        let taken = match up.data.try_send(custody) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => return Some(0),
            Err(TrySendError::Full(_))
                if !up.connected.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                false
            }
            Err(TrySendError::Full(item)) => {
                matches!(
                    tokio::time::timeout(slow, up.data.send(item)).await,
                    Ok(Ok(()))
                )
            }
        };
        if taken {
            metrics.messages_relayed_total.inc();
            Some(1)
        } else {
            metrics.dropped("parent_down");
            None
        }
    }
}

/// Per-reader scratch state for the delivery path, reused across frames so the hot path
/// neither allocates nor reads the clock per message.
pub(super) struct ReadCtx {
    /// Recent routing results of this reader ([`RouteCache`]).
    routes: RouteCache<PeerTx>,
    /// Wall clock (µs since the Unix epoch) when the current chunk was received.
    pub(super) now_us: u64,
}

impl ReadCtx {
    pub(super) fn new() -> Self {
        ReadCtx {
            routes: RouteCache::new(),
            now_us: session::now_us(),
        }
    }
}

/// What became of one publish [`PubSub::forward`]ed.
#[derive(Debug, Default)]
pub(super) struct Forwarded {
    /// Recipients that took it at once: local clients whose queue it entered, the uplink when
    /// it took QoS 1 custody.
    pub(super) now: u64,
    /// For a QoS 1 publish sent across the mesh: the countdown of its acknowledgement (one
    /// share per mesh peer, one for this node). The caller acknowledges its own share with
    /// [`AckTrack::ack_one`] once it is done; the publisher is acknowledged when every mesh
    /// peer has acknowledged too, so a mesh link that dies never loses an acknowledged publish.
    pub(super) track: Option<std::sync::Arc<AckTrack>>,
    /// A QoS 1 publish the uplink could not take ([`PubSub::up`]): left unacknowledged, so
    /// its publisher re-sends it.
    pub(super) unacked: bool,
}
