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
        last: None,
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
/// (and again after each SUBACK, so messages right after a new subscription are not missed).
/// The subscriptions matching the last topic delivered are kept ([`LastMatch`]): a stream of
/// messages on one topic is matched once, not once per message, and costs no allocation.
struct NodeLink<'a> {
    inner: &'a Arc<Inner>,
    dedup: &'a mut DedupWindow,
    acks_tx: &'a mpsc::Sender<Confirm>,
    subs: Arc<SubTrie>,
    last: Option<LastMatch>,
}

/// The subscriptions matching `topic` in the snapshot `subs` (held, so its address cannot be
/// reused by a later snapshot while this compares against it).
struct LastMatch {
    subs: Arc<SubTrie>,
    topic: String,
    targets: Vec<mpsc::Sender<Message>>,
}

impl LastMatch {
    /// The subscriptions of `subs` matching `topic`: those kept when both are the same as last
    /// time, else matched anew (reusing the buffers).
    fn targets<'m>(
        last: &'m mut Option<LastMatch>,
        subs: &Arc<SubTrie>,
        topic: &str,
    ) -> &'m [mpsc::Sender<Message>] {
        let m = last.get_or_insert_with(|| LastMatch {
            subs: subs.clone(),
            topic: String::new(),
            targets: Vec::new(),
        });
        if !Arc::ptr_eq(&m.subs, subs) || m.topic != topic || m.targets.is_empty() {
            m.subs = subs.clone();
            m.topic.clear();
            m.topic.push_str(topic);
            m.targets.clear();
            subs.for_each_match(topic, |v| {
                m.targets.extend(v.iter().map(|(_, tx)| tx.clone()))
            });
        }
        &m.targets
    }
}

impl FrameHandler for NodeLink<'_> {
    async fn on_frame(&mut self, raw: &RawFrame) -> Result<Flow, Fatal> {
        let NodeLink {
            inner,
            dedup,
            acks_tx,
            subs,
            last,
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
                    let targets = LastMatch::targets(last, subs, view.topic);
                    if reliable {
                        for tx in targets {
                            if tx.send(msg.clone()).await.is_ok() {
                                inner.received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    } else {
                        let (mut ok, mut full) = (0, 0);
                        for tx in targets {
                            match tx.try_send(msg.clone()) {
                                Ok(()) => ok += 1,
                                Err(_) => full += 1,
                            }
                        }
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
                    // Let go of the senders of subscriptions that may have just ended.
                    *last = None;
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
        let subs = self.inner.subs_snap.load_full();
        if !Arc::ptr_eq(&subs, &self.subs) {
            // A subscription ended or began: hold no sender of an ended one.
            self.last = None;
        }
        self.subs = subs;
    }
}
