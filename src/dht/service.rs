//! The DHT service: binds the pure Kademlia core ([`RoutingTable`], [`Lookup`],
//! [`RecordStore`]) to a transport, tokio timers and tasks. Source: Maymounkov & Mazières,
//! *Kademlia* (IPTPS 2002, "the paper"); Macula design in `docs/DISCOVERY.md` and
//! `docs/DHT.md`; wire semantics in `docs/PROTOCOL.md` §5.16–§5.21 and §12.
//!
//! Shape: the node's mesh code owns the QUIC links. It hands the service every DHT frame it
//! receives — queries to [`DhtService::handle_query`] (whose answer it sends back on the same
//! link), replies to [`DhtService::handle_reply`] — and implements [`DhtTransport`] to carry
//! the service's own queries. The service never touches a socket and never blocks.
//!
//! - **Correlation** (§12): every query carries a correlation id unique among this service's
//!   queries in flight; a reply is routed by that id to the task waiting for it. A reply
//!   whose id matches nothing (late, duplicated or forged) is dropped and counted
//!   (`macula_dht_unknown_replies_total`, Macula v0.16 defect 3).
//! - **Timeouts**: each query waits at most [`DhtParams::query_timeout`] on the tokio clock,
//!   then fails (`macula_dht_query_failures_total`); its late reply counts as unknown.
//! - **Lookups** drive the sans-IO [`Lookup`] with up to alpha queries in flight at once (the
//!   paper §2.3; v0.16 defect 7 sent them one after another). Contacts whose query failed
//!   leave the routing table; responders are observed into it.
//! - **Records**: STORE at the k closest nodes in parallel; TTLs enforced on read by the
//!   [`RecordStore`]; own records re-published by [`DhtService::tick`] every
//!   `record_ttl / 2` until withdrawn.
//! - **Bounds** on remote input: the pending-query map (`max_pending`, a query beyond fails at
//!   once), the eviction-ping queue (one per bucket), and the pure core's own bounds (table
//!   256 × (k + 10) contacts, store [`super::store::MAX_RECORDS`] records, lookups 3k
//!   candidates).
//! - **Locks**: one `std::sync::Mutex` around the pure state, never held across `.await` nor
//!   while calling the transport.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, trace};

use super::id::{Id, Key, NodeId};
use super::lookup::{Action, Lookup, LookupKind, LookupParams, Outcome, Reply};
use super::store::{RecordStore, StoreError, StoreLimits};
use super::table::{Contact, Observe, RoutingTable, TableParams, BUCKETS};
use super::{Timestamp, ALPHA, K};
use crate::config::DhtConfig;
use crate::defaults;
use crate::metrics::Metrics;
use crate::wire::{
    ErrorCode, ErrorFrame, FindNode, FindNodeReply, FindValue, FindValueReply, Frame, Store,
    StoreAck, WireContact, WireRecord, MAX_CONTACTS, MAX_RECORDS,
};

/// Default bound of the DHT queries one service keeps in flight at once (lookups, STOREs and
/// eviction pings together): 4,096. A query beyond it fails at once, as if timed out. At
/// alpha = 3 per lookup and k = 20 STOREs per publish this allows hundreds of concurrent
/// operations while bounding the correlation map to about 4,096 × 100 bytes.
pub const MAX_PENDING_QUERIES: usize = 4_096;

/// How the service sends frames to peers. Implemented by the node over its mesh QUIC links
/// (tests: an in-memory network).
pub trait DhtTransport: Send + Sync + 'static {
    /// Queues `frame` toward `to`. Returns false when there is no way to reach `to` right now
    /// (the query then fails at once, as if timed out). Must not block.
    fn send(&self, to: &Contact, frame: Frame) -> bool;
}

