//! Raw byte transports: MQTT, Redis pub/sub and an in-process broker.
//!
//! [`Transport`] moves opaque payloads between topics and does not interpret
//! them, because sealing happens in the layer above. Each backend runs a background task that owns the broker
//! connection, reconnects with a bounded exponential backoff, restores every
//! subscription after a reconnect, and hands received messages to a bounded
//! channel returned by [`Transport::connect`].
//!
//! ```text
//!  caller ── publish/subscribe ──▶ Transport ──▶ background task ──▶ broker
//!  caller ◀── mpsc::Receiver<Incoming> ◀─────── background task ◀── broker
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::config::{BusConfig, BusKind};
use crate::error::AdapterError;

mod delivery;
mod memory;
mod mqtt;
mod redis;
mod topic;

pub use delivery::{
    INCOMING_CHANNEL_CAPACITY, INCOMING_FULL_WAIT, RECONNECT_DELAY_MAX, RECONNECT_DELAY_MIN,
};
pub use memory::MemoryBroker;
pub use mqtt::PUBLISH_QUEUE_TIMEOUT;
pub use topic::{mqtt_filter_matches, validate_filter, validate_topic, MAX_TOPIC_LEN};

/// How long `subscribe` and `unsubscribe` wait for the broker's confirmation.
/// It covers one reconnect at [`RECONNECT_DELAY_MAX`] plus a connection attempt
/// at the default `ConnectTimeout`, with room to spare.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// How long `disconnect` waits for queued publishes to be sent (MQTT QoS 0),
/// acknowledged (MQTT QoS 1 and 2) or confirmed by a reply (Redis) before it closes the
/// connection anyway.
pub const DISCONNECT_FLUSH_TIMEOUT: Duration = Duration::from_secs(15);

/// One message received from the broker.
#[derive(Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The concrete topic the message was published on (for Redis, the channel).
    pub topic: String,
    /// The message bytes as published.
    pub payload: Bytes,
    /// The MQTT DUP flag: the broker may have delivered this message before.
    /// Always false for Redis and the memory broker.
    pub duplicate: bool,
}

impl fmt::Debug for Incoming {
    // The payload is left out because it may be plaintext application data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("topic", &self.topic)
            .field("payload_len", &self.payload.len())
            .field("duplicate", &self.duplicate)
            .finish()
    }
}

/// Connection state of a transport, published through a `watch` channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connecting or reconnecting. MQTT publishes wait in a bounded queue until
    /// the connection is back. Redis publishes use their own connection, which
    /// `publish` reopens on demand, so this state reflects the subscriptions.
    Connecting,
    /// Connected, and every current subscription is confirmed again.
    /// `generation` counts connections, starting at 1, so a change shows a
    /// reconnect.
    Connected {
        /// Number of the connection, 1 for the first.
        generation: u64,
    },
    /// Closed by [`Transport::disconnect`] or by dropping every clone.
    Disconnected,
}

/// A raw byte transport to one message bus.
///
/// Clones share one connection. The background task stops when
/// [`Transport::disconnect`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Transport {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Mqtt(Arc<mqtt::MqttTransport>),
    Redis(Arc<redis::RedisTransport>),
    Memory(Arc<memory::MemoryTransport>),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("kind", &self.kind())
            .field("address", &self.address())
            .finish()
    }
}

impl Transport {
    /// Connects and spawns the background task.
    ///
    /// A `memory` configuration joins the process-wide broker with the
    /// configured name, see [`MemoryBroker::named`].
    ///
    /// # Errors
    ///
    /// [`AdapterError::InvalidConfig`] when the configuration is invalid,
    /// [`AdapterError::ConnectTimedOut`] when the broker does not accept the
    /// connection within `ConnectTimeout`, and [`AdapterError::ConnectFailed`]
    /// when it refuses or the network fails.
    pub async fn connect(
        config: &BusConfig,
    ) -> Result<(Transport, mpsc::Receiver<Incoming>), AdapterError> {
        config.validate()?;
        let (backend, incoming) = match config.kind {
            BusKind::Mqtt => {
                let (transport, incoming) = mqtt::MqttTransport::connect(config).await?;
                (Backend::Mqtt(Arc::new(transport)), incoming)
            }
            BusKind::Redis => {
                let (transport, incoming) = redis::RedisTransport::connect(config).await?;
                (Backend::Redis(Arc::new(transport)), incoming)
            }
            BusKind::Memory => {
                let broker = MemoryBroker::named(&config.host);
                return Transport::connect_memory(&broker, config).await;
            }
        };
        Ok((Transport { backend }, incoming))
    }

