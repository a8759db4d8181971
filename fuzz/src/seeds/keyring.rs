//! Seeds of the keyring targets (`parse_certificate`, `parse_bundle`):
//! certificates and trust bundles issued by the fixed test CA.

use sealbus_keyring::{Certificate, CertificateAuthority, ServiceName, StaticSecret};

use super::Seed;
use crate::{
    ca_public, NOW_SECONDS, PUBLISHER_NAME, PUBLISHER_SECRET_BYTE, SUBSCRIBER_NAME,
    SUBSCRIBER_SECRET_BYTE,
};

/// How long before [`NOW_SECONDS`] the seed certificates become valid.
const VALID_BEFORE_NOW_SECONDS: u64 = 3600;

/// How long after [`NOW_SECONDS`] the seed certificates stay valid: a year.
const VALID_AFTER_NOW_SECONDS: u64 = 365 * 24 * 3600;

/// Issues the seed certificates with the fixed CA: the two parties of the
/// grant vectors, a command service, and a second certificate for
/// core-data that the second bundle uses to replace a revoked one.
pub(super) fn issue_certificates(ca: &mut CertificateAuthority) -> Vec<Certificate> {
    let not_before = NOW_SECONDS - VALID_BEFORE_NOW_SECONDS;
    let not_after = NOW_SECONDS + VALID_AFTER_NOW_SECONDS;
    let requests: [(&str, u8, &[&str], &[&str]); 4] = [
        (
            PUBLISHER_NAME,
            PUBLISHER_SECRET_BYTE,
            &["edgex/events/device/device-virtual/#"],
            &["edgex/device/command/request/device-virtual/#"],
        ),
        (
            SUBSCRIBER_NAME,
            SUBSCRIBER_SECRET_BYTE,
            &[],
            &["edgex/events/#"],
        ),
        (
            "core-command",
            0x33,
            &["edgex/device/command/request/+/#"],
            &[
                "edgex/device/command/response/#",
                "edgex/core/command/+/ünïcode",
            ],
        ),
        (SUBSCRIBER_NAME, 0x44, &[], &["edgex/events/#", "+/+/+"]),
    ];

    requests
        .iter()
        .map(|(name, secret_byte, publish, subscribe)| {
            ca.issue(
                ServiceName::new(*name).expect("valid seed name"),
                StaticSecret::from_bytes([*secret_byte; 32]).public_key(),
                publish.iter().map(|filter| filter.to_string()).collect(),
                subscribe.iter().map(|filter| filter.to_string()).collect(),
                not_before,
                not_after,
            )
            .expect("seed certificate issues")
        })
        .collect()
}

pub(super) fn parse_certificate_seeds(certificates: &[Certificate]) -> Vec<Seed> {
    let ca_public = ca_public();
    let mut seeds = vec![Seed::new("ca-pub.json", ca_public.to_json().into_bytes())];
    for certificate in certificates {
        certificate
            .verify(&ca_public, NOW_SECONDS)
            .expect("seed certificate verifies");
        let name = format!(
            "certificate-{}-serial-{}.json",
            certificate.name(),
            certificate.serial()
        );
        seeds.push(Seed::new(name, certificate.to_json().into_bytes()));
    }
    seeds
}

/// Signs three bundles: an empty one, one with the first three
/// certificates, and one that revokes core-data's first certificate and
/// lists its replacement.
pub(super) fn parse_bundle_seeds(
    ca: &mut CertificateAuthority,
    certificates: Vec<Certificate>,
) -> Vec<Seed> {
    let revoked = certificates[1].fingerprint();
    let contents = [
        ("bundle-empty.json", Vec::new(), Vec::new()),
        (
            "bundle-three-services.json",
            certificates[..3].to_vec(),
            Vec::new(),
        ),
        (
            "bundle-revoked-and-replaced.json",
            certificates,
            vec![revoked],
        ),
    ];

    let ca_public = ca_public();
    contents
        .into_iter()
        .map(|(name, certificates, revoked)| {
            let bundle = ca
                .sign_bundle(certificates, revoked, NOW_SECONDS)
                .expect("seed bundle signs");
            bundle.verify(&ca_public).expect("seed bundle verifies");
            Seed::new(name, bundle.to_json().into_bytes())
        })
        .collect()
}
