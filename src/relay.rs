//! The pub/sub relay core: who holds which pattern on which link, where a publish goes, and
//! what interest each link must be told. Pure: no tokio, no sockets, no clocks.
//!
//! One [`Relay`] serves one realm of one process: a node (links to its clients, to the other
//! nodes of its cluster and its uplink) or a bridge (links to its children, to the other
//! workers of its fleet and its parent). Every link has a [`LinkKind`]; the rules below are
//! written once, for every level (Macula design v0.16, "interest-only routing"; lessons from
//! NATS and Zenoh: interest goes up as a summary, never sideways between siblings).
//!
//! **Routing** ([`Relay::route`]). A publish received on link `from` goes to every other link
//! holding a matching pattern that [`forwards`] allows from `from`'s kind, once however many
//! of its patterns match, never to `from` itself (a client may receive its own publishes: it
//! is the only kind that can), never to a link of `from`'s group (the nodes of one cluster
//! reach each other over their mesh; the workers of one fleet are one logical bridge).
//!
//! **Interest** ([`Relay::subscribe`], [`Relay::unsubscribe`], [`Relay::add_link`],
//! [`Relay::remove_link`]). Each link other than a client is told the patterns held by the
//! links a publish from it would be forwarded to, and nothing else: a node's uplink hears its
//! clients' interest, a bridge's parent link hears its subtree's, a child hears everyone's but
//! its own group's. A pattern is told once however many links hold it, and what an uplink is
//! told is reduced to a minimal cover first ([`cover::Cover`]: `a.**` hides `a.b.*`). Because
//! interest only flows toward where a publish may come from, and a publish only toward
//! interest, a tree of relays delivers each publish at most once per subscriber link.
//!
//! **Cost.** A subscribe or unsubscribe costs O(its patterns × the links told interest), not a
//! rebuild: the [`PatternTrie`] of holders is updated in place. A new link learns the current
//! interest in O(patterns held by anyone).
//!
//! **Links whose interest is unknown** ([`Relay::set_unknown`]): until an uplink's first
//! interest snapshot arrives, or while its session is down, QoS 1 publishes are routed to it
//! anyway (the caller holds their acknowledgement, so the origin keeps custody) instead of
//! being judged unwanted.

pub mod cache;
pub mod cover;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::router::{same_group, PeerKey};
use crate::topic::PatternTrie;

pub use cache::{RouteCache, ROUTE_CACHE_ENTRIES};
pub use cover::{covers, Cover};

/// A link of the relay: the process-local key of a connection (its group in the upper 32
/// bits, see [`crate::router::group_of`]).
pub type LinkId = PeerKey;

/// What is at the other end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// An application client of a node.
    Client,
    /// Another node of the same cluster (the direct QUIC mesh).
    Mesh,
    /// The way up: a node's uplink to its bridge, or a bridge's link to its parent.
    Uplink,
    /// A child of a bridge: a node's uplink or a child bridge's parent link.
    Child,
    /// Another worker of the same bridge fleet.
    Peer,
}

/// Whether a publish received from a link of kind `from` may be sent on a link of kind `to`
/// (groups and the link itself aside). The no-re-fan-out rules of `docs/ARCHITECTURE.md`:
/// - from a client: to clients, mesh peers and the uplink;
/// - from a mesh peer: to clients only (its sender already reached the other peers and the
///   bridge itself);
/// - from the uplink: to clients and children (never to fleet peers: each worker hears its
///   parent itself);
/// - from a child: to the other children, the uplink and the fleet peers;
/// - from a fleet peer: to children only (a publish crosses at most one worker hop).
pub fn forwards(from: LinkKind, to: LinkKind) -> bool {
    use LinkKind::*;
    match from {
        Client => matches!(to, Client | Mesh | Uplink),
        Mesh => to == Client,
        Uplink => matches!(to, Client | Child),
        Child => matches!(to, Child | Uplink | Peer),
        Peer => to == Child,
    }
}

/// Why the relay refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// The link would hold more patterns than allowed (nothing was applied).
    #[error("subscription limit exceeded: {held} held, {asked} more asked, limit {limit}")]
    LimitExceeded {
        /// Patterns already held by the link.
        held: usize,
        /// New patterns in the refused request.
        asked: usize,
        /// The limit per link.
        limit: usize,
    },
    /// No such link (it already left).
    #[error("unknown link {0}")]
    UnknownLink(LinkId),
}

/// What one link must be told after a change: patterns now wanted through it (`add`, to send
/// in a `subscribe`) and no longer (`remove`, an `unsubscribe`), in that order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// The link to tell.
    pub link: LinkId,
    /// Patterns to subscribe.
    pub add: Vec<String>,
    /// Patterns to unsubscribe.
    pub remove: Vec<String>,
}

