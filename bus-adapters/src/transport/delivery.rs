//! Hand-off of received messages to the caller, and reconnect pacing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::Incoming;

/// Capacity of the incoming message channel, in messages. At the default
/// 256 KiB `MaxMessageSize` a full channel contains at most 64 MiB of messages.
pub const INCOMING_CHANNEL_CAPACITY: usize = 256;

/// How long a background task waits for room in a full incoming channel before
/// it drops the message. The wait absorbs bursts, and the limit keeps a
/// receiver that is itself waiting on the transport (for example on a
/// `subscribe` confirmation) from stalling the event loop for good.
pub const INCOMING_FULL_WAIT: Duration = Duration::from_secs(2);

/// First delay before reconnecting after a connection loss. It keeps a broker
/// that refuses connections from being hit in a busy loop.
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);

/// Maximum delay between reconnect attempts, so that a restarted broker is
/// found again within a few seconds.
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);

/// The outcome of handing one message to the caller.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The message is in the channel.
    Delivered,
    /// The channel stayed full, so the message was dropped and counted.
    Dropped,
    /// The receiver was dropped, so the caller no longer reads messages.
    Closed,
}

/// The sending side of the incoming channel with the full-channel policy.
///
/// When the channel is full, the first message waits up to
/// [`INCOMING_FULL_WAIT`]. If that wait runs out, the sender switches to
/// overflow mode, where each message is dropped at once while the channel is
/// full, until one fits again. A stalled receiver so costs one wait, not one
/// per message.
#[derive(Clone)]
pub(crate) struct IncomingSender {
    channel: mpsc::Sender<Incoming>,
    overflow: Arc<OverflowState>,
    full_wait: Duration,
    address: Arc<str>,
}

struct OverflowState {
    overflowing: AtomicBool,
    dropped: AtomicU64,
}

impl IncomingSender {
    /// Creates the bounded incoming channel for the transport of `address`.
    pub(crate) fn channel(address: &str) -> (Self, mpsc::Receiver<Incoming>) {
        Self::channel_with(address, INCOMING_CHANNEL_CAPACITY, INCOMING_FULL_WAIT)
    }

    pub(crate) fn channel_with(
        address: &str,
        capacity: usize,
        full_wait: Duration,
    ) -> (Self, mpsc::Receiver<Incoming>) {
        let (sender, receiver) = mpsc::channel(capacity);
        let incoming = IncomingSender {
            channel: sender,
            overflow: Arc::new(OverflowState {
                overflowing: AtomicBool::new(false),
                dropped: AtomicU64::new(0),
            }),
            full_wait,
            address: Arc::from(address),
        };
        (incoming, receiver)
    }

    /// Hands `message` to the receiver following the full-channel policy.
    pub(crate) async fn deliver(&self, message: Incoming) -> Delivery {
        if self.overflow.overflowing.load(Ordering::Acquire) {
            return self.deliver_overflowing(message);
        }

        let topic = message.topic.clone();
        match tokio::time::timeout(self.full_wait, self.channel.send(message)).await {
            Ok(Ok(())) => Delivery::Delivered,
            Ok(Err(_)) => Delivery::Closed,
            Err(_) => {
                self.overflow.overflowing.store(true, Ordering::Release);
                self.record_drop(&topic);
                Delivery::Dropped
            }
        }
    }

    fn deliver_overflowing(&self, message: Incoming) -> Delivery {
        match self.channel.try_send(message) {
            Ok(()) => {
                self.overflow.overflowing.store(false, Ordering::Release);
                tracing::info!(
                    broker = %self.address,
                    dropped_total = self.overflow.dropped.load(Ordering::Relaxed),
                    "incoming channel has room again; delivery resumed"
                );
                Delivery::Delivered
            }
            Err(TrySendError::Full(message)) => {
                self.record_drop(&message.topic);
                Delivery::Dropped
            }
            Err(TrySendError::Closed(_)) => Delivery::Closed,
        }
    }

