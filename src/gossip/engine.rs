//! [`Gossip`]: one replica of one replicated store and its peer set.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use rand::Rng;

use super::{
    GossipConfig, GossipError, GossipStats, Message, PeerId, DUPLICATE_WINDOW, MAX_OPEN_ROUNDS,
};
use crate::crdt::{
    ActorId, Crdt, CrdtError, CrdtMap, Digest, HlcClock, Kind, MergeStats, Op, MAX_CLOCK_SKEW_MS,
};

/// What we remember about one peer.
#[derive(Debug, Default)]
struct PeerState {
    /// When the last anti-entropy exchange we started with it completed.
    ae_done_ms: Option<u64>,
    /// When we last started one (completed or not).
    ae_started_ms: Option<u64>,
    /// Fingerprints of its last [`DUPLICATE_WINDOW`] messages.
    recent: VecDeque<u64>,
}

/// An anti-entropy round we started (we sent Pulls).
#[derive(Debug)]
struct OutRound {
    started_ms: u64,
    /// Range start → (range end, parts expected once known, parts received).
    ranges: BTreeMap<String, RangeProgress>,
    /// Sync parts sent and not acknowledged yet.
    syncs_pending: u64,
    /// Every PullReply part of every range has arrived.
    complete: bool,
}

#[derive(Debug)]
struct RangeProgress {
    to_key: Option<String>,
    parts: Option<u16>,
    received: BTreeSet<u16>,
}

impl RangeProgress {
    fn complete(&self) -> bool {
        self.parts
            .is_some_and(|p| self.received.len() >= usize::from(p))
    }
}

/// One replica of one replicated store (a [`CrdtMap`]) with its peer set. See the
/// [module documentation](super).
#[derive(Debug)]
pub struct Gossip {
    actor: ActorId,
    config: GossipConfig,
    store: CrdtMap,
    clock: HlcClock,
    /// Deltas added since the last push tick (joined).
    pending: CrdtMap,
    /// Joined deltas of earlier ticks with the push rounds they still have, oldest first.
    buffer: VecDeque<(CrdtMap, u32)>,
    peers: BTreeMap<PeerId, PeerState>,
    /// The peer ids in order (random picks by index).
    peer_ids: Vec<PeerId>,
    out_rounds: BTreeMap<(PeerId, u64), OutRound>,
    /// Rounds we answered with a PullReply (peer, round) → when.
    in_rounds: BTreeMap<(PeerId, u64), u64>,
    next_round: u64,
    stats: GossipStats,
    /// The first key of the last incoming state refused as forged ([`Gossip::take_forged`]).
    forged: Option<String>,
    /// Cached encoded size of the store; `usize::MAX` = not computed since the last change
    /// was noticed at a push tick.
    state_bytes: AtomicUsize,
    changed_since_tick: bool,
}

impl Gossip {
    /// An engine for replica `actor` with an empty store and no peers.
    pub fn new(actor: ActorId, config: GossipConfig) -> Self {
        Gossip {
            actor,
            config,
            store: CrdtMap::new(),
            clock: HlcClock::new(),
            pending: CrdtMap::new(),
            buffer: VecDeque::new(),
            peers: BTreeMap::new(),
            peer_ids: Vec::new(),
            out_rounds: BTreeMap::new(),
            in_rounds: BTreeMap::new(),
            next_round: 1,
            stats: GossipStats::default(),
            forged: None,
            state_bytes: AtomicUsize::new(usize::MAX),
            changed_since_tick: false,
        }
    }

    /// The first key of the last incoming state found forging this replica's own entries,
    /// if one was since the last call (for the driver's audit line).
    pub fn take_forged(&mut self) -> Option<String> {
        self.forged.take()
    }

    /// This replica's id (the actor of its local updates).
    pub fn actor(&self) -> ActorId {
        self.actor
    }

