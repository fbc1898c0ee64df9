//! Child processes of the `macula` binary for `--spawn` runs: a bridge and nodes on
//! loopback, each with its own data directory and admin port. Every child is
//! killed when the [`Fleet`] is dropped or [`Fleet::stop`] is called.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

/// One spawned process.
pub struct Proc {
    pub name: String,
    pub quic: SocketAddr,
    pub admin: SocketAddr,
    args: Vec<String>,
    child: Option<Child>,
}

/// The processes of one run.
pub struct Fleet {
    pub procs: Vec<Proc>,
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    /// Environment set on every process started ([`Fleet::env`]).
    env: Vec<(String, String)>,
}

/// The admin token of the processes a [`Fleet`] starts (`auth.admin_token_file`), sent by
/// [`http_get`]: processes in network namespaces are reached from a non-loopback address,
/// where `/state` and `/fleet` need it. A test fixture, not a secret.
pub const LAB_ADMIN_TOKEN: &str = "macula-lab-admin-token";

/// Finds the `macula` binary next to this executable (or `$LOADTEST_MACULA_BIN`).
pub fn macula_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("LOADTEST_MACULA_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().context("current_exe")?;
    let p = me.with_file_name(format!("macula{}", std::env::consts::EXE_SUFFIX));
    if !p.exists() {
        bail!(
            "{} not found; build it with `cargo build --release` or set LOADTEST_MACULA_BIN",
            p.display()
        );
    }
    Ok(p)
}

/// A UDP port free on `ip` right now.
pub fn free_udp(ip: &str) -> Result<SocketAddr> {
    Ok(UdpSocket::bind((ip, 0))?.local_addr()?)
}

/// A TCP port free on `ip` right now.
pub fn free_tcp(ip: &str) -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?)
}

impl Fleet {
    /// An empty fleet using the `macula` binary at `bin`.
    pub fn new(bin: PathBuf) -> Result<Fleet> {
        let dir = tempfile::tempdir()?;
        let token = dir.path().join("admin.token");
        std::fs::write(&token, format!("{LAB_ADMIN_TOKEN}\n"))?;
        Ok(Fleet {
            procs: Vec::new(),
            dir,
            bin,
            env: vec![(
                "MACULA_AUTH__ADMIN_TOKEN_FILE".into(),
                token.display().to_string(),
            )],
        })
    }

    /// Sets environment variable `key` (e.g. a `MACULA_*` setting) for the processes started
    /// from now on; it overrides this fleet's own defaults.
    pub fn env(&mut self, key: &str, value: &str) {
        self.env.push((key.into(), value.into()));
    }

    /// Starts a bridge on `ip`; `extra` are more command-line arguments.
    pub fn bridge(&mut self, name: &str, ip: &str, extra: &[&str]) -> Result<usize> {
        self.bridge_at(name, free_udp(ip)?, extra)
    }

