//! A server on an ephemeral loopback port over a temporary data directory, and a small
//! JSON client for it.

use std::sync::Arc;

use chroma_core::api::{self, ApiConfig, AppState};
use chroma_core::auth::Authenticator;
use chroma_core::catalog::sqlite::SqliteCatalog;
use chroma_core::catalog::Catalog;
use chroma_core::crypto::local::LocalKeyProvider;
use chroma_core::crypto::KeyProvider;
use chroma_core::engine::{Engine, EngineConfig};
use chroma_core::jobs::local::LocalJobs;
use chroma_core::storage::local::LocalStore;
use chroma_core::storage::ObjectStore;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;
use uuid::Uuid;

pub const DB: &str = "/tenants/default_tenant/databases/default_database";

type Backends = (Arc<dyn Catalog>, Arc<dyn ObjectStore>, Arc<dyn KeyProvider>);

/// Which backends the servers use: `CHROMA_TEST_BACKEND` = `local` (default) or `aws`
/// (moto on `AWS_ENDPOINT_URL`; needs the `aws` feature).
fn backend() -> String {
    std::env::var("CHROMA_TEST_BACKEND").unwrap_or_else(|_| "local".to_owned())
}

fn local_backends(dir: &TempDir) -> Backends {
    let catalog = SqliteCatalog::open(&dir.path().join("catalog.sqlite3")).expect("catalog");
    let store = LocalStore::new(dir.path().join("objects")).expect("store");
    let keys = LocalKeyProvider::from_bytes([7u8; 32]);
    (Arc::new(catalog), Arc::new(store), Arc::new(keys))
}

/// A deployment of its own on the emulator: bucket, tables and KMS key.
#[cfg(feature = "aws")]
async fn aws_backends() -> (Backends, Raw) {
    use chroma_core::aws::provision::{init, InitRequest};
    use chroma_core::aws::AwsBackends;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect(
        "CHROMA_TEST_BACKEND=aws needs moto: run scripts/test.sh or source scripts/moto.sh",
    );
    let name = format!("e2e-{}", ulid::Ulid::new().to_string().to_lowercase());
    let report = init(InitRequest {
        bucket: name.clone(),
        prefix: String::new(),
        table_prefix: format!("{name}-"),
        kms_key_id: None,
        compaction_queue: None,
        region: Some("us-east-1".to_owned()),
        endpoint_url: Some(endpoint),
    })
    .await
    .expect("provision a deployment on the emulator");
    let b = AwsBackends::connect(&report.config).await;
    let raw = Raw::Aws {
        dynamodb: b.clients.dynamodb.clone(),
        tables: chroma_core::aws::dynamodb::table_names(&report.config.table_prefix),
    };
    ((b.catalog, b.store, b.key_provider), raw)
}

#[cfg(not(feature = "aws"))]
async fn aws_backends() -> (Backends, Raw) {
    panic!("CHROMA_TEST_BACKEND=aws needs the tests built with --features aws")
}

/// Where what the backends stored can be read back raw (beyond the object store).
enum Raw {
    /// Everything is under the server's temporary directory.
    Local,
    /// The deployment's DynamoDB tables.
    #[cfg(feature = "aws")]
    Aws {
        dynamodb: aws_sdk_dynamodb::Client,
        tables: Vec<String>,
    },
}

/// The strings and binary values of a DynamoDB attribute, nested ones included.
#[cfg(feature = "aws")]
fn attribute_bytes(v: &aws_sdk_dynamodb::types::AttributeValue, out: &mut Vec<u8>) {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    match v {
        A::S(s) | A::N(s) => out.extend_from_slice(s.as_bytes()),
        A::B(b) => out.extend_from_slice(b.as_ref()),
        A::Ss(list) | A::Ns(list) => list
            .iter()
            .for_each(|s| out.extend_from_slice(s.as_bytes())),
        A::Bs(list) => list.iter().for_each(|b| out.extend_from_slice(b.as_ref())),
        A::L(list) => list.iter().for_each(|v| attribute_bytes(v, out)),
        A::M(map) => map.iter().for_each(|(k, v)| {
            out.extend_from_slice(k.as_bytes());
            attribute_bytes(v, out);
        }),
        _ => {}
    }
    out.push(0);
}

pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub engine: Arc<Engine>,
    /// The object store the server writes to (raw, encrypted objects).
    pub store: Arc<dyn ObjectStore>,
    raw: Raw,
    /// Sent with every request of the helpers below (authenticated servers).
    pub key: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A response: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    /// Asserts a Chroma error body with this status and name, and returns its message.
    #[track_caller]
    pub fn error(&self, status: u16, name: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.body["error"], name, "{}", self.text);
        assert!(
            self.content_type.starts_with("application/json"),
            "{}",
            self.content_type
        );
        self.body["message"].as_str().expect("message").to_string()
    }

    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "{}", self.text);
        &self.body
    }
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(ApiConfig {
            allow_reset: true,
            max_body_bytes: 1 << 20,
            ..ApiConfig::default()
        })
        .await
    }

    /// A server run with `--knn-index spann` (Chroma's cloud flavour).
    pub async fn start_spann() -> Self {
        Self::start_with(ApiConfig {
            allow_reset: true,
            max_body_bytes: 1 << 20,
            knn_index: chroma_core::model::KnnIndex::Spann,
            ..ApiConfig::default()
        })
        .await
    }

    pub async fn start_with(config: ApiConfig) -> Self {
        Self::launch(config, false).await
    }

    /// A server requiring API keys; its own requests carry a key granting everything.
    pub async fn start_authenticated() -> Self {
        let config = ApiConfig {
            allow_reset: true,
            max_body_bytes: 1 << 20,
            ..ApiConfig::default()
        };
        let mut s = Self::launch(config, true).await;
        s.key = Some(s.mint(&["*/*/*:read,write,admin"], None).await);
        s
    }

    /// An authenticated server with these rate limits.
    pub async fn start_limited(limits: chroma_core::api::rate_limit::RateLimits) -> Self {
        let config = ApiConfig {
            allow_reset: true,
            max_body_bytes: 1 << 20,
            rate_limits: Some(Arc::new(limits)),
            ..ApiConfig::default()
        };
        let mut s = Self::launch(config, true).await;
        s.key = Some(s.mint(&["*/*/*:read,write,admin"], None).await);
        s
    }

    /// Stores a new key with these grants straight in the catalog, minted by the operator
    /// (as `chroma keys create` does); returns the key.
    pub async fn mint(&self, grants: &[&str], row_filter: Option<Value>) -> String {
        let request = chroma_core::auth::delegation::KeyRequest {
            grants: grants.iter().map(|g| g.to_string()).collect(),
            row_filter,
            ..Default::default()
        };
        let new = chroma_core::auth::Principal::local()
            .mint_key(request, chroma_core::clock::now_ms())
            .expect("mint key");
        self.engine
            .catalog()
            .create_api_key(&new.record)
            .await
            .expect("store key");
        new.key.to_string()
    }

    /// Requests as the holder of `key` (`None`: without credentials).
    pub fn as_key<'a>(&'a self, key: Option<&'a str>) -> AsKey<'a> {
        AsKey { server: self, key }
    }

    /// An authenticated server that also accepts JWTs checked by `verifier`.
    pub async fn start_with_jwt(verifier: chroma_core::auth::jwt::JwtVerifier) -> Self {
        let config = ApiConfig {
            allow_reset: true,
            max_body_bytes: 1 << 20,
            ..ApiConfig::default()
        };
        let mut s = Self::launch_with(config, true, Some(verifier)).await;
        s.key = Some(s.mint(&["*/*/*:read,write,admin"], None).await);
        s
    }

    async fn launch(config: ApiConfig, authenticated: bool) -> Self {
        Self::launch_with(config, authenticated, None).await
    }

    async fn launch_with(
        mut config: ApiConfig,
        authenticated: bool,
        jwt: Option<chroma_core::auth::jwt::JwtVerifier>,
    ) -> Self {
        // As `chroma run` does: `/metrics` renders what this process recorded.
        chroma_core::metrics::install_prometheus();
        let dir = tempfile::tempdir().expect("tempdir");
        let ((catalog, store, keys), raw) = match backend().as_str() {
            "local" => (local_backends(&dir), Raw::Local),
            "aws" => aws_backends().await,
            other => panic!("CHROMA_TEST_BACKEND={other}: expected local or aws"),
        };
        let (jobs, receiver) = LocalJobs::new();
        let jobs = Arc::new(jobs);
        // Measured as `chroma run` measures its store.
        let metered = Arc::new(chroma_core::storage::metered::Metered::new(store.clone()));
        let engine = Engine::new(catalog, metered, keys, jobs, EngineConfig::default());
        let background = engine.spawn_background(receiver);
        if authenticated {
            // No key cache: a revocation shows at once.
            let mut auth =
                Authenticator::with_ttl(engine.catalog().clone(), std::time::Duration::ZERO);
            if let Some(v) = jwt {
                auth = auth.with_jwt(v);
            }
            config.auth = Some(Arc::new(auth));
        }
        let router = api::router(AppState::new(engine.clone(), config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = api::serve(listener, router, async {
                let _ = rx.await;
            })
            .await;
            background.abort();
        });
        // reqwest is built without a TLS provider of its own: use the project's.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            engine,
            store,
            raw,
            key: None,
            shutdown: Some(tx),
            dir,
        }
    }

    /// Everything the backends stored, raw, as (where, bytes): every object of the store,
    /// and every file under the server's directory (local) or every item of the
    /// deployment's DynamoDB tables (aws; an item's strings and binaries, concatenated).
    pub async fn stored_bytes(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for o in self.store.list("").await.expect("list objects") {
            let bytes = self.store.get(&o.key).await.expect("read object");
            out.push((format!("object {}", o.key), bytes.to_vec()));
        }
        match &self.raw {
            Raw::Local => {
                let mut dirs = vec![self.dir.path().to_path_buf()];
                while let Some(d) = dirs.pop() {
                    for entry in std::fs::read_dir(&d).expect("read dir") {
                        let path = entry.expect("dir entry").path();
                        if path.is_dir() {
                            dirs.push(path);
                        } else {
                            let bytes = std::fs::read(&path).expect("read file");
                            out.push((format!("file {}", path.display()), bytes));
                        }
                    }
                }
            }
            #[cfg(feature = "aws")]
            Raw::Aws { dynamodb, tables } => {
                for table in tables {
                    let mut pages = dynamodb.scan().table_name(table).into_paginator().send();
                    while let Some(page) = pages.next().await {
                        for item in page.expect("scan").items() {
                            let mut bytes = Vec::new();
                            for (k, v) in item {
                                bytes.extend_from_slice(k.as_bytes());
                                attribute_bytes(v, &mut bytes);
                            }
                            out.push((format!("item of {table}"), bytes));
                        }
                    }
                }
            }
        }
        out
    }

    /// `path` under `/api/v2` unless it starts with `/api` or is a top-level document
    /// (`/openapi.json`, `/docs`, `/metrics`).
    pub fn url(&self, path: &str) -> String {
        if ["/api", "/openapi", "/docs", "/metrics"]
            .iter()
            .any(|top| path.starts_with(top))
        {
            format!("{}{path}", self.base)
        } else {
            format!("{}/api/v2{path}", self.base)
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let req = match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        };
        Self::send_raw(req).await
    }

    pub async fn send_raw(req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            text,
            content_type,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(self.client.post(self.url(path)).json(&body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.send(self.client.put(self.url(path)).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.client.delete(self.url(path))).await
    }

    /// Creates a collection in the default database with extra body fields.
    pub async fn create(&self, name: &str, extra: Value) -> Value {
        let mut body = json!({ "name": name });
        if let Value::Object(m) = extra {
            body.as_object_mut().unwrap().extend(m);
        }
        let r = self.post(&format!("{DB}/collections"), body).await;
        r.ok().clone()
    }

    /// Creates a collection and returns the path of its record routes.
    pub async fn collection(&self, name: &str, extra: Value) -> String {
        let c = self.create(name, extra).await;
        format!("{DB}/collections/{}", c["id"].as_str().unwrap())
    }

    pub fn id_of(path: &str) -> Uuid {
        path.rsplit('/').next().unwrap().parse().unwrap()
    }

    /// Folds the log of a collection into segments (so reads span segments and log).
    pub async fn compact(&self, path: &str) {
        self.engine
            .compact(Self::id_of(path), chroma_core::engine::Merge::All)
            .await
            .expect("compact");
    }
}

/// Requests with another key than the server's own.
pub struct AsKey<'a> {
    server: &'a Server,
    key: Option<&'a str>,
}

impl AsKey<'_> {
    /// Sends as `X-Chroma-Token` (what Chroma's clients send).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let req = match self.key {
            Some(k) => req.header("x-chroma-token", k),
            None => req,
        };
        Server::send_raw(req).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.server.client.get(self.server.url(path)))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(self.server.client.post(self.server.url(path)).json(&body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.send(self.server.client.put(self.server.url(path)).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.server.client.delete(self.server.url(path)))
            .await
    }
}

/// Asserts two float lists are equal within f32 rounding.
#[track_caller]
pub fn assert_close(got: &Value, want: &[f64]) {
    let got: Vec<f64> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}