    /// The replicated store.
    pub fn store(&self) -> &CrdtMap {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// The hybrid logical clock of local updates.
    pub fn clock(&self) -> &HlcClock {
        &self.clock
    }

    /// Applies a local update through the HLC; the delta goes into the push buffer.
    ///
    /// Errors: those of [`CrdtMap::apply`]; the store is then unchanged.
    pub fn apply(&mut self, key: &str, op: Op, now_ms: u64) -> Result<(), CrdtError> {
        let ts = self.clock.tick(now_ms);
        let delta = self
            .store
            .apply(key, op, self.actor, ts, &self.config.limits)?;
        self.stats.keys_retired += self.store.retire_dead([key], &self.config.limits) as u64;
        self.changed_since_tick = true;
        self.pending.merge(&delta, &self.config.limits);
        Ok(())
    }

    /// Joins state produced locally by someone else (e.g. a bridge's aggregation of its
    /// children) into the store; when it changed something, the delta (minus refused keys)
    /// goes into the push buffer.
    pub fn merge_local(&mut self, delta: &CrdtMap) -> MergeStats {
        for (_, c) in delta.iter() {
            if let Crdt::Lww(r) = c {
                // Local input is trusted: observed without the skew bound.
                let _ = self.clock.observe(r.ts, r.ts.wall_ms);
            }
        }
        let stats = self.store.merge(delta, &self.config.limits);
        let keys = delta.iter().map(|(k, _)| k.as_str());
        self.stats.keys_retired += self.store.retire_dead(keys, &self.config.limits) as u64;
        if stats.changed > 0 {
            self.changed_since_tick = true;
            let kept = without_keys(delta, &stats.refused);
            self.pending.merge(&kept, &self.config.limits);
        }
        stats
    }

    /// Adds a peer (no-op if present).
    pub fn add_peer(&mut self, peer: PeerId) {
        if let std::collections::btree_map::Entry::Vacant(e) = self.peers.entry(peer) {
            e.insert(PeerState::default());
            if let Err(i) = self.peer_ids.binary_search(&peer) {
                self.peer_ids.insert(i, peer);
            }
        }
    }

    /// Removes a peer and forgets its rounds.
    pub fn remove_peer(&mut self, peer: &PeerId) {
        if self.peers.remove(peer).is_some() {
            if let Ok(i) = self.peer_ids.binary_search(peer) {
                self.peer_ids.remove(i);
            }
            self.out_rounds.retain(|(p, _), _| p != peer);
            self.in_rounds.retain(|(p, _), _| p != peer);
        }
    }

    /// The peers, in id order.
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peer_ids.iter()
    }

    /// The counters.
    pub fn stats(&self) -> &GossipStats {
        &self.stats
    }

    /// Ms since the last completed anti-entropy exchange we started with `peer` (`None` =
    /// never, or not a peer).
    pub fn last_anti_entropy(&self, peer: &PeerId, now_ms: u64) -> Option<u64> {
        self.peers
            .get(peer)?
            .ae_done_ms
            .map(|t| now_ms.saturating_sub(t))
    }

    /// Approximate encoded size of the store in bytes: computed on demand and cached until
    /// the next push tick after a change.
    pub fn state_bytes(&self) -> usize {
        let cached = self.state_bytes.load(Ordering::Relaxed);
        if cached != usize::MAX {
            return cached;
        }
        let mut v = Vec::new();
        self.store.encode(&mut v);
        self.state_bytes.store(v.len(), Ordering::Relaxed);
        v.len()
    }

    /// Anti-entropy rounds open (started by us, answered by us).
    pub fn open_rounds(&self) -> (usize, usize) {
        (self.out_rounds.len(), self.in_rounds.len())
    }

