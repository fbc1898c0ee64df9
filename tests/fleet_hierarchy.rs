//! Fleets inside the hierarchy (issue 11 item 5), with real processes on 127.0.0.x.
//!
//! ```text
//!   street_fleet_under_a_city_…            a_street_redirected_by_a_city_fleet_…
//!
//!               city                              city fleet: K1 ══ K2
//!        ┌───────┼──────────┐                          ▲  ▲ (S dials the non-owner,
//!   W1 ══ W2 ══ W3          S2                         │  │  is redirected to its owner)
//!   (street fleet)          │                          S  T   (street bridges)
//!   P, R, Q, X clusters     E                          s  t   (nodes)
//! ```
//!
//! The first test: a street fleet of three workers and a plain street under one city. The
//! workers count as one child at the city (`fleet=<name>` in their `connect`), so a publish
//! from a fleet cluster reaches another worker's cluster once (over the peer link, not also
//! through the city), the other street once, and the other street's publishes reach every
//! worker's subscribers once; then the worker owning a subscriber's cluster is SIGKILLed
//! under QoS 1 load: nothing lost, nothing delivered twice. The second: a street bridge
//! dialing the worker of a city fleet that does not own it is redirected to the owner, and
//! re-homes on the survivor when the owner is SIGKILLed under QoS 1 load. The third: a street
//! fleet under a city fleet — both street workers are placed on one city worker (by their
//! fleet's name) and publishes still arrive once everywhere. The fourth: a street served by a
//! lone city worker is redirected during its session when the worker that owns it joins.
//!
//! Cluster and bridge ownership is known in advance: the tests write the processes'
//! identity keys first and hash as the workers do (`macula::fleet::hash`).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::spawn::free_udp;
use common::{metric, opts, poll, wait_route, Fleet};
use macula::client::{Client, Subscription};
use macula::fleet::hash::{child_bridge_key, cluster_key, Placement, Worker};
use macula::wire::{NodeId, Qos};

/// One test at a time: each starts 9 or 10 processes on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const REALM: &str = "io.macula";
/// Messages per publisher in the steady phase and in the kill phase.
const STEADY: u32 = 200;
const UNDER_KILL: u32 = 600;
/// Bounds of the waits (each is polled, never slept out).
const SETTLE: Duration = Duration::from_secs(30);
const DELIVER: Duration = Duration::from_secs(60);

/// What one subscriber must receive: (its name, its subscription, every (topic, index)).
type Check<'a> = (&'a str, &'a mut Subscription, HashSet<(String, u32)>);

/// Writes the identity key of process `name` and returns its node id.
fn identity(f: &Fleet, name: &str) -> NodeId {
    let dir = f.data_dir(name).expect("data dir");
    macula::identity::Identity::load_or_create(&dir)
        .expect("identity key")
        .node_id()
}

/// Index in `ids` of the worker owning `key` (all alive, default weight).
fn owner(ids: &[NodeId], key: u64) -> usize {
    let workers: Vec<Worker> = ids.iter().map(|&id| Worker { id, weight: 100 }).collect();
    let o = Placement::new(&workers).owner(key).expect("an owner");
    ids.iter().position(|i| *i == o).expect("a worker")
}

/// A started fleet: per worker its process index, QUIC and admin addresses, and id.
struct Workers {
    procs: Vec<usize>,
    addrs: Vec<SocketAddr>,
    admins: Vec<SocketAddr>,
    ids: Vec<NodeId>,
}

