//! The deployment certificate authority (CA).
//!
//! # CA directory
//!
//! | file | mode | content |
//! |---|---|---|
//! | `ca.key` | 0600 | `{"ed25519_secret": BASE64}`, the 32-byte Ed25519 seed |
//! | `ca.pub` | 0644 | `{"ed25519_public": BASE64}` |
//! | `state.json` | 0644 | `{"next_serial": N, "bundle_version": N}` |
//!
//! `next_serial` is the serial of the next certificate to issue and starts
//! at 1. `bundle_version` is the version of the last signed trust bundle and
//! starts at 0, so the first bundle has version 1. Both are saved before the
//! certificate or bundle is returned, so a serial or version is never handed
//! out twice by one CA directory.
//!
//! NOTE: two processes that open the same CA directory at once can issue the
//! same serial, because the state file is not locked.

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::bundle::TrustBundle;
use crate::cert::{Certificate, Fingerprint, UnsignedCertificate, SIGNATURE_LEN};
use crate::encoding::{
    decode_base64_array, decode_base64_secret, encode_base64, encode_base64_secret, parse_json,
    parse_secret_json, secret_json,
};
use crate::error::{KeyringError, Result};
use crate::files::{
    create_private_dir, read_public_file, read_secret_file, write_new_secret_file,
    write_public_file,
};
use crate::identity::{ServiceName, CA_PUBLIC_FILE, X25519_KEY_LEN};

/// File name of the CA secret key in a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// File name of the serial and bundle version counters in a CA directory.
pub const CA_STATE_FILE: &str = "state.json";

/// Length of an Ed25519 public key or seed in bytes.
pub const ED25519_KEY_LEN: usize = 32;

/// Maximum size in bytes of `ca.pub` and `state.json`. Both are under 100
/// bytes, so a larger file is not one of them.
const MAX_SMALL_FILE_BYTES: usize = 4096;

const CA_PUBLIC_WHAT: &str = "CA public key";
const CA_KEY_WHAT: &str = "CA key file";
const CA_STATE_WHAT: &str = "CA state file";

/// The CA's Ed25519 public key, the trust anchor of a deployment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CaPublicKey(VerifyingKey);

impl CaPublicKey {
    /// Parses a 32-byte Ed25519 public key.
    ///
    /// # Errors
    ///
    /// [`KeyringError::InvalidCaKey`] if the bytes are not a point on the
    /// curve or are a small-order point, under which forged signatures would
    /// verify.
    pub fn from_bytes(bytes: &[u8; ED25519_KEY_LEN]) -> Result<Self> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyringError::InvalidCaKey {
            reason: "the bytes are not an Ed25519 curve point".to_string(),
        })?;
        if key.is_weak() {
            return Err(KeyringError::InvalidCaKey {
                reason: "the key is a small-order point".to_string(),
            });
        }
        Ok(CaPublicKey(key))
    }

    /// Returns the 32 key bytes.
    pub fn to_bytes(&self) -> [u8; ED25519_KEY_LEN] {
        self.0.to_bytes()
    }

    /// Parses the JSON form `{"ed25519_public": BASE64}`.
    ///
    /// # Errors
    ///
    /// [`KeyringError::MalformedJson`], [`KeyringError::InvalidEncoding`],
    /// [`KeyringError::InvalidLength`] or [`KeyringError::InvalidCaKey`].
    pub fn from_json(input: &[u8]) -> Result<Self> {
        let file: CaPublicFile = parse_json(CA_PUBLIC_WHAT, input, MAX_SMALL_FILE_BYTES)?;
        let bytes = decode_base64_array(CA_PUBLIC_WHAT, "ed25519_public", &file.ed25519_public)?;
        CaPublicKey::from_bytes(&bytes)
    }

    /// Encodes the JSON form `{"ed25519_public": BASE64}`.
    pub fn to_json(&self) -> String {
        let file = CaPublicFile {
            ed25519_public: encode_base64(&self.to_bytes()),
        };
        let mut text = serde_json::to_string_pretty(&file)
            .expect("a struct of one string always serializes to JSON");
        text.push('\n');
        text
    }

    /// Reads a `ca.pub` file.
    ///
    /// # Errors
    ///
    /// [`KeyringError::Io`] or the errors of [`CaPublicKey::from_json`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_public_file(path, CA_PUBLIC_WHAT, MAX_SMALL_FILE_BYTES)?;
        CaPublicKey::from_json(&bytes)
    }

    /// Writes a `ca.pub` file atomically with mode 0644.
    ///
    /// # Errors
    ///
    /// [`KeyringError::Io`].
    pub fn save(&self, path: &Path) -> Result<()> {
        write_public_file(path, self.to_json().as_bytes())
    }

    /// Checks an Ed25519 signature with the strict rules of `verify_strict`,
    /// which reject small-order `R` values and non-canonical encodings.
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        let signature = Signature::from_bytes(signature);
        self.0.verify_strict(message, &signature).is_ok()
    }
}

