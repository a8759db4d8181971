//! Identities, certificates, the signed trust bundle and topic policy of
//! sealbus.
//!
//! This crate is pure and synchronous: it reads and writes key files but
//! opens no sockets and starts no tasks. The time (`now`, Unix seconds) and
//! the random number generator are always passed in by the caller.
//!
//! ```text
//!  CertificateAuthority (ca.rs)          a service
//!    issue()  ──────────► Certificate ──► Identity (identity.rs)
//!    sign_bundle() ─────► TrustBundle ──► Policy::new(bundle, ca_public)
//!                          (bundle.rs)      certificate(), authorize_*(), audience()
//!                                           (policy.rs, using topic.rs)
//! ```
//!
//! | module | content |
//! |---|---|
//! | [`error`] | [`KeyringError`] and its [`ErrorCategory`] |
//! | [`topic`] | MQTT topic and filter validation and matching |
//! | [`identity`] | [`ServiceName`], [`StaticSecret`], [`Identity`] and the identity directory |
//! | [`cert`] | [`Certificate`], its signed byte encoding, fingerprint and JSON form |
//! | [`ca`] | [`CertificateAuthority`], [`CaPublicKey`] and the CA directory |
//! | [`bundle`] | [`TrustBundle`], its signed byte encoding and JSON form |
//! | [`policy`] | [`Policy`]: default-deny authorization from a verified bundle |
//! | [`files`] | atomic writes, 0600 secret files and the permission check on read |
//!
//! [`Certificate::from_json`] and [`TrustBundle::from_json`] accept any
//! bytes without panicking, so fuzz targets can call them directly.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bundle;
pub mod ca;
pub mod cert;
mod encoding;
pub mod error;
pub mod files;
pub mod identity;
pub mod policy;
pub mod topic;

pub use bundle::{TrustBundle, MAX_BUNDLE_CERTS};
pub use ca::{CaPublicKey, CertificateAuthority};
pub use cert::{Certificate, Fingerprint, MAX_FILTERS_PER_CERT};
pub use error::{Action, ErrorCategory, KeyringError, Result};
pub use identity::{load_ca_public, Identity, ServiceName, StaticSecret, MAX_NAME_LEN};
pub use policy::Policy;
pub use topic::{filter_matches, validate_filter, validate_topic, MAX_FILTER_LEN, MAX_TOPIC_LEN};
