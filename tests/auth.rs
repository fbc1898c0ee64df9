//! Admission with operator keys and credentials (`docs/AUTH.md`), on real processes: a
//! bridge and a node whose realm has an operator key admit only sessions with a credential
//! of that operator, for that realm, naming the key that proved the session's node id,
//! unexpired, of the role the link needs. Every refusal is typed and counted, and an
//! admitted witness keeps its round trips.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{fleet, metric, poll, recv};
use macula::auth::{Claims, Credential, Role};
use macula::client::{Client, ClientOptions};
use macula::identity::Identity;
use macula::session::{open_session, SessionError};
use macula::wire::{self, Connect, ErrorCode, Qos};

const REALM: &str = "io.macula";

fn now() -> u64 {
    macula::auth::credential::unix_now()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn issue(op: &Identity, subject: &Identity, role: Role, realm: &str, exp: u64) -> Vec<u8> {
    issue_in(op, subject, (role, None), realm, exp)
}

/// [`issue`] with a `cluster` claim (node credentials only).
fn issue_in(
    op: &Identity,
    subject: &Identity,
    (role, cluster): (Role, Option<&str>),
    realm: &str,
    exp: u64,
) -> Vec<u8> {
    let claims = Claims {
        id: [1; 16],
        realm: realm.into(),
        subject: subject.public_key(),
        role,
        name: format!("test-{}", role.as_str()),
        issued_at: now() - 60,
        expires_at: exp,
        permissions: Default::default(),
        limits: Default::default(),
        cluster: cluster.map(Into::into),
    };
    Credential::issue(op, &claims).unwrap()
}

/// A `connect` as `who` (role `node`; `bridge` capability for a child bridge) with
/// `credential`, to `addr`: the session's outcome.
async fn connect_as(
    addr: SocketAddr,
    who: &Identity,
    child_bridge: bool,
    credential: Option<Vec<u8>>,
) -> Result<(), SessionError> {
    let (conn, _ep) = common::quic_connect(addr).await;
    let connect = Connect {
        versions: vec![wire::PROTOCOL_VERSION],
        node_id: who.node_id(),
        realm: REALM.into(),
        cluster: "intruders".into(),
        role: wire::Role::Node,
        capabilities: if child_bridge {
            vec!["bridge".into()]
        } else {
            vec![]
        },
        max_frame_size: wire::DEFAULT_MAX_FRAME_SIZE,
        correlation_id: 5,
        proof: None,
        credential: credential.map(Bytes::from),
    };
    let r = open_session(&conn, connect, wire::DEFAULT_MAX_FRAME_SIZE, who).await;
    conn.close(0u32.into(), b"done");
    r.map(|_| ())
}

/// What is presented, whether as a child bridge, and the refusal expected (code, reason).
type Case = (&'static str, bool, Option<Vec<u8>>, ErrorCode, &'static str);

fn refused_with(r: Result<(), SessionError>, code: ErrorCode, what: &str) {
    match r {
        Err(SessionError::Peer { code: c, .. }) if c == code as u16 => {}
        other => panic!("{what}: expected {code:?}, got {other:?}"),
    }
}

/// Starts node `node-<cluster>` of cluster `cluster` at `ip` under `bridge`, presenting the
/// credential `credential` makes for its key, with `extra` prepended to its configuration.
fn credentialed_node(
    f: &mut common::Fleet,
    (cluster, ip): (&str, &str),
    bridge: SocketAddr,
    extra: &str,
    credential: impl FnOnce(&Identity) -> Vec<u8>,
) -> (usize, Identity) {
    let name = format!("node-{cluster}");
    let key = Identity::load_or_create(&f.data_dir(&name).unwrap()).unwrap();
    let dir = f.data_dir("creds").unwrap();
    let cred = write_cred(&dir, &format!("{name}.cred"), &credential(&key));
    let cfg = f
        .write_file(
            &format!("{name}.toml"),
            &format!("{extra}[auth]\ncredential_file = \"{cred}\"\n"),
        )
        .unwrap();
    let i = f
        .node(
            &name,
            ip,
            cluster,
            bridge,
            &["--config", cfg.to_str().unwrap()],
        )
        .unwrap();
    (i, key)
}

fn write_cred(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, Credential::to_text(bytes)).unwrap();
    path.display().to_string()
}

/// A bridge on 127.0.0.1 whose realm is governed by `op`, auditing to a file: its index,
/// the `[auth.operators]` table (for the nodes' configurations too) and the audit log path.
fn governed_bridge(f: &mut common::Fleet, op: &Identity) -> (usize, String, std::path::PathBuf) {
    governed_bridge_with(f, op, "")
}

