//! Topics and subscription patterns: validation, normalisation and matching.
//!
//! Source: the Macula design (v0.16 gateway dialect). A **topic** is a dot-separated list of
//! segments, each one or more characters of `[A-Za-z0-9_-]`, e.g. `sensors.site-3.dev_7.temp`.
//! A **pattern** is like a topic, but a segment may be exactly `*` (matches exactly one segment)
//! or exactly `**` (matches zero or more segments). So `a.*.c` matches `a.b.c` but neither `a.c`
//! nor `a.b.b.c`; `a.**` matches `a`, `a.b` and `a.b.c`; `**` alone matches every topic.
//! The MQTT-style `#` of the Erlang code is not supported.
//!
//! Limits ([`MAX_TOPIC_LEN`] bytes, [`MAX_SEGMENTS`] segments) apply to topics and to patterns
//! as written (before normalisation). Consecutive `**` segments (`a.**.**.b`) are valid and mean
//! the same as one `**`; [`normalize_pattern`] collapses them, and [`PatternTrie`] stores the
//! normalised form, so `a.**.**` and `a.**` name the same entry.
//!
//! [`matches()`] is the simple reference matcher for one pattern; [`PatternTrie`] answers "which of
//! many patterns match this topic" without scanning all of them.

mod trie;

pub use trie::PatternTrie;

/// Maximum length of a topic or pattern, in bytes (UTF-8 length of the string as given).
pub const MAX_TOPIC_LEN: usize = 256;

/// Maximum number of dot-separated segments in a topic or pattern (before normalisation).
pub const MAX_SEGMENTS: usize = 32;

/// Why a topic or pattern is invalid. Returned by [`validate_topic`], [`validate_pattern`] and
/// [`normalize_pattern`]; checks run in the order of the variants below, and within a string from
/// left to right, so the first problem found is reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The string is empty.
    #[error("topic is empty")]
    Empty,
    /// The string is longer than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// Length of the string, in bytes.
        len: usize,
        /// The limit, in bytes ([`MAX_TOPIC_LEN`]).
        max: usize,
    },
    /// The string has more than [`MAX_SEGMENTS`] segments.
    #[error("topic has {count} segments; the maximum is {max}")]
    TooManySegments {
        /// Number of segments (dots + 1).
        count: usize,
        /// The limit ([`MAX_SEGMENTS`]).
        max: usize,
    },
    /// A segment is empty: a leading, trailing or doubled dot.
    #[error("segment {index} is empty (leading, trailing or doubled dot)")]
    EmptySegment {
        /// Zero-based index of the empty segment.
        index: usize,
    },
    /// A character outside `[A-Za-z0-9_-]` (and, in patterns, other than a wildcard `*`).
    #[error("character {ch:?} at byte {index} is not allowed (only A-Z, a-z, 0-9, `_`, `-`)")]
    BadChar {
        /// Byte offset of the character in the whole string.
        index: usize,
        /// The offending character.
        ch: char,
    },
    /// A concrete topic contains `*` (in any segment); wildcards belong in patterns only.
    #[error("segment {index} contains `*`; wildcards are allowed in patterns only")]
    WildcardInTopic {
        /// Zero-based index of the segment containing `*`.
        index: usize,
    },
    /// A pattern segment mixes `*` with other characters, or has three or more `*` (`a*`, `***`).
    #[error("segment {segment:?} is not a wildcard: a wildcard segment is exactly `*` or `**`")]
    BadWildcard {
        /// The offending segment, as written.
        segment: String,
    },
}

/// Checks that `topic` is a valid concrete topic (no wildcards).
///
/// Runs in one pass over the bytes and does not allocate on success.
///
/// # Errors
/// [`TopicError::Empty`], [`TopicError::TooLong`], [`TopicError::TooManySegments`],
/// [`TopicError::EmptySegment`], [`TopicError::BadChar`] or [`TopicError::WildcardInTopic`].
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    validate(topic, false)
}

