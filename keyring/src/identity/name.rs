//! Validated service names.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{preview, KeyringError, Result};

/// Maximum service name length in bytes. The certificate encoding stores the
/// length in one byte, and names also appear in control topics and logs.
pub const MAX_NAME_LEN: usize = 64;

/// The name of a service identity: 1 to [`MAX_NAME_LEN`] bytes from
/// `[A-Za-z0-9._-]`.
///
/// The character set keeps names safe to use as one MQTT topic level, one
/// Redis key segment and a log field without escaping.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

impl ServiceName {
    /// Validates `name` and wraps it.
    ///
    /// # Errors
    ///
    /// [`KeyringError::InvalidName`] if the name is empty, longer than
    /// [`MAX_NAME_LEN`] bytes, or contains a character outside `[A-Za-z0-9._-]`.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate_name(&name)?;
        Ok(ServiceName(name))
    }

    /// Returns the name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate_name(name: &str) -> Result<()> {
    let reject = |reason| {
        Err(KeyringError::InvalidName {
            name: preview(name),
            reason,
        })
    };

    if name.is_empty() {
        return reject("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return reject("it is too long");
    }
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-');
    if !name.bytes().all(allowed) {
        return reject("it contains a character that is not allowed");
    }
    Ok(())
}

impl TryFrom<String> for ServiceName {
    type Error = KeyringError;

    fn try_from(name: String) -> Result<Self> {
        ServiceName::new(name)
    }
}

impl TryFrom<&str> for ServiceName {
    type Error = KeyringError;

    fn try_from(name: &str) -> Result<Self> {
        ServiceName::new(name)
    }
}

impl std::str::FromStr for ServiceName {
    type Err = KeyringError;

    fn from_str(name: &str) -> Result<Self> {
        ServiceName::new(name)
    }
}

impl From<ServiceName> for String {
    fn from(name: ServiceName) -> String {
        name.0
    }
}

impl AsRef<str> for ServiceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

// Lets maps keyed by `ServiceName` be looked up with a `&str`. The derived
// `Ord`, `Eq` and `Hash` are those of the inner `String`, as `Borrow` requires.
impl Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceName({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_allowed_names() {
        let longest = "n".repeat(MAX_NAME_LEN);
        for name in [
            "a",
            "core-data",
            "device_modbus.1",
            "A-Z_09",
            longest.as_str(),
        ] {
            let parsed = ServiceName::new(name).expect(name);
            assert_eq!(parsed.as_str(), name);
            assert_eq!(parsed.to_string(), name);
        }
    }

    #[test]
    fn rejects_invalid_names() {
        let too_long = "n".repeat(MAX_NAME_LEN + 1);
        let invalid = [
            "",
            "a b",
            "a/b",
            "a+",
            "a#",
            "ü",
            "a\0",
            "a\n",
            too_long.as_str(),
        ];
        for name in invalid {
            let result = ServiceName::new(name);
            assert!(
                matches!(result, Err(KeyringError::InvalidName { .. })),
                "{name:?} should be rejected"
            );
        }
    }

    #[test]
    fn serde_round_trip_validates() {
        let name = ServiceName::new("core-data").unwrap();
        let json = serde_json::to_string(&name).unwrap();
        assert_eq!(json, "\"core-data\"");
        let back: ServiceName = serde_json::from_str(&json).unwrap();
        assert_eq!(back, name);

        let bad: std::result::Result<ServiceName, _> = serde_json::from_str("\"a b\"");
        assert!(bad.is_err());
    }

    #[test]
    fn map_lookup_by_str() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(ServiceName::new("core-data").unwrap(), 1);
        assert_eq!(map.get("core-data"), Some(&1));
        assert_eq!(map.get("core"), None);
    }
}
