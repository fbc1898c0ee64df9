//! Admission (`docs/AUTH.md`): which credential a session needs, checked where it enters.
//!
//! A realm with operator keys (`auth.operators`) admits only sessions whose `connect`
//! carries a [`Credential`] signed by one of them, for that realm, naming the key that
//! proved the session's node id (PROTOCOL §7a), unexpired, with the role the link needs:
//! `client` for a node's client listener, `node` for a node uplink at a bridge and for a
//! mesh link between nodes, `bridge` for a child bridge's parent link and a fleet peer.
//! A realm without operator keys is open (development; logged at start).
//!
//! [`Admission`] is built once from the configuration and checked on every `connect`; it is
//! pure apart from the clock, which the caller passes in.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

pub mod api_key;
pub mod credential;
pub mod permissions;
pub mod revocation;
mod spread;

pub use credential::{Claims, Credential, CredentialError, Role};
pub use permissions::{Action, Permissions};
pub use spread::RevocationLink;

/// Why a session was refused admission, with its wire code and counter label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The realm needs a credential and `connect` carried none.
    #[error("realm {0:?} requires a credential")]
    Missing(String),
    /// The credential was refused.
    #[error(transparent)]
    Credential(#[from] CredentialError),
}

impl AdmissionError {
    /// The `reason` label of `macula_connections_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AdmissionError::Missing(_) => "no_credential",
            AdmissionError::Credential(e) => e.reason(),
        }
    }

    /// The error code sent: `PERMISSION_DENIED` for a valid credential of the wrong role or
    /// cluster, `UNAUTHENTICATED` otherwise.
    pub fn code(&self) -> crate::wire::ErrorCode {
        match self {
            AdmissionError::Credential(
                CredentialError::WrongRole { .. } | CredentialError::WrongCluster { .. },
            ) => crate::wire::ErrorCode::PermissionDenied,
            _ => crate::wire::ErrorCode::Unauthenticated,
        }
    }
}

/// The operator keys of each realm (from `auth.operators`) and its API keys (from
/// `auth.api_keys`).
#[derive(Debug, Clone, Default)]
pub struct Admission {
    operators: HashMap<String, Vec<[u8; 32]>>,
    api_keys: HashMap<String, Vec<api_key::ApiKey>>,
}

impl Admission {
    /// Admission over `operators` (realm → operator public keys).
    pub fn new(operators: HashMap<String, Vec<[u8; 32]>>) -> Admission {
        Admission {
            operators,
            api_keys: HashMap::new(),
        }
    }

    /// This admission with `keys` (realm → API keys) accepted too.
    pub fn with_api_keys(mut self, keys: HashMap<String, Vec<api_key::ApiKey>>) -> Admission {
        self.api_keys = keys;
        self
    }

    /// Whether `realm` requires credentials (it has operator keys or API keys).
    pub fn required(&self, realm: &str) -> bool {
        self.operators.get(realm).is_some_and(|k| !k.is_empty())
            || self.api_keys.get(realm).is_some_and(|k| !k.is_empty())
    }

