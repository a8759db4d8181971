//! MQTT topic names and topic filters (MQTT 3.1.1, section 4.7).
//!
//! Topics and filters are split into levels at `/`. Empty levels are allowed,
//! so `a//b` has three levels and `/` has two empty ones. In a filter, `+`
//! matches exactly one level (the empty level too) and `#` matches the rest
//! of the topic, including the parent level itself: `a/#` matches `a`.
//! Topics that start with `$` (broker internals such as `$SYS/...`) are not
//! matched by a filter whose first level is a wildcard.

use crate::error::{preview, KeyringError, Result};

/// Maximum topic name length in bytes of UTF-8. MQTT allows 65,535, but sealbus
/// binds the topic into every sealed message, so it keeps topics short. EdgeX
/// topics such as `edgex/events/device/<service>/<profile>/<device>/<source>`
/// fit unless their names add up to several hundred bytes.
pub const MAX_TOPIC_LEN: usize = 1024;

/// Maximum topic filter length in bytes of UTF-8, for the same reason as
/// [`MAX_TOPIC_LEN`]. The certificate encoding stores it in a `u16`.
pub const MAX_FILTER_LEN: usize = 1024;

/// Level separator of topics and filters.
const SEPARATOR: char = '/';

/// Checks that `topic` is a valid MQTT topic name for sealbus.
///
/// # Errors
///
/// [`KeyringError::InvalidTopic`] if the topic is empty, longer than
/// [`MAX_TOPIC_LEN`] bytes, or contains `+`, `#` or NUL.
pub fn validate_topic(topic: &str) -> Result<()> {
    let reject = |reason| {
        Err(KeyringError::InvalidTopic {
            topic: preview(topic),
            reason,
        })
    };

    if topic.is_empty() {
        return reject("it is empty");
    }
    if topic.len() > MAX_TOPIC_LEN {
        return reject("it is too long");
    }
    if topic.contains('\0') {
        return reject("it contains NUL");
    }
    if topic.contains(['+', '#']) {
        return reject("it contains a wildcard");
    }
    Ok(())
}

/// Checks that `filter` is a valid MQTT 3.1.1 topic filter for sealbus.
///
/// # Errors
///
/// [`KeyringError::InvalidFilter`] if the filter is empty, longer than
/// [`MAX_FILTER_LEN`] bytes, contains NUL, has a `+` that is not a whole
/// level, or has a `#` that is not the whole last level.
pub fn validate_filter(filter: &str) -> Result<()> {
    let reject = |reason| {
        Err(KeyringError::InvalidFilter {
            filter: preview(filter),
            reason,
        })
    };

    if filter.is_empty() {
        return reject("it is empty");
    }
    if filter.len() > MAX_FILTER_LEN {
        return reject("it is too long");
    }
    if filter.contains('\0') {
        return reject("it contains NUL");
    }

    let mut levels = filter.split(SEPARATOR).peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        if level.contains('+') && level != "+" {
            return reject("'+' shares a level with other characters");
        }
        if level.contains('#') && level != "#" {
            return reject("'#' shares a level with other characters");
        }
        if level == "#" && !is_last {
            return reject("'#' is not the last level");
        }
    }
    Ok(())
}

/// Returns whether `filter` matches `topic` under MQTT rules.
///
/// Returns `false` when the filter or the topic is invalid, so an unchecked
/// value can never widen a permission.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if validate_filter(filter).is_err() || validate_topic(topic).is_err() {
        return false;
    }
    matches_validated(filter, topic)
}

