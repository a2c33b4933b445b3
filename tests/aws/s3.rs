//! The S3 object store against moto: the backend's conditional writes, the conformance
//! suite, SSE-KMS on every object, multipart uploads, listing and the error mapping.

use std::future::Future;
use std::io::{Read, Write};
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chroma_core::aws::s3::{S3Store, MIN_PART_SIZE};
use chroma_core::aws::{AwsClients, AwsConfig, MAX_ATTEMPTS};
use chroma_core::storage::{ObjectMeta, ObjectStore};
use chroma_core::{ErrorCode, Result};

use crate::common;

const MIB: usize = 1024 * 1024;

/// A deployment of its own: a bucket (not yet created) and a fresh KMS key.
#[derive(Debug)]
struct Setup {
    config: AwsConfig,
    clients: AwsClients,
    key_arn: String,
}

async fn setup() -> Setup {
    let mut config = common::config();
    let clients = common::clients(&config).await;
    let key = clients.kms.create_key().send().await.expect("create key");
    let key_arn = key
        .key_metadata()
        .and_then(|m| m.arn())
        .expect("key arn")
        .to_owned();
    config.kms_key_id = key_arn.clone();
    Setup {
        config,
        clients,
        key_arn,
    }
}

impl Setup {
    fn store(&self) -> S3Store {
        S3Store::new(&self.clients, &self.config)
    }

    /// A store in a bucket created with ensure_bucket (default encryption on).
    async fn ensured_store(&self) -> S3Store {
        let store = self.store();
        assert!(store.ensure_bucket().await.expect("ensure bucket"));
        store
    }

    /// A store in a bucket created directly, without default encryption, so any SSE-KMS
    /// on its objects comes from the store's own requests.
    async fn plain_bucket_store(&self) -> S3Store {
        self.clients
            .s3
            .create_bucket()
            .bucket(&self.config.bucket)
            .send()
            .await
            .expect("create bucket");
        self.store()
    }

    /// The S3 key of an engine key.
    fn s3_key(&self, key: &str) -> String {
        format!("{}{key}", self.config.prefix)
    }

    async fn assert_kms_encrypted(&self, store: &S3Store, key: &str) {
        let (algorithm, kms_key) = store.server_side_encryption(key).await.expect("sse");
        assert_eq!(algorithm.as_deref(), Some("aws:kms"), "algorithm of {key}");
        assert_eq!(
            kms_key.as_deref(),
            Some(self.key_arn.as_str()),
            "key of {key}"
        );
    }
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(result: Result<T>, code: ErrorCode) {
    match result {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(e) => assert_eq!(e.code(), code, "{e:?}"),
    }
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(seed)
                .wrapping_add((i >> 8) as u8)
        })
        .collect::<Vec<u8>>()
        .into()
}

/// The backend must refuse a second `If-None-Match: *` write, or every conditional-write
/// test below would prove nothing.
async fn probe_if_none_match(store: &S3Store) {
    let key = format!("probe/{}", ulid::Ulid::new());
    store
        .put_if_absent(&key, Bytes::from_static(b"first"))
        .await
        .expect("first put_if_absent");
    assert_code(
        store
            .put_if_absent(&key, Bytes::from_static(b"second"))
            .await,
        ErrorCode::AlreadyExists,
    );
    assert_eq!(store.get(&key).await.unwrap(), Bytes::from_static(b"first"));
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn backend_enforces_if_none_match() {
    let s = setup().await;
    probe_if_none_match(&s.ensured_store().await).await;
}

/// Passes every call through, and checks with HeadObject right after each successful
/// write that the object is encrypted with the configured key.
#[derive(Debug)]
struct SseChecked<'a> {
    setup: &'a Setup,
    store: &'a S3Store,
    checked: Mutex<Vec<String>>,
}

impl SseChecked<'_> {
    async fn checked_write(&self, key: &str, result: Result<()>) -> Result<()> {
        if result.is_ok() {
            self.setup.assert_kms_encrypted(self.store, key).await;
            self.checked.lock().unwrap().push(key.to_owned());
        }
        result
    }
}

type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

