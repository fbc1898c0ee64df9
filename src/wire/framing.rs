//! Stream framing: one buffer per stream, check for a whole frame, cut it out, repeat
//! (the mini-redis `Connection` loop). Never assumes one read is one frame (Macula v0.16
//! defect 1).

use bytes::{Bytes, BytesMut};

use super::{Header, RawFrame, WireError, HEADER_LEN, PROTOCOL_VERSION};

/// Per-stream framing state: one [`BytesMut`] that received bytes are appended to and whole
/// frames are split off from (zero copy). Coalesced and split frames both work.
///
/// The header is validated before the body is waited for, and the decoder never reserves
/// memory from a declared length: the buffer only grows by what [`FrameDecoder::extend`]
/// is given. After an error the decoder is poisoned (the stream can no longer be trusted):
/// `next_frame` and `finish` keep returning that error and `extend` discards its input.
///
/// A chunk handed over whole ([`FrameDecoder::extend_bytes`]) while nothing is buffered is not
/// copied: the frames it holds are cut from it (`Bytes::split_to`, a reference count), and only
/// a partial frame at its end is copied into the buffer to wait for the rest.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    /// A received chunk not yet cut into frames; non-empty only while `buf` is empty.
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

    /// Appends a chunk received from the stream (ignored once poisoned). When nothing is
    /// buffered the chunk is kept as it is and frames are cut from it without copying; else
    /// it is copied after what is buffered, as [`FrameDecoder::extend`] does.
    pub fn extend_bytes(&mut self, data: Bytes) {
        if self.poisoned.is_some() || data.is_empty() {
            return;
        }
        if self.buf.is_empty() && self.chunk.is_empty() {
            self.chunk = data;
        } else {
            self.extend(&data);
        }
    }

    /// Moves the unconsumed rest of `chunk` into `buf` (a copy of less than one frame when
    /// called from `next_frame`).
    fn spill(&mut self) {
        if !self.chunk.is_empty() {
            self.buf.extend_from_slice(&self.chunk);
            self.chunk = Bytes::new();
        }
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
        if !self.chunk.is_empty() {
            match self.whole_frame(self.chunk.first_chunk::<HEADER_LEN>().copied())? {
                Some((header, total)) if self.chunk.len() >= total => {
                    let bytes = self.chunk.split_to(total);
                    return Ok(Some(RawFrame { header, bytes }));
                }
                // A partial frame: keep it in the buffer until the rest arrives.
                _ => {
                    self.spill();
                    return Ok(None);
                }
            }
        }
        match self.whole_frame(self.buf.first_chunk::<HEADER_LEN>().copied())? {
            Some((header, total)) if self.buf.len() >= total => {
                let bytes = self.buf.split_to(total).freeze();
                Ok(Some(RawFrame { header, bytes }))
            }
            _ => Ok(None),
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
