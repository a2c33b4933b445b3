//! The vectors of a Chroma HNSW segment directory, read from its files (hnswlib's
//! layout, as Chroma persists it).
//!
//! - `header.bin`: Chroma's format version (u32, 1) then hnswlib's header, little-endian:
//!   `offset_level0`, `max_elements`, `cur_element_count`, `size_data_per_element`,
//!   `label_offset`, `offset_data` (u64 each), `max_level` (i32), `enter_point` (u32),
//!   `max_m`, `max_m0`, `m` (u64), `mult` (f64), `ef_construction` (u64): 100 bytes (96
//!   without the version, as plain hnswlib writes it).
//! - `data_level0.bin`: `cur_element_count` elements of `size_data_per_element` bytes;
//!   element `i`'s vector (f32 LE, the collection's dimension; normalized for cosine, as
//!   hnswlib stores them) at `offset_data`, its label (u64 LE) at `label_offset`.
//! - `length.bin`: for a cosine index, each element's original length (f32 LE, by
//!   element): Chroma answers a vector as the stored unit vector times its length.
//! - `index_metadata.pickle`: a pickled dict whose `id_to_label` maps each live record id
//!   to its label (deleted records are not in it), written with the files.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// hnswlib's header, without Chroma's version in front.
const HNSWLIB_HEADER_LEN: usize = 96;

/// The part of `index_metadata.pickle` the import needs.
#[derive(Debug, Deserialize)]
struct PersistentData {
    id_to_label: HashMap<String, u64>,
}

