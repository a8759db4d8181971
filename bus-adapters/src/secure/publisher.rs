//! The publisher half: one epoch per audience, grants for every recipient,
//! inline grant repetition and answers to grant requests.
//!
//! The audience of a topic is every identity whose subscribe filters match
//! it. Topics with the same audience share an epoch, so a device service
//! that publishes on many topics creates few grants. A new epoch starts
//! when the audience changes (a new trust bundle), when an epoch is older
//! than [`EPOCH_MAX_AGE_MS`] or has sealed [`EPOCH_MAX_MESSAGES`], and a new
//! session starts with every engine, so receivers can tell a restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use sealbus_envelope::{
    parse_grant_request, seal_grant, EpochKeys, GrantHeader, MessageEnvelope, Route, SealOptions,
    SendingEpoch, SymmetricKey,
};
use sealbus_keyring::topic::validate_topic;
use tracing::{debug, info};

use super::control::grant_topic;
use super::metrics::Metrics;
use super::subscriber::{keyring_verdict, Rejection, Verdict};
use super::Shared;
use crate::error::AdapterError;

/// Maximum age of an epoch before the publisher starts a new one, in ms.
/// Bounds how long a leaked audience key stays useful; a leaked static key
/// keeps receiving grants until its certificate is revoked.
pub const EPOCH_MAX_AGE_MS: u64 = 60 * 60 * 1000;

/// Maximum number of messages sealed in one epoch before a new one starts,
/// far below the 2^64 sequence space.
pub const EPOCH_MAX_MESSAGES: u64 = 1 << 32;

/// Interval in ms at which data messages carry the epoch's grants again,
/// so late or restarted subscribers get them without asking.
pub const GRANT_REPEAT_INTERVAL_MS: u64 = 2_000;

/// Largest total size of grants carried inline in one message, in bytes.
/// Larger audiences get their grants through grant requests only.
pub const MAX_INLINE_GRANT_BYTES: usize = 16 * 1024;

/// Maximum number of live epochs (distinct audiences) kept; the least
/// recently used is dropped beyond it. Equal to the receivers' per-sender
/// epoch limit, so a receiver never retires an epoch its publisher still
/// uses.
pub const MAX_LIVE_EPOCHS: usize = sealbus_envelope::receiver::MAX_EPOCHS_PER_SENDER;

/// Maximum number of topics whose audience is cached. The cache is emptied
/// when it is full, because response topics carry request IDs and would
/// otherwise grow it without end.
pub const MAX_CACHED_TOPICS: usize = 4096;

/// How long in ms a topic's computed audience is reused before the trust
/// bundle is asked again, so certificates that expire or become valid
/// change the audience within this time.
pub const AUDIENCE_CACHE_TTL_MS: u64 = 60_000;

/// Minimum interval in ms between two responses to the same requester for
/// the same epoch. Requests in between are dropped.
pub const GRANT_ANSWER_INTERVAL_MS: u64 = 250;

/// Grant requests whose signature is checked per second at most, across
/// all requesters, since each check costs two X25519 operations.
pub const MAX_GRANT_REQUEST_CHECKS_PER_SECOND: u32 = 200;

/// Highest session number handed out in this process, so two engines
/// started in the same microsecond still get distinct, increasing sessions.
static LAST_SESSION: AtomicU64 = AtomicU64::new(0);

/// Random low bits of a session, so two processes that start in the same
/// millisecond under one identity still get different sessions.
const SESSION_RANDOM_BITS: u32 = 20;

fn next_session(now_ms: u64, random: u32) -> u64 {
    let random_mask = (1u64 << SESSION_RANDOM_BITS) - 1;
    let candidate = (now_ms << SESSION_RANDOM_BITS) | (u64::from(random) & random_mask);
    let mut last = LAST_SESSION.load(Ordering::Relaxed);
    loop {
        let session = candidate.max(last + 1);
        match LAST_SESSION.compare_exchange(last, session, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return session,
            Err(actual) => last = actual,
        }
    }
}

/// One member of an audience: its name and certified key.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Member {
    name: String,
    public: [u8; 32],
}

struct LiveEpoch {
    sending: SendingEpoch,
    /// Recipient names in slot order.
    recipients: Vec<String>,
    /// Grants in slot order.
    grants: Vec<Vec<u8>>,
    inline_allowed: bool,
    created_ms: u64,
    last_used_ms: u64,
    last_inline_ms: Option<u64>,
    last_answer_ms: HashMap<String, u64>,
}

/// Cached publishing state of one topic, so a stream of messages on it
/// skips the policy lookups and the audience hashing.
struct TopicEntry {
    members: Vec<Member>,
    computed_ms: u64,
    /// Second (Unix time) in which publishing here was last authorized.
    /// Certificate validity has one-second resolution, so the result stays
    /// valid for the rest of that second under the same policy.
    authorized_s: Option<u64>,
    /// Epoch last used for this audience. Epoch numbers are never reused, so
    /// a number whose epoch was dropped simply finds nothing.
    epoch: Option<u32>,
}

