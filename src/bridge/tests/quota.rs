//! Per-tenant quotas at a real bridge (`docs/AUTH.md`, "Quotas"), and provider names kept by
//! the level index and checked by a parent that restricts its child bridge's registrations.

use super::*;
use crate::auth::{Action, Claims, Credential, Permissions};
use crate::identity::Identity;
use crate::metrics::quota::Table;
use crate::wire::{ErrorFrame, SubAck, Subscribe};

/// The next frame other than interest deltas and heartbeats (pings answered): `suback`s and
/// errors included.
async fn next(n: &mut FakeNode) -> Frame {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let raw = tokio::time::timeout_at(deadline, next_frame(&mut n.recv, &mut n.decoder))
            .await
            .expect("a frame in time")
            .expect("read");
        match raw.decode().expect("decodes") {
            Frame::Subscribe(_) | Frame::Unsubscribe(_) | Frame::Pong(_) => {}
            Frame::Ping(p) => {
                n.send(Frame::Pong(Pong {
                    correlation_id: p.correlation_id,
                }))
                .await
            }
            f => return f,
        }
    }
}

async fn subscribe(n: &mut FakeNode, corr: u64, topics: &[&str]) -> Frame {
    n.send(Frame::Subscribe(Subscribe {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        qos: crate::wire::Qos::AtMostOnce,
        correlation_id: corr,
    }))
    .await;
    next(n).await
}

async fn store_named(n: &mut FakeNode, corr: u64, name: &str) -> Frame {
    let value = n.record("c");
    n.send(Frame::Store(Store {
        correlation_id: corr,
        key: procedure_key(REALM, name),
        value,
        ttl_ms: 300_000,
        publisher: n.id,
        name: Some(name.into()),
    }))
    .await;
    n.recv().await
}

fn limit_exceeded(frame: Frame, corr: u64) {
    refused_with(frame, corr, "tenant quota");
}

fn refused_with(frame: Frame, corr: u64, what: &str) {
    match frame {
        Frame::Error(ErrorFrame {
            code,
            correlation_id,
            message,
        }) => {
            assert_eq!(code, ErrorCode::LimitExceeded as u16, "{message}");
            assert_eq!(correlation_id, Some(corr));
            assert!(message.contains(what), "{message}");
        }
        other => panic!("expected LIMIT_EXCEEDED for {corr}, got {other:?}"),
    }
}

fn suback(frame: Frame, corr: u64, count: u32) {
    assert_eq!(
        frame,
        Frame::SubAck(SubAck {
            correlation_id: corr,
            count
        })
    );
}

