//! `chroma import`: upserts local Parquet or JSON Lines files into a collection, with the
//! parser and validator of bulk ingestion (`chroma_core::ingest`). Each file is validated
//! whole before any of it is written; files are imported in the order given, and the
//! first bad one stops the command (the files before it stay imported).
//!
//! The records land in the collection's log; a server compacts them when it starts (or
//! run `chroma compact`).

use std::path::{Path, PathBuf};

use chroma_core::engine::Engine;
use chroma_core::ingest::{check_file_size, validate_file, Imported};
use clap::Args;

use crate::progress::Progress;
use crate::{CollectionArgs, StorageArgs};

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// The collection's tenant.
    #[arg(long, default_value = "default_tenant")]
    pub tenant: String,
    /// The collection's database.
    #[arg(long, default_value = "default_database")]
    pub database: String,
    /// The collection (by name) the files go into; it must exist.
    #[arg(long, required_unless_present = "from_chroma")]
    pub collection: Option<String>,
    /// Files to import: `.parquet`, `.jsonl` or `.ndjson`.
    #[arg(
        required_unless_present = "from_chroma",
        conflicts_with = "from_chroma"
    )]
    pub files: Vec<PathBuf>,
    /// Instead of files: a Chroma 1.x persist directory (`chromadb.PersistentClient(path=DIR)`),
    /// whose tenants, databases and collections (configuration, metadata, records) are
    /// all recreated here. Fails, writing nothing, if one of its collections exists here.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["collection", "tenant", "database"])]
    pub from_chroma: Option<PathBuf>,
}

impl ImportArgs {
    /// An import of `files` into `target`.
    pub fn files(storage: StorageArgs, target: CollectionArgs, files: Vec<PathBuf>) -> Self {
        Self {
            storage,
            tenant: target.tenant,
            database: target.database,
            collection: Some(target.collection),
            files,
            from_chroma: None,
        }
    }

    /// The collection files are imported into.
    fn target(&self) -> CollectionArgs {
        CollectionArgs {
            tenant: self.tenant.clone(),
            database: self.database.clone(),
            collection: self.collection.clone().unwrap_or_default(),
        }
    }
}

/// `chroma import`: prints one line per file (or collection) and a total.
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let opened = crate::open(&args.storage).await?;
    if let Some(dir) = &args.from_chroma {
        let done = crate::import_chroma::run(&opened.engine, dir).await;
        drop(opened.compaction_requests);
        return done;
    }
    let target = args.target();
    let mut total = Imported {
        records: 0,
        batches: 0,
    };
    let mut progress = Progress::new("imported files", Some(args.files.len() as u64));
    for path in &args.files {
        let imported = match import_file(&opened.engine, &args, path).await {
            Ok(imported) => imported,
            Err(e) => {
                progress.abandon();
                return Err(e.context(format!("cannot import {}", path.display())));
            }
        };
        progress.add(1);
        println!(
            "{}: upserted {} records in {} batches",
            path.display(),
            imported.records,
            imported.batches
        );
        total.records += imported.records;
        total.batches += imported.batches;
    }
    progress.finish();
    println!(
        "imported {} records from {} files into {}/{}/{}",
        total.records,
        args.files.len(),
        target.tenant,
        target.database,
        target.collection
    );
    drop(opened.compaction_requests);
    Ok(())
}

async fn import_file(engine: &Engine, args: &ImportArgs, path: &Path) -> anyhow::Result<Imported> {
    // Read again for every file: the first one may fix the collection's dimension.
    let target = args.target();
    let collection = engine
        .get_collection(&target.tenant, &target.database, &target.collection)
        .await?;
    let size = tokio::fs::metadata(path).await?.len();
    check_file_size(size)?;
    let data = tokio::fs::read(path).await?;
    let name = path.to_string_lossy().into_owned();
    let dimension = collection.dimension;
    let validated =
        tokio::task::spawn_blocking(move || validate_file(&name, data, dimension)).await??;
    Ok(engine.upsert_file(&collection, validated).await?)
}

