//! Seeds of the envelope targets (`open_message`, `parse_grant`,
//! `edgex_json`), from the known-answer vectors and the EdgeX fixtures.

use sealbus_envelope::{
    parse_grant, parse_grant_request, parse_message, seal_grant, seal_grant_request, GrantHeader,
    GrantRequestHeader, MessageEnvelope, OpenOptions, SealOptions, SymmetricKey,
};
use serde_json::Value;

use super::{slug, Seed};
use crate::{
    receiver, static_keypair, Channel, CHANNELS, NOW_MS, PUBLISHER_NAME, PUBLISHER_SECRET_BYTE,
    SUBSCRIBER_NAME, SUBSCRIBER_SECRET_BYTE,
};

/// Fixed Noise ephemeral secret of the grants sealed here, so the seed
/// bytes are reproducible. Real grants always draw a fresh one.
const SEED_EPHEMERAL: [u8; 32] = [0x55; 32];

fn expected_bytes(vector: &Value) -> Vec<u8> {
    hex::decode(
        vector["expected"]
            .as_str()
            .expect("vector has \"expected\" hex"),
    )
    .expect("\"expected\" is hex")
}

pub(super) fn open_message_seeds(vectors: &[Value], fixtures: &[Seed]) -> Vec<Seed> {
    let mut seeds = Vec::new();
    for vector in vectors {
        let kind = vector["kind"].as_str().unwrap_or_default();
        if kind != "data" && kind != "data-rejected" {
            continue;
        }
        let name = vector["name"].as_str().expect("vector has a name");
        let bytes = expected_bytes(vector);
        if vector["outcome"] == "ok" {
            assert_opens(&bytes, name);
        }
        seeds.push(Seed::new(format!("vector-{}.bin", slug(name)), bytes));
    }

    for fixture in fixtures {
        let stem = &fixture.name;
        let envelope = MessageEnvelope::from_json(&fixture.bytes).expect("fixture parses");
        for channel in &CHANNELS {
            let bytes = seal_on(channel, &envelope);
            assert_opens(&bytes, stem);
            seeds.push(Seed::new(
                format!("sealed-{stem}-{}.bin", channel.sender),
                bytes,
            ));
        }
    }
    seeds
}

fn seal_on(channel: &Channel, envelope: &MessageEnvelope) -> Vec<u8> {
    let options = SealOptions {
        route: channel.route,
        timestamp_ms: NOW_MS,
        grants: &[],
    };
    channel
        .sending_epoch()
        .seal(envelope, &options)
        .expect("fixture seals")
}

/// Panics unless the fixed receiver opens `bytes` on one of the channels.
fn assert_opens(bytes: &[u8], name: &str) {
    let message = parse_message(bytes).unwrap_or_else(|error| panic!("{name}: {error}"));
    let receiver = receiver();
    let opens = CHANNELS.iter().any(|channel| {
        let options = OpenOptions {
            route: channel.route,
            now_ms: NOW_MS,
            redelivery: false,
        };
        receiver.open(&message, &options).is_ok()
    });
    assert!(opens, "{name}: no fixed channel opens this message");
}

pub(super) fn parse_grant_seeds(vectors: &[Value]) -> Vec<Seed> {
    let publisher = static_keypair(PUBLISHER_SECRET_BYTE);
    let subscriber = static_keypair(SUBSCRIBER_SECRET_BYTE);
    let mut seeds = Vec::new();

    for vector in vectors {
        let kind = vector["kind"].as_str().unwrap_or_default();
        let name = vector["name"].as_str().unwrap_or_default();
        let bytes = match kind {
            "grant" => {
                let bytes = expected_bytes(vector);
                parse_grant(&bytes)
                    .expect("grant vector parses")
                    .open(SUBSCRIBER_NAME, &subscriber, publisher.public())
                    .unwrap_or_else(|error| panic!("{name}: {error}"));
                bytes
            }
            "grant-request" => {
                let bytes = expected_bytes(vector);
                parse_grant_request(&bytes)
                    .expect("grant request vector parses")
                    .verify(PUBLISHER_NAME, &publisher, subscriber.public(), NOW_MS)
                    .unwrap_or_else(|error| panic!("{name}: {error}"));
                bytes
            }
            _ => continue,
        };
        seeds.push(Seed::new(format!("vector-{}.bin", slug(name)), bytes));
    }

    // A grant for the middle slot of a three-recipient epoch.
    let channel = &CHANNELS[1];
    let mut keys = channel.receiving_keys();
    keys.slot = 1;
    keys.origin_key = SymmetricKey::from_bytes([channel.origin_key_bytes[1]; 32]);
    let header = GrantHeader {
        sender: PUBLISHER_NAME,
        recipient: SUBSCRIBER_NAME,
        session: channel.session,
        epoch: channel.epoch,
    };
    let grant = seal_grant(
        &header,
        &keys,
        &publisher,
        subscriber.public(),
        Some(&SEED_EPHEMERAL),
    )
    .expect("seed grant seals");
    parse_grant(&grant)
        .expect("seed grant parses")
        .open(SUBSCRIBER_NAME, &subscriber, publisher.public())
        .expect("seed grant opens");
    seeds.push(Seed::new("sealed-grant-slot-1-of-3.bin", grant));

    let request_header = GrantRequestHeader {
        requester: SUBSCRIBER_NAME,
        publisher: PUBLISHER_NAME,
        session: channel.session,
        epoch: channel.epoch,
        timestamp_ms: NOW_MS,
    };
    let request = seal_grant_request(
        &request_header,
        &subscriber,
        publisher.public(),
        Some(&SEED_EPHEMERAL),
    )
    .expect("seed grant request seals");
    parse_grant_request(&request)
        .expect("seed grant request parses")
        .verify(PUBLISHER_NAME, &publisher, subscriber.public(), NOW_MS)
        .expect("seed grant request verifies");
    seeds.push(Seed::new("sealed-grant-request-epoch-7.bin", request));
    seeds
}

pub(super) fn edgex_json_seeds(vectors: &[Value], fixtures: &[Seed]) -> Vec<Seed> {
    let mut seeds: Vec<Seed> = fixtures
        .iter()
        .map(|fixture| {
            Seed::new(
                format!("fixture-{}.json", fixture.name),
                fixture.bytes.clone(),
            )
        })
        .collect();
    for vector in vectors {
        if vector["kind"] != "data" {
            continue;
        }
        let name = vector["name"].as_str().expect("vector has a name");
        let json = serde_json::to_vec(&vector["envelope"]).expect("envelope serializes");
        MessageEnvelope::from_json(&json).unwrap_or_else(|error| panic!("{name}: {error}"));
        seeds.push(Seed::new(format!("vector-{}.json", slug(name)), json));
    }
    seeds
}
