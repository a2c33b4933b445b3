//! The key provider of AWS deployments: data keys are generated and unwrapped by AWS KMS
//! under the one configured key ([`AwsConfig::kms_key_id`]).
//!
//! A data key is bound to its collection by the KMS encryption context
//! `{tenant, database, collection}`: KMS refuses to unwrap it under any other context, and
//! every `Decrypt` names the configured key, so a blob wrapped under another key is
//! refused too. Such refusals are `PermissionDenied` (the provider fails closed, never
//! returning a wrong key); throttling and unreachable endpoints are `Unavailable`.
//!
//! Unwrapped keys are cached in memory for [`AwsConfig::data_key_ttl`] (0 disables the
//! cache), at most [`MAX_CACHED_KEYS`] of them, keyed by the SHA-256 of the wrapped blob
//! *and* the encryption context, so a cache hit is only possible for the exact
//! (blob, context) pair KMS accepted. Cached keys are zeroed when they leave the cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeySpec, KeyUsageType};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{sdk_error, AwsClients, AwsConfig};
use crate::crypto::{DataKey, EncryptionContext, KeyProvider};
use crate::error::{Error, ErrorCode, Result};

/// The most unwrapped data keys kept in memory; the oldest is evicted beyond this.
pub const MAX_CACHED_KEYS: usize = 4096;

/// Wraps and unwraps data keys with AWS KMS, caching unwrapped keys for a while.
pub struct KmsKeyProvider {
    kms: aws_sdk_kms::Client,
    key_id: String,
    ttl: Duration,
    cache: Mutex<KeyCache>,
}

impl std::fmt::Debug for KmsKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsKeyProvider")
            .field("key_id", &self.key_id)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl KmsKeyProvider {
    /// A provider using `config.kms_key_id` and caching keys for `config.data_key_ttl`.
    pub fn new(clients: &AwsClients, config: &AwsConfig) -> Self {
        Self {
            kms: clients.kms.clone(),
            key_id: config.kms_key_id.clone(),
            ttl: config.data_key_ttl,
            cache: Mutex::new(KeyCache::default()),
        }
    }

    /// How many unwrapped data keys are cached now (expired ones are dropped first).
    pub fn cached_keys(&self) -> usize {
        let mut cache = self.lock();
        cache.purge(Instant::now());
        cache.entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        // Every critical section is a single map operation: a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, slot: CacheSlot, key: &DataKey) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        self.lock().insert(slot, key.clone(), now + self.ttl, now);
    }

    fn recall(&self, slot: &CacheSlot) -> Option<DataKey> {
        if self.ttl.is_zero() {
            return None;
        }
        self.lock().get(slot, Instant::now())
    }

    /// Maps a KMS failure: refusals are `PermissionDenied`, a missing key is a
    /// configuration problem, transient failures are `Unavailable`.
    fn error<E>(
        &self,
        operation: &str,
        ctx: &EncryptionContext,
        err: SdkError<E, HttpResponse>,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let kms_code = err.code().unwrap_or_default().to_owned();
        let (code, message) = match kms_code.as_str() {
            "InvalidCiphertextException"
            | "IncorrectKeyException"
            | "AccessDeniedException"
            | "KMSInvalidStateException"
            | "DisabledException"
            | "InvalidKeyUsageException" => (
                ErrorCode::PermissionDenied,
                format!("the key service refused access to the collection's data key ({kms_code})"),
            ),
            "NotFoundException" => (
                ErrorCode::FailedPrecondition,
                format!(
                    "KMS key {} does not exist (check CHROMA_KMS_KEY_ID)",
                    self.key_id
                ),
            ),
            "ThrottlingException"
            | "KMSInternalException"
            | "DependencyTimeoutException"
            | "KeyUnavailableException" => (
                ErrorCode::Unavailable,
                format!("KMS {operation} is unavailable ({kms_code})"),
            ),
            _ => return sdk_error(&format!("KMS {operation}"), err),
        };
        // A refusal, as clients are told it, names neither the key nor the collection; the
        // log does (the HTTP layer shows a configuration error to no client at all).
        tracing::warn!(
            operation,
            code = %kms_code,
            kms_key = %self.key_id,
            tenant = %ctx.tenant,
            database = %ctx.database,
            collection = %ctx.collection,
            "KMS call failed"
        );
        Error::with_source(code, message, err)
    }
}

