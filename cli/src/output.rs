//! The JSON line that `sealbus watch` prints for every message.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sealbus_bus_adapters::client::ReceivedMessage;
use sealbus_bus_adapters::secure::Rejection;
use serde::Serialize;

/// One line of `sealbus watch` output. Field names follow EdgeX's JSON
/// spelling where they mirror envelope fields.
#[derive(Debug, Serialize)]
pub struct WatchLine {
    /// Topic the message arrived on.
    pub topic: String,
    /// "ok", or the rejection reason ("forged", "replay", ...).
    pub verdict: String,
    /// Verified sender; only for "ok".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Sender named by a rejected message, unverified.
    #[serde(rename = "claimedSender", skip_serializing_if = "Option::is_none")]
    pub claimed_sender: Option<String>,
    /// Envelope content type; only for "ok".
    #[serde(rename = "contentType", skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Envelope correlation ID; only for "ok".
    #[serde(rename = "correlationID", skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Envelope request ID; only for "ok".
    #[serde(rename = "requestID", skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Envelope error code; only for "ok".
    #[serde(rename = "errorCode", skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    /// Payload as UTF-8 text, or base64 when it is not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// "base64" when `payload` is base64; absent for text.
    #[serde(rename = "payloadEncoding", skip_serializing_if = "Option::is_none")]
    pub payload_encoding: Option<&'static str>,
    /// Why a message was rejected; absent for "ok".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl WatchLine {
    /// Describes an opened message.
    pub fn accepted(message: &ReceivedMessage) -> Self {
        let envelope = &message.envelope;
        let (payload, payload_encoding) = match std::str::from_utf8(&envelope.payload) {
            Ok(text) => (text.to_owned(), None),
            Err(_) => (STANDARD.encode(&envelope.payload), Some("base64")),
        };
        Self {
            topic: message.topic.clone(),
            verdict: "ok".into(),
            sender: Some(message.sender.clone()),
            claimed_sender: None,
            content_type: Some(envelope.content_type.clone()),
            correlation_id: Some(envelope.correlation_id.clone()),
            request_id: Some(envelope.request_id.clone()),
            error_code: Some(envelope.error_code),
            payload: Some(payload),
            payload_encoding,
            detail: None,
        }
    }

    /// Describes a rejected message.
    pub fn rejected(rejection: &Rejection) -> Self {
        Self {
            topic: rejection.topic.clone(),
            verdict: rejection.verdict.as_str().into(),
            sender: None,
            claimed_sender: rejection.claimed_sender.clone(),
            content_type: None,
            correlation_id: None,
            request_id: None,
            error_code: None,
            payload: None,
            payload_encoding: None,
            detail: Some(rejection.detail.clone()),
        }
    }

    /// Serializes to one line of JSON.
    pub fn to_line(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}