    /// Checks a session of `realm` whose node id was proven with `subject_key`, presenting
    /// `credential`, for a link that needs `role`, claiming `cluster` (`connect.cluster`),
    /// at `now` (Unix seconds). `Ok(None)` for an open realm (no credential needed; one
    /// presented is ignored), `Ok(Some(claims))` when admitted on a credential. Errors:
    /// [`AdmissionError`]; a credential's `cluster` claim that is not `cluster` is
    /// [`CredentialError::WrongCluster`].
    pub fn admit(
        &self,
        realm: &str,
        subject_key: &[u8; 32],
        credential: Option<&[u8]>,
        (role, cluster): (Role, &str),
        now: u64,
    ) -> Result<Option<Claims>, AdmissionError> {
        if !self.required(realm) {
            return Ok(None);
        }
        let bytes = credential.ok_or_else(|| AdmissionError::Missing(realm.into()))?;
        let claims = match self.api_keys.get(realm) {
            Some(keys) if api_key::is_api_key(bytes) => {
                let k = api_key::find(keys, bytes).ok_or(CredentialError::UnknownApiKey)?;
                Claims {
                    id: k.id(),
                    realm: realm.into(),
                    subject: *subject_key,
                    role: k.role,
                    name: k.name.clone(),
                    issued_at: 0,
                    expires_at: u64::MAX,
                    permissions: Permissions::default(),
                    limits: Default::default(),
                    cluster: None,
                }
            }
            _ => {
                let ops = self.operators.get(realm).map_or(&[][..], Vec::as_slice);
                let c = Credential::decode(bytes)?;
                c.check(realm, subject_key, ops, now)?;
                c.claims
            }
        };
        if claims.role != role {
            return Err(CredentialError::WrongRole {
                got: claims.role.as_str(),
                want: role.as_str(),
            }
            .into());
        }
        if let Some(c) = claims.cluster.as_deref().filter(|c| *c != cluster) {
            return Err(CredentialError::WrongCluster {
                got: c.into(),
                want: cluster.into(),
            }
            .into());
        }
        Ok(Some(claims))
    }
}

/// What an admitted session may do, and whose credential it is (for the audit log): built
/// once at admission, checked on every request the permissions govern. Only sessions whose
/// credential restricts something have one; the others skip every check.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The credential's permissions (not open).
    pub permissions: Permissions,
    /// The credential's id.
    pub credential_id: [u8; 16],
    /// The credential's label.
    pub name: String,
    /// The realm of the session.
    pub realm: String,
    /// The role the credential grants.
    pub role: Role,
    /// The peer's address.
    pub remote: std::net::SocketAddr,
}

impl Grant {
    /// The grant of a session admitted on `claims` from `remote`; `None` when the claims
    /// restrict nothing (or there are none: an open realm).
    pub fn of(
        claims: Option<Claims>,
        remote: std::net::SocketAddr,
    ) -> Option<std::sync::Arc<Grant>> {
        let c = claims?;
        if c.permissions.is_open() {
            return None;
        }
        Some(std::sync::Arc::new(Grant {
            permissions: c.permissions,
            credential_id: c.id,
            name: c.name,
            realm: c.realm,
            role: c.role,
            remote,
        }))
    }

    /// Checks `action` on `name` (a pattern for [`Action::Subscribe`]); a denial is written to
    /// the audit log and described in the `Err` (the text of the `PERMISSION_DENIED` error).
    pub fn check(&self, action: Action, name: &str) -> Result<(), String> {
        if self.permissions.permits(action, name) {
            return Ok(());
        }
        crate::audit::denied(self, action, name);
        Err(format!(
            "permission denied: {} {name:?} (credential {:?})",
            action.as_str(),
            self.name
        ))
    }
}

/// Parses an operator public key: 64 hex digits. Errors: a message naming the problem.
pub fn parse_public_key(s: &str) -> Result<[u8; 32], String> {
    crate::dht::Id::from_hex(s.trim())
        .map(|id| id.0)
        .map_err(|e| format!("{s:?} is not a 32-byte public key in hex: {e}"))
}

/// The admission rules and this process's own credential, parsed once from `auth.*`, with
/// the revocation lists in force, the live sessions admitted on a credential and the links
/// the lists spread over (shared by clones).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// The operator keys of each realm.
    pub admission: Admission,
    /// The credential this process presents when it dials (`auth.credential_file`).
    pub credential: Option<bytes::Bytes>,
    revocations: Arc<Mutex<Revoked>>,
    /// The links of every realm that `revocation_list` frames travel on ([`spread`]).
    spread: Arc<spread::Links>,
}

