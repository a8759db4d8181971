//! Service identities: name, X25519 static secret and certificate, and the
//! identity directory that `sealbus issue --out ID_DIR` writes.
//!
//! # Identity directory
//!
//! | file | mode | content |
//! |---|---|---|
//! | `identity.key` | 0600 | `{"name": NAME, "x25519_secret": BASE64}` |
//! | `identity.cert` | 0644 | the certificate's JSON form ([`crate::cert`]) |
//! | `ca.pub` | 0644 | `{"ed25519_public": BASE64}`, the service's trust anchor |
//!
//! Base64 is the standard alphabet with padding. Each file is written
//! atomically. Loading rejects an `identity.key` that group or others can
//! read or write.

mod name;
mod secret;

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

pub use name::{ServiceName, MAX_NAME_LEN};
pub use secret::{StaticSecret, X25519_KEY_LEN};

use crate::ca::CaPublicKey;
use crate::cert::{Certificate, MAX_CERTIFICATE_JSON_BYTES};
use crate::encoding::{decode_base64_secret, encode_base64_secret, parse_secret_json, secret_json};
use crate::error::{KeyringError, Result};
use crate::files::{
    create_private_dir, read_public_file, read_secret_file, write_public_file, write_secret_file,
};

/// File name of the secret key in an identity directory.
pub const IDENTITY_KEY_FILE: &str = "identity.key";

/// File name of the certificate in an identity directory.
pub const IDENTITY_CERT_FILE: &str = "identity.cert";

/// File name of the CA public key in identity and CA directories.
pub const CA_PUBLIC_FILE: &str = "ca.pub";

const KEY_FILE_WHAT: &str = "identity key file";

/// A service identity: its name, X25519 static secret and CA certificate.
///
/// `Debug` shows the name and certificate but never the secret.
#[derive(Clone)]
pub struct Identity {
    name: ServiceName,
    secret: StaticSecret,
    certificate: Certificate,
}

impl Identity {
    /// Pairs a secret with its certificate.
    ///
    /// This does not verify the certificate's signature or validity. Check it
    /// with [`Certificate::verify`] against the CA key.
    ///
    /// # Errors
    ///
    /// [`KeyringError::KeyMismatch`] if the certificate certifies a different
    /// public key.
    pub fn new(secret: StaticSecret, certificate: Certificate) -> Result<Self> {
        if secret.public_key() != *certificate.x25519_public() {
            return Err(KeyringError::KeyMismatch {
                name: certificate.name().to_string(),
            });
        }
        Ok(Identity {
            name: certificate.name().clone(),
            secret,
            certificate,
        })
    }

    /// The identity's name, equal to the certificate's name.
    pub fn name(&self) -> &ServiceName {
        &self.name
    }

    /// The X25519 static secret.
    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    /// The CA certificate for this identity.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The X25519 public key, as certified.
    pub fn public_key(&self) -> [u8; X25519_KEY_LEN] {
        *self.certificate.x25519_public()
    }

    /// Writes `identity.key` (0600), `identity.cert` and `ca.pub` into `dir`,
    /// creating `dir` with mode 0700 if it is missing. Existing files are
    /// replaced.
    ///
    /// # Errors
    ///
    /// [`KeyringError::Io`] if a directory or file cannot be written.
    pub fn save(&self, dir: &Path, ca_public: &CaPublicKey) -> Result<()> {
        create_private_dir(dir)?;

        write_public_file(&dir.join(CA_PUBLIC_FILE), ca_public.to_json().as_bytes())?;
        write_public_file(
            &dir.join(IDENTITY_CERT_FILE),
            self.certificate.to_json_pretty().as_bytes(),
        )?;

        // The key goes last, so a directory with a key always has its certificate.
        let secret_bytes = self.secret.to_bytes();
        let secret_base64 = encode_base64_secret(&*secret_bytes);
        let file = KeyFileOut {
            name: self.name.as_str(),
            x25519_secret: &secret_base64,
        };
        write_secret_file(&dir.join(IDENTITY_KEY_FILE), &secret_json(&file))
    }

