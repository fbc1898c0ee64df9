//! Configuration: the file/environment form, loaded in layers and validated.
//!
//! Layers, each overriding the one before (see `docs/CONFIG.md` for every key):
//!
//! 1. the built-in defaults of [`crate::defaults`];
//! 2. a TOML file, given with `--config PATH` (optional; a path that cannot be read is an error);
//! 3. the environment: `MACULA_` + the key path in upper case with `__` between levels, e.g.
//!    `MACULA_NODE__REALM=com.example`, plus the Macula v0.16 names `MACULA_TLS_MODE`,
//!    `MACULA_TLS_CERTFILE`, `MACULA_TLS_KEYFILE`, `MACULA_TLS_CACERTFILE` and
//!    `MACULA_TLS_VERIFY_HOSTNAME` mapped onto `tls.*` (the nested names win if both are set);
//! 4. command-line overrides: any serializable value with the same nested shape as [`Config`]
//!    whose `None` fields are skipped (`#[serde(skip_serializing_if = "Option::is_none")]`).
//!
//! Keys are snake_case and unknown keys are errors, in every layer, so typos do not pass
//! silently. Load errors name the key and where its value came from (file path or variable).
//! [`Config::load`] only extracts; [`Config::validate`] checks ranges and relations, and every
//! caller must run it before using the values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::defaults;

/// Prefix of every environment variable read by [`Config::load`].
pub const ENV_PREFIX: &str = "MACULA_";

/// Macula v0.16 flat environment names (after [`ENV_PREFIX`]) and the key each one sets.
pub const LEGACY_ENV: [(&str, &str); 5] = [
    ("TLS_MODE", "tls.mode"),
    ("TLS_CERTFILE", "tls.cert_file"),
    ("TLS_KEYFILE", "tls.key_file"),
    ("TLS_CACERTFILE", "tls.ca_file"),
    ("TLS_VERIFY_HOSTNAME", "tls.verify_hostname"),
];

/// The whole configuration of one macula process (both modes share one file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for state kept across restarts (the development certificate). Default
    /// `macula-data`, relative to the working directory.
    pub data_dir: PathBuf,
    /// Settings of `macula bridge`.
    pub bridge: BridgeConfig,
    /// Settings of `macula node`.
    pub node: NodeConfig,
    /// TLS: development or production trust, certificates, mTLS.
    pub tls: TlsConfig,
    /// QUIC transport tuning (quinn).
    pub transport: TransportConfig,
    /// Protocol and resource limits, timers.
    pub limits: LimitsConfig,
    /// Logging.
    pub log: LogConfig,
    /// The cluster's Kademlia DHT (node mode).
    pub dht: DhtConfig,
    /// Remote procedure calls (node mode).
    pub rpc: RpcConfig,
    /// The lookup cache (both modes; a node caches at level `cluster`, a bridge at its own
    /// `bridge.level`).
    pub cache: CacheSettings,
    /// CRDT gossip (both modes; `docs/GOSSIP.md`).
    pub gossip: GossipSettings,
    /// Admission: operator keys per realm and this process's credential (`docs/AUTH.md`).
    pub auth: AuthConfig,
    /// The audit log (`docs/AUTH.md`, "Audit log").
    pub audit: AuditConfig,
    /// Token-bucket rate limits on what peers send (`docs/AUTH.md`, "Rate limits").
    pub rate: RateConfig,
    /// Bounds of the replicated CRDT stores (`docs/GOSSIP.md`, "Bounds and garbage
    /// collection").
    pub crdt: CrdtSettings,
    /// Per-tenant quotas (`docs/AUTH.md`, "Quotas"; [`quota::QuotaConfig`]).
    pub quota: quota::QuotaConfig,
}

/// The audit log: JSON lines of admission decisions and admin actions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Where the lines go: a file path, `"stdout"`, or `None` (written `"off"`: no audit
    /// log). Default `"off"`.
    #[serde(with = "opt_string")]
    pub file: Option<String>,
    /// Size at which the file is rotated (the previous one is kept as `<file>.1`), bytes.
    /// Default 100 MiB.
    pub max_bytes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: None,
            max_bytes: defaults::DEFAULT_AUDIT_MAX_BYTES,
        }
    }
}

