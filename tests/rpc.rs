//! Remote procedure calls across the bridge hierarchy (`docs/DISCOVERY.md`) with real
//! processes: a city bridge, street bridges under it and clusters of nodes under the streets
//! (`loadtest/topology.rs`, shared with `macula-loadtest rpc`).
//!
//! The tests run one at a time ([`SERIAL`]): each starts five to nine processes, and the TTL
//! and failover tests bound times that a crowded 2-core runner would stretch. Nothing sleeps
//! for a fixed time: every wait polls a call or a metric until a deadline.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::topology::{ClusterSpec, TopologySpec};
use common::{client, hierarchy, metric, poll};
use macula::client::{CallError, Client, Registration};

/// One test at a time (see the module doc).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Timeout of every call in these tests.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Bound of the first successful call after a registration (propagation up the hierarchy,
/// plus up to one negative-cache TTL, 5 s, if a lookup ran before the record arrived).
const FIRST_CALL_WITHIN: Duration = Duration::from_secs(30);

/// Registers an echo provider of `procedure` on `c`; returns the registration (keep it alive)
/// and the number of times the handler ran.
async fn echo_provider(c: &Client, procedure: &str) -> (Registration, Arc<AtomicU64>) {
    let invoked = Arc::new(AtomicU64::new(0));
    let n = invoked.clone();
    let reg = c
        .register(procedure, move |args: Bytes| {
            n.fetch_add(1, Ordering::Relaxed);
            async move { Ok(args) }
        })
        .await
        .expect("register");
    (reg, invoked)
}

