//! MQTT 3.1.1 transport over rumqttc.
//!
//! The handle sends requests through rumqttc's [`AsyncClient`]. A spawned
//! [`event_loop::EventLoopTask`] polls the [`EventLoop`], delivers messages,
//! matches acknowledgements to waiting callers through the [`book`], and
//! reconnects with backoff, resubscribing every filter after each CONNACK.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rand_core::{OsRng, RngCore};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, SubscribeFilter,
};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use super::delivery::IncomingSender;
use super::{
    mqtt_publish_size, ConnectionState, Incoming, CONFIRM_TIMEOUT, DISCONNECT_FLUSH_TIMEOUT,
};
use crate::config::{BusConfig, Qos};
use crate::error::AdapterError;

mod book;
mod event_loop;

use book::{RequestBook, RequestKind, WaitKind, WaitOutcome};

/// How long an MQTT `publish` waits for room in the request queue, which only
/// fills while the broker is unreachable or slower than the publisher.
pub const PUBLISH_QUEUE_TIMEOUT: Duration = Duration::from_secs(15);

/// How long `disconnect` waits for the event loop to send DISCONNECT and stop.
const DISCONNECT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Capacity of rumqttc's request queue, in requests. Publishes beyond it wait
/// in `publish`, which gives the caller backpressure.
const REQUEST_QUEUE_CAPACITY: usize = 64;

/// Bytes added to `MaxMessageSize` for rumqttc's outgoing packet size
/// limit: a 5-byte fixed header and a 2-byte packet identifier, so the
/// exact size check of this module rejects an oversized publish first.
const PACKET_LIMIT_HEADROOM: usize = 5 + 2;

/// Largest incoming packet rumqttc reads, in bytes. rumqttc closes the
/// connection on a larger packet, and a broker that keeps such a message
/// retained would then cut the client off on every reconnect. So this is
/// far above `MaxMessageSize`, and this module's size check reads and drops
/// the packets between the two one by one. A packet above this still closes
/// the connection; brokers should cap message sizes (mosquitto's
/// `message_size_limit`) at or below it.
const MAX_INCOMING_PACKET_SIZE: usize = 16 * 1024 * 1024 + PACKET_LIMIT_HEADROOM;

/// State shared by the handle and the event loop task.
pub(super) struct Shared {
    address: String,
    qos: Qos,
    max_message_size: usize,
    book: Mutex<RequestBook>,
    /// Publishes handed to rumqttc and not yet sent (QoS 0) or acknowledged.
    unflushed: watch::Sender<usize>,
    state: watch::Sender<ConnectionState>,
}

impl Shared {
    fn book(&self) -> MutexGuard<'_, RequestBook> {
        // Book methods have no panicking operations, so poisoning is not
        // expected. Recovering keeps later calls working if it happens anyway.
        self.book
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// The handle of one MQTT connection.
pub(crate) struct MqttTransport {
    client: AsyncClient,
    shared: Arc<Shared>,
    /// Serializes tracked requests so the book's queue order equals rumqttc's.
    send_order: tokio::sync::Mutex<()>,
    shutdown: watch::Sender<bool>,
    retain: bool,
}

impl MqttTransport {
    pub(crate) async fn connect(
        config: &BusConfig,
    ) -> Result<(Self, mpsc::Receiver<Incoming>), AdapterError> {
        let address = config.address();
        let client_id = config.client_id.clone().unwrap_or_else(generate_client_id);
        let (client, mut eventloop) = new_client(config, &client_id);

        first_connect(&mut eventloop, &address, config.connect_timeout).await?;
        tracing::info!(broker = %address, client_id = %client_id, "connected to MQTT broker");

        let (incoming, receiver) = IncomingSender::channel(&address);
        let (unflushed, _) = watch::channel(0);
        let (state, _) = watch::channel(ConnectionState::Connected { generation: 1 });
        let shared = Arc::new(Shared {
            address,
            qos: config.qos,
            max_message_size: config.max_message_size,
            book: Mutex::new(RequestBook::new(config.max_message_size)),
            unflushed,
            state,
        });

        let (shutdown, shutdown_requests) = watch::channel(false);
        let task =
            event_loop::EventLoopTask::new(eventloop, shared.clone(), incoming, shutdown_requests);
        tokio::spawn(task.run());

        let transport = MqttTransport {
            client,
            shared,
            send_order: tokio::sync::Mutex::new(()),
            shutdown,
            retain: config.retained,
        };
        Ok((transport, receiver))
    }

