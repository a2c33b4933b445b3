//! Object keys, built from UUIDs and ULIDs only.

use uuid::Uuid;

/// The prefix of every collection's objects.
pub const COLLECTIONS: &str = "c/";

/// The objects of collection `id`, and of the forks in its lineage when it is a
/// lineage's root ([`crate::catalog::Manifest::owner`]).
pub fn collection_prefix(id: Uuid) -> String {
    format!("c/{id}/")
}

pub fn log_batch(id: Uuid) -> String {
    format!("c/{id}/log/{}.parquet", ulid::Ulid::new())
}

pub fn segment_records(id: Uuid, segment: &str) -> String {
    format!("c/{id}/seg/{segment}/records.parquet")
}

pub fn segment_index(id: Uuid, segment: &str) -> String {
    format!("c/{id}/seg/{segment}/index.bin")
}

pub fn segment_sparse(id: Uuid, segment: &str) -> String {
    format!("c/{id}/seg/{segment}/sparse.bin")
}

pub fn segment_deletes(id: Uuid, segment: &str) -> String {
    format!("c/{id}/seg/{segment}/deletes-{}.bin", ulid::Ulid::new())
}
