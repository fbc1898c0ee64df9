//! Lookups of a procedure's providers: the node's cache, the cluster DHT, then escalation to
//! the bridge (`docs/ESCALATION.md`), with the answers of escalations in flight.

use super::*;

// ---------------------------------------------------------------- lookups

impl NodeRpc {
    /// Providers of `procedure`: this node if a local client provides it; else the node's cache,
    /// whose miss asks the cluster DHT and then the bridge levels.
    pub(super) async fn lookup(
        self: &Arc<Self>,
        procedure: &str,
    ) -> Result<Vec<ProviderRecord>, LookupError> {
        let metrics = &self.env.metrics.rpc;
        if self
            .registry
            .lock()
            .expect("registry lock")
            .provides(procedure)
        {
            return Ok(vec![ProviderRecord {
                node_id: self.env.node_id,
                cluster: self.env.cluster.clone(),
            }]);
        }
        // The cluster's service registry (gossiped): providers on nodes we have a mesh link to.
        if let Some(nodes) = self.env.gossip.providers.load().get(procedure) {
            let reachable: Vec<ProviderRecord> = nodes
                .iter()
                .filter(|id| self.env.mesh.get(id).is_some() && self.may_provide(id, procedure))
                .map(|id| ProviderRecord {
                    node_id: *id,
                    cluster: self.env.cluster.clone(),
                })
                .collect();
            if !reachable.is_empty() {
                self.env.metrics.gossip.registry_lookups_total.inc();
                metrics.lookup("found");
                return Ok(reachable);
            }
        }
        let key = procedure_key(&self.env.realm, procedure);
        let started = Instant::now();
        let realm: Arc<str> = self.env.realm.as_str().into();
        let s = self.clone();
        let name: Arc<str> = procedure.into();
        let res = self
            .cache
            .get_or_escalate(realm, Id(key), move || async move {
                s.resolve(&name, key).await
            })
            .await;
        match &res {
            Ok((answer, source)) => {
                metrics.lookup(if matches!(answer, Answer::Found(_)) {
                    "found"
                } else {
                    "not_found"
                });
                if *source == Source::Upstream {
                    metrics
                        .lookup_duration_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
            }
            Err(_) => metrics.lookup("error"),
        }
        let (answer, _) = res?;
        // Answers cached before a peer's link (and grant) changed are filtered again.
        Ok(match answer {
            Answer::Found(list) => list
                .iter()
                .filter(|p| self.may_provide(&p.node_id, procedure))
                .map(|p| ProviderRecord {
                    node_id: p.node_id,
                    cluster: p.cluster.clone(),
                })
                .collect(),
            Answer::NotFound => Vec::new(),
        })
    }
}

/// The providers the record `values` name, those `keep` accepts.
fn to_answer<'a>(
    values: impl IntoIterator<Item = &'a Bytes>,
    keep: impl Fn(&NodeId) -> bool,
) -> Answer {
    Answer::found(
        values
            .into_iter()
            .filter_map(|v| ProviderRecord::decode(v).ok())
            .filter(|p| keep(&p.node_id))
            .map(|p| Provider {
                node_id: p.node_id,
                cluster: p.cluster,
                via: String::new(),
            })
            .collect(),
    )
}

impl NodeRpc {
    /// Whether provider `node` may be handed calls of `procedure`: this node, a node without
    /// a mesh link (reached through the bridge, which bounds it) or a peer whose credential
    /// permits `register` of it ([`super::bound::may_provide`]). A peer denied it keeps its
    /// own record in its own store and answers `find_value` with it, so refusing its `store`
    /// here is not enough.
    pub(super) fn may_provide(&self, node: &NodeId, procedure: &str) -> bool {
        *node == self.env.node_id || self.env.mesh.may_provide(node, procedure)
    }

    /// The cache's upstream for `procedure` (key `key`): the cluster DHT, then the uplink.
    /// Providers [`NodeRpc::may_provide`] refuses are left out before either is believed.
    async fn resolve(
        self: &Arc<Self>,
        procedure: &str,
        key: [u8; 32],
    ) -> Result<Answer, LookupError> {
        let metrics = &self.env.metrics.rpc;
        let keep = |id: &NodeId| self.may_provide(id, procedure);
        let records = self.env.dht.find_value(Id(key)).await;
        let local = to_answer(records.iter().map(|r| &r.value), keep);
        // A record in the cluster's DHT names a node of this cluster; one without a mesh link is
        // gone (crashed before withdrawing, its record not yet expired) and must not stop the
        // lookup from asking the bridges.
        let reachable = match &local {
            Answer::Found(list) => list
                .iter()
                .any(|p| p.node_id == self.env.node_id || self.env.mesh.get(&p.node_id).is_some()),
            Answer::NotFound => false,
        };
        if reachable {
            metrics.routing_hops.observe(0.0);
            return Ok(local);
        }
        let Some(up) = &self.env.uplink else {
            return Ok(local);
        };
        if !self.uplink_up.load(Ordering::Relaxed) {
            return match local {
                Answer::NotFound => Err(LookupError::Upstream("uplink down".into())),
                found => Ok(found),
            };
        }
        let corr = self.next_corr.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.escalations.lock().expect("escalations lock");
            if waiting.len() >= MAX_ESCALATIONS {
                return Err(LookupError::Upstream(
                    "too many escalations in flight".into(),
                ));
            }
            waiting.insert(corr, tx);
        }
        let q = Frame::FindValue(FindValue {
            correlation_id: corr,
            key,
            sender: WireContact {
                node_id: self.env.node_id,
                addr: self.env.contact_addr.to_string(),
            },
            path: Vec::new(),
        });
        metrics.escalations_total.inc();
        if up.ctrl.try_send(Outbound::Frame(q.to_bytes())).is_err() {
            self.escalations
                .lock()
                .expect("escalations lock")
                .remove(&corr);
            return Err(LookupError::Upstream("uplink queue full".into()));
        }
        let reply = tokio::time::timeout(escalation::ESCALATION_TIMEOUT, rx).await;
        self.escalations
            .lock()
            .expect("escalations lock")
            .remove(&corr);
        match reply {
            Ok(Ok(Ok(r))) => {
                metrics.routing_hops.observe(f64::from(r.depth) + 1.0);
                // The bridges' answer, plus what the cluster knew (tried last if unreachable).
                let values = r.values.iter().map(|r| &r.value);
                let cluster = records.iter().map(|r| &r.value);
                Ok(to_answer(values.chain(cluster), keep))
            }
            Ok(Ok(Err(msg))) => Err(LookupError::Upstream(msg)),
            Ok(Err(_)) => Err(LookupError::Upstream("uplink lost".into())),
            Err(_) => Err(LookupError::Timeout),
        }
    }

    /// A `find_value_reply` or an `error` with a correlation id came down the uplink.
    pub fn escalation_answered(&self, corr: u64, r: Result<FindValueReply, String>) {
        let waiter = self
            .escalations
            .lock()
            .expect("escalations lock")
            .remove(&corr);
        match waiter {
            Some(tx) => {
                let _ = tx.send(r);
            }
            None => self.env.metrics.rpc.dht_unknown_replies_total.inc(),
        }
    }
}
