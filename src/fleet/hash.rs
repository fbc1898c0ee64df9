//! TEMPORARY stub (replaced by the consistent-hashing module).
use sha2::{Digest, Sha256};

use crate::wire::NodeId;

/// One worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    /// Id.
    pub id: NodeId,
    /// Weight.
    pub weight: u32,
}

/// Key.
pub fn cluster_key(realm: &str, cluster: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(realm.as_bytes());
    h.update([0]);
    h.update(cluster.as_bytes());
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// Placement.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    workers: Vec<Worker>,
}

impl Placement {
    /// New.
    pub fn new(workers: &[Worker]) -> Placement {
        let mut w = workers.to_vec();
        w.sort_by_key(|a| a.id);
        w.dedup_by(|a, b| a.id == b.id);
        Placement { workers: w }
    }
    /// Owner.
    pub fn owner(&self, key: u64) -> Option<NodeId> {
        self.workers
            .iter()
            .map(|w| {
                let mut h = Sha256::new();
                h.update(key.to_be_bytes());
                h.update(w.id);
                let x = u64::from_be_bytes(h.finalize()[..8].try_into().expect("8"));
                (x, w.id)
            })
            .max()
            .map(|(_, id)| id)
    }
    /// Workers.
    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }
}
