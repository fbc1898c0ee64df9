//! Shared state over CRDTs (`docs/GOSSIP.md`): the keys the product itself keeps in the
//! replicated store, the client operations on named keys, and the mapping between the
//! gossip engine's messages ([`crate::gossip::Message`]) and the wire frames 0x70–0x74.
//!
//! Every cluster replicates one [`crate::crdt::CrdtMap`] per realm among its nodes (and its
//! bridge); the keys starting with `$` are the product's own:
//! - `$members` — OR-Set of the cluster's live nodes, element `"<node id hex> <ip:port>"`;
//! - `$meta/<node id hex>` — LWW-Register: the node's metadata (JSON: version, address,
//!   start time);
//! - `$rpc/<procedure>` — OR-Set of the node ids (hex) providing the procedure;
//! - `$sub/<pattern>` — OR-Set of the node ids (hex) whose clients subscribe to the pattern.
//!
//! Application keys are any other name (1–200 bytes, no leading `$`); clients reach them with
//! `put` / `get` / `update` through their node ([`crate::client::Client::crdt_update`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::auth::Action;
use crate::crdt::{CrdtError, Hlc, Kind, Op, Value};
use crate::gossip::Message;
use crate::wire::{self, Frame, NodeId};

/// Key of the cluster's membership OR-Set.
pub const MEMBERS_KEY: &str = "$members";
/// Prefix of node metadata registers.
pub const META_PREFIX: &str = "$meta/";
/// Prefix of the service registry OR-Sets.
pub const RPC_PREFIX: &str = "$rpc/";
/// Prefix of the per-pattern subscription OR-Sets.
pub const SUB_PREFIX: &str = "$sub/";
/// Longest application key, bytes.
pub const MAX_APP_KEY: usize = 200;
/// Procedure a client calls on its node to update a key (args: [`UpdateArgs`]).
pub const UPDATE_PROCEDURE: &str = "$crdt.update";
/// Procedure a client calls on its node to read a key (args: [`GetArgs`], result:
/// `Option<`[`WireValue`]`>`).
pub const GET_PROCEDURE: &str = "$crdt.get";

/// The CRDT actor id of this process's replicas: SHA-256 of the node id and a random number
/// drawn at start. Each start is a new replica, because a restarted process holds no state: with
/// the bare node id its first dots and counter entries would repeat those its previous run
/// already gossiped, and its peers would ignore them as already seen. (Counters gain one entry
/// per start, within `crdt::Limits::max_actors`.)
pub fn incarnation_actor(node_id: &NodeId) -> crate::crdt::ActorId {
    use sha2::Digest as _;
    let nonce: u64 = rand::random();
    let mut h = sha2::Sha256::new();
    h.update(node_id);
    h.update(nonce.to_be_bytes());
    crate::crdt::ActorId(h.finalize().into())
}

/// Lower-case hex of a node id.
pub fn hex_id(id: &NodeId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `$members` element of a node.
pub fn member_element(id: &NodeId, addr: std::net::SocketAddr) -> Bytes {
    Bytes::from(format!("{} {addr}", hex_id(id)))
}

/// Parses a `$members` element into (node id hex, address).
pub fn parse_member(elem: &[u8]) -> Option<(&str, std::net::SocketAddr)> {
    let s = std::str::from_utf8(elem).ok()?;
    let (id, addr) = s.split_once(' ')?;
    if id.len() != 64 {
        return None;
    }
    Some((id, addr.parse().ok()?))
}

/// Checks an application key: 1–[`MAX_APP_KEY`] bytes, no leading `$`, no control characters.
pub fn validate_app_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_APP_KEY {
        return Err(format!("key must be 1–{MAX_APP_KEY} bytes"));
    }
    if key.starts_with('$') {
        return Err("keys starting with '$' are reserved".into());
    }
    if key.chars().any(|c| c.is_control()) {
        return Err("key contains a control character".into());
    }
    Ok(())
}

/// Key of a bridge level store's set of children with members (`docs/GOSSIP.md`, "Across
/// levels").
pub const CLUSTERS_KEY: &str = "$clusters";

