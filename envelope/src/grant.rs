//! Epoch grants and grant requests: one-way Noise handshakes between two
//! services that already know each other's static keys.
//!
//! A grant carries an epoch's audience key, the recipient's origin key and
//! its slot from a publisher to one subscriber. It is the initiator message
//! of `Noise_K_25519_ChaChaPoly_BLAKE2s`, whose prologue is the grant header,
//! so the protocol version, both names, the session and the epoch are
//! authenticated, and only the named recipient can open it.
//!
//! A grant request is the same one-way handshake in the other direction,
//! from a subscriber to a publisher, naming the session and epoch whose
//! grant the subscriber is missing.

use std::sync::atomic::{AtomicU64, Ordering};

use snow::params::NoiseParams;
use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::error::{AuthError, AuthFailure, EnvelopeError, Malformed};
use crate::keys::{EpochKeys, StaticKeypair, SymmetricKey};
use crate::limits::{AEAD_TAG_LEN, KEY_LEN, MAGIC, MAX_RECIPIENTS, WIRE_VERSION};
use crate::{check_name, check_timestamp, KIND_GRANT, KIND_GRANT_REQUEST};

/// Noise protocol name of grants and grant requests.
pub const GRANT_NOISE_PATTERN: &str = "Noise_K_25519_ChaChaPoly_BLAKE2s";

/// Prologue prefix of grants; the grant header follows it.
const GRANT_PROLOGUE: &[u8] = b"sealbus-grant-v1";

/// Prologue prefix of grant requests; the request header follows it.
const REQUEST_PROLOGUE: &[u8] = b"sealbus-grant-request-v1";

/// Version byte of the grant payload inside the Noise message.
const GRANT_PAYLOAD_VERSION: u8 = 1;

/// Grant payload: version, audience key, origin key, slot, audience size.
const GRANT_PAYLOAD_LEN: usize = 1 + KEY_LEN + KEY_LEN + 2 + 2;

/// Noise message of a grant: ephemeral key, encrypted payload and its tag.
pub const GRANT_NOISE_LEN: usize = KEY_LEN + GRANT_PAYLOAD_LEN + AEAD_TAG_LEN;

/// Version byte that is the whole payload of a grant request.
const REQUEST_PAYLOAD_VERSION: u8 = 1;

/// Noise message of a grant request: ephemeral key, one payload byte, tag.
pub const REQUEST_NOISE_LEN: usize = KEY_LEN + 1 + AEAD_TAG_LEN;

/// X25519 operations performed by the grant handshakes of this process.
static X25519_OPERATIONS: AtomicU64 = AtomicU64::new(0);

/// X25519 operations of one `Noise_K` initiator message: generating the
/// ephemeral key, `es` and `ss`.
const INITIATOR_X25519_OPERATIONS: u64 = 3;

/// X25519 operations of reading one `Noise_K` initiator message: `es`, `ss`.
const RESPONDER_X25519_OPERATIONS: u64 = 2;

/// Returns how many X25519 operations this process has performed through
/// grants and grant requests. Data messages perform none, so this count
/// stays still in steady state; tests and benchmarks read it to prove that.
pub fn x25519_operation_count() -> u64 {
    X25519_OPERATIONS.load(Ordering::Relaxed)
}

fn noise_params() -> NoiseParams {
    // The pattern string is a constant that snow parses; a failure would be
    // a build defect, caught by every grant test.
    GRANT_NOISE_PATTERN
        .parse()
        .expect("valid Noise pattern name")
}

/// A grant whose header has been parsed but whose Noise message has not been
/// opened yet. The header is enough to route it and to find the sender's
/// certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedGrant<'a> {
    /// Publisher that issued the grant.
    pub sender: &'a str,
    /// Subscriber the grant is for.
    pub recipient: &'a str,
    /// Publisher session.
    pub session: u64,
    /// Epoch within the session.
    pub epoch: u32,
    header: &'a [u8],
    noise: &'a [u8],
}

/// Parameters of a grant to seal.
#[derive(Debug, Clone, Copy)]
pub struct GrantHeader<'a> {
    /// Publisher name.
    pub sender: &'a str,
    /// Recipient name.
    pub recipient: &'a str,
    /// Publisher session.
    pub session: u64,
    /// Epoch within the session.
    pub epoch: u32,
}

