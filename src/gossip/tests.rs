use std::collections::VecDeque;

use bytes::Bytes;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::engine::encode_map;
use super::sim::{simulate, SimConfig};
use super::*;
use crate::crdt::{ActorId, CrdtMap, Op, Value};

const NOW: u64 = 1_700_000_000_000;

fn id(n: u8) -> ActorId {
    ActorId([n; 32])
}

fn engine(me: u8, peers: &[u8], config: GossipConfig) -> Gossip {
    let mut g = Gossip::new(id(me), config);
    for p in peers {
        g.add_peer(id(*p));
    }
    g
}

fn pair(config: GossipConfig) -> (Gossip, Gossip) {
    (engine(1, &[2], config.clone()), engine(2, &[1], config))
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

/// Delivers `out` (sent by `a`) and every reply, back and forth, until nothing is left.
/// Returns the messages delivered, by kind.
fn run(a: &mut Gossip, b: &mut Gossip, out: Vec<(PeerId, Message)>) -> Vec<&'static str> {
    let mut queue: VecDeque<(ActorId, PeerId, Message)> =
        out.into_iter().map(|(to, m)| (a.actor(), to, m)).collect();
    let mut kinds = Vec::new();
    while let Some((from, to, msg)) = queue.pop_front() {
        kinds.push(msg.as_str());
        let node = if to == a.actor() { &mut *a } else { &mut *b };
        let dbg = format!("{msg:?}").chars().take(300).collect::<String>();
        let replies = node.handle(from, msg, NOW).expect(&dbg);
        let sender = node.actor();
        queue.extend(replies.into_iter().map(|(t, m)| (sender, t, m)));
    }
    kinds
}

fn set_add(g: &mut Gossip, key: &str, elem: &str) {
    g.apply(
        key,
        Op::SetAdd(Bytes::copy_from_slice(elem.as_bytes())),
        NOW,
    )
    .unwrap();
}

#[test]
fn two_engines_converge_via_push() {
    let (mut a, mut b) = pair(GossipConfig::default());
    set_add(&mut a, "members", "a");
    a.apply("hits", Op::Increment(2), NOW).unwrap();
    b.apply("hits", Op::Increment(3), NOW).unwrap();
    let mut r = rng();
    let out = a.on_push_tick(&mut r);
    assert_eq!(out.len(), 1);
    run(&mut a, &mut b, out);
    let out = b.on_push_tick(&mut r);
    run(&mut b, &mut a, out);
    assert_eq!(a.store(), b.store());
    assert_eq!(b.store().get("hits"), Some(Value::GCounter(5)));
    assert_eq!(a.stats().push_rounds, 1);
    assert_eq!(b.stats().deltas_merged, 1);
    assert_eq!(a.stats().deltas_merged, 1);
}

#[test]
fn push_buffer_entries_live_push_rounds_rounds() {
    let cfg = GossipConfig {
        push_rounds: 2,
        ..GossipConfig::default()
    };
    let mut a = engine(1, &[2, 3, 4, 5], cfg);
    let mut r = rng();
    assert!(
        a.on_push_tick(&mut r).is_empty(),
        "empty buffer sends nothing"
    );
    a.apply("hits", Op::Increment(1), NOW).unwrap();
    let first = a.on_push_tick(&mut r);
    assert_eq!(first.len(), 3, "fanout distinct peers");
    let mut to: Vec<_> = first.iter().map(|(p, _)| *p).collect();
    to.dedup();
    assert_eq!(to.len(), 3);
    assert_eq!(a.on_push_tick(&mut r).len(), 3);
    assert!(a.on_push_tick(&mut r).is_empty());
    assert_eq!(a.stats().push_rounds, 2);
    assert_eq!(a.stats().messages_sent, 6);
}

fn anti_entropy_only() -> GossipConfig {
    GossipConfig {
        push_rounds: 0,
        ..GossipConfig::default()
    }
}

