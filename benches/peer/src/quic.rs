//! The QUIC byte-copy ceiling: a relay (a child process of this binary) that copies each
//! publisher's stream, chunk by chunk and without parsing it, onto one stream per subscriber.
//! No routing, no topics, no framing work in the relay: what quinn and this machine allow a
//! relay process to move, measured with the same clients' shape and report as the others.
//!
//! Protocol (loopback only): a client opens one bidirectional stream and writes one byte, `S`
//! (subscriber) or `P` (publisher); the relay answers `k` once it is set up. A publisher then
//! writes frames (`u32` big-endian length, payload) on that stream; the relay opens one
//! unidirectional stream to every subscriber registered before the publisher and copies the
//! publisher's chunks onto each, waiting on flow control rather than dropping.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use crate::measure::{self, Live, Load, Tracker};

const ALPN: &[u8] = b"macula-peer-copy";

/// Arguments of `macula-peer quic`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    load: Load,
}

/// Arguments of `macula-peer quic-relay` (started by `macula-peer quic`).
#[derive(clap::Args, Debug)]
pub struct RelayArgs {
    /// The server certificate (DER).
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PKCS#8 DER).
    #[arg(long)]
    key: PathBuf,
}

/// The relay: binds 127.0.0.1 on a free port, prints it on stdout's first line, and serves
/// until killed.
pub async fn relay(a: RelayArgs) -> Result<()> {
    let cert = rustls::pki_types::CertificateDer::from(std::fs::read(&a.cert)?);
    let key = rustls::pki_types::PrivateKeyDer::try_from(std::fs::read(&a.key)?)
        .map_err(|e| anyhow::anyhow!("key: {e}"))?;
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse()?)?;
    println!("{}", endpoint.local_addr()?);
    let subs: Arc<Mutex<Vec<quinn::Connection>>> = Arc::default();
    while let Some(incoming) = endpoint.accept().await {
        let subs = subs.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(incoming, subs).await {
                eprintln!("relay connection: {e:#}");
            }
        });
    }
    Ok(())
}

async fn serve(incoming: quinn::Incoming, subs: Arc<Mutex<Vec<quinn::Connection>>>) -> Result<()> {
    let conn = incoming.await?;
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut role = [0u8; 1];
    recv.read_exact(&mut role).await?;
    match &role {
        b"S" => {
            subs.lock().expect("not poisoned").push(conn.clone());
            send.write_all(b"k").await?;
            send.finish()?;
            conn.closed().await;
        }
        b"P" => {
            let targets: Vec<_> = subs.lock().expect("not poisoned").clone();
            let mut outs = Vec::with_capacity(targets.len());
            for t in &targets {
                outs.push(t.open_uni().await?);
            }
            send.write_all(b"k").await?;
            while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
                for o in &mut outs {
                    o.write_chunk(chunk.bytes.clone()).await?;
                }
            }
            for mut o in outs {
                o.finish()?;
            }
        }
        _ => bail!("unknown role {role:?}"),
    }
    Ok(())
}

/// Starts a relay child and measures it.
pub async fn run(a: Args) -> Result<()> {
    anyhow::ensure!(a.load.payload >= 16, "--payload must be at least 16 bytes");
    let dir = tempfile::tempdir()?;
    let pki = crate::pki::make()?;
    let (cert, key) = (dir.path().join("cert.der"), dir.path().join("key.der"));
    std::fs::write(&cert, &pki.cert_der)?;
    std::fs::write(&key, &pki.key_der)?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("quic-relay")
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .stdout(Stdio::piped())
        .spawn()
        .context("start the relay")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let addr: SocketAddr = line.trim().parse().context("relay address")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(pki.ca_der))?;
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    let result = scenario(&a.load, addr, config).await;
    let _ = child.kill();
    let _ = child.wait();
    measure::emit(&result?, &a.load)
}