/// [`governed_bridge`] with `extra` appended to the `[auth]` table.
fn governed_bridge_with(
    f: &mut common::Fleet,
    op: &Identity,
    extra: &str,
) -> (usize, String, std::path::PathBuf) {
    let operators = format!(
        "[auth.operators]\n\"{REALM}\" = [\"{}\"]\n",
        hex(&op.public_key())
    );
    let audit = f.data_dir("audit").unwrap().join("bridge-audit.log");
    let cfg = f
        .write_file(
            "bridge.toml",
            &format!(
                "{operators}[audit]\nfile = \"{}\"\n[auth]\n{extra}",
                audit.display()
            ),
        )
        .unwrap();
    let b = f
        .bridge("bridge", "127.0.0.1", &["--config", cfg.to_str().unwrap()])
        .unwrap();
    (b, operators, audit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_credentials_of_the_realms_operator_and_the_right_role_are_admitted() {
    let mut f = fleet();
    let op = Identity::generate();
    let stranger_op = Identity::generate();
    let (b, operators, audit) = governed_bridge(&mut f, &op);
    let baddr = f.procs[b].quic;

    // Node "a": a node credential for its own key; its realm needs client credentials too.
    let (na, a_key) = credentialed_node(&mut f, ("a", "127.0.0.2"), baddr, &operators, |k| {
        issue(&op, k, Role::Node, REALM, now() + 3600)
    });
    // Node "z": no credential, so the bridge refuses its uplink.
    let nz = f.node("node-z", "127.0.0.4", "z", baddr, &[]).unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (badmin, aaddr, aadmin) = (f.procs[b].admin, f.procs[na].quic, f.procs[na].admin);

    // The bridge refused node z's uplink for want of a credential; node a's is up.
    let no_cred = "macula_connections_rejected_total{reason=\"no_credential\"}";
    poll(Duration::from_secs(10), "node z refused", || async {
        (metric(badmin, no_cred) >= 1.0).then_some(())
    })
    .await;
    assert!(
        f.is_running(nz),
        "a refused node keeps running (and retrying)"
    );

    // A client of node a with a client credential for its key is admitted; it is the witness.
    let me = Identity::generate();
    let witness_opts = ClientOptions {
        identity: Some(me.clone()),
        credential: Some(issue(&op, &me, Role::Client, REALM, now() + 3600).into()),
        ..common::opts(aaddr, REALM)
    };
    let witness = Client::connect(witness_opts.clone()).await.unwrap();
    let mut sub = witness.subscribe("w.*").await.unwrap();
    common::wait_route(&witness, &mut sub, "w.x").await;

    // Node a refuses clients without a credential, with another's, or with a node one.
    let anon = Client::connect(common::opts(aaddr, REALM)).await;
    assert!(anon.is_err(), "an anonymous client is refused");
    let thief = ClientOptions {
        identity: None,
        ..witness_opts.clone()
    };
    assert!(
        Client::connect(thief).await.is_err(),
        "a stolen credential is refused"
    );
    let wrong_role = ClientOptions {
        credential: Some(issue(&op, &me, Role::Node, REALM, now() + 3600).into()),
        ..witness_opts.clone()
    };
    assert!(
        Client::connect(wrong_role).await.is_err(),
        "a node credential is not a client's"
    );
    let reasons = |r: &str| {
        metric(
            aadmin,
            &format!("macula_connections_rejected_total{{reason=\"{r}\"}}"),
        )
    };
    assert!(reasons("no_credential") >= 1.0);
    assert!(reasons("bad_credential") >= 1.0);
    assert!(reasons("wrong_role") >= 1.0);

    // At the bridge, each bad credential gets its own refusal.
    let x = Identity::generate();
    let cases: Vec<Case> = vec![
        (
            "no credential",
            false,
            None,
            ErrorCode::Unauthenticated,
            "no_credential",
        ),
        (
            "another operator's",
            false,
            Some(issue(&stranger_op, &x, Role::Node, REALM, now() + 3600)),
            ErrorCode::Unauthenticated,
            "bad_credential",
        ),
        (
            "another realm's",
            false,
            Some(issue(&op, &x, Role::Node, "org.other", now() + 3600)),
            ErrorCode::Unauthenticated,
            "wrong_realm",
        ),
        (
            "expired",
            false,
            Some(issue(&op, &x, Role::Node, REALM, now() - 1)),
            ErrorCode::Unauthenticated,
            "expired",
        ),
        (
            "another key's",
            false,
            Some(issue(&op, &a_key, Role::Node, REALM, now() + 3600)),
            ErrorCode::Unauthenticated,
            "bad_credential",
        ),
        (
            "a client's as a node",
            false,
            Some(issue(&op, &x, Role::Client, REALM, now() + 3600)),
            ErrorCode::PermissionDenied,
            "wrong_role",
        ),
        (
            "a node's as a child bridge",
            true,
            Some(issue(&op, &x, Role::Node, REALM, now() + 3600)),
            ErrorCode::PermissionDenied,
            "wrong_role",
        ),
        (
            "a node's bound to another cluster",
            false,
            Some(issue_in(
                &op,
                &x,
                (Role::Node, Some("a")),
                REALM,
                now() + 3600,
            )),
            ErrorCode::PermissionDenied,
            "wrong_cluster",
        ),
        (
            "garbage",
            false,
            Some(vec![0xc1; 100]),
            ErrorCode::Unauthenticated,
            "bad_credential",
        ),
    ];
    for (what, child_bridge, cred, code, reason) in cases {
        let sample = format!("macula_connections_rejected_total{{reason=\"{reason}\"}}");
        let before = metric(badmin, &sample);
        refused_with(connect_as(baddr, &x, child_bridge, cred).await, code, what);
        assert_eq!(
            metric(badmin, &sample) - before,
            1.0,
            "{what}: counted as {reason}"
        );
        // The witness keeps its round trips through node a.
        witness
            .publish("w.x", Bytes::from_static(b"on"), Qos::AtLeastOnce)
            .await
            .unwrap();
        assert_eq!(&recv(&mut sub).await.payload[..], b"on", "{what}: witness");
    }
    // A valid node credential for its own key is admitted, unbound or bound to the
    // cluster the session claims.
    let good = issue(&op, &x, Role::Node, REALM, now() + 3600);
    connect_as(baddr, &x, false, Some(good)).await.unwrap();
    let bound = issue_in(
        &op,
        &x,
        (Role::Node, Some("intruders")),
        REALM,
        now() + 3600,
    );
    connect_as(baddr, &x, false, Some(bound)).await.unwrap();

    // The bridge's audit log holds a JSON line for each decision, with who and why.
    let x_id = macula::dht::Id(x.node_id()).to_string();
    let a_id = macula::dht::Id(a_key.node_id()).to_string();
    let lines: Vec<serde_json::Value> = poll(Duration::from_secs(10), "audit lines", || async {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
            .collect();
        // Node a's uplink may still be in its first back-off: wait for its line too.
        let admitted = |id: &str| {
            lines
                .iter()
                .any(|l| l["decision"] == "admitted" && l["node_id"] == id)
        };
        (admitted(&x_id) && admitted(&a_id)).then_some(lines)
    })
    .await;
    let refused = |reason: &str| {
        let refusal = |l: &&serde_json::Value| {
            l["event"] == "admission" && l["decision"] == "refused" && l["reason"] == reason
        };
        lines.iter().filter(refusal).count()
    };
    assert!(refused("no_credential") >= 2, "node z and the bare connect");
    assert_eq!(refused("expired"), 1);
    assert_eq!(refused("wrong_realm"), 1);
    assert_eq!(refused("wrong_role"), 2);
    assert_eq!(refused("wrong_cluster"), 1);
    assert!(refused("bad_credential") >= 3);
    let a = lines
        .iter()
        .find(|l| l["decision"] == "admitted" && l["node_id"] == a_id.as_str())
        .expect("node a's uplink admitted");
    let who = (a["role"].as_str(), a["credential_name"].as_str());
    assert_eq!(who, (Some("node"), Some("test-node")));
    let remote = a["remote"].as_str().unwrap();
    assert!(remote.parse::<SocketAddr>().is_ok(), "{a}");
    assert!(a["timestamp"].is_string());
}

/// `macula keys` end to end: generate an operator key and a subject key, sign, inspect.
#[test]
fn the_keys_tool_generates_signs_and_inspects() {
    let bin = env!("CARGO_BIN_EXE_macula");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    assert!(run(&["keys", "generate", "--out", "op.key"]).0);
    assert!(
        !run(&["keys", "generate", "--out", "op.key"]).0,
        "never overwrites a key"
    );
    let (ok, shown) = run(&["keys", "generate", "--out", "node.key"]);
    assert!(ok);
    let node = Identity::load(&dir.path().join("node.key")).unwrap();
    assert!(shown.contains(&hex(&node.public_key())));
    let (ok, text) = run(&[
        "keys",
        "sign",
        "--operator",
        "op.key",
        "--realm",
        REALM,
        "--role",
        "node",
        "--subject-key",
        "node.key",
        "--name",
        "street-7",
        "--valid-for",
        "2d",
    ]);
    assert!(ok);
    let c = Credential::decode(&Credential::from_text(&text).unwrap()).unwrap();
    let op = Identity::load(&dir.path().join("op.key")).unwrap();
    assert_eq!(c.issuer, op.public_key());
    assert_eq!(
        (c.claims.role, c.claims.subject),
        (Role::Node, node.public_key())
    );
    assert!(c
        .check(REALM, &node.public_key(), &[op.public_key()], now())
        .is_ok());
    assert!(c.claims.expires_at - c.claims.issued_at == 2 * 86_400);
    let (ok, json) = run(&["keys", "inspect", text.trim()]);
    assert!(ok && json.contains("\"role\": \"node\"") && json.contains("street-7"));
    assert!(
        !run(&["keys", "inspect", "mc1.AAAA"]).0,
        "garbage is refused"
    );
}

fn issue_limited(
    op: &Identity,
    subject: &Identity,
    role: Role,
    perms: &[(&str, bool, &str)],
) -> Vec<u8> {
    let mut permissions = macula::auth::Permissions::default();
    for &(action, deny, pattern) in perms {
        let a = macula::auth::Action::ALL
            .into_iter()
            .find(|a| a.as_str() == action)
            .unwrap();
        permissions.add(a, deny, pattern).unwrap();
    }
    let claims = Claims {
        id: [2; 16],
        realm: REALM.into(),
        subject: subject.public_key(),
        role,
        name: format!("limited-{}", role.as_str()),
        issued_at: now() - 60,
        expires_at: now() + 3600,
        permissions,
        limits: Default::default(),
        cluster: None,
    };
    Credential::issue(op, &claims).unwrap()
}

/// A node whose credential allows publishing only `sensors.**` cannot publish `billing.x`
/// through its uplink (the bridge refuses it, counts it and audits it) while `sensors.t`
/// crosses; a client whose credential denies `secret.**`, `billing.*` calls and state keys
/// and allows registering only `svc.**` is refused each, typed, while its allowed requests
/// and a witness keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_bound_a_nodes_uplink_and_a_clients_requests() {
    let mut f = fleet();
    let op = Identity::generate();
    let (b, operators, audit) = governed_bridge(&mut f, &op);
    let baddr = f.procs[b].quic;
    // Node a may publish only sensors.** upward; node c is unrestricted. Node a's realm
    // needs client credentials; node c's is open to clients.
    let (na, _) = credentialed_node(&mut f, ("a", "127.0.0.2"), baddr, &operators, |k| {
        let node_limits = [
            ("publish", false, "sensors.**"),
            ("register", false, "svc.public.**"),
        ];
        issue_limited(&op, k, Role::Node, &node_limits)
    });
    let (nc, _) = credentialed_node(&mut f, ("c", "127.0.0.3"), baddr, "", |k| {
        issue(&op, k, Role::Node, REALM, now() + 3600)
    });
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (badmin, aaddr, aadmin) = (f.procs[b].admin, f.procs[na].quic, f.procs[na].admin);

    // A client of node a, limited by its own credential.
    let me = Identity::generate();
    let limits = [
        ("publish", true, "secret.**"),
        ("call", true, "billing.*"),
        ("register", false, "svc.**"),
        ("state", true, "billing.**"),
        ("subscribe", false, "sensors.**"),
    ];
    let pubr = Client::connect(ClientOptions {
        identity: Some(me.clone()),
        credential: Some(issue_limited(&op, &me, Role::Client, &limits).into()),
        ..common::opts(aaddr, REALM)
    })
    .await
    .unwrap();
    let watcher = Client::connect(common::opts(f.procs[nc].quic, REALM))
        .await
        .unwrap();
    let mut all = watcher.subscribe("**").await.unwrap();
    common::wait_route(&pubr, &mut all, "sensors.probe").await;

    // Through the uplink: billing.x is refused at the bridge, sensors.t crosses after it.
    let denied = "macula_permission_denied_total{action=\"publish\"}";
    let before = metric(badmin, denied);
    pubr.publish("billing.x", Bytes::from_static(b"no"), Qos::AtLeastOnce)
        .await
        .unwrap();
    pubr.publish("sensors.t", Bytes::from_static(b"yes"), Qos::AtLeastOnce)
        .await
        .unwrap();
    let m = recv(&mut all).await;
    assert_eq!(
        m.topic(),
        "sensors.t",
        "billing.x must not cross the uplink"
    );
    poll(
        Duration::from_secs(10),
        "the bridge counts the denial",
        || async { (metric(badmin, denied) > before).then_some(()) },
    )
    .await;

    // At node a, the client's own limits: each refusal typed and counted.
    let before_a = metric(aadmin, "macula_permission_denied_total{action=\"publish\"}");
    pubr.publish("secret.plan", Bytes::from_static(b"no"), Qos::AtLeastOnce)
        .await
        .unwrap();
    pubr.publish("sensors.u", Bytes::from_static(b"yes"), Qos::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(
        recv(&mut all).await.topic(),
        "sensors.u",
        "secret.plan must not leave node a"
    );
    assert_eq!(
        metric(aadmin, "macula_permission_denied_total{action=\"publish\"}") - before_a,
        1.0
    );
    let sub = pubr.subscribe("**").await;
    assert!(
        sub.is_err(),
        "a subscription wider than sensors.** is refused"
    );
    pubr.subscribe("sensors.*")
        .await
        .expect("a covered subscription");
    let reg = pubr.register("other.echo", |b| async move { Ok(b) }).await;
    assert!(reg.is_err(), "registering outside svc.** is refused");
    let _echo = pubr
        .register("svc.echo", |b| async move { Ok(b) })
        .await
        .expect("svc.echo may be registered");
    let call = pubr
        .call("billing.charge", Bytes::new(), Duration::from_secs(2))
        .await;
    assert!(
        matches!(call, Err(macula::client::CallError::PermissionDenied(_))),
        "{call:?}"
    );
    let echoed = pubr
        .call(
            "svc.echo",
            Bytes::from_static(b"hi"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(&echoed[..], b"hi");
    let put = pubr.put("billing.total", Bytes::from_static(b"1")).await;
    assert!(
        matches!(put, Err(macula::client::CallError::PermissionDenied(_))),
        "{put:?}"
    );
    pubr.put("owner", Bytes::from_static(b"me")).await.unwrap();
    for (action, n) in [
        ("subscribe", 1.0),
        ("register", 1.0),
        ("call", 1.0),
        ("state", 1.0),
    ] {
        let sample = format!("macula_permission_denied_total{{action=\"{action}\"}}");
        assert_eq!(metric(aadmin, &sample), n, "{action}");
    }

    // Registrations: node a may advertise only svc.public.** upward. Its client may register
    // svc.echo (its own credential allows svc.**): callable on node a, refused at the bridge,
    // so node c finds no provider; svc.public.echo crosses.
    let _public = pubr
        .register("svc.public.echo", |b| async move { Ok(b) })
        .await
        .unwrap();
    let from_c = poll(
        Duration::from_secs(20),
        "svc.public.echo from node c",
        || {
            let w = &watcher;
            async move {
                w.call(
                    "svc.public.echo",
                    Bytes::from_static(b"c"),
                    Duration::from_secs(2),
                )
                .await
                .ok()
            }
        },
    )
    .await;
    assert_eq!(&from_c[..], b"c");
    let reg_denied = "macula_permission_denied_total{action=\"register\"}";
    poll(
        Duration::from_secs(10),
        "the bridge refuses svc.echo's record",
        || async { (metric(badmin, reg_denied) >= 1.0).then_some(()) },
    )
    .await;
    let hidden = watcher
        .call("svc.echo", Bytes::from_static(b"c"), Duration::from_secs(2))
        .await;
    assert!(
        matches!(hidden, Err(macula::client::CallError::NoProvider)),
        "{hidden:?}"
    );

    // The bridge's audit log names the denial: who, what, from where.
    let line = poll(
        Duration::from_secs(10),
        "the denial's audit line",
        || async {
            std::fs::read_to_string(&audit)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|l| l["event"] == "permission" && l["name"] == "billing.x")
        },
    )
    .await;
    assert_eq!(line["action"], "publish");
    assert_eq!(line["decision"], "denied");
    assert_eq!(line["credential_name"], "limited-node");
    assert_eq!(line["role"], "node");
}

/// A credential's rate limit (`lim`, shared by all the subject's sessions) paces what its
/// client sends without losing any of it: 300 QoS 1 messages at 100 a second all arrive, in
/// order, while the node counts the held-back frames by scope `credential`; a client on
/// another credential is not limited by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_rate_limit_paces_its_sessions_and_loses_nothing() {
    let mut f = fleet();
    let op = Identity::generate();
    let (b, operators, _) = governed_bridge(&mut f, &op);
    let baddr = f.procs[b].quic;
    let (na, _) = credentialed_node(&mut f, ("a", "127.0.0.2"), baddr, &operators, |k| {
        issue(&op, k, Role::Node, REALM, now() + 3600)
    });
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (aaddr, aadmin) = (f.procs[na].quic, f.procs[na].admin);

    let client = |me: Identity, credential: Vec<u8>| {
        Client::connect(ClientOptions {
            identity: Some(me),
            credential: Some(credential.into()),
            ..common::opts(aaddr, REALM)
        })
    };
    let slow_key = Identity::generate();
    let mut slow_claims = Claims {
        id: [9; 16],
        realm: REALM.into(),
        subject: slow_key.public_key(),
        role: Role::Client,
        name: "paced".into(),
        issued_at: now() - 60,
        expires_at: now() + 3600,
        permissions: Default::default(),
        limits: Default::default(),
        cluster: None,
    };
    slow_claims.limits.msgs = 100;
    let slow_cred = Credential::issue(&op, &slow_claims).unwrap();
    let slow = client(slow_key, slow_cred).await.unwrap();
    let free_key = Identity::generate();
    let free_cred = issue(&op, &free_key, Role::Client, REALM, now() + 3600);
    let free = client(free_key, free_cred).await.unwrap();

    let limited = "macula_rate_limited_total{scope=\"credential\"}";
    assert_eq!(metric(aadmin, limited), 0.0);
    let mut slow_sub = slow.subscribe("paced.t").await.unwrap();
    let mut free_sub = free.subscribe("free.t").await.unwrap();
    const N: u32 = 300;
    let sender = tokio::spawn(async move {
        for i in 0..N {
            let body = Bytes::copy_from_slice(&i.to_be_bytes());
            slow.publish("paced.t", body, Qos::AtLeastOnce)
                .await
                .unwrap();
        }
        slow
    });
    // The other credential's client goes on meanwhile.
    for i in 0..50u32 {
        let body = Bytes::copy_from_slice(&i.to_be_bytes());
        free.publish("free.t", body, Qos::AtLeastOnce)
            .await
            .unwrap();
        assert_eq!(&recv(&mut free_sub).await.payload[..], &i.to_be_bytes());
    }
    for i in 0..N {
        let m = recv(&mut slow_sub).await;
        assert_eq!(&m.payload[..], &i.to_be_bytes(), "in order, none lost");
    }
    let _slow = sender.await.unwrap();
    assert!(
        metric(aadmin, limited) >= 1.0,
        "the node held frames back by the credential's bucket"
    );
    assert_eq!(
        metric(aadmin, "macula_rate_limited_total{scope=\"connection\"}"),
        0.0,
        "the default per-connection limit is far above this"
    );
}

/// An empty revocation file re-read every 200 ms, and the `[auth]` lines naming it.
fn revocation_file(f: &mut common::Fleet) -> (std::path::PathBuf, String) {
    let path = f.data_dir("rev").unwrap().join("revoked");
    std::fs::write(&path, "").unwrap();
    let extra = format!(
        "revocation_file = \"{}\"\nrevocation_check_ms = 200\n",
        path.display()
    );
    (path, extra)
}

/// A revocation list in the bridge's `auth.revocation_file` closes the live session of the
/// credential it names within the check interval, and refuses it at `connect` from then on;
/// a session on another credential is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_credentials_live_session_is_closed_within_the_bound() {
    use macula::auth::revocation::Revocations;
    let mut f = fleet();
    let op = Identity::generate();
    let (revoked_file, extra) = revocation_file(&mut f);
    let (b, _, audit) = governed_bridge_with(&mut f, &op, &extra);
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (baddr, badmin) = (f.procs[b].quic, f.procs[b].admin);
    let cred = |who: &Identity, id: u8| {
        let claims = Claims {
            id: [id; 16],
            realm: REALM.into(),
            subject: who.public_key(),
            role: Role::Node,
            name: format!("cred-{id}"),
            issued_at: now() - 60,
            expires_at: now() + 3600,
            permissions: Default::default(),
            limits: Default::default(),
            cluster: None,
        };
        Bytes::from(Credential::issue(&op, &claims).unwrap())
    };
    let session = |who: Identity, id: u8| {
        let credential = cred(&who, id);
        async move {
            let (conn, ep) = common::quic_connect(baddr).await;
            let connect = Connect {
                versions: vec![wire::PROTOCOL_VERSION],
                node_id: who.node_id(),
                realm: REALM.into(),
                cluster: format!("c{id}"),
                role: wire::Role::Node,
                capabilities: vec![],
                max_frame_size: wire::DEFAULT_MAX_FRAME_SIZE,
                correlation_id: 1,
                proof: None,
                credential: Some(credential),
            };
            // The session's streams are kept: dropping them ends the session.
            let r = open_session(&conn, connect, wire::DEFAULT_MAX_FRAME_SIZE, &who).await;
            (r, conn, ep)
        }
    };
    let (doomed_key, witness_key) = (Identity::generate(), Identity::generate());
    let (r, doomed, _ep1) = session(doomed_key.clone(), 7).await;
    let _doomed_streams = r.unwrap();
    let (r, witness, _ep2) = session(witness_key, 8).await;
    let _witness_streams = r.unwrap();

    // The operator revokes credential 7; the list reaches the bridge's file.
    let list = Revocations::issue(&op, REALM, now(), &[[7; 16]]).unwrap();
    let tmp = revoked_file.with_extension("tmp");
    std::fs::write(&tmp, Revocations::to_text(&list)).unwrap();
    std::fs::rename(&tmp, &revoked_file).unwrap();
    let written = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), doomed.closed())
        .await
        .expect("the revoked session is closed within 10 s (check interval 200 ms)");
    let took = written.elapsed();
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                c.error_code,
                (ErrorCode::Unauthenticated as u32).into(),
                "{c:?}"
            );
            assert_eq!(&c.reason[..], b"credential revoked");
        }
        other => panic!("closed otherwise: {other:?}"),
    }
    eprintln!("revoked session closed {took:?} after the list was written");
    assert!(
        witness.close_reason().is_none(),
        "another credential's session stays"
    );
    assert_eq!(metric(badmin, "macula_connections_revoked_total"), 1.0);

    // From now on the credential is refused at connect.
    let (r, _c, _ep3) = session(doomed_key, 7).await;
    refused_with(
        r.map(|_| ()),
        ErrorCode::Unauthenticated,
        "a revoked credential",
    );
    let sample = "macula_connections_rejected_total{reason=\"revoked\"}";
    assert_eq!(metric(badmin, sample), 1.0);
    let line = poll(
        Duration::from_secs(10),
        "the revocation's audit line",
        || async {
            std::fs::read_to_string(&audit)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|l| l["event"] == "revocation")
        },
    )
    .await;
    assert_eq!(line["credential_id"], hex(&[7; 16]));
    witness.close(0u32.into(), b"done");
}

