//! Bounded big-endian readers and writers for the binary encodings.

use crate::error::Malformed;

/// Reads fields from an untrusted byte slice, failing instead of panicking
/// when a length runs past the end.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.position
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    pub(crate) fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        if len > self.remaining() {
            return Err(Malformed::Truncated(what));
        }
        let start = self.position;
        self.position += len;
        Ok(&self.bytes[start..self.position])
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], Malformed> {
        let slice = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, Malformed> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, Malformed> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// Reads a `u8` length followed by that many bytes of a service name.
    pub(crate) fn name(&mut self, what: &'static str) -> Result<&'a str, Malformed> {
        let len = usize::from(self.u8(what)?);
        if len == 0 || len > crate::limits::MAX_NAME_LEN {
            return Err(Malformed::OutOfRange(what));
        }
        let bytes = self.take(len, what)?;
        let name = std::str::from_utf8(bytes).map_err(|_| Malformed::InvalidUtf8(what))?;
        if !crate::is_valid_name(name) {
            return Err(Malformed::OutOfRange(what));
        }
        Ok(name)
    }

    /// Reads a `u16` length followed by that many bytes of UTF-8 text.
    pub(crate) fn string16(
        &mut self,
        max: usize,
        what: &'static str,
    ) -> Result<&'a str, Malformed> {
        let len = usize::from(self.u16(what)?);
        if len > max {
            return Err(Malformed::OutOfRange(what));
        }
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|_| Malformed::InvalidUtf8(what))
    }

    pub(crate) fn finish(&self, what: &'static str) -> Result<(), Malformed> {
        if self.remaining() != 0 {
            return Err(Malformed::TrailingBytes(what));
        }
        Ok(())
    }
}

/// Appends big-endian fields to a byte vector. Lengths are checked by the
/// callers against the limits before they write.
pub(crate) trait Writer {
    fn put_u8(&mut self, value: u8);
    fn put_u16(&mut self, value: u16);
    fn put_u32(&mut self, value: u32);
    fn put_u64(&mut self, value: u64);
    fn put_i64(&mut self, value: i64);
    fn put_name(&mut self, name: &str);
    fn put_string16(&mut self, text: &str);
}

impl Writer for Vec<u8> {
    fn put_u8(&mut self, value: u8) {
        self.push(value);
    }

    fn put_u16(&mut self, value: u16) {
        self.extend_from_slice(&value.to_be_bytes());
    }

    fn put_u32(&mut self, value: u32) {
        self.extend_from_slice(&value.to_be_bytes());
    }

    fn put_u64(&mut self, value: u64) {
        self.extend_from_slice(&value.to_be_bytes());
    }

    fn put_i64(&mut self, value: i64) {
        self.extend_from_slice(&value.to_be_bytes());
    }

    fn put_name(&mut self, name: &str) {
        // Names are validated to at most MAX_NAME_LEN (64) bytes before this.
        self.push(name.len() as u8);
        self.extend_from_slice(name.as_bytes());
    }

    fn put_string16(&mut self, text: &str) {
        // Strings are validated to at most MAX_FIELD_LEN or MAX_TOPIC_LEN bytes.
        self.put_u16(text.len() as u16);
        self.extend_from_slice(text.as_bytes());
    }
}
