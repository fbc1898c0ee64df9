//! Admin HTTP/1.1 listener: `/metrics` and health probes, apart from the QUIC data plane.
//!
//! | request | response |
//! |---|---|
//! | `GET /metrics` | 200, Prometheus text format 0.0.4 ([`crate::metrics::Metrics::encode_text`]) |
//! | `GET /health/live` | 200 `ok` while the process serves HTTP at all (liveness) |
//! | `GET /health/ready` | 200 `ready` when [`AdminState::ready`] is set, else 503 `not ready` |
//! | `GET /state` | 200, the replicated state as JSON ([`AdminState::state`]) † |
//! | `GET /fleet` | 200, the fleet view as JSON ([`AdminState::fleet`]; `{}` outside a fleet) † |
//! | `POST /drain` | 202 `draining` and starts a fleet worker's drain ([`AdminState::drain`]); 404 outside a fleet † |
//! | other path | 404 `not found` |
//!
//! † Tenant data or a change of state: answered to loopback peers, and to others only with
//! `Authorization: Bearer <token>` matching the admin token ([`AdminState::token`]); else
//! 401 `admin token required` (with `WWW-Authenticate: Bearer`), counted in
//! `macula_admin_refused_total`. `/metrics` and `/health/*` stay open for scrapers and probes.
//! | known path, method other than GET/HEAD | 405 `method not allowed`, with `Allow: GET, HEAD` |
//!
//! Each connection is served in a task tracked by a [`TaskTracker`]; on shutdown the listener
//! stops accepting, asks open connections to finish their current request, and waits at most
//! [`defaults::ADMIN_SHUTDOWN_GRACE`] for them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::defaults;
use crate::metrics::{Metrics, TEXT_CONTENT_TYPE};

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Metrics served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Readiness reported by `/health/ready`: set by the mode once its QUIC listener serves
    /// traffic (a node's local clients are served whether or not its uplink is up; watch
    /// `macula_connections_open{role="uplink"}` for that), cleared when it starts draining
    /// (`docs/OPERATIONS.md`).
    pub ready: Arc<AtomicBool>,
    /// The replicated state served at `/state` as JSON, once the mode has started (see
    /// [`crate::server::ServerHandle::state`]); `{}` before.
    pub state: Arc<arc_swap::ArcSwapOption<arc_swap::ArcSwap<serde_json::Value>>>,
    /// The fleet view served at `/fleet` (a worker: members and clusters; a node: its uplink
    /// and owner); `{}` before or outside a fleet.
    pub fleet: Arc<arc_swap::ArcSwapOption<arc_swap::ArcSwap<serde_json::Value>>>,
    /// Cancelled by `POST /drain`: a fleet worker's drain (`None` outside a fleet).
    pub drain: Arc<arc_swap::ArcSwapOption<CancellationToken>>,
    /// SHA-256 of the admin token (`auth.admin_token_file`); `None`: the protected endpoints
    /// answer loopback peers only.
    pub token: Option<[u8; 32]>,
}

/// Shortest admin token accepted, characters.
pub const MIN_TOKEN_LEN: usize = 16;

/// Reads an admin token file (its first line, trimmed) and returns the token's SHA-256.
/// Errors: a message naming the file (unreadable, or a token under [`MIN_TOKEN_LEN`]).
pub fn read_token(path: &std::path::Path) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("admin token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "admin token file {}: the token must be at least {MIN_TOKEN_LEN} characters",
            path.display()
        ));
    }
    Ok(token_digest(token))
}

fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Whether a request from `remote` carrying `authorization` (the header's value) may read
/// tenant data or change state: loopback peers always; others with `Bearer <token>` whose
/// SHA-256 is `token`. (The digests are compared, so timing says nothing about the token.)
fn authorized(remote: SocketAddr, authorization: Option<&str>, token: Option<&[u8; 32]>) -> bool {
    if remote.ip().to_canonical().is_loopback() {
        return true;
    }
    match (token, authorization.and_then(|v| v.strip_prefix("Bearer "))) {
        (Some(want), Some(got)) => *want == token_digest(got.trim()),
        _ => false,
    }
}

/// Errors of the admin listener.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The TCP listen socket could not be bound.
    #[error("cannot bind admin listener on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr` and serves until `shutdown` is cancelled (see the module doc for the routes).
///
/// # Errors
/// [`AdminError::Bind`] if the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    let listener = bind(addr).await?;
    serve_listener(listener, state, shutdown).await
}

/// Binds the admin TCP listener, so callers can learn the port (bind `:0` in tests) before
/// [`serve_listener`].
///
/// # Errors
/// [`AdminError::Bind`] if the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

/// Serves admin requests on `listener` until `shutdown` is cancelled, then stops accepting and
/// waits up to [`defaults::ADMIN_SHUTDOWN_GRACE`] for requests in flight.
///
/// Accept errors (e.g. out of file descriptors) are logged and retried after a short pause; they
/// do not end the listener.
///
/// # Errors
/// None at present; the `Result` leaves room for fatal listener errors.
pub async fn serve_listener(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    let tracker = TaskTracker::new();
    if let Ok(local) = listener.local_addr() {
        tracing::info!(local.addr = %local, "admin listener started");
    }
    loop {
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(defaults::ADMIN_ACCEPT_RETRY) => continue,
                    }
                }
            },
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&req, &state, remote)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(defaults::ADMIN_HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(remote.addr = %remote, error = %e, "admin connection ended with an error");
            }
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(defaults::ADMIN_SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::debug!(
            open = tracker.len(),
            "admin connections still open after the grace period"
        );
    }
    tracing::info!("admin listener stopped");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Private helpers