/// Sealing state of one service.
pub struct PublisherState {
    session: u64,
    next_epoch: u32,
    epochs: HashMap<u32, LiveEpoch>,
    by_audience: HashMap<Vec<Member>, u32>,
    topic_audience: HashMap<String, TopicEntry>,
    cached_policy_version: u64,
    request_checks: (u64, u32),
}

impl std::fmt::Debug for PublisherState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherState")
            .field("session", &self.session)
            .field("live_epochs", &self.epochs.len())
            .finish_non_exhaustive()
    }
}

impl PublisherState {
    /// Starts a new session at `now_ms`, with `random` as its low bits.
    pub fn new(now_ms: u64, random: u32) -> Self {
        Self {
            session: next_session(now_ms, random),
            next_epoch: 1,
            epochs: HashMap::new(),
            by_audience: HashMap::new(),
            topic_audience: HashMap::new(),
            cached_policy_version: 0,
            request_checks: (0, 0),
        }
    }

    /// Returns the session number.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Returns the number of topics whose audience is cached.
    pub fn cached_topics(&self) -> usize {
        self.topic_audience.len()
    }

    /// Returns the number of live epochs.
    pub fn live_epochs(&self) -> usize {
        self.epochs.len()
    }

    /// Drops every epoch, so the next message of each audience starts a new
    /// one (used after a trust bundle update).
    pub fn retire_all_epochs(&mut self) {
        self.epochs.clear();
        self.by_audience.clear();
        self.topic_audience.clear();
    }

    /// Returns the cache entry of `topic`, checking first, when asked, that
    /// this identity may publish there (at most once per second), and
    /// computing the audience when it is missing or older than
    /// [`AUDIENCE_CACHE_TTL_MS`].
    fn topic_entry(
        &mut self,
        shared: &Shared,
        topic: &str,
        now_ms: u64,
        check_authorization: bool,
    ) -> Result<&mut TopicEntry, AdapterError> {
        if self.cached_policy_version != shared.policy.version() {
            self.topic_audience.clear();
            self.cached_policy_version = shared.policy.version();
        }
        let now_s = now_ms / 1000;
        let fresh =
            |entry: &TopicEntry| now_ms.saturating_sub(entry.computed_ms) < AUDIENCE_CACHE_TTL_MS;
        let usable = self.topic_audience.get(topic).is_some_and(|entry| {
            fresh(entry) && (!check_authorization || entry.authorized_s == Some(now_s))
        });
        if !usable {
            // Authorization comes first, so an unauthorized publisher gets
            // that error rather than one about the audience.
            if check_authorization {
                shared
                    .policy
                    .authorize_publisher(&shared.name, topic, now_s)?;
            }
            if !self.topic_audience.get(topic).is_some_and(fresh) {
                let members = Self::audience(shared, topic, now_ms)?;
                if self.topic_audience.len() >= MAX_CACHED_TOPICS {
                    self.topic_audience.clear();
                }
                self.topic_audience.insert(
                    topic.to_owned(),
                    TopicEntry {
                        members,
                        computed_ms: now_ms,
                        authorized_s: None,
                        epoch: None,
                    },
                );
            }
        }
        match self.topic_audience.get_mut(topic) {
            Some(entry) => {
                if check_authorization {
                    entry.authorized_s = Some(now_s);
                }
                Ok(entry)
            }
            None => unreachable!("the entry was just checked or inserted"),
        }
    }

    fn audience(shared: &Shared, topic: &str, now_ms: u64) -> Result<Vec<Member>, AdapterError> {
        let members: Vec<Member> = shared
            .policy
            .audience(topic, now_ms / 1000)
            .into_iter()
            .map(|certificate| Member {
                name: certificate.name().as_str().to_owned(),
                public: *certificate.x25519_public(),
            })
            .collect();
        if members.is_empty() {
            return Err(AdapterError::NoAudience {
                topic: topic.to_owned(),
            });
        }
        if members.len() > sealbus_envelope::limits::MAX_RECIPIENTS {
            return Err(sealbus_envelope::EnvelopeError::AudienceSize {
                count: members.len(),
                max: sealbus_envelope::limits::MAX_RECIPIENTS,
            }
            .into());
        }
        Ok(members)
    }

    fn is_fresh(epoch: &LiveEpoch, now_ms: u64) -> bool {
        now_ms.saturating_sub(epoch.created_ms) < EPOCH_MAX_AGE_MS
            && epoch.sending.next_sequence() < EPOCH_MAX_MESSAGES
    }

