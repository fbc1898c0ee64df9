//! Network namespaces for the multi-node tests: partitions between nodes while the test's
//! own clients (in the root namespace) keep reaching every node.

use std::net::SocketAddr;
use std::process::Command as StdCommand;

/// Two subnets behind Linux bridges in the root namespace, one namespace per node; the root
/// namespace routes between them. Turning forwarding off on both bridges cuts the sides off
/// from each other (the nodes of a side still reach each other over their bridge).
pub struct NetLab {
    tag: String,
    /// `(namespace, ip)` of each node slot, side 0 first.
    pub nodes: Vec<(String, String)>, // (namespace, ip)
    forward_before: String,
}

fn ip(args: &[&str]) -> bool {
    StdCommand::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl NetLab {
    /// `per_side` nodes on each side; `None` when namespaces are not available (not root).
    pub fn new(per_side: [usize; 2]) -> Option<NetLab> {
        let tag = format!("mg{}", std::process::id() % 100_000);
        let forward_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap_or_else(|_| "0".into())
            .trim()
            .to_string();
        let mut lab = NetLab {
            tag: tag.clone(),
            nodes: Vec::new(),
            forward_before,
        };
        if !ip(&["netns", "add", &format!("{tag}probe")]) {
            return None;
        }
        ip(&["netns", "del", &format!("{tag}probe")]);
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").ok()?;
        for (side, &count) in per_side.iter().enumerate() {
            let br = format!("{tag}br{side}");
            if !(ip(&["link", "add", &br, "type", "bridge"])
                && ip(&[
                    "addr",
                    "add",
                    &format!("10.77.{}.1/24", side + 1),
                    "dev",
                    &br,
                ])
                && ip(&["link", "set", &br, "up"]))
            {
                return None;
            }
            for i in 0..count {
                let ns = format!("{tag}s{side}n{i}");
                let va = format!("{tag}{side}{i}a");
                let vb = format!("{tag}{side}{i}b");
                let addr = format!("10.77.{}.{}", side + 1, i + 2);
                let ok = ip(&["netns", "add", &ns])
                    && ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])
                    && ip(&["link", "set", &vb, "netns", &ns])
                    && ip(&["link", "set", &va, "master", &br])
                    && ip(&["link", "set", &va, "up"])
                    && ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &vb])
                    && ip(&["-n", &ns, "link", "set", &vb, "up"])
                    && ip(&["-n", &ns, "link", "set", "lo", "up"])
                    && ip(&[
                        "-n",
                        &ns,
                        "route",
                        "add",
                        "default",
                        "via",
                        &format!("10.77.{}.1", side + 1),
                    ]);
                lab.nodes.push((ns, addr));
                if !ok {
                    return None;
                }
            }
        }
        Some(lab)
    }

    /// Cuts the two sides off from each other (`cut`) or heals the cut: the root namespace
    /// stops (or resumes) forwarding packets that arrive on either side's bridge. It still
    /// reaches both sides itself, so the test's clients and admin requests keep working.
    pub fn partition(&self, cut: bool) {
        for side in 0..2 {
            let path = format!("/proc/sys/net/ipv4/conf/{}br{side}/forwarding", self.tag);
            std::fs::write(&path, if cut { "0" } else { "1" }).expect("per-interface forwarding");
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for (ns, _) in &self.nodes {
            ip(&["netns", "del", ns]);
        }
        for side in 0..2 {
            ip(&["link", "del", &format!("{}br{side}", self.tag)]);
        }
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &self.forward_before);
    }
}

/// A `macula node` running in a namespace (killed when dropped).
pub struct NsProc {
    pub child: tokio::process::Child,
    pub admin: SocketAddr,
    pub quic: SocketAddr,
}

/// Starts a standalone node of cluster `p` in namespace `ns` at `ip` (QUIC on 9443, admin
/// on 8080), seeded with `seed`; its data and log (`<ns>.log`) go under `dir`.
pub fn spawn_in(ns: &str, ip: &str, seed: Option<SocketAddr>, dir: &std::path::Path) -> NsProc {
    let quic: SocketAddr = format!("{ip}:9443").parse().unwrap();
    let admin: SocketAddr = format!("{ip}:8080").parse().unwrap();
    let data = dir.join(ns);
    std::fs::create_dir_all(&data).unwrap();
    let log = std::fs::File::create(dir.join(format!("{ns}.log"))).unwrap();
    let mut args: Vec<String> = vec![
        "netns".into(),
        "exec".into(),
        ns.into(),
        env!("CARGO_BIN_EXE_macula").into(),
        "node".into(),
        "--standalone".into(),
        "--cluster".into(),
        "p".into(),
        "--listen".into(),
        quic.to_string(),
        "--admin-listen".into(),
        admin.to_string(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    if let Some(s) = seed {
        args.push("--seed".into());
        args.push(s.to_string());
    }
    // Reached from the host namespace (not loopback): `/state` needs the admin token, which
    // `spawn::http_get` sends. Each node gets its own file: rewriting a shared one while an
    // earlier node starts up lets that node read it empty (and refuse to start).
    let token = dir.join(format!("{ns}.admin-token"));
    std::fs::write(&token, format!("{}\n", super::spawn::LAB_ADMIN_TOKEN)).unwrap();
    let child = tokio::process::Command::new("ip")
        .args(&args)
        .env("MACULA_LOG__LEVEL", "info")
        .env("MACULA_AUTH__ADMIN_TOKEN_FILE", &token)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn in netns");
    NsProc { child, admin, quic }
}