/// Checks a key of a state received from a peer: any application key; of the reserved
/// names (`$…`), only the system keys and with their kind — [`MEMBERS_KEY`] and
/// [`CLUSTERS_KEY`] OR-Sets, `$meta/<node id hex>` registers, `$rpc/<procedure>` and
/// `$sub/<pattern>` OR-Sets (non-empty names).
///
/// Errors: [`CrdtError::Reserved`] for any other `$` key, or a system key of another kind (a
/// peer creating `$rpc/p` as a counter first would make every later registration of `p` a
/// type mismatch).
pub fn check_remote_key(key: &str, kind: Kind) -> Result<(), CrdtError> {
    if !key.starts_with('$') {
        return Ok(());
    }
    let named = |prefix: &str| key.strip_prefix(prefix).is_some_and(|n| !n.is_empty());
    let ok = match kind {
        Kind::OrSet => {
            key == MEMBERS_KEY || key == CLUSTERS_KEY || named(RPC_PREFIX) || named(SUB_PREFIX)
        }
        Kind::Lww => key
            .strip_prefix(META_PREFIX)
            .is_some_and(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())),
        Kind::GCounter | Kind::PnCounter => false,
    };
    if ok {
        Ok(())
    } else {
        Err(CrdtError::Reserved {
            key: key.to_owned(),
        })
    }
}

/// The permission that governs writing `key` through a link bounded by a credential
/// (`docs/AUTH.md`, "Permissions"): an application key is `state` of the key, `$rpc/<p>` is
/// `register` of `p`, `$sub/<pattern>` is `subscribe` of the pattern. `None` for the
/// structural keys (`$members`, `$meta/…`, `$clusters`), which every member writes.
pub fn permission_of(key: &str) -> Option<(Action, &str)> {
    if !key.starts_with('$') {
        return Some((Action::State, key));
    }
    if let Some(p) = key.strip_prefix(RPC_PREFIX) {
        return Some((Action::Register, p));
    }
    key.strip_prefix(SUB_PREFIX).map(|p| (Action::Subscribe, p))
}

/// The rule for a key of a state from a link bounded by a credential (a bridge's child link,
/// a node's mesh peer): a reserved name must be a system key of its kind
/// ([`check_remote_key`]); through a link whose credential restricts something, the key must
/// be permitted ([`permission_of`]: `state` for an application key, `register` for
/// `$rpc/<p>`, `subscribe` for `$sub/<pattern>`). A denial is audited by
/// [`crate::auth::Grant::check`] and counted in `macula_permission_denied_total{action}`.
/// Errors: [`CrdtError::Reserved`], [`CrdtError::Denied`].
pub fn link_policy(
    grant: Option<&crate::auth::Grant>,
    key: &str,
    kind: Kind,
    metrics: &crate::metrics::Metrics,
) -> Result<(), CrdtError> {
    check_remote_key(key, kind)?;
    let (Some(g), Some((action, name))) = (grant, permission_of(key)) else {
        return Ok(());
    };
    g.check(action, name).map_err(|why| {
        metrics.permission_denied(action);
        CrdtError::Denied {
            key: key.to_owned(),
            why,
        }
    })
}

/// Arguments of [`UPDATE_PROCEDURE`] (MessagePack map).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpdateArgs {
    /// The key.
    pub key: String,
    /// `"add"`, `"remove"` (OR-Set), `"put"` (LWW-Register), `"increment"` (G-Counter),
    /// `"add_counter"` (PN-Counter), `"delete"` (any kind: removes the key's content).
    pub op: String,
    /// The element or value (OR-Set, register).
    #[serde(with = "serde_bytes", default)]
    pub value: Vec<u8>,
    /// The amount (counters).
    #[serde(default)]
    pub n: i64,
}

impl UpdateArgs {
    /// The args for `op` on `key`.
    pub fn new(key: &str, op: &Op) -> UpdateArgs {
        let (name, value, n) = match op {
            Op::SetAdd(v) => ("add", v.to_vec(), 0),
            Op::SetRemove(v) => ("remove", v.to_vec(), 0),
            Op::Put(v) => ("put", v.to_vec(), 0),
            Op::Increment(k) => (
                "increment",
                Vec::new(),
                i64::try_from(*k).unwrap_or(i64::MAX),
            ),
            Op::Add(k) => ("add_counter", Vec::new(), *k),
            Op::Delete => ("delete", Vec::new(), 0),
        };
        UpdateArgs {
            key: key.into(),
            op: name.into(),
            value,
            n,
        }
    }

    /// The operation. Errors: an unknown op name or a negative increment.
    pub fn op(&self) -> Result<Op, String> {
        let v = Bytes::from(self.value.clone());
        Ok(match self.op.as_str() {
            "add" => Op::SetAdd(v),
            "remove" => Op::SetRemove(v),
            "put" => Op::Put(v),
            "increment" => Op::Increment(
                u64::try_from(self.n).map_err(|_| "increment must be ≥ 0".to_string())?,
            ),
            "add_counter" => Op::Add(self.n),
            "delete" => Op::Delete,
            other => return Err(format!("unknown op {other:?}")),
        })
    }
}

