//! In-process broker for tests of the layers above the transport.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::delivery::{Delivery, IncomingSender};
use super::{mqtt_filter_matches, mqtt_publish_size, ConnectionState, Incoming};
use crate::config::{BusConfig, Qos};
use crate::error::AdapterError;

/// Brokers reachable by name through `memory://NAME` URLs, for the whole process.
static NAMED_BROKERS: LazyLock<Mutex<HashMap<String, MemoryBroker>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Counter for the names of brokers made by [`MemoryBroker::new`].
static UNNAMED_BROKERS: AtomicU64 = AtomicU64::new(1);

/// An in-process message broker with MQTT topic matching.
///
/// Every connected transport whose filters match a topic receives each message
/// published on it, including the publisher itself, as an MQTT broker does.
/// Delivery is in publish order per publisher. Clones share the same broker.
#[derive(Clone)]
pub struct MemoryBroker {
    inner: Arc<BrokerInner>,
}

struct BrokerInner {
    name: String,
    clients: Mutex<HashMap<u64, MemoryClient>>,
    next_client_id: AtomicU64,
}

struct MemoryClient {
    filters: BTreeSet<String>,
    incoming: IncomingSender,
    max_message_size: usize,
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("name", &self.inner.name)
            .field("clients", &self.client_count())
            .finish()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker::new()
    }
}

impl MemoryBroker {
    /// Creates a broker that only the holders of this value (and its clones) reach.
    pub fn new() -> Self {
        let number = UNNAMED_BROKERS.fetch_add(1, Ordering::Relaxed);
        MemoryBroker::with_name(format!("unnamed-{number}"))
    }

    /// Returns the process-wide broker called `name`, creating it on first use.
    ///
    /// `Transport::connect` with a `memory://NAME` configuration uses this, so
    /// every transport of one process that names the same broker meets there.
    /// Named brokers live until the process ends.
    pub fn named(name: &str) -> Self {
        let mut brokers = NAMED_BROKERS
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        brokers
            .entry(name.to_owned())
            .or_insert_with(|| MemoryBroker::with_name(name.to_owned()))
            .clone()
    }

    fn with_name(name: String) -> Self {
        MemoryBroker {
            inner: Arc::new(BrokerInner {
                name,
                clients: Mutex::new(HashMap::new()),
                next_client_id: AtomicU64::new(1),
            }),
        }
    }

    /// Returns the broker name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Returns how many transports are connected.
    pub fn client_count(&self) -> usize {
        self.clients().len()
    }

    fn clients(&self) -> MutexGuard<'_, HashMap<u64, MemoryClient>> {
        // No code path panics while holding the lock, but a poisoned map is still
        // consistent because every update is a single insert or remove.
        self.inner
            .clients
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// One transport connected to a [`MemoryBroker`].
pub(crate) struct MemoryTransport {
    broker: MemoryBroker,
    client_id: u64,
    address: String,
    qos: Qos,
    max_message_size: usize,
    state: watch::Sender<ConnectionState>,
}

impl MemoryTransport {
    pub(crate) fn connect(
        broker: &MemoryBroker,
        config: &BusConfig,
    ) -> Result<(Self, mpsc::Receiver<Incoming>), AdapterError> {
        config.validate()?;
        let address = format!("memory://{}", broker.name());
        let (incoming, receiver) = IncomingSender::channel(&address);
        let client_id = broker.inner.next_client_id.fetch_add(1, Ordering::Relaxed);
        let client = MemoryClient {
            filters: BTreeSet::new(),
            incoming,
            max_message_size: config.max_message_size,
        };
        broker.clients().insert(client_id, client);

        let (state, _) = watch::channel(ConnectionState::Connected { generation: 1 });
        let transport = MemoryTransport {
            broker: broker.clone(),
            client_id,
            address,
            qos: config.qos,
            max_message_size: config.max_message_size,
            state,
        };
        Ok((transport, receiver))
    }

