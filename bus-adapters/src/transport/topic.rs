//! MQTT topic and filter rules shared by every backend.
//!
//! All backends take MQTT syntax: levels separated by `/`, `+` matching one
//! level and `#` matching the rest. The rules follow MQTT 3.1.1 section 4.7.

use crate::error::AdapterError;

/// Maximum topic or filter length in bytes, the MQTT UTF-8 string limit.
pub const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// Checks that `topic` can be published to.
///
/// # Errors
///
/// [`AdapterError::InvalidTopic`] for an empty topic, one longer than
/// [`MAX_TOPIC_LEN`], or one that contains a wildcard or NUL.
pub fn validate_topic(topic: &str) -> Result<(), AdapterError> {
    let reason = if topic.is_empty() {
        Some("a topic must not be empty")
    } else if topic.len() > MAX_TOPIC_LEN {
        Some("a topic must not exceed 65535 bytes")
    } else if topic.contains(['+', '#']) {
        Some("a published topic must not contain the wildcards + or #")
    } else if topic.contains('\0') {
        Some("a topic must not contain NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(AdapterError::InvalidTopic {
            topic: topic.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks that `filter` is a valid MQTT subscription filter.
///
/// # Errors
///
/// [`AdapterError::InvalidFilter`] for an empty filter, one longer than
/// [`MAX_TOPIC_LEN`], one with NUL, `+` or `#` that does not fill a whole level,
/// or `#` before the last level.
pub fn validate_filter(filter: &str) -> Result<(), AdapterError> {
    let invalid = |reason| {
        Err(AdapterError::InvalidFilter {
            filter: filter.to_owned(),
            reason,
        })
    };
    if filter.is_empty() {
        return invalid("a filter must not be empty");
    }
    if filter.len() > MAX_TOPIC_LEN {
        return invalid("a filter must not exceed 65535 bytes");
    }
    if filter.contains('\0') {
        return invalid("a filter must not contain NUL");
    }

    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !is_last) {
            return invalid("# must be the whole last level, as in a/b/#");
        }
        if level.contains('+') && level != "+" {
            return invalid("+ must fill a whole level, as in a/+/c");
        }
    }
    Ok(())
}

/// Returns whether the MQTT `filter` matches the concrete `topic`.
///
/// `#` also matches the parent level (`a/#` matches `a`), and a filter that
/// starts with a wildcard does not match topics that start with `$`, as MQTT
/// requires. Both arguments are assumed valid.
pub fn mqtt_filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }

    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(filter_level), Some(topic_level)) if filter_level == topic_level => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_matching_table() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/b", "a/b/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/", true),
            ("a/+", "a/b/c", false),
            ("a/+", "a", false),
            ("+/b", "a/b", true),
            ("+/+", "/b", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "ab", false),
            ("#", "a/b", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("edgex/events/#", "edgex/events/device/Random/x", true),
            (
                "edgex/events/+/Random/#",
                "edgex/events/device/Random/x",
                true,
            ),
            (
                "edgex/events/+/Random/#",
                "edgex/events/core/Other/x",
                false,
            ),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(
                mqtt_filter_matches(filter, topic),
                expected,
                "{filter} vs {topic}"
            );
        }
    }

    #[test]
    fn valid_filters_accepted() {
        for filter in ["a", "a/b", "+", "#", "a/+/c", "a/#", "+/+/#", "/", "a//b"] {
            assert!(validate_filter(filter).is_ok(), "{filter}");
        }
    }

    #[test]
    fn invalid_filters_rejected() {
        for filter in ["", "a/#/b", "a#", "a/b+", "+a", "a\0b", "##"] {
            let error = validate_filter(filter).unwrap_err();
            assert!(
                matches!(error, AdapterError::InvalidFilter { .. }),
                "{filter}"
            );
        }
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert!(validate_filter(&long).is_err());
    }

    #[test]
    fn topics_validated() {
        assert!(validate_topic("edgex/events/x").is_ok());
        for topic in ["", "a/+", "a/#", "a\0"] {
            let error = validate_topic(topic).unwrap_err();
            assert!(
                matches!(error, AdapterError::InvalidTopic { .. }),
                "{topic:?}"
            );
        }
        let long = "t".repeat(MAX_TOPIC_LEN + 1);
        assert!(validate_topic(&long).is_err());
    }
}
