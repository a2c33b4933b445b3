//! `chroma keys create | list | revoke`: API keys in the deployment's catalog, written
//! directly (the server need not run; a running one sees new keys at once and revoked
//! ones within the key cache bound).

use std::sync::Arc;

use anyhow::Context;
use chroma_core::auth::api_keys::validate_key_id;
use chroma_core::auth::delegation::KeyRequest;
use chroma_core::auth::{Principal, KEY_CACHE_TTL};
use chroma_core::catalog::sqlite::SqliteCatalog;
use chroma_core::catalog::{ApiKeyRecord, Catalog};
use chroma_core::clock::now_ms;
use clap::{Args, Subcommand};

use crate::{Backend, StorageArgs};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints it once, alone on the last line of standard output.
    Create(CreateArgs),
    /// List keys (never their secrets).
    List(ListArgs),
    /// Revoke a key by id.
    Revoke(RevokeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// `tenant/database/collection:actions`, e.g. 'acme/*/*:read,write'; repeatable.
    #[arg(long = "grant", required = true)]
    pub grants: Vec<String>,
    /// A label for people.
    #[arg(long)]
    pub name: Option<String>,
    /// A `where` document (JSON) ANDed into the key's reads and required of its writes.
    #[arg(long)]
    pub row_filter: Option<String>,
    /// The key stops working after this many days.
    #[arg(long)]
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// The key id (`ck…`, the part before the dot).
    pub id: String,
}

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create(args) => create(args).await,
        KeysCommand::List(args) => list(args).await,
        KeysCommand::Revoke(args) => revoke(args).await,
    }
}

/// Only the catalog: key management needs neither objects nor the master key.
async fn catalog(storage: &StorageArgs) -> anyhow::Result<Arc<dyn Catalog>> {
    match storage.backend {
        Backend::Local => {
            std::fs::create_dir_all(&storage.path).with_context(|| {
                format!("cannot create data directory {}", storage.path.display())
            })?;
            Ok(Arc::new(SqliteCatalog::open(
                &storage.path.join("catalog.sqlite3"),
            )?))
        }
        Backend::Aws => aws_catalog().await,
    }
}

#[cfg(feature = "aws")]
async fn aws_catalog() -> anyhow::Result<Arc<dyn Catalog>> {
    let config = chroma_core::aws::AwsConfig::from_env()?;
    Ok(chroma_core::aws::AwsBackends::connect(&config)
        .await
        .catalog)
}

#[cfg(not(feature = "aws"))]
async fn aws_catalog() -> anyhow::Result<Arc<dyn Catalog>> {
    anyhow::bail!(crate::NO_AWS)
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let row_filter = args
        .row_filter
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("--row-filter is not JSON")?;
    let now = now_ms();
    let request = KeyRequest {
        grants: args.grants,
        name: args.name,
        row_filter,
        expires_at_ms: args
            .expires_in_days
            .map(|d| now + u64::from(d) * 86_400_000),
    };
    // The operator, who may mint any key: the same validation as the HTTP API.
    let new = Principal::local().mint_key(request, now)?;
    catalog(&args.storage)
        .await?
        .create_api_key(&new.record)
        .await
        .context("cannot store the key")?;
    tracing::info!(target: "audit", event = "key_created", principal = "cli", key = %new.record.id, outcome = "allowed");
    println!(
        "created key {} with grants {}",
        new.record.id,
        new.record.grants.join(" ")
    );
    println!("the key is shown once; send it as `Authorization: Bearer <key>` or `X-Chroma-Token: <key>`:");
    println!("{}", new.key.as_str());
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let keys = catalog(&args.storage).await?.list_api_keys().await?;
    let now = now_ms();
    println!("{:<20} {:<10} {:<20} GRANTS", "ID", "STATE", "NAME");
    for k in &keys {
        println!(
            "{:<20} {:<10} {:<20} {}",
            k.id,
            state(k, now),
            k.name.as_deref().unwrap_or("-"),
            k.grants.join(" ")
        );
    }
    Ok(())
}

fn state(k: &ApiKeyRecord, now: u64) -> &'static str {
    if k.revoked_at_ms.is_some() {
        "revoked"
    } else if k.expires_at_ms.is_some_and(|t| t <= now) {
        "expired"
    } else {
        "active"
    }
}

async fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    validate_key_id(&args.id)?;
    let k = catalog(&args.storage)
        .await?
        .revoke_api_key(&args.id, now_ms())
        .await?;
    tracing::info!(target: "audit", event = "key_revoked", principal = "cli", key = %k.id, outcome = "allowed");
    println!(
        "revoked {}; running servers refuse it within {} s",
        k.id,
        KEY_CACHE_TTL.as_secs()
    );
    Ok(())
}