#[test]
fn two_engines_converge_via_anti_entropy_alone() {
    let (mut a, mut b) = pair(anti_entropy_only());
    set_add(&mut a, "members", "a");
    set_add(&mut b, "members", "b");
    a.apply("reg", Op::Put(Bytes::from_static(b"x")), NOW)
        .unwrap();
    b.apply("hits", Op::Increment(4), NOW).unwrap();
    let mut r = rng();
    assert!(a.on_push_tick(&mut r).is_empty());
    assert_eq!(a.last_anti_entropy(&id(2), NOW), None);
    let out = a.on_anti_entropy_tick(NOW, &mut r);
    let kinds = run(&mut a, &mut b, out);
    assert_eq!(kinds, ["pull", "pull_reply", "sync", "sync_reply"]);
    assert_eq!(a.store(), b.store());
    assert_eq!(a.store().len(), 3);
    assert_eq!(a.last_anti_entropy(&id(2), NOW + 5), Some(5));
    assert_eq!(a.open_rounds().0, 0, "a completed round is closed");
    assert_eq!(a.stats().anti_entropy_rounds, 1);
}

#[test]
fn anti_entropy_with_empty_states() {
    let (mut a, mut b) = pair(anti_entropy_only());
    let mut r = rng();
    let out = a.on_anti_entropy_tick(NOW, &mut r);
    let kinds = run(&mut a, &mut b, out);
    assert_eq!(kinds, ["pull", "pull_reply", "sync", "sync_reply"]);
    assert!(a.store().is_empty() && b.store().is_empty());
    assert_eq!(a.last_anti_entropy(&id(2), NOW), Some(0));
    assert_eq!(a.open_rounds().0, 0);
}

#[test]
fn anti_entropy_splits_big_states_into_parts() {
    let cfg = GossipConfig {
        max_message_bytes: 2_000,
        ..anti_entropy_only()
    };
    let (mut a, mut b) = pair(cfg);
    for i in 0..500 {
        set_add(&mut a, "big", &format!("element-{i:04}"));
    }
    for i in 0..300 {
        set_add(&mut b, "big", &format!("other-{i:04}"));
    }
    // Many keys, so the digest itself needs several key ranges.
    for i in 0..300 {
        let k = format!("key-number-{i:04}");
        if i % 2 == 0 {
            a.apply(&k, Op::Increment(i + 1), NOW).unwrap();
        } else {
            b.apply(&k, Op::Put(Bytes::from(vec![b'v'; 40])), NOW)
                .unwrap();
        }
    }
    let mut r = rng();
    let out = a.on_anti_entropy_tick(NOW, &mut r);
    assert!(out.len() > 1, "digest split into key ranges: {}", out.len());
    for (_, m) in &out {
        let Message::Pull { digest, .. } = m else {
            panic!("not a pull")
        };
        assert!(
            digest.len() <= 2_000,
            "digest part of {} bytes",
            digest.len()
        );
    }
    let kinds = run(&mut a, &mut b, out);
    let replies = kinds.iter().filter(|k| **k == "pull_reply").count();
    let syncs = kinds.iter().filter(|k| **k == "sync").count();
    assert!(replies > 2 && syncs > 2, "{replies} replies, {syncs} syncs");
    assert_eq!(a.store(), b.store());
    let Some(Value::Set(s)) = a.store().get("big") else {
        panic!("no set")
    };
    assert_eq!(s.len(), 800);
    assert_eq!(a.store().len(), 301);
    assert!(a.last_anti_entropy(&id(2), NOW).is_some());
    assert_eq!(a.open_rounds().0, 0);
}

#[test]
fn big_push_is_split_into_parts() {
    let cfg = GossipConfig {
        max_message_bytes: 2_000,
        ..GossipConfig::default()
    };
    let (mut a, mut b) = pair(cfg);
    for i in 0..500 {
        set_add(&mut a, "big", &format!("element-{i:04}"));
    }
    let out = a.on_push_tick(&mut rng());
    assert!(out.len() > 2);
    for (_, m) in &out {
        let Message::Push { state, .. } = m else {
            panic!()
        };
        assert!(state.len() <= 2_200, "part of {} bytes", state.len());
    }
    run(&mut a, &mut b, out);
    assert_eq!(a.store(), b.store());
}

/// A Push carrying `map` (part 0 of 1).
fn push_of(map: &CrdtMap) -> Message {
    Message::Push {
        part: 0,
        parts: 1,
        state: encode_map(map),
    }
}

