//! Sealed data messages: the header, the encrypted EdgeX body, the origin
//! tags and optional inline grants.
//!
//! The body is encrypted once with the epoch's audience key
//! (ChaCha20-Poly1305). When the audience has two or more recipients, each
//! gets a 16-byte origin tag: HMAC-SHA-256 under its own origin key, cut to
//! 16 bytes, over a SHA-256 digest of the associated data and the whole
//! ciphertext (see `origin.rs`). A co-subscriber has the audience key but
//! not the others' origin keys, so it cannot forge a message that another
//! subscriber accepts. With a single recipient the audience key is itself
//! known only to the publisher and that recipient, so the AEAD tag already
//! proves the origin and no origin tag is sent.

use crate::aead::AudienceCipher;
use crate::codec::{Reader, Writer};
use crate::edgex::MessageEnvelope;
use crate::error::{AuthError, AuthFailure, EnvelopeError, Malformed};
use crate::keys::{EpochKeys, SymmetricKey};
use crate::limits::{
    AEAD_TAG_LEN, MAGIC, MAX_CONTEXT_LEN, MAX_INLINE_GRANTS, MAX_RECIPIENTS, MAX_SEALED_SIZE,
    MAX_SEQUENCE, MAX_TOPIC_LEN, ORIGIN_TAG_LEN, WIRE_VERSION,
};
use crate::origin::{origin_digest, OriginKey};
use crate::{check_name, KIND_DATA};

/// Flag bit: a grants section follows the origin tags.
const FLAG_GRANTS: u8 = 0x01;

/// Route of a message: the bus context and the topic. Both are bound
/// into the associated data, so moving a message fails authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// Bus context: the bus type ("mqtt", "redis", "memory"), optionally
    /// followed by ':' and a deployment's bus id.
    pub context: &'a str,
    /// Exact topic (MQTT topic name or Redis channel).
    pub topic: &'a str,
}

impl Route<'_> {
    fn check(&self) -> Result<(), EnvelopeError> {
        if self.context.len() > MAX_CONTEXT_LEN {
            return Err(EnvelopeError::FieldTooLong {
                field: "bus context",
                len: self.context.len(),
                max: MAX_CONTEXT_LEN,
            });
        }
        if self.topic.len() > MAX_TOPIC_LEN {
            return Err(EnvelopeError::FieldTooLong {
                field: "topic",
                len: self.topic.len(),
                max: MAX_TOPIC_LEN,
            });
        }
        Ok(())
    }

    /// Builds the associated data: the header, then context and topic. The
    /// header starts with the magic, version and kind bytes, which separate
    /// it from every other use of a key.
    fn associated_data(&self, header: &[u8]) -> AssociatedData {
        let len = header.len() + 1 + self.context.len() + 2 + self.topic.len();
        let mut ad = if len <= INLINE_ASSOCIATED_DATA_LEN {
            AssociatedData::Inline {
                bytes: [0; INLINE_ASSOCIATED_DATA_LEN],
                len: 0,
            }
        } else {
            AssociatedData::Heap(Vec::with_capacity(len))
        };
        ad.push(header);
        ad.push(&[self.context.len() as u8]);
        ad.push(self.context.as_bytes());
        ad.push(&(self.topic.len() as u16).to_be_bytes());
        ad.push(self.topic.as_bytes());
        ad
    }
}

/// Associated data up to this length is built on the stack, so sealing and
/// opening on typical EdgeX topics allocate nothing for it.
const INLINE_ASSOCIATED_DATA_LEN: usize = 320;

// The inline variant lives on the stack for one call; boxing it would add
// the allocation it exists to avoid.
#[allow(clippy::large_enum_variant)]
enum AssociatedData {
    Inline {
        bytes: [u8; INLINE_ASSOCIATED_DATA_LEN],
        len: usize,
    },
    Heap(Vec<u8>),
}

