//! The EdgeX `MessageEnvelope` and its encoding inside a sealed body.
//!
//! The JSON form matches go-mod-messaging 3.x (`pkg/types.MessageEnvelope`):
//! the same field names in the same order, `payload` as standard base64 with
//! padding, `errorCode` as an integer and `queryParams` omitted when empty.
//! Inside a sealed message the fields are carried in a compact binary body
//! (see `docs/wire-format.md`) so the payload is not base64-inflated.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{varint_len, Reader, Writer};
use crate::error::{EnvelopeError, Malformed};
use crate::limits::{MAX_FIELD_LEN, MAX_QUERY_PARAMS, MAX_SEALED_SIZE};

/// The EdgeX API version written by EdgeX 3.x services.
pub const API_VERSION: &str = "v3";

/// Content type of JSON payloads.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Content type of CBOR payloads.
pub const CONTENT_TYPE_CBOR: &str = "application/cbor";

/// Content type of plain text payloads.
pub const CONTENT_TYPE_TEXT: &str = "text/plain";

/// Version byte at the start of the encrypted body.
const BODY_VERSION: u8 = 2;

/// Body flag bit: the payload is empty and was JSON `null` (Go's nil slice).
const BODY_FLAG_NULL_PAYLOAD: u8 = 0x01;

/// An EdgeX message bus envelope, as go-mod-messaging 3.x defines it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageEnvelope {
    /// EdgeX API version of the envelope, for example "v3".
    pub api_version: String,
    /// Topic the message was received on; set by the receiving side.
    pub received_topic: String,
    /// Correlation ID that follows a request through the services.
    pub correlation_id: String,
    /// Request ID that pairs a response with its request.
    pub request_id: String,
    /// 0 for success, non-zero when the payload carries an error.
    pub error_code: i64,
    /// Message payload; base64 in JSON.
    pub payload: Vec<u8>,
    /// Whether the payload is Go's nil slice, which JSON writes as `null`
    /// (a GET command request has one). Only meaningful with an empty
    /// payload; kept so a message reads back exactly as it was sent.
    pub payload_is_null: bool,
    /// Media type of the payload, for example "application/json".
    pub content_type: String,
    /// Optional key/value parameters of a command request; omitted from JSON
    /// when empty.
    pub query_params: BTreeMap<String, String>,
}

/// The JSON shape, field for field in go-mod-messaging's order.
#[derive(Serialize, Deserialize)]
struct WireEnvelope {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(rename = "receivedTopic", default)]
    received_topic: String,
    #[serde(rename = "correlationID", default)]
    correlation_id: String,
    #[serde(rename = "requestID", default)]
    request_id: String,
    #[serde(rename = "errorCode", default)]
    error_code: i64,
    #[serde(default)]
    payload: Option<String>,
    #[serde(rename = "contentType", default)]
    content_type: String,
    #[serde(
        rename = "queryParams",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    query_params: Option<BTreeMap<String, String>>,
}

impl Serialize for MessageEnvelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let payload = if self.payload_is_null && self.payload.is_empty() {
            None
        } else {
            Some(STANDARD.encode(&self.payload))
        };
        WireEnvelope {
            api_version: self.api_version.clone(),
            received_topic: self.received_topic.clone(),
            correlation_id: self.correlation_id.clone(),
            request_id: self.request_id.clone(),
            error_code: self.error_code,
            payload,
            content_type: self.content_type.clone(),
            query_params: (!self.query_params.is_empty()).then(|| self.query_params.clone()),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for MessageEnvelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireEnvelope::deserialize(deserializer)?;
        let (payload, payload_is_null) = match wire.payload {
            None => (Vec::new(), true),
            Some(text) => {
                let bytes = STANDARD.decode(text.as_bytes()).map_err(|error| {
                    serde::de::Error::custom(format!(
                        "payload is not standard base64 with padding: {error}"
                    ))
                })?;
                (bytes, false)
            }
        };
        Ok(Self {
            api_version: wire.api_version,
            received_topic: wire.received_topic,
            correlation_id: wire.correlation_id,
            request_id: wire.request_id,
            error_code: wire.error_code,
            payload,
            payload_is_null,
            content_type: wire.content_type,
            query_params: wire.query_params.unwrap_or_default(),
        })
    }
}