    /// Reads an identity directory written by [`Identity::save`].
    ///
    /// Checks that `identity.key` is not accessible to group or others, that
    /// its name equals the certificate's name and that its secret belongs to
    /// the certified public key. It does not verify the certificate against
    /// the CA. Use [`load_ca_public`] and [`Certificate::verify`] for that.
    ///
    /// # Errors
    ///
    /// [`KeyringError::KeyFilePermissions`] for a group- or world-accessible
    /// key file, [`KeyringError::NameMismatch`], [`KeyringError::KeyMismatch`],
    /// parse errors of the files, or [`KeyringError::Io`].
    pub fn load(dir: &Path) -> Result<Self> {
        let key_bytes = read_secret_file(&dir.join(IDENTITY_KEY_FILE))?;
        let key_file: KeyFileIn = parse_secret_json(KEY_FILE_WHAT, &key_bytes)?;
        let key_name = ServiceName::new(key_file.name.as_str())
            .map_err(|error| error.in_field(KEY_FILE_WHAT, "name"))?;
        let secret_bytes = decode_base64_secret::<X25519_KEY_LEN>(
            KEY_FILE_WHAT,
            "x25519_secret",
            &key_file.x25519_secret,
        )?;
        let secret = StaticSecret::from_bytes(*secret_bytes);

        let cert_bytes = read_public_file(
            &dir.join(IDENTITY_CERT_FILE),
            "certificate",
            MAX_CERTIFICATE_JSON_BYTES,
        )?;
        let certificate = Certificate::from_json(&cert_bytes)?;

        if &key_name != certificate.name() {
            return Err(KeyringError::NameMismatch {
                key_name: key_name.to_string(),
                certificate_name: certificate.name().to_string(),
            });
        }
        Identity::new(secret, certificate)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("secret", &self.secret)
            .field("certificate", &self.certificate)
            .finish()
    }
}

/// Reads `ca.pub` from an identity or CA directory.
///
/// # Errors
///
/// Parse errors of the file or [`KeyringError::Io`].
pub fn load_ca_public(dir: &Path) -> Result<CaPublicKey> {
    CaPublicKey::load(&dir.join(CA_PUBLIC_FILE))
}

#[derive(Serialize)]
struct KeyFileOut<'a> {
    name: &'a str,
    x25519_secret: &'a str,
}

