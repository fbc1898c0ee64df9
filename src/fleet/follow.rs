//! The dialing side of a fleet, pure: what a link to a fleet-served level (a node's uplink,
//! a child bridge's parent link) remembers of the fleet — the directory of workers it was sent, the redirect
//! to follow, the worker it just lost — and where it dials next (`docs/FLEET.md`, "Child
//! bridges"). No sockets and no clocks: time is passed in as `now`.
//!
//! Both links redial through `session::redial::Redialer`. The rules: follow a redirect
//! unless it names the worker lost less than [`defaults::FLEET_LOST_WORKER_MEMORY`] ago (the other
//! workers may not have noticed its death yet); dial the owner the directory names first; say
//! how many redirects were followed in a row (`redirects=N`) so that a loop is bounded.

use std::time::{Duration, Instant};

use super::hash::{Placement, Worker};
use crate::defaults;
use crate::wire::{FleetMember, MemberStatus, Redirect};

/// What a link to a fleet knows of it, and its next dial targets.
#[derive(Debug, Clone)]
pub struct Follower {
    /// The placement key the fleet hashes this link by ([`super::hash::cluster_key`] of the
    /// name the worker uses, see [`super::hash::child_bridge_key`]).
    key: u64,
    /// The last directory a worker sent (`None`: the level is not a fleet, or nothing yet).
    members: Option<Vec<FleetMember>>,
    /// The owner of `key` according to `members`.
    owner: Option<FleetMember>,
    /// A redirect to follow on the next dial.
    redirect: Option<Redirect>,
    /// The worker whose session was lost last (address), and when.
    lost: Option<(String, Instant)>,
    /// Redirects followed since the last accepted session.
    in_row: u32,
}

/// What [`Follower::on_redirect`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// The redirect is taken: the next dial goes there (after its delay).
    Taken,
    /// It names the worker just lost: ignored, the next dial tries the others.
    JustLost,
}

impl Follower {
    /// A follower hashed by `key`, knowing no fleet yet.
    pub fn new(key: u64) -> Follower {
        Follower {
            key,
            members: None,
            owner: None,
            redirect: None,
            lost: None,
            in_row: 0,
        }
    }

    /// Whether a directory was received (the level is served by a fleet).
    pub fn in_fleet(&self) -> bool {
        self.members.is_some()
    }