    pub(crate) async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), AdapterError> {
        let size = self.message_size(topic, payload.len());
        let receivers = self.matching_receivers(topic)?;

        for (incoming, receiver_limit) in receivers {
            if size > receiver_limit {
                tracing::warn!(
                    broker = %self.address,
                    topic,
                    size,
                    limit = receiver_limit,
                    "memory broker dropped a message larger than the receiver's MaxMessageSize"
                );
                continue;
            }
            let message = Incoming {
                topic: topic.to_owned(),
                payload: payload.clone(),
                duplicate: false,
            };
            // A closed receiver only means that transport's caller stopped reading.
            if incoming.deliver(message).await == Delivery::Closed {
                tracing::debug!(broker = %self.address, topic, "a receiver was closed");
            }
        }
        Ok(())
    }

    /// Returns the senders of every client with a matching filter, so delivery
    /// can wait for channel room without holding the broker lock.
    fn matching_receivers(
        &self,
        topic: &str,
    ) -> Result<Vec<(IncomingSender, usize)>, AdapterError> {
        let clients = self.broker.clients();
        if !clients.contains_key(&self.client_id) {
            return Err(self.not_connected());
        }
        let receivers = clients
            .values()
            .filter(|client| {
                client
                    .filters
                    .iter()
                    .any(|filter| mqtt_filter_matches(filter, topic))
            })
            .map(|client| (client.incoming.clone(), client.max_message_size))
            .collect();
        Ok(receivers)
    }

    pub(crate) fn subscribe(&self, filters: &[String]) -> Result<(), AdapterError> {
        let mut clients = self.broker.clients();
        let client = clients
            .get_mut(&self.client_id)
            .ok_or_else(|| self.not_connected())?;
        client.filters.extend(filters.iter().cloned());
        Ok(())
    }

    pub(crate) fn unsubscribe(&self, filters: &[String]) -> Result<(), AdapterError> {
        let mut clients = self.broker.clients();
        let client = clients
            .get_mut(&self.client_id)
            .ok_or_else(|| self.not_connected())?;
        for filter in filters {
            client.filters.remove(filter);
        }
        Ok(())
    }

    pub(crate) fn disconnect(&self) {
        self.broker.clients().remove(&self.client_id);
        self.state.send_replace(ConnectionState::Disconnected);
    }

    pub(crate) fn message_size(&self, topic: &str, payload_len: usize) -> usize {
        // The MQTT packet size, so that a message that fits here fits on MQTT too.
        mqtt_publish_size(topic.len(), payload_len, self.qos != Qos::AtMostOnce)
    }

    pub(crate) fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    pub(crate) fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
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

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        self.disconnect();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;

    use super::*;
    use crate::config::BusKind;
    use crate::transport::{Transport, INCOMING_CHANNEL_CAPACITY};

    /// Bounds waits for messages that must arrive, so a bug fails instead of hanging.
    const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(10);

    fn memory_config() -> BusConfig {
        BusConfig::new(BusKind::Memory, "unit", 0)
    }

    fn filters(list: &[&str]) -> Vec<String> {
        list.iter().map(|filter| filter.to_string()).collect()
    }

    async fn next(receiver: &mut mpsc::Receiver<Incoming>) -> Incoming {
        timeout(ARRIVAL_TIMEOUT, receiver.recv())
            .await
            .expect("message did not arrive")
            .expect("channel closed")
    }

    #[tokio::test]
    async fn round_trip_between_transports() {
        let broker = MemoryBroker::new();
        let (publisher, _publisher_rx) = Transport::connect_memory(&broker, &memory_config())
            .await
            .unwrap();
        let (subscriber, mut received) = Transport::connect_memory(&broker, &memory_config())
            .await
            .unwrap();
        subscriber
            .subscribe(&filters(&["edgex/events/#"]))
            .await
            .unwrap();

        publisher
            .publish("edgex/events/device/x", Bytes::from_static(b"reading"))
            .await
            .unwrap();

        let message = next(&mut received).await;
        assert_eq!(message.topic, "edgex/events/device/x");
        assert_eq!(message.payload, Bytes::from_static(b"reading"));
        assert!(!message.duplicate);
        assert_eq!(publisher.kind(), BusKind::Memory);
    }

