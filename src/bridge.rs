//! `macula bridge`: relays pub/sub between the nodes of the clusters below it.
//!
//! Routing is by interest only. Each realm has its own [`RouteTable`] of node
//! connections and the patterns each node announced. A publish from node *U* goes
//! to every *other* node of U's realm holding a matching pattern — never back to U,
//! never to a node without interest, never to another realm — and a node never
//! re-sends what came down from the bridge. Every message therefore crosses each
//! link at most once: the N² amplification of the Erlang mesh (Macula v0.16 defect 4)
//! is impossible by construction.
//!
//! Interest flows the other way too: each node is told which patterns the *rest*
//! of its realm holds ([`interest_delta`]), so it only sends up what someone wants.
//!
//! QoS 1 acknowledgements are chained: the bridge acknowledges a publish to U only
//! after every node it relayed it to has acknowledged it ([`AckTrack`]). If the
//! bridge dies first, U still holds the publish and sends it again after it
//! reconnects; receivers de-duplicate by message id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, RecvStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, Instrument};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::router::{interest_delta, PatternChange, Peers, RouteTable};
pub use crate::server::ServerHandle;
use crate::session::{
    self, accept_session, close, fill, AckTrack, Offer, Outbound, PeerTx, SessionError,
    WriterConfig,
};
use crate::topic;
use crate::wire::{
    ErrorCode, Frame, FrameDecoder, MessageType, NodeId, Qos, RawFrame, Role, SubAck, Subscribe,
    Unsubscribe,
};

/// A running bridge; see [`ServerHandle`].
pub type BridgeHandle = ServerHandle;

struct Shared {
    node_id: NodeId,
    cfg: Config,
    metrics: Arc<Metrics>,
    realms: HashMap<String, RouteTable<PeerTx>>,
    next_key: AtomicU64,
}

/// Starts a bridge from `cfg`. Errors: binding or TLS setup failed.
pub async fn start(cfg: Config, metrics: Arc<Metrics>) -> anyhow::Result<BridgeHandle> {
    let endpoint = crate::transport::server_endpoint(
        cfg.bridge.listen,
        &cfg.tls,
        &cfg.transport,
        &cfg.data_dir,
    )?;
    let local_addr = endpoint.local_addr()?;
    let node_id: NodeId = crate::transport::node_identity(&cfg.data_dir)?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let realms = cfg
        .bridge
        .realms
        .iter()
        .map(|r| {
            (
                r.clone(),
                RouteTable::new(cfg.limits.max_subscriptions_per_connection),
            )
        })
        .collect();
    let shared = Arc::new(Shared {
        node_id,
        metrics: metrics.clone(),
        realms,
        next_key: AtomicU64::new(1),
        cfg,
    });
    let s = shared.clone();
    tracker.spawn(crate::server::accept_loop(
        endpoint.clone(),
        shared.cfg.limits.max_connections,
        "node",
        metrics,
        tracker.clone(),
        shutdown.clone(),
        move |conn| {
            let s = s.clone();
            let span = info_span!("node", remote.addr = %conn.remote_address());
            async move { serve_node(s, conn).await }.instrument(span)
        },
    ));
    info!(listen = %local_addr, realms = ?shared.cfg.bridge.realms, "bridge started");
    Ok(BridgeHandle {
        local_addr,
        node_id,
        shutdown,
        tracker,
        endpoint,
    })
}

type Fatal = (ErrorCode, String);

fn interest_frames(pattern: &str) -> (Bytes, Bytes) {
    let topics = vec![pattern.to_string()];
    (
        Frame::Subscribe(Subscribe {
            topics: topics.clone(),
            qos: Qos::AtLeastOnce,
            correlation_id: 0,
        })
        .to_bytes(),
        Frame::Unsubscribe(Unsubscribe {
            topics,
            correlation_id: 0,
        })
        .to_bytes(),
    )
}

/// Tells every node of the realm how the interest of the *others* changed
/// (runs under the realm table's lock, so deltas leave in order).
fn propagate(changes: &[PatternChange], peers: Peers<'_, PeerTx>) {
    for c in changes {
        let (sub, unsub) = interest_frames(&c.pattern);
        for (key, tx) in peers.iter() {
            let frame = match interest_delta(c, key) {
                Some(true) => sub.clone(),
                Some(false) => unsub.clone(),
                None => continue,
            };
            if tx.ctrl.try_send(Outbound::Frame(frame)).is_err() {
                close(&tx.conn, ErrorCode::SlowConsumer, "control queue full");
            }
        }
    }
}

