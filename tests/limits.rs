//! The handshake gate on a real node (`src/server/gate.rs`): one source address holds at
//! most `limits.max_connections_per_source` connections (the next is refused and counted,
//! other addresses are still served, a closed connection frees its slot), and with
//! `limits.handshake_retry_above = 0` every unvalidated attempt is answered with a QUIC Retry
//! that a real client follows.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{fleet, metric, poll};
use macula::client::Client;
use macula::identity::Identity;
use macula::wire::{self, Connect};

/// A session from source address `bind` (an ip:0) to `node`.
async fn session_from(bind: &str, node: SocketAddr) -> (quinn::Connection, quinn::Endpoint) {
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
    macula::session::open_session(&conn, connect, wire::DEFAULT_MAX_FRAME_SIZE, &me)
        .await
        .expect("served");
    (conn, ep)
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
    let (other, _ep) = session_from("127.0.0.9:0", addr).await;
    // Closing one frees its slot.
    let gone = held.pop().unwrap();
    gone.close().await;
    poll(Duration::from_secs(10), "a freed slot", || async {
        Client::connect(common::opts(addr, "io.macula")).await.ok()
    })
    .await;
    other.close(0u32.into(), b"done");
}
