//! The background task that owns the Redis pub/sub connection.

use std::collections::BTreeSet;
use std::time::Duration;

use ::redis::aio::{PubSub, PubSubSink, PubSubStream};
use ::redis::{Msg, RedisError};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, timeout, Instant};

use super::channels::{CopySource, CopyTracker, RedisSubscriptions};
use super::publish_command_size;
use crate::error::AdapterError;
use crate::transport::delivery::{Backoff, Delivery, DropCounter, IncomingSender};
use crate::transport::{mqtt_filter_matches, ConnectionState, Incoming};

/// Idle time after which the subscriber sends PING to check the connection.
pub(super) const PING_INTERVAL: Duration = Duration::from_secs(10);

/// How long the subscriber waits for the reply to PING before it reconnects.
pub(super) const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// A request from the transport handle.
pub(super) enum Command {
    Subscribe {
        filters: Vec<String>,
        reply: oneshot::Sender<Result<(), AdapterError>>,
    },
    Unsubscribe {
        filters: Vec<String>,
        reply: oneshot::Sender<Result<(), AdapterError>>,
    },
}

/// Settings of the subscriber task.
pub(super) struct SubscriberSettings {
    pub(super) client: ::redis::Client,
    pub(super) address: String,
    pub(super) connect_timeout: Duration,
    pub(super) max_message_size: usize,
}

/// The pub/sub connection, split so that subscription changes and message
/// reading do not block each other.
struct Connection {
    sink: PubSubSink,
    stream: PubSubStream,
}

/// Failure of a subscription change.
enum ChangeError {
    /// The connection failed, so the change waits for the next connection.
    ConnectionLost(RedisError),
    /// Redis returned an error reply.
    Rejected(RedisError),
}

pub(super) struct SubscriberTask {
    settings: SubscriberSettings,
    commands: mpsc::Receiver<Command>,
    shutdown: watch::Receiver<bool>,
    state: watch::Sender<ConnectionState>,
    incoming: IncomingSender,
    /// MQTT filters the caller subscribed to.
    filters: BTreeSet<String>,
    /// Subscriptions of the current connection.
    active: RedisSubscriptions,
    /// Subscribe replies waiting for the next successful connection.
    deferred: Vec<oneshot::Sender<Result<(), AdapterError>>>,
    generation: u64,
    backoff: Backoff,
    copies: CopyTracker,
    oversized: DropCounter,
    /// When to check an idle connection with PING.
    next_ping: Instant,
}

impl SubscriberTask {
    pub(super) fn new(
        settings: SubscriberSettings,
        commands: mpsc::Receiver<Command>,
        shutdown: watch::Receiver<bool>,
        state: watch::Sender<ConnectionState>,
        incoming: IncomingSender,
    ) -> Self {
        SubscriberTask {
            settings,
            commands,
            shutdown,
            state,
            incoming,
            filters: BTreeSet::new(),
            active: RedisSubscriptions::default(),
            deferred: Vec::new(),
            generation: 1,
            backoff: Backoff::new(),
            copies: CopyTracker::default(),
            oversized: DropCounter::default(),
            next_ping: Instant::now() + PING_INTERVAL,
        }
    }

    /// Runs until shutdown, starting with the connection made by `connect`.
    pub(super) async fn run(mut self, first: PubSub) {
        let (sink, stream) = first.split();
        let mut connection = Some(Connection { sink, stream });
        let mut retry_at = Instant::now();

        loop {
            let keep_running = match connection.as_mut() {
                Some(current) => self.serve(current).await,
                None => self.wait_and_reconnect(&mut connection, retry_at).await,
            };
            match keep_running {
                Step::Stop => break,
                Step::Continue => {}
                Step::Lost(error) => {
                    connection = None;
                    retry_at = Instant::now() + self.backoff.next_delay();
                    self.connection_lost(&error);
                }
                Step::RetryLater => retry_at = Instant::now() + self.backoff.next_delay(),
            }
        }
        self.finish();
    }

    /// Handles one command or message on a live connection.
    async fn serve(&mut self, connection: &mut Connection) -> Step {
        tokio::select! {
            biased;
            () = stop_requested(&mut self.shutdown) => Step::Stop,
            command = self.commands.recv() => match command {
                Some(command) => self.apply_connected(&mut connection.sink, command).await,
                None => Step::Stop,
            },
            message = connection.stream.next() => match message {
                Some(message) => {
                    self.next_ping = Instant::now() + PING_INTERVAL;
                    self.deliver(message).await;
                    Step::Continue
                }
                None => Step::Lost("the pub/sub stream ended".to_owned()),
            },
            () = sleep_until(self.next_ping) => self.ping(&mut connection.sink).await,
        }
    }

