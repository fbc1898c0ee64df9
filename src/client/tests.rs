//! Client tests against an in-process fake node: a quinn server that speaks the session
//! handshake and then answers (or not) what the test tells it to. RPC: `register`,
//! `unregister`, calls in both directions, limits, timeouts and reconnects.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tempfile::TempDir;
use tokio::sync::Notify;

use super::*;
use crate::session::{accept_session, next_frame};
use crate::wire::{Call, Connected, ErrorFrame, Frame, FrameDecoder, Reply, RpcError, SubAck};

/// Longest a test waits for one frame or one outcome.
const WAIT: Duration = Duration::from_secs(5);

const ECHO: &str = "io.test.echo";

/// The accepting side of one client session.
struct FakeNode {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
    max_frame: u32,
}

impl FakeNode {
    /// Accepts the next connection, reads `CONNECT` and answers `CONNECTED` announcing
    /// `max_frame` as the node's max frame size.
    async fn accept(server: &Endpoint, max_frame: u32) -> FakeNode {
        let incoming = tokio::time::timeout(WAIT, server.accept())
            .await
            .expect("a connection within 5 s")
            .expect("endpoint open");
        let conn = incoming.await.expect("QUIC handshake");
        let (mut send, recv, decoder, connect) =
            accept_session(&conn, wire::DEFAULT_MAX_FRAME_SIZE)
                .await
                .expect("CONNECT");
        let me = crate::identity::Identity::generate();
        let welcome = Frame::Connected(Connected {
            version: wire::PROTOCOL_VERSION,
            node_id: me.node_id(),
            realm: connect.realm,
            max_frame_size: max_frame,
            max_inflight: 64,
            keepalive_ms: 5_000,
            correlation_id: connect.correlation_id,
            proof: Some(
                me.prove_on(&conn, crate::identity::Side::Acceptor)
                    .expect("exporter"),
            ),
            credential: None,
        });
        send.write_all(&welcome.to_bytes())
            .await
            .expect("CONNECTED");
        FakeNode {
            conn,
            send,
            recv,
            decoder,
            max_frame,
        }
    }

    /// The next frame from the client other than `ping` (answered) and `puback`.
    async fn frame(&mut self) -> Frame {
        loop {
            let raw = tokio::time::timeout(WAIT, next_frame(&mut self.recv, &mut self.decoder))
                .await
                .expect("a frame within 5 s")
                .expect("stream open");
            match raw.decode().expect("well-formed frame") {
                Frame::Ping(p) => {
                    self.send(Frame::Pong(wire::Pong {
                        correlation_id: p.correlation_id,
                    }))
                    .await
                }
                Frame::PubAck(_) => {}
                f => return f,
            }
        }
    }

    async fn send(&mut self, f: Frame) {
        let mut buf = BytesMut::new();
        f.encode_limited(&mut buf, self.max_frame.max(wire::DEFAULT_MAX_FRAME_SIZE))
            .expect("encodes");
        self.send.write_all(&buf).await.expect("write");
    }

    /// Expects a `register` of exactly `procedures` and answers `suback`.
    async fn ack_register(&mut self, procedures: &[&str]) -> u64 {
        match self.frame().await {
            Frame::Register(r) => {
                assert_eq!(r.procedures, procedures);
                self.send(Frame::SubAck(SubAck {
                    correlation_id: r.correlation_id,
                    count: procedures.len() as u32,
                }))
                .await;
                r.correlation_id
            }
            other => panic!("expected register, got {other:?}"),
        }
    }

    /// Expects an `unregister` of `procedure` and answers `suback` (count 0).
    async fn ack_unregister(&mut self, procedure: &str) {
        match self.frame().await {
            Frame::Unregister(u) => {
                assert_eq!(u.procedures, [procedure]);
                self.send(Frame::SubAck(SubAck {
                    correlation_id: u.correlation_id,
                    count: 0,
                }))
                .await;
            }
            other => panic!("expected unregister, got {other:?}"),
        }
    }

    /// Sends a `call` to the client and returns the `reply`'s result.
    async fn invoke(
        &mut self,
        call_id: u64,
        procedure: &str,
        args: &[u8],
    ) -> Result<Bytes, RpcError> {
        self.send(node_call(call_id, procedure, args)).await;
        self.reply_to(call_id).await
    }

