//! Hop bookkeeping of an escalating lookup (pure: no tokio, no clock).
//!
//! A lookup carries its hop count and the ids of the bridges it has passed. Each bridge calls
//! [`EscalationPath::next_hop`] with its own id before handling the lookup; a bridge that finds
//! itself on the path, or a path longer than one bridge per level, means the parent chain is
//! misconfigured (a city bridge whose "parent" is a street bridge, two bridges naming each
//! other). The lookup then fails with [`LookupError::Loop`] instead of circling — loops are the
//! recurring hierarchy bug (lessons-from-peers 9).

use crate::dht::NodeId;

use super::LookupError;

/// Id of a bridge node: its node id.
pub type BridgeId = NodeId;

/// Most bridges one lookup may pass: one per level ([`super::Level::ALL`] has 8), so a lookup
/// started at a cluster can reach the global level and no further.
pub const MAX_HOPS: u8 = 8;

/// Most bridge ids a path may carry, the bound a decoder checks before accepting one from
/// the wire. Larger than [`MAX_HOPS`], so a valid path never reaches it.
pub const MAX_VISITED: usize = 16;

/// The bridges an escalating lookup has passed, in order, and their count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EscalationPath {
    hops: u8,
    visited: Vec<BridgeId>,
}

impl EscalationPath {
    /// An empty path: a lookup that no bridge has handled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A path received from a peer: `hops` bridges passed, `visited` their ids in order.
    ///
    /// Errors: [`LookupError::Loop`] when `visited` holds more than [`MAX_VISITED`] ids, names
    /// a bridge twice, or `hops` exceeds [`MAX_HOPS`] or is smaller than `visited.len()`.
    pub fn from_parts(hops: u8, visited: Vec<BridgeId>) -> Result<Self, LookupError> {
        let duplicate = visited
            .iter()
            .enumerate()
            .any(|(i, id)| visited[..i].contains(id));
        if visited.len() > MAX_VISITED
            || duplicate
            || hops > MAX_HOPS
            || usize::from(hops) < visited.len()
        {
            return Err(LookupError::Loop { hops });
        }
        Ok(EscalationPath { hops, visited })
    }

    /// Bridges passed so far.
    pub fn hops(&self) -> u8 {
        self.hops
    }

    /// Ids of the bridges passed so far, first (lowest) first.
    pub fn visited(&self) -> &[BridgeId] {
        &self.visited
    }

    /// Whether bridge `me` may handle this lookup, without recording it.
    ///
    /// Errors: [`LookupError::Loop`] (with the current hop count) when `me` is already on the
    /// path or one more hop would exceed [`MAX_HOPS`].
    pub fn check(&self, me: &BridgeId) -> Result<(), LookupError> {
        if self.visited.contains(me) || self.hops >= MAX_HOPS || self.visited.len() >= MAX_VISITED {
            return Err(LookupError::Loop { hops: self.hops });
        }
        Ok(())
    }

    /// Records that bridge `me` handles this lookup: [`EscalationPath::check`], then one more
    /// hop and `me` appended. On error the path is unchanged.
    pub fn next_hop(&mut self, me: BridgeId) -> Result<(), LookupError> {
        self.check(&me)?;
        self.hops += 1;
        self.visited.push(me);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::Id;

    fn bridge(n: u8) -> BridgeId {
        Id::from_bytes([n; 32])
    }

    #[test]
    fn one_bridge_per_level_passes() {
        let mut path = EscalationPath::new();
        for n in 0..MAX_HOPS {
            path.next_hop(bridge(n))
                .expect("distinct bridges within the limit");
        }
        assert_eq!(path.hops(), MAX_HOPS);
        assert_eq!(path.visited().len(), usize::from(MAX_HOPS));
        assert_eq!(path.visited()[0], bridge(0));
    }

    #[test]
    fn a_ninth_bridge_is_a_loop() {
        let mut path = EscalationPath::new();
        for n in 0..MAX_HOPS {
            path.next_hop(bridge(n)).expect("within the limit");
        }
        let before = path.clone();
        assert_eq!(
            path.next_hop(bridge(100)),
            Err(LookupError::Loop { hops: MAX_HOPS })
        );
        assert_eq!(path, before, "a refused hop leaves the path unchanged");
    }

    #[test]
    fn revisiting_a_bridge_is_a_loop() {
        // street bridge A names city bridge B as parent, B names A.
        let mut path = EscalationPath::new();
        path.next_hop(bridge(1)).expect("first visit");
        path.next_hop(bridge(2)).expect("first visit");
        assert_eq!(path.check(&bridge(1)), Err(LookupError::Loop { hops: 2 }));
        assert_eq!(path.next_hop(bridge(1)), Err(LookupError::Loop { hops: 2 }));
        assert_eq!(path.hops(), 2);
    }

    #[test]
    fn self_parent_is_a_loop() {
        let mut path = EscalationPath::new();
        path.next_hop(bridge(9)).expect("first visit");
        assert!(path.next_hop(bridge(9)).is_err());
    }

    #[test]
    fn received_paths_are_validated() {
        let ok = EscalationPath::from_parts(2, vec![bridge(1), bridge(2)]).expect("valid");
        assert_eq!(ok.hops(), 2);
        assert!(EscalationPath::from_parts(2, vec![bridge(1), bridge(1)]).is_err());
        assert!(EscalationPath::from_parts(MAX_HOPS + 1, vec![]).is_err());
        assert!(EscalationPath::from_parts(1, vec![bridge(1), bridge(2)]).is_err());
        let too_many = (0..=MAX_VISITED as u8).map(bridge).collect();
        assert!(EscalationPath::from_parts(MAX_HOPS, too_many).is_err());
    }
}
