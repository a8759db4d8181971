//! Attacks on sealed messages and grants. Each test asserts the typed error
//! and that nothing was delivered (the receiver state is unchanged, so the
//! genuine message still opens afterwards).

mod common;

use common::*;
use sealbus_envelope::limits::{
    MAX_CLOCK_SKEW_MS, MAX_MESSAGE_AGE_MS, MAX_SEALED_SIZE, MAX_SEQUENCE,
};
use sealbus_envelope::{
    parse_grant, parse_message, seal_grant, AuthFailure, EnvelopeError, EpochKeys, GrantHeader,
    Malformed, MessageEnvelope, OpenOptions, Receiver, Route, SealOptions, SendingEpoch,
};

/// Parses, opens and commits, the way an adapter delivers a message.
fn deliver(
    receiver: &mut Receiver,
    bytes: &[u8],
    route: Route<'_>,
    now_ms: u64,
    redelivery: bool,
) -> Result<MessageEnvelope, EnvelopeError> {
    let parsed = parse_message(bytes)?;
    let opened = receiver.open(
        &parsed,
        &OpenOptions {
            route,
            now_ms,
            redelivery,
        },
    )?;
    receiver.commit(&opened)?;
    Ok(opened.envelope)
}

fn deliver_now(receiver: &mut Receiver, bytes: &[u8]) -> Result<MessageEnvelope, EnvelopeError> {
    deliver(receiver, bytes, route(), NOW_MS, false)
}

fn auth_reason(error: &EnvelopeError) -> Option<AuthFailure> {
    match error {
        EnvelopeError::Authentication(auth) => Some(auth.audit_reason()),
        _ => None,
    }
}

#[test]
fn genuine_message_opens_with_fields() {
    let mut setup = setup(3);
    let sent = reading();
    let bytes = seal(&mut setup, &sent);
    for subscriber in &mut setup.subscribers {
        let received = deliver_now(&mut subscriber.receiver, &bytes).unwrap();
        assert_eq!(received.received_topic, TOPIC);
        assert_eq!(received.payload, sent.payload);
        assert_eq!(received.query_params, sent.query_params);
        assert_eq!(received.correlation_id, sent.correlation_id);
    }
}

#[test]
fn broker_forged_body_is_rejected() {
    let mut setup = setup(1);
    let bytes = seal(&mut setup, &reading());
    let body_start = 4 + 1 + "device-virtual".len() + 8 + 4 + 8 + 8 + 2 + 4;
    let mut forged = bytes.clone();
    forged[body_start + 3] ^= 0x01;
    let receiver = &mut setup.subscribers[0].receiver;
    let error = deliver_now(receiver, &forged).unwrap_err();
    assert_eq!(auth_reason(&error), Some(AuthFailure::BodyTag));
    assert_eq!(error.to_string(), "message authentication failed");
    assert!(
        deliver_now(receiver, &bytes).is_ok(),
        "genuine message must still open"
    );
}

#[test]
fn co_subscriber_cannot_forge_publisher() {
    let mut setup = setup(3);
    // subscriber-2 holds the audience key and its own origin key, and builds
    // a message that names device-virtual with guessed origin keys for the
    // others.
    let audience_key = key(100);
    let guessed = vec![key(1), key(2), key(112)];
    let mut forger = SendingEpoch::new("device-virtual", 7, 1, &audience_key, guessed).unwrap();
    let mut fake = reading();
    fake.payload = br#"{"value":"-999"}"#.to_vec();
    let forged = forger
        .seal(
            &fake,
            &SealOptions {
                route: route(),
                timestamp_ms: NOW_MS,
                grants: &[],
            },
        )
        .unwrap();

    for victim in 0..2 {
        let receiver = &mut setup.subscribers[victim].receiver;
        let error = deliver_now(receiver, &forged).unwrap_err();
        assert_eq!(
            auth_reason(&error),
            Some(AuthFailure::OriginTag),
            "victim {victim}"
        );
    }
    // The forger only fools itself, which is no attack.
    assert!(deliver_now(&mut setup.subscribers[2].receiver, &forged).is_ok());

    let genuine = seal(&mut setup, &reading());
    assert!(deliver_now(&mut setup.subscribers[0].receiver, &genuine).is_ok());
}

