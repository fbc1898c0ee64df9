//! Tests of the relay core: the rules one relay applies, then a socket-free harness (in the
//! role of quinn-proto's `Pair`) wiring clients, nodes and up to three bridge levels by
//! queues, with property tests that every publish reaches exactly the matching subscribers
//! once, never its origin's group back, never another realm.

use std::collections::{BTreeMap, HashMap, VecDeque};

use proptest::prelude::*;

use super::cover::tests::pattern;
use super::*;
use crate::router::grouped_key;

fn pats(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}

fn routed(r: &Relay<()>, from: LinkId, topic: &str) -> Vec<LinkId> {
    let mut out = Vec::new();
    r.route(from, topic, false, &mut out);
    out.into_iter().map(|r| r.link).collect()
}

#[test]
fn a_node_routes_by_kind() {
    let mut r: Relay<()> = Relay::new(100);
    let (c1, c2, mesh, up) = (1, 2, 3, 4);
    r.add_link(c1, LinkKind::Client, None);
    r.add_link(c2, LinkKind::Client, None);
    r.add_link(mesh, LinkKind::Mesh, None);
    r.add_link(up, LinkKind::Uplink, None);
    let (_, deltas) = r.subscribe(c2, &pats(&["a.*"])).unwrap();
    // The mesh peer and the uplink hear the client's interest; a client hears nothing.
    let told: Vec<LinkId> = deltas.iter().map(|d| d.link).collect();
    assert_eq!(told, vec![mesh, up]);
    r.subscribe(mesh, &pats(&["a.b"])).unwrap();
    r.subscribe(up, &pats(&["a.b"])).unwrap();
    assert_eq!(routed(&r, c1, "a.b"), vec![c2, mesh, up]);
    assert_eq!(
        routed(&r, mesh, "a.b"),
        vec![c2],
        "a mesh publish goes to clients only"
    );
    assert_eq!(
        routed(&r, up, "a.b"),
        vec![c2],
        "what came down never goes back up"
    );
    r.subscribe(c1, &pats(&["a.b"])).unwrap();
    assert_eq!(
        routed(&r, c1, "a.b"),
        vec![c1, c2, mesh, up],
        "a client may receive its own publish"
    );
}

#[test]
fn a_bridge_hides_a_group_and_tells_the_parent_its_subtree() {
    let mut r: Relay<()> = Relay::new(100);
    let a1 = grouped_key(7, 1);
    let a2 = grouped_key(7, 2);
    let b1 = grouped_key(8, 3);
    let parent = 9;
    for l in [a1, a2, b1] {
        r.add_link(l, LinkKind::Child, None);
    }
    r.add_link(parent, LinkKind::Uplink, None);
    let (_, d) = r.subscribe(a1, &pats(&["x"])).unwrap();
    let told: Vec<LinkId> = d.iter().map(|d| d.link).collect();
    assert_eq!(told, vec![b1, parent], "a2 is in a1's cluster");
    // The parent's interest reaches every child, and a publish from a child goes up.
    let (_, d) = r.subscribe(parent, &pats(&["y.**"])).unwrap();
    let mut told: Vec<LinkId> = d.iter().map(|d| d.link).collect();
    told.sort();
    assert_eq!(told, vec![a1, a2, b1]);
    assert_eq!(routed(&r, b1, "y.z"), vec![parent]);
    assert_eq!(routed(&r, parent, "x"), vec![a1]);
    assert!(
        routed(&r, a2, "x").is_empty(),
        "same cluster: never through the bridge"
    );
    assert!(routed(&r, parent, "y.z").is_empty(), "nothing returns up");
}

#[test]
fn interest_is_told_once_and_withdrawn_with_the_last_holder() {
    let mut r: Relay<()> = Relay::new(100);
    r.add_link(1, LinkKind::Child, None);
    r.add_link(2, LinkKind::Child, None);
    r.add_link(9, LinkKind::Uplink, None);
    let (_, d) = r.subscribe(1, &pats(&["a"])).unwrap();
    assert!(d.iter().any(|d| d.link == 9 && d.add == pats(&["a"])));
    let (_, d) = r.subscribe(2, &pats(&["a"])).unwrap();
    assert!(
        d.iter().all(|d| d.link != 9),
        "the parent already knows `a`: {d:?}"
    );
    let d = r.unsubscribe(1, &pats(&["a"]));
    assert!(d.iter().all(|d| d.link != 9));
    let d = r.remove_link(2);
    assert!(d.iter().any(|d| d.link == 9 && d.remove == pats(&["a"])));
    assert_eq!(r.patterns(), 0);
}