impl AssociatedData {
    fn push(&mut self, part: &[u8]) {
        match self {
            AssociatedData::Inline { bytes, len } => {
                bytes[*len..*len + part.len()].copy_from_slice(part);
                *len += part.len();
            }
            AssociatedData::Heap(bytes) => bytes.extend_from_slice(part),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            AssociatedData::Inline { bytes, len } => &bytes[..*len],
            AssociatedData::Heap(bytes) => bytes,
        }
    }
}

/// Number of origin tags a message with this audience size carries.
pub fn origin_tag_count(audience_size: u16) -> usize {
    if audience_size <= 1 {
        0
    } else {
        usize::from(audience_size)
    }
}

/// The sending side of one epoch: the audience key, every recipient's
/// origin key, and the next sequence number.
pub struct SendingEpoch {
    sender: String,
    session: u64,
    epoch: u32,
    cipher: AudienceCipher,
    origin_keys: Vec<OriginKey>,
    next_sequence: u64,
}

impl std::fmt::Debug for SendingEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendingEpoch")
            .field("sender", &self.sender)
            .field("session", &self.session)
            .field("epoch", &self.epoch)
            .field("recipients", &self.origin_keys.len())
            .field("next_sequence", &self.next_sequence)
            .finish_non_exhaustive()
    }
}

/// Inputs of one seal operation besides the envelope.
#[derive(Debug, Clone, Copy)]
pub struct SealOptions<'a> {
    /// Route the message will be published on.
    pub route: Route<'a>,
    /// Unix time in milliseconds now.
    pub timestamp_ms: u64,
    /// Grants to carry inline, each as produced by
    /// [`seal_grant`](crate::seal_grant); empty for none.
    pub grants: &'a [Vec<u8>],
}

impl SendingEpoch {
    /// Creates the sending state of an epoch. `origin_keys[i]` belongs to the
    /// recipient in slot `i`; with one recipient its origin key is unused.
    ///
    /// # Errors
    /// Returns [`EnvelopeError::InvalidName`] or
    /// [`EnvelopeError::AudienceSize`].
    pub fn new(
        sender: &str,
        session: u64,
        epoch: u32,
        audience_key: &SymmetricKey,
        origin_keys: Vec<SymmetricKey>,
    ) -> Result<Self, EnvelopeError> {
        check_name(sender)?;
        if origin_keys.is_empty() || origin_keys.len() > MAX_RECIPIENTS {
            return Err(EnvelopeError::AudienceSize {
                count: origin_keys.len(),
                max: MAX_RECIPIENTS,
            });
        }
        Ok(Self {
            sender: sender.to_owned(),
            session,
            epoch,
            cipher: AudienceCipher::new(audience_key),
            origin_keys: origin_keys.iter().map(OriginKey::new).collect(),
            next_sequence: 0,
        })
    }

    /// Returns the epoch number.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Returns the session number.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Returns the sequence number the next message will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Returns how many recipients the epoch has.
    pub fn audience_size(&self) -> usize {
        self.origin_keys.len()
    }

    /// Moves the sequence counter, so tests can reach the top of the range
    /// without sealing 2^64 messages.
    pub fn set_next_sequence_for_testing_only(&mut self, sequence: u64) {
        self.next_sequence = sequence;
    }

