//! The secure message client: a drop-in for go-mod-messaging 3.x's
//! `MessageClient` that seals every outbound message and delivers only
//! opened, authorized inbound ones, each with its verified sender.
//!
//! | go-mod-messaging            | sealbus                                  |
//! |-----------------------------|------------------------------------------|
//! | `Connect()`                 | [`SecureMessageClient::connect`]         |
//! | `Publish(envelope, topic)`  | [`SecureMessageClient::publish`]         |
//! | `Subscribe(topics, errors)` | [`SecureMessageClient::subscribe`]       |
//! | `Request(env, topic, prefix, timeout)` | [`SecureMessageClient::request`] |
//! | `Unsubscribe(topics...)`    | [`SecureMessageClient::unsubscribe`]     |
//! | `Disconnect()`              | [`SecureMessageClient::disconnect`]      |
//!
//! A background task reads the transport, feeds the security engine and
//! routes its output: opened messages to every subscription whose filter
//! matches the topic, rejections to the error channels of those
//! subscriptions, and grant requests and answers back to the broker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sealbus_envelope::MessageEnvelope;
use sealbus_keyring::topic::{filter_matches, validate_filter};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::BusConfig;
use crate::error::AdapterError;
use crate::secure::control::{grant_request_topic, grant_topic, is_control_topic};
use crate::secure::subscriber::{Delivered, Inbound, Rejection};
use crate::secure::{Engine, MetricsSnapshot, SecurityConfig};
use crate::transport::{Incoming, Transport};

/// An opened message with its verified sender.
pub type ReceivedMessage = Delivered;

/// Interval at which held messages expire and grant requests repeat.
pub const TICK_INTERVAL: Duration = Duration::from_millis(250);

/// Most inbound messages the background task handles per wake-up before it
/// routes their results.
const DISPATCH_BATCH: usize = 64;

/// Capacity of the channel of a request's response subscription.
const RESPONSE_CHANNEL_CAPACITY: usize = 4;

/// A topic filter and the channel its messages go to, as go-mod-messaging's
/// `types.TopicChannel`.
#[derive(Debug, Clone)]
pub struct TopicChannel {
    /// MQTT topic filter (`+` and `#` wildcards).
    pub topic: String,
    /// Channel that receives the opened messages on matching topics.
    pub messages: mpsc::Sender<ReceivedMessage>,
}

struct Route {
    id: u64,
    filter: String,
    messages: mpsc::Sender<ReceivedMessage>,
    errors: Option<mpsc::Sender<Rejection>>,
}

struct Inner {
    transport: Transport,
    engine: Mutex<Engine>,
    routes: Mutex<Vec<Route>>,
    /// Bumped under the `routes` lock on every change, so the dispatcher
    /// can detect that its cached matches are stale.
    routes_generation: AtomicU64,
    next_route_id: Mutex<u64>,
    name: String,
    shutdown: watch::Sender<bool>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
}

/// A secure MessageClient over MQTT, Redis or the in-memory bus.
#[derive(Clone)]
pub struct SecureMessageClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SecureMessageClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureMessageClient")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every
    // update is a single assignment), so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Returns the bus context bound into every sealed message.
pub fn bus_context(bus: &BusConfig) -> String {
    match &bus.bus_id {
        Some(id) if !id.is_empty() => format!("{}:{id}", bus.kind.as_str()),
        _ => bus.kind.as_str().to_owned(),
    }
}

impl SecureMessageClient {
    /// Connects to the broker, subscribes to this service's control topics
    /// and starts the background task.
    ///
    /// # Errors
    /// Returns the transport's connect and subscribe errors.
    pub async fn connect(bus: &BusConfig, security: SecurityConfig) -> Result<Self, AdapterError> {
        let (transport, incoming) = Transport::connect(bus).await?;
        Self::start(transport, incoming, bus, security).await
    }

