//! Escalation (locality first): the bridge levels, the per-bridge lookup cache and the hop
//! bookkeeping that keeps a misconfigured parent chain from looping.
//!
//! A lookup that misses in a cluster's DHT goes to the street bridge, then to its parent, and
//! so on up the levels ([`Level`]) until some level knows a provider or the top answers
//! [`Answer::NotFound`]. The answer travels back down the same path and every bridge on it
//! caches it in its [`LookupCache`] for the TTL of its level (Macula v0.16, "Bridge system":
//! cluster 300 s, street 600 s, neighborhood 900 s, city 1800 s, above 3600 s; bound 10,000
//! entries). Design and use: `docs/ESCALATION.md`.
//!
//! - Pure parts (no tokio, no clock): [`Level`], [`CacheConfig`], [`Answer`], [`LookupError`]
//!   and [`EscalationPath`] (loop and hop-limit detection).
//! - [`LookupCache`] binds them to moka: single-flight loading, per-entry TTL by answer kind,
//!   an entry-count bound, a negative cache, invalidation when a provider is gone, metrics
//!   ([`CacheMetrics`]) and an injectable [`Clock`] that makes expiry deterministic in tests.
//!
//! The bridge (`src/bridge/rpc.rs`) calls [`LookupCache::get_or_escalate`] with an `upstream`
//! future that asks its parent bridge over the parent link (`src/bridge/parent.rs`).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod cache;
pub mod metrics;
pub mod path;

pub use cache::{Clock, LookupCache, ManualClock, SystemClock};
pub use metrics::CacheMetrics;
pub use path::{BridgeId, EscalationPath, MAX_HOPS, MAX_VISITED};

/// Default lifetime of a cached [`Answer::NotFound`]: 5 s. Short, so a provider that appears
/// just after a miss is found again within seconds, yet long enough to absorb a burst of
/// lookups for a name nobody provides (each would otherwise escalate to the top).
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Default bound of a [`LookupCache`], entries (Macula v0.16, "Bridge system": 10,000).
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;

/// Time a bridge waits for its parent's answer before failing the lookup with
/// [`LookupError::Timeout`], 5 s (Macula v0.16, "Bridge system": escalation timeout). The
/// cache does not impose it: the `upstream` future given to
/// [`LookupCache::get_or_escalate`] must be bounded by it, because every coalesced waiter
/// waits for that one future.
pub const ESCALATION_TIMEOUT: Duration = Duration::from_secs(5);

/// A level of the bridge hierarchy, lowest first (Macula v0.16, "Concepts"). Ordered:
/// `Cluster < Street < … < Global`. Serialised, parsed and displayed in lowercase
/// (`"neighborhood"`), the form used in configuration and in the `level` metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// 1–10 nodes at one site (home, office, edge box).
    Cluster,
    /// The clusters of a street.
    Street,
    /// The streets of a neighborhood.
    Neighborhood,
    /// The neighborhoods of a city.
    City,
    /// The cities of a province.
    Province,
    /// The provinces of a country.
    Country,
    /// The countries of a region.
    Region,
    /// The top level: it has no parent and answers [`Answer::NotFound`] on a miss.
    Global,
}

/// Error from parsing a [`Level`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown bridge level {value:?} (expected one of cluster, street, neighborhood, city, province, country, region, global)")]
pub struct LevelError {
    /// The string that is not a level name.
    pub value: String,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 8] = [
        Level::Cluster,
        Level::Street,
        Level::Neighborhood,
        Level::City,
        Level::Province,
        Level::Country,
        Level::Region,
        Level::Global,
    ];

    /// The lowercase name (`"city"`): configuration value and metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Cluster => "cluster",
            Level::Street => "street",
            Level::Neighborhood => "neighborhood",
            Level::City => "city",
            Level::Province => "province",
            Level::Country => "country",
            Level::Region => "region",
            Level::Global => "global",
        }
    }

    /// Default lifetime of a positive answer cached at this level (Macula v0.16, "Bridge
    /// system"): cluster 300 s, street 600 s, neighborhood 900 s, city 1800 s, province and
    /// above 3600 s. Higher levels serve wider areas whose providers change less often.
    pub const fn default_ttl(self) -> Duration {
        Duration::from_secs(match self {
            Level::Cluster => 300,
            Level::Street => 600,
            Level::Neighborhood => 900,
            Level::City => 1800,
            Level::Province | Level::Country | Level::Region | Level::Global => 3600,
        })
    }

    /// The next level up, `None` for [`Level::Global`].
    pub const fn parent(self) -> Option<Level> {
        match self {
            Level::Cluster => Some(Level::Street),
            Level::Street => Some(Level::Neighborhood),
            Level::Neighborhood => Some(Level::City),
            Level::City => Some(Level::Province),
            Level::Province => Some(Level::Country),
            Level::Country => Some(Level::Region),
            Level::Region => Some(Level::Global),
            Level::Global => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = LevelError;

    /// Parses a lowercase level name. Errors: [`LevelError`] for anything else.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| LevelError {
                value: s.to_string(),
            })
    }
}