    /// Connects to an in-process broker, whatever `config.kind` is.
    ///
    /// # Errors
    ///
    /// [`AdapterError::InvalidConfig`] when `MaxMessageSize`, `Qos` or `BusId`
    /// are invalid.
    pub async fn connect_memory(
        broker: &MemoryBroker,
        config: &BusConfig,
    ) -> Result<(Transport, mpsc::Receiver<Incoming>), AdapterError> {
        let (transport, incoming) = memory::MemoryTransport::connect(broker, config)?;
        let backend = Backend::Memory(Arc::new(transport));
        Ok((Transport { backend }, incoming))
    }

    /// Publishes `payload` on `topic` with the configured QoS and retain flag.
    ///
    /// For MQTT the call returns once the message is queued for the event loop,
    /// and [`Transport::disconnect`] waits until queued messages are sent or
    /// acknowledged. For Redis it returns after the server accepted `PUBLISH`.
    ///
    /// # Errors
    ///
    /// [`AdapterError::InvalidTopic`] for a topic that is empty or has
    /// wildcards, [`AdapterError::MessageTooLarge`] before anything is sent when
    /// [`Transport::message_size`] exceeds `MaxMessageSize`,
    /// [`AdapterError::NotConnected`] after a disconnect, and
    /// [`AdapterError::PublishFailed`] when the broker cannot take the message.
    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), AdapterError> {
        validate_topic(topic)?;
        let size = self.message_size(topic, payload.len());
        let limit = self.max_message_size();
        if size > limit {
            return Err(AdapterError::MessageTooLarge { size, limit });
        }

        match &self.backend {
            Backend::Mqtt(transport) => transport.publish(topic, payload).await,
            Backend::Redis(transport) => transport.publish(topic, payload).await,
            Backend::Memory(transport) => transport.publish(topic, payload).await,
        }
    }

    /// Subscribes to MQTT-syntax `filters` and returns once the broker confirmed
    /// all of them.
    ///
    /// The subscriptions are restored after every reconnect without caller
    /// action. An empty slice does nothing.
    ///
    /// # Errors
    ///
    /// [`AdapterError::InvalidFilter`] for a filter that breaks MQTT syntax,
    /// [`AdapterError::SubscribeFailed`] when the broker rejects a filter,
    /// [`AdapterError::SubscribeTimedOut`] when it does not confirm within
    /// [`CONFIRM_TIMEOUT`], and [`AdapterError::NotConnected`] after a
    /// disconnect.
    pub async fn subscribe(&self, filters: &[String]) -> Result<(), AdapterError> {
        let filters = checked_filters(filters)?;
        if filters.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Mqtt(transport) => transport.subscribe(filters).await,
            Backend::Redis(transport) => transport.subscribe(filters).await,
            Backend::Memory(transport) => transport.subscribe(&filters),
        }
    }

    /// Removes subscriptions and returns once the broker confirmed the removal.
    ///
    /// # Errors
    ///
    /// [`AdapterError::InvalidFilter`] for a filter that breaks MQTT syntax,
    /// [`AdapterError::UnsubscribeFailed`] when the broker does not confirm
    /// within [`CONFIRM_TIMEOUT`], and [`AdapterError::NotConnected`] after a
    /// disconnect.
    pub async fn unsubscribe(&self, filters: &[String]) -> Result<(), AdapterError> {
        let filters = checked_filters(filters)?;
        if filters.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Mqtt(transport) => transport.unsubscribe(filters).await,
            Backend::Redis(transport) => transport.unsubscribe(filters).await,
            Backend::Memory(transport) => transport.unsubscribe(&filters),
        }
    }

    /// Sends every queued publish, then closes the connection and stops the
    /// background task. Calling it again does nothing.
    ///
    /// A one-shot publisher that publishes and then disconnects does not lose
    /// its message while the broker is reachable.
    ///
    /// # Errors
    ///
    /// [`AdapterError::FlushTimedOut`] when queued publishes were not sent or
    /// acknowledged within [`DISCONNECT_FLUSH_TIMEOUT`]. The connection is
    /// closed anyway.
    pub async fn disconnect(&self) -> Result<(), AdapterError> {
        match &self.backend {
            Backend::Mqtt(transport) => transport.disconnect().await,
            Backend::Redis(transport) => transport.disconnect().await,
            Backend::Memory(transport) => {
                transport.disconnect();
                Ok(())
            }
        }
    }

    /// Returns the bus type.
    pub fn kind(&self) -> BusKind {
        match &self.backend {
            Backend::Mqtt(_) => BusKind::Mqtt,
            Backend::Redis(_) => BusKind::Redis,
            Backend::Memory(_) => BusKind::Memory,
        }
    }

    /// Returns `MaxMessageSize`: the limit in bytes for one whole transport
    /// message as computed by [`Transport::message_size`].
    pub fn max_message_size(&self) -> usize {
        match &self.backend {
            Backend::Mqtt(transport) => transport.max_message_size(),
            Backend::Redis(transport) => transport.max_message_size(),
            Backend::Memory(transport) => transport.max_message_size(),
        }
    }

    /// Returns the size in bytes of the transport message that carries
    /// `payload_len` bytes on `topic`, framing included.
    ///
    /// This is the number compared with `MaxMessageSize`. MQTT and the memory
    /// broker count the MQTT PUBLISH packet, Redis counts the RESP-encoded
    /// `PUBLISH` command.
    pub fn message_size(&self, topic: &str, payload_len: usize) -> usize {
        match &self.backend {
            Backend::Mqtt(transport) => transport.message_size(topic, payload_len),
            Backend::Redis(_) => redis::publish_command_size(topic.len(), payload_len),
            Backend::Memory(transport) => transport.message_size(topic, payload_len),
        }
    }

    /// Returns the largest payload in bytes that fits `MaxMessageSize` on `topic`.
    ///
    /// Returns 0 when not even an empty payload fits, in which case `publish`
    /// on that topic always fails with [`AdapterError::MessageTooLarge`].
    pub fn max_payload_len(&self, topic: &str) -> usize {
        let limit = self.max_message_size();
        let mut payload_len = limit.saturating_sub(self.message_size(topic, 0));
        // The framing grows with the payload (MQTT's variable-length remaining
        // length, the digits of a RESP length), so step down until it fits.
        while payload_len > 0 && self.message_size(topic, payload_len) > limit {
            payload_len -= 1;
        }
        payload_len
    }

    /// Returns a receiver of the connection state.
    pub fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        match &self.backend {
            Backend::Mqtt(transport) => transport.connection_state(),
            Backend::Redis(transport) => transport.connection_state(),
            Backend::Memory(transport) => transport.connection_state(),
        }
    }

    /// Returns the broker address used in logs and errors.
    pub fn address(&self) -> &str {
        match &self.backend {
            Backend::Mqtt(transport) => transport.address(),
            Backend::Redis(transport) => transport.address(),
            Backend::Memory(transport) => transport.address(),
        }
    }
}

