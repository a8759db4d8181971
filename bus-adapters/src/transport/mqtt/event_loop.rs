//! The background task that polls rumqttc's event loop.

use std::mem;
use std::sync::Arc;

use rumqttc::{
    ConnectionError, Event, EventLoop, Outgoing, Packet, Publish, Request, Subscribe,
    SubscribeFilter, SubscribeReasonCode, Unsubscribe,
};
use tokio::sync::watch;

use super::book::RequestKind;
use super::Shared;
use crate::config::Qos;
use crate::transport::delivery::{Backoff, Delivery, DropCounter, IncomingSender};
use crate::transport::{mqtt_publish_size, ConnectionState, Incoming};

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// Owns the rumqttc [`EventLoop`] and keeps polling it until shutdown.
pub(super) struct EventLoopTask {
    eventloop: EventLoop,
    shared: Arc<Shared>,
    incoming: IncomingSender,
    shutdown: watch::Receiver<bool>,
    /// Publishes (and QoS 2 releases) taken out of a failed connection, to be
    /// sent again after the next CONNACK.
    carried: Vec<Request>,
    generation: u64,
    /// Resubscribe requests of this connection still waiting for SUBACK.
    unconfirmed_resubscribes: usize,
    connected: bool,
    backoff: Backoff,
    oversized: DropCounter,
}

impl EventLoopTask {
    /// Creates the task for an event loop that has already received its first CONNACK.
    pub(super) fn new(
        eventloop: EventLoop,
        shared: Arc<Shared>,
        incoming: IncomingSender,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        EventLoopTask {
            eventloop,
            shared,
            incoming,
            shutdown,
            carried: Vec::new(),
            generation: 1,
            unconfirmed_resubscribes: 0,
            connected: true,
            backoff: Backoff::new(),
            oversized: DropCounter::default(),
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            // Cancelling `poll` can lose a packet it was writing, which only
            // matters for a connection that is shutting down anyway.
            let polled = tokio::select! {
                biased;
                () = stop_requested(&mut self.shutdown) => break,
                polled = self.eventloop.poll() => polled,
            };
            let flow = match polled {
                Ok(event) => self.handle_event(event).await,
                Err(error) => self.handle_connection_error(error).await,
            };
            if flow == Flow::Stop {
                break;
            }
        }
        self.finish();
    }

    async fn handle_event(&mut self, event: Event) -> Flow {
        let qos = self.shared.qos;
        match event {
            Event::Incoming(Packet::ConnAck(connack)) => self.on_connack(connack.session_present),
            Event::Incoming(Packet::Publish(publish)) => self.deliver(publish).await,
            Event::Incoming(Packet::SubAck(suback)) => {
                let accepted: Vec<bool> = suback
                    .return_codes
                    .iter()
                    .map(|code| matches!(code, SubscribeReasonCode::Success(_)))
                    .collect();
                self.on_suback(suback.pkid, &accepted);
            }
            Event::Incoming(Packet::UnsubAck(unsuback)) => {
                self.shared.book().on_unsuback(unsuback.pkid);
            }
            Event::Incoming(Packet::PubAck(_)) if qos == Qos::AtLeastOnce => self.publishes_done(1),
            Event::Incoming(Packet::PubComp(_)) if qos == Qos::ExactlyOnce => {
                self.publishes_done(1)
            }
            Event::Outgoing(Outgoing::Publish(_)) if qos == Qos::AtMostOnce => {
                self.publishes_done(1)
            }
            Event::Outgoing(Outgoing::Subscribe(pkid) | Outgoing::Unsubscribe(pkid)) => {
                self.on_outgoing_request(pkid);
            }
            Event::Outgoing(Outgoing::Disconnect) => return Flow::Stop,
            _ => {}
        }
        Flow::Continue
    }

    fn on_outgoing_request(&self, pkid: u16) {
        if !self.shared.book().on_outgoing(pkid) {
            tracing::warn!(
                broker = %self.shared.address,
                pkid,
                "MQTT subscription request sent that the transport did not track; its caller may time out"
            );
        }
    }

    fn on_connack(&mut self, session_present: bool) {
        self.generation += 1;
        self.connected = true;
        self.backoff.reset();
        tracing::info!(
            broker = %self.shared.address,
            generation = self.generation,
            session_present,
            "reconnected to MQTT broker"
        );

        let restore = self.shared.book().on_reconnected(session_present);
        self.unconfirmed_resubscribes = restore
            .iter()
            .filter(|(kind, _)| *kind == RequestKind::Resubscribe)
            .count();
        for (kind, filters) in restore {
            let request = match kind {
                RequestKind::Unsubscribe => Request::Unsubscribe(Unsubscribe {
                    pkid: 0,
                    topics: filters,
                }),
                RequestKind::Subscribe | RequestKind::Resubscribe => {
                    let qos = super::rumqttc_qos(self.shared.qos);
                    let filters = filters
                        .into_iter()
                        .map(|filter| SubscribeFilter::new(filter, qos));
                    Request::Subscribe(Subscribe::new_many(filters))
                }
            };
            self.eventloop.pending.push_back(request);
        }
        self.restore_carried(session_present);

        if self.unconfirmed_resubscribes == 0 {
            self.set_connected();
        }
    }

