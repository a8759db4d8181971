//! Service certificates signed by the deployment CA.
//!
//! A certificate binds a [`ServiceName`] to an X25519 public key, the MQTT
//! topic filters the service may publish and subscribe on, and a validity
//! window. The CA signs it with Ed25519 (RFC 8032, checked here with the
//! strict rules of `ed25519-dalek`'s `verify_strict`).
//!
//! # To-be-signed bytes
//!
//! The signature covers these bytes, in this order. Integers are unsigned and
//! big-endian. Nothing is padded or aligned.
//!
//! | field | bytes | content |
//! |---|---|---|
//! | label | 15 | ASCII `sealbus-cert-v1`, no length prefix |
//! | version | 1 | `1` |
//! | serial | 8 | u64 |
//! | name length | 1 | u8 `n`, 1 to 64 |
//! | name | `n` | the service name, ASCII from `[A-Za-z0-9._-]` |
//! | x25519_public | 32 | X25519 public key |
//! | publish count | 2 | u16 `p` |
//! | publish filters | | `p` times: u16 length, then the filter's UTF-8 bytes |
//! | subscribe count | 2 | u16 `s` |
//! | subscribe filters | | `s` times: u16 length, then the filter's UTF-8 bytes |
//! | not_before | 8 | u64 Unix seconds, first second of validity |
//! | not_after | 8 | u64 Unix seconds, first second after validity |
//!
//! Filters keep the order in which they were issued. The 64-byte signature
//! follows the TBS bytes only in the trust bundle encoding. The fingerprint
//! is SHA-256 of the TBS bytes, without the signature.
//!
//! # JSON form
//!
//! ```json
//! {"version":1,"serial":7,"name":"core-data","x25519_public":"<base64, 32 bytes>",
//!  "publish":["edgex/events/#"],"subscribe":["edgex/commands/core-data/#"],
//!  "not_before":1700000000,"not_after":1731536000,"signature":"<base64, 64 bytes>"}
//! ```
//!
//! Base64 is the standard alphabet with padding. Parsing rejects unknown
//! fields, wrong key and signature lengths, invalid names and invalid filters.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ca::CaPublicKey;
use crate::encoding::{decode_base64_array, encode_base64, parse_json, put_u16_prefixed};
use crate::error::{KeyringError, Result};
use crate::identity::{ServiceName, X25519_KEY_LEN};
use crate::topic::validate_filter;

/// The certificate format version this crate writes and reads.
pub const CERT_VERSION: u8 = 1;

/// Domain separation label at the start of the TBS bytes, so that a
/// certificate signature can never be mistaken for a bundle signature.
pub const CERT_TBS_LABEL: &[u8; 15] = b"sealbus-cert-v1";

/// Maximum number of topic filters in one certificate, publish and subscribe
/// together. A service needs a handful of wildcard filters, so this only
/// bounds the memory and matching work an oversized certificate can cause.
pub const MAX_FILTERS_PER_CERT: usize = 256;

/// Maximum size in bytes of a certificate's JSON form. The largest valid
/// certificate, 256 filters of 1024 bytes each written entirely as
/// six-character `\uXXXX` escapes, is about 1.6 MB.
pub const MAX_CERTIFICATE_JSON_BYTES: usize = 2 * 1024 * 1024;

/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// Length of a certificate fingerprint (SHA-256) in bytes.
pub const FINGERPRINT_LEN: usize = 32;

/// SHA-256 of a certificate's TBS bytes.
pub type Fingerprint = [u8; FINGERPRINT_LEN];

const WHAT: &str = "certificate";

/// A service certificate signed by the deployment CA.
///
/// Values come only from [`crate::CertificateAuthority::issue`] or from
/// parsing, so the fields always fit the encoding limits. A parsed
/// certificate is not trusted until [`Certificate::verify`] succeeds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CertificateJson", into = "CertificateJson")]
pub struct Certificate {
    version: u8,
    serial: u64,
    name: ServiceName,
    x25519_public: [u8; X25519_KEY_LEN],
    publish: Vec<String>,
    subscribe: Vec<String>,
    not_before: u64,
    not_after: u64,
    signature: [u8; SIGNATURE_LEN],
}

