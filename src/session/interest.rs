//! Interest frames: decoding a `subscribe` / `unsubscribe` received, and encoding what a
//! relay tells a link (`docs/PROTOCOL.md` §5.7–§5.9, §8a). Shared by every mode: a node's
//! uplink and mesh links, a bridge's children and its parent link.

use bytes::Bytes;

use crate::relay::Delta;
use crate::wire::{ErrorCode, Frame, Qos, RawFrame, Subscribe, Unsubscribe};

/// Most patterns in one interest frame a node or bridge sends (the "topics per frame" bound
/// of `docs/PROTOCOL.md` §5.7).
pub const PATTERNS_PER_FRAME: usize = 1000;

/// Correlation id of the last `subscribe` of the interest snapshot sent first on every new
/// upward session (a node's uplink, a bridge's parent link). The other side queues its own
/// interest before it answers this `subscribe`, so its `suback` marks "interest snapshot
/// complete" (`docs/PROTOCOL.md` §8a).
pub const INTEREST_SYNC: u64 = u64::MAX;

/// A validated `SUBSCRIBE` or `UNSUBSCRIBE`: patterns normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterestRequest {
    /// Normalised patterns.
    pub patterns: Vec<String>,
    /// The request's correlation id (echoed in `SUBACK`).
    pub correlation_id: u64,
    /// `true` for subscribe, `false` for unsubscribe.
    pub subscribe: bool,
}

/// Decodes and validates a `SUBSCRIBE`/`UNSUBSCRIBE` frame. Errors carry the code,
/// a message and the correlation id when it was readable (also from a body that does not
/// decode, e.g. `MALFORMED_BODY` or `UNSUPPORTED_QOS`).
pub fn decode_interest(
    raw: &RawFrame,
) -> Result<InterestRequest, (ErrorCode, String, Option<u64>)> {
    let (topics, correlation_id, subscribe) = match raw.decode() {
        Ok(Frame::Subscribe(s)) => (s.topics, s.correlation_id, true),
        Ok(Frame::Unsubscribe(u)) => (u.topics, u.correlation_id, false),
        Ok(other) => {
            return Err((
                ErrorCode::Protocol,
                format!("{} is not an interest frame", other.msg_type().as_str()),
                None,
            ))
        }
        Err(e) => return Err((e.code(), e.to_string(), raw.peek_correlation_id())),
    };
    let patterns = topics
        .iter()
        .map(|t| crate::topic::normalize_pattern(t).map_err(|e| format!("pattern {t:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|msg| (ErrorCode::InvalidTopic, msg, Some(correlation_id)))?;
    Ok(InterestRequest {
        patterns,
        correlation_id,
        subscribe,
    })
}

/// A `subscribe` (or `unsubscribe`) frame for `patterns`.
pub fn interest_frame(patterns: &[String], subscribe: bool, correlation_id: u64) -> Bytes {
    let topics = patterns.to_vec();
    if subscribe {
        Frame::Subscribe(Subscribe {
            topics,
            qos: Qos::AtLeastOnce,
            correlation_id,
        })
        .to_bytes()
    } else {
        Frame::Unsubscribe(Unsubscribe {
            topics,
            correlation_id,
        })
        .to_bytes()
    }
}

/// The frames telling a link one [`Delta`]: `subscribe`s of its additions, then
/// `unsubscribe`s of its withdrawals, at most [`PATTERNS_PER_FRAME`] patterns each.
pub fn delta_frames(d: &Delta) -> impl Iterator<Item = Bytes> + '_ {
    let add = d
        .add
        .chunks(PATTERNS_PER_FRAME)
        .map(|c| interest_frame(c, true, 0));
    let remove = d
        .remove
        .chunks(PATTERNS_PER_FRAME)
        .map(|c| interest_frame(c, false, 0));
    add.chain(remove)
}

/// The interest snapshot of a new upward session: `subscribe`s of `told`, always at least
/// one (possibly with no topics), the last carrying [`INTEREST_SYNC`].
pub fn snapshot_frames(told: &[String]) -> Vec<Bytes> {
    let chunks: Vec<&[String]> = if told.is_empty() {
        vec![&[]]
    } else {
        told.chunks(PATTERNS_PER_FRAME).collect()
    };
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| interest_frame(c, true, if i == last { INTEREST_SYNC } else { 0 }))
        .collect()
}
