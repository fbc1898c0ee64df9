//! Consistent hashing for the sharded bridge fleet (issue 5): which worker owns a cluster.
//!
//! A cluster (realm + cluster id) is mapped to a 64-bit [`cluster_key`]; a [`Placement`],
//! rebuilt on every membership change, maps each key to exactly one [`Worker`]. Every member
//! of the fleet builds its own `Placement` from the same member list and must reach the same
//! answer, so everything here is deterministic and platform-independent: no randomness, no
//! hash-map iteration order, and no libm call (the weighted score uses [`ln_portable`], built
//! from IEEE-754 `+ - * /` only, which every platform rounds alike).
//!
//! Three schemes, compared by [`compare`] (figures and the choice: `docs/FLEET-HASHING.md`):
//! - [`Rendezvous`] — highest random weight (Thaler & Ravishankar 1998), weighted by the
//!   logarithmic method (Schindelhauer & Schomaker 2005). No table; O(N) per lookup.
//! - [`Ring`] — the consistent-hashing ring with virtual nodes (Karger et al. 1997).
//! - [`Maglev`] — Maglev's permutation-filled lookup table (Eisenbud et al., NSDI 2016).
//!
//! [`Placement`] is rendezvous: a join moves keys only to the new worker and a leave only the
//! leaver's keys, exactly, whatever the weights.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};

use crate::wire::NodeId;

/// Smallest accepted [`Worker::weight`]; smaller weights (0) are raised to it.
pub const MIN_WEIGHT: u32 = 1;
/// Largest accepted [`Worker::weight`]; larger weights are lowered to it.
pub const MAX_WEIGHT: u32 = 1000;
/// The weight of a normal worker: a worker of weight 200 takes twice its share.
pub const NORMAL_WEIGHT: u32 = 100;
/// [`Ring`] virtual nodes of a worker of [`NORMAL_WEIGHT`]: 160, ketama's figure
/// (`pingora-ketama`, libmemcached); a worker of weight `w` gets `160 * w / 100`.
pub const DEFAULT_VNODES: u32 = 160;
/// [`Maglev`] lookup-table size: the prime 65,537, the paper's (§3.4) smaller size, which keeps
/// the table at `M / N ≥ 100` entries per worker up to 655 workers.
pub const DEFAULT_MAGLEV_TABLE: usize = 65_537;

/// One worker of a fleet: its identity and relative weight (1..=1000, 100 = normal).
///
/// A worker's share of the clusters is `weight / Σ weights`. Weights outside
/// [`MIN_WEIGHT`]..=[`MAX_WEIGHT`] are clamped into that range when a scheme is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    /// The worker's node id (its 32 bytes are hashed; any distribution of ids is fine).
    pub id: NodeId,
    /// Relative weight, 1..=1000; [`NORMAL_WEIGHT`] (100) = a normal share.
    pub weight: u32,
}

/// The 64-bit placement key of a cluster: the first 8 bytes (big-endian) of
/// SHA-256(realm ‖ `0x00` ‖ cluster). Stable across processes, versions and platforms.
///
/// The NUL separates the two names, so (`"a"`, `"bc"`) and (`"ab"`, `"c"`) differ; realm names
/// must not themselves contain a NUL for that to hold.
pub fn cluster_key(realm: &str, cluster: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(realm.as_bytes())
        .chain_update([0u8])
        .chain_update(cluster.as_bytes())
        .finalize();
    first_u64(&digest)
}

/// The 64-bit placement key of a child bridge connecting to a fleet (`docs/FLEET.md`,
/// "Child bridges"): a worker of fleet `fleet` is hashed as the cluster `"fleet/" ‖ name`,
/// so every worker of one fleet has one owner above (as the nodes of one cluster do); any
/// other bridge as the cluster `"bridge/" ‖ its node id in lowercase hex` (64 digits), so
/// child bridges spread over the workers. Cluster names cannot hold `/` (`node.cluster`), so
/// neither form meets a real cluster's key.
pub fn child_bridge_key(realm: &str, node_id: &NodeId, fleet: Option<&str>) -> u64 {
    match fleet {
        Some(name) => cluster_key(realm, &format!("fleet/{name}")),
        None => {
            let hex: String = node_id.iter().map(|b| format!("{b:02x}")).collect();
            cluster_key(realm, &format!("bridge/{hex}"))
        }
    }
}

