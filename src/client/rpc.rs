//! RPC in the client: providing procedures ([`Client::register`]) and calling them
//! ([`Client::call`]). Design: `docs/DISCOVERY.md` ("Client API", "Calls"); wire bodies:
//! `docs/PROTOCOL.md` §5.12–§5.15, semantics §13.
//!
//! Provider side: the client keeps a map procedure → handler. A `call` from the node runs
//! its handler in a task of the client's tracker, at most
//! [`ClientOptions::rpc_max_handlers`](super::ClientOptions::rpc_max_handlers) at once
//! (beyond that the call is answered `OVERLOADED` at once), and the outcome goes back as a
//! `reply` with the node's `call_id`.
//!
//! Caller side: each `call` gets a client-unique `call_id` and a waiter in a bounded table;
//! the reader hands the matching `reply` to it. A reply nobody waits for any more (the call
//! timed out) is dropped and counted ([`ClientStats::late_replies`](super::ClientStats)).
//!
//! Sessions: every (re)established session gets an epoch. When a session ends, every call
//! sent on it fails with [`CallError::Closed`] and replies of handlers that were started on
//! it are dropped (the node forgot those calls; their `call_id`s may be reused on the new
//! connection). On a new session the client registers every procedure it holds again
//! before anything else it queued, so calls made during the outage reach a node that
//! already knows this client's procedures.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::sync::{oneshot, Semaphore};

use super::{Client, ClientError, Inner};
use crate::session::Outbound;
use crate::wire::{
    self, Call, Frame, Header, MessageType, RawFrame, Register, Reply, RpcError, Unregister,
    WireError,
};

/// Default most handler tasks a client runs at once
/// ([`ClientOptions::rpc_max_handlers`](super::ClientOptions::rpc_max_handlers)); a call
/// from the node beyond it is answered [`RpcError::OVERLOADED`].
pub const DEFAULT_MAX_HANDLERS: usize = 1024;

/// Default most calls a client has in flight at once
/// ([`ClientOptions::rpc_max_pending`](super::ClientOptions::rpc_max_pending)), as the
/// node's `rpc.max_pending`; [`Client::call`] beyond it fails with [`CallError::Overloaded`].
pub const DEFAULT_MAX_PENDING_CALLS: usize = crate::defaults::RPC_MAX_PENDING;

/// Why [`Client::call`] failed. Built from the node's `reply` error with
/// [`CallError::from_rpc`], or by the client itself (`Timeout`, `Closed`, `Overloaded`,
/// `Invalid`). Codes: `docs/PROTOCOL.md` §5.13.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No provider is registered for the procedure anywhere the node could look
    /// (`NO_PROVIDER`, 1).
    #[error("no provider for the procedure")]
    NoProvider,
    /// No reply within the call's timeout: the client's own timer, or the node's
    /// (`TIMEOUT`, 2).
    #[error("call timed out")]
    Timeout,
    /// Every provider the node tried failed or was unreachable (`ALL_PROVIDERS_FAILED`, 3,
    /// and `UNREACHABLE`, 7).
    #[error("every provider tried failed")]
    AllProvidersFailed,
    /// The handler ran and failed (`REMOTE`, 4), or another error code: `HOPS_EXCEEDED`
    /// (5), `UNKNOWN_PROCEDURE` (6) or an application code.
    #[error("remote error {code}: {message}")]
    Remote {
        /// The `reply` error code.
        code: u16,
        /// The `reply` error message (the handler's text for `REMOTE`).
        message: String,
    },
    /// The client was closed, or the connection to the node was lost while the call was
    /// in flight (it may or may not have run).
    #[error("connection closed")]
    Closed,
    /// Too many calls in flight: at this client
    /// ([`ClientOptions::rpc_max_pending`](super::ClientOptions::rpc_max_pending)), or at
    /// a node on the way (`OVERLOADED`, 8). Retry later.
    #[error("too many calls in flight")]
    Overloaded,
    /// The call was refused before it ran: bad procedure name, zero timeout, arguments too
    /// large for the node's max frame size (checked by the client), or `INVALID` (9) from a
    /// node. The text says which.
    #[error("invalid call: {0}")]
    Invalid(String),
    /// The caller's credential does not permit the call (or, for a state write, the key):
    /// `PERMISSION_DENIED` (10), `docs/AUTH.md`. The text names the action and name.
    #[error("{0}")]
    PermissionDenied(String),
    /// A bound of the node's replicated store refused a state write: `LIMIT_EXCEEDED` (11),
    /// `docs/ERRORS.md`. The text names the bound.
    #[error("{0}")]
    LimitExceeded(String),
}

