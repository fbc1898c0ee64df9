//! Pub/sub through every level of the hierarchy, with real processes: a region bridge, two
//! cities under it, two streets under each city and clusters of two nodes under the streets
//! (`loadtest/topology.rs` with `cities: 2`):
//!
//! ```text
//!                         region
//!                 city-1            city-2
//!          street-1  street-2  street-3  street-4
//!             a         b         c        d, x (realm "other")
//!             y (realm "other")
//! ```
//!
//! A publish in street 1 reaches a subscriber in its sibling street (through city-1) and one
//! in the other city (through the region), wildcards included, once each; realms stay apart
//! at every level; a withdrawn subscription withdraws the interest up to the region; a city
//! or a street bridge killed under QoS 1 load loses and duplicates nothing; a parent cycle
//! is refused.
//!
//! One test at a time ([`SERIAL`]): each starts 17 processes.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::topology::{ClusterSpec, Topology, TopologySpec};
use common::{hierarchy, metric, opts, poll, recv, wait_route};
use macula::client::{Client, Subscription};
use macula::wire::Qos;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const OTHER: &str = "other";

/// Interest changes cross each level as soon as they are applied: a withdrawal at a leaf
/// reaches the region within this bound (documented in `docs/ARCHITECTURE.md`).
const WITHDRAW_WITHIN: Duration = Duration::from_secs(5);

fn spec() -> TopologySpec {
    let mut s = TopologySpec::two_streets(2);
    s.streets = 4;
    s.cities = 2;
    s.clusters = vec![
        ClusterSpec::new("a", 0, 2),
        ClusterSpec::new("b", 1, 2),
        ClusterSpec::new("c", 2, 2),
        ClusterSpec::new("d", 3, 2),
        ClusterSpec::new("x", 3, 1).in_realm(OTHER),
        ClusterSpec::new("y", 0, 1).in_realm(OTHER),
    ];
    s.bridge_realms = vec!["io.macula".into(), OTHER.into()];
    s
}

async fn client_in(
    f: &common::Fleet,
    t: &Topology,
    cluster: &str,
    n: usize,
    realm: &str,
) -> Client {
    let addr = f.procs[t.cluster(cluster)[n]].quic;
    Client::connect(opts(addr, realm))
        .await
        .expect("client connects")
}

