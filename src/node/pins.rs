//! Trust on first use for the uplink (`docs/AUTH.md`, "Trust on first use"): in development
//! TLS mode no certificate is verified, but every bridge proves its node id with its
//! Ed25519 key at `connect` (PROTOCOL §7a). The node remembers the id each uplink address
//! proved first (`data_dir/known_bridges`: one `address node-id-hex` line each) and refuses
//! another there, as SSH does with `known_hosts`, unless told to accept the new one.
//!
//! [`decide`] is pure; [`KnownBridges`] holds the table and persists it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::wire::NodeId;

/// Name of the pin file in the data directory.
pub const FILE: &str = "known_bridges";

/// Most pinned addresses (a redirecting fleet adds its workers' addresses).
pub const MAX_PINS: usize = 1024;

/// What to do with a bridge that proved `got` at an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The pinned id: go on.
    Known,
    /// First contact: pin it and go on.
    Pin,
    /// Another id than the pinned one, accepted by configuration: re-pin and go on.
    Repin,
    /// Another id than the pinned one: refuse the session.
    Refuse,
}

/// The decision for an address pinned to `pinned` (if any) whose bridge proved `got`.
pub fn decide(pinned: Option<&NodeId>, got: &NodeId, accept_new: bool) -> Decision {
    match pinned {
        None => Decision::Pin,
        Some(p) if p == got => Decision::Known,
        Some(_) if accept_new => Decision::Repin,
        Some(_) => Decision::Refuse,
    }
}

/// The pins of one node, loaded from and saved to its data directory.
#[derive(Debug)]
pub struct KnownBridges {
    path: PathBuf,
    pins: Mutex<BTreeMap<String, NodeId>>,
    accept_new: bool,
}

impl KnownBridges {
    /// Loads `data_dir/known_bridges` (absent: no pins; unreadable lines are skipped and
    /// logged). `accept_new` is `node.uplink_accept_new_key`.
    pub fn load(data_dir: &std::path::Path, accept_new: bool) -> KnownBridges {
        let path = data_dir.join(FILE);
        let mut pins = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let parsed = line.split_once(' ').and_then(|(addr, id)| {
                    Some((
                        addr.to_string(),
                        crate::dht::Id::from_hex(id.trim()).ok()?.0,
                    ))
                });
                match parsed {
                    Some((addr, id)) => {
                        pins.insert(addr, id);
                    }
                    None => tracing::warn!(file = %path.display(), %line, "unreadable pin skipped"),
                }
            }
        }
        KnownBridges {
            path,
            pins: Mutex::new(pins),
            accept_new,
        }
    }

    /// Checks the bridge at `addr` that proved `got`, pinning it on first contact (or on a
    /// change when accepted) and saving the table. `Err` names the pinned and the proven id.
    pub fn check(&self, addr: &str, got: &NodeId) -> Result<Decision, String> {
        let mut pins = self.pins.lock().expect("pins lock");
        let d = decide(pins.get(addr), got, self.accept_new);
        match d {
            Decision::Known => return Ok(d),
            Decision::Refuse => {
                return Err(format!(
                    "bridge at {addr} proved key {} but {} is pinned in {}: if the bridge's key \
                     really changed, delete that line or set node.uplink_accept_new_key",
                    crate::dht::Id(*got),
                    crate::dht::Id(pins[addr]),
                    self.path.display()
                ))
            }
            Decision::Pin if pins.len() >= MAX_PINS => return Ok(d),
            Decision::Pin | Decision::Repin => {
                pins.insert(addr.to_string(), *got);
            }
        }
        let text: String = pins
            .iter()
            .map(|(a, id)| format!("{a} {}\n", crate::dht::Id(*id)))
            .collect();
        let tmp = self.path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.path))
        {
            tracing::warn!(file = %self.path.display(), error = %e, "could not save the bridge pins");
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let (a, b) = ([1; 32], [2; 32]);
        assert_eq!(decide(None, &a, false), Decision::Pin);
        assert_eq!(decide(Some(&a), &a, false), Decision::Known);
        assert_eq!(decide(Some(&a), &b, false), Decision::Refuse);
        assert_eq!(decide(Some(&a), &b, true), Decision::Repin);
    }

    #[test]
    fn pins_persist_and_a_changed_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = ([1; 32], [2; 32]);
        let k = KnownBridges::load(dir.path(), false);
        assert_eq!(k.check("bridge:9443", &a), Ok(Decision::Pin));
        let again = KnownBridges::load(dir.path(), false);
        assert_eq!(again.check("bridge:9443", &a), Ok(Decision::Known));
        let e = again.check("bridge:9443", &b).unwrap_err();
        assert!(e.contains("known_bridges"), "{e}");
        assert_eq!(again.check("other:9443", &b), Ok(Decision::Pin));
        let told = KnownBridges::load(dir.path(), true);
        assert_eq!(told.check("bridge:9443", &b), Ok(Decision::Repin));
        let after = KnownBridges::load(dir.path(), false);
        assert_eq!(after.check("bridge:9443", &b), Ok(Decision::Known));
    }
}
