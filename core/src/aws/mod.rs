//! The AWS implementations of the ports: S3 ([`s3::S3Store`]), DynamoDB
//! ([`dynamodb::DynamoCatalog`]), KMS ([`kms::KmsKeyProvider`]) and SQS
//! ([`sqs::SqsJobs`]), and [`provision`] to create a deployment's resources.
//!
//! Compiled only with the `aws` feature. No AWS SDK type leaves this module: every
//! backend error is mapped to the engine's [`Error`] here, by error code, never by
//! message text.
//!
//! The configuration is read once from the environment ([`AwsConfig::from_env`]); the
//! SDK clients honour `AWS_ENDPOINT_URL` (and the per-service variants), so the same code
//! runs against AWS and against an emulator on loopback.

pub mod dynamodb;
pub mod kms;
pub mod provision;
pub mod s3;
pub mod sqs;

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;

use crate::error::{Error, Result};
use crate::storage::hedged::{HedgePolicy, HedgedReads};
use crate::storage::metered::Metered;
use crate::storage::ObjectStore;

/// How long an unwrapped data key stays cached in memory by default.
pub const DEFAULT_DATA_KEY_TTL: Duration = Duration::from_secs(300);

/// Attempts per SDK call (the first try included) on throttling, 5xx and timeouts; the
/// SDK's standard retry mode waits with exponential backoff and full jitter in between.
pub const MAX_ATTEMPTS: u32 = 5;