/// Checks that `pattern` is a valid subscription pattern: a topic in which a segment may also be
/// exactly `*` or `**`. Consecutive `**` segments are accepted (see [`normalize_pattern`]).
///
/// Does not allocate on success.
///
/// # Errors
/// [`TopicError::Empty`], [`TopicError::TooLong`], [`TopicError::TooManySegments`],
/// [`TopicError::EmptySegment`], [`TopicError::BadChar`] or [`TopicError::BadWildcard`].
pub fn validate_pattern(pattern: &str) -> Result<(), TopicError> {
    validate(pattern, true)
}

/// Validates `pattern` and returns its normal form, in which runs of consecutive `**` segments
/// are collapsed into one (`a.**.**.b` → `a.**.b`). Every other pattern is returned unchanged.
///
/// # Errors
/// Those of [`validate_pattern`].
pub fn normalize_pattern(pattern: &str) -> Result<String, TopicError> {
    validate_pattern(pattern)?;
    Ok(collapse_globs(pattern))
}

/// `pattern` with each run of consecutive `**` segments collapsed into one (no validation).
pub(crate) fn collapse_globs(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut prev_glob = false;
    for segment in pattern.split('.') {
        let glob = segment == "**";
        if glob && prev_glob {
            continue;
        }
        prev_glob = glob;
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(segment);
    }
    out
}

/// Returns whether `pattern` has a wildcard segment (`*` or `**`), i.e. may match more than one
/// topic. Meaningful for valid patterns; does not validate.
pub fn is_wildcard(pattern: &str) -> bool {
    pattern.split('.').any(|s| s == "*" || s == "**")
}

/// Reference matcher: returns whether `pattern` matches `topic`.
///
/// Both are assumed valid (see [`validate_pattern`], [`validate_topic`]); on invalid input the
/// answer is unspecified but the function does not panic. Normalisation is not needed.
///
/// Uses the classic glob algorithm at segment granularity, with one back-tracking point at the
/// last `**` seen: O(pattern segments × topic segments) in the worst case, no allocation.
pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split('.');
    let mut t = topic.split('.');
    // After the last `**` seen: where the pattern resumes, and the topic position the `**` has
    // absorbed up to. On a mismatch the `**` absorbs one more topic segment and we retry.
    let mut back: Option<(std::str::Split<'_, char>, std::str::Split<'_, char>)> = None;
    loop {
        match p.next() {
            Some("**") => {
                back = Some((p.clone(), t.clone()));
                continue;
            }
            Some(ps) => {
                if let Some(ts) = t.next() {
                    if ps == "*" || ps == ts {
                        continue;
                    }
                }
            }
            None => {
                if t.clone().next().is_none() {
                    return true;
                }
            }
        }
        // Mismatch: let the last `**` absorb one more segment, or fail.
        match &mut back {
            Some((bp, bt)) => {
                if bt.next().is_none() {
                    return false;
                }
                p = bp.clone();
                t = bt.clone();
            }
            None => return false,
        }
    }
}

/// Whether every topic matched by pattern `q` is matched by pattern `p` (both valid and
/// normalised, see [`normalize_pattern`]): sound, not complete. When it says `p` covers
/// `q`, it does; a few exotic pairs it cannot prove (`**.*` covers `*.**`) get `false`,
/// which costs an extra advertised pattern in the relay's cover (`crate::relay::cover`) and
/// a refusal, never a grant, in a permission check (`crate::auth::permissions`). For a `q`
/// without `**` it is exact. Cost: O(segments(p) × segments(q)), at most 33 × 33 cells.
pub fn covers(p: &str, q: &str) -> bool {
    if p == q {
        return true;
    }
    let p: Vec<&str> = p.split('.').collect();
    let q: Vec<&str> = q.split('.').collect();
    // ok[i][j]: p[i..] covers q[j..]. Filled from the back.
    let (n, m) = (p.len(), q.len());
    let mut ok = vec![false; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    ok[at(n, m)] = true;
    for i in (0..n).rev() {
        for j in (0..=m).rev() {
            let v = match p[i] {
                // `**` absorbs nothing more, or one more segment of q (any kind) and stays.
                "**" => ok[at(i + 1, j)] || (j < m && ok[at(i, j + 1)]),
                // `*` is exactly one segment: a literal or another `*`, never a `**`.
                "*" => j < m && q[j] != "**" && ok[at(i + 1, j + 1)],
                lit => j < m && q[j] == lit && ok[at(i + 1, j + 1)],
            };
            ok[at(i, j)] = v;
        }
    }
    ok[at(0, 0)]
}

/// Returns whether some topic matches both `a` and `b` (exact). Both are assumed valid;
/// at most [`MAX_SEGMENTS`]² steps.
pub fn overlaps(a: &str, b: &str) -> bool {
    let x: Vec<&str> = a.split('.').collect();
    let y: Vec<&str> = b.split('.').collect();
    // both[i][j]: some topic matches x[i..] and y[j..].
    let mut both = vec![vec![false; y.len() + 1]; x.len() + 1];
    for i in (0..=x.len()).rev() {
        for j in (0..=y.len()).rev() {
            both[i][j] = if i == x.len() && j == y.len() {
                true
            } else if i < x.len() && x[i] == "**" {
                both[i + 1][j] || (j < y.len() && both[i][j + 1])
            } else if j < y.len() && y[j] == "**" {
                both[i][j + 1] || (i < x.len() && both[i + 1][j])
            } else if i < x.len() && j < y.len() {
                (x[i] == "*" || y[j] == "*" || x[i] == y[j]) && both[i + 1][j + 1]
            } else {
                false
            };
        }
    }
    both[0][0]
}

/// Bytes allowed anywhere in a segment: `[A-Za-z0-9_-]`.
static PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        b += 1;
    }
    table
};