    fn epoch_for(
        &mut self,
        shared: &mut Shared,
        members: Vec<Member>,
        now_ms: u64,
    ) -> Result<u32, AdapterError> {
        if let Some(&number) = self.by_audience.get(&members) {
            if self
                .epochs
                .get(&number)
                .is_some_and(|epoch| Self::is_fresh(epoch, now_ms))
            {
                return Ok(number);
            }
            self.epochs.remove(&number);
            self.by_audience.remove(&members);
        }
        if self.epochs.len() >= MAX_LIVE_EPOCHS {
            self.drop_least_recent_epoch();
        }
        let number = self.start_epoch(shared, &members, now_ms)?;
        self.by_audience.insert(members, number);
        Ok(number)
    }

    fn drop_least_recent_epoch(&mut self) {
        let oldest = self
            .epochs
            .iter()
            .min_by_key(|(_, epoch)| epoch.last_used_ms)
            .map(|(number, _)| *number);
        if let Some(number) = oldest {
            self.epochs.remove(&number);
            self.by_audience.retain(|_, candidate| *candidate != number);
        }
    }

    fn random_key(shared: &mut Shared) -> SymmetricKey {
        let mut bytes = [0u8; 32];
        shared.rng.fill_bytes(&mut bytes);
        let key = SymmetricKey::from_bytes(bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        key
    }

    fn start_epoch(
        &mut self,
        shared: &mut Shared,
        members: &[Member],
        now_ms: u64,
    ) -> Result<u32, AdapterError> {
        let number = self.next_epoch;
        self.next_epoch = number
            .checked_add(1)
            .ok_or(sealbus_envelope::EnvelopeError::SequenceExhausted { epoch: number })?;

        let audience_key = Self::random_key(shared);
        let origin_keys: Vec<SymmetricKey> =
            members.iter().map(|_| Self::random_key(shared)).collect();
        let audience_size = members.len() as u16;
        let mut grants = Vec::with_capacity(members.len());
        for (slot, member) in members.iter().enumerate() {
            let keys = EpochKeys {
                audience_key: audience_key.clone(),
                origin_key: origin_keys[slot].clone(),
                slot: slot as u16,
                audience_size,
            };
            let header = GrantHeader {
                sender: &shared.name,
                recipient: &member.name,
                session: self.session,
                epoch: number,
            };
            grants.push(seal_grant(
                &header,
                &keys,
                &shared.keypair,
                &member.public,
                None,
            )?);
            Metrics::bump(&shared.metrics.grants_created);
        }
        let sending = SendingEpoch::new(
            &shared.name,
            self.session,
            number,
            &audience_key,
            origin_keys,
        )?;
        let inline_bytes: usize = grants.iter().map(|grant| grant.len() + 2).sum();
        let recipients: Vec<String> = members.iter().map(|member| member.name.clone()).collect();
        info!(service = %shared.name, session = self.session, epoch = number, recipients = ?recipients, "started epoch");
        Metrics::bump(&shared.metrics.epochs_started);
        self.epochs.insert(
            number,
            LiveEpoch {
                sending,
                recipients,
                grants,
                inline_allowed: inline_bytes <= MAX_INLINE_GRANT_BYTES,
                created_ms: now_ms,
                last_used_ms: now_ms,
                last_inline_ms: None,
                last_answer_ms: HashMap::new(),
            },
        );
        Ok(number)
    }

    /// Seals an envelope for `topic`, starting an epoch first when needed.
    ///
    /// # Errors
    /// Returns [`AdapterError::Keyring`] when this identity may not publish
    /// on the topic or the topic is invalid, [`AdapterError::NoAudience`]
    /// when nobody may read it, and [`AdapterError::Envelope`] for fields
    /// the format cannot carry.
    pub fn seal(
        &mut self,
        shared: &mut Shared,
        topic: &str,
        envelope: &MessageEnvelope,
    ) -> Result<Vec<u8>, AdapterError> {
        self.seal_checked(shared, topic, envelope, true)
    }

    /// Seals without checking that this identity may publish on the topic,
    /// so tests and the demo can show receivers rejecting an unauthorized
    /// publisher. Never use it in a service.
    ///
    /// # Errors
    /// As [`seal`](Self::seal), less the authorization error.
    pub fn dangerously_seal_without_authorization(
        &mut self,
        shared: &mut Shared,
        topic: &str,
        envelope: &MessageEnvelope,
    ) -> Result<Vec<u8>, AdapterError> {
        self.seal_checked(shared, topic, envelope, false)
    }

    fn seal_checked(
        &mut self,
        shared: &mut Shared,
        topic: &str,
        envelope: &MessageEnvelope,
        check_authorization: bool,
    ) -> Result<Vec<u8>, AdapterError> {
        validate_topic(topic)?;
        let now_ms = shared.now_ms();
        let cached_epoch = self
            .topic_entry(shared, topic, now_ms, check_authorization)?
            .epoch;
        let number = match cached_epoch.filter(|number| {
            self.epochs
                .get(number)
                .is_some_and(|epoch| Self::is_fresh(epoch, now_ms))
        }) {
            Some(number) => number,
            None => {
                let members = self.topic_audience[topic].members.clone();
                let number = self.epoch_for(shared, members, now_ms)?;
                if let Some(entry) = self.topic_audience.get_mut(topic) {
                    entry.epoch = Some(number);
                }
                number
            }
        };
        let Some(epoch) = self.epochs.get_mut(&number) else {
            unreachable!("epoch_for returns a live epoch");
        };

        let inline = epoch.inline_allowed
            && epoch
                .last_inline_ms
                .is_none_or(|last| now_ms.saturating_sub(last) >= GRANT_REPEAT_INTERVAL_MS);
        let grants: &[Vec<u8>] = if inline { &epoch.grants } else { &[] };
        let route = Route {
            context: &shared.context,
            topic,
        };
        let bytes = epoch.sending.seal(
            envelope,
            &SealOptions {
                route,
                timestamp_ms: now_ms,
                grants,
            },
        )?;
        if inline {
            epoch.last_inline_ms = Some(now_ms);
        }
        epoch.last_used_ms = now_ms;
        Metrics::bump(&shared.metrics.sealed);
        Ok(bytes)
    }

    fn allow_request_check(&mut self, now_ms: u64) -> bool {
        let second = now_ms / 1000;
        if self.request_checks.0 != second {
            self.request_checks = (second, 0);
        }
        if self.request_checks.1 >= MAX_GRANT_REQUEST_CHECKS_PER_SECOND {
            return false;
        }
        self.request_checks.1 += 1;
        true
    }

    /// Checks a grant request and returns the topic and grant to send back.
    ///
    /// # Errors
    /// Returns the [`Rejection`] to count and log; nothing is sent then.
    pub fn answer_grant_request(
        &mut self,
        shared: &Shared,
        topic: &str,
        bytes: &[u8],
    ) -> Result<(String, Vec<u8>), Rejection> {
        let reject = |verdict, sender: Option<&str>, detail: String| {
            Rejection::new(topic, verdict, sender, detail)
        };
        let request = parse_grant_request(bytes)
            .map_err(|error| reject(Verdict::from_malformed(&error), None, error.to_string()))?;
        let requester = request.requester;
        if request.publisher != shared.name {
            return Err(reject(
                Verdict::WrongRecipient,
                Some(requester),
                format!("grant request is addressed to {}", request.publisher),
            ));
        }
        if request.session != self.session {
            return Err(reject(
                Verdict::Replay,
                Some(requester),
                format!(
                    "grant request names session {}, not the current one",
                    request.session
                ),
            ));
        }
        let now_ms = shared.now_ms();
        let Some(epoch) = self.epochs.get(&request.epoch) else {
            return Err(reject(
                Verdict::NoGrant,
                Some(requester),
                format!("epoch {} is no longer live", request.epoch),
            ));
        };
        let Some(slot) = epoch.recipients.iter().position(|name| name == requester) else {
            return Err(reject(
                Verdict::Unauthorized,
                Some(requester),
                format!(
                    "{requester} is not in the audience of epoch {}",
                    request.epoch
                ),
            ));
        };
        if epoch
            .last_answer_ms
            .get(requester)
            .is_some_and(|last| now_ms.saturating_sub(*last) < GRANT_ANSWER_INTERVAL_MS)
        {
            return Err(reject(
                Verdict::RateLimited,
                Some(requester),
                "answered the same request moments ago".into(),
            ));
        }
        let certificate = shared
            .policy
            .certificate(requester, now_ms / 1000)
            .map_err(|error| reject(keyring_verdict(&error), Some(requester), error.to_string()))?;
        let requester_public = *certificate.x25519_public();
        if !self.allow_request_check(now_ms) {
            return Err(reject(
                Verdict::RateLimited,
                Some(requester),
                "too many grant requests this second".into(),
            ));
        }
        request
            .verify(&shared.name, &shared.keypair, &requester_public, now_ms)
            .map_err(|error| Rejection::from_envelope(topic, Some(requester), &error))?;

        let Some(epoch) = self.epochs.get_mut(&request.epoch) else {
            return Err(reject(
                Verdict::NoGrant,
                Some(requester),
                "epoch retired".into(),
            ));
        };
        epoch.last_answer_ms.insert(requester.to_owned(), now_ms);
        debug!(service = %shared.name, requester, epoch = request.epoch, "sending a grant in response to a request");
        Metrics::bump(&shared.metrics.grant_requests_answered);
        Ok((grant_topic(requester), epoch.grants[slot].clone()))
    }
}