/// Validates `filters` and removes repeated ones, keeping the first order.
fn checked_filters(filters: &[String]) -> Result<Vec<String>, AdapterError> {
    let mut unique: Vec<String> = Vec::with_capacity(filters.len());
    for filter in filters {
        validate_filter(filter)?;
        if !unique.contains(filter) {
            unique.push(filter.clone());
        }
    }
    Ok(unique)
}

/// Returns the size of an MQTT 3.1.1 PUBLISH packet: fixed header, topic
/// length prefix, topic, packet identifier (QoS 1 and 2 only) and payload.
pub(crate) fn mqtt_publish_size(
    topic_len: usize,
    payload_len: usize,
    has_packet_id: bool,
) -> usize {
    let packet_id_len = if has_packet_id { 2 } else { 0 };
    let remaining = 2 + topic_len + packet_id_len + payload_len;
    1 + remaining_length_len(remaining) + remaining
}

/// Returns how many bytes MQTT's variable-length "remaining length" field takes.
fn remaining_length_len(remaining: usize) -> usize {
    match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_publish_size_matches_rumqttc() {
        for (topic, payload_len, qos) in [
            ("t", 0, rumqttc::QoS::AtMostOnce),
            ("edgex/events", 100, rumqttc::QoS::AtMostOnce),
            ("edgex/events", 100, rumqttc::QoS::AtLeastOnce),
            ("a/b", 16_370, rumqttc::QoS::ExactlyOnce),
            ("a/b", 300_000, rumqttc::QoS::AtLeastOnce),
        ] {
            let mut publish = rumqttc::Publish::new(topic, qos, vec![0u8; payload_len]);
            let has_packet_id = qos != rumqttc::QoS::AtMostOnce;
            if has_packet_id {
                publish.pkid = 1;
            }
            assert_eq!(
                mqtt_publish_size(topic.len(), payload_len, has_packet_id),
                publish.size(),
                "{topic} {payload_len} {qos:?}"
            );
        }
    }

    #[test]
    fn checked_filters_dedupes_and_validates() {
        let filters = vec!["a/#".to_owned(), "b".to_owned(), "a/#".to_owned()];
        assert_eq!(checked_filters(&filters).unwrap(), vec!["a/#", "b"]);
        let bad = vec!["a/#/b".to_owned()];
        assert!(matches!(
            checked_filters(&bad),
            Err(AdapterError::InvalidFilter { .. })
        ));
    }

    #[test]
    fn transport_is_clone_send_sync() {
        fn assert_clone_send_sync<T: Clone + Send + Sync + 'static>() {}
        assert_clone_send_sync::<Transport>();
    }

    #[test]
    fn incoming_debug_hides_payload() {
        let message = Incoming {
            topic: "t".to_owned(),
            payload: Bytes::from_static(b"secret-reading"),
            duplicate: false,
        };
        let formatted = format!("{message:?}");
        assert!(!formatted.contains("secret-reading"), "{formatted}");
        assert!(formatted.contains("payload_len: 14"), "{formatted}");
    }
}
