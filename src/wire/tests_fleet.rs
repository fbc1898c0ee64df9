//! Tests of the fleet frames (0x07 `redirect`, 0x08 `fleet_view`): round trips, every
//! decode-time bound, and arbitrary bytes under both headers.

use proptest::prelude::*;

use super::msgpack::{put_bin, put_map_len, put_str, put_uint};
use super::tests::{one_frame, raw};
use super::*;

fn member(b: u8, status: MemberStatus) -> FleetMember {
    FleetMember {
        id: [b; 32],
        addr: format!("10.0.0.{b}:9443"),
        weight: 100,
        incarnation: 1_700_000_000_000 + u64::from(b),
        status,
    }
}

fn view(n: usize) -> FleetView {
    FleetView {
        fleet: "city-1".into(),
        config: 0xdead_beef_0123_4567,
        sender: [7; 32],
        members: (0..n)
            .map(|i| member(i as u8, MemberStatus::from_u8((i % 4) as u8).unwrap()))
            .collect(),
    }
}

fn round_trip(f: Frame) {
    let bytes = f.to_bytes();
    assert_eq!(bytes.len(), f.encoded_len());
    assert_eq!(one_frame(&bytes).decode().unwrap(), f);
}

#[test]
fn redirect_and_view_round_trip() {
    round_trip(Frame::Redirect(Redirect {
        owner: [9; 32],
        addr: "127.0.0.2:9443".into(),
        delay_ms: 750,
        reason: "drain".into(),
    }));
    round_trip(Frame::Redirect(Redirect {
        owner: [0; 32],
        addr: "h:1".into(),
        delay_ms: 0,
        reason: String::new(),
    }));
    round_trip(Frame::FleetView(view(0)));
    round_trip(Frame::FleetView(view(8)));
    round_trip(Frame::FleetView(view(MAX_FLEET_MEMBERS)));
}

/// A `fleet_view` body with `n` members, each written by `m` (for hostile bodies).
fn view_body(n: u32, m: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = Vec::new();
    put_map_len(&mut b, 4);
    put_str(&mut b, "fleet");
    put_str(&mut b, "f");
    put_str(&mut b, "config");
    put_uint(&mut b, 1);
    put_str(&mut b, "sender");
    put_bin(&mut b, &[1; 32]);
    put_str(&mut b, "members");
    rmp::encode::write_array_len(&mut b, n).unwrap();
    for _ in 0..n {
        m(&mut b);
    }
    b
}

fn member_body(b: &mut Vec<u8>, id_len: usize, weight: u64, status: u64, addr: &str) {
    put_map_len(b, 5);
    put_str(b, "id");
    put_bin(b, &vec![3; id_len]);
    put_str(b, "addr");
    put_str(b, addr);
    put_str(b, "weight");
    put_uint(b, weight);
    put_str(b, "incarnation");
    put_uint(b, 5);
    put_str(b, "status");
    put_uint(b, status);
}

fn field_error(body: &[u8]) -> &'static str {
    match raw(MessageType::FleetView as u8, body).decode() {
        Err(WireError::InvalidField { field, .. }) => field,
        Err(WireError::Malformed { .. }) => "malformed",
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn view_bounds_are_checked_on_decode() {
    let ok = view_body(1, |b| member_body(b, 32, 100, 0, "a:1"));
    assert!(raw(MessageType::FleetView as u8, &ok).decode().is_ok());
    assert_eq!(
        field_error(&view_body(1, |b| member_body(b, 31, 100, 0, "a:1"))),
        "id"
    );
    assert_eq!(
        field_error(&view_body(1, |b| member_body(b, 32, 0, 0, "a:1"))),
        "weight"
    );
    assert_eq!(
        field_error(&view_body(1, |b| member_body(b, 32, 1001, 0, "a:1"))),
        "weight"
    );
    assert_eq!(
        field_error(&view_body(1, |b| member_body(b, 32, 100, 4, "a:1"))),
        "status"
    );
    assert_eq!(
        field_error(&view_body(1, |b| member_body(b, 32, 100, 0, ""))),
        "addr"
    );
    let long = "x".repeat(MAX_FLEET_STRING + 1);
    assert_eq!(
        field_error(&view_body(1, |b| member_body(b, 32, 100, 0, &long))),
        "addr"
    );
    // One member too many is refused while decoding the array, before it is all allocated.
    let too_many = view_body(MAX_FLEET_MEMBERS as u32 + 1, |b| {
        member_body(b, 32, 100, 0, "a:1")
    });
    assert_eq!(field_error(&too_many), "malformed");
    // A huge declared length with nothing behind it fails without reserving memory for it.
    let mut huge = view_body(0, |_| {});
    let n = huge.len();
    huge.truncate(n - 1); // the empty array's header (0x90)
    rmp::encode::write_array_len(&mut huge, u32::MAX).unwrap();
    assert_eq!(field_error(&huge), "malformed");
}

#[test]
fn redirect_bounds_are_checked_on_decode() {
    let body = |owner_len: usize, addr: &str| {
        let mut b = Vec::new();
        put_map_len(&mut b, 4);
        put_str(&mut b, "owner");
        put_bin(&mut b, &vec![1; owner_len]);
        put_str(&mut b, "addr");
        put_str(&mut b, addr);
        put_str(&mut b, "delay_ms");
        put_uint(&mut b, 10);
        put_str(&mut b, "reason");
        put_str(&mut b, "connect");
        b
    };
    let decode = |b: &[u8]| raw(MessageType::Redirect as u8, b).decode();
    assert!(decode(&body(32, "h:1")).is_ok());
    assert!(matches!(
        decode(&body(33, "h:1")),
        Err(WireError::InvalidField { field: "owner", .. })
    ));
    assert!(matches!(
        decode(&body(32, "")),
        Err(WireError::InvalidField { field: "addr", .. })
    ));
}

fn member_s() -> impl Strategy<Value = FleetMember> {
    (
        any::<[u8; 32]>(),
        "[a-z0-9.:]{1,40}",
        1u32..=1000,
        any::<u64>(),
        0u8..4,
    )
        .prop_map(|(id, addr, weight, incarnation, s)| FleetMember {
            id,
            addr,
            weight,
            incarnation,
            status: MemberStatus::from_u8(s).unwrap(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn fleet_views_round_trip(
        members in prop::collection::vec(member_s(), 0..20),
        config in any::<u64>(),
        sender in any::<[u8; 32]>(),
    ) {
        let f = Frame::FleetView(FleetView { fleet: "fleet-a".into(), config, sender, members });
        let bytes = f.to_bytes();
        prop_assert_eq!(one_frame(&bytes).decode().unwrap(), f);
    }

    #[test]
    fn random_bodies_under_fleet_headers_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        for t in [MessageType::Redirect, MessageType::FleetView] {
            let mut framed = vec![0x84];
            framed.extend_from_slice(&body);
            for b in [&body[..], &framed[..]] {
                if let Ok(f) = raw(t as u8, b).decode() {
                    // Whatever decodes re-encodes to a frame that decodes to itself.
                    prop_assert_eq!(one_frame(&f.to_bytes()).decode().unwrap(), f);
                }
            }
        }
    }
}
