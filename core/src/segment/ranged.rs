//! Reading some rows of a records file by range, without the rest of it.
//!
//! A query against a segment that is not in memory (the cold path, `engine/cold.rs`)
//! needs the ids, documents and metadata of its ten or so results, not the segment's
//! every record. A records file (`records-v2`) is written with small data pages
//! (256 rows) and Parquet's offset index (where each page starts), so
//! 1. [`read_footer`] reads the file's end — the footer and the offset index, together
//!    in one read of [`SUFFIX_BYTES`] for a segment of up to about a million rows — and
//!    checks the format and schema as a whole-file decode does;
//! 2. [`read_rows`] reads, per wanted column, only the pages holding the wanted rows
//!    (Parquet's row selection over the offset index), all in one batch of ranges;
//! 3. [`find_ids`] reads the id column alone, for the fold of a log over a cold segment
//!    (which of the log's ids the segment holds).
//!
//! Reads go through a `fetch` function (ranges in, their bytes out: the encrypted
//! object's `RangeReader` in the engine, a slice in tests), so this module stays free of
//! I/O. Decoding is guarded like every other decode here: garbage is an error, never a
//! panic. Files written before small pages (any `records-v1` or `records-v2` file) read
//! the same way, a page being then up to a row group.

use std::collections::HashSet;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, StringArray};
/// What a `fetch` function returns per range.
pub use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::push_decoder::ParquetPushDecoderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataPushDecoder};
use parquet::DecodeResult;

use super::records::{decode_batch, records_schema, DecodedRecords, WHAT};
use super::{check_format, column, guard, READ_BATCH_ROWS, RECORDS_FORMAT_V1, RECORDS_FORMAT_V2};
use crate::error::{Error, Result};

/// Bytes [`read_footer`] reads from the end of a file at first.
pub const SUFFIX_BYTES: u64 = 1 << 20;

/// Which columns [`read_rows`] decodes (the embedding never is).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Columns {
    /// The offset and the id.
    pub keys: bool,
    pub documents: bool,
    pub uris: bool,
    pub metadatas: bool,
}

impl Columns {
    /// Every column.
    pub const ALL: Columns = Columns {
        keys: true,
        documents: true,
        uris: true,
        metadatas: true,
    };

    /// The offset and the id.
    pub const KEYS: Columns = Columns {
        keys: true,
        documents: false,
        uris: false,
        metadatas: false,
    };
}

/// A records file's footer and offset index: what reading any of its rows needs.
#[derive(Debug, Clone)]
pub struct RecordsFooter {
    metadata: ArrowReaderMetadata,
    rows: usize,
    dim: usize,
}

impl RecordsFooter {
    /// Rows in the file.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The dimension the file declares.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Heap bytes held, estimated.
    pub fn memory_bytes(&self) -> usize {
        self.metadata.metadata().memory_size()
    }
}

fn corrupt(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::internal_from("corrupt records file", e)
}

/// Fetches `ranges` and checks that each came back whole.
async fn fetch_checked<F, Fut>(fetch: &mut F, ranges: &[Range<u64>]) -> Result<Vec<Bytes>>
where
    F: FnMut(Vec<Range<u64>>) -> Fut,
    Fut: Future<Output = Result<Vec<Bytes>>>,
{
    if ranges.iter().any(|r| r.start > r.end) {
        return Err(Error::internal(
            "corrupt records file: a page range ends before it starts",
        ));
    }
    let data = fetch(ranges.to_vec()).await?;
    let whole = data.len() == ranges.len()
        && data
            .iter()
            .zip(ranges)
            .all(|(d, r)| d.len() as u64 == r.end - r.start);
    if !whole {
        return Err(Error::internal(
            "corrupt records file: a range read past its end",
        ));
    }
    Ok(data)
}

