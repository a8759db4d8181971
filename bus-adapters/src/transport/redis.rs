//! Redis pub/sub transport.
//!
//! Publishes go through a multiplexed connection that is replaced on demand
//! when it fails. Subscriptions live on a separate pub/sub connection owned by
//! a [`subscriber::SubscriberTask`], which reconnects with backoff and
//! resubscribes everything when the connection ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::AsyncConnectionConfig;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::timeout;

use super::delivery::IncomingSender;
use super::{ConnectionState, Incoming, CONFIRM_TIMEOUT, DISCONNECT_FLUSH_TIMEOUT};
use crate::config::BusConfig;
use crate::error::AdapterError;

mod channels;
mod subscriber;

use subscriber::{Command, SubscriberSettings, SubscriberTask};

/// How long a `PUBLISH` may wait for Redis's reply before the connection is
/// considered broken.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Capacity of the subscribe/unsubscribe command queue. Callers wait for their
/// confirmation, so a few slots per concurrent caller suffice.
const COMMAND_QUEUE_CAPACITY: usize = 32;

/// How long `disconnect` waits for the subscriber task to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Returns the size in bytes of the RESP-encoded command
/// `PUBLISH <topic> <payload>`, the quantity checked against `MaxMessageSize`.
pub(crate) fn publish_command_size(topic_len: usize, payload_len: usize) -> usize {
    fn bulk_string_len(len: usize) -> usize {
        // `$<len>\r\n<bytes>\r\n`
        1 + len.to_string().len() + 2 + len + 2
    }
    // `*3\r\n` starts an array of three bulk strings.
    4 + bulk_string_len("PUBLISH".len()) + bulk_string_len(topic_len) + bulk_string_len(payload_len)
}

/// The handle of one Redis transport.
pub(crate) struct RedisTransport {
    address: String,
    client: ::redis::Client,
    connection_config: AsyncConnectionConfig,
    publisher: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<ConnectionState>,
    shutdown: watch::Sender<bool>,
    /// Publishes waiting for Redis's reply, so `disconnect` can wait for them.
    in_flight: watch::Sender<usize>,
    closed: AtomicBool,
    max_message_size: usize,
}

