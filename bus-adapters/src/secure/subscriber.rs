//! The subscriber half: inline and pushed grants, opening data messages,
//! holding messages that arrived before their grant, and asking for grants.
//!
//! A message whose grant is missing is held in a bounded buffer
//! ([`MAX_HELD_MESSAGES`], [`MAX_HELD_BYTES`], [`MAX_HELD_AGE_MS`]) and a
//! grant request goes to the publisher, repeated every
//! [`GRANT_REQUEST_RETRY_MS`] while messages wait. When the grant comes
//! (answered, or inline in a later message) the held messages open in
//! arrival order; those still waiting after the age limit are rejected as
//! "no-grant".

use std::collections::{HashMap, VecDeque};

use sealbus_envelope::{
    parse_grant, parse_message, seal_grant_request, EnvelopeError, GrantOutcome,
    GrantRequestHeader, Malformed, MessageEnvelope, OpenOptions, ParsedMessage, Receiver, Route,
};
use sealbus_keyring::KeyringError;
use tracing::{debug, warn};

use super::control::grant_request_topic;
use super::metrics::Metrics;
use super::Shared;

/// Maximum number of messages held while their grant is missing.
pub const MAX_HELD_MESSAGES: usize = 1024;

/// Maximum total bytes of messages held while their grant is missing.
pub const MAX_HELD_BYTES: usize = 16 * 1024 * 1024;

/// Maximum time in ms a message waits for its grant before it is rejected.
pub const MAX_HELD_AGE_MS: u64 = 10_000;

/// Interval in ms between grant requests for the same epoch while messages
/// of it wait.
pub const GRANT_REQUEST_RETRY_MS: u64 = 1_000;

/// Grant requests sent per second at most, across all publishers. Each
/// costs three X25519 operations and a publish, and junk messages that
/// claim new epochs would otherwise make this service send one each.
pub const MAX_GRANT_REQUESTS_PER_SECOND: u32 = 50;

/// Grants opened per second at most, since each costs two X25519
/// operations and a forger can attach junk grants to junk messages.
pub const MAX_GRANT_OPENS_PER_SECOND: u32 = 200;

/// The outcome class of one inbound message, as counted, logged and shown
/// by `sealbus watch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verdict {
    /// Bytes that are not a well-formed sealed message.
    Malformed,
    /// Plaintext (such as a plain EdgeX JSON envelope) on a secure topic.
    Plaintext,
    /// Failed authentication: altered, forged by the broker, or forged by a
    /// co-subscriber.
    Forged,
    /// A replay of an accepted message, of an earlier session or of a
    /// retired epoch.
    Replay,
    /// A broker redelivery (MQTT QoS 1 DUP) of an accepted message.
    Duplicate,
    /// A timestamp or certificate outside its validity window.
    Expired,
    /// No grant arrived for the message in time.
    NoGrant,
    /// The sender is unknown or may not publish on the topic.
    Unauthorized,
    /// The sender's certificate is revoked.
    Revoked,
    /// A grant or request addressed to another service.
    WrongRecipient,
    /// Dropped by a rate limit before any cryptography.
    RateLimited,
    /// A grant on the grant topic for an epoch this service did not
    /// request. It is dropped before any cryptography, so junk grants cannot
    /// use up the grant-opening budget.
    Unsolicited,
}

impl Verdict {
    /// Number of verdicts.
    pub const COUNT: usize = 12;

    /// Every verdict, in declaration order.
    pub const ALL: [Verdict; Verdict::COUNT] = [
        Verdict::Malformed,
        Verdict::Plaintext,
        Verdict::Forged,
        Verdict::Replay,
        Verdict::Duplicate,
        Verdict::Expired,
        Verdict::NoGrant,
        Verdict::Unauthorized,
        Verdict::Revoked,
        Verdict::WrongRecipient,
        Verdict::RateLimited,
        Verdict::Unsolicited,
    ];