impl fmt::Debug for CaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaPublicKey({})", hex::encode(self.to_bytes()))
    }
}

/// The deployment CA: an Ed25519 signing key and its counters.
///
/// The signing key is zeroized on drop and `Debug` never shows it.
pub struct CertificateAuthority {
    signing_key: SigningKey,
    public: CaPublicKey,
    /// Directory of the saved counters, or `None` for an in-memory CA.
    dir: Option<PathBuf>,
    state: CaState,
}

impl CertificateAuthority {
    /// Creates a new CA in `dir`, creating `dir` with mode 0700 if needed.
    ///
    /// # Errors
    ///
    /// [`KeyringError::CaAlreadyExists`] if `dir/ca.key` exists, so an
    /// existing CA is never overwritten. [`KeyringError::Io`] if a file
    /// cannot be written.
    pub fn init(dir: &Path, rng: &mut (impl RngCore + CryptoRng)) -> Result<Self> {
        create_private_dir(dir)?;
        let key_path = dir.join(CA_KEY_FILE);
        let signing_key = SigningKey::generate(rng);

        let seed_base64 = encode_base64_secret(signing_key.as_bytes());
        let key_file = CaKeyFileOut {
            ed25519_secret: &seed_base64,
        };
        write_new_secret_file(&key_path, &secret_json(&key_file)).map_err(|error| match error {
            KeyringError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                KeyringError::CaAlreadyExists {
                    path: key_path.clone(),
                }
            }
            other => other,
        })?;

