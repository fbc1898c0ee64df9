//! Stream framing: one buffer per stream, check for a whole frame, cut it out, repeat
//! (the mini-redis `Connection` loop). Never assumes one read is one frame (Macula v0.16
//! defect 1).

use bytes::{Buf, Bytes, BytesMut};

use super::{Header, RawFrame, WireError, HEADER_LEN, PROTOCOL_VERSION};

/// Per-stream framing state: one [`BytesMut`] that received bytes are appended to and whole
/// frames are split off from (zero copy). Coalesced and split frames both work.
///
/// The header is validated before the body is waited for, and the decoder never reserves
/// memory from a declared length: the buffer only grows by what [`FrameDecoder::extend`]
/// is given. After an error the decoder is poisoned (the stream can no longer be trusted):
/// `next_frame` and `finish` keep returning that error and `extend` discards its input.
///
/// A chunk handed over whole ([`FrameDecoder::extend_bytes`]) is not copied: the whole frames
/// it holds are cut from it (`Bytes::split_to`, a reference count). Only a frame split across
/// chunks is copied: its start into the buffer, then just the bytes that complete it from the
/// next chunk, whose remaining frames are again cut without copying. QUIC hands a stream over
/// in chunks of about one packet, so most frames of a few hundred bytes are never copied.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Bytes received before `chunk`: at most the start of one frame after `next_frame` ran,
    /// more only while [`FrameDecoder::extend`] is fed faster than frames are taken.
    buf: BytesMut,
    /// The rest of the last chunk handed over whole, after `buf`.
    chunk: Bytes,
    max_frame_size: u32,
    poisoned: Option<WireError>,
}

impl FrameDecoder {
    /// A decoder accepting bodies of at most `max_frame_size` bytes (this side's announced
    /// `max_frame_size`, usually [`super::DEFAULT_MAX_FRAME_SIZE`]).
    pub fn new(max_frame_size: u32) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            chunk: Bytes::new(),
            max_frame_size,
            poisoned: None,
        }
    }

    /// Appends bytes received from the stream (ignored once poisoned), copying them.
    pub fn extend(&mut self, data: &[u8]) {
        if self.poisoned.is_none() {
            self.spill();
            self.buf.extend_from_slice(data);
        }
    }

    /// Appends a chunk received from the stream (ignored once poisoned), without copying it
    /// when the previous chunk has been consumed (see the type's docs).
    pub fn extend_bytes(&mut self, data: Bytes) {
        if self.poisoned.is_some() || data.is_empty() {
            return;
        }
        if self.chunk.is_empty() {
            self.chunk = data;
        } else {
            self.extend(&data);
        }
    }

    /// Moves the unconsumed rest of `chunk` to the end of `buf`.
    fn spill(&mut self) {
        if !self.chunk.is_empty() {
            self.buf.extend_from_slice(&self.chunk);
            self.chunk = Bytes::new();
        }
    }

    /// Moves up to `n` bytes from the front of `chunk` to the end of `buf`.
    fn top_up(&mut self, n: usize) {
        let n = n.min(self.chunk.len());
        self.buf.extend_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
    }

    /// The next whole frame, or `Ok(None)` if more bytes are needed.
    ///
    /// Errors (all poison the decoder): [`WireError::UnsupportedVersion`] if header byte 0 is
    /// not [`PROTOCOL_VERSION`]; [`WireError::Reserved`] if byte 3 is not 0;
    /// [`WireError::FrameTooLarge`] if the declared body exceeds the maximum. Each is
    /// reported as soon as the 8 header bytes are buffered. Unknown and reserved message
    /// types are not errors here: they come back as a [`RawFrame`] and the caller answers
    /// `UnknownType` and continues.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame>, WireError> {
        if let Some(err) = &self.poisoned {
            return Err(err.clone());
        }
        if !self.buf.is_empty() {
            // A frame begun in an earlier chunk: complete it from this one.
            self.top_up(HEADER_LEN.saturating_sub(self.buf.len()));
            let Some((header, total)) =
                self.whole_frame(self.buf.first_chunk::<HEADER_LEN>().copied())?
            else {
                return Ok(None);
            };
            self.top_up(total.saturating_sub(self.buf.len()));
            if self.buf.len() < total {
                return Ok(None);
            }
            let bytes = self.buf.split_to(total).freeze();
            return Ok(Some(RawFrame { header, bytes }));
        }
        match self.whole_frame(self.chunk.first_chunk::<HEADER_LEN>().copied())? {
            Some((header, total)) if self.chunk.len() >= total => {
                let bytes = self.chunk.split_to(total);
                Ok(Some(RawFrame { header, bytes }))
            }
            // A partial frame: keep it in the buffer until the rest arrives.
            _ => {
                self.spill();
                Ok(None)
            }
        }
    }

    /// The header `head` (if 8 bytes are there) and its frame's total length, validated; an
    /// invalid one poisons the decoder.
    fn whole_frame(
        &mut self,
        head: Option<[u8; HEADER_LEN]>,
    ) -> Result<Option<(Header, usize)>, WireError> {
        let Some(head) = head else { return Ok(None) };
        let header = Header::decode(&head);
        if let Err(err) = validate(&header, head[3], self.max_frame_size) {
            self.buf = BytesMut::new();
            self.chunk = Bytes::new();
            self.poisoned = Some(err.clone());
            return Err(err);
        }
        Ok(Some((header, HEADER_LEN + header.body_len as usize)))
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.chunk.len()
    }

    /// Call at end of stream. Errors: [`WireError::Truncated`] if a partial frame remains,
    /// or the poisoning error if the decoder had failed.
    pub fn finish(&self) -> Result<(), WireError> {
        if let Some(err) = &self.poisoned {
            return Err(err.clone());
        }
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(WireError::Truncated { buffered }),
        }
    }
}

#[cfg(test)]
impl FrameDecoder {
    /// Allocated buffer capacity, in bytes (tests check nothing is reserved from a header).
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

fn validate(header: &Header, reserved: u8, max: u32) -> Result<(), WireError> {
    if header.version != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion {
            got: header.version,
        });
    }
    if reserved != 0 {
        return Err(WireError::Reserved { byte: reserved });
    }
    if header.body_len > max {
        return Err(WireError::FrameTooLarge {
            len: u64::from(header.body_len),
            max,
        });
    }
    Ok(())
}
