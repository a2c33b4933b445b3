//! The HTTP API: Chroma's v2 routes over the engine, as one axum router shared by the
//! local server and the Lambda functions.
//!
//! One file per resource ([`tenants`], [`databases`], [`collections`], [`records`],
//! [`search`], [`system`]); wire types in [`types`], errors and their one mapping to
//! statuses in [`errors`].
//!
//! # Compatibility notes
//! The contract is what Chroma 1.5.9's own server answers to its official clients; these
//! are the decisions the code relies on, numbered so that code and tests can point here
//! (`api §N`).
//!
//! - **§0 Errors.** A failed request answers `{"error": NAME, "message": TEXT}`. The
//!   Python client chooses the exception class from `NAME` alone and shows `TEXT`, so
//!   names are Chroma's (`InvalidArgumentError`, `NotFoundError`, `UniqueConstraintError`,
//!   `InternalError`, ...) and the status comes from one table ([`errors`]).
//! - **§2–3 Messages.** Where Chroma has a fixed text for a failure (a collection that
//!   exists already or does not exist, a dimension mismatch, a bad name) clients and
//!   tests match it, so it is used verbatim; everywhere else the message names the
//!   offending field and value. A missing collection is `Collection [<name>] does not
//!   exist` by name, `Collection [<uuid>] does not exist` by id, and `Collection [<uuid>]
//!   does not exist.` (with the period) on every other route of a collection id.
//! - **§0 Trace ids.** Every 4xx/5xx carries `chroma-trace-id`: 32 lowercase hex digits,
//!   the bits of the request id (`x-request-id`, a ULID), so the `trace_id` of a client's
//!   exception finds the request in the server's log. Successes carry none, as Chroma's.
//! - **§6 Distances.** `l2` is the *squared* Euclidean distance, `cosine` is
//!   `1 − cos(a, b)`, `ip` is `1 − a·b` (negative when `a·b > 1`). Probe: the query
//!   `[0, 0.5]` against `[3, 4]` and `[1, 0]` gives 21.25 and 1.25 (l2), 0.2 and 1 (cosine),
//!   −1 and 1 (ip).
//! - **§6 Query by ids.** A query with `ids` and no `where`/`where_document` fails with
//!   500 `InternalError` "Error executing plan: Internal error: Error finding id" when one
//!   of the ids is not in the collection (Chroma's local executor maps each id through its
//!   index); with a filter, or before the collection's first record, missing ids are just
//!   not returned. `get` never fails for missing ids.
//! - **§8 Filters.** `where` and `where_document` are JSON objects with exactly one key
//!   each, nested with `$and`/`$or`; the grammar and semantics are in
//!   [`crate::model::filter`].
//! - **§9 Addressing.** Tenants and databases are addressed by name; `GET` and `DELETE`
//!   of a collection take its name, `PUT` (modify) and every record route take its UUID.
//!
//! - **§2 SPANN.** The server's default vector index ([`ApiConfig::knn_index`],
//!   `--knn-index`) decides, as Chroma's `default_knn_index` does. `hnsw` (local Chroma):
//!   a create with `configuration.spann` (and no `hnsw`) gets HNSW defaults with the SPANN
//!   `space` (else `l2`), the other SPANN fields accepted unchecked; a SPANN update changes
//!   nothing. `spann` (Chroma's cloud): the SPANN configuration is validated (400 naming
//!   the field out of range), kept with the defaults filled in and echoed in
//!   `configuration_json.spann` (`hnsw: null`) and in the schema; `hnsw` is replaced by
//!   SPANN defaults with its space; a modify of `search_nprobe`/`ef_search` edits the
//!   configuration and both vector indexes; a schema may enable a sparse vector index.
//!   Either way both at once is 400 "Multiple vector index configurations provided" and an
//!   unknown SPANN field is 422.
//!
//! - **§3 Schema.** A create reconciles the request `schema` with its `configuration` as
//!   Chroma does ([`crate::model::schema`]: validation, conflict check, merge with the
//!   server's default, precedence, no sparse index on an HNSW server) before the name is
//!   looked up, and stores the result with the collection; get_or_create of an existing
//!   name returns the stored schema. Every read echoes it and derives `configuration_json`
//!   from its vector index (`hnsw` without `num_threads`/`batch_size`); a modify of
//!   `hnsw`/`embedding_function` edits both vector indexes. Filters on a key whose inverted
//!   index is disabled, and document filters with full-text search off, are 400 on get,
//!   query and delete (the engine checks them, after a query's dimension). Writes, bulk
//!   ingest and `chroma import` add the metadata keys they bring, with a compare-and-set
//!   that keeps racing discoveries and modifies (the engine's `discovery`). Grammar errors
//!   of the schema are 422 like every other shape error; a collection stored before
//!   schemas were has the one a create with its configuration stores
//!   (`CollectionConfiguration::schema`), stored once a write adds a key.
//!
//! - **§4 Search and sparse vectors (Chroma Cloud's API, served self-hosted).**
//!   `POST …/search` answers with either index setting, as Chroma Cloud does (local
//!   Chroma answers 501): the grammar, rank semantics and response are
//!   [`crate::model::search`], the evaluation the engine's; every level of `read_level`
//!   reads the log too (reads are always consistent: `index_only` may see less in Chroma,
//!   and seeing every write is within that). Errors of a payload are 400
//!   `InvalidArgumentError` naming the field (prefixed `searches[i]: ` when there are
//!   several), a sparse `$knn` on a key without an enabled sparse index is Chroma's
//!   "Cannot filter using metadata key '<k>' with type 'SparseVector' because indexing is
//!   disabled". A sparse vector metadata value (`{"#type": "sparse_vector", …}`, also
//!   untagged) is refused with local Chroma's 501 "Sparse vector is not supported for
//!   local chroma: <key>" under `hnsw`, and under `spann` validated with Chroma's messages
//!   (`Invalid sparse vector: …`), stored, filtered like a value no operator matches, and
//!   returned tagged. Under `spann` a collection's `version` is the number of compactions
//!   that changed its index (Chroma Cloud's compaction version, which clients poll to
//!   wait for indexing); under `hnsw` it is 0, as local Chroma answers.
//!
//! Known differences from Chroma are listed where they are decided.

