//! 256-bit identifiers, the XOR metric and bucket indices (the paper, §2.1).
//!
//! Node ids and record keys live in the same 256-bit space, so one type, [`Id`], serves both
//! ([`NodeId`] and [`Key`] are aliases naming the role).
//!
//! - **Node id** = SHA-256(Ed25519 public key) ([`Id::from_public_key`]): a node cannot pick
//!   its position in the key space without also holding the matching private key, and the id
//!   can be checked against the key the peer proved during the QUIC/TLS handshake.
//! - **Record key** = SHA-256(`b"macula-dht-v1\0"` ‖ realm ‖ `0x00` ‖ name) ([`Id::scoped`]).
//!   The realm is part of the hash, so two tenants publishing the same procedure name get
//!   unrelated keys and never read or overwrite each other's records (Macula v0.16 defect 6:
//!   keys were the bare hash of the name, shared by all realms). The version prefix keeps this
//!   derivation apart from any other use of SHA-256 in the protocol.

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};

/// Length of an id in bytes (256 bits).
pub const ID_LEN: usize = 32;

/// Domain-separation prefix of [`Id::scoped`]: the protocol name, the key-derivation version
/// and a NUL.
pub const SCOPED_KEY_PREFIX: &[u8] = b"macula-dht-v1\0";

/// A 256-bit position in the Kademlia key space: a node id or a record key. Bytes are
/// big-endian (byte 0 holds the most significant bits). Displays as 64 lowercase hex digits;
/// `Debug` shows the first 8 (`Id(0a1b2c3d…)`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; ID_LEN]);

/// An [`Id`] naming a node: SHA-256 of its Ed25519 public key.
pub type NodeId = Id;

/// An [`Id`] naming a record key: see [`Id::scoped`].
pub type Key = Id;

/// XOR distance between two ids (the paper, §2.1), compared as a 256-bit big-endian unsigned
/// integer: the derived `Ord` on the byte array is exactly that order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Distance(pub [u8; ID_LEN]);

/// Error from [`Id::from_hex`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is not 64 characters long.
    #[error("id must be 64 hex digits, got {len} characters")]
    BadLength {
        /// Length of the input, in bytes.
        len: usize,
    },
    /// A character is not a hex digit.
    #[error("character at byte {index} is not a hex digit")]
    BadHex {
        /// Byte offset of the offending character.
        index: usize,
    },
}

impl Id {
    /// The id whose bytes are all zero.
    pub const ZERO: Id = Id([0; ID_LEN]);

    /// The id with the given big-endian bytes.
    pub const fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        Id(bytes)
    }

    /// The 32 big-endian bytes.
    pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// Node id of the node holding `public_key` (the 32 bytes of an Ed25519 public key):
    /// node id = SHA-256(ed25519 public key).
    pub fn from_public_key(public_key: &[u8; 32]) -> NodeId {
        Id(Sha256::digest(public_key).into())
    }

    /// Record key of `name` (a procedure or topic name) inside `realm` (a reverse-DNS tenant
    /// name such as `io.macula`): SHA-256(`b"macula-dht-v1\0"` ‖ realm ‖ `0x00` ‖ name).
    ///
    /// Scoping by realm keeps tenants in disjoint key spaces (Macula v0.16 defect 6). The NUL
    /// separator makes the pair unambiguous because realm names never contain NUL (they are
    /// validated reverse-DNS names).
    pub fn scoped(realm: &str, name: &str) -> Key {
        let mut h = Sha256::new();
        h.update(SCOPED_KEY_PREFIX);
        h.update(realm.as_bytes());
        h.update([0u8]);
        h.update(name.as_bytes());
        Id(h.finalize().into())
    }

    /// A uniformly random id (for bucket refresh targets and tests).
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Id(rng.random())
    }

    /// A random id that falls in bucket `index` of a table owned by `self`: it shares the
    /// first `index` bits with `self`, differs at bit `index`, and is random after it. Used to
    /// refresh a bucket (the paper, §2.3: "picking a random ID in the bucket's range").
    /// `index` is clamped to 0..=255.
    pub fn random_in_bucket<R: Rng + ?Sized>(&self, index: usize, rng: &mut R) -> Self {
        let index = index.min(ID_LEN * 8 - 1);
        let mut noise: [u8; ID_LEN] = rng.random();
        // Distance: `index` zero bits, a one at bit `index`, random bits after.
        let byte = index / 8;
        let bit = 7 - (index % 8);
        for b in noise.iter_mut().take(byte) {
            *b = 0;
        }
        let below = (1u8 << bit) - 1; // the bits after bit `index` in this byte
        noise[byte] = (noise[byte] & below) | (1u8 << bit);
        let mut out = self.0;
        for (o, n) in out.iter_mut().zip(noise) {
            *o ^= n;
        }
        Id(out)
    }

    /// XOR distance from `self` to `other` (symmetric).
    pub fn distance(&self, other: &Id) -> Distance {
        distance(self, other)
    }

    /// Parses 64 hex digits (either case).
    ///
    /// Errors: [`IdError::BadLength`], [`IdError::BadHex`].
    pub fn from_hex(s: &str) -> Result<Self, IdError> {
        let b = s.as_bytes();
        if b.len() != ID_LEN * 2 {
            return Err(IdError::BadLength { len: b.len() });
        }
        let mut out = [0u8; ID_LEN];
        for (i, o) in out.iter_mut().enumerate() {
            let hi = hex_val(b[2 * i]).ok_or(IdError::BadHex { index: 2 * i })?;
            let lo = hex_val(b[2 * i + 1]).ok_or(IdError::BadHex { index: 2 * i + 1 })?;
            *o = (hi << 4) | lo;
        }
        Ok(Id(out))
    }
}

