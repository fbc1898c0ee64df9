//! The link actor over real QUIC connections on 127.0.0.1: how a link ends (a fatal frame,
//! a handler that stops, `stop`), that a dropped actor's writer is aborted, and how a
//! reliable session ends from either half.

use std::time::Duration;

use quinn::{Connection, Endpoint};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tracing::Span;

use super::*;
use crate::config::LimitsConfig;
use crate::session::read::Flow;
use crate::session::{next_frame, peer_queues, ReliableQueues, ReliableState};
use crate::wire::{self, Frame, FrameDecoder, Ping, Pong, RawFrame};

/// Longest a test waits for one outcome.
const WAIT: Duration = Duration::from_secs(5);

/// Two ends of one QUIC connection, the stream opened by the dialler.
struct Pair {
    _dir: TempDir,
    _endpoint: Endpoint,
    /// The dialling side's connection and stream.
    near: (Connection, quinn::SendStream, quinn::RecvStream),
    /// The accepting side, as a link.
    far: LinkIo,
}

async fn pair() -> Pair {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = crate::client::ClientOptions::default();
    let endpoint = crate::transport::server_endpoint(
        "127.0.0.1:0".parse().expect("literal"),
        &opts.tls,
        &opts.transport,
        dir.path(),
    )
    .expect("endpoint");
    let addr = endpoint.local_addr().expect("bound");
    let dial = endpoint.connect(addr, "localhost").expect("connect");
    let (near, far) = tokio::join!(dial, async {
        endpoint.accept().await.expect("incoming").await
    });
    let near = near.expect("dialled");
    let far = far.expect("accepted");
    let (mut send, recv) = near.open_bi().await.expect("stream");
    // A stream is announced to the peer with its first bytes.
    send.write_all(&Frame::Ping(Ping { correlation_id: 1 }).to_bytes())
        .await
        .expect("first frame");
    let (far_send, far_recv) = far.accept_bi().await.expect("stream accepted");
    Pair {
        _dir: dir,
        _endpoint: endpoint,
        near: (near, send, recv),
        far: LinkIo {
            conn: far,
            send: far_send,
            recv: far_recv,
            decoder: FrameDecoder::new(wire::DEFAULT_MAX_FRAME_SIZE),
        },
    }
}

fn tasks() -> LinkTasks {
    LinkTasks {
        tracker: tokio_util::task::TaskTracker::new(),
        span: Span::none(),
    }
}

fn writer_config() -> WriterConfig {
    WriterConfig {
        write_timeout: Duration::from_secs(5),
        metrics: Metrics::new(),
    }
}

/// Answers each `ping` with a `pong`; a ping with correlation id 0 is fatal, 99 stops.
struct Pinger {
    tx: PeerTx,
}

impl FrameHandler for Pinger {
    async fn on_frame(&mut self, raw: &RawFrame) -> Result<Flow, Fatal> {
        let Ok(Frame::Ping(p)) = raw.decode() else {
            return Ok(Flow::Continue);
        };
        match p.correlation_id {
            0 => Err((ErrorCode::Protocol, "ping 0".into())),
            99 => Ok(Flow::Stop),
            corr => {
                self.tx.send_ctrl(Frame::Pong(Pong {
                    correlation_id: corr,
                }));
                Ok(Flow::Continue)
            }
        }
    }
}

fn start(far: LinkIo) -> (LinkActor, PeerTx) {
    let peer = peer_queues(
        7,
        &far.conn,
        wire::DEFAULT_MAX_FRAME_SIZE,
        &LimitsConfig::default(),
    );
    let (actor, tx, pending) = LinkActor::start(far, peer, None, writer_config(), tasks());
    assert!(pending.is_none(), "no window, no pending queue");
    (actor, tx)
}

async fn frame(recv: &mut quinn::RecvStream, decoder: &mut FrameDecoder) -> Frame {
    let raw = tokio::time::timeout(WAIT, next_frame(recv, decoder))
        .await
        .expect("a frame in time")
        .expect("a frame");
    raw.decode().expect("decodes")
}

