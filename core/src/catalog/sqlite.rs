//! The catalog in an SQLite file, for local deployments.
//!
//! Several processes may open the same file at once (a server and a `chroma compact`
//! run): the database is in WAL mode, every write is one `BEGIN IMMEDIATE` transaction
//! (so check-then-write sequences are atomic across processes, and a busy database is
//! waited on for up to [`BUSY_TIMEOUT`] before failing with a retryable `Unavailable`),
//! and `synchronous=FULL` makes a commit durable when it returns. Each instance holds a
//! writer connection and a reader connection; in WAL mode readers never wait for writers
//! and always see the latest commit, so reads are strongly consistent.
//!
//! The manifest compare-and-swap is `UPDATE … WHERE version = expected` inside that
//! transaction.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use uuid::Uuid;

use super::{
    collection_id_missing, collection_name_missing, collection_name_taken, configuration_changed,
    ApiKeyRecord, ApiKeys, CollectionUpdate, Lineage, Manifest, Manifests, Names, DEFAULT_DATABASE,
    DEFAULT_TENANT,
};
use crate::error::{Error, ErrorCode, Result};
use crate::model::IfExists;
use crate::model::{Collection, Database, Tenant};

/// How long an operation waits for another connection's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema version this build writes, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    resource_name TEXT
);
CREATE TABLE IF NOT EXISTS databases (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL REFERENCES tenants (name),
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (tenant, name)
);
CREATE TABLE IF NOT EXISTS collections (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    database TEXT NOT NULL,
    name TEXT NOT NULL,
    metadata TEXT,
    configuration TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (tenant, database, name),
    FOREIGN KEY (tenant, database) REFERENCES databases (tenant, name)
);
CREATE TABLE IF NOT EXISTS manifests (
    collection_id TEXT PRIMARY KEY REFERENCES collections (id),
    version INTEGER NOT NULL,
    dimension INTEGER,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lineages (
    root TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    database TEXT NOT NULL,
    forks INTEGER NOT NULL,
    members TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
";

const SELECT_COLLECTION: &str = "
SELECT c.id, c.name, c.tenant, c.database, c.metadata, c.configuration, m.dimension
FROM collections c LEFT JOIN manifests m ON m.collection_id = c.id";

pub struct SqliteCatalog {
    conns: Arc<Connections>,
}

struct Connections {
    writer: Mutex<Connection>,
    /// `None` in memory, where every connection would be a separate database.
    reader: Option<Mutex<Connection>>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for SqliteCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteCatalog")
            .field("path", &self.conns.path)
            .finish()
    }
}

impl SqliteCatalog {
    /// Opens (creating if needed) the catalog file at `path`, creating the schema and the
    /// default tenant and database if missing. Blocking: call at start-up.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::internal_from(format!("cannot create directory {}", dir.display()), e)
            })?;
        }
        let open = || {
            Connection::open(path).map_err(|e| {
                Error::internal_from(format!("cannot open catalog {}", path.display()), e)
            })
        };
        let mut writer = open()?;
        configure(&writer)?;
        let mode: String = writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .db()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::internal(format!(
                "catalog {} cannot use WAL mode (journal mode is {mode})",
                path.display()
            )));
        }
        init(&mut writer)?;
        let reader = open()?;
        configure(&reader)?;
        reader.pragma_update(None, "query_only", true).db()?;
        Ok(Self {
            conns: Arc::new(Connections {
                writer: Mutex::new(writer),
                reader: Some(Mutex::new(reader)),
                path: Some(path.to_path_buf()),
            }),
        })
    }

    /// A catalog in memory, gone when dropped.
    pub fn in_memory() -> Result<Self> {
        let mut conn = Connection::open_in_memory().db()?;
        configure(&conn)?;
        init(&mut conn)?;
        Ok(Self {
            conns: Arc::new(Connections {
                writer: Mutex::new(conn),
                reader: None,
                path: None,
            }),
        })
    }

    /// Runs `f` in a write transaction on a blocking thread; committed if `f` succeeds.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conns = self.conns.clone();
        blocking(move || {
            let mut conn = lock(&conns.writer);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .db()?;
            let out = f(&tx)?;
            tx.commit().db()?;
            Ok(out)
        })
        .await
    }

    /// Runs `f` in a read transaction (one consistent snapshot) on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conns = self.conns.clone();
        blocking(move || {
            let mut conn = lock(conns.reader.as_ref().unwrap_or(&conns.writer));
            let tx = conn.transaction().db()?;
            f(&tx)
            // Dropping the transaction ends it; it wrote nothing.
        })
        .await
    }
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT).db()?;
    conn.pragma_update(None, "foreign_keys", true).db()?;
    conn.pragma_update(None, "synchronous", "FULL").db()?;
    Ok(())
}

