//! Decoding of files into records, before validation.
//!
//! Both formats carry the fields of an upsert, by these names:
//!
//! | field       | Parquet column                                           | JSON Lines member      |
//! |-------------|----------------------------------------------------------|------------------------|
//! | `id`        | utf8 (or large/view), required, not null                 | string, required       |
//! | `embedding` | list, large list or fixed-size list of float32/float64   | array of numbers       |
//! | `document`  | utf8, optional                                           | string or null         |
//! | `uri`       | utf8, optional                                           | string or null         |
//! | `metadata`  | utf8 holding a JSON object, or a struct of scalar fields | object or null         |
//!
//! Any other column or member is rejected, so a misspelt field is not silently dropped.
//! A struct metadata field that is null in a row leaves the key out of that row's
//! metadata; a JSON metadata value `null` removes the key from an existing record, as in
//! an upsert through the API. Float64 embeddings are narrowed to float32 as the API
//! does (a value beyond float32's range becomes infinite and fails validation).

mod jsonl;
mod parquet;

use bytes::Bytes;
use serde_json::{Map, Value};

pub(crate) use self::jsonl::JsonlRecords;
pub(crate) use self::parquet::ParquetRecords;
use super::{Location, Rejection};
use crate::model::validate::metadata_from_json;
use crate::model::UpdateMetadata;

/// The fields a record may have.
pub const FIELDS: [&str; 5] = ["id", "embedding", "document", "uri", "metadata"];
/// How much of a value an error message quotes.
const QUOTE_CHARS: usize = 80;

/// A file format, chosen by the file name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.parquet`
    Parquet,
    /// `.jsonl` or `.ndjson`: one JSON object per line; blank lines are skipped.
    Jsonl,
}

impl Format {
    /// The format of the file `name` (a path or key; the extension of its last segment
    /// counts, in any case).
    pub fn from_name(name: &str) -> Result<Self, Rejection> {
        let file = name.rsplit('/').next().unwrap_or(name);
        let expected = "expected .parquet, .jsonl or .ndjson";
        match file.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => match ext.to_ascii_lowercase().as_str() {
                "parquet" => Ok(Format::Parquet),
                "jsonl" | "ndjson" => Ok(Format::Jsonl),
                _ => Err(Rejection::new(format!(
                    "unsupported file extension .{ext:.QUOTE_CHARS$} of \
                     {file:.QUOTE_CHARS$}: {expected}"
                ))),
            },
            _ => Err(Rejection::new(format!(
                "file {file:.QUOTE_CHARS$} has no extension: {expected}"
            ))),
        }
    }
}

/// One record as read from a file, not yet validated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawRecord {
    pub id: String,
    pub embedding: Vec<f32>,
    pub document: Option<String>,
    pub uri: Option<String>,
    pub metadata: Option<UpdateMetadata>,
}

/// The records of a file, in order, each with its location. Iteration ends after the
/// first error.
pub(crate) enum Records {
    Jsonl(JsonlRecords),
    Parquet(Box<ParquetRecords>),
}

impl Records {
    /// Opens `data` as a `format` file; fails if its header or schema is unusable.
    pub fn open(format: Format, data: Bytes) -> Result<Self, Rejection> {
        Ok(match format {
            Format::Jsonl => Records::Jsonl(JsonlRecords::open(data)),
            Format::Parquet => Records::Parquet(Box::new(ParquetRecords::open(data)?)),
        })
    }
}

impl Iterator for Records {
    type Item = Result<(Location, RawRecord), Rejection>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Records::Jsonl(r) => r.next(),
            Records::Parquet(r) => r.next(),
        }
    }
}

/// A value for an error message, cut to [`QUOTE_CHARS`] characters.
fn show(v: &Value) -> String {
    let text = v.to_string();
    format!("{text:.QUOTE_CHARS$}")
}

fn unknown_field(name: &str, what: &str) -> Rejection {
    Rejection::field(
        name,
        format!(
            "unknown {what} {name:.QUOTE_CHARS$}: expected {}",
            FIELDS.join(", ")
        ),
    )
}

fn required(field: &str) -> Rejection {
    Rejection::field(field, format!("{field} is required"))
}

/// Metadata from a JSON object, checked by the API's own conversion.
fn json_metadata(map: &Map<String, Value>) -> Result<UpdateMetadata, Rejection> {
    metadata_from_json(map, true).map_err(|e| Rejection::field("metadata", e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MetadataValue;

    pub(super) fn read(
        format: Format,
        data: Bytes,
    ) -> Result<Vec<(Location, RawRecord)>, Rejection> {
        Records::open(format, data)?.collect()
    }

    pub(super) fn read_err(format: Format, data: Bytes) -> Rejection {
        read(format, data).expect_err("the file is rejected")
    }

    pub(super) fn record(id: &str, embedding: &[f32]) -> RawRecord {
        RawRecord {
            id: id.into(),
            embedding: embedding.to_vec(),
            document: None,
            uri: None,
            metadata: None,
        }
    }

    pub(super) fn meta(pairs: &[(&str, Option<MetadataValue>)]) -> Option<UpdateMetadata> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn the_extension_picks_the_format() {
        for (name, format) in [
            ("ingest/t/d/c/a.parquet", Format::Parquet),
            ("x/B.PARQUET", Format::Parquet),
            ("a.b.jsonl", Format::Jsonl),
            ("dir.parquet/a.ndjson", Format::Jsonl),
        ] {
            assert_eq!(Format::from_name(name), Ok(format), "{name}");
        }
        let csv = Format::from_name("ingest/t/d/c/data.csv").unwrap_err();
        assert!(
            csv.reason.contains(".csv") && csv.reason.contains("data.csv"),
            "{csv}"
        );
        let gz = Format::from_name("data.jsonl.gz").unwrap_err();
        assert!(gz.reason.contains(".gz"), "{gz}");
        for name in ["ingest/t/d/c/README", "dir.jsonl/noext", ".jsonl"] {
            let r = Format::from_name(name).unwrap_err();
            assert!(r.reason.contains("no extension"), "{name}: {r}");
        }
    }
}
