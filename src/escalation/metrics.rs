//! Prometheus metrics of the escalation lookup caches.
//!
//! One [`CacheMetrics`] per registry; each [`super::LookupCache`] resolves the children of its
//! own level once ([`CacheMetrics::for_level`]), so the lookup path does no label hashing and a
//! process running caches of several levels shares the metric families. The only label is
//! `level`, one of the eight [`Level`] names (STYLE 8: never realms, keys or node ids).

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::Level;

/// The metric families of the escalation caches, registered in one [`Registry`].
///
/// Every call to [`super::LookupCache::get_or_escalate`] counts exactly one hit or one miss,
/// so `hits + misses = lookups`, and `misses − upstream_queries` is the number of lookups
/// that single-flight loading coalesced onto another call's query.
#[derive(Clone, Debug)]
pub struct CacheMetrics {
    /// `macula_escalation_cache_hits_total{level}`: lookups answered from a fresh cached entry
    /// (positive or negative).
    pub hits_total: IntCounterVec,
    /// `macula_escalation_cache_misses_total{level}`: lookups that found no fresh entry and
    /// ran, or waited for, an upstream query.
    pub misses_total: IntCounterVec,
    /// `macula_escalation_cache_negative_hits_total{level}`: the hits that returned a cached
    /// `NotFound` (a subset of `hits_total`).
    pub negative_hits_total: IntCounterVec,
    /// `macula_escalation_cache_evictions_total{level}`: entries dropped because they expired
    /// (by moka's clock or found stale by the cache's own clock) or to keep the size bound.
    /// Explicit invalidations are not counted.
    pub evictions_total: IntCounterVec,
    /// `macula_escalation_upstream_queries_total{level}`: queries sent to the parent level.
    pub upstream_queries_total: IntCounterVec,
    /// `macula_escalation_upstream_errors_total{level}`: upstream queries that failed (timeout,
    /// loop, parent error); counted once per query, not per coalesced waiter.
    pub upstream_errors_total: IntCounterVec,
    /// `macula_escalation_cache_entries{level}`: entries held, as moka last counted them
    /// (updated after every miss, `invalidate` and `run_pending_tasks`; moka counts lazily,
    /// so it may lag by its pending maintenance).
    pub entries: IntGaugeVec,
}

/// The children of [`CacheMetrics`] for one level, resolved once.
#[derive(Clone, Debug)]
pub struct LevelMetrics {
    /// See [`CacheMetrics::hits_total`].
    pub hits: IntCounter,
    /// See [`CacheMetrics::misses_total`].
    pub misses: IntCounter,
    /// See [`CacheMetrics::negative_hits_total`].
    pub negative_hits: IntCounter,
    /// See [`CacheMetrics::evictions_total`].
    pub evictions: IntCounter,
    /// See [`CacheMetrics::upstream_queries_total`].
    pub upstream_queries: IntCounter,
    /// See [`CacheMetrics::upstream_errors_total`].
    pub upstream_errors: IntCounter,
    /// See [`CacheMetrics::entries`].
    pub entries: IntGauge,
}

impl CacheMetrics {
    /// Creates the families and registers them in `registry`.
    ///
    /// Errors: [`prometheus::Error::AlreadyReg`] when `registry` already holds them (create one
    /// `CacheMetrics` per registry and share it).
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            let vec = IntCounterVec::new(Opts::new(name, help), &["level"])?;
            registry.register(Box::new(vec.clone()))?;
            Ok(vec)
        };
        let hits_total = counter(
            "macula_escalation_cache_hits_total",
            "Lookups answered from the escalation cache, by bridge level.",
        )?;
        let misses_total = counter(
            "macula_escalation_cache_misses_total",
            "Lookups that found no fresh cache entry, by bridge level.",
        )?;
        let negative_hits_total = counter(
            "macula_escalation_cache_negative_hits_total",
            "Lookups answered from a cached NotFound, by bridge level.",
        )?;
        let evictions_total = counter(
            "macula_escalation_cache_evictions_total",
            "Cache entries dropped on expiry or to keep the size bound, by bridge level.",
        )?;
        let upstream_queries_total = counter(
            "macula_escalation_upstream_queries_total",
            "Lookups escalated to the parent level, by bridge level.",
        )?;
        let upstream_errors_total = counter(
            "macula_escalation_upstream_errors_total",
            "Escalated lookups that failed, by bridge level.",
        )?;
        let entries = IntGaugeVec::new(
            Opts::new(
                "macula_escalation_cache_entries",
                "Entries held by the escalation cache, by bridge level.",
            ),
            &["level"],
        )?;
        registry.register(Box::new(entries.clone()))?;
        Ok(CacheMetrics {
            hits_total,
            misses_total,
            negative_hits_total,
            evictions_total,
            upstream_queries_total,
            upstream_errors_total,
            entries,
        })
    }

    /// The children labelled with `level` (created at 0 if new).
    pub fn for_level(&self, level: Level) -> LevelMetrics {
        let l = [level.as_str()];
        LevelMetrics {
            hits: self.hits_total.with_label_values(&l),
            misses: self.misses_total.with_label_values(&l),
            negative_hits: self.negative_hits_total.with_label_values(&l),
            evictions: self.evictions_total.with_label_values(&l),
            upstream_queries: self.upstream_queries_total.with_label_values(&l),
            upstream_errors: self.upstream_errors_total.with_label_values(&l),
            entries: self.entries.with_label_values(&l),
        }
    }
}
