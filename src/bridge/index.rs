//! The subtree index of one realm (pure: no tokio, no clock reads; callers pass `now`).
//!
//! A bridge keeps, per realm, the provider records its children stored
//! (`docs/DISCOVERY.md`, "Bridge: subtree index, advertisement, escalation"): one *copy* per
//! (key, publisher, child link), each with its own expiry. The copies give
//!
//! - the answers to `find_value` for the subtree ([`SubtreeIndex::get`]): one record per
//!   distinct (key, publisher), whatever the number of links that stored it;
//! - the **route map** publisher node id → child link ([`SubtreeIndex::route`]) that calls with
//!   a `target` follow;
//! - the **upward advertisement** toward the parent bridge, aggregated: each distinct
//!   (key, publisher) is sent once when it first appears, withdrawn once when its last copy
//!   goes, and everything again on a resync. The index keeps what the parent was told and a
//!   bounded set of pairs whose state may have changed since; the parent-link task pulls the
//!   resulting [`Upward`] changes with [`SubtreeIndex::take_upward`] (the sans-IO `poll_*`
//!   shape of quinn-proto).
//!
//! Each copy keeps the **procedure name** its STORE carried (checked against the key by the
//! caller), so that the advertisement upward names it too: a parent that restricts this
//! bridge's registrations can then check each record (`docs/AUTH.md`, "Permissions").
//!
//! Bounds ([`IndexLimits`]): copies per child link, copies in total and publishers per key;
//! and a per-tenant quota ([`crate::quota`], `quota.records_*`) in copies and in bytes, where
//! a copy's bytes are [`copy_bytes`]. A STORE beyond them is refused ([`IndexError`]); a
//! refresh of an existing copy passes the count bounds and is refused only if its new value
//! grows past a byte bound. Every map here is bounded by those limits: the advertised and
//! dirty sets hold only pairs that are, or were since the last [`SubtreeIndex::take_upward`],
//! in the index.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::quota::{Ledger, QuotaError, QuotaLimits, Tenant, Usage};
use crate::router::PeerKey;
use crate::rpc::ProviderRecord;
use crate::wire::NodeId;

/// Default bound of copies stored through one child link: 10,000 (a street of clusters with
/// a few hundred procedures each).
pub const DEFAULT_MAX_RECORDS_PER_LINK: usize = 10_000;

/// Default bound of copies in one realm's index: 100,000 (as [`crate::dht::store::MAX_RECORDS`];
/// a copy is ~200 bytes, so ~20 MB).
pub const DEFAULT_MAX_RECORDS: usize = 100_000;

/// Default bound of distinct publishers under one key: 256. A `find_value_reply` carries at
/// most [`crate::wire::MAX_RECORDS`] (32) of them.
pub const DEFAULT_MAX_PUBLISHERS_PER_KEY: usize = 256;

/// A record key (realm-scoped, [`crate::dht::Id::scoped`]), 32 bytes.
pub type RecordKey = [u8; 32];

/// One distinct record: (key, publisher).
pub type Pair = (RecordKey, NodeId);

/// Bounds of a [`SubtreeIndex`], in copies (one copy = one (key, publisher, link)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLimits {
    /// Copies one child link may hold. Default [`DEFAULT_MAX_RECORDS_PER_LINK`].
    pub per_link: usize,
    /// Copies in the whole index. Default [`DEFAULT_MAX_RECORDS`].
    pub total: usize,
    /// Distinct publishers under one key. Default [`DEFAULT_MAX_PUBLISHERS_PER_KEY`].
    pub per_key: usize,
}

impl Default for IndexLimits {
    fn default() -> Self {
        IndexLimits {
            per_link: DEFAULT_MAX_RECORDS_PER_LINK,
            total: DEFAULT_MAX_RECORDS,
            per_key: DEFAULT_MAX_PUBLISHERS_PER_KEY,
        }
    }
}

/// Why a STORE was refused. All map to the `full` reason of
/// `macula_dht_store_refused_total` and to a `LIMIT_EXCEEDED` error frame; a
/// [`IndexError::Quota`] is also counted in `macula_quota_refused_total{table="records"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The link's tenant, or the index, is at a quota (entries or bytes).
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// The link already holds [`IndexLimits::per_link`] copies.
    #[error("this link already holds {0} records")]
    LinkFull(usize),
    /// The index already holds [`IndexLimits::total`] copies.
    #[error("the subtree index already holds {0} records")]
    IndexFull(usize),
    /// The key already has [`IndexLimits::per_key`] publishers.
    #[error("the key already has {0} publishers")]
    KeyFull(usize),
}

