//! Issue 4 with real processes: CRDT state gossiped inside a cluster, across a partition and
//! heal (network namespaces), and aggregated up the bridge levels.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::netlab::{spawn_in, NetLab};
use common::topology::{ClusterSpec, TopologySpec};
use common::{poll, spawn};
use macula::crdt::{Op, Value};
use serde_json::Value as Json;

/// The `/state` JSON of the process whose admin listener is `admin`.
fn state(admin: SocketAddr) -> Option<Json> {
    let (code, body) = spawn::http_get(admin, "/state").ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// The application keys of a node's state (the `$` keys include per-node registrations that
/// converge too, but the assertions are about what clients wrote).
fn app_keys(s: &Json) -> Json {
    let mut m = serde_json::Map::new();
    if let Some(o) = s.as_object() {
        for (k, v) in o {
            if !k.starts_with('$') {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    Json::Object(m)
}

fn one_cluster(nodes: usize) -> TopologySpec {
    TopologySpec {
        streets: 1,
        clusters: vec![ClusterSpec::new("a", 0, nodes)],
        bridge_realms: Vec::new(),
        config: None,
        single_ip: false,
        cities: 0,
    }
}

/// Five nodes each apply concurrent updates to the same keys (a set, a counter, a register):
/// every node ends with the same state, holding every update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_node_cluster_converges_after_concurrent_updates() {
    let (mut f, t) = common::hierarchy(&one_cluster(5)).await;
    let nodes = t.cluster("a").to_vec();
    let mut clients = Vec::new();
    for &n in &nodes {
        clients.push(common::client(f.procs[n].quic).await);
    }
    // Every node sees every member first (the mesh is complete).
    for &n in &nodes {
        let admin = f.procs[n].admin;
        poll(Duration::from_secs(30), "five members", || async move {
            let s = state(admin)?;
            (s["$members"].as_array()?.len() == 5).then_some(())
        })
        .await;
    }
    let start = Instant::now();
    let updates = clients.iter().enumerate().map(|(i, c)| async move {
        let name = format!("n{}", i + 1);
        c.crdt_update("tags", Op::SetAdd(name.clone().into()))
            .await
            .expect("add");
        c.crdt_update("hits", Op::Increment(i as u64 + 1))
            .await
            .expect("increment");
        c.crdt_update("balance", Op::Add(if i % 2 == 0 { 10 } else { -3 }))
            .await
            .expect("pn add");
        c.put("color", name.into()).await.expect("put");
    });
    futures_util::future::join_all(updates).await;
    let applied = start.elapsed();
    // Every node holds every update: read through the client API (live, not the 1 s
    // snapshot of /state).
    let clients_ref = &clients;
    poll(
        Duration::from_secs(20),
        "every update on every node",
        || async move {
            for c in clients_ref {
                let tags = c.get("tags").await.ok()??;
                let hits = c.get("hits").await.ok()??;
                let balance = c.get("balance").await.ok()??;
                let ok = matches!(tags, Value::Set(ref t) if t.len() == 5)
                    && hits == Value::GCounter(15)
                    && balance == Value::PnCounter(3 * 10 - 2 * 3);
                if !ok {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let elapsed = start.elapsed();
    eprintln!(
        "5-node cluster: updates applied in {applied:?}, every update on every node {elapsed:?} after the first"
    );
    let admins: Vec<SocketAddr> = nodes.iter().map(|&n| f.procs[n].admin).collect();
    let converged = poll(Duration::from_secs(20), "five equal states", || {
        let admins = admins.clone();
        async move {
            let states: Vec<Json> = admins.iter().map(|a| state(*a)).collect::<Option<_>>()?;
            let first = app_keys(&states[0]);
            let all_equal = states.iter().all(|s| app_keys(s) == first);
            let complete = first["tags"].as_array()?.len() == 5
                && first["hits"].as_u64()? == 15
                && first["balance"].as_i64()? == 3 * 10 - 2 * 3;
            (all_equal && complete).then_some(first)
        }
    })
    .await;
    // The register holds one of the five writes, the same everywhere.
    let color = converged["color"]["value"].as_str().expect("color");
    assert!(color.starts_with('n'), "register value {color}");
    // The client API reads the same through any node.
    let v = clients[4].get("hits").await.expect("get");
    assert_eq!(v, Some(Value::GCounter(15)));
    assert_eq!(clients[0].get("missing").await.expect("get"), None);
    // A type mismatch is refused with a typed error, and the key keeps its value.
    let err = clients[0]
        .crdt_update("hits", Op::SetAdd("x".into()))
        .await
        .expect_err("type mismatch");
    assert!(err.to_string().contains("g_counter"), "{err}");
    // Reserved and malformed keys are refused.
    assert!(clients[0].put("$members", "x".into()).await.is_err());
    assert!(clients[0].put("", "x".into()).await.is_err());
    assert_eq!(
        clients[1].get("hits").await.expect("get"),
        Some(Value::GCounter(15))
    );
    // Gossip metrics moved.
    let m = f.metrics(nodes[0]).expect("metrics");
    assert!(spawn::metric_sum(&m, "macula_gossip_rounds_total") > 0.0);
    assert!(spawn::metric_sum(&m, "macula_gossip_deltas_merged_total") > 0.0);
    assert!(spawn::metric_sum(&m, "macula_gossip_bytes_sent_total") > 0.0);
    f.stop().await;
}

/// A node that stops (SIGTERM) removes itself from `$members` everywhere at once, not after
/// the 30 s member timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_disappears_everywhere() {
    let (mut f, t) = common::hierarchy(&one_cluster(3)).await;
    let nodes = t.cluster("a").to_vec();
    for &n in &nodes {
        let admin = f.procs[n].admin;
        poll(Duration::from_secs(30), "three members", || async move {
            (state(admin)?["$members"].as_array()?.len() == 3).then_some(())
        })
        .await;
    }
    let start = Instant::now();
    f.terminate(nodes[2]).await;
    for &n in &nodes[..2] {
        let admin = f.procs[n].admin;
        poll(
            Duration::from_secs(10),
            "two members after the leave",
            || async move { (state(admin)?["$members"].as_array()?.len() == 2).then_some(()) },
        )
        .await;
    }
    eprintln!(
        "leave seen by every node {:?} after SIGTERM",
        start.elapsed()
    );
    f.stop().await;
}

/// A cluster's changes reach the street bridge's and the city bridge's aggregated state,
/// summarised per child; another realm's state never shows up there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_change_reaches_the_city_aggregated() {
    let spec = TopologySpec {
        streets: 1,
        clusters: vec![
            ClusterSpec::new("a", 0, 2),
            ClusterSpec::new("z", 0, 1).in_realm("io.other"),
        ],
        bridge_realms: vec!["io.macula".into(), "io.other".into()],
        config: None,
        single_ip: false,
        cities: 0,
    };
    let (mut f, t) = common::hierarchy(&spec).await;
    let a = t.cluster("a").to_vec();
    let z = t.cluster("z").to_vec();
    let c1 = common::client(f.procs[a[0]].quic).await;
    let c2 = common::client(f.procs[a[1]].quic).await;
    let cz = macula::client::Client::connect(common::opts(f.procs[z[0]].quic, "io.other"))
        .await
        .expect("client io.other");
    let start = Instant::now();
    c1.crdt_update("tags", Op::SetAdd("x".into()))
        .await
        .unwrap();
    c1.crdt_update("hits", Op::Increment(5)).await.unwrap();
    c2.crdt_update("hits", Op::Increment(2)).await.unwrap();
    cz.crdt_update("tags", Op::SetAdd("secret".into()))
        .await
        .unwrap();
    let street = f.procs[t.streets[0]].admin;
    let city = f.procs[t.city].admin;
    let s = poll(Duration::from_secs(30), "street aggregate", || async move {
        let s = state(street)?;
        let level = &s["io.macula"]["level"];
        let ok = level["hits"].as_u64()? == 7
            && level["tags"].as_array()?.iter().any(|e| e == "a\u{0}x");
        ok.then_some(s)
    })
    .await;
    let street_scope = s["io.macula"]["scope"].as_str().expect("scope").to_string();
    let c = poll(Duration::from_secs(30), "city aggregate", || {
        let want = format!("{street_scope}\u{0}x");
        async move {
            let c = state(city)?;
            let level = &c["io.macula"]["level"];
            let ok = level["hits"].as_u64()? == 7
                && level["tags"]
                    .as_array()?
                    .iter()
                    .any(|e| e.as_str() == Some(&want))
                && level["$clusters"].as_array()?.len() == 1;
            ok.then_some(c)
        }
    })
    .await;
    eprintln!(
        "cluster change reached the city's aggregated state in {:?}",
        start.elapsed()
    );
    // Realm isolation at every level: io.other's element only in io.other.
    let dump = c["io.macula"].to_string() + &s["io.macula"].to_string();
    assert!(
        !dump.contains("secret"),
        "io.other leaked into io.macula: {dump}"
    );
    poll(
        Duration::from_secs(30),
        "io.other at the city",
        || async move {
            let c = state(city)?;
            let tags = c["io.other"]["level"]["tags"].as_array()?.clone();
            tags.iter()
                .any(|e| e.as_str().is_some_and(|s| s.ends_with("\u{0}secret")))
                .then_some(())
        },
    )
    .await;
    // The node detail stays below: no $members at the levels.
    assert!(c["io.macula"]["level"].get("$members").is_none());
    // A removal travels up too; the emptied set is garbage-collected (the key goes away).
    c1.crdt_update("tags", Op::SetRemove("x".into()))
        .await
        .unwrap();
    poll(
        Duration::from_secs(30),
        "removal at the city",
        || async move {
            let c = state(city)?;
            let level = c["io.macula"]["level"].as_object()?.clone();
            (!level.contains_key("tags")).then_some(())
        },
    )
    .await;
    // Removing a counter and a register (whatever their kind) does the same, once the
    // removing node has seen both increments: the key reads as absent on the other node,
    // and leaves the street's and the city's aggregated state.
    c1.put("color", "red".into()).await.unwrap();
    poll(Duration::from_secs(30), "7 hits at node a0", || async {
        (c1.get("hits").await.ok()?? == Value::GCounter(7)).then_some(())
    })
    .await;
    c1.delete("hits").await.unwrap();
    c1.delete("color").await.unwrap();
    assert_eq!(c1.get("hits").await.unwrap(), None);
    poll(Duration::from_secs(30), "removals at node a1", || async {
        let gone = c2.get("hits").await.ok()?.is_none() && c2.get("color").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    for (admin, what) in [(street, "street"), (city, "city")] {
        poll(Duration::from_secs(30), what, || async move {
            let s = state(admin)?;
            let level = s["io.macula"]["level"].as_object()?.clone();
            (!level.contains_key("hits") && !level.contains_key("color")).then_some(())
        })
        .await;
    }
    // Counting again starts from 0 everywhere.
    c2.crdt_update("hits", Op::Increment(1)).await.unwrap();
    poll(
        Duration::from_secs(30),
        "a new count at the city",
        || async move { (state(city)?["io.macula"]["level"]["hits"].as_u64()? == 1).then_some(()) },
    )
    .await;
    f.stop().await;
}

// ------------------------------------------------------------------------------------------
// Partition and heal, with network namespaces
// ------------------------------------------------------------------------------------------

/// Five nodes in two halves (3 + 2) update the same keys while cut off from each other; after
/// the partition heals, every node holds the same state with every update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_then_heal_ends_with_equal_state() {
    let Some(lab) = NetLab::new([3, 2]) else {
        eprintln!("SKIPPED: network namespaces need root (ip netns add failed)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Vec::new();
    let seed_addr: SocketAddr = format!("{}:9443", lab.nodes[0].1).parse().unwrap();
    for (i, (ns, ip)) in lab.nodes.iter().enumerate() {
        let seed = (i > 0).then_some(seed_addr);
        procs.push(spawn_in(ns, ip, seed, dir.path()));
    }
    let admins: Vec<SocketAddr> = procs.iter().map(|p| p.admin).collect();
    for &a in &admins {
        poll(
            Duration::from_secs(30),
            "five members before the cut",
            || async move { (state(a)?["$members"].as_array()?.len() == 5).then_some(()) },
        )
        .await;
    }
    let mut clients = Vec::new();
    for p in &procs {
        clients.push(common::client(p.quic).await);
    }
    clients[0]
        .crdt_update("log", Op::SetAdd("before".into()))
        .await
        .unwrap();
    lab.partition(true);
    // Each side updates while cut off: concurrent adds, increments, register writes, and
    // side 0 removes what both had.
    for (i, c) in clients.iter().enumerate() {
        let side = if i < 3 { "left" } else { "right" };
        c.crdt_update("log", Op::SetAdd(format!("{side}-{i}").into()))
            .await
            .unwrap();
        c.crdt_update("hits", Op::Increment(1)).await.unwrap();
        c.put("owner", side.into()).await.unwrap();
    }
    clients[0]
        .crdt_update("log", Op::SetRemove("before".into()))
        .await
        .unwrap();
    // Inside each side the state converges; across the cut it cannot.
    let left = admins[..3].to_vec();
    poll(Duration::from_secs(20), "left side converged", || {
        let left = left.clone();
        async move {
            let s: Vec<Json> = left.iter().map(|a| state(*a)).collect::<Option<_>>()?;
            let ok =
                s.iter().all(|x| app_keys(x) == app_keys(&s[0])) && s[0]["hits"].as_u64()? == 3;
            ok.then_some(())
        }
    })
    .await;
    let right = state(admins[3]).expect("right side state");
    assert!(
        right["hits"].as_u64().is_some_and(|h| h <= 2)
            && !right["log"].to_string().contains("left-"),
        "the cut leaked: {right}"
    );
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await; // links time out on both sides (3 s)
    lab.partition(false);
    let healed = Instant::now();
    let all = admins.clone();
    let fin = poll(
        Duration::from_secs(60),
        "equal state after the heal",
        || {
            let all = all.clone();
            async move {
                let s: Vec<Json> = all.iter().map(|a| state(*a)).collect::<Option<_>>()?;
                let first = app_keys(&s[0]);
                let ok = s.iter().all(|x| app_keys(x) == first)
                    && first["hits"].as_u64()? == 5
                    && first["log"].as_array()?.len() == 5
                    && s.iter()
                        .all(|x| x["$members"].as_array().is_some_and(|m| m.len() == 5));
                ok.then_some(first)
            }
        },
    )
    .await;
    eprintln!(
        "partition: cut for {:?}, equal state {:?} after the heal: {fin}",
        healed - cut_at,
        healed.elapsed()
    );
    assert!(!fin["log"].as_array().unwrap().iter().any(|e| e == "before"));
    for mut p in procs {
        let _ = p.child.start_kill();
        let _ = p.child.wait().await;
    }
    drop(lab);
}
