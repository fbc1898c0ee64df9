//! The flood of `macula-loadtest flood`: connection attempts from several loopback source
//! addresses, bounded in count (`max_attempts`) and in time (`until`), of three kinds:
//!
//! * **handshake**: a QUIC connection that completes the TLS handshake (following a Retry
//!   when the server sends one) and then never opens a stream nor sends `connect`;
//! * **half-open**: a QUIC Initial sent from a *deaf* socket, which drops everything the
//!   server answers (its handshake flight, a Retry) and lets no later packet of that
//!   connection out: one Initial per attempt, as from a spoofed address. It offers no idle
//!   timeout, so an accepted one holds its slot as long as the server's own bounds allow;
//! * **idle**: a connection that completes the protocol `connect` (a fresh node id, proven)
//!   and then idles, holding its slot.
//!
//! Completed connections are held (at most `max_held`; beyond that the oldest is closed)
//! until the server closes them or the flood ends, when every one is closed. Each source
//! address has its own UDP sockets; the first source makes half of the attempts (a heavy
//! hitter, for the per-source bound), the others share the rest.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result};
use macula::identity::Identity;
use macula::wire::{self, Connect, Role};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{
    AsyncUdpSocket, ConnectionError, Endpoint, Runtime, TokioRuntime, TransportErrorCode, UdpPoller,
};
use serde::Serialize;
use tokio::time::Instant;

/// One kind of attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// TLS handshake completed, then silence (no stream, no `connect`).
    Handshake,
    /// One Initial from a deaf socket, then nothing.
    HalfOpen,
    /// Protocol `connect` completed, then idle.
    Idle,
}

/// Every kind, in the order a mixed flood assigns them to its tasks.
pub const ALL: [Kind; 3] = [Kind::Handshake, Kind::HalfOpen, Kind::Idle];

/// How long a half-open attempt keeps its connection before dropping it (its Initial is
/// out by then; nothing else of it leaves the deaf socket).
const HALF_OPEN_SEND: Duration = Duration::from_millis(100);

/// Longest wait for a handshake or a `connect` answer before the attempt counts as timed out.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait, at the end, for the closes of the held connections to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The flood to make.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The node attacked (loopback).
    pub target: SocketAddr,
    /// TLS server name sent.
    pub server_name: String,
    /// Realm named in `connect` (kind idle).
    pub realm: String,
    /// Source addresses (loopback); the first makes half of the attempts.
    pub sources: Vec<IpAddr>,
    /// Kinds; task `i` makes attempts of kind `kinds[i % len]`.
    pub kinds: Vec<Kind>,
    /// Attempts under way at once (tasks).
    pub concurrency: usize,
    /// Most attempts in all.
    pub max_attempts: u64,
    /// Most completed connections held at once.
    pub max_held: usize,
}

/// Counts of one kind.
#[derive(Serialize, Debug, Default, Clone)]
pub struct KindReport {
    /// Attempts started.
    pub attempts: u64,
    /// TLS handshakes completed (kinds handshake and idle).
    pub handshakes: u64,
    /// `connect` handshakes completed (kind idle).
    pub sessions: u64,
    /// Attempts the server refused (QUIC `CONNECTION_REFUSED`).
    pub refused: u64,
    /// Attempts with no answer within 5 s.
    pub timed_out: u64,
    /// Attempts that failed otherwise (a `connect` refused with an error frame, a closed
    /// connection, a local error).
    pub failed: u64,
    /// Attempts still under way when the flood's time was up.
    pub cut: u64,
}

/// What the flood did.
#[derive(Serialize, Debug, Default)]
pub struct FloodReport {
    /// Seconds from the first attempt to the end of the last.
    pub secs: f64,
    /// All attempts.
    pub attempts: u64,
    /// Attempts per second.
    pub attempts_per_s: f64,
    /// Per kind (`handshake`, `half-open`, `idle`), the kinds flooded only.
    pub by_kind: std::collections::BTreeMap<String, KindReport>,
    /// Most completed connections held at once.
    pub held_peak: usize,
    /// Idle sessions still open when the flood ended (the server closed the others).
    pub idle_alive_at_end: usize,
    /// Handshake-only connections still open when the flood ended.
    pub handshake_alive_at_end: usize,
    /// Up to five distinct errors of failed attempts, for the curious.
    pub errors: Vec<String>,
}

