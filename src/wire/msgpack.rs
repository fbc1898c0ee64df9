//! Minimal MessagePack helpers: the hand-written writers of the publish hot path, their
//! exact sizes, and a non-recursive structure check run before serde sees a body.
//!
//! Format: the MessagePack specification (github.com/msgpack/msgpack/blob/master/spec.md).

use bytes::BufMut;

/// Deepest nesting accepted in a body (our schemas use 2: map → array → bin).
pub(crate) const MAX_DEPTH: usize = 16;

/// Writes a map header for `n` entries.
pub(crate) fn put_map_len(dst: &mut impl BufMut, n: u32) {
    if n < 16 {
        dst.put_u8(0x80 | n as u8);
    } else if n <= u16::MAX as u32 {
        dst.put_u8(0xde);
        dst.put_u16(n as u16);
    } else {
        dst.put_u8(0xdf);
        dst.put_u32(n);
    }
}

/// Writes a str (header + UTF-8 bytes). The caller ensures `s.len() <= u32::MAX`.
pub(crate) fn put_str(dst: &mut impl BufMut, s: &str) {
    let n = s.len();
    if n < 32 {
        dst.put_u8(0xa0 | n as u8);
    } else if n <= u8::MAX as usize {
        dst.put_u8(0xd9);
        dst.put_u8(n as u8);
    } else if n <= u16::MAX as usize {
        dst.put_u8(0xda);
        dst.put_u16(n as u16);
    } else {
        dst.put_u8(0xdb);
        dst.put_u32(n as u32);
    }
    dst.put_slice(s.as_bytes());
}

/// Writes a bin (header + bytes). The caller ensures `b.len() <= u32::MAX`.
pub(crate) fn put_bin(dst: &mut impl BufMut, b: &[u8]) {
    let n = b.len();
    if n <= u8::MAX as usize {
        dst.put_u8(0xc4);
        dst.put_u8(n as u8);
    } else if n <= u16::MAX as usize {
        dst.put_u8(0xc5);
        dst.put_u16(n as u16);
    } else {
        dst.put_u8(0xc6);
        dst.put_u32(n as u32);
    }
    dst.put_slice(b);
}

/// Writes an unsigned integer in its most compact form.
pub(crate) fn put_uint(dst: &mut impl BufMut, v: u64) {
    if v < 128 {
        dst.put_u8(v as u8);
    } else if v <= u8::MAX as u64 {
        dst.put_u8(0xcc);
        dst.put_u8(v as u8);
    } else if v <= u16::MAX as u64 {
        dst.put_u8(0xcd);
        dst.put_u16(v as u16);
    } else if v <= u32::MAX as u64 {
        dst.put_u8(0xce);
        dst.put_u32(v as u32);
    } else {
        dst.put_u8(0xcf);
        dst.put_u64(v);
    }
}

/// Writes a boolean.
pub(crate) fn put_bool(dst: &mut impl BufMut, v: bool) {
    dst.put_u8(if v { 0xc3 } else { 0xc2 });
}

/// Encoded size of a str of `n` bytes, header included.
pub(crate) fn str_size(n: usize) -> u64 {
    let head = match n {
        0..=31 => 1,
        32..=255 => 2,
        256..=65535 => 3,
        _ => 5,
    };
    head + n as u64
}

/// Encoded size of a bin of `n` bytes, header included.
pub(crate) fn bin_size(n: usize) -> u64 {
    let head = match n {
        0..=255 => 2,
        256..=65535 => 3,
        _ => 5,
    };
    head + n as u64
}