/// One node at its share of interest, provider records and calls in flight is refused
/// (typed, counted), while a second node of the bridge still subscribes, stores and calls;
/// when the first node's link goes its share is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_at_its_quota_is_refused_while_another_is_served() {
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut cfg = bridge_cfg(dirs[0].path(), Level::Street, vec![]);
    cfg.quota.interest_per_tenant = 2;
    cfg.quota.interest_total = 4;
    cfg.quota.records_per_tenant = 2;
    cfg.quota.calls_per_tenant = 1;
    let m = Metrics::new();
    let bridge = start(cfg, m.clone()).await.expect("bridge starts");
    let dir = dirs[1].path();
    let mut a = FakeNode::connect(bridge.local_addr, dir, "a").await;
    let mut b = FakeNode::connect(bridge.local_addr, dir, "b").await;
    // The provider every call goes to; it never answers, so calls stay in flight.
    let mut p = FakeNode::connect(bridge.local_addr, dir, "p").await;
    expect_ack(store_named(&mut p, 1, "svc.slow").await, 1);

    // Interest: two patterns fit, a third is refused whole; B still subscribes.
    suback(subscribe(&mut a, 10, &["x.1", "x.2"]).await, 10, 2);
    limit_exceeded(subscribe(&mut a, 11, &["x.3"]).await, 11);
    suback(subscribe(&mut a, 12, &["x.1"]).await, 12, 2); // held already: free
    suback(subscribe(&mut b, 13, &["x.3", "x.4"]).await, 13, 2);
    assert_eq!(m.quota.count(Table::Interest, "tenant_entries"), 1);
    // The realm's total (4) is reached: a third node is refused until someone leaves.
    let mut c = FakeNode::connect(bridge.local_addr, dir, "c").await;
    refused_with(subscribe(&mut c, 14, &["x.5"]).await, 14, "table full");
    assert_eq!(m.quota.count(Table::Interest, "total_entries"), 1);

    // Provider records: likewise.
    expect_ack(store_named(&mut a, 20, "svc.a1").await, 20);
    expect_ack(store_named(&mut a, 21, "svc.a2").await, 21);
    limit_exceeded(store_named(&mut a, 22, "svc.a3").await, 22);
    expect_ack(store_named(&mut a, 23, "svc.a1").await, 23); // a refresh passes
    expect_ack(store_named(&mut b, 24, "svc.b1").await, 24);
    assert_eq!(m.quota.count(Table::Records, "tenant_entries"), 1);
    assert_eq!(m.rpc.records.get(), 4);

    // Calls in flight: A's first reaches the provider, its second is OVERLOADED; B's goes.
    a.call(30, p.id).await;
    assert!(matches!(p.recv().await, Frame::Call(c) if c.origin == a.id));
    a.call(31, p.id).await;
    let e = expect_reply(a.recv().await, 31).unwrap_err();
    assert_eq!(e.code, RpcError::OVERLOADED, "{e:?}");
    b.call(32, p.id).await;
    assert!(matches!(p.recv().await, Frame::Call(c) if c.origin == b.id));
    assert_eq!(m.quota.count(Table::Calls, "tenant_entries"), 1);

    // A leaves: its patterns and records go; B still holds its own.
    a.conn.close(0u32.into(), b"bye");
    wait_until("A's records freed", || m.rpc.records.get() == 2).await;
    // C's pattern fits once A's link is gone (its removal follows the close).
    let deadline = Instant::now() + WAIT;
    for corr in 50.. {
        match subscribe(&mut c, corr, &["x.5"]).await {
            Frame::SubAck(a) => {
                assert_eq!(a.count, 1);
                break;
            }
            f => refused_with(f, corr, "table full"),
        }
        assert!(Instant::now() < deadline, "A's patterns were never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bridge.shutdown(Duration::from_millis(100)).await;
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A street bridge whose credential allows registering only `svc.public.**`: the records of
/// its nodes climb to the city with their procedure names, so the city takes the permitted
/// one and refuses the other (before, every record of a restricted child bridge was refused
/// for want of a name). A record stored without a name still fails closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_child_bridges_permitted_records_reach_its_parent() {
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let op = Identity::generate();
    let mut city_cfg = bridge_cfg(dirs[0].path(), Level::City, vec![]);
    city_cfg
        .auth
        .operators
        .insert(REALM.into(), vec![hex(&op.public_key())]);
    let city_m = Metrics::new();
    let city = start(city_cfg, city_m.clone()).await.expect("city starts");

    let street_key = Identity::load_or_create(dirs[1].path()).expect("street key");
    let mut permissions = Permissions::default();
    permissions
        .add(Action::Register, false, "svc.public.**")
        .expect("a valid pattern");
    let now = crate::auth::credential::unix_now();
    let claims = Claims {
        id: [7; 16],
        realm: REALM.into(),
        subject: street_key.public_key(),
        role: crate::auth::Role::Bridge,
        name: "street-7".into(),
        issued_at: now - 60,
        expires_at: now + 3600,
        permissions,
        limits: Default::default(),
        cluster: None,
    };
    let cred = Credential::issue(&op, &claims).expect("issued");
    let cred_file = dirs[1].path().join("street.cred");
    std::fs::write(&cred_file, Credential::to_text(&cred)).expect("write");
    let mut street_cfg = bridge_cfg(
        dirs[1].path(),
        Level::Street,
        vec![city.local_addr.to_string()],
    );
    street_cfg.auth.credential_file = Some(cred_file);
    let street_m = Metrics::new();
    let street = start(street_cfg, street_m.clone())
        .await
        .expect("street starts");
    let city_links = || city_m.connections_open.with_label_values(&["node"]).get();
    wait_until("the street's parent link", || city_links() == 1).await;

    let mut a = FakeNode::connect(street.local_addr, dirs[2].path(), "a").await;
    expect_ack(store_named(&mut a, 1, "svc.public.echo").await, 1);
    expect_ack(store_named(&mut a, 2, "svc.private.billing").await, 2);
    expect_ack(
        a.store(3, procedure_key(REALM, "svc.public.anon"), "a", 300_000)
            .await,
        3,
    );
    assert_eq!(street_m.rpc.records.get(), 3, "the street takes all three");
    let denied = || {
        city_m
            .rpc
            .store_refused_total
            .with_label_values(&["denied"])
            .get()
    };
    wait_until("the city's two refusals", || denied() == 2).await;
    wait_until("the permitted record at the city", || {
        city_m.rpc.records.get() == 1
    })
    .await;
    // Two refusals for two records (one named and denied, one without a name), and one
    // record held: the permitted one.
    assert_eq!(
        city_m
            .permission_denied_total
            .with_label_values(&["register"])
            .get(),
        2
    );
    street.shutdown(Duration::from_secs(1)).await;
    city.shutdown(Duration::from_secs(1)).await;
}
