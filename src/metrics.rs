//! Prometheus metrics of one macula process.
//!
//! One [`prometheus::Registry`] is built at start ([`Metrics::new`]) and shared as
//! `Arc<Metrics>`; the admin listener ([`crate::admin`]) serves it at `/metrics`. Names follow
//! the Prometheus conventions (`macula_` prefix, `_total` for counters, base units `_seconds`
//! and `_bytes`). Labels take values from small fixed sets only, listed below — never peer ids,
//! topics or addresses (lessons-from-peers 4, STYLE 8).

use std::sync::Arc;

pub mod fleet;
pub mod gossip;
pub mod revocation;
pub mod rpc;
// Per-tenant quotas (issue 12).
pub mod quota;
pub use fleet::FleetMetrics;
pub use gossip::GossipMetrics;
pub use quota::QuotaMetrics;
pub use revocation::RevocationMetrics;
pub use rpc::RpcMetrics;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Values of the `role` label of the connection metrics: a local client of a node or bridge, a
/// node connected to a bridge, and a node's own connection up to its bridge.
pub const ROLES: [&str; 3] = ["client", "node", "uplink"];

/// Values of the `reason` label of `macula_connections_rejected_total`.
pub const REJECT_REASONS: [&str; 17] = [
    "max_connections",
    "handshake_rate",
    "handshake",
    "unknown_realm",
    "protocol",
    "shutting_down",
    "per_source",
    "no_proof",
    "bad_proof",
    "no_credential",
    "bad_credential",
    "wrong_realm",
    "expired",
    "wrong_role",
    "wrong_cluster",
    "revoked",
    "other",
];

/// Values of the `reason` label of `macula_messages_dropped_total`.
pub const DROP_REASONS: [&str; 12] = [
    "queue_full",
    "slow_consumer",
    "no_route",
    "invalid",
    "shutdown",
    "too_large",
    "closed",
    "retries_exhausted",
    "parent_down",
    "peer_down",
    "session_lost",
    "denied",
];

/// Values of the `code` label of `macula_protocol_errors_total` (the wire `ErrorCode`s), plus
/// `other` for anything not in this list.
pub const ERROR_CODE_LABELS: [&str; 21] = [
    "protocol",
    "frame_too_large",
    "unsupported_version",
    "unknown_type",
    "malformed_body",
    "unknown_realm",
    "invalid_topic",
    "not_connected",
    "unsupported_qos",
    "inflight_exceeded",
    "slow_consumer",
    "shutting_down",
    "internal",
    "truncated",
    "limit_exceeded",
    "already_connected",
    "fleet_mismatch",
    "loop_detected",
    "unauthenticated",
    "permission_denied",
    "other",
];

/// Message types of the wire protocol and their `type` label; any other byte counts as `other`.
/// (A local copy: the wire module owns the numbers; this table must follow it.)
pub const TYPE_LABELS: [(u8, &str); 30] = [
    (0x01, "connect"),
    (0x02, "disconnect"),
    (0x03, "ping"),
    (0x04, "pong"),
    (0x05, "connected"),
    (0x06, "error"),
    (0x07, "redirect"),
    (0x08, "fleet_view"),
    (0x09, "bridge_path"),
    (0x0a, "revocation_list"),
    (0x10, "publish"),
    (0x11, "subscribe"),
    (0x12, "unsubscribe"),
    (0x14, "puback"),
    (0x15, "suback"),
    (0x20, "call"),
    (0x21, "reply"),
    (0x26, "register"),
    (0x27, "unregister"),
    (0x40, "find_node"),
    (0x41, "find_node_reply"),
    (0x42, "store"),
    (0x43, "find_value"),
    (0x44, "find_value_reply"),
    (0x45, "store_ack"),
    (0x70, "gossip_push"),
    (0x71, "gossip_pull"),
    (0x72, "gossip_pull_reply"),
    (0x73, "gossip_sync"),
    (0x74, "gossip_sync_reply"),
];

/// Label of message types not in [`TYPE_LABELS`].
pub const OTHER_TYPE: &str = "other";

