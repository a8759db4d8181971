//! Bounded readers and writers for the binary encodings: big-endian
//! integers, and LEB128 varints inside the encrypted body.

use crate::error::Malformed;

/// Longest LEB128 encoding of a `u64`: ten groups of seven bits.
const MAX_VARINT_LEN: usize = 10;

/// Bytes the LEB128 encoding of `value` takes.
pub(crate) fn varint_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

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

    /// Reads an unsigned LEB128 integer of at most 10 bytes. Only the
    /// shortest encoding of a value is accepted, so every value has exactly
    /// one encoding.
    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for index in 0..MAX_VARINT_LEN {
            let byte = self.u8(what)?;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte holds only the top bit of a u64.
            if index == MAX_VARINT_LEN - 1 && bits > 1 {
                return Err(Malformed::OutOfRange(what));
            }
            value |= bits << (7 * index);
            if byte & 0x80 == 0 {
                // A last byte of zero after others would be a longer
                // encoding of the same value.
                if byte == 0 && index > 0 {
                    return Err(Malformed::OutOfRange(what));
                }
                return Ok(value);
            }
        }
        Err(Malformed::OutOfRange(what))
    }

    /// Reads a zigzag-mapped signed LEB128 integer.
    pub(crate) fn signed_varint(&mut self, what: &'static str) -> Result<i64, Malformed> {
        let zigzag = self.varint(what)?;
        Ok((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64))
    }

    /// Reads a varint length of at most `max` followed by that many bytes
    /// of UTF-8 text.
    pub(crate) fn text(&mut self, max: usize, what: &'static str) -> Result<&'a str, Malformed> {
        let len = self.varint(what)?;
        if len > max as u64 {
            return Err(Malformed::OutOfRange(what));
        }
        let bytes = self.take(len as usize, what)?;
        std::str::from_utf8(bytes).map_err(|_| Malformed::InvalidUtf8(what))
    }

    /// Returns everything not read yet and moves to the end.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let start = self.position;
        self.position = self.bytes.len();
        &self.bytes[start..]
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
    fn put_varint(&mut self, value: u64);
    fn put_signed_varint(&mut self, value: i64);
    fn put_name(&mut self, name: &str);
    fn put_text(&mut self, text: &str);
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

    fn put_varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.push(value as u8);
    }

    fn put_signed_varint(&mut self, value: i64) {
        self.put_varint(((value << 1) ^ (value >> 63)) as u64);
    }

    fn put_name(&mut self, name: &str) {
        // Names are validated to at most MAX_NAME_LEN (64) bytes before this.
        self.push(name.len() as u8);
        self.extend_from_slice(name.as_bytes());
    }

    fn put_text(&mut self, text: &str) {
        self.put_varint(text.len() as u64);
        self.extend_from_slice(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_in_their_shortest_form() {
        let values = [0, 1, 127, 128, 300, 16_383, 16_384, u64::MAX / 2, u64::MAX];
        for value in values {
            let mut out = Vec::new();
            out.put_varint(value);
            assert_eq!(out.len(), varint_len(value), "{value}");
            let mut reader = Reader::new(&out);
            assert_eq!(reader.varint("v"), Ok(value));
            assert_eq!(reader.remaining(), 0);
        }
    }

    #[test]
    fn signed_varints_round_trip() {
        for value in [0, 1, -1, 63, -64, 64, -65, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            out.put_signed_varint(value);
            assert_eq!(Reader::new(&out).signed_varint("v"), Ok(value), "{value}");
        }
        let mut out = Vec::new();
        out.put_signed_varint(-1);
        assert_eq!(out, [0x01]);
    }

    #[test]
    fn varint_rejects_longer_encodings_and_overflow() {
        let rejected: [&[u8]; 5] = [
            &[0x80, 0x00],
            &[0xff, 0x80, 0x00],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
            ],
            &[0x80],
        ];
        for bytes in rejected {
            assert!(Reader::new(bytes).varint("v").is_err(), "{bytes:02x?}");
        }
    }
}
