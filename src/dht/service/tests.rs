//! Tests of the DHT service over an in-memory network of services on tokio's paused clock.

use std::collections::HashSet;
use std::net::SocketAddr;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_secs(60);

/// The in-memory network: delivers each frame to the addressed service after a small
/// latency (tokio tasks, paused clock), answers queries through `handle_query` and routes
/// the answer back through `handle_reply`. Frames to a dead node are lost.
#[derive(Default)]
struct NetInner {
    nodes: Mutex<HashMap<NodeId, Weak<DhtService>>>,
    dead: Mutex<HashSet<NodeId>>,
    /// Per querier: correlation ids of queries sent and neither answered nor older than
    /// the query timeout, with their send time.
    outstanding: Mutex<HashMap<NodeId, HashMap<u64, Instant>>>,
    /// Per querier: the most queries outstanding at once.
    max_outstanding: Mutex<HashMap<NodeId, usize>>,
    /// Every STORE sent: its key, TTL and name.
    stores: Mutex<Vec<(Key, u32, Option<String>)>>,
    tasks: TaskTracker,
}

impl NetInner {
    fn node(&self, id: &NodeId) -> Option<Arc<DhtService>> {
        self.nodes.lock().unwrap().get(id).and_then(Weak::upgrade)
    }

    fn is_dead(&self, id: &NodeId) -> bool {
        self.dead.lock().unwrap().contains(id)
    }

    fn sent(&self, from: NodeId, cid: u64) {
        let now = Instant::now();
        let mut out = self.outstanding.lock().unwrap();
        let mine = out.entry(from).or_default();
        mine.retain(|_, at| now.duration_since(*at) < TIMEOUT);
        mine.insert(cid, now);
        let n = mine.len();
        let mut max = self.max_outstanding.lock().unwrap();
        let m = max.entry(from).or_default();
        *m = (*m).max(n);
    }

    fn answered(&self, to: NodeId, cid: u64) {
        if let Some(mine) = self.outstanding.lock().unwrap().get_mut(&to) {
            mine.remove(&cid);
        }
    }
}

struct NetTransport {
    own: Contact,
    net: Arc<NetInner>,
}

fn query_cid(f: &Frame) -> Option<u64> {
    match f {
        Frame::FindNode(q) => Some(q.correlation_id),
        Frame::FindValue(q) => Some(q.correlation_id),
        Frame::Store(q) => Some(q.correlation_id),
        _ => None,
    }
}

fn reply_cid(f: &Frame) -> Option<u64> {
    match f {
        Frame::FindNodeReply(r) => Some(r.correlation_id),
        Frame::FindValueReply(r) => Some(r.correlation_id),
        Frame::StoreAck(r) => Some(r.correlation_id),
        Frame::Error(e) => e.correlation_id,
        _ => None,
    }
}

/// 2–20 ms one way, fixed per ordered pair.
fn latency(a: &NodeId, b: &NodeId) -> Duration {
    Duration::from_millis(2 + u64::from(a.0[0] ^ b.0[1]) % 19)
}

impl DhtTransport for NetTransport {
    fn send(&self, to: &Contact, frame: Frame) -> bool {
        let (from, to, net) = (self.own, *to, self.net.clone());
        if let Some(cid) = query_cid(&frame) {
            net.sent(from.id, cid);
        }
        if let Frame::Store(q) = &frame {
            let sent = (Id::from_bytes(q.key), q.ttl_ms, q.name.clone());
            net.stores.lock().unwrap().push(sent);
        }
        if net.is_dead(&to.id) {
            return true; // queued, then lost on the way
        }
        let tasks = net.tasks.clone();
        tasks.spawn(async move {
            tokio::time::sleep(latency(&from.id, &to.id)).await;
            let Some(peer) = net.node(&to.id) else { return };
            let Some(reply) = peer.handle_query(Some(&from), &frame) else {
                return;
            };
            tokio::time::sleep(latency(&to.id, &from.id)).await;
            if net.is_dead(&to.id) {
                return;
            }
            let Some(querier) = net.node(&from.id) else {
                return;
            };
            if let Some(cid) = reply_cid(&reply) {
                net.answered(from.id, cid);
            }
            querier.handle_reply(&reply);
        });
        true
    }
}

