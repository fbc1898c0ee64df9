//! Which sessions to evict when the listener is full (pure: the caller samples and passes
//! the time).
//!
//! A session that completed `connect` and then sends nothing holds one of the listener's
//! `limits.max_connections` slots for as long as QUIC keep-alives keep it open: issue 12's
//! probe filled a node with such sessions from a few addresses, each within its per-source
//! bound, and locked every newcomer out. The accept loop therefore samples each open
//! connection's count of received STREAM frames (QUIC keep-alives are PING frames and do
//! not count) every [`SAMPLE_EVERY`]; a connection whose count has not moved for
//! `limits.idle_evict_after_ms` is *idle*. Only while the listener is nearly full (fewer
//! than [`headroom`] free slots) are idle sessions closed, the longest idle first, until
//! the headroom is back — so newcomers get in, an attacker must keep every session busy (and
//! so under the rate limits, `docs/AUTH.md`), and nothing is evicted on a listener with room.
//! A legitimate session idle that long (a quiet subscriber) may be evicted under such
//! pressure too; the client library reconnects it.

use std::collections::HashMap;
use std::time::Duration;

/// How often the accept loop samples the open connections.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Free slots the listener keeps for newcomers while it evicts: 1 % of `max_connections`,
/// at least 1.
pub fn headroom(max_connections: usize) -> usize {
    (max_connections / 100).max(1)
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// STREAM frames received at the last sample that changed.
    frames: u64,
    /// When that count last changed (or the connection opened).
    since: Duration,
}

/// The open connections' activity, by connection token.
#[derive(Debug, Default)]
pub struct IdleIndex {
    entries: HashMap<u64, Entry>,
}

impl IdleIndex {
    /// An empty index.
    pub fn new() -> IdleIndex {
        IdleIndex::default()
    }

    /// Records a sample of connection `id`: `frames` STREAM frames received so far, at `now`
    /// (any monotonic origin). A new id starts active.
    pub fn observe(&mut self, id: u64, frames: u64, now: Duration) {
        let e = self
            .entries
            .entry(id)
            .or_insert(Entry { frames, since: now });
        if e.frames != frames {
            *e = Entry { frames, since: now };
        }
    }

    /// Forgets connection `id` (it closed).
    pub fn remove(&mut self, id: u64) {
        self.entries.remove(&id);
    }

    /// Connections known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no connection is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Up to `n` connections idle for at least `idle_after` at `now`, the longest idle first.
    pub fn victims(&self, now: Duration, idle_after: Duration, n: usize) -> Vec<u64> {
        let mut idle: Vec<(Duration, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| now.saturating_sub(e.since) >= idle_after)
            .map(|(id, e)| (e.since, *id))
            .collect();
        idle.sort_unstable();
        idle.into_iter().take(n).map(|(_, id)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn only_connections_quiet_for_the_whole_window_are_victims_longest_first() {
        let mut ix = IdleIndex::new();
        ix.observe(1, 5, Duration::ZERO); // opened at 0, then silent
        ix.observe(2, 5, 10 * S); // opened at 10, then silent
        ix.observe(3, 5, Duration::ZERO); // busy: its count keeps moving
        for t in 1..=40 {
            ix.observe(1, 5, t * S);
            ix.observe(2, 5, t.max(10) * S);
            ix.observe(3, 5 + u64::from(t), t * S);
        }
        assert_eq!(ix.victims(40 * S, 30 * S, 10), vec![1, 2]);
        assert_eq!(ix.victims(40 * S, 35 * S, 10), vec![1]);
        assert_eq!(ix.victims(40 * S, 30 * S, 1), vec![1], "at most n");
        ix.remove(1);
        assert_eq!(ix.victims(40 * S, 30 * S, 10), vec![2]);
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn one_frame_makes_a_connection_active_again() {
        let mut ix = IdleIndex::new();
        ix.observe(7, 1, Duration::ZERO);
        assert_eq!(ix.victims(31 * S, 30 * S, 1), vec![7]);
        ix.observe(7, 2, 31 * S);
        assert!(ix.victims(40 * S, 30 * S, 1).is_empty());
        assert_eq!(ix.victims(61 * S, 30 * S, 1), vec![7]);
    }

    #[test]
    fn headroom_is_one_percent_and_at_least_one() {
        assert_eq!(headroom(10_000), 100);
        assert_eq!(headroom(42), 1);
        assert_eq!(headroom(1), 1);
    }
}
