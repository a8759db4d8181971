//! Mapping of MQTT filters onto Redis pub/sub channels and patterns.
//!
//! A filter without wildcards becomes a `SUBSCRIBE` channel. A filter with
//! wildcards becomes a `PSUBSCRIBE` glob pattern in which `+` and `#` turn into
//! `*`. Redis's `*` also matches `/`, so a pattern can match more topics than
//! the filter (`a/+` matches `a/b/c`). Over-matching is safe: the subscriber
//! task re-checks MQTT matching on every message, and the security layer above
//! checks it again, so only topics that the MQTT filter matches are delivered.

use std::collections::BTreeSet;

use bytes::Bytes;

/// The Redis subscription that carries one MQTT filter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum RedisSubscription {
    /// `SUBSCRIBE` to this exact channel.
    Channel(String),
    /// `PSUBSCRIBE` to this glob pattern.
    Pattern(String),
}

impl RedisSubscription {
    pub(super) fn for_filter(filter: &str) -> Self {
        if !filter.contains(['+', '#']) {
            return RedisSubscription::Channel(filter.to_owned());
        }

        let mut pattern = String::with_capacity(filter.len());
        let levels: Vec<&str> = filter.split('/').collect();
        for (index, level) in levels.iter().enumerate() {
            match *level {
                "#" => {
                    // `a/#` also matches `a`, so the pattern is `a*`, not `a/*`.
                    if pattern.ends_with('/') {
                        pattern.pop();
                    }
                    pattern.push('*');
                    break;
                }
                "+" => pattern.push('*'),
                literal => push_escaped(&mut pattern, literal),
            }
            if index + 1 < levels.len() {
                pattern.push('/');
            }
        }
        RedisSubscription::Pattern(pattern)
    }
}

/// Escapes the characters that Redis glob patterns treat specially.
fn push_escaped(pattern: &mut String, literal: &str) {
    for character in literal.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(character);
    }
}

/// The channels and patterns one Redis connection is subscribed to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RedisSubscriptions {
    pub(super) channels: BTreeSet<String>,
    pub(super) patterns: BTreeSet<String>,
}

impl RedisSubscriptions {
    pub(super) fn for_filters<'a>(filters: impl IntoIterator<Item = &'a String>) -> Self {
        let mut subscriptions = RedisSubscriptions::default();
        for filter in filters {
            match RedisSubscription::for_filter(filter) {
                RedisSubscription::Channel(channel) => subscriptions.channels.insert(channel),
                RedisSubscription::Pattern(pattern) => subscriptions.patterns.insert(pattern),
            };
        }
        subscriptions
    }

    /// Returns what `self` has and `other` lacks.
    pub(super) fn difference(&self, other: &RedisSubscriptions) -> RedisSubscriptions {
        RedisSubscriptions {
            channels: self.channels.difference(&other.channels).cloned().collect(),
            patterns: self.patterns.difference(&other.patterns).cloned().collect(),
        }
    }

    /// Returns how many copies of one message published on `channel` Redis
    /// sends to this connection: one per matching channel or pattern.
    pub(super) fn copies_for(&self, channel: &str) -> usize {
        let exact = usize::from(self.channels.contains(channel));
        let by_pattern = self
            .patterns
            .iter()
            .filter(|pattern| glob_matches(pattern.as_bytes(), channel.as_bytes()))
            .count();
        exact + by_pattern
    }
}

/// Matches Redis glob patterns as this module writes them: `*` and
/// backslash-escaped literals. Any other byte matches itself.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut pattern_index, mut text_index) = (0, 0);
    // Where to resume after the last `*` when a later literal does not match.
    let mut backtrack: Option<(usize, usize)> = None;
    while text_index < text.len() {
        match pattern.get(pattern_index) {
            Some(b'*') => {
                backtrack = Some((pattern_index + 1, text_index));
                pattern_index += 1;
                continue;
            }
            Some(b'\\') if pattern.get(pattern_index + 1) == Some(&text[text_index]) => {
                pattern_index += 2;
                text_index += 1;
                continue;
            }
            Some(&byte) if byte != b'\\' && byte == text[text_index] => {
                pattern_index += 1;
                text_index += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((after_star, star_text)) => {
                pattern_index = after_star;
                text_index = star_text + 1;
                backtrack = Some((after_star, star_text + 1));
            }
            None => return false,
        }
    }
    pattern[pattern_index..].iter().all(|&byte| byte == b'*')
}

/// Recognizes the extra copies Redis sends when one message matches several
/// subscriptions of the same connection.
///
/// Redis writes all copies of one `PUBLISH` to a subscriber back to back,
/// because it handles the command in one step. The tracker remembers the
/// last delivered message and skips that many identical successors.
#[derive(Default)]
pub(super) struct CopyTracker {
    last: Option<(String, Bytes)>,
    extra_copies_left: usize,
}