/// Settings of a [`DhtService`]. Build with [`DhtParams::new`] (defaults) or
/// [`DhtParams::from_config`] and adjust fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhtParams {
    /// This node: its id (SHA-256 of its Ed25519 public key) and advertised QUIC address, sent
    /// as `sender` in every FIND_NODE / FIND_VALUE.
    pub own: Contact,
    /// Lifetime of the records this node publishes (ms precision; at most `max_record_ttl`
    /// and u32::MAX ms, larger is capped). Re-published every `record_ttl / 2`. Default
    /// [`defaults::DHT_RECORD_TTL_MS`] (300 s).
    pub record_ttl: Duration,
    /// How long one FIND_NODE / FIND_VALUE / STORE waits for its reply (ms precision).
    /// Default [`defaults::DHT_QUERY_TIMEOUT_MS`] (1 s).
    pub query_timeout: Duration,
    /// Longest TTL a peer's STORE may ask for; longer is refused with an `error`
    /// ([`ErrorCode::LimitExceeded`]). Default [`defaults::DHT_MAX_RECORD_TTL_MS`] (1 h).
    pub max_record_ttl: Duration,
    /// Bucket size, lookup result size and replication factor (the paper §2.2). Default
    /// [`K`] = 20; clamped to 1..=[`MAX_CONTACTS`] (64, the wire bound of a reply).
    pub k: usize,
    /// Queries in flight per lookup (the paper §2.3). Default [`ALPHA`] = 3; at least 1.
    pub alpha: usize,
    /// Queries in flight per service. Default [`MAX_PENDING_QUERIES`]; at least 1.
    pub max_pending: usize,
}

impl DhtParams {
    /// The defaults for the node `own` (see each field).
    pub fn new(own: Contact) -> Self {
        DhtParams {
            own,
            record_ttl: Duration::from_millis(defaults::DHT_RECORD_TTL_MS),
            query_timeout: Duration::from_millis(defaults::DHT_QUERY_TIMEOUT_MS),
            max_record_ttl: Duration::from_millis(defaults::DHT_MAX_RECORD_TTL_MS),
            k: K,
            alpha: ALPHA,
            max_pending: MAX_PENDING_QUERIES,
        }
    }

    /// The defaults with the `[dht]` section of the configuration applied (`record_ttl_ms`,
    /// `query_timeout_ms`, `max_record_ttl_ms`).
    pub fn from_config(own: Contact, cfg: &DhtConfig) -> Self {
        DhtParams {
            record_ttl: Duration::from_millis(cfg.record_ttl_ms),
            query_timeout: Duration::from_millis(cfg.query_timeout_ms),
            max_record_ttl: Duration::from_millis(cfg.max_record_ttl_ms),
            ..DhtParams::new(own)
        }
    }
}

/// A record found by [`DhtService::find_value`]: one publisher's value under the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRecord {
    /// The value bytes (at most 64 KiB).
    pub value: Bytes,
    /// Node id of the node that published it.
    pub publisher: NodeId,
    /// Remaining lifetime when it was read (ms precision; never zero, at most
    /// [`DhtParams::max_record_ttl`]).
    pub ttl: Duration,
}

