//! Keys and identity (`docs/AUTH.md`, "Identity"): every process holds an Ed25519 key; its
//! node id is SHA-256 of the public key ([`crate::dht::Id::from_public_key`]); and each side
//! of a session *proves* the id it claims by signing the TLS exporter of that very QUIC
//! connection (RFC 8446 §7.5, RFC 5705), so an id can neither be claimed without its key nor
//! replayed on another connection.
//!
//! The signed message is [`transcript`]: a context string naming the side (the connecting
//! side signs [`Side::Initiator`], the accepting side [`Side::Acceptor`], so one side's proof
//! is never valid for the other) followed by 32 bytes exported from the connection's TLS
//! secrets with the label [`EXPORTER_LABEL`] and an empty context. Both ends derive the
//! same 32 bytes; nobody else can.
//!
//! The key file is `data_dir/identity.key`: the private key as PKCS#8 DER (RFC 5958; written
//! as v1, which OpenSSL reads; v1 and v2 — as earlier builds wrote with ring — are read),
//! mode 0600. Rotating a key is replacing the file: the
//! process has a new node id from its next start (`docs/AUTH.md`, "Rotation").

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::wire::{NodeId, Proof};

/// File name of the identity key inside `data_dir`.
pub const IDENTITY_KEY_FILE: &str = "identity.key";

/// TLS exporter label of the connect proof (RFC 5705 §4: labels are ASCII, and those not
/// registered with IANA begin with "EXPERIMENTAL" or are application-private; this one is
/// private to Macula).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-macula-connect-v1";

/// Bytes of keying material exported for the proof.
pub const EXPORTER_LEN: usize = 32;

/// Which side of a session a proof speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The side that opened the QUIC connection and sent `connect`.
    Initiator,
    /// The side that accepted it and answers `connected`.
    Acceptor,
}

impl Side {
    /// The context string signed before the exporter bytes (NUL-terminated).
    fn context(self) -> &'static [u8] {
        match self {
            Side::Initiator => b"macula connect v1 initiator\0",
            Side::Acceptor => b"macula connect v1 acceptor\0",
        }
    }
}

/// The message a side signs: its context string, then the connection's exporter bytes.
pub fn transcript(side: Side, exporter: &[u8; EXPORTER_LEN]) -> Vec<u8> {
    let ctx = side.context();
    let mut m = Vec::with_capacity(ctx.len() + EXPORTER_LEN);
    m.extend_from_slice(ctx);
    m.extend_from_slice(exporter);
    m
}

/// Why a proof was refused. Every variant is a refusal of the session
/// (`UNAUTHENTICATED` on the wire).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The frame carries no `public_key` / `proof`.
    #[error("no proof of the node id (public_key and proof are required)")]
    Missing,
    /// SHA-256 of the public key is not the claimed node id.
    #[error("node id is not the SHA-256 of the public key")]
    WrongId,
    /// The public key is not a valid Ed25519 point.
    #[error("public key is not a valid Ed25519 key")]
    BadKey,
    /// The signature does not verify over this connection's transcript.
    #[error("proof signature does not verify for this connection")]
    BadSignature,
    /// The connection's TLS exporter could not be read.
    #[error("TLS exporter unavailable: {0}")]
    Exporter(String),
}

impl ProofError {
    /// The label of `macula_connections_rejected_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            ProofError::Missing => "no_proof",
            ProofError::WrongId | ProofError::BadKey | ProofError::BadSignature => "bad_proof",
            ProofError::Exporter(_) => "other",
        }
    }
}

/// Checks `proof` as `side`'s proof of `claimed` over `exporter` (pure: no connection).
/// Errors: [`ProofError::Missing`], [`ProofError::WrongId`], [`ProofError::BadKey`],
/// [`ProofError::BadSignature`].
pub fn verify(
    side: Side,
    exporter: &[u8; EXPORTER_LEN],
    claimed: &NodeId,
    proof: Option<&Proof>,
) -> Result<(), ProofError> {
    let proof = proof.ok_or(ProofError::Missing)?;
    if crate::dht::Id::from_public_key(&proof.public_key).0 != *claimed {
        return Err(ProofError::WrongId);
    }
    let key = VerifyingKey::from_bytes(&proof.public_key).map_err(|_| ProofError::BadKey)?;
    key.verify_strict(
        &transcript(side, exporter),
        &Signature::from_bytes(&proof.signature),
    )
    .map_err(|_| ProofError::BadSignature)
}

