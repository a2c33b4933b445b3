//! The data model: tenants, databases, collections, records, metadata and filters, with
//! the validation every input goes through (at the edge and again here).

pub mod collection;
pub mod configuration;
pub mod filter;
pub mod packed;
pub mod record;
pub mod schema;
pub mod search;
pub mod spann;
pub mod sparse;
pub mod validate;

pub use collection::{
    Collection, CollectionConfiguration, Database, HnswConfiguration, IfExists, Space, Tenant,
};
pub use filter::columns::MetadataColumns;
pub use filter::{Filter, Where, WhereDocument};
pub use record::{Metadata, MetadataValue, OpKind, Operation, Record, UpdateMetadata};
pub use schema::Schema;
pub use spann::{KnnIndex, SpannIndexConfig};
pub use validate::WriteBatch;
