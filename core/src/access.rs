//! A collection as one principal may see and change it, enforced here once for every
//! entry point: the HTTP routes (which the Lambda functions serve too) go through
//! [`ScopedCollection`] for every record operation.
//!
//! - **Reaching it**: the principal needs a grant of the action on the collection. A
//!   collection of another tenant or database than the path names, or one the principal
//!   may not touch at all, is `NotFound`, exactly like a missing one (ids are not a way
//!   around grants); one it may only read is `PermissionDenied` for writes.
//! - **Rows**: with a row filter (an API key's or a JWT's `row_filter`), reads and
//!   deletes see only records inside it (the filter is ANDed into theirs), and a write is
//!   refused whole if any record it touches is outside the filter before or after it.
//!   The check is bound to the manifest version the write commits on
//!   ([`Engine::commit_ops_checked`]): a concurrent write to one of the same records makes
//!   it check again, so no record slips out of the filter in between.
//! - **Whole-collection changes** (modify, delete) and counts of everything (indexing
//!   status) reach beyond any row filter: refused, or answered for the visible records
//!   only.
//!
//! Denials are audited ([`crate::auth::audit`]).

use std::pin::pin;
use std::time::Instant;

use futures::future::{self, Either};
use uuid::Uuid;

use crate::auth::audit;
use crate::auth::grants::Action;
use crate::auth::rows::RowFilter;
use crate::auth::Principal;
use crate::catalog::Manifest;
use crate::engine::read_ahead::CatalogAnswer;
use crate::engine::{
    query_done, DeleteRequest, Engine, GetRequest, GetResult, IndexingStatus, QueryRequest,
    QueryResult, SearchResult,
};
use crate::error::{Error, ErrorCode, Result};
use crate::model::search::Search;
use crate::model::{Collection, Filter, OpKind, WriteBatch};

/// A collection id from a request: `InvalidArgument` if it is not a UUID.
pub fn parse_collection_id(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s)
        .map_err(|_| Error::invalid(format!("invalid collection id {s:?}: expected a UUID")))
}

/// `PermissionDenied` (audited) unless `principal` may do `action` there.
pub fn require(
    principal: &Principal,
    action: Action,
    tenant: &str,
    database: Option<&str>,
    collection: Option<&str>,
) -> Result<()> {
    principal
        .require(action, tenant, database, collection)
        .inspect_err(|_| audit::denied(&principal.id, action, tenant, database, collection))
}

/// `PermissionDenied` (audited) for a principal limited to some rows: changes that reach
/// every record of `what` (a database, a collection, everything) are not for it.
pub fn require_all_rows(
    principal: &Principal,
    action: Action,
    tenant: &str,
    database: Option<&str>,
    collection: Option<&str>,
) -> Result<()> {
    if principal.row_filter.is_none() {
        return Ok(());
    }
    audit::denied(&principal.id, action, tenant, database, collection);
    let what = crate::auth::resource_name(tenant, database, collection);
    Err(Error::new(
        ErrorCode::PermissionDenied,
        format!("a key limited to some rows (row_filter) cannot change or delete all of {what}"),
    ))
}

/// `filter` AND `principal`'s row filter, if it has one.
fn restricted(principal: &Principal, filter: Option<Filter>) -> Option<Filter> {
    match principal.row_filter.as_ref() {
        Some(rf) => Some(rf.restrict(filter)),
        None => filter,
    }
}

/// One collection as one principal may see and change it.
///
/// Its reads (`count`, `get`, `query`, `search`) answer as of the manifest read with the
/// collection when it was opened — one catalog read for the whole request (see
/// [`Engine::get_collection_with_manifest`]); writes and deletes read the current
/// manifest as they commit.
#[derive(Debug)]
pub struct ScopedCollection<'a> {
    engine: &'a Engine,
    principal: &'a Principal,
    collection: Collection,
    manifest: Manifest,
}

