//! Garbage collection of keys with no live content (retired keys: emptied sets, removed
//! registers and counters), the byte quotas and the one-writer rule
//! ([`CrdtMap::forged_key`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn actor(i: u8) -> ActorId {
    ActorId([i; 32])
}

fn ts() -> Hlc {
    Hlc::default()
}

fn add(m: &mut CrdtMap, key: &str, a: u8, e: &str, l: &Limits) -> CrdtMap {
    m.apply(
        key,
        Op::SetAdd(Bytes::from(e.to_owned())),
        actor(a),
        ts(),
        l,
    )
    .unwrap()
}

fn remove(m: &mut CrdtMap, key: &str, a: u8, e: &str, l: &Limits) -> CrdtMap {
    m.apply(
        key,
        Op::SetRemove(Bytes::from(e.to_owned())),
        actor(a),
        ts(),
        l,
    )
    .unwrap()
}

#[test]
fn an_emptied_set_is_retired_and_an_old_add_does_not_resurrect_it() {
    let l = Limits::default();
    let mut m = CrdtMap::new();
    let old_add = add(&mut m, "$sub/a.*", 1, "node-1", &l);
    remove(&mut m, "$sub/a.*", 1, "node-1", &l);
    assert_eq!(m.retire_dead(["$sub/a.*"], &l), 1);
    assert_eq!((m.len(), m.retired_len()), (0, 1));
    assert_eq!(m.get("$sub/a.*"), None);
    assert_eq!(m.approx_bytes(), 0, "a retired key costs no live bytes");
    // The add delivered again (a stale push): its dot is in the kept context.
    let st = m.merge(&old_add, &l);
    assert_eq!((st.changed, m.len()), (0, 0), "{st:?}");
    // The digest still shows the context: a peer holding the element is sent the removal.
    let Some(Summary::OrSet(ctx)) = m.digest().entries.get("$sub/a.*").cloned() else {
        panic!("retired key in the digest");
    };
    let mut peer = CrdtMap::new();
    peer.merge(&old_add, &l);
    let fix = m.delta_since(&peer.digest());
    peer.merge(&fix, &l);
    assert_eq!(peer.get("$sub/a.*"), None, "an emptied set reads as absent");
    assert!(peer.crdt("$sub/a.*").is_some_and(Crdt::is_dead));
    // A new add continues the actor's dots after the kept context.
    let again = add(&mut m, "$sub/a.*", 1, "node-1", &l);
    let Some(Crdt::OrSet(s)) = again.crdt("$sub/a.*") else {
        panic!("an OR-Set delta");
    };
    let dot = *s.live_dots().next().unwrap();
    assert!(
        !ctx.contains(&dot),
        "fresh dot {dot:?} outside the retired context"
    );
    assert_eq!((m.len(), m.retired_len()), (1, 0));
    assert_eq!(m.get("$sub/a.*"), Some(Value::Set(vec!["node-1".into()])));
    // A remote add the context has not seen revives a retired key.
    remove(&mut m, "$sub/a.*", 1, "node-1", &l);
    m.retire_dead(["$sub/a.*"], &l);
    let mut other = CrdtMap::new();
    let theirs = add(&mut other, "$sub/a.*", 2, "node-2", &l);
    assert_eq!(m.merge(&theirs, &l).changed, 1);
    assert_eq!(m.get("$sub/a.*"), Some(Value::Set(vec!["node-2".into()])));
    // Another kind on a retired key is a type mismatch, never a silent new key.
    remove(&mut m, "$sub/a.*", 2, "node-2", &l);
    m.retire_dead(["$sub/a.*"], &l);
    let err = m
        .apply("$sub/a.*", Op::Increment(1), actor(1), ts(), &l)
        .unwrap_err();
    assert!(matches!(err, CrdtError::TypeMismatch { .. }), "{err}");
}

