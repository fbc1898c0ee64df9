//! The fleet task (see `bridge/fleet.rs`): membership gossip, the failure detector, DNS,
//! dialing the workers this one has no link to, and rebalancing after every change.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::Endpoint;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::{build_directory, cluster_counts, hex, publish_json, rebalance, Cmd, Fleet};
use crate::bridge::child::{run_link, ChildEnv, LinkKind, Remote};
use crate::bridge::{lock, Realm};
use crate::defaults;
use crate::fleet::membership::{Change, Membership};
use crate::session;
use crate::wire::{self, Connect, MemberStatus, NodeId, Role};

/// The fleet task's own state.
pub(in crate::bridge) struct FleetTask {
    pub(super) rx: mpsc::Receiver<Cmd>,
    pub(super) membership: Membership,
    pub(super) seeds: Vec<String>,
    pub(super) dns: Option<(String, Duration)>,
}

struct Dialing {
    /// (addr, realm) being dialed or linked through a dial of ours.
    busy: HashSet<(String, Arc<str>)>,
    /// Next attempt per address (500 ms doubling to 5 s, with jitter).
    next: session::backoff::Schedule<String>,
}

impl Default for Dialing {
    fn default() -> Self {
        Dialing {
            busy: HashSet::new(),
            next: session::backoff::Schedule::new(
                Duration::from_millis(500),
                Duration::from_secs(5),
            ),
        }
    }
}