/// Runs the flood of `plan` until `until` or its attempts are spent, then closes every
/// connection it holds.
///
/// # Errors
/// Only setup failures (a source address that cannot be bound).
pub async fn run(plan: Plan, until: Instant) -> Result<FloodReport> {
    let cfg = macula::config::Config::default();
    let mut sockets = Vec::new();
    for ip in &plan.sources {
        let bind = SocketAddr::new(*ip, 0);
        let ep = macula::transport::client_endpoint(bind, &cfg.tls, &cfg.transport, &cfg.data_dir)
            .with_context(|| format!("bind a flood socket on {bind}"))?;
        let deaf = deaf_endpoint(bind, &cfg).with_context(|| format!("bind {bind} (deaf)"))?;
        sockets.push((ep, deaf));
    }
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        sockets,
        next: AtomicU64::new(0),
        counts: ALL.map(|_| Counts::default()),
        held: Mutex::new(VecDeque::new()),
        held_peak: AtomicUsize::new(0),
        errors: Mutex::new(Vec::new()),
    });
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..plan.concurrency {
        let kind = plan.kinds[i % plan.kinds.len()];
        let s = shared.clone();
        tasks.spawn(async move { s.work(kind, until).await });
    }
    while tasks.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    let held = std::mem::take(&mut *lock(&shared.held));
    let alive = |k: Kind| {
        held.iter()
            .filter(|h| h.kind == k && h.conn.close_reason().is_none())
            .count()
    };
    let (idle_alive_at_end, handshake_alive_at_end) = (alive(Kind::Idle), alive(Kind::Handshake));
    for h in &held {
        h.conn.close(0u32.into(), b"flood over");
    }
    drop(held);
    let closing = async {
        for (ep, deaf) in &shared.sockets {
            deaf.close(0u32.into(), b"flood over"); // nothing of it leaves the deaf socket
            ep.wait_idle().await;
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, closing).await;
    let mut by_kind = std::collections::BTreeMap::new();
    for (k, c) in ALL.iter().zip(&shared.counts) {
        if plan.kinds.contains(k) {
            by_kind.insert(kind_name(*k).to_string(), c.report());
        }
    }
    let attempts = by_kind.values().map(|k| k.attempts).sum();
    let errors = std::mem::take(&mut *lock(&shared.errors));
    Ok(FloodReport {
        secs,
        attempts,
        attempts_per_s: attempts as f64 / secs.max(1e-9),
        by_kind,
        held_peak: shared.held_peak.load(Ordering::Relaxed),
        idle_alive_at_end,
        handshake_alive_at_end,
        errors,
    })
}

/// The name of `kind` in reports and on the command line.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Handshake => "handshake",
        Kind::HalfOpen => "half-open",
        Kind::Idle => "idle",
    }
}

