//! The sealbus envelope: wire format, sealing, opening and replay protection
//! of bus messages. Pure code: no I/O, no async, no clock and no randomness
//! of its own (callers pass time and key material in).
//!
//! ```text
//!  publisher                                   subscriber
//!  ─────────                                   ──────────
//!  new epoch: random audience key,             grant::parse_grant
//!  one origin key per recipient                ParsedGrant::open  (Noise K, 2 DH)
//!  grant::seal_grant per recipient ──grant──▶  Receiver::install
//!
//!  SendingEpoch::seal ───────sealed message──▶ message::parse_message
//!   (ChaCha20-Poly1305 body,                   Receiver::open  (replay pre-check,
//!    origin tag per recipient)                   AEAD, origin tag)
//!                                              caller: authorization check
//!                                              Receiver::commit, deliver
//! ```
//!
//! Modules:
//! - [`edgex`]: the EdgeX `MessageEnvelope` (go-mod-messaging 3.x JSON) and
//!   its binary body encoding.
//! - [`message`]: data messages ([`SendingEpoch::seal`], [`parse_message`]).
//! - [`grant`]: epoch grants and grant requests (Noise K one-way handshakes).
//! - [`receiver`]: per-sender grant and replay state ([`Receiver`]).
//! - [`replay`]: the sliding replay window.
//! - [`limits`]: every size, count and time bound.
//!
//! `docs/wire-format.md` in the repository specifies every byte.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod aead;
mod codec;
pub mod edgex;
mod error;
pub mod grant;
mod keys;
pub mod limits;
pub mod message;
mod noise_dh;
mod origin;
pub mod receiver;
pub mod replay;

pub use edgex::MessageEnvelope;
pub use error::{AuthError, AuthFailure, EnvelopeError, Malformed};
pub use grant::{
    parse_grant, parse_grant_request, seal_grant, seal_grant_request, x25519_operation_count,
    GrantHeader, GrantRequestHeader, ParsedGrant, ParsedGrantRequest,
};
pub use keys::{EpochKeys, StaticKeypair, SymmetricKey};
pub use message::{parse_message, ParsedMessage, Route, SealOptions, SendingEpoch};
pub use receiver::{GrantOutcome, OpenOptions, Opened, Receiver};

use codec::Reader;
use limits::{MAGIC, MAX_CLOCK_SKEW_MS, MAX_MESSAGE_AGE_MS, MAX_NAME_LEN, WIRE_VERSION};

pub(crate) const KIND_DATA: u8 = 1;
pub(crate) const KIND_GRANT: u8 = 2;
pub(crate) const KIND_GRANT_REQUEST: u8 = 3;

/// The kind of a sealbus wire object, read from its first three bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A sealed data message.
    Data,
    /// An epoch grant.
    Grant,
    /// A grant request.
    GrantRequest,
}

/// Reads the kind of a wire object without parsing the rest.
///
/// # Errors
/// Returns [`Malformed::Plaintext`] for plaintext (such as a plain EdgeX
/// JSON envelope) and another [`Malformed`] for unknown bytes.
pub fn peek_kind(bytes: &[u8]) -> Result<Kind, Malformed> {
    let mut reader = Reader::new(bytes);
    read_magic_and_version(&mut reader)?;
    match reader.u8("kind")? {
        KIND_DATA => Ok(Kind::Data),
        KIND_GRANT => Ok(Kind::Grant),
        KIND_GRANT_REQUEST => Ok(Kind::GrantRequest),
        other => Err(Malformed::UnexpectedKind(other)),
    }
}

fn looks_like_plaintext(first: u8) -> bool {
    matches!(first, b'{' | b'[' | b'"' | b' ' | b'\t' | b'\r' | b'\n')
        || first.is_ascii_alphanumeric()
}

fn read_magic_and_version(reader: &mut Reader<'_>) -> Result<(), Malformed> {
    let magic = reader.u8("magic")?;
    if magic != MAGIC {
        return Err(if looks_like_plaintext(magic) {
            Malformed::Plaintext
        } else {
            Malformed::BadMagic(magic)
        });
    }
    let version = reader.u8("version")?;
    if version != WIRE_VERSION {
        return Err(Malformed::UnsupportedVersion(version));
    }
    Ok(())
}

/// Reads magic, version and kind, and checks the kind.
pub(crate) fn read_prefix(reader: &mut Reader<'_>, expected_kind: u8) -> Result<(), Malformed> {
    read_magic_and_version(reader)?;
    let kind = reader.u8("kind")?;
    if kind != expected_kind {
        return Err(Malformed::UnexpectedKind(kind));
    }
    Ok(())
}

/// Returns whether `name` is a valid service name: 1 to 64 bytes of
/// `[A-Za-z0-9._-]`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

pub(crate) fn check_name(name: &str) -> Result<(), EnvelopeError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(EnvelopeError::InvalidName(name.to_owned()))
    }
}

/// Checks a message or request timestamp against the receiver's clock.
///
/// # Errors
/// Returns [`EnvelopeError::FromFuture`] beyond [`MAX_CLOCK_SKEW_MS`] ahead
/// and [`EnvelopeError::Expired`] beyond [`MAX_MESSAGE_AGE_MS`] old.
pub fn check_timestamp(timestamp_ms: u64, now_ms: u64) -> Result<(), EnvelopeError> {
    if timestamp_ms > now_ms {
        let ahead_ms = timestamp_ms - now_ms;
        if ahead_ms > MAX_CLOCK_SKEW_MS {
            return Err(EnvelopeError::FromFuture {
                ahead_ms,
                max_ms: MAX_CLOCK_SKEW_MS,
            });
        }
    } else {
        let age_ms = now_ms - timestamp_ms;
        if age_ms > MAX_MESSAGE_AGE_MS {
            return Err(EnvelopeError::Expired {
                age_ms,
                max_ms: MAX_MESSAGE_AGE_MS,
            });
        }
    }
    Ok(())
}

/// Formats the first bytes of a public value as hex, for logs.
pub(crate) fn short_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
