//! Reading other databases' files, for `chroma import --from-chroma`.

pub mod chroma;
pub mod hnsw_files;