#[test]
fn co_subscriber_cannot_swap_body_under_same_tags() {
    // A co-subscriber re-encrypts a different body but keeps the genuine
    // origin tags: the tags cover a digest of the whole ciphertext, not just
    // the AEAD tag, so they no longer match.
    let mut setup = setup(2);
    let genuine = seal(&mut setup, &reading());
    let mut forger =
        SendingEpoch::new("device-virtual", 7, 1, &key(100), vec![key(1), key(2)]).unwrap();
    forger.set_next_sequence_for_testing_only(0);
    let mut fake = reading();
    fake.payload = b"evil".to_vec();
    let mut forged = forger
        .seal(
            &fake,
            &SealOptions {
                route: route(),
                timestamp_ms: NOW_MS,
                grants: &[],
            },
        )
        .unwrap();
    let tags_len = 2 * 16;
    let forged_len = forged.len();
    forged[forged_len - tags_len..].copy_from_slice(&genuine[genuine.len() - tags_len..]);
    let error = deliver_now(&mut setup.subscribers[0].receiver, &forged).unwrap_err();
    assert_eq!(auth_reason(&error), Some(AuthFailure::OriginTag));
}

#[test]
fn every_flipped_header_byte_is_rejected() {
    let mut setup = setup(2);
    let bytes = seal(&mut setup, &reading());
    let body_start = 4 + 1 + "device-virtual".len() + 8 + 4 + 8 + 8 + 2 + 4;
    for index in 0..body_start {
        for bit in [0x01u8, 0x80] {
            let mut tampered = bytes.clone();
            tampered[index] ^= bit;
            let receiver = &mut setup.subscribers[0].receiver;
            assert!(
                deliver_now(receiver, &tampered).is_err(),
                "flip of bit {bit:#x} in byte {index} accepted"
            );
        }
    }
    assert!(deliver_now(&mut setup.subscribers[0].receiver, &bytes).is_ok());
}

#[test]
fn every_flipped_byte_anywhere_is_rejected() {
    let mut setup = setup(2);
    let bytes = seal(&mut setup, &reading());
    // subscriber-1 checks the AEAD tag and its own origin tag (the last 16
    // bytes). The 16 bytes before them are subscriber-0's tag, which only
    // subscriber-0 can check.
    let other_tag = bytes.len() - 32..bytes.len() - 16;
    for index in 0..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[index] ^= 0x04;
        if other_tag.contains(&index) {
            let error = deliver_now(&mut setup.subscribers[0].receiver, &tampered).unwrap_err();
            assert_eq!(
                auth_reason(&error),
                Some(AuthFailure::OriginTag),
                "byte {index}"
            );
            continue;
        }
        let result = deliver_now(&mut setup.subscribers[1].receiver, &tampered);
        assert!(result.is_err(), "flip in byte {index} accepted");
    }
    assert!(deliver_now(&mut setup.subscribers[1].receiver, &bytes).is_ok());
    assert!(deliver_now(&mut setup.subscribers[0].receiver, &bytes).is_ok());
}

#[test]
fn other_topic_is_rejected() {
    let mut setup = setup(1);
    let bytes = seal(&mut setup, &reading());
    let receiver = &mut setup.subscribers[0].receiver;
    let moved = Route {
        context: CONTEXT,
        topic: "edgex/events/device/device-virtual/Other/Int16",
    };
    let error = deliver(receiver, &bytes, moved, NOW_MS, false).unwrap_err();
    assert_eq!(auth_reason(&error), Some(AuthFailure::BodyTag));
    assert!(deliver_now(receiver, &bytes).is_ok());
}

#[test]
fn other_bus_type_is_rejected() {
    let mut setup = setup(1);
    let bytes = seal(&mut setup, &reading());
    let receiver = &mut setup.subscribers[0].receiver;
    for context in ["redis", "memory", "mqtt:plant-2"] {
        let moved = Route {
            context,
            topic: TOPIC,
        };
        let error = deliver(receiver, &bytes, moved, NOW_MS, false).unwrap_err();
        assert_eq!(
            auth_reason(&error),
            Some(AuthFailure::BodyTag),
            "context {context}"
        );
    }
    assert!(deliver_now(receiver, &bytes).is_ok());
}

