//! The KMS key provider: the key provider conformance suite against moto's KMS, the cache of
//! unwrapped keys, the mapping of failures, and an engine running on it.

use std::sync::Arc;
use std::time::Duration;

use chroma_core::aws::kms::{create_key, KmsKeyProvider};
use chroma_core::aws::{AwsClients, AwsConfig};
use chroma_core::catalog::sqlite::SqliteCatalog;
use chroma_core::crypto::{DataKey, EncryptionContext, KeyProvider};
use chroma_core::engine::{Engine, EngineConfig, GetRequest, Include};
use chroma_core::error::{ErrorCode, Result};
use chroma_core::jobs::local::LocalJobs;
use chroma_core::model::validate::WriteBatch;
use chroma_core::model::CollectionConfiguration;
use chroma_core::model::IfExists;
use chroma_core::storage::memory::MemoryStore;
use uuid::Uuid;

use crate::common;

fn ctx() -> EncryptionContext {
    EncryptionContext {
        tenant: "tenant-a".into(),
        database: "db-a".into(),
        collection: Uuid::new_v4(),
    }
}

/// A configuration with a fresh KMS key of its own and the given cache TTL.
async fn setup(ttl: Duration) -> (AwsClients, AwsConfig, KmsKeyProvider) {
    let mut config = common::config();
    config.data_key_ttl = ttl;
    let clients = common::clients(&config).await;
    config.kms_key_id = create_key(&clients, &common::unique("kms-test"))
        .await
        .expect("create key");
    let provider = KmsKeyProvider::new(&clients, &config);
    (clients, config, provider)
}

#[track_caller]
fn assert_code(result: Result<DataKey>, code: ErrorCode) {
    match result {
        Ok(_) => panic!("expected {code:?}, got a key"),
        Err(e) => assert_eq!(e.code(), code, "{e:?}"),
    }
}

#[tokio::test]
async fn create_key_returns_an_arn_with_rotation_enabled() {
    let (clients, config, _) = setup(Duration::ZERO).await;
    assert!(
        config.kms_key_id.starts_with("arn:aws:kms:"),
        "{}",
        config.kms_key_id
    );
    let rotation = clients
        .kms
        .get_key_rotation_status()
        .key_id(&config.kms_key_id)
        .send()
        .await
        .unwrap();
    assert!(rotation.key_rotation_enabled());
}

/// The key provider suite, with and without the cache of unwrapped keys: a second
/// instance on the same key, and one on another key of its own.
async fn conformance(ttl: Duration) {
    let (clients, mut config, provider) = setup(ttl).await;
    let same_key = KmsKeyProvider::new(&clients, &config);
    config.kms_key_id = create_key(&clients, &common::unique("kms-other"))
        .await
        .expect("create the other key");
    let other_key = KmsKeyProvider::new(&clients, &config);
    chroma_core::crypto::conformance::suite(&provider, &same_key, &other_key).await;
}

#[tokio::test]
async fn conformance_without_cache() {
    conformance(Duration::ZERO).await;
}

#[tokio::test]
async fn conformance_with_cache() {
    conformance(Duration::from_secs(300)).await;
}

#[tokio::test]
async fn unwrapped_and_generated_keys_are_cached() {
    let (clients, config, provider) = setup(Duration::from_secs(300)).await;
    let ctx = ctx();
    assert_eq!(provider.cached_keys(), 0);
    let (key, wrapped) = provider.generate_data_key(&ctx).await.unwrap();
    assert_eq!(provider.cached_keys(), 1);
    assert_eq!(
        *provider.unwrap_data_key(&wrapped, &ctx).await.unwrap().0,
        *key.0
    );
    assert_eq!(provider.cached_keys(), 1);

    let fresh = KmsKeyProvider::new(&clients, &config);
    assert_eq!(fresh.cached_keys(), 0);
    assert_eq!(
        *fresh.unwrap_data_key(&wrapped, &ctx).await.unwrap().0,
        *key.0
    );
    assert_eq!(fresh.cached_keys(), 1);
    // A second collection's key is a second entry.
    let ctx2 = self::ctx();
    let (_, wrapped2) = provider.generate_data_key(&ctx2).await.unwrap();
    fresh.unwrap_data_key(&wrapped2, &ctx2).await.unwrap();
    assert_eq!(fresh.cached_keys(), 2);
}

#[tokio::test]
async fn a_cached_key_still_needs_its_context() {
    let (_, _, provider) = setup(Duration::from_secs(300)).await;
    let ctx = ctx();
    let (key, wrapped) = provider.generate_data_key(&ctx).await.unwrap();
    provider.unwrap_data_key(&wrapped, &ctx).await.unwrap();
    assert_eq!(provider.cached_keys(), 1);
    let other = EncryptionContext {
        collection: Uuid::new_v4(),
        ..ctx.clone()
    };
    assert_code(
        provider.unwrap_data_key(&wrapped, &other).await,
        ErrorCode::PermissionDenied,
    );
    let other_tenant = EncryptionContext {
        tenant: "tenant-b".into(),
        ..ctx.clone()
    };
    assert_code(
        provider.unwrap_data_key(&wrapped, &other_tenant).await,
        ErrorCode::PermissionDenied,
    );
    // The refusals cached nothing, and the right context still hits.
    assert_eq!(provider.cached_keys(), 1);
    assert_eq!(
        *provider.unwrap_data_key(&wrapped, &ctx).await.unwrap().0,
        *key.0
    );
}

