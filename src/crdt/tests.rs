//! Property tests of the CRDT laws (join is commutative, associative, idempotent), delta
//! equivalence, op deltas, convergence, split, the wire encoding and the clock.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

const REPLICAS: usize = 3;

fn actor(i: usize) -> ActorId {
    ActorId([i as u8 + 1; 32])
}

fn elem(e: u8) -> Bytes {
    Bytes::from(vec![b'a' + e])
}

/// One step of a random history: `(replica, op selector, operand, other replica)`.
type Step = (usize, u8, u8, usize);

fn steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec((0..REPLICAS, 0u8..8, 0u8..6, 0..REPLICAS), 0..max)
}

// ---------------------------------------------------------------- worlds

/// Replica `i` acts as actor `i`: adds (selectors 0–3), removes (4–5), merges from
/// `other` (6–7).
fn orset_world(steps: &[Step]) -> Vec<OrSet> {
    let mut rs = vec![OrSet::default(); REPLICAS];
    for &(r, k, e, o) in steps {
        match k {
            0..=3 => {
                rs[r].add(actor(r), elem(e));
            }
            4..=5 => {
                rs[r].remove(&elem(e));
            }
            _ => {
                let other = rs[o].clone();
                rs[r].merge(&other);
            }
        }
    }
    rs
}

/// Increments (selectors 0–3), removals (4: observed reset), merges (5–7).
fn gcounter_world(steps: &[Step]) -> Vec<GCounter> {
    let mut rs = vec![GCounter::default(); REPLICAS];
    for &(r, k, e, o) in steps {
        if k < 4 {
            rs[r].increment(actor(r), u64::from(e)).unwrap();
        } else if k == 4 {
            rs[r].reset();
        } else {
            let other = rs[o].clone();
            rs[r].merge(&other);
        }
    }
    rs
}

fn pncounter_world(steps: &[Step]) -> Vec<PnCounter> {
    let mut rs = vec![PnCounter::default(); REPLICAS];
    for &(r, k, e, o) in steps {
        if k < 4 {
            rs[r].add(actor(r), i64::from(e) - 3).unwrap();
        } else if k == 4 {
            rs[r].reset();
        } else {
            let other = rs[o].clone();
            rs[r].merge(&other);
        }
    }
    rs
}

fn lww_world(steps: &[Step]) -> Vec<LwwRegister> {
    let mut rs = vec![LwwRegister::default(); REPLICAS];
    let mut clocks = vec![HlcClock::new(); REPLICAS];
    for (i, &(r, k, e, o)) in steps.iter().enumerate() {
        if k < 4 {
            let ts = clocks[r].tick(i as u64 / 3);
            rs[r].set(elem(e), ts, actor(r));
        } else if k == 4 {
            let ts = clocks[r].tick(i as u64 / 3);
            rs[r].delete(ts, actor(r));
        } else {
            let other = rs[o].clone();
            clocks[r].observe(other.ts, i as u64 / 3).unwrap();
            rs[r].merge(&other);
        }
    }
    rs
}

/// Applies one map operation chosen by `k` (0–5) as replica `r`; operand 5 of selectors
/// 1–4 removes the key instead ([`Op::Delete`]).
fn map_op(m: &mut CrdtMap, clock: &mut HlcClock, r: usize, k: u8, e: u8, now: u64) -> CrdtMap {
    let (key, op) = match k {
        0 => ("s", Op::SetAdd(elem(e))),
        1 if e == 5 => ("s", Op::Delete),
        1 => ("s", Op::SetRemove(elem(e))),
        2 if e == 5 => ("r", Op::Delete),
        2 => ("r", Op::Put(elem(e))),
        3 if e == 5 => ("g", Op::Delete),
        3 => ("g", Op::Increment(u64::from(e))),
        4 if e == 5 => ("p", Op::Delete),
        4 => ("p", Op::Add(i64::from(e) - 3)),
        _ => ("t", Op::SetAdd(elem(e))),
    };
    let ts = clock.tick(now);
    m.apply(key, op, actor(r), ts, &Limits::default()).unwrap()
}

