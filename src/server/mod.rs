//! The accept loop shared by `macula node` and `macula bridge`: one task per QUIC
//! connection, tracked so shutdown can wait for all of them, behind the handshake gate
//! ([`gate`]: a bound on open plus in-progress connections, per source address too, and a
//! QUIC Retry for unvalidated sources when handshakes pile up).

pub mod gate;
pub mod idle;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, Endpoint};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::wire::{ErrorCode, NodeId};

/// A running node or bridge. Dropping it does not stop it: call
/// [`ServerHandle::shutdown`].
pub struct ServerHandle {
    /// Address the QUIC listener is bound to.
    pub local_addr: std::net::SocketAddr,
    /// This process's id.
    pub node_id: NodeId,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) endpoint: Endpoint,
    /// The replicated state as JSON, for the admin `/state` endpoint (a node: its cluster
    /// store; a bridge: per realm its level store and children), refreshed every gossip push
    /// interval.
    pub state: std::sync::Arc<arc_swap::ArcSwap<serde_json::Value>>,
    /// A node's graceful leave: cancelled first on shutdown; the gossip task removes the node
    /// from `$members`, pushes that to its peers and notifies. `None` for a bridge.
    pub(crate) leave: Option<(CancellationToken, Arc<tokio::sync::Notify>)>,
    /// A fleet worker's drain (`docs/FLEET.md`); `None` for a node or a single bridge.
    pub fleet: Option<FleetHandle>,
    /// A node's view of its uplink's fleet as JSON (admin `/fleet`); `None` for a bridge.
    pub uplink_fleet: Option<std::sync::Arc<arc_swap::ArcSwap<serde_json::Value>>>,
}

/// A fleet worker's drain controls and `/fleet` view.
#[derive(Clone)]
pub struct FleetHandle {
    /// Cancel to start draining (SIGTERM and `POST /drain` do).
    pub drain: CancellationToken,
    /// Cancelled when the drain is complete.
    pub drained: CancellationToken,
    /// Longest drain (`bridge.fleet.drain_grace_ms`).
    pub grace: Duration,
    /// `/fleet` as JSON.
    pub json: Arc<arc_swap::ArcSwap<serde_json::Value>>,
}

/// Longest wait for a node's leave announcement before the connections close.
pub const LEAVE_GRACE: Duration = Duration::from_millis(500);