#[tokio::test]
async fn ttl_zero_caches_nothing() {
    let (_, _, provider) = setup(Duration::ZERO).await;
    let ctx = ctx();
    let (key, wrapped) = provider.generate_data_key(&ctx).await.unwrap();
    assert_eq!(provider.cached_keys(), 0);
    assert_eq!(
        *provider.unwrap_data_key(&wrapped, &ctx).await.unwrap().0,
        *key.0
    );
    assert_eq!(provider.cached_keys(), 0);
}

#[tokio::test]
async fn cached_keys_expire() {
    let (_, _, provider) = setup(Duration::from_secs(1)).await;
    let ctx = ctx();
    let (key, wrapped) = provider.generate_data_key(&ctx).await.unwrap();
    provider.unwrap_data_key(&wrapped, &ctx).await.unwrap();
    assert_eq!(provider.cached_keys(), 1);
    // Well beyond the TTL, so a slow machine cannot make this flaky.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(provider.cached_keys(), 0);
    // An expired key is unwrapped again (and cached again).
    assert_eq!(
        *provider.unwrap_data_key(&wrapped, &ctx).await.unwrap().0,
        *key.0
    );
    assert_eq!(provider.cached_keys(), 1);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable() {
    let (_, mut config, provider) = setup(Duration::ZERO).await;
    let ctx = ctx();
    let (_, wrapped) = provider.generate_data_key(&ctx).await.unwrap();
    // A loopback port nobody listens on: connections are refused at once.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    config.endpoint_url = Some(format!("http://127.0.0.1:{port}"));
    let clients = common::clients(&config).await;
    let unreachable = KmsKeyProvider::new(&clients, &config);
    let e = unreachable.generate_data_key(&ctx).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e:?}");
    assert!(e.is_retryable());
    assert_code(
        unreachable.unwrap_data_key(&wrapped, &ctx).await,
        ErrorCode::Unavailable,
    );
}

#[tokio::test]
async fn a_missing_key_is_a_configuration_error() {
    let (clients, mut config, provider) = setup(Duration::ZERO).await;
    let ctx = ctx();
    let (_, wrapped) = provider.generate_data_key(&ctx).await.unwrap();
    // moto (like KMS) answers NotFoundException for an unknown key id or ARN.
    for missing in [
        format!("arn:aws:kms:us-east-1:123456789012:key/{}", Uuid::new_v4()),
        Uuid::new_v4().to_string(),
    ] {
        config.kms_key_id = missing.clone();
        let absent = KmsKeyProvider::new(&clients, &config);
        let e = absent.generate_data_key(&ctx).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::FailedPrecondition, "{e:?}");
        assert!(e.message().contains(&missing), "{e}");
        assert_code(
            absent.unwrap_data_key(&wrapped, &ctx).await,
            ErrorCode::FailedPrecondition,
        );
    }
}

/// The engine on an in-memory catalog and store with KMS-wrapped data keys: records
/// written by one engine are read back by another that has to unwrap the key.
#[tokio::test]
async fn an_engine_runs_on_kms_keys() {
    let (clients, config, provider) = setup(Duration::from_secs(300)).await;
    let catalog = Arc::new(SqliteCatalog::in_memory().unwrap());
    let store = Arc::new(MemoryStore::new());
    let open = |keys: Arc<KmsKeyProvider>| {
        let (jobs, _requests) = LocalJobs::new();
        Engine::new(
            catalog.clone(),
            store.clone(),
            keys,
            Arc::new(jobs),
            EngineConfig::default(),
        )
    };
    let writer = open(Arc::new(provider));
    let c = writer
        .create_collection(
            "default_tenant",
            "default_database",
            "kms",
            None,
            CollectionConfiguration::default(),
            IfExists::Fail,
        )
        .await
        .unwrap();
    let n = 20;
    writer
        .add(
            &c,
            WriteBatch {
                ids: (0..n).map(|i| format!("r{i}")).collect(),
                embeddings: Some((0..n).map(|i| Some(vec![i as f32, 1.0, 2.0])).collect()),
                documents: Some((0..n).map(|i| Some(format!("doc {i}"))).collect()),
                uris: None,
                metadatas: None,
            },
        )
        .await
        .unwrap();

    let reader_keys = Arc::new(KmsKeyProvider::new(&clients, &config));
    let reader = open(reader_keys.clone());
    let got = reader
        .get(
            &c,
            GetRequest {
                ids: Some(vec!["r3".into(), "r17".into()]),
                include: Include {
                    documents: true,
                    ..Include::default()
                },
                ..GetRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(got.ids, ["r3", "r17"]);
    assert_eq!(
        got.documents.unwrap(),
        [Some("doc 3".to_owned()), Some("doc 17".to_owned())]
    );
    assert_eq!(reader.count(&c).await.unwrap(), n as u64);
    assert_eq!(
        reader_keys.cached_keys(),
        1,
        "the reader unwrapped the key with KMS"
    );
}