#[test]
fn replay_after_acceptance_is_rejected() {
    let mut setup = setup(1);
    let bytes = seal(&mut setup, &reading());
    let receiver = &mut setup.subscribers[0].receiver;
    deliver_now(receiver, &bytes).unwrap();
    let error = deliver_now(receiver, &bytes).unwrap_err();
    assert!(
        matches!(error, EnvelopeError::Replay { sequence: 0, .. }),
        "{error:?}"
    );
    assert_eq!(error.verdict(), "replay");
}

#[test]
fn qos1_redelivery_is_duplicate() {
    let mut setup = setup(1);
    let bytes = seal(&mut setup, &reading());
    let receiver = &mut setup.subscribers[0].receiver;
    deliver_now(receiver, &bytes).unwrap();
    let error = deliver(receiver, &bytes, route(), NOW_MS, true).unwrap_err();
    assert!(
        matches!(error, EnvelopeError::Duplicate { .. }),
        "{error:?}"
    );
    assert_eq!(error.verdict(), "duplicate");
}

#[test]
fn earlier_session_replay_is_rejected() {
    // A message of session 7 that the receiver never saw is replayed after
    // the publisher restarted with session 8.
    let mut old = setup_with(1, 7, 1);
    let old_message = seal(&mut old, &reading());
    let mut new = setup_with(1, 8, 1);
    let new_message = seal(&mut new, &reading());
    let receiver = &mut new.subscribers[0].receiver;
    deliver_now(receiver, &new_message).unwrap();
    let error = deliver_now(receiver, &old_message).unwrap_err();
    assert!(
        matches!(error, EnvelopeError::StaleEpoch { session: 7, .. }),
        "{error:?}"
    );
    assert_eq!(error.verdict(), "replay");

    // The old session's grant is refused too, so it cannot be re-installed.
    let grant = parse_grant(&old.grants[0]).unwrap();
    let keys = grant
        .open(
            "subscriber-0",
            &new.subscribers[0].keypair,
            old.publisher.public(),
        )
        .unwrap();
    let error = new.subscribers[0]
        .receiver
        .install("device-virtual", 7, 1, keys)
        .unwrap_err();
    assert!(matches!(error, EnvelopeError::StaleEpoch { .. }));
}

#[test]
fn plaintext_json_is_reported_as_plaintext() {
    let mut setup = setup(1);
    let plain = reading().to_json();
    let error = deliver_now(&mut setup.subscribers[0].receiver, &plain).unwrap_err();
    assert_eq!(error, EnvelopeError::Malformed(Malformed::Plaintext));
    assert_eq!(error.verdict(), "plaintext");
    let error = deliver_now(&mut setup.subscribers[0].receiver, b"hello").unwrap_err();
    assert_eq!(error.verdict(), "plaintext");
}

#[test]
fn expired_message_is_rejected() {
    let mut setup = setup(1);
    let bytes = seal(&mut setup, &reading());
    let receiver = &mut setup.subscribers[0].receiver;
    let late = NOW_MS + MAX_MESSAGE_AGE_MS + 1;
    let error = deliver(receiver, &bytes, route(), late, false).unwrap_err();
    assert!(matches!(error, EnvelopeError::Expired { .. }), "{error:?}");
    assert!(deliver(
        receiver,
        &bytes,
        route(),
        NOW_MS + MAX_MESSAGE_AGE_MS,
        false
    )
    .is_ok());
}

#[test]
fn message_from_future_is_rejected() {
    let mut setup = setup(1);
    let bytes = seal(&mut setup, &reading());
    let receiver = &mut setup.subscribers[0].receiver;
    let early = NOW_MS - MAX_CLOCK_SKEW_MS - 1;
    let error = deliver(receiver, &bytes, route(), early, false).unwrap_err();
    assert!(
        matches!(error, EnvelopeError::FromFuture { .. }),
        "{error:?}"
    );
    assert!(deliver(receiver, &bytes, route(), NOW_MS - MAX_CLOCK_SKEW_MS, false).is_ok());
}

#[test]
fn every_truncation_is_rejected() {
    let mut setup = setup(2);
    let bytes = seal(&mut setup, &reading());
    for len in 0..bytes.len() {
        let error = deliver_now(&mut setup.subscribers[0].receiver, &bytes[..len]).unwrap_err();
        assert!(
            matches!(error, EnvelopeError::Malformed(_)),
            "prefix of {len}: {error:?}"
        );
    }
    assert!(deliver_now(&mut setup.subscribers[0].receiver, &bytes).is_ok());
}

