//! Every default value of macula, in one place.
//!
//! Each constant states its unit and why it has the value it has. The configuration
//! ([`crate::config`]) starts from these values; the file, the `MACULA_*` environment and the
//! command line override them (see `docs/CONFIG.md`). Nothing else in the crate should carry a
//! magic number that an operator might want to know about.

use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Addresses and names
// ---------------------------------------------------------------------------------------------

/// Default QUIC port (UDP) of a bridge: 9443, as in Macula v0.16 (`macula-v0.16.md`, "Wire").
pub const DEFAULT_PORT: u16 = 9443;

/// Default data-plane listen address of `macula bridge` (UDP, QUIC): all interfaces, port
/// [`DEFAULT_PORT`], so a node on another host reaches it without configuration.
pub const DEFAULT_BRIDGE_LISTEN: &str = "0.0.0.0:9443";

/// Default data-plane listen address of `macula node` (UDP, QUIC): port 9444, one above the
/// bridge, so a bridge and a node can run side by side on one host with no configuration.
pub const DEFAULT_NODE_LISTEN: &str = "0.0.0.0:9444";

/// Default uplink of a node (`host:port` of its bridge): the bridge on the same host, which is
/// the zero-configuration development setup (`macula bridge` + `macula node`).
pub const DEFAULT_UPLINK: &str = "127.0.0.1:9443";

/// Default TLS server name (SNI, and the name verified in production mode) a node uses for its
/// uplink: `localhost`, which the development certificate covers.
pub const DEFAULT_UPLINK_SERVER_NAME: &str = "localhost";

/// Default admin (HTTP/1.1 `/metrics`, `/health/*`, `/state`, `/fleet`, `/drain`) listen
/// address of a bridge (TCP): port 8080, the health/metrics port of Macula v0.16, on
/// **loopback** — safe on a host facing the internet; a deployment that scrapes metrics from
/// elsewhere binds `0.0.0.0` explicitly, and `/state`, `/fleet` and `/drain` then need the
/// admin token from any other address (`auth.admin_token_file`, `docs/AUTH.md`).
pub const DEFAULT_BRIDGE_ADMIN: &str = "127.0.0.1:8080";

/// Default admin listen address of a node (TCP): port 8081, one above the bridge's, so both run
/// on one host without a clash; loopback, as the bridge's.
pub const DEFAULT_NODE_ADMIN: &str = "127.0.0.1:8081";

/// Default size at which the audit log file rotates: 100 MiB (with the one previous file
/// kept, at most about 200 MiB on disk).
pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 100 << 20;

/// Default realm (tenant namespace, reverse-DNS name) of a node and the one realm a bridge
/// accepts by default: `io.macula`, the realm of the Macula examples.
pub const DEFAULT_REALM: &str = "io.macula";

/// Default cluster name of a node: `default` (a cluster is 1–10 nodes at one site).
pub const DEFAULT_CLUSTER: &str = "default";

/// Default directory for state kept across restarts (the development certificate): relative to
/// the working directory, so a first run needs no setup.
pub const DEFAULT_DATA_DIR: &str = "macula-data";

/// Default log filter, in `tracing_subscriber::EnvFilter` syntax: `info` (lifecycle events, no
/// per-frame events).
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// QUIC ALPN protocol id of the macula wire protocol (RFC 7301; Macula v0.16 uses `macula`).
/// Both sides require it: a peer offering another protocol fails the handshake.
pub const ALPN: &[u8] = b"macula";

// ---------------------------------------------------------------------------------------------
// Protocol limits
// ---------------------------------------------------------------------------------------------

/// Largest frame body accepted or sent, in bytes: 1 MiB. The Erlang implementation had no limit
/// (defect 2); a bound is checked before any memory is reserved. 1 MiB covers any sensible
/// pub/sub payload while keeping `connections × frame` memory bounded.
pub const MAX_FRAME_SIZE: u32 = 1024 * 1024;

/// Smallest value `limits.max_frame_size` may be configured to, in bytes: 1 KiB (smaller would
/// refuse ordinary control frames).
pub const MIN_MAX_FRAME_SIZE: u32 = 1024;

