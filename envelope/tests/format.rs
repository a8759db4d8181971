//! Format tests: EdgeX fixtures survive seal and open byte for byte, random
//! envelopes round-trip, random input never panics the parsers, and the
//! known-answer vectors in `tests/vectors/v1.json` still hold.

mod common;

use std::path::PathBuf;

use common::*;
use proptest::prelude::*;
use sealbus_envelope::{
    parse_grant, parse_grant_request, parse_message, peek_kind, seal_grant, seal_grant_request,
    EnvelopeError, EpochKeys, GrantHeader, GrantRequestHeader, MessageEnvelope, OpenOptions,
    Receiver, Route, SealOptions, SendingEpoch, SymmetricKey,
};
use serde_json::{json, Value};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/edgex")
}

fn open_once(
    receiver: &mut Receiver,
    bytes: &[u8],
    route: Route<'_>,
    now_ms: u64,
) -> Result<MessageEnvelope, EnvelopeError> {
    let parsed = parse_message(bytes)?;
    let opened = receiver.open(
        &parsed,
        &OpenOptions {
            route,
            now_ms,
            redelivery: false,
        },
    )?;
    receiver.commit(&opened)?;
    Ok(opened.envelope)
}

#[test]
fn edgex_fixtures_survive_byte_for_byte() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        6,
        "expected six EdgeX fixtures in {:?}",
        fixtures_dir()
    );

    for path in names {
        let original = std::fs::read(&path).unwrap();
        let envelope = MessageEnvelope::from_json(&original).unwrap();
        assert_eq!(
            envelope.to_json(),
            original,
            "{path:?} does not re-serialize byte for byte"
        );

        let mut setup = setup(3);
        let topic = envelope.received_topic.clone();
        let route = Route {
            context: "redis",
            topic: &topic,
        };
        let sealed = setup
            .epoch
            .seal(
                &envelope,
                &SealOptions {
                    route,
                    timestamp_ms: NOW_MS,
                    grants: &[],
                },
            )
            .unwrap();
        for subscriber in &mut setup.subscribers {
            let opened = open_once(&mut subscriber.receiver, &sealed, route, NOW_MS).unwrap();
            assert_eq!(
                opened.to_json(),
                original,
                "{path:?} changed through seal and open"
            );
            assert_eq!(opened.payload, envelope.payload);
        }
    }
}

fn envelope_strategy() -> impl Strategy<Value = MessageEnvelope> {
    (
        "[a-z0-9]{0,4}",
        ".{0,40}",
        ".{0,40}",
        any::<i64>(),
        proptest::collection::vec(any::<u8>(), 0..600),
        any::<bool>(),
        "[a-z/+]{0,30}",
        proptest::collection::btree_map(".{0,10}", ".{0,10}", 0..5),
    )
        .prop_map(
            |(
                api_version,
                correlation_id,
                request_id,
                error_code,
                payload,
                null,
                content_type,
                query_params,
            )| {
                let payload_is_null = null && payload.is_empty();
                MessageEnvelope {
                    api_version,
                    received_topic: String::new(),
                    correlation_id,
                    request_id,
                    error_code,
                    payload,
                    payload_is_null,
                    content_type,
                    query_params,
                }
            },
        )
}

proptest! {
    #[test]
    fn random_envelopes_round_trip(envelope in envelope_strategy(), recipients in 1usize..5) {
        let mut setup = setup(recipients);
        let sealed = seal(&mut setup, &envelope);
        for subscriber in &mut setup.subscribers {
            let opened = open_once(&mut subscriber.receiver, &sealed, route(), NOW_MS).unwrap();
            prop_assert_eq!(&opened.received_topic, TOPIC);
            prop_assert_eq!(MessageEnvelope { received_topic: String::new(), ..opened }, envelope.clone());
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = peek_kind(&bytes);
        let _ = parse_message(&bytes);
        let _ = parse_grant(&bytes);
        let _ = parse_grant_request(&bytes);
        let mut receiver = Receiver::new();
        prop_assert!(open_once(&mut receiver, &bytes, route(), NOW_MS).is_err());
    }

    #[test]
    fn mutated_messages_never_panic(index in 0usize..400, value in any::<u8>()) {
        let mut setup = setup(2);
        let mut sealed = seal(&mut setup, &reading());
        let index = index % sealed.len();
        let changed = sealed[index] != value;
        sealed[index] = value;
        let result = open_once(&mut setup.subscribers[0].receiver, &sealed, route(), NOW_MS);
        // A change anywhere but in subscriber-1's origin tag must be caught.
        let tag_of_other = sealed.len() - 16..sealed.len();
        if changed && !tag_of_other.contains(&index) {
            prop_assert!(result.is_err());
        }
    }
}

// Known-answer vectors.

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/v1.json")
}