#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct KeyFileIn {
    name: String,
    x25519_secret: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use base64::Engine;
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;

    const NOW: u64 = 1_700_000_000;

    fn issued_identity(name: &str) -> (Identity, CertificateAuthority) {
        let mut ca = CertificateAuthority::in_memory(&mut rand_core::OsRng);
        let secret = StaticSecret::generate(&mut rand_core::OsRng);
        let certificate = ca
            .issue(
                ServiceName::new(name).unwrap(),
                secret.public_key(),
                vec!["edgex/events/#".into()],
                vec![],
                NOW,
                NOW + 3600,
            )
            .unwrap();
        (Identity::new(secret, certificate).unwrap(), ca)
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let id_dir = dir.path().join("core-data");
        let (identity, ca) = issued_identity("core-data");
        identity.save(&id_dir, ca.public_key()).unwrap();

        let loaded = Identity::load(&id_dir).unwrap();
        assert_eq!(loaded.name(), identity.name());
        assert_eq!(loaded.certificate(), identity.certificate());
        assert_eq!(*loaded.secret().to_bytes(), *identity.secret().to_bytes());

        let ca_public = load_ca_public(&id_dir).unwrap();
        assert_eq!(&ca_public, ca.public_key());
        assert!(loaded.certificate().verify(&ca_public, NOW).is_ok());
    }

    #[test]
    fn saved_modes() {
        let dir = tempfile::tempdir().unwrap();
        let id_dir = dir.path().join("id");
        let (identity, ca) = issued_identity("core-data");
        identity.save(&id_dir, ca.public_key()).unwrap();

        assert_eq!(mode_of(&id_dir.join(IDENTITY_KEY_FILE)), 0o600);
        assert_eq!(mode_of(&id_dir.join(IDENTITY_CERT_FILE)), 0o644);
        assert_eq!(mode_of(&id_dir.join(CA_PUBLIC_FILE)), 0o644);
        assert_eq!(mode_of(&id_dir), 0o700);
    }

    #[test]
    fn key_file_format() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, ca) = issued_identity("core-data");
        identity.save(dir.path(), ca.public_key()).unwrap();

        let text = fs::read_to_string(dir.path().join(IDENTITY_KEY_FILE)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["name"], "core-data");
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(*identity.secret().to_bytes());
        assert_eq!(value["x25519_secret"], encoded.as_str());
        assert_eq!(value.as_object().unwrap().len(), 2);
    }

    #[test]
    fn world_readable_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, ca) = issued_identity("core-data");
        identity.save(dir.path(), ca.public_key()).unwrap();
        let key_path = dir.path().join(IDENTITY_KEY_FILE);
        fs::set_permissions(&key_path, Permissions::from_mode(0o644)).unwrap();

        let error = Identity::load(dir.path()).unwrap_err();
        match &error {
            KeyringError::KeyFilePermissions { path, mode } => {
                assert_eq!(path, &key_path);
                assert_eq!(*mode, 0o644);
            }
            other => panic!("expected a permission error, got {other:?}"),
        }
        let message = error.to_string();
        assert!(
            message.contains(&format!("chmod 600 {}", key_path.display())),
            "{message}"
        );
        assert!(message.contains("0644"), "{message}");
    }

    #[test]
    fn foreign_certificate_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, ca) = issued_identity("core-data");
        identity.save(dir.path(), ca.public_key()).unwrap();

        // Same name, but the certificate certifies another key.
        let (other, _) = issued_identity("core-data");
        write_public_file(
            &dir.path().join(IDENTITY_CERT_FILE),
            other.certificate().to_json().as_bytes(),
        )
        .unwrap();
        assert!(matches!(
            Identity::load(dir.path()),
            Err(KeyringError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn renamed_certificate_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, ca) = issued_identity("core-data");
        identity.save(dir.path(), ca.public_key()).unwrap();

        let (other, _) = issued_identity("core-command");
        write_public_file(
            &dir.path().join(IDENTITY_CERT_FILE),
            other.certificate().to_json().as_bytes(),
        )
        .unwrap();
        assert!(matches!(
            Identity::load(dir.path()),
            Err(KeyringError::NameMismatch { .. })
        ));
    }

    #[test]
    fn new_rejects_mismatched_key() {
        let (identity, _) = issued_identity("core-data");
        let other_secret = StaticSecret::generate(&mut rand_core::OsRng);
        let result = Identity::new(other_secret, identity.certificate().clone());
        assert!(matches!(result, Err(KeyringError::KeyMismatch { .. })));
    }

    #[test]
    fn malformed_key_file_is_rejected_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, ca) = issued_identity("core-data");
        identity.save(dir.path(), ca.public_key()).unwrap();

        let secret =
            base64::engine::general_purpose::STANDARD.encode(*identity.secret().to_bytes());
        let key_path = dir.path().join(IDENTITY_KEY_FILE);
        let bad =
            format!(r#"{{"name": "core-data", "x25519_secret": "{secret}", "x25519_secret2": 1}}"#);
        write_secret_file(&key_path, bad.as_bytes()).unwrap();

        let error = Identity::load(dir.path()).unwrap_err();
        assert!(
            matches!(error, KeyringError::MalformedJson { .. }),
            "{error:?}"
        );
        assert!(!error.to_string().contains(&secret));
        assert!(!format!("{error:?}").contains(&secret));
    }

    #[test]
    fn short_secret_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, ca) = issued_identity("core-data");
        identity.save(dir.path(), ca.public_key()).unwrap();
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 31]);
        let bad = format!(r#"{{"name": "core-data", "x25519_secret": "{short}"}}"#);
        write_secret_file(&dir.path().join(IDENTITY_KEY_FILE), bad.as_bytes()).unwrap();

        assert!(matches!(
            Identity::load(dir.path()),
            Err(KeyringError::InvalidLength {
                expected: 32,
                found: 31,
                ..
            })
        ));
    }

    #[test]
    fn missing_key_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let error = Identity::load(dir.path()).unwrap_err();
        assert!(matches!(error, KeyringError::Io { .. }));
        assert!(error.to_string().contains(IDENTITY_KEY_FILE));
    }

    #[test]
    fn debug_hides_secret() {
        let (identity, _) = issued_identity("core-data");
        let secret = identity.secret().to_bytes();
        let shown = format!("{identity:?} {identity:#?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains(&hex::encode(*secret)));
        assert!(!shown.contains(&base64::engine::general_purpose::STANDARD.encode(*secret)));
    }
}
