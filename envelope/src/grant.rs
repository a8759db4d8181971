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

use snow::params::NoiseParams;
use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::error::{AuthError, AuthFailure, EnvelopeError, Malformed};
use crate::keys::{EpochKeys, StaticKeypair, SymmetricKey};
use crate::limits::{AEAD_TAG_LEN, KEY_LEN, MAGIC, MAX_RECIPIENTS, WIRE_VERSION};
use crate::noise_dh::{self, StaticKeyResolver};
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

/// Returns how many X25519 scalar multiplications the grant and grant
/// request handshakes of this process have done. Each ephemeral key drawn,
/// each public key derived from a private key and each DH counts one. The
/// local static key's public half is reused, not derived, so sealing a grant
/// or request costs 3 (ephemeral key, `es`, `ss`) and opening one costs 2
/// (`es`, `ss`). A fixed test ephemeral key counts as one derivation, so
/// sealing with one also costs 3. Data messages do none, so the count stays
/// still in steady state. Tests and benchmarks read it to show that.
pub fn x25519_operation_count() -> u64 {
    noise_dh::x25519_operation_count()
}

fn noise_params() -> NoiseParams {
    // The pattern string is a constant that snow parses; a failure would be
    // a build defect, caught by every grant test.
    GRANT_NOISE_PATTERN
        .parse()
        .expect("valid Noise pattern name")
}

/// Starts a handshake builder with `local` as the static key. The resolver
/// and the private key come from the same pair, so snow takes the public key
/// from `local` instead of deriving it.
fn noise_builder(local: &StaticKeypair) -> Result<snow::Builder<'_>, snow::Error> {
    let resolver = Box::new(StaticKeyResolver::new(local.clone()));
    snow::Builder::with_resolver(noise_params(), resolver).local_private_key(local.secret())
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
    let mut builder = noise_builder(local)
        .and_then(|builder| builder.remote_public_key(remote_public))
        .and_then(|builder| builder.prologue(prologue))
        .map_err(|_| EnvelopeError::InvalidKey("X25519"))?;
    if let Some(ephemeral) = ephemeral {
        builder = builder.fixed_ephemeral_key_for_testing_only(ephemeral);
    }
    let mut handshake = builder
        .build_initiator()
        .map_err(|_| EnvelopeError::InvalidKey("X25519"))?;
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
    let mut handshake = noise_builder(local)
        .and_then(|builder| builder.remote_public_key(remote_public))
        .and_then(|builder| builder.prologue(prologue))
        .and_then(|builder| builder.build_responder())
        .map_err(|_| EnvelopeError::InvalidKey("X25519"))?;
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

#[cfg(test)]
mod tests {
    //! Interoperability of the grant handshakes with snow's default resolver,
    //! and the handling of static key pairs whose halves do not match.

    use super::*;

    const NOW_MS: u64 = 1_780_000_000_000;

