//! Bad input against a real node process: each case gets an error frame or a
//! clean close with an error code, is counted in the metrics, and the node keeps
//! serving everyone else.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::{client, fleet, metric, recv};
use macula::identity::{Identity, Side};
use macula::wire::{
    self, Connect, ErrorCode, Frame, FrameDecoder, Ping, Publish, Qos, Role, Subscribe,
};
use quinn::{Connection, RecvStream, SendStream};

struct Raw {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
    /// This connection's key: [`Raw::sign`] proves its node id on this connection.
    identity: Identity,
    _ep: quinn::Endpoint,
}

async fn raw_connect(addr: SocketAddr) -> Raw {
    let (conn, ep) = common::quic_connect(addr).await;
    let (send, recv) = conn.open_bi().await.unwrap();
    Raw {
        conn,
        send,
        recv,
        decoder: FrameDecoder::new(wire::DEFAULT_MAX_FRAME_SIZE),
        identity: Identity::generate(),
        _ep: ep,
    }
}

fn connect_frame(realm: &str) -> Connect {
    Connect {
        versions: vec![wire::PROTOCOL_VERSION],
        node_id: [7; 32],
        realm: realm.into(),
        cluster: String::new(),
        role: Role::Client,
        capabilities: vec![],
        max_frame_size: wire::DEFAULT_MAX_FRAME_SIZE,
        correlation_id: 1,
        proof: None,
        credential: None,
    }
}

impl Raw {
    /// `c` as this connection's identity: its node id, and the proof of it on this
    /// connection (`docs/AUTH.md`).
    fn sign(&self, mut c: Connect) -> Bytes {
        c.node_id = self.identity.node_id();
        c.proof = Some(self.identity.prove_on(&self.conn, Side::Initiator).unwrap());
        Frame::Connect(c).to_bytes()
    }

    /// Sends `c` as it is and expects `UNAUTHENTICATED`: the error frame, then the close.
    async fn refused(&mut self, c: Connect, what: &str) {
        let hello = Frame::Connect(c).to_bytes();
        self.send.write_all(&hello).await.unwrap();
        let code = ErrorCode::Unauthenticated;
        assert_eq!(self.error_code().await, code as u16, "{what}");
        assert_eq!(self.close_code().await, code as u64, "{what}");
    }

    async fn handshake(addr: SocketAddr) -> Raw {
        let mut r = raw_connect(addr).await;
        let hello = r.sign(connect_frame("io.macula"));
        r.send.write_all(&hello).await.unwrap();
        match r.next().await {
            Some(Frame::Connected(_)) => r,
            other => panic!("expected connected, got {other:?}"),
        }
    }

    /// Next decoded frame, or None when the stream/connection ended.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(raw) = self.decoder.next_frame().unwrap() {
                return Some(raw.decode().unwrap());
            }
            match tokio::time::timeout(Duration::from_secs(10), self.recv.read_chunk(65536, true))
                .await
                .expect("answer within 10 s")
            {
                Ok(Some(c)) => self.decoder.extend(&c.bytes),
                _ => return None,
            }
        }
    }

    /// Waits for an error frame; returns its code.
    async fn error_code(&mut self) -> u16 {
        self.error().await.code
    }

    /// Waits for an error frame.
    async fn error(&mut self) -> wire::ErrorFrame {
        loop {
            match self.next().await {
                Some(Frame::Error(e)) => return e,
                Some(_) => continue,
                None => panic!("stream ended without an error frame"),
            }
        }
    }

    /// Waits for a `puback` acknowledging `id` (in `ids` or `no_route`); returns whether it
    /// came in `no_route`, and the error frames received meanwhile.
    async fn ack_of(&mut self, id: wire::MessageId) -> (bool, Vec<wire::ErrorFrame>) {
        let mut errors = Vec::new();
        loop {
            match self.next().await {
                Some(Frame::PubAck(a)) if a.no_route.contains(&id) => return (true, errors),
                Some(Frame::PubAck(a)) if a.ids.contains(&id) => return (false, errors),
                Some(Frame::Error(e)) => errors.push(e),
                Some(_) => continue,
                None => panic!("stream ended without an ack"),
            }
        }
    }

    /// Sends a QoS 1 publish of `topic` with message id `[n; 16]` (and header `flags`).
    async fn publish_qos1(&mut self, topic: &str, n: u8, flags: u8) -> wire::MessageId {
        let mut b = BytesMut::from(
            &Frame::Publish(Publish {
                topic: topic.into(),
                payload: Bytes::from_static(b"x"),
                qos: Qos::AtLeastOnce,
                retain: false,
                message_id: [n; 16],
                ts_us: None,
            })
            .to_bytes()[..],
        );
        b[2] = flags;
        self.send.write_all(&b).await.unwrap();
        [n; 16]
    }

    /// Waits for the connection to be closed; returns the application close code.
    async fn close_code(&self) -> u64 {
        match tokio::time::timeout(Duration::from_secs(10), self.conn.closed())
            .await
            .expect("closed within 10 s")
        {
            quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
            other => panic!("unexpected close: {other}"),
        }
    }

    async fn still_alive(&mut self) {
        self.send
            .write_all(&Frame::Ping(Ping { correlation_id: 99 }).to_bytes())
            .await
            .unwrap();
        loop {
            match self.next().await {
                Some(Frame::Pong(p)) => {
                    assert_eq!(p.correlation_id, 99);
                    return;
                }
                Some(_) => continue,
                None => panic!("connection died"),
            }
        }
    }
}

