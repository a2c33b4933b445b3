//! On-disk formats: the plaintext Parquet encodings of log batches ([`log`]) and of a
//! segment's materialized records ([`records`]).
//!
//! Everything here works on in-memory bytes. Encryption is applied by the caller around
//! the bytes produced here, and the authenticated encryption is what detects tampering
//! and bit rot: a byte flip inside a float page decodes "fine" to a different value.
//! Decoding therefore only promises to never panic on garbage and to reject anything
//! structurally wrong (bad footer, wrong schema, unknown version, bad JSON).
//!
//! Each file carries two Parquet key-value metadata entries:
//! - [`FORMAT_KEY`] (`chroma.format`): [`LOG_FORMAT_V1`], [`RECORDS_FORMAT_V1`] or
//!   [`RECORDS_FORMAT_V2`]; a reader rejects any other value, so a future version is
//!   never misread.
//! - [`DIMENSION_KEY`] (`chroma.dimension`): the length of every embedding in the file
//!   (`0` for a log batch without embeddings), cross-checked against the schema.
//!
//! Metadata maps are stored as JSON object text. Ints and floats stay distinct (`1` vs
//! `1.0`), floats round-trip bit-exactly (serde_json's `float_roundtrip` feature), and
//! non-finite floats and empty arrays are rejected on encode because JSON cannot carry
//! them back unchanged.

pub mod log;
pub mod ranged;
pub mod records;
pub mod rows;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::Compression;
use parquet::file::metadata::{KeyValue, ParquetMetaData};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::record::MetadataValue;

pub use log::{decode_log_batch, encode_log_batch};
pub use records::{
    decode_records, decode_records_bytes, encode_records, encode_records_without_embeddings,
    DecodedRecords,
};

/// Parquet key-value metadata key naming the format and its version.
pub const FORMAT_KEY: &str = "chroma.format";
/// Parquet key-value metadata key holding the embedding dimension.
pub const DIMENSION_KEY: &str = "chroma.dimension";
/// Format of a log batch, version 1.
pub const LOG_FORMAT_V1: &str = "log-v1";
/// Format of a segment's records file, version 1.
pub const RECORDS_FORMAT_V1: &str = "records-v1";
/// Format of a segment's records file, version 2: version 1 without the embedding column
/// (the segment's index object holds the vectors).
pub const RECORDS_FORMAT_V2: &str = "records-v2";

/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 8192;
/// Rows per decoded Arrow batch.
const READ_BATCH_ROWS: usize = 8192;
/// The largest dimension a file may declare (Arrow's list size is an `i32`).
const MAX_DIMENSION: usize = i32::MAX as usize;

/// The type of an embedding column: `dim` non-null floats per row.
fn embedding_type(dim: usize) -> Result<DataType> {
    let size =
        i32::try_from(dim).map_err(|_| Error::invalid(format!("dimension {dim} is too large")))?;
    Ok(DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, false)),
        size,
    ))
}

/// A data page of a file written with `page_rows` closes once it holds this many bytes.
const PAGE_BYTES: usize = 16 * 1024;
/// How often, in rows, a writer checks whether a page reached [`PAGE_BYTES`].
const PAGE_SIZE_CHECK_ROWS: usize = 32;

/// Writes one batch as a Parquet file tagged with `format` and `dim`.
///
/// Text columns are Snappy-compressed; the embedding column is stored plain and
/// uncompressed without dictionary or statistics (random floats neither compress nor
/// prune). Ids are unique, so they get no dictionary either.
///
/// With `page_rows`, data pages hold at most that many rows (and close once they reach
/// [`PAGE_BYTES`], checked every [`PAGE_SIZE_CHECK_ROWS`] rows: long documents make
/// pages of fewer rows, so reading one reads less) and the file keeps its
/// offset index (where each page starts) but no page statistics: a reader of a few rows
/// fetches the footer, the offset index and the pages holding them (see
/// [`ranged::read_rows`]). Such a file has no dictionaries either: a column chunk's
/// dictionary page is read with any of its pages, and it is as large as the chunk's
/// distinct values (ids, documents and metadata mostly are).
fn write_parquet(
    batch: &RecordBatch,
    format: &str,
    dim: usize,
    page_rows: Option<usize>,
) -> Result<Vec<u8>> {
    let schema = batch.schema();
    let descr = ArrowSchemaConverter::new()
        .convert(&schema)
        .map_err(|e| Error::internal_from(format!("cannot convert {format} schema"), e))?;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(FORMAT_KEY.to_string(), format.to_string()),
            KeyValue::new(DIMENSION_KEY.to_string(), dim.to_string()),
        ]));
    if let Some(rows) = page_rows {
        props = props
            .set_data_page_row_count_limit(rows)
            .set_data_page_size_limit(PAGE_BYTES)
            .set_write_batch_size(PAGE_SIZE_CHECK_ROWS.min(rows))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_dictionary_enabled(false);
    }
    for column in descr.columns() {
        let path = column.path().clone();
        match path.parts().first().map(String::as_str) {
            Some("embedding") => {
                props = props
                    .set_column_compression(path.clone(), Compression::UNCOMPRESSED)
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_statistics_enabled(path, EnabledStatistics::None);
            }
            Some("id") => props = props.set_column_dictionary_enabled(path, false),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props.build()))
        .map_err(|e| Error::internal_from(format!("cannot start {format} file"), e))?;
    writer
        .write(batch)
        .map_err(|e| Error::internal_from(format!("cannot write {format} file"), e))?;
    writer
        .close()
        .map_err(|e| Error::internal_from(format!("cannot finish {format} file"), e))?;
    Ok(out)
}

