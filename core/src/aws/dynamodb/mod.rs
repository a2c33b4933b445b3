//! The catalog in DynamoDB, for AWS deployments.
//!
//! # Tables
//!
//! Three on-demand (`PAY_PER_REQUEST`) tables, named by [`table_names`] from the
//! deployment's table prefix, with string keys and no secondary index (an index cannot be
//! read consistently, and every read here is strongly consistent: `ConsistentRead` on
//! every `GetItem`, `BatchGetItem`, `Query` and `Scan`).
//!
//! **`{prefix}catalog`**, key `pk` (partition) + `sk` (sort):
//!
//! | item | `pk` | `sk` | other attributes |
//! |---|---|---|---|
//! | tenant | `TENANT#{tenant}` | `TENANT` | `order` |
//! | database | `TENANT#{tenant}` | `DATABASE#{name}` | `id`, `name`, `order`, `collections` (N, how many it holds) |
//! | collection | `COLLECTION#{id}` | `COLLECTION` | `id`, `tenant`, `database`, `name`, `metadata` (JSON, absent for none), `configuration` (JSON), `order`, `revision` (see below) |
//! | collection name | `NAMES#{tenant byte length}#{tenant}#{database}` | `NAME#{name}` | `id`, `order` |
//! | lineage | `LINEAGE#{root}` | `LINEAGE` | `root`, `tenant`, `database`, `forks` (N), `members` (JSON array of the member UUIDs, sorted), `version` (N, incremented by every change) |
//!
//! A tenant and its databases share a partition (one `Query` lists the databases and
//! proves the tenant exists); the names of a database's collections share another (one
//! `Query` lists them). The tenant's length in the names partition key keeps the key
//! unambiguous whatever characters names hold. `order` is a ULID from a per-process
//! monotonic generator: listings sort by it, so they follow creation order. A lineage
//! (see [`Lineage`]) has a partition of its own, which no listing reads.
//!
//! **`{prefix}manifests`**, key `id` (the collection's UUID): `version` (N, the
//! compare-and-swap token), `dimension` (N, absent until fixed), `commit` (a ULID naming
//! the write that stored this version), `record` (the collection record's `revision`)
//! and either `body` (the manifest's JSON) or, for a
//! manifest whose JSON exceeds the overflow threshold (default
//! [`DEFAULT_OVERFLOW_THRESHOLD`], below DynamoDB's 400 KB item limit), `overflow`: the key
//! of an object `manifests/{collection id}/{version}-{ulid}.json` in the overflow object
//! store holding the JSON.
//!
//! **`{prefix}api-keys`**, key `id` (the key id): `body` (the [`ApiKeyRecord`] JSON),
//! `created_at_ms` (N), `order`, and `revoked_at_ms` (N, present once revoked; it wins
//! over the body's field). `reset` never touches this table.
//!
//! # Reads of a collection
//!
//! Every request on a collection's records reads the collection (its name and database
//! decide what the caller may do) and its manifest: two strongly consistent reads, which
//! on-demand DynamoDB bills as two read units. The collection record changes rarely
//! (rename, metadata, configuration) and the manifest with every write, so the record
//! carries a `revision` (a fresh ULID at each change) and the manifest item names it in
//! `record`, both written in the transaction that changes the record. A reader reads
//! the manifest item, and takes the record from its own cache when the cache holds that
//! revision: one read unit per request once the collection is known. A cache miss reads
//! the record too and keeps it only if its revision is the one the manifest item named
//! (else the record changed between the two reads, and both are read again). Items
//! written by a version without revisions (one of the two lacks its attribute) are read
//! both every time, as that version read them. While such a version still runs beside
//! this one (a deployment being updated), a rename it makes leaves the revision as it
//! was, so a reader's cache may show the old name until the record's next change.
//!
//! # Writes
//!
//! Unique names are conditional writes (`attribute_not_exists`). A collection's record,
//! its name and its manifest change together in one `TransactWriteItems` (create, rename,
//! delete), which also adds to or subtracts from its database's `collections` count, so a
//! collection never exists without its manifest and the count is exact (it answers
//! `count_collections`). A cancelled transaction is inspected through its cancellation
//! reasons (by code): which condition failed decides the error; a conflict with another
//! transaction is retried a few times with backoff, then reported as `Unavailable`.
//!
//! `commit_manifest` is one `UpdateItem` conditioned on `version = new version − 1`; a
//! failed condition returns the stored item, which tells `Conflict` (retryable) from
//! `NotFound`. An oversized manifest is first written to the overflow store with
//! `put_if_absent` and the item then points at it; the compare-and-swap stays on the
//! item. When the swap is lost the object is deleted again; when it wins, the previous
//! version's object (returned by the update) is deleted. A reader that fetched the old
//! pointer and then finds its object gone reads the item again (a bounded number of
//! times). Deleting a collection deletes its overflow object after the transaction.
//! Every write carries a fresh `commit` id, so a commit retried by the SDK after its first
//! attempt landed is recognized as ours rather than reported as a conflict. After an
//! ambiguous failure (a timeout, a 5xx) an overflow object is left in place, since the
//! write may have landed; `reset` removes such leftovers.
//!
//! `fork_collection` reads the source's record, its manifest item and its root's lineage
//! item, then writes in one transaction: the database's count, the fork's name, record
//! and manifest (as create does), the lineage item (created, or replaced on condition of
//! its `version`), a check that the source's record still has the `configuration` and
//! `metadata` read, and, on condition that the source's manifest `version` is the one
//! read, the source's manifest item replaced by its next version naming its lineage (at
//! its first fork) or else a check of it. So the fork holds exactly one committed version
//! of the source. A round lost to a concurrent commit, update, fork or deletion reads
//! again (a bounded number of times, then `Conflict`), its overflow objects deleted; when
//! the source's item is replaced, its previous overflow object is deleted as a commit's
//! is. Deleting a collection of a lineage writes the lineage item without it, or deletes
//! it with its last member, in the same transaction (on condition of its `version`).
//!
//! `delete_database` cannot be one transaction (at most 100 items), so it deletes the
//! database's collections one transaction each, then the database item on condition that
//! its `collections` count is zero (a collection created meanwhile makes it go round
//! again). A crash in the middle leaves the database with some of its collections, each
//! whole (record, name and manifest), and a retry finishes the job; the manifests of the
//! collections deleted before the crash are not returned to anyone, so their data objects
//! are left for a sweep of the object store. `reset` deletes the catalog items first, then
//! the manifests, then every overflow object: a crash leaves at worst unreachable
//! manifests, removed by the next `reset`.
//!
//! # Defaults
//!
//! [`DynamoCatalog::ensure_tables`] creates the missing tables and then the default tenant
//! and database (the database with the nil UUID, as Chroma has it), idempotently: run it
//! once per deployment (`chroma aws init`), also when the tables come from a template.
//! `reset` recreates the defaults.