#[test]
fn an_uplink_is_told_a_minimal_cover() {
    let mut r: Relay<()> = Relay::new(100);
    r.add_link(1, LinkKind::Child, None);
    r.add_link(2, LinkKind::Child, None);
    r.add_link(9, LinkKind::Uplink, None);
    let up = |d: &[Delta]| {
        d.iter()
            .find(|d| d.link == 9)
            .map(|d| (d.add.clone(), d.remove.clone()))
            .unwrap_or_default()
    };
    let (_, d) = r.subscribe(1, &pats(&["a.b.*", "a.c"])).unwrap();
    let (mut add, _) = up(&d);
    add.sort();
    assert_eq!(add, pats(&["a.b.*", "a.c"]));
    let (_, d) = r.subscribe(2, &pats(&["a.**"])).unwrap();
    let (add, mut remove) = up(&d);
    remove.sort();
    assert_eq!((add, remove), (pats(&["a.**"]), pats(&["a.b.*", "a.c"])));
    let mut told = r.told(9);
    told.sort();
    assert_eq!(told, pats(&["a.**"]));
    let d = r.remove_link(2);
    let (mut add, remove) = up(&d);
    add.sort();
    assert_eq!(
        (add, remove),
        (pats(&["a.b.*", "a.c"]), pats(&["a.**"])),
        "what `a.**` covered is advertised again before it is withdrawn"
    );
}

#[test]
fn limits_and_unknown_links() {
    let mut r: Relay<()> = Relay::new(2);
    r.add_link(1, LinkKind::Child, None);
    r.subscribe(1, &pats(&["a"])).unwrap();
    let e = r.subscribe(1, &pats(&["b", "c", "a"])).unwrap_err();
    assert_eq!(
        e,
        RelayError::LimitExceeded {
            held: 1,
            asked: 2,
            limit: 2
        }
    );
    assert_eq!(r.held(1), pats(&["a"]), "nothing applied");
    assert_eq!(
        r.subscribe(5, &pats(&["a"])).unwrap_err(),
        RelayError::UnknownLink(5)
    );
    r.add_link(9, LinkKind::Uplink, None);
    assert!(routed(&r, 1, "q").is_empty());
    r.set_unknown(9, true);
    let mut out = Vec::new();
    r.route(1, "q", true, &mut out);
    assert_eq!(out.len(), 1, "QoS 1 goes to an uplink of unknown interest");
    assert!(out[0].target.is_none());
    r.route(1, "q", false, &mut out);
    assert!(out.is_empty(), "QoS 0 follows known interest only");
    r.set_unknown(9, false);
    r.route(1, "q", true, &mut out);
    assert!(out.is_empty());
}

#[test]
fn targets_follow_sessions() {
    let mut r: Relay<&'static str> = Relay::new(10);
    r.add_link(1, LinkKind::Child, Some(Arc::new("child")));
    r.add_link(9, LinkKind::Uplink, Some(Arc::new("s1")));
    r.subscribe(9, &pats(&["a"])).unwrap();
    let mut out = Vec::new();
    r.route(1, "a", false, &mut out);
    assert_eq!(out[0].target.as_deref(), Some(&"s1"));
    r.set_target(9, None);
    r.route(1, "a", false, &mut out);
    assert!(out[0].target.is_none(), "kept interest, no session");
    r.set_target(9, Some(Arc::new("s2")));
    r.route(1, "a", false, &mut out);
    assert_eq!(out[0].target.as_deref(), Some(&"s2"));
}

// ---------------------------------------------------------------------------------------
// The harness: processes (nodes and bridges), one relay per realm each, links as queues.

/// One end of a link: the process and the link's id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct End {
    proc: usize,
    link: LinkId,
}