/// Connects from an endpoint of its own (one UDP socket per client, as `macula::client`) and
/// announces `role`; returns the connection and its set-up stream.
async fn connect(
    addr: SocketAddr,
    config: &quinn::ClientConfig,
    role: &[u8],
) -> Result<(quinn::Connection, quinn::SendStream)> {
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    ep.set_default_client_config(config.clone());
    let conn = ep.connect(addr, "localhost")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(role).await?;
    let mut ok = [0u8; 1];
    recv.read_exact(&mut ok).await?;
    anyhow::ensure!(&ok == b"k", "relay refused");
    Ok((conn, send))
}

async fn scenario(
    load: &Load,
    addr: SocketAddr,
    config: quinn::ClientConfig,
) -> Result<measure::Report> {
    let live = Arc::new(Live::default());
    let base = Instant::now();
    let mut sub_conns = Vec::new();
    let mut readers = Vec::new();
    let mut trackers = Vec::new();
    for _ in 0..load.subscribers {
        let (conn, _) = connect(addr, &config, b"S").await?;
        let tracker = Arc::new(Mutex::new(Tracker::new(base, live.clone())));
        trackers.push(tracker.clone());
        let c = conn.clone();
        readers.push(tokio::spawn(async move {
            let mut streams = Vec::new();
            while let Ok(recv) = c.accept_uni().await {
                streams.push(tokio::spawn(read_frames(recv, tracker.clone())));
            }
            for s in streams {
                let _ = s.await;
            }
        }));
        sub_conns.push(conn);
    }
    let mut pubs = Vec::new();
    for _ in 0..load.publishers {
        pubs.push(connect(addr, &config, b"P").await?);
    }
    let rate = measure::per_publisher_rate(load);
    let dur = Duration::from_secs(load.duration);
    let size = load.payload;
    let pub_tasks: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(i, (conn, mut send))| {
            let live = live.clone();
            tokio::spawn(async move {
                let mut body = vec![0u8; size];
                let mut batch = BytesMut::with_capacity(256 * 1024);
                let mut pace = measure::Pacer::new(rate, dur, live);
                let mut seq = 0u64;
                while let Some(target) = pace.due(seq) {
                    while seq < target {
                        measure::stamp(&mut body, i as u64, seq, base);
                        batch.put_u32(size as u32);
                        batch.put_slice(&body);
                        seq += 1;
                    }
                    if !batch.is_empty() {
                        send.write_chunk(batch.split().freeze()).await?;
                    }
                    pace.wait(seq).await;
                }
                send.finish()?;
                let _ = send.stopped().await;
                drop(conn);
                anyhow::Ok(seq)
            })
        })
        .collect();
    let (sent_by, publish_elapsed) = measure::published(pub_tasks, base, &live, load).await?;
    for c in &sub_conns {
        c.close(0u32.into(), b"done");
    }
    for r in readers {
        let _ = r.await;
    }
    let trackers: Vec<Tracker> = trackers
        .into_iter()
        .map(|t| match Arc::try_unwrap(t) {
            Ok(m) => m.into_inner().expect("not poisoned"),
            Err(_) => unreachable!("every reader has ended"),
        })
        .collect();
    measure::report(
        "quic-copy",
        load,
        base,
        &sent_by,
        publish_elapsed,
        &trackers,
    )
}

/// Reads one publisher's stream: frames of `u32` length and payload, recorded per chunk.
async fn read_frames(mut recv: quinn::RecvStream, tracker: Arc<Mutex<Tracker>>) {
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut payloads: Vec<Bytes> = Vec::with_capacity(1024);
    while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
        buf.extend_from_slice(&chunk.bytes);
        while buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
            if buf.len() < 4 + len {
                break;
            }
            buf.advance(4);
            payloads.push(buf.split_to(len).freeze());
        }
        tracker
            .lock()
            .expect("not poisoned")
            .record(payloads.iter().map(|p| &p[..]));
        payloads.clear();
    }
}
