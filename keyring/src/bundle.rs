//! The CA-signed trust bundle: every certificate of a deployment, the
//! revoked certificate fingerprints and a version that only grows.
//!
//! # To-be-signed bytes
//!
//! The CA signs these bytes with Ed25519. Integers are unsigned and
//! big-endian.
//!
//! | field | bytes | content |
//! |---|---|---|
//! | label | 17 | ASCII `sealbus-bundle-v1`, no length prefix |
//! | version | 8 | u64, greater than the version of every earlier bundle |
//! | issued_at | 8 | u64 Unix seconds |
//! | certificate count | 4 | u32 `c` |
//! | certificates | | `c` times: u32 length `l`, then `l` bytes: the certificate's TBS bytes ([`crate::cert`]) followed by its 64-byte signature |
//! | revoked count | 4 | u32 `r` |
//! | revoked | `32 * r` | SHA-256 certificate fingerprints |
//!
//! Certificates and fingerprints keep the order in which the CA listed them.
//!
//! # JSON form
//!
//! ```json
//! {"version":3,"issued_at":1700000000,"certificates":[CERTIFICATE_JSON, ...],
//!  "revoked":["<hex, 32 bytes>", ...],"signature":"<base64, 64 bytes>"}
//! ```
//!
//! Fingerprints are lowercase hex on output, and either case is accepted on
//! input. The signature is standard base64 with padding.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::ca::CaPublicKey;
use crate::cert::{Certificate, CertificateJson, Fingerprint, SIGNATURE_LEN};
use crate::encoding::{
    count_u32, decode_base64_array, decode_hex_array, encode_base64, parse_json, put_u32_prefixed,
};
use crate::error::{KeyringError, Result};
use crate::files::{read_public_file, write_public_file};

/// Domain separation label at the start of the bundle TBS bytes.
pub const BUNDLE_TBS_LABEL: &[u8; 17] = b"sealbus-bundle-v1";

/// Maximum number of certificates in one bundle. Every service checks each
/// signature when it loads a bundle, so this bounds the work of a reload.
pub const MAX_BUNDLE_CERTS: usize = 10_000;

/// Maximum number of revoked fingerprints in one bundle (32 bytes each, so
/// 3.2 MB at most). Revocations outlive certificates until the revoked
/// certificates expire, so this allows ten times [`MAX_BUNDLE_CERTS`].
pub const MAX_BUNDLE_REVOKED: usize = 100_000;

/// Maximum size in bytes of a bundle's JSON form, checked before parsing so
/// that an oversized file or message cannot exhaust memory.
///
/// NOTE: this fits 10,000 certificates of up to about 6 KiB of JSON each. A
/// bundle with that many certificates that also have long filter lists can
/// exceed it.
pub const MAX_BUNDLE_JSON_BYTES: usize = 64 * 1024 * 1024;

const WHAT: &str = "trust bundle";

/// A trust bundle signed by the deployment CA.
///
/// Parsing does not verify it. [`TrustBundle::verify`] or
/// [`crate::Policy::new`] must succeed before its content is trusted.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustBundle {
    version: u64,
    issued_at: u64,
    certificates: Vec<Certificate>,
    revoked: Vec<Fingerprint>,
    signature: [u8; SIGNATURE_LEN],
}

impl TrustBundle {
    /// Signs a new bundle with the CA key.
    ///
    /// # Errors
    ///
    /// [`KeyringError::BundleTooLarge`] above [`MAX_BUNDLE_CERTS`] or
    /// [`MAX_BUNDLE_REVOKED`].
    pub(crate) fn sign(
        version: u64,
        issued_at: u64,
        certificates: Vec<Certificate>,
        revoked: Vec<Fingerprint>,
        ca_key: &SigningKey,
    ) -> Result<Self> {
        check_limits(certificates.len(), revoked.len())?;
        let mut bundle = TrustBundle {
            version,
            issued_at,
            certificates,
            revoked,
            signature: [0; SIGNATURE_LEN],
        };
        bundle.signature = ca_key.sign(&bundle.tbs_bytes()).to_bytes();
        Ok(bundle)
    }

