//! Tests of configuration loading (figment layers) and validation.

use super::*;
use figment::Jail;

/// Command-line overrides as `main` would declare them: nested, `None` skipped.
#[derive(Serialize, Default)]
struct Cli {
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<CliNode>,
}

#[derive(Serialize, Default)]
struct CliNode {
    #[serde(skip_serializing_if = "Option::is_none")]
    realm: Option<String>,
}

fn no_overrides() -> Cli {
    Cli::default()
}

fn load_in_jail(file: Option<&str>, overrides: &Cli) -> Result<Config, ConfigError> {
    Config::load(file.map(Path::new), overrides)
}

fn invalid_key(c: &Config) -> &'static str {
    match c.validate() {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn defaults_are_valid_and_match_constants() {
    let c = Config::default();
    c.validate().expect("defaults validate");
    assert_eq!(c.bridge.listen.to_string(), defaults::DEFAULT_BRIDGE_LISTEN);
    assert_eq!(c.node.listen.to_string(), defaults::DEFAULT_NODE_LISTEN);
    assert_eq!(
        c.bridge.admin_listen.map(|a| a.to_string()).as_deref(),
        Some(defaults::DEFAULT_BRIDGE_ADMIN)
    );
    assert_eq!(
        c.node.admin_listen.map(|a| a.to_string()).as_deref(),
        Some(defaults::DEFAULT_NODE_ADMIN)
    );
    assert_eq!(c.bridge.listen.port(), defaults::DEFAULT_PORT);
    assert_eq!(c.node.uplink.as_deref(), Some(defaults::DEFAULT_UPLINK));
    const { assert!(defaults::KEEP_ALIVE_MS < defaults::IDLE_TIMEOUT_MS) };
}

#[test]
fn load_without_anything_gives_defaults() {
    Jail::expect_with(|_jail| {
        assert_eq!(
            load_in_jail(None, &no_overrides()).unwrap(),
            Config::default()
        );
        Ok(())
    });
}

#[test]
fn toml_file_overrides_defaults() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "macula.toml",
            r#"
            data_dir = "/var/lib/macula"
            [node]
            realm = "com.example"
            uplink = "bridge.example.com:9443"
            admin_listen = "off"
            [limits]
            max_frame_size = 65536
            "#,
        )?;
        let c = load_in_jail(Some("macula.toml"), &no_overrides()).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/macula"));
        assert_eq!(c.node.realm, "com.example");
        assert_eq!(c.node.uplink.as_deref(), Some("bridge.example.com:9443"));
        assert_eq!(c.node.admin_listen, None);
        assert_eq!(c.limits.max_frame_size, 65536);
        assert_eq!(c.node.cluster, "default", "untouched keys keep defaults");
        c.validate().unwrap();
        Ok(())
    });
}

#[test]
fn env_overrides_file_and_overrides_beat_env() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "m.toml",
            "[node]\nrealm = \"from.file\"\ncluster = \"filecl\"\n",
        )?;
        jail.set_env("MACULA_NODE__REALM", "from.env");
        jail.set_env("MACULA_TRANSPORT__KEEP_ALIVE_MS", "1000");
        jail.set_env("MACULA_BRIDGE__REALMS", "[a.b, c.d]");
        jail.set_env("MACULA_NODE__UPLINK", "bridge.example.com:9443");
        jail.set_env("MACULA_NODE__ADMIN_LISTEN", "off");
        jail.set_env("MACULA_BRIDGE__LISTEN", "[::1]:7000");
        jail.set_env("MACULA_DATA_DIR", "/tmp/m");
        let c = load_in_jail(Some("m.toml"), &no_overrides()).unwrap();
        assert_eq!(c.node.realm, "from.env");
        assert_eq!(c.node.cluster, "filecl");
        assert_eq!(c.transport.keep_alive_ms, 1000);
        assert_eq!(c.bridge.realms, vec!["a.b".to_string(), "c.d".to_string()]);
        assert_eq!(c.node.uplink.as_deref(), Some("bridge.example.com:9443"));
        assert_eq!(c.node.admin_listen, None);
        assert_eq!(c.bridge.listen, "[::1]:7000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/tmp/m"));
        c.validate().unwrap();

        let cli = Cli {
            data_dir: None,
            node: Some(CliNode {
                realm: Some("from.cli".into()),
            }),
        };
        let c = load_in_jail(Some("m.toml"), &cli).unwrap();
        assert_eq!(c.node.realm, "from.cli");
        assert_eq!(c.node.cluster, "filecl", "None overrides change nothing");
        Ok(())
    });
}

