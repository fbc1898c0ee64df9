//! Hand-written, single-pass parser of a `publish` body for the relay hot path.
//!
//! Same rules as the serde-based decoder (`docs/PROTOCOL.md` §5.7): one map with
//! string keys; `topic` (str), `payload` (bin), `qos` (uint), `message_id` (bin 16)
//! required; `retain` (bool, must be false) and `ts_us` (uint or nil) optional;
//! unknown keys skipped (values nested at most [`MAX_DEPTH`] deep); duplicate keys and
//! trailing bytes refused. Like the serde path it also accepts `str` where `bin` is
//! expected and vice versa. No allocation; the only UTF-8 check is the topic's.

use super::msgpack::{marker_extent, MAX_DEPTH};
use super::{MessageId, MessageType, PublishView, Qos, WireError};

/// Parses a publish body into a borrowed view.
///
/// Errors: [`WireError::Malformed`] (structure, types, missing or duplicate keys,
/// trailing bytes), [`WireError::InvalidField`] (`message_id` not 16 bytes,
/// `retain` true), [`WireError::UnsupportedQos`].
pub(crate) fn parse_publish(body: &[u8]) -> Result<PublishView<'_>, WireError> {
    let mut r = Reader { buf: body, pos: 0 };
    let n = r.map_len()?;
    let (mut topic, mut payload, mut qos, mut retain, mut id, mut ts) =
        (None, None, None, None, None, None);
    for _ in 0..n {
        let key = r.str_bytes()?;
        match key {
            b"topic" => set(&mut topic, "topic", r.str_bytes()?)?,
            b"payload" => set(&mut payload, "payload", r.str_bytes()?)?,
            b"qos" => set(&mut qos, "qos", r.uint()?)?,
            b"retain" => set(&mut retain, "retain", r.boolean()?)?,
            b"message_id" => set(&mut id, "message_id", r.str_bytes()?)?,
            b"ts_us" => set(&mut ts, "ts_us", r.opt_uint()?)?,
            _ => r.skip_value()?,
        }
    }
    if r.pos != body.len() {
        return Err(malformed("trailing bytes after the body map"));
    }
    let topic = topic.ok_or_else(|| missing("topic"))?;
    let topic = std::str::from_utf8(topic).map_err(|_| malformed("topic is not UTF-8"))?;
    let payload = payload.ok_or_else(|| missing("payload"))?;
    let qos = qos.ok_or_else(|| missing("qos"))?;
    let qos = Qos::from_u8(u8::try_from(qos).unwrap_or(u8::MAX))?;
    if retain == Some(true) {
        return Err(WireError::InvalidField {
            field: "retain",
            reason: "retained messages are not supported in protocol v1".into(),
        });
    }
    let id = id.ok_or_else(|| missing("message_id"))?;
    let message_id: MessageId = id.try_into().map_err(|_| WireError::InvalidField {
        field: "message_id",
        reason: format!("expected 16 bytes, got {}", id.len()),
    })?;
    Ok(PublishView {
        topic,
        payload,
        qos,
        retain: false,
        message_id,
        ts_us: ts.flatten(),
    })
}

fn malformed(reason: &str) -> WireError {
    WireError::Malformed {
        msg_type: MessageType::Publish as u8,
        reason: reason.into(),
    }
}

fn missing(field: &str) -> WireError {
    malformed(&format!("missing field `{field}`"))
}

fn set<T>(slot: &mut Option<T>, field: &str, v: T) -> Result<(), WireError> {
    if slot.replace(v).is_some() {
        return Err(malformed(&format!("duplicate field `{field}`")));
    }
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, WireError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| malformed("body ends inside a value"))?;
        self.pos += 1;
        Ok(b)
    }

    fn be(&mut self, n: usize) -> Result<u64, WireError> {
        let bytes = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or_else(|| malformed("body ends inside a value"))?;
        self.pos += n;
        Ok(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], WireError> {
        let n = usize::try_from(n).map_err(|_| malformed("length overflows"))?;
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| malformed("body ends inside a value"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn map_len(&mut self) -> Result<u64, WireError> {
        match self.byte()? {
            m @ 0x80..=0x8f => Ok(u64::from(m & 0x0f)),
            0xde => self.be(2),
            0xdf => self.be(4),
            _ => Err(malformed("body is not a map")),
        }
    }

    /// A `str` or `bin` value's bytes.
    fn str_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 | 0xc4 => self.be(1)?,
            0xda | 0xc5 => self.be(2)?,
            0xdb | 0xc6 => self.be(4)?,
            _ => return Err(malformed("expected a string or binary")),
        };
        self.take(len)
    }

    fn uint(&mut self) -> Result<u64, WireError> {
        match self.byte()? {
            m @ 0x00..=0x7f => Ok(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            0xd0 => self.signed(1),
            0xd1 => self.signed(2),
            0xd2 => self.signed(4),
            0xd3 => self.signed(8),
            _ => Err(malformed("expected an unsigned integer")),
        }
    }

    /// A signed encoding of a non-negative integer (serde accepts those too).
    fn signed(&mut self, n: usize) -> Result<u64, WireError> {
        let raw = self.be(n)?;
        let shift = 64 - 8 * n as u32;
        let v = ((raw << shift) as i64) >> shift;
        u64::try_from(v).map_err(|_| malformed("expected an unsigned integer"))
    }

    fn opt_uint(&mut self) -> Result<Option<u64>, WireError> {
        if self.buf.get(self.pos) == Some(&0xc0) {
            self.pos += 1;
            return Ok(None);
        }
        self.uint().map(Some)
    }

    fn boolean(&mut self) -> Result<bool, WireError> {
        match self.byte()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            _ => Err(malformed("expected a boolean")),
        }
    }

    /// Skips one value of any type, iteratively. The value sits inside the body map, so it may
    /// nest one level less than [`MAX_DEPTH`], the limit of the whole body (the same rule as
    /// the structure check of the other frames).
    fn skip_value(&mut self) -> Result<(), WireError> {
        let mut stack = [0u64; MAX_DEPTH + 1];
        let mut depth = 0usize;
        stack[0] = 1;
        loop {
            while stack[depth] == 0 {
                if depth == 0 {
                    return Ok(());
                }
                depth -= 1;
            }
            stack[depth] -= 1;
            let marker = self.byte()?;
            let (skip, children) = marker_extent(marker, |n| self.be(n))?
                .ok_or_else(|| malformed("reserved marker 0xc1"))?;
            self.take(skip)?;
            if children > 0 {
                if children > (self.buf.len() - self.pos) as u64 {
                    return Err(malformed("container declares more items than bytes remain"));
                }
                if depth == MAX_DEPTH - 1 {
                    return Err(malformed("nesting too deep"));
                }
                depth += 1;
                stack[depth] = children;
            }
        }
    }
}
