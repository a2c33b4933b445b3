//! A segment's records, format 2 (`records.bin`): every field of every row, laid out so
//! that one field of a few rows can be read by range without the rest, and a whole field
//! (all ids, all metadata) in one sequential read. Embeddings are not here: they live in
//! the segment's vectors object.
//!
//! Layout, little-endian:
//!
//! ```text
//! header (96 bytes):
//!   magic "CHRREC2\0" (8) | version u32 = 2 | rows n u32
//!   5 × section (start u64, length u64), in this order:
//!     offsets    n × u64: each row's insertion-order offset
//!     ids        a column (below), never null
//!     metadatas  a column of JSON objects (as in format 1)
//!     documents  a column
//!     uris       a column
//! a column:
//!   ends   n × u64: where row r's bytes end (its start is row r−1's end, 0 for row 0),
//!          with the top bit set when row r's value is null (it then has no bytes)
//!   bytes  the values, UTF-8, one after the other
//! ```
//!
//! Readers check everything (section bounds, monotonic ends, UTF-8, JSON) and return an
//! error, never panic, on bytes that do not hold.

use std::ops::Range;

use super::check_value;
use crate::error::{Error, Result};
use crate::model::record::{Metadata, Record};

pub const MAGIC: [u8; 8] = *b"CHRREC2\0";
pub const VERSION: u32 = 2;
pub const HEADER_LEN: u64 = 96;
const NULL: u64 = 1 << 63;

/// The sections of a records file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Offsets = 0,
    Ids = 1,
    Metadatas = 2,
    Documents = 3,
    Uris = 4,
}

/// The string-valued fields, each a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Ids,
    Metadatas,
    Documents,
    Uris,
}

impl Field {
    fn section(self) -> Section {
        match self {
            Field::Ids => Section::Ids,
            Field::Metadatas => Section::Metadatas,
            Field::Documents => Section::Documents,
            Field::Uris => Section::Uris,
        }
    }
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::internal(format!("corrupt records file: {what}"))
}

/// Where each section of a records file is, from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub rows: usize,
    sections: [Range<u64>; 5],
}

impl Layout {
    /// Parses the first [`HEADER_LEN`] bytes of a records file of `len` bytes.
    pub fn parse(header: &[u8], len: u64) -> Result<Self> {
        if header.len() < HEADER_LEN as usize {
            return Err(corrupt(format!(
                "{} bytes is shorter than the header",
                header.len()
            )));
        }
        if header[..8] != MAGIC {
            return Err(corrupt("bad magic bytes"));
        }
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let long = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
        if word(8) != VERSION {
            return Err(corrupt(format!("unsupported version {}", word(8))));
        }
        let rows = word(12) as usize;
        let mut sections: [Range<u64>; 5] = Default::default();
        let mut at = HEADER_LEN;
        for (s, section) in sections.iter_mut().enumerate() {
            let (start, length) = (long(16 + s * 16), long(24 + s * 16));
            let end = start
                .checked_add(length)
                .filter(|&e| start == at && e <= len)
                .ok_or_else(|| corrupt(format!("section {s} out of place")))?;
            *section = start..end;
            at = end;
        }
        if at != len {
            return Err(corrupt(format!("{} trailing bytes", len - at)));
        }
        let layout = Self { rows, sections };
        let expected = rows as u64 * 8;
        if layout.section(Section::Offsets).end - layout.section(Section::Offsets).start != expected
        {
            return Err(corrupt("offsets section length"));
        }
        for f in [Field::Ids, Field::Metadatas, Field::Documents, Field::Uris] {
            let s = layout.section(f.section());
            if s.end - s.start < expected {
                return Err(corrupt(format!("{f:?} column shorter than its ends")));
            }
        }
        Ok(layout)
    }

    pub fn section(&self, s: Section) -> Range<u64> {
        self.sections[s as usize].clone()
    }

    /// Where a column's `ends` array is.
    pub fn ends(&self, field: Field) -> Range<u64> {
        let s = self.section(field.section());
        s.start..s.start + self.rows as u64 * 8
    }

    /// Where a column's value bytes are.
    pub fn values(&self, field: Field) -> Range<u64> {
        let s = self.section(field.section());
        s.start + self.rows as u64 * 8..s.end
    }

    /// The bytes of `ends` that say where row `row`'s value is: its own end and the one
    /// before it.
    pub fn ends_of(&self, field: Field, row: u32) -> Range<u64> {
        let e = self.ends(field);
        let r = u64::from(row);
        e.start + r.saturating_sub(1) * 8..e.start + (r + 1) * 8
    }

