//! Throw-away certificates for one run (rcgen): a CA and a server certificate for
//! `localhost` and `127.0.0.1` (rustls refuses a self-signed leaf used as its own CA).

use std::path::{Path, PathBuf};

use anyhow::Result;

/// The CA, the server certificate and its key, as DER.
pub struct Pki {
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

/// Makes a CA and a leaf signed by it.
pub fn make() -> Result<Pki> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "macula-peer test CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().to_vec(),
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
    })
}

/// Writes a CA and a leaf into `dir`; returns (CA, certificate, key) paths (PEM).
pub fn ca_and_leaf(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let p = make()?;
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, p.ca_pem)?;
    std::fs::write(&paths.1, p.cert_pem)?;
    std::fs::write(&paths.2, p.key_pem)?;
    Ok(paths)
}
