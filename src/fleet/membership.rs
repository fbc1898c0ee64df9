//! Fleet membership with a suspicion-based failure detector: a pure state machine, driven
//! by the bridge's fleet task (`src/bridge/fleet.rs`), that is told what it hears and when
//! time passes, and answers with status changes.
//!
//! Design after SWIM (Das, Gupta & Motivala, "SWIM: Scalable Weakly-consistent
//! Infection-style Process Group Membership Protocol", DSN 2002, §4.2 suspicion and §4.3
//! incarnation numbers), with the direct probe replaced by the peer link every worker keeps
//! with every other (it carries a [`FleetView`] every second, which is the heartbeat):
//!
//! - A member not heard from directly for `suspect_after` becomes **Suspect** here, and the
//!   suspicion spreads with this worker's view.
//! - A suspected member that is alive hears of the suspicion through any worker it is still
//!   linked to and **refutes** it by raising its incarnation; `Alive` at a higher incarnation
//!   overrides `Suspect` everywhere. A link broken between two workers therefore does not
//!   evict a worker the others still reach.
//! - A suspicion not refuted within `suspicion_timeout` is confirmed: **Dead**. A dead worker
//!   is thus declared within `suspect_after + suspicion_timeout` of its last sign of life
//!   (3 s + 2 s by default), wherever it died.
//! - **Draining** is announced by the member itself (with a new incarnation) and removes it
//!   from ownership while it still forwards.
//! - Dead members are kept for `dead_retention` (so stale gossip cannot revive them) and then
//!   forgotten; at most [`MAX_FLEET_MEMBERS`] are known, so remote views cannot grow the table
//!   without bound.
//!
//! Incarnations start at the process's start time in milliseconds, so a restarted worker
//! (same id, from its data directory) supersedes what the fleet remembers of its previous
//! run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::wire::{FleetMember, MemberStatus, NodeId, MAX_FLEET_MEMBERS};

use super::hash::Worker;

/// Timing of the failure detector (`[bridge.fleet]`, `docs/CONFIG.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectorConfig {
    /// Silence after which a member is suspected. Default 3 s: three missed views.
    pub suspect_after: Duration,
    /// Time a suspicion has to be refuted before the member is declared dead. Default 2 s.
    pub suspicion_timeout: Duration,
    /// How long a dead member is remembered. Default 60 s.
    pub dead_retention: Duration,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            suspect_after: Duration::from_secs(3),
            suspicion_timeout: Duration::from_secs(2),
            dead_retention: Duration::from_secs(60),
        }
    }
}

/// What this worker knows of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Id, address, weight, incarnation and status, as gossiped.
    pub info: FleetMember,
    /// Last direct sign of life (a view from the member itself, or a refutation).
    pub heard: Instant,
    /// When `info.status` last changed here.
    pub since: Instant,
}

/// A status change, for metrics, logs and the driver's reactions (rebalancing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The member.
    pub id: NodeId,
    /// Its previous status here (`None`: newly learned).
    pub from: Option<MemberStatus>,
    /// Its new status (`None`: forgotten after `dead_retention`).
    pub to: Option<MemberStatus>,
}

/// The membership table of one worker; see the module docs.
#[derive(Debug, Clone)]
pub struct Membership {
    me: NodeId,
    cfg: DetectorConfig,
    members: BTreeMap<NodeId, Member>,
    /// Views refused because the table was full.
    pub overflow: u64,
}

/// Whether `new` supersedes `old` (SWIM precedence; see [`MemberStatus`]).
pub fn supersedes(new: (u64, MemberStatus), old: (u64, MemberStatus)) -> bool {
    let (ni, ns) = new;
    let (oi, os) = old;
    ni > oi || (ni == oi && ns > os)
}

impl Membership {
    /// A table holding only this worker, `Alive` at incarnation `incarnation`.
    pub fn new(me: FleetMember, cfg: DetectorConfig, now: Instant) -> Membership {
        let id = me.id;
        let mut members = BTreeMap::new();
        members.insert(
            id,
            Member {
                info: me,
                heard: now,
                since: now,
            },
        );
        Membership {
            me: id,
            cfg,
            members,
            overflow: 0,
        }
    }

    /// This worker's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// This worker's own entry.
    pub fn own(&self) -> &FleetMember {
        &self.members[&self.me].info
    }

    /// The entry of `id`, if known.
    pub fn get(&self, id: &NodeId) -> Option<&Member> {
        self.members.get(id)
    }

    /// Every known member (this worker included), by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The view to gossip: every known member, this worker first.
    pub fn view(&self) -> Vec<FleetMember> {
        let mut v = vec![self.own().clone()];
        v.extend(
            self.members
                .values()
                .filter(|m| m.info.id != self.me)
                .map(|m| m.info.clone()),
        );
        v
    }

