//! The cost of admission per `connect` (`docs/AUTH.md`): proving and verifying a node id
//! over a connection's exporter bytes, and decoding + checking a credential; and the cost of
//! a permission check per request (a publish's topic against allow/deny patterns, a
//! subscription against them).
//!
//! `cargo bench --bench auth -- --quick`; figures in `docs/BENCHMARKS.md`.

use criterion::{criterion_group, criterion_main, Criterion};
use macula::auth::{Action, Admission, Claims, Credential, Permissions, Role};
use macula::identity::{verify, Identity, Side};

fn bench(c: &mut Criterion) {
    let me = Identity::from_secret(&[2; 32]);
    let op = Identity::from_secret(&[1; 32]);
    let exporter = [9u8; 32];
    c.bench_function("identity: prove", |b| {
        b.iter(|| me.prove(Side::Initiator, &exporter))
    });
    let proof = me.prove(Side::Initiator, &exporter);
    c.bench_function("identity: verify", |b| {
        b.iter(|| verify(Side::Initiator, &exporter, &me.node_id(), Some(&proof)).unwrap())
    });
    let claims = Claims {
        id: [5; 16],
        realm: "io.macula".into(),
        subject: me.public_key(),
        role: Role::Node,
        name: "street-7".into(),
        issued_at: 1_800_000_000,
        expires_at: 1_900_000_000,
        permissions: Default::default(),
        limits: Default::default(),
        cluster: None,
    };
    let cred = Credential::issue(&op, &claims).unwrap();
    let admission = Admission::new([("io.macula".to_string(), vec![op.public_key()])].into());
    c.bench_function("credential: decode + check (admit)", |b| {
        b.iter(|| {
            admission
                .admit(
                    "io.macula",
                    &me.public_key(),
                    Some(&cred),
                    (Role::Node, "street-7"),
                    1_850_000_000,
                )
                .unwrap()
        })
    });
    // A typical restricted credential: a few allow patterns and a deny.
    let mut p = Permissions::default();
    for a in ["sensors.**", "metrics.*.cpu", "alerts.site-3.*"] {
        p.add(Action::Publish, false, a).unwrap();
        p.add(Action::Subscribe, false, a).unwrap();
    }
    p.add(Action::Publish, true, "sensors.secret.**").unwrap();
    p.add(Action::Subscribe, true, "sensors.secret.**").unwrap();
    c.bench_function("permissions: publish allowed (3 allow, 1 deny)", |b| {
        b.iter(|| assert!(p.permits(Action::Publish, "sensors.site-3.dev-7.temp")))
    });
    c.bench_function("permissions: publish denied (no allow matches)", |b| {
        b.iter(|| assert!(!p.permits(Action::Publish, "billing.invoices.x")))
    });
    c.bench_function("permissions: subscribe covered (3 allow, 1 deny)", |b| {
        b.iter(|| assert!(p.permits(Action::Subscribe, "alerts.site-3.*")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
