//! The crate's error type.
//!
//! Errors caused by untrusted input ([`Malformed`], authentication failures,
//! replays and stale timestamps) are kept apart from caller mistakes
//! (over-long fields, an exhausted sequence space). Every cryptographic
//! failure is reported as one opaque [`EnvelopeError::Authentication`]
//! whose `Display` reveals nothing; the precise [`AuthFailure`] stays
//! available through [`AuthError::audit_reason`] for audit logs and counters.

use std::fmt;

/// Why untrusted bytes could not be parsed. Each variant names the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// The input ended inside the named field.
    #[error("input ends inside field {0}")]
    Truncated(&'static str),
    /// The named field holds a length or value outside its allowed range.
    #[error("field {0} is out of range")]
    OutOfRange(&'static str),
    /// The named text field is not valid UTF-8.
    #[error("field {0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// Bytes follow the end of the named structure.
    #[error("unexpected bytes after {0}")]
    TrailingBytes(&'static str),
    /// The first byte is not the sealbus magic byte.
    #[error("first byte {0:#04x} is not the sealbus magic byte 0xb5")]
    BadMagic(u8),
    /// The wire version is not one this build can read.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// The object kind byte is unknown, or not the kind expected here.
    #[error("unexpected object kind {0}")]
    UnexpectedKind(u8),
    /// Reserved flag bits are set.
    #[error("reserved flag bits {0:#04x} are set")]
    ReservedFlags(u8),
    /// The input is larger than the format allows.
    #[error("input of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input in bytes.
        size: usize,
        /// Limit in bytes.
        limit: usize,
    },
    /// The input is plaintext (for example a plain EdgeX JSON envelope), not
    /// a sealed message.
    #[error("input is plaintext, not a sealed message")]
    Plaintext,
}

/// The precise reason behind an authentication failure, for audit only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The ChaCha20-Poly1305 tag over the body and header did not verify: the
    /// body, header, topic or bus context was changed, or the audience key is
    /// wrong.
    BodyTag,
    /// The body verified but the receiver's origin tag did not: someone who
    /// holds the audience key (a co-subscriber) forged the message.
    OriginTag,
    /// A grant could not be opened: it is forged, altered, or meant for
    /// another recipient.
    Grant,
    /// A grant request could not be opened: it is forged, altered, or not
    /// addressed to this publisher.
    GrantRequest,
}

impl AuthFailure {
    /// Returns a short stable label for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::BodyTag => "body-tag",
            AuthFailure::OriginTag => "origin-tag",
            AuthFailure::Grant => "grant",
            AuthFailure::GrantRequest => "grant-request",
        }
    }
}

/// An opaque authentication failure. `Display` always reads "message
/// authentication failed"; the reason is only available for audit.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthError {
    reason: AuthFailure,
}

impl AuthError {
    pub(crate) fn new(reason: AuthFailure) -> Self {
        Self { reason }
    }

    /// Returns the precise failure, to be logged and counted for audit but
    /// never sent back to a peer.
    pub fn audit_reason(&self) -> AuthFailure {
        self.reason
    }
}

impl fmt::Debug for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthError")
            .field("reason", &self.reason)
            .finish()
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("message authentication failed")
    }
}

impl std::error::Error for AuthError {}

