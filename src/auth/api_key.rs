//! API keys (`docs/AUTH.md`, "API keys"): the simple alternative to operator-signed
//! credentials, for a deployment that does not run an operator. The configuration lists, per
//! realm, the SHA-256 of each key with the role it grants and a label; the key itself is
//! never stored by the server. A client presents the key's text in `connect.credential`
//! (the same field a credential uses), after proving its node id as every session does.
//!
//! Key text: [`TEXT_PREFIX`] and 32 random bytes in unpadded base64url (RFC 4648 §5), 47
//! characters. What the server stores: the lowercase hex SHA-256 (FIPS 180-4) of those
//! characters. Comparison is by hash, so the time taken does not depend on how much of a
//! key matched.
//!
//! An API key carries no permissions or limits beyond its role: sessions admitted on one
//! may do what their role may, bounded by the process's own limits. For per-tenant
//! permissions, rate limits and revocation lists, use credentials.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Role;

/// Prefix of an API key's text.
pub const TEXT_PREFIX: &str = "mk1.";

/// One configured key: its hash, role and label (`auth.api_keys`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// A label for logs and the audit trail.
    pub name: String,
    /// The role it grants: `client`, `node` or `bridge`.
    pub role: Role,
    /// Lowercase hex SHA-256 of the key's text (`macula keys api-key` prints it).
    pub sha256: String,
}

/// A parsed key: the hash as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The label.
    pub name: String,
    /// The role granted.
    pub role: Role,
    /// SHA-256 of the key's text.
    pub hash: [u8; 32],
}

impl ApiKey {
    /// Parses a configured entry. Errors: a hash that is not 64 hex digits, a label over
    /// [`super::credential::MAX_NAME`] bytes.
    pub fn parse(e: &ApiKeyEntry) -> Result<ApiKey, String> {
        if e.name.len() > super::credential::MAX_NAME {
            return Err(format!("api key {:?}: name over 128 bytes", e.name));
        }
        let hash = super::parse_public_key(&e.sha256)
            .map_err(|_| format!("api key {:?}: sha256 must be 64 hex digits", e.name))?;
        Ok(ApiKey {
            name: e.name.clone(),
            role: e.role,
            hash,
        })
    }

    /// The id an admitted session's key is known by (audit log, live sessions): the first
    /// 16 bytes of its hash.
    pub fn id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id.copy_from_slice(&self.hash[..16]);
        id
    }
}

/// Whether `presented` (the `connect.credential` bytes) is an API key's text rather than a
/// credential.
pub fn is_api_key(presented: &[u8]) -> bool {
    presented.starts_with(TEXT_PREFIX.as_bytes())
}

/// SHA-256 of a key's text.
pub fn hash(text: &[u8]) -> [u8; 32] {
    Sha256::digest(text).into()
}

/// The key in `keys` whose hash is that of `presented`, if any.
pub fn find<'a>(keys: &'a [ApiKey], presented: &[u8]) -> Option<&'a ApiKey> {
    let h = hash(presented);
    keys.iter().find(|k| k.hash == h)
}

/// A new random key: its text (give it to the client) and the entry for the configuration.
pub fn generate(name: &str, role: Role) -> (String, ApiKeyEntry) {
    let secret: [u8; 32] = rand::random();
    let text = format!(
        "{TEXT_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let sha256 = hash(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let entry = ApiKeyEntry {
        name: name.into(),
        role,
        sha256,
    };
    (text, entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_found_by_its_hash_and_nothing_else_is() {
        let (text, entry) = generate("sensor-1", Role::Client);
        assert!(is_api_key(text.as_bytes()));
        assert_eq!(text.len(), 47);
        let keys = vec![ApiKey::parse(&entry).unwrap()];
        assert_eq!(find(&keys, text.as_bytes()).unwrap().name, "sensor-1");
        let mut other = text.clone().into_bytes();
        other[10] ^= 1;
        assert!(find(&keys, &other).is_none());
        assert!(
            find(&keys, entry.sha256.as_bytes()).is_none(),
            "the hash is no key"
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        let bad = ApiKeyEntry {
            name: "x".into(),
            role: Role::Node,
            sha256: "abc".into(),
        };
        assert!(ApiKey::parse(&bad).is_err());
        let long = ApiKeyEntry {
            name: "n".repeat(129),
            role: Role::Node,
            sha256: "00".repeat(32),
        };
        assert!(ApiKey::parse(&long).is_err());
    }
}