    /// Seals an envelope for publication on `options.route`.
    ///
    /// # Errors
    /// Returns [`EnvelopeError::SequenceExhausted`] when the epoch has used
    /// [`MAX_SEQUENCE`], [`EnvelopeError::FieldTooLong`] for an over-long
    /// field, topic or context, and [`EnvelopeError::AudienceSize`] when more
    /// grants are passed than [`MAX_INLINE_GRANTS`].
    pub fn seal(
        &mut self,
        envelope: &MessageEnvelope,
        options: &SealOptions<'_>,
    ) -> Result<Vec<u8>, EnvelopeError> {
        options.route.check()?;
        envelope.check_limits()?;
        if options.grants.len() > MAX_INLINE_GRANTS {
            return Err(EnvelopeError::AudienceSize {
                count: options.grants.len(),
                max: MAX_INLINE_GRANTS,
            });
        }
        if let Some(grant) = options
            .grants
            .iter()
            .find(|grant| grant.len() > usize::from(u16::MAX))
        {
            return Err(EnvelopeError::FieldTooLong {
                field: "inline grant",
                len: grant.len(),
                max: usize::from(u16::MAX),
            });
        }
        let sequence = self.next_sequence;
        if sequence > MAX_SEQUENCE {
            return Err(EnvelopeError::SequenceExhausted { epoch: self.epoch });
        }

        let body_len = envelope.body_len();
        let ciphertext_len = body_len + AEAD_TAG_LEN;
        let audience_size = self.origin_keys.len() as u16;
        let tag_count = origin_tag_count(audience_size);
        let grants_len: usize = if options.grants.is_empty() {
            0
        } else {
            2 + options
                .grants
                .iter()
                .map(|grant| 2 + grant.len())
                .sum::<usize>()
        };
        let total = 4
            + 1
            + self.sender.len()
            + 8
            + 4
            + 8
            + 8
            + 2
            + 4
            + ciphertext_len
            + tag_count * ORIGIN_TAG_LEN
            + grants_len;
        if total > MAX_SEALED_SIZE {
            return Err(EnvelopeError::FieldTooLong {
                field: "sealed message",
                len: total,
                max: MAX_SEALED_SIZE,
            });
        }

        let flags = if options.grants.is_empty() {
            0
        } else {
            FLAG_GRANTS
        };
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&[MAGIC, WIRE_VERSION, KIND_DATA, flags]);
        out.put_name(&self.sender);
        out.put_u64(self.session);
        out.put_u32(self.epoch);
        out.put_u64(sequence);
        out.put_u64(options.timestamp_ms);
        out.put_u16(audience_size);
        out.put_u32(ciphertext_len as u32);
        let header_end = out.len();
        let associated_data = options.route.associated_data(&out[..header_end]);

        envelope.encode_body(&mut out);
        let tag = self.cipher.seal(
            self.epoch,
            sequence,
            associated_data.as_slice(),
            &mut out[header_end..],
        );
        out.extend_from_slice(&tag);

        if tag_count > 0 {
            let digest = origin_digest(associated_data.as_slice(), &out[header_end..]);
            for key in &self.origin_keys {
                out.extend_from_slice(&key.tag(&digest));
            }
        }

        if !options.grants.is_empty() {
            out.put_u16(options.grants.len() as u16);
            for grant in options.grants {
                out.put_u16(grant.len() as u16);
                out.extend_from_slice(grant);
            }
        }

        self.next_sequence = sequence + 1;
        Ok(out)
    }
}

/// A data message whose structure has been checked but which has not been
/// authenticated. Its fields are claims until [`open`](crate::Receiver::open)
/// verifies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMessage<'a> {
    /// Claimed sender.
    pub sender: &'a str,
    /// Claimed publisher session.
    pub session: u64,
    /// Claimed epoch.
    pub epoch: u32,
    /// Claimed sequence number.
    pub sequence: u64,
    /// Claimed Unix time of sealing in milliseconds.
    pub timestamp_ms: u64,
    /// Number of recipients of the epoch.
    pub audience_size: u16,
    header: &'a [u8],
    ciphertext: &'a [u8],
    tags: &'a [u8],
    /// Inline grants, unparsed.
    pub grants: Vec<&'a [u8]>,
}