pub mod api_keys;
pub mod auth;
pub mod collections;
pub mod databases;
pub mod errors;
pub mod extract;
pub mod openapi;
pub mod rate_limit;
pub mod records;
pub mod response_limit;
pub mod search;
pub mod system;
pub mod tenants;
pub mod types;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::{Method, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, on, MethodFilter};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use utoipa::openapi::path::{PathItem, Paths};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa_axum::router::UtoipaMethodRouter;
use utoipa_axum::routes;

use crate::engine::Engine;
use crate::model::KnnIndex;
pub use errors::{ApiError, ErrorResponse};
pub use openapi::ApiDoc;

/// Default largest request body (Chroma's client caps batches by count, not bytes).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;

/// The batch size pre-flight advertises (Chroma's local default); the client refuses
/// larger batches before sending them. The server itself does not enforce it, like
/// Chroma's (see [`ApiConfig::enforced_batch_size`]).
pub const ADVERTISED_BATCH_SIZE: u32 = 5461;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Whether `POST /api/v2/reset` may wipe everything.
    pub allow_reset: bool,
    /// Request bodies larger than this get 413 without being read whole.
    pub max_body_bytes: usize,
    /// API key verification; `None` serves every caller as [`crate::auth::Principal::local`]
    /// (only for loopback servers).
    pub auth: Option<Arc<crate::auth::Authenticator>>,
    /// Per-caller request rate limits; `None`: unlimited.
    pub rate_limits: Option<Arc<rate_limit::RateLimits>>,
    /// The batch size `/pre-flight-checks` advertises to clients.
    pub advertised_batch_size: u32,
    /// Writes of more records than this are refused with 400 (`None`: only the model's
    /// own limit applies); a deployment that advertises a size it needs enforces it.
    pub enforced_batch_size: Option<u32>,
    /// Responses larger than this (escaped as a JSON string, as in a Lambda payload) become
    /// a 400 asking for less; `None`: no limit.
    pub max_response_bytes: Option<usize>,
    /// The default vector index (`--knn-index`): `hnsw` answers as local Chroma 1.5.9,
    /// `spann` as Chroma's cloud (see [`crate::model::spann`]).
    pub knn_index: KnnIndex,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            allow_reset: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            auth: None,
            rate_limits: None,
            advertised_batch_size: ADVERTISED_BATCH_SIZE,
            enforced_batch_size: None,
            max_response_bytes: None,
            knn_index: KnnIndex::Hnsw,
        }
    }
}

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub config: Arc<ApiConfig>,
}

