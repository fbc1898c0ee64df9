//! The record store: what a node holds for the keys it is among the `k` closest to
//! (the paper, §2.3 STORE and §2.5 republishing), with an enforced TTL and hard bounds.
//!
//! A [`Record`] is one publisher's value under one key — for Macula, "node P provides
//! procedure X in realm R" under [`Key::scoped`]`(R, X)`. Several publishers may hold records
//! under the same key (several providers of one procedure); a publisher has at most one
//! record per key, and a new STORE from it replaces the old one (refresh).
//!
//! **TTL** (Macula v0.16 defect 7: TTLs were carried but never enforced): every record has an
//! absolute `expires_at`; [`RecordStore::get`] never returns an expired record and
//! [`RecordStore::expire`] deletes them. Publishers re-advertise before expiry: the default TTL
//! is [`DEFAULT_RECORD_TTL_MS`] (300 s) and [`RecordStore::republish_due`] with
//! [`REPUBLISH_MARGIN_MS`] (60 s) lists our own records every TTL − 60 s, as in the Macula
//! design. Our own records (publisher = the local node) are the source for re-advertising:
//! `expire` keeps them (they are still hidden from `get` once past their TTL) until
//! [`RecordStore::remove`] withdraws them.
//!
//! **Bounds** ([`StoreLimits`]): values up to [`MAX_VALUE_LEN`] bytes, TTL up to [`MAX_TTL_MS`],
//! [`MAX_RECORDS_PER_KEY`] publishers per key (a newcomer evicts the soonest-expiring other
//! publisher's record, or is refused if it would itself expire soonest), [`MAX_RECORDS`]
//! records in total, and per-tenant quotas (issue 12): one publisher other than the local
//! node holds at most [`crate::defaults::QUOTA_DHT_RECORDS_PER_PEER`] records and
//! [`crate::defaults::QUOTA_DHT_BYTES_PER_PEER`] bytes of values, and all values together at
//! most [`crate::defaults::QUOTA_DHT_BYTES_TOTAL`] bytes — so one peer cannot fill the store
//! for the others ([`StoreError::Quota`]). Worst-case memory of values: `max_bytes`
//! (128 MiB by default; before the byte bound, 100,000 records of 64 KiB could take 6.5 GB).
//! The caller makes the publisher the authenticated sender (`dht::service`), so a peer's
//! share cannot be multiplied by claiming other publishers.

use std::collections::{BTreeSet, HashMap};

use super::id::{Key, NodeId};
use super::Timestamp;
use crate::quota::{Ledger, QuotaLimits, Tenant, Usage};

/// Largest value accepted, in bytes: 64 KiB (a provider record is an address list and some
/// metadata; anything larger belongs in a blob store).
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// Longest TTL accepted, in ms: 24 h. A STORE asking for more is refused rather than capped,
/// so a misconfigured publisher notices.
pub const MAX_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// Default TTL of provider and subscriber records, in ms: 300 s (Macula v0.16, "Identities,
/// DHT").
pub const DEFAULT_RECORD_TTL_MS: u64 = 300_000;

/// How long before expiry a publisher re-advertises its records, in ms: 60 s, so records are
/// re-sent every TTL − 60 s (Macula v0.16).
pub const REPUBLISH_MARGIN_MS: u64 = 60_000;

/// Records (distinct publishers) kept per key: 32.
pub const MAX_RECORDS_PER_KEY: usize = 32;

/// Records kept in total: 100,000.
pub const MAX_RECORDS: usize = 100_000;

/// One publisher's value under one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key (usually [`Key::scoped`]).
    pub key: Key,
    /// Opaque value bytes, at most `max_value_len` ([`MAX_VALUE_LEN`]).
    pub value: Vec<u8>,
    /// The node that published it (authenticated by the transport).
    pub publisher: NodeId,
    /// When it expires (ms timestamp, exclusive: expired at `now >= expires_at`).
    pub expires_at: Timestamp,
}

impl Record {
    /// True when the record is expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }
}