fn encode_grant_header(header: &GrantHeader<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        4 + 2 + header.sender.len() + header.recipient.len() + 12 + 2 + GRANT_NOISE_LEN,
    );
    out.extend_from_slice(&[MAGIC, WIRE_VERSION, KIND_GRANT, 0]);
    out.put_name(header.sender);
    out.put_name(header.recipient);
    out.put_u64(header.session);
    out.put_u32(header.epoch);
    out
}

fn prologue(prefix: &[u8], header: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + header.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(header);
    out
}

/// Seals a grant from `sender` to one recipient.
///
/// `ephemeral` must be `None` outside tests; a fixed ephemeral key exists
/// only to reproduce the known-answer vectors.
///
/// # Errors
/// Returns [`EnvelopeError::InvalidName`] for a bad name,
/// [`EnvelopeError::AudienceSize`] for a slot outside the audience, and
/// [`EnvelopeError::InvalidKey`] if Noise rejects a key.
pub fn seal_grant(
    header: &GrantHeader<'_>,
    keys: &EpochKeys,
    sender_static: &StaticKeypair,
    recipient_public: &[u8; KEY_LEN],
    ephemeral: Option<&[u8; KEY_LEN]>,
) -> Result<Vec<u8>, EnvelopeError> {
    check_name(header.sender)?;
    check_name(header.recipient)?;
    let size = usize::from(keys.audience_size);
    if size == 0 || size > MAX_RECIPIENTS || keys.slot >= keys.audience_size {
        return Err(EnvelopeError::AudienceSize {
            count: size,
            max: MAX_RECIPIENTS,
        });
    }

    let mut out = encode_grant_header(header);
    let prologue = prologue(GRANT_PROLOGUE, &out);

    let mut payload = Zeroizing::new([0u8; GRANT_PAYLOAD_LEN]);
    payload[0] = GRANT_PAYLOAD_VERSION;
    payload[1..33].copy_from_slice(keys.audience_key.expose_secret());
    payload[33..65].copy_from_slice(keys.origin_key.expose_secret());
    payload[65..67].copy_from_slice(&keys.slot.to_be_bytes());
    payload[67..69].copy_from_slice(&keys.audience_size.to_be_bytes());

    let noise = write_one_way(
        &prologue,
        sender_static,
        recipient_public,
        ephemeral,
        payload.as_slice(),
        GRANT_NOISE_LEN,
    )?;
    out.put_u16(GRANT_NOISE_LEN as u16);
    out.extend_from_slice(&noise);
    Ok(out)
}

fn write_one_way(
    prologue: &[u8],
    local: &StaticKeypair,
    remote_public: &[u8; KEY_LEN],
    ephemeral: Option<&[u8; KEY_LEN]>,
    payload: &[u8],
    message_len: usize,
) -> Result<Vec<u8>, EnvelopeError> {
    let mut builder = snow::Builder::new(noise_params())
        .local_private_key(local.secret())
        .and_then(|builder| builder.remote_public_key(remote_public))
        .and_then(|builder| builder.prologue(prologue))
        .map_err(|_| EnvelopeError::InvalidKey("X25519"))?;
    if let Some(ephemeral) = ephemeral {
        builder = builder.fixed_ephemeral_key_for_testing_only(ephemeral);
    }
    let mut handshake = builder
        .build_initiator()
        .map_err(|_| EnvelopeError::InvalidKey("X25519"))?;
    X25519_OPERATIONS.fetch_add(INITIATOR_X25519_OPERATIONS, Ordering::Relaxed);
    let mut message = vec![0u8; message_len];
    let written = handshake
        .write_message(payload, &mut message)
        .map_err(|_| EnvelopeError::InvalidKey("X25519"))?;
    debug_assert_eq!(written, message_len);
    message.truncate(written);
    Ok(message)
}

fn read_one_way(
    prologue: &[u8],
    local: &StaticKeypair,
    remote_public: &[u8; KEY_LEN],
    message: &[u8],
    payload: &mut [u8],
    failure: AuthFailure,
) -> Result<usize, EnvelopeError> {
    let mut handshake = snow::Builder::new(noise_params())
        .local_private_key(local.secret())
        .and_then(|builder| builder.remote_public_key(remote_public))
        .and_then(|builder| builder.prologue(prologue))
        .and_then(|builder| builder.build_responder())
        .map_err(|_| EnvelopeError::InvalidKey("X25519"))?;
    X25519_OPERATIONS.fetch_add(RESPONDER_X25519_OPERATIONS, Ordering::Relaxed);
    handshake
        .read_message(message, payload)
        .map_err(|_| EnvelopeError::Authentication(AuthError::new(failure)))
}