impl AppState {
    pub fn new(engine: Arc<Engine>, config: ApiConfig) -> Self {
        Self {
            engine,
            config: Arc::new(config),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// How a route uses the data, which decides the function a deployment sends it to
/// (`template.yaml`: reads to the read-only query function, the rest to ingest; checked
/// against the route table [`route_table`] by `tests/template`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Answers without changing anything.
    Read,
    /// Changes tenants, databases, collections or records.
    Write,
    /// Administers the deployment (API keys, metrics): the read-write function's, whether
    /// it reads or writes.
    Admin,
}

/// One (method, path) the router serves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    /// `GET`, `POST`, …, or `ANY` for every method.
    pub method: String,
    /// The path as registered (axum's syntax: `{param}`, `{*rest}`).
    pub path: String,
    pub access: Access,
    /// Whether the OpenAPI document describes it (all but [`openapi::UNDOCUMENTED`]).
    pub documented: bool,
}

/// The routes of the API as they are registered, each once with its handler: the router,
/// the paths of the OpenAPI document ([`ApiDoc`]) and the route table ([`route_table`])
/// are made together, so that none can name a route the others lack.
pub(crate) struct Routes {
    router: Router<AppState>,
    /// The documented operations, at their documented paths.
    pub(crate) paths: Paths,
    /// The schemas those operations refer to.
    pub(crate) schemas: Vec<(String, RefOr<Schema>)>,
    table: Vec<Route>,
}

impl Routes {
    fn new() -> Self {
        Self {
            router: Router::new(),
            paths: Paths::new(),
            schemas: Vec::new(),
            table: Vec::new(),
        }
    }

    /// Serves and documents `handlers` (`routes!(…)`: methods, path and operation from
    /// their `#[utoipa::path]`) at `path`, their documented path with the router's names
    /// for its parameters (handlers take parameters by position; the names are the
    /// metrics' route labels and the template's).
    fn documented(
        mut self,
        path: &str,
        access: Access,
        (schemas, paths, handlers): UtoipaMethodRouter<AppState>,
    ) -> Self {
        for (documented, item) in &paths.paths {
            assert!(
                same_route(path, documented),
                "{path} is served where {documented} is documented"
            );
            for method in methods(item) {
                self.add(method, path, access, true);
            }
        }
        self.router = self.router.route(path, handlers);
        self.paths.merge(paths);
        self.schemas.extend(schemas);
        self
    }

    /// Serves a route that the document leaves out: one of [`openapi::UNDOCUMENTED`].
    /// `method` is `ANY` for every method.
    fn undocumented<H, T>(mut self, method: &str, path: &str, access: Access, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        assert!(
            openapi::UNDOCUMENTED.contains(&(method, path)),
            "{method} {path} is neither documented nor in openapi::UNDOCUMENTED"
        );
        let handler = if method == "ANY" {
            any(handler)
        } else {
            let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
            on(
                MethodFilter::try_from(method).expect("a routable method"),
                handler,
            )
        };
        self.router = self.router.route(path, handler);
        self.add(method, path, access, false);
        self
    }