fn map_world(steps: &[Step]) -> Vec<CrdtMap> {
    let mut rs = vec![CrdtMap::new(); REPLICAS];
    let mut clocks = vec![HlcClock::new(); REPLICAS];
    for (i, &(r, k, e, o)) in steps.iter().enumerate() {
        if k < 6 {
            map_op(&mut rs[r], &mut clocks[r], r, k, e, i as u64 / 3);
        } else {
            let other = rs[o].clone();
            let stats = rs[r].merge(&other, &Limits::default());
            assert!(stats.refused.is_empty());
        }
    }
    rs
}

// ---------------------------------------------------------------- law helpers

/// Commutativity, associativity and idempotence of `merge` on three states.
fn check_laws<T: Clone + PartialEq + std::fmt::Debug>(
    xs: &[T],
    merge: impl Fn(&mut T, &T) -> bool,
) -> Result<(), TestCaseError> {
    let join = |a: &T, b: &T| {
        let mut a = a.clone();
        merge(&mut a, b);
        a
    };
    let (a, b, c) = (&xs[0], &xs[1], &xs[2]);
    prop_assert_eq!(join(a, b), join(b, a));
    prop_assert_eq!(join(&join(a, b), c), join(a, &join(b, c)));
    let mut aa = a.clone();
    prop_assert!(!merge(&mut aa, a));
    prop_assert_eq!(&aa, a);
    // `merge` reports a change exactly when the state changed.
    let mut ab = a.clone();
    let changed = merge(&mut ab, b);
    prop_assert_eq!(changed, ab != *a);
    Ok(())
}

fn join_all<T: Clone>(base: &T, parts: &[T], merge: impl Fn(&mut T, &T) -> bool) -> T {
    let mut out = base.clone();
    for p in parts {
        merge(&mut out, p);
    }
    out
}

fn map_merge(a: &mut CrdtMap, b: &CrdtMap) -> bool {
    let stats = a.merge(b, &Limits::default());
    assert!(stats.refused.is_empty(), "{stats:?}");
    stats.changed > 0
}

fn assert_valid_orset(s: &OrSet) {
    for d in s.live_dots() {
        assert!(s.context().contains(d), "live dot outside context");
    }
}

// ---------------------------------------------------------------- OR-Set

proptest! {
    #[test]
    fn orset_laws(st in steps(40)) {
        let xs = orset_world(&st);
        check_laws(&xs, OrSet::merge)?;
    }

    #[test]
    fn orset_delta_since_equals_full_merge(st in steps(40)) {
        let xs = orset_world(&st);
        for (i, j) in [(0, 1), (1, 0), (0, 2), (2, 1)] {
            let delta = xs[i].delta_since(xs[j].context());
            assert_valid_orset(&delta);
            let mut via_delta = xs[j].clone();
            via_delta.merge(&delta);
            let mut full = xs[j].clone();
            full.merge(&xs[i]);
            prop_assert_eq!(via_delta, full);
        }
    }

    #[test]
    fn orset_op_deltas_reproduce_mutations(ops in proptest::collection::vec((0..REPLICAS, any::<bool>(), 0u8..6), 0..40)) {
        let mut a = OrSet::default();
        let mut deltas = Vec::new();
        for (r, add, e) in ops {
            deltas.push(if add { a.add(actor(r), elem(e)) } else { a.remove(&elem(e)) });
        }
        let b = join_all(&OrSet::default(), &deltas, OrSet::merge);
        prop_assert_eq!(&b, &a);
        deltas.reverse();
        let c = join_all(&OrSet::default(), &deltas, OrSet::merge);
        prop_assert_eq!(&c, &a);
    }

    #[test]
    fn orset_converges(st in steps(60)) {
        let xs = orset_world(&st);
        let full = join_all(&xs[0], &xs[1..], OrSet::merge);
        for x in &xs {
            let mut y = x.clone();
            for z in &xs {
                y.merge(z);
            }
            prop_assert_eq!(&y, &full);
        }
        assert_valid_orset(&full);
    }

    #[test]
    fn orset_split_joins_to_self(st in steps(60), max in 1usize..4) {
        let xs = orset_world(&st);
        let parts = xs[0].split(max);
        prop_assert!(!parts.is_empty());
        for p in &parts {
            prop_assert!(p.len() <= max);
            assert_valid_orset(p);
        }
        prop_assert_eq!(join_all(&OrSet::default(), &parts, OrSet::merge), xs[0].clone());
        let mut rev = parts.clone();
        rev.reverse();
        let mut expect = xs[1].clone();
        expect.merge(&xs[0]);
        prop_assert_eq!(join_all(&xs[1], &rev, OrSet::merge), expect);
    }
}