    /// The next frame, which must be the `reply` to `call_id`.
    async fn reply_to(&mut self, call_id: u64) -> Result<Bytes, RpcError> {
        match self.frame().await {
            Frame::Reply(r) => {
                assert_eq!(r.call_id, call_id);
                r.result
            }
            other => panic!("expected reply, got {other:?}"),
        }
    }

    /// Expects a `call` from the client and returns it.
    async fn expect_call(&mut self) -> Call {
        match self.frame().await {
            Frame::Call(c) => c,
            other => panic!("expected call, got {other:?}"),
        }
    }

    async fn answer(&mut self, call_id: u64, result: Result<Bytes, RpcError>) {
        self.send(Frame::Reply(Reply { call_id, result })).await;
    }
}

fn node_call(call_id: u64, procedure: &str, args: &[u8]) -> Frame {
    Frame::Call(Call {
        call_id,
        procedure: procedure.into(),
        args: Bytes::copy_from_slice(args),
        timeout_ms: 5_000,
        origin: [7; 32],
        hops: 0,
        target: Some([9; 32]),
    })
}

/// A fake node's endpoint and the data dir holding its development certificate.
struct Server {
    endpoint: Endpoint,
    dir: TempDir,
}

fn server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = ClientOptions::default();
    let endpoint = crate::transport::server_endpoint(
        "127.0.0.1:0".parse().expect("literal"),
        &opts.tls,
        &opts.transport,
        dir.path(),
    )
    .expect("server endpoint");
    Server { endpoint, dir }
}

fn options(server: &Server) -> ClientOptions {
    ClientOptions {
        addr: server.endpoint.local_addr().expect("bound").to_string(),
        data_dir: server.dir.path().into(),
        reconnect: false,
        reconnect_initial_backoff: Duration::from_millis(10),
        reconnect_max_backoff: Duration::from_millis(50),
        ..ClientOptions::default()
    }
}

/// A client connected to a fresh fake node announcing `max_frame`.
async fn connected(opts: ClientOptions, server: &Server, max_frame: u32) -> (Client, FakeNode) {
    let (client, node) = tokio::join!(
        Client::connect(opts),
        FakeNode::accept(&server.endpoint, max_frame)
    );
    (client.expect("client connects"), node)
}

async fn pair() -> (Server, Client, FakeNode) {
    let s = server();
    let (c, n) = connected(options(&s), &s, wire::DEFAULT_MAX_FRAME_SIZE).await;
    (s, c, n)
}

/// Echoes its arguments, except for a few magic ones that fail in different ways.
async fn test_handler(args: Bytes) -> Result<Bytes, RpcError> {
    match &args[..] {
        b"remote" => Err(RpcError::new(RpcError::REMOTE, "it broke")),
        b"app" => Err(RpcError::new(1000, "application code")),
        b"invalid" => Err(RpcError::new(RpcError::INVALID, "bad args")),
        b"panic" => panic!("handler panics on purpose"),
        _ => Ok(args),
    }
}

fn err(code: u16, message: &str) -> Result<Bytes, RpcError> {
    Err(RpcError::new(code, message))
}

#[test]
fn call_error_maps_rpc_codes_and_names_kinds() {
    let m = |code| CallError::from_rpc(RpcError::new(code, "m"));
    assert_eq!(m(RpcError::NO_PROVIDER), CallError::NoProvider);
    assert_eq!(m(RpcError::TIMEOUT), CallError::Timeout);
    assert_eq!(
        m(RpcError::ALL_PROVIDERS_FAILED),
        CallError::AllProvidersFailed
    );
    assert_eq!(m(RpcError::UNREACHABLE), CallError::AllProvidersFailed);
    assert_eq!(m(RpcError::OVERLOADED), CallError::Overloaded);
    assert_eq!(m(RpcError::INVALID), CallError::Invalid("m".into()));
    assert_eq!(
        m(RpcError::PERMISSION_DENIED),
        CallError::PermissionDenied("m".into())
    );
    assert_eq!(
        m(RpcError::LIMIT_EXCEEDED),
        CallError::LimitExceeded("m".into())
    );
    for code in [
        0,
        RpcError::REMOTE,
        RpcError::HOPS_EXCEEDED,
        RpcError::UNKNOWN_PROCEDURE,
        12,
        u16::MAX,
    ] {
        assert_eq!(
            m(code),
            CallError::Remote {
                code,
                message: "m".into()
            }
        );
    }
    let kinds = [
        (CallError::NoProvider, "no_provider"),
        (CallError::Timeout, "timeout"),
        (CallError::AllProvidersFailed, "all_providers_failed"),
        (
            CallError::Remote {
                code: 4,
                message: String::new(),
            },
            "remote",
        ),
        (CallError::Closed, "closed"),
        (CallError::Overloaded, "overloaded"),
        (CallError::Invalid(String::new()), "invalid"),
    ];
    for (e, kind) in kinds {
        assert_eq!(e.kind(), kind);
    }
}

