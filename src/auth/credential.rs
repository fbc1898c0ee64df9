//! Credentials (`docs/AUTH.md`, "Credentials"): a compact token an operator signs, naming a
//! realm, the subject's public key, a role and an expiry; verifiable offline by any process
//! that knows the realm's operator keys, in the spirit of NATS's decentralized JWTs (no
//! central database on the hot path).
//!
//! Bytes: a MessagePack map (the *body*, keys below) followed by the 64-byte Ed25519
//! signature (RFC 8032) by the issuer's key over [`SIGNING_CONTEXT`] ‖ body. Text: the
//! prefix [`TEXT_PREFIX`] and the bytes in unpadded base64url (RFC 4648 §5).
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `v` | uint | format version, 1 |
//! | `iss` | bin 32 | the issuing operator's Ed25519 public key |
//! | `jti` | bin 16 | the credential's id (what a revocation names) |
//! | `realm` | str | the realm it admits to |
//! | `sub` | bin 32 | the subject's Ed25519 public key: the key that proves the node id at `connect` |
//! | `role` | str | `client`, `node` or `bridge` |
//! | `name` | str | a label for logs and the audit trail (≤ 128 bytes) |
//! | `iat` | uint | issued at, Unix seconds |
//! | `exp` | uint | expires at, Unix seconds (exclusive) |
//! | `perm` | map | optional: what the subject may do ([`Permissions`]); absent: everything |
//! | `lim` | map | optional: rate limits shared by the subject's sessions in one process ([`RateLimits`]: `msgs`, `bytes` per second); absent: the process's own |
//! | `cluster` | str | optional, `node` role only: the one cluster the subject may join (its uplink's and mesh links' `connect.cluster`), 1–[`MAX_CLUSTER`] bytes; absent: any cluster of the realm |
//!
//! Keys this build does not know make the credential malformed: a restriction a verifier
//! does not understand must never be ignored.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::permissions::Permissions;
use crate::identity::Identity;
use crate::rate::RateLimits;

/// Signed before the body (domain separation from every other signature of a key).
pub const SIGNING_CONTEXT: &[u8] = b"macula credential v1\0";

/// Prefix of the text form.
pub const TEXT_PREFIX: &str = "mc1.";

/// Largest credential accepted, bytes (body and signature).
pub const MAX_CREDENTIAL_BYTES: usize = 2048;

/// Longest `name`, bytes.
pub const MAX_NAME: usize = 128;

/// Longest `cluster` claim, bytes (the longest cluster name, `node.cluster`).
pub const MAX_CLUSTER: usize = 64;

/// How far in the future `iat` may be (clock skew between operator and verifier), seconds.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

const SIGNATURE_LEN: usize = 64;

/// What a credential lets its subject be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An application client of a node.
    Client,
    /// A node: a node's uplink to a bridge, a mesh link between nodes of a cluster.
    Node,
    /// A bridge: a child bridge's parent link, a fleet peer link.
    Bridge,
}

impl Role {
    /// The wire and text name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Node => "node",
            Role::Bridge => "bridge",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "client" => Ok(Role::Client),
            "node" => Ok(Role::Node),
            "bridge" => Ok(Role::Bridge),
            other => Err(format!("role {other:?}: expected client, node or bridge")),
        }
    }
}

/// What an operator asserts about a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The credential's id (revocations name it).
    pub id: [u8; 16],
    /// The realm it admits to.
    pub realm: String,
    /// The subject's Ed25519 public key.
    pub subject: [u8; 32],
    /// The role granted.
    pub role: Role,
    /// A label for logs and audit (≤ [`MAX_NAME`] bytes).
    pub name: String,
    /// Issued at, Unix seconds.
    pub issued_at: u64,
    /// Expires at, Unix seconds (not valid from this second on).
    pub expires_at: u64,
    /// What the subject may do (default: everything).
    pub permissions: Permissions,
    /// Rate limits for all the subject's sessions together in one process (default: none
    /// beyond the process's own `[rate]`).
    pub limits: RateLimits,
    /// The one cluster a `node` credential admits to (`None`: any cluster of the realm).
    /// Only a `node` credential may carry one: a client's cluster is its node's, a bridge
    /// has none.
    pub cluster: Option<String>,
}