    /// The workers that own clusters: `Alive` or `Suspect` (a suspect keeps its clusters
    /// until confirmed dead, so a slow link does not move them back and forth).
    pub fn owners(&self) -> Vec<Worker> {
        self.members
            .values()
            .filter(|m| matches!(m.info.status, MemberStatus::Alive | MemberStatus::Suspect))
            .map(|m| Worker {
                id: m.info.id,
                weight: m.info.weight,
            })
            .collect()
    }

    /// Members per status, for `macula_fleet_members{status}`.
    pub fn counts(&self) -> [(MemberStatus, usize); 4] {
        let mut c = [
            (MemberStatus::Alive, 0),
            (MemberStatus::Suspect, 0),
            (MemberStatus::Draining, 0),
            (MemberStatus::Dead, 0),
        ];
        for m in self.members.values() {
            c[m.info.status as usize].1 += 1;
        }
        c
    }

    /// Direct evidence that `id` is alive (a view it sent over its own link).
    pub fn heard_from(&mut self, id: &NodeId, now: Instant) {
        if let Some(m) = self.members.get_mut(id) {
            m.heard = now;
        }
    }

    /// Announces this worker as draining (a new incarnation, so it supersedes everywhere).
    pub fn set_draining(&mut self, now: Instant) -> Option<Change> {
        self.set_own(MemberStatus::Draining, now)
    }

    fn set_own(&mut self, status: MemberStatus, now: Instant) -> Option<Change> {
        let m = self.members.get_mut(&self.me).expect("own entry");
        let from = m.info.status;
        m.info.incarnation += 1;
        m.info.status = status;
        m.since = now;
        (from != status).then_some(Change {
            id: self.me,
            from: Some(from),
            to: Some(status),
        })
    }

    /// Merges a view received from `sender` (whose own entry in it is direct evidence of
    /// life). Entries superseding ours are taken; a view claiming this worker is suspect or
    /// dead is refuted (own incarnation raised past it). Unknown members beyond
    /// [`MAX_FLEET_MEMBERS`] are ignored and counted in [`Membership::overflow`].
    pub fn merge(&mut self, sender: &NodeId, view: &[FleetMember], now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        for e in view {
            if e.id == self.me {
                let own = &self.members[&self.me].info;
                let claims_down = matches!(e.status, MemberStatus::Suspect | MemberStatus::Dead);
                if claims_down && e.incarnation >= own.incarnation {
                    let status = if own.status == MemberStatus::Draining {
                        MemberStatus::Draining
                    } else {
                        MemberStatus::Alive
                    };
                    let m = self.members.get_mut(&self.me).expect("own entry");
                    m.info.incarnation = e.incarnation + 1;
                    m.info.status = status;
                }
                continue;
            }
            match self.members.get_mut(&e.id) {
                Some(m) => {
                    if !supersedes(
                        (e.incarnation, e.status),
                        (m.info.incarnation, m.info.status),
                    ) {
                        continue;
                    }
                    let from = m.info.status;
                    // A higher incarnation is the member's own word: a sign of life.
                    if e.incarnation > m.info.incarnation && e.status != MemberStatus::Dead {
                        m.heard = now;
                    }
                    m.info = e.clone();
                    if from != e.status {
                        m.since = now;
                        changes.push(Change {
                            id: e.id,
                            from: Some(from),
                            to: Some(e.status),
                        });
                    }
                }
                None => {
                    if self.members.len() >= MAX_FLEET_MEMBERS {
                        self.overflow += 1;
                        continue;
                    }
                    self.members.insert(
                        e.id,
                        Member {
                            info: e.clone(),
                            heard: now,
                            since: now,
                        },
                    );
                    changes.push(Change {
                        id: e.id,
                        from: None,
                        to: Some(e.status),
                    });
                }
            }
        }
        self.heard_from(sender, now);
        changes
    }