/// Creates or checks the schema and the defaults, atomically (other processes may be
/// opening the same file).
fn init(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .db()?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .db()?;
    if version > SCHEMA_VERSION {
        return Err(Error::new(
            ErrorCode::FailedPrecondition,
            format!(
                "catalog schema version {version} is newer than this build supports \
                 ({SCHEMA_VERSION}); upgrade chroma"
            ),
        ));
    }
    tx.execute_batch(SCHEMA).db()?;
    // Version 3 added tenants.resource_name to the tables of earlier versions.
    let has_resource_name = tx
        .prepare("SELECT 1 FROM pragma_table_info('tenants') WHERE name = 'resource_name'")
        .and_then(|mut s| s.exists([]))
        .db()?;
    if !has_resource_name {
        tx.execute_batch("ALTER TABLE tenants ADD COLUMN resource_name TEXT")
            .db()?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .db()?;
    }
    ensure_defaults(&tx)?;
    tx.commit().db()
}

fn ensure_defaults(tx: &Transaction<'_>) -> Result<()> {
    let now = now_ms();
    tx.execute(
        "INSERT OR IGNORE INTO tenants (name, created_ms) VALUES (?1, ?2)",
        params![DEFAULT_TENANT, now],
    )
    .db()?;
    tx.execute(
        "INSERT OR IGNORE INTO databases (id, tenant, name, created_ms) VALUES (?1, ?2, ?3, ?4)",
        // Chroma's default database has the nil UUID.
        params![
            Uuid::nil().to_string(),
            DEFAULT_TENANT,
            DEFAULT_DATABASE,
            now
        ],
    )
    .db()?;
    Ok(())
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic mid-transaction rolls the transaction back when it unwinds, so the
    // connection is still consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal_from("catalog task failed", e))?
}

/// [`crate::clock::now_ms`] as SQLite stores it.
fn now_ms() -> i64 {
    crate::clock::now_ms() as i64
}

/// Converts SQLite errors: a database busy beyond the timeout is retryable.
trait Db<T> {
    fn db(self) -> Result<T>;
}

impl<T> Db<T> for rusqlite::Result<T> {
    fn db(self) -> Result<T> {
        self.map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Error::with_source(ErrorCode::Unavailable, "catalog database is busy", e)
            }
            _ => Error::internal_from("catalog database error", e),
        })
    }
}

fn corrupt(what: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::internal_from(format!("corrupted catalog: {what}"), e)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::internal_from("cannot serialize to json", e))
}

fn from_json<T: serde::de::DeserializeOwned>(body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| corrupt("api key", e))
}

fn sql_u64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::invalid(format!("{what} {value} is too large")))
}

/// Maps `offset`/`limit` to SQLite's `LIMIT ?1 OFFSET ?2` (-1: no limit).
fn page(limit: Option<u32>, offset: u32) -> (i64, i64) {
    (limit.map_or(-1, i64::from), i64::from(offset))
}

struct CollectionRow {
    id: String,
    name: String,
    tenant: String,
    database: String,
    metadata: Option<String>,
    configuration: String,
    dimension: Option<i64>,
}

impl CollectionRow {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            tenant: row.get(2)?,
            database: row.get(3)?,
            metadata: row.get(4)?,
            configuration: row.get(5)?,
            dimension: row.get(6)?,
        })
    }

    fn into_collection(self) -> Result<Collection> {
        Ok(Collection {
            id: Uuid::parse_str(&self.id).map_err(|e| corrupt("collection id", e))?,
            metadata: self
                .metadata
                .map(|m| serde_json::from_str(&m))
                .transpose()
                .map_err(|e| corrupt("collection metadata", e))?,
            configuration: serde_json::from_str(&self.configuration)
                .map_err(|e| corrupt("collection configuration", e))?,
            dimension: self
                .dimension
                .map(u32::try_from)
                .transpose()
                .map_err(|e| corrupt("collection dimension", e))?,
            name: self.name,
            tenant: self.tenant,
            database: self.database,
        })
    }
}

