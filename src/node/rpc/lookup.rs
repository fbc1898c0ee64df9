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
                .filter(|id| self.env.mesh.get(id).is_some())
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
        let res = self
            .cache
            .get_or_escalate(realm, Id(key), move || async move { s.resolve(key).await })
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
        Ok(match answer {
            Answer::Found(list) => list
                .iter()
                .map(|p| ProviderRecord {
                    node_id: p.node_id,
                    cluster: p.cluster.clone(),
                })
                .collect(),
            Answer::NotFound => Vec::new(),
        })
    }
}

fn to_answer<'a>(values: impl IntoIterator<Item = &'a Bytes>) -> Answer {
    Answer::found(
        values
            .into_iter()
            .filter_map(|v| ProviderRecord::decode(v).ok())
            .map(|p| Provider {
                node_id: p.node_id,
                cluster: p.cluster,
                via: String::new(),
            })
            .collect(),
    )
}

impl NodeRpc {
    /// The cache's upstream: the cluster DHT, then the uplink.
    async fn resolve(self: &Arc<Self>, key: [u8; 32]) -> Result<Answer, LookupError> {
        let metrics = &self.env.metrics.rpc;
        let records = self.env.dht.find_value(Id(key)).await;
        let local = to_answer(records.iter().map(|r| &r.value));
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
                Ok(to_answer(values.chain(cluster)))
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