/// The signed content of a certificate before the CA signs it.
pub(crate) struct UnsignedCertificate {
    pub(crate) serial: u64,
    pub(crate) name: ServiceName,
    pub(crate) x25519_public: [u8; X25519_KEY_LEN],
    pub(crate) publish: Vec<String>,
    pub(crate) subscribe: Vec<String>,
    pub(crate) not_before: u64,
    pub(crate) not_after: u64,
}

impl Certificate {
    /// Validates `unsigned` and signs it with the CA key.
    ///
    /// # Errors
    ///
    /// [`KeyringError::InvalidFilter`], [`KeyringError::TooManyFilters`] or
    /// [`KeyringError::InvalidValidity`] for a bad request.
    pub(crate) fn sign(unsigned: UnsignedCertificate, ca_key: &SigningKey) -> Result<Self> {
        validate_filters(&unsigned.publish, &unsigned.subscribe)?;
        if unsigned.not_before >= unsigned.not_after {
            return Err(KeyringError::InvalidValidity {
                not_before: unsigned.not_before,
                not_after: unsigned.not_after,
            });
        }

        let mut certificate = Certificate {
            version: CERT_VERSION,
            serial: unsigned.serial,
            name: unsigned.name,
            x25519_public: unsigned.x25519_public,
            publish: unsigned.publish,
            subscribe: unsigned.subscribe,
            not_before: unsigned.not_before,
            not_after: unsigned.not_after,
            signature: [0; SIGNATURE_LEN],
        };
        certificate.signature = ca_key.sign(&certificate.tbs_bytes()).to_bytes();
        Ok(certificate)
    }

    /// Format version, always [`CERT_VERSION`].
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Serial number assigned by the CA.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The certified identity.
    pub fn name(&self) -> &ServiceName {
        &self.name
    }

    /// The identity's X25519 public key.
    pub fn x25519_public(&self) -> &[u8; X25519_KEY_LEN] {
        &self.x25519_public
    }

    /// Topic filters the identity may publish on.
    pub fn publish(&self) -> &[String] {
        &self.publish
    }

    /// Topic filters the identity may subscribe to.
    pub fn subscribe(&self) -> &[String] {
        &self.subscribe
    }

    /// First second of validity, Unix seconds.
    pub fn not_before(&self) -> u64 {
        self.not_before
    }

    /// First second after validity, Unix seconds.
    pub fn not_after(&self) -> u64 {
        self.not_after
    }

    /// The CA's Ed25519 signature over [`Certificate::tbs_bytes`].
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    /// Encodes the to-be-signed bytes described in the module documentation.
    pub fn tbs_bytes(&self) -> Vec<u8> {
        let filter_bytes: usize = self
            .publish
            .iter()
            .chain(&self.subscribe)
            .map(|filter| 2 + filter.len())
            .sum();
        let mut out = Vec::with_capacity(128 + filter_bytes);

        out.extend_from_slice(CERT_TBS_LABEL);
        out.push(self.version);
        out.extend_from_slice(&self.serial.to_be_bytes());

        // Names are at most MAX_NAME_LEN (64) bytes, so the length fits in a u8.
        let name = self.name.as_str().as_bytes();
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&self.x25519_public);

        put_filter_list(&mut out, &self.publish);
        put_filter_list(&mut out, &self.subscribe);

