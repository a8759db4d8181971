//! Bookkeeping that matches MQTT SUBACK and UNSUBACK packets to the callers
//! waiting for them. It does no I/O, so the tests drive it directly.
//!
//! rumqttc assigns packet identifiers inside its event loop and reports them
//! only as `Outgoing::Subscribe(pkid)` / `Outgoing::Unsubscribe(pkid)`, in the
//! order the requests were taken from its queue. The book therefore keeps the
//! requests it handed to rumqttc in the same order (`queued`), moves each to
//! `awaiting_ack` under its packet identifier when the outgoing event arrives,
//! and applies the acknowledgement to every caller waiting for those filters.

use std::collections::{BTreeSet, HashMap, VecDeque};

use tokio::sync::oneshot;

/// Purpose of a tracked request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RequestKind {
    /// A caller's SUBSCRIBE.
    Subscribe,
    /// The SUBSCRIBE that restores all filters after a reconnect.
    Resubscribe,
    /// An UNSUBSCRIBE.
    Unsubscribe,
}

/// A SUBSCRIBE or UNSUBSCRIBE handed to rumqttc and not yet acknowledged.
#[derive(Debug)]
struct TrackedRequest {
    id: u64,
    kind: RequestKind,
    filters: Vec<String>,
}

/// Acknowledgement a caller waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WaitKind {
    /// SUBACK for every filter.
    Subscribe,
    /// UNSUBACK for every filter.
    Unsubscribe,
}

/// Result of a wait.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WaitOutcome {
    /// The broker acknowledged every filter.
    Confirmed,
    /// The broker returned the SUBACK failure code for this filter.
    Rejected {
        /// The first rejected filter.
        filter: String,
    },
    /// The transport stopped before the acknowledgement arrived.
    Closed,
}

struct Waiter {
    kind: WaitKind,
    remaining: BTreeSet<String>,
    rejected: Option<String>,
    reply: oneshot::Sender<WaitOutcome>,
}

/// The result of one acknowledgement, for logging and reconnect accounting.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct AckResult {
    /// The kind of the acknowledged request.
    pub(super) kind: RequestKind,
    /// Filters the broker rejected, removed from the subscription set.
    pub(super) rejected: Vec<String>,
}

/// Subscription set and pending acknowledgements of one MQTT transport.
pub(super) struct RequestBook {
    /// Filters to restore after a reconnect: every filter subscribed and not
    /// unsubscribed, including those whose SUBACK is still outstanding.
    subscribed: BTreeSet<String>,
    queued: VecDeque<TrackedRequest>,
    awaiting_ack: HashMap<u16, TrackedRequest>,
    waiters: HashMap<u64, Waiter>,
    next_id: u64,
    /// Largest SUBSCRIBE packet, in bytes, when splitting filters into requests.
    packet_limit: usize,
    /// Set when `disconnect` starts, so new requests are rejected.
    pub(super) closing: bool,
    /// Set when the event loop has stopped.
    pub(super) closed: bool,
}

impl RequestBook {
    pub(super) fn new(packet_limit: usize) -> Self {
        RequestBook {
            subscribed: BTreeSet::new(),
            queued: VecDeque::new(),
            awaiting_ack: HashMap::new(),
            waiters: HashMap::new(),
            next_id: 1,
            packet_limit,
            closing: false,
            closed: false,
        }
    }