impl MessageEnvelope {
    /// Creates an envelope for a payload with the current API version, a
    /// correlation ID and a content type.
    pub fn new(
        payload: impl Into<Vec<u8>>,
        correlation_id: impl Into<String>,
        content_type: impl Into<String>,
    ) -> Self {
        Self {
            api_version: API_VERSION.to_owned(),
            correlation_id: correlation_id.into(),
            content_type: content_type.into(),
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Parses the go-mod-messaging JSON form.
    ///
    /// # Errors
    /// Returns the serde_json error for invalid JSON or a payload that is not
    /// base64.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Serializes to the go-mod-messaging JSON form, byte for byte as Go's
    /// `encoding/json` writes it, including its escaping of `<`, `>`, `&`,
    /// U+2028 and U+2029 inside strings.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings, integers and a BTreeMap cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        escape_like_go(&json).into_bytes()
    }

    /// Checks every field against the body limits before sealing.
    pub(crate) fn check_limits(&self) -> Result<(), EnvelopeError> {
        let fields = [
            ("apiVersion", &self.api_version),
            ("correlationID", &self.correlation_id),
            ("requestID", &self.request_id),
            ("contentType", &self.content_type),
        ];
        for (field, value) in fields {
            check_field(field, value.len(), MAX_FIELD_LEN)?;
        }
        if self.query_params.len() > MAX_QUERY_PARAMS {
            return Err(EnvelopeError::FieldTooLong {
                field: "queryParams",
                len: self.query_params.len(),
                max: MAX_QUERY_PARAMS,
            });
        }
        for (key, value) in &self.query_params {
            check_field("queryParams key", key.len(), MAX_FIELD_LEN)?;
            check_field("queryParams value", value.len(), MAX_FIELD_LEN)?;
        }
        check_field("payload", self.payload.len(), MAX_SEALED_SIZE)
    }

    /// Encodes the fields that travel encrypted (everything except
    /// `receivedTopic`, which the receiver fills in). The payload comes
    /// last and runs to the end of the body, so it needs no length.
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.put_u8(BODY_VERSION);
        out.put_u8(self.body_flags());
        out.put_text(&self.api_version);
        out.put_text(&self.correlation_id);
        out.put_text(&self.request_id);
        out.put_signed_varint(self.error_code);
        out.put_text(&self.content_type);
        out.put_varint(self.query_params.len() as u64);
        for (key, value) in &self.query_params {
            out.put_text(key);
            out.put_text(value);
        }
        out.extend_from_slice(&self.payload);
    }

    fn body_flags(&self) -> u8 {
        if self.payload_is_null && self.payload.is_empty() {
            BODY_FLAG_NULL_PAYLOAD
        } else {
            0
        }
    }

    /// Returns the encoded body length, so buffers are sized once.
    pub(crate) fn body_len(&self) -> usize {
        fn text_len(text: &str) -> usize {
            varint_len(text.len() as u64) + text.len()
        }
        let params: usize = self
            .query_params
            .iter()
            .map(|(key, value)| text_len(key) + text_len(value))
            .sum();
        let zigzag = ((self.error_code << 1) ^ (self.error_code >> 63)) as u64;
        2 + text_len(&self.api_version)
            + text_len(&self.correlation_id)
            + text_len(&self.request_id)
            + varint_len(zigzag)
            + text_len(&self.content_type)
            + varint_len(self.query_params.len() as u64)
            + params
            + self.payload.len()
    }

    /// Decodes a body that has already been authenticated. The payload,
    /// which ends the body, reuses the body's buffer.
    pub(crate) fn decode_body(body: Vec<u8>, topic: &str) -> Result<Self, Malformed> {
        let mut reader = Reader::new(&body);
        let version = reader.u8("body version")?;
        if version != BODY_VERSION {
            return Err(Malformed::UnsupportedVersion(version));
        }
        let flags = reader.u8("body flags")?;
        if flags & !BODY_FLAG_NULL_PAYLOAD != 0 {
            return Err(Malformed::ReservedFlags(flags));
        }
        let api_version = reader.text(MAX_FIELD_LEN, "apiVersion")?.to_owned();
        let correlation_id = reader.text(MAX_FIELD_LEN, "correlationID")?.to_owned();
        let request_id = reader.text(MAX_FIELD_LEN, "requestID")?.to_owned();
        let error_code = reader.signed_varint("errorCode")?;
        let content_type = reader.text(MAX_FIELD_LEN, "contentType")?.to_owned();

        let param_count = reader.varint("queryParams count")?;
        if param_count > MAX_QUERY_PARAMS as u64 {
            return Err(Malformed::OutOfRange("queryParams count"));
        }
        let mut query_params = BTreeMap::new();
        let mut previous_key: Option<&str> = None;
        for _ in 0..param_count {
            let key = reader.text(MAX_FIELD_LEN, "queryParams key")?;
            let value = reader.text(MAX_FIELD_LEN, "queryParams value")?;
            // Keys are written in sorted order, so one encoding per envelope.
            if previous_key.is_some_and(|previous| previous >= key) {
                return Err(Malformed::OutOfRange("queryParams order"));
            }
            previous_key = Some(key);
            query_params.insert(key.to_owned(), value.to_owned());
        }

        let payload_start = reader.position();
        let payload_is_null = flags & BODY_FLAG_NULL_PAYLOAD != 0;
        if payload_is_null && !reader.rest().is_empty() {
            return Err(Malformed::OutOfRange("payload null flag"));
        }
        let mut payload = body;
        payload.drain(..payload_start);

        Ok(Self {
            api_version,
            received_topic: topic.to_owned(),
            correlation_id,
            request_id,
            error_code,
            payload,
            payload_is_null,
            content_type,
            query_params,
        })
    }
}

