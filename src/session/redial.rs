//! The one redial loop of the links that dial a level above them (a node's uplink, a bridge's
//! parent link, the client library's session with its node): wait (a redirect's delay, else [`Backoff`] after the first attempt), try the
//! targets a [`Follower`] gives in order, follow a redirect or skip the worker just lost, and
//! hand the first session that opens to the caller (`docs/FLEET.md`, "Child bridges" and
//! "Nodes"). What a dial is (connect, handshake, `CONNECT` frame) is the caller's.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::backoff::Backoff;
use super::SessionError;
use crate::fleet::follow::{Followed, Follower};
use crate::wire::Redirect;

/// Why dialing a link's target failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The target's `host:port` did not resolve.
    #[error("resolving {addr}: {source}")]
    Resolve {
        /// The target.
        addr: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The target's `host:port` resolved to no address.
    #[error("{addr} resolved to no address")]
    NoAddress {
        /// The target.
        addr: String,
    },
    /// quinn refused to start the connection (bad server name, endpoint closed).
    #[error("connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[from] quinn::ConnectionError),
    /// The QUIC handshake took longer than the dial's timeout.
    #[error("handshake timed out")]
    Timeout,
    /// The target refused the session (`CONNECT` answered by an error, a redirect) or broke
    /// the handshake.
    #[error("session: {0}")]
    Session(#[from] SessionError),
    /// The node that answered a mesh dial was refused admission (its credential, PROTOCOL
    /// §7a); the connection was closed with the refusal's code.
    #[error("peer refused: {0}")]
    Refused(crate::auth::AdmissionError),
}

impl<T> From<Result<T, DialError>> for Dial<T, DialError> {
    fn from(r: Result<T, DialError>) -> Self {
        match r {
            Ok(v) => Dial::Open(v),
            Err(DialError::Session(SessionError::Redirected(r))) => Dial::Redirected(r),
            Err(e) => Dial::Failed(e),
        }
    }
}

/// Resolves `target` (`host:port`, first address) and completes a QUIC handshake with it as
/// `server_name` within `timeout`. Errors: [`DialError`] except `Session`.
pub async fn quic_connect(
    endpoint: &quinn::Endpoint,
    target: &str,
    server_name: &str,
    timeout: Duration,
) -> Result<quinn::Connection, DialError> {
    let addr = tokio::net::lookup_host(target)
        .await
        .map_err(|source| DialError::Resolve {
            addr: target.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| DialError::NoAddress {
            addr: target.to_string(),
        })?;
    let connecting = endpoint.connect(addr, server_name)?;
    Ok(tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| DialError::Timeout)??)
}

/// How one dial ended.
#[derive(Debug)]
pub enum Dial<T, E> {
    /// A session opened.
    Open(T),
    /// The worker refused the `connect` with a `REDIRECT` to another worker.
    Redirected(Redirect),
    /// Anything else: unreachable, refused, timed out.
    Failed(E),
    /// The target refused the session in a way no retry can change (a client whose realm
    /// the node does not serve): the redialer gives up.
    Refused(E),
}

/// A redial loop's state: the fleet follower (shared with the session's reader, which feeds
/// it directories and redirects), the configured targets and the backoff.
#[derive(Debug)]
pub struct Redialer {
    follow: Arc<Mutex<Follower>>,
    configured: Vec<String>,
    backoff: Backoff,
    attempts: u64,
    /// `macula_fleet_redirects_followed_total`.
    redirects_followed: IntCounter,
    /// Counted on every wait after a failed round or a lost session (for a node's uplink,
    /// `macula_uplink_reconnects_total`).
    retries: Option<IntCounter>,
}

impl Redialer {
    /// A redialer over the `configured` targets (`host:port`, tried after a fleet's owner and
    /// redirect), following `follow`, waiting `backoff` between rounds.
    pub fn new(
        configured: Vec<String>,
        follow: Arc<Mutex<Follower>>,
        backoff: Backoff,
        redirects_followed: IntCounter,
    ) -> Redialer {
        Redialer {
            follow,
            configured,
            backoff,
            attempts: 0,
            redirects_followed,
            retries: None,
        }
    }

    /// Also counts each retry in `retries`.
    pub fn counting_retries(mut self, retries: IntCounter) -> Redialer {
        self.retries = Some(retries);
        self
    }

    /// The follower this redialer dials by.
    pub fn follower(&self) -> &Arc<Mutex<Follower>> {
        &self.follow
    }

    /// The follower, locked (a poisoned lock is taken over: it only holds plain data).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Follower> {
        self.follow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Dials until a session opens: before each round waits a taken redirect's delay, else,
    /// after the first attempt, the backoff; then tries each target in order with
    /// `dial(target, capability, timeout)` — `capability` the `redirects=N` to add to the
    /// `connect` (`None`: no redirect followed), `timeout` the bound on connect and handshake
    /// (`fleet_timeout` once a fleet directory is known, so a dead worker does not hold the
    /// link; `timeout` otherwise). A redirect that is taken ends the round: the next starts
    /// at its target. Returns the target that opened and its session, or `None` once `cancel`
    /// fires or a dial was [`Dial::Refused`].
    pub async fn connect<T, E, F, Fut>(
        &mut self,
        cancel: &CancellationToken,
        (timeout, fleet_timeout): (Duration, Duration),
        mut dial: F,
    ) -> Option<(String, T)>
    where
        E: std::fmt::Display,
        F: FnMut(String, Option<String>, Duration) -> Fut,
        Fut: Future<Output = Dial<T, E>>,
    {
        loop {
            let (targets, redirected) = self.lock().targets(&self.configured, Instant::now());
            let wait = match redirected {
                Some(delay) => delay,
                None if self.attempts > 0 => {
                    if let Some(r) = &self.retries {
                        r.inc();
                    }
                    self.backoff.next_delay()
                }
                None => Duration::ZERO,
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            self.attempts += 1;
            for target in targets {
                let (capability, in_fleet) = {
                    let f = self.lock();
                    (f.capability(), f.in_fleet())
                };
                let limit = if in_fleet { fleet_timeout } else { timeout };
                let dialed = tokio::select! {
                    _ = cancel.cancelled() => return None,
                    d = dial(target.clone(), capability, limit) => d,
                };
                match dialed {
                    Dial::Open(session) => {
                        self.lock().on_accepted();
                        return Some((target, session));
                    }
                    Dial::Redirected(r) => {
                        let (to, reason) = (r.addr.clone(), r.reason.clone());
                        match self.lock().on_redirect(r, Instant::now()) {
                            Followed::Taken => {
                                self.redirects_followed.inc();
                                info!(from = %target, to = %to, reason = %reason, "redirected");
                                break;
                            }
                            Followed::JustLost => {
                                // The worker that sent it has not yet noticed that one die.
                                info!(from = %target, to = %to, "redirect to the worker just lost; trying another");
                            }
                        }
                    }
                    Dial::Failed(e) => debug!(target = %target, error = %e, "dial failed"),
                    Dial::Refused(e) => {
                        info!(target = %target, error = %e, "session refused; giving up");
                        return None;
                    }
                }
            }
        }
    }

    /// Back to the initial backoff (a session proved the target healthy).
    pub fn reset_backoff(&mut self) {
        self.backoff.reset();
    }

    /// The session with `target` ended: a redirect received during it is followed next
    /// (returns `true`; the backoff starts again), else `target` is remembered as the worker
    /// just lost (dialled last for a while, its redirects ignored).
    pub fn ended(&mut self, target: &str) -> bool {
        let mut f = self.follow.lock().unwrap_or_else(PoisonError::into_inner);
        if f.has_redirect() {
            drop(f);
            self.backoff.reset();
            true
        } else {
            f.on_lost(target, Instant::now());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(to: &str) -> Redirect {
        Redirect {
            owner: [9; 32],
            addr: to.into(),
            delay_ms: 0,
            reason: "connect".into(),
        }
    }

    fn redialer(configured: &[&str]) -> Redialer {
        Redialer::new(
            configured.iter().map(|s| s.to_string()).collect(),
            Arc::new(Mutex::new(Follower::new(7))),
            Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            IntCounter::new("r", "r").unwrap(),
        )
    }

    /// A redirect ends the round, the next round starts at its target and announces the
    /// redirect in the capability; the first target that opens wins.
    #[tokio::test(start_paused = true)]
    async fn follows_a_redirect_then_tries_in_order() {
        let mut r = redialer(&["a:1", "b:1"]);
        let cancel = CancellationToken::new();
        let mut tried = Vec::new();
        let (at, n) = r
            .connect(
                &cancel,
                (Duration::from_secs(10), Duration::from_secs(2)),
                |t, cap, _| {
                    tried.push((t.clone(), cap));
                    let n = tried.len();
                    async move {
                        match (t.as_str(), n) {
                            ("a:1", 1) => Dial::Redirected(redirect("c:1")),
                            ("c:1", _) => Dial::Failed("unreachable"),
                            ("a:1", _) => Dial::Open(n),
                            _ => Dial::Failed("no"),
                        }
                    }
                },
            )
            .await
            .unwrap();
        assert_eq!((at.as_str(), n), ("a:1", 3));
        assert_eq!(
            tried,
            vec![
                ("a:1".to_string(), None),
                ("c:1".to_string(), Some("redirects=1".to_string())),
                ("a:1".to_string(), Some("redirects=1".to_string())),
            ]
        );
        assert_eq!(r.redirects_followed.get(), 1);
        // Accepted: the redirect count starts again.
        assert_eq!(r.lock().capability(), None);
    }

    /// After a lost session the lost target is dialled last and a failed round waits the
    /// backoff (paused clock: the wait is observable as elapsed time).
    #[tokio::test(start_paused = true)]
    async fn the_lost_target_goes_last_and_rounds_back_off() {
        let mut r = redialer(&["a:1", "b:1"]);
        let cancel = CancellationToken::new();
        let timeouts = (Duration::from_secs(10), Duration::from_secs(2));
        let open = |t: String, _: Option<String>, _: Duration| async move {
            Dial::<String, &str>::Open(t)
        };
        let (first, _) = r.connect(&cancel, timeouts, open).await.unwrap();
        assert_eq!(first, "a:1");
        assert!(!r.ended("a:1"));
        let start = tokio::time::Instant::now();
        let mut order = Vec::new();
        let (second, _) = r
            .connect(&cancel, timeouts, |t, _, _| {
                order.push(t.clone());
                async move { Dial::<String, &str>::Open(t) }
            })
            .await
            .unwrap();
        assert_eq!(second, "b:1");
        assert_eq!(order, ["b:1"]);
        assert!(start.elapsed() >= Duration::from_millis(100), "backed off");
        // Cancelled while waiting: `None`.
        cancel.cancel();
        let none = r.connect(&cancel, timeouts, open).await;
        assert!(none.is_none());
    }
}
