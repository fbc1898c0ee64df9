//! The compact wire encoding of [`CrdtMap`] and [`Digest`] (specified in `docs/CRDT.md`):
//! MessagePack arrays, with a per-message table of actor ids so each dot costs an index
//! and a counter, not 32 bytes.
//!
//! ```text
//! map     = [1, [actor bin32 ...], [[key str, kind u8, payload] ...]]
//! digest  = [1, [actor bin32 ...], [[key str, kind u8 (0 = absent), summary] ...]]
//! ```
//! Actors ascending and unique, keys ascending and unique; a dot is `[actor index,
//! counter]`, a causal context `[[actor index, [[lo, hi] ...]] ...]`, an HLC
//! `[wall_ms, logical]`.

use std::collections::BTreeSet;

use bytes::Bytes;
use rmp::{decode as rd, encode as wr};

use super::{
    ActorId, Crdt, CrdtError, CrdtMap, Digest, Dot, DotSet, GCounter, Hlc, Kind, Limits,
    LwwRegister, OrSet, PnCounter, Summary,
};

/// The format version, first element of every message.
const VERSION: u64 = 1;
/// Smallest encoding of one actor table entry (bin8 header + 32 bytes).
const ACTOR_BYTES: usize = 34;

impl CrdtMap {
    /// Encodes the map (appends to `out`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let entries: Vec<(&str, &Crdt)> =
            self.entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
        encode_map(&entries, out);
    }
    /// Decodes and validates a map.
    ///
    /// Errors: [`CrdtError::Malformed`] (not MessagePack, unknown kind, actor index out of
    /// range, counter 0, unsorted or overlapping ranges, duplicate key or element, trailing
    /// bytes); [`CrdtError::TooLarge`] beyond `limits`.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<CrdtMap, CrdtError> {
        let mut r = Reader { buf: bytes };
        let actors = r.header()?;
        let n = r.array()?;
        if n > limits.max_keys {
            return Err(too_large("keys", limits.max_keys));
        }
        let mut entries: Vec<(String, Crdt)> = Vec::with_capacity(n);
        let mut last_key: Option<&str> = None;
        for _ in 0..n {
            r.array_of(3, "entry")?;
            let key = r.key(limits, &mut last_key)?;
            let kind = Kind::from_u8(r.uint_u8()?).ok_or_else(|| malformed("unknown kind"))?;
            let value = match kind {
                Kind::OrSet => Crdt::OrSet(r.or_set(&actors, limits)?),
                Kind::Lww => Crdt::Lww(r.lww(&actors, limits)?),
                Kind::GCounter => Crdt::GCounter(r.g_counter(&actors, limits)?),
                Kind::PnCounter => Crdt::PnCounter(r.pn_counter(&actors, limits)?),
            };
            entries.push((key.to_owned(), value));
        }
        r.finish()?;
        // Keys are strictly ascending (checked): a bulk build.
        let bytes = entries.iter().map(|(k, v)| super::approx_size(k, v)).sum();
        Ok(CrdtMap {
            entries: entries.into_iter().collect(),
            retired: Default::default(),
            bytes,
        })
    }
    /// Length of [`CrdtMap::encode`]'s output.
    #[cfg(test)]
    pub(crate) fn encoded_len(&self) -> usize {
        let mut out = Vec::new();
        self.encode(&mut out);
        out.len()
    }
}