/// Upper bounds of the `macula_delivery_latency_seconds` buckets, seconds: 10 µs to 10 s in a
/// 1-2.5-5 progression (local delivery targets p99 < 10 ms, so the low end is fine-grained).
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// All metrics of the process, registered in [`Metrics::registry`].
pub struct Metrics {
    /// The registry every metric below is registered in; encode it with [`Metrics::encode_text`].
    pub registry: Registry,
    /// `macula_connections_open{role}`: QUIC connections currently open, by [`ROLES`].
    pub connections_open: IntGaugeVec,
    /// `macula_connections_accepted_total{role}`: connections that completed the handshake and
    /// the CONNECT exchange, by [`ROLES`].
    pub connections_accepted_total: IntCounterVec,
    /// `macula_connections_rejected_total{reason}`: connections refused, by [`REJECT_REASONS`].
    pub connections_rejected_total: IntCounterVec,
    /// `macula_handshake_retries_total`: connection attempts answered with a QUIC Retry
    /// (address validation while handshakes pile up).
    pub handshake_retries_total: IntCounter,
    /// `macula_connections_evicted_total`: sessions closed for idling while the listener was
    /// nearly full (`limits.idle_evict_after_ms`).
    pub connections_evicted_total: IntCounter,
    /// `macula_frames_received_total{type}` and `macula_received_bytes_total{type}`: frames and
    /// their bytes (header included) read from peers.
    pub frames_in: FrameCounters,
    /// `macula_frames_sent_total{type}` and `macula_sent_bytes_total{type}`: frames and their
    /// bytes (header included) written to peers.
    pub frames_out: FrameCounters,
    /// `macula_messages_published_total`: messages accepted from local publishers.
    pub messages_published_total: IntCounter,
    /// `macula_messages_relayed_total`: messages forwarded to an uplink or a peer node.
    pub messages_relayed_total: IntCounter,
    /// `macula_messages_delivered_total`: messages delivered to local subscribers (one per
    /// subscriber).
    pub messages_delivered_total: IntCounter,
    /// `macula_messages_deduplicated_total`: messages dropped because their id was seen already.
    pub messages_deduplicated_total: IntCounter,
    /// `macula_messages_dropped_total{reason}`: messages dropped, by [`DROP_REASONS`].
    pub messages_dropped_total: IntCounterVec,
    /// The children of `messages_dropped_total`, resolved once, in [`DROP_REASONS`] order.
    drop_counters: Vec<IntCounter>,
    /// `macula_qos1_retransmissions_total`: QoS 1 messages re-sent after the ack timeout.
    pub qos1_retransmissions_total: IntCounter,
    /// `macula_protocol_errors_total{code}`: protocol errors detected or reported, by
    /// [`ERROR_CODE_LABELS`]; increment with [`Metrics::protocol_error`].
    pub protocol_errors_total: IntCounterVec,
    /// `macula_subscriptions`: subscriptions currently held, over all connections.
    pub subscriptions: IntGauge,
    /// `macula_interest_refused_total`: `subscribe` requests refused because the link would
    /// hold more patterns than `limits.max_subscriptions_per_connection` (a child bridge
    /// advertising its subtree counts here too).
    pub interest_refused_total: IntCounter,
    /// `macula_admin_refused_total`: admin requests for tenant data or a change of state
    /// (`/state`, `/fleet`, `/drain`) refused for want of a valid admin token.
    pub admin_refused_total: IntCounter,
    /// `macula_permission_denied_total{action}`: requests refused by the session's
    /// credential permissions (`docs/AUTH.md`), by action (`publish`, `subscribe`, `call`,
    /// `register`, `state`).
    pub permission_denied_total: IntCounterVec,
    /// `macula_connections_revoked_total`: live sessions closed because their credential was
    /// revoked (a list from `auth.revocation_file` or from a peer).
    pub connections_revoked_total: IntCounter,
    /// `macula_uplink_key_refused_total`: uplink sessions refused because the bridge proved
    /// another key than the one pinned for its address (trust on first use, development mode).
    pub uplink_key_refused_total: IntCounter,
    /// `macula_uplink_interest_resyncs_total`: uplink sessions ended because an interest
    /// change could not be queued to the bridge (its control queue full); the next session
    /// announces the whole interest again.
    pub uplink_interest_resyncs_total: IntCounter,
    /// `macula_publish_stalls_total`: QoS 0 publishes that found a consumer's outbound queue
    /// full and waited for room (up to `limits.qos0_stall_ms`), slowing their publisher.
    pub publish_stalls_total: IntCounter,
    /// `macula_slow_consumer_sheds_total`: consumers whose outbound queue stayed full for
    /// `limits.qos0_stall_ms` and began shedding their own QoS 0 messages.
    pub slow_consumer_sheds_total: IntCounter,
    /// `macula_delivery_latency_seconds`: time from a message's acceptance to its delivery to a
    /// subscriber's outbound queue, seconds ([`LATENCY_BUCKETS`]).
    pub delivery_latency_seconds: Histogram,
    /// `macula_uplink_reconnects_total`: uplink reconnections after a loss.
    pub uplink_reconnects_total: IntCounter,
    /// `macula_inflight_messages`: QoS 1 messages sent and not yet acknowledged, all
    /// connections.
    pub inflight_messages: IntGauge,
    /// Pre-resolved children of `protocol_errors_total`, in [`ERROR_CODE_LABELS`] order.
    protocol_error_children: Vec<IntCounter>,
    /// Discovery and RPC: DHT, lookups, calls ([`RpcMetrics`]).
    pub rpc: RpcMetrics,
    /// Rate limits: frames held back and time waited, by scope ([`crate::rate::RateMetrics`]).
    pub rate: crate::rate::RateMetrics,
    /// The lookup caches, per level (`macula_escalation_*`).
    pub cache: crate::escalation::CacheMetrics,
    /// CRDT gossip (`macula_gossip_*`, [`GossipMetrics`]).
    pub gossip: GossipMetrics,
    /// The bridge fleet (`macula_fleet_*`, [`FleetMetrics`]).
    pub fleet: FleetMetrics,
    /// Per-tenant quotas (`macula_quota_*`, [`QuotaMetrics`]).
    pub quota: QuotaMetrics,
    /// Revocation lists spread between processes (`macula_revocation_*`,
    /// [`RevocationMetrics`]).
    pub revocation: RevocationMetrics,
}

