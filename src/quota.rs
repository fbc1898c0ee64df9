//! Per-tenant quotas on the tables remote input grows (issue 12, `docs/AUTH.md`, "Quotas").
//! Pure: no tokio, no clock.
//!
//! A [`Ledger`] accounts one table (a realm's interest patterns at a bridge, its provider
//! index, the calls a bridge has in flight) in **entries and bytes**, three ways at once:
//!
//! - per **link**, so that everything a link holds is freed when it goes
//!   ([`Ledger::release_link`]);
//! - per **tenant** — the proven node id of the link's peer, which in a realm with operator
//!   keys is the subject of its credential (PROTOCOL §7a), so several links of one holder share
//!   one share — bounded by [`QuotaLimits::tenant_entries`] and [`QuotaLimits::tenant_bytes`];
//! - in **total**, bounded by [`QuotaLimits::total_entries`] and [`QuotaLimits::total_bytes`].
//!
//! A charge that would pass a bound is refused whole ([`QuotaError`]) and changes nothing.
//! [`Tenant::Exempt`] links (the parent bridge, fleet peers: they relay for the whole realm)
//! count toward the total only. The share is what makes "one tenant can never exhaust what
//! the others need" hold: with `total ≥ n × share`, `n` tenants each fill their share and
//! a newcomer still fits; the total bounds the process whatever the number of tenants.

use std::collections::HashMap;

use crate::router::PeerKey;
use crate::wire::NodeId;

/// Whose share a link's entries are charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tenant {
    /// The holder of this proven node id (the SHA-256 of its credential's subject key).
    Subject(NodeId),
    /// Counted toward the total only (the parent link, fleet peers).
    Exempt,
}

/// An amount held: entries and the bytes they carry (the keys and values remote input
/// chose, not the process's bookkeeping around them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Entries (patterns, records, calls).
    pub entries: usize,
    /// Bytes, as each table defines them (its module documentation).
    pub bytes: usize,
}

impl Usage {
    /// `entries` entries of `bytes` bytes in all.
    pub const fn new(entries: usize, bytes: usize) -> Usage {
        Usage { entries, bytes }
    }
}

/// Bounds of a [`Ledger`]. Each is a maximum that may be held (`usize::MAX`: unbounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Entries one tenant may hold.
    pub tenant_entries: usize,
    /// Bytes one tenant may hold.
    pub tenant_bytes: usize,
    /// Entries the table may hold.
    pub total_entries: usize,
    /// Bytes the table may hold.
    pub total_bytes: usize,
}

impl QuotaLimits {
    /// No bound at all.
    pub const UNBOUNDED: QuotaLimits = QuotaLimits {
        tenant_entries: usize::MAX,
        tenant_bytes: usize::MAX,
        total_entries: usize::MAX,
        total_bytes: usize::MAX,
    };
}

/// Values of the `reason` label of `macula_quota_refused_total`, in [`QuotaError::reason`]
/// order.
pub const REFUSAL_REASONS: [&str; 4] = [
    "tenant_entries",
    "tenant_bytes",
    "total_entries",
    "total_bytes",
];

/// Which bound refused a charge. Every variant is sent as a `LIMIT_EXCEEDED` error
/// (`docs/ERRORS.md`) and counted in `macula_quota_refused_total{table, reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// The tenant would hold more than [`QuotaLimits::tenant_entries`].
    #[error("tenant quota exceeded: {held} entries held, {asked} more asked, limit {limit}")]
    TenantEntries {
        /// Entries the tenant holds.
        held: usize,
        /// Entries asked for.
        asked: usize,
        /// The limit.
        limit: usize,
    },
    /// The tenant would hold more than [`QuotaLimits::tenant_bytes`].
    #[error("tenant quota exceeded: {held} bytes held, {asked} more asked, limit {limit}")]
    TenantBytes {
        /// Bytes the tenant holds.
        held: usize,
        /// Bytes asked for.
        asked: usize,
        /// The limit.
        limit: usize,
    },
    /// The table would hold more than [`QuotaLimits::total_entries`].
    #[error("table full: {held} entries held, {asked} more asked, limit {limit}")]
    TotalEntries {
        /// Entries held in all.
        held: usize,
        /// Entries asked for.
        asked: usize,
        /// The limit.
        limit: usize,
    },
    /// The table would hold more than [`QuotaLimits::total_bytes`].
    #[error("table full: {held} bytes held, {asked} more asked, limit {limit}")]
    TotalBytes {
        /// Bytes held in all.
        held: usize,
        /// Bytes asked for.
        asked: usize,
        /// The limit.
        limit: usize,
    },
}