impl ServerHandle {
    /// Stops accepting, closes every connection with `SHUTTING_DOWN`, and waits at
    /// most `grace` for the connection tasks to finish and the endpoint to go idle.
    pub async fn shutdown(self, grace: Duration) {
        if let Some(f) = &self.fleet {
            f.drain.cancel();
            if tokio::time::timeout(f.grace, f.drained.cancelled())
                .await
                .is_err()
            {
                tracing::warn!("drain grace period over; stopping with links left");
            }
        }
        if let Some((leave, left)) = &self.leave {
            leave.cancel();
            if tokio::time::timeout(LEAVE_GRACE, left.notified())
                .await
                .is_ok()
            {
                // The leave frames are queued; give the writers a moment to send them.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.shutdown.cancel();
        self.endpoint
            .close((ErrorCode::ShuttingDown as u32).into(), b"shutting down");
        self.tracker.close();
        let _ = tokio::time::timeout(grace, self.tracker.wait()).await;
        let _ = tokio::time::timeout(grace, self.endpoint.wait_idle()).await;
    }
}

/// Accepts connections on `endpoint` until `shutdown` is cancelled, running
/// `handler` for each in its own task on `tracker`. Each attempt passes the handshake
/// [`gate::Gate`] first: refused at the QUIC level beyond `limits.max_connections` open plus
/// in-progress connections (`macula_connections_rejected_total{reason="max_connections"}`)
/// or `limits.max_connections_per_source` from one address (`reason="per_source"`), and
/// answered with a Retry when more than `limits.handshake_retry_above` handshakes are in
/// progress and its address is not validated (`macula_handshake_retries_total`).
pub async fn accept_loop<F, Fut>(
    endpoint: Endpoint,
    limits: gate::GateLimits,
    role: &'static str,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    handler: F,
) where
    F: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    let gate = Arc::new(std::sync::Mutex::new(gate::Gate::new(limits)));
    let open = Arc::new(std::sync::Mutex::new(OpenSessions::default()));
    if let Some(after) = limits.idle_evict_after {
        let (g, o, m, stop) = (
            gate.clone(),
            open.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        tracker.spawn(evict_idle(g, o, after, limits.max_connections, m, stop));
    }
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            i = endpoint.accept() => match i { Some(i) => i, None => break },
        };
        let remote = incoming.remote_address();
        let decision = lock(&gate).incoming(remote.ip(), incoming.remote_address_validated());
        match decision {
            gate::Decision::Accept => {}
            gate::Decision::Retry => {
                metrics.handshake_retries_total.inc();
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
                continue;
            }
            gate::Decision::Refuse(reason) => {
                metrics
                    .connections_rejected_total
                    .with_label_values(&[reason])
                    .inc();
                incoming.refuse();
                continue;
            }
        }
        let handler = handler.clone();
        let metrics = metrics.clone();
        let mut slot = Slot {
            gate: gate.clone(),
            source: remote.ip(),
            open: false,
            sessions: open.clone(),
            token: None,
        };
        tracker.spawn(async move {
            let conn = match tokio::time::timeout(Duration::from_secs(10), incoming).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    debug!(remote.addr = %remote, error = %e, "handshake failed");
                    metrics
                        .connections_rejected_total
                        .with_label_values(&["handshake"])
                        .inc();
                    return;
                }
                Err(_) => {
                    warn!(remote.addr = %remote, "handshake timed out");
                    metrics
                        .connections_rejected_total
                        .with_label_values(&["handshake"])
                        .inc();
                    return;
                }
            };
            slot.established(&conn);
            metrics
                .connections_accepted_total
                .with_label_values(&[role])
                .inc();
            metrics.connections_open.with_label_values(&[role]).inc();
            handler(conn).await;
            metrics.connections_open.with_label_values(&[role]).dec();
            drop(slot);
        });
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection's place in the gate, given back when dropped (the handshake failed, or the
/// connection ended; also if its task panics).
struct Slot {
    gate: Arc<std::sync::Mutex<gate::Gate>>,
    source: std::net::IpAddr,
    open: bool,
    /// The open sessions (eviction candidates) and this one's token there once established.
    sessions: Arc<std::sync::Mutex<OpenSessions>>,
    token: Option<u64>,
}

impl Slot {
    fn established(&mut self, conn: &Connection) {
        lock(&self.gate).established();
        self.open = true;
        let mut s = lock(&self.sessions);
        s.next += 1;
        let token = s.next;
        s.conns.insert(token, conn.clone());
        self.token = Some(token);
    }
}

/// The established connections of a listener, by token, and their sampled activity.
#[derive(Default)]
struct OpenSessions {
    conns: std::collections::HashMap<u64, Connection>,
    index: idle::IdleIndex,
    next: u64,
}

/// Every [`idle::SAMPLE_EVERY`]: samples each open connection's received STREAM frames and,
/// while fewer than [`idle::headroom`] slots are free, closes the sessions idle for `after`
/// or longer, the longest idle first (`LIMIT_EXCEEDED`, counted in
/// `macula_connections_evicted_total`).
async fn evict_idle(
    gate: Arc<std::sync::Mutex<gate::Gate>>,
    open: Arc<std::sync::Mutex<OpenSessions>>,
    after: Duration,
    max_connections: usize,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(idle::SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = start.elapsed();
        let free = lock(&gate).free();
        let mut s = lock(&open);
        let OpenSessions { conns, index, .. } = &mut *s;
        for (id, c) in conns.iter() {
            index.observe(*id, c.stats().frame_rx.stream, now);
        }
        let want = idle::headroom(max_connections).saturating_sub(free);
        if want == 0 {
            continue;
        }
        for id in index.victims(now, after, want) {
            if let Some(c) = conns.remove(&id) {
                index.remove(id);
                debug!(remote.addr = %c.remote_address(), "evicting an idle session: the listener is full");
                metrics.connections_evicted_total.inc();
                c.close(
                    (ErrorCode::LimitExceeded as u32).into(),
                    b"evicted: idle while the listener is full",
                );
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(token) = self.token {
            let mut s = lock(&self.sessions);
            s.conns.remove(&token);
            s.index.remove(token);
        }
        let mut g = lock(&self.gate);
        if self.open {
            g.closed(self.source);
        } else {
            g.failed(self.source);
        }
    }
}
