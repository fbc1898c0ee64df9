//! The k-bucket routing table (the paper, §2.2 and §4.1).
//!
//! 256 buckets; bucket `i` holds contacts whose distance to the owner has `i` leading zero
//! bits (see [`bucket_index`]). Each bucket keeps at most `k` contacts ordered least recently
//! seen first, plus a bounded replacement cache of newcomers that found it full.
//!
//! **Bucket policy** (the paper, §2.2, "least-recently seen eviction"; §4.1 replacement
//! cache): when a contact is observed
//! - already present → it moves to the tail (most recently seen), its address is updated;
//! - bucket has room → inserted at the tail;
//! - bucket full → the newcomer is *not* dropped (Macula v0.16 defect 7): it goes into the
//!   bucket's replacement cache and [`Observe::PingOldest`] asks the caller to ping the least
//!   recently seen contact. [`RoutingTable::ping_result`] then keeps the oldest (alive: it
//!   moves to the tail, the newcomer stays cached) or evicts it (dead: the freshest cached
//!   newcomer takes its place). Long-lived contacts are preferred because they are the most
//!   likely to stay up, and an attacker cannot flush a bucket by flooding it with new ids.
//!
//! Only call [`RoutingTable::observe`] for a peer that talked to us directly over an
//! authenticated connection (its id checked against its public key), never for contacts
//! merely mentioned in someone's reply: hearsay contacts go into a [`Lookup`] and enter the
//! table only once they answer.
//!
//! Memory: at most 256 × (`k` + `replacement_cache`) contacts.
//!
//! [`Lookup`]: super::Lookup

use std::net::SocketAddr;

use super::id::{bucket_index, Distance, Id, NodeId, ID_LEN};
use super::{Timestamp, K};

/// Number of buckets: one per bit of the id.
pub const BUCKETS: usize = ID_LEN * 8;

/// Default capacity of each bucket's replacement cache (the paper, §4.1): 10 newcomers, half
/// a bucket, enough to refill a bucket after a burst of failures without holding a second
/// full table.
pub const REPLACEMENT_CACHE: usize = 10;

/// Default time after which an unanswered liveness ping of a bucket is forgotten and a new
/// one may be requested, in ms: 10 s (two RPC timeouts of Macula v0.16). Normally the caller
/// reports the outcome long before, through [`RoutingTable::ping_result`].
pub const PING_PENDING_MS: u64 = 10_000;

/// A node as the DHT knows it: its id and the UDP address of its QUIC endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Contact {
    /// Node id: SHA-256 of the node's Ed25519 public key.
    pub id: NodeId,
    /// Where to reach it (UDP, QUIC).
    pub addr: SocketAddr,
}

/// Sizes of a [`RoutingTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableParams {
    /// Contacts per bucket (default [`K`] = 20).
    pub k: usize,
    /// Newcomers remembered per full bucket (default [`REPLACEMENT_CACHE`] = 10).
    pub replacement_cache: usize,
    /// See [`PING_PENDING_MS`] (ms).
    pub ping_pending_ms: u64,
}

impl Default for TableParams {
    fn default() -> Self {
        TableParams {
            k: K,
            replacement_cache: REPLACEMENT_CACHE,
            ping_pending_ms: PING_PENDING_MS,
        }
    }
}

/// What [`RoutingTable::observe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observe {
    /// The contact was new and is now in its bucket.
    Inserted,
    /// The contact was known; it is now the most recently seen of its bucket.
    Updated,
    /// The bucket is full: the candidate waits in the replacement cache, and the caller
    /// should ping `oldest` and report with [`RoutingTable::ping_result`].
    PingOldest {
        /// Least recently seen contact of the bucket.
        oldest: Contact,
        /// The newcomer, now in the replacement cache.
        candidate: Contact,
    },
    /// The bucket is full and a ping of its oldest contact is already outstanding: the
    /// candidate waits in the replacement cache.
    Cached,
    /// The contact is the table's owner; ignored.
    IsSelf,
}

/// What [`RoutingTable::ping_result`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingOutcome {
    /// The contact answered: it is now the most recently seen of its bucket.
    Kept,
    /// The contact did not answer and was evicted; `inserted` is the cached newcomer that
    /// replaced it, if the cache had one.
    Evicted {
        /// The newcomer moved from the replacement cache into the bucket.
        inserted: Option<Contact>,
    },
    /// The contact is not in the table (already removed); nothing changed.
    Unknown,
}

/// Kademlia routing table of one node: 256 k-buckets with replacement caches.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    own: NodeId,
    params: TableParams,
    buckets: Vec<Bucket>,
    len: usize,
}