/// Calls `procedure` until a call returns its arguments; panics after [`FIRST_CALL_WITHIN`]
/// with the errors seen.
async fn call_until_ok(c: &Client, procedure: &str) {
    let args = Bytes::from_static(b"until-ok");
    let deadline = Instant::now() + FIRST_CALL_WITHIN;
    let mut errors = Vec::new();
    loop {
        match c.call(procedure, args.clone(), TIMEOUT).await {
            Ok(reply) => {
                assert_eq!(reply, args, "the echo provider returns the arguments");
                return;
            }
            Err(e) => errors.push(format!("{e:?}")),
        }
        assert!(
            Instant::now() < deadline,
            "no successful call of {procedure} within {FIRST_CALL_WITHIN:?}; errors: {errors:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (a) A provider in cluster a (street 1) and a caller in cluster b (street 2): the call's
/// lookup and route cross the city bridge, and the reply is the arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_crosses_two_streets_through_the_city() {
    let _serial = SERIAL.lock().await;
    let (mut f, t) = hierarchy(&TopologySpec::two_streets(3)).await;
    let (a1, b1) = (t.cluster("a")[0], t.cluster("b")[0]);

    let provider = client(f.procs[a1].quic).await;
    let (_reg, invoked) = echo_provider(&provider, "svc.echo").await;
    let caller = client(f.procs[b1].quic).await;
    call_until_ok(&caller, "svc.echo").await;

    let args = Bytes::from(vec![7u8; 1000]);
    let reply = caller
        .call("svc.echo", args.clone(), TIMEOUT)
        .await
        .expect("cross-street call");
    assert_eq!(reply, args, "reply equals the arguments");
    assert!(invoked.load(Ordering::Relaxed) >= 2, "the provider ran");
    assert!(
        metric(f.procs[t.city].admin, "macula_rpc_forwarded_total") >= 1.0,
        "the city forwarded the call from street-2 to street-1"
    );
    f.stop().await;
}

/// (b) After a first cross-street call, a caller on another node of cluster b finds the
/// provider in street-2's cache: a street-level hit, and the city is not asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_lookup_is_served_from_the_street_cache() {
    let _serial = SERIAL.lock().await;
    let (mut f, t) = hierarchy(&TopologySpec::two_streets(3)).await;
    let (a1, b1, b2) = (t.cluster("a")[0], t.cluster("b")[0], t.cluster("b")[1]);
    let (street2, city) = (f.procs[t.streets[1]].admin, f.procs[t.city].admin);

    let provider = client(f.procs[a1].quic).await;
    let (_reg, _) = echo_provider(&provider, "svc.cached").await;
    let first = client(f.procs[b1].quic).await;
    call_until_ok(&first, "svc.cached").await;

    const HITS: &str = r#"macula_escalation_cache_hits_total{level="street"}"#;
    const UPSTREAM: &str = r#"macula_escalation_upstream_queries_total{level="street"}"#;
    const CITY_LOOKUPS: &str = r#"macula_frames_received_total{type="find_value"}"#;
    let hits = metric(street2, HITS);
    let upstream = metric(street2, UPSTREAM);
    let city_lookups = metric(city, CITY_LOOKUPS);
    let b2_escalations = metric(f.procs[b2].admin, "macula_escalations_total");
    // A node is ready once it serves its clients, maybe before its uplink is up: a call made
    // before that finds no provider (the first caller's retries hide it; this one has none).
    let b2_admin = f.procs[b2].admin;
    poll(Duration::from_secs(20), "node-b2's uplink", || async move {
        let up = r#"macula_connections_open{role="uplink"}"#;
        (metric(b2_admin, up) >= 1.0).then_some(())
    })
    .await;

    let second = client(f.procs[b2].quic).await;
    let args = Bytes::from_static(b"second caller");
    let reply = second
        .call("svc.cached", args.clone(), TIMEOUT)
        .await
        .expect("second caller's call");
    assert_eq!(reply, args);
    assert!(
        metric(f.procs[b2].admin, "macula_escalations_total") > b2_escalations,
        "node-b2 knew nothing and asked street-2"
    );
    assert!(
        metric(street2, HITS) >= hits + 1.0,
        "street-2 answered from its cache"
    );
    assert_eq!(
        metric(street2, UPSTREAM),
        upstream,
        "street-2 sent no query to the city"
    );
    assert_eq!(
        metric(city, CITY_LOOKUPS),
        city_lookups,
        "the city received no lookup"
    );
    f.stop().await;
}

/// Configuration of the TTL test: provider records live 3 s (re-published every 1.5 s), cached
/// answers 2 s. Given to the bridges as well: without it street-2 would keep its cached answer
/// for its level's TTL (600 s) and calls would fail over to a dead provider
/// (`AllProvidersFailed`) instead of finding none.
const SHORT_TTL: &str = "[dht]\nrecord_ttl_ms = 3000\n\n[cache]\nttl_ms = 2000\n";

/// (c) A provider's node is SIGKILLed (no withdraw): its record expires everywhere, and within
/// a bounded time calls say `NoProvider`. No call succeeds after the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_a_killed_provider_expire_everywhere() {
    let _serial = SERIAL.lock().await;
    let mut spec = TopologySpec::two_streets(3);
    spec.config = Some(SHORT_TTL.into());
    let (mut f, t) = hierarchy(&spec).await;
    let (a1, b1) = (t.cluster("a")[0], t.cluster("b")[0]);

    let provider = client(f.procs[a1].quic).await;
    let (_reg, _) = echo_provider(&provider, "svc.ttl").await;
    let caller = client(f.procs[b1].quic).await;
    call_until_ok(&caller, "svc.ttl").await;

    f.kill(a1).await;
    let killed = Instant::now();
    let within = Duration::from_secs(15);
    let mut errors = Vec::new();
    loop {
        match caller
            .call("svc.ttl", Bytes::from_static(b"anyone?"), TIMEOUT)
            .await
        {
            Ok(_) => panic!("a call succeeded after its only provider's node was killed"),
            Err(CallError::NoProvider) => break,
            Err(e) => errors.push(format!("{e:?}")),
        }
        assert!(
            killed.elapsed() < within,
            "calls did not say NoProvider within {within:?} of the kill; errors: {errors:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f.stop().await;
}

/// (d) Two providers on different nodes of cluster a; one's node is SIGKILLed while a caller
/// calls in a loop. Calls that start a second or more after the kill all succeed, served by
/// the survivor; errors are only calls in flight at the kill, unless the caller's node failed
/// over (`macula_rpc_failovers_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_over_when_a_provider_node_dies() {
    let _serial = SERIAL.lock().await;
    let (mut f, t) = hierarchy(&TopologySpec::two_streets(3)).await;
    let (a1, a2, b1) = (t.cluster("a")[0], t.cluster("a")[1], t.cluster("b")[0]);
    let city = f.procs[t.city].admin;

    let p1 = client(f.procs[a1].quic).await;
    let (_r1, n1) = echo_provider(&p1, "svc.failover").await;
    let p2 = client(f.procs[a2].quic).await;
    let (_r2, n2) = echo_provider(&p2, "svc.failover").await;
    // Both records reach the city before the first lookup, so the answer the caller's side
    // caches lists both providers.
    poll(
        Duration::from_secs(20),
        "the city holds both provider records",
        move || async move { (metric(city, "macula_dht_records") >= 2.0).then_some(()) },
    )
    .await;
    let caller = client(f.procs[b1].quic).await;
    call_until_ok(&caller, "svc.failover").await;
    {
        let (caller, n1, n2) = (&caller, &n1, &n2);
        poll(
            Duration::from_secs(20),
            "both providers serve calls (round-robin)",
            move || async move {
                let _ = caller.call("svc.failover", Bytes::new(), TIMEOUT).await;
                (n1.load(Ordering::Relaxed) > 0 && n2.load(Ordering::Relaxed) > 0).then_some(())
            },
        )
        .await;
    }

    // A caller loop that ends 30 calls after the grace second following the kill.
    let kill_at: Arc<OnceLock<Instant>> = Arc::default();
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(0usize);
    let looping = {
        let (caller, kill_at) = (caller.clone(), kill_at.clone());
        tokio::spawn(async move {
            let mut records: Vec<(Instant, Result<(), String>)> = Vec::new();
            let mut late = 0;
            for seq in 0u64.. {
                let args = Bytes::from(seq.to_be_bytes().to_vec());
                let started = Instant::now();
                let outcome = match caller.call("svc.failover", args.clone(), TIMEOUT).await {
                    Ok(reply) if reply == args => Ok(()),
                    Ok(reply) => Err(format!("reply {reply:?} to {args:?}")),
                    Err(e) => Err(format!("{e:?}")),
                };
                records.push((started, outcome));
                done_tx.send_replace(records.len());
                if kill_at
                    .get()
                    .is_some_and(|k| started >= *k + Duration::from_secs(1))
                {
                    late += 1;
                    if late == 30 {
                        break;
                    }
                }
            }
            records
        })
    };
    tokio::time::timeout(Duration::from_secs(20), done_rx.wait_for(|n| *n >= 10))
        .await
        .expect("10 calls before the kill")
        .expect("caller loop running");
    let served_by_p2 = n2.load(Ordering::Relaxed);
    let killed = Instant::now();
    f.kill(a1).await;
    kill_at.set(killed).expect("set once");
    let records = tokio::time::timeout(Duration::from_secs(90), looping)
        .await
        .expect("30 calls after the kill's grace second, within 90 s")
        .expect("caller loop");

    let grace_end = killed + Duration::from_secs(1);
    let late_failures: Vec<_> = records
        .iter()
        .filter(|(t, r)| *t >= grace_end && r.is_err())
        .map(|(t, r)| (t.duration_since(killed), r))
        .collect();
    assert!(
        late_failures.is_empty(),
        "calls started ≥ 1 s after the kill failed: {late_failures:?}"
    );
    let late = records.iter().filter(|(t, _)| *t >= grace_end).count() as u64;
    assert!(
        n2.load(Ordering::Relaxed) - served_by_p2 >= late,
        "the surviving provider served every call after the kill"
    );
    let failures: Vec<_> = records
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(t, r)| (t.saturating_duration_since(killed), r))
        .collect();
    let failovers = metric(f.procs[b1].admin, "macula_rpc_failovers_total");
    let only_in_flight = records
        .iter()
        .filter(|(_, r)| r.is_err())
        .all(|(t, _)| *t < killed);
    assert!(
        failovers > 0.0 || only_in_flight,
        "no failover counted on node-b1 and calls started after the kill failed: \
         {failures:?} (offsets from the kill)"
    );
    f.stop().await;
}