// `ObjectStore` is an `async_trait`; this crate does not depend on that macro, so the
// methods are written in the form it expands to.
impl ObjectStore for SseChecked<'_> {
    fn get_version<'s, 'k, 'e, 'f>(&'s self, key: &'k str, etag: &'e str) -> Fut<'f, Bytes>
    where
        's: 'f,
        'k: 'f,
        'e: 'f,
        Self: 'f,
    {
        self.store.get_version(key, etag)
    }

    fn get<'s, 'k, 'f>(&'s self, key: &'k str) -> Fut<'f, Bytes>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.store.get(key)
    }

    fn get_range<'s, 'k, 'f>(&'s self, key: &'k str, range: Range<u64>) -> Fut<'f, Bytes>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.store.get_range(key, range)
    }

    fn head<'s, 'k, 'f>(&'s self, key: &'k str) -> Fut<'f, ObjectMeta>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.store.head(key)
    }

    fn put<'s, 'k, 'f>(&'s self, key: &'k str, data: Bytes) -> Fut<'f, ()>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let result = self.store.put(key, data).await;
            self.checked_write(key, result).await
        })
    }

    fn put_if_absent<'s, 'k, 'f>(&'s self, key: &'k str, data: Bytes) -> Fut<'f, ()>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let result = self.store.put_if_absent(key, data).await;
            self.checked_write(key, result).await
        })
    }

    fn delete<'s, 'k, 'f>(&'s self, key: &'k str) -> Fut<'f, ()>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.store.delete(key)
    }

    fn list<'s, 'k, 'f>(&'s self, prefix: &'k str) -> Fut<'f, Vec<ObjectMeta>>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.store.list(prefix)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_with_sse_kms_on_every_object() {
    let s = setup().await;
    // No default encryption on this bucket: the store's own headers must encrypt.
    let store = s.plain_bucket_store().await;
    probe_if_none_match(&store).await;

    // The check can fail: an object written without the store's headers is not ours.
    s.clients
        .s3
        .put_object()
        .bucket(&s.config.bucket)
        .key(s.s3_key("control/plain"))
        .body(Bytes::from_static(b"plain").into())
        .send()
        .await
        .expect("plain put");
    let control = store.server_side_encryption("control/plain").await.unwrap();
    assert_ne!(
        control,
        (Some("aws:kms".to_owned()), Some(s.key_arn.clone())),
        "a plain PutObject must not look KMS-encrypted"
    );
    store.delete("control/plain").await.unwrap();

    let checked = SseChecked {
        setup: &s,
        store: &store,
        checked: Mutex::new(Vec::new()),
    };
    chroma_core::storage::conformance::suite(&checked).await;
    let checked = checked.checked.into_inner().unwrap();
    // Every write of the suite went through the check (it writes a few dozen objects).
    assert!(checked.len() >= 30, "only {} writes checked", checked.len());
    assert!(checked.iter().all(|k| k.starts_with("conformance/")));
}

#[tokio::test]
async fn ensure_bucket_sets_kms_default_encryption_and_blocks_public_access() {
    let s = setup().await;
    let store = s.store();
    assert!(store.ensure_bucket().await.unwrap(), "creates the bucket");
    assert!(!store.ensure_bucket().await.unwrap(), "then finds it");

    let encryption = s
        .clients
        .s3
        .get_bucket_encryption()
        .bucket(&s.config.bucket)
        .send()
        .await
        .expect("get bucket encryption");
    let rules = encryption
        .server_side_encryption_configuration()
        .expect("encryption configuration")
        .rules();
    assert_eq!(rules.len(), 1);
    let default = rules[0]
        .apply_server_side_encryption_by_default()
        .expect("default encryption");
    assert_eq!(default.sse_algorithm().as_str(), "aws:kms");
    assert_eq!(default.kms_master_key_id(), Some(s.key_arn.as_str()));
    assert_eq!(rules[0].bucket_key_enabled(), Some(true));

    let block = s
        .clients
        .s3
        .get_public_access_block()
        .bucket(&s.config.bucket)
        .send()
        .await
        .expect("get public access block");
    let block = block
        .public_access_block_configuration()
        .expect("public access block");
    assert_eq!(block.block_public_acls(), Some(true));
    assert_eq!(block.ignore_public_acls(), Some(true));
    assert_eq!(block.block_public_policy(), Some(true));
    assert_eq!(block.restrict_public_buckets(), Some(true));

    // Even a write that names no encryption lands encrypted with the key.
    s.clients
        .s3
        .put_object()
        .bucket(&s.config.bucket)
        .key(s.s3_key("plain"))
        .body(Bytes::from_static(b"plain").into())
        .send()
        .await
        .expect("plain put");
    s.assert_kms_encrypted(&store, "plain").await;
}