/// The Kademlia service of one node: routing table, record store, the queries in flight and
/// the background work (re-publishing, eviction pings). `Send + Sync`; shared as
/// `Arc<DhtService>`. See the module doc.
pub struct DhtService {
    params: DhtParams,
    transport: Arc<dyn DhtTransport>,
    metrics: Arc<Metrics>,
    /// Origin of the pure core's [`Timestamp`]s (tokio clock, so tests can pause it).
    origin: Instant,
    state: Mutex<State>,
    /// Self-reference for spawning background tasks from `&self`.
    me: Weak<DhtService>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl DhtService {
    /// A service for `params.own` with an empty table and store. Queries go out through
    /// `transport`; counters and gauges are `metrics.rpc` (`macula_dht_*`).
    pub fn new(
        mut params: DhtParams,
        transport: Arc<dyn DhtTransport>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        params.k = params.k.clamp(1, MAX_CONTACTS);
        params.alpha = params.alpha.max(1);
        params.max_pending = params.max_pending.max(1);
        let wire_max = Duration::from_millis(u64::from(u32::MAX));
        params.max_record_ttl = params.max_record_ttl.min(wire_max);
        params.record_ttl = params.record_ttl.min(params.max_record_ttl);
        let own = params.own.id;
        let table = RoutingTable::with_params(
            own,
            TableParams {
                k: params.k,
                ..TableParams::default()
            },
        );
        let store = RecordStore::with_limits(
            own,
            StoreLimits {
                max_ttl_ms: millis(params.max_record_ttl),
                ..StoreLimits::default()
            },
        );
        Arc::new_cyclic(|me| DhtService {
            params,
            transport,
            metrics,
            origin: Instant::now(),
            state: Mutex::new(State {
                table,
                store,
                pending: HashMap::new(),
                next_cid: rand::random::<u64>() >> 1,
                pings: VecDeque::new(),
                names: HashMap::new(),
            }),
            me: me.clone(),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
        })
    }

    /// This node's contact.
    pub fn own(&self) -> Contact {
        self.params.own
    }

    /// The settings in use (after clamping).
    pub fn params(&self) -> &DhtParams {
        &self.params
    }

    /// Answers a query from a peer: `find_node` → `find_node_reply` with the k closest
    /// contacts (the requester left out); `find_value` → `find_value_reply` with the unexpired
    /// records under the key (remaining `ttl_ms`), or the k closest contacts when there are
    /// none; `store` → `store_ack`, or an `error` carrying the correlation id when refused
    /// (TTL above `max_record_ttl` → [`ErrorCode::LimitExceeded`], counted
    /// `store_refused("ttl")`; store or key full → `LimitExceeded`, `store_refused("full")`).
    /// A `store` with `ttl_ms = 0` removes that publisher's record under the key and is
    /// acknowledged (withdraw). A `store` naming this node as publisher is declined
    /// (`stored: false`, `store_refused("invalid")`): only this node publishes its records.
    ///
    /// `from` is the authenticated peer the frame came on (a mesh link); it is observed into
    /// the routing table (the paper §2.2). `None` (e.g. a bridge link): nothing is observed.
    /// Returns the frame to send back on the same link, `None` for frames that are not DHT
    /// queries.
    pub fn handle_query(&self, from: Option<&Contact>, frame: &Frame) -> Option<Frame> {
        self.handle_query_as(from.map(|c| c.id), from, frame)
    }

    /// [`DhtService::handle_query`] for a frame that came on a link authenticated as `peer`
    /// (a mesh link: the id it proved, PROTOCOL §7a), whether or not the frame names a
    /// contact to observe. A `store` from `peer` must name `peer` as its publisher (else
    /// `MALFORMED_BODY`, `store_refused("invalid")`): a peer's quota share in the record
    /// store (`dht::store`) cannot be multiplied by claiming other publishers.
    pub fn handle_query_as(
        &self,
        peer: Option<Id>,
        from: Option<&Contact>,
        frame: &Frame,
    ) -> Option<Frame> {
        let now = self.now();
        let mut st = self.state();
        if let Some(c) = from {
            self.observe_locked(&mut st, *c, now);
        }
        let reply = match frame {
            Frame::FindNode(q) => Frame::FindNodeReply(FindNodeReply {
                correlation_id: q.correlation_id,
                nodes: self.closest_wire(&st.table, &Id::from_bytes(q.target), &q.sender),
            }),
            Frame::FindValue(q) => {
                let key = Id::from_bytes(q.key);
                let values: Vec<WireRecord> = st
                    .store
                    .get(&key, now)
                    .take(MAX_RECORDS)
                    .map(|r| WireRecord {
                        value: Bytes::copy_from_slice(&r.value),
                        publisher: *r.publisher.as_bytes(),
                        ttl_ms: u32::try_from(r.expires_at.millis_since(now)).unwrap_or(u32::MAX),
                    })
                    .collect();
                let nodes = if values.is_empty() {
                    self.closest_wire(&st.table, &key, &q.sender)
                } else {
                    Vec::new()
                };
                Frame::FindValueReply(FindValueReply {
                    correlation_id: q.correlation_id,
                    values,
                    nodes,
                    depth: 0,
                })
            }
            Frame::Store(q) => self.store_locked(&mut st, peer, q, now),
            _ => return None,
        };
        Some(reply)
    }

    /// Routes a reply (`find_node_reply`, `find_value_reply`, `store_ack`, or an `error` with
    /// a correlation id) to the query waiting for it. Returns whether it matched. An unknown
    /// correlation id (late, duplicated, forged) is dropped and counted
    /// (`macula_dht_unknown_replies_total`); other frames return false uncounted.
    pub fn handle_reply(&self, frame: &Frame) -> bool {
        let cid = match frame {
            Frame::FindNodeReply(r) => r.correlation_id,
            Frame::FindValueReply(r) => r.correlation_id,
            Frame::StoreAck(r) => r.correlation_id,
            Frame::Error(ErrorFrame {
                correlation_id: Some(c),
                ..
            }) => *c,
            _ => return false,
        };
        let waiter = self.state().pending.remove(&cid);
        match waiter {
            Some(tx) => {
                // A closed receiver means the query was abandoned a moment ago; still ours.
                let _ = tx.send(frame.clone());
                true
            }
            None => {
                self.metrics.rpc.dht_unknown_replies_total.inc();
                trace!(
                    correlation_id = cid,
                    "dht reply with unknown correlation id dropped"
                );
                false
            }
        }
    }

    /// A mesh link to `contact` came up (an authenticated peer): observes it into the routing
    /// table. A full bucket queues a liveness ping of its oldest contact for the next
    /// [`tick`](Self::tick) (the paper §2.2, ping-before-evict).
    pub fn observe(&self, contact: Contact) {
        let now = self.now();
        let mut st = self.state();
        self.observe_locked(&mut st, contact, now);
    }

    /// A mesh link to `id` went down for good: forgets the contact (a cached newcomer takes
    /// its place).
    pub fn remove_contact(&self, id: &NodeId) {
        let now = self.now();
        let mut st = self.state();
        st.table.remove(id, now);
        st.pings.retain(|c| c.id != *id);
    }

    /// Joins the network: an iterative FIND_NODE for the own id through the contacts known
    /// (observe the seeds first), which fills the table with the nodes around us and makes
    /// them learn us (the paper §2.3, "joining").
    pub async fn bootstrap(&self) {
        let nodes = self.find_nodes(self.params.own.id).await;
        debug!(contacts = nodes.len(), "dht bootstrap done");
    }

    /// Iterative FIND_NODE (the paper §2.3): the at most k nodes closest to `target` that
    /// answered, closest first (never this node). Up to alpha queries in flight at once; each
    /// waits at most `query_timeout`.
    pub async fn find_nodes(&self, target: Id) -> Vec<Contact> {
        match self.lookup(target, LookupKind::FindNode).await.0 {
            Outcome::Nodes(nodes) => nodes,
            Outcome::Value { .. } => Vec::new(),
        }
    }

    /// Iterative FIND_VALUE (the paper §2.3) for `key`, merged with this node's own store:
    /// every unexpired record found, one per publisher (the longest remaining TTL wins),
    /// sorted by publisher id. Empty when nobody holds one. The lookup ends at the first
    /// reply carrying records; records under a key are stored at the same k closest nodes, so
    /// one holder has all publishers' records.
    pub async fn find_value(&self, key: Key) -> Vec<FoundRecord> {
        let now = self.now();
        let mut found: HashMap<NodeId, FoundRecord> = HashMap::new();
        let local: Vec<FoundRecord> = self
            .state()
            .store
            .get(&key, now)
            .map(|r| FoundRecord {
                value: Bytes::copy_from_slice(&r.value),
                publisher: r.publisher,
                ttl: Duration::from_millis(r.expires_at.millis_since(now)),
            })
            .collect();
        for r in local {
            merge(&mut found, r);
        }
        let (_, remote) = self.lookup(key, LookupKind::FindValue).await;
        for r in remote {
            merge(&mut found, r);
        }
        let mut out: Vec<FoundRecord> = found.into_values().collect();
        out.sort_by_key(|r| r.publisher);
        out
    }

    /// Publishes `value` under `key` with this node as publisher and TTL `record_ttl`: puts it
    /// in the own store, then STOREs it at the k closest nodes (found by FIND_NODE) in
    /// parallel. The record is remembered and re-published by [`tick`](Self::tick) every
    /// `record_ttl / 2` until [`withdraw`](Self::withdraw)n. Returns the STOREs acknowledged
    /// with `stored: true` (0..=k); 0 as well when the value is over 64 KiB (nothing stored).
    pub async fn publish(&self, key: Key, value: Bytes) -> usize {
        self.publish_as(key, value, None).await
    }

    /// [`publish`](Self::publish) of a provider record for procedure `name`: every STORE of
    /// it, re-publishes included, carries the name (PROTOCOL §5.18), so a receiver whose
    /// link to this node is bounded by a credential can check `register` of it
    /// (`docs/AUTH.md`, "Permissions"). A later `publish` of the key without a name drops it.
    pub async fn publish_named(&self, key: Key, value: Bytes, name: &str) -> usize {
        self.publish_as(key, value, Some(name.into())).await
    }

    async fn publish_as(&self, key: Key, value: Bytes, name: Option<Arc<str>>) -> usize {
        let now = self.now();
        let ttl_ms = millis(self.params.record_ttl);
        {
            let mut st = self.state();
            if let Err(e) = st.store.publish(key, value.to_vec(), ttl_ms, now) {
                debug!(key = ?key, error = %e, "dht publish refused by the own store");
                return 0;
            }
            match &name {
                Some(n) => st.names.insert(key, n.clone()),
                None => st.names.remove(&key),
            };
        }
        self.store_at_closest(key, Some(value), ttl_ms, name).await
    }

    /// Withdraws this node's record under `key`: forgets it (no more re-publishing) and sends
    /// STORE with `ttl_ms = 0` to the k closest nodes, which delete this publisher's record.
    /// Nodes that do not answer keep it until its TTL runs out.
    pub async fn withdraw(&self, key: Key) {
        let own = self.params.own.id;
        {
            let mut st = self.state();
            st.store.remove(&key, &own);
            st.names.remove(&key);
        }
        // A withdrawal needs no name: it is accepted whatever the credential permits.
        let acked = self
            .store_at_closest(key, Some(Bytes::new()), 0, None)
            .await;
        debug!(key = ?key, acked, "dht record withdrawn");
    }

    /// Every contact in the routing table (bucket 0 first, least recently seen first).
    pub fn contacts(&self) -> Vec<Contact> {
        self.state().table.iter().copied().collect()
    }

    /// Periodic work; call about every second. Deletes expired records; re-publishes the own
    /// records due (published `record_ttl / 2` ago or more, in a spawned task each: FIND_NODE
    /// then STORE at the k closest); sends the queued eviction pings (FIND_NODE for the own
    /// id to the oldest contact of a full bucket, in spawned tasks, reporting alive / dead to
    /// the table); updates the `macula_dht_records` and `macula_dht_contacts` gauges. Does
    /// nothing after [`shutdown`](Self::shutdown).
    pub async fn tick(&self) {
        if self.cancel.is_cancelled() {
            return;
        }
        let now = self.now();
        let ttl_ms = millis(self.params.record_ttl);
        let margin = ttl_ms - ttl_ms / 2;
        let (due, pings) = {
            let mut st = self.state();
            st.store.expire(now);
            let due = st.store.republish_due(now, margin);
            for r in &due {
                // Refresh locally now, so the record is not due again for record_ttl / 2.
                let _ = st.store.publish(r.key, r.value.clone(), ttl_ms, now);
            }
            let due: Vec<(Key, Option<Arc<str>>)> = due
                .into_iter()
                .map(|r| (r.key, st.names.get(&r.key).cloned()))
                .collect();
            let pings: Vec<Contact> = st.pings.drain(..).collect();
            self.metrics
                .rpc
                .records
                .set(i64::try_from(st.store.len()).unwrap_or(i64::MAX));
            self.metrics
                .rpc
                .contacts
                .set(i64::try_from(st.table.len()).unwrap_or(i64::MAX));
            (due, pings)
        };
        for (key, name) in due {
            self.spawn(move |me| async move {
                let acked = me.store_at_closest(key, None, ttl_ms, name).await;
                debug!(key = ?key, acked, "dht record re-published");
            });
        }
        for oldest in pings {
            self.spawn(move |me| async move {
                let own = me.params.own;
                let ping = me
                    .query(&oldest, |cid| {
                        Frame::FindNode(FindNode {
                            correlation_id: cid,
                            target: *own.id.as_bytes(),
                            sender: WireContact::from(&own),
                        })
                    })
                    .await;
                let alive = match ping {
                    // Our own limit, not the peer's fault: the table asks again later.
                    Err(QueryError::Overloaded) => return,
                    Ok(_) => true,
                    Err(QueryError::Unreachable | QueryError::Timeout) => false,
                };
                let now = me.now();
                let outcome = me.state().table.ping_result(&oldest.id, alive, now);
                debug!(peer.id = ?oldest.id, alive, ?outcome, "dht eviction ping");
            });
        }
    }

    /// Stops the background tasks (re-publishing, pings) and waits for them to end. Later
    /// [`tick`](Self::tick)s do nothing; queries of callers still running are unaffected.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

// ---- private helpers ----

/// The state behind the service's lock.
struct State {
    table: RoutingTable,
    store: RecordStore,
    /// Queries in flight by correlation id; at most `max_pending`.
    pending: HashMap<u64, oneshot::Sender<Frame>>,
    next_cid: u64,
    /// Oldest contacts of full buckets to ping at the next tick; at most one per bucket.
    pings: VecDeque<Contact>,
    /// The procedure names of own records published with one
    /// ([`DhtService::publish_named`]), sent with each of their STOREs; at most one per own
    /// record (removed on withdraw).
    names: HashMap<Key, Arc<str>>,
}

/// Why a query got no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryError {
    /// `max_pending` queries already in flight.
    Overloaded,
    /// The transport has no way to reach the peer.
    Unreachable,
    /// No reply within `query_timeout`.
    Timeout,
}

/// Removes a query's correlation entry when its future ends or is dropped (an abandoned
/// lookup query, a cancelled task), so the pending map never keeps dead entries.
struct PendingGuard<'a> {
    svc: &'a DhtService,
    cid: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.svc.state().pending.remove(&self.cid);
    }
}