/// Parses a grant's header without any cryptography.
///
/// # Errors
/// Returns [`Malformed`] for any input that is not a well-formed grant.
pub fn parse_grant(bytes: &[u8]) -> Result<ParsedGrant<'_>, Malformed> {
    let mut reader = Reader::new(bytes);
    crate::read_prefix(&mut reader, KIND_GRANT)?;
    let flags = reader.u8("grant flags")?;
    if flags != 0 {
        return Err(Malformed::ReservedFlags(flags));
    }
    let sender = reader.name("grant sender")?;
    let recipient = reader.name("grant recipient")?;
    let session = reader.u64("grant session")?;
    let epoch = reader.u32("grant epoch")?;
    let header_end = reader.position();
    let noise_len = usize::from(reader.u16("grant noise length")?);
    if noise_len != GRANT_NOISE_LEN {
        return Err(Malformed::OutOfRange("grant noise length"));
    }
    let noise = reader.take(noise_len, "grant noise message")?;
    reader.finish("grant")?;
    Ok(ParsedGrant {
        sender,
        recipient,
        session,
        epoch,
        header: &bytes[..header_end],
        noise,
    })
}

impl ParsedGrant<'_> {
    /// Opens the grant with the recipient's static key, given the sender's
    /// certified public key.
    ///
    /// # Errors
    /// Returns [`EnvelopeError::WrongRecipient`] when the grant names another
    /// recipient, an opaque [`EnvelopeError::Authentication`] when the Noise
    /// message does not open, and [`Malformed`] for a bad payload.
    pub fn open(
        &self,
        recipient_name: &str,
        recipient_static: &StaticKeypair,
        sender_public: &[u8; KEY_LEN],
    ) -> Result<EpochKeys, EnvelopeError> {
        if self.recipient != recipient_name {
            return Err(EnvelopeError::WrongRecipient {
                recipient: self.recipient.to_owned(),
            });
        }
        let prologue = prologue(GRANT_PROLOGUE, self.header);
        let mut payload = Zeroizing::new([0u8; GRANT_NOISE_LEN]);
        let len = read_one_way(
            &prologue,
            recipient_static,
            sender_public,
            self.noise,
            payload.as_mut_slice(),
            AuthFailure::Grant,
        )?;
        if len != GRANT_PAYLOAD_LEN || payload[0] != GRANT_PAYLOAD_VERSION {
            return Err(Malformed::OutOfRange("grant payload").into());
        }

        let mut audience_key = [0u8; KEY_LEN];
        audience_key.copy_from_slice(&payload[1..33]);
        let mut origin_key = [0u8; KEY_LEN];
        origin_key.copy_from_slice(&payload[33..65]);
        let slot = u16::from_be_bytes([payload[65], payload[66]]);
        let audience_size = u16::from_be_bytes([payload[67], payload[68]]);
        let keys = EpochKeys {
            audience_key: SymmetricKey::from_bytes(audience_key),
            origin_key: SymmetricKey::from_bytes(origin_key),
            slot,
            audience_size,
        };
        audience_key.fill(0);
        origin_key.fill(0);
        if audience_size == 0
            || usize::from(audience_size) > MAX_RECIPIENTS
            || slot >= audience_size
        {
            return Err(Malformed::OutOfRange("grant slot").into());
        }
        Ok(keys)
    }
}

/// A grant request whose header has been parsed but not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedGrantRequest<'a> {
    /// Subscriber asking for the grant.
    pub requester: &'a str,
    /// Publisher asked.
    pub publisher: &'a str,
    /// Publisher session of the missing grant.
    pub session: u64,
    /// Epoch of the missing grant.
    pub epoch: u32,
    /// Unix time in milliseconds at which the request was made.
    pub timestamp_ms: u64,
    header: &'a [u8],
    noise: &'a [u8],
}

/// Parameters of a grant request to seal.
#[derive(Debug, Clone, Copy)]
pub struct GrantRequestHeader<'a> {
    /// Subscriber asking.
    pub requester: &'a str,
    /// Publisher asked.
    pub publisher: &'a str,
    /// Publisher session of the missing grant.
    pub session: u64,
    /// Epoch of the missing grant.
    pub epoch: u32,
    /// Unix time in milliseconds now.
    pub timestamp_ms: u64,
}

