//! Pure parts of RPC shared by the node, the bridge and the client: the provider record kept in
//! the DHT, the key a procedure is looked up under, the provider-choice policy and the table of
//! calls in flight that maps replies back along the reverse path. No tokio, no clock reads:
//! callers pass `now`. Design: `docs/DISCOVERY.md`.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::dht::Id;
use crate::router::PeerKey;
use crate::wire::NodeId;

/// Longest procedure name, bytes.
pub const MAX_PROCEDURE_LEN: usize = 255;

/// Longest cluster name in a [`ProviderRecord`], bytes (the config allows 64).
pub const MAX_CLUSTER_LEN: usize = 64;

/// Bytes a client leaves free below the max frame size in a `call` or `reply` it sends, for
/// what the hops add: a `target` (≈ 41 bytes), larger call ids and hop counts. A hop never
/// forwards a frame its next hop would refuse; this keeps honest traffic clear of that limit.
pub const ROUTING_HEADROOM: u32 = 64;

/// Longest `timeout_ms` a node or bridge keeps a call for (60 s); a longer one is clamped, so
/// one client cannot hold the bounded table of calls in flight for days.
pub const MAX_CALL_TIMEOUT_MS: u32 = 60_000;

/// Prefix of procedure names in the DHT key space (`docs/DISCOVERY.md`, "Provider records").
pub const KEY_PREFIX: &str = "rpc/";

/// The DHT key of procedure `procedure` in `realm`:
/// `SHA-256("macula-dht-v1\0" ‖ realm ‖ 0x00 ‖ "rpc/" ‖ procedure)` ([`Id::scoped`]).
pub fn procedure_key(realm: &str, procedure: &str) -> [u8; 32] {
    let mut name = String::with_capacity(KEY_PREFIX.len() + procedure.len());
    name.push_str(KEY_PREFIX);
    name.push_str(procedure);
    Id::scoped(realm, &name).0
}

/// Checks a procedure name: 1–255 bytes of printable ASCII without spaces (e.g.
/// `io.example.echo`). Errors: the reason, for an `INVALID` reply.
pub fn validate_procedure(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_PROCEDURE_LEN {
        return Err(format!(
            "procedure name must be 1-{MAX_PROCEDURE_LEN} bytes, got {}",
            name.len()
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "procedure name {name:?} must be printable ASCII without spaces"
        ));
    }
    Ok(())
}

/// The value of a provider record: which node provides, and in which cluster. On the wire a
/// MessagePack map `{"node_id": bin32, "cluster": str}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProviderRecord {
    /// Id of the node the providing clients are connected to (the call's `target`).
    pub node_id: NodeId,
    /// That node's cluster (at most [`MAX_CLUSTER_LEN`] bytes).
    pub cluster: String,
}

#[derive(Serialize, Deserialize)]
struct RecordWire<'a> {
    #[serde(with = "serde_bytes")]
    node_id: &'a [u8],
    cluster: &'a str,
}

/// Why a record value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not a MessagePack map of the expected shape.
    #[error("malformed provider record: {0}")]
    Malformed(String),
    /// A field is out of bounds.
    #[error("invalid provider record field {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl ProviderRecord {
    /// The MessagePack encoding (≈ 60 bytes).
    pub fn encode(&self) -> Bytes {
        let w = RecordWire {
            node_id: &self.node_id,
            cluster: &self.cluster,
        };
        Bytes::from(rmp_serde::to_vec_named(&w).expect("a map of bin and str always encodes"))
    }

    /// Decodes a record value. Errors: [`RecordError`] for anything but a map with a 32-byte
    /// `node_id` and a `cluster` of at most [`MAX_CLUSTER_LEN`] bytes.
    pub fn decode(value: &[u8]) -> Result<ProviderRecord, RecordError> {
        let w: RecordWire<'_> =
            rmp_serde::from_slice(value).map_err(|e| RecordError::Malformed(e.to_string()))?;
        let node_id: NodeId = w.node_id.try_into().map_err(|_| RecordError::Invalid {
            field: "node_id",
            reason: format!("{} bytes, expected 32", w.node_id.len()),
        })?;
        if w.cluster.len() > MAX_CLUSTER_LEN {
            return Err(RecordError::Invalid {
                field: "cluster",
                reason: format!("{} bytes, at most {MAX_CLUSTER_LEN}", w.cluster.len()),
            });
        }
        Ok(ProviderRecord {
            node_id,
            cluster: w.cluster.to_string(),
        })
    }
}

