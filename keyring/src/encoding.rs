//! Helpers shared by the JSON forms and the signed byte encodings.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::{KeyringError, Result};

/// Buffer size reserved for secret JSON and its base64 fields. The key files
/// of this crate are under 200 bytes, so writing them never reallocates,
/// which would leave copies of the secret in freed memory.
const SECRET_BUFFER_CAPACITY: usize = 1024;

/// Encodes bytes as standard base64 with padding, the form of every key and
/// signature field in sealbus JSON files.
pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes a standard base64 field that must hold exactly `N` bytes.
///
/// The decoder rejects non-zero padding bits, so each byte string has exactly
/// one accepted encoding.
pub(crate) fn decode_base64_array<const N: usize>(
    what: &'static str,
    field: &'static str,
    text: &str,
) -> Result<[u8; N]> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|error| KeyringError::InvalidEncoding {
            what,
            field,
            encoding: "base64",
            reason: error.to_string(),
        })?;
    fixed_length(what, field, &bytes)
}

/// Decodes a hex field that must hold exactly `N` bytes. Both letter cases
/// are accepted and encoding always writes lowercase.
pub(crate) fn decode_hex_array<const N: usize>(
    what: &'static str,
    field: &'static str,
    text: &str,
) -> Result<[u8; N]> {
    let bytes = hex::decode(text).map_err(|error| KeyringError::InvalidEncoding {
        what,
        field,
        encoding: "hex",
        reason: error.to_string(),
    })?;
    fixed_length(what, field, &bytes)
}

pub(crate) fn fixed_length<const N: usize>(
    what: &'static str,
    field: &'static str,
    bytes: &[u8],
) -> Result<[u8; N]> {
    bytes.try_into().map_err(|_| KeyringError::InvalidLength {
        what,
        field,
        expected: N,
        found: bytes.len(),
    })
}

/// Encodes secret bytes as base64 into a buffer that is zeroized on drop.
pub(crate) fn encode_base64_secret(bytes: &[u8]) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::with_capacity(SECRET_BUFFER_CAPACITY));
    STANDARD.encode_string(bytes, &mut text);
    text
}

/// Decodes a base64 secret field of exactly `N` bytes. Error messages never
/// repeat any part of the field.
pub(crate) fn decode_base64_secret<const N: usize>(
    what: &'static str,
    field: &'static str,
    text: &str,
) -> Result<Zeroizing<[u8; N]>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(SECRET_BUFFER_CAPACITY));
    STANDARD
        .decode_vec(text, &mut bytes)
        .map_err(|_| KeyringError::InvalidEncoding {
            what,
            field,
            encoding: "base64",
            reason: "the text is not canonical padded base64".to_string(),
        })?;
    let array: [u8; N] = fixed_length(what, field, &bytes)?;
    Ok(Zeroizing::new(array))
}

/// Serializes a document that contains secret fields into a buffer that is
/// zeroized on drop.
pub(crate) fn secret_json<T: Serialize>(value: &T) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(SECRET_BUFFER_CAPACITY));
    serde_json::to_writer_pretty(&mut *out, value)
        .expect("a struct of strings always serializes to JSON");
    out.push(b'\n');
    out
}

/// Parses a JSON document that contains secret fields. The error names the
/// kind of problem and its position but never quotes the input.
pub(crate) fn parse_secret_json<T: DeserializeOwned>(
    what: &'static str,
    input: &[u8],
) -> Result<T> {
    serde_json::from_slice(input).map_err(|error| KeyringError::MalformedJson {
        what,
        reason: format!(
            "{:?} error at line {} column {}",
            error.classify(),
            error.line(),
            error.column()
        )
        .to_lowercase(),
    })
}

/// Parses a JSON document of at most `max_len` bytes.
pub(crate) fn parse_json<T: DeserializeOwned>(
    what: &'static str,
    input: &[u8],
    max_len: usize,
) -> Result<T> {
    if input.len() > max_len {
        return Err(KeyringError::InputTooLarge {
            what,
            size: input.len() as u64,
            max: max_len as u64,
        });
    }
    serde_json::from_slice(input).map_err(|error| KeyringError::MalformedJson {
        what,
        reason: error.to_string(),
    })
}

/// Appends `bytes` after its length as a big-endian `u16`. The caller has
/// checked that the length fits.
pub(crate) fn put_u16_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    let len =
        u16::try_from(bytes.len()).expect("length was checked against a limit below u16::MAX");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends `bytes` after its length as a big-endian `u32`. The caller has
/// checked that the length fits.
pub(crate) fn put_u32_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&count_u32(bytes.len()).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Converts a count that the caller has checked against a limit below
/// `u32::MAX`.
pub(crate) fn count_u32(count: usize) -> u32 {
    u32::try_from(count).expect("count was checked against a limit below u32::MAX")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rejects_wrong_length() {
        let text = encode_base64(&[1, 2, 3]);
        let result = decode_base64_array::<4>("certificate", "signature", &text);
        assert!(matches!(
            result,
            Err(KeyringError::InvalidLength {
                expected: 4,
                found: 3,
                ..
            })
        ));
    }

    #[test]
    fn base64_rejects_non_canonical_padding_bits() {
        // "AQI=" is [1, 2]. "AQJ=" decodes to the same bytes only if the
        // decoder ignores the low bits of the last character.
        assert!(decode_base64_array::<2>("t", "f", "AQI=").is_ok());
        let result = decode_base64_array::<2>("t", "f", "AQJ=");
        assert!(matches!(result, Err(KeyringError::InvalidEncoding { .. })));
    }

    #[test]
    fn hex_accepts_both_cases() {
        let lower = decode_hex_array::<2>("t", "f", "abcd").unwrap();
        let upper = decode_hex_array::<2>("t", "f", "ABCD").unwrap();
        assert_eq!(lower, upper);
        assert!(decode_hex_array::<2>("t", "f", "abc").is_err());
    }

    #[test]
    fn secret_parse_error_does_not_quote_input() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Key {
            secret: u64,
        }
        let input = br#"{"secret": "c2VjcmV0LXZhbHVl"}"#;
        let error = parse_secret_json::<Key>("key file", input).unwrap_err();
        let message = error.to_string();
        assert!(!message.contains("c2VjcmV0LXZhbHVl"), "{message}");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn secret_base64_round_trip() {
        let bytes = [7u8; 32];
        let text = encode_base64_secret(&bytes);
        let back = decode_base64_secret::<32>("key file", "secret", &text).unwrap();
        assert_eq!(*back, bytes);
        let error = decode_base64_secret::<32>("key file", "secret", "AAAA!AAA").unwrap_err();
        assert!(!error.to_string().contains('!'));
    }

    #[test]
    fn parse_json_enforces_limit() {
        let result: Result<serde_json::Value> = parse_json("test", b"[1, 2, 3]", 4);
        assert!(matches!(
            result,
            Err(KeyringError::InputTooLarge {
                size: 9,
                max: 4,
                ..
            })
        ));
    }
}
