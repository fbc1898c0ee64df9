//! [`PatternTrie`]: a map from subscription pattern to value, indexed by segment.

use std::collections::HashMap;
use std::fmt;

/// A map from (normalised) subscription pattern to a value, answering "which patterns match this
/// topic" without scanning all patterns.
///
/// Each node of the trie stands for a pattern prefix and has literal children in a
/// `HashMap<Box<str>, Node>` (std SipHash: topics come from the network, so the hasher is
/// DoS-resistant), plus at most one `*` child and one `**` child. A pattern's value lives at the
/// node its last segment leads to. Keys are normalised on the way in (`a.**.**` and `a.**` are
/// the same entry; see [`normalize_pattern`](super::normalize_pattern)).
///
/// Patterns passed to the methods must be valid ([`validate_pattern`](super::validate_pattern));
/// this is checked by `debug_assert!` only. An invalid pattern is stored under its segments as
/// written and is harmless (it never matches a valid topic) but wastes memory.
///
/// # Matching
/// [`for_each_match`](Self::for_each_match) simulates the trie as an NFA, one topic segment at
/// a time, keeping the set of active nodes: *transient* nodes reached through a literal or `*`
/// edge on the last segment, and *sticky* `**` nodes, which once reached stay active (a `**`
/// absorbs any number of further segments). Because the trie is a tree, every node has one
/// parent and one incoming edge, so a deduplicated active set yields a deduplicated next set;
/// the only node that can be reached twice is a `**` node (from its parent at several
/// positions), and it is added to the sticky set only if not already present (a linear scan of
/// that small set). Each stored pattern is therefore visited at most once per topic, without
/// per-call marks in the nodes (the trie stays `Sync` and shareable behind a lock or `ArcSwap`).
///
/// Cost: O(topic segments × active nodes) hash look-ups. The active sets live in fixed inline
/// arrays (16 transient nodes per step, 8 sticky `**` nodes), so matching does not allocate
/// unless a topic keeps more than that many nodes active at once; then it spills to a `Vec`.
#[derive(Clone)]
pub struct PatternTrie<V> {
    root: Node<V>,
    len: usize,
}

impl<V> PatternTrie<V> {
    /// Creates an empty trie (one root node, no allocation).
    pub fn new() -> Self {
        Self {
            root: Node::new(),
            len: 0,
        }
    }

    /// Number of stored patterns.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no pattern is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Returns the value stored for `pattern` (normalised first), if any.
    pub fn get(&self, pattern: &str) -> Option<&V> {
        let mut node = &self.root;
        for seg in segments(pattern) {
            node = node.child(seg)?;
        }
        node.value.as_ref()
    }

    /// Returns the value stored for `pattern` (normalised first) mutably, if any.
    pub fn get_mut(&mut self, pattern: &str) -> Option<&mut V> {
        let mut node = &mut self.root;
        for seg in segments(pattern) {
            node = node.child_mut(seg)?;
        }
        node.value.as_mut()
    }

    /// Returns the value stored for `pattern`, first storing `f()` if there is none.
    pub fn entry_or_insert_with(&mut self, pattern: &str, f: impl FnOnce() -> V) -> &mut V {
        let node = Node::walk_or_insert(&mut self.root, pattern);
        if node.value.is_none() {
            self.len += 1;
        }
        node.value.get_or_insert_with(f)
    }

