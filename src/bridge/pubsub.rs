//! Pub/sub at a bridge: the realm's relay core (`crate::relay`) bound to the links' queues —
//! routing a received publish with its QoS 1 countdown, applying interest changes and sending
//! each link its deltas in order, and the chain of bridges above (`bridge_path`) told to the
//! child bridges for loop detection (`docs/PROTOCOL.md` §5.29, §8a).

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::{lock, Realm, Realms};
use crate::metrics::quota::Table;
use crate::metrics::Metrics;
use crate::quota::{QuotaError, Tenant, Usage};
use crate::relay::{Delta, LinkId, Relay, RouteCache};
use crate::session::{close, AckTrack, Offer, Outbound, PeerTx, StallBudget};
use crate::wire::{ErrorCode, Frame, NodeId, Qos, RawFrame};

pub use crate::session::interest::PATTERNS_PER_FRAME;
pub(super) use crate::session::interest::{interest_frame, INTEREST_SYNC};

/// First process-local key handed to a link; the keys below are the realms' parent links.
pub(super) const FIRST_LINK_KEY: u64 = 1 << 16;

/// What relaying publishes and interest takes beyond the realm at hand: this bridge's id
/// (the head of its `bridge_path`), the route-table group of fleet peer links (counted
/// apart when relayed to), the metrics, and every realm (the subscriptions gauge sums them).
/// Built once by `bridge::start`; the child and parent links hold it.
pub(super) struct BridgePubSub {
    /// This bridge's id.
    pub(super) node_id: NodeId,
    /// The route-table group of fleet peer links ([`super::fleet::GROUP`]).
    pub(super) fleet_group: u32,
    /// The process's metrics.
    pub(super) metrics: Arc<Metrics>,
    /// Every realm of the bridge.
    pub(super) realms: Arc<Realms>,
}

/// Sends each link its interest delta (call it while holding the relay's write lock, so
/// deltas leave in order). A link whose control queue is full is closed as a slow consumer.
pub(super) fn tell(relay: &Relay<PeerTx>, deltas: &[Delta]) {
    for d in deltas {
        let Some(tx) = relay.target(d.link) else {
            continue;
        };
        for f in crate::session::interest::delta_frames(d) {
            if tx.ctrl.try_send(Outbound::Frame(f)).is_err() {
                close(&tx.conn, ErrorCode::SlowConsumer, "control queue full");
                break;
            }
        }
    }
}

impl BridgePubSub {
    /// This bridge's path for its child bridges: itself, then its ancestry (at most
    /// [`crate::wire::MAX_PATH`] ids).
    pub(super) fn own_path(&self, realm: &Realm) -> crate::wire::BridgePath {
        let mut path = vec![self.node_id];
        path.extend(lock(&realm.ancestry).iter().copied());
        path.truncate(crate::wire::MAX_PATH);
        crate::wire::BridgePath { path }
    }

    /// Tells every child bridge of `realm` this bridge's current path (its ancestry changed).
    pub(super) fn push_path(&self, realm: &Realm) {
        let frame = Frame::BridgePath(self.own_path(realm)).to_bytes();
        for ctrl in lock(&realm.child_bridges).values() {
            let _ = ctrl.try_send(Outbound::Frame(frame.clone()));
        }
    }
}

/// Write access to a realm's relay (a panic inside never leaves it half-changed: every
/// mutation completes before the guard drops).
pub(super) fn relay_mut(realm: &Realm) -> std::sync::RwLockWriteGuard<'_, Relay<PeerTx>> {
    realm.relay.write().unwrap_or_else(PoisonError::into_inner)
}

/// Read access to a realm's relay (the publish path).
pub(super) fn relay_ref(realm: &Realm) -> std::sync::RwLockReadGuard<'_, Relay<PeerTx>> {
    realm.relay.read().unwrap_or_else(PoisonError::into_inner)
}

