//! The sharded bridge fleet (issue 5): the workers serving one level, their membership
//! and failure detector ([`membership`]), which worker owns which cluster ([`hash`]), and
//! the dialing side's memory of a fleet ([`follow`]). Design and operations: `docs/FLEET.md`.
pub mod follow;
pub mod hash;
pub mod membership;

/// Prefix of the `connect` capability naming the sender's fleet: `fleet=<name>`. A worker
/// sends it when it dials another worker and on its parent link (`docs/PROTOCOL.md` §16).
pub const CAP_FLEET: &str = "fleet=";
/// Prefix of the `connect` capability with the number of redirects the sender followed in a
/// row: `redirects=<n>` (a node's uplink, a child bridge's parent link).
pub const CAP_REDIRECTS: &str = "redirects=";

/// The fleet a `connect` names with [`CAP_FLEET`], if any.
pub fn fleet_of(capabilities: &[String]) -> Option<&str> {
    capabilities.iter().find_map(|c| c.strip_prefix(CAP_FLEET))
}