/// Per-message-type frame and byte counters, pre-resolved so the hot path does no label
/// hashing: index by the message type byte of the frame header.
pub struct FrameCounters {
    /// Slot in `frames`/`bytes` of each type byte (the last slot is `other`).
    slot: [u8; 256],
    frames: Vec<IntCounter>,
    bytes: Vec<IntCounter>,
}

impl FrameCounters {
    /// Counts one frame of type `msg_type` and `bytes` bytes.
    pub fn inc(&self, msg_type: u8, bytes: usize) {
        self.inc_by(msg_type, 1, bytes as u64);
    }

    /// Counts `frames` frames of type `msg_type` totalling `bytes` bytes.
    pub fn inc_by(&self, msg_type: u8, frames: u64, bytes: u64) {
        let slot = usize::from(self.slot[usize::from(msg_type)]);
        self.frames[slot].inc_by(frames);
        self.bytes[slot].inc_by(bytes);
    }

    /// Frames counted so far for `msg_type` (types outside [`TYPE_LABELS`] share `other`).
    pub fn frames(&self, msg_type: u8) -> u64 {
        self.frames[usize::from(self.slot[usize::from(msg_type)])].get()
    }

    /// Bytes counted so far for `msg_type` (types outside [`TYPE_LABELS`] share `other`).
    pub fn bytes(&self, msg_type: u8) -> u64 {
        self.bytes[usize::from(self.slot[usize::from(msg_type)])].get()
    }

    fn new(registry: &Registry, direction: Direction) -> FrameCounters {
        let (frames_name, frames_help, bytes_name, bytes_help) = match direction {
            Direction::In => (
                "macula_frames_received_total",
                "Frames received from peers, by message type.",
                "macula_received_bytes_total",
                "Bytes of frames received from peers (header included), by message type.",
            ),
            Direction::Out => (
                "macula_frames_sent_total",
                "Frames sent to peers, by message type.",
                "macula_sent_bytes_total",
                "Bytes of frames sent to peers (header included), by message type.",
            ),
        };
        let frames_vec = register(registry, counter_vec(frames_name, frames_help, "type"));
        let bytes_vec = register(registry, counter_vec(bytes_name, bytes_help, "type"));
        let mut slot = [TYPE_LABELS.len() as u8; 256]; // default: the `other` slot
        for (i, (ty, _)) in TYPE_LABELS.iter().enumerate() {
            slot[usize::from(*ty)] = i as u8;
        }
        let labels: Vec<&str> = TYPE_LABELS
            .iter()
            .map(|(_, label)| *label)
            .chain(std::iter::once(OTHER_TYPE))
            .collect();
        let frames = labels
            .iter()
            .map(|l| frames_vec.with_label_values(&[l]))
            .collect();
        let bytes = labels
            .iter()
            .map(|l| bytes_vec.with_label_values(&[l]))
            .collect();
        FrameCounters {
            slot,
            frames,
            bytes,
        }
    }
}