fn query_collections(
    tx: &Transaction<'_>,
    where_and_order: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Collection>> {
    let mut stmt = tx
        .prepare_cached(&format!("{SELECT_COLLECTION} {where_and_order}"))
        .db()?;
    let rows = stmt.query_map(params, CollectionRow::from_row).db()?;
    rows.map(|r| r.db().and_then(CollectionRow::into_collection))
        .collect()
}

fn collection_by_id(tx: &Transaction<'_>, id: Uuid) -> Result<Collection> {
    query_collections(tx, "WHERE c.id = ?1", [id.to_string()])?
        .pop()
        .ok_or_else(|| collection_id_missing(id))
}

fn collection_by_name(
    tx: &Transaction<'_>,
    tenant: &str,
    database: &str,
    name: &str,
) -> Result<Option<Collection>> {
    Ok(query_collections(
        tx,
        "WHERE c.tenant = ?1 AND c.database = ?2 AND c.name = ?3",
        [tenant, database, name],
    )?
    .pop())
}

/// A tenant's resource name; `NotFound` for a missing tenant.
fn tenant_resource_name(tx: &Transaction<'_>, tenant: &str) -> Result<Option<String>> {
    tx.query_row(
        "SELECT resource_name FROM tenants WHERE name = ?1",
        [tenant],
        |r| r.get(0),
    )
    .optional()
    .db()?
    .ok_or_else(|| Error::not_found(format!("tenant {tenant} not found")))
}

fn require_tenant(tx: &Transaction<'_>, tenant: &str) -> Result<()> {
    let found = tx
        .query_row(
            "SELECT 1 FROM tenants WHERE name = ?1",
            [tenant],
            |_| Ok(()),
        )
        .optional()
        .db()?;
    found.ok_or_else(|| Error::not_found(format!("tenant {tenant} not found")))
}

fn database_row(tx: &Transaction<'_>, tenant: &str, name: &str) -> Result<Database> {
    let id: Option<String> = tx
        .query_row(
            "SELECT id FROM databases WHERE tenant = ?1 AND name = ?2",
            [tenant, name],
            |r| r.get(0),
        )
        .optional()
        .db()?;
    let id = id
        .ok_or_else(|| Error::not_found(format!("database {name} not found in tenant {tenant}")))?;
    Ok(Database {
        id: Uuid::parse_str(&id).map_err(|e| corrupt("database id", e))?,
        name: name.to_owned(),
        tenant: tenant.to_owned(),
    })
}

fn manifest_of(tx: &Transaction<'_>, id: Uuid) -> Result<Option<Manifest>> {
    let body: Option<String> = tx
        .query_row(
            "SELECT body FROM manifests WHERE collection_id = ?1",
            [id.to_string()],
            |r| r.get(0),
        )
        .optional()
        .db()?;
    body.map(|b| serde_json::from_str(&b).map_err(|e| corrupt("manifest", e)))
        .transpose()
}

fn dimension_param(manifest: &Manifest) -> Option<i64> {
    manifest.dimension.map(i64::from)
}

fn lineage_of(tx: &Transaction<'_>, root: Uuid) -> Result<Option<Lineage>> {
    let row: Option<(i64, String)> = tx
        .query_row(
            "SELECT forks, members FROM lineages WHERE root = ?1",
            [root.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .db()?;
    row.map(|(forks, members)| {
        Ok(Lineage {
            root,
            forks: u64::try_from(forks).map_err(|e| corrupt("lineage forks", e))?,
            members: from_json(&members)?,
        })
    })
    .transpose()
}

/// Stores `lineage` (of a collection of `tenant`/`database`), or removes it when it has
/// no member left.
fn put_lineage(
    tx: &Transaction<'_>,
    tenant: &str,
    database: &str,
    lineage: &Lineage,
) -> Result<()> {
    let root = lineage.root.to_string();
    if lineage.members.is_empty() {
        tx.execute("DELETE FROM lineages WHERE root = ?1", [&root])
            .db()?;
        return Ok(());
    }
    tx.execute(
        "INSERT INTO lineages (root, tenant, database, forks, members)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (root) DO UPDATE SET forks = excluded.forks, members = excluded.members",
        params![
            root,
            tenant,
            database,
            sql_u64(lineage.forks, "lineage forks")?,
            to_json(&lineage.members)?
        ],
    )
    .db()?;
    Ok(())
}

/// Takes collection `id` (whose manifest is `manifest`) out of its lineage, if it has one.
fn leave_lineage(tx: &Transaction<'_>, c: &Collection, manifest: &Manifest) -> Result<()> {
    let Some(root) = manifest.lineage else {
        return Ok(());
    };
    if let Some(mut lineage) = lineage_of(tx, root)? {
        lineage.members.retain(|m| *m != c.id);
        put_lineage(tx, &c.tenant, &c.database, &lineage)?;
    }
    Ok(())
}

#[async_trait]
impl Names for SqliteCatalog {
    async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        let name = name.to_owned();
        self.write(move |tx| {
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO tenants (name, created_ms) VALUES (?1, ?2)",
                    params![name, now_ms()],
                )
                .db()?;
            if inserted == 0 {
                return Err(Error::already_exists(format!(
                    "tenant {name} already exists"
                )));
            }
            Ok(Tenant {
                name,
                resource_name: None,
            })
        })
        .await
    }

    async fn get_tenant(&self, name: &str) -> Result<Tenant> {
        let name = name.to_owned();
        self.read(move |tx| {
            let resource_name = tenant_resource_name(tx, &name)?;
            Ok(Tenant {
                name,
                resource_name,
            })
        })
        .await
    }

    async fn set_tenant_resource_name(&self, name: &str, resource_name: &str) -> Result<Tenant> {
        let (name, resource_name) = (name.to_owned(), resource_name.to_owned());
        self.write(move |tx| {
            match tenant_resource_name(tx, &name)? {
                Some(current) if current != resource_name => {
                    return Err(super::tenant_has_resource_name(&name));
                }
                Some(_) => {}
                None => {
                    tx.execute(
                        "UPDATE tenants SET resource_name = ?2 WHERE name = ?1",
                        params![name, resource_name],
                    )
                    .db()?;
                }
            }
            Ok(Tenant {
                name,
                resource_name: Some(resource_name),
            })
        })
        .await
    }

    async fn create_database(&self, tenant: &str, name: &str) -> Result<Database> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.write(move |tx| {
            require_tenant(tx, &tenant)?;
            let db = Database {
                id: Uuid::new_v4(),
                name,
                tenant,
            };
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO databases (id, tenant, name, created_ms)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![db.id.to_string(), db.tenant, db.name, now_ms()],
                )
                .db()?;
            if inserted == 0 {
                return Err(Error::already_exists(format!(
                    "database {} already exists in tenant {}",
                    db.name, db.tenant
                )));
            }
            Ok(db)
        })
        .await
    }

    async fn get_database(&self, tenant: &str, name: &str) -> Result<Database> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.read(move |tx| database_row(tx, &tenant, &name)).await
    }

    async fn list_databases(
        &self,
        tenant: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Database>> {
        let tenant = tenant.to_owned();
        self.read(move |tx| {
            require_tenant(tx, &tenant)?;
            let (limit, offset) = page(limit, offset);
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id, name FROM databases WHERE tenant = ?1
                     ORDER BY seq LIMIT ?2 OFFSET ?3",
                )
                .db()?;
            let rows = stmt
                .query_map(params![tenant, limit, offset], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .db()?;
            rows.map(|r| {
                let (id, name) = r.db()?;
                Ok(Database {
                    id: Uuid::parse_str(&id).map_err(|e| corrupt("database id", e))?,
                    name,
                    tenant: tenant.clone(),
                })
            })
            .collect()
        })
        .await
    }

    async fn delete_database(&self, tenant: &str, name: &str) -> Result<Vec<(Uuid, Manifest)>> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.write(move |tx| {
            database_row(tx, &tenant, &name)?;
            let mut removed = Vec::new();
            {
                let mut stmt = tx
                    .prepare(
                        "SELECT c.id, m.body FROM collections c
                         JOIN manifests m ON m.collection_id = c.id
                         WHERE c.tenant = ?1 AND c.database = ?2 ORDER BY c.seq",
                    )
                    .db()?;
                let rows = stmt
                    .query_map([&tenant, &name], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })
                    .db()?;
                for row in rows {
                    let (id, body) = row.db()?;
                    removed.push((
                        Uuid::parse_str(&id).map_err(|e| corrupt("collection id", e))?,
                        serde_json::from_str(&body).map_err(|e| corrupt("manifest", e))?,
                    ));
                }
            }
            tx.execute(
                "DELETE FROM manifests WHERE collection_id IN
                 (SELECT id FROM collections WHERE tenant = ?1 AND database = ?2)",
                [&tenant, &name],
            )
            .db()?;
            tx.execute(
                "DELETE FROM collections WHERE tenant = ?1 AND database = ?2",
                [&tenant, &name],
            )
            .db()?;
            // A lineage never leaves its database: every member is gone.
            tx.execute(
                "DELETE FROM lineages WHERE tenant = ?1 AND database = ?2",
                [&tenant, &name],
            )
            .db()?;
            tx.execute(
                "DELETE FROM databases WHERE tenant = ?1 AND name = ?2",
                [&tenant, &name],
            )
            .db()?;
            Ok(removed)
        })
        .await
    }

    async fn create_collection(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        if_exists: IfExists,
    ) -> Result<(Collection, bool)> {
        let mut collection = collection.clone();
        collection.dimension = manifest.dimension;
        let metadata = collection.metadata.as_ref().map(to_json).transpose()?;
        let configuration = to_json(&collection.configuration)?;
        let body = to_json(manifest)?;
        let version = sql_u64(manifest.version, "manifest version")?;
        let dimension = dimension_param(manifest);
        self.write(move |tx| {
            let c = &collection;
            database_row(tx, &c.tenant, &c.database)?;
            if let Some(existing) = collection_by_name(tx, &c.tenant, &c.database, &c.name)? {
                if if_exists == IfExists::Get {
                    return Ok((existing, false));
                }
                return Err(collection_name_taken(&c.name));
            }
            let id = c.id.to_string();
            let taken = tx
                .query_row("SELECT 1 FROM collections WHERE id = ?1", [&id], |_| Ok(()))
                .optional()
                .db()?;
            if taken.is_some() {
                return Err(Error::already_exists(format!(
                    "collection id {id} already exists"
                )));
            }
            tx.execute(
                "INSERT INTO collections
                 (id, tenant, database, name, metadata, configuration, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    c.tenant,
                    c.database,
                    c.name,
                    metadata,
                    configuration,
                    now_ms()
                ],
            )
            .db()?;
            tx.execute(
                "INSERT INTO manifests (collection_id, version, dimension, body)
                 VALUES (?1, ?2, ?3, ?4)",
                params![id, version, dimension, body],
            )
            .db()?;
            Ok((collection, true))
        })
        .await
    }

    async fn get_collection(&self, tenant: &str, database: &str, name: &str) -> Result<Collection> {
        let (tenant, database, name) = (tenant.to_owned(), database.to_owned(), name.to_owned());
        self.read(move |tx| {
            collection_by_name(tx, &tenant, &database, &name)?
                .ok_or_else(|| collection_name_missing(&name))
        })
        .await
    }

    async fn get_collection_by_id(&self, id: Uuid) -> Result<Collection> {
        self.read(move |tx| collection_by_id(tx, id)).await
    }

    async fn get_collection_with_manifest(&self, id: Uuid) -> Result<(Collection, Manifest)> {
        self.read(move |tx| {
            let collection = collection_by_id(tx, id)?;
            let manifest = manifest_of(tx, id)?.ok_or_else(|| collection_id_missing(id))?;
            Ok((collection, manifest))
        })
        .await
    }

    async fn list_collections(
        &self,
        tenant: &str,
        database: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Collection>> {
        let (tenant, database) = (tenant.to_owned(), database.to_owned());
        self.read(move |tx| {
            database_row(tx, &tenant, &database)?;
            let (limit, offset) = page(limit, offset);
            query_collections(
                tx,
                "WHERE c.tenant = ?1 AND c.database = ?2 ORDER BY c.seq LIMIT ?3 OFFSET ?4",
                params![tenant, database, limit, offset],
            )
        })
        .await
    }

    async fn count_collections(&self, tenant: &str, database: &str) -> Result<u64> {
        let (tenant, database) = (tenant.to_owned(), database.to_owned());
        self.read(move |tx| {
            database_row(tx, &tenant, &database)?;
            let n: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM collections WHERE tenant = ?1 AND database = ?2",
                    [&tenant, &database],
                    |r| r.get(0),
                )
                .db()?;
            Ok(n as u64)
        })
        .await
    }

    async fn list_all_collections(&self) -> Result<Vec<Collection>> {
        self.read(|tx| query_collections(tx, "ORDER BY c.seq", []))
            .await
    }

    async fn update_collection(&self, id: Uuid, update: &CollectionUpdate) -> Result<Collection> {
        let update = update.clone();
        let metadata = update.metadata.as_ref().map(to_json).transpose()?;
        let configuration = update.configuration.as_ref().map(to_json).transpose()?;
        self.write(move |tx| {
            let current = collection_by_id(tx, id)?;
            if let Some(expected) = &update.expected_configuration {
                if *expected != current.configuration {
                    return Err(configuration_changed(id));
                }
            }
            if let Some(name) = update.name.as_deref().filter(|n| *n != current.name) {
                if collection_by_name(tx, &current.tenant, &current.database, name)?.is_some() {
                    return Err(collection_name_taken(name));
                }
                tx.execute(
                    "UPDATE collections SET name = ?1 WHERE id = ?2",
                    params![name, id.to_string()],
                )
                .db()?;
            }
            if let Some(metadata) = metadata {
                tx.execute(
                    "UPDATE collections SET metadata = ?1 WHERE id = ?2",
                    params![metadata, id.to_string()],
                )
                .db()?;
            }
            if let Some(configuration) = configuration {
                tx.execute(
                    "UPDATE collections SET configuration = ?1 WHERE id = ?2",
                    params![configuration, id.to_string()],
                )
                .db()?;
            }
            collection_by_id(tx, id)
        })
        .await
    }

    async fn delete_collection(&self, id: Uuid) -> Result<Manifest> {
        self.write(move |tx| {
            let manifest = manifest_of(tx, id)?.ok_or_else(|| collection_id_missing(id))?;
            leave_lineage(tx, &collection_by_id(tx, id)?, &manifest)?;
            tx.execute(
                "DELETE FROM manifests WHERE collection_id = ?1",
                [id.to_string()],
            )
            .db()?;
            tx.execute("DELETE FROM collections WHERE id = ?1", [id.to_string()])
                .db()?;
            Ok(manifest)
        })
        .await
    }

    async fn fork_collection(&self, source: Uuid, id: Uuid, name: &str) -> Result<Collection> {
        let name = name.to_owned();
        self.write(move |tx| {
            let src = collection_by_id(tx, source)?;
            let mut manifest =
                manifest_of(tx, source)?.ok_or_else(|| collection_id_missing(source))?;
            if collection_by_name(tx, &src.tenant, &src.database, &name)?.is_some() {
                return Err(collection_name_taken(&name));
            }
            let forked = manifest.forked(source);
            let root = manifest.owner(source);
            if manifest.lineage.is_none() {
                manifest.lineage = Some(root);
                manifest.version += 1;
                tx.execute(
                    "UPDATE manifests SET version = ?1, body = ?2 WHERE collection_id = ?3",
                    params![
                        sql_u64(manifest.version, "manifest version")?,
                        to_json(&manifest)?,
                        source.to_string()
                    ],
                )
                .db()?;
            }
            let mut lineage = lineage_of(tx, root)?.unwrap_or(Lineage {
                root,
                forks: 0,
                members: vec![source],
            });
            lineage.forks += 1;
            lineage.members.push(id);
            lineage.members.sort();
            lineage.members.dedup();
            put_lineage(tx, &src.tenant, &src.database, &lineage)?;
            tx.execute(
                "INSERT INTO collections
                 (id, tenant, database, name, metadata, configuration, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id.to_string(),
                    src.tenant,
                    src.database,
                    name,
                    src.metadata.as_ref().map(to_json).transpose()?,
                    to_json(&src.configuration)?,
                    now_ms()
                ],
            )
            .db()?;
            tx.execute(
                "INSERT INTO manifests (collection_id, version, dimension, body)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    id.to_string(),
                    sql_u64(forked.version, "manifest version")?,
                    dimension_param(&forked),
                    to_json(&forked)?
                ],
            )
            .db()?;
            collection_by_id(tx, id)
        })
        .await
    }

    async fn get_lineage(&self, root: Uuid) -> Result<Option<Lineage>> {
        self.read(move |tx| lineage_of(tx, root)).await
    }

    async fn reset(&self) -> Result<()> {
        self.write(|tx| {
            tx.execute_batch(
                "DELETE FROM lineages; DELETE FROM manifests; DELETE FROM collections;
                 DELETE FROM databases; DELETE FROM tenants;",
            )
            .db()?;
            ensure_defaults(tx)
        })
        .await
    }
}

