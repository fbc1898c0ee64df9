//! The calls a bridge has forwarded and not yet seen answered, with a per-tenant quota
//! (`quota.calls_per_tenant`; `rpc.max_pending` in total). Pure: no tokio, no clock reads.
//!
//! Each call is charged to the tenant of the link it **came from** (its caller's side): one
//! tenant calling flat out fills its share and is answered `OVERLOADED`, while the other
//! tenants' calls still go through. A call leaves the accounts however it ends — its reply,
//! the loss of the link it went out on, its deadline, or the loss of the link it came from
//! ([`Calls::drop_origin`]: nobody is left to answer).

use std::time::Instant;

use crate::quota::{Ledger, QuotaError, QuotaLimits, Tenant, Usage};
use crate::router::PeerKey;
use crate::rpc::{Pending, PendingCalls, PendingFull};

/// Where a forwarded call's reply goes back: the link it came from (whose quota it is
/// charged to) and its sending half.
#[derive(Debug, Clone)]
pub(super) struct Back<T> {
    /// The link the call came from.
    pub(super) link: PeerKey,
    /// Its control queue (or anything, in tests).
    pub(super) tx: T,
}

/// Why a call was not taken. Both are answered with an `OVERLOADED` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum CallRefused {
    /// The caller's tenant, or the bridge, is at its quota.
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// The table is full (`rpc.max_pending`).
    #[error(transparent)]
    Full(#[from] PendingFull),
}

/// Calls in flight with their quota accounts (module documentation).
#[derive(Debug)]
pub(super) struct Calls<T> {
    table: PendingCalls<Back<T>>,
    quota: Ledger,
}

impl<T> Calls<T> {
    /// An empty table of at most `max_pending` calls, shared out by `quota`.
    pub(super) fn new(max_pending: usize, quota: QuotaLimits) -> Self {
        Calls {
            table: PendingCalls::new(max_pending),
            quota: Ledger::new(quota),
        }
    }

    /// Remembers a call from `entry.back.link`, whose holder is `tenant`; returns the
    /// `call_id` toward the next hop. Errors: [`CallRefused`], nothing remembered.
    pub(super) fn insert(
        &mut self,
        tenant: Tenant,
        entry: Pending<Back<T>>,
    ) -> Result<u64, CallRefused> {
        let from = entry.back.link;
        self.quota.charge(from, tenant, Usage::new(1, 0))?;
        self.table.insert(entry).map_err(|e| {
            self.quota.release(from, Usage::new(1, 0));
            CallRefused::Full(e)
        })
    }

    /// The call answered by the reply `call_id` that arrived over `link`, removed (`None`:
    /// unknown, or forwarded over another link).
    pub(super) fn take(&mut self, call_id: u64, link: PeerKey) -> Option<Pending<Back<T>>> {
        let p = self.table.take(call_id, link)?;
        self.release(&p);
        Some(p)
    }

    /// The calls forwarded over `link`, removed (it closed: answer them `UNREACHABLE`).
    pub(super) fn drain_link(&mut self, link: PeerKey) -> Vec<Pending<Back<T>>> {
        let out = self.table.drain_link(link);
        out.iter().for_each(|p| self.release(p));
        out
    }

    /// Forgets the calls that came from `link` (it closed: their replies have nowhere to
    /// go); returns how many. A late reply is then an unknown reply.
    pub(super) fn drop_origin(&mut self, link: PeerKey) -> usize {
        if self.quota.link_usage(link).entries == 0 {
            return 0;
        }
        let n = self.table.drain_where(|p| p.back.link == link).len();
        self.quota.release_link(link);
        n
    }

    /// The calls past their deadline at `now`, removed.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<Pending<Back<T>>> {
        let out = self.table.expire(now);
        out.iter().for_each(|p| self.release(p));
        out
    }

    /// Calls in flight.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The quota accounts.
    #[cfg(test)]
    pub(super) fn quota(&self) -> &Ledger {
        &self.quota
    }

    fn release(&mut self, p: &Pending<Back<T>>) {
        self.quota.release(p.back.link, Usage::new(1, 0));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn call(from: PeerKey, out: PeerKey, deadline: Instant) -> Pending<Back<()>> {
        Pending {
            back: Back { link: from, tx: () },
            back_call_id: 7,
            out_link: out,
            target: None,
            deadline,
        }
    }

    fn limits() -> QuotaLimits {
        QuotaLimits {
            tenant_entries: 2,
            total_entries: 10,
            ..QuotaLimits::UNBOUNDED
        }
    }

    const A: Tenant = Tenant::Subject([1; 32]);
    const B: Tenant = Tenant::Subject([2; 32]);

    #[test]
    fn a_caller_at_its_share_is_refused_while_another_calls() {
        let now = Instant::now();
        let mut c = Calls::new(100, limits());
        c.insert(A, call(1, 9, now)).unwrap();
        c.insert(A, call(1, 9, now)).unwrap();
        assert!(matches!(
            c.insert(A, call(1, 9, now)),
            Err(CallRefused::Quota(QuotaError::TenantEntries { .. }))
        ));
        c.insert(B, call(2, 9, now)).unwrap();
        c.insert(Tenant::Exempt, call(3, 9, now)).unwrap();
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn every_way_a_call_ends_gives_its_share_back() {
        let now = Instant::now();
        let mut c = Calls::new(100, limits());
        let id = c.insert(A, call(1, 9, now)).unwrap();
        c.insert(A, call(1, 8, now + Duration::from_secs(5)))
            .unwrap();
        assert!(c.take(id, 8).is_none(), "a reply from the wrong link");
        assert!(c.take(id, 9).is_some());
        c.insert(A, call(1, 9, now)).unwrap();
        assert_eq!(c.drain_link(9).len(), 1, "the out link closed");
        assert_eq!(c.quota().tenant_usage(&[1; 32]).entries, 1);
        assert_eq!(c.expire(now + Duration::from_secs(5)).len(), 1);
        assert_eq!(c.quota().total().entries, 0);
        c.insert(A, call(1, 9, now)).unwrap();
        c.insert(A, call(1, 9, now)).unwrap();
        c.insert(B, call(2, 9, now)).unwrap();
        assert_eq!(c.drop_origin(1), 2, "the caller's link closed");
        assert_eq!(c.drop_origin(1), 0);
        assert_eq!((c.len(), c.quota().total().entries), (1, 1));
    }

    #[test]
    fn the_table_bound_still_holds_and_refunds() {
        let now = Instant::now();
        let mut c = Calls::new(1, QuotaLimits::UNBOUNDED);
        c.insert(A, call(1, 9, now)).unwrap();
        assert!(matches!(
            c.insert(B, call(2, 9, now)),
            Err(CallRefused::Full(_))
        ));
        assert_eq!(c.quota().link_usage(2).entries, 0, "refunded");
    }
}
