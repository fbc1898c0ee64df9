use super::*;
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000;

fn claims(subject: &Identity) -> Claims {
    Claims {
        id: [5; 16],
        realm: "io.macula".into(),
        subject: subject.public_key(),
        role: Role::Node,
        name: "street-7".into(),
        issued_at: NOW - 10,
        expires_at: NOW + 3600,
        permissions: Default::default(),
        limits: Default::default(),
        cluster: None,
    }
}

fn operator() -> Identity {
    Identity::from_secret(&[1; 32])
}

#[test]
fn an_issued_credential_decodes_and_checks() {
    let (op, me) = (operator(), Identity::from_secret(&[2; 32]));
    let bytes = Credential::issue(&op, &claims(&me)).unwrap();
    assert!(bytes.len() < 300, "compact: {} bytes", bytes.len());
    let c = Credential::decode(&bytes).unwrap();
    assert_eq!(c.issuer, op.public_key());
    assert_eq!(c.claims, claims(&me));
    let ops = [op.public_key()];
    assert_eq!(c.check("io.macula", &me.public_key(), &ops, NOW), Ok(()));
    // The text form round-trips.
    let text = Credential::to_text(&bytes);
    assert!(text.starts_with(TEXT_PREFIX));
    assert_eq!(Credential::from_text(&format!(" {text}\n")).unwrap(), bytes);
}

#[test]
fn each_check_refuses_with_its_own_error() {
    let (op, me) = (operator(), Identity::from_secret(&[2; 32]));
    let c = Credential::decode(&Credential::issue(&op, &claims(&me)).unwrap()).unwrap();
    let ops = [op.public_key()];
    let key = me.public_key();
    assert!(matches!(
        c.check("org.other", &key, &ops, NOW),
        Err(CredentialError::WrongRealm { .. })
    ));
    let other_op = Identity::from_secret(&[9; 32]).public_key();
    assert_eq!(
        c.check("io.macula", &key, &[other_op], NOW),
        Err(CredentialError::UnknownIssuer("io.macula".into()))
    );
    let thief = Identity::from_secret(&[3; 32]).public_key();
    assert_eq!(
        c.check("io.macula", &thief, &ops, NOW),
        Err(CredentialError::WrongSubject)
    );
    assert_eq!(
        c.check("io.macula", &key, &ops, NOW + 3600),
        Err(CredentialError::Expired(NOW + 3600))
    );
    let early = NOW - 10 - MAX_CLOCK_SKEW_SECS - 1;
    assert_eq!(
        c.check("io.macula", &key, &ops, early),
        Err(CredentialError::NotYetValid(NOW - 10))
    );
}

#[test]
fn a_credential_signed_by_another_key_than_its_issuer_fails() {
    // Body names operator A as issuer, signature by B.
    let (a, b, me) = (
        operator(),
        Identity::from_secret(&[8; 32]),
        Identity::from_secret(&[2; 32]),
    );
    let good = Credential::issue(&a, &claims(&me)).unwrap();
    let forged_sig = Credential::issue(&b, &claims(&me)).unwrap();
    let body_len = good.len() - 64;
    let mut forged = good[..body_len].to_vec();
    forged.extend_from_slice(&forged_sig[forged_sig.len() - 64..]);
    assert_eq!(
        Credential::decode(&forged),
        Err(CredentialError::BadSignature)
    );
}

#[test]
fn malformed_text_and_sizes_are_refused() {
    for t in ["", "mc1.", "mc2.AAAA", "mc1.!!!!", "plain"] {
        let bytes = Credential::from_text(t);
        assert!(
            bytes.is_err() || Credential::decode(&bytes.unwrap()).is_err(),
            "{t:?}"
        );
    }
    assert!(matches!(
        Credential::decode(&vec![0; MAX_CREDENTIAL_BYTES + 1]),
        Err(CredentialError::Malformed(_))
    ));
    let long = Claims {
        name: "x".repeat(MAX_NAME + 1),
        ..claims(&operator())
    };
    assert!(Credential::issue(&operator(), &long).is_err());
}

proptest! {
    /// Garbage never decodes into a credential and never panics.
    #[test]
    fn garbage_never_decodes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(Credential::decode(&bytes).is_err());
    }

    /// Any flipped bit of a valid credential is refused (malformed or bad signature).
    #[test]
    fn a_flipped_bit_is_refused(seed in any::<u8>(), bit in any::<usize>()) {
        let me = Identity::from_secret(&[seed; 32]);
        let mut bytes = Credential::issue(&operator(), &claims(&me)).unwrap();
        let bit = bit % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let decoded = Credential::decode(&bytes);
        // A flip may keep the body decodable but can never keep the signature valid — or
        // it lands in a field's value and changes what was signed.
        prop_assert!(decoded.is_err(), "flipped bit {bit} still decodes: {decoded:?}");
    }

    /// Truncation at any length is refused.
    #[test]
    fn truncation_is_refused(cut in any::<usize>()) {
        let bytes = Credential::issue(&operator(), &claims(&operator())).unwrap();
        let cut = cut % bytes.len();
        prop_assert!(Credential::decode(&bytes[..cut]).is_err());
    }
}