    fn add(&mut self, method: &str, path: &str, access: Access, documented: bool) {
        self.table.push(Route {
            method: method.to_owned(),
            path: path.to_owned(),
            access,
            documented,
        });
    }
}

/// Whether a served path is a documented one: the same segments, parameters in the same
/// places (their names may differ).
pub(crate) fn same_route(served: &str, documented: &str) -> bool {
    let param = |s: &str| s.starts_with('{') && s.ends_with('}');
    served.split('/').count() == documented.split('/').count()
        && served
            .split('/')
            .zip(documented.split('/'))
            .all(|(a, b)| a == b || (param(a) && param(b)))
}

/// The methods a documented path item has operations for.
pub(crate) fn methods(item: &PathItem) -> impl Iterator<Item = &'static str> + '_ {
    [
        ("GET", &item.get),
        ("PUT", &item.put),
        ("POST", &item.post),
        ("DELETE", &item.delete),
        ("OPTIONS", &item.options),
        ("HEAD", &item.head),
        ("PATCH", &item.patch),
        ("TRACE", &item.trace),
    ]
    .into_iter()
    .filter(|(_, operation)| operation.is_some())
    .map(|(method, _)| method)
}

/// Every route of the API, registered once (see [`Routes`]).
pub(crate) fn routes() -> Routes {
    use Access::{Admin, Read, Write};
    let t = "/api/v2/tenants/{tenant}";
    let d = "/api/v2/tenants/{tenant}/databases/{database}";
    let c = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}";
    let (dbs, cols) = (&format!("{t}/databases"), &format!("{d}/collections"));
    let of = |route: &str| format!("{c}/{route}");
    Routes::new()
        .undocumented("GET", "/api/v2", Read, system::heartbeat)
        .documented("/api/v2/heartbeat", Read, routes!(system::heartbeat))
        .documented("/api/v2/version", Read, routes!(system::version))
        .documented(
            "/api/v2/pre-flight-checks",
            Read,
            routes!(system::pre_flight_checks),
        )
        .documented("/api/v2/healthcheck", Read, routes!(system::healthcheck))
        .documented("/api/v2/reset", Write, routes!(system::reset))
        .documented("/api/v2/auth/identity", Read, routes!(system::identity))
        .documented(
            "/api/v2/admin/keys",
            Admin,
            routes!(api_keys::list_keys, api_keys::create_key),
        )
        .documented(
            "/api/v2/admin/keys/{key_id}",
            Admin,
            routes!(api_keys::revoke_key),
        )
        .documented("/api/v2/tenants", Write, routes!(tenants::create_tenant))
        .documented(t, Read, routes!(tenants::get_tenant))
        .documented(t, Write, routes!(tenants::update_tenant))
        .documented(dbs, Read, routes!(databases::list_databases))
        .documented(dbs, Write, routes!(databases::create_database))
        .documented(d, Read, routes!(databases::get_database))
        .documented(d, Write, routes!(databases::delete_database))
        .documented(cols, Read, routes!(collections::list_collections))
        .documented(cols, Write, routes!(collections::create_collection))
        .documented(
            &format!("{d}/collections_count"),
            Read,
            routes!(collections::count_collections),
        )
        .documented(
            &format!("{d}/collections/by-id/{{collection}}"),
            Read,
            routes!(collections::get_collection_by_id),
        )
        .documented(c, Read, routes!(collections::get_collection))
        .documented(
            c,
            Write,
            routes!(
                collections::update_collection,
                collections::delete_collection
            ),
        )
        .documented(&of("fork"), Write, routes!(collections::fork_collection))
        .documented(&of("fork_count"), Read, routes!(collections::fork_count))
        .documented(
            &of("indexing_status"),
            Read,
            routes!(collections::indexing_status),
        )
        .documented(&of("count"), Read, routes!(records::count))
        .documented(&of("add"), Write, routes!(records::add))
        .documented(&of("update"), Write, routes!(records::update))
        .documented(&of("upsert"), Write, routes!(records::upsert))
        .documented(&of("delete"), Write, routes!(records::delete))
        .documented(&of("get"), Read, routes!(records::get))
        .documented(&of("query"), Read, routes!(records::query))
        .documented(&of("search"), Read, routes!(search::search))
        .undocumented(
            "POST",
            &of("functions/attach"),
            Write,
            collections::attach_function,
        )
        .undocumented(
            "GET",
            &of("functions/{function}"),
            Read,
            collections::get_attached_function,
        )
        .undocumented(
            "POST",
            &of("attached_functions/{function}/detach"),
            Write,
            collections::detach_function,
        )
        .undocumented(
            "GET",
            "/api/v2/collections/{crn}",
            Read,
            collections::get_collection_by_crn,
        )
        .undocumented("ANY", "/api/v1", Read, system::v1_deprecated)
        .undocumented("ANY", "/api/v1/{*rest}", Read, system::v1_deprecated)
        .undocumented("GET", "/openapi.json", Read, system::openapi_json)
        .undocumented("GET", "/metrics", Admin, system::metrics)
        .undocumented("GET", "/docs", Read, system::docs)
}

