//! The public parsers accept arbitrary bytes without panicking, and a parsed
//! value that verifies is exactly the value the CA signed.

use proptest::prelude::*;
use sealbus_keyring::{
    CaPublicKey, Certificate, CertificateAuthority, ServiceName, StaticSecret, TrustBundle,
};

const NOW: u64 = 1_700_000_000;

fn sample() -> (CertificateAuthority, Certificate, TrustBundle) {
    let mut ca = CertificateAuthority::in_memory(&mut rand_core::OsRng);
    let secret = StaticSecret::generate(&mut rand_core::OsRng);
    let certificate = ca
        .issue(
            ServiceName::new("core-data").unwrap(),
            secret.public_key(),
            vec!["edgex/events/#".into()],
            vec!["edgex/commands/+/core-data".into()],
            NOW,
            NOW + 3600,
        )
        .unwrap();
    let bundle = ca
        .sign_bundle(vec![certificate.clone()], vec![[0x11; 32]], NOW)
        .unwrap();
    (ca, certificate, bundle)
}

/// Replaces, inserts or deletes bytes at the given positions.
fn mutate(input: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut out = input.to_vec();
    for &(position, kind, byte) in edits {
        if out.is_empty() {
            out.push(byte);
            continue;
        }
        let index = position % out.len();
        match kind % 3 {
            0 => out[index] = byte,
            1 => out.insert(index, byte),
            _ => {
                out.remove(index);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Certificate::from_json(&input);
        let _ = TrustBundle::from_json(&input);
        let _ = CaPublicKey::from_json(&input);
    }

    #[test]
    fn mutated_certificate_never_verifies_as_different(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4)
    ) {
        let (ca, certificate, _) = sample();
        let input = mutate(certificate.to_json().as_bytes(), &edits);
        if let Ok(parsed) = Certificate::from_json(&input) {
            // Parsing is stable: encoding and parsing again gives the same value.
            let reparsed = Certificate::from_json(parsed.to_json().as_bytes());
            prop_assert_eq!(reparsed.as_ref().ok(), Some(&parsed));
            if parsed.verify(ca.public_key(), NOW).is_ok() {
                prop_assert_eq!(&parsed, &certificate);
            }
        }
    }

    #[test]
    fn mutated_bundle_never_verifies_as_different(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4)
    ) {
        let (ca, _, bundle) = sample();
        let input = mutate(bundle.to_json().as_bytes(), &edits);
        if let Ok(parsed) = TrustBundle::from_json(&input) {
            let reparsed = TrustBundle::from_json(parsed.to_json().as_bytes());
            prop_assert_eq!(reparsed.as_ref().ok(), Some(&parsed));
            if parsed.verify(ca.public_key()).is_ok() {
                prop_assert_eq!(&parsed, &bundle);
            }
        }
    }
}

#[test]
fn deeply_nested_json_is_rejected() {
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(Certificate::from_json(nested.as_bytes()).is_err());
    assert!(TrustBundle::from_json(nested.as_bytes()).is_err());
}

#[test]
fn wrong_json_types_are_rejected() {
    let inputs: [&[u8]; 8] = [
        b"",
        b"null",
        b"[]",
        b"{}",
        b"\"text\"",
        b"{\"version\":1}",
        b"{\"version\":1.5,\"serial\":1}",
        b"\xff\xfe",
    ];
    for input in inputs {
        assert!(Certificate::from_json(input).is_err(), "{input:?}");
        assert!(TrustBundle::from_json(input).is_err(), "{input:?}");
        assert!(CaPublicKey::from_json(input).is_err(), "{input:?}");
    }
}
