//! Bus configuration that mirrors the EdgeX `MessageBus` section.
//!
//! A configuration comes from a URL ([`BusConfig::from_url`]), from the EdgeX keys
//! ([`BusConfig::from_edgex`]) or from a JSON/TOML section through serde, where the
//! field names are EdgeX's PascalCase keys:
//!
//! ```json
//! { "Type": "mqtt", "Protocol": "tcp", "Host": "127.0.0.1", "Port": 1883,
//!   "Optional": { "ClientId": "core-data", "Qos": "1", "KeepAlive": "10" } }
//! ```
//!
//! Unknown keys are rejected rather than ignored, because a setting that is silently
//! dropped (for example an authentication mode) would leave the caller with a
//! weaker configuration than the one written.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::error::AdapterError;

/// Default limit in bytes for one whole transport message (payload, topic and
/// protocol framing), in both directions. Sealed EdgeX events are usually a few
/// KiB, and 256 KiB leaves room for binary readings while bounding the memory a
/// single message can take.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 256 * 1024;

/// Largest accepted `MaxMessageSize` in bytes: the largest MQTT 3.1.1 packet
/// (a remaining length of 268,435,455 bytes plus a 5-byte fixed header).
pub const MAX_MESSAGE_SIZE_CEILING: usize = 268_435_455 + 5;

/// Default MQTT broker port (IANA registration for MQTT over TCP).
pub const DEFAULT_MQTT_PORT: u16 = 1883;

/// Default Redis server port.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

/// Default MQTT keep-alive interval, the value EdgeX's service templates use.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Default time allowed for one connection attempt, the EdgeX default `ConnectTimeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest accepted `ConnectTimeout`. Longer waits hide a wrong address from the
/// operator for too long.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// Maximum length of `BusId` in bytes. The security layer binds the bus
/// context `TYPE:BUSID` into every sealed message, and the envelope format
/// allows a context of at most 128 bytes. The longest type name is
/// "memory", so 7 bytes go to "memory:".
pub const MAX_BUS_ID_LEN: usize = sealbus_envelope::limits::MAX_CONTEXT_LEN - "memory:".len();

/// Maximum length in bytes of an MQTT UTF-8 string such as a client id.
const MQTT_MAX_STRING_LEN: usize = u16::MAX as usize;

/// The `Optional` keys that [`BusConfig::from_edgex`] accepts, for error messages.
pub const OPTIONAL_KEYS: &str =
    "ClientId, Qos, KeepAlive, Retained, CleanSession, MaxMessageSize, ConnectTimeout, BusId";

/// The message bus implementation, EdgeX's `MessageBus.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BusKind {
    /// An MQTT 3.1.1 broker reached over TCP.
    Mqtt,
    /// Redis pub/sub.
    Redis,
    /// The in-process [`MemoryBroker`](crate::transport::MemoryBroker).
    Memory,
}

impl BusKind {
    /// Returns the EdgeX `Type` value: `"mqtt"`, `"redis"` or `"memory"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BusKind::Mqtt => "mqtt",
            BusKind::Redis => "redis",
            BusKind::Memory => "memory",
        }
    }

    /// Returns the EdgeX `Protocol` value that goes with this type.
    pub fn protocol(self) -> &'static str {
        match self {
            BusKind::Mqtt => "tcp",
            BusKind::Redis => "redis",
            BusKind::Memory => "memory",
        }
    }

    fn parse(value: &str) -> Result<Self, AdapterError> {
        match value.to_ascii_lowercase().as_str() {
            "mqtt" => Ok(BusKind::Mqtt),
            "redis" => Ok(BusKind::Redis),
            "memory" => Ok(BusKind::Memory),
            _ => Err(invalid(
                "Type",
                value,
                "accepted types are mqtt, redis and memory",
            )),
        }
    }
}

impl fmt::Display for BusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// MQTT quality of service for publishes and subscriptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Qos {
    /// QoS 0 (MQTT 3.1.1 section 4.3.1): delivery at most once, without acknowledgement.
    AtMostOnce,
    /// QoS 1 (section 4.3.2): delivery at least once, so duplicates are possible.
    AtLeastOnce,
    /// QoS 2 (section 4.3.3): delivery exactly once through a four-packet handshake.
    ExactlyOnce,
}