    /// Push round: the join of the buffered deltas (each kept for `push_rounds` rounds) to
    /// `fanout` distinct random peers, split into parts of at most about
    /// `max_message_bytes`. An empty buffer sends nothing; without peers the buffer is kept
    /// as it is (nothing ages).
    pub fn on_push_tick(&mut self, rng: &mut impl Rng) -> Vec<(PeerId, Message)> {
        if self.changed_since_tick {
            self.changed_since_tick = false;
            self.state_bytes.store(usize::MAX, Ordering::Relaxed);
        }
        if self.peer_ids.is_empty() {
            return Vec::new();
        }
        if self.config.push_rounds == 0 {
            self.pending = CrdtMap::new();
            self.buffer.clear();
            return Vec::new();
        }
        if !self.pending.is_empty() {
            let fresh = std::mem::take(&mut self.pending);
            self.buffer.push_back((fresh, self.config.push_rounds));
        }
        if self.buffer.is_empty() {
            return Vec::new();
        }
        let join = if self.buffer.len() == 1 {
            self.buffer[0].0.clone()
        } else {
            let mut join = CrdtMap::new();
            for (d, _) in &self.buffer {
                join.merge(d, &self.config.limits);
            }
            join
        };
        for entry in self.buffer.iter_mut() {
            entry.1 -= 1;
        }
        self.buffer.retain(|(_, left)| *left > 0);
        if join.is_empty() {
            return Vec::new();
        }
        let parts = encode_parts(&join, self.config.max_message_bytes);
        let n = parts.len() as u16;
        let k = self.config.fanout.min(self.peer_ids.len());
        let mut out = Vec::with_capacity(k * parts.len());
        for i in rand::seq::index::sample(rng, self.peer_ids.len(), k) {
            let peer = self.peer_ids[i];
            for (p, state) in parts.iter().enumerate() {
                out.push((
                    peer,
                    Message::Push {
                        part: p as u16,
                        parts: n,
                        state: state.clone(),
                    },
                ));
            }
        }
        if !out.is_empty() {
            self.stats.push_rounds += 1;
            self.count_sent(&out);
        }
        out
    }

    /// Anti-entropy: forgets rounds older than 2 × `anti_entropy_interval`, picks the peer
    /// synced (or tried) longest ago — never-synced peers first, ties at random — and sends
    /// it Pulls with our digest, split into key ranges whose encoded digest is at most
    /// `max_message_bytes` (one Pull `["", ∞)` for an empty store).
    pub fn on_anti_entropy_tick(
        &mut self,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Vec<(PeerId, Message)> {
        let horizon = 2 * self.config.anti_entropy_interval.as_millis() as u64;
        let cutoff = now_ms.saturating_sub(horizon);
        self.out_rounds.retain(|_, r| r.started_ms >= cutoff);
        self.in_rounds.retain(|_, t| *t >= cutoff);
        if self.peer_ids.is_empty() {
            return Vec::new();
        }
        // Oldest of max(done, started); None (never) sorts first.
        let key = |s: &PeerState| s.ae_done_ms.max(s.ae_started_ms);
        let oldest = self.peers.values().map(key).min().flatten();
        let candidates: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| key(s) == oldest)
            .map(|(p, _)| *p)
            .collect();
        let peer = candidates[rng.random_range(0..candidates.len())];
        let round = self.next_round;
        self.next_round += 1;

        let chunks = split_digest(self.store.digest(), self.config.max_message_bytes);
        let starts: Vec<String> = chunks
            .iter()
            .enumerate()
            .map(|(i, (d, _))| {
                if i == 0 {
                    String::new()
                } else {
                    d.entries.keys().next().cloned().unwrap_or_default()
                }
            })
            .collect();
        let mut ranges = BTreeMap::new();
        let mut out = Vec::with_capacity(chunks.len());
        for (i, (_, bytes)) in chunks.into_iter().enumerate() {
            let from_key = starts[i].clone();
            let to_key = starts.get(i + 1).cloned();
            ranges.insert(
                from_key.clone(),
                RangeProgress {
                    to_key: to_key.clone(),
                    parts: None,
                    received: BTreeSet::new(),
                },
            );
            out.push((
                peer,
                Message::Pull {
                    round,
                    from_key,
                    to_key,
                    digest: bytes,
                },
            ));
        }
        if self.out_rounds.len() >= MAX_OPEN_ROUNDS {
            evict_oldest(&mut self.out_rounds, |r| r.started_ms);
        }
        self.out_rounds.insert(
            (peer, round),
            OutRound {
                started_ms: now_ms,
                ranges,
                syncs_pending: 0,
                complete: false,
            },
        );
        if let Some(s) = self.peers.get_mut(&peer) {
            s.ae_started_ms = Some(now_ms);
        }
        self.stats.anti_entropy_rounds += 1;
        self.count_sent(&out);
        out
    }

    /// Handles one incoming message from `from`; returns the replies to send to `from`.
    ///
    /// Errors (counted in [`GossipStats::refused`], the store left unchanged):
    /// [`GossipError::UnknownPeer`], [`GossipError::Duplicate`],
    /// [`GossipError::UnexpectedReply`], [`GossipError::Crdt`] for a malformed or oversized
    /// state or digest, a bad part number or key range.
    pub fn handle(
        &mut self,
        from: PeerId,
        msg: Message,
        now_ms: u64,
    ) -> Result<Vec<(PeerId, Message)>, GossipError> {
        self.handle_with(from, msg, now_ms, &mut |_, _| Ok(()))
    }

