//! `sealbus bench`: end-to-end throughput, latency, CPU and wire size of
//! plaintext EdgeX JSON next to sealed messages, through real brokers.
//!
//! Each case runs one publisher and 1 or 3 subscribers as separate
//! processes (`sealbus bench-worker`), so CPU time is measured per role.
//! The publisher sends as fast as the client library lets it; latency is
//! therefore measured under saturation and includes queueing.

pub mod chart;
pub mod memory;
pub mod worker;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use rand_core::OsRng;
use sealbus_integration::{find_binary, BrokerKind, BrokerProcess};
use sealbus_keyring::{CertificateAuthority, Identity, ServiceName, StaticSecret};
use serde::Serialize;

use crate::{CliError, CliResult};
use memory::MemoryResult;
use worker::{Mode, PublisherResult, SubscriberResult};

/// How long to wait for a subscriber worker to report that it subscribed.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one worker may run before the case is abandoned.
const WORKER_TIMEOUT: Duration = Duration::from_secs(900);

/// Subscriber counts measured per broker and mode.
const SUBSCRIBER_COUNTS: [usize; 2] = [1, 3];

/// Arguments of `sealbus bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Messages per case, at least 1.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,
    /// Payload size in bytes (the first 16 carry the send time and index).
    #[arg(long, default_value_t = 256)]
    pub payload_size: usize,
    /// Print one JSON object per case on stdout and nothing else (the
    /// memory measurement goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Use this MQTT broker instead of starting mosquitto on a free port.
    #[arg(long, value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// Use this Redis server instead of starting redis-server on a free port.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Write an SVG chart of throughput by case, plaintext next to sealed.
    #[arg(long, value_name = "FILE")]
    pub chart: Option<PathBuf>,
    /// Runs of each case, 1 to 15; the run with the median throughput is
    /// reported, which steadies results on a shared machine. Plaintext and
    /// sealed runs of a case alternate.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=15))]
    pub rounds: u32,
    /// Pin the brokers the bench starts to CPU 0 and every worker to CPU 1
    /// (Linux with taskset and at least 2 CPUs). Without it the kernel
    /// places the processes anew in every run, and throughput follows that
    /// placement more than anything sealing does.
    #[arg(long)]
    pub pin: bool,
    /// Distinct publishers for the subscriber memory measurement; 0 skips it.
    #[arg(long, default_value_t = 1000)]
    pub memory_publishers: usize,
}

/// One measured case, with the field names scripts read.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// "mqtt" or "redis".
    pub broker: &'static str,
    /// MQTT QoS; 0 for Redis.
    pub qos: u8,
    /// Number of subscribers.
    pub subscribers: usize,
    /// "plain" or "sealed".
    pub mode: Mode,
    /// Messages published.
    pub messages: u64,
    /// Messages delivered per subscriber per second.
    pub msgs_per_s: f64,
    /// Median end-to-end latency in microseconds.
    pub p50_us: u64,
    /// 99th percentile end-to-end latency in microseconds.
    pub p99_us: u64,
    /// Publisher CPU time per message in microseconds.
    pub cpu_us_per_msg_pub: f64,
    /// Subscriber CPU time per received message in microseconds (mean over
    /// subscribers).
    pub cpu_us_per_msg_sub: f64,
    /// Bytes on the wire per message, framing included.
    pub wire_bytes_per_msg: f64,
    /// Messages that some subscriber never received.
    pub lost: u64,
    /// Messages a subscriber received more than once.
    pub duplicates: u64,
    /// Sealed/plaintext throughput of the same broker, QoS and subscriber
    /// count (sealed cases only): the median over rounds of the ratio
    /// within each round's pair of runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput_ratio: Option<f64>,
    /// Sealed minus plaintext wire bytes per message (sealed cases only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wire_overhead_bytes: Option<f64>,
}

