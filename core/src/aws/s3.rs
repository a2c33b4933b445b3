//! The object store port on Amazon S3: [`S3Store`].
//!
//! One store is one bucket and a key prefix (`CHROMA_PREFIX`): every engine key is stored
//! as `{prefix}{key}`, and listings strip the prefix again, so deployments sharing a
//! bucket never see each other's objects.
//!
//! How the contract of [`ObjectStore`] maps onto S3:
//! - `put` is one `PutObject`, or a multipart upload for objects of at least
//!   [`MULTIPART_THRESHOLD`] bytes (parts of [`PART_SIZE`], a few in flight at once). S3
//!   makes an object visible only when its upload completes, so readers never see a prefix;
//!   a multipart upload that fails is aborted. Uploads that a crash or a cancelled write
//!   abandons are invisible but billed until an `AbortIncompleteMultipartUpload` lifecycle
//!   rule on the bucket removes them.
//! - `put_if_absent` sends `If-None-Match: *` on `PutObject` or on
//!   `CompleteMultipartUpload`; S3 checks and writes atomically and answers 412
//!   `PreconditionFailed` when the key exists (→ `AlreadyExists`). Two conditional writes
//!   racing on one key may get 409 `ConditionalRequestConflict`; the whole write is then
//!   retried a few times (S3 asks for a fresh multipart upload in that case) and reported as
//!   a retryable `Conflict` if the race persists. A caveat S3 shares with every conditional
//!   write over a retrying client: if a write succeeds but its response is lost, the SDK's
//!   retry finds the object and the caller sees `AlreadyExists` for its own write.
//! - `get_range` sends an HTTP `Range`, which S3 clamps to the object's end. HTTP cannot
//!   ask for an empty range, and S3 answers 416 `InvalidRange` for a range starting at or
//!   past the end; both cases take a `HeadObject` to tell an empty read (a range starting
//!   exactly at the end) from `InvalidArgument` (past the end) and from `NotFound`.
//! - `list` pages through `ListObjectsV2` with continuation tokens and sorts by key.
//! - `delete` is `DeleteObject`, which succeeds for missing keys.
//!
//! Every write asks for server-side encryption with the configured KMS key
//! (`ServerSideEncryption=aws:kms`, `SSEKMSKeyId`, `BucketKeyEnabled=true`) instead of
//! relying on the bucket's default, so objects are encrypted with the right key even in a
//! bucket someone else configured.
//!
//! Failures are recognised by S3 error code and HTTP status, never by message text:
//! `NoSuchKey`/404 → `NotFound`, 412 → `AlreadyExists`, 409 → `Conflict`, throttling,
//! 5xx, timeouts and connection failures (once the SDK's own retries with backoff and
//! jitter are spent, see [`super::AwsClients::connect`]) → `Unavailable`, anything else →
//! `Internal` with the SDK error as its source.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand::Rng;

use super::{sdk_error, AwsClients, AwsConfig};
use crate::error::{Error, ErrorCode, Result};
use crate::storage::clamp_range;
use crate::storage::{bare_etag, version_gone, ObjectMeta, ObjectStore};

/// Objects of at least this many bytes are written with a multipart upload.
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;

/// The size of each part of a multipart upload (the last one may be smaller).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// S3's smallest allowed part, except for the last one.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// S3's largest number of parts in one upload; bigger objects get bigger parts.
const MAX_PARTS: usize = 10_000;

/// Parts uploaded at the same time.
const PART_CONCURRENCY: usize = 4;

/// Keys per `ListObjectsV2` page (S3's maximum).
pub const DEFAULT_PAGE_SIZE: usize = 1000;

/// S3's longest key, in bytes.
const MAX_KEY_LEN: usize = 1024;

/// Attempts of a conditional write that keeps meeting 409 `ConditionalRequestConflict`.
const CONFLICT_ATTEMPTS: u32 = 4;

/// An [`ObjectStore`] in an S3 bucket, under a key prefix, encrypting every object with a
/// KMS key.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    kms_key_id: String,
    page_size: usize,
    multipart_threshold: usize,
    part_size: usize,
}

impl S3Store {
    /// A store in `config.bucket` under `config.prefix`, encrypting with
    /// `config.kms_key_id`. Makes no request; see [`S3Store::ensure_bucket`].
    pub fn new(clients: &AwsClients, config: &AwsConfig) -> Self {
        Self {
            client: clients.s3.clone(),
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
            kms_key_id: config.kms_key_id.clone(),
            page_size: DEFAULT_PAGE_SIZE,
            multipart_threshold: MULTIPART_THRESHOLD,
            part_size: PART_SIZE,
        }
    }