mod api_keys;
mod manifests;
mod names;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, DeleteRequest,
    KeySchemaElement, KeyType, KeysAndAttributes, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus, TransactWriteItem,
    Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use bytes::Bytes;
use rand::Rng;
use uuid::Uuid;

use super::{sdk_error, AwsClients, AwsConfig};
use crate::catalog::{
    collection_id_missing, collection_name_missing, collection_name_taken, configuration_changed,
    ApiKeyRecord, ApiKeys, CollectionUpdate, Lineage, Manifest, Manifests, Names, DEFAULT_DATABASE,
    DEFAULT_TENANT,
};
use crate::error::{Error, ErrorCode, Result};
use crate::model::IfExists;
use crate::model::{Collection, Database, Tenant};
use crate::storage::ObjectStore;

/// Manifests whose JSON is longer than this many bytes go to the overflow store
/// (DynamoDB items are limited to 400 KB).
pub const DEFAULT_OVERFLOW_THRESHOLD: usize = 350_000;

/// Where overflow manifests live in the overflow store.
const OVERFLOW_PREFIX: &str = "manifests/";

/// Rounds of an optimistic loop (re-read and retry after a concurrent change) before
/// giving up with a retryable error.
const ATTEMPTS: u32 = 8;

/// Suffixes of the table names, after the deployment's table prefix.
const CATALOG_TABLE: &str = "catalog";
const MANIFESTS_TABLE: &str = "manifests";
const API_KEYS_TABLE: &str = "api-keys";

type Item = HashMap<String, AttributeValue>;

/// The names of a deployment's tables, in order: catalog, manifests, API keys.
pub fn table_names(table_prefix: &str) -> Vec<String> {
    [CATALOG_TABLE, MANIFESTS_TABLE, API_KEYS_TABLE]
        .iter()
        .map(|t| format!("{table_prefix}{t}"))
        .collect()
}

/// The [`Catalog`] in three DynamoDB tables (see the module documentation), with
/// oversized manifests in an object store.
pub struct DynamoCatalog {
    client: Client,
    catalog: String,
    manifests: String,
    api_keys: String,
    overflow: Arc<dyn ObjectStore>,
    overflow_threshold: usize,
    /// Collection records read, by id, with the revision each was read at (see "Reads of
    /// a collection"); emptied when it reaches [`RECORD_CACHE_ENTRIES`].
    records: std::sync::Mutex<HashMap<Uuid, (String, Collection)>>,
}

/// Collection records a catalog keeps (a few hundred bytes each).
const RECORD_CACHE_ENTRIES: usize = 4096;

impl std::fmt::Debug for DynamoCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoCatalog")
            .field("catalog", &self.catalog)
            .field("manifests", &self.manifests)
            .field("api_keys", &self.api_keys)
            .field("overflow", &self.overflow)
            .field("overflow_threshold", &self.overflow_threshold)
            .finish()
    }
}

/// Where a manifest's JSON is stored.
enum Content {
    Inline(String),
    /// The key of the overflow object.
    Overflow(String),
}

/// The outcome of a conditional single-item write.
enum Write<T> {
    Done(T),
    /// The condition failed; the stored item if there is one (`ALL_OLD`).
    ConditionFailed(Option<Item>),
}

impl DynamoCatalog {
    /// A catalog on the tables named from `config.table_prefix`, keeping oversized
    /// manifests in `overflow`. Creates nothing: see [`Self::ensure_tables`].
    pub fn new(clients: &AwsClients, config: &AwsConfig, overflow: Arc<dyn ObjectStore>) -> Self {
        let [catalog, manifests, api_keys]: [String; 3] = table_names(&config.table_prefix)
            .try_into()
            .expect("three table names");
        Self {
            client: clients.dynamodb.clone(),
            catalog,
            manifests,
            api_keys,
            overflow,
            overflow_threshold: DEFAULT_OVERFLOW_THRESHOLD,
            records: Default::default(),
        }
    }

    /// Sets the JSON length above which manifests go to the overflow store (tests use a
    /// small one).
    pub fn with_overflow_threshold(mut self, bytes: usize) -> Self {
        self.overflow_threshold = bytes;
        self
    }

    /// Creates the missing tables (on-demand capacity), waits until they are active, then
    /// creates the default tenant and database if missing. Returns the names of the tables
    /// it created. Idempotent, and safe to run from several processes at once.
    pub async fn ensure_tables(&self) -> Result<Vec<String>> {
        let specs: [(&str, &[(&str, KeyType)]); 3] = [
            (
                &self.catalog,
                &[("pk", KeyType::Hash), ("sk", KeyType::Range)],
            ),
            (&self.manifests, &[("id", KeyType::Hash)]),
            (&self.api_keys, &[("id", KeyType::Hash)]),
        ];
        let mut created = Vec::new();
        for (table, keys) in specs {
            if self.create_table(table, keys).await? {
                created.push(table.to_owned());
            }
        }
        for table in [&self.catalog, &self.manifests, &self.api_keys] {
            self.wait_until_active(table).await?;
        }
        self.ensure_defaults().await?;
        Ok(created)
    }

