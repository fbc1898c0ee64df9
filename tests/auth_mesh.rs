//! RPC across a governed cluster's mesh (`docs/AUTH.md`, "Permissions"; issue 12), on real
//! processes: each node bounds the provider records its mesh peer stores and the calls the
//! peer routes to it by the peer's `node` credential, signed with `macula keys sign
//! --deny ACTION=PATTERN`. Every refusal is typed, counted and audited, and an allowed witness
//! keeps its round trips in both directions.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{metric, poll};
use macula::auth::Credential;
use macula::client::{CallError, Client, ClientOptions};
use macula::identity::{Identity, IDENTITY_KEY_FILE};

const REALM: &str = "io.macula";
const CLUSTER: &str = "c";
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs `macula keys …` in `dir`; panics unless it succeeds. Returns its standard output.
fn keys(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_macula"))
        .arg("keys")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "macula keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The operator's `keys sign` arguments for `role` in the test realm, plus `extra`.
fn sign<'a>(role: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "sign",
        "--operator",
        "op.key",
        "--realm",
        REALM,
        "--role",
        role,
    ];
    args.extend_from_slice(extra);
    args
}

/// A governed cluster of two nodes: `A` (127.0.0.2, an unrestricted credential, auditing to
/// a file) and `B` (127.0.0.3, seeded with A), whose credential denies `register` and `call`
/// of `billing.*`. Both uplinks point at a closed port: only the mesh joins them. Returns
/// the fleet, A's and B's indices, A's audit log and the operator's key file.
async fn governed_pair() -> (common::Fleet, usize, usize, PathBuf, PathBuf) {
    let mut f = common::fleet();
    let dir = f.dir.path().to_path_buf();
    keys(&dir, &["generate", "--out", "op.key"]);
    let op = Identity::load(&dir.join("op.key")).unwrap();
    let operators = format!(
        "[auth.operators]\n\"{REALM}\" = [\"{}\"]\n",
        hex(&op.public_key())
    );
    let audit = f.data_dir("audit").unwrap().join("node-a-audit.log");
    let start = |f: &mut common::Fleet,
                 name: &str,
                 ip: &str,
                 limits: &[&str],
                 extra: &str,
                 seed: &[&str]| {
        // The node's identity key, made ahead of its first start, then its credential.
        let key = f.data_dir(name).unwrap().join(IDENTITY_KEY_FILE);
        keys(&dir, &["generate", "--out", key.to_str().unwrap()]);
        let cred = dir.join(format!("{name}.cred"));
        let mut args = vec![
            "--subject-key",
            key.to_str().unwrap(),
            "--name",
            name,
            "--cluster",
            CLUSTER,
            "--out",
            cred.to_str().unwrap(),
        ];
        args.extend_from_slice(limits);
        keys(&dir, &sign("node", &args));
        let cfg = format!(
            "{operators}{extra}[auth]\ncredential_file = \"{}\"\n",
            cred.display()
        );
        let cfg = f.write_file(&format!("{name}.toml"), &cfg).unwrap();
        let mut args = vec!["--config", cfg.to_str().unwrap()];
        args.extend_from_slice(seed);
        let closed: SocketAddr = "127.0.0.1:9".parse().unwrap();
        f.node(name, ip, CLUSTER, closed, &args).unwrap()
    };
    let a_extra = format!("[audit]\nfile = \"{}\"\n", audit.display());
    let a = start(&mut f, "node-a", "127.0.0.2", &[], &a_extra, &[]);
    let a_addr = f.procs[a].quic.to_string();
    let denied = ["--deny", "register=billing.*", "--deny", "call=billing.*"];
    let b = start(
        &mut f,
        "node-b",
        "127.0.0.3",
        &denied,
        "",
        &["--seed", &a_addr],
    );
    f.wait_ready(Duration::from_secs(20)).await.unwrap();
    common::wait_mesh(&f, a, b).await;
    (f, a, b, audit, dir.join("op.key"))
}

/// A client of the node at `addr` with an unrestricted `client` credential of the realm.
async fn client_of(dir: &Path, addr: SocketAddr) -> Client {
    let me = Identity::generate();
    let text = keys(dir, &sign("client", &["--subject", &hex(&me.public_key())]));
    let opts = ClientOptions {
        identity: Some(me),
        credential: Some(Credential::from_text(&text).unwrap().into()),
        ..common::opts(addr, REALM)
    };
    Client::connect(opts).await.unwrap()
}

