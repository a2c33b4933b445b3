//! The OpenAPI document of the API (`/openapi.json`): generated from the handlers of the
//! routes the router serves (registered with them, so that every route but the
//! [`UNDOCUMENTED`] ones is documented and nothing else is) and the wire types, plus the
//! error responses that every operation can give (added by
//! [`CommonResponses`], so that no answer of the server is undocumented), with unsigned
//! integers given the range the server accepts ([`unsigned_ranges`]).

use std::sync::LazyLock;

use serde_json::Value;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::Ref;
use utoipa::openapi::{Content, OpenApi as Document, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::auth::OPEN_PATHS;
use super::errors::ErrorResponse;

/// The routes the document leaves out on purpose (method, path as the router has it);
/// every other route the router serves is documented, with the operation of its handler's
/// `#[utoipa::path]` (`api::routes` registers both at once, and refuses an undocumented
/// route missing here).
pub const UNDOCUMENTED: [(&str, &str); 10] = [
    // The root answers the heartbeat, as Chroma's does; the document has it as
    // /api/v2/heartbeat.
    ("GET", "/api/v2"),
    // Chroma Cloud's attached functions and collection CRNs, not supported: 501, so that a
    // client gets a clear error rather than a 404.
    (
        "POST",
        "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/functions/attach",
    ),
    (
        "GET",
        "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/functions/{function}",
    ),
    (
        "POST",
        "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/attached_functions/{function}/detach",
    ),
    ("GET", "/api/v2/collections/{crn}"),
    // The v1 API is gone: every method of every path answers 410 with Chroma's notice.
    ("ANY", "/api/v1"),
    ("ANY", "/api/v1/{*rest}"),
    // The document itself and its viewer.
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    // The Prometheus scrape of the local server, not part of Chroma's API.
    ("GET", "/metrics"),
];

/// What the document has besides its paths.
#[derive(OpenApi)]
#[openapi(
    info(title = "chroma", description = "Chroma-compatible HTTP API v2"),
    components(schemas(ErrorResponse))
)]
struct Base;

/// The OpenAPI document of the API, generated from the handlers and wire types: the
/// operations of the routes the router serves (registered with them by `api::routes`) with
/// the schemas they use, and the common error responses.
pub struct ApiDoc;

impl OpenApi for ApiDoc {
    fn openapi() -> Document {
        let routes = super::routes();
        let mut doc = Base::openapi();
        doc.paths = routes.paths;
        doc.components
            .get_or_insert_with(Default::default)
            .schemas
            .extend(routes.schemas);
        CommonResponses.modify(&mut doc);
        doc
    }
}

/// The document as served.
pub fn document() -> &'static Value {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document is JSON");
        unsigned_ranges(&mut doc);
        doc
    });
    &DOCUMENT
}

/// utoipa documents `u32` as format `int32` and `u64`/`usize` as `int64`, with minimum 0;
/// but those formats end at 2^31 - 1 and 2^63 - 1, below what the server accepts. Such
/// schemas lose the format and state the type's real maximum instead.
fn unsigned_ranges(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("minimum").and_then(Value::as_f64) == Some(0.0) {
                let maximum = match map.get("format").and_then(Value::as_str) {
                    Some("int32") => Some(Value::from(u32::MAX)),
                    Some("int64") => Some(Value::from(u64::MAX)),
                    _ => None,
                };
                if let Some(maximum) = maximum {
                    map.remove("format");
                    map.insert("maximum".to_owned(), maximum);
                }
            }
            map.values_mut().for_each(unsigned_ranges);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned_ranges),
        _ => {}
    }
}

/// Error responses (an [`ErrorResponse`] body) that any operation can give besides its
/// own: the status, when it applies, and what it means.
const COMMON: [(&str, Applies, &str); 10] = [
    ("400", Applies::WithInput, "A path parameter, query parameter or body field is not valid."),
    ("404", Applies::WithPath, "The tenant, database, collection or key named in the path does not exist."),
    ("401", Applies::Authenticated, "With authentication on: credentials missing, malformed, unknown, revoked or expired."),
    ("403", Applies::Authenticated, "The caller's grants do not allow this."),
    ("413", Applies::WithBody, "The request body is over the server's size limit."),
    ("415", Applies::WithBody, "The request body is not `application/json`."),
    ("422", Applies::WithBody, "The request body is not this operation's JSON (the message names the field)."),
    ("429", Applies::Authenticated, "The caller's rate limit is exceeded; retry after `Retry-After` seconds."),
    ("500", Applies::Always, "An internal error; the message names the request (`chroma-trace-id`), the log has the cause."),
    ("503", Applies::Always, "Temporarily unavailable (overloaded or a dependency is); retry after `Retry-After` seconds."),
];