/// The exporter bytes of `conn` ([`EXPORTER_LABEL`], empty context).
/// Errors: [`ProofError::Exporter`] (a connection without TLS 1.3 keys).
pub fn exporter(conn: &quinn::Connection) -> Result<[u8; EXPORTER_LEN], ProofError> {
    let mut out = [0u8; EXPORTER_LEN];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|e| ProofError::Exporter(format!("{e:?}")))?;
    Ok(out)
}

/// Checks the proof `side` gave on `conn` for `claimed` ([`verify`] over [`exporter`]).
pub fn verify_on(
    conn: &quinn::Connection,
    side: Side,
    claimed: &NodeId,
    proof: Option<&Proof>,
) -> Result<(), ProofError> {
    verify(side, &exporter(conn)?, claimed, proof)
}

/// Errors loading or creating the key file.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file could not be read or written.
    #[error("identity key {}: {error}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not an Ed25519 PKCS#8 private key.
    #[error("identity key {} is not an Ed25519 PKCS#8 key: {reason}", path.display())]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
}

/// A process's (or a client's) Ed25519 key and the node id derived from it.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
    node_id: NodeId,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &crate::dht::Id(self.node_id))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh key from the operating system's CSPRNG (a client's per-process identity).
    pub fn generate() -> Identity {
        use ring::rand::SecureRandom;
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .expect("the OS random source is available");
        Identity::from_secret(&secret)
    }

    /// The identity of the 32-byte Ed25519 secret key `secret` (RFC 8032 §5.1.5).
    pub fn from_secret(secret: &[u8; 32]) -> Identity {
        let key = SigningKey::from_bytes(secret);
        let node_id = crate::dht::Id::from_public_key(key.verifying_key().as_bytes()).0;
        Identity { key, node_id }
    }

    /// The key in `data_dir`'s [`IDENTITY_KEY_FILE`], created (mode 0600) when absent.
    /// Errors: [`IdentityError::Io`], [`IdentityError::Invalid`] (a corrupt file is never
    /// replaced: that would silently change the node id).
    pub fn load_or_create(data_dir: &Path) -> Result<Identity, IdentityError> {
        let path = data_dir.join(IDENTITY_KEY_FILE);
        match Identity::load(&path) {
            Err(IdentityError::Io { error, .. })
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                Identity::create(&path)
            }
            other => other,
        }
    }

    /// The key in file `path` (PKCS#8 DER). Errors: [`IdentityError::Io`],
    /// [`IdentityError::Invalid`].
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let der = std::fs::read(path).map_err(|error| IdentityError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let key = SigningKey::from_pkcs8_der(&der).map_err(|e| IdentityError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Identity::from_secret(&key.to_bytes()))
    }

    /// A fresh key written to `path` (PKCS#8 DER, mode 0600, atomically; the directory
    /// is created). Errors: [`IdentityError::Io`], also when `path` exists already.
    pub fn create(path: &Path) -> Result<Identity, IdentityError> {
        let io = |error| IdentityError::Io {
            path: path.to_path_buf(),
            error,
        };
        if path.exists() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a key is there already; it is never overwritten",
            )));
        }
        let id = Identity::generate();
        // v1 (no public key inside): the form every tool reads (OpenSSL 3.0 refuses v2).
        let v1 = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: id.key.to_bytes(),
            public_key: None,
        };
        let der = v1.to_pkcs8_der().map_err(|e| IdentityError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        crate::transport::write_secret_file(dir, path, der.as_bytes()).map_err(io)?;
        Ok(id)
    }

    /// The node id: SHA-256 of the public key.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The Ed25519 public key (32 bytes, RFC 8032 encoding).
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// This identity's proof as `side` over `exporter` (pure).
    pub fn prove(&self, side: Side, exporter: &[u8; EXPORTER_LEN]) -> Proof {
        Proof {
            public_key: self.public_key(),
            signature: self.key.sign(&transcript(side, exporter)).to_bytes(),
        }
    }

    /// This identity's proof as `side` on `conn`. Errors: [`ProofError::Exporter`].
    pub fn prove_on(&self, conn: &quinn::Connection, side: Side) -> Result<Proof, ProofError> {
        Ok(self.prove(side, &exporter(conn)?))
    }

    /// Signs `message` (credentials and other signed documents, `docs/AUTH.md`).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

#[cfg(test)]
mod tests;