    /// [`Gossip::handle`] with the driver's `policy` for the keys of incoming states: each
    /// key (name and kind) of a decoded state is shown to it before the merge, and a key it
    /// refuses is left out of the merge (counted in [`GossipStats::refused`] under the error's
    /// label) while the others merge — a permission or a reserved name is a property of one
    /// key, and gossip relays other writers' keys alongside the sender's own.
    ///
    /// Before the policy, each key claiming entries of this replica's own actor beyond what
    /// it holds ([`CrdtMap::forged_keys`]) is left out the same way (`forged_actor`; the
    /// first such key is kept for [`Gossip::take_forged`], for the audit log). Only the key:
    /// the sender may be an honest peer relaying what a third one forged, and refusing its
    /// whole message would cut this replica off from everything else it relays.
    pub fn handle_with(
        &mut self,
        from: PeerId,
        msg: Message,
        now_ms: u64,
        policy: &mut dyn FnMut(&str, Kind) -> Result<(), CrdtError>,
    ) -> Result<Vec<(PeerId, Message)>, GossipError> {
        self.stats.bytes_received += msg.payload_len() as u64;
        match self.handle_inner(from, msg, now_ms, policy) {
            Ok(out) => {
                self.count_sent(&out);
                Ok(out)
            }
            Err(e) => {
                self.stats.refuse(e.as_str());
                Err(e)
            }
        }
    }

    fn handle_inner(
        &mut self,
        from: PeerId,
        msg: Message,
        now_ms: u64,
        policy: &mut dyn FnMut(&str, Kind) -> Result<(), CrdtError>,
    ) -> Result<Vec<(PeerId, Message)>, GossipError> {
        let peer = self.peers.get_mut(&from).ok_or(GossipError::UnknownPeer)?;
        // SyncReplies carry no state and legitimately repeat (`{round, merged: 1}` for two
        // Sync parts): they are bounded by the round's pending Syncs instead.
        if !matches!(msg, Message::SyncReply { .. }) {
            let fp = msg.fingerprint();
            if peer.recent.contains(&fp) {
                return Err(GossipError::Duplicate);
            }
            if peer.recent.len() >= DUPLICATE_WINDOW {
                peer.recent.pop_front();
            }
            peer.recent.push_back(fp);
        }

        match msg {
            Message::Push { part, parts, state } => {
                check_part(part, parts)?;
                let map = self.decode_state(&state, now_ms, policy)?;
                self.merge_incoming(map);
                Ok(Vec::new())
            }
            Message::Pull {
                round,
                from_key,
                to_key,
                digest,
            } => self.on_pull(from, round, from_key, to_key, &digest, now_ms),
            Message::PullReply {
                round,
                from_key,
                to_key,
                state,
                wants,
                part,
                parts,
            } => {
                check_part(part, parts)?;
                let r = self
                    .out_rounds
                    .get(&(from, round))
                    .ok_or(GossipError::UnexpectedReply)?;
                let range = r
                    .ranges
                    .get(&from_key)
                    .ok_or(GossipError::UnexpectedReply)?;
                if range.to_key != to_key
                    || range.received.contains(&part)
                    || range.parts.is_some_and(|p| p != parts)
                {
                    return Err(GossipError::UnexpectedReply);
                }
                // Decode everything before touching any state.
                let map = self.decode_state(&state, now_ms, policy)?;
                let wants = if wants.is_empty() {
                    None
                } else {
                    Some(Digest::decode(&wants, &self.config.limits)?)
                };
                self.merge_incoming(map);

                let r = self
                    .out_rounds
                    .get_mut(&(from, round))
                    .expect("checked above");
                let range = r.ranges.get_mut(&from_key).expect("checked above");
                range.parts = Some(parts);
                range.received.insert(part);
                if !r.complete && r.ranges.values().all(RangeProgress::complete) {
                    r.complete = true;
                    if let Some(p) = self.peers.get_mut(&from) {
                        p.ae_done_ms = Some(now_ms);
                    }
                }
                let mut out = Vec::new();
                if let Some(w) = wants {
                    let delta = self.store.delta_for(&w);
                    let parts = encode_parts(&delta, self.config.max_message_bytes);
                    let n = parts.len() as u16;
                    r.syncs_pending += u64::from(n);
                    for (i, state) in parts.into_iter().enumerate() {
                        out.push((
                            from,
                            Message::Sync {
                                round,
                                state,
                                part: i as u16,
                                parts: n,
                            },
                        ));
                    }
                }
                if r.complete && r.syncs_pending == 0 {
                    self.out_rounds.remove(&(from, round));
                }
                Ok(out)
            }
            Message::Sync {
                round,
                state,
                part,
                parts,
            } => {
                check_part(part, parts)?;
                if !self.in_rounds.contains_key(&(from, round)) {
                    return Err(GossipError::UnexpectedReply);
                }
                let map = self.decode_state(&state, now_ms, policy)?;
                let changed = self.merge_incoming(map);
                Ok(vec![(
                    from,
                    Message::SyncReply {
                        round,
                        merged: u32::try_from(changed).unwrap_or(u32::MAX),
                    },
                )])
            }
            Message::SyncReply { round, merged: _ } => {
                let r = self
                    .out_rounds
                    .get_mut(&(from, round))
                    .ok_or(GossipError::UnexpectedReply)?;
                if r.syncs_pending == 0 {
                    return Err(GossipError::UnexpectedReply);
                }
                r.syncs_pending -= 1;
                if r.complete && r.syncs_pending == 0 {
                    self.out_rounds.remove(&(from, round));
                }
                Ok(Vec::new())
            }
        }
    }

