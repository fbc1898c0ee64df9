//! Admission of QUIC handshakes (pure: no sockets; the handshake pacing reads tokio's
//! clock): what the accept loop does with each incoming connection attempt, before any
//! handshake work is spent on it.
//!
//! Every attempt counts against the process's bound from the moment it is accepted — the
//! handshakes in progress as well as the established connections — so a flood of half-open
//! Initials cannot hold more than `max_connections` slots. Per source address, open and
//! in-progress connections together are bounded by `max_per_source` (one process on one
//! address cannot fill the listener; NATS and libp2p's relay keep the same per-peer bound).
//! When more than `retry_above` handshakes are in progress, an attempt whose source address
//! is not yet validated gets a QUIC Retry (RFC 9000 §8.1): a spoofed source never answers
//! it, so a flood from forged addresses costs one stateless packet each.
//!
//! Per source address, new attempts are also paced: at most `handshakes_per_source_per_sec`
//! a second after a burst of `max_per_source` (GCRA, the `governor` crate, on tokio's clock),
//! so one host cannot spend the listener's CPU on handshakes it opens and drops again; over
//! the rate an attempt is refused (`reason="handshake_rate"`). A NAT whose clients all
//! reconnect at once fits in the burst.
//!
//! The per-source table holds only sources with a slot, so it is bounded by
//! `max_connections` entries. The rate table holds sources that attempted recently (their
//! bucket not yet full again), at most [`MAX_RATE_SOURCES`]; when full even after forgetting
//! the refilled ones, an unvalidated source gets a Retry (a forged one never comes back) and a
//! validated one passes unpaced.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;

use crate::rate::TokioClock;

/// Most sources the handshake-rate table tracks at once.
pub const MAX_RATE_SOURCES: usize = 65_536;

type SourceLimiter =
    governor::RateLimiter<IpAddr, HashMapStateStore<IpAddr>, TokioClock, NoOpMiddleware<Nanos>>;

/// What to do with one incoming attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go on with the handshake (a slot is taken: call [`Gate::established`] or
    /// [`Gate::failed`], then [`Gate::closed`] for an established one).
    Accept,
    /// Answer with a Retry packet (no slot taken).
    Retry,
    /// Refuse it (no slot taken); the reason is the `macula_connections_rejected_total`
    /// label.
    Refuse(&'static str),
}

/// The bounds (from `limits.*`).
#[derive(Debug, Clone, Copy)]
pub struct GateLimits {
    /// Open plus in-progress connections (`limits.max_connections`).
    pub max_connections: usize,
    /// Open plus in-progress connections per source address
    /// (`limits.max_connections_per_source`).
    pub max_per_source: usize,
    /// In-progress handshakes beyond which unvalidated sources get a Retry
    /// (`limits.handshake_retry_above`).
    pub retry_above: usize,
    /// New attempts per second from one source address, after a burst of `max_per_source`
    /// (`limits.handshakes_per_source_per_sec`; 0: unpaced).
    pub handshakes_per_source_per_sec: u32,
    /// While the listener is nearly full, sessions idle this long are closed
    /// (`limits.idle_evict_after_ms`, [`super::idle`]); `None`: never.
    pub idle_evict_after: Option<std::time::Duration>,
}

impl GateLimits {
    /// The gate's bounds from `limits.*`.
    pub fn of(l: &crate::config::LimitsConfig) -> GateLimits {
        GateLimits {
            max_connections: l.max_connections,
            max_per_source: l.max_connections_per_source,
            retry_above: l.handshake_retry_above,
            handshakes_per_source_per_sec: l.handshakes_per_source_per_sec,
            idle_evict_after: (l.idle_evict_after_ms > 0)
                .then(|| std::time::Duration::from_millis(l.idle_evict_after_ms)),
        }
    }
}

/// The accept loop's counts.
pub struct Gate {
    limits: GateLimits,
    in_progress: usize,
    open: usize,
    per_source: HashMap<IpAddr, usize>,
    /// Handshake pacing per source (`None`: unpaced).
    rate: Option<SourceLimiter>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("limits", &self.limits)
            .field("in_progress", &self.in_progress)
            .field("open", &self.open)
            .field("sources", &self.per_source.len())
            .field("paced_sources", &self.paced_sources())
            .finish()
    }
}

