//! Integration tests against real mosquitto and redis-server processes
//! that the harness starts on free 127.0.0.1 ports.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use sealbus_bus_adapters::config::BusConfig;
use sealbus_bus_adapters::error::AdapterError;
use sealbus_bus_adapters::secure::Verdict;
use sealbus_bus_adapters::transport::Transport;
use sealbus_envelope::MessageEnvelope;
use sealbus_integration::{BrokerKind, BrokerProcess};

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../envelope/tests/fixtures/edgex");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(path).unwrap(),
            )
        })
        .collect()
}

async fn publish_subscribe_fixtures(kind: BrokerKind) {
    let broker = BrokerProcess::start_new(kind);
    let deployment = Deployment::standard();
    let core_data = deployment.connect(&broker.url(), "core-data").await;
    let mut inbox = subscribe(&core_data, "edgex/events/#").await;
    let device = deployment.connect(&broker.url(), "device-virtual").await;

    let events: Vec<_> = fixtures()
        .into_iter()
        .filter(|(name, _)| name.starts_with("event-"))
        .collect();
    assert_eq!(events.len(), 4);
    for (name, json) in &events {
        let envelope = MessageEnvelope::from_json(json).unwrap();
        let topic = envelope.received_topic.clone();
        device.publish(&envelope, &topic).await.unwrap();
        let received = inbox.next().await;
        assert_eq!(received.sender, "device-virtual", "{name}");
        assert_eq!(received.topic, topic, "{name}");
        assert_eq!(
            received.envelope.to_json(),
            *json,
            "{name} changed on the way through {kind:?}"
        );
    }
    assert_eq!(core_data.metrics().rejected_total(), 0);
}

#[tokio::test]
async fn mqtt_publish_subscribe_fixtures() {
    publish_subscribe_fixtures(BrokerKind::Mosquitto).await;
}

#[tokio::test]
async fn redis_publish_subscribe_fixtures() {
    publish_subscribe_fixtures(BrokerKind::Redis).await;
}