/// A v1 frame of type `t` with a hand-built body.
fn frame(t: u8, body: &[u8]) -> BytesMut {
    let mut b = header(1, t, body.len() as u32);
    b.put_slice(body);
    b
}

/// A MessagePack fixstr (shorter than 32 bytes).
fn msgpack_str(s: &str) -> Vec<u8> {
    assert!(s.len() < 32);
    let mut v = vec![0xa0 | s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

fn header(version: u8, msg_type: u8, len: u32) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(version);
    b.put_u8(msg_type);
    b.put_u8(0);
    b.put_u8(0);
    b.put_u32(len);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_answered_counted_and_survived() {
    let mut f = fleet();
    let n = common::lone_node(&mut f, "node", "127.0.0.5");
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let addr = f.procs[n].quic;
    let admin = f.procs[n].admin;

    // A well-behaved pair that must keep working throughout.
    let good_sub_client = client(addr).await;
    let mut good_sub = good_sub_client.subscribe("good.*").await.unwrap();
    let good_pub = client(addr).await;

    // Oversized declared length: refused before the body is buffered, connection closed.
    let mut r = Raw::handshake(addr).await;
    r.send.write_all(&header(1, 0x10, 64 << 20)).await.unwrap();
    assert_eq!(r.close_code().await, ErrorCode::FrameTooLarge as u64);

    // Wrong version.
    let mut r = Raw::handshake(addr).await;
    r.send.write_all(&header(9, 0x10, 0)).await.unwrap();
    assert_eq!(r.close_code().await, ErrorCode::UnsupportedVersion as u64);

    // Truncated frame: half a publish, then the stream ends.
    let mut r = Raw::handshake(addr).await;
    let publish = Frame::Publish(Publish {
        topic: "good.x".into(),
        payload: Bytes::from_static(b"hello"),
        qos: Qos::AtMostOnce,
        retain: false,
        message_id: [1; 16],
        ts_us: None,
    })
    .to_bytes();
    r.send
        .write_all(&publish[..publish.len() / 2])
        .await
        .unwrap();
    r.send.finish().unwrap();
    assert_eq!(r.close_code().await, ErrorCode::Truncated as u64);

    // Unknown message type: error frame, stream stays usable.
    let mut r = Raw::handshake(addr).await;
    let mut unknown = header(1, 0x7e, 1);
    unknown.put_u8(0x80); // an empty MessagePack map
    r.send.write_all(&unknown).await.unwrap();
    assert_eq!(r.error_code().await, ErrorCode::UnknownType as u16);
    r.still_alive().await;

    // Malformed MessagePack body with intact framing: error frame, stream stays usable.
    let mut bad = header(1, 0x11, 3);
    bad.put_slice(&[0xc1, 0xff, 0x00]);
    r.send.write_all(&bad).await.unwrap();
    assert_eq!(r.error_code().await, ErrorCode::MalformedBody as u16);
    r.still_alive().await;

    // Topic with an empty segment, and a pattern with a bad character.
    let bad_topic = Frame::Publish(Publish {
        topic: "good..x".into(),
        payload: Bytes::new(),
        qos: Qos::AtMostOnce,
        retain: false,
        message_id: [2; 16],
        ts_us: None,
    });
    r.send.write_all(&bad_topic.to_bytes()).await.unwrap();
    assert_eq!(r.error_code().await, ErrorCode::InvalidTopic as u16);
    let bad_pattern = Frame::Subscribe(Subscribe {
        topics: vec!["good.x y".into()],
        qos: Qos::AtMostOnce,
        correlation_id: 5,
    });
    r.send.write_all(&bad_pattern.to_bytes()).await.unwrap();
    loop {
        match r.next().await {
            Some(Frame::Error(e)) => {
                assert_eq!(e.code, ErrorCode::InvalidTopic as u16);
                assert_eq!(e.correlation_id, Some(5), "the error names the request");
                break;
            }
            Some(_) => continue,
            None => panic!("closed"),
        }
    }
    r.still_alive().await;

    // Unknown realm at connect: error frame then close.
    let mut r = raw_connect(addr).await;
    let hello = r.sign(connect_frame("org.nowhere"));
    r.send.write_all(&hello).await.unwrap();
    assert_eq!(r.error_code().await, ErrorCode::UnknownRealm as u16);
    assert_eq!(r.close_code().await, ErrorCode::UnknownRealm as u64);

    // A first frame that is not CONNECT: the error frame arrives, then the close.
    let mut r = raw_connect(addr).await;
    r.send
        .write_all(&Frame::Ping(Ping { correlation_id: 1 }).to_bytes())
        .await
        .unwrap();
    assert_eq!(r.error_code().await, ErrorCode::NotConnected as u16);
    assert_eq!(r.close_code().await, ErrorCode::NotConnected as u64);

    // A CONNECT whose body does not decode: before CONNECTED every error is fatal, and
    // the error frame (naming the connect by its readable correlation id) comes first.
    let mut r = raw_connect(addr).await;
    let mut body = vec![0x82];
    body.extend_from_slice(&msgpack_str("versions"));
    body.extend_from_slice(&msgpack_str("one"));
    body.extend_from_slice(&msgpack_str("correlation_id"));
    body.push(42);
    r.send.write_all(&frame(0x01, &body)).await.unwrap();
    let e = r.error().await;
    assert_eq!(e.code, ErrorCode::MalformedBody as u16);
    assert_eq!(e.correlation_id, Some(42));
    assert_eq!(r.close_code().await, ErrorCode::MalformedBody as u64);

    // Random garbage instead of a frame.
    let mut r = raw_connect(addr).await;
    r.send
        .write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 1, 2, 3])
        .await
        .unwrap();
    let code = r.close_code().await;
    assert!(
        code == ErrorCode::UnsupportedVersion as u64 || code == ErrorCode::Protocol as u64,
        "code {code}"
    );

    // The well-behaved clients never noticed.
    good_pub
        .publish("good.news", "still here".into(), Qos::AtLeastOnce)
        .await
        .unwrap();
    let m = recv(&mut good_sub).await;
    assert_eq!(&m.payload[..], b"still here");

    // And every case was counted.
    for code in [
        "frame_too_large",
        "unsupported_version",
        "truncated",
        "unknown_type",
        "malformed_body",
        "invalid_topic",
        "unknown_realm",
        "not_connected",
    ] {
        let v = metric(
            admin,
            &format!("macula_protocol_errors_total{{code=\"{code}\"}}"),
        );
        assert!(v >= 1.0, "{code} counted: {v}");
    }
    f.stop().await;
}