    pub(crate) async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), AdapterError> {
        if !self.shared.book().accepts_requests() {
            return Err(self.not_connected());
        }

        let counted = UnflushedGuard::count(&self.shared);
        let qos = rumqttc_qos(self.shared.qos);
        let queued = timeout(
            PUBLISH_QUEUE_TIMEOUT,
            self.client.publish_bytes(topic, qos, self.retain, payload),
        )
        .await;
        match queued {
            Ok(Ok(())) => {
                counted.keep();
                Ok(())
            }
            Ok(Err(_)) => Err(self.not_connected()),
            Err(_) => Err(AdapterError::PublishFailed {
                topic: topic.to_owned(),
                reason: format!(
                    "the publish queue stayed full for {PUBLISH_QUEUE_TIMEOUT:?} because broker {} is unreachable or slow",
                    self.shared.address
                ),
            }),
        }
    }

    pub(crate) async fn subscribe(&self, filters: Vec<String>) -> Result<(), AdapterError> {
        let chunks =
            book::split_filters(&filters, self.shared.max_message_size).map_err(|filter| {
                AdapterError::InvalidFilter {
                    filter,
                    reason: "the SUBSCRIBE packet for this filter would exceed MaxMessageSize",
                }
            })?;

        let (waiter_id, outcome) = {
            let mut book = self.shared.book();
            if !book.accepts_requests() {
                return Err(self.not_connected());
            }
            // Added before sending, so a reconnect in between resubscribes it.
            book.add_subscriptions(&filters);
            book.add_waiter(WaitKind::Subscribe, &filters)
        };

        let confirmed = timeout(CONFIRM_TIMEOUT, async {
            for chunk in chunks {
                self.send_tracked(RequestKind::Subscribe, chunk).await?;
            }
            Ok(outcome.await.unwrap_or(WaitOutcome::Closed))
        })
        .await;

        match confirmed {
            Ok(Ok(WaitOutcome::Confirmed)) => Ok(()),
            Ok(Ok(WaitOutcome::Rejected { filter })) => Err(AdapterError::SubscribeFailed {
                filter,
                reason:
                    "the broker returned the SUBACK failure code; check its access control list"
                        .to_owned(),
            }),
            Ok(Ok(WaitOutcome::Closed)) => Err(self.not_connected()),
            Ok(Err(error)) => {
                self.shared.book().remove_waiter(waiter_id);
                Err(error)
            }
            Err(_) => {
                let unconfirmed = self.shared.book().remove_waiter(waiter_id);
                Err(AdapterError::SubscribeTimedOut {
                    filters: unconfirmed.join(", "),
                    timeout: CONFIRM_TIMEOUT,
                })
            }
        }
    }

    pub(crate) async fn unsubscribe(&self, filters: Vec<String>) -> Result<(), AdapterError> {
        let (waiter_id, outcome) = {
            let mut book = self.shared.book();
            if !book.accepts_requests() {
                return Err(self.not_connected());
            }
            book.remove_subscriptions(&filters);
            book.add_waiter(WaitKind::Unsubscribe, &filters)
        };

        let confirmed = timeout(CONFIRM_TIMEOUT, async {
            // rumqttc's client sends one filter per UNSUBSCRIBE packet.
            for filter in &filters {
                self.send_tracked(RequestKind::Unsubscribe, vec![filter.clone()])
                    .await?;
            }
            Ok(outcome.await.unwrap_or(WaitOutcome::Closed))
        })
        .await;

        match confirmed {
            Ok(Ok(WaitOutcome::Confirmed)) => Ok(()),
            Ok(Ok(WaitOutcome::Rejected { filter })) => Err(AdapterError::UnsubscribeFailed {
                filter,
                reason: "the broker rejected the request".to_owned(),
            }),
            Ok(Ok(WaitOutcome::Closed)) => Err(self.not_connected()),
            Ok(Err(error)) => {
                self.shared.book().remove_waiter(waiter_id);
                Err(error)
            }
            Err(_) => {
                let unconfirmed = self.shared.book().remove_waiter(waiter_id);
                Err(AdapterError::UnsubscribeFailed {
                    filter: unconfirmed.join(", "),
                    reason: format!("UNSUBACK did not arrive within {CONFIRM_TIMEOUT:?}"),
                })
            }
        }
    }

