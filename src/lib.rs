//! # Macula Bridge
//!
//! The Rust implementation of the Macula mesh's bridge/relay tier: one library and
//! one binary (`macula`) with two modes, `macula bridge` and `macula node`.
//!
//! ## Map of the components
//!
//! Pure parts (no tokio, no clocks — tested without sockets):
//! - [`wire`] — the frame format: 8-byte header + MessagePack body, the message
//!   types, a streaming [`wire::FrameDecoder`] (coalesced and split frames), error codes.
//!   Spec: `docs/PROTOCOL.md`.
//! - [`topic`] — topic and pattern syntax (`*` one segment, `**` zero or more) and
//!   [`topic::PatternTrie`], the matcher behind every routing decision.
//! - [`router`] — the interest table: which peer holds which pattern, with a
//!   lock-free snapshot for the publish path and the deltas interest propagation needs.
//! - [`relay`] — the pub/sub relay core: every link's interest, where a publish goes
//!   (no echo, no re-fan-out, groups), the interest each link is told (minimal cover upward),
//!   for every level from a node's clients to a bridge's parent.
//! - [`dedup`] — per-publisher-session sliding windows of seen message ids.
//! - [`dht`] — the Kademlia core: ids (SHA-256 of the public key, realm-scoped keys), the
//!   k-bucket [`dht::RoutingTable`], the iterative [`dht::Lookup`] state machine and the
//!   TTL-enforcing [`dht::RecordStore`]; [`dht::service`] drives them over the cluster mesh.
//!   Design: `docs/DHT.md`, `docs/DISCOVERY.md`.
//! - [`crdt`] — OR-Set, LWW-Register, G-/PN-Counter and a map of named CRDTs, with deltas,
//!   digests and a compact encoding (`docs/CRDT.md`); [`gossip`] — the sans-IO gossip engine
//!   (delta pushes, push-pull-push anti-entropy) and its 1,000-node simulation; [`state`] — the
//!   product's replicated keys and the client's `put`/`get`/`update` (`docs/GOSSIP.md`).
//! - [`quota`] — per-tenant quotas: a ledger of entries and bytes per link, per tenant (a
//!   proven node id, a credential's subject) and in total, for each table remote input grows.
//! - [`config`] + [`defaults`] — layered configuration (defaults → TOML → `MACULA_*`
//!   env → flags) and every default with its reason.
//!
//! Async parts (tokio + quinn):
//! - [`transport`] — QUIC endpoints (quinn + rustls, ALPN `macula`), development
//!   and production TLS.
//! - [`session`] — per-connection plumbing: the link actor every link runs on
//!   ([`session::link`]), bounded control/data queues, batching writers, QoS 1 custody and
//!   retransmission, QoS 0 confirmation, the handshake, the one read loop and redial loop.
//! - [`server`] — the accept loop (one task per connection, connection cap).
//! - [`node`] — `macula node`: local pub/sub for clients plus one uplink to a bridge.
//! - [`bridge`] — `macula bridge`: interest-routed relay between the nodes of each realm;
//!   the subtree index of provider records ([`bridge::index`]), lookup escalation to a parent
//!   bridge and call routing by target (`docs/DISCOVERY.md`).
//! - [`escalation`] — bridge levels, the per-level lookup cache (moka: TTL per level,
//!   single-flight, negative cache) and loop detection; bridges use it for escalated lookups.
//! - [`client`] — the Rust client API (`connect`, `publish`, `subscribe`, `unsubscribe`).
//! - [`metrics`] + [`admin`] — the Prometheus registry and the admin HTTP listener
//!   (`/metrics`, `/health/live`, `/health/ready`).
//!
//! Architecture: `docs/ARCHITECTURE.md`. Benchmarks: `docs/BENCHMARKS.md`.

#![warn(missing_docs)]

pub mod admin;
pub mod audit;
pub mod auth;
pub mod bridge;
pub mod client;
pub mod config;
pub mod crdt;
pub mod dedup;
pub mod defaults;
pub mod dht;
pub mod escalation;
pub mod fleet;
pub mod gossip;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod quota;
pub mod rate;
pub mod relay;
pub mod router;
pub mod rpc;
pub mod server;
pub mod session;
pub mod state;
pub mod topic;
pub mod transport;
pub mod wire;