impl QuotaError {
    /// The `reason` label (one of [`REFUSAL_REASONS`]).
    pub fn reason(&self) -> &'static str {
        match self {
            QuotaError::TenantEntries { .. } => REFUSAL_REASONS[0],
            QuotaError::TenantBytes { .. } => REFUSAL_REASONS[1],
            QuotaError::TotalEntries { .. } => REFUSAL_REASONS[2],
            QuotaError::TotalBytes { .. } => REFUSAL_REASONS[3],
        }
    }
}

/// The accounts of one table (module documentation). Every map is bounded by the links
/// holding something: a link or tenant whose usage drops to zero is forgotten.
#[derive(Debug, Clone)]
pub struct Ledger {
    limits: QuotaLimits,
    links: HashMap<PeerKey, (Tenant, Usage)>,
    tenants: HashMap<NodeId, Usage>,
    total: Usage,
}

impl Ledger {
    /// An empty ledger with `limits`.
    pub fn new(limits: QuotaLimits) -> Ledger {
        Ledger {
            limits,
            links: HashMap::new(),
            tenants: HashMap::new(),
            total: Usage::default(),
        }
    }

    /// The bounds in force.
    pub fn limits(&self) -> QuotaLimits {
        self.limits
    }

    /// Whether `add` may be charged to `tenant` now (nothing is changed).
    ///
    /// Errors: [`QuotaError`], the tenant's bounds checked before the total's.
    pub fn check(&self, tenant: Tenant, add: Usage) -> Result<(), QuotaError> {
        let l = &self.limits;
        if let Tenant::Subject(id) = tenant {
            let held = self.tenants.get(&id).copied().unwrap_or_default();
            over(held.entries, add.entries, l.tenant_entries)
                .map_err(|(held, asked, limit)| QuotaError::TenantEntries { held, asked, limit })?;
            over(held.bytes, add.bytes, l.tenant_bytes)
                .map_err(|(held, asked, limit)| QuotaError::TenantBytes { held, asked, limit })?;
        }
        over(self.total.entries, add.entries, l.total_entries)
            .map_err(|(held, asked, limit)| QuotaError::TotalEntries { held, asked, limit })?;
        over(self.total.bytes, add.bytes, l.total_bytes)
            .map_err(|(held, asked, limit)| QuotaError::TotalBytes { held, asked, limit })?;
        Ok(())
    }

    /// Charges `add` to `link`, whose holder is `tenant` (a link keeps the tenant of its
    /// first charge while it holds anything).
    ///
    /// Errors: [`QuotaError`]; nothing is charged.
    pub fn charge(&mut self, link: PeerKey, tenant: Tenant, add: Usage) -> Result<(), QuotaError> {
        let tenant = self.links.get(&link).map_or(tenant, |(t, _)| *t);
        self.check(tenant, add)?;
        self.apply(link, tenant, add);
        Ok(())
    }

    /// Charges `add` to `link` whatever the bounds: for an amount checked ([`Ledger::check`])
    /// as an upper bound before the change it measures was made, and known exactly only
    /// after (a CRDT write, [`crate::crdt::writers`]).
    pub fn force(&mut self, link: PeerKey, tenant: Tenant, add: Usage) {
        let tenant = self.links.get(&link).map_or(tenant, |(t, _)| *t);
        self.apply(link, tenant, add);
    }

    /// Replaces `old` held by `link` with `new` (a refreshed entry whose size changed): only
    /// the growth is checked. Errors: [`QuotaError`]; nothing is changed.
    pub fn resize(
        &mut self,
        link: PeerKey,
        tenant: Tenant,
        old: Usage,
        new: Usage,
    ) -> Result<(), QuotaError> {
        let tenant = self.links.get(&link).map_or(tenant, |(t, _)| *t);
        let grow = Usage::new(
            new.entries.saturating_sub(old.entries),
            new.bytes.saturating_sub(old.bytes),
        );
        self.check(tenant, grow)?;
        self.release(link, old);
        self.apply(link, tenant, new);
        Ok(())
    }

    /// Releases `sub` held by `link` (at most what it holds).
    pub fn release(&mut self, link: PeerKey, sub: Usage) {
        let Some((tenant, held)) = self.links.get_mut(&link) else {
            return;
        };
        let sub = Usage::new(sub.entries.min(held.entries), sub.bytes.min(held.bytes));
        held.entries -= sub.entries;
        held.bytes -= sub.bytes;
        let (tenant, empty) = (*tenant, *held == Usage::default());
        if empty {
            self.links.remove(&link);
        }
        self.release_tenant(tenant, sub);
    }