    /// Connects over an already connected transport (for example one of
    /// the in-memory bus).
    ///
    /// # Errors
    /// Returns the transport's subscribe errors.
    pub async fn start(
        transport: Transport,
        incoming: mpsc::Receiver<Incoming>,
        bus: &BusConfig,
        security: SecurityConfig,
    ) -> Result<Self, AdapterError> {
        let engine = Engine::new(security, bus_context(bus));
        let name = engine.name().to_owned();
        transport
            .subscribe(&[grant_topic(&name), grant_request_topic(&name)])
            .await?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            transport,
            engine: Mutex::new(engine),
            routes: Mutex::new(Vec::new()),
            routes_generation: AtomicU64::new(0),
            next_route_id: Mutex::new(0),
            name: name.clone(),
            shutdown,
            dispatcher: Mutex::new(None),
        });
        let task = tokio::spawn(dispatch(Arc::clone(&inner), incoming, shutdown_rx));
        *lock(&inner.dispatcher) = Some(task);
        info!(service = %name, bus = %bus.address(), context = %bus_context(bus), "secure client connected");
        Ok(Self { inner })
    }

    /// Returns this service's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Returns a copy of the counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        lock(&self.inner.engine).shared.metrics.snapshot()
    }

    /// Returns the publisher session of this client.
    pub fn session(&self) -> u64 {
        lock(&self.inner.engine).publisher.session()
    }

    /// Returns the underlying transport, for tests and tools that need raw
    /// access (a raw transport never seals or opens anything).
    pub fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// Seals `envelope` and publishes it on `topic`.
    ///
    /// # Errors
    /// Returns [`AdapterError::Keyring`] when this identity may not publish
    /// on the topic, [`AdapterError::NoAudience`] when nobody may read it,
    /// [`AdapterError::MessageTooLarge`] before sending anything when the
    /// sealed message exceeds the transport limit, and publish errors.
    pub async fn publish(
        &self,
        envelope: &MessageEnvelope,
        topic: &str,
    ) -> Result<(), AdapterError> {
        let bytes = {
            let mut engine = lock(&self.inner.engine);
            let Engine {
                publisher, shared, ..
            } = &mut *engine;
            publisher.seal(shared, topic, envelope)?
        };
        self.publish_sealed(topic, bytes).await
    }

    async fn publish_sealed(&self, topic: &str, bytes: Vec<u8>) -> Result<(), AdapterError> {
        let wire_bytes = self.inner.transport.message_size(topic, bytes.len()) as u64;
        self.inner.transport.publish(topic, bytes.into()).await?;
        let engine = lock(&self.inner.engine);
        engine
            .shared
            .metrics
            .wire_bytes_published
            .fetch_add(wire_bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Seals and publishes without checking that this identity may publish
    /// on the topic, so tests and the demo can show subscribers rejecting an
    /// unauthorized publisher. Never use it in a service.
    ///
    /// # Errors
    /// As [`publish`](Self::publish), less the authorization error.
    pub async fn dangerously_publish_without_authorization(
        &self,
        envelope: &MessageEnvelope,
        topic: &str,
    ) -> Result<(), AdapterError> {
        let bytes = {
            let mut engine = lock(&self.inner.engine);
            let Engine {
                publisher, shared, ..
            } = &mut *engine;
            publisher.dangerously_seal_without_authorization(shared, topic, envelope)?
        };
        self.publish_sealed(topic, bytes).await
    }

    fn add_route(
        &self,
        filter: &str,
        messages: mpsc::Sender<ReceivedMessage>,
        errors: Option<mpsc::Sender<Rejection>>,
    ) -> u64 {
        let id = {
            let mut next = lock(&self.inner.next_route_id);
            *next += 1;
            *next
        };
        let mut routes = lock(&self.inner.routes);
        routes.push(Route {
            id,
            filter: filter.to_owned(),
            messages,
            errors,
        });
        self.inner.routes_generation.fetch_add(1, Ordering::Release);
        id
    }

    fn remove_route(&self, id: u64) -> Option<String> {
        let mut routes = lock(&self.inner.routes);
        let position = routes.iter().position(|route| route.id == id)?;
        let removed = routes.remove(position);
        self.inner.routes_generation.fetch_add(1, Ordering::Release);
        let still_used = routes.iter().any(|route| route.filter == removed.filter);
        (!still_used).then_some(removed.filter)
    }

    /// Subscribes to each topic filter; opened messages go to its channel and
    /// every rejected message on a matching topic goes to `errors`. Returns
    /// once the broker confirmed every subscription.
    ///
    /// # Errors
    /// Returns [`AdapterError::Keyring`] for an invalid filter or a topic this
    /// identity may not subscribe to, and the transport's subscribe errors.
    pub async fn subscribe(
        &self,
        topics: Vec<TopicChannel>,
        errors: mpsc::Sender<Rejection>,
    ) -> Result<(), AdapterError> {
        {
            let engine = lock(&self.inner.engine);
            for channel in &topics {
                validate_filter(&channel.topic)?;
                let exact = !channel.topic.contains(['+', '#']);
                if exact {
                    let now_s = engine.shared.now_s();
                    engine.shared.policy.authorize_subscriber(
                        &self.inner.name,
                        &channel.topic,
                        now_s,
                    )?;
                }
            }
        }
        let mut ids = Vec::with_capacity(topics.len());
        for channel in &topics {
            ids.push(self.add_route(
                &channel.topic,
                channel.messages.clone(),
                Some(errors.clone()),
            ));
        }
        let filters: Vec<String> = topics.iter().map(|channel| channel.topic.clone()).collect();
        if let Err(error) = self.inner.transport.subscribe(&filters).await {
            for id in ids {
                self.remove_route(id);
            }
            return Err(error);
        }
        Ok(())
    }

    /// Removes every subscription to these filters.
    ///
    /// # Errors
    /// Returns the transport's unsubscribe errors.
    pub async fn unsubscribe(&self, topics: &[&str]) -> Result<(), AdapterError> {
        {
            let mut routes = lock(&self.inner.routes);
            routes.retain(|route| !topics.contains(&route.filter.as_str()));
            self.inner.routes_generation.fetch_add(1, Ordering::Release);
        }
        let filters: Vec<String> = topics.iter().map(|topic| (*topic).to_owned()).collect();
        self.inner.transport.unsubscribe(&filters).await
    }

    /// Publishes a request and waits for its response on
    /// `response_topic_prefix/REQUEST_ID`, as go-mod-messaging does. The
    /// response subscription is confirmed by the broker before the request
    /// is published. The response must come from an identity allowed to
    /// publish on the response topic; its verified name is in the result.
    ///
    /// # Errors
    /// Returns [`AdapterError::RequestTimedOut`] when no valid response
    /// arrives in time, and publish and subscribe errors.
    pub async fn request(
        &self,
        envelope: &MessageEnvelope,
        request_topic: &str,
        response_topic_prefix: &str,
        timeout: Duration,
    ) -> Result<ReceivedMessage, AdapterError> {
        self.request_inner(
            envelope,
            request_topic,
            response_topic_prefix,
            timeout,
            None,
        )
        .await
    }

    /// Like [`request`](Self::request), and also requires the response to
    /// come from the identity `responder`.
    ///
    /// # Errors
    /// As `request`; a response from another identity is ignored, so the
    /// call times out unless `responder` answers.
    pub async fn request_from(
        &self,
        envelope: &MessageEnvelope,
        request_topic: &str,
        response_topic_prefix: &str,
        timeout: Duration,
        responder: &str,
    ) -> Result<ReceivedMessage, AdapterError> {
        self.request_inner(
            envelope,
            request_topic,
            response_topic_prefix,
            timeout,
            Some(responder),
        )
        .await
    }

    async fn request_inner(
        &self,
        envelope: &MessageEnvelope,
        request_topic: &str,
        response_topic_prefix: &str,
        timeout: Duration,
        responder: Option<&str>,
    ) -> Result<ReceivedMessage, AdapterError> {
        let mut envelope = envelope.clone();
        if envelope.request_id.is_empty() {
            envelope.request_id = self.random_uuid();
        }
        let response_topic = format!(
            "{}/{}",
            response_topic_prefix.trim_end_matches('/'),
            envelope.request_id
        );
        let (sender, mut responses) = mpsc::channel(RESPONSE_CHANNEL_CAPACITY);
        let route = self.add_route(&response_topic, sender, None);
        let result = async {
            self.inner.transport.subscribe(std::slice::from_ref(&response_topic)).await?;
            self.publish(&envelope, request_topic).await?;
            let wait = async {
                while let Some(response) = responses.recv().await {
                    if response.envelope.request_id != envelope.request_id {
                        debug!(topic = %response_topic, "ignored a response for another request ID");
                        continue;
                    }
                    if let Some(expected) = responder {
                        if response.sender != expected {
                            warn!(topic = %response_topic, expected, actual = %response.sender, "ignored a response from an unexpected responder");
                            continue;
                        }
                    }
                    return Some(response);
                }
                None
            };
            match tokio::time::timeout(timeout, wait).await {
                Ok(Some(response)) => Ok(response),
                _ => Err(AdapterError::RequestTimedOut {
                    request_topic: request_topic.to_owned(),
                    response_topic: response_topic.clone(),
                    timeout,
                }),
            }
        }
        .await;
        if let Some(filter) = self.remove_route(route) {
            if let Err(error) = self.inner.transport.unsubscribe(&[filter]).await {
                debug!(%error, "failed to unsubscribe from a response topic");
            }
        }
        result
    }

    fn random_uuid(&self) -> String {
        let mut bytes = [0u8; 16];
        lock(&self.inner.engine).shared.rng.fill_bytes(&mut bytes);
        // RFC 4122 version 4, variant 1.
        bytes[6] = (bytes[6] & 0x0F) | 0x40;
        bytes[8] = (bytes[8] & 0x3F) | 0x80;
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    /// Stops the background task and disconnects, after flushing publishes
    /// still queued in the transport.
    ///
    /// # Errors
    /// Returns the transport's disconnect error.
    pub async fn disconnect(&self) -> Result<(), AdapterError> {
        let _ = self.inner.shutdown.send(true);
        let task = lock(&self.inner.dispatcher).take();
        let result = self.inner.transport.disconnect().await;
        if let Some(task) = task {
            let _ = task.await;
        }
        info!(service = %self.inner.name, "secure client disconnected");
        result
    }
}

async fn dispatch(
    inner: Arc<Inner>,
    mut incoming: mpsc::Receiver<Incoming>,
    mut shutdown: watch::Receiver<bool>,
) {
    let grants = grant_topic(&inner.name);
    let requests = grant_request_topic(&inner.name);
    let mut ticker = tokio::time::interval(TICK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cache = RouteCache::default();
    loop {
        let mut out = Vec::new();
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = ticker.tick() => {
                let mut engine = lock(&inner.engine);
                let Engine { subscriber, shared, .. } = &mut *engine;
                subscriber.tick(shared, &mut out);
            }
            message = incoming.recv() => {
                let Some(message) = message else { break };
                handle_incoming(&inner, &mut cache, &grants, &requests, message, &mut out);
                // Under load, take what is already queued before routing, so
                // one wake-up of this task serves many messages.
                for _ in 1..DISPATCH_BATCH {
                    let Ok(message) = incoming.try_recv() else { break };
                    handle_incoming(&inner, &mut cache, &grants, &requests, message, &mut out);
                }
            }
        }
        route_outputs(&inner, &mut cache, out).await;
    }
    debug!(service = %inner.name, "dispatcher stopped");
}

/// The subscription channels matching the most recent topic. A stream of
/// messages on one topic, the common case, then costs no lock and no
/// filter matching per message. It keeps weak senders, so an unsubscribed
/// channel still closes as soon as its route is removed.
#[derive(Default)]
struct RouteCache {
    /// Routes generation the entry was computed at; 0 means empty, since
    /// subscribing bumps the generation before any message can match.
    generation: u64,
    topic: String,
    messages: Vec<mpsc::WeakSender<ReceivedMessage>>,
}

impl RouteCache {
    /// Returns whether any subscription's filter matches `topic`.
    fn matches(&mut self, inner: &Inner, topic: &str) -> bool {
        self.refresh(inner, topic);
        !self.messages.is_empty()
    }

    /// Returns the distinct open channels whose filter matches `topic`.
    fn targets(&mut self, inner: &Inner, topic: &str) -> Vec<mpsc::Sender<ReceivedMessage>> {
        self.refresh(inner, topic);
        self.messages
            .iter()
            .filter_map(mpsc::WeakSender::upgrade)
            .collect()
    }

    fn refresh(&mut self, inner: &Inner, topic: &str) {
        let current = inner.routes_generation.load(Ordering::Acquire);
        if current != self.generation || self.topic != topic {
            let routes = lock(&inner.routes);
            let matching: Vec<mpsc::Sender<ReceivedMessage>> = routes
                .iter()
                .filter(|route| filter_matches(&route.filter, topic))
                .map(|route| route.messages.clone())
                .collect();
            self.messages = dedup_senders(matching)
                .iter()
                .map(mpsc::Sender::downgrade)
                .collect();
            // Read under the lock, so a change made after it is seen next time.
            self.generation = inner.routes_generation.load(Ordering::Acquire);
            topic.clone_into(&mut self.topic);
        }
    }
}

fn handle_incoming(
    inner: &Inner,
    cache: &mut RouteCache,
    grants: &str,
    requests: &str,
    message: Incoming,
    out: &mut Vec<Inbound>,
) {
    let topic = message.topic.as_str();
    if topic == grants {
        let mut engine = lock(&inner.engine);
        let Engine {
            subscriber, shared, ..
        } = &mut *engine;
        subscriber.handle_grant(shared, topic, &message.payload, out);
        return;
    }
    if topic == requests {
        let answer = {
            let mut engine = lock(&inner.engine);
            let Engine {
                publisher, shared, ..
            } = &mut *engine;
            let answer = publisher.answer_grant_request(shared, topic, &message.payload);
            if let Err(rejection) = &answer {
                shared.report(rejection);
            }
            answer
        };
        if let Ok((topic, bytes)) = answer {
            out.push(Inbound::Send { topic, bytes });
        }
        return;
    }
    if is_control_topic(topic) {
        // Another service's control traffic, seen through a wildcard filter.
        return;
    }
    if !cache.matches(inner, topic) {
        debug!(service = %inner.name, topic, "ignored a message on a topic no subscription matches");
        return;
    }
    let mut engine = lock(&inner.engine);
    let Engine {
        subscriber, shared, ..
    } = &mut *engine;
    subscriber.handle_data(shared, topic, &message.payload, message.duplicate, out);
}

async fn route_outputs(inner: &Inner, cache: &mut RouteCache, out: Vec<Inbound>) {
    for output in out {
        match output {
            Inbound::Delivered(delivered) => {
                let targets = cache.targets(inner, &delivered.topic);
                // Every target but the last gets a copy; the last gets the
                // message itself.
                let Some((last, others)) = targets.split_last() else {
                    continue;
                };
                for target in others {
                    if target.send(delivered.clone()).await.is_err() {
                        debug!(topic = %delivered.topic, "a subscription channel is closed");
                    }
                }
                if let Err(closed) = last.send(delivered).await {
                    debug!(topic = %closed.0.topic, "a subscription channel is closed");
                }
            }
            Inbound::Rejected(rejection) => {
                let targets: Vec<mpsc::Sender<Rejection>> = lock(&inner.routes)
                    .iter()
                    .filter(|route| filter_matches(&route.filter, &rejection.topic))
                    .filter_map(|route| route.errors.clone())
                    .collect();
                for target in dedup_senders(targets) {
                    let _ = target.send(rejection.clone()).await;
                }
            }
            Inbound::Send { topic, bytes } => {
                if let Err(error) = inner.transport.publish(&topic, bytes.into()).await {
                    warn!(service = %inner.name, topic, %error, "failed to publish a control message");
                }
            }
        }
    }
}

/// Keeps one sender per underlying channel, so a rejection on a topic that
/// matches several filters of one `subscribe` call is reported once.
fn dedup_senders<T>(senders: Vec<mpsc::Sender<T>>) -> Vec<mpsc::Sender<T>> {
    let mut unique: Vec<mpsc::Sender<T>> = Vec::with_capacity(senders.len());
    for sender in senders {
        if !unique.iter().any(|existing| existing.same_channel(&sender)) {
            unique.push(sender);
        }
    }
    unique
}
