//! `macula keys`: the operator's tool for keys and credentials (`docs/AUTH.md`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use macula::auth::{Action, Claims, Credential, Permissions, Role};
use macula::identity::Identity;

/// `macula keys …`
#[derive(clap::Subcommand)]
pub enum KeysCmd {
    /// Create an Ed25519 key file (PKCS#8 DER, mode 0600): an operator key, or a node's or
    /// bridge's identity key made ahead of its first start. Never overwrites a file.
    Generate {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a key file's public key (hex) and node id.
    Show {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Sign a credential with an operator key; prints its text form (`mc1.…`).
    Sign {
        /// The operator's key file.
        #[arg(long)]
        operator: PathBuf,
        /// The realm the credential admits to.
        #[arg(long)]
        realm: String,
        /// client, node or bridge.
        #[arg(long)]
        role: Role,
        /// The subject's public key, 64 hex digits (see `macula keys show`).
        #[arg(long, conflicts_with = "subject_key")]
        subject: Option<String>,
        /// The subject's key file (its public key is used).
        #[arg(long)]
        subject_key: Option<PathBuf>,
        /// A label for logs and the audit trail.
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime: a number with s, m, h or d (default 365d).
        #[arg(long, default_value = "365d")]
        valid_for: String,
        /// Allow only names matching this pattern for an action: `ACTION=PATTERN`, ACTION one
        /// of publish, subscribe, call, register, state (repeatable; per action, no allow
        /// means everything).
        #[arg(long, value_name = "ACTION=PATTERN")]
        allow: Vec<String>,
        /// Refuse names matching this pattern for an action (`ACTION=PATTERN`, repeatable;
        /// wins over --allow).
        #[arg(long, value_name = "ACTION=PATTERN")]
        deny: Vec<String>,
        /// Rate limit on the frames that ask for work, per second, shared by all the
        /// subject's sessions in one process (credential `lim.msgs`; 0: none).
        #[arg(long, default_value_t = 0)]
        max_msgs_per_sec: u32,
        /// Rate limit on the bytes of those frames, per second (credential `lim.bytes`; 0:
        /// none).
        #[arg(long, default_value_t = 0)]
        max_bytes_per_sec: u32,
        /// For a `node` credential: the one cluster it admits to (its uplink's and mesh
        /// links' `connect.cluster`); without it, any cluster of the realm.
        #[arg(long)]
        cluster: Option<String>,
        /// Write the credential here (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign a revocation list for a realm (prints its text form, `mr1.…`): the credential ids
    /// given, plus those of an earlier list (`--merge`). Put the line in every process's
    /// `auth.revocation_file`; it replaces the realm's older list there.
    Revoke {
        /// The operator's key file.
        #[arg(long)]
        operator: PathBuf,
        /// The realm.
        #[arg(long)]
        realm: String,
        /// A credential id to revoke, 32 hex digits (`macula keys inspect` shows it);
        /// repeatable.
        #[arg(long = "id", value_name = "HEX")]
        ids: Vec<String>,
        /// An earlier list of the realm (a file holding its text) whose ids are kept.
        #[arg(long)]
        merge: Option<PathBuf>,
    },
    /// Make an API key (the simple alternative to signed credentials, `docs/AUTH.md`, "API
    /// keys"): prints the key (give it to the client, once) on standard output and, on
    /// standard error, the `auth.api_keys` entry holding only its SHA-256.
    ApiKey {
        /// The realm it admits to.
        #[arg(long)]
        realm: String,
        /// The role it grants: client, node or bridge.
        #[arg(long, default_value = "client")]
        role: Role,
        /// A label for logs and the audit trail.
        #[arg(long)]
        name: String,
    },
    /// Decode a credential (its text, or a file holding it) and print its claims as JSON;
    /// exits 1 if its signature does not verify.
    Inspect {
        /// `mc1.…` or a file path.
        credential: String,
    },
    /// For development: create, in a new directory, an operator key and a realm governed by
    /// it — a bridge's and a node's data directory with their identity keys and
    /// credentials, a client key and credential, and `bridge.toml` / `node.toml` to run them
    /// with (`--config`). Never overwrites a file. Keep real operator keys offline.
    DevSetup {
        /// The realm.
        #[arg(long, default_value = macula::defaults::DEFAULT_REALM)]
        realm: String,
        /// The directory to create (must not exist, or be empty).
        #[arg(long)]
        dir: PathBuf,
        /// Lifetime of the credentials: a number with s, m, h or d.
        #[arg(long, default_value = "30d")]
        valid_for: String,
    },
}

/// Runs a `keys` command.
pub fn run(cmd: KeysCmd) -> Result<()> {
    match cmd {
        KeysCmd::Generate { out } => {
            let id = Identity::create(&out)?;
            print_identity(&out, &id);
        }
        KeysCmd::Show { key } => print_identity(&key, &Identity::load(&key)?),
        KeysCmd::Sign {
            operator,
            realm,
            role,
            subject,
            subject_key,
            name,
            valid_for,
            allow,
            deny,
            max_msgs_per_sec,
            max_bytes_per_sec,
            cluster,
            out,
        } => {
            let mut permissions = Permissions::default();
            for (list, is_deny) in [(&allow, false), (&deny, true)] {
                for spec in list {
                    let (action, pattern) = parse_permission(spec)?;
                    permissions.add(action, is_deny, pattern)?;
                }
            }
            let op = Identity::load(&operator)?;
            let subject = match (subject, subject_key) {
                (Some(hex), None) => {
                    macula::auth::parse_public_key(&hex).map_err(anyhow::Error::msg)?
                }
                (None, Some(path)) => Identity::load(&path)?.public_key(),
                _ => bail!("give --subject HEX or --subject-key FILE"),
            };
            if !macula::config::is_valid_realm(&realm) {
                bail!("realm {realm:?} is not a valid realm name");
            }
            let now = macula::auth::credential::unix_now();
            let claims = Claims {
                // Unique, not secret: what a revocation will name.
                id: rand::random(),
                realm,
                subject,
                role,
                name,
                issued_at: now,
                expires_at: now.saturating_add(parse_lifetime(&valid_for)?),
                permissions,
                limits: macula::rate::RateLimits {
                    msgs: max_msgs_per_sec,
                    bytes: max_bytes_per_sec,
                },
                cluster,
            };
            let text = Credential::to_text(&Credential::issue(&op, &claims)?);
            match out {
                Some(path) => {
                    write_private(&path, format!("{text}\n").as_bytes())?;
                    eprintln!("credential written to {}", path.display());
                }
                None => println!("{text}"),
            }
        }
        KeysCmd::Revoke {
            operator,
            realm,
            ids,
            merge,
        } => {
            use macula::auth::revocation::Revocations;
            let op = Identity::load(&operator)?;
            let mut all: Vec<[u8; 16]> = Vec::new();
            for hex in &ids {
                let b = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("x"), 16))
                    .collect::<Result<Vec<u8>, _>>();
                match b.ok().and_then(|b| <[u8; 16]>::try_from(b).ok()) {
                    Some(id) => all.push(id),
                    None => bail!("--id {hex:?}: expected 32 hex digits"),
                }
            }
            if let Some(path) = merge {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let old = Revocations::decode(&Revocations::from_text(&text)?)?;
                if old.realm != realm || old.issuer != op.public_key() {
                    bail!("{}: a list of another realm or operator", path.display());
                }
                all.extend(old.ids);
            }
            let seq = macula::auth::credential::unix_now();
            println!(
                "{}",
                Revocations::to_text(&Revocations::issue(&op, &realm, seq, &all)?)
            );
        }
        KeysCmd::DevSetup {
            realm,
            dir,
            valid_for,
        } => {
            let made = dev_setup(&realm, &dir, parse_lifetime(&valid_for)?)?;
            println!("{made}");
        }
        KeysCmd::ApiKey { realm, role, name } => {
            if !macula::config::is_valid_realm(&realm) {
                bail!("realm {realm:?} is not a valid realm name");
            }
            let (text, entry) = macula::auth::api_key::generate(&name, role);
            println!("{text}");
            eprintln!(
                "add to the configuration of the processes admitting it:\n[[auth.api_keys.\"{realm}\"]]\nname = {:?}\nrole = \"{}\"\nsha256 = \"{}\"",
                entry.name,
                role.as_str(),
                entry.sha256
            );
        }
        KeysCmd::Inspect { credential } => {
            let text = if credential.starts_with(macula::auth::credential::TEXT_PREFIX) {
                credential
            } else {
                std::fs::read_to_string(&credential)
                    .with_context(|| format!("reading {credential}"))?
            };
            let c = Credential::decode(&Credential::from_text(&text)?)?;
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            let json = serde_json::json!({
                "issuer": hex(&c.issuer),
                "id": hex(&c.claims.id),
                "realm": c.claims.realm,
                "subject": hex(&c.claims.subject),
                "subject_node_id": macula::dht::Id::from_public_key(&c.claims.subject).to_string(),
                "role": c.claims.role.as_str(),
                "name": c.claims.name,
                "issued_at": c.claims.issued_at,
                "expires_at": c.claims.expires_at,
                "permissions": c.claims.permissions,
                "limits": c.claims.limits,
                "cluster": c.claims.cluster,
                "signature": "valid for its issuer",
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    Ok(())
}

/// What [`dev_setup`] made: the files, and how to use them.
struct DevSetup {
    dir: PathBuf,
    realm: String,
    operator: String,
}

impl std::fmt::Display for DevSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.dir.display();
        writeln!(f, "development realm {:?} in {d}:", self.realm)?;
        writeln!(
            f,
            "  operator.key          operator key (public {})",
            self.operator
        )?;
        writeln!(
            f,
            "  bridge.toml           macula bridge --config {d}/bridge.toml"
        )?;
        writeln!(
            f,
            "  node.toml             macula node --config {d}/node.toml"
        )?;
        writeln!(
            f,
            "  bridge-data/, bridge.cred   the bridge's key and credential"
        )?;
        writeln!(
            f,
            "  node-data/, node.cred       the node's key and credential"
        )?;
        writeln!(
            f,
            "  client.key, client.cred     for an application (ClientOptions)"
        )?;
        write!(
            f,
            "only sessions with a credential this operator signed are admitted"
        )
    }
}

/// `macula keys dev-setup`: an operator key and a governed realm in `dir` (see the command's
/// help), credentials valid for `valid_for` seconds. Errors: `dir` exists and is not empty,
/// a file cannot be written, the realm name is invalid.
fn dev_setup(realm: &str, dir: &Path, valid_for: u64) -> Result<DevSetup> {
    if !macula::config::is_valid_realm(realm) {
        bail!("realm {realm:?} is not a valid realm name");
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let op = Identity::create(&dir.join("operator.key"))?;
    let op_hex = hex(&op.public_key());
    let now = macula::auth::credential::unix_now();
    let issue = |subject: &Identity, role: Role, name: &str, file: &str| -> Result<PathBuf> {
        let claims = Claims {
            id: rand::random(),
            realm: realm.to_string(),
            subject: subject.public_key(),
            role,
            name: name.into(),
            issued_at: now,
            expires_at: now.saturating_add(valid_for),
            permissions: Permissions::default(),
            limits: Default::default(),
            cluster: None,
        };
        let path = dir.join(file);
        let text = Credential::to_text(&Credential::issue(&op, &claims)?);
        write_private(&path, format!("{text}\n").as_bytes())?;
        Ok(path)
    };
    let toml_str = |p: &Path| format!("{:?}", p.display().to_string());
    let operators = format!("operators = {{ {realm:?} = [\"{op_hex}\"] }}");
    for (who, role) in [("bridge", Role::Bridge), ("node", Role::Node)] {
        let data = dir.join(format!("{who}-data"));
        std::fs::create_dir(&data)?;
        let key = Identity::create(&data.join("identity.key"))?;
        let cred = issue(&key, role, &format!("dev-{who}"), &format!("{who}.cred"))?;
        let section = match role {
            Role::Bridge => format!("[bridge]\nrealms = [{realm:?}]\n"),
            _ => format!("[node]\nrealm = {realm:?}\n"),
        };
        let toml = format!(
            "# Made by `macula keys dev-setup` (development only).\n\
             data_dir = {}\n{section}[auth]\n{operators}\ncredential_file = {}\n",
            toml_str(&data),
            toml_str(&cred),
        );
        write_private(&dir.join(format!("{who}.toml")), toml.as_bytes())?;
    }
    let client = Identity::create(&dir.join("client.key"))?;
    issue(&client, Role::Client, "dev-client", "client.cred")?;
    Ok(DevSetup {
        dir,
        realm: realm.to_string(),
        operator: op_hex,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn print_identity(path: &Path, id: &Identity) {
    let hex: String = id.public_key().iter().map(|b| format!("{b:02x}")).collect();
    println!("key:        {}", path.display());
    println!("public key: {hex}");
    println!("node id:    {}", macula::dht::Id(id.node_id()));
}

/// `publish=sensors.**` → (action, pattern).
fn parse_permission(spec: &str) -> Result<(Action, &str)> {
    let (a, pattern) = spec
        .split_once('=')
        .with_context(|| format!("{spec:?}: expected ACTION=PATTERN"))?;
    let action = Action::ALL
        .into_iter()
        .find(|x| x.as_str() == a)
        .with_context(|| {
            format!("{spec:?}: action must be publish, subscribe, call, register or state")
        })?;
    Ok((action, pattern))
}

/// `30d`, `12h`, `90m`, `3600s` → seconds.
fn parse_lifetime(s: &str) -> Result<u64> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .with_context(|| format!("lifetime {s:?}: expected a number and s, m, h or d"))?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("lifetime {s:?}: unit must be s, m, h or d"),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .with_context(|| format!("lifetime {s:?} out of range"))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o
        .open(path)
        .with_context(|| format!("creating {} (never overwritten)", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use macula::config::Config;

    fn load(path: &Path) -> Config {
        let cfg = Config::load(Some(path), &serde_json::json!({})).expect("loads");
        cfg.validate().expect("valid");
        cfg
    }

    #[test]
    fn dev_setup_makes_a_governed_realm_whose_credentials_admit() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("dev");
        let made = dev_setup("com.example", &dir, 3600).expect("made");
        let text = made.to_string();
        assert!(text.contains("bridge.toml"), "{text}");
        let bridge = load(&dir.join("bridge.toml"));
        let node = load(&dir.join("node.toml"));
        assert_eq!(bridge.bridge.realms, vec!["com.example".to_string()]);
        assert_eq!(node.node.realm, "com.example");
        assert_eq!(bridge.auth.operators, node.auth.operators);
        // Each credential admits its holder's key, in its role, under the operator listed.
        let auth = macula::auth::Auth::from_config(&bridge.auth).expect("auth");
        let now = macula::auth::credential::unix_now();
        for (cred, key, role) in [
            ("bridge.cred", "bridge-data/identity.key", Role::Bridge),
            ("node.cred", "node-data/identity.key", Role::Node),
            ("client.cred", "client.key", Role::Client),
        ] {
            let c = macula::auth::read_credential(&dir.join(cred)).expect("readable");
            let k = Identity::load(&dir.join(key)).expect("key");
            let admitted =
                auth.admission
                    .admit("com.example", &k.public_key(), Some(&c), (role, ""), now);
            assert!(matches!(admitted, Ok(Some(_))), "{cred}: {admitted:?}");
            // An anonymous session is refused.
            let anon = auth
                .admission
                .admit("com.example", &k.public_key(), None, (role, ""), now);
            assert!(anon.is_err());
        }
        assert_eq!(
            bridge.data_dir,
            dir.canonicalize().unwrap().join("bridge-data")
        );
        // Never over an existing setup.
        assert!(dev_setup("com.example", &dir, 3600).is_err());
        assert!(dev_setup("not a realm", &tmp.path().join("x"), 3600).is_err());
    }
}
