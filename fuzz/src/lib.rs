//! Fixed keys, routes, clock and CA shared by the sealbus fuzz targets and
//! the seed generator ([`seeds`]).
//!
//! The data channels and grant keys are the ones of the known-answer vectors
//! in `envelope/tests/vectors/v1.json`, so a fuzz target can open the
//! vectors and every input that libFuzzer derives from them without
//! breaking their authentication. The seed generator asserts that each vector with the outcome "ok" opens with these values,
//! so a drift between the two fails loudly instead of silently lowering
//! coverage. Every key here is public test material.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod seeds;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sealbus_envelope::{EpochKeys, Receiver, Route, SendingEpoch, StaticKeypair, SymmetricKey};
use sealbus_keyring::{CaPublicKey, CertificateAuthority, StaticSecret};

/// The receiver's clock in Unix milliseconds: one millisecond after the newest
/// timestamp of the known-answer vectors (1733300000999), so their messages
/// and their grant request are well inside the envelope's age and skew
/// bounds.
pub const NOW_MS: u64 = 1_733_300_001_000;

/// [`NOW_MS`] in Unix seconds, the unit of certificate validity.
pub const NOW_SECONDS: u64 = NOW_MS / 1000;

/// Name of the publisher in the grant vectors.
pub const PUBLISHER_NAME: &str = "device-virtual";

/// Byte repeated 32 times to make the publisher's X25519 secret key.
pub const PUBLISHER_SECRET_BYTE: u8 = 0x11;

/// Name of the subscriber in the grant vectors.
pub const SUBSCRIBER_NAME: &str = "core-data";

/// Byte repeated 32 times to make the subscriber's X25519 secret key.
pub const SUBSCRIBER_SECRET_BYTE: u8 = 0x22;

/// Seed of the ChaCha20 generator that draws the fixed CA signing key.
const CA_RNG_SEED: [u8; 32] = [0x5e; 32];

/// One sender's epoch, with the keys of the receiver in a fixed audience
/// slot.
#[derive(Debug, Clone, Copy)]
pub struct Channel {
    /// Publisher name.
    pub sender: &'static str,
    /// Publisher session.
    pub session: u64,
    /// Epoch within the session.
    pub epoch: u32,
    /// Byte repeated 32 times to make the audience key.
    pub audience_key_byte: u8,
    /// For each audience slot, the byte repeated 32 times to make its
    /// origin key.
    pub origin_key_bytes: &'static [u8],
    /// The receiver's slot in the audience.
    pub slot: u16,
    /// Bus context and topic the messages travel on.
    pub route: Route<'static>,
}

/// The data channels of the known-answer vectors: a reading to one
/// recipient over MQTT, a command request to three recipients over Redis,
/// received in the last slot, and an error response to two recipients over
/// MQTT in another epoch of the same session, received in the last slot.
pub const CHANNELS: [Channel; 3] = [
    Channel {
        sender: "device-virtual",
        session: 1_733_300_000_000_000,
        epoch: 1,
        audience_key_byte: 0xa0,
        origin_key_bytes: &[0xb0],
        slot: 0,
        route: Route {
            context: "mqtt",
            topic: "edgex/events/device/device-virtual/Random-Integer-Device/Random-Integer-Device/Int16",
        },
    },
    Channel {
        sender: "core-command",
        session: 42,
        epoch: 7,
        audience_key_byte: 0xa1,
        origin_key_bytes: &[0xb1, 0xb2, 0xb3],
        slot: 2,
        route: Route {
            context: "redis:plant-1",
            topic: "edgex/device/command/request/device-virtual/Random-Integer-Device",
        },
    },
    Channel {
        sender: "core-command",
        session: 42,
        epoch: 8,
        audience_key_byte: 0xa2,
        origin_key_bytes: &[0xb4, 0xb5],
        slot: 1,
        route: Route {
            context: "mqtt",
            topic: "edgex/response/core-command/9f8e7d6c-5b4a-4392-8190-a1b2c3d4e5f6",
        },
    },
];

impl Channel {
    fn audience_key(&self) -> SymmetricKey {
        SymmetricKey::from_bytes([self.audience_key_byte; 32])
    }

    fn origin_keys(&self) -> Vec<SymmetricKey> {
        self.origin_key_bytes
            .iter()
            .map(|&byte| SymmetricKey::from_bytes([byte; 32]))
            .collect()
    }

    /// Returns the epoch keys of the receiver in [`Channel::slot`].
    pub fn receiving_keys(&self) -> EpochKeys {
        let origin_keys = self.origin_keys();
        EpochKeys {
            audience_key: self.audience_key(),
            origin_key: origin_keys[usize::from(self.slot)].clone(),
            slot: self.slot,
            audience_size: origin_keys.len() as u16,
        }
    }

    /// Returns the publisher's sending state of this epoch, at sequence 0.
    pub fn sending_epoch(&self) -> SendingEpoch {
        SendingEpoch::new(
            self.sender,
            self.session,
            self.epoch,
            &self.audience_key(),
            self.origin_keys(),
        )
        .expect("the fixed channels have valid names and audience sizes")
    }
}

/// Returns a receiver with the grant of every channel in [`CHANNELS`]
/// installed.
pub fn receiver() -> Receiver {
    let mut receiver = Receiver::new();
    for channel in &CHANNELS {
        receiver
            .install(
                channel.sender,
                channel.session,
                channel.epoch,
                channel.receiving_keys(),
            )
            .expect("a new receiver accepts the fixed grants");
    }
    receiver
}

/// Returns the X25519 key pair whose secret key is `byte` repeated 32 times.
pub fn static_keypair(byte: u8) -> StaticKeypair {
    let secret = [byte; 32];
    let public = StaticSecret::from_bytes(secret).public_key();
    StaticKeypair::new(secret, public)
}

/// Returns the fixed test CA. Its signing key comes from a seeded
/// generator, so every call returns a CA with the same key and fresh
/// counters.
pub fn certificate_authority() -> CertificateAuthority {
    CertificateAuthority::in_memory(&mut ChaCha20Rng::from_seed(CA_RNG_SEED))
}

/// Returns the public key of [`certificate_authority`].
pub fn ca_public() -> CaPublicKey {
    *certificate_authority().public_key()
}
