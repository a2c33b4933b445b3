//! `chroma compact`: folds logs, merges segments and collects garbage, of every
//! collection or of one.

use anyhow::Context;
use chroma_core::engine::{Merge, Stop};

use crate::{open, progress, CompactArgs};

/// `chroma compact`: folds every log and merges every collection's segments into one
/// (or one collection's), and collects garbage. A collection that fails does not stop the
/// others; the command then fails naming them.
pub async fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let opened = open(&args.storage).await?;
    let engine = opened.engine.clone();
    let report = match args.collection {
        Some(id) => engine
            .sweep_collection(id, Merge::All, &Stop::never())
            .await
            .with_context(|| format!("compacting {id}"))?,
        None => {
            let mut progress = progress::Progress::new("compacted collections", None);
            let report = engine
                .sweep(Merge::All, &Stop::never(), &mut |done, total| {
                    progress.set_total(total as u64);
                    progress.set(done as u64);
                })
                .await;
            match &report {
                Ok(_) => progress.finish(),
                Err(_) => progress.abandon(),
            }
            report.context("listing collections")?
        }
    };
    println!(
        "compacted {} collections: {} log batches ({} ops) folded, {} segments merged, {} objects collected",
        report.collections,
        report.folded_batches,
        report.folded_ops,
        report.merged_segments,
        report.collected_objects
    );
    drop(opened.compaction_requests);
    if !report.failures.is_empty() {
        for (id, e) in &report.failures {
            eprintln!("{id}: {e}");
        }
        anyhow::bail!("{} collections failed", report.failures.len());
    }
    Ok(())
}