impl DhtService {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the pure state consistent enough (every
        // mutation is a single call into the core), so keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Now as the pure core's timestamp: ms since the service was created (tokio clock).
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(millis(self.origin.elapsed()))
    }

    fn observe_locked(&self, st: &mut State, contact: Contact, now: Timestamp) {
        if let Observe::PingOldest { oldest, .. } = st.table.observe(contact, now) {
            if st.pings.len() < BUCKETS && !st.pings.iter().any(|c| c.id == oldest.id) {
                st.pings.push_back(oldest);
            }
        }
    }

    /// The k closest contacts to `target` as wire contacts, without the requester.
    fn closest_wire(
        &self,
        table: &RoutingTable,
        target: &Id,
        requester: &WireContact,
    ) -> Vec<WireContact> {
        let requester = Id::from_bytes(requester.node_id);
        table
            .closest(target, self.params.k + 1)
            .iter()
            .filter(|c| c.id != requester)
            .take(self.params.k)
            .map(WireContact::from)
            .collect()
    }

    fn store_locked(&self, st: &mut State, peer: Option<Id>, q: &Store, now: Timestamp) -> Frame {
        let key = Id::from_bytes(q.key);
        let publisher = Id::from_bytes(q.publisher);
        let ack = |stored| {
            Frame::StoreAck(StoreAck {
                correlation_id: q.correlation_id,
                stored,
            })
        };
        if publisher == self.params.own.id {
            self.metrics.rpc.store_refused("invalid");
            return ack(false);
        }
        // A mesh peer stores its own records only (publishers store at the k closest
        // themselves), so its quota share cannot be multiplied by naming other publishers.
        if peer.is_some_and(|p| p != publisher) {
            self.metrics.rpc.store_refused("invalid");
            return Frame::Error(ErrorFrame {
                code: ErrorCode::MalformedBody as u16,
                message: "a peer stores only the records it publishes itself".into(),
                correlation_id: Some(q.correlation_id),
            });
        }
        let ttl_ms = u64::from(q.ttl_ms);
        if ttl_ms == 0 {
            st.store.remove(&key, &publisher);
            return ack(true);
        }
        let max_ttl = millis(self.params.max_record_ttl);
        let refused = if ttl_ms > max_ttl {
            Err(StoreError::TtlTooLong {
                ttl_ms,
                max_ms: max_ttl,
            })
        } else {
            st.store.put(key, q.value.to_vec(), publisher, ttl_ms, now)
        };
        let Err(e) = refused else {
            return ack(true);
        };
        let (reason, code) = match e {
            StoreError::TtlTooLong { .. } => ("ttl", ErrorCode::LimitExceeded),
            StoreError::ValueTooLarge { .. } => ("too_large", ErrorCode::LimitExceeded),
            StoreError::KeyFull { .. } | StoreError::Full { .. } => {
                ("full", ErrorCode::LimitExceeded)
            }
            StoreError::ZeroTtl => ("invalid", ErrorCode::MalformedBody),
            StoreError::Quota(q) => {
                self.metrics
                    .quota
                    .refused(crate::metrics::quota::Table::Dht, &q);
                ("full", ErrorCode::LimitExceeded)
            }
        };
        self.metrics.rpc.store_refused(reason);
        debug!(key = ?key, reason, error = %e, "dht store refused");
        Frame::Error(ErrorFrame {
            code: code as u16,
            message: e.to_string(),
            correlation_id: Some(q.correlation_id),
        })
    }

