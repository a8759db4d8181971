//! The `sealbus` command: key management, publish and watch on a real
//! broker, and a self-contained demo.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod bench;
mod demo;
mod embedded_broker;
mod keys;
mod output;
mod publish;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit code for a failed command (bad file, broker unreachable, ...).
const EXIT_FAILURE: u8 = 1;

/// Exit code of `watch` when the timeout passes before `--count` lines.
const EXIT_TIMEOUT: u8 = 3;

/// Exit code of `demo` when an expectation did not hold.
const EXIT_EXPECTATION_FAILED: u8 = 4;

/// End-to-end sealed EdgeX messages over MQTT and Redis.
///
/// Exit codes: 0 success, 1 failure, 2 invalid arguments, 3 `watch` timed
/// out, 4 a `demo` expectation did not hold. Logs go to stderr; set
/// RUST_LOG (for example RUST_LOG=info) to see more.
#[derive(Debug, Parser)]
#[command(name = "sealbus", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the deployment CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Issue a service identity: an X25519 key and a CA certificate that
    /// binds its name, key, topic permissions and validity.
    Issue(keys::IssueArgs),
    /// Sign a trust bundle listing identities (and revoked ones) for
    /// services to load.
    Bundle(keys::BundleArgs),
    /// Seal one EdgeX message and publish it, then exit.
    Pub(publish::PubArgs),
    /// Subscribe and print one JSON object per line for every message on a
    /// topic filter, with its verdict and verified sender.
    Watch(watch::WatchArgs),
    /// Run a self-contained demo on an embedded MQTT broker: sealed EdgeX
    /// readings, and forged, replayed and unauthorized messages rejected.
    Demo(demo::DemoArgs),
    /// Measure plaintext against sealed messages end to end through
    /// mosquitto (QoS 0 and 1) and redis-server, started on free loopback
    /// ports unless URLs are given.
    Bench(bench::BenchArgs),
    /// One process of a bench case (used by `bench`).
    #[command(hide = true)]
    BenchWorker(bench::worker::WorkerArgs),
    /// The subscriber memory measurement (used by `bench`).
    #[command(hide = true)]
    BenchMemory(bench::memory::MemoryArgs),
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create a new CA: CA_DIR/ca.key (mode 0600), ca.pub and state.json.
    /// Refuses to overwrite an existing CA.
    Init(CaInitArgs),
}

#[derive(Debug, Args)]
struct CaInitArgs {
    /// Directory for the CA files; created with mode 0700 when missing.
    #[arg(long, value_name = "CA_DIR")]
    dir: PathBuf,
}

/// Sends logs to stderr. RUST_LOG overrides `default_filter`.
fn init_logging(default_filter: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo reports every outcome itself, and the embedded broker logs
    // client disconnects as errors, so its logs are off unless asked for.
    init_logging(if matches!(cli.command, Command::Demo(_)) {
        "off"
    } else {
        "warn"
    });
    // A bench worker is one client in one process: a single-threaded
    // runtime keeps its tasks on one thread, so handing a message from the
    // transport to the client costs no cross-thread wake-up.
    let mut builder = if matches!(cli.command, Command::BenchWorker(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = match cli.command {
        Command::Ca {
            command: CaCommand::Init(args),
        } => keys::ca_init(&args.dir),
        Command::Issue(args) => keys::issue(&args),
        Command::Bundle(args) => keys::bundle(&args),
        Command::Pub(args) => runtime.block_on(publish::run(&args)),
        Command::Watch(args) => runtime.block_on(watch::run(&args)),
        Command::Demo(args) => runtime.block_on(demo::run(&args)),
        Command::Bench(args) => runtime.block_on(bench::run(&args)),
        Command::BenchWorker(args) => runtime.block_on(bench::worker::run(&args)),
        Command::BenchMemory(args) => bench::memory::run(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// A command failure with its message; printed as `error: ...`.
#[derive(Debug, PartialEq, Eq)]
pub struct CliError(String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

impl CliError {
    /// Wraps an error with what was being done.
    pub fn context(what: impl std::fmt::Display, error: impl std::fmt::Display) -> Self {
        Self(format!("{what}: {error}"))
    }

    /// Creates an error from a message.
    pub fn message(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Result of a command: its exit code.
pub type CliResult = Result<u8, CliError>;
