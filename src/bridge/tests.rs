//! In-process tests of real bridges (a city bridge and a street bridge whose parent it is, on
//! 127.0.0.1) with fake nodes: quinn connections that speak the wire protocol directly.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Connection, Endpoint, RecvStream, SendStream};

use super::start;
use crate::config::Config;
use crate::escalation::Level;
use crate::metrics::Metrics;
use crate::rpc::{procedure_key, ProviderRecord};
use crate::session::{next_frame, open_session};
use crate::wire::{
    Call, Connect, ErrorCode, FindValue, Frame, FrameDecoder, NodeId, Pong, Reply, Role, RpcError,
    Store, WireContact, PROTOCOL_VERSION,
};

const REALM: &str = "io.macula";
const WAIT: Duration = Duration::from_secs(10);

fn bridge_cfg(dir: &Path, level: Level, parents: Vec<String>) -> Config {
    let mut cfg = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    cfg.bridge.listen = "127.0.0.1:0".parse().expect("literal");
    cfg.bridge.admin_listen = None;
    cfg.bridge.level = level;
    cfg.bridge.parents = parents;
    cfg
}

/// A node as a bridge sees it: one session with role `node`, frames sent and read by hand.
struct FakeNode {
    id: NodeId,
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
    _endpoint: Endpoint,
}

impl FakeNode {
    async fn connect(bridge: SocketAddr, dir: &Path, cluster: &str) -> FakeNode {
        let cfg = Config::default();
        let any = "127.0.0.1:0".parse().expect("literal");
        let endpoint =
            crate::transport::client_endpoint(any, &cfg.tls, &cfg.transport, dir).expect("bind");
        let conn = endpoint
            .connect(bridge, "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        let identity = crate::identity::Identity::generate();
        let id: NodeId = identity.node_id();
        let connect = Connect {
            versions: vec![PROTOCOL_VERSION],
            node_id: id,
            realm: REALM.into(),
            cluster: cluster.into(),
            role: Role::Node,
            capabilities: vec![],
            max_frame_size: cfg.limits.max_frame_size,
            correlation_id: 1,
            proof: None,
            credential: None,
        };
        let (send, recv, decoder, _) =
            open_session(&conn, connect, cfg.limits.max_frame_size, &identity)
                .await
                .expect("session");
        FakeNode {
            id,
            conn,
            send,
            recv,
            decoder,
            _endpoint: endpoint,
        }
    }

    async fn send(&mut self, frame: Frame) {
        self.send.write_all(&frame.to_bytes()).await.expect("write");
    }

    /// The next frame other than pub/sub interest and heartbeats (pings are answered).
    async fn recv(&mut self) -> Frame {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let raw =
                tokio::time::timeout_at(deadline, next_frame(&mut self.recv, &mut self.decoder))
                    .await
                    .expect("a frame in time")
                    .expect("read");
            match raw.decode().expect("decodes") {
                Frame::Subscribe(_) | Frame::Unsubscribe(_) | Frame::SubAck(_) | Frame::Pong(_) => {
                }
                Frame::Ping(p) => {
                    self.send(Frame::Pong(Pong {
                        correlation_id: p.correlation_id,
                    }))
                    .await
                }
                f => return f,
            }
        }
    }

    fn record(&self, cluster: &str) -> Bytes {
        ProviderRecord {
            node_id: self.id,
            cluster: cluster.into(),
        }
        .encode()
    }

    async fn store(&mut self, corr: u64, key: [u8; 32], cluster: &str, ttl_ms: u32) -> Frame {
        let value = self.record(cluster);
        self.send(Frame::Store(Store {
            correlation_id: corr,
            key,
            value,
            ttl_ms,
            publisher: self.id,
            name: None,
        }))
        .await;
        self.recv().await
    }

    async fn find_value(&mut self, corr: u64, key: [u8; 32], path: Vec<NodeId>) -> Frame {
        self.send(Frame::FindValue(FindValue {
            correlation_id: corr,
            key,
            sender: WireContact {
                node_id: self.id,
                addr: "127.0.0.1:1".into(),
            },
            path,
        }))
        .await;
        self.recv().await
    }