    /// Returns the stable lowercase name used in logs, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Malformed => "malformed",
            Verdict::Plaintext => "plaintext",
            Verdict::Forged => "forged",
            Verdict::Replay => "replay",
            Verdict::Duplicate => "duplicate",
            Verdict::Expired => "expired",
            Verdict::NoGrant => "no-grant",
            Verdict::Unauthorized => "unauthorized",
            Verdict::Revoked => "revoked",
            Verdict::WrongRecipient => "wrong-recipient",
            Verdict::RateLimited => "rate-limited",
            Verdict::Unsolicited => "unsolicited",
        }
    }

    /// Maps a parse failure.
    pub fn from_malformed(error: &Malformed) -> Self {
        match error {
            Malformed::Plaintext => Verdict::Plaintext,
            _ => Verdict::Malformed,
        }
    }

    /// Maps an envelope error.
    pub fn from_envelope(error: &EnvelopeError) -> Self {
        match error {
            EnvelopeError::Malformed(malformed) => Self::from_malformed(malformed),
            EnvelopeError::Authentication(_) => Verdict::Forged,
            EnvelopeError::Replay { .. } | EnvelopeError::StaleEpoch { .. } => Verdict::Replay,
            EnvelopeError::Duplicate { .. } => Verdict::Duplicate,
            EnvelopeError::Expired { .. } | EnvelopeError::FromFuture { .. } => Verdict::Expired,
            EnvelopeError::NoGrant { .. } => Verdict::NoGrant,
            EnvelopeError::WrongRecipient { .. } => Verdict::WrongRecipient,
            _ => Verdict::Malformed,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Maps a trust bundle lookup failure about a sender or requester.
pub fn keyring_verdict(error: &KeyringError) -> Verdict {
    match error {
        KeyringError::Revoked { .. } => Verdict::Revoked,
        KeyringError::Expired { .. } | KeyringError::NotYetValid { .. } => Verdict::Expired,
        _ => Verdict::Unauthorized,
    }
}

/// A dropped inbound message: where it came from, why, and who it claimed
/// to be from. Never carries payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Topic the message arrived on.
    pub topic: String,
    /// Outcome class.
    pub verdict: Verdict,
    /// Sender named in the message, unverified.
    pub claimed_sender: Option<String>,
    /// Human-readable reason, safe to log.
    pub detail: String,
    /// For authentication failures, the precise reason kept for audit
    /// ("body-tag", "origin-tag", "grant", "grant-request"). It is logged
    /// and reported locally, never sent to a peer.
    pub audit_reason: Option<&'static str>,
}

impl Rejection {
    /// Creates a rejection.
    pub fn new(
        topic: &str,
        verdict: Verdict,
        claimed_sender: Option<&str>,
        detail: String,
    ) -> Self {
        Self {
            topic: topic.to_owned(),
            verdict,
            claimed_sender: claimed_sender.map(str::to_owned),
            detail,
            audit_reason: None,
        }
    }

    /// Creates a rejection from an envelope error, keeping the audit reason
    /// of an authentication failure.
    pub fn from_envelope(topic: &str, claimed_sender: Option<&str>, error: &EnvelopeError) -> Self {
        let mut rejection = Self::new(
            topic,
            Verdict::from_envelope(error),
            claimed_sender,
            error.to_string(),
        );
        if let EnvelopeError::Authentication(auth) = error {
            rejection.audit_reason = Some(auth.audit_reason().as_str());
        }
        rejection
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rejected message on topic {:?}", self.topic)?;
        if let Some(sender) = &self.claimed_sender {
            write!(f, " claiming sender {sender:?}")?;
        }
        write!(f, ": {} ({})", self.verdict, self.detail)
    }
}

impl std::error::Error for Rejection {}

/// An opened, authorized message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Topic it arrived on.
    pub topic: String,
    /// Verified sender.
    pub sender: String,
    /// The EdgeX envelope, with `receivedTopic` set.
    pub envelope: MessageEnvelope,
    /// Publisher session.
    pub session: u64,
    /// Epoch.
    pub epoch: u32,
    /// Sequence number.
    pub sequence: u64,
}

