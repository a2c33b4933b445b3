//! Parquet files: the columns' names and types are checked once, then each row is read
//! as a record.

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::Value;

use super::{json_metadata, required, show, unknown_field, RawRecord, QUOTE_CHARS};
use crate::ingest::{Location, Rejection, MAX_INGEST_DECODED_BYTES};
use crate::model::{MetadataValue, UpdateMetadata};

/// Rows per decoded Arrow batch.
const BATCH_ROWS: usize = 8192;

/// Positions of the columns, whose types were checked.
#[derive(Debug, Clone, Copy)]
struct Layout {
    id: usize,
    embedding: usize,
    document: Option<usize>,
    uri: Option<usize>,
    metadata: Option<usize>,
}

pub(crate) struct ParquetRecords {
    reader: ParquetRecordBatchReader,
    layout: Layout,
    batch: Option<RecordBatch>,
    /// The next row of `batch`.
    next: usize,
    /// The next row of the file.
    row: usize,
    failed: bool,
}

impl ParquetRecords {
    pub(super) fn open(data: Bytes) -> Result<Self, Rejection> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(data)
            .map_err(|e| Rejection::new(format!("not a readable Parquet file: {e}")))?;
        let declared: u64 = builder
            .metadata()
            .row_groups()
            .iter()
            .map(|rg| u64::try_from(rg.total_byte_size()).unwrap_or(u64::MAX))
            .fold(0, u64::saturating_add);
        if declared > MAX_INGEST_DECODED_BYTES {
            return Err(Rejection::new(format!(
                "the Parquet file decodes to {declared} bytes, more than the limit of \
                 {MAX_INGEST_DECODED_BYTES}: split it into smaller files"
            )));
        }
        let layout = layout(builder.schema())?;
        let reader = builder
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| Rejection::new(format!("not a readable Parquet file: {e}")))?;
        Ok(Self {
            reader,
            layout,
            batch: None,
            next: 0,
            row: 0,
            failed: false,
        })
    }
}

impl Iterator for ParquetRecords {
    type Item = Result<(Location, RawRecord), Rejection>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(batch) = self.batch.as_ref().filter(|b| self.next < b.num_rows()) {
                let at = Location::Row(self.row);
                let result = parquet_record(&self.layout, batch, self.next);
                self.next += 1;
                self.row += 1;
                self.failed = result.is_err();
                return Some(result.map(|r| (at, r)).map_err(|e| e.at(at)));
            }
            match self.reader.next()? {
                Ok(batch) => {
                    self.batch = Some(batch);
                    self.next = 0;
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(Rejection::new(format!(
                        "cannot decode the Parquet data after row {}: {e}",
                        self.row
                    ))));
                }
            }
        }
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_metadata_scalar(t: &DataType) -> bool {
    use DataType::*;
    is_string(t)
        || matches!(
            t,
            Boolean
                | Int8
                | Int16
                | Int32
                | Int64
                | UInt8
                | UInt16
                | UInt32
                | UInt64
                | Float32
                | Float64
        )
}

fn is_embedding(t: &DataType) -> bool {
    match t {
        DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => {
            matches!(item.data_type(), DataType::Float32 | DataType::Float64)
        }
        _ => false,
    }
}

/// Checks the columns' names and types.
fn layout(schema: &Schema) -> Result<Layout, Rejection> {
    let wrong_type = |f: &Field, expected: &str| {
        Rejection::field(
            f.name(),
            format!(
                "column {} has type {}, expected {expected}",
                f.name(),
                f.data_type()
            ),
        )
    };
    let (mut id, mut embedding, mut document, mut uri, mut metadata) =
        (None, None, None, None, None);
    for (i, f) in schema.fields().iter().enumerate() {
        let t = f.data_type();
        match f.name().as_str() {
            "id" if is_string(t) => id = Some(i),
            "document" if is_string(t) => document = Some(i),
            "uri" if is_string(t) => uri = Some(i),
            "id" | "document" | "uri" => return Err(wrong_type(f, "utf8")),
            "embedding" if is_embedding(t) => embedding = Some(i),
            "embedding" => {
                return Err(wrong_type(
                    f,
                    "a list, large list or fixed-size list of float32 or float64",
                ))
            }
            "metadata" => {
                match t {
                    t if is_string(t) => {}
                    DataType::Struct(fields) => {
                        if let Some(bad) =
                            fields.iter().find(|c| !is_metadata_scalar(c.data_type()))
                        {
                            return Err(Rejection::field(
                                "metadata",
                                format!(
                                    "metadata field {:.QUOTE_CHARS$} has type {}, expected \
                                     utf8, bool, an integer or a float",
                                    bad.name(),
                                    bad.data_type()
                                ),
                            ));
                        }
                    }
                    _ => {
                        return Err(wrong_type(
                            f,
                            "utf8 (a JSON object) or a struct of scalar fields",
                        ))
                    }
                }
                metadata = Some(i);
            }
            other => return Err(unknown_field(other, "column")),
        }
    }
    Ok(Layout {
        id: id.ok_or_else(|| Rejection::field("id", "the file has no id column"))?,
        embedding: embedding
            .ok_or_else(|| Rejection::field("embedding", "the file has no embedding column"))?,
        document,
        uri,
        metadata,
    })
}