/// Limits of a [`RecordStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Largest value, bytes (default [`MAX_VALUE_LEN`]).
    pub max_value_len: usize,
    /// Longest TTL, ms (default [`MAX_TTL_MS`]).
    pub max_ttl_ms: u64,
    /// Records per key (default [`MAX_RECORDS_PER_KEY`]; at least 1).
    pub max_records_per_key: usize,
    /// Records in total (default [`MAX_RECORDS`]; at least 1).
    pub max_records: usize,
    /// Records one publisher other than the local node may hold (default
    /// [`crate::defaults::QUOTA_DHT_RECORDS_PER_PEER`]).
    pub max_records_per_publisher: usize,
    /// Bytes of values one publisher other than the local node may hold (default
    /// [`crate::defaults::QUOTA_DHT_BYTES_PER_PEER`]).
    pub max_bytes_per_publisher: usize,
    /// Bytes of values in total, ours included (default
    /// [`crate::defaults::QUOTA_DHT_BYTES_TOTAL`]).
    pub max_bytes: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_value_len: MAX_VALUE_LEN,
            max_ttl_ms: MAX_TTL_MS,
            max_records_per_key: MAX_RECORDS_PER_KEY,
            max_records: MAX_RECORDS,
            max_records_per_publisher: crate::defaults::QUOTA_DHT_RECORDS_PER_PEER,
            max_bytes_per_publisher: crate::defaults::QUOTA_DHT_BYTES_PER_PEER,
            max_bytes: crate::defaults::QUOTA_DHT_BYTES_TOTAL,
        }
    }
}

/// Why [`RecordStore::put`] refused a record. Nothing is stored on error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The value is longer than `max_value_len`.
    #[error("value is {len} bytes; the maximum is {max}")]
    ValueTooLarge {
        /// Value length, bytes.
        len: usize,
        /// The limit, bytes.
        max: usize,
    },
    /// The TTL is longer than `max_ttl_ms`.
    #[error("ttl of {ttl_ms} ms is longer than the maximum of {max_ms} ms")]
    TtlTooLong {
        /// Requested TTL, ms.
        ttl_ms: u64,
        /// The limit, ms.
        max_ms: u64,
    },
    /// The TTL is zero (the record would be born expired).
    #[error("ttl is zero")]
    ZeroTtl,
    /// The key already holds `max` records from other publishers, all expiring later than
    /// this one would.
    #[error("key holds the maximum of {max} records, all expiring later")]
    KeyFull {
        /// The per-key limit.
        max: usize,
    },
    /// The store holds `max` unexpired records.
    #[error("store holds the maximum of {max} records")]
    Full {
        /// The total limit.
        max: usize,
    },
    /// The publisher's share, or the store's bytes, would be exceeded
    /// ([`StoreLimits::max_records_per_publisher`], [`StoreLimits::max_bytes_per_publisher`],
    /// [`StoreLimits::max_bytes`]).
    #[error(transparent)]
    Quota(#[from] crate::quota::QuotaError),
}

/// Records held by one node, with TTL enforcement and bounds (see the module doc).
#[derive(Debug, Clone)]
pub struct RecordStore {
    local: NodeId,
    limits: StoreLimits,
    by_key: HashMap<Key, Vec<Record>>,
    /// Expiry index of the records of *other* publishers (ours are never expired away).
    by_expiry: BTreeSet<(Timestamp, Key, NodeId)>,
    len: usize,
    /// Records and value bytes per publisher (ours exempt) and in total.
    quota: Ledger,
}

impl RecordStore {
    /// An empty store of the node `local`, with the default limits.
    pub fn new(local: NodeId) -> Self {
        Self::with_limits(local, StoreLimits::default())
    }

    /// An empty store with the given limits.
    pub fn with_limits(local: NodeId, mut limits: StoreLimits) -> Self {
        limits.max_records_per_key = limits.max_records_per_key.max(1);
        limits.max_records = limits.max_records.max(1);
        RecordStore {
            local,
            limits,
            by_key: HashMap::new(),
            by_expiry: BTreeSet::new(),
            len: 0,
            quota: Ledger::new(QuotaLimits {
                tenant_entries: limits.max_records_per_publisher,
                tenant_bytes: limits.max_bytes_per_publisher,
                total_entries: usize::MAX,
                total_bytes: limits.max_bytes,
            }),
        }
    }

