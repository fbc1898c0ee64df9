//! Bad input against a real node process: each case gets an error frame or a
//! clean close with an error code, is counted in the metrics, and the node keeps
//! serving everyone else.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::{client, fleet, metric, recv};
use macula::config::Config;
use macula::wire::{
    self, Connect, ErrorCode, Frame, FrameDecoder, Ping, Publish, Qos, Role, Subscribe,
};
use quinn::{Connection, RecvStream, SendStream};

struct Raw {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
    _ep: quinn::Endpoint,
}

async fn raw_connect(addr: SocketAddr) -> Raw {
    let cfg = Config::default();
    let ep = macula::transport::client_endpoint(
        "0.0.0.0:0".parse().unwrap(),
        &cfg.tls,
        &cfg.transport,
        &cfg.data_dir,
    )
    .unwrap();
    let conn = ep.connect(addr, "localhost").unwrap().await.unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    Raw {
        conn,
        send,
        recv,
        decoder: FrameDecoder::new(wire::DEFAULT_MAX_FRAME_SIZE),
        _ep: ep,
    }
}

fn connect_frame(realm: &str) -> Bytes {
    Frame::Connect(Connect {
        versions: vec![wire::PROTOCOL_VERSION],
        node_id: [7; 32],
        realm: realm.into(),
        cluster: String::new(),
        role: Role::Client,
        capabilities: vec![],
        max_frame_size: wire::DEFAULT_MAX_FRAME_SIZE,
        correlation_id: 1,
    })
    .to_bytes()
}

impl Raw {
    async fn handshake(addr: SocketAddr) -> Raw {
        let mut r = raw_connect(addr).await;
        r.send.write_all(&connect_frame("io.macula")).await.unwrap();
        match r.next().await {
            Some(Frame::Connected(_)) => r,
            other => panic!("expected connected, got {other:?}"),
        }
    }

    /// Next decoded frame, or None when the stream/connection ended.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(raw) = self.decoder.next_frame().unwrap() {
                return Some(raw.decode().unwrap());
            }
            match tokio::time::timeout(Duration::from_secs(10), self.recv.read_chunk(65536, true))
                .await
                .expect("answer within 10 s")
            {
                Ok(Some(c)) => self.decoder.extend(&c.bytes),
                _ => return None,
            }
        }
    }

    /// Waits for an error frame; returns its code.
    async fn error_code(&mut self) -> u16 {
        loop {
            match self.next().await {
                Some(Frame::Error(e)) => return e.code,
                Some(_) => continue,
                None => panic!("stream ended without an error frame"),
            }
        }
    }

    /// Waits for the connection to be closed; returns the application close code.
    async fn close_code(&self) -> u64 {
        match tokio::time::timeout(Duration::from_secs(10), self.conn.closed())
            .await
            .expect("closed within 10 s")
        {
            quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
            other => panic!("unexpected close: {other}"),
        }
    }

    async fn still_alive(&mut self) {
        self.send
            .write_all(&Frame::Ping(Ping { correlation_id: 99 }).to_bytes())
            .await
            .unwrap();
        loop {
            match self.next().await {
                Some(Frame::Pong(p)) => {
                    assert_eq!(p.correlation_id, 99);
                    return;
                }
                Some(_) => continue,
                None => panic!("connection died"),
            }
        }
    }
}