enum Msg {
    Interest(End, Delta),
    Publish(End, u64),
}

struct Net {
    /// relays[proc][realm]
    relays: Vec<Vec<Relay<()>>>,
    /// The other end of each link end.
    peer: HashMap<End, End>,
    /// Client link ends: (node proc, link) → client number.
    clients: HashMap<End, usize>,
    /// Client number → (realm, its end).
    client_at: Vec<(usize, End)>,
    queue: VecDeque<(usize, Msg)>,
    next: LinkId,
    topics: Vec<String>,
    delivered: BTreeMap<(u64, usize), u32>,
}

impl Net {
    fn new(procs: usize, realms: usize) -> Self {
        Net {
            relays: (0..procs)
                .map(|_| (0..realms).map(|_| Relay::new(1000)).collect())
                .collect(),
            peer: HashMap::new(),
            clients: HashMap::new(),
            client_at: Vec::new(),
            queue: VecDeque::new(),
            next: 1,
            topics: Vec::new(),
            delivered: BTreeMap::new(),
        }
    }

    fn key(&mut self, group: u32) -> LinkId {
        self.next += 1;
        grouped_key(group, self.next as u32)
    }

    /// Links `a` (kind `ka`, group of its id there `ga`) and `b` in every realm.
    fn link(&mut self, a: usize, ka: LinkKind, ga: u32, b: usize, kb: LinkKind, gb: u32) {
        let la = self.key(ga);
        let lb = self.key(gb);
        let (ea, eb) = (End { proc: a, link: la }, End { proc: b, link: lb });
        self.peer.insert(ea, eb);
        self.peer.insert(eb, ea);
        for realm in 0..self.relays[a].len() {
            let d = self.relays[a][realm].add_link(la, ka, None);
            self.send(realm, ea, d);
            let d = self.relays[b][realm].add_link(lb, kb, None);
            self.send(realm, eb, d);
        }
    }

    fn client(&mut self, node: usize, realm: usize) -> usize {
        let l = self.key(0);
        self.relays[node][realm].add_link(l, LinkKind::Client, None);
        let end = End {
            proc: node,
            link: l,
        };
        self.clients.insert(end, self.client_at.len());
        self.client_at.push((realm, end));
        self.client_at.len() - 1
    }

    /// Queues `d` (computed at `from`) for the other end of its link.
    fn send(&mut self, realm: usize, from: End, d: Delta) {
        if d.add.is_empty() && d.remove.is_empty() {
            return;
        }
        let to = self.peer[&End {
            proc: from.proc,
            link: d.link,
        }];
        self.queue.push_back((realm, Msg::Interest(to, d)));
    }

    fn sends(&mut self, realm: usize, proc: usize, ds: Vec<Delta>) {
        for d in ds {
            self.send(realm, End { proc, link: d.link }, d);
        }
    }

    fn subscribe(&mut self, client: usize, p: &[String]) {
        let (realm, e) = self.client_at[client];
        let (_, ds) = self.relays[e.proc][realm].subscribe(e.link, p).unwrap();
        self.sends(realm, e.proc, ds);
        self.settle();
    }

    fn unsubscribe(&mut self, client: usize, p: &[String]) {
        let (realm, e) = self.client_at[client];
        let ds = self.relays[e.proc][realm].unsubscribe(e.link, p);
        self.sends(realm, e.proc, ds);
        self.settle();
    }

    fn publish(&mut self, client: usize, topic: &str) -> u64 {
        let id = self.topics.len() as u64;
        self.topics.push(topic.to_string());
        let (realm, e) = self.client_at[client];
        self.arrive(realm, e, id);
        self.settle();
        id
    }

    /// A publish arrives at `at` (its process, the link it came in on).
    fn arrive(&mut self, realm: usize, at: End, id: u64) {
        let mut out = Vec::new();
        self.relays[at.proc][realm].route(at.link, &self.topics[id as usize], false, &mut out);
        for r in out {
            let here = End {
                proc: at.proc,
                link: r.link,
            };
            match self.clients.get(&here) {
                Some(&c) => *self.delivered.entry((id, c)).or_default() += 1,
                None => {
                    let to = self.peer[&here];
                    self.queue.push_back((realm, Msg::Publish(to, id)));
                }
            }
        }
    }