        out.extend_from_slice(&self.not_before.to_be_bytes());
        out.extend_from_slice(&self.not_after.to_be_bytes());
        out
    }

    /// Computes SHA-256 of the TBS bytes. Revocation lists name certificates
    /// by this value.
    pub fn fingerprint(&self) -> Fingerprint {
        Sha256::digest(self.tbs_bytes()).into()
    }

    /// Returns the fingerprint as lowercase hex.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint())
    }

    /// Checks the CA signature, the format version and the filters, and that
    /// `now` (Unix seconds) lies in `not_before..not_after`.
    ///
    /// # Errors
    ///
    /// [`KeyringError::BadSignature`], [`KeyringError::UnsupportedVersion`],
    /// [`KeyringError::InvalidField`] for a bad filter,
    /// [`KeyringError::NotYetValid`] if `now < not_before`, and
    /// [`KeyringError::Expired`] if `now >= not_after`.
    pub fn verify(&self, ca_public: &CaPublicKey, now: u64) -> Result<()> {
        self.verify_signature(ca_public)?;
        self.check_validity(now)
    }

    /// Checks everything that [`Certificate::verify`] checks except the
    /// validity window. A trust bundle may carry certificates that are not
    /// valid yet or any more, and the policy checks time per request.
    ///
    /// # Errors
    ///
    /// [`KeyringError::BadSignature`], [`KeyringError::UnsupportedVersion`] or
    /// [`KeyringError::InvalidField`].
    pub fn verify_signature(&self, ca_public: &CaPublicKey) -> Result<()> {
        if self.version != CERT_VERSION {
            return Err(KeyringError::UnsupportedVersion {
                what: WHAT,
                found: u64::from(self.version),
                supported: u64::from(CERT_VERSION),
            });
        }
        validate_filters(&self.publish, &self.subscribe)
            .map_err(|error| error.in_field(WHAT, "filters"))?;

        if !ca_public.verifies(&self.tbs_bytes(), &self.signature) {
            return Err(KeyringError::BadSignature {
                what: format!(
                    "certificate {:?} serial {}",
                    self.name.as_str(),
                    self.serial
                ),
            });
        }
        Ok(())
    }

    /// Checks that `now` (Unix seconds) lies in `not_before..not_after`.
    ///
    /// # Errors
    ///
    /// [`KeyringError::NotYetValid`] if `now < not_before` and
    /// [`KeyringError::Expired`] if `now >= not_after`.
    pub fn check_validity(&self, now: u64) -> Result<()> {
        if now < self.not_before {
            return Err(KeyringError::NotYetValid {
                name: self.name.to_string(),
                not_before: self.not_before,
                now,
            });
        }
        if now >= self.not_after {
            return Err(KeyringError::Expired {
                name: self.name.to_string(),
                not_after: self.not_after,
                now,
            });
        }
        Ok(())
    }

    /// Returns whether `now` (Unix seconds) lies in `not_before..not_after`.
    pub fn is_valid_at(&self, now: u64) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// Parses the JSON form. Any input gives a value or an error, never a panic,
    /// which the property tests in `tests/parse_robustness.rs` check.
    ///
    /// The result is not verified. Call [`Certificate::verify`] before
    /// trusting it.
    ///
    /// # Errors
    ///
    /// [`KeyringError::InputTooLarge`] above [`MAX_CERTIFICATE_JSON_BYTES`],
    /// [`KeyringError::MalformedJson`] for bad syntax, missing or unknown
    /// fields, and the typed errors of [`Certificate::try_from`] for bad
    /// field values.
    pub fn from_json(input: &[u8]) -> Result<Self> {
        let raw: CertificateJson = parse_json(WHAT, input, MAX_CERTIFICATE_JSON_BYTES)?;
        Certificate::try_from(raw)
    }

    /// Encodes the JSON form on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&CertificateJson::from(self.clone()))
            .expect("certificate JSON contains only strings, integers and arrays")
    }

    /// Encodes the JSON form with indentation, for files that people read.
    pub(crate) fn to_json_pretty(&self) -> String {
        let mut text = serde_json::to_string_pretty(&CertificateJson::from(self.clone()))
            .expect("certificate JSON contains only strings, integers and arrays");
        text.push('\n');
        text
    }
}