impl Digest {
    /// Encodes the digest (appends to `out`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut actors = BTreeSet::new();
        for s in self.entries.values() {
            match s {
                Summary::Absent => {}
                Summary::OrSet(c) => actors.extend(c.ranges.keys().copied()),
                Summary::Lww(_, a) => {
                    actors.insert(*a);
                }
                Summary::GCounter(c) => collect_counter(&mut actors, c),
                Summary::PnCounter(c) => {
                    collect_counter(&mut actors, &c.p);
                    collect_counter(&mut actors, &c.n);
                }
            }
        }
        let table = ActorTable::new(actors);
        table.write_header(out);
        w_array(out, self.entries.len());
        for (key, s) in &self.entries {
            w_array(out, 3);
            w_str(out, key);
            match s {
                Summary::Absent => {
                    w_uint(out, 0);
                    let _ = wr::write_nil(out);
                }
                Summary::OrSet(c) => {
                    w_uint(out, Kind::OrSet as u64);
                    table.write_context(out, c);
                }
                Summary::Lww(ts, a) => {
                    w_uint(out, Kind::Lww as u64);
                    w_array(out, 2);
                    w_hlc(out, ts);
                    w_uint(out, table.index(a));
                }
                Summary::GCounter(c) => {
                    w_uint(out, Kind::GCounter as u64);
                    table.write_counter(out, c);
                }
                Summary::PnCounter(c) => {
                    w_uint(out, Kind::PnCounter as u64);
                    table.write_pn(out, c);
                }
            }
        }
    }
    /// Decodes and validates a digest; errors as [`CrdtMap::decode`].
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Digest, CrdtError> {
        let mut r = Reader { buf: bytes };
        let actors = r.header()?;
        let n = r.array()?;
        if n > limits.max_keys {
            return Err(too_large("keys", limits.max_keys));
        }
        let mut entries: Vec<(String, Summary)> = Vec::with_capacity(n);
        let mut last_key: Option<&str> = None;
        for _ in 0..n {
            r.array_of(3, "entry")?;
            let key = r.key(limits, &mut last_key)?;
            let tag = r.uint_u8()?;
            let summary = match tag {
                0 => {
                    rd::read_nil(&mut r.buf).map_err(|e| malformed(format!("absent: {e}")))?;
                    Summary::Absent
                }
                _ => match Kind::from_u8(tag).ok_or_else(|| malformed("unknown kind"))? {
                    Kind::OrSet => Summary::OrSet(r.context(&actors, limits)?),
                    Kind::Lww => {
                        r.array_of(2, "lww summary")?;
                        let ts = r.hlc()?;
                        let actor = r.actor(&actors)?;
                        Summary::Lww(ts, actor)
                    }
                    Kind::GCounter => Summary::GCounter(r.g_counter(&actors, limits)?),
                    Kind::PnCounter => Summary::PnCounter(r.pn_counter(&actors, limits)?),
                },
            };
            entries.push((key.to_owned(), summary));
        }
        r.finish()?;
        // Keys are strictly ascending (checked): a bulk build.
        Ok(Digest {
            entries: entries.into_iter().collect(),
        })
    }
}

/// Encodes a map with the given entries (ascending, unique keys).
fn encode_map(entries: &[(&str, &Crdt)], out: &mut Vec<u8>) {
    let mut actors = BTreeSet::new();
    for (_, v) in entries {
        match v {
            Crdt::OrSet(s) => {
                actors.extend(s.context.ranges.keys().copied());
                actors.extend(s.live_dots().map(|d| d.actor));
            }
            Crdt::Lww(r) => {
                actors.insert(r.actor);
            }
            Crdt::GCounter(c) => collect_counter(&mut actors, c),
            Crdt::PnCounter(c) => {
                collect_counter(&mut actors, &c.p);
                collect_counter(&mut actors, &c.n);
            }
        }
    }
    let table = ActorTable::new(actors);
    table.write_header(out);
    w_array(out, entries.len());
    for (key, v) in entries {
        w_array(out, 3);
        w_str(out, key);
        match v {
            Crdt::OrSet(s) => {
                w_uint(out, Kind::OrSet as u64);
                w_array(out, 2);
                w_array(out, s.entries.len());
                for (elem, dots) in &s.entries {
                    w_array(out, 2);
                    w_bin(out, elem);
                    w_array(out, dots.len());
                    for d in dots {
                        w_array(out, 2);
                        w_uint(out, table.index(&d.actor));
                        w_uint(out, d.counter);
                    }
                }
                table.write_context(out, &s.context);
            }
            Crdt::Lww(r) => {
                w_uint(out, Kind::Lww as u64);
                w_array(out, 3);
                if r.deleted {
                    let _ = wr::write_nil(out);
                } else {
                    w_bin(out, &r.value);
                }
                w_hlc(out, &r.ts);
                w_uint(out, table.index(&r.actor));
            }
            Crdt::GCounter(c) => {
                w_uint(out, Kind::GCounter as u64);
                table.write_counter(out, c);
            }
            Crdt::PnCounter(c) => {
                w_uint(out, Kind::PnCounter as u64);
                table.write_pn(out, c);
            }
        }
    }
}