/// (e) Bridges serving realms io.a and io.b: a procedure registered in io.a is found by a
/// caller in io.a and by nobody in io.b, not even on the provider's own street.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_records_stay_in_their_realm() {
    let _serial = SERIAL.lock().await;
    let spec = TopologySpec {
        streets: 2,
        clusters: vec![
            ClusterSpec::new("a", 0, 1).in_realm("io.a"),
            ClusterSpec::new("b", 1, 1).in_realm("io.a"),
            ClusterSpec::new("c", 0, 1).in_realm("io.b"),
            ClusterSpec::new("d", 1, 1).in_realm("io.b"),
        ],
        bridge_realms: vec!["io.a".into(), "io.b".into()],
        config: None,
        single_ip: false,
        cities: 0,
    };
    let (mut f, t) = hierarchy(&spec).await;
    let connect = |i: usize, realm: &'static str| {
        let opts = common::opts(f.procs[i].quic, realm);
        async move { Client::connect(opts).await.expect("connect") }
    };

    let provider = connect(t.cluster("a")[0], "io.a").await;
    let (_reg, invoked) = echo_provider(&provider, "svc.x").await;
    let same_realm = connect(t.cluster("b")[0], "io.a").await;
    call_until_ok(&same_realm, "svc.x").await;
    let served = invoked.load(Ordering::Relaxed);

    for cluster in ["c", "d"] {
        let other_realm = connect(t.cluster(cluster)[0], "io.b").await;
        let r = other_realm
            .call("svc.x", Bytes::from_static(b"from io.b"), TIMEOUT)
            .await;
        assert!(
            matches!(r, Err(CallError::NoProvider)),
            "a caller in io.b (cluster {cluster}) got {r:?}"
        );
    }
    assert_eq!(
        invoked.load(Ordering::Relaxed),
        served,
        "io.b never reached the provider"
    );
    call_until_ok(&same_realm, "svc.x").await;
    f.stop().await;
}

