//! Per-publisher replay windows over message ids, for end-to-end de-duplication.
//!
//! Every Macula message carries a 16-byte id set once by its publisher (see
//! `docs/PROTOCOL.md` §10, "Message ids"): bytes 0..8 are the publisher's random session id,
//! bytes 8..16 a big-endian sequence number it increments per new message. Receivers — a node
//! taking publishes from its uplink, a client taking deliveries from its node — drop a message
//! whose id they have already seen, so retransmissions after a reconnect reach the application
//! once (Macula v0.16 defect 4: each hop minted a new id, so nothing could be de-duplicated).
//!
//! # What is remembered
//!
//! One *lane* per publisher session: the highest sequence number seen (`top`) and a ring
//! bitmap with one bit per sequence number, the field-standard anti-replay window of IPsec
//! (RFC 4303 §3.4.3) and DTLS (RFC 6347 §4.1.2.6). The window is
//! [`DedupWindow::window`] sequence numbers: the capacity passed to [`DedupWindow::new`]
//! (`limits.dedup_window`) rounded up to a power of two, at least 64. Per session, a duplicate
//! is recognised as long as its sequence number is less than `window` behind the highest one
//! seen from that session — whatever other publishers send meanwhile (the FIFO of ids this
//! replaced let 65,536 ids from others flush a publisher's ids). A sequence number `window` or
//! more behind is *forgotten*: it counts as new, as it did when the FIFO had forgotten it.
//! Gaps (a subscriber sees a subset of a publisher's messages) and out-of-order arrivals inside
//! the window are exact.
//!
//! Each lane covers a range `[floor, top]` of sequence numbers exactly (every one in it is
//! recorded as seen or not); the bitmap starts at one 64-bit word and doubles when the range
//! needs it, up to `window` bits. A publisher seen a few times costs a few words; a sequential
//! publisher touches one cache line per message.
//!
//! # Memory bound
//!
//! Lanes are created from remote input, so their number and their bitmaps are bounded:
//!
//! - at most [`DedupWindow::max_lanes`] lanes: `max(window / 16, 64)`;
//! - at most [`DedupWindow::max_words`] bitmap words over all lanes: `window` words, i.e.
//!   `64 × window` bits, enough for 64 sessions at the full window.
//!
//! When a new lane or a lane's growth would exceed either bound, the least recently used
//! eighth of the lanes is evicted (repeated until it fits; each round is O(lanes) and removes
//! an eighth of them, so the cost per insert stays amortised O(1)). An evicted session is
//! forgotten: its next ids count as new.
//!
//! At the default capacity (65,536) that is at most 4,096 lanes and 512 KiB of bitmaps, plus
//! the lane table (48 bytes and a control byte per bucket, about 400 KiB at 4,096 lanes) and
//! one heap block per lane (its bitmap, with the allocator's overhead): about 1 MiB in all at
//! worst, against about 3 MiB for the FIFO of 65,536 ids it replaced.
//!
//! The lane table is keyed by session ids from remote peers, so it uses std's keyed SipHash
//! (`RandomState`), which resists collision floods; the cost per message is one hash of 8
//! bytes on a small table plus a bit test.

use std::collections::HashMap;
use std::fmt;

use crate::wire::{message_id_parts, MessageId};

/// Largest window, in sequence numbers (2^30); larger capacities are clamped to it.
pub const MAX_WINDOW: u64 = 1 << 30;

/// Bits per bitmap word.
const WORD_BITS: u64 = 64;

/// Per-publisher-session replay windows: remembers, for each recent publisher session, which
/// of its last `window` sequence numbers were seen (see the module documentation).
pub struct DedupWindow {
    lanes: HashMap<u64, Lane>,
    /// Sequence numbers tracked per session (a power of two ≥ 64).
    window: u64,
    max_lanes: usize,
    max_words: usize,
    /// Bitmap words over all lanes.
    words: usize,
    /// Set bits over all lanes: sequence numbers recorded as seen.
    seen: u64,
    /// Use clock: incremented per insert, stamped on the lane it touches.
    tick: u64,
}

