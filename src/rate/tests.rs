use super::*;
use tokio::time::Instant;

const PUBLISH: u8 = MessageType::Publish as u8;
const PUBACK: u8 = MessageType::PubAck as u8;

fn rates(conn: RateLimits, realm: RateLimits) -> Rates {
    Rates::new(conn, realm, Duration::from_secs(1), 1024)
}

fn msgs(n: u32) -> RateLimits {
    RateLimits { msgs: n, bytes: 0 }
}

#[tokio::test(start_paused = true)]
async fn a_burst_passes_then_frames_are_paced_at_the_rate() {
    let m = RateMetrics::new(&Registry::new());
    let t = rates(msgs(10), RateLimits::default()).throttle("r", None);
    let start = Instant::now();
    for _ in 0..10 {
        t.admit(PUBLISH, 100, Some(&m)).await;
    }
    assert_eq!(
        Instant::now(),
        start,
        "the burst (1 s worth) passes at once"
    );
    for _ in 0..10 {
        t.admit(PUBLISH, 100, Some(&m)).await;
    }
    let took = Instant::now() - start;
    // Ten more at 10/s: one every 100 ms.
    assert!(
        took >= Duration::from_millis(990) && took <= Duration::from_millis(1010),
        "{took:?}"
    );
    let label = [Scope::Connection.as_str()];
    assert_eq!(m.limited_total.with_label_values(&label).get(), 10);
    let waited = m.waited_seconds_total.with_label_values(&label).get();
    assert!((0.99..=1.01).contains(&waited), "{waited}");
}

#[tokio::test(start_paused = true)]
async fn acknowledgements_and_pings_are_never_held_back() {
    let t = rates(msgs(1), RateLimits::default()).throttle("r", None);
    t.admit(PUBLISH, 10, None).await;
    let start = Instant::now();
    for _ in 0..1000 {
        t.admit(PUBACK, 10, None).await;
        t.admit(MessageType::Ping as u8, 10, None).await;
    }
    assert_eq!(Instant::now(), start);
}

#[tokio::test(start_paused = true)]
async fn bytes_are_limited_and_a_frame_over_the_burst_is_charged_a_whole_burst() {
    // 10 KiB/s, burst 1 s = 10 KiB.
    let lim = RateLimits {
        msgs: 0,
        bytes: 10 * 1024,
    };
    let t = rates(lim, RateLimits::default()).throttle("r", None);
    let start = Instant::now();
    t.admit(PUBLISH, 10 * 1024, None).await;
    assert_eq!(Instant::now(), start);
    // A 1 MiB frame is charged as one burst (10 KiB): it waits one second, not 100.
    t.admit(PUBLISH, 1 << 20, None).await;
    let took = Instant::now() - start;
    assert!(took >= Duration::from_millis(990) && took <= Duration::from_millis(1010));
}

#[tokio::test(start_paused = true)]
async fn sessions_on_one_credential_share_its_bucket() {
    let r = rates(RateLimits::default(), RateLimits::default());
    let id = [7u8; 16];
    let a = r.throttle("r", Some((id, msgs(10))));
    let b = r.throttle("r", Some((id, msgs(10))));
    let other = r.throttle("r", Some(([8u8; 16], msgs(10))));
    let start = Instant::now();
    for _ in 0..5 {
        a.admit(PUBLISH, 1, None).await;
        b.admit(PUBLISH, 1, None).await;
    }
    assert_eq!(Instant::now(), start, "ten frames fit the burst of ten");
    b.admit(PUBLISH, 1, None).await;
    assert!(
        Instant::now() > start,
        "the eleventh waits, whichever session sends it"
    );
    let after = Instant::now();
    for _ in 0..10 {
        other.admit(PUBLISH, 1, None).await;
    }
    assert_eq!(
        Instant::now(),
        after,
        "another credential has its own bucket"
    );
}

#[tokio::test(start_paused = true)]
async fn a_realm_bucket_is_shared_by_every_session_of_the_realm() {
    let r = rates(RateLimits::default(), msgs(4));
    let (a, b, c) = (
        r.throttle("r", None),
        r.throttle("r", None),
        r.throttle("q", None),
    );
    let start = Instant::now();
    for _ in 0..2 {
        a.admit(PUBLISH, 1, None).await;
        b.admit(PUBLISH, 1, None).await;
    }
    c.admit(PUBLISH, 1, None).await;
    assert_eq!(Instant::now(), start);
    a.admit(PUBLISH, 1, None).await;
    assert!(Instant::now() >= start + Duration::from_millis(249));
}

#[test]
fn nothing_limited_makes_no_buckets() {
    let r = rates(RateLimits::default(), RateLimits::default());
    assert!(r.throttle("r", None).is_unlimited());
    assert!(r
        .throttle("r", Some(([1; 16], RateLimits::default())))
        .is_unlimited());
    assert_eq!(r.credential_buckets(), 0);
}

#[test]
fn the_credential_table_forgets_credentials_without_live_sessions() {
    let r = rates(RateLimits::default(), RateLimits::default());
    for i in 0..10_000u32 {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_le_bytes());
        // Each session ends (its throttle dropped) before the next starts.
        drop(r.throttle("r", Some((id, msgs(5)))));
    }
    assert!(r.credential_buckets() <= 128, "{}", r.credential_buckets());
    let live: Vec<_> = (0..100u8)
        .map(|i| r.throttle("r", Some(([i; 16], msgs(5)))))
        .collect();
    assert!(r.credential_buckets() >= 100);
    drop(live);
}

#[test]
fn limits_in_a_credential_round_trip_and_refuse_unknown_keys() {
    let l = RateLimits {
        msgs: 100,
        bytes: 0,
    };
    let bytes = rmp_serde::to_vec_named(&l).unwrap();
    assert_eq!(rmp_serde::from_slice::<RateLimits>(&bytes).unwrap(), l);
    #[derive(Serialize)]
    struct Extra {
        msgs: u32,
        burst: u32,
    }
    let bad = rmp_serde::to_vec_named(&Extra { msgs: 1, burst: 2 }).unwrap();
    assert!(rmp_serde::from_slice::<RateLimits>(&bad).is_err());
}
