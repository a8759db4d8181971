//! Test harness for sealbus integration tests: real `mosquitto` and
//! `redis-server` processes on free loopback ports, started and stopped by
//! the tests themselves.
//!
//! Each [`BrokerProcess`] owns a temporary directory with its config and
//! log, listens only on 127.0.0.1, and is killed when dropped. `restart`
//! brings the broker back on the same port, so clients can reconnect.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a broker may take to accept connections after it starts.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Which broker a [`BrokerProcess`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// Eclipse Mosquitto (MQTT 3.1.1/5).
    Mosquitto,
    /// redis-server (pub/sub).
    Redis,
}

/// A broker process on 127.0.0.1 at a port chosen when it was created.
#[derive(Debug)]
pub struct BrokerProcess {
    kind: BrokerKind,
    port: u16,
    binary: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Returns a port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("failed to bind 127.0.0.1:0 to find a free port")
}

/// Finds an executable in PATH or the usual system folders, which a root
/// PATH may lack (mosquitto installs into /usr/sbin).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/sbin",
                "/usr/bin",
                "/usr/local/sbin",
                "/usr/local/bin",
                "/sbin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn wait_until_listening(port: u16, child: &mut Child, log: &Path) -> Result<(), String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    loop {
        if TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!(
                "broker exited with {status} before listening on {address}; its log:\n{log}"
            ));
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "broker did not listen on {address} within {STARTUP_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl BrokerProcess {
    /// Starts mosquitto on a free loopback port.
    ///
    /// # Panics
    /// When mosquitto is not installed (run the README's test command, which
    /// installs it) or does not start.
    pub fn mosquitto() -> Self {
        Self::start_new(BrokerKind::Mosquitto)
    }

    /// Starts redis-server on a free loopback port.
    ///
    /// # Panics
    /// When redis-server is not installed (run the README's test command,
    /// which installs it) or does not start.
    pub fn redis() -> Self {
        Self::start_new(BrokerKind::Redis)
    }

    /// Starts a broker of this kind.
    ///
    /// # Panics
    /// When the broker is not installed or does not start; tests want that.
    pub fn start_new(kind: BrokerKind) -> Self {
        Self::try_start_new(kind).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Starts a broker of this kind, or says why it could not.
    ///
    /// # Errors
    /// Returns a message naming the missing binary or the startup failure.
    pub fn try_start_new(kind: BrokerKind) -> Result<Self, String> {
        let name = match kind {
            BrokerKind::Mosquitto => "mosquitto",
            BrokerKind::Redis => "redis-server",
        };
        let binary = find_binary(name).ok_or_else(|| {
            format!(
                "{name} is not installed; install it (scripts/test.sh does) or pass a broker URL"
            )
        })?;
        let dir = tempfile::tempdir()
            .map_err(|error| format!("failed to create a temporary directory: {error}"))?;
        let mut broker = Self {
            kind,
            port: free_port(),
            binary,
            dir,
            child: None,
        };
        broker.try_start()?;
        Ok(broker)
    }

    /// Returns the broker kind.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// Returns the port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns the process id while the broker runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Returns the sealbus URL of this broker.
    pub fn url(&self) -> String {
        match self.kind {
            BrokerKind::Mosquitto => format!("mqtt://127.0.0.1:{}", self.port),
            BrokerKind::Redis => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    /// Starts the process again on the same port (after [`stop`](Self::stop)).
    ///
    /// # Panics
    /// When it does not start.
    pub fn start(&mut self) {
        self.try_start().unwrap_or_else(|error| panic!("{error}"));
    }

    fn try_start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err("broker is already running".into());
        }
        let log = self.log_path();
        let mut command = match self.kind {
            BrokerKind::Mosquitto => {
                let config = self.dir.path().join("mosquitto.conf");
                let text = format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\nlog_dest file {log}\nmax_queued_messages 100000\n",
                    port = self.port,
                    log = log.display()
                );
                std::fs::write(&config, text)
                    .map_err(|error| format!("failed to write mosquitto.conf: {error}"))?;
                let mut command = Command::new(&self.binary);
                command.arg("-c").arg(config);
                command
            }
            BrokerKind::Redis => {
                let mut command = Command::new(&self.binary);
                command
                    .args([
                        "--port",
                        &self.port.to_string(),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ])
                    .args(["--daemonize", "no", "--logfile"])
                    .arg(&log)
                    .arg("--dir")
                    .arg(self.dir.path());
                command
            }
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("failed to start {}: {error}", self.binary.display()))?;
        wait_until_listening(self.port, &mut child, &log)?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// Returns the broker's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
