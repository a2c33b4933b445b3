//! A deployment of its own per test (bucket, tables, key, queues), its functions, and
//! events built from the fixtures.

use std::path::PathBuf;

use axum::Router;
use chroma_core::aws::provision::{init, InitRequest};
use chroma_core::aws::AwsConfig;
use chroma_functions::lambda::{http, Deployment, Function, Resources};
use lambda_http::request::LambdaRequest;
use lambda_http::{Context, LambdaEvent, Service};
use serde_json::{json, Value};

/// The emulator's endpoint; panics with instructions when none is configured.
pub fn endpoint() -> String {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if url.starts_with("http://127.0.0.1:") || url.starts_with("http://localhost:") => {
            url
        }
        _ => panic!(
            "the Lambda tests need moto's server on loopback: run scripts/test.sh, or \
             `source scripts/moto.sh` before cargo test"
        ),
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// One deployment's resources and an admin key.
pub struct Stack {
    pub name: String,
    pub config: AwsConfig,
    pub key: String,
    cache: tempfile::TempDir,
}

impl Stack {
    /// Creates the bucket, tables, KMS key and compaction queue, and an admin key.
    pub async fn new() -> Self {
        let name = unique("fn");
        let report = init(InitRequest {
            bucket: name.clone(),
            prefix: String::new(),
            table_prefix: format!("{name}-"),
            kms_key_id: None,
            compaction_queue: Some(format!("{name}-compaction.fifo")),
            region: Some("us-east-1".to_owned()),
            endpoint_url: Some(endpoint()),
        })
        .await
        .expect("provision");
        let mut stack = Self {
            name,
            config: report.config,
            key: String::new(),
            cache: tempfile::tempdir().expect("cache dir"),
        };
        let d = stack.function(Function::Ingest).await;
        let new = chroma_core::auth::api_keys::mint(
            Some("admin".into()),
            vec!["*/*/*:read,write,admin".into()],
            None,
            chroma_core::clock::now_ms(),
            None,
        );
        d.engine
            .catalog()
            .create_api_key(&new.record)
            .await
            .expect("store key");
        stack.key = new.key.to_string();
        stack
    }

    /// A function of this deployment, as its binary would start it (the query function
    /// with a disk cache).
    pub async fn function(&self, function: Function) -> Deployment {
        let resources = Resources {
            memory_mib: 512,
            disk_cache: (function == Function::Query)
                .then(|| (self.cache.path().join("objects"), 64 << 20)),
            failed_ingest_retention_days: None,
            serves_reads: function == Function::Query,
        };
        Deployment::connect(self.config.clone(), function, resources)
            .await
            .expect("function starts")
    }

    /// The router of an HTTP function, configured from an empty environment.
    pub async fn router(&self, function: Function) -> Router {
        let d = self.function(function).await;
        http::router(&d, &http::api_args_from_env().expect("env"))
            .await
            .expect("router")
    }

    pub fn compaction_queue(&self) -> String {
        self.config.compaction_queue_url.clone().expect("queue")
    }
}

/// The fixture `tests/events/NAME` with each placeholder replaced.
pub fn fixture(name: &str, replace: &[(&str, &str)]) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name);
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    for (from, to) in replace {
        text = text.replace(from, to);
    }
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// An API Gateway response: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub raw: Value,
}

/// Runs an API Gateway event through `router` the way `lambda_http::run` does.
pub async fn invoke(router: &Router, event: Value) -> Answer {
    let request: LambdaRequest = serde_json::from_value(event).expect("an API Gateway event");
    let mut adapter = lambda_http::Adapter::from(router.clone());
    let response = adapter
        .call(LambdaEvent::new(request, Context::default()))
        .await
        .expect("the adapter answers");
    let raw = serde_json::to_value(&response).expect("response serializes");
    let status = raw["statusCode"].as_u64().expect("statusCode") as u16;
    let body = match raw["body"].as_str() {
        Some(text) if !text.is_empty() => serde_json::from_str(text).unwrap_or(json!(text)),
        _ => Value::Null,
    };
    Answer { status, body, raw }
}

/// An API Gateway event for any route, shaped like the committed fixtures.
pub fn request(method: &str, path: &str, body: Option<Value>, key: Option<&str>) -> Value {
    let mut event = fixture("apigw-create-collection.json", &[]);
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    event["routeKey"] = json!(format!("{method} {path}"));
    event["requestContext"]["routeKey"] = event["routeKey"].clone();
    event["rawPath"] = json!(path);
    event["rawQueryString"] = json!(query);
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(path);
    event.as_object_mut().unwrap().remove("pathParameters");
    match body {
        Some(body) => event["body"] = json!(body.to_string()),
        None => {
            event.as_object_mut().unwrap().remove("body");
            event["headers"]
                .as_object_mut()
                .unwrap()
                .remove("content-type");
        }
    }
    match key {
        Some(key) => event["headers"]["x-chroma-token"] = json!(key),
        None => {
            event["headers"]
                .as_object_mut()
                .unwrap()
                .remove("x-chroma-token");
        }
    }
    event
}

pub const COLLECTIONS: &str =
    "/api/v2/tenants/default_tenant/databases/default_database/collections";

/// `METHOD {COLLECTIONS}/{id}/{route}` with `key`, through `router`.
pub async fn call(
    router: &Router,
    key: &str,
    method: &str,
    id: &str,
    route: &str,
    body: Option<Value>,
) -> Answer {
    let path = format!("{COLLECTIONS}/{id}/{route}");
    invoke(router, request(method, &path, body, Some(key))).await
}

/// The record count of a collection, read through `router`.
pub async fn count(router: &Router, key: &str, id: &str) -> Value {
    let a = call(router, key, "GET", id, "count", None).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body
}

/// Creates a collection through the ingest function; returns its id.
pub async fn create_collection(ingest: &Router, key: &str, name: &str) -> String {
    let a = invoke(
        ingest,
        request("POST", COLLECTIONS, Some(json!({"name": name})), Some(key)),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body["id"].as_str().expect("id").to_owned()
}

/// An SQS event (as Lambda's event source mapping delivers it) of these received messages.
pub fn sqs_event(queue_arn: &str, messages: &[aws_sdk_sqs::types::Message]) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records })
}