/// Matches a filter against a topic that were both validated before.
pub(crate) fn matches_validated(filter: &str, topic: &str) -> bool {
    // A leading wildcard never reaches `$` topics. In a valid filter, a
    // leading `+` or `#` is the whole first level.
    let leading_wildcard = filter.starts_with(['+', '#']);
    if topic.starts_with('$') && leading_wildcard {
        return false;
    }

    let mut topic_levels = topic.split(SEPARATOR);
    for filter_level in filter.split(SEPARATOR) {
        match filter_level {
            // `#` is the last level and also matches when no topic level is left.
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if topic_levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn topic_validation_table() {
        let valid = [
            "a",
            "/",
            "a//b",
            "edgex/events/device/x",
            "$SYS/broker",
            "ü/名前",
        ];
        for topic in valid {
            assert!(validate_topic(topic).is_ok(), "{topic:?} should be valid");
        }

        let too_long = "a".repeat(MAX_TOPIC_LEN + 1);
        let invalid = ["", "a/+", "a/#", "+", "#", "a\0b", too_long.as_str()];
        for topic in invalid {
            let result = validate_topic(topic);
            assert!(
                matches!(result, Err(KeyringError::InvalidTopic { .. })),
                "{topic:?} should be invalid"
            );
        }
    }

    #[test]
    fn topic_length_limit_counts_bytes() {
        let at_limit = "a".repeat(MAX_TOPIC_LEN);
        assert!(validate_topic(&at_limit).is_ok());

        // 'é' is two bytes, so this topic has MAX_TOPIC_LEN / 2 + 1 characters
        // but more than MAX_TOPIC_LEN bytes.
        let multibyte = "é".repeat(MAX_TOPIC_LEN / 2 + 1);
        assert!(validate_topic(&multibyte).is_err());
    }

    #[test]
    fn filter_validation_table() {
        let valid = [
            "#",
            "+",
            "/",
            "+/+",
            "/+",
            "a/#",
            "a/+/b",
            "+/tennis/#",
            "sport/tennis/player1/#",
            "a//b",
            "$SYS/#",
        ];
        for filter in valid {
            assert!(
                validate_filter(filter).is_ok(),
                "{filter:?} should be valid"
            );
        }

        let too_long = "a".repeat(MAX_FILTER_LEN + 1);
        let invalid = [
            "",
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "sport+",
            "a/b+",
            "#/a",
            "a/#/",
            "##",
            "++",
            "a/+b/c",
            "a\0",
            too_long.as_str(),
        ];
        for filter in invalid {
            let result = validate_filter(filter);
            assert!(
                matches!(result, Err(KeyringError::InvalidFilter { .. })),
                "{filter:?} should be invalid"
            );
        }
    }

    #[test]
    fn filter_matching_table() {
        // (filter, topic, expected)
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/tennis/player1/#", "sport/tennis/player2", false),
            ("sport/#", "sport", true),
            ("sport/#", "sports", false),
            ("#", "anything/at/all", true),
            ("#", "/", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("+", "a", true),
            ("a/+/c", "a//c", true),
            ("a/b", "a/b", true),
            ("a/b", "a/b/", false),
            ("a/b", "A/b", false),
            ("#", "$SYS/broker", false),
            ("+/broker", "$SYS/broker", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/broker", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("a/$x", "a/$x", true),
            ("a/+", "a/$x", true),
            // Invalid inputs never match.
            ("a/#/b", "a/x/b", false),
            ("a+", "a+", false),
            ("#", "a/+", false),
            ("a", "", false),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(
                filter_matches(filter, topic),
                expected,
                "filter {filter:?} against topic {topic:?}"
            );
        }
    }

    /// Reference matcher written directly from the MQTT rules, level by level.
    fn reference_matches(filter: &str, topic: &str) -> bool {
        fn levels_match(filter: &[&str], topic: &[&str]) -> bool {
            match (filter.split_first(), topic.split_first()) {
                (Some((&"#", _)), _) => true,
                (Some((&"+", filter_rest)), Some((_, topic_rest))) => {
                    levels_match(filter_rest, topic_rest)
                }
                (Some((filter_level, filter_rest)), Some((topic_level, topic_rest))) => {
                    filter_level == topic_level && levels_match(filter_rest, topic_rest)
                }
                (None, None) => true,
                _ => false,
            }
        }

        let filter_levels: Vec<&str> = filter.split('/').collect();
        let topic_levels: Vec<&str> = topic.split('/').collect();
        let first_is_wildcard = matches!(filter_levels[0], "+" | "#");
        if topic_levels[0].starts_with('$') && first_is_wildcard {
            return false;
        }
        levels_match(&filter_levels, &topic_levels)
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "c", "", "$s"]);
        prop::collection::vec(level, 1..6)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("a topic is not empty", |topic| !topic.is_empty())
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "", "+", "$s"]);
        (prop::collection::vec(level, 0..6), any::<bool>())
            .prop_map(|(mut levels, multi_level)| {
                if multi_level {
                    levels.push("#");
                }
                levels.join("/")
            })
            .prop_filter("a filter is not empty", |filter| !filter.is_empty())
    }

    /// Builds a filter that must match `topic`: some levels become `+`, and
    /// the tail may be cut and replaced with `#`.
    fn generalize(topic: &str, plus_mask: &[bool], cut: Option<usize>) -> String {
        let levels: Vec<&str> = topic.split('/').collect();
        let keep = cut.map_or(levels.len(), |cut| cut % (levels.len() + 1));
        let mut filter: Vec<&str> = levels[..keep]
            .iter()
            .enumerate()
            .map(|(index, level)| {
                let at_start_of_dollar = index == 0 && level.starts_with('$');
                if plus_mask.get(index).copied().unwrap_or(false) && !at_start_of_dollar {
                    "+"
                } else {
                    level
                }
            })
            .collect();
        if cut.is_some() && !(keep == 0 && topic.starts_with('$')) {
            filter.push("#");
        }
        filter.join("/")
    }

    proptest! {
        #[test]
        fn matching_agrees_with_reference(filter in filter_strategy(), topic in topic_strategy()) {
            prop_assert!(validate_filter(&filter).is_ok(), "generated filter {:?}", filter);
            prop_assert!(validate_topic(&topic).is_ok(), "generated topic {:?}", topic);
            prop_assert_eq!(filter_matches(&filter, &topic), reference_matches(&filter, &topic));
        }

        #[test]
        fn generalized_topic_matches(
            topic in topic_strategy(),
            plus_mask in prop::collection::vec(any::<bool>(), 6),
            cut in prop::option::of(0usize..8),
        ) {
            let filter = generalize(&topic, &plus_mask, cut);
            if filter.is_empty() {
                // A `$` topic cut before its first level has no filter that
                // matches it without naming that level.
                return Ok(());
            }
            prop_assert!(validate_filter(&filter).is_ok(), "built filter {:?}", filter);
            prop_assert!(filter_matches(&filter, &topic), "{:?} should match {:?}", filter, topic);
        }

        #[test]
        fn topic_matches_itself(topic in topic_strategy()) {
            prop_assert!(filter_matches(&topic, &topic));
        }

        #[test]
        fn validation_never_panics(input in ".{0,40}") {
            let _ = validate_topic(&input);
            let _ = validate_filter(&input);
            let _ = filter_matches(&input, &input);
        }

        #[test]
        fn wildcard_topic_never_matches(filter in filter_strategy(), topic in topic_strategy(), wildcard in prop::sample::select(vec!["+", "#"])) {
            let bad_topic = format!("{topic}/{wildcard}");
            prop_assert!(!filter_matches(&filter, &bad_topic));
        }
    }
}