/// Where one publish goes: a link, and its target when the link is up (`None`: an uplink
/// whose session is down or whose interest is unknown, or a mesh peer whose session is down
/// and whose interest is held; the caller must not acknowledge a QoS 1 publish routed there).
#[derive(Debug)]
pub struct Route<T> {
    /// The link.
    pub link: LinkId,
    /// Its kind.
    pub kind: LinkKind,
    /// Its sending half, if connected.
    pub target: Option<Arc<T>>,
}

struct Holder<T> {
    link: LinkId,
    kind: LinkKind,
    target: Option<Arc<T>>,
}

struct LinkState<T> {
    kind: LinkKind,
    target: Option<Arc<T>>,
    patterns: HashSet<String>,
    /// For uplinks: the told interest and its minimal cover.
    cover: Option<Cover>,
    /// Interest unknown: QoS 1 is routed here whatever its patterns.
    unknown: bool,
}

/// The interest table of one realm's links and the routing rules over it. `T` is the
/// sending half of a link (a queue handle in the async code, anything in tests).
pub struct Relay<T> {
    links: HashMap<LinkId, LinkState<T>>,
    /// Links told interest (every kind but [`LinkKind::Client`]).
    listeners: Vec<LinkId>,
    /// Links of unknown interest.
    unknown: Vec<LinkId>,
    holders: PatternTrie<Vec<Holder<T>>>,
    max_patterns: usize,
    /// Unique per relay of the process ([`RouteCache`] tells relays apart by it).
    id: u64,
    /// Counts every change that can change a route: links, targets, unknown marks, patterns.
    generation: u64,
}

