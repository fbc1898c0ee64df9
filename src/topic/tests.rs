use std::collections::{BTreeSet, HashMap, HashSet};

use proptest::prelude::*;

use super::*;

// ---------------------------------------------------------------- validation

#[test]
fn valid_topics_and_patterns() {
    for t in ["a", "sensors.site-3.dev_7.temp", "A.b.C-d_e.0", "x.y"] {
        assert_eq!(validate_topic(t), Ok(()), "{t}");
        assert_eq!(validate_pattern(t), Ok(()), "{t}");
    }
    for p in ["*", "**", "a.*.c", "a.**", "**.x.**", "a.**.**.b", "*.*"] {
        assert_eq!(validate_pattern(p), Ok(()), "{p}");
    }
}

#[test]
fn error_empty() {
    assert_eq!(validate_topic(""), Err(TopicError::Empty));
    assert_eq!(validate_pattern(""), Err(TopicError::Empty));
}

#[test]
fn error_too_long() {
    let ok = "a".repeat(MAX_TOPIC_LEN);
    assert_eq!(validate_topic(&ok), Ok(()));
    let long = "a".repeat(MAX_TOPIC_LEN + 1);
    let err = TopicError::TooLong {
        len: MAX_TOPIC_LEN + 1,
        max: MAX_TOPIC_LEN,
    };
    assert_eq!(validate_topic(&long), Err(err.clone()));
    assert_eq!(validate_pattern(&long), Err(err));
    // Length is in bytes, not chars.
    let multibyte = "é".repeat(MAX_TOPIC_LEN / 2 + 1);
    assert!(matches!(
        validate_topic(&multibyte),
        Err(TopicError::TooLong { len, .. }) if len == MAX_TOPIC_LEN + 2
    ));
}

#[test]
fn error_too_many_segments() {
    let ok = vec!["a"; MAX_SEGMENTS].join(".");
    assert_eq!(validate_topic(&ok), Ok(()));
    let many = vec!["a"; MAX_SEGMENTS + 1].join(".");
    let err = TopicError::TooManySegments {
        count: MAX_SEGMENTS + 1,
        max: MAX_SEGMENTS,
    };
    assert_eq!(validate_topic(&many), Err(err.clone()));
    assert_eq!(validate_pattern(&many), Err(err));
    // Counted before normalisation.
    let globs = vec!["**"; MAX_SEGMENTS + 1].join(".");
    assert!(matches!(
        validate_pattern(&globs),
        Err(TopicError::TooManySegments { .. })
    ));
}

#[test]
fn error_empty_segment() {
    let cases = [(".a", 0), ("a.", 1), ("a..b", 1), (".", 0), ("a.b..", 2)];
    for (t, index) in cases {
        assert_eq!(
            validate_topic(t),
            Err(TopicError::EmptySegment { index }),
            "{t}"
        );
        assert_eq!(
            validate_pattern(t),
            Err(TopicError::EmptySegment { index }),
            "{t}"
        );
    }
}

#[test]
fn error_bad_char() {
    let cases = [
        ("a b", 1, ' '),
        ("ab.c/d", 4, '/'),
        ("sensors.tempé", 12, 'é'),
        ("x.#", 2, '#'),
        ("x.+", 2, '+'),
        ("日本", 0, '日'),
    ];
    for (t, index, ch) in cases {
        assert_eq!(
            validate_topic(t),
            Err(TopicError::BadChar { index, ch }),
            "{t}"
        );
        assert_eq!(
            validate_pattern(t),
            Err(TopicError::BadChar { index, ch }),
            "{t}"
        );
    }
}

#[test]
fn error_wildcard_in_topic() {
    let cases = [("*", 0), ("a.**", 1), ("a.b*", 1), ("a.b.*.c", 2)];
    for (t, index) in cases {
        assert_eq!(
            validate_topic(t),
            Err(TopicError::WildcardInTopic { index }),
            "{t}"
        );
    }
}