    /// Answers a Pull for `[from_key, to_key)`: our delta since the puller's digest in that
    /// range (keys the digest lacks whole), and our wants, over as many parts as the larger
    /// of the two needs (at least one).
    fn on_pull(
        &mut self,
        from: PeerId,
        round: u64,
        from_key: String,
        to_key: Option<String>,
        digest: &[u8],
        now_ms: u64,
    ) -> Result<Vec<(PeerId, Message)>, GossipError> {
        if to_key.as_ref().is_some_and(|t| *t <= from_key) {
            return Err(CrdtError::Malformed("empty key range".into()).into());
        }
        let digest = Digest::decode(digest, &self.config.limits)?;
        let in_range = |k: &str| k >= from_key.as_str() && to_key.as_deref().is_none_or(|t| k < t);
        let delta = if from_key.is_empty() && to_key.is_none() {
            self.store.delta_since(&digest)
        } else {
            let mut local = CrdtMap::new();
            for (k, v) in self.store.iter().filter(|(k, _)| in_range(k)) {
                local.insert(k.clone(), v.clone());
            }
            local.delta_since(&digest)
        };
        let mut wants = self.store.wants(&digest);
        wants.entries.retain(|k, _| in_range(k));
        let states = encode_parts(&delta, self.config.max_message_bytes);
        // Wants in the first parts. The first range (from "") always carries at least an
        // encoded empty digest, so every round ends with a Sync; other ranges carry wants
        // only when there are some (so no two Syncs of one round are byte-identical).
        let wants = if wants.entries.is_empty() && !from_key.is_empty() {
            Vec::new()
        } else {
            split_digest(wants, self.config.max_message_bytes)
        };
        let n = states
            .len()
            .max(wants.len())
            .clamp(1, usize::from(u16::MAX));
        let empty = encode_map(&CrdtMap::new());
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            out.push((
                from,
                Message::PullReply {
                    round,
                    from_key: from_key.clone(),
                    to_key: to_key.clone(),
                    state: states.get(i).cloned().unwrap_or_else(|| empty.clone()),
                    wants: wants.get(i).map(|(_, b)| b.clone()).unwrap_or_default(),
                    part: i as u16,
                    parts: n as u16,
                },
            ));
        }
        if !self.in_rounds.contains_key(&(from, round)) && self.in_rounds.len() >= MAX_OPEN_ROUNDS {
            evict_oldest(&mut self.in_rounds, |t| *t);
        }
        self.in_rounds.insert((from, round), now_ms);
        Ok(out)
    }

    /// Decodes an incoming state under the limits and drops (counting `clock_skew`) every
    /// register stamped more than [`MAX_CLOCK_SKEW_MS`] ahead of `now_ms`.
    ///
    /// Then leaves out (counting each) the keys that forge this replica's own entries
    /// ([`CrdtMap::forged_keys`]) and the keys `policy` refuses.
    fn decode_state(
        &mut self,
        bytes: &[u8],
        now_ms: u64,
        policy: &mut dyn FnMut(&str, Kind) -> Result<(), CrdtError>,
    ) -> Result<CrdtMap, GossipError> {
        let map = CrdtMap::decode(bytes, &self.config.limits)?;
        let forged: std::collections::BTreeSet<&str> = self
            .store
            .forged_keys(&map, &self.actor)
            .into_iter()
            .collect();
        if let Some(first) = forged.first() {
            self.forged = Some((*first).to_owned());
        }
        let bound = now_ms.saturating_add(MAX_CLOCK_SKEW_MS);
        let skewed = |c: &Crdt| matches!(c, Crdt::Lww(r) if r.ts.wall_ms > bound);
        let mut verdicts = Vec::new();
        for (k, c) in map.iter() {
            let v = if forged.contains(k.as_str()) {
                Err("forged_actor")
            } else if skewed(c) {
                Err("clock_skew")
            } else {
                policy(k, c.kind()).map_err(|e| e.as_str())
            };
            verdicts.push(v);
        }
        if verdicts.iter().all(Result::is_ok) {
            return Ok(map);
        }
        let mut kept = CrdtMap::new();
        for ((k, c), v) in map.iter().zip(verdicts) {
            match v {
                Ok(()) => kept.insert(k.clone(), c.clone()),
                Err(label) => self.stats.refuse(label),
            }
        }
        Ok(kept)
    }

    /// Merges a decoded, skew-filtered incoming state; counts it; buffers what of it changed
    /// the store for pushing. Returns the number of keys changed.
    fn merge_incoming(&mut self, map: CrdtMap) -> usize {
        if map.is_empty() {
            return 0;
        }
        for (_, c) in map.iter() {
            if let Crdt::Lww(r) = c {
                // Skewed registers were dropped in decode_state: this cannot fail, and if
                // it did the clock would just stay where it is.
                let _ = self.clock.observe(r.ts, r.ts.wall_ms);
            }
        }
        // Only the part of `map` beyond what we hold changes the store: that part is merged
        // and buffered for pushing (buffering whole incoming states would make every push
        // carry the whole store). Computed per key against our value, without copying it.
        let mut novel = CrdtMap::new();
        for (k, theirs) in map.iter() {
            if let Some(d) = novel_part(self.store.held(k), theirs) {
                novel.insert(k.clone(), d);
            }
        }
        if novel.is_empty() {
            self.stats.redundant += 1;
            return 0;
        }
        let map = novel;
        let ms = self.store.merge(&map, &self.config.limits);
        let keys = map.iter().map(|(k, _)| k.as_str());
        self.stats.keys_retired += self.store.retire_dead(keys, &self.config.limits) as u64;
        self.stats.conflicts += ms.conflicts as u64;
        for (_, e) in &ms.refused {
            self.stats.refuse(e.as_str());
        }
        if ms.changed > 0 {
            self.stats.deltas_merged += 1;
            self.changed_since_tick = true;
            if self.config.push_rounds > 0 {
                if ms.refused.is_empty() {
                    self.pending.merge(&map, &self.config.limits);
                } else {
                    let kept = without_keys(&map, &ms.refused);
                    self.pending.merge(&kept, &self.config.limits);
                }
            }
        } else {
            self.stats.redundant += 1;
        }
        ms.changed
    }

    fn count_sent(&mut self, out: &[(PeerId, Message)]) {
        self.stats.messages_sent += out.len() as u64;
        self.stats.bytes_sent += out.iter().map(|(_, m)| m.payload_len() as u64).sum::<u64>();
    }
}