    /// Charges `add` to `tenant` without a link (a table whose entries are freed one by one,
    /// never a link at a time: a node's DHT store). Errors: [`QuotaError`]; nothing charged.
    pub fn charge_tenant(&mut self, tenant: Tenant, add: Usage) -> Result<(), QuotaError> {
        self.check(tenant, add)?;
        self.apply_tenant(tenant, add);
        Ok(())
    }

    /// Releases `sub` charged by [`Ledger::charge_tenant`] (saturating).
    pub fn release_tenant(&mut self, tenant: Tenant, sub: Usage) {
        self.total.entries = self.total.entries.saturating_sub(sub.entries);
        self.total.bytes = self.total.bytes.saturating_sub(sub.bytes);
        if let Tenant::Subject(id) = tenant {
            if let Some(t) = self.tenants.get_mut(&id) {
                t.entries = t.entries.saturating_sub(sub.entries);
                t.bytes = t.bytes.saturating_sub(sub.bytes);
                if *t == Usage::default() {
                    self.tenants.remove(&id);
                }
            }
        }
    }

    /// Releases everything `link` holds (it closed); returns what it held.
    pub fn release_link(&mut self, link: PeerKey) -> Usage {
        let held = self.link_usage(link);
        self.release(link, held);
        held
    }

    /// What `link` holds.
    pub fn link_usage(&self, link: PeerKey) -> Usage {
        self.links.get(&link).map(|(_, u)| *u).unwrap_or_default()
    }

    /// What the holder of `id` holds over all its links.
    pub fn tenant_usage(&self, id: &NodeId) -> Usage {
        self.tenants.get(id).copied().unwrap_or_default()
    }

    /// What the table holds.
    pub fn total(&self) -> Usage {
        self.total
    }

    /// Tenants holding something.
    pub fn tenants(&self) -> usize {
        self.tenants.len()
    }

    fn apply(&mut self, link: PeerKey, tenant: Tenant, add: Usage) {
        if add == Usage::default() {
            return;
        }
        let (_, held) = self.links.entry(link).or_insert((tenant, Usage::default()));
        held.entries += add.entries;
        held.bytes += add.bytes;
        self.apply_tenant(tenant, add);
    }

    fn apply_tenant(&mut self, tenant: Tenant, add: Usage) {
        self.total.entries += add.entries;
        self.total.bytes += add.bytes;
        if let Tenant::Subject(id) = tenant {
            let t = self.tenants.entry(id).or_default();
            t.entries += add.entries;
            t.bytes += add.bytes;
        }
    }
}