    /// Where row `row`'s value is in the file, from the bytes [`Layout::ends_of`] named;
    /// `None` for a null value.
    pub fn value_of(&self, field: Field, row: u32, ends: &[u8]) -> Result<Option<Range<u64>>> {
        let read = |i: usize| -> Result<u64> {
            ends.get(i * 8..i * 8 + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| corrupt("short ends"))
        };
        let (start, end) = if row == 0 {
            (0, read(0)?)
        } else {
            (read(0)? & !NULL, read(1)?)
        };
        if end & NULL != 0 {
            return Ok(None);
        }
        let values = self.values(field);
        if start > end || values.start + end > values.end {
            return Err(corrupt(format!("{field:?} of row {row} out of range")));
        }
        Ok(Some(values.start + start..values.start + end))
    }
}

/// Encodes records (with their insertion offsets, in row order) without their
/// embeddings.
pub fn encode(rows: &[(u64, &Record)]) -> Result<Vec<u8>> {
    let n = u32::try_from(rows.len()).map_err(|_| Error::invalid("too many rows"))?;
    let mut sections: Vec<Vec<u8>> = Vec::with_capacity(5);
    sections.push(rows.iter().flat_map(|(o, _)| o.to_le_bytes()).collect());
    sections.push(column(rows.iter().map(|(_, r)| Some(r.id.as_bytes()))));
    let mut json = Vec::new();
    let mut metadata = Vec::with_capacity(rows.len());
    for (_, r) in rows {
        match &r.metadata {
            None => metadata.push(None),
            Some(m) => {
                for (k, v) in m {
                    check_value(k, v)?;
                }
                json.clear();
                serde_json::to_writer(&mut json, m)
                    .map_err(|e| Error::internal_from("cannot serialize metadata", e))?;
                metadata.push(Some(json.clone()));
            }
        }
    }
    sections.push(column(metadata.iter().map(|m| m.as_deref())));
    sections.push(column(
        rows.iter()
            .map(|(_, r)| r.document.as_deref().map(str::as_bytes)),
    ));
    sections.push(column(
        rows.iter()
            .map(|(_, r)| r.uri.as_deref().map(str::as_bytes)),
    ));
    let total: usize = sections.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(HEADER_LEN as usize + total);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    let mut at = HEADER_LEN;
    for s in &sections {
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        at += s.len() as u64;
    }
    debug_assert_eq!(out.len() as u64, HEADER_LEN);
    for s in sections {
        out.extend_from_slice(&s);
    }
    Ok(out)
}

fn column<'a>(values: impl ExactSizeIterator<Item = Option<&'a [u8]>> + Clone) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 8);
    let mut end = 0u64;
    for v in values.clone() {
        match v {
            Some(b) => {
                end += b.len() as u64;
                out.extend_from_slice(&end.to_le_bytes());
            }
            None => out.extend_from_slice(&(end | NULL).to_le_bytes()),
        }
    }
    for b in values.flatten() {
        out.extend_from_slice(b);
    }
    out
}

/// The values of a whole column, as read from its section.
pub fn decode_column(section: &[u8], rows: usize) -> Result<Vec<Option<&str>>> {
    let ends_len = rows.checked_mul(8).filter(|&l| l <= section.len());
    let ends_len = ends_len.ok_or_else(|| corrupt("column shorter than its ends"))?;
    let (ends, bytes) = section.split_at(ends_len);
    let mut out = Vec::with_capacity(rows);
    let mut start = 0usize;
    for e in ends.chunks_exact(8) {
        let e = u64::from_le_bytes(e.try_into().expect("8 bytes"));
        if e & NULL != 0 {
            if e & !NULL != start as u64 {
                return Err(corrupt("a null value moves the end"));
            }
            out.push(None);
            continue;
        }
        let end = usize::try_from(e)
            .ok()
            .filter(|&e| e >= start && e <= bytes.len())
            .ok_or_else(|| corrupt("column ends out of order"))?;
        let text = std::str::from_utf8(&bytes[start..end]).map_err(|_| corrupt("not UTF-8"))?;
        out.push(Some(text));
        start = end;
    }
    if start != bytes.len() {
        return Err(corrupt("column has trailing bytes"));
    }
    Ok(out)
}

/// A metadata value as stored: a JSON object.
pub fn decode_metadata(text: &str) -> Result<Metadata> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("metadata: {e}")))
}

