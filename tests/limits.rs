//! The handshake gate on a real node (`src/server/gate.rs`): one source address holds at
//! most `limits.max_connections_per_source` connections (the next is refused and counted,
//! other addresses are still served, a closed connection frees its slot), and with
//! `limits.handshake_retry_above = 0` every unvalidated attempt is answered with a QUIC Retry
//! that a real client follows. And a client's share of its cluster's replicated store
//! (`crdt.writer_max_keys` / `writer_max_bytes`, `src/crdt/writers.rs`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{fleet, metric, poll};
use macula::client::Client;
use macula::identity::Identity;
use macula::wire::{self, Connect};

/// A session from source address `bind` (an ip:0) to `node`, kept open with its stream
/// (dropping the stream ends the session).
async fn idle_session_from(bind: &str, node: SocketAddr) -> IdleSession {
    let (conn, ep) = common::quic_connect_from(bind, node).await;
    let me = Identity::generate();
    let connect = Connect {
        versions: vec![wire::PROTOCOL_VERSION],
        node_id: me.node_id(),
        realm: "io.macula".into(),
        cluster: String::new(),
        role: wire::Role::Client,
        capabilities: vec![],
        max_frame_size: wire::DEFAULT_MAX_FRAME_SIZE,
        correlation_id: 1,
        proof: None,
        credential: None,
    };
    let (send, recv, _, _) =
        macula::session::open_session(&conn, connect, wire::DEFAULT_MAX_FRAME_SIZE, &me)
            .await
            .expect("served");
    IdleSession {
        conn,
        _ep: ep,
        _stream: (send, recv),
    }
}

/// A session that sent `connect` and nothing since.
struct IdleSession {
    conn: quinn::Connection,
    _ep: quinn::Endpoint,
    _stream: (quinn::SendStream, quinn::RecvStream),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_is_bounded_and_retries_are_followed() {
    let mut f = fleet();
    f.env("MACULA_LIMITS__MAX_CONNECTIONS_PER_SOURCE", "3");
    f.env("MACULA_LIMITS__HANDSHAKE_RETRY_ABOVE", "0");
    let n = common::lone_node(&mut f, "node", "127.0.0.5");
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (addr, admin) = (f.procs[n].quic, f.procs[n].admin);

    // Three clients from 127.0.0.1, each through a Retry first.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(common::client(addr).await);
    }
    assert!(metric(admin, "macula_handshake_retries_total") >= 3.0);
    // The fourth from the same address is refused and counted.
    let refused = "macula_connections_rejected_total{reason=\"per_source\"}";
    assert!(Client::connect(common::opts(addr, "io.macula"))
        .await
        .is_err());
    assert!(metric(admin, refused) >= 1.0);
    // Another address is still served.
    let other = idle_session_from("127.0.0.9:0", addr).await;
    // Closing one frees its slot.
    let gone = held.pop().unwrap();
    gone.close().await;
    poll(Duration::from_secs(10), "a freed slot", || async {
        Client::connect(common::opts(addr, "io.macula")).await.ok()
    })
    .await;
    other.conn.close(0u32.into(), b"done");
}

/// Sessions that `connect` and idle cannot lock newcomers out: with the listener full
/// (`max_connections` 12) of such sessions, the node evicts the idle ones (idle for
/// `limits.idle_evict_after_ms`, 3 s here), longest idle first, counted; a newcomer then gets
/// in, and a client that keeps talking is never evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_evicted_when_the_listener_is_full_and_busy_ones_are_not() {
    let mut f = fleet();
    f.env("MACULA_LIMITS__MAX_CONNECTIONS", "12");
    f.env("MACULA_LIMITS__IDLE_EVICT_AFTER_MS", "3000");
    let n = common::lone_node(&mut f, "node", "127.0.0.5");
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (addr, admin) = (f.procs[n].quic, f.procs[n].admin);

    // A busy client: a QoS 1 round trip to itself every 100 ms for the whole test.
    let busy = common::client(addr).await;
    let mut echo = busy.subscribe("busy.t").await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let talker = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.is_cancelled() {
                let body = bytes::Bytes::copy_from_slice(&n.to_be_bytes());
                busy.publish("busy.t", body, wire::Qos::AtLeastOnce)
                    .await
                    .expect("the busy client is never evicted");
                common::recv(&mut echo).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            busy
        })
    };
    // Idle sessions fill the other 11 slots (from two addresses, within their bounds).
    let mut idle = Vec::new();
    for i in 0..11 {
        let bind = if i % 2 == 0 {
            "127.0.0.9:0"
        } else {
            "127.0.0.10:0"
        };
        idle.push(idle_session_from(bind, addr).await);
    }
    let refused = "macula_connections_rejected_total{reason=\"max_connections\"}";
    assert!(
        Client::connect(common::opts(addr, "io.macula"))
            .await
            .is_err(),
        "the full listener refuses a newcomer while its sessions are not idle long enough"
    );
    assert!(metric(admin, refused) >= 1.0);
    // Within a few samples an idle session is evicted and the newcomer gets in.
    let evicted = "macula_connections_evicted_total";
    poll(
        Duration::from_secs(15),
        "a newcomer after an eviction",
        || async { Client::connect(common::opts(addr, "io.macula")).await.ok() },
    )
    .await;
    assert!(metric(admin, evicted) >= 1.0);
    let closed = idle
        .iter()
        .filter(|s| s.conn.close_reason().is_some())
        .count();
    assert!(closed >= 1, "an idle session was closed");
    stop.cancel();
    let busy = talker.await.unwrap();
    busy.close().await;
}