    /// Hands one SUBSCRIBE or UNSUBSCRIBE to rumqttc and records it in the book
    /// in the same order.
    async fn send_tracked(
        &self,
        kind: RequestKind,
        filters: Vec<String>,
    ) -> Result<(), AdapterError> {
        let _order = self.send_order.lock().await;
        let id = self.shared.book().push_queued(kind, filters.clone());
        let tracked = QueuedGuard {
            shared: &self.shared,
            id,
            sent: false,
        };

        let qos = rumqttc_qos(self.shared.qos);
        let sent = match kind {
            RequestKind::Unsubscribe => {
                let filter = filters.into_iter().next().unwrap_or_default();
                self.client.unsubscribe(filter).await
            }
            RequestKind::Subscribe | RequestKind::Resubscribe => {
                let filters = filters
                    .into_iter()
                    .map(|filter| SubscribeFilter::new(filter, qos));
                self.client.subscribe_many(filters).await
            }
        };
        match sent {
            Ok(()) => {
                tracked.mark_sent();
                Ok(())
            }
            Err(_) => Err(self.not_connected()),
        }
    }

    pub(crate) async fn disconnect(&self) -> Result<(), AdapterError> {
        let first_call = {
            let mut book = self.shared.book();
            let first_call = book.accepts_requests();
            book.closing = true;
            first_call
        };
        if !first_call {
            return Ok(());
        }

        let flushed = self.wait_until_flushed().await;
        if flushed.is_ok() {
            // rumqttc sends DISCONNECT after every request queued before it.
            let sent = timeout(DISCONNECT_STOP_TIMEOUT, self.client.disconnect()).await;
            if matches!(sent, Ok(Ok(()))) {
                self.wait_until_stopped().await;
            }
        }

        // Stops the task at once if DISCONNECT could not be sent.
        self.shutdown.send_replace(true);
        self.wait_until_stopped().await;
        tracing::info!(broker = %self.shared.address, "disconnected from MQTT broker");
        flushed
    }

    async fn wait_until_flushed(&self) -> Result<(), AdapterError> {
        let mut unflushed = self.shared.unflushed.subscribe();
        let mut state = self.shared.state.subscribe();
        let flushed_or_stopped = async {
            tokio::select! {
                _ = unflushed.wait_for(|count| *count == 0) => {}
                _ = state.wait_for(|state| *state == ConnectionState::Disconnected) => {}
            }
        };
        let _ = timeout(DISCONNECT_FLUSH_TIMEOUT, flushed_or_stopped).await;

        let remaining = *self.shared.unflushed.borrow();
        if remaining == 0 {
            return Ok(());
        }
        tracing::warn!(
            broker = %self.shared.address,
            unflushed = remaining,
            "disconnecting with publishes not yet sent or acknowledged"
        );
        Err(AdapterError::FlushTimedOut {
            unflushed: remaining,
            timeout: DISCONNECT_FLUSH_TIMEOUT,
        })
    }

    async fn wait_until_stopped(&self) {
        let mut state = self.shared.state.subscribe();
        let stopped = state.wait_for(|state| *state == ConnectionState::Disconnected);
        let _ = timeout(DISCONNECT_STOP_TIMEOUT, stopped).await;
    }

    pub(crate) fn message_size(&self, topic: &str, payload_len: usize) -> usize {
        mqtt_publish_size(topic.len(), payload_len, self.shared.qos != Qos::AtMostOnce)
    }