#[test]
fn orset_add_wins_over_concurrent_remove() {
    let (a, b) = (actor(0), actor(1));
    let mut x = OrSet::default();
    x.add(a, elem(0));
    let mut y = x.clone();
    // Concurrently: x removes, y re-adds.
    x.remove(&elem(0));
    y.add(b, elem(0));
    let mut xy = x.clone();
    xy.merge(&y);
    let mut yx = y.clone();
    yx.merge(&x);
    assert!(xy.contains(&elem(0)));
    assert_eq!(xy, yx);
    // A remove that observed the add wins.
    xy.remove(&elem(0));
    y.merge(&xy);
    assert!(!y.contains(&elem(0)));
}

#[test]
fn orset_has_no_tombstones() {
    let a = actor(0);
    let mut s = OrSet::default();
    let mut m = CrdtMap::new();
    let mut clock = HlcClock::new();
    for i in 0..1000u32 {
        let e = Bytes::from(i.to_be_bytes().to_vec());
        s.add(a, e.clone());
        s.remove(&e);
        let ts = clock.tick(1);
        m.apply("k", Op::SetAdd(e.clone()), a, ts, &Limits::default())
            .unwrap();
        m.apply("k", Op::SetRemove(e), a, ts, &Limits::default())
            .unwrap();
    }
    assert!(s.is_empty());
    assert_eq!(s.context().range_count(), 1);
    let Some(Crdt::OrSet(ms)) = m.crdt("k") else {
        panic!("not a set")
    };
    assert!(ms.is_empty());
    assert_eq!(ms.context().range_count(), 1);
}

#[test]
fn orset_split_of_empty_set_is_its_context() {
    let mut s = OrSet::default();
    s.add(actor(0), elem(0));
    s.remove(&elem(0));
    let parts = s.split(10);
    assert_eq!(parts, vec![s.clone()]);
}

// ---------------------------------------------------------------- LWW

fn register() -> impl Strategy<Value = LwwRegister> {
    (0u8..3, 0u64..4, 0u32..2, 0..REPLICAS, any::<bool>()).prop_map(|(v, w, l, a, d)| {
        let deleted = d && w > 0;
        LwwRegister {
            value: if deleted { Bytes::new() } else { elem(v) },
            ts: Hlc {
                wall_ms: w,
                logical: l,
            },
            actor: actor(a),
            deleted,
        }
    })
}

proptest! {
    #[test]
    fn lww_laws(xs in proptest::collection::vec(register(), 3)) {
        check_laws(&xs, LwwRegister::merge)?;
    }

    #[test]
    fn lww_world_laws_and_convergence(st in steps(40)) {
        let xs = lww_world(&st);
        check_laws(&xs, LwwRegister::merge)?;
        let full = join_all(&xs[0], &xs[1..], LwwRegister::merge);
        for x in &xs {
            prop_assert_eq!(join_all(x, &xs, LwwRegister::merge), full.clone());
        }
    }

    #[test]
    fn lww_op_deltas_reproduce_mutations(writes in proptest::collection::vec(register(), 0..10)) {
        let mut a = LwwRegister::default();
        let mut b = LwwRegister::default();
        for w in writes {
            let d = a.set(w.value, w.ts, w.actor);
            b.merge(&d);
            prop_assert_eq!(&a, &b);
        }
    }
}

#[test]
fn lww_later_write_wins_and_stale_write_is_ignored() {
    let mut r = LwwRegister::default();
    assert!(!r.is_set());
    let t1 = Hlc {
        wall_ms: 10,
        logical: 0,
    };
    let t2 = Hlc {
        wall_ms: 10,
        logical: 1,
    };
    r.set(elem(1), t2, actor(0));
    let d = r.set(elem(2), t1, actor(1));
    assert_eq!(r.value, elem(1));
    assert_eq!(d, r);
    r.set(elem(3), t2, actor(1)); // same ts, greater actor
    assert_eq!(r.value, elem(3));
}