#[cfg(test)]
mod tests {
    use chroma_core::engine::{GetRequest, Include};

    use super::*;
    use crate::Backend;
    use chroma_core::model::IfExists;

    struct Dirs {
        data: tempfile::TempDir,
        files: tempfile::TempDir,
        key: PathBuf,
    }

    fn dirs() -> Dirs {
        let files = tempfile::tempdir().unwrap();
        let key = files.path().join("master.key");
        std::fs::write(&key, "ab".repeat(32)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Dirs {
            data: tempfile::tempdir().unwrap(),
            files,
            key,
        }
    }

    fn args(d: &Dirs, files: Vec<PathBuf>) -> ImportArgs {
        ImportArgs::files(
            StorageArgs {
                backend: Backend::Local,
                path: d.data.path().to_path_buf(),
                master_key_file: Some(d.key.clone()),
            },
            CollectionArgs::named("docs"),
            files,
        )
    }

    fn write(d: &Dirs, name: &str, text: &str) -> PathBuf {
        let path = d.files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn create_collection(d: &Dirs) {
        let opened = crate::open(&args(d, vec![]).storage).await.unwrap();
        opened
            .engine
            .create_collection(
                "default_tenant",
                "default_database",
                "docs",
                None,
                Default::default(),
                IfExists::Fail,
            )
            .await
            .unwrap();
    }

    async fn ids(d: &Dirs) -> Vec<String> {
        let opened = crate::open(&args(d, vec![]).storage).await.unwrap();
        let c = opened
            .engine
            .get_collection("default_tenant", "default_database", "docs")
            .await
            .unwrap();
        let mut ids = opened
            .engine
            .get(
                &c,
                GetRequest {
                    include: Include::none(),
                    ..GetRequest::default()
                },
            )
            .await
            .unwrap()
            .ids;
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn files_are_validated_and_upserted() {
        let d = dirs();
        create_collection(&d).await;
        let a = write(
            &d,
            "a.jsonl",
            "{\"id\": \"a\", \"embedding\": [1, 2], \"document\": \"x\"}\n\n{\"id\": \"b\", \"embedding\": [3, 4]}\n",
        );
        let b = write(&d, "b.ndjson", "{\"id\": \"c\", \"embedding\": [5, 6]}\n");
        run(args(&d, vec![a, b])).await.unwrap();
        assert_eq!(ids(&d).await, vec!["a", "b", "c"]);
    }

    #[tokio::test]
    async fn an_invalid_file_names_the_line_and_field_and_writes_nothing() {
        let d = dirs();
        create_collection(&d).await;
        let good = write(&d, "good.jsonl", "{\"id\": \"a\", \"embedding\": [1, 2]}\n");
        let bad = write(
            &d,
            "bad.jsonl",
            "{\"id\": \"b\", \"embedding\": [1, 2]}\n{\"id\": \"c\", \"embedding\": [1, 2, 3]}\n",
        );
        let e = run(args(&d, vec![good, bad])).await.unwrap_err();
        let message = format!("{e:#}");
        assert!(message.contains("bad.jsonl"), "{message}");
        assert!(
            message.contains(
                "line 2, field embedding: Collection expecting embedding with dimension of 2, got 3"
            ),
            "{message}"
        );
        assert_eq!(ids(&d).await, vec!["a"], "the bad file wrote nothing");
    }

    #[tokio::test]
    async fn a_missing_collection_or_format_is_an_error() {
        let d = dirs();
        let file = write(&d, "a.jsonl", "{\"id\": \"a\", \"embedding\": [1]}\n");
        let e = run(args(&d, vec![file])).await.unwrap_err();
        assert!(
            format!("{e:#}").contains("Collection [docs] does not exist"),
            "{e:#}"
        );
        create_collection(&d).await;
        let csv = write(&d, "a.csv", "id,embedding\n");
        let e = run(args(&d, vec![csv])).await.unwrap_err();
        assert!(
            format!("{e:#}").contains("unsupported file extension .csv"),
            "{e:#}"
        );
    }
}
