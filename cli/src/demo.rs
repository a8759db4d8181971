//! `sealbus demo`: device-virtual publishes sealed EdgeX readings that
//! core-data opens with the verified sender, while forged, replayed,
//! co-subscriber-forged, unauthorized and plaintext messages are rejected.
//! Everything runs in this process on an embedded MQTT broker.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Args;
use rand_core::{OsRng, RngCore};
use sealbus_bus_adapters::client::{
    bus_context, ReceivedMessage, SecureMessageClient, TopicChannel,
};
use sealbus_bus_adapters::config::BusConfig;
use sealbus_bus_adapters::secure::{Rejection, SecurityConfig, SystemClock};
use sealbus_bus_adapters::transport::{Incoming, Transport};
use sealbus_envelope::{
    parse_grant, parse_message, MessageEnvelope, SealOptions, SendingEpoch, StaticKeypair,
    SymmetricKey,
};
use sealbus_keyring::{
    CertificateAuthority, Identity, Policy, ServiceName, StaticSecret, TrustBundle,
};
use serde_json::json;
use tokio::sync::mpsc;

use crate::embedded_broker::EmbeddedBroker;
use crate::publish::random_uuid;
use crate::{CliError, CliResult, EXIT_EXPECTATION_FAILED};

/// How long the demo waits for each expected outcome.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the demo waits to be sure nothing else arrived.
const QUIET_PERIOD: Duration = Duration::from_millis(300);

/// Certificate lifetime of the demo identities, in seconds.
const DEMO_VALIDITY_S: u64 = 3600;

const DEVICE: &str = "device-virtual";
const CORE_DATA: &str = "core-data";
const APP_SERVICE: &str = "app-service";
const ROGUE: &str = "rogue-service";

/// Arguments of `sealbus demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run against this broker (mqtt://HOST:PORT or redis://HOST:PORT)
    /// instead of the embedded MQTT broker.
    #[arg(long)]
    pub url: Option<String>,
}

struct Demo {
    readings: mpsc::Receiver<ReceivedMessage>,
    rejections: mpsc::Receiver<Rejection>,
    spy: Transport,
    wire: mpsc::Receiver<Incoming>,
    failures: Vec<String>,
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn check(demo: &mut Demo, ok: bool, what: &str) {
    if ok {
        println!("  ✔ {what}");
    } else {
        println!("  ✘ {what}");
        demo.failures.push(what.to_owned());
    }
}

/// Builds an EdgeX 3.x AddEventRequest with one simple reading.
fn add_event_request(profile: &str, resource: &str, value_type: &str, value: &str) -> Vec<u8> {
    let origin = now().as_nanos() as u64;
    let request = json!({
        "apiVersion": "v3",
        "requestId": random_uuid(),
        "event": {
            "apiVersion": "v3",
            "id": random_uuid(),
            "deviceName": profile,
            "profileName": profile,
            "sourceName": resource,
            "origin": origin,
            "readings": [{
                "id": random_uuid(),
                "origin": origin,
                "deviceName": profile,
                "resourceName": resource,
                "profileName": profile,
                "valueType": value_type,
                "value": value,
            }],
        },
    });
    serde_json::to_vec(&request).unwrap_or_default()
}

fn event_topic(profile: &str, resource: &str) -> String {
    format!("edgex/events/device/{DEVICE}/{profile}/{profile}/{resource}")
}

struct Identities {
    identities: Vec<Identity>,
    policy: Policy,
}

fn issue_identities() -> Result<Identities, CliError> {
    let mut authority = CertificateAuthority::in_memory(&mut OsRng);
    let not_before = now().as_secs().saturating_sub(60);
    let not_after = not_before + DEMO_VALIDITY_S;
    let specs: [(&str, &[&str], &[&str]); 4] = [
        (
            DEVICE,
            &["edgex/events/device/device-virtual/#"],
            &["edgex/device/command/request/device-virtual/#"],
        ),
        (CORE_DATA, &[], &["edgex/events/#"]),
        (APP_SERVICE, &[], &["edgex/events/#"]),
        (ROGUE, &["rogue/#"], &[]),
    ];
    let mut identities = Vec::new();
    let mut certificates = Vec::new();
    for (name, publish, subscribe) in specs {
        let secret = StaticSecret::generate(&mut OsRng);
        let name = ServiceName::new(name).map_err(|error| CliError::context("demo name", error))?;
        let certificate = authority
            .issue(
                name,
                secret.public_key(),
                publish.iter().map(|filter| (*filter).to_owned()).collect(),
                subscribe
                    .iter()
                    .map(|filter| (*filter).to_owned())
                    .collect(),
                not_before,
                not_after,
            )
            .map_err(|error| CliError::context("failed to issue a demo identity", error))?;
        certificates.push(certificate.clone());
        identities.push(
            Identity::new(secret, certificate)
                .map_err(|error| CliError::context("demo identity", error))?,
        );
    }
    let bundle: TrustBundle = authority
        .sign_bundle(certificates, Vec::new(), now().as_secs())
        .map_err(|error| CliError::context("failed to sign the demo bundle", error))?;
    let policy = Policy::new(bundle, authority.public_key())
        .map_err(|error| CliError::context("demo bundle", error))?;
    Ok(Identities { identities, policy })
}

async fn connect(
    bus: &BusConfig,
    identities: &Identities,
    name: &str,
) -> Result<SecureMessageClient, CliError> {
    let identity = identities
        .identities
        .iter()
        .find(|identity| identity.name().as_str() == name)
        .cloned()
        .ok_or_else(|| CliError::message(format!("no demo identity {name}")))?;
    let security = SecurityConfig {
        identity,
        policy: identities.policy.clone(),
        clock: Arc::new(SystemClock),
        rng: Box::new(OsRng),
    };
    SecureMessageClient::connect(bus, security)
        .await
        .map_err(|error| CliError::context(format!("failed to connect {name}"), error))
}

impl Demo {
    async fn next_delivery(&mut self) -> Option<ReceivedMessage> {
        tokio::time::timeout(STEP_TIMEOUT, self.readings.recv())
            .await
            .ok()
            .flatten()
    }