// ---------------------------------------------------------------- counters

proptest! {
    #[test]
    fn gcounter_laws_delta_convergence(st in steps(40)) {
        let xs = gcounter_world(&st);
        check_laws(&xs, GCounter::merge)?;
        for (i, j) in [(0, 1), (1, 2), (2, 0)] {
            let mut via_delta = xs[j].clone();
            via_delta.merge(&xs[i].delta_since(&xs[j]));
            let mut full = xs[j].clone();
            full.merge(&xs[i]);
            prop_assert_eq!(via_delta, full.clone());
            prop_assert!(full.covers(&xs[i]) && full.covers(&xs[j]));
        }
        let full = join_all(&xs[0], &xs[1..], GCounter::merge);
        for x in &xs {
            prop_assert_eq!(join_all(x, &xs, GCounter::merge), full.clone());
        }
    }

    #[test]
    fn pncounter_laws_delta_convergence(st in steps(40)) {
        let xs = pncounter_world(&st);
        check_laws(&xs, PnCounter::merge)?;
        for (i, j) in [(0, 1), (1, 2), (2, 0)] {
            let mut via_delta = xs[j].clone();
            via_delta.merge(&xs[i].delta_since(&xs[j]));
            let mut full = xs[j].clone();
            full.merge(&xs[i]);
            prop_assert_eq!(via_delta, full);
        }
        let full = join_all(&xs[0], &xs[1..], PnCounter::merge);
        for x in &xs {
            prop_assert_eq!(join_all(x, &xs, PnCounter::merge), full.clone());
        }
    }

    #[test]
    fn counter_op_deltas_reproduce_mutations(ops in proptest::collection::vec((0..REPLICAS, -5i64..6), 0..30)) {
        let (mut g, mut gb) = (GCounter::default(), GCounter::default());
        let (mut p, mut pb) = (PnCounter::default(), PnCounter::default());
        let mut expect = 0i64;
        for (r, n) in ops {
            gb.merge(&g.increment(actor(r), n.unsigned_abs()).unwrap());
            pb.merge(&p.add(actor(r), n).unwrap());
            expect += n;
        }
        prop_assert_eq!(&gb, &g);
        prop_assert_eq!(&pb, &p);
        prop_assert_eq!(p.value(), expect);
    }
}

#[test]
fn counters_refuse_overflow_and_saturate() {
    let a = actor(0);
    let mut g = GCounter::default();
    g.increment(a, u64::MAX).unwrap();
    assert_eq!(
        g.increment(a, 1),
        Err(CrdtError::InvalidOp("counter overflow"))
    );
    g.increment(actor(1), 5).unwrap();
    assert_eq!(g.value(), u64::MAX);
    let mut p = PnCounter::default();
    p.add(a, i64::MAX).unwrap();
    p.add(actor(1), i64::MAX).unwrap();
    assert_eq!(p.value(), i64::MAX);
    p.add(a, i64::MIN).unwrap();
    for i in 2..6 {
        p.add(actor(i), i64::MIN).unwrap();
    }
    assert_eq!(p.value(), i64::MIN);
    assert!(p.n.counts[&a] == 1u64 << 63);
}

