//! Opening the engine over the backend chosen by the storage flags ([`StorageArgs`]),
//! as every command does; a build without the `aws` feature refuses the AWS backend.

use std::time::Duration;

#[cfg(feature = "aws")]
use crate::aws;
use crate::{local, Backend, StorageArgs};

/// An engine over the chosen backend, with its in-process compaction queue.
pub async fn open(storage: &StorageArgs) -> anyhow::Result<local::Opened> {
    match storage.backend {
        Backend::Local => {
            let local = local::open(&storage.path, storage.master_key_file.as_deref())?;
            let removed = local
                .store
                .remove_stale_temp_files(Duration::from_secs(3600))
                .await?;
            if removed > 0 {
                tracing::info!(
                    removed,
                    "removed temporary files left by interrupted writes"
                );
            }
            Ok(local.opened)
        }
        Backend::Aws => open_aws().await,
    }
}

#[cfg(feature = "aws")]
async fn open_aws() -> anyhow::Result<local::Opened> {
    aws::open().await
}

#[cfg(not(feature = "aws"))]
async fn open_aws() -> anyhow::Result<local::Opened> {
    anyhow::bail!(NO_AWS)
}

#[cfg(not(feature = "aws"))]
pub(crate) const NO_AWS: &str = "this build of chroma has no AWS support: rebuild it with \
    `cargo build --release -p chroma-functions --features aws`";
