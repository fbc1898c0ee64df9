//! QUIC endpoints (quinn + rustls, ring provider only), ALPN `macula`.
//!
//! Trust follows Macula v0.16 ("Trust and TLS"), configured by [`TlsConfig`]:
//!
//! * **development**: the server uses a self-signed certificate for `localhost`, `127.0.0.1` and
//!   `::1`, generated on first start and kept in `data_dir` ([`dev_certificate`]); clients accept
//!   any server certificate (handshake signatures are still checked) and a warning is logged
//!   once. Never for production.
//! * **production**: the server serves `cert_file`/`key_file`; clients verify the chain against
//!   `ca_file` and, when `verify_hostname`, the server name; with `require_client_cert` the
//!   server verifies client certificates against `ca_file` (mutual TLS) and clients present
//!   `cert_file`/`key_file`.
//!
//! Every endpoint owns one UDP socket with enlarged kernel buffers
//! ([`TransportConfig::udp_socket_buffer`]) and the per-connection windows of
//! [`transport_config`], sized for thousands of connections (lessons-from-peers 5). All
//! endpoint constructors must be called inside a tokio runtime (quinn registers the socket with
//! it).

use std::fs;
use std::io::{self, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use quinn::{EndpointConfig, IdleTimeout, TokioRuntime, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{TlsConfig, TlsMode, TransportConfig};
use crate::defaults;

/// File name of the development certificate (PEM) inside `data_dir`.
pub const DEV_CERT_FILE: &str = "dev-cert.pem";
/// File name of the development private key (PEM, PKCS#8, mode 0600) inside `data_dir`.
pub const DEV_KEY_FILE: &str = "dev-key.pem";
/// Names the development certificate is valid for.
pub const DEV_CERT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Errors of building TLS configurations and QUIC endpoints.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The UDP socket could not be created or bound, or quinn could not take it.
    #[error("cannot bind QUIC endpoint on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A PEM file could not be read or parsed.
    #[error("cannot read PEM file {}: {source}", path.display())]
    ReadPem {
        /// The file.
        path: PathBuf,
        /// The I/O or PEM syntax error.
        #[source]
        source: io::Error,
    },
    /// A certificate file holds no certificate.
    #[error("no certificate in {}", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("no private key in {}", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A CA file holds a certificate rustls cannot use as a trust anchor.
    #[error("invalid CA certificate in {}: {source}", path.display())]
    InvalidCa {
        /// The file.
        path: PathBuf,
        /// Why rustls refused it.
        #[source]
        source: rustls::Error,
    },
    /// A file the TLS mode needs is not configured (`tls.cert_file`, `tls.key_file`,
    /// `tls.ca_file`) or the settings contradict each other.
    #[error("TLS configuration: {0}")]
    Setting(&'static str),
    /// The development certificate could not be generated.
    #[error("cannot generate the development certificate: {0}")]
    GenerateCert(#[from] rcgen::Error),
    /// The development certificate could not be written to `data_dir`.
    #[error("cannot write {}: {source}", path.display())]
    WriteDevCert {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// rustls refused the configuration (e.g. key does not match the certificate).
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A certificate verifier could not be built (e.g. empty CA file).
    #[error("TLS verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    /// The rustls configuration lacks the cipher suite QUIC's initial packets need.
    #[error("QUIC: {0}")]
    Quic(#[from] NoInitialCipherSuite),
}

/// A QUIC endpoint that accepts connections on `bind` with the TLS server configuration of
/// `tls`; it also has the default client configuration set ([`client_config`]), so a node can
/// dial its uplink from the same socket.
///
/// # Errors
/// Any [`TransportError`] of [`server_config`] or [`client_config`], or
/// [`TransportError::Bind`].
pub fn server_endpoint(
    bind: SocketAddr,
    tls: &TlsConfig,
    transport: &TransportConfig,
    data_dir: &Path,
) -> Result<quinn::Endpoint, TransportError> {
    let server = server_config(tls, transport, data_dir)?;
    let client = client_config(tls, transport, data_dir)?;
    let reset_key = stateless_reset_key(data_dir)?;
    let mut endpoint = endpoint(bind, Some(server), transport, Some(reset_key))?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// A client-only QUIC endpoint on `bind` (usually `0.0.0.0:0`) with the default client
/// configuration of [`client_config`].
///
/// # Errors
/// Any [`TransportError`] of [`client_config`], or [`TransportError::Bind`].
pub fn client_endpoint(
    bind: SocketAddr,
    tls: &TlsConfig,
    transport: &TransportConfig,
    data_dir: &Path,
) -> Result<quinn::Endpoint, TransportError> {
    let client = client_config(tls, transport, data_dir)?;
    let mut endpoint = endpoint(bind, None, transport, None)?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// The quinn server configuration: certificate per the TLS mode, ALPN `macula`, TLS 1.3 only,
/// client certificates required when `tls.require_client_cert`, transport of
/// [`transport_config`].
///
/// # Errors
/// [`TransportError::Setting`] for missing files or mTLS in development mode; PEM, key, CA and
/// rustls errors as their variants.
pub fn server_config(
    tls: &TlsConfig,
    transport: &TransportConfig,
    data_dir: &Path,
) -> Result<quinn::ServerConfig, TransportError> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let (chain, key) = match tls.mode {
        TlsMode::Development => dev_certificate(data_dir)?,
        TlsMode::Production => production_identity(tls)?.ok_or(TransportError::Setting(
            "production mode needs tls.cert_file and tls.key_file",
        ))?,
    };
    let builder = if tls.require_client_cert {
        if tls.mode != TlsMode::Production {
            return Err(TransportError::Setting(
                "require_client_cert needs production mode (a CA to verify clients)",
            ));
        }
        let roots = Arc::new(ca_roots(tls)?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider).build()?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut crypto = builder.with_single_cert(chain, key)?;
    crypto.alpn_protocols = vec![defaults::ALPN.to_vec()];
    let mut config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(crypto)?));
    config.transport_config(Arc::new(transport_config(transport)));
    Ok(config)
}

/// The quinn client configuration: ALPN `macula`, TLS 1.3 only, server verification per the TLS
/// mode (development: none; production: chain against `ca_file`, and the name when
/// `verify_hostname`), client certificate `cert_file`/`key_file` presented in production when
/// both are set, transport of [`transport_config`]. The server name to verify is the one passed
/// to `Endpoint::connect` (for a node: `node.uplink_server_name`).
///
/// # Errors
/// [`TransportError::Setting`] if production mode has no `ca_file`; PEM, CA and rustls errors as
/// their variants. `data_dir` is not used today; it is taken so client trust can later pin
/// certificates (TOFU) kept there.
pub fn client_config(
    tls: &TlsConfig,
    transport: &TransportConfig,
    _data_dir: &Path,
) -> Result<quinn::ClientConfig, TransportError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut crypto = match tls.mode {
        TlsMode::Development => {
            if !DEV_WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "TLS development mode: server certificates are NOT verified; \
                     set tls.mode = \"production\" outside development"
                );
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert {
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
        }
        TlsMode::Production => {
            let roots = Arc::new(ca_roots(tls)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
            let builder = if tls.verify_hostname {
                builder.with_webpki_verifier(webpki)
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnlyVerifier { inner: webpki }))
            };
            match production_identity(tls)? {
                Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
                None => builder.with_no_client_auth(),
            }
        }
    };
    crypto.alpn_protocols = vec![defaults::ALPN.to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(crypto)?));
    config.transport_config(Arc::new(link_transport_config(transport)));
    Ok(config)
}

/// [`transport_config`] for the connections this process dials to hold a session: keep-alive
/// `t.link_keep_alive_ms`, idle timeout `t.link_idle_timeout_ms`. QUIC liveness is the links'
/// only dead-peer detection (`docs/PROTOCOL.md` §3): the peer's QUIC stack acknowledges each
/// keep-alive PING, however much application data is queued ahead of it.
pub fn link_transport_config(t: &TransportConfig) -> quinn::TransportConfig {
    let mut config = transport_config(t);
    let idle = IdleTimeout::try_from(Duration::from_millis(t.link_idle_timeout_ms))
        .or_else(|_| IdleTimeout::try_from(Duration::from_millis(defaults::LINK_IDLE_TIMEOUT_MS)))
        .ok();
    config
        .keep_alive_interval(
            (t.link_keep_alive_ms > 0).then(|| Duration::from_millis(t.link_keep_alive_ms)),
        )
        .max_idle_timeout(idle);
    config
}

/// quinn transport parameters from `t`: keep-alive, idle timeout, stream/connection receive
/// windows, send window, at most `max_concurrent_bidi_streams` bidirectional and no
/// unidirectional streams, datagrams off; GSO stays on (quinn's default); the ACK frequency
/// asked of the peer when `ack_eliciting_threshold` is set. Out-of-range values
/// (which [`crate::config::Config::validate`] refuses) are clamped rather than panicking.
pub fn transport_config(t: &TransportConfig) -> quinn::TransportConfig {
    let varint = |v: u64| VarInt::from_u64(v).unwrap_or(VarInt::MAX);
    let idle = IdleTimeout::try_from(t.idle_timeout())
        .or_else(|_| IdleTimeout::try_from(defaults::IDLE_TIMEOUT))
        .ok();
    let mut config = quinn::TransportConfig::default();
    config
        .keep_alive_interval((t.keep_alive_ms > 0).then(|| t.keep_alive()))
        .max_idle_timeout(idle)
        .stream_receive_window(varint(t.stream_receive_window))
        .receive_window(varint(t.receive_window))
        .send_window(t.send_window)
        .max_concurrent_bidi_streams(varint(t.max_concurrent_bidi_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(None)
        .enable_segmentation_offload(true);
    if t.ack_eliciting_threshold > 0 {
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(varint(t.ack_eliciting_threshold))
            .max_ack_delay(Some(Duration::from_millis(t.ack_max_delay_ms.max(1))));
        config.ack_frequency_config(Some(ack));
    }
    config
}

/// The development certificate and key: read from `data_dir/dev-cert.pem` and
/// `data_dir/dev-key.pem` if both exist, otherwise generated (rcgen, self-signed, ECDSA P-256,
/// for [`DEV_CERT_NAMES`]) and written there (`data_dir` is created; the key file is mode 0600
/// on Unix), so restarts keep the same certificate.
///
/// # Errors
/// [`TransportError::GenerateCert`], [`TransportError::WriteDevCert`], or the PEM errors when
/// existing files cannot be read (they are not overwritten: delete them to regenerate).
pub fn dev_certificate(
    data_dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TransportError> {
    let cert_path = data_dir.join(DEV_CERT_FILE);
    let key_path = data_dir.join(DEV_KEY_FILE);
    if !(cert_path.is_file() && key_path.is_file()) {
        let names: Vec<String> = DEV_CERT_NAMES.iter().map(|s| s.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names)?;
        fs::create_dir_all(data_dir).map_err(|source| TransportError::WriteDevCert {
            path: data_dir.to_path_buf(),
            source,
        })?;
        write_atomically(
            &key_path,
            generated.signing_key.serialize_pem().as_bytes(),
            true,
        )?;
        write_atomically(&cert_path, generated.cert.pem().as_bytes(), false)?;
        tracing::info!(cert = %cert_path.display(), "generated the development TLS certificate");
    }
    Ok((read_certs(&cert_path)?, read_key(&key_path)?))
}

/// Reads a PEM certificate chain (leaf first).
///
/// # Errors
/// [`TransportError::ReadPem`] or [`TransportError::NoCertificate`].
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let read_err = |source| TransportError::ReadPem {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(read_err)?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    if certs.is_empty() {
        return Err(TransportError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads the first PEM private key (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// [`TransportError::ReadPem`] or [`TransportError::NoKey`].
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    let read_err = |source| TransportError::ReadPem {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(read_err)?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(read_err)?
        .ok_or_else(|| TransportError::NoKey {
            path: path.to_path_buf(),
        })
}

// ---------------------------------------------------------------------------------------------
// Private helpers
// ---------------------------------------------------------------------------------------------

/// File in the data directory holding the stateless-reset secret.
pub const RESET_KEY_FILE: &str = "stateless-reset.key";

/// The HMAC key quinn derives stateless-reset tokens from (RFC 9000 §10.3), kept in
/// `data_dir/stateless-reset.key` (32 random bytes, mode 0600, created on first start).
/// Because a restarted process reuses it, peers of the previous incarnation get a
/// stateless reset they recognise on their next packet and reconnect within one
/// round trip instead of waiting out the idle timeout.
///
/// # Errors
/// [`TransportError::WriteDevCert`] if the file cannot be read or created.
pub fn stateless_reset_key(data_dir: &Path) -> Result<ring::hmac::Key, TransportError> {
    let path = data_dir.join(RESET_KEY_FILE);
    let secret = match std::fs::read(&path) {
        Ok(b) if b.len() == 32 => b,
        _ => {
            let fresh: [u8; 32] = rand::random();
            write_secret(data_dir, &path, &fresh)?;
            fresh.to_vec()
        }
    };
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret))
}

/// Writes a secret to `path` (in `data_dir`, created if missing) atomically: a temporary file
/// with mode 0600, then a rename. Errors: [`TransportError::WriteDevCert`].
fn write_secret(data_dir: &Path, path: &Path, secret: &[u8]) -> Result<(), TransportError> {
    write_secret_file(data_dir, path, secret).map_err(|source| TransportError::WriteDevCert {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `secret` to `path` (in `data_dir`, created if missing) atomically: a temporary
/// file with mode 0600, then a rename.
pub(crate) fn write_secret_file(data_dir: &Path, path: &Path, secret: &[u8]) -> io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, secret)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path)
}

/// Whether the development-mode warning was logged already.
static DEV_WARNED: AtomicBool = AtomicBool::new(false);

/// The one crypto provider of the build (ring), passed explicitly everywhere.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn endpoint(
    bind: SocketAddr,
    server: Option<quinn::ServerConfig>,
    transport: &TransportConfig,
    reset_key: Option<ring::hmac::Key>,
) -> Result<quinn::Endpoint, TransportError> {
    let socket = udp_socket(bind, transport.udp_socket_buffer)
        .map_err(|source| TransportError::Bind { addr: bind, source })?;
    let config = match reset_key {
        Some(key) => EndpointConfig::new(Arc::new(key)),
        None => EndpointConfig::default(),
    };
    quinn::Endpoint::new(config, server, socket, Arc::new(TokioRuntime))
        .map_err(|source| TransportError::Bind { addr: bind, source })
}

/// A bound, non-blocking UDP socket with send/receive buffers of `buffer` bytes requested
/// (0 = leave the OS default). A refused or capped size is logged, not an error.
fn udp_socket(bind: SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if bind.is_ipv6() {
        // Dual stack where the OS allows it, like quinn's own `Endpoint::server`.
        if let Err(e) = socket.set_only_v6(false) {
            tracing::debug!(error = %e, "cannot make the IPv6 socket dual-stack");
        }
    }
    if buffer > 0 {
        if let Err(e) = socket.set_send_buffer_size(buffer) {
            tracing::warn!(error = %e, bytes = buffer, "cannot set the UDP send buffer size");
        }
        if let Err(e) = socket.set_recv_buffer_size(buffer) {
            tracing::warn!(error = %e, bytes = buffer, "cannot set the UDP receive buffer size");
        }
        // Linux reports twice the granted size; anything below the request means a cap
        // (net.core.rmem_max / wmem_max).
        let granted = socket.recv_buffer_size().unwrap_or(0);
        if granted < buffer {
            tracing::warn!(
                requested = buffer,
                granted,
                "UDP receive buffer capped by the kernel; raise net.core.rmem_max"
            );
        }
    }
    socket.bind(&bind.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Production: the configured certificate chain and key, if both are set.
#[allow(clippy::type_complexity)]
fn production_identity(
    tls: &TlsConfig,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TransportError> {
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Ok(Some((read_certs(cert)?, read_key(key)?))),
        _ => Ok(None),
    }
}

fn ca_roots(tls: &TlsConfig) -> Result<RootCertStore, TransportError> {
    let path = tls
        .ca_file
        .as_deref()
        .ok_or(TransportError::Setting("production mode needs tls.ca_file"))?;
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|source| TransportError::InvalidCa {
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(roots)
}

/// Writes `data` to `path` through a temporary file and a rename, so a crash never leaves half a
/// key; `secret` files are created with mode 0600 on Unix.
fn write_atomically(path: &Path, data: &[u8], secret: bool) -> Result<(), TransportError> {
    let tmp = path.with_extension("pem.tmp");
    let write = || -> io::Result<()> {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if secret { 0o600 } else { 0o644 });
        }
        #[cfg(not(unix))]
        let _ = secret;
        let mut file = options.open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|source| TransportError::WriteDevCert {
        path: path.to_path_buf(),
        source,
    })
}

/// Development mode only: accepts any server certificate, but still checks that the server
/// holds its key (handshake signatures verified with the provider's algorithms).
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Production with `verify_hostname = false`: full WebPKI verification of the chain against the
/// CA, ignoring only a name mismatch (webpki checks the name after the chain, so a
/// `NotValidForName` error means the chain was valid).
#[derive(Debug)]
struct ChainOnlyVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn transport() -> TransportConfig {
        TransportConfig::default()
    }

    fn dev_tls() -> TlsConfig {
        TlsConfig::default()
    }

    fn localhost() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// A CA and leaves signed by it, written as PEM files in a temporary directory.
    struct Pki {
        dir: tempfile::TempDir,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    impl Pki {
        fn new(name: &str) -> Pki {
            let dir = tempfile::tempdir().unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, format!("{name} test CA"));
            let cert = params.self_signed(&key).unwrap();
            fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
            Pki {
                dir,
                issuer: rcgen::Issuer::new(params, key),
            }
        }

        fn ca(&self) -> PathBuf {
            self.dir.path().join("ca.pem")
        }

        /// Issues a leaf for `names`, returns (cert path, key path).
        fn leaf(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
            let key = rcgen::KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            let cert_path = self.dir.path().join(format!("{file}-cert.pem"));
            let key_path = self.dir.path().join(format!("{file}-key.pem"));
            fs::write(&cert_path, cert.pem()).unwrap();
            fs::write(&key_path, key.serialize_pem()).unwrap();
            (cert_path, key_path)
        }

        fn tls(&self, identity: Option<(PathBuf, PathBuf)>) -> TlsConfig {
            let (cert_file, key_file) = identity.unzip();
            TlsConfig {
                mode: TlsMode::Production,
                cert_file,
                key_file,
                ca_file: Some(self.ca()),
                verify_hostname: true,
                require_client_cert: false,
            }
        }
    }

    /// Connects `client` to `server` as `server_name`, sends `hello` on one bidirectional
    /// stream and returns the echo and the negotiated ALPN, or the first error.
    async fn echo(
        server: &quinn::Endpoint,
        client: &quinn::Endpoint,
        server_name: &str,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
        let addr = server.local_addr().unwrap();
        let server = server.clone();
        let serve = tokio::spawn(async move {
            let incoming = server.accept().await.ok_or("endpoint closed")?;
            let conn = incoming.await.map_err(|e| e.to_string())?;
            let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
            let data = recv.read_to_end(1024).await.map_err(|e| e.to_string())?;
            send.write_all(&data).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            conn.closed().await;
            Ok::<_, String>(())
        });
        let result = tokio::time::timeout(TIMEOUT, async {
            let conn = client
                .connect(addr, server_name)
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            let alpn = conn
                .handshake_data()
                .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|h| h.protocol);
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(b"hello").await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            let data = recv.read_to_end(1024).await.map_err(|e| e.to_string())?;
            conn.close(0u32.into(), b"done");
            Ok((data, alpn))
        })
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
        serve.abort();
        result
    }

    #[tokio::test]
    async fn dev_mode_handshake_and_echo() {
        let dir = tempfile::tempdir().unwrap();
        let server = server_endpoint(localhost(), &dev_tls(), &transport(), dir.path()).unwrap();
        let client = client_endpoint(localhost(), &dev_tls(), &transport(), dir.path()).unwrap();
        let (data, alpn) = echo(&server, &client, "localhost").await.unwrap();
        assert_eq!(data, b"hello");
        assert_eq!(alpn.as_deref(), Some(defaults::ALPN));
        // The server endpoint can dial too (a node's uplink from its own socket).
        let (data, _) = echo(&client_endpoint_as_server(&dir), &server, "localhost")
            .await
            .unwrap();
        assert_eq!(data, b"hello");
    }

    fn client_endpoint_as_server(dir: &tempfile::TempDir) -> quinn::Endpoint {
        server_endpoint(localhost(), &dev_tls(), &transport(), dir.path()).unwrap()
    }

    #[tokio::test]
    async fn wrong_alpn_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let server = server_endpoint(localhost(), &dev_tls(), &transport(), dir.path()).unwrap();
        let mut crypto = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert {
                algorithms: provider().signature_verification_algorithms,
            }))
            .with_no_client_auth();
        crypto.alpn_protocols = vec![b"h3".to_vec()];
        let mut client = endpoint(localhost(), None, &transport(), None).unwrap();
        client.set_default_client_config(quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(crypto).unwrap(),
        )));
        let err = echo(&server, &client, "localhost").await.unwrap_err();
        eprintln!("wrong ALPN: {err}");
    }

    #[test]
    fn dev_certificate_is_persisted_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested/data");
        let (certs, key) = dev_certificate(&data_dir).unwrap();
        assert_eq!(certs.len(), 1);
        let cert_pem = fs::read(data_dir.join(DEV_CERT_FILE)).unwrap();
        let key_pem = fs::read(data_dir.join(DEV_KEY_FILE)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(data_dir.join(DEV_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
        }
        let (certs2, key2) = dev_certificate(&data_dir).unwrap();
        assert_eq!(certs, certs2);
        assert_eq!(key.secret_der(), key2.secret_der());
        assert_eq!(fs::read(data_dir.join(DEV_CERT_FILE)).unwrap(), cert_pem);
        assert_eq!(fs::read(data_dir.join(DEV_KEY_FILE)).unwrap(), key_pem);
        // A corrupt file is an error, not silently replaced.
        fs::write(data_dir.join(DEV_KEY_FILE), "garbage").unwrap();
        assert!(matches!(
            dev_certificate(&data_dir),
            Err(TransportError::NoKey { .. })
        ));
    }

    #[tokio::test]
    async fn production_verifies_chain_and_name() {
        let data = tempfile::tempdir().unwrap();
        let pki = Pki::new("good");
        let server_tls = pki.tls(Some(pki.leaf("server", &["localhost", "127.0.0.1"])));
        let server = server_endpoint(localhost(), &server_tls, &transport(), data.path()).unwrap();

        let client_tls = pki.tls(None);
        let client = client_endpoint(localhost(), &client_tls, &transport(), data.path()).unwrap();
        let (reply, alpn) = echo(&server, &client, "localhost").await.unwrap();
        assert_eq!(reply, b"hello");
        assert_eq!(alpn.as_deref(), Some(defaults::ALPN));

        // Wrong host name: refused with verify_hostname, accepted without.
        let err = echo(&server, &client, "other.example").await.unwrap_err();
        eprintln!("wrong name: {err}");
        assert!(
            err.contains("not valid for name") || err.contains("Name"),
            "{err}"
        );
        let lax = TlsConfig {
            verify_hostname: false,
            ..client_tls.clone()
        };
        let lax_client = client_endpoint(localhost(), &lax, &transport(), data.path()).unwrap();
        echo(&server, &lax_client, "other.example").await.unwrap();

        // Another CA: refused, with or without host name checks.
        let other = Pki::new("other");
        for verify_hostname in [true, false] {
            let tls = TlsConfig {
                verify_hostname,
                ..other.tls(None)
            };
            let client = client_endpoint(localhost(), &tls, &transport(), data.path()).unwrap();
            let err = echo(&server, &client, "localhost").await.unwrap_err();
            eprintln!("other CA: {err}");
            assert!(err.to_lowercase().contains("unknown"), "{err}");
        }

        // A development client accepts the production server (no verification).
        let dev_client =
            client_endpoint(localhost(), &dev_tls(), &transport(), data.path()).unwrap();
        echo(&server, &dev_client, "anything").await.unwrap();
    }

    #[tokio::test]
    async fn mutual_tls_refuses_clients_without_certificate() {
        let data = tempfile::tempdir().unwrap();
        let pki = Pki::new("mtls");
        let server_tls = TlsConfig {
            require_client_cert: true,
            ..pki.tls(Some(pki.leaf("server", &["localhost"])))
        };
        let server = server_endpoint(localhost(), &server_tls, &transport(), data.path()).unwrap();

        let anonymous =
            client_endpoint(localhost(), &pki.tls(None), &transport(), data.path()).unwrap();
        let err = echo(&server, &anonymous, "localhost").await.unwrap_err();
        eprintln!("anonymous client: {err}");

        let foreign = Pki::new("foreign");
        let stranger_tls = TlsConfig {
            ca_file: Some(pki.ca()),
            ..foreign.tls(Some(foreign.leaf("client", &["client"])))
        };
        let stranger =
            client_endpoint(localhost(), &stranger_tls, &transport(), data.path()).unwrap();
        let err = echo(&server, &stranger, "localhost").await.unwrap_err();
        eprintln!("foreign client: {err}");

        let client_tls = pki.tls(Some(pki.leaf("client", &["client"])));
        let client = client_endpoint(localhost(), &client_tls, &transport(), data.path()).unwrap();
        let (reply, _) = echo(&server, &client, "localhost").await.unwrap();
        assert_eq!(reply, b"hello");
    }

    #[tokio::test]
    async fn configuration_errors_name_their_cause() {
        let data = tempfile::tempdir().unwrap();
        let missing = TlsConfig {
            mode: TlsMode::Production,
            ..dev_tls()
        };
        assert!(matches!(
            server_config(&missing, &transport(), data.path()),
            Err(TransportError::Setting(_))
        ));
        assert!(matches!(
            client_config(&missing, &transport(), data.path()),
            Err(TransportError::Setting(_))
        ));
        let mtls_dev = TlsConfig {
            require_client_cert: true,
            ..dev_tls()
        };
        assert!(matches!(
            server_config(&mtls_dev, &transport(), data.path()),
            Err(TransportError::Setting(_))
        ));
        let nofile = TlsConfig {
            ca_file: Some(data.path().join("nope.pem")),
            ..missing
        };
        let err = client_config(&nofile, &transport(), data.path()).unwrap_err();
        assert!(err.to_string().contains("nope.pem"), "{err}");
        // Binding a port that is taken names the address.
        let first = client_endpoint(localhost(), &dev_tls(), &transport(), data.path()).unwrap();
        let taken = first.local_addr().unwrap();
        let err = client_endpoint(taken, &dev_tls(), &transport(), data.path()).unwrap_err();
        assert!(
            matches!(err, TransportError::Bind { addr, .. } if addr == taken),
            "{err}"
        );
    }

    #[test]
    fn transport_config_is_built_from_settings() {
        // quinn's TransportConfig has no getters; check it builds from defaults and extremes
        // without panicking.
        let _ = transport_config(&transport());
        let extreme = TransportConfig {
            keep_alive_ms: 0,
            idle_timeout_ms: u64::MAX,
            stream_receive_window: u64::MAX,
            receive_window: u64::MAX,
            send_window: u64::MAX,
            udp_socket_buffer: 0,
            max_concurrent_bidi_streams: u64::MAX,
            link_keep_alive_ms: 0,
            link_idle_timeout_ms: u64::MAX,
            ack_eliciting_threshold: u64::MAX,
            ack_max_delay_ms: u64::MAX,
        };
        let _ = link_transport_config(&extreme);
        let _ = transport_config(&extreme);
    }
}