    const GRANT_HEADER: GrantHeader<'static> = GrantHeader {
        sender: "device-virtual",
        recipient: "core-data",
        session: 42,
        epoch: 7,
    };

    const REQUEST_HEADER: GrantRequestHeader<'static> = GrantRequestHeader {
        requester: "core-data",
        publisher: "device-virtual",
        session: 42,
        epoch: 7,
        timestamp_ms: NOW_MS,
    };

    fn public_of(secret: [u8; KEY_LEN]) -> [u8; KEY_LEN] {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes()
    }

    fn keypair(seed: u8) -> StaticKeypair {
        StaticKeypair::new([seed; KEY_LEN], public_of([seed; KEY_LEN]))
    }

    fn epoch_keys() -> EpochKeys {
        EpochKeys {
            audience_key: SymmetricKey::from_bytes([0xA1; KEY_LEN]),
            origin_key: SymmetricKey::from_bytes([0xB2; KEY_LEN]),
            slot: 2,
            audience_size: 3,
        }
    }

    /// Starts a handshake builder with snow's own default resolver, which
    /// derives the public key of `local_secret` itself.
    fn default_builder<'a>(
        local_secret: &'a [u8; KEY_LEN],
        remote_public: &'a [u8; KEY_LEN],
        prologue: &'a [u8],
    ) -> snow::Builder<'a> {
        snow::Builder::new(noise_params())
            .local_private_key(local_secret)
            .unwrap()
            .remote_public_key(remote_public)
            .unwrap()
            .prologue(prologue)
            .unwrap()
    }

    /// Writes a one-way message with snow's default resolver.
    fn default_write(
        prologue: &[u8],
        local: &StaticKeypair,
        remote_public: &[u8; KEY_LEN],
        ephemeral: Option<&[u8; KEY_LEN]>,
        payload: &[u8],
        message_len: usize,
    ) -> Vec<u8> {
        let mut builder = default_builder(local.secret(), remote_public, prologue);
        if let Some(ephemeral) = ephemeral {
            builder = builder.fixed_ephemeral_key_for_testing_only(ephemeral);
        }
        let mut handshake = builder.build_initiator().unwrap();
        let mut message = vec![0u8; message_len];
        let written = handshake.write_message(payload, &mut message).unwrap();
        assert_eq!(written, message_len, "default resolver message length");
        message
    }

    /// Reads a one-way message with snow's default resolver.
    fn default_read(
        prologue: &[u8],
        local: &StaticKeypair,
        remote_public: &[u8; KEY_LEN],
        message: &[u8],
    ) -> Result<Vec<u8>, snow::Error> {
        let mut handshake =
            default_builder(local.secret(), remote_public, prologue).build_responder()?;
        let mut payload = vec![0u8; message.len()];
        let len = handshake.read_message(message, &mut payload)?;
        payload.truncate(len);
        Ok(payload)
    }

    fn request_header_bytes(bytes: &[u8]) -> &[u8] {
        parse_grant_request(bytes).unwrap().header
    }

    #[test]
    fn grant_opens_with_default_resolver() {
        let sender = keypair(1);
        let recipient = keypair(2);
        let keys = epoch_keys();

        let grant = seal_grant(&GRANT_HEADER, &keys, &sender, recipient.public(), None).unwrap();
        let parsed = parse_grant(&grant).unwrap();
        let payload = default_read(
            &prologue(GRANT_PROLOGUE, parsed.header),
            &recipient,
            sender.public(),
            parsed.noise,
        )
        .unwrap();

        assert_eq!(payload.len(), GRANT_PAYLOAD_LEN);
        assert_eq!(payload[0], GRANT_PAYLOAD_VERSION);
        assert_eq!(&payload[1..33], keys.audience_key.expose_secret());
        assert_eq!(&payload[33..65], keys.origin_key.expose_secret());
        assert_eq!(&payload[65..69], &[0, 2, 0, 3]);
    }

    #[test]
    fn default_resolver_grant_opens() {
        let sender = keypair(1);
        let recipient = keypair(2);
        let keys = epoch_keys();
        let mut payload = [0u8; GRANT_PAYLOAD_LEN];
        payload[0] = GRANT_PAYLOAD_VERSION;
        payload[1..33].copy_from_slice(keys.audience_key.expose_secret());
        payload[33..65].copy_from_slice(keys.origin_key.expose_secret());
        payload[65..69].copy_from_slice(&[0, 2, 0, 3]);

        let mut grant = encode_grant_header(&GRANT_HEADER);
        let noise = default_write(
            &prologue(GRANT_PROLOGUE, &grant),
            &sender,
            recipient.public(),
            None,
            &payload,
            GRANT_NOISE_LEN,
        );
        grant.put_u16(GRANT_NOISE_LEN as u16);
        grant.extend_from_slice(&noise);
        let opened = parse_grant(&grant)
            .unwrap()
            .open("core-data", &recipient, sender.public())
            .unwrap();

        assert_eq!(opened, keys);
    }

    #[test]
    fn grant_bytes_match_default_resolver() {
        // With the same fixed ephemeral key, both resolvers must write the
        // same bytes, so every DH and the hashed public keys agree.
        let sender = keypair(1);
        let recipient = keypair(2);
        let ephemeral = [0x5E; KEY_LEN];
        let keys = epoch_keys();

        let grant = seal_grant(
            &GRANT_HEADER,
            &keys,
            &sender,
            recipient.public(),
            Some(&ephemeral),
        )
        .unwrap();
        let parsed = parse_grant(&grant).unwrap();
        let payload = default_read(
            &prologue(GRANT_PROLOGUE, parsed.header),
            &recipient,
            sender.public(),
            parsed.noise,
        )
        .unwrap();
        let expected = default_write(
            &prologue(GRANT_PROLOGUE, parsed.header),
            &sender,
            recipient.public(),
            Some(&ephemeral),
            &payload,
            GRANT_NOISE_LEN,
        );

        assert_eq!(parsed.noise, expected.as_slice());
    }

    #[test]
    fn request_verifies_with_default_resolver() {
        let requester = keypair(2);
        let publisher = keypair(1);

        let request =
            seal_grant_request(&REQUEST_HEADER, &requester, publisher.public(), None).unwrap();
        let parsed = parse_grant_request(&request).unwrap();
        let payload = default_read(
            &prologue(REQUEST_PROLOGUE, parsed.header),
            &publisher,
            requester.public(),
            parsed.noise,
        )
        .unwrap();

        assert_eq!(payload, [REQUEST_PAYLOAD_VERSION]);
    }

    #[test]
    fn default_resolver_request_verifies() {
        let requester = keypair(2);
        let publisher = keypair(1);
        // Seal once only to get the header bytes, then replace the Noise
        // message with one written by snow's default resolver.
        let sealed =
            seal_grant_request(&REQUEST_HEADER, &requester, publisher.public(), None).unwrap();
        let mut request = request_header_bytes(&sealed).to_vec();

        let noise = default_write(
            &prologue(REQUEST_PROLOGUE, &request),
            &requester,
            publisher.public(),
            None,
            &[REQUEST_PAYLOAD_VERSION],
            REQUEST_NOISE_LEN,
        );
        request.put_u16(REQUEST_NOISE_LEN as u16);
        request.extend_from_slice(&noise);
        assert_ne!(
            request, sealed,
            "the default resolver drew the same ephemeral key"
        );
        let result = parse_grant_request(&request).unwrap().verify(
            "device-virtual",
            &publisher,
            requester.public(),
            NOW_MS,
        );

        assert!(result.is_ok(), "{result:?}");
    }

    /// Builds a key pair whose public half belongs to another secret, and
    /// returns it with its true and its claimed public key.
    fn mismatched_keypair(seed: u8) -> (StaticKeypair, [u8; KEY_LEN], [u8; KEY_LEN]) {
        let true_public = public_of([seed; KEY_LEN]);
        let claimed_public = public_of([0xEE; KEY_LEN]);
        let pair = StaticKeypair::new([seed; KEY_LEN], claimed_public);
        (pair, true_public, claimed_public)
    }

    fn is_authentication_error<T: std::fmt::Debug>(result: &Result<T, EnvelopeError>) -> bool {
        matches!(result, Err(EnvelopeError::Authentication(_)))
    }

    #[test]
    fn mismatched_sender_grant_is_rejected() {
        let (sender, true_public, claimed_public) = mismatched_keypair(1);
        let recipient = keypair(2);
        let grant = seal_grant(
            &GRANT_HEADER,
            &epoch_keys(),
            &sender,
            recipient.public(),
            None,
        )
        .unwrap();
        let parsed = parse_grant(&grant).unwrap();

        // The recipient rejects the grant whichever public key it believes
        // the sender has.
        for (belief, sender_public) in [("true", true_public), ("claimed", claimed_public)] {
            let result = parsed.open("core-data", &recipient, &sender_public);
            assert!(is_authentication_error(&result), "{belief}: {result:?}");
        }

        // The same grant from a matching pair opens, so the failures above
        // come from the mismatch alone.
        let genuine = seal_grant(
            &GRANT_HEADER,
            &epoch_keys(),
            &keypair(1),
            recipient.public(),
            None,
        )
        .unwrap();
        let result = parse_grant(&genuine)
            .unwrap()
            .open("core-data", &recipient, &true_public);
        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn mismatched_recipient_cannot_open() {
        let sender = keypair(1);
        let (recipient, true_public, claimed_public) = mismatched_keypair(2);

        for (belief, recipient_public) in [("true", true_public), ("claimed", claimed_public)] {
            let grant = seal_grant(
                &GRANT_HEADER,
                &epoch_keys(),
                &sender,
                &recipient_public,
                None,
            )
            .unwrap();
            let result =
                parse_grant(&grant)
                    .unwrap()
                    .open("core-data", &recipient, sender.public());
            assert!(is_authentication_error(&result), "{belief}: {result:?}");
        }
    }

    #[test]
    fn mismatched_requester_is_rejected() {
        let (requester, true_public, claimed_public) = mismatched_keypair(2);
        let publisher = keypair(1);
        let request =
            seal_grant_request(&REQUEST_HEADER, &requester, publisher.public(), None).unwrap();
        let parsed = parse_grant_request(&request).unwrap();

        for (belief, requester_public) in [("true", true_public), ("claimed", claimed_public)] {
            let result = parsed.verify("device-virtual", &publisher, &requester_public, NOW_MS);
            assert!(is_authentication_error(&result), "{belief}: {result:?}");
        }
    }

    #[test]
    fn mismatched_publisher_cannot_verify() {
        let requester = keypair(2);
        let (publisher, true_public, claimed_public) = mismatched_keypair(1);

        for (belief, publisher_public) in [("true", true_public), ("claimed", claimed_public)] {
            let request =
                seal_grant_request(&REQUEST_HEADER, &requester, &publisher_public, None).unwrap();
            let result = parse_grant_request(&request).unwrap().verify(
                "device-virtual",
                &publisher,
                requester.public(),
                NOW_MS,
            );
            assert!(is_authentication_error(&result), "{belief}: {result:?}");
        }
    }
}