/// Largest value `limits.max_frame_size` may be configured to, in bytes: 64 MiB (larger frames
/// belong on a blob store, not on a relay).
pub const MAX_MAX_FRAME_SIZE: u32 = 64 * 1024 * 1024;

/// Size of the frame header, in bytes (version, type, flags, reserved, u32 body length), as in
/// Macula v0.16 ("Wire").
pub const FRAME_HEADER_SIZE: u32 = 8;

/// Most QoS 1 messages sent on one connection and not yet acknowledged (PUBACK), in messages:
/// 8192. Past this the sender backpressures instead of buffering without bound.
pub const MAX_INFLIGHT: u32 = 8192;

/// Capacity of the outbound queue of one connection, in frames: 8192. A QoS 0 publish that
/// finds it full waits up to [`QOS0_STALL_MS`] (the publisher is slowed, nothing is lost); a
/// consumer still full after that sheds its own QoS 0 messages; QoS 1 waits up to
/// [`SLOW_CONSUMER_TIMEOUT_MS`] (lessons, 3).
pub const OUTBOUND_QUEUE: usize = 8192;

/// How long a QoS 0 publish may wait, in total over all its consumers, for room in full
/// outbound queues, in milliseconds: 50. A consumer that keeps up frees room within microseconds, so a burst slows
/// its publisher (QUIC flow control) instead of losing messages; a consumer whose queue stays
/// full this long is *shedding*: its QoS 0 messages are dropped without waiting
/// (`dropped{reason="queue_full"}`) until its queue has drained to half, so a slow consumer
/// costs each publisher at most one stall per half queue it drains, and loses only its own
/// messages. 0: never wait (drop at once, the behaviour before issue 13). nats-server stalls a
/// producer for a fast consumer's full buffer in the same way (lessons, 3).
pub const QOS0_STALL_MS: u64 = 50;

/// Most concurrent connections one process accepts: 10,000, the v1.0 roadmap target. Further
/// connections are refused (and counted) rather than degrading everyone.
pub const MAX_CONNECTIONS: usize = 10_000;

/// Most concurrent connections (handshakes included) from one source IP address: 1,000, a
/// tenth of [`MAX_CONNECTIONS`], so one host cannot fill a listener while a NAT with many
/// clients behind one address still fits. Load generators on one host raise it.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 1_000;

/// Handshakes in progress beyond which an unvalidated source gets a QUIC Retry: 256. Below
/// it a handshake costs no extra round trip; above it a flood from spoofed addresses costs
/// one stateless Retry packet per Initial and holds no state.
pub const HANDSHAKE_RETRY_ABOVE: usize = 256;

/// New connection attempts per second from one source IP address, after a burst of
/// [`MAX_CONNECTIONS_PER_SOURCE`]: 100. A handshake costs the listener about 100 µs of CPU
/// (TLS 1.3, the identity proof, a credential check: `docs/BENCHMARKS.md`), so one host
/// opening and dropping connections in a loop costs it at most about 1 % of a core, while a
/// NAT whose thousand clients reconnect at once after a restart fits in the burst. Load
/// generators on one host lift it (0: unpaced).
pub const HANDSHAKES_PER_SOURCE_PER_SEC: u32 = 100;

/// How long a session must have sent nothing (no STREAM frame; QUIC keep-alives do not
/// count) before it may be evicted, in milliseconds: 30 s. Eviction happens only while the
/// listener has fewer than 1 % of `max_connections` free (`src/server/idle.rs`): sessions that
/// connect and idle cannot lock newcomers out, and a listener with room evicts nobody.
pub const IDLE_EVICT_AFTER_MS: u64 = 30_000;

/// Most subscriptions (topic filters) one connection may hold: 10,000. Bounds the topic trie
/// against one misbehaving client (lessons, 2).
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 10_000;