/// The revoked ids of each realm, and the sessions that may need closing.
#[derive(Debug, Default)]
struct Revoked {
    /// Realm → the list in force.
    lists: HashMap<String, InForce>,
    /// Credential id → the live sessions admitted on it, by token.
    live: HashMap<[u8; 16], HashMap<u64, quinn::Connection>>,
    next_token: u64,
}

/// A realm's list in force: its version, its ids and its signed bytes (passed on to peers).
#[derive(Debug)]
struct InForce {
    seq: u64,
    ids: HashSet<[u8; 16]>,
    bytes: bytes::Bytes,
}

impl Revoked {
    /// Whether `l` replaces its realm's list in force: there is none, or `l` has a higher
    /// `seq`, or the same `seq` and greater bytes (a deterministic tie-break between two
    /// different lists an operator signed with one `seq`, so every process keeps the same).
    fn supersedes(&self, l: &revocation::Revocations) -> bool {
        self.lists
            .get(&l.realm)
            .is_none_or(|f| (l.seq, &l.bytes[..]) > (f.seq, &f.bytes[..]))
    }
}

/// What [`Auth::apply_revocations`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Live sessions closed.
    pub closed: usize,
    /// The lists newly put in force: (realm, signed bytes), to pass on to peers.
    pub newer: Vec<(String, bytes::Bytes)>,
}

/// What admission gave a session: its permissions, and its entry among the live sessions
/// (keep it for the session's life: dropping it forgets the session).
#[derive(Debug, Default)]
pub struct Admitted {
    /// What the session may do (`None`: everything).
    pub grant: Option<Arc<Grant>>,
    /// The session's entry among the live ones, closed if its credential is revoked.
    pub live: Option<LiveSession>,
    /// The credential's id and rate limits (`None`: an open realm), for
    /// [`crate::rate::Rates::throttle`].
    pub credential: Option<([u8; 16], crate::rate::RateLimits)>,
}

/// A live session admitted on a credential; removed from the registry when dropped.
#[derive(Debug)]
pub struct LiveSession {
    revocations: Arc<Mutex<Revoked>>,
    id: [u8; 16],
    token: u64,
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        let mut r = self.revocations.lock().expect("revocations lock");
        if let Some(v) = r.live.get_mut(&self.id) {
            v.remove(&self.token);
            if v.is_empty() {
                r.live.remove(&self.id);
            }
        }
    }
}

