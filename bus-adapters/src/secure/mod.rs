//! The security engine: sealing outbound messages and opening inbound ones
//! for one service identity, with no I/O of its own.
//!
//! [`Engine`] holds the publisher half ([`publisher`]: epochs per audience,
//! grants, inline grant repetition, answers to grant requests) and the
//! subscriber half ([`subscriber`]: installed grants, replay windows, the
//! buffer of messages that arrived before their grant, grant requests).
//! The async client in [`crate::client`] feeds it bytes from a transport and
//! publishes what it asks for.
//!
//! Inbound order for data messages: parse and bound-check, sender lookup in
//! the trust bundle, inline grants, replay pre-check, AEAD, origin tag,
//! authorization of the sender for the topic, then replay commit and
//! delivery.

pub mod control;
pub mod metrics;
pub mod publisher;
pub mod subscriber;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::{CryptoRng, RngCore};
use sealbus_envelope::StaticKeypair;
use sealbus_keyring::identity::load_ca_public;
use sealbus_keyring::{Identity, Policy, TrustBundle};

use crate::error::AdapterError;

pub use metrics::{Metrics, MetricsSnapshot};
pub use publisher::PublisherState;
pub use subscriber::{Inbound, Rejection, SubscriberState, Verdict};

/// Source of the current time, injected so expiry and rekey tests never sleep.
pub trait Clock: Send + Sync + 'static {
    /// Returns Unix time in milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Cryptographically secure randomness, injected for deterministic tests.
pub trait SecureRng: RngCore + CryptoRng + Send + 'static {}

impl<T: RngCore + CryptoRng + Send + 'static> SecureRng for T {}

/// Everything the engine needs to act as one service.
pub struct SecurityConfig {
    /// This service's identity (name, static key, certificate).
    pub identity: Identity,
    /// Verified trust bundle of the deployment.
    pub policy: Policy,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Randomness for audience keys, origin keys and Noise ephemerals.
    pub rng: Box<dyn SecureRng>,
}

impl SecurityConfig {
    /// Loads an identity directory (`identity.key`, `identity.cert`,
    /// `ca.pub`) and a trust bundle file, verifies the bundle against the
    /// CA key and this identity's certificate against the CA and the clock,
    /// and uses the system clock and the operating system's randomness.
    ///
    /// # Errors
    /// Returns [`AdapterError::Keyring`] naming the file and the fix when a
    /// file is missing, malformed, unsafe (group- or world-readable key) or
    /// does not verify, and when this identity is expired, revoked or absent
    /// from the bundle.
    pub fn from_files(identity_dir: &Path, bundle_path: &Path) -> Result<Self, AdapterError> {
        let identity = Identity::load(identity_dir)?;
        let ca_public = load_ca_public(identity_dir)?;
        let bundle = TrustBundle::load(bundle_path)?;
        let policy = Policy::new(bundle, &ca_public)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let now_s = clock.now_ms() / 1000;
        identity.certificate().verify(&ca_public, now_s)?;
        let listed = policy.certificate(identity.name().as_str(), now_s)?;
        if listed.fingerprint() != identity.certificate().fingerprint() {
            return Err(AdapterError::IdentityNotInBundle {
                name: identity.name().as_str().to_owned(),
                bundle: bundle_path.display().to_string(),
            });
        }
        Ok(Self {
            identity,
            policy,
            clock,
            rng: Box::new(rand_core::OsRng),
        })
    }
}

impl std::fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityConfig")
            .field("identity", &self.identity.name().as_str())
            .field("policy_version", &self.policy.version())
            .finish_non_exhaustive()
    }
}

/// The identity's static key in the form the envelope crate uses.
pub(crate) fn keypair_of(identity: &Identity) -> StaticKeypair {
    let secret = identity.secret().to_bytes();
    StaticKeypair::new(*secret, identity.public_key())
}

/// The engine of one service: both halves and the shared state.
pub struct Engine {
    /// Sealing side.
    pub publisher: PublisherState,
    /// Opening side.
    pub subscriber: SubscriberState,
    /// Shared identity, policy, clock and randomness.
    pub shared: Shared,
}

/// State both halves read.
pub struct Shared {
    /// This service's name.
    pub name: String,
    /// This service's static key pair.
    pub keypair: StaticKeypair,
    /// The verified trust bundle.
    pub policy: Policy,
    /// Bus context bound into every message.
    pub context: String,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Randomness.
    pub rng: Box<dyn SecureRng>,
    /// Counters of every outcome.
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// Counts and logs (rate-limited) a rejection that has no subscriber to
    /// report to.
    pub fn report(&self, rejection: &Rejection) {
        let (log, suppressed) = self
            .metrics
            .count_rejection(rejection.verdict, self.now_ms());
        if log {
            tracing::warn!(
                service = %self.name,
                topic = %rejection.topic,
                verdict = rejection.verdict.as_str(),
                claimed_sender = rejection.claimed_sender.as_deref().unwrap_or("-"),
                detail = %rejection.detail,
                audit_reason = rejection.audit_reason.unwrap_or("-"),
                suppressed_since_last = suppressed,
                "dropped inbound message"
            );
        }
    }

    /// Returns Unix time in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Returns Unix time in seconds, the unit of certificate validity.
    pub fn now_s(&self) -> u64 {
        self.clock.now_ms() / 1000
    }
}

impl Engine {
    /// Creates the engine with a fresh publisher session. `context` is the
    /// bus context bound into every message: the bus type, optionally
    /// followed by ':' and a bus id.
    pub fn new(config: SecurityConfig, context: String) -> Self {
        let keypair = keypair_of(&config.identity);
        let name = config.identity.name().as_str().to_owned();
        let mut shared = Shared {
            name,
            keypair,
            policy: config.policy,
            context,
            clock: config.clock,
            rng: config.rng,
            metrics: Arc::new(Metrics::default()),
        };
        let mut random = [0u8; 4];
        shared.rng.fill_bytes(&mut random);
        let publisher = PublisherState::new(shared.now_ms(), u32::from_le_bytes(random));
        Self {
            publisher,
            subscriber: SubscriberState::new(),
            shared,
        }
    }

    /// Returns this service's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}