    pub(crate) fn max_message_size(&self) -> usize {
        self.shared.max_message_size
    }

    pub(crate) fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    pub(crate) fn address(&self) -> &str {
        &self.shared.address
    }

    fn not_connected(&self) -> AdapterError {
        AdapterError::NotConnected {
            address: self.shared.address.clone(),
        }
    }
}

impl Drop for MqttTransport {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Counts one publish as unflushed, and uncounts it on drop unless `keep` was called, so
/// a publish that times out or is cancelled does not block `disconnect`.
struct UnflushedGuard<'a> {
    shared: &'a Shared,
    stays_counted: bool,
}

impl<'a> UnflushedGuard<'a> {
    fn count(shared: &'a Shared) -> Self {
        shared.unflushed.send_modify(|count| *count += 1);
        UnflushedGuard {
            shared,
            stays_counted: false,
        }
    }

    fn keep(mut self) {
        self.stays_counted = true;
    }
}

impl Drop for UnflushedGuard<'_> {
    fn drop(&mut self) {
        if !self.stays_counted {
            self.shared
                .unflushed
                .send_modify(|count| *count = count.saturating_sub(1));
        }
    }
}

/// Removes a tracked request from the book if it never reached rumqttc,
/// for example because the caller's future was dropped while the queue was full.
struct QueuedGuard<'a> {
    shared: &'a Shared,
    id: u64,
    sent: bool,
}

impl QueuedGuard<'_> {
    fn mark_sent(mut self) {
        self.sent = true;
    }
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        if !self.sent {
            self.shared.book().cancel_queued(self.id);
        }
    }
}

fn new_client(config: &BusConfig, client_id: &str) -> (AsyncClient, EventLoop) {
    // rumqttc joins host and port as "host:port", so IPv6 needs brackets.
    let host = if config.host.contains(':') {
        format!("[{}]", config.host)
    } else {
        config.host.clone()
    };
    let mut options = MqttOptions::new(client_id, host, config.port);
    options.set_keep_alive(config.keep_alive);
    options.set_clean_session(config.clean_session);
    let outgoing_limit = config
        .max_message_size
        .saturating_add(PACKET_LIMIT_HEADROOM);
    let incoming_limit = outgoing_limit.max(MAX_INCOMING_PACKET_SIZE);
    options.set_max_packet_size(incoming_limit, outgoing_limit);

    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_QUEUE_CAPACITY);
    let mut network = NetworkOptions::new();
    network.set_connection_timeout(config.connect_timeout.as_secs());
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// Polls until the first CONNACK, within `connect_timeout`.
async fn first_connect(
    eventloop: &mut EventLoop,
    address: &str,
    connect_timeout: Duration,
) -> Result<(), AdapterError> {
    match timeout(connect_timeout, eventloop.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => Ok(()),
        Ok(Ok(other)) => Err(AdapterError::ConnectFailed {
            address: address.to_owned(),
            reason: format!("expected CONNACK, received {other:?}"),
        }),
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

/// Returns a random client id, because two clients with one id disconnect each other.
fn generate_client_id() -> String {
    format!("sealbus-{:016x}", OsRng.next_u64())
}

fn rumqttc_qos(qos: Qos) -> rumqttc::QoS {
    match qos {
        Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
        Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        Qos::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_client_ids_differ() {
        let first = generate_client_id();
        let second = generate_client_id();
        assert!(first.starts_with("sealbus-"));
        assert_eq!(first.len(), "sealbus-".len() + 16);
        assert_ne!(first, second);
    }

    #[test]
    fn qos_maps_to_rumqttc() {
        assert_eq!(rumqttc_qos(Qos::AtMostOnce), rumqttc::QoS::AtMostOnce);
        assert_eq!(rumqttc_qos(Qos::AtLeastOnce), rumqttc::QoS::AtLeastOnce);
        assert_eq!(rumqttc_qos(Qos::ExactlyOnce), rumqttc::QoS::ExactlyOnce);
    }
}