    pub(super) fn accepts_requests(&self) -> bool {
        !self.closing && !self.closed
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Adds `filters` to the set restored after reconnects.
    pub(super) fn add_subscriptions(&mut self, filters: &[String]) {
        self.subscribed.extend(filters.iter().cloned());
    }

    /// Removes `filters` from the set restored after reconnects.
    pub(super) fn remove_subscriptions(&mut self, filters: &[String]) {
        for filter in filters {
            self.subscribed.remove(filter);
        }
    }

    /// Registers a caller waiting for `filters` to be acknowledged.
    pub(super) fn add_waiter(
        &mut self,
        kind: WaitKind,
        filters: &[String],
    ) -> (u64, oneshot::Receiver<WaitOutcome>) {
        let id = self.next_id();
        let (reply, outcome) = oneshot::channel();
        let waiter = Waiter {
            kind,
            remaining: filters.iter().cloned().collect(),
            rejected: None,
            reply,
        };
        self.waiters.insert(id, waiter);
        (id, outcome)
    }

    /// Forgets a waiter whose caller gave up, returning its unconfirmed filters.
    pub(super) fn remove_waiter(&mut self, id: u64) -> Vec<String> {
        self.waiters
            .remove(&id)
            .map(|waiter| waiter.remaining.into_iter().collect())
            .unwrap_or_default()
    }

    /// Records a request about to be handed to rumqttc's queue, behind all
    /// earlier ones. Returns its id for [`RequestBook::cancel_queued`].
    pub(super) fn push_queued(&mut self, kind: RequestKind, filters: Vec<String>) -> u64 {
        let id = self.next_id();
        self.queued.push_back(TrackedRequest { id, kind, filters });
        id
    }

    /// Forgets a request that never reached rumqttc's queue.
    pub(super) fn cancel_queued(&mut self, id: u64) {
        self.queued.retain(|request| request.id != id);
    }

    /// Handles `Outgoing::Subscribe(pkid)` or `Outgoing::Unsubscribe(pkid)`.
    /// Returns false when no request was queued, which means the book lost
    /// track of rumqttc's order.
    pub(super) fn on_outgoing(&mut self, pkid: u16) -> bool {
        match self.queued.pop_front() {
            Some(request) => {
                self.awaiting_ack.insert(pkid, request);
                true
            }
            None => false,
        }
    }

    /// Applies a SUBACK: `accepted[i]` is true when the broker granted the
    /// i-th filter of the request. Rejected filters leave the subscription set.
    pub(super) fn on_suback(&mut self, pkid: u16, accepted: &[bool]) -> Option<AckResult> {
        let request = self.awaiting_ack.remove(&pkid)?;
        let mut rejected = Vec::new();
        for (index, filter) in request.filters.iter().enumerate() {
            // A SUBACK with too few return codes leaves the rest unconfirmed.
            let granted = accepted.get(index).copied().unwrap_or(false);
            if !granted {
                self.subscribed.remove(filter);
                rejected.push(filter.clone());
            }
            self.settle_filter(WaitKind::Subscribe, filter, granted);
        }
        self.complete_settled_waiters();
        Some(AckResult {
            kind: request.kind,
            rejected,
        })
    }

    /// Applies an UNSUBACK.
    pub(super) fn on_unsuback(&mut self, pkid: u16) -> Option<AckResult> {
        let request = self.awaiting_ack.remove(&pkid)?;
        for filter in &request.filters {
            self.settle_filter(WaitKind::Unsubscribe, filter, true);
        }
        self.complete_settled_waiters();
        Some(AckResult {
            kind: request.kind,
            rejected: Vec::new(),
        })
    }

    /// Handles a lost connection. The acknowledgements of requests already sent
    /// will never arrive, and the first `unsent` queued requests were taken out
    /// of rumqttc's queue with the dead connection. Returns how many of those
    /// the book did not know about (0 unless the order was lost).
    pub(super) fn on_connection_lost(&mut self, unsent: usize) -> usize {
        self.awaiting_ack.clear();
        let known = unsent.min(self.queued.len());
        self.queued.drain(..known);
        unsent - known
    }

    /// Prepares the requests that restore the subscriptions after a CONNACK.
    ///
    /// Returns the requests to send before anything else, in order: the
    /// current filter set split into SUBSCRIBE packets that fit the packet
    /// limit, then one UNSUBSCRIBE per filter still waiting for UNSUBACK if
    /// the broker kept the old session. Without a kept session those
    /// unsubscribes are complete, because the new session has no subscriptions.
    pub(super) fn on_reconnected(
        &mut self,
        session_present: bool,
    ) -> Vec<(RequestKind, Vec<String>)> {
        let mut restore = Vec::new();
        let filters: Vec<String> = self.subscribed.iter().cloned().collect();
        for chunk in split_filters(&filters, self.packet_limit).unwrap_or_default() {
            restore.push((RequestKind::Resubscribe, chunk));
        }

        let unsubscribing: BTreeSet<String> = self
            .waiters
            .values()
            .filter(|waiter| waiter.kind == WaitKind::Unsubscribe)
            .flat_map(|waiter| waiter.remaining.iter().cloned())
            .collect();
        if session_present {
            restore.extend(
                unsubscribing
                    .into_iter()
                    .map(|filter| (RequestKind::Unsubscribe, vec![filter])),
            );
        } else {
            for filter in &unsubscribing {
                self.settle_filter(WaitKind::Unsubscribe, filter, true);
            }
            self.complete_settled_waiters();
        }

        // These go to the front of rumqttc's pending list, which it sends
        // before anything in its request queue, so they come first here too.
        for (kind, filters) in restore.iter().rev() {
            let id = self.next_id();
            self.queued.push_front(TrackedRequest {
                id,
                kind: *kind,
                filters: filters.clone(),
            });
        }
        restore
    }

    /// Ends every wait with [`WaitOutcome::Closed`] and rejects new requests.
    pub(super) fn close(&mut self) {
        self.closed = true;
        self.queued.clear();
        self.awaiting_ack.clear();
        for (_, waiter) in self.waiters.drain() {
            // The caller may have given up already, so a failed send is fine.
            let _ = waiter.reply.send(WaitOutcome::Closed);
        }
    }

    fn settle_filter(&mut self, kind: WaitKind, filter: &str, granted: bool) {
        for waiter in self.waiters.values_mut() {
            if waiter.kind == kind && waiter.remaining.remove(filter) && !granted {
                waiter.rejected.get_or_insert_with(|| filter.to_owned());
            }
        }
    }

    fn complete_settled_waiters(&mut self) {
        let settled: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, waiter)| waiter.remaining.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in settled {
            if let Some(waiter) = self.waiters.remove(&id) {
                let outcome = match waiter.rejected {
                    Some(filter) => WaitOutcome::Rejected { filter },
                    None => WaitOutcome::Confirmed,
                };
                let _ = waiter.reply.send(outcome);
            }
        }
    }
}