/// Gossip from a mesh peer: a forged sender, another cluster's store, a malformed state, a
/// register far in the future, a type mismatch and a replayed message are each refused and
/// counted; the node's state is never corrupted, and a valid delta from the same peer merges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gossip_is_refused_counted_and_state_survives() {
    use macula::crdt::{ActorId, CrdtMap, Hlc, Limits, Op};
    let mut f = fleet();
    let n = common::lone_node(&mut f, "gnode", "127.0.0.6");
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (addr, admin) = (f.procs[n].quic, f.procs[n].admin);
    let c = client(addr).await;
    c.crdt_update("hits", macula::crdt::Op::Increment(3))
        .await
        .unwrap();

    // A mesh peer of cluster "c".
    let mut r = raw_connect(addr).await;
    let peer = r.identity.node_id();
    let hello = r.sign(Connect {
        versions: vec![wire::PROTOCOL_VERSION],
        node_id: peer,
        realm: "io.macula".into(),
        cluster: "c".into(),
        role: Role::Node,
        capabilities: vec!["mesh".into()],
        max_frame_size: wire::DEFAULT_MAX_FRAME_SIZE,
        correlation_id: 1,
        proof: None,
        credential: None,
    });
    r.send.write_all(&hello).await.unwrap();
    assert!(matches!(r.next().await, Some(Frame::Connected(_))));
    let l = Limits::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let encode = |m: &CrdtMap| {
        let mut v = Vec::new();
        m.encode(&mut v);
        Bytes::from(v)
    };
    let push = |sender: [u8; 32], scope: &str, state: Bytes| {
        Frame::GossipPush(wire::GossipPush {
            realm: "io.macula".into(),
            scope: scope.into(),
            sender,
            part: 0,
            parts: 1,
            state,
        })
        .to_bytes()
    };
    let mut good = CrdtMap::new();
    good.apply(
        "tags",
        Op::SetAdd("from-peer".into()),
        ActorId(peer),
        Hlc::default(),
        &l,
    )
    .unwrap();

    // Forged sender and another cluster's store: error frames.
    r.send
        .write_all(&push([8; 32], "c", encode(&good)))
        .await
        .unwrap();
    assert_eq!(r.error_code().await, ErrorCode::Protocol as u16);
    r.send
        .write_all(&push(peer, "other", encode(&good)))
        .await
        .unwrap();
    assert_eq!(r.error_code().await, ErrorCode::UnknownRealm as u16);
    // A state over the 64 KiB gossip bound: refused by the decoder, error frame.
    r.send
        .write_all(&push(
            peer,
            "c",
            Bytes::from(vec![0u8; wire::MAX_GOSSIP_STATE + 1]),
        ))
        .await
        .unwrap();
    assert_eq!(r.error_code().await, ErrorCode::MalformedBody as u16);
    // Garbage state, a register ten minutes ahead, a type mismatch: refused by the engine.
    r.send
        .write_all(&push(
            peer,
            "c",
            Bytes::from_static(&[0x93, 0xff, 0x00, 0x01]),
        ))
        .await
        .unwrap();
    let mut future = CrdtMap::new();
    let ahead = Hlc {
        wall_ms: now + 600_000,
        logical: 0,
    };
    future
        .apply(
            "color",
            Op::Put("mine-forever".into()),
            ActorId(peer),
            ahead,
            &l,
        )
        .unwrap();
    r.send
        .write_all(&push(peer, "c", encode(&future)))
        .await
        .unwrap();
    let mut clash = CrdtMap::new();
    clash
        .apply(
            "hits",
            Op::SetAdd("x".into()),
            ActorId(peer),
            Hlc::default(),
            &l,
        )
        .unwrap();
    r.send
        .write_all(&push(peer, "c", encode(&clash)))
        .await
        .unwrap();
    // A valid delta, then the same bytes again (a replay).
    r.send
        .write_all(&push(peer, "c", encode(&good)))
        .await
        .unwrap();
    r.send
        .write_all(&push(peer, "c", encode(&good)))
        .await
        .unwrap();
    r.still_alive().await;

    common::poll(
        Duration::from_secs(10),
        "valid delta merged",
        || async move {
            let (_, body) = common::spawn::http_get(admin, "/state").ok()?;
            body.contains("from-peer").then_some(())
        },
    )
    .await;
    let (_, body) = common::spawn::http_get(admin, "/state").unwrap();
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["hits"], 3, "the counter survived the type clash: {s}");
    assert!(
        s.get("color").is_none(),
        "the future register was refused: {s}"
    );
    for reason in [
        "bad_frame",
        "forged",
        "wrong_scope",
        "malformed",
        "clock_skew",
        "type_mismatch",
        "duplicate",
    ] {
        let v = metric(
            admin,
            &format!("macula_gossip_refused_total{{reason=\"{reason}\"}}"),
        );
        assert!(v >= 1.0, "{reason} counted: {v}");
    }
    // The node still serves its client.
    assert_eq!(
        c.get("hits").await.unwrap(),
        Some(macula::crdt::Value::GCounter(3))
    );
    f.stop().await;
}

