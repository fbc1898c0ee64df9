//! What the `rpc` scenario measures and reports: per-call statistics gathered by the callers,
//! the counters read from every process's `/metrics` after the run, the JSON report and its
//! human summary.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::spawn;

/// Width of one slot of [`CallStats::timeline`], ms.
pub const SLOT_MS: u64 = 100;

/// Error kind of a call whose reply differed from its arguments (the provider echoes them).
pub const MISMATCH: &str = "mismatch";

/// Outcomes of calls, as one caller (or all, merged) saw them.
pub struct CallStats {
    /// Calls that ended (ok or not).
    pub calls: u64,
    /// Calls whose reply equalled their arguments.
    pub ok: u64,
    /// Failed calls by kind: `CallError::kind()`, or [`MISMATCH`].
    pub errors: BTreeMap<&'static str, u64>,
    /// Latency of the ok calls, µs (call start to reply).
    pub hist: Histogram<u64>,
    /// Per [`SLOT_MS`] slot of the call's start time since the run's start: [ok, failed].
    pub timeline: Vec<[u64; 2]>,
}

impl CallStats {
    /// Empty statistics.
    pub fn new() -> CallStats {
        CallStats {
            calls: 0,
            ok: 0,
            errors: BTreeMap::new(),
            hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            timeline: Vec::new(),
        }
    }

    /// Counts one call that started at `started` (the run started at `base`) and ended with
    /// `outcome`: its latency, or its error kind.
    pub fn record(
        &mut self,
        base: Instant,
        started: Instant,
        outcome: Result<Duration, &'static str>,
    ) {
        self.calls += 1;
        let slot = (started.saturating_duration_since(base).as_millis() as u64 / SLOT_MS) as usize;
        if slot >= self.timeline.len() {
            self.timeline.resize(slot + 1, [0, 0]);
        }
        match outcome {
            Ok(latency) => {
                self.ok += 1;
                self.timeline[slot][0] += 1;
                let _ = self.hist.record((latency.as_micros() as u64).max(1));
            }
            Err(kind) => {
                *self.errors.entry(kind).or_default() += 1;
                self.timeline[slot][1] += 1;
            }
        }
    }

    /// Adds `other` to these statistics.
    pub fn merge(&mut self, other: &CallStats) {
        self.calls += other.calls;
        self.ok += other.ok;
        for (k, n) in &other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        let _ = self.hist.add(&other.hist);
        if other.timeline.len() > self.timeline.len() {
            self.timeline.resize(other.timeline.len(), [0, 0]);
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            mine[0] += theirs[0];
            mine[1] += theirs[1];
        }
    }

    /// The error counts with owned keys, for the report.
    pub fn error_map(&self) -> BTreeMap<String, u64> {
        self.errors
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect()
    }

    /// Failed calls that started in slots `[from, to)`.
    fn errors_in(&self, from: usize, to: usize) -> u64 {
        self.timeline.iter().take(to).skip(from).map(|s| s[1]).sum()
    }
}

/// Latency percentiles of the ok calls, µs.
#[derive(Serialize, Debug, Default)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    /// The percentiles of `h` (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// The calls made before the clock started, until each caller had one success.
#[derive(Serialize, Debug)]
pub struct Warmup {
    pub calls: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub seconds: f64,
}

/// What happened around `--kill-provider-at`.
#[derive(Serialize, Debug)]
pub struct KillReport {
    /// The node that was killed (it hosted the first provider).
    pub node: String,
    /// When, seconds after the start of the run.
    pub at_s: f64,
    /// Failed calls that started before the kill's [`SLOT_MS`] slot.
    pub errors_before: u64,
    /// Failed calls that started in the second after the kill (from its slot on).
    pub errors_first_second: u64,
    /// Failed calls that started later.
    pub errors_after_first_second: u64,
    /// Ok calls among those that started at or after the kill's slot.
    pub ok_after: u64,
    /// `[ok, failed]` per [`SLOT_MS`] slot of call start, over the whole run.
    pub timeline: Vec<[u64; 2]>,
}

impl KillReport {
    /// The kill of `node` at `at` (since the run's start), read from the merged `stats`.
    pub fn new(node: String, at: Duration, stats: &CallStats) -> KillReport {
        let k = (at.as_millis() as u64 / SLOT_MS) as usize;
        let per_second = (1000 / SLOT_MS) as usize;
        KillReport {
            node,
            at_s: at.as_secs_f64(),
            errors_before: stats.errors_in(0, k),
            errors_first_second: stats.errors_in(k, k + per_second),
            errors_after_first_second: stats.errors_in(k + per_second, usize::MAX),
            ok_after: stats.timeline.iter().skip(k).map(|s| s[0]).sum(),
            timeline: stats.timeline.clone(),
        }
    }
}

