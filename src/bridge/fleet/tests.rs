//! Tests of the pure parts of the fleet worker: the link tie-break, the settings digest,
//! the redirect count.
use super::*;
use crate::wire::Role;

#[test]
fn both_sides_keep_the_link_dialed_by_the_lower_id() {
    let (a, b) = ([1u8; 32], [2u8; 32]);
    // Every arrival order at both workers ends with A's dial (A is lower).
    for (first, second) in [(a, b), (b, a)] {
        for me in [a, b] {
            let peer = if me == a { b } else { a };
            let kept = if prefer_new_link(&me, &peer, &first, &second) {
                second
            } else {
                first
            };
            assert_eq!(kept, a, "me {:?} first {:?}", me[0], first[0]);
        }
    }
    // A re-dial by the same side replaces the (dead) old link.
    assert!(prefer_new_link(&a, &b, &a, &a));
    assert!(prefer_new_link(&b, &a, &b, &b));
}

#[test]
fn settings_digest_covers_what_workers_must_share() {
    let mut c = Config::default();
    c.bridge.fleet.name = Some("f".into());
    let base = config_digest(&c);
    let mut other = c.clone();
    other.bridge.fleet.weight = 300;
    other.bridge.fleet.peers = vec!["x:1".into()];
    assert_eq!(config_digest(&other), base, "weights and seeds may differ");
    other.bridge.level = crate::escalation::Level::City;
    assert_ne!(config_digest(&other), base);
    let mut realms = c.clone();
    realms.bridge.realms.push("org.example".into());
    assert_ne!(config_digest(&realms), base);
    let mut name = c;
    name.bridge.fleet.name = Some("g".into());
    assert_ne!(config_digest(&name), base);
}

/// A node's `connect` in realm `io.macula` with one capability.
fn connect(node_id: NodeId, cluster: &str, capability: &str) -> Connect {
    Connect {
        versions: vec![1],
        node_id,
        realm: "io.macula".into(),
        cluster: cluster.into(),
        role: Role::Node,
        capabilities: vec![capability.into()],
        max_frame_size: 1024,
        correlation_id: 1,
        proof: None,
        credential: None,
    }
}

#[test]
fn redirect_count_is_read_from_capabilities() {
    let mut c = connect([0; 32], "a", "pubsub");
    assert_eq!(redirects_of(&c), 0);
    c.capabilities.push(format!("{CAP_REDIRECTS}3"));
    assert_eq!(redirects_of(&c), 3);
    c.capabilities = vec![format!("{CAP_REDIRECTS}lots")];
    assert_eq!(redirects_of(&c), 0, "garbage counts as none");
    assert!(!is_peer(&c));
    c.capabilities.push(CAP_PEER.into());
    assert!(is_peer(&c));
}

#[test]
fn children_are_placed_by_cluster_fleet_or_id() {
    let mut c = connect([7; 32], "bridge-street", "bridge");
    let node = child_key(&c, false);
    assert_eq!(
        node,
        (
            cluster_key("io.macula", "bridge-street"),
            "bridge-street".into()
        )
    );
    let alone = child_key(&c, true);
    assert_eq!(alone.1, format!("bridge/{}", hex(&[7; 32])));
    assert_ne!(
        alone.0, node.0,
        "a child bridge is not placed by its cluster name"
    );
    c.capabilities.push(format!("{CAP_FLEET}street-1"));
    let worker = child_key(&c, true);
    c.node_id = [8; 32];
    assert_eq!(
        child_key(&c, true),
        worker,
        "the workers of one fleet go together"
    );
    assert_eq!(worker.1, "fleet/street-1");
}