    /// Creates `table` unless it exists; `true` if this call created it.
    async fn create_table(&self, table: &str, keys: &[(&str, KeyType)]) -> Result<bool> {
        match self.client.describe_table().table_name(table).send().await {
            Ok(_) => return Ok(false),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) => {}
            Err(e) => return Err(ddb_error(&format!("describe table {table}"), e)),
        }
        let mut request = self
            .client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest);
        for (name, key_type) in keys {
            request = request
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(*name)
                        .key_type(key_type.clone())
                        .build()
                        .map_err(build_error)?,
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(*name)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(build_error)?,
                );
        }
        match request.send().await {
            Ok(_) => Ok(true),
            // Another process created it meanwhile.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(ddb_error(&format!("create table {table}"), e)),
        }
    }

    async fn wait_until_active(&self, table: &str) -> Result<()> {
        // Tables become active within seconds; five minutes is a generous bound.
        for _ in 0..600 {
            let out = self
                .client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|e| ddb_error(&format!("describe table {table}"), e))?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(Error::unavailable(format!(
            "table {table} did not become active within 5 minutes"
        )))
    }

    /// Creates the default tenant and database if missing (a deployment made by the SAM
    /// template starts with empty tables).
    pub async fn ensure_defaults(&self) -> Result<()> {
        self.put_new(
            &self.catalog,
            tenant_item(DEFAULT_TENANT),
            "pk",
            "create tenant",
        )
        .await?;
        // Chroma's default database has the nil UUID.
        let db = database_item(DEFAULT_TENANT, DEFAULT_DATABASE, Uuid::nil());
        self.put_new(&self.catalog, db, "pk", "create database")
            .await?;
        Ok(())
    }

    // ---- low-level helpers ----

    /// Puts `item` unless an item with its key exists; `false` if one did. An item with
    /// the same `order` is this very write, landed by an earlier attempt of the SDK.
    async fn put_new(&self, table: &str, item: Item, key: &str, op: &str) -> Result<bool> {
        let condition = format!("attribute_not_exists({key})");
        let result = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item.clone()))
            .set_expression_attribute_names(names(&[&condition]))
            .condition_expression(condition)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let outcome = write_outcome(result, op, |e| match e {
            PutItemError::ConditionalCheckFailedException(c) => Some(c.item.clone()),
            _ => None,
        })?;
        Ok(match outcome {
            Write::Done(_) => true,
            Write::ConditionFailed(stored) => stored
                .is_some_and(|s| s.contains_key("order") && s.get("order") == item.get("order")),
        })
    }

    /// A strongly consistent `GetItem`, optionally of some attributes only.
    async fn get(&self, table: &str, key: Item, projection: Option<&str>) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(true)
            .set_projection_expression(projection.map(str::to_owned))
            .set_expression_attribute_names(projection.and_then(|p| names(&[p])))
            .send()
            .await
            .map_err(|e| ddb_error(&format!("get item from {table}"), e))?;
        Ok(out.item)
    }

    /// Every item of a catalog partition (strongly consistent, all pages).
    async fn query_partition(&self, pk: &str) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.catalog)
                .consistent_read(true)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| ddb_error("query catalog", e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// Every item of `table` matching `filter` (strongly consistent, all pages).
    async fn scan(
        &self,
        table: &str,
        filter: Option<(&str, AttributeValue)>,
        projection: Option<&str>,
    ) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut request = self
                .client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_projection_expression(projection.map(str::to_owned))
                .set_expression_attribute_names(projection.and_then(|p| names(&[p])))
                .set_exclusive_start_key(start.take());
            if let Some((expression, value)) = &filter {
                request = request
                    .filter_expression(*expression)
                    .expression_attribute_values(":filter", value.clone());
            }
            let out = request
                .send()
                .await
                .map_err(|e| ddb_error(&format!("scan {table}"), e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// The items with these keys that exist (strongly consistent), in no particular order.
    async fn batch_get(
        &self,
        table: &str,
        keys: Vec<Item>,
        projection: Option<&str>,
    ) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        for chunk in keys.chunks(100) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(true)
                    .set_projection_expression(projection.map(str::to_owned))
                    .set_expression_attribute_names(projection.and_then(|p| names(&[p])))
                    .build()
                    .map_err(build_error)?,
            );
            let mut attempt = 0;
            while let Some(request) = pending.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(table, request)
                    .send()
                    .await
                    .map_err(|e| ddb_error(&format!("batch get from {table}"), e))?;
                if let Some(mut responses) = out.responses {
                    items.extend(responses.remove(table).unwrap_or_default());
                }
                pending = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(table))
                    .filter(|k| !k.keys().is_empty());
                if pending.is_some() {
                    attempt += 1;
                    if attempt >= ATTEMPTS {
                        return Err(Error::unavailable(format!(
                            "batch get from {table} left keys unprocessed"
                        )));
                    }
                    backoff(attempt).await;
                }
            }
        }
        Ok(items)
    }

    /// Deletes the items with these keys, 25 per request.
    async fn batch_delete(&self, table: &str, keys: Vec<Item>) -> Result<()> {
        for chunk in keys.chunks(25) {
            let mut pending = chunk
                .iter()
                .map(|key| {
                    Ok(WriteRequest::builder()
                        .delete_request(
                            DeleteRequest::builder()
                                .set_key(Some(key.clone()))
                                .build()
                                .map_err(build_error)?,
                        )
                        .build())
                })
                .collect::<Result<Vec<_>>>()?;
            let mut attempt = 0;
            while !pending.is_empty() {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(table, std::mem::take(&mut pending))
                    .send()
                    .await
                    .map_err(|e| ddb_error(&format!("batch delete from {table}"), e))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(table))
                    .unwrap_or_default();
                if !pending.is_empty() {
                    attempt += 1;
                    if attempt >= ATTEMPTS {
                        return Err(Error::unavailable(format!(
                            "batch delete from {table} left items unprocessed"
                        )));
                    }
                    backoff(attempt).await;
                }
            }
        }
        Ok(())
    }

    /// Runs a transaction: `None` when it committed, or which items' conditions failed
    /// when it was cancelled for that. Conflicts with concurrent transactions are retried.
    async fn transact(&self, op: &str, items: Vec<TransactWriteItem>) -> Result<Option<Vec<bool>>> {
        let mut attempt = 0;
        loop {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(None),
                Err(e) => e,
            };
            let codes: Vec<Option<String>> = match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(e)) => e
                    .cancellation_reasons()
                    .iter()
                    .map(|r| r.code().filter(|c| *c != "None").map(str::to_owned))
                    .collect(),
                _ => return Err(ddb_error(op, err)),
            };
            let failed: Vec<bool> = codes
                .iter()
                .map(|c| c.as_deref() == Some("ConditionalCheckFailed"))
                .collect();
            if failed.contains(&true) {
                return Ok(Some(failed));
            }
            let transient = codes.iter().flatten().all(|c| {
                matches!(
                    c.as_str(),
                    "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
                )
            });
            if !transient {
                return Err(Error::internal_from(
                    format!("{op} failed: transaction cancelled ({codes:?})"),
                    err,
                ));
            }
            attempt += 1;
            if attempt >= ATTEMPTS {
                return Err(Error::with_source(
                    ErrorCode::Unavailable,
                    format!("{op} failed: it kept conflicting with concurrent changes"),
                    err,
                ));
            }
            backoff(attempt).await;
        }
    }

    /// Deletes an object that nothing references any more; a failure only leaves garbage.
    async fn delete_object(&self, key: &str) {
        if let Err(e) = self.overflow.delete(key).await {
            tracing::warn!(key, error = %e, "cannot delete an overflow manifest object");
        }
    }

    // ---- manifests ----

    /// Serializes `manifest`, writing it to the overflow store if it is too large.
    async fn store_content(&self, id: Uuid, manifest: &Manifest) -> Result<Content> {
        let body = to_json(manifest)?;
        if body.len() <= self.overflow_threshold {
            return Ok(Content::Inline(body));
        }
        let key = format!(
            "{OVERFLOW_PREFIX}{id}/{}-{}.json",
            manifest.version,
            ulid::Ulid::new().to_string().to_lowercase()
        );
        self.overflow.put_if_absent(&key, Bytes::from(body)).await?;
        Ok(Content::Overflow(key))
    }

    /// Deletes the overflow object of a write that did not happen.
    async fn discard(&self, content: &Content) {
        if let Content::Overflow(key) = content {
            self.delete_object(key).await;
        }
    }

    /// The manifest an item holds; `None` if it points at an overflow object that is gone
    /// (a newer commit replaced it after the item was read).
    async fn decode_manifest(&self, item: &Item) -> Result<Option<Manifest>> {
        let body = match opt_s(item, "body")? {
            Some(body) => Bytes::copy_from_slice(body.as_bytes()),
            None => match self.overflow.get(req_s(item, "overflow")?).await {
                Ok(body) => body,
                Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| Error::internal_from("corrupted catalog: manifest", e))
    }

    /// The collection's manifest and its item; `None` if there is none.
    async fn load_manifest(&self, id: Uuid) -> Result<Option<(Manifest, Item)>> {
        for _ in 0..ATTEMPTS {
            let Some(item) = self.get(&self.manifests, manifest_key(id), None).await? else {
                return Ok(None);
            };
            if let Some(manifest) = self.decode_manifest(&item).await? {
                return Ok(Some((manifest, item)));
            }
            // The object was replaced between the two reads: the item now says by what.
        }
        Err(Error::internal(format!(
            "corrupted catalog: the manifest of collection {id} points at a missing object"
        )))
    }

    // ---- collections ----

    /// The collection with this id, its dimension from its manifest; `None` if either is
    /// missing.
    async fn collection_by_id(&self, id: Uuid) -> Result<Option<Collection>> {
        Ok(self.collection_with_item(id).await?.map(|(c, _)| c))
    }

    /// The collection with this id and its manifest item, as of one read of that item;
    /// `None` if either is missing. The record comes from this catalog's cache when the
    /// item names the revision it was cached at, else from the catalog table (see "Reads
    /// of a collection").
    pub(super) async fn collection_with_item(
        &self,
        id: Uuid,
    ) -> Result<Option<(Collection, Item)>> {
        for _ in 0..ATTEMPTS {
            let Some(item) = self.get(&self.manifests, manifest_key(id), None).await? else {
                return Ok(None);
            };
            let dimension = dimension_of(&item)?;
            let revision = opt_s(&item, "record")?.map(str::to_owned);
            if let Some(c) = revision.as_ref().and_then(|r| self.cached_record(id, r)) {
                return Ok(Some((Collection { dimension, ..c }, item)));
            }
            let Some(record) = self.get(&self.catalog, collection_key(id), None).await? else {
                return Ok(None);
            };
            let c = collection_from(&record, dimension)?;
            match (revision, opt_s(&record, "revision")?) {
                (Some(named), Some(read)) if named == read => self.cache_record(named, &c),
                // The record changed after the manifest item was read.
                (Some(_), Some(_)) => continue,
                // One of them was written by a version without revisions: read both
                // every time, as that version did.
                _ => {}
            }
            return Ok(Some((c, item)));
        }
        Err(Error::conflict(format!(
            "collection {id} kept changing while being read"
        )))
    }

    fn cached_record(&self, id: Uuid, revision: &str) -> Option<Collection> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records
            .get(&id)
            .filter(|(r, _)| r == revision)
            .map(|(_, c)| c.clone())
    }

    fn cache_record(&self, revision: String, c: &Collection) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= RECORD_CACHE_ENTRIES {
            records.clear();
        }
        records.insert(c.id, (revision, c.clone()));
    }

    async fn collection_by_name(
        &self,
        tenant: &str,
        database: &str,
        name: &str,
    ) -> Result<Option<Collection>> {
        for _ in 0..ATTEMPTS {
            let Some(entry) = self
                .get(&self.catalog, name_key(tenant, database, name), None)
                .await?
            else {
                return Ok(None);
            };
            match self
                .collection_by_id(parse_id(req_s(&entry, "id")?)?)
                .await?
            {
                Some(c) if c.tenant == tenant && c.database == database && c.name == name => {
                    return Ok(Some(c))
                }
                // Renamed or deleted between the two reads: look again.
                _ => continue,
            }
        }
        Ok(None)
    }

    /// The collections with these ids that exist, in this order.
    async fn collections_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Collection>> {
        let (records, manifests) = futures::try_join!(
            self.batch_get(
                &self.catalog,
                ids.iter().map(|id| collection_key(*id)).collect(),
                None
            ),
            self.batch_get(
                &self.manifests,
                ids.iter().map(|id| manifest_key(*id)).collect(),
                Some("#id, #dimension"),
            ),
        )?;
        let mut records: HashMap<String, Item> = records
            .into_iter()
            .map(|r| Ok((req_s(&r, "id")?.to_owned(), r)))
            .collect::<Result<_>>()?;
        let dimensions = dimensions(&manifests)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let id = id.to_string();
            if let (Some(record), Some(dimension)) = (records.remove(&id), dimensions.get(&id)) {
                out.push(collection_from(&record, *dimension)?);
            }
        }
        Ok(out)
    }

    async fn database_item(&self, tenant: &str, name: &str) -> Result<Item> {
        self.get(&self.catalog, database_key(tenant, name), None)
            .await?
            .ok_or_else(|| database_not_found(tenant, name))
    }

    /// The items of a transaction that creates collection `c` (creation order `order`)
    /// with `manifest` (stored as `content`): its database's count, its name, its record
    /// and its manifest, in this order, each conditioned on being new (the database on
    /// existing).
    fn new_collection_items(
        &self,
        c: &Collection,
        order: &str,
        manifest: &Manifest,
        content: &Content,
    ) -> Result<Vec<TransactWriteItem>> {
        let revision = next_order();
        Ok(vec![
            tx_update(
                &self.catalog,
                database_key(&c.tenant, &c.database),
                "ADD #collections :one",
                "attribute_exists(pk)",
                vec![(":one", n(1))],
            )?,
            tx_put(
                &self.catalog,
                name_item(c, order),
                "attribute_not_exists(pk)",
            )?,
            tx_put(
                &self.catalog,
                collection_item(c, order, &revision)?,
                "attribute_not_exists(pk)",
            )?,
            tx_put(
                &self.manifests,
                manifest_item(c.id, manifest, content, Some(&revision)),
                "attribute_not_exists(#id)",
            )?,
        ])
    }

    /// One attempt at creating a collection, the overflow object (if any) already written.
    async fn create_collection_tx(
        &self,
        c: &Collection,
        manifest: &Manifest,
        content: &Content,
        if_exists: IfExists,
    ) -> Result<(Collection, bool)> {
        let order = next_order();
        for _ in 0..ATTEMPTS {
            if if_exists == IfExists::Get {
                if let Some(existing) = self
                    .collection_by_name(&c.tenant, &c.database, &c.name)
                    .await?
                {
                    return Ok((existing, false));
                }
            }
            let items = self.new_collection_items(c, &order, manifest, content)?;
            let Some(failed) = self.transact("create collection", items).await? else {
                return Ok((c.clone(), true));
            };
            let failed = |i: usize| failed.get(i).copied().unwrap_or(false);
            if failed(0) {
                return Err(database_not_found(&c.tenant, &c.database));
            }
            if failed(1) {
                if if_exists == IfExists::Get {
                    // Taken meanwhile: return the winner (read at the top of the loop).
                    continue;
                }
                return Err(collection_name_taken(&c.name));
            }
            return Err(collection_id_taken(c.id));
        }
        Err(Error::conflict(format!(
            "collection {} kept changing while being created",
            c.name
        )))
    }

    /// One round of renaming and/or updating a collection; `None` if it changed
    /// concurrently (read again and retry).
    async fn update_once(&self, id: Uuid, update: &CollectionUpdate) -> Result<Option<()>> {
        let record = self
            .get(&self.catalog, collection_key(id), None)
            .await?
            .ok_or_else(|| collection_id_missing(id))?;
        let current = collection_from(&record, None)?;
        let mut values = Vec::new();
        // A compare-and-set holds the write to the configuration just read, byte for byte.
        let mut configuration_unchanged = "";
        if let Some(expected) = &update.expected_configuration {
            if *expected != current.configuration {
                return Err(configuration_changed(id));
            }
            configuration_unchanged = " AND #configuration = :seen_configuration";
            values.push((":seen_configuration", s(req_s(&record, "configuration")?)));
        }
        let mut sets = Vec::new();
        if let Some(metadata) = &update.metadata {
            sets.push("#metadata = :metadata");
            values.push((":metadata", s(to_json(metadata)?)));
        }
        if let Some(configuration) = &update.configuration {
            sets.push("#configuration = :configuration");
            values.push((":configuration", s(to_json(configuration)?)));
        }
        let new_name = update.name.as_deref().filter(|n| *n != current.name);
        if new_name.is_none() && sets.is_empty() {
            return Ok(Some(()));
        }
        // The record's new revision, named by its manifest item in the same transaction
        // (see "Reads of a collection").
        let revision = next_order();
        sets.push("#revision = :revision");
        values.push((":revision", s(&revision)));
        let manifest_names_it = tx_update(
            &self.manifests,
            manifest_key(id),
            "SET #record = :record",
            "attribute_exists(#id)",
            vec![(":record", s(&revision))],
        )?;
        let Some(new_name) = new_name else {
            let update_expression = format!("SET {}", sets.join(", "));
            let condition = format!("attribute_exists(pk){configuration_unchanged}");
            let items = vec![
                tx_update(
                    &self.catalog,
                    collection_key(id),
                    &update_expression,
                    &condition,
                    values,
                )?,
                manifest_names_it,
            ];
            return match self.transact("update collection", items).await? {
                None => Ok(Some(())),
                // Changed meanwhile: the next round's read says how.
                Some(_) if update.expected_configuration.is_some() => Ok(None),
                Some(_) => Err(collection_id_missing(id)),
            };
        };
        sets.push("#name = :new_name");
        values.push((":new_name", s(new_name)));
        values.push((":old_name", s(&current.name)));
        let update_expression = format!("SET {}", sets.join(", "));
        let renamed = Collection {
            name: new_name.to_owned(),
            ..current.clone()
        };
        let items = vec![
            tx_update(
                &self.catalog,
                collection_key(id),
                &update_expression,
                &format!("#name = :old_name{configuration_unchanged}"),
                values,
            )?,
            tx_delete(
                &self.catalog,
                name_key(&current.tenant, &current.database, &current.name),
                "#id = :id",
                vec![(":id", s(id.to_string()))],
            )?,
            tx_put(
                &self.catalog,
                name_item(&renamed, req_s(&record, "order")?),
                "attribute_not_exists(pk)",
            )?,
            manifest_names_it,
        ];
        match self.transact("rename collection", items).await? {
            None => Ok(Some(())),
            Some(failed) if failed.get(2).copied().unwrap_or(false) => {
                Err(collection_name_taken(new_name))
            }
            Some(_) => Ok(None),
        }
    }

    /// One round of forking `source` into `id` named `name` (creation order `order`):
    /// reads the source's record, manifest and lineage, then writes the fork in one
    /// transaction conditioned on all three being as read. `None` if one of them changed
    /// meanwhile (read again and retry). Overflow objects written for a round that
    /// definitely did not commit are deleted again.
    async fn fork_once(
        &self,
        source: Uuid,
        id: Uuid,
        name: &str,
        order: &str,
    ) -> Result<Option<Collection>> {
        let record = self
            .get(&self.catalog, collection_key(source), None)
            .await?
            .ok_or_else(|| collection_id_missing(source))?;
        // Missing only if the source was deleted between the two reads.
        let (manifest, stored) = self
            .load_manifest(source)
            .await?
            .ok_or_else(|| collection_id_missing(source))?;
        if id == source {
            return Err(collection_id_taken(id));
        }
        let root = manifest.owner(source);
        let lineage = self.get(&self.catalog, lineage_key(root), None).await?;
        let forked = manifest.forked(source);
        // At the first fork, the source's manifest gets its lineage in a commit of the
        // next version.
        let rooted = match manifest.lineage {
            Some(_) => None,
            None => Some(Manifest {
                version: next_version(manifest.version)?,
                lineage: Some(root),
                ..manifest.clone()
            }),
        };
        let fork_content = self.store_content(id, &forked).await?;
        let rooted_content = match &rooted {
            None => None,
            Some(m) => match self.store_content(source, m).await {
                Ok(content) => Some(content),
                Err(e) => {
                    self.discard(&fork_content).await;
                    return Err(e);
                }
            },
        };
        let result = self
            .fork_tx(
                ForkRead {
                    source,
                    record: &record,
                    stored: &stored,
                    lineage: lineage.as_ref(),
                    root,
                },
                ForkWrite {
                    id,
                    name,
                    order,
                    forked: &forked,
                    fork_content: &fork_content,
                    rooted: rooted.as_ref().zip(rooted_content.as_ref()),
                },
            )
            .await;
        // The objects stay only if the fork committed, or may have (an ambiguous failure).
        let definitely_not_stored = match &result {
            Ok(fork) => fork.is_none(),
            Err(e) => matches!(e.code(), ErrorCode::NotFound | ErrorCode::AlreadyExists),
        };
        if definitely_not_stored {
            self.discard(&fork_content).await;
            if let Some(content) = &rooted_content {
                self.discard(content).await;
            }
        }
        if matches!(result, Ok(Some(_))) && rooted.is_some() {
            // The source's previous manifest item was replaced: its object is garbage.
            if let Some(previous) = opt_s(&stored, "overflow")? {
                self.delete_object(previous).await;
            }
        }
        result
    }

    /// The transaction of one round of [`Self::fork_once`], its contents written: `None`
    /// if the source or its lineage changed since `read`.
    async fn fork_tx(
        &self,
        read: ForkRead<'_>,
        write: ForkWrite<'_>,
    ) -> Result<Option<Collection>> {
        let source = collection_from(read.record, None)?;
        let fork = Collection {
            id: write.id,
            name: write.name.to_owned(),
            dimension: write.forked.dimension,
            ..source.clone()
        };
        let version = req_n(read.stored, "version")?;
        let same_version = "#version = :version";
        let source_manifest = match write.rooted {
            Some((rooted, content)) => {
                // The rewritten item keeps the record revision it names, on condition that
                // no change of the record (a rename) replaced it since it was read.
                let record = opt_s(read.stored, "record")?;
                let mut values = vec![(":version", n(version))];
                let condition = match record {
                    Some(r) => {
                        values.push((":record", s(r)));
                        "#version = :version AND #record = :record"
                    }
                    None => "#version = :version AND attribute_not_exists(#record)",
                };
                tx_put_with(
                    &self.manifests,
                    manifest_item(read.source, rooted, content, record),
                    condition,
                    values,
                )?
            }
            None => tx_check_with(
                &self.manifests,
                manifest_key(read.source),
                same_version,
                vec![(":version", n(version))],
            )?,
        };
        let mut record_values = vec![(":configuration", s(req_s(read.record, "configuration")?))];
        let record_unchanged = match opt_s(read.record, "metadata")? {
            Some(metadata) => {
                record_values.push((":metadata", s(metadata)));
                "#configuration = :configuration AND #metadata = :metadata"
            }
            None => "#configuration = :configuration AND attribute_not_exists(#metadata)",
        };
        let lineage = match read.lineage {
            None => tx_put(
                &self.catalog,
                lineage_item(
                    &source.tenant,
                    &source.database,
                    &Lineage {
                        root: read.root,
                        forks: 1,
                        members: vec![read.source, write.id],
                    },
                    1,
                )?,
                "attribute_not_exists(pk)",
            )?,
            Some(item) => {
                let mut lineage = lineage_from(item)?;
                lineage.forks = lineage
                    .forks
                    .checked_add(1)
                    .ok_or_else(|| corrupt("lineage forks"))?;
                lineage.members.push(write.id);
                let version = req_n(item, "version")?;
                tx_put_with(
                    &self.catalog,
                    lineage_item(
                        &source.tenant,
                        &source.database,
                        &lineage,
                        next_version(version)?,
                    )?,
                    same_version,
                    vec![(":version", n(version))],
                )?
            }
        };
        // Every item distinct: DynamoDB allows one operation per item in a transaction.
        let mut items =
            self.new_collection_items(&fork, write.order, write.forked, write.fork_content)?;
        items.extend([
            source_manifest,
            tx_check_with(
                &self.catalog,
                collection_key(read.source),
                record_unchanged,
                record_values,
            )?,
            lineage,
        ]);
        let Some(failed) = self.transact("fork collection", items).await? else {
            return Ok(Some(fork));
        };
        let failed = |i: usize| failed.get(i).copied().unwrap_or(false);
        if failed(0) {
            return Err(database_not_found(&fork.tenant, &fork.database));
        }
        if failed(1) {
            return Err(collection_name_taken(write.name));
        }
        if failed(2) || failed(3) {
            return Err(collection_id_taken(write.id));
        }
        // The source's manifest, its record or its lineage changed meanwhile.
        Ok(None)
    }

    /// The write that takes collection `c`, whose manifest is `manifest`, out of its
    /// lineage, on condition that the lineage item is still the one read: the item
    /// without `c`, or its deletion when no member is left. `None` if `c` is in no
    /// lineage.
    async fn leave_lineage(
        &self,
        c: &Collection,
        manifest: &Manifest,
    ) -> Result<Option<TransactWriteItem>> {
        let Some(root) = manifest.lineage else {
            return Ok(None);
        };
        let Some(item) = self.get(&self.catalog, lineage_key(root), None).await? else {
            return Ok(None);
        };
        let mut lineage = lineage_from(&item)?;
        if !lineage.members.contains(&c.id) {
            return Ok(None);
        }
        lineage.members.retain(|m| *m != c.id);
        let version = req_n(&item, "version")?;
        let condition = "#version = :version";
        let values = vec![(":version", n(version))];
        let write = if lineage.members.is_empty() {
            tx_delete(&self.catalog, lineage_key(root), condition, values)?
        } else {
            tx_put_with(
                &self.catalog,
                lineage_item(&c.tenant, &c.database, &lineage, next_version(version)?)?,
                condition,
                values,
            )?
        };
        Ok(Some(write))
    }
}

