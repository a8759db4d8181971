//! The processes of one bench case: a publisher and its subscribers run as
//! separate `sealbus bench-worker` processes, so each one's CPU time is its
//! own. Each writes a JSON result file for the orchestrator.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use sealbus_bus_adapters::client::{SecureMessageClient, TopicChannel};
use sealbus_bus_adapters::config::BusConfig;
use sealbus_bus_adapters::secure::SecurityConfig;
use sealbus_bus_adapters::transport::Transport;
use sealbus_envelope::MessageEnvelope;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{CliError, CliResult};

/// How long a subscriber waits for the first message.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a subscriber waits after the last message before it gives up on
/// the rest (they are counted as lost).
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Capacity of the subscriber's delivery channel, in messages.
const CHANNEL_CAPACITY: usize = 65_536;

/// Bytes at the start of each payload: send time (ns) and message index.
const PAYLOAD_HEADER_LEN: usize = 16;

/// Role of a worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Publishes the messages.
    Publisher,
    /// Receives them.
    Subscriber,
}

/// Plaintext EdgeX JSON or sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The plain go-mod-messaging JSON envelope, as EdgeX sends it today.
    Plain,
    /// Sealed by sealbus.
    Sealed,
}

/// Arguments of the hidden `sealbus bench-worker` command.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Publisher or subscriber.
    #[arg(long, value_enum)]
    pub role: Role,
    /// Plain or sealed.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Broker URL.
    #[arg(long)]
    pub url: String,
    /// Topic.
    #[arg(long)]
    pub topic: String,
    /// Messages to publish or expect.
    #[arg(long)]
    pub messages: u64,
    /// Payload size in bytes.
    #[arg(long)]
    pub payload_size: usize,
    /// Identity directory (sealed mode).
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Trust bundle (sealed mode).
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Path of the JSON result file to write.
    #[arg(long)]
    pub result: PathBuf,
}

/// Measurements of a publisher worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct PublisherResult {
    /// Unix time in ns when publishing started.
    pub start_ns: u64,
    /// Unix time in ns when every message was flushed.
    pub end_ns: u64,
    /// CPU time of the process in ns.
    pub cpu_ns: u64,
    /// Bytes on the wire for all messages, framing included.
    pub wire_bytes: u64,
    /// Messages published.
    pub published: u64,
}

/// Measurements of a subscriber worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct SubscriberResult {
    /// Distinct messages received.
    pub received: u64,
    /// Messages received more than once.
    pub duplicates: u64,
    /// Unix time in ns of the last message.
    pub last_receive_ns: u64,
    /// CPU time of the process in ns.
    pub cpu_ns: u64,
    /// End-to-end latency of each message in microseconds.
    pub latencies_us: Vec<u64>,
    /// Messages rejected by the security layer.
    pub rejected: u64,
}

/// Returns Unix time in ns.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
}

