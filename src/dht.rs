//! Kademlia DHT: ids and distances, the k-bucket routing table, the iterative lookup state
//! machine and the record store — the pure part: no I/O, no tokio, no clocks — plus
//! [`service`], the async driver that binds them to a transport and tokio timers.
//!
//! The DHT lets clusters discover RPC providers and subscribers: a provider STOREs a record
//! under [`Key::scoped`]`(realm, procedure)` at the [`K`] nodes closest to that key, and a
//! caller finds it with a FIND_VALUE [`Lookup`]. Source: Maymounkov & Mazières, *Kademlia: A
//! Peer-to-peer Information System Based on the XOR Metric* (IPTPS 2002), referred to below as
//! "the paper", and the Macula design v0.16 ("Identities, DHT": 256-bit ids, XOR distance,
//! k = 20, alpha = 3, record TTL 300 s re-advertised every TTL − 60 s).
//!
//! The Erlang implementation's defects this module fixes (v0.16 defects 6 and 7):
//! - keys are scoped by realm, so tenants never share a key space ([`Key::scoped`]);
//! - a lookup keeps up to alpha queries in flight at once ([`Lookup`]), instead of one after
//!   another;
//! - a full bucket does not drop a newcomer: it asks the caller to ping the least recently seen
//!   contact and keeps the newcomer in a replacement cache ([`RoutingTable::observe`]);
//! - record TTLs are enforced: an expired record is never returned ([`RecordStore::get`]).
//!
//! ## Sans-IO shape
//! Like quinn-proto, every type here is a state machine fed with inputs (`observe`,
//! `ping_result`, `on_reply`, `put`) and polled for work (`Lookup::poll` returns the queries
//! to send). Time is passed in as a [`Timestamp`] (milliseconds on any monotonic clock the
//! caller chooses); nothing here reads a clock. The service that binds the DHT to the mesh
//! links and timers lives apart ([`service::DhtService`]), so this part is tested by a
//! deterministic simulation of a few hundred nodes on a virtual clock (`src/dht/sim.rs`).
//! Design notes and measured figures: `docs/DHT.md`.

pub mod id;
pub mod lookup;
pub mod service;
pub mod store;
pub mod table;

#[cfg(test)]
mod sim;

pub use id::{Distance, Id, IdError, Key, NodeId};
pub use lookup::{
    Action, Lookup, LookupKind, LookupParams, LookupStats, Outcome, Reply, ReplyStatus,
};
pub use service::{DhtParams, DhtService, DhtTransport, FoundRecord};
pub use store::{Record, RecordStore, StoreError, StoreLimits};
pub use table::{Contact, Observe, PingOutcome, RoutingTable, TableParams};

/// Bucket size and result size: each k-bucket holds at most `K` contacts, a lookup returns
/// the `K` closest nodes, and a record is stored at the `K` nodes closest to its key.
/// Value 20 as in the paper (§2.2) and Macula v0.16.
pub const K: usize = 20;

/// Lookup concurrency: queries a lookup keeps in flight at once. Value 3 as in the paper
/// (§2.3) and Macula v0.16.
pub const ALPHA: usize = 3;

/// A point in time, in milliseconds since an origin the caller chooses (for instance the
/// process start on a monotonic clock). Only differences matter; the DHT never reads a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The timestamp `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + ms` milliseconds, saturating at `u64::MAX`.
    pub const fn plus_millis(self, ms: u64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, 0 if `earlier` is later.
    pub const fn millis_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