/// Seals a grant request from a subscriber to a publisher.
///
/// # Errors
/// Returns [`EnvelopeError::InvalidName`] for a bad name and
/// [`EnvelopeError::InvalidKey`] if Noise rejects a key.
pub fn seal_grant_request(
    header: &GrantRequestHeader<'_>,
    requester_static: &StaticKeypair,
    publisher_public: &[u8; KEY_LEN],
    ephemeral: Option<&[u8; KEY_LEN]>,
) -> Result<Vec<u8>, EnvelopeError> {
    check_name(header.requester)?;
    check_name(header.publisher)?;
    let mut out = Vec::with_capacity(64 + REQUEST_NOISE_LEN);
    out.extend_from_slice(&[MAGIC, WIRE_VERSION, KIND_GRANT_REQUEST, 0]);
    out.put_name(header.requester);
    out.put_name(header.publisher);
    out.put_u64(header.session);
    out.put_u32(header.epoch);
    out.put_u64(header.timestamp_ms);
    let prologue = prologue(REQUEST_PROLOGUE, &out);
    let noise = write_one_way(
        &prologue,
        requester_static,
        publisher_public,
        ephemeral,
        &[REQUEST_PAYLOAD_VERSION],
        REQUEST_NOISE_LEN,
    )?;
    out.put_u16(REQUEST_NOISE_LEN as u16);
    out.extend_from_slice(&noise);
    Ok(out)
}

/// Parses a grant request's header without any cryptography.
///
/// # Errors
/// Returns [`Malformed`] for any input that is not a well-formed request.
pub fn parse_grant_request(bytes: &[u8]) -> Result<ParsedGrantRequest<'_>, Malformed> {
    let mut reader = Reader::new(bytes);
    crate::read_prefix(&mut reader, KIND_GRANT_REQUEST)?;
    let flags = reader.u8("grant request flags")?;
    if flags != 0 {
        return Err(Malformed::ReservedFlags(flags));
    }
    let requester = reader.name("grant request requester")?;
    let publisher = reader.name("grant request publisher")?;
    let session = reader.u64("grant request session")?;
    let epoch = reader.u32("grant request epoch")?;
    let timestamp_ms = reader.u64("grant request timestamp")?;
    let header_end = reader.position();
    let noise_len = usize::from(reader.u16("grant request noise length")?);
    if noise_len != REQUEST_NOISE_LEN {
        return Err(Malformed::OutOfRange("grant request noise length"));
    }
    let noise = reader.take(noise_len, "grant request noise message")?;
    reader.finish("grant request")?;
    Ok(ParsedGrantRequest {
        requester,
        publisher,
        session,
        epoch,
        timestamp_ms,
        header: &bytes[..header_end],
        noise,
    })
}

impl ParsedGrantRequest<'_> {
    /// Authenticates the request with the publisher's static key, given the
    /// requester's certified public key, and checks its timestamp.
    ///
    /// # Errors
    /// Returns [`EnvelopeError::WrongRecipient`] when it names another
    /// publisher, [`EnvelopeError::Expired`] or [`EnvelopeError::FromFuture`]
    /// for a stale timestamp, and an opaque
    /// [`EnvelopeError::Authentication`] when it does not open.
    pub fn verify(
        &self,
        publisher_name: &str,
        publisher_static: &StaticKeypair,
        requester_public: &[u8; KEY_LEN],
        now_ms: u64,
    ) -> Result<(), EnvelopeError> {
        if self.publisher != publisher_name {
            return Err(EnvelopeError::WrongRecipient {
                recipient: self.publisher.to_owned(),
            });
        }
        check_timestamp(self.timestamp_ms, now_ms)?;
        let prologue = prologue(REQUEST_PROLOGUE, self.header);
        let mut payload = [0u8; REQUEST_NOISE_LEN];
        let len = read_one_way(
            &prologue,
            publisher_static,
            requester_public,
            self.noise,
            &mut payload,
            AuthFailure::GrantRequest,
        )?;
        if len != 1 || payload[0] != REQUEST_PAYLOAD_VERSION {
            return Err(Malformed::OutOfRange("grant request payload").into());
        }
        Ok(())
    }
}
