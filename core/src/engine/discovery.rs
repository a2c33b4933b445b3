//! Key discovery (api §3): the metadata keys and value types a write brings that the
//! collection's schema has no entry for are added to it, as copies of the schema's
//! defaults for that type, so the next read shows them. Every writer calls it after its
//! write: the HTTP routes, bulk ingest and `chroma import`.
//!
//! The schema is stored with the collection's configuration in the catalog; concurrent
//! discoveries (and modifies) each read it, add their keys and write it back with a
//! compare-and-set ([`CollectionUpdate::expected_configuration`]), reading again when
//! another change landed first, so no discovered key is lost.

use uuid::Uuid;

use super::Engine;
use crate::catalog::CollectionUpdate;
use crate::error::Result;
use crate::model::{Schema, UpdateMetadata};

/// The metadata maps of a stream of writes that bring something new to `schema`, at most
/// one per new key and value type: what [`Engine::discover_keys`] needs of a whole file.
#[derive(Debug)]
pub struct NewKeys {
    seen: Schema,
    written: Vec<UpdateMetadata>,
}

impl NewKeys {
    pub fn new(schema: Schema) -> Self {
        Self {
            seen: schema,
            written: Vec::new(),
        }
    }

    /// Keeps `metadata` if it brings a key or value type not seen yet.
    pub fn note(&mut self, metadata: &UpdateMetadata) {
        if self.seen.discover_keys(std::iter::once(metadata)) {
            self.written.push(metadata.clone());
        }
    }

    pub fn into_written(self) -> Vec<UpdateMetadata> {
        self.written
    }
}

impl Engine {
    /// Adds the keys `written` (metadata a successful write wrote) brings to the schema of
    /// collection `id`, with a compare-and-set that retries when the configuration changed
    /// meanwhile. Nothing to add costs one catalog read.
    pub async fn discover_keys(&self, id: Uuid, written: &[UpdateMetadata]) -> Result<()> {
        if written.is_empty() {
            return Ok(());
        }
        self.modify_collection(id, |current| {
            // A collection stored without a schema gets the one it is read with.
            let mut schema = current.configuration.schema().into_owned();
            if !schema.discover_keys(written) {
                return Ok(None);
            }
            let mut configuration = current.configuration.clone();
            configuration.schema = Some(schema);
            Ok::<_, crate::error::Error>(Some(CollectionUpdate {
                configuration: Some(configuration),
                ..Default::default()
            }))
        })
        .await
    }
}