    /// Sends one query built by `make(correlation_id)` to `to` and waits for its reply (at
    /// most `query_timeout`). `Ok` carries the reply frame, possibly an `error` (counted as a
    /// failure; the peer is alive all the same). A peer that answered is observed.
    async fn query(
        &self,
        to: &Contact,
        make: impl FnOnce(u64) -> Frame,
    ) -> Result<Frame, QueryError> {
        let (tx, rx) = oneshot::channel();
        let cid = {
            let mut st = self.state();
            if st.pending.len() >= self.params.max_pending {
                None
            } else {
                let mut cid = st.next_cid;
                while st.pending.contains_key(&cid) {
                    cid = cid.wrapping_add(1);
                }
                st.next_cid = cid.wrapping_add(1);
                st.pending.insert(cid, tx);
                Some(cid)
            }
        };
        let Some(cid) = cid else {
            self.metrics.rpc.dht_query_failures_total.inc();
            debug!(peer.id = ?to.id, "dht query refused: too many queries in flight");
            return Err(QueryError::Overloaded);
        };
        let _guard = PendingGuard { svc: self, cid };
        self.metrics.rpc.dht_queries_total.inc();
        if !self.transport.send(to, make(cid)) {
            self.metrics.rpc.dht_query_failures_total.inc();
            trace!(peer.id = ?to.id, "dht query failed: peer unreachable");
            return Err(QueryError::Unreachable);
        }
        match tokio::time::timeout(self.params.query_timeout, rx).await {
            Ok(Ok(frame)) => {
                if matches!(frame, Frame::Error(_)) {
                    self.metrics.rpc.dht_query_failures_total.inc();
                }
                self.observe(*to);
                Ok(frame)
            }
            // The sender went away without a reply (cannot happen while the entry is ours);
            // count it as a timeout.
            Ok(Err(_)) | Err(_) => {
                self.metrics.rpc.dht_query_failures_total.inc();
                trace!(peer.id = ?to.id, correlation_id = cid, "dht query timed out");
                Err(QueryError::Timeout)
            }
        }
    }

