//! `quota.*`: per-tenant quotas on the tables remote input grows at a bridge ([`crate::quota`],
//! `docs/AUTH.md` "Quotas", `docs/CONFIG.md`). Defaults in [`crate::defaults`].

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};
use crate::defaults;
use crate::quota::QuotaLimits;

/// Per-tenant quotas: for each table, a share per tenant (the holder of one proven node id,
/// the subject of its credential) and a total, in entries and in bytes. A request past
/// either is refused with `LIMIT_EXCEEDED` and counted in
/// `macula_quota_refused_total{table, reason}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Interest patterns one tenant may hold at a bridge, per realm. Default 10,000.
    pub interest_per_tenant: usize,
    /// Bytes of those patterns, per tenant and realm. Default 512 KiB.
    pub interest_bytes_per_tenant: usize,
    /// Interest patterns a bridge holds per realm, all links. Default 200,000.
    pub interest_total: usize,
    /// Bytes of those patterns, per realm. Default 8 MiB.
    pub interest_bytes_total: usize,
    /// Provider-record copies one tenant may hold in a bridge's level index, per realm.
    /// Default 10,000.
    pub records_per_tenant: usize,
    /// Bytes of those copies (key, publisher, record, procedure name), per tenant and realm.
    /// Default 2 MiB.
    pub record_bytes_per_tenant: usize,
    /// Provider-record copies in one realm's level index. Default 100,000.
    pub records_total: usize,
    /// Bytes of those copies, per realm. Default 16 MiB.
    pub record_bytes_total: usize,
    /// Calls one tenant may have in flight through a bridge; `rpc.max_pending` is the
    /// total. Default 4,096.
    pub calls_per_tenant: usize,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            interest_per_tenant: defaults::QUOTA_INTEREST_PER_TENANT,
            interest_bytes_per_tenant: defaults::QUOTA_INTEREST_BYTES_PER_TENANT,
            interest_total: defaults::QUOTA_INTEREST_TOTAL,
            interest_bytes_total: defaults::QUOTA_INTEREST_BYTES_TOTAL,
            records_per_tenant: defaults::QUOTA_RECORDS_PER_TENANT,
            record_bytes_per_tenant: defaults::QUOTA_RECORD_BYTES_PER_TENANT,
            records_total: defaults::QUOTA_RECORDS_TOTAL,
            record_bytes_total: defaults::QUOTA_RECORD_BYTES_TOTAL,
            calls_per_tenant: defaults::QUOTA_CALLS_PER_TENANT,
        }
    }
}

impl QuotaConfig {
    /// The bounds of a realm's interest table at a bridge.
    pub fn interest(&self) -> QuotaLimits {
        QuotaLimits {
            tenant_entries: self.interest_per_tenant,
            tenant_bytes: self.interest_bytes_per_tenant,
            total_entries: self.interest_total,
            total_bytes: self.interest_bytes_total,
        }
    }

    /// The bounds of a realm's level index at a bridge.
    pub fn records(&self) -> QuotaLimits {
        QuotaLimits {
            tenant_entries: self.records_per_tenant,
            tenant_bytes: self.record_bytes_per_tenant,
            total_entries: self.records_total,
            total_bytes: self.record_bytes_total,
        }
    }

    /// The bounds of a bridge's calls in flight, `total` being `rpc.max_pending` (a pending
    /// call keeps no payload: bytes are not bounded).
    pub fn calls(&self, total: usize) -> QuotaLimits {
        QuotaLimits {
            tenant_entries: self.calls_per_tenant,
            total_entries: total,
            ..QuotaLimits::UNBOUNDED
        }
    }

    /// Every value at least 1, and no share above its total.
    ///
    /// Errors: [`ConfigError::Invalid`] naming the key.
    pub(super) fn validate(&self, max_pending: usize) -> Result<(), ConfigError> {
        let pairs: [(&'static str, usize, usize); 5] = [
            (
                "quota.interest_per_tenant",
                self.interest_per_tenant,
                self.interest_total,
            ),
            (
                "quota.interest_bytes_per_tenant",
                self.interest_bytes_per_tenant,
                self.interest_bytes_total,
            ),
            (
                "quota.records_per_tenant",
                self.records_per_tenant,
                self.records_total,
            ),
            (
                "quota.record_bytes_per_tenant",
                self.record_bytes_per_tenant,
                self.record_bytes_total,
            ),
            ("quota.calls_per_tenant", self.calls_per_tenant, max_pending),
        ];
        for (key, share, total) in pairs {
            if share == 0 {
                return invalid(key, "must be at least 1");
            }
            if share > total {
                return invalid(key, format!("{share} is above its total {total}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_a_share_above_its_total_is_not() {
        QuotaConfig::default().validate(65_536).unwrap();
        let q = QuotaConfig {
            records_per_tenant: 200_000,
            ..QuotaConfig::default()
        };
        let e = q.validate(65_536).unwrap_err().to_string();
        assert!(e.contains("quota.records_per_tenant"), "{e}");
        let q = QuotaConfig {
            interest_bytes_per_tenant: 0,
            ..QuotaConfig::default()
        };
        assert!(q.validate(65_536).is_err());
        assert!(
            QuotaConfig::default().validate(1_000).is_err(),
            "calls share above the total"
        );
    }
}
