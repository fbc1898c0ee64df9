//! The sharded bridge fleet (issue 5): the workers serving one level, their membership
//! and failure detector ([`membership`]), and which worker owns which cluster ([`hash`]).
//! Design and operations: `docs/FLEET.md`.
pub mod hash;
pub mod membership;