impl RoutingTable {
    /// An empty table owned by `own`, with the default sizes (k = [`K`]).
    pub fn new(own: NodeId) -> Self {
        Self::with_params(own, TableParams::default())
    }

    /// An empty table owned by `own` with the given sizes (`k` at least 1).
    pub fn with_params(own: NodeId, mut params: TableParams) -> Self {
        params.k = params.k.max(1);
        RoutingTable {
            own,
            params,
            buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
            len: 0,
        }
    }

    /// The owner's id.
    pub fn own_id(&self) -> NodeId {
        self.own
    }

    /// The sizes in use.
    pub fn params(&self) -> TableParams {
        self.params
    }

    /// Records that `contact` was heard from at `now` (see the module doc for the policy).
    pub fn observe(&mut self, contact: Contact, now: Timestamp) -> Observe {
        let Some(index) = bucket_index(&self.own, &contact.id) else {
            return Observe::IsSelf;
        };
        let params = self.params;
        let bucket = &mut self.buckets[index];
        if let Some(pos) = bucket.position(&contact.id) {
            let mut entry = bucket.entries.remove(pos);
            entry.contact.addr = contact.addr;
            entry.last_seen = now;
            bucket.entries.push(entry);
            if bucket.pending.is_some_and(|p| p.oldest == contact.id) {
                bucket.pending = None; // it just proved it is alive
            }
            return Observe::Updated;
        }
        if bucket.entries.len() < params.k {
            bucket.entries.push(Entry {
                contact,
                last_seen: now,
            });
            bucket.replacements.retain(|c| c.id != contact.id);
            self.len += 1;
            return Observe::Inserted;
        }
        bucket.cache(contact, params.replacement_cache);
        let oldest = bucket.entries[0].contact;
        match bucket.pending {
            Some(p) if now.millis_since(p.since) < params.ping_pending_ms => Observe::Cached,
            _ => {
                bucket.pending = Some(Pending {
                    oldest: oldest.id,
                    since: now,
                });
                Observe::PingOldest {
                    oldest,
                    candidate: contact,
                }
            }
        }
    }

    /// Reports the outcome of the liveness ping asked for by [`Observe::PingOldest`] (or of
    /// any ping of a contact): `alive` moves `id` to the tail of its bucket; dead evicts it
    /// and promotes the most recently seen cached newcomer.
    pub fn ping_result(&mut self, id: &NodeId, alive: bool, now: Timestamp) -> PingOutcome {
        let Some(index) = bucket_index(&self.own, id) else {
            return PingOutcome::Unknown;
        };
        let bucket = &mut self.buckets[index];
        if bucket.pending.is_some_and(|p| p.oldest == *id) {
            bucket.pending = None;
        }
        let Some(pos) = bucket.position(id) else {
            return PingOutcome::Unknown;
        };
        if alive {
            let mut entry = bucket.entries.remove(pos);
            entry.last_seen = now;
            bucket.entries.push(entry);
            return PingOutcome::Kept;
        }
        bucket.entries.remove(pos);
        let inserted = bucket.promote(now);
        if inserted.is_none() {
            self.len -= 1;
        }
        PingOutcome::Evicted { inserted }
    }

    /// Forgets `id` (a peer known to be gone: closed connection, repeated timeouts, a new
    /// id after a restart). A cached newcomer takes its place. Returns the removed contact.
    pub fn remove(&mut self, id: &NodeId, now: Timestamp) -> Option<Contact> {
        let index = bucket_index(&self.own, id)?;
        let bucket = &mut self.buckets[index];
        bucket.replacements.retain(|c| c.id != *id);
        if bucket.pending.is_some_and(|p| p.oldest == *id) {
            bucket.pending = None;
        }
        let pos = bucket.position(id)?;
        let removed = bucket.entries.remove(pos).contact;
        if bucket.promote(now).is_none() {
            self.len -= 1;
        }
        Some(removed)
    }

    /// The contact with `id`, if it is in a bucket (not in a replacement cache).
    pub fn get(&self, id: &NodeId) -> Option<Contact> {
        let bucket = &self.buckets[bucket_index(&self.own, id)?];
        bucket.position(id).map(|p| bucket.entries[p].contact)
    }