#[test]
fn error_bad_wildcard() {
    for seg in ["a*", "*a", "***", "a**b", "*-"] {
        let p = format!("x.{seg}.y");
        assert_eq!(
            validate_pattern(&p),
            Err(TopicError::BadWildcard {
                segment: seg.to_owned()
            }),
            "{p}"
        );
    }
}

#[test]
fn errors_display() {
    let e = TopicError::BadChar { index: 3, ch: '/' };
    assert!(e.to_string().contains("byte 3"), "{e}");
}

#[test]
fn normalize_collapses_globs() {
    assert_eq!(normalize_pattern("a.**.**.b").as_deref(), Ok("a.**.b"));
    assert_eq!(normalize_pattern("**.**").as_deref(), Ok("**"));
    assert_eq!(normalize_pattern("**.*.**").as_deref(), Ok("**.*.**"));
    assert_eq!(normalize_pattern("a.b").as_deref(), Ok("a.b"));
    assert_eq!(
        normalize_pattern("a..b"),
        Err(TopicError::EmptySegment { index: 1 })
    );
}

#[test]
fn is_wildcard_cases() {
    assert!(is_wildcard("a.*"));
    assert!(is_wildcard("**"));
    assert!(!is_wildcard("a.b"));
}

// ---------------------------------------------------------------- matching

#[test]
fn star_matches_exactly_one_segment() {
    assert!(matches("a.*.c", "a.b.c"));
    assert!(!matches("a.*.c", "a.c"));
    assert!(!matches("a.*.c", "a.b.b.c"));
    assert!(matches("*", "x"));
    assert!(!matches("*", "x.y"));
}

#[test]
fn globstar_matches_zero_or_more() {
    assert!(matches("a.**", "a"));
    assert!(matches("a.**", "a.b"));
    assert!(matches("a.**", "a.b.c"));
    assert!(!matches("a.**", "b.a"));
    assert!(matches("a.**.c", "a.c"));
    assert!(matches("a.**.c", "a.b.b.c"));
    assert!(!matches("a.**.c", "a.b.b"));
    for t in ["a", "a.b", "x.y.z.w"] {
        assert!(matches("**", t));
        assert!(matches("**.**", t));
    }
    assert!(matches("**.x.**", "x.x.x"));
    assert!(matches("**.x", "a.b.x"));
    assert!(!matches("**.x", "x.a"));
    assert!(matches("*.**", "a"));
    assert!(!matches("*.*.**", "a"));
    assert!(matches("a.b", "a.b"));
    assert!(!matches("a.b", "a.b.c"));
    assert!(!matches("a.b.c", "a.b"));
}

// ---------------------------------------------------------------- trie

fn matched<V: Clone>(trie: &PatternTrie<V>, topic: &str) -> Vec<V> {
    let mut out = Vec::new();
    trie.for_each_match(topic, |v| out.push(v.clone()));
    out
}