/// Admission (`docs/AUTH.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Operator public keys (64 hex digits) per realm: a realm listed here admits only
    /// sessions presenting a credential one of them signed. Default: none — every realm is
    /// open to anyone who proves a key, and the process says so at start.
    pub operators: std::collections::BTreeMap<String, Vec<String>>,
    /// API keys per realm (`docs/AUTH.md`, "API keys"): a realm listed here admits, besides
    /// credentials of its operators, sessions presenting a key whose SHA-256 is listed, in
    /// the role given. Entries: `{ name, role, sha256 }` (`macula keys api-key` makes one).
    /// Default: none.
    pub api_keys: std::collections::BTreeMap<String, Vec<crate::auth::api_key::ApiKeyEntry>>,
    /// This process's credential (a file holding its text form, `mc1.…`), presented when it
    /// dials: a node's uplink and mesh links, a bridge's parent link and fleet peers.
    /// Default: none.
    pub credential_file: Option<PathBuf>,
    /// A file holding the admin token (one line, at least 16 characters): a request from
    /// another address than loopback to `/state`, `/fleet` or `/drain` must carry it as
    /// `Authorization: Bearer <token>`. Default: none — those endpoints answer loopback only.
    pub admin_token_file: Option<PathBuf>,
    /// A file of operator-signed revocation lists (`macula keys revoke`, one `mr1.…` line per
    /// realm), re-read every `revocation_check_ms`: a listed credential is refused at
    /// `connect`, and its live sessions are closed. Default: none.
    pub revocation_file: Option<PathBuf>,
    /// How often the revocation file is re-read, milliseconds: the bound on how long a
    /// revoked credential's live session outlasts the new list in the file. Default 5,000.
    pub revocation_check_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            operators: Default::default(),
            api_keys: Default::default(),
            credential_file: None,
            admin_token_file: None,
            revocation_file: None,
            revocation_check_ms: 5_000,
        }
    }
}

/// Settings of `macula bridge`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// Data-plane (QUIC, UDP) listen address. Default [`defaults::DEFAULT_BRIDGE_LISTEN`].
    pub listen: SocketAddr,
    /// Admin HTTP listen address (TCP), `None` (written `"off"`) disables it. Default
    /// [`defaults::DEFAULT_BRIDGE_ADMIN`].
    #[serde(with = "opt_socket_addr")]
    pub admin_listen: Option<SocketAddr>,
    /// Realms this bridge accepts (reverse-DNS names); a peer announcing another realm is
    /// refused. Default `["io.macula"]`.
    pub realms: Vec<String>,
    /// Level of the hierarchy this bridge serves (`street`, `neighborhood`, `city`, `province`,
    /// `country`, `region` or `global`). Sets its cache TTL. Default `street`.
    pub level: crate::escalation::Level,
    /// `host:port` of the parent bridges (the level above), tried in order; the first that
    /// accepts is used until it fails. Empty: this bridge is the top of its hierarchy and
    /// answers "not found" for what its subtree lacks. Default `[]`.
    pub parents: Vec<String>,
    /// TLS server name of the parents. Default `localhost`.
    pub parent_server_name: String,
    /// The fleet of workers serving this level together (`docs/FLEET.md`).
    pub fleet: FleetConfig,
}

/// Settings of a bridge fleet (`[bridge.fleet]`, `docs/FLEET.md`). A bridge is a fleet
/// worker when `name` is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// The fleet's name; every worker of one level uses the same. `None` (written `"off"`):
    /// a single bridge, no fleet. Default `None`.
    #[serde(with = "opt_string")]
    pub name: Option<String>,
    /// `host:port` of other workers to join through (seeds); the rest are learned by gossip.
    /// Default `[]`.
    pub peers: Vec<String>,
    /// `host:port` whose A/AAAA records are the workers (a Kubernetes headless service),
    /// re-resolved every `dns_interval_ms`. Default `None`.
    #[serde(with = "opt_string")]
    pub dns: Option<String>,
    /// How often `dns` is re-resolved, ms. Default [`defaults::FLEET_DNS_INTERVAL_MS`] (10 s).
    pub dns_interval_ms: u64,
    /// This worker's relative share of clusters, 1..=1000 (100 = normal). Default 100.
    pub weight: u32,
    /// The address other workers and nodes reach this worker at. `None`: `bridge.listen`,
    /// which must then not be a wildcard address. Default `None`.
    #[serde(with = "opt_socket_addr")]
    pub advertise: Option<SocketAddr>,
    /// Silence after which a worker is suspected, ms. Default
    /// [`defaults::FLEET_SUSPECT_AFTER_MS`] (3 s).
    pub suspect_after_ms: u64,
    /// Time a suspected worker has to refute before it is declared dead, ms. Default
    /// [`defaults::FLEET_SUSPICION_TIMEOUT_MS`] (2 s).
    pub suspicion_timeout_ms: u64,
    /// Longest a drain waits for its nodes to leave and QoS 1 messages to finish, ms.
    /// Default [`defaults::FLEET_DRAIN_GRACE_MS`] (30 s).
    pub drain_grace_ms: u64,
    /// Largest random delay a redirected node waits before reconnecting, ms. Default
    /// [`defaults::FLEET_REDIRECT_JITTER_MS`] (1 s).
    pub redirect_jitter_ms: u64,
    /// How long the interest of a link that ended without an orderly close (a worker that
    /// died, a node that was redirected) is kept, ms: QoS 1 messages for it stay
    /// unacknowledged, so their publishers resend them to wherever the subscribers re-home.
    /// Default [`defaults::FLEET_HANDOFF_GRACE_MS`] (6 s).
    pub handoff_grace_ms: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            name: None,
            peers: Vec::new(),
            dns: None,
            dns_interval_ms: defaults::FLEET_DNS_INTERVAL_MS,
            weight: 100,
            advertise: None,
            suspect_after_ms: defaults::FLEET_SUSPECT_AFTER_MS,
            suspicion_timeout_ms: defaults::FLEET_SUSPICION_TIMEOUT_MS,
            drain_grace_ms: defaults::FLEET_DRAIN_GRACE_MS,
            redirect_jitter_ms: defaults::FLEET_REDIRECT_JITTER_MS,
            handoff_grace_ms: defaults::FLEET_HANDOFF_GRACE_MS,
        }
    }
}

