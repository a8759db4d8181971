//! The receiving side: installed grants and replay windows of every sender,
//! with bounded memory.
//!
//! State per sender: the newest publisher session seen, the epochs granted
//! in it, and a floor below which epochs are retired. A grant or message of
//! an older session, or of a retired epoch, is stale and rejected. Memory is
//! bounded by [`MAX_SENDERS`] and [`MAX_EPOCHS_PER_SENDER`]; evicting a
//! sender forgets its replay state, which leaves a replay opening of at most
//! [`MAX_MESSAGE_AGE_MS`](crate::limits::MAX_MESSAGE_AGE_MS) for that sender.

use std::collections::HashMap;

use crate::aead::AudienceCipher;
use crate::check_timestamp;
use crate::edgex::MessageEnvelope;
use crate::error::EnvelopeError;
use crate::keys::EpochKeys;
use crate::message::{ParsedMessage, Route};
use crate::origin::OriginKey;
use crate::replay::{ReplayWindow, WindowRejection};

/// Maximum number of senders whose state a receiver keeps. The least
/// recently used sender is evicted beyond it.
pub const MAX_SENDERS: usize = 4096;

/// Maximum number of live epochs kept per sender. A publisher uses one epoch
/// per distinct audience and rotates them, so a handful is typical.
pub const MAX_EPOCHS_PER_SENDER: usize = 64;

struct ReceivingEpoch {
    keys: EpochKeys,
    cipher: AudienceCipher,
    origin_key: OriginKey,
    window: ReplayWindow,
}

/// The installed epochs of one sender, sorted by epoch number. A sender
/// rarely has more than a few, so a vector is smaller than a tree, whose
/// first node alone has room for eleven.
#[derive(Default)]
struct EpochList(Vec<(u32, ReceivingEpoch)>);

impl EpochList {
    fn position(&self, epoch: u32) -> Result<usize, usize> {
        self.0.binary_search_by_key(&epoch, |(number, _)| *number)
    }

    fn contains_key(&self, epoch: &u32) -> bool {
        self.position(*epoch).is_ok()
    }

    fn get(&self, epoch: &u32) -> Option<&ReceivingEpoch> {
        self.position(*epoch).ok().map(|index| &self.0[index].1)
    }

    fn get_mut(&mut self, epoch: &u32) -> Option<&mut ReceivingEpoch> {
        self.position(*epoch).ok().map(|index| &mut self.0[index].1)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    fn lowest(&self) -> Option<u32> {
        self.0.first().map(|(number, _)| *number)
    }

    fn remove(&mut self, epoch: &u32) {
        if let Ok(index) = self.position(*epoch) {
            self.0.remove(index);
        }
    }

    fn insert(&mut self, epoch: u32, state: ReceivingEpoch) {
        match self.position(epoch) {
            Ok(index) => self.0[index].1 = state,
            Err(index) => self.0.insert(index, (epoch, state)),
        }
    }
}

struct SenderState {
    session: u64,
    /// Epochs below this number are retired in the current session.
    retired_below: u32,
    epochs: EpochList,
    last_used: u64,
}

/// Outcome of installing a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOutcome {
    /// The epoch is new and now installed.
    Installed,
    /// The epoch was already installed with the same keys; nothing changed.
    AlreadyInstalled,
    /// The epoch was already installed with different keys; the first keys
    /// stay. Only the publisher can make a valid grant, so this means a
    /// publisher defect or a compromised receiver key, and is worth a warning.
    Conflicting,
}

/// An authenticated message that has not been committed to the replay
/// window yet. The caller checks authorization, then calls
/// [`Receiver::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Verified sender name.
    pub sender: String,
    /// Publisher session.
    pub session: u64,
    /// Epoch.
    pub epoch: u32,
    /// Sequence number.
    pub sequence: u64,
    /// Unix time of sealing in milliseconds.
    pub timestamp_ms: u64,
    /// The EdgeX envelope, with `receivedTopic` set to the topic it arrived on.
    pub envelope: MessageEnvelope,
}

/// Options of one open operation.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions<'a> {
    /// Route the message arrived on.
    pub route: Route<'a>,
    /// Unix time in milliseconds now.
    pub now_ms: u64,
    /// Whether the transport marked the delivery as a redelivery (MQTT DUP),
    /// so a repeat is reported as a duplicate rather than a replay.
    pub redelivery: bool,
}

/// Grant and replay state of one receiving service.
#[derive(Default)]
pub struct Receiver {
    senders: HashMap<String, SenderState>,
    clock: u64,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("senders", &self.senders.len())
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Creates a receiver with no grants.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the number of senders with state.
    pub fn sender_count(&self) -> usize {
        self.senders.len()
    }

    /// Returns whether keys for this sender, session and epoch are installed.
    pub fn has_epoch(&self, sender: &str, session: u64, epoch: u32) -> bool {
        self.senders
            .get(sender)
            .is_some_and(|state| state.session == session && state.epochs.contains_key(&epoch))
    }

