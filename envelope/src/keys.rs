//! Key types. Secrets zeroize on drop and never show their bytes in `Debug`.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::limits::KEY_LEN;

/// A 32-byte symmetric key (an audience key or an origin key).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SymmetricKey([u8; KEY_LEN]);

impl SymmetricKey {
    /// Wraps key bytes, for example from a CSPRNG.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Returns the key bytes. Callers must not log or persist them.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl PartialEq for SymmetricKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SymmetricKey {}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SymmetricKey(<redacted>)")
    }
}

/// A service's X25519 static key pair, as the Noise handshakes use it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StaticKeypair {
    secret: [u8; KEY_LEN],
    public: [u8; KEY_LEN],
}

impl StaticKeypair {
    /// Wraps a secret key and its public key. The caller (the keyring)
    /// derives the public key and guarantees that the two belong together.
    pub fn new(secret: [u8; KEY_LEN], public: [u8; KEY_LEN]) -> Self {
        Self { secret, public }
    }

    /// Returns the public key.
    pub fn public(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    pub(crate) fn secret(&self) -> &[u8; KEY_LEN] {
        &self.secret
    }
}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("secret", &"<redacted>")
            .field("public", &crate::short_hex(&self.public))
            .finish()
    }
}

/// Key material a grant hands one recipient for one (sender, session, epoch): the
/// audience key shared by every recipient, the origin key shared only with
/// this recipient, and this recipient's slot among the origin tags.
#[derive(Clone, PartialEq, Eq)]
pub struct EpochKeys {
    /// Key of the body AEAD, shared by the whole audience.
    pub audience_key: SymmetricKey,
    /// Key of this recipient's origin tag, shared only by the publisher and
    /// this recipient.
    pub origin_key: SymmetricKey,
    /// Index of this recipient's origin tag.
    pub slot: u16,
    /// Number of recipients of the epoch.
    pub audience_size: u16,
}

impl fmt::Debug for EpochKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochKeys")
            .field("audience_key", &self.audience_key)
            .field("origin_key", &self.origin_key)
            .field("slot", &self.slot)
            .field("audience_size", &self.audience_size)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let secret = [0xA7u8; KEY_LEN];
        let hex: String = secret.iter().map(|byte| format!("{byte:02x}")).collect();
        let keys = EpochKeys {
            audience_key: SymmetricKey::from_bytes(secret),
            origin_key: SymmetricKey::from_bytes(secret),
            slot: 0,
            audience_size: 1,
        };
        let pair = StaticKeypair::new(secret, [1; KEY_LEN]);
        for text in [
            format!("{keys:?}"),
            format!("{pair:?}"),
            format!("{:?}", keys.audience_key),
        ] {
            assert!(!text.contains(&hex[..16]), "{text}");
            assert!(!text.contains("167, 167"), "{text}");
            assert!(text.contains("redacted"), "{text}");
        }
    }
}
