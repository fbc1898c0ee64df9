//! [`LookupCache`]: the answers one bridge has seen, in a moka `future::Cache`.
//!
//! - **Key** = realm + DHT key. DHT keys are already realm-scoped ([`crate::dht::Id::scoped`]);
//!   keying by the realm too keeps tenants apart even for a key computed without it.
//! - **Single flight**: a miss runs the caller's `upstream` future through moka's
//!   `try_get_with`, so concurrent identical lookups cause one upstream query and all of them
//!   get its answer — or its error, which is not cached.
//! - **Per-entry TTL** by answer kind through moka's [`Expiry`]: `Found` lives
//!   [`CacheConfig::ttl`], `NotFound` [`CacheConfig::negative_ttl`].
//! - **Deterministic expiry**: moka expires by the real clock, which tests cannot move. Each
//!   entry therefore also records when it was inserted, read from an injectable [`Clock`], and
//!   a lookup treats an entry older than its TTL as a miss (and removes it) even if moka has
//!   not dropped it yet. With [`SystemClock`] both agree; with [`ManualClock`] tests advance
//!   time explicitly. moka's own TTL stays as the memory bound.
//! - **Size bound**: [`CacheConfig::max_entries`] entries (moka `max_capacity` without a
//!   weigher: one answer is small, a list of a few providers, so entries are the unit an
//!   operator reasons about). moka enforces it lazily, during its maintenance.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use moka::Expiry;

use super::metrics::{CacheMetrics, LevelMetrics};
use super::{Answer, CacheConfig, Level, LookupError, Source};
use crate::dht::Key;

/// A source of monotonic time for the cache's expiry check.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock ([`Instant::now`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told ([`ManualClock::advance`]): for tests and simulations.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset_nanos: AtomicU64,
}

impl ManualClock {
    /// A clock standing at the current real instant.
    pub fn new() -> Self {
        ManualClock {
            base: Instant::now(),
            offset_nanos: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .offset_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(nanos))
            });
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.offset_nanos.load(Ordering::Relaxed))
    }
}

/// The cache of one bridge: answers by (realm, key), for the TTLs of its [`Level`]. Cheap to
/// clone (clones share the entries).
#[derive(Clone)]
pub struct LookupCache {
    level: Level,
    config: CacheConfig,
    cache: Cache<CacheKey, Cached>,
    clock: Arc<dyn Clock>,
    metrics: LevelMetrics,
}

type CacheKey = (Arc<str>, Key);

/// A cached answer and the instant (of the cache's [`Clock`]) it was received.
#[derive(Clone, Debug)]
struct Cached {
    answer: Answer,
    inserted_at: Instant,
}

impl LookupCache {
    /// A cache for a bridge of `level` with `config`, counting into `metrics`, on the real
    /// clock.
    pub fn new(level: Level, config: CacheConfig, metrics: &CacheMetrics) -> Self {
        Self::with_clock(level, config, metrics, Arc::new(SystemClock))
    }

    /// Like [`LookupCache::new`] with the expiry check reading `clock`.
    pub fn with_clock(
        level: Level,
        config: CacheConfig,
        metrics: &CacheMetrics,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let metrics = metrics.for_level(level);
        let evictions = metrics.evictions.clone();
        let cache = Cache::builder()
            .name(level.as_str())
            .max_capacity(config.max_entries)
            .expire_after(TtlByAnswer {
                ttl: config.ttl,
                negative_ttl: config.negative_ttl,
            })
            .support_invalidation_closures()
            .eviction_listener(move |_key, _value, cause| {
                if matches!(cause, RemovalCause::Expired | RemovalCause::Size) {
                    evictions.inc();
                }
            })
            .build();
        LookupCache {
            level,
            config,
            cache,
            clock,
            metrics,
        }
    }