/// Returns this process's CPU time (user and system, all threads) in ns,
/// from `/proc/self/task/*/schedstat`, falling back to `/proc/self/stat`
/// (10 ms resolution).
pub fn process_cpu_ns() -> u64 {
    // The kernel adds a running thread's time to schedstat only at a tick
    // or a switch, so a short run could read no change at all. Sleeping
    // switches this thread out first; the others are idle at this point.
    std::thread::sleep(std::time::Duration::from_millis(1));
    let from_schedstat = std::fs::read_dir("/proc/self/task").ok().map(|tasks| {
        tasks
            .filter_map(|task| task.ok())
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|text| {
                text.split_whitespace()
                    .next()
                    .and_then(|ns| ns.parse::<u64>().ok())
            })
            .sum::<u64>()
    });
    match from_schedstat {
        Some(ns) if ns > 0 => ns,
        _ => {
            let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
            let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let ticks = |index: usize| {
                fields
                    .get(index)
                    .and_then(|value| value.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            // utime and stime are fields 14 and 15 of the whole line; CLK_TCK is 100 on Linux.
            (ticks(11) + ticks(12)) * 10_000_000
        }
    }
}

fn payload(index: u64, size: usize) -> Vec<u8> {
    let mut payload = vec![0x5Au8; size.max(PAYLOAD_HEADER_LEN)];
    payload[..8].copy_from_slice(&now_ns().to_be_bytes());
    payload[8..16].copy_from_slice(&index.to_be_bytes());
    payload
}

fn read_payload(payload: &[u8]) -> Option<(u64, u64)> {
    let sent = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let index = u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((sent, index))
}

fn write_result(path: &PathBuf, result: &impl Serialize) -> Result<(), CliError> {
    let json =
        serde_json::to_vec(result).map_err(|error| CliError::context("bench result", error))?;
    std::fs::write(path, json)
        .map_err(|error| CliError::context(format!("failed to write {}", path.display()), error))
}

async fn secure_client(args: &WorkerArgs) -> Result<SecureMessageClient, CliError> {
    let (Some(identity), Some(bundle)) = (&args.identity, &args.bundle) else {
        return Err(CliError::message(
            "sealed mode needs --identity and --bundle",
        ));
    };
    let bus = BusConfig::from_url(&args.url)
        .map_err(|error| CliError::context("invalid --url", error))?;
    let security = SecurityConfig::from_files(identity, bundle)
        .map_err(|error| CliError::context("identity", error))?;
    SecureMessageClient::connect(&bus, security)
        .await
        .map_err(|error| CliError::context("connect", error))
}

/// Runs `sealbus bench-worker`.
pub async fn run(args: &WorkerArgs) -> CliResult {
    match args.role {
        Role::Publisher => publish(args).await,
        Role::Subscriber => subscribe(args).await,
    }
}

async fn publish(args: &WorkerArgs) -> CliResult {
    let bus = BusConfig::from_url(&args.url)
        .map_err(|error| CliError::context("invalid --url", error))?;
    // Both modes start the clock and the CPU count once connected, so
    // the numbers cover the data path and not key loading or the handshake
    // with the broker.
    let (start_ns, cpu_before);
    let mut wire_bytes = 0u64;
    match args.mode {
        Mode::Sealed => {
            let client = secure_client(args).await?;
            start_ns = now_ns();
            cpu_before = process_cpu_ns();
            for index in 0..args.messages {
                let envelope = MessageEnvelope::new(
                    payload(index, args.payload_size),
                    "bench",
                    "application/octet-stream",
                );
                client
                    .publish(&envelope, &args.topic)
                    .await
                    .map_err(|error| CliError::context("publish", error))?;
            }
            client
                .disconnect()
                .await
                .map_err(|error| CliError::context("disconnect", error))?;
            wire_bytes = client.metrics().wire_bytes_published;
        }
        Mode::Plain => {
            let (transport, _incoming) = Transport::connect(&bus)
                .await
                .map_err(|error| CliError::context("connect", error))?;
            start_ns = now_ns();
            cpu_before = process_cpu_ns();
            for index in 0..args.messages {
                let envelope = MessageEnvelope::new(
                    payload(index, args.payload_size),
                    "bench",
                    "application/octet-stream",
                );
                let json = envelope.to_json();
                wire_bytes += transport.message_size(&args.topic, json.len()) as u64;
                transport
                    .publish(&args.topic, json.into())
                    .await
                    .map_err(|error| CliError::context("publish", error))?;
            }
            transport
                .disconnect()
                .await
                .map_err(|error| CliError::context("disconnect", error))?;
        }
    }
    let result = PublisherResult {
        start_ns,
        end_ns: now_ns(),
        cpu_ns: process_cpu_ns().saturating_sub(cpu_before),
        wire_bytes,
        published: args.messages,
    };
    write_result(&args.result, &result)?;
    Ok(0)
}

struct Tally {
    seen: HashSet<u64>,
    duplicates: u64,
    latencies_us: Vec<u64>,
    last_receive_ns: u64,
}

impl Tally {
    fn record(&mut self, payload: &[u8]) {
        let received_ns = now_ns();
        let Some((sent_ns, index)) = read_payload(payload) else {
            return;
        };
        if !self.seen.insert(index) {
            self.duplicates += 1;
            return;
        }
        self.latencies_us
            .push(received_ns.saturating_sub(sent_ns) / 1000);
        self.last_receive_ns = received_ns;
    }
}

async fn subscribe(args: &WorkerArgs) -> CliResult {
    let bus = BusConfig::from_url(&args.url)
        .map_err(|error| CliError::context("invalid --url", error))?;
    let mut tally = Tally {
        seen: HashSet::with_capacity(args.messages as usize),
        duplicates: 0,
        latencies_us: Vec::with_capacity(args.messages as usize),
        last_receive_ns: 0,
    };
    let cpu_before;
    let rejected;
    match args.mode {
        Mode::Sealed => {
            let client = secure_client(args).await?;
            let (messages_tx, mut messages) = mpsc::channel(CHANNEL_CAPACITY);
            let (errors_tx, _errors) = mpsc::channel(CHANNEL_CAPACITY);
            client
                .subscribe(
                    vec![TopicChannel {
                        topic: args.topic.clone(),
                        messages: messages_tx,
                    }],
                    errors_tx,
                )
                .await
                .map_err(|error| CliError::context("subscribe", error))?;
            cpu_before = process_cpu_ns();
            println!("ready");
            let mut timeout = FIRST_MESSAGE_TIMEOUT;
            while (tally.seen.len() as u64) < args.messages {
                match tokio::time::timeout(timeout, messages.recv()).await {
                    Ok(Some(message)) => tally.record(&message.envelope.payload),
                    _ => break,
                }
                timeout = IDLE_TIMEOUT;
            }
            rejected = client.metrics().rejected_total();
            let _ = client.disconnect().await;
        }
        Mode::Plain => {
            let (transport, mut incoming) = Transport::connect(&bus)
                .await
                .map_err(|error| CliError::context("connect", error))?;
            transport
                .subscribe(std::slice::from_ref(&args.topic))
                .await
                .map_err(|error| CliError::context("subscribe", error))?;
            // Decode on a task and hand envelopes over a channel, as a
            // go-mod-messaging client delivers to its Go channels and as
            // the secure client delivers opened messages, so both modes
            // pay for the same hand-over.
            let (messages_tx, mut messages) = mpsc::channel(CHANNEL_CAPACITY);
            let undecodable = Arc::new(AtomicU64::new(0));
            let counter = Arc::clone(&undecodable);
            let decoder = tokio::spawn(async move {
                while let Some(message) = incoming.recv().await {
                    match MessageEnvelope::from_json(&message.payload) {
                        Ok(mut envelope) => {
                            envelope.received_topic = message.topic;
                            if messages_tx.send(envelope).await.is_err() {
                                break;
                            }
                        }
                        Err(_) => {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
            cpu_before = process_cpu_ns();
            println!("ready");
            let mut timeout = FIRST_MESSAGE_TIMEOUT;
            while (tally.seen.len() as u64) < args.messages {
                match tokio::time::timeout(timeout, messages.recv()).await {
                    Ok(Some(envelope)) => tally.record(&envelope.payload),
                    _ => break,
                }
                timeout = IDLE_TIMEOUT;
            }
            drop(messages);
            let _ = transport.disconnect().await;
            decoder.abort();
            rejected = undecodable.load(Ordering::Relaxed);
        }
    }
    let result = SubscriberResult {
        received: tally.seen.len() as u64,
        duplicates: tally.duplicates,
        last_receive_ns: tally.last_receive_ns,
        cpu_ns: process_cpu_ns().saturating_sub(cpu_before),
        latencies_us: tally.latencies_us,
        rejected,
    };
    write_result(&args.result, &result)?;
    Ok(0)
}