/// What the engine asks its caller to do with one inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Deliver to the subscribers of the topic.
    Delivered(Delivered),
    /// Count, log and report to the error channel.
    Rejected(Rejection),
    /// Publish these bytes (a grant request) on this topic.
    Send {
        /// Topic to publish on.
        topic: String,
        /// Bytes to publish.
        bytes: Vec<u8>,
    },
}

type EpochId = (String, u64, u32);

/// A message waiting for the grant of its epoch.
struct HeldMessage {
    topic: String,
    bytes: Vec<u8>,
    redelivery: bool,
    arrived_ms: u64,
    epoch: EpochId,
}

/// Opening state of one service.
#[derive(Default)]
pub struct SubscriberState {
    receiver: Receiver,
    held: VecDeque<HeldMessage>,
    held_bytes: usize,
    last_request_ms: HashMap<EpochId, u64>,
    grant_opens: (u64, u32),
    grant_requests: (u64, u32),
}

impl std::fmt::Debug for SubscriberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberState")
            .field("senders", &self.receiver.sender_count())
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

/// A data message as it arrived, and the time it is being handled at.
struct Arrival<'a> {
    topic: &'a str,
    bytes: &'a [u8],
    redelivery: bool,
    arrived_ms: u64,
    now_ms: u64,
}

impl SubscriberState {
    /// Creates an empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the number of messages waiting for a grant.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// Returns the number of senders with grant state.
    pub fn sender_count(&self) -> usize {
        self.receiver.sender_count()
    }

    fn reject(shared: &Shared, rejection: Rejection, out: &mut Vec<Inbound>) {
        shared.report(&rejection);
        out.push(Inbound::Rejected(rejection));
    }

    fn allow_grant_open(&mut self, now_ms: u64) -> bool {
        let second = now_ms / 1000;
        if self.grant_opens.0 != second {
            self.grant_opens = (second, 0);
        }
        if self.grant_opens.1 >= MAX_GRANT_OPENS_PER_SECOND {
            return false;
        }
        self.grant_opens.1 += 1;
        true
    }

    /// Opens and installs one grant addressed to this service. Returns the
    /// epoch it installed, or a rejection.
    fn install_grant(
        &mut self,
        shared: &Shared,
        topic: &str,
        bytes: &[u8],
    ) -> Result<Option<EpochId>, Rejection> {
        let grant = parse_grant(bytes).map_err(|error| {
            Rejection::new(
                topic,
                Verdict::from_malformed(&error),
                None,
                format!("grant: {error}"),
            )
        })?;
        let sender = grant.sender;
        let reject = |verdict, detail: String| Rejection::new(topic, verdict, Some(sender), detail);
        if grant.recipient != shared.name {
            return Err(reject(
                Verdict::WrongRecipient,
                format!("grant is addressed to {}", grant.recipient),
            ));
        }
        if self.receiver.has_epoch(sender, grant.session, grant.epoch) {
            return Ok(None);
        }
        if self.receiver.is_stale(sender, grant.session, grant.epoch) {
            return Err(reject(
                Verdict::Replay,
                format!(
                    "grant for retired session {} epoch {}",
                    grant.session, grant.epoch
                ),
            ));
        }
        let now_ms = shared.now_ms();
        let certificate = shared
            .policy
            .certificate(sender, now_ms / 1000)
            .map_err(|error| reject(keyring_verdict(&error), error.to_string()))?;
        let sender_public = *certificate.x25519_public();
        if !self.allow_grant_open(now_ms) {
            return Err(reject(
                Verdict::RateLimited,
                "too many grants this second".into(),
            ));
        }
        let keys = grant
            .open(&shared.name, &shared.keypair, &sender_public)
            .map_err(|error| Rejection::from_envelope(topic, Some(sender), &error))?;
        let outcome = self
            .receiver
            .install(sender, grant.session, grant.epoch, keys)
            .map_err(|error| Rejection::from_envelope(topic, Some(sender), &error))?;
        if outcome == GrantOutcome::Conflicting {
            warn!(service = %shared.name, sender, epoch = grant.epoch, "ignored a second, different grant for an installed epoch");
            return Ok(None);
        }
        Metrics::bump(&shared.metrics.grants_installed);
        debug!(service = %shared.name, sender, session = grant.session, epoch = grant.epoch, "installed grant");
        Ok(Some((sender.to_owned(), grant.session, grant.epoch)))
    }