#[async_trait]
impl Manifests for SqliteCatalog {
    async fn get_manifest(&self, id: Uuid) -> Result<Manifest> {
        self.read(move |tx| manifest_of(tx, id)?.ok_or_else(|| collection_id_missing(id)))
            .await
    }

    async fn commit_manifest(&self, id: Uuid, manifest: &Manifest) -> Result<()> {
        let new_version = manifest.version;
        let body = to_json(manifest)?;
        let dimension = dimension_param(manifest);
        self.write(move |tx| {
            // Versions outside 2..=i64::MAX can never follow a stored one.
            let expected = new_version
                .checked_sub(1)
                .and_then(|v| i64::try_from(v).ok());
            let new = i64::try_from(new_version).ok();
            let changed = match (expected, new) {
                (Some(expected), Some(new)) if expected >= 1 => tx
                    .execute(
                        "UPDATE manifests SET version = ?1, dimension = ?2, body = ?3
                         WHERE collection_id = ?4 AND version = ?5",
                        params![new, dimension, body, id.to_string(), expected],
                    )
                    .db()?,
                _ => 0,
            };
            if changed == 1 {
                return Ok(());
            }
            let stored: Option<i64> = tx
                .query_row(
                    "SELECT version FROM manifests WHERE collection_id = ?1",
                    [id.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .db()?;
            match stored {
                None => Err(collection_id_missing(id)),
                Some(stored) => Err(Error::conflict(format!(
                    "manifest of collection {id} is at version {stored}, \
                     cannot commit version {new_version}"
                ))),
            }
        })
        .await
    }
}

#[async_trait]
impl ApiKeys for SqliteCatalog {
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        let body = to_json(key)?;
        let id = key.id.clone();
        self.write(move |tx| {
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO api_keys (id, body) VALUES (?1, ?2)",
                    params![id, body],
                )
                .db()?;
            if inserted == 0 {
                return Err(Error::already_exists(format!(
                    "api key {id} already exists"
                )));
            }
            Ok(())
        })
        .await
    }

