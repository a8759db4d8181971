//! The body AEAD: ChaCha20-Poly1305 (RFC 8439) through ring.
//!
//! ring dispatches at run time to its assembly for the CPU (AVX2 and
//! AVX-512 on x86_64), so a default `cargo build` is fast without any
//! RUSTFLAGS. The RustCrypto `chacha20poly1305` crate, also measured in
//! `benches/seal_open.rs`, reaches that speed only when built for the
//! native CPU.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

use crate::keys::SymmetricKey;
use crate::limits::AEAD_TAG_LEN;

/// The audience key of one epoch, ready to seal and open.
///
/// NOTE: ring keeps its own copy of the key and does not zeroize it on
/// drop; the `SymmetricKey` it was made from is zeroized.
pub(crate) struct AudienceCipher {
    key: LessSafeKey,
}

impl std::fmt::Debug for AudienceCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AudienceCipher(<redacted>)")
    }
}

/// Builds the 96-bit nonce: the epoch (32 bits) then the sequence number (64 bits),
/// both big-endian. Keys are fresh per epoch and sequence numbers never
/// repeat within one, so a nonce is never reused under a key.
fn nonce(epoch: u32, sequence: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&epoch.to_be_bytes());
    bytes[4..].copy_from_slice(&sequence.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

impl AudienceCipher {
    pub(crate) fn new(key: &SymmetricKey) -> Self {
        // A 32-byte key is always valid for ChaCha20-Poly1305.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key.expose_secret())
            .expect("32-byte ChaCha20-Poly1305 key");
        Self {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Encrypts `buffer` in place and returns the tag.
    pub(crate) fn seal(
        &self,
        epoch: u32,
        sequence: u64,
        associated_data: &[u8],
        buffer: &mut [u8],
    ) -> [u8; AEAD_TAG_LEN] {
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(epoch, sequence), Aad::from(associated_data), buffer)
            // ring fails only for inputs beyond ChaCha20's 256 GiB block
            // counter range, far above MAX_SEALED_SIZE.
            .expect("body within the ChaCha20 length limit");
        let mut out = [0u8; AEAD_TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Decrypts ciphertext followed by its tag, or returns `None` when the
    /// tag does not verify.
    pub(crate) fn open(
        &self,
        epoch: u32,
        sequence: u64,
        associated_data: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Option<Vec<u8>> {
        let mut buffer = ciphertext_and_tag.to_vec();
        let len = self
            .key
            .open_in_place(
                nonce(epoch, sequence),
                Aad::from(associated_data),
                &mut buffer,
            )
            .ok()?
            .len();
        buffer.truncate(len);
        Some(buffer)
    }
}