    /// Handles a grant pushed on this service's grant topic.
    pub fn handle_grant(
        &mut self,
        shared: &Shared,
        topic: &str,
        bytes: &[u8],
        out: &mut Vec<Inbound>,
    ) {
        // Grants on the grant topic are only ever responses to this
        // service's requests.
        if let Ok(grant) = parse_grant(bytes) {
            if self
                .receiver
                .has_epoch(grant.sender, grant.session, grant.epoch)
            {
                // A second response to a repeated request: nothing to do.
                return;
            }
            let requested = (grant.sender.to_owned(), grant.session, grant.epoch);
            if grant.recipient == shared.name && !self.last_request_ms.contains_key(&requested) {
                let detail = format!(
                    "no grant request is outstanding for session {} epoch {}",
                    grant.session, grant.epoch
                );
                return Self::reject(
                    shared,
                    Rejection::new(topic, Verdict::Unsolicited, Some(grant.sender), detail),
                    out,
                );
            }
        }
        match self.install_grant(shared, topic, bytes) {
            Ok(Some(epoch)) => self.release(shared, &epoch, out),
            Ok(None) => {}
            Err(rejection) => Self::reject(shared, rejection, out),
        }
    }

    /// Handles one inbound data message.
    pub fn handle_data(
        &mut self,
        shared: &Shared,
        topic: &str,
        bytes: &[u8],
        redelivery: bool,
        out: &mut Vec<Inbound>,
    ) {
        // One clock read per message serves as both arrival time and now.
        let now_ms = shared.now_ms();
        let arrival = Arrival {
            topic,
            bytes,
            redelivery,
            arrived_ms: now_ms,
            now_ms,
        };
        self.handle_data_at(shared, &arrival, out);
    }

    fn handle_data_at(&mut self, shared: &Shared, arrival: &Arrival<'_>, out: &mut Vec<Inbound>) {
        let &Arrival {
            topic,
            bytes,
            now_ms,
            ..
        } = arrival;
        let message = match parse_message(bytes) {
            Ok(message) => message,
            Err(error) => {
                let rejection = Rejection::new(
                    topic,
                    Verdict::from_malformed(&error),
                    None,
                    error.to_string(),
                );
                return Self::reject(shared, rejection, out);
            }
        };
        let sender = message.sender;
        if let Err(error) = shared.policy.certificate(sender, now_ms / 1000) {
            let rejection = Rejection::new(
                topic,
                keyring_verdict(&error),
                Some(sender),
                error.to_string(),
            );
            return Self::reject(shared, rejection, out);
        }

        let mut installed = Vec::new();
        for grant in &message.grants {
            // Only grants addressed to this service matter; the rest are for
            // the other subscribers.
            let Ok(parsed) = parse_grant(grant) else {
                continue;
            };
            // Only this message's own epoch: a grant for any other epoch
            // would cost a Diffie-Hellman computation for nothing.
            if parsed.recipient != shared.name
                || parsed.sender != sender
                || parsed.session != message.session
                || parsed.epoch != message.epoch
            {
                continue;
            }
            match self.install_grant(shared, topic, grant) {
                Ok(Some(epoch)) => installed.push(epoch),
                Ok(None) => {}
                Err(rejection) => {
                    Metrics::bump(&shared.metrics.inline_grants_rejected);
                    let (log, suppressed) = shared.metrics.allow_log("inline-grant", now_ms);
                    if log {
                        warn!(
                            service = %shared.name,
                            topic,
                            sender,
                            verdict = rejection.verdict.as_str(),
                            detail = %rejection.detail,
                            suppressed_since_last = suppressed,
                            "ignored an inline grant"
                        );
                    }
                }
            }
        }

        self.open(shared, arrival, &message, out);
        for epoch in installed {
            self.release(shared, &epoch, out);
        }
    }

