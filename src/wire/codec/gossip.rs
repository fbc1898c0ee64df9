//! Serde shapes of the gossip bodies (keys are the field names) and their decode-time
//! validation: `realm` / `scope` non-empty and bounded, `sender` of exactly 32 bytes, key
//! range bounds, opaque payloads of at most [`MAX_GOSSIP_STATE`] bytes (zero-copy slices of
//! the frame), and `part < parts`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::bad_len;
use crate::wire::gossip::{
    GossipPull, GossipPullReply, GossipPush, GossipSync, GossipSyncReply, MAX_GOSSIP_KEY,
    MAX_GOSSIP_NAME, MAX_GOSSIP_STATE,
};
use crate::wire::{NodeId, WireError};

// ---- encoding: borrowed views of the public structs ----

#[derive(Serialize)]
pub(super) struct GossipPushSer<'a> {
    realm: &'a str,
    scope: &'a str,
    #[serde(with = "serde_bytes")]
    sender: &'a [u8],
    part: u16,
    parts: u16,
    #[serde(with = "serde_bytes")]
    state: &'a [u8],
}

impl<'a> From<&'a GossipPush> for GossipPushSer<'a> {
    fn from(m: &'a GossipPush) -> Self {
        GossipPushSer {
            realm: &m.realm,
            scope: &m.scope,
            sender: &m.sender,
            part: m.part,
            parts: m.parts,
            state: &m.state,
        }
    }
}

#[derive(Serialize)]
pub(super) struct GossipPullSer<'a> {
    realm: &'a str,
    scope: &'a str,
    #[serde(with = "serde_bytes")]
    sender: &'a [u8],
    round: u64,
    from_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_key: Option<&'a str>,
    #[serde(with = "serde_bytes")]
    digest: &'a [u8],
}

impl<'a> From<&'a GossipPull> for GossipPullSer<'a> {
    fn from(m: &'a GossipPull) -> Self {
        GossipPullSer {
            realm: &m.realm,
            scope: &m.scope,
            sender: &m.sender,
            round: m.round,
            from_key: &m.from_key,
            to_key: m.to_key.as_deref(),
            digest: &m.digest,
        }
    }
}

#[derive(Serialize)]
pub(super) struct GossipPullReplySer<'a> {
    realm: &'a str,
    scope: &'a str,
    #[serde(with = "serde_bytes")]
    sender: &'a [u8],
    round: u64,
    from_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_key: Option<&'a str>,
    #[serde(with = "serde_bytes")]
    state: &'a [u8],
    #[serde(with = "serde_bytes")]
    wants: &'a [u8],
    part: u16,
    parts: u16,
}

impl<'a> From<&'a GossipPullReply> for GossipPullReplySer<'a> {
    fn from(m: &'a GossipPullReply) -> Self {
        GossipPullReplySer {
            realm: &m.realm,
            scope: &m.scope,
            sender: &m.sender,
            round: m.round,
            from_key: &m.from_key,
            to_key: m.to_key.as_deref(),
            state: &m.state,
            wants: &m.wants,
            part: m.part,
            parts: m.parts,
        }
    }
}

#[derive(Serialize)]
pub(super) struct GossipSyncSer<'a> {
    realm: &'a str,
    scope: &'a str,
    #[serde(with = "serde_bytes")]
    sender: &'a [u8],
    round: u64,
    #[serde(with = "serde_bytes")]
    state: &'a [u8],
    part: u16,
    parts: u16,
}

impl<'a> From<&'a GossipSync> for GossipSyncSer<'a> {
    fn from(m: &'a GossipSync) -> Self {
        GossipSyncSer {
            realm: &m.realm,
            scope: &m.scope,
            sender: &m.sender,
            round: m.round,
            state: &m.state,
            part: m.part,
            parts: m.parts,
        }
    }
}

#[derive(Serialize)]
pub(super) struct GossipSyncReplySer<'a> {
    realm: &'a str,
    scope: &'a str,
    #[serde(with = "serde_bytes")]
    sender: &'a [u8],
    round: u64,
    merged: u32,
}

impl<'a> From<&'a GossipSyncReply> for GossipSyncReplySer<'a> {
    fn from(m: &'a GossipSyncReply) -> Self {
        GossipSyncReplySer {
            realm: &m.realm,
            scope: &m.scope,
            sender: &m.sender,
            round: m.round,
            merged: m.merged,
        }
    }
}

// ---- decoding: borrowed shapes, then `check` validates and builds the public struct ----

#[derive(Deserialize)]
pub(super) struct GossipPushDe<'a> {
    realm: String,
    scope: String,
    #[serde(with = "serde_bytes", borrow)]
    sender: &'a [u8],
    part: u16,
    parts: u16,
    #[serde(with = "serde_bytes", borrow)]
    state: &'a [u8],
}

