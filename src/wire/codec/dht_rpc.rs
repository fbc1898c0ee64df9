//! Serde shapes of the DHT and RPC bodies (keys are the field names) and their decode-time
//! validation: ids of exactly 32 bytes, bounded lists and values, and exactly one of
//! `ok` / `error` in a reply. Values, call arguments and results decode as zero-copy slices
//! of the frame.

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::bad_len;
use crate::wire::dht_rpc::{
    BridgePath, Call, FindNode, FindNodeReply, FindValue, FindValueReply, Register, Reply,
    RpcError, Store, StoreAck, Unregister, WireContact, WireRecord, MAX_CONTACTS, MAX_DHT_VALUE,
    MAX_PATH, MAX_PROCEDURES, MAX_RECORDS,
};
use crate::wire::{MessageType, NodeId, WireError};

// ---- encoding: borrowed views of the public structs ----

#[derive(Serialize)]
pub(super) struct ContactSer<'a> {
    #[serde(with = "serde_bytes")]
    node_id: &'a [u8],
    addr: &'a str,
}

impl<'a> From<&'a WireContact> for ContactSer<'a> {
    fn from(c: &'a WireContact) -> Self {
        ContactSer {
            node_id: &c.node_id,
            addr: &c.addr,
        }
    }
}

#[derive(Serialize)]
pub(super) struct FindNodeSer<'a> {
    correlation_id: u64,
    #[serde(with = "serde_bytes")]
    target: &'a [u8],
    sender: ContactSer<'a>,
}

impl<'a> From<&'a FindNode> for FindNodeSer<'a> {
    fn from(m: &'a FindNode) -> Self {
        FindNodeSer {
            correlation_id: m.correlation_id,
            target: &m.target,
            sender: (&m.sender).into(),
        }
    }
}

#[derive(Serialize)]
pub(super) struct FindNodeReplySer<'a> {
    correlation_id: u64,
    #[serde(serialize_with = "ser_contacts")]
    nodes: &'a [WireContact],
}

impl<'a> From<&'a FindNodeReply> for FindNodeReplySer<'a> {
    fn from(m: &'a FindNodeReply) -> Self {
        FindNodeReplySer {
            correlation_id: m.correlation_id,
            nodes: &m.nodes,
        }
    }
}

#[derive(Serialize)]
pub(super) struct StoreSer<'a> {
    correlation_id: u64,
    #[serde(with = "serde_bytes")]
    key: &'a [u8],
    #[serde(with = "serde_bytes")]
    value: &'a [u8],
    ttl_ms: u32,
    #[serde(with = "serde_bytes")]
    publisher: &'a [u8],
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

impl<'a> From<&'a Store> for StoreSer<'a> {
    fn from(m: &'a Store) -> Self {
        StoreSer {
            correlation_id: m.correlation_id,
            key: &m.key,
            value: &m.value,
            ttl_ms: m.ttl_ms,
            publisher: &m.publisher,
            name: m.name.as_deref(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct StoreAckMsg {
    correlation_id: u64,
    stored: bool,
}

impl From<&StoreAck> for StoreAckMsg {
    fn from(m: &StoreAck) -> Self {
        StoreAckMsg {
            correlation_id: m.correlation_id,
            stored: m.stored,
        }
    }
}

impl StoreAckMsg {
    pub(super) fn check(self) -> StoreAck {
        StoreAck {
            correlation_id: self.correlation_id,
            stored: self.stored,
        }
    }
}

#[derive(Serialize)]
pub(super) struct FindValueSer<'a> {
    correlation_id: u64,
    #[serde(with = "serde_bytes")]
    key: &'a [u8],
    sender: ContactSer<'a>,
    #[serde(serialize_with = "ser_ids", skip_serializing_if = "<[_]>::is_empty")]
    path: &'a [NodeId],
}

impl<'a> From<&'a FindValue> for FindValueSer<'a> {
    fn from(m: &'a FindValue) -> Self {
        FindValueSer {
            correlation_id: m.correlation_id,
            key: &m.key,
            sender: (&m.sender).into(),
            path: &m.path,
        }
    }
}

#[derive(Serialize)]
struct RecordSer<'a> {
    #[serde(with = "serde_bytes")]
    value: &'a [u8],
    #[serde(with = "serde_bytes")]
    publisher: &'a [u8],
    ttl_ms: u32,
}