impl Qos {
    /// Returns the MQTT QoS number 0, 1 or 2.
    pub fn level(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
            Qos::ExactlyOnce => 2,
        }
    }

    fn parse(value: &str) -> Result<Self, AdapterError> {
        match value.trim() {
            "0" => Ok(Qos::AtMostOnce),
            "1" => Ok(Qos::AtLeastOnce),
            "2" => Ok(Qos::ExactlyOnce),
            _ => Err(invalid("Qos", value, "accepted values are 0, 1 and 2")),
        }
    }
}

/// Connection settings of one message bus.
///
/// Build it with [`BusConfig::from_url`], [`BusConfig::from_edgex`], serde, or
/// [`BusConfig::new`] followed by field changes. [`BusConfig::validate`] checks
/// the combination, and `Transport::connect` calls it again.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "EdgexBusSection")]
#[non_exhaustive]
pub struct BusConfig {
    /// `Type`: which broker implementation to use.
    pub kind: BusKind,
    /// `Host`: broker host name or IP address, or the broker name for `memory`.
    /// IPv6 addresses are stored without brackets.
    pub host: String,
    /// `Port`: broker TCP port, 0 for `memory`.
    pub port: u16,
    /// `Optional.ClientId`: MQTT client identifier. `None` lets the transport
    /// generate a unique one, because two clients with the same id disconnect
    /// each other.
    pub client_id: Option<String>,
    /// `Optional.Qos`: MQTT QoS for publishes and subscriptions (MQTT only).
    pub qos: Qos,
    /// `Optional.KeepAlive`: MQTT keep-alive interval in whole seconds, zero
    /// disables it.
    pub keep_alive: Duration,
    /// `Optional.Retained`: publish with the MQTT retain flag (MQTT only).
    pub retained: bool,
    /// `Optional.CleanSession`: start each MQTT connection with a clean session
    /// (MQTT only).
    pub clean_session: bool,
    /// `Optional.MaxMessageSize`: limit in bytes for one whole transport message,
    /// payload plus topic plus protocol framing, in both directions.
    pub max_message_size: usize,
    /// `Optional.ConnectTimeout`: time allowed for one connection attempt, in
    /// whole seconds.
    pub connect_timeout: Duration,
    /// `Optional.BusId`: a name for this bus that the security layer binds into
    /// every sealed message, so that a message cannot be moved between two buses
    /// of the same type.
    pub bus_id: Option<String>,
}

impl BusConfig {
    /// Creates a configuration with every optional setting at its default.
    pub fn new(kind: BusKind, host: impl Into<String>, port: u16) -> Self {
        BusConfig {
            kind,
            host: host.into(),
            port,
            client_id: None,
            qos: Qos::AtMostOnce,
            keep_alive: DEFAULT_KEEP_ALIVE,
            retained: false,
            clean_session: true,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            bus_id: None,
        }
    }

    /// Parses a bus URL: `mqtt://HOST[:PORT]`, `tcp://HOST[:PORT]` (MQTT),
    /// `redis://HOST[:PORT]` or `memory://NAME`.
    ///
    /// Query parameters set `Optional` keys, as in
    /// `mqtt://127.0.0.1:1883?ClientId=core-data&Qos=1`.
    ///
    /// # Errors
    ///
    /// [`AdapterError::InvalidUrl`] names the URL and lists the accepted schemes
    /// when the URL cannot be parsed, has an unknown scheme, credentials, a path
    /// or a fragment. Bad query parameters give the errors of
    /// [`BusConfig::from_edgex`].
    pub fn from_url(url: &str) -> Result<Self, AdapterError> {
        let bad_url = |reason: &str| AdapterError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = Url::parse(url).map_err(|error| bad_url(&error.to_string()))?;

        let (kind, default_port) = match parsed.scheme() {
            "mqtt" | "tcp" => (BusKind::Mqtt, DEFAULT_MQTT_PORT),
            "redis" => (BusKind::Redis, DEFAULT_REDIS_PORT),
            "memory" => (BusKind::Memory, 0),
            other => return Err(bad_url(&format!("unsupported scheme {other:?}"))),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad_url("credentials in the URL are not supported"));
        }
        if !matches!(parsed.path(), "" | "/") {
            return Err(bad_url("a path is not supported"));
        }
        if parsed.fragment().is_some() {
            return Err(bad_url("a fragment is not supported"));
        }