/// What a round of forking read: the source's record and manifest item, the lineage item
/// of its root (if any).
struct ForkRead<'a> {
    source: Uuid,
    record: &'a Item,
    stored: &'a Item,
    lineage: Option<&'a Item>,
    root: Uuid,
}

/// What a round of forking writes: the fork and its manifest, and the source's next
/// manifest when it gets its lineage (with their contents, already stored).
struct ForkWrite<'a> {
    id: Uuid,
    name: &'a str,
    order: &'a str,
    forked: &'a Manifest,
    fork_content: &'a Content,
    rooted: Option<(&'a Manifest, &'a Content)>,
}

// ---- items ----

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn tenant_pk(tenant: &str) -> String {
    format!("TENANT#{tenant}")
}

fn names_pk(tenant: &str, database: &str) -> String {
    format!("NAMES#{}#{tenant}#{database}", tenant.len())
}

fn key(pk: String, sk: String) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn tenant_key(tenant: &str) -> Item {
    key(tenant_pk(tenant), "TENANT".to_owned())
}

fn database_key(tenant: &str, name: &str) -> Item {
    key(tenant_pk(tenant), format!("DATABASE#{name}"))
}

fn collection_key(id: Uuid) -> Item {
    key(format!("COLLECTION#{id}"), "COLLECTION".to_owned())
}