fn corrupt(dir: &Path, what: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "{} is not a Chroma HNSW segment directory: {what}",
        dir.display()
    ))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Whether `dir` holds a persisted index (Chroma writes one once a segment has seen
/// `sync_threshold` operations; before that its vectors are only in the queue).
pub fn is_persisted(dir: &Path) -> bool {
    dir.join("index_metadata.pickle").is_file() && dir.join("header.bin").is_file()
}

/// Every live record's vector as Chroma answers it: record id → vector of `dim` values
/// (of a `cosine` index, scaled back to its original length).
pub fn read_vectors(dir: &Path, dim: usize, cosine: bool) -> Result<HashMap<String, Vec<f32>>> {
    let io = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| corrupt(dir, format!("cannot read {name}: {e}")))
    };
    let pickle = io("index_metadata.pickle")?;
    let meta: PersistentData = serde_pickle::from_slice(&pickle, Default::default())
        .map_err(|e| corrupt(dir, format!("index_metadata.pickle: {e}")))?;
    let header = io("header.bin")?;
    let base = match header.len() {
        HNSWLIB_HEADER_LEN => 0,
        n if n == HNSWLIB_HEADER_LEN + 4 && header[..4] == 1u32.to_le_bytes() => 4,
        n => {
            return Err(corrupt(
                dir,
                format!("header.bin has {n} bytes, not a known format version"),
            ))
        }
    };
    let field = |i: usize, what: &str| {
        usize::try_from(u64_at(&header, base + 8 * i)).map_err(|_| corrupt(dir, what))
    };
    let count = field(2, "element count")?;
    let size = field(3, "element size")?;
    let label_offset = field(4, "label offset")?;
    let data_offset = field(5, "data offset")?;
    if data_offset + dim * 4 > size || label_offset + 8 > size {
        return Err(corrupt(
            dir,
            format!("elements of {size} bytes cannot hold {dim} dimensions and a label"),
        ));
    }
    let data = io("data_level0.bin")?;
    let needed = count
        .checked_mul(size)
        .ok_or_else(|| corrupt(dir, "element count"))?;
    if data.len() < needed {
        return Err(corrupt(
            dir,
            format!(
                "data_level0.bin has {} bytes, {count} elements need {needed}",
                data.len()
            ),
        ));
    }
    let lengths: Option<Vec<f32>> = if cosine {
        let bytes = io("length.bin")?;
        if bytes.len() < count * 4 {
            return Err(corrupt(
                dir,
                format!("length.bin is shorter than {count} lengths"),
            ));
        }
        Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
        )
    } else {
        None
    };
    let mut by_label = HashMap::with_capacity(count);
    for i in 0..count {
        let element = &data[i * size..(i + 1) * size];
        by_label.insert(u64_at(element, label_offset), i);
    }
    let mut vectors = HashMap::with_capacity(meta.id_to_label.len());
    for (id, label) in meta.id_to_label {
        let Some(&i) = by_label.get(&label) else {
            return Err(corrupt(
                dir,
                format!("record {id}'s label {label} has no element"),
            ));
        };
        let at = i * size + data_offset;
        let length = lengths.as_ref().map_or(1.0, |l| l[i]);
        let vector = data[at..at + dim * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .map(|x| if lengths.is_some() { x * length } else { x })
            .collect();
        vectors.insert(id, vector);
    }
    Ok(vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory as Chroma writes one: 2 elements of dimension 2 (one deleted), labels
    /// 7 and 9, unit vectors with their lengths.
    fn segment(version: bool, pickle: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let (dim, links) = (2usize, 4 + 4 * 4);
        let data_offset = links;
        let label_offset = data_offset + dim * 4;
        let size = label_offset + 8;
        let mut header = Vec::new();
        if version {
            header.extend(1u32.to_le_bytes());
        }
        for v in [
            0u64,
            4,
            2,
            size as u64,
            label_offset as u64,
            data_offset as u64,
        ] {
            header.extend(v.to_le_bytes());
        }
        header.extend(0i32.to_le_bytes());
        header.extend(0u32.to_le_bytes());
        for v in [2u64, 4, 2] {
            header.extend(v.to_le_bytes());
        }
        header.extend(0.5f64.to_le_bytes());
        header.extend(100u64.to_le_bytes());
        std::fs::write(dir.path().join("header.bin"), header).unwrap();
        let mut data = Vec::new();
        for (label, v) in [(7u64, [0.6f32, 0.8]), (9, [1.0, 0.0])] {
            let mut element = vec![0u8; size];
            for (i, x) in v.iter().enumerate() {
                element[data_offset + 4 * i..data_offset + 4 * i + 4]
                    .copy_from_slice(&x.to_le_bytes());
            }
            element[label_offset..].copy_from_slice(&label.to_le_bytes());
            data.extend(element);
        }
        std::fs::write(dir.path().join("data_level0.bin"), data).unwrap();
        let lengths: Vec<u8> = [5.0f32, 2.0].iter().flat_map(|l| l.to_le_bytes()).collect();
        std::fs::write(dir.path().join("length.bin"), lengths).unwrap();
        if pickle {
            let meta = std::collections::BTreeMap::from([(
                "id_to_label",
                std::collections::BTreeMap::from([("a", 7u64)]),
            )]);
            let bytes = serde_pickle::to_vec(&meta, Default::default()).unwrap();
            std::fs::write(dir.path().join("index_metadata.pickle"), bytes).unwrap();
        }
        dir
    }

    #[test]
    fn live_records_are_read_with_their_lengths() {
        for version in [true, false] {
            let dir = segment(version, true);
            assert!(is_persisted(dir.path()));
            let raw = read_vectors(dir.path(), 2, false).unwrap();
            assert_eq!(raw, HashMap::from([("a".to_owned(), vec![0.6, 0.8])]));
            let cosine = read_vectors(dir.path(), 2, true).unwrap();
            assert_eq!(cosine["a"], vec![0.6 * 5.0, 0.8 * 5.0]);
        }
    }

    #[test]
    fn damaged_directories_are_named_errors() {
        assert!(!is_persisted(segment(true, false).path()));
        let dir = segment(true, true);
        let e = read_vectors(dir.path(), 64, false).unwrap_err();
        assert!(e.message().contains("cannot hold 64 dimensions"), "{e}");
        std::fs::write(dir.path().join("header.bin"), [0u8; 50]).unwrap();
        let e = read_vectors(dir.path(), 2, false).unwrap_err();
        assert!(e.message().contains("not a known format version"), "{e}");
        std::fs::write(dir.path().join("index_metadata.pickle"), b"junk").unwrap();
        let e = read_vectors(dir.path(), 2, false).unwrap_err();
        assert!(e.message().contains("index_metadata.pickle"), "{e}");
    }
}