/// Settings of `macula node`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Data-plane (QUIC, UDP) listen address for local clients. Default
    /// [`defaults::DEFAULT_NODE_LISTEN`].
    pub listen: SocketAddr,
    /// Admin HTTP listen address (TCP), `None` (written `"off"`) disables it. Default
    /// [`defaults::DEFAULT_NODE_ADMIN`].
    #[serde(with = "opt_socket_addr")]
    pub admin_listen: Option<SocketAddr>,
    /// Realm (tenant namespace, reverse-DNS name) of this node. Default `io.macula`.
    pub realm: String,
    /// Cluster this node belongs to. Default `default`.
    pub cluster: String,
    /// `host:port` of this node's bridge; `None` (written `"off"`) runs standalone. Default
    /// [`defaults::DEFAULT_UPLINK`] (the bridge on the same host).
    #[serde(with = "opt_string")]
    pub uplink: Option<String>,
    /// TLS server name (SNI, and the name verified in production) of the uplink. Default
    /// `localhost`.
    pub uplink_server_name: String,
    /// `host:port` of other nodes of this cluster to join its mesh through; the rest of the
    /// cluster is found with the DHT. Default `[]` (alone, or the first node).
    pub seeds: Vec<String>,
    /// Address other nodes of the cluster reach this one at (its DHT contact). `None`
    /// (written `"off"`): `listen`, which must then not be a wildcard address. Default `None`.
    #[serde(with = "opt_socket_addr")]
    pub advertise: Option<SocketAddr>,
    /// Trust on first use, in development TLS mode (where certificates are not verified):
    /// the node pins the bridge's proven key per uplink address in `data_dir/known_bridges`
    /// on first contact and refuses a bridge that later proves another key there
    /// (`docs/AUTH.md`, "Trust on first use"). Default `true`; ignored in production mode.
    pub uplink_pin_key: bool,
    /// Accept a bridge key that differs from the pinned one, and pin the new one (for a
    /// bridge whose key was really replaced). Default `false`.
    pub uplink_accept_new_key: bool,
}

/// Settings of the cluster DHT (`docs/DHT.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DhtConfig {
    /// Lifetime of a provider record, ms; providers re-advertise at half of it. Default
    /// [`defaults::DHT_RECORD_TTL_MS`] (5 min).
    pub record_ttl_ms: u64,
    /// How long one FIND_NODE / FIND_VALUE / STORE query waits for its reply, ms. Default
    /// [`defaults::DHT_QUERY_TIMEOUT_MS`] (1 s).
    pub query_timeout_ms: u64,
    /// Largest TTL a STORE may ask for, ms; longer is refused. Default
    /// [`defaults::DHT_MAX_RECORD_TTL_MS`] (1 h).
    pub max_record_ttl_ms: u64,
}

/// Settings of remote procedure calls (`docs/ARCHITECTURE.md`, "RPC").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RpcConfig {
    /// Providers tried per call before it fails with "all providers failed". Default
    /// [`defaults::RPC_MAX_ATTEMPTS`] (3).
    pub max_attempts: u32,
    /// Calls in flight per process (forwarded or originated); beyond it calls are refused.
    /// Default [`defaults::RPC_MAX_PENDING`].
    pub max_pending: usize,
}