    /// True if `id` is in a bucket.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    /// The `n` contacts closest to `target` by XOR distance, closest first (the paper, §2.3:
    /// the answer to FIND_NODE). Never includes the owner.
    ///
    /// Cost O(buckets + m log m) for the m contacts of the buckets visited: the buckets are
    /// walked outward from `target`'s bucket and only each group of equally-far buckets is
    /// sorted, not the whole table. With `d` = bucket index of `target`: bucket `d` holds the
    /// closest contacts, then all buckets above `d` (one group: equal leading-zero count `d`),
    /// then buckets `d-1`, `d-2`, …, 0, each strictly farther than the one before.
    pub fn closest(&self, target: &Id, n: usize) -> Vec<Contact> {
        let mut out = Vec::with_capacity(n.min(self.len));
        if n == 0 {
            return out;
        }
        let mut group: Vec<(Distance, Contact)> = Vec::new();
        let flush = |group: &mut Vec<(Distance, Contact)>, out: &mut Vec<Contact>| {
            group.sort_unstable_by_key(|e| e.0);
            out.extend(group.drain(..).map(|(_, c)| c).take(n - out.len()));
            out.len() >= n
        };
        let push = |group: &mut Vec<(Distance, Contact)>, b: &Bucket| {
            group.extend(
                b.entries
                    .iter()
                    .map(|e| (target.distance(&e.contact.id), e.contact)),
            );
        };
        match bucket_index(&self.own, target) {
            None => {
                // target == own: buckets 255, 254, …, 0 are each strictly farther.
                for b in self.buckets.iter().rev() {
                    push(&mut group, b);
                    if flush(&mut group, &mut out) {
                        break;
                    }
                }
            }
            Some(d) => {
                push(&mut group, &self.buckets[d]);
                if flush(&mut group, &mut out) {
                    return out;
                }
                for b in &self.buckets[d + 1..] {
                    push(&mut group, b);
                }
                if flush(&mut group, &mut out) {
                    return out;
                }
                for b in self.buckets[..d].iter().rev() {
                    push(&mut group, b);
                    if flush(&mut group, &mut out) {
                        break;
                    }
                }
            }
        }
        out
    }