    /// Checks that an idle connection still works. A connection whose peer
    /// vanished without closing TCP would otherwise wait for messages forever.
    async fn ping(&mut self, sink: &mut PubSubSink) -> Step {
        self.next_ping = Instant::now() + PING_INTERVAL;
        match timeout(PING_TIMEOUT, sink.ping::<::redis::Value>()).await {
            Ok(Ok(_)) => Step::Continue,
            Ok(Err(error)) => Step::Lost(format!("PING failed: {error}")),
            Err(_) => Step::Lost(format!("no reply to PING within {PING_TIMEOUT:?}")),
        }
    }

    /// Waits for the retry time while still handling commands, then reconnects.
    async fn wait_and_reconnect(
        &mut self,
        connection: &mut Option<Connection>,
        retry_at: Instant,
    ) -> Step {
        tokio::select! {
            biased;
            () = stop_requested(&mut self.shutdown) => Step::Stop,
            command = self.commands.recv() => match command {
                Some(command) => {
                    self.apply_disconnected(command);
                    Step::Continue
                }
                None => Step::Stop,
            },
            () = sleep_until(retry_at) => match self.reconnect().await {
                Ok(restored) => {
                    *connection = Some(restored);
                    Step::Continue
                }
                Err(error) => {
                    tracing::debug!(broker = %self.settings.address, error = %error, "Redis reconnect attempt failed");
                    Step::RetryLater
                }
            },
        }
    }

    async fn apply_connected(&mut self, sink: &mut PubSubSink, command: Command) -> Step {
        match command {
            Command::Subscribe { filters, reply } => {
                let new_filters: Vec<String> = filters
                    .into_iter()
                    .filter(|filter| !self.filters.contains(filter))
                    .collect();
                self.filters.extend(new_filters.iter().cloned());
                let desired = RedisSubscriptions::for_filters(&self.filters);
                let missing = desired.difference(&self.active);

                match self.change(sink, &missing, true).await {
                    Ok(()) => {
                        self.active = desired;
                        let _ = reply.send(Ok(()));
                        Step::Continue
                    }
                    Err(ChangeError::ConnectionLost(error)) => {
                        // The filters stay in the set, so the next connection subscribes them.
                        self.deferred.push(reply);
                        Step::Lost(error.to_string())
                    }
                    Err(ChangeError::Rejected(error)) => {
                        for filter in &new_filters {
                            self.filters.remove(filter);
                        }
                        let filter = new_filters.first().cloned().unwrap_or_default();
                        let _ = reply.send(Err(AdapterError::SubscribeFailed {
                            filter,
                            reason: format!("Redis rejected the subscription: {error}"),
                        }));
                        Step::Continue
                    }
                }
            }
            Command::Unsubscribe { filters, reply } => {
                for filter in &filters {
                    self.filters.remove(filter);
                }
                let desired = RedisSubscriptions::for_filters(&self.filters);
                let unwanted = self.active.difference(&desired);

                let result = self.change(sink, &unwanted, false).await;
                // Either way the subscription is gone: removed by Redis, or lost
                // with the connection and not restored because the filter left the set.
                let _ = reply.send(Ok(()));
                match result {
                    Ok(()) => {
                        self.active = desired;
                        Step::Continue
                    }
                    Err(ChangeError::ConnectionLost(error)) => Step::Lost(error.to_string()),
                    Err(ChangeError::Rejected(error)) => {
                        tracing::warn!(broker = %self.settings.address, error = %error, "Redis rejected an unsubscribe");
                        Step::Continue
                    }
                }
            }
        }
    }