/// Reads and checks the footer of a records file of `len` bytes.
pub async fn read_footer<F, Fut>(len: u64, mut fetch: F) -> Result<RecordsFooter>
where
    F: FnMut(Vec<Range<u64>>) -> Fut,
    Fut: Future<Output = Result<Vec<Bytes>>>,
{
    let mut decoder = ParquetMetaDataPushDecoder::try_new(len)
        .map_err(corrupt)?
        .with_column_index_policy(PageIndexPolicy::Skip)
        .with_offset_index_policy(PageIndexPolicy::Optional);
    let tail: Vec<Range<u64>> = std::iter::once(len.saturating_sub(SUFFIX_BYTES)..len).collect();
    let data = fetch_checked(&mut fetch, &tail).await?;
    decoder.push_ranges(tail, data).map_err(corrupt)?;
    let metadata = loop {
        match guard(WHAT, || decoder.try_decode().map_err(corrupt))? {
            DecodeResult::NeedsData(ranges) => {
                let data = fetch_checked(&mut fetch, &ranges).await?;
                decoder.push_ranges(ranges, data).map_err(corrupt)?;
            }
            DecodeResult::Data(metadata) => break metadata,
            DecodeResult::Finished => {
                return Err(Error::internal("corrupt records file: no footer"));
            }
        }
    };
    let metadata = guard(WHAT, || {
        ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new()).map_err(corrupt)
    })?;
    let (_, dim, rows) = check_format(
        metadata.metadata(),
        metadata.schema(),
        &[RECORDS_FORMAT_V2, RECORDS_FORMAT_V1],
        records_schema,
    )?;
    Ok(RecordsFooter {
        metadata,
        rows,
        dim,
    })
}

/// Decodes the `names` columns of the `selected` rows (all rows: `None`), calling
/// `each` with every batch.
async fn decode<F, Fut>(
    footer: &RecordsFooter,
    names: &[&str],
    selected: Option<&[u32]>,
    mut fetch: F,
    mut each: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<usize>
where
    F: FnMut(Vec<Range<u64>>) -> Fut,
    Fut: Future<Output = Result<Vec<Bytes>>>,
{
    let schema = footer.metadata.parquet_schema();
    let roots: Vec<usize> = names
        .iter()
        .filter_map(|name| {
            footer
                .metadata
                .schema()
                .fields()
                .iter()
                .position(|f| f.name() == name)
        })
        .collect();
    let mask = ProjectionMask::roots(schema, roots);
    let mut builder = ParquetPushDecoderBuilder::new_with_metadata(footer.metadata.clone())
        .with_projection(mask)
        .with_batch_size(READ_BATCH_ROWS);
    if let Some(rows) = selected {
        let ranges = rows.iter().map(|&r| r as usize..r as usize + 1);
        builder =
            builder.with_row_selection(RowSelection::from_consecutive_ranges(ranges, footer.rows));
    }
    let mut decoder = guard(WHAT, || builder.build().map_err(corrupt))?;
    // Every page the decode will ask for, fetched at once: left to itself the decoder
    // asks row group by row group, one round trip each.
    let planned: Vec<Range<u64>> =
        guard(WHAT, || Ok(decoder.scan_plan().map(|p| p.range).collect()))?;
    if !planned.is_empty() {
        let data = fetch_checked(&mut fetch, &planned).await?;
        decoder.push_ranges(planned, data).map_err(corrupt)?;
    }
    let mut decoded = 0;
    loop {
        match guard(WHAT, || decoder.try_decode().map_err(corrupt))? {
            DecodeResult::NeedsData(ranges) => {
                let data = fetch_checked(&mut fetch, &ranges).await?;
                decoder.push_ranges(ranges, data).map_err(corrupt)?;
            }
            DecodeResult::Data(batch) => {
                decoded += batch.num_rows();
                each(&batch)?;
            }
            DecodeResult::Finished => return Ok(decoded),
        }
    }
}

/// The records of `rows` (ascending, distinct, each below [`RecordsFooter::rows`]), in
/// that order, with the columns `columns` names (the others `None`, or empty for the
/// keys).
pub async fn read_rows<F, Fut>(
    footer: &RecordsFooter,
    rows: &[u32],
    columns: Columns,
    fetch: F,
) -> Result<DecodedRecords>
where
    F: FnMut(Vec<Range<u64>>) -> Fut,
    Fut: Future<Output = Result<Vec<Bytes>>>,
{
    let ascending = rows.windows(2).all(|w| w[0] < w[1]);
    if !ascending || rows.last().is_some_and(|&r| r as usize >= footer.rows) {
        return Err(Error::internal(format!(
            "rows to read must be ascending and below {}",
            footer.rows
        )));
    }
    let mut out = DecodedRecords {
        dim: footer.dim,
        ..DecodedRecords::default()
    };
    if rows.is_empty() {
        return Ok(out);
    }
    let decoded = decode(footer, &column_names(columns), Some(rows), fetch, |batch| {
        guard(WHAT, || decode_batch(batch, &mut out))
    })
    .await?;
    if decoded != rows.len() {
        return Err(Error::internal(format!(
            "corrupt records file: {decoded} rows decoded, {} selected",
            rows.len()
        )));
    }
    Ok(out)
}

/// Every record, a batch at a time: each batch decoded on its own (the columns
/// `columns` names) and handed to `each` with the row it starts at, so a whole segment's
/// metadata is never held decoded at once. A batch that would run past the rows the
/// footer declares is an error before `each` sees it.
pub async fn for_each_batch<F, Fut>(
    footer: &RecordsFooter,
    columns: Columns,
    fetch: F,
    mut each: impl FnMut(usize, DecodedRecords) -> Result<()>,
) -> Result<()>
where
    F: FnMut(Vec<Range<u64>>) -> Fut,
    Fut: Future<Output = Result<Vec<Bytes>>>,
{
    let names = column_names(columns);
    let mut row = 0;
    let decoded = decode(footer, &names, None, fetch, |batch| {
        let mut out = DecodedRecords {
            dim: footer.dim,
            ..DecodedRecords::default()
        };
        guard(WHAT, || decode_batch(batch, &mut out))?;
        let first = row;
        row += batch.num_rows();
        if row > footer.rows {
            return Err(Error::internal(format!(
                "corrupt records file: more rows than the {} declared",
                footer.rows
            )));
        }
        each(first, out)
    })
    .await?;
    if decoded != footer.rows {
        return Err(Error::internal(format!(
            "corrupt records file: {decoded} rows decoded, {} declared",
            footer.rows
        )));
    }
    Ok(())
}

/// The Parquet columns of `columns`.
fn column_names(columns: Columns) -> Vec<&'static str> {
    [
        (columns.keys, "offset"),
        (columns.keys, "id"),
        (columns.documents, "document"),
        (columns.uris, "uri"),
        (columns.metadatas, "metadata"),
    ]
    .into_iter()
    .filter_map(|(wanted, name)| wanted.then_some(name))
    .collect()
}