fn name_key(tenant: &str, database: &str, name: &str) -> Item {
    key(names_pk(tenant, database), format!("NAME#{name}"))
}

/// The lineage rooted at collection `root`.
fn lineage_key(root: Uuid) -> Item {
    key(format!("LINEAGE#{root}"), "LINEAGE".to_owned())
}

fn manifest_key(id: Uuid) -> Item {
    HashMap::from([("id".to_owned(), s(id.to_string()))])
}

fn api_key_key(id: &str) -> Item {
    HashMap::from([("id".to_owned(), s(id))])
}

fn with(
    mut item: Item,
    attributes: impl IntoIterator<Item = (&'static str, AttributeValue)>,
) -> Item {
    item.extend(attributes.into_iter().map(|(k, v)| (k.to_owned(), v)));
    item
}

fn tenant_item(name: &str) -> Item {
    with(tenant_key(name), [("order", s(next_order()))])
}

fn database_item(tenant: &str, name: &str, id: Uuid) -> Item {
    with(
        database_key(tenant, name),
        [
            ("id", s(id.to_string())),
            ("name", s(name)),
            ("order", s(next_order())),
            ("collections", n(0)),
        ],
    )
}

fn collection_item(c: &Collection, order: &str, revision: &str) -> Result<Item> {
    let mut item = with(
        collection_key(c.id),
        [
            ("id", s(c.id.to_string())),
            ("tenant", s(&c.tenant)),
            ("database", s(&c.database)),
            ("name", s(&c.name)),
            ("configuration", s(to_json(&c.configuration)?)),
            ("order", s(order)),
            ("revision", s(revision)),
        ],
    );
    if let Some(metadata) = &c.metadata {
        item.insert("metadata".to_owned(), s(to_json(metadata)?));
    }
    Ok(item)
}

fn name_item(c: &Collection, order: &str) -> Item {
    with(
        name_key(&c.tenant, &c.database, &c.name),
        [("id", s(c.id.to_string())), ("order", s(order))],
    )
}

/// The manifest item of collection `id`; `record` is its record's revision (absent on
/// items written before revisions).
fn manifest_item(id: Uuid, manifest: &Manifest, content: &Content, record: Option<&str>) -> Item {
    let mut item = with(
        manifest_key(id),
        [
            ("version", n(manifest.version)),
            ("commit", s(next_order())),
        ],
    );
    if let Some(record) = record {
        item.insert("record".to_owned(), s(record));
    }
    match content {
        Content::Inline(body) => item.insert("body".to_owned(), s(body)),
        Content::Overflow(key) => item.insert("overflow".to_owned(), s(key)),
    };
    if let Some(d) = manifest.dimension {
        item.insert("dimension".to_owned(), n(u64::from(d)));
    }
    item
}

/// The item of `lineage` (of collections of `tenant`/`database`) at `version`; its members
/// sorted.
fn lineage_item(tenant: &str, database: &str, lineage: &Lineage, version: u64) -> Result<Item> {
    let mut members = lineage.members.clone();
    members.sort();
    members.dedup();
    Ok(with(
        lineage_key(lineage.root),
        [
            ("root", s(lineage.root.to_string())),
            ("tenant", s(tenant)),
            ("database", s(database)),
            ("forks", n(lineage.forks)),
            ("members", s(to_json(&members)?)),
            ("version", n(version)),
        ],
    ))
}

/// The version that follows `version` (of a manifest or a lineage item).
fn next_version(version: u64) -> Result<u64> {
    version
        .checked_add(1)
        .ok_or_else(|| corrupt("a version at its maximum"))
}

fn corrupt(what: &str) -> Error {
    Error::internal(format!("corrupted catalog: {what}"))
}

fn opt_s<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        Some(_) => Err(corrupt(&format!("attribute {name} is not a string"))),
    }
}

