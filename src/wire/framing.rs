//! Stream framing: one buffer per stream, check for a whole frame, cut it out, repeat
//! (the mini-redis `Connection` loop). Never assumes one read is one frame (Macula v0.16
//! defect 1).

use bytes::BytesMut;

use super::{Header, RawFrame, WireError, HEADER_LEN, PROTOCOL_VERSION};

/// Per-stream framing state: one [`BytesMut`] that received bytes are appended to and whole
/// frames are split off from (zero copy). Coalesced and split frames both work.
///
/// The header is validated before the body is waited for, and the decoder never reserves
/// memory from a declared length: the buffer only grows by what [`FrameDecoder::extend`]
/// is given. After an error the decoder is poisoned (the stream can no longer be trusted):
/// `next_frame` and `finish` keep returning that error and `extend` discards its input.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_size: u32,
    poisoned: Option<WireError>,
}

impl FrameDecoder {
    /// A decoder accepting bodies of at most `max_frame_size` bytes (this side's announced
    /// `max_frame_size`, usually [`super::DEFAULT_MAX_FRAME_SIZE`]).
    pub fn new(max_frame_size: u32) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max_frame_size,
            poisoned: None,
        }
    }

    /// Appends bytes received from the stream (ignored once poisoned).
    pub fn extend(&mut self, data: &[u8]) {
        if self.poisoned.is_none() {
            self.buf.extend_from_slice(data);
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
        let Some(head) = self.buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::decode(head);
        if let Err(err) = validate(&header, head[3], self.max_frame_size) {
            self.buf = BytesMut::new();
            self.poisoned = Some(err.clone());
            return Err(err);
        }
        let total = HEADER_LEN + header.body_len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        let bytes = self.buf.split_to(total).freeze();
        Ok(Some(RawFrame { header, bytes }))
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Call at end of stream. Errors: [`WireError::Truncated`] if a partial frame remains,
    /// or the poisoning error if the decoder had failed.
    pub fn finish(&self) -> Result<(), WireError> {
        if let Some(err) = &self.poisoned {
            return Err(err.clone());
        }
        match self.buf.len() {
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
