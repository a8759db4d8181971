//! The X25519 static secret of a service identity.

use std::fmt;

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

/// Length in bytes of X25519 secret and public keys.
pub const X25519_KEY_LEN: usize = 32;

/// An X25519 static secret key (32 bytes), the Noise static key of a service.
///
/// The bytes are zeroized when the value is dropped, and `Debug` prints
/// `StaticSecret(<redacted>)`. Clones are independent copies that are
/// zeroized on drop as well.
#[derive(Clone)]
pub struct StaticSecret(x25519_dalek::StaticSecret);

impl StaticSecret {
    /// Draws a new secret from `rng`.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        StaticSecret(x25519_dalek::StaticSecret::random_from_rng(rng))
    }

    /// Wraps existing secret bytes. The bytes are stored as given, and X25519
    /// clamps them when the key is used. The caller should zeroize its own
    /// copy of `bytes`.
    pub fn from_bytes(bytes: [u8; X25519_KEY_LEN]) -> Self {
        StaticSecret(x25519_dalek::StaticSecret::from(bytes))
    }

    /// Computes the X25519 public key.
    pub fn public_key(&self) -> [u8; X25519_KEY_LEN] {
        x25519_dalek::PublicKey::from(&self.0).to_bytes()
    }

    /// Copies the secret bytes into a buffer that is zeroized on drop, for
    /// handing the key to a Noise implementation.
    pub fn to_bytes(&self) -> Zeroizing<[u8; X25519_KEY_LEN]> {
        Zeroizing::new(self.0.to_bytes())
    }
}

impl fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn debug_hides_key_bytes() {
        let bytes = [0x5a; X25519_KEY_LEN];
        let secret = StaticSecret::from_bytes(bytes);
        let shown = format!("{secret:?} {secret:#?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains(&hex::encode(bytes)), "{shown}");
        assert!(!shown.contains(&base64::engine::general_purpose::STANDARD.encode(bytes)));
        assert!(!shown.contains("90"), "decimal byte value leaked: {shown}");
    }

    #[test]
    fn bytes_round_trip() {
        let bytes: [u8; X25519_KEY_LEN] = std::array::from_fn(|index| index as u8);
        let secret = StaticSecret::from_bytes(bytes);
        assert_eq!(*secret.to_bytes(), bytes);
    }

    #[test]
    fn public_key_matches_rfc7748_vector() {
        // Alice's key pair from the X25519 test vectors of RFC 7748.
        let secret =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap();
        let public =
            hex::decode("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
                .unwrap();
        let secret = StaticSecret::from_bytes(secret.try_into().unwrap());
        assert_eq!(secret.public_key().to_vec(), public);
    }

    #[test]
    fn generated_keys_differ() {
        let first = StaticSecret::generate(&mut rand_core::OsRng);
        let second = StaticSecret::generate(&mut rand_core::OsRng);
        assert_ne!(first.public_key(), second.public_key());
    }
}