        let host = match parsed.host() {
            Some(url::Host::Domain(name)) => name.to_owned(),
            Some(url::Host::Ipv4(address)) => address.to_string(),
            Some(url::Host::Ipv6(address)) => address.to_string(),
            None => return Err(bad_url("the host is missing")),
        };
        if host.is_empty() {
            return Err(bad_url("the host is missing"));
        }
        if kind == BusKind::Memory && parsed.port().is_some() {
            return Err(bad_url("a memory bus has a name and no port"));
        }
        let port = parsed.port().unwrap_or(default_port);

        let mut optional = HashMap::new();
        for (key, value) in parsed.query_pairs() {
            if optional
                .insert(key.to_string(), value.to_string())
                .is_some()
            {
                return Err(bad_url(&format!("query parameter {key:?} is given twice")));
            }
        }

        let mut config = BusConfig::new(kind, host, port);
        config.apply_optional(&optional)?;
        config.validate()?;
        Ok(config)
    }

    /// Builds a configuration from EdgeX `MessageBus` keys.
    ///
    /// `type` is `mqtt`, `redis` or `memory`. `protocol` must be `tcp` for MQTT
    /// and `redis` for Redis, and may be empty. `optional` contains the
    /// `MessageBus.Optional` map with string values, as EdgeX writes them.
    ///
    /// # Errors
    ///
    /// [`AdapterError::UnknownConfigKey`] for an `Optional` key not in
    /// [`OPTIONAL_KEYS`], and [`AdapterError::InvalidConfig`] naming the key for a
    /// value that cannot be parsed or does not fit the bus type.
    pub fn from_edgex(
        r#type: &str,
        protocol: &str,
        host: &str,
        port: u16,
        optional: &HashMap<String, String>,
    ) -> Result<Self, AdapterError> {
        let kind = BusKind::parse(r#type)?;
        let protocol_matches =
            protocol.is_empty() || protocol.eq_ignore_ascii_case(kind.protocol());
        if !protocol_matches {
            return Err(invalid(
                "Protocol",
                protocol,
                &format!("Type {kind} accepts only Protocol {:?}", kind.protocol()),
            ));
        }

        let mut config = BusConfig::new(kind, host, port);
        config.apply_optional(optional)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the settings are usable together.
    ///
    /// # Errors
    ///
    /// [`AdapterError::InvalidConfig`] naming the first key with a bad value.
    pub fn validate(&self) -> Result<(), AdapterError> {
        self.validate_address()?;
        self.validate_limits()?;
        self.validate_mqtt_options()?;
        self.validate_bus_id()
    }

    /// Returns the broker address for logs and errors: `host:port`,
    /// `[ipv6]:port` or `memory://NAME`.
    pub fn address(&self) -> String {
        match self.kind {
            BusKind::Memory => format!("memory://{}", self.host),
            _ if self.host.contains(':') => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    fn apply_optional(&mut self, optional: &HashMap<String, String>) -> Result<(), AdapterError> {
        // Sorted so that the first error reported does not depend on hash order.
        let mut entries: Vec<_> = optional.iter().collect();
        entries.sort();
        for (key, value) in entries {
            self.apply_optional_key(key, value)?;
        }
        Ok(())
    }

    fn apply_optional_key(&mut self, key: &str, value: &str) -> Result<(), AdapterError> {
        match key.to_ascii_lowercase().as_str() {
            "clientid" => self.client_id = Some(value.to_owned()),
            "qos" => self.qos = Qos::parse(value)?,
            "keepalive" => self.keep_alive = parse_seconds("KeepAlive", value)?,
            "retained" => self.retained = parse_bool("Retained", value)?,
            "cleansession" => self.clean_session = parse_bool("CleanSession", value)?,
            "maxmessagesize" => self.max_message_size = parse_size("MaxMessageSize", value)?,
            "connecttimeout" => self.connect_timeout = parse_seconds("ConnectTimeout", value)?,
            "busid" => self.bus_id = Some(value.to_owned()),
            _ => {
                return Err(AdapterError::UnknownConfigKey {
                    key: key.to_owned(),
                    accepted: OPTIONAL_KEYS,
                })
            }
        }
        Ok(())
    }

    fn validate_address(&self) -> Result<(), AdapterError> {
        if self.host.is_empty() {
            let reason = match self.kind {
                BusKind::Memory => "set the broker name",
                _ => "set the broker host name or IP address",
            };
            return Err(invalid("Host", &self.host, reason));
        }
        match self.kind {
            BusKind::Memory if self.port != 0 => Err(invalid(
                "Port",
                &self.port.to_string(),
                "a memory bus has no port; use 0",
            )),
            BusKind::Mqtt | BusKind::Redis if self.port == 0 => {
                Err(invalid("Port", "0", "set the broker port, 1 to 65535"))
            }
            _ => Ok(()),
        }
    }

    fn validate_limits(&self) -> Result<(), AdapterError> {
        if self.max_message_size == 0 || self.max_message_size > MAX_MESSAGE_SIZE_CEILING {
            return Err(invalid(
                "MaxMessageSize",
                &self.max_message_size.to_string(),
                &format!("accepted sizes are 1 to {MAX_MESSAGE_SIZE_CEILING} bytes"),
            ));
        }

        let timeout = self.connect_timeout;
        let whole_seconds = timeout.subsec_nanos() == 0;
        if !whole_seconds || timeout.is_zero() || timeout > MAX_CONNECT_TIMEOUT {
            return Err(invalid(
                "ConnectTimeout",
                &format!("{timeout:?}"),
                &format!(
                    "accepted values are whole seconds from 1 to {}",
                    MAX_CONNECT_TIMEOUT.as_secs()
                ),
            ));
        }

        let keep_alive = self.keep_alive;
        if keep_alive.subsec_nanos() != 0 || keep_alive.as_secs() > u64::from(u16::MAX) {
            return Err(invalid(
                "KeepAlive",
                &format!("{keep_alive:?}"),
                "accepted values are whole seconds from 0 (disabled) to 65535",
            ));
        }
        Ok(())
    }

    fn validate_mqtt_options(&self) -> Result<(), AdapterError> {
        if let Some(client_id) = &self.client_id {
            if client_id.is_empty() || client_id.len() > MQTT_MAX_STRING_LEN {
                return Err(invalid(
                    "ClientId",
                    client_id,
                    "use 1 to 65535 bytes, or remove the key to generate a unique id",
                ));
            }
            if client_id.contains('\0') {
                return Err(invalid(
                    "ClientId",
                    client_id,
                    "a client id must not contain NUL",
                ));
            }
        }
        if self.kind == BusKind::Mqtt {
            if !self.clean_session && self.client_id.is_none() {
                return Err(invalid(
                    "CleanSession",
                    "false",
                    "a persistent session needs a fixed ClientId; set ClientId",
                ));
            }
            return Ok(());
        }

        let only_mqtt = format!("this setting applies only to Type mqtt, not {}", self.kind);
        if self.qos != Qos::AtMostOnce {
            return Err(invalid("Qos", &self.qos.level().to_string(), &only_mqtt));
        }
        if self.retained {
            return Err(invalid("Retained", "true", &only_mqtt));
        }
        if !self.clean_session {
            return Err(invalid("CleanSession", "false", &only_mqtt));
        }
        Ok(())
    }

    fn validate_bus_id(&self) -> Result<(), AdapterError> {
        let Some(bus_id) = &self.bus_id else {
            return Ok(());
        };
        if bus_id.is_empty() || bus_id.len() > MAX_BUS_ID_LEN {
            return Err(invalid(
                "BusId",
                bus_id,
                &format!("use 1 to {MAX_BUS_ID_LEN} bytes, or remove the key"),
            ));
        }
        if bus_id.chars().any(char::is_control) {
            return Err(invalid(
                "BusId",
                bus_id,
                "a bus id must not contain control characters",
            ));
        }
        Ok(())
    }
}

fn invalid(key: &str, value: &str, reason: &str) -> AdapterError {
    AdapterError::InvalidConfig {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, AdapterError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "accepted values are true and false")),
    }
}

fn parse_seconds(key: &str, value: &str) -> Result<Duration, AdapterError> {
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| invalid(key, value, "expected a whole number of seconds"))
}