/// One process's escalation-cache counters (all levels summed).
#[derive(Serialize, Debug, Default, Clone)]
pub struct ProcCache {
    /// `macula_escalation_cache_hits_total` after the run.
    pub hits: f64,
    /// `macula_escalation_cache_misses_total` after the run.
    pub misses: f64,
    /// Hits counted between the clock's start and the end of the run.
    pub hits_during_run: f64,
    /// Misses counted between the clock's start and the end of the run.
    pub misses_during_run: f64,
}

/// The lookup caches of every process read.
#[derive(Serialize, Debug, Default)]
pub struct CacheReport {
    /// Sum over the processes of `macula_escalation_cache_hits_total` (every level), after
    /// the run (warm-up included).
    pub lookups_served_from_cache: f64,
    /// Sum of `macula_escalation_cache_misses_total`, after the run.
    pub misses: f64,
    /// Sum of the hits counted during the timed run only.
    pub hits_during_run: f64,
    /// Sum of the misses counted during the timed run only.
    pub misses_during_run: f64,
    /// Per process name.
    pub per_process: BTreeMap<String, ProcCache>,
    /// Processes whose `/metrics` could not be read (e.g. killed); not in the sums.
    pub unreadable: Vec<String>,
}

/// `macula_dht_routing_hops`, summed over the processes: how far provider lookups climbed.
#[derive(Serialize, Debug, Default)]
pub struct HopsReport {
    /// Lookups observed.
    pub count: f64,
    /// Mean bridge levels climbed (0 = answered in the caller's cluster).
    pub mean: f64,
    /// Lookups per number of levels climbed (`"0"` … `"8"`, `"more"`).
    pub by_hops: BTreeMap<String, f64>,
}

/// The counters read from one process's `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Scraped {
    hits: f64,
    misses: f64,
    failovers: f64,
    hops_buckets: Vec<(f64, f64)>,
    hops_count: f64,
    hops_sum: f64,
}

/// Reads `/metrics` of every `(name, admin address)`; `None` for a process known to be gone or
/// one whose metrics could not be read. Blocking (plain HTTP, 2 s timeout per process).
pub fn scrape(targets: &[(String, Option<SocketAddr>)]) -> Vec<(String, Option<Scraped>)> {
    targets
        .iter()
        .map(|(name, admin)| {
            let scraped = admin
                .and_then(|a| spawn::http_get(a, "/metrics").ok())
                .filter(|(code, _)| *code == 200)
                .map(|(_, body)| parse(&body));
            (name.clone(), scraped)
        })
        .collect()
}

fn parse(body: &str) -> Scraped {
    let mut hops_buckets: Vec<(f64, f64)> =
        spawn::metric_samples(body, "macula_dht_routing_hops_bucket")
            .into_iter()
            .filter_map(|(labels, v)| {
                let le = labels.strip_prefix("le=\"")?.strip_suffix('"')?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, v))
            })
            .collect();
    hops_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Scraped {
        hits: spawn::metric_sum(body, "macula_escalation_cache_hits_total"),
        misses: spawn::metric_sum(body, "macula_escalation_cache_misses_total"),
        failovers: spawn::metric_sum(body, "macula_rpc_failovers_total"),
        hops_buckets,
        hops_count: spawn::metric_sum(body, "macula_dht_routing_hops_count"),
        hops_sum: spawn::metric_sum(body, "macula_dht_routing_hops_sum"),
    }
}

/// The cache report from the scrape at the clock's start (`before`) and after the run.
pub fn cache_report(
    before: &[(String, Option<Scraped>)],
    after: &[(String, Option<Scraped>)],
) -> CacheReport {
    let mut r = CacheReport::default();
    for (name, s) in after {
        let Some(s) = s else {
            r.unreadable.push(name.clone());
            continue;
        };
        let b = before
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, s)| s.clone())
            .unwrap_or_default();
        let p = ProcCache {
            hits: s.hits,
            misses: s.misses,
            hits_during_run: s.hits - b.hits,
            misses_during_run: s.misses - b.misses,
        };
        r.lookups_served_from_cache += p.hits;
        r.misses += p.misses;
        r.hits_during_run += p.hits_during_run;
        r.misses_during_run += p.misses_during_run;
        r.per_process.insert(name.clone(), p);
    }
    r
}