/// A session at `addr` as `who`, on a credential of `op` with id `id` and role `role`
/// (`client`: an application client of a node; `node`: a node uplink at a bridge): the
/// session's outcome (its streams kept inside: dropping them ends the session), the
/// connection and its endpoint.
async fn session_as(
    addr: SocketAddr,
    op: &Identity,
    who: &Identity,
    (id, role): (u8, Role),
) -> (
    Result<impl Sized, SessionError>,
    quinn::Connection,
    quinn::Endpoint,
) {
    let claims = Claims {
        id: [id; 16],
        realm: REALM.into(),
        subject: who.public_key(),
        role,
        name: format!("{}-{id}", role.as_str()),
        issued_at: now() - 60,
        expires_at: now() + 3600,
        permissions: Default::default(),
        limits: Default::default(),
        cluster: None,
    };
    let credential = Bytes::from(Credential::issue(op, &claims).unwrap());
    let (conn, ep) = common::quic_connect(addr).await;
    let connect = Connect {
        versions: vec![wire::PROTOCOL_VERSION],
        node_id: who.node_id(),
        realm: REALM.into(),
        cluster: format!("c{id}"),
        role: match role {
            Role::Client => wire::Role::Client,
            _ => wire::Role::Node,
        },
        capabilities: vec![],
        max_frame_size: wire::DEFAULT_MAX_FRAME_SIZE,
        correlation_id: 1,
        proof: None,
        credential: Some(credential),
    };
    let r = open_session(&conn, connect, wire::DEFAULT_MAX_FRAME_SIZE, who).await;
    (r, conn, ep)
}