/// Starts fleet `fleet` of workers `names` on `ips` at `level` under `parents` and waits
/// until every worker is ready and lists them all alive with its peer links up: a node or
/// bridge dialing then meets the whole fleet, not one worker that serves everyone alone.
async fn spawn_fleet(
    f: &mut Fleet,
    fleet: &str,
    names: &[&str],
    ips: &[&str],
    level: &str,
    parents: &[SocketAddr],
) -> Workers {
    let ids: Vec<NodeId> = names.iter().map(|n| identity(f, n)).collect();
    let addrs: Vec<SocketAddr> = ips.iter().map(|ip| free_udp(ip).expect("port")).collect();
    let mut procs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let peers: Vec<SocketAddr> = (0..addrs.len())
            .filter(|j| *j != i)
            .map(|j| addrs[j])
            .collect();
        procs.push(start_worker(
            f,
            name,
            addrs[i],
            (fleet, level),
            &peers,
            parents,
        ));
    }
    for &w in &procs {
        f.wait_ready_one(w, SETTLE).await.expect("worker ready");
    }
    let admins: Vec<SocketAddr> = procs.iter().map(|&w| f.procs[w].admin).collect();
    let n = names.len() as f64;
    poll(SETTLE, "the workers know each other", || async {
        admins
            .iter()
            .all(|&a| {
                metric(a, "macula_fleet_members{status=\"alive\"}") == n
                    && metric(a, "macula_fleet_peer_links") >= n - 1.0
            })
            .then_some(())
    })
    .await;
    Workers {
        procs,
        addrs,
        admins,
        ids,
    }
}

