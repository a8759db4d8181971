//! Counters of every outcome, and rate-limited logging of rejections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use super::subscriber::Verdict;

/// Rejection log lines allowed per verdict in one
/// [`LOG_WINDOW_MS`] window; the rest are counted and summarized.
pub const LOG_BURST: u64 = 10;

/// Length of the rejection log rate-limit window in milliseconds.
pub const LOG_WINDOW_MS: u64 = 10_000;

/// Counters of one engine. All are totals since the engine started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages sealed and handed to the transport.
    pub sealed: AtomicU64,
    /// Bytes of sealed messages published, counted as the transport counts
    /// them against MaxMessageSize (payload, topic and protocol framing).
    pub wire_bytes_published: AtomicU64,
    /// Messages opened and delivered.
    pub delivered: AtomicU64,
    rejected: [AtomicU64; Verdict::COUNT],
    /// Grants created (one per recipient per epoch).
    pub grants_created: AtomicU64,
    /// Grants opened and installed.
    pub grants_installed: AtomicU64,
    /// Grant requests sent.
    pub grant_requests_sent: AtomicU64,
    /// Grant requests answered.
    pub grant_requests_answered: AtomicU64,
    /// Messages held because their grant had not arrived yet.
    pub held: AtomicU64,
    /// Epochs started by the publisher half.
    pub epochs_started: AtomicU64,
    /// Inline grants that failed to open or install.
    pub inline_grants_rejected: AtomicU64,
    limiter: Mutex<HashMap<&'static str, LogWindow>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct LogWindow {
    started_ms: u64,
    logged: u64,
    suppressed: u64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Messages sealed.
    pub sealed: u64,
    /// Bytes of sealed messages published, framing included.
    pub wire_bytes_published: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Rejected messages by verdict name.
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// Grants created.
    pub grants_created: u64,
    /// Grants installed.
    pub grants_installed: u64,
    /// Grant requests sent.
    pub grant_requests_sent: u64,
    /// Grant requests answered.
    pub grant_requests_answered: u64,
    /// Messages held for a grant.
    pub held: u64,
    /// Epochs started.
    pub epochs_started: u64,
}

impl MetricsSnapshot {
    /// Returns the number of rejections with this verdict.
    pub fn rejected(&self, verdict: Verdict) -> u64 {
        self.rejected.get(verdict.as_str()).copied().unwrap_or(0)
    }

    /// Returns the number of rejections of every verdict.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

impl Metrics {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a rejection and returns whether it may be logged now, plus how
    /// many earlier lines of the same verdict were suppressed.
    pub fn count_rejection(&self, verdict: Verdict, now_ms: u64) -> (bool, u64) {
        self.rejected[verdict as usize].fetch_add(1, Ordering::Relaxed);
        self.allow_log(verdict.as_str(), now_ms)
    }

    /// Returns whether a warning of this category may be logged now (at most
    /// [`LOG_BURST`] per [`LOG_WINDOW_MS`]), plus how many lines of it were
    /// suppressed since the last one logged.
    pub fn allow_log(&self, category: &'static str, now_ms: u64) -> (bool, u64) {
        let mut limiter = self
            .limiter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let window = limiter.entry(category).or_default();
        if now_ms.saturating_sub(window.started_ms) >= LOG_WINDOW_MS {
            let suppressed = window.suppressed;
            *window = LogWindow {
                started_ms: now_ms,
                logged: 1,
                suppressed: 0,
            };
            return (true, suppressed);
        }
        if window.logged < LOG_BURST {
            window.logged += 1;
            (true, 0)
        } else {
            window.suppressed += 1;
            (false, 0)
        }
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let rejected = Verdict::ALL
            .iter()
            .map(|verdict| {
                (
                    verdict.as_str().to_owned(),
                    load(&self.rejected[*verdict as usize]),
                )
            })
            .filter(|(_, count)| *count > 0)
            .collect();
        MetricsSnapshot {
            sealed: load(&self.sealed),
            wire_bytes_published: load(&self.wire_bytes_published),
            delivered: load(&self.delivered),
            rejected,
            grants_created: load(&self.grants_created),
            grants_installed: load(&self.grants_installed),
            grant_requests_sent: load(&self.grant_requests_sent),
            grant_requests_answered: load(&self.grant_requests_answered),
            held: load(&self.held),
            epochs_started: load(&self.epochs_started),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_logging_is_rate_limited() {
        let metrics = Metrics::default();
        let allowed = (0..LOG_BURST + 5)
            .filter(|_| metrics.count_rejection(Verdict::Forged, 1_000).0)
            .count();
        assert_eq!(allowed as u64, LOG_BURST);
        let (allowed, suppressed) = metrics.count_rejection(Verdict::Forged, 1_000 + LOG_WINDOW_MS);
        assert!(allowed);
        assert_eq!(suppressed, 5);
        assert_eq!(metrics.snapshot().rejected(Verdict::Forged), LOG_BURST + 6);
    }
}
