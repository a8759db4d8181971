//! Authorization decisions from a verified trust bundle.
//!
//! Everything is denied unless an unrevoked certificate, valid at the time
//! of the request, has a filter that matches the topic. Every method takes
//! `now` in Unix seconds from the caller, so tests control the clock.

use std::collections::{BTreeMap, HashSet};

use crate::bundle::TrustBundle;
use crate::ca::CaPublicKey;
use crate::cert::{Certificate, Fingerprint};
use crate::error::{preview, Action, KeyringError, Result};
use crate::identity::ServiceName;
use crate::topic::{matches_validated, validate_topic};

/// Publish and subscribe permissions of every identity in one verified bundle.
#[derive(Debug, Clone)]
pub struct Policy {
    bundle: TrustBundle,
    ca_public: CaPublicKey,
    /// Index into `bundle.certificates()` of the one unrevoked certificate
    /// of each name.
    active: BTreeMap<ServiceName, usize>,
    /// Names whose every certificate is revoked, with one revoked
    /// fingerprint to report.
    revoked_names: BTreeMap<ServiceName, Fingerprint>,
    revoked: HashSet<Fingerprint>,
}

impl Policy {
    /// Verifies `bundle` against the CA key and indexes it.
    ///
    /// # Errors
    ///
    /// The errors of [`TrustBundle::verify`].
    pub fn new(bundle: TrustBundle, ca_public: &CaPublicKey) -> Result<Self> {
        bundle.verify(ca_public)?;

        let revoked: HashSet<Fingerprint> = bundle.revoked().iter().copied().collect();
        let mut active = BTreeMap::new();
        let mut revoked_names = BTreeMap::new();
        for (index, certificate) in bundle.certificates().iter().enumerate() {
            let fingerprint = certificate.fingerprint();
            if revoked.contains(&fingerprint) {
                revoked_names.insert(certificate.name().clone(), fingerprint);
            } else {
                // `verify` rejected duplicate unrevoked names, so this never replaces.
                active.insert(certificate.name().clone(), index);
            }
        }
        revoked_names.retain(|name, _| !active.contains_key(name));

        Ok(Policy {
            bundle,
            ca_public: *ca_public,
            active,
            revoked_names,
            revoked,
        })
    }

    /// Replaces the bundle with a newer one signed by the same CA. On error
    /// the policy is unchanged.
    ///
    /// # Errors
    ///
    /// [`KeyringError::BundleRollback`] unless `bundle` has a higher version,
    /// and the errors of [`Policy::new`].
    pub fn update(&mut self, bundle: TrustBundle) -> Result<()> {
        bundle.ensure_newer_than(self.version())?;
        *self = Policy::new(bundle, &self.ca_public)?;
        Ok(())
    }

    /// Version of the bundle in use.
    pub fn version(&self) -> u64 {
        self.bundle.version()
    }

    /// The verified bundle in use.
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The CA key the bundle was verified with.
    pub fn ca_public(&self) -> &CaPublicKey {
        &self.ca_public
    }

    /// Returns whether the bundle revokes the certificate with this fingerprint.
    pub fn is_revoked(&self, fingerprint: &Fingerprint) -> bool {
        self.revoked.contains(fingerprint)
    }

    /// Looks up the certificate of `name` and checks that it is usable at `now`.
    ///
    /// # Errors
    ///
    /// [`KeyringError::UnknownIdentity`] if the bundle has no certificate for
    /// `name`, [`KeyringError::Revoked`] if all of them are revoked,
    /// [`KeyringError::NotYetValid`] or [`KeyringError::Expired`].
    pub fn certificate(&self, name: &str, now: u64) -> Result<&Certificate> {
        if let Some(&index) = self.active.get(name) {
            let certificate = &self.bundle.certificates()[index];
            certificate.check_validity(now)?;
            return Ok(certificate);
        }
        if let Some(fingerprint) = self.revoked_names.get(name) {
            return Err(KeyringError::Revoked {
                name: name.to_string(),
                fingerprint: hex::encode(fingerprint),
            });
        }
        Err(KeyringError::UnknownIdentity {
            name: preview(name),
        })
    }

    /// Checks that `name` may publish on `topic` at `now` and returns its
    /// certificate.
    ///
    /// # Errors
    ///
    /// [`KeyringError::InvalidTopic`], the errors of [`Policy::certificate`],
    /// or [`KeyringError::Unauthorized`] if no publish filter matches.
    pub fn authorize_publisher(&self, name: &str, topic: &str, now: u64) -> Result<&Certificate> {
        self.authorize(name, topic, now, Action::Publish)
    }

    /// Checks that `name` may subscribe to `topic` at `now` and returns its
    /// certificate.
    ///
    /// # Errors
    ///
    /// [`KeyringError::InvalidTopic`], the errors of [`Policy::certificate`],
    /// or [`KeyringError::Unauthorized`] if no subscribe filter matches.
    pub fn authorize_subscriber(&self, name: &str, topic: &str, now: u64) -> Result<&Certificate> {
        self.authorize(name, topic, now, Action::Subscribe)
    }

    /// Lists the certificates, sorted by name, of every identity that may
    /// subscribe to `topic` at `now`: unrevoked, valid at `now`, and with a
    /// subscribe filter that matches. An invalid topic has no audience.
    pub fn audience(&self, topic: &str, now: u64) -> Vec<&Certificate> {
        if validate_topic(topic).is_err() {
            return Vec::new();
        }
        // `active` is a BTreeMap, so this iterates in name order.
        self.active
            .values()
            .map(|&index| &self.bundle.certificates()[index])
            .filter(|certificate| certificate.is_valid_at(now))
            .filter(|certificate| grants(certificate.subscribe(), topic))
            .collect()
    }

    fn authorize(&self, name: &str, topic: &str, now: u64, action: Action) -> Result<&Certificate> {
        validate_topic(topic)?;
        let certificate = self.certificate(name, now)?;
        let filters = match action {
            Action::Publish => certificate.publish(),
            Action::Subscribe => certificate.subscribe(),
        };
        if !grants(filters, topic) {
            return Err(KeyringError::Unauthorized {
                name: name.to_string(),
                topic: preview(topic),
                action,
            });
        }
        Ok(certificate)
    }
}

/// Returns whether any of the filters, validated when the certificate was
/// parsed or issued, matches the validated topic.
fn grants(filters: &[String], topic: &str) -> bool {
    filters
        .iter()
        .any(|filter| matches_validated(filter, topic))
}