    fn open(
        &mut self,
        shared: &Shared,
        arrival: &Arrival<'_>,
        message: &ParsedMessage<'_>,
        out: &mut Vec<Inbound>,
    ) {
        let &Arrival {
            topic,
            bytes,
            redelivery,
            arrived_ms,
            now_ms,
        } = arrival;
        let sender = message.sender;
        let route = Route {
            context: &shared.context,
            topic,
        };
        let opened = match self.receiver.open(
            message,
            &OpenOptions {
                route,
                now_ms,
                redelivery,
            },
        ) {
            Ok(opened) => opened,
            Err(EnvelopeError::NoGrant { session, epoch, .. }) => {
                return self.hold(
                    shared,
                    topic,
                    bytes,
                    redelivery,
                    arrived_ms,
                    (sender.to_owned(), session, epoch),
                    out,
                );
            }
            Err(error) => {
                return Self::reject(
                    shared,
                    Rejection::from_envelope(topic, Some(sender), &error),
                    out,
                );
            }
        };
        if let Err(error) = shared
            .policy
            .authorize_publisher(sender, topic, now_ms / 1000)
        {
            let rejection = Rejection::new(
                topic,
                keyring_verdict(&error),
                Some(sender),
                error.to_string(),
            );
            return Self::reject(shared, rejection, out);
        }
        if let Err(error) = self.receiver.commit(&opened) {
            return Self::reject(
                shared,
                Rejection::from_envelope(topic, Some(sender), &error),
                out,
            );
        }
        Metrics::bump(&shared.metrics.delivered);
        debug!(service = %shared.name, topic, sender, epoch = opened.epoch, sequence = opened.sequence, "delivered message");
        out.push(Inbound::Delivered(Delivered {
            topic: topic.to_owned(),
            sender: opened.sender,
            envelope: opened.envelope,
            session: opened.session,
            epoch: opened.epoch,
            sequence: opened.sequence,
        }));
    }

    #[allow(clippy::too_many_arguments)]
    fn hold(
        &mut self,
        shared: &Shared,
        topic: &str,
        bytes: &[u8],
        redelivery: bool,
        arrived_ms: u64,
        epoch: EpochId,
        out: &mut Vec<Inbound>,
    ) {
        let now_ms = shared.now_ms();
        // A sender that may not publish here would be rejected after opening
        // anyway; checking first keeps junk out of the bounded buffer.
        if let Err(error) = shared
            .policy
            .authorize_publisher(&epoch.0, topic, now_ms / 1000)
        {
            let rejection = Rejection::new(
                topic,
                keyring_verdict(&error),
                Some(&epoch.0),
                error.to_string(),
            );
            return Self::reject(shared, rejection, out);
        }
        if self.held.len() >= MAX_HELD_MESSAGES || self.held_bytes + bytes.len() > MAX_HELD_BYTES {
            let detail = format!(
                "no grant yet for session {} epoch {} and the hold buffer is full",
                epoch.1, epoch.2
            );
            return Self::reject(
                shared,
                Rejection::new(topic, Verdict::NoGrant, Some(&epoch.0), detail),
                out,
            );
        }
        self.held_bytes += bytes.len();
        self.held.push_back(HeldMessage {
            topic: topic.to_owned(),
            bytes: bytes.to_vec(),
            redelivery,
            arrived_ms,
            epoch: epoch.clone(),
        });
        Metrics::bump(&shared.metrics.held);
        self.request_grant(shared, &epoch, now_ms, out);
    }