#[tokio::test]
async fn registered_handler_answers_node_calls() {
    let (_s, client, mut node) = pair().await;
    let (reg, _) = tokio::join!(
        client.register(ECHO, test_handler),
        node.ack_register(&[ECHO])
    );
    let reg = reg.expect("registered");
    assert_eq!(reg.procedure(), ECHO);

    assert_eq!(
        node.invoke(7, ECHO, b"hi").await,
        Ok(Bytes::from_static(b"hi"))
    );
    assert_eq!(node.invoke(8, ECHO, b"").await, Ok(Bytes::new()));
    assert_eq!(node.invoke(9, ECHO, b"remote").await, err(4, "it broke"));
    // An application code is not a known RPC code: sent as REMOTE with the message.
    assert_eq!(
        node.invoke(10, ECHO, b"app").await,
        err(4, "application code")
    );
    assert_eq!(node.invoke(11, ECHO, b"invalid").await, err(9, "bad args"));
    assert_eq!(
        node.invoke(12, ECHO, b"panic").await,
        err(4, "handler panicked")
    );
    let unknown = node.invoke(13, "io.test.nobody", b"x").await;
    assert_eq!(
        unknown.map_err(|e| e.code),
        Err(RpcError::UNKNOWN_PROCEDURE)
    );
    assert_eq!(client.stats().handled, 6);
}

#[tokio::test]
async fn refused_or_invalid_registration_is_an_error() {
    let (_s, client, mut node) = pair().await;
    let bad = client.register("has space", test_handler).await;
    assert!(
        matches!(bad, Err(ClientError::InvalidProcedure { .. })),
        "{bad:?}"
    );
    let refuse = async {
        match node.frame().await {
            Frame::Register(r) => {
                node.send(Frame::Error(ErrorFrame {
                    code: 15,
                    message: "too many procedures".into(),
                    correlation_id: Some(r.correlation_id),
                }))
                .await
            }
            other => panic!("expected register, got {other:?}"),
        }
    };
    let (r, _) = tokio::join!(client.register(ECHO, test_handler), refuse);
    match r {
        Err(ClientError::Refused { code, message }) => {
            assert_eq!((code, message.as_str()), (15, "too many procedures"))
        }
        other => panic!("expected refused, got {other:?}"),
    }
    // No handler is left behind, and nothing else was sent (the invalid name never left).
    let r = node.invoke(1, ECHO, b"x").await;
    assert_eq!(r.map_err(|e| e.code), Err(RpcError::UNKNOWN_PROCEDURE));
}

#[tokio::test]
async fn registering_again_replaces_the_handler() {
    let (_s, client, mut node) = pair().await;
    let (first, _) = tokio::join!(
        client.register(ECHO, |_| async { Ok(Bytes::from_static(b"first")) }),
        node.ack_register(&[ECHO])
    );
    let (second, _) = tokio::join!(
        client.register(ECHO, |_| async { Ok(Bytes::from_static(b"second")) }),
        node.ack_register(&[ECHO])
    );
    let (first, second) = (first.expect("first"), second.expect("second"));
    assert_eq!(
        node.invoke(1, ECHO, b"").await,
        Ok(Bytes::from_static(b"second"))
    );
    // The replaced registration no longer owns the procedure: dropping it sends nothing
    // and the newer handler stays.
    drop(first);
    assert_eq!(
        node.invoke(2, ECHO, b"").await,
        Ok(Bytes::from_static(b"second"))
    );
    let (r, _) = tokio::join!(second.unregister(), node.ack_unregister(ECHO));
    r.expect("unregistered");
    let r = node.invoke(3, ECHO, b"").await;
    assert_eq!(r.map_err(|e| e.code), Err(RpcError::UNKNOWN_PROCEDURE));
}

