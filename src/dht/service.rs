//! TEMP STUB (replaced by the real service from wip-dht).
#![allow(missing_docs, dead_code, unused_variables)]
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::dht::{Contact, Id, NodeId};
use crate::metrics::Metrics;
use crate::wire::Frame;
use crate::wire::WireRecord;

pub trait DhtTransport: Send + Sync + 'static {
    fn send(&self, to: &Contact, frame: Frame) -> bool;
}
pub struct DhtParams {
    pub own: Contact,
    pub record_ttl: Duration,
    pub query_timeout: Duration,
    pub max_record_ttl: Duration,
}
pub struct DhtService;
impl DhtService {
    pub fn new(
        params: DhtParams,
        transport: Arc<dyn DhtTransport>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(DhtService)
    }
    pub fn handle_query(&self, from: Option<&Contact>, frame: &Frame) -> Option<Frame> {
        None
    }
    pub fn handle_reply(&self, frame: &Frame) -> bool {
        false
    }
    pub fn observe(&self, contact: Contact) {}
    pub fn remove_contact(&self, id: &NodeId) {}
    pub async fn bootstrap(&self) {}
    pub async fn find_nodes(&self, target: Id) -> Vec<Contact> {
        Vec::new()
    }
    pub async fn find_value(&self, key: Id) -> Vec<WireRecord> {
        Vec::new()
    }
    pub async fn publish(&self, key: Id, value: Bytes) -> usize {
        0
    }
    pub async fn withdraw(&self, key: Id) {}
    pub fn contacts(&self) -> Vec<Contact> {
        Vec::new()
    }
    pub async fn tick(&self) {}
}