struct TestNet {
    inner: Arc<NetInner>,
    nodes: Vec<Arc<DhtService>>,
    metrics: Vec<Arc<Metrics>>,
}

fn contact(id: Id, i: usize) -> Contact {
    Contact {
        id,
        addr: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 9443)),
    }
}

impl TestNet {
    /// `n` services with random ids (seeded), not yet joined.
    fn new(n: usize, seed: u64) -> TestNet {
        let mut rng = StdRng::seed_from_u64(seed);
        let ids = (0..n).map(|_| Id::random(&mut rng)).collect();
        Self::with_ids(ids, |_| {})
    }

    fn with_ids(ids: Vec<Id>, tweak: impl Fn(&mut DhtParams)) -> TestNet {
        let inner = Arc::new(NetInner::default());
        let mut nodes = Vec::new();
        let mut metrics = Vec::new();
        for (i, id) in ids.into_iter().enumerate() {
            let own = contact(id, i);
            let mut p = DhtParams::new(own);
            p.query_timeout = TIMEOUT;
            p.record_ttl = TTL;
            tweak(&mut p);
            let m = Metrics::new();
            let t = Arc::new(NetTransport {
                own,
                net: inner.clone(),
            });
            let s = DhtService::new(p, t, m.clone());
            inner.nodes.lock().unwrap().insert(id, Arc::downgrade(&s));
            nodes.push(s);
            metrics.push(m);
        }
        TestNet {
            inner,
            nodes,
            metrics,
        }
    }

    /// Every node joins through node 0, one after another.
    async fn join(&self) {
        let seed = self.nodes[0].own();
        for s in &self.nodes[1..] {
            s.observe(seed);
            s.bootstrap().await;
        }
        self.settle().await;
    }

    /// Lets every frame in flight arrive or time out.
    async fn settle(&self) {
        tokio::time::sleep(3 * TIMEOUT).await;
    }

    fn kill(&self, id: NodeId) {
        self.inner.dead.lock().unwrap().insert(id);
    }

    fn index(&self, id: &NodeId) -> usize {
        self.nodes
            .iter()
            .position(|s| s.own().id == *id)
            .expect("a node of the network")
    }

    /// The true `n` nodes closest to `target` (live ones only), by brute force.
    fn true_closest(&self, target: &Id, n: usize, exclude: Option<NodeId>) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|s| s.own().id)
            .filter(|id| !self.inner.is_dead(id) && Some(*id) != exclude)
            .collect();
        ids.sort_by_key(|id| target.distance(id));
        ids.truncate(n);
        ids
    }

    fn max_outstanding(&self, id: &NodeId) -> usize {
        self.inner
            .max_outstanding
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    fn reset_outstanding(&self) {
        self.inner.outstanding.lock().unwrap().clear();
        self.inner.max_outstanding.lock().unwrap().clear();
    }

    fn failures(&self, i: usize) -> u64 {
        self.metrics[i].rpc.dht_query_failures_total.get()
    }
}

/// True when `s` holds an unexpired record of `publisher` under `key`.
fn holds(s: &DhtService, key: &Key, publisher: &NodeId) -> bool {
    let now = s.now();
    s.state()
        .store
        .get(key, now)
        .any(|r| r.publisher == *publisher)
}

fn key(name: &str) -> Key {
    Key::scoped("io.macula", &format!("rpc/{name}"))
}

