//! A log batch: the operations of one write, in order, as one Parquet file.
//!
//! | column      | type                                   | null means            |
//! |-------------|----------------------------------------|-----------------------|
//! | `op`        | `UInt8` ([`OpKind::as_u8`])            | never null            |
//! | `id`        | `Utf8`                                 | never null            |
//! | `embedding` | `FixedSizeList<Float32 not null, dim>` | no embedding given    |
//! | `document`  | `Utf8`                                 | no document given     |
//! | `uri`       | `Utf8`                                 | no uri given          |
//! | `metadata`  | `Utf8`, JSON object of [`UpdateMetadata`] (`null` value removes the key) | no metadata given |
//!
//! `dim` is the length of the first present embedding, and every present embedding must
//! have it. A batch without any embedding (deletes, metadata-only updates) uses `dim`
//! 0. A batch of zero operations is valid and decodes to an empty `Vec`.
//!
//! The round trip is exact: `metadata: Some(empty map)` is stored as `{}` and comes back
//! as `Some(empty map)`, distinct from `None`.

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray, UInt8Array,
};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;

use super::{
    check_value, column, embedding_type, guard, metadata_json, no_nulls, open_parquet,
    write_parquet, LOG_FORMAT_V1, READ_BATCH_ROWS,
};
use crate::error::{Error, Result};
use crate::model::record::{OpKind, Operation, UpdateMetadata};

const WHAT: &str = "log batch";