/// What of `theirs` is not in `ours` (`None`: nothing — joining it would change nothing).
/// A key we lack, or of another kind (the merge refuses it), is returned whole.
fn novel_part(ours: Option<&Crdt>, theirs: &Crdt) -> Option<Crdt> {
    let Some(ours) = ours else {
        return Some(theirs.clone());
    };
    match (ours, theirs) {
        (Crdt::OrSet(o), Crdt::OrSet(t)) => {
            let d = t.delta_since(o.context());
            (!d.context().is_empty() || !d.is_empty()).then_some(Crdt::OrSet(d))
        }
        (Crdt::Lww(o), Crdt::Lww(t)) => {
            let key = |r: &crate::crdt::LwwRegister| (r.ts, r.actor, r.deleted);
            (key(t) > key(o)).then(|| Crdt::Lww(t.clone()))
        }
        (Crdt::GCounter(o), Crdt::GCounter(t)) => {
            let d = t.delta_since(o);
            (!d.counts.is_empty() || !d.base.is_empty()).then_some(Crdt::GCounter(d))
        }
        (Crdt::PnCounter(o), Crdt::PnCounter(t)) => {
            let p = t.p.delta_since(&o.p);
            let n = t.n.delta_since(&o.n);
            (!p.counts.is_empty() || !n.counts.is_empty())
                .then_some(Crdt::PnCounter(crate::crdt::PnCounter { p, n }))
        }
        _ => Some(theirs.clone()),
    }
}