/// Parses a data message without any cryptography.
///
/// # Errors
/// Returns [`Malformed::Plaintext`] for plaintext such as a plain EdgeX JSON
/// envelope, and another [`Malformed`] for anything else that is not a
/// well-formed data message.
pub fn parse_message(bytes: &[u8]) -> Result<ParsedMessage<'_>, Malformed> {
    if bytes.len() > MAX_SEALED_SIZE {
        return Err(Malformed::TooLarge {
            size: bytes.len(),
            limit: MAX_SEALED_SIZE,
        });
    }
    let mut reader = Reader::new(bytes);
    crate::read_prefix(&mut reader, KIND_DATA)?;
    let flags = reader.u8("flags")?;
    if flags & !FLAG_GRANTS != 0 {
        return Err(Malformed::ReservedFlags(flags));
    }
    let sender = reader.name("sender")?;
    let session = reader.u64("session")?;
    let epoch = reader.u32("epoch")?;
    let sequence = reader.u64("sequence")?;
    let timestamp_ms = reader.u64("timestamp")?;
    let audience_size = reader.u16("audience size")?;
    if audience_size == 0 || usize::from(audience_size) > MAX_RECIPIENTS {
        return Err(Malformed::OutOfRange("audience size"));
    }
    let ciphertext_len = reader.u32("ciphertext length")? as usize;
    if ciphertext_len < AEAD_TAG_LEN {
        return Err(Malformed::OutOfRange("ciphertext length"));
    }
    let header_end = reader.position();
    let ciphertext = reader.take(ciphertext_len, "ciphertext")?;
    let tags = reader.take(
        origin_tag_count(audience_size) * ORIGIN_TAG_LEN,
        "origin tags",
    )?;

    let mut grants = Vec::new();
    if flags & FLAG_GRANTS != 0 {
        let count = usize::from(reader.u16("grant count")?);
        if count == 0 || count > MAX_INLINE_GRANTS {
            return Err(Malformed::OutOfRange("grant count"));
        }
        grants.reserve(count);
        for _ in 0..count {
            let len = usize::from(reader.u16("grant length")?);
            grants.push(reader.take(len, "grant")?);
        }
    }
    reader.finish("data message")?;

    Ok(ParsedMessage {
        sender,
        session,
        epoch,
        sequence,
        timestamp_ms,
        audience_size,
        header: &bytes[..header_end],
        ciphertext,
        tags,
        grants,
    })
}