/// Errors from sealing, opening, granting and replay checking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Untrusted input could not be parsed.
    #[error("malformed sealed message: {0}")]
    Malformed(#[from] Malformed),
    /// Untrusted input failed authentication (opaque; see [`AuthError`]).
    #[error(transparent)]
    Authentication(#[from] AuthError),
    /// The message was already accepted once and is being replayed, or it is
    /// too far behind the replay window to tell.
    #[error("replayed message from {sender}: epoch {epoch}, sequence {sequence} was already accepted or is behind the replay window")]
    Replay {
        /// Claimed sender.
        sender: String,
        /// Epoch of the message.
        epoch: u32,
        /// Sequence number of the message.
        sequence: u64,
    },
    /// The transport marked the message as a redelivery (MQTT QoS 1 DUP) and
    /// it was already accepted: a duplicate, not an attack.
    #[error(
        "duplicate delivery from {sender}: epoch {epoch}, sequence {sequence} was already accepted"
    )]
    Duplicate {
        /// Claimed sender.
        sender: String,
        /// Epoch of the message.
        epoch: u32,
        /// Sequence number of the message.
        sequence: u64,
    },
    /// The message belongs to an earlier publisher session or to an epoch the
    /// receiver has retired, so it can only be a replay.
    #[error("message from {sender} belongs to a retired session or epoch (session {session}, epoch {epoch})")]
    StaleEpoch {
        /// Claimed sender.
        sender: String,
        /// Session of the message.
        session: u64,
        /// Epoch of the message.
        epoch: u32,
    },
    /// The message or grant request is older than [`MAX_MESSAGE_AGE_MS`](crate::limits::MAX_MESSAGE_AGE_MS).
    #[error("message timestamp is {age_ms} ms old, more than the maximum age of {max_ms} ms")]
    Expired {
        /// Age of the message in milliseconds.
        age_ms: u64,
        /// Maximum accepted age in milliseconds.
        max_ms: u64,
    },
    /// The message or grant request timestamp is further in the future than
    /// [`MAX_CLOCK_SKEW_MS`](crate::limits::MAX_CLOCK_SKEW_MS); check the
    /// clocks of both hosts.
    #[error("message timestamp is {ahead_ms} ms in the future, more than the allowed clock skew of {max_ms} ms; check both hosts' clocks")]
    FromFuture {
        /// How far ahead of the receiver's clock the timestamp is, in ms.
        ahead_ms: u64,
        /// Allowed skew in milliseconds.
        max_ms: u64,
    },
    /// No grant (audience key) is known for this sender and epoch yet. The
    /// caller should hold the message and request the grant.
    #[error("no grant received yet from {sender} for session {session}, epoch {epoch}")]
    NoGrant {
        /// Claimed sender.
        sender: String,
        /// Session of the message.
        session: u64,
        /// Epoch of the message.
        epoch: u32,
    },
    /// The grant or message names another recipient than this receiver.
    #[error("grant is addressed to {recipient}, not to this receiver")]
    WrongRecipient {
        /// Recipient named in the grant.
        recipient: String,
    },
    /// Caller mistake: the epoch has used its last sequence number; start a
    /// new epoch.
    #[error("epoch {epoch} has used its last sequence number; start a new epoch")]
    SequenceExhausted {
        /// Epoch whose sequence space is used up.
        epoch: u32,
    },
    /// Caller mistake: a field is longer than the format allows.
    #[error("{field} is {len} bytes long, more than the maximum of {max} bytes")]
    FieldTooLong {
        /// Field name.
        field: &'static str,
        /// Length in bytes.
        len: usize,
        /// Maximum length in bytes.
        max: usize,
    },
    /// Caller mistake: the audience is empty or larger than
    /// [`MAX_RECIPIENTS`](crate::limits::MAX_RECIPIENTS).
    #[error("audience of {count} recipients is outside the allowed range 1..={max}")]
    AudienceSize {
        /// Number of recipients requested.
        count: usize,
        /// Maximum number of recipients.
        max: usize,
    },
    /// Caller mistake: a service name is empty, longer than 64 bytes, or has
    /// characters outside `[A-Za-z0-9._-]`.
    #[error(
        "invalid service name {0:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    InvalidName(String),
    /// Caller mistake: a key is not a valid X25519 key.
    #[error("invalid {0} key")]
    InvalidKey(&'static str),
}

impl EnvelopeError {
    /// Returns the short verdict used by logs, counters and `sealbus watch`:
    /// "malformed", "plaintext", "forged", "replay", "duplicate", "expired",
    /// "no-grant", "wrong-recipient" or "invalid" for caller mistakes.
    pub fn verdict(&self) -> &'static str {
        match self {
            EnvelopeError::Malformed(Malformed::Plaintext) => "plaintext",
            EnvelopeError::Malformed(_) => "malformed",
            EnvelopeError::Authentication(_) => "forged",
            EnvelopeError::Replay { .. } | EnvelopeError::StaleEpoch { .. } => "replay",
            EnvelopeError::Duplicate { .. } => "duplicate",
            EnvelopeError::Expired { .. } | EnvelopeError::FromFuture { .. } => "expired",
            EnvelopeError::NoGrant { .. } => "no-grant",
            EnvelopeError::WrongRecipient { .. } => "wrong-recipient",
            EnvelopeError::SequenceExhausted { .. }
            | EnvelopeError::FieldTooLong { .. }
            | EnvelopeError::AudienceSize { .. }
            | EnvelopeError::InvalidName(_)
            | EnvelopeError::InvalidKey(_) => "invalid",
        }
    }
}