    fn request_grant(
        &mut self,
        shared: &Shared,
        epoch: &EpochId,
        now_ms: u64,
        out: &mut Vec<Inbound>,
    ) {
        if self
            .last_request_ms
            .get(epoch)
            .is_some_and(|last| now_ms.saturating_sub(*last) < GRANT_REQUEST_RETRY_MS)
        {
            return;
        }
        let Ok(certificate) = shared.policy.certificate(&epoch.0, now_ms / 1000) else {
            return;
        };
        let second = now_ms / 1000;
        if self.grant_requests.0 != second {
            self.grant_requests = (second, 0);
        }
        if self.grant_requests.1 >= MAX_GRANT_REQUESTS_PER_SECOND {
            // The tick repeats the request while the message waits.
            return;
        }
        self.grant_requests.1 += 1;
        let header = GrantRequestHeader {
            requester: &shared.name,
            publisher: &epoch.0,
            session: epoch.1,
            epoch: epoch.2,
            timestamp_ms: now_ms,
        };
        match seal_grant_request(&header, &shared.keypair, certificate.x25519_public(), None) {
            Ok(bytes) => {
                self.last_request_ms.insert(epoch.clone(), now_ms);
                Metrics::bump(&shared.metrics.grant_requests_sent);
                debug!(service = %shared.name, publisher = %epoch.0, session = epoch.1, epoch = epoch.2, "requesting grant");
                out.push(Inbound::Send {
                    topic: grant_request_topic(&epoch.0),
                    bytes,
                });
            }
            Err(error) => {
                warn!(service = %shared.name, publisher = %epoch.0, %error, "failed to seal a grant request")
            }
        }
    }

    /// Opens the held messages of an epoch whose grant just arrived.
    fn release(&mut self, shared: &Shared, epoch: &EpochId, out: &mut Vec<Inbound>) {
        self.last_request_ms.remove(epoch);
        let (ready, waiting): (VecDeque<HeldMessage>, VecDeque<HeldMessage>) =
            self.held.drain(..).partition(|held| &held.epoch == epoch);
        self.held = waiting;
        let now_ms = shared.now_ms();
        for held in ready {
            self.held_bytes -= held.bytes.len();
            let arrival = Arrival {
                topic: &held.topic,
                bytes: &held.bytes,
                redelivery: held.redelivery,
                arrived_ms: held.arrived_ms,
                now_ms,
            };
            self.handle_data_at(shared, &arrival, out);
        }
    }

    /// Expires held messages and repeats grant requests; call it about every
    /// few hundred milliseconds.
    pub fn tick(&mut self, shared: &Shared, out: &mut Vec<Inbound>) {
        let now_ms = shared.now_ms();
        while let Some(held) = self.held.front() {
            if now_ms.saturating_sub(held.arrived_ms) < MAX_HELD_AGE_MS {
                break;
            }
            let Some(held) = self.held.pop_front() else {
                break;
            };
            self.held_bytes -= held.bytes.len();
            let detail = format!(
                "no grant arrived within {MAX_HELD_AGE_MS} ms for session {} epoch {}",
                held.epoch.1, held.epoch.2
            );
            Self::reject(
                shared,
                Rejection::new(&held.topic, Verdict::NoGrant, Some(&held.epoch.0), detail),
                out,
            );
        }
        let waiting: Vec<EpochId> = {
            let mut epochs: Vec<EpochId> =
                self.held.iter().map(|held| held.epoch.clone()).collect();
            epochs.dedup();
            epochs
        };
        for epoch in waiting {
            self.request_grant(shared, &epoch, now_ms, out);
        }
        self.last_request_ms.retain(|epoch, last| {
            now_ms.saturating_sub(*last) < MAX_HELD_AGE_MS
                || self.held.iter().any(|held| &held.epoch == epoch)
        });
    }
}