#[test]
fn oversized_input_is_rejected_before_parsing() {
    let mut oversized = vec![0u8; MAX_SEALED_SIZE + 1];
    oversized[0] = 0xB5;
    let error = parse_message(&oversized).unwrap_err();
    assert!(matches!(error, Malformed::TooLarge { .. }));
}

#[test]
fn garbage_input_is_malformed() {
    let mut receiver = Receiver::new();
    let inputs: [&[u8]; 5] = [
        b"",
        b"\x00\x01\x02",
        &[0xB5],
        &[0xB5, 2, 1, 0],
        &[0xB5, 1, 9, 0],
    ];
    for input in inputs {
        let error = deliver_now(&mut receiver, input).unwrap_err();
        assert!(
            matches!(error, EnvelopeError::Malformed(_)),
            "{input:?}: {error:?}"
        );
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut setup = setup(1);
    let mut bytes = seal(&mut setup, &reading());
    bytes.push(0);
    let error = deliver_now(&mut setup.subscribers[0].receiver, &bytes).unwrap_err();
    assert_eq!(
        error,
        EnvelopeError::Malformed(Malformed::TrailingBytes("data message"))
    );
}

#[test]
fn wrong_recipient_grant_is_rejected() {
    let setup = setup(2);
    // subscriber-1 receives subscriber-0's grant.
    let grant = parse_grant(&setup.grants[0]).unwrap();
    let thief = &setup.subscribers[1];
    let error = grant
        .open(&thief.name, &thief.keypair, setup.publisher.public())
        .unwrap_err();
    assert!(
        matches!(error, EnvelopeError::WrongRecipient { .. }),
        "{error:?}"
    );

    // Even when it rewrites the recipient name, the Noise message only opens
    // with subscriber-0's static key.
    let mut renamed = setup.grants[0].clone();
    let position = renamed
        .windows(12)
        .position(|window| window == b"subscriber-0")
        .unwrap();
    renamed[position + 11] = b'1';
    let grant = parse_grant(&renamed).unwrap();
    let error = grant
        .open(&thief.name, &thief.keypair, setup.publisher.public())
        .unwrap_err();
    assert_eq!(auth_reason(&error), Some(AuthFailure::Grant));
}

#[test]
fn forged_grant_from_other_key_is_rejected() {
    let setup = setup(1);
    let impostor = keypair(66);
    let keys = EpochKeys {
        audience_key: key(1),
        origin_key: key(2),
        slot: 0,
        audience_size: 1,
    };
    let header = GrantHeader {
        sender: "device-virtual",
        recipient: "subscriber-0",
        session: 7,
        epoch: 2,
    };
    let forged = seal_grant(
        &header,
        &keys,
        &impostor,
        setup.subscribers[0].keypair.public(),
        None,
    )
    .unwrap();
    let subscriber = &setup.subscribers[0];
    let error = parse_grant(&forged)
        .unwrap()
        .open(
            &subscriber.name,
            &subscriber.keypair,
            setup.publisher.public(),
        )
        .unwrap_err();
    assert_eq!(auth_reason(&error), Some(AuthFailure::Grant));
}

#[test]
fn every_flipped_grant_byte_is_rejected() {
    let setup = setup(1);
    let subscriber = &setup.subscribers[0];
    for index in 0..setup.grants[0].len() {
        let mut tampered = setup.grants[0].clone();
        tampered[index] ^= 0x01;
        let result = parse_grant(&tampered)
            .map_err(EnvelopeError::from)
            .and_then(|grant| {
                grant.open(
                    &subscriber.name,
                    &subscriber.keypair,
                    setup.publisher.public(),
                )
            });
        assert!(result.is_err(), "flip in grant byte {index} accepted");
    }
}

#[test]
fn tampered_then_genuine_still_opens() {
    let mut setup = setup(2);
    let bytes = seal(&mut setup, &reading());
    let mut tampered = bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xFF;
    let receiver = &mut setup.subscribers[1].receiver;
    assert!(deliver_now(receiver, &tampered).is_err());
    assert!(deliver_now(receiver, &bytes).is_ok());
}

#[test]
fn dropped_message_does_not_block_later() {
    let mut setup = setup(1);
    let messages: Vec<Vec<u8>> = (0..10).map(|_| seal(&mut setup, &reading())).collect();
    let receiver = &mut setup.subscribers[0].receiver;
    for (index, message) in messages.iter().enumerate() {
        if index == 3 || index == 4 {
            continue;
        }
        assert!(deliver_now(receiver, message).is_ok(), "message {index}");
    }
    // A late arrival of a dropped one still opens once.
    assert!(deliver_now(receiver, &messages[3]).is_ok());
    assert!(deliver_now(receiver, &messages[3]).is_err());
}

#[test]
fn sequence_at_top_is_refused_not_wrapped() {
    let mut setup = setup(1);
    setup.epoch.set_next_sequence_for_testing_only(MAX_SEQUENCE);
    let last = seal(&mut setup, &reading());
    assert!(deliver_now(&mut setup.subscribers[0].receiver, &last).is_ok());
    let error = setup
        .epoch
        .seal(
            &reading(),
            &SealOptions {
                route: route(),
                timestamp_ms: NOW_MS,
                grants: &[],
            },
        )
        .unwrap_err();
    assert_eq!(error, EnvelopeError::SequenceExhausted { epoch: 1 });
    assert_eq!(
        setup.epoch.next_sequence(),
        MAX_SEQUENCE + 1,
        "a refused seal must not move the counter"
    );
}

#[test]
fn message_without_grant_reports_no_grant() {
    let mut setup = setup(1);
    let bytes = seal(&mut setup, &reading());
    let mut stranger = Receiver::new();
    let error = deliver_now(&mut stranger, &bytes).unwrap_err();
    assert!(
        matches!(
            error,
            EnvelopeError::NoGrant {
                session: 7,
                epoch: 1,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn inline_grants_travel_with_message() {
    let mut setup = setup(2);
    let grants = setup.grants.clone();
    let bytes = setup
        .epoch
        .seal(
            &reading(),
            &SealOptions {
                route: route(),
                timestamp_ms: NOW_MS,
                grants: &grants,
            },
        )
        .unwrap();
    let parsed = parse_message(&bytes).unwrap();
    assert_eq!(parsed.grants.len(), 2);
    let subscriber = &setup.subscribers[1];
    let keys = parse_grant(parsed.grants[1])
        .unwrap()
        .open(
            &subscriber.name,
            &subscriber.keypair,
            setup.publisher.public(),
        )
        .unwrap();
    let mut fresh = Receiver::new();
    fresh.install("device-virtual", 7, 1, keys).unwrap();
    assert!(deliver_now(&mut fresh, &bytes).is_ok());
}

#[test]
fn tampered_inline_grant_keeps_message_valid() {
    // Grants are authenticated on their own, so a broker that corrupts one
    // only delays a late subscriber; the message itself still opens, and the
    // corrupted grant does not.
    let mut setup = setup(1);
    let grants = setup.grants.clone();
    let mut bytes = setup
        .epoch
        .seal(
            &reading(),
            &SealOptions {
                route: route(),
                timestamp_ms: NOW_MS,
                grants: &grants,
            },
        )
        .unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let parsed = parse_message(&bytes).unwrap();
    let subscriber = &setup.subscribers[0];
    let error = parse_grant(parsed.grants[0])
        .unwrap()
        .open(
            &subscriber.name,
            &subscriber.keypair,
            setup.publisher.public(),
        )
        .unwrap_err();
    assert_eq!(auth_reason(&error), Some(AuthFailure::Grant));
    assert!(deliver_now(&mut setup.subscribers[0].receiver, &bytes).is_ok());
}

#[test]
fn stripped_inline_grants_are_detected() {
    // The grants flag is part of the authenticated header.
    let mut setup = setup(1);
    let grants = setup.grants.clone();
    let with_grants = setup
        .epoch
        .seal(
            &reading(),
            &SealOptions {
                route: route(),
                timestamp_ms: NOW_MS,
                grants: &grants,
            },
        )
        .unwrap();
    let grants_len = 2 + 2 + grants[0].len();
    let mut stripped = with_grants[..with_grants.len() - grants_len].to_vec();
    stripped[3] = 0;
    let error = deliver_now(&mut setup.subscribers[0].receiver, &stripped).unwrap_err();
    assert_eq!(auth_reason(&error), Some(AuthFailure::BodyTag));
}