fn parquet_record(layout: &Layout, batch: &RecordBatch, i: usize) -> Result<RawRecord, Rejection> {
    let col = |c: usize| batch.column(c).as_ref();
    let string = |c: Option<usize>| c.and_then(|c| string_at(col(c), i)).map(str::to_owned);
    Ok(RawRecord {
        id: string(Some(layout.id)).ok_or_else(|| required("id"))?,
        embedding: embedding_at(col(layout.embedding), i)?,
        document: string(layout.document),
        uri: string(layout.uri),
        metadata: match layout.metadata {
            Some(c) => metadata_at(col(c), i)?,
            None => None,
        },
    })
}

/// A string column's value (the layout checked the type).
fn string_at(a: &dyn Array, i: usize) -> Option<&str> {
    if a.is_null(i) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(i),
        DataType::LargeUtf8 => a.as_string::<i64>().value(i),
        _ => a.as_string_view().value(i),
    })
}

fn embedding_at(a: &dyn Array, i: usize) -> Result<Vec<f32>, Rejection> {
    if a.is_null(i) {
        return Err(required("embedding"));
    }
    let values: ArrayRef = match a.data_type() {
        DataType::List(_) => a.as_list::<i32>().value(i),
        DataType::LargeList(_) => a.as_list::<i64>().value(i),
        _ => a.as_fixed_size_list().value(i),
    };
    if let Some(j) = (0..values.len()).find(|&j| values.is_null(j)) {
        return Err(Rejection::field(
            "embedding",
            format!("embedding element {j} is null"),
        ));
    }
    Ok(match values.data_type() {
        DataType::Float32 => values.as_primitive::<Float32Type>().values().to_vec(),
        _ => values
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .map(|&v| v as f32)
            .collect(),
    })
}

fn metadata_at(a: &dyn Array, i: usize) -> Result<Option<UpdateMetadata>, Rejection> {
    if a.is_null(i) {
        return Ok(None);
    }
    let DataType::Struct(fields) = a.data_type() else {
        let text = string_at(a, i).unwrap_or_default();
        return match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => json_metadata(&m).map(Some),
            Ok(Value::Null) => Ok(None),
            Ok(other) => Err(Rejection::field(
                "metadata",
                format!(
                    "metadata must be a JSON object or null, got {}",
                    show(&other)
                ),
            )),
            Err(e) => Err(Rejection::field(
                "metadata",
                format!("metadata is not valid JSON: {e}"),
            )),
        };
    };
    let mut map = BTreeMap::new();
    for (field, column) in fields.iter().zip(a.as_struct().columns()) {
        if !column.is_null(i) {
            let value = scalar_at(column.as_ref(), i, field.name())?;
            map.insert(field.name().clone(), Some(value));
        }
    }
    Ok((!map.is_empty()).then_some(map))
}