    /// Advances the detector to `now`: silent members become suspect, unrefuted suspicions
    /// become dead, dead members past retention are forgotten.
    pub fn tick(&mut self, now: Instant) -> Vec<Change> {
        let cfg = self.cfg;
        let mut changes = Vec::new();
        let me = self.me;
        self.members.retain(|id, m| {
            if *id == me {
                return true;
            }
            let silent = now.saturating_duration_since(m.heard);
            let held = now.saturating_duration_since(m.since);
            let next = match m.info.status {
                MemberStatus::Alive if silent >= cfg.suspect_after => Some(MemberStatus::Suspect),
                // A draining member owns nothing; suspecting it would hand its clusters back.
                MemberStatus::Draining if silent >= cfg.suspect_after + cfg.suspicion_timeout => {
                    Some(MemberStatus::Dead)
                }
                MemberStatus::Suspect if held >= cfg.suspicion_timeout => Some(MemberStatus::Dead),
                MemberStatus::Dead if held >= cfg.dead_retention => {
                    changes.push(Change {
                        id: *id,
                        from: Some(MemberStatus::Dead),
                        to: None,
                    });
                    return false;
                }
                _ => None,
            };
            if let Some(to) = next {
                changes.push(Change {
                    id: *id,
                    from: Some(m.info.status),
                    to: Some(to),
                });
                m.info.status = to;
                m.since = now;
            }
            true
        });
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(b: u8, inc: u64, status: MemberStatus) -> FleetMember {
        FleetMember {
            id: [b; 32],
            addr: format!("127.0.0.{b}:4433"),
            weight: 100,
            incarnation: inc,
            status,
        }
    }

    fn table(now: Instant) -> Membership {
        Membership::new(
            member(1, 10, MemberStatus::Alive),
            DetectorConfig::default(),
            now,
        )
    }

    #[test]
    fn silent_member_is_suspected_then_declared_dead_within_the_bound() {
        let t0 = Instant::now();
        let mut m = table(t0);
        m.merge(&[2; 32], &[member(2, 5, MemberStatus::Alive)], t0);
        assert!(m.tick(t0 + Duration::from_millis(2900)).is_empty());
        let c = m.tick(t0 + Duration::from_secs(3));
        assert_eq!(c[0].to, Some(MemberStatus::Suspect));
        assert_eq!(m.owners().len(), 2, "a suspect still owns its clusters");
        assert!(m.tick(t0 + Duration::from_millis(4900)).is_empty());
        let c = m.tick(t0 + Duration::from_secs(5));
        assert_eq!(c[0].to, Some(MemberStatus::Dead));
        assert_eq!(m.owners().len(), 1);
        let c = m.tick(t0 + Duration::from_secs(66));
        assert_eq!(c[0].to, None, "forgotten after retention");
        assert!(m.get(&[2; 32]).is_none());
    }

    #[test]
    fn a_member_heard_from_is_never_suspected() {
        let t0 = Instant::now();
        let mut m = table(t0);
        m.merge(&[2; 32], &[member(2, 5, MemberStatus::Alive)], t0);
        for s in 1..20 {
            let now = t0 + Duration::from_secs(s);
            m.heard_from(&[2; 32], now);
            assert!(m.tick(now).is_empty());
        }
    }

    #[test]
    fn suspicion_of_self_is_refuted_with_a_higher_incarnation() {
        let t0 = Instant::now();
        let mut m = table(t0);
        m.merge(&[2; 32], &[member(1, 10, MemberStatus::Suspect)], t0);
        assert_eq!(m.own().incarnation, 11);
        assert_eq!(m.own().status, MemberStatus::Alive);
        // The refutation overrides the suspicion at a third worker.
        let mut other = Membership::new(
            member(3, 1, MemberStatus::Alive),
            DetectorConfig::default(),
            t0,
        );
        other.merge(&[2; 32], &[member(1, 10, MemberStatus::Suspect)], t0);
        let c = other.merge(&[1; 32], &m.view(), t0);
        assert!(c
            .iter()
            .any(|c| c.id == [1; 32] && c.to == Some(MemberStatus::Alive)));
    }

    #[test]
    fn precedence_follows_swim() {
        use MemberStatus::*;
        assert!(supersedes((1, Suspect), (1, Alive)));
        assert!(!supersedes((1, Alive), (1, Suspect)));
        assert!(supersedes((2, Alive), (1, Suspect)));
        assert!(supersedes((1, Dead), (1, Draining)));
        assert!(
            supersedes((2, Alive), (1, Dead)),
            "a restarted worker comes back"
        );
        assert!(!supersedes((1, Alive), (1, Dead)));
    }

    #[test]
    fn draining_member_owns_nothing_and_keeps_draining_when_suspected() {
        let t0 = Instant::now();
        let mut m = table(t0);
        m.merge(&[2; 32], &[member(2, 5, MemberStatus::Alive)], t0);
        assert_eq!(m.owners().len(), 2);
        m.merge(&[2; 32], &[member(2, 6, MemberStatus::Draining)], t0);
        assert_eq!(m.owners().len(), 1);
        let c = m.set_draining(t0).expect("a change");
        assert_eq!(c.to, Some(MemberStatus::Draining));
        m.merge(&[2; 32], &[member(1, 11, MemberStatus::Suspect)], t0);
        assert_eq!(m.own().status, MemberStatus::Draining);
        assert_eq!(m.own().incarnation, 12);
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let mut m = table(t0);
        let view: Vec<FleetMember> = (0..MAX_FLEET_MEMBERS + 10)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&(i as u64 + 1000).to_be_bytes());
                FleetMember {
                    id,
                    ..member(9, 1, MemberStatus::Alive)
                }
            })
            .collect();
        m.merge(&[2; 32], &view, t0);
        assert_eq!(m.members().count(), MAX_FLEET_MEMBERS);
        assert_eq!(m.overflow, 11);
    }

    #[test]
    fn stale_gossip_does_not_revive_the_dead() {
        let t0 = Instant::now();
        let mut m = table(t0);
        m.merge(&[2; 32], &[member(2, 5, MemberStatus::Dead)], t0);
        let c = m.merge(&[3; 32], &[member(2, 5, MemberStatus::Alive)], t0);
        assert!(c.is_empty());
        assert_eq!(m.get(&[2; 32]).unwrap().info.status, MemberStatus::Dead);
    }
}
