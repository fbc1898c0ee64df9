//! Pub/sub across clusters through a bridge, with real processes on 127.0.0.x.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bridge_and_two_nodes, client, fleet, metric, recv, wait_mesh, wait_route};
use macula::client::Client;
use macula::wire::Qos;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_crosses_two_nodes_through_the_bridge() {
    let (mut f, b, na, nb) = bridge_and_two_nodes().await;

    let sub_client = client(f.procs[nb].quic).await;
    let mut sub = sub_client.subscribe("orders.created").await.unwrap();
    let publisher = client(f.procs[na].quic).await;
    wait_route(&publisher, &mut sub, "orders.created").await;

    for i in 0..100u32 {
        publisher
            .publish(
                "orders.created",
                i.to_be_bytes().to_vec().into(),
                Qos::AtLeastOnce,
            )
            .await
            .unwrap();
    }
    publisher.flush(Duration::from_secs(10)).await.unwrap();
    for i in 0..100u32 {
        let m = recv(&mut sub).await;
        assert_eq!(m.topic(), "orders.created");
        assert_eq!(&m.payload[..], &i.to_be_bytes(), "in order, once each");
    }
    assert!(metric(f.procs[b].admin, "macula_messages_relayed_total") >= 100.0);
    assert_eq!(sub_client.stats().duplicates, 0);
    // The subscriber's node dies (it withdraws nothing): its link's patterns leave the
    // bridge's relay and its `macula_subscriptions` gauge once the link is found dead.
    let bridge_admin = f.procs[b].admin;
    assert!(metric(bridge_admin, "macula_subscriptions") >= 1.0);
    f.kill(nb).await;
    common::poll(
        Duration::from_secs(20),
        "the bridge's gauge drops",
        || async { (metric(bridge_admin, "macula_subscriptions") == 0.0).then_some(()) },
    )
    .await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_subscriptions_match_across_clusters() {
    let (mut f, _, na, nb) = bridge_and_two_nodes().await;

    let sub_client = client(f.procs[nb].quic).await;
    let mut one = sub_client.subscribe("sensors.*.temp").await.unwrap();
    let mut many = sub_client.subscribe("metrics.**").await.unwrap();
    let publisher = client(f.procs[na].quic).await;
    wait_route(&publisher, &mut one, "sensors.probe.temp").await;
    wait_route(&publisher, &mut many, "metrics.probe").await;

    for t in [
        "sensors.kitchen.temp",
        "sensors.a.b.temp",
        "sensors.hall.humidity",
        "sensors.end.temp",
    ] {
        publisher
            .publish(t, t.as_bytes().to_vec().into(), Qos::AtLeastOnce)
            .await
            .unwrap();
    }
    for t in [
        "metrics",
        "metrics.cpu",
        "metrics.cpu.core0.load",
        "metricsx",
        "metrics.end",
    ] {
        publisher
            .publish(t, t.as_bytes().to_vec().into(), Qos::AtLeastOnce)
            .await
            .unwrap();
    }
    publisher.flush(Duration::from_secs(10)).await.unwrap();
    // Same publisher, same path: order is kept, so the sentinel (last) arriving
    // right after the matching ones proves the others were filtered out.
    let got: Vec<String> = [recv(&mut one).await, recv(&mut one).await]
        .iter()
        .map(|m| m.topic().to_string())
        .collect();
    assert_eq!(
        got,
        ["sensors.kitchen.temp", "sensors.end.temp"],
        "`*` matches exactly one segment"
    );
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(recv(&mut many).await.topic().to_string());
    }
    assert_eq!(
        got,
        [
            "metrics",
            "metrics.cpu",
            "metrics.cpu.core0.load",
            "metrics.end"
        ],
        "`**` matches zero or more"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realms_are_isolated() {
    let mut f = fleet();
    let b = f
        .bridge(
            "bridge",
            "127.0.0.1",
            &["--realm", "io.macula", "--realm", "com.other"],
        )
        .unwrap();
    let baddr = f.procs[b].quic;
    let na = f.node("node-a", "127.0.0.2", "a", baddr, &[]).unwrap();
    let nb = f.node("node-b", "127.0.0.3", "b", baddr, &[]).unwrap();
    let nc = f
        .node("node-c", "127.0.0.4", "c", baddr, &["--realm", "com.other"])
        .unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();

    let other = Client::connect(common::opts(f.procs[nc].quic, "com.other"))
        .await
        .unwrap();
    let mut other_sub = other.subscribe("secret.**").await.unwrap();
    let sub_client = client(f.procs[nb].quic).await;
    let mut sub = sub_client.subscribe("secret.**").await.unwrap();
    let publisher = client(f.procs[na].quic).await;
    wait_route(&publisher, &mut sub, "secret.probe").await;

    // The other realm's route is live too (its own publisher reaches it).
    let other_pub = Client::connect(common::opts(f.procs[nc].quic, "com.other"))
        .await
        .unwrap();
    wait_route(&other_pub, &mut other_sub, "secret.probe").await;
    let relayed_before = metric(f.procs[b].admin, "macula_messages_relayed_total");
    let c_in_before = metric(
        f.procs[nc].admin,
        "macula_frames_received_total{type=\"publish\"}",
    );

    for i in 0..50u32 {
        publisher
            .publish(
                "secret.plans",
                i.to_be_bytes().to_vec().into(),
                Qos::AtLeastOnce,
            )
            .await
            .unwrap();
    }
    publisher.flush(Duration::from_secs(10)).await.unwrap();
    for _ in 0..50 {
        assert_eq!(recv(&mut sub).await.topic(), "secret.plans");
    }
    // Every publish was relayed exactly once (to node-b), and node-c received no publish.
    let relayed = metric(f.procs[b].admin, "macula_messages_relayed_total") - relayed_before;
    assert_eq!(
        relayed, 50.0,
        "relayed only to the one interested node of the realm"
    );
    let c_in = metric(
        f.procs[nc].admin,
        "macula_frames_received_total{type=\"publish\"}",
    ) - c_in_before;
    assert_eq!(c_in, 0.0, "nothing crossed into realm com.other");
    assert!(
        other_sub
            .recv_many(&mut Vec::new(), 1)
            .now_or_never()
            .is_none(),
        "other realm saw nothing"
    );

    // A client of the wrong realm is refused by the node.
    let err = Client::connect(common::opts(f.procs[na].quic, "com.other"))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("realm"), "{err}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_survives_a_bridge_restart() {
    let (mut f, b, na, nb) = bridge_and_two_nodes().await;

    let sub_client = client(f.procs[nb].quic).await;
    let mut sub = sub_client.subscribe("ledger.**").await.unwrap();
    let publisher = client(f.procs[na].quic).await;
    wait_route(&publisher, &mut sub, "ledger.probe").await;

    const N: u32 = 3000;
    let (killed_tx, killed_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (pub_task, mut half_rx) =
        common::publish_numbered(&publisher, "ledger.entry", N, Some(killed_rx));
    half_rx.recv().await.unwrap();
    f.kill(b).await;
    killed_tx.send(()).await.unwrap();
    // Publishing goes on while the bridge is down; node-a holds the messages.
    pub_task.await.unwrap();
    f.restart(b).unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    publisher
        .flush(Duration::from_secs(30))
        .await
        .expect("every publish acknowledged");
    if let Err(e) =
        common::expect_each_once(&mut sub, "ledger.entry", N, Duration::from_secs(15)).await
    {
        let logs = std::fs::read_to_string(f.log_path("node-a")).unwrap_or_default();
        panic!("{e}\nnode-a log:\n{logs}");
    }
    assert!(metric(f.procs[na].admin, "macula_uplink_reconnects_total") >= 1.0);
    f.stop().await;
}

trait NowOrNever: std::future::Future + Sized {
    fn now_or_never(self) -> Option<Self::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = std::pin::pin!(self);
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
impl<F: std::future::Future> NowOrNever for F {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reconnect_resubscribe_and_retransmit_after_a_node_restart() {
    let (mut f, _, na, nb) = bridge_and_two_nodes().await;

    let sub_client = client(f.procs[nb].quic).await;
    let mut sub = sub_client.subscribe("orders.**").await.unwrap();
    let publisher = client(f.procs[na].quic).await;
    wait_route(&publisher, &mut sub, "orders.probe").await;

    // The subscriber's node dies and comes back: the client reconnects on its own and
    // re-subscribes, so deliveries resume without the application doing anything.
    f.kill(nb).await;
    f.restart(nb).unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    wait_route(&publisher, &mut sub, "orders.probe").await;
    assert!(sub_client.stats().reconnects >= 1, "subscriber reconnected");

    // The publisher's node dies; publishing goes on meanwhile (the client holds the
    // QoS 1 messages it could not hand over) and resumes after the node is back.
    f.kill(na).await;
    const N: u32 = 500;
    let p = publisher.clone();
    let publishing = tokio::spawn(async move {
        for i in 0..N {
            p.publish(
                "orders.created",
                i.to_be_bytes().to_vec().into(),
                Qos::AtLeastOnce,
            )
            .await
            .unwrap();
        }
    });
    f.restart(na).unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    publishing.await.unwrap();
    publisher
        .flush(Duration::from_secs(30))
        .await
        .expect("all publishes acknowledged after the reconnect");
    assert!(publisher.stats().reconnects >= 1, "publisher reconnected");

    let mut seen = HashSet::new();
    while seen.len() < N as usize {
        let m = recv(&mut sub).await;
        if m.topic() != "orders.created" {
            continue;
        }
        let i = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
        assert!(
            seen.insert(i),
            "message {i} delivered twice to the application"
        );
    }
    f.stop().await;
}

/// Two nodes of one cluster (the second joins through the first as its seed) and a node of
/// another cluster, all under one bridge: a publish inside the cluster goes over the mesh and
/// never through the bridge; one for the other cluster still goes through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_inside_a_cluster_never_crosses_the_bridge() {
    let mut f = fleet();
    let b = f.bridge("bridge", "127.0.0.1", &[]).unwrap();
    let baddr = f.procs[b].quic;
    let a1 = f.node("node-a1", "127.0.0.2", "a", baddr, &[]).unwrap();
    let a1_addr = f.procs[a1].quic.to_string();
    let a2 = f
        .node("node-a2", "127.0.0.3", "a", baddr, &["--seed", &a1_addr])
        .unwrap();
    let nb = f.node("node-b", "127.0.0.4", "b", baddr, &[]).unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    wait_mesh(&f, a1, a2).await;

    let inside = client(f.procs[a2].quic).await;
    let mut sub = inside.subscribe("room.temp").await.unwrap();
    let publisher = client(f.procs[a1].quic).await;
    wait_route(&publisher, &mut sub, "room.temp").await;
    let bridge_in = |f: &common::Fleet| {
        metric(
            f.procs[b].admin,
            "macula_frames_received_total{type=\"publish\"}",
        )
    };
    let before = bridge_in(&f);
    for i in 0..200u32 {
        let qos = if i % 2 == 0 {
            Qos::AtMostOnce
        } else {
            Qos::AtLeastOnce
        };
        publisher
            .publish("room.temp", i.to_be_bytes().to_vec().into(), qos)
            .await
            .unwrap();
    }
    publisher.flush(Duration::from_secs(10)).await.unwrap();
    for i in 0..200u32 {
        let m = recv(&mut sub).await;
        assert_eq!(&m.payload[..], &i.to_be_bytes(), "in order, once each");
    }
    assert_eq!(
        bridge_in(&f),
        before,
        "no publish inside the cluster reached the bridge"
    );

    // The other cluster's subscriber is still served through the bridge, exactly once.
    let outside = client(f.procs[nb].quic).await;
    let mut far = outside.subscribe("room.temp").await.unwrap();
    wait_route(&publisher, &mut far, "room.temp").await;
    publisher
        .publish("room.temp", "last".into(), Qos::AtLeastOnce)
        .await
        .unwrap();
    publisher.flush(Duration::from_secs(10)).await.unwrap();
    loop {
        if &recv(&mut far).await.payload[..] == b"last" {
            break;
        }
    }
    loop {
        if &recv(&mut sub).await.payload[..] == b"last" {
            break;
        }
    }
    assert_eq!(inside.stats().duplicates, 0);
    assert_eq!(outside.stats().duplicates, 0);
    f.stop().await;
}

/// A mesh link inside a cluster dies under QoS 1 load while both nodes live: the publisher's
/// node holds the peer's interest (`MESH_HOLD`) and leaves what the peer had not acknowledged
/// unacknowledged, so the publisher retransmits it over the new link; the subscriber on the
/// other node sees every message exactly once. The two nodes sit in network namespaces on
/// either side of a cut; the test's clients, in the root namespace, reach both throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_link_lost_under_qos1_load_loses_and_duplicates_nothing() {
    use common::netlab::{spawn_in, NetLab};
    use common::poll;
    let Some(lab) = NetLab::new([1, 1]) else {
        eprintln!("SKIPPED: network namespaces need root (ip netns add failed)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ns0, ip0) = &lab.nodes[0];
    let (ns1, ip1) = &lab.nodes[1];
    let n0 = spawn_in(ns0, ip0, None, dir.path());
    let n1 = spawn_in(ns1, ip1, Some(n0.quic), dir.path());
    let peers = |admin| {
        move || async move {
            let (_, body) = common::spawn::http_get(admin, "/metrics").ok()?;
            let line = body.lines().find(|l| l.starts_with("macula_mesh_peers "))?;
            line.rsplit_once(' ')?.1.parse::<f64>().ok()
        }
    };
    for a in [n0.admin, n1.admin] {
        poll(Duration::from_secs(30), "mesh link up", || {
            let p = peers(a);
            async move { (p().await? == 1.0).then_some(()) }
        })
        .await;
    }
    let sub_client = client(n1.quic).await;
    let mut sub = sub_client.subscribe("ledger.**").await.unwrap();
    let publisher = client(n0.quic).await;
    wait_route(&publisher, &mut sub, "ledger.probe").await;

    const N: u32 = 2000;
    let (pub_task, mut half_rx) = common::publish_numbered(&publisher, "ledger.entry", N, None);
    half_rx.recv().await.unwrap();
    // Cut mid-stream: what was on the mesh link is lost in the network.
    lab.partition(true);
    for a in [n0.admin, n1.admin] {
        poll(
            Duration::from_secs(20),
            "mesh link down on both sides",
            || {
                let p = peers(a);
                async move { (p().await? == 0.0).then_some(()) }
            },
        )
        .await;
    }
    // Publishes (and retransmissions) the held interest wants arrive while the peer is gone.
    poll(
        Duration::from_secs(20),
        "a publish held for the lost peer",
        || {
            let a = n0.admin;
            async move {
                (metric(a, "macula_messages_dropped_total{reason=\"peer_down\"}") > 0.0)
                    .then_some(())
            }
        },
    )
    .await;
    lab.partition(false);
    pub_task.await.unwrap();
    publisher
        .flush(Duration::from_secs(60))
        .await
        .expect("every publish acknowledged");
    common::expect_each_once(&mut sub, "ledger.entry", N, Duration::from_secs(30))
        .await
        .unwrap();
    let stats = sub_client.stats();
    eprintln!(
        "mesh cut: {} held for the lost peer on node 0, {} duplicates dropped by the subscriber",
        metric(
            n0.admin,
            "macula_messages_dropped_total{reason=\"peer_down\"}"
        ),
        stats.duplicates
    );
    drop((n0, n1));
    drop(lab);
}

/// QoS 1 both ways across one mesh link, flat out, with an in-flight window (64) smaller than
/// what the publishers keep outstanding: each node's writer waits for the other's
/// acknowledgements, and keeps writing its own meanwhile, so neither stalls the other. Every
/// message arrives once and the link is never closed as a slow consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_both_ways_across_a_mesh_link_never_stalls_it() {
    let mut f = fleet();
    let cfg = f
        .write_file("window.toml", "[limits]\nmax_inflight = 64\n")
        .unwrap();
    let cfg = cfg.display().to_string();
    let b = f.bridge("bridge", "127.0.0.1", &[]).unwrap();
    let baddr = f.procs[b].quic;
    let a1 = f
        .node("node-a1", "127.0.0.2", "a", baddr, &["--config", &cfg])
        .unwrap();
    let a1_addr = f.procs[a1].quic.to_string();
    let a2 = f
        .node(
            "node-a2",
            "127.0.0.3",
            "a",
            baddr,
            &["--config", &cfg, "--seed", &a1_addr],
        )
        .unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    wait_mesh(&f, a1, a2).await;

    const N: u32 = 10_000;
    const PUBLISHERS: usize = 3;
    let mut subs = Vec::new();
    let mut pubs = Vec::new();
    for (here, there, dir) in [(a1, a2, "east"), (a2, a1, "west")] {
        let sub_client = client(f.procs[there].quic).await;
        let mut sub = sub_client.subscribe(&format!("{dir}.**")).await.unwrap();
        let probe = client(f.procs[here].quic).await;
        wait_route(&probe, &mut sub, &format!("{dir}.probe")).await;
        // Received concurrently, so only the mesh link's window holds publishers back.
        subs.push(tokio::spawn(async move {
            let mut seen = HashSet::new();
            while seen.len() < PUBLISHERS * N as usize {
                let m = match tokio::time::timeout(Duration::from_secs(30), sub.recv()).await {
                    Ok(Some(m)) => m,
                    _ => panic!(
                        "{dir}: {} of {} delivered",
                        seen.len(),
                        PUBLISHERS * N as usize
                    ),
                };
                if m.topic().ends_with(".probe") || &m.payload[..] == b"marker" {
                    continue;
                }
                assert!(seen.insert(m.payload.to_vec()), "{dir}: delivered twice");
            }
            drop(sub_client);
        }));
        for p in 0..PUBLISHERS {
            let c = client(f.procs[here].quic).await;
            let topic = format!("{dir}.{p}");
            pubs.push(tokio::spawn(async move {
                for i in 0..N {
                    let body = [p as u32, i].map(u32::to_be_bytes).concat();
                    c.publish(&topic, body.into(), Qos::AtLeastOnce)
                        .await
                        .unwrap();
                }
                c.flush(Duration::from_secs(60))
                    .await
                    .expect("every publish acknowledged");
            }));
        }
    }
    for p in pubs {
        p.await.unwrap();
    }
    for s in subs {
        s.await.unwrap();
    }
    for n in [a1, a2] {
        let admin = f.procs[n].admin;
        assert_eq!(
            metric(
                admin,
                "macula_protocol_errors_total{code=\"slow_consumer\"}"
            ),
            0.0,
            "{}: a link closed as a slow consumer",
            f.procs[n].name
        );
        assert_eq!(
            metric(admin, "macula_messages_dropped_total{reason=\"peer_down\"}"),
            0.0,
            "{}: the mesh link was lost",
            f.procs[n].name
        );
    }
    f.stop().await;
}

/// QoS 0 across a lost uplink session (PROTOCOL §8, "QoS 0 and lost sessions"): what the
/// bridge confirmed (its `pong`s to the uplink's `ping` marks) is not reported when the bridge
/// is then SIGKILLed; publishes written flat out when it is killed are reported as
/// `dropped{reason="session_lost"}` at the node, never more than were published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_uplink_session_reports_the_qos0_the_bridge_did_not_confirm() {
    let (mut f, b, na, nb) = bridge_and_two_nodes().await;
    let admin = f.procs[na].admin;
    let session_lost = || {
        metric(
            admin,
            "macula_messages_dropped_total{reason=\"session_lost\"}",
        )
    };
    let uplink_down = |admin| async move {
        (metric(admin, "macula_connections_open{role=\"uplink\"}") == 0.0).then_some(())
    };
    let sub_client = client(f.procs[nb].quic).await;
    let mut sub = sub_client.subscribe("telemetry.**").await.unwrap();
    let publisher = client(f.procs[na].quic).await;
    wait_route(&publisher, &mut sub, "telemetry.probe").await;

    // Everything delivered, and no `pong` for 300 ms (3 ticks): the last mark is confirmed.
    for i in 0..500u32 {
        publisher
            .publish(
                "telemetry.x",
                i.to_be_bytes().to_vec().into(),
                Qos::AtMostOnce,
            )
            .await
            .unwrap();
    }
    for _ in 0..500 {
        recv(&mut sub).await;
    }
    let pongs = || metric(admin, "macula_frames_received_total{type=\"pong\"}");
    let mut last = (pongs(), Instant::now());
    common::poll(Duration::from_secs(10), "pongs settle", || {
        let now = pongs();
        if now != last.0 {
            last = (now, Instant::now());
        }
        let settled = now > 0.0 && last.1.elapsed() >= Duration::from_millis(300);
        async move { settled.then_some(()) }
    })
    .await;
    f.kill(b).await;
    common::poll(Duration::from_secs(10), "uplink down", || {
        uplink_down(admin)
    })
    .await;
    assert_eq!(
        session_lost(),
        0.0,
        "the bridge had confirmed every QoS 0 publish"
    );

    // Flat out when the bridge dies: the tail of the session is unconfirmed. Everything the
    // uplink writes from here on is one of this client's publishes (probes included).
    let before = publisher.stats().published;
    f.restart(b).unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    wait_route(&publisher, &mut sub, "telemetry.probe").await;
    // Publishes until told to stop (at most 2,000,000).
    let stop = Arc::new(AtomicBool::new(false));
    let flat_out = {
        let (p, stop) = (publisher.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 2_000_000 {
                p.publish("telemetry.x", "x".into(), Qos::AtMostOnce)
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    for _ in 0..2_000 {
        recv(&mut sub).await;
    }
    f.kill(b).await;
    stop.store(true, Ordering::Relaxed);
    common::poll(Duration::from_secs(10), "uplink down", || {
        uplink_down(admin)
    })
    .await;
    let flat = flat_out.await.unwrap();
    let published = publisher.stats().published - before;
    let lost = session_lost();
    eprintln!("session_lost: {lost} reported, {published} published ({flat} flat out)");
    assert!(
        lost > 0.0,
        "a session lost under QoS 0 load reports its unconfirmed tail"
    );
    assert!(
        lost <= published as f64,
        "{lost} reported of {published} published"
    );
    f.stop().await;
}

/// A node whose bridge is unreachable keeps serving its clients: QoS 1 publishes beyond what
/// the uplink's custody queue holds are left unacknowledged (the client re-sends them) rather
/// than blocking the client's session, each reaches the local subscriber at once, and the
/// client's connection slot is released when it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_bridge_is_away_keeps_serving_qos1_locally() {
    let mut f = fleet();
    f.env("MACULA_LIMITS__OUTBOUND_QUEUE", "32");
    // A port nobody answers on: the uplink never comes up.
    let away = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let n = f.node("node", "127.0.0.2", "a", away, &[]).unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (addr, admin) = (f.procs[n].quic, f.procs[n].admin);
    let c = client(addr).await;
    let mut sub = c.subscribe("t.x").await.unwrap();
    for i in 0..200u32 {
        c.publish("t.x", i.to_be_bytes().to_vec().into(), Qos::AtLeastOnce)
            .await
            .unwrap();
    }
    let mut seen = HashSet::new();
    while seen.len() < 200 {
        seen.insert(recv(&mut sub).await.payload.to_vec());
    }
    let held = "macula_messages_dropped_total{reason=\"parent_down\"}";
    assert!(
        metric(admin, held) >= 1.0,
        "publishes past the custody queue"
    );
    drop(sub);
    c.close().await;
    let open = "macula_connections_open{role=\"client\"}";
    common::poll(
        Duration::from_secs(10),
        "the client's slot released",
        || async { (metric(admin, open) == 0.0).then_some(()) },
    )
    .await;
    f.stop().await;
}

/// Sends `sig` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// A node whose uplink control queue fills (the bridge stopped reading: SIGSTOP) cannot
/// queue its later interest changes; it ends the session and announces its whole interest
/// in the next one, so a subscription made meanwhile still receives what another cluster
/// publishes once the bridge runs again. (Before, the change was dropped and the session
/// went on without it.) Small windows and a one-message in-flight bound make the queue
/// (1,025 frames) fill after about 2,000 one-pattern subscriptions; the links' idle timeout
/// is raised so that only the full queue can end the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interest_changes_lost_to_a_stuck_uplink_are_announced_again() {
    let mut f = fleet();
    for (k, v) in [
        ("MACULA_LIMITS__MAX_INFLIGHT", "1"),
        ("MACULA_LIMITS__MAX_FRAME_SIZE", "65536"),
        ("MACULA_TRANSPORT__STREAM_RECEIVE_WINDOW", "65536"),
        ("MACULA_TRANSPORT__RECEIVE_WINDOW", "65536"),
        ("MACULA_TRANSPORT__SEND_WINDOW", "65536"),
        ("MACULA_TRANSPORT__LINK_IDLE_TIMEOUT_MS", "60000"),
    ] {
        f.env(k, v);
    }
    let b = f.bridge("bridge", "127.0.0.1", &[]).expect("spawn bridge");
    let baddr = f.procs[b].quic;
    let na = f.node("node-a", "127.0.0.2", "a", baddr, &[]).unwrap();
    let nb = f.node("node-b", "127.0.0.3", "b", baddr, &[]).unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (sub_client, publisher) = (
        client(f.procs[na].quic).await,
        client(f.procs[nb].quic).await,
    );
    let mut probe = sub_client.subscribe("probe").await.unwrap();
    wait_route(&publisher, &mut probe, "probe").await;
    let pid = f.pid(b).expect("bridge pid");
    signal(pid, "STOP");
    const N: usize = 2_500;
    let mut subs = Vec::with_capacity(N);
    for i in 0..N {
        let topic = format!("stuck.uplink.interest.pattern.{i:05}");
        subs.push(sub_client.subscribe(&topic).await.unwrap());
    }
    signal(pid, "CONT");
    let resyncs = metric(f.procs[na].admin, "macula_uplink_interest_resyncs_total");
    assert!(
        resyncs >= 1.0,
        "the full queue ended the session ({resyncs})"
    );
    eprintln!(
        "node-a: resyncs {resyncs}, reconnects {}",
        metric(f.procs[na].admin, "macula_uplink_reconnects_total")
    );
    let last = subs.last_mut().expect("a subscription");
    let topic = format!("stuck.uplink.interest.pattern.{:05}", N - 1);
    wait_route(&publisher, last, &topic).await;
    f.stop().await;
}

/// `Client::close` drains: QoS 0 publishes still queued in the client when it closes reach
/// the subscriber, and so do QoS 1 ones (acknowledged first). Before, the queue was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delivers_what_was_queued() {
    let mut f = fleet();
    let n = common::lone_node(&mut f, "node", "127.0.0.7");
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let addr = f.procs[n].quic;
    let sub_client = client(addr).await;
    let mut sub = sub_client.subscribe("drain.**").await.unwrap();
    let publisher = client(addr).await;
    wait_route(&publisher, &mut sub, "drain.probe").await;
    const N: u32 = 2_000;
    for i in 0..N {
        let qos = if i % 2 == 0 {
            Qos::AtMostOnce
        } else {
            Qos::AtLeastOnce
        };
        publisher
            .publish("drain.x", i.to_be_bytes().to_vec().into(), qos)
            .await
            .unwrap();
    }
    publisher.close().await;
    let mut seen = HashSet::new();
    while seen.len() < N as usize {
        let m = recv(&mut sub).await;
        if m.topic() == "drain.x" {
            seen.insert(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
        }
    }
    sub_client.close().await;
    f.stop().await;
}