impl Auth {
    /// The operator keys of `cfg` (realm → keys). Errors: a message naming the bad key.
    pub fn operator_keys(
        cfg: &crate::config::AuthConfig,
    ) -> Result<HashMap<String, Vec<[u8; 32]>>, String> {
        let mut operators = HashMap::new();
        for (realm, keys) in &cfg.operators {
            let keys = keys
                .iter()
                .map(|k| parse_public_key(k))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("auth.operators.{realm}: {e}"))?;
            operators.insert(realm.clone(), keys);
        }
        Ok(operators)
    }

    /// The API keys of `cfg` (realm → keys). Errors: a message naming the bad entry.
    pub fn api_keys(
        cfg: &crate::config::AuthConfig,
    ) -> Result<HashMap<String, Vec<api_key::ApiKey>>, String> {
        let mut out = HashMap::new();
        for (realm, entries) in &cfg.api_keys {
            let keys = entries
                .iter()
                .map(api_key::ApiKey::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("auth.api_keys.{realm}: {e}"))?;
            out.insert(realm.clone(), keys);
        }
        Ok(out)
    }

    /// Parses `cfg`: operator keys (hex), the credential file (text form) and the revocation
    /// file. Errors: a message naming the key or file and the problem (the configuration is
    /// validated before this, so these are files that changed or failed to read).
    pub fn from_config(cfg: &crate::config::AuthConfig) -> Result<Auth, String> {
        let operators = Auth::operator_keys(cfg)?;
        let api_keys = Auth::api_keys(cfg)?;
        let credential = match &cfg.credential_file {
            None => None,
            Some(path) => Some(read_credential(path)?.into()),
        };
        let lists = match &cfg.revocation_file {
            Some(path) => revocation::Revocations::read_file(path, &operators)?,
            None => Vec::new(),
        };
        let auth = Auth {
            admission: Admission::new(operators).with_api_keys(api_keys),
            credential,
            revocations: Arc::default(),
            spread: Arc::default(),
        };
        auth.apply_revocations(lists);
        Ok(auth)
    }

    /// [`Admission::admit`] for a decoded `connect` on `conn` (its proven public key, its
    /// credential), now, and not revoked; the decision goes to the audit log either way. An
    /// admitted session on a credential is registered among the live ones.
    pub fn admit(
        &self,
        connect: &crate::wire::Connect,
        role: Role,
        conn: &quinn::Connection,
    ) -> Result<Admitted, AdmissionError> {
        let who = (connect.node_id, connect.proof.as_ref());
        let cred = connect.credential.as_deref();
        let claim = (role, connect.cluster.as_str());
        self.admit_session(&connect.realm, who, cred, claim, conn)
    }

    /// [`Auth::admit`] for the other side of a mesh link: the dialling node admits the node
    /// that answered (`connected`, its proof and credential) as a `node` of `cluster`, the
    /// dialler's own (PROTOCOL §7a). Errors: [`AdmissionError`], as for the acceptor.
    pub fn admit_acceptor(
        &self,
        realm: &str,
        welcome: &crate::wire::Connected,
        cluster: &str,
        conn: &quinn::Connection,
    ) -> Result<Admitted, AdmissionError> {
        let who = (welcome.node_id, welcome.proof.as_ref());
        let cred = welcome.credential.as_deref();
        self.admit_session(realm, who, cred, (Role::Node, cluster), conn)
    }

    fn admit_session(
        &self,
        realm: &str,
        (node_id, proof): (crate::wire::NodeId, Option<&crate::wire::Proof>),
        credential: Option<&[u8]>,
        (role, cluster): (Role, &str),
        conn: &quinn::Connection,
    ) -> Result<Admitted, AdmissionError> {
        let remote = conn.remote_address();
        let mut decided = match proof {
            Some(proof) => self.admission.admit(
                realm,
                &proof.public_key,
                credential,
                (role, cluster),
                credential::unix_now(),
            ),
            // Not reached: a session without a proof is refused before this.
            None => Err(AdmissionError::Missing(realm.to_string())),
        };
        // Checked and registered under one lock, so a list applied meanwhile either refuses
        // this session or finds it live and closes it.
        let mut live = None;
        if let Ok(Some(c)) = &decided {
            let mut r = self.revocations.lock().expect("revocations lock");
            if r.lists.get(&c.realm).is_some_and(|f| f.ids.contains(&c.id)) {
                decided = Err(CredentialError::Revoked.into());
            } else {
                r.next_token += 1;
                let token = r.next_token;
                r.live.entry(c.id).or_default().insert(token, conn.clone());
                live = Some(LiveSession {
                    revocations: self.revocations.clone(),
                    id: c.id,
                    token,
                });
            }
        }
        let outcome = match &decided {
            Ok(claims) => Ok(claims.as_ref()),
            Err(e) => Err(e.reason()),
        };
        crate::audit::admission(remote, realm, role.as_str(), &node_id, outcome);
        let claims = decided?;
        let credential = claims.as_ref().map(|c| (c.id, c.limits));
        Ok(Admitted {
            grant: Grant::of(claims, remote),
            live,
            credential,
        })
    }

    /// Puts `lists` (verified, for realms with operator keys) in force, each replacing its
    /// realm's list if it supersedes it (a higher `seq`; for an equal `seq`, greater bytes),
    /// and closes every live session admitted on a credential now revoked (application close
    /// code `UNAUTHENTICATED`, reason `credential revoked`, audited). Returns how many
    /// sessions it closed and which lists are newly in force.
    pub fn apply_revocations(&self, lists: Vec<revocation::Revocations>) -> Applied {
        let mut closing = Vec::new();
        let mut newer = Vec::new();
        {
            let mut r = self.revocations.lock().expect("revocations lock");
            for l in lists {
                if !r.supersedes(&l) {
                    continue;
                }
                for id in &l.ids {
                    if let Some(sessions) = r.live.remove(id) {
                        closing.extend(sessions.into_values().map(|c| (*id, c)));
                    }
                }
                newer.push((l.realm.clone(), l.bytes.clone()));
                let f = InForce {
                    seq: l.seq,
                    ids: l.ids,
                    bytes: l.bytes,
                };
                r.lists.insert(l.realm, f);
            }
        }
        let code = crate::wire::ErrorCode::Unauthenticated as u32;
        for (id, conn) in &closing {
            crate::audit::revoked(conn.remote_address(), id);
            conn.close(code.into(), b"credential revoked");
        }
        Applied {
            closed: closing.len(),
            newer,
        }
    }

    /// The signed bytes of `realm`'s list in force, if any.
    pub fn revocation_list(&self, realm: &str) -> Option<bytes::Bytes> {
        let r = self.revocations.lock().expect("revocations lock");
        r.lists.get(realm).map(|f| f.bytes.clone())
    }
}