impl Gate {
    /// An empty gate.
    pub fn new(limits: GateLimits) -> Gate {
        let rate = NonZeroU32::new(limits.handshakes_per_source_per_sec).map(|per_sec| {
            let burst = u32::try_from(limits.max_per_source).unwrap_or(u32::MAX);
            let burst = NonZeroU32::new(burst)
                .unwrap_or(NonZeroU32::MIN)
                .max(per_sec);
            let quota = governor::Quota::per_second(per_sec).allow_burst(burst);
            governor::RateLimiter::new(quota, HashMapStateStore::default(), TokioClock)
        });
        Gate {
            limits,
            in_progress: 0,
            open: 0,
            per_source: HashMap::new(),
            rate,
        }
    }

    /// Paces attempts per source: `None` to go on, or the decision for an attempt over its
    /// source's rate (refused), or for one the full table cannot track (see the module).
    fn pace(&self, source: IpAddr, validated: bool) -> Option<Decision> {
        let rate = self.rate.as_ref()?;
        if rate.len() >= MAX_RATE_SOURCES {
            rate.retain_recent();
            if rate.len() >= MAX_RATE_SOURCES {
                return (!validated).then_some(Decision::Retry);
            }
        }
        rate.check_key(&source)
            .err()
            .map(|_| Decision::Refuse("handshake_rate"))
    }

    /// Sources the handshake-rate table tracks.
    pub fn paced_sources(&self) -> usize {
        self.rate.as_ref().map_or(0, |r| r.len())
    }

    /// An attempt from `source`; `validated` when its address was validated already (it
    /// answered a Retry).
    pub fn incoming(&mut self, source: IpAddr, validated: bool) -> Decision {
        if self.in_progress + self.open >= self.limits.max_connections {
            return Decision::Refuse("max_connections");
        }
        let held = self.per_source.get(&source).copied().unwrap_or(0);
        if held >= self.limits.max_per_source {
            return Decision::Refuse("per_source");
        }
        if let Some(d) = self.pace(source, validated) {
            return d;
        }
        if !validated && self.in_progress >= self.limits.retry_above {
            return Decision::Retry;
        }
        self.in_progress += 1;
        *self.per_source.entry(source).or_insert(0) += 1;
        Decision::Accept
    }

    /// An accepted attempt's handshake completed: it is an open connection now.
    pub fn established(&mut self) {
        self.in_progress = self.in_progress.saturating_sub(1);
        self.open += 1;
    }

    /// An accepted attempt's handshake failed or timed out: its slot is free.
    pub fn failed(&mut self, source: IpAddr) {
        self.in_progress = self.in_progress.saturating_sub(1);
        self.release(source);
    }

    /// An established connection from `source` ended.
    pub fn closed(&mut self, source: IpAddr) {
        self.open = self.open.saturating_sub(1);
        self.release(source);
    }

