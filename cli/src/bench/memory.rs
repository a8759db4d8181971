//! Resident memory of a subscriber that has received from many distinct
//! publishers: engines only, no broker, measured in a process of its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clap::Args;
use rand_core::OsRng;
use sealbus_bus_adapters::secure::subscriber::MAX_GRANT_OPENS_PER_SECOND;
use sealbus_bus_adapters::secure::{Clock, Engine, Inbound, SecurityConfig, SystemClock};
use sealbus_envelope::MessageEnvelope;
use sealbus_keyring::{
    Certificate, CertificateAuthority, Identity, Policy, ServiceName, StaticSecret,
};
use serde::{Deserialize, Serialize};

use crate::{CliError, CliResult};

/// Arguments of the hidden `sealbus bench-memory` command.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Number of distinct publishers.
    #[arg(long, default_value_t = 1000)]
    pub publishers: usize,
    /// Messages each publisher sends.
    #[arg(long, default_value_t = 10)]
    pub messages_per_publisher: usize,
}

/// The measurement.
#[derive(Debug, Serialize, Deserialize)]
pub struct MemoryResult {
    /// Distinct publishers the subscriber received from.
    pub publishers: usize,
    /// Messages delivered.
    pub delivered: usize,
    /// Resident set size of the whole process after receiving, in KiB.
    pub rss_kib: u64,
    /// Growth of the resident set while the subscriber received, in KiB:
    /// its grant and replay state plus allocator overhead.
    pub subscriber_state_kib: u64,
    /// Senders the subscriber keeps state for.
    pub senders_tracked: usize,
}

/// A clock the measurement moves forward, so grants from a thousand
/// publishers arrive no faster than the subscriber's grant rate limit
/// allows, as they would from publishers that start over several seconds.
struct SteppedClock(AtomicU64);

impl Clock for SteppedClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Returns the resident set size in KiB from `/proc/self/statm`.
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    pages * 4
}

/// Runs `sealbus bench-memory`.
pub fn run(args: &MemoryArgs) -> CliResult {
    let now_s = crate::bench::worker::now_ns() / 1_000_000_000;
    let mut authority = CertificateAuthority::in_memory(&mut OsRng);
    let mut identities = Vec::with_capacity(args.publishers + 1);
    for index in 0..=args.publishers {
        let secret = StaticSecret::generate(&mut OsRng);
        let (name, publish, subscribe) = if index == 0 {
            ("core-data".to_owned(), vec![], vec!["bench/#".to_owned()])
        } else {
            (
                format!("device-{index}"),
                vec![format!("bench/{index}/#")],
                vec![],
            )
        };
        let name = ServiceName::new(name).map_err(|error| CliError::context("name", error))?;
        let certificate = authority
            .issue(
                name,
                secret.public_key(),
                publish,
                subscribe,
                now_s - 60,
                now_s + 3600,
            )
            .map_err(|error| CliError::context("issue", error))?;
        identities.push(
            Identity::new(secret, certificate)
                .map_err(|error| CliError::context("identity", error))?,
        );
    }
    let certificates: Vec<Certificate> = identities
        .iter()
        .map(|identity| identity.certificate().clone())
        .collect();
    let bundle = authority
        .sign_bundle(certificates, vec![], now_s)
        .map_err(|error| CliError::context("bundle", error))?;
    let policy = Policy::new(bundle, authority.public_key())
        .map_err(|error| CliError::context("policy", error))?;
    let engine = |identity: &Identity| {
        Engine::new(
            SecurityConfig {
                identity: identity.clone(),
                policy: policy.clone(),
                clock: Arc::new(SystemClock),
                rng: Box::new(OsRng),
            },
            "mqtt".into(),
        )
    };

    // Seal everything first and drop the publishers, so the measurement
    // below sees only the subscriber's growth.
    let mut sealed = Vec::with_capacity(args.publishers * args.messages_per_publisher);
    for (index, identity) in identities.iter().enumerate().skip(1) {
        let mut publisher = engine(identity);
        let topic = format!("bench/{index}/reading");
        for message in 0..args.messages_per_publisher {
            let envelope = MessageEnvelope::new(
                vec![0x5A; 256],
                format!("corr-{message}"),
                "application/octet-stream",
            );
            let Engine {
                publisher: state,
                shared,
                ..
            } = &mut publisher;
            let bytes = state
                .seal(shared, &topic, &envelope)
                .map_err(|error| CliError::context("seal", error))?;
            sealed.push((topic.clone(), bytes));
        }
    }

    let clock = Arc::new(SteppedClock(AtomicU64::new(SystemClock.now_ms())));
    let mut subscriber = Engine::new(
        SecurityConfig {
            identity: identities[0].clone(),
            policy: policy.clone(),
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            rng: Box::new(OsRng),
        },
        "mqtt".into(),
    );
    // Half the grant rate limit, in ms between two publishers' first messages.
    let step_ms = 2000 / u64::from(MAX_GRANT_OPENS_PER_SECOND);
    let before = rss_kib();
    let mut delivered = 0;
    let mut out = Vec::new();
    for (index, (topic, bytes)) in sealed.iter().enumerate() {
        if index % args.messages_per_publisher == 0 {
            clock.0.fetch_add(step_ms, Ordering::Relaxed);
        }
        out.clear();
        let Engine {
            subscriber: state,
            shared,
            ..
        } = &mut subscriber;
        state.handle_data(shared, topic, bytes, false, &mut out);
        delivered += out
            .iter()
            .filter(|item| matches!(item, Inbound::Delivered(_)))
            .count();
    }
    drop(sealed);
    let after = rss_kib();
    let result = MemoryResult {
        publishers: args.publishers,
        delivered,
        rss_kib: after,
        subscriber_state_kib: after.saturating_sub(before),
        senders_tracked: subscriber.subscriber.sender_count(),
    };
    println!("{}", serde_json::to_string(&result).unwrap_or_default());
    Ok(0)
}
