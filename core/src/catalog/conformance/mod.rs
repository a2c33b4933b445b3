//! The conformance suite every [`Catalog`] implementation must pass.
//!
//! Built for tests of this crate and, with the `testing` feature, of other crates (the
//! DynamoDB catalog runs it against an emulator). [`suite_shared`] works only in tenants
//! it creates (named `conformance-{ulid}`), so it can share a catalog with other tests;
//! [`suite`] also checks `reset`, which wipes the whole catalog.

mod api_keys;
mod manifests;
mod names;

use std::collections::BTreeMap;

use futures::future::join_all;
use uuid::Uuid;

use super::{
    ApiKeyRecord, Catalog, CollectionUpdate, Lineage, Manifest, DEFAULT_DATABASE, DEFAULT_TENANT,
};
use crate::error::{ErrorCode, Result};
use crate::model::IfExists;
use crate::model::{Collection, CollectionConfiguration, MetadataValue, Space};

use api_keys::api_keys;
use manifests::{concurrent_appends, concurrent_commits, manifests};
use names::{
    collection_with_manifest, collections, concurrent_forks, databases, defaults_exist, deletes,
    forks, get_or_create, listing, reset, tenants, updates,
};

/// Runs every check of the [`Catalog`] contract, ending with `reset`; panics on the first
/// violation. Use only on a catalog of its own.
pub async fn suite(catalog: &dyn Catalog) {
    suite_shared(catalog).await;
    reset(catalog).await;
}

/// Every check except `reset`: safe on a catalog other tests use at the same time.
pub async fn suite_shared(catalog: &dyn Catalog) {
    defaults_exist(catalog).await;
    tenants(catalog).await;
    databases(catalog).await;
    collections(catalog).await;
    get_or_create(catalog).await;
    listing(catalog).await;
    updates(catalog).await;
    collection_with_manifest(catalog, catalog).await;
    manifests(catalog).await;
    concurrent_commits(catalog).await;
    concurrent_appends(catalog).await;
    deletes(catalog).await;
    forks(catalog).await;
    concurrent_forks(catalog).await;
    api_keys(catalog).await;
}

/// What `writer` stores is what `reader` reads, both on the same backend (two handles
/// of one file, two processes' clients of one set of tables): the checks of
/// [`Catalog::get_collection_with_manifest`](super::Names::get_collection_with_manifest)
/// against whatever a reader caches. Works in a tenant of its own, like
/// [`suite_shared`].
pub async fn across_handles(writer: &dyn Catalog, reader: &dyn Catalog) {
    collection_with_manifest(writer, reader).await;
    collection_with_manifest(reader, writer).await;
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(result: Result<T>, code: ErrorCode, what: &str) {
    match result {
        Ok(v) => panic!("{what}: expected {code:?}, got Ok({v:?})"),
        Err(e) => assert_eq!(e.code(), code, "{what}: wrong error code: {e:?}"),
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// A fresh tenant with one database, for a test of its own.
async fn scope(catalog: &dyn Catalog) -> (String, String) {
    let tenant = unique("conformance");
    catalog.create_tenant(&tenant).await.expect("create tenant");
    catalog
        .create_database(&tenant, "db")
        .await
        .expect("create database");
    (tenant, "db".to_owned())
}

/// A new collection named `name` in `tenant`/`database`: a fresh id, default
/// configuration, no metadata (also for other crates' catalog tests).
pub fn new_collection(tenant: &str, database: &str, name: &str) -> Collection {
    Collection {
        id: Uuid::new_v4(),
        name: name.to_owned(),
        tenant: tenant.to_owned(),
        database: database.to_owned(),
        metadata: None,
        configuration: CollectionConfiguration::default(),
        dimension: None,
    }
}

fn manifest() -> Manifest {
    Manifest::new(vec![7; 60])
}

async fn create(catalog: &dyn Catalog, tenant: &str, database: &str, name: &str) -> Collection {
    let c = new_collection(tenant, database, name);
    let (created, fresh) = catalog
        .create_collection(&c, &manifest(), IfExists::Fail)
        .await
        .expect("create");
    assert!(fresh);
    assert_eq!(created, c);
    created
}

fn api_key(id: &str, created_at_ms: u64) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_owned(),
        name: Some(format!("key {id}")),
        digest: vec![0xab; 32],
        grants: vec!["acme/*/*:read,write".to_owned()],
        row_filter: Some(serde_json::json!({"team": "a"})),
        created_at_ms,
        expires_at_ms: Some(created_at_ms + 60_000),
        revoked_at_ms: None,
    }
}
