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
}

/// Matches Redis glob patterns as this module writes them: `*` and
/// backslash-escaped literals. Any other byte matches itself. Tests use it
/// to check that every pattern covers its MQTT filter.
#[cfg(test)]
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

/// Subscription of the connection that a Redis message arrived through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum CopySource {
    /// A `SUBSCRIBE` to the exact channel.
    Channel,
    /// A `PSUBSCRIBE` to this pattern.
    Pattern(String),
}

/// Recognizes the extra copies Redis sends when one message matches several
/// subscriptions of the same connection.
///
/// Redis writes all copies of one `PUBLISH` to a subscriber back to back,
/// one per matching subscription, because it handles the command in one
/// step. A message equal to the previous one that arrives through a
/// subscription the previous copies did not use is therefore an extra copy.
/// The same bytes through a subscription already seen are a new
/// publication, such as a replay, which the security layer must judge.
/// Deciding by source instead of by the subscription table stays right
/// while a (P)SUBSCRIBE or (P)UNSUBSCRIBE is in flight, when the table and
/// the copies Redis sends disagree for a moment.
#[derive(Default)]
pub(super) struct CopyTracker {
    channel: String,
    payload: Bytes,
    sources: Vec<CopySource>,
}

impl CopyTracker {
    /// Returns true when the message is an extra copy to skip; otherwise
    /// remembers it as the latest publication.
    pub(super) fn is_extra_copy(
        &mut self,
        channel: &str,
        payload: &Bytes,
        source: CopySource,
    ) -> bool {
        let same_message =
            !self.sources.is_empty() && self.channel == channel && self.payload == *payload;
        if same_message && !self.sources.contains(&source) {
            self.sources.push(source);
            return true;
        }
        channel.clone_into(&mut self.channel);
        self.payload = payload.clone();
        self.sources.clear();
        self.sources.push(source);
        false
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
    fn difference_lists_missing_entries() {
        let old: Vec<String> = vec!["a".into(), "b/#".into()];
        let new: Vec<String> = vec!["a".into(), "c".into(), "d/+".into()];
        let added = RedisSubscriptions::for_filters(&new)
            .difference(&RedisSubscriptions::for_filters(&old));
        assert_eq!(added.channels.into_iter().collect::<Vec<_>>(), vec!["c"]);
        assert_eq!(added.patterns.into_iter().collect::<Vec<_>>(), vec!["d/*"]);
    }

    fn pattern_source(pattern: &str) -> CopySource {
        CopySource::Pattern(pattern.to_owned())
    }

    #[test]
    fn copy_tracker_skips_copies_through_other_subscriptions() {
        let mut tracker = CopyTracker::default();
        let payload = Bytes::from_static(b"p");
        assert!(!tracker.is_extra_copy("a/b", &payload, CopySource::Channel));
        assert!(tracker.is_extra_copy("a/b", &payload, pattern_source("a/*")));
        assert!(tracker.is_extra_copy("a/b", &payload, pattern_source("a*")));
        // The same bytes through a subscription already seen are published
        // again, so they are delivered, and their copies skipped again.
        assert!(!tracker.is_extra_copy("a/b", &payload, CopySource::Channel));
        assert!(tracker.is_extra_copy("a/b", &payload, pattern_source("a*")));
    }

    #[test]
    fn copy_tracker_keeps_other_messages() {
        let mut tracker = CopyTracker::default();
        let first = Bytes::from_static(b"1");
        let second = Bytes::from_static(b"2");
        assert!(!tracker.is_extra_copy("t", &first, CopySource::Channel));
        assert!(!tracker.is_extra_copy("t", &second, pattern_source("*")));
        assert!(!tracker.is_extra_copy("u", &second, CopySource::Channel));
        assert!(!tracker.is_extra_copy("t", &first, pattern_source("*")));
    }

    #[test]
    fn copy_tracker_follows_subscription_changes_in_flight() {
        // An exact channel is dropped while a pattern stays: messages
        // published before Redis applied the UNSUBSCRIBE come twice, later
        // ones once. Then the channel is added back.
        let stream: [(&[u8], CopySource); 7] = [
            (b"1", CopySource::Channel),
            (b"1", pattern_source("t*")),
            (b"2", CopySource::Channel),
            (b"2", pattern_source("t*")),
            (b"3", pattern_source("t*")),
            (b"4", pattern_source("t*")),
            (b"4", CopySource::Channel),
        ];
        let mut tracker = CopyTracker::default();
        let delivered: Vec<&[u8]> = stream
            .iter()
            .filter(|(payload, source)| {
                !tracker.is_extra_copy("t", &Bytes::copy_from_slice(payload), source.clone())
            })
            .map(|(payload, _)| *payload)
            .collect();
        assert_eq!(delivered, [b"1", b"2", b"3", b"4"]);
    }
}