#[tokio::test(start_paused = true)]
async fn thirty_nodes_publish_and_find_value_on_the_k_closest() {
    let net = TestNet::new(30, 1);
    net.join().await;
    for s in &net.nodes {
        assert!(
            s.contacts().len() >= K,
            "every node learned at least k contacts"
        );
    }
    let k = key("svc.echo");
    let p0 = net.nodes[0].own().id;
    let acked = net.nodes[0]
        .publish(k, Bytes::from_static(b"provider-0"))
        .await;
    assert_eq!(acked, K, "stored at k nodes");

    let found = net.nodes[17].find_value(k).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].value, Bytes::from_static(b"provider-0"));
    assert_eq!(found[0].publisher, p0);
    assert!(found[0].ttl > Duration::ZERO && found[0].ttl <= TTL);

    // The record sits on the k closest nodes of the whole network.
    for id in net.true_closest(&k, K, None) {
        assert!(
            holds(&net.nodes[net.index(&id)], &k, &p0),
            "{id:?} holds it"
        );
    }
    // A second provider of the same key: both are found, one record per publisher.
    let p5 = net.nodes[5].own().id;
    assert_eq!(
        net.nodes[5]
            .publish(k, Bytes::from_static(b"provider-5"))
            .await,
        K
    );
    let found = net.nodes[17].find_value(k).await;
    let mut want = vec![p0, p5];
    want.sort();
    assert_eq!(found.iter().map(|r| r.publisher).collect::<Vec<_>>(), want);

    let unknown = net.nodes[17].find_value(key("svc.absent")).await;
    assert!(unknown.is_empty());
    for i in 0..net.nodes.len() {
        assert_eq!(net.failures(i), 0, "no query failed on a healthy network");
    }
}

#[tokio::test(start_paused = true)]
async fn dead_node_times_out_and_lookup_completes_via_others() {
    let net = TestNet::new(30, 2);
    net.join().await;
    let x = &net.nodes[3];
    let victim = x.contacts()[0];
    net.kill(victim.id);

    let t0 = Instant::now();
    // FIND_NODE for the victim's own id: it is the closest candidate, asked first.
    let nodes = x.find_nodes(victim.id).await;
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= TIMEOUT,
        "waited for the victim's query to time out"
    );
    assert!(
        elapsed < 3 * TIMEOUT,
        "only one timeout on the critical path"
    );
    let got: Vec<NodeId> = nodes.iter().map(|c| c.id).collect();
    assert!(!got.contains(&victim.id));
    assert_eq!(
        got,
        net.true_closest(&victim.id, K, Some(x.own().id)),
        "exactly the k closest live nodes"
    );
    assert!(net.failures(3) >= 1, "the timeout is counted");
    assert!(
        !x.contacts().iter().any(|c| c.id == victim.id),
        "a node whose query failed leaves the table"
    );
    assert!(
        x.state().pending.is_empty(),
        "no correlation entry left behind"
    );
}

#[tokio::test(start_paused = true)]
async fn value_found_with_twenty_percent_of_nodes_dead() {
    let net = TestNet::new(30, 3);
    net.join().await;
    let k = key("svc.resilient");
    let p0 = net.nodes[0].own().id;
    assert_eq!(net.nodes[0].publish(k, Bytes::from_static(b"v")).await, K);
    // Kill 6 of 30 nodes (20 %): the publisher itself (so the value must come from a
    // holder) and the 5 holders closest to the key, sparing the searcher 17.
    let searcher = net.nodes[17].own().id;
    let mut victims = vec![p0];
    victims.extend(
        net.true_closest(&k, 30, None)
            .into_iter()
            .filter(|id| *id != p0 && *id != searcher)
            .take(5),
    );
    for v in &victims {
        net.kill(*v);
    }
    let found = net.nodes[17].find_value(k).await;
    assert_eq!(found.len(), 1, "found via the surviving holders");
    assert_eq!(found[0].publisher, p0);
    // From every live node as well.
    for s in net.nodes.iter().filter(|s| !victims.contains(&s.own().id)) {
        let found = s.find_value(k).await;
        assert_eq!(found.len(), 1, "{:?} finds it", s.own().id);
    }
}