/// Checks the filter lists of a certificate against the MQTT rules and the
/// encoding limits.
fn validate_filters(publish: &[String], subscribe: &[String]) -> Result<()> {
    let count = publish.len() + subscribe.len();
    if count > MAX_FILTERS_PER_CERT {
        return Err(KeyringError::TooManyFilters {
            count,
            max: MAX_FILTERS_PER_CERT,
        });
    }
    for filter in publish.iter().chain(subscribe) {
        validate_filter(filter)?;
    }
    Ok(())
}

fn put_filter_list(out: &mut Vec<u8>, filters: &[String]) {
    // At most MAX_FILTERS_PER_CERT filters of at most MAX_FILTER_LEN bytes,
    // both far below u16::MAX.
    out.extend_from_slice(&(filters.len() as u16).to_be_bytes());
    for filter in filters {
        put_u16_prefixed(out, filter.as_bytes());
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("serial", &self.serial)
            .field("name", &self.name.as_str())
            .field("x25519_public", &hex::encode(self.x25519_public))
            .field("publish", &self.publish)
            .field("subscribe", &self.subscribe)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("fingerprint", &self.fingerprint_hex())
            .finish_non_exhaustive()
    }
}

/// The JSON form of a certificate, before validation.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateJson {
    // Read as u64 so that any unsupported version gets a typed error, not a
    // JSON range error.
    version: u64,
    serial: u64,
    name: String,
    x25519_public: String,
    publish: Vec<String>,
    subscribe: Vec<String>,
    not_before: u64,
    not_after: u64,
    signature: String,
}

impl TryFrom<CertificateJson> for Certificate {
    type Error = KeyringError;

    /// Validates every field of the parsed JSON form.
    ///
    /// # Errors
    ///
    /// [`KeyringError::UnsupportedVersion`], [`KeyringError::InvalidEncoding`],
    /// [`KeyringError::InvalidLength`], or [`KeyringError::InvalidField`]
    /// wrapping the name or filter error.
    fn try_from(raw: CertificateJson) -> Result<Self> {
        if raw.version != u64::from(CERT_VERSION) {
            return Err(KeyringError::UnsupportedVersion {
                what: WHAT,
                found: raw.version,
                supported: u64::from(CERT_VERSION),
            });
        }

        let name = ServiceName::new(raw.name).map_err(|error| error.in_field(WHAT, "name"))?;
        let x25519_public = decode_base64_array(WHAT, "x25519_public", &raw.x25519_public)?;
        let signature = decode_base64_array(WHAT, "signature", &raw.signature)?;
        validate_filters(&raw.publish, &raw.subscribe)
            .map_err(|error| error.in_field(WHAT, "filters"))?;

        Ok(Certificate {
            version: CERT_VERSION,
            serial: raw.serial,
            name,
            x25519_public,
            publish: raw.publish,
            subscribe: raw.subscribe,
            not_before: raw.not_before,
            not_after: raw.not_after,
            signature,
        })
    }
}