fn collect_counter(actors: &mut BTreeSet<ActorId>, c: &GCounter) {
    actors.extend(c.counts.iter().filter(|(_, &n)| n > 0).map(|(a, _)| *a));
}

/// The per-message actor table (ascending).
struct ActorTable {
    actors: Vec<ActorId>,
}

impl ActorTable {
    fn new(actors: BTreeSet<ActorId>) -> Self {
        ActorTable {
            actors: actors.into_iter().collect(),
        }
    }
    fn index(&self, a: &ActorId) -> u64 {
        // Every actor written was collected into the table first.
        self.actors.binary_search(a).unwrap_or(0) as u64
    }
    fn write_header(&self, out: &mut Vec<u8>) {
        w_array(out, 3);
        w_uint(out, VERSION);
        w_array(out, self.actors.len());
        for a in &self.actors {
            w_bin(out, &a.0);
        }
    }
    fn write_context(&self, out: &mut Vec<u8>, c: &DotSet) {
        w_array(out, c.ranges.len());
        for (a, rs) in &c.ranges {
            w_array(out, 2);
            w_uint(out, self.index(a));
            w_array(out, rs.len());
            for &(lo, hi) in rs {
                w_array(out, 2);
                w_uint(out, lo);
                w_uint(out, hi);
            }
        }
    }
    fn write_counter(&self, out: &mut Vec<u8>, c: &GCounter) {
        w_array(out, c.counts.values().filter(|&&n| n > 0).count());
        for (a, &n) in c.counts.iter().filter(|(_, &n)| n > 0) {
            let base = c.base_of(a).min(n);
            w_array(out, if base > 0 { 3 } else { 2 });
            w_uint(out, self.index(a));
            w_uint(out, n);
            if base > 0 {
                w_uint(out, base);
            }
        }
    }
    fn write_pn(&self, out: &mut Vec<u8>, c: &PnCounter) {
        w_array(out, 2);
        self.write_counter(out, &c.p);
        self.write_counter(out, &c.n);
    }
}

// Writing to a Vec cannot fail: the results are ignored.
fn w_array(out: &mut Vec<u8>, n: usize) {
    let _ = wr::write_array_len(out, u32::try_from(n).unwrap_or(u32::MAX));
}
fn w_uint(out: &mut Vec<u8>, v: u64) {
    let _ = wr::write_uint(out, v);
}
fn w_bin(out: &mut Vec<u8>, b: &[u8]) {
    let _ = wr::write_bin(out, b);
}
fn w_str(out: &mut Vec<u8>, s: &str) {
    let _ = wr::write_str(out, s);
}
fn w_hlc(out: &mut Vec<u8>, ts: &Hlc) {
    w_array(out, 2);
    w_uint(out, ts.wall_ms);
    w_uint(out, u64::from(ts.logical));
}

fn malformed(msg: impl Into<String>) -> CrdtError {
    CrdtError::Malformed(msg.into())
}

fn too_large(what: &'static str, limit: usize) -> CrdtError {
    CrdtError::TooLarge { what, limit }
}