#[tokio::test(start_paused = true)]
async fn ttl_expires_without_republish_and_tick_keeps_records_alive() {
    let net = TestNet::new(12, 4);
    net.join().await;
    let (a, b) = (key("svc.a"), key("svc.b"));
    assert!(net.nodes[0].publish(a, Bytes::from_static(b"a")).await > 0);
    assert!(!net.nodes[7].find_value(a).await.is_empty());

    // No tick: past the TTL nobody serves it, the publisher's own copy included.
    tokio::time::sleep(TTL + TIMEOUT).await;
    assert!(net.nodes[7].find_value(a).await.is_empty());
    assert!(net.nodes[0].find_value(a).await.is_empty());

    // With tick() every second, `b` stays found for three TTLs; `a`, whose republish
    // window was missed, is advertised again at the first tick (own records are kept
    // until withdrawn).
    assert!(net.nodes[0].publish(b, Bytes::from_static(b"b")).await > 0);
    let end = Instant::now() + 3 * TTL;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for s in &net.nodes {
            s.tick().await;
        }
    }
    net.settle().await;
    let found = net.nodes[7].find_value(b).await;
    assert_eq!(found.len(), 1);
    assert!(
        found[0].ttl > TTL / 4,
        "refreshed recently: {:?}",
        found[0].ttl
    );
    assert_eq!(net.nodes[7].find_value(a).await.len(), 1);
    // Re-published to the other nodes, not only served by the publisher itself.
    let p0 = net.nodes[0].own().id;
    for s in &net.nodes[1..] {
        assert!(holds(s, &a, &p0) && holds(s, &b, &p0), "{:?}", s.own().id);
    }
    // Gauges were updated by tick.
    assert!(net.metrics[0].rpc.records.get() >= 2);
    assert!(net.metrics[0].rpc.contacts.get() >= 11);
}

/// A record published with a procedure name carries it in every STORE, re-publishes
/// included (a peer bounded by a credential checks `register` of it); a withdrawal carries
/// none (always accepted); a record published without one sends none.
#[tokio::test(start_paused = true)]
async fn a_named_record_carries_its_name_in_every_store() {
    let net = TestNet::new(6, 8);
    net.join().await;
    let (named, plain) = (key("svc.named"), key("svc.plain"));
    let n0 = &net.nodes[0];
    assert_eq!(
        n0.publish_named(named, Bytes::from_static(b"v"), "svc.named")
            .await,
        5
    );
    assert_eq!(n0.publish(plain, Bytes::from_static(b"v")).await, 5);
    let stores = |k: Key| -> Vec<(u32, Option<String>)> {
        let all = net.inner.stores.lock().unwrap();
        all.iter()
            .filter(|s| s.0 == k)
            .map(|s| (s.1, s.2.clone()))
            .collect()
    };
    let ttl = TTL.as_millis() as u32;
    let name = Some("svc.named".to_string());
    assert_eq!(stores(named), vec![(ttl, name.clone()); 5]);
    assert_eq!(stores(plain), vec![(ttl, None); 5]);
    // Past half the TTL the records are re-published, each as it was first.
    tokio::time::sleep(TTL / 2 + TIMEOUT).await;
    n0.tick().await;
    net.settle().await;
    assert_eq!(stores(named), vec![(ttl, name.clone()); 10]);
    assert_eq!(stores(plain), vec![(ttl, None); 10]);
    n0.withdraw(named).await;
    assert_eq!(stores(named)[10..], vec![(0, None); 5]);
    // Withdrawn: never re-published, and its name is forgotten.
    assert!(n0.state().names.is_empty());
}

#[tokio::test(start_paused = true)]
async fn withdraw_removes_the_record_everywhere() {
    let net = TestNet::new(30, 5);
    net.join().await;
    let k = key("svc.gone");
    let p0 = net.nodes[0].own().id;
    assert_eq!(net.nodes[0].publish(k, Bytes::from_static(b"x")).await, K);
    net.nodes[0].withdraw(k).await;
    net.settle().await;
    for s in &net.nodes {
        assert!(!holds(s, &k, &p0), "{:?} still holds it", s.own().id);
    }
    for i in [0, 9, 17, 29] {
        assert!(net.nodes[i].find_value(k).await.is_empty());
    }
    // Ticks do not bring it back.
    for _ in 0..TTL.as_secs() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        net.nodes[0].tick().await;
    }
    net.settle().await;
    assert!(net.nodes[17].find_value(k).await.is_empty());
}

/// A service whose transport loses everything, and a peer contact.
fn lone(tweak: impl Fn(&mut DhtParams)) -> (TestNet, Contact) {
    let mut rng = StdRng::seed_from_u64(6);
    let ids = vec![Id::random(&mut rng)];
    let net = TestNet::with_ids(ids, tweak);
    let peer = contact(Id::random(&mut rng), 99);
    net.kill(peer.id);
    (net, peer)
}

fn store(cid: u64, key: Key, publisher: NodeId, ttl_ms: u32) -> Frame {
    Frame::Store(Store {
        correlation_id: cid,
        key: *key.as_bytes(),
        value: Bytes::from_static(b"v"),
        ttl_ms,
        publisher: *publisher.as_bytes(),
        name: None,
    })
}