    fn apply_disconnected(&mut self, command: Command) {
        match command {
            Command::Subscribe { filters, reply } => {
                self.filters.extend(filters);
                self.deferred.push(reply);
            }
            Command::Unsubscribe { filters, reply } => {
                for filter in &filters {
                    self.filters.remove(filter);
                }
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Sends (P)SUBSCRIBE or (P)UNSUBSCRIBE for `subscriptions` and waits for
    /// every confirmation.
    async fn change(
        &self,
        sink: &mut PubSubSink,
        subscriptions: &RedisSubscriptions,
        subscribe: bool,
    ) -> Result<(), ChangeError> {
        let channels: Vec<&String> = subscriptions.channels.iter().collect();
        let patterns: Vec<&String> = subscriptions.patterns.iter().collect();
        let result = async {
            match (subscribe, channels.is_empty()) {
                (true, false) => sink.subscribe(&channels).await?,
                (false, false) => sink.unsubscribe(&channels).await?,
                _ => {}
            }
            match (subscribe, patterns.is_empty()) {
                (true, false) => sink.psubscribe(&patterns).await?,
                (false, false) => sink.punsubscribe(&patterns).await?,
                _ => {}
            }
            Ok::<(), RedisError>(())
        }
        .await;

        result.map_err(|error| {
            if is_connection_error(&error) {
                ChangeError::ConnectionLost(error)
            } else {
                ChangeError::Rejected(error)
            }
        })
    }

    /// Opens a new pub/sub connection and subscribes every current filter.
    async fn reconnect(&mut self) -> Result<Connection, String> {
        let connect_timeout = self.settings.connect_timeout;
        let pubsub = match timeout(connect_timeout, self.settings.client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err(format!("connecting timed out after {connect_timeout:?}")),
        };
        let (mut sink, stream) = pubsub.split();

        let desired = RedisSubscriptions::for_filters(&self.filters);
        match timeout(connect_timeout, self.change(&mut sink, &desired, true)).await {
            Ok(Ok(())) => {}
            Ok(Err(ChangeError::ConnectionLost(error) | ChangeError::Rejected(error))) => {
                return Err(format!("resubscribing failed: {error}"))
            }
            Err(_) => return Err(format!("resubscribing timed out after {connect_timeout:?}")),
        }

        self.active = desired;
        self.generation += 1;
        self.backoff.reset();
        self.state.send_replace(ConnectionState::Connected {
            generation: self.generation,
        });
        tracing::info!(
            broker = %self.settings.address,
            generation = self.generation,
            channels = self.active.channels.len(),
            patterns = self.active.patterns.len(),
            "reconnected to Redis and restored subscriptions"
        );
        for reply in self.deferred.drain(..) {
            let _ = reply.send(Ok(()));
        }
        self.next_ping = Instant::now() + PING_INTERVAL;
        Ok(Connection { sink, stream })
    }

    fn connection_lost(&mut self, error: &str) {
        self.active = RedisSubscriptions::default();
        self.copies = CopyTracker::default();
        self.state.send_replace(ConnectionState::Connecting);
        tracing::warn!(
            broker = %self.settings.address,
            error,
            "lost Redis pub/sub connection; reconnecting"
        );
    }

    async fn deliver(&mut self, message: Msg) {
        let payload = Bytes::copy_from_slice(message.get_payload_bytes());
        let Ok(topic) = message.get_channel::<String>() else {
            tracing::warn!(broker = %self.settings.address, "dropped a Redis message whose channel name is not UTF-8");
            return;
        };

        let source = if message.from_pattern() {
            CopySource::Pattern(message.get_pattern::<String>().unwrap_or_default())
        } else {
            CopySource::Channel
        };
        if self.copies.is_extra_copy(&topic, &payload, source) {
            return;
        }

        // Patterns can match more than the MQTT filters, see the channels module.
        if !self
            .filters
            .iter()
            .any(|filter| mqtt_filter_matches(filter, &topic))
        {
            return;
        }

        let size = publish_command_size(topic.len(), payload.len());
        if size > self.settings.max_message_size {
            if let Some(dropped_total) = self.oversized.record() {
                tracing::warn!(
                    broker = %self.settings.address,
                    topic = %topic,
                    size,
                    limit = self.settings.max_message_size,
                    dropped_total,
                    "dropped an incoming message larger than MaxMessageSize"
                );
            }
            return;
        }

        let incoming = Incoming {
            topic,
            payload,
            duplicate: false,
        };
        if self.incoming.deliver(incoming).await == Delivery::Closed {
            tracing::trace!(broker = %self.settings.address, "incoming receiver closed");
        }
    }

    fn finish(&mut self) {
        for reply in self.deferred.drain(..) {
            let _ = reply.send(Err(AdapterError::NotConnected {
                address: self.settings.address.clone(),
            }));
        }
        self.state.send_replace(ConnectionState::Disconnected);
        tracing::info!(broker = %self.settings.address, "Redis subscriber stopped");
    }
}

/// Next action of the run loop.
enum Step {
    Continue,
    Stop,
    /// The connection failed for this reason.
    Lost(String),
    /// A reconnect attempt failed.
    RetryLater,
}

/// Returns whether `error` means the connection is unusable.
pub(super) fn is_connection_error(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
        || error.is_timeout()
}

/// Resolves when shutdown was requested or the transport handle was dropped.
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also stops the task.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