/// A mapping from a 64-bit key to the worker owning it.
pub trait Scheme {
    /// The owner of `key`, or `None` for an empty fleet.
    fn owner(&self, key: u64) -> Option<NodeId>;
}

/// The fleet's placement: the scheme the fleet uses, built once per membership change.
///
/// It is [`Rendezvous`] (see `docs/FLEET-HASHING.md` for the figures behind the choice): a
/// worker joining takes keys only from the others, one leaving hands over only its own keys,
/// and no table is kept. A lookup costs O(N) (N = workers): one hash mix per worker and a
/// logarithm for the few (≈ ln N) that may be the best so far.
#[derive(Debug, Clone)]
pub struct Placement {
    scheme: Rendezvous,
}

impl Placement {
    /// Builds the placement for `workers`, given in any order: the result does not depend on
    /// the order. Of several workers with the same id the first is kept; weights are clamped
    /// to 1..=1000. An empty fleet has no owner.
    pub fn new(workers: &[Worker]) -> Placement {
        Placement {
            scheme: Rendezvous::new(workers),
        }
    }

    /// The owner of `key` (a [`cluster_key`]), or `None` for an empty fleet.
    pub fn owner(&self, key: u64) -> Option<NodeId> {
        self.scheme.owner(key)
    }

    /// The workers it was built from, sorted by id, duplicates removed, weights clamped.
    pub fn workers(&self) -> &[Worker] {
        self.scheme.workers()
    }
}

impl Scheme for Placement {
    fn owner(&self, key: u64) -> Option<NodeId> {
        Placement::owner(self, key)
    }
}

/// Weighted rendezvous hashing (highest random weight).
///
/// For each worker `i` a key draws `h_i = mix64(key ^ H(id_i))` (`H` = the first 8 bytes of
/// SHA-256 of the id, `mix64` = splitmix64's finalizer) and the owner is the worker with the
/// highest score (Thaler & Ravishankar, *Using name-based mappings to increase hit rates*,
/// IEEE/ACM ToN 1998). The score is `weight_i / -ln(u_i)`, `u_i ∈ (0, 1)` the top 53 bits of
/// `h_i`: the logarithmic method (Schindelhauer & Schomaker, *Weighted distributed hash
/// tables*, SPAA 2005), which gives worker `i` the share `weight_i / Σ weight`; with equal
/// weights it ranks like `h_i` itself, i.e. plain HRW. A worker's score depends only on the key
/// and that worker, so keys move only to a joining worker or away from a leaving one. Ties
/// (equal scores) go to the larger `h_i`, then to the smaller id.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    workers: Vec<Worker>,
    /// `H(id)` of each worker, same order as `workers`.
    hashes: Vec<u64>,
    /// The weights as `f64`, same order as `workers`.
    weights: Vec<f64>,
}

impl Rendezvous {
    /// Builds the scheme; `workers` in any order (see [`Placement::new`] for duplicates and
    /// weights).
    pub fn new(workers: &[Worker]) -> Rendezvous {
        let workers = normalize(workers);
        let hashes = workers.iter().map(|w| id_hash(&w.id)).collect();
        let weights = workers.iter().map(|w| f64::from(w.weight)).collect();
        Rendezvous {
            workers,
            hashes,
            weights,
        }
    }

    /// The owner of `key`, or `None` for an empty fleet. O(N): one mix per worker, and a
    /// logarithm only for a worker that may beat the best so far (about ln N of them).
    pub fn owner(&self, key: u64) -> Option<NodeId> {
        // (score, h, index) of the best worker so far. Each worker's (score, h) depends only on
        // the key and that worker, so adding or removing others never reorders two workers.
        let mut best: Option<(f64, u64, usize)> = None;
        for (i, (&wh, &w)) in self.hashes.iter().zip(&self.weights).enumerate() {
            let h = mix64(key ^ wh);
            let u = unit_open(h);
            if let Some((best_score, _, _)) = best {
                // -ln(u) ≥ 1 − u, so w / (1 − u) bounds this worker's score from above: below
                // the best (by a margin far wider than rounding) it cannot win, and the
                // logarithm is skipped. This changes the cost only, never the owner.
                if w < best_score * (1.0 - u) * PRUNE_MARGIN {
                    continue;
                }
            }
            let score = w / -ln_portable(u);
            // Workers are sorted by id: on a full tie the smaller id, seen first, stays.
            if best.is_none_or(|(bs, bh, _)| score > bs || (score == bs && h > bh)) {
                best = Some((score, h, i));
            }
        }
        best.map(|(_, _, i)| self.workers[i].id)
    }