    /// One lookup query of the lookup's `lookup_cid`, returned with it for feeding back.
    async fn lookup_query(
        &self,
        to: Contact,
        target: Id,
        kind: LookupKind,
        lookup_cid: u64,
    ) -> (u64, Contact, Result<Frame, QueryError>) {
        let own = self.params.own;
        let result = self
            .query(&to, |cid| match kind {
                LookupKind::FindNode => Frame::FindNode(FindNode {
                    correlation_id: cid,
                    target: *target.as_bytes(),
                    sender: WireContact::from(&own),
                }),
                LookupKind::FindValue => Frame::FindValue(FindValue {
                    correlation_id: cid,
                    key: *target.as_bytes(),
                    sender: WireContact::from(&own),
                    path: Vec::new(),
                }),
            })
            .await;
        (lookup_cid, to, result)
    }

    fn lookup_params(&self) -> LookupParams {
        let k = self.params.k;
        LookupParams {
            alpha: self.params.alpha,
            k,
            // Each query future fails itself at `query_timeout` and is fed back through
            // `on_error`; the state machine's own timeout is only a backstop, set later so it
            // never frees a slot while the query still counts as in flight here.
            query_timeout_ms: millis(self.params.query_timeout)
                .saturating_mul(2)
                .saturating_add(1),
            max_candidates: 3 * k,
            max_queries: 10 * k,
        }
    }

