//! `rate.*`: token-bucket rate limits on what peers send ([`crate::rate`], `docs/AUTH.md`
//! "Rate limits", `docs/CONFIG.md`). Defaults in [`crate::defaults`].

use serde::{Deserialize, Serialize};

use crate::defaults;

/// Rate limits (`src/rate.rs`): per connection by kind of link, per realm, and the bursts.
/// A credential's own `lim` adds a bucket shared by all its sessions. Each limit is
/// `{ msgs = N, bytes = N }` per second, 0 meaning none.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    /// Each client connection of a node. Default [`defaults::RATE_CLIENT`].
    pub client: crate::rate::RateLimits,
    /// Each node uplink and child-bridge link of a bridge (fleet peers are not limited).
    /// Default [`defaults::RATE_LINK`].
    pub link: crate::rate::RateLimits,
    /// All the connections of one realm together, in one process. Default
    /// [`defaults::RATE_REALM`].
    pub realm: crate::rate::RateLimits,
    /// How much of a rate may come at once, milliseconds' worth (at least one message and
    /// one frame of `limits.max_frame_size`). Default [`defaults::RATE_BURST_MS`].
    pub burst_ms: u64,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            client: defaults::RATE_CLIENT,
            link: defaults::RATE_LINK,
            realm: defaults::RATE_REALM,
            burst_ms: defaults::RATE_BURST_MS,
        }
    }
}