struct Shared {
    plan: Plan,
    /// Per source: an ordinary client endpoint and a deaf one.
    sockets: Vec<(Endpoint, Endpoint)>,
    /// The next attempt's number.
    next: AtomicU64,
    /// Per kind, in the order of [`ALL`].
    counts: [Counts; 3],
    held: Mutex<VecDeque<Held>>,
    held_peak: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

/// A completed connection kept open (with its control stream, for an idle session: dropping
/// the stream would end the session).
struct Held {
    kind: Kind,
    conn: quinn::Connection,
    _stream: Option<(quinn::SendStream, quinn::RecvStream)>,
}

enum Outcome {
    Held(Held),
    Sent,
    Refused,
    TimedOut,
    Failed(String),
}

impl Shared {
    /// One task's loop: attempts of `kind` one after the other until `until` or the
    /// attempts are spent.
    async fn work(&self, kind: Kind, until: Instant) {
        let c = &self.counts[ALL.iter().position(|k| *k == kind).expect("in ALL")];
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            if n >= self.plan.max_attempts || Instant::now() >= until {
                return;
            }
            let (ep, deaf) = &self.sockets[self.source_of(n)];
            c.attempts.fetch_add(1, Ordering::Relaxed);
            let outcome = tokio::select! {
                o = self.attempt(kind, ep, deaf) => o,
                _ = tokio::time::sleep_until(until) => {
                    c.cut.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            match outcome {
                Outcome::Held(h) => {
                    c.handshakes.fetch_add(1, Ordering::Relaxed);
                    if h.kind == Kind::Idle {
                        c.sessions.fetch_add(1, Ordering::Relaxed);
                    }
                    self.hold(h);
                }
                Outcome::Sent => {}
                Outcome::Refused => {
                    c.refused.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::TimedOut => {
                    c.timed_out.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Failed(e) => {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    let mut errors = lock(&self.errors);
                    if errors.len() < 5 && !errors.contains(&e) {
                        errors.push(e);
                    }
                }
            }
        }
    }

    /// Attempt `n`'s source: every other attempt from the first source, the rest in turn
    /// from the others.
    fn source_of(&self, n: u64) -> usize {
        let s = self.sockets.len() as u64;
        if s == 1 || n % 2 == 0 {
            0
        } else {
            (1 + (n / 2) % (s - 1)) as usize
        }
    }

    async fn attempt(&self, kind: Kind, ep: &Endpoint, deaf: &Endpoint) -> Outcome {
        let p = &self.plan;
        match kind {
            Kind::HalfOpen => match deaf.connect(p.target, &p.server_name) {
                Ok(connecting) => {
                    // Never completes (the socket is deaf); dropped after its Initial is out.
                    let _ = tokio::time::timeout(HALF_OPEN_SEND, connecting).await;
                    Outcome::Sent
                }
                Err(e) => Outcome::Failed(format!("connect: {e}")),
            },
            Kind::Handshake | Kind::Idle => {
                let connecting = match ep.connect(p.target, &p.server_name) {
                    Ok(c) => c,
                    Err(e) => return Outcome::Failed(format!("connect: {e}")),
                };
                let conn = match tokio::time::timeout(ATTEMPT_TIMEOUT, connecting).await {
                    Err(_) => return Outcome::TimedOut,
                    Ok(Err(e)) => return classify(&e),
                    Ok(Ok(conn)) => conn,
                };
                if kind == Kind::Handshake {
                    return Outcome::Held(Held {
                        kind,
                        conn,
                        _stream: None,
                    });
                }
                let me = Identity::generate();
                let session = macula::session::open_session(
                    &conn,
                    connect_frame(&p.realm),
                    wire::DEFAULT_MAX_FRAME_SIZE,
                    &me,
                );
                match tokio::time::timeout(ATTEMPT_TIMEOUT, session).await {
                    Err(_) => Outcome::TimedOut,
                    Ok(Err(e)) => Outcome::Failed(format!("session: {e}")),
                    Ok(Ok((send, recv, _, _))) => Outcome::Held(Held {
                        kind,
                        conn,
                        _stream: Some((send, recv)),
                    }),
                }
            }
        }
    }

    /// Keeps `h` open; beyond `max_held` the oldest held connection is closed.
    fn hold(&self, h: Held) {
        let mut held = lock(&self.held);
        while held.len() >= self.plan.max_held.max(1) {
            if let Some(old) = held.pop_front() {
                old.conn.close(0u32.into(), b"flood: make room");
            }
        }
        held.push_back(h);
        self.held_peak.fetch_max(held.len(), Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Counts {
    attempts: AtomicU64,
    handshakes: AtomicU64,
    sessions: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    failed: AtomicU64,
    cut: AtomicU64,
}

impl Counts {
    fn report(&self) -> KindReport {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        KindReport {
            attempts: get(&self.attempts),
            handshakes: get(&self.handshakes),
            sessions: get(&self.sessions),
            refused: get(&self.refused),
            timed_out: get(&self.timed_out),
            failed: get(&self.failed),
            cut: get(&self.cut),
        }
    }
}

fn classify(e: &ConnectionError) -> Outcome {
    match e {
        ConnectionError::ConnectionClosed(c)
            if c.error_code == TransportErrorCode::CONNECTION_REFUSED =>
        {
            Outcome::Refused
        }
        ConnectionError::TimedOut => Outcome::TimedOut,
        e => Outcome::Failed(format!("handshake: {e}")),
    }
}

/// The `connect` a client sends (as `macula::client` does).
fn connect_frame(realm: &str) -> Connect {
    Connect {
        versions: vec![wire::PROTOCOL_VERSION],
        node_id: Identity::generate().node_id(), // replaced by `open_session`
        realm: realm.into(),
        cluster: String::new(),
        role: Role::Client,
        capabilities: vec!["pubsub".into(), "qos1".into()],
        max_frame_size: wire::DEFAULT_MAX_FRAME_SIZE,
        correlation_id: 1,
        proof: None,
        credential: None,
    }
}

/// A client endpoint on `bind` whose socket is deaf: see [`Deaf`].
fn deaf_endpoint(bind: SocketAddr, cfg: &macula::config::Config) -> Result<Endpoint> {
    let socket = std::net::UdpSocket::bind(bind)?;
    socket.set_nonblocking(true)?;
    let inner = TokioRuntime.wrap_udp_socket(socket)?;
    let deaf = Arc::new(Deaf {
        inner,
        seen: Mutex::new(HashSet::new()),
    });
    let mut ep = Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        deaf,
        Arc::new(TokioRuntime),
    )?;
    let mut client = macula::transport::client_config(&cfg.tls, &cfg.transport, &cfg.data_dir)?;
    // No idle timeout offered (a macula client offers 3 s, which the server would adopt from
    // the Initial): the server's own bounds decide how long it keeps the attempt.
    let mut transport = macula::transport::transport_config(&cfg.transport);
    transport.max_idle_timeout(None);
    client.transport_config(Arc::new(transport));
    ep.set_default_client_config(client);
    Ok(ep)
}

/// A UDP socket that discards every datagram it receives and sends only the first datagram
/// of each connection (told apart by the destination connection id of its long header; a
/// deaf client never leaves the Initial packet space, so that id never changes): the
/// server sees one Initial and then nothing, not even a close.
struct Deaf {
    inner: Arc<dyn AsyncUdpSocket>,
    /// Destination connection ids already sent to (bounded by the attempts).
    seen: Mutex<HashSet<Vec<u8>>>,
}

impl fmt::Debug for Deaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deaf").finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for Deaf {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let first = match long_header_dcid(transmit.contents) {
            Some(dcid) => lock(&self.seen).insert(dcid.to_vec()),
            None => false, // a short header: not from a deaf connection; never sent
        };
        if first {
            self.inner.try_send(transmit)
        } else {
            Ok(()) // "sent": into the void
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(_)) => continue, // heard and ignored
                other => return other,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// The destination connection id of a QUIC long-header packet (RFC 9000 §17.2).
fn long_header_dcid(datagram: &[u8]) -> Option<&[u8]> {
    if datagram.first()? & 0x80 == 0 {
        return None;
    }
    let len = usize::from(*datagram.get(5)?);
    datagram.get(6..6 + len)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::long_header_dcid;

    #[test]
    fn the_dcid_of_a_long_header() {
        let mut p = vec![0xc0, 0, 0, 0, 1, 4, 9, 8, 7, 6, 0];
        assert_eq!(long_header_dcid(&p), Some(&[9u8, 8, 7, 6][..]));
        p[0] = 0x40;
        assert_eq!(long_header_dcid(&p), None, "short header");
        assert_eq!(long_header_dcid(&[0xc0, 0, 0]), None, "truncated");
    }
}
