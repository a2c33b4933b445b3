//! Validation of a whole file, before anything is written.
//!
//! Each record goes through the API's own validation of an upsert
//! ([`WriteBatch::into_operations`]) as a batch of one. What a batch of one cannot see is
//! checked across the file here: ids unique in the whole file, and one embedding
//! dimension, the collection's when it has one. When a record fails, the field at fault
//! is found by checking its fields one by one with the same validation.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;

use super::parse::{Format, RawRecord, Records};
use super::{Location, Rejection, MAX_INGEST_FILE_BYTES};
use crate::engine::check_collection_dimension;
use crate::error::Error;
use crate::model::validate::{
    validate_embedding, validate_id, validate_update_metadata, WriteBatch,
};
use crate::model::{OpKind, Operation};

/// A file whose every record is a valid upsert, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedFile {
    format: Format,
    ops: Vec<Operation>,
    dimension: Option<usize>,
}

impl ValidatedFile {
    pub fn format(&self) -> Format {
        self.format
    }

    /// The number of records.
    pub fn records(&self) -> usize {
        self.ops.len()
    }

    /// The embeddings' dimension (`None` for a file without records).
    pub fn dimension(&self) -> Option<usize> {
        self.dimension
    }

    pub(crate) fn into_operations(self) -> Vec<Operation> {
        self.ops
    }
}

/// Rejects a file of `size` bytes when larger than [`MAX_INGEST_FILE_BYTES`] (to check
/// before reading it).
pub fn check_file_size(size: u64) -> Result<(), Rejection> {
    if size > MAX_INGEST_FILE_BYTES {
        return Err(Rejection::new(format!(
            "file of {size} bytes exceeds the limit of {MAX_INGEST_FILE_BYTES}: split it into \
             smaller files"
        )));
    }
    Ok(())
}

/// Decodes and validates the file `name` (its extension picks the format) for a
/// collection of dimension `collection_dimension` (`None`: not fixed yet). Returns the
/// first problem, with its line or row and field. CPU-bound: call it on a blocking
/// thread.
pub fn validate_file(
    name: &str,
    data: impl Into<Bytes>,
    collection_dimension: Option<u32>,
) -> Result<ValidatedFile, Rejection> {
    let format = Format::from_name(name)?;
    let data: Bytes = data.into();
    check_file_size(data.len() as u64)?;
    // The Parquet decoder trusts lengths read from the file; a malformed file must be
    // rejected, not abort the caller.
    catch_unwind(AssertUnwindSafe(|| {
        validate_records(format, data, collection_dimension)
    }))
    .unwrap_or_else(|_| {
        Err(Rejection::new(
            "the file cannot be decoded: the decoder failed on malformed content",
        ))
    })
}

fn validate_records(
    format: Format,
    data: Bytes,
    collection_dimension: Option<u32>,
) -> Result<ValidatedFile, Rejection> {
    let mut ops = Vec::new();
    let mut seen: HashMap<String, Location> = HashMap::new();
    let mut first_dimension: Option<(usize, Location)> = None;
    for (index, item) in Records::open(format, data.clone())?.enumerate() {
        let (at, record) = item?;
        let (op, dim) = match check_record(record) {
            Ok(checked) => checked,
            Err(e) => {
                drop((ops, seen));
                return Err(explain(format, data, index, at, &e));
            }
        };
        match seen.entry(op.id.clone()) {
            Entry::Occupied(first) => {
                return Err(Rejection::field(
                    "id",
                    format!("{} (first at {})", duplicate_message(&op.id), first.get()),
                )
                .at(at))
            }
            Entry::Vacant(v) => {
                v.insert(at);
            }
        }
        check_collection_dimension(collection_dimension, Some(dim))
            .map_err(|e| Rejection::field("embedding", e.message()).at(at))?;
        match first_dimension {
            None => first_dimension = Some((dim, at)),
            Some((first, first_at)) if first != dim => {
                return Err(Rejection::field(
                    "embedding",
                    format!(
                        "Inconsistent dimensions in provided embeddings: {dim} here, \
                         {first} at {first_at}"
                    ),
                )
                .at(at))
            }
            Some(_) => {}
        }
        ops.push(op);
    }
    Ok(ValidatedFile {
        format,
        ops,
        dimension: first_dimension.map(|(d, _)| d),
    })
}