async fn serve_node(shared: Arc<Shared>, conn: Connection) {
    let metrics = shared.metrics.clone();
    let limits = &shared.cfg.limits;
    let (mut send, recv, decoder, connect) =
        match accept_session(&conn, limits.max_frame_size).await {
            Ok(s) => s,
            Err(e) => return session::reject_before_connect(&conn, &metrics, e).await,
        };
    metrics.frames_in.inc(MessageType::Connect as u8, 0);
    let realms = &shared.realms;
    if let Err((code, msg)) =
        session::check_connect(&connect, Role::Node, |r| realms.contains_key(r))
    {
        return session::refuse(
            &conn,
            Some(&mut send),
            &metrics,
            code,
            &msg,
            Some(connect.correlation_id),
        )
        .await;
    }
    let table = &shared.realms[&connect.realm];
    let key = shared.next_key.fetch_add(1, Ordering::Relaxed);
    let session::AcceptedPeer {
        tx,
        ctrl_rx,
        data_rx,
    } = session::accept_peer(
        key,
        &conn,
        &connect,
        shared.node_id,
        limits,
        shared.cfg.transport.keep_alive_ms,
    );
    let ctrl_tx = tx.ctrl.clone();
    let (pending_tx, pending_rx) = mpsc::channel((limits.max_inflight as usize).max(1));
    table.add_peer(key, tx.clone(), |tx, others| {
        for chunk in others.chunks(1000) {
            let f = Frame::Subscribe(Subscribe {
                topics: chunk.to_vec(),
                qos: Qos::AtLeastOnce,
                correlation_id: 0,
            });
            let _ = tx.ctrl.try_send(Outbound::Frame(f.to_bytes()));
        }
    });
    info!(realm = %connect.realm, cluster = %connect.cluster, "node connected");
    let cancel = CancellationToken::new();
    let wcfg = WriterConfig {
        write_timeout: Duration::from_millis(limits.slow_consumer_timeout_ms.max(1)),
        metrics: metrics.clone(),
    };
    let writer = tokio::spawn(session::run_writer(
        send,
        ctrl_rx,
        data_rx,
        Some(pending_tx),
        cancel.clone(),
        wcfg,
    ));
    let end = node_reader(&shared, table, &tx, recv, decoder, pending_rx).await;
    table.remove_peer(key, propagate);
    info!(realm = %connect.realm, cluster = %connect.cluster, "node disconnected");
    session::finish_session(&conn, &ctrl_tx, cancel, writer, end, &metrics).await;
}

async fn node_reader(
    shared: &Shared,
    table: &RouteTable<PeerTx>,
    me: &PeerTx,
    mut recv: RecvStream,
    mut decoder: FrameDecoder,
    mut pending: mpsc::Receiver<Arc<AckTrack>>,
) -> Result<(), Fatal> {
    let metrics = &shared.metrics;
    let slow = Duration::from_millis(shared.cfg.limits.slow_consumer_timeout_ms);
    let mut scratch = Vec::new();
    loop {
        loop {
            let raw = match decoder.next_frame() {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => return Err((e.code(), e.to_string())),
            };
            metrics.frames_in.inc(raw.header.msg_type, raw.bytes.len());
            if handle_node_frame(shared, table, me, &raw, &mut scratch, &mut pending, slow).await? {
                return Ok(());
            }
        }
        match fill(&mut recv, &mut decoder).await {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(SessionError::Wire(e)) => return Err((e.code(), e.to_string())),
            Err(e) => {
                debug!(error = %e, "node stream ended");
                return Ok(());
            }
        }
    }
}