#[test]
fn legacy_tls_env_names_work() {
    Jail::expect_with(|jail| {
        jail.set_env("MACULA_TLS_MODE", "production");
        jail.set_env("MACULA_TLS_CERTFILE", "/etc/macula/cert.pem");
        jail.set_env("MACULA_TLS_KEYFILE", "/etc/macula/key.pem");
        jail.set_env("MACULA_TLS_CACERTFILE", "/etc/macula/ca.pem");
        jail.set_env("MACULA_TLS_VERIFY_HOSTNAME", "false");
        let c = load_in_jail(None, &no_overrides()).unwrap();
        assert_eq!(c.tls.mode, TlsMode::Production);
        assert_eq!(c.tls.cert_file, Some(PathBuf::from("/etc/macula/cert.pem")));
        assert_eq!(c.tls.key_file, Some(PathBuf::from("/etc/macula/key.pem")));
        assert_eq!(c.tls.ca_file, Some(PathBuf::from("/etc/macula/ca.pem")));
        assert!(!c.tls.verify_hostname);
        // the nested name wins over the legacy one
        jail.set_env("MACULA_TLS__MODE", "development");
        let c = load_in_jail(None, &no_overrides()).unwrap();
        assert_eq!(c.tls.mode, TlsMode::Development);
        Ok(())
    });
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    Jail::expect_with(|jail| {
        jail.create_file("typo.toml", "[node]\nrelm = \"x\"\n")?;
        let err = load_in_jail(Some("typo.toml"), &no_overrides()).unwrap_err();
        let msg = err.to_string();
        eprintln!("unknown key in file: {msg}");
        assert!(msg.contains("relm"), "{msg}");
        assert!(msg.contains("typo.toml"), "{msg}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.set_env("MACULA_NODE__RELM", "x");
        let msg = load_in_jail(None, &no_overrides()).unwrap_err().to_string();
        eprintln!("unknown key in env: {msg}");
        assert!(msg.contains("relm"), "{msg}");
        Ok(())
    });
}

#[test]
fn wrong_types_and_missing_file_are_errors() {
    Jail::expect_with(|jail| {
        jail.create_file("bad.toml", "[transport]\nkeep_alive_ms = \"soon\"\n")?;
        let msg = load_in_jail(Some("bad.toml"), &no_overrides())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("keep_alive_ms"), "{msg}");
        jail.create_file("bad2.toml", "[tls]\nmode = \"paranoid\"\n")?;
        let msg = load_in_jail(Some("bad2.toml"), &no_overrides())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("tls.mode") && msg.contains("paranoid"),
            "{msg}"
        );
        jail.create_file("bad3.toml", "[bridge]\nlisten = \"nowhere\"\n")?;
        let msg = load_in_jail(Some("bad3.toml"), &no_overrides())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("bridge.listen"), "{msg}");
        let err = load_in_jail(Some("missing.toml"), &no_overrides()).unwrap_err();
        assert!(matches!(err, ConfigError::ReadFile { .. }), "{err}");
        Ok(())
    });
}