    fn release(&mut self, source: IpAddr) {
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// Slots free: `max_connections` minus open and in-progress connections.
    pub fn free(&self) -> usize {
        (self.limits.max_connections).saturating_sub(self.in_progress + self.open)
    }

    /// Handshakes in progress.
    pub fn in_progress(&self) -> usize {
        self.in_progress
    }

    /// Sources holding a slot (the table's size).
    pub fn sources(&self) -> usize {
        self.per_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn gate(max: usize, per: usize, retry: usize) -> Gate {
        Gate::new(GateLimits {
            max_connections: max,
            max_per_source: per,
            retry_above: retry,
            handshakes_per_source_per_sec: 0,
            idle_evict_after: None,
        })
    }

    fn paced(per_source: usize, per_sec: u32) -> Gate {
        Gate::new(GateLimits {
            max_connections: 1_000_000,
            max_per_source: per_source,
            retry_above: 1_000_000,
            handshakes_per_source_per_sec: per_sec,
            idle_evict_after: None,
        })
    }

    /// An attempt that is accepted and whose handshake fails at once (open and drop).
    fn churn(g: &mut Gate, source: IpAddr) -> Decision {
        let d = g.incoming(source, true);
        if d == Decision::Accept {
            g.failed(source);
        }
        d
    }

    #[tokio::test(start_paused = true)]
    async fn one_source_opening_and_dropping_connections_is_paced_after_its_burst() {
        let mut g = paced(200, 100);
        for i in 0..200 {
            assert_eq!(
                churn(&mut g, ip(1)),
                Decision::Accept,
                "attempt {i}: the burst"
            );
        }
        assert_eq!(churn(&mut g, ip(1)), Decision::Refuse("handshake_rate"));
        assert_eq!(
            churn(&mut g, ip(2)),
            Decision::Accept,
            "another source is not paced"
        );
        // 100 a second: one more every 10 ms.
        tokio::time::advance(std::time::Duration::from_millis(10)).await;
        assert_eq!(churn(&mut g, ip(1)), Decision::Accept);
        assert_eq!(churn(&mut g, ip(1)), Decision::Refuse("handshake_rate"));
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let back = (0..200).filter(|_| churn(&mut g, ip(1)) == Decision::Accept);
        assert_eq!(back.count(), 100, "a second refills 100");
    }

    #[tokio::test(start_paused = true)]
    async fn unpaced_when_the_rate_is_zero() {
        let mut g = paced(10, 0);
        for _ in 0..10_000 {
            assert_eq!(churn(&mut g, ip(1)), Decision::Accept);
        }
        assert_eq!(g.paced_sources(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_table_stays_bounded_under_many_sources() {
        let mut g = paced(1000, 100);
        let src = |i: u32| IpAddr::from((0x0a00_0000 + i).to_be_bytes());
        let n = MAX_RATE_SOURCES as u32 + 5_000;
        // Forged sources, all at once: past the table's bound they get a Retry (stateless).
        let mut retried = 0;
        for i in 0..n {
            if g.incoming(src(i), false) == Decision::Retry {
                retried += 1;
            } else {
                g.failed(src(i));
            }
        }
        assert!(g.paced_sources() <= MAX_RATE_SOURCES);
        assert_eq!(retried, 5_000);
        // Once their buckets have refilled they are forgotten and new sources are tracked.
        tokio::time::advance(std::time::Duration::from_secs(11)).await;
        assert_eq!(g.incoming(src(n + 1), false), Decision::Accept);
        assert!(g.paced_sources() < 10, "{}", g.paced_sources());
    }

    #[test]
    fn half_open_handshakes_count_against_the_bound() {
        let mut g = gate(3, 10, 100);
        for _ in 0..3 {
            assert_eq!(g.incoming(ip(1), false), Decision::Accept);
        }
        // Three handshakes in progress, none finished: the fourth is refused.
        assert_eq!(
            g.incoming(ip(2), false),
            Decision::Refuse("max_connections")
        );
        g.failed(ip(1));
        assert_eq!(g.incoming(ip(2), false), Decision::Accept);
    }

    #[test]
    fn one_source_cannot_take_every_slot() {
        let mut g = gate(100, 2, 100);
        assert_eq!(g.incoming(ip(1), false), Decision::Accept);
        g.established();
        assert_eq!(g.incoming(ip(1), false), Decision::Accept);
        assert_eq!(g.incoming(ip(1), true), Decision::Refuse("per_source"));
        assert_eq!(
            g.incoming(ip(2), false),
            Decision::Accept,
            "others still get in"
        );
        g.closed(ip(1));
        assert_eq!(g.incoming(ip(1), false), Decision::Accept);
    }

    #[test]
    fn under_a_flood_unvalidated_sources_get_a_retry() {
        let mut g = gate(100, 100, 2);
        assert_eq!(g.incoming(ip(1), false), Decision::Accept);
        assert_eq!(g.incoming(ip(2), false), Decision::Accept);
        assert_eq!(g.incoming(ip(3), false), Decision::Retry);
        assert_eq!(
            g.incoming(ip(3), true),
            Decision::Accept,
            "validated: goes on"
        );
        assert_eq!(g.in_progress(), 3);
        g.established();
        g.established();
        g.established();
        assert_eq!(g.incoming(ip(4), false), Decision::Accept, "calm again");
    }

    proptest! {
        /// Whatever the order of events, the counts never exceed the bounds and the table
        /// holds exactly the sources with a slot.
        #[test]
        fn the_bounds_hold(events in proptest::collection::vec((0u8..6, 0u8..8, any::<bool>()), 0..400)) {
            let mut g = gate(8, 3, 4);
            let mut pending: Vec<IpAddr> = Vec::new();
            let mut open: Vec<IpAddr> = Vec::new();
            for (op, who, validated) in events {
                match op {
                    0 | 1 => {
                        if g.incoming(ip(who), validated) == Decision::Accept {
                            pending.push(ip(who));
                        }
                    }
                    2 => if let Some(s) = pending.pop() { g.established(); open.push(s); },
                    3 => if let Some(s) = pending.pop() { g.failed(s); },
                    _ => if let Some(s) = open.pop() { g.closed(s); },
                }
                prop_assert!(pending.len() + open.len() <= 8);
                prop_assert_eq!(g.in_progress(), pending.len());
                let mut per: HashMap<IpAddr, usize> = HashMap::new();
                for s in pending.iter().chain(open.iter()) {
                    *per.entry(*s).or_default() += 1;
                }
                prop_assert!(per.values().all(|n| *n <= 3));
                prop_assert_eq!(g.sources(), per.len());
            }
        }
    }
}
