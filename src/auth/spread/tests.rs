//! The spread of revocation lists over registered links, with channels for control queues:
//! what each link is sent, what is applied, and what is counted.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::super::{Admission, Auth};
use crate::auth::revocation::Revocations;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::session::Outbound;
use crate::wire::{Frame, FrameDecoder, RawFrame, RevocationList};

const R: &str = "io.macula";

fn op() -> Identity {
    Identity::from_secret(&[1; 32])
}

fn auth() -> Auth {
    let ops = HashMap::from([
        (R.to_string(), vec![op().public_key()]),
        ("io.other".to_string(), vec![op().public_key()]),
    ]);
    Auth {
        admission: Admission::new(ops),
        ..Auth::default()
    }
}

fn list(realm: &str, seq: u64, ids: &[[u8; 16]]) -> Bytes {
    Revocations::issue(&op(), realm, seq, ids).unwrap().into()
}

fn raw(f: Frame) -> RawFrame {
    let mut d = FrameDecoder::new(crate::wire::DEFAULT_MAX_FRAME_SIZE);
    d.extend(&f.to_bytes());
    d.next_frame().unwrap().unwrap()
}

fn raw_list(bytes: Bytes) -> RawFrame {
    raw(Frame::RevocationList(RevocationList { list: bytes }))
}

