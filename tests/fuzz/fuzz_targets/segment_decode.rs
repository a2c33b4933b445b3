//! On-disk formats: arbitrary bytes into the log batch decoder, the records decoder (with
//! and without embeddings), the HNSW index loader and the sparse postings loader.
//!
//! Errors are fine; panics, aborts and huge allocations (see `chroma_fuzz::CappedAlloc`)
//! are not. Panics inside the parquet crate are turned into errors by `segment::guard`,
//! as in production (see `chroma_fuzz::contain_third_party_panics`).
//!
//! Whatever decodes must be usable: a decoded log batch re-encodes to the same
//! operations, a decoded records file has one value per row in every column, and a
//! loaded index answers searches and serializes back to bytes it loads again.
//!
//! The index formats end their head with a checksum, which random mutations almost
//! never get right, so the input is also loaded as a format 1 index body and as a
//! format 2, 3, 4 and 5 head: the magic and version are put in front of it and the
//! checksum recomputed, to reach the structural checks behind the checksum. A loaded head
//! answers candidate searches and re-ranks; a format 3 to 5 head is also read as the cold
//! path reads it (header, partitions and the vectors' table, then a few partitions' codes
//! by range, then the candidates' vectors, decoded as their codec says). The input is
//! also read as a records file by range (its footer, then some rows' pages), as the cold
//! path reads one, and as a segment's sparse postings: what loads answers sparse searches
//! and serializes back to the same bytes.
#![no_main]

use chroma_core::index::sparse::SparsePostings;
use chroma_core::index::{Candidates, ColdIndex, FixedBitSet, HnswIndex};
use chroma_core::model::sparse::SparseVector;
use chroma_core::model::Operation;
use chroma_core::segment::ranged::{read_footer, read_rows, Columns};
use chroma_core::segment::{decode_log_batch, decode_records, encode_log_batch};
use chroma_fuzz::{as_index_body, as_index_head, contain_third_party_panics, decoding};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: contain_third_party_panics(), |data: &[u8]| {
    if let Ok(ops) = decoding(|| decode_log_batch(data)) {
        check_log(&ops);
    }
    for with_embeddings in [false, true] {
        if let Ok(r) = decoding(|| decode_records(data, with_embeddings)) {
            let n = r.len();
            assert_eq!(r.offsets.len(), n);
            assert_eq!(r.documents.len(), n);
            assert_eq!(r.uris.len(), n);
            assert_eq!(r.metadatas.len(), n);
            match &r.embeddings {
                Some(e) => {
                    assert!(with_embeddings);
                    assert_eq!(e.len(), n * r.dim);
                    for i in 0..n {
                        assert_eq!(r.embedding(i).map(<[f32]>::len), Some(r.dim));
                    }
                }
                None => assert!(!with_embeddings),
            }
        }
    }
    check_ranged(data);
    if let Ok(index) = HnswIndex::from_bytes(data) {
        check_index(&index);
    }
    if let Ok(index) = HnswIndex::from_bytes(&as_index_body(data)) {
        check_index(&index);
    }
    if let Ok(index) = HnswIndex::from_head(&as_index_head(2, data)) {
        check_head(&index);
    }
    // Formats 3 to 5 differ in how the graph's layer 0 (4) and the vectors (5) are
    // written.
    for version in [3, 4, 5] {
        let head = as_index_head(version, data);
        if let Ok(index) = HnswIndex::from_head(&head) {
            check_head(&index);
        }
        check_cold(&head);
    }
    check_sparse(data);
});

/// Bytes read as a segment's sparse postings (for the row count their header names):
/// whatever loads re-serializes to the same bytes and answers searches within its rows.
fn check_sparse(data: &[u8]) {
    let Some(rows) = data.get(12..16) else {
        return;
    };
    let rows = u32::from_le_bytes([rows[0], rows[1], rows[2], rows[3]]) as usize;
    let Ok(postings) = SparsePostings::from_bytes(data, rows) else {
        return;
    };
    assert_eq!(postings.to_bytes(rows), data, "sparse postings round trip");
    let query = SparseVector {
        indices: vec![0, 1, 2, 7, 1000],
        values: vec![1.0, -0.5, 2.0, 0.25, 1.0],
        tokens: None,
    };
    let mut allowed = FixedBitSet::with_capacity(rows);
    allowed.insert_range(rows / 2..);
    for key in ["s", "sparse", ""] {
        for allowed in [None, Some(&allowed)] {
            let all = postings.scores(key, &query, allowed);
            assert!(all.iter().all(|&(r, _)| (r as usize) < rows));
            let top = postings.top(key, &query, allowed, 3);
            assert!(top.len() <= all.len());
        }
    }
}

