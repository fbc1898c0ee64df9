//! Metrics of the per-tenant quotas ([`crate::quota`], `docs/AUTH.md` "Quotas"). Labels come
//! from the small fixed sets below (STYLE 8).

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::quota::{QuotaError, REFUSAL_REASONS};

/// Values of the `table` label of `macula_quota_refused_total`: a bridge's interest patterns,
/// its level index of provider records, its calls in flight, a node's DHT record store, and
/// what each client of a node holds in its cluster's CRDT store.
pub const TABLES: [&str; 5] = ["interest", "records", "calls", "dht", "crdt_writer"];

/// A table [`QuotaMetrics::refused`] counts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// A bridge's interest patterns (per realm).
    Interest = 0,
    /// A bridge's level index of provider records (per realm).
    Records = 1,
    /// A bridge's calls in flight.
    Calls = 2,
    /// A node's DHT record store.
    Dht = 3,
    /// The keys and bytes one client of a node holds in its cluster's CRDT store
    /// ([`crate::crdt::writers`]).
    CrdtWriter = 4,
}

/// Quota metrics, registered in the process registry by [`super::Metrics::new`].
pub struct QuotaMetrics {
    /// `macula_quota_refused_total{table, reason}`: requests refused by a quota, by
    /// [`TABLES`] and [`REFUSAL_REASONS`].
    pub refused_total: IntCounterVec,
    /// Children of `refused_total`, `[table][reason]`, resolved once.
    children: Vec<Vec<IntCounter>>,
}

impl QuotaMetrics {
    /// Registers the quota metrics in `r`.
    pub fn new(r: &Registry) -> QuotaMetrics {
        let refused_total = IntCounterVec::new(
            Opts::new(
                "macula_quota_refused_total",
                "Requests refused by a per-tenant quota or a table's total, by table and reason.",
            ),
            &["table", "reason"],
        )
        .expect("valid metric");
        r.register(Box::new(refused_total.clone()))
            .expect("registered once");
        let children = TABLES
            .iter()
            .map(|t| {
                REFUSAL_REASONS
                    .iter()
                    .map(|reason| refused_total.with_label_values(&[t, reason]))
                    .collect()
            })
            .collect();
        QuotaMetrics {
            refused_total,
            children,
        }
    }

    /// Counts one refusal of `table` for `e`.
    pub fn refused(&self, table: Table, e: &QuotaError) {
        let r = REFUSAL_REASONS
            .iter()
            .position(|x| *x == e.reason())
            .expect("a reason of REFUSAL_REASONS");
        self.children[table as usize][r].inc();
    }

    /// Refusals counted so far for `table` and `reason` (tests, the load generator).
    pub fn count(&self, table: Table, reason: &str) -> u64 {
        REFUSAL_REASONS
            .iter()
            .position(|x| *x == reason)
            .map_or(0, |r| self.children[table as usize][r].get())
    }
}
