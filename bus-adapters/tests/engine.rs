//! Security engine tests without any transport: bytes are handed from one
//! engine to another, and a manual clock stands in for time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand_core::OsRng;
use sealbus_bus_adapters::error::AdapterError;
use sealbus_bus_adapters::secure::control::{grant_request_topic, grant_topic};
use sealbus_bus_adapters::secure::publisher::GRANT_REPEAT_INTERVAL_MS;
use sealbus_bus_adapters::secure::subscriber::MAX_HELD_AGE_MS;
use sealbus_bus_adapters::secure::{Clock, Engine, Inbound, SecurityConfig, Verdict};
use sealbus_envelope::limits::MAX_CLOCK_SKEW_MS;
use sealbus_envelope::MessageEnvelope;
use sealbus_keyring::{
    Certificate, CertificateAuthority, Identity, Policy, ServiceName, StaticSecret,
};

const START_MS: u64 = 1_780_000_000_000;
const TOPIC: &str = "edgex/events/device/device-virtual/Random/Random/Int16";

#[derive(Debug)]
struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl ManualClock {
    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

struct World {
    clock: Arc<ManualClock>,
    authority: CertificateAuthority,
    identities: Vec<Identity>,
    policy: Policy,
}

const LIFETIME_S: u64 = 3600;

impl World {
    fn new() -> Self {
        let mut authority = CertificateAuthority::in_memory(&mut OsRng);
        let specs: [(&str, &[&str], &[&str]); 4] = [
            (
                "device-virtual",
                &["edgex/events/device/device-virtual/#", "edgex/unheard/#"],
                &[],
            ),
            ("core-data", &[], &["edgex/events/#"]),
            ("app-service", &[], &["edgex/events/#"]),
            ("rogue-service", &["rogue/#"], &["rogue/#"]),
        ];
        let mut identities = Vec::new();
        let start_s = START_MS / 1000;
        for (name, publish, subscribe) in specs {
            let secret = StaticSecret::generate(&mut OsRng);
            let certificate = authority
                .issue(
                    ServiceName::new(name).unwrap(),
                    secret.public_key(),
                    publish.iter().map(|filter| (*filter).to_owned()).collect(),
                    subscribe
                        .iter()
                        .map(|filter| (*filter).to_owned())
                        .collect(),
                    start_s - 60,
                    start_s + LIFETIME_S,
                )
                .unwrap();
            identities.push(Identity::new(secret, certificate).unwrap());
        }
        let certificates: Vec<Certificate> = identities
            .iter()
            .map(|identity| identity.certificate().clone())
            .collect();
        let bundle = authority
            .sign_bundle(certificates, Vec::new(), start_s)
            .unwrap();
        let policy = Policy::new(bundle, authority.public_key()).unwrap();
        Self {
            clock: Arc::new(ManualClock(AtomicU64::new(START_MS))),
            authority,
            identities,
            policy,
        }
    }

    fn engine_with(&self, name: &str, policy: Policy, clock: Arc<ManualClock>) -> Engine {
        let identity = self
            .identities
            .iter()
            .find(|identity| identity.name().as_str() == name)
            .unwrap()
            .clone();
        Engine::new(
            SecurityConfig {
                identity,
                policy,
                clock,
                rng: Box::new(OsRng),
            },
            "memory".into(),
        )
    }

    fn engine(&self, name: &str) -> Engine {
        self.engine_with(name, self.policy.clone(), Arc::clone(&self.clock))
    }

    fn revoke(&mut self, name: &str) -> Policy {
        let fingerprint = self
            .identities
            .iter()
            .find(|identity| identity.name().as_str() == name)
            .unwrap()
            .certificate()
            .fingerprint();
        let certificates: Vec<Certificate> = self
            .identities
            .iter()
            .map(|identity| identity.certificate().clone())
            .collect();
        let bundle = self
            .authority
            .sign_bundle(certificates, vec![fingerprint], START_MS / 1000)
            .unwrap();
        Policy::new(bundle, self.authority.public_key()).unwrap()
    }
}

fn reading(value: &str) -> MessageEnvelope {
    MessageEnvelope::new(
        format!("{{\"value\":\"{value}\"}}").into_bytes(),
        format!("corr-{value}"),
        "application/json",
    )
}

fn seal(engine: &mut Engine, topic: &str, envelope: &MessageEnvelope) -> Vec<u8> {
    let Engine {
        publisher, shared, ..
    } = engine;
    publisher.seal(shared, topic, envelope).unwrap()
}

fn receive(engine: &mut Engine, topic: &str, bytes: &[u8], redelivery: bool) -> Vec<Inbound> {
    let mut out = Vec::new();
    let Engine {
        subscriber, shared, ..
    } = engine;
    subscriber.handle_data(shared, topic, bytes, redelivery, &mut out);
    out
}

fn delivered(out: &[Inbound]) -> Vec<&sealbus_bus_adapters::secure::subscriber::Delivered> {
    out.iter()
        .filter_map(|item| match item {
            Inbound::Delivered(delivered) => Some(delivered),
            _ => None,
        })
        .collect()
}

fn verdicts(out: &[Inbound]) -> Vec<Verdict> {
    out.iter()
        .filter_map(|item| match item {
            Inbound::Rejected(rejection) => Some(rejection.verdict),
            _ => None,
        })
        .collect()
}

fn sends(out: &[Inbound]) -> Vec<(String, Vec<u8>)> {
    out.iter()
        .filter_map(|item| match item {
            Inbound::Send { topic, bytes } => Some((topic.clone(), bytes.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn engine_delivers_with_verified_sender() {
    let world = World::new();
    let mut device = world.engine("device-virtual");
    let mut core = world.engine("core-data");
    let bytes = seal(&mut device, TOPIC, &reading("1"));
    let out = receive(&mut core, TOPIC, &bytes, false);
    let messages = delivered(&out);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].sender, "device-virtual");
    assert_eq!(messages[0].envelope.correlation_id, "corr-1");
    assert_eq!(core.shared.metrics.snapshot().delivered, 1);
}

#[test]
fn redelivery_is_duplicate_and_replay_is_replay() {
    let world = World::new();
    let mut device = world.engine("device-virtual");
    let mut core = world.engine("core-data");
    let bytes = seal(&mut device, TOPIC, &reading("1"));
    assert_eq!(
        delivered(&receive(&mut core, TOPIC, &bytes, false)).len(),
        1
    );

    let out = receive(&mut core, TOPIC, &bytes, true);
    assert!(delivered(&out).is_empty());
    assert_eq!(verdicts(&out), vec![Verdict::Duplicate]);

    let out = receive(&mut core, TOPIC, &bytes, false);
    assert!(delivered(&out).is_empty());
    assert_eq!(verdicts(&out), vec![Verdict::Replay]);
    let metrics = core.shared.metrics.snapshot();
    assert_eq!(metrics.rejected(Verdict::Duplicate), 1);
    assert_eq!(metrics.rejected(Verdict::Replay), 1);
}

#[test]
fn missing_grant_is_requested_and_held_message_released() {
    let world = World::new();
    let mut device = world.engine("device-virtual");
    let mut early = world.engine("core-data");
    let first = seal(&mut device, TOPIC, &reading("1"));
    assert_eq!(
        delivered(&receive(&mut early, TOPIC, &first, false)).len(),
        1
    );

    // A subscriber that missed the first message (and its inline grants).
    let mut late = world.engine("core-data");
    let second = seal(&mut device, TOPIC, &reading("2"));
    let out = receive(&mut late, TOPIC, &second, false);
    assert!(delivered(&out).is_empty(), "opened without a grant");
    let requests = sends(&out);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0, grant_request_topic("device-virtual"));
    assert_eq!(late.subscriber.held_count(), 1);

    let (grant_topic_name, grant) = {
        let Engine {
            publisher, shared, ..
        } = &mut device;
        publisher
            .answer_grant_request(shared, &requests[0].0, &requests[0].1)
            .unwrap()
    };
    assert_eq!(grant_topic_name, grant_topic("core-data"));

    let mut out = Vec::new();
    {
        let Engine {
            subscriber, shared, ..
        } = &mut late;
        subscriber.handle_grant(shared, &grant_topic_name, &grant, &mut out);
    }
    let released = delivered(&out);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].envelope.correlation_id, "corr-2");
    assert_eq!(late.subscriber.held_count(), 0);
}

#[test]
fn held_message_expires_as_no_grant() {
    let world = World::new();
    let mut device = world.engine("device-virtual");
    let mut early = world.engine("core-data");
    receive(
        &mut early,
        TOPIC,
        &seal(&mut device, TOPIC, &reading("1")),
        false,
    );
    let mut late = world.engine("core-data");
    receive(
        &mut late,
        TOPIC,
        &seal(&mut device, TOPIC, &reading("2")),
        false,
    );
    assert_eq!(late.subscriber.held_count(), 1);

    world.clock.advance(MAX_HELD_AGE_MS - 1);
    let mut out = Vec::new();
    {
        let Engine {
            subscriber, shared, ..
        } = &mut late;
        subscriber.tick(shared, &mut out);
    }
    assert!(verdicts(&out).is_empty());
    assert_eq!(
        sends(&out).len(),
        1,
        "the request is repeated while the message waits"
    );

    world.clock.advance(1);
    let mut out = Vec::new();
    {
        let Engine {
            subscriber, shared, ..
        } = &mut late;
        subscriber.tick(shared, &mut out);
    }
    assert_eq!(verdicts(&out), vec![Verdict::NoGrant]);
    assert_eq!(late.subscriber.held_count(), 0);
}

#[test]
fn inline_grants_repeat_after_interval() {
    let world = World::new();
    let mut device = world.engine("device-virtual");
    let mut early = world.engine("core-data");
    receive(
        &mut early,
        TOPIC,
        &seal(&mut device, TOPIC, &reading("1")),
        false,
    );

    world.clock.advance(GRANT_REPEAT_INTERVAL_MS);
    let mut late = world.engine("core-data");
    let out = receive(
        &mut late,
        TOPIC,
        &seal(&mut device, TOPIC, &reading("2")),
        false,
    );
    assert_eq!(
        delivered(&out).len(),
        1,
        "the repeated inline grant was not used"
    );
    assert!(sends(&out).is_empty());
}

#[test]
fn unauthorized_publisher_is_rejected() {
    let world = World::new();
    let mut rogue = world.engine("rogue-service");
    let mut core = world.engine("core-data");
    let error = {
        let Engine {
            publisher, shared, ..
        } = &mut rogue;
        publisher.seal(shared, TOPIC, &reading("x")).unwrap_err()
    };
    assert!(matches!(error, AdapterError::Keyring(_)), "{error}");

    let bytes = {
        let Engine {
            publisher, shared, ..
        } = &mut rogue;
        publisher
            .dangerously_seal_without_authorization(shared, TOPIC, &reading("x"))
            .unwrap()
    };
    let out = receive(&mut core, TOPIC, &bytes, false);
    assert!(delivered(&out).is_empty());
    assert_eq!(verdicts(&out), vec![Verdict::Unauthorized]);
}

#[test]
fn revoked_publisher_is_rejected() {
    let mut world = World::new();
    let mut device = world.engine("device-virtual");
    let revoked_policy = world.revoke("device-virtual");
    let mut core = world.engine_with("core-data", revoked_policy, Arc::clone(&world.clock));
    let out = receive(
        &mut core,
        TOPIC,
        &seal(&mut device, TOPIC, &reading("1")),
        false,
    );
    assert!(delivered(&out).is_empty());
    assert_eq!(verdicts(&out), vec![Verdict::Revoked]);
}

#[test]
fn revoked_subscriber_gets_no_grant() {
    let mut world = World::new();
    let revoked_policy = world.revoke("app-service");
    let mut device = world.engine_with("device-virtual", revoked_policy, Arc::clone(&world.clock));
    let mut app = world.engine("app-service");
    let bytes = seal(&mut device, TOPIC, &reading("secret"));
    let out = receive(&mut app, TOPIC, &bytes, false);
    assert!(
        delivered(&out).is_empty(),
        "a revoked subscriber read a message sealed after the revocation"
    );
    assert_eq!(app.subscriber.held_count(), 1);
}

#[test]
fn expired_certificate_is_rejected() {
    let world = World::new();
    let mut device = world.engine("device-virtual");
    let bytes = seal(&mut device, TOPIC, &reading("1"));
    let late_clock = Arc::new(ManualClock(AtomicU64::new(
        START_MS + (LIFETIME_S + 1) * 1000,
    )));
    let mut core = world.engine_with("core-data", world.policy.clone(), late_clock);
    let out = receive(&mut core, TOPIC, &bytes, false);
    assert!(delivered(&out).is_empty());
    assert_eq!(verdicts(&out), vec![Verdict::Expired]);
}

#[test]
fn message_from_future_is_rejected() {
    let world = World::new();
    let mut device = world.engine("device-virtual");
    let bytes = seal(&mut device, TOPIC, &reading("1"));
    let behind = Arc::new(ManualClock(AtomicU64::new(
        START_MS - MAX_CLOCK_SKEW_MS - 1,
    )));
    let mut core = world.engine_with("core-data", world.policy.clone(), behind);
    let out = receive(&mut core, TOPIC, &bytes, false);
    assert!(delivered(&out).is_empty());
    assert_eq!(verdicts(&out), vec![Verdict::Expired]);
}

#[test]
fn earlier_session_is_rejected_after_restart() {
    let world = World::new();
    let mut old_device = world.engine("device-virtual");
    let old_first = seal(&mut old_device, TOPIC, &reading("old-1"));
    let old_second = seal(&mut old_device, TOPIC, &reading("old-2"));
    let mut core = world.engine("core-data");
    assert_eq!(
        delivered(&receive(&mut core, TOPIC, &old_first, false)).len(),
        1
    );

    let mut new_device = world.engine("device-virtual");
    assert!(new_device.publisher.session() > old_device.publisher.session());
    assert_eq!(
        delivered(&receive(
            &mut core,
            TOPIC,
            &seal(&mut new_device, TOPIC, &reading("new")),
            false
        ))
        .len(),
        1
    );

    // old-2 was never seen, but its session is over.
    let out = receive(&mut core, TOPIC, &old_second, false);
    assert!(delivered(&out).is_empty());
    assert_eq!(verdicts(&out), vec![Verdict::Replay]);
}

#[test]
fn grant_request_from_outside_audience_is_refused() {
    let world = World::new();
    let mut device = world.engine("device-virtual");
    let mut core = world.engine("core-data");
    receive(
        &mut core,
        TOPIC,
        &seal(&mut device, TOPIC, &reading("1")),
        false,
    );
    let second = seal(&mut device, TOPIC, &reading("2"));

    // rogue-service asks for the grant of the device's epoch.
    let message = sealbus_envelope::parse_message(&second).unwrap();
    let rogue = world
        .identities
        .iter()
        .find(|identity| identity.name().as_str() == "rogue-service")
        .unwrap();
    let keypair =
        sealbus_envelope::StaticKeypair::new(*rogue.secret().to_bytes(), rogue.public_key());
    let device_identity = world
        .identities
        .iter()
        .find(|identity| identity.name().as_str() == "device-virtual")
        .unwrap();
    let request = sealbus_envelope::seal_grant_request(
        &sealbus_envelope::GrantRequestHeader {
            requester: "rogue-service",
            publisher: "device-virtual",
            session: message.session,
            epoch: message.epoch,
            timestamp_ms: START_MS,
        },
        &keypair,
        &device_identity.public_key(),
        None,
    )
    .unwrap();
    let Engine {
        publisher, shared, ..
    } = &mut device;
    let rejection = publisher
        .answer_grant_request(shared, &grant_request_topic("device-virtual"), &request)
        .unwrap_err();
    assert_eq!(rejection.verdict, Verdict::Unauthorized);
}

#[test]
fn answers_to_one_requester_are_rate_limited() {
    let world = World::new();
    let mut device = world.engine("device-virtual");
    let mut early = world.engine("core-data");
    receive(
        &mut early,
        TOPIC,
        &seal(&mut device, TOPIC, &reading("1")),
        false,
    );
    let mut late = world.engine("core-data");
    let out = receive(
        &mut late,
        TOPIC,
        &seal(&mut device, TOPIC, &reading("2")),
        false,
    );
    let (topic, request) = sends(&out).remove(0);
    let Engine {
        publisher, shared, ..
    } = &mut device;
    assert!(publisher
        .answer_grant_request(shared, &topic, &request)
        .is_ok());
    let rejection = publisher
        .answer_grant_request(shared, &topic, &request)
        .unwrap_err();
    assert_eq!(rejection.verdict, Verdict::RateLimited);
}

#[test]
fn topic_without_audience_fails_at_publisher() {
    let world = World::new();
    let mut device = world.engine("device-virtual");
    let Engine {
        publisher, shared, ..
    } = &mut device;
    let error = publisher
        .seal(shared, "edgex/unheard/x", &reading("1"))
        .unwrap_err();
    assert!(
        matches!(error, AdapterError::NoAudience { ref topic } if topic == "edgex/unheard/x"),
        "{error}"
    );
}

#[test]
fn plaintext_and_garbage_are_rejected() {
    let world = World::new();
    let mut core = world.engine("core-data");
    let out = receive(&mut core, TOPIC, &reading("plain").to_json(), false);
    assert_eq!(verdicts(&out), vec![Verdict::Plaintext]);
    let out = receive(&mut core, TOPIC, &[0xB5, 1, 1], false);
    assert_eq!(verdicts(&out), vec![Verdict::Malformed]);
    let out = receive(&mut core, TOPIC, &[], false);
    assert_eq!(verdicts(&out), vec![Verdict::Malformed]);
}

#[test]
fn forged_body_keeps_audit_reason() {
    let world = World::new();
    let mut device = world.engine("device-virtual");
    let mut core = world.engine("core-data");
    let genuine = seal(&mut device, TOPIC, &reading("1"));
    let mut forged = genuine.clone();
    // Header: 4 prefix bytes, name length, name, session, epoch, sequence,
    // timestamp, audience size, ciphertext length; the body follows.
    let body_start = 4 + 1 + "device-virtual".len() + 8 + 4 + 8 + 8 + 2 + 4;
    forged[body_start + 2] ^= 0x01;
    let out = receive(&mut core, TOPIC, &forged, false);
    assert!(delivered(&out).is_empty());
    let Some(Inbound::Rejected(rejection)) = out.first() else {
        panic!("expected a rejection, got {out:?}");
    };
    assert_eq!(rejection.verdict, Verdict::Forged);
    assert_eq!(rejection.detail, "message authentication failed");
    assert_eq!(rejection.audit_reason, Some("body-tag"));
    assert_eq!(
        delivered(&receive(&mut core, TOPIC, &genuine, false)).len(),
        1,
        "the genuine message must still open"
    );
}

#[test]
fn unsolicited_grant_is_dropped_unopened() {
    let world = World::new();
    let mut device = world.engine("device-virtual");
    let first = seal(&mut device, TOPIC, &reading("1"));
    let parsed = sealbus_envelope::parse_message(&first).unwrap();
    let grant = parsed
        .grants
        .iter()
        .find(|grant| sealbus_envelope::parse_grant(grant).unwrap().recipient == "core-data")
        .unwrap()
        .to_vec();

    // A genuine grant pushed on the grant topic without a request: dropped
    // before any Diffie-Hellman work.
    let mut core = world.engine("core-data");
    let mut out = Vec::new();
    {
        let Engine {
            subscriber, shared, ..
        } = &mut core;
        subscriber.handle_grant(shared, &grant_topic("core-data"), &grant, &mut out);
    }
    assert_eq!(verdicts(&out), vec![Verdict::Unsolicited]);
    assert_eq!(core.shared.metrics.snapshot().grants_installed, 0);
}

#[test]
fn grant_requests_are_rate_limited() {
    let world = World::new();
    let mut core = world.engine("core-data");
    let mut requests = 0;
    let publishers =
        sealbus_bus_adapters::secure::subscriber::MAX_GRANT_REQUESTS_PER_SECOND as usize + 10;
    for index in 0..publishers {
        // Each engine is a new publisher session; its second message
        // carries no inline grant, so the subscriber must ask for one.
        let mut device = world.engine("device-virtual");
        let _first = seal(&mut device, TOPIC, &reading(&format!("first-{index}")));
        let second = seal(&mut device, TOPIC, &reading(&format!("second-{index}")));
        requests += sends(&receive(&mut core, TOPIC, &second, false)).len();
    }
    assert_eq!(
        requests,
        sealbus_bus_adapters::secure::subscriber::MAX_GRANT_REQUESTS_PER_SECOND as usize
    );
}

#[test]
fn topic_audience_cache_is_bounded() {
    let world = World::new();
    let mut device = world.engine("device-virtual");
    let limit = sealbus_bus_adapters::secure::publisher::MAX_CACHED_TOPICS;
    for index in 0..limit + 10 {
        seal(
            &mut device,
            &format!("edgex/events/device/device-virtual/response/{index}"),
            &reading("x"),
        );
    }
    assert!(
        device.publisher.cached_topics() <= limit,
        "{} cached topics",
        device.publisher.cached_topics()
    );
    assert_eq!(
        device.publisher.live_epochs(),
        1,
        "one audience must share one epoch"
    );
}

#[test]
fn publisher_rechecks_its_own_certificate_as_time_passes() {
    let world = World::new();
    let mut device = world.engine("device-virtual");
    seal(&mut device, TOPIC, &reading("1"));
    // The publisher remembers that it may publish on the topic, but only
    // for the second it checked in.
    world.clock.advance((LIFETIME_S + 1) * 1000);
    let error = {
        let Engine {
            publisher, shared, ..
        } = &mut device;
        publisher.seal(shared, TOPIC, &reading("2")).unwrap_err()
    };
    assert!(matches!(error, AdapterError::Keyring(_)), "{error}");
}

#[test]
fn publisher_follows_a_policy_change_between_messages() {
    let mut world = World::new();
    let mut device = world.engine("device-virtual");
    let mut core = world.engine("core-data");
    let mut app = world.engine("app-service");
    let first = seal(&mut device, TOPIC, &reading("1"));
    assert_eq!(delivered(&receive(&mut app, TOPIC, &first, false)).len(), 1);
    assert_eq!(
        delivered(&receive(&mut core, TOPIC, &first, false)).len(),
        1
    );

    // A newer bundle revokes app-service: the cached audience and epoch of
    // the topic must not outlive it.
    device.shared.policy = world.revoke("app-service");
    let second = seal(&mut device, TOPIC, &reading("2"));
    assert!(
        delivered(&receive(&mut app, TOPIC, &second, false)).is_empty(),
        "a revoked subscriber read a message sealed after the policy change"
    );
    let to_core = receive(&mut core, TOPIC, &second, false);
    assert_eq!(delivered(&to_core).len(), 1);
    assert_eq!(
        delivered(&to_core)[0].envelope.payload,
        reading("2").payload
    );
}