    fn settle(&mut self) {
        let mut steps = 0;
        while let Some((realm, m)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 1_000_000, "the network does not settle");
            match m {
                Msg::Interest(to, d) => {
                    let r = &mut self.relays[to.proc][realm];
                    let (_, mut ds) = r.subscribe(to.link, &d.add).unwrap();
                    ds.extend(r.unsubscribe(to.link, &d.remove));
                    self.sends(realm, to.proc, ds);
                }
                Msg::Publish(to, id) => self.arrive(realm, to, id),
            }
        }
    }
}

/// A random hierarchy: `levels` bridge levels (1–3), each bridge with 1–3 children; the
/// lowest bridges have 1–3 clusters of 1–3 nodes (a full mesh inside each); 1–2 clients per
/// node in each realm.
#[derive(Debug, Clone)]
struct Shape {
    levels: usize,
    fanout: Vec<usize>,
    nodes: Vec<usize>,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        1usize..=3,
        proptest::collection::vec(1usize..=3, 16),
        proptest::collection::vec(1usize..=3, 64),
    )
        .prop_map(|(levels, fanout, nodes)| Shape {
            levels,
            fanout,
            nodes,
        })
}

/// Builds the network of `shape` over 2 realms; returns it and its clients.
fn build(shape: &Shape) -> (Net, Vec<usize>) {
    let realms = 2;
    // Count processes first: bridges level by level, then nodes.
    let mut bridges: Vec<Vec<usize>> = vec![vec![0]];
    let mut procs = 1;
    let mut f = shape.fanout.iter().cycle();
    for _ in 1..shape.levels {
        let mut next = Vec::new();
        for _ in bridges.last().expect("a level") {
            for _ in 0..*f.next().expect("cycle") {
                next.push(procs);
                procs += 1;
            }
        }
        bridges.push(next);
    }
    let mut clusters: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut n = shape.nodes.iter().cycle();
    for &b in bridges.last().expect("a level") {
        for _ in 0..*f.next().expect("cycle") {
            let members: Vec<usize> = (0..*n.next().expect("cycle"))
                .map(|_| {
                    procs += 1;
                    procs - 1
                })
                .collect();
            clusters.push((b, members));
        }
    }
    let mut net = Net::new(procs, realms);
    for w in bridges.windows(2) {
        let (ups, downs) = (&w[0], &w[1]);
        for (i, &child) in downs.iter().enumerate() {
            let parent = ups[i * ups.len() / downs.len()];
            net.link(child, LinkKind::Uplink, 0, parent, LinkKind::Child, 0);
        }
    }
    let mut clients = Vec::new();
    for (g, (bridge, members)) in clusters.iter().enumerate() {
        for (i, &m) in members.iter().enumerate() {
            net.link(
                m,
                LinkKind::Uplink,
                0,
                *bridge,
                LinkKind::Child,
                g as u32 + 1,
            );
            for &o in &members[i + 1..] {
                net.link(m, LinkKind::Mesh, 0, o, LinkKind::Mesh, 0);
            }
            for realm in 0..realms {
                for _ in 0..*n.next().expect("cycle") {
                    clients.push(net.client(m, realm));
                }
            }
        }
    }
    net.settle();
    (net, clients)
}

