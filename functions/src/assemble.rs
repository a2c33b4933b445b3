//! One way to put an engine together, for every deployment: `chroma run` and the other
//! commands over a data directory ([`crate::local::backends`]) or over AWS
//! (`crate::aws::backends`), and each Lambda function (`crate::lambda::Deployment`).
//! Each names its [`Backends`] (where the catalog, the objects and the data keys are),
//! where compaction requests go, and the engine's settings; [`Engine::new`] does the rest.

use std::sync::Arc;

use chroma_core::catalog::Catalog;
use chroma_core::crypto::KeyProvider;
use chroma_core::engine::{Engine, EngineConfig};
use chroma_core::jobs::local::{LocalJobs, LocalJobsReceiver};
use chroma_core::jobs::Jobs;
use chroma_core::storage::ObjectStore;

/// Where an engine keeps its catalog, its objects and its data keys.
#[derive(Clone)]
pub struct Backends {
    pub catalog: Arc<dyn Catalog>,
    pub store: Arc<dyn ObjectStore>,
    pub key_provider: Arc<dyn KeyProvider>,
}

/// An engine whose compaction requests are queued in this process: `chroma run` compacts
/// them in its background ([`Engine::spawn_background`]); a one-shot command drops the
/// queue when it is done (what it leaves is compacted by the next server or sweep).
#[derive(Debug)]
pub struct InProcess {
    pub engine: Arc<Engine>,
    pub compaction_requests: LocalJobsReceiver,
}

impl Backends {
    /// The engine over these backends, its compaction requests queued in this process.
    pub fn in_process(self, config: EngineConfig) -> InProcess {
        let (jobs, compaction_requests) = LocalJobs::new();
        InProcess {
            engine: self.with_jobs(Arc::new(jobs), config),
            compaction_requests,
        }
    }

    /// The engine over these backends, its compaction requests sent to `jobs` (the
    /// Lambda functions' SQS queue).
    pub fn with_jobs(self, jobs: Arc<dyn Jobs>, config: EngineConfig) -> Arc<Engine> {
        Engine::new(self.catalog, self.store, self.key_provider, jobs, config)
    }
}
