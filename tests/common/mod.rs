//! Shared helpers for the integration tests: real `macula` processes on 127.0.0.x.
#![allow(dead_code)]

pub mod netlab;
#[path = "../../loadtest/spawn.rs"]
pub mod spawn;
#[path = "../../loadtest/topology.rs"]
pub mod topology;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use macula::client::{Client, ClientOptions, Message, Subscription};
use macula::wire::Qos;

pub use spawn::Fleet;

/// A fleet using the `macula` binary cargo built for these tests.
pub fn fleet() -> Fleet {
    Fleet::new(env!("CARGO_BIN_EXE_macula").into()).expect("temp dir")
}

/// A bridge on 127.0.0.1 and two nodes (clusters `a` on 127.0.0.2, `b` on 127.0.0.3)
/// uplinked to it, all ready. Returns the fleet and the indices of bridge, node-a, node-b.
pub async fn bridge_and_two_nodes() -> (Fleet, usize, usize, usize) {
    let mut f = fleet();
    let b = f.bridge("bridge", "127.0.0.1", &[]).expect("spawn bridge");
    let baddr = f.procs[b].quic;
    let na = f
        .node("node-a", "127.0.0.2", "a", baddr, &[])
        .expect("spawn node-a");
    let nb = f
        .node("node-b", "127.0.0.3", "b", baddr, &[])
        .expect("spawn node-b");
    f.wait_ready(Duration::from_secs(20))
        .await
        .expect("fleet ready");
    (f, b, na, nb)
}

/// The hierarchy of `spec` (city, streets, clusters; `loadtest/topology.rs`), all ready.
pub async fn hierarchy(spec: &topology::TopologySpec) -> (Fleet, topology::Topology) {
    let mut f = fleet();
    let t = topology::Topology::spawn(&mut f, spec).expect("spawn the topology");
    f.wait_ready(Duration::from_secs(30))
        .await
        .expect("topology ready");
    (f, t)
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `within`.
pub async fn poll<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Client options for a node at `addr` in `realm`.
pub fn opts(addr: SocketAddr, realm: &str) -> ClientOptions {
    ClientOptions {
        addr: addr.to_string(),
        realm: realm.to_string(),
        ..ClientOptions::default()
    }
}

/// A QUIC connection to `addr` on the default development TLS, its endpoint kept alive with
/// it (for tests that speak the wire protocol by hand).
pub async fn quic_connect(addr: SocketAddr) -> (quinn::Connection, quinn::Endpoint) {
    quic_connect_from("0.0.0.0:0", addr).await
}

/// [`quic_connect`] from source address `bind` (an `ip:0`).
pub async fn quic_connect_from(
    bind: &str,
    addr: SocketAddr,
) -> (quinn::Connection, quinn::Endpoint) {
    let cfg = macula::config::Config::default();
    let ep = macula::transport::client_endpoint(
        bind.parse().unwrap(),
        &cfg.tls,
        &cfg.transport,
        &cfg.data_dir,
    )
    .unwrap();
    let conn = ep.connect(addr, "localhost").unwrap().await.unwrap();
    (conn, ep)
}

/// Starts a node of cluster `c` on `ip` whose uplink points at a closed port (it serves its
/// clients alone); returns its index.
pub fn lone_node(f: &mut Fleet, name: &str, ip: &str) -> usize {
    f.node(name, ip, "c", "127.0.0.1:9".parse().unwrap(), &[])
        .expect("spawn node")
}

/// Connects a client to `addr` in realm `io.macula`.
pub async fn client(addr: SocketAddr) -> Client {
    Client::connect(opts(addr, "io.macula"))
        .await
        .expect("client connects")
}

/// Publishes QoS 0 probes on `topic` until `sub` receives one (the route through
/// the bridge is then live), then discards any further probes. Panics after 20 s.
pub async fn wait_route(publisher: &Client, sub: &mut Subscription, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        publisher
            .publish(topic, "probe".into(), Qos::AtMostOnce)
            .await
            .expect("probe");
        match tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            Ok(Some(m)) if m.topic() == topic => break,
            Ok(Some(_)) => {}
            Ok(None) => panic!("subscription closed while waiting for the route"),
            Err(_) => assert!(
                Instant::now() < deadline,
                "route {topic} not established in 20 s"
            ),
        }
    }
    // Late probes (sent before the first one arrived) may still be on their way:
    // publish a marker and skip everything up to it.
    publisher
        .publish(topic, "marker".into(), Qos::AtLeastOnce)
        .await
        .expect("marker");
    loop {
        let m = recv(sub).await;
        if m.topic() == topic && &m.payload[..] == b"marker" {
            break;
        }
    }
}

/// Next message or panic after 10 s.
pub async fn recv(sub: &mut Subscription) -> Message {
    tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("message within 10 s")
        .expect("subscription open")
}

/// Value of one Prometheus sample (`name{labels}` exactly as exposed, or bare name).
pub fn metric(admin: SocketAddr, sample: &str) -> f64 {
    let (_, body) = spawn::http_get(admin, "/metrics").expect("metrics");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == sample).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Publishes QoS 1 messages `0..n` on `topic` from a task (payload: the index, big-endian
/// `u32`). Half-way it signals on the returned receiver and, when `resume` is given, waits
/// for it before publishing the second half (a test kills or cuts something meanwhile).
pub fn publish_numbered(
    publisher: &Client,
    topic: &'static str,
    n: u32,
    mut resume: Option<tokio::sync::mpsc::Receiver<()>>,
) -> (tokio::task::JoinHandle<()>, tokio::sync::mpsc::Receiver<()>) {
    let p = publisher.clone();
    let (half_tx, half_rx) = tokio::sync::mpsc::channel::<()>(1);
    let task = tokio::spawn(async move {
        for i in 0..n {
            if i == n / 2 {
                half_tx.send(()).await.unwrap();
                if let Some(r) = resume.as_mut() {
                    r.recv().await.unwrap();
                }
            }
            p.publish(topic, i.to_be_bytes().to_vec().into(), Qos::AtLeastOnce)
                .await
                .unwrap();
        }
    });
    (task, half_rx)
}

/// Receives from `sub` until each of the messages `0..n` [`publish_numbered`] sent on
/// `topic` has arrived; panics at a duplicate. `Err`: how many arrived and the first missing,
/// once no message came for `within`.
pub async fn expect_each_once(
    sub: &mut Subscription,
    topic: &str,
    n: u32,
    within: Duration,
) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    while seen.len() < n as usize {
        let m = match tokio::time::timeout(within, sub.recv()).await {
            Ok(Some(m)) => m,
            _ => {
                let missing: Vec<u32> = (0..n).filter(|i| !seen.contains(i)).take(20).collect();
                return Err(format!(
                    "{} of {n} delivered; first missing {missing:?}",
                    seen.len()
                ));
            }
        };
        if m.topic() != topic {
            continue;
        }
        let i = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
        assert!(
            seen.insert(i),
            "message {i} delivered twice to the application"
        );
    }
    Ok(())
}

/// Waits (at most 20 s) until nodes `a` and `b` of `f` each have a mesh link
/// (`macula_mesh_peers` ≥ 1).
pub async fn wait_mesh(f: &Fleet, a: usize, b: usize) {
    let (x, y) = (f.procs[a].admin, f.procs[b].admin);
    poll(
        Duration::from_secs(20),
        "the mesh links the two nodes",
        || async move {
            (metric(x, "macula_mesh_peers") >= 1.0 && metric(y, "macula_mesh_peers") >= 1.0)
                .then_some(())
        },
    )
    .await;
}