    fn record_drop(&self, topic: &str) {
        let dropped = self.overflow.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // Logs the 1st, 2nd, 4th, 8th ... drop, so a stalled receiver cannot flood the log.
        if dropped.is_power_of_two() {
            tracing::warn!(
                broker = %self.address,
                topic,
                dropped_total = dropped,
                "incoming channel is full; dropped a message because the receiver is not reading"
            );
        }
    }

    /// Returns how many messages were dropped because the channel was full.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.overflow.dropped.load(Ordering::Relaxed)
    }
}

/// Counts dropped oversized messages and decides which drops to log.
#[derive(Default)]
pub(crate) struct DropCounter {
    count: u64,
}

impl DropCounter {
    /// Counts one drop and returns the total when it is a power of two, so the
    /// caller logs the 1st, 2nd, 4th ... drop only.
    pub(crate) fn record(&mut self) -> Option<u64> {
        self.count += 1;
        self.count.is_power_of_two().then_some(self.count)
    }
}

/// Exponential reconnect delay from [`RECONNECT_DELAY_MIN`] doubling up to
/// [`RECONNECT_DELAY_MAX`].
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            next: RECONNECT_DELAY_MIN,
        }
    }

    /// Returns the delay before the next attempt and doubles the one after it.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(RECONNECT_DELAY_MAX);
        delay
    }

    /// Starts over at the minimum delay after a successful connection.
    pub(crate) fn reset(&mut self) {
        self.next = RECONNECT_DELAY_MIN;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn message(topic: &str) -> Incoming {
        Incoming {
            topic: topic.to_owned(),
            payload: Bytes::from_static(b"x"),
            duplicate: false,
        }
    }

    #[test]
    fn backoff_doubles_to_maximum_and_resets() {
        let mut backoff = Backoff::new();
        assert_eq!(backoff.next_delay(), RECONNECT_DELAY_MIN);
        assert_eq!(backoff.next_delay(), RECONNECT_DELAY_MIN * 2);
        for _ in 0..20 {
            assert!(backoff.next_delay() <= RECONNECT_DELAY_MAX);
        }
        assert_eq!(backoff.next_delay(), RECONNECT_DELAY_MAX);
        backoff.reset();
        assert_eq!(backoff.next_delay(), RECONNECT_DELAY_MIN);
    }

    #[test]
    fn drop_counter_logs_powers_of_two() {
        let mut counter = DropCounter::default();
        let logged: Vec<u64> = (0..9).filter_map(|_| counter.record()).collect();
        assert_eq!(logged, vec![1, 2, 4, 8]);
    }

    #[tokio::test]
    async fn full_channel_drops_then_resumes() {
        let (sender, mut receiver) = IncomingSender::channel_with("test", 1, Duration::ZERO);
        assert_eq!(sender.deliver(message("a")).await, Delivery::Delivered);
        assert_eq!(sender.deliver(message("b")).await, Delivery::Dropped);
        assert_eq!(sender.deliver(message("c")).await, Delivery::Dropped);
        assert_eq!(sender.dropped(), 2);

        assert_eq!(receiver.recv().await.unwrap().topic, "a");
        assert_eq!(sender.deliver(message("d")).await, Delivery::Delivered);
        assert_eq!(receiver.recv().await.unwrap().topic, "d");
    }

    #[tokio::test]
    async fn full_channel_waits_for_room() {
        let (sender, mut receiver) =
            IncomingSender::channel_with("test", 1, Duration::from_secs(60));
        assert_eq!(sender.deliver(message("a")).await, Delivery::Delivered);

        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { sender.deliver(message("b")).await }
        });
        assert_eq!(receiver.recv().await.unwrap().topic, "a");
        assert_eq!(waiting.await.unwrap(), Delivery::Delivered);
        assert_eq!(receiver.recv().await.unwrap().topic, "b");
        assert_eq!(sender.dropped(), 0);
    }

    #[tokio::test]
    async fn closed_receiver_reported() {
        let (sender, receiver) = IncomingSender::channel("test");
        drop(receiver);
        assert_eq!(sender.deliver(message("a")).await, Delivery::Closed);
    }
}
