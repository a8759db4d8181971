//! Parses arbitrary bytes as a certificate's JSON form and as a CA public
//! key's JSON form.
//!
//! Checks:
//! - No input panics, in parsing or in verifying a certificate against the
//!   fixed test CA.
//! - Each parsed value's own JSON parses to an equal value. For a
//!   certificate, the to-be-signed bytes and the fingerprint are equal too.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sealbus_fuzz::{ca_public, NOW_SECONDS};
use sealbus_keyring::{CaPublicKey, Certificate};

/// Returns the fixed CA key, derived on the first call because drawing it
/// costs an Ed25519 key generation.
fn fixed_ca_public() -> &'static CaPublicKey {
    static CA_PUBLIC: OnceLock<CaPublicKey> = OnceLock::new();
    CA_PUBLIC.get_or_init(ca_public)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(certificate) = Certificate::from_json(data) {
        check_certificate(&certificate);
    }
    if let Ok(key) = CaPublicKey::from_json(data) {
        check_ca_public(&key);
    }
});

fn check_certificate(certificate: &Certificate) {
    let json = certificate.to_json();
    let reparsed =
        Certificate::from_json(json.as_bytes()).expect("a certificate's own JSON parses");
    assert_eq!(reparsed.tbs_bytes(), certificate.tbs_bytes());
    assert_eq!(reparsed.fingerprint(), certificate.fingerprint());
    assert_eq!(&reparsed, certificate);

    let _ = certificate.verify(fixed_ca_public(), NOW_SECONDS);
    let _ = certificate.is_valid_at(NOW_SECONDS);
}

fn check_ca_public(key: &CaPublicKey) {
    let json = key.to_json();
    let reparsed = CaPublicKey::from_json(json.as_bytes()).expect("a CA key's own JSON parses");
    assert_eq!(&reparsed, key);
    let from_bytes = CaPublicKey::from_bytes(&key.to_bytes()).expect("a CA key's bytes parse");
    assert_eq!(&from_bytes, key);
}