#[tokio::test]
async fn dropping_a_registration_unregisters_it() {
    let (_s, client, mut node) = pair().await;
    let (reg, _) = tokio::join!(
        client.register(ECHO, test_handler),
        node.ack_register(&[ECHO])
    );
    drop(reg.expect("registered"));
    match node.frame().await {
        Frame::Unregister(u) => assert_eq!(u.procedures, [ECHO]),
        other => panic!("expected unregister, got {other:?}"),
    }
    let r = node.invoke(1, ECHO, b"x").await;
    assert_eq!(r.map_err(|e| e.code), Err(RpcError::UNKNOWN_PROCEDURE));
}

#[tokio::test]
async fn handlers_beyond_the_limit_are_answered_overloaded() {
    let s = server();
    let opts = ClientOptions {
        rpc_max_handlers: 1,
        ..options(&s)
    };
    let (client, mut node) = connected(opts, &s, wire::DEFAULT_MAX_FRAME_SIZE).await;
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let handler = move |args: Bytes| {
        let g = g.clone();
        async move {
            g.notified().await;
            Ok(args)
        }
    };
    let (reg, _) = tokio::join!(client.register(ECHO, handler), node.ack_register(&[ECHO]));
    let _reg = reg.expect("registered");
    node.send(node_call(1, ECHO, b"slow")).await;
    let r = node.invoke(2, ECHO, b"fast").await;
    assert_eq!(r.map_err(|e| e.code), Err(RpcError::OVERLOADED));
    gate.notify_one();
    assert_eq!(node.reply_to(1).await, Ok(Bytes::from_static(b"slow")));
    // The slot is free again.
    node.send(node_call(3, ECHO, b"again")).await;
    gate.notify_one();
    assert_eq!(node.reply_to(3).await, Ok(Bytes::from_static(b"again")));
}

#[tokio::test]
async fn call_sends_call_and_maps_the_reply() {
    let (_s, client, mut node) = pair().await;
    let answer = async {
        let c = node.expect_call().await;
        assert_eq!(c.procedure, ECHO);
        assert_eq!(&c.args[..], b"ping");
        assert_eq!(c.timeout_ms, 2_000);
        assert_eq!((c.origin, c.hops, c.target), ([0; 32], 0, None));
        node.answer(c.call_id, Ok(Bytes::from_static(b"pong")))
            .await;
    };
    let (r, _) = tokio::join!(
        client.call(ECHO, Bytes::from_static(b"ping"), Duration::from_secs(2)),
        answer
    );
    assert_eq!(r, Ok(Bytes::from_static(b"pong")));

    let cases = [
        (RpcError::NO_PROVIDER, CallError::NoProvider),
        (RpcError::TIMEOUT, CallError::Timeout),
        (
            RpcError::ALL_PROVIDERS_FAILED,
            CallError::AllProvidersFailed,
        ),
        (RpcError::UNREACHABLE, CallError::AllProvidersFailed),
        (RpcError::OVERLOADED, CallError::Overloaded),
        (RpcError::INVALID, CallError::Invalid("m".into())),
        (
            RpcError::REMOTE,
            CallError::Remote {
                code: 4,
                message: "m".into(),
            },
        ),
        (
            RpcError::UNKNOWN_PROCEDURE,
            CallError::Remote {
                code: 6,
                message: "m".into(),
            },
        ),
    ];
    let mut ids = std::collections::HashSet::new();
    for (code, expected) in cases.clone() {
        let answer = async {
            let c = node.expect_call().await;
            assert!(ids.insert(c.call_id), "call ids are unique");
            node.answer(c.call_id, err(code, "m")).await;
        };
        let (r, _) = tokio::join!(client.call(ECHO, Bytes::new(), WAIT), answer);
        assert_eq!(r, Err(expected));
    }
    let stats = client.stats();
    assert_eq!(stats.calls, 1 + cases.len() as u64);
    assert_eq!(stats.call_errors, cases.len() as u64);
}

/// The one test with a real (short) timer: the QUIC connection needs a running clock.
#[tokio::test]
async fn unanswered_call_times_out_and_its_late_reply_is_dropped() {
    let (_s, client, mut node) = pair().await;
    let (r, c) = tokio::join!(
        client.call(ECHO, Bytes::new(), Duration::from_millis(50)),
        node.expect_call()
    );
    assert_eq!(r, Err(CallError::Timeout));
    assert_eq!(c.timeout_ms, 50);
    node.answer(c.call_id, Ok(Bytes::new())).await;
    // A later call that is answered: its reply comes after the late one on the stream.
    let answer = async {
        let c = node.expect_call().await;
        node.answer(c.call_id, Ok(Bytes::from_static(b"ok"))).await;
    };
    let (r, _) = tokio::join!(client.call(ECHO, Bytes::new(), WAIT), answer);
    assert_eq!(r, Ok(Bytes::from_static(b"ok")));
    let stats = client.stats();
    assert_eq!(
        (stats.late_replies, stats.calls, stats.call_errors),
        (1, 2, 1)
    );
}

