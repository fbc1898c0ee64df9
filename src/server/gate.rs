//! Admission of QUIC handshakes (pure: no sockets, no clock): what the accept loop does with
//! each incoming connection attempt, before any handshake work is spent on it.
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
//! The per-source table holds only sources with a slot, so it is bounded by
//! `max_connections` entries.

use std::collections::HashMap;
use std::net::IpAddr;

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
}

/// The accept loop's counts.
#[derive(Debug)]
pub struct Gate {
    limits: GateLimits,
    in_progress: usize,
    open: usize,
    per_source: HashMap<IpAddr, usize>,
}

impl Gate {
    /// An empty gate.
    pub fn new(limits: GateLimits) -> Gate {
        Gate {
            limits,
            in_progress: 0,
            open: 0,
            per_source: HashMap::new(),
        }
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
        })
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