/// Bytes a copy is charged in the quota: its key and publisher (32 each), the record's node
/// id (32) and cluster name, and the procedure name.
pub fn copy_bytes(record: &ProviderRecord, name: Option<&str>) -> usize {
    96 + record.cluster.len() + name.map_or(0, str::len)
}

/// A copy to store: what a `store` frame carried, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCopy {
    /// Record key.
    pub key: RecordKey,
    /// Publisher (the provider node).
    pub publisher: NodeId,
    /// The record.
    pub record: ProviderRecord,
    /// The procedure name, when the `store` carried one whose key is `key`.
    pub name: Option<Arc<str>>,
}

/// A copy as [`SubtreeIndex::copies_where`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCopy {
    /// Record key.
    pub key: RecordKey,
    /// Publisher.
    pub publisher: NodeId,
    /// The encoded record.
    pub value: bytes::Bytes,
    /// The procedure name, if known.
    pub name: Option<Arc<str>>,
    /// Lifetime left.
    pub remaining: Duration,
}

/// One record of a [`SubtreeIndex::get`] answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedRecord {
    /// The publisher (the provider node).
    pub publisher: NodeId,
    /// The most recently stored value among the copies.
    pub record: ProviderRecord,
    /// Lifetime left of the longest-lived copy.
    pub remaining: Duration,
}

/// A change the parent must be told about (see [`SubtreeIndex::take_upward`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upward {
    /// `store` this record (first appearance, new value, or resync).
    Store {
        /// Record key.
        key: RecordKey,
        /// Publisher.
        publisher: NodeId,
        /// The current value.
        record: ProviderRecord,
        /// The procedure name, when a copy carried one.
        name: Option<Arc<str>>,
    },
    /// `store` with `ttl_ms = 0`: the last copy of this record went.
    Withdraw {
        /// Record key.
        key: RecordKey,
        /// Publisher.
        publisher: NodeId,
    },
}

/// What a mutation did, for the driver: `gone` lists the publishers that lost their last
/// route (their cached answers are invalidated), `removed` counts the copies deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Copies deleted.
    pub removed: usize,
    /// Publishers with no route left, each once.
    pub gone: Vec<NodeId>,
}

#[derive(Debug, Clone)]
struct Copy {
    link: PeerKey,
    record: ProviderRecord,
    name: Option<Arc<str>>,
    expires: Instant,
    /// Store order, to pick the most recent value.
    seq: u64,
}

/// The parent-facing state: what it was told, and what may have changed since.
#[derive(Debug, Default)]
struct UpwardState {
    advertised: HashSet<Pair>,
    dirty: HashSet<Pair>,
}

/// The provider records one realm's children stored, with routes and expiry. See the module
/// documentation.
#[derive(Debug)]
pub struct SubtreeIndex {
    limits: IndexLimits,
    records: BTreeMap<Pair, Vec<Copy>>,
    per_link: HashMap<PeerKey, HashSet<Pair>>,
    /// Publisher → (link → copies via that link).
    routes: HashMap<NodeId, BTreeMap<PeerKey, u32>>,
    expiry: BTreeSet<(Instant, Pair, PeerKey)>,
    copies: usize,
    seq: u64,
    upward: Option<UpwardState>,
    /// Copies and bytes per link, per tenant and in total.
    quota: Ledger,
}

impl SubtreeIndex {
    /// An empty index with `limits` and the per-tenant `quota` (`quota.records_*`). With
    /// `upward` (the bridge has a parent) it tracks what to advertise; without,
    /// [`SubtreeIndex::take_upward`] never returns anything.
    pub fn new(limits: IndexLimits, quota: QuotaLimits, upward: bool) -> Self {
        SubtreeIndex {
            limits,
            records: BTreeMap::new(),
            per_link: HashMap::new(),
            routes: HashMap::new(),
            expiry: BTreeSet::new(),
            copies: 0,
            seq: 0,
            upward: upward.then(UpwardState::default),
            quota: Ledger::new(quota),
        }
    }

    /// The quota accounts (what each link and tenant holds).
    pub fn quota(&self) -> &Ledger {
        &self.quota
    }