/// A non-null scalar of a struct metadata field (the layout checked the type).
fn scalar_at(a: &dyn Array, i: usize, key: &str) -> Result<MetadataValue, Rejection> {
    use MetadataValue::{Bool, Float, Int, Str};
    Ok(match a.data_type() {
        DataType::Boolean => Bool(a.as_boolean().value(i)),
        DataType::Int8 => Int(a.as_primitive::<Int8Type>().value(i).into()),
        DataType::Int16 => Int(a.as_primitive::<Int16Type>().value(i).into()),
        DataType::Int32 => Int(a.as_primitive::<Int32Type>().value(i).into()),
        DataType::Int64 => Int(a.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Int(a.as_primitive::<UInt8Type>().value(i).into()),
        DataType::UInt16 => Int(a.as_primitive::<UInt16Type>().value(i).into()),
        DataType::UInt32 => Int(a.as_primitive::<UInt32Type>().value(i).into()),
        DataType::UInt64 => {
            let v = a.as_primitive::<UInt64Type>().value(i);
            Int(i64::try_from(v).map_err(|_| {
                Rejection::field(
                    "metadata",
                    format!(
                        "metadata value of key {key:.QUOTE_CHARS$} is {v}, beyond the largest \
                         64-bit signed integer"
                    ),
                )
            })?)
        }
        // The float32 closest to the written decimal, not its binary expansion
        // (0.1f32 stays 0.1 rather than 0.10000000149011612).
        DataType::Float32 => {
            let v = a.as_primitive::<Float32Type>().value(i);
            Float(v.to_string().parse().unwrap_or(f64::from(v)))
        }
        DataType::Float64 => Float(a.as_primitive::<Float64Type>().value(i)),
        _ => Str(string_at(a, i).unwrap_or_default().to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::types::{Float32Type, Float64Type};
    use arrow_array::{
        BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int32Array, Int64Array,
        Int8Array, LargeListArray, LargeStringArray, StringViewArray, StructArray, UInt64Array,
    };
    use arrow_buffer::NullBuffer;
    use arrow_schema::Fields;

    use super::*;
    use crate::ingest::fixtures::{
        dense, fixed_f64, ids, list_f32, parquet, parquet_grouped, strings,
    };
    use crate::ingest::parse::tests::{meta, read, read_err, record};
    use crate::ingest::parse::Format;

    /// The columns of a Parquet file to write.
    type Columns = Vec<(&'static str, ArrayRef)>;

    #[test]
    fn parquet_reads_every_column_type() {
        let large_ids: ArrayRef = Arc::new(LargeStringArray::from(vec!["a", "b"]));
        let view_ids: ArrayRef = Arc::new(StringViewArray::from(vec!["a", "b"]));
        let large_f64: ArrayRef = Arc::new(
            LargeListArray::from_iter_primitive::<Float64Type, _, _>(vec![
                Some(vec![Some(1.0), Some(2.0)]),
                Some(vec![Some(0.5), Some(-0.25)]),
            ]),
        );
        let fixed_f32: ArrayRef =
            Arc::new(
                FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
                    vec![
                        Some(vec![Some(1.0), Some(2.0)]),
                        Some(vec![Some(0.5), Some(-0.25)]),
                    ],
                    2,
                ),
            );
        let embeddings = [
            dense(&[vec![1.0, 2.0], vec![0.5, -0.25]]),
            large_f64,
            fixed_f32,
            fixed_f64(&[vec![1.0, 2.0], vec![0.5, -0.25]], 2),
        ];
        for id_column in [ids(&["a", "b"]), large_ids, view_ids] {
            for embedding in &embeddings {
                let file = parquet(vec![
                    ("id", id_column.clone()),
                    ("embedding", embedding.clone()),
                ]);
                assert_eq!(
                    read(Format::Parquet, file).unwrap(),
                    vec![
                        (Location::Row(0), record("a", &[1.0, 2.0])),
                        (Location::Row(1), record("b", &[0.5, -0.25])),
                    ],
                    "{:?} {:?}",
                    id_column.data_type(),
                    embedding.data_type()
                );
            }
        }
    }

    #[test]
    fn parquet_reads_documents_uris_and_json_metadata() {
        let file = parquet(vec![
            ("id", ids(&["a", "b", "c"])),
            ("embedding", dense(&[vec![1.0], vec![2.0], vec![3.0]])),
            ("document", strings(&[Some("doc a"), None, Some("")])),
            ("uri", strings(&[None, Some("u"), None])),
            (
                "metadata",
                Arc::new(LargeStringArray::from(vec![
                    Some(r#"{"k": "v", "n": 2, "x": null}"#),
                    None,
                    Some("null"),
                ])),
            ),
        ]);
        let records = read(Format::Parquet, file).unwrap();
        assert_eq!(records[0].1.document.as_deref(), Some("doc a"));
        assert_eq!(records[0].1.uri, None);
        assert_eq!(
            records[0].1.metadata,
            meta(&[
                ("k", Some(MetadataValue::Str("v".into()))),
                ("n", Some(MetadataValue::Int(2))),
                ("x", None),
            ])
        );
        assert_eq!(
            (
                records[1].1.document.as_deref(),
                records[1].1.uri.as_deref()
            ),
            (None, Some("u"))
        );
        assert_eq!(records[1].1.metadata, None);
        assert_eq!(records[2].1.document.as_deref(), Some(""));
        assert_eq!(records[2].1.metadata, None);
    }

    #[test]
    fn parquet_reads_struct_metadata_of_every_scalar_type() {
        let fields = Fields::from(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("i8", DataType::Int8, true),
            Field::new("i32", DataType::Int32, true),
            Field::new("i64", DataType::Int64, true),
            Field::new("u64", DataType::UInt64, true),
            Field::new("f32", DataType::Float32, true),
            Field::new("f64", DataType::Float64, true),
        ]);
        let columns: Vec<ArrayRef> = vec![
            strings(&[Some("x"), None, Some("z")]),
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            Arc::new(Int8Array::from(vec![Some(-3), None, Some(1)])),
            Arc::new(Int32Array::from(vec![Some(70_000), None, Some(1)])),
            Arc::new(Int64Array::from(vec![Some(i64::MIN), None, Some(1)])),
            Arc::new(UInt64Array::from(vec![Some(42), None, Some(1)])),
            Arc::new(Float32Array::from(vec![Some(0.1), None, Some(1.0)])),
            Arc::new(Float64Array::from(vec![Some(2.5), None, Some(1.0)])),
        ];
        // Row 1 has every field null, row 2 is a null struct.
        let nulls = NullBuffer::from(vec![true, true, false]);
        let metadata = StructArray::try_new(fields, columns, Some(nulls)).unwrap();
        let file = parquet(vec![
            ("id", ids(&["a", "b", "c"])),
            ("embedding", dense(&[vec![1.0], vec![2.0], vec![3.0]])),
            ("metadata", Arc::new(metadata)),
        ]);
        let records = read(Format::Parquet, file).unwrap();
        use MetadataValue::{Bool, Float, Int, Str};
        assert_eq!(
            records[0].1.metadata,
            meta(&[
                ("s", Some(Str("x".into()))),
                ("b", Some(Bool(true))),
                ("i8", Some(Int(-3))),
                ("i32", Some(Int(70_000))),
                ("i64", Some(Int(i64::MIN))),
                ("u64", Some(Int(42))),
                ("f32", Some(Float(0.1))),
                ("f64", Some(Float(2.5))),
            ])
        );
        assert_eq!(records[1].1.metadata, None);
        assert_eq!(records[2].1.metadata, None);
    }

    #[test]
    fn parquet_rows_are_numbered_across_row_groups() {
        let n = 7;
        let names: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let file = parquet_grouped(
            vec![
                ("id", ids(&refs)),
                ("embedding", dense(&vec![vec![1.0]; n])),
            ],
            3,
        );
        let records = read(Format::Parquet, file).unwrap();
        let got: Vec<(Location, &str)> = records.iter().map(|(l, r)| (*l, r.id.as_str())).collect();
        let want: Vec<(Location, &str)> = (0..n).map(|i| (Location::Row(i), refs[i])).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn parquet_schema_errors_name_the_column() {
        let emb = || dense(&[vec![1.0]]);
        let mut int_list = ListBuilder::new(arrow_array::builder::Int32Builder::new());
        int_list.values().append_value(1);
        int_list.append(true);
        let mut str_list = ListBuilder::new(StringBuilder::new());
        str_list.values().append_value("x");
        str_list.append(true);
        let list_struct = StructArray::from(vec![(
            Arc::new(Field::new(
                "tags",
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                true,
            )),
            Arc::new(str_list.finish()) as ArrayRef,
        )]);
        let cases: Vec<(Columns, &str, &str)> = vec![
            (vec![("embedding", emb())], "id", "no id column"),
            (
                vec![("id", ids(&["a"]))],
                "embedding",
                "no embedding column",
            ),
            (
                vec![
                    ("id", Arc::new(Int64Array::from(vec![1]))),
                    ("embedding", emb()),
                ],
                "id",
                "column id has type Int64",
            ),
            (
                vec![
                    ("id", ids(&["a"])),
                    ("embedding", Arc::new(int_list.finish())),
                ],
                "embedding",
                "column embedding has type List",
            ),
            (
                vec![
                    ("id", ids(&["a"])),
                    ("embedding", emb()),
                    ("document", Arc::new(Int32Array::from(vec![1]))),
                ],
                "document",
                "expected utf8",
            ),
            (
                vec![
                    ("id", ids(&["a"])),
                    ("embedding", emb()),
                    ("metadata", Arc::new(Int32Array::from(vec![1]))),
                ],
                "metadata",
                "a struct of scalar fields",
            ),
            (
                vec![
                    ("id", ids(&["a"])),
                    ("embedding", emb()),
                    ("metadata", Arc::new(list_struct)),
                ],
                "metadata",
                "metadata field tags has type List",
            ),
            (
                vec![
                    ("id", ids(&["a"])),
                    ("embedding", emb()),
                    ("documents", strings(&[Some("d")])),
                ],
                "documents",
                "unknown column documents",
            ),
        ];
        for (columns, field, reason) in cases {
            let r = read_err(Format::Parquet, parquet(columns));
            assert_eq!(r.field.as_deref(), Some(field), "{r}");
            assert_eq!(r.location, None, "{r}");
            assert!(r.reason.contains(reason), "{r}");
        }
    }

    #[test]
    fn parquet_value_errors_name_the_row_and_field() {
        let two = || dense(&[vec![1.0], vec![2.0]]);
        let big = StructArray::from(vec![(
            Arc::new(Field::new("n", DataType::UInt64, true)),
            Arc::new(UInt64Array::from(vec![1, u64::MAX])) as ArrayRef,
        )]);
        let cases: Vec<(Columns, &str, &str)> = vec![
            (
                vec![("id", strings(&[Some("a"), None])), ("embedding", two())],
                "id",
                "id is required",
            ),
            (
                vec![
                    ("id", ids(&["a", "b"])),
                    ("embedding", list_f32(&[Some(vec![Some(1.0)]), None])),
                ],
                "embedding",
                "embedding is required",
            ),
            (
                vec![
                    ("id", ids(&["a", "b"])),
                    (
                        "embedding",
                        list_f32(&[Some(vec![Some(1.0)]), Some(vec![Some(1.0), None])]),
                    ),
                ],
                "embedding",
                "embedding element 1 is null",
            ),
            (
                vec![
                    ("id", ids(&["a", "b"])),
                    ("embedding", two()),
                    ("metadata", Arc::new(big)),
                ],
                "metadata",
                "beyond the largest 64-bit signed integer",
            ),
            (
                vec![
                    ("id", ids(&["a", "b"])),
                    ("embedding", two()),
                    ("metadata", strings(&[None, Some("{oops")])),
                ],
                "metadata",
                "not valid JSON",
            ),
            (
                vec![
                    ("id", ids(&["a", "b"])),
                    ("embedding", two()),
                    ("metadata", strings(&[None, Some("[1]")])),
                ],
                "metadata",
                "must be a JSON object or null",
            ),
        ];
        for (columns, field, reason) in cases {
            let r = read_err(Format::Parquet, parquet(columns));
            assert_eq!(r.location, Some(Location::Row(1)), "{r}");
            assert_eq!(r.field.as_deref(), Some(field), "{r}");
            assert!(r.reason.contains(reason), "{r}");
        }
    }

    #[test]
    fn unreadable_parquet_is_rejected() {
        let r = read_err(Format::Parquet, Bytes::from_static(b"{\"id\": \"a\"}\n"));
        assert!(r.reason.contains("not a readable Parquet file"), "{r}");
        let good = parquet(vec![
            ("id", ids(&["a"])),
            ("embedding", dense(&[vec![1.0]])),
        ]);
        let r = read_err(Format::Parquet, good.slice(good.len() / 2..));
        assert!(r.reason.contains("Parquet"), "{r}");
    }
}
