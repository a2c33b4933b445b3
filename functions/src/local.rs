//! The local deployment: SQLite catalog, filesystem object store and a master key kept
//! outside the data directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chroma_core::catalog::sqlite::SqliteCatalog;
use chroma_core::crypto::local::{ensure_outside, KeySource, LocalKeyProvider};
use chroma_core::storage::local::LocalStore;
use chroma_core::storage::metered::Metered;

use crate::assemble::Backends;

/// Temporary files of interrupted writes older than this are removed at start.
const STALE_TEMP_FILES: Duration = Duration::from_secs(3600);

/// The backends of the data directory `dir` (created if needed): `dir/catalog.sqlite3`
/// and `dir/objects/`, with the master key from `CHROMA_MASTER_KEY`, `master_key_file` or
/// a generated file. Refuses a master key file inside `dir`. Removes the temporary files
/// interrupted writes left.
pub async fn backends(dir: &Path, master_key_file: Option<&Path>) -> anyhow::Result<Backends> {
    if let Some(file) = master_key_file {
        ensure_outside(file, dir)?;
    }
    let (key_provider, source) = LocalKeyProvider::from_env_or_file(master_key_file)
        .context("cannot load the master key")?;
    if let Some(file) = source.path() {
        ensure_outside(file, dir)?;
    }
    match &source {
        KeySource::Env => {
            tracing::info!(
                key_id = key_provider.key_id(),
                "master key from CHROMA_MASTER_KEY"
            )
        }
        KeySource::File(p) => {
            tracing::info!(key_id = key_provider.key_id(), file = %p.display(), "master key from file")
        }
        KeySource::Generated(p) => tracing::warn!(
            key_id = key_provider.key_id(),
            file = %p.display(),
            "generated a new master key file: back it up, the data cannot be read without it"
        ),
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let catalog = SqliteCatalog::open(&dir.join("catalog.sqlite3"))?;
    let store = LocalStore::new(dir.join("objects"))?;
    let removed = store.remove_stale_temp_files(STALE_TEMP_FILES).await?;
    if removed > 0 {
        tracing::info!(
            removed,
            "removed temporary files left by interrupted writes"
        );
    }
    Ok(Backends {
        catalog: Arc::new(catalog),
        store: Arc::new(Metered::new(Arc::new(store))),
        key_provider: Arc::new(key_provider),
    })
}