    /// Returns whether a grant for this epoch would be stale (older session
    /// or retired epoch), so a caller can skip the Diffie-Hellman work of
    /// opening it.
    pub fn is_stale(&self, sender: &str, session: u64, epoch: u32) -> bool {
        self.senders.get(sender).is_some_and(|state| {
            session < state.session || (session == state.session && epoch < state.retired_below)
        })
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Installs the keys of an opened grant.
    ///
    /// # Errors
    /// Returns [`EnvelopeError::StaleEpoch`] for a grant of an older session
    /// or a retired epoch.
    pub fn install(
        &mut self,
        sender: &str,
        session: u64,
        epoch: u32,
        keys: EpochKeys,
    ) -> Result<GrantOutcome, EnvelopeError> {
        let stale = || EnvelopeError::StaleEpoch {
            sender: sender.to_owned(),
            session,
            epoch,
        };
        if self.is_stale(sender, session, epoch) {
            return Err(stale());
        }
        let now = self.tick();
        if !self.senders.contains_key(sender) && self.senders.len() >= MAX_SENDERS {
            self.evict_least_recent_sender();
        }
        let state = self
            .senders
            .entry(sender.to_owned())
            .or_insert_with(|| SenderState {
                session,
                retired_below: 0,
                epochs: EpochList::default(),
                last_used: now,
            });
        state.last_used = now;

        if session > state.session {
            // The publisher restarted: everything of its older session is stale.
            state.session = session;
            state.retired_below = 0;
            state.epochs.clear();
        }
        if let Some(existing) = state.epochs.get(&epoch) {
            return Ok(if existing.keys == keys {
                GrantOutcome::AlreadyInstalled
            } else {
                GrantOutcome::Conflicting
            });
        }
        if state.epochs.len() >= MAX_EPOCHS_PER_SENDER {
            if let Some(oldest) = state.epochs.lowest() {
                if epoch < oldest {
                    return Err(stale());
                }
                state.epochs.remove(&oldest);
                state.retired_below = state.retired_below.max(oldest.saturating_add(1));
            }
        }
        let cipher = AudienceCipher::new(&keys.audience_key);
        let origin_key = OriginKey::new(&keys.origin_key);
        state.epochs.insert(
            epoch,
            ReceivingEpoch {
                keys,
                cipher,
                origin_key,
                window: ReplayWindow::new(),
            },
        );
        Ok(GrantOutcome::Installed)
    }

    fn evict_least_recent_sender(&mut self) {
        let oldest = self
            .senders
            .iter()
            .min_by_key(|(_, state)| state.last_used)
            .map(|(name, _)| name.clone());
        if let Some(name) = oldest {
            self.senders.remove(&name);
        }
    }

    fn lookup(&self, message: &ParsedMessage<'_>) -> Result<&ReceivingEpoch, EnvelopeError> {
        let no_grant = || EnvelopeError::NoGrant {
            sender: message.sender.to_owned(),
            session: message.session,
            epoch: message.epoch,
        };
        let stale = || EnvelopeError::StaleEpoch {
            sender: message.sender.to_owned(),
            session: message.session,
            epoch: message.epoch,
        };
        let state = self.senders.get(message.sender).ok_or_else(no_grant)?;
        if message.session < state.session
            || (message.session == state.session && message.epoch < state.retired_below)
        {
            return Err(stale());
        }
        if message.session > state.session {
            return Err(no_grant());
        }
        state.epochs.get(&message.epoch).ok_or_else(no_grant)
    }

    fn window_error(
        message: &ParsedMessage<'_>,
        rejection: WindowRejection,
        redelivery: bool,
    ) -> EnvelopeError {
        let sender = message.sender.to_owned();
        let (epoch, sequence) = (message.epoch, message.sequence);
        match rejection {
            WindowRejection::Seen if redelivery => EnvelopeError::Duplicate {
                sender,
                epoch,
                sequence,
            },
            WindowRejection::Seen | WindowRejection::TooOld => EnvelopeError::Replay {
                sender,
                epoch,
                sequence,
            },
        }
    }

    /// Authenticates a parsed message without changing any state: grant
    /// lookup, timestamp bounds, replay pre-check, AEAD, then origin tag.
    ///
    /// # Errors
    /// Returns [`EnvelopeError::NoGrant`] when no grant is installed yet,
    /// [`EnvelopeError::StaleEpoch`], [`EnvelopeError::Expired`],
    /// [`EnvelopeError::FromFuture`], [`EnvelopeError::Replay`] or
    /// [`EnvelopeError::Duplicate`], an opaque
    /// [`EnvelopeError::Authentication`] for a forged or altered message,
    /// and [`EnvelopeError::Malformed`] for an undecodable body.
    pub fn open(
        &self,
        message: &ParsedMessage<'_>,
        options: &OpenOptions<'_>,
    ) -> Result<Opened, EnvelopeError> {
        let epoch = self.lookup(message)?;
        check_timestamp(message.timestamp_ms, options.now_ms)?;
        epoch
            .window
            .check(message.sequence)
            .map_err(|rejection| Self::window_error(message, rejection, options.redelivery))?;
        let envelope = message.decrypt(
            &options.route,
            &epoch.cipher,
            &epoch.origin_key,
            &epoch.keys,
        )?;
        Ok(Opened {
            sender: message.sender.to_owned(),
            session: message.session,
            epoch: message.epoch,
            sequence: message.sequence,
            timestamp_ms: message.timestamp_ms,
            envelope,
        })
    }

    /// Marks an opened message as accepted in its replay window. Call it only
    /// after the authorization check passed, right before delivery.
    ///
    /// # Errors
    /// Returns [`EnvelopeError::Replay`] if the same message was committed
    /// in between, and [`EnvelopeError::StaleEpoch`] if its epoch was retired
    /// in between.
    pub fn commit(&mut self, opened: &Opened) -> Result<(), EnvelopeError> {
        let now = self.tick();
        let stale = || EnvelopeError::StaleEpoch {
            sender: opened.sender.clone(),
            session: opened.session,
            epoch: opened.epoch,
        };
        let state = self.senders.get_mut(&opened.sender).ok_or_else(stale)?;
        if state.session != opened.session {
            return Err(stale());
        }
        state.last_used = now;
        let epoch = state.epochs.get_mut(&opened.epoch).ok_or_else(stale)?;
        epoch
            .window
            .commit(opened.sequence)
            .map_err(|_| EnvelopeError::Replay {
                sender: opened.sender.clone(),
                epoch: opened.epoch,
                sequence: opened.sequence,
            })
    }
}