    async fn next_rejection(&mut self) -> Option<Rejection> {
        tokio::time::timeout(STEP_TIMEOUT, self.rejections.recv())
            .await
            .ok()
            .flatten()
    }

    async fn nothing_delivered(&mut self) -> bool {
        tokio::time::timeout(QUIET_PERIOD, self.readings.recv())
            .await
            .is_err()
    }

    /// Waits for the sealed copy of a reading as the broker forwards it.
    async fn capture(&mut self, topic: &str) -> Option<Bytes> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.wire.recv())
                .await
                .ok()
                .flatten()?;
            if message.topic == topic {
                return Some(message.payload);
            }
        }
    }

    async fn expect_rejection(&mut self, verdict: &str, what: &str) {
        let rejection = self.next_rejection().await;
        let got = rejection
            .as_ref()
            .map(|rejection| rejection.verdict.as_str())
            .unwrap_or("nothing");
        let quiet = self.nothing_delivered().await;
        check(
            self,
            got == verdict && quiet,
            &format!("{what}: core-data rejected it as \"{got}\" and delivered nothing"),
        );
    }
}

/// Runs `sealbus demo`.
pub async fn run(args: &DemoArgs) -> CliResult {
    let (_broker, url) = match &args.url {
        Some(url) => (None, url.clone()),
        None => {
            let broker = EmbeddedBroker::start()?;
            let url = broker.url();
            (Some(broker), url)
        }
    };
    let bus =
        BusConfig::from_url(&url).map_err(|error| CliError::context("invalid --url", error))?;
    println!("sealbus demo on {url}");

    let identities = issue_identities()?;
    println!("issued {DEVICE}, {CORE_DATA}, {APP_SERVICE} and {ROGUE} under a throwaway CA");

    let (spy, wire) = Transport::connect(&bus)
        .await
        .map_err(|error| CliError::context("failed to connect the broker-side spy", error))?;
    spy.subscribe(&["edgex/#".to_owned()])
        .await
        .map_err(|error| CliError::context("spy subscribe", error))?;

    let core_data = connect(&bus, &identities, CORE_DATA).await?;
    let (readings_tx, readings) = mpsc::channel(64);
    let (rejections_tx, rejections) = mpsc::channel(64);
    core_data
        .subscribe(
            vec![TopicChannel {
                topic: "edgex/events/#".into(),
                messages: readings_tx,
            }],
            rejections_tx,
        )
        .await
        .map_err(|error| CliError::context("core-data subscribe", error))?;
    let app_service = connect(&bus, &identities, APP_SERVICE).await?;
    let (app_tx, _app_readings) = mpsc::channel(64);
    let (app_errors_tx, _app_errors) = mpsc::channel(64);
    app_service
        .subscribe(
            vec![TopicChannel {
                topic: "edgex/events/#".into(),
                messages: app_tx,
            }],
            app_errors_tx,
        )
        .await
        .map_err(|error| CliError::context("app-service subscribe", error))?;
    let device = connect(&bus, &identities, DEVICE).await?;
    let rogue = connect(&bus, &identities, ROGUE).await?;

    let mut demo = Demo {
        readings,
        rejections,
        spy,
        wire,
        failures: Vec::new(),
    };

    println!("\n1. {DEVICE} publishes three sealed AddEventRequest readings");
    let samples = [
        ("Random-Integer-Device", "Int16", "Int16", "-4219"),
        ("Random-Float-Device", "Float64", "Float64", "1.234500e+02"),
        ("Random-Boolean-Device", "Bool", "Bool", "true"),
    ];
    let mut captured = Vec::new();
    for (profile, resource, value_type, value) in samples {
        let topic = event_topic(profile, resource);
        let payload = add_event_request(profile, resource, value_type, value);
        let envelope = MessageEnvelope::new(payload.clone(), random_uuid(), "application/json");
        device
            .publish(&envelope, &topic)
            .await
            .map_err(|error| CliError::context("device publish", error))?;
        let delivered = demo.next_delivery().await;
        let ok = delivered.as_ref().is_some_and(|message| {
            message.sender == DEVICE
                && message.envelope.payload == payload
                && message.topic == topic
        });
        check(
            &mut demo,
            ok,
            &format!("core-data opened {resource}={value} from verified sender {DEVICE}"),
        );
        let wire = demo.capture(&topic).await;
        let hidden = wire.as_ref().is_some_and(|bytes| {
            bytes.first() == Some(&sealbus_envelope::limits::MAGIC)
                && !bytes
                    .windows(profile.len())
                    .any(|window| window == profile.as_bytes())
        });
        check(
            &mut demo,
            hidden,
            "the broker saw only sealed bytes, no device name or value",
        );
        captured.push((topic, wire.unwrap_or_default()));
    }

    println!("\n2. the broker alters a sealed reading and gives it a fresh sequence number");
    let (topic, original) = captured[1].clone();
    let forged = alter_reading(&original);
    publish_raw(&demo.spy, &topic, forged).await?;
    demo.expect_rejection("forged", "altered reading").await;

    println!("\n3. the broker replays a reading core-data already accepted");
    publish_raw(&demo.spy, &topic, original.to_vec()).await?;
    demo.expect_rejection("replay", "replayed reading").await;

    println!("\n4. {APP_SERVICE}, a legitimate subscriber holding the audience key, forges a reading from {DEVICE}");
    let (first_topic, first) = captured[0].clone();
    let forged = co_subscriber_forgery(&identities, &first, &first_topic, &bus_context(&bus))?;
    publish_raw(&demo.spy, &first_topic, forged).await?;
    demo.expect_rejection("forged", "co-subscriber forgery")
        .await;

    println!("\n5. {ROGUE}, a valid identity without permission, publishes on a device topic");
    let payload = add_event_request("Random-Integer-Device", "Int16", "Int16", "31337");
    let envelope = MessageEnvelope::new(payload, random_uuid(), "application/json");
    rogue
        .dangerously_publish_without_authorization(
            &envelope,
            &event_topic("Random-Integer-Device", "Int16"),
        )
        .await
        .map_err(|error| CliError::context("rogue publish", error))?;
    demo.expect_rejection("unauthorized", "unauthorized publisher")
        .await;

    println!("\n6. someone publishes a plain, unsealed EdgeX envelope");
    let plain = MessageEnvelope::new(
        add_event_request("Random-Integer-Device", "Int16", "Int16", "0"),
        random_uuid(),
        "application/json",
    );
    publish_raw(
        &demo.spy,
        &event_topic("Random-Integer-Device", "Int16"),
        plain.to_json(),
    )
    .await?;
    demo.expect_rejection("plaintext", "plaintext envelope")
        .await;

    let metrics = core_data.metrics();
    println!(
        "\ncore-data counters: delivered {}, rejected {:?}",
        metrics.delivered, metrics.rejected
    );
    for client in [&device, &core_data, &app_service, &rogue] {
        let _ = client.disconnect().await;
    }
    let _ = demo.spy.disconnect().await;

    if demo.failures.is_empty() {
        println!("\nall expectations held");
        Ok(0)
    } else {
        println!("\n{} expectations failed:", demo.failures.len());
        for failure in &demo.failures {
            println!("  - {failure}");
        }
        Ok(EXIT_EXPECTATION_FAILED)
    }
}

