//! Shared setup for the integration tests: a throwaway deployment (CA,
//! identities, trust bundle) and helpers to connect secure clients to a
//! real broker.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_core::OsRng;
use sealbus_bus_adapters::client::{ReceivedMessage, SecureMessageClient, TopicChannel};
use sealbus_bus_adapters::config::BusConfig;
use sealbus_bus_adapters::secure::{Rejection, SecurityConfig, SystemClock};
use sealbus_envelope::MessageEnvelope;
use sealbus_keyring::{
    Certificate, CertificateAuthority, Identity, Policy, ServiceName, StaticSecret,
};
use tokio::sync::mpsc;

/// Upper bound for any single wait in these tests; only bounds hangs.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A CA with identities and a signed bundle.
pub struct Deployment {
    pub authority: CertificateAuthority,
    pub identities: Vec<Identity>,
    pub revoked: Vec<[u8; 32]>,
    pub policy: Policy,
}

/// The EdgeX-like identities most tests use.
pub fn standard_specs() -> Vec<(&'static str, Vec<&'static str>, Vec<&'static str>)> {
    vec![
        (
            "device-virtual",
            vec!["edgex/events/device/device-virtual/#", "edgex/response/#"],
            vec!["edgex/device/command/request/device-virtual/#"],
        ),
        ("core-data", vec![], vec!["edgex/events/#"]),
        ("app-service", vec![], vec!["edgex/events/#"]),
        (
            "core-command",
            vec!["edgex/device/command/request/#"],
            vec!["edgex/response/core-command/#"],
        ),
        ("rogue-service", vec!["rogue/#"], vec!["rogue/#"]),
    ]
}

impl Deployment {
    pub fn new(specs: &[(&str, Vec<&str>, Vec<&str>)]) -> Self {
        let mut authority = CertificateAuthority::in_memory(&mut OsRng);
        let mut identities = Vec::new();
        for (name, publish, subscribe) in specs {
            let secret = StaticSecret::generate(&mut OsRng);
            let certificate = authority
                .issue(
                    ServiceName::new(*name).unwrap(),
                    secret.public_key(),
                    publish.iter().map(|filter| (*filter).to_owned()).collect(),
                    subscribe
                        .iter()
                        .map(|filter| (*filter).to_owned())
                        .collect(),
                    now_s() - 60,
                    now_s() + 3600,
                )
                .unwrap();
            identities.push(Identity::new(secret, certificate).unwrap());
        }
        let certificates: Vec<Certificate> = identities
            .iter()
            .map(|identity| identity.certificate().clone())
            .collect();
        let bundle = authority
            .sign_bundle(certificates, Vec::new(), now_s())
            .unwrap();
        let policy = Policy::new(bundle, authority.public_key()).unwrap();
        Self {
            authority,
            identities,
            revoked: Vec::new(),
            policy,
        }
    }

    pub fn standard() -> Self {
        Self::new(&standard_specs())
    }

    pub fn identity(&self, name: &str) -> Identity {
        self.identities
            .iter()
            .find(|identity| identity.name().as_str() == name)
            .cloned()
            .unwrap()
    }

    /// Signs a new bundle that revokes `name`.
    pub fn revoke(&mut self, name: &str) {
        self.revoked
            .push(self.identity(name).certificate().fingerprint());
        let certificates: Vec<Certificate> = self
            .identities
            .iter()
            .map(|identity| identity.certificate().clone())
            .collect();
        let bundle = self
            .authority
            .sign_bundle(certificates, self.revoked.clone(), now_s())
            .unwrap();
        self.policy = Policy::new(bundle, self.authority.public_key()).unwrap();
    }

    pub fn security(&self, name: &str) -> SecurityConfig {
        SecurityConfig {
            identity: self.identity(name),
            policy: self.policy.clone(),
            clock: Arc::new(SystemClock),
            rng: Box::new(OsRng),
        }
    }

    pub async fn connect(&self, url: &str, name: &str) -> SecureMessageClient {
        let bus = BusConfig::from_url(url).unwrap();
        SecureMessageClient::connect(&bus, self.security(name))
            .await
            .unwrap()
    }
}

/// A subscription's two channels.
pub struct Inbox {
    pub messages: mpsc::Receiver<ReceivedMessage>,
    pub errors: mpsc::Receiver<Rejection>,
}

impl Inbox {
    pub async fn next(&mut self) -> ReceivedMessage {
        tokio::time::timeout(WAIT, self.messages.recv())
            .await
            .expect("timed out waiting for a message")
            .expect("message channel closed")
    }

    pub async fn next_error(&mut self) -> Rejection {
        tokio::time::timeout(WAIT, self.errors.recv())
            .await
            .expect("timed out waiting for a rejection")
            .expect("error channel closed")
    }

    /// Asserts that nothing is delivered within `period`.
    pub async fn assert_quiet(&mut self, period: Duration) {
        if let Ok(Some(message)) = tokio::time::timeout(period, self.messages.recv()).await {
            panic!(
                "unexpected delivery on {} from {}",
                message.topic, message.sender
            );
        }
    }
}

pub async fn subscribe(client: &SecureMessageClient, filter: &str) -> Inbox {
    let (messages_tx, messages) = mpsc::channel(4096);
    let (errors_tx, errors) = mpsc::channel(4096);
    client
        .subscribe(
            vec![TopicChannel {
                topic: filter.to_owned(),
                messages: messages_tx,
            }],
            errors_tx,
        )
        .await
        .unwrap();
    Inbox { messages, errors }
}

pub fn reading(value: &str) -> MessageEnvelope {
    let payload = format!(
        r#"{{"apiVersion":"v3","event":{{"deviceName":"Random-Integer-Device","readings":[{{"resourceName":"Int16","valueType":"Int16","value":"{value}"}}]}}}}"#
    );
    MessageEnvelope::new(
        payload.into_bytes(),
        format!("corr-{value}"),
        "application/json",
    )
}

pub const EVENT_TOPIC: &str =
    "edgex/events/device/device-virtual/Random-Integer-Device/Random-Integer-Device/Int16";