#[derive(Serialize)]
pub(super) struct FindValueReplySer<'a> {
    correlation_id: u64,
    #[serde(
        serialize_with = "ser_records",
        skip_serializing_if = "<[_]>::is_empty"
    )]
    values: &'a [WireRecord],
    #[serde(
        serialize_with = "ser_contacts",
        skip_serializing_if = "<[_]>::is_empty"
    )]
    nodes: &'a [WireContact],
    #[serde(skip_serializing_if = "is_zero")]
    depth: u8,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

impl<'a> From<&'a FindValueReply> for FindValueReplySer<'a> {
    fn from(m: &'a FindValueReply) -> Self {
        FindValueReplySer {
            correlation_id: m.correlation_id,
            values: &m.values,
            nodes: &m.nodes,
            depth: m.depth,
        }
    }
}

#[derive(Serialize)]
pub(super) struct CallSer<'a> {
    call_id: u64,
    procedure: &'a str,
    #[serde(with = "serde_bytes")]
    args: &'a [u8],
    timeout_ms: u32,
    #[serde(with = "serde_bytes")]
    origin: &'a [u8],
    hops: u8,
    #[serde(with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    target: Option<&'a [u8]>,
}

impl<'a> From<&'a Call> for CallSer<'a> {
    fn from(m: &'a Call) -> Self {
        CallSer {
            call_id: m.call_id,
            procedure: &m.procedure,
            args: &m.args,
            timeout_ms: m.timeout_ms,
            origin: &m.origin,
            hops: m.hops,
            target: m.target.as_ref().map(|t| &t[..]),
        }
    }
}

#[derive(Serialize)]
struct RpcErrorSer<'a> {
    code: u16,
    message: &'a str,
}

#[derive(Serialize)]
pub(super) struct ReplySer<'a> {
    call_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<&'a serde_bytes::Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<RpcErrorSer<'a>>,
}

impl<'a> From<&'a Reply> for ReplySer<'a> {
    fn from(m: &'a Reply) -> Self {
        let (ok, error) = match &m.result {
            Ok(b) => (Some(serde_bytes::Bytes::new(b)), None),
            Err(e) => (
                None,
                Some(RpcErrorSer {
                    code: e.code,
                    message: &e.message,
                }),
            ),
        };
        ReplySer {
            call_id: m.call_id,
            ok,
            error,
        }
    }
}

/// Body of `register` and `unregister`.
#[derive(Serialize)]
pub(super) struct ProceduresSer<'a> {
    correlation_id: u64,
    procedures: &'a [String],
}

impl<'a> From<&'a Register> for ProceduresSer<'a> {
    fn from(m: &'a Register) -> Self {
        ProceduresSer {
            correlation_id: m.correlation_id,
            procedures: &m.procedures,
        }
    }
}

impl<'a> From<&'a Unregister> for ProceduresSer<'a> {
    fn from(m: &'a Unregister) -> Self {
        ProceduresSer {
            correlation_id: m.correlation_id,
            procedures: &m.procedures,
        }
    }
}

fn ser_contacts<S: serde::Serializer>(list: &&[WireContact], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(ContactSer::from))
}

fn ser_ids<S: serde::Serializer>(list: &&[NodeId], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(|id| serde_bytes::Bytes::new(id)))
}

fn ser_records<S: serde::Serializer>(list: &&[WireRecord], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(|r| RecordSer {
        value: &r.value,
        publisher: &r.publisher,
        ttl_ms: r.ttl_ms,
    }))
}

// ---- decoding: borrowed shapes, then `check` validates and builds the public struct ----

#[derive(Deserialize)]
pub(super) struct ContactDe<'a> {
    #[serde(with = "serde_bytes", borrow)]
    node_id: &'a [u8],
    addr: String,
}