fn log_schema(dim: usize) -> Result<SchemaRef> {
    Ok(Arc::new(Schema::new(vec![
        Field::new("op", DataType::UInt8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("embedding", embedding_type(dim)?, true),
        Field::new("document", DataType::Utf8, true),
        Field::new("uri", DataType::Utf8, true),
        Field::new("metadata", DataType::Utf8, true),
    ])))
}

/// Encodes the operations of one write batch, in order.
///
/// Fails with `InvalidArgument` when present embeddings differ in length, or when a
/// metadata value cannot round-trip through JSON (a non-finite float, an empty array).
pub fn encode_log_batch(ops: &[Operation]) -> Result<Vec<u8>> {
    let n = ops.len();
    let dim = ops
        .iter()
        .find_map(|op| op.embedding.as_ref())
        .map_or(0, Vec::len);

    let mut values = Vec::with_capacity(n * dim);
    let mut valid = Vec::with_capacity(n);
    for op in ops {
        match &op.embedding {
            Some(e) if e.len() != dim => {
                return Err(Error::invalid(format!(
                    "embedding of id {:?} has dimension {}, expected {dim}",
                    op.id,
                    e.len()
                )))
            }
            Some(e) => {
                values.extend_from_slice(e);
                valid.push(true);
            }
            None => {
                values.resize(values.len() + dim, 0.0);
                valid.push(false);
            }
        }
    }

    let mut metadata = StringBuilder::with_capacity(n, 0);
    let mut buf = Vec::new();
    for op in ops {
        match &op.metadata {
            Some(map) => {
                for (key, value) in map {
                    if let Some(value) = value {
                        check_value(key, value)?;
                    }
                }
                metadata.append_value(metadata_json(&mut buf, map)?);
            }
            None => metadata.append_null(),
        }
    }

    let schema = log_schema(dim)?;
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let embedding = FixedSizeListArray::try_new_with_length(
        item,
        dim as i32,
        Arc::new(Float32Array::from(values)),
        Some(NullBuffer::from(valid)),
        n,
    )
    .map_err(|e| Error::internal_from("cannot build embedding column", e))?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt8Array::from_iter_values(
            ops.iter().map(|op| op.kind.as_u8()),
        )),
        Arc::new(StringArray::from_iter_values(
            ops.iter().map(|op| op.id.as_str()),
        )),
        Arc::new(embedding),
        Arc::new(
            ops.iter()
                .map(|op| op.document.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(
            ops.iter()
                .map(|op| op.uri.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(metadata.finish()),
    ];
    let batch = RecordBatch::try_new(schema, columns)
        .map_err(|e| Error::internal_from("cannot build log batch", e))?;
    write_parquet(&batch, LOG_FORMAT_V1, dim, None)
}

/// Decodes a log batch written by [`encode_log_batch`], in its original order.
///
/// Fails with `Internal` on anything that is not a well-formed `log-v1` file, including
/// another format version. Never panics.
pub fn decode_log_batch(bytes: &[u8]) -> Result<Vec<Operation>> {
    guard(WHAT, || {
        let opened = open_parquet(Bytes::copy_from_slice(bytes), &[LOG_FORMAT_V1], |_, dim| {
            log_schema(dim)
        })?;
        let dim = opened.dim;
        let reader = opened
            .builder
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(|e| Error::internal_from("corrupt log batch file", e))?;
        let mut ops = Vec::with_capacity(opened.rows.min(bytes.len()));
        for batch in reader {
            let batch = batch.map_err(|e| Error::internal_from("corrupt log batch file", e))?;
            decode_batch(&batch, dim, &mut ops)?;
        }
        if ops.len() != opened.rows {
            return Err(Error::internal(format!(
                "corrupt log batch file: {} rows decoded, {} declared",
                ops.len(),
                opened.rows
            )));
        }
        Ok(ops)
    })
}

fn decode_batch(batch: &RecordBatch, dim: usize, ops: &mut Vec<Operation>) -> Result<()> {
    let kinds = column::<UInt8Array>(batch, "op", WHAT)?;
    let ids = column::<StringArray>(batch, "id", WHAT)?;
    let embeddings = column::<FixedSizeListArray>(batch, "embedding", WHAT)?;
    let documents = column::<StringArray>(batch, "document", WHAT)?;
    let uris = column::<StringArray>(batch, "uri", WHAT)?;
    let metadatas = column::<StringArray>(batch, "metadata", WHAT)?;
    no_nulls(kinds, "op", WHAT)?;
    no_nulls(ids, "id", WHAT)?;

    let values = embeddings
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| {
            Error::internal("corrupt log batch file: embedding values are not floats")
        })?;
    let values = values.values();
    if values.len() < batch.num_rows() * dim {
        return Err(Error::internal(
            "corrupt log batch file: embedding column too short",
        ));
    }

    let text =
        |array: &StringArray, i: usize| array.is_valid(i).then(|| array.value(i).to_string());
    for i in 0..batch.num_rows() {
        let kind = OpKind::from_u8(kinds.value(i)).ok_or_else(|| {
            Error::internal(format!(
                "corrupt log batch file: unknown op kind {}",
                kinds.value(i)
            ))
        })?;
        let metadata = match metadatas.is_valid(i) {
            true => Some(
                serde_json::from_str::<UpdateMetadata>(metadatas.value(i)).map_err(|e| {
                    Error::internal_from("corrupt log batch file: bad metadata json", e)
                })?,
            ),
            false => None,
        };
        ops.push(Operation {
            kind,
            id: ids.value(i).to_string(),
            embedding: embeddings
                .is_valid(i)
                .then(|| values[i * dim..(i + 1) * dim].to_vec()),
            document: text(documents, i),
            uri: text(uris, i),
            metadata,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::MetadataValue;

    fn op(kind: OpKind, id: &str) -> Operation {
        Operation {
            kind,
            id: id.into(),
            embedding: None,
            document: None,
            uri: None,
            metadata: None,
        }
    }

    fn every_value() -> UpdateMetadata {
        [
            ("bool", Some(MetadataValue::Bool(true))),
            ("int", Some(MetadataValue::Int(1))),
            ("float", Some(MetadataValue::Float(1.0))),
            ("neg", Some(MetadataValue::Int(i64::MIN))),
            ("tiny", Some(MetadataValue::Float(-5e-324))),
            (
                "str",
                Some(MetadataValue::Str("héllo \"q\" \u{1F600}".into())),
            ),
            ("bools", Some(MetadataValue::BoolArray(vec![true, false]))),
            ("ints", Some(MetadataValue::IntArray(vec![1, -2, i64::MAX]))),
            (
                "floats",
                Some(MetadataValue::FloatArray(vec![1.0, 0.1, -2.5e300])),
            ),
            (
                "strs",
                Some(MetadataValue::StrArray(vec!["a".into(), "".into()])),
            ),
            (
                "sparse",
                Some(MetadataValue::SparseVector(
                    crate::model::sparse::SparseVector {
                        indices: vec![3, 9],
                        values: vec![0.3, 1.5],
                        tokens: None,
                    },
                )),
            ),
            ("gone", None),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn sample() -> Vec<Operation> {
        vec![
            Operation {
                embedding: Some(vec![1.0, -0.0, f32::MIN_POSITIVE]),
                document: Some("doc".into()),
                uri: Some("s3://x".into()),
                metadata: Some(every_value()),
                ..op(OpKind::Add, "a")
            },
            Operation {
                embedding: Some(vec![0.5, 0.25, 0.125]),
                metadata: Some(UpdateMetadata::new()),
                ..op(OpKind::Upsert, "日本語-id")
            },
            Operation {
                document: Some(String::new()),
                ..op(OpKind::Update, "b")
            },
            Operation::delete("a"),
        ]
    }

    #[test]
    fn round_trips_every_kind_and_value() {
        let ops = sample();
        let bytes = encode_log_batch(&ops).unwrap();
        assert_eq!(decode_log_batch(&bytes).unwrap(), ops);
    }

    #[test]
    fn int_and_float_metadata_stay_distinct() {
        let ops = decode_log_batch(&encode_log_batch(&sample()).unwrap()).unwrap();
        let meta = ops[0].metadata.as_ref().unwrap();
        assert_eq!(meta["int"], Some(MetadataValue::Int(1)));
        assert_eq!(meta["float"], Some(MetadataValue::Float(1.0)));
        assert_eq!(meta["gone"], None);
        assert_eq!(ops[1].metadata, Some(UpdateMetadata::new()));
        assert_eq!(ops[2].metadata, None);
    }

    #[test]
    fn batch_without_embeddings_uses_dimension_zero() {
        let ops = vec![
            Operation {
                embedding: Some(vec![]),
                ..op(OpKind::Add, "w")
            },
            Operation::delete("x"),
            Operation {
                document: Some("d".into()),
                ..op(OpKind::Update, "y")
            },
        ];
        assert_eq!(
            decode_log_batch(&encode_log_batch(&ops).unwrap()).unwrap(),
            ops
        );
    }

    #[test]
    fn empty_batch_is_valid() {
        assert_eq!(
            decode_log_batch(&encode_log_batch(&[]).unwrap()).unwrap(),
            vec![]
        );
    }

    #[test]
    fn many_rows_span_row_groups() {
        let ops: Vec<Operation> = (0..20_000)
            .map(|i| Operation {
                embedding: (i % 3 != 0).then(|| vec![i as f32, -(i as f32)]),
                metadata: (i % 5 == 0)
                    .then(|| [("n".to_string(), Some(MetadataValue::Int(i)))].into()),
                ..op(OpKind::Upsert, &format!("id-{i}"))
            })
            .collect();
        assert_eq!(
            decode_log_batch(&encode_log_batch(&ops).unwrap()).unwrap(),
            ops
        );
    }

    #[test]
    fn mismatched_dimensions_are_invalid() {
        let ops = vec![
            Operation {
                embedding: Some(vec![1.0, 2.0]),
                ..op(OpKind::Add, "a")
            },
            Operation::delete("b"),
            Operation {
                embedding: Some(vec![1.0]),
                ..op(OpKind::Add, "c")
            },
        ];
        let err = encode_log_batch(&ops).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::InvalidArgument);
        assert!(err.message().contains("\"c\""), "{err}");
    }

    #[test]
    fn unrepresentable_metadata_is_invalid() {
        for value in [
            MetadataValue::Float(f64::NAN),
            MetadataValue::FloatArray(vec![1.0, f64::INFINITY]),
            MetadataValue::IntArray(vec![]),
        ] {
            let ops = vec![Operation {
                metadata: Some([("k".to_string(), Some(value))].into()),
                ..op(OpKind::Add, "a")
            }];
            assert_eq!(
                encode_log_batch(&ops).unwrap_err().code(),
                crate::ErrorCode::InvalidArgument
            );
        }
    }

    #[test]
    fn records_file_is_not_a_log_batch() {
        let rec = crate::model::record::Record {
            id: "a".into(),
            embedding: vec![1.0],
            document: None,
            uri: None,
            metadata: None,
        };
        let bytes = crate::segment::encode_records(&[(0, &rec)]).unwrap();
        let err = decode_log_batch(&bytes).unwrap_err();
        assert!(err.message().contains("records-v1"), "{err}");
    }

    mod corrupt {
        use proptest::prelude::*;

        use super::*;

        fn valid() -> Vec<u8> {
            encode_log_batch(&sample()).unwrap()
        }

        #[test]
        fn every_truncation_and_single_byte_flip_returns() {
            let valid = valid();
            for cut in 0..valid.len() {
                let bytes = &valid[..cut];
                assert!(decode_log_batch(bytes).is_err(), "truncated to {cut}");
            }
            for at in 0..valid.len() {
                for mask in [0x01, 0x80, 0xff] {
                    let mut bytes = valid.clone();
                    bytes[at] ^= mask;
                    let _ = decode_log_batch(&bytes);
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn truncation_is_an_error(cut in 0usize..100_000) {
                let bytes = valid();
                let cut = cut % bytes.len();
                prop_assert!(decode_log_batch(&bytes[..cut]).is_err());
            }

            #[test]
            fn byte_flips_never_panic(flips in proptest::collection::vec((0usize..100_000, 1u8..=255), 1..4)) {
                let mut bytes = valid();
                let len = bytes.len();
                for (at, mask) in flips {
                    bytes[at % len] ^= mask;
                }
                // Either outcome is fine (a flip inside a float changes its value); the
                // decoder must just return.
                let _ = decode_log_batch(&bytes);
            }
        }
    }
}