/// Orders `providers` for one call (`docs/DISCOVERY.md`, "Provider choice"): those on node
/// `me` first, then those in cluster `my_cluster`, then the rest; each group rotated left by
/// `rr` (a per-procedure round-robin counter) so successive calls start at different
/// providers. Duplicates (same node id) are removed, keeping the first.
pub fn order_providers(
    providers: &[ProviderRecord],
    me: &NodeId,
    my_cluster: &str,
    rr: u64,
) -> Vec<ProviderRecord> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<&ProviderRecord> = providers
        .iter()
        .filter(|p| seen.insert(p.node_id))
        .collect();
    let mut out = Vec::with_capacity(unique.len());
    // 0: on this node, 1: in this cluster, 2: elsewhere.
    let rank = |p: &ProviderRecord| {
        if &p.node_id == me {
            0
        } else if p.cluster == my_cluster {
            1
        } else {
            2
        }
    };
    for g in 0..3 {
        let mut group: Vec<ProviderRecord> = unique
            .iter()
            .filter(|p| rank(p) == g)
            .map(|p| (*p).clone())
            .collect();
        if !group.is_empty() {
            let n = group.len();
            group.rotate_left((rr % n as u64) as usize);
        }
        out.extend(group);
    }
    out
}

/// One call in flight at a hop: where its reply goes back to.
#[derive(Debug, Clone)]
pub struct Pending<B> {
    /// Where the reply goes (the incoming link, or a local waiter).
    pub back: B,
    /// The `call_id` the call arrived with (restored in the reply).
    pub back_call_id: u64,
    /// The link the call was forwarded over (its replies and its loss concern this entry).
    pub out_link: PeerKey,
    /// The provider node the call was sent to, if known.
    pub target: Option<NodeId>,
    /// When the caller stops waiting; past it the entry is swept.
    pub deadline: Instant,
}

/// The table is full (`rpc.max_pending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many calls in flight")]
pub struct PendingFull;

/// Calls in flight at one hop, by the `call_id` this hop chose toward the next hop. Bounded:
/// [`PendingCalls::insert`] fails when `max` entries are held, so remote input cannot grow it
/// without bound; [`PendingCalls::expire`] sweeps entries past their deadline.
#[derive(Debug)]
pub struct PendingCalls<B> {
    map: HashMap<u64, Pending<B>>,
    next_id: u64,
    max: usize,
}

impl<B> PendingCalls<B> {
    /// An empty table holding at most `max` calls.
    pub fn new(max: usize) -> Self {
        PendingCalls {
            map: HashMap::new(),
            next_id: 1,
            max,
        }
    }