    /// Stores (or refreshes) the copy of (`key`, `publisher`) that came through `link`, whose
    /// holder is `tenant`, living `ttl` from `now`. A zero `ttl` withdraws it
    /// ([`SubtreeIndex::withdraw`]).
    ///
    /// Errors: [`IndexError`] when a new copy would exceed a bound or a quota, or a refresh's
    /// new value would grow past a byte quota.
    pub fn store(
        &mut self,
        link: PeerKey,
        tenant: Tenant,
        copy: NewCopy,
        ttl: Duration,
        now: Instant,
    ) -> Result<Removal, IndexError> {
        let NewCopy {
            key,
            publisher,
            record,
            name,
        } = copy;
        if ttl.is_zero() {
            return Ok(self.withdraw(link, key, publisher));
        }
        let pair = (key, publisher);
        let expires = now + ttl;
        self.seq += 1;
        let seq = self.seq;
        if let Some(copies) = self.records.get_mut(&pair) {
            if let Some(i) = copies.iter().position(|c| c.link == link) {
                // Refresh: the value may change (the most recent one is advertised).
                let was_latest = latest(copies).record.clone();
                let c = &mut copies[i];
                let old = Usage::new(1, copy_bytes(&c.record, c.name.as_deref()));
                let new = Usage::new(1, copy_bytes(&record, name.as_deref()));
                self.quota.resize(link, tenant, old, new)?;
                self.expiry.remove(&(c.expires, pair, link));
                c.expires = expires;
                c.record = record;
                c.name = name.or(c.name.take());
                c.seq = seq;
                self.expiry.insert((expires, pair, link));
                if latest(copies).record != was_latest {
                    self.mark(pair);
                }
                return Ok(Removal::default());
            }
        }
        // A new copy: check the bounds first.
        let link_count = self.per_link.get(&link).map_or(0, HashSet::len);
        if link_count >= self.limits.per_link {
            return Err(IndexError::LinkFull(link_count));
        }
        if self.copies >= self.limits.total {
            return Err(IndexError::IndexFull(self.copies));
        }
        let new_pair = !self.records.contains_key(&pair);
        if new_pair {
            let publishers = self.publishers_of(&key);
            if publishers >= self.limits.per_key {
                return Err(IndexError::KeyFull(publishers));
            }
        }
        let usage = Usage::new(1, copy_bytes(&record, name.as_deref()));
        self.quota.charge(link, tenant, usage)?;
        let copies = self.records.entry(pair).or_default();
        let before = (!copies.is_empty()).then(|| latest(copies).record.clone());
        copies.push(Copy {
            link,
            record,
            name,
            expires,
            seq,
        });
        let changed = before.as_ref() != Some(&latest(copies).record);
        self.per_link.entry(link).or_default().insert(pair);
        *self
            .routes
            .entry(publisher)
            .or_default()
            .entry(link)
            .or_insert(0) += 1;
        self.expiry.insert((expires, pair, link));
        self.copies += 1;
        if changed {
            self.mark(pair);
        }
        Ok(Removal::default())
    }

    /// Removes the copy of (`key`, `publisher`) that came through `link` (a STORE with
    /// `ttl_ms = 0`). Unknown copies are ignored.
    pub fn withdraw(&mut self, link: PeerKey, key: RecordKey, publisher: NodeId) -> Removal {
        let mut out = Removal::default();
        self.remove_copy((key, publisher), link, &mut out);
        out
    }

    /// Every live copy whose link passes `keep`. Used to hand a fleet peer the records of
    /// this worker's own children.
    pub fn copies_where(&self, keep: impl Fn(PeerKey) -> bool, now: Instant) -> Vec<HeldCopy> {
        let mut out = Vec::new();
        for ((key, publisher), copies) in &self.records {
            for c in copies {
                if keep(c.link) && c.expires > now {
                    out.push(HeldCopy {
                        key: *key,
                        publisher: *publisher,
                        value: c.record.encode(),
                        name: c.name.clone(),
                        remaining: c.expires - now,
                    });
                }
            }
        }
        out
    }

    /// Removes every copy that came through `link` (the link closed).
    pub fn remove_link(&mut self, link: PeerKey) -> Removal {
        let mut out = Removal::default();
        let pairs: Vec<Pair> = self
            .per_link
            .get(&link)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for pair in pairs {
            self.remove_copy(pair, link, &mut out);
        }
        self.per_link.remove(&link);
        self.quota.release_link(link);
        out
    }