#[tokio::test]
async fn multipart_uploads() {
    let s = setup().await;
    let store = s
        .plain_bucket_store()
        .await
        .with_multipart(6 * MIB, MIN_PART_SIZE);
    let part = MIN_PART_SIZE as u64;
    let data = pattern(11 * MIB, 1);

    store.put("big/object", data.clone()).await.expect("put");
    assert_eq!(store.get("big/object").await.unwrap(), data);
    assert_eq!(
        store.head("big/object").await.unwrap().size,
        data.len() as u64
    );
    // Three parts (5 + 5 + 1 MiB): S3 marks a multipart ETag with the part count.
    let head = s
        .clients
        .s3
        .head_object()
        .bucket(&s.config.bucket)
        .key(s.s3_key("big/object"))
        .send()
        .await
        .unwrap();
    assert!(
        head.e_tag().unwrap_or_default().ends_with("-3\""),
        "multipart ETag: {:?}",
        head.e_tag()
    );
    s.assert_kms_encrypted(&store, "big/object").await;

    // Ranges across part boundaries, and one clamped at the end.
    for range in [
        part - 10..part + 10,
        2 * part - 1..2 * part + 1,
        0..3 * part,
    ] {
        let got = store.get_range("big/object", range.clone()).await.unwrap();
        let end = range.end.min(data.len() as u64);
        assert_eq!(
            got,
            data.slice(range.start as usize..end as usize),
            "{range:?}"
        );
    }

    // A large put_if_absent onto an existing key fails and leaves the original.
    assert_code(
        store.put_if_absent("big/object", pattern(7 * MIB, 2)).await,
        ErrorCode::AlreadyExists,
    );
    assert_eq!(store.get("big/object").await.unwrap(), data);
    // The refused upload was aborted, not left behind.
    let uploads = s
        .clients
        .s3
        .list_multipart_uploads()
        .bucket(&s.config.bucket)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());

    // Onto a free key it succeeds, encrypted.
    let other = pattern(7 * MIB, 3);
    store
        .put_if_absent("big/other", other.clone())
        .await
        .expect("large put_if_absent");
    assert_eq!(store.get("big/other").await.unwrap(), other);
    s.assert_kms_encrypted(&store, "big/other").await;

    // An object just below the threshold is one PutObject.
    store
        .put("big/small", pattern(6 * MIB - 1, 4))
        .await
        .unwrap();
    let head = s
        .clients
        .s3
        .head_object()
        .bucket(&s.config.bucket)
        .key(s.s3_key("big/small"))
        .send()
        .await
        .unwrap();
    assert!(!head.e_tag().unwrap_or_default().contains('-'));
}

#[tokio::test]
async fn list_pages_and_prefixes_isolate_stores() {
    let s = setup().await;
    let store = s.ensured_store().await.with_page_size(3);
    let mut keys: Vec<String> = (0..10).map(|i| format!("many/{:02}", 9 - i)).collect();
    for (i, key) in keys.iter().enumerate() {
        store.put(key, pattern(i + 1, 0)).await.unwrap();
    }
    keys.sort();
    let listed = store.list("many/").await.unwrap();
    assert_eq!(
        listed.iter().map(|m| m.key.clone()).collect::<Vec<_>>(),
        keys,
        "all pages, in order"
    );
    assert_eq!(listed[0].size, 10, "size of many/00");

    // A second deployment in the same bucket under another prefix.
    let mut other_config = s.config.clone();
    other_config.prefix = "other/".to_owned();
    let other = S3Store::new(&s.clients, &other_config).with_page_size(2);
    other
        .put("many/00", Bytes::from_static(b"other"))
        .await
        .unwrap();
    other
        .put("only-here", Bytes::from_static(b"x"))
        .await
        .unwrap();

    assert_eq!(store.get("many/00").await.unwrap(), pattern(10, 0));
    assert_eq!(
        other.get("many/00").await.unwrap(),
        Bytes::from_static(b"other")
    );
    assert_code(store.get("only-here").await, ErrorCode::NotFound);
    assert_eq!(store.list("").await.unwrap().len(), 10);
    let other_keys: Vec<String> = other
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(other_keys, ["many/00", "only-here"]);

    // In the bucket the keys carry their store's prefix.
    let raw = s
        .clients
        .s3
        .list_objects_v2()
        .bucket(&s.config.bucket)
        .send()
        .await
        .unwrap();
    let raw_keys: Vec<&str> = raw.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(raw_keys.len(), 12);
    assert!(raw_keys.contains(&"deploy/many/00"));
    assert!(raw_keys.contains(&"other/many/00"));
    assert!(raw_keys.contains(&"other/only-here"));

    other.delete("many/00").await.unwrap();
    assert_eq!(store.get("many/00").await.unwrap(), pattern(10, 0));
}

