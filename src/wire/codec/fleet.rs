//! Serde shapes of the fleet bodies (keys are the field names) and their decode-time
//! validation: ids of exactly 32 bytes, non-empty bounded strings, weights in 1..=1000,
//! known statuses, at most [`MAX_FLEET_MEMBERS`] members.

use serde::{Deserialize, Serialize};

use super::bad_len;
use crate::wire::fleet::{
    FleetMember, FleetView, MemberStatus, Redirect, MAX_FLEET_MEMBERS, MAX_FLEET_STRING,
};
use crate::wire::{NodeId, WireError};

#[derive(Serialize)]
pub(super) struct RedirectSer<'a> {
    #[serde(with = "serde_bytes")]
    owner: &'a [u8],
    addr: &'a str,
    delay_ms: u32,
    reason: &'a str,
}

impl<'a> From<&'a Redirect> for RedirectSer<'a> {
    fn from(m: &'a Redirect) -> Self {
        RedirectSer {
            owner: &m.owner,
            addr: &m.addr,
            delay_ms: m.delay_ms,
            reason: &m.reason,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct RedirectDe<'a> {
    #[serde(with = "serde_bytes", borrow)]
    owner: &'a [u8],
    addr: String,
    delay_ms: u32,
    reason: String,
}

impl RedirectDe<'_> {
    pub(super) fn check(self) -> Result<Redirect, WireError> {
        Ok(Redirect {
            owner: id("owner", self.owner)?,
            addr: string("addr", self.addr, false)?,
            delay_ms: self.delay_ms,
            reason: string("reason", self.reason, true)?,
        })
    }
}

#[derive(Serialize)]
struct MemberSer<'a> {
    #[serde(with = "serde_bytes")]
    id: &'a [u8],
    addr: &'a str,
    weight: u32,
    incarnation: u64,
    status: u8,
}

#[derive(Serialize)]
pub(super) struct FleetViewSer<'a> {
    fleet: &'a str,
    config: u64,
    #[serde(with = "serde_bytes")]
    sender: &'a [u8],
    members: Vec<MemberSer<'a>>,
}

impl<'a> From<&'a FleetView> for FleetViewSer<'a> {
    fn from(m: &'a FleetView) -> Self {
        FleetViewSer {
            fleet: &m.fleet,
            config: m.config,
            sender: &m.sender,
            members: m
                .members
                .iter()
                .map(|x| MemberSer {
                    id: &x.id,
                    addr: &x.addr,
                    weight: x.weight,
                    incarnation: x.incarnation,
                    status: x.status as u8,
                })
                .collect(),
        }
    }
}

#[derive(Deserialize)]
struct MemberDe<'a> {
    #[serde(with = "serde_bytes", borrow)]
    id: &'a [u8],
    addr: String,
    weight: u32,
    incarnation: u64,
    status: u8,
}

/// Refuses a `members` array longer than [`MAX_FLEET_MEMBERS`] before allocating it.
fn bounded_members<'de, D>(d: D) -> Result<Vec<MemberDe<'de>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<MemberDe<'de>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "an array of at most {MAX_FLEET_MEMBERS} members")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(m) = seq.next_element()? {
                if out.len() == MAX_FLEET_MEMBERS {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_FLEET_MEMBERS} members"
                    )));
                }
                out.push(m);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V)
}

#[derive(Deserialize)]
pub(super) struct FleetViewDe<'a> {
    fleet: String,
    config: u64,
    #[serde(with = "serde_bytes", borrow)]
    sender: &'a [u8],
    #[serde(borrow, deserialize_with = "bounded_members")]
    members: Vec<MemberDe<'a>>,
}

impl FleetViewDe<'_> {
    pub(super) fn check(self) -> Result<FleetView, WireError> {
        let members = self
            .members
            .into_iter()
            .map(|m| {
                if !(1..=1000).contains(&m.weight) {
                    return Err(WireError::InvalidField {
                        field: "weight",
                        reason: format!("{} is outside 1..=1000", m.weight),
                    });
                }
                Ok(FleetMember {
                    id: id("id", m.id)?,
                    addr: string("addr", m.addr, false)?,
                    weight: m.weight,
                    incarnation: m.incarnation,
                    status: MemberStatus::from_u8(m.status).ok_or_else(|| {
                        WireError::InvalidField {
                            field: "status",
                            reason: format!("unknown status {}", m.status),
                        }
                    })?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FleetView {
            fleet: string("fleet", self.fleet, false)?,
            config: self.config,
            sender: id("sender", self.sender)?,
            members,
        })
    }
}

fn id(field: &'static str, b: &[u8]) -> Result<NodeId, WireError> {
    b.try_into().map_err(|_| bad_len(field, 32, b.len()))
}

fn string(field: &'static str, s: String, may_be_empty: bool) -> Result<String, WireError> {
    if (s.is_empty() && !may_be_empty) || s.len() > MAX_FLEET_STRING {
        return Err(WireError::InvalidField {
            field,
            reason: format!("length {} outside 1..={MAX_FLEET_STRING}", s.len()),
        });
    }
    Ok(s)
}
