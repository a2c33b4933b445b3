//! Whether the engine can serve: the catalog, the object store and the key provider each
//! answer one small request within [`PROBE_TIMEOUT`]. The answer is kept for
//! [`HEALTH_TTL`], so probes of a load balancer cost the backends little.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Engine;
use crate::catalog::DEFAULT_TENANT;
use crate::crypto::EncryptionContext;
use crate::error::{ErrorCode, Result};

/// How long each probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an answer is reused.
pub const HEALTH_TTL: Duration = Duration::from_secs(5);

/// The outcome of each probe: `None` when it answered, else what went wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub catalog: Option<String>,
    pub store: Option<String>,
    pub key_provider: Option<String>,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.catalog.is_none() && self.store.is_none() && self.key_provider.is_none()
    }
}

/// `None` if `probe` answered in time (a `NotFound` is an answer), else why not.
async fn probe<T>(
    what: &str,
    probe: impl std::future::Future<Output = Result<T>>,
) -> Option<String> {
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) if e.code() == ErrorCode::NotFound => None,
        Ok(Err(e)) => Some(format!("{what}: {e}")),
        Err(_) => Some(format!("{what}: no answer within {PROBE_TIMEOUT:?}")),
    }
}

impl Engine {
    /// Probes the backends (or reuses an answer younger than [`HEALTH_TTL`]).
    pub async fn health(&self) -> Health {
        if let Some((at, health)) = self.health.lock().expect("health lock").clone() {
            if at.elapsed() < HEALTH_TTL {
                return health;
            }
        }
        let ctx = EncryptionContext {
            tenant: "_health".to_owned(),
            database: "_health".to_owned(),
            collection: Uuid::nil(),
        };
        let (catalog, store, key_provider) = futures::join!(
            probe("catalog", self.catalog.get_tenant(DEFAULT_TENANT)),
            probe("object store", self.store.head("health/probe")),
            probe("key provider", self.key_provider.generate_data_key(&ctx)),
        );
        let health = Health {
            catalog,
            store,
            key_provider,
        };
        if !health.ready() {
            tracing::warn!(?health, "not ready");
        }
        *self.health.lock().expect("health lock") = Some((Instant::now(), health.clone()));
        health
    }

    #[cfg(test)]
    fn forget_health(&self) {
        *self.health.lock().expect("health lock") = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::catalog::sqlite::SqliteCatalog;
    use crate::crypto::local::LocalKeyProvider;
    use crate::crypto::{DataKey, KeyProvider};
    use crate::engine::EngineConfig;
    use crate::error::Error;
    use crate::jobs::local::LocalJobs;
    use crate::storage::memory::MemoryStore;

    /// A key provider that can be made to fail or to hang.
    #[derive(Debug)]
    struct Flaky {
        inner: LocalKeyProvider,
        failing: AtomicBool,
        hanging: AtomicBool,
    }

    #[async_trait]
    impl KeyProvider for Flaky {
        async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<(DataKey, Vec<u8>)> {
            if self.hanging.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(Error::unavailable("KMS is down"));
            }
            self.inner.generate_data_key(ctx).await
        }
        async fn unwrap_data_key(
            &self,
            wrapped: &[u8],
            ctx: &EncryptionContext,
        ) -> Result<DataKey> {
            self.inner.unwrap_data_key(wrapped, ctx).await
        }
    }

    #[tokio::test]
    async fn a_failing_or_silent_backend_is_not_ready() {
        let keys = Arc::new(Flaky {
            inner: LocalKeyProvider::from_bytes([1u8; 32]),
            failing: AtomicBool::new(false),
            hanging: AtomicBool::new(false),
        });
        let (jobs, _requests) = LocalJobs::new();
        let engine = Engine::new(
            Arc::new(SqliteCatalog::in_memory().unwrap()),
            Arc::new(MemoryStore::new()),
            keys.clone(),
            Arc::new(jobs),
            EngineConfig::default(),
        );
        assert!(engine.health().await.ready(), "{:?}", engine.health().await);

        keys.failing.store(true, Ordering::SeqCst);
        assert!(
            engine.health().await.ready(),
            "the last answer is reused for a while"
        );
        engine.forget_health();
        let health = engine.health().await;
        assert!(!health.ready());
        assert!(
            health
                .key_provider
                .as_deref()
                .unwrap()
                .contains("KMS is down"),
            "{health:?}"
        );
        assert_eq!((health.catalog, health.store), (None, None));

        keys.failing.store(false, Ordering::SeqCst);
        keys.hanging.store(true, Ordering::SeqCst);
        engine.forget_health();
        let health = engine.health().await;
        assert!(
            health
                .key_provider
                .as_deref()
                .unwrap()
                .contains("no answer"),
            "{health:?}"
        );

        keys.hanging.store(false, Ordering::SeqCst);
        engine.forget_health();
        assert!(engine.health().await.ready());
    }
}
