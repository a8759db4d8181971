//! Authorization decisions of `Policy` over bundles signed by a real CA.

use sealbus_keyring::{
    Action, Certificate, CertificateAuthority, ErrorCategory, KeyringError, Policy, ServiceName,
    StaticSecret, TrustBundle,
};

const NOT_BEFORE: u64 = 1_700_000_000;
const NOT_AFTER: u64 = NOT_BEFORE + 86_400;
const NOW: u64 = NOT_BEFORE + 10;

struct Deployment {
    ca: CertificateAuthority,
    certificates: Vec<Certificate>,
}

impl Deployment {
    fn new() -> Self {
        Deployment {
            ca: CertificateAuthority::in_memory(&mut rand_core::OsRng),
            certificates: Vec::new(),
        }
    }

    fn issue_window(
        &mut self,
        name: &str,
        publish: &[&str],
        subscribe: &[&str],
        not_before: u64,
        not_after: u64,
    ) -> Certificate {
        let secret = StaticSecret::generate(&mut rand_core::OsRng);
        let certificate = self
            .ca
            .issue(
                ServiceName::new(name).unwrap(),
                secret.public_key(),
                publish.iter().map(|f| f.to_string()).collect(),
                subscribe.iter().map(|f| f.to_string()).collect(),
                not_before,
                not_after,
            )
            .unwrap();
        self.certificates.push(certificate.clone());
        certificate
    }

    fn issue(&mut self, name: &str, publish: &[&str], subscribe: &[&str]) -> Certificate {
        self.issue_window(name, publish, subscribe, NOT_BEFORE, NOT_AFTER)
    }

    fn bundle(&mut self, revoked: &[&Certificate]) -> TrustBundle {
        let revoked = revoked.iter().map(|c| c.fingerprint()).collect();
        self.ca
            .sign_bundle(self.certificates.clone(), revoked, NOW)
            .unwrap()
    }

    fn policy(&mut self, revoked: &[&Certificate]) -> Policy {
        let bundle = self.bundle(revoked);
        Policy::new(bundle, self.ca.public_key()).unwrap()
    }
}

fn names(certificates: &[&Certificate]) -> Vec<String> {
    certificates.iter().map(|c| c.name().to_string()).collect()
}

#[test]
fn publisher_with_matching_filter_is_authorized() {
    let mut deployment = Deployment::new();
    deployment.issue(
        "device-virtual",
        &["edgex/events/device/device-virtual/#"],
        &[],
    );
    let policy = deployment.policy(&[]);

    let certificate = policy
        .authorize_publisher(
            "device-virtual",
            "edgex/events/device/device-virtual/Random/Int8",
            NOW,
        )
        .unwrap();
    assert_eq!(certificate.name().as_str(), "device-virtual");
}