/// The task that keeps `cfg.revocation_file` in force ([`watch_revocations`], every
/// `cfg.revocation_check_ms`), when one is configured.
pub fn revocation_watcher(
    auth: &Auth,
    cfg: &crate::config::AuthConfig,
    metrics: &Arc<crate::metrics::Metrics>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    let path = cfg.revocation_file.clone()?;
    let every = std::time::Duration::from_millis(cfg.revocation_check_ms);
    Some(watch_revocations(
        auth.clone(),
        path,
        every,
        metrics.clone(),
        cancel.clone(),
    ))
}

/// Re-reads `path` every `every` and applies its lists ([`Auth::apply_revocations`]) until
/// `cancel`; a file that fails to read or verify is logged and the lists in force are kept.
/// Sessions closed are counted in `macula_connections_revoked_total`; a list newly in force
/// counts in `macula_revocation_lists_total{outcome="applied"}` and is passed on to every
/// link of its realm ([`Auth::revocation_link`]).
pub async fn watch_revocations(
    auth: Auth,
    path: std::path::PathBuf,
    every: std::time::Duration,
    metrics: Arc<crate::metrics::Metrics>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ops = &auth.admission.operators;
        match revocation::Revocations::read_file(&path, ops) {
            Ok(lists) => {
                last_error = None;
                let applied = auth.apply_revocations(lists);
                metrics
                    .connections_revoked_total
                    .inc_by(applied.closed as u64);
                for (realm, bytes) in applied.newer {
                    metrics.revocation.list("applied");
                    tracing::info!(%realm, "revocation list from the file in force; passing it on");
                    auth.spread(&realm, bytes, None, &metrics);
                }
            }
            Err(e) if last_error.as_ref() != Some(&e) => {
                tracing::warn!(error = %e, "revocation file refused; the lists in force stay");
                last_error = Some(e);
            }
            Err(_) => {}
        }
    }
}

/// Reads a credential file (text form, `mc1.…`, or an API key, `mk1.…`) and checks that a
/// credential decodes and its signature verifies. Errors: a message naming the file.
pub fn read_credential(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("credential file {}: {e}", path.display()))?;
    // An API key (`mk1.…`) is presented as its text.
    let trimmed = text.trim();
    if api_key::is_api_key(trimmed.as_bytes()) {
        return Ok(trimmed.as_bytes().to_vec());
    }
    let bytes = Credential::from_text(&text)
        .map_err(|e| format!("credential file {}: {e}", path.display()))?;
    Credential::decode(&bytes).map_err(|e| format!("credential file {}: {e}", path.display()))?;
    Ok(bytes)
}