/// An object read as the cold path reads it: whatever parses answers candidate searches
/// over the partitions it names and re-ranks.
fn check_cold(object: &[u8]) {
    let Some(header) = object.get(..ColdIndex::HEADER) else {
        return;
    };
    let Ok(Some(len)) = ColdIndex::prefix_len(header) else {
        return;
    };
    let Some(prefix) = usize::try_from(len).ok().and_then(|l| object.get(..l)) else {
        return;
    };
    let Ok(cold) = ColdIndex::parse(prefix) else {
        return;
    };
    let query = vec![0.5f32; cold.dim()];
    let probed = cold.probe(&query, 3);
    assert!(probed.iter().all(|&p| p < cold.partitions().count()));
    let ranges: Vec<_> = probed.iter().flat_map(|&p| cold.code_ranges(p)).collect();
    let Some(read) = ranges
        .iter()
        .map(|r| object.get(usize::try_from(r.start).ok()?..usize::try_from(r.end).ok()?))
        .collect::<Option<Vec<&[u8]>>>()
    else {
        return;
    };
    if let Ok(rows) = cold.candidates(&query, 5, &probed, &read, None) {
        assert!(rows.len() <= 5 && rows.iter().all(|&r| (r as usize) < cold.len()));
        let mut vectors = Vec::new();
        for &row in &rows {
            let r = cold.vector_range(row);
            let stored = usize::try_from(r.start)
                .ok()
                .zip(usize::try_from(r.end).ok())
                .and_then(|(start, end)| object.get(start..end));
            let before = vectors.len();
            match stored.map(|bytes| cold.codec().decode(bytes, &mut vectors)) {
                Some(Ok(())) => assert_eq!(vectors.len(), before + cold.dim()),
                _ => vectors.resize(before + cold.dim(), 0.25),
            }
        }
        assert!(cold.rerank(&query, 3, &rows, &vectors).len() <= 3);
    }
}

/// A loaded head finds candidates among its rows and re-ranks them.
fn check_head(index: &HnswIndex) {
    let n = index.len();
    let query = vec![0.5f32; if n > 0 { index.dim() } else { 0 }];
    let mut allow = FixedBitSet::with_capacity(n + 3);
    allow.insert_range(n / 2..);
    for (k, ef, allow, how) in [
        (1, 1, None, Candidates::Walk),
        (3, 10, Some(&allow), Candidates::Walk),
        (n + 1, 2, None, Candidates::Scan),
    ] {
        let rows = index.candidates(&query, k, ef, allow, how);
        assert!(rows.iter().all(|&r| (r as usize) < n));
        let vectors = vec![0.25f32; rows.len() * index.dim()];
        assert!(index.rerank(&query, k, &rows, &vectors).len() <= k.min(rows.len()));
    }
}

/// A decoded batch re-encodes (when its values allow) and decodes to itself.
fn check_log(ops: &[Operation]) {
    // Embeddings may hold any float, NaN included: compare bits.
    let key = |ops: &[Operation]| -> Vec<_> {
        ops.iter()
            .map(|op| {
                let bits = op
                    .embedding
                    .as_ref()
                    .map(|e| e.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
                (
                    op.kind,
                    op.id.clone(),
                    bits,
                    op.document.clone(),
                    op.uri.clone(),
                    op.metadata.clone(),
                )
            })
            .collect()
    };
    // Metadata that JSON cannot carry back (an empty array) is refused on encode.
    if let Ok(bytes) = encode_log_batch(ops) {
        let back = decode_log_batch(&bytes).expect("a re-encoded log batch decodes");
        assert!(key(&back) == key(ops), "log batch round trip");
    }
}

/// A loaded index answers every kind of search and serializes to bytes that load.
fn check_index(index: &HnswIndex) {
    let n = index.len();
    // Without rows any dimension loads (nothing bounds it by the input's size), and
    // every search returns nothing.
    let query = vec![0.5f32; if n > 0 { index.dim() } else { 0 }];
    for (k, ef) in [(1, 1), (3, 10), (n + 1, 2)] {
        for r in index.search(&query, k, ef, None) {
            assert!((r.0 as usize) < n);
        }
        assert!(index.exact(&query, k, None).len() <= k.min(n));
    }
    let mut allow = FixedBitSet::with_capacity(n + 3);
    allow.insert_range(n / 2..);
    for (row, _) in index.search(&query, 2, 4, Some(&allow)) {
        assert!(allow.contains(row as usize));
    }
    if n > 0 {
        index.vector(n as u32 - 1);
    }
    let again = HnswIndex::from_bytes(&index.to_bytes()).expect("a serialized index loads");
    assert_eq!((again.len(), again.dim()), (n, index.dim()));
}

/// Reads `data` as the cold path reads a records file: its footer from the end, then
/// every third of its first rows by their pages.
fn check_ranged(data: &[u8]) {
    let fetch = |ranges: Vec<std::ops::Range<u64>>| {
        let out = ranges
            .iter()
            .map(|r| {
                let end = (r.end as usize).min(data.len());
                let start = (r.start as usize).min(end);
                bytes_of(&data[start..end])
            })
            .collect();
        std::future::ready(Ok(out))
    };
    let len = data.len() as u64;
    let Ok(footer) = decoding(|| futures::executor::block_on(read_footer(len, fetch))) else {
        return;
    };
    let rows: Vec<u32> = (0..footer.rows().min(64) as u32).step_by(3).collect();
    let all = Columns::ALL;
    if let Ok(r) = decoding(|| futures::executor::block_on(read_rows(&footer, &rows, all, fetch))) {
        assert_eq!(r.len(), rows.len());
        assert_eq!(r.offsets.len(), rows.len());
        assert_eq!(r.metadatas.len(), rows.len());
    }
}

fn bytes_of(slice: &[u8]) -> chroma_core::segment::ranged::Bytes {
    chroma_core::segment::ranged::Bytes::copy_from_slice(slice)
}