impl ContactDe<'_> {
    fn check(self) -> Result<WireContact, WireError> {
        Ok(WireContact {
            node_id: id32("node_id", self.node_id)?,
            addr: self.addr,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct FindNodeDe<'a> {
    correlation_id: u64,
    #[serde(with = "serde_bytes", borrow)]
    target: &'a [u8],
    #[serde(borrow)]
    sender: ContactDe<'a>,
}

impl FindNodeDe<'_> {
    pub(super) fn check(self) -> Result<FindNode, WireError> {
        Ok(FindNode {
            correlation_id: self.correlation_id,
            target: id32("target", self.target)?,
            sender: self.sender.check()?,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct FindNodeReplyDe<'a> {
    correlation_id: u64,
    #[serde(borrow)]
    nodes: Bounded<ContactDe<'a>, MAX_CONTACTS>,
}

impl FindNodeReplyDe<'_> {
    pub(super) fn check(self) -> Result<FindNodeReply, WireError> {
        Ok(FindNodeReply {
            correlation_id: self.correlation_id,
            nodes: contacts(self.nodes.0)?,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct StoreDe<'a> {
    correlation_id: u64,
    #[serde(with = "serde_bytes", borrow)]
    key: &'a [u8],
    #[serde(with = "serde_bytes", borrow)]
    value: &'a [u8],
    ttl_ms: u32,
    #[serde(with = "serde_bytes", borrow)]
    publisher: &'a [u8],
    #[serde(default)]
    name: Option<String>,
}

impl StoreDe<'_> {
    pub(super) fn check(self, frame: &Bytes) -> Result<Store, WireError> {
        Ok(Store {
            correlation_id: self.correlation_id,
            key: id32("key", self.key)?,
            value: dht_value(frame, self.value)?,
            ttl_ms: self.ttl_ms,
            publisher: id32("publisher", self.publisher)?,
            name: match self.name {
                Some(n) if n.len() > crate::rpc::MAX_PROCEDURE_LEN => {
                    return Err(WireError::InvalidField {
                        field: "name",
                        reason: "longer than a procedure name".into(),
                    })
                }
                n => n,
            },
        })
    }
}

#[derive(Deserialize)]
pub(super) struct FindValueDe<'a> {
    correlation_id: u64,
    #[serde(with = "serde_bytes", borrow)]
    key: &'a [u8],
    #[serde(borrow)]
    sender: ContactDe<'a>,
    #[serde(default, borrow)]
    path: Option<Bounded<&'a serde_bytes::Bytes, MAX_PATH>>,
}

impl FindValueDe<'_> {
    pub(super) fn check(self) -> Result<FindValue, WireError> {
        let path = self.path.map(|b| b.0).unwrap_or_default();
        Ok(FindValue {
            correlation_id: self.correlation_id,
            key: id32("key", self.key)?,
            sender: self.sender.check()?,
            path: path
                .into_iter()
                .map(|id| id32("path", id))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[derive(Serialize)]
pub(super) struct BridgePathSer<'a> {
    #[serde(serialize_with = "ser_ids")]
    path: &'a [NodeId],
}

impl<'a> From<&'a BridgePath> for BridgePathSer<'a> {
    fn from(m: &'a BridgePath) -> Self {
        BridgePathSer { path: &m.path }
    }
}

#[derive(Deserialize)]
pub(super) struct BridgePathDe<'a> {
    #[serde(borrow)]
    path: Bounded<&'a serde_bytes::Bytes, MAX_PATH>,
}

impl BridgePathDe<'_> {
    pub(super) fn check(self) -> Result<BridgePath, WireError> {
        if self.path.0.is_empty() {
            return Err(WireError::InvalidField {
                field: "path",
                reason: "empty (the sender comes first)".into(),
            });
        }
        Ok(BridgePath {
            path: self
                .path
                .0
                .into_iter()
                .map(|id| id32("path", id))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[derive(Deserialize)]
struct RecordDe<'a> {
    #[serde(with = "serde_bytes", borrow)]
    value: &'a [u8],
    #[serde(with = "serde_bytes", borrow)]
    publisher: &'a [u8],
    ttl_ms: u32,
}

#[derive(Deserialize)]
pub(super) struct FindValueReplyDe<'a> {
    correlation_id: u64,
    #[serde(default, borrow)]
    values: Option<Bounded<RecordDe<'a>, MAX_RECORDS>>,
    #[serde(default, borrow)]
    nodes: Option<Bounded<ContactDe<'a>, MAX_CONTACTS>>,
    #[serde(default)]
    depth: u8,
}

impl FindValueReplyDe<'_> {
    pub(super) fn check(self, frame: &Bytes) -> Result<FindValueReply, WireError> {
        let values = self.values.map(|b| b.0).unwrap_or_default();
        let values = values
            .into_iter()
            .map(|r| {
                Ok(WireRecord {
                    value: dht_value(frame, r.value)?,
                    publisher: id32("publisher", r.publisher)?,
                    ttl_ms: r.ttl_ms,
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(FindValueReply {
            correlation_id: self.correlation_id,
            values,
            nodes: contacts(self.nodes.map(|b| b.0).unwrap_or_default())?,
            depth: self.depth,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct CallDe<'a> {
    call_id: u64,
    procedure: String,
    #[serde(with = "serde_bytes", borrow)]
    args: &'a [u8],
    timeout_ms: u32,
    #[serde(with = "serde_bytes", borrow)]
    origin: &'a [u8],
    hops: u8,
    #[serde(default, borrow)]
    target: Option<&'a serde_bytes::Bytes>,
}

impl CallDe<'_> {
    pub(super) fn check(self, frame: &Bytes) -> Result<Call, WireError> {
        Ok(Call {
            call_id: self.call_id,
            procedure: self.procedure,
            args: frame.slice_ref(self.args),
            timeout_ms: self.timeout_ms,
            origin: id32("origin", self.origin)?,
            hops: self.hops,
            target: self.target.map(|t| id32("target", t)).transpose()?,
        })
    }
}

#[derive(Deserialize)]
struct RpcErrorDe {
    code: u16,
    message: String,
}

#[derive(Deserialize)]
pub(super) struct ReplyDe<'a> {
    call_id: u64,
    #[serde(default, borrow)]
    ok: Option<&'a serde_bytes::Bytes>,
    #[serde(default)]
    error: Option<RpcErrorDe>,
}

impl ReplyDe<'_> {
    pub(super) fn check(self, frame: &Bytes) -> Result<Reply, WireError> {
        let result = match (self.ok, self.error) {
            (Some(ok), None) => Ok(frame.slice_ref(ok)),
            (None, Some(e)) => Err(RpcError {
                code: e.code,
                message: e.message,
            }),
            (ok, _) => {
                return Err(WireError::Malformed {
                    msg_type: MessageType::Reply as u8,
                    reason: if ok.is_some() {
                        "reply carries both `ok` and `error`".into()
                    } else {
                        "reply carries neither `ok` nor `error`".into()
                    },
                })
            }
        };
        Ok(Reply {
            call_id: self.call_id,
            result,
        })
    }
}

/// Body of `register` and `unregister`.
#[derive(Deserialize)]
pub(super) struct ProceduresDe {
    correlation_id: u64,
    procedures: Bounded<String, MAX_PROCEDURES>,
}

impl ProceduresDe {
    pub(super) fn register(self) -> Register {
        Register {
            correlation_id: self.correlation_id,
            procedures: self.procedures.0,
        }
    }

    pub(super) fn unregister(self) -> Unregister {
        Unregister {
            correlation_id: self.correlation_id,
            procedures: self.procedures.0,
        }
    }
}

/// An array of at most `N` items. A longer array fails to deserialize (→ `Malformed`)
/// as soon as its header is read, before any item is decoded or memory reserved for it.
pub(super) struct Bounded<T, const N: usize>(Vec<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Bounded<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(BoundedVisitor::<T, N>(PhantomData))
    }
}

struct BoundedVisitor<T, const N: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for BoundedVisitor<T, N> {
    type Value = Bounded<T, N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of at most {N} items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let hint = seq.size_hint().unwrap_or(0);
        if hint > N {
            return Err(de::Error::invalid_length(hint, &self));
        }
        let mut out = Vec::with_capacity(hint);
        while let Some(item) = seq.next_element()? {
            if out.len() == N {
                return Err(de::Error::invalid_length(N + 1, &self));
            }
            out.push(item);
        }
        Ok(Bounded(out))
    }
}

fn id32(field: &'static str, b: &[u8]) -> Result<NodeId, WireError> {
    b.try_into().map_err(|_| bad_len(field, 32, b.len()))
}

fn contacts(list: Vec<ContactDe<'_>>) -> Result<Vec<WireContact>, WireError> {
    list.into_iter().map(ContactDe::check).collect()
}

/// A DHT value as a zero-copy slice of `frame`; longer than [`MAX_DHT_VALUE`] → `InvalidField`.
fn dht_value(frame: &Bytes, v: &[u8]) -> Result<Bytes, WireError> {
    if v.len() > MAX_DHT_VALUE {
        return Err(WireError::InvalidField {
            field: "value",
            reason: format!("{} bytes exceeds the maximum of {MAX_DHT_VALUE}", v.len()),
        });
    }
    Ok(frame.slice_ref(v))
}