impl From<Certificate> for CertificateJson {
    fn from(certificate: Certificate) -> Self {
        CertificateJson {
            version: u64::from(certificate.version),
            serial: certificate.serial,
            name: certificate.name.into(),
            x25519_public: encode_base64(&certificate.x25519_public),
            publish: certificate.publish,
            subscribe: certificate.subscribe,
            not_before: certificate.not_before,
            not_after: certificate.not_after,
            signature: encode_base64(&certificate.signature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::MAX_FILTER_LEN;

    const NOT_BEFORE: u64 = 1_700_000_000;
    const NOT_AFTER: u64 = 1_700_086_400;

    fn ca_key() -> SigningKey {
        SigningKey::from_bytes(&[0x11; 32])
    }

    fn ca_public() -> CaPublicKey {
        CaPublicKey::from_bytes(&ca_key().verifying_key().to_bytes()).unwrap()
    }

    fn unsigned() -> UnsignedCertificate {
        UnsignedCertificate {
            serial: 7,
            name: ServiceName::new("core-data").unwrap(),
            x25519_public: [0xab; 32],
            publish: vec!["edgex/events/#".into()],
            subscribe: vec!["edgex/commands/+/core-data".into(), "a".into()],
            not_before: NOT_BEFORE,
            not_after: NOT_AFTER,
        }
    }

    fn certificate() -> Certificate {
        Certificate::sign(unsigned(), &ca_key()).unwrap()
    }

    #[test]
    fn tbs_layout_matches_documentation() {
        let mut expected = Vec::new();
        expected.extend_from_slice(b"sealbus-cert-v1");
        expected.push(1);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]);
        expected.push(9);
        expected.extend_from_slice(b"core-data");
        expected.extend_from_slice(&[0xab; 32]);
        expected.extend_from_slice(&[0, 1, 0, 14]);
        expected.extend_from_slice(b"edgex/events/#");
        expected.extend_from_slice(&[0, 2, 0, 26]);
        expected.extend_from_slice(b"edgex/commands/+/core-data");
        expected.extend_from_slice(&[0, 1]);
        expected.extend_from_slice(b"a");
        expected.extend_from_slice(&NOT_BEFORE.to_be_bytes());
        expected.extend_from_slice(&NOT_AFTER.to_be_bytes());

        assert_eq!(certificate().tbs_bytes(), expected);
    }

    #[test]
    fn fingerprint_is_sha256_of_tbs() {
        let certificate = certificate();
        let expected: [u8; 32] = Sha256::digest(certificate.tbs_bytes()).into();
        assert_eq!(certificate.fingerprint(), expected);
        assert_eq!(certificate.fingerprint_hex(), hex::encode(expected));
    }

    #[test]
    fn fingerprint_excludes_signature() {
        let original = certificate();
        let mut resigned = original.clone();
        resigned.signature = [0x42; SIGNATURE_LEN];
        assert_eq!(original.fingerprint(), resigned.fingerprint());
    }

    #[test]
    fn signed_certificate_verifies() {
        assert!(certificate().verify(&ca_public(), NOT_BEFORE).is_ok());
    }

    #[test]
    fn other_ca_is_rejected() {
        let other = SigningKey::from_bytes(&[0x22; 32]);
        let other_public = CaPublicKey::from_bytes(&other.verifying_key().to_bytes()).unwrap();
        let result = certificate().verify(&other_public, NOT_BEFORE);
        assert!(matches!(result, Err(KeyringError::BadSignature { .. })));
    }

    #[test]
    fn validity_boundaries() {
        let certificate = certificate();
        let ca = ca_public();

        assert!(matches!(
            certificate.verify(&ca, NOT_BEFORE - 1),
            Err(KeyringError::NotYetValid { .. })
        ));
        assert!(certificate.verify(&ca, NOT_BEFORE).is_ok());
        assert!(certificate.verify(&ca, NOT_AFTER - 1).is_ok());
        assert!(matches!(
            certificate.verify(&ca, NOT_AFTER),
            Err(KeyringError::Expired { .. })
        ));

        assert!(!certificate.is_valid_at(NOT_BEFORE - 1));
        assert!(certificate.is_valid_at(NOT_BEFORE));
        assert!(certificate.is_valid_at(NOT_AFTER - 1));
        assert!(!certificate.is_valid_at(NOT_AFTER));
    }

    /// A named change to one signed field.
    type Tampering = (&'static str, Box<dyn Fn(&mut Certificate)>);

    #[test]
    fn tampering_each_field_breaks_signature() {
        let ca = ca_public();
        let original = certificate();
        let tamperings: Vec<Tampering> = vec![
            ("serial", Box::new(|c| c.serial += 1)),
            (
                "name",
                Box::new(|c| c.name = ServiceName::new("core-datb").unwrap()),
            ),
            ("x25519_public", Box::new(|c| c.x25519_public[31] ^= 1)),
            ("publish added", Box::new(|c| c.publish.push("#".into()))),
            (
                "publish changed",
                Box::new(|c| c.publish[0] = "edgex/events/+".into()),
            ),
            (
                "subscribe removed",
                Box::new(|c| {
                    c.subscribe.pop();
                }),
            ),
            ("subscribe reordered", Box::new(|c| c.subscribe.reverse())),
            (
                "filter moved between lists",
                Box::new(|c| {
                    let moved = c.subscribe.pop().unwrap();
                    c.publish.push(moved);
                }),
            ),
            ("not_before", Box::new(|c| c.not_before -= 1)),
            ("not_after", Box::new(|c| c.not_after += 1)),
            ("signature", Box::new(|c| c.signature[0] ^= 1)),
        ];
        for (field, tamper) in tamperings {
            let mut tampered = original.clone();
            tamper(&mut tampered);
            let result = tampered.verify(&ca, NOT_BEFORE);
            assert!(
                matches!(result, Err(KeyringError::BadSignature { .. })),
                "tampered {field}: {result:?}"
            );
        }
    }

    #[test]
    fn changed_version_is_rejected() {
        let mut tampered = certificate();
        tampered.version = 2;
        let result = tampered.verify(&ca_public(), NOT_BEFORE);
        assert!(matches!(
            result,
            Err(KeyringError::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn json_round_trip() {
        let certificate = certificate();
        let json = certificate.to_json();
        let parsed = Certificate::from_json(json.as_bytes()).unwrap();
        assert_eq!(parsed, certificate);
        assert!(parsed.verify(&ca_public(), NOT_BEFORE).is_ok());

        let pretty = certificate.to_json_pretty();
        assert_eq!(
            Certificate::from_json(pretty.as_bytes()).unwrap(),
            certificate
        );
    }

    #[test]
    fn json_field_names() {
        let value: serde_json::Value = serde_json::from_str(&certificate().to_json()).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "name",
                "not_after",
                "not_before",
                "publish",
                "serial",
                "signature",
                "subscribe",
                "version",
                "x25519_public"
            ]
        );
        assert_eq!(value["x25519_public"], encode_base64(&[0xab; 32]));
    }

    #[test]
    fn serde_uses_the_validating_form() {
        let certificate = certificate();
        let value = serde_json::to_value(&certificate).unwrap();
        let back: Certificate = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(back, certificate);

        let mut bad = value;
        bad["name"] = "not a name".into();
        assert!(serde_json::from_value::<Certificate>(bad).is_err());
    }

    fn edited_json(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut value: serde_json::Value = serde_json::from_str(&certificate().to_json()).unwrap();
        edit(&mut value);
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn parse_rejects_unknown_field() {
        let input = edited_json(|v| v["extra"] = 1.into());
        assert!(matches!(
            Certificate::from_json(&input),
            Err(KeyringError::MalformedJson { .. })
        ));
    }

    #[test]
    fn parse_rejects_missing_field() {
        let input = edited_json(|v| {
            v.as_object_mut().unwrap().remove("not_after");
        });
        assert!(matches!(
            Certificate::from_json(&input),
            Err(KeyringError::MalformedJson { .. })
        ));
    }

    #[test]
    fn parse_rejects_wrong_key_length() {
        let input = edited_json(|v| v["x25519_public"] = encode_base64(&[1; 31]).into());
        assert!(matches!(
            Certificate::from_json(&input),
            Err(KeyringError::InvalidLength {
                field: "x25519_public",
                expected: 32,
                found: 31,
                ..
            })
        ));
    }

    #[test]
    fn parse_rejects_wrong_signature_length() {
        let input = edited_json(|v| v["signature"] = encode_base64(&[1; 65]).into());
        assert!(matches!(
            Certificate::from_json(&input),
            Err(KeyringError::InvalidLength {
                field: "signature",
                expected: 64,
                found: 65,
                ..
            })
        ));
    }

    #[test]
    fn parse_rejects_bad_base64() {
        let input = edited_json(|v| v["signature"] = "not base64!".into());
        assert!(matches!(
            Certificate::from_json(&input),
            Err(KeyringError::InvalidEncoding {
                field: "signature",
                ..
            })
        ));
    }

    #[test]
    fn parse_rejects_invalid_name() {
        let input = edited_json(|v| v["name"] = "core data".into());
        let error = Certificate::from_json(&input).unwrap_err();
        match &error {
            KeyringError::InvalidField {
                field: "name",
                source,
                ..
            } => {
                assert!(matches!(**source, KeyringError::InvalidName { .. }))
            }
            other => panic!("expected an invalid name field, got {other:?}"),
        }
        assert_eq!(error.category(), crate::ErrorCategory::UntrustedInput);
    }

    #[test]
    fn parse_rejects_invalid_filter() {
        let input = edited_json(|v| v["subscribe"] = serde_json::json!(["a/#/b"]));
        let error = Certificate::from_json(&input).unwrap_err();
        match error {
            KeyringError::InvalidField {
                field: "filters",
                source,
                ..
            } => {
                assert!(matches!(*source, KeyringError::InvalidFilter { .. }))
            }
            other => panic!("expected an invalid filter field, got {other:?}"),
        }
    }

    #[test]
    fn parse_rejects_too_many_filters() {
        let filters: Vec<String> = (0..=MAX_FILTERS_PER_CERT)
            .map(|i| format!("t/{i}"))
            .collect();
        let input = edited_json(|v| v["publish"] = serde_json::json!(filters));
        let error = Certificate::from_json(&input).unwrap_err();
        match error {
            KeyringError::InvalidField { source, .. } => {
                assert!(matches!(*source, KeyringError::TooManyFilters { .. }))
            }
            other => panic!("expected too many filters, got {other:?}"),
        }
    }

    #[test]
    fn parse_rejects_unsupported_version() {
        for version in [0u64, 2, 256, u64::MAX] {
            let input = edited_json(|v| v["version"] = version.into());
            assert!(
                matches!(
                    Certificate::from_json(&input),
                    Err(KeyringError::UnsupportedVersion { found, .. }) if found == version
                ),
                "version {version}"
            );
        }
    }

    #[test]
    fn parse_rejects_oversized_input() {
        let input = vec![b' '; MAX_CERTIFICATE_JSON_BYTES + 1];
        assert!(matches!(
            Certificate::from_json(&input),
            Err(KeyringError::InputTooLarge { .. })
        ));
    }

    #[test]
    fn issue_rejects_bad_requests() {
        let mut empty_window = unsigned();
        empty_window.not_after = empty_window.not_before;
        assert!(matches!(
            Certificate::sign(empty_window, &ca_key()),
            Err(KeyringError::InvalidValidity { .. })
        ));

        let mut bad_filter = unsigned();
        bad_filter.publish.push("a+".into());
        assert!(matches!(
            Certificate::sign(bad_filter, &ca_key()),
            Err(KeyringError::InvalidFilter { .. })
        ));

        let mut long_filter = unsigned();
        long_filter.subscribe.push("a".repeat(MAX_FILTER_LEN + 1));
        assert!(matches!(
            Certificate::sign(long_filter, &ca_key()),
            Err(KeyringError::InvalidFilter { .. })
        ));
    }

    #[test]
    fn largest_certificate_fits_limits() {
        let mut request = unsigned();
        request.name = ServiceName::new("n".repeat(crate::identity::MAX_NAME_LEN)).unwrap();
        request.publish = (0..MAX_FILTERS_PER_CERT)
            .map(|i| format!("{i:04}{}", "\u{1}".repeat(MAX_FILTER_LEN - 4)))
            .collect();
        request.subscribe.clear();
        let certificate = Certificate::sign(request, &ca_key()).unwrap();
        let json = certificate.to_json();
        assert!(
            json.len() <= MAX_CERTIFICATE_JSON_BYTES,
            "{} bytes",
            json.len()
        );
        assert_eq!(
            Certificate::from_json(json.as_bytes()).unwrap(),
            certificate
        );
        assert!(certificate.verify(&ca_public(), NOT_BEFORE).is_ok());
    }

    #[test]
    fn debug_shows_public_fields_only() {
        let shown = format!("{:?}", certificate());
        assert!(shown.contains("core-data"));
        assert!(shown.contains(&hex::encode([0xab; 32])));
    }
}
