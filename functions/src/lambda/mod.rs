//! The Lambda functions of the AWS deployment. Each binary in `src/bin/` is a few lines
//! calling into here; the code that decides anything is in `chroma-core`.
//!
//! | function | trigger | module |
//! |---|---|---|
//! | `query` | API Gateway HTTP API: read routes | [`http`] |
//! | `ingest` | API Gateway HTTP API: write and admin routes | [`http`] |
//! | `ingest-events` | SQS: S3 `ObjectCreated` under `ingest/` | [`ingest_events`] |
//! | `compact` | SQS compaction requests, EventBridge schedule | [`compact`] |
//!
//! Configuration comes from the environment the SAM template sets: the AWS backends
//! (`CHROMA_BUCKET`, `CHROMA_TABLE_PREFIX`, `CHROMA_KMS_KEY_ID`,
//! `CHROMA_COMPACTION_QUEUE_URL`, …, see [`chroma_core::aws::AwsConfig`]) and the HTTP
//! settings of `chroma run` ([`crate::ApiArgs`], same variable names).

pub mod compact;
pub mod http;
pub mod ingest_events;
pub mod metrics;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use chroma_core::aws::sqs::SqsJobs;
use chroma_core::aws::{AwsBackends, AwsConfig};
use chroma_core::engine::{Engine, EngineConfig};
use chroma_core::storage::disk_cache::DiskCache;

/// Which function a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Query,
    Ingest,
    IngestEvents,
    Compact,
}

impl Function {
    /// The function's name, as in the template and the `function` metric dimension.
    pub fn name(self) -> &'static str {
        match self {
            Function::Query => "query",
            Function::Ingest => "ingest",
            Function::IngestEvents => "ingest-events",
            Function::Compact => "compact",
        }
    }
}

/// What the execution environment offers a function.
#[derive(Debug, Clone)]
pub struct Resources {
    /// The function's memory (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`), in MiB.
    pub memory_mib: u64,
    /// A directory for the read-through disk cache and its size in bytes; `None`: none.
    pub disk_cache: Option<(PathBuf, u64)>,
    /// Days rejected bulk files are kept (`CHROMA_FAILED_INGEST_RETENTION_DAYS`; the
    /// template passes its `FailedIngestRetentionDays`), `None`: the engine's default.
    pub failed_ingest_retention_days: Option<u64>,
    /// The function answers the read routes too (`CHROMA_SERVES_READS=true`: the ingest
    /// function behind the template's Function URL), so it caches as the query function
    /// does.
    pub serves_reads: bool,
}

/// Memory assumed when `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` is unset (outside Lambda).
const DEFAULT_MEMORY_MIB: u64 = 1024;
/// Size of the `/tmp` cache where the file system cannot say how much is free: most of
/// Lambda's least ephemeral storage (512 MB).
const FALLBACK_DISK_CACHE_BYTES: u64 = 400 << 20;

impl Resources {
    /// From the Lambda environment: memory from `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`; the
    /// query function (and one that serves reads, `CHROMA_SERVES_READS`) caches objects
    /// in `/tmp/chroma-cache` (`CHROMA_DISK_CACHE_BYTES`; 0 turns it off). By default
    /// the cache takes 90% of the free space of `/tmp` — on Lambda the function's
    /// ephemeral storage, which the template sizes so that a collection's vectors fit —
    /// or half of it in a function that also ingests, whose builds write there.
    pub fn from_env(function: Function) -> anyhow::Result<Self> {
        let serves_reads = function == Function::Query
            || match std::env::var("CHROMA_SERVES_READS") {
                Ok(v) => v.trim().parse().with_context(|| {
                    format!("CHROMA_SERVES_READS must be true or false, got {v:?}")
                })?,
                Err(_) => false,
            };
        let memory_mib = match std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") {
            Ok(v) => v.trim().parse().with_context(|| {
                format!("AWS_LAMBDA_FUNCTION_MEMORY_SIZE must be a number of MiB, got {v:?}")
            })?,
            Err(_) => DEFAULT_MEMORY_MIB,
        };
        let dir = std::env::temp_dir().join("chroma-cache");
        let disk_bytes = match std::env::var("CHROMA_DISK_CACHE_BYTES") {
            Ok(v) if !v.trim().is_empty() => v.trim().parse().with_context(|| {
                format!("CHROMA_DISK_CACHE_BYTES must be a number of bytes, got {v:?}")
            })?,
            _ => {
                let share = if function == Function::Query {
                    0.9
                } else {
                    0.5
                };
                DiskCache::capacity_from_free_space(&dir, share)
                    .unwrap_or(FALLBACK_DISK_CACHE_BYTES)
            }
        };
        let disk_cache = (serves_reads && disk_bytes > 0).then_some((dir, disk_bytes));
        let failed_ingest_retention_days =
            match std::env::var("CHROMA_FAILED_INGEST_RETENTION_DAYS") {
                Ok(v) if !v.trim().is_empty() => Some(v.trim().parse().with_context(|| {
                    format!(
                        "CHROMA_FAILED_INGEST_RETENTION_DAYS must be a number of days, got {v:?}"
                    )
                })?),
                _ => None,
            };
        Ok(Self {
            memory_mib,
            disk_cache,
            failed_ingest_retention_days,
            serves_reads,
        })
    }

    /// Bytes of decoded segments a function keeps in memory across warm invocations:
    /// three fifths of its memory for `query`, whose job is reading (loading a segment
    /// peaks at 1.43 times what it keeps: 1M × 768, the scale benchmark's
    /// `CHROMA_SCALE_OPEN` pass, so a full cache and a load fit with the runtime beside
    /// them), half for a function that serves reads and builds too, a quarter for the
    /// others.
    pub fn cache_bytes(&self, function: Function) -> usize {
        let memory = self.memory_mib.saturating_mul(1 << 20);
        let share = match function {
            Function::Query => memory / 5 * 3,
            _ if self.serves_reads => memory / 2,
            _ => memory / 4,
        };
        usize::try_from(share.max(32 << 20)).unwrap_or(usize::MAX)
    }
}