impl Metrics {
    /// Builds the registry and registers every metric; label values of the fixed sets are
    /// created up front so they are exported as 0 before their first event.
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let r = &registry;
        let connections_open = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "macula_connections_open",
                    "QUIC connections currently open, by role.",
                ),
                &["role"],
            )
            .expect("valid metric options"),
        );
        let connections_accepted_total = register(
            r,
            counter_vec(
                "macula_connections_accepted_total",
                "Connections accepted (handshake and CONNECT completed), by role.",
                "role",
            ),
        );
        for role in ROLES {
            connections_open.with_label_values(&[role]);
            connections_accepted_total.with_label_values(&[role]);
        }
        let connections_rejected_total = register(
            r,
            counter_vec(
                "macula_connections_rejected_total",
                "Connections refused, by reason.",
                "reason",
            ),
        );
        for reason in REJECT_REASONS {
            connections_rejected_total.with_label_values(&[reason]);
        }
        let messages_dropped_total = register(
            r,
            counter_vec(
                "macula_messages_dropped_total",
                "Messages dropped, by reason.",
                "reason",
            ),
        );
        let drop_counters = DROP_REASONS
            .iter()
            .map(|reason| messages_dropped_total.with_label_values(&[reason]))
            .collect();
        let protocol_errors_total = register(
            r,
            counter_vec(
                "macula_protocol_errors_total",
                "Protocol errors detected or reported, by error code.",
                "code",
            ),
        );
        let protocol_error_children = ERROR_CODE_LABELS
            .iter()
            .map(|code| protocol_errors_total.with_label_values(&[code]))
            .collect();
        let delivery_latency_seconds = register(
            r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "macula_delivery_latency_seconds",
                    "Time from a message's acceptance to its delivery to a subscriber's queue.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid histogram options"),
        );
        Arc::new(Metrics {
            connections_open,
            connections_accepted_total,
            handshake_retries_total: register(
                r,
                counter(
                    "macula_handshake_retries_total",
                    "Connection attempts answered with a QUIC Retry (address validation).",
                ),
            ),
            connections_evicted_total: register(
                r,
                counter(
                    "macula_connections_evicted_total",
                    "Sessions closed for idling while the listener was nearly full.",
                ),
            ),
            connections_rejected_total,
            frames_in: FrameCounters::new(r, Direction::In),
            frames_out: FrameCounters::new(r, Direction::Out),
            messages_published_total: register(
                r,
                counter(
                    "macula_messages_published_total",
                    "Messages accepted from local publishers.",
                ),
            ),
            messages_relayed_total: register(
                r,
                counter(
                    "macula_messages_relayed_total",
                    "Messages forwarded to an uplink or a peer node.",
                ),
            ),
            messages_delivered_total: register(
                r,
                counter(
                    "macula_messages_delivered_total",
                    "Messages delivered to local subscribers (one per subscriber).",
                ),
            ),
            messages_deduplicated_total: register(
                r,
                counter(
                    "macula_messages_deduplicated_total",
                    "Messages dropped because their id was already seen.",
                ),
            ),
            messages_dropped_total,
            drop_counters,
            qos1_retransmissions_total: register(
                r,
                counter(
                    "macula_qos1_retransmissions_total",
                    "QoS 1 messages re-sent after the acknowledgement timeout.",
                ),
            ),
            protocol_errors_total,
            subscriptions: register(
                r,
                gauge(
                    "macula_subscriptions",
                    "Subscriptions currently held, over all connections.",
                ),
            ),
            admin_refused_total: register(
                r,
                counter(
                    "macula_admin_refused_total",
                    "Admin requests for tenant data or a change of state refused (no valid admin token).",
                ),
            ),
            uplink_key_refused_total: register(
                r,
                counter(
                    "macula_uplink_key_refused_total",
                    "Uplink sessions refused: the bridge proved another key than the pinned one.",
                ),
            ),
            publish_stalls_total: register(
                r,
                counter(
                    "macula_publish_stalls_total",
                    "QoS 0 publishes that waited for room in a consumer's full outbound queue.",
                ),
            ),
            slow_consumer_sheds_total: register(
                r,
                counter(
                    "macula_slow_consumer_sheds_total",
                    "Consumers whose queue stayed full past limits.qos0_stall_ms and shed QoS 0.",
                ),
            ),
            uplink_interest_resyncs_total: register(
                r,
                counter(
                    "macula_uplink_interest_resyncs_total",
                    "Uplink sessions restarted because an interest change could not be queued.",
                ),
            ),
            connections_revoked_total: register(
                r,
                counter(
                    "macula_connections_revoked_total",
                    "Live sessions closed because their credential was revoked.",
                ),
            ),
            permission_denied_total: {
                let c = register(
                    r,
                    counter_vec(
                        "macula_permission_denied_total",
                        "Requests refused by the credential's permissions, by action.",
                        "action",
                    ),
                );
                for a in crate::auth::Action::ALL {
                    c.with_label_values(&[a.as_str()]);
                }
                c
            },
            interest_refused_total: register(
                r,
                counter(
                    "macula_interest_refused_total",
                    "Subscribe requests refused: the link would exceed its pattern bound.",
                ),
            ),
            delivery_latency_seconds,
            uplink_reconnects_total: register(
                r,
                counter(
                    "macula_uplink_reconnects_total",
                    "Uplink reconnections after a loss.",
                ),
            ),
            inflight_messages: register(
                r,
                gauge(
                    "macula_inflight_messages",
                    "QoS 1 messages sent and not yet acknowledged, all connections.",
                ),
            ),
            protocol_error_children,
            rpc: RpcMetrics::new(r),
            rate: crate::rate::RateMetrics::new(r),
            gossip: GossipMetrics::new(r),
            fleet: FleetMetrics::new(r),
            quota: QuotaMetrics::new(r),
            revocation: RevocationMetrics::new(r),
            cache: crate::escalation::CacheMetrics::new(r).expect("registered once"),
            registry,
        })
    }

    /// Counts one protocol error with code label `code_label` (one of [`ERROR_CODE_LABELS`];
    /// any other value counts as `other`, so cardinality stays bounded). No hashing.
    pub fn protocol_error(&self, code_label: &'static str) {
        let i = ERROR_CODE_LABELS
            .iter()
            .position(|l| *l == code_label)
            .unwrap_or(ERROR_CODE_LABELS.len() - 1);
        self.protocol_error_children[i].inc();
    }

    /// Counts one request refused by a credential's permissions (`macula_permission_denied_total`).
    pub fn permission_denied(&self, action: crate::auth::Action) {
        self.permission_denied_total
            .with_label_values(&[action.as_str()])
            .inc();
    }

    /// Counts one dropped message with `reason` (one of [`DROP_REASONS`]; another
    /// value gets its own label, at the cost of a hash lookup). Drops happen at
    /// message rate under saturation, so the known reasons skip the label hashing.
    pub fn dropped(&self, reason: &'static str) {
        self.dropped_n(reason, 1);
    }

    /// Counts `n` dropped messages with `reason`.
    pub fn dropped_n(&self, reason: &'static str, n: u64) {
        match DROP_REASONS.iter().position(|r| *r == reason) {
            Some(i) => self.drop_counters[i].inc_by(n),
            None => self
                .messages_dropped_total
                .with_label_values(&[reason])
                .inc_by(n),
        }
    }

    /// The registry in the Prometheus text exposition format 0.0.4 (what `/metrics` serves).
    pub fn encode_text(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            return format!("# error encoding metrics: {e}\n");
        }
        String::from_utf8(buf).unwrap_or_else(|e| format!("# metrics are not UTF-8: {e}\n"))
    }
}

