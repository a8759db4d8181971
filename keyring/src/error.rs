//! The crate's error type.
//!
//! Every variant belongs to one [`ErrorCategory`]. The category separates
//! bad data from outside, such as a forged certificate, a damaged bundle or
//! a revoked peer, from the caller's own mistakes, such as an invalid name
//! passed to an API. A third category covers file permissions and I/O.

use std::path::PathBuf;

/// Maximum number of characters of an untrusted string that an error message
/// repeats, so that a huge name or topic cannot flood a log.
pub const MAX_ERROR_VALUE_CHARS: usize = 80;

/// Result type of this crate.
pub type Result<T, E = KeyringError> = std::result::Result<T, E>;

/// Source of the problem behind a [`KeyringError`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCategory {
    /// Data from outside the process is bad or is denied: a malformed file,
    /// a bad signature, an expired, revoked or unknown identity, a topic the
    /// identity may not use.
    UntrustedInput,
    /// The caller passed an invalid argument or asked for something the API
    /// does not allow.
    CallerMistake,
    /// The file system failed or a key file has unsafe permissions.
    Environment,
}

/// Direction of a topic permission in a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Permission to publish on a topic.
    Publish,
    /// Permission to subscribe to a topic.
    Subscribe,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Publish => f.write_str("publish"),
            Action::Subscribe => f.write_str("subscribe"),
        }
    }
}