// ---------------------------------------------------------------- map

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn map_laws(st in steps(50)) {
        let xs = map_world(&st);
        check_laws(&xs, map_merge)?;
    }

    #[test]
    fn map_delta_since_and_pull_equal_full_merge(st in steps(50)) {
        let xs = map_world(&st);
        for (i, j) in [(0, 1), (1, 0), (1, 2), (2, 0)] {
            let mut full = xs[j].clone();
            map_merge(&mut full, &xs[i]);
            // Push: everything the digest of j lacks.
            let mut pushed = xs[j].clone();
            map_merge(&mut pushed, &xs[i].delta_since(&xs[j].digest()));
            prop_assert_eq!(&pushed, &full);
            // Pull: j asks for what it wants from i's digest.
            let wants = xs[j].wants(&xs[i].digest());
            let mut pulled = xs[j].clone();
            map_merge(&mut pulled, &xs[i].delta_for(&wants));
            prop_assert_eq!(&pulled, &full);
            // In sync: nothing to send or ask for.
            prop_assert!(full.delta_since(&full.digest()).is_empty());
            prop_assert!(full.wants(&full.digest()).entries.is_empty());
        }
    }

    #[test]
    fn map_op_deltas_reproduce_mutations(st in steps(50)) {
        let mut a = CrdtMap::new();
        let mut b = CrdtMap::new();
        let mut clock = HlcClock::new();
        for (i, &(r, k, e, _)) in st.iter().enumerate() {
            let before = a.clone();
            let d = map_op(&mut a, &mut clock, r, k % 6, e, i as u64 / 3);
            // One key's delta; a removal of a key with nothing live sends nothing.
            prop_assert!(d.len() == 1 || (d.is_empty() && a == before));
            map_merge(&mut b, &d);
        }
        prop_assert_eq!(&b, &a);
    }

    #[test]
    fn map_converges(st in steps(80)) {
        let xs = map_world(&st);
        let full = join_all(&xs[0], &xs[1..], map_merge);
        for x in &xs {
            prop_assert_eq!(join_all(x, &xs, map_merge), full.clone());
        }
    }

    #[test]
    fn map_split_joins_to_self_within_bound(st in steps(80), max in 40usize..400) {
        let xs = map_world(&st);
        let parts = xs[0].split(max);
        for p in &parts {
            let size = p.encoded_len();
            let single_oversized = p.len() == 1
                && match p.iter().next().unwrap().1 {
                    Crdt::OrSet(s) => s.len() <= 1,
                    _ => true,
                };
            prop_assert!(size <= max || single_oversized, "part of {} bytes > {}", size, max);
        }
        prop_assert_eq!(join_all(&CrdtMap::new(), &parts, map_merge), xs[0].clone());
        let mut rev = parts.clone();
        rev.reverse();
        let mut expect = xs[1].clone();
        map_merge(&mut expect, &xs[0]);
        prop_assert_eq!(join_all(&xs[1], &rev, map_merge), expect);
    }

    #[test]
    fn map_and_digest_round_trip(st in steps(60)) {
        let xs = map_world(&st);
        let limits = Limits::default();
        for x in &xs {
            let mut buf = Vec::new();
            x.encode(&mut buf);
            prop_assert_eq!(&CrdtMap::decode(&buf, &limits).unwrap(), x);
            let mut d = x.digest();
            d.entries.insert("zz-absent".into(), Summary::Absent);
            let mut buf = Vec::new();
            d.encode(&mut buf);
            prop_assert_eq!(&Digest::decode(&buf, &limits).unwrap(), &d);
        }
    }

    #[test]
    fn decoders_survive_mutated_encodings(
        st in steps(40),
        flips in proptest::collection::vec((any::<usize>(), 0u8..8), 1..4),
        cut in any::<usize>(),
    ) {
        let xs = map_world(&st);
        let limits = Limits::default();
        let mut map_bytes = Vec::new();
        xs[0].encode(&mut map_bytes);
        let mut digest_bytes = Vec::new();
        xs[1].digest().encode(&mut digest_bytes);
        for bytes in [map_bytes, digest_bytes] {
            let mut flipped = bytes.clone();
            for &(pos, bit) in &flips {
                let i = pos % flipped.len();
                flipped[i] ^= 1 << bit;
            }
            let truncated = &bytes[..cut % bytes.len()];
            for input in [&flipped[..], truncated] {
                check_decoded(input, &limits);
            }
        }
    }

    #[test]
    fn decoders_survive_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_decoded(&bytes, &Limits::default());
    }
}

/// Decoding never panics; whatever decodes is valid and round-trips.
fn check_decoded(input: &[u8], limits: &Limits) {
    if let Ok(m) = CrdtMap::decode(input, limits) {
        for (_, v) in m.iter() {
            if let Crdt::OrSet(s) = v {
                assert_valid_orset(s);
            }
        }
        let mut again = Vec::new();
        m.encode(&mut again);
        assert_eq!(CrdtMap::decode(&again, limits).unwrap(), m);
    }
    if let Ok(d) = Digest::decode(input, limits) {
        let mut again = Vec::new();
        d.encode(&mut again);
        assert_eq!(Digest::decode(&again, limits).unwrap(), d);
    }
}