#[test]
fn subscribe_unsubscribe_churn_does_not_fill_the_key_table() {
    let l = Limits {
        max_keys: 64,
        max_retired: 100,
        ..Limits::default()
    };
    let mut m = CrdtMap::new();
    for i in 0..10_000 {
        let key = format!("$sub/p{i}");
        add(&mut m, &key, 1, "node-1", &l);
        remove(&mut m, &key, 1, "node-1", &l);
        m.retire_dead([key.as_str()], &l);
    }
    assert_eq!((m.len(), m.retired_len()), (0, 100));
    // The key table is as free as at the start.
    for i in 0..64 {
        add(&mut m, &format!("app{i}"), 1, "x", &l);
    }
    assert_eq!(m.len(), 64);
}

#[test]
fn one_set_and_the_store_are_bounded_in_bytes() {
    let l = Limits {
        max_set_bytes: 64 * 1024,
        max_store_bytes: 256 * 1024,
        ..Limits::default()
    };
    let mut m = CrdtMap::new();
    let big = |i: usize| Bytes::from(format!("{i:08}").repeat(1024)); // 8 KiB
    let mut n = 0;
    let err = loop {
        match m.apply("blob", Op::SetAdd(big(n)), actor(1), ts(), &l) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(n, 8, "eight 8 KiB elements fit 64 KiB");
    assert_eq!(
        err,
        CrdtError::Quota {
            what: "set bytes",
            limit: 64 * 1024
        }
    );
    let mut k = 0;
    let err = loop {
        let key = format!("reg{k}");
        match m.apply(&key, Op::Put(big(k)), actor(1), ts(), &l) {
            Ok(_) => k += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            CrdtError::Quota {
                what: "store bytes",
                ..
            }
        ),
        "{err}"
    );
    assert!(m.approx_bytes() <= l.max_store_bytes);
    // A remote state that would pass the store's bound is refused key by key.
    let mut remote = CrdtMap::new();
    remote
        .apply("far", Op::Put(big(99)), actor(2), ts(), &Limits::default())
        .unwrap();
    let st = m.merge(&remote, &l);
    assert_eq!(st.refused.len(), 1, "{st:?}");
    assert_eq!(m.get("far"), None);
    // A set grown past its bound by a merge is refused too.
    let mut huge = CrdtMap::new();
    for i in 0..9 {
        huge.apply(
            "other",
            Op::SetAdd(big(i)),
            actor(2),
            ts(),
            &Limits::default(),
        )
        .unwrap();
    }
    let mut fresh = CrdtMap::new();
    let st = fresh.merge(&huge, &l);
    assert!(
        matches!(
            st.refused[..],
            [(
                _,
                CrdtError::Quota {
                    what: "set bytes",
                    ..
                }
            )]
        ),
        "{st:?}"
    );
}

#[test]
fn the_byte_count_follows_every_change() {
    let l = Limits::default();
    let mut m = CrdtMap::new();
    add(&mut m, "s", 1, "abc", &l);
    m.apply("c", Op::Increment(2), actor(1), ts(), &l).unwrap();
    m.apply("r", Op::Put("v".into()), actor(1), ts(), &l)
        .unwrap();
    let mut other = CrdtMap::new();
    add(&mut other, "s", 2, "defg", &l);
    other
        .apply("c", Op::Increment(5), actor(2), ts(), &l)
        .unwrap();
    m.merge(&other, &l);
    remove(&mut m, "s", 1, "abc", &l);
    let expect: usize = m.iter().map(|(k, v)| approx_size(k, v)).sum();
    assert_eq!(m.approx_bytes(), expect);
    let mut bytes = Vec::new();
    m.encode(&mut bytes);
    let decoded = CrdtMap::decode(&bytes, &l).unwrap();
    assert_eq!(decoded.approx_bytes(), expect);
}

#[test]
fn own_entries_beyond_ours_are_forged_and_ours_relayed_back_are_not() {
    let l = Limits::default();
    let me = actor(1);
    let mut mine = CrdtMap::new();
    mine.apply("hits", Op::Increment(3), me, ts(), &l).unwrap();
    add(&mut mine, "tags", 1, "a", &l);
    let stamp = Hlc {
        wall_ms: 10,
        logical: 0,
    };
    mine.apply("color", Op::Put("red".into()), me, stamp, &l)
        .unwrap();
    mine.apply("pn", Op::Add(-2), me, ts(), &l).unwrap();
    // Our own state coming back (relayed by a peer) claims nothing new.
    assert_eq!(mine.forged_key(&mine.clone(), &me), None);
    assert_eq!(mine.forged_key(&mine.clone(), &actor(2)), None);

    let forged = |key: &str, value: Crdt| {
        let mut m = CrdtMap::new();
        m.insert(key.into(), value);
        m
    };
    let counter = |a: ActorId, n: u64| GCounter {
        counts: BTreeMap::from([(a, n)]),
        base: BTreeMap::new(),
    };
    let cases = [
        forged("hits", Crdt::GCounter(counter(me, u64::MAX))),
        forged("new", Crdt::GCounter(counter(me, 1))),
        forged(
            "pn",
            Crdt::PnCounter(PnCounter {
                p: GCounter::default(),
                n: counter(me, 3),
            }),
        ),
        {
            let mut s = OrSet::default();
            s.add(me, "x".into());
            s.add(me, "y".into()); // dot (me, 2): we only minted (me, 1) in "tags"
            forged("tags", Crdt::OrSet(s))
        },
        forged(
            "color",
            Crdt::Lww(LwwRegister {
                value: "blue".into(),
                ts: Hlc {
                    wall_ms: 11,
                    logical: 0,
                },
                actor: me,
                deleted: false,
            }),
        ),
    ];
    for (i, c) in cases.iter().enumerate() {
        assert!(
            mine.forged_key(c, &me).is_some(),
            "case {i} is forged: {c:?}"
        );
        assert_eq!(
            mine.forged_key(c, &actor(2)),
            None,
            "case {i}: only the own actor"
        );
    }
    // Another actor's entries, however large, are not ours to judge.
    let theirs = forged("hits", Crdt::GCounter(counter(actor(3), u64::MAX)));
    assert_eq!(mine.forged_key(&theirs, &me), None);
}

#[test]
fn a_third_actors_saturated_counter_does_not_stop_honest_increments() {
    let l = Limits::default();
    let mut m = CrdtMap::new();
    m.apply("hits", Op::Increment(1), actor(1), ts(), &l)
        .unwrap();
    let mut big = CrdtMap::new();
    big.apply("hits", Op::Increment(u64::MAX), actor(3), ts(), &l)
        .unwrap();
    m.merge(&big, &l);
    assert_eq!(m.get("hits"), Some(Value::GCounter(u64::MAX)), "saturates");
    m.apply("hits", Op::Increment(1), actor(1), ts(), &l)
        .expect("our own slot still counts");
    let Some(Crdt::GCounter(c)) = m.crdt("hits") else {
        panic!("a counter");
    };
    assert_eq!(c.counts[&actor(1)], 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Garbage collection is invisible: two replicas that retire dead keys after every
    /// change read exactly what two that never collect read, under any interleaving of
    /// writes, removals (of elements and of whole keys, of every kind) and (re)deliveries
    /// of old deltas. A step is `(replica, op, key, operand, delta to deliver)`; key `k0`
    /// is an OR-Set, `k1` a register, `k2` a G-Counter, `k3` a PN-Counter.
    #[test]
    fn collecting_dead_keys_changes_no_read(
        script in proptest::collection::vec((0usize..2, 0u8..5, 0u8..4, 0u8..3, any::<usize>()), 0..80)
    ) {
        let l = Limits { max_retired: 1000, ..Limits::default() };
        let mut gc = [CrdtMap::new(), CrdtMap::new()];
        let mut plain = [CrdtMap::new(), CrdtMap::new()];
        // Deltas each replica produced, for redelivery to the other: (gc world, plain world).
        let mut log: [Vec<(CrdtMap, CrdtMap)>; 2] = [Vec::new(), Vec::new()];
        for (i, (r, op, k, e, pick)) in script.into_iter().enumerate() {
            let key = format!("k{k}");
            let el = Bytes::from(vec![b'a' + e]);
            let who = actor(r as u8 + 1);
            let at = Hlc { wall_ms: i as u64 + 1, logical: 0 };
            let o = match (op, k) {
                (0, 0) => Some(Op::SetAdd(el)),
                (0, 1) => Some(Op::Put(el)),
                (0, 2) => Some(Op::Increment(u64::from(e) + 1)),
                (0, _) => Some(Op::Add(i64::from(e) - 1)),
                (1, 0) => Some(Op::SetRemove(el)),
                (1 | 2, _) => Some(Op::Delete),
                _ => None,
            };
            match o {
                Some(o) => {
                    let d1 = gc[r].apply(&key, o.clone(), who, at, &l).unwrap();
                    let d2 = plain[r].apply(&key, o, who, at, &l).unwrap();
                    gc[r].retire_dead([key.as_str()], &l);
                    log[r].push((d1, d2));
                }
                None => {
                    let from = 1 - r;
                    if log[from].is_empty() {
                        continue;
                    }
                    let (d1, d2) = log[from][pick % log[from].len()].clone();
                    gc[r].merge(&d1, &l);
                    plain[r].merge(&d2, &l);
                    let keys: Vec<String> = d1.iter().map(|(k, _)| k.clone()).collect();
                    gc[r].retire_dead(keys.iter().map(String::as_str), &l);
                }
            }
            for i in 0..2 {
                for k in 0..4 {
                    let key = format!("k{k}");
                    prop_assert_eq!(gc[i].get(&key), plain[i].get(&key), "replica {} key {}", i, key);
                }
                prop_assert!(gc[i].iter().all(|(_, v)| !v.is_dead()), "a dead key left live");
            }
        }
    }
}

#[test]
fn growth_bound_is_at_least_what_a_write_adds() {
    let l = Limits::default();
    let mut m = CrdtMap::new();
    let a = ActorId([1; 32]);
    let ops = [
        ("s", Op::SetAdd(Bytes::from_static(b"element-one"))),
        ("s", Op::SetAdd(Bytes::from(vec![7u8; 300]))),
        ("s", Op::SetRemove(Bytes::from_static(b"element-one"))),
        ("r", Op::Put(Bytes::from(vec![1u8; 100]))),
        ("r", Op::Put(Bytes::from(vec![2u8; 500]))),
        ("c", Op::Increment(3)),
        ("p", Op::Add(-2)),
    ];
    for (i, (key, op)) in ops.into_iter().enumerate() {
        let (before, bound) = (m.key_bytes(key).unwrap_or(0), m.growth_bound(key, &op));
        let ts = Hlc {
            wall_ms: i as u64 + 1,
            logical: 0,
        };
        m.apply(key, op, a, ts, &l).unwrap();
        let after = m.key_bytes(key).unwrap();
        assert!(
            after.saturating_sub(before) <= bound,
            "{key}: {before} -> {after}, bound {bound}"
        );
    }
}

/// A removed register or counter leaves the key table like an emptied set; a stale write
/// (an older register write, increments the removal saw) does not bring it back; a newer
/// write or an increment the removal had not seen does, counting from 0.
#[test]
fn removed_registers_and_counters_are_retired_and_stay_removed() {
    let l = Limits::default();
    let at = |ms| Hlc {
        wall_ms: ms,
        logical: 0,
    };
    let mut m = CrdtMap::new();
    let old_put = m
        .apply("color", Op::Put("red".into()), actor(1), at(10), &l)
        .unwrap();
    let old_inc = m
        .apply("hits", Op::Increment(5), actor(1), at(10), &l)
        .unwrap();
    let old_add = m.apply("bal", Op::Add(-3), actor(1), at(10), &l).unwrap();
    // A concurrent increment of another replica, not seen by the removal below.
    let mut other = CrdtMap::new();
    let concurrent = other
        .apply("hits", Op::Increment(2), actor(2), at(11), &l)
        .unwrap();
    let mut removals = Vec::new();
    for key in ["color", "hits", "bal"] {
        let d = m.apply(key, Op::Delete, actor(1), at(20), &l).unwrap();
        assert_eq!(d.len(), 1, "{key}: a removal to gossip");
        removals.push(d);
    }
    assert_eq!(m.retire_dead(["color", "hits", "bal"], &l), 3);
    assert_eq!((m.len(), m.retired_len(), m.approx_bytes()), (0, 3, 0));
    assert!(m.retired_bytes() > 0);
    // Removing what is already removed sends nothing.
    assert!(m
        .apply("hits", Op::Delete, actor(1), at(21), &l)
        .unwrap()
        .is_empty());
    // Stale writes are joined into the kept values and change nothing.
    for stale in [&old_put, &old_inc, &old_add] {
        assert_eq!(m.merge(stale, &l).changed, 0);
    }
    assert_eq!((m.len(), m.get("color"), m.get("hits")), (0, None, None));
    // A peer still holding the old values learns the removals by anti-entropy.
    let mut peer = CrdtMap::new();
    for d in [&old_put, &old_inc, &old_add] {
        peer.merge(d, &l);
    }
    let fix = m.delta_since(&peer.digest());
    peer.merge(&fix, &l);
    assert_eq!(peer.retire_dead(["color", "hits", "bal"], &l), 3);
    assert_eq!(peer, m);
    // The increment the removal had not seen counts (add-wins), from 0.
    assert_eq!(m.merge(&concurrent, &l).changed, 1);
    assert_eq!(m.get("hits"), Some(Value::GCounter(2)));
    // A local write to a retired key brings it back from its kept value.
    m.apply("bal", Op::Add(1), actor(1), at(30), &l).unwrap();
    assert_eq!(m.get("bal"), Some(Value::PnCounter(1)));
    // A later write wins over the tombstone; another kind is a type mismatch meanwhile.
    let err = m
        .apply("color", Op::Increment(1), actor(1), at(31), &l)
        .unwrap_err();
    assert!(matches!(err, CrdtError::TypeMismatch { .. }), "{err}");
    m.apply("color", Op::Put("blue".into()), actor(2), at(32), &l)
        .unwrap();
    assert_eq!(m.get("color"), Some(Value::Register("blue".into(), at(32))));
}

/// The retired table is bounded in bytes as well as keys: the oldest retirement goes first.
#[test]
fn retired_keys_are_bounded_in_bytes() {
    let l = Limits {
        max_store_bytes: 4_000,
        ..Limits::default()
    };
    let mut m = CrdtMap::new();
    for i in 0..100u8 {
        let key = format!("c{i:03}");
        m.apply(&key, Op::Increment(1), actor(i), ts(), &l).unwrap();
        m.apply(&key, Op::Delete, actor(i), ts(), &l).unwrap();
        m.retire_dead([key.as_str()], &l);
        assert!(m.retired_bytes() <= l.max_store_bytes);
    }
    assert!(m.retired_len() < 100);
    assert!(m.retired_value("c099").is_some(), "the newest stays");
    assert!(m.retired_value("c000").is_none(), "the oldest went first");
}

/// A register stamped by the receiver's own actor beyond its tombstone is forged, also
/// once the key is retired.
#[test]
fn own_entries_of_retired_keys_are_judged_against_the_kept_value() {
    let l = Limits::default();
    let me = actor(1);
    let at = |ms| Hlc {
        wall_ms: ms,
        logical: 0,
    };
    let mut m = CrdtMap::new();
    m.apply("color", Op::Put("red".into()), me, at(10), &l)
        .unwrap();
    let tomb = m.apply("color", Op::Delete, me, at(20), &l).unwrap();
    m.retire_dead(["color"], &l);
    assert_eq!(
        m.forged_key(&tomb, &me),
        None,
        "our own tombstone relayed back"
    );
    let mut later = CrdtMap::new();
    later
        .apply("color", Op::Put("x".into()), me, at(30), &l)
        .unwrap();
    assert_eq!(m.forged_key(&later, &me), Some("color"));
}