fn check_part(part: u16, parts: u16) -> Result<(), GossipError> {
    if parts == 0 || part >= parts {
        return Err(CrdtError::Malformed(format!("part {part} of {parts}")).into());
    }
    Ok(())
}

fn without_keys(map: &CrdtMap, refused: &[(String, CrdtError)]) -> CrdtMap {
    let mut out = CrdtMap::new();
    for (k, v) in map.iter() {
        if !refused.iter().any(|(r, _)| r == k) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

fn evict_oldest<V>(table: &mut BTreeMap<(PeerId, u64), V>, age: impl Fn(&V) -> u64) {
    if let Some(k) = table.iter().min_by_key(|(_, v)| age(v)).map(|(k, _)| *k) {
        table.remove(&k);
    }
}

pub(crate) fn encode_map(map: &CrdtMap) -> Bytes {
    let mut v = Vec::new();
    map.encode(&mut v);
    Bytes::from(v)
}

/// The encoded parts of `map` (at least one, possibly an empty map).
fn encode_parts(map: &CrdtMap, max_bytes: usize) -> Vec<Bytes> {
    if map.is_empty() {
        return vec![encode_map(map)];
    }
    let whole = encode_map(map);
    if whole.len() <= max_bytes {
        return vec![whole];
    }
    let mut parts: Vec<Bytes> = map.split(max_bytes).iter().map(encode_map).collect();
    if parts.is_empty() {
        parts.push(whole);
    }
    parts.truncate(usize::from(u16::MAX));
    parts
}

/// Splits a digest by key into consecutive chunks whose encodings are at most about
/// `max_bytes` (a single summary larger than that travels alone); returns each chunk with
/// its encoding. At least one chunk (an empty digest for an empty one).
pub(crate) fn split_digest(digest: Digest, max_bytes: usize) -> Vec<(Digest, Bytes)> {
    let encode = |d: &Digest| {
        let mut v = Vec::new();
        d.encode(&mut v);
        Bytes::from(v)
    };
    let whole = encode(&digest);
    if whole.len() <= max_bytes {
        return vec![(digest, whole)];
    }
    let base = encode(&Digest::default()).len();
    // Each entry's size measured alone (its own actor table: an over-estimate), with slack
    // for the growing array headers.
    let budget = max_bytes.saturating_sub(base + 16).max(1);
    let mut chunks = Vec::new();
    let mut cur = Digest::default();
    let mut acc = 0usize;
    for (k, s) in digest.entries {
        let mut one = Digest::default();
        one.entries.insert(k, s);
        let size = encode(&one).len().saturating_sub(base);
        let (k, s) = one.entries.pop_first().expect("one entry");
        if acc + size > budget && !cur.entries.is_empty() {
            chunks.push(std::mem::take(&mut cur));
            acc = 0;
        }
        acc += size;
        cur.entries.insert(k, s);
    }
    if !cur.entries.is_empty() || chunks.is_empty() {
        chunks.push(cur);
    }
    chunks
        .into_iter()
        .map(|d| {
            let b = encode(&d);
            (d, b)
        })
        .collect()
}