/// Errors of the keyring crate.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    // ---- Caller mistakes -------------------------------------------------
    /// A service name is empty, too long or contains a character outside
    /// `[A-Za-z0-9._-]`.
    #[error(
        "invalid service name {name:?}: {reason}; use 1 to {max} characters from A-Z, a-z, 0-9, '.', '_' and '-'",
        max = crate::identity::MAX_NAME_LEN
    )]
    InvalidName {
        /// The rejected name, shortened to [`MAX_ERROR_VALUE_CHARS`].
        name: String,
        /// The rule that the value breaks.
        reason: &'static str,
    },

    /// A topic name breaks the MQTT topic name rules.
    #[error(
        "invalid topic {topic:?}: {reason}; a topic is 1 to {max} bytes of UTF-8 without '+', '#' or NUL",
        max = crate::topic::MAX_TOPIC_LEN
    )]
    InvalidTopic {
        /// The rejected topic, shortened to [`MAX_ERROR_VALUE_CHARS`].
        topic: String,
        /// The rule that the value breaks.
        reason: &'static str,
    },

    /// A topic filter breaks the MQTT 3.1.1 filter rules.
    #[error("invalid topic filter {filter:?}: {reason}; '+' must fill a whole level and '#' must be the whole last level")]
    InvalidFilter {
        /// The rejected filter, shortened to [`MAX_ERROR_VALUE_CHARS`].
        filter: String,
        /// The rule that the value breaks.
        reason: &'static str,
    },

    /// A certificate would list more topic filters than allowed.
    #[error("a certificate lists {count} topic filters, more than the maximum of {max}; use broader wildcard filters")]
    TooManyFilters {
        /// Number of publish and subscribe filters together.
        count: usize,
        /// The limit, [`crate::cert::MAX_FILTERS_PER_CERT`].
        max: usize,
    },

    /// The validity window of a certificate to issue is empty.
    #[error("invalid validity window: not_before {not_before} is not earlier than not_after {not_after}; pass a not_after after not_before")]
    InvalidValidity {
        /// Requested start, Unix seconds.
        not_before: u64,
        /// Requested end, Unix seconds.
        not_after: u64,
    },

    /// `CertificateAuthority::init` found an existing CA key.
    #[error("a CA key already exists at {path}; open it with CertificateAuthority::open or choose an empty directory")]
    CaAlreadyExists {
        /// Path of the existing key file.
        path: PathBuf,
    },

    /// A CA counter (certificate serial or bundle version) cannot grow further.
    #[error("the CA {counter} counter is exhausted; create a new CA")]
    CounterExhausted {
        /// `"serial"` or `"bundle version"`.
        counter: &'static str,
    },

    // ---- Untrusted input --------------------------------------------------
    /// A JSON document does not parse or does not have the expected fields
    /// and types. Unknown fields are rejected too.
    #[error("malformed {what} JSON: {reason}; regenerate the file with the sealbus CLI")]
    MalformedJson {
        /// The kind of document, such as `"certificate"`.
        what: &'static str,
        /// The parser's message.
        reason: String,
    },

    /// A base64 or hex field does not decode.
    #[error("{what} field {field:?} is not valid {encoding}: {reason}")]
    InvalidEncoding {
        /// The kind of document.
        what: &'static str,
        /// The JSON field.
        field: &'static str,
        /// `"base64"` or `"hex"`.
        encoding: &'static str,
        /// The decoder's message.
        reason: String,
    },

    /// A decoded key, signature or fingerprint has the wrong length.
    #[error("{what} field {field:?} has {found} bytes, expected {expected}")]
    InvalidLength {
        /// The kind of document.
        what: &'static str,
        /// The JSON field.
        field: &'static str,
        /// Required length in bytes.
        expected: usize,
        /// Decoded length in bytes.
        found: usize,
    },

    /// A field of a parsed document failed validation. `source` is the
    /// validation error.
    #[error("{what} field {field:?} is invalid: {source}")]
    InvalidField {
        /// The kind of document.
        what: &'static str,
        /// The JSON field.
        field: &'static str,
        /// The validation error.
        source: Box<KeyringError>,
    },

    /// A document has a format version this crate does not support.
    #[error("unsupported {what} version {found}; this build supports version {supported}")]
    UnsupportedVersion {
        /// The kind of document.
        what: &'static str,
        /// Version found in the document.
        found: u64,
        /// The one version this build reads.
        supported: u64,
    },

    /// An input exceeds a size limit and was not parsed.
    #[error("{what} is {size} bytes, more than the maximum of {max}")]
    InputTooLarge {
        /// The kind of document.
        what: &'static str,
        /// Input size in bytes.
        size: u64,
        /// The limit in bytes.
        max: u64,
    },

    /// A trust bundle lists more entries than allowed.
    #[error("trust bundle lists {count} {entries}, more than the maximum of {max}")]
    BundleTooLarge {
        /// `"certificates"` or `"revoked fingerprints"`.
        entries: &'static str,
        /// Number of entries in the bundle.
        count: usize,
        /// The limit.
        max: usize,
    },

    /// An Ed25519 public key is not a valid curve point.
    #[error("invalid CA public key: {reason}; copy ca.pub again from the CA directory")]
    InvalidCaKey {
        /// Reason for rejecting the key.
        reason: String,
    },

    /// An Ed25519 signature does not verify under the CA key.
    #[error("bad signature on {what}; it was not issued by this CA or was modified after signing")]
    BadSignature {
        /// The signed object, such as `certificate "sensor-1" serial 7`.
        what: String,
    },

    /// A certificate's validity starts after `now`.
    #[error("certificate of {name:?} is not valid before {not_before} (now {now}); check the clocks or wait")]
    NotYetValid {
        /// Identity named in the certificate.
        name: String,
        /// Start of validity, Unix seconds.
        not_before: u64,
        /// The time checked, Unix seconds.
        now: u64,
    },

    /// A certificate's validity ended at or before `now`.
    #[error("certificate of {name:?} expired at {not_after} (now {now}); issue a new certificate")]
    Expired {
        /// Identity named in the certificate.
        name: String,
        /// End of validity, Unix seconds.
        not_after: u64,
        /// The time checked, Unix seconds.
        now: u64,
    },

    /// Two unrevoked certificates in one bundle name the same identity.
    #[error("trust bundle has more than one unrevoked certificate for {name:?}; revoke the old certificate")]
    DuplicateName {
        /// The repeated identity name.
        name: String,
    },

    /// A trust bundle is not newer than the one already loaded.
    #[error("trust bundle version {offered} is not newer than the loaded version {current}; rollback rejected")]
    BundleRollback {
        /// Version of the bundle offered.
        offered: u64,
        /// Version already in use.
        current: u64,
    },

    /// The secret key in an identity directory does not belong to the
    /// certificate beside it.
    #[error("identity key of {name:?} does not match the public key in its certificate; issue the identity again")]
    KeyMismatch {
        /// Identity name.
        name: String,
    },

    /// The `ca.pub` of a CA directory does not belong to its `ca.key`.
    #[error("CA public key {path} does not belong to the CA key beside it; restore the matching ca.pub from a backup")]
    CaPublicKeyMismatch {
        /// Path of the `ca.pub` file.
        path: PathBuf,
    },

    /// The name in `identity.key` differs from the certificate's name.
    #[error("identity key names {key_name:?} but its certificate names {certificate_name:?}; issue the identity again")]
    NameMismatch {
        /// Name stored in the key file.
        key_name: String,
        /// Name in the certificate.
        certificate_name: String,
    },

    /// No certificate in the trust bundle names this identity.
    #[error("unknown identity {name:?}: the trust bundle has no certificate for it")]
    UnknownIdentity {
        /// The identity looked up, shortened to [`MAX_ERROR_VALUE_CHARS`].
        name: String,
    },

    /// Every certificate of this identity in the trust bundle is revoked.
    #[error("identity {name:?} is revoked (certificate fingerprint {fingerprint}); issue a new certificate")]
    Revoked {
        /// Identity name.
        name: String,
        /// Hex SHA-256 fingerprint of the revoked certificate.
        fingerprint: String,
    },

    /// The identity's certificate grants no filter matching the topic.
    #[error("identity {name:?} is not authorized to {action} on topic {topic:?}; add a matching filter to its certificate")]
    Unauthorized {
        /// Identity name.
        name: String,
        /// The topic, shortened to [`MAX_ERROR_VALUE_CHARS`].
        topic: String,
        /// Whether publishing or subscribing was requested.
        action: Action,
    },

    // ---- Environment ----------------------------------------------------
    /// A secret key file can be read or written by group or others.
    #[error("key file {path} has mode {mode:04o}, which lets group or others access it; run `chmod 600 {path}`")]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Permission bits found (`mode & 0o7777`).
        mode: u32,
    },

    /// A path that must be a regular file is something else.
    #[error("{path} is not a regular file; replace it with the key or certificate file")]
    NotARegularFile {
        /// The offending path.
        path: PathBuf,
    },

    /// A file system operation failed.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// The operation, such as `"read"` or `"rename"`.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operating system error.
        source: std::io::Error,
    },
}