/// Content type of [`Metrics::encode_text`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

// ---------------------------------------------------------------------------------------------
// Private helpers
// ---------------------------------------------------------------------------------------------

enum Direction {
    In,
    Out,
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    registry
        .register(Box::new(m.clone()))
        .expect("metric names are unique within the registry");
    m
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric options")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric options")
}

fn counter_vec(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric options")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_text_contains_every_metric() {
        let m = Metrics::new();
        m.frames_in.inc(0x10, 100);
        m.delivery_latency_seconds.observe(0.001);
        let text = m.encode_text();
        for name in [
            "macula_connections_open",
            "macula_connections_accepted_total",
            "macula_connections_rejected_total",
            "macula_frames_received_total",
            "macula_frames_sent_total",
            "macula_received_bytes_total",
            "macula_sent_bytes_total",
            "macula_messages_published_total",
            "macula_messages_relayed_total",
            "macula_messages_delivered_total",
            "macula_messages_deduplicated_total",
            "macula_messages_dropped_total",
            "macula_publish_stalls_total",
            "macula_slow_consumer_sheds_total",
            "macula_qos1_retransmissions_total",
            "macula_protocol_errors_total",
            "macula_subscriptions",
            "macula_interest_refused_total",
            "macula_permission_denied_total",
            "macula_delivery_latency_seconds_bucket",
            "macula_uplink_reconnects_total",
            "macula_inflight_messages",
        ] {
            assert!(
                text.contains(&format!("\n{name}")),
                "{name} missing:\n{text}"
            );
        }
        assert!(text.contains("macula_connections_open{role=\"uplink\"} 0"));
        assert!(text.contains("macula_messages_dropped_total{reason=\"slow_consumer\"} 0"));
        assert!(text.contains("macula_frames_received_total{type=\"publish\"} 1"));
        assert!(text.contains("macula_received_bytes_total{type=\"publish\"} 100"));
    }

    #[test]
    fn frame_counters_index_by_type() {
        let m = Metrics::new();
        for (ty, _) in TYPE_LABELS {
            m.frames_out.inc(ty, usize::from(ty));
        }
        for (ty, _) in TYPE_LABELS {
            assert_eq!(m.frames_out.frames(ty), 1, "type {ty:#x}");
            assert_eq!(m.frames_out.bytes(ty), u64::from(ty), "type {ty:#x}");
        }
        m.frames_out.inc(0x00, 1);
        m.frames_out.inc_by(0xff, 2, 10);
        m.frames_out.inc(0x13, 5);
        assert_eq!(m.frames_out.frames(0x99), 4, "unknown types share `other`");
        assert_eq!(m.frames_out.bytes(0x00), 16);
        assert_eq!(m.frames_in.frames(0x10), 0, "directions are separate");
        let text = m.encode_text();
        assert!(
            text.contains("macula_frames_sent_total{type=\"other\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("macula_sent_bytes_total{type=\"suback\"} 21"),
            "{text}"
        );
    }

    #[test]
    fn type_labels_follow_the_wire_module() {
        use crate::wire::MessageType;
        let wire: Vec<(u8, &str)> = MessageType::ALL
            .iter()
            .map(|t| (*t as u8, t.as_str()))
            .collect();
        assert_eq!(TYPE_LABELS.to_vec(), wire);
        const { assert!(TYPE_LABELS.len() < 255, "slot indices fit in a u8") };
    }

    #[test]
    fn protocol_error_codes_are_bounded() {
        let m = Metrics::new();
        m.protocol_error("frame_too_large");
        m.protocol_error("frame_too_large");
        m.protocol_error("made_up");
        let get = |code: &str| m.protocol_errors_total.with_label_values(&[code]).get();
        assert_eq!(get("frame_too_large"), 2);
        assert_eq!(get("other"), 1);
        let text = m.encode_text();
        assert!(!text.contains("made_up"));
        assert!(text.contains("macula_protocol_errors_total{code=\"already_connected\"} 0"));
    }

    #[test]
    fn two_instances_do_not_clash() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.messages_published_total.inc();
        assert_eq!(b.messages_published_total.get(), 0);
    }

    /// Checks the exposition with `promtool check metrics` when promtool is installed
    /// (Debian package `prometheus`); skipped otherwise.
    #[test]
    fn promtool_accepts_the_exposition() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let m = Metrics::new();
        m.frames_in.inc(0x01, 40);
        m.delivery_latency_seconds.observe(0.002);
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("promtool not installed; skipping");
            return;
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(m.encode_text().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool: {report}");
        assert!(report.trim().is_empty(), "promtool lint: {report}");
    }
}