#[test]
fn refused_messages_leave_the_store_unchanged() {
    let (mut a, mut b) = pair(GossipConfig::default());
    b.apply("hits", Op::Increment(1), NOW).unwrap();
    let before = b.store().clone();

    // Garbage state bytes.
    let garbage = Message::Push {
        part: 0,
        parts: 1,
        state: Bytes::from_static(b"\xff\x00garbage"),
    };
    let e = b.handle(id(1), garbage, NOW).unwrap_err();
    assert_eq!(e.as_str(), "malformed");
    assert_eq!(b.store(), &before);

    // A register 2 minutes in the future.
    a.apply("reg", Op::Put(Bytes::from_static(b"late")), NOW + 120_000)
        .unwrap();
    let future = push_of(a.store());
    assert!(b.handle(id(1), future, NOW).unwrap().is_empty());
    assert_eq!(b.store(), &before);
    assert_eq!(b.stats().refused.get("clock_skew"), Some(&1));
    assert!(
        b.clock().last().wall_ms <= NOW,
        "a skewed stamp is not observed"
    );

    // An unknown peer.
    let mut c = engine(3, &[], GossipConfig::default());
    c.apply("hits", Op::Increment(9), NOW).unwrap();
    let e = b.handle(id(3), push_of(c.store()), NOW).unwrap_err();
    assert_eq!(e, GossipError::UnknownPeer);
    assert_eq!(b.store(), &before);

    // An exact duplicate: the first merges, the copy is refused.
    let mut d = engine(1, &[2], GossipConfig::default());
    d.apply("other", Op::Increment(2), NOW).unwrap();
    let msg = push_of(d.store());
    b.handle(id(1), msg.clone(), NOW).unwrap();
    let after_first = b.store().clone();
    assert_ne!(after_first, before);
    assert_eq!(b.handle(id(1), msg, NOW), Err(GossipError::Duplicate));
    assert_eq!(b.store(), &after_first);

    // Bad part numbers.
    let bad = Message::Push {
        part: 1,
        parts: 1,
        state: encode_map(d.store()),
    };
    assert!(matches!(
        b.handle(id(1), bad, NOW),
        Err(GossipError::Crdt(_))
    ));

    let s = &b.stats().refused;
    assert_eq!(s.get("malformed"), Some(&2));
    assert_eq!(s.get("unknown_peer"), Some(&1));
    assert_eq!(s.get("duplicate"), Some(&1));
    assert_eq!(b.stats().deltas_merged, 1);
}

#[test]
fn replies_for_unknown_rounds_are_refused() {
    let (_, mut b) = pair(GossipConfig::default());
    let empty = encode_map(&CrdtMap::new());
    let reply = Message::PullReply {
        round: 9,
        from_key: String::new(),
        to_key: None,
        state: empty.clone(),
        wants: Bytes::new(),
        part: 0,
        parts: 1,
    };
    assert_eq!(
        b.handle(id(1), reply, NOW),
        Err(GossipError::UnexpectedReply)
    );
    let sync = Message::Sync {
        round: 9,
        state: empty,
        part: 0,
        parts: 1,
    };
    assert_eq!(
        b.handle(id(1), sync, NOW),
        Err(GossipError::UnexpectedReply)
    );
    let ack = Message::SyncReply {
        round: 9,
        merged: 0,
    };
    assert_eq!(b.handle(id(1), ack, NOW), Err(GossipError::UnexpectedReply));
    assert_eq!(b.stats().refused.get("unexpected_reply"), Some(&3));
}

#[test]
fn open_rounds_expire_and_are_bounded() {
    let mut a = engine(1, &[2], anti_entropy_only());
    let mut r = rng();
    for i in 0..100 {
        a.on_anti_entropy_tick(NOW + i, &mut r);
    }
    assert_eq!(a.open_rounds().0, MAX_OPEN_ROUNDS);
    a.on_anti_entropy_tick(NOW + 61_000, &mut r);
    assert_eq!(
        a.open_rounds().0,
        1,
        "rounds older than 2 × interval are forgotten"
    );
}

#[test]
fn anti_entropy_prefers_the_peer_synced_longest_ago() {
    let mut a = engine(1, &[2, 3, 4], anti_entropy_only());
    let mut r = rng();
    let mut picked = Vec::new();
    for i in 0..3 {
        let out = a.on_anti_entropy_tick(NOW + i, &mut r);
        picked.push(out[0].0);
    }
    picked.sort();
    assert_eq!(picked, [id(2), id(3), id(4)]);
}