#[test]
fn invalid_values_are_rejected_with_their_key() {
    let mut c = Config::default();
    c.transport.keep_alive_ms = c.transport.idle_timeout_ms;
    assert_eq!(invalid_key(&c), "transport.keep_alive_ms");

    let mut c = Config::default();
    c.limits.max_frame_size = 100;
    assert_eq!(invalid_key(&c), "limits.max_frame_size");

    let mut c = Config::default();
    c.transport.stream_receive_window = u64::from(c.limits.max_frame_size) - 1;
    assert_eq!(invalid_key(&c), "transport.stream_receive_window");

    let mut c = Config::default();
    c.transport.send_window = 0;
    assert_eq!(invalid_key(&c), "transport.send_window");

    type Spoil = fn(&mut Config);
    let ack: [(Spoil, &str); 2] = [
        (
            |c| c.transport.ack_eliciting_threshold = 1025,
            "transport.ack_eliciting_threshold",
        ),
        (
            |c| c.transport.ack_max_delay_ms = 0,
            "transport.ack_max_delay_ms",
        ),
    ];
    for (spoil, key) in ack {
        let mut c = Config::default();
        spoil(&mut c);
        assert_eq!(invalid_key(&c), key);
    }

    let mut c = Config::default();
    c.bridge.realms.clear();
    assert_eq!(invalid_key(&c), "bridge.realms");

    for bad in ["IO.Macula", "io..macula", "io macula", "-io.macula", ""] {
        let mut c = Config::default();
        c.node.realm = bad.into();
        assert_eq!(invalid_key(&c), "node.realm", "{bad:?}");
    }

    let mut c = Config::default();
    c.limits.reconnect_initial_backoff_ms = 10_000;
    assert_eq!(invalid_key(&c), "limits.reconnect_initial_backoff_ms");

    let mut c = Config::default();
    c.limits.outbound_queue = 0;
    assert_eq!(invalid_key(&c), "limits.outbound_queue");

    let mut c = Config::default();
    c.limits.qos0_stall_ms = c.limits.slow_consumer_timeout_ms + 1;
    assert_eq!(invalid_key(&c), "limits.qos0_stall_ms");

    let mut c = Config::default();
    c.node.uplink = Some("no-port".into());
    assert_eq!(invalid_key(&c), "node.uplink");

    let mut c = Config::default();
    c.log.level = "info,=[".into();
    assert_eq!(invalid_key(&c), "log.level");

    let mut c = Config::default();
    c.tls.require_client_cert = true;
    assert_eq!(invalid_key(&c), "tls.require_client_cert");

    let mut c = Config::default();
    c.tls.mode = TlsMode::Production;
    assert_eq!(invalid_key(&c), "tls.cert_file");

    let mut c = Config::default();
    c.crdt.writer_max_keys = c.crdt.max_keys + 1;
    assert_eq!(invalid_key(&c), "crdt.writer_max_keys");

    let mut c = Config::default();
    c.crdt.writer_max_bytes = 100;
    assert_eq!(invalid_key(&c), "crdt.writer_max_bytes");
}

#[test]
fn production_needs_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::default();
    c.tls.mode = TlsMode::Production;
    for name in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(dir.path().join(name), "x").unwrap();
    }
    c.tls.cert_file = Some(dir.path().join("cert.pem"));
    c.tls.key_file = Some(dir.path().join("key.pem"));
    assert_eq!(invalid_key(&c), "tls.ca_file");
    c.tls.ca_file = Some(dir.path().join("nope.pem"));
    assert_eq!(invalid_key(&c), "tls.ca_file");
    c.tls.ca_file = Some(dir.path().join("ca.pem"));
    c.tls.require_client_cert = true;
    c.validate().unwrap();
}

#[test]
fn realm_rule() {
    for ok in ["io.macula", "a", "com.example-1.x", "localhost"] {
        assert!(is_valid_realm(ok), "{ok}");
    }
    for bad in ["", ".", "a.", "A.b", "a_b", "a.-b"] {
        assert!(!is_valid_realm(bad), "{bad}");
    }
}

#[test]
fn to_toml_round_trips() {
    Jail::expect_with(|jail| {
        let mut c = Config::default();
        c.node.uplink = None;
        c.bridge.admin_listen = None;
        c.node.realm = "org.test".into();
        let text = c.to_toml();
        assert!(text.contains("uplink = \"off\""), "{text}");
        jail.create_file("effective.toml", &text)?;
        let back = load_in_jail(Some("effective.toml"), &no_overrides()).unwrap();
        assert_eq!(back, c);
        Ok(())
    });
}

#[test]
fn rate_limits_parse_from_the_file_and_the_environment() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "r.toml",
            "[rate]\nburst_ms = 250\n[rate.link]\nmsgs = 5000\n[rate.realm]\nbytes = 1048576\n",
        )?;
        jail.set_env("MACULA_RATE__CLIENT__MSGS", "0");
        let c = load_in_jail(Some("r.toml"), &no_overrides()).unwrap();
        assert_eq!(c.rate.burst_ms, 250);
        assert_eq!(c.rate.link.msgs, 5000);
        assert_eq!(c.rate.link.bytes, 0, "an unset limit is none");
        assert_eq!(c.rate.realm.bytes, 1 << 20);
        assert_eq!(c.rate.client.msgs, 0, "the environment lifts the default");
        assert_eq!(c.rate.client.bytes, defaults::RATE_CLIENT.bytes);
        c.validate().unwrap();
        jail.create_file("bad.toml", "[rate]\nburst_ms = 0\n")?;
        let bad = load_in_jail(Some("bad.toml"), &no_overrides()).unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("rate.burst_ms"));
        jail.create_file("typo.toml", "[rate.client]\nmsg = 5\n")?;
        assert!(load_in_jail(Some("typo.toml"), &no_overrides()).is_err());
        Ok(())
    });
}