/// Splits `filters` into groups whose SUBSCRIBE packet (QoS byte included)
/// fits in `packet_limit` bytes.
///
/// Returns the first filter that does not fit even alone as the error.
pub(super) fn split_filters(
    filters: &[String],
    packet_limit: usize,
) -> Result<Vec<Vec<String>>, String> {
    let mut chunks = Vec::new();
    let mut current: Vec<String> = Vec::new();
    // Packet identifier, then per filter a length prefix, the filter and a QoS byte.
    let mut body_len = 2;
    for filter in filters {
        let entry_len = 2 + filter.len() + 1;
        if subscribe_packet_size(2 + entry_len) > packet_limit {
            return Err(filter.clone());
        }
        if !current.is_empty() && subscribe_packet_size(body_len + entry_len) > packet_limit {
            chunks.push(std::mem::take(&mut current));
            body_len = 2;
        }
        current.push(filter.clone());
        body_len += entry_len;
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    Ok(chunks)
}

/// Size of an MQTT packet with a `body_len`-byte body: type byte, remaining
/// length field and body.
fn subscribe_packet_size(body_len: usize) -> usize {
    let length_field = match body_len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + length_field + body_len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|item| item.to_string()).collect()
    }

    fn outcome_now(receiver: &mut oneshot::Receiver<WaitOutcome>) -> Option<WaitOutcome> {
        receiver.try_recv().ok()
    }

    #[test]
    fn suback_matched_by_queue_order() {
        let mut book = RequestBook::new(1024);
        let first = strings(&["a"]);
        let second = strings(&["b"]);
        let (_, mut first_wait) = book.add_waiter(WaitKind::Subscribe, &first);
        let (_, mut second_wait) = book.add_waiter(WaitKind::Subscribe, &second);
        book.push_queued(RequestKind::Subscribe, first);
        book.push_queued(RequestKind::Subscribe, second);

        assert!(book.on_outgoing(7));
        assert!(book.on_outgoing(8));
        book.on_suback(8, &[true]).unwrap();
        assert_eq!(outcome_now(&mut first_wait), None);
        assert_eq!(outcome_now(&mut second_wait), Some(WaitOutcome::Confirmed));
        book.on_suback(7, &[true]).unwrap();
        assert_eq!(outcome_now(&mut first_wait), Some(WaitOutcome::Confirmed));
    }

    #[test]
    fn waiter_needs_every_filter() {
        let mut book = RequestBook::new(1024);
        let filters = strings(&["a", "b"]);
        let (_, mut wait) = book.add_waiter(WaitKind::Subscribe, &filters);
        book.push_queued(RequestKind::Subscribe, strings(&["a"]));
        book.push_queued(RequestKind::Subscribe, strings(&["b"]));
        book.on_outgoing(1);
        book.on_outgoing(2);
        book.on_suback(1, &[true]);
        assert_eq!(outcome_now(&mut wait), None);
        book.on_suback(2, &[true]);
        assert_eq!(outcome_now(&mut wait), Some(WaitOutcome::Confirmed));
    }

    #[test]
    fn failure_code_rejects_and_unsubscribes() {
        let mut book = RequestBook::new(1024);
        let filters = strings(&["ok", "denied"]);
        book.add_subscriptions(&filters);
        let (_, mut wait) = book.add_waiter(WaitKind::Subscribe, &filters);
        book.push_queued(RequestKind::Subscribe, filters);
        book.on_outgoing(3);

        let result = book.on_suback(3, &[true, false]).unwrap();
        assert_eq!(result.rejected, strings(&["denied"]));
        assert_eq!(
            outcome_now(&mut wait),
            Some(WaitOutcome::Rejected {
                filter: "denied".to_owned()
            })
        );
        assert!(book.subscribed.contains("ok"));
        assert!(!book.subscribed.contains("denied"));
    }

    #[test]
    fn short_suback_counts_as_rejection() {
        let mut book = RequestBook::new(1024);
        let filters = strings(&["a", "b"]);
        let (_, mut wait) = book.add_waiter(WaitKind::Subscribe, &filters);
        book.push_queued(RequestKind::Subscribe, filters);
        book.on_outgoing(1);
        book.on_suback(1, &[true]);
        assert_eq!(
            outcome_now(&mut wait),
            Some(WaitOutcome::Rejected {
                filter: "b".to_owned()
            })
        );
    }

    #[test]
    fn unknown_pkid_ignored() {
        let mut book = RequestBook::new(1024);
        assert_eq!(book.on_suback(9, &[true]), None);
        assert_eq!(book.on_unsuback(9), None);
        assert!(!book.on_outgoing(9));
    }

    #[test]
    fn cancelled_request_leaves_queue() {
        let mut book = RequestBook::new(1024);
        let first = book.push_queued(RequestKind::Subscribe, strings(&["a"]));
        book.push_queued(RequestKind::Subscribe, strings(&["b"]));
        book.cancel_queued(first);
        book.on_outgoing(5);
        let (_, mut wait) = book.add_waiter(WaitKind::Subscribe, &strings(&["b"]));
        book.on_suback(5, &[true]);
        assert_eq!(outcome_now(&mut wait), Some(WaitOutcome::Confirmed));
    }

    #[test]
    fn reconnect_resubscribes_and_confirms_waiters() {
        let mut book = RequestBook::new(1024);
        let filters = strings(&["a/#", "b"]);
        book.add_subscriptions(&filters);
        let (_, mut wait) = book.add_waiter(WaitKind::Subscribe, &filters);
        book.push_queued(RequestKind::Subscribe, filters.clone());
        book.on_outgoing(1);

        // The connection dies before SUBACK, and a later request that was still
        // in rumqttc's queue is taken out with it.
        book.push_queued(RequestKind::Subscribe, strings(&["b"]));
        assert_eq!(book.on_connection_lost(1), 0);
        assert_eq!(book.on_suback(1, &[true, true]), None);

        let restore = book.on_reconnected(false);
        assert_eq!(
            restore,
            vec![(RequestKind::Resubscribe, strings(&["a/#", "b"]))]
        );
        book.on_outgoing(1);
        let result = book.on_suback(1, &[true, true]).unwrap();
        assert_eq!(result.kind, RequestKind::Resubscribe);
        assert_eq!(outcome_now(&mut wait), Some(WaitOutcome::Confirmed));
    }

    #[test]
    fn reconnect_keeps_requests_still_queued() {
        let mut book = RequestBook::new(1024);
        book.add_subscriptions(&strings(&["old"]));
        // Sent into rumqttc's queue after the connection was lost, so it survives.
        book.push_queued(RequestKind::Subscribe, strings(&["new"]));
        book.on_connection_lost(0);

        let restore = book.on_reconnected(false);
        assert_eq!(restore.len(), 1);
        book.on_outgoing(1);
        book.on_outgoing(2);
        assert_eq!(
            book.on_suback(1, &[true]).unwrap().kind,
            RequestKind::Resubscribe
        );
        assert_eq!(
            book.on_suback(2, &[true]).unwrap().kind,
            RequestKind::Subscribe
        );
    }

    #[test]
    fn reconnect_with_clean_session_completes_unsubscribes() {
        let mut book = RequestBook::new(1024);
        let (_, mut wait) = book.add_waiter(WaitKind::Unsubscribe, &strings(&["gone"]));
        book.push_queued(RequestKind::Unsubscribe, strings(&["gone"]));
        book.on_outgoing(4);
        book.on_connection_lost(0);
        let restore = book.on_reconnected(false);
        assert!(restore.is_empty());
        assert_eq!(outcome_now(&mut wait), Some(WaitOutcome::Confirmed));
    }

    #[test]
    fn reconnect_with_kept_session_repeats_unsubscribes() {
        let mut book = RequestBook::new(1024);
        let (_, mut wait) = book.add_waiter(WaitKind::Unsubscribe, &strings(&["gone"]));
        book.on_connection_lost(0);
        let restore = book.on_reconnected(true);
        assert_eq!(
            restore,
            vec![(RequestKind::Unsubscribe, strings(&["gone"]))]
        );
        book.on_outgoing(2);
        book.on_unsuback(2);
        assert_eq!(outcome_now(&mut wait), Some(WaitOutcome::Confirmed));
    }

    #[test]
    fn close_ends_every_wait() {
        let mut book = RequestBook::new(1024);
        let (_, mut wait) = book.add_waiter(WaitKind::Subscribe, &strings(&["a"]));
        book.close();
        assert_eq!(outcome_now(&mut wait), Some(WaitOutcome::Closed));
        assert!(!book.accepts_requests());
    }

    #[test]
    fn removed_waiter_returns_remaining() {
        let mut book = RequestBook::new(1024);
        let (id, _) = book.add_waiter(WaitKind::Subscribe, &strings(&["x", "y"]));
        assert_eq!(book.remove_waiter(id), strings(&["x", "y"]));
        assert!(book.remove_waiter(id).is_empty());
    }

    #[test]
    fn split_respects_packet_limit() {
        let filters: Vec<String> = (0..10).map(|index| format!("topic/{index:04}")).collect();
        // Each entry is 2 + 10 + 1 = 13 bytes; 2 + 3 * 13 = 41 body bytes, 43 with header.
        let chunks = split_filters(&filters, 43).unwrap();
        assert_eq!(chunks.len(), 4);
        assert!(chunks.iter().take(3).all(|chunk| chunk.len() == 3));
        assert_eq!(chunks.concat(), filters);

        let all = split_filters(&filters, 1024).unwrap();
        assert_eq!(all.len(), 1);
    }

    #[test]
    fn split_rejects_filter_larger_than_limit() {
        let filters = strings(&["short", &"x".repeat(100)]);
        assert_eq!(split_filters(&filters, 50).unwrap_err(), "x".repeat(100));
    }
}