/// The lists queued on `rx` so far.
fn sent(rx: &mut mpsc::Receiver<Outbound>) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Ok(o) = rx.try_recv() {
        let Outbound::Frame(b) = o else {
            panic!("only frames are queued")
        };
        let mut d = FrameDecoder::new(crate::wire::DEFAULT_MAX_FRAME_SIZE);
        d.extend(&b);
        match d.next_frame().unwrap().unwrap().decode().unwrap() {
            Frame::RevocationList(l) => out.push(l.list),
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

fn outcome(m: &Metrics, o: &str) -> u64 {
    m.revocation.lists_total.with_label_values(&[o]).get()
}

#[test]
fn a_newer_list_is_applied_and_passed_to_every_other_link_of_its_realm() {
    let (auth, m) = (auth(), Metrics::new());
    let (ta, mut ra) = mpsc::channel(8);
    let (tb, mut rb) = mpsc::channel(8);
    let (tc, mut rc) = mpsc::channel(8);
    let a = auth.revocation_link(R, [1; 32], &ta, &m);
    let b = auth.revocation_link(R, [2; 32], &tb, &m);
    let c = auth.revocation_link("io.other", [3; 32], &tc, &m);
    assert!(
        sent(&mut ra).is_empty(),
        "nothing in force: nothing at link-up"
    );

    let first = list(R, 10, &[[7; 16]]);
    auth.on_revocation_list(&a, &raw_list(first.clone()), &m)
        .unwrap();
    assert_eq!(outcome(&m, "applied"), 1);
    assert_eq!(auth.revocation_list(R), Some(first.clone()));
    assert_eq!(sent(&mut rb), vec![first.clone()], "passed on to b");
    assert!(sent(&mut ra).is_empty(), "never back to where it came from");
    assert!(sent(&mut rc).is_empty(), "never to another realm's link");

    // The flood stops: the same list, or an older one, is stale everywhere.
    auth.on_revocation_list(&b, &raw_list(first.clone()), &m)
        .unwrap();
    auth.on_revocation_list(&b, &raw_list(list(R, 9, &[[8; 16]])), &m)
        .unwrap();
    assert_eq!(outcome(&m, "stale"), 2);
    assert!(sent(&mut ra).is_empty() && sent(&mut rb).is_empty());
    assert_eq!(auth.revocation_list(R), Some(first));

    // A valid list of another realm on a link of R is not taken from it.
    auth.on_revocation_list(&a, &raw_list(list("io.other", 11, &[[9; 16]])), &m)
        .unwrap();
    assert_eq!(outcome(&m, "wrong_realm"), 1);
    assert_eq!(auth.revocation_list("io.other"), None);

    // A newer one replaces it and goes to every other link, b too, once a is gone.
    drop(a);
    let newer = list(R, 11, &[[7; 16], [8; 16]]);
    auth.on_revocation_list(&c, &raw_list(list("io.other", 1, &[])), &m)
        .unwrap();
    auth.on_revocation_list(&b, &raw_list(newer.clone()), &m)
        .unwrap();
    assert_eq!(outcome(&m, "applied"), 3);
    assert!(sent(&mut rb).is_empty());
    assert!(sent(&mut ra).is_empty(), "a unregistered when dropped");
    assert_eq!(m.revocation.frames_sent_total.get(), 1);
    drop((b, c));
}

#[test]
fn a_link_coming_up_is_sent_the_list_in_force_for_its_realm() {
    let (auth, m) = (auth(), Metrics::new());
    let l = list(R, 3, &[[7; 16]]);
    let applied = auth.apply_revocations(vec![Revocations::decode(&l).unwrap()]);
    assert_eq!(applied.newer, vec![(R.to_string(), l.clone())]);
    let (t, mut rx) = mpsc::channel(8);
    let _link = auth.revocation_link(R, [1; 32], &t, &m);
    assert_eq!(sent(&mut rx), vec![l]);
    let (t, mut rx) = mpsc::channel(8);
    let _other = auth.revocation_link("io.other", [1; 32], &t, &m);
    assert!(sent(&mut rx).is_empty());
}

#[test]
fn refused_lists_are_counted_by_reason_and_change_nothing() {
    let (auth, m) = (auth(), Metrics::new());
    let (t, mut rx) = mpsc::channel(8);
    let (t2, mut rx2) = mpsc::channel(8);
    let from = auth.revocation_link(R, [1; 32], &t, &m);
    let _other = auth.revocation_link(R, [2; 32], &t2, &m);
    let stranger = Identity::from_secret(&[2; 32]);
    let forged: Bytes = Revocations::issue(&stranger, R, 99, &[[7; 16]])
        .unwrap()
        .into();
    let mut flipped = list(R, 99, &[[7; 16]]).to_vec();
    let n = flipped.len() - 1;
    flipped[n] ^= 1;
    let open_realm: Bytes = Revocations::issue(&op(), "io.open", 99, &[[7; 16]])
        .unwrap()
        .into();
    for (bytes, reason) in [
        (forged, "unknown_issuer"),
        (Bytes::from(flipped), "bad_signature"),
        (open_realm, "unknown_realm"),
        (
            Bytes::from_static(b"not a list at all, not at all"),
            "malformed",
        ),
    ] {
        auth.on_revocation_list(&from, &raw_list(bytes), &m)
            .unwrap();
        assert_eq!(outcome(&m, reason), 1, "{reason}");
    }
    assert_eq!(outcome(&m, "applied"), 0);
    assert_eq!(auth.revocation_list(R), None);
    assert!(sent(&mut rx).is_empty() && sent(&mut rx2).is_empty());
    // A body that does not decode is a wire error for the caller to answer.
    let mut d = FrameDecoder::new(crate::wire::DEFAULT_MAX_FRAME_SIZE);
    d.extend(&[1, 0x0a, 0, 0, 0, 0, 0, 1, 0x80]); // an empty map: no `list`
    let bad = d.next_frame().unwrap().unwrap();
    assert!(auth.on_revocation_list(&from, &bad, &m).is_err());
}

#[test]
fn a_full_control_queue_drops_the_frame_and_counts_it() {
    let (auth, m) = (auth(), Metrics::new());
    let (t, _rx) = mpsc::channel(1);
    t.try_send(Outbound::Frame(Bytes::from_static(b"x")))
        .unwrap();
    let (tf, _rf) = mpsc::channel(8);
    let from = auth.revocation_link(R, [1; 32], &tf, &m);
    let _full = auth.revocation_link(R, [2; 32], &t, &m);
    auth.on_revocation_list(&from, &raw_list(list(R, 1, &[])), &m)
        .unwrap();
    assert_eq!(outcome(&m, "applied"), 1);
    assert_eq!(m.revocation.frames_dropped_total.get(), 1);
}

#[test]
fn two_lists_of_one_seq_converge_whatever_the_order() {
    let (x, y) = (list(R, 5, &[[1; 16]]), list(R, 5, &[[2; 16]]));
    let kept = |first: &Bytes, second: &Bytes| {
        let auth = auth();
        for l in [first, second] {
            auth.apply_revocations(vec![Revocations::decode(l).unwrap()]);
        }
        auth.revocation_list(R).unwrap()
    };
    assert_eq!(kept(&x, &y), kept(&y, &x));
}
