//! Forks: copy-on-write copies of a collection, and what sharing objects means for
//! garbage collection and deletion.
//!
//! A fork is one catalog transaction ([`Names::fork_collection`]): the new collection's
//! manifest names the source's log batches and segments, and no object is copied or
//! written, whatever the collection's size. From then on the members of the lineage
//! (the root, its forks, their forks) write their own objects, all under the root's
//! prefix `c/{root}/` and sealed under the root's data key ([`Manifest::owner`]), so a
//! write on one side is invisible to the other: only the manifests differ.
//!
//! Sharing changes two things:
//! - **Garbage collection** of a member deletes an object it retired, or one no manifest
//!   names, only when no other member's manifest references it (live or retired): the
//!   last member to let go of an object deletes it.
//! - **Deleting** a member deletes only the objects no remaining member references.
//!   Deleting the last member deletes the whole prefix, and with its manifest the last
//!   wrapped copy of the data key: crypto-shredding a lineage's key means every member
//!   sharing it has been deleted.
//!
//! [`Names::fork_collection`]: crate::catalog::Names::fork_collection

use std::collections::HashSet;

use uuid::Uuid;

use super::{object_keys, Engine};
use crate::catalog::Manifest;
use crate::error::{ErrorCode, Result};
use crate::model::Collection;

impl Engine {
    /// Forks collection `source` into a new collection named `new_name` in the same
    /// database: the same configuration, metadata, dimension and records, sharing the
    /// source's objects. `NotFound` for a missing source, `AlreadyExists` for a taken
    /// name.
    pub async fn fork_collection(&self, source: Uuid, new_name: &str) -> Result<Collection> {
        crate::model::validate::validate_collection_name(new_name)?;
        let fork = self
            .catalog
            .fork_collection(source, Uuid::new_v4(), new_name)
            .await?;
        tracing::info!(source = %source, fork = %fork.id, "collection forked");
        Ok(fork)
    }

    /// Forks ever made in the lineage of collection `id` (0 for a collection never
    /// forked); the same from every member.
    pub async fn fork_count(&self, id: Uuid) -> Result<u64> {
        let manifest = self.catalog.get_manifest(id).await?;
        let Some(root) = manifest.lineage else {
            return Ok(0);
        };
        Ok(self
            .catalog
            .get_lineage(root)
            .await?
            .map_or(0, |lineage| lineage.forks))
    }

    /// Every object key the members of `manifest`'s lineage other than collection `id`
    /// reference (live or retired); `None` when no other member exists (a collection
    /// never forked, or the last member of its lineage).
    pub(super) async fn other_members_references(
        &self,
        id: Uuid,
        manifest: &Manifest,
    ) -> Result<Option<HashSet<String>>> {
        let Some(root) = manifest.lineage else {
            return Ok(None);
        };
        let Some(lineage) = self.catalog.get_lineage(root).await? else {
            return Ok(None);
        };
        let others: Vec<Uuid> = lineage.members.into_iter().filter(|m| *m != id).collect();
        if others.is_empty() {
            return Ok(None);
        }
        let mut referenced = HashSet::new();
        for member in others {
            match self.catalog.get_manifest(member).await {
                Ok(m) => referenced.extend(m.referenced_keys().map(str::to_owned)),
                // Deleted meanwhile: its deletion deleted what only it referenced.
                Err(e) if e.code() == ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(referenced))
    }

    /// Deletes the objects of deleted collection `id` (whose last manifest is
    /// `manifest`): those no remaining member of its lineage references, or its whole
    /// prefix when it was the last member (or never forked). Best effort: what a failure
    /// leaves is collected later.
    pub(super) async fn delete_member_objects(&self, id: Uuid, manifest: &Manifest) {
        match self.other_members_references(id, manifest).await {
            Ok(None) => {
                self.delete_prefix(&object_keys::collection_prefix(manifest.owner(id)))
                    .await
            }
            Ok(Some(shared)) => {
                let own: Vec<String> = manifest
                    .referenced_keys()
                    .filter(|k| !shared.contains(*k))
                    .map(str::to_owned)
                    .collect();
                self.delete_objects(&own).await;
            }
            Err(e) => {
                tracing::warn!(collection = %id, error = %e, "cannot tell which objects of a deleted fork are still shared; leaving them to garbage collection");
            }
        }
    }

    /// Whether the objects under the prefix of collection `id`, which no longer exists,
    /// still belong to a lineage some member of which does.
    pub(super) async fn prefix_in_use(&self, id: Uuid) -> Result<bool> {
        Ok(self
            .catalog
            .get_lineage(id)
            .await?
            .is_some_and(|l| !l.members.is_empty()))
    }
}
