//! `chroma import --from-chroma DIR`: recreates every tenant, database and collection of
//! a Chroma 1.x persist directory (read by `chroma_core::migrate::chroma`, no Chroma
//! needed) in this deployment: names, configuration and schema (through the same
//! reconciliation as a create over HTTP), collection metadata, and every record with its
//! embedding, document, URI and metadata, as Chroma answers them.
//!
//! Nothing is written when a collection of the directory already exists here (the
//! command names it), and a failed import deletes the collections it created. The records land in the collections' logs; a server compacts them
//! when it starts (or run `chroma compact`).

use std::path::Path;

use anyhow::Context;
use chroma_core::engine::Engine;
use chroma_core::error::ErrorCode;
use chroma_core::migrate::chroma::{ChromaCollection, ChromaDir, ChromaRecord};
use chroma_core::model::configuration::{creation_configuration, CollectionConfigurationPayload};
use chroma_core::model::schema::Schema;
use chroma_core::model::validate::WriteBatch;
use chroma_core::model::IfExists;
use chroma_core::model::{Collection, CollectionConfiguration, KnnIndex, Space};

use crate::progress::Progress;

/// Records written per batch.
const BATCH: usize = 1_000;

/// Imports everything in `dir`; prints one line per collection and a total.
pub async fn run(engine: &Engine, dir: &Path) -> anyhow::Result<()> {
    let source = ChromaDir::open(dir)?;
    let collections = source.collections()?;
    for c in &collections {
        match engine.get_collection(&c.tenant, &c.database, &c.name).await {
            Ok(_) => anyhow::bail!(
                "collection {} of database {} of tenant {} already exists here: nothing was \
                 imported (delete it first, or import into another data directory)",
                c.name,
                c.database,
                c.tenant
            ),
            Err(e) if e.code() == ErrorCode::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Checked before anything is written, so that a bad one stops nothing half-done.
    let configurations = collections
        .iter()
        .map(|c| configuration(c).with_context(|| format!("collection {}", c.name)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (tenant, database) in source.databases()? {
        ignore_existing(engine.create_tenant(&tenant).await)?;
        if let Some(database) = database {
            ignore_existing(engine.create_database(&tenant, &database).await)?;
        }
    }
    let mut progress = Progress::new("imported collections", Some(collections.len() as u64));
    let mut total = 0;
    let mut created: Vec<&ChromaCollection> = Vec::new();
    for (c, configuration) in collections.iter().zip(configurations) {
        let imported = import_collection(engine, &source, c, configuration, &mut created)
            .await
            .with_context(|| format!("cannot import collection {}", c.name));
        let imported = match imported {
            Ok(n) => n,
            Err(e) => {
                progress.abandon();
                roll_back(engine, &created).await;
                return Err(e);
            }
        };
        progress.add(1);
        println!("{}/{}/{}: {imported} records", c.tenant, c.database, c.name);
        total += imported;
    }
    progress.finish();
    println!(
        "imported {total} records in {} collections from {}",
        collections.len(),
        dir.display()
    );
    Ok(())
}

/// Deletes the collections this import created (a failed import leaves none behind).
async fn roll_back(engine: &Engine, created: &[&ChromaCollection]) {
    for c in created {
        if let Err(e) = engine
            .delete_collection(&c.tenant, &c.database, &c.name)
            .await
        {
            tracing::warn!(collection = %c.name, error = %e, "cannot delete a half-imported collection");
        }
    }
}

fn ignore_existing<T>(result: chroma_core::error::Result<T>) -> anyhow::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code() == ErrorCode::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The configuration the collection gets here: Chroma's stored configuration and schema,
/// reconciled as a create over HTTP reconciles them (on an HNSW server, as local Chroma).
fn configuration(c: &ChromaCollection) -> anyhow::Result<CollectionConfiguration> {
    let known = |key: &str| c.configuration.get(key).filter(|v| !v.is_null()).cloned();
    let payload = CollectionConfigurationPayload {
        hnsw: known("hnsw")
            .map(serde_json::from_value)
            .transpose()
            .context("its hnsw configuration")?,
        spann: known("spann")
            .map(serde_json::from_value)
            .transpose()
            .context("its spann configuration")?,
        embedding_function: known("embedding_function"),
    };
    let schema: Option<Schema> = c
        .schema
        .clone()
        .map(serde_json::from_value)
        .transpose()
        .context("its schema")?;
    Ok(creation_configuration(
        payload,
        schema.as_ref(),
        c.metadata.as_ref(),
        KnnIndex::Hnsw,
    )?)
}

/// Imports `c`, adding it to `created` once it exists here.
async fn import_collection<'a>(
    engine: &Engine,
    source: &ChromaDir,
    c: &'a ChromaCollection,
    configuration: CollectionConfiguration,
    created: &mut Vec<&'a ChromaCollection>,
) -> anyhow::Result<usize> {
    // Read whole before the collection is created: a directory that cannot be read
    // leaves nothing behind.
    let records = source.records(c, configuration.hnsw.space == Space::Cosine)?;
    let collection = engine
        .create_collection(
            &c.tenant,
            &c.database,
            &c.name,
            c.metadata.clone(),
            configuration,
            IfExists::Fail,
        )
        .await?;
    created.push(c);
    for chunk in records.chunks(BATCH) {
        write(engine, &collection, chunk).await?;
    }
    Ok(records.len())
}

async fn write(engine: &Engine, c: &Collection, records: &[ChromaRecord]) -> anyhow::Result<()> {
    let batch = WriteBatch {
        ids: records.iter().map(|r| r.id.clone()).collect(),
        embeddings: Some(records.iter().map(|r| Some(r.embedding.clone())).collect()),
        documents: Some(records.iter().map(|r| r.document.clone()).collect()),
        uris: Some(records.iter().map(|r| r.uri.clone()).collect()),
        metadatas: Some(
            records
                .iter()
                .map(|r| {
                    r.metadata.as_ref().map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), Some(v.clone())))
                            .collect()
                    })
                })
                .collect(),
        ),
    };
    engine.add(c, batch).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use chroma_core::engine::{GetRequest, Include};

    use super::*;
    use crate::{Backend, StorageArgs};

    /// A Chroma persist directory with collections `good` (one record, its vector in the
    /// queue) and `broken` (one record whose vector is nowhere), in Chroma's tables.
    fn chroma_dir(broken: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let db = rusqlite::Connection::open(dir.path().join("chroma.sqlite3")).unwrap();
        db.execute_batch(
            "CREATE TABLE tenants (id TEXT PRIMARY KEY);
             CREATE TABLE databases (id TEXT PRIMARY KEY, name TEXT, tenant_id TEXT);
             CREATE TABLE collections (id TEXT PRIMARY KEY, name TEXT, dimension INTEGER,
                 database_id TEXT, config_json_str TEXT, schema_str TEXT);
             CREATE TABLE collection_metadata (collection_id TEXT, key TEXT, str_value TEXT,
                 int_value INTEGER, float_value REAL, bool_value INTEGER);
             CREATE TABLE segments (id TEXT PRIMARY KEY, type TEXT, scope TEXT, collection TEXT);
             CREATE TABLE embeddings (id INTEGER PRIMARY KEY, segment_id TEXT,
                 embedding_id TEXT, seq_id BLOB);
             CREATE TABLE embedding_metadata (id INTEGER, key TEXT, string_value TEXT,
                 int_value INTEGER, float_value REAL, bool_value INTEGER);
             CREATE TABLE embeddings_queue (seq_id INTEGER PRIMARY KEY, operation INTEGER,
                 topic TEXT, id TEXT, vector BLOB, encoding TEXT, metadata TEXT);
             CREATE TABLE max_seq_id (segment_id TEXT PRIMARY KEY, seq_id INTEGER);
             INSERT INTO tenants VALUES ('default_tenant');
             INSERT INTO databases VALUES ('00000000-0000-0000-0000-000000000000',
                 'default_database', 'default_tenant');",
        )
        .unwrap();
        let vector: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let names: &[&str] = if broken {
            &["good", "broken"]
        } else {
            &["good"]
        };
        for (n, name) in names.iter().enumerate() {
            let id = format!("00000000-0000-0000-0000-00000000000{n}");
            let (meta, seq) = (format!("meta-{n}"), n as i64 + 1);
            db.execute(
                "INSERT INTO collections VALUES (?1, ?2, 2, '00000000-0000-0000-0000-000000000000', '{}', NULL)",
                [&id, *name],
            )
            .unwrap();
            db.execute(
                "INSERT INTO collection_metadata VALUES (?1, 'team', 'x', NULL, NULL, NULL)",
                [&id],
            )
            .unwrap();
            db.execute(
                "INSERT INTO segments VALUES (?1, 'urn:chroma:segment/metadata/sqlite', 'METADATA', ?2)",
                [&meta, &id],
            )
            .unwrap();
            db.execute(
                "INSERT INTO embeddings VALUES (?1, ?2, 'r1', x'00')",
                rusqlite::params![seq, meta],
            )
            .unwrap();
            db.execute(
                "INSERT INTO embedding_metadata VALUES (?1, 'chroma:document', 'hello', NULL, NULL, NULL)",
                [seq],
            )
            .unwrap();
            db.execute(
                "INSERT INTO max_seq_id VALUES (?1, ?2)",
                rusqlite::params![meta, seq],
            )
            .unwrap();
            if *name == "good" {
                db.execute(
                    "INSERT INTO embeddings_queue VALUES (?1, 0, ?2, 'r1', ?3, 'FLOAT32', '{}')",
                    rusqlite::params![seq, format!("persistent://default/default/{id}"), vector],
                )
                .unwrap();
            }
        }
        dir
    }

    async fn opened(data: &Path) -> crate::assemble::InProcess {
        let key = data.with_extension("key");
        if !key.exists() {
            std::fs::write(&key, "cd".repeat(32)).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
        crate::open(&StorageArgs {
            backend: Backend::Local,
            path: PathBuf::from(data),
            master_key_file: Some(key),
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn records_come_from_the_metadata_segment_and_the_queue() {
        let source = chroma_dir(false);
        let data = tempfile::tempdir().unwrap();
        let o = opened(&data.path().join("data")).await;
        run(&o.engine, source.path()).await.unwrap();
        let c = o
            .engine
            .get_collection("default_tenant", "default_database", "good")
            .await
            .unwrap();
        assert_eq!(
            c.metadata.as_ref().unwrap()["team"],
            chroma_core::model::MetadataValue::Str("x".into())
        );
        let got = o
            .engine
            .get(
                &c,
                GetRequest {
                    include: Include::records(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(got.ids, ["r1"]);
        assert_eq!(got.embeddings.unwrap(), [vec![1.0, 2.0]]);
        assert_eq!(got.documents.unwrap(), [Some("hello".to_owned())]);
    }

    #[tokio::test]
    async fn a_failed_import_deletes_the_collections_it_created() {
        let source = chroma_dir(true);
        let data = tempfile::tempdir().unwrap();
        let o = opened(&data.path().join("data")).await;
        let e = run(&o.engine, source.path()).await.unwrap_err();
        let message = format!("{e:#}");
        assert!(message.contains("collection broken"), "{message}");
        assert!(message.contains("record r1 has no vector"), "{message}");
        let left = o
            .engine
            .list_collections("default_tenant", "default_database", None, 0)
            .await
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
}