async fn closed_with(conn: &Connection) -> u64 {
    match tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("closed in time")
    {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("closed by {other:?}"),
    }
}

/// The writer answers while the reader reads; a fatal frame is answered with its error frame
/// and the connection is closed with the error's code.
#[tokio::test]
async fn a_fatal_frame_is_answered_then_the_link_closes_with_its_code() {
    let Pair {
        near: (conn, mut send, mut recv),
        far,
        ..
    } = pair().await;
    let (mut actor, tx) = start(far);
    let mut handler = Pinger { tx };
    let mut decoder = FrameDecoder::new(wire::DEFAULT_MAX_FRAME_SIZE);
    let far_side = async {
        let end = actor.read(&mut handler, std::future::pending()).await;
        let end = end.orderly().map(|_| ());
        assert_eq!(end, Err((ErrorCode::Protocol, "ping 0".into())));
        actor.finish(end).await;
    };
    let near_side = async {
        assert_eq!(
            frame(&mut recv, &mut decoder).await,
            Frame::Pong(Pong { correlation_id: 1 })
        );
        send.write_all(&Frame::Ping(Ping { correlation_id: 0 }).to_bytes())
            .await
            .expect("write");
        match frame(&mut recv, &mut decoder).await {
            Frame::Error(e) => assert_eq!(e.code, ErrorCode::Protocol as u16),
            other => panic!("expected the error frame, got {other:?}"),
        }
        assert_eq!(closed_with(&conn).await, ErrorCode::Protocol as u64);
    };
    tokio::join!(far_side, near_side);
}

/// A handler that stops ends the read with `Stopped`; what the writer held still goes out
/// and the connection closes with 0.
#[tokio::test]
async fn a_handler_that_stops_ends_cleanly() {
    let Pair {
        near: (conn, mut send, mut recv),
        far,
        ..
    } = pair().await;
    let (mut actor, tx) = start(far);
    let mut handler = Pinger { tx };
    send.write_all(&Frame::Ping(Ping { correlation_id: 99 }).to_bytes())
        .await
        .expect("write");
    let end = actor.read(&mut handler, std::future::pending()).await;
    assert!(matches!(end, ReadEnd::Stopped), "{end:?}");
    actor.finish(Ok(())).await;
    let mut decoder = FrameDecoder::new(wire::DEFAULT_MAX_FRAME_SIZE);
    assert_eq!(
        frame(&mut recv, &mut decoder).await,
        Frame::Pong(Pong { correlation_id: 1 })
    );
    assert_eq!(closed_with(&conn).await, 0);
}

/// `stop` ends the read at once, whatever the peer does.
#[tokio::test]
async fn stop_ends_the_read() {
    let Pair { near, far, .. } = pair().await;
    let (mut actor, tx) = start(far);
    let mut handler = Pinger { tx };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let reading = actor.read(&mut handler, async {
        let _ = stop_rx.await;
    });
    stop_tx.send(()).expect("reader waits");
    let end = tokio::time::timeout(WAIT, reading).await.expect("stopped");
    assert!(matches!(end, ReadEnd::Stopped), "{end:?}");
    drop(near);
}

/// A link dropped without `finish` (its task cancelled) takes its writer with it: the
/// queues' receiving ends go, so whoever routes to the link sees it closed.
#[tokio::test]
async fn dropping_the_actor_aborts_its_writer() {
    let Pair { near, far, .. } = pair().await;
    let (actor, tx) = start(far);
    assert!(!tx.data.is_closed());
    drop(actor);
    tokio::time::timeout(WAIT, tx.data.closed())
        .await
        .expect("the writer's queues closed");
    drop(near);
}