    /// Stores (or refreshes) `publisher`'s `value` under `key`, expiring `ttl_ms` ms after
    /// `now` — a STORE (the paper, §2.3).
    ///
    /// Errors (nothing stored): [`StoreError::ValueTooLarge`], [`StoreError::ZeroTtl`],
    /// [`StoreError::TtlTooLong`], [`StoreError::KeyFull`], [`StoreError::Full`].
    pub fn put(
        &mut self,
        key: Key,
        value: Vec<u8>,
        publisher: NodeId,
        ttl_ms: u64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let lim = self.limits;
        if value.len() > lim.max_value_len {
            return Err(StoreError::ValueTooLarge {
                len: value.len(),
                max: lim.max_value_len,
            });
        }
        if ttl_ms == 0 {
            return Err(StoreError::ZeroTtl);
        }
        if ttl_ms > lim.max_ttl_ms {
            return Err(StoreError::TtlTooLong {
                ttl_ms,
                max_ms: lim.max_ttl_ms,
            });
        }
        let expires_at = now.plus_millis(ttl_ms);
        let own = publisher == self.local;
        self.expire_key(&key, now);
        let records = self.by_key.entry(key).or_default();
        // Refresh of an existing record.
        let tenant = if own {
            Tenant::Exempt
        } else {
            Tenant::Subject(*publisher.as_bytes())
        };
        if let Some(r) = records.iter_mut().find(|r| r.publisher == publisher) {
            let grow = Usage::new(0, value.len().saturating_sub(r.value.len()));
            self.quota.charge_tenant(tenant, grow)?;
            let shrink = Usage::new(0, r.value.len().saturating_sub(value.len()));
            self.quota.release_tenant(tenant, shrink);
            if !own {
                self.by_expiry.remove(&(r.expires_at, key, publisher));
                self.by_expiry.insert((expires_at, key, publisher));
            }
            r.value = value;
            r.expires_at = expires_at;
            return Ok(());
        }
        // Per-key bound: evict the soonest-expiring other publisher, unless the newcomer
        // would itself be the soonest to expire.
        let mut evict = None;
        if records.len() >= lim.max_records_per_key {
            let victim = records
                .iter()
                .enumerate()
                .filter(|(_, r)| r.publisher != self.local)
                .min_by_key(|(_, r)| r.expires_at);
            match victim {
                Some((i, r)) if own || r.expires_at < expires_at => evict = Some(i),
                _ => {
                    return Err(StoreError::KeyFull {
                        max: lim.max_records_per_key,
                    })
                }
            }
        }
        if evict.is_none() && self.len >= lim.max_records {
            self.expire(now);
            if self.len >= lim.max_records {
                self.drop_if_empty(&key);
                return Err(StoreError::Full {
                    max: lim.max_records,
                });
            }
        }
        // The evicted record (another publisher's) is released below: checking first is
        // conservative by at most one record.
        if let Err(e) = self.quota.check(tenant, Usage::new(1, value.len())) {
            self.drop_if_empty(&key);
            return Err(e.into());
        }
        if let Some(i) = evict {
            let records = self.by_key.entry(key).or_default();
            let old = records.swap_remove(i);
            self.by_expiry.remove(&(old.expires_at, key, old.publisher));
            self.len -= 1;
            self.release(&old);
        }
        let records = self.by_key.entry(key).or_default();
        self.quota
            .charge_tenant(tenant, Usage::new(1, value.len()))
            .expect("checked above; an eviction only frees");
        records.push(Record {
            key,
            value,
            publisher,
            expires_at,
        });
        if !own {
            self.by_expiry.insert((expires_at, key, publisher));
        }
        self.len += 1;
        Ok(())
    }

    /// Publishes our own record: [`put`](Self::put) with the local node as publisher. It is
    /// listed by [`republish_due`](Self::republish_due) until [`remove`](Self::remove)d.
    pub fn publish(
        &mut self,
        key: Key,
        value: Vec<u8>,
        ttl_ms: u64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.put(key, value, self.local, ttl_ms, now)
    }

