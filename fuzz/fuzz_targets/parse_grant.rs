//! Parses arbitrary bytes as an epoch grant and as a grant request, and
//! opens what parses with the fixed keys of the grant vectors: the
//! subscriber's static key for grants, the publisher's for requests.
//!
//! Checks:
//! - No input panics.
//! - A grant that opens, sealed again, opens to the same keys, and its keys
//!   install in a new receiver.
//! - A request that verifies, sealed again, parses to the same header and
//!   verifies.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sealbus_envelope::{
    parse_grant, parse_grant_request, seal_grant, seal_grant_request, GrantHeader, GrantOutcome,
    GrantRequestHeader, ParsedGrant, ParsedGrantRequest, Receiver,
};
use sealbus_fuzz::{static_keypair, NOW_MS, PUBLISHER_SECRET_BYTE, SUBSCRIBER_SECRET_BYTE};

fuzz_target!(|data: &[u8]| {
    if let Ok(grant) = parse_grant(data) {
        check_grant(&grant);
    }
    if let Ok(request) = parse_grant_request(data) {
        check_request(&request);
    }
});

fn check_grant(grant: &ParsedGrant<'_>) {
    let publisher = static_keypair(PUBLISHER_SECRET_BYTE);
    let subscriber = static_keypair(SUBSCRIBER_SECRET_BYTE);
    // Opening as the recipient that the grant names lets every parsed grant
    // reach the Noise handshake instead of stopping at the name check.
    let Ok(keys) = grant.open(grant.recipient, &subscriber, publisher.public()) else {
        return;
    };

    let header = GrantHeader {
        sender: grant.sender,
        recipient: grant.recipient,
        session: grant.session,
        epoch: grant.epoch,
    };
    let resealed = seal_grant(&header, &keys, &publisher, subscriber.public(), None)
        .expect("the keys of an opened grant seal again");
    let reparsed = parse_grant(&resealed).expect("a re-sealed grant parses");
    assert_eq!(reparsed.sender, grant.sender);
    assert_eq!(reparsed.recipient, grant.recipient);
    assert_eq!(reparsed.session, grant.session);
    assert_eq!(reparsed.epoch, grant.epoch);
    let reopened = reparsed
        .open(grant.recipient, &subscriber, publisher.public())
        .expect("a re-sealed grant opens");
    assert_eq!(reopened, keys);

    let mut receiver = Receiver::new();
    let first = receiver.install(grant.sender, grant.session, grant.epoch, keys.clone());
    assert_eq!(first, Ok(GrantOutcome::Installed));
    let second = receiver.install(grant.sender, grant.session, grant.epoch, keys);
    assert_eq!(second, Ok(GrantOutcome::AlreadyInstalled));
}

fn check_request(request: &ParsedGrantRequest<'_>) {
    let publisher = static_keypair(PUBLISHER_SECRET_BYTE);
    let requester = static_keypair(SUBSCRIBER_SECRET_BYTE);
    if request
        .verify(request.publisher, &publisher, requester.public(), NOW_MS)
        .is_err()
    {
        return;
    }

    let header = GrantRequestHeader {
        requester: request.requester,
        publisher: request.publisher,
        session: request.session,
        epoch: request.epoch,
        timestamp_ms: request.timestamp_ms,
    };
    let resealed = seal_grant_request(&header, &requester, publisher.public(), None)
        .expect("the header of a verified request seals again");
    let reparsed = parse_grant_request(&resealed).expect("a re-sealed request parses");
    assert_eq!(reparsed.requester, request.requester);
    assert_eq!(reparsed.publisher, request.publisher);
    assert_eq!(reparsed.session, request.session);
    assert_eq!(reparsed.epoch, request.epoch);
    assert_eq!(reparsed.timestamp_ms, request.timestamp_ms);
    reparsed
        .verify(request.publisher, &publisher, requester.public(), NOW_MS)
        .expect("a re-sealed request verifies");
}
