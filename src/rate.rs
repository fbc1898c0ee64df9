//! Token-bucket rate limits on what a peer sends (`docs/AUTH.md`, "Rate limits").
//!
//! Three scopes charge every counted frame a session reads: its own connection, its
//! credential (shared by every connection admitted on the same credential in this process)
//! and its realm (shared by every connection of the realm in this process). Each scope may
//! limit messages per second and bytes per second; a limit of 0 is none. The buckets are
//! GCRA ("generic cell rate algorithm", ITU-T I.371 / the ATM Forum's leaky bucket as a
//! meter), as implemented by the `governor` crate, with a burst of `rate.burst_ms` worth of
//! the rate.
//!
//! A frame over its limits is not dropped and not answered with an error: the session's
//! reader waits until the buckets conform, so the sender is slowed by QUIC flow control
//! (RFC 9000 §4) — nothing it already sent is lost, and what it sends beyond the window waits
//! in its own buffers. Only frames that ask for work count ([`counts`]): acknowledgements,
//! pings, pongs, errors and `disconnect` pass free, so a throttled peer still acknowledges
//! what it is sent. iroh-relay limits its clients the same way (reads paced by a bucket).
//!
//! The clock is tokio's ([`TokioClock`]), so tests run with a paused clock.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::Quota;
use prometheus::{IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};

use crate::wire::MessageType;

/// A limit on messages and bytes per second; 0 means unlimited. In a credential this is the
/// optional `lim` map (`docs/AUTH.md`), in the configuration one scope of `[rate]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Frames that ask for work ([`counts`]) per second; 0: unlimited.
    #[serde(skip_serializing_if = "is_zero")]
    pub msgs: u32,
    /// Bytes of such frames (header included) per second; 0: unlimited.
    #[serde(skip_serializing_if = "is_zero")]
    pub bytes: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl RateLimits {
    /// Whether neither messages nor bytes are limited.
    pub fn is_unlimited(&self) -> bool {
        self.msgs == 0 && self.bytes == 0
    }
}

/// The scope a bucket charges; the `scope` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One connection.
    Connection,
    /// Every connection admitted on one credential.
    Credential,
    /// Every connection of one realm.
    Realm,
}

impl Scope {
    /// Every scope, in the order a frame is charged.
    pub const ALL: [Scope; 3] = [Scope::Connection, Scope::Credential, Scope::Realm];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Connection => "connection",
            Scope::Credential => "credential",
            Scope::Realm => "realm",
        }
    }
}

/// Whether a frame of type `t` is charged: every frame that asks the receiver for work.
/// Acknowledgements (`puback`), `ping`, `pong`, `error` and `disconnect` are free, so a
/// throttled peer keeps acknowledging and answering probes.
pub fn counts(t: u8) -> bool {
    !matches!(
        MessageType::from_u8(t),
        Some(
            MessageType::PubAck
                | MessageType::Ping
                | MessageType::Pong
                | MessageType::Error
                | MessageType::Disconnect
        )
    )
}

/// tokio's clock as a `governor` clock: nanoseconds since the first reading in this process
/// (paused and advanced with tokio's test clock).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

fn epoch() -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(tokio::time::Instant::now)
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(tokio::time::Instant::now().saturating_duration_since(epoch()))
    }
}

type Limiter = governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// One token bucket: a rate per second and a burst.
#[derive(Debug)]
pub struct Bucket {
    limiter: Limiter,
    burst: u32,
}

impl Bucket {
    /// A bucket of `per_sec` cells a second holding at most `burst` (both at least 1).
    pub fn new(per_sec: NonZeroU32, burst: NonZeroU32) -> Bucket {
        let quota = Quota::per_second(per_sec).allow_burst(burst);
        Bucket {
            limiter: governor::RateLimiter::direct_with_clock(quota, TokioClock),
            burst: burst.get(),
        }
    }

    /// Takes `n` cells if they conform now; otherwise takes none and says how long to wait
    /// before they would. `n` over the burst is charged as a whole burst.
    pub fn try_take(&self, n: u32) -> Result<(), Duration> {
        let n = NonZeroU32::new(n.min(self.burst)).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(TokioClock.now())),
            // Not reached: `n` is at most the burst. Were it, passing beats waiting for ever.
            Err(_) => Ok(()),
        }
    }
}

/// The buckets of one scope: messages and bytes, each optional.
#[derive(Debug, Default)]
pub struct Buckets {
    msgs: Option<Bucket>,
    bytes: Option<Bucket>,
}

impl Buckets {
    /// The buckets for `limits`, with a burst of `burst` worth of each rate (at least one
    /// message, and at least `min_bytes_burst` bytes so the largest frame fits); `None` when
    /// nothing is limited.
    pub fn new(limits: RateLimits, burst: Duration, min_bytes_burst: u32) -> Option<Arc<Buckets>> {
        if limits.is_unlimited() {
            return None;
        }
        let of = |rate: u32, floor: u32| {
            let per_sec = NonZeroU32::new(rate)?;
            let b = (u64::from(rate) * burst.as_millis() as u64 / 1000).max(u64::from(floor));
            let b = NonZeroU32::new(b.min(u64::from(u32::MAX)) as u32).unwrap_or(NonZeroU32::MIN);
            Some(Bucket::new(per_sec, b))
        };
        Some(Arc::new(Buckets {
            msgs: of(limits.msgs, 1),
            bytes: of(limits.bytes, min_bytes_burst),
        }))
    }
}

