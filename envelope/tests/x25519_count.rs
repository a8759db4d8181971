//! The X25519 operation counter counts exactly the scalar multiplications
//! of a `Noise_K` one-way handshake. The counter is process-wide, so this
//! file contains a single test, and no other test in this binary can change
//! the count while it runs.

mod common;

use common::{key, keypair, NOW_MS};
use sealbus_envelope::{
    parse_grant, parse_grant_request, seal_grant, seal_grant_request, x25519_operation_count,
    EpochKeys, GrantHeader, GrantRequestHeader,
};

/// Generating the ephemeral key, then `es` and `ss`. The sender's static
/// public key is reused, not derived.
const SEAL_OPERATIONS: u64 = 3;

/// `es` and `ss`. The recipient's static public key is reused, not derived.
const OPEN_OPERATIONS: u64 = 2;

/// Runs `step` and returns how much it moved the counter.
fn operations_of<T>(step: impl FnOnce() -> T) -> (T, u64) {
    let before = x25519_operation_count();
    let output = step();
    (output, x25519_operation_count() - before)
}

#[test]
fn handshakes_count_each_scalar_multiplication() {
    let publisher = keypair(1);
    let subscriber = keypair(2);
    let grant_header = GrantHeader {
        sender: "device-virtual",
        recipient: "core-data",
        session: 42,
        epoch: 7,
    };
    let keys = EpochKeys {
        audience_key: key(100),
        origin_key: key(110),
        slot: 0,
        audience_size: 1,
    };

    let (grant, sealed) = operations_of(|| {
        seal_grant(&grant_header, &keys, &publisher, subscriber.public(), None).unwrap()
    });
    assert_eq!(sealed, SEAL_OPERATIONS, "sealing a grant");

    let (opened, opening) = operations_of(|| {
        parse_grant(&grant)
            .unwrap()
            .open("core-data", &subscriber, publisher.public())
            .unwrap()
    });
    assert_eq!(opening, OPEN_OPERATIONS, "opening a grant");
    assert_eq!(opened, keys, "opened grant keys");

    // A fixed ephemeral key is set, not generated, so deriving its public
    // key takes the place of the generation and the total stays the same.
    let ephemeral = [0x5E; 32];
    let (_, sealed_fixed) = operations_of(|| {
        seal_grant(
            &grant_header,
            &keys,
            &publisher,
            subscriber.public(),
            Some(&ephemeral),
        )
        .unwrap()
    });
    assert_eq!(
        sealed_fixed, SEAL_OPERATIONS,
        "sealing with a fixed ephemeral key"
    );

    let request_header = GrantRequestHeader {
        requester: "core-data",
        publisher: "device-virtual",
        session: 42,
        epoch: 7,
        timestamp_ms: NOW_MS,
    };
    let (request, sealed_request) = operations_of(|| {
        seal_grant_request(&request_header, &subscriber, publisher.public(), None).unwrap()
    });
    assert_eq!(sealed_request, SEAL_OPERATIONS, "sealing a grant request");

    let (verified, verifying) = operations_of(|| {
        parse_grant_request(&request).unwrap().verify(
            "device-virtual",
            &publisher,
            subscriber.public(),
            NOW_MS,
        )
    });
    assert!(verified.is_ok(), "{verified:?}");
    assert_eq!(verifying, OPEN_OPERATIONS, "verifying a grant request");

    // A grant that fails authentication still did both DHs before failing.
    let mut forged = grant.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let (rejected, rejecting) = operations_of(|| {
        parse_grant(&forged)
            .unwrap()
            .open("core-data", &subscriber, publisher.public())
    });
    assert!(rejected.is_err(), "a flipped tag byte opened");
    assert_eq!(rejecting, OPEN_OPERATIONS, "rejecting a forged grant");
}