/// Settings of CRDT gossip (`docs/GOSSIP.md`): delta pushes to random peers and periodic
/// push-pull-push anti-entropy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GossipSettings {
    /// Interval between delta pushes, ms. Default [`defaults::GOSSIP_PUSH_INTERVAL_MS`] (1,000).
    pub push_interval_ms: u64,
    /// Peers each push round sends to. Default [`defaults::GOSSIP_FANOUT`] (3).
    pub fanout: usize,
    /// Interval between anti-entropy exchanges (with one peer each), ms. Default
    /// [`defaults::GOSSIP_ANTI_ENTROPY_INTERVAL_MS`] (30,000).
    pub anti_entropy_interval_ms: u64,
    /// Push rounds a delta stays in the push buffer. Default [`defaults::GOSSIP_PUSH_ROUNDS`] (4).
    pub push_rounds: u32,
    /// Bound on the encoded state or digest in one gossip frame, bytes; larger states go in
    /// parts. Default [`defaults::GOSSIP_MAX_MESSAGE_BYTES`] (60,000); in [1,024, 65,536]. The
    /// bound used is at most `limits.max_frame_size − 1,024` (room for the frame's other fields).
    pub max_message_bytes: usize,
}

impl Default for GossipSettings {
    fn default() -> Self {
        GossipSettings {
            push_interval_ms: defaults::GOSSIP_PUSH_INTERVAL_MS,
            fanout: defaults::GOSSIP_FANOUT,
            anti_entropy_interval_ms: defaults::GOSSIP_ANTI_ENTROPY_INTERVAL_MS,
            push_rounds: defaults::GOSSIP_PUSH_ROUNDS,
            max_message_bytes: defaults::GOSSIP_MAX_MESSAGE_BYTES,
        }
    }
}

/// Settings of the lookup cache (`docs/ESCALATION.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Lifetime of a cached answer, ms. `0`: the level's default (cluster 300 s, street 600 s,
    /// neighborhood 900 s, city 1800 s, above 3600 s). Default `0`.
    pub ttl_ms: u64,
    /// Lifetime of a cached "not found", ms. Default 5,000.
    pub negative_ttl_ms: u64,
    /// Bound of the cache, entries. Default 10,000.
    pub max_entries: u64,
}

impl CacheSettings {
    /// The runtime cache settings for a cache serving `level`.
    pub fn for_level(&self, level: crate::escalation::Level) -> crate::escalation::CacheConfig {
        let mut c = crate::escalation::CacheConfig::for_level(level);
        if self.ttl_ms > 0 {
            c.ttl = Duration::from_millis(self.ttl_ms);
        }
        c.negative_ttl = Duration::from_millis(self.negative_ttl_ms);
        c.max_entries = self.max_entries;
        c
    }
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            record_ttl_ms: defaults::DHT_RECORD_TTL_MS,
            query_timeout_ms: defaults::DHT_QUERY_TIMEOUT_MS,
            max_record_ttl_ms: defaults::DHT_MAX_RECORD_TTL_MS,
        }
    }
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            max_attempts: defaults::RPC_MAX_ATTEMPTS,
            max_pending: defaults::RPC_MAX_PENDING,
        }
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl_ms: 0,
            negative_ttl_ms: crate::escalation::DEFAULT_NEGATIVE_TTL.as_millis() as u64,
            max_entries: crate::escalation::DEFAULT_MAX_ENTRIES,
        }
    }
}

/// Trust mode of TLS (Macula v0.16 `MACULA_TLS_MODE`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// A self-signed certificate is generated and kept in `data_dir`; clients accept any server
    /// certificate. Never for production.
    Development,
    /// Certificates come from files; clients verify the chain against `ca_file` (and the host
    /// name unless `verify_hostname = false`).
    Production,
}

/// TLS settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Trust mode. Default `development`.
    pub mode: TlsMode,
    /// PEM certificate chain served by this process (leaf first). Required in production.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert_file`. Required in production.
    pub key_file: Option<PathBuf>,
    /// PEM CA certificate(s) used to verify peers. Required in production.
    pub ca_file: Option<PathBuf>,
    /// Production: verify the peer's host name against its certificate. Default `true`.
    pub verify_hostname: bool,
    /// Production: require and verify client certificates against `ca_file` (mutual TLS).
    /// Default `false`.
    pub require_client_cert: bool,
}

