//! The checks of [`Config::validate`] by section: modes, fleet, TLS, transport, limits.

use std::time::Duration;

use super::*;

impl Config {
    pub(super) fn validate_modes(&self) -> Result<(), ConfigError> {
        if self.bridge.realms.is_empty() {
            return invalid("bridge.realms", "must list at least one realm");
        }
        for realm in &self.bridge.realms {
            if let Err(reason) = check_realm(realm) {
                return invalid("bridge.realms", format!("{realm:?}: {reason}"));
            }
        }
        if let Err(reason) = check_realm(&self.node.realm) {
            return invalid("node.realm", format!("{:?}: {reason}", self.node.realm));
        }
        let cluster = &self.node.cluster;
        if cluster.is_empty()
            || cluster.len() > 64
            || !cluster
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return invalid(
                "node.cluster",
                format!("{cluster:?}: must be 1-64 characters of [a-z0-9._-]"),
            );
        }
        if let Some(uplink) = &self.node.uplink {
            if let Err(reason) = check_host_port(uplink) {
                return invalid("node.uplink", format!("{uplink:?}: {reason}"));
            }
        }
        for (key, list) in [
            ("node.seeds", &self.node.seeds),
            ("bridge.parents", &self.bridge.parents),
            ("bridge.fleet.peers", &self.bridge.fleet.peers),
        ] {
            for target in list {
                if let Err(reason) = check_host_port(target) {
                    return invalid(key, format!("{target:?}: {reason}"));
                }
            }
        }
        if self.bridge.level == crate::escalation::Level::Cluster {
            return invalid(
                "bridge.level",
                "\"cluster\" is the level of nodes; a bridge serves street or above",
            );
        }
        if self.bridge.level == crate::escalation::Level::Global && !self.bridge.parents.is_empty()
        {
            return invalid("bridge.parents", "a global bridge has no parent");
        }
        self.validate_fleet()?;
        let d = &self.dht;
        if d.record_ttl_ms < 1000 || d.record_ttl_ms > d.max_record_ttl_ms {
            return invalid(
                "dht.record_ttl_ms",
                format!(
                    "must be in [1000, dht.max_record_ttl_ms = {}]",
                    d.max_record_ttl_ms
                ),
            );
        }
        if d.max_record_ttl_ms > u64::from(u32::MAX) {
            return invalid(
                "dht.max_record_ttl_ms",
                "must fit in 32 bits of ms (~49 days)",
            );
        }
        if d.query_timeout_ms == 0 {
            return invalid("dht.query_timeout_ms", "must be > 0");
        }
        if !(1..=10).contains(&self.rpc.max_attempts) {
            return invalid("rpc.max_attempts", "must be in [1, 10]");
        }
        if self.rpc.max_pending == 0 {
            return invalid("rpc.max_pending", "must be > 0");
        }
        if self.cache.max_entries == 0 || self.cache.negative_ttl_ms == 0 {
            return invalid(
                "cache.max_entries",
                "cache.max_entries and cache.negative_ttl_ms must be > 0",
            );
        }
        let g = &self.gossip;
        if g.push_interval_ms == 0 || g.anti_entropy_interval_ms == 0 {
            return invalid(
                "gossip.push_interval_ms",
                "gossip.push_interval_ms and gossip.anti_entropy_interval_ms must be > 0",
            );
        }
        if !(1..=64).contains(&g.fanout) {
            return invalid("gossip.fanout", "must be in [1, 64]");
        }
        if !(1024..=65_536).contains(&g.max_message_bytes) {
            return invalid("gossip.max_message_bytes", "must be in [1024, 65536]");
        }
        let name = self.node.uplink_server_name.clone();
        if rustls::pki_types::ServerName::try_from(name.clone()).is_err() {
            return invalid(
                "node.uplink_server_name",
                format!("{name:?} is not a valid DNS name or IP address"),
            );
        }
        Ok(())
    }

    pub(super) fn validate_fleet(&self) -> Result<(), ConfigError> {
        let f = &self.bridge.fleet;
        if let Some(name) = &f.name {
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            {
                return invalid(
                    "bridge.fleet.name",
                    format!("{name:?}: must be 1-64 characters of [a-z0-9._-]"),
                );
            }
        }
        if let Some(dns) = &f.dns {
            if let Err(reason) = check_host_port(dns) {
                return invalid("bridge.fleet.dns", format!("{dns:?}: {reason}"));
            }
        }
        if !(1..=1000).contains(&f.weight) {
            return invalid("bridge.fleet.weight", "must be in [1, 1000]");
        }
        for (key, v) in [
            ("bridge.fleet.dns_interval_ms", f.dns_interval_ms),
            ("bridge.fleet.suspect_after_ms", f.suspect_after_ms),
            ("bridge.fleet.suspicion_timeout_ms", f.suspicion_timeout_ms),
            ("bridge.fleet.drain_grace_ms", f.drain_grace_ms),
        ] {
            if v == 0 {
                return invalid(key, "must be > 0");
            }
        }
        if f.name.is_some() && f.advertise.is_none() && self.bridge.listen.ip().is_unspecified() {
            return invalid(
                "bridge.fleet.advertise",
                "required when bridge.listen is a wildcard address (workers and nodes dial it)",
            );
        }
        Ok(())
    }

    pub(super) fn validate_tls(&self) -> Result<(), ConfigError> {
        let tls = &self.tls;
        match tls.mode {
            TlsMode::Development => {
                if tls.require_client_cert {
                    return invalid(
                        "tls.require_client_cert",
                        "mutual TLS needs tls.mode = \"production\" (a CA to verify clients)",
                    );
                }
            }
            TlsMode::Production => {
                let files: [(&'static str, &Option<PathBuf>, &str); 3] = [
                    (
                        "tls.cert_file",
                        &tls.cert_file,
                        "the certificate this process serves",
                    ),
                    (
                        "tls.key_file",
                        &tls.key_file,
                        "the private key of tls.cert_file",
                    ),
                    ("tls.ca_file", &tls.ca_file, "the CA that verifies peers"),
                ];
                for (key, path, what) in files {
                    match path {
                        None => {
                            return invalid(key, format!("required in production mode: {what}"))
                        }
                        Some(p) if !p.is_file() => {
                            return invalid(key, format!("{} is not a readable file", p.display()))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn validate_transport(&self) -> Result<(), ConfigError> {
        let t = &self.transport;
        let frame = u64::from(self.limits.max_frame_size);
        if t.idle_timeout_ms == 0 {
            return invalid("transport.idle_timeout_ms", "must be > 0");
        }
        if quinn::IdleTimeout::try_from(Duration::from_millis(t.idle_timeout_ms)).is_err() {
            return invalid("transport.idle_timeout_ms", "too large for QUIC");
        }
        if t.keep_alive_ms == 0 || t.keep_alive_ms >= t.idle_timeout_ms {
            return invalid(
                "transport.keep_alive_ms",
                format!(
                    "must be > 0 and < transport.idle_timeout_ms ({} ms), or idle connections close",
                    t.idle_timeout_ms
                ),
            );
        }
        if t.link_idle_timeout_ms == 0
            || quinn::IdleTimeout::try_from(Duration::from_millis(t.link_idle_timeout_ms)).is_err()
        {
            return invalid("transport.link_idle_timeout_ms", "must be > 0 and fit QUIC");
        }
        if t.link_keep_alive_ms == 0 || t.link_keep_alive_ms >= t.link_idle_timeout_ms {
            return invalid(
                "transport.link_keep_alive_ms",
                format!(
                    "must be > 0 and < transport.link_idle_timeout_ms ({} ms), or idle links close",
                    t.link_idle_timeout_ms
                ),
            );
        }
        let windows: [(&'static str, u64); 3] = [
            ("transport.stream_receive_window", t.stream_receive_window),
            ("transport.receive_window", t.receive_window),
            ("transport.send_window", t.send_window),
        ];
        for (key, value) in windows {
            if value < frame {
                return invalid(
                    key,
                    format!(
                        "{value} bytes is below limits.max_frame_size ({frame} bytes): \
                         a largest frame would need many round trips of flow-control credit"
                    ),
                );
            }
            if value > quinn::VarInt::MAX.into_inner() {
                return invalid(key, "larger than a QUIC variable-length integer (2^62 - 1)");
            }
        }
        if t.udp_socket_buffer > i32::MAX as usize {
            return invalid(
                "transport.udp_socket_buffer",
                "must be < 2 GiB (0 = OS default)",
            );
        }
        if t.ack_eliciting_threshold > 1024 {
            return invalid(
                "transport.ack_eliciting_threshold",
                "must be in [0, 1024] (0 = off)",
            );
        }
        if !(1..=16_383).contains(&t.ack_max_delay_ms) {
            return invalid(
                "transport.ack_max_delay_ms",
                "must be in [1, 16383] (RFC 9000 §18.2: max_ack_delay < 2^14 ms)",
            );
        }
        if !(1..=1024).contains(&t.max_concurrent_bidi_streams) {
            return invalid(
                "transport.max_concurrent_bidi_streams",
                "must be in [1, 1024]",
            );
        }
        Ok(())
    }

    pub(super) fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if !(defaults::MIN_MAX_FRAME_SIZE..=defaults::MAX_MAX_FRAME_SIZE)
            .contains(&l.max_frame_size)
        {
            return invalid(
                "limits.max_frame_size",
                format!(
                    "{} bytes is outside [{}, {}]",
                    l.max_frame_size,
                    defaults::MIN_MAX_FRAME_SIZE,
                    defaults::MAX_MAX_FRAME_SIZE
                ),
            );
        }
        let non_zero: [(&'static str, u64); 12] = [
            ("limits.max_inflight", u64::from(l.max_inflight)),
            ("limits.outbound_queue", l.outbound_queue as u64),
            ("limits.max_connections", l.max_connections as u64),
            (
                "limits.max_connections_per_source",
                l.max_connections_per_source as u64,
            ),
            (
                "limits.max_subscriptions_per_connection",
                l.max_subscriptions_per_connection as u64,
            ),
            ("limits.dedup_window", l.dedup_window as u64),
            (
                "limits.slow_consumer_timeout_ms",
                l.slow_consumer_timeout_ms,
            ),
            ("limits.ack_timeout_ms", l.ack_timeout_ms),
            ("limits.uplink_settle_ms", l.uplink_settle_ms),
            (
                "limits.reconnect_initial_backoff_ms",
                l.reconnect_initial_backoff_ms,
            ),
            (
                "limits.reconnect_max_backoff_ms",
                l.reconnect_max_backoff_ms,
            ),
            ("limits.drain_grace_ms", l.drain_grace_ms),
        ];
        for (key, value) in non_zero {
            if value == 0 {
                return invalid(key, "must be > 0");
            }
        }
        if l.qos0_stall_ms > l.slow_consumer_timeout_ms {
            return invalid(
                "limits.qos0_stall_ms",
                format!(
                    "{} ms is longer than limits.slow_consumer_timeout_ms ({} ms): a QoS 0 \
                     publish would wait longer than a QoS 1 one",
                    l.qos0_stall_ms, l.slow_consumer_timeout_ms
                ),
            );
        }
        if l.reconnect_initial_backoff_ms > l.reconnect_max_backoff_ms {
            return invalid(
                "limits.reconnect_initial_backoff_ms",
                format!(
                    "must be <= limits.reconnect_max_backoff_ms ({} ms)",
                    l.reconnect_max_backoff_ms
                ),
            );
        }
        if !(1..=60_000).contains(&self.rate.burst_ms) {
            return invalid("rate.burst_ms", "must be in [1, 60000]");
        }
        Ok(())
    }
}