#[derive(Clone, Copy, PartialEq)]
enum Applies {
    Always,
    /// Operations with parameters (path or query) or a request body.
    WithInput,
    /// Operations with a path parameter (a tenant, database, collection or key).
    WithPath,
    /// Operations that need credentials (all but the open probes) when authentication is on.
    Authenticated,
    /// Operations that take a request body.
    WithBody,
}

/// Adds [`COMMON`] to every operation that does not document that status itself.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut Document) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let open = OPEN_PATHS.contains(&path.as_str());
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                add_common(operation, open);
            }
        }
    }
}

fn add_common(operation: &mut Operation, open: bool) {
    let with_body = operation.request_body.is_some();
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let with_path = parameters
        .iter()
        .any(|p| p.parameter_in == ParameterIn::Path);
    let with_input = with_body || !parameters.is_empty();
    for (status, applies, description) in COMMON {
        let applies = match applies {
            Applies::Always => true,
            Applies::WithInput => with_input,
            Applies::WithPath => with_path,
            Applies::Authenticated => !open,
            Applies::WithBody => with_body,
        };
        if applies {
            operation
                .responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| error_response(description));
        }
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    let schema = Ref::from_schema_name("ErrorResponse");
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(schema)))
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::api::{methods, route_table, same_route};

    #[test]
    fn the_document_has_every_route_the_router_serves_but_the_exceptions() {
        let doc = ApiDoc::openapi();
        let documented: BTreeSet<(&str, &str)> = doc
            .paths
            .paths
            .iter()
            .flat_map(|(path, item)| methods(item).map(move |m| (m, path.as_str())))
            .collect();
        let table = route_table();
        for route in &table {
            let at = |&(m, p): &(&str, &str)| m == route.method && same_route(&route.path, p);
            let undocumented = UNDOCUMENTED.contains(&(route.method.as_str(), &route.path));
            assert_eq!(
                documented.iter().any(at),
                !undocumented,
                "{} {}: documented unless an exception",
                route.method,
                route.path
            );
            assert_eq!(route.documented, !undocumented);
        }
        for (method, path) in &documented {
            assert!(
                table
                    .iter()
                    .any(|r| r.method == *method && same_route(&r.path, path)),
                "{method} {path} is documented but not served"
            );
        }
        for (method, path) in UNDOCUMENTED {
            assert!(
                table.iter().any(|r| r.method == method && r.path == path),
                "the exception {method} {path} is not served"
            );
        }
    }

    #[test]
    fn every_operation_documents_the_common_errors() {
        let doc = ApiDoc::openapi();
        let query = doc
            .paths
            .paths
            .get("/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/query")
            .and_then(|item| item.post.as_ref())
            .expect("the query operation");
        for status in [
            "200", "400", "401", "403", "404", "413", "415", "422", "429", "500", "503",
        ] {
            assert!(
                query.responses.responses.contains_key(status),
                "query lacks {status}"
            );
        }
        // A missing tenant in the path is a 404 wherever a path names one.
        let create_db = doc.paths.paths["/api/v2/tenants/{tenant}/databases"]
            .post
            .as_ref()
            .unwrap();
        assert!(create_db.responses.responses.contains_key("404"));
        // The open probes need no credentials and take no input.
        let heartbeat = doc.paths.paths["/api/v2/heartbeat"].get.as_ref().unwrap();
        let statuses: Vec<_> = heartbeat.responses.responses.keys().cloned().collect();
        assert_eq!(statuses, ["200", "500", "503"]);
        // An operation's own description of a status is kept.
        let reset = doc.paths.paths["/api/v2/reset"].post.as_ref().unwrap();
        let RefOr::T(forbidden) = &reset.responses.responses["403"] else {
            panic!("reset's 403 is inline");
        };
        assert!(!forbidden.description.contains("grants do not allow"));
    }

    #[test]
    fn unsigned_integers_have_their_real_range() {
        let doc = document();
        let params = doc["paths"]["/api/v2/tenants/{tenant}/databases"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["schema"]["maximum"], u32::MAX);
        assert_eq!(limit["schema"]["minimum"].as_f64(), Some(0.0));
        assert!(limit["schema"].get("format").is_none());
        let ns = &doc["components"]["schemas"]["HeartbeatResponse"]["properties"]
            ["nanosecond heartbeat"];
        assert_eq!(ns["maximum"], u64::MAX, "{ns}");
        // Signed integers and floats keep their formats.
        let text = doc.to_string();
        assert!(!text.contains(r#""format":"int32","minimum":0"#));
        assert!(text.contains(r#""format":"float""#));
    }

    #[test]
    fn version_is_json() {
        let doc = ApiDoc::openapi();
        let version = doc.paths.paths["/api/v2/version"].get.as_ref().unwrap();
        let RefOr::T(ok) = &version.responses.responses["200"] else {
            panic!("inline 200");
        };
        assert_eq!(ok.content.keys().collect::<Vec<_>>(), ["application/json"]);
    }
}