/// One publisher session's window.
///
/// Invariant: `floor ≤ top`, `top - floor < span ≤ window` where `span = 64 × bits.len()` is a
/// power of two; the bit of sequence `s` is `s mod span`; exactly the seen sequence numbers in
/// `[floor, top]` have their bit set, every other bit is clear.
struct Lane {
    top: u64,
    floor: u64,
    /// Tick of the last insert into this lane (for LRU eviction).
    used: u64,
    bits: Box<[u64]>,
}

/// What recording a sequence number did.
enum Outcome {
    /// Recorded as new; `cleared` seen bits left the window to make room.
    New { cleared: u64 },
    /// Already recorded.
    Duplicate,
    /// `window` or more behind `top`: new, not recorded.
    Forgotten,
}

impl DedupWindow {
    /// Windows recognising a duplicate up to `capacity` sequence numbers back per publisher
    /// session (rounded up to a power of two, at least 64, at most [`MAX_WINDOW`]), with the
    /// default bounds: `max(window / 16, 64)` sessions and `window` bitmap words in all.
    pub fn new(capacity: usize) -> Self {
        let window = window_for(capacity);
        let max_lanes = usize::try_from(window / 16).unwrap_or(usize::MAX).max(64);
        let max_words = usize::try_from(window).unwrap_or(usize::MAX);
        Self::with_bounds(capacity, max_lanes, max_words)
    }

    /// As [`DedupWindow::new`] with explicit bounds: at most `max_lanes` sessions (at least 1)
    /// and `max_words` bitmap words over all of them (at least one full lane, `window / 64`,
    /// and one word per lane).
    fn with_bounds(capacity: usize, max_lanes: usize, max_words: usize) -> Self {
        let window = window_for(capacity);
        let max_lanes = max_lanes.max(1);
        let lane_words = usize::try_from(window / WORD_BITS).unwrap_or(usize::MAX);
        let max_words = max_words.max(lane_words).max(max_lanes);
        DedupWindow {
            lanes: HashMap::new(),
            window,
            max_lanes,
            max_words,
            words: 0,
            seen: 0,
            tick: 0,
        }
    }

    /// Records `id`; returns `true` if it is new (or forgotten: more than the window behind
    /// its session's newest) and `false` if it is a duplicate inside the window.
    pub fn insert(&mut self, id: MessageId) -> bool {
        let (session, seq) = message_id_parts(&id);
        let key = u64::from_ne_bytes(session);
        self.tick += 1;
        let tick = self.tick;
        let window = self.window;
        let extra = match self.lanes.get_mut(&key) {
            Some(lane) => {
                lane.used = tick;
                let have = lane.bits.len();
                let need = lane.words_for(seq, window);
                if need <= have || self.words + (need - have) <= self.max_words {
                    self.words += need.saturating_sub(have);
                    let outcome = lane.record(seq, window, need);
                    return self.account(outcome);
                }
                need - have
            }
            None => {
                if self.lanes.len() >= self.max_lanes || self.words >= self.max_words {
                    self.evict(None, 1, 1);
                }
                self.lanes.insert(key, Lane::new(seq, tick));
                self.words += 1;
                self.seen += 1;
                return true;
            }
        };
        // The lane must grow past the word bound: make room among the other lanes first.
        self.evict(Some(key), 0, extra);
        let Some(lane) = self.lanes.get_mut(&key) else {
            unreachable!("evict keeps the lane it makes room for")
        };
        let need = lane.bits.len() + extra;
        self.words += extra;
        let outcome = lane.record(seq, window, need);
        self.account(outcome)
    }

    /// Whether `id` is recorded as seen (a forgotten or evicted id is not).
    pub fn contains(&self, id: &MessageId) -> bool {
        let (session, seq) = message_id_parts(id);
        self.lanes
            .get(&u64::from_ne_bytes(session))
            .is_some_and(|lane| lane.floor <= seq && seq <= lane.top && lane.test(seq))
    }

    /// Sequence numbers currently recorded as seen, over all remembered sessions (each at
    /// most `window` behind its session's newest; forgotten and evicted ones are not counted).
    pub fn len(&self) -> usize {
        usize::try_from(self.seen).unwrap_or(usize::MAX)
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    /// How far back, in sequence numbers per publisher session, a duplicate is recognised.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Publisher sessions currently remembered.
    pub fn sessions(&self) -> usize {
        self.lanes.len()
    }

    /// Most publisher sessions remembered at once.
    pub fn max_lanes(&self) -> usize {
        self.max_lanes
    }

    /// Most bitmap words (8 bytes each) over all sessions.
    pub fn max_words(&self) -> usize {
        self.max_words
    }

    fn account(&mut self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::New { cleared } => {
                self.seen = self.seen + 1 - cleared;
                true
            }
            Outcome::Duplicate => false,
            Outcome::Forgotten => true,
        }
    }