#[test]
fn publish_without_matching_filter_is_denied() {
    let mut deployment = Deployment::new();
    deployment.issue(
        "device-virtual",
        &["edgex/events/device/device-virtual/#"],
        &["edgex/commands/#"],
    );
    let policy = deployment.policy(&[]);

    let error = policy
        .authorize_publisher("device-virtual", "edgex/events/device/other/x", NOW)
        .unwrap_err();
    match &error {
        KeyringError::Unauthorized {
            name,
            topic,
            action,
        } => {
            assert_eq!(name, "device-virtual");
            assert_eq!(topic, "edgex/events/device/other/x");
            assert_eq!(*action, Action::Publish);
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("device-virtual"), "{message}");
    assert!(message.contains("edgex/events/device/other/x"), "{message}");
    assert_eq!(error.category(), ErrorCategory::UntrustedInput);

    // A subscribe filter grants no publish permission.
    assert!(matches!(
        policy.authorize_publisher("device-virtual", "edgex/commands/x", NOW),
        Err(KeyringError::Unauthorized { .. })
    ));
}

#[test]
fn empty_grants_deny_everything() {
    let mut deployment = Deployment::new();
    deployment.issue("mute", &[], &[]);
    let policy = deployment.policy(&[]);

    assert!(policy.certificate("mute", NOW).is_ok());
    for topic in ["a", "edgex/events/x", "/", "$SYS/x"] {
        assert!(matches!(
            policy.authorize_publisher("mute", topic, NOW),
            Err(KeyringError::Unauthorized { .. })
        ));
        assert!(matches!(
            policy.authorize_subscriber("mute", topic, NOW),
            Err(KeyringError::Unauthorized { .. })
        ));
        assert!(policy.audience(topic, NOW).is_empty());
    }
}

#[test]
fn subscriber_checks_subscribe_filters() {
    let mut deployment = Deployment::new();
    deployment.issue("core-data", &["edgex/core-data/#"], &["edgex/events/#"]);
    let policy = deployment.policy(&[]);

    let certificate = policy
        .authorize_subscriber("core-data", "edgex/events/device/x", NOW)
        .unwrap();
    assert_eq!(certificate.name().as_str(), "core-data");

    match policy.authorize_subscriber("core-data", "edgex/core-data/x", NOW) {
        Err(KeyringError::Unauthorized { action, .. }) => assert_eq!(action, Action::Subscribe),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

#[test]
fn unknown_identity_is_denied() {
    let mut deployment = Deployment::new();
    deployment.issue("core-data", &["#"], &["#"]);
    let policy = deployment.policy(&[]);

    for name in ["core-command", "", "core data", "Core-Data"] {
        assert!(
            matches!(
                policy.certificate(name, NOW),
                Err(KeyringError::UnknownIdentity { .. })
            ),
            "{name:?}"
        );
        assert!(matches!(
            policy.authorize_publisher(name, "a", NOW),
            Err(KeyringError::UnknownIdentity { .. })
        ));
    }
}

#[test]
fn revoked_identity_is_denied() {
    let mut deployment = Deployment::new();
    let revoked = deployment.issue("compromised", &["#"], &["#"]);
    deployment.issue("healthy", &["#"], &["#"]);
    let policy = deployment.policy(&[&revoked]);

    assert!(policy.is_revoked(&revoked.fingerprint()));
    match policy.certificate("compromised", NOW) {
        Err(KeyringError::Revoked { name, fingerprint }) => {
            assert_eq!(name, "compromised");
            assert_eq!(fingerprint, revoked.fingerprint_hex());
        }
        other => panic!("expected Revoked, got {other:?}"),
    }
    assert!(matches!(
        policy.authorize_publisher("compromised", "a", NOW),
        Err(KeyringError::Revoked { .. })
    ));
    assert!(matches!(
        policy.authorize_subscriber("compromised", "a", NOW),
        Err(KeyringError::Revoked { .. })
    ));
    assert_eq!(names(&policy.audience("a", NOW)), ["healthy"]);
}

#[test]
fn rotated_identity_uses_new_certificate() {
    let mut deployment = Deployment::new();
    let old = deployment.issue("core-data", &["old/#"], &[]);
    let new = deployment.issue("core-data", &["new/#"], &[]);
    let policy = deployment.policy(&[&old]);

    let found = policy.certificate("core-data", NOW).unwrap();
    assert_eq!(found, &new);
    assert!(policy.is_revoked(&old.fingerprint()));
    assert!(!policy.is_revoked(&new.fingerprint()));
    assert!(policy
        .authorize_publisher("core-data", "new/x", NOW)
        .is_ok());
    assert!(matches!(
        policy.authorize_publisher("core-data", "old/x", NOW),
        Err(KeyringError::Unauthorized { .. })
    ));
}

#[test]
fn validity_boundaries() {
    let mut deployment = Deployment::new();
    deployment.issue("svc", &["t"], &["t"]);
    let policy = deployment.policy(&[]);

    assert!(matches!(
        policy.certificate("svc", NOT_BEFORE - 1),
        Err(KeyringError::NotYetValid { not_before: NOT_BEFORE, now, .. }) if now == NOT_BEFORE - 1
    ));
    assert!(policy.certificate("svc", NOT_BEFORE).is_ok());
    assert!(policy.certificate("svc", NOT_AFTER - 1).is_ok());
    assert!(matches!(
        policy.certificate("svc", NOT_AFTER),
        Err(KeyringError::Expired {
            not_after: NOT_AFTER,
            now: NOT_AFTER,
            ..
        })
    ));

    assert!(matches!(
        policy.authorize_publisher("svc", "t", NOT_AFTER),
        Err(KeyringError::Expired { .. })
    ));
    assert!(matches!(
        policy.authorize_subscriber("svc", "t", NOT_BEFORE - 1),
        Err(KeyringError::NotYetValid { .. })
    ));
    assert!(policy
        .authorize_publisher("svc", "t", NOT_AFTER - 1)
        .is_ok());

    assert!(policy.audience("t", NOT_BEFORE - 1).is_empty());
    assert_eq!(policy.audience("t", NOT_BEFORE).len(), 1);
    assert_eq!(policy.audience("t", NOT_AFTER - 1).len(), 1);
    assert!(policy.audience("t", NOT_AFTER).is_empty());
}

#[test]
fn audience_is_sorted_and_filtered() {
    let mut deployment = Deployment::new();
    deployment.issue("zeta", &[], &["edgex/events/#"]);
    deployment.issue("alpha", &[], &["edgex/events/device/+"]);
    deployment.issue("mid", &[], &["edgex/+/device/dev1/#"]);
    deployment.issue("other-topic", &[], &["edgex/commands/#"]);
    deployment.issue("publisher-only", &["edgex/events/#"], &[]);
    deployment.issue_window("future", &[], &["#"], NOW + 1, NOT_AFTER);
    deployment.issue_window("past", &[], &["#"], NOT_BEFORE - 100, NOW);
    let revoked = deployment.issue("revoked", &[], &["#"]);
    deployment.issue("everything", &[], &["#"]);
    let policy = deployment.policy(&[&revoked]);

    let audience = policy.audience("edgex/events/device/dev1", NOW);
    assert_eq!(names(&audience), ["alpha", "everything", "mid", "zeta"]);

    let deeper = policy.audience("edgex/events/device/dev1/extra", NOW);
    assert_eq!(names(&deeper), ["everything", "mid", "zeta"]);
}

#[test]
fn dollar_topics_need_explicit_filters() {
    let mut deployment = Deployment::new();
    deployment.issue("wildcard", &["#"], &["#", "+/status"]);
    deployment.issue("monitor", &["$SYS/#"], &["$SYS/#"]);
    let policy = deployment.policy(&[]);

    assert_eq!(names(&policy.audience("$SYS/status", NOW)), ["monitor"]);
    assert!(matches!(
        policy.authorize_publisher("wildcard", "$SYS/status", NOW),
        Err(KeyringError::Unauthorized { .. })
    ));
    assert!(policy
        .authorize_publisher("monitor", "$SYS/status", NOW)
        .is_ok());
}

#[test]
fn invalid_topic_is_rejected() {
    let mut deployment = Deployment::new();
    deployment.issue("svc", &["#"], &["#"]);
    let policy = deployment.policy(&[]);

    for topic in ["", "a/+", "a/#", "a\0b"] {
        let error = policy.authorize_publisher("svc", topic, NOW).unwrap_err();
        assert!(
            matches!(error, KeyringError::InvalidTopic { .. }),
            "{topic:?}: {error:?}"
        );
        assert!(matches!(
            policy.authorize_subscriber("svc", topic, NOW),
            Err(KeyringError::InvalidTopic { .. })
        ));
        assert!(policy.audience(topic, NOW).is_empty(), "{topic:?}");
    }
}

#[test]
fn policy_rejects_bundle_of_other_ca() {
    let mut deployment = Deployment::new();
    deployment.issue("svc", &["#"], &["#"]);
    let bundle = deployment.bundle(&[]);
    let other = CertificateAuthority::in_memory(&mut rand_core::OsRng);

    assert!(matches!(
        Policy::new(bundle, other.public_key()),
        Err(KeyringError::BadSignature { .. })
    ));
}

#[test]
fn update_accepts_newer_and_rejects_rollback() {
    let mut deployment = Deployment::new();
    let first_cert = deployment.issue("svc", &["#"], &["#"]);
    let first = deployment.bundle(&[]);
    let second = deployment.bundle(&[&first_cert]);
    assert_eq!(first.version() + 1, second.version());

    let mut policy = Policy::new(first.clone(), deployment.ca.public_key()).unwrap();
    assert!(policy.authorize_publisher("svc", "a", NOW).is_ok());

    policy.update(second.clone()).unwrap();
    assert_eq!(policy.version(), second.version());
    assert!(matches!(
        policy.authorize_publisher("svc", "a", NOW),
        Err(KeyringError::Revoked { .. })
    ));

    for stale in [first, second.clone()] {
        let result = policy.update(stale);
        assert!(
            matches!(result, Err(KeyringError::BundleRollback { .. })),
            "{result:?}"
        );
        assert_eq!(policy.version(), second.version());
    }
}

#[test]
fn update_keeps_policy_on_bad_bundle() {
    let mut deployment = Deployment::new();
    deployment.issue("svc", &["#"], &["#"]);
    let first = deployment.bundle(&[]);
    let mut policy = Policy::new(first, deployment.ca.public_key()).unwrap();

    let mut other = Deployment::new();
    other.issue("intruder", &["#"], &["#"]);
    for _ in 0..5 {
        other.bundle(&[]);
    }
    let foreign = other.bundle(&[]);
    assert!(foreign.version() > policy.version());

    assert!(matches!(
        policy.update(foreign),
        Err(KeyringError::BadSignature { .. })
    ));
    assert!(policy.authorize_publisher("svc", "a", NOW).is_ok());
    assert!(matches!(
        policy.certificate("intruder", NOW),
        Err(KeyringError::UnknownIdentity { .. })
    ));
}