/// An opened Parquet file whose version and schema were checked.
struct Opened {
    builder: ParquetRecordBatchReaderBuilder<Bytes>,
    /// Which of the accepted formats it is.
    format: &'static str,
    dim: usize,
    rows: usize,
}

/// Opens `bytes` as a file of one of `formats` and checks that its Arrow schema is
/// exactly `schema_for(format, dim)` for the format and dimension it declares.
fn open_parquet(
    bytes: Bytes,
    formats: &[&'static str],
    schema_for: impl Fn(&str, usize) -> Result<SchemaRef>,
) -> Result<Opened> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| Error::internal_from(format!("corrupt {} file", formats[0]), e))?;
    let (format, dim, rows) =
        check_format(builder.metadata(), builder.schema(), formats, schema_for)?;
    Ok(Opened {
        builder,
        format,
        dim,
        rows,
    })
}

/// The format (one of `formats`), dimension and row count a file's footer declares,
/// once its Arrow schema is checked to be exactly `schema_for(format, dim)`.
fn check_format(
    metadata: &ParquetMetaData,
    actual: &SchemaRef,
    formats: &[&'static str],
    schema_for: impl Fn(&str, usize) -> Result<SchemaRef>,
) -> Result<(&'static str, usize, usize)> {
    let format = formats[0];
    let file = metadata.file_metadata();
    let kv = |key: &str| {
        file.key_value_metadata()
            .and_then(|kvs| kvs.iter().find(|kv| kv.key == key))
            .and_then(|kv| kv.value.as_deref())
    };
    let format = match kv(FORMAT_KEY) {
        Some(found) if formats.contains(&found) => formats
            .iter()
            .copied()
            .find(|f| *f == found)
            .unwrap_or(format),
        Some(found) => {
            return Err(Error::internal(format!(
                "unsupported segment format version {found:?}, expected {format:?}"
            )))
        }
        None => {
            return Err(Error::internal(format!(
                "corrupt {format} file: no {FORMAT_KEY}"
            )))
        }
    };
    let dim = kv(DIMENSION_KEY)
        .and_then(|d| d.parse::<usize>().ok())
        .filter(|&d| d <= MAX_DIMENSION)
        .ok_or_else(|| Error::internal(format!("corrupt {format} file: bad {DIMENSION_KEY}")))?;
    let expected = schema_for(format, dim)?;
    let same = actual.fields().len() == expected.fields().len()
        && actual.fields().iter().zip(expected.fields()).all(|(a, e)| {
            a.name() == e.name()
                && a.data_type() == e.data_type()
                && a.is_nullable() == e.is_nullable()
        });
    if !same {
        return Err(Error::internal(format!(
            "corrupt {format} file: schema {actual:?} does not match dimension {dim}"
        )));
    }
    let rows = usize::try_from(file.num_rows())
        .map_err(|_| Error::internal(format!("corrupt {format} file: negative row count")))?;
    Ok((format, dim, rows))
}

/// Runs a decoder, turning a panic inside the parquet crate into an error.
///
/// The parquet reader is not hardened against adversarial files: it trusts lengths and
/// offsets read from them, and some malformed inputs end in a panic (none was found by
/// this module's byte-flip tests, but they cannot cover everything). A decode of bad
/// bytes must fail the one request, not the whole process. Everything the closure touches
/// is dropped with it, so no broken state outlives the panic.
fn guard<T>(what: &str, decode: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(decode)).unwrap_or_else(|_| {
        Err(Error::internal(format!(
            "corrupt {what} file: decoder panicked"
        )))
    })
}