fn req_s<'a>(item: &'a Item, name: &str) -> Result<&'a str> {
    opt_s(item, name)?.ok_or_else(|| corrupt(&format!("attribute {name} is missing")))
}

fn opt_n(item: &Item, name: &str) -> Result<Option<u64>> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse()
            .map(Some)
            .map_err(|_| corrupt(&format!("attribute {name} is not a count: {v}"))),
        Some(_) => Err(corrupt(&format!("attribute {name} is not a number"))),
    }
}

fn req_n(item: &Item, name: &str) -> Result<u64> {
    opt_n(item, name)?.ok_or_else(|| corrupt(&format!("attribute {name} is missing")))
}

fn parse_id(id: &str) -> Result<Uuid> {
    Uuid::parse_str(id).map_err(|e| Error::internal_from("corrupted catalog: id", e))
}

fn dimension_of(manifest_item: &Item) -> Result<Option<u32>> {
    opt_n(manifest_item, "dimension")?
        .map(|d| u32::try_from(d).map_err(|_| corrupt("dimension")))
        .transpose()
}

/// Collection id → dimension, from manifest items.
fn dimensions(manifest_items: &[Item]) -> Result<HashMap<String, Option<u32>>> {
    manifest_items
        .iter()
        .map(|m| Ok((req_s(m, "id")?.to_owned(), dimension_of(m)?)))
        .collect()
}