/// Calls `procedure` from `c` until an answer other than `NoProvider` (the registration is
/// still spreading) comes, within 20 s.
async fn call_when_known(c: &Client, procedure: &str) -> Result<Bytes, CallError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c
            .call(procedure, Bytes::from_static(b"ping"), CALL_TIMEOUT)
            .await
        {
            Err(CallError::NoProvider) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// The first line of the audit log at `path` that `pick` accepts, within 10 s.
async fn audit_line(path: &Path, pick: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    poll(Duration::from_secs(10), "the audit line", || async {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
            .find(|l| pick(l))
    })
    .await
}

/// Node B may not register `billing.*`: a client of B providing `billing.pay` stays
/// unreachable from node A (A refuses B's provider record, counted and audited, and does not
/// believe the one B serves from its own store), while `svc.echo`, provided the same way, is
/// called from A. B's own clients still reach its provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_advertise_a_procedure_its_credential_does_not_register() {
    let (f, a, b, audit, op) = governed_pair().await;
    let dir = op.parent().unwrap();
    let (ca, cb) = (
        client_of(dir, f.procs[a].quic).await,
        client_of(dir, f.procs[b].quic).await,
    );
    let aa = f.procs[a].admin;
    let store_denied = "macula_dht_store_refused_total{reason=\"denied\"}";
    assert_eq!(metric(aa, store_denied), 0.0);
    let _pay = cb
        .register("billing.pay", |b| async move { Ok(b) })
        .await
        .unwrap();
    let _echo = cb
        .register("svc.echo", |b| async move { Ok(b) })
        .await
        .unwrap();
    // The witness: an allowed procedure of B is called from A.
    let echoed = call_when_known(&ca, "svc.echo").await;
    assert_eq!(echoed, Ok(Bytes::from_static(b"ping")), "svc.echo from A");
    // B's STORE of billing.pay reached A and was refused there.
    poll(Duration::from_secs(20), "A refuses B's store", || async {
        (metric(aa, store_denied) >= 1.0).then_some(())
    })
    .await;
    let line = audit_line(&audit, |l| {
        l["event"] == "permission" && l["action"] == "register" && l["name"] == "billing.pay"
    })
    .await;
    assert_eq!(line["decision"], "denied");
    assert_eq!(line["credential_name"], "node-b");
    assert_eq!(line["role"], "node");
    // Not in A's DHT nor its gossiped registry, and B's own answer is not believed: A's
    // clients find no provider (the uplink is down, so nothing above answers either).
    let hidden = ca
        .call("billing.pay", Bytes::from_static(b"ping"), CALL_TIMEOUT)
        .await;
    assert_eq!(hidden, Err(CallError::NoProvider));
    // B provides it to its own clients all the same.
    let local = cb
        .call("billing.pay", Bytes::from_static(b"ping"), CALL_TIMEOUT)
        .await;
    assert_eq!(local, Ok(Bytes::from_static(b"ping")));
    assert!(metric(aa, "macula_permission_denied_total{action=\"register\"}") >= 1.0);
    assert_eq!(
        metric(aa, "macula_permission_denied_total{action=\"call\"}"),
        0.0
    );
}

/// Node B may not call `billing.*`: its client's call of `billing.x`, provided by a client
/// of node A, is refused at A with `PERMISSION_DENIED` (one denial counted and audited at A,
/// the provider never runs), while its call of `svc.time` there is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_route_a_call_its_credential_does_not_permit() {
    let (f, a, b, audit, op) = governed_pair().await;
    let dir = op.parent().unwrap();
    let (ca, cb) = (
        client_of(dir, f.procs[a].quic).await,
        client_of(dir, f.procs[b].quic).await,
    );
    let aa = f.procs[a].admin;
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = ran.clone();
    let _x = ca
        .register("billing.x", move |b| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move { Ok(b) }
        })
        .await
        .unwrap();
    let _time = ca
        .register(
            "svc.time",
            |_| async move { Ok(Bytes::from_static(b"noon")) },
        )
        .await
        .unwrap();
    // The witness: an allowed call from B's client reaches A's provider.
    let time = call_when_known(&cb, "svc.time").await;
    assert_eq!(time, Ok(Bytes::from_static(b"noon")), "svc.time from B");
    let call_denied = "macula_permission_denied_total{action=\"call\"}";
    assert_eq!(metric(aa, call_denied), 0.0);
    let refused = call_when_known(&cb, "billing.x").await;
    match &refused {
        Err(CallError::PermissionDenied(m)) => {
            assert!(m.contains("call") && m.contains("billing.x"), "{m}")
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    assert_eq!(metric(aa, call_denied), 1.0, "counted once, at A");
    assert_eq!(ran.load(std::sync::atomic::Ordering::Relaxed), 0);
    let line = audit_line(&audit, |l| {
        l["event"] == "permission" && l["action"] == "call" && l["name"] == "billing.x"
    })
    .await;
    assert_eq!(line["decision"], "denied");
    assert_eq!(line["credential_name"], "node-b");
    // A's own clients are not bounded by B's credential.
    let own = ca
        .call("billing.x", Bytes::from_static(b"ping"), CALL_TIMEOUT)
        .await;
    assert_eq!(own, Ok(Bytes::from_static(b"ping")));
    assert_eq!(ran.load(std::sync::atomic::Ordering::Relaxed), 1);
}