/// A decoded credential whose signature verified against its issuer key (which the caller
/// must still find among the realm's operators, [`Credential::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The issuer's public key.
    pub issuer: [u8; 32],
    /// The claims.
    pub claims: Claims,
}

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not a credential at all: bad length, text prefix, base64, MessagePack or field.
    #[error("malformed credential: {0}")]
    Malformed(String),
    /// A format version this build does not read.
    #[error("credential version {0} not supported (this build reads 1)")]
    Version(u64),
    /// The signature does not verify with the key it names as issuer.
    #[error("credential signature does not verify")]
    BadSignature,
    /// Signed by a key that is not an operator of the realm.
    #[error("credential issuer is not an operator of realm {0:?}")]
    UnknownIssuer(String),
    /// For another realm than the one connected to.
    #[error("credential is for realm {got:?}, not {want:?}")]
    WrongRealm {
        /// The credential's realm.
        got: String,
        /// The realm of the session.
        want: String,
    },
    /// Names another key than the one that proved the node id.
    #[error("credential names another subject key")]
    WrongSubject,
    /// Past its expiry.
    #[error("credential expired at {0} (Unix seconds)")]
    Expired(u64),
    /// Issued in the future (beyond the allowed clock skew).
    #[error("credential not valid before {0} (Unix seconds)")]
    NotYetValid(u64),
    /// A role that may not open this kind of link.
    #[error("role {got} may not connect as {want}")]
    WrongRole {
        /// The credential's role.
        got: &'static str,
        /// What the link needs.
        want: &'static str,
    },
    /// A `node` credential bound to another cluster than the one the session claims.
    #[error("credential admits to cluster {got:?}, not {want:?}")]
    WrongCluster {
        /// The credential's cluster.
        got: String,
        /// The cluster the session claimed (`connect.cluster`).
        want: String,
    },
    /// Revoked by the operator.
    #[error("credential revoked")]
    Revoked,
    /// An API key (`mk1.…`) that is not one of the realm's (`auth.api_keys`).
    #[error("unknown API key")]
    UnknownApiKey,
}

impl CredentialError {
    /// The `reason` label of `macula_connections_rejected_total` and the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialError::Malformed(_) | CredentialError::Version(_) => "bad_credential",
            CredentialError::BadSignature | CredentialError::UnknownIssuer(_) => "bad_credential",
            CredentialError::WrongRealm { .. } => "wrong_realm",
            CredentialError::WrongSubject => "bad_credential",
            CredentialError::Expired(_) | CredentialError::NotYetValid(_) => "expired",
            CredentialError::WrongRole { .. } => "wrong_role",
            CredentialError::WrongCluster { .. } => "wrong_cluster",
            CredentialError::Revoked => "revoked",
            CredentialError::UnknownApiKey => "bad_credential",
        }
    }
}

#[derive(Serialize)]
struct BodySer<'a> {
    v: u64,
    #[serde(with = "serde_bytes")]
    iss: &'a [u8],
    #[serde(with = "serde_bytes")]
    jti: &'a [u8],
    realm: &'a str,
    #[serde(with = "serde_bytes")]
    sub: &'a [u8],
    role: Role,
    name: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Permissions::is_open")]
    perm: &'a Permissions,
    #[serde(skip_serializing_if = "RateLimits::is_unlimited")]
    lim: &'a RateLimits,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyDe<'a> {
    v: u64,
    #[serde(with = "serde_bytes", borrow)]
    iss: &'a [u8],
    #[serde(with = "serde_bytes", borrow)]
    jti: &'a [u8],
    realm: String,
    #[serde(with = "serde_bytes", borrow)]
    sub: &'a [u8],
    role: Role,
    #[serde(default)]
    name: String,
    iat: u64,
    exp: u64,
    #[serde(default)]
    perm: Permissions,
    #[serde(default)]
    lim: RateLimits,
    #[serde(default)]
    cluster: Option<String>,
}

fn malformed(e: impl std::fmt::Display) -> CredentialError {
    CredentialError::Malformed(e.to_string())
}

/// A `cluster` claim is only for the `node` role and is 1–[`MAX_CLUSTER`] bytes.
fn check_cluster(role: Role, cluster: Option<&str>) -> Result<(), CredentialError> {
    match cluster {
        None => Ok(()),
        Some(_) if role != Role::Node => Err(malformed(format!(
            "a cluster claim on a {} credential (only node credentials name a cluster)",
            role.as_str()
        ))),
        Some(c) if c.is_empty() || c.len() > MAX_CLUSTER => Err(malformed(format!(
            "cluster claim of {} bytes (1 to {MAX_CLUSTER})",
            c.len()
        ))),
        Some(_) => Ok(()),
    }
}

fn fixed<const N: usize>(field: &str, b: &[u8]) -> Result<[u8; N], CredentialError> {
    b.try_into()
        .map_err(|_| malformed(format!("{field}: {} bytes, expected {N}", b.len())))
}

