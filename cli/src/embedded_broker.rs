//! An in-process MQTT broker (rumqttd) on a free loopback port, so the demo
//! needs no system packages.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::CliError;

/// Largest MQTT payload the embedded broker accepts, in bytes; matches the
/// client's default MaxMessageSize.
const MAX_PAYLOAD_SIZE: usize = 256 * 1024 + 1024;

/// How long to wait for the broker to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running embedded broker. rumqttd has no shutdown call, so the broker
/// thread lives until the process exits.
#[derive(Debug)]
pub struct EmbeddedBroker {
    address: SocketAddr,
}

impl EmbeddedBroker {
    /// Starts rumqttd on 127.0.0.1 at a free port and waits until it accepts
    /// connections.
    pub fn start() -> Result<Self, CliError> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| CliError::context("failed to find a free loopback port", error))?
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let config = serde_json::json!({
            "id": 0,
            "router": {
                "max_connections": 100,
                "max_outgoing_packet_count": 200,
                "max_segment_size": 104_857_600,
                "max_segment_count": 10,
            },
            "v4": {
                "1": {
                    "name": "v4-1",
                    "listen": address.to_string(),
                    "next_connection_delay_ms": 1,
                    "connections": {
                        "connection_timeout_ms": 60_000,
                        "max_payload_size": MAX_PAYLOAD_SIZE,
                        "max_inflight_count": 100,
                        "dynamic_filters": true,
                    },
                },
            },
        });
        let config: rumqttd::Config = serde_json::from_value(config)
            .map_err(|error| CliError::context("invalid embedded broker configuration", error))?;
        let mut broker = rumqttd::Broker::new(config);
        std::thread::Builder::new()
            .name("embedded-mqtt-broker".into())
            .spawn(move || {
                if let Err(error) = broker.start() {
                    tracing::error!(%error, "embedded MQTT broker stopped");
                }
            })
            .map_err(|error| {
                CliError::context("failed to start the embedded broker thread", error)
            })?;

        let started = Instant::now();
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if started.elapsed() > STARTUP_TIMEOUT {
                return Err(CliError::message(format!(
                    "embedded MQTT broker did not listen on {address} within {STARTUP_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { address })
    }

    /// Returns the broker URL.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.address)
    }
}