impl<'a> ScopedCollection<'a> {
    /// The collection `id` of `tenant`/`database`, checked for `action` (see the module
    /// documentation).
    pub async fn open(
        engine: &'a Engine,
        principal: &'a Principal,
        action: Action,
        tenant: &str,
        database: &str,
        id: &str,
    ) -> Result<Self> {
        require(principal, action, tenant, Some(database), None)?;
        let id = parse_collection_id(id)?;
        // Chroma's text on the routes of a collection id (with its period); the same for a
        // collection of another database or one the principal may not see at all.
        let missing = || Error::not_found(format!("Collection [{id}] does not exist."));
        let (collection, manifest) = match engine.get_collection_with_manifest(id).await {
            Err(e) if e.code() == ErrorCode::NotFound => return Err(missing()),
            other => other?,
        };
        if collection.tenant != tenant || collection.database != database {
            return Err(missing());
        }
        let visible = Action::ALL
            .into_iter()
            .any(|a| principal.allows(a, tenant, Some(database), Some(&collection.name)));
        if !visible {
            return Err(missing());
        }
        require(
            principal,
            action,
            tenant,
            Some(database),
            Some(&collection.name),
        )?;
        Ok(Self {
            engine,
            principal,
            collection,
            manifest,
        })
    }

    pub fn collection(&self) -> &Collection {
        &self.collection
    }

    pub fn into_collection(self) -> Collection {
        self.collection
    }