#[tokio::test(start_paused = true)]
async fn refusals_and_unknown_replies_are_counted() {
    let (net, peer) = lone(|_| {});
    let s = &net.nodes[0];
    let m = &net.metrics[0].rpc;
    let k = key("svc.x");

    // Absurd TTL: an error frame with the correlation id, counted.
    let reply = s.handle_query(Some(&peer), &store(7, k, peer.id, u32::MAX));
    let Some(Frame::Error(e)) = reply else {
        panic!("expected an error frame, got {reply:?}");
    };
    assert_eq!(e.code, ErrorCode::LimitExceeded as u16);
    assert_eq!(e.correlation_id, Some(7));
    assert_eq!(m.store_refused_total.with_label_values(&["ttl"]).get(), 1);
    assert!(!holds(s, &k, &peer.id));
    assert!(
        s.contacts().contains(&peer),
        "the querying peer was observed"
    );

    // A valid STORE, then read back with the remaining TTL.
    let reply = s.handle_query(Some(&peer), &store(8, k, peer.id, 10_000));
    assert_eq!(
        reply,
        Some(Frame::StoreAck(StoreAck {
            correlation_id: 8,
            stored: true
        }))
    );
    tokio::time::advance(Duration::from_millis(4_000)).await;
    let q = Frame::FindValue(FindValue {
        correlation_id: 9,
        key: *k.as_bytes(),
        sender: WireContact::from(&peer),
        path: Vec::new(),
    });
    let Some(Frame::FindValueReply(r)) = s.handle_query(Some(&peer), &q) else {
        panic!("expected a find_value_reply");
    };
    assert_eq!(r.correlation_id, 9);
    assert_eq!(r.values.len(), 1);
    assert_eq!(r.values[0].ttl_ms, 6_000, "remaining lifetime");

    // ttl_ms = 0 deletes that publisher's record and is acknowledged.
    let reply = s.handle_query(Some(&peer), &store(10, k, peer.id, 0));
    assert!(matches!(
        reply,
        Some(Frame::StoreAck(StoreAck {
            correlation_id: 10,
            stored: true
        }))
    ));
    assert!(!holds(s, &k, &peer.id));

    // A peer may not store (or delete) records in this node's name.
    let own = s.own().id;
    let reply = s.handle_query(Some(&peer), &store(11, k, own, 10_000));
    assert!(matches!(
        reply,
        Some(Frame::StoreAck(StoreAck { stored: false, .. }))
    ));
    assert_eq!(
        m.store_refused_total.with_label_values(&["invalid"]).get(),
        1
    );

    // Unknown correlation ids are dropped and counted; non-replies are ignored.
    let stray = Frame::FindNodeReply(FindNodeReply {
        correlation_id: 12_345,
        nodes: Vec::new(),
    });
    assert!(!s.handle_reply(&stray));
    let stray_error = Frame::Error(ErrorFrame {
        code: ErrorCode::Internal as u16,
        message: String::new(),
        correlation_id: Some(12_346),
    });
    assert!(!s.handle_reply(&stray_error));
    assert_eq!(m.dht_unknown_replies_total.get(), 2);
    assert!(!s.handle_reply(&q), "a query is not a reply");
    assert_eq!(m.dht_unknown_replies_total.get(), 2);
    assert!(s.handle_query(Some(&peer), &stray).is_none(), "not a query");
}

#[tokio::test(start_paused = true)]
async fn store_full_is_refused_with_an_error() {
    let (net, peer) = lone(|_| {});
    let s = &net.nodes[0];
    // Shrink the store to one record to reach the bound quickly.
    s.state().store = RecordStore::with_limits(
        s.own().id,
        StoreLimits {
            max_records: 1,
            ..StoreLimits::default()
        },
    );
    assert!(matches!(
        s.handle_query(Some(&peer), &store(1, key("a"), peer.id, 1_000)),
        Some(Frame::StoreAck(_))
    ));
    let reply = s.handle_query(Some(&peer), &store(2, key("b"), peer.id, 1_000));
    let Some(Frame::Error(e)) = reply else {
        panic!("expected an error frame, got {reply:?}");
    };
    assert_eq!(e.correlation_id, Some(2));
    assert_eq!(e.code, ErrorCode::LimitExceeded as u16);
    let m = &net.metrics[0].rpc;
    assert_eq!(m.store_refused_total.with_label_values(&["full"]).get(), 1);
}