#[test]
fn permissions_travel_in_the_credential() {
    let (op, me) = (operator(), Identity::from_secret(&[2; 32]));
    let mut c = claims(&me);
    c.permissions
        .add(crate::auth::Action::Publish, false, "sensors.**.**")
        .unwrap();
    c.permissions
        .add(crate::auth::Action::Call, true, "billing.*")
        .unwrap();
    let got = Credential::decode(&Credential::issue(&op, &c).unwrap()).unwrap();
    assert_eq!(got.claims.permissions.publish.allow, ["sensors.**"]);
    assert_eq!(got.claims.permissions.call.deny, ["billing.*"]);
    assert!(!got
        .claims
        .permissions
        .permits(crate::auth::Action::Publish, "billing.x"));
}

/// Signs a hand-made body (for fields `issue` would never write).
fn sign_raw(op: &Identity, body: &[u8]) -> Vec<u8> {
    let mut signed = SIGNING_CONTEXT.to_vec();
    signed.extend_from_slice(body);
    let mut out = body.to_vec();
    out.extend_from_slice(&op.sign(&signed));
    out
}

#[test]
fn unknown_keys_and_bad_patterns_are_malformed() {
    let (op, me) = (operator(), Identity::from_secret(&[2; 32]));
    let c = claims(&me);
    let perm = |p: serde_json::Value| {
        let mut m = serde_json::json!({
            "v": 1, "iss": op.public_key().to_vec(), "jti": c.id.to_vec(), "realm": c.realm,
            "sub": c.subject.to_vec(), "role": "node", "name": "", "iat": c.issued_at,
            "exp": c.expires_at,
        });
        if let Some((k, v)) = p.as_object().and_then(|o| o.iter().next()) {
            m[k] = v.clone();
        }
        // serde_json arrays of numbers become MessagePack arrays, not bin: re-encode the
        // byte fields as bin through the typed body.
        let b: BodyJson = serde_json::from_value(m).unwrap();
        sign_raw(&op, &rmp_serde::to_vec_named(&b).unwrap())
    };
    // The baseline decodes.
    assert!(Credential::decode(&perm(serde_json::json!({}))).is_ok());
    let unknown = perm(serde_json::json!({"rate": 5}));
    assert!(matches!(
        Credential::decode(&unknown),
        Err(CredentialError::Malformed(_))
    ));
    let future_perm = perm(serde_json::json!({"perm": {"pub": {"allow": ["a"]}, "bytes_s": 5}}));
    assert!(matches!(
        Credential::decode(&future_perm),
        Err(CredentialError::Malformed(_))
    ));
    let bad_pattern = perm(serde_json::json!({"perm": {"pub": {"allow": ["a*b"]}}}));
    assert!(matches!(
        Credential::decode(&bad_pattern),
        Err(CredentialError::Malformed(_))
    ));
}

/// A body with the byte fields as bin and anything else passed through.
#[derive(serde::Serialize, serde::Deserialize)]
struct BodyJson {
    #[serde(with = "serde_bytes")]
    iss: Vec<u8>,
    #[serde(with = "serde_bytes")]
    jti: Vec<u8>,
    #[serde(with = "serde_bytes")]
    sub: Vec<u8>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

#[test]
fn a_cluster_claim_binds_a_node_credential_to_one_cluster() {
    let (op, me) = (operator(), Identity::from_secret(&[2; 32]));
    let bound = Claims {
        cluster: Some("street-7".into()),
        ..claims(&me)
    };
    let bytes = Credential::issue(&op, &bound).unwrap();
    assert_eq!(Credential::decode(&bytes).unwrap().claims, bound);
    let mut operators = std::collections::HashMap::new();
    operators.insert("io.macula".to_string(), vec![op.public_key()]);
    let adm = crate::auth::Admission::new(operators);
    let admit = |cluster: &str| {
        adm.admit(
            "io.macula",
            &me.public_key(),
            Some(&bytes),
            (Role::Node, cluster),
            NOW,
        )
    };
    assert!(admit("street-7").unwrap().is_some());
    let e = admit("street-8").unwrap_err();
    assert_eq!(e.reason(), "wrong_cluster");
    assert_eq!(e.code(), crate::wire::ErrorCode::PermissionDenied);
    // An unbound node credential admits to any cluster of the realm.
    let open = Credential::issue(&op, &claims(&me)).unwrap();
    let any = adm.admit(
        "io.macula",
        &me.public_key(),
        Some(&open),
        (Role::Node, "street-8"),
        NOW,
    );
    assert!(any.unwrap().is_some());
}

#[test]
fn a_cluster_claim_outside_the_node_role_or_its_bounds_is_malformed() {
    let (op, me) = (operator(), Identity::from_secret(&[2; 32]));
    for (role, cluster) in [
        (Role::Client, "street-7".to_string()),
        (Role::Bridge, "street-7".to_string()),
        (Role::Node, String::new()),
        (Role::Node, "c".repeat(MAX_CLUSTER + 1)),
    ] {
        let c = Claims {
            role,
            cluster: Some(cluster.clone()),
            ..claims(&me)
        };
        assert!(
            matches!(
                Credential::issue(&op, &c),
                Err(CredentialError::Malformed(_))
            ),
            "issued {role:?} {cluster:?}"
        );
        // Nor does a hand-signed body with it decode.
        let body = rmp_serde::to_vec_named(&BodySer {
            v: 1,
            iss: &op.public_key(),
            jti: &c.id,
            realm: &c.realm,
            sub: &c.subject,
            role,
            name: "",
            iat: c.issued_at,
            exp: c.expires_at,
            perm: &c.permissions,
            lim: &c.limits,
            cluster: Some(&cluster),
        })
        .unwrap();
        assert!(matches!(
            Credential::decode(&sign_raw(&op, &body)),
            Err(CredentialError::Malformed(_))
        ));
    }
}