fn topic() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..4).prop_map(|s| s.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every publish reaches every client of its realm holding a matching pattern exactly
    /// once, wherever it is in the tree, and no one else; after unsubscribes, interest is
    /// withdrawn everywhere (nothing reaches a client that no longer holds a match).
    #[test]
    fn every_publish_reaches_exactly_the_matching_subscribers_once(
        shape in shape(),
        subs in proptest::collection::vec((any::<prop::sample::Index>(), proptest::collection::vec(pattern(), 1..3)), 1..12),
        pubs in proptest::collection::vec((any::<prop::sample::Index>(), topic()), 1..12),
        drops in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let (mut net, clients) = build(&shape);
        let mut held: Vec<Vec<String>> = vec![Vec::new(); clients.len()];
        for (who, ps) in &subs {
            let c = clients[who.index(clients.len())];
            net.subscribe(c, ps);
            held[c].extend(ps.iter().cloned());
        }
        for d in &drops {
            let c = clients[d.index(clients.len())];
            let ps = std::mem::take(&mut held[c]);
            net.unsubscribe(c, &ps);
        }
        for (who, t) in &pubs {
            let from = clients[who.index(clients.len())];
            let id = net.publish(from, t);
            let realm = net.client_at[from].0;
            for &c in &clients {
                let got = net.delivered.get(&(id, c)).copied().unwrap_or(0);
                let wants = net.client_at[c].0 == realm
                    && held[c].iter().any(|p| crate::topic::matches(p, t));
                prop_assert_eq!(got, u32::from(wants), "client {} topic {} shape {:?}", c, t, &shape);
            }
        }
    }
}

/// A street fleet of two workers (procs 1, 2, peer-linked) under a city (proc 0) with a
/// plain street (proc 3) beside it; one one-node cluster per street bridge and one more on
/// worker 1, one client per node. With `grouped`, the city holds the workers' parent links
/// in one group (`fleet=<name>` in their `connect`), as a real city does.
fn fleet_under_a_city(grouped: bool) -> (Net, Vec<usize>) {
    let (city, w1, w2, street) = (0, 1, 2, 3);
    let nodes = [(w1, 4), (w1, 5), (w2, 6), (street, 7)];
    let mut net = Net::new(8, 1);
    let g = u32::from(grouped) * 50;
    net.link(w1, LinkKind::Uplink, 0, city, LinkKind::Child, g);
    net.link(w2, LinkKind::Uplink, 0, city, LinkKind::Child, g);
    net.link(street, LinkKind::Uplink, 0, city, LinkKind::Child, 0);
    net.link(w1, LinkKind::Peer, 60, w2, LinkKind::Peer, 60);
    let mut clients = Vec::new();
    for (i, (bridge, node)) in nodes.into_iter().enumerate() {
        net.link(
            node,
            LinkKind::Uplink,
            0,
            bridge,
            LinkKind::Child,
            i as u32 + 1,
        );
        clients.push(net.client(node, 0));
    }
    net.settle();
    (net, clients)
}

#[test]
fn ungrouped_fleet_workers_at_their_parent_deliver_twice() {
    let (mut net, clients) = fleet_under_a_city(false);
    // A subscriber on worker 2; the publisher on worker 1.
    net.subscribe(clients[2], &pats(&["a.**"]));
    let id = net.publish(clients[0], "a.b");
    assert_eq!(
        net.delivered.get(&(id, clients[2])),
        Some(&2),
        "once over the peer link, once through the city"
    );
    let (mut net, clients) = fleet_under_a_city(true);
    net.subscribe(clients[2], &pats(&["a.**"]));
    let id = net.publish(clients[0], "a.b");
    assert_eq!(net.delivered.get(&(id, clients[2])), Some(&1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// With the workers grouped at the city, every publish reaches every matching
    /// subscriber once: between clusters of one worker, of two workers, and across the city
    /// both ways.
    #[test]
    fn a_fleet_under_a_city_delivers_each_publish_once(
        subs in proptest::collection::vec((0usize..4, proptest::collection::vec(pattern(), 1..3)), 1..8),
        pubs in proptest::collection::vec((0usize..4, topic()), 1..12),
    ) {
        let (mut net, clients) = fleet_under_a_city(true);
        let mut held: Vec<Vec<String>> = vec![Vec::new(); clients.len()];
        for (who, ps) in &subs {
            net.subscribe(clients[*who], ps);
            held[*who].extend(ps.iter().cloned());
        }
        for (who, t) in &pubs {
            let id = net.publish(clients[*who], t);
            for (i, &c) in clients.iter().enumerate() {
                let got = net.delivered.get(&(id, c)).copied().unwrap_or(0);
                let wants = held[i].iter().any(|p| crate::topic::matches(p, t));
                prop_assert_eq!(got, u32::from(wants), "client {} topic {}", i, t);
            }
        }
    }
}