impl RedisTransport {
    pub(crate) async fn connect(
        config: &BusConfig,
    ) -> Result<(Self, mpsc::Receiver<Incoming>), AdapterError> {
        let address = config.address();
        let client =
            ::redis::Client::open((config.host.clone(), config.port)).map_err(|error| {
                AdapterError::ConnectFailed {
                    address: address.clone(),
                    reason: error.to_string(),
                }
            })?;
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));

        let pubsub =
            connect_within(&address, config.connect_timeout, client.get_async_pubsub()).await?;
        let publisher = connect_within(
            &address,
            config.connect_timeout,
            client.get_multiplexed_async_connection_with_config(&connection_config),
        )
        .await?;
        tracing::info!(broker = %address, "connected to Redis");

        let (incoming, receiver) = IncomingSender::channel(&address);
        let (commands, command_queue) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
        let (shutdown, shutdown_requests) = watch::channel(false);
        let (state_sender, state) = watch::channel(ConnectionState::Connected { generation: 1 });
        let settings = SubscriberSettings {
            client: client.clone(),
            address: address.clone(),
            connect_timeout: config.connect_timeout,
            max_message_size: config.max_message_size,
        };
        let task = SubscriberTask::new(
            settings,
            command_queue,
            shutdown_requests,
            state_sender,
            incoming,
        );
        tokio::spawn(task.run(pubsub));

        let (in_flight, _) = watch::channel(0);
        let transport = RedisTransport {
            address,
            client,
            connection_config,
            publisher: tokio::sync::Mutex::new(Some(publisher)),
            commands,
            state,
            shutdown,
            in_flight,
            closed: AtomicBool::new(false),
            max_message_size: config.max_message_size,
        };
        Ok((transport, receiver))
    }

    pub(crate) async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), AdapterError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.not_connected());
        }
        let _in_flight = InFlightGuard::count(&self.in_flight);

        let command = {
            let mut command = ::redis::cmd("PUBLISH");
            command.arg(topic).arg(payload.as_ref());
            command
        };
        let failed = |reason: String| AdapterError::PublishFailed {
            topic: topic.to_owned(),
            reason,
        };

        // One retry on a fresh connection covers a connection that broke while
        // idle, which is found out only by using it.
        // NOTE: if the connection broke after Redis ran the first PUBLISH, the
        // retry delivers the message twice; the replay window above rejects the copy.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut connection = self.publisher_connection().await.map_err(&failed)?;
            match command.query_async::<i64>(&mut connection).await {
                Ok(_receivers) => return Ok(()),
                Err(error) if subscriber::is_connection_error(&error) => {
                    self.drop_publisher_connection().await;
                    if attempt >= 2 {
                        return Err(failed(format!(
                            "connection to {} failed: {error}",
                            self.address
                        )));
                    }
                    tracing::info!(broker = %self.address, error = %error, "Redis publish connection broke; reconnecting");
                }
                Err(error) => return Err(failed(format!("Redis returned an error: {error}"))),
            }
        }
    }

    /// Returns the publish connection, opening a new one if the last one broke.
    async fn publisher_connection(&self) -> Result<MultiplexedConnection, String> {
        let mut publisher = self.publisher.lock().await;
        if let Some(connection) = publisher.as_ref() {
            return Ok(connection.clone());
        }
        let connecting = self
            .client
            .get_multiplexed_async_connection_with_config(&self.connection_config);
        match connecting.await {
            Ok(connection) => {
                tracing::info!(broker = %self.address, "reconnected Redis publish connection");
                *publisher = Some(connection.clone());
                Ok(connection)
            }
            Err(error) => Err(format!("connecting to {} failed: {error}", self.address)),
        }
    }

    async fn drop_publisher_connection(&self) {
        *self.publisher.lock().await = None;
    }

    pub(crate) async fn subscribe(&self, filters: Vec<String>) -> Result<(), AdapterError> {
        let joined = filters.join(", ");
        let (reply, outcome) = oneshot::channel();
        let command = Command::Subscribe { filters, reply };
        match timeout(CONFIRM_TIMEOUT, self.request(command, outcome)).await {
            Ok(result) => result,
            Err(_) => Err(AdapterError::SubscribeTimedOut {
                filters: joined,
                timeout: CONFIRM_TIMEOUT,
            }),
        }
    }

    pub(crate) async fn unsubscribe(&self, filters: Vec<String>) -> Result<(), AdapterError> {
        let joined = filters.join(", ");
        let (reply, outcome) = oneshot::channel();
        let command = Command::Unsubscribe { filters, reply };
        match timeout(CONFIRM_TIMEOUT, self.request(command, outcome)).await {
            Ok(result) => result,
            Err(_) => Err(AdapterError::UnsubscribeFailed {
                filter: joined,
                reason: format!("Redis did not confirm within {CONFIRM_TIMEOUT:?}"),
            }),
        }
    }

    async fn request(
        &self,
        command: Command,
        outcome: oneshot::Receiver<Result<(), AdapterError>>,
    ) -> Result<(), AdapterError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.not_connected());
        }
        self.commands
            .send(command)
            .await
            .map_err(|_| self.not_connected())?;
        outcome.await.unwrap_or_else(|_| Err(self.not_connected()))
    }

    pub(crate) async fn disconnect(&self) -> Result<(), AdapterError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }

        let mut in_flight = self.in_flight.subscribe();
        let flushed = timeout(
            DISCONNECT_FLUSH_TIMEOUT,
            in_flight.wait_for(|count| *count == 0),
        )
        .await;
        let unflushed = *self.in_flight.borrow();

        self.shutdown.send_replace(true);
        let mut state = self.state.clone();
        let _ = timeout(
            STOP_TIMEOUT,
            state.wait_for(|state| *state == ConnectionState::Disconnected),
        )
        .await;
        self.drop_publisher_connection().await;
        tracing::info!(broker = %self.address, "disconnected from Redis");

        match flushed {
            Ok(_) => Ok(()),
            Err(_) => Err(AdapterError::FlushTimedOut {
                unflushed,
                timeout: DISCONNECT_FLUSH_TIMEOUT,
            }),
        }
    }

    pub(crate) fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    pub(crate) fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    fn not_connected(&self) -> AdapterError {
        AdapterError::NotConnected {
            address: self.address.clone(),
        }
    }
}

impl Drop for RedisTransport {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Counts one publish as in flight until dropped.
struct InFlightGuard<'a> {
    in_flight: &'a watch::Sender<usize>,
}

impl<'a> InFlightGuard<'a> {
    fn count(in_flight: &'a watch::Sender<usize>) -> Self {
        in_flight.send_modify(|count| *count += 1);
        InFlightGuard { in_flight }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.in_flight
            .send_modify(|count| *count = count.saturating_sub(1));
    }
}

/// Awaits `connecting` for at most `connect_timeout` and maps the failures.
async fn connect_within<T>(
    address: &str,
    connect_timeout: Duration,
    connecting: impl std::future::Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, AdapterError> {
    match timeout(connect_timeout, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(AdapterError::ConnectFailed {
            address: address.to_owned(),
            reason: error.to_string(),
        }),
        Err(_) => Err(AdapterError::ConnectTimedOut {
            address: address.to_owned(),
            timeout: connect_timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_command_size_counts_resp_framing() {
        // *3\r\n $7\r\nPUBLISH\r\n $1\r\nt\r\n $2\r\nhi\r\n
        let encoded = "*3\r\n$7\r\nPUBLISH\r\n$1\r\nt\r\n$2\r\nhi\r\n";
        assert_eq!(publish_command_size(1, 2), encoded.len());
        let packed = ::redis::cmd("PUBLISH")
            .arg("edgex/x")
            .arg(vec![0u8; 1000])
            .get_packed_command();
        assert_eq!(publish_command_size("edgex/x".len(), 1000), packed.len());
    }
}