#[test]
fn trie_basic_map_operations() {
    let mut trie = PatternTrie::new();
    assert!(trie.is_empty());
    assert_eq!(trie.insert("a.*.c", 1), None);
    assert_eq!(trie.insert("a.*.c", 2), Some(1));
    assert_eq!(trie.len(), 1);
    assert_eq!(trie.get("a.*.c"), Some(&2));
    assert_eq!(trie.get("a.*"), None);
    *trie.get_mut("a.*.c").expect("present") += 10;
    assert_eq!(trie.get("a.*.c"), Some(&12));
    *trie.entry_or_insert_with("a.**", || 0) += 5;
    *trie.entry_or_insert_with("a.**.**", || 100) += 5;
    assert_eq!(trie.get("a.**"), Some(&10));
    assert_eq!(trie.len(), 2);
    let snapshot: Vec<(String, i32)> = trie.iter().map(|(p, v)| (p, *v)).collect();
    assert_eq!(snapshot, vec![("a.**".into(), 10), ("a.*.c".into(), 12)]);
    assert_eq!(format!("{trie:?}"), r#"{"a.**": 10, "a.*.c": 12}"#);
    let copy = trie.clone();
    assert_eq!(trie.remove("a.**.**"), Some(10));
    assert_eq!(trie.remove("a.**"), None);
    assert_eq!(trie.remove("a.*.c"), Some(12));
    assert!(trie.is_empty());
    assert_eq!(trie.node_count(), 1);
    assert_eq!(copy.len(), 2);
    assert_eq!(PatternTrie::<u8>::default().node_count(), 1);
}

#[test]
fn trie_matches_wildcards() {
    let mut trie = PatternTrie::new();
    for p in ["a.*.c", "a.**", "**", "a.b.c", "b.*", "**.x.**"] {
        trie.insert(p, p);
    }
    let mut got = matched(&trie, "a.b.c");
    got.sort_unstable();
    assert_eq!(got, ["**", "a.**", "a.*.c", "a.b.c"]);
    let mut got = matched(&trie, "a");
    got.sort_unstable();
    assert_eq!(got, ["**", "a.**"]);
    let mut got = matched(&trie, "x.x.x");
    got.sort_unstable();
    assert_eq!(got, ["**", "**.x.**"]);
    trie.remove("**");
    assert!(trie.any_match("q.x"));
    assert!(!trie.any_match("q.y"));
    assert!(matched(&trie, "q.y").is_empty());
}

#[test]
fn trie_visits_each_pattern_once() {
    let mut trie = PatternTrie::new();
    for p in ["**.x.**", "**.x", "x.**", "**.*.**", "**.x.*.**"] {
        trie.insert(p, p);
    }
    let got = matched(&trie, "x.x.x.x.x");
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!(got.len(), unique.len(), "{got:?}");
    assert_eq!(got.len(), 5);
}

#[test]
fn trie_spills_past_inline_capacity() {
    // Every pattern in {a,*}^k and {a,*}^k.** for k ≤ 6: topic `a.a.a.a.a.a` keeps up to 64
    // transient and 63 `**` nodes active at once, well past the inline capacity.
    let mut trie = PatternTrie::new();
    let mut all = Vec::new();
    for k in 1..=6u32 {
        for bits in 0..(1u32 << k) {
            let segs: Vec<&str> = (0..k)
                .map(|i| if bits & (1 << i) == 0 { "a" } else { "*" })
                .collect();
            let p = segs.join(".");
            all.push(format!("{p}.**"));
            all.push(p);
        }
    }
    for p in &all {
        trie.insert(p, p.clone());
    }
    for t in ["a.a.a.a.a.a", "a.a.a", "a.b.a.a.a.a.a.a", "b.b.b.b.b.b"] {
        let got = matched(&trie, t);
        let got_set: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(got.len(), got_set.len(), "repeats for {t}");
        let want: BTreeSet<String> = all.iter().filter(|p| matches(p, t)).cloned().collect();
        assert_eq!(got_set, want, "{t}");
    }
}

// ---------------------------------------------------------------- properties

/// Naive exponential matcher over segment slices, as an oracle for `matches`.
fn oracle(p: &[&str], t: &[&str]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some((&"**", rest)) => (0..=t.len()).any(|k| oracle(rest, &t[k..])),
        Some((&seg, rest)) => match t.split_first() {
            Some((&ts, trest)) => (seg == "*" || seg == ts) && oracle(rest, trest),
            None => false,
        },
    }
}

fn pattern_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "*", "**"]), 1..6)
        .prop_map(|s| s.join("."))
}

fn topic_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..7).prop_map(|s| s.join("."))
}

/// Segment prefixes of every stored normal-form pattern: the nodes a pruned trie must hold
/// besides the root.
fn prefix_count(patterns: impl Iterator<Item = String>) -> usize {
    let mut prefixes = HashSet::new();
    for p in patterns {
        let segs: Vec<&str> = p.split('.').collect();
        for k in 1..=segs.len() {
            prefixes.insert(segs[..k].join("."));
        }
    }
    prefixes.len()
}