/// Encoded size of an unsigned integer.
pub(crate) fn uint_size(v: u64) -> u64 {
    match v {
        0..=127 => 1,
        128..=255 => 2,
        256..=65535 => 3,
        65536..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Checks that `buf` holds exactly one MessagePack map, nested at most [`MAX_DEPTH`] deep,
/// with no bytes after it. Iterative (no recursion), allocation-free, O(number of items).
pub(crate) fn check_single_map(buf: &[u8]) -> Result<(), &'static str> {
    match buf.first() {
        Some(0x80..=0x8f | 0xde | 0xdf) => {}
        Some(_) => return Err("body is not a map"),
        None => return Err("empty body"),
    }
    // stack[d] = items still to read at depth d.
    let mut stack = [0u64; MAX_DEPTH + 1];
    let mut depth = 0usize;
    stack[0] = 1;
    let mut pos = 0usize;
    loop {
        while stack[depth] == 0 {
            if depth == 0 {
                return if pos == buf.len() {
                    Ok(())
                } else {
                    Err("trailing bytes after the body map")
                };
            }
            depth -= 1;
        }
        stack[depth] -= 1;
        let marker = *buf.get(pos).ok_or("body ends inside a value")?;
        pos += 1;
        let (skip, children) =
            marker_extent(marker, |n| read_be(buf, &mut pos, n))?.ok_or("reserved marker 0xc1")?;
        let rest = (buf.len() - pos) as u64;
        if skip > rest {
            return Err("body ends inside a value");
        }
        pos += skip as usize;
        if children > 0 {
            // Every item takes at least one byte: reject impossible counts early.
            if children > (buf.len() - pos) as u64 {
                return Err("container declares more items than bytes remain");
            }
            if depth == MAX_DEPTH {
                return Err("nesting too deep");
            }
            depth += 1;
            stack[depth] = children;
        }
    }
}

/// What follows a MessagePack marker byte: `(bytes to skip, child items to read)`.
/// `read(n)` reads an n-byte big-endian length that follows the marker. `None` for
/// the reserved marker 0xc1. Shared by the structure check and the hot-path parser.
pub(crate) fn marker_extent<E>(
    marker: u8,
    mut read: impl FnMut(usize) -> Result<u64, E>,
) -> Result<Option<(u64, u64)>, E> {
    Ok(Some(match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
        0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
        0x90..=0x9f => (0, u64::from(marker & 0x0f)),
        0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
        0xc4 | 0xd9 => (read(1)?, 0),
        0xc5 | 0xda => (read(2)?, 0),
        0xc6 | 0xdb => (read(4)?, 0),
        0xc7 => (read(1)? + 1, 0),
        0xc8 => (read(2)? + 1, 0),
        0xc9 => (read(4)? + 1, 0),
        0xcc | 0xd0 => (1, 0),
        0xcd | 0xd1 => (2, 0),
        0xca | 0xce | 0xd2 => (4, 0),
        0xcb | 0xcf | 0xd3 => (8, 0),
        0xd4 => (2, 0),
        0xd5 => (3, 0),
        0xd6 => (5, 0),
        0xd7 => (9, 0),
        0xd8 => (17, 0),
        0xdc => (0, read(2)?),
        0xdd => (0, read(4)?),
        0xde => (0, 2 * read(2)?),
        0xdf => (0, 2 * read(4)?),
        0xc1 => return Ok(None),
    }))
}

fn read_be(buf: &[u8], pos: &mut usize, n: usize) -> Result<u64, &'static str> {
    let bytes = buf
        .get(*pos..*pos + n)
        .ok_or("body ends inside a value header")?;
    *pos += n;
    Ok(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Reads the unsigned integer stored under `key` in the top-level map of `buf`, skipping
/// every other entry without decoding it; `None` when `buf` is no map, the key is absent,
/// its value is not an unsigned integer, or the body ends before it. Lenient on purpose:
/// an error answering a malformed request still names the request when its
/// `correlation_id` is readable (`docs/PROTOCOL.md` §6). Allocation-free, no recursion.
pub(crate) fn peek_uint(buf: &[u8], key: &str) -> Option<u64> {
    let mut pos = 0usize;
    let marker = *buf.first()?;
    pos += 1;
    let entries = match marker {
        0x80..=0x8f => u64::from(marker & 0x0f),
        0xde => read_be(buf, &mut pos, 2).ok()?,
        0xdf => read_be(buf, &mut pos, 4).ok()?,
        _ => return None,
    };
    for _ in 0..entries {
        let k_marker = *buf.get(pos)?;
        let mut at = pos + 1;
        let (k_len, k_children) = marker_extent(k_marker, |n| read_be(buf, &mut at, n)).ok()??;
        let is_text = matches!(k_marker, 0xa0..=0xbf | 0xd9..=0xdb | 0xc4..=0xc6);
        if is_text && k_children == 0 {
            let end = at.checked_add(usize::try_from(k_len).ok()?)?;
            if buf.get(at..end)? == key.as_bytes() {
                return read_uint(buf, end);
            }
        }
        pos = skip_value(buf, pos)?;
        pos = skip_value(buf, pos)?;
    }
    None
}

/// Position after the one value (containers included) starting at `pos`.
fn skip_value(buf: &[u8], mut pos: usize) -> Option<usize> {
    let mut pending = 1u64;
    while pending > 0 {
        let marker = *buf.get(pos)?;
        pos += 1;
        let (skip, children) = marker_extent(marker, |n| read_be(buf, &mut pos, n)).ok()??;
        pos = pos.checked_add(usize::try_from(skip).ok()?)?;
        if pos > buf.len() {
            return None;
        }
        pending = pending - 1 + children;
    }
    Some(pos)
}

/// The unsigned integer at `pos` (positive fixint or uint 8–64).
fn read_uint(buf: &[u8], mut pos: usize) -> Option<u64> {
    let marker = *buf.get(pos)?;
    pos += 1;
    match marker {
        0x00..=0x7f => Some(u64::from(marker)),
        0xcc => read_be(buf, &mut pos, 1).ok(),
        0xcd => read_be(buf, &mut pos, 2).ok(),
        0xce => read_be(buf, &mut pos, 4).ok(),
        0xcf => read_be(buf, &mut pos, 8).ok(),
        _ => None,
    }
}