    /// The workers, sorted by id, duplicates removed, weights clamped.
    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }
}

impl Scheme for Rendezvous {
    fn owner(&self, key: u64) -> Option<NodeId> {
        Rendezvous::owner(self, key)
    }
}

/// The consistent-hashing ring (Karger, Lehman, Leighton, Panigrahy, Levine, Lewin,
/// *Consistent hashing and random trees*, STOC 1997) with virtual nodes.
///
/// A worker of weight `w` places `max(1, round(vnodes * w / 100))` points on the 64-bit circle
/// (point `j` = the `j`-th output of splitmix64 seeded with `H(id)`); a key belongs to the
/// first point at or after it, wrapping around. Lookup: a binary search, O(log(N·vnodes)).
#[derive(Debug, Clone)]
pub struct Ring {
    workers: Vec<Worker>,
    /// `(point, index into workers)`, sorted by point then index.
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// A ring with [`DEFAULT_VNODES`] virtual nodes per normal-weight worker.
    pub fn new(workers: &[Worker]) -> Ring {
        Ring::with_vnodes(workers, DEFAULT_VNODES)
    }

    /// A ring with `vnodes` virtual nodes per worker of weight [`NORMAL_WEIGHT`] (scaled by
    /// weight, at least one per worker).
    pub fn with_vnodes(workers: &[Worker], vnodes: u32) -> Ring {
        let workers = normalize(workers);
        let mut points = Vec::new();
        for (i, w) in workers.iter().enumerate() {
            let count = (u64::from(vnodes) * u64::from(w.weight) + u64::from(NORMAL_WEIGHT / 2))
                / u64::from(NORMAL_WEIGHT);
            let mut state = id_hash(&w.id);
            for _ in 0..count.max(1) {
                state = state.wrapping_add(SPLITMIX_GAMMA);
                points.push((mix64(state), i as u32));
            }
        }
        points.sort_unstable();
        Ring { workers, points }
    }

    /// The owner of `key`, or `None` for an empty fleet.
    pub fn owner(&self, key: u64) -> Option<NodeId> {
        if self.points.is_empty() {
            return None;
        }
        let at = self.points.partition_point(|&(p, _)| p < key);
        let (_, i) = self.points[if at == self.points.len() { 0 } else { at }];
        Some(self.workers[i as usize].id)
    }

    /// The workers, sorted by id, duplicates removed, weights clamped.
    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }

    /// Number of points on the ring (Σ virtual nodes).
    pub fn points(&self) -> usize {
        self.points.len()
    }
}

impl Scheme for Ring {
    fn owner(&self, key: u64) -> Option<NodeId> {
        Ring::owner(self, key)
    }
}

/// Maglev hashing (Eisenbud et al., *Maglev: A Fast and Reliable Software Network Load
/// Balancer*, NSDI 2016, §3.4): a lookup table of prime size `M`, filled by letting the
/// workers take turns claiming the next free entry of their own permutation
/// `(offset + j·skip) mod M`. Lookup: one table read, `table[key mod M]`.
///
/// Weights: each round a worker earns `weight` credits and claims one entry per
/// `max weight` credits (the heaviest claims once per round), so entry counts follow the
/// weights. The table balances almost perfectly, but a membership change also moves a small
/// fraction of keys between workers that stayed (the paper's trade-off).
#[derive(Debug, Clone)]
pub struct Maglev {
    workers: Vec<Worker>,
    /// Index into `workers` per entry; empty for an empty fleet.
    table: Vec<u32>,
}

impl Maglev {
    /// A Maglev table of [`DEFAULT_MAGLEV_TABLE`] (65,537) entries.
    pub fn new(workers: &[Worker]) -> Maglev {
        Maglev::with_table_size(workers, DEFAULT_MAGLEV_TABLE)
    }