/// The straightforward validator (split, then check each segment), as an oracle for the
/// single-pass one.
fn validate_reference(s: &str, wildcards: bool) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong {
            len: s.len(),
            max: MAX_TOPIC_LEN,
        });
    }
    let count = s.split('.').count();
    if count > MAX_SEGMENTS {
        return Err(TopicError::TooManySegments {
            count,
            max: MAX_SEGMENTS,
        });
    }
    let mut start = 0;
    for (index, segment) in s.split('.').enumerate() {
        super::validate_segment(s, start, segment, index, wildcards)?;
        start += segment.len() + 1;
    }
    Ok(())
}

proptest! {
    #[test]
    fn matches_agrees_with_oracle(p in pattern_strategy(), t in topic_strategy()) {
        let ps: Vec<&str> = p.split('.').collect();
        let ts: Vec<&str> = t.split('.').collect();
        prop_assert_eq!(matches(&p, &t), oracle(&ps, &ts));
        let n = normalize_pattern(&p).expect("generated patterns are valid");
        prop_assert_eq!(matches(&n, &t), matches(&p, &t));
    }

    #[test]
    fn trie_matches_exactly_the_brute_force_set(
        patterns in prop::collection::vec(pattern_strategy(), 0..24),
        topics in prop::collection::vec(topic_strategy(), 1..8),
    ) {
        let mut trie = PatternTrie::new();
        let mut stored = HashSet::new();
        for p in &patterns {
            let n = normalize_pattern(p).expect("generated patterns are valid");
            trie.insert(p, n.clone());
            stored.insert(n);
        }
        prop_assert_eq!(trie.len(), stored.len());
        for t in &topics {
            let got = matched(&trie, t);
            let got_set: HashSet<String> = got.iter().cloned().collect();
            prop_assert_eq!(got.len(), got_set.len(), "repeats for {}: {:?}", t, got);
            let want: HashSet<String> =
                stored.iter().filter(|p| matches(p, t)).cloned().collect();
            prop_assert_eq!(&got_set, &want, "topic {}", t);
            prop_assert_eq!(trie.any_match(t), !want.is_empty());
        }
    }

    #[test]
    fn trie_insert_remove_tracks_reference_and_prunes(
        ops in prop::collection::vec((any::<bool>(), pattern_strategy(), any::<u8>()), 0..64),
    ) {
        let mut trie = PatternTrie::new();
        let mut reference: HashMap<String, u8> = HashMap::new();
        for (insert, p, v) in ops {
            let n = normalize_pattern(&p).expect("generated patterns are valid");
            if insert {
                prop_assert_eq!(trie.insert(&p, v), reference.insert(n.clone(), v));
            } else {
                prop_assert_eq!(trie.remove(&p), reference.remove(&n));
            }
            prop_assert_eq!(trie.len(), reference.len());
            prop_assert_eq!(trie.get(&p), reference.get(&n));
            prop_assert_eq!(
                trie.node_count(),
                1 + prefix_count(reference.keys().cloned())
            );
        }
        let mut snapshot: Vec<(String, u8)> = trie.iter().map(|(p, v)| (p, *v)).collect();
        let mut want: Vec<(String, u8)> = reference.clone().into_iter().collect();
        snapshot.sort();
        want.sort();
        prop_assert_eq!(snapshot, want);
        for p in reference.keys() {
            prop_assert!(trie.remove(p).is_some());
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.node_count(), 1);
    }

    #[test]
    fn validation_never_panics(s in any::<String>()) {
        prop_assert_eq!(validate_topic(&s), validate_reference(&s, false));
        prop_assert_eq!(validate_pattern(&s), validate_reference(&s, true));
        let _ = normalize_pattern(&s);
    }

    #[test]
    fn validation_never_panics_near_valid(s in "[a-b*.é _]{0,40}|[a.]{0,70}|[a.*é]{240,260}") {
        let topic = validate_topic(&s);
        let pattern = validate_pattern(&s);
        prop_assert_eq!(&topic, &validate_reference(&s, false));
        prop_assert_eq!(&pattern, &validate_reference(&s, true));
        if topic.is_ok() {
            prop_assert!(pattern.is_ok());
            prop_assert!(!is_wildcard(&s));
            prop_assert!(matches(&s, &s));
        }
        if pattern.is_ok() {
            let n = normalize_pattern(&s).expect("valid pattern normalises");
            prop_assert_eq!(validate_pattern(&n), Ok(()));
            prop_assert_eq!(normalize_pattern(&n), Ok(n.clone()));
        }
    }
}