/// Issue 12: the revocation list spreads. Only the bridge has it in its `auth.revocation_file`;
/// the node under it gets it over its uplink (`revocation_list`, PROTOCOL §5.30), closes the
/// live session of a client on the revoked credential and refuses it at reconnect; a node that
/// starts later gets the list when its uplink comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_list_at_the_bridge_reaches_the_nodes_and_closes_their_clients() {
    use macula::auth::revocation::Revocations;
    let mut f = fleet();
    let op = Identity::generate();
    let (revoked_file, extra) = revocation_file(&mut f);
    let (b, operators, _) = governed_bridge_with(&mut f, &op, &extra);
    let baddr = f.procs[b].quic;
    let audit = f.data_dir("audit").unwrap().join("node-a-audit.log");
    let node_extra = format!("{operators}[audit]\nfile = \"{}\"\n", audit.display());
    let (na, _) = credentialed_node(&mut f, ("a", "127.0.0.2"), baddr, &node_extra, |k| {
        issue(&op, k, Role::Node, REALM, now() + 3600)
    });
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (badmin, aaddr, aadmin) = (f.procs[b].admin, f.procs[na].quic, f.procs[na].admin);
    poll(Duration::from_secs(20), "node a's uplink", || async {
        (metric(aadmin, "macula_connections_open{role=\"uplink\"}") == 1.0).then_some(())
    })
    .await;

    let (doomed_key, witness_key) = (Identity::generate(), Identity::generate());
    let (r, doomed, _ep1) = session_as(aaddr, &op, &doomed_key, (7, Role::Client)).await;
    let _doomed_streams = r.unwrap();
    let (r, witness, _ep2) = session_as(aaddr, &op, &witness_key, (8, Role::Client)).await;
    let _witness_streams = r.unwrap();
    // A node-role credential with the same id at the bridge itself: its close marks the
    // moment the bridge applied the list (the start of the propagation).
    let (r, at_bridge, _ep0) = session_as(baddr, &op, &Identity::generate(), (7, Role::Node)).await;
    let _bridge_streams = r.unwrap();

    // The operator revokes credential 7; the list reaches the bridge's file only.
    let list = Revocations::issue(&op, REALM, now(), &[[7; 16]]).unwrap();
    let tmp = revoked_file.with_extension("tmp");
    std::fs::write(&tmp, Revocations::to_text(&list)).unwrap();
    std::fs::rename(&tmp, &revoked_file).unwrap();
    let written = std::time::Instant::now();
    let applied = "macula_revocation_lists_total{outcome=\"applied\"}";
    let timed = |conn: quinn::Connection| async move {
        let e = tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("the revoked session is closed within 10 s");
        (e, std::time::Instant::now())
    };
    let ((_, bridge_at), (closed, node_at)) = tokio::join!(timed(at_bridge), timed(doomed.clone()));
    let read_at_bridge = bridge_at - written;
    let took = node_at - written;
    let hop = node_at.saturating_duration_since(bridge_at);
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                c.error_code,
                (ErrorCode::Unauthenticated as u32).into(),
                "{c:?}"
            );
            assert_eq!(&c.reason[..], b"credential revoked");
        }
        other => panic!("closed otherwise: {other:?}"),
    }
    eprintln!(
        "list written; the bridge closed its own session after {read_at_bridge:?}, the node \
         its client after {took:?}: propagation bridge -> node {hop:?}"
    );
    assert_eq!(
        metric(badmin, applied),
        1.0,
        "the bridge applied its file's list"
    );
    assert!(
        witness.close_reason().is_none(),
        "another credential's session stays"
    );
    assert_eq!(
        metric(aadmin, applied),
        1.0,
        "the node applied the list once"
    );
    assert_eq!(metric(aadmin, "macula_connections_revoked_total"), 1.0);
    assert!(metric(badmin, "macula_revocation_frames_sent_total") >= 1.0);
    // Re-reading the unchanged file every 200 ms sends nothing more.
    assert_eq!(metric(badmin, applied), 1.0);

    // The node refuses the credential at reconnect; the other one is still admitted.
    let (r, _c, _ep3) = session_as(aaddr, &op, &doomed_key, (7, Role::Client)).await;
    refused_with(
        r.map(|_| ()),
        ErrorCode::Unauthenticated,
        "a revoked credential at the node",
    );
    let rejected = "macula_connections_rejected_total{reason=\"revoked\"}";
    assert_eq!(metric(aadmin, rejected), 1.0);
    let line = poll(Duration::from_secs(10), "the node's audit line", || async {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|l| l["event"] == "revocation_list")
    })
    .await;
    assert_eq!(line["decision"], "applied");
    let bridge_key = Identity::load_or_create(&f.data_dir("bridge").unwrap()).unwrap();
    assert_eq!(
        line["node_id"],
        macula::dht::Id(bridge_key.node_id()).to_string()
    );

    // A node that starts now gets the list as its uplink comes up.
    let (nb, _) = credentialed_node(&mut f, ("b", "127.0.0.3"), baddr, &operators, |k| {
        issue(&op, k, Role::Node, REALM, now() + 3600)
    });
    f.wait_ready_one(nb, Duration::from_secs(20)).await.unwrap();
    let (baddr_b, badmin_b) = (f.procs[nb].quic, f.procs[nb].admin);
    poll(
        Duration::from_secs(20),
        "the late node gets the list at link-up",
        || async { (metric(badmin_b, applied) == 1.0).then_some(()) },
    )
    .await;
    let (r, _c, _ep4) = session_as(baddr_b, &op, &doomed_key, (7, Role::Client)).await;
    refused_with(
        r.map(|_| ()),
        ErrorCode::Unauthenticated,
        "a revoked credential at the late node",
    );
    let (r, late_witness, _ep5) = session_as(baddr_b, &op, &witness_key, (8, Role::Client)).await;
    assert!(r.is_ok(), "another credential is admitted at the late node");
    late_witness.close(0u32.into(), b"done");
    witness.close(0u32.into(), b"done");
    f.stop().await;
}