impl ParsedMessage<'_> {
    /// Decrypts and authenticates the message with one recipient's epoch
    /// keys: the AEAD tag first, then the recipient's origin tag.
    pub(crate) fn decrypt(
        &self,
        route: &Route<'_>,
        cipher: &AudienceCipher,
        origin_key: &OriginKey,
        keys: &EpochKeys,
    ) -> Result<MessageEnvelope, EnvelopeError> {
        route.check()?;
        if self.audience_size != keys.audience_size {
            return Err(AuthError::new(AuthFailure::OriginTag).into());
        }
        let associated_data = route.associated_data(self.header);
        let plaintext = cipher
            .open(
                self.epoch,
                self.sequence,
                associated_data.as_slice(),
                self.ciphertext,
            )
            .ok_or_else(|| AuthError::new(AuthFailure::BodyTag))?;

        if origin_tag_count(self.audience_size) > 0 {
            let slot = usize::from(keys.slot);
            let received = &self.tags[slot * ORIGIN_TAG_LEN..(slot + 1) * ORIGIN_TAG_LEN];
            let expected =
                origin_key.tag(&origin_digest(associated_data.as_slice(), self.ciphertext));
            if !bool::from(subtle::ConstantTimeEq::ct_eq(received, expected.as_slice())) {
                return Err(AuthError::new(AuthFailure::OriginTag).into());
            }
        }

        Ok(MessageEnvelope::decode_body(plaintext, route.topic)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::{OpenOptions, Receiver};

    const NOW_MS: u64 = 1_780_000_000_000;
    const ROUTE: Route<'static> = Route {
        context: "mqtt",
        topic: "edgex/events/device/x",
    };

    fn epoch_and_receiver() -> (SendingEpoch, Receiver) {
        let audience_key = SymmetricKey::from_bytes([7; 32]);
        let origin_key = SymmetricKey::from_bytes([8; 32]);
        let epoch =
            SendingEpoch::new("device-x", 1, 1, &audience_key, vec![origin_key.clone()]).unwrap();
        let mut receiver = Receiver::new();
        let keys = EpochKeys {
            audience_key,
            origin_key,
            slot: 0,
            audience_size: 1,
        };
        receiver.install("device-x", 1, 1, keys).unwrap();
        (epoch, receiver)
    }

    /// Seals `body` byte for byte under the epoch's real keys, so it passes
    /// authentication and reaches the body decoder.
    fn seal_raw_body(epoch: &mut SendingEpoch, body: &[u8]) -> Vec<u8> {
        let template = MessageEnvelope::new(Vec::new(), "c", "text/plain");
        let options = SealOptions {
            route: ROUTE,
            timestamp_ms: NOW_MS,
            grants: &[],
        };
        let sealed = epoch.seal(&template, &options).unwrap();
        let parsed = parse_message(&sealed).unwrap();

        // The template's header with the ciphertext length of `body`.
        let mut header = parsed.header[..parsed.header.len() - 4].to_vec();
        header.put_u32((body.len() + AEAD_TAG_LEN) as u32);
        let associated_data = ROUTE.associated_data(&header);
        let mut ciphertext = body.to_vec();
        let tag = epoch.cipher.seal(
            parsed.epoch,
            parsed.sequence,
            associated_data.as_slice(),
            &mut ciphertext,
        );
        [header, ciphertext, tag.to_vec()].concat()
    }

    fn open(receiver: &Receiver, bytes: &[u8]) -> Result<MessageEnvelope, EnvelopeError> {
        let options = OpenOptions {
            route: ROUTE,
            now_ms: NOW_MS,
            redelivery: false,
        };
        let parsed = parse_message(bytes)?;
        receiver
            .open(&parsed, &options)
            .map(|opened| opened.envelope)
    }

    #[test]
    fn authentic_malformed_bodies_never_open() {
        // A valid body of version 2: flags, apiVersion "v3", empty
        // correlationID, requestID, error code 0, contentType "t", no
        // parameters, payload "p".
        let valid: &[u8] = b"\x02\x00\x02v3\x00\x00\x00\x01t\x00p";
        let cases: [(&str, Vec<u8>, Malformed); 6] = [
            (
                "other body version",
                [b"\x01", &valid[1..]].concat(),
                Malformed::UnsupportedVersion(1),
            ),
            (
                "reserved flag bit",
                [b"\x02\x02", &valid[2..]].concat(),
                Malformed::ReservedFlags(0x02),
            ),
            (
                "null flag with payload bytes",
                [b"\x02\x01", &valid[2..]].concat(),
                Malformed::OutOfRange("payload null flag"),
            ),
            (
                "length in a longer varint than needed",
                [b"\x02\x00\x82\x00v3", &valid[5..]].concat(),
                Malformed::OutOfRange("apiVersion"),
            ),
            (
                "field over its limit",
                [b"\x02\x00\x81\x20".as_slice(), &[b'v'; 4097], &valid[5..]].concat(),
                Malformed::OutOfRange("apiVersion"),
            ),
            (
                "invalid UTF-8",
                [b"\x02\x00\x02\xff\xfe", &valid[5..]].concat(),
                Malformed::InvalidUtf8("apiVersion"),
            ),
        ];

        let (mut epoch, receiver) = epoch_and_receiver();
        let control = seal_raw_body(&mut epoch, valid);
        assert_eq!(open(&receiver, &control).unwrap().payload, b"p");
        for (name, body, expected) in cases {
            let sealed = seal_raw_body(&mut epoch, &body);
            assert_eq!(
                open(&receiver, &sealed),
                Err(EnvelopeError::Malformed(expected)),
                "{name}"
            );
        }
    }
}