/// Flips one body byte and raises the sequence number, so the copy passes
/// the replay pre-check and reaches authentication.
fn alter_reading(sealed: &[u8]) -> Vec<u8> {
    let mut altered = sealed.to_vec();
    // Header: 4 prefix bytes, name length, name, session (8), epoch (4), sequence (8).
    let sequence_at = 4 + 1 + DEVICE.len() + 8 + 4;
    if let Some(byte) = altered.get_mut(sequence_at + 6) {
        *byte = byte.wrapping_add(1);
    }
    let middle = altered.len() / 2;
    altered[middle] ^= 0x01;
    altered
}

async fn publish_raw(spy: &Transport, topic: &str, bytes: Vec<u8>) -> Result<(), CliError> {
    spy.publish(topic, Bytes::from(bytes))
        .await
        .map_err(|error| CliError::context("spy publish", error))
}

/// Uses app-service's own grant from the first sealed reading to get the
/// audience key, then seals a fake reading in device-virtual's name. It
/// cannot compute core-data's origin tag, so it guesses.
fn co_subscriber_forgery(
    identities: &Identities,
    sealed: &[u8],
    topic: &str,
    context: &str,
) -> Result<Vec<u8>, CliError> {
    let message =
        parse_message(sealed).map_err(|error| CliError::context("captured reading", error))?;
    let app = identities
        .identities
        .iter()
        .find(|identity| identity.name().as_str() == APP_SERVICE)
        .ok_or_else(|| CliError::message("no app-service identity"))?;
    let device_public = identities
        .policy
        .certificate(DEVICE, now().as_secs())
        .map_err(|error| CliError::context("device certificate", error))?
        .x25519_public()
        .to_owned();
    let keypair = StaticKeypair::new(*app.secret().to_bytes(), app.public_key());
    let grant = message
        .grants
        .iter()
        .filter_map(|grant| parse_grant(grant).ok())
        .find(|grant| grant.recipient == APP_SERVICE)
        .ok_or_else(|| CliError::message("the first reading carried no grant for app-service"))?;
    let keys = grant
        .open(APP_SERVICE, &keypair, &device_public)
        .map_err(|error| CliError::context("app-service grant", error))?;
    let guessed: Vec<SymmetricKey> = (0..keys.audience_size)
        .map(|_| {
            let mut bytes = [0u8; 32];
            OsRng.fill_bytes(&mut bytes);
            SymmetricKey::from_bytes(bytes)
        })
        .collect();
    let mut epoch = SendingEpoch::new(
        DEVICE,
        message.session,
        message.epoch,
        &keys.audience_key,
        guessed,
    )
    .map_err(|error| CliError::context("forger epoch", error))?;
    epoch.set_next_sequence_for_testing_only(message.sequence + 1000);
    let payload = add_event_request("Random-Integer-Device", "Int16", "Int16", "-32768");
    let fake = MessageEnvelope::new(payload, random_uuid(), "application/json");
    let route = sealbus_envelope::Route { context, topic };
    epoch
        .seal(
            &fake,
            &SealOptions {
                route,
                timestamp_ms: now().as_millis() as u64,
                grants: &[],
            },
        )
        .map_err(|error| CliError::context("forged reading", error))
}