    /// Bundle version. Each bundle a CA signs has a higher version than the
    /// one before.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the CA signed the bundle, Unix seconds.
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }

    /// All certificates, revoked ones included, in the CA's order.
    pub fn certificates(&self) -> &[Certificate] {
        &self.certificates
    }

    /// Fingerprints of revoked certificates.
    pub fn revoked(&self) -> &[Fingerprint] {
        &self.revoked
    }

    /// The CA's Ed25519 signature over [`TrustBundle::tbs_bytes`].
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    /// Encodes the to-be-signed bytes described in the module documentation.
    pub fn tbs_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(BUNDLE_TBS_LABEL);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.issued_at.to_be_bytes());

        out.extend_from_slice(&count_u32(self.certificates.len()).to_be_bytes());
        for certificate in &self.certificates {
            let mut entry = certificate.tbs_bytes();
            entry.extend_from_slice(certificate.signature());
            put_u32_prefixed(&mut out, &entry);
        }

        out.extend_from_slice(&count_u32(self.revoked.len()).to_be_bytes());
        for fingerprint in &self.revoked {
            out.extend_from_slice(fingerprint);
        }
        out
    }

    /// Verifies the bundle signature and the signature of every certificate,
    /// and checks that no two unrevoked certificates name the same identity.
    ///
    /// Validity windows are not checked here, because the policy checks them
    /// at the time of each request.
    ///
    /// # Errors
    ///
    /// [`KeyringError::BundleTooLarge`], [`KeyringError::BadSignature`] for
    /// the bundle or a certificate, the other errors of
    /// [`Certificate::verify_signature`], or [`KeyringError::DuplicateName`].
    pub fn verify(&self, ca_public: &CaPublicKey) -> Result<()> {
        check_limits(self.certificates.len(), self.revoked.len())?;

        // The bundle signature comes first: a forged bundle then costs one
        // signature check instead of one per certificate.
        if !ca_public.verifies(&self.tbs_bytes(), &self.signature) {
            return Err(KeyringError::BadSignature {
                what: format!("trust bundle version {}", self.version),
            });
        }
        for certificate in &self.certificates {
            certificate.verify_signature(ca_public)?;
        }

        let revoked: HashSet<&Fingerprint> = self.revoked.iter().collect();
        let mut active_names = HashSet::new();
        for certificate in &self.certificates {
            if revoked.contains(&certificate.fingerprint()) {
                continue;
            }
            if !active_names.insert(certificate.name().as_str()) {
                return Err(KeyringError::DuplicateName {
                    name: certificate.name().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Checks that this bundle may replace a loaded bundle of version
    /// `current`. An equal version is rejected too, because it is either the
    /// same bundle or a conflicting one.
    ///
    /// # Errors
    ///
    /// [`KeyringError::BundleRollback`] if `version() <= current`.
    pub fn ensure_newer_than(&self, current: u64) -> Result<()> {
        if self.version <= current {
            return Err(KeyringError::BundleRollback {
                offered: self.version,
                current,
            });
        }
        Ok(())
    }

    /// Parses the JSON form. Any input gives a value or an error, never a panic,
    /// which the property tests in `tests/parse_robustness.rs` check.
    ///
    /// # Errors
    ///
    /// [`KeyringError::InputTooLarge`] above [`MAX_BUNDLE_JSON_BYTES`],
    /// [`KeyringError::MalformedJson`], [`KeyringError::BundleTooLarge`],
    /// [`KeyringError::InvalidEncoding`], [`KeyringError::InvalidLength`], and
    /// the errors of [`Certificate::from_json`] for each certificate.
    pub fn from_json(input: &[u8]) -> Result<Self> {
        let raw: BundleJson = parse_json(WHAT, input, MAX_BUNDLE_JSON_BYTES)?;
        check_limits(raw.certificates.len(), raw.revoked.len())?;

        let certificates = raw
            .certificates
            .into_iter()
            .map(Certificate::try_from)
            .collect::<Result<Vec<_>>>()?;
        let revoked = raw
            .revoked
            .iter()
            .map(|text| decode_hex_array(WHAT, "revoked", text))
            .collect::<Result<Vec<_>>>()?;
        let signature = decode_base64_array(WHAT, "signature", &raw.signature)?;

        Ok(TrustBundle {
            version: raw.version,
            issued_at: raw.issued_at,
            certificates,
            revoked,
            signature,
        })
    }

    /// Encodes the JSON form on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.to_json_form())
            .expect("bundle JSON contains only strings, integers and arrays")
    }

    /// Writes the JSON form to `path` atomically with mode 0644.
    ///
    /// # Errors
    ///
    /// [`KeyringError::Io`].
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(&self.to_json_form())
            .expect("bundle JSON contains only strings, integers and arrays");
        text.push('\n');
        write_public_file(path, text.as_bytes())
    }

    /// Reads and parses a bundle file. The result is not verified.
    ///
    /// # Errors
    ///
    /// [`KeyringError::Io`], [`KeyringError::InputTooLarge`], or the errors of
    /// [`TrustBundle::from_json`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_public_file(path, WHAT, MAX_BUNDLE_JSON_BYTES)?;
        TrustBundle::from_json(&bytes)
    }

    fn to_json_form(&self) -> BundleJson {
        BundleJson {
            version: self.version,
            issued_at: self.issued_at,
            certificates: self
                .certificates
                .iter()
                .cloned()
                .map(CertificateJson::from)
                .collect(),
            revoked: self.revoked.iter().map(hex::encode).collect(),
            signature: encode_base64(&self.signature),
        }
    }
}

fn check_limits(certificates: usize, revoked: usize) -> Result<()> {
    if certificates > MAX_BUNDLE_CERTS {
        return Err(KeyringError::BundleTooLarge {
            entries: "certificates",
            count: certificates,
            max: MAX_BUNDLE_CERTS,
        });
    }
    if revoked > MAX_BUNDLE_REVOKED {
        return Err(KeyringError::BundleTooLarge {
            entries: "revoked fingerprints",
            count: revoked,
            max: MAX_BUNDLE_REVOKED,
        });
    }
    Ok(())
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let revoked: Vec<String> = self.revoked.iter().map(hex::encode).collect();
        f.debug_struct("TrustBundle")
            .field("version", &self.version)
            .field("issued_at", &self.issued_at)
            .field("certificates", &self.certificates)
            .field("revoked", &revoked)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleJson {
    version: u64,
    issued_at: u64,
    certificates: Vec<CertificateJson>,
    revoked: Vec<String>,
    signature: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use crate::identity::{ServiceName, StaticSecret};

    const NOW: u64 = 1_700_000_000;

    fn issue(ca: &mut CertificateAuthority, name: &str) -> Certificate {
        let secret = StaticSecret::generate(&mut rand_core::OsRng);
        ca.issue(
            ServiceName::new(name).unwrap(),
            secret.public_key(),
            vec![format!("edgex/{name}/#")],
            vec!["edgex/#".into()],
            NOW,
            NOW + 60,
        )
        .unwrap()
    }

    fn signed_bundle() -> (TrustBundle, CertificateAuthority) {
        let mut ca = CertificateAuthority::in_memory(&mut rand_core::OsRng);
        let a = issue(&mut ca, "a");
        let b = issue(&mut ca, "b");
        let old_a = issue(&mut ca, "a");
        let revoked = vec![old_a.fingerprint()];
        let bundle = ca.sign_bundle(vec![a, b, old_a], revoked, NOW).unwrap();
        (bundle, ca)
    }

    #[test]
    fn tbs_layout_matches_documentation() {
        let (bundle, _) = signed_bundle();
        let mut expected = Vec::new();
        expected.extend_from_slice(b"sealbus-bundle-v1");
        expected.extend_from_slice(&bundle.version().to_be_bytes());
        expected.extend_from_slice(&NOW.to_be_bytes());
        expected.extend_from_slice(&3u32.to_be_bytes());
        for certificate in bundle.certificates() {
            let tbs = certificate.tbs_bytes();
            expected.extend_from_slice(&((tbs.len() + 64) as u32).to_be_bytes());
            expected.extend_from_slice(&tbs);
            expected.extend_from_slice(certificate.signature());
        }
        expected.extend_from_slice(&1u32.to_be_bytes());
        expected.extend_from_slice(&bundle.certificates()[2].fingerprint());

        assert_eq!(bundle.tbs_bytes(), expected);
    }

    #[test]
    fn signed_bundle_verifies() {
        let (bundle, ca) = signed_bundle();
        assert!(bundle.verify(ca.public_key()).is_ok());
    }

    #[test]
    fn other_ca_is_rejected() {
        let (bundle, _) = signed_bundle();
        let other = CertificateAuthority::in_memory(&mut rand_core::OsRng);
        assert!(matches!(
            bundle.verify(other.public_key()),
            Err(KeyringError::BadSignature { .. })
        ));
    }

    /// A named change to one signed field.
    type Tampering = (&'static str, Box<dyn Fn(&mut TrustBundle)>);

    #[test]
    fn tampering_each_field_breaks_signature() {
        let (original, mut ca) = signed_bundle();
        let extra = issue(&mut ca, "z");

        let tamperings: Vec<Tampering> = vec![
            ("version", Box::new(|b| b.version += 1)),
            ("issued_at", Box::new(|b| b.issued_at -= 1)),
            (
                "certificate removed",
                Box::new(|b| {
                    b.certificates.remove(1);
                }),
            ),
            (
                "certificates reordered",
                Box::new(|b| b.certificates.swap(0, 1)),
            ),
            (
                "certificate added",
                Box::new(move |b| b.certificates.push(extra.clone())),
            ),
            ("revocation removed", Box::new(|b| b.revoked.clear())),
            ("revocation added", Box::new(|b| b.revoked.push([7; 32]))),
            ("signature", Box::new(|b| b.signature[63] ^= 1)),
        ];
        for (field, tamper) in tamperings {
            let mut tampered = original.clone();
            tamper(&mut tampered);
            let result = tampered.verify(ca.public_key());
            assert!(
                matches!(result, Err(KeyringError::BadSignature { ref what }) if what.starts_with("trust bundle")),
                "tampered {field}: {result:?}"
            );
        }
    }

    #[test]
    fn certificate_signed_by_other_ca_is_rejected() {
        // The bundle signature is valid, but one certificate inside is not.
        let mut ca = CertificateAuthority::in_memory(&mut rand_core::OsRng);
        let mut other_ca = CertificateAuthority::in_memory(&mut rand_core::OsRng);
        let foreign = issue(&mut other_ca, "x");
        let bundle = TrustBundle::sign(
            1,
            NOW,
            vec![issue(&mut ca, "a"), foreign],
            vec![],
            ca.signing_key_for_tests(),
        )
        .unwrap();

        let result = bundle.verify(ca.public_key());
        assert!(
            matches!(result, Err(KeyringError::BadSignature { ref what }) if what.starts_with("certificate")),
            "{result:?}"
        );
    }

    #[test]
    fn duplicate_active_names_are_rejected() {
        let mut ca = CertificateAuthority::in_memory(&mut rand_core::OsRng);
        let first = issue(&mut ca, "a");
        let second = issue(&mut ca, "a");
        let result = ca.sign_bundle(vec![first.clone(), second.clone()], vec![], NOW);
        assert!(matches!(result, Err(KeyringError::DuplicateName { ref name }) if name == "a"));

        // Revoking either one resolves the conflict.
        let revoked_first = ca.sign_bundle(
            vec![first.clone(), second.clone()],
            vec![first.fingerprint()],
            NOW,
        );
        assert!(revoked_first.is_ok());
        let revoked_second =
            ca.sign_bundle(vec![first, second.clone()], vec![second.fingerprint()], NOW);
        assert!(revoked_second.is_ok());
    }

    #[test]
    fn json_round_trip() {
        let (bundle, ca) = signed_bundle();
        let parsed = TrustBundle::from_json(bundle.to_json().as_bytes()).unwrap();
        assert_eq!(parsed, bundle);
        assert!(parsed.verify(ca.public_key()).is_ok());
    }

    #[test]
    fn json_form_fields() {
        let (bundle, _) = signed_bundle();
        let value: serde_json::Value = serde_json::from_str(&bundle.to_json()).unwrap();
        assert_eq!(value["version"], bundle.version());
        assert_eq!(value["issued_at"], NOW);
        assert_eq!(value["certificates"].as_array().unwrap().len(), 3);
        assert_eq!(
            value["revoked"][0],
            bundle.certificates()[2].fingerprint_hex()
        );
        assert!(value["signature"].is_string());
        assert_eq!(value.as_object().unwrap().len(), 5);
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.json");
        let (bundle, ca) = signed_bundle();
        bundle.save(&path).unwrap();
        let loaded = TrustBundle::load(&path).unwrap();
        assert_eq!(loaded, bundle);
        assert!(loaded.verify(ca.public_key()).is_ok());
    }

    #[test]
    fn uppercase_fingerprint_is_accepted() {
        let (bundle, ca) = signed_bundle();
        let mut value: serde_json::Value = serde_json::from_str(&bundle.to_json()).unwrap();
        let upper = value["revoked"][0].as_str().unwrap().to_uppercase();
        value["revoked"][0] = upper.into();
        let parsed = TrustBundle::from_json(value.to_string().as_bytes()).unwrap();
        assert!(parsed.verify(ca.public_key()).is_ok());
    }

    fn edited_json(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let (bundle, _) = signed_bundle();
        let mut value: serde_json::Value = serde_json::from_str(&bundle.to_json()).unwrap();
        edit(&mut value);
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn parse_rejects_bad_fields() {
        let unknown = edited_json(|v| v["extra"] = true.into());
        assert!(matches!(
            TrustBundle::from_json(&unknown),
            Err(KeyringError::MalformedJson { .. })
        ));

        let short = edited_json(|v| v["revoked"][0] = "abcd".into());
        assert!(matches!(
            TrustBundle::from_json(&short),
            Err(KeyringError::InvalidLength {
                field: "revoked",
                expected: 32,
                found: 2,
                ..
            })
        ));

        let not_hex = edited_json(|v| v["revoked"][0] = "zz".repeat(32).into());
        assert!(matches!(
            TrustBundle::from_json(&not_hex),
            Err(KeyringError::InvalidEncoding {
                field: "revoked",
                ..
            })
        ));

        let bad_signature = edited_json(|v| v["signature"] = encode_base64(&[0; 63]).into());
        assert!(matches!(
            TrustBundle::from_json(&bad_signature),
            Err(KeyringError::InvalidLength {
                field: "signature",
                ..
            })
        ));

        let bad_name = edited_json(|v| v["certificates"][1]["name"] = "".into());
        assert!(matches!(
            TrustBundle::from_json(&bad_name),
            Err(KeyringError::InvalidField { field: "name", .. })
        ));

        let negative_version = edited_json(|v| v["version"] = (-1).into());
        assert!(matches!(
            TrustBundle::from_json(&negative_version),
            Err(KeyringError::MalformedJson { .. })
        ));
    }

    #[test]
    fn parse_rejects_too_many_entries() {
        let many: Vec<String> = (0..=MAX_BUNDLE_REVOKED).map(|_| "00".repeat(32)).collect();
        let input = edited_json(|v| v["revoked"] = serde_json::json!(many));
        assert!(matches!(
            TrustBundle::from_json(&input),
            Err(KeyringError::BundleTooLarge {
                entries: "revoked fingerprints",
                ..
            })
        ));

        let (bundle, _) = signed_bundle();
        let certificate: serde_json::Value =
            serde_json::from_str(&bundle.certificates()[0].to_json()).unwrap();
        let too_many = vec![certificate; MAX_BUNDLE_CERTS + 1];
        let input = edited_json(|v| v["certificates"] = serde_json::Value::Array(too_many));
        assert!(matches!(
            TrustBundle::from_json(&input),
            Err(KeyringError::BundleTooLarge {
                entries: "certificates",
                ..
            })
        ));
    }

    #[test]
    fn rollback_is_rejected() {
        let (bundle, _) = signed_bundle();
        let version = bundle.version();
        assert!(bundle.ensure_newer_than(version - 1).is_ok());
        assert!(matches!(
            bundle.ensure_newer_than(version),
            Err(KeyringError::BundleRollback { .. })
        ));
        assert!(matches!(
            bundle.ensure_newer_than(version + 1),
            Err(KeyringError::BundleRollback { offered, current }) if offered == version && current == version + 1
        ));
    }
}