struct Case {
    broker: &'static str,
    qos: u8,
    url: String,
    subscribers: usize,
    mode: Mode,
}

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn create(subscribers: usize) -> Result<Self, CliError> {
        let dir =
            tempfile::tempdir().map_err(|error| CliError::context("temporary directory", error))?;
        let mut authority = CertificateAuthority::init(&dir.path().join("ca"), &mut OsRng)
            .map_err(|error| CliError::context("bench CA", error))?;
        let now_s = worker::now_ns() / 1_000_000_000;
        let mut certificates = Vec::new();
        let mut specs = vec![(
            "bench-publisher".to_owned(),
            vec!["bench/#".to_owned()],
            vec![],
        )];
        // Subscriber i may read the topics of every case with i or more
        // subscribers, so the audience of a case, and the origin tags each
        // message carries, match the subscribers the case runs.
        for index in 1..=subscribers {
            let filters = SUBSCRIBER_COUNTS
                .iter()
                .filter(|&&count| count >= index)
                .map(|count| format!("bench/{count}/#"))
                .collect();
            specs.push((format!("bench-subscriber-{index}"), vec![], filters));
        }
        for (name, publish, subscribe) in specs {
            let secret = StaticSecret::generate(&mut OsRng);
            let service =
                ServiceName::new(name.clone()).map_err(|error| CliError::context("name", error))?;
            let certificate = authority
                .issue(
                    service,
                    secret.public_key(),
                    publish,
                    subscribe,
                    now_s - 60,
                    now_s + 24 * 3600,
                )
                .map_err(|error| CliError::context("issue", error))?;
            certificates.push(certificate.clone());
            let identity = Identity::new(secret, certificate)
                .map_err(|error| CliError::context("identity", error))?;
            identity
                .save(&dir.path().join(&name), authority.public_key())
                .map_err(|error| CliError::context("save identity", error))?;
        }
        let bundle = authority
            .sign_bundle(certificates, vec![], now_s)
            .map_err(|error| CliError::context("bundle", error))?;
        bundle
            .save(&dir.path().join("bundle.json"))
            .map_err(|error| CliError::context("save bundle", error))?;
        Ok(Self { dir })
    }

    fn identity(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle.json")
    }
}

fn start_broker(
    kind: BrokerKind,
    given: &Option<String>,
) -> Result<(Option<BrokerProcess>, String), CliError> {
    if let Some(url) = given {
        return Ok((None, url.clone()));
    }
    let broker = BrokerProcess::try_start_new(kind).map_err(CliError::message)?;
    let url = broker.url();
    Ok((Some(broker), url))
}

/// Runs `sealbus bench`.
pub async fn run(args: &BenchArgs) -> CliResult {
    let (mosquitto, mqtt_url) = start_broker(BrokerKind::Mosquitto, &args.mqtt_url)?;
    let (redis, redis_url) = start_broker(BrokerKind::Redis, &args.redis_url)?;
    if args.pin {
        check_pinning()?;
        for broker in [&mosquitto, &redis].into_iter().flatten() {
            pin_broker(broker)?;
        }
        if (args.mqtt_url.is_some() || args.redis_url.is_some()) && !args.json {
            eprintln!(
                "--pin: brokers given by URL are not pinned; the workers run on CPU {WORKER_CPU}"
            );
        }
    }
    let keys = Keys::create(*SUBSCRIBER_COUNTS.iter().max().unwrap_or(&1))?;
    let executable =
        std::env::current_exe().map_err(|error| CliError::context("current executable", error))?;

    let separator = if mqtt_url.contains('?') { '&' } else { '?' };
    let mut results: Vec<CaseResult> = Vec::new();
    let mut index = 0;
    for (broker, qos, url) in [
        ("mqtt", 0u8, format!("{mqtt_url}{separator}Qos=0")),
        ("mqtt", 1u8, format!("{mqtt_url}{separator}Qos=1")),
        ("redis", 0u8, redis_url.clone()),
    ] {
        for subscribers in SUBSCRIBER_COUNTS {
            let case = |mode| Case {
                broker,
                qos,
                url: url.clone(),
                subscribers,
                mode,
            };
            let (plain, sealed) = (case(Mode::Plain), case(Mode::Sealed));
            if !args.json {
                eprintln!(
                    "running {broker} QoS {qos} with {subscribers} subscriber(s), plain and sealed in turn: {} messages each, {} round(s)",
                    args.messages, args.rounds
                );
            }
            let (plain_result, sealed_result) =
                run_pair(&executable, &keys, [&plain, &sealed], &mut index, args)?;
            for result in [plain_result, sealed_result] {
                if args.json {
                    println!("{}", serde_json::to_string(&result).unwrap_or_default());
                }
                results.push(result);
            }
        }
    }

    let memory = if args.memory_publishers > 0 {
        Some(measure_memory(&executable, args.memory_publishers)?)
    } else {
        None
    };
    if args.json {
        if let Some(memory) = &memory {
            eprintln!("{}", serde_json::to_string(memory).unwrap_or_default());
        }
    } else {
        print_table(&results, memory.as_ref());
    }
    if let Some(path) = &args.chart {
        std::fs::write(path, chart::throughput_svg(&results)).map_err(|error| {
            CliError::context(format!("failed to write {}", path.display()), error)
        })?;
        if !args.json {
            println!("wrote chart {}", path.display());
        }
    }
    Ok(0)
}