impl KeyringError {
    /// Returns where the problem comes from.
    pub fn category(&self) -> ErrorCategory {
        match self {
            KeyringError::InvalidName { .. }
            | KeyringError::InvalidTopic { .. }
            | KeyringError::InvalidFilter { .. }
            | KeyringError::TooManyFilters { .. }
            | KeyringError::InvalidValidity { .. }
            | KeyringError::CaAlreadyExists { .. }
            | KeyringError::CounterExhausted { .. } => ErrorCategory::CallerMistake,

            KeyringError::MalformedJson { .. }
            | KeyringError::InvalidEncoding { .. }
            | KeyringError::InvalidLength { .. }
            | KeyringError::InvalidField { .. }
            | KeyringError::UnsupportedVersion { .. }
            | KeyringError::InputTooLarge { .. }
            | KeyringError::BundleTooLarge { .. }
            | KeyringError::InvalidCaKey { .. }
            | KeyringError::BadSignature { .. }
            | KeyringError::NotYetValid { .. }
            | KeyringError::Expired { .. }
            | KeyringError::DuplicateName { .. }
            | KeyringError::BundleRollback { .. }
            | KeyringError::KeyMismatch { .. }
            | KeyringError::CaPublicKeyMismatch { .. }
            | KeyringError::NameMismatch { .. }
            | KeyringError::UnknownIdentity { .. }
            | KeyringError::Revoked { .. }
            | KeyringError::Unauthorized { .. } => ErrorCategory::UntrustedInput,

            KeyringError::KeyFilePermissions { .. }
            | KeyringError::NotARegularFile { .. }
            | KeyringError::Io { .. } => ErrorCategory::Environment,
        }
    }

    /// Wraps a validation error found while parsing a document, so that it
    /// reports as untrusted input rather than as a caller mistake.
    pub(crate) fn in_field(self, what: &'static str, field: &'static str) -> KeyringError {
        KeyringError::InvalidField {
            what,
            field,
            source: Box::new(self),
        }
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        KeyringError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Shortens an untrusted string for an error message.
pub(crate) fn preview(value: &str) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(MAX_ERROR_VALUE_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}...")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_keeps_short_values() {
        assert_eq!(preview("sensor-1"), "sensor-1");
    }

    #[test]
    fn preview_shortens_long_values() {
        let long = "x".repeat(10_000);
        let shown = preview(&long);
        assert!(shown.len() <= MAX_ERROR_VALUE_CHARS + 3);
        assert!(shown.ends_with("..."));
    }

    #[test]
    fn permission_error_names_path_mode_and_fix() {
        let error = KeyringError::KeyFilePermissions {
            path: PathBuf::from("/tmp/id/identity.key"),
            mode: 0o644,
        };
        let message = error.to_string();
        assert!(message.contains("/tmp/id/identity.key"), "{message}");
        assert!(message.contains("0644"), "{message}");
        assert!(
            message.contains("chmod 600 /tmp/id/identity.key"),
            "{message}"
        );
        assert_eq!(error.category(), ErrorCategory::Environment);
    }

    #[test]
    fn wrapped_field_error_is_untrusted() {
        let inner = KeyringError::InvalidName {
            name: "a b".into(),
            reason: "contains ' '",
        };
        assert_eq!(inner.category(), ErrorCategory::CallerMistake);
        let wrapped = inner.in_field("certificate", "name");
        assert_eq!(wrapped.category(), ErrorCategory::UntrustedInput);
    }

    #[test]
    fn messages_start_lowercase() {
        let samples = [
            KeyringError::UnknownIdentity { name: "x".into() },
            KeyringError::BadSignature {
                what: "trust bundle version 3".into(),
            },
            KeyringError::InvalidTopic {
                topic: "a/+".into(),
                reason: "contains '+'",
            },
        ];
        for error in samples {
            let message = error.to_string();
            let first = message.chars().next().unwrap();
            assert!(!first.is_uppercase(), "{message}");
            assert!(!message.ends_with('.'), "{message}");
        }
    }
}
