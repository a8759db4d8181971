//! X25519 for the grant handshakes, as a snow `CryptoResolver` that skips
//! the public key derivation snow would do for a static key whose public
//! half the caller already has.
//!
//! snow 0.10 calls `Dh::set` with the bytes given to
//! `Builder::local_private_key`, and its default 25519 implementation then
//! derives the public key, which costs one base-point multiplication per
//! handshake. [`StaticKeyResolver`] hands snow an [`X25519Dh`] that takes
//! the public key from a [`StaticKeypair`] instead when `set` receives that
//! pair's private key. Hash, cipher and randomness stay snow's defaults.
//!
//! Every X25519 scalar multiplication done here is counted (see
//! [`x25519_operation_count`]).

use std::sync::atomic::{AtomicU64, Ordering};

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::keys::StaticKeypair;
use crate::limits::KEY_LEN;

/// X25519 scalar multiplications done by [`X25519Dh`] in this process.
static X25519_OPERATIONS: AtomicU64 = AtomicU64::new(0);

/// Returns how many X25519 scalar multiplications [`X25519Dh`] has done in
/// this process: one per public key derived in `set`, one per ephemeral key
/// pair drawn in `generate`, and one per `dh`. Reusing the public half of
/// the resolver's static key pair costs nothing and is not counted.
pub(crate) fn x25519_operation_count() -> u64 {
    X25519_OPERATIONS.load(Ordering::Relaxed)
}

fn count_operation() {
    X25519_OPERATIONS.fetch_add(1, Ordering::Relaxed);
}

/// A snow resolver for handshakes whose local static key is one
/// [`StaticKeypair`]. It resolves only `25519` for Diffie-Hellman, so
/// building a handshake with any other DH choice fails.
pub(crate) struct StaticKeyResolver {
    keypair: StaticKeypair,
    default: DefaultResolver,
}

impl StaticKeyResolver {
    /// Creates a resolver whose X25519 reuses `keypair`'s public key.
    pub(crate) fn new(keypair: StaticKeypair) -> Self {
        Self {
            keypair,
            default: DefaultResolver,
        }
    }
}

impl CryptoResolver for StaticKeyResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        self.default.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519Dh::new(self.keypair.clone()))),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        self.default.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        self.default.resolve_cipher(choice)
    }
}

/// One X25519 key pair of a handshake (its static or its ephemeral key).
///
/// Every field zeroizes its secret bytes on drop. The type has no `Debug`.
pub(crate) struct X25519Dh {
    /// Static key pair whose public half `set` reuses.
    known: StaticKeypair,
    private: StaticSecret,
    public: PublicKey,
}

impl X25519Dh {
    fn new(known: StaticKeypair) -> Self {
        // snow sets or generates the key before it reads either half, so the
        // all-zero placeholder is never used.
        Self {
            known,
            private: StaticSecret::from([0; KEY_LEN]),
            public: PublicKey::from([0; KEY_LEN]),
        }
    }

    /// Stores a private key and derives its public key (RFC 7748
    /// clamping happens inside each multiplication, not on the stored bytes).
    fn set_and_derive(&mut self, private: StaticSecret) {
        count_operation();
        self.public = PublicKey::from(&private);
        self.private = private;
    }
}

impl Dh for X25519Dh {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    /// Stores `private` and takes its public key from the known pair when
    /// the two secrets are equal, or derives it otherwise.
    ///
    /// # Panics
    /// Panics unless `private` is `KEY_LEN` bytes long, because the trait
    /// method cannot return an error. grant.rs passes only `[u8; KEY_LEN]`.
    fn set(&mut self, private: &[u8]) {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(private);

        // NOTE: StaticKeypair::new does not check that its halves match, and a
        // check here would cost the multiplication this type saves. The peer
        // still rejects a mismatched pair, because Noise K hashes this public
        // key while es and ss use the private key. Only a claimed key that the
        // peer trusts and that differs from the true key by a low-order point
        // (cancelled by clamping) passes, and it works only for the owner.
        if bool::from(bytes.as_slice().ct_eq(self.known.secret().as_slice())) {
            self.private = StaticSecret::from(*bytes);
            self.public = PublicKey::from(*self.known.public());
        } else {
            self.set_and_derive(StaticSecret::from(*bytes));
        }
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rng.try_fill_bytes(bytes.as_mut_slice())?;
        self.set_and_derive(StaticSecret::from(*bytes));
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        self.public.as_bytes()
    }

    fn privkey(&self) -> &[u8] {
        self.private.as_bytes()
    }