/// Rate limit of each client connection of a node (`rate.client`): 100,000 frames and
/// 64 MiB a second. One application client flat out otherwise takes a node's whole core and
/// raises every other client's p99 many times over (5-19x measured, `docs/BENCHMARKS.md`,
/// "Fairness"); at this limit the other clients' p99 stays within 2x. Well above what one
/// client of a 1-10 machine edge cluster needs (10k msg/s per cluster is the design load);
/// relay benchmarks lift it (`macula-loadtest pubsub --spawn` does).
pub const RATE_CLIENT: crate::rate::RateLimits = crate::rate::RateLimits {
    msgs: 100_000,
    bytes: 64 << 20,
};

/// Rate limit of each node uplink and child-bridge link of a bridge (`rate.link`): none. A
/// link carries a whole cluster or subtree, whose clients their nodes limit already; a
/// hosted operator limits each tenant by its credential (`lim`), and the Helm chart sets
/// this for the hosted fleet.
pub const RATE_LINK: crate::rate::RateLimits = crate::rate::RateLimits { msgs: 0, bytes: 0 };

/// Rate limit of one realm's connections together in one process (`rate.realm`): none.
pub const RATE_REALM: crate::rate::RateLimits = crate::rate::RateLimits { msgs: 0, bytes: 0 };

/// Burst of every rate limit, milliseconds' worth of its rate: 1,000 (a second's worth, at
/// least one message and one largest frame).
pub const RATE_BURST_MS: u64 = 1_000;

/// De-duplication window used to deliver each message once, in sequence numbers per publisher
/// session: 65,536 (defect 4 and lessons, 9: loops and duplicates are the recurring hierarchy
/// bug). It bounds memory at 4,096 sessions and 512 KiB of bitmaps (`crate::dedup`).
pub const DEDUP_WINDOW: usize = 65_536;

// ---------------------------------------------------------------------------------------------
// Timers
// ---------------------------------------------------------------------------------------------

/// How long a write to a peer may stay blocked before the peer is declared a slow consumer and
/// disconnected, in milliseconds: 2 s, as iroh-relay's write timeout (lessons, 3).
pub const SLOW_CONSUMER_TIMEOUT_MS: u64 = 2_000;
/// [`SLOW_CONSUMER_TIMEOUT_MS`] as a [`Duration`].
pub const SLOW_CONSUMER_TIMEOUT: Duration = Duration::from_millis(SLOW_CONSUMER_TIMEOUT_MS);

/// How long a QoS 1 message waits for its PUBACK before it is retransmitted, in milliseconds:
/// 5 s, well above a WAN round trip plus queueing, so retransmissions stay rare.
pub const ACK_TIMEOUT_MS: u64 = 5_000;
/// [`ACK_TIMEOUT_MS`] as a [`Duration`].
pub const ACK_TIMEOUT: Duration = Duration::from_millis(ACK_TIMEOUT_MS);

/// After an uplink (re)connects, how long the node treats the bridge's view of the realm as
/// still rebuilding, in milliseconds: 5 s. Inside this window every local publish goes up (the
/// remote interest is not known yet) and a `no_route` answer to a QoS 1 publish is retried
/// rather than final, so messages accepted while the bridge was down reach subscribers whose
/// nodes re-subscribe a little later. 5 s covers the other nodes' heartbeat detection (3 s)
/// plus their first reconnect attempts.
pub const UPLINK_SETTLE_MS: u64 = 5_000;
/// [`UPLINK_SETTLE_MS`] as a [`Duration`].
pub const UPLINK_SETTLE: Duration = Duration::from_millis(UPLINK_SETTLE_MS);

/// QUIC keep-alive interval on the connections a process dials to hold a session (client →
/// node, node → bridge, node ↔ node mesh, bridge → parent, fleet links), in milliseconds:
/// 1 s. Each keep-alive is a QUIC PING frame the peer's QUIC stack acknowledges below its
/// application, so it measures whether the peer is reachable, not whether it has caught up
/// with its backlog (an application heartbeat behind queued data killed healthy sessions under
/// load). One PING a second per link costs ~50 bytes/s.
pub const LINK_KEEP_ALIVE_MS: u64 = 1_000;