/// Runs the fleet task until `shutdown`: see the module docs.
pub(in crate::bridge) async fn run(
    env: Arc<ChildEnv>,
    mut task: FleetTask,
    endpoint: Endpoint,
    shutdown: CancellationToken,
) {
    let fleet = env
        .fleet
        .clone()
        .expect("the fleet task runs only in a fleet");
    let metrics = &fleet.metrics.fleet;
    let mut tick = tokio::time::interval(Duration::from_millis(defaults::FLEET_TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut linked: HashMap<NodeId, usize> = HashMap::new();
    let mut dialing = Dialing::default();
    let mut dns_addrs: Vec<String> = Vec::new();
    let mut next_dns = Instant::now();
    let mut drain_started = false;
    loop {
        let mut changes: Vec<Change> = Vec::new();
        let mut links_changed = false;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = fleet.drain.cancelled(), if !drain_started => {
                drain_started = true;
                fleet.draining.store(true, Ordering::Relaxed);
                metrics.draining.set(1);
                changes.extend(task.membership.set_draining(Instant::now()));
                info!("draining: redirecting every node to its new owner");
            }
            cmd = task.rx.recv() => match cmd {
                None => return,
                Some(Cmd::View(v)) => {
                    changes = task.membership.merge(&v.sender, &v.members, Instant::now());
                }
                Some(Cmd::LinkUp(id)) => {
                    *linked.entry(id).or_default() += 1;
                    links_changed = true;
                    task.membership.heard_from(&id, Instant::now());
                }
                Some(Cmd::LinkDown(id)) => {
                    if let Some(n) = linked.get_mut(&id) {
                        *n -= 1;
                        if *n == 0 {
                            linked.remove(&id);
                        }
                    }
                    links_changed = true;
                }
                Some(Cmd::DialEnded(addr, realm)) => {
                    dialing.busy.remove(&(addr, realm));
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                changes = task.membership.tick(now);
                if let Some((name, every)) = &task.dns {
                    if now >= next_dns {
                        next_dns = now + *every;
                        dns_addrs = resolve(name).await;
                    }
                }
                dial_missing(&env, &fleet, &task, &dns_addrs, &linked, &mut dialing, &endpoint, &shutdown);
                fleet.to_peers(&fleet.dir.load().frame);
                rebalance(&fleet);
                let (connected, owned) = cluster_counts(&fleet);
                metrics.clusters_connected.set(connected as i64);
                metrics.clusters_owned.set(owned as i64);
                if drain_started {
                    let left = lock(&fleet.children).len() + fleet.lingering.load(Ordering::Relaxed);
                    metrics.drain_remaining_links.set(left as i64);
                    if left == 0 && !fleet.drained.is_cancelled() {
                        info!("drained");
                        fleet.drained.cancel();
                    }
                }
                publish_json(&fleet);
            }
        }
        for c in &changes {
            if let Some(to) = c.to {
                metrics
                    .membership_changes_total
                    .with_label_values(&[to.as_str()])
                    .inc();
            }
            info!(member = %hex(&c.id)[..16], from = ?c.from, to = ?c.to, "fleet member changed");
        }
        if !changes.is_empty() || links_changed {
            let set: HashSet<NodeId> = linked.keys().copied().collect();
            let dir = build_directory(&task.membership, &set, &fleet.name, fleet.digest);
            for (status, n) in task.membership.counts() {
                metrics
                    .members
                    .with_label_values(&[status.as_str()])
                    .set(n as i64);
            }
            let frame = dir.frame.clone();
            fleet.dir.store(Arc::new(dir));
            if !changes.is_empty() {
                fleet.to_peers(&frame);
                fleet.to_children(&frame);
            }
            rebalance(&fleet);
            publish_json(&fleet);
        }
        metrics.peer_links.set(lock(&fleet.peers).len() as i64);
    }
}

async fn resolve(name: &str) -> Vec<String> {
    match tokio::net::lookup_host(name).await {
        Ok(addrs) => addrs.map(|a| a.to_string()).collect(),
        Err(e) => {
            debug!(dns = %name, error = %e, "fleet DNS lookup failed");
            Vec::new()
        }
    }
}

/// Starts a dial (one task per address and realm) to every member and seed without a link.
#[allow(clippy::too_many_arguments)]
fn dial_missing(
    env: &Arc<ChildEnv>,
    fleet: &Arc<Fleet>,
    task: &FleetTask,
    dns: &[String],
    linked: &HashMap<NodeId, usize>,
    dialing: &mut Dialing,
    endpoint: &Endpoint,
    shutdown: &CancellationToken,
) {
    let now = Instant::now();
    let mut targets: Vec<String> = Vec::new();
    for m in task.membership.members() {
        if m.info.id != fleet.me
            && m.info.status != MemberStatus::Dead
            && !linked.contains_key(&m.info.id)
        {
            targets.push(m.info.addr.clone());
        }
    }
    let known: HashSet<&str> = task
        .membership
        .members()
        .map(|m| m.info.addr.as_str())
        .collect();
    for s in task.seeds.iter().chain(dns) {
        if s != &fleet.advertise && !known.contains(s.as_str()) {
            targets.push(s.clone());
        }
    }
    targets.sort();
    targets.dedup();
    // Forget the backoff of addresses no longer wanted (pods come and go with new IPs): the
    // map stays bounded by the members, seeds and DNS answers of the moment.
    dialing.next.retain(|a| targets.binary_search(a).is_ok());
    for addr in targets {
        if !dialing.next.try_dial(addr.clone(), now) {
            continue;
        }
        for realm in env.realms.values() {
            let busy = (addr.clone(), realm.name.clone());
            if !dialing.busy.insert(busy) {
                continue;
            }
            let span = info_span!("peer", addr = %addr, realm = %realm.name);
            env.tracker.spawn(
                dial(
                    env.clone(),
                    fleet.clone(),
                    realm.clone(),
                    addr.clone(),
                    endpoint.clone(),
                    shutdown.clone(),
                )
                .instrument(span),
            );
        }
    }
}

/// Dials one worker for one realm and runs the link until it ends.
async fn dial(
    env: Arc<ChildEnv>,
    fleet: Arc<Fleet>,
    realm: Arc<Realm>,
    addr: String,
    endpoint: Endpoint,
    shutdown: CancellationToken,
) {
    let run = async {
        let target: SocketAddr = match tokio::net::lookup_host(&addr)
            .await
            .ok()
            .and_then(|mut a| a.next())
        {
            Some(a) => a,
            None => return,
        };
        let connecting = match endpoint.connect(target, &fleet.server_name) {
            Ok(c) => c,
            Err(e) => return debug!(error = %e, "peer dial failed"),
        };
        let conn = match tokio::time::timeout(session::HANDSHAKE_TIMEOUT, connecting).await {
            Ok(Ok(c)) => c,
            _ => return debug!("peer unreachable"),
        };
        let connect = Connect {
            versions: vec![wire::PROTOCOL_VERSION],
            node_id: fleet.me,
            realm: realm.name.to_string(),
            cluster: "fleet".into(),
            role: Role::Node,
            capabilities: fleet.peer_capabilities(),
            max_frame_size: env.limits.max_frame_size,
            correlation_id: 1,
            proof: None,
            credential: env.auth.credential.clone(),
        };
        let (send, recv, decoder, welcome) =
            match session::open_session(&conn, connect, env.limits.max_frame_size, &env.identity)
                .await
            {
                Ok(s) => s,
                Err(e) => return warn!(error = %e, "peer refused the link"),
            };
        if welcome.node_id == fleet.me {
            conn.close(0u32.into(), b"dialed myself");
            return;
        }
        let remote = Remote {
            node_id: welcome.node_id,
            cluster: String::new(),
            max_frame_size: welcome.max_frame_size,
        };
        let io = crate::session::link::LinkIo {
            conn,
            send,
            recv,
            decoder,
        };
        let kind = LinkKind::Peer { dialer: fleet.me };
        run_link(
            env.clone(),
            realm.clone(),
            io,
            remote,
            kind,
            None,
            (None, Default::default()),
        )
        .await;
    };
    tokio::select! {
        _ = run => {}
        _ = shutdown.cancelled() => {}
    }
    let _ = fleet
        .cmds
        .try_send(Cmd::DialEnded(addr, realm.name.clone()));
}
