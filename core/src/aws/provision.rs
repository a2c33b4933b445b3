//! Creating a deployment's AWS resources where they are missing: the bucket, the tables,
//! a KMS key (found again by its alias on the next run) and, if asked for, the compaction
//! queue. For emulators and quick trials; a real deployment gets them from the SAM
//! template. Running it twice creates nothing the second time.

use std::sync::Arc;

use super::dynamodb::DynamoCatalog;
use super::kms;
use super::s3::S3Store;
use super::sqs;
use super::{sdk_error, AwsClients, AwsConfig, DEFAULT_DATA_KEY_TTL};
use crate::error::{Error, Result};

/// What to create.
#[derive(Debug, Clone)]
pub struct InitRequest {
    pub bucket: String,
    pub prefix: String,
    pub table_prefix: String,
    /// An existing key to use; `None` finds or creates the key aliased
    /// `alias/{table_prefix}data`.
    pub kms_key_id: Option<String>,
    /// A FIFO queue name (ending in `.fifo`) for compaction requests, if wanted.
    pub compaction_queue: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// The configuration to serve the deployment with, and what was created.
#[derive(Debug, Clone)]
pub struct InitReport {
    pub config: AwsConfig,
    pub created: Vec<String>,
}

/// Creates what is missing and returns the configuration that uses it.
pub async fn init(request: InitRequest) -> Result<InitReport> {
    let mut config = AwsConfig::from_lookup(|name| match name {
        "CHROMA_BUCKET" => Some(request.bucket.clone()),
        "CHROMA_PREFIX" => Some(request.prefix.clone()),
        "CHROMA_TABLE_PREFIX" => Some(request.table_prefix.clone()),
        // Without a key id one is found or created below.
        "CHROMA_KMS_KEY_ID" => Some(
            request
                .kms_key_id
                .clone()
                .unwrap_or_else(|| "pending".to_owned()),
        ),
        "AWS_REGION" => request.region.clone(),
        "AWS_ENDPOINT_URL" => request.endpoint_url.clone(),
        _ => None,
    })?;
    config.data_key_ttl = DEFAULT_DATA_KEY_TTL;
    let clients = AwsClients::connect(&config).await;
    let mut created = Vec::new();

    if request.kms_key_id.is_none() {
        let alias = format!("alias/{}data", config.table_prefix);
        let (arn, fresh) = find_or_create_key(&clients, &alias).await?;
        if fresh {
            created.push(format!("KMS key {arn} ({alias})"));
        }
        config.kms_key_id = arn;
    }
    let store = S3Store::new(&clients, &config);
    if store.ensure_bucket().await? {
        created.push(format!("S3 bucket {}", config.bucket));
    }
    let catalog = DynamoCatalog::new(&clients, &config, Arc::new(store));
    for table in catalog.ensure_tables().await? {
        created.push(format!("DynamoDB table {table}"));
    }
    if let Some(queue) = &request.compaction_queue {
        if !queue.ends_with(".fifo") {
            return Err(Error::invalid(format!(
                "compaction queue {queue:?} must be a FIFO queue (its name ends in .fifo)"
            )));
        }
        let url = sqs::ensure_queue(&clients, queue).await?;
        config.compaction_queue_url = Some(url);
    }
    Ok(InitReport { config, created })
}

/// The ARN of the key behind `alias`, creating key and alias if the alias is unknown.
async fn find_or_create_key(clients: &AwsClients, alias: &str) -> Result<(String, bool)> {
    match clients.kms.describe_key().key_id(alias).send().await {
        Ok(out) => {
            let arn = out
                .key_metadata()
                .and_then(|m| m.arn())
                .ok_or_else(|| Error::internal(format!("KMS described {alias} without an ARN")))?;
            return Ok((arn.to_owned(), false));
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_not_found_exception()) => {}
        Err(e) => return Err(sdk_error("KMS DescribeKey", e)),
    }
    let arn = kms::create_key(clients, "chroma data keys").await?;
    clients
        .kms
        .create_alias()
        .alias_name(alias)
        .target_key_id(&arn)
        .send()
        .await
        .map_err(|e| sdk_error("KMS CreateAlias", e))?;
    Ok((arn, true))
}