    /// The unexpired records under `key` at `now` (the answer to FIND_VALUE), in no
    /// particular order. Expired records are never returned, whether or not
    /// [`expire`](Self::expire) ran.
    pub fn get(&self, key: &Key, now: Timestamp) -> impl Iterator<Item = &Record> + '_ {
        self.by_key
            .get(key)
            .into_iter()
            .flatten()
            .filter(move |r| !r.is_expired(now))
    }

    /// Withdraws `publisher`'s record under `key`; returns it.
    pub fn remove(&mut self, key: &Key, publisher: &NodeId) -> Option<Record> {
        let records = self.by_key.get_mut(key)?;
        let i = records.iter().position(|r| r.publisher == *publisher)?;
        let r = records.swap_remove(i);
        self.by_expiry.remove(&(r.expires_at, *key, r.publisher));
        self.len -= 1;
        self.release(&r);
        self.drop_if_empty(key);
        Some(r)
    }

    /// Deletes the other publishers' records expired at `now`; returns how many. Cost
    /// O(expired × log n).
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let mut n = 0;
        while let Some(&(at, key, publisher)) = self.by_expiry.first() {
            if at > now {
                break;
            }
            self.by_expiry.pop_first();
            if let Some(records) = self.by_key.get_mut(&key) {
                if let Some(i) = records.iter().position(|r| r.publisher == publisher) {
                    let r = records.swap_remove(i);
                    self.len -= 1;
                    n += 1;
                    self.release(&r);
                }
                self.drop_if_empty(&key);
            }
        }
        n
    }

    /// Our own records that expire within `margin_ms` of `now` (or already have), which the
    /// caller must re-advertise: STORE them again at the `k` closest nodes and refresh them
    /// here with [`publish`](Self::publish). Use [`REPUBLISH_MARGIN_MS`] for the Macula
    /// schedule (every TTL − 60 s). Sorted by expiry.
    pub fn republish_due(&self, now: Timestamp, margin_ms: u64) -> Vec<Record> {
        let horizon = now.plus_millis(margin_ms);
        let mut due: Vec<Record> = self
            .by_key
            .values()
            .flatten()
            .filter(|r| r.publisher == self.local && r.expires_at <= horizon)
            .cloned()
            .collect();
        due.sort_by_key(|r| (r.expires_at, r.key));
        due
    }

    /// Records held, ours included, expired ones not yet removed included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The limits in use.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Deletes the expired records of other publishers under `key`.
    fn expire_key(&mut self, key: &Key, now: Timestamp) {
        let Some(records) = self.by_key.get_mut(key) else {
            return;
        };
        let local = self.local;
        let (by_expiry, quota) = (&mut self.by_expiry, &mut self.quota);
        let before = records.len();
        records.retain(|r| {
            let gone = r.publisher != local && r.is_expired(now);
            if gone {
                by_expiry.remove(&(r.expires_at, r.key, r.publisher));
                let tenant = Tenant::Subject(*r.publisher.as_bytes());
                quota.release_tenant(tenant, Usage::new(1, r.value.len()));
            }
            !gone
        });
        self.len -= before - records.len();
        self.drop_if_empty(key);
    }

    /// Gives back the quota of a record leaving the store.
    fn release(&mut self, r: &Record) {
        let tenant = if r.publisher == self.local {
            Tenant::Exempt
        } else {
            Tenant::Subject(*r.publisher.as_bytes())
        };
        self.quota
            .release_tenant(tenant, Usage::new(1, r.value.len()));
    }

    fn drop_if_empty(&mut self, key: &Key) {
        if self.by_key.get(key).is_some_and(Vec::is_empty) {
            self.by_key.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::Id;
    use proptest::prelude::*;

    fn node(n: u8) -> NodeId {
        Id([n; 32])
    }

    const LOCAL: u8 = 0xee;

    fn store(per_key: usize, total: usize) -> RecordStore {
        RecordStore::with_limits(
            node(LOCAL),
            StoreLimits {
                max_records_per_key: per_key,
                max_records: total,
                ..StoreLimits::default()
            },
        )
    }

    fn values(s: &RecordStore, key: &Key, now: u64) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = s
            .get(key, Timestamp(now))
            .map(|r| r.value.clone())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn ttl_is_enforced_by_get_and_expire() {
        let mut s = store(4, 10);
        let key = Id::scoped("io.macula", "svc.echo");
        s.put(key, b"a".to_vec(), node(1), 1_000, Timestamp(0))
            .expect("valid");
        s.put(key, b"b".to_vec(), node(2), 2_000, Timestamp(0))
            .expect("valid");
        assert_eq!(values(&s, &key, 999), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            values(&s, &key, 1_000),
            vec![b"b".to_vec()],
            "expired at exactly ttl"
        );
        assert_eq!(s.len(), 2, "get does not mutate");
        assert_eq!(s.expire(Timestamp(1_000)), 1);
        assert_eq!(s.len(), 1);
        assert_eq!(s.expire(Timestamp(5_000)), 1);
        assert!(s.is_empty());
        assert!(values(&s, &key, 0).is_empty());
    }

    #[test]
    fn refresh_replaces_value_and_expiry() {
        let mut s = store(4, 10);
        let key = Id::scoped("r", "k");
        s.put(key, b"old".to_vec(), node(1), 1_000, Timestamp(0))
            .expect("valid");
        s.put(key, b"new".to_vec(), node(1), 1_000, Timestamp(900))
            .expect("valid");
        assert_eq!(s.len(), 1);
        assert_eq!(values(&s, &key, 1_500), vec![b"new".to_vec()]);
        assert_eq!(s.expire(Timestamp(1_500)), 0, "old expiry left the index");
        assert_eq!(s.expire(Timestamp(1_900)), 1);
    }

    #[test]
    fn bad_values_and_ttls_are_refused() {
        let mut s = store(4, 10);
        let key = Id::scoped("r", "k");
        let t = Timestamp(0);
        assert_eq!(
            s.put(key, vec![0; MAX_VALUE_LEN + 1], node(1), 1, t),
            Err(StoreError::ValueTooLarge {
                len: MAX_VALUE_LEN + 1,
                max: MAX_VALUE_LEN
            })
        );
        assert!(s.put(key, vec![0; MAX_VALUE_LEN], node(1), 1, t).is_ok());
        assert_eq!(
            s.put(key, vec![], node(2), MAX_TTL_MS + 1, t),
            Err(StoreError::TtlTooLong {
                ttl_ms: MAX_TTL_MS + 1,
                max_ms: MAX_TTL_MS
            })
        );
        assert_eq!(s.put(key, vec![], node(2), 0, t), Err(StoreError::ZeroTtl));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn per_key_bound_evicts_soonest_expiring() {
        let mut s = store(2, 10);
        let key = Id::scoped("r", "k");
        let t = Timestamp(0);
        s.put(key, b"1".to_vec(), node(1), 100, t).expect("room");
        s.put(key, b"2".to_vec(), node(2), 200, t).expect("room");
        // Expires sooner than both: refused.
        assert_eq!(
            s.put(key, b"3".to_vec(), node(3), 50, t),
            Err(StoreError::KeyFull { max: 2 })
        );
        // Expires later than 1: evicts 1.
        s.put(key, b"4".to_vec(), node(4), 300, t)
            .expect("evicts 1");
        assert_eq!(values(&s, &key, 0), vec![b"2".to_vec(), b"4".to_vec()]);
        assert_eq!(s.len(), 2);
        assert_eq!(s.expire(Timestamp(100)), 0, "evicted record left the index");
        // An expired record frees its slot for anyone.
        s.put(key, b"5".to_vec(), node(5), 10, Timestamp(200))
            .expect("2 expired");
        assert_eq!(values(&s, &key, 200), vec![b"4".to_vec(), b"5".to_vec()]);
    }

    #[test]
    fn total_bound_is_enforced_after_expiring() {
        let mut s = store(4, 3);
        for i in 0..3u8 {
            s.put(Id([i; 32]), vec![i], node(1), 100, Timestamp(0))
                .expect("room");
        }
        assert_eq!(
            s.put(Id([9; 32]), vec![], node(1), 100, Timestamp(50)),
            Err(StoreError::Full { max: 3 })
        );
        assert!(s.get(&Id([9; 32]), Timestamp(50)).next().is_none());
        s.put(Id([9; 32]), vec![], node(1), 100, Timestamp(100))
            .expect("all expired");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn own_records_are_listed_for_republish_and_survive_expire() {
        let mut s = store(4, 10);
        let key = Id::scoped("io.macula", "svc.echo");
        let other = Id::scoped("io.macula", "svc.other");
        s.publish(key, b"me".to_vec(), DEFAULT_RECORD_TTL_MS, Timestamp(0))
            .expect("valid");
        s.put(
            other,
            b"them".to_vec(),
            node(1),
            DEFAULT_RECORD_TTL_MS,
            Timestamp(0),
        )
        .expect("valid");
        let margin = REPUBLISH_MARGIN_MS;
        assert!(s.republish_due(Timestamp(239_999), margin).is_empty());
        let due = s.republish_due(Timestamp(240_000), margin);
        assert_eq!(due.len(), 1, "only ours, at TTL - 60 s");
        assert_eq!(due[0].key, key);
        // Missed the window: hidden from get, but still due and not expired away.
        assert_eq!(s.expire(Timestamp(400_000)), 1);
        assert!(s.get(&key, Timestamp(400_000)).next().is_none());
        assert_eq!(s.republish_due(Timestamp(400_000), margin).len(), 1);
        s.publish(
            key,
            b"me".to_vec(),
            DEFAULT_RECORD_TTL_MS,
            Timestamp(400_000),
        )
        .expect("refresh");
        assert!(s.republish_due(Timestamp(400_000), margin).is_empty());
        assert_eq!(
            s.remove(&key, &node(LOCAL)).map(|r| r.value),
            Some(b"me".to_vec())
        );
        assert!(s.is_empty());
    }

    proptest! {
        #[test]
        fn bounds_and_ttl_hold_under_random_operations(
            ops in proptest::collection::vec((0u8..6, 0u8..8, 1u64..500, 0u64..50, any::<bool>()), 0..300)
        ) {
            let mut s = store(3, 10);
            let mut now = 0u64;
            for (key, publisher, ttl, step, expire) in ops {
                now += step;
                let t = Timestamp(now);
                let publisher = if publisher == 7 { node(LOCAL) } else { node(publisher) };
                let _ = s.put(Id([key; 32]), vec![key], publisher, ttl, t);
                if expire { s.expire(t); }
                prop_assert!(s.len() <= 10);
                let mut total = 0;
                for k in 0..6u8 {
                    let all = s.by_key.get(&Id([k; 32])).map_or(0, Vec::len);
                    prop_assert!(all <= 3);
                    total += all;
                    for r in s.get(&Id([k; 32]), t) {
                        prop_assert!(r.expires_at > t, "expired record returned");
                    }
                }
                prop_assert_eq!(total, s.len());
                let others = s.by_key.values().flatten().filter(|r| r.publisher != node(LOCAL)).count();
                prop_assert_eq!(others, s.by_expiry.len(), "expiry index out of sync");
            }
        }
    }

    #[test]
    fn one_publisher_at_its_quota_is_refused_while_another_stores() {
        let key = |n: u8| Id([n; 32]);
        let t = Timestamp::from_millis(1_000);
        let mut s = RecordStore::with_limits(
            node(LOCAL),
            StoreLimits {
                max_records_per_publisher: 2,
                max_bytes_per_publisher: 100,
                max_bytes: 250,
                ..StoreLimits::default()
            },
        );
        s.put(key(1), vec![0; 10], node(1), 60_000, t).unwrap();
        s.put(key(2), vec![0; 10], node(1), 60_000, t).unwrap();
        let e = s.put(key(3), vec![0; 10], node(1), 60_000, t).unwrap_err();
        assert!(matches!(
            e,
            StoreError::Quota(crate::quota::QuotaError::TenantEntries { .. })
        ));
        // A refresh that grows past the bytes is refused; one within them passes.
        assert!(s.put(key(1), vec![0; 91], node(1), 60_000, t).is_err());
        s.put(key(1), vec![0; 90], node(1), 60_000, t).unwrap();
        // Another publisher stores; the local node is exempt from the share.
        s.put(key(3), vec![0; 100], node(2), 60_000, t).unwrap();
        s.publish(key(4), vec![0; 40], 60_000, t).unwrap();
        // The total bytes bind everyone: 100 + 100 + 40 held, 250 allowed.
        let e = s.put(key(5), vec![0; 11], node(3), 60_000, t).unwrap_err();
        assert!(matches!(
            e,
            StoreError::Quota(crate::quota::QuotaError::TotalBytes { .. })
        ));
        // Withdrawn and expired records give their share back.
        s.remove(&key(1), &node(1));
        s.put(key(5), vec![0; 10], node(1), 60_000, t).unwrap();
        s.expire(t.plus_millis(60_000));
        s.put(key(6), vec![0; 100], node(3), 60_000, t).unwrap();
        assert_eq!(s.quota.total(), crate::quota::Usage::new(2, 140));
    }
}