/// Source of [`Relay::id`].
static NEXT_RELAY_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl<T> Relay<T> {
    /// An empty relay; each link may hold at most `max_patterns` patterns
    /// (`limits.max_subscriptions_per_connection`).
    pub fn new(max_patterns: usize) -> Self {
        Relay {
            links: HashMap::new(),
            listeners: Vec::new(),
            unknown: Vec::new(),
            holders: PatternTrie::new(),
            max_patterns,
            id: NEXT_RELAY_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            generation: 0,
        }
    }

    /// How many changes that can change a route this relay has seen (links added or removed,
    /// targets replaced, interest marked unknown or known, patterns held or dropped). Routes
    /// computed at one generation hold until it moves ([`RouteCache`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of distinct patterns held by any link.
    pub fn patterns(&self) -> usize {
        self.holders.len()
    }

    /// Number of links.
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// The kind of `link`, if it exists.
    pub fn kind(&self, link: LinkId) -> Option<LinkKind> {
        self.links.get(&link).map(|l| l.kind)
    }

    /// The sending half of `link`, if it exists and is connected.
    pub fn target(&self, link: LinkId) -> Option<&Arc<T>> {
        self.links.get(&link).and_then(|l| l.target.as_ref())
    }

    /// The patterns `link` holds (what it subscribed to), in no order.
    pub fn held(&self, link: LinkId) -> Vec<String> {
        self.links
            .get(&link)
            .map(|l| l.patterns.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `link` holds `pattern`. O(1).
    pub fn holds(&self, link: LinkId, pattern: &str) -> bool {
        self.links
            .get(&link)
            .is_some_and(|l| l.patterns.contains(pattern))
    }

    /// How many patterns `link` holds (0 for an unknown link). O(1).
    pub fn held_count(&self, link: LinkId) -> usize {
        self.links.get(&link).map_or(0, |l| l.patterns.len())
    }

    /// Adds a link (replacing nothing: `link` must be new) and returns what it must be told
    /// first: the interest it can forward to, as one [`Delta`] (empty for clients).
    pub fn add_link(&mut self, link: LinkId, kind: LinkKind, target: Option<Arc<T>>) -> Delta {
        self.generation += 1;
        let cover = (kind == LinkKind::Uplink).then(Cover::new);
        self.links.insert(
            link,
            LinkState {
                kind,
                target,
                patterns: HashSet::new(),
                cover,
                unknown: false,
            },
        );
        let mut delta = Delta {
            link,
            ..Delta::default()
        };
        if kind == LinkKind::Client {
            return delta;
        }
        self.listeners.push(link);
        let wanted: Vec<String> = self
            .holders
            .iter()
            .filter(|(_, hs)| hs.iter().any(|h| visible(link, kind, h.link, h.kind)))
            .map(|(p, _)| p)
            .collect();
        let mut changes = Vec::new();
        let state = self.links.get_mut(&link).expect("just inserted");
        for p in wanted {
            match &mut state.cover {
                Some(c) => c.add(&p, &mut changes),
                None => delta.add.push(p),
            }
        }
        apply_changes(&mut delta, changes);
        delta
    }

    /// Everything `link` must be told from scratch (after its session was re-established):
    /// the patterns currently wanted through it, minimal cover applied for uplinks.
    pub fn told(&self, link: LinkId) -> Vec<String> {
        let Some(state) = self.links.get(&link) else {
            return Vec::new();
        };
        match &state.cover {
            Some(c) => c.advertised().map(str::to_string).collect(),
            None => self
                .holders
                .iter()
                .filter(|(_, hs)| hs.iter().any(|h| visible(link, state.kind, h.link, h.kind)))
                .map(|(p, _)| p)
                .collect(),
        }
    }

    /// Replaces the sending half of `link` (a new session of an uplink: `Some`; its session
    /// ended but its interest is kept: `None`). O(patterns it holds).
    pub fn set_target(&mut self, link: LinkId, target: Option<Arc<T>>) {
        self.generation += 1;
        let Some(state) = self.links.get_mut(&link) else {
            return;
        };
        state.target = target.clone();
        for p in &state.patterns {
            if let Some(hs) = self.holders.get_mut(p) {
                for h in hs.iter_mut().filter(|h| h.link == link) {
                    h.target = target.clone();
                }
            }
        }
    }

    /// Marks the interest of `link` unknown (QoS 1 publishes are routed to it whatever it
    /// holds) or known again.
    pub fn set_unknown(&mut self, link: LinkId, unknown: bool) {
        self.generation += 1;
        let Some(state) = self.links.get_mut(&link) else {
            return;
        };
        state.unknown = unknown;
        self.unknown.retain(|l| *l != link);
        if unknown {
            self.unknown.push(link);
        }
    }

    /// Removes `link` with all its patterns; returns what the others must be told.
    pub fn remove_link(&mut self, link: LinkId) -> Vec<Delta> {
        self.generation += 1;
        let Some(state) = self.links.get(&link) else {
            return Vec::new();
        };
        let patterns: Vec<String> = state.patterns.iter().cloned().collect();
        let deltas = self.unsubscribe(link, &patterns);
        self.links.remove(&link);
        self.listeners.retain(|l| *l != link);
        self.unknown.retain(|l| *l != link);
        deltas
    }

    /// `link` now holds `patterns` (valid and normalised; ones it holds already are ignored).
    /// Returns how many it holds and what the other links must be told.
    ///
    /// Errors: [`RelayError::LimitExceeded`] (nothing applied), [`RelayError::UnknownLink`].
    pub fn subscribe(
        &mut self,
        link: LinkId,
        patterns: &[String],
    ) -> Result<(usize, Vec<Delta>), RelayError> {
        self.generation += 1;
        let state = self.links.get(&link).ok_or(RelayError::UnknownLink(link))?;
        let mut new: Vec<&String> = patterns
            .iter()
            .filter(|p| !state.patterns.contains(*p))
            .collect();
        new.sort_unstable();
        new.dedup();
        if state.patterns.len() + new.len() > self.max_patterns {
            return Err(RelayError::LimitExceeded {
                held: state.patterns.len(),
                asked: new.len(),
                limit: self.max_patterns,
            });
        }
        let (kind, target) = (state.kind, state.target.clone());
        let mut out = Deltas::default();
        for p in new {
            let hs = self.holders.entry_or_insert_with(p, Vec::new);
            for &l in &self.listeners {
                let lk = self.links[&l].kind;
                if visible(l, lk, link, kind) && !hs.iter().any(|h| visible(l, lk, h.link, h.kind))
                {
                    out.tell(l, p, true);
                }
            }
            hs.push(Holder {
                link,
                kind,
                target: target.clone(),
            });
        }
        let state = self.links.get_mut(&link).expect("checked above");
        state.patterns.extend(patterns.iter().cloned());
        let held = state.patterns.len();
        Ok((held, out.finish(&mut self.links)))
    }

    /// `link` no longer holds `patterns` (unknown ones are ignored). Returns what the other
    /// links must be told.
    pub fn unsubscribe(&mut self, link: LinkId, patterns: &[String]) -> Vec<Delta> {
        self.generation += 1;
        let Some(state) = self.links.get_mut(&link) else {
            return Vec::new();
        };
        let kind = state.kind;
        let gone: Vec<String> = patterns
            .iter()
            .filter(|p| state.patterns.remove(*p))
            .cloned()
            .collect();
        let mut out = Deltas::default();
        for p in gone {
            let Some(hs) = self.holders.get_mut(&p) else {
                continue;
            };
            hs.retain(|h| h.link != link);
            for &l in &self.listeners {
                let lk = self.links[&l].kind;
                if visible(l, lk, link, kind) && !hs.iter().any(|h| visible(l, lk, h.link, h.kind))
                {
                    out.tell(l, &p, false);
                }
            }
            if hs.is_empty() {
                self.holders.remove(&p);
            }
        }
        out.finish(&mut self.links)
    }

    /// Appends to `out` (cleared first) where a publish on `topic` received from `from` goes:
    /// each link once, sorted by link. With `reliable` (QoS 1), links of unknown interest that
    /// `from` forwards to are included. `from` must be a link of this relay; else nothing.
    pub fn route(&self, from: LinkId, topic: &str, reliable: bool, out: &mut Vec<Route<T>>) {
        out.clear();
        let Some(f) = self.links.get(&from) else {
            return;
        };
        let fk = f.kind;
        self.holders.for_each_match(topic, |hs| {
            for h in hs {
                if routable(from, fk, h.link, h.kind) {
                    out.push(Route {
                        link: h.link,
                        kind: h.kind,
                        target: h.target.clone(),
                    });
                }
            }
        });
        if reliable {
            for &l in &self.unknown {
                let s = &self.links[&l];
                if routable(from, fk, l, s.kind) {
                    out.push(Route {
                        link: l,
                        kind: s.kind,
                        target: s.target.clone(),
                    });
                }
            }
        }
        if out.len() > 1 {
            out.sort_unstable_by_key(|r| r.link);
            out.dedup_by_key(|r| r.link);
        }
    }

    /// Whether any link but `from`'s own would receive a publish on `topic` from `from`.
    pub fn any_route(&self, from: LinkId, topic: &str) -> bool {
        let Some(f) = self.links.get(&from) else {
            return false;
        };
        let mut any = false;
        self.holders.for_each_match(topic, |hs| {
            any = any || hs.iter().any(|h| routable(from, f.kind, h.link, h.kind));
        });
        any
    }
}

/// Whether a publish from link `from` (of kind `fk`) may go to link `to` (kind `tk`).
fn routable(from: LinkId, fk: LinkKind, to: LinkId, tk: LinkKind) -> bool {
    if from == to {
        return fk == LinkKind::Client;
    }
    !same_group(from, to) && forwards(fk, tk)
}

/// Whether link `l` (kind `lk`) is told the interest of link `m` (kind `mk`): a publish from
/// `l` would be forwarded to `m`.
fn visible(l: LinkId, lk: LinkKind, m: LinkId, mk: LinkKind) -> bool {
    l != m && !same_group(l, m) && forwards(lk, mk)
}

/// Deltas being collected for several links, in the order of the first change for each.
#[derive(Default)]
struct Deltas {
    order: Vec<LinkId>,
    raw: HashMap<LinkId, Vec<(String, bool)>>,
}

impl Deltas {
    fn tell(&mut self, link: LinkId, pattern: &str, add: bool) {
        let v = self.raw.entry(link).or_insert_with(|| {
            self.order.push(link);
            Vec::new()
        });
        v.push((pattern.to_string(), add));
    }

    /// Passes each uplink's changes through its cover and groups them per link.
    fn finish<T>(mut self, links: &mut HashMap<LinkId, LinkState<T>>) -> Vec<Delta> {
        let mut out = Vec::with_capacity(self.order.len());
        for link in self.order {
            let raw = self.raw.remove(&link).unwrap_or_default();
            let mut d = Delta {
                link,
                ..Delta::default()
            };
            match links.get_mut(&link).and_then(|l| l.cover.as_mut()) {
                Some(c) => {
                    let mut changes = Vec::new();
                    for (p, add) in raw {
                        if add {
                            c.add(&p, &mut changes);
                        } else {
                            c.remove(&p, &mut changes);
                        }
                    }
                    apply_changes(&mut d, changes);
                }
                None => apply_changes(&mut d, raw),
            }
            if !d.add.is_empty() || !d.remove.is_empty() {
                out.push(d);
            }
        }
        out
    }
}

/// Folds an ordered list of (pattern, now wanted) into a delta: a pattern's last change wins,
/// additions are sent before withdrawals.
fn apply_changes(d: &mut Delta, changes: Vec<(String, bool)>) {
    let mut last: HashMap<String, bool> = HashMap::new();
    let mut order = Vec::new();
    for (p, on) in changes {
        if last.insert(p.clone(), on).is_none() {
            order.push(p);
        }
    }
    for p in order {
        match last[&p] {
            true => d.add.push(p),
            false => d.remove.push(p),
        }
    }
}

#[cfg(test)]
mod tests;
