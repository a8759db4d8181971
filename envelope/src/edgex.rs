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

use crate::codec::{Reader, Writer};
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
const BODY_VERSION: u8 = 1;

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
    /// `receivedTopic`, which the receiver fills in).
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.put_u8(BODY_VERSION);
        out.put_string16(&self.api_version);
        out.put_string16(&self.correlation_id);
        out.put_string16(&self.request_id);
        out.put_i64(self.error_code);
        out.put_string16(&self.content_type);
        out.put_u16(self.query_params.len() as u16);
        for (key, value) in &self.query_params {
            out.put_string16(key);
            out.put_string16(value);
        }
        out.put_u8(u8::from(self.payload_is_null && self.payload.is_empty()));
        out.put_u32(self.payload.len() as u32);
        out.extend_from_slice(&self.payload);
    }

    /// Returns the encoded body length, so buffers are sized once.
    pub(crate) fn body_len(&self) -> usize {
        let params: usize = self
            .query_params
            .iter()
            .map(|(key, value)| 4 + key.len() + value.len())
            .sum();
        1 + 2
            + self.api_version.len()
            + 2
            + self.correlation_id.len()
            + 2
            + self.request_id.len()
            + 8
            + 2
            + self.content_type.len()
            + 2
            + params
            + 1
            + 4
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
        let api_version = reader.string16(MAX_FIELD_LEN, "apiVersion")?.to_owned();
        let correlation_id = reader.string16(MAX_FIELD_LEN, "correlationID")?.to_owned();
        let request_id = reader.string16(MAX_FIELD_LEN, "requestID")?.to_owned();
        let error_code = reader.i64("errorCode")?;
        let content_type = reader.string16(MAX_FIELD_LEN, "contentType")?.to_owned();

        let param_count = usize::from(reader.u16("queryParams count")?);
        if param_count > MAX_QUERY_PARAMS {
            return Err(Malformed::OutOfRange("queryParams count"));
        }
        let mut query_params = BTreeMap::new();
        let mut previous_key: Option<&str> = None;
        for _ in 0..param_count {
            let key = reader.string16(MAX_FIELD_LEN, "queryParams key")?;
            let value = reader.string16(MAX_FIELD_LEN, "queryParams value")?;
            // Keys are written in sorted order, so one encoding per envelope.
            if previous_key.is_some_and(|previous| previous >= key) {
                return Err(Malformed::OutOfRange("queryParams order"));
            }
            previous_key = Some(key);
            query_params.insert(key.to_owned(), value.to_owned());
        }

        let payload_is_null = match reader.u8("payload null flag")? {
            0 => false,
            1 => true,
            _ => return Err(Malformed::OutOfRange("payload null flag")),
        };
        let payload_len = reader.u32("payload length")? as usize;
        if payload_is_null && payload_len != 0 {
            return Err(Malformed::OutOfRange("payload null flag"));
        }
        let payload_start = reader.position();
        reader.take(payload_len, "payload")?;
        reader.finish("body")?;
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

    #[test]
    fn body_rejects_every_truncation() {
        let mut body = Vec::new();
        sample().encode_body(&mut body);
        for len in 0..body.len() {
            assert!(
                MessageEnvelope::decode_body(body[..len].to_vec(), "t").is_err(),
                "prefix of {len} bytes accepted"
            );
        }
    }

    #[test]
    fn body_rejects_trailing_bytes() {
        let mut body = Vec::new();
        sample().encode_body(&mut body);
        body.push(0);
        assert_eq!(
            MessageEnvelope::decode_body(body, "t"),
            Err(Malformed::TrailingBytes("body"))
        );
    }
}