/// Receives until `marker` arrives on `topic`; returns the payloads seen before it.
async fn drain_to(sub: &mut Subscription, topic: &str, marker: &[u8]) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    loop {
        let m = recv(sub).await;
        if m.topic() == topic && &m.payload[..] == marker {
            return seen;
        }
        seen.push(m.payload.to_vec());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_cross_streets_cities_and_the_region_once_each_realm_apart() {
    let _serial = SERIAL.lock().await;
    let (f, t) = hierarchy(&spec()).await;
    let publisher = client_in(&f, &t, "a", 0, "io.macula").await;
    // Sibling street (through city-1), a wildcard of one segment.
    let sub_b_client = client_in(&f, &t, "b", 1, "io.macula").await;
    let mut sub_b = sub_b_client.subscribe("sensors.*.temp").await.unwrap();
    // The other city (through the region), a multi-segment wildcard.
    let sub_c_client = client_in(&f, &t, "c", 0, "io.macula").await;
    let mut sub_c = sub_c_client.subscribe("sensors.**").await.unwrap();
    // The other realm, in city-2 as well, subscribed to the same pattern.
    let sub_x_client = client_in(&f, &t, "x", 0, OTHER).await;
    let mut sub_x = sub_x_client.subscribe("sensors.**").await.unwrap();
    let other_pub = client_in(&f, &t, "y", 0, OTHER).await;

    wait_route(&publisher, &mut sub_b, "sensors.s1.temp").await;
    wait_route(&publisher, &mut sub_c, "sensors.s1.temp").await;
    wait_route(&other_pub, &mut sub_x, "sensors.s9.temp").await;

    const N: u32 = 200;
    for i in 0..N {
        publisher
            .publish(
                "sensors.s1.temp",
                i.to_be_bytes().to_vec().into(),
                Qos::AtLeastOnce,
            )
            .await
            .unwrap();
    }
    publisher
        .publish("sensors.s1.temp", "end".into(), Qos::AtLeastOnce)
        .await
        .unwrap();
    publisher
        .flush(Duration::from_secs(20))
        .await
        .expect("all acknowledged");
    for (who, sub) in [("b", &mut sub_b), ("c", &mut sub_c)] {
        let got = drain_to(sub, "sensors.s1.temp", b"end").await;
        let ids: Vec<u32> = got
            .iter()
            .filter(|p| p.len() == 4)
            .map(|p| u32::from_be_bytes(p[..4].try_into().unwrap()))
            .collect();
        let unique: HashSet<u32> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "{who}: a message arrived twice");
        assert_eq!(
            unique.len(),
            N as usize,
            "{who}: {} of {N} arrived",
            unique.len()
        );
    }
    // Nothing of io.macula reached realm "other": x sees only its own realm's marker.
    other_pub
        .publish("sensors.s9.temp", "other-end".into(), Qos::AtLeastOnce)
        .await
        .unwrap();
    let leaked = drain_to(&mut sub_x, "sensors.s9.temp", b"other-end").await;
    assert!(
        leaked.iter().all(|p| p.len() != 4 && p != b"end"),
        "realm other received io.macula messages: {} of them",
        leaked.len()
    );
    // The far copies crossed the region.
    let region = t.region.expect("a region");
    assert!(metric(f.procs[region].admin, "macula_messages_relayed_total") >= f64::from(N));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_subscription_leaves_the_region_within_the_bound() {
    let _serial = SERIAL.lock().await;
    let (f, t) = hierarchy(&spec()).await;
    let region = f.procs[t.region.expect("a region")].admin;
    let publisher = client_in(&f, &t, "a", 0, "io.macula").await;
    let sub_client = client_in(&f, &t, "d", 1, "io.macula").await;
    let mut sub = sub_client.subscribe("leaf.only.here").await.unwrap();
    wait_route(&publisher, &mut sub, "leaf.only.here").await;
    let before = metric(region, "macula_subscriptions");
    assert!(before >= 1.0, "the region holds the leaf's pattern");
    let t0 = Instant::now();
    sub_client.unsubscribe(sub).await.unwrap();
    poll(
        WITHDRAW_WITHIN,
        "the region forgets the pattern",
        || async { (metric(region, "macula_subscriptions") < before).then_some(()) },
    )
    .await;
    eprintln!("withdrawal reached the region in {:?}", t0.elapsed());
    // Publishes stop at street-1: no subscriber is left anywhere.
    let relayed = metric(region, "macula_messages_relayed_total");
    for _ in 0..50 {
        publisher
            .publish("leaf.only.here", "x".into(), Qos::AtMostOnce)
            .await
            .unwrap();
    }
    publisher
        .publish("leaf.only.here", "sync".into(), Qos::AtLeastOnce)
        .await
        .unwrap();
    publisher.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        metric(region, "macula_messages_relayed_total"),
        relayed,
        "the region relayed publishes nobody wants"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_city_killed_under_qos1_load_loses_and_duplicates_nothing() {
    kill_under_qos1_load(|t| t.cities[0]).await;
}

/// The street of the sibling subscriber: the city holds its countdowns when it dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_street_killed_under_qos1_load_loses_and_duplicates_nothing() {
    kill_under_qos1_load(|t| t.streets[1]).await;
}

/// Publishes 2,000 QoS 1 messages from cluster a (street-1) to subscribers in clusters b
/// (street-2, same city) and c (street-3, the other city), SIGKILLs the bridge `victim`
/// picks half-way and restarts it; each subscriber must see every message exactly once.
async fn kill_under_qos1_load(victim: fn(&Topology) -> usize) {
    let _serial = SERIAL.lock().await;
    let (mut f, t) = hierarchy(&spec()).await;
    let publisher = client_in(&f, &t, "a", 0, "io.macula").await;
    let sub_client = client_in(&f, &t, "b", 0, "io.macula").await;
    let mut sub = sub_client.subscribe("ledger.**").await.unwrap();
    let far_client = client_in(&f, &t, "c", 1, "io.macula").await;
    let mut far = far_client.subscribe("ledger.**").await.unwrap();
    wait_route(&publisher, &mut sub, "ledger.probe").await;
    wait_route(&publisher, &mut far, "ledger.probe").await;

    const N: u32 = 2000;
    let (killed_tx, killed_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (pub_task, mut half_rx) =
        common::publish_numbered(&publisher, "ledger.entry", N, Some(killed_rx));
    half_rx.recv().await.unwrap();
    let victim = victim(&t);
    f.kill(victim).await;
    killed_tx.send(()).await.unwrap();
    // The second half is published while the bridge is dead: held unacknowledged below it.
    pub_task.await.unwrap();
    f.restart(victim).unwrap();
    f.wait_ready(Duration::from_secs(30)).await.unwrap();
    publisher
        .flush(Duration::from_secs(60))
        .await
        .expect("every publish acknowledged");
    for (who, s) in [
        ("b (sibling street)", &mut sub),
        ("c (other city)", &mut far),
    ] {
        common::expect_each_once(s, "ledger.entry", N, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{who}: {e}"));
    }
    let a1 = f.procs[t.cluster("a")[0]].admin;
    let resent = metric(a1, "macula_qos1_retransmissions_total");
    eprintln!(
        "{} killed: node-a1 retransmitted {resent} QoS 1 publishes",
        f.procs[victim].name
    );
    assert!(
        resent > 0.0,
        "the origin kept custody of what the dead bridge held"
    );
}

/// Two bridges each configured as the other's parent: the loop is detected and refused with
/// `LOOP_DETECTED` (counted), at most one of the two parent links stays up, and both keep
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_cycle_is_refused() {
    let _serial = SERIAL.lock().await;
    let mut f = common::fleet();
    let qa = common::spawn::free_udp("127.0.0.1").unwrap();
    let qb = common::spawn::free_udp("127.0.0.2").unwrap();
    let a = f
        .bridge_at(
            "loop-a",
            qa,
            &["--level", "city", "--parent", &qb.to_string()],
        )
        .unwrap();
    let b = f
        .bridge_at(
            "loop-b",
            qb,
            &["--level", "street", "--parent", &qa.to_string()],
        )
        .unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (ma, mb) = (f.procs[a].admin, f.procs[b].admin);
    let loops = |m| metric(m, "macula_protocol_errors_total{code=\"loop_detected\"}");
    let uplinks = |m| metric(m, "macula_connections_open{role=\"uplink\"}");
    poll(Duration::from_secs(20), "the loop is detected", || async {
        (loops(ma) + loops(mb) >= 1.0).then_some(())
    })
    .await;
    // Settled: one of the two links won, the other is refused on every redial.
    poll(
        Duration::from_secs(20),
        "one parent link at most",
        || async {
            let refused_again = loops(ma) + loops(mb);
            (uplinks(ma) + uplinks(mb) <= 1.0 && refused_again >= 2.0).then_some(())
        },
    )
    .await;
    for i in [a, b] {
        assert!(f.is_running(i), "{} exited", f.procs[i].name);
        let (code, _) = common::spawn::http_get(f.procs[i].admin, "/health/live").unwrap();
        assert_eq!(code, 200);
    }
}
