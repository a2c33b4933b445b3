//! The local deployment: SQLite catalog, filesystem object store and a master key kept
//! outside the data directory.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chroma_core::catalog::sqlite::SqliteCatalog;
use chroma_core::crypto::local::{ensure_outside, KeySource, LocalKeyProvider};
use chroma_core::engine::{Engine, EngineConfig};
use chroma_core::jobs::local::{LocalJobs, LocalJobsReceiver};
use chroma_core::storage::local::LocalStore;
use chroma_core::storage::metered::Metered;

/// An engine with its in-process compaction queue, over any backend.
#[derive(Debug)]
pub struct Opened {
    pub engine: Arc<Engine>,
    pub receiver: LocalJobsReceiver,
}

/// An engine over a data directory.
#[derive(Debug)]
pub struct Local {
    pub opened: Opened,
    pub store: LocalStore,
}

/// Opens (creating if needed) the data directory `dir`: `dir/catalog.sqlite3` and
/// `dir/objects/`. Refuses a master key file inside `dir`.
pub fn open(dir: &Path, master_key_file: Option<&Path>) -> anyhow::Result<Local> {
    if let Some(file) = master_key_file {
        ensure_outside(file, dir)?;
    }
    let (keys, source) = LocalKeyProvider::from_env_or_file(master_key_file)
        .context("cannot load the master key")?;
    if let Some(file) = source.path() {
        ensure_outside(file, dir)?;
    }
    match &source {
        KeySource::Env => {
            tracing::info!(key_id = keys.key_id(), "master key from CHROMA_MASTER_KEY")
        }
        KeySource::File(p) => {
            tracing::info!(key_id = keys.key_id(), file = %p.display(), "master key from file")
        }
        KeySource::Generated(p) => tracing::warn!(
            key_id = keys.key_id(),
            file = %p.display(),
            "generated a new master key file: back it up, the data cannot be read without it"
        ),
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let catalog = SqliteCatalog::open(&dir.join("catalog.sqlite3"))?;
    let store = LocalStore::new(dir.join("objects"))?;
    let (jobs, receiver) = LocalJobs::new();
    let engine = Engine::new(
        Arc::new(catalog),
        Arc::new(Metered::new(Arc::new(store.clone()))),
        Arc::new(keys),
        Arc::new(jobs),
        EngineConfig::default(),
    );
    Ok(Local {
        opened: Opened { engine, receiver },
        store,
    })
}