/// Downcasts a column by name.
fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str, what: &str) -> Result<&'a T> {
    let array: &ArrayRef = batch
        .column_by_name(name)
        .ok_or_else(|| Error::internal(format!("corrupt {what} file: no column {name}")))?;
    array.as_any().downcast_ref::<T>().ok_or_else(|| {
        Error::internal(format!(
            "corrupt {what} file: column {name} has the wrong type"
        ))
    })
}

/// Fails when a non-nullable column holds nulls.
fn no_nulls(array: &dyn Array, name: &str, what: &str) -> Result<()> {
    if array.null_count() > 0 {
        return Err(Error::internal(format!(
            "corrupt {what} file: null in column {name}"
        )));
    }
    Ok(())
}

/// Checks that a metadata value comes back from JSON unchanged.
fn check_value(key: &str, value: &MetadataValue) -> Result<()> {
    let finite = match value {
        MetadataValue::Float(f) => f.is_finite(),
        MetadataValue::FloatArray(v) => v.iter().all(|f| f.is_finite()),
        _ => true,
    };
    if !finite {
        return Err(Error::invalid(format!(
            "metadata key {key:?} holds a non-finite float"
        )));
    }
    let empty = match value {
        MetadataValue::BoolArray(v) => v.is_empty(),
        MetadataValue::IntArray(v) => v.is_empty(),
        MetadataValue::FloatArray(v) => v.is_empty(),
        MetadataValue::StrArray(v) => v.is_empty(),
        _ => false,
    };
    if empty {
        return Err(Error::invalid(format!(
            "metadata key {key:?} holds an empty array"
        )));
    }
    Ok(())
}