/// A mesh peer stores only as itself, and one peer at its share of the record store is
/// refused (typed, counted) while another peer still stores.
#[tokio::test(start_paused = true)]
async fn a_peer_at_its_store_quota_is_refused_while_another_stores() {
    let (net, peer) = lone(|_| {});
    let s = &net.nodes[0];
    s.state().store = RecordStore::with_limits(
        s.own().id,
        StoreLimits {
            max_records_per_publisher: 1,
            ..StoreLimits::default()
        },
    );
    let other = Id([42; 32]);
    let m = &net.metrics[0];
    // Naming another publisher is refused.
    let reply = s.handle_query_as(Some(peer.id), None, &store(1, key("a"), other, 1_000));
    let Some(Frame::Error(e)) = reply else {
        panic!("expected an error frame, got {reply:?}");
    };
    assert_eq!(e.code, ErrorCode::MalformedBody as u16);
    assert_eq!(
        m.rpc
            .store_refused_total
            .with_label_values(&["invalid"])
            .get(),
        1
    );
    // One record fits the peer's share, a second does not; another peer stores.
    let ok = |r: Option<Frame>| matches!(r, Some(Frame::StoreAck(StoreAck { stored: true, .. })));
    assert!(ok(s.handle_query_as(
        Some(peer.id),
        None,
        &store(2, key("a"), peer.id, 1_000)
    )));
    let reply = s.handle_query_as(Some(peer.id), None, &store(3, key("b"), peer.id, 1_000));
    let Some(Frame::Error(e)) = reply else {
        panic!("expected an error frame, got {reply:?}");
    };
    assert_eq!(
        (e.code, e.correlation_id),
        (ErrorCode::LimitExceeded as u16, Some(3))
    );
    let quota = crate::metrics::quota::Table::Dht;
    assert_eq!(m.quota.count(quota, "tenant_entries"), 1);
    assert!(ok(s.handle_query_as(
        Some(other),
        None,
        &store(4, key("b"), other, 1_000)
    )));
}

