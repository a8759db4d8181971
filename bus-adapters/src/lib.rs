//! Message bus adapters for sealbus: the secure message client and the raw
//! MQTT, Redis and in-memory transports under it.
//!
//! Modules:
//!
//! - [`client`]: [`SecureMessageClient`], a drop-in for go-mod-messaging
//!   3.x's `MessageClient` that seals every outbound message and delivers
//!   only opened, authorized inbound ones with their verified sender.
//! - [`secure`]: the security engine (publisher epochs and grants,
//!   subscriber grant state, hold buffer, verdicts and counters), with no
//!   I/O of its own.
//! - [`config`]: [`BusConfig`], parsed from a URL, from EdgeX `MessageBus` keys,
//!   or from a JSON/TOML section through serde.
//! - [`transport`]: [`Transport`], one async API over MQTT (rumqttc), Redis
//!   pub/sub (redis) and the in-process [`MemoryBroker`]. It moves opaque
//!   payloads, reconnects on its own and restores subscriptions.
//! - [`error`]: [`AdapterError`], the one error type of this crate.
//!
//! The security layer (sealing and opening EdgeX envelopes) sits on top of
//! [`Transport`] and never uses a broker connection directly. A raw
//! [`Transport`] seals nothing: services use [`SecureMessageClient`].
//!
//! ```text
//!  application ──▶ secure client ──▶ Transport ──▶ MQTT / Redis / memory broker
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod config;
pub mod error;
pub mod secure;
pub mod transport;

pub use client::{ReceivedMessage, SecureMessageClient, TopicChannel};
pub use config::{BusConfig, BusKind, Qos, DEFAULT_MAX_MESSAGE_SIZE};
pub use error::AdapterError;
pub use secure::{Rejection, SecurityConfig, Verdict};
pub use transport::{ConnectionState, Incoming, MemoryBroker, Transport};
