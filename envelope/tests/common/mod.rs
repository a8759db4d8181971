//! Shared setup for the envelope tests: deterministic keys, a publisher
//! with an epoch and receivers that installed their grants.

#![allow(dead_code)]

use sealbus_envelope::{
    parse_grant, seal_grant, EpochKeys, GrantHeader, MessageEnvelope, Receiver, Route, SealOptions,
    SendingEpoch, StaticKeypair, SymmetricKey,
};

pub const NOW_MS: u64 = 1_780_000_000_000;
pub const TOPIC: &str = "edgex/events/device/device-virtual/Random-Integer-Device/Int16";
pub const CONTEXT: &str = "mqtt";

pub fn route() -> Route<'static> {
    Route {
        context: CONTEXT,
        topic: TOPIC,
    }
}

pub fn keypair(seed: u8) -> StaticKeypair {
    let secret = [seed; 32];
    let public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes();
    StaticKeypair::new(secret, public)
}

pub fn key(seed: u8) -> SymmetricKey {
    SymmetricKey::from_bytes([seed; 32])
}

pub struct Subscriber {
    pub name: String,
    pub keypair: StaticKeypair,
    pub receiver: Receiver,
}

pub struct Setup {
    pub publisher_name: String,
    pub publisher: StaticKeypair,
    pub epoch: SendingEpoch,
    pub grants: Vec<Vec<u8>>,
    pub subscribers: Vec<Subscriber>,
}

/// Builds a publisher with one epoch for `count` subscribers, and installs
/// each subscriber's grant.
pub fn setup_with(count: usize, session: u64, epoch_number: u32) -> Setup {
    let publisher = keypair(1);
    let audience_key = key(100);
    let origin_keys: Vec<SymmetricKey> = (0..count).map(|i| key(110 + i as u8)).collect();
    let epoch = SendingEpoch::new(
        "device-virtual",
        session,
        epoch_number,
        &audience_key,
        origin_keys.clone(),
    )
    .unwrap();

    let mut grants = Vec::new();
    let mut subscribers = Vec::new();
    for (slot, origin_key) in origin_keys.iter().enumerate() {
        let name = format!("subscriber-{slot}");
        let keypair = keypair(10 + slot as u8);
        let keys = EpochKeys {
            audience_key: audience_key.clone(),
            origin_key: origin_key.clone(),
            slot: slot as u16,
            audience_size: count as u16,
        };
        let header = GrantHeader {
            sender: "device-virtual",
            recipient: &name,
            session,
            epoch: epoch_number,
        };
        let grant = seal_grant(&header, &keys, &publisher, keypair.public(), None).unwrap();
        let opened = parse_grant(&grant)
            .unwrap()
            .open(&name, &keypair, publisher.public())
            .unwrap();
        let mut receiver = Receiver::new();
        receiver
            .install("device-virtual", session, epoch_number, opened)
            .unwrap();
        grants.push(grant);
        subscribers.push(Subscriber {
            name,
            keypair,
            receiver,
        });
    }
    Setup {
        publisher_name: "device-virtual".into(),
        publisher,
        epoch,
        grants,
        subscribers,
    }
}

pub fn setup(count: usize) -> Setup {
    setup_with(count, 7, 1)
}

pub fn reading() -> MessageEnvelope {
    let mut envelope = MessageEnvelope::new(
        br#"{"value":"42"}"#.to_vec(),
        "5c4f1e2a-0000-4000-8000-000000000001",
        "application/json",
    );
    envelope
        .query_params
        .insert("ds-pushevent".into(), "true".into());
    envelope
}

pub fn seal(setup: &mut Setup, envelope: &MessageEnvelope) -> Vec<u8> {
    setup
        .epoch
        .seal(
            envelope,
            &SealOptions {
                route: route(),
                timestamp_ms: NOW_MS,
                grants: &[],
            },
        )
        .unwrap()
}
