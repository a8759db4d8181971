//! Real `mosquitto` and `redis-server` processes for integration tests.
//!
//! Each broker listens on a free 127.0.0.1 port, keeps its files in a
//! temporary directory, and is killed when dropped. `stop` and `start` on the
//! same value reuse the port, to test reconnects.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sealbus_bus_adapters::transport::{ConnectionState, Incoming, Transport};
use tokio::sync::mpsc;

/// Path of the mosquitto binary from Debian's `mosquitto` package.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Path of the redis-server binary from Debian's `redis-server` package.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// Upper bound for a broker to start accepting connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);

/// Upper bound for a message that must arrive. It only bounds the wait so a
/// bug fails the test instead of hanging it, and does not measure speed.
pub const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for a reconnect, well above the transports' maximum backoff.
pub const RECONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Which broker program to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// Eclipse Mosquitto, an MQTT 3.1.1 broker.
    Mosquitto,
    /// Redis.
    Redis,
}

/// A broker process owned by one test.
pub struct Broker {
    kind: BrokerKind,
    port: u16,
    directory: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    /// Starts mosquitto with anonymous access and no persistence.
    pub fn mosquitto() -> Broker {
        Broker::start_new(BrokerKind::Mosquitto)
    }

    /// Starts redis-server without snapshots or an append-only file.
    pub fn redis() -> Broker {
        Broker::start_new(BrokerKind::Redis)
    }

    fn start_new(kind: BrokerKind) -> Broker {
        let directory = tempfile::tempdir().expect("create broker directory");
        let mut broker = Broker {
            kind,
            port: free_port(),
            directory,
            child: None,
        };
        broker.start();
        broker
    }

    /// Returns the TCP port the broker listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns the bus URL of this broker.
    pub fn url(&self) -> String {
        match self.kind {
            BrokerKind::Mosquitto => format!("mqtt://127.0.0.1:{}", self.port),
            BrokerKind::Redis => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Starts the process on the broker's port and waits until it accepts
    /// connections. Panics with the broker's log if it exits or never listens.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "broker is already running");
        let log_path = self.directory.path().join("broker.log");
        let log = fs::File::create(&log_path).expect("create broker log");
        let mut command = match self.kind {
            BrokerKind::Mosquitto => self.mosquitto_command(),
            BrokerKind::Redis => self.redis_command(),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {:?}: {error}", self.kind));
        self.child = Some(child);
        self.wait_until_listening(&log_path);
    }

    /// Kills the process (SIGKILL, no clean shutdown) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn mosquitto_command(&self) -> Command {
        let config_path = self.directory.path().join("mosquitto.conf");
        let config = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n",
            self.port
        );
        fs::write(&config_path, config).expect("write mosquitto config");
        let mut command = Command::new(MOSQUITTO);
        command.arg("-c").arg(&config_path);
        command
    }

    fn redis_command(&self) -> Command {
        let mut command = Command::new(REDIS_SERVER);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(self.directory.path());
        command
    }

    fn wait_until_listening(&mut self, log_path: &Path) {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&address, PROBE_INTERVAL).is_ok() {
                return;
            }
            let child = self.child.as_mut().expect("broker was started");
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{:?} exited with {status} before listening on port {}; log:\n{}",
                    self.kind,
                    self.port,
                    read_log(log_path)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{:?} did not listen on port {} within {STARTUP_TIMEOUT:?}; log:\n{}",
                    self.kind,
                    self.port,
                    read_log(log_path)
                );
            }
            thread::sleep(PROBE_INTERVAL);
        }
    }

    /// Returns the path of the broker's log file.
    pub fn log_path(&self) -> PathBuf {
        self.directory.path().join("broker.log")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|error| format!("(log unreadable: {error})"))
}

/// Returns a port that was free a moment ago, found by binding port 0.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("read bound address").port()
}

/// Receives the next message, failing the test if none arrives in time.
pub async fn next_message(received: &mut mpsc::Receiver<Incoming>) -> Incoming {
    tokio::time::timeout(ARRIVAL_TIMEOUT, received.recv())
        .await
        .expect("no message arrived in time")
        .expect("incoming channel closed")
}

/// Waits until the transport reports `Connected` with at least `generation`.
pub async fn wait_for_generation(transport: &Transport, generation: u64) {
    let mut state = transport.connection_state();
    let reached = state.wait_for(|state| {
        matches!(state, ConnectionState::Connected { generation: current } if *current >= generation)
    });
    tokio::time::timeout(RECONNECT_TIMEOUT, reached)
        .await
        .unwrap_or_else(|_| panic!("transport did not reach connection {generation} in time"))
        .expect("connection state channel closed");
}

/// Waits until the transport reports `state`.
pub async fn wait_for_state(transport: &Transport, expected: ConnectionState) {
    let mut state = transport.connection_state();
    tokio::time::timeout(
        RECONNECT_TIMEOUT,
        state.wait_for(|state| *state == expected),
    )
    .await
    .unwrap_or_else(|_| panic!("transport did not reach {expected:?} in time"))
    .expect("connection state channel closed");
}

/// Converts string literals into the filter list `subscribe` takes.
pub fn filters(list: &[&str]) -> Vec<String> {
    list.iter().map(|filter| filter.to_string()).collect()
}