    #[tokio::test]
    async fn only_matching_filters_receive() {
        let broker = MemoryBroker::new();
        let (publisher, _rx) = Transport::connect_memory(&broker, &memory_config())
            .await
            .unwrap();
        let (plus, mut plus_rx) = Transport::connect_memory(&broker, &memory_config())
            .await
            .unwrap();
        let (other, mut other_rx) = Transport::connect_memory(&broker, &memory_config())
            .await
            .unwrap();
        plus.subscribe(&filters(&["a/+/c"])).await.unwrap();
        other.subscribe(&filters(&["b/#"])).await.unwrap();

        publisher
            .publish("a/b/c", Bytes::from_static(b"1"))
            .await
            .unwrap();
        publisher
            .publish("a/b/d", Bytes::from_static(b"2"))
            .await
            .unwrap();
        publisher
            .publish("b", Bytes::from_static(b"3"))
            .await
            .unwrap();

        assert_eq!(next(&mut plus_rx).await.payload, Bytes::from_static(b"1"));
        assert_eq!(next(&mut other_rx).await.payload, Bytes::from_static(b"3"));
        assert!(plus_rx.try_recv().is_err());
        assert!(other_rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn publisher_receives_own_message() {
        let broker = MemoryBroker::new();
        let (transport, mut received) = Transport::connect_memory(&broker, &memory_config())
            .await
            .unwrap();
        transport.subscribe(&filters(&["loop"])).await.unwrap();
        transport
            .publish("loop", Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(next(&mut received).await.topic, "loop");
    }

    #[tokio::test]
    async fn unsubscribe_stops_delivery() {
        let broker = MemoryBroker::new();
        let (transport, mut received) = Transport::connect_memory(&broker, &memory_config())
            .await
            .unwrap();
        transport.subscribe(&filters(&["a", "b"])).await.unwrap();
        transport.unsubscribe(&filters(&["a"])).await.unwrap();

        transport
            .publish("a", Bytes::from_static(b"gone"))
            .await
            .unwrap();
        transport
            .publish("b", Bytes::from_static(b"kept"))
            .await
            .unwrap();
        assert_eq!(
            next(&mut received).await.payload,
            Bytes::from_static(b"kept")
        );
        assert!(received.try_recv().is_err());
    }

    #[tokio::test]
    async fn too_large_rejected_before_delivery() {
        let broker = MemoryBroker::new();
        let mut config = memory_config();
        config.max_message_size = 64;
        let (transport, mut received) = Transport::connect_memory(&broker, &config).await.unwrap();
        transport.subscribe(&filters(&["big"])).await.unwrap();

        let fitting = transport.max_payload_len("big");
        assert_eq!(fitting, 64 - transport.message_size("big", 0));
        transport
            .publish("big", Bytes::from(vec![7u8; fitting]))
            .await
            .unwrap();
        let message = next(&mut received).await;
        assert_eq!(message.payload.len(), fitting);
        assert_eq!(transport.message_size("big", fitting), 64);

        let error = transport
            .publish("big", Bytes::from(vec![7u8; fitting + 1]))
            .await
            .unwrap_err();
        match error {
            AdapterError::MessageTooLarge { size, limit } => {
                assert_eq!(size, 65);
                assert_eq!(limit, 64);
            }
            other => panic!("expected MessageTooLarge, got {other:?}"),
        }
        assert!(received.try_recv().is_err());
    }

    #[tokio::test]
    async fn receiver_limit_drops_large_message() {
        let broker = MemoryBroker::new();
        let (publisher, _rx) = Transport::connect_memory(&broker, &memory_config())
            .await
            .unwrap();
        let mut small = memory_config();
        small.max_message_size = 32;
        let (subscriber, mut received) = Transport::connect_memory(&broker, &small).await.unwrap();
        subscriber.subscribe(&filters(&["t"])).await.unwrap();

        publisher
            .publish("t", Bytes::from(vec![0u8; 100]))
            .await
            .unwrap();
        publisher
            .publish("t", Bytes::from_static(b"ok"))
            .await
            .unwrap();
        assert_eq!(next(&mut received).await.payload, Bytes::from_static(b"ok"));
    }

    #[tokio::test]
    async fn disconnect_rejects_further_calls() {
        let broker = MemoryBroker::new();
        let (transport, mut received) = Transport::connect_memory(&broker, &memory_config())
            .await
            .unwrap();
        assert_eq!(broker.client_count(), 1);
        transport.disconnect().await.unwrap();
        assert_eq!(broker.client_count(), 0);
        assert_eq!(
            *transport.connection_state().borrow(),
            ConnectionState::Disconnected
        );

        let error = transport.publish("t", Bytes::new()).await.unwrap_err();
        assert!(
            matches!(error, AdapterError::NotConnected { .. }),
            "{error:?}"
        );
        let error = transport.subscribe(&filters(&["t"])).await.unwrap_err();
        assert!(
            matches!(error, AdapterError::NotConnected { .. }),
            "{error:?}"
        );
        assert!(received.recv().await.is_none());
        transport.disconnect().await.unwrap();
    }

    #[tokio::test]
    async fn dropping_last_clone_unregisters() {
        let broker = MemoryBroker::new();
        let (transport, _rx) = Transport::connect_memory(&broker, &memory_config())
            .await
            .unwrap();
        let clone = transport.clone();
        drop(transport);
        assert_eq!(broker.client_count(), 1);
        drop(clone);
        assert_eq!(broker.client_count(), 0);
    }

    #[tokio::test]
    async fn named_broker_shared_through_url() {
        let config = BusConfig::from_url("memory://named-broker-test").unwrap();
        let (publisher, _rx) = Transport::connect(&config).await.unwrap();
        let (subscriber, mut received) = Transport::connect(&config).await.unwrap();
        subscriber.subscribe(&filters(&["x"])).await.unwrap();
        publisher
            .publish("x", Bytes::from_static(b"via url"))
            .await
            .unwrap();
        assert_eq!(
            next(&mut received).await.payload,
            Bytes::from_static(b"via url")
        );
        assert_eq!(MemoryBroker::named("named-broker-test").client_count(), 2);
        assert_eq!(publisher.address(), "memory://named-broker-test");
    }

    #[tokio::test]
    async fn separate_brokers_do_not_meet() {
        let first = MemoryBroker::new();
        let second = MemoryBroker::new();
        assert_ne!(first.name(), second.name());
        let (publisher, _rx) = Transport::connect_memory(&first, &memory_config())
            .await
            .unwrap();
        let (subscriber, mut received) = Transport::connect_memory(&second, &memory_config())
            .await
            .unwrap();
        subscriber.subscribe(&filters(&["#"])).await.unwrap();
        publisher
            .publish("t", Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert!(received.try_recv().is_err());
    }

    #[tokio::test]
    async fn invalid_topic_and_filter_rejected() {
        let broker = MemoryBroker::new();
        let (transport, _rx) = Transport::connect_memory(&broker, &memory_config())
            .await
            .unwrap();
        let error = transport.publish("a/+", Bytes::new()).await.unwrap_err();
        assert!(
            matches!(error, AdapterError::InvalidTopic { .. }),
            "{error:?}"
        );
        let error = transport.subscribe(&filters(&["a/#/b"])).await.unwrap_err();
        assert!(
            matches!(error, AdapterError::InvalidFilter { .. }),
            "{error:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn full_receiver_does_not_block_publisher() {
        let broker = MemoryBroker::new();
        let (transport, mut received) = Transport::connect_memory(&broker, &memory_config())
            .await
            .unwrap();
        transport.subscribe(&filters(&["flood"])).await.unwrap();

        // The test does not read, so the channel fills up and later messages are dropped
        // after one bounded wait instead of blocking the publisher for good.
        let total = INCOMING_CHANNEL_CAPACITY + 10;
        for index in 0..total {
            let payload = Bytes::from(index.to_string());
            transport.publish("flood", payload).await.unwrap();
        }

        let mut delivered = 0;
        while received.try_recv().is_ok() {
            delivered += 1;
        }
        assert_eq!(delivered, INCOMING_CHANNEL_CAPACITY);

        transport
            .publish("flood", Bytes::from_static(b"after"))
            .await
            .unwrap();
        assert_eq!(
            next(&mut received).await.payload,
            Bytes::from_static(b"after")
        );
    }
}