/// CPU that `--pin` gives the brokers the bench starts.
const BROKER_CPU: &str = "0";

/// CPU that `--pin` gives every worker process.
const WORKER_CPU: &str = "1";

/// Returns the taskset executable, found where [`check_pinning`] found it.
fn taskset() -> PathBuf {
    find_binary("taskset").unwrap_or_else(|| PathBuf::from("taskset"))
}

/// Checks that `--pin` can work here: taskset present and two CPUs usable.
fn check_pinning() -> Result<(), CliError> {
    if find_binary("taskset").is_none() {
        return Err(CliError::message(
            "--pin needs taskset (util-linux), which was not found; install it or run without --pin",
        ));
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 {
        return Err(CliError::message(format!(
            "--pin needs at least 2 CPUs, and this process may use {cpus}; run without --pin"
        )));
    }
    Ok(())
}

/// Moves every thread of a started broker to [`BROKER_CPU`].
fn pin_broker(broker: &BrokerProcess) -> Result<(), CliError> {
    let pid = broker
        .pid()
        .ok_or_else(|| CliError::message("--pin: a broker the bench started is not running"))?;
    let status = Command::new(taskset())
        .args(["-a", "-p", "-c", BROKER_CPU, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|error| CliError::context("--pin: failed to run taskset", error))?;
    if !status.success() {
        return Err(CliError::message(format!(
            "--pin: taskset could not move broker process {pid} to CPU {BROKER_CPU} ({status}); run without --pin"
        )));
    }
    Ok(())
}

fn worker_command(
    executable: &Path,
    case: &Case,
    topic: &str,
    args: &BenchArgs,
    role: &str,
    result: &Path,
) -> Command {
    let mut command = if args.pin {
        let mut pinned = Command::new(taskset());
        pinned.args(["-c", WORKER_CPU]).arg(executable);
        pinned
    } else {
        Command::new(executable)
    };
    command
        .arg("bench-worker")
        .args(["--role", role, "--url", &case.url, "--topic", topic])
        .args([
            "--messages",
            &args.messages.to_string(),
            "--payload-size",
            &args.payload_size.to_string(),
        ])
        .arg("--mode")
        .arg(match case.mode {
            Mode::Plain => "plain",
            Mode::Sealed => "sealed",
        })
        .arg("--result")
        .arg(result)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

fn wait_ready(child: &mut Child) -> Result<(), CliError> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| CliError::message("subscriber worker has no stdout"))?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let ready = matches!(lines.next(), Some(Ok(line)) if line == "ready");
        let _ = sender.send(ready);
        for _ in lines {}
    });
    match receiver.recv_timeout(READY_TIMEOUT) {
        Ok(true) => Ok(()),
        _ => Err(CliError::message(
            "a subscriber worker did not subscribe in time",
        )),
    }
}