#[test]
fn map_apply_checks_kind_and_limits() {
    let a = actor(0);
    let ts = Hlc {
        wall_ms: 1,
        logical: 0,
    };
    let limits = Limits {
        max_keys: 2,
        max_key_bytes: 4,
        max_elements: 2,
        max_value_bytes: 3,
        max_actors: 1,
        max_ranges: 8,
        ..Limits::default()
    };
    let mut m = CrdtMap::new();
    m.apply("s", Op::SetAdd(elem(0)), a, ts, &limits).unwrap();
    assert!(matches!(
        m.apply("s", Op::Put(elem(0)), a, ts, &limits),
        Err(CrdtError::TypeMismatch {
            have: Kind::OrSet,
            got: Kind::Lww,
            ..
        })
    ));
    let too_large = |what| Err(CrdtError::TooLarge { what, limit: 0 });
    let strip = |r: Result<CrdtMap, CrdtError>| match r {
        Err(CrdtError::TooLarge { what, .. }) => Err(CrdtError::TooLarge { what, limit: 0 }),
        other => other,
    };
    assert_eq!(
        strip(m.apply("s", Op::SetAdd(Bytes::from_static(b"long")), a, ts, &limits)),
        too_large("value bytes")
    );
    assert_eq!(
        strip(m.apply("s", Op::SetAdd(elem(1)), actor(1), ts, &limits)),
        too_large("actors")
    );
    m.apply("s", Op::SetAdd(elem(1)), a, ts, &limits).unwrap();
    assert_eq!(
        strip(m.apply("s", Op::SetAdd(elem(2)), a, ts, &limits)),
        too_large("elements")
    );
    assert_eq!(
        strip(m.apply("toolong", Op::Increment(1), a, ts, &limits)),
        too_large("key bytes")
    );
    m.apply("g", Op::Increment(1), a, ts, &limits).unwrap();
    assert_eq!(
        strip(m.apply("h", Op::Increment(1), a, ts, &limits)),
        too_large("keys")
    );
    assert_eq!(m.get("s"), Some(Value::Set(vec![elem(0), elem(1)])));
    assert_eq!(m.get("g"), Some(Value::GCounter(1)));
    assert_eq!(m.get("h"), None);
}

#[test]
fn map_merge_refuses_and_counts() {
    let ts = |w| Hlc {
        wall_ms: w,
        logical: 0,
    };
    let l = Limits::default();
    let mut x = CrdtMap::new();
    let mut y = CrdtMap::new();
    x.apply("k", Op::Increment(1), actor(0), ts(1), &l).unwrap();
    y.apply("k", Op::Put(elem(0)), actor(1), ts(1), &l).unwrap();
    x.apply("r", Op::Put(elem(0)), actor(0), ts(1), &l).unwrap();
    y.apply("r", Op::Put(elem(1)), actor(1), ts(2), &l).unwrap();
    x.apply("c", Op::Add(1), actor(0), ts(1), &l).unwrap();
    y.apply("c", Op::Add(-1), actor(1), ts(1), &l).unwrap();
    y.apply("new", Op::SetAdd(elem(0)), actor(1), ts(1), &l)
        .unwrap();
    let stats = x.merge(&y, &l);
    assert_eq!(stats.refused.len(), 1);
    assert_eq!(stats.refused[0].0, "k");
    assert_eq!(stats.refused[0].1.as_str(), "type_mismatch");
    assert_eq!(stats.changed, 3); // r, c, new
    assert_eq!(stats.conflicts, 2); // r (two writers), c (concurrent counts)
    assert_eq!(x.get("k"), Some(Value::GCounter(1)));
    assert_eq!(x.get("r"), Some(Value::Register(elem(1), ts(2))));
    assert_eq!(x.get("c"), Some(Value::PnCounter(0)));
    // A delta sent against a digest of the wrong kind carries the whole value.
    let d = y.delta_since(&x.digest());
    assert!(matches!(d.crdt("k"), Some(Crdt::Lww(_))));
    // Limits on merge: a new key beyond max_keys is refused.
    let tight = Limits { max_keys: 4, ..l };
    let mut z = x.clone();
    let mut extra = CrdtMap::new();
    extra
        .apply("zz", Op::Increment(1), actor(2), ts(1), &l)
        .unwrap();
    let stats = z.merge(&extra, &tight);
    assert_eq!(
        stats.refused[0].1,
        CrdtError::TooLarge {
            what: "keys",
            limit: 4
        }
    );
    assert_eq!(z, x);
}