    /// Evicts the least recently used lanes (never `keep`), an eighth of them per round,
    /// until `lanes` more lanes and `words` more words fit.
    fn evict(&mut self, keep: Option<u64>, lanes: usize, words: usize) {
        let mut ticks: Vec<u64> = Vec::new();
        while self.lanes.len() + lanes > self.max_lanes || self.words + words > self.max_words {
            ticks.clear();
            ticks.extend(
                self.lanes
                    .iter()
                    .filter(|(k, _)| Some(**k) != keep)
                    .map(|(_, lane)| lane.used),
            );
            if ticks.is_empty() {
                break; // unreachable with the bounds `with_bounds` enforces
            }
            let n = (ticks.len() / 8).max(1);
            let (_, cut, _) = ticks.select_nth_unstable(n - 1);
            let cut = *cut;
            let (mut freed_words, mut freed_seen) = (0usize, 0u64);
            self.lanes.retain(|k, lane| {
                let evict = lane.used <= cut && Some(*k) != keep;
                if evict {
                    freed_words += lane.bits.len();
                    freed_seen += lane.ones();
                }
                !evict
            });
            self.words -= freed_words;
            self.seen -= freed_seen;
        }
    }
}

impl fmt::Debug for DedupWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupWindow")
            .field("window", &self.window)
            .field("sessions", &self.lanes.len())
            .field("words", &self.words)
            .field("seen", &self.seen)
            .field("max_lanes", &self.max_lanes)
            .field("max_words", &self.max_words)
            .finish()
    }
}

/// `capacity` rounded up to a power of two in `[64, MAX_WINDOW]`.
fn window_for(capacity: usize) -> u64 {
    u64::try_from(capacity)
        .unwrap_or(u64::MAX)
        .clamp(WORD_BITS, MAX_WINDOW)
        .next_power_of_two()
}

impl Lane {
    fn new(seq: u64, tick: u64) -> Lane {
        Lane {
            top: seq,
            floor: seq,
            used: tick,
            bits: Box::new([1u64 << (seq % WORD_BITS)]),
        }
    }

    /// Bits in the ring (a power of two).
    fn span(&self) -> u64 {
        self.bits.len() as u64 * WORD_BITS
    }