/// Arguments of [`GET_PROCEDURE`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GetArgs {
    /// The key.
    pub key: String,
}

/// A [`Value`] as [`GET_PROCEDURE`] returns it (MessagePack).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum WireValue {
    /// OR-Set elements.
    Set(Vec<serde_bytes::ByteBuf>),
    /// Register value and HLC timestamp (wall ms, logical).
    Register(serde_bytes::ByteBuf, u64, u32),
    /// G-Counter value.
    GCounter(u64),
    /// PN-Counter value.
    PnCounter(i64),
}

impl From<&Value> for WireValue {
    fn from(v: &Value) -> Self {
        match v {
            Value::Set(e) => WireValue::Set(
                e.iter()
                    .map(|b| serde_bytes::ByteBuf::from(b.to_vec()))
                    .collect(),
            ),
            Value::Register(b, ts) => WireValue::Register(
                serde_bytes::ByteBuf::from(b.to_vec()),
                ts.wall_ms,
                ts.logical,
            ),
            Value::GCounter(n) => WireValue::GCounter(*n),
            Value::PnCounter(n) => WireValue::PnCounter(*n),
        }
    }
}

impl From<WireValue> for Value {
    fn from(v: WireValue) -> Self {
        match v {
            WireValue::Set(e) => {
                Value::Set(e.into_iter().map(|b| Bytes::from(b.into_vec())).collect())
            }
            WireValue::Register(b, wall_ms, logical) => {
                Value::Register(Bytes::from(b.into_vec()), Hlc { wall_ms, logical })
            }
            WireValue::GCounter(n) => Value::GCounter(n),
            WireValue::PnCounter(n) => Value::PnCounter(n),
        }
    }
}

/// A [`Value`] as JSON (for the admin `/state` endpoint): sets as arrays of strings (UTF-8,
/// lossy), registers as `{value, ts_ms}`, counters as numbers.
pub fn value_json(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::Set(e) => json!(e
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()),
        Value::Register(b, ts) => {
            json!({"value": String::from_utf8_lossy(b), "ts_ms": ts.wall_ms})
        }
        Value::GCounter(n) => json!(n),
        Value::PnCounter(n) => json!(n),
    }
}

/// A whole store as a JSON object key → value.
pub fn store_json(store: &crate::crdt::CrdtMap) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, _) in store.iter() {
        if let Some(v) = store.get(k) {
            m.insert(k.clone(), value_json(&v));
        }
    }
    serde_json::Value::Object(m)
}

/// The wire frame carrying `msg` for store `scope` of `realm`, sent by `sender`.
pub fn to_frame(realm: &str, scope: &str, sender: NodeId, msg: Message) -> Frame {
    let (realm, scope) = (realm.to_string(), scope.to_string());
    match msg {
        Message::Push { part, parts, state } => Frame::GossipPush(wire::GossipPush {
            realm,
            scope,
            sender,
            part,
            parts,
            state,
        }),
        Message::Pull {
            round,
            from_key,
            to_key,
            digest,
        } => Frame::GossipPull(wire::GossipPull {
            realm,
            scope,
            sender,
            round,
            from_key,
            to_key,
            digest,
        }),
        Message::PullReply {
            round,
            from_key,
            to_key,
            state,
            wants,
            part,
            parts,
        } => Frame::GossipPullReply(wire::GossipPullReply {
            realm,
            scope,
            sender,
            round,
            from_key,
            to_key,
            state,
            wants,
            part,
            parts,
        }),
        Message::Sync {
            round,
            state,
            part,
            parts,
        } => Frame::GossipSync(wire::GossipSync {
            realm,
            scope,
            sender,
            round,
            state,
            part,
            parts,
        }),
        Message::SyncReply { round, merged } => Frame::GossipSyncReply(wire::GossipSyncReply {
            realm,
            scope,
            sender,
            round,
            merged,
        }),
    }
}

/// A received gossip frame: its realm, scope, claimed sender and engine message.
pub struct Incoming {
    /// The realm.
    pub realm: String,
    /// The store.
    pub scope: String,
    /// The `sender` field (checked against the link's authenticated peer by the caller).
    pub sender: NodeId,
    /// The message.
    pub msg: Message,
}