impl CallError {
    /// Maps a `reply` error to a [`CallError`]: 1 → `NoProvider`, 2 → `Timeout`, 3 and 7 →
    /// `AllProvidersFailed`, 8 → `Overloaded`, 9 → `Invalid(message)`, 10 →
    /// `PermissionDenied(message)`, 11 → `LimitExceeded(message)`, anything else →
    /// `Remote { code, message }`.
    pub fn from_rpc(e: RpcError) -> CallError {
        match e.code {
            RpcError::NO_PROVIDER => CallError::NoProvider,
            RpcError::TIMEOUT => CallError::Timeout,
            RpcError::ALL_PROVIDERS_FAILED | RpcError::UNREACHABLE => CallError::AllProvidersFailed,
            RpcError::OVERLOADED => CallError::Overloaded,
            RpcError::INVALID => CallError::Invalid(e.message),
            RpcError::PERMISSION_DENIED => CallError::PermissionDenied(e.message),
            RpcError::LIMIT_EXCEEDED => CallError::LimitExceeded(e.message),
            code => CallError::Remote {
                code,
                message: e.message,
            },
        }
    }

    /// A stable snake_case name of the variant, for reports and metric labels:
    /// `"no_provider"`, `"timeout"`, `"all_providers_failed"`, `"remote"`, `"closed"`,
    /// `"overloaded"`, `"invalid"` or `"permission_denied"`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::NoProvider => "no_provider",
            CallError::Timeout => "timeout",
            CallError::AllProvidersFailed => "all_providers_failed",
            CallError::Remote { .. } => "remote",
            CallError::Closed => "closed",
            CallError::Overloaded => "overloaded",
            CallError::Invalid(_) => "invalid",
            CallError::PermissionDenied(_) => "permission_denied",
            CallError::LimitExceeded(_) => "limit_exceeded",
        }
    }
}

/// A procedure this client provides, returned by [`Client::register`]. Withdraw it with
/// [`unregister`](Self::unregister); dropping it withdraws it too, best effort (the
/// `unregister` frame is queued without waiting for the node's answer).
///
/// Registering the same procedure again on the same client replaces the handler: the
/// older `Registration` then no longer owns it, and unregistering or dropping it does
/// nothing.
#[must_use = "dropping a Registration unregisters the procedure"]
pub struct Registration {
    procedure: String,
    id: u64,
    inner: Arc<Inner>,
    active: bool,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("procedure", &self.procedure)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// The procedure name.
    pub fn procedure(&self) -> &str {
        &self.procedure
    }

    /// Removes the handler and tells the node (`unregister`), waiting for its `suback`.
    /// Calls that arrive meanwhile are answered `UNKNOWN_PROCEDURE`, on which the caller's
    /// node fails over to another provider. Returns at once if a newer registration of the
    /// same procedure replaced this one.
    ///
    /// Errors: [`ClientError::Refused`] (the node answered an `error` frame),
    /// [`ClientError::Timeout`] (no `suback` within 10 s), [`ClientError::Closed`].
    pub async fn unregister(mut self) -> Result<(), ClientError> {
        self.active = false;
        if !self
            .inner
            .rpc
            .remove_handler(&self.procedure, self.id, None)
        {
            return Ok(());
        }
        let corr = self.inner.next_corr.fetch_add(1, Ordering::Relaxed);
        let frame = unregister_frame(corr, &self.procedure);
        self.inner.request(corr, frame).await.map(|_| ())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.active
            && self
                .inner
                .rpc
                .remove_handler(&self.procedure, self.id, None)
        {
            let corr = self.inner.next_corr.fetch_add(1, Ordering::Relaxed);
            let frame = unregister_frame(corr, &self.procedure);
            let _ = self.inner.ctrl.try_send(Outbound::Frame(frame.to_bytes()));
        }
    }
}