    fn ones(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// (word, mask) of `seq`'s bit.
    fn slot(&self, seq: u64) -> (usize, u64) {
        let pos = seq & (self.span() - 1);
        ((pos / WORD_BITS) as usize, 1u64 << (pos % WORD_BITS))
    }

    fn test(&self, seq: u64) -> bool {
        let (w, m) = self.slot(seq);
        self.bits[w] & m != 0
    }

    fn set(&mut self, seq: u64) {
        let (w, m) = self.slot(seq);
        self.bits[w] |= m;
    }

    /// Words the bitmap needs to record `seq` (its current size when it needs no growth).
    fn words_for(&self, seq: u64, window: u64) -> usize {
        let need = if seq > self.top {
            if seq - self.top >= window {
                return self.bits.len(); // a reset: everything older leaves the window
            }
            seq - self.floor.max(seq.saturating_sub(window - 1)) + 1
        } else if seq >= self.floor || self.top - seq >= window {
            return self.bits.len();
        } else {
            self.top - seq + 1
        };
        if need <= self.span() {
            self.bits.len()
        } else {
            // need ≤ window ≤ MAX_WINDOW: no overflow.
            (need.next_power_of_two() / WORD_BITS) as usize
        }
    }

    /// Records `seq`, growing the bitmap to `words` words if that is more than it has
    /// (`words` comes from [`Lane::words_for`]).
    fn record(&mut self, seq: u64, window: u64, words: usize) -> Outcome {
        if seq > self.top {
            if seq - self.top >= window {
                let cleared = self.ones();
                self.bits.fill(0);
                self.floor = seq;
                self.top = seq;
                self.set(seq);
                return Outcome::New { cleared };
            }
            // `floor ≤ top` here: `seq - (window - 1) ≤ top` since `seq - top < window`.
            let floor = self.floor.max(seq.saturating_sub(window - 1));
            let cleared = self.clear(self.floor, floor);
            self.floor = floor;
            if words > self.bits.len() {
                self.grow(words);
            }
            // The skipped sequences (top, seq) are outside [floor, top], so already clear.
            self.top = seq;
            self.set(seq);
            Outcome::New { cleared }
        } else if seq >= self.floor {
            let (w, m) = self.slot(seq);
            if self.bits[w] & m != 0 {
                return Outcome::Duplicate;
            }
            self.bits[w] |= m;
            Outcome::New { cleared: 0 }
        } else if self.top - seq >= window {
            Outcome::Forgotten
        } else {
            // Below the covered range but inside the window: never seen (the range only
            // starts above a sequence once it is `window` behind), so extend down to it.
            if words > self.bits.len() {
                self.grow(words);
            }
            self.floor = seq;
            self.set(seq);
            Outcome::New { cleared: 0 }
        }
    }

    /// Clears the bits of sequences `[from, to)` (`to - from ≤ span`); returns how many were
    /// set.
    fn clear(&mut self, from: u64, to: u64) -> u64 {
        let len = to - from;
        let span = self.span();
        if len >= span {
            let cleared = self.ones();
            self.bits.fill(0);
            return cleared;
        }
        let start = from & (span - 1);
        let first = len.min(span - start);
        clear_positions(&mut self.bits, start, first)
            + clear_positions(&mut self.bits, 0, len - first)
    }

    /// Re-lays out the ring over `words` words (more than it has, a power of two).
    fn grow(&mut self, words: usize) {
        let old_mask = self.span() - 1;
        let new_mask = words as u64 * WORD_BITS - 1;
        let base = self.floor & old_mask;
        let mut bits = vec![0u64; words].into_boxed_slice();
        for (w, &word) in self.bits.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let pos = w as u64 * WORD_BITS + u64::from(word.trailing_zeros());
                word &= word - 1;
                // The set bits are sequences in [floor, top], a range shorter than the span.
                let seq = self.floor + (pos.wrapping_sub(base) & old_mask);
                let p = seq & new_mask;
                bits[(p / WORD_BITS) as usize] |= 1u64 << (p % WORD_BITS);
            }
        }
        self.bits = bits;
    }
}