/// Applies Go's HTML-safe escaping. These characters never appear in JSON
/// outside strings, so replacing every occurrence is exact.
fn escape_like_go(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for character in json.chars() {
        match character {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            other => out.push(other),
        }
    }
    out
}

fn check_field(field: &'static str, len: usize, max: usize) -> Result<(), EnvelopeError> {
    if len > max {
        return Err(EnvelopeError::FieldTooLong { field, len, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MessageEnvelope {
        let mut envelope = MessageEnvelope::new(b"{\"a\":1}".to_vec(), "corr-1", CONTENT_TYPE_JSON);
        envelope.request_id = "req-1".into();
        envelope.error_code = 1;
        envelope
            .query_params
            .insert("ds-pushevent".into(), "true".into());
        envelope
            .query_params
            .insert("ds-returnevent".into(), "true".into());
        envelope
    }

    #[test]
    fn json_field_order_matches_go() {
        let json =
            String::from_utf8(MessageEnvelope::new(b"hi".to_vec(), "c", "text/plain").to_json())
                .unwrap();
        assert_eq!(
            json,
            r#"{"apiVersion":"v3","receivedTopic":"","correlationID":"c","requestID":"","errorCode":0,"payload":"aGk=","contentType":"text/plain"}"#
        );
    }

    #[test]
    fn json_null_payload_reads_as_empty() {
        let envelope =
            MessageEnvelope::from_json(br#"{"payload":null,"queryParams":null}"#).unwrap();
        assert!(envelope.payload.is_empty());
        assert!(envelope.query_params.is_empty());
    }

    #[test]
    fn json_escapes_html_characters_like_go() {
        let mut envelope = MessageEnvelope::new(Vec::new(), "a<b>&c\u{2028}", "text/plain");
        envelope.query_params.insert("k&".into(), "<v>".into());
        let json = String::from_utf8(envelope.to_json()).unwrap();
        assert!(
            json.contains(r#""correlationID":"a\u003cb\u003e\u0026c\u2028""#),
            "{json}"
        );
        assert!(json.contains(r#""k\u0026":"\u003cv\u003e""#), "{json}");
        assert_eq!(
            MessageEnvelope::from_json(json.as_bytes()).unwrap(),
            envelope
        );
    }

    #[test]
    fn json_rejects_bad_base64() {
        assert!(MessageEnvelope::from_json(br#"{"payload":"@@@"}"#).is_err());
    }

    #[test]
    fn body_round_trip_keeps_every_field() {
        let envelope = sample();
        let mut body = Vec::new();
        envelope.encode_body(&mut body);
        assert_eq!(body.len(), envelope.body_len());
        let decoded = MessageEnvelope::decode_body(body.clone(), "edgex/x").unwrap();
        assert_eq!(decoded.received_topic, "edgex/x");
        assert_eq!(
            MessageEnvelope {
                received_topic: String::new(),
                ..decoded
            },
            envelope
        );
    }

    /// Length of the encoded fields before the payload.
    fn fields_len(envelope: &MessageEnvelope) -> usize {
        envelope.body_len() - envelope.payload.len()
    }

    #[test]
    fn body_rejects_every_truncation_of_the_fields() {
        let envelope = sample();
        let mut body = Vec::new();
        envelope.encode_body(&mut body);
        for len in 0..fields_len(&envelope) {
            assert!(
                MessageEnvelope::decode_body(body[..len].to_vec(), "t").is_err(),
                "prefix of {len} bytes accepted"
            );
        }
    }

    #[test]
    fn body_payload_runs_to_the_end() {
        let envelope = sample();
        let mut body = Vec::new();
        envelope.encode_body(&mut body);
        body.push(b'!');
        let decoded = MessageEnvelope::decode_body(body, "t").unwrap();
        assert_eq!(decoded.payload, b"{\"a\":1}!");
    }

    #[test]
    fn body_keeps_null_and_empty_payloads_apart() {
        for is_null in [false, true] {
            let mut envelope = MessageEnvelope::new(Vec::new(), "c", CONTENT_TYPE_JSON);
            envelope.payload_is_null = is_null;
            let mut body = Vec::new();
            envelope.encode_body(&mut body);
            let decoded = MessageEnvelope::decode_body(body, "t").unwrap();
            assert_eq!(decoded.payload_is_null, is_null);
            assert!(decoded.payload.is_empty());
        }
    }

    #[test]
    fn body_rejects_a_null_flag_with_payload_bytes() {
        let mut envelope = MessageEnvelope::new(Vec::new(), "c", CONTENT_TYPE_JSON);
        envelope.payload_is_null = true;
        let mut body = Vec::new();
        envelope.encode_body(&mut body);
        body.push(0);
        assert_eq!(
            MessageEnvelope::decode_body(body, "t"),
            Err(Malformed::OutOfRange("payload null flag"))
        );
    }

    #[test]
    fn body_rejects_reserved_flags_and_other_versions() {
        let mut body = Vec::new();
        sample().encode_body(&mut body);
        let mut flagged = body.clone();
        flagged[1] |= 0x02;
        assert_eq!(
            MessageEnvelope::decode_body(flagged, "t"),
            Err(Malformed::ReservedFlags(0x02))
        );
        body[0] = 1;
        assert_eq!(
            MessageEnvelope::decode_body(body, "t"),
            Err(Malformed::UnsupportedVersion(1))
        );
    }

    #[test]
    fn body_round_trips_extreme_values() {
        for error_code in [0, 1, -1, 63, -64, 64, i64::MAX, i64::MIN] {
            let mut envelope = sample();
            envelope.error_code = error_code;
            envelope.correlation_id = "x".repeat(MAX_FIELD_LEN);
            let mut body = Vec::new();
            envelope.encode_body(&mut body);
            assert_eq!(body.len(), envelope.body_len(), "error code {error_code}");
            let decoded = MessageEnvelope::decode_body(body, "").unwrap();
            assert_eq!(decoded, envelope);
        }
    }

    #[test]
    fn body_rejects_a_field_over_its_limit() {
        let mut envelope = sample();
        envelope.api_version = "v".repeat(MAX_FIELD_LEN + 1);
        let mut body = Vec::new();
        envelope.encode_body(&mut body);
        assert_eq!(
            MessageEnvelope::decode_body(body, "t"),
            Err(Malformed::OutOfRange("apiVersion"))
        );
    }

    proptest::proptest! {
        /// The body encoding is canonical: whatever decodes encodes back to
        /// the same bytes, so two bodies never mean the same envelope. Inputs
        /// are valid bodies with bytes changed, inserted, stretched into
        /// longer varints or cut, which reach deeper than random bytes.
        #[test]
        fn decoded_bodies_encode_back_to_the_same_bytes(
            correlation in "[ -~]{0,200}",
            error_code in proptest::num::i64::ANY,
            params in proptest::collection::btree_map("[a-z]{1,8}", "[ -~]{0,150}", 0..4),
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY, 0u8..4), 0..4),
        ) {
            let mut envelope = MessageEnvelope::new(payload, correlation, CONTENT_TYPE_JSON);
            envelope.error_code = error_code;
            envelope.query_params = params;
            let mut body = Vec::new();
            envelope.encode_body(&mut body);
            for (position, byte, action) in edits {
                let position = position % (body.len() + 1);
                match action {
                    0 if position < body.len() => body[position] = byte,
                    1 => body.insert(position, byte),
                    // Spells a one-byte varint in two bytes.
                    2 if position < body.len() && body[position] < 0x80 => {
                        body[position] |= 0x80;
                        body.insert(position + 1, 0);
                    }
                    _ => body.truncate(position),
                }
            }
            if let Ok(decoded) = MessageEnvelope::decode_body(body.clone(), "t") {
                let mut encoded = Vec::new();
                decoded.encode_body(&mut encoded);
                proptest::prop_assert_eq!(encoded, body);
            }
        }
    }
}