fn database_from(item: &Item, tenant: &str) -> Result<Database> {
    Ok(Database {
        id: parse_id(req_s(item, "id")?)?,
        name: req_s(item, "name")?.to_owned(),
        tenant: tenant.to_owned(),
    })
}

fn collection_from(item: &Item, dimension: Option<u32>) -> Result<Collection> {
    Ok(Collection {
        id: parse_id(req_s(item, "id")?)?,
        name: req_s(item, "name")?.to_owned(),
        tenant: req_s(item, "tenant")?.to_owned(),
        database: req_s(item, "database")?.to_owned(),
        metadata: opt_s(item, "metadata")?
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| Error::internal_from("corrupted catalog: collection metadata", e))?,
        configuration: serde_json::from_str(req_s(item, "configuration")?)
            .map_err(|e| Error::internal_from("corrupted catalog: collection configuration", e))?,
        dimension,
    })
}

fn lineage_from(item: &Item) -> Result<Lineage> {
    Ok(Lineage {
        root: parse_id(req_s(item, "root")?)?,
        forks: req_n(item, "forks")?,
        members: serde_json::from_str(req_s(item, "members")?)
            .map_err(|e| Error::internal_from("corrupted catalog: lineage members", e))?,
    })
}

fn api_key_from(item: &Item) -> Result<ApiKeyRecord> {
    let mut key: ApiKeyRecord = serde_json::from_str(req_s(item, "body")?)
        .map_err(|e| Error::internal_from("corrupted catalog: api key", e))?;
    key.revoked_at_ms = opt_n(item, "revoked_at_ms")?;
    Ok(key)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::internal_from("cannot serialize to json", e))
}

