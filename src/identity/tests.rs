use super::*;
use proptest::prelude::*;

fn exporter(b: u8) -> [u8; EXPORTER_LEN] {
    [b; EXPORTER_LEN]
}

#[test]
fn a_proof_verifies_for_its_side_and_connection_only() {
    let me = Identity::from_secret(&[7; 32]);
    let p = me.prove(Side::Initiator, &exporter(1));
    assert_eq!(
        verify(Side::Initiator, &exporter(1), &me.node_id(), Some(&p)),
        Ok(())
    );
    // Replayed on another connection (other exporter bytes).
    assert_eq!(
        verify(Side::Initiator, &exporter(2), &me.node_id(), Some(&p)),
        Err(ProofError::BadSignature)
    );
    // Reflected: the initiator's proof is not the acceptor's.
    assert_eq!(
        verify(Side::Acceptor, &exporter(1), &me.node_id(), Some(&p)),
        Err(ProofError::BadSignature)
    );
}

#[test]
fn an_id_claimed_without_its_key_is_refused() {
    let me = Identity::from_secret(&[7; 32]);
    let victim = Identity::from_secret(&[8; 32]);
    let mine = me.prove(Side::Initiator, &exporter(1));
    // My key, the victim's id.
    assert_eq!(
        verify(
            Side::Initiator,
            &exporter(1),
            &victim.node_id(),
            Some(&mine)
        ),
        Err(ProofError::WrongId)
    );
    // The victim's public key with my signature.
    let forged = Proof {
        public_key: victim.public_key(),
        signature: mine.signature,
    };
    assert_eq!(
        verify(
            Side::Initiator,
            &exporter(1),
            &victim.node_id(),
            Some(&forged)
        ),
        Err(ProofError::BadSignature)
    );
    assert_eq!(
        verify(Side::Initiator, &exporter(1), &me.node_id(), None),
        Err(ProofError::Missing)
    );
}

#[test]
fn the_key_file_survives_restarts_and_a_corrupt_one_is_an_error() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let id = Identity::load_or_create(a.path()).unwrap().node_id();
    assert_eq!(
        Identity::load_or_create(a.path()).unwrap().node_id(),
        id,
        "same key after a restart"
    );
    assert_ne!(Identity::load_or_create(b.path()).unwrap().node_id(), id);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(a.path().join(IDENTITY_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key is readable by its owner only");
    }
    std::fs::write(a.path().join(IDENTITY_KEY_FILE), b"garbage").unwrap();
    assert!(matches!(
        Identity::load_or_create(a.path()),
        Err(IdentityError::Invalid { .. })
    ));
}

#[test]
fn a_key_written_by_ring_keeps_its_node_id() {
    // Files written before this module (ring's PKCS#8 v2) load with the same id.
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let rng = ring::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
    let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
    std::fs::write(dir.path().join(IDENTITY_KEY_FILE), doc.as_ref()).unwrap();
    let id = Identity::load_or_create(dir.path()).unwrap();
    assert_eq!(id.public_key(), public);
    assert_eq!(id.node_id(), crate::dht::Id::from_public_key(&public).0);
}

proptest! {
    /// Garbage proofs never verify and never panic.
    #[test]
    fn garbage_never_verifies(
        key in proptest::array::uniform32(any::<u8>()),
        sig in proptest::collection::vec(any::<u8>(), 64),
        claimed in proptest::array::uniform32(any::<u8>()),
        ex in proptest::array::uniform32(any::<u8>()),
    ) {
        let proof = Proof { public_key: key, signature: sig.try_into().unwrap() };
        prop_assert!(verify(Side::Initiator, &ex, &claimed, Some(&proof)).is_err());
    }

    /// Any flipped bit of a valid proof or of the exporter makes it fail.
    #[test]
    fn a_flipped_bit_fails(bit in 0usize..(96 * 8 + EXPORTER_LEN * 8)) {
        let me = Identity::from_secret(&[3; 32]);
        let mut ex = exporter(9);
        let mut p = me.prove(Side::Initiator, &ex);
        let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
        if byte < 32 {
            p.public_key[byte] ^= mask;
        } else if byte < 96 {
            p.signature[byte - 32] ^= mask;
        } else {
            ex[byte - 96] ^= mask;
        }
        prop_assert!(verify(Side::Initiator, &ex, &me.node_id(), Some(&p)).is_err());
    }
}