    /// Stores `value` for `pattern`, returning the value it replaces, if any.
    pub fn insert(&mut self, pattern: &str, value: V) -> Option<V> {
        let old = Node::walk_or_insert(&mut self.root, pattern)
            .value
            .replace(value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes and returns the value stored for `pattern`, if any. Nodes left with no value and
    /// no children are freed, so memory does not grow with subscribe/unsubscribe churn.
    pub fn remove(&mut self, pattern: &str) -> Option<V> {
        let old = Node::remove_at(&mut self.root, segments(pattern));
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Calls `f` once for each stored pattern that matches `topic` (assumed valid: see
    /// [`validate_topic`](super::validate_topic)), in no particular order. Never calls `f` twice
    /// for the same pattern, however many ways its `**` segments could match. See the type's
    /// docs for the algorithm, its cost and when it allocates.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a V)) {
        let mut walk = Walk::start(&self.root);
        for segment in topic.split('.') {
            if !walk.step(segment) {
                return;
            }
        }
        for node in walk.cur.iter().chain(walk.globs.iter()) {
            if let Some(value) = &node.value {
                f(value);
            }
        }
    }

    /// Returns whether any stored pattern matches `topic` (assumed valid). Stops at the first
    /// match, including as soon as a stored pattern ending in `**` is reached.
    pub fn any_match(&self, topic: &str) -> bool {
        let mut walk = Walk::start(&self.root);
        for segment in topic.split('.') {
            if walk.glob_hit {
                return true;
            }
            if !walk.step(segment) {
                return false;
            }
        }
        walk.glob_hit || walk.cur.iter().any(|n| n.value.is_some())
    }

    /// Iterates over all stored `(pattern, value)` pairs, patterns in normal form and in
    /// lexicographic order. Collects and rebuilds every pattern string first: for snapshots and
    /// debugging, not for the hot path.
    pub fn iter(&self) -> impl Iterator<Item = (String, &V)> {
        let mut out = Vec::with_capacity(self.len);
        let mut path = Vec::new();
        self.root.collect(&mut path, &mut out);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter()
    }

    /// Number of trie nodes, the root included (1 when empty). For tests of pruning.
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        self.root.count()
    }
}

impl<V> Default for PatternTrie<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: fmt::Debug> fmt::Debug for PatternTrie<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// One segment of a pattern.
#[derive(Clone, Copy)]
enum Seg<'p> {
    Lit(&'p str),
    Star,
    Glob,
}

/// The segments of `pattern` in normal form (runs of `**` collapsed), without allocating.
fn segments(pattern: &str) -> impl Iterator<Item = Seg<'_>> {
    let mut prev_glob = false;
    pattern.split('.').filter_map(move |s| {
        let seg = match s {
            "*" => Seg::Star,
            "**" => Seg::Glob,
            _ => Seg::Lit(s),
        };
        let glob = matches!(seg, Seg::Glob);
        let repeat = glob && prev_glob;
        prev_glob = glob;
        (!repeat).then_some(seg)
    })
}

#[derive(Clone)]
struct Node<V> {
    value: Option<V>,
    literal: HashMap<Box<str>, Node<V>>,
    star: Option<Box<Node<V>>>,
    glob: Option<Box<Node<V>>>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Self {
            value: None,
            literal: HashMap::new(),
            star: None,
            glob: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.value.is_none()
            && self.literal.is_empty()
            && self.star.is_none()
            && self.glob.is_none()
    }

    fn child(&self, seg: Seg<'_>) -> Option<&Self> {
        match seg {
            Seg::Lit(s) => self.literal.get(s),
            Seg::Star => self.star.as_deref(),
            Seg::Glob => self.glob.as_deref(),
        }
    }

    fn child_mut(&mut self, seg: Seg<'_>) -> Option<&mut Self> {
        match seg {
            Seg::Lit(s) => self.literal.get_mut(s),
            Seg::Star => self.star.as_deref_mut(),
            Seg::Glob => self.glob.as_deref_mut(),
        }
    }

    fn child_or_insert(&mut self, seg: Seg<'_>) -> &mut Self {
        match seg {
            Seg::Lit(s) => {
                // Look up first so that existing segments cost no key allocation.
                if !self.literal.contains_key(s) {
                    self.literal.insert(s.into(), Node::new());
                }
                self.literal
                    .get_mut(s)
                    .expect("literal child exists: inserted just above if missing")
            }
            Seg::Star => self.star.get_or_insert_with(|| Box::new(Node::new())),
            Seg::Glob => self.glob.get_or_insert_with(|| Box::new(Node::new())),
        }
    }

    /// Walks from `root` to the node for `pattern`, creating missing nodes.
    fn walk_or_insert<'n>(root: &'n mut Self, pattern: &str) -> &'n mut Self {
        debug_assert!(
            super::validate_pattern(pattern).is_ok(),
            "invalid pattern {pattern:?}"
        );
        let mut node = root;
        for seg in segments(pattern) {
            node = node.child_or_insert(seg);
        }
        node
    }

    fn remove_child(&mut self, seg: Seg<'_>) {
        match seg {
            Seg::Lit(s) => {
                self.literal.remove(s);
                // Give back the table memory of nodes that lost many children.
                if self.literal.is_empty() {
                    self.literal = HashMap::new();
                }
            }
            Seg::Star => self.star = None,
            Seg::Glob => self.glob = None,
        }
    }

    /// Removes the value at the end of `segs`, pruning nodes left empty on the way back up.
    /// Recursion depth is the number of pattern segments (≤ `MAX_SEGMENTS` for valid patterns).
    fn remove_at<'p>(node: &mut Self, mut segs: impl Iterator<Item = Seg<'p>>) -> Option<V> {
        let Some(seg) = segs.next() else {
            return node.value.take();
        };
        let child = node.child_mut(seg)?;
        let old = Self::remove_at(child, segs)?;
        if child.is_empty() {
            node.remove_child(seg);
        }
        Some(old)
    }

    fn count(&self) -> usize {
        1 + self.literal.values().map(Node::count).sum::<usize>()
            + self.star.as_ref().map_or(0, |n| n.count())
            + self.glob.as_ref().map_or(0, |n| n.count())
    }

    fn collect<'a>(&'a self, path: &mut Vec<&'a str>, out: &mut Vec<(String, &'a V)>) {
        if let Some(value) = &self.value {
            out.push((path.join("."), value));
        }
        for (segment, child) in &self.literal {
            path.push(segment);
            child.collect(path, out);
            path.pop();
        }
        for (segment, child) in [("*", &self.star), ("**", &self.glob)] {
            if let Some(child) = child {
                path.push(segment);
                child.collect(path, out);
                path.pop();
            }
        }
    }
}