/// The KMS encryption context of a data key.
fn kms_context(ctx: &EncryptionContext) -> HashMap<String, String> {
    HashMap::from([
        ("tenant".to_owned(), ctx.tenant.clone()),
        ("database".to_owned(), ctx.database.clone()),
        ("collection".to_owned(), ctx.collection.to_string()),
    ])
}

/// Moves the plaintext out of a KMS response into a [`DataKey`], zeroing the copy the
/// `Blob` held. (Copies inside the SDK's HTTP stack are beyond our reach.)
fn take_plaintext(blob: Option<Blob>, operation: &str) -> Result<DataKey> {
    let bytes = Zeroizing::new(blob.map(Blob::into_inner).unwrap_or_default());
    if bytes.len() != 32 {
        return Err(Error::internal(format!(
            "KMS {operation} returned a {}-byte data key, expected 32",
            bytes.len()
        )));
    }
    let mut key = DataKey(Zeroizing::new([0u8; 32]));
    key.0.copy_from_slice(&bytes);
    Ok(key)
}

#[async_trait]
impl KeyProvider for KmsKeyProvider {
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<(DataKey, Vec<u8>)> {
        let mut out = self
            .kms
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(kms_context(ctx)))
            .send()
            .await
            .map_err(|e| self.error("GenerateDataKey", ctx, e))?;
        let key = take_plaintext(out.plaintext.take(), "GenerateDataKey")?;
        let wrapped = out
            .ciphertext_blob
            .take()
            .map(Blob::into_inner)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| Error::internal("KMS GenerateDataKey returned no ciphertext blob"))?;
        self.remember(CacheSlot::new(&wrapped, ctx), &key);
        Ok((key, wrapped))
    }

    async fn unwrap_data_key(&self, wrapped: &[u8], ctx: &EncryptionContext) -> Result<DataKey> {
        if wrapped.is_empty() {
            // KMS would reject an empty blob as an invalid request (an internal error
            // here); like any blob that is not a wrapped key, it is a refusal.
            return Err(Error::new(
                ErrorCode::PermissionDenied,
                "the key service refused access to the collection's data key (empty wrapped key)",
            ));
        }
        let slot = CacheSlot::new(wrapped, ctx);
        if let Some(key) = self.recall(&slot) {
            return Ok(key);
        }
        // The lock is not held across the call: concurrent misses for the same key each
        // ask KMS and the last answer stays cached, which is harmless (same key).
        let mut out = self
            .kms
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(Some(kms_context(ctx)))
            .send()
            .await
            .map_err(|e| self.error("Decrypt", ctx, e))?;
        let key = take_plaintext(out.plaintext.take(), "Decrypt")?;
        drop(out);
        self.remember(slot, &key);
        Ok(key)
    }
}

/// Creates a symmetric encryption key with yearly automatic rotation and returns its ARN.
pub async fn create_key(clients: &AwsClients, description: &str) -> Result<String> {
    let out = clients
        .kms
        .create_key()
        .description(description)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .key_spec(KeySpec::SymmetricDefault)
        .send()
        .await
        .map_err(|e| sdk_error("KMS CreateKey", e))?;
    let arn = out
        .key_metadata
        .and_then(|m| m.arn)
        .ok_or_else(|| Error::internal("KMS CreateKey returned no key ARN"))?;
    match clients.kms.enable_key_rotation().key_id(&arn).send().await {
        Ok(_) => {}
        // Keys in custom key stores cannot rotate automatically.
        Err(e) if e.code() == Some("UnsupportedOperationException") => {
            tracing::warn!(key = %arn, "KMS key rotation is not supported for this key");
        }
        Err(e) => return Err(sdk_error("KMS EnableKeyRotation", e)),
    }
    Ok(arn)
}