/// QUIC idle timeout (RFC 9000 §10.1) of those connections, in milliseconds: 3 s, three
/// keep-alive intervals. A bridge, node or peer that crashed is declared dead after this and
/// the session redialled: re-homing after a bridge crash takes ~3 s plus reconnect backoff,
/// where the 30 s idle timeout of other connections ([`IDLE_TIMEOUT_MS`]) would take 30 s.
/// QUIC takes the smaller of the two sides' values, so the dialler's choice holds for both.
pub const LINK_IDLE_TIMEOUT_MS: u64 = 3_000;

/// First delay before reconnecting a lost uplink, in milliseconds: 100 ms (quick recovery from a
/// bridge restart); doubled, with jitter, on each failure.
pub const RECONNECT_INITIAL_BACKOFF_MS: u64 = 100;
/// [`RECONNECT_INITIAL_BACKOFF_MS`] as a [`Duration`].
pub const RECONNECT_INITIAL_BACKOFF: Duration = Duration::from_millis(RECONNECT_INITIAL_BACKOFF_MS);

/// Largest delay between uplink reconnection attempts, in milliseconds: 5 s, so a fleet does not
/// hammer a recovering bridge yet reconnects within seconds.
pub const RECONNECT_MAX_BACKOFF_MS: u64 = 5_000;
/// [`RECONNECT_MAX_BACKOFF_MS`] as a [`Duration`].
pub const RECONNECT_MAX_BACKOFF: Duration = Duration::from_millis(RECONNECT_MAX_BACKOFF_MS);

/// Grace period of a drain (SIGTERM): how long connected peers get to move before the endpoint
/// closes, in milliseconds: 10 s, below Kubernetes' default 30 s termination grace period.
pub const DRAIN_GRACE_MS: u64 = 10_000;
/// [`DRAIN_GRACE_MS`] as a [`Duration`].
pub const DRAIN_GRACE: Duration = Duration::from_millis(DRAIN_GRACE_MS);

// ---------------------------------------------------------------------------------------------
// QUIC transport (quinn)
// ---------------------------------------------------------------------------------------------

/// QUIC keep-alive interval, in milliseconds: 5 s. Keeps NAT bindings open (typical UDP NAT
/// timeouts are 30 s or more) and detects a dead peer well within [`IDLE_TIMEOUT_MS`]; it must
/// stay shorter than the idle timeout or idle connections die.
pub const KEEP_ALIVE_MS: u64 = 5_000;
/// [`KEEP_ALIVE_MS`] as a [`Duration`].
pub const KEEP_ALIVE: Duration = Duration::from_millis(KEEP_ALIVE_MS);

/// QUIC idle timeout (RFC 9000 §10.1), in milliseconds: 30 s, six keep-alive intervals, so a few
/// lost keep-alives do not close a healthy connection.
pub const IDLE_TIMEOUT_MS: u64 = 30_000;
/// [`IDLE_TIMEOUT_MS`] as a [`Duration`].
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(IDLE_TIMEOUT_MS);

/// Per-stream receive window (flow-control credit), in bytes: 1 MiB.
///
/// Sized for ~10,000 connections rather than one fat connection: the worst-case buffered memory
/// is `connections × window` (10,000 × 1 MiB = 10 GiB at the limit, and in practice far less),
/// versus quinn's default of 1.25 MB per stream. macula uses one bidirectional stream per
/// connection, so this is also most of the connection's credit (lessons, 5). It must be at least
/// [`MAX_FRAME_SIZE`]; it need not hold a frame and its header at once, because quinn returns
/// credit as the reader consumes bytes, so a largest frame costs at most one extra credit round
/// trip.
pub const STREAM_RECEIVE_WINDOW: u64 = 1024 * 1024;

/// Per-connection receive window, over all streams, in bytes: 2 MiB. With one data stream per
/// connection twice the stream window is ample; the worst-case memory is `connections × window`.
pub const CONNECTION_RECEIVE_WINDOW: u64 = 2 * 1024 * 1024;

/// Per-connection send window (unacknowledged bytes in flight), in bytes: 2 MiB, versus quinn's
/// default of 10 MB, which is sized for one fat connection; at 10,000 connections the send
/// buffers must stay small (lessons, 5). 2 MiB still fills ~160 Mbit/s at 100 ms RTT.
pub const SEND_WINDOW: u64 = 2 * 1024 * 1024;