    /// A Maglev table of the smallest prime ≥ `max(size, 2, number of workers)` entries (the
    /// permutations need a prime size). Build cost O(M log M) mixes; memory 4·M bytes.
    pub fn with_table_size(workers: &[Worker], size: usize) -> Maglev {
        let workers = normalize(workers);
        if workers.is_empty() {
            return Maglev {
                workers,
                table: Vec::new(),
            };
        }
        let m = next_prime(size.max(workers.len()).max(2)) as u64;
        let (mut pos, skip): (Vec<u64>, Vec<u64>) = workers
            .iter()
            .map(|w| {
                let h = id_hash(&w.id);
                (
                    mix64(h ^ MAGLEV_OFFSET_SALT) % m,
                    mix64(h ^ MAGLEV_SKIP_SALT) % (m - 1) + 1,
                )
            })
            .unzip();
        let max_weight = workers.iter().map(|w| w.weight).max().unwrap_or(1);
        let mut credit = vec![0u32; workers.len()];
        let mut table = vec![u32::MAX; m as usize];
        let mut filled = 0u64;
        'fill: loop {
            for i in 0..workers.len() {
                credit[i] += workers[i].weight;
                while credit[i] >= max_weight {
                    credit[i] -= max_weight;
                    // A permutation of 0..m: a free entry turns up within m steps.
                    while table[pos[i] as usize] != u32::MAX {
                        pos[i] = step(pos[i], skip[i], m);
                    }
                    table[pos[i] as usize] = i as u32;
                    pos[i] = step(pos[i], skip[i], m);
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Maglev { workers, table }
    }

    /// The owner of `key`, or `None` for an empty fleet.
    pub fn owner(&self, key: u64) -> Option<NodeId> {
        if self.table.is_empty() {
            return None;
        }
        let i = self.table[(key % self.table.len() as u64) as usize];
        Some(self.workers[i as usize].id)
    }

    /// The workers, sorted by id, duplicates removed, weights clamped.
    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }

    /// The table size `M` (a prime), 0 for an empty fleet.
    pub fn table_size(&self) -> usize {
        self.table.len()
    }
}

impl Scheme for Maglev {
    fn owner(&self, key: u64) -> Option<NodeId> {
        Maglev::owner(self, key)
    }
}

/// The figures [`compare`] measures for one scheme. Fractions are of all `clusters` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemeReport {
    /// Scheme and parameters, e.g. `"ring (160 vnodes)"`.
    pub scheme: String,
    /// Number of cluster keys placed.
    pub clusters: usize,
    /// Number of (equal-weight) workers before the join/leave.
    pub workers: usize,
    /// Balance: most clusters on one worker / mean clusters per worker (1.0 = perfect).
    pub max_mean: f64,
    /// Fraction of clusters whose owner changed when worker `N` joined.
    pub join_moved: f64,
    /// The least a join can move: `1 / (N + 1)`.
    pub join_ideal: f64,
    /// Fraction of clusters that changed owner but not to the joining worker (0 = consistent).
    pub join_stray: f64,
    /// Fraction of clusters whose owner changed when worker 0 left.
    pub leave_moved: f64,
    /// The least a leave can move: `1 / N`.
    pub leave_ideal: f64,
    /// Fraction of clusters that changed owner but were not the leaver's (0 = consistent).
    pub leave_stray: f64,
    /// Share of the clusters owned by worker 0 at weight 200 (the others at 100).
    pub weighted_share: f64,
    /// Its ideal share: `200 / (200 + 100·(N − 1))`.
    pub weighted_ideal: f64,
}

/// The deterministic fleet [`compare`] uses: worker `i` has id SHA-256(`"worker-{i}"`) and
/// weight [`NORMAL_WEIGHT`].
pub fn sample_workers(n: usize) -> Vec<Worker> {
    (0..n)
        .map(|i| Worker {
            id: Sha256::digest(format!("worker-{i}")).into(),
            weight: NORMAL_WEIGHT,
        })
        .collect()
}

/// The deterministic cluster keys [`compare`] uses: `cluster_key("io.macula", "cluster-{i}")`.
pub fn sample_keys(n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| cluster_key("io.macula", &format!("cluster-{i}")))
        .collect()
}

/// Measures balance, join/leave disruption and weighted share of [`Rendezvous`],
/// [`Ring`] (16 and [`DEFAULT_VNODES`] virtual nodes) and [`Maglev`] ([`DEFAULT_MAGLEV_TABLE`])
/// for `clusters` [`sample_keys`] on `workers` (0 is taken as 1) [`sample_workers`]; see [`SchemeReport`].
/// Pure and deterministic: the same arguments give the same figures everywhere.
pub fn compare(clusters: usize, workers: usize) -> Vec<SchemeReport> {
    let workers = workers.max(1);
    let keys = sample_keys(clusters);
    let fleet = sample_workers(workers + 1);
    vec![
        measure("rendezvous", Rendezvous::new, &keys, &fleet),
        measure(
            "ring (16 vnodes)",
            |w| Ring::with_vnodes(w, 16),
            &keys,
            &fleet,
        ),
        measure(
            &format!("ring ({DEFAULT_VNODES} vnodes)"),
            Ring::new,
            &keys,
            &fleet,
        ),
        measure(
            &format!("maglev (M = {DEFAULT_MAGLEV_TABLE})"),
            Maglev::new,
            &keys,
            &fleet,
        ),
    ]
}