    /// Remembers a forwarded call; returns the `call_id` to use toward the next hop (unique
    /// among the calls in flight here). Errors: [`PendingFull`].
    pub fn insert(&mut self, entry: Pending<B>) -> Result<u64, PendingFull> {
        if self.map.len() >= self.max {
            return Err(PendingFull);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.map.insert(id, entry);
        Ok(id)
    }

    /// The entry of the reply with `call_id` that arrived over `link`, removed. `None` for an
    /// unknown id or one that was forwarded over another link (a forged or misrouted reply).
    pub fn take(&mut self, call_id: u64, link: PeerKey) -> Option<Pending<B>> {
        match self.map.get(&call_id) {
            Some(p) if p.out_link == link => self.map.remove(&call_id),
            _ => None,
        }
    }

    /// Removes and returns every call forwarded over `link` (it closed: answer them
    /// `UNREACHABLE`).
    pub fn drain_link(&mut self, link: PeerKey) -> Vec<Pending<B>> {
        let ids: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, p)| p.out_link == link)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.map.remove(&id))
            .collect()
    }

    /// Removes and returns every call `pred` selects (e.g. those of a caller that left).
    /// O(calls in flight), as [`PendingCalls::drain_link`].
    pub fn drain_where(&mut self, pred: impl Fn(&Pending<B>) -> bool) -> Vec<Pending<B>> {
        let ids: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, p)| pred(p))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.map.remove(&id))
            .collect()
    }

    /// Removes and returns every call whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Pending<B>> {
        let ids: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.map.remove(&id))
            .collect()
    }

    /// Whether [`PendingCalls::insert`] would fail now.
    pub fn is_full(&self) -> bool {
        self.map.len() >= self.max
    }

    /// Calls in flight.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn rec(b: u8, cluster: &str) -> ProviderRecord {
        ProviderRecord {
            node_id: [b; 32],
            cluster: cluster.into(),
        }
    }

    #[test]
    fn record_round_trips() {
        let r = rec(7, "home");
        assert_eq!(ProviderRecord::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn record_rejects_bad_fields() {
        let long = ProviderRecord {
            node_id: [1; 32],
            cluster: "x".repeat(65),
        };
        assert!(matches!(
            ProviderRecord::decode(&long.encode()),
            Err(RecordError::Invalid {
                field: "cluster",
                ..
            })
        ));
        let short = rmp_serde::to_vec_named(&RecordWire {
            node_id: &[1; 31],
            cluster: "a",
        })
        .unwrap();
        assert!(matches!(
            ProviderRecord::decode(&short),
            Err(RecordError::Invalid {
                field: "node_id",
                ..
            })
        ));
        assert!(matches!(
            ProviderRecord::decode(b"\xc1"),
            Err(RecordError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn record_decoder_survives_garbage(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = ProviderRecord::decode(&bytes);
        }

        #[test]
        fn record_decoder_survives_bit_flips(pos in 0usize..64, bit in 0u8..8) {
            let mut v = rec(3, "cluster-a").encode().to_vec();
            let pos = pos % v.len();
            v[pos] ^= 1 << bit;
            if let Ok(r) = ProviderRecord::decode(&v) {
                prop_assert!(r.cluster.len() <= MAX_CLUSTER_LEN);
            }
        }
    }

    #[test]
    fn keys_are_scoped_by_realm_and_prefix() {
        let a = procedure_key("io.a", "echo");
        assert_ne!(a, procedure_key("io.b", "echo"));
        assert_ne!(a, procedure_key("io.a", "echo2"));
        assert_eq!(a, Id::scoped("io.a", "rpc/echo").0);
    }

    #[test]
    fn procedure_names_are_checked() {
        assert!(validate_procedure("io.example.echo").is_ok());
        assert!(validate_procedure("").is_err());
        assert!(validate_procedure("has space").is_err());
        assert!(validate_procedure(&"x".repeat(256)).is_err());
    }

    #[test]
    fn order_prefers_own_node_then_cluster_and_rotates() {
        let me = [1; 32];
        let ps = vec![
            rec(5, "other"),
            rec(3, "mine"),
            rec(1, "mine"),
            rec(4, "mine"),
            rec(6, "other"),
            rec(3, "mine"),
        ];
        let o = order_providers(&ps, &me, "mine", 0);
        let ids: Vec<u8> = o.iter().map(|p| p.node_id[0]).collect();
        assert_eq!(ids, vec![1, 3, 4, 5, 6]);
        let o = order_providers(&ps, &me, "mine", 1);
        let ids: Vec<u8> = o.iter().map(|p| p.node_id[0]).collect();
        assert_eq!(ids, vec![1, 4, 3, 6, 5]);
    }

    #[test]
    fn round_robin_spreads_first_choice() {
        let ps = vec![rec(2, "b"), rec(3, "b"), rec(4, "b")];
        let mut counts = HashMap::new();
        for rr in 0..300 {
            let first = order_providers(&ps, &[1; 32], "a", rr)[0].node_id[0];
            *counts.entry(first).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&c| c == 100));
    }

    fn pending(link: PeerKey, deadline: Instant) -> Pending<u32> {
        Pending {
            back: 9,
            back_call_id: 77,
            out_link: link,
            target: None,
            deadline,
        }
    }

    #[test]
    fn pending_maps_replies_back_and_is_bounded() {
        let now = Instant::now();
        let mut t = PendingCalls::new(2);
        let a = t.insert(pending(10, now + Duration::from_secs(1))).unwrap();
        let b = t.insert(pending(11, now + Duration::from_secs(2))).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            t.insert(pending(12, now + Duration::from_secs(1)))
                .unwrap_err(),
            PendingFull
        );
        // A reply over the wrong link or with an unknown id is not matched.
        assert!(t.take(a, 11).is_none());
        assert!(t.take(999, 10).is_none());
        let p = t.take(a, 10).expect("matched");
        assert_eq!((p.back, p.back_call_id), (9, 77));
        assert!(t.take(a, 10).is_none(), "a reply is matched once");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn pending_drains_a_closed_link_and_expires() {
        let now = Instant::now();
        let mut t = PendingCalls::new(10);
        t.insert(pending(1, now + Duration::from_secs(1))).unwrap();
        t.insert(pending(1, now + Duration::from_secs(5))).unwrap();
        t.insert(pending(2, now + Duration::from_secs(1))).unwrap();
        assert_eq!(t.drain_link(1).len(), 2);
        assert_eq!(t.len(), 1);
        assert!(t.expire(now).is_empty());
        assert_eq!(t.expire(now + Duration::from_secs(1)).len(), 1);
        assert!(t.is_empty());
    }
}
