//! The one error type of this crate.

use std::time::Duration;

/// Errors returned by bus configuration parsing and the raw transports.
///
/// Configuration and topic variants are caller mistakes and name the bad value.
/// Connection, publish and subscribe variants report the broker or the network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// A configuration key has a value that cannot be used.
    #[error("invalid bus config value {value:?} for {key}: {reason}")]
    InvalidConfig {
        /// The EdgeX-style key, such as `Qos` or `Port`.
        key: String,
        /// The rejected value as written.
        value: String,
        /// The problem and the accepted values.
        reason: String,
    },

    /// A configuration key is not known, so its setting would be silently ignored.
    #[error("unknown bus config key {key:?}; accepted keys are {accepted}")]
    UnknownConfigKey {
        /// The key as written.
        key: String,
        /// The accepted keys, comma separated.
        accepted: &'static str,
    },

    /// A bus URL cannot be parsed or uses an unsupported scheme or part.
    #[error("invalid bus URL {url:?}: {reason}; accepted forms are mqtt://HOST:PORT, tcp://HOST:PORT, redis://HOST:PORT and memory://NAME")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// The problem with the URL.
        reason: String,
    },

    /// The broker refused the connection or the network failed while connecting.
    #[error("failed to connect to broker {address}: {reason}; check that the broker runs and accepts this client")]
    ConnectFailed {
        /// `host:port` of the broker.
        address: String,
        /// The error reported by the client library.
        reason: String,
    },

    /// The broker did not accept the connection within `ConnectTimeout`.
    #[error("connecting to broker {address} timed out after {timeout:?}; check the address or raise ConnectTimeout")]
    ConnectTimedOut {
        /// `host:port` of the broker.
        address: String,
        /// The configured `ConnectTimeout`.
        timeout: Duration,
    },

    /// The transport was disconnected by the caller or its background task ended.
    #[error("transport for {address} is not connected because it was disconnected; connect a new transport")]
    NotConnected {
        /// `host:port` of the broker, or `memory://NAME`.
        address: String,
    },

    /// A publish could not be handed to the broker.
    #[error("failed to publish on topic {topic:?}: {reason}")]
    PublishFailed {
        /// The topic of the message.
        topic: String,
        /// Description of the failure.
        reason: String,
    },

    /// The broker rejected a subscription or the subscribe request failed.
    #[error("failed to subscribe to filter {filter:?}: {reason}")]
    SubscribeFailed {
        /// The MQTT-syntax filter.
        filter: String,
        /// Description of the failure.
        reason: String,
    },

    /// The broker did not confirm a subscription in time.
    #[error("subscription to {filters} was not confirmed within {timeout:?}; check the broker connection and retry")]
    SubscribeTimedOut {
        /// The filters that are still unconfirmed, comma separated.
        filters: String,
        /// How long the transport waited.
        timeout: Duration,
    },

    /// An unsubscribe request failed or was not confirmed in time.
    #[error("failed to unsubscribe from filter {filter:?}: {reason}")]
    UnsubscribeFailed {
        /// The MQTT-syntax filter.
        filter: String,
        /// Description of the failure.
        reason: String,
    },

    /// A message exceeds `MaxMessageSize` after protocol framing is added.
    #[error("message of {size} bytes (payload plus topic and protocol framing) exceeds the limit of {limit} bytes; send a smaller payload or raise MaxMessageSize")]
    MessageTooLarge {
        /// Size of the whole transport message in bytes.
        size: usize,
        /// The configured `MaxMessageSize` in bytes.
        limit: usize,
    },

    /// A topic cannot be published to.
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// The MQTT topic rule it breaks.
        reason: &'static str,
    },

    /// A subscription filter does not follow MQTT filter syntax.
    #[error("invalid topic filter {filter:?}: {reason}")]
    InvalidFilter {
        /// The filter as given.
        filter: String,
        /// The MQTT filter rule it breaks.
        reason: &'static str,
    },

    /// `disconnect` closed the connection before every queued publish was acknowledged.
    #[error("disconnect closed the connection with {unflushed} publishes not yet acknowledged after waiting {timeout:?}; they may be lost")]
    FlushTimedOut {
        /// Publishes that were queued or awaiting acknowledgement.
        unflushed: usize,
        /// How long `disconnect` waited.
        timeout: Duration,
    },

    /// The envelope layer refused to seal (a field too long, an exhausted
    /// sequence space, an audience too large).
    #[error("failed to seal the message: {0}")]
    Envelope(#[from] sealbus_envelope::EnvelopeError),
    /// The keyring refused: this identity may not publish or subscribe on
    /// the topic, the topic or filter is invalid, or a key, certificate or
    /// bundle file failed to load or verify. The message names the fix.
    #[error(transparent)]
    Keyring(#[from] sealbus_keyring::KeyringError),
    /// No identity in the trust bundle may subscribe to the topic, so a
    /// sealed message could never be read.
    #[error("no identity in the trust bundle may subscribe to topic {topic:?}; issue a subscriber with a matching --subscribe filter and sign a new bundle")]
    NoAudience {
        /// The topic.
        topic: String,
    },
    /// This service's own certificate is not the one the trust bundle lists
    /// under its name.
    #[error("the certificate of {name} in its identity directory is not the one listed in {bundle}; sign a new bundle that includes this identity")]
    IdentityNotInBundle {
        /// This service's name.
        name: String,
        /// The bundle file.
        bundle: String,
    },
    /// No authenticated response arrived in time.
    #[error("no valid response on {response_topic:?} to the request on {request_topic:?} within {timeout:?}; check that the responder runs and may publish on the response topic")]
    RequestTimedOut {
        /// Topic the request was published on.
        request_topic: String,
        /// Topic the response was expected on.
        response_topic: String,
        /// How long the request waited.
        timeout: Duration,
    },
}