async fn request_response(kind: BrokerKind) {
    let broker = BrokerProcess::start_new(kind);
    let deployment = Deployment::standard();
    let device = deployment.connect(&broker.url(), "device-virtual").await;
    let mut requests = subscribe(&device, "edgex/device/command/request/device-virtual/#").await;
    let responder = device.clone();
    let fixtures = fixtures();
    let response_json = fixtures
        .iter()
        .find(|(name, _)| name == "command-response-error.json")
        .unwrap()
        .1
        .clone();
    let request_json = fixtures
        .iter()
        .find(|(name, _)| name == "command-request.json")
        .unwrap()
        .1
        .clone();

    tokio::spawn(async move {
        while let Some(request) = requests.messages.recv().await {
            assert_eq!(request.sender, "core-command");
            let mut response = MessageEnvelope::from_json(&response_json).unwrap();
            response.request_id = request.envelope.request_id.clone();
            response.correlation_id = request.envelope.correlation_id.clone();
            let topic = format!(
                "edgex/response/core-command/{}",
                request.envelope.request_id
            );
            responder.publish(&response, &topic).await.unwrap();
        }
    });

    let core_command = deployment.connect(&broker.url(), "core-command").await;
    let request = MessageEnvelope::from_json(&request_json).unwrap();
    let response = core_command
        .request(
            &request,
            &request.received_topic,
            "edgex/response/core-command",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(response.sender, "device-virtual");
    assert_eq!(response.envelope.request_id, request.request_id);
    assert_eq!(response.envelope.error_code, 1);

    // A request that insists on another responder gets no valid answer.
    let mut second = request.clone();
    second.request_id = "0f0e0d0c-0b0a-4908-8706-050403020100".into();
    let error = core_command
        .request_from(
            &second,
            &request.received_topic,
            "edgex/response/core-command",
            Duration::from_secs(2),
            "core-data",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, AdapterError::RequestTimedOut { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn mqtt_request_response() {
    request_response(BrokerKind::Mosquitto).await;
}

#[tokio::test]
async fn redis_request_response() {
    request_response(BrokerKind::Redis).await;
}

/// A subscriber that starts while a publisher is already streaming gets
/// its grant (requested or repeated inline) and reads the stream.
async fn late_subscriber(kind: BrokerKind) {
    let broker = BrokerProcess::start_new(kind);
    let deployment = Deployment::standard();
    let device = deployment.connect(&broker.url(), "device-virtual").await;
    let publisher = device.clone();
    let stream = tokio::spawn(async move {
        for value in 0..200 {
            publisher
                .publish(&reading(&value.to_string()), EVENT_TOPIC)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;

    let core_data = deployment.connect(&broker.url(), "core-data").await;
    let mut inbox = subscribe(&core_data, "edgex/events/#").await;
    let first = inbox.next().await;
    assert_eq!(first.sender, "device-virtual");
    let second = inbox.next().await;
    assert_ne!(
        first.envelope.correlation_id,
        second.envelope.correlation_id
    );
    stream.abort();
}

#[tokio::test]
async fn mqtt_late_subscriber_gets_grant() {
    late_subscriber(BrokerKind::Mosquitto).await;
}

#[tokio::test]
async fn redis_late_subscriber_gets_grant() {
    late_subscriber(BrokerKind::Redis).await;
}

/// A subscriber that restarts (new process state, same identity) reads the
/// same publisher epoch again without operator action.
async fn restarted_subscriber(kind: BrokerKind) {
    let broker = BrokerProcess::start_new(kind);
    let deployment = Deployment::standard();
    let device = deployment.connect(&broker.url(), "device-virtual").await;
    let core_data = deployment.connect(&broker.url(), "core-data").await;
    let mut inbox = subscribe(&core_data, "edgex/events/#").await;
    device.publish(&reading("1"), EVENT_TOPIC).await.unwrap();
    assert_eq!(inbox.next().await.envelope.correlation_id, "corr-1");
    core_data.disconnect().await.unwrap();

    let restarted = deployment.connect(&broker.url(), "core-data").await;
    let mut inbox = subscribe(&restarted, "edgex/events/#").await;
    // The next message carries no inline grant (the repeat interval has not
    // passed), so the restarted subscriber must ask for it.
    device.publish(&reading("2"), EVENT_TOPIC).await.unwrap();
    let received = inbox.next().await;
    assert_eq!(received.envelope.correlation_id, "corr-2");
    assert!(restarted.metrics().grant_requests_sent >= 1);
}

#[tokio::test]
async fn mqtt_restarted_subscriber_requests_grant() {
    restarted_subscriber(BrokerKind::Mosquitto).await;
}

#[tokio::test]
async fn redis_restarted_subscriber_requests_grant() {
    restarted_subscriber(BrokerKind::Redis).await;
}

/// The broker is killed and restarted mid-stream: both clients reconnect
/// and re-subscribe on their own, later messages arrive, and no message is
/// accepted twice.
async fn broker_restart(kind: BrokerKind) {
    let mut broker = BrokerProcess::start_new(kind);
    let deployment = Deployment::standard();
    let device = deployment.connect(&broker.url(), "device-virtual").await;
    let core_data = deployment.connect(&broker.url(), "core-data").await;
    let mut inbox = subscribe(&core_data, "edgex/events/#").await;

    let mut seen = HashSet::new();
    for value in 0..5 {
        device
            .publish(&reading(&format!("before-{value}")), EVENT_TOPIC)
            .await
            .unwrap();
        assert!(seen.insert(inbox.next().await.envelope.correlation_id));
    }

    broker.restart();

    // Publish until one gets through after the reconnect and re-subscribe.
    let mut delivered_after = None;
    for value in 0..300 {
        let _ = device
            .publish(&reading(&format!("after-{value}")), EVENT_TOPIC)
            .await;
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(100), inbox.messages.recv()).await
        {
            delivered_after = Some(message);
            break;
        }
    }
    let first_after = delivered_after.expect("no message arrived after the broker restart");
    assert!(first_after
        .envelope
        .correlation_id
        .starts_with("corr-after-"));
    assert!(seen.insert(first_after.envelope.correlation_id.clone()));

    for value in 0..5 {
        device
            .publish(&reading(&format!("final-{value}")), EVENT_TOPIC)
            .await
            .unwrap();
    }
    let mut finals = 0;
    while finals < 5 {
        let message = inbox.next().await;
        assert!(
            seen.insert(message.envelope.correlation_id.clone()),
            "accepted {} twice",
            message.envelope.correlation_id
        );
        if message.envelope.correlation_id.starts_with("corr-final-") {
            finals += 1;
        }
    }
    let rejected = core_data.metrics().rejected;
    assert_eq!(
        rejected.get("replay"),
        None,
        "replays after restart: {rejected:?}"
    );
}

#[tokio::test]
async fn mqtt_broker_restart_mid_stream() {
    broker_restart(BrokerKind::Mosquitto).await;
}

#[tokio::test]
async fn redis_broker_restart_mid_stream() {
    broker_restart(BrokerKind::Redis).await;
}

/// A raw client on the broker side sees only sealed bytes.
async fn plaintext_never_on_wire(kind: BrokerKind) {
    let broker = BrokerProcess::start_new(kind);
    let deployment = Deployment::standard();
    let bus = BusConfig::from_url(&broker.url()).unwrap();
    let (spy, mut wire) = Transport::connect(&bus).await.unwrap();
    spy.subscribe(&["#".to_owned()]).await.unwrap();
    let core_data = deployment.connect(&broker.url(), "core-data").await;
    let mut inbox = subscribe(&core_data, "edgex/events/#").await;
    let device = deployment.connect(&broker.url(), "device-virtual").await;

    let secret = "reading-value-7f3a9c";
    let mut envelope = reading(secret);
    envelope.correlation_id = "correlation-5e1d".into();
    device.publish(&envelope, EVENT_TOPIC).await.unwrap();
    assert_eq!(inbox.next().await.envelope.payload, envelope.payload);

    let mut saw_event = false;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), wire.recv()).await
    {
        for needle in [
            secret.as_bytes(),
            b"correlation-5e1d",
            b"Random-Integer-Device",
        ] {
            assert!(
                !message
                    .payload
                    .windows(needle.len())
                    .any(|window| window == needle),
                "plaintext on {}",
                message.topic
            );
        }
        saw_event |= message.topic == EVENT_TOPIC;
    }
    assert!(saw_event, "the raw observer never saw the sealed event");
}

#[tokio::test]
async fn mqtt_plaintext_never_on_wire() {
    plaintext_never_on_wire(BrokerKind::Mosquitto).await;
}

#[tokio::test]
async fn redis_plaintext_never_on_wire() {
    plaintext_never_on_wire(BrokerKind::Redis).await;
}

/// A sealed message captured on MQTT and re-published on Redis, or on
/// another topic, fails authentication.
#[tokio::test]
async fn message_moved_between_buses_or_topics_is_forged() {
    let mosquitto = BrokerProcess::mosquitto();
    let redis = BrokerProcess::redis();
    let deployment = Deployment::standard();

    let (mqtt_spy, mut mqtt_wire) =
        Transport::connect(&BusConfig::from_url(&mosquitto.url()).unwrap())
            .await
            .unwrap();
    mqtt_spy.subscribe(&[EVENT_TOPIC.to_owned()]).await.unwrap();
    let device = deployment.connect(&mosquitto.url(), "device-virtual").await;
    let mqtt_core_data = deployment.connect(&mosquitto.url(), "core-data").await;
    let mut mqtt_inbox = subscribe(&mqtt_core_data, "edgex/events/#").await;
    device.publish(&reading("1"), EVENT_TOPIC).await.unwrap();
    mqtt_inbox.next().await;
    let captured = tokio::time::timeout(WAIT, mqtt_wire.recv())
        .await
        .unwrap()
        .unwrap()
        .payload;

    let redis_core_data = deployment.connect(&redis.url(), "core-data").await;
    let mut redis_inbox = subscribe(&redis_core_data, "edgex/events/#").await;
    let (redis_spy, _redis_wire) = Transport::connect(&BusConfig::from_url(&redis.url()).unwrap())
        .await
        .unwrap();
    redis_spy
        .publish(EVENT_TOPIC, captured.clone())
        .await
        .unwrap();
    let rejection = redis_inbox.next_error().await;
    assert_eq!(rejection.verdict, Verdict::Forged, "{rejection}");
    redis_inbox.assert_quiet(Duration::from_millis(300)).await;

    // core-data already accepted this sequence number, so it would stop the
    // copy at the replay pre-check; app-service has not seen it, so the copy
    // reaches authentication there (its grant travels inline).
    let app_service = deployment.connect(&mosquitto.url(), "app-service").await;
    let mut app_inbox = subscribe(&app_service, "edgex/events/#").await;
    let other_topic = "edgex/events/device/device-virtual/Other/Other/Int16";
    mqtt_spy.publish(other_topic, captured).await.unwrap();
    let rejection = app_inbox.next_error().await;
    assert_eq!(rejection.verdict, Verdict::Forged, "{rejection}");
    assert_eq!(rejection.topic, other_topic);
    app_inbox.assert_quiet(Duration::from_millis(300)).await;
    let rejection = mqtt_inbox.next_error().await;
    assert_eq!(rejection.verdict, Verdict::Replay, "{rejection}");
    mqtt_inbox.assert_quiet(Duration::from_millis(300)).await;
}

/// Oversized messages fail at the publisher before anything is sent, and a
/// large valid message just under the limit arrives intact.
async fn size_limits(kind: BrokerKind) {
    let broker = BrokerProcess::start_new(kind);
    let deployment = Deployment::standard();
    let url = format!("{}?MaxMessageSize=65536", broker.url());
    let core_data = deployment.connect(&url, "core-data").await;
    let mut inbox = subscribe(&core_data, "edgex/events/#").await;
    let device = deployment.connect(&url, "device-virtual").await;

    let mut oversized = reading("big");
    oversized.payload = vec![b'x'; 70_000];
    let error = device.publish(&oversized, EVENT_TOPIC).await.unwrap_err();
    assert!(
        matches!(error, AdapterError::MessageTooLarge { .. }),
        "{error}"
    );
    inbox.assert_quiet(Duration::from_millis(500)).await;

    let mut large = reading("large");
    large.payload = (0..50_000u32).map(|index| (index % 251) as u8).collect();
    device.publish(&large, EVENT_TOPIC).await.unwrap();
    let received = inbox.next().await;
    assert_eq!(received.envelope.payload, large.payload);
}

#[tokio::test]
async fn mqtt_size_limits() {
    size_limits(BrokerKind::Mosquitto).await;
}

#[tokio::test]
async fn redis_size_limits() {
    size_limits(BrokerKind::Redis).await;
}

/// A publisher that sends one message and exits is still read by a
/// subscriber that was already listening.
async fn one_shot_publisher(kind: BrokerKind) {
    let broker = BrokerProcess::start_new(kind);
    let deployment = Deployment::standard();
    let core_data = deployment.connect(&broker.url(), "core-data").await;
    let mut inbox = subscribe(&core_data, "edgex/events/#").await;
    let device = deployment.connect(&broker.url(), "device-virtual").await;
    device.publish(&reading("once"), EVENT_TOPIC).await.unwrap();
    device.disconnect().await.unwrap();
    drop(device);
    let received = inbox.next().await;
    assert_eq!(received.envelope.correlation_id, "corr-once");
    assert_eq!(received.sender, "device-virtual");
}

#[tokio::test]
async fn mqtt_one_shot_publisher() {
    one_shot_publisher(BrokerKind::Mosquitto).await;
}

#[tokio::test]
async fn redis_one_shot_publisher() {
    one_shot_publisher(BrokerKind::Redis).await;
}

/// Attacks over a real broker: replay, plaintext, unauthorized and revoked
/// publishers, each rejected with its verdict and nothing delivered.
async fn attacks(kind: BrokerKind) {
    let broker = BrokerProcess::start_new(kind);
    let mut deployment = Deployment::standard();
    let bus = BusConfig::from_url(&broker.url()).unwrap();
    let (spy, mut wire) = Transport::connect(&bus).await.unwrap();
    spy.subscribe(&[EVENT_TOPIC.to_owned()]).await.unwrap();
    let core_data = deployment.connect(&broker.url(), "core-data").await;
    let mut inbox = subscribe(&core_data, "edgex/events/#").await;
    let device = deployment.connect(&broker.url(), "device-virtual").await;

    device.publish(&reading("1"), EVENT_TOPIC).await.unwrap();
    inbox.next().await;
    let captured: Bytes = tokio::time::timeout(WAIT, wire.recv())
        .await
        .unwrap()
        .unwrap()
        .payload;

    spy.publish(EVENT_TOPIC, captured.clone()).await.unwrap();
    assert_eq!(inbox.next_error().await.verdict, Verdict::Replay);

    spy.publish(EVENT_TOPIC, Bytes::from(reading("plain").to_json()))
        .await
        .unwrap();
    assert_eq!(inbox.next_error().await.verdict, Verdict::Plaintext);

    spy.publish(EVENT_TOPIC, Bytes::from_static(&[0xB5, 1, 1, 0, 200, 1, 2]))
        .await
        .unwrap();
    assert_eq!(inbox.next_error().await.verdict, Verdict::Malformed);

    let rogue = deployment.connect(&broker.url(), "rogue-service").await;
    let error = rogue
        .publish(&reading("rogue"), EVENT_TOPIC)
        .await
        .unwrap_err();
    assert!(matches!(error, AdapterError::Keyring(_)), "{error}");
    rogue
        .dangerously_publish_without_authorization(&reading("rogue"), EVENT_TOPIC)
        .await
        .unwrap();
    assert_eq!(inbox.next_error().await.verdict, Verdict::Unauthorized);
    inbox.assert_quiet(Duration::from_millis(300)).await;

    // core-data restarts with a bundle that revokes device-virtual.
    deployment.revoke("device-virtual");
    core_data.disconnect().await.unwrap();
    let core_data = deployment.connect(&broker.url(), "core-data").await;
    let mut inbox = subscribe(&core_data, "edgex/events/#").await;
    device
        .publish(&reading("after-revocation"), EVENT_TOPIC)
        .await
        .unwrap();
    assert_eq!(inbox.next_error().await.verdict, Verdict::Revoked);
    inbox.assert_quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn mqtt_attacks_are_rejected() {
    attacks(BrokerKind::Mosquitto).await;
}

#[tokio::test]
async fn redis_attacks_are_rejected() {
    attacks(BrokerKind::Redis).await;
}

/// An oversized message retained on a subscribed topic used to make the
/// MQTT client drop its connection on every reconnect. It is now read and
/// dropped, and genuine messages keep arriving.
#[tokio::test]
async fn mqtt_oversized_retained_message_is_dropped() {
    let broker = BrokerProcess::mosquitto();
    let deployment = Deployment::standard();
    let url = format!("{}?Retained=true&MaxMessageSize=1048576", broker.url());
    let (spy, _wire) = Transport::connect(&BusConfig::from_url(&url).unwrap())
        .await
        .unwrap();
    spy.publish("edgex/events/junk", Bytes::from(vec![0x42u8; 400_000]))
        .await
        .unwrap();
    spy.disconnect().await.unwrap();

    let core_data = deployment.connect(&broker.url(), "core-data").await;
    let mut inbox = subscribe(&core_data, "edgex/events/#").await;
    let device = deployment.connect(&broker.url(), "device-virtual").await;
    for value in 0..5 {
        device
            .publish(&reading(&value.to_string()), EVENT_TOPIC)
            .await
            .unwrap();
        let received = inbox.next().await;
        assert_eq!(received.envelope.correlation_id, format!("corr-{value}"));
    }
}