impl BridgePubSub {
    /// Relays one publish received on link `me` of `realm` to every link the relay core routes
    /// it to, with a shared acknowledgement countdown for QoS 1 (`AckTrack`: `me` is acknowledged
    /// when every recipient has). A QoS 1 publish routed to the parent link while its session is
    /// down, or before its interest is known, is held: it is not acknowledged, so its origin
    /// keeps custody and sends it again. Nothing routed: `puback.no_route` (QoS 1).
    pub(super) async fn relay_publish(
        &self,
        realm: &Realm,
        me: &PeerTx,
        raw: &RawFrame,
        view: &crate::wire::PublishView<'_>,
        scratch: &mut RouteCache<PeerTx>,
        slow: Duration,
    ) {
        let metrics = &self.metrics;
        let reliable = view.qos == Qos::AtLeastOnce;
        let routes = {
            let relay = relay_ref(realm);
            scratch.routes(&relay, me.key, view.topic, reliable)
        };
        if routes.is_empty() {
            metrics.dropped("no_route");
            if reliable {
                let _ = me.ctrl.try_send(Outbound::NoRoute(view.message_id));
            }
            return;
        }
        let live = routes.iter().filter(|r| r.target.is_some()).count() as u32;
        let held = live < routes.len() as u32;
        // A held recipient is counted but never acknowledges: the origin resends.
        let track = reliable
            .then(|| AckTrack::new(view.message_id, live + u32::from(held), me.ctrl.clone()));
        if held {
            metrics.dropped("parent_down");
        }
        // One QoS 0 stall budget for the whole publish, however many consumers are full.
        let mut budget: Option<StallBudget> = None;
        for r in routes {
            let Some(tx) = &r.target else { continue };
            if raw.bytes.len() > tx.max_frame {
                // It can never be delivered on this link: count it, and do not make the origin
                // resend it forever.
                metrics.dropped("too_large");
                if let Some(t) = &track {
                    t.ack_one();
                }
                continue;
            }
            let item = match &track {
                Some(t) => Outbound::Tracked(raw.bytes.clone(), t.clone()),
                None => Outbound::Frame(raw.bytes.clone()),
            };
            let b = budget.get_or_insert_with(|| StallBudget::new(tx.qos0_stall));
            match tx.offer(item, reliable, slow, b, metrics).await {
                Offer::Queued => {
                    metrics.messages_relayed_total.inc();
                    if crate::router::group_of(tx.key) == self.fleet_group {
                        metrics.fleet.forwarded_publish.inc();
                    }
                }
                Offer::QueueFull => metrics.dropped("queue_full"),
                Offer::SlowConsumer => metrics.dropped("slow_consumer"),
                Offer::Closed | Offer::TooLarge => metrics.dropped("closed"),
            }
        }
    }

    /// Sets the interest a link holds, or drops it; sends the resulting deltas. Returns the
    /// number of patterns the link then holds. New patterns are charged to the link's tenant
    /// ([`super::rpc::Link::tenant`]; the parent and fleet peers are exempt) in patterns and
    /// bytes (the patterns' lengths); withdrawn ones are given back.
    ///
    /// Errors: [`InterestError`] (nothing applied), counted in `macula_quota_refused_total`
    /// for a quota.
    pub(super) fn change_interest(
        &self,
        realm: &Realm,
        link: LinkId,
        patterns: &[String],
        subscribe: bool,
    ) -> Result<usize, InterestError> {
        let tenant = lock(&realm.links)
            .get(&link)
            .map_or(Tenant::Exempt, |l| l.tenant);
        let held = {
            let mut r = relay_mut(realm);
            let mut quota = lock(&realm.interest_quota);
            let mut changed: Vec<&String> = patterns
                .iter()
                .filter(|p| r.holds(link, p) != subscribe)
                .collect();
            changed.sort_unstable();
            changed.dedup();
            let usage = Usage::new(changed.len(), changed.iter().map(|p| p.len()).sum());
            let (held, deltas) = if subscribe {
                if let Err(e) = quota.charge(link, tenant, usage) {
                    self.metrics.quota.refused(Table::Interest, &e);
                    return Err(e.into());
                }
                match r.subscribe(link, patterns) {
                    Ok(d) => d,
                    Err(e) => {
                        quota.release(link, usage);
                        return Err(e.into());
                    }
                }
            } else {
                let d = r.unsubscribe(link, patterns);
                quota.release(link, usage);
                (r.held_count(link), d)
            };
            drop(quota);
            tell(&r, &deltas);
            held
        };
        self.count_subscriptions();
        Ok(held)
    }

    /// Removes a link from its realm's relay and tells the others what changed; its
    /// patterns leave its tenant's quota and `macula_subscriptions`.
    pub(super) fn remove_link(&self, realm: &Realm, key: LinkId) {
        {
            let mut r = relay_mut(realm);
            let deltas = r.remove_link(key);
            lock(&realm.interest_quota).release_link(key);
            tell(&r, &deltas);
        }
        self.count_subscriptions();
    }

    /// Sets `macula_subscriptions` to the patterns held over all realms.
    fn count_subscriptions(&self) {
        self.metrics.subscriptions.set(
            self.realms
                .values()
                .map(|r| relay_ref(r).patterns() as i64)
                .sum(),
        );
    }
}

/// Why a link's `subscribe` was refused as a whole (answered `LIMIT_EXCEEDED`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum InterestError {
    /// The link's pattern bound (`limits.max_subscriptions_per_connection`).
    #[error(transparent)]
    Relay(#[from] crate::relay::RelayError),
    /// Its tenant's share, or the realm's total, of `quota.interest_*`.
    #[error(transparent)]
    Quota(#[from] QuotaError),
}