        let authority = CertificateAuthority::from_signing_key(
            signing_key,
            Some(dir.to_path_buf()),
            CaState::NEW,
        )?;
        authority.public.save(&dir.join(CA_PUBLIC_FILE))?;
        authority.save_state(&authority.state)?;
        Ok(authority)
    }

    /// Opens the CA in `dir`.
    ///
    /// # Errors
    ///
    /// [`KeyringError::KeyFilePermissions`] if `ca.key` is accessible to
    /// group or others, [`KeyringError::CaPublicKeyMismatch`] if `ca.pub` does not
    /// belong to `ca.key`, parse errors of the files, or [`KeyringError::Io`].
    pub fn open(dir: &Path) -> Result<Self> {
        let key_bytes = read_secret_file(&dir.join(CA_KEY_FILE))?;
        let key_file: CaKeyFileIn = parse_secret_json(CA_KEY_WHAT, &key_bytes)?;
        let seed = decode_base64_secret::<ED25519_KEY_LEN>(
            CA_KEY_WHAT,
            "ed25519_secret",
            &key_file.ed25519_secret,
        )?;
        let signing_key = SigningKey::from_bytes(&seed);

        let state_bytes = read_public_file(
            &dir.join(CA_STATE_FILE),
            CA_STATE_WHAT,
            MAX_SMALL_FILE_BYTES,
        )?;
        let state: CaState = parse_json(CA_STATE_WHAT, &state_bytes, MAX_SMALL_FILE_BYTES)?;

        let authority =
            CertificateAuthority::from_signing_key(signing_key, Some(dir.to_path_buf()), state)?;
        let stored_public = CaPublicKey::load(&dir.join(CA_PUBLIC_FILE))?;
        if stored_public != authority.public {
            return Err(KeyringError::CaPublicKeyMismatch {
                path: dir.join(CA_PUBLIC_FILE),
            });
        }
        Ok(authority)
    }

    /// Creates a CA that lives only in memory, for tests and demos. Its
    /// counters start as in a new CA directory and are never saved.
    pub fn in_memory(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let signing_key = SigningKey::generate(rng);
        let public = CaPublicKey(signing_key.verifying_key());
        CertificateAuthority {
            signing_key,
            public,
            dir: None,
            state: CaState::NEW,
        }
    }

    fn from_signing_key(
        signing_key: SigningKey,
        dir: Option<PathBuf>,
        state: CaState,
    ) -> Result<Self> {
        let public = CaPublicKey::from_bytes(&signing_key.verifying_key().to_bytes())?;
        Ok(CertificateAuthority {
            signing_key,
            public,
            dir,
            state,
        })
    }

    #[cfg(test)]
    pub(crate) fn signing_key_for_tests(&self) -> &SigningKey {
        &self.signing_key
    }

    /// The CA's public key, to distribute as `ca.pub`.
    pub fn public_key(&self) -> &CaPublicKey {
        &self.public
    }

    /// Serial number that the next certificate will get.
    pub fn next_serial(&self) -> u64 {
        self.state.next_serial
    }

    /// Version of the last signed trust bundle, 0 if none was signed.
    pub fn bundle_version(&self) -> u64 {
        self.state.bundle_version
    }

    /// Issues a certificate with the next serial number and saves the
    /// incremented counter before returning it.
    ///
    /// `not_before` and `not_after` are Unix seconds. The certificate is
    /// valid for `not_before <= now < not_after`.
    ///
    /// # Errors
    ///
    /// [`KeyringError::InvalidFilter`], [`KeyringError::TooManyFilters`] or
    /// [`KeyringError::InvalidValidity`] for a bad request,
    /// [`KeyringError::CounterExhausted`], or [`KeyringError::Io`] if the
    /// counter cannot be saved, in which case no certificate is returned.
    pub fn issue(
        &mut self,
        name: ServiceName,
        x25519_public: [u8; X25519_KEY_LEN],
        publish: Vec<String>,
        subscribe: Vec<String>,
        not_before: u64,
        not_after: u64,
    ) -> Result<Certificate> {
        let serial = self.state.next_serial;
        let next_serial = serial
            .checked_add(1)
            .ok_or(KeyringError::CounterExhausted { counter: "serial" })?;

        let unsigned = UnsignedCertificate {
            serial,
            name,
            x25519_public,
            publish,
            subscribe,
            not_before,
            not_after,
        };
        let certificate = Certificate::sign(unsigned, &self.signing_key)?;

        self.commit_state(CaState {
            next_serial,
            ..self.state
        })?;
        Ok(certificate)
    }

    /// Signs a trust bundle with version `bundle_version() + 1` and saves the
    /// new version before returning the bundle.
    ///
    /// The bundle is verified before it is returned, so every certificate
    /// must be signed by this CA and no two unrevoked certificates may share
    /// a name. `issued_at` is Unix seconds.
    ///
    /// # Errors
    ///
    /// [`KeyringError::BundleTooLarge`], the errors of
    /// [`TrustBundle::verify`], [`KeyringError::CounterExhausted`], or
    /// [`KeyringError::Io`] if the version cannot be saved.
    pub fn sign_bundle(
        &mut self,
        certificates: Vec<Certificate>,
        revoked_fingerprints: Vec<Fingerprint>,
        issued_at: u64,
    ) -> Result<TrustBundle> {
        let version =
            self.state
                .bundle_version
                .checked_add(1)
                .ok_or(KeyringError::CounterExhausted {
                    counter: "bundle version",
                })?;

        let bundle = TrustBundle::sign(
            version,
            issued_at,
            certificates,
            revoked_fingerprints,
            &self.signing_key,
        )?;
        bundle.verify(&self.public)?;

        self.commit_state(CaState {
            bundle_version: version,
            ..self.state
        })?;
        Ok(bundle)
    }

    /// Saves `state` (for a CA directory) and then adopts it, so memory never
    /// runs ahead of the file.
    fn commit_state(&mut self, state: CaState) -> Result<()> {
        self.save_state(&state)?;
        self.state = state;
        Ok(())
    }

    fn save_state(&self, state: &CaState) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let mut text =
            serde_json::to_string_pretty(state).expect("two integers always serialize to JSON");
        text.push('\n');
        write_public_file(&dir.join(CA_STATE_FILE), text.as_bytes())
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("public", &self.public)
            .field("signing_key", &"<redacted>")
            .field("dir", &self.dir)
            .field("next_serial", &self.state.next_serial)
            .field("bundle_version", &self.state.bundle_version)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaState {
    next_serial: u64,
    bundle_version: u64,
}