    /// Drives one [`Lookup`] to its end: sends what `poll` asks (up to alpha in flight), feeds
    /// every reply or failure back, removes the contacts that failed from the table. Returns
    /// the outcome and, for FIND_VALUE, the records of the replies that carried some.
    async fn lookup(&self, target: Id, kind: LookupKind) -> (Outcome, Vec<FoundRecord>) {
        let seeds = self.state().table.closest(&target, self.params.k);
        let mut lookup = Lookup::new(
            self.params.own.id,
            target,
            kind,
            seeds,
            self.lookup_params(),
        );
        let max_ttl = millis(self.params.max_record_ttl);
        let mut records = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        // Failed queries whose peer is not to be removed from the table.
        let mut spared: Vec<NodeId> = Vec::new();
        let outcome = loop {
            let mut done = None;
            for action in lookup.poll(self.now()) {
                match action {
                    Action::Send { to, correlation_id } => {
                        in_flight.push(self.lookup_query(to, target, kind, correlation_id));
                    }
                    Action::Done(outcome) => done = Some(outcome),
                }
            }
            if let Some(outcome) = done {
                break outcome;
            }
            let Some((lcid, to, result)) = in_flight.next().await else {
                // Nothing of ours in flight but the lookup still waits: only possible if its
                // own (backstop) timer runs; sleep until then.
                if let Some(t) = lookup.next_timeout() {
                    let at = self.origin + Duration::from_millis(t.as_millis());
                    tokio::time::sleep_until(at).await;
                }
                continue;
            };
            let now = self.now();
            match result {
                Ok(Frame::FindNodeReply(r)) => {
                    lookup.on_reply(lcid, &to.id, Reply::Nodes(contacts(&r.nodes)), now);
                }
                Ok(Frame::FindValueReply(r)) => {
                    let before = records.len();
                    if kind == LookupKind::FindValue {
                        records.extend(r.values.iter().filter(|v| v.ttl_ms > 0).map(|v| {
                            FoundRecord {
                                value: v.value.clone(),
                                publisher: Id::from_bytes(v.publisher),
                                ttl: Duration::from_millis(u64::from(v.ttl_ms).min(max_ttl)),
                            }
                        }));
                    }
                    // The records are kept here; the state machine only needs to know a
                    // value was found.
                    let reply = if records.len() > before {
                        Reply::Value(Vec::new())
                    } else {
                        Reply::Nodes(contacts(&r.nodes))
                    };
                    lookup.on_reply(lcid, &to.id, reply, now);
                }
                // Not a usable answer (an `error`, a wrong frame type) or our own limit:
                // a failed query for the lookup, but the peer is not known dead.
                Ok(_) | Err(QueryError::Overloaded) => {
                    lookup.on_error(lcid);
                    spared.push(to.id);
                }
                Err(QueryError::Unreachable | QueryError::Timeout) => {
                    lookup.on_error(lcid);
                }
            }
        };
        // Queries still in flight are abandoned here: dropping them releases their
        // correlation ids.
        drop(in_flight);
        let now = self.now();
        let mut st = self.state();
        for c in lookup.failed().filter(|c| !spared.contains(&c.id)) {
            st.table.remove(&c.id, now);
            st.pings.retain(|p| p.id != c.id);
        }
        st.table.mark_lookup(&target, now);
        drop(st);
        let stats = lookup.stats();
        trace!(
            target = ?target,
            queries = stats.queries,
            rounds = stats.rounds,
            errors = stats.errors,
            "dht lookup done"
        );
        (outcome, records)
    }