    /// Removes every copy whose expiry is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Removal {
        let mut out = Removal::default();
        while let Some(&(at, pair, link)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.remove_copy(pair, link, &mut out);
        }
        out
    }

    /// The unexpired records under `key` as of `now`, one per publisher, at most `max`
    /// (ordered by publisher id).
    pub fn get(&self, key: &RecordKey, now: Instant, max: usize) -> Vec<IndexedRecord> {
        self.records
            .range((*key, [0u8; 32])..=(*key, [0xff; 32]))
            .filter_map(|((_, publisher), copies)| {
                let live: Vec<&Copy> = copies.iter().filter(|c| c.expires > now).collect();
                let newest = live.iter().max_by_key(|c| c.seq)?;
                let longest = live.iter().map(|c| c.expires).max()?;
                Some(IndexedRecord {
                    publisher: *publisher,
                    record: newest.record.clone(),
                    remaining: longest.saturating_duration_since(now),
                })
            })
            .take(max)
            .collect()
    }

    /// The child link through which `node` is reached, other than `except` (the link a call
    /// came from). Among several, the lowest link key (the oldest link): deterministic.
    pub fn route(&self, node: &NodeId, except: Option<PeerKey>) -> Option<PeerKey> {
        self.routes
            .get(node)?
            .keys()
            .copied()
            .find(|l| Some(*l) != except)
    }

    /// Copies held (the gauge `macula_dht_records` sums these over realms).
    pub fn len(&self) -> usize {
        self.copies
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.copies == 0
    }

    /// Distinct (key, publisher) pairs held.
    pub fn pairs(&self) -> usize {
        self.records.len()
    }

    /// The parent link (re)connected: the parent holds nothing of ours, so every pair is to
    /// be stored again. No-op without upward tracking.
    pub fn resync(&mut self) {
        if let Some(u) = &mut self.upward {
            u.advertised.clear();
            u.dirty.clear();
            u.dirty.extend(self.records.keys().copied());
        }
    }

    /// Periodic refresh (every `record_ttl_ms / 2`): every pair is to be stored again, and
    /// withdraws still owed stay owed. No-op without upward tracking.
    pub fn refresh_all(&mut self) {
        if let Some(u) = &mut self.upward {
            u.dirty.extend(self.records.keys().copied());
        }
    }

    /// Pairs waiting to be looked at by [`SubtreeIndex::take_upward`] (at most the pairs held
    /// plus those the parent still has to be told are gone).
    pub fn upward_backlog(&self) -> usize {
        self.upward.as_ref().map_or(0, |u| u.dirty.len())
    }

    /// Whether [`SubtreeIndex::take_upward`] has something to return.
    pub fn upward_pending(&self) -> bool {
        self.upward.as_ref().is_some_and(|u| !u.dirty.is_empty())
    }

    /// Takes at most `max` changes to send to the parent, and records them as sent. Each
    /// pair appears at most once: `Store` when it is held (with its current value),
    /// `Withdraw` when it is gone but the parent was told about it.
    pub fn take_upward(&mut self, max: usize) -> Vec<Upward> {
        let Some(u) = &mut self.upward else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while out.len() < max {
            let Some(pair) = u.dirty.iter().next().copied() else {
                break;
            };
            u.dirty.remove(&pair);
            match self.records.get(&pair) {
                Some(copies) if !copies.is_empty() => {
                    u.advertised.insert(pair);
                    out.push(Upward::Store {
                        key: pair.0,
                        publisher: pair.1,
                        record: latest(copies).record.clone(),
                        name: copies.iter().find_map(|c| c.name.clone()),
                    });
                }
                _ => {
                    if u.advertised.remove(&pair) {
                        out.push(Upward::Withdraw {
                            key: pair.0,
                            publisher: pair.1,
                        });
                    }
                }
            }
        }
        out
    }

    fn publishers_of(&self, key: &RecordKey) -> usize {
        self.records
            .range((*key, [0u8; 32])..=(*key, [0xff; 32]))
            .count()
    }

    /// Notes that `pair` may need telling the parent. A pair that is neither held nor known
    /// to the parent needs nothing (it came and went between two pulls): it leaves the dirty
    /// set, so churn while the parent is away cannot grow it.
    fn mark(&mut self, pair: Pair) {
        if let Some(u) = &mut self.upward {
            if self.records.contains_key(&pair) || u.advertised.contains(&pair) {
                u.dirty.insert(pair);
            } else {
                u.dirty.remove(&pair);
            }
        }
    }

    fn remove_copy(&mut self, pair: Pair, link: PeerKey, out: &mut Removal) {
        let Some(copies) = self.records.get_mut(&pair) else {
            return;
        };
        let Some(i) = copies.iter().position(|c| c.link == link) else {
            return;
        };
        let before = latest(copies).record.clone();
        let c = copies.swap_remove(i);
        let bytes = copy_bytes(&c.record, c.name.as_deref());
        self.quota.release(link, Usage::new(1, bytes));
        self.expiry.remove(&(c.expires, pair, link));
        self.copies -= 1;
        out.removed += 1;
        if copies.is_empty() {
            self.records.remove(&pair);
            self.mark(pair);
        } else if latest(copies).record != before {
            self.mark(pair);
        }
        if let Some(set) = self.per_link.get_mut(&link) {
            set.remove(&pair);
            if set.is_empty() {
                self.per_link.remove(&link);
            }
        }
        let publisher = pair.1;
        if let Some(links) = self.routes.get_mut(&publisher) {
            if let Some(n) = links.get_mut(&link) {
                *n -= 1;
                if *n == 0 {
                    links.remove(&link);
                }
            }
            if links.is_empty() {
                self.routes.remove(&publisher);
                out.gone.push(publisher);
            }
        }
    }
}