/// QUIC transport tuning; see [`crate::defaults`] for why each default is what it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// Keep-alive interval, ms; must be below `idle_timeout_ms`. Default 5000.
    pub keep_alive_ms: u64,
    /// Idle timeout (RFC 9000 §10.1), ms. Default 30000.
    pub idle_timeout_ms: u64,
    /// Per-stream receive window, bytes. Default 1 MiB.
    pub stream_receive_window: u64,
    /// Per-connection receive window, bytes. Default 2 MiB.
    pub receive_window: u64,
    /// Per-connection send window, bytes. Default 2 MiB.
    pub send_window: u64,
    /// UDP socket send and receive buffer requested from the kernel, bytes; 0 keeps the OS
    /// default. Default 4 MiB.
    pub udp_socket_buffer: usize,
    /// Most concurrent bidirectional streams a peer may open. Default 4.
    pub max_concurrent_bidi_streams: u64,
    /// QUIC keep-alive interval on the connections this process dials to hold a session (the
    /// client library's, a node's uplink and mesh links, a bridge's parent and fleet links),
    /// ms; must be below `link_idle_timeout_ms`. Default 1000.
    pub link_keep_alive_ms: u64,
    /// QUIC idle timeout of those connections, ms: a peer heard nothing from (not even an
    /// acknowledgement of a keep-alive) for this long is dead and the session is redialled.
    /// QUIC acknowledges keep-alives below the application, so a peer busy with a backlog is
    /// never declared dead. Default 3000.
    pub link_idle_timeout_ms: u64,
    /// ACK-eliciting packets the peer may receive before it must acknowledge (the QUIC ACK
    /// frequency extension, draft-ietf-quic-ack-frequency); 0: off, the peer acknowledges every
    /// second packet (RFC 9000 §13.2.2). Fewer ACKs cost both ends fewer packets to build,
    /// encrypt, send, receive and process. Default [`defaults::ACK_ELICITING_THRESHOLD`].
    pub ack_eliciting_threshold: u64,
    /// `max_ack_delay` asked of the peer with it, ms, in [1, 16383]. Default 25.
    pub ack_max_delay_ms: u64,
}

/// Protocol and resource limits, and protocol timers; see [`crate::defaults`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest frame body, bytes, in [1 KiB, 64 MiB]. Default 1 MiB.
    pub max_frame_size: u32,
    /// Most unacknowledged QoS 1 messages per connection. Default 8192.
    pub max_inflight: u32,
    /// Outbound queue capacity per connection, frames. Default 8192.
    pub outbound_queue: usize,
    /// Longest wait of a QoS 0 publish, in total over all its consumers, for room in full
    /// outbound queues, ms;
    /// 0: drop at once. Default 50 ([`defaults::QOS0_STALL_MS`]).
    pub qos0_stall_ms: u64,
    /// Most concurrent connections, handshakes in progress included. Default 10000.
    pub max_connections: usize,
    /// Most concurrent connections (handshakes included) from one source IP address.
    /// Default [`defaults::MAX_CONNECTIONS_PER_SOURCE`].
    pub max_connections_per_source: usize,
    /// Handshakes in progress beyond which an attempt from a not yet validated address
    /// gets a QUIC Retry (RFC 9000 §8.1). Default [`defaults::HANDSHAKE_RETRY_ABOVE`].
    pub handshake_retry_above: usize,
    /// New connection attempts per second from one source address, after a burst of
    /// `max_connections_per_source`; 0: unpaced. Default
    /// [`defaults::HANDSHAKES_PER_SOURCE_PER_SEC`].
    pub handshakes_per_source_per_sec: u32,
    /// While fewer than 1 % of `max_connections` are free, sessions that received no
    /// STREAM frame for this long are closed, the longest idle first, ms; 0: never. Default
    /// [`defaults::IDLE_EVICT_AFTER_MS`].
    pub idle_evict_after_ms: u64,
    /// Most subscriptions per connection. Default 10000.
    pub max_subscriptions_per_connection: usize,
    /// De-duplication window per publisher session, in sequence numbers: how far behind the
    /// highest sequence seen from a session a duplicate id is still recognised
    /// ([`crate::dedup::DedupWindow`]). Default 65536.
    pub dedup_window: usize,
    /// Blocked-write time before a peer is a slow consumer, ms. Default 2000.
    pub slow_consumer_timeout_ms: u64,
    /// QoS 1 retransmission timeout, ms. Default 5000.
    pub ack_timeout_ms: u64,
    /// Time for an uplink to settle after (re)connecting, ms (see `defaults::UPLINK_SETTLE_MS`). Default 5000.
    pub uplink_settle_ms: u64,
    /// First uplink reconnection delay, ms. Default 100.
    pub reconnect_initial_backoff_ms: u64,
    /// Largest uplink reconnection delay, ms. Default 5000.
    pub reconnect_max_backoff_ms: u64,
    /// Drain grace period on shutdown, ms. Default 10000.
    pub drain_grace_ms: u64,
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Filter in `tracing_subscriber::EnvFilter` syntax (e.g. `info,macula=debug`). Default
    /// `info`.
    pub level: String,
    /// Emit JSON lines instead of human-readable text. Default `false`.
    pub json: bool,
}