fn reliable() -> (
    ReliableState,
    ReliableQueues,
    mpsc::Sender<Outbound>,
    mpsc::Sender<Outbound>,
) {
    let (ctrl_tx, ctrl) = mpsc::channel(16);
    let (data_tx, data) = mpsc::channel(16);
    let (_acks_tx, acks) = mpsc::channel(16);
    let state = ReliableState::new(16, Duration::from_secs(5), Duration::ZERO, Metrics::new());
    (state, ReliableQueues { ctrl, data, acks }, ctrl_tx, data_tx)
}

/// The originating side: a reader that ends stops the writer and closes the connection with 0;
/// the reader's output comes back (a handler hands back its de-duplication window so).
#[tokio::test]
async fn a_reliable_session_ends_with_its_reader() {
    let Pair {
        near: (conn, mut send, _recv),
        far,
        ..
    } = pair().await;
    let (mut state, mut queues, _ctrl, _data) = reliable();
    let (end_tx, end_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = async move {
        let _ = end_rx.await;
        42u32
    };
    let never = StopClose {
        code: Some(ErrorCode::ShuttingDown),
        finish: false,
    };
    end_tx.send(()).expect("reader waits");
    let (w, r) = tokio::time::timeout(
        WAIT,
        run_reliable(
            &conn,
            &mut send,
            &mut state,
            &mut queues,
            &writer_config(),
            &tasks(),
            reader,
            (std::future::pending(), never),
        ),
    )
    .await
    .expect("ended with the reader");
    assert!(w.is_ok(), "{w:?}");
    assert_eq!(r.expect("reader ran"), 42);
    assert_eq!(closed_with(&far.conn).await, 0);
}

/// `stop` closes a reliable session with its code, and writes that were queued before still
/// went out first.
#[tokio::test]
async fn a_stopped_reliable_session_closes_with_the_stop_code() {
    let Pair {
        near: (conn, mut send, _recv),
        mut far,
        ..
    } = pair().await;
    let (mut state, mut queues, ctrl, _data) = reliable();
    ctrl.send(Outbound::Frame(
        Frame::Ping(Ping { correlation_id: 5 }).to_bytes(),
    ))
    .await
    .expect("queued");
    let reader_conn = conn.clone();
    let reader = async move {
        reader_conn.closed().await;
    };
    // The far side reads the queued ping (after the pair's first one), then the stop fires.
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<()>();
    let far_side = async {
        let mut got = Vec::new();
        while got.len() < 2 {
            got.push(frame(&mut far.recv, &mut far.decoder).await);
        }
        assert_eq!(got[1], Frame::Ping(Ping { correlation_id: 5 }));
        seen_tx.send(()).expect("stop waits");
        closed_with(&far.conn).await
    };
    let stop = StopClose {
        code: Some(ErrorCode::ShuttingDown),
        finish: false,
    };
    let (cfg, tasks) = (writer_config(), tasks());
    let near_side = run_reliable(
        &conn,
        &mut send,
        &mut state,
        &mut queues,
        &cfg,
        &tasks,
        reader,
        (
            async {
                let _ = seen_rx.await;
            },
            stop,
        ),
    );
    let (code, (w, r)) = tokio::join!(far_side, near_side);
    assert_eq!(code, ErrorCode::ShuttingDown as u64);
    assert!(w.is_ok(), "{w:?}");
    assert!(r.is_ok(), "the reader ended with the connection");
}

/// The writer runs on the process's tracker (a shutdown that waits for the tracker waits for
/// it) until `finish` ends it.
#[tokio::test]
async fn the_writer_runs_on_the_tracker_until_finish() {
    let Pair { near, far, .. } = pair().await;
    let t = tasks();
    let peer = peer_queues(
        7,
        &far.conn,
        wire::DEFAULT_MAX_FRAME_SIZE,
        &LimitsConfig::default(),
    );
    let (actor, _tx, _) = LinkActor::start(far, peer, None, writer_config(), t.clone());
    assert_eq!(t.tracker.len(), 1, "the writer is tracked");
    actor.finish(Ok(())).await;
    t.tracker.close();
    tokio::time::timeout(WAIT, t.tracker.wait())
        .await
        .expect("the writer ended with the link");
    drop(near);
}