    /// FIND_NODE(`key`), then STORE (`value`, `ttl_ms`, publisher = this node) at the nodes
    /// found, all in parallel. `value = None` (a re-publish) reads the own record after the
    /// lookup, so a record withdrawn or replaced meanwhile is not sent stale; nothing is sent
    /// when it is gone. `name`: the procedure the record advertises, sent in each STORE.
    /// Returns the acknowledgements with `stored: true`.
    async fn store_at_closest(
        &self,
        key: Key,
        value: Option<Bytes>,
        ttl_ms: u64,
        name: Option<Arc<str>>,
    ) -> usize {
        let nodes = self.find_nodes(key).await;
        let own = self.params.own.id;
        let value = match value {
            Some(v) => v,
            None => {
                let now = self.now();
                // `get` hides an expired record; the refresh in `tick` made it current.
                let current = self
                    .state()
                    .store
                    .get(&key, now)
                    .find(|r| r.publisher == own)
                    .map(|r| Bytes::copy_from_slice(&r.value));
                let Some(v) = current else {
                    return 0;
                };
                v
            }
        };
        let ttl_ms = u32::try_from(ttl_ms).unwrap_or(u32::MAX);
        let stores = nodes.iter().map(|c| {
            self.query(c, |cid| {
                Frame::Store(Store {
                    correlation_id: cid,
                    key: *key.as_bytes(),
                    value: value.clone(),
                    ttl_ms,
                    publisher: *own.as_bytes(),
                    name: name.as_deref().map(str::to_owned),
                })
            })
        });
        join_all(stores)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(Frame::StoreAck(StoreAck { stored: true, .. }))))
            .count()
    }

    /// Runs `work(self)` in a tracked background task that ends on
    /// [`shutdown`](Self::shutdown).
    fn spawn<F>(&self, work: impl FnOnce(Arc<DhtService>) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let cancel = self.cancel.clone();
        let fut = work(me);
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }
}

/// `d` in whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The valid contacts of a reply (a bad address is skipped).
fn contacts(wire: &[WireContact]) -> Vec<Contact> {
    wire.iter()
        .filter_map(|c| Contact::try_from(c).ok())
        .collect()
}

/// Keeps one record per publisher: the one with the longest remaining TTL.
fn merge(found: &mut HashMap<NodeId, FoundRecord>, r: FoundRecord) {
    match found.get(&r.publisher) {
        Some(old) if old.ttl >= r.ttl => {}
        _ => {
            found.insert(r.publisher, r);
        }
    }
}

#[cfg(test)]
mod tests;