#[test]
fn type_mismatch_is_refused_and_other_keys_merge() {
    let (mut a, mut b) = pair(GossipConfig::default());
    b.apply("k", Op::Increment(1), NOW).unwrap();
    set_add(&mut a, "k", "x");
    a.apply("other", Op::Increment(5), NOW).unwrap();
    let out = a.on_push_tick(&mut rng());
    run(&mut a, &mut b, out);
    assert_eq!(b.store().get("k"), Some(Value::GCounter(1)));
    assert_eq!(b.store().get("other"), Some(Value::GCounter(5)));
    assert_eq!(b.stats().refused.get("type_mismatch"), Some(&1));
    assert_eq!(b.stats().deltas_merged, 1);
}

#[test]
fn merge_local_changes_go_into_the_push_buffer() {
    let (mut a, mut b) = pair(GossipConfig::default());
    let mut src = engine(9, &[], GossipConfig::default());
    src.apply("hits", Op::Increment(3), NOW).unwrap();
    let stats = a.merge_local(src.store());
    assert_eq!(stats.changed, 1);
    assert_eq!(a.merge_local(src.store()).changed, 0);
    let out = a.on_push_tick(&mut rng());
    run(&mut a, &mut b, out);
    assert_eq!(b.store().get("hits"), Some(Value::GCounter(3)));
    assert!(a.state_bytes() > 0);
}

#[test]
fn simulation_converges_with_loss_and_churn() {
    let cfg = SimConfig {
        nodes: 50,
        seed: 42,
        loss: 0.05,
        churn: 0.1,
        ..SimConfig::default()
    };
    let report = simulate(&cfg);
    assert!(report.converged, "{report:?}");
    assert_eq!(report.churned, 5);
    assert!(report.lost_messages > 0);
    assert!(report.rounds_to_converge > 0);
    assert_eq!(simulate(&cfg), report, "same seed, same report");
    let other = simulate(&SimConfig { seed: 43, ..cfg });
    assert!(other.converged);
}

#[test]
fn simulation_without_push_converges_by_anti_entropy() {
    let mut cfg = SimConfig {
        nodes: 20,
        seed: 3,
        churn: 0.0,
        anti_entropy_interval_ms: 2_000,
        ..SimConfig::default()
    };
    cfg.gossip.push_rounds = 0;
    let report = simulate(&cfg);
    assert!(report.converged, "{report:?}");
    assert_eq!(report.messages_by_kind[0], 0, "no pushes");
}

fn arb_message() -> impl Strategy<Value = (u8, Vec<u8>, Vec<u8>, u16, u16)> {
    (
        0u8..5,
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec(any::<u8>(), 0..64),
        0u16..4,
        0u16..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_nor_change_the_store_when_refused(
        (kind, bytes, extra, part, parts) in arb_message()
    ) {
        let (mut a, mut b) = pair(GossipConfig::default());
        a.apply("hits", Op::Increment(1), NOW).unwrap();
        b.apply("hits", Op::Increment(2), NOW).unwrap();
        set_add(&mut b, "members", "b");
        // An open round from b to a, so replies get past the round check.
        let mut r = rng();
        let pulls = b.on_anti_entropy_tick(NOW, &mut r);
        for (_, m) in pulls {
            // a knows the round, so a Sync from b is expected.
            let _ = a.handle(id(2), m, NOW);
        }
        let round = 1;
        let state = Bytes::from(bytes);
        let msg = match kind {
            0 => Message::Push { part, parts, state },
            1 => Message::Pull { round, from_key: String::new(), to_key: None, digest: state },
            2 => Message::PullReply {
                round, from_key: String::new(), to_key: None, state,
                wants: Bytes::from(extra), part, parts,
            },
            3 => Message::Sync { round, state, part, parts },
            _ => Message::SyncReply { round, merged: 0 },
        };
        let target = if kind == 2 { &mut b } else { &mut a };
        let from = if kind == 2 { id(1) } else { id(2) };
        let before = target.store().clone();
        if target.handle(from, msg, NOW).is_err() {
            prop_assert_eq!(target.store(), &before);
        }
    }
}