/// Handles one frame from a node; `Ok(true)` ends the session cleanly.
async fn handle_node_frame(
    shared: &Shared,
    table: &RouteTable<PeerTx>,
    me: &PeerTx,
    raw: &RawFrame,
    scratch: &mut Vec<u32>,
    pending: &mut mpsc::Receiver<Arc<AckTrack>>,
    slow: Duration,
) -> Result<bool, Fatal> {
    let metrics = &shared.metrics;
    let Some(t) = raw.msg_type() else {
        me.send_error(
            metrics,
            ErrorCode::UnknownType,
            format!("unknown message type 0x{:02x}", raw.header.msg_type),
            None,
        );
        return Ok(false);
    };
    match t {
        MessageType::Publish => {
            let view = match raw.publish_view() {
                Ok(v) => v,
                Err(e) => {
                    me.send_error(metrics, e.code(), e.to_string(), None);
                    return Ok(false);
                }
            };
            let reliable = view.qos == Qos::AtLeastOnce;
            if let Err(e) = topic::validate_topic(view.topic) {
                me.send_error(
                    metrics,
                    ErrorCode::InvalidTopic,
                    format!("topic {:?}: {e}", view.topic),
                    None,
                );
                metrics.dropped("invalid");
                if reliable {
                    let _ = me.ctrl.try_send(Outbound::NoRoute(view.message_id));
                }
                return Ok(false);
            }
            metrics.messages_published_total.inc();
            let snap = table.load();
            snap.collect(view.topic, scratch);
            scratch.retain(|&i| snap.target(i).0 != me.key);
            if scratch.is_empty() {
                metrics.dropped("no_route");
                if reliable {
                    let _ = me.ctrl.try_send(Outbound::NoRoute(view.message_id));
                }
                return Ok(false);
            }
            let track = reliable
                .then(|| AckTrack::new(view.message_id, scratch.len() as u32, me.ctrl.clone()));
            for &idx in scratch.iter() {
                let (_, tx) = snap.target(idx);
                if raw.bytes.len() > tx.max_frame {
                    metrics.dropped("too_large");
                    continue;
                }
                let item = match &track {
                    Some(t) => Outbound::Tracked(raw.bytes.clone(), t.clone()),
                    None => Outbound::Frame(raw.bytes.clone()),
                };
                match tx.offer(item, reliable, slow).await {
                    Offer::Queued => metrics.messages_relayed_total.inc(),
                    Offer::QueueFull => metrics.dropped("queue_full"),
                    Offer::SlowConsumer => metrics.dropped("slow_consumer"),
                    Offer::Closed | Offer::TooLarge => metrics.dropped("closed"),
                }
            }
        }
        MessageType::PubAck => match raw.decode() {
            Ok(Frame::PubAck(a)) => {
                for id in a.ids.iter().chain(a.no_route.iter()) {
                    // Acks arrive in the order the tracked frames were written;
                    // anything skipped stays unacknowledged upstream and is retransmitted.
                    while let Ok(track) = pending.try_recv() {
                        if track.id == *id {
                            track.ack_one();
                            break;
                        }
                    }
                }
            }
            Ok(_) => unreachable!("decode follows the header type"),
            Err(e) => me.send_error(metrics, e.code(), e.to_string(), None),
        },
        MessageType::Subscribe | MessageType::Unsubscribe => {
            let req = match session::decode_interest(raw) {
                Ok(r) => r,
                Err((code, msg, corr)) => {
                    me.send_error(metrics, code, msg, corr);
                    return Ok(false);
                }
            };
            let count = if req.subscribe {
                match table.subscribe(me.key, &req.patterns, propagate) {
                    Ok(n) => n,
                    Err(e) => {
                        me.send_error(
                            metrics,
                            ErrorCode::LimitExceeded,
                            e.to_string(),
                            Some(req.correlation_id),
                        );
                        return Ok(false);
                    }
                }
            } else {
                table.unsubscribe(me.key, &req.patterns, propagate)
            };
            metrics.subscriptions.set(
                shared
                    .realms
                    .values()
                    .map(|t| t.load().patterns() as i64)
                    .sum(),
            );
            me.send_ctrl(Frame::SubAck(SubAck {
                correlation_id: req.correlation_id,
                count: count as u32,
            }));
        }
        MessageType::Ping => me.pong(raw),
        MessageType::Disconnect => return Ok(true),
        MessageType::Connect => {
            return Err((ErrorCode::AlreadyConnected, "connect sent twice".into()))
        }
        MessageType::Error => {
            if let Ok(Frame::Error(e)) = raw.decode() {
                debug!(code = e.code, message = %e.message, "node reported an error");
            }
        }
        MessageType::Pong | MessageType::SubAck => {}
        other => me.send_error(
            metrics,
            ErrorCode::Protocol,
            format!("{} is not accepted from a node", other.as_str()),
            None,
        ),
    }
    Ok(false)
}
