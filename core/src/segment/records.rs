//! A segment's materialized records as one Parquet file.
//!
//! | column      | type                                   | null means            |
//! |-------------|----------------------------------------|-----------------------|
//! | `offset`    | `UInt64`, insertion order              | never null            |
//! | `id`        | `Utf8`                                 | never null            |
//! | `embedding` | `FixedSizeList<Float32 not null, dim>` | never null            |
//! | `document`  | `Utf8`                                 | no document           |
//! | `uri`       | `Utf8`                                 | no uri                |
//! | `metadata`  | `Utf8`, JSON object of [`Metadata`]    | no metadata           |
//!
//! Every embedding has the file's `dim` (the first record's length). Zero records are
//! valid (`dim` 0). Metadata round-trips exactly: `Some(empty map)` is stored as `{}`
//! and comes back as such, although [`Record`] normally keeps empty maps as `None`.
//!
//! Readers that take vectors from the index file decode with `with_embeddings = false`,
//! which projects the embedding column away so its pages are never read.
//!
//! Format version 2 (`records-v2`, [`encode_records_without_embeddings`]) is version 1
//! without the `embedding` column: segments written since the index object holds the
//! f32 vectors (index format 2) store them once. Its `chroma.dimension` is the
//! segment's dimension, for information; decoding it with embeddings is an error.

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::basic::Type as PhysicalType;
use parquet::column::reader::get_typed_column_reader;
use parquet::data_type::FloatType;
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::SerializedFileReader;

use super::{
    check_value, column, embedding_type, guard, metadata_json, no_nulls, open_parquet,
    write_parquet, READ_BATCH_ROWS, RECORDS_FORMAT_V1, RECORDS_FORMAT_V2,
};
use crate::error::{Error, Result};
use crate::model::record::{Metadata, Record};

pub(super) const WHAT: &str = "records";
/// Position of the embedding among the root columns, skipped by the projection.
const EMBEDDING_COLUMN: usize = 2;
/// Rows per data page of a `records-v2` file, so that reading a few rows by range reads
/// a few small pages ([`super::ranged`]).
const PAGE_ROWS: usize = 256;

pub(super) fn records_schema(format: &str, dim: usize) -> Result<SchemaRef> {
    let mut fields = vec![
        Field::new("offset", DataType::UInt64, false),
        Field::new("id", DataType::Utf8, false),
    ];
    if format == RECORDS_FORMAT_V1 {
        fields.push(Field::new("embedding", embedding_type(dim)?, false));
    }
    fields.extend([
        Field::new("document", DataType::Utf8, true),
        Field::new("uri", DataType::Utf8, true),
        Field::new("metadata", DataType::Utf8, true),
    ]);
    Ok(Arc::new(Schema::new(fields)))
}

/// A segment's records decoded column by column; row `i` of every field is one record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DecodedRecords {
    pub offsets: Vec<u64>,
    pub ids: Vec<String>,
    pub documents: Vec<Option<String>>,
    pub uris: Vec<Option<String>>,
    pub metadatas: Vec<Option<Metadata>>,
    /// Row `i`'s vector is `embeddings[i * dim..(i + 1) * dim]`; `None` when decoded
    /// without embeddings.
    pub embeddings: Option<Vec<f32>>,
    pub dim: usize,
}

impl DecodedRecords {
    /// The number of records.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Row `i`'s embedding, when decoded with embeddings.
    pub fn embedding(&self, i: usize) -> Option<&[f32]> {
        self.embeddings
            .as_ref()
            .map(|e| &e[i * self.dim..(i + 1) * self.dim])
    }
}

/// Encodes a segment's records with their insertion-order offsets, in the given order.
///
/// Fails with `InvalidArgument` when embeddings differ in length, or when a metadata
/// value cannot round-trip through JSON (a non-finite float, an empty array).
pub fn encode_records(rows: &[(u64, &Record)]) -> Result<Vec<u8>> {
    encode(rows, RECORDS_FORMAT_V1)
}

/// [`encode_records`] in format version 2: without the embeddings (which must still all
/// have one length, recorded as the file's dimension).
pub fn encode_records_without_embeddings(rows: &[(u64, &Record)]) -> Result<Vec<u8>> {
    encode(rows, RECORDS_FORMAT_V2)
}