/// Trust on first use (development TLS mode): a node pins the key its bridge proved at an
/// address, refuses another bridge that proves another key there, and accepts it only when
/// told (`node.uplink_accept_new_key`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_bridge_whose_key_changed_unless_told() {
    let mut f = fleet();
    let addr: SocketAddr = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let first = f.bridge_at("first", addr, &[]).unwrap();
    let n = f.node("node", "127.0.0.2", "a", addr, &[]).unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let nadmin = f.procs[n].admin;
    let uplink_open = "macula_connections_open{role=\"uplink\"}";
    let up = |want: f64| {
        poll(
            Duration::from_secs(20),
            "uplink state",
            move || async move { (metric(nadmin, uplink_open) == want).then_some(()) },
        )
    };
    up(1.0).await;
    let pins = std::fs::read_to_string(f.data_dir("node").unwrap().join("known_bridges")).unwrap();
    assert!(pins.starts_with(&format!("{addr} ")), "{pins}");

    // Another bridge (another key) takes the address: refused, counted.
    f.kill(first).await;
    let second = f.bridge_at("second", addr, &[]).unwrap();
    f.wait_ready_one(second, Duration::from_secs(20))
        .await
        .unwrap();
    poll(
        Duration::from_secs(30),
        "the changed key refused",
        || async { (metric(nadmin, "macula_uplink_key_refused_total") >= 1.0).then_some(()) },
    )
    .await;
    assert_eq!(metric(nadmin, uplink_open), 0.0);

    // Told to accept it, the node re-pins and connects.
    f.env("MACULA_NODE__UPLINK_ACCEPT_NEW_KEY", "true");
    f.kill(n).await;
    f.restart(n).unwrap();
    f.wait_ready_one(n, Duration::from_secs(20)).await.unwrap();
    up(1.0).await;
    let repinned =
        std::fs::read_to_string(f.data_dir("node").unwrap().join("known_bridges")).unwrap();
    assert_ne!(repinned, pins, "the new key is pinned");
    f.stop().await;
}