    fn row_filter(&self) -> Option<&'a RowFilter> {
        self.principal.row_filter.as_ref()
    }

    /// `filter` AND the principal's row filter.
    fn restrict(&self, filter: Option<Filter>) -> Option<Filter> {
        restricted(self.principal, filter)
    }

    /// `PermissionDenied` (audited) for a principal limited to some rows: the change
    /// would reach all of the collection.
    pub fn require_all_rows(&self, action: Action) -> Result<()> {
        let c = &self.collection;
        require_all_rows(
            self.principal,
            action,
            &c.tenant,
            Some(&c.database),
            Some(&c.name),
        )
    }

    /// The records the principal can see.
    pub async fn count(&self) -> Result<u64> {
        match self.row_filter() {
            None => {
                self.engine
                    .count_as_of(&self.collection, &self.manifest)
                    .await
            }
            Some(rf) => {
                self.engine
                    .count_matching(&self.collection, rf.restrict(None))
                    .await
            }
        }
    }

    pub async fn get(&self, mut request: GetRequest) -> Result<GetResult> {
        request.filter = self.restrict(request.filter);
        self.engine
            .get_as_of(&self.collection, &self.manifest, request)
            .await
    }

    pub async fn query(&self, mut request: QueryRequest) -> Result<QueryResult> {
        request.filter = self.restrict(request.filter);
        self.engine
            .query_as_of(&self.collection, &self.manifest, request)
            .await
    }

    /// [`ScopedCollection::open`] for [`Action::Read`], then [`ScopedCollection::query`];
    /// where the engine holds the collection settled ([`Engine::settled`]), the search
    /// runs on it while the catalog is read, and its answer is used only if the catalog
    /// confirms the collection and manifest it searched (see
    /// [`crate::engine::read_ahead`]).
    pub async fn open_and_query(
        engine: &'a Engine,
        principal: &'a Principal,
        tenant: &str,
        database: &str,
        id: &str,
        mut request: QueryRequest,
    ) -> Result<QueryResult> {
        let settled = parse_collection_id(id)
            .ok()
            .and_then(|id| engine.settled(id));
        let opened = Self::open(engine, principal, Action::Read, tenant, database, id);
        let Some(settled) = settled else {
            return opened.await?.query(request).await;
        };
        request.filter = restricted(principal, request.filter);
        let started = Instant::now();
        let ahead = engine.query_at(&settled.0, &settled.1, request.clone());
        let (scope, ahead) = match future::select(pin!(opened), pin!(ahead)).await {
            Either::Left((opened, ahead)) => {
                let scope = opened?;
                // A search on what the catalog no longer answers is dropped at once.
                let confirmed = scope.is_as_of(&settled);
                (scope, if confirmed { Some(ahead.await) } else { None })
            }
            Either::Right((answer, opened)) => (opened.await?, Some(answer)),
        };
        if scope.is_as_of(&settled) {
            if let Some(Ok(result)) = ahead {
                crate::metrics::read_ahead(true);
                query_done(started, &scope.manifest, &result);
                return Ok(result);
            }
        }
        // Changed since, or the search failed (its error may have been passing): the
        // query runs on what the catalog answered.
        crate::metrics::read_ahead(false);
        engine
            .query_as_of(&scope.collection, &scope.manifest, request)
            .await
    }

    /// Whether this was opened on exactly `answer`'s collection record and manifest.
    fn is_as_of(&self, answer: &CatalogAnswer) -> bool {
        self.collection == answer.0 && self.manifest == answer.1
    }

    /// Every payload sees only the visible records (its filter ANDed with the row
    /// filter, which every `$knn` and read of the search applies).
    pub async fn search(&self, mut searches: Vec<Search>) -> Result<Vec<SearchResult>> {
        for s in &mut searches {
            s.filter = self.restrict(s.filter.take());
        }
        self.engine
            .search_as_of(&self.collection, &self.manifest, searches)
            .await
    }

    /// Deletes what `request` selects among the visible records; returns how many.
    pub async fn delete(&self, mut request: DeleteRequest) -> Result<u64> {
        let Some(rf) = self.row_filter() else {
            return self.engine.delete(&self.collection, request).await;
        };
        // Requests the engine answers without reading records (`{}` deletes nothing, a
        // limit without a filter is an error) keep their meaning.
        let selects = request.filter.is_some()
            || (request.limit.is_none() && request.ids.as_ref().is_some_and(|i| !i.is_empty()));
        if selects {
            request.filter = Some(rf.restrict(request.filter));
        }
        let ops = self
            .engine
            .delete_operations(&self.collection, request)
            .await?;
        let count = ops.len() as u64;
        if count > 0 {
            self.commit_checked(rf, ops, None).await?;
        }
        Ok(count)
    }

    /// Validates `batch` as a write of `kind` and commits it as one log batch, or, for a
    /// row-limited principal, refuses it whole if it touches a record outside the filter.
    pub async fn write(&self, batch: WriteBatch, kind: OpKind) -> Result<()> {
        let (ops, dim) = batch.into_operations(kind)?;
        if ops.is_empty() {
            return Ok(());
        }
        match self.row_filter() {
            None => self.engine.commit_ops(&self.collection, ops, dim).await,
            Some(rf) => self.commit_checked(rf, ops, dim).await,
        }
    }

    async fn commit_checked(
        &self,
        rf: &RowFilter,
        ops: Vec<crate::model::Operation>,
        dim: Option<usize>,
    ) -> Result<()> {
        let checked_ops = ops.clone();
        let c = &self.collection;
        self.engine
            .commit_ops_checked(c, ops, dim, move |existing| {
                rf.check_writes(&checked_ops, existing)
            })
            .await
            .inspect_err(|e| {
                if e.code() == ErrorCode::PermissionDenied {
                    audit::denied(
                        &self.principal.id,
                        Action::Write,
                        &c.tenant,
                        Some(&c.database),
                        Some(&c.name),
                    );
                }
            })
    }

    /// How much of the collection is indexed; for a row-limited principal, counted over
    /// the records it can see (so the collection's size is not revealed to it).
    pub async fn indexing_status(&self) -> Result<IndexingStatus> {
        match self.row_filter() {
            None => self.engine.indexing_status(&self.collection).await,
            Some(rf) => {
                self.engine
                    .indexing_status_of_matching(&self.collection, rf.restrict(None))
                    .await
            }
        }
    }
}