// ---------------------------------------------------------------- covers and overlaps

/// Every topic of 1..=`max` segments over `a`, `b`, `c` and `d` (`d` appears in no generated
/// pattern: it stands for "any other literal").
fn all_topics(max: usize) -> Vec<String> {
    topics_over(&["a", "b", "c", "d"], max)
}

#[test]
fn covers_and_overlaps_examples() {
    assert!(covers("sensors.**", "sensors.*.temp"));
    assert!(covers("sensors.**", "sensors.**"));
    assert!(covers("**", "a.*.**"));
    assert!(covers("a.*", "a.b"));
    assert!(!covers("a.*", "a.**"));
    assert!(!covers("sensors.**", "**"));
    assert!(!covers("a.b", "a.*"));
    assert!(overlaps("**", "billing.x"));
    assert!(overlaps("a.*.c", "a.b.*"));
    assert!(overlaps("a.**.c", "*.c"));
    assert!(!overlaps("sensors.**", "billing.**"));
    assert!(!overlaps("a.*", "a.b.c"));
}

proptest! {
    /// `covers` never claims a subset that is not one; for an inner pattern without `**` it
    /// is exact.
    #[test]
    fn covers_is_sound_and_exact_without_globs(o in pattern_strategy(), i in pattern_strategy()) {
        let (o, i) = (normalize_pattern(&o).unwrap(), normalize_pattern(&i).unwrap());
        let subset = all_topics(7).iter().all(|t| !matches(&i, t) || matches(&o, t));
        if covers(&o, &i) {
            prop_assert!(subset, "{} claimed to cover {}", o, i);
        }
        if !i.split('.').any(|s| s == "**") {
            prop_assert_eq!(covers(&o, &i), subset, "{} over {}", o, i);
        }
    }

    /// `overlaps` is exact: true iff some topic matches both. A shortest common topic has
    /// at most as many segments as the two patterns have non-`**` segments together, each a
    /// literal of one of them or any other (`c`), so enumerating those decides it.
    #[test]
    fn overlaps_is_exact(a in small_pattern(), b in small_pattern()) {
        let fixed = |p: &str| p.split('.').filter(|s| *s != "**").count();
        let longest = (fixed(&a) + fixed(&b)).max(1);
        let common = topics_over(&["a", "b", "c"], longest)
            .iter()
            .any(|t| matches(&a, t) && matches(&b, t));
        prop_assert_eq!(overlaps(&a, &b), common, "{} and {}", a, b);
        prop_assert_eq!(overlaps(&b, &a), common);
    }
}

fn small_pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "**"]), 1..5)
        .prop_map(|s| s.join("."))
}

/// Every topic of 1..=`max` segments over `alphabet`.
fn topics_over(alphabet: &[&str], max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut level = vec![String::new()];
    for _ in 0..max {
        let mut next = Vec::new();
        for prefix in &level {
            for s in alphabet {
                let t = if prefix.is_empty() {
                    s.to_string()
                } else {
                    format!("{prefix}.{s}")
                };
                out.push(t.clone());
                next.push(t);
            }
        }
        level = next;
    }
    out
}