/// What the throttled readers count, by scope.
#[derive(Debug, Clone)]
pub struct RateMetrics {
    /// `macula_rate_limited_total{scope}`: frames a reader held back until the scope's bucket
    /// conformed.
    pub limited_total: IntCounterVec,
    /// `macula_rate_limited_seconds_total{scope}`: time readers spent waiting on the scope's
    /// bucket, seconds.
    pub waited_seconds_total: prometheus::CounterVec,
}

impl RateMetrics {
    /// Registers the metrics in `r` (every scope's label pre-created).
    pub fn new(r: &Registry) -> RateMetrics {
        let limited_total = IntCounterVec::new(
            Opts::new(
                "macula_rate_limited_total",
                "Frames held back by a rate limit until its bucket conformed, by scope.",
            ),
            &["scope"],
        )
        .expect("valid metric");
        let waited_seconds_total = prometheus::CounterVec::new(
            Opts::new(
                "macula_rate_limited_seconds_total",
                "Time readers waited on rate-limit buckets, seconds, by scope.",
            ),
            &["scope"],
        )
        .expect("valid metric");
        for s in Scope::ALL {
            limited_total.with_label_values(&[s.as_str()]);
            waited_seconds_total.with_label_values(&[s.as_str()]);
        }
        let _ = r.register(Box::new(limited_total.clone()));
        let _ = r.register(Box::new(waited_seconds_total.clone()));
        RateMetrics {
            limited_total,
            waited_seconds_total,
        }
    }
}

/// The buckets one session's reader charges, in scope order (connection, credential,
/// realm); empty when nothing limits the session.
#[derive(Debug, Default, Clone)]
pub struct Throttle {
    scopes: Vec<(Scope, Arc<Buckets>)>,
}

impl Throttle {
    /// Whether no bucket limits the session.
    pub fn is_unlimited(&self) -> bool {
        self.scopes.is_empty()
    }

    /// Charges one frame of type `t` and `len` bytes to every scope, waiting (tokio's clock)
    /// while a bucket does not conform; each wait is counted in `metrics`. Frames that
    /// [`counts`] says are free pass at once.
    pub async fn admit(&self, t: u8, len: usize, metrics: Option<&RateMetrics>) {
        if self.scopes.is_empty() || !counts(t) {
            return;
        }
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        for (scope, b) in &self.scopes {
            for (bucket, n) in [(&b.msgs, 1), (&b.bytes, len)] {
                let Some(bucket) = bucket else { continue };
                while let Err(wait) = bucket.try_take(n) {
                    if let Some(m) = metrics {
                        let label = [scope.as_str()];
                        m.limited_total.with_label_values(&label).inc();
                        m.waited_seconds_total
                            .with_label_values(&label)
                            .inc_by(wait.as_secs_f64());
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The rate limits of one process: the per-connection limits of each kind of link, the
/// credential buckets of the live sessions, the realm buckets (`[rate]`, `docs/CONFIG.md`).
#[derive(Debug)]
pub struct Rates {
    /// Per connection, for the kind of link the process limits.
    connection: RateLimits,
    /// Per realm, all its connections together.
    realm: RateLimits,
    burst: Duration,
    min_bytes_burst: u32,
    /// Realm → its bucket, made on first use (realms are the configured ones).
    realms: Mutex<std::collections::HashMap<String, Arc<Buckets>>>,
    /// Credential id → its bucket while a session admitted on it is live.
    credentials: Mutex<std::collections::HashMap<[u8; 16], Weak<Buckets>>>,
}

impl Rates {
    /// Limits of `connection` per connection and `realm` per realm, bursts of `burst`, byte
    /// buckets holding at least `min_bytes_burst` (the largest frame).
    pub fn new(
        connection: RateLimits,
        realm: RateLimits,
        burst: Duration,
        min_bytes_burst: u32,
    ) -> Rates {
        Rates {
            connection,
            realm,
            burst,
            min_bytes_burst,
            realms: Mutex::default(),
            credentials: Mutex::default(),
        }
    }

    /// The throttle of a new session of `realm`, admitted on the credential `credential` (its
    /// id and its `lim`), if any. The credential's bucket is shared with the other live
    /// sessions admitted on it; the table keeps only credentials with a live session (plus
    /// dead entries swept when it doubles), so it is bounded by the sessions.
    pub fn throttle(&self, realm: &str, credential: Option<([u8; 16], RateLimits)>) -> Throttle {
        let mut scopes = Vec::new();
        let make = |l: RateLimits| Buckets::new(l, self.burst, self.min_bytes_burst);
        if let Some(b) = make(self.connection) {
            scopes.push((Scope::Connection, b));
        }
        if let Some((id, lim)) = credential.filter(|(_, l)| !l.is_unlimited()) {
            let mut table = self.credentials.lock().expect("credential buckets lock");
            let shared = table.get(&id).and_then(Weak::upgrade);
            let b = match shared {
                Some(b) => b,
                None => {
                    let b = make(lim).expect("limited");
                    if table.len() >= 64 && table.len().is_power_of_two() {
                        table.retain(|_, w| w.strong_count() > 0);
                    }
                    table.insert(id, Arc::downgrade(&b));
                    b
                }
            };
            scopes.push((Scope::Credential, b));
        }
        if !self.realm.is_unlimited() {
            let mut realms = self.realms.lock().expect("realm buckets lock");
            let b = realms
                .entry(realm.to_string())
                .or_insert_with(|| make(self.realm).expect("limited"))
                .clone();
            scopes.push((Scope::Realm, b));
        }
        Throttle { scopes }
    }

    /// Credentials with a bucket in the table (live or not yet swept).
    pub fn credential_buckets(&self) -> usize {
        self.credentials
            .lock()
            .expect("credential buckets lock")
            .len()
    }
}

#[cfg(test)]
mod tests;