/// Inline capacity for transient active nodes per step.
const INLINE_ACTIVE: usize = 16;
/// Inline capacity for sticky `**` nodes.
const INLINE_GLOBS: usize = 8;

/// State of one matching walk (see [`PatternTrie`]'s docs).
struct Walk<'a, V> {
    /// Transient nodes active after the segments consumed so far.
    cur: NodeStack<'a, V, INLINE_ACTIVE>,
    /// Scratch for the next step's transient nodes.
    next: NodeStack<'a, V, INLINE_ACTIVE>,
    /// Sticky `**` nodes reached so far (no duplicates).
    globs: NodeStack<'a, V, INLINE_GLOBS>,
    /// Whether a `**` node holding a value has been reached (it matches any remainder).
    glob_hit: bool,
}

impl<'a, V> Walk<'a, V> {
    fn start(root: &'a Node<V>) -> Self {
        let mut walk = Self {
            cur: NodeStack::new(root),
            next: NodeStack::new(root),
            globs: NodeStack::new(root),
            glob_hit: false,
        };
        walk.cur.push(root);
        if let Some(glob) = root.glob.as_deref() {
            walk.add_glob(glob);
        }
        walk
    }

    /// Consumes one topic segment. Returns false when no node is active any more.
    fn step(&mut self, segment: &str) -> bool {
        self.next.clear();
        for node in self.cur.iter().chain(self.globs.iter()) {
            if let Some(child) = node.literal.get(segment) {
                self.next.push(child);
            }
            if let Some(child) = node.star.as_deref() {
                self.next.push(child);
            }
        }
        std::mem::swap(&mut self.cur, &mut self.next);
        for i in 0..self.cur.len() {
            if let Some(glob) = self.cur.get(i).glob.as_deref() {
                self.add_glob(glob);
            }
        }
        !(self.cur.is_empty() && self.globs.is_empty())
    }

    fn add_glob(&mut self, glob: &'a Node<V>) {
        if !self.globs.iter().any(|g| std::ptr::eq(g, glob)) {
            self.glob_hit |= glob.value.is_some();
            self.globs.push(glob);
        }
    }
}

/// A stack of node references: a fixed inline array, spilling to a `Vec` when full.
struct NodeStack<'a, V, const N: usize> {
    inline: [&'a Node<V>; N],
    inline_len: usize,
    spill: Vec<&'a Node<V>>,
}

impl<'a, V, const N: usize> NodeStack<'a, V, N> {
    /// `fill` only initialises unused slots; it is never read back.
    fn new(fill: &'a Node<V>) -> Self {
        Self {
            inline: [fill; N],
            inline_len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, node: &'a Node<V>) {
        if self.inline_len < N {
            self.inline[self.inline_len] = node;
            self.inline_len += 1;
        } else {
            self.spill.push(node);
        }
    }

    fn clear(&mut self) {
        self.inline_len = 0;
        self.spill.clear();
    }

    fn len(&self) -> usize {
        self.inline_len + self.spill.len()
    }

    fn is_empty(&self) -> bool {
        self.inline_len == 0
    }

    fn get(&self, i: usize) -> &'a Node<V> {
        if i < self.inline_len {
            self.inline[i]
        } else {
            self.spill[i - self.inline_len]
        }
    }

    fn iter(&self) -> impl Iterator<Item = &'a Node<V>> + '_ {
        self.inline[..self.inline_len]
            .iter()
            .chain(self.spill.iter())
            .copied()
    }
}