    /// Lists `page_size` keys per request (1 to 1000) instead of 1000.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        assert!(
            (1..=DEFAULT_PAGE_SIZE).contains(&page_size),
            "page size {page_size} is not between 1 and {DEFAULT_PAGE_SIZE}"
        );
        self.page_size = page_size;
        self
    }

    /// Writes objects of at least `threshold` bytes in parts of `part_size` bytes instead of
    /// [`MULTIPART_THRESHOLD`] and [`PART_SIZE`]. Panics if `part_size` is below S3's
    /// minimum ([`MIN_PART_SIZE`]) or `threshold` below `part_size`.
    pub fn with_multipart(mut self, threshold: usize, part_size: usize) -> Self {
        assert!(
            part_size >= MIN_PART_SIZE && threshold >= part_size,
            "multipart parts must be at least {MIN_PART_SIZE} bytes and the threshold at \
             least a part (got threshold {threshold}, part size {part_size})"
        );
        self.multipart_threshold = threshold;
        self.part_size = part_size;
        self
    }

    /// Creates the bucket if it does not exist, with default encryption by the configured
    /// KMS key (bucket keys on) and all public access blocked; returns whether it created
    /// it. An existing bucket is left as it is. If configuring a new bucket fails, the
    /// (empty) bucket is deleted again, so that a retry starts over. (moto 5.2.5 accepts
    /// both settings and reports them back, so the tests check them.)
    pub async fn ensure_bucket(&self) -> Result<bool> {
        let bucket = &self.bucket;
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => return Ok(false),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(s3_error(&format!("s3 HeadBucket {bucket}"), e)),
        }
        let mut create = self.client.create_bucket().bucket(bucket);
        // us-east-1 is the default location and must not be named.
        if let Some(region) = self.client.config().region() {
            if region.as_ref() != "us-east-1" {
                create = create.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(region.as_ref()))
                        .build(),
                );
            }
        }
        match create.send().await {
            Ok(_) => {}
            // Created concurrently by another process of ours, which configures it.
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => return Ok(false),
            Err(e) if e.code() == Some("BucketAlreadyExists") => {
                return Err(Error::with_source(
                    ErrorCode::AlreadyExists,
                    format!("bucket {bucket} belongs to another account"),
                    e,
                ))
            }
            Err(e) => return Err(s3_error(&format!("s3 CreateBucket {bucket}"), e)),
        }
        if let Err(e) = self.configure_new_bucket().await {
            if let Err(d) = self.client.delete_bucket().bucket(bucket).send().await {
                tracing::warn!(bucket, error = %d, "cannot delete a bucket left unconfigured");
            }
            return Err(e);
        }
        Ok(true)
    }

    async fn configure_new_bucket(&self) -> Result<()> {
        let bucket = &self.bucket;
        let by_default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::AwsKms)
            .kms_master_key_id(&self.kms_key_id)
            .build()
            .map_err(|e| Error::internal_from("bucket encryption settings", e))?;
        let encryption = ServerSideEncryptionConfiguration::builder()
            .rules(
                ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(by_default)
                    .bucket_key_enabled(true)
                    .build(),
            )
            .build()
            .map_err(|e| Error::internal_from("bucket encryption settings", e))?;
        self.client
            .put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(encryption)
            .send()
            .await
            .map_err(|e| s3_error(&format!("s3 PutBucketEncryption {bucket}"), e))?;
        self.client
            .put_public_access_block()
            .bucket(bucket)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error(&format!("s3 PutPublicAccessBlock {bucket}"), e))?;
        Ok(())
    }

    /// How the object `key` is encrypted at rest, as S3 reports it: the algorithm
    /// (`aws:kms`, `AES256`, …) and the KMS key's ARN. For tests and operators.
    pub async fn server_side_encryption(
        &self,
        key: &str,
    ) -> Result<(Option<String>, Option<String>)> {
        let head = self.head_object(key).await?;
        Ok((
            head.server_side_encryption().map(|s| s.as_str().to_owned()),
            head.ssekms_key_id().map(str::to_owned),
        ))
    }

    /// The S3 key of an engine key.
    fn full_key(&self, key: &str) -> Result<String> {
        if key.is_empty() {
            return Err(Error::invalid("object key is empty"));
        }
        let full = format!("{}{key}", self.prefix);
        if full.len() > MAX_KEY_LEN {
            return Err(Error::invalid(format!(
                "object key {key} is longer than S3 allows ({MAX_KEY_LEN} bytes with the prefix)"
            )));
        }
        Ok(full)
    }

    fn location(&self, full_key: &str) -> String {
        format!("{}/{full_key}", self.bucket)
    }

    async fn head_object(&self, key: &str) -> Result<HeadObjectOutput> {
        let full = self.full_key(key)?;
        self.client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    not_found(key)
                } else {
                    s3_error(&format!("s3 HeadObject {}", self.location(&full)), e)
                }
            })
    }

    /// Writes `data` to `key`, only if the key is free when `if_absent`; retries the whole
    /// write when conditional writes collide (409).
    async fn write(&self, key: &str, data: Bytes, if_absent: bool) -> Result<()> {
        let full = self.full_key(key)?;
        let mut attempt = 1;
        loop {
            let result = if data.len() >= self.multipart_threshold {
                self.put_multipart(key, &full, data.clone(), if_absent)
                    .await
            } else {
                self.put_single(key, &full, data.clone(), if_absent).await
            };
            match result {
                Err(e) if e.code() == ErrorCode::Conflict && attempt < CONFLICT_ATTEMPTS => {
                    let cap = 50u64 << attempt;
                    let wait = rand::thread_rng().gen_range(cap / 2..=cap);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn put_single(&self, key: &str, full: &str, data: Bytes, if_absent: bool) -> Result<()> {
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(&self.kms_key_id)
            .bucket_key_enabled(true)
            .body(ByteStream::from(data));
        if if_absent {
            put = put.if_none_match("*");
        }
        put.send()
            .await
            .map(drop)
            .map_err(|e| self.write_error("PutObject", key, full, e))
    }

    async fn put_multipart(
        &self,
        key: &str,
        full: &str,
        data: Bytes,
        if_absent: bool,
    ) -> Result<()> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(&self.kms_key_id)
            .bucket_key_enabled(true)
            .send()
            .await
            .map_err(|e| {
                s3_error(
                    &format!("s3 CreateMultipartUpload {}", self.location(full)),
                    e,
                )
            })?;
        let upload_id = created.upload_id().ok_or_else(|| {
            Error::internal(format!(
                "s3 CreateMultipartUpload {} returned no upload id",
                self.location(full)
            ))
        })?;
        let result = self
            .upload_and_complete(key, full, upload_id, data, if_absent)
            .await;
        if result.is_err() {
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(upload_id)
                .send()
                .await;
            if let Err(e) = abort {
                tracing::warn!(
                    object = %self.location(full),
                    upload_id,
                    error = %e,
                    "cannot abort a failed multipart upload"
                );
            }
        }
        result
    }

    async fn upload_and_complete(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        data: Bytes,
        if_absent: bool,
    ) -> Result<()> {
        let part_size = self.part_size.max(data.len().div_ceil(MAX_PARTS));
        let chunks = (0..data.len())
            .step_by(part_size)
            .map(|start| data.slice(start..(start + part_size).min(data.len())));
        let parts: Vec<CompletedPart> = futures::stream::iter(chunks.enumerate())
            .map(|(i, chunk)| async move {
                let number = i as i32 + 1;
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(chunk))
                    .send()
                    .await
                    .map_err(|e| {
                        s3_error(
                            &format!("s3 UploadPart {number} of {}", self.location(full)),
                            e,
                        )
                    })?;
                Ok::<_, Error>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .build(),
                )
            })
            .buffered(PART_CONCURRENCY)
            .try_collect()
            .await?;
        let mut complete = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if if_absent {
            complete = complete.if_none_match("*");
        }
        complete
            .send()
            .await
            .map(drop)
            .map_err(|e| self.write_error("CompleteMultipartUpload", key, full, e))
    }

    async fn read_body(&self, full: &str, body: ByteStream) -> Result<Bytes> {
        body.collect()
            .await
            .map(|data| data.into_bytes())
            .map_err(|e| {
                // The connection broke while the object streamed in.
                Error::with_source(
                    ErrorCode::Unavailable,
                    format!(
                        "s3 GetObject {}: reading the body failed",
                        self.location(full)
                    ),
                    e,
                )
            })
    }

    /// Maps the failure of a (possibly conditional) write.
    fn write_error<E>(
        &self,
        operation: &str,
        key: &str,
        full: &str,
        err: SdkError<E, HttpResponse>,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if err.code() == Some("PreconditionFailed") || status(&err) == Some(412) {
            Error::already_exists(format!("object {key} already exists"))
        } else if err.code() == Some("ConditionalRequestConflict") || status(&err) == Some(409) {
            Error::with_source(
                ErrorCode::Conflict,
                format!("a concurrent conditional write to object {key} interfered"),
                err,
            )
        } else {
            s3_error(&format!("s3 {operation} {}", self.location(full)), err)
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn get_version(&self, key: &str, etag: &str) -> Result<Bytes> {
        let full = self.full_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            // If-Match takes the quoted form.
            .if_match(format!("\"{}\"", bare_etag(etag)))
            .send()
            .await
            .map_err(|e| {
                if is_not_found(&e) || status(&e) == Some(412) {
                    version_gone(key, etag)
                } else {
                    s3_error(&format!("s3 GetObject {}", self.location(&full)), e)
                }
            })?;
        self.read_body(&full, out.body).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let full = self.full_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    not_found(key)
                } else {
                    s3_error(&format!("s3 GetObject {}", self.location(&full)), e)
                }
            })?;
        self.read_body(&full, out.body).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        if range.start >= range.end {
            // Empty (or inverted) ranges cannot be said in HTTP; the object's size decides.
            let size = self.head(key).await?.size;
            clamp_range(key, &range, size)?;
            return Ok(Bytes::new());
        }
        let full = self.full_key(key)?;
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await;
        match result {
            Ok(out) => {
                let partial = out.content_range().is_some();
                let body = self.read_body(&full, out.body).await?;
                if partial {
                    Ok(body)
                } else {
                    // The server ignored the range and sent the whole object.
                    let r = clamp_range(key, &range, body.len() as u64)?;
                    Ok(body.slice(r.start as usize..r.end as usize))
                }
            }
            Err(e) if is_not_found(&e) => Err(not_found(key)),
            Err(e) if e.code() == Some("InvalidRange") || status(&e) == Some(416) => {
                // The range starts at or past the end: empty at the end, an error past it.
                let size = self.head(key).await?.size;
                let r = clamp_range(key, &range, size)?;
                if r.is_empty() {
                    Ok(Bytes::new())
                } else {
                    Err(Error::conflict(format!(
                        "object {key} changed while it was read"
                    )))
                }
            }
            Err(e) => Err(s3_error(
                &format!("s3 GetObject (range) {}", self.location(&full)),
                e,
            )),
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let head = self.head_object(key).await?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: head.content_length().unwrap_or(0).max(0) as u64,
            last_modified: system_time(head.last_modified()),
            etag: bare_etag(head.e_tag().unwrap_or_default()).to_owned(),
        })
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.write(key, data, false).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<()> {
        self.write(key, data, true).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // S3 answers 204 for a missing key; some implementations say 404.
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(s3_error(
                &format!("s3 DeleteObject {}", self.location(&full)),
                e,
            )),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .max_keys(self.page_size as i32)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    s3_error(
                        &format!("s3 ListObjectsV2 {}", self.location(&full_prefix)),
                        e,
                    )
                })?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    return Err(Error::internal(format!(
                        "s3 ListObjectsV2 {} returned a key outside the prefix: {:?}",
                        self.location(&full_prefix),
                        object.key()
                    )));
                };
                objects.push(ObjectMeta {
                    key: key.to_owned(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: system_time(object.last_modified()),
                    etag: bare_etag(object.e_tag().unwrap_or_default()).to_owned(),
                });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) => token = Some(next.to_owned()),
                (Some(true), None) => {
                    return Err(Error::internal(format!(
                        "s3 ListObjectsV2 {} is truncated without a continuation token",
                        self.location(&full_prefix)
                    )))
                }
                _ => break,
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }
}

fn not_found(key: &str) -> Error {
    Error::not_found(format!("object {key} not found"))
}

fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// Whether S3 says the key (or, for `HeadObject`, which has no error body, possibly the
/// bucket) does not exist.
fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err.code() {
        Some(code) => matches!(code, "NoSuchKey" | "NotFound"),
        None => status(err) == Some(404),
    }
}

/// Maps an S3 failure no operation claimed as [`sdk_error`] does (throttling, 5xx,
/// timeouts and connection failures are `Unavailable`); the message names the operation,
/// the S3 error code and the status.
fn s3_error<E>(operation: &str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = status(&err);
    let code = err.code().map(str::to_owned);
    let operation = match (&code, status) {
        (Some(code), Some(status)) => format!("{operation} ({code}, HTTP {status})"),
        (None, Some(status)) => format!("{operation} (HTTP {status})"),
        _ => operation.to_owned(),
    };
    sdk_error(&operation, err)
}

fn system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}
