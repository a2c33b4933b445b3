//! The strings of an immutable segment's rows, each field in one buffer
//! ([`PackedStrings`]): a loaded segment's ids, and the documents a `where_document`
//! filter tests (read from the records object for that request).

use fixedbitset::FixedBitSet;

use crate::error::{Error, Result};

/// Rows' optional strings (ids, documents, uris of an immutable segment) in one buffer:
/// a row costs its bytes and 8 bytes of offset, where a `String` costs 24 bytes, an
/// allocation and the allocator's rounding — and a segment's long-lived rows no longer
/// lie scattered between the short-lived allocations of decoding it, which kept freed
/// pages from being returned.
#[derive(Debug, Clone, Default)]
pub struct PackedStrings {
    text: String,
    /// Row `i`'s string is `text[ends[i - 1]..ends[i]]` (from 0 for row 0); empty when no
    /// row has a string.
    ends: Vec<u64>,
    /// Rows that have a string (an empty string is a string too).
    present: FixedBitSet,
    len: usize,
}

impl PackedStrings {
    pub fn pack<'a>(values: impl ExactSizeIterator<Item = Option<&'a str>>) -> Self {
        let mut values = values;
        Self::pack_with(values.len(), |_, buf| {
            Ok(match values.next().flatten() {
                Some(s) => {
                    buf.extend_from_slice(s.as_bytes());
                    true
                }
                None => false,
            })
        })
        .expect("the rows are strings")
    }

    /// Rows `0..len`, each written straight into the one buffer by `write`, which appends
    /// row `row`'s string (UTF-8) and says whether the row has one.
    fn pack_with(
        len: usize,
        mut write: impl FnMut(usize, &mut Vec<u8>) -> Result<bool>,
    ) -> Result<Self> {
        let mut text = Vec::new();
        let mut ends = Vec::with_capacity(len);
        let mut present = FixedBitSet::with_capacity(len);
        for row in 0..len {
            if write(row, &mut text)? {
                present.insert(row);
            }
            ends.push(text.len() as u64);
        }
        if present.is_clear() {
            ends = Vec::new();
        }
        let mut text = String::from_utf8(text)
            .map_err(|e| Error::internal_from("packed strings are not UTF-8", e))?;
        text.shrink_to_fit();
        Ok(Self {
            text,
            ends,
            present,
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row `row`'s string. Panics if `row >= len()`.
    pub fn get(&self, row: usize) -> Option<&str> {
        assert!(row < self.len, "row {row} of {}", self.len);
        if !self.present.contains(row) {
            return None;
        }
        let start = if row == 0 { 0 } else { self.ends[row - 1] } as usize;
        Some(&self.text[start..self.ends[row] as usize])
    }

    /// Every row's string, in row order.
    pub fn iter(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        (0..self.len).map(|row| self.get(row))
    }

    /// Heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.text.capacity() + self.ends.capacity() * 8 + self.present.len() / 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_come_back_as_they_went_in() {
        let values = [Some("a"), None, Some(""), Some("héllo"), None];
        let packed = PackedStrings::pack(values.iter().copied());
        assert_eq!(packed.len(), 5);
        assert_eq!(packed.iter().collect::<Vec<_>>(), values.to_vec());
        assert_eq!(packed.get(3), Some("héllo"));
        assert_eq!(packed.get(1), None);
        assert_eq!(packed.get(2), Some(""));
    }

    #[test]
    fn rows_without_strings_cost_no_offsets() {
        let packed = PackedStrings::pack(std::iter::repeat_n(None, 1000));
        assert_eq!(packed.len(), 1000);
        assert!(packed.iter().all(|v| v.is_none()));
        assert!(packed.memory_bytes() < 200, "{}", packed.memory_bytes());
        let empty = PackedStrings::pack(std::iter::empty());
        assert!(empty.is_empty());
    }

    #[test]
    #[should_panic(expected = "row 2 of 2")]
    fn a_row_past_the_end_panics() {
        PackedStrings::pack([Some("a"), None].into_iter()).get(2);
    }
}