    /// The answer for `key` in `realm`: from the cache if a fresh entry is there, otherwise
    /// from `upstream` (the query to the parent level), whose answer is then cached —
    /// `Found` for [`CacheConfig::ttl`], `NotFound` for [`CacheConfig::negative_ttl`].
    ///
    /// Concurrent calls for the same realm and key run one `upstream` between them; the
    /// others wait for it and get its answer with [`Source::Cache`]. `upstream` is not called
    /// at all on a hit. If the call running `upstream` is cancelled, a waiting call runs its
    /// own. `upstream` must be bounded in time ([`super::ESCALATION_TIMEOUT`]): every waiter
    /// waits for it.
    ///
    /// Errors: whatever `upstream` returned, handed to every waiter and not cached (the next
    /// call queries again).
    pub async fn get_or_escalate<F, Fut>(
        &self,
        realm: Arc<str>,
        key: Key,
        upstream: F,
    ) -> Result<(Answer, Source), LookupError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Answer, LookupError>>,
    {
        let cache_key = (realm, key);
        if let Some(cached) = self.cache.get(&cache_key).await {
            if self.is_fresh(&cached, self.clock.now()) {
                self.metrics.hits.inc();
                if matches!(cached.answer, Answer::NotFound) {
                    self.metrics.negative_hits.inc();
                }
                return Ok((cached.answer, Source::Cache));
            }
            self.remove_if_stale(&cache_key).await;
        }
        self.metrics.misses.inc();
        let mut ran = false;
        let load = async {
            ran = true;
            self.metrics.upstream_queries.inc();
            match upstream().await {
                Ok(answer) => Ok(Cached {
                    answer: normalize(answer),
                    inserted_at: self.clock.now(),
                }),
                Err(e) => {
                    self.metrics.upstream_errors.inc();
                    Err(e)
                }
            }
        };
        let result = self.cache.try_get_with(cache_key, load).await;
        self.update_entries_gauge();
        match result {
            Ok(cached) => {
                let source = if ran { Source::Upstream } else { Source::Cache };
                Ok((cached.answer, source))
            }
            Err(e) => Err(Arc::unwrap_or_clone(e)),
        }
    }

    /// Drops every cached `Found` answer that lists the provider `node_id` (it is known to be
    /// gone), whatever the realm and key. Returns how many fresh entries listed it.
    ///
    /// Lookups stop seeing those entries at once; moka frees them during its maintenance
    /// (until then each read of an older entry also tests the pending predicate). An upstream
    /// query already in flight may still cache an answer listing the provider. Cost: one scan
    /// of the cache, O(entries).
    pub fn invalidate_provider(&self, node_id: &[u8; 32]) -> usize {
        let now = self.clock.now();
        let count = self
            .cache
            .iter()
            .filter(|(_, cached)| cached.answer.lists(node_id) && self.is_fresh(cached, now))
            .count();
        if count > 0 {
            let node_id = *node_id;
            self.cache
                .invalidate_entries_if(move |_, cached| cached.answer.lists(&node_id))
                .expect("invalidation closures are enabled in LookupCache::with_clock");
        }
        count
    }

    /// Drops the entry of `key` in `realm`, if any.
    pub async fn invalidate(&self, realm: Arc<str>, key: Key) {
        self.cache.invalidate(&(realm, key)).await;
        self.update_entries_gauge();
    }

    /// Runs moka's pending maintenance (evictions to the size bound, removal of expired and
    /// invalidated entries) now, then updates the entries gauge. moka also runs it on its own
    /// as lookups go by.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
        self.update_entries_gauge();
    }

    /// Entries held, as of moka's last maintenance (see [`LookupCache::run_pending_tasks`]).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The level this cache serves.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The settings this cache was built with.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The metrics of this cache's level.
    pub fn metrics(&self) -> &LevelMetrics {
        &self.metrics
    }

    fn ttl_of(&self, answer: &Answer) -> Duration {
        ttl_of(answer, self.config.ttl, self.config.negative_ttl)
    }

    fn is_fresh(&self, cached: &Cached, now: Instant) -> bool {
        now.saturating_duration_since(cached.inserted_at) < self.ttl_of(&cached.answer)
    }

    /// Removes the entry of `key` if it is still stale: a concurrent lookup may have replaced
    /// it with a fresh answer since we read it, which must stay.
    async fn remove_if_stale(&self, key: &CacheKey) {
        let now = self.clock.now();
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let stale = current.is_some_and(|e| !self.is_fresh(e.value(), now));
                std::future::ready(if stale { Op::Remove } else { Op::Nop })
            })
            .await;
        if matches!(result, CompResult::Removed(_)) {
            self.metrics.evictions.inc();
        }
    }

    fn update_entries_gauge(&self) {
        self.metrics
            .entries
            .set(i64::try_from(self.cache.entry_count()).unwrap_or(i64::MAX));
    }
}