/// XOR distance between `a` and `b` (the paper, §2.1).
pub fn distance(a: &Id, b: &Id) -> Distance {
    let mut d = [0u8; ID_LEN];
    for (i, out) in d.iter_mut().enumerate() {
        *out = a.0[i] ^ b.0[i];
    }
    Distance(d)
}

/// Index of the k-bucket of a table owned by `own` that holds `other`: the number of leading
/// zero bits of their distance, 0..=255 (bucket 0 holds the farthest half of the key space,
/// bucket 255 the single closest id). `None` when `own == other` (a node never stores itself).
pub fn bucket_index(own: &Id, other: &Id) -> Option<usize> {
    let lz = distance(own, other).leading_zeros() as usize;
    (lz < ID_LEN * 8).then_some(lz)
}

impl Distance {
    /// The zero distance (an id to itself).
    pub const ZERO: Distance = Distance([0; ID_LEN]);

    /// Number of leading zero bits, 0..=256 (256 only for the zero distance).
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for b in self.0 {
            if b != 0 {
                return n + b.leading_zeros();
            }
            n += 8;
        }
        n
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Id(")?;
        write_hex(f, &self.0[..4])?;
        f.write_str("…)")
    }
}

impl fmt::Display for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Distance(")?;
        write_hex(f, &self.0[..4])?;
        f.write_str("…)")
    }
}

impl std::str::FromStr for Id {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Id::from_hex(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn id_with_byte0(b: u8) -> Id {
        let mut x = [0u8; ID_LEN];
        x[0] = b;
        Id(x)
    }

    #[test]
    fn distance_is_xor_and_ordered_big_endian() {
        let a = id_with_byte0(0b1010_0000);
        let b = id_with_byte0(0b0110_0000);
        assert_eq!(a.distance(&b).0[0], 0b1100_0000);
        assert_eq!(a.distance(&a), Distance::ZERO);
        // A difference in byte 0 outweighs any difference in later bytes.
        let mut low = [0xffu8; ID_LEN];
        low[0] = 0;
        assert!(Distance(low) < id_with_byte0(1).distance(&Id::ZERO));
    }

    #[test]
    fn bucket_index_counts_leading_zero_bits() {
        assert_eq!(bucket_index(&Id::ZERO, &Id::ZERO), None);
        assert_eq!(bucket_index(&Id::ZERO, &id_with_byte0(0x80)), Some(0));
        assert_eq!(bucket_index(&Id::ZERO, &id_with_byte0(0x01)), Some(7));
        let mut last = [0u8; ID_LEN];
        last[31] = 1;
        assert_eq!(bucket_index(&Id::ZERO, &Id(last)), Some(255));
        last[31] = 0xff;
        assert_eq!(bucket_index(&Id::ZERO, &Id(last)), Some(248));
    }

    #[test]
    fn node_id_is_sha256_of_public_key() {
        // SHA-256 of 32 zero bytes.
        let id = Id::from_public_key(&[0u8; 32]);
        assert_eq!(
            id.to_string(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn scoped_keys_differ_by_realm_and_name() {
        let a = Id::scoped("io.macula", "svc.echo");
        assert_eq!(a, Id::scoped("io.macula", "svc.echo"));
        assert_ne!(a, Id::scoped("com.example", "svc.echo"));
        assert_ne!(a, Id::scoped("io.macula", "svc.echo2"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(Id::scoped("ab", "c"), Id::scoped("a", "bc"));
        // Not the bare hash of the name (the v0.16 derivation).
        assert_ne!(a, Id(Sha256::digest(b"svc.echo").into()));
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let id = Id::scoped("r", "n");
        assert_eq!(Id::from_hex(&id.to_string()), Ok(id));
        assert_eq!(
            Id::from_hex(&id.to_string().to_uppercase()),
            Ok(id),
            "upper case accepted"
        );
        assert_eq!(Id::from_hex("ab"), Err(IdError::BadLength { len: 2 }));
        let mut bad = id.to_string();
        bad.replace_range(5..6, "g");
        assert_eq!(Id::from_hex(&bad), Err(IdError::BadHex { index: 5 }));
        assert_eq!(format!("{id:?}").len(), "Id(…)".len() + 8);
    }

    #[test]
    fn random_in_bucket_lands_in_that_bucket() {
        let mut rng = StdRng::seed_from_u64(7);
        let own = Id::random(&mut rng);
        for index in 0..256 {
            for _ in 0..4 {
                let id = own.random_in_bucket(index, &mut rng);
                assert_eq!(bucket_index(&own, &id), Some(index));
            }
        }
    }

    proptest! {
        #[test]
        fn distance_is_a_metric(a in any::<[u8; 32]>(), b in any::<[u8; 32]>(), c in any::<[u8; 32]>()) {
            let (a, b, c) = (Id(a), Id(b), Id(c));
            prop_assert_eq!(a.distance(&b), b.distance(&a));
            prop_assert_eq!(a.distance(&b) == Distance::ZERO, a == b);
            // XOR is unidirectional: for a given point and distance there is exactly one
            // point at that distance (the paper, §2.1).
            if a.distance(&b) == a.distance(&c) { prop_assert_eq!(b, c); }
        }

        #[test]
        fn bucket_index_matches_first_differing_bit(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let (a, b) = (Id(a), Id(b));
            match bucket_index(&a, &b) {
                None => prop_assert_eq!(a, b),
                Some(i) => {
                    let bit = |x: &Id, i: usize| (x.0[i / 8] >> (7 - i % 8)) & 1;
                    for j in 0..i { prop_assert_eq!(bit(&a, j), bit(&b, j)); }
                    prop_assert_ne!(bit(&a, i), bit(&b, i));
                }
            }
        }
    }
}