    /// Starts a bridge listening on `quic` (an address chosen beforehand, e.g. so fleet
    /// workers can name each other); `extra` are more command-line arguments.
    pub fn bridge_at(&mut self, name: &str, quic: SocketAddr, extra: &[&str]) -> Result<usize> {
        let admin = free_tcp(&quic.ip().to_string())?;
        let mut args = vec![
            "bridge".to_string(),
            "--listen".into(),
            quic.to_string(),
            "--admin-listen".into(),
            admin.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn(name, quic, admin, args)
    }

    /// Starts a bridge on `ip` serving `level` (`street`, `city`, …) under `parents` (tried in
    /// order; empty: the top of its hierarchy); `extra` are more command-line arguments.
    pub fn bridge_with(
        &mut self,
        name: &str,
        ip: &str,
        level: &str,
        parents: &[SocketAddr],
        extra: &[&str],
    ) -> Result<usize> {
        let mut args = vec!["--level".to_string(), level.to_string()];
        for p in parents {
            args.push("--parent".into());
            args.push(p.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.bridge(name, ip, &args)
    }

    /// Starts a node on `ip` in `cluster` with an uplink to `uplink`, joining the cluster's mesh
    /// through `seeds` (empty: the first node); `extra` are more command-line arguments.
    pub fn node_with(
        &mut self,
        name: &str,
        ip: &str,
        cluster: &str,
        uplink: SocketAddr,
        seeds: &[SocketAddr],
        extra: &[&str],
    ) -> Result<usize> {
        let mut args = Vec::new();
        for s in seeds {
            args.push("--seed".to_string());
            args.push(s.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.node(name, ip, cluster, uplink, &args)
    }

    /// Starts a node on `ip` with an uplink to `uplink`; `extra` are more arguments.
    pub fn node(
        &mut self,
        name: &str,
        ip: &str,
        cluster: &str,
        uplink: SocketAddr,
        extra: &[&str],
    ) -> Result<usize> {
        let quic = free_udp(ip)?;
        let admin = free_tcp(ip)?;
        let mut args = vec![
            "node".to_string(),
            "--listen".into(),
            quic.to_string(),
            "--admin-listen".into(),
            admin.to_string(),
            "--cluster".into(),
            cluster.into(),
            "--uplink".into(),
            uplink.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn(name, quic, admin, args)
    }

    fn spawn(
        &mut self,
        name: &str,
        quic: SocketAddr,
        admin: SocketAddr,
        mut args: Vec<String>,
    ) -> Result<usize> {
        let data = self.dir.path().join(name);
        std::fs::create_dir_all(&data)?;
        args.push("--data-dir".into());
        args.push(data.display().to_string());
        let child = self.start(name, &args)?;
        self.procs.push(Proc {
            name: name.into(),
            quic,
            admin,
            args,
            child: Some(child),
        });
        Ok(self.procs.len() - 1)
    }

    fn start(&self, name: &str, args: &[String]) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))?;
        Command::new(&self.bin)
            .args(args)
            .env(
                "MACULA_LOG__LEVEL",
                std::env::var("MACULA_LOG__LEVEL").unwrap_or_else(|_| "warn".into()),
            )
            // Every client of a load test comes from this host: lift the per-source bound
            // and the per-source handshake pacing (a test sets its own with `Fleet::env`).
            .env("MACULA_LIMITS__MAX_CONNECTIONS_PER_SOURCE", "1000000")
            .env("MACULA_LIMITS__HANDSHAKES_PER_SOURCE_PER_SEC", "0")
            // A load test measures the relay, not the per-client rate limit (`rate.client`,
            // 100,000 msg/s by default): lifted too (`flood` sets its own).
            .env("MACULA_RATE__CLIENT__MSGS", "0")
            .env("MACULA_RATE__CLIENT__BYTES", "0")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {} {}", self.bin.display(), args.join(" ")))
    }

    /// Kills process `i` with SIGKILL and waits for it.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Stops process `i` with SIGTERM (a graceful shutdown) and waits for it to exit.
    pub async fn terminate(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].child.take() {
            if let Some(pid) = c.id() {
                // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            let _ = c.wait().await;
        }
    }

    /// Sends SIGTERM to process `i` (a graceful shutdown) and hands its child over, without
    /// waiting: the caller watches the exit (dropping the child kills it). `None` if the
    /// process was not running.
    pub fn terminate_detached(&mut self, i: usize) -> Option<Child> {
        let c = self.procs[i].child.take()?;
        if let Some(pid) = c.id() {
            // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        Some(c)
    }

    /// Starts process `i` again with the same arguments (same ports, same data dir).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        let child = self.start(&self.procs[i].name.clone(), &self.procs[i].args.clone())?;
        self.procs[i].child = Some(child);
        Ok(())
    }

    /// Writes `contents` to `name` in the fleet's directory (e.g. a `--config` file); returns
    /// its path.
    pub fn write_file(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// The operating-system process id of process `i` (`None` once killed or stopped), e.g.
    /// to read its memory from `/proc/<pid>/status`.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].child.as_ref()?.id()
    }

    /// Whether process `i` was started and not killed since (it may still have exited on its
    /// own: [`Fleet::wait_ready`] reports that).
    pub fn is_running(&self, i: usize) -> bool {
        self.procs[i].child.is_some()
    }

    /// The Prometheus text of process `i` (`GET /metrics` on its admin port).
    pub fn metrics(&self, i: usize) -> Result<String> {
        let p = &self.procs[i];
        let (code, body) =
            http_get(p.admin, "/metrics").with_context(|| format!("{} /metrics", p.name))?;
        if code != 200 {
            bail!("{} /metrics answered HTTP {code}", p.name);
        }
        Ok(body)
    }

    /// The data directory process `name` gets (created): a test may write its identity key
    /// there first (`macula::identity::Identity::load_or_create`) to know its node id in advance.
    pub fn data_dir(&self, name: &str) -> Result<PathBuf> {
        let data = self.dir.path().join(name);
        std::fs::create_dir_all(&data)?;
        Ok(data)
    }

    /// Where process `name` writes its log.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Waits until every process answers `/health/ready` (or fails after `timeout`).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.procs.len() {
            self.wait_ready_until(i, deadline, timeout).await?;
        }
        Ok(())
    }

    /// Waits until process `i` answers `/health/ready` (or fails after `timeout`).
    pub async fn wait_ready_one(&mut self, i: usize, timeout: Duration) -> Result<()> {
        self.wait_ready_until(i, Instant::now() + timeout, timeout)
            .await
    }

    async fn wait_ready_until(
        &mut self,
        i: usize,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<()> {
        let log = self.log_path(&self.procs[i].name);
        let p = &mut self.procs[i];
        let Some(child) = p.child.as_mut() else {
            return Ok(());
        };
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited early with {status}; see {}",
                    p.name,
                    log.display()
                );
            }
            if http_get(p.admin, "/health/ready")
                .map(|(code, _)| code == 200)
                .unwrap_or(false)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} not ready after {timeout:?}", p.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills every child and waits for them.
    pub async fn stop(&mut self) {
        for p in &mut self.procs {
            if let Some(c) = p.child.as_mut() {
                let _ = c.start_kill();
            }
        }
        for p in &mut self.procs {
            if let Some(c) = p.child.as_mut() {
                let _ = c.wait().await;
            }
        }
    }
}

/// Minimal blocking HTTP/1.1 GET; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {LAB_ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Sum of all samples of metric `name` in a Prometheus text body.
pub fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ') | Some(b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every sample of metric `name` in a Prometheus text body, as (labels without braces, value):
/// `name{level="street"} 3` gives `("level=\"street\"", 3.0)`, a bare `name 3` gives `("", 3.0)`.
pub fn metric_samples(body: &str, name: &str) -> Vec<(String, f64)> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.as_bytes().first()? {
                b' ' => ("", rest),
                b'{' => {
                    let end = rest.find('}')?;
                    (&rest[1..end], &rest[end + 1..])
                }
                _ => return None,
            };
            let value = value.trim().split(' ').next()?.parse().ok()?;
            Some((labels.to_string(), value))
        })
        .collect()
}