/// Settings of one [`LookupCache`] (runtime form; build with [`CacheConfig::for_level`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Lifetime of a cached [`Answer::Found`]. Default: [`Level::default_ttl`].
    pub ttl: Duration,
    /// Lifetime of a cached [`Answer::NotFound`]. Default: [`DEFAULT_NEGATIVE_TTL`] (5 s).
    pub negative_ttl: Duration,
    /// Bound of the cache, entries (one entry = one realm + key, whatever the number of
    /// providers in its answer). Default: [`DEFAULT_MAX_ENTRIES`] (10,000).
    pub max_entries: u64,
}

impl CacheConfig {
    /// The defaults for a bridge of `level`: its [`Level::default_ttl`], a 5 s negative TTL
    /// and 10,000 entries.
    pub const fn for_level(level: Level) -> Self {
        CacheConfig {
            ttl: level.default_ttl(),
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// One node that provides what a lookup asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Provider {
    /// Node id of the provider (SHA-256 of its public key, see [`crate::dht::Id`]).
    pub node_id: [u8; 32],
    /// Name of the cluster the provider lives in.
    pub cluster: String,
    /// Route hint: how to reach the provider from the answering bridge. Opaque to the cache.
    pub via: String,
}

/// The answer to a lookup, as cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// At least one provider; cached for [`CacheConfig::ttl`].
    Found(Arc<[Provider]>),
    /// No provider at any level up to the top; cached for [`CacheConfig::negative_ttl`]. A
    /// `Found` with an empty list is stored as `NotFound`.
    NotFound,
}

impl Answer {
    /// Whether this is a `Found` answer listing the node `node_id`.
    pub fn lists(&self, node_id: &[u8; 32]) -> bool {
        match self {
            Answer::Found(providers) => providers.iter().any(|p| &p.node_id == node_id),
            Answer::NotFound => false,
        }
    }

    /// `Found(providers)`, or `NotFound` when `providers` is empty.
    pub fn found(providers: Vec<Provider>) -> Self {
        if providers.is_empty() {
            Answer::NotFound
        } else {
            Answer::Found(providers.into())
        }
    }
}

/// Where [`LookupCache::get_or_escalate`] took its answer from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// No upstream query was made by this call: the answer was cached, or it came from an
    /// identical lookup's query that this call waited for (single-flight).
    Cache,
    /// This call ran the upstream query and cached its answer.
    Upstream,
}

/// Why a lookup failed. `Clone` because one failed upstream query is handed to every
/// coalesced waiter. Errors are never cached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The parent did not answer within [`ESCALATION_TIMEOUT`].
    #[error("escalation timed out")]
    Timeout,
    /// A bridge below the top has no parent configured. The top level ([`Level::Global`], or
    /// whatever level a deployment ends at) answers [`Answer::NotFound`] on a miss instead:
    /// this error only reports a misconfiguration.
    #[error("no parent bridge configured below the top level")]
    NoParent,
    /// The lookup visited a bridge twice or passed more than [`MAX_HOPS`] bridges: the parent
    /// chain is misconfigured (see [`EscalationPath::next_hop`]).
    #[error("escalation loop detected after {hops} hops")]
    Loop {
        /// Bridges the lookup had passed when the loop was detected.
        hops: u8,
    },
    /// The parent answered with an error, or the query could not be sent.
    #[error("upstream lookup failed: {0}")]
    Upstream(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ttls_per_level() {
        let table = [
            (Level::Cluster, 300),
            (Level::Street, 600),
            (Level::Neighborhood, 900),
            (Level::City, 1800),
            (Level::Province, 3600),
            (Level::Country, 3600),
            (Level::Region, 3600),
            (Level::Global, 3600),
        ];
        for (level, secs) in table {
            assert_eq!(level.default_ttl(), Duration::from_secs(secs), "{level}");
            let cfg = CacheConfig::for_level(level);
            assert_eq!(cfg.ttl, Duration::from_secs(secs));
            assert_eq!(cfg.negative_ttl, Duration::from_secs(5));
            assert_eq!(cfg.max_entries, 10_000);
        }
    }

    #[test]
    fn levels_are_ordered_and_chained() {
        assert!(Level::ALL.windows(2).all(|w| w[0] < w[1]));
        for w in Level::ALL.windows(2) {
            assert_eq!(w[0].parent(), Some(w[1]));
        }
        assert_eq!(Level::Global.parent(), None);
    }

    #[test]
    fn level_names_round_trip() {
        for level in Level::ALL {
            let name = level.to_string();
            assert_eq!(name.parse::<Level>(), Ok(level));
            let json = serde_json::to_string(&level).expect("serialises");
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<Level>(&json).expect("parses"), level);
        }
        assert_eq!(
            "City".parse::<Level>(),
            Err(LevelError {
                value: "City".into()
            })
        );
        assert!("planet".parse::<Level>().is_err());
    }

    #[test]
    fn empty_found_is_not_found() {
        assert_eq!(Answer::found(Vec::new()), Answer::NotFound);
        let p = Provider {
            node_id: [7; 32],
            cluster: "home".into(),
            via: "street-1".into(),
        };
        let a = Answer::found(vec![p]);
        assert!(a.lists(&[7; 32]));
        assert!(!a.lists(&[8; 32]));
        assert!(!Answer::NotFound.lists(&[7; 32]));
    }
}