/// Serializes a metadata map into `buf` (cleared first) as JSON object text.
fn metadata_json<'b, M: Serialize>(buf: &'b mut Vec<u8>, map: &M) -> Result<&'b str> {
    buf.clear();
    serde_json::to_writer(&mut *buf, map)
        .map_err(|e| Error::internal_from("cannot serialize metadata", e))?;
    std::str::from_utf8(buf).map_err(|e| Error::internal_from("metadata json is not utf-8", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_ints_and_floats_apart() {
        let mut map = crate::model::record::Metadata::new();
        map.insert("i".into(), MetadataValue::Int(1));
        map.insert("f".into(), MetadataValue::Float(1.0));
        let mut buf = Vec::new();
        let text = metadata_json(&mut buf, &map).unwrap().to_string();
        assert_eq!(text, r#"{"f":1.0,"i":1}"#);
        let back: crate::model::record::Metadata = serde_json::from_str(&text).unwrap();
        assert_eq!(back, map);
    }

    #[test]
    fn json_floats_round_trip_bit_exactly() {
        for bits in [
            0x3fb999999999999au64,
            0x7fefffffffffffff,
            1,
            0x8000000000000000,
            0x1a0c7b1b7f2f5a31,
        ] {
            let f = f64::from_bits(bits);
            let text = serde_json::to_string(&MetadataValue::Float(f)).unwrap();
            let back: MetadataValue = serde_json::from_str(&text).unwrap();
            assert_eq!(back, MetadataValue::Float(f), "{text}");
            if let MetadataValue::Float(g) = back {
                assert_eq!(g.to_bits(), bits);
            }
        }
    }

    #[test]
    fn garbage_is_an_error() {
        for bytes in [
            &b""[..],
            b"PAR1",
            b"PAR1PAR1",
            b"not parquet at all, just text",
        ] {
            assert!(decode_log_batch(bytes).is_err());
            assert!(decode_records(bytes, true).is_err());
        }
    }

    /// The contents of the committed golden files. Never change these: they describe
    /// files written by an earlier version that every later version must still read.
    mod golden {
        use crate::model::record::{Metadata, MetadataValue as V, OpKind, Operation, Record};

        pub const LOG: &str = "tests/golden/log-v1.parquet";
        pub const RECORDS: &str = "tests/golden/records-v1.parquet";

        fn every_value() -> Metadata {
            [
                ("bool", V::Bool(true)),
                ("int", V::Int(-7)),
                ("one_int", V::Int(1)),
                ("one_float", V::Float(1.0)),
                ("float", V::Float(0.1)),
                ("str", V::Str("héllo, 世界".into())),
                ("bools", V::BoolArray(vec![true, false])),
                ("ints", V::IntArray(vec![i64::MIN, 0, i64::MAX])),
                ("floats", V::FloatArray(vec![-2.5, 1e300])),
                ("strs", V::StrArray(vec!["a".into(), "".into()])),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        }

        pub fn ops() -> Vec<Operation> {
            vec![
                Operation {
                    kind: OpKind::Add,
                    id: "a".into(),
                    embedding: Some(vec![1.0, -2.5, 0.0]),
                    document: Some("first document".into()),
                    uri: Some("s3://bucket/a".into()),
                    metadata: Some(
                        every_value()
                            .into_iter()
                            .map(|(k, v)| (k, Some(v)))
                            .collect(),
                    ),
                },
                Operation {
                    kind: OpKind::Upsert,
                    id: "ü-🦀".into(),
                    embedding: Some(vec![0.5, 0.25, -0.125]),
                    document: None,
                    uri: None,
                    metadata: Some(
                        [
                            ("int".to_string(), None),
                            ("new".to_string(), Some(V::Str("x".into()))),
                        ]
                        .into(),
                    ),
                },
                Operation {
                    kind: OpKind::Update,
                    id: "b".into(),
                    embedding: None,
                    document: Some(String::new()),
                    uri: None,
                    metadata: Some(Default::default()),
                },
                Operation::delete("a"),
            ]
        }

        pub fn records() -> Vec<(u64, Record)> {
            vec![
                (
                    0,
                    Record {
                        id: "a".into(),
                        embedding: vec![1.0, -2.5, 0.0],
                        document: Some("first document".into()),
                        uri: Some("s3://bucket/a".into()),
                        metadata: Some(every_value()),
                    },
                ),
                (
                    5,
                    Record {
                        id: "ü-🦀".into(),
                        embedding: vec![0.5, 0.25, -0.125],
                        document: None,
                        uri: None,
                        metadata: None,
                    },
                ),
                (
                    9,
                    Record {
                        id: "c".into(),
                        embedding: vec![f32::MAX, f32::MIN_POSITIVE, -0.0],
                        document: Some("third".into()),
                        uri: None,
                        metadata: Some([("k".to_string(), V::Float(-3.0))].into()),
                    },
                ),
            ]
        }
    }

    /// Rewrites the golden files, only when `CHROMA_REGENERATE_GOLDEN=1`. Do this once
    /// per new format version, with a new file name; never overwrite an old version.
    #[test]
    fn regenerate_golden_files() {
        if std::env::var("CHROMA_REGENERATE_GOLDEN").as_deref() != Ok("1") {
            return;
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir_all(dir.join("tests/golden")).unwrap();
        std::fs::write(
            dir.join(golden::LOG),
            encode_log_batch(&golden::ops()).unwrap(),
        )
        .unwrap();
        let records = golden::records();
        let rows: Vec<(u64, &crate::model::record::Record)> =
            records.iter().map(|(o, r)| (*o, r)).collect();
        std::fs::write(dir.join(golden::RECORDS), encode_records(&rows).unwrap()).unwrap();
    }

    #[test]
    fn golden_files_still_decode() {
        let log = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/log-v1.parquet"
        ));
        let ops = decode_log_batch(log).unwrap();
        assert_eq!(ops, golden::ops());
        let meta = ops[0].metadata.as_ref().unwrap();
        assert_eq!(meta["one_int"], Some(MetadataValue::Int(1)));
        assert_eq!(meta["one_float"], Some(MetadataValue::Float(1.0)));
        assert_eq!(ops[1].metadata.as_ref().unwrap()["int"], None);

        let bytes = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/records-v1.parquet"
        ));
        let expected = golden::records();
        for with_embeddings in [true, false] {
            let decoded = decode_records(bytes, with_embeddings).unwrap();
            assert_eq!(decoded.dim, 3);
            assert_eq!(decoded.offsets, [0, 5, 9]);
            for (i, (_, record)) in expected.iter().enumerate() {
                assert_eq!(decoded.ids[i], record.id);
                assert_eq!(decoded.documents[i], record.document);
                assert_eq!(decoded.uris[i], record.uri);
                assert_eq!(decoded.metadatas[i], record.metadata);
                if with_embeddings {
                    assert_eq!(decoded.embedding(i).unwrap(), &record.embedding[..]);
                }
            }
            assert_eq!(decoded.embeddings.is_some(), with_embeddings);
        }
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut bytes = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/log-v1.parquet"
        ))
        .to_vec();
        // Same length, so the footer stays consistent.
        let at = bytes.windows(6).rposition(|w| w == b"log-v1").unwrap();
        bytes[at..at + 6].copy_from_slice(b"log-v9");
        let err = decode_log_batch(&bytes).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::Internal);
        assert!(err.message().contains("log-v9"), "{err}");
    }
}