#[tokio::test]
async fn missing_keys_and_bad_ranges() {
    let s = setup().await;
    let store = s.ensured_store().await;
    assert_code(store.get("no/such").await, ErrorCode::NotFound);
    assert_code(store.head("no/such").await, ErrorCode::NotFound);
    assert_code(store.get_range("no/such", 0..1).await, ErrorCode::NotFound);
    assert_code(store.get_range("no/such", 0..0).await, ErrorCode::NotFound);
    assert_code(
        store.server_side_encryption("no/such").await,
        ErrorCode::NotFound,
    );
    store.delete("no/such").await.expect("idempotent delete");

    store.put("ten", pattern(10, 0)).await.unwrap();
    assert_code(
        store.get_range("ten", 11..20).await,
        ErrorCode::InvalidArgument,
    );
    assert_code(
        store.get_range("ten", 11..11).await,
        ErrorCode::InvalidArgument,
    );
    #[allow(clippy::reversed_empty_ranges)]
    let inverted = 5..2;
    assert_code(
        store.get_range("ten", inverted).await,
        ErrorCode::InvalidArgument,
    );
    assert!(store.get_range("ten", 10..20).await.unwrap().is_empty());
    assert_code(
        store.put("", Bytes::new()).await,
        ErrorCode::InvalidArgument,
    );
}

/// A store whose bucket is on an endpoint nothing listens on.
#[tokio::test]
async fn unreachable_endpoint_is_unavailable() {
    let mut config = common::config();
    config.endpoint_url = Some("http://127.0.0.1:1".to_owned());
    config.kms_key_id = "unused".to_owned();
    let store = S3Store::new(&common::clients(&config).await, &config);
    let started = Instant::now();
    for result in [
        store.get("k").await.map(drop),
        store.put("k", Bytes::from_static(b"v")).await,
        store.list("").await.map(drop),
        store.ensure_bucket().await.map(drop),
    ] {
        let err = result.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unavailable, "{err:?}");
        assert!(err.is_retryable());
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// An HTTP server on loopback that answers every request with one S3 error, counting
/// requests (one per connection).
fn fake_s3(status: u16, code: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            // Read the head and the body the request announces, then answer and close.
            let mut request = Vec::new();
            let mut buf = [0u8; 64 * 1024];
            let head_end = loop {
                if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&request[..head_end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body_read = request.len() - head_end;
            while body_read < length {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body_read += n,
                }
            }
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                 <Message>fake</Message><RequestId>fake</RequestId></Error>"
            );
            let _ = write!(
                stream,
                "HTTP/1.1 {status} Fake\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, requests)
}

async fn fake_store(status: u16, code: &'static str) -> (S3Store, Arc<AtomicUsize>) {
    let (url, requests) = fake_s3(status, code);
    let mut config = common::config();
    config.endpoint_url = Some(url);
    config.kms_key_id = "unused".to_owned();
    let store = S3Store::new(&common::clients(&config).await, &config);
    (store, requests)
}

#[tokio::test]
async fn throttling_and_server_errors_are_unavailable_after_retries() {
    for (status, code) in [(503, "SlowDown"), (500, "InternalError")] {
        let (store, requests) = fake_store(status, code).await;
        let err = store.get("k").await.unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::Unavailable,
            "{status} {code}: {err:?}"
        );
        assert_eq!(
            requests.load(Ordering::SeqCst),
            MAX_ATTEMPTS as usize,
            "the SDK retried {status} {code}"
        );
        let err = store.list("").await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unavailable, "{err:?}");
    }
}

#[tokio::test]
async fn other_service_errors_are_internal_and_not_retried() {
    let (store, requests) = fake_store(403, "AccessDenied").await;
    let err = store.put("k", Bytes::from_static(b"v")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal, "{err:?}");
    assert!(err.message().contains("AccessDenied"), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "keeps the SDK error"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn conditional_write_conflicts_are_retried_then_conflict() {
    let (store, requests) = fake_store(409, "ConditionalRequestConflict").await;
    let err = store
        .put_if_absent("k", Bytes::from_static(b"v"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err:?}");
    assert!(err.is_retryable());
    assert!(
        requests.load(Ordering::SeqCst) > 1,
        "the store retried the conflicting write"
    );
}
