//! Parses arbitrary bytes as a sealed data message and opens it with a
//! receiver that has the fixed grants of [`sealbus_fuzz::CHANNELS`]
//! installed.
//!
//! Checks:
//! - No input panics.
//! - A message that opens, sealed again under the same epoch keys, opens
//!   to the same result.
//! - Once committed, the same message is rejected as a replay, or as a
//!   duplicate when it is marked as a redelivery.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sealbus_envelope::{
    parse_grant, parse_message, EnvelopeError, OpenOptions, Opened, ParsedMessage, Receiver,
    SealOptions,
};
use sealbus_fuzz::{receiver, Channel, CHANNELS, NOW_MS};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = parse_message(data) else {
        return;
    };
    for grant in &message.grants {
        let _ = parse_grant(grant);
    }

    let mut receiver = receiver();
    for channel in &CHANNELS {
        let options = open_options(channel, false);
        let Ok(opened) = receiver.open(&message, &options) else {
            continue;
        };
        check_reseal(channel, &message, &opened, &receiver);
        check_replay(channel, &message, &opened, &mut receiver);
    }
});

fn open_options(channel: &Channel, redelivery: bool) -> OpenOptions<'static> {
    OpenOptions {
        route: channel.route,
        now_ms: NOW_MS,
        redelivery,
    }
}

/// Seals the opened envelope again at the same sequence number, timestamp
/// and route, with the same inline grants, and opens the result.
fn check_reseal(
    channel: &Channel,
    message: &ParsedMessage<'_>,
    opened: &Opened,
    receiver: &Receiver,
) {
    let mut epoch = channel.sending_epoch();
    epoch.set_next_sequence_for_testing_only(opened.sequence);
    let grants: Vec<Vec<u8>> = message.grants.iter().map(|grant| grant.to_vec()).collect();
    let options = SealOptions {
        route: channel.route,
        timestamp_ms: opened.timestamp_ms,
        grants: &grants,
    };

    let resealed = epoch
        .seal(&opened.envelope, &options)
        .expect("an opened envelope seals again");
    let reparsed = parse_message(&resealed).expect("a re-sealed message parses");
    assert_eq!(reparsed.grants, message.grants);
    let reopened = receiver
        .open(&reparsed, &open_options(channel, false))
        .expect("a re-sealed message opens");
    assert_eq!(&reopened, opened);
}

/// Commits the opened message, then opens it again, first as a fresh
/// delivery and then as a redelivery.
fn check_replay(
    channel: &Channel,
    message: &ParsedMessage<'_>,
    opened: &Opened,
    receiver: &mut Receiver,
) {
    receiver
        .commit(opened)
        .expect("the first commit of an opened message succeeds");

    let replayed = receiver.open(message, &open_options(channel, false));
    assert!(
        matches!(replayed, Err(EnvelopeError::Replay { .. })),
        "a committed message opened again gave {replayed:?}"
    );
    let redelivered = receiver.open(message, &open_options(channel, true));
    assert!(
        matches!(redelivered, Err(EnvelopeError::Duplicate { .. })),
        "a committed message redelivered gave {redelivered:?}"
    );
}