/// Issue 12's probe: through the bridge, a cluster-store write the node was not entitled to
/// reached the real nodes. Now a node whose credential allows `state` only on `sensors.**`
/// gossips its cluster's store to the bridge: the bridge takes `sensors.t` into its replica
/// (and the level above) and refuses `billing.x`, counted (`permission_denied_total{action=
/// "state"}`, `gossip_refused_total{reason="denied"}`) and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_credential_bounds_the_state_its_uplink_gossips() {
    let mut f = fleet();
    let op = Identity::generate();
    let (b, _operators, audit) = governed_bridge(&mut f, &op);
    let baddr = f.procs[b].quic;
    let (na, _) = credentialed_node(&mut f, ("a", "127.0.0.2"), baddr, "", |k| {
        issue_limited(&op, k, Role::Node, &[("state", false, "sensors.**")])
    });
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (badmin, aaddr) = (f.procs[b].admin, f.procs[na].quic);
    // The node's own client is not limited (the node's realm is open to clients): both
    // writes land in the cluster's store.
    let c = Client::connect(common::opts(aaddr, REALM)).await.unwrap();
    c.crdt_update("sensors.t", macula::crdt::Op::Increment(2))
        .await
        .unwrap();
    c.crdt_update("billing.x", macula::crdt::Op::Increment(5))
        .await
        .unwrap();
    poll(
        Duration::from_secs(20),
        "sensors.t at the bridge",
        || async move {
            let (_, body) = common::spawn::http_get(badmin, "/state").ok()?;
            body.contains("sensors.t").then_some(body)
        },
    )
    .await;
    poll(
        Duration::from_secs(10),
        "the denial counted",
        || async move {
            let v = metric(badmin, "macula_permission_denied_total{action=\"state\"}");
            (v >= 1.0).then_some(())
        },
    )
    .await;
    let (_, body) = common::spawn::http_get(badmin, "/state").unwrap();
    assert!(!body.contains("billing.x"), "refused at the bridge: {body}");
    assert!(metric(badmin, "macula_gossip_refused_total{reason=\"denied\"}") >= 1.0);
    let log = poll(Duration::from_secs(10), "audit line", || {
        let audit = audit.clone();
        async move {
            let log = std::fs::read_to_string(&audit).ok()?;
            log.contains("\"name\":\"billing.x\"").then_some(log)
        }
    })
    .await;
    assert!(log.contains("\"action\":\"state\""), "{log}");
    f.stop().await;
}

