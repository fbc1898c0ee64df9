//! The one read loop every link uses: fill the decoder from the QUIC stream, cut frames,
//! count them, and hand each to the link kind's [`FrameHandler`]. Client sessions at a node,
//! mesh links, uplinks, a bridge's child and parent links and the client library differ only
//! in their handler; how a stream is read, how a wire error ends it and how its end is
//! reported are written here once.

use std::future::Future;

use quinn::RecvStream;

use super::{fill, SessionError};
use crate::metrics::Metrics;
use crate::wire::{ErrorCode, FrameDecoder, RawFrame};

/// What a handler asks for after one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read on.
    Continue,
    /// End the session cleanly (a `disconnect`, a redirect, a goodbye).
    Stop,
}

/// A fatal problem a handler found in a frame: the error code to close with and its message.
pub type Fatal = (ErrorCode, String);

/// How a link's read loop ended.
#[derive(Debug)]
pub enum ReadEnd {
    /// The handler asked to stop ([`Flow::Stop`]).
    Stopped,
    /// The peer finished its stream at a frame boundary.
    Eof,
    /// The peer broke the protocol: a frame that does not cut (oversized, bad header, a
    /// stream ending mid-frame) or one the handler refused as fatal.
    Fatal(ErrorCode, String),
    /// The connection or stream failed underneath (closed, reset, timed out).
    Closed(SessionError),
}

impl ReadEnd {
    /// The end as the acceptor side reports it: `Ok(true)` when the handler stopped (the peer
    /// said goodbye), `Ok(false)` when the stream ended or the connection failed without one,
    /// `Err` for a protocol violation to answer with an error frame and close.
    pub fn orderly(self) -> Result<bool, Fatal> {
        match self {
            ReadEnd::Stopped => Ok(true),
            ReadEnd::Eof => Ok(false),
            ReadEnd::Closed(e) => {
                tracing::debug!(error = %e, "stream ended");
                Ok(false)
            }
            ReadEnd::Fatal(code, msg) => Err((code, msg)),
        }
    }

    /// The end as the connecting side reports it: `Ok(())` when the handler stopped, the
    /// session error otherwise ([`SessionError::Eof`] when the peer finished its stream).
    pub fn into_session(self) -> Result<(), SessionError> {
        match self {
            ReadEnd::Stopped => Ok(()),
            ReadEnd::Eof => Err(SessionError::Eof),
            ReadEnd::Fatal(code, msg) => {
                Err(SessionError::Protocol(format!("{}: {msg}", code.as_str())))
            }
            ReadEnd::Closed(e) => Err(e),
        }
    }
}

/// The per-kind half of a link's reader.
pub trait FrameHandler {
    /// Handles one whole frame. `Err` is fatal for the session.
    fn on_frame(&mut self, raw: &RawFrame) -> impl Future<Output = Result<Flow, Fatal>>;

    /// Called after each chunk of bytes arrived (before its frames), e.g. to take one clock
    /// sample per chunk rather than per frame.
    fn on_chunk(&mut self) {}

    /// The rate limits this link's frames are charged to (`crate::rate`); `None`: none.
    fn throttle(&self) -> Option<&crate::rate::Throttle> {
        None
    }
}

/// Reads `recv` through `decoder` until the handler stops, the stream ends or fails; counts
/// each frame in `macula_frames_received_total` when `metrics` is given.
pub async fn read_loop<H: FrameHandler>(
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
    metrics: Option<&Metrics>,
    handler: &mut H,
) -> ReadEnd {
    loop {
        loop {
            let raw = match decoder.next_frame() {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => return ReadEnd::Fatal(e.code(), e.to_string()),
            };
            if let Some(m) = metrics {
                m.frames_in.inc(raw.header.msg_type, raw.bytes.len());
            }
            if let Some(t) = handler.throttle() {
                // Paces the reader, and through QUIC flow control the sender (`crate::rate`).
                let len = raw.bytes.len();
                t.admit(raw.header.msg_type, len, metrics.map(|m| &m.rate))
                    .await;
            }
            match handler.on_frame(&raw).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => return ReadEnd::Stopped,
                Err((code, msg)) => return ReadEnd::Fatal(code, msg),
            }
        }
        match fill(recv, decoder).await {
            Ok(true) => handler.on_chunk(),
            Ok(false) => return ReadEnd::Eof,
            Err(SessionError::Wire(e)) => return ReadEnd::Fatal(e.code(), e.to_string()),
            Err(e) => return ReadEnd::Closed(e),
        }
    }
}