/// Renders reports as a Markdown table (one row per scheme, fractions in %).
pub fn markdown(reports: &[SchemeReport]) -> String {
    let mut out = String::from(
        "| scheme | clusters × workers | max/mean | join moved (ideal) | join stray \
         | leave moved (ideal) | leave stray | weight-200 share (ideal) |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let pct = |f: f64| format!("{:.2} %", f * 100.0);
    for r in reports {
        // Writing into a String cannot fail.
        let _ = writeln!(
            out,
            "| {} | {} × {} | {:.3} | {} ({}) | {} | {} ({}) | {} | {} ({}) |",
            r.scheme,
            r.clusters,
            r.workers,
            r.max_mean,
            pct(r.join_moved),
            pct(r.join_ideal),
            pct(r.join_stray),
            pct(r.leave_moved),
            pct(r.leave_ideal),
            pct(r.leave_stray),
            pct(r.weighted_share),
            pct(r.weighted_ideal),
        );
    }
    out
}

/// `ln(x)` for `x > 0` (normal, finite) from IEEE-754 `+ - * /` only, so every platform
/// computes the same bits (the standard library's `ln` calls the platform's libm, whose last
/// bit may differ). Accuracy: within a few ulps of the true value.
///
/// Method: `x = m·2^e` with `m ∈ [√½, √2)`, `ln x = e·ln 2 + 2·atanh(s)`, `s = (m−1)/(m+1)`,
/// `|s| ≤ 0.172`, the atanh series summed to `s^25` (next term < 2⁻⁶⁰ relative).
pub fn ln_portable(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    // Horner over 1 + s²/3 + s⁴/5 + … + s²⁴/25.
    let mut p = 1.0 / 25.0;
    for k in (0..12).rev() {
        p = p * s2 + 1.0 / f64::from(2 * k + 1);
    }
    (e as f64) * std::f64::consts::LN_2 + 2.0 * s * p
}

// ---- private helpers ----

/// splitmix64's increment (the golden ratio in 64-bit fixed point).
const SPLITMIX_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
/// [`Rendezvous::owner`] skips a worker whose score bound is below the best score times
/// this: 10⁻¹² under 1, a thousand times the relative rounding error of a score.
const PRUNE_MARGIN: f64 = 1.0 - 1e-12;
/// Salts separating Maglev's offset and skip hashes of one worker.
const MAGLEV_OFFSET_SALT: u64 = 0x6f66_6673_6574_0001;
const MAGLEV_SKIP_SALT: u64 = 0x736b_6970_0000_0002;

/// The first 8 bytes of a digest, big-endian.
fn first_u64(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// `H(id)`: the first 8 bytes of SHA-256(id), so ids that are not themselves hashes (e.g.
/// test ids with few distinct bytes) still spread.
fn id_hash(id: &NodeId) -> u64 {
    first_u64(&Sha256::digest(id))
}

/// splitmix64's output function (Steele, Lea, Flood 2014; Stafford's "Mix13" constants): a
/// bijection on u64 with full avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The top 53 bits of `h` as a uniform value strictly inside (0, 1): `(h>>11 + ½) / 2⁵³`.
fn unit_open(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// Workers sorted by id, the first of each id kept, weights clamped to 1..=1000.
fn normalize(workers: &[Worker]) -> Vec<Worker> {
    let mut by_id = BTreeMap::new();
    for w in workers {
        by_id.entry(w.id).or_insert(Worker {
            id: w.id,
            weight: w.weight.clamp(MIN_WEIGHT, MAX_WEIGHT),
        });
    }
    by_id.into_values().collect()
}

/// `(pos + skip) mod m` for `pos, skip < m`, without a division.
fn step(pos: u64, skip: u64, m: u64) -> u64 {
    let next = pos + skip;
    if next >= m {
        next - m
    } else {
        next
    }
}

/// The smallest prime ≥ `n` (trial division: n is at most a few hundred thousand).
fn next_prime(n: usize) -> usize {
    let is_prime = |p: usize| p >= 2 && (2..).take_while(|d| d * d <= p).all(|d| p % d != 0);
    (n..).find(|&p| is_prime(p)).unwrap_or(n)
}

/// How many owners differ between `before` and `after`, and how many of those changes do
/// not satisfy `expected(before, after)` (the stray moves).
fn moves(
    before: &[Option<NodeId>],
    after: &[Option<NodeId>],
    expected: impl Fn(&Option<NodeId>, &Option<NodeId>) -> bool,
) -> (usize, usize) {
    let changed = || before.iter().zip(after).filter(|(b, a)| b != a);
    let stray = changed().filter(|(b, a)| !expected(b, a)).count();
    (changed().count(), stray)
}

/// One [`SchemeReport`]: `fleet` holds N + 1 workers; the base fleet is the first N.
fn measure<S: Scheme>(
    name: &str,
    build: impl Fn(&[Worker]) -> S,
    keys: &[u64],
    fleet: &[Worker],
) -> SchemeReport {
    let n = fleet.len() - 1;
    let base = &fleet[..n];
    let owners = |s: &S| -> Vec<Option<NodeId>> { keys.iter().map(|&k| s.owner(k)).collect() };
    let before = owners(&build(base));
    let total = keys.len().max(1) as f64;
    let frac = |count: usize| count as f64 / total;

    let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
    for o in before.iter().flatten() {
        *load.entry(*o).or_default() += 1;
    }
    let max = load.values().copied().max().unwrap_or(0) as f64;
    let max_mean = max / (total / n as f64);

    let joiner = Some(fleet[n].id);
    let after_join = owners(&build(fleet));
    let (join_moved, join_stray) = moves(&before, &after_join, |_, a| *a == joiner);

    let leaver = Some(base[0].id);
    let after_leave = owners(&build(&base[1..]));
    let (leave_moved, leave_stray) = moves(&before, &after_leave, |b, _| *b == leaver);

    let mut weighted = base.to_vec();
    weighted[0].weight = 2 * NORMAL_WEIGHT;
    let heavy = build(&weighted);
    let heavy_count = keys
        .iter()
        .filter(|&&k| heavy.owner(k) == Some(weighted[0].id))
        .count();

    SchemeReport {
        scheme: name.to_string(),
        clusters: keys.len(),
        workers: n,
        max_mean,
        join_moved: frac(join_moved),
        join_ideal: 1.0 / (n + 1) as f64,
        join_stray: frac(join_stray),
        leave_moved: frac(leave_moved),
        leave_ideal: 1.0 / n as f64,
        leave_stray: frac(leave_stray),
        weighted_share: frac(heavy_count),
        weighted_ideal: 2.0 / (n + 1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owners<S: Scheme + ?Sized>(s: &S, keys: &[u64]) -> Vec<Option<NodeId>> {
        keys.iter().map(|&k| s.owner(k)).collect()
    }

    fn counts(owners: &[Option<NodeId>]) -> BTreeMap<NodeId, usize> {
        let mut c = BTreeMap::new();
        for o in owners.iter().flatten() {
            *c.entry(*o).or_default() += 1;
        }
        c
    }

    #[test]
    fn cluster_key_is_stable() {
        // Regression guard, computed once: SHA-256("io.macula\0a")[..8], big-endian.
        assert_eq!(cluster_key("io.macula", "a"), 0xf306_68e5_36a7_066e);
        assert_ne!(cluster_key("a", "bc"), cluster_key("ab", "c"));
    }

    #[test]
    fn balance_1000_clusters_on_8_workers() {
        let keys = sample_keys(1000);
        let c = counts(&owners(&Placement::new(&sample_workers(8)), &keys));
        let max = *c.values().max().unwrap();
        let min = *c.values().min().unwrap();
        let max_mean = max as f64 / 125.0;
        println!("placement, 1000 clusters on 8 workers: per worker {:?}, max/mean {max_mean:.3}, min {min}",
            c.values().collect::<Vec<_>>());
        assert_eq!(c.len(), 8, "every worker owns some clusters");
        assert!(max_mean <= 1.25, "max/mean {max_mean}");
    }

    #[test]
    fn join_moves_about_a_ninth_only_to_the_new_worker() {
        let keys = sample_keys(1000);
        let fleet = sample_workers(9);
        let before = owners(&Placement::new(&fleet[..8]), &keys);
        let after = owners(&Placement::new(&fleet), &keys);
        let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
        let frac = moved.len() as f64 / keys.len() as f64;
        println!("join 8 -> 9: moved {frac:.4} (ideal {:.4})", 1.0 / 9.0);
        assert!(moved.iter().all(|(_, a)| **a == Some(fleet[8].id)));
        assert!((frac - 1.0 / 9.0).abs() < 0.03, "moved {frac}");
    }

    #[test]
    fn leave_moves_only_the_leavers_clusters() {
        let keys = sample_keys(1000);
        let fleet = sample_workers(8);
        let before = owners(&Placement::new(&fleet), &keys);
        let after = owners(&Placement::new(&fleet[1..]), &keys);
        for (b, a) in before.iter().zip(&after) {
            if *b == Some(fleet[0].id) {
                assert_ne!(a, b);
            } else {
                assert_eq!(a, b, "a cluster of a worker that stayed moved");
            }
        }
    }

    #[test]
    fn order_does_not_matter() {
        let keys = sample_keys(500);
        let mut fleet = sample_workers(7);
        fleet[3].weight = 250;
        let forward = Placement::new(&fleet);
        fleet.reverse();
        fleet.swap(1, 4);
        let shuffled = Placement::new(&fleet);
        assert_eq!(owners(&forward, &keys), owners(&shuffled, &keys));
        assert_eq!(forward.workers(), shuffled.workers());
        assert!(forward.workers().windows(2).all(|p| p[0].id < p[1].id));
        assert_eq!(owners(&Ring::new(&fleet), &keys), {
            fleet.reverse();
            owners(&Ring::new(&fleet), &keys)
        });
        assert_eq!(owners(&Maglev::new(&fleet), &keys), {
            fleet.swap(0, 6);
            owners(&Maglev::new(&fleet), &keys)
        });
    }

    #[test]
    fn duplicates_keep_the_first_and_weights_are_clamped() {
        let mut fleet = sample_workers(3);
        fleet[0].weight = 0;
        fleet[1].weight = 5000;
        fleet.push(Worker {
            id: fleet[2].id,
            weight: 7,
        });
        let p = Placement::new(&fleet);
        assert_eq!(p.workers().len(), 3);
        let weight_of = |id| p.workers().iter().find(|w| w.id == id).unwrap().weight;
        assert_eq!(weight_of(fleet[0].id), MIN_WEIGHT);
        assert_eq!(weight_of(fleet[1].id), MAX_WEIGHT);
        assert_eq!(weight_of(fleet[2].id), NORMAL_WEIGHT);
    }

    #[test]
    fn empty_fleet_has_no_owner() {
        assert_eq!(Placement::new(&[]).owner(42), None);
        assert!(Placement::new(&[]).workers().is_empty());
        assert_eq!(Rendezvous::new(&[]).owner(42), None);
        assert_eq!(Ring::new(&[]).owner(42), None);
        assert_eq!(Maglev::new(&[]).owner(42), None);
    }

    #[test]
    fn single_worker_owns_all() {
        let one = sample_workers(1);
        let keys = sample_keys(200);
        let schemes: [&dyn Scheme; 4] = [
            &Placement::new(&one),
            &Ring::new(&one),
            &Maglev::new(&one),
            &Rendezvous::new(&one),
        ];
        for s in schemes {
            assert!(keys.iter().all(|&k| s.owner(k) == Some(one[0].id)));
        }
    }

    #[test]
    fn weight_200_gets_twice_the_share() {
        let keys = sample_keys(10_000);
        let mut fleet = sample_workers(8);
        fleet[5].weight = 200;
        let schemes: [(&str, &dyn Scheme); 3] = [
            ("placement", &Placement::new(&fleet)),
            ("ring", &Ring::new(&fleet)),
            ("maglev", &Maglev::new(&fleet)),
        ];
        let ideal = 2.0 / 9.0;
        for (name, s) in schemes {
            let share = owners(s, &keys)
                .iter()
                .filter(|o| **o == Some(fleet[5].id))
                .count() as f64
                / keys.len() as f64;
            println!("{name}: weight-200 share {share:.4} (ideal {ideal:.4})");
            if name == "placement" {
                assert!((share / ideal - 1.0).abs() < 0.08, "share {share}");
            }
        }
    }

    #[test]
    fn maglev_table_is_prime_and_balanced() {
        let m = Maglev::with_table_size(&sample_workers(5), 1000);
        assert_eq!(m.table_size(), 1009);
        let mut per = [0usize; 5];
        for &i in &m.table {
            per[i as usize] += 1;
        }
        // Turn-taking fills within one entry of M / N per worker.
        assert!(per.iter().all(|&c| c.abs_diff(1009 / 5) <= 1), "{per:?}");
        assert_eq!(
            Maglev::with_table_size(&sample_workers(3), 0).table_size(),
            3
        );
    }

    #[test]
    fn ring_scales_vnodes_by_weight() {
        let mut fleet = sample_workers(2);
        fleet[1].weight = 250;
        assert_eq!(Ring::with_vnodes(&fleet, 160).points(), 160 + 400);
        fleet[0].weight = 1;
        assert_eq!(Ring::with_vnodes(&fleet, 10).points(), 1 + 25);
    }

    #[test]
    fn pruning_never_changes_the_owner() {
        // The owner by scoring every worker, without the bound that skips logarithms.
        let full = |r: &Rendezvous, key: u64| {
            let mut best: Option<(f64, u64, usize)> = None;
            for (i, (&wh, &w)) in r.hashes.iter().zip(&r.weights).enumerate() {
                let h = mix64(key ^ wh);
                let score = w / -ln_portable(unit_open(h));
                if best.is_none_or(|(bs, bh, _)| score > bs || (score == bs && h > bh)) {
                    best = Some((score, h, i));
                }
            }
            best.map(|(_, _, i)| r.workers[i].id)
        };
        let keys = sample_keys(2000);
        for n in [2, 8, 64] {
            let mut fleet = sample_workers(n);
            for (i, w) in fleet.iter_mut().enumerate() {
                w.weight = [100, 100, 1, 1000, 250, 100, 37][i % 7];
            }
            for workers in [sample_workers(n), fleet] {
                let r = Rendezvous::new(&workers);
                assert!(keys.iter().all(|&k| r.owner(k) == full(&r, k)));
            }
        }
    }

    #[test]
    fn ln_portable_matches_std() {
        let mut x = 1.0e-16;
        while x < 1.0 {
            let (a, b) = (ln_portable(x), x.ln());
            assert!(
                (a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(1.0),
                "{x}: {a} vs {b}"
            );
            x *= 1.013;
        }
        assert_eq!(ln_portable(1.0), 0.0);
        assert_eq!(
            ln_portable(unit_open(0)),
            (0.5f64 / (1u64 << 53) as f64).ln()
        );
    }

    #[test]
    fn compare_figures() {
        for (clusters, workers) in [(1000, 8), (1000, 3), (100_000, 8)] {
            let reports = compare(clusters, workers);
            println!("compare({clusters}, {workers}):\n{}", markdown(&reports));
            let by = |prefix: &str| {
                reports
                    .iter()
                    .find(|r| r.scheme.starts_with(prefix))
                    .unwrap()
            };
            let hrw = by("rendezvous");
            assert_eq!((hrw.join_stray, hrw.leave_stray), (0.0, 0.0));
            let ring = by("ring (160");
            assert_eq!((ring.join_stray, ring.leave_stray), (0.0, 0.0));
            assert!(by("maglev").join_stray < 0.05);
        }
    }

    fn arb_workers(max: usize) -> impl Strategy<Value = Vec<Worker>> {
        proptest::collection::vec(
            (any::<[u8; 32]>(), 1u32..=1000).prop_map(|(id, weight)| Worker { id, weight }),
            1..max,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn join_never_moves_a_key_between_old_workers(
            workers in arb_workers(20),
            joiner in (any::<[u8; 32]>(), 1u32..=1000),
            keys in proptest::collection::vec(any::<u64>(), 1..200),
        ) {
            let before = Placement::new(&workers);
            let mut grown = workers.clone();
            grown.push(Worker { id: joiner.0, weight: joiner.1 });
            let after = Placement::new(&grown);
            for k in keys {
                let (b, a) = (before.owner(k).unwrap(), after.owner(k).unwrap());
                prop_assert!(before.workers().iter().any(|w| w.id == b), "owner is a member");
                prop_assert!(after.workers().iter().any(|w| w.id == a), "owner is a member");
                prop_assert!(a == b || a == joiner.0, "key {} moved between old workers", k);
            }
        }
    }
}