/// Decodes a gossip frame read from a link and checks that its `sender` is `peer` (the link's
/// authenticated node). `Ok(None)` for a frame that is not a gossip frame. Refusals are counted
/// (`bad_frame`, `forged`) and returned as the error frame to answer.
pub fn decode_gossip(
    raw: &wire::RawFrame,
    peer: &NodeId,
    metrics: &crate::metrics::GossipMetrics,
) -> Result<Option<Incoming>, (wire::ErrorCode, String)> {
    let frame = raw.decode().map_err(|e| {
        metrics.refused("bad_frame");
        (e.code(), e.to_string())
    })?;
    let Some(inc) = from_frame(frame) else {
        return Ok(None);
    };
    if inc.sender != *peer {
        metrics.refused("forged");
        return Err((
            wire::ErrorCode::Protocol,
            "gossip sender is not the link's peer".into(),
        ));
    }
    Ok(Some(inc))
}

/// Splits a gossip frame into its parts; `None` for any other frame.
pub fn from_frame(f: Frame) -> Option<Incoming> {
    let (realm, scope, sender, msg) = match f {
        Frame::GossipPush(m) => (
            m.realm,
            m.scope,
            m.sender,
            Message::Push {
                part: m.part,
                parts: m.parts,
                state: m.state,
            },
        ),
        Frame::GossipPull(m) => (
            m.realm,
            m.scope,
            m.sender,
            Message::Pull {
                round: m.round,
                from_key: m.from_key,
                to_key: m.to_key,
                digest: m.digest,
            },
        ),
        Frame::GossipPullReply(m) => (
            m.realm,
            m.scope,
            m.sender,
            Message::PullReply {
                round: m.round,
                from_key: m.from_key,
                to_key: m.to_key,
                state: m.state,
                wants: m.wants,
                part: m.part,
                parts: m.parts,
            },
        ),
        Frame::GossipSync(m) => (
            m.realm,
            m.scope,
            m.sender,
            Message::Sync {
                round: m.round,
                state: m.state,
                part: m.part,
                parts: m.parts,
            },
        ),
        Frame::GossipSyncReply(m) => (
            m.realm,
            m.scope,
            m.sender,
            Message::SyncReply {
                round: m.round,
                merged: m.merged,
            },
        ),
        _ => return None,
    };
    Some(Incoming {
        realm,
        scope,
        sender,
        msg,
    })
}

/// The engine configuration from the process configuration.
pub fn engine_config(cfg: &crate::config::Config) -> crate::gossip::GossipConfig {
    let g = &cfg.gossip;
    crate::gossip::GossipConfig {
        push_interval: std::time::Duration::from_millis(g.push_interval_ms),
        fanout: g.fanout,
        anti_entropy_interval: std::time::Duration::from_millis(g.anti_entropy_interval_ms),
        push_rounds: g.push_rounds,
        max_message_bytes: g
            .max_message_bytes
            .min((cfg.limits.max_frame_size as usize).saturating_sub(1024))
            .max(512),
        limits: cfg.crdt.limits(),
    }
}

/// Wall-clock ms since the Unix epoch (for the HLC).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod unit {
    use super::*;

    /// Issue 12's probe planted a `$rpc` entry routing a client's call to itself. A client
    /// cannot write any `$` key; a peer may send only the system keys, with their kind.
    #[test]
    fn reserved_keys_are_refused_to_clients_and_checked_from_peers() {
        assert!(validate_app_key("$rpc/billing.charge").is_err());
        assert!(validate_app_key("$members").is_err());
        assert!(validate_app_key("billing.charge").is_ok());
        let id = "ab".repeat(32);
        for (key, kind) in [
            ("$members", Kind::OrSet),
            ("$clusters", Kind::OrSet),
            ("$rpc/svc.p", Kind::OrSet),
            ("$sub/a.*", Kind::OrSet),
            (&*format!("$meta/{id}"), Kind::Lww),
            ("app", Kind::GCounter),
        ] {
            assert_eq!(check_remote_key(key, kind), Ok(()), "{key}");
        }
        for (key, kind) in [
            ("$rpc/svc.p", Kind::GCounter),
            ("$members", Kind::Lww),
            ("$rpc/", Kind::OrSet),
            ("$meta/xyz", Kind::Lww),
            ("$evil", Kind::OrSet),
        ] {
            assert!(
                matches!(check_remote_key(key, kind), Err(CrdtError::Reserved { .. })),
                "{key}"
            );
        }
        assert_eq!(permission_of("a.b"), Some((Action::State, "a.b")));
        assert_eq!(permission_of("$rpc/p"), Some((Action::Register, "p")));
        assert_eq!(permission_of("$sub/x.*"), Some((Action::Subscribe, "x.*")));
        assert_eq!(permission_of("$members"), None);
    }
}
