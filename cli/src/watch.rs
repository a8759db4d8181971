//! `sealbus watch`: print every message on a topic filter as one JSON line,
//! with its verdict and, when accepted, its verified sender.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use sealbus_bus_adapters::client::TopicChannel;
use tokio::sync::mpsc;

use crate::output::WatchLine;
use crate::publish::ServiceArgs;
use crate::{CliError, CliResult, EXIT_TIMEOUT};

/// Largest accepted `--timeout`, in seconds (one year); larger values would
/// overflow the clock.
const MAX_TIMEOUT_S: f64 = 365.0 * 24.0 * 3600.0;

/// Capacity of the channels between the client and the printer.
const CHANNEL_CAPACITY: usize = 1024;

/// Arguments of `sealbus watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// MQTT topic filter to watch (`+` and `#` wildcards).
    #[arg(long, value_name = "FILTER")]
    pub topic: String,
    /// Exit with status 0 after printing this many lines.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Exit with status 3 when this many seconds pass before --count lines
    /// (or, without --count, exit 3 when they pass). Without it, watch runs
    /// until interrupted.
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: Option<f64>,
}

/// Parses `--timeout`, so clap reports a bad value as invalid arguments
/// (exit status 2) naming the option.
fn parse_timeout(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("{text:?} is not a positive number of seconds"));
    }
    if seconds > MAX_TIMEOUT_S {
        return Err(format!(
            "{text:?} is more than the maximum of {MAX_TIMEOUT_S} seconds; leave --timeout out to wait without a limit"
        ));
    }
    Ok(seconds)
}

/// Runs `sealbus watch`.
pub async fn run(args: &WatchArgs) -> CliResult {
    if args.count == Some(0) {
        return Ok(0);
    }
    let deadline = args
        .timeout
        .map(|seconds| tokio::time::Instant::now() + Duration::from_secs_f64(seconds));

    let client = args.service.connect().await?;
    let (messages_tx, mut messages) = mpsc::channel(CHANNEL_CAPACITY);
    let (errors_tx, mut errors) = mpsc::channel(CHANNEL_CAPACITY);
    client
        .subscribe(
            vec![TopicChannel {
                topic: args.topic.clone(),
                messages: messages_tx,
            }],
            errors_tx,
        )
        .await
        .map_err(|error| {
            CliError::context(format!("failed to subscribe to {}", args.topic), error)
        })?;
    eprintln!(
        "watching {} on {} as {}",
        args.topic,
        args.service.url,
        client.name()
    );

    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let outcome = loop {
        let sleep = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let line = tokio::select! {
            _ = sleep => break Ok(EXIT_TIMEOUT),
            _ = tokio::signal::ctrl_c() => break Ok(0),
            message = messages.recv() => match message {
                Some(message) => WatchLine::accepted(&message),
                None => break Err(CliError::message("the client stopped delivering messages")),
            },
            rejection = errors.recv() => match rejection {
                Some(rejection) => WatchLine::rejected(&rejection),
                None => break Err(CliError::message("the client stopped reporting errors")),
            },
        };
        let mut out = stdout.lock();
        if writeln!(out, "{}", line.to_line())
            .and_then(|_| out.flush())
            .is_err()
        {
            // stdout closed (for example `| head`): stop quietly.
            break Ok(0);
        }
        printed += 1;
        if args.count.is_some_and(|count| printed >= count) {
            break Ok(0);
        }
    };
    if outcome == Ok(EXIT_TIMEOUT) {
        eprintln!("timed out after printing {printed} lines");
    }
    let _ = client.disconnect().await;
    outcome
}