/// API keys, the simple alternative to signed credentials: a bridge whose configuration lists
/// only the SHA-256 of a node key and of nothing else admits the node presenting that key
/// (from its `credential_file`) and refuses a node without one; the node, listing a client
/// key and that node key, admits a client presenting the client key and refuses a wrong key
/// (`bad_credential`), no key (`no_credential`) and the node key (`wrong_role`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_admit_their_role_and_nothing_else() {
    use macula::auth::api_key;
    let mut f = fleet();
    let (node_key, node_entry) = api_key::generate("node-a", Role::Node);
    let (client_key, client_entry) = api_key::generate("app", Role::Client);
    let entry = |e: &api_key::ApiKeyEntry| {
        format!(
            "[[auth.api_keys.\"{REALM}\"]]\nname = {:?}\nrole = \"{}\"\nsha256 = \"{}\"\n",
            e.name,
            e.role.as_str(),
            e.sha256
        )
    };
    let bcfg = f.write_file("bridge.toml", &entry(&node_entry)).unwrap();
    let b = f
        .bridge("bridge", "127.0.0.1", &["--config", bcfg.to_str().unwrap()])
        .unwrap();
    let baddr = f.procs[b].quic;
    let dir = f.data_dir("keys").unwrap();
    std::fs::write(dir.join("node-a.key"), format!("{node_key}\n")).unwrap();
    let ncfg = f
        .write_file(
            "node-a.toml",
            &format!(
                "{}{}[auth]\ncredential_file = \"{}\"\n",
                entry(&client_entry),
                entry(&node_entry),
                dir.join("node-a.key").display()
            ),
        )
        .unwrap();
    let na = f
        .node(
            "node-a",
            "127.0.0.2",
            "a",
            baddr,
            &["--config", ncfg.to_str().unwrap()],
        )
        .unwrap();
    let nz = f.node("node-z", "127.0.0.4", "z", baddr, &[]).unwrap();
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (badmin, aaddr, aadmin) = (f.procs[b].admin, f.procs[na].quic, f.procs[na].admin);
    let up = "macula_connections_open{role=\"uplink\"}";
    poll(Duration::from_secs(10), "node a's uplink", || async {
        (metric(aadmin, up) == 1.0).then_some(())
    })
    .await;
    let no_cred = "macula_connections_rejected_total{reason=\"no_credential\"}";
    poll(Duration::from_secs(10), "node z refused", || async {
        (metric(badmin, no_cred) >= 1.0).then_some(())
    })
    .await;
    assert!(f.is_running(nz));

    let with = |key: &str| ClientOptions {
        credential: Some(Bytes::copy_from_slice(key.as_bytes())),
        ..common::opts(aaddr, REALM)
    };
    let app = Client::connect(with(&client_key)).await.unwrap();
    let mut sub = app.subscribe("k.t").await.unwrap();
    app.publish("k.t", Bytes::from_static(b"in"), Qos::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(&recv(&mut sub).await.payload[..], b"in");
    let mut wrong = client_key.clone().into_bytes();
    wrong[8] ^= 1;
    let wrong = String::from_utf8(wrong).unwrap();
    assert!(Client::connect(with(&wrong)).await.is_err(), "a wrong key");
    assert!(
        Client::connect(common::opts(aaddr, REALM)).await.is_err(),
        "no key"
    );
    let reasons = |r: &str| {
        metric(
            aadmin,
            &format!("macula_connections_rejected_total{{reason=\"{r}\"}}"),
        )
    };
    assert_eq!(reasons("bad_credential"), 1.0);
    assert_eq!(reasons("no_credential"), 1.0);
    // A node's key presented by a client: the right key, the wrong role.
    assert!(Client::connect(with(&node_key)).await.is_err());
    assert_eq!(reasons("wrong_role"), 1.0);
}