fn encode(rows: &[(u64, &Record)], format: &'static str) -> Result<Vec<u8>> {
    let n = rows.len();
    let dim = rows.first().map_or(0, |(_, r)| r.embedding.len());
    let with_embeddings = format == RECORDS_FORMAT_V1;

    let mut values = Vec::with_capacity(n * dim);
    let mut metadata = StringBuilder::with_capacity(n, 0);
    let mut buf = Vec::new();
    for (_, record) in rows {
        if record.embedding.len() != dim {
            return Err(Error::invalid(format!(
                "embedding of id {:?} has dimension {}, expected {dim}",
                record.id,
                record.embedding.len()
            )));
        }
        if with_embeddings {
            values.extend_from_slice(&record.embedding);
        }
        match &record.metadata {
            Some(map) => {
                for (key, value) in map {
                    check_value(key, value)?;
                }
                metadata.append_value(metadata_json(&mut buf, map)?);
            }
            None => metadata.append_null(),
        }
    }

    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|(offset, _)| *offset),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(_, r)| r.id.as_str()),
        )),
    ];
    if with_embeddings {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let embedding = FixedSizeListArray::try_new_with_length(
            item,
            dim as i32,
            Arc::new(Float32Array::from(values)),
            None,
            n,
        )
        .map_err(|e| Error::internal_from("cannot build embedding column", e))?;
        columns.push(Arc::new(embedding));
    }
    columns.extend([
        Arc::new(
            rows.iter()
                .map(|(_, r)| r.document.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|(_, r)| r.uri.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(metadata.finish()) as ArrayRef,
    ]);
    let batch = RecordBatch::try_new(records_schema(format, dim)?, columns)
        .map_err(|e| Error::internal_from("cannot build records batch", e))?;
    let page_rows = (format == RECORDS_FORMAT_V2).then_some(PAGE_ROWS);
    write_parquet(&batch, format, dim, page_rows)
}

/// Decodes a records file written by [`encode_records`] or
/// [`encode_records_without_embeddings`].
///
/// With `with_embeddings = false` the embedding column is not read at all and
/// `embeddings` is `None`; `dim` is still the file's dimension. Fails with `Internal`
/// on anything that is not a well-formed `records-v1` or `records-v2` file (another
/// format version included), and on a `records-v2` file asked for embeddings. Never
/// panics.
pub fn decode_records(bytes: &[u8], with_embeddings: bool) -> Result<DecodedRecords> {
    decode_records_bytes(Bytes::copy_from_slice(bytes), with_embeddings)
}

/// [`decode_records`] without copying the input first.
pub fn decode_records_bytes(bytes: Bytes, with_embeddings: bool) -> Result<DecodedRecords> {
    guard(WHAT, || {
        let size = bytes.len();
        let opened = open_parquet(
            bytes.clone(),
            &[RECORDS_FORMAT_V1, RECORDS_FORMAT_V2],
            records_schema,
        )?;
        let (dim, rows) = (opened.dim, opened.rows);
        let has_embeddings = opened.format == RECORDS_FORMAT_V1;
        if with_embeddings && !has_embeddings {
            return Err(Error::internal(
                "a records-v2 file holds no embeddings (they are in the segment's index)",
            ));
        }
        // The embedding column never goes through Arrow: its list reader rebuilds offsets
        // from 2 levels per float and is several times slower than the column reader.
        let roots = (0..opened.builder.schema().fields().len())
            .filter(|&i| !has_embeddings || i != EMBEDDING_COLUMN);
        let mask = ProjectionMask::roots(opened.builder.parquet_schema(), roots);
        let reader = opened
            .builder
            .with_projection(mask)
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(|e| Error::internal_from("corrupt records file", e))?;

        // Capacities come from the file, so bound them by its size.
        let capacity = rows.min(size);
        let mut out = DecodedRecords {
            offsets: Vec::with_capacity(capacity),
            ids: Vec::with_capacity(capacity),
            documents: Vec::with_capacity(capacity),
            uris: Vec::with_capacity(capacity),
            metadatas: Vec::with_capacity(capacity),
            embeddings: None,
            dim,
        };
        for batch in reader {
            let batch = batch.map_err(|e| Error::internal_from("corrupt records file", e))?;
            decode_batch(&batch, &mut out)?;
        }
        if out.ids.len() != rows {
            return Err(Error::internal(format!(
                "corrupt records file: {} rows decoded, {rows} declared",
                out.ids.len()
            )));
        }
        if with_embeddings {
            out.embeddings = Some(read_embeddings(bytes, dim, rows)?);
        }
        Ok(out)
    })
}

/// Reads the embedding column's floats straight into one contiguous vector, checking
/// that every row holds exactly `dim` non-null values.
fn read_embeddings(bytes: Bytes, dim: usize, rows: usize) -> Result<Vec<f32>> {
    let corrupt = |what: &str| Error::internal(format!("corrupt records file: {what}"));
    if dim == 0 {
        return Ok(Vec::new());
    }
    let size = bytes.len();
    let file = SerializedFileReader::new(bytes)
        .map_err(|e| Error::internal_from("corrupt records file", e))?;
    let schema = file.metadata().file_metadata().schema_descr_ptr();
    let leaf = (0..schema.num_columns())
        .find(|&i| schema.column(i).path().parts().first().map(String::as_str) == Some("embedding"))
        .ok_or_else(|| corrupt("no embedding column"))?;
    let descr = schema.column(leaf);
    // `required group embedding (LIST) { repeated group list { required float item } }`
    if descr.physical_type() != PhysicalType::FLOAT
        || descr.max_def_level() != 1
        || descr.max_rep_level() != 1
    {
        return Err(corrupt("embedding column has the wrong layout"));
    }

    let total = rows
        .checked_mul(dim)
        .ok_or_else(|| corrupt("too many embedding values"))?;
    let mut values = Vec::with_capacity(total.min(size / 4));
    let (mut def, mut rep) = (Vec::new(), Vec::new());
    let mut records = 0;
    for group in 0..file.num_row_groups() {
        let column = file
            .get_row_group(group)
            .and_then(|g| g.get_column_reader(leaf))
            .map_err(|e| Error::internal_from("corrupt records file", e))?;
        let mut column = get_typed_column_reader::<FloatType>(column);
        loop {
            def.clear();
            rep.clear();
            let before = values.len();
            let (read, _, levels) = column
                .read_records(READ_BATCH_ROWS, Some(&mut def), Some(&mut rep), &mut values)
                .map_err(|e| Error::internal_from("corrupt records file", e))?;
            if read == 0 {
                break;
            }
            records += read;
            let well_formed = records <= rows
                && levels == read * dim
                && values.len() - before == levels
                && def.len() == levels
                && rep.len() == levels
                && def.iter().all(|&d| d == 1)
                && rep
                    .chunks_exact(dim)
                    .all(|row| row[0] == 0 && row[1..].iter().all(|&r| r == 1));
            if !well_formed {
                return Err(corrupt(
                    "embedding rows do not all have the declared dimension",
                ));
            }
        }
    }
    if records != rows {
        return Err(corrupt("embedding column has the wrong row count"));
    }
    Ok(values)
}

/// Appends a decoded batch's rows to `out`. The text columns a ranged read left out
/// of its projection ([`super::ranged`]) come back as `None`.
pub(super) fn decode_batch(batch: &RecordBatch, out: &mut DecodedRecords) -> Result<()> {
    let n = batch.num_rows();
    // Every column may have been left out of the read but the offset and id of a whole
    // record; a read of some rows' fields leaves those out too.
    let offsets = match batch.column_by_name("offset") {
        Some(_) => Some(column::<UInt64Array>(batch, "offset", WHAT)?),
        None => None,
    };
    let optional = |name: &str| match batch.column_by_name(name) {
        Some(_) => column::<StringArray>(batch, name, WHAT).map(Some),
        None => Ok(None),
    };
    let ids = optional("id")?;
    let documents = optional("document")?;
    let uris = optional("uri")?;
    let metadatas = optional("metadata")?;
    if let Some(offsets) = offsets {
        no_nulls(offsets, "offset", WHAT)?;
        out.offsets.extend_from_slice(&offsets.values()[..n]);
    }
    if let Some(ids) = ids {
        no_nulls(ids, "id", WHAT)?;
        out.ids.extend((0..n).map(|i| ids.value(i).to_string()));
    }
    let text = |array: Option<&StringArray>, i: usize| {
        array.and_then(|a| a.is_valid(i).then(|| a.value(i).to_string()))
    };
    out.documents.extend((0..n).map(|i| text(documents, i)));
    out.uris.extend((0..n).map(|i| text(uris, i)));
    for i in 0..n {
        let metadata =
            match metadatas.filter(|m| m.is_valid(i)) {
                Some(m) => Some(serde_json::from_str::<Metadata>(m.value(i)).map_err(|e| {
                    Error::internal_from("corrupt records file: bad metadata json", e)
                })?),
                None => None,
            };
        out.metadatas.push(metadata);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::MetadataValue;

    fn record(id: &str, embedding: Vec<f32>) -> Record {
        Record {
            id: id.into(),
            embedding,
            document: None,
            uri: None,
            metadata: None,
        }
    }

    fn every_value() -> Metadata {
        [
            ("bool", MetadataValue::Bool(false)),
            ("int", MetadataValue::Int(1)),
            ("float", MetadataValue::Float(1.0)),
            ("str", MetadataValue::Str("ünï \u{0}\n".into())),
            ("bools", MetadataValue::BoolArray(vec![false])),
            ("ints", MetadataValue::IntArray(vec![i64::MIN, 0])),
            ("floats", MetadataValue::FloatArray(vec![0.1, 1e-300])),
            (
                "strs",
                MetadataValue::StrArray(vec!["x".into(), "y".into()]),
            ),
            (
                "sparse",
                MetadataValue::SparseVector(crate::model::sparse::SparseVector {
                    indices: vec![0, 7, u32::MAX],
                    values: vec![0.1, -2.5, 1e-30],
                    tokens: Some(vec!["a".into(), "b".into(), "".into()]),
                }),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn sample() -> Vec<Record> {
        vec![
            Record {
                document: Some("doc".into()),
                uri: Some("file:///x".into()),
                metadata: Some(every_value()),
                ..record("a", vec![1.0, 2.0])
            },
            record("ß-🦀", vec![-0.0, f32::MAX]),
            Record {
                metadata: Some(Metadata::new()),
                ..record("c", vec![3.0, 4.0])
            },
        ]
    }

    fn check(records: &[Record], decoded: &DecodedRecords, offsets: &[u64]) {
        assert_eq!(decoded.len(), records.len());
        assert_eq!(decoded.offsets, offsets);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(decoded.ids[i], r.id);
            assert_eq!(decoded.documents[i], r.document);
            assert_eq!(decoded.uris[i], r.uri);
            assert_eq!(decoded.metadatas[i], r.metadata);
            if decoded.embeddings.is_some() {
                assert_eq!(decoded.embedding(i).unwrap(), &r.embedding[..]);
            }
        }
    }

    #[test]
    fn round_trips_with_and_without_embeddings() {
        let records = sample();
        let rows: Vec<(u64, &Record)> = records
            .iter()
            .zip([7, 3, u64::MAX])
            .map(|(r, o)| (o, r))
            .collect();
        let bytes = encode_records(&rows).unwrap();

        let full = decode_records(&bytes, true).unwrap();
        assert_eq!(full.dim, 2);
        assert_eq!(
            full.embeddings.as_deref(),
            Some(&[1.0, 2.0, -0.0, f32::MAX, 3.0, 4.0][..])
        );
        check(&records, &full, &[7, 3, u64::MAX]);

        let light = decode_records(&bytes, false).unwrap();
        assert_eq!(light.dim, 2);
        assert_eq!(light.embeddings, None);
        check(&records, &light, &[7, 3, u64::MAX]);
        assert_eq!(
            DecodedRecords {
                embeddings: None,
                ..full.clone()
            },
            light
        );

        // Format 2: the same records without the embedding column.
        let v2 = encode_records_without_embeddings(&rows).unwrap();
        assert!(v2.len() < bytes.len());
        let back = decode_records(&v2, false).unwrap();
        assert_eq!(back, light);
        let err = decode_records(&v2, true).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::Internal);
        // Mixed dimensions are refused in either format.
        let odd = record("odd", vec![1.0]);
        let mut mixed = rows.clone();
        mixed.push((9, &odd));
        assert!(encode_records_without_embeddings(&mixed).is_err());
        // An empty segment.
        let empty = encode_records_without_embeddings(&[]).unwrap();
        assert!(decode_records(&empty, false).unwrap().is_empty());
    }

    #[test]
    fn projection_never_reads_embedding_pages() {
        let records = sample();
        let rows: Vec<(u64, &Record)> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64, r))
            .collect();
        let mut bytes = encode_records(&rows).unwrap();
        let meta = parquet::file::serialized_reader::SerializedFileReader::new(bytes::Bytes::from(
            bytes.clone(),
        ))
        .map(|r| parquet::file::reader::FileReader::metadata(&r).clone())
        .unwrap();
        for group in meta.row_groups() {
            let chunk = group.column(EMBEDDING_COLUMN);
            assert!(chunk.column_path().parts()[0] == "embedding");
            let (start, len) = chunk.byte_range();
            bytes[start as usize..(start + len) as usize].fill(0xAB);
        }
        let light = decode_records(&bytes, false).unwrap();
        check(&records, &light, &[0, 1, 2]);
        assert!(decode_records(&bytes, true).is_err());
    }

    #[test]
    fn many_rows_span_row_groups() {
        let records: Vec<Record> = (0..20_000)
            .map(|i| record(&format!("id-{i}"), vec![i as f32, 0.5, -(i as f32)]))
            .collect();
        let rows: Vec<(u64, &Record)> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64 * 2, r))
            .collect();
        let decoded = decode_records(&encode_records(&rows).unwrap(), true).unwrap();
        let offsets: Vec<u64> = (0..20_000).map(|i| i * 2).collect();
        check(&records, &decoded, &offsets);
    }

    #[test]
    fn empty_is_valid() {
        let decoded = decode_records(&encode_records(&[]).unwrap(), true).unwrap();
        assert_eq!(
            decoded,
            DecodedRecords {
                embeddings: Some(vec![]),
                ..Default::default()
            }
        );

        let (a, b) = (record("a", vec![]), record("b", vec![]));
        let decoded = decode_records(&encode_records(&[(0, &a), (1, &b)]).unwrap(), true).unwrap();
        assert_eq!((decoded.dim, decoded.len()), (0, 2));
        assert_eq!(decoded.embedding(1), Some(&[][..]));
    }

    #[test]
    fn mismatched_dimensions_are_invalid() {
        let (a, b) = (record("a", vec![1.0, 2.0]), record("b", vec![1.0]));
        let err = encode_records(&[(0, &a), (1, &b)]).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::InvalidArgument);
        assert!(err.message().contains("\"b\""), "{err}");
    }

    #[test]
    fn log_batch_is_not_a_records_file() {
        let bytes =
            crate::segment::encode_log_batch(&[crate::model::record::Operation::delete("a")])
                .unwrap();
        let err = decode_records(&bytes, false).unwrap_err();
        assert!(err.message().contains("log-v1"), "{err}");
    }

    /// Decoding 20,000 × 384 must stay well under 100 ms in release builds; run with
    /// `cargo test --release -p chroma-core --lib segment::records -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; meaningful only in release builds"]
    fn decode_timing() {
        let (n, dim) = (20_000usize, 384usize);
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                document: Some(format!("document number {i} with some text in it")),
                metadata: Some([("i".to_string(), MetadataValue::Int(i as i64))].into()),
                ..record(
                    &format!("id-{i:08}"),
                    (0..dim).map(|j| ((i * dim + j) as f32).sin()).collect(),
                )
            })
            .collect();
        let rows: Vec<(u64, &Record)> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64, r))
            .collect();
        let start = std::time::Instant::now();
        let bytes = encode_records(&rows).unwrap();
        let encoded = start.elapsed();
        for with_embeddings in [true, false] {
            let start = std::time::Instant::now();
            let decoded = decode_records(&bytes, with_embeddings).unwrap();
            let elapsed = start.elapsed();
            assert_eq!(decoded.len(), n);
            eprintln!(
                "encode {encoded:?}, decode (embeddings: {with_embeddings}) {elapsed:?}, {} bytes",
                bytes.len()
            );
        }
    }

    mod corrupt {
        use proptest::prelude::*;

        use super::*;

        fn valid() -> Vec<u8> {
            let records = sample();
            let rows: Vec<(u64, &Record)> = records
                .iter()
                .enumerate()
                .map(|(i, r)| (i as u64, r))
                .collect();
            encode_records(&rows).unwrap()
        }

        #[test]
        fn every_truncation_and_single_byte_flip_returns() {
            let valid = valid();
            for cut in 0..valid.len() {
                let bytes = &valid[..cut];
                assert!(decode_records(bytes, true).is_err(), "truncated to {cut}");
            }
            for at in 0..valid.len() {
                for mask in [0x01, 0x80, 0xff] {
                    let mut bytes = valid.clone();
                    bytes[at] ^= mask;
                    let _ = decode_records(&bytes, true);
                    let _ = decode_records(&bytes, false);
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn truncation_is_an_error(cut in 0usize..100_000, with_embeddings: bool) {
                let bytes = valid();
                let cut = cut % bytes.len();
                prop_assert!(decode_records(&bytes[..cut], with_embeddings).is_err());
            }

            #[test]
            fn byte_flips_never_panic(
                flips in proptest::collection::vec((0usize..100_000, 1u8..=255), 1..4),
                with_embeddings: bool,
            ) {
                let mut bytes = valid();
                let len = bytes.len();
                for (at, mask) in flips {
                    bytes[at % len] ^= mask;
                }
                let _ = decode_records(&bytes, with_embeddings);
            }
        }
    }
}