impl Resources {
    /// Bytes a compaction's index build may use: 60% of the function's memory (the
    /// cache takes a quarter, the runtime and the request the rest). Bounds the rows of
    /// the segments the function builds (see `EngineConfig::build_memory_bytes`).
    pub fn build_memory_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(1 << 20) / 5 * 3
    }
}

/// One function's view of the deployment: the engine over S3, DynamoDB and KMS, with
/// compaction requests going to the SQS queue.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub engine: Arc<Engine>,
    pub aws: AwsConfig,
    pub backends: AwsBackends,
}

impl Deployment {
    /// From the environment; fails naming every missing or malformed variable.
    pub async fn from_env(function: Function) -> anyhow::Result<Self> {
        metrics::init(function);
        let aws = AwsConfig::from_env()?;
        Self::connect(aws, function, Resources::from_env(function)?).await
    }

    /// Over the backends `aws` names.
    pub async fn connect(
        aws: AwsConfig,
        function: Function,
        resources: Resources,
    ) -> anyhow::Result<Self> {
        let Some(queue_url) = aws.compaction_queue_url.clone() else {
            anyhow::bail!(
                "CHROMA_COMPACTION_QUEUE_URL is not set: Lambda functions ask for compaction \
                 through the deployment's FIFO queue"
            );
        };
        let backends = AwsBackends::connect(&aws).await;
        if function == Function::Ingest {
            // A fresh deployment's tables are empty; Chroma's clients expect the default
            // tenant and database. Two conditional writes, only where writes are allowed.
            backends
                .catalog
                .ensure_defaults()
                .await
                .context("cannot create the default tenant and database in DynamoDB")?;
        }
        // The disk cache's misses go to S3 as every server reads it.
        let mut parts = crate::aws::backends(&backends);
        if let Some((dir, bytes)) = &resources.disk_cache {
            parts.store = Arc::new(DiskCache::new(
                parts.store,
                dir,
                *bytes,
                vec!["c/".to_owned()],
            )?);
        }
        let defaults = EngineConfig::default();
        let config = EngineConfig {
            cache_bytes: resources.cache_bytes(function),
            build_memory_bytes: resources.build_memory_bytes(),
            // The compact function serves no queries: its builds take every core.
            build_threads: match function {
                Function::Compact => 0,
                _ => defaults.build_threads,
            },
            // DynamoDB reads take milliseconds: a query of a settled collection searches
            // meanwhile (engine::read_ahead).
            read_ahead: resources.serves_reads,
            failed_ingest_retention: resources
                .failed_ingest_retention_days
                .map_or(defaults.failed_ingest_retention, |d| {
                    std::time::Duration::from_secs(d.saturating_mul(86_400))
                }),
            ..defaults
        };
        let engine = parts.with_jobs(Arc::new(SqsJobs::new(&backends.clients, queue_url)), config);
        tracing::info!(
            function = ?function,
            bucket = %aws.bucket,
            table_prefix = %aws.table_prefix,
            memory_mib = resources.memory_mib,
            cache_bytes = resources.cache_bytes(function),
            disk_cache_bytes = resources.disk_cache.as_ref().map(|(_, b)| *b).unwrap_or(0),
            "function ready"
        );
        Ok(Self {
            engine,
            aws,
            backends,
        })
    }
}

/// JSON logs (CloudWatch) at `RUST_LOG` or `info`.
pub fn init_logging() {
    crate::init_logging(crate::LogFormat::Json);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_shares() {
        let r = Resources {
            memory_mib: 1769,
            disk_cache: None,
            failed_ingest_retention_days: None,
            serves_reads: false,
        };
        assert_eq!(r.cache_bytes(Function::Query), (1769 << 20) / 5 * 3);
        assert_eq!(r.cache_bytes(Function::Ingest), (1769 << 20) / 4);
        // The ingest function behind a Function URL answers queries as well.
        let url = Resources {
            serves_reads: true,
            ..r.clone()
        };
        assert_eq!(url.cache_bytes(Function::Ingest), (1769 << 20) / 2);
        let tiny = Resources {
            memory_mib: 64,
            disk_cache: None,
            failed_ingest_retention_days: None,
            serves_reads: false,
        };
        assert_eq!(tiny.cache_bytes(Function::Compact), 32 << 20);
        // 3008 MiB builds segments of about 150k rows at 384 dimensions.
        let compact = Resources {
            memory_mib: 3008,
            ..r
        };
        let rows = compact.build_memory_bytes() / chroma_core::engine::build_bytes_per_row(384);
        assert!((140_000..170_000).contains(&rows), "{rows}");
    }
}
