//! The sharded bridge fleet (issue 5).
pub mod hash;