/// Clears bit positions `[start, start + len)` (no wrap); returns how many were set.
fn clear_positions(bits: &mut [u64], start: u64, len: u64) -> u64 {
    let (mut pos, end) = (start, start + len);
    let mut cleared = 0;
    while pos < end {
        let b = pos % WORD_BITS;
        let n = (WORD_BITS - b).min(end - pos);
        let mask = if n == WORD_BITS {
            u64::MAX
        } else {
            ((1u64 << n) - 1) << b
        };
        let word = &mut bits[(pos / WORD_BITS) as usize];
        cleared += u64::from((*word & mask).count_ones());
        *word &= !mask;
        pos += n;
    }
    cleared
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::*;
    use crate::wire::message_id;
    use proptest::prelude::*;

    /// Session 0, sequence `n`.
    fn id(n: u64) -> MessageId {
        message_id([0; 8], n)
    }

    fn sid(session: u8, n: u64) -> MessageId {
        message_id([session; 8], n)
    }

    impl DedupWindow {
        /// Checks every invariant of the module: bounds, counters, and per lane the ring
        /// layout (power-of-two span within the window, nothing set outside `[floor, top]`).
        fn check(&self) {
            assert!(self.lanes.len() <= self.max_lanes, "lanes over bound");
            assert!(self.words <= self.max_words, "words over bound");
            let words: usize = self.lanes.values().map(|l| l.bits.len()).sum();
            assert_eq!(self.words, words, "word counter");
            let seen: u64 = self.lanes.values().map(Lane::ones).sum();
            assert_eq!(self.seen, seen, "seen counter");
            for lane in self.lanes.values() {
                let span = lane.span();
                assert!(span.is_power_of_two() && span <= self.window);
                assert!(lane.floor <= lane.top);
                assert!(lane.top - lane.floor < span);
                let (mask, base) = (span - 1, lane.floor & (span - 1));
                for (w, &word) in lane.bits.iter().enumerate() {
                    for b in (0..64).filter(|b| word & (1 << b) != 0) {
                        let offset = (w as u64 * 64 + b).wrapping_sub(base) & mask;
                        assert!(
                            offset <= lane.top - lane.floor,
                            "a bit set outside [floor, top]"
                        );
                    }
                }
            }
        }

        fn lane_words(&self, session: u8) -> usize {
            self.lanes[&u64::from_ne_bytes([session; 8])].bits.len()
        }
    }

    #[test]
    fn duplicate_inside_window_is_rejected() {
        let mut w = DedupWindow::new(4);
        assert!(w.is_empty());
        assert!(w.insert(id(1)));
        assert!(!w.insert(id(1)));
        assert!(w.contains(&id(1)));
        assert!(!w.contains(&id(2)));
        assert_eq!(w.len(), 1);
        assert!(!w.is_empty());
    }

    #[test]
    fn capacity_rounds_up_to_a_power_of_two_of_at_least_64() {
        assert_eq!(DedupWindow::new(0).window(), 64);
        assert_eq!(DedupWindow::new(2).window(), 64);
        assert_eq!(DedupWindow::new(65).window(), 128);
        assert_eq!(DedupWindow::new(65_536).window(), 65_536);
        assert_eq!(DedupWindow::new(usize::MAX).window(), MAX_WINDOW);
        let w = DedupWindow::new(crate::defaults::DEDUP_WINDOW);
        assert_eq!((w.max_lanes(), w.max_words()), (4_096, 65_536));
    }

    #[test]
    fn out_of_order_inside_the_window() {
        let mut w = DedupWindow::new(64);
        for s in [10, 5, 12, 7, 11, 6] {
            assert!(w.insert(id(s)), "{s} is new");
        }
        for s in [10, 5, 12, 7, 11, 6] {
            assert!(!w.insert(id(s)), "{s} is a duplicate");
        }
        for s in [8, 9, 0, 60, 13] {
            assert!(w.insert(id(s)), "{s} was never seen");
        }
        assert_eq!(w.len(), 11);
        w.check();
    }

    #[test]
    fn the_window_edge_is_exact() {
        let mut w = DedupWindow::new(64);
        assert!(w.insert(id(100)));
        assert!(w.insert(id(163))); // 63 ahead: 100 still inside
        assert!(!w.insert(id(100)));
        assert!(w.insert(id(164))); // 64 ahead: 100 leaves
        assert!(!w.contains(&id(100)));
        assert!(w.insert(id(100)), "forgotten counts as new");
        assert!(w.insert(id(100)), "and is not recorded");
        assert_eq!(w.len(), 2);
        w.check();
    }

    #[test]
    fn a_gap_larger_than_the_window() {
        let mut w = DedupWindow::new(64);
        for s in 0..40 {
            assert!(w.insert(id(s)));
        }
        assert!(w.insert(id(39 + 64 + 5)));
        assert_eq!(w.len(), 1, "everything older left the window");
        for s in 0..40 {
            assert!(!w.contains(&id(s)));
        }
        // The skipped sequences inside the new window were never seen.
        assert!(w.insert(id(39 + 64 + 5 - 63)));
        assert!(w.insert(id(39 + 64)));
        assert!(!w.insert(id(39 + 64)));
        assert!(w.insert(id(39)), "far behind: forgotten");
        w.check();
    }

    #[test]
    fn sequence_far_below_top_is_forgotten() {
        let mut w = DedupWindow::new(1_000);
        assert_eq!(w.window(), 1_024);
        assert!(w.insert(id(5_000)));
        assert!(w.insert(id(3_000)));
        assert!(w.insert(id(3_000)), "forgotten ids are never recorded");
        assert!(!w.contains(&id(3_000)));
        assert!(w.insert(id(5_000 - 1_023)), "just inside: recorded");
        assert!(!w.insert(id(5_000 - 1_023)));
        assert_eq!(w.len(), 2);
        w.check();
    }

    #[test]
    fn two_sessions_are_independent() {
        let mut w = DedupWindow::new(64);
        assert!(w.insert(sid(1, 7)));
        assert!(w.insert(sid(2, 7)), "same sequence, other session");
        // Session 2 moving far ahead forgets nothing of session 1.
        for s in 8..10_000 {
            assert!(w.insert(sid(2, s)));
        }
        assert!(!w.insert(sid(1, 7)));
        assert!(w.insert(sid(2, 7)), "session 2's own 7 is forgotten");
        assert_eq!(w.sessions(), 2);
        w.check();
    }

    #[test]
    fn the_least_recently_used_lane_is_evicted_at_the_lane_bound() {
        let mut w = DedupWindow::new(64);
        assert_eq!(w.max_lanes(), 64);
        for s in 0..64u8 {
            assert!(w.insert(sid(s, 1)));
        }
        assert!(
            w.insert(sid(0, 2)),
            "session 0 is now the most recently used"
        );
        assert!(w.insert(sid(64, 1)), "a 65th session");
        assert_eq!(w.sessions(), 64 - 8 + 1, "the oldest eighth went");
        w.check();
        assert!(!w.insert(sid(0, 1)), "recently used: kept");
        for s in 1..=8u8 {
            assert!(!w.contains(&sid(s, 1)), "session {s} was evicted");
        }
        for s in 9..64u8 {
            assert!(!w.insert(sid(s, 1)), "session {s} was kept");
        }
        assert!(!w.insert(sid(64, 1)));
        assert!(w.insert(sid(1, 1)), "an evicted session's ids count as new");
        w.check();
    }

    #[test]
    fn the_word_bound_evicts_other_lanes_when_a_lane_grows() {
        // 4 lanes at most, 8 words in all; the window is 256 bits (4 words per lane).
        let mut w = DedupWindow::with_bounds(256, 4, 8);
        for s in 0..4u8 {
            assert!(w.insert(sid(s, 0)));
        }
        for n in 1..256 {
            assert!(w.insert(sid(3, n)));
        }
        assert_eq!(w.lane_words(3), 4);
        w.check();
        for n in 1..256 {
            assert!(w.insert(sid(2, n)));
            w.check();
        }
        assert!(!w.insert(sid(3, 255)), "the growing lane's bits survive");
        assert!(!w.insert(sid(2, 255)));
        assert!(w.insert(sid(0, 0)), "lanes 0 and 1 made room");
        w.check();
    }

    #[test]
    fn growth_to_the_full_window_keeps_every_bit() {
        let mut w = DedupWindow::new(4_096);
        let n = 64 * 40;
        for s in 0..n {
            assert!(w.insert(id(1_000 + s)));
        }
        assert_eq!(w.lane_words(0), 64);
        w.check();
        for s in 0..n {
            assert!(!w.insert(id(1_000 + s)), "{s} was recorded");
        }
        assert_eq!(w.len(), n as usize);

        // The same growing downwards (each id extends the range below the floor).
        let mut w = DedupWindow::new(4_096);
        for s in (0..n).rev() {
            assert!(w.insert(id(1_000 + s)));
        }
        assert_eq!(w.lane_words(0), 64);
        w.check();
        for s in 0..n {
            assert!(!w.insert(id(1_000 + s)));
        }

        // And with gaps: every third id, interleaved from both ends.
        let mut w = DedupWindow::new(4_096);
        let ids: Vec<u64> = (0..n).step_by(3).collect();
        for (i, s) in ids.iter().enumerate() {
            let s = if i % 2 == 0 { *s } else { n - s };
            assert!(w.insert(id(s)));
        }
        w.check();
        for (i, s) in ids.iter().enumerate() {
            let s = if i % 2 == 0 { *s } else { n - s };
            assert!(!w.insert(id(s)));
        }
    }

    #[test]
    fn u64_edges_do_not_overflow() {
        let mut w = DedupWindow::new(64);
        assert!(w.insert(id(u64::MAX)));
        assert!(!w.insert(id(u64::MAX)));
        assert!(w.insert(id(u64::MAX - 63)));
        assert!(w.insert(id(u64::MAX - 64)), "64 behind: forgotten");
        assert!(w.insert(id(0)), "far below: forgotten");
        assert!(!w.contains(&id(0)));
        w.check();

        let mut w = DedupWindow::new(64);
        assert!(w.insert(id(0)));
        assert!(w.insert(id(1)));
        assert!(!w.insert(id(0)));
        assert!(
            w.insert(id(u64::MAX)),
            "a jump past the window resets the lane"
        );
        assert!(!w.insert(id(u64::MAX)));
        assert!(w.insert(id(0)));
        assert!(w.insert(id(u64::MAX - 1)));
        assert!(!w.insert(id(u64::MAX - 1)));
        assert_eq!(w.len(), 2);
        w.check();

        let mut w = DedupWindow::new(usize::MAX);
        assert!(w.insert(id(u64::MAX)));
        assert!(w.insert(id(0)));
        assert!(w.insert(id(u64::MAX - 1_000)));
        assert!(!w.insert(id(u64::MAX - 1_000)));
        assert!(
            w.insert(id(u64::MAX - MAX_WINDOW)),
            "MAX_WINDOW behind: forgotten"
        );
        w.check();
    }

    /// Reference model: per session, the top and the set of seen sequence numbers less than
    /// `window` behind it.
    #[derive(Default)]
    struct Model {
        lanes: HashMap<u8, (u64, BTreeSet<u64>)>,
    }

    impl Model {
        fn insert(&mut self, window: u64, session: u8, seq: u64) -> bool {
            let Some((top, seen)) = self.lanes.get_mut(&session) else {
                self.lanes.insert(session, (seq, BTreeSet::from([seq])));
                return true;
            };
            if seq > *top {
                *top = seq;
                let top = *top;
                seen.retain(|&s| top - s < window);
            } else if *top - seq >= window {
                return true;
            }
            seen.insert(seq)
        }

        fn contains(&self, session: u8, seq: u64) -> bool {
            self.lanes
                .get(&session)
                .is_some_and(|(_, seen)| seen.contains(&seq))
        }

        fn len(&self) -> usize {
            self.lanes.values().map(|(_, seen)| seen.len()).sum()
        }
    }

    /// Sequences mostly increasing, with jumps back (retransmissions), repeats and jumps
    /// forward (gaps), from a start near 0, in the middle or near `u64::MAX`.
    fn steps() -> impl Strategy<Value = Vec<(u8, i64)>> {
        let step = prop_oneof![
            6 => 1i64..4,
            2 => Just(0i64),
            2 => -600i64..0,
            1 => 4i64..1_200,
        ];
        proptest::collection::vec((0u8..4, step), 0..600)
    }

    proptest! {
        #[test]
        fn matches_the_reference_model(
            capacity in 64usize..=512,
            start in prop_oneof![Just(0u64), 0u64..1 << 40, Just(u64::MAX - 3_000)],
            steps in steps(),
        ) {
            // Bounds high enough that nothing is evicted.
            let mut w = DedupWindow::with_bounds(capacity, 64, 1 << 12);
            let window = w.window();
            let mut model = Model::default();
            let mut cursor = [start; 4];
            for (session, step) in steps {
                let c = &mut cursor[usize::from(session)];
                *c = c.saturating_add_signed(step);
                let seq = *c;
                let expect = model.insert(window, session, seq);
                prop_assert_eq!(w.insert(sid(session, seq)), expect, "session {} seq {}", session, seq);
                prop_assert_eq!(w.len(), model.len());
                for probe in [seq, seq.wrapping_sub(1), seq.wrapping_sub(window), seq.wrapping_sub(37)] {
                    prop_assert_eq!(w.contains(&sid(session, probe)), model.contains(session, probe));
                }
            }
            w.check();
        }

        #[test]
        fn garbage_ids_stay_within_bounds(
            capacity in 1usize..2_048,
            max_lanes in 1usize..24,
            max_words in 0usize..64,
            ids in proptest::collection::vec(prop_oneof![
                any::<[u8; 16]>(),
                (0u8..6, any::<u64>()).prop_map(|(s, n)| sid(s, n)),
                (0u8..6, 0u64..5_000).prop_map(|(s, n)| sid(s, n)),
                (0u8..6, u64::MAX - 5_000..=u64::MAX).prop_map(|(s, n)| sid(s, n)),
            ], 0..400),
        ) {
            let mut w = DedupWindow::with_bounds(capacity, max_lanes, max_words);
            let (max_lanes, max_words) = (w.max_lanes(), w.max_words());
            for id in ids {
                w.insert(id);
                prop_assert!(w.sessions() <= max_lanes);
                prop_assert!(w.words <= max_words);
                let _ = w.contains(&id);
            }
            w.check();
        }
    }
}