fn parse_size(key: &str, value: &str) -> Result<usize, AdapterError> {
    value
        .trim()
        .parse::<usize>()
        .map_err(|_| invalid(key, value, "expected a whole number of bytes"))
}

/// The serialized form of an EdgeX `MessageBus` section.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct EdgexBusSection {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(default)]
    protocol: String,
    host: String,
    port: u16,
    #[serde(default)]
    optional: HashMap<String, OptionalValue>,
}

/// An `Optional` value. EdgeX writes strings, but hand-written JSON or TOML
/// often has bare numbers and booleans.
#[derive(Deserialize)]
#[serde(untagged)]
enum OptionalValue {
    Text(String),
    Number(u64),
    Flag(bool),
}

impl OptionalValue {
    fn into_text(self) -> String {
        match self {
            OptionalValue::Text(text) => text,
            OptionalValue::Number(number) => number.to_string(),
            OptionalValue::Flag(flag) => flag.to_string(),
        }
    }
}

impl TryFrom<EdgexBusSection> for BusConfig {
    type Error = AdapterError;

    fn try_from(section: EdgexBusSection) -> Result<Self, Self::Error> {
        let optional = section
            .optional
            .into_iter()
            .map(|(key, value)| (key, value.into_text()))
            .collect();
        BusConfig::from_edgex(
            &section.kind,
            &section.protocol,
            &section.host,
            section.port,
            &optional,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn optional(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn config_key_of(error: AdapterError) -> String {
        match error {
            AdapterError::InvalidConfig { key, .. } => key,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn url_mqtt_with_port() {
        let config = BusConfig::from_url("mqtt://127.0.0.1:1883").unwrap();
        assert_eq!(config.kind, BusKind::Mqtt);
        assert_eq!(config.host, "127.0.0.1");
        assert_eq!(config.port, 1883);
        assert_eq!(config.max_message_size, DEFAULT_MAX_MESSAGE_SIZE);
        assert_eq!(config.qos, Qos::AtMostOnce);
        assert_eq!(config.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert!(config.clean_session);
        assert_eq!(config.address(), "127.0.0.1:1883");
    }

    #[test]
    fn url_tcp_is_mqtt_with_default_port() {
        let config = BusConfig::from_url("tcp://broker.local").unwrap();
        assert_eq!(config.kind, BusKind::Mqtt);
        assert_eq!(config.host, "broker.local");
        assert_eq!(config.port, DEFAULT_MQTT_PORT);
    }

    #[test]
    fn url_redis_default_port() {
        let config = BusConfig::from_url("redis://localhost").unwrap();
        assert_eq!(config.kind, BusKind::Redis);
        assert_eq!(config.port, DEFAULT_REDIS_PORT);
        let with_slash = BusConfig::from_url("redis://localhost:7000/").unwrap();
        assert_eq!(with_slash.port, 7000);
    }

    #[test]
    fn url_memory_name() {
        let config = BusConfig::from_url("memory://unit-bus").unwrap();
        assert_eq!(config.kind, BusKind::Memory);
        assert_eq!(config.host, "unit-bus");
        assert_eq!(config.port, 0);
        assert_eq!(config.address(), "memory://unit-bus");
    }

    #[test]
    fn url_ipv6_host_without_brackets() {
        let config = BusConfig::from_url("mqtt://[::1]:1884").unwrap();
        assert_eq!(config.host, "::1");
        assert_eq!(config.address(), "[::1]:1884");
    }

    #[test]
    fn url_query_sets_optional_keys() {
        let url =
            "mqtt://127.0.0.1:1883?ClientId=core-data&Qos=1&MaxMessageSize=1024&BusId=plant-a";
        let config = BusConfig::from_url(url).unwrap();
        assert_eq!(config.client_id.as_deref(), Some("core-data"));
        assert_eq!(config.qos, Qos::AtLeastOnce);
        assert_eq!(config.max_message_size, 1024);
        assert_eq!(config.bus_id.as_deref(), Some("plant-a"));
    }

    #[test]
    fn url_rejections_name_url_and_schemes() {
        let cases = [
            "http://127.0.0.1:80",
            "mqtt://user:secret@127.0.0.1:1883",
            "mqtt://127.0.0.1:1883/path",
            "mqtt://127.0.0.1:1883#part",
            "memory://bus:12",
            "not a url",
            "mqtt://127.0.0.1?Qos=1&Qos=2",
        ];
        for url in cases {
            let error = BusConfig::from_url(url).unwrap_err();
            assert!(
                matches!(error, AdapterError::InvalidUrl { .. }),
                "{url}: {error:?}"
            );
            let message = error.to_string();
            assert!(message.contains(url), "{url}: {message}");
            assert!(message.contains("mqtt://HOST:PORT"), "{url}: {message}");
            assert!(message.contains("memory://NAME"), "{url}: {message}");
        }
    }

    #[test]
    fn url_credentials_not_echoed_as_accepted() {
        let error = BusConfig::from_url("redis://:pw@127.0.0.1").unwrap_err();
        assert!(error.to_string().contains("credentials"));
    }

    #[test]
    fn url_bad_query_value_names_key() {
        let error = BusConfig::from_url("mqtt://127.0.0.1?Qos=7").unwrap_err();
        assert_eq!(config_key_of(error), "Qos");
    }

    #[test]
    fn edgex_all_optional_keys() {
        let keys = optional(&[
            ("ClientId", "device-virtual"),
            ("Qos", "2"),
            ("KeepAlive", "30"),
            ("Retained", "true"),
            ("CleanSession", "false"),
            ("MaxMessageSize", "65536"),
            ("ConnectTimeout", "9"),
            ("BusId", "line-3"),
        ]);
        let config = BusConfig::from_edgex("mqtt", "tcp", "broker", 1883, &keys).unwrap();
        assert_eq!(config.client_id.as_deref(), Some("device-virtual"));
        assert_eq!(config.qos, Qos::ExactlyOnce);
        assert_eq!(config.keep_alive, Duration::from_secs(30));
        assert!(config.retained);
        assert!(!config.clean_session);
        assert_eq!(config.max_message_size, 65536);
        assert_eq!(config.connect_timeout, Duration::from_secs(9));
        assert_eq!(config.bus_id.as_deref(), Some("line-3"));
    }

    #[test]
    fn edgex_keys_are_case_insensitive() {
        let keys = optional(&[("clientid", "a"), ("QOS", "1")]);
        let config = BusConfig::from_edgex("MQTT", "TCP", "broker", 1883, &keys).unwrap();
        assert_eq!(config.client_id.as_deref(), Some("a"));
        assert_eq!(config.qos, Qos::AtLeastOnce);
    }

    #[test]
    fn edgex_redis_defaults() {
        let config =
            BusConfig::from_edgex("redis", "redis", "localhost", 6379, &HashMap::new()).unwrap();
        assert_eq!(config.kind, BusKind::Redis);
        assert_eq!(config.kind.as_str(), "redis");
        assert_eq!(config.qos, Qos::AtMostOnce);
    }

    #[test]
    fn edgex_unknown_optional_key_rejected() {
        let keys = optional(&[("AutoReconnect", "true")]);
        let error = BusConfig::from_edgex("mqtt", "tcp", "broker", 1883, &keys).unwrap_err();
        match &error {
            AdapterError::UnknownConfigKey { key, accepted } => {
                assert_eq!(key, "AutoReconnect");
                assert_eq!(*accepted, OPTIONAL_KEYS);
            }
            other => panic!("expected UnknownConfigKey, got {other:?}"),
        }
        assert!(error.to_string().contains("AutoReconnect"));
    }

    #[test]
    fn edgex_bad_values_name_key() {
        let cases: &[(&str, &str)] = &[
            ("Qos", "3"),
            ("Qos", "one"),
            ("KeepAlive", "-1"),
            ("KeepAlive", "70000"),
            ("Retained", "yes"),
            ("CleanSession", "1"),
            ("MaxMessageSize", "0"),
            ("MaxMessageSize", "big"),
            ("MaxMessageSize", "300000000"),
            ("ConnectTimeout", "0"),
            ("ConnectTimeout", "100000"),
            ("ClientId", ""),
            ("BusId", ""),
            ("BusId", "bus\nid"),
        ];
        for (key, value) in cases {
            let keys = optional(&[(key, value)]);
            let error = BusConfig::from_edgex("mqtt", "tcp", "broker", 1883, &keys).unwrap_err();
            let message = error.to_string();
            assert_eq!(config_key_of(error), *key, "value {value:?}");
            assert!(message.contains(key), "{message}");
        }
    }

    #[test]
    fn edgex_bus_id_too_long() {
        let long = "b".repeat(MAX_BUS_ID_LEN + 1);
        let keys = optional(&[("BusId", long.as_str())]);
        let error = BusConfig::from_edgex("mqtt", "tcp", "broker", 1883, &keys).unwrap_err();
        assert_eq!(config_key_of(error), "BusId");
    }

    #[test]
    fn edgex_unknown_type_and_protocol() {
        let none = HashMap::new();
        let error = BusConfig::from_edgex("nats", "tcp", "broker", 4222, &none).unwrap_err();
        assert_eq!(config_key_of(error), "Type");
        let error = BusConfig::from_edgex("mqtt", "ssl", "broker", 8883, &none).unwrap_err();
        assert_eq!(config_key_of(error), "Protocol");
        let error = BusConfig::from_edgex("redis", "tcp", "broker", 6379, &none).unwrap_err();
        assert_eq!(config_key_of(error), "Protocol");
    }

    #[test]
    fn edgex_missing_host_and_port() {
        let none = HashMap::new();
        let error = BusConfig::from_edgex("mqtt", "tcp", "", 1883, &none).unwrap_err();
        assert_eq!(config_key_of(error), "Host");
        let error = BusConfig::from_edgex("redis", "redis", "localhost", 0, &none).unwrap_err();
        assert_eq!(config_key_of(error), "Port");
    }

    #[test]
    fn edgex_mqtt_only_keys_rejected_for_redis() {
        for (key, value) in [
            ("Qos", "1"),
            ("Retained", "true"),
            ("CleanSession", "false"),
        ] {
            let keys = optional(&[(key, value)]);
            let error =
                BusConfig::from_edgex("redis", "redis", "localhost", 6379, &keys).unwrap_err();
            let message = error.to_string();
            assert_eq!(config_key_of(error), key);
            assert!(message.contains("only to Type mqtt"), "{message}");
        }
        let zero_qos = optional(&[("Qos", "0")]);
        assert!(BusConfig::from_edgex("redis", "redis", "localhost", 6379, &zero_qos).is_ok());
    }

    #[test]
    fn edgex_persistent_session_needs_client_id() {
        let keys = optional(&[("CleanSession", "false")]);
        let error = BusConfig::from_edgex("mqtt", "tcp", "broker", 1883, &keys).unwrap_err();
        assert_eq!(config_key_of(error), "CleanSession");
    }

    #[test]
    fn validate_rejects_sub_second_durations() {
        let mut config = BusConfig::new(BusKind::Mqtt, "broker", 1883);
        config.keep_alive = Duration::from_millis(1500);
        assert_eq!(config_key_of(config.validate().unwrap_err()), "KeepAlive");

        let mut config = BusConfig::new(BusKind::Mqtt, "broker", 1883);
        config.connect_timeout = Duration::from_millis(200);
        assert_eq!(
            config_key_of(config.validate().unwrap_err()),
            "ConnectTimeout"
        );
    }

    #[test]
    fn serde_json_section() {
        let json = r#"{
            "Type": "mqtt", "Protocol": "tcp", "Host": "127.0.0.1", "Port": 1883,
            "Optional": { "ClientId": "core-data", "Qos": "1", "KeepAlive": 15,
                          "Retained": false, "MaxMessageSize": "4096" }
        }"#;
        let config: BusConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.kind, BusKind::Mqtt);
        assert_eq!(config.client_id.as_deref(), Some("core-data"));
        assert_eq!(config.qos, Qos::AtLeastOnce);
        assert_eq!(config.keep_alive, Duration::from_secs(15));
        assert!(!config.retained);
        assert_eq!(config.max_message_size, 4096);
    }

    #[test]
    fn serde_without_optional_or_protocol() {
        let json = r#"{ "Type": "redis", "Host": "localhost", "Port": 6379 }"#;
        let config: BusConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.kind, BusKind::Redis);
        assert_eq!(config.max_message_size, DEFAULT_MAX_MESSAGE_SIZE);
    }

    #[test]
    fn serde_unknown_top_level_key_rejected() {
        let json = r#"{ "Type": "mqtt", "Host": "h", "Port": 1, "AuthMode": "usernamepassword" }"#;
        let error = serde_json::from_str::<BusConfig>(json).unwrap_err();
        assert!(error.to_string().contains("AuthMode"), "{error}");
    }

    #[test]
    fn serde_bad_optional_value_names_key() {
        let json = r#"{ "Type": "mqtt", "Host": "h", "Port": 1, "Optional": { "Qos": "9" } }"#;
        let error = serde_json::from_str::<BusConfig>(json).unwrap_err();
        assert!(error.to_string().contains("Qos"), "{error}");
    }

    #[test]
    fn kind_names() {
        assert_eq!(BusKind::Mqtt.as_str(), "mqtt");
        assert_eq!(BusKind::Redis.as_str(), "redis");
        assert_eq!(BusKind::Memory.as_str(), "memory");
        assert_eq!(Qos::ExactlyOnce.level(), 2);
    }
}