fn hex_key(value: &Value) -> [u8; 32] {
    let bytes = hex::decode(value.as_str().unwrap()).unwrap();
    bytes.try_into().unwrap()
}

fn keypair_from(value: &Value) -> sealbus_envelope::StaticKeypair {
    let secret = hex_key(value);
    let public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes();
    sealbus_envelope::StaticKeypair::new(secret, public)
}

/// Computes a vector's expected bytes from its inputs.
fn compute(vector: &Value) -> Vec<u8> {
    match vector["kind"].as_str().unwrap() {
        "grant" => {
            let sender = keypair_from(&vector["sender_secret"]);
            let recipient = keypair_from(&vector["recipient_secret"]);
            let keys = EpochKeys {
                audience_key: SymmetricKey::from_bytes(hex_key(&vector["audience_key"])),
                origin_key: SymmetricKey::from_bytes(hex_key(&vector["origin_key"])),
                slot: vector["slot"].as_u64().unwrap() as u16,
                audience_size: vector["audience_size"].as_u64().unwrap() as u16,
            };
            let header = GrantHeader {
                sender: vector["sender"].as_str().unwrap(),
                recipient: vector["recipient"].as_str().unwrap(),
                session: vector["session"].as_u64().unwrap(),
                epoch: vector["epoch"].as_u64().unwrap() as u32,
            };
            let ephemeral = hex_key(&vector["ephemeral_secret"]);
            seal_grant(
                &header,
                &keys,
                &sender,
                recipient.public(),
                Some(&ephemeral),
            )
            .unwrap()
        }
        "grant-request" => {
            let requester = keypair_from(&vector["requester_secret"]);
            let publisher = keypair_from(&vector["publisher_secret"]);
            let header = GrantRequestHeader {
                requester: vector["requester"].as_str().unwrap(),
                publisher: vector["publisher"].as_str().unwrap(),
                session: vector["session"].as_u64().unwrap(),
                epoch: vector["epoch"].as_u64().unwrap() as u32,
                timestamp_ms: vector["timestamp_ms"].as_u64().unwrap(),
            };
            let ephemeral = hex_key(&vector["ephemeral_secret"]);
            seal_grant_request(&header, &requester, publisher.public(), Some(&ephemeral)).unwrap()
        }
        "data" => {
            let origin_keys: Vec<SymmetricKey> = vector["origin_keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|key| SymmetricKey::from_bytes(hex_key(key)))
                .collect();
            let mut epoch = SendingEpoch::new(
                vector["sender"].as_str().unwrap(),
                vector["session"].as_u64().unwrap(),
                vector["epoch"].as_u64().unwrap() as u32,
                &SymmetricKey::from_bytes(hex_key(&vector["audience_key"])),
                origin_keys,
            )
            .unwrap();
            epoch.set_next_sequence_for_testing_only(vector["sequence"].as_u64().unwrap());
            let envelope: MessageEnvelope =
                serde_json::from_value(vector["envelope"].clone()).unwrap();
            let route = Route {
                context: vector["context"].as_str().unwrap(),
                topic: vector["topic"].as_str().unwrap(),
            };
            let grants: Vec<Vec<u8>> = vector["inline_grants"]
                .as_array()
                .map(|grants| {
                    grants
                        .iter()
                        .map(|grant| hex::decode(grant.as_str().unwrap()).unwrap())
                        .collect()
                })
                .unwrap_or_default();
            epoch
                .seal(
                    &envelope,
                    &SealOptions {
                        route,
                        timestamp_ms: vector["timestamp_ms"].as_u64().unwrap(),
                        grants: &grants,
                    },
                )
                .unwrap()
        }
        other => panic!("unknown vector kind {other}"),
    }
}

/// Opens a vector's bytes as its recipient would and returns the verdict.
fn verdict(vector: &Value, bytes: &[u8]) -> String {
    let slot = vector["recipient_slot"].as_u64().unwrap() as usize;
    let origin_keys = vector["origin_keys"].as_array().unwrap();
    let keys = EpochKeys {
        audience_key: SymmetricKey::from_bytes(hex_key(&vector["audience_key"])),
        origin_key: SymmetricKey::from_bytes(hex_key(&origin_keys[slot])),
        slot: slot as u16,
        audience_size: origin_keys.len() as u16,
    };
    let mut receiver = Receiver::new();
    receiver
        .install(
            vector["sender"].as_str().unwrap(),
            vector["session"].as_u64().unwrap(),
            vector["epoch"].as_u64().unwrap() as u32,
            keys,
        )
        .unwrap();
    let route = Route {
        context: vector["context"].as_str().unwrap(),
        topic: vector["topic"].as_str().unwrap(),
    };
    match open_once(
        &mut receiver,
        bytes,
        route,
        vector["timestamp_ms"].as_u64().unwrap(),
    ) {
        Ok(_) => "ok".into(),
        Err(error) => error.verdict().into(),
    }
}

fn generated_vectors() -> Value {
    let reading = MessageEnvelope::from_json(
        &std::fs::read(fixtures_dir().join("event-int16.json")).unwrap(),
    )
    .unwrap();
    let request = MessageEnvelope::from_json(
        &std::fs::read(fixtures_dir().join("command-request.json")).unwrap(),
    )
    .unwrap();
    let hex32 = |byte: u8| hex::encode([byte; 32]);
    let grant = json!({
        "name": "grant from device-virtual to core-data",
        "kind": "grant",
        "sender": "device-virtual", "sender_secret": hex32(0x11),
        "recipient": "core-data", "recipient_secret": hex32(0x22),
        "session": 1_733_300_000_000_000u64, "epoch": 1,
        "audience_key": hex32(0xA0), "origin_key": hex32(0xB0), "slot": 0, "audience_size": 1,
        "ephemeral_secret": hex32(0x33),
    });
    let grant_request = json!({
        "name": "grant request from core-data to device-virtual",
        "kind": "grant-request",
        "requester": "core-data", "requester_secret": hex32(0x22),
        "publisher": "device-virtual", "publisher_secret": hex32(0x11),
        "session": 1_733_300_000_000_000u64, "epoch": 1, "timestamp_ms": 1_733_300_000_500u64,
        "ephemeral_secret": hex32(0x44),
    });
    let single = json!({
        "name": "reading to one recipient over MQTT",
        "kind": "data",
        "sender": "device-virtual", "session": 1_733_300_000_000_000u64, "epoch": 1, "sequence": 0,
        "timestamp_ms": 1_733_300_000_123u64, "context": "mqtt",
        "topic": reading.received_topic.clone(),
        "audience_key": hex32(0xA0), "origin_keys": [hex32(0xB0)], "recipient_slot": 0,
        "envelope": serde_json::to_value(&reading).unwrap(),
    });
    let three = json!({
        "name": "command request to three recipients over Redis, with a bus id",
        "kind": "data",
        "sender": "core-command", "session": 42, "epoch": 7, "sequence": 1000,
        "timestamp_ms": 1_733_300_000_999u64, "context": "redis:plant-1",
        "topic": request.received_topic.clone(),
        "audience_key": hex32(0xA1), "origin_keys": [hex32(0xB1), hex32(0xB2), hex32(0xB3)], "recipient_slot": 2,
        "envelope": serde_json::to_value(&request).unwrap(),
    });
    // Multi-byte varints, a negative error code and an empty payload that
    // is not null: the body encodings a one-byte case cannot check.
    let mut response = MessageEnvelope::from_json(
        &std::fs::read(fixtures_dir().join("command-response-error.json")).unwrap(),
    )
    .unwrap();
    response.error_code = -129;
    response.payload.clear();
    response.payload_is_null = false;
    response
        .query_params
        .insert("detail".into(), "e".repeat(200));
    let unusual = json!({
        "name": "response with an empty payload, error code -129 and a 200-byte parameter",
        "kind": "data",
        "sender": "core-command", "session": 42, "epoch": 8, "sequence": 5,
        "timestamp_ms": 1_733_300_000_900u64, "context": "mqtt",
        "topic": response.received_topic.clone(),
        "audience_key": hex32(0xA2), "origin_keys": [hex32(0xB4), hex32(0xB5)], "recipient_slot": 1,
        "envelope": serde_json::to_value(&response).unwrap(),
    });
    let mut vectors = vec![grant, grant_request, single, three, unusual];
    let grant_bytes = compute(&vectors[0]);
    let mut with_grant = vectors[2].clone();
    with_grant["name"] = json!("reading with its grant inline");
    with_grant["inline_grants"] = json!([hex::encode(&grant_bytes)]);
    vectors.push(with_grant);
    for vector in &mut vectors {
        let bytes = compute(vector);
        vector["expected"] = json!(hex::encode(&bytes));
        vector["outcome"] = json!("ok");
    }

    // Rejections: altered copies of the three-recipient message, each with
    // the verdict its recipient must reach.
    let three_bytes = hex::decode(vectors[3]["expected"].as_str().unwrap()).unwrap();
    let mut rejections = Vec::new();
    let body_start = 4 + 1 + "core-command".len() + 8 + 4 + 8 + 8 + 2 + 4;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "body byte flipped",
            flip(&three_bytes, body_start),
            "forged",
        ),
        (
            "recipient's origin tag flipped",
            flip(&three_bytes, three_bytes.len() - 1),
            "forged",
        ),
        (
            "sequence changed",
            flip(&three_bytes, 4 + 1 + 12 + 8 + 4 + 7),
            "forged",
        ),
        (
            "truncated by one byte",
            three_bytes[..three_bytes.len() - 1].to_vec(),
            "malformed",
        ),
        ("plain EdgeX JSON", request.to_json(), "plaintext"),
    ];
    for (name, bytes, outcome) in cases {
        let mut vector = vectors[3].clone();
        vector["name"] = json!(format!("rejected: {name}"));
        vector["kind"] = json!("data-rejected");
        vector["expected"] = json!(hex::encode(&bytes));
        vector["outcome"] = json!(outcome);
        rejections.push(vector);
    }
    vectors.extend(rejections);
    json!({
        "description": "sealbus wire format v1 known-answer vectors. Keys are hex; 'expected' is the exact wire bytes (hex); 'outcome' is what the recipient in 'recipient_slot' must conclude when it opens them at 'timestamp_ms'. Grant vectors fix the Noise ephemeral secret. See docs/wire-format.md.",
        "vectors": vectors,
    })
}