/// `Err((held, asked, limit))` when `held + asked` passes `limit` (asking for nothing never
/// does).
fn over(held: usize, asked: usize, limit: usize) -> Result<(), (usize, usize, usize)> {
    if asked > 0 && held.saturating_add(asked) > limit {
        Err((held, asked, limit))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: Tenant = Tenant::Subject([1; 32]);
    const B: Tenant = Tenant::Subject([2; 32]);

    fn limits() -> QuotaLimits {
        QuotaLimits {
            tenant_entries: 3,
            tenant_bytes: 100,
            total_entries: 5,
            total_bytes: 1_000,
        }
    }

    #[test]
    fn a_tenant_at_its_share_is_refused_while_another_is_served() {
        let mut l = Ledger::new(limits());
        l.charge(10, A, Usage::new(3, 30)).unwrap();
        assert_eq!(
            l.charge(10, A, Usage::new(1, 1)),
            Err(QuotaError::TenantEntries {
                held: 3,
                asked: 1,
                limit: 3
            })
        );
        // A second link of the same holder shares the share.
        assert!(matches!(
            l.charge(11, A, Usage::new(1, 1)),
            Err(QuotaError::TenantEntries { .. })
        ));
        l.charge(20, B, Usage::new(2, 20)).unwrap();
        assert_eq!(l.tenant_usage(&[2; 32]), Usage::new(2, 20));
        assert_eq!(l.total(), Usage::new(5, 50));
        // The total binds B now, and even an exempt link.
        let e = l.charge(20, B, Usage::new(1, 1)).unwrap_err();
        assert_eq!(e.reason(), "total_entries");
        assert!(l.charge(30, Tenant::Exempt, Usage::new(1, 1)).is_err());
    }

    #[test]
    fn bytes_bind_as_entries_do() {
        let mut l = Ledger::new(limits());
        assert_eq!(
            l.charge(10, A, Usage::new(1, 101)).unwrap_err().reason(),
            "tenant_bytes"
        );
        assert_eq!(l.total(), Usage::default(), "a refusal charges nothing");
        let mut l = Ledger::new(QuotaLimits {
            total_bytes: 50,
            ..limits()
        });
        l.charge(10, A, Usage::new(1, 40)).unwrap();
        assert_eq!(
            l.charge(20, B, Usage::new(1, 11)).unwrap_err().reason(),
            "total_bytes"
        );
        l.charge(20, Tenant::Exempt, Usage::new(1, 10)).unwrap();
    }

    #[test]
    fn closing_a_link_frees_its_entries_for_everyone() {
        let mut l = Ledger::new(limits());
        l.charge(10, A, Usage::new(2, 20)).unwrap();
        l.charge(11, A, Usage::new(1, 5)).unwrap();
        l.charge(20, B, Usage::new(2, 2)).unwrap();
        assert_eq!(l.release_link(10), Usage::new(2, 20));
        assert_eq!(l.tenant_usage(&[1; 32]), Usage::new(1, 5));
        assert_eq!(l.release_link(10), Usage::default(), "idempotent");
        l.charge(20, B, Usage::new(1, 1)).unwrap();
        l.release_link(11);
        l.release_link(20);
        assert_eq!(l.total(), Usage::default());
        assert_eq!(l.tenants(), 0, "forgotten at zero");
        assert!(l.links.is_empty());
    }

    #[test]
    fn resize_checks_only_the_growth() {
        let mut l = Ledger::new(limits());
        l.charge(10, A, Usage::new(1, 90)).unwrap();
        l.resize(10, A, Usage::new(1, 90), Usage::new(1, 100))
            .unwrap();
        assert!(l
            .resize(10, A, Usage::new(1, 100), Usage::new(1, 101))
            .is_err());
        assert_eq!(l.link_usage(10), Usage::new(1, 100), "unchanged on refusal");
        l.resize(10, A, Usage::new(1, 100), Usage::new(1, 3))
            .unwrap();
        assert_eq!(l.tenant_usage(&[1; 32]), Usage::new(1, 3));
    }

    #[test]
    fn releasing_more_than_held_saturates() {
        let mut l = Ledger::new(limits());
        l.charge(10, A, Usage::new(1, 10)).unwrap();
        l.release(10, Usage::new(5, 500));
        l.release(99, Usage::new(1, 1));
        assert_eq!(l.total(), Usage::default());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Charge(u8, usize, usize),
        Release(u8, usize, usize),
        Close(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, 0usize..3, 0usize..40).prop_map(|(l, e, b)| Op::Charge(l, e, b)),
            (0u8..6, 0usize..3, 0usize..40).prop_map(|(l, e, b)| Op::Release(l, e, b)),
            (0u8..6).prop_map(Op::Close),
        ]
    }

    proptest! {
        /// Whatever the operations: the bounds hold, and the per-link, per-tenant and total
        /// accounts agree.
        #[test]
        fn accounts_agree_and_bounds_hold(ops in proptest::collection::vec(op(), 0..200)) {
            let lim = QuotaLimits { tenant_entries: 4, tenant_bytes: 60, total_entries: 9, total_bytes: 150 };
            let mut l = Ledger::new(lim);
            // Link n belongs to tenant n % 3 (tenant 0 is exempt).
            let tenant = |link: u8| match link % 3 { 0 => Tenant::Exempt, t => Tenant::Subject([t; 32]) };
            for o in ops {
                match o {
                    Op::Charge(link, e, b) => { let _ = l.charge(link.into(), tenant(link), Usage::new(e, b)); }
                    Op::Release(link, e, b) => l.release(link.into(), Usage::new(e, b)),
                    Op::Close(link) => { l.release_link(link.into()); }
                }
                let sum = l.links.values().fold(Usage::default(), |a, (_, u)| Usage::new(a.entries + u.entries, a.bytes + u.bytes));
                prop_assert_eq!(sum, l.total());
                prop_assert!(l.total().entries <= lim.total_entries && l.total().bytes <= lim.total_bytes);
                for t in 1u8..3 {
                    let mine = l.links.iter().filter(|(_, (tt, _))| *tt == Tenant::Subject([t; 32]))
                        .fold(Usage::default(), |a, (_, (_, u))| Usage::new(a.entries + u.entries, a.bytes + u.bytes));
                    prop_assert_eq!(mine, l.tenant_usage(&[t; 32]));
                    prop_assert!(mine.entries <= lim.tenant_entries && mine.bytes <= lim.tenant_bytes);
                }
            }
        }
    }
}