/// Errors of loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file given with `--config` could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Extraction failed: bad TOML, unknown key, wrong type. The message names the key and its
    /// source (file path or environment variable); all errors are listed, one per line.
    #[error("{0}")]
    Load(Box<figment::Error>),
    /// A value is out of range or inconsistent with another one.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// Dotted key path, e.g. `transport.keep_alive_ms`.
        key: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Load(Box::new(e))
    }
}

impl Config {
    /// Loads the configuration through all layers (defaults → `file` → `MACULA_*` environment →
    /// `overrides`). Does not validate: call [`Config::validate`] next.
    ///
    /// `overrides` must serialize to the nested shape of [`Config`] (e.g. a struct with a
    /// `node: NodeOverrides { realm: Option<String> }` field) with `None` fields skipped.
    ///
    /// # Errors
    /// [`ConfigError::ReadFile`] if `file` is given but is not a readable file;
    /// [`ConfigError::Load`] for a TOML syntax error, an unknown key or a wrongly typed value.
    pub fn load(file: Option<&Path>, overrides: &impl Serialize) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            std::fs::File::open(path).map_err(|source| ConfigError::ReadFile {
                path: path.to_path_buf(),
                source,
            })?;
            figment = figment.merge(Toml::file_exact(path));
        }
        let legacy: Vec<&str> = LEGACY_ENV.iter().map(|(name, _)| *name).collect();
        let nested = Env::prefixed(ENV_PREFIX)
            .filter(|k| {
                !LEGACY_ENV
                    .iter()
                    .any(|(name, _)| k.as_str().eq_ignore_ascii_case(name))
            })
            .split("__");
        let flat = Env::prefixed(ENV_PREFIX).only(&legacy).map(|k| {
            LEGACY_ENV
                .iter()
                .find(|(name, _)| k.as_str().eq_ignore_ascii_case(name))
                .map(|(_, key)| (*key).into())
                .unwrap_or_else(|| k.into())
        });
        figment = figment
            .merge(flat)
            .merge(nested)
            .merge(Serialized::defaults(overrides));
        Ok(figment.extract()?)
    }

    /// Checks ranges and relations between values; the first problem is returned.
    ///
    /// Checked: `data_dir` non-empty; realms non-empty and reverse-DNS-like; cluster name; uplink
    /// `host:port`; uplink server name is a valid TLS name; production mode has readable
    /// `cert_file`, `key_file` and `ca_file`; mTLS only in production; keep-alive below idle
    /// timeout; flow-control windows ≥ `max_frame_size`; `max_frame_size` in [1 KiB, 64 MiB]; limits and
    /// timers non-zero; initial backoff ≤ max backoff; the log filter parses.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key and the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        self.validate_modes()?;
        self.validate_tls()?;
        self.validate_transport()?;
        self.validate_limits()?;
        self.validate_auth()?;
        self.crdt.validate()?;
        self.quota.validate(self.rpc.max_pending)?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid("log.level", format!("not a valid filter: {e}"));
        }
        Ok(())
    }

    /// `auth.operators`: realms valid, keys 64 hex digits; `auth.credential_file` readable,
    /// a credential whose signature verifies.
    fn validate_auth(&self) -> Result<(), ConfigError> {
        for (realm, keys) in &self.auth.operators {
            if let Err(e) = check_realm(realm) {
                return invalid("auth.operators", format!("realm {realm:?}: {e}"));
            }
            for k in keys {
                if let Err(e) = crate::auth::parse_public_key(k) {
                    return invalid("auth.operators", format!("realm {realm:?}: {e}"));
                }
            }
        }
        for realm in self.auth.api_keys.keys() {
            if let Err(e) = check_realm(realm) {
                return invalid("auth.api_keys", format!("realm {realm:?}: {e}"));
            }
        }
        if let Err(e) = crate::auth::Auth::api_keys(&self.auth) {
            return invalid("auth.api_keys", e);
        }
        if let Some(path) = &self.auth.credential_file {
            if let Err(e) = crate::auth::read_credential(path) {
                return invalid("auth.credential_file", e);
            }
        }
        if let Some(path) = &self.auth.revocation_file {
            let ops = match crate::auth::Auth::operator_keys(&self.auth) {
                Ok(o) => o,
                Err(e) => return invalid("auth.operators", e),
            };
            if let Err(e) = crate::auth::revocation::Revocations::read_file(path, &ops) {
                return invalid("auth.revocation_file", e);
            }
        }
        if !(100..=3_600_000).contains(&self.auth.revocation_check_ms) {
            return invalid("auth.revocation_check_ms", "must be 100–3,600,000");
        }
        if self.audit.max_bytes < 4096 {
            return invalid("audit.max_bytes", "must be at least 4096");
        }
        if let Some(path) = &self.auth.admin_token_file {
            if let Err(e) = crate::admin::read_token(path) {
                return invalid("auth.admin_token_file", e);
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, loadable again as a config file (used by
    /// `macula config check`). `None` addresses are written as `"off"`.
    pub fn to_toml(&self) -> String {
        match toml::to_string_pretty(self) {
            Ok(s) => s,
            Err(e) => format!("# the configuration cannot be written as TOML: {e}\n"),
        }
    }
}

impl TransportConfig {
    /// [`TransportConfig::keep_alive_ms`] as a [`Duration`].
    pub fn keep_alive(&self) -> Duration {
        Duration::from_millis(self.keep_alive_ms)
    }
    /// [`TransportConfig::idle_timeout_ms`] as a [`Duration`].
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

impl LimitsConfig {
    /// [`LimitsConfig::slow_consumer_timeout_ms`] as a [`Duration`].
    pub fn slow_consumer_timeout(&self) -> Duration {
        Duration::from_millis(self.slow_consumer_timeout_ms)
    }
    /// [`LimitsConfig::ack_timeout_ms`] as a [`Duration`].
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }
    /// [`LimitsConfig::uplink_settle_ms`] as a [`Duration`].
    pub fn uplink_settle(&self) -> Duration {
        Duration::from_millis(self.uplink_settle_ms)
    }
    /// [`LimitsConfig::reconnect_initial_backoff_ms`] as a [`Duration`].
    pub fn reconnect_initial_backoff(&self) -> Duration {
        Duration::from_millis(self.reconnect_initial_backoff_ms)
    }
    /// [`LimitsConfig::reconnect_max_backoff_ms`] as a [`Duration`].
    pub fn reconnect_max_backoff(&self) -> Duration {
        Duration::from_millis(self.reconnect_max_backoff_ms)
    }
    /// [`LimitsConfig::drain_grace_ms`] as a [`Duration`].
    pub fn drain_grace(&self) -> Duration {
        Duration::from_millis(self.drain_grace_ms)
    }
}

/// Whether `name` is an acceptable realm name: 1–253 characters of `[a-z0-9.-]`, dot-separated
/// labels that are non-empty and neither start nor end with `-` (reverse-DNS style, e.g.
/// `io.macula`). Wire code uses the same rule for realms announced by peers.
pub fn is_valid_realm(name: &str) -> bool {
    check_realm(name).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Private helpers
// ---------------------------------------------------------------------------------------------

fn invalid(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key,
        reason: reason.into(),
    })
}

fn check_realm(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1-253 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err("only [a-z0-9.-] allowed (reverse-DNS style, e.g. io.macula)");
    }
    if name
        .split('.')
        .any(|label| label.is_empty() || label.starts_with('-') || label.ends_with('-'))
    {
        return Err("labels must be non-empty and not start or end with '-'");
    }
    Ok(())
}

fn check_host_port(s: &str) -> Result<(), &'static str> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = s.rsplit_once(':').ok_or("expected host:port")?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err("port must be in 1-65535"),
    }
    if host.is_empty() || host.contains(':') || host.contains(char::is_whitespace) {
        return Err("expected host:port (IPv6 addresses in brackets)");
    }
    Ok(())
}