#[tokio::test(start_paused = true)]
async fn pending_queries_are_bounded_and_cleaned_up() {
    let (net, peer) = lone(|p| p.max_pending = 2);
    let s = &net.nodes[0];
    let ping = |cid| {
        Frame::FindNode(FindNode {
            correlation_id: cid,
            target: [0; 32],
            sender: WireContact::from(&peer),
        })
    };
    let t0 = Instant::now();
    let third = async {
        let r = s.query(&peer, ping).await;
        (r, t0.elapsed())
    };
    let (a, b, (c, c_elapsed)) = tokio::join!(s.query(&peer, ping), s.query(&peer, ping), third);
    assert_eq!(c, Err(QueryError::Overloaded));
    assert_eq!(c_elapsed, Duration::ZERO, "refused at once");
    assert_eq!(a, Err(QueryError::Timeout));
    assert_eq!(b, Err(QueryError::Timeout));
    assert_eq!(t0.elapsed(), TIMEOUT);
    assert!(s.state().pending.is_empty());
    assert_eq!(net.metrics[0].rpc.dht_query_failures_total.get(), 3);
    assert_eq!(net.metrics[0].rpc.dht_queries_total.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn unreachable_peer_fails_at_once() {
    struct Nowhere;
    impl DhtTransport for Nowhere {
        fn send(&self, _: &Contact, _: Frame) -> bool {
            false
        }
    }
    let mut rng = StdRng::seed_from_u64(8);
    let own = contact(Id::random(&mut rng), 1);
    let peer = contact(Id::random(&mut rng), 2);
    let m = Metrics::new();
    let s = DhtService::new(DhtParams::new(own), Arc::new(Nowhere), m.clone());
    s.observe(peer);
    let t0 = Instant::now();
    assert!(s.find_nodes(Id::random(&mut rng)).await.is_empty());
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(
        s.contacts().is_empty(),
        "the unreachable contact was removed"
    );
    assert_eq!(m.rpc.dht_query_failures_total.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lookup_keeps_at_most_alpha_queries_in_flight() {
    let net = TestNet::new(30, 9);
    net.join().await;
    let x = net.nodes[17].own().id;

    // A FIND_VALUE for an absent key walks the whole neighbourhood.
    net.reset_outstanding();
    assert!(net.nodes[17].find_value(key("svc.none")).await.is_empty());
    assert_eq!(
        net.max_outstanding(&x),
        ALPHA,
        "alpha in parallel, never more"
    );
    net.settle().await;

    // Same with 20 % of the nodes dead (their queries time out and free their slot).
    let dead: Vec<NodeId> = net.nodes[20..26].iter().map(|s| s.own().id).collect();
    for d in &dead {
        net.kill(*d);
    }
    net.reset_outstanding();
    let nodes = net.nodes[17].find_nodes(dead[0]).await;
    assert_eq!(nodes.len(), K);
    assert!(nodes.iter().all(|c| !dead.contains(&c.id)));
    assert_eq!(net.max_outstanding(&x), ALPHA);
    assert!(net.failures(17) >= 1);
}

#[tokio::test(start_paused = true)]
async fn full_bucket_pings_its_oldest_contact_before_evicting() {
    // Own id 0; the others all fall in bucket 0 (top bit set). k = 2.
    let id = |b: u8| {
        let mut x = [0u8; 32];
        x[0] = b;
        Id(x)
    };
    let net = TestNet::with_ids(vec![Id::ZERO, id(0x80), id(0x90), id(0xa0)], |p| p.k = 2);
    let (a, b, c, d) = (&net.nodes[0], &net.nodes[1], &net.nodes[2], &net.nodes[3]);
    a.observe(b.own());
    a.observe(c.own());
    a.observe(d.own()); // bucket full: d is cached, b (the oldest) must be pinged
    assert_eq!(a.contacts(), vec![b.own(), c.own()]);

    // b answers the ping: it stays (now most recently seen), d stays out.
    a.tick().await;
    net.settle().await;
    assert_eq!(a.contacts(), vec![c.own(), b.own()]);

    // A newcomer again; now c is the oldest, and it is dead: evicted for the newcomer.
    net.kill(c.own().id);
    a.observe(d.own());
    a.tick().await;
    net.settle().await;
    let ids: Vec<NodeId> = a.contacts().iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![b.own().id, d.own().id]);
    a.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn peer_answering_with_an_error_fails_the_query_but_stays_known() {
    /// Answers every query with an `error` frame carrying its correlation id, after 5 ms.
    struct Refusing {
        svc: std::sync::OnceLock<Weak<DhtService>>,
        tasks: TaskTracker,
    }
    impl DhtTransport for Refusing {
        fn send(&self, _: &Contact, frame: Frame) -> bool {
            let svc = self.svc.get().cloned();
            self.tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let Some(svc) = svc.and_then(|w| w.upgrade()) else {
                    return;
                };
                svc.handle_reply(&Frame::Error(ErrorFrame {
                    code: ErrorCode::Internal as u16,
                    message: String::new(),
                    correlation_id: query_cid(&frame),
                }));
            });
            true
        }
    }
    let mut rng = StdRng::seed_from_u64(10);
    let peer = contact(Id::random(&mut rng), 2);
    let t = Arc::new(Refusing {
        svc: std::sync::OnceLock::new(),
        tasks: TaskTracker::new(),
    });
    let m = Metrics::new();
    let own = contact(Id::random(&mut rng), 1);
    let s = DhtService::new(DhtParams::new(own), t.clone(), m.clone());
    t.svc.set(Arc::downgrade(&s)).expect("set once");
    s.observe(peer);
    let t0 = Instant::now();
    assert!(s.find_nodes(Id::random(&mut rng)).await.is_empty());
    assert!(
        t0.elapsed() < TIMEOUT,
        "an error answer does not wait for the timeout"
    );
    assert_eq!(
        s.contacts(),
        vec![peer],
        "it answered: alive, kept in the table"
    );
    assert_eq!(m.rpc.dht_query_failures_total.get(), 1);
    assert!(s.state().pending.is_empty());
}