#[tokio::test]
async fn invalid_and_excess_calls_are_refused_locally() {
    let s = server();
    let opts = ClientOptions {
        rpc_max_pending: 1,
        ..options(&s)
    };
    let (client, mut node) = connected(opts, &s, 4_096).await;
    let kind = |r: Result<Bytes, CallError>| r.map_err(|e| e.kind());
    let secs = Duration::from_secs(1);
    assert_eq!(
        kind(client.call("", Bytes::new(), secs).await),
        Err("invalid")
    );
    assert_eq!(
        kind(client.call("a b", Bytes::new(), secs).await),
        Err("invalid")
    );
    assert_eq!(
        kind(client.call(ECHO, Bytes::new(), Duration::ZERO).await),
        Err("invalid")
    );
    let big = Bytes::from(vec![0u8; 4_096]);
    assert_eq!(kind(client.call(ECHO, big, secs).await), Err("invalid"));
    // One call in flight fills the table of this client (max 1).
    let first = client.call(ECHO, Bytes::from_static(b"1"), WAIT);
    let rest = async {
        let c = node.expect_call().await;
        assert_eq!(&c.args[..], b"1", "the refused calls were never sent");
        assert_eq!(
            client.call(ECHO, Bytes::new(), secs).await,
            Err(CallError::Overloaded)
        );
        node.answer(c.call_id, Ok(Bytes::new())).await;
    };
    let (r, _) = tokio::join!(first, rest);
    assert_eq!(r, Ok(Bytes::new()));
    // Sub-millisecond timeouts round up to 1 ms.
    let (_, c) = tokio::join!(
        client.call(ECHO, Bytes::new(), Duration::from_micros(10)),
        node.expect_call()
    );
    assert_eq!(c.timeout_ms, 1);
}

#[tokio::test]
async fn lost_connection_fails_calls_at_once_and_reconnect_registers_again() {
    let s = server();
    let opts = ClientOptions {
        reconnect: true,
        ..options(&s)
    };
    let (client, mut node) = connected(opts, &s, wire::DEFAULT_MAX_FRAME_SIZE).await;
    let (reg, _) = tokio::join!(
        client.register(ECHO, test_handler),
        node.ack_register(&[ECHO])
    );
    let _reg = reg.expect("registered");

    // A call in flight when the connection drops fails with Closed, not after 60 s.
    let long = Duration::from_secs(60);
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.call(ECHO, Bytes::new(), long).await })
    };
    node.expect_call().await;
    node.conn.close(0u32.into(), b"node restarts");
    let r = tokio::time::timeout(WAIT, in_flight)
        .await
        .expect("failed within 5 s")
        .expect("task");
    assert_eq!(r, Err(CallError::Closed));

    // A call made during the outage is sent once the session is back, after the client
    // registered its procedures again.
    let queued = {
        let client = client.clone();
        tokio::spawn(async move { client.call(ECHO, Bytes::from_static(b"q"), WAIT).await })
    };
    let mut node = FakeNode::accept(&s.endpoint, wire::DEFAULT_MAX_FRAME_SIZE).await;
    match node.frame().await {
        Frame::Register(r) => {
            assert_eq!(r.correlation_id, 0);
            assert_eq!(r.procedures, [ECHO]);
        }
        other => panic!("expected register first, got {other:?}"),
    }
    let c = node.expect_call().await;
    assert_eq!(&c.args[..], b"q");
    node.answer(c.call_id, Ok(Bytes::from_static(b"back")))
        .await;
    let r = queued.await.expect("task");
    assert_eq!(r, Ok(Bytes::from_static(b"back")));
    // The handler serves the new session.
    assert_eq!(
        node.invoke(1, ECHO, b"hi").await,
        Ok(Bytes::from_static(b"hi"))
    );
    assert_eq!(client.stats().reconnects, 1);
}

