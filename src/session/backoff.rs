//! The redial delay every reconnecting link uses (the client library, a node's uplink, a
//! bridge's parent link): exponential backoff with up to 25 % jitter, so a fleet of nodes that
//! lost one bridge does not reconnect in lockstep (AWS Architecture Blog, "Exponential
//! Backoff and Jitter"; lessons from peers: reconnect storms).

use std::time::Duration;

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
}
