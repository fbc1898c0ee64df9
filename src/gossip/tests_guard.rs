//! What an engine refuses of a peer's states: entries of its own actor it never wrote (the
//! whole message), and the keys its driver's policy refuses (those keys only).

use std::collections::BTreeMap;

use bytes::Bytes;

use super::engine::encode_map;
use super::*;
use crate::crdt::{ActorId, Crdt, CrdtMap, GCounter, Hlc, Kind, Op, OrSet, Value};

const NOW: u64 = 1_700_000_000_000;

fn id(n: u8) -> ActorId {
    ActorId([n; 32])
}

fn push(state: &CrdtMap) -> Message {
    Message::Push {
        part: 0,
        parts: 1,
        state: encode_map(state),
    }
}

fn node(me: u8, peer: u8) -> Gossip {
    let mut g = Gossip::new(id(me), GossipConfig::default());
    g.add_peer(id(peer));
    g
}

/// The probe of issue 12: a mesh peer set the node's own G-Counter entry to 2^64 − 1, after
/// which every increment failed with "counter overflow". That key is refused (and kept for
/// the audit line); the rest of the message, which an honest peer may be relaying, merges.
#[test]
fn a_peer_cannot_forge_our_own_counter_entry() {
    let mut a = node(1, 2);
    a.apply("hits", Op::Increment(1), NOW).unwrap();
    let mut forged = CrdtMap::new();
    forged.insert(
        "hits".into(),
        Crdt::GCounter(GCounter {
            counts: BTreeMap::from([(id(1), u64::MAX)]),
            base: BTreeMap::new(),
        }),
    );
    // An honest key in the same message is taken.
    forged.insert(
        "color".into(),
        Crdt::GCounter(GCounter {
            counts: BTreeMap::from([(id(2), 7)]),
            base: BTreeMap::new(),
        }),
    );
    a.handle(id(2), push(&forged), NOW).unwrap();
    assert_eq!(a.take_forged().as_deref(), Some("hits"));
    assert_eq!(a.take_forged(), None, "taken once");
    assert_eq!(a.stats().refused.get("forged_actor"), Some(&1));
    assert_eq!(a.store().get("hits"), Some(Value::GCounter(1)));
    assert_eq!(a.store().get("color"), Some(Value::GCounter(7)), "merged");
    a.apply("hits", Op::Increment(1), NOW)
        .expect("increments keep working");
    assert_eq!(a.store().get("hits"), Some(Value::GCounter(2)));
}

/// Dots of our actor we never minted (an add "by us" we never made, or a context that
/// claims we removed something) and registers "we" stamped are refused the same way.
#[test]
fn a_peer_cannot_forge_our_dots_or_registers() {
    let mut a = node(1, 2);
    a.apply("tags", Op::SetAdd("mine".into()), NOW).unwrap();
    let mut s = OrSet::default();
    s.add(id(1), "mine".into());
    s.add(id(1), "planted".into());
    let mut forged = CrdtMap::new();
    forged.insert("tags".into(), Crdt::OrSet(s));
    a.handle(id(2), push(&forged), NOW).unwrap();
    assert_eq!(a.take_forged().as_deref(), Some("tags"));
    assert_eq!(
        a.store().get("tags"),
        Some(Value::Set(vec![Bytes::from("mine")]))
    );
    let mut reg = CrdtMap::new();
    reg.apply(
        "color",
        Op::Put("blue".into()),
        id(1),
        Hlc {
            wall_ms: NOW,
            logical: 0,
        },
        &Default::default(),
    )
    .unwrap();
    a.handle(id(2), push(&reg), NOW).unwrap();
    assert_eq!(a.take_forged().as_deref(), Some("color"));
    assert_eq!(a.store().get("color"), None);
    assert_eq!(a.stats().refused.get("forged_actor"), Some(&2));
}

/// Our own updates relayed back by a peer (pushes, anti-entropy) are not forgeries.
#[test]
fn our_own_state_relayed_back_is_accepted() {
    let mut a = node(1, 2);
    let mut b = node(2, 1);
    a.apply("hits", Op::Increment(5), NOW).unwrap();
    a.apply("tags", Op::SetAdd("x".into()), NOW).unwrap();
    a.apply("tags", Op::SetRemove("x".into()), NOW).unwrap();
    a.apply("color", Op::Put("red".into()), NOW).unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    for (_, m) in a.on_push_tick(&mut rng) {
        b.handle(id(1), m, NOW).unwrap();
    }
    b.apply("hits", Op::Increment(1), NOW).unwrap();
    // b's whole store (a's entries included) back to a.
    let whole = b.store().delta_since(&Default::default());
    a.handle(id(2), push(&whole), NOW).expect("not a forgery");
    assert_eq!(a.store().get("hits"), Some(Value::GCounter(6)));
    assert!(a.stats().refused.is_empty(), "{:?}", a.stats().refused);
}

/// The driver's policy refuses single keys: they are left out and counted, the others merge.
#[test]
fn keys_the_policy_refuses_are_left_out() {
    let mut a = node(1, 2);
    let mut b = node(2, 1);
    b.apply("sensors.t", Op::Increment(1), NOW).unwrap();
    b.apply("billing.x", Op::Increment(1), NOW).unwrap();
    b.apply("$rpc/p", Op::Increment(1), NOW).unwrap();
    let state = b.store().delta_since(&Default::default());
    let mut policy = |k: &str, kind: Kind| {
        crate::state::check_remote_key(k, kind)?;
        if k.starts_with("billing.") {
            return Err(crate::crdt::CrdtError::Denied {
                key: k.into(),
                why: "no".into(),
            });
        }
        Ok(())
    };
    a.handle_with(id(2), push(&state), NOW, &mut policy)
        .unwrap();
    assert_eq!(a.store().get("sensors.t"), Some(Value::GCounter(1)));
    assert_eq!(a.store().get("billing.x"), None);
    assert_eq!(
        a.store().get("$rpc/p"),
        None,
        "a system key of the wrong kind"
    );
    assert_eq!(a.stats().refused.get("denied"), Some(&1));
    assert_eq!(a.stats().refused.get("reserved_key"), Some(&1));
}

/// Unsubscribing garbage-collects the `$sub/` key in the engine's store, and the removal
/// still reaches a peer that holds the element.
#[test]
fn an_emptied_key_is_collected_and_its_removal_still_spreads() {
    let mut a = node(1, 2);
    let mut b = node(2, 1);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    a.apply("$sub/x.*", Op::SetAdd("n1".into()), NOW).unwrap();
    for (_, m) in a.on_push_tick(&mut rng) {
        b.handle(id(1), m, NOW).unwrap();
    }
    a.apply("$sub/x.*", Op::SetRemove("n1".into()), NOW)
        .unwrap();
    assert_eq!(a.store().len(), 0);
    assert_eq!(a.stats().keys_retired, 1);
    // Anti-entropy only (no push): b learns the removal from a's retired context.
    let out = b.on_anti_entropy_tick(NOW, &mut rng);
    let mut queue: Vec<(ActorId, ActorId, Message)> =
        out.into_iter().map(|(to, m)| (id(2), to, m)).collect();
    while let Some((from, to, m)) = queue.pop() {
        let g = if to == id(1) { &mut a } else { &mut b };
        let replies = g.handle(from, m, NOW).unwrap();
        let me = g.actor();
        queue.extend(replies.into_iter().map(|(t, m)| (me, t, m)));
    }
    assert_eq!(b.store().get("$sub/x.*"), None);
    assert_eq!(b.store().len(), 0, "collected at b too");
}