/// The offsets section.
pub fn decode_offsets(section: &[u8], rows: usize) -> Result<Vec<u64>> {
    if section.len() != rows * 8 {
        return Err(corrupt("offsets section length"));
    }
    Ok(section
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Everything a records file holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    pub offsets: Vec<u64>,
    pub ids: Vec<String>,
    pub metadatas: Vec<Option<Metadata>>,
    pub documents: Vec<Option<String>>,
    pub uris: Vec<Option<String>>,
}

/// Decodes a whole records file.
pub fn decode(bytes: &[u8]) -> Result<Rows> {
    let layout = Layout::parse(bytes, bytes.len() as u64)?;
    let section = |s: Section| {
        let r = layout.section(s);
        &bytes[r.start as usize..r.end as usize]
    };
    let n = layout.rows;
    let owned = |v: Vec<Option<&str>>| v.into_iter().map(|s| s.map(str::to_owned)).collect();
    let ids: Vec<Option<&str>> = decode_column(section(Section::Ids), n)?;
    if ids.iter().any(Option::is_none) {
        return Err(corrupt("a null id"));
    }
    Ok(Rows {
        offsets: decode_offsets(section(Section::Offsets), n)?,
        ids: ids.into_iter().flatten().map(str::to_owned).collect(),
        metadatas: decode_column(section(Section::Metadatas), n)?
            .into_iter()
            .map(|m| m.map(decode_metadata).transpose())
            .collect::<Result<_>>()?,
        documents: owned(decode_column(section(Section::Documents), n)?),
        uris: owned(decode_column(section(Section::Uris), n)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::MetadataValue;

    fn record(id: &str, doc: Option<&str>, uri: Option<&str>, meta: Option<Metadata>) -> Record {
        Record {
            id: id.into(),
            embedding: vec![1.0],
            document: doc.map(Into::into),
            uri: uri.map(Into::into),
            metadata: meta,
        }
    }

    fn sample() -> Vec<(u64, Record)> {
        let meta: Metadata = [
            ("n".to_owned(), MetadataValue::Int(3)),
            ("f".to_owned(), MetadataValue::Float(1.0)),
            ("s".to_owned(), MetadataValue::Str("héllo".into())),
        ]
        .into();
        vec![
            (0, record("a", Some("first"), None, Some(meta))),
            (7, record("ü-🦀", None, Some("s3://x"), None)),
            (9, record("c", Some(""), Some(""), Some(Metadata::new()))),
            (12, record("d", None, None, None)),
        ]
    }

    #[test]
    fn round_trips_and_reads_single_values() {
        let rows = sample();
        let refs: Vec<(u64, &Record)> = rows.iter().map(|(o, r)| (*o, r)).collect();
        let bytes = encode(&refs).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.offsets, [0, 7, 9, 12]);
        assert_eq!(back.ids, ["a", "ü-🦀", "c", "d"]);
        for (i, (_, r)) in rows.iter().enumerate() {
            assert_eq!(back.documents[i], r.document);
            assert_eq!(back.uris[i], r.uri);
            assert_eq!(back.metadatas[i], r.metadata, "row {i}");
        }
        // One value at a time, as a ranged reader would.
        let layout = Layout::parse(&bytes[..HEADER_LEN as usize], bytes.len() as u64).unwrap();
        for field in [Field::Ids, Field::Documents, Field::Uris] {
            for row in 0..4u32 {
                let e = layout.ends_of(field, row);
                let at = layout
                    .value_of(field, row, &bytes[e.start as usize..e.end as usize])
                    .unwrap();
                let got = at.map(|r| {
                    std::str::from_utf8(&bytes[r.start as usize..r.end as usize])
                        .unwrap()
                        .to_owned()
                });
                let want = match field {
                    Field::Ids => Some(back.ids[row as usize].clone()),
                    Field::Documents => back.documents[row as usize].clone(),
                    _ => back.uris[row as usize].clone(),
                };
                assert_eq!(got, want, "{field:?} row {row}");
            }
        }
        let empty = encode(&[]).unwrap();
        assert_eq!(decode(&empty).unwrap(), Rows::default());
    }

    #[test]
    fn damage_is_an_error_never_a_panic() {
        let rows = sample();
        let refs: Vec<(u64, &Record)> = rows.iter().map(|(o, r)| (*o, r)).collect();
        let bytes = encode(&refs).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                // Flips inside values may decode to other values; they must not panic.
                let _ = decode(&bad);
            }
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
    }
}