/// One client at its share of the cluster's store (`crdt.writer_max_keys` = 16,
/// `crdt.writer_max_bytes` = 8 KiB) is refused `LIMIT_EXCEEDED` and counted, while another
/// client of the same node keeps writing; a key the client empties or removes leaves the store
/// and frees its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holds_at_most_its_share_of_the_store() {
    use macula::client::CallError;
    use macula::crdt::Op;
    let mut f = fleet();
    f.env("MACULA_CRDT__WRITER_MAX_KEYS", "16");
    f.env("MACULA_CRDT__WRITER_MAX_BYTES", "8192");
    let n = common::lone_node(&mut f, "node", "127.0.0.6");
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (addr, admin) = (f.procs[n].quic, f.procs[n].admin);
    let (greedy, other) = (common::client(addr).await, common::client(addr).await);
    for i in 0..16 {
        greedy
            .crdt_update(&format!("g.{i}"), Op::SetAdd("x".into()))
            .await
            .expect("within the key share");
    }
    let over = greedy.crdt_update("g.16", Op::SetAdd("x".into())).await;
    assert!(
        matches!(&over, Err(CallError::LimitExceeded(m)) if m.contains("writer keys")),
        "{over:?}"
    );
    // Growing a key it holds is within its share; another client is not affected.
    greedy
        .crdt_update("g.0", Op::SetAdd("y".into()))
        .await
        .unwrap();
    for i in 0..16 {
        other
            .crdt_update(&format!("o.{i}"), Op::SetAdd("x".into()))
            .await
            .expect("another client's share is its own");
    }
    // Emptying a set removes the key (garbage collection) and frees the share.
    greedy
        .crdt_update("g.1", Op::SetRemove("x".into()))
        .await
        .unwrap();
    greedy
        .crdt_update("g.16", Op::SetAdd("x".into()))
        .await
        .expect("a freed key slot is usable again");
    // So does removing a key of any kind.
    greedy.delete("g.3").await.unwrap();
    greedy
        .crdt_update("g.17", Op::Increment(1))
        .await
        .expect("a removed key's slot is usable again");
    // Bytes: 8 KiB in all. Its 16 small sets hold about 2.3 KiB (the store's measure counts
    // ~140 bytes of overhead per key); 5 KiB more fit, 2 KiB more then do not.
    greedy
        .crdt_update("g.0", Op::SetAdd(vec![7u8; 5 << 10].into()))
        .await
        .expect("within the byte share");
    let over = greedy
        .crdt_update("g.2", Op::SetAdd(vec![8u8; 2 << 10].into()))
        .await;
    assert!(
        matches!(&over, Err(CallError::LimitExceeded(m)) if m.contains("writer bytes")),
        "{over:?}"
    );
    other
        .crdt_update("o.0", Op::SetAdd(vec![9u8; 5 << 10].into()))
        .await
        .expect("the other client's bytes are its own");
    let refused = |reason: &str| {
        metric(
            admin,
            &format!("macula_quota_refused_total{{reason=\"{reason}\",table=\"crdt_writer\"}}"),
        )
    };
    assert_eq!(refused("tenant_entries"), 1.0);
    assert_eq!(refused("tenant_bytes"), 1.0);
    f.stop().await;
}
