//! Parses arbitrary bytes as a trust bundle's JSON form.
//!
//! Checks:
//! - No input panics, in parsing, in verifying against the fixed test CA,
//!   or in the policy look-ups of a bundle that verifies.
//! - A parsed bundle's own JSON parses to an equal bundle with equal
//!   to-be-signed bytes.
//! - A bundle that verifies builds a policy.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sealbus_fuzz::{ca_public, CHANNELS, NOW_SECONDS};
use sealbus_keyring::{CaPublicKey, Policy, TrustBundle};

/// Returns the fixed CA key, derived on the first call because drawing it
/// costs an Ed25519 key generation.
fn fixed_ca_public() -> &'static CaPublicKey {
    static CA_PUBLIC: OnceLock<CaPublicKey> = OnceLock::new();
    CA_PUBLIC.get_or_init(ca_public)
}

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = TrustBundle::from_json(data) else {
        return;
    };

    let json = bundle.to_json();
    let reparsed = TrustBundle::from_json(json.as_bytes()).expect("a bundle's own JSON parses");
    assert_eq!(reparsed.tbs_bytes(), bundle.tbs_bytes());
    assert_eq!(reparsed, bundle);

    let ca_public = fixed_ca_public();
    if bundle.verify(ca_public).is_err() {
        return;
    }
    let policy = Policy::new(bundle, ca_public).expect("a verified bundle builds a policy");
    exercise_policy(&policy);
});

/// Runs every look-up of the policy for each certificate's name on the
/// topics of the fixed channels.
fn exercise_policy(policy: &Policy) {
    for certificate in policy.bundle().certificates() {
        let name = certificate.name().as_str();
        let _ = policy.is_revoked(&certificate.fingerprint());
        let _ = policy.certificate(name, NOW_SECONDS);
        for channel in &CHANNELS {
            let _ = policy.authorize_publisher(name, channel.route.topic, NOW_SECONDS);
            let _ = policy.authorize_subscriber(name, channel.route.topic, NOW_SECONDS);
        }
    }
    for channel in &CHANNELS {
        let _ = policy.audience(channel.route.topic, NOW_SECONDS);
    }
}