    /// Computes X25519 with the private key as scalar. Like snow's default
    /// implementation, it returns the all-zero result of a low-order
    /// `public` instead of an error, so the two agree on every 32-byte key.
    fn dh(&self, public: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let public: [u8; KEY_LEN] = public
            .get(..KEY_LEN)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let output = out.get_mut(..KEY_LEN).ok_or(snow::Error::Dh)?;

        count_operation();
        let shared = self.private.diffie_hellman(&PublicKey::from(public));
        output.copy_from_slice(shared.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snow `Random` that returns the same byte over and over.
    struct RepeatedByte(u8);

    impl Random for RepeatedByte {
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
            dest.fill(self.0);
            Ok(())
        }
    }

    fn derived_public(secret: [u8; KEY_LEN]) -> [u8; KEY_LEN] {
        PublicKey::from(&StaticSecret::from(secret)).to_bytes()
    }

    fn hex_key(text: &str) -> [u8; KEY_LEN] {
        hex::decode(text).unwrap().try_into().unwrap()
    }

    #[test]
    fn set_reuses_known_public_key() {
        // The public half is deliberately wrong, so a derived key would differ.
        let secret = [3u8; KEY_LEN];
        let claimed_public = [9u8; KEY_LEN];
        let mut dh = X25519Dh::new(StaticKeypair::new(secret, claimed_public));

        dh.set(&secret);

        assert_eq!(dh.pubkey(), claimed_public.as_slice());
        assert_eq!(dh.privkey(), secret.as_slice());
    }

    #[test]
    fn set_derives_public_key_of_other_secret() {
        let known_secret = [3u8; KEY_LEN];
        let other_secret = [4u8; KEY_LEN];
        let mut dh = X25519Dh::new(StaticKeypair::new(known_secret, [9u8; KEY_LEN]));

        dh.set(&other_secret);

        assert_eq!(dh.pubkey(), derived_public(other_secret).as_slice());
        assert_eq!(dh.privkey(), other_secret.as_slice());
    }

    #[test]
    fn generate_draws_from_snow_rng() {
        let keypair = StaticKeypair::new([3u8; KEY_LEN], derived_public([3u8; KEY_LEN]));
        let mut dh = X25519Dh::new(keypair);

        dh.generate(&mut RepeatedByte(0x42)).unwrap();

        assert_eq!(dh.privkey(), [0x42u8; KEY_LEN].as_slice());
        assert_eq!(dh.pubkey(), derived_public([0x42u8; KEY_LEN]).as_slice());
    }

    #[test]
    fn dh_matches_rfc7748_vector() {
        // Alice's and Bob's key pairs and their shared secret from the
        // X25519 test vectors of RFC 7748, section 6.1.
        let alice_secret =
            hex_key("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let alice_public =
            hex_key("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let bob_secret =
            hex_key("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        let bob_public =
            hex_key("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let shared = hex_key("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");

        let mut alice = X25519Dh::new(StaticKeypair::new(alice_secret, alice_public));
        alice.set(&alice_secret);
        let mut bob = X25519Dh::new(StaticKeypair::new([0u8; KEY_LEN], [0u8; KEY_LEN]));
        bob.set(&bob_secret);

        assert_eq!(bob.pubkey(), bob_public.as_slice(), "derived public key");
        let mut alice_output = [0u8; KEY_LEN];
        alice.dh(&bob_public, &mut alice_output).unwrap();
        assert_eq!(alice_output, shared, "Alice's shared secret");
        let mut bob_output = [0u8; KEY_LEN];
        bob.dh(&alice_public, &mut bob_output).unwrap();
        assert_eq!(bob_output, shared, "Bob's shared secret");
    }

    #[test]
    fn dh_rejects_short_public_key() {
        let mut dh = X25519Dh::new(StaticKeypair::new([3u8; KEY_LEN], [9u8; KEY_LEN]));
        dh.set(&[3u8; KEY_LEN]);
        let mut output = [0u8; KEY_LEN];

        let result = dh.dh(&[1u8; KEY_LEN - 1], &mut output);

        assert!(matches!(result, Err(snow::Error::Dh)), "{result:?}");
    }

    #[test]
    fn resolver_supports_only_25519() {
        let resolver = StaticKeyResolver::new(StaticKeypair::new([3u8; KEY_LEN], [9u8; KEY_LEN]));

        assert!(resolver.resolve_dh(&DHChoice::Curve25519).is_some());
        assert!(resolver.resolve_dh(&DHChoice::Curve448).is_none());
    }
}