/// The routing-hops summary of the processes read after the run.
pub fn hops_report(after: &[(String, Option<Scraped>)]) -> HopsReport {
    let mut r = HopsReport::default();
    let mut sum = 0.0;
    for s in after.iter().filter_map(|(_, s)| s.as_ref()) {
        r.count += s.hops_count;
        sum += s.hops_sum;
        // Cumulative buckets → lookups per bucket.
        let mut below = 0.0;
        for &(le, cumulative) in &s.hops_buckets {
            let key = if le.is_finite() {
                format!("{le}")
            } else {
                "more".to_string()
            };
            *r.by_hops.entry(key).or_default() += cumulative - below;
            below = cumulative;
        }
    }
    r.by_hops.retain(|_, n| *n > 0.0);
    if r.count > 0.0 {
        r.mean = sum / r.count;
    }
    r
}

/// Sum of `macula_rpc_failovers_total` over the processes read.
pub fn failovers(after: &[(String, Option<Scraped>)]) -> f64 {
    after
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .map(|s| s.failovers)
        .sum()
}

/// The JSON report of `macula-loadtest rpc`.
#[derive(Serialize, Debug)]
pub struct Report {
    pub scenario: &'static str,
    pub spawned: bool,
    pub procedure: String,
    pub rate_target: u64,
    pub duration_s: u64,
    pub payload_bytes: usize,
    pub timeout_ms: u64,
    pub providers: usize,
    pub callers: usize,
    pub concurrency: usize,
    pub warmup: Warmup,
    pub calls: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub latency_us: Latency,
    pub calls_per_s: f64,
    pub ok_per_s: f64,
    /// Invocations of each provider's handler (warm-up included), in provider order.
    pub provider_invocations: Vec<u64>,
    pub kill: Option<KillReport>,
    /// `None` when no process's metrics were read (no `--spawn`, no `--admin-addr`).
    pub cache: Option<CacheReport>,
    pub routing_hops: Option<HopsReport>,
    /// Sum of `macula_rpc_failovers_total` over the processes read.
    pub failovers: Option<f64>,
}