/// A validating reader over one message. Declared lengths are checked against the bytes
/// left (every array item takes at least one byte) before anything is allocated.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn array(&mut self) -> Result<usize, CrdtError> {
        let n = rd::read_array_len(&mut self.buf).map_err(|e| malformed(format!("array: {e}")))?
            as usize;
        if n > self.buf.len() {
            return Err(malformed("array longer than the input"));
        }
        Ok(n)
    }
    fn array_of(&mut self, len: usize, what: &str) -> Result<(), CrdtError> {
        if self.array()? != len {
            return Err(malformed(format!("{what}: expected {len} items")));
        }
        Ok(())
    }
    fn uint(&mut self) -> Result<u64, CrdtError> {
        rd::read_int::<u64, _>(&mut self.buf).map_err(|e| malformed(format!("integer: {e}")))
    }
    fn uint_u8(&mut self) -> Result<u8, CrdtError> {
        u8::try_from(self.uint()?).map_err(|_| malformed("kind out of range"))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CrdtError> {
        if n > self.buf.len() {
            return Err(malformed("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn bin(&mut self) -> Result<&'a [u8], CrdtError> {
        let n = rd::read_bin_len(&mut self.buf).map_err(|e| malformed(format!("bin: {e}")))?;
        self.take(n as usize)
    }
    fn str(&mut self) -> Result<&'a str, CrdtError> {
        let n = rd::read_str_len(&mut self.buf).map_err(|e| malformed(format!("str: {e}")))?;
        std::str::from_utf8(self.take(n as usize)?).map_err(|_| malformed("key is not UTF-8"))
    }
    fn finish(&self) -> Result<(), CrdtError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(malformed("trailing bytes"))
        }
    }
    /// `[1, [actor ...], ` — the version and the actor table (ascending, unique).
    fn header(&mut self) -> Result<Vec<ActorId>, CrdtError> {
        self.array_of(3, "message")?;
        if self.uint()? != VERSION {
            return Err(malformed("unknown version"));
        }
        let n = self.array()?;
        if n > self.buf.len() / ACTOR_BYTES {
            return Err(malformed("actor table longer than the input"));
        }
        let mut actors: Vec<ActorId> = Vec::with_capacity(n);
        for _ in 0..n {
            let a = ActorId(
                self.bin()?
                    .try_into()
                    .map_err(|_| malformed("actor is not 32 bytes"))?,
            );
            if actors.last().is_some_and(|last| *last >= a) {
                return Err(malformed("actor table not ascending"));
            }
            actors.push(a);
        }
        Ok(actors)
    }
    fn actor_index(&mut self, actors: &[ActorId]) -> Result<usize, CrdtError> {
        let i = self.uint()?;
        if i >= actors.len() as u64 {
            return Err(malformed("actor index out of range"));
        }
        Ok(i as usize)
    }
    fn actor(&mut self, actors: &[ActorId]) -> Result<ActorId, CrdtError> {
        Ok(actors[self.actor_index(actors)?])
    }
    fn key(&mut self, limits: &Limits, last: &mut Option<&'a str>) -> Result<&'a str, CrdtError> {
        let key = self.str()?;
        if key.len() > limits.max_key_bytes {
            return Err(too_large("key bytes", limits.max_key_bytes));
        }
        if last.is_some_and(|l| l >= key) {
            return Err(malformed("keys not ascending (or duplicate key)"));
        }
        *last = Some(key);
        Ok(key)
    }
    fn hlc(&mut self) -> Result<Hlc, CrdtError> {
        self.array_of(2, "hlc")?;
        let wall_ms = self.uint()?;
        let logical =
            u32::try_from(self.uint()?).map_err(|_| malformed("hlc logical out of range"))?;
        Ok(Hlc { wall_ms, logical })
    }
    /// `[[idx, [[lo, hi] ...]] ...]`: indices ascending, ranges non-empty, sorted,
    /// disjoint and non-adjacent, counters ≥ 1.
    fn context(&mut self, actors: &[ActorId], limits: &Limits) -> Result<DotSet, CrdtError> {
        let n = self.array()?;
        if n > limits.max_actors {
            return Err(too_large("actors", limits.max_actors));
        }
        let mut ctx = DotSet::new();
        let mut total = 0usize;
        let mut last_idx: Option<usize> = None;
        for _ in 0..n {
            self.array_of(2, "context entry")?;
            let idx = self.actor_index(actors)?;
            if last_idx.is_some_and(|l| l >= idx) {
                return Err(malformed("context actors not ascending"));
            }
            last_idx = Some(idx);
            let m = self.array()?;
            if m == 0 {
                return Err(malformed("context entry without ranges"));
            }
            total = total.saturating_add(m);
            if total > limits.max_ranges {
                return Err(too_large("ranges", limits.max_ranges));
            }
            let mut ranges: Vec<(u64, u64)> = Vec::with_capacity(m.min(self.buf.len() / 3));
            for _ in 0..m {
                self.array_of(2, "range")?;
                let lo = self.uint()?;
                let hi = self.uint()?;
                if lo == 0 {
                    return Err(malformed("counter 0"));
                }
                if lo > hi {
                    return Err(malformed("range lo > hi"));
                }
                if ranges
                    .last()
                    .is_some_and(|&(_, ph)| lo <= ph.saturating_add(1))
                {
                    return Err(malformed("ranges unsorted, overlapping or adjacent"));
                }
                ranges.push((lo, hi));
            }
            ctx.ranges.insert(actors[idx], ranges);
        }
        Ok(ctx)
    }
    /// `[[[elem, [[idx, counter] ...]] ...], context]`.
    fn or_set(&mut self, actors: &[ActorId], limits: &Limits) -> Result<OrSet, CrdtError> {
        self.array_of(2, "or_set")?;
        let n = self.array()?;
        if n > limits.max_elements {
            return Err(too_large("elements", limits.max_elements));
        }
        let mut entries: Vec<(Bytes, BTreeSet<Dot>)> = Vec::with_capacity(n);
        let mut last_elem: Option<&[u8]> = None;
        // (live dot, element) pairs: sorted, they detect a dot held by two elements and
        // become the set's index.
        let mut pairs: Vec<(Dot, Bytes)> = Vec::with_capacity(n);
        for _ in 0..n {
            self.array_of(2, "element")?;
            let elem = self.bin()?;
            if elem.len() > limits.max_value_bytes {
                return Err(too_large("value bytes", limits.max_value_bytes));
            }
            if last_elem.is_some_and(|l| l >= elem) {
                return Err(malformed("elements not ascending (or duplicate element)"));
            }
            last_elem = Some(elem);
            let m = self.array()?;
            if m == 0 {
                return Err(malformed("element without dots"));
            }
            if m > limits.max_actors {
                return Err(too_large("actors", limits.max_actors));
            }
            let elem = Bytes::copy_from_slice(elem);
            let mut dots: BTreeSet<Dot> = BTreeSet::new();
            let mut last: Option<(usize, u64)> = None;
            for _ in 0..m {
                self.array_of(2, "dot")?;
                let idx = self.actor_index(actors)?;
                let counter = self.uint()?;
                if counter == 0 {
                    return Err(malformed("counter 0"));
                }
                if last.is_some_and(|l| l >= (idx, counter)) {
                    return Err(malformed("dots not ascending"));
                }
                last = Some((idx, counter));
                let dot = Dot {
                    actor: actors[idx],
                    counter,
                };
                pairs.push((dot, elem.clone()));
                dots.insert(dot);
            }
            entries.push((elem, dots));
        }
        pairs.sort_unstable_by_key(|p| p.0);
        if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(malformed("dot held by two elements"));
        }
        let context = self.context(actors, limits)?;
        if !covers_sorted(&context, pairs.iter().map(|(d, _)| d)) {
            return Err(malformed("live dot outside the causal context"));
        }
        // Elements are strictly ascending: a bulk build.
        Ok(OrSet::from_indexed(
            entries.into_iter().collect(),
            context,
            pairs.into_iter().collect(),
        ))
    }
    /// `[value bin | nil, hlc, idx]`: nil is a tombstone (a removal), whose timestamp must
    /// not be zero.
    fn lww(&mut self, actors: &[ActorId], limits: &Limits) -> Result<LwwRegister, CrdtError> {
        self.array_of(3, "lww")?;
        let deleted = self.buf.first() == Some(&0xc0);
        let value = if deleted {
            self.buf = &self.buf[1..];
            &[][..]
        } else {
            self.bin()?
        };
        if value.len() > limits.max_value_bytes {
            return Err(too_large("value bytes", limits.max_value_bytes));
        }
        let ts = self.hlc()?;
        let actor = self.actor(actors)?;
        if deleted && ts == Hlc::default() {
            return Err(malformed("tombstone at time zero"));
        }
        Ok(LwwRegister {
            value: Bytes::copy_from_slice(value),
            ts,
            actor,
            deleted,
        })
    }
    /// `[[idx, count] | [idx, count, base] ...]`: indices ascending, counts ≥ 1,
    /// 1 ≤ base ≤ count.
    fn g_counter(&mut self, actors: &[ActorId], limits: &Limits) -> Result<GCounter, CrdtError> {
        let n = self.array()?;
        if n > limits.max_actors {
            return Err(too_large("actors", limits.max_actors));
        }
        let mut c = GCounter::default();
        let mut last: Option<usize> = None;
        for _ in 0..n {
            let len = self.array()?;
            if len != 2 && len != 3 {
                return Err(malformed("count: expected 2 or 3 items"));
            }
            let idx = self.actor_index(actors)?;
            if last.is_some_and(|l| l >= idx) {
                return Err(malformed("counter actors not ascending"));
            }
            last = Some(idx);
            let count = self.uint()?;
            if count == 0 {
                return Err(malformed("count 0"));
            }
            c.counts.insert(actors[idx], count);
            if len == 3 {
                let base = self.uint()?;
                if base == 0 || base > count {
                    return Err(malformed("counter base 0 or above the count"));
                }
                c.base.insert(actors[idx], base);
            }
        }
        Ok(c)
    }
    /// `[p, n]`.
    fn pn_counter(&mut self, actors: &[ActorId], limits: &Limits) -> Result<PnCounter, CrdtError> {
        self.array_of(2, "pn_counter")?;
        let c = PnCounter {
            p: self.g_counter(actors, limits)?,
            n: self.g_counter(actors, limits)?,
        };
        if c.actor_count() > limits.max_actors {
            return Err(too_large("actors", limits.max_actors));
        }
        Ok(c)
    }
}

/// Whether `context` holds every one of `dots` (ascending): one walk over both.
fn covers_sorted<'d>(context: &DotSet, dots: impl Iterator<Item = &'d Dot>) -> bool {
    let mut cur: Option<(&ActorId, &[(u64, u64)])> = None;
    let mut i = 0usize;
    for d in dots {
        if cur.is_none_or(|(a, _)| *a != d.actor) {
            let Some(rs) = context.ranges.get(&d.actor) else {
                return false;
            };
            cur = Some((&d.actor, rs.as_slice()));
            i = 0;
        }
        let Some((_, rs)) = cur else { return false };
        while i < rs.len() && rs[i].1 < d.counter {
            i += 1;
        }
        if i >= rs.len() || rs[i].0 > d.counter {
            return false;
        }
    }
    true
}

/// Length of the encoding of a map holding only `key → value`.
pub(crate) fn single_len(key: &str, value: &Crdt) -> usize {
    let mut out = Vec::new();
    encode_map(&[(key, value)], &mut out);
    out.len()
}