/// Identity at `connect` (`docs/AUTH.md`, "Identity"), against a bridge and a node: a
/// `connect` with no proof, one claiming another's node id, and one replaying another
/// connection's proof are each refused with `UNAUTHENTICATED` (error frame with the
/// correlation id, then the close) and counted by reason; a witness keeps its round trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unproven_node_id_is_refused_and_counted() {
    let (f, b, na, _nb) = common::bridge_and_two_nodes().await;
    let node = f.procs[na].quic;
    let witness_sub = client(node).await;
    let mut sub = witness_sub.subscribe("witness.*").await.unwrap();
    let witness = client(node).await;
    common::wait_route(&witness, &mut sub, "witness.x").await;
    for (who, at) in [("bridge", b), ("node", na)] {
        let addr = f.procs[at].quic;
        let admin = f.procs[at].admin;
        let role = if who == "bridge" {
            Role::Node
        } else {
            Role::Client
        };
        let hello = Connect {
            role,
            cluster: if who == "bridge" {
                "z".into()
            } else {
                String::new()
            },
            correlation_id: 77,
            ..connect_frame("io.macula")
        };
        let refused = |r: &str| format!("macula_connections_rejected_total{{reason=\"{r}\"}}");
        let before = (
            metric(admin, &refused("no_proof")),
            metric(admin, &refused("bad_proof")),
        );

        // No proof at all.
        let mut r = raw_connect(addr).await;
        r.send
            .write_all(&Frame::Connect(hello.clone()).to_bytes())
            .await
            .unwrap();
        let e = r.error().await;
        assert_eq!(
            (e.code, e.correlation_id),
            (ErrorCode::Unauthenticated as u16, Some(77)),
            "{who}: no proof"
        );
        assert_eq!(r.close_code().await, ErrorCode::Unauthenticated as u64);

        // Another's node id, proven with my key.
        let mut r = raw_connect(addr).await;
        let victim = Identity::generate();
        let claim = Connect {
            node_id: victim.node_id(),
            proof: Some(r.identity.prove_on(&r.conn, Side::Initiator).unwrap()),
            ..hello.clone()
        };
        r.refused(claim, &format!("{who}: claimed id")).await;

        // A proof made on one connection replayed on another.
        let first = raw_connect(addr).await;
        let replayed = Connect {
            node_id: first.identity.node_id(),
            proof: Some(
                first
                    .identity
                    .prove_on(&first.conn, Side::Initiator)
                    .unwrap(),
            ),
            ..hello.clone()
        };
        let mut r = raw_connect(addr).await;
        r.refused(replayed, &format!("{who}: replay")).await;

        let after = (
            metric(admin, &refused("no_proof")),
            metric(admin, &refused("bad_proof")),
        );
        assert_eq!(after.0 - before.0, 1.0, "{who}: no_proof counted");
        assert_eq!(after.1 - before.1, 2.0, "{who}: bad_proof counted");
        let code = "macula_protocol_errors_total{code=\"unauthenticated\"}";
        assert!(
            metric(admin, code) >= 3.0,
            "{who}: unauthenticated errors counted"
        );
        drop(first);

        // The witness's round trips go on.
        witness
            .publish(
                "witness.x",
                Bytes::from_static(b"still here"),
                Qos::AtLeastOnce,
            )
            .await
            .unwrap();
        assert_eq!(&recv(&mut sub).await.payload[..], b"still here");
    }
}