/// Parses an address given as text, falling back to "unspecified:0" which never occurs in the
/// defaults (they are constants checked by the tests).
fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Values that mean "none" for optional addresses (TOML has no null).
const OFF_WORDS: [&str; 3] = ["", "off", "none"];

/// Serde for `Option<SocketAddr>` written as a string, `"off"` for `None`.
mod opt_socket_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        if super::OFF_WORDS.contains(&s.trim().to_ascii_lowercase().as_str()) {
            return Ok(None);
        }
        s.trim().parse().map(Some).map_err(|_| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(&s),
                &"an ip:port socket address or \"off\"",
            )
        })
    }
}

/// Serde for `Option<String>`, `"off"` for `None`.
mod opt_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_deref().unwrap_or("off"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.trim();
        if super::OFF_WORDS.contains(&t.to_ascii_lowercase().as_str()) {
            Ok(None)
        } else {
            Ok(Some(t.to_string()))
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(defaults::DEFAULT_DATA_DIR),
            bridge: BridgeConfig::default(),
            node: NodeConfig::default(),
            tls: TlsConfig::default(),
            transport: TransportConfig::default(),
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
            dht: DhtConfig::default(),
            rpc: RpcConfig::default(),
            cache: CacheSettings::default(),
            gossip: GossipSettings::default(),
            auth: AuthConfig::default(),
            audit: AuditConfig::default(),
            rate: RateConfig::default(),
            crdt: CrdtSettings::default(),
            quota: quota::QuotaConfig::default(),
        }
    }
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            listen: addr(defaults::DEFAULT_BRIDGE_LISTEN),
            admin_listen: Some(addr(defaults::DEFAULT_BRIDGE_ADMIN)),
            realms: vec![defaults::DEFAULT_REALM.to_string()],
            level: crate::escalation::Level::Street,
            parents: Vec::new(),
            parent_server_name: defaults::DEFAULT_UPLINK_SERVER_NAME.to_string(),
            fleet: FleetConfig::default(),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: addr(defaults::DEFAULT_NODE_LISTEN),
            admin_listen: Some(addr(defaults::DEFAULT_NODE_ADMIN)),
            realm: defaults::DEFAULT_REALM.to_string(),
            cluster: defaults::DEFAULT_CLUSTER.to_string(),
            uplink: Some(defaults::DEFAULT_UPLINK.to_string()),
            uplink_server_name: defaults::DEFAULT_UPLINK_SERVER_NAME.to_string(),
            seeds: Vec::new(),
            advertise: None,
            uplink_pin_key: true,
            uplink_accept_new_key: false,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            mode: TlsMode::Development,
            cert_file: None,
            key_file: None,
            ca_file: None,
            verify_hostname: true,
            require_client_cert: false,
        }
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            keep_alive_ms: defaults::KEEP_ALIVE_MS,
            idle_timeout_ms: defaults::IDLE_TIMEOUT_MS,
            stream_receive_window: defaults::STREAM_RECEIVE_WINDOW,
            receive_window: defaults::CONNECTION_RECEIVE_WINDOW,
            send_window: defaults::SEND_WINDOW,
            udp_socket_buffer: defaults::UDP_SOCKET_BUFFER,
            max_concurrent_bidi_streams: defaults::MAX_CONCURRENT_BIDI_STREAMS,
            link_keep_alive_ms: defaults::LINK_KEEP_ALIVE_MS,
            link_idle_timeout_ms: defaults::LINK_IDLE_TIMEOUT_MS,
            ack_eliciting_threshold: defaults::ACK_ELICITING_THRESHOLD,
            ack_max_delay_ms: defaults::ACK_MAX_DELAY_MS,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_size: defaults::MAX_FRAME_SIZE,
            max_inflight: defaults::MAX_INFLIGHT,
            outbound_queue: defaults::OUTBOUND_QUEUE,
            qos0_stall_ms: defaults::QOS0_STALL_MS,
            max_connections: defaults::MAX_CONNECTIONS,
            max_connections_per_source: defaults::MAX_CONNECTIONS_PER_SOURCE,
            handshake_retry_above: defaults::HANDSHAKE_RETRY_ABOVE,
            handshakes_per_source_per_sec: defaults::HANDSHAKES_PER_SOURCE_PER_SEC,
            idle_evict_after_ms: defaults::IDLE_EVICT_AFTER_MS,
            max_subscriptions_per_connection: defaults::MAX_SUBSCRIPTIONS_PER_CONNECTION,
            dedup_window: defaults::DEDUP_WINDOW,
            slow_consumer_timeout_ms: defaults::SLOW_CONSUMER_TIMEOUT_MS,
            ack_timeout_ms: defaults::ACK_TIMEOUT_MS,
            uplink_settle_ms: defaults::UPLINK_SETTLE_MS,
            reconnect_initial_backoff_ms: defaults::RECONNECT_INITIAL_BACKOFF_MS,
            reconnect_max_backoff_ms: defaults::RECONNECT_MAX_BACKOFF_MS,
            drain_grace_ms: defaults::DRAIN_GRACE_MS,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: defaults::DEFAULT_LOG_LEVEL.to_string(),
            json: false,
        }
    }
}

mod validate;

// Per-tenant quotas (issue 12).
mod crdt;
pub mod quota;
pub use crdt::CrdtSettings;
mod rate;
pub use rate::RateConfig;

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error
mod tests;