/// Requested kernel send and receive buffer of the UDP socket, in bytes: 4 MiB. One endpoint is
/// one socket for all connections; the Linux default (~200 KiB) drops bursts at thousands of
/// connections (lessons, 5). The kernel caps it at `net.core.{r,w}mem_max`.
pub const UDP_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// ACK-eliciting packets a peer may receive before it must acknowledge, as asked of it with
/// the QUIC ACK frequency extension (draft-ietf-quic-ack-frequency, quinn's
/// `AckFrequencyConfig`): 8 (0 = the extension is off and the peer acknowledges every second
/// packet, RFC 9000 §13.2.2). Measured on one node relaying 1 → 1 (`docs/BENCHMARKS.md`, "Hot
/// path, first pass"): 0 → 8 raised flat-out QoS 0 deliveries by ~13 % and lowered the p99 of
/// 10,000 msg/s QoS 1 across a bridge from 1.37 to 1.26 ms (medians of 3). Reordering still
/// draws an immediate ACK (quinn's reordering threshold 2), and a peer that does not support
/// the extension is not asked.
pub const ACK_ELICITING_THRESHOLD: u64 = 8;

/// `max_ack_delay` asked of the peer with the ACK frequency extension, in ms: 25, RFC 9000's
/// default (§18.2); used only when [`ACK_ELICITING_THRESHOLD`] is above 0.
pub const ACK_MAX_DELAY_MS: u64 = 25;

/// Most concurrent bidirectional streams a peer may open, in streams: 4. macula uses one stream
/// per connection; a little headroom covers a stream being replaced, anything more is misuse.
pub const MAX_CONCURRENT_BIDI_STREAMS: u64 = 4;

// ---------------------------------------------------------------------------------------------
// Admin HTTP listener
// ---------------------------------------------------------------------------------------------