/// The nodes of one cluster bound each other by their credentials, both ends of every mesh
/// link (PROTOCOL §7a): node one may publish and write state only under `one.**`, node two
/// only under `two.**`. A client of each (unrestricted itself) publishes and writes under both
/// prefixes; across the mesh only what the forwarding node's credential allows arrives, the rest
/// is dropped and counted at the receiving node, whichever of the two dialled the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_peers_are_bounded_by_each_others_credentials() {
    use macula::crdt::{Op, Value};
    let mut f = fleet();
    let op = Identity::generate();
    let (b, operators, _) = governed_bridge(&mut f, &op);
    let baddr = f.procs[b].quic;
    // Node `name` of cluster c at `ip`, allowed to publish and write state under `prefix.**`.
    let spawn_node =
        |f: &mut common::Fleet, (name, ip): (&str, &str), prefix: &str, seed: &[&str]| {
            let key = Identity::load_or_create(&f.data_dir(name).unwrap()).unwrap();
            let allow = format!("{prefix}.**");
            let limits = [("publish", false, &allow[..]), ("state", false, &allow[..])];
            let cred = issue_limited(&op, &key, Role::Node, &limits);
            let cred = write_cred(
                &f.data_dir("creds").unwrap(),
                &format!("{name}.cred"),
                &cred,
            );
            let cfg = format!("{operators}[auth]\ncredential_file = \"{cred}\"\n");
            let cfg = f.write_file(&format!("{name}.toml"), &cfg).unwrap();
            let mut args = vec!["--config", cfg.to_str().unwrap()];
            args.extend_from_slice(seed);
            f.node(name, ip, "c", baddr, &args).unwrap()
        };
    let one = spawn_node(&mut f, ("node-one", "127.0.0.2"), "one", &[]);
    let one_addr = f.procs[one].quic.to_string();
    let two = spawn_node(
        &mut f,
        ("node-two", "127.0.0.3"),
        "two",
        &["--seed", &one_addr],
    );
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (a1, a2) = (f.procs[one].admin, f.procs[two].admin);
    common::wait_mesh(&f, one, two).await;
    let client_of = |addr: SocketAddr| {
        let me = Identity::generate();
        let opts = ClientOptions {
            identity: Some(me.clone()),
            credential: Some(issue(&op, &me, Role::Client, REALM, now() + 3600).into()),
            ..common::opts(addr, REALM)
        };
        async move { Client::connect(opts).await.unwrap() }
    };
    let (c1, c2) = (
        client_of(f.procs[one].quic).await,
        client_of(f.procs[two].quic).await,
    );
    let (mut s1, mut s2) = (
        c1.subscribe("**").await.unwrap(),
        c2.subscribe("**").await.unwrap(),
    );
    // Each side's allowed prefix crosses once the interest has: wait for that route.
    common::wait_route(&c1, &mut s2, "one.probe").await;
    common::wait_route(&c2, &mut s1, "two.probe").await;
    let dropped = "macula_messages_dropped_total{reason=\"denied\"}";
    let before = (metric(a1, dropped), metric(a2, dropped));
    for (from, to, denied, allowed) in [
        (&c1, &mut s2, "two.x", "one.x"),
        (&c2, &mut s1, "one.y", "two.y"),
    ] {
        // In order on one link: the allowed one arriving next means the denied one was dropped.
        for topic in [denied, allowed] {
            from.publish(topic, Bytes::from_static(b"m"), Qos::AtLeastOnce)
                .await
                .unwrap();
        }
        loop {
            let m = recv(to).await;
            assert_ne!(
                m.topic(),
                denied,
                "a node's credential bounds what it forwards"
            );
            if m.topic() == allowed {
                break;
            }
        }
    }
    assert_eq!(
        metric(a2, dropped) - before.1,
        1.0,
        "node two dropped two.x"
    );
    assert_eq!(
        metric(a1, dropped) - before.0,
        1.0,
        "node one dropped one.y"
    );

    // State: each client adds 1 under both prefixes; a node takes from its peer only what the
    // peer's credential allows, so each key counts 2 at the node of its prefix's peer...
    for c in [&c1, &c2] {
        for key in ["one.k", "two.k"] {
            c.crdt_update(key, Op::Increment(1)).await.unwrap();
        }
    }
    for (c, theirs) in [(&c1, "two.k"), (&c2, "one.k")] {
        poll(Duration::from_secs(20), "the peer's allowed key", || async move {
            (c.get(theirs).await.unwrap() == Some(Value::GCounter(2))).then_some(())
        })
        .await;
    }
    // ...and 1 (its own client's write only) under the peer's forbidden prefix.
    assert_eq!(c1.get("one.k").await.unwrap(), Some(Value::GCounter(1)));
    assert_eq!(c2.get("two.k").await.unwrap(), Some(Value::GCounter(1)));
    let state_denied = "macula_permission_denied_total{action=\"state\"}";
    assert!(metric(a1, state_denied) >= 1.0 && metric(a2, state_denied) >= 1.0);
}
