//! The audit log (`docs/AUTH.md`, "Audit log"): one JSON line per admission decision
//! (admitted or refused, with the reason), per credential used, and per admin request for
//! tenant data or a change of state — who (node id, credential id and name), what, when,
//! from where.
//!
//! Events are `tracing` events of target [`TARGET`] at level INFO, so emitting one costs a
//! disabled-callsite check when no audit sink is configured. `macula` routes that target to
//! `audit.file` (a path, or `stdout`) through a bounded, non-blocking writer (lines beyond
//! its queue are dropped and counted by the writer, never blocking a connection) that rotates
//! the file at `audit.max_bytes` ([`SizeRotating`]: one previous file, `<file>.1`, is kept).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::auth::Claims;
use crate::wire::NodeId;

/// The `tracing` target of audit events.
pub const TARGET: &str = "macula::audit";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An admission decision at `connect`: `admitted` is `Ok(claims)` (the credential used,
/// `None` in an open realm) or `Err(reason)` (a `macula_connections_rejected_total` reason).
pub fn admission(
    remote: SocketAddr,
    realm: &str,
    role: &str,
    node_id: &NodeId,
    admitted: Result<Option<&Claims>, &str>,
) {
    let node = crate::dht::Id(*node_id).to_string();
    match admitted {
        Ok(claims) => tracing::info!(
            target: TARGET,
            event = "admission",
            decision = "admitted",
            %remote,
            realm,
            role,
            node_id = %node,
            credential_id = claims.map(|c| hex(&c.id)).unwrap_or_default(),
            credential_name = claims.map(|c| c.name.as_str()).unwrap_or(""),
            credential_expires = claims.map(|c| c.expires_at).unwrap_or(0),
        ),
        Err(reason) => tracing::info!(
            target: TARGET,
            event = "admission",
            decision = "refused",
            reason,
            %remote,
            realm,
            role,
            node_id = %node,
        ),
    }
}

/// A live session closed because its credential `id` was revoked.
pub fn revoked(remote: SocketAddr, id: &[u8; 16]) {
    tracing::info!(
        target: TARGET,
        event = "revocation",
        decision = "closed",
        %remote,
        credential_id = hex(id),
    );
}

/// A revocation list that peer `peer` sent on a link of `realm`: `Ok(closed)` when it was
/// put in force (version `seq`, `closed` live sessions closed here), `Err(reason)` when it was
/// refused as a forgery (`bad_signature`, `unknown_issuer`; `seq` is then 0).
pub fn revocation_list(peer: &NodeId, realm: &str, seq: u64, decision: Result<usize, &str>) {
    let node = crate::dht::Id(*peer).to_string();
    match decision {
        Ok(closed) => tracing::info!(
            target: TARGET,
            event = "revocation_list",
            decision = "applied",
            node_id = %node,
            realm,
            seq,
            closed,
        ),
        Err(reason) => tracing::info!(
            target: TARGET,
            event = "revocation_list",
            decision = "refused",
            reason,
            node_id = %node,
            realm,
        ),
    }
}

/// A request refused by the session's permissions (`docs/AUTH.md`, "Permissions"):
/// `action` on `name` by the holder of credential `grant`.
pub fn denied(grant: &crate::auth::Grant, action: crate::auth::Action, name: &str) {
    tracing::info!(
        target: TARGET,
        event = "permission",
        decision = "denied",
        action = action.as_str(),
        name,
        remote = %grant.remote,
        realm = %grant.realm,
        role = grant.role.as_str(),
        credential_id = hex(&grant.credential_id),
        credential_name = %grant.name,
    );
}

/// A gossip state refused because it claims entries of this process's own CRDT actor that
/// it never wrote (`docs/AUTH.md`, threat model): sent by `peer` for store `scope` of
/// `realm`; `key` is the first forged key.
pub fn crdt_forged(peer: &[u8; 32], realm: &str, scope: &str, key: &str) {
    tracing::info!(
        target: TARGET,
        event = "crdt",
        decision = "refused",
        reason = "forged_actor",
        node_id = hex(peer),
        realm,
        scope,
        key,
    );
}

/// An admin request for tenant data or a change of state (`/state`, `/fleet`, `/drain`).
pub fn admin(remote: SocketAddr, method: &str, path: &str, allowed: bool) {
    tracing::info!(
        target: TARGET,
        event = "admin",
        decision = if allowed { "allowed" } else { "refused" },
        %remote,
        method,
        path,
    );
}

/// A file writer that starts over when the file would exceed `max_bytes`: the current file
/// becomes `<path>.1` (replacing an older one) and a new file is opened, so the log takes at
/// most about twice `max_bytes` on disk.
pub struct SizeRotating {
    path: PathBuf,
    max_bytes: u64,
    file: File,
    written: u64,
}

impl SizeRotating {
    /// Opens (appends to) `path`. Errors: the file cannot be opened.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<SizeRotating> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(SizeRotating {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            file,
            written,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for SizeRotating {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_rotates_at_its_bound_and_keeps_one_previous() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut w = SizeRotating::open(&path, 100).unwrap();
        let line = [b'x'; 39];
        for _ in 0..7 {
            w.write_all(&line).unwrap();
            w.write_all(b"\n").unwrap();
        }
        let now = std::fs::metadata(&path).unwrap().len();
        let prev = std::fs::metadata(dir.path().join("audit.log.1"))
            .unwrap()
            .len();
        assert!(now <= 100 && prev <= 100, "{now} / {prev}");
        assert_eq!((now + prev) % 40, 0, "whole lines only");
        // Reopening appends.
        drop(w);
        let mut w = SizeRotating::open(&path, 1000).unwrap();
        w.write_all(b"y\n").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), now + 2);
    }
}
