//! The compact wire encoding of [`CrdtMap`] and [`Digest`] (specified in `docs/CRDT.md`):
//! MessagePack arrays, with a per-message table of actor ids so each dot costs an index
//! and a counter, not 32 bytes.

use super::{CrdtError, CrdtMap, Digest, Limits};

impl CrdtMap {
    /// Encodes the map (appends to `out`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        todo!()
    }
    /// Decodes and validates a map.
    ///
    /// Errors: [`CrdtError::Malformed`] (not MessagePack, unknown kind, actor index out of
    /// range, counter 0, unsorted or overlapping ranges, duplicate key or element, trailing
    /// bytes); [`CrdtError::TooLarge`] beyond `limits`.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<CrdtMap, CrdtError> {
        todo!()
    }
}

impl Digest {
    /// Encodes the digest (appends to `out`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        todo!()
    }
    /// Decodes and validates a digest; errors as [`CrdtMap::decode`].
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Digest, CrdtError> {
        todo!()
    }
}