fn wait_worker(child: &mut Child, what: &str) -> Result<(), CliError> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(CliError::message(format!(
                    "{what} worker failed with {status}"
                )))
            }
            Ok(None) if started.elapsed() > WORKER_TIMEOUT => {
                let _ = child.kill();
                return Err(CliError::message(format!(
                    "{what} worker ran longer than {WORKER_TIMEOUT:?}"
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => {
                return Err(CliError::context(
                    format!("waiting for the {what} worker"),
                    error,
                ))
            }
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|error| CliError::context(format!("failed to read {}", path.display()), error))?;
    serde_json::from_slice(&bytes).map_err(|error| {
        CliError::context(format!("invalid worker result {}", path.display()), error)
    })
}

fn run_case(
    executable: &Path,
    keys: &Keys,
    case: &Case,
    topic: &str,
    args: &BenchArgs,
) -> Result<CaseResult, CliError> {
    let results =
        tempfile::tempdir().map_err(|error| CliError::context("temporary directory", error))?;
    let mut subscribers = Vec::new();
    for index in 1..=case.subscribers {
        let path = results.path().join(format!("subscriber-{index}.json"));
        let mut command = worker_command(executable, case, topic, args, "subscriber", &path);
        if case.mode == Mode::Sealed {
            command
                .arg("--identity")
                .arg(keys.identity(&format!("bench-subscriber-{index}")))
                .arg("--bundle")
                .arg(keys.bundle());
        }
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| CliError::context("spawn subscriber", error))?;
        wait_ready(&mut child)?;
        subscribers.push((child, path));
    }

    let publisher_path = results.path().join("publisher.json");
    let mut command = worker_command(executable, case, topic, args, "publisher", &publisher_path);
    if case.mode == Mode::Sealed {
        command
            .arg("--identity")
            .arg(keys.identity("bench-publisher"))
            .arg("--bundle")
            .arg(keys.bundle());
    }
    let mut publisher = command
        .stdout(Stdio::null())
        .spawn()
        .map_err(|error| CliError::context("spawn publisher", error))?;
    wait_worker(&mut publisher, "publisher")?;
    for (child, _) in &mut subscribers {
        wait_worker(child, "subscriber")?;
    }

    let published: PublisherResult = read_json(&publisher_path)?;
    let received: Vec<SubscriberResult> = subscribers
        .iter()
        .map(|(_, path)| read_json(path))
        .collect::<Result<_, _>>()?;
    Ok(summarize(case, args.messages, &published, &received))
}

fn percentile(sorted: &[u64], fraction: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Runs the plaintext and the sealed case of one broker, QoS and subscriber
/// count `args.rounds` times each, and returns each mode's median run. The
/// sealed result carries the throughput ratio and the wire overhead.
fn run_pair(
    executable: &Path,
    keys: &Keys,
    [plain, sealed]: [&Case; 2],
    index: &mut usize,
    args: &BenchArgs,
) -> Result<(CaseResult, CaseResult), CliError> {
    // Plain and sealed alternate round by round, so a change in the
    // machine's load during the pair affects both alike.
    let (mut plain_rounds, mut sealed_rounds) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        for (case, rounds) in [(plain, &mut plain_rounds), (sealed, &mut sealed_rounds)] {
            let topic = format!("bench/{}/case-{index}-{round}/reading", case.subscribers);
            *index += 1;
            rounds.push(run_case(executable, keys, case, &topic, args)?);
        }
    }
    // The ratio is the median of the ratios of each round's pair, which a
    // load change between rounds cannot skew the way it skews a ratio of
    // two medians.
    let mut ratios: Vec<f64> = plain_rounds
        .iter()
        .zip(&sealed_rounds)
        .map(|(plain, sealed)| sealed.msgs_per_s / plain.msgs_per_s.max(f64::MIN_POSITIVE))
        .collect();
    if !args.json {
        let by_round: Vec<String> = ratios.iter().map(|ratio| format!("{ratio:.2}")).collect();
        eprintln!("  sealed/plain by round: {}", by_round.join(" "));
    }
    ratios.sort_by(f64::total_cmp);
    let plain_result = median_round(plain_rounds);
    let mut sealed_result = median_round(sealed_rounds);
    sealed_result.throughput_ratio = Some(ratios[ratios.len() / 2]);
    sealed_result.wire_overhead_bytes =
        Some(sealed_result.wire_bytes_per_msg - plain_result.wire_bytes_per_msg);
    Ok((plain_result, sealed_result))
}

/// Returns the round with the median throughput.
fn median_round(mut rounds: Vec<CaseResult>) -> CaseResult {
    rounds.sort_by(|left, right| left.msgs_per_s.total_cmp(&right.msgs_per_s));
    rounds.swap_remove(rounds.len() / 2)
}

fn summarize(
    case: &Case,
    messages: u64,
    published: &PublisherResult,
    received: &[SubscriberResult],
) -> CaseResult {
    let total_received: u64 = received.iter().map(|result| result.received).sum();
    let last_ns = received
        .iter()
        .map(|result| result.last_receive_ns)
        .max()
        .unwrap_or(published.end_ns);
    let seconds = (last_ns.saturating_sub(published.start_ns) as f64 / 1e9).max(1e-9);
    let per_subscriber = total_received as f64 / received.len().max(1) as f64;
    let mut latencies: Vec<u64> = received
        .iter()
        .flat_map(|result| result.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let cpu_sub: f64 = received
        .iter()
        .map(|result| result.cpu_ns as f64 / 1000.0 / result.received.max(1) as f64)
        .sum::<f64>()
        / received.len().max(1) as f64;
    CaseResult {
        broker: case.broker,
        qos: case.qos,
        subscribers: case.subscribers,
        mode: case.mode,
        messages,
        msgs_per_s: per_subscriber / seconds,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        cpu_us_per_msg_pub: published.cpu_ns as f64 / 1000.0 / messages as f64,
        cpu_us_per_msg_sub: cpu_sub,
        wire_bytes_per_msg: published.wire_bytes as f64 / published.published.max(1) as f64,
        lost: messages * received.len() as u64
            - total_received.min(messages * received.len() as u64),
        duplicates: received.iter().map(|result| result.duplicates).sum(),
        throughput_ratio: None,
        wire_overhead_bytes: None,
    }
}

fn measure_memory(executable: &Path, publishers: usize) -> Result<MemoryResult, CliError> {
    let output = Command::new(executable)
        .args(["bench-memory", "--publishers", &publishers.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| CliError::context("memory measurement", error))?;
    if !output.status.success() {
        return Err(CliError::message(format!(
            "memory measurement failed with {}",
            output.status
        )));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|error| CliError::context("memory measurement output", error))
}

fn print_table(results: &[CaseResult], memory: Option<&MemoryResult>) {
    println!(
        "{:<6} {:>3} {:>4} {:<7} {:>10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "broker",
        "qos",
        "subs",
        "mode",
        "msgs/s",
        "p50 us",
        "p99 us",
        "pub us",
        "sub us",
        "wire B",
        "lost",
        "ratio"
    );
    for result in results {
        let mode = match result.mode {
            Mode::Plain => "plain",
            Mode::Sealed => "sealed",
        };
        let ratio = result
            .throughput_ratio
            .map(|ratio| format!("{ratio:.2}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<6} {:>3} {:>4} {:<7} {:>10.0} {:>8} {:>8} {:>9.2} {:>9.2} {:>9.1} {:>7} {:>7}",
            result.broker,
            result.qos,
            result.subscribers,
            mode,
            result.msgs_per_s,
            result.p50_us,
            result.p99_us,
            result.cpu_us_per_msg_pub,
            result.cpu_us_per_msg_sub,
            result.wire_bytes_per_msg,
            result.lost,
            ratio
        );
    }
    for result in results.iter().filter(|result| result.lost > 0) {
        println!(
            "note: {} QoS {} with {} subscriber(s), {:?}, lost {} messages",
            result.broker, result.qos, result.subscribers, result.mode, result.lost
        );
    }
    if let Some(memory) = memory {
        println!(
            "subscriber memory after receiving from {} publishers: RSS {} KiB, of which {} KiB grew while receiving ({} senders tracked)",
            memory.publishers, memory.rss_kib, memory.subscriber_state_kib, memory.senders_tracked
        );
    }
}