/// Starts worker `name` of fleet `fleet_level.0` at level `fleet_level.1` on `addr`, knowing
/// `peers`, under `parents`; returns its process index.
fn start_worker(
    f: &mut Fleet,
    name: &str,
    addr: SocketAddr,
    (fleet, level): (&str, &str),
    peers: &[SocketAddr],
    parents: &[SocketAddr],
) -> usize {
    let mut args: Vec<String> = vec![
        "--level".into(),
        level.into(),
        "--fleet".into(),
        fleet.into(),
    ];
    for a in peers {
        args.extend(["--fleet-peer".into(), a.to_string()]);
    }
    for p in parents {
        args.extend(["--parent".into(), p.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    f.bridge_at(name, addr, &args).expect("spawn worker")
}

/// A city fleet of two workers on 127.0.0.1 and .2, formed, with no parent.
async fn city_fleet(f: &mut Fleet) -> Workers {
    let (names, ips) = (["k1", "k2"], ["127.0.0.1", "127.0.0.2"]);
    spawn_fleet(f, "city-fleet", &names, &ips, "city", &[]).await
}

async fn client_at(f: &Fleet, i: usize) -> Client {
    Client::connect(opts(f.procs[i].quic, REALM))
        .await
        .expect("client connects")
}

/// A payload: the phase, then the index (big-endian).
fn payload(phase: u8, i: u32) -> Vec<u8> {
    let mut p = vec![phase];
    p.extend_from_slice(&i.to_be_bytes());
    p
}

/// Receives on `sub` until it has seen every (topic, index) of `want` in `phase`, or panics
/// after `within` saying how many are missing; returns how many of them the application saw
/// twice (the client de-duplicates, so a copy here would be a bug in the client too).
async fn expect_each(
    sub: &mut Subscription,
    who: &str,
    phase: u8,
    want: &HashSet<(String, u32)>,
    within: Duration,
) -> usize {
    let deadline = Instant::now() + within;
    let mut seen: HashMap<(String, u32), u32> = HashMap::new();
    while want.iter().any(|w| !seen.contains_key(w)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = match tokio::time::timeout(left, sub.recv()).await {
            Ok(Some(m)) => m,
            _ => panic!(
                "{who}: {} of {} delivered in phase {phase}",
                seen.len(),
                want.len()
            ),
        };
        if m.payload.len() != 5 || m.payload[0] != phase {
            continue;
        }
        let i = u32::from_be_bytes(m.payload[1..5].try_into().expect("4 bytes"));
        let key = (m.topic().to_string(), i);
        assert!(want.contains(&key), "{who}: {key:?} was not meant for it");
        *seen.entry(key).or_default() += 1;
    }
    seen.values().filter(|n| **n > 1).count()
}

fn wanted(topics: &[&str], n: u32) -> HashSet<(String, u32)> {
    topics
        .iter()
        .flat_map(|t| (0..n).map(move |i| (t.to_string(), i)))
        .collect()
}

/// Publishes `n` QoS 1 messages of `phase` on `topic`; at `n / 2` it reports on `half` and
/// waits for `go` (the kill) when those are given.
async fn publish_all(
    c: Client,
    topic: &'static str,
    phase: u8,
    n: u32,
    pause: Option<(
        tokio::sync::mpsc::Sender<()>,
        tokio::sync::watch::Receiver<bool>,
    )>,
) {
    let mut pause = pause;
    for i in 0..n {
        if i == n / 2 {
            if let Some((half, go)) = pause.as_mut() {
                half.send(()).await.expect("the test waits");
                go.wait_for(|k| *k).await.expect("the test signals");
            }
        }
        c.publish(topic, payload(phase, i).into(), Qos::AtLeastOnce)
            .await
            .expect("publish");
    }
    c.flush(DELIVER).await.expect("every publish acknowledged");
}

/// Runs `pubs` concurrently, SIGKILLs process `victim` when each is half-way, and waits until
/// every publish is acknowledged.
async fn publish_and_kill(f: &mut Fleet, victim: usize, pubs: Vec<(Client, &'static str)>) {
    let (half_tx, mut half_rx) = tokio::sync::mpsc::channel::<()>(pubs.len());
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let n = pubs.len();
    let tasks: Vec<_> = pubs
        .into_iter()
        .map(|(c, t)| {
            let pause = Some((half_tx.clone(), go_rx.clone()));
            tokio::spawn(publish_all(c, t, 2, UNDER_KILL, pause))
        })
        .collect();
    for _ in 0..n {
        half_rx.recv().await.expect("a publisher reached half-way");
    }
    f.kill(victim).await;
    eprintln!("killed {}", f.procs[victim].name);
    go_tx.send(true).expect("publishers wait");
    for t in tasks {
        t.await.expect("publisher task");
    }
}

/// Whether the worker at `admin` lists `cluster` as connected there (one link) and owned
/// (`/fleet`).
fn hosts(admin: SocketAddr, cluster: &str) -> bool {
    hosts_n(admin, cluster, 1)
}

/// Whether the worker at `admin` lists `cluster` with `links` links connected and owned.
fn hosts_n(admin: SocketAddr, cluster: &str, links: u64) -> bool {
    let Ok((_, json)) = common::spawn::http_get(admin, "/fleet") else {
        return false;
    };
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    v["clusters"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["cluster"] == cluster && c["owned"] == true && c["nodes"] == links)
    })
}

fn dedup(f: &Fleet, i: usize) -> f64 {
    metric(f.procs[i].admin, "macula_messages_deduplicated_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn street_fleet_under_a_city_delivers_once_each_way_and_survives_a_worker_kill() {
    let _serial = SERIAL.lock().await;
    let t0 = Instant::now();
    let mut f = common::fleet();
    let city = f
        .bridge_with("city", "127.0.0.1", "city", &[], &[])
        .expect("spawn city");
    let city_addr = f.procs[city].quic;
    let street_fleet = spawn_fleet(
        &mut f,
        "street-fleet",
        &["w1", "w2", "w3"],
        &["127.0.0.2", "127.0.0.3", "127.0.0.4"],
        "street",
        &[city_addr],
    )
    .await;
    let Workers {
        procs: workers,
        addrs: waddr,
        admins: wadmin,
        ids: wids,
    } = street_fleet;
    let s2 = f
        .bridge_with("street-2", "127.0.0.5", "street", &[city_addr], &[])
        .expect("spawn street-2");
    // Clusters chosen by their owners: P and R on one worker, Q on a second, X on the third.
    let names: Vec<String> = (0..64).map(|i| format!("c{i}")).collect();
    let own = |c: &str| owner(&wids, cluster_key(REALM, c));
    let p = names[0].clone();
    let wa = own(&p);
    let r = names
        .iter()
        .find(|c| **c != p && own(c) == wa)
        .expect("R")
        .clone();
    let q = names.iter().find(|c| own(c) != wa).expect("Q").clone();
    let wb = own(&q);
    let x = names
        .iter()
        .find(|c| own(c) != wa && own(c) != wb)
        .expect("X")
        .clone();
    // Every node dials the first worker; the others are redirected to their owners.
    let s2_addr = f.procs[s2].quic;
    let mut node = |name: &str, ip: &str, cluster: &str, up: SocketAddr| {
        f.node(name, ip, cluster, up, &[]).expect("spawn node")
    };
    let np = node("node-p", "127.0.0.6", &p, waddr[0]);
    let nr = node("node-r", "127.0.0.7", &r, waddr[0]);
    let nq = node("node-q", "127.0.0.8", &q, waddr[0]);
    let nx = node("node-x", "127.0.0.9", &x, waddr[0]);
    let ne = node("node-e", "127.0.0.10", "east", s2_addr);
    f.wait_ready(SETTLE).await.expect("ready");
    let (city_admin, fleet_nodes) = (f.procs[city].admin, [np, nr, nq, nx]);
    poll(
        SETTLE,
        "the city sees three workers of one fleet",
        || async { (metric(city_admin, "macula_fleet_child_workers") == 3.0).then_some(()) },
    )
    .await;
    let placed = [(&p, wa), (&r, wa), (&q, wb), (&x, 3 - wa - wb)];
    poll(SETTLE, "every fleet cluster at its owner", || async {
        let all = placed.iter().all(|(c, w)| hosts(wadmin[*w], c))
            && fleet_nodes
                .iter()
                .all(|&n| metric(f.procs[n].admin, "macula_fleet_uplink_is_owner") == 1.0);
        all.then_some(())
    })
    .await;
    eprintln!(
        "P={p} R={r} on {}, Q={q} on {}, X={x} on {}; settled in {:?}",
        f.procs[workers[wa]].name,
        f.procs[workers[wb]].name,
        f.procs[workers[3 - wa - wb]].name,
        t0.elapsed()
    );

    let pub_p = client_at(&f, np).await;
    let pub_e = client_at(&f, ne).await;
    let (cq, cr, cx, ce) = (
        client_at(&f, nq).await,
        client_at(&f, nr).await,
        client_at(&f, nx).await,
        client_at(&f, ne).await,
    );
    let mut sq = cq.subscribe("hier.**").await.expect("subscribe");
    let mut sr = cr.subscribe("hier.*.v").await.expect("subscribe");
    let mut sx = cx.subscribe("hier.e.*").await.expect("subscribe");
    let mut se = ce.subscribe("hier.p.*").await.expect("subscribe");
    // Between workers, within one worker, fleet → city → street, and back.
    wait_route(&pub_p, &mut sq, "hier.p.v").await;
    wait_route(&pub_p, &mut sr, "hier.p.v").await;
    wait_route(&pub_p, &mut se, "hier.p.v").await;
    wait_route(&pub_e, &mut sq, "hier.e.v").await;
    wait_route(&pub_e, &mut sr, "hier.e.v").await;
    wait_route(&pub_e, &mut sx, "hier.e.v").await;
    let before: Vec<f64> = [nq, nr, nx, ne].iter().map(|&n| dedup(&f, n)).collect();

    // Steady phase.
    tokio::join!(
        publish_all(pub_p.clone(), "hier.p.v", 1, STEADY, None),
        publish_all(pub_e.clone(), "hier.e.v", 1, STEADY, None)
    );
    let both = wanted(&["hier.p.v", "hier.e.v"], STEADY);
    let checks: [Check<'_>; 4] = [
        ("Q (other worker)", &mut sq, both.clone()),
        ("R (same worker)", &mut sr, both.clone()),
        ("X (third worker)", &mut sx, wanted(&["hier.e.v"], STEADY)),
        ("E (other street)", &mut se, wanted(&["hier.p.v"], STEADY)),
    ];
    for (who, sub, want) in checks {
        assert_eq!(expect_each(sub, who, 1, &want, DELIVER).await, 0, "{who}");
    }
    // No node received a second copy (its window would have dropped it).
    for (i, &n) in [nq, nr, nx, ne].iter().enumerate() {
        assert_eq!(
            dedup(&f, n),
            before[i],
            "{} received duplicate copies",
            f.procs[n].name
        );
    }
    eprintln!("steady phase exactly once at {:?}", t0.elapsed());

    // Kill Q's worker under QoS 1 load from both publishers.
    let victim = workers[wb];
    publish_and_kill(
        &mut f,
        victim,
        vec![(pub_p.clone(), "hier.p.v"), (pub_e.clone(), "hier.e.v")],
    )
    .await;
    let both = wanted(&["hier.p.v", "hier.e.v"], UNDER_KILL);
    let checks: [Check<'_>; 4] = [
        ("Q (re-homed)", &mut sq, both.clone()),
        ("R", &mut sr, both.clone()),
        ("X", &mut sx, wanted(&["hier.e.v"], UNDER_KILL)),
        ("E", &mut se, wanted(&["hier.p.v"], UNDER_KILL)),
    ];
    for (who, sub, want) in checks {
        assert_eq!(
            expect_each(sub, who, 2, &want, DELIVER).await,
            0,
            "{who}: duplicates"
        );
    }
    poll(SETTLE, "Q's node at its cluster's new owner", || async {
        (metric(f.procs[nq].admin, "macula_fleet_uplink_is_owner") == 1.0).then_some(())
    })
    .await;
    poll(SETTLE, "the city forgets the dead worker", || async {
        (metric(city_admin, "macula_fleet_child_workers") == 2.0).then_some(())
    })
    .await;
    let resent = metric(f.procs[np].admin, "macula_qos1_retransmissions_total")
        + metric(f.procs[ne].admin, "macula_qos1_retransmissions_total");
    assert!(
        resent > 0.0,
        "the origins kept custody of what the dead worker held"
    );
    eprintln!(
        "killed {}: lost 0, duplicated 0; origins retransmitted {resent}; total {:?}",
        f.procs[victim].name,
        t0.elapsed()
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_street_redirected_by_a_city_fleet_rehomes_when_its_owner_dies() {
    let _serial = SERIAL.lock().await;
    let t0 = Instant::now();
    let mut f = common::fleet();
    // The workers know each other before street-s dials: the redirect answers its `connect`.
    let Workers {
        procs: workers,
        addrs: kaddr,
        ids: kids,
        ..
    } = city_fleet(&mut f).await;
    let s_id = identity(&f, "street-s");
    let so = owner(&kids, child_bridge_key(REALM, &s_id, None));
    let non_owner = 1 - so;
    let s = f
        .bridge_with("street-s", "127.0.0.3", "street", &[kaddr[non_owner]], &[])
        .expect("spawn street-s");
    let t = f
        .bridge_with("street-t", "127.0.0.4", "street", &[kaddr[0]], &[])
        .expect("spawn street-t");
    let ns = f
        .node("node-s", "127.0.0.5", "south", f.procs[s].quic, &[])
        .expect("spawn node-s");
    let nt = f
        .node("node-t", "127.0.0.6", "north", f.procs[t].quic, &[])
        .expect("spawn node-t");
    f.wait_ready(SETTLE).await.expect("ready");
    let (owner_admin, other_admin) = (
        f.procs[workers[so]].admin,
        f.procs[workers[non_owner]].admin,
    );
    poll(SETTLE, "street-s's parent link up", || async {
        (metric(f.procs[s].admin, "macula_connections_open{role=\"uplink\"}") == 1.0).then_some(())
    })
    .await;
    assert!(
        metric(
            other_admin,
            "macula_fleet_redirects_sent_total{reason=\"connect\"}"
        ) >= 1.0,
        "the worker street-s dialed redirected it"
    );
    assert!(metric(f.procs[s].admin, "macula_fleet_redirects_followed_total") >= 1.0);
    let placed = format!("bridge/{}", macula::bridge::fleet::hex(&s_id));
    // `/fleet` is republished every second.
    poll(SETTLE, "the owner lists street-s as its own", || async {
        hosts(owner_admin, &placed).then_some(())
    })
    .await;
    eprintln!("street-s redirected to its owner in {:?}", t0.elapsed());

    let (pub_s, pub_t) = (client_at(&f, ns).await, client_at(&f, nt).await);
    let (cs, ct) = (client_at(&f, ns).await, client_at(&f, nt).await);
    let mut sub_s = cs.subscribe("up.t.*").await.expect("subscribe");
    let mut sub_t = ct.subscribe("up.s.*").await.expect("subscribe");
    wait_route(&pub_t, &mut sub_s, "up.t.v").await;
    wait_route(&pub_s, &mut sub_t, "up.s.v").await;
    publish_and_kill(
        &mut f,
        workers[so],
        vec![(pub_s.clone(), "up.s.v"), (pub_t.clone(), "up.t.v")],
    )
    .await;
    let dup_s = expect_each(
        &mut sub_s,
        "s",
        2,
        &wanted(&["up.t.v"], UNDER_KILL),
        DELIVER,
    )
    .await;
    let dup_t = expect_each(
        &mut sub_t,
        "t",
        2,
        &wanted(&["up.s.v"], UNDER_KILL),
        DELIVER,
    )
    .await;
    assert_eq!((dup_s, dup_t), (0, 0), "duplicates");
    poll(SETTLE, "both streets on the surviving worker", || async {
        (metric(other_admin, "macula_fleet_child_bridges") == 2.0).then_some(())
    })
    .await;
    let resent = metric(f.procs[ns].admin, "macula_qos1_retransmissions_total")
        + metric(f.procs[nt].admin, "macula_qos1_retransmissions_total");
    assert!(
        resent > 0.0,
        "the origins kept custody of what the dead owner held"
    );
    eprintln!(
        "owner killed: street-s re-homed, lost 0, duplicated 0; origins retransmitted \
         {resent}; total {:?}",
        t0.elapsed()
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_street_fleet_under_a_city_fleet_is_placed_as_one_and_delivers_once() {
    let _serial = SERIAL.lock().await;
    let t0 = Instant::now();
    let mut f = common::fleet();
    let Workers {
        addrs: kaddr,
        admins: kadmin,
        ids: kids,
        ..
    } = city_fleet(&mut f).await;
    // The street workers are placed by their fleet's name: one owner for both.
    let up = owner(
        &kids,
        child_bridge_key(REALM, &[0; 32], Some("street-fleet")),
    );
    let Workers {
        procs: streets,
        admins: wadmin,
        ids: wids,
        ..
    } = spawn_fleet(
        &mut f,
        "street-fleet",
        &["w1", "w2"],
        &["127.0.0.3", "127.0.0.4"],
        "street",
        &[kaddr[1 - up]],
    )
    .await;
    let s2 = f
        .bridge_with("street-2", "127.0.0.5", "street", &[kaddr[1 - up]], &[])
        .expect("spawn street-2");
    let names: Vec<String> = (0..64).map(|i| format!("c{i}")).collect();
    let own = |c: &str| owner(&wids, cluster_key(REALM, c));
    let p = names[0].clone();
    let wa = own(&p);
    let q = names.iter().find(|c| own(c) != wa).expect("Q").clone();
    let s2_addr = f.procs[s2].quic;
    let np = f
        .node("node-p", "127.0.0.6", &p, f.procs[streets[0]].quic, &[])
        .expect("spawn node-p");
    let nq = f
        .node("node-q", "127.0.0.7", &q, f.procs[streets[0]].quic, &[])
        .expect("spawn node-q");
    let ne = f
        .node("node-e", "127.0.0.8", "east", s2_addr, &[])
        .expect("spawn node-e");
    f.wait_ready(SETTLE).await.expect("ready");
    poll(SETTLE, "both street workers at one city worker", || async {
        hosts_n(kadmin[up], "fleet/street-fleet", 2).then_some(())
    })
    .await;
    poll(SETTLE, "P and Q at their owners", || async {
        (hosts(wadmin[wa], &p) && hosts(wadmin[1 - wa], &q)).then_some(())
    })
    .await;
    assert!(
        metric(
            kadmin[1 - up],
            "macula_fleet_redirects_sent_total{reason=\"connect\"}"
        ) >= 2.0,
        "the city worker both street workers dialed redirected them"
    );
    eprintln!("placed in {:?}", t0.elapsed());

    let (pub_p, pub_e) = (client_at(&f, np).await, client_at(&f, ne).await);
    let (cp, cq, ce) = (
        client_at(&f, np).await,
        client_at(&f, nq).await,
        client_at(&f, ne).await,
    );
    let mut sp = cp.subscribe("ff.e.*").await.expect("subscribe");
    let mut sq = cq.subscribe("ff.**").await.expect("subscribe");
    let mut se = ce.subscribe("ff.p.*").await.expect("subscribe");
    wait_route(&pub_p, &mut sq, "ff.p.v").await;
    wait_route(&pub_p, &mut se, "ff.p.v").await;
    wait_route(&pub_e, &mut sq, "ff.e.v").await;
    wait_route(&pub_e, &mut sp, "ff.e.v").await;
    let before: Vec<f64> = [np, nq, ne].iter().map(|&n| dedup(&f, n)).collect();
    tokio::join!(
        publish_all(pub_p.clone(), "ff.p.v", 1, STEADY, None),
        publish_all(pub_e.clone(), "ff.e.v", 1, STEADY, None)
    );
    let checks: [Check<'_>; 3] = [
        (
            "P (e's, down both fleets)",
            &mut sp,
            wanted(&["ff.e.v"], STEADY),
        ),
        (
            "Q (other street worker)",
            &mut sq,
            wanted(&["ff.p.v", "ff.e.v"], STEADY),
        ),
        ("E (other street)", &mut se, wanted(&["ff.p.v"], STEADY)),
    ];
    for (who, sub, want) in checks {
        assert_eq!(expect_each(sub, who, 1, &want, DELIVER).await, 0, "{who}");
    }
    for (i, &n) in [np, nq, ne].iter().enumerate() {
        assert_eq!(
            dedup(&f, n),
            before[i],
            "{} received duplicate copies",
            f.procs[n].name
        );
    }
    eprintln!("exactly once through two fleets; total {:?}", t0.elapsed());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_street_moves_during_its_session_to_a_joining_city_worker_that_owns_it() {
    let _serial = SERIAL.lock().await;
    let t0 = Instant::now();
    let mut f = common::fleet();
    let city = ("city-fleet", "city");
    let (a1, a2) = (
        free_udp("127.0.0.1").unwrap(),
        free_udp("127.0.0.2").unwrap(),
    );
    let kids = [identity(&f, "k1"), identity(&f, "k2")];
    // A street bridge the joining worker k2 will own (identities are drawn until one is).
    let (name, s_id) = (0..64)
        .map(|i| format!("street-{i}"))
        .map(|n| (n.clone(), identity(&f, &n)))
        .find(|(_, id)| owner(&kids, child_bridge_key(REALM, id, None)) == 1)
        .expect("a street k2 owns");
    let k1 = start_worker(&mut f, "k1", a1, city, &[a2], &[]);
    let s = f
        .bridge_with(&name, "127.0.0.3", "street", &[a1], &[])
        .expect("spawn the street");
    let ns = f
        .node("node-s", "127.0.0.4", "south", f.procs[s].quic, &[])
        .expect("spawn node-s");
    let nt = f
        .node("node-t", "127.0.0.5", "north", a1, &[])
        .expect("spawn node-t");
    f.wait_ready(SETTLE).await.expect("ready");
    let (k1_admin, s_admin) = (f.procs[k1].admin, f.procs[s].admin);
    poll(SETTLE, "k1 alone serves the street", || async {
        (metric(k1_admin, "macula_fleet_child_bridges") == 1.0).then_some(())
    })
    .await;
    let k2 = start_worker(&mut f, "k2", a2, city, &[a1], &[]);
    f.wait_ready_one(k2, SETTLE).await.expect("k2 ready");
    let k2_admin = f.procs[k2].admin;
    let placed = format!("bridge/{}", macula::bridge::fleet::hex(&s_id));
    poll(SETTLE, "the street moved to k2", || async {
        (hosts(k2_admin, &placed) && metric(k1_admin, "macula_fleet_child_bridges") == 0.0)
            .then_some(())
    })
    .await;
    let rebalanced = metric(
        k1_admin,
        "macula_fleet_redirects_sent_total{reason=\"rebalance\"}",
    );
    assert!(
        rebalanced >= 1.0,
        "k1 redirected the street during its session"
    );
    assert!(metric(s_admin, "macula_fleet_redirects_followed_total") >= 1.0);
    eprintln!("the street moved to k2 within {:?}", t0.elapsed());
    let (pub_t, cs) = (client_at(&f, nt).await, client_at(&f, ns).await);
    let mut sub = cs.subscribe("moved.*").await.expect("subscribe");
    wait_route(&pub_t, &mut sub, "moved.t").await;
    publish_all(pub_t.clone(), "moved.t", 1, STEADY, None).await;
    let want = wanted(&["moved.t"], STEADY);
    assert_eq!(expect_each(&mut sub, "s", 1, &want, DELIVER).await, 0);
    f.stop().await;
}