/// A creation-order key: a ULID, increasing within this process.
fn next_order() -> String {
    static GENERATOR: Mutex<ulid::Generator> = Mutex::new(ulid::Generator::new());
    let mut generator = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
    generator
        .generate()
        .unwrap_or_else(|_| ulid::Ulid::new())
        .to_string()
}

fn page<T>(items: Vec<T>, limit: Option<u32>, offset: u32) -> Vec<T> {
    items
        .into_iter()
        .skip(offset as usize)
        .take(limit.map_or(usize::MAX, |l| l as usize))
        .collect()
}

// ---- requests ----

/// The `ExpressionAttributeNames` of expressions that name every attribute `#attribute`.
fn names(expressions: &[&str]) -> Option<HashMap<String, String>> {
    let mut map = HashMap::new();
    for expression in expressions {
        for (i, _) in expression.match_indices('#') {
            let rest = &expression[i + 1..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            map.insert(format!("#{}", &rest[..end]), rest[..end].to_owned());
        }
    }
    (!map.is_empty()).then_some(map)
}

fn attribute_values(
    values: Vec<(&str, AttributeValue)>,
) -> Option<HashMap<String, AttributeValue>> {
    (!values.is_empty()).then(|| values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn tx_put(table: &str, item: Item, condition: &str) -> Result<TransactWriteItem> {
    tx_put_with(table, item, condition, Vec::new())
}

/// A transactional `Put` whose condition has expression values.
fn tx_put_with(
    table: &str,
    item: Item,
    condition: &str,
    values: Vec<(&str, AttributeValue)>,
) -> Result<TransactWriteItem> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression(condition)
        .set_expression_attribute_names(names(&[condition]))
        .set_expression_attribute_values(attribute_values(values))
        .build()
        .map_err(build_error)?;
    Ok(TransactWriteItem::builder().put(put).build())
}

fn tx_check(table: &str, key: Item, condition: &str) -> Result<TransactWriteItem> {
    tx_check_with(table, key, condition, Vec::new())
}

/// A transactional `ConditionCheck` whose condition has expression values.
fn tx_check_with(
    table: &str,
    key: Item,
    condition: &str,
    values: Vec<(&str, AttributeValue)>,
) -> Result<TransactWriteItem> {
    let check = ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(key))
        .condition_expression(condition)
        .set_expression_attribute_names(names(&[condition]))
        .set_expression_attribute_values(attribute_values(values))
        .build()
        .map_err(build_error)?;
    Ok(TransactWriteItem::builder().condition_check(check).build())
}

fn tx_delete(
    table: &str,
    key: Item,
    condition: &str,
    values: Vec<(&str, AttributeValue)>,
) -> Result<TransactWriteItem> {
    let delete = Delete::builder()
        .table_name(table)
        .set_key(Some(key))
        .condition_expression(condition)
        .set_expression_attribute_names(names(&[condition]))
        .set_expression_attribute_values(attribute_values(values))
        .build()
        .map_err(build_error)?;
    Ok(TransactWriteItem::builder().delete(delete).build())
}

fn tx_update(
    table: &str,
    key: Item,
    update: &str,
    condition: &str,
    values: Vec<(&str, AttributeValue)>,
) -> Result<TransactWriteItem> {
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(key))
        .update_expression(update)
        .condition_expression(condition)
        .set_expression_attribute_names(names(&[update, condition]))
        .set_expression_attribute_values(attribute_values(values))
        .build()
        .map_err(build_error)?;
    Ok(TransactWriteItem::builder().update(update).build())
}

/// Sleeps before retry `attempt` (1, 2, …): exponential with jitter, 10 ms to 1.3 s.
async fn backoff(attempt: u32) {
    let cap = 10u64 << attempt.min(7);
    let ms = rand::thread_rng().gen_range(cap / 2..=cap);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

// ---- errors ----

fn build_error(e: BuildError) -> Error {
    Error::internal_from("invalid DynamoDB request", e)
}

/// Splits a conditional write's result: `failed` picks the item out of the operation's
/// `ConditionalCheckFailedException`; every other error is mapped by [`ddb_error`].
fn write_outcome<T, E>(
    result: std::result::Result<T, SdkError<E, HttpResponse>>,
    op: &str,
    failed: impl Fn(&E) -> Option<Option<Item>>,
) -> Result<Write<T>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(out) => Ok(Write::Done(out)),
        Err(err) => match err.as_service_error().and_then(failed) {
            Some(item) => Ok(Write::ConditionFailed(item)),
            None => Err(ddb_error(op, err)),
        },
    }
}

/// Maps an SDK error by its code: throttling and server errors (left after the SDK's own
/// retries) are `Unavailable`, the rest as [`sdk_error`] does.
fn ddb_error<E>(op: &str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    const TRANSIENT: &[&str] = &[
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
        // A single-item write on an item a transaction (a fork's check) holds.
        "TransactionConflictException",
    ];
    let server_error = err
        .raw_response()
        .is_some_and(|r| r.status().is_server_error());
    if server_error || err.code().is_some_and(|c| TRANSIENT.contains(&c)) {
        Error::with_source(ErrorCode::Unavailable, format!("{op} failed"), err)
    } else {
        sdk_error(op, err)
    }
}

fn tenant_not_found(tenant: &str) -> Error {
    Error::not_found(format!("tenant {tenant} not found"))
}

fn database_not_found(tenant: &str, name: &str) -> Error {
    Error::not_found(format!("database {name} not found in tenant {tenant}"))
}

fn collection_id_taken(id: Uuid) -> Error {
    Error::already_exists(format!("collection id {id} already exists"))
}

fn api_key_not_found(id: &str) -> Error {
    Error::not_found(format!("api key {id} does not exist"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expression_names_are_collected() {
        let got = names(&[
            "SET #version = :v, #body = :b REMOVE #overflow",
            "#version = :e",
        ])
        .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got["#version"], "version");
        assert_eq!(got["#overflow"], "overflow");
        assert!(names(&["attribute_not_exists(pk)"]).is_none());
    }

    #[test]
    fn names_partitions_are_unambiguous() {
        assert_ne!(names_pk("a#1", "b"), names_pk("a", "1#b"));
        assert_eq!(
            table_names("p-"),
            ["p-catalog", "p-manifests", "p-api-keys"]
        );
    }

    #[test]
    fn order_keys_increase() {
        let a = next_order();
        let b = next_order();
        assert!(a < b);
    }
}