fn header(version: u8, msg_type: u8, len: u32) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(version);
    b.put_u8(msg_type);
    b.put_u8(0);
    b.put_u8(0);
    b.put_u32(len);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_answered_counted_and_survived() {
    let mut f = fleet();
    let n = f
        .node(
            "node",
            "127.0.0.5",
            "c",
            "127.0.0.1:9".parse().unwrap(),
            &[],
        )
        .unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let addr = f.procs[n].quic;
    let admin = f.procs[n].admin;

    // A well-behaved pair that must keep working throughout.
    let good_sub_client = client(addr).await;
    let mut good_sub = good_sub_client.subscribe("good.*").await.unwrap();
    let good_pub = client(addr).await;

    // Oversized declared length: refused before the body is buffered, connection closed.
    let mut r = Raw::handshake(addr).await;
    r.send.write_all(&header(1, 0x10, 64 << 20)).await.unwrap();
    assert_eq!(r.close_code().await, ErrorCode::FrameTooLarge as u64);

    // Wrong version.
    let mut r = Raw::handshake(addr).await;
    r.send.write_all(&header(9, 0x10, 0)).await.unwrap();
    assert_eq!(r.close_code().await, ErrorCode::UnsupportedVersion as u64);

    // Truncated frame: half a publish, then the stream ends.
    let mut r = Raw::handshake(addr).await;
    let publish = Frame::Publish(Publish {
        topic: "good.x".into(),
        payload: Bytes::from_static(b"hello"),
        qos: Qos::AtMostOnce,
        retain: false,
        message_id: [1; 16],
        ts_us: None,
    })
    .to_bytes();
    r.send
        .write_all(&publish[..publish.len() / 2])
        .await
        .unwrap();
    r.send.finish().unwrap();
    assert_eq!(r.close_code().await, ErrorCode::Truncated as u64);

    // Unknown message type: error frame, stream stays usable.
    let mut r = Raw::handshake(addr).await;
    let mut unknown = header(1, 0x7e, 1);
    unknown.put_u8(0x80); // an empty MessagePack map
    r.send.write_all(&unknown).await.unwrap();
    assert_eq!(r.error_code().await, ErrorCode::UnknownType as u16);
    r.still_alive().await;

    // Malformed MessagePack body with intact framing: error frame, stream stays usable.
    let mut bad = header(1, 0x11, 3);
    bad.put_slice(&[0xc1, 0xff, 0x00]);
    r.send.write_all(&bad).await.unwrap();
    assert_eq!(r.error_code().await, ErrorCode::MalformedBody as u16);
    r.still_alive().await;

    // Topic with an empty segment, and a pattern with a bad character.
    let bad_topic = Frame::Publish(Publish {
        topic: "good..x".into(),
        payload: Bytes::new(),
        qos: Qos::AtMostOnce,
        retain: false,
        message_id: [2; 16],
        ts_us: None,
    });
    r.send.write_all(&bad_topic.to_bytes()).await.unwrap();
    assert_eq!(r.error_code().await, ErrorCode::InvalidTopic as u16);
    let bad_pattern = Frame::Subscribe(Subscribe {
        topics: vec!["good.x y".into()],
        qos: Qos::AtMostOnce,
        correlation_id: 5,
    });
    r.send.write_all(&bad_pattern.to_bytes()).await.unwrap();
    loop {
        match r.next().await {
            Some(Frame::Error(e)) => {
                assert_eq!(e.code, ErrorCode::InvalidTopic as u16);
                assert_eq!(e.correlation_id, Some(5), "the error names the request");
                break;
            }
            Some(_) => continue,
            None => panic!("closed"),
        }
    }
    r.still_alive().await;

    // Unknown realm at connect: error frame then close.
    let mut r = raw_connect(addr).await;
    r.send
        .write_all(&connect_frame("org.nowhere"))
        .await
        .unwrap();
    assert_eq!(r.error_code().await, ErrorCode::UnknownRealm as u16);
    assert_eq!(r.close_code().await, ErrorCode::UnknownRealm as u64);

    // A first frame that is not CONNECT.
    let mut r = raw_connect(addr).await;
    r.send
        .write_all(&Frame::Ping(Ping { correlation_id: 1 }).to_bytes())
        .await
        .unwrap();
    assert_eq!(r.close_code().await, ErrorCode::NotConnected as u64);

    // Random garbage instead of a frame.
    let mut r = raw_connect(addr).await;
    r.send
        .write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 1, 2, 3])
        .await
        .unwrap();
    let code = r.close_code().await;
    assert!(
        code == ErrorCode::UnsupportedVersion as u64 || code == ErrorCode::Protocol as u64,
        "code {code}"
    );

    // The well-behaved clients never noticed.
    good_pub
        .publish("good.news", "still here".into(), Qos::AtLeastOnce)
        .await
        .unwrap();
    let m = recv(&mut good_sub).await;
    assert_eq!(&m.payload[..], b"still here");

    // And every case was counted.
    for code in [
        "frame_too_large",
        "unsupported_version",
        "truncated",
        "unknown_type",
        "malformed_body",
        "invalid_topic",
        "unknown_realm",
        "not_connected",
    ] {
        let v = metric(
            admin,
            &format!("macula_protocol_errors_total{{code=\"{code}\"}}"),
        );
        assert!(v >= 1.0, "{code} counted: {v}");
    }
    f.stop().await;
}