    async fn call(&mut self, call_id: u64, target: NodeId) {
        self.send(Frame::Call(Call {
            call_id,
            procedure: "io.example.echo".into(),
            args: Bytes::from_static(b"hi"),
            timeout_ms: 5_000,
            origin: self.id,
            hops: 0,
            target: Some(target),
        }))
        .await;
    }
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn expect_ack(frame: Frame, corr: u64) {
    match frame {
        Frame::StoreAck(a) => assert!(a.correlation_id == corr && a.stored, "{a:?}"),
        other => panic!("expected store_ack {corr}, got {other:?}"),
    }
}

/// The publishers and depth of a `find_value_reply` with `corr`.
fn expect_values(frame: Frame, corr: u64) -> (Vec<(NodeId, String)>, u8) {
    match frame {
        Frame::FindValueReply(r) if r.correlation_id == corr => {
            let values = r
                .values
                .iter()
                .map(|v| {
                    let rec = ProviderRecord::decode(&v.value).expect("a provider record");
                    assert_eq!(rec.node_id, v.publisher);
                    assert!(v.ttl_ms > 0);
                    (v.publisher, rec.cluster)
                })
                .collect();
            (values, r.depth)
        }
        other => panic!("expected find_value_reply {corr}, got {other:?}"),
    }
}

fn expect_reply(frame: Frame, call_id: u64) -> Result<Bytes, RpcError> {
    match frame {
        Frame::Reply(r) if r.call_id == call_id => r.result,
        other => panic!("expected reply {call_id}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn street_and_city_advertise_escalate_and_route() {
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let city_m = Metrics::new();
    let city = start(
        bridge_cfg(dirs[0].path(), Level::City, vec![]),
        city_m.clone(),
    )
    .await
    .expect("city starts");
    let street_m = Metrics::new();
    let street_cfg = bridge_cfg(
        dirs[1].path(),
        Level::Street,
        vec![city.local_addr.to_string()],
    );
    let street = start(street_cfg, street_m.clone())
        .await
        .expect("street starts");
    let city_links = |m: &Arc<Metrics>| m.connections_open.with_label_values(&["node"]).get();
    wait_until("the street's parent link", || city_links(&city_m) == 1).await;
    let node_dir = dirs[2].path();

    // A (under the street) provides echo: its record climbs to the city's index.
    let echo = procedure_key(REALM, "io.example.echo");
    let mut a = FakeNode::connect(street.local_addr, node_dir, "a").await;
    expect_ack(a.store(10, echo, "a", 300_000).await, 10);
    wait_until("A's record at the city", || city_m.rpc.records.get() == 1).await;
    assert_eq!(street_m.rpc.records.get(), 1);

    // C, a node of the city, finds it there.
    let mut c = FakeNode::connect(city.local_addr, node_dir, "c").await;
    let (values, depth) = expect_values(c.find_value(20, echo, vec![]).await, 20);
    assert_eq!((values, depth), (vec![(a.id, "a".to_string())], 0));

    // C provides `other`; B (under the street) looks it up twice: one escalation, then a
    // cache hit at the street.
    let other = procedure_key(REALM, "io.example.other");
    expect_ack(c.store(21, other, "c", 300_000).await, 21);
    let mut b = FakeNode::connect(street.local_addr, node_dir, "b").await;
    let first = expect_values(b.find_value(30, other, vec![]).await, 30);
    assert_eq!(first, (vec![(c.id, "c".to_string())], 1), "from the city");
    let second = expect_values(b.find_value(31, other, vec![]).await, 31);
    assert_eq!(second, (vec![(c.id, "c".to_string())], 0), "from the cache");
    assert_eq!(street_m.cache.for_level(Level::Street).hits.get(), 1);
    assert_eq!(street_m.rpc.escalations_total.get(), 1);
    // Nobody provides `missing`: the city says so, the street caches it.
    let missing = procedure_key(REALM, "io.example.missing");
    assert_eq!(
        expect_values(b.find_value(32, missing, vec![]).await, 32),
        (vec![], 1)
    );

    // A path that already names the street is a loop: an error frame with the id.
    match b.find_value(33, other, vec![street.node_id]).await {
        Frame::Error(e) => {
            assert_eq!(e.correlation_id, Some(33));
            assert_eq!(e.code, ErrorCode::Protocol as u16);
        }
        f => panic!("expected an error frame, got {f:?}"),
    }

    // A call from C with target A goes down through the street; the reply comes back with
    // C's call id.
    c.call(77, a.id).await;
    let down = match a.recv().await {
        Frame::Call(call) => call,
        f => panic!("expected a call at A, got {f:?}"),
    };
    assert_eq!((down.hops, down.target), (2, Some(a.id)));
    assert_eq!(&down.args[..], b"hi");
    a.send(Frame::Reply(Reply {
        call_id: down.call_id,
        result: Ok(Bytes::from_static(b"hi back")),
    }))
    .await;
    assert_eq!(
        expect_reply(c.recv().await, 77),
        Ok(Bytes::from_static(b"hi back"))
    );

    // A call from B to C goes up to the city and down to C.
    b.call(5, c.id).await;
    let at_c = match c.recv().await {
        Frame::Call(call) => call,
        f => panic!("expected a call at C, got {f:?}"),
    };
    assert_eq!(at_c.hops, 2);
    c.send(Frame::Reply(Reply {
        call_id: at_c.call_id,
        result: Err(RpcError::new(RpcError::REMOTE, "no")),
    }))
    .await;
    assert_eq!(
        expect_reply(b.recv().await, 5).unwrap_err().code,
        RpcError::REMOTE
    );

    // No route at the top: UNREACHABLE at once. A late or forged reply is counted.
    c.call(78, [9; 32]).await;
    let err = expect_reply(c.recv().await, 78).unwrap_err();
    assert_eq!(err.code, RpcError::UNREACHABLE);
    c.send(Frame::Reply(Reply {
        call_id: 12_345,
        result: Ok(Bytes::new()),
    }))
    .await;
    wait_until("the unknown reply counted", || {
        city_m.rpc.unknown_replies_total.get() == 1
    })
    .await;

    // A call to A is pending when A's link closes: C is answered UNREACHABLE without
    // waiting for the timeout, and A's record is withdrawn up to the city.
    c.call(79, a.id).await;
    assert!(matches!(a.recv().await, Frame::Call(_)));
    a.conn.close(0u32.into(), b"bye");
    let err = expect_reply(c.recv().await, 79).unwrap_err();
    assert_eq!(err.code, RpcError::UNREACHABLE);
    wait_until("A's record withdrawn at the city", || {
        city_m.rpc.records.get() == 1
    })
    .await;
    assert_eq!(street_m.rpc.records.get(), 0);
    let (values, _) = expect_values(c.find_value(22, echo, vec![]).await, 22);
    assert!(values.is_empty());

    assert_eq!(city_m.rpc.forwarded_total.get(), 3);
    assert_eq!(street_m.rpc.forwarded_total.get(), 3);
    wait_until("no call pending", || {
        city_m.rpc.pending.get() == 0 && street_m.rpc.pending.get() == 0
    })
    .await;
    street.shutdown(Duration::from_secs(2)).await;
    city.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stores_and_calls_get_typed_errors() {
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let m = Metrics::new();
    let top = start(bridge_cfg(dirs[0].path(), Level::City, vec![]), m.clone())
        .await
        .expect("bridge starts");
    let mut n = FakeNode::connect(top.local_addr, dirs[1].path(), "a").await;
    let key = procedure_key(REALM, "io.example.echo");

    // TTL above dht.max_record_ttl_ms (1 h).
    match n.store(1, key, "a", 3_600_001).await {
        Frame::Error(e) => {
            assert_eq!(e.correlation_id, Some(1));
            assert_eq!(e.code, ErrorCode::LimitExceeded as u16);
        }
        f => panic!("expected an error, got {f:?}"),
    }
    // A value that is not a provider record, and one naming another node.
    for (corr, value) in [
        (2, Bytes::from_static(b"\xc1")),
        (
            3,
            ProviderRecord {
                node_id: [7; 32],
                cluster: "a".into(),
            }
            .encode(),
        ),
    ] {
        n.send(Frame::Store(Store {
            correlation_id: corr,
            key,
            value,
            ttl_ms: 1_000,
            publisher: n.id,
            name: None,
        }))
        .await;
        match n.recv().await {
            Frame::Error(e) => {
                assert_eq!(e.correlation_id, Some(corr));
                assert_eq!(e.code, ErrorCode::MalformedBody as u16);
            }
            f => panic!("expected an error, got {f:?}"),
        }
    }
    let refused = |r: &str| m.rpc.store_refused_total.with_label_values(&[r]).get();
    assert_eq!((refused("ttl"), refused("invalid")), (1, 2));

    // Store, then withdraw with ttl 0.
    expect_ack(n.store(4, key, "a", 1_000).await, 4);
    assert_eq!(m.rpc.records.get(), 1);
    expect_ack(n.store(5, key, "a", 0).await, 5);
    assert_eq!(m.rpc.records.get(), 0);
    // A short-lived record expires on the housekeeping timer.
    expect_ack(n.store(6, key, "a", 50).await, 6);
    wait_until("the record expired", || m.rpc.records.get() == 0).await;

    // Calls: hop limit, missing target, zero timeout.
    let base = Call {
        call_id: 1,
        procedure: "p".into(),
        args: Bytes::new(),
        timeout_ms: 1_000,
        origin: n.id,
        hops: 17,
        target: Some(n.id),
    };
    let cases = [
        (Call { ..base.clone() }, RpcError::HOPS_EXCEEDED),
        (
            Call {
                call_id: 2,
                hops: 0,
                target: None,
                ..base.clone()
            },
            RpcError::INVALID,
        ),
        (
            Call {
                call_id: 3,
                hops: 0,
                timeout_ms: 0,
                ..base.clone()
            },
            RpcError::INVALID,
        ),
        (
            Call {
                call_id: 4,
                hops: 0,
                ..base.clone()
            },
            RpcError::UNREACHABLE,
        ),
    ];
    for (call, code) in cases {
        let id = call.call_id;
        n.send(Frame::Call(call)).await;
        assert_eq!(
            expect_reply(n.recv().await, id).unwrap_err().code,
            code,
            "call {id}"
        );
    }
    top.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_failover_advertises_the_index_again() {
    let dirs: Vec<_> = (0..4)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let m1 = Metrics::new();
    let city1 = start(bridge_cfg(dirs[0].path(), Level::City, vec![]), m1.clone())
        .await
        .expect("city 1 starts");
    let m2 = Metrics::new();
    let city2 = start(bridge_cfg(dirs[1].path(), Level::City, vec![]), m2.clone())
        .await
        .expect("city 2 starts");
    let mut street_cfg = bridge_cfg(
        dirs[2].path(),
        Level::Street,
        vec![city1.local_addr.to_string(), city2.local_addr.to_string()],
    );
    // A dead first parent is given up after 1 s of handshake silence.
    street_cfg.transport.idle_timeout_ms = 1_000;
    street_cfg.transport.keep_alive_ms = 300;
    let street = start(street_cfg, Metrics::new())
        .await
        .expect("street starts");

    let key = procedure_key(REALM, "io.example.echo");
    let mut a = FakeNode::connect(street.local_addr, dirs[3].path(), "a").await;
    expect_ack(a.store(1, key, "a", 300_000).await, 1);
    wait_until("the record at the first parent", || {
        m1.rpc.records.get() == 1
    })
    .await;
    assert_eq!(
        m2.rpc.records.get(),
        0,
        "only the first parent that accepts"
    );

    city1.shutdown(Duration::from_secs(2)).await;
    wait_until("the record at the second parent", || {
        m2.rpc.records.get() == 1
    })
    .await;
    let mut c = FakeNode::connect(city2.local_addr, dirs[3].path(), "c").await;
    let (values, _) = expect_values(c.find_value(2, key, vec![]).await, 2);
    assert_eq!(values, vec![(a.id, "a".to_string())]);
    // And a call from the second city reaches A through the street.
    c.call(3, a.id).await;
    assert!(matches!(a.recv().await, Frame::Call(_)));

    street.shutdown(Duration::from_secs(2)).await;
    city2.shutdown(Duration::from_secs(2)).await;
}

mod quota;