#[test]
fn map_split_breaks_up_a_large_set() {
    let l = Limits::default();
    let mut m = CrdtMap::new();
    for i in 0..200u32 {
        let r = i as usize % 3;
        let e = Bytes::from(format!("element-{i:04}"));
        m.apply("big", Op::SetAdd(e), actor(r), Hlc::default(), &l)
            .unwrap();
    }
    m.apply("c", Op::Increment(3), actor(0), Hlc::default(), &l)
        .unwrap();
    let parts = m.split(512);
    assert!(parts.len() > 5);
    for p in &parts {
        assert!(p.encoded_len() <= 512, "{}", p.encoded_len());
    }
    assert_eq!(join_all(&CrdtMap::new(), &parts, map_merge), m);
}

#[test]
fn decoder_rejects_malformed_input() {
    let l = Limits::default();
    let mut m = CrdtMap::new();
    m.apply("s", Op::SetAdd(elem(0)), actor(0), Hlc::default(), &l)
        .unwrap();
    let mut buf = Vec::new();
    m.encode(&mut buf);
    let mut trailing = buf.clone();
    trailing.push(0xc0);
    assert!(matches!(
        CrdtMap::decode(&trailing, &l),
        Err(CrdtError::Malformed(_))
    ));
    assert!(matches!(
        CrdtMap::decode(&buf, &Limits { max_keys: 0, ..l }),
        Err(CrdtError::TooLarge { what: "keys", .. })
    ));
    // A declared array length far beyond the input is refused before allocating.
    let huge = [0x93, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        CrdtMap::decode(&huge, &l),
        Err(CrdtError::Malformed(_))
    ));
    // Counter 0 in a dot.
    let zero = [
        0x93, 0x01, 0x91, 0xc4, 0x20, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, // actor table
        0x91, 0x93, 0xa1, b's', 0x01, // key "s", or_set
        0x92, 0x91, 0x92, 0xc4, 0x01, b'a', 0x91, 0x92, 0x00, 0x00, // elem a, dot (0, 0)
        0x91, 0x92, 0x00, 0x91, 0x92, 0x01, 0x01, // context {0: [1, 1]}
    ];
    assert_eq!(
        CrdtMap::decode(&zero, &l),
        Err(CrdtError::Malformed("counter 0".into()))
    );
    let mut fixed = zero;
    fixed[51] = 0x01;
    assert_eq!(&fixed[..], &buf[..]);
    assert_eq!(CrdtMap::decode(&fixed, &l), Ok(m));
}

// ---------------------------------------------------------------- HLC

proptest! {
    #[test]
    fn hlc_ticks_increase_and_skew_is_refused(
        events in proptest::collection::vec((any::<bool>(), 0u64..200_000, 0u32..3), 1..50)
    ) {
        let mut clock = HlcClock::new();
        let mut now = 100_000u64;
        let mut prev = clock.last();
        for (tick, x, logical) in events {
            now += x % 50;
            if tick {
                let t = clock.tick(now);
                prop_assert!(t > prev);
                prop_assert!(t.wall_ms >= now);
                prev = t;
            } else {
                let remote = Hlc { wall_ms: x, logical };
                let before = clock.last();
                match clock.observe(remote, now) {
                    Ok(()) => {
                        prop_assert!(remote.wall_ms <= now + MAX_CLOCK_SKEW_MS);
                        prop_assert!(clock.last() > before && clock.last() > remote);
                        prev = clock.last();
                    }
                    Err(CrdtError::ClockSkew { remote_ms, ahead_ms }) => {
                        prop_assert!(remote.wall_ms > now + MAX_CLOCK_SKEW_MS);
                        prop_assert_eq!(remote_ms, remote.wall_ms);
                        prop_assert_eq!(ahead_ms, remote.wall_ms - now);
                        prop_assert_eq!(clock.last(), before);
                    }
                    Err(e) => prop_assert!(false, "unexpected {:?}", e),
                }
            }
        }
    }
}

// ---------------------------------------------------------------- DotSet vs a model