#[tokio::test]
async fn closed_client_fails_calls_and_registrations() {
    let (_s, client, mut node) = pair().await;
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call(ECHO, Bytes::new(), Duration::from_secs(60))
                .await
        })
    };
    node.expect_call().await;
    let other = client.clone();
    client.close().await;
    let r = tokio::time::timeout(WAIT, in_flight)
        .await
        .expect("failed within 5 s")
        .expect("task");
    assert_eq!(r, Err(CallError::Closed));
    assert_eq!(
        other.call(ECHO, Bytes::new(), WAIT).await,
        Err(CallError::Closed)
    );
    assert!(matches!(
        other.register(ECHO, test_handler).await,
        Err(ClientError::Closed)
    ));
}

/// QoS 0 publishes the node read are confirmed (its `PONG`s to the client's `PING`s); when
/// the connection then dies, none of them is reported unconfirmed.
#[tokio::test]
async fn qos0_the_node_confirmed_is_not_reported_lost() {
    let (_s, client, mut node) = pair().await;
    publish_qos0(&client, 20).await;
    for _ in 0..20 {
        assert!(matches!(node.frame().await, Frame::Publish(_)));
    }
    // The next tick's PING comes after the 20 publishes; `frame()` answers it.
    let answered = async {
        loop {
            let raw = next_frame(&mut node.recv, &mut node.decoder)
                .await
                .expect("open");
            if let Frame::Ping(p) = raw.decode().expect("decodes") {
                node.send(Frame::Pong(wire::Pong {
                    correlation_id: p.correlation_id,
                }))
                .await;
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, answered).await.expect("a ping");
    // The stream ends after the PONG: the client's reader reads both, in order.
    node.send.finish().expect("finish");
    tokio::time::timeout(WAIT, client.inner.cancel.cancelled())
        .await
        .expect("the session ends (no reconnect)");
    assert_eq!(client.stats().qos0_unconfirmed, 0);
}

/// A node that reads but never confirms: every QoS 0 publish of the session it kills is
/// reported unconfirmed.
#[tokio::test]
async fn qos0_unconfirmed_when_the_session_dies_is_reported() {
    let (_s, client, mut node) = pair().await;
    publish_qos0(&client, 20).await;
    let mut read = 0;
    while read < 20 {
        let raw = tokio::time::timeout(WAIT, next_frame(&mut node.recv, &mut node.decoder))
            .await
            .expect("in time")
            .expect("open");
        read += usize::from(matches!(raw.decode(), Ok(Frame::Publish(_))));
    }
    node.conn.close(0u32.into(), b"gone");
    tokio::time::timeout(WAIT, client.inner.cancel.cancelled())
        .await
        .expect("the session ends (no reconnect)");
    assert_eq!(client.stats().qos0_unconfirmed, 20);
}

/// Publishes `n` QoS 0 messages on `t.a`.
async fn publish_qos0(client: &Client, n: u8) {
    for i in 0..n {
        client
            .publish("t.a", Bytes::from(vec![i]), Qos::AtMostOnce)
            .await
            .expect("accepted");
    }
}

/// Clients given one [`Client::shared_endpoint`] share its UDP socket: the node sees both
/// connections from the same address, each is its own session, and closing one leaves the
/// other working.
#[tokio::test]
async fn clients_share_one_endpoint() {
    let s = server();
    let mut opts = options(&s);
    opts.endpoint = Some(Client::shared_endpoint(&opts).await.expect("endpoint"));
    let (a, node_a) = connected(opts.clone(), &s, wire::DEFAULT_MAX_FRAME_SIZE).await;
    let (b, mut node_b) = connected(opts.clone(), &s, wire::DEFAULT_MAX_FRAME_SIZE).await;
    assert_eq!(
        node_a.conn.remote_address(),
        node_b.conn.remote_address(),
        "one socket"
    );
    assert_ne!(node_a.conn.stable_id(), node_b.conn.stable_id());
    a.close().await;
    publish_qos0(&b, 1).await;
    match node_b.frame().await {
        Frame::Publish(p) => assert_eq!(p.payload, Bytes::from(vec![0u8])),
        other => panic!("expected publish, got {other:?}"),
    }
    // The endpoint the closed client shared still takes new clients.
    let (c, mut node_c) = connected(opts, &s, wire::DEFAULT_MAX_FRAME_SIZE).await;
    publish_qos0(&c, 1).await;
    assert!(matches!(node_c.frame().await, Frame::Publish(_)));
}