    /// Contacts in the buckets (replacement caches not counted).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no bucket holds a contact.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every contact in the buckets, bucket 0 first, least recently seen first inside a
    /// bucket.
    pub fn iter(&self) -> impl Iterator<Item = &Contact> + '_ {
        self.buckets
            .iter()
            .flat_map(|b| b.entries.iter().map(|e| &e.contact))
    }

    /// Contacts in bucket `index` (0..=255), least recently seen first.
    pub fn bucket(&self, index: usize) -> impl Iterator<Item = &Contact> + '_ {
        self.buckets
            .get(index)
            .into_iter()
            .flat_map(|b| b.entries.iter().map(|e| &e.contact))
    }

    /// Newcomers cached for bucket `index`, oldest first.
    pub fn replacements(&self, index: usize) -> &[Contact] {
        self.buckets
            .get(index)
            .map_or(&[][..], |b| b.replacements.as_slice())
    }

    /// Records that a lookup for `target` completed at `now`, which refreshes `target`'s
    /// bucket (the paper, §2.3).
    pub fn mark_lookup(&mut self, target: &Id, now: Timestamp) {
        if let Some(i) = bucket_index(&self.own, target) {
            self.buckets[i].refreshed = Some(now);
        }
    }

    /// Buckets that need a refresh lookup (the paper, §2.3: "each node refreshes any bucket
    /// to which it has not performed a node lookup in the past hour"): those with no lookup
    /// in the last `refresh_interval_ms` ms (or never). Buckets deeper than the deepest
    /// non-empty one are skipped: they cover a vanishing share of the key space and are
    /// expected to be empty (refreshing them is a lookup for our own neighbourhood, which the
    /// deepest bucket's refresh already performs). Ascending indices; use
    /// [`Id::random_in_bucket`] for the lookup target.
    pub fn stale_buckets(&self, now: Timestamp, refresh_interval_ms: u64) -> Vec<usize> {
        let Some(deepest) = self.buckets.iter().rposition(|b| !b.entries.is_empty()) else {
            return Vec::new();
        };
        (0..=deepest)
            .filter(|&i| {
                self.buckets[i]
                    .refreshed
                    .is_none_or(|t| now.millis_since(t) >= refresh_interval_ms)
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    contact: Contact,
    last_seen: Timestamp,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    oldest: NodeId,
    since: Timestamp,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Least recently seen first; at most `k`.
    entries: Vec<Entry>,
    /// Newcomers that found the bucket full, oldest first; at most `replacement_cache`.
    replacements: Vec<Contact>,
    /// Outstanding liveness ping of the oldest entry.
    pending: Option<Pending>,
    /// Last lookup into this bucket's range.
    refreshed: Option<Timestamp>,
}

impl Bucket {
    fn position(&self, id: &NodeId) -> Option<usize> {
        self.entries.iter().position(|e| e.contact.id == *id)
    }

    /// Puts `c` at the fresh end of the replacement cache, dropping the stalest at capacity.
    fn cache(&mut self, c: Contact, cap: usize) {
        self.replacements.retain(|r| r.id != c.id);
        if cap == 0 {
            return;
        }
        if self.replacements.len() >= cap {
            self.replacements.remove(0);
        }
        self.replacements.push(c);
    }

    /// Moves the most recently seen cached newcomer into the bucket (after a removal).
    fn promote(&mut self, now: Timestamp) -> Option<Contact> {
        let c = self.replacements.pop()?;
        self.entries.push(Entry {
            contact: c,
            last_seen: now,
        });
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn contact(id: Id) -> Contact {
        Contact {
            id,
            addr: SocketAddr::from(([10, 0, id.0[0], id.0[1]], 9443)),
        }
    }

    const T0: Timestamp = Timestamp(0);

    /// A table with `own` = 0 and bucket 0 (ids with the top bit set) filled with k contacts.
    fn full_bucket0(k: usize, cache: usize) -> (RoutingTable, Vec<Contact>, StdRng) {
        let mut rng = StdRng::seed_from_u64(1);
        let mut t = RoutingTable::with_params(
            Id::ZERO,
            TableParams {
                k,
                replacement_cache: cache,
                ..TableParams::default()
            },
        );
        let cs: Vec<Contact> = (0..k)
            .map(|_| contact(Id::ZERO.random_in_bucket(0, &mut rng)))
            .collect();
        for (i, c) in cs.iter().enumerate() {
            assert_eq!(t.observe(*c, Timestamp(i as u64)), Observe::Inserted);
        }
        (t, cs, rng)
    }

    #[test]
    fn self_is_never_inserted() {
        let mut t = RoutingTable::new(Id::ZERO);
        assert_eq!(t.observe(contact(Id::ZERO), T0), Observe::IsSelf);
        assert!(t.is_empty());
        assert!(t.closest(&Id::ZERO, 5).is_empty());
    }

    #[test]
    fn known_contact_moves_to_tail_and_updates_address() {
        let (mut t, cs, _) = full_bucket0(3, 2);
        let mut moved = cs[0];
        moved.addr = "192.0.2.1:1".parse().expect("literal address");
        assert_eq!(t.observe(moved, Timestamp(10)), Observe::Updated);
        let order: Vec<Contact> = t.bucket(0).copied().collect();
        assert_eq!(order, vec![cs[1], cs[2], moved]);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn full_bucket_pings_oldest_and_keeps_it_when_alive() {
        let (mut t, cs, mut rng) = full_bucket0(3, 2);
        let newcomer = contact(Id::ZERO.random_in_bucket(0, &mut rng));
        assert_eq!(
            t.observe(newcomer, Timestamp(10)),
            Observe::PingOldest {
                oldest: cs[0],
                candidate: newcomer
            }
        );
        assert!(!t.contains(&newcomer.id), "not inserted before the ping");
        assert_eq!(t.replacements(0), &[newcomer]);
        // A second newcomer while the ping is outstanding is only cached.
        let second = contact(Id::ZERO.random_in_bucket(0, &mut rng));
        assert_eq!(t.observe(second, Timestamp(11)), Observe::Cached);
        assert_eq!(
            t.ping_result(&cs[0].id, true, Timestamp(12)),
            PingOutcome::Kept
        );
        let order: Vec<Contact> = t.bucket(0).copied().collect();
        assert_eq!(order, vec![cs[1], cs[2], cs[0]], "oldest moved to the tail");
        assert_eq!(
            t.replacements(0),
            &[newcomer, second],
            "candidates stay cached"
        );
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn full_bucket_evicts_dead_oldest_for_freshest_candidate() {
        let (mut t, cs, mut rng) = full_bucket0(3, 2);
        let a = contact(Id::ZERO.random_in_bucket(0, &mut rng));
        let b = contact(Id::ZERO.random_in_bucket(0, &mut rng));
        assert!(matches!(
            t.observe(a, Timestamp(10)),
            Observe::PingOldest { .. }
        ));
        assert_eq!(t.observe(b, Timestamp(11)), Observe::Cached);
        assert_eq!(
            t.ping_result(&cs[0].id, false, Timestamp(12)),
            PingOutcome::Evicted { inserted: Some(b) }
        );
        assert!(!t.contains(&cs[0].id));
        assert!(t.contains(&b.id));
        assert_eq!(t.replacements(0), &[a]);
        assert_eq!(t.len(), 3);
        // The next newcomer triggers a ping of the new oldest.
        let c = contact(Id::ZERO.random_in_bucket(0, &mut rng));
        assert_eq!(
            t.observe(c, Timestamp(13)),
            Observe::PingOldest {
                oldest: cs[1],
                candidate: c
            }
        );
        assert_eq!(
            t.ping_result(&Id::scoped("x", "y"), false, T0),
            PingOutcome::Unknown
        );
    }

    #[test]
    fn stale_pending_ping_is_asked_again() {
        let (mut t, cs, mut rng) = full_bucket0(2, 2);
        let a = contact(Id::ZERO.random_in_bucket(0, &mut rng));
        assert!(matches!(
            t.observe(a, Timestamp(0)),
            Observe::PingOldest { .. }
        ));
        let b = contact(Id::ZERO.random_in_bucket(0, &mut rng));
        assert_eq!(
            t.observe(b, Timestamp(PING_PENDING_MS)),
            Observe::PingOldest {
                oldest: cs[0],
                candidate: b
            }
        );
    }

    #[test]
    fn replacement_cache_is_bounded_and_table_memory_too() {
        let (mut t, _, mut rng) = full_bucket0(3, 2);
        let mut last = Vec::new();
        for i in 0..50 {
            let c = contact(Id::ZERO.random_in_bucket(0, &mut rng));
            t.observe(c, Timestamp(100 + i));
            last.push(c);
        }
        assert_eq!(t.replacements(0), &last[48..], "the two freshest are kept");
        // A table flooded with random ids never exceeds 256 × (k + cache).
        let mut t = RoutingTable::with_params(
            Id::random(&mut rng),
            TableParams {
                k: 4,
                replacement_cache: 2,
                ..TableParams::default()
            },
        );
        for i in 0..5_000 {
            let own = t.own_id();
            let bucket = (i % 40) as usize;
            t.observe(
                contact(own.random_in_bucket(bucket, &mut rng)),
                Timestamp(i),
            );
        }
        let cached: usize = (0..BUCKETS).map(|b| t.replacements(b).len()).sum();
        assert_eq!(t.len(), 40 * 4);
        assert_eq!(cached, 40 * 2);
    }

    #[test]
    fn remove_promotes_a_cached_newcomer() {
        let (mut t, cs, mut rng) = full_bucket0(2, 2);
        let a = contact(Id::ZERO.random_in_bucket(0, &mut rng));
        t.observe(a, Timestamp(5));
        assert_eq!(t.remove(&cs[1].id, Timestamp(6)), Some(cs[1]));
        assert!(t.contains(&a.id));
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove(&cs[1].id, Timestamp(6)), None);
        assert_eq!(t.remove(&cs[0].id, Timestamp(7)), Some(cs[0]));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn stale_buckets_follow_lookups() {
        let mut rng = StdRng::seed_from_u64(3);
        let own = Id::random(&mut rng);
        let mut t = RoutingTable::new(own);
        assert!(
            t.stale_buckets(T0, 1000).is_empty(),
            "empty table: nothing to refresh"
        );
        t.observe(contact(own.random_in_bucket(3, &mut rng)), T0);
        assert_eq!(t.stale_buckets(T0, 1000), vec![0, 1, 2, 3]);
        for i in 0..=3 {
            t.mark_lookup(&own.random_in_bucket(i, &mut rng), Timestamp(10));
        }
        assert!(t.stale_buckets(Timestamp(1009), 1000).is_empty());
        assert_eq!(t.stale_buckets(Timestamp(1010), 1000), vec![0, 1, 2, 3]);
    }

    proptest! {
        #[test]
        fn closest_equals_brute_force(seed in any::<u64>(), n_contacts in 0usize..400, n in 0usize..40, target_kind in 0u8..3) {
            let mut rng = StdRng::seed_from_u64(seed);
            let own = Id::random(&mut rng);
            let mut t = RoutingTable::with_params(own, TableParams { k: 8, ..TableParams::default() });
            for i in 0..n_contacts {
                // Spread over near and far buckets so several groups are exercised.
                let id = if i % 2 == 0 { Id::random(&mut rng) } else { own.random_in_bucket(i % 24, &mut rng) };
                t.observe(contact(id), Timestamp(i as u64));
            }
            let target = match target_kind {
                0 => own,
                1 => own.random_in_bucket((seed % 12) as usize, &mut rng),
                _ => Id::random(&mut rng),
            };
            let mut all: Vec<Contact> = t.iter().copied().collect();
            prop_assert_eq!(all.len(), t.len());
            all.sort_by_key(|c| target.distance(&c.id));
            all.truncate(n);
            prop_assert_eq!(t.closest(&target, n), all);
        }
    }
}
