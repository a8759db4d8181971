//! The secure client over the in-memory bus: subscribe, unsubscribe,
//! request/response and the error path, without a broker process.

use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;
use sealbus_bus_adapters::client::{SecureMessageClient, TopicChannel};
use sealbus_bus_adapters::config::BusConfig;
use sealbus_bus_adapters::secure::{SecurityConfig, SystemClock, Verdict};
use sealbus_bus_adapters::transport::Transport;
use sealbus_bus_adapters::MemoryBroker;
use sealbus_envelope::MessageEnvelope;
use sealbus_keyring::{
    Certificate, CertificateAuthority, Identity, Policy, ServiceName, StaticSecret,
};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
const TOPIC: &str = "edgex/events/device/device-virtual/Random/Random/Int16";

struct Deployment {
    identities: Vec<Identity>,
    policy: Policy,
    broker: MemoryBroker,
}

impl Deployment {
    fn new() -> Self {
        let mut authority = CertificateAuthority::in_memory(&mut OsRng);
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let specs: [(&str, &[&str], &[&str]); 2] = [
            (
                "device-virtual",
                &["edgex/events/device/device-virtual/#", "edgex/response/#"],
                &["edgex/device/command/request/device-virtual/#"],
            ),
            (
                "core-command",
                &["edgex/device/command/request/#"],
                &["edgex/events/#", "edgex/response/core-command/#"],
            ),
        ];
        let mut identities = Vec::new();
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
        Self {
            identities,
            policy,
            broker: MemoryBroker::new(),
        }
    }

    async fn connect(&self, name: &str) -> SecureMessageClient {
        let identity = self
            .identities
            .iter()
            .find(|identity| identity.name().as_str() == name)
            .unwrap()
            .clone();
        let bus = BusConfig::from_url("memory://client-tests").unwrap();
        let (transport, incoming) = Transport::connect_memory(&self.broker, &bus).await.unwrap();
        let security = SecurityConfig {
            identity,
            policy: self.policy.clone(),
            clock: Arc::new(SystemClock),
            rng: Box::new(OsRng),
        };
        SecureMessageClient::start(transport, incoming, &bus, security)
            .await
            .unwrap()
    }
}

fn reading(value: &str) -> MessageEnvelope {
    MessageEnvelope::new(
        value.as_bytes().to_vec(),
        format!("corr-{value}"),
        "text/plain",
    )
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let deployment = Deployment::new();
    let core = deployment.connect("core-command").await;
    let device = deployment.connect("device-virtual").await;
    let (messages_tx, mut messages) = mpsc::channel(16);
    let (errors_tx, _errors) = mpsc::channel(16);
    core.subscribe(
        vec![TopicChannel {
            topic: "edgex/events/#".into(),
            messages: messages_tx,
        }],
        errors_tx,
    )
    .await
    .unwrap();

    device.publish(&reading("1"), TOPIC).await.unwrap();
    let received = tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.sender, "device-virtual");
    assert_eq!(received.envelope.payload, b"1");

    core.unsubscribe(&["edgex/events/#"]).await.unwrap();
    device.publish(&reading("2"), TOPIC).await.unwrap();
    // The client drops the subscription's sender, so the channel may also
    // report closed; only a message would be wrong.
    let after = tokio::time::timeout(Duration::from_millis(300), messages.recv()).await;
    assert!(!matches!(after, Ok(Some(_))), "delivered after unsubscribe");
}

#[tokio::test]
async fn unsubscribe_closes_channel_resubscribe_receives() {
    let deployment = Deployment::new();
    let core = deployment.connect("core-command").await;
    let device = deployment.connect("device-virtual").await;
    let subscribe = |core: SecureMessageClient| async move {
        let (messages_tx, messages) = mpsc::channel(16);
        let (errors_tx, _errors) = mpsc::channel(16);
        core.subscribe(
            vec![TopicChannel {
                topic: TOPIC.into(),
                messages: messages_tx,
            }],
            errors_tx,
        )
        .await
        .unwrap();
        messages
    };

    let mut first = subscribe(core.clone()).await;
    device.publish(&reading("1"), TOPIC).await.unwrap();
    let received = tokio::time::timeout(WAIT, first.recv()).await.unwrap();
    assert_eq!(received.unwrap().envelope.payload, b"1");

    // The dispatcher remembers the channels of the last topic; that memory
    // must neither keep the old channel open nor hide the new one.
    core.unsubscribe(&[TOPIC]).await.unwrap();
    let closed = tokio::time::timeout(WAIT, first.recv()).await;
    assert!(
        matches!(closed, Ok(None)),
        "the unsubscribed channel stayed open"
    );

    let mut second = subscribe(core.clone()).await;
    device.publish(&reading("2"), TOPIC).await.unwrap();
    let received = tokio::time::timeout(WAIT, second.recv()).await.unwrap();
    assert_eq!(received.unwrap().envelope.payload, b"2");
}

#[tokio::test]
async fn request_gets_verified_response() {
    let deployment = Deployment::new();
    let device = deployment.connect("device-virtual").await;
    let (requests_tx, mut requests) = mpsc::channel(16);
    let (errors_tx, _errors) = mpsc::channel(16);
    device
        .subscribe(
            vec![TopicChannel {
                topic: "edgex/device/command/request/device-virtual/#".into(),
                messages: requests_tx,
            }],
            errors_tx,
        )
        .await
        .unwrap();
    let responder = device.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let mut response = MessageEnvelope::new(
                b"{\"ok\":true}".to_vec(),
                request.envelope.correlation_id.clone(),
                "application/json",
            );
            response.request_id = request.envelope.request_id.clone();
            let topic = format!(
                "edgex/response/core-command/{}",
                request.envelope.request_id
            );
            responder.publish(&response, &topic).await.unwrap();
        }
    });

    let core = deployment.connect("core-command").await;
    let request = reading("get");
    let response = core
        .request(
            &request,
            "edgex/device/command/request/device-virtual/Random",
            "edgex/response/core-command",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(response.sender, "device-virtual");
    assert!(
        !response.envelope.request_id.is_empty(),
        "request() must fill in a request ID"
    );
    assert_eq!(response.envelope.payload, b"{\"ok\":true}");
}

#[tokio::test]
async fn rejections_reach_error_channel() {
    let deployment = Deployment::new();
    let core = deployment.connect("core-command").await;
    let (messages_tx, mut messages) = mpsc::channel(16);
    let (errors_tx, mut errors) = mpsc::channel(16);
    core.subscribe(
        vec![TopicChannel {
            topic: "edgex/events/#".into(),
            messages: messages_tx,
        }],
        errors_tx,
    )
    .await
    .unwrap();
    let bus = BusConfig::from_url("memory://client-tests").unwrap();
    let (raw, _incoming) = Transport::connect_memory(&deployment.broker, &bus)
        .await
        .unwrap();
    raw.publish(TOPIC, reading("plain").to_json().into())
        .await
        .unwrap();
    let rejection = tokio::time::timeout(WAIT, errors.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rejection.verdict, Verdict::Plaintext);
    assert_eq!(rejection.topic, TOPIC);
    let delivered = tokio::time::timeout(Duration::from_millis(300), messages.recv()).await;
    assert!(!matches!(delivered, Ok(Some(_))), "plaintext was delivered");
    assert_eq!(core.metrics().rejected(Verdict::Plaintext), 1);
}
