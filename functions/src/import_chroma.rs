//! `chroma import --from-chroma DIR`: recreates every tenant, database and collection of
//! a Chroma 1.x persist directory (read by `chroma_core::migrate::chroma`, no Chroma
//! needed) in this deployment: names, configuration and schema (through the same
//! reconciliation as a create over HTTP), collection metadata, and every record with its
//! embedding, document, URI and metadata, as Chroma answers them.
//!
//! Nothing is written when a collection of the directory already exists here (the
//! command names it). The records land in the collections' logs; a server compacts them
//! when it starts (or run `chroma compact`).

use std::path::Path;

use anyhow::Context;
use chroma_core::api::collections::creation_configuration;
use chroma_core::api::types::CollectionConfigurationPayload;
use chroma_core::engine::Engine;
use chroma_core::error::ErrorCode;
use chroma_core::migrate::chroma::{ChromaCollection, ChromaDir, ChromaRecord};
use chroma_core::model::schema::Schema;
use chroma_core::model::validate::WriteBatch;
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
    for (c, configuration) in collections.iter().zip(configurations) {
        let imported = import_collection(engine, &source, c, configuration)
            .await
            .with_context(|| format!("cannot import collection {}", c.name));
        let imported = match imported {
            Ok(n) => n,
            Err(e) => {
                progress.abandon();
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
    creation_configuration(
        payload,
        schema.as_ref(),
        c.metadata.as_ref(),
        KnnIndex::Hnsw,
    )
    .map_err(|e| anyhow::anyhow!("{}", e.message))
}

async fn import_collection(
    engine: &Engine,
    source: &ChromaDir,
    c: &ChromaCollection,
    configuration: CollectionConfiguration,
) -> anyhow::Result<usize> {
    // Read whole before the collection is created: a directory that cannot be read
    // leaves nothing behind.
    let records = source.records(c, configuration.hnsw.space == Space::Cosine)?;
    let created = engine
        .create_collection(
            &c.tenant,
            &c.database,
            &c.name,
            c.metadata.clone(),
            configuration,
            false,
        )
        .await?;
    for chunk in records.chunks(BATCH) {
        write(engine, &created, chunk).await?;
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
