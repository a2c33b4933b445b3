//! The OpenAPI document of the API (`/openapi.json`): generated from the handlers and wire
//! types, plus the error responses that every operation can give (added by
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

/// The OpenAPI document of the API, generated from the handlers and wire types.
#[derive(OpenApi)]
#[openapi(
    info(title = "chroma", description = "Chroma-compatible HTTP API v2"),
    paths(
        super::system::heartbeat,
        super::system::version,
        super::system::pre_flight_checks,
        super::system::healthcheck,
        super::system::reset,
        super::system::identity,
        super::tenants::create_tenant,
        super::tenants::get_tenant,
        super::tenants::update_tenant,
        super::databases::create_database,
        super::databases::list_databases,
        super::databases::get_database,
        super::databases::delete_database,
        super::collections::list_collections,
        super::collections::count_collections,
        super::collections::create_collection,
        super::collections::get_collection,
        super::collections::get_collection_by_id,
        super::collections::update_collection,
        super::collections::delete_collection,
        super::collections::indexing_status,
        super::collections::fork_collection,
        super::collections::fork_count,
        super::records::count,
        super::records::add,
        super::records::update,
        super::records::upsert,
        super::records::delete,
        super::records::get,
        super::records::query,
        super::search::search,
        super::keys::create_key,
        super::keys::list_keys,
        super::keys::revoke_key,
    ),
    components(schemas(ErrorResponse)),
    modifiers(&CommonResponses)
)]
pub struct ApiDoc;

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
    use super::*;

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