impl GossipPushDe<'_> {
    pub(super) fn check(self, frame: &Bytes) -> Result<GossipPush, WireError> {
        parts(self.part, self.parts)?;
        Ok(GossipPush {
            realm: name("realm", self.realm)?,
            scope: name("scope", self.scope)?,
            sender: sender(self.sender)?,
            part: self.part,
            parts: self.parts,
            state: blob(frame, "state", self.state)?,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct GossipPullDe<'a> {
    realm: String,
    scope: String,
    #[serde(with = "serde_bytes", borrow)]
    sender: &'a [u8],
    round: u64,
    from_key: String,
    #[serde(default)]
    to_key: Option<String>,
    #[serde(with = "serde_bytes", borrow)]
    digest: &'a [u8],
}

impl GossipPullDe<'_> {
    pub(super) fn check(self, frame: &Bytes) -> Result<GossipPull, WireError> {
        Ok(GossipPull {
            realm: name("realm", self.realm)?,
            scope: name("scope", self.scope)?,
            sender: sender(self.sender)?,
            round: self.round,
            from_key: key("from_key", self.from_key)?,
            to_key: self.to_key.map(|k| key("to_key", k)).transpose()?,
            digest: blob(frame, "digest", self.digest)?,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct GossipPullReplyDe<'a> {
    realm: String,
    scope: String,
    #[serde(with = "serde_bytes", borrow)]
    sender: &'a [u8],
    round: u64,
    from_key: String,
    #[serde(default)]
    to_key: Option<String>,
    #[serde(with = "serde_bytes", borrow)]
    state: &'a [u8],
    #[serde(with = "serde_bytes", borrow)]
    wants: &'a [u8],
    part: u16,
    parts: u16,
}

impl GossipPullReplyDe<'_> {
    pub(super) fn check(self, frame: &Bytes) -> Result<GossipPullReply, WireError> {
        parts(self.part, self.parts)?;
        Ok(GossipPullReply {
            realm: name("realm", self.realm)?,
            scope: name("scope", self.scope)?,
            sender: sender(self.sender)?,
            round: self.round,
            from_key: key("from_key", self.from_key)?,
            to_key: self.to_key.map(|k| key("to_key", k)).transpose()?,
            state: blob(frame, "state", self.state)?,
            wants: blob(frame, "wants", self.wants)?,
            part: self.part,
            parts: self.parts,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct GossipSyncDe<'a> {
    realm: String,
    scope: String,
    #[serde(with = "serde_bytes", borrow)]
    sender: &'a [u8],
    round: u64,
    #[serde(with = "serde_bytes", borrow)]
    state: &'a [u8],
    part: u16,
    parts: u16,
}

impl GossipSyncDe<'_> {
    pub(super) fn check(self, frame: &Bytes) -> Result<GossipSync, WireError> {
        parts(self.part, self.parts)?;
        Ok(GossipSync {
            realm: name("realm", self.realm)?,
            scope: name("scope", self.scope)?,
            sender: sender(self.sender)?,
            round: self.round,
            state: blob(frame, "state", self.state)?,
            part: self.part,
            parts: self.parts,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct GossipSyncReplyDe<'a> {
    realm: String,
    scope: String,
    #[serde(with = "serde_bytes", borrow)]
    sender: &'a [u8],
    round: u64,
    merged: u32,
}

impl GossipSyncReplyDe<'_> {
    pub(super) fn check(self) -> Result<GossipSyncReply, WireError> {
        Ok(GossipSyncReply {
            realm: name("realm", self.realm)?,
            scope: name("scope", self.scope)?,
            sender: sender(self.sender)?,
            round: self.round,
            merged: self.merged,
        })
    }
}

fn invalid(field: &'static str, reason: String) -> WireError {
    WireError::InvalidField { field, reason }
}

/// A `realm` or `scope`: 1..=[`MAX_GOSSIP_NAME`] bytes.
fn name(field: &'static str, v: String) -> Result<String, WireError> {
    if v.is_empty() {
        return Err(invalid(field, "must not be empty".into()));
    }
    if v.len() > MAX_GOSSIP_NAME {
        let reason = format!("{} bytes exceeds the maximum of {MAX_GOSSIP_NAME}", v.len());
        return Err(invalid(field, reason));
    }
    Ok(v)
}

/// A `from_key` / `to_key`: at most [`MAX_GOSSIP_KEY`] bytes.
fn key(field: &'static str, v: String) -> Result<String, WireError> {
    if v.len() > MAX_GOSSIP_KEY {
        let reason = format!("{} bytes exceeds the maximum of {MAX_GOSSIP_KEY}", v.len());
        return Err(invalid(field, reason));
    }
    Ok(v)
}

fn sender(b: &[u8]) -> Result<NodeId, WireError> {
    b.try_into().map_err(|_| bad_len("sender", 32, b.len()))
}

/// `parts` at least 1 and `part` below it.
fn parts(part: u16, parts: u16) -> Result<(), WireError> {
    if parts == 0 {
        return Err(invalid("parts", "must be at least 1".into()));
    }
    if part >= parts {
        return Err(invalid(
            "part",
            format!("{part} is not below parts = {parts}"),
        ));
    }
    Ok(())
}

/// An opaque payload as a zero-copy slice of `frame`; longer than [`MAX_GOSSIP_STATE`] →
/// `InvalidField`.
fn blob(frame: &Bytes, field: &'static str, v: &[u8]) -> Result<Bytes, WireError> {
    if v.len() > MAX_GOSSIP_STATE {
        let reason = format!(
            "{} bytes exceeds the maximum of {MAX_GOSSIP_STATE}",
            v.len()
        );
        return Err(invalid(field, reason));
    }
    Ok(frame.slice_ref(v))
}