/// How long the admin listener waits for requests in flight when it shuts down: 2 s. Admin
/// requests are tiny; a scraper that takes longer is cut off rather than delaying exit.
pub const ADMIN_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long an admin client may take to send its request headers: 10 s, so idle or slow
/// connections (slowloris) cannot pile up on the admin port.
pub const ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` on the admin port (e.g. out of file descriptors) before the
/// next try: 100 ms, so the loop does not spin.
pub const ADMIN_ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Lifetime of a DHT provider record, ms (5 min, the cluster level's cache TTL in Macula
/// v0.16): a provider that vanishes without withdrawing stops being found within it. Its node
/// re-advertises at half of it.
pub const DHT_RECORD_TTL_MS: u64 = 300_000;

/// How long one DHT query (FIND_NODE, FIND_VALUE, STORE) waits for its reply, ms. A cluster
/// is 1–10 machines on one site: a reply later than 1 s means the peer is gone or overloaded.
pub const DHT_QUERY_TIMEOUT_MS: u64 = 1_000;

/// Largest TTL a STORE may ask for, ms (1 h); longer is an absurd TTL and is refused.
pub const DHT_MAX_RECORD_TTL_MS: u64 = 3_600_000;

/// Providers a call tries before failing with "all providers failed" (issue 3: at most 3).
pub const RPC_MAX_ATTEMPTS: u32 = 3;

/// Calls in flight per process, originated or forwarded (65,536 × ~200 bytes of bookkeeping
/// ≈ 13 MB at most). Beyond it a call is answered at once with an error.
pub const RPC_MAX_PENDING: usize = 65_536;

/// Interval between gossip delta pushes, ms (Macula v0.15: push every 1 s).
pub const GOSSIP_PUSH_INTERVAL_MS: u64 = 1000;

/// Random peers per push round (Macula v0.15: fanout 3). With a delta kept for
/// [`GOSSIP_PUSH_ROUNDS`] rounds and re-pushed by every node it changed, a 10-node cluster
/// converges in ~2 rounds and 1,000 simulated nodes in ~10 (`docs/BENCHMARKS.md`).
pub const GOSSIP_FANOUT: usize = 3;

/// Interval between anti-entropy exchanges, ms (Macula v0.15: every 30 s). Repairs whatever
/// pushes missed (loss, partitions, restarts).
pub const GOSSIP_ANTI_ENTROPY_INTERVAL_MS: u64 = 30_000;

/// Push rounds a delta stays in the push buffer: enough for fanout 3 to reach a cluster
/// several times over, short enough that the buffer stays small.
pub const GOSSIP_PUSH_ROUNDS: u32 = 4;

/// Most live keys in one replicated CRDT store (`crdt.max_keys`): the product's own keys
/// (`$members`, `$meta/…`, `$rpc/…`, `$sub/…`) and the application's.
pub const CRDT_MAX_KEYS: usize = 4096;

/// Bound on one replicated store's approximate size, bytes (`crdt.max_store_bytes`, 32 MiB):
/// the element and value bytes plus fixed costs per key, element, range and counter entry
/// (`crdt::approx_size`). Before it, one client's set took a node from 11 MB to 1.4 GB.
pub const CRDT_MAX_STORE_BYTES: usize = 32 << 20;

/// Bound on the element bytes of one OR-Set, bytes (`crdt.max_set_bytes`, 1 MiB): without it
/// 16,384 elements of 8 KiB made a 128 MiB key.
pub const CRDT_MAX_SET_BYTES: usize = 1 << 20;

/// Garbage-collected keys (emptied OR-Sets, removed registers and counters) kept retired per store
/// (`crdt.max_retired`): enough for a churn of subscriptions well beyond `CRDT_MAX_KEYS`; beyond
/// it the oldest retirement is forgotten (`docs/GOSSIP.md`).
pub const CRDT_MAX_RETIRED: usize = 16_384;

/// Keys one client of a node may have created in its cluster's store and still hold
/// (`crdt.writer_max_keys`): a quarter of [`CRDT_MAX_KEYS`], so one client leaves room for
/// the others and for the product's own keys.
pub const CRDT_WRITER_MAX_KEYS: usize = 1024;

/// Bytes one client of a node may have written to its cluster's store and still hold
/// (`crdt.writer_max_bytes`, 8 MiB): a quarter of [`CRDT_MAX_STORE_BYTES`].
pub const CRDT_WRITER_MAX_BYTES: usize = 8 << 20;

/// Bound on the encoded state or digest in one gossip frame, bytes: under the 64 KiB wire
/// bound (`wire::MAX_GOSSIP_STATE`) with room for the frame's other fields.
pub const GOSSIP_MAX_MESSAGE_BYTES: usize = 60_000;

/// How long [`crate::client::Client::close`] waits for what is queued and unacknowledged to
/// reach the node before it closes anyway.
pub const CLIENT_CLOSE_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Timeout of a client's `put` / `get` / `update` on a replicated key (answered by its own node:
/// no network hop beyond the client's connection).
pub const CRDT_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How often a fleet worker re-resolves `bridge.fleet.dns`, ms: a new pod of a headless
/// service is found within this.
pub const FLEET_DNS_INTERVAL_MS: u64 = 10_000;
/// Silence after which a fleet worker is suspected, ms: three missed views (one per second).
pub const FLEET_SUSPECT_AFTER_MS: u64 = 3_000;
/// Time a suspected worker has to refute, ms. With [`FLEET_SUSPECT_AFTER_MS`] a dead worker
/// is declared within 5 s of its last sign of life.
pub const FLEET_SUSPICION_TIMEOUT_MS: u64 = 2_000;
/// Longest drain, ms: enough for thousands of nodes to be redirected with jitter and for
/// QoS 1 retransmissions (`ACK_TIMEOUT_MS`, 5 s) to settle.
pub const FLEET_DRAIN_GRACE_MS: u64 = 30_000;
/// Largest random delay before a redirected node reconnects, ms: spreads a drained
/// worker's nodes over a second instead of one burst.
pub const FLEET_REDIRECT_JITTER_MS: u64 = 1_000;
/// How long the interest of a link that ended without an orderly close is kept, ms: covers
/// a node's re-home (death detection 3 s + reconnect + resubscribe) so QoS 1 publishes
/// meant for it stay unacknowledged until it is reachable again.
pub const FLEET_HANDOFF_GRACE_MS: u64 = 6_000;
/// Redirects a node follows in a row before it stays where it is; a worker accepts a node
/// that says it was redirected this often, whoever owns its cluster (bounds redirect loops
/// while workers disagree about membership).
pub const FLEET_MAX_REDIRECTS: u32 = 3;
/// Period of the fleet task: views to peers, failure detector, rebalancing, ms.
pub const FLEET_TICK_MS: u64 = 1_000;
/// Longest wait for an uplink's QUIC handshake, ms: a bridge on the LAN answers in
/// milliseconds, and a dead fleet worker must not hold a re-homing node for the generic
/// 10 s handshake timeout.
pub const UPLINK_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node ignores redirects to the worker it just lost, ms: until every worker
/// has noticed the death (peer silence 3 s), one may still name it as the owner.
pub const FLEET_LOST_WORKER_MEMORY: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Per-tenant quotas (issue 12; `crate::quota`, `docs/AUTH.md` "Quotas"). A tenant is the
// holder of one proven node id (a credential's subject); each table has a total bound and a
// per-tenant share, in entries and in bytes. Totals are per realm except the calls', which
// are per process. Each share is a tenth or less of its total, so ten tenants at their share
// leave room for newcomers.
// ---------------------------------------------------------------------------------------------

/// Interest patterns one tenant may hold at a bridge, per realm: 10,000 (as
/// [`MAX_SUBSCRIPTIONS_PER_CONNECTION`], now shared by all the tenant's links).
pub const QUOTA_INTEREST_PER_TENANT: usize = 10_000;

/// Bytes of interest patterns one tenant may hold at a bridge, per realm: 512 KiB (10,000
/// patterns of ~50 bytes).
pub const QUOTA_INTEREST_BYTES_PER_TENANT: usize = 512 * 1024;

/// Interest patterns held at a bridge per realm, all links: 200,000 (a street of 20 clusters
/// at their share; the pattern trie costs ~200 bytes per pattern, ~40 MB).
pub const QUOTA_INTEREST_TOTAL: usize = 200_000;

/// Bytes of interest patterns held at a bridge per realm, all links: 8 MiB.
pub const QUOTA_INTEREST_BYTES_TOTAL: usize = 8 * 1024 * 1024;

/// Provider-record copies one tenant may hold in a bridge's level index, per realm: 10,000
/// (a child bridge advertising a street of clusters with a few hundred procedures each).
pub const QUOTA_RECORDS_PER_TENANT: usize = 10_000;

/// Bytes of provider-record copies one tenant may hold in a level index, per realm: 2 MiB
/// (a copy is its key, publisher, record and procedure name: ~100–200 bytes).
pub const QUOTA_RECORD_BYTES_PER_TENANT: usize = 2 * 1024 * 1024;

/// Provider-record copies in one realm's level index: 100,000 (~20 MB).
pub const QUOTA_RECORDS_TOTAL: usize = 100_000;

/// Bytes of provider-record copies in one realm's level index: 16 MiB.
pub const QUOTA_RECORD_BYTES_TOTAL: usize = 16 * 1024 * 1024;

/// Calls one tenant may have in flight through a bridge (forwarded, not yet answered): 4,096,
/// a sixteenth of [`RPC_MAX_PENDING`], which stays the total.
pub const QUOTA_CALLS_PER_TENANT: usize = 4_096;

/// DHT records one mesh peer may have stored at a node (as their publisher): 10,000, a tenth
/// of [`crate::dht::store::MAX_RECORDS`].
pub const QUOTA_DHT_RECORDS_PER_PEER: usize = 10_000;

/// Bytes of DHT record values one mesh peer may have stored at a node: 16 MiB.
pub const QUOTA_DHT_BYTES_PER_PEER: usize = 16 * 1024 * 1024;

/// Bytes of DHT record values a node holds for all publishers: 128 MiB (before this bound,
/// 100,000 records of 64 KiB could take 6.5 GB).
pub const QUOTA_DHT_BYTES_TOTAL: usize = 128 * 1024 * 1024;