/// Shared validator for topics (`wildcards == false`) and patterns: one pass over the bytes,
/// leaving anything other than plain bytes and dots to the slow path.
fn validate(s: &str, wildcards: bool) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong {
            len: s.len(),
            max: MAX_TOPIC_LEN,
        });
    }
    let bytes = s.as_bytes();
    let mut index = 0;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if PLAIN[usize::from(b)] {
            i += 1;
        } else if b == b'.' {
            if i == start {
                return fail(s, TopicError::EmptySegment { index });
            }
            index += 1;
            i += 1;
            start = i;
        } else {
            // `*` or a bad byte: check the whole segment the slow way. `start` and `end` sit
            // next to ASCII dots (or the ends), so they are char boundaries.
            let end = bytes[i..]
                .iter()
                .position(|&b| b == b'.')
                .map_or(bytes.len(), |p| i + p);
            let segment = s.get(start..end).unwrap_or_default();
            if let Err(e) = validate_segment(s, start, segment, index, wildcards) {
                return fail(s, e);
            }
            i = end;
        }
    }
    if start == bytes.len() {
        return fail(s, TopicError::EmptySegment { index });
    }
    if index + 1 > MAX_SEGMENTS {
        return Err(TopicError::TooManySegments {
            count: index + 1,
            max: MAX_SEGMENTS,
        });
    }
    Ok(())
}

/// Returns `err`, unless `s` has too many segments, which takes precedence.
#[cold]
fn fail(s: &str, err: TopicError) -> Result<(), TopicError> {
    let count = s.bytes().filter(|&b| b == b'.').count() + 1;
    if count > MAX_SEGMENTS {
        return Err(TopicError::TooManySegments {
            count,
            max: MAX_SEGMENTS,
        });
    }
    Err(err)
}

/// Validates one segment of `whole`, which starts at byte offset `start`.
fn validate_segment(
    whole: &str,
    start: usize,
    segment: &str,
    index: usize,
    wildcards: bool,
) -> Result<(), TopicError> {
    if segment.is_empty() {
        return Err(TopicError::EmptySegment { index });
    }
    for (i, b) in segment.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            continue;
        }
        if b == b'*' {
            if !wildcards {
                return Err(TopicError::WildcardInTopic { index });
            }
            if segment == "*" || segment == "**" {
                return Ok(());
            }
            return Err(TopicError::BadWildcard {
                segment: segment.to_owned(),
            });
        }
        // Every earlier byte of the segment is ASCII and the segment starts after an ASCII dot
        // (or at 0), so `start + i` is a char boundary; `get` keeps this panic-free regardless.
        let at = start + i;
        let ch = whole
            .get(at..)
            .and_then(|rest| rest.chars().next())
            .unwrap_or(char::REPLACEMENT_CHARACTER);
        return Err(TopicError::BadChar { index: at, ch });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
