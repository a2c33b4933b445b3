//! `chroma ingest failures`: what bulk ingest rejected, read back. Ingest seals the copies
//! of rejected files and their error reports like everything it writes, so they are read
//! through the deployment's key provider (the master key, or KMS).

use anyhow::Context;
use chroma_core::engine::Engine;
use chroma_core::ingest::{FAILED_PREFIX, REPORT_SUFFIX};
use clap::{Args, Subcommand};

use crate::StorageArgs;

#[derive(Debug, Subcommand)]
pub enum IngestCommand {
    /// Print the error report of every rejected file (one JSON object per line), or with
    /// `--file`, one rejected file itself.
    Failures(FailuresArgs),
}

#[derive(Debug, Clone, Args)]
pub struct FailuresArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Print this rejected file (its key under `ingest-failed/`) instead of the reports.
    #[arg(long)]
    pub file: Option<String>,
}

pub async fn run(command: IngestCommand) -> anyhow::Result<()> {
    match command {
        IngestCommand::Failures(args) => failures(args).await,
    }
}

async fn failures(args: FailuresArgs) -> anyhow::Result<()> {
    let opened = crate::open(&args.storage).await?;
    let engine = &opened.engine;
    if let Some(key) = &args.file {
        if !key.starts_with(FAILED_PREFIX) {
            anyhow::bail!("--file names a key under {FAILED_PREFIX}, got {key:?}");
        }
        let bytes = engine
            .read_ingest_object(key)
            .await
            .with_context(|| format!("cannot read {key}"))?;
        use std::io::Write;
        std::io::stdout().write_all(&bytes)?;
        return Ok(());
    }
    let reports = reports(engine).await?;
    for report in &reports {
        println!("{report}");
    }
    tracing::info!(reports = reports.len(), "rejected files listed");
    Ok(())
}

/// The error report of every file bulk ingest rejected, oldest key first.
pub async fn reports(engine: &Engine) -> anyhow::Result<Vec<serde_json::Value>> {
    let objects = engine.store().list(FAILED_PREFIX).await?;
    let mut reports = Vec::new();
    for o in objects.iter().filter(|o| o.key.ends_with(REPORT_SUFFIX)) {
        let bytes = engine
            .read_ingest_object(&o.key)
            .await
            .with_context(|| format!("cannot read {}", o.key))?;
        reports.push(
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not a report", o.key))?,
        );
    }
    Ok(reports)
}