// ---------------------------------------------------------------------------------------------

fn route(req: &Request<Incoming>, state: &AdminState, remote: SocketAddr) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(
        path,
        "/metrics" | "/health/live" | "/health/ready" | "/state" | "/fleet"
    );
    let protected = matches!(path, "/state" | "/fleet" | "/drain");
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let allowed = !protected || authorized(remote, authorization, state.token.as_ref());
    if protected {
        crate::audit::admin(remote, req.method().as_str(), path, allowed);
    }
    if !allowed {
        state.metrics.admin_refused_total.inc();
        tracing::debug!(remote.addr = %remote, path, "admin request refused: no valid admin token");
        let mut resp = text(StatusCode::UNAUTHORIZED, "admin token required\n");
        resp.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
        return resp;
    }
    if path == "/drain" && req.method() == Method::POST {
        return match &*state.drain.load() {
            Some(token) => {
                token.cancel();
                text(StatusCode::ACCEPTED, "draining\n")
            }
            None => text(StatusCode::NOT_FOUND, "not a fleet worker\n"),
        };
    }
    if !known {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match path {
        "/metrics" => {
            let mut resp = Response::new(Full::new(Bytes::from(state.metrics.encode_text())));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_CONTENT_TYPE));
            resp
        }
        "/health/live" => text(StatusCode::OK, "ok\n"),
        "/state" | "/fleet" => {
            let slot = if path == "/state" {
                &state.state
            } else {
                &state.fleet
            };
            let body = match &*slot.load() {
                Some(json) => serde_json::to_vec_pretty(&**json.load()).unwrap_or_default(),
                None => b"{}".to_vec(),
            };
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        _ if state.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends one raw HTTP/1.1 request and returns (status code, headers, body).
    async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8(buf).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let code = head[9..12].parse().unwrap();
        (code, head.to_ascii_lowercase(), body.to_string())
    }

    async fn start() -> (
        SocketAddr,
        AdminState,
        CancellationToken,
        tokio::task::JoinHandle<Result<(), AdminError>>,
    ) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AdminState {
            fleet: Default::default(),
            drain: Default::default(),
            metrics: Metrics::new(),
            ready: Arc::new(AtomicBool::new(false)),
            state: Default::default(),
            token: None,
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_listener(listener, state.clone(), shutdown.clone()));
        (addr, state, shutdown, task)
    }

    #[test]
    fn tenant_data_needs_loopback_or_the_token() {
        let token = token_digest("0123456789abcdef-secret");
        let far: SocketAddr = "203.0.113.7:5000".parse().unwrap();
        let near: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert!(authorized(near, None, None));
        assert!(authorized(mapped, None, Some(&token)));
        assert!(
            !authorized(far, None, None),
            "no token configured: loopback only"
        );
        assert!(!authorized(far, None, Some(&token)));
        assert!(!authorized(
            far,
            Some("Bearer wrong-token-0000000"),
            Some(&token)
        ));
        assert!(
            !authorized(far, Some("0123456789abcdef-secret"), Some(&token)),
            "not Bearer"
        );
        assert!(authorized(
            far,
            Some("Bearer 0123456789abcdef-secret"),
            Some(&token)
        ));
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "tiny\n").unwrap();
        assert!(read_token(&short).is_err());
        let good = dir.path().join("good");
        std::fs::write(&good, "0123456789abcdef-secret\n").unwrap();
        assert_eq!(read_token(&good), Ok(token));
    }

    #[tokio::test]
    async fn routes_and_readiness() {
        let (addr, state, shutdown, task) = start().await;

        let (code, head, body) = request(addr, "GET", "/health/live").await;
        assert_eq!((code, body.as_str()), (200, "ok\n"));
        assert!(head.contains("content-type: text/plain"));

        let (code, _, body) = request(addr, "GET", "/health/ready").await;
        assert_eq!((code, body.as_str()), (503, "not ready\n"));
        state.ready.store(true, Ordering::Release);
        let (code, _, body) = request(addr, "GET", "/health/ready").await;
        assert_eq!((code, body.as_str()), (200, "ready\n"));

        state.metrics.messages_published_total.inc_by(7);
        let (code, head, body) = request(addr, "GET", "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(body.contains("macula_messages_published_total 7"), "{body}");

        let (code, _, _) = request(addr, "GET", "/nope").await;
        assert_eq!(code, 404);
        let (code, head, _) = request(addr, "POST", "/metrics").await;
        assert_eq!(code, 405);
        assert!(head.contains("allow: get, head"), "{head}");
        let (code, _, body) = request(addr, "HEAD", "/health/live").await;
        assert_eq!((code, body.as_str()), (200, ""));

        shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("stops promptly")
            .unwrap()
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn shutdown_with_an_idle_keep_alive_connection() {
        let (addr, _state, shutdown, task) = start().await;
        // An idle keep-alive connection must not hold the shutdown for long.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(std::str::from_utf8(&buf[..n])
            .unwrap()
            .starts_with("HTTP/1.1 200"));
        shutdown.cancel();
        tokio::time::timeout(defaults::ADMIN_SHUTDOWN_GRACE * 2, task)
            .await
            .expect("stops within the grace period")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn bind_error_names_the_address() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let err = bind(addr).await.unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
