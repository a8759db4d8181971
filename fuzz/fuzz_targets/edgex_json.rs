//! Parses arbitrary bytes as an EdgeX `MessageEnvelope` in the
//! go-mod-messaging 3.x JSON form.
//!
//! Checks:
//! - No input panics.
//! - A parsed envelope's own JSON parses to an equal envelope.
//! - An envelope within the body limits survives the binary body encoding.
//!   Sealed on a fixed channel and opened again, it comes back equal, with
//!   `receivedTopic` set to the channel's topic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sealbus_envelope::{parse_message, EnvelopeError, MessageEnvelope, OpenOptions, SealOptions};
use sealbus_fuzz::{receiver, CHANNELS, NOW_MS};

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = MessageEnvelope::from_json(data) else {
        return;
    };

    let json = envelope.to_json();
    let reparsed = MessageEnvelope::from_json(&json).expect("an envelope's own JSON parses");
    assert_eq!(reparsed, envelope);

    check_body_round_trip(&envelope);
});

fn check_body_round_trip(envelope: &MessageEnvelope) {
    let channel = &CHANNELS[0];
    let mut epoch = channel.sending_epoch();
    let seal_options = SealOptions {
        route: channel.route,
        timestamp_ms: NOW_MS,
        grants: &[],
    };
    let sealed = match epoch.seal(envelope, &seal_options) {
        Ok(sealed) => sealed,
        // A field over its body limit is a documented rejection.
        Err(EnvelopeError::FieldTooLong { .. }) => return,
        Err(other) => panic!("sealing a parsed envelope failed: {other}"),
    };

    let message = parse_message(&sealed).expect("a sealed envelope parses");
    let open_options = OpenOptions {
        route: channel.route,
        now_ms: NOW_MS,
        redelivery: false,
    };
    let opened = receiver()
        .open(&message, &open_options)
        .expect("a sealed envelope opens");
    let expected = MessageEnvelope {
        received_topic: channel.route.topic.to_owned(),
        ..envelope.clone()
    };
    assert_eq!(opened.envelope, expected);
}
