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
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        todo!()
    }
    /// Takes in a remote timestamp (HLC receive rule) so later ticks exceed it.
    ///
    /// Errors: [`CrdtError::ClockSkew`] when `remote.wall_ms > now_ms + MAX_CLOCK_SKEW_MS`;
    /// the clock is then left unchanged.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<(), CrdtError> {
        todo!()
    }
    /// The last timestamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }
}
