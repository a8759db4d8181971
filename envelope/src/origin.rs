//! Origin tags: what lets each recipient of a multi-recipient message check
//! that the publisher sealed it, not another member of the audience.
//!
//! The publisher hashes the associated data and the whole ciphertext once
//! with SHA-256, then gives each recipient the first 16 bytes of
//! HMAC-SHA-256 of that digest under the recipient's own origin key. Both
//! run through ring, which uses the CPU's SHA extensions when it has them
//! (x86_64 SHA-NI, Armv8 SHA-2), so a default build is fast.

use ring::digest::{Context, SHA256};
use ring::hmac;

use crate::keys::SymmetricKey;
use crate::limits::ORIGIN_TAG_LEN;

/// Length of the origin digest: a SHA-256 output.
pub(crate) const ORIGIN_DIGEST_LEN: usize = 32;

/// Returns SHA-256(associated data || ciphertext).
pub(crate) fn origin_digest(associated_data: &[u8], ciphertext: &[u8]) -> [u8; ORIGIN_DIGEST_LEN] {
    let mut context = Context::new(&SHA256);
    context.update(associated_data);
    context.update(ciphertext);
    let mut out = [0u8; ORIGIN_DIGEST_LEN];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// One recipient's origin key, ready to tag digests. ring computes the
/// HMAC key schedule once here instead of on every tag.
///
/// NOTE: ring keeps its own copy of the key schedule and does not zeroize
/// it on drop; the `SymmetricKey` it was made from is zeroized.
pub(crate) struct OriginKey {
    key: hmac::Key,
}

impl std::fmt::Debug for OriginKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginKey(<redacted>)")
    }
}

impl OriginKey {
    pub(crate) fn new(key: &SymmetricKey) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key.expose_secret()),
        }
    }

    /// Returns the first 16 bytes of HMAC-SHA-256(origin key, digest).
    pub(crate) fn tag(&self, digest: &[u8; ORIGIN_DIGEST_LEN]) -> [u8; ORIGIN_TAG_LEN] {
        let full = hmac::sign(&self.key, digest);
        let mut tag = [0u8; ORIGIN_TAG_LEN];
        tag.copy_from_slice(&full.as_ref()[..ORIGIN_TAG_LEN]);
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_sha256_of_the_concatenation() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1, fed in two parts.
        assert_eq!(
            hex::encode(origin_digest(b"a", b"bc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tag_is_truncated_hmac_sha256() {
        // Computed independently with Python's hmac module:
        // hmac.new(b"\x0b" * 32, b"H" * 32, hashlib.sha256), first 16 bytes.
        let key = OriginKey::new(&SymmetricKey::from_bytes([0x0b; 32]));
        assert_eq!(
            hex::encode(key.tag(&[b'H'; ORIGIN_DIGEST_LEN])),
            "621a8e8de52a70c4368a11569701d83b"
        );
    }
}
