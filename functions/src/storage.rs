//! Opening the engine over the backend chosen by the storage flags ([`StorageArgs`]),
//! as every command does; a build without the `aws` feature refuses the AWS backend.

use chroma_core::engine::EngineConfig;

use crate::assemble::{Backends, InProcess};
#[cfg(feature = "aws")]
use crate::aws;
use crate::{local, Backend, StorageArgs};

/// An engine over the chosen backend, with its in-process compaction queue.
pub async fn open(storage: &StorageArgs) -> anyhow::Result<InProcess> {
    let backends = match storage.backend {
        Backend::Local => {
            local::backends(&storage.path, storage.master_key_file.as_deref()).await?
        }
        Backend::Aws => aws_backends().await?,
    };
    Ok(backends.in_process(EngineConfig {
        // DynamoDB reads take milliseconds: a query of a settled collection searches
        // meanwhile (engine::read_ahead). SQLite answers in microseconds.
        read_ahead: storage.backend == Backend::Aws,
        ..EngineConfig::default()
    }))
}

#[cfg(feature = "aws")]
async fn aws_backends() -> anyhow::Result<Backends> {
    aws::connect().await
}

#[cfg(not(feature = "aws"))]
async fn aws_backends() -> anyhow::Result<Backends> {
    anyhow::bail!(NO_AWS)
}

#[cfg(not(feature = "aws"))]
pub(crate) const NO_AWS: &str = "this build of chroma has no AWS support: rebuild it with \
    `cargo build --release -p chroma-functions --features aws`";
