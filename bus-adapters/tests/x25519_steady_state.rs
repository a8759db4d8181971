//! Steady state performs no X25519 operation per message. This test has a
//! binary of its own because the operation counter is process-wide.

use std::sync::Arc;

use rand_core::OsRng;
use sealbus_bus_adapters::secure::{Engine, Inbound, SecurityConfig, SystemClock};
use sealbus_envelope::{x25519_operation_count, MessageEnvelope};
use sealbus_keyring::{
    Certificate, CertificateAuthority, Identity, Policy, ServiceName, StaticSecret,
};

const TOPIC: &str = "edgex/events/device/device-virtual/Random/Random/Int16";
const STEADY_MESSAGES: usize = 2000;

#[test]
fn steady_state_uses_no_x25519() {
    let mut authority = CertificateAuthority::in_memory(&mut OsRng);
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut identities = Vec::new();
    for (name, publish, subscribe) in [
        ("device-virtual", vec!["edgex/events/#".to_owned()], vec![]),
        ("core-data", vec![], vec!["edgex/events/#".to_owned()]),
        ("app-service", vec![], vec!["edgex/events/#".to_owned()]),
        ("rules-engine", vec![], vec!["edgex/events/#".to_owned()]),
    ] {
        let secret = StaticSecret::generate(&mut OsRng);
        let certificate = authority
            .issue(
                ServiceName::new(name).unwrap(),
                secret.public_key(),
                publish,
                subscribe,
                now_s - 60,
                now_s + 3600,
            )
            .unwrap();
        identities.push(Identity::new(secret, certificate).unwrap());
    }
    let certificates: Vec<Certificate> = identities
        .iter()
        .map(|identity| identity.certificate().clone())
        .collect();
    let policy = Policy::new(
        authority.sign_bundle(certificates, vec![], now_s).unwrap(),
        authority.public_key(),
    )
    .unwrap();
    let engine = |index: usize| {
        Engine::new(
            SecurityConfig {
                identity: identities[index].clone(),
                policy: policy.clone(),
                clock: Arc::new(SystemClock),
                rng: Box::new(OsRng),
            },
            "mqtt".into(),
        )
    };
    let mut device = engine(0);
    let mut subscribers: Vec<Engine> = (1..4).map(engine).collect();

    let deliver_all = |device: &mut Engine, subscribers: &mut Vec<Engine>, value: usize| {
        let envelope =
            MessageEnvelope::new(vec![b'x'; 256], format!("corr-{value}"), "application/json");
        let bytes = {
            let Engine {
                publisher, shared, ..
            } = device;
            publisher.seal(shared, TOPIC, &envelope).unwrap()
        };
        for subscriber in subscribers.iter_mut() {
            let mut out = Vec::new();
            let Engine {
                subscriber: state,
                shared,
                ..
            } = subscriber;
            state.handle_data(shared, TOPIC, &bytes, false, &mut out);
            assert!(
                matches!(out.as_slice(), [Inbound::Delivered(_)]),
                "message {value} not delivered: {out:?}"
            );
        }
    };

    // Warm-up: the first message creates the epoch and its grants.
    let before_warm_up = x25519_operation_count();
    deliver_all(&mut device, &mut subscribers, 0);
    let after_warm_up = x25519_operation_count();
    assert!(
        after_warm_up > before_warm_up,
        "the counter did not see the grant handshakes"
    );

    for value in 1..=STEADY_MESSAGES {
        deliver_all(&mut device, &mut subscribers, value);
    }
    assert_eq!(
        x25519_operation_count(),
        after_warm_up,
        "{STEADY_MESSAGES} steady-state messages to 3 recipients performed X25519 operations"
    );
}
