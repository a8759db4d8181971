//! Named limits of the wire format and of the replay protection.
//!
//! Every bound that untrusted input is checked against lives here, with its
//! unit and the reason for its value.

/// Magic byte that starts every sealbus wire object. A plain EdgeX JSON
/// envelope starts with `{` or whitespace, so the two can never be confused.
pub const MAGIC: u8 = 0xB5;

/// Wire format version written and accepted by this crate.
pub const WIRE_VERSION: u8 = 1;

/// Maximum length of a service name in bytes. Names travel in every header,
/// so they are kept short; the keyring enforces the same bound.
pub const MAX_NAME_LEN: usize = 64;

/// Maximum length of a topic in bytes (MQTT allows 65535; EdgeX topics are
/// far shorter, and a small bound keeps the associated data cheap).
pub const MAX_TOPIC_LEN: usize = 1024;

/// Maximum length of the bus context string (bus type plus optional bus id)
/// in bytes.
pub const MAX_CONTEXT_LEN: usize = 128;

/// Maximum number of recipients (origin tags) of one sealed message. An
/// audience larger than this must be split by topic.
pub const MAX_RECIPIENTS: usize = 1024;

/// Maximum size of a whole sealed message in bytes. Transports apply their
/// own, usually smaller, limit before this one.
pub const MAX_SEALED_SIZE: usize = 16 * 1024 * 1024;

/// Maximum length of one EdgeX string field (apiVersion, correlationID,
/// requestID, contentType, a query parameter key or value) in bytes.
pub const MAX_FIELD_LEN: usize = 4096;

/// Maximum number of EdgeX query parameters in one envelope.
pub const MAX_QUERY_PARAMS: usize = 256;

/// Maximum number of grants carried inline in one data message. A publisher
/// with a larger audience sends the rest on the grant control topics.
pub const MAX_INLINE_GRANTS: usize = MAX_RECIPIENTS;

/// Size of the replay window in sequence numbers. Messages more than this
/// far behind the highest sequence number seen in an epoch are rejected as
/// replays, so reordering deeper than this loses messages.
pub const REPLAY_WINDOW: u64 = 4096;

/// Highest sequence number a publisher may use in one epoch. Sealing refuses
/// to go past it rather than wrapping the nonce; publishers start a new
/// epoch long before.
pub const MAX_SEQUENCE: u64 = u64::MAX - 1;

/// How far in the future (ms) a message or grant request timestamp may be, to allow
/// for clock skew between hosts. Later timestamps are rejected.
pub const MAX_CLOCK_SKEW_MS: u64 = 30_000;

/// Maximum age (ms) of a message or grant request when it is opened. This bounds how
/// long a captured message can be replayed to a receiver that lost its
/// replay state (after a restart or an eviction).
pub const MAX_MESSAGE_AGE_MS: u64 = 120_000;

/// Length of an origin tag in bytes: HMAC-SHA-256 cut to its first 16
/// bytes, 128 bits against forgery by another member of the audience.
pub const ORIGIN_TAG_LEN: usize = 16;

/// Length of the ChaCha20-Poly1305 authentication tag in bytes.
pub const AEAD_TAG_LEN: usize = 16;

/// Length of symmetric keys and X25519 keys in bytes.
pub const KEY_LEN: usize = 32;
