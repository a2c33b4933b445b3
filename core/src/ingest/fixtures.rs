//! Test files, generated: Parquet written with arrow writers, JSON Lines from values.

use std::sync::Arc;

use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{ArrayRef, FixedSizeListArray, ListArray, RecordBatch, StringArray};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::Value;

/// A Parquet file of `columns`, with row groups of at most `group_rows` rows.
pub fn parquet_grouped(columns: Vec<(&str, ArrayRef)>, group_rows: usize) -> Bytes {
    let batch = RecordBatch::try_from_iter(columns).expect("columns make a batch");
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows))
        .build();
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).expect("parquet writer");
    writer.write(&batch).expect("write batch");
    writer.close().expect("close parquet file");
    Bytes::from(out)
}

/// A Parquet file of `columns` in one row group.
pub fn parquet(columns: Vec<(&str, ArrayRef)>) -> Bytes {
    parquet_grouped(columns, 1 << 20)
}

pub fn strings(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

pub fn ids(values: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

/// `List<Float32>` embeddings.
pub fn list_f32(rows: &[Option<Vec<Option<f32>>>]) -> ArrayRef {
    Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>(
        rows.iter().cloned(),
    ))
}

/// `FixedSizeList<Float64, dim>` embeddings, all present.
pub fn fixed_f64(rows: &[Vec<f64>], dim: i32) -> ArrayRef {
    Arc::new(
        FixedSizeListArray::from_iter_primitive::<Float64Type, _, _>(
            rows.iter().map(|r| Some(r.iter().map(|&v| Some(v)))),
            dim,
        ),
    )
}

/// Dense `List<Float32>` embeddings.
pub fn dense(rows: &[Vec<f32>]) -> ArrayRef {
    list_f32(
        &rows
            .iter()
            .map(|r| Some(r.iter().map(|&v| Some(v)).collect()))
            .collect::<Vec<_>>(),
    )
}

/// A JSON Lines file, one value per line.
pub fn jsonl(lines: &[Value]) -> Bytes {
    let mut out = String::new();
    for line in lines {
        out.push_str(&line.to_string());
        out.push('\n');
    }
    Bytes::from(out)
}
