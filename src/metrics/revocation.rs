//! Metrics of the revocation lists' spread (`docs/AUTH.md`, "Revocation"): lists offered to
//! this process by peers and by its own file, by outcome, and the `revocation_list` frames
//! queued to links or dropped on a full queue. Labels come from fixed sets.

use prometheus::{IntCounter, IntCounterVec, Registry};

/// Values of the `outcome` label of `macula_revocation_lists_total`: put in force
/// (`applied`), not newer than the list in force (`stale`), and the refusals — not a list
/// (`malformed`), a signature that does not verify (`bad_signature`), signed by a key that is
/// not an operator of the realm (`unknown_issuer`), for a realm without operator keys here
/// (`unknown_realm`), for another realm than the link's (`wrong_realm`).
pub const OUTCOMES: [&str; 7] = [
    "applied",
    "stale",
    "malformed",
    "bad_signature",
    "unknown_issuer",
    "unknown_realm",
    "wrong_realm",
];

/// Revocation metrics, registered in the process registry by [`super::Metrics::new`].
pub struct RevocationMetrics {
    /// `macula_revocation_lists_total{outcome}`: lists received in `revocation_list` frames,
    /// by [`OUTCOMES`]; a list of `auth.revocation_file` newer than the one in force counts
    /// as `applied` too (re-reading an unchanged file counts nothing).
    pub lists_total: IntCounterVec,
    /// `macula_revocation_frames_sent_total`: `revocation_list` frames queued to links (at
    /// link-up, and to pass a newer list on).
    pub frames_sent_total: IntCounter,
    /// `macula_revocation_frames_dropped_total`: `revocation_list` frames not queued because
    /// the link's control queue was full (the next link-up or newer list repairs it).
    pub frames_dropped_total: IntCounter,
}

impl RevocationMetrics {
    /// Registers the revocation metrics in `r`, every outcome at 0.
    pub fn new(r: &Registry) -> RevocationMetrics {
        let counter = |name: &str, help: &str| super::register(r, super::counter(name, help));
        let lists_total = super::register(
            r,
            super::counter_vec(
                "macula_revocation_lists_total",
                "Revocation lists received from peers (and newer ones read from the file), by outcome.",
                "outcome",
            ),
        );
        for o in OUTCOMES {
            lists_total.with_label_values(&[o]);
        }
        RevocationMetrics {
            lists_total,
            frames_sent_total: counter(
                "macula_revocation_frames_sent_total",
                "revocation_list frames queued to links.",
            ),
            frames_dropped_total: counter(
                "macula_revocation_frames_dropped_total",
                "revocation_list frames dropped on a full control queue.",
            ),
        }
    }

    /// Counts one list with `outcome` (one of [`OUTCOMES`]).
    pub fn list(&self, outcome: &'static str) {
        self.lists_total.with_label_values(&[outcome]).inc();
    }
}
