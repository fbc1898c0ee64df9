//! The redial delay every reconnecting link uses (the client library, a node's uplink, a
//! bridge's parent link): exponential backoff with up to 25 % jitter, so a fleet of nodes that
//! lost one bridge does not reconnect in lockstep (AWS Architecture Blog, "Exponential
//! Backoff and Jitter"; lessons from peers: reconnect storms).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Exponential backoff state: `initial`, doubled on each failure up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Backoff from `initial` to `max` (`limits.reconnect_initial_backoff_ms` /
    /// `reconnect_max_backoff_ms`); both at least 1 ms, `max` at least `initial`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }

    /// The delay before the next attempt: the current step plus a uniform jitter of up to a
    /// quarter of it; the step then doubles (capped at `max`).
    pub fn next_delay(&mut self) -> Duration {
        let step = self.current;
        let jitter = rand::random_range(0..=step.as_millis() as u64 / 4);
        self.current = (step * 2).min(self.max);
        step + Duration::from_millis(jitter)
    }

    /// Back to `initial` (a session was established).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// The redial schedule of many targets (a fleet's workers, a cluster's nodes): each target
/// has its own [`Backoff`], and is dialled at most once per step of it. Pure: time is passed
/// in. The caller bounds it ([`Schedule::retain`], [`Schedule::forget`]) by the targets it
/// still wants.
#[derive(Debug)]
pub struct Schedule<K> {
    initial: Duration,
    max: Duration,
    /// Per target: the earliest next attempt, and its backoff.
    next: HashMap<K, (Instant, Backoff)>,
}

impl<K: Hash + Eq> Schedule<K> {
    /// Every target starts at `initial` between attempts, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Schedule {
            initial,
            max,
            next: HashMap::new(),
        }
    }

    /// Whether `target` may be dialled at `now`; when it may, its next attempt is scheduled
    /// one backoff step later (the step doubles for the attempt after).
    pub fn try_dial(&mut self, target: K, now: Instant) -> bool {
        let (initial, max) = (self.initial, self.max);
        let (at, backoff) = self
            .next
            .entry(target)
            .or_insert_with(|| (now, Backoff::new(initial, max)));
        if now < *at {
            return false;
        }
        *at = now + backoff.next_delay();
        true
    }

    /// `target` linked: its next attempt (after the link is lost) is at once, from `initial`.
    pub fn forget(&mut self, target: &K) {
        self.next.remove(target);
    }

    /// Keeps only the targets `keep` still wants.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.next.retain(|k, _| keep(k));
    }

    /// Targets with a schedule.
    pub fn len(&self) -> usize {
        self.next.len()
    }

    /// Whether no target has a schedule.
    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_bounded_jitter_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        for step in [100, 200, 400, 500, 500] {
            let d = b.next_delay();
            assert!(
                d >= ms(step) && d <= ms(step + step / 4),
                "{d:?} for step {step}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= ms(125));
        let mut z = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(z.next_delay(), ms(1));
    }

    #[test]
    fn a_schedule_dials_each_target_once_per_step() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut s = Schedule::new(ms(100), ms(400));
        assert!(s.try_dial("a", t0), "first attempt at once");
        assert!(!s.try_dial("a", t0 + ms(99)), "not within the first step");
        assert!(s.try_dial("b", t0), "targets are independent");
        assert!(
            s.try_dial("a", t0 + ms(126)),
            "after the step and its jitter"
        );
        // The step doubled: 200 ms (+ up to 50 ms jitter) after the second attempt.
        assert!(!s.try_dial("a", t0 + ms(126 + 199)));
        assert!(s.try_dial("a", t0 + ms(126 + 251)));
        s.forget(&"a");
        assert!(s.try_dial("a", t0 + ms(378)), "forgotten: at once again");
        s.retain(|k| *k == "b");
        assert_eq!(s.len(), 1);
    }
}