impl Credential {
    /// Signs `claims` with `operator`'s key: the credential's bytes. Errors: a `name` over
    /// [`MAX_NAME`] bytes (as [`CredentialError::Malformed`]).
    pub fn issue(operator: &Identity, claims: &Claims) -> Result<Vec<u8>, CredentialError> {
        if claims.name.len() > MAX_NAME {
            return Err(malformed(format!("name over {MAX_NAME} bytes")));
        }
        check_cluster(claims.role, claims.cluster.as_deref())?;
        let issuer = operator.public_key();
        let body = rmp_serde::to_vec_named(&BodySer {
            v: 1,
            iss: &issuer,
            jti: &claims.id,
            realm: &claims.realm,
            sub: &claims.subject,
            role: claims.role,
            name: &claims.name,
            iat: claims.issued_at,
            exp: claims.expires_at,
            perm: &claims.permissions,
            lim: &claims.limits,
            cluster: claims.cluster.as_deref(),
        })
        .map_err(malformed)?;
        let mut signed = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
        signed.extend_from_slice(SIGNING_CONTEXT);
        signed.extend_from_slice(&body);
        let mut out = body;
        out.extend_from_slice(&operator.sign(&signed));
        if out.len() > MAX_CREDENTIAL_BYTES {
            return Err(malformed(format!("over {MAX_CREDENTIAL_BYTES} bytes")));
        }
        Ok(out)
    }

    /// Decodes `bytes` and verifies the signature against the issuer key the body names.
    /// Errors: [`CredentialError::Malformed`], [`CredentialError::Version`],
    /// [`CredentialError::BadSignature`]. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Credential, CredentialError> {
        if bytes.len() > MAX_CREDENTIAL_BYTES {
            return Err(malformed(format!("over {MAX_CREDENTIAL_BYTES} bytes")));
        }
        if bytes.len() <= SIGNATURE_LEN {
            return Err(malformed("shorter than a signature"));
        }
        let (body, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let b: BodyDe = rmp_serde::from_slice(body).map_err(malformed)?;
        if b.v != 1 {
            return Err(CredentialError::Version(b.v));
        }
        if b.name.len() > MAX_NAME {
            return Err(malformed(format!("name over {MAX_NAME} bytes")));
        }
        check_cluster(b.role, b.cluster.as_deref())?;
        let issuer: [u8; 32] = fixed("iss", b.iss)?;
        let claims = Claims {
            id: fixed("jti", b.jti)?,
            realm: b.realm,
            subject: fixed("sub", b.sub)?,
            role: b.role,
            name: b.name,
            issued_at: b.iat,
            expires_at: b.exp,
            permissions: b.perm.normalised().map_err(malformed)?,
            limits: b.lim,
            cluster: b.cluster,
        };
        let key = ed25519_dalek::VerifyingKey::from_bytes(&issuer)
            .map_err(|_| CredentialError::BadSignature)?;
        let sig = ed25519_dalek::Signature::from_bytes(&fixed::<64>("signature", sig)?);
        let mut signed = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
        signed.extend_from_slice(SIGNING_CONTEXT);
        signed.extend_from_slice(body);
        key.verify_strict(&signed, &sig)
            .map_err(|_| CredentialError::BadSignature)?;
        Ok(Credential { issuer, claims })
    }

    /// Checks a decoded credential for a session of `realm` whose node id was proven with
    /// `subject_key`, at `now` (Unix seconds), against the realm's `operators`.
    /// Errors: [`CredentialError::UnknownIssuer`], [`CredentialError::WrongRealm`],
    /// [`CredentialError::WrongSubject`], [`CredentialError::Expired`],
    /// [`CredentialError::NotYetValid`].
    pub fn check(
        &self,
        realm: &str,
        subject_key: &[u8; 32],
        operators: &[[u8; 32]],
        now: u64,
    ) -> Result<(), CredentialError> {
        let c = &self.claims;
        if c.realm != realm {
            return Err(CredentialError::WrongRealm {
                got: c.realm.clone(),
                want: realm.into(),
            });
        }
        if !operators.contains(&self.issuer) {
            return Err(CredentialError::UnknownIssuer(realm.into()));
        }
        if c.subject != *subject_key {
            return Err(CredentialError::WrongSubject);
        }
        if now >= c.expires_at {
            return Err(CredentialError::Expired(c.expires_at));
        }
        if c.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(CredentialError::NotYetValid(c.issued_at));
        }
        Ok(())
    }

    /// The text form of credential bytes: [`TEXT_PREFIX`] + unpadded base64url.
    pub fn to_text(bytes: &[u8]) -> String {
        format!(
            "{TEXT_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// The bytes of a text credential (surrounding whitespace ignored). Errors:
    /// [`CredentialError::Malformed`].
    pub fn from_text(text: &str) -> Result<Vec<u8>, CredentialError> {
        let t = text.trim();
        let b64 = t
            .strip_prefix(TEXT_PREFIX)
            .ok_or_else(|| malformed(format!("text does not start with {TEXT_PREFIX:?}")))?;
        if b64.len() > MAX_CREDENTIAL_BYTES * 4 / 3 + 4 {
            return Err(malformed(format!("over {MAX_CREDENTIAL_BYTES} bytes")));
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(malformed)
    }
}

/// The current time in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