fn flip(bytes: &[u8], index: usize) -> Vec<u8> {
    let mut copy = bytes.to_vec();
    copy[index] ^= 0x01;
    copy
}

#[test]
fn known_answer_vectors_hold() {
    let generated = generated_vectors();
    if std::env::var_os("SEALBUS_WRITE_VECTORS").is_some() {
        std::fs::write(
            vectors_path(),
            serde_json::to_string_pretty(&generated).unwrap() + "\n",
        )
        .unwrap();
    }
    let stored: Value = serde_json::from_slice(&std::fs::read(vectors_path()).expect(
        "tests/vectors/v1.json is missing; create it once with SEALBUS_WRITE_VECTORS=1 cargo test -p sealbus-envelope --test format",
    ))
    .unwrap();
    let vectors = stored["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 10);

    for vector in vectors {
        let name = vector["name"].as_str().unwrap();
        let expected = hex::decode(vector["expected"].as_str().unwrap()).unwrap();
        match vector["kind"].as_str().unwrap() {
            "data-rejected" => {
                assert_eq!(
                    verdict(vector, &expected),
                    vector["outcome"].as_str().unwrap(),
                    "{name}"
                );
            }
            "data" => {
                assert_eq!(
                    hex::encode(compute(vector)),
                    vector["expected"].as_str().unwrap(),
                    "{name}"
                );
                assert_eq!(verdict(vector, &expected), "ok", "{name}");
            }
            "grant" => {
                assert_eq!(
                    hex::encode(compute(vector)),
                    vector["expected"].as_str().unwrap(),
                    "{name}"
                );
                let recipient = keypair_from(&vector["recipient_secret"]);
                let sender = keypair_from(&vector["sender_secret"]);
                let keys = parse_grant(&expected)
                    .unwrap()
                    .open(
                        vector["recipient"].as_str().unwrap(),
                        &recipient,
                        sender.public(),
                    )
                    .unwrap();
                assert_eq!(
                    keys.audience_key.expose_secret(),
                    &hex_key(&vector["audience_key"]),
                    "{name}"
                );
            }
            "grant-request" => {
                assert_eq!(
                    hex::encode(compute(vector)),
                    vector["expected"].as_str().unwrap(),
                    "{name}"
                );
                let requester = keypair_from(&vector["requester_secret"]);
                let publisher = keypair_from(&vector["publisher_secret"]);
                parse_grant_request(&expected)
                    .unwrap()
                    .verify(
                        vector["publisher"].as_str().unwrap(),
                        &publisher,
                        requester.public(),
                        vector["timestamp_ms"].as_u64().unwrap(),
                    )
                    .unwrap();
            }
            other => panic!("unknown vector kind {other} in {name}"),
        }
    }
}