impl CaState {
    const NEW: CaState = CaState {
        next_serial: 1,
        bundle_version: 0,
    };
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaPublicFile {
    ed25519_public: String,
}

#[derive(Serialize)]
struct CaKeyFileOut<'a> {
    ed25519_secret: &'a str,
}

#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct CaKeyFileIn {
    ed25519_secret: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::StaticSecret;
    use base64::Engine;
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;

    const NOW: u64 = 1_700_000_000;

    fn issue(ca: &mut CertificateAuthority, name: &str) -> Certificate {
        let secret = StaticSecret::generate(&mut rand_core::OsRng);
        ca.issue(
            ServiceName::new(name).unwrap(),
            secret.public_key(),
            vec!["edgex/#".into()],
            vec!["edgex/#".into()],
            NOW,
            NOW + 60,
        )
        .unwrap()
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn init_writes_directory() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let ca = CertificateAuthority::init(&ca_dir, &mut rand_core::OsRng).unwrap();

        assert_eq!(mode_of(&ca_dir.join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode_of(&ca_dir.join(CA_PUBLIC_FILE)), 0o644);
        assert_eq!(mode_of(&ca_dir), 0o700);
        assert_eq!(
            &CaPublicKey::load(&ca_dir.join(CA_PUBLIC_FILE)).unwrap(),
            ca.public_key()
        );

        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(ca_dir.join(CA_STATE_FILE)).unwrap()).unwrap();
        assert_eq!(
            state,
            serde_json::json!({"next_serial": 1, "bundle_version": 0})
        );
    }

    #[test]
    fn init_refuses_existing_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = CertificateAuthority::init(dir.path(), &mut rand_core::OsRng).unwrap();
        let key_before = fs::read(dir.path().join(CA_KEY_FILE)).unwrap();

        let error = CertificateAuthority::init(dir.path(), &mut rand_core::OsRng).unwrap_err();
        assert!(
            matches!(error, KeyringError::CaAlreadyExists { .. }),
            "{error:?}"
        );
        assert_eq!(fs::read(dir.path().join(CA_KEY_FILE)).unwrap(), key_before);

        let reopened = CertificateAuthority::open(dir.path()).unwrap();
        assert_eq!(reopened.public_key(), first.public_key());
    }

    #[test]
    fn serial_persists_across_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateAuthority::init(dir.path(), &mut rand_core::OsRng).unwrap();
        assert_eq!(issue(&mut ca, "a").serial(), 1);
        assert_eq!(issue(&mut ca, "b").serial(), 2);
        drop(ca);

        let mut reopened = CertificateAuthority::open(dir.path()).unwrap();
        assert_eq!(reopened.next_serial(), 3);
        let certificate = issue(&mut reopened, "c");
        assert_eq!(certificate.serial(), 3);
        assert!(certificate.verify(reopened.public_key(), NOW).is_ok());
    }

    #[test]
    fn failed_issue_keeps_serial() {
        let mut ca = CertificateAuthority::in_memory(&mut rand_core::OsRng);
        let result = ca.issue(
            ServiceName::new("a").unwrap(),
            [9; 32],
            vec!["bad+".into()],
            vec![],
            NOW,
            NOW + 1,
        );
        assert!(matches!(result, Err(KeyringError::InvalidFilter { .. })));
        assert_eq!(ca.next_serial(), 1);
    }

    #[test]
    fn bundle_version_persists_and_increments() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateAuthority::init(dir.path(), &mut rand_core::OsRng).unwrap();
        let certificate = issue(&mut ca, "a");

        let first = ca
            .sign_bundle(vec![certificate.clone()], vec![], NOW)
            .unwrap();
        assert_eq!(first.version(), 1);
        let second = ca.sign_bundle(vec![certificate], vec![], NOW + 1).unwrap();
        assert_eq!(second.version(), 2);
        drop(ca);

        let mut reopened = CertificateAuthority::open(dir.path()).unwrap();
        assert_eq!(reopened.bundle_version(), 2);
        let third = reopened.sign_bundle(vec![], vec![], NOW + 2).unwrap();
        assert_eq!(third.version(), 3);
        assert!(third.verify(reopened.public_key()).is_ok());
    }

    #[test]
    fn bundle_with_foreign_certificate_is_not_signed() {
        let mut ca = CertificateAuthority::in_memory(&mut rand_core::OsRng);
        let mut other = CertificateAuthority::in_memory(&mut rand_core::OsRng);
        let foreign = issue(&mut other, "a");

        let result = ca.sign_bundle(vec![foreign], vec![], NOW);
        assert!(matches!(result, Err(KeyringError::BadSignature { .. })));
        assert_eq!(ca.bundle_version(), 0);
    }

    #[test]
    fn open_rejects_group_readable_key() {
        let dir = tempfile::tempdir().unwrap();
        CertificateAuthority::init(dir.path(), &mut rand_core::OsRng).unwrap();
        let key_path = dir.path().join(CA_KEY_FILE);
        fs::set_permissions(&key_path, Permissions::from_mode(0o640)).unwrap();

        match CertificateAuthority::open(dir.path()) {
            Err(KeyringError::KeyFilePermissions { path, mode }) => {
                assert_eq!(path, key_path);
                assert_eq!(mode, 0o640);
            }
            other => panic!("expected a permission error, got {other:?}"),
        }
    }

    #[test]
    fn open_rejects_mismatched_public_key() {
        let dir = tempfile::tempdir().unwrap();
        CertificateAuthority::init(dir.path(), &mut rand_core::OsRng).unwrap();
        let other = CertificateAuthority::in_memory(&mut rand_core::OsRng);
        other
            .public_key()
            .save(&dir.path().join(CA_PUBLIC_FILE))
            .unwrap();

        assert!(matches!(
            CertificateAuthority::open(dir.path()),
            Err(KeyringError::CaPublicKeyMismatch { .. })
        ));
    }

    #[test]
    fn debug_hides_signing_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::init(dir.path(), &mut rand_core::OsRng).unwrap();
        let seed = *ca.signing_key.as_bytes();
        let shown = format!("{ca:?} {ca:#?}");

        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains(&hex::encode(seed)));
        assert!(!shown.contains(&base64::engine::general_purpose::STANDARD.encode(seed)));
        assert!(!shown.contains(&format!("{seed:?}")));
    }

    #[test]
    fn ca_public_json_round_trip() {
        let ca = CertificateAuthority::in_memory(&mut rand_core::OsRng);
        let json = ca.public_key().to_json();
        assert_eq!(
            &CaPublicKey::from_json(json.as_bytes()).unwrap(),
            ca.public_key()
        );

        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value.as_object().unwrap().len(), 1);
        assert!(value["ed25519_public"].is_string());
    }

    #[test]
    fn small_order_public_key_is_rejected() {
        // The encoding of the identity point, which has order 1.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert!(matches!(
            CaPublicKey::from_bytes(&identity_point),
            Err(KeyringError::InvalidCaKey { .. })
        ));
    }
}