/// Every (method, path) the router serves, sorted by path and method: what
/// `tests/template/api-routes.json` holds.
pub fn route_table() -> Vec<Route> {
    let mut table = routes().table;
    table.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
    table
}

/// The whole API: `/api/v2/*`, the `/api/v1` deprecation notice, `/openapi.json`, `/docs`
/// (every route registered in [`routes`]).
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let max_response = state.config.max_response_bytes;
    let api = routes()
        .router
        .fallback(system::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state);
    let api = match max_response {
        Some(limit) => api.layer(middleware::from_fn_with_state(
            limit,
            response_limit::limit_response,
        )),
        None => api,
    };
    api.layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(middleware::from_fn(errors::json_errors))
        .layer(middleware::from_fn(log_requests))
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// One log line per request (method, path, status, latency), and its metrics (by route
/// template: see [`crate::metrics`]).
async fn log_requests(request: Request<Body>, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let took = start.elapsed();
    crate::metrics::http_request(method.as_str(), &route, status, took);
    let latency_ms = took.as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(%method, path, status, latency_ms, "request");
    } else {
        tracing::info!(%method, path, status, latency_ms, "request");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/template/api-routes.json`: one route a line, so that a change reads as one.
    fn route_table_json() -> String {
        let routes: Vec<String> = route_table()
            .iter()
            .map(|r| format!("    {}", serde_json::to_string(r).expect("JSON")))
            .collect();
        format!(
            "{{\n  \"about\": \"Every route of chroma-core's HTTP router (core/src/api/mod.rs), \
             generated by its test api::tests::route_table_is_current; regenerate with \
             CHROMA_UPDATE_ROUTES=1 cargo test -p chroma-core --lib route_table_is_current\",\n  \
             \"routes\": [\n{}\n  ]\n}}\n",
            routes.join(",\n")
        )
    }

    /// The route table that `tests/template` checks the SAM template's routes against.
    #[test]
    fn route_table_is_current() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/template/api-routes.json");
        let current = route_table_json();
        if std::env::var_os("CHROMA_UPDATE_ROUTES").is_some() {
            std::fs::write(&file, &current).expect("write the route table");
            return;
        }
        let stored = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            stored == current,
            "{} is not the router's routes; regenerate it with \
             `CHROMA_UPDATE_ROUTES=1 cargo test -p chroma-core --lib route_table_is_current` \
             and check the template's routes (scripts/check-template.sh)",
            file.display()
        );
    }

    /// What the deployment relies on: writes are never GETs, and the POSTs that read are
    /// the record reads.
    #[test]
    fn reads_and_writes_are_told_apart() {
        for route in route_table() {
            let (method, path) = (route.method.as_str(), route.path.as_str());
            match route.access {
                Access::Write => assert_ne!(method, "GET", "{path}"),
                Access::Read => assert!(
                    ["GET", "ANY"].contains(&method)
                        || ["/get", "/query", "/search"]
                            .iter()
                            .any(|s| path.ends_with(s)),
                    "{method} {path} reads"
                ),
                Access::Admin => assert!(path.starts_with("/api/v2/admin/") || path == "/metrics"),
            }
        }
        let table = route_table();
        let mut keys: Vec<_> = table.iter().map(|r| (&r.method, &r.path)).collect();
        keys.dedup();
        assert_eq!(keys.len(), table.len(), "a route registered twice");
    }
}