/// Where a deployment keeps its data in AWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    /// The data bucket (`CHROMA_BUCKET`).
    pub bucket: String,
    /// Prepended to every object key (`CHROMA_PREFIX`, default empty; ends with `/` when
    /// set), so several deployments can share a bucket.
    pub prefix: String,
    /// Prepended to every DynamoDB table name (`CHROMA_TABLE_PREFIX`).
    pub table_prefix: String,
    /// The KMS key that wraps data keys and encrypts objects server-side
    /// (`CHROMA_KMS_KEY_ID`: key id, ARN or alias).
    pub kms_key_id: String,
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`); `None` lets the SDK find it (profile,
    /// instance metadata).
    pub region: Option<String>,
    /// `AWS_ENDPOINT_URL`, for emulators; S3 then uses path-style addressing.
    pub endpoint_url: Option<String>,
    /// How long unwrapped data keys stay cached (`CHROMA_DATA_KEY_TTL_SECS`, default 300).
    pub data_key_ttl: Duration,
    /// The FIFO queue compaction requests go to (`CHROMA_COMPACTION_QUEUE_URL`); `None`
    /// compacts in the background of the serving process.
    pub compaction_queue_url: Option<String>,
}

impl AwsConfig {
    /// Reads the configuration from the process environment; fails naming every missing
    /// or malformed variable.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment in production).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();
        let mut required = |name: &str, what: &str| {
            get(name).unwrap_or_else(|| {
                problems.push(format!("{name} is not set ({what})"));
                String::new()
            })
        };
        let bucket = required("CHROMA_BUCKET", "the S3 bucket for data");
        let table_prefix = required(
            "CHROMA_TABLE_PREFIX",
            "the prefix of the DynamoDB table names",
        );
        let kms_key_id = required("CHROMA_KMS_KEY_ID", "the KMS key id, ARN or alias");
        let data_key_ttl = match get("CHROMA_DATA_KEY_TTL_SECS") {
            None => DEFAULT_DATA_KEY_TTL,
            Some(v) => match v.parse::<u64>() {
                Ok(secs) if secs <= 86_400 => Duration::from_secs(secs),
                _ => {
                    problems.push(format!(
                        "CHROMA_DATA_KEY_TTL_SECS must be a number of seconds from 0 to 86400, got {v:?}"
                    ));
                    DEFAULT_DATA_KEY_TTL
                }
            },
        };
        if !bucket.is_empty() && !valid_bucket_name(&bucket) {
            problems.push(format!(
                "CHROMA_BUCKET {bucket:?} is not a valid S3 bucket name"
            ));
        }
        if !table_prefix.is_empty()
            && !table_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            problems.push(format!(
                "CHROMA_TABLE_PREFIX {table_prefix:?} may hold only letters, digits, '_', '-' and '.'"
            ));
        }
        let mut prefix = get("CHROMA_PREFIX").unwrap_or_default();
        if prefix.starts_with('/') || prefix.contains("//") || prefix.contains("..") {
            problems.push(format!(
                "CHROMA_PREFIX {prefix:?} must be a relative key prefix without '//' or '..'"
            ));
        }
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        if !problems.is_empty() {
            return Err(Error::invalid(format!(
                "AWS backend configuration: {}",
                problems.join("; ")
            )));
        }
        Ok(Self {
            bucket,
            prefix,
            table_prefix,
            kms_key_id,
            region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
            endpoint_url: get("AWS_ENDPOINT_URL"),
            data_key_ttl,
            compaction_queue_url: get("CHROMA_COMPACTION_QUEUE_URL"),
        })
    }

    /// The environment that reproduces this configuration, as `NAME=value` pairs.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("CHROMA_BUCKET", self.bucket.clone()),
            ("CHROMA_TABLE_PREFIX", self.table_prefix.clone()),
            ("CHROMA_KMS_KEY_ID", self.kms_key_id.clone()),
        ];
        if !self.prefix.is_empty() {
            env.push(("CHROMA_PREFIX", self.prefix.clone()));
        }
        if let Some(region) = &self.region {
            env.push(("AWS_REGION", region.clone()));
        }
        if let Some(endpoint) = &self.endpoint_url {
            env.push(("AWS_ENDPOINT_URL", endpoint.clone()));
        }
        if let Some(url) = &self.compaction_queue_url {
            env.push(("CHROMA_COMPACTION_QUEUE_URL", url.clone()));
        }
        env
    }
}

/// S3's rules for bucket names (3–63 characters: lowercase letters, digits, '.', '-';
/// starting and ending with a letter or digit).
fn valid_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

/// The SDK clients of one deployment, sharing one HTTP connection pool and credentials.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kms: aws_sdk_kms::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl AwsClients {
    /// Loads credentials and region the SDK's usual way (environment, profile, container
    /// or instance role) with our retry and timeout policy.
    pub async fn connect(config: &AwsConfig) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(50))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .operation_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.endpoint_url {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let shared = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&shared)
            // Emulators are reached by IP or `localhost`, where virtual-hosted bucket
            // names do not resolve.
            .force_path_style(config.endpoint_url.is_some())
            .build();
        Self {
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            dynamodb: aws_sdk_dynamodb::Client::new(&shared),
            kms: aws_sdk_kms::Client::new(&shared),
            sqs: aws_sdk_sqs::Client::new(&shared),
        }
    }
}

/// The storage ports of one deployment on AWS: objects in S3, the catalog in DynamoDB
/// (oversized manifests in S3), data keys wrapped by KMS.
#[derive(Debug, Clone)]
pub struct AwsBackends {
    pub clients: AwsClients,
    pub store: Arc<s3::S3Store>,
    pub catalog: Arc<dynamodb::DynamoCatalog>,
    pub key_provider: Arc<kms::KmsKeyProvider>,
}

impl AwsBackends {
    pub async fn connect(config: &AwsConfig) -> Self {
        let clients = AwsClients::connect(config).await;
        let store = Arc::new(s3::S3Store::new(&clients, config));
        let catalog = Arc::new(dynamodb::DynamoCatalog::new(
            &clients,
            config,
            store.clone(),
        ));
        let key_provider = Arc::new(kms::KmsKeyProvider::new(&clients, config));
        Self {
            clients,
            store,
            catalog,
            key_provider,
        }
    }

    /// S3 as an engine reads it: every request counted as S3 sees it (hedges included,
    /// `storage::metered`), and reads slower than S3's p95 sent again
    /// (`storage::hedged`). The server on the AWS backends and every Lambda function use
    /// this store (the query function with its disk cache in front).
    pub fn served_store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(HedgedReads::new(
            Arc::new(Metered::new(self.store.clone())),
            HedgePolicy::S3,
        ))
    }
}

/// Error codes AWS services use for throttling (and S3's retryable `RequestTimeout`).
const THROTTLING_CODES: [&str; 9] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "SlowDown",
    "RequestTimeout",
];

/// Maps an SDK failure that no specific handling claimed: throttling, 5xx answers,
/// timeouts and connection failures (after the SDK's own retries) are `Unavailable`,
/// anything else `Internal`. The message names the operation; the SDK error is kept as
/// the source.
pub(crate) fn sdk_error<E>(
    operation: &str,
    err: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status == 429
                || status >= 500
                || err.code().is_some_and(|c| THROTTLING_CODES.contains(&c))
        }
        _ => false,
    };
    let message = format!("{operation} failed");
    if transient {
        Error::with_source(crate::error::ErrorCode::Unavailable, message, err)
    } else {
        Error::internal_from(message, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn reads_a_complete_configuration() {
        let c = AwsConfig::from_lookup(lookup(&[
            ("CHROMA_BUCKET", "my-data"),
            ("CHROMA_TABLE_PREFIX", "chroma-prod-"),
            ("CHROMA_KMS_KEY_ID", "alias/chroma"),
            ("CHROMA_PREFIX", "deploy-a"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5055"),
            ("CHROMA_DATA_KEY_TTL_SECS", "60"),
        ]))
        .unwrap();
        assert_eq!(c.bucket, "my-data");
        assert_eq!(c.prefix, "deploy-a/");
        assert_eq!(c.table_prefix, "chroma-prod-");
        assert_eq!(c.kms_key_id, "alias/chroma");
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.endpoint_url.as_deref(), Some("http://127.0.0.1:5055"));
        assert_eq!(c.data_key_ttl, Duration::from_secs(60));
        let again = AwsConfig::from_lookup(|name| {
            c.to_env()
                .into_iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
                .or_else(|| (name == "CHROMA_DATA_KEY_TTL_SECS").then(|| "60".to_owned()))
        })
        .unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn names_every_missing_or_bad_variable() {
        let e = AwsConfig::from_lookup(lookup(&[])).unwrap_err();
        for name in ["CHROMA_BUCKET", "CHROMA_TABLE_PREFIX", "CHROMA_KMS_KEY_ID"] {
            assert!(e.message().contains(name), "{e}");
        }
        let e = AwsConfig::from_lookup(lookup(&[
            ("CHROMA_BUCKET", "Bad_Bucket"),
            ("CHROMA_TABLE_PREFIX", "a b"),
            ("CHROMA_KMS_KEY_ID", "k"),
            ("CHROMA_PREFIX", "../x"),
            ("CHROMA_DATA_KEY_TTL_SECS", "soon"),
        ]))
        .unwrap_err();
        for name in [
            "CHROMA_BUCKET",
            "CHROMA_TABLE_PREFIX",
            "CHROMA_PREFIX",
            "CHROMA_DATA_KEY_TTL_SECS",
        ] {
            assert!(e.message().contains(name), "{e}");
        }
    }
}