fn dots() -> impl Strategy<Value = Vec<Dot>> {
    proptest::collection::vec(
        (0..REPLICAS, 1u64..24).prop_map(|(a, c)| Dot {
            actor: actor(a),
            counter: c,
        }),
        0..30,
    )
}

proptest! {
    #[test]
    fn dotset_matches_a_set_model(xs in dots(), ys in dots(), probe in dots()) {
        use std::collections::BTreeSet;
        let (mx, my): (BTreeSet<Dot>, BTreeSet<Dot>) =
            (xs.iter().copied().collect(), ys.iter().copied().collect());
        let (x, y) = (DotSet::from_dots(&xs), DotSet::from_dots(&ys));
        // Normalized: built in another order, the same set is structurally equal.
        let mut rev = xs.clone();
        rev.reverse();
        prop_assert_eq!(&DotSet::from_dots(&rev), &x);
        for d in probe.iter().chain(&xs) {
            prop_assert_eq!(x.contains(d), mx.contains(d));
        }
        let mut u = x.clone();
        u.union(&y);
        prop_assert_eq!(&u, &DotSet::from_dots(mx.union(&my)));
        let diff = x.difference(&y);
        prop_assert_eq!(&diff, &DotSet::from_dots(mx.difference(&my)));
        prop_assert_eq!(x.covers(&y), my.is_subset(&mx));
        for a in 0..REPLICAS {
            let next = mx.iter().filter(|d| d.actor == actor(a)).map(|d| d.counter + 1).max();
            prop_assert_eq!(x.next_counter(&actor(a)), next.unwrap_or(1));
        }
        // Ranges are sorted, disjoint and non-adjacent; no empty actor.
        for rs in u.ranges.values() {
            prop_assert!(!rs.is_empty());
            for w in rs.windows(2) {
                prop_assert!(w[0].0 <= w[0].1 && w[0].1 + 1 < w[1].0);
            }
        }
        prop_assert_eq!(u.is_empty(), mx.is_empty() && my.is_empty());
    }
}

#[test]
fn removals_encode_and_bad_ones_are_refused() {
    let l = Limits::default();
    let mut m = CrdtMap::new();
    let ts = Hlc {
        wall_ms: 5,
        logical: 0,
    };
    m.apply("r", Op::Put(elem(1)), actor(0), ts, &l).unwrap();
    m.apply("g", Op::Increment(4), actor(0), ts, &l).unwrap();
    m.apply("g", Op::Delete, actor(0), ts, &l).unwrap();
    m.apply("g", Op::Increment(1), actor(0), ts, &l).unwrap();
    let later = Hlc {
        wall_ms: 6,
        logical: 0,
    };
    m.apply("r", Op::Delete, actor(0), later, &l).unwrap();
    let mut bytes = Vec::new();
    m.encode(&mut bytes);
    let back = CrdtMap::decode(&bytes, &l).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.get("g"), Some(Value::GCounter(1)));
    assert_eq!(back.get("r"), None);
    // A counter entry [idx, count, base] with base above the count, or 0.
    let counter = |base: u64| {
        let mut out = Vec::new();
        let w = |o: &mut Vec<u8>, v: u64| rmp::encode::write_uint(o, v).unwrap();
        rmp::encode::write_array_len(&mut out, 3).unwrap();
        w(&mut out, 1);
        rmp::encode::write_array_len(&mut out, 1).unwrap();
        rmp::encode::write_bin(&mut out, &actor(0).0).unwrap();
        rmp::encode::write_array_len(&mut out, 1).unwrap();
        rmp::encode::write_array_len(&mut out, 3).unwrap();
        rmp::encode::write_str(&mut out, "g").unwrap();
        w(&mut out, Kind::GCounter as u64);
        rmp::encode::write_array_len(&mut out, 1).unwrap();
        rmp::encode::write_array_len(&mut out, 3).unwrap();
        w(&mut out, 0);
        w(&mut out, 3);
        w(&mut out, base);
        out
    };
    assert!(CrdtMap::decode(&counter(3), &l).is_ok());
    for bad in [0, 4] {
        assert!(matches!(
            CrdtMap::decode(&counter(bad), &l),
            Err(CrdtError::Malformed(_))
        ));
    }
}