/// (f) Malformed procedure names and oversized arguments are `Invalid`, an unknown procedure
/// is `NoProvider` within the call's timeout, and the node goes on serving calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_get_typed_errors_and_the_node_keeps_serving() {
    let _serial = SERIAL.lock().await;
    let (mut f, t) = hierarchy(&TopologySpec::two_streets(1)).await;
    let (a1, b1) = (t.cluster("a")[0], t.cluster("b")[0]);
    let node_b1 = f.procs[b1].admin;

    let provider = client(f.procs[a1].quic).await;
    let (_reg, _) = echo_provider(&provider, "svc.echo").await;
    let caller = client(f.procs[b1].quic).await;
    call_until_ok(&caller, "svc.echo").await;

    let too_long = "p".repeat(256);
    for name in ["", "has space", "tab\tname", "caf\u{e9}", too_long.as_str()] {
        let r = caller.call(name, Bytes::from_static(b"x"), TIMEOUT).await;
        assert!(
            matches!(r, Err(CallError::Invalid(_))),
            "procedure {name:?}: {r:?}"
        );
    }
    let oversized = Bytes::from(vec![0u8; 2 << 20]);
    let r = caller.call("svc.echo", oversized, TIMEOUT).await;
    assert!(
        matches!(r, Err(CallError::Invalid(_))),
        "2 MiB of arguments: {r:?}"
    );

    let no_provider = r#"macula_rpc_calls_total{outcome="no_provider"}"#;
    let before = metric(node_b1, no_provider);
    let r = caller
        .call("svc.nobody.home", Bytes::from_static(b"x"), TIMEOUT)
        .await;
    assert!(
        matches!(r, Err(CallError::NoProvider)),
        "unknown procedure: {r:?}"
    );
    assert!(
        metric(node_b1, no_provider) > before,
        "node-b1 counted the no_provider call"
    );

    // The node still serves: the same client, a new one, and its readiness probe.
    let args = Bytes::from_static(b"still here");
    let reply = caller.call("svc.echo", args.clone(), TIMEOUT).await;
    assert_eq!(reply.expect("same client still served"), args);
    let fresh = client(f.procs[b1].quic).await;
    let reply = fresh.call("svc.echo", args.clone(), TIMEOUT).await;
    assert_eq!(reply.expect("new client served"), args);
    let (code, _) = common::spawn::http_get(node_b1, "/health/ready").expect("admin");
    assert_eq!(code, 200, "node-b1 still ready");
    f.stop().await;
}

/// (g) Inside a cluster a call goes over the mesh: a provider on a1 and a caller on a3 (which
/// joined through a1 as its seed) talk without any frame of the call reaching a bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_inside_a_cluster_stays_on_the_mesh() {
    let _serial = SERIAL.lock().await;
    let (mut f, t) = hierarchy(&TopologySpec::two_streets(3)).await;
    let a = t.cluster("a").to_vec();
    let street1 = t.streets[0];
    poll(
        Duration::from_secs(20),
        "cluster a's mesh is complete",
        || {
            let admins: Vec<_> = a.iter().map(|&i| f.procs[i].admin).collect();
            async move {
                admins
                    .iter()
                    .all(|&ad| metric(ad, "macula_mesh_peers") >= 2.0)
                    .then_some(())
            }
        },
    )
    .await;
    let provider = client(f.procs[a[0]].quic).await;
    let (_reg, invoked) = echo_provider(&provider, "svc.local").await;
    let caller = client(f.procs[a[2]].quic).await;
    call_until_ok(&caller, "svc.local").await;
    let street_calls = |f: &common::Fleet| {
        metric(
            f.procs[street1].admin,
            "macula_frames_received_total{type=\"call\"}",
        )
    };
    let before = street_calls(&f);
    for i in 0..200u32 {
        let args = Bytes::from(i.to_be_bytes().to_vec());
        assert_eq!(
            caller.call("svc.local", args.clone(), TIMEOUT).await,
            Ok(args)
        );
    }
    assert_eq!(
        street_calls(&f),
        before,
        "no call reached the street bridge"
    );
    assert!(invoked.load(Ordering::Relaxed) >= 200);
    let lookups = metric(f.procs[a[2]].admin, "macula_dht_routing_hops_count");
    assert!(lookups >= 1.0, "the caller's node looked the procedure up");
    assert_eq!(
        lookups,
        metric(
            f.procs[a[2]].admin,
            "macula_dht_routing_hops_bucket{le=\"0\"}"
        ),
        "every lookup was answered inside the cluster"
    );
    f.stop().await;
}
