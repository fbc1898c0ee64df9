//! The client's half of a session's reading: publishes to subscriptions (de-duplicated),
//! acknowledgements to the writer, answers to waiting requests, calls to handlers; on the
//! shared read loop (`crate::session::read`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use quinn::RecvStream;
use tokio::sync::mpsc;

use super::{rpc, ClientError, Inner, Message, SubTrie};
use crate::dedup::DedupWindow;
use crate::session::read::{read_loop, Fatal, Flow, FrameHandler, ReadEnd};
use crate::session::{Confirm, Outbound, SessionError};
use crate::wire::{Frame, FrameDecoder, MessageType, Pong, Qos, RawFrame, WireError};

pub(super) async fn reader(
    inner: &Arc<Inner>,
    mut recv: RecvStream,
    mut decoder: FrameDecoder,
    dedup: &mut DedupWindow,
    acks_tx: &mpsc::Sender<Confirm>,
) -> Result<(), SessionError> {
    let mut link = NodeLink {
        inner,
        dedup,
        acks_tx,
        subs: inner.subs_snap.load_full(),
        reliable_targets: Vec::new(),
    };
    match read_loop(&mut recv, &mut decoder, None, &mut link).await {
        ReadEnd::Stopped | ReadEnd::Eof => Ok(()),
        end => end.into_session(),
    }
}

/// A wire error in a frame from the node: fatal for the session.
fn fatal(e: WireError) -> Fatal {
    (e.code(), e.to_string())
}

/// The client's frame handler. The subscription snapshot is loaded once per received chunk
/// (and again after each SUBACK, so messages right after a new subscription are not missed);
/// QoS 1 targets are collected into a reused vector: no allocation per message.
struct NodeLink<'a> {
    inner: &'a Arc<Inner>,
    dedup: &'a mut DedupWindow,
    acks_tx: &'a mpsc::Sender<Confirm>,
    subs: Arc<SubTrie>,
    reliable_targets: Vec<mpsc::Sender<Message>>,
}

impl FrameHandler for NodeLink<'_> {
    async fn on_frame(&mut self, raw: &RawFrame) -> Result<Flow, Fatal> {
        let NodeLink {
            inner,
            dedup,
            acks_tx,
            subs,
            reliable_targets,
        } = self;
        let (inner, acks_tx) = (*inner, *acks_tx);
        match raw.msg_type() {
            Some(MessageType::Publish) => {
                let view = raw.publish_view().map_err(fatal)?;
                let reliable = view.qos == Qos::AtLeastOnce;
                if dedup.insert(view.message_id) {
                    let msg = Message {
                        topic: raw.bytes.slice_ref(view.topic.as_bytes()),
                        payload: raw.bytes.slice_ref(view.payload),
                        qos: view.qos,
                        message_id: view.message_id,
                        ts_us: view.ts_us,
                    };
                    if reliable {
                        reliable_targets.clear();
                        subs.for_each_match(view.topic, |v| {
                            reliable_targets.extend(v.iter().map(|(_, tx)| tx.clone()))
                        });
                        for tx in reliable_targets.drain(..) {
                            if tx.send(msg.clone()).await.is_ok() {
                                inner.received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    } else {
                        let (mut ok, mut full) = (0, 0);
                        subs.for_each_match(view.topic, |v| {
                            for (_, tx) in v {
                                match tx.try_send(msg.clone()) {
                                    Ok(()) => ok += 1,
                                    Err(_) => full += 1,
                                }
                            }
                        });
                        inner.received.fetch_add(ok, Ordering::Relaxed);
                        inner.dropped.fetch_add(full, Ordering::Relaxed);
                    }
                } else {
                    inner.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                if reliable {
                    let _ = inner.ctrl.try_send(Outbound::Ack(view.message_id));
                }
            }
            Some(MessageType::PubAck) => {
                if let Frame::PubAck(a) = raw.decode().map_err(fatal)? {
                    let _ = acks_tx.try_send(Confirm::PubAck(a));
                }
            }
            Some(MessageType::Pong) => {
                if let Frame::Pong(p) = raw.decode().map_err(fatal)? {
                    let _ = acks_tx.try_send(Confirm::Pong(p.correlation_id));
                }
            }
            Some(MessageType::SubAck) => {
                if let Frame::SubAck(a) = raw.decode().map_err(fatal)? {
                    *subs = inner.subs_snap.load_full();
                    inner.resolve(a.correlation_id, Ok(a.count));
                }
            }
            Some(MessageType::Error) => {
                if let Frame::Error(e) = raw.decode().map_err(fatal)? {
                    let handled = e.correlation_id.is_some_and(|c| {
                        inner.resolve(
                            c,
                            Err(ClientError::Refused {
                                code: e.code,
                                message: e.message.clone(),
                            }),
                        )
                    });
                    if !handled {
                        tracing::warn!(code = e.code, message = %e.message, "node reported an error");
                    }
                }
            }
            Some(MessageType::Ping) => {
                if let Frame::Ping(p) = raw.decode().map_err(fatal)? {
                    let _ = inner.ctrl.try_send(Outbound::Frame(
                        Frame::Pong(Pong {
                            correlation_id: p.correlation_id,
                        })
                        .to_bytes(),
                    ));
                }
            }
            // A malformed call or reply is dropped, not fatal (PROTOCOL.md §5).
            Some(MessageType::Call) => match raw.decode() {
                Ok(Frame::Call(c)) => rpc::on_call(inner, c),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "malformed call dropped"),
            },
            Some(MessageType::Reply) => match raw.decode() {
                Ok(Frame::Reply(r)) => inner.rpc.on_reply(r),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "malformed reply dropped"),
            },
            Some(MessageType::Disconnect) => return Ok(Flow::Stop),
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn on_chunk(&mut self) {
        self.subs = self.inner.subs_snap.load_full();
    }
}
