//! Hybrid logical clock (Kulkarni, Demirbas, Madappa, Avva, Leone, "Logical Physical
//! Clocks", OPODIS 2014): a timestamp close to wall time that still respects causality,
//! used to order [`super::LwwRegister`] writes.

use super::CrdtError;

/// Largest accepted lead of a remote timestamp over the local wall clock: 60,000 ms.
/// A write or gossip value stamped further in the future is refused with
/// [`CrdtError::ClockSkew`] (otherwise one bad clock would win every LWW race for as long
/// as it is ahead).
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;

/// A hybrid-logical-clock timestamp: wall-clock ms since the Unix epoch plus a logical
/// counter that breaks ties within one millisecond. Ordered by `(wall_ms, logical)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc {
    /// Physical part: ms since the Unix epoch.
    pub wall_ms: u64,
    /// Logical part.
    pub logical: u32,
}

/// One replica's HLC generator. Pure: callers pass the current wall clock.
#[derive(Debug, Clone, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// A clock that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// A timestamp for a local event at wall time `now_ms`: greater than every timestamp
    /// issued or observed before.
    ///
    /// Rule: `l' = max(last.wall_ms, now_ms)`; the logical part is `last.logical + 1` when
    /// `l' == last.wall_ms`, else 0. Should the logical part overflow u32, the wall part is
    /// advanced by 1 ms instead (never happens with sane clocks).
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        let wall = self.last.wall_ms.max(now_ms);
        self.last = if wall == self.last.wall_ms {
            bump(wall, self.last.logical)
        } else {
            Hlc {
                wall_ms: wall,
                logical: 0,
            }
        };
        self.last
    }
    /// Takes in a remote timestamp (HLC receive rule) so later ticks exceed it.
    ///
    /// Errors: [`CrdtError::ClockSkew`] when `remote.wall_ms > now_ms + MAX_CLOCK_SKEW_MS`;
    /// the clock is then left unchanged.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<(), CrdtError> {
        if remote.wall_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(CrdtError::ClockSkew {
                remote_ms: remote.wall_ms,
                ahead_ms: remote.wall_ms - now_ms,
            });
        }
        let last = self.last;
        let wall = last.wall_ms.max(remote.wall_ms).max(now_ms);
        self.last = if wall == last.wall_ms && wall == remote.wall_ms {
            bump(wall, last.logical.max(remote.logical))
        } else if wall == last.wall_ms {
            bump(wall, last.logical)
        } else if wall == remote.wall_ms {
            bump(wall, remote.logical)
        } else {
            Hlc {
                wall_ms: wall,
                logical: 0,
            }
        };
        Ok(())
    }
    /// The last timestamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }
}

/// The timestamp right after `(wall_ms, logical)`.
fn bump(wall_ms: u64, logical: u32) -> Hlc {
    match logical.checked_add(1) {
        Some(logical) => Hlc { wall_ms, logical },
        None => Hlc {
            wall_ms: wall_ms.saturating_add(1),
            logical: 0,
        },
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn tick_and_observe() {
        let mut c = HlcClock::new();
        let t1 = c.tick(100);
        assert_eq!(
            t1,
            Hlc {
                wall_ms: 100,
                logical: 0
            }
        );
        let t2 = c.tick(90); // wall clock went back
        assert_eq!(
            t2,
            Hlc {
                wall_ms: 100,
                logical: 1
            }
        );
        c.observe(
            Hlc {
                wall_ms: 150,
                logical: 7,
            },
            120,
        )
        .unwrap();
        assert_eq!(
            c.last(),
            Hlc {
                wall_ms: 150,
                logical: 8
            }
        );
        assert!(
            c.tick(120)
                > Hlc {
                    wall_ms: 150,
                    logical: 8
                }
        );
        let before = c.last();
        let err = c
            .observe(
                Hlc {
                    wall_ms: 200 + MAX_CLOCK_SKEW_MS + 1,
                    logical: 0,
                },
                200,
            )
            .unwrap_err();
        assert_eq!(
            err,
            CrdtError::ClockSkew {
                remote_ms: 200 + MAX_CLOCK_SKEW_MS + 1,
                ahead_ms: MAX_CLOCK_SKEW_MS + 1
            }
        );
        assert_eq!(c.last(), before);
        c.observe(
            Hlc {
                wall_ms: 200 + MAX_CLOCK_SKEW_MS,
                logical: 0,
            },
            200,
        )
        .unwrap();
        let mut m = HlcClock {
            last: Hlc {
                wall_ms: 5,
                logical: u32::MAX,
            },
        };
        assert_eq!(
            m.tick(0),
            Hlc {
                wall_ms: 6,
                logical: 0
            }
        );
    }
}