/// One record validated as the API validates an upsert of it: its operation and its
/// embedding's dimension.
fn check_record(record: RawRecord) -> Result<(Operation, usize), Error> {
    let batch = WriteBatch {
        ids: vec![record.id],
        embeddings: Some(vec![Some(record.embedding)]),
        documents: record.document.map(|d| vec![Some(d)]),
        uris: record.uri.map(|u| vec![Some(u)]),
        metadatas: record.metadata.map(|m| vec![Some(m)]),
    };
    match batch.into_operations(OpKind::Upsert)? {
        (mut ops, Some(dim)) if ops.len() == 1 => Ok((ops.remove(0), dim)),
        _ => Err(Error::internal(
            "validating one record did not give one operation with an embedding",
        )),
    }
}

/// The rejection of the `index`th record (at `at`), which failed with `error`: decodes it
/// again and names the first field that fails on its own, with that field's message.
fn explain(format: Format, data: Bytes, index: usize, at: Location, error: &Error) -> Rejection {
    let record = Records::open(format, data)
        .ok()
        .and_then(|mut records| records.nth(index))
        .and_then(Result::ok);
    match record.and_then(|(_, r)| failing_field(&r)) {
        Some((field, e)) => Rejection::field(field, e.message()),
        None => Rejection::new(error.message()),
    }
    .at(at)
}

/// The first field of `record` that the API's validation rejects by itself.
fn failing_field(record: &RawRecord) -> Option<(&'static str, Error)> {
    if let Err(e) = validate_id(&record.id) {
        return Some(("id", e));
    }
    if let Err(e) = validate_embedding(&record.embedding) {
        return Some(("embedding", e));
    }
    // An update may carry a document or URI alone.
    let alone = |documents: Option<Vec<Option<String>>>, uris: Option<Vec<Option<String>>>| {
        WriteBatch {
            ids: vec![record.id.clone()],
            documents,
            uris,
            ..WriteBatch::default()
        }
        .into_operations(OpKind::Update)
        .err()
    };
    if let Some(e) = record
        .document
        .as_ref()
        .and_then(|d| alone(Some(vec![Some(d.clone())]), None))
    {
        return Some(("document", e));
    }
    if let Some(e) = record
        .uri
        .as_ref()
        .and_then(|u| alone(None, Some(vec![Some(u.clone())])))
    {
        return Some(("uri", e));
    }
    match &record.metadata {
        Some(m) => validate_update_metadata(m, true)
            .err()
            .map(|e| ("metadata", e)),
        None => None,
    }
}

