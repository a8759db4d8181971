//! Control topics that carry grants and grant requests.
//!
//! Each service listens on two topics of its own: grants addressed to it
//! arrive on [`grant_topic`], and requests for grants it issued arrive on
//! [`grant_request_topic`]. Grants and requests are authenticated Noise
//! messages, so the topics need no protection of their own.

/// Prefix of every control topic.
pub const CONTROL_PREFIX: &str = "sealbus/v1";

/// Returns the topic on which `service` receives grants.
pub fn grant_topic(service: &str) -> String {
    format!("{CONTROL_PREFIX}/grants/{service}")
}

/// Returns the topic on which `service` receives grant requests.
pub fn grant_request_topic(service: &str) -> String {
    format!("{CONTROL_PREFIX}/grant-requests/{service}")
}

/// Returns whether a topic is a sealbus control topic.
pub fn is_control_topic(topic: &str) -> bool {
    topic
        .strip_prefix(CONTROL_PREFIX)
        .is_some_and(|rest| rest.starts_with('/'))
}