impl Report {
    /// A few lines for a human.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let l = &self.latency_us;
        s += &format!(
            "rpc {}: {} callers → {} provider(s), target {} calls/s, {} s, {} B, timeout {} ms\n",
            self.procedure,
            self.callers,
            self.providers,
            self.rate_target,
            self.duration_s,
            self.payload_bytes,
            self.timeout_ms
        );
        s += &format!(
            "warm-up: {} calls ({} ok) in {:.1} s, errors {:?}\n",
            self.warmup.calls, self.warmup.ok, self.warmup.seconds, self.warmup.errors
        );
        s += &format!(
            "calls {}  ok {}  errors {:?}  {:.0} calls/s ({:.0} ok/s)\n",
            self.calls, self.ok, self.errors, self.calls_per_s, self.ok_per_s
        );
        s += &format!(
            "latency µs (ok calls): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        s += &format!("provider invocations: {:?}\n", self.provider_invocations);
        if let Some(k) = &self.kill {
            s += &format!(
                "killed {} at {:.1} s: failed calls before {}, in the next second {}, after {}; \
                 ok after the kill {}\n",
                k.node,
                k.at_s,
                k.errors_before,
                k.errors_first_second,
                k.errors_after_first_second,
                k.ok_after
            );
        }
        if let Some(c) = &self.cache {
            s += &format!(
                "lookup caches: {} served from cache, {} misses ({} / {} during the run)",
                c.lookups_served_from_cache, c.misses, c.hits_during_run, c.misses_during_run
            );
            if !c.unreadable.is_empty() {
                s += &format!("; unreadable: {}", c.unreadable.join(", "));
            }
            s += "\n";
            for (name, p) in &c.per_process {
                if p.hits > 0.0 || p.misses > 0.0 {
                    s += &format!("  {name}: {} hits, {} misses\n", p.hits, p.misses);
                }
            }
        }
        if let Some(h) = &self.routing_hops {
            s += &format!(
                "routing hops: {} lookups, mean {:.2}, {:?}\n",
                h.count, h.mean, h.by_hops
            );
        }
        if let Some(f) = self.failovers {
            s += &format!("failovers: {f}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use macula::escalation::Level;
    use macula::metrics::Metrics;

    /// The exposition text of a real registry with some lookups counted.
    fn body(hits: u64, misses: u64, hops: &[f64], failovers: u64) -> String {
        let m = Metrics::new();
        let street = m.cache.for_level(Level::Street);
        let cluster = m.cache.for_level(Level::Cluster);
        for i in 0..hits {
            if i % 2 == 0 { &street } else { &cluster }.hits.inc();
        }
        street.misses.inc_by(misses);
        for h in hops {
            m.rpc.routing_hops.observe(*h);
        }
        m.rpc.failovers_total.inc_by(failovers);
        m.encode_text()
    }

    #[test]
    fn metric_samples_reads_labelled_and_bare_samples_only_of_that_name() {
        let b = body(3, 1, &[], 0);
        let hits = spawn::metric_samples(&b, "macula_escalation_cache_hits_total");
        let mut labels: Vec<&str> = hits.iter().map(|(l, _)| l.as_str()).collect();
        labels.sort();
        assert_eq!(labels, [r#"level="cluster""#, r#"level="street""#]);
        assert_eq!(hits.iter().map(|(_, v)| v).sum::<f64>(), 3.0);
        assert_eq!(
            spawn::metric_samples(&b, "macula_rpc_failovers_total"),
            [(String::new(), 0.0)]
        );
        // A longer name sharing the prefix is not a sample of the shorter one.
        assert!(spawn::metric_samples(&b, "macula_escalation_cache").is_empty());
    }

    #[test]
    fn cache_report_sums_processes_and_counts_the_run_apart() {
        let before = vec![
            ("street-2".to_string(), Some(parse(&body(1, 1, &[], 0)))),
            ("node-b1".to_string(), Some(parse(&body(0, 1, &[], 0)))),
            ("node-a1".to_string(), Some(parse(&body(0, 0, &[], 0)))),
        ];
        let after = vec![
            ("street-2".to_string(), Some(parse(&body(5, 1, &[], 0)))),
            ("node-b1".to_string(), Some(parse(&body(2, 3, &[], 0)))),
            ("node-a1".to_string(), None),
        ];
        let r = cache_report(&before, &after);
        assert_eq!(r.lookups_served_from_cache, 7.0);
        assert_eq!(r.misses, 4.0);
        assert_eq!(r.hits_during_run, 6.0);
        assert_eq!(r.misses_during_run, 2.0);
        assert_eq!(r.per_process["street-2"].hits_during_run, 4.0);
        assert_eq!(r.unreadable, ["node-a1"]);
        assert!(!r.per_process.contains_key("node-a1"));
    }

    #[test]
    fn hops_report_turns_cumulative_buckets_into_counts_per_level() {
        let after = vec![
            (
                "node-b1".to_string(),
                Some(parse(&body(0, 0, &[0.0, 2.0, 2.0], 1))),
            ),
            (
                "node-b2".to_string(),
                Some(parse(&body(0, 0, &[1.0, 2.0], 2))),
            ),
            ("gone".to_string(), None),
        ];
        let h = hops_report(&after);
        assert_eq!(h.count, 5.0);
        assert!((h.mean - 7.0 / 5.0).abs() < 1e-9);
        let by: Vec<(&str, f64)> = h.by_hops.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(by, [("0", 1.0), ("1", 1.0), ("2", 3.0)]);
        assert_eq!(failovers(&after), 3.0);
    }

    #[test]
    fn call_stats_slot_calls_by_start_time_and_merge() {
        let base = Instant::now();
        let at = |ms: u64| base + Duration::from_millis(ms);
        let mut a = CallStats::new();
        a.record(base, at(50), Ok(Duration::from_micros(300)));
        a.record(base, at(1_050), Err("timeout"));
        let mut b = CallStats::new();
        b.record(base, at(1_150), Err("all_providers_failed"));
        b.record(base, at(2_500), Ok(Duration::from_micros(900)));
        b.record(base, at(2_600), Err(MISMATCH));
        a.merge(&b);
        assert_eq!((a.calls, a.ok), (5, 2));
        assert_eq!(a.error_map().values().sum::<u64>(), 3);
        assert_eq!(a.hist.len(), 2);
        assert_eq!(a.timeline[0], [1, 0]);
        assert_eq!(a.timeline[10], [0, 1]);
        assert_eq!(a.timeline[25], [1, 0]);

        let k = KillReport::new("node-a1".into(), Duration::from_millis(1_000), &a);
        assert_eq!(
            (
                k.errors_before,
                k.errors_first_second,
                k.errors_after_first_second,
                k.ok_after
            ),
            (0, 2, 1, 1)
        );
        let l = Latency::of(&a.hist);
        assert!(l.p50 >= 299 && l.max >= 899, "{l:?}");
        assert_eq!(Latency::of(&CallStats::new().hist).max, 0);
    }
}