async fn raw_send(addr: SocketAddr, connect: Connect) -> Raw {
    let mut r = raw_connect(addr).await;
    let hello = r.sign(connect);
    r.send.write_all(&hello).await.unwrap();
    r
}

fn node_connect(cluster: &str, capabilities: Vec<String>) -> Connect {
    Connect {
        versions: vec![wire::PROTOCOL_VERSION],
        node_id: [9; 32],
        realm: "io.macula".into(),
        cluster: cluster.into(),
        role: Role::Node,
        capabilities,
        max_frame_size: wire::DEFAULT_MAX_FRAME_SIZE,
        correlation_id: 1,
        proof: None,
        credential: None,
    }
}

/// Fleet bad input (docs/FLEET.md): a worker of another fleet or with other settings is
/// refused with FLEET_MISMATCH and counted; a node redirected too often is served where it
/// is (the redirect-loop bound) and counted; the fleet keeps its own link throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_refuses_strangers_and_bounds_redirect_loops() {
    let mut f = fleet();
    let (q1, q2) = (
        common::spawn::free_udp("127.0.0.81").unwrap(),
        common::spawn::free_udp("127.0.0.82").unwrap(),
    );
    let w1 = f
        .bridge_at(
            "worker-1",
            q1,
            &["--fleet", "f", "--fleet-peer", &q2.to_string()],
        )
        .unwrap();
    let w2 = f
        .bridge_at(
            "worker-2",
            q2,
            &["--fleet", "f", "--fleet-peer", &q1.to_string()],
        )
        .unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let admin1 = f.procs[w1].admin;
    let linked = |admin| async move {
        let (_, body) = common::spawn::http_get(admin, "/fleet").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let members = v["members"].as_array()?;
        (members.len() == 2 && members.iter().filter(|m| m["linked"] == true).count() == 1)
            .then_some(())
    };
    common::poll(Duration::from_secs(20), "workers linked", || linked(admin1)).await;

    // A worker of another fleet, then one of this fleet with other settings.
    for (caps, reason) in [
        (vec!["fleet-peer", "fleet=other", "fleet-config=0"], "fleet"),
        (
            vec!["fleet-peer", "fleet=f", "fleet-config=0000000000000000"],
            "config",
        ),
    ] {
        let mut c = node_connect("fleet", caps.into_iter().map(String::from).collect());
        c.node_id = [0xee; 32];
        let mut r = raw_send(q1, c).await;
        assert_eq!(r.error_code().await, ErrorCode::FleetMismatch as u16);
        let sample = format!("macula_fleet_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(admin1, &sample), 1.0, "{sample}");
    }

    // Find a cluster worker-2 owns: worker-1 redirects its node there.
    let mut owned_by_2 = None;
    for i in 0..64 {
        let cluster = format!("c{i}");
        let mut r = raw_send(q1, node_connect(&cluster, vec![])).await;
        match r.next().await {
            Some(Frame::Redirect(rd)) => {
                assert_eq!(rd.addr, q2.to_string());
                owned_by_2 = Some(cluster);
                break;
            }
            Some(Frame::Connected(_)) => continue,
            other => panic!("expected connected or redirect, got {other:?}"),
        }
    }
    let cluster = owned_by_2.expect("one of 64 clusters hashes to worker-2");
    assert!(
        metric(
            admin1,
            "macula_fleet_redirects_sent_total{reason=\"connect\"}"
        ) >= 1.0
    );
    // A node that says it was redirected 3 times in a row is served where it is.
    let caps = vec![format!("{}3", macula::bridge::fleet::CAP_REDIRECTS)];
    let mut r = raw_send(q1, node_connect(&cluster, caps)).await;
    assert!(matches!(r.next().await, Some(Frame::Connected(_))));
    assert_eq!(
        metric(
            admin1,
            "macula_fleet_refused_total{reason=\"redirect_loop\"}"
        ),
        1.0
    );
    r.still_alive().await;
    // The workers' own link survived all of it.
    common::poll(Duration::from_secs(5), "workers still linked", || {
        linked(admin1)
    })
    .await;
    assert_eq!(metric(f.procs[w2].admin, "macula_fleet_peer_links"), 1.0);
}