/// The API's message for a batch naming `id` twice.
fn duplicate_message(id: &str) -> String {
    WriteBatch {
        ids: vec![id.to_owned(), id.to_owned()],
        ..WriteBatch::default()
    }
    .into_operations(OpKind::Delete)
    .err()
    .map(|e| e.message().to_owned())
    .unwrap_or_else(|| format!("duplicate id {id}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, StructArray};
    use arrow_schema::{DataType, Field};
    use serde_json::json;

    use super::*;
    use crate::ingest::fixtures::{dense, ids, jsonl, parquet, strings};
    use crate::model::validate::{MAX_DOCUMENT_BYTES, MAX_ID_BYTES, MAX_URI_BYTES};

    fn line(id: &str, embedding: &[f32]) -> serde_json::Value {
        json!({"id": id, "embedding": embedding})
    }

    fn reject_jsonl(lines: &[serde_json::Value], dimension: Option<u32>) -> Rejection {
        validate_file("f.jsonl", jsonl(lines), dimension).expect_err("the file is rejected")
    }

    /// The message the HTTP API gives for an upsert of this one record.
    fn api_message(batch: WriteBatch) -> String {
        batch
            .into_operations(OpKind::Upsert)
            .expect_err("the API rejects it")
            .message()
            .to_owned()
    }

    #[test]
    fn a_valid_file_becomes_upserts() {
        let file = validate_file(
            "f.jsonl",
            jsonl(&[
                json!({"id": "a", "embedding": [1, 2], "document": "d", "metadata": {"k": 1}}),
                line("b", &[3.0, 4.0]),
            ]),
            Some(2),
        )
        .unwrap();
        assert_eq!(
            (file.format(), file.records(), file.dimension()),
            (Format::Jsonl, 2, Some(2))
        );
        let ops = file.into_operations();
        assert!(ops.iter().all(|o| o.kind == OpKind::Upsert));
        assert_eq!(ops[0].document.as_deref(), Some("d"));
        assert_eq!(ops[1].embedding, Some(vec![3.0, 4.0]));
        let empty = validate_file(
            "e.parquet",
            parquet(vec![("id", ids(&[])), ("embedding", dense(&[]))]),
            None,
        )
        .unwrap();
        assert_eq!((empty.records(), empty.dimension()), (0, None));
    }

    #[test]
    fn records_are_checked_like_api_upserts() {
        let long_id = "x".repeat(MAX_ID_BYTES + 1);
        let long_doc = "d".repeat(MAX_DOCUMENT_BYTES + 1);
        let long_uri = "u".repeat(MAX_URI_BYTES + 1);
        let cases = [
            (
                json!({"id": "", "embedding": [1.0]}),
                "id",
                WriteBatch {
                    ids: vec!["".into()],
                    embeddings: Some(vec![Some(vec![1.0])]),
                    ..WriteBatch::default()
                },
            ),
            (
                json!({"id": long_id, "embedding": [1.0]}),
                "id",
                WriteBatch {
                    ids: vec![long_id.clone()],
                    embeddings: Some(vec![Some(vec![1.0])]),
                    ..WriteBatch::default()
                },
            ),
            (
                json!({"id": "b", "embedding": []}),
                "embedding",
                WriteBatch {
                    ids: vec!["b".into()],
                    embeddings: Some(vec![Some(vec![])]),
                    ..WriteBatch::default()
                },
            ),
            // Beyond float32's range: infinite once narrowed, as through the API.
            (
                json!({"id": "b", "embedding": [1e39]}),
                "embedding",
                WriteBatch {
                    ids: vec!["b".into()],
                    embeddings: Some(vec![Some(vec![f32::INFINITY])]),
                    ..WriteBatch::default()
                },
            ),
            (
                json!({"id": "b", "embedding": [1.0], "document": long_doc}),
                "document",
                WriteBatch {
                    ids: vec!["b".into()],
                    embeddings: Some(vec![Some(vec![1.0])]),
                    documents: Some(vec![Some(long_doc.clone())]),
                    ..WriteBatch::default()
                },
            ),
            (
                json!({"id": "b", "embedding": [1.0], "uri": long_uri}),
                "uri",
                WriteBatch {
                    ids: vec!["b".into()],
                    embeddings: Some(vec![Some(vec![1.0])]),
                    uris: Some(vec![Some(long_uri.clone())]),
                    ..WriteBatch::default()
                },
            ),
        ];
        for (bad, field, api) in cases {
            let r = reject_jsonl(&[line("a", &[1.0]), bad], None);
            assert_eq!(r.location, Some(Location::Line(2)), "{r}");
            assert_eq!(r.field.as_deref(), Some(field), "{r}");
            assert_eq!(r.reason, api_message(api), "{field}");
        }
    }

    #[test]
    fn non_finite_values_are_rejected_in_parquet() {
        let r = validate_file(
            "f.parquet",
            parquet(vec![
                ("id", ids(&["a", "b"])),
                ("embedding", dense(&[vec![1.0], vec![f32::NAN]])),
            ]),
            None,
        )
        .unwrap_err();
        assert_eq!(
            (r.location, r.field.as_deref()),
            (Some(Location::Row(1)), Some("embedding"))
        );
        assert_eq!(
            r.reason,
            "Embeddings must not contain NaN or Infinity values"
        );

        let metadata = StructArray::from(vec![(
            Arc::new(Field::new("score", DataType::Float64, true)),
            Arc::new(Float64Array::from(vec![1.0, f64::INFINITY])) as ArrayRef,
        )]);
        let r = validate_file(
            "f.parquet",
            parquet(vec![
                ("id", ids(&["a", "b"])),
                ("embedding", dense(&[vec![1.0], vec![2.0]])),
                ("metadata", Arc::new(metadata)),
            ]),
            None,
        )
        .unwrap_err();
        assert_eq!(
            (r.location, r.field.as_deref()),
            (Some(Location::Row(1)), Some("metadata"))
        );
        assert!(
            r.reason.contains("score") && r.reason.contains("finite"),
            "{r}"
        );
    }

    #[test]
    fn struct_metadata_keys_are_checked() {
        let metadata = StructArray::from(vec![(
            Arc::new(Field::new("$bad", DataType::Utf8, true)),
            strings(&[Some("v")]),
        )]);
        let r = validate_file(
            "f.parquet",
            parquet(vec![
                ("id", ids(&["a"])),
                ("embedding", dense(&[vec![1.0]])),
                ("metadata", Arc::new(metadata)),
            ]),
            None,
        )
        .unwrap_err();
        assert_eq!(
            (r.location, r.field.as_deref()),
            (Some(Location::Row(0)), Some("metadata"))
        );
        assert!(r.reason.contains("cannot start with '#' or '$'"), "{r}");
    }

    #[test]
    fn ids_are_unique_across_the_whole_file() {
        let mut lines: Vec<_> = (0..10).map(|i| line(&format!("r{i}"), &[1.0])).collect();
        lines.push(line("r3", &[2.0]));
        let r = reject_jsonl(&lines, None);
        assert_eq!(
            (r.location, r.field.as_deref()),
            (Some(Location::Line(11)), Some("id"))
        );
        assert_eq!(
            r.reason,
            "Expected IDs to be unique, found duplicates of: r3 (first at line 4)"
        );
    }

    #[test]
    fn one_dimension_the_collections() {
        let r = reject_jsonl(&[line("a", &[1.0, 2.0]), line("b", &[1.0, 2.0, 3.0])], None);
        assert_eq!(
            (r.location, r.field.as_deref()),
            (Some(Location::Line(2)), Some("embedding"))
        );
        assert!(
            r.reason.contains("Inconsistent dimensions") && r.reason.contains("line 1"),
            "{r}"
        );

        let r = reject_jsonl(&[line("a", &[1.0, 2.0])], Some(3));
        assert_eq!(
            (r.location, r.field.as_deref()),
            (Some(Location::Line(1)), Some("embedding"))
        );
        assert_eq!(
            r.reason,
            "Collection expecting embedding with dimension of 3, got 2"
        );
    }

    #[test]
    fn size_and_extension_are_checked_first() {
        let r = validate_file("f.csv", Bytes::from_static(b"id,embedding\n"), None).unwrap_err();
        assert!(r.reason.contains(".csv"), "{r}");
        let huge = Bytes::from(vec![b'\n'; MAX_INGEST_FILE_BYTES as usize + 1]);
        let r = validate_file("f.jsonl", huge, None).unwrap_err();
        assert!(r.reason.contains("exceeds the limit"), "{r}");
        assert_eq!(r.location, None);
    }
}
