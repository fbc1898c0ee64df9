//! `crdt.*`: bounds of the replicated CRDT stores and of what one writer may hold in them
//! (`docs/GOSSIP.md`, "Bounds and garbage collection"; `docs/AUTH.md`, "Quotas";
//! `docs/CONFIG.md`). Defaults in [`crate::defaults`].

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};
use crate::defaults;

/// Bounds of each replicated CRDT store (`[crdt]`; both modes). Every process of a realm
/// should use the same values: `max_keys` also bounds the keys of one incoming state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CrdtSettings {
    /// Most live keys in one store. Default [`defaults::CRDT_MAX_KEYS`] (4,096); in
    /// [16, 1,048,576].
    pub max_keys: usize,
    /// Bound on one store's approximate size, bytes. Default
    /// [`defaults::CRDT_MAX_STORE_BYTES`] (32 MiB); at least 64 KiB.
    pub max_store_bytes: usize,
    /// Bound on the element bytes of one OR-Set. Default [`defaults::CRDT_MAX_SET_BYTES`]
    /// (1 MiB); at least 8 KiB and at most `max_store_bytes`.
    pub max_set_bytes: usize,
    /// Garbage-collected keys kept retired per store (also bounded by `max_store_bytes`).
    /// Default [`defaults::CRDT_MAX_RETIRED`] (16,384); at least 1.
    pub max_retired: usize,
    /// Keys one client of a node may have created in its cluster's store and still hold
    /// ([`crate::crdt::writers`]). Default [`defaults::CRDT_WRITER_MAX_KEYS`] (1,024); in
    /// [1, `max_keys`].
    pub writer_max_keys: usize,
    /// Bytes one client of a node may have written to its cluster's store and still hold
    /// (the store's own measure, [`crate::crdt::approx_size`]). Default
    /// [`defaults::CRDT_WRITER_MAX_BYTES`] (8 MiB); in [4,096, `max_store_bytes`].
    pub writer_max_bytes: usize,
}

impl Default for CrdtSettings {
    fn default() -> Self {
        CrdtSettings {
            max_keys: defaults::CRDT_MAX_KEYS,
            max_store_bytes: defaults::CRDT_MAX_STORE_BYTES,
            max_set_bytes: defaults::CRDT_MAX_SET_BYTES,
            max_retired: defaults::CRDT_MAX_RETIRED,
            writer_max_keys: defaults::CRDT_WRITER_MAX_KEYS,
            writer_max_bytes: defaults::CRDT_WRITER_MAX_BYTES,
        }
    }
}

impl CrdtSettings {
    /// The store bounds these settings give (the others at [`crate::crdt::Limits`]'s
    /// defaults).
    pub fn limits(&self) -> crate::crdt::Limits {
        crate::crdt::Limits {
            max_keys: self.max_keys,
            max_store_bytes: self.max_store_bytes,
            max_set_bytes: self.max_set_bytes,
            max_retired: self.max_retired,
            ..crate::crdt::Limits::default()
        }
    }

    /// Checks the ranges documented on each field.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(16..=1 << 20).contains(&self.max_keys) {
            return invalid("crdt.max_keys", "must be in [16, 1048576]");
        }
        if self.max_store_bytes < 64 << 10 {
            return invalid("crdt.max_store_bytes", "must be at least 65536");
        }
        if self.max_set_bytes < 8 << 10 || self.max_set_bytes > self.max_store_bytes {
            return invalid(
                "crdt.max_set_bytes",
                "must be at least 8192 and at most crdt.max_store_bytes",
            );
        }
        if self.max_retired == 0 {
            return invalid("crdt.max_retired", "must be at least 1");
        }
        if !(1..=self.max_keys).contains(&self.writer_max_keys) {
            return invalid("crdt.writer_max_keys", "must be in [1, crdt.max_keys]");
        }
        if !(4096..=self.max_store_bytes).contains(&self.writer_max_bytes) {
            return invalid(
                "crdt.writer_max_bytes",
                "must be at least 4096 and at most crdt.max_store_bytes",
            );
        }
        Ok(())
    }
}