impl fmt::Debug for LookupCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupCache")
            .field("level", &self.level)
            .field("config", &self.config)
            .field("entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

/// moka's per-entry expiry: the TTL of the answer kind, counted from insertion; reads do not
/// extend it, and answers are never updated in place.
struct TtlByAnswer {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<CacheKey, Cached> for TtlByAnswer {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Cached,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(ttl_of(&value.answer, self.ttl, self.negative_ttl))
    }
}

fn ttl_of(answer: &Answer, ttl: Duration, negative_ttl: Duration) -> Duration {
    match answer {
        Answer::Found(_) => ttl,
        Answer::NotFound => negative_ttl,
    }
}

/// An empty `Found` is a miss: cache it as `NotFound`, for the negative TTL.
fn normalize(answer: Answer) -> Answer {
    match answer {
        Answer::Found(providers) if providers.is_empty() => Answer::NotFound,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;

    use futures_util::future::join_all;
    use prometheus::Registry;
    use tokio::sync::watch;

    use super::*;
    use crate::dht::Id;
    use crate::escalation::Provider;

    const MS: Duration = Duration::from_millis(1);

    fn setup(level: Level, config: CacheConfig) -> (LookupCache, Arc<ManualClock>) {
        let metrics = CacheMetrics::new(&Registry::new()).expect("fresh registry");
        let clock = Arc::new(ManualClock::new());
        let cache = LookupCache::with_clock(level, config, &metrics, clock.clone());
        (cache, clock)
    }

    fn provider(n: u8) -> Provider {
        Provider {
            node_id: [n; 32],
            cluster: format!("cluster-{n}"),
            via: format!("street-{n}"),
        }
    }

    fn realm(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn key(name: &str) -> Key {
        Id::scoped("io.macula", name)
    }

    /// One lookup whose upstream answers `answer` and counts its calls in `calls`.
    async fn lookup(
        cache: &LookupCache,
        realm_name: &str,
        k: Key,
        calls: &AtomicUsize,
        answer: Answer,
    ) -> Result<(Answer, Source), LookupError> {
        cache
            .get_or_escalate(realm(realm_name), k, || async {
                calls.fetch_add(1, SeqCst);
                Ok(answer)
            })
            .await
    }

    #[tokio::test]
    async fn concurrent_identical_lookups_query_upstream_once() {
        let (cache, _clock) = setup(Level::Street, CacheConfig::for_level(Level::Street));
        let calls = AtomicUsize::new(0);
        let started = AtomicUsize::new(0);
        let (open, gate) = watch::channel(false);
        let k = key("svc.echo");
        let expected = Answer::found(vec![provider(1), provider(2)]);
        let lookups = (0..100).map(|_| async {
            started.fetch_add(1, SeqCst);
            cache
                .get_or_escalate(realm("io.macula"), k, || async {
                    calls.fetch_add(1, SeqCst);
                    // Hold the query open until all 100 lookups have started.
                    let mut gate = gate.clone();
                    gate.wait_for(|open| *open)
                        .await
                        .map_err(|_| LookupError::Upstream("gate dropped".into()))?;
                    Ok(Answer::found(vec![provider(1), provider(2)]))
                })
                .await
        });
        let release = async {
            while started.load(SeqCst) < 100 {
                tokio::task::yield_now().await;
            }
            open.send(true).expect("the query holds a receiver");
        };
        let (results, ()) = tokio::join!(join_all(lookups), release);

        assert_eq!(calls.load(SeqCst), 1, "one upstream query for 100 lookups");
        let mut upstream = 0;
        for r in results {
            let (answer, source) = r.expect("the query succeeded");
            assert_eq!(answer, expected);
            upstream += usize::from(source == Source::Upstream);
        }
        assert_eq!(upstream, 1, "exactly one call ran the query");

        // Second wave: served from the cache.
        for _ in 0..100 {
            let (answer, source) = lookup(&cache, "io.macula", k, &calls, Answer::NotFound)
                .await
                .expect("cached");
            assert_eq!((answer, source), (expected.clone(), Source::Cache));
        }
        assert_eq!(calls.load(SeqCst), 1);
        let m = cache.metrics();
        assert_eq!(m.upstream_queries.get(), 1);
        assert_eq!(m.misses.get(), 100);
        assert_eq!(m.hits.get(), 100);
        assert_eq!(m.negative_hits.get(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawned_lookups_share_one_query() {
        let (cache, _clock) = setup(Level::City, CacheConfig::for_level(Level::City));
        let calls = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let (open, gate) = watch::channel(false);
        let k = key("svc.spawned");
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (cache, calls, started, gate) =
                    (cache.clone(), calls.clone(), started.clone(), gate.clone());
                tokio::spawn(async move {
                    started.fetch_add(1, SeqCst);
                    cache
                        .get_or_escalate(realm("io.macula"), k, || async move {
                            calls.fetch_add(1, SeqCst);
                            let mut gate = gate;
                            gate.wait_for(|open| *open)
                                .await
                                .map_err(|_| LookupError::Upstream("gate dropped".into()))?;
                            Ok(Answer::found(vec![provider(3)]))
                        })
                        .await
                })
            })
            .collect();
        while started.load(SeqCst) < 100 {
            tokio::task::yield_now().await;
        }
        open.send(true).expect("the query holds a receiver");
        for t in tasks {
            let (answer, _) = t.await.expect("task ran").expect("query succeeded");
            assert!(answer.lists(&[3; 32]));
        }
        assert_eq!(calls.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn found_answers_live_for_the_level_ttl() {
        let (cache, clock) = setup(Level::Cluster, CacheConfig::for_level(Level::Cluster));
        let calls = AtomicUsize::new(0);
        let k = key("svc.ttl");
        let found = Answer::found(vec![provider(1)]);
        let ttl = Duration::from_secs(300);

        let (_, source) = lookup(&cache, "io.macula", k, &calls, found.clone())
            .await
            .expect("ok");
        assert_eq!(source, Source::Upstream);
        clock.advance(ttl - MS);
        let (answer, source) = lookup(&cache, "io.macula", k, &calls, Answer::NotFound)
            .await
            .expect("ok");
        assert_eq!((answer, source), (found.clone(), Source::Cache));
        assert_eq!(calls.load(SeqCst), 1);

        clock.advance(2 * MS); // ttl + 1 ms after insertion
        let (answer, source) = lookup(&cache, "io.macula", k, &calls, found.clone())
            .await
            .expect("ok");
        assert_eq!((answer, source), (found.clone(), Source::Upstream));
        assert_eq!(calls.load(SeqCst), 2);
        assert_eq!(
            cache.metrics().evictions.get(),
            1,
            "the stale entry was dropped"
        );

        // The fresh answer replaced the stale one and is served again.
        let (_, source) = lookup(&cache, "io.macula", k, &calls, found)
            .await
            .expect("ok");
        assert_eq!(source, Source::Cache);
        assert_eq!(calls.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn negative_answers_live_for_the_negative_ttl() {
        let (cache, clock) = setup(Level::Region, CacheConfig::for_level(Level::Region));
        let calls = AtomicUsize::new(0);
        let k = key("svc.nobody");

        let (answer, source) = lookup(&cache, "io.macula", k, &calls, Answer::NotFound)
            .await
            .expect("ok");
        assert_eq!((answer, source), (Answer::NotFound, Source::Upstream));
        clock.advance(Duration::from_secs(5) - MS);
        let (answer, source) = lookup(&cache, "io.macula", k, &calls, Answer::NotFound)
            .await
            .expect("ok");
        assert_eq!((answer, source), (Answer::NotFound, Source::Cache));
        assert_eq!(cache.metrics().negative_hits.get(), 1);

        clock.advance(2 * MS);
        let found = Answer::found(vec![provider(4)]);
        let (answer, source) = lookup(&cache, "io.macula", k, &calls, found.clone())
            .await
            .expect("ok");
        assert_eq!((answer, source), (found, Source::Upstream));
        assert_eq!(calls.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn empty_found_is_cached_as_negative() {
        let (cache, clock) = setup(Level::City, CacheConfig::for_level(Level::City));
        let calls = AtomicUsize::new(0);
        let k = key("svc.empty");
        let empty = Answer::Found(Vec::new().into());
        let (answer, _) = lookup(&cache, "io.macula", k, &calls, empty.clone())
            .await
            .expect("ok");
        assert_eq!(answer, Answer::NotFound);
        clock.advance(Duration::from_secs(5) + MS);
        let (_, source) = lookup(&cache, "io.macula", k, &calls, empty)
            .await
            .expect("ok");
        assert_eq!(source, Source::Upstream, "expired after the negative TTL");
    }

    #[tokio::test]
    async fn every_level_uses_its_default_ttl() {
        for level in Level::ALL {
            let (cache, clock) = setup(level, CacheConfig::for_level(level));
            let calls = AtomicUsize::new(0);
            let k = key(level.as_str());
            let found = Answer::found(vec![provider(1)]);
            lookup(&cache, "io.macula", k, &calls, found.clone())
                .await
                .expect("ok");
            clock.advance(level.default_ttl() - MS);
            let (_, source) = lookup(&cache, "io.macula", k, &calls, found.clone())
                .await
                .expect("ok");
            assert_eq!(source, Source::Cache, "{level}: fresh before its TTL");
            clock.advance(2 * MS);
            let (_, source) = lookup(&cache, "io.macula", k, &calls, found)
                .await
                .expect("ok");
            assert_eq!(source, Source::Upstream, "{level}: stale after its TTL");
        }
    }

    #[tokio::test]
    async fn upstream_errors_are_not_cached() {
        let (cache, _clock) = setup(Level::Street, CacheConfig::for_level(Level::Street));
        let calls = AtomicUsize::new(0);
        let k = key("svc.flaky");
        let err = cache
            .get_or_escalate(realm("io.macula"), k, || async {
                calls.fetch_add(1, SeqCst);
                Err(LookupError::Upstream("parent unreachable".into()))
            })
            .await
            .expect_err("the query failed");
        assert_eq!(err, LookupError::Upstream("parent unreachable".into()));
        let (answer, source) = lookup(
            &cache,
            "io.macula",
            k,
            &calls,
            Answer::found(vec![provider(5)]),
        )
        .await
        .expect("second query succeeds");
        assert_eq!(source, Source::Upstream);
        assert!(answer.lists(&[5; 32]));
        assert_eq!(calls.load(SeqCst), 2);
        assert_eq!(cache.metrics().upstream_errors.get(), 1);
        assert_eq!(cache.metrics().upstream_queries.get(), 2);
    }

    #[tokio::test]
    async fn one_failed_query_fails_every_waiter() {
        let (cache, _clock) = setup(Level::Street, CacheConfig::for_level(Level::Street));
        let calls = AtomicUsize::new(0);
        let started = AtomicUsize::new(0);
        let (open, gate) = watch::channel(false);
        let k = key("svc.down");
        let lookups = (0..10).map(|_| async {
            started.fetch_add(1, SeqCst);
            cache
                .get_or_escalate(realm("io.macula"), k, || async {
                    calls.fetch_add(1, SeqCst);
                    let mut gate = gate.clone();
                    let _ = gate.wait_for(|open| *open).await;
                    Err(LookupError::Timeout)
                })
                .await
        });
        let release = async {
            while started.load(SeqCst) < 10 {
                tokio::task::yield_now().await;
            }
            open.send(true).expect("the query holds a receiver");
        };
        let (results, ()) = tokio::join!(join_all(lookups), release);
        assert!(results.iter().all(|r| r == &Err(LookupError::Timeout)));
        assert_eq!(calls.load(SeqCst), 1);
        assert_eq!(cache.metrics().upstream_errors.get(), 1);
    }

    #[tokio::test]
    async fn invalidate_provider_drops_only_answers_listing_it() {
        let (cache, _clock) = setup(Level::City, CacheConfig::for_level(Level::City));
        let calls = AtomicUsize::new(0);
        let entries = [
            ("a", Answer::found(vec![provider(1)])),
            ("b", Answer::found(vec![provider(2), provider(1)])),
            ("c", Answer::found(vec![provider(2)])),
            ("d", Answer::NotFound),
        ];
        for (name, answer) in &entries {
            lookup(&cache, "io.macula", key(name), &calls, answer.clone())
                .await
                .expect("ok");
        }
        // The same provider under another realm counts too.
        lookup(
            &cache,
            "com.example",
            key("a"),
            &calls,
            entries[0].1.clone(),
        )
        .await
        .expect("ok");
        assert_eq!(calls.load(SeqCst), 5);

        assert_eq!(cache.invalidate_provider(&[1; 32]), 3);
        assert_eq!(cache.invalidate_provider(&[9; 32]), 0);

        for (name, answer) in &entries {
            let (_, source) = lookup(&cache, "io.macula", key(name), &calls, answer.clone())
                .await
                .expect("ok");
            let listed_gone = answer.lists(&[1; 32]);
            let expected = if listed_gone {
                Source::Upstream
            } else {
                Source::Cache
            };
            assert_eq!(source, expected, "entry {name}");
        }
        cache.run_pending_tasks().await;
        assert_eq!(
            cache.entry_count(),
            4,
            "a, b reloaded; c, d kept; other realm gone"
        );
    }

    #[tokio::test]
    async fn invalidate_provider_counts_only_fresh_entries() {
        let (cache, clock) = setup(Level::Cluster, CacheConfig::for_level(Level::Cluster));
        let calls = AtomicUsize::new(0);
        let found = Answer::found(vec![provider(1)]);
        lookup(&cache, "io.macula", key("old"), &calls, found.clone())
            .await
            .expect("ok");
        clock.advance(Duration::from_secs(300)); // "old" is now stale
        lookup(&cache, "io.macula", key("new"), &calls, found)
            .await
            .expect("ok");
        assert_eq!(cache.invalidate_provider(&[1; 32]), 1);
    }

    #[tokio::test]
    async fn invalidate_drops_one_entry() {
        let (cache, _clock) = setup(Level::City, CacheConfig::for_level(Level::City));
        let calls = AtomicUsize::new(0);
        let found = Answer::found(vec![provider(1)]);
        for name in ["x", "y"] {
            lookup(&cache, "io.macula", key(name), &calls, found.clone())
                .await
                .expect("ok");
        }
        cache.invalidate(realm("io.macula"), key("x")).await;
        let (_, x) = lookup(&cache, "io.macula", key("x"), &calls, found.clone())
            .await
            .expect("ok");
        let (_, y) = lookup(&cache, "io.macula", key("y"), &calls, found)
            .await
            .expect("ok");
        assert_eq!((x, y), (Source::Upstream, Source::Cache));
    }

    #[tokio::test]
    async fn size_bound_holds_after_maintenance() {
        let config = CacheConfig {
            max_entries: 100,
            ..CacheConfig::for_level(Level::Street)
        };
        let (cache, _clock) = setup(Level::Street, config);
        let calls = AtomicUsize::new(0);
        for i in 0..150 {
            lookup(
                &cache,
                "io.macula",
                key(&format!("svc.{i}")),
                &calls,
                Answer::found(vec![provider(1)]),
            )
            .await
            .expect("ok");
        }
        cache.run_pending_tasks().await;
        let held = cache.entry_count();
        assert!(held <= 100, "held {held} entries");
        assert_eq!(cache.metrics().evictions.get(), 150 - held);
        assert_eq!(cache.metrics().entries.get(), held as i64);
    }

    #[tokio::test]
    async fn realms_are_separate_entries() {
        let (cache, _clock) = setup(Level::Street, CacheConfig::for_level(Level::Street));
        let calls = AtomicUsize::new(0);
        let k = key("svc.shared-name");
        let (a, sa) = lookup(
            &cache,
            "io.macula",
            k,
            &calls,
            Answer::found(vec![provider(1)]),
        )
        .await
        .expect("ok");
        let (b, sb) = lookup(&cache, "com.example", k, &calls, Answer::NotFound)
            .await
            .expect("ok");
        assert_eq!((sa, sb), (Source::Upstream, Source::Upstream));
        assert_ne!(a, b);
        let (a2, _) = lookup(&cache, "io.macula", k, &calls, Answer::NotFound)
            .await
            .expect("ok");
        assert_eq!(a2, a);
        assert_eq!(calls.load(SeqCst), 2);
    }

    #[test]
    fn lookups_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let (cache, _clock) = setup(Level::Street, CacheConfig::for_level(Level::Street));
        let fut = cache.get_or_escalate(realm("io.macula"), key("s"), || async {
            Ok(Answer::NotFound)
        });
        assert_send(&fut);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_secs(3));
        assert_eq!(clock.now() - t0, Duration::from_secs(3));
    }
}