    fn on_suback(&mut self, pkid: u16, accepted: &[bool]) {
        let Some(result) = self.shared.book().on_suback(pkid, accepted) else {
            return;
        };
        for filter in &result.rejected {
            tracing::warn!(
                broker = %self.shared.address,
                filter = %filter,
                "MQTT broker rejected a subscription"
            );
        }
        if result.kind == RequestKind::Resubscribe {
            self.unconfirmed_resubscribes = self.unconfirmed_resubscribes.saturating_sub(1);
            if self.unconfirmed_resubscribes == 0 {
                self.set_connected();
            }
        }
    }

    fn set_connected(&self) {
        let state = ConnectionState::Connected {
            generation: self.generation,
        };
        self.shared.state.send_replace(state);
    }

    async fn deliver(&mut self, publish: Publish) {
        let has_packet_id = publish.qos != rumqttc::QoS::AtMostOnce;
        let size = mqtt_publish_size(publish.topic.len(), publish.payload.len(), has_packet_id);
        if size > self.shared.max_message_size {
            if let Some(dropped_total) = self.oversized.record() {
                tracing::warn!(
                    broker = %self.shared.address,
                    topic = %publish.topic,
                    size,
                    limit = self.shared.max_message_size,
                    dropped_total,
                    "dropped an incoming message larger than MaxMessageSize"
                );
            }
            return;
        }

        let message = Incoming {
            topic: publish.topic,
            payload: publish.payload,
            duplicate: publish.dup,
        };
        // A closed receiver means the caller only publishes, so the message is not needed.
        if self.incoming.deliver(message).await == Delivery::Closed {
            tracing::trace!(broker = %self.shared.address, "incoming receiver closed");
        }
    }

    async fn handle_connection_error(&mut self, error: ConnectionError) -> Flow {
        // rumqttc may have buffered events read before the failure. They still
        // happened, so they are handled before the connection is written off.
        let buffered: Vec<Event> = self.eventloop.state.events.drain(..).collect();
        for event in buffered {
            if self.handle_event(event).await == Flow::Stop {
                return Flow::Stop;
            }
        }
        self.save_unsent_requests();

        if self.connected {
            self.connected = false;
            self.shared.state.send_replace(ConnectionState::Connecting);
            tracing::warn!(
                broker = %self.shared.address,
                error = %error,
                "lost connection to MQTT broker; reconnecting"
            );
        } else {
            tracing::debug!(
                broker = %self.shared.address,
                error = %error,
                "MQTT reconnect attempt failed"
            );
        }

        let delay = self.backoff.next_delay();
        tokio::select! {
            biased;
            () = stop_requested(&mut self.shutdown) => Flow::Stop,
            () = tokio::time::sleep(delay) => Flow::Continue,
        }
    }

    /// Takes everything rumqttc kept from the failed connection out of its
    /// pending list.
    ///
    /// rumqttc drops that list on a CONNACK without a kept session, which
    /// would lose queued publishes. They are carried over and sent again after
    /// the next CONNACK. Subscription requests are dropped because the
    /// resubscribe after CONNACK covers them, and the book records how many were lost.
    fn save_unsent_requests(&mut self) {
        // A publish that waits for a packet identifier to become free is kept
        // apart by rumqttc and would otherwise block its queue for good.
        if let Some(publish) = self.eventloop.state.collision.take() {
            self.carried.push(Request::Publish(publish));
        }

        let mut unsent_tracked = 0;
        for request in self.eventloop.pending.drain(..) {
            match request {
                Request::Publish(_) | Request::PubRel(_) => self.carried.push(request),
                Request::Subscribe(_) | Request::Unsubscribe(_) => unsent_tracked += 1,
                // Acknowledgements and pings belong to the dead connection.
                _ => {}
            }
        }

        self.unconfirmed_resubscribes = 0;
        let untracked = self.shared.book().on_connection_lost(unsent_tracked);
        if untracked > 0 {
            tracing::warn!(
                broker = %self.shared.address,
                untracked,
                "MQTT subscription requests were lost that the transport did not track"
            );
        }
    }

    /// Queues the carried publishes behind the resubscribe requests.
    fn restore_carried(&mut self, session_present: bool) {
        let mut abandoned_releases = 0;
        for request in mem::take(&mut self.carried) {
            match request {
                Request::Publish(mut publish) => {
                    if session_present {
                        // The same packet again: MQTT requires the DUP flag on a resend.
                        publish.dup = publish.pkid != 0;
                    } else {
                        // A new session has no packet identifiers in use.
                        publish.pkid = 0;
                        publish.dup = false;
                    }
                    self.eventloop.pending.push_back(Request::Publish(publish));
                }
                Request::PubRel(release) if session_present => {
                    self.eventloop.pending.push_back(Request::PubRel(release));
                }
                // The broker sent PUBREC for this QoS 2 message, so it has the
                // message. Its new session has no state left to release.
                _ => abandoned_releases += 1,
            }
        }
        self.publishes_done(abandoned_releases);
    }

    fn publishes_done(&self, count: usize) {
        if count > 0 {
            self.shared
                .unflushed
                .send_modify(|unflushed| *unflushed = unflushed.saturating_sub(count));
        }
    }

    fn finish(&mut self) {
        self.shared.book().close();
        self.shared
            .state
            .send_replace(ConnectionState::Disconnected);
        tracing::info!(broker = %self.shared.address, "MQTT transport stopped");
    }
}

/// Resolves when shutdown was requested or every transport handle was dropped.
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also stops the task.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