/// Client-side protocol rules against a node under a bridge (docs/PROTOCOL.md §2, §5, §6, §8):
/// QoS 1 acks say `no_route` when nobody wanted a publish and for a refused one, non-zero
/// flags are refused, malformed ping / puback / subscribe / register bodies get error frames
/// naming their request, a call over the hop limit is refused, and a subscriber that stops
/// reading is closed with SLOW_CONSUMER at once and loses its routes. All counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_errors_hops_and_slow_consumers_follow_the_protocol() {
    let (mut f, _b, na, _nb) = common::bridge_and_two_nodes().await;
    let (addr, admin) = (f.procs[na].quic, f.procs[na].admin);
    let mut r = Raw::handshake(addr).await;

    // Nobody subscribes to `nobody.x`: once the node knows the bridge's interest, a QoS 1
    // publish is acknowledged in `no_route` (before that it goes into the uplink's custody).
    let mut n = 1;
    loop {
        let id = r.publish_qos1("nobody.x", n, 0).await;
        if r.ack_of(id).await.0 {
            break;
        }
        assert!(n < 100, "no no_route within 100 publishes");
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Refused publishes: an error frame and `no_route`, so the client stops re-sending.
    for (topic, flags, code) in [
        ("bad..topic", 0, ErrorCode::InvalidTopic),
        ("nobody.x", 1, ErrorCode::MalformedBody),
    ] {
        let id = r.publish_qos1(topic, 200 + flags, flags).await;
        let (no_route, mut errors) = r.ack_of(id).await;
        assert!(no_route, "{topic}: refused publish acked in no_route");
        if errors.is_empty() {
            errors.push(r.error().await);
        }
        assert_eq!(errors[0].code, code as u16, "{topic}");
        assert!(errors[0].message.contains(&format!("{:02x}", 200 + flags)));
    }

    // Malformed bodies are answered, with the correlation id when it is readable.
    let corr = |key: &str, value: u8| {
        let mut v = msgpack_str(key);
        v.push(value);
        v
    };
    let mut ping = vec![0x81];
    ping.extend(corr("correlation_id", 5));
    ping.push(0xc0); // trailing bytes after the map
    let mut puback = vec![0x81];
    puback.extend(corr("ids", 1));
    let mut sub = vec![0x83];
    sub.extend(msgpack_str("topics"));
    sub.extend([0x91, 0xa1, b'a']);
    sub.extend(corr("qos", 2));
    sub.extend(corr("correlation_id", 6));
    let mut bad_sub = vec![0x82];
    bad_sub.extend(corr("topics", 1));
    bad_sub.extend(corr("correlation_id", 7));
    let mut reg = vec![0x82];
    reg.extend(corr("correlation_id", 8));
    reg.extend(corr("procedures", 1));
    for (t, body, code, want) in [
        (0x03, ping, ErrorCode::MalformedBody, Some(5)),
        (0x14, puback, ErrorCode::MalformedBody, None),
        (0x11, sub, ErrorCode::UnsupportedQos, Some(6)),
        (0x12, bad_sub, ErrorCode::MalformedBody, Some(7)),
        (0x26, reg, ErrorCode::MalformedBody, Some(8)),
    ] {
        r.send.write_all(&frame(t, &body)).await.unwrap();
        let e = r.error().await;
        assert_eq!(
            (e.code, e.correlation_id),
            (code as u16, want),
            "type {t:#04x}"
        );
    }
    r.still_alive().await;

    // A call over the hop limit is refused, not served.
    let call = Frame::Call(wire::Call {
        call_id: 3,
        procedure: "svc.echo".into(),
        args: Bytes::new(),
        timeout_ms: 1_000,
        origin: [0; 32],
        hops: wire::MAX_HOPS + 1,
        target: None,
    });
    r.send.write_all(&call.to_bytes()).await.unwrap();
    loop {
        match r.next().await {
            Some(Frame::Reply(rep)) => {
                assert_eq!(rep.call_id, 3);
                let e = rep.result.expect_err("refused");
                assert_eq!(e.code, wire::RpcError::HOPS_EXCEEDED);
                break;
            }
            Some(_) => continue,
            None => panic!("closed"),
        }
    }

    // A subscriber that stops reading: closed with SLOW_CONSUMER once a write toward it has
    // waited `slow_consumer_timeout_ms` (2 s), long before QUIC's idle timeout.
    let mut slow = Raw::handshake(addr).await;
    let s = Frame::Subscribe(Subscribe {
        topics: vec!["slow.*".into()],
        qos: Qos::AtMostOnce,
        correlation_id: 1,
    });
    slow.send.write_all(&s.to_bytes()).await.unwrap();
    while !matches!(slow.next().await, Some(Frame::SubAck(_))) {}
    let publisher = client(addr).await;
    let payload = Bytes::from(vec![0u8; 16 * 1024]);
    let started = std::time::Instant::now();
    let closed = slow.conn.clone();
    let flood = async {
        loop {
            let _ = publisher
                .publish("slow.x", payload.clone(), Qos::AtMostOnce)
                .await;
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        _ = flood => unreachable!(),
        _ = closed.closed() => {}
    }
    assert_eq!(slow.close_code().await, ErrorCode::SlowConsumer as u64);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // Its route is gone: a QoS 1 publish to its topic now finds nobody.
    let id = r.publish_qos1("slow.x", 250, 0).await;
    assert!(
        r.ack_of(id).await.0,
        "the slow consumer's route was removed"
    );

    for code in [
        "slow_consumer",
        "malformed_body",
        "unsupported_qos",
        "invalid_topic",
    ] {
        let v = metric(
            admin,
            &format!("macula_protocol_errors_total{{code=\"{code}\"}}"),
        );
        assert!(v >= 1.0, "{code} counted: {v}");
    }
    f.stop().await;
}

/// Issue 12's probe: a mesh peer set the node's own G-Counter entry to 2^64 − 1, after which
/// every increment failed with "counter overflow". It learns the node's CRDT actor from the
/// node's own anti-entropy digest, then pushes the forged entry: the key is refused
/// (`forged_actor`, an audit line) and the client's increments keep counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_peer_cannot_forge_the_nodes_own_counter() {
    use macula::crdt::{ActorId, Crdt, CrdtMap, Digest, GCounter, Limits, Summary};
    let mut f = fleet();
    let n = common::lone_node(&mut f, "fnode", "127.0.0.7");
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (addr, admin) = (f.procs[n].quic, f.procs[n].admin);
    let c = client(addr).await;
    c.crdt_update("hits", macula::crdt::Op::Increment(3))
        .await
        .unwrap();

    let mut r = raw_connect(addr).await;
    let peer = r.identity.node_id();
    let hello = r.sign(Connect {
        cluster: "c".into(),
        capabilities: vec!["mesh".into()],
        ..node_connect("c", vec![])
    });
    r.send.write_all(&hello).await.unwrap();
    assert!(matches!(r.next().await, Some(Frame::Connected(_))));
    // The node starts anti-entropy with a new peer: its digest names its actor in "hits".
    let actor: ActorId = loop {
        match r.next().await {
            Some(Frame::GossipPull(p)) => {
                let d = Digest::decode(&p.digest, &Limits::default()).unwrap();
                if let Some(Summary::GCounter(g)) = d.entries.get("hits") {
                    break *g.counts.keys().next().expect("the node's entry");
                }
            }
            Some(_) => continue,
            None => panic!("no digest from the node"),
        }
    };
    let mut forged = CrdtMap::new();
    forged.insert(
        "hits".into(),
        Crdt::GCounter(GCounter {
            counts: [(actor, u64::MAX)].into(),
            base: Default::default(),
        }),
    );
    let mut state = Vec::new();
    forged.encode(&mut state);
    let push = Frame::GossipPush(wire::GossipPush {
        realm: "io.macula".into(),
        scope: "c".into(),
        sender: peer,
        part: 0,
        parts: 1,
        state: state.into(),
    });
    r.send.write_all(&push.to_bytes()).await.unwrap();
    r.still_alive().await;
    common::poll(Duration::from_secs(10), "forgery counted", || async move {
        let v = metric(
            admin,
            "macula_gossip_refused_total{reason=\"forged_actor\"}",
        );
        (v >= 1.0).then_some(())
    })
    .await;
    c.crdt_update("hits", macula::crdt::Op::Increment(1))
        .await
        .expect("the node's own increments keep working");
    assert_eq!(
        c.get("hits").await.unwrap(),
        Some(macula::crdt::Value::GCounter(4))
    );
    f.stop().await;
}
