//! The one-writer rule: only an actor writes its own entries (its G-/PN-Counter slots, the
//! dots it mints in OR-Sets, the registers it stamps). A replica therefore knows *exactly*
//! what exists of its own actor: whatever its store holds. A remote state that claims more
//! for the receiver's own actor than the receiver holds was not produced by it — it is forged
//! (Almeida et al. 2018, §4: each replica only inflates its own component of a join
//! semilattice; a join that inflates another's component is not an honest delta).
//!
//! What this cannot see: a forgery of a *third* actor's entries. Without per-actor
//! signatures the receiver holds no evidence of what that actor wrote (`docs/AUTH.md`,
//! threat model).

use super::{ActorId, Crdt, CrdtMap, DotSet, LwwRegister};

impl CrdtMap {
    /// The first key of `incoming` (in key order) whose value claims more for `me` than this
    /// store holds of it: a counter entry of `me` above ours, a dot of `me` (live or in the
    /// causal context) outside our context, a register stamped by `me` that orders after
    /// ours. `None` when `incoming` claims nothing of `me` we have not written.
    ///
    /// A key of another kind than ours is not judged here (the merge refuses it). Retired
    /// keys ([`CrdtMap::retire_dead`]) are judged against their kept value.
    pub fn forged_key<'a>(&self, incoming: &'a CrdtMap, me: &ActorId) -> Option<&'a str> {
        incoming
            .iter()
            .find(|(key, theirs)| self.claims_beyond(key, theirs, me))
            .map(|(key, _)| key.as_str())
    }

    /// Every key of `incoming` (in key order) that claims more for `me` than this store
    /// holds ([`CrdtMap::forged_key`] finds the first).
    pub fn forged_keys<'a>(&self, incoming: &'a CrdtMap, me: &ActorId) -> Vec<&'a str> {
        incoming
            .iter()
            .filter(|(key, theirs)| self.claims_beyond(key, theirs, me))
            .map(|(key, _)| key.as_str())
            .collect()
    }

    fn claims_beyond(&self, key: &str, theirs: &Crdt, me: &ActorId) -> bool {
        let empty_ctx = DotSet::new();
        let unset = LwwRegister::default();
        let ours = self.crdt(key).or_else(|| self.retired_value(key));
        match theirs {
            Crdt::GCounter(t) => {
                let mine = match ours {
                    Some(Crdt::GCounter(o)) => o.counts.get(me).copied().unwrap_or(0),
                    Some(_) => return false,
                    None => 0,
                };
                t.counts.get(me).is_some_and(|&c| c > mine)
            }
            Crdt::PnCounter(t) => {
                let (p, n) = match ours {
                    Some(Crdt::PnCounter(o)) => (
                        o.p.counts.get(me).copied().unwrap_or(0),
                        o.n.counts.get(me).copied().unwrap_or(0),
                    ),
                    Some(_) => return false,
                    None => (0, 0),
                };
                t.p.counts.get(me).is_some_and(|&c| c > p)
                    || t.n.counts.get(me).is_some_and(|&c| c > n)
            }
            Crdt::OrSet(t) => {
                let ctx = match ours {
                    Some(Crdt::OrSet(o)) => o.context(),
                    Some(_) => return false,
                    None => &empty_ctx,
                };
                let ranges_beyond =
                    t.context()
                        .iter_ranges()
                        .filter(|(a, _, _)| *a == me)
                        .any(|(a, lo, hi)| {
                            let mut one = DotSet::new();
                            one.insert_range(*a, lo, hi);
                            !ctx.covers(&one)
                        });
                ranges_beyond || t.live_dots().any(|d| d.actor == *me && !ctx.contains(d))
            }
            Crdt::Lww(t) => {
                if t.actor != *me {
                    return false;
                }
                let o = match ours {
                    Some(Crdt::Lww(o)) => o,
                    Some(_) => return false,
                    None => &unset,
                };
                (t.ts, &t.actor, t.deleted, &t.value) > (o.ts, &o.actor, o.deleted, &o.value)
            }
        }
    }
}