/// The rows holding any of `ids`, with their ids, ascending: a read of the id column
/// alone (the last row wins for an id that repeats, as in a loaded segment).
pub async fn find_ids<F, Fut>(
    footer: &RecordsFooter,
    ids: &HashSet<&str>,
    fetch: F,
) -> Result<Vec<(u32, String)>>
where
    F: FnMut(Vec<Range<u64>>) -> Fut,
    Fut: Future<Output = Result<Vec<Bytes>>>,
{
    let mut found = std::collections::HashMap::new();
    if ids.is_empty() || footer.rows == 0 {
        return Ok(Vec::new());
    }
    let mut row = 0u32;
    let decoded = decode(footer, &["id"], None, fetch, |batch| {
        let column = column::<StringArray>(batch, "id", WHAT)?;
        for i in 0..batch.num_rows() {
            if column.is_valid(i) && ids.contains(column.value(i)) {
                found.insert(column.value(i).to_string(), row);
            }
            row += 1;
        }
        Ok(())
    })
    .await?;
    if decoded != footer.rows {
        return Err(Error::internal(format!(
            "corrupt records file: {decoded} ids decoded, {} declared",
            footer.rows
        )));
    }
    let mut found: Vec<(u32, String)> = found.into_iter().map(|(id, row)| (row, id)).collect();
    found.sort_unstable();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::model::record::{MetadataValue, Record};
    use crate::segment::{decode_records, encode_records, encode_records_without_embeddings};

    fn records(n: usize) -> Vec<(u64, Record)> {
        (0..n)
            .map(|i| {
                let mut metadata = crate::model::Metadata::new();
                metadata.insert("i".into(), MetadataValue::Int(i as i64));
                let record = Record {
                    id: format!("id-{i}"),
                    embedding: vec![i as f32, 1.0],
                    document: (i % 3 != 0).then(|| format!("document {i} {}", "x".repeat(i % 50))),
                    uri: (i % 5 == 0).then(|| format!("s3://b/{i}")),
                    metadata: (i % 4 != 0).then_some(metadata),
                };
                (10 * i as u64 + 7, record)
            })
            .collect()
    }

    fn encode(rows: &[(u64, Record)]) -> Vec<u8> {
        let refs: Vec<(u64, &Record)> = rows.iter().map(|(o, r)| (*o, r)).collect();
        encode_records_without_embeddings(&refs).unwrap()
    }

    /// A fetch over `bytes` that counts what it read.
    fn fetcher<'a>(
        bytes: &'a [u8],
        read: &'a AtomicU64,
    ) -> impl FnMut(Vec<Range<u64>>) -> std::future::Ready<Result<Vec<Bytes>>> + 'a {
        move |ranges| {
            let out = ranges
                .iter()
                .map(|r| {
                    let end = (r.end as usize).min(bytes.len());
                    let start = (r.start as usize).min(end);
                    read.fetch_add((end - start) as u64, Ordering::Relaxed);
                    Bytes::copy_from_slice(&bytes[start..end])
                })
                .collect();
            std::future::ready(Ok(out))
        }
    }

    #[tokio::test]
    async fn some_rows_read_by_range_are_those_of_a_whole_decode() {
        let rows = records(20_000);
        let bytes = encode(&rows);
        let whole = decode_records(&bytes, false).unwrap();
        let read = AtomicU64::new(0);
        let footer = read_footer(bytes.len() as u64, fetcher(&bytes, &read))
            .await
            .unwrap();
        assert_eq!((footer.rows(), footer.dim()), (20_000, 2));
        let footer_bytes = read.swap(0, Ordering::Relaxed);

        let wanted = [0u32, 1, 2, 257, 5_000, 12_345, 19_999];
        let all = Columns::ALL;
        let got = read_rows(&footer, &wanted, all, fetcher(&bytes, &read))
            .await
            .unwrap();
        let rows_bytes = read.swap(0, Ordering::Relaxed);
        // The rows span three row groups, and were read in one batch of ranges.
        let calls = AtomicU64::new(0);
        let counting = |ranges: Vec<Range<u64>>| {
            calls.fetch_add(1, Ordering::Relaxed);
            fetcher(&bytes, &read)(ranges)
        };
        read_rows(&footer, &wanted, all, counting).await.unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        read.store(0, Ordering::Relaxed);
        for (i, &row) in wanted.iter().enumerate() {
            let r = row as usize;
            assert_eq!(got.ids[i], whole.ids[r]);
            assert_eq!(got.offsets[i], whole.offsets[r]);
            assert_eq!(got.documents[i], whole.documents[r]);
            assert_eq!(got.uris[i], whole.uris[r]);
            assert_eq!(got.metadatas[i], whole.metadatas[r]);
        }
        // The pages of seven rows, not the file.
        assert!(
            rows_bytes * 10 < bytes.len() as u64,
            "read {rows_bytes} of {} bytes for {} rows (footer {footer_bytes})",
            bytes.len(),
            wanted.len()
        );

        // Columns left out come back empty.
        let ids_only = read_rows(&footer, &wanted, Columns::KEYS, fetcher(&bytes, &read))
            .await
            .unwrap();
        assert_eq!(ids_only.ids, got.ids);
        assert!(ids_only.documents.iter().all(Option::is_none));
        assert!(ids_only.metadatas.iter().all(Option::is_none));
        assert!(read.load(Ordering::Relaxed) < rows_bytes);
    }

    #[tokio::test]
    async fn ids_are_found_by_reading_the_id_column() {
        let rows = records(3_000);
        let bytes = encode(&rows);
        let read = AtomicU64::new(0);
        let footer = read_footer(bytes.len() as u64, fetcher(&bytes, &read))
            .await
            .unwrap();
        let ids: HashSet<&str> = ["id-2999", "id-5", "nope", "id-1024"].into_iter().collect();
        let found = find_ids(&footer, &ids, fetcher(&bytes, &read))
            .await
            .unwrap();
        assert_eq!(
            found,
            vec![
                (5, "id-5".to_string()),
                (1024, "id-1024".to_string()),
                (2999, "id-2999".to_string())
            ]
        );
    }

    #[tokio::test]
    async fn version_1_files_and_empty_files_read_too() {
        let rows = records(600);
        let refs: Vec<(u64, &Record)> = rows.iter().map(|(o, r)| (*o, r)).collect();
        let bytes = encode_records(&refs).unwrap();
        let read = AtomicU64::new(0);
        let footer = read_footer(bytes.len() as u64, fetcher(&bytes, &read))
            .await
            .unwrap();
        let got = read_rows(
            &footer,
            &[3, 599],
            Columns {
                documents: true,
                ..Columns::KEYS
            },
            fetcher(&bytes, &read),
        )
        .await
        .unwrap();
        assert_eq!(got.ids, ["id-3", "id-599"]);
        assert_eq!(got.documents[1], rows[599].1.document);

        let empty = encode(&[]);
        let footer = read_footer(empty.len() as u64, fetcher(&empty, &read))
            .await
            .unwrap();
        assert_eq!(footer.rows(), 0);
        let got = read_rows(&footer, &[], Columns::KEYS, fetcher(&empty, &read))
            .await
            .unwrap();
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn bad_rows_and_bad_files_are_errors() {
        let rows = records(100);
        let bytes = encode(&rows);
        let read = AtomicU64::new(0);
        let footer = read_footer(bytes.len() as u64, fetcher(&bytes, &read))
            .await
            .unwrap();
        for bad in [&[5u32, 3][..], &[100], &[7, 7]] {
            let err = read_rows(&footer, bad, Columns::KEYS, fetcher(&bytes, &read))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("ascending"), "{err}");
        }
        // A log batch is not a records file; truncated or flipped files never panic.
        let log = crate::segment::encode_log_batch(&[]).unwrap();
        assert!(read_footer(log.len() as u64, fetcher(&log, &read))
            .await
            .is_err());
        for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
            let part = &bytes[..cut];
            assert!(read_footer(part.len() as u64, fetcher(part, &read))
                .await
                .is_err());
        }
        for at in (0..bytes.len()).step_by(97) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x5a;
            if let Ok(footer) = read_footer(flipped.len() as u64, fetcher(&flipped, &read)).await {
                let all = Columns::ALL;
                let n = footer.rows().min(100) as u32;
                let wanted: Vec<u32> = (0..n).step_by(7).collect();
                let _ = read_rows(&footer, &wanted, all, fetcher(&flipped, &read)).await;
            }
        }
    }

    #[tokio::test]
    async fn a_page_range_that_ends_before_it_starts_is_corrupt_and_never_fetched() {
        let mut asked = false;
        let fetch = |_: Vec<Range<u64>>| {
            asked = true;
            std::future::ready(Ok(vec![Bytes::new()]))
        };
        let mut fetch = fetch;
        let inverted = vec![0..3, Range { start: 10, end: 4 }];
        let err = fetch_checked(&mut fetch, &inverted).await.unwrap_err();
        assert!(err.to_string().contains("ends before it starts"), "{err}");
        assert!(!asked);
    }

    #[tokio::test]
    async fn every_damaged_byte_of_a_footer_is_an_error_or_a_decode() {
        // The footer and the offset index are the tail of the file: a damaged page
        // location (a negative size, an offset past the end) must not panic the reader.
        let bytes = encode(&records(600));
        let read = AtomicU64::new(0);
        let from = bytes.len().saturating_sub(3_000);
        for at in from..bytes.len() {
            for mask in [0x80u8, 0xff, 0x01] {
                let mut flipped = bytes.clone();
                flipped[at] ^= mask;
                let len = flipped.len() as u64;
                if let Ok(footer) = read_footer(len, fetcher(&flipped, &read)).await {
                    let wanted: Vec<u32> = (0..footer.rows().min(600) as u32).step_by(50).collect();
                    let _ =
                        read_rows(&footer, &wanted, Columns::ALL, fetcher(&flipped, &read)).await;
                }
            }
        }
    }
}