impl Client {
    /// Provides `procedure` (1–255 bytes of printable ASCII, e.g. `io.example.echo`) from
    /// this client: `handler` is called with the arguments of every call the node routes
    /// here, and what it returns becomes the `reply`. Resolves when the node confirms the
    /// `register` with a `suback`; the client registers it again after every reconnect.
    ///
    /// Each call runs `handler` in its own task (at most
    /// [`ClientOptions::rpc_max_handlers`](super::ClientOptions::rpc_max_handlers) at once;
    /// beyond that the call is answered `OVERLOADED`). A handler still running when the
    /// call's `timeout_ms` has passed is dropped (the caller stopped waiting), as is one
    /// running when the client closes. An `Err` whose code is one of the known RPC codes
    /// (1–9, see [`RpcError`]) is sent as is; any other code is sent as `REMOTE` (4) with
    /// the handler's message. A panicking handler is answered `REMOTE`.
    ///
    /// Registering a procedure this client already provides replaces its handler.
    ///
    /// Errors: [`ClientError::InvalidProcedure`], [`ClientError::Refused`] (the node
    /// answered an `error` frame), [`ClientError::Timeout`] (no `suback` within 10 s),
    /// [`ClientError::Closed`]. On error the previous handler (if any) is kept.
    pub async fn register<F, Fut>(
        &self,
        procedure: &str,
        handler: F,
    ) -> Result<Registration, ClientError>
    where
        F: Fn(Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RpcError>> + Send + 'static,
    {
        crate::rpc::validate_procedure(procedure).map_err(|reason| {
            ClientError::InvalidProcedure {
                procedure: procedure.into(),
                reason,
            }
        })?;
        let inner = &self.inner;
        if inner.cancel.is_cancelled() {
            return Err(ClientError::Closed);
        }
        let handler: Handler = Arc::new(move |args| Box::pin(handler(args)) as HandlerFuture);
        let id = inner.rpc.next_reg.fetch_add(1, Ordering::Relaxed);
        let previous = inner
            .rpc
            .handlers()
            .insert(procedure.to_string(), (id, handler));
        let had_previous = previous.is_some();
        let corr = inner.next_corr.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::Register(Register {
            correlation_id: corr,
            procedures: vec![procedure.to_string()],
        });
        match inner.request(corr, frame).await {
            Ok(_) => Ok(Registration {
                procedure: procedure.to_string(),
                id,
                inner: inner.clone(),
                active: true,
            }),
            Err(e) => {
                let removed = inner.rpc.remove_handler(procedure, id, previous);
                // The node may hold the registration (timeout, lost session): withdraw it.
                if removed && !had_previous && !matches!(e, ClientError::Refused { .. }) {
                    let corr = inner.next_corr.fetch_add(1, Ordering::Relaxed);
                    let frame = unregister_frame(corr, procedure);
                    let _ = inner.ctrl.try_send(Outbound::Frame(frame.to_bytes()));
                }
                Err(e)
            }
        }
    }

    /// Calls `procedure` with `args` and waits at most `timeout` for the result. The node
    /// picks a provider (`docs/DISCOVERY.md`, "Calls"); its `timeout_ms` is `timeout`
    /// rounded up to whole milliseconds (at most `u32::MAX`). A call made while the client
    /// is reconnecting is sent once the session is back (after the client's procedures are
    /// registered again), if its timeout has not passed by then.
    ///
    /// Errors: [`CallError::Invalid`] (bad name, zero `timeout`, or a `call` frame larger
    /// than the node's max frame size: `args` must stay a few hundred bytes below it),
    /// [`CallError::Overloaded`] (too many calls in flight here or at the node),
    /// [`CallError::Timeout`], [`CallError::Closed`] (client closed, or the connection was
    /// lost while the call was in flight), and the node's answers as mapped by
    /// [`CallError::from_rpc`].
    pub async fn call(
        &self,
        procedure: &str,
        args: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        let rpc = &self.inner.rpc;
        rpc.calls.fetch_add(1, Ordering::Relaxed);
        let r = self.call_once(procedure, args, timeout).await;
        if r.is_err() {
            rpc.call_errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    async fn call_once(
        &self,
        procedure: &str,
        args: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        crate::rpc::validate_procedure(procedure).map_err(CallError::Invalid)?;
        self.call_unchecked(procedure, args, timeout).await
    }

    /// Updates the replicated key `key` of the client's cluster (`docs/GOSSIP.md`): an OR-Set
    /// add or remove, a register write, a counter increment, or the removal of the key
    /// ([`crate::crdt::Op::Delete`]). The first operation on a key fixes its type (while a
    /// removed key's tombstone is kept, `docs/GOSSIP.md`, "Removing a key"). The change is applied on the node at once and reaches every node of the
    /// cluster by gossip (about a second), and the bridge levels in aggregated form.
    ///
    /// Errors: [`CallError::Invalid`] when the key is not a valid
    /// application key (1–200 bytes, no leading `$`), holds another type, or a limit is hit;
    /// [`CallError::Timeout`], [`CallError::Closed`] as for calls.
    pub async fn crdt_update(&self, key: &str, op: crate::crdt::Op) -> Result<(), CallError> {
        let args = rmp_serde::to_vec_named(&crate::state::UpdateArgs::new(key, &op))
            .map_err(|e| CallError::Invalid(e.to_string()))?;
        self.call_unchecked(
            crate::state::UPDATE_PROCEDURE,
            Bytes::from(args),
            crate::defaults::CRDT_CALL_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    /// Writes `value` to the LWW-Register `key` (see [`Client::crdt_update`]).
    pub async fn put(&self, key: &str, value: Bytes) -> Result<(), CallError> {
        self.crdt_update(key, crate::crdt::Op::Put(value)).await
    }

    /// Removes the key `key` whatever its type (see [`Client::crdt_update`] and
    /// [`crate::crdt::Op::Delete`]): it then reads as absent on every node of the cluster and
    /// no longer counts against the store's or this client's bounds. A write the removal had
    /// not seen (made concurrently on another node) still counts. Removing an absent key
    /// succeeds and changes nothing.
    pub async fn delete(&self, key: &str) -> Result<(), CallError> {
        self.crdt_update(key, crate::crdt::Op::Delete).await
    }

    /// Reads `key` as the node sees it now: `None` when the key does not exist.
    ///
    /// Errors: as [`Client::crdt_update`].
    pub async fn get(&self, key: &str) -> Result<Option<crate::crdt::Value>, CallError> {
        let args = rmp_serde::to_vec_named(&crate::state::GetArgs { key: key.into() })
            .map_err(|e| CallError::Invalid(e.to_string()))?;
        let reply = self
            .call_unchecked(
                crate::state::GET_PROCEDURE,
                Bytes::from(args),
                crate::defaults::CRDT_CALL_TIMEOUT,
            )
            .await?;
        let v: Option<crate::state::WireValue> = rmp_serde::from_slice(&reply)
            .map_err(|e| CallError::Invalid(format!("bad reply from the node: {e}")))?;
        Ok(v.map(Into::into))
    }

    /// A call without the procedure-name check (the node's own `$crdt.*` procedures).
    async fn call_unchecked(
        &self,
        procedure: &str,
        args: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        if timeout.is_zero() {
            return Err(CallError::Invalid("timeout must be positive".into()));
        }
        let inner = &self.inner;
        let rpc = &inner.rpc;
        let timeout_ms = u32::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(u32::MAX);
        let call_id = rpc.next_call.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::Call(Call {
            call_id,
            procedure: procedure.to_string(),
            args,
            timeout_ms,
            origin: [0; 32],
            hops: 0,
            target: None,
        });
        let mut buf = BytesMut::with_capacity(frame.encoded_len());
        // Headroom for what the hops add (the target, larger call ids and hop counts).
        frame
            .encode_limited(
                &mut buf,
                inner.max_frame.saturating_sub(crate::rpc::ROUTING_HEADROOM),
            )
            .map_err(|e| match e {
                WireError::FrameTooLarge { len, max } => CallError::Invalid(format!(
                    "call body of {len} bytes exceeds the node's max frame size of {max} bytes"
                )),
                other => CallError::Invalid(other.to_string()),
            })?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = rpc.pending();
            if pending.len() >= rpc.max_pending {
                return Err(CallError::Overloaded);
            }
            pending.insert(call_id, tx);
        }
        // Removes the waiter however this future ends (reply, timeout, caller dropped it).
        let _guard = PendingGuard { rpc, call_id };
        // After the insert: the session manager cancels before it fails the waiters.
        if inner.cancel.is_cancelled() {
            return Err(CallError::Closed);
        }
        let exchange = async {
            inner
                .ctrl
                .send(Outbound::Frame(buf.freeze()))
                .await
                .map_err(|_| CallError::Closed)?;
            rx.await.map_err(|_| CallError::Closed)?
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }
}

/// A registered handler, type-erased.
type Handler = Arc<dyn Fn(Bytes) -> HandlerFuture + Send + Sync>;
type HandlerFuture = Pin<Box<dyn Future<Output = Result<Bytes, RpcError>> + Send>>;
type Waiter = oneshot::Sender<Result<Bytes, CallError>>;

/// The RPC state of one client, shared by the API, the reader and the session manager.
pub(super) struct RpcState {
    /// procedure → (registration id, handler).
    handlers: Mutex<HashMap<String, (u64, Handler)>>,
    next_reg: AtomicU64,
    /// call_id → waiter of a call this client made.
    pending: Mutex<HashMap<u64, Waiter>>,
    next_call: AtomicU64,
    max_pending: usize,
    max_handlers: usize,
    /// One permit per running handler task.
    slots: Arc<Semaphore>,
    /// Epoch of the current session; a handler's reply is queued only while the session
    /// it was called on is current (checked and queued under this lock).
    epoch: Mutex<u64>,
    pub(super) calls: AtomicU64,
    pub(super) call_errors: AtomicU64,
    pub(super) handled: AtomicU64,
    pub(super) late_replies: AtomicU64,
}

impl RpcState {
    pub(super) fn new(max_handlers: usize, max_pending: usize) -> Self {
        let max_handlers = max_handlers.max(1);
        RpcState {
            handlers: Mutex::new(HashMap::new()),
            next_reg: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            next_call: AtomicU64::new(1),
            max_pending: max_pending.max(1),
            max_handlers,
            slots: Arc::new(Semaphore::new(max_handlers)),
            epoch: Mutex::new(0),
            calls: AtomicU64::new(0),
            call_errors: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            late_replies: AtomicU64::new(0),
        }
    }

    fn handlers(&self) -> MutexGuard<'_, HashMap<String, (u64, Handler)>> {
        self.handlers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u64, Waiter>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes `procedure`'s handler if registration `id` still owns it, putting `restore`
    /// back in its place if given. True if it was removed.
    fn remove_handler(&self, procedure: &str, id: u64, restore: Option<(u64, Handler)>) -> bool {
        let mut handlers = self.handlers();
        if handlers.get(procedure).map(|(i, _)| *i) != Some(id) {
            return false;
        }
        match restore {
            Some(prev) => handlers.insert(procedure.to_string(), prev),
            None => handlers.remove(procedure),
        };
        true
    }

    /// Every procedure held, for re-registering after a reconnect.
    pub(super) fn procedures(&self) -> Vec<String> {
        self.handlers().keys().cloned().collect()
    }

    /// A new session starts: replies of handlers called on earlier sessions are dropped.
    pub(super) fn begin_session(&self) {
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    fn current_epoch(&self) -> u64 {
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session ended: every call in flight fails with [`CallError::Closed`].
    pub(super) fn fail_calls(&self) {
        let waiters: Vec<Waiter> = self.pending().drain().map(|(_, w)| w).collect();
        for w in waiters {
            let _ = w.send(Err(CallError::Closed));
        }
    }

    /// The client is done: drop the handlers (they may hold clones of the client).
    pub(super) fn clear_handlers(&self) {
        let handlers = std::mem::take(&mut *self.handlers());
        drop(handlers);
    }

    /// A `reply` arrived: hand it to its waiter, or drop and count it.
    pub(super) fn on_reply(&self, reply: Reply) {
        let waiter = self.pending().remove(&reply.call_id);
        match waiter {
            Some(w) => {
                let _ = w.send(reply.result.map_err(CallError::from_rpc));
            }
            None => {
                self.late_replies.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(call_id = reply.call_id, "reply to an unknown call dropped");
            }
        }
    }

    /// Whether a control frame queued before a reconnect is still worth sending on the new
    /// session: replies are not (the node forgot those calls), calls only while their caller
    /// still waits (the others were failed with `Closed` when the session ended).
    pub(super) fn keep_on_resume(&self, frame: &Bytes) -> bool {
        match frame.get(1).copied() {
            Some(t) if t == MessageType::Reply as u8 => false,
            Some(t) if t == MessageType::Call as u8 => {
                let Some(head) = frame.first_chunk::<{ wire::HEADER_LEN }>() else {
                    return false;
                };
                let raw = RawFrame {
                    header: Header::decode(head),
                    bytes: frame.clone(),
                };
                match raw.decode() {
                    Ok(Frame::Call(c)) => self.pending().contains_key(&c.call_id),
                    _ => false,
                }
            }
            _ => true,
        }
    }
}

/// `register` frames (correlation id 0, nobody waits for their `suback`) for `procedures`,
/// at most [`wire::MAX_PROCEDURES`] names each.
pub(super) fn register_frames(procedures: &[String]) -> Vec<Bytes> {
    procedures
        .chunks(wire::MAX_PROCEDURES)
        .map(|chunk| {
            Frame::Register(Register {
                correlation_id: 0,
                procedures: chunk.to_vec(),
            })
            .to_bytes()
        })
        .collect()
}

/// A `call` arrived from the node: run its handler in a task, or answer at once
/// (`UNKNOWN_PROCEDURE`, `OVERLOADED`).
pub(super) fn on_call(inner: &Arc<Inner>, call: Call) {
    let rpc = &inner.rpc;
    let handler = rpc.handlers().get(&call.procedure).map(|(_, h)| h.clone());
    let Some(handler) = handler else {
        let e = RpcError::new(
            RpcError::UNKNOWN_PROCEDURE,
            format!("procedure {:?} is not registered here", call.procedure),
        );
        queue_now(inner, call.call_id, Err(e));
        return;
    };
    let Ok(permit) = rpc.slots.clone().try_acquire_owned() else {
        let e = RpcError::new(
            RpcError::OVERLOADED,
            format!("{} handlers already running", rpc.max_handlers),
        );
        queue_now(inner, call.call_id, Err(e));
        return;
    };
    let epoch = rpc.current_epoch();
    let budget = Duration::from_millis(call.timeout_ms.into());
    let call_id = call.call_id;
    let args = call.args;
    let task_inner = inner.clone();
    inner.tasks.spawn(async move {
        let slot = permit;
        let inner = task_inner;
        let run = AssertUnwindSafe(async move { handler(args).await }).catch_unwind();
        let outcome = tokio::select! {
            r = tokio::time::timeout(budget, run) => r,
            _ = inner.cancel.cancelled() => return,
        };
        let result = match outcome {
            Err(_) => {
                tracing::debug!(call_id, "handler outlived the call's timeout; dropped");
                return;
            }
            Ok(Err(_)) => Err(RpcError::new(RpcError::REMOTE, "handler panicked")),
            Ok(Ok(r)) => r.map_err(normalize),
        };
        inner.rpc.handled.fetch_add(1, Ordering::Relaxed);
        let frame = reply_frame(inner.max_frame, call_id, result);
        let Ok(queue) = inner.ctrl.reserve().await else {
            return;
        };
        {
            let current = inner.rpc.epoch.lock().unwrap_or_else(|e| e.into_inner());
            if *current == epoch {
                queue.send(Outbound::Frame(frame));
            } else {
                tracing::debug!(call_id, "reply to a call of a previous session dropped");
            }
        }
        // Held until the reply is queued, so waiting for queue room counts as running.
        drop(slot);
    });
}

/// Queues a reply from the reader without waiting; if the control queue is full the node
/// times the call out.
fn queue_now(inner: &Inner, call_id: u64, result: Result<Bytes, RpcError>) {
    let frame = reply_frame(inner.max_frame, call_id, result);
    if inner.ctrl.try_send(Outbound::Frame(frame)).is_err() {
        tracing::debug!(call_id, "control queue full; reply dropped");
    }
}

/// A handler error with a code that is not one of the known RPC codes becomes `REMOTE`.
fn normalize(e: RpcError) -> RpcError {
    // Only REMOTE and INVALID pass through from a handler: the routing codes (timeout,
    // unreachable, unknown procedure, overloaded, ...) would make the caller's node fail over
    // and run the call again elsewhere, though this handler already ran.
    if e.code == RpcError::REMOTE || e.code == RpcError::INVALID {
        e
    } else {
        RpcError::new(RpcError::REMOTE, e.message)
    }
}

/// The encoded `reply`; a result too large for the node's max frame size is replaced by a
/// `REMOTE` error saying so.
fn reply_frame(max_frame: u32, call_id: u64, result: Result<Bytes, RpcError>) -> Bytes {
    let frame = Frame::Reply(Reply { call_id, result });
    let mut buf = BytesMut::with_capacity(frame.encoded_len());
    match frame.encode_limited(
        &mut buf,
        max_frame.saturating_sub(crate::rpc::ROUTING_HEADROOM),
    ) {
        Ok(()) => buf.freeze(),
        Err(e) => Frame::Reply(Reply {
            call_id,
            result: Err(RpcError::new(RpcError::REMOTE, format!("reply: {e}"))),
        })
        .to_bytes(),
    }
}

fn unregister_frame(corr: u64, procedure: &str) -> Frame {
    Frame::Unregister(Unregister {
        correlation_id: corr,
        procedures: vec![procedure.to_string()],
    })
}

/// Removes a call's waiter when the call ends, however it ends.
struct PendingGuard<'a> {
    rpc: &'a RpcState,
    call_id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.rpc.pending().remove(&self.call_id);
    }
}
