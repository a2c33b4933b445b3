//! `chroma export`: writes a collection into a new directory in the bulk-ingest format
//! (`chroma_core::ingest::export`): numbered Parquet or JSON Lines files, each within bulk
//! ingest's size limit, that `chroma import` (or a drop under the bucket's `ingest/`)
//! turns back into the same records.
//!
//! Nothing half-written is left: the files are written into a temporary directory beside
//! the target and renamed to it once complete; an error or Ctrl-C removes the temporary
//! directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chroma_core::ingest::{ExportedFile, Format, EXPORT_FILE_BYTES};
use clap::{Args, ValueEnum};

use crate::progress::Progress;
use crate::{CollectionArgs, StorageArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Parquet,
    Jsonl,
}

impl From<ExportFormat> for Format {
    fn from(f: ExportFormat) -> Self {
        match f {
            ExportFormat::Parquet => Format::Parquet,
            ExportFormat::Jsonl => Format::Jsonl,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub target: CollectionArgs,
    /// File format.
    #[arg(long, value_enum, default_value = "parquet")]
    pub format: ExportFormat,
    /// Largest file written, in bytes (bulk ingest accepts up to 256 MiB).
    #[arg(long, default_value_t = EXPORT_FILE_BYTES, hide = true)]
    pub file_bytes: u64,
    /// The directory to create and write the files into (`part-00000.parquet`, …); it
    /// must not exist.
    pub out: PathBuf,
}

/// The temporary directory beside `out` that becomes `out` once complete.
fn partial_dir(out: &Path) -> anyhow::Result<PathBuf> {
    let name = out
        .file_name()
        .with_context(|| format!("{} names no directory", out.display()))?;
    let mut partial = name.to_os_string();
    partial.push(format!(".partial-{}", std::process::id()));
    Ok(out.with_file_name(partial))
}

/// `chroma export`: prints one line per file and a total.
pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    if args.out.exists() {
        anyhow::bail!(
            "{} exists: export writes a new directory",
            args.out.display()
        );
    }
    let partial = partial_dir(&args.out)?;
    std::fs::create_dir(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let exported = tokio::select! {
        r = export_into(&args, &partial) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let files = match exported {
        Ok(files) => files,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e.context(format!("nothing written to {}", args.out.display())));
        }
    };
    if let Err(e) = std::fs::rename(&partial, &args.out) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e).with_context(|| format!("cannot create {}", args.out.display()));
    }
    let mut records = 0;
    for f in &files {
        let name = f.path.file_name().unwrap_or_default().to_string_lossy();
        println!(
            "{}: {} records, {} bytes",
            args.out.join(&*name).display(),
            f.records,
            f.bytes
        );
        records += f.records;
    }
    println!(
        "exported {records} records of {}/{}/{} into {} files in {}",
        args.target.tenant,
        args.target.database,
        args.target.collection,
        files.len(),
        args.out.display()
    );
    Ok(())
}

async fn export_into(args: &ExportArgs, dir: &Path) -> anyhow::Result<Vec<ExportedFile>> {
    let opened = crate::open(&args.storage).await?;
    let collection = opened
        .engine
        .get_collection(
            &args.target.tenant,
            &args.target.database,
            &args.target.collection,
        )
        .await?;
    let total = opened.engine.count(&collection).await?;
    let mut progress = Progress::new("exported records", Some(total));
    let files = opened
        .engine
        .export_collection(&collection, args.format.into(), dir, args.file_bytes, |n| {
            progress.set(n)
        })
        .await;
    match &files {
        Ok(_) => progress.finish(),
        Err(_) => progress.abandon(),
    }
    drop(opened.compaction_requests);
    Ok(files?)
}

#[cfg(test)]
mod tests {
    use chroma_core::engine::{GetRequest, Include};

    use super::*;
    use crate::import::{self, ImportArgs};
    use crate::Backend;
    use chroma_core::model::IfExists;

    fn storage(data: &Path, key: &Path) -> StorageArgs {
        StorageArgs {
            backend: Backend::Local,
            path: data.to_path_buf(),
            master_key_file: Some(key.to_path_buf()),
        }
    }

    async fn create(storage: &StorageArgs, name: &str) {
        let opened = crate::open(storage).await.unwrap();
        opened
            .engine
            .create_collection(
                "default_tenant",
                "default_database",
                name,
                None,
                Default::default(),
                IfExists::Fail,
            )
            .await
            .unwrap();
    }

    async fn records(storage: &StorageArgs, name: &str) -> chroma_core::engine::GetResult {
        let opened = crate::open(storage).await.unwrap();
        let c = opened
            .engine
            .get_collection("default_tenant", "default_database", name)
            .await
            .unwrap();
        opened
            .engine
            .get(
                &c,
                GetRequest {
                    include: Include::records(),
                    ..GetRequest::default()
                },
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn export_then_import_gives_the_same_records_and_never_overwrites() {
        let files = tempfile::tempdir().unwrap();
        let key = files.path().join("master.key");
        std::fs::write(&key, "cd".repeat(32)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let data = tempfile::tempdir().unwrap();
        let storage = storage(data.path(), &key);
        create(&storage, "source").await;
        let input = files.path().join("in.jsonl");
        std::fs::write(
            &input,
            "{\"id\": \"a\", \"embedding\": [0.1, 2.5], \"document\": \"x\", \"metadata\": {\"k\": 1.5, \"t\": [\"u\", \"v\"]}}\n\
             {\"id\": \"b\", \"embedding\": [3e-7, -4], \"uri\": \"s3://b\"}\n",
        )
        .unwrap();
        import::run(ImportArgs::files(
            storage.clone(),
            CollectionArgs::named("source"),
            vec![input],
        ))
        .await
        .unwrap();

        for format in [ExportFormat::Parquet, ExportFormat::Jsonl] {
            let out = files.path().join(format!("out-{format:?}"));
            let args = ExportArgs {
                storage: storage.clone(),
                target: CollectionArgs::named("source"),
                format,
                file_bytes: EXPORT_FILE_BYTES,
                out: out.clone(),
            };
            run(args.clone()).await.unwrap();
            let written: Vec<PathBuf> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(written.len(), 1, "{written:?}");
            // No temporary directory is left beside it.
            assert_eq!(
                std::fs::read_dir(files.path()).unwrap().count(),
                3 + usize::from(format == ExportFormat::Jsonl)
            );
            let target = format!("target-{format:?}").to_lowercase();
            create(&storage, &target).await;
            import::run(ImportArgs::files(
                storage.clone(),
                CollectionArgs::named(&target),
                written,
            ))
            .await
            .unwrap();
            assert_eq!(
                records(&storage, &target).await,
                records(&storage, "source").await
            );
            // An existing directory is never written into.
            let e = run(args).await.unwrap_err();
            assert!(format!("{e:#}").contains("exists"), "{e:#}");
        }

        // A missing collection leaves nothing behind.
        let out = files.path().join("missing");
        let e = run(ExportArgs {
            storage,
            target: CollectionArgs::named("nope"),
            format: ExportFormat::Jsonl,
            file_bytes: EXPORT_FILE_BYTES,
            out: out.clone(),
        })
        .await
        .unwrap_err();
        assert!(format!("{e:#}").contains("nothing written"), "{e:#}");
        assert!(!out.exists());
        assert!(std::fs::read_dir(files.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".partial-")));
    }
}