    /// The owner's address according to the last directory.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_ref().map(|m| m.addr.as_str())
    }

    /// The owner according to the last directory.
    pub fn owner_member(&self) -> Option<&FleetMember> {
        self.owner.as_ref()
    }

    /// The last directory received (`None`: the level is not a fleet, or nothing yet).
    pub fn members(&self) -> Option<&[FleetMember]> {
        self.members.as_deref()
    }

    /// A directory (`fleet_view` members) arrived: the owner is recomputed over the `alive`
    /// and `suspect` members, as the workers compute it.
    pub fn on_view(&mut self, members: Vec<FleetMember>) {
        let owners: Vec<Worker> = members
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .map(|m| Worker {
                id: m.id,
                weight: m.weight,
            })
            .collect();
        self.owner = Placement::new(&owners)
            .owner(self.key)
            .and_then(|id| members.iter().find(|m| m.id == id))
            .cloned();
        self.members = Some(members);
    }

    /// A worker redirected this link (refusing its `connect`, or during a session).
    pub fn on_redirect(&mut self, r: Redirect, now: Instant) -> Followed {
        if self.just_lost(&r.addr, now) {
            return Followed::JustLost;
        }
        self.in_row = self.in_row.saturating_add(1);
        self.redirect = Some(r);
        Followed::Taken
    }

    /// The session with (or the dial to) the worker at `addr` failed.
    pub fn on_lost(&mut self, addr: &str, now: Instant) {
        self.lost = Some((addr.to_string(), now));
    }

    /// A session was accepted: the redirect count starts again.
    pub fn on_accepted(&mut self) {
        self.in_row = 0;
    }

    /// Whether a redirect waits to be followed by the next dial.
    pub fn has_redirect(&self) -> bool {
        self.redirect.is_some()
    }

    /// The `redirects=N` capability of the next `connect`, when redirects were followed.
    pub fn capability(&self) -> Option<String> {
        (self.in_row > 0).then(|| format!("{}{}", super::CAP_REDIRECTS, self.in_row))
    }

    /// Where to dial next, in order, and, when a redirect is followed, how long to wait
    /// first (its delay; `None`: no redirect, the caller's backoff applies): the
    /// redirect's target, the owner, the `configured` parents, the other live workers of the
    /// directory; each address once, the worker lost less than
    /// [`defaults::FLEET_LOST_WORKER_MEMORY`] ago last. Takes the pending redirect.
    pub fn targets(
        &mut self,
        configured: &[String],
        now: Instant,
    ) -> (Vec<String>, Option<Duration>) {
        let redirect = self.redirect.take();
        let delay = redirect
            .as_ref()
            .map(|r| Duration::from_millis(r.delay_ms.into()));
        let mut live: Vec<&str> = self
            .members
            .iter()
            .flatten()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .map(|m| m.addr.as_str())
            .collect();
        live.sort_unstable();
        let mut out: Vec<String> = Vec::new();
        let candidates = redirect
            .as_ref()
            .map(|r| r.addr.as_str())
            .into_iter()
            .chain(self.owner())
            .chain(configured.iter().map(String::as_str))
            .chain(live);
        for a in candidates {
            if !out.iter().any(|x| x == a) {
                out.push(a.to_string());
            }
        }
        if let Some(i) = out.iter().position(|a| self.just_lost(a, now)) {
            let lost = out.remove(i);
            out.push(lost);
        }
        (out, delay)
    }

    fn just_lost(&self, addr: &str, now: Instant) -> bool {
        self.lost.as_ref().is_some_and(|(a, at)| {
            a == addr && now.saturating_duration_since(*at) < defaults::FLEET_LOST_WORKER_MEMORY
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(b: u8, status: MemberStatus) -> FleetMember {
        FleetMember {
            id: [b; 32],
            addr: format!("10.0.0.{b}:9443"),
            weight: 100,
            incarnation: 1,
            status,
        }
    }

    fn redirect(b: u8) -> Redirect {
        Redirect {
            owner: [b; 32],
            addr: format!("10.0.0.{b}:9443"),
            delay_ms: 250,
            reason: "connect".into(),
        }
    }

    #[test]
    fn without_a_directory_the_configured_parents_in_order() {
        let mut f = Follower::new(7);
        let conf = vec!["p:1".to_string(), "p:2".to_string()];
        assert_eq!(f.targets(&conf, Instant::now()), (conf, None));
        assert!(!f.in_fleet());
        assert_eq!(f.capability(), None);
    }

    #[test]
    fn a_redirect_goes_first_once_then_the_owner_then_the_rest() {
        let now = Instant::now();
        let mut f = Follower::new(7);
        f.on_view(vec![
            member(1, MemberStatus::Alive),
            member(2, MemberStatus::Alive),
            member(3, MemberStatus::Dead),
        ]);
        let owner = f.owner().expect("an owner").to_string();
        assert_ne!(owner, "10.0.0.3:9443", "dead workers own nothing");
        assert_eq!(f.on_redirect(redirect(9), now), Followed::Taken);
        assert_eq!(f.capability().as_deref(), Some("redirects=1"));
        let conf = vec!["10.0.0.1:9443".to_string()];
        let (t, delay) = f.targets(&conf, now);
        assert_eq!(delay, Some(Duration::from_millis(250)));
        assert_eq!(t[0], "10.0.0.9:9443");
        assert_eq!(t[1], owner);
        assert_eq!(
            t.len(),
            3,
            "each live address once, the dead one never: {t:?}"
        );
        let (t, delay) = f.targets(&conf, now);
        assert_eq!((t[0].as_str(), delay), (owner.as_str(), None));
        f.on_accepted();
        assert_eq!(f.capability(), None);
    }

    #[test]
    fn the_worker_just_lost_is_not_followed_and_dialed_last_until_forgotten() {
        let now = Instant::now();
        let mut f = Follower::new(7);
        f.on_view(vec![
            member(1, MemberStatus::Alive),
            member(2, MemberStatus::Alive),
        ]);
        let owner = f.owner().expect("an owner").to_string();
        f.on_lost(&owner, now);
        let back = Redirect {
            addr: owner.clone(),
            ..redirect(1)
        };
        assert_eq!(f.on_redirect(back.clone(), now), Followed::JustLost);
        let (t, _) = f.targets(&[], now);
        assert_eq!(t.last(), Some(&owner), "{t:?}");
        assert_eq!(t.len(), 2);
        let later = now + defaults::FLEET_LOST_WORKER_MEMORY;
        assert_eq!(f.on_redirect(back, later), Followed::Taken);
        assert_eq!(f.targets(&[], later).0[0], owner);
    }

    #[test]
    fn the_workers_of_one_fleet_share_a_key_other_bridges_do_not() {
        use crate::fleet::hash::{child_bridge_key, cluster_key};
        let r = "io.macula";
        let fleet = Some("street-7");
        assert_eq!(
            child_bridge_key(r, &[1; 32], fleet),
            child_bridge_key(r, &[2; 32], fleet)
        );
        assert_eq!(
            child_bridge_key(r, &[1; 32], fleet),
            cluster_key(r, "fleet/street-7")
        );
        assert_ne!(
            child_bridge_key(r, &[1; 32], None),
            child_bridge_key(r, &[2; 32], None)
        );
        assert_ne!(
            child_bridge_key(r, &[1; 32], None),
            child_bridge_key("other", &[1; 32], None)
        );
    }
}