/// Where a data key is cached: the wrapped blob's digest and the full context, so an
/// entry is only found for the exact pair KMS unwrapped (or generated).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheSlot {
    wrapped_sha256: [u8; 32],
    tenant: String,
    database: String,
    collection: Uuid,
}

impl CacheSlot {
    fn new(wrapped: &[u8], ctx: &EncryptionContext) -> Self {
        Self {
            wrapped_sha256: Sha256::digest(wrapped).into(),
            tenant: ctx.tenant.clone(),
            database: ctx.database.clone(),
            collection: ctx.collection,
        }
    }
}

struct Cached {
    key: DataKey,
    expires: Instant,
}

/// Unwrapped keys with their expiry; every key is a zeroizing [`DataKey`], so removing an
/// entry (expiry, eviction, drop of the provider) zeroes its plaintext.
#[derive(Default)]
struct KeyCache {
    entries: HashMap<CacheSlot, Cached>,
}

impl KeyCache {
    fn get(&mut self, slot: &CacheSlot, now: Instant) -> Option<DataKey> {
        match self.entries.get(slot) {
            Some(c) if c.expires > now => Some(c.key.clone()),
            Some(_) => {
                self.entries.remove(slot);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, slot: CacheSlot, key: DataKey, expires: Instant, now: Instant) {
        self.purge(now);
        if !self.entries.contains_key(&slot) && self.entries.len() >= MAX_CACHED_KEYS {
            // One TTL for all: the earliest expiry is the oldest entry.
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, c)| c.expires)
                .map(|(s, _)| s.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(slot, Cached { key, expires });
    }

    fn purge(&mut self, now: Instant) {
        self.entries.retain(|_, c| c.expires > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(n: u128) -> EncryptionContext {
        EncryptionContext {
            tenant: "t".into(),
            database: "d".into(),
            collection: Uuid::from_u128(n),
        }
    }

    fn key(byte: u8) -> DataKey {
        DataKey(Zeroizing::new([byte; 32]))
    }

    #[test]
    fn cache_is_keyed_by_blob_and_context_and_expires() {
        let mut cache = KeyCache::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        cache.insert(CacheSlot::new(b"blob", &ctx(1)), key(1), later, now);
        assert_eq!(
            *cache.get(&CacheSlot::new(b"blob", &ctx(1)), now).unwrap().0,
            [1; 32]
        );
        assert!(cache.get(&CacheSlot::new(b"blob", &ctx(2)), now).is_none());
        assert!(cache.get(&CacheSlot::new(b"blob2", &ctx(1)), now).is_none());
        let mut other_tenant = ctx(1);
        other_tenant.tenant = "u".into();
        assert!(cache
            .get(&CacheSlot::new(b"blob", &other_tenant), now)
            .is_none());
        assert!(cache
            .get(&CacheSlot::new(b"blob", &ctx(1)), later)
            .is_none());
        assert!(cache.entries.is_empty(), "an expired entry is dropped");
    }

    #[test]
    fn cache_evicts_the_oldest_when_full() {
        let mut cache = KeyCache::default();
        let now = Instant::now();
        for i in 0..=MAX_CACHED_KEYS as u128 {
            let expires = now + Duration::from_secs(60) + Duration::from_millis(i as u64);
            cache.insert(CacheSlot::new(b"b", &ctx(i)), key(1), expires, now);
        }
        assert_eq!(cache.entries.len(), MAX_CACHED_KEYS);
        assert!(cache.get(&CacheSlot::new(b"b", &ctx(0)), now).is_none());
        assert!(cache.get(&CacheSlot::new(b"b", &ctx(1)), now).is_some());
        assert!(cache
            .get(&CacheSlot::new(b"b", &ctx(MAX_CACHED_KEYS as u128)), now)
            .is_some());
    }
}