/// The most recently stored copy (`copies` is never empty where this is called).
fn latest(copies: &[Copy]) -> &Copy {
    copies
        .iter()
        .max_by_key(|c| c.seq)
        .expect("a record has at least one copy")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    fn rec(node: u8, cluster: &str) -> ProviderRecord {
        ProviderRecord {
            node_id: [node; 32],
            cluster: cluster.into(),
        }
    }

    fn tenant(link: PeerKey) -> Tenant {
        Tenant::Subject([link as u8; 32])
    }

    fn copy(key: RecordKey, publisher: NodeId, record: ProviderRecord) -> NewCopy {
        NewCopy {
            key,
            publisher,
            record,
            name: None,
        }
    }

    fn store(
        ix: &mut SubtreeIndex,
        link: PeerKey,
        key: u8,
        node: u8,
        now: Instant,
    ) -> Result<Removal, IndexError> {
        ix.store(
            link,
            tenant(link),
            copy([key; 32], [node; 32], rec(node, "a")),
            TTL,
            now,
        )
    }

    fn upward(ix: &mut SubtreeIndex) -> Vec<Upward> {
        let mut v = ix.take_upward(usize::MAX);
        v.sort_by_key(|u| match u {
            Upward::Store { key, publisher, .. } | Upward::Withdraw { key, publisher } => {
                (*key, *publisher)
            }
        });
        v
    }

    #[test]
    fn store_get_and_route() {
        let now = Instant::now();
        let mut ix = SubtreeIndex::new(IndexLimits::default(), QuotaLimits::UNBOUNDED, false);
        store(&mut ix, 1, 9, 5, now).unwrap();
        store(&mut ix, 1, 9, 6, now).unwrap();
        let got = ix.get(&[9; 32], now + Duration::from_secs(100), 32);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].publisher, [5; 32]);
        assert_eq!(got[0].record, rec(5, "a"));
        assert_eq!(got[0].remaining, Duration::from_secs(200));
        assert!(ix.get(&[8; 32], now, 32).is_empty());
        assert_eq!(ix.get(&[9; 32], now, 1).len(), 1, "capped at max");
        assert_eq!(ix.route(&[5; 32], None), Some(1));
        assert_eq!(
            ix.route(&[5; 32], Some(1)),
            None,
            "not back where it came from"
        );
        assert_eq!(ix.route(&[7; 32], None), None);
        assert_eq!((ix.len(), ix.pairs()), (2, 2));
    }

    #[test]
    fn refresh_extends_and_replaces_the_value() {
        let now = Instant::now();
        let mut ix = SubtreeIndex::new(IndexLimits::default(), QuotaLimits::UNBOUNDED, false);
        store(&mut ix, 1, 9, 5, now).unwrap();
        let later = now + Duration::from_secs(200);
        ix.store(
            1,
            tenant(1),
            copy([9; 32], [5; 32], rec(5, "b")),
            TTL,
            later,
        )
        .unwrap();
        assert_eq!(ix.len(), 1, "a refresh is not a new copy");
        // Past the first expiry the refreshed copy is still there.
        let t = now + TTL + Duration::from_secs(1);
        assert!(ix.expire(t).gone.is_empty());
        let got = ix.get(&[9; 32], t, 32);
        assert_eq!(got[0].record, rec(5, "b"));
        assert_eq!(got[0].remaining, TTL - Duration::from_secs(101));
    }

    #[test]
    fn withdraw_and_zero_ttl_remove_one_copy() {
        let now = Instant::now();
        let mut ix = SubtreeIndex::new(IndexLimits::default(), QuotaLimits::UNBOUNDED, false);
        store(&mut ix, 1, 9, 5, now).unwrap();
        store(&mut ix, 2, 9, 5, now).unwrap();
        store(&mut ix, 1, 8, 5, now).unwrap();
        let r = ix
            .store(
                1,
                tenant(1),
                copy([9; 32], [5; 32], rec(5, "a")),
                Duration::ZERO,
                now,
            )
            .unwrap();
        assert_eq!(r.removed, 1);
        assert!(r.gone.is_empty(), "still routed via both links");
        assert_eq!(ix.get(&[9; 32], now, 32).len(), 1, "link 2's copy remains");
        assert_eq!(ix.withdraw(1, [8; 32], [5; 32]).gone, Vec::<NodeId>::new());
        assert_eq!(ix.route(&[5; 32], None), Some(2));
        let r = ix.withdraw(2, [9; 32], [5; 32]);
        assert_eq!(r.gone, vec![[5; 32]]);
        assert!(ix.is_empty());
        assert_eq!(ix.withdraw(2, [9; 32], [5; 32]), Removal::default());
    }

    #[test]
    fn link_drop_takes_its_copies_and_routes() {
        let now = Instant::now();
        let mut ix = SubtreeIndex::new(IndexLimits::default(), QuotaLimits::UNBOUNDED, false);
        store(&mut ix, 1, 9, 5, now).unwrap();
        store(&mut ix, 1, 8, 5, now).unwrap();
        store(&mut ix, 1, 9, 6, now).unwrap();
        store(&mut ix, 2, 9, 6, now).unwrap();
        let mut r = ix.remove_link(1);
        r.gone.sort();
        assert_eq!(r.removed, 3);
        assert_eq!(r.gone, vec![[5; 32]], "6 is still routed via link 2");
        assert_eq!(ix.route(&[6; 32], None), Some(2));
        assert_eq!(ix.route(&[5; 32], None), None);
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.remove_link(1), Removal::default());
    }

    #[test]
    fn expiry_with_explicit_now() {
        let now = Instant::now();
        let mut ix = SubtreeIndex::new(IndexLimits::default(), QuotaLimits::UNBOUNDED, false);
        store(&mut ix, 1, 9, 5, now).unwrap();
        ix.store(
            1,
            tenant(1),
            copy([9; 32], [6; 32], rec(6, "a")),
            TTL * 2,
            now,
        )
        .unwrap();
        let edge = now + TTL;
        assert_eq!(ix.get(&[9; 32], edge, 32).len(), 1, "hidden at its expiry");
        assert_eq!(ix.expire(edge - Duration::from_millis(1)).removed, 0);
        let r = ix.expire(edge);
        assert_eq!((r.removed, r.gone), (1, vec![[5; 32]]));
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.expire(now + TTL * 2).removed, 1);
        assert!(ix.is_empty());
    }

    #[test]
    fn bounds_refuse_new_copies_but_not_refreshes() {
        let now = Instant::now();
        let limits = IndexLimits {
            per_link: 2,
            total: 3,
            per_key: 2,
        };
        let mut ix = SubtreeIndex::new(limits, QuotaLimits::UNBOUNDED, false);
        store(&mut ix, 1, 1, 1, now).unwrap();
        store(&mut ix, 1, 1, 2, now).unwrap();
        assert_eq!(store(&mut ix, 1, 2, 1, now), Err(IndexError::LinkFull(2)));
        assert_eq!(store(&mut ix, 2, 1, 3, now), Err(IndexError::KeyFull(2)));
        store(&mut ix, 2, 1, 1, now).unwrap(); // another copy of an existing pair
        assert_eq!(store(&mut ix, 3, 2, 1, now), Err(IndexError::IndexFull(3)));
        // Refreshes pass at the bounds.
        store(&mut ix, 1, 1, 1, now + Duration::from_secs(1)).unwrap();
        assert_eq!(ix.len(), 3);
        ix.withdraw(1, [1; 32], [2; 32]);
        store(&mut ix, 1, 2, 1, now).unwrap();
    }

    #[test]
    fn aggregation_advertises_each_pair_once() {
        let now = Instant::now();
        let mut ix = SubtreeIndex::new(IndexLimits::default(), QuotaLimits::UNBOUNDED, true);
        store(&mut ix, 1, 9, 5, now).unwrap();
        store(&mut ix, 2, 9, 5, now).unwrap(); // same pair from a second child
        assert!(ix.upward_pending());
        assert_eq!(
            upward(&mut ix),
            vec![Upward::Store {
                key: [9; 32],
                publisher: [5; 32],
                record: rec(5, "a"),
                name: None,
            }]
        );
        assert!(!ix.upward_pending());
        // A refresh with the same value, and the loss of one of two copies: nothing to say.
        store(&mut ix, 1, 9, 5, now + Duration::from_secs(1)).unwrap();
        ix.remove_link(1);
        assert!(upward(&mut ix).is_empty());
        // The last copy goes: one withdraw.
        ix.withdraw(2, [9; 32], [5; 32]);
        assert_eq!(
            upward(&mut ix),
            vec![Upward::Withdraw {
                key: [9; 32],
                publisher: [5; 32],
            }]
        );
        // Appear and vanish between two pulls: the parent never hears of it.
        store(&mut ix, 1, 7, 5, now).unwrap();
        ix.expire(now + TTL);
        assert!(upward(&mut ix).is_empty());
    }

    #[test]
    fn churn_while_the_parent_is_away_stays_bounded() {
        let now = Instant::now();
        let mut ix = SubtreeIndex::new(IndexLimits::default(), QuotaLimits::UNBOUNDED, true);
        store(&mut ix, 1, 1, 1, now).unwrap();
        upward(&mut ix); // the parent knows (1, 1)
        for k in 2..=200u8 {
            store(&mut ix, 1, k, 1, now).unwrap();
            ix.withdraw(1, [k; 32], [1; 32]);
        }
        ix.withdraw(1, [1; 32], [1; 32]);
        assert_eq!(ix.upward_backlog(), 1, "only the withdraw the parent needs");
        assert_eq!(
            upward(&mut ix),
            vec![Upward::Withdraw {
                key: [1; 32],
                publisher: [1; 32],
            }]
        );
    }

    #[test]
    fn value_change_is_advertised_again() {
        let now = Instant::now();
        let mut ix = SubtreeIndex::new(IndexLimits::default(), QuotaLimits::UNBOUNDED, true);
        store(&mut ix, 1, 9, 5, now).unwrap();
        upward(&mut ix);
        ix.store(
            2,
            tenant(2),
            copy([9; 32], [5; 32], rec(5, "moved")),
            TTL,
            now,
        )
        .unwrap();
        assert_eq!(
            upward(&mut ix),
            vec![Upward::Store {
                key: [9; 32],
                publisher: [5; 32],
                record: rec(5, "moved"),
                name: None,
            }]
        );
        // The newest copy goes: the older value is advertised again.
        ix.remove_link(2);
        assert_eq!(
            upward(&mut ix),
            vec![Upward::Store {
                key: [9; 32],
                publisher: [5; 32],
                record: rec(5, "a"),
                name: None,
            }]
        );
    }

    #[test]
    fn resync_and_refresh_send_everything() {
        let now = Instant::now();
        let mut ix = SubtreeIndex::new(IndexLimits::default(), QuotaLimits::UNBOUNDED, true);
        store(&mut ix, 1, 9, 5, now).unwrap();
        store(&mut ix, 1, 9, 6, now).unwrap();
        store(&mut ix, 2, 9, 6, now).unwrap();
        assert_eq!(upward(&mut ix).len(), 2);
        ix.refresh_all();
        assert_eq!(upward(&mut ix).len(), 2, "each pair once");
        // Gone while the parent was away, then a resync: no withdraw is owed (the parent
        // dropped our records with the old link), the rest is stored again.
        ix.withdraw(1, [9; 32], [5; 32]);
        ix.resync();
        assert_eq!(
            upward(&mut ix),
            vec![Upward::Store {
                key: [9; 32],
                publisher: [6; 32],
                record: rec(6, "a"),
                name: None,
            }]
        );
        // take_upward respects max.
        store(&mut ix, 1, 1, 1, now).unwrap();
        store(&mut ix, 1, 2, 1, now).unwrap();
        assert_eq!(ix.take_upward(1).len(), 1);
        assert_eq!(ix.take_upward(5).len(), 1);
    }

    #[test]
    fn without_a_parent_nothing_is_tracked() {
        let now = Instant::now();
        let mut ix = SubtreeIndex::new(IndexLimits::default(), QuotaLimits::UNBOUNDED, false);
        store(&mut ix, 1, 9, 5, now).unwrap();
        ix.resync();
        assert!(!ix.upward_pending());
        assert!(ix.take_upward(10).is_empty());
    }

    fn named(key: RecordKey, publisher: NodeId, name: &str) -> NewCopy {
        NewCopy {
            name: Some(Arc::from(name)),
            ..copy(key, publisher, rec(publisher[0], "a"))
        }
    }

    #[test]
    fn a_tenant_at_its_quota_is_refused_while_another_stores() {
        let now = Instant::now();
        let quota = QuotaLimits {
            tenant_entries: 2,
            tenant_bytes: 10_000,
            total_entries: 10,
            total_bytes: 10_000,
        };
        let mut ix = SubtreeIndex::new(IndexLimits::default(), quota, false);
        store(&mut ix, 1, 1, 1, now).unwrap();
        store(&mut ix, 1, 2, 1, now).unwrap();
        let refused = store(&mut ix, 1, 3, 1, now).unwrap_err();
        assert!(
            matches!(refused, IndexError::Quota(QuotaError::TenantEntries { .. })),
            "{refused:?}"
        );
        // The same holder on a second link shares the quota.
        let again = ix.store(9, tenant(1), copy([4; 32], [1; 32], rec(1, "a")), TTL, now);
        assert!(again.is_err());
        // Another tenant stores; a refresh at the quota passes.
        store(&mut ix, 2, 3, 2, now).unwrap();
        store(&mut ix, 1, 1, 1, now + Duration::from_secs(1)).unwrap();
        // The link goes: its share is free again.
        ix.remove_link(1);
        assert_eq!(ix.quota().tenant_usage(&[1; 32]), Usage::default());
        store(&mut ix, 1, 3, 1, now).unwrap();
    }

    #[test]
    fn bytes_count_the_record_and_the_name() {
        let now = Instant::now();
        let one = copy_bytes(&rec(1, "a"), Some("svc.x"));
        let quota = QuotaLimits {
            tenant_bytes: 2 * one,
            ..QuotaLimits::UNBOUNDED
        };
        let mut ix = SubtreeIndex::new(IndexLimits::default(), quota, false);
        ix.store(1, tenant(1), named([1; 32], [1; 32], "svc.x"), TTL, now)
            .unwrap();
        ix.store(1, tenant(1), named([2; 32], [1; 32], "svc.x"), TTL, now)
            .unwrap();
        assert_eq!(ix.quota().link_usage(1), Usage::new(2, 2 * one));
        let e = ix.store(1, tenant(1), named([3; 32], [1; 32], "svc.x"), TTL, now);
        assert!(matches!(
            e,
            Err(IndexError::Quota(QuotaError::TenantBytes { .. }))
        ));
        // A refresh that grows the record past the bytes is refused; the copy stays.
        let big = NewCopy {
            record: rec(1, "a much longer cluster name"),
            ..named([1; 32], [1; 32], "svc.x")
        };
        assert!(ix.store(1, tenant(1), big, TTL, now).is_err());
        assert_eq!(ix.get(&[1; 32], now, 32)[0].record, rec(1, "a"));
        ix.withdraw(1, [1; 32], [1; 32]);
        assert_eq!(ix.quota().link_usage(1), Usage::new(1, one));
        ix.expire(now + TTL);
        assert_eq!(ix.quota().total(), Usage::default());
    }

    #[test]
    fn names_are_kept_and_advertised_upward() {
        let now = Instant::now();
        let mut ix = SubtreeIndex::new(IndexLimits::default(), QuotaLimits::UNBOUNDED, true);
        ix.store(1, tenant(1), named([9; 32], [5; 32], "svc.echo"), TTL, now)
            .unwrap();
        // A second copy without a name (an older child) does not hide the first's.
        store(&mut ix, 2, 9, 5, now).unwrap();
        assert_eq!(
            upward(&mut ix),
            vec![Upward::Store {
                key: [9; 32],
                publisher: [5; 32],
                record: rec(5, "a"),
                name: Some(Arc::from("svc.echo")),
            }]
        );
        // A refresh without a name keeps the one known.
        store(&mut ix, 1, 9, 5, now).unwrap();
        let held = ix.copies_where(|l| l == 1, now);
        assert_eq!(held[0].name.as_deref(), Some("svc.echo"));
    }
}
