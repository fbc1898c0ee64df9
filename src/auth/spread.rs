//! How revocation lists spread (`docs/AUTH.md`, "Revocation"; `docs/PROTOCOL.md` §5.30):
//! every node uplink, mesh link, bridge child link, parent link and fleet peer link is
//! registered here with its realm and control queue while it is up ([`Auth::revocation_link`]).
//!
//! - At link-up the list in force for the link's realm is queued to the peer, so a process
//!   that restarts or joins late catches up.
//! - A `revocation_list` frame from a peer ([`Auth::on_revocation_list`]) is verified against
//!   the realm's operator keys; a list that supersedes the one in force is applied (live
//!   sessions of the credentials it names are closed) and queued to every *other* link of the
//!   realm. The `seq` check stops the flood: a process passes each list on at most once.
//! - A list read from `auth.revocation_file` is passed on the same way
//!   ([`super::watch_revocations`]).
//!
//! Queuing is best effort: a full control queue drops the frame (counted in
//! `macula_revocation_frames_dropped_total`); the next link-up or the next newer list repairs
//! it. Application clients are never registered: they neither send nor receive lists.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::revocation::{RevocationError, Revocations};
use super::Auth;
use crate::metrics::Metrics;
use crate::session::Outbound;
use crate::wire::{Frame, NodeId, RawFrame, RevocationList, WireError};

/// The registered links, by token.
#[derive(Debug, Default)]
pub(super) struct Links {
    map: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    realm: Arc<str>,
    ctrl: mpsc::Sender<Outbound>,
}

impl Links {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A link registered for the spread of revocation lists; unregistered when dropped (keep it
/// for the session's life).
#[derive(Debug)]
pub struct RevocationLink {
    links: Arc<Links>,
    token: u64,
    realm: Arc<str>,
    peer: NodeId,
}

impl Drop for RevocationLink {
    fn drop(&mut self) {
        self.links.lock().remove(&self.token);
    }
}

impl Auth {
    /// Registers a link of `realm` to `peer` (its proven node id) whose control queue is
    /// `ctrl`, and queues the realm's list in force on it. Call it once the session is
    /// established (after `connected` is queued or written); keep the result for the
    /// session's life. Never for a client session.
    pub fn revocation_link(
        &self,
        realm: &str,
        peer: NodeId,
        ctrl: &mpsc::Sender<Outbound>,
        metrics: &Metrics,
    ) -> RevocationLink {
        let realm: Arc<str> = Arc::from(realm);
        let token = self.spread.next.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            realm: realm.clone(),
            ctrl: ctrl.clone(),
        };
        // Registered before the list is read: a list applied meanwhile is either read here
        // or passed on to this link (or both: the peer then counts one `stale`).
        self.spread.lock().insert(token, entry);
        if let Some(bytes) = self.revocation_list(&realm) {
            queue(ctrl, &frame(bytes), metrics);
        }
        RevocationLink {
            links: self.spread.clone(),
            token,
            realm,
            peer,
        }
    }

    /// Handles a `revocation_list` frame that arrived on `from`: verifies the list against
    /// the operator keys of its realm, which must be the link's; applies it if it supersedes
    /// the list in force ([`Auth::apply_revocations`]) and queues it to every other link of
    /// the realm. Every list is counted in `macula_revocation_lists_total{outcome}`; an
    /// applied one, and one with a bad signature or an unknown issuer, is audited. Errors:
    /// the body does not decode ([`WireError`]: answer it like any malformed body); a list
    /// that decodes but is refused is no error (non-fatal, counted, not answered).
    pub fn on_revocation_list(
        &self,
        from: &RevocationLink,
        raw: &RawFrame,
        metrics: &Metrics,
    ) -> Result<(), WireError> {
        let body = match raw.decode()? {
            Frame::RevocationList(b) => b,
            _ => unreachable!("decode follows the header type"),
        };
        let peer = crate::dht::Id(from.peer);
        let list = match Revocations::verify(&body.list, &self.admission.operators) {
            Ok(l) => l,
            Err(e) => {
                metrics.revocation.list(e.reason());
                match &e {
                    RevocationError::BadSignature | RevocationError::UnknownIssuer(_) => {
                        crate::audit::revocation_list(&from.peer, &from.realm, 0, Err(e.reason()));
                        tracing::warn!(%peer, error = %e, "revocation list from a peer refused");
                    }
                    _ => tracing::debug!(%peer, error = %e, "revocation list from a peer ignored"),
                }
                return Ok(());
            }
        };
        if *list.realm != *from.realm {
            metrics.revocation.list("wrong_realm");
            tracing::debug!(%peer, realm = %list.realm, "revocation list of another realm ignored");
            return Ok(());
        }
        let seq = list.seq;
        let applied = self.apply_revocations(vec![list]);
        if applied.newer.is_empty() {
            metrics.revocation.list("stale");
            return Ok(());
        }
        metrics.revocation.list("applied");
        metrics
            .connections_revoked_total
            .inc_by(applied.closed as u64);
        crate::audit::revocation_list(&from.peer, &from.realm, seq, Ok(applied.closed));
        tracing::info!(%peer, realm = %from.realm, seq, closed = applied.closed, "revocation list from a peer in force; passing it on");
        for (realm, bytes) in applied.newer {
            self.spread(&realm, bytes, Some(from.token), metrics);
        }
        Ok(())
    }

    /// Queues the list `bytes` of `realm` to every registered link of that realm but
    /// `except` (the link it came from).
    pub(super) fn spread(&self, realm: &str, bytes: Bytes, except: Option<u64>, metrics: &Metrics) {
        let f = frame(bytes);
        let targets: Vec<mpsc::Sender<Outbound>> = self
            .spread
            .lock()
            .iter()
            .filter(|(t, e)| Some(**t) != except && *e.realm == *realm)
            .map(|(_, e)| e.ctrl.clone())
            .collect();
        for ctrl in &targets {
            queue(ctrl, &f, metrics);
        }
    }
}

/// The encoded `revocation_list` frame carrying `list`.
fn frame(list: Bytes) -> Bytes {
    Frame::RevocationList(RevocationList { list }).to_bytes()
}

/// Queues `frame` on `ctrl` without waiting; a full (or closed) queue drops it, counted.
fn queue(ctrl: &mpsc::Sender<Outbound>, frame: &Bytes, metrics: &Metrics) {
    match ctrl.try_send(Outbound::Frame(frame.clone())) {
        Ok(()) => metrics.revocation.frames_sent_total.inc(),
        Err(_) => metrics.revocation.frames_dropped_total.inc(),
    }
}

#[cfg(test)]
mod tests;