    async fn get_api_key(&self, id: &str) -> Result<ApiKeyRecord> {
        let id = id.to_owned();
        self.read(move |tx| {
            let body: Option<String> = tx
                .query_row("SELECT body FROM api_keys WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })
                .optional()
                .db()?;
            match body {
                Some(body) => from_json(&body),
                None => Err(Error::not_found(format!("api key {id} does not exist"))),
            }
        })
        .await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        self.read(|tx| {
            let mut stmt = tx.prepare("SELECT body FROM api_keys ORDER BY seq").db()?;
            let bodies = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .db()?
                .collect::<rusqlite::Result<Vec<_>>>()
                .db()?;
            bodies.iter().map(|b| from_json(b)).collect()
        })
        .await
    }

    async fn revoke_api_key(&self, id: &str, at_ms: u64) -> Result<ApiKeyRecord> {
        let id = id.to_owned();
        self.write(move |tx| {
            let body: Option<String> = tx
                .query_row("SELECT body FROM api_keys WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })
                .optional()
                .db()?;
            let mut key: ApiKeyRecord = match body {
                Some(body) => from_json(&body)?,
                None => return Err(Error::not_found(format!("api key {id} does not exist"))),
            };
            if key.revoked_at_ms.is_none() {
                key.revoked_at_ms = Some(at_ms);
                tx.execute(
                    "UPDATE api_keys SET body = ?2 WHERE id = ?1",
                    params![id, to_json(&key)?],
                )
                .db()?;
            }
            Ok(key)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::conformance;
    use crate::model::CollectionConfiguration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_in_memory() {
        conformance::suite(&SqliteCatalog::in_memory().unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_on_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqliteCatalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        conformance::suite(&catalog).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_across_two_handles_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let writer = SqliteCatalog::open(&path).unwrap();
        let reader = SqliteCatalog::open(&path).unwrap();
        conformance::across_handles(&writer, &reader).await;
    }

    /// A catalog written by a build of schema version 2 (tenants without a resource name)
    /// opens, gains the column and keeps its tenants.
    #[tokio::test]
    async fn a_version_2_catalog_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE tenants (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
                 name TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL); \
                 INSERT INTO tenants (name, created_ms) VALUES ('old_tenant', 1); \
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let catalog = SqliteCatalog::open(&path).unwrap();
        assert_eq!(
            catalog
                .get_tenant("old_tenant")
                .await
                .unwrap()
                .resource_name,
            None
        );
        catalog
            .set_tenant_resource_name("old_tenant", "org/old")
            .await
            .unwrap();
        drop(catalog);
        let catalog = SqliteCatalog::open(&path).unwrap();
        let tenant = catalog.get_tenant("old_tenant").await.unwrap();
        assert_eq!(tenant.resource_name.as_deref(), Some("org/old"));
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    fn collection(name: &str) -> Collection {
        Collection {
            id: Uuid::new_v4(),
            name: name.into(),
            tenant: DEFAULT_TENANT.into(),
            database: DEFAULT_DATABASE.into(),
            metadata: None,
            configuration: CollectionConfiguration::default(),
            dimension: None,
        }
    }

    /// Two instances on one file behave like two processes sharing it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_instances_share_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/catalog.sqlite");
        let a = Arc::new(SqliteCatalog::open(&path).unwrap());
        let b = Arc::new(SqliteCatalog::open(&path).unwrap());
        // The defaults were created once.
        assert_eq!(
            a.list_databases(DEFAULT_TENANT, None, 0)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            a.get_database(DEFAULT_TENANT, DEFAULT_DATABASE)
                .await
                .unwrap(),
            b.get_database(DEFAULT_TENANT, DEFAULT_DATABASE)
                .await
                .unwrap()
        );

        let c = collection("shared");
        a.create_collection(&c, &Manifest::new(vec![1]), IfExists::Fail)
            .await
            .unwrap();
        assert_eq!(b.get_collection_by_id(c.id).await.unwrap(), c);
        assert_eq!(
            b.create_collection(
                &collection("shared"),
                &Manifest::new(vec![1]),
                IfExists::Fail
            )
            .await
            .unwrap_err()
            .code(),
            ErrorCode::AlreadyExists
        );

        let mut m = b.get_manifest(c.id).await.unwrap();
        m.version = 2;
        m.dimension = Some(5);
        b.commit_manifest(c.id, &m).await.unwrap();
        assert_eq!(a.get_manifest(c.id).await.unwrap(), m, "a sees b's commit");
        assert_eq!(
            a.get_collection_by_id(c.id).await.unwrap().dimension,
            Some(5)
        );
        let err = a.commit_manifest(c.id, &m).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Conflict);

        // Racing commits from both instances, on separate tasks: no update is lost.
        let mut tasks = Vec::new();
        for (i, cat) in [a.clone(), b.clone(), a.clone(), b.clone()]
            .into_iter()
            .enumerate()
        {
            tasks.push(tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..10 {
                    loop {
                        let mut m = cat.get_manifest(c.id).await.unwrap();
                        m.version += 1;
                        m.total_ops += 1;
                        m.next_seq = i as u64;
                        match cat.commit_manifest(c.id, &m).await {
                            Ok(()) => break,
                            Err(e) if e.code() == ErrorCode::Conflict => conflicts += 1,
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                }
                conflicts
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let end = b.get_manifest(c.id).await.unwrap();
        assert_eq!((end.version, end.total_ops), (42, 40));

        b.delete_collection(c.id).await.unwrap();
        assert_eq!(
            a.commit_manifest(c.id, &end).await.unwrap_err().code(),
            ErrorCode::NotFound
        );
    }

    #[tokio::test]
    async fn data_survives_reopen_and_schema_is_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let c = collection("kept");
        let default_db = {
            let catalog = SqliteCatalog::open(&path).unwrap();
            catalog
                .create_collection(&c, &Manifest::new(vec![2]), IfExists::Fail)
                .await
                .unwrap();
            catalog
                .get_database(DEFAULT_TENANT, DEFAULT_DATABASE)
                .await
                .unwrap()
        };
        let catalog = SqliteCatalog::open(&path).unwrap();
        assert_eq!(catalog.get_collection_by_id(c.id).await.unwrap(), c);
        assert_eq!(
            catalog
                .get_database(DEFAULT_TENANT, DEFAULT_DATABASE)
                .await
                .unwrap(),
            default_db
        );
        drop(catalog);

        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = SqliteCatalog::open(&path).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err:?}");
    }
}