impl CopyTracker {
    /// Returns true when the message is an extra copy to skip.
    pub(super) fn is_extra_copy(&mut self, channel: &str, payload: &Bytes) -> bool {
        if self.extra_copies_left > 0 {
            if let Some((last_channel, last_payload)) = &self.last {
                if last_channel == channel && last_payload == payload {
                    self.extra_copies_left -= 1;
                    return true;
                }
            }
        }
        self.extra_copies_left = 0;
        false
    }

    /// Records a delivered message that Redis sends `copies` times.
    pub(super) fn delivered(&mut self, channel: &str, payload: &Bytes, copies: usize) {
        self.extra_copies_left = copies.saturating_sub(1);
        self.last = (self.extra_copies_left > 0).then(|| (channel.to_owned(), payload.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::mqtt_filter_matches;

    fn pattern(filter: &str) -> String {
        match RedisSubscription::for_filter(filter) {
            RedisSubscription::Pattern(pattern) => pattern,
            RedisSubscription::Channel(channel) => panic!("{filter} became channel {channel}"),
        }
    }

    #[test]
    fn filter_without_wildcards_is_channel() {
        assert_eq!(
            RedisSubscription::for_filter("edgex/events/x"),
            RedisSubscription::Channel("edgex/events/x".to_owned())
        );
    }

    #[test]
    fn wildcards_become_stars() {
        assert_eq!(pattern("a/+/c"), "a/*/c");
        assert_eq!(pattern("a/#"), "a*");
        assert_eq!(pattern("#"), "*");
        assert_eq!(pattern("+"), "*");
        assert_eq!(pattern("+/b/#"), "*/b*");
    }

    #[test]
    fn glob_characters_escaped() {
        assert_eq!(pattern("a?[b]*\\/+"), "a\\?\\[b\\]\\*\\\\/*");
    }

    #[test]
    fn patterns_cover_every_mqtt_match() {
        let filters = ["a/+/c", "a/#", "#", "+", "+/b/#", "x*/+", "q?/#"];
        let topics = [
            "a", "a/b", "a/b/c", "a/b/c/d", "ab", "b", "x/b", "x/b/c", "x*/y", "xy/z", "q?/r",
            "qq/r",
        ];
        for filter in filters {
            let redis_pattern = pattern(filter);
            for topic in topics {
                if mqtt_filter_matches(filter, topic) {
                    assert!(
                        glob_matches(redis_pattern.as_bytes(), topic.as_bytes()),
                        "{filter} -> {redis_pattern} must match {topic}"
                    );
                }
            }
        }
    }

    #[test]
    fn escaped_literals_match_only_themselves() {
        let redis_pattern = pattern("x*/+");
        assert!(glob_matches(redis_pattern.as_bytes(), b"x*/y"));
        assert!(!glob_matches(redis_pattern.as_bytes(), b"xy/z"));
    }

    #[test]
    fn copies_count_channel_and_patterns() {
        let filters: Vec<String> = ["a/b", "a/+", "a/#", "c"]
            .iter()
            .map(|f| f.to_string())
            .collect();
        let subscriptions = RedisSubscriptions::for_filters(&filters);
        assert_eq!(subscriptions.copies_for("a/b"), 3);
        assert_eq!(subscriptions.copies_for("a/z"), 2);
        assert_eq!(subscriptions.copies_for("a"), 1);
        assert_eq!(subscriptions.copies_for("c"), 1);
        assert_eq!(subscriptions.copies_for("d"), 0);
    }

    #[test]
    fn difference_lists_missing_entries() {
        let old: Vec<String> = vec!["a".into(), "b/#".into()];
        let new: Vec<String> = vec!["a".into(), "c".into(), "d/+".into()];
        let added = RedisSubscriptions::for_filters(&new)
            .difference(&RedisSubscriptions::for_filters(&old));
        assert_eq!(added.channels.into_iter().collect::<Vec<_>>(), vec!["c"]);
        assert_eq!(added.patterns.into_iter().collect::<Vec<_>>(), vec!["d/*"]);
    }

    #[test]
    fn copy_tracker_skips_adjacent_copies_only() {
        let mut tracker = CopyTracker::default();
        let payload = Bytes::from_static(b"p");
        assert!(!tracker.is_extra_copy("a/b", &payload));
        tracker.delivered("a/b", &payload, 3);
        assert!(tracker.is_extra_copy("a/b", &payload));
        assert!(tracker.is_extra_copy("a/b", &payload));
        // All copies seen: the same bytes again are a new message.
        assert!(!tracker.is_extra_copy("a/b", &payload));
        tracker.delivered("a/b", &payload, 1);
        assert!(!tracker.is_extra_copy("a/b", &payload));
    }

    #[test]
    fn copy_tracker_resets_on_other_message() {
        let mut tracker = CopyTracker::default();
        let first = Bytes::from_static(b"1");
        let second = Bytes::from_static(b"2");
        tracker.delivered("t", &first, 2);
        assert!(!tracker.is_extra_copy("t", &second));
        tracker.delivered("t", &second, 1);
        assert!(!tracker.is_extra_copy("t", &first));
    }
}
