//! The conformance suite every [`KeyProvider`] implementation must pass.
//!
//! Built for tests of this crate and, with the `testing` feature, of other crates (the
//! KMS provider runs it against an emulator). It only generates and unwraps data keys,
//! under contexts of tenants and databases named `conformance-{ulid}`, so it can share a
//! master key with other tests.

use futures::future::join_all;
use uuid::Uuid;

use super::{DataKey, EncryptionContext, KeyProvider};
use crate::error::{ErrorCode, Result};

/// Runs every check of the [`KeyProvider`] contract; panics on the first violation.
///
/// `provider` and `same_master_key` must use one master key (two instances, so a cache
/// of one does not answer for the other); `other_master_key` must use another one.
pub async fn suite(
    provider: &dyn KeyProvider,
    same_master_key: &dyn KeyProvider,
    other_master_key: &dyn KeyProvider,
) {
    round_trip(provider, same_master_key).await;
    fresh_keys(provider).await;
    other_contexts(provider).await;
    tampered_blobs(provider).await;
    other_master_key_refused(provider, other_master_key).await;
    concurrent_use(provider, same_master_key).await;
}

#[track_caller]
fn assert_denied(result: Result<DataKey>, what: &str) {
    match result {
        Ok(_) => panic!("{what}: expected PermissionDenied, got a key"),
        Err(e) => assert_eq!(e.code(), ErrorCode::PermissionDenied, "{what}: {e:?}"),
    }
}

/// A context of its own: a fresh tenant, database and collection.
fn context() -> EncryptionContext {
    let unique = || {
        format!(
            "conformance-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        )
    };
    EncryptionContext {
        tenant: unique(),
        database: unique(),
        collection: Uuid::new_v4(),
    }
}

async fn generate(provider: &dyn KeyProvider, ctx: &EncryptionContext) -> (DataKey, Vec<u8>) {
    provider.generate_data_key(ctx).await.expect("generate")
}

async fn round_trip(provider: &dyn KeyProvider, same_master_key: &dyn KeyProvider) {
    let ctx = context();
    let (key, wrapped) = generate(provider, &ctx).await;
    assert!(!wrapped.is_empty(), "no wrapped form");
    assert!(
        !wrapped.windows(32).any(|w| w == key.0.as_slice()),
        "the wrapped form holds the plaintext key"
    );
    for (what, unwrapper) in [
        ("the provider", provider),
        ("another instance on the same master key", same_master_key),
    ] {
        for attempt in 0..2 {
            let back = unwrapper
                .unwrap_data_key(&wrapped, &ctx)
                .await
                .unwrap_or_else(|e| panic!("unwrap by {what} (attempt {attempt}): {e:?}"));
            assert_eq!(
                *back.0, *key.0,
                "key unwrapped by {what} (attempt {attempt})"
            );
        }
    }
    // The way back works from the other instance too.
    let (key, wrapped) = generate(same_master_key, &ctx).await;
    let back = provider.unwrap_data_key(&wrapped, &ctx).await;
    assert_eq!(*back.expect("unwrap the other's key").0, *key.0);
}

/// Every call makes a new random key, also for one context.
async fn fresh_keys(provider: &dyn KeyProvider) {
    let ctx = context();
    let other = context();
    let mut keys = Vec::new();
    for ctx in [&ctx, &ctx, &ctx, &ctx, &other, &other] {
        keys.push(generate(provider, ctx).await);
    }
    for (i, (key, wrapped)) in keys.iter().enumerate() {
        assert_ne!(*key.0, [0u8; 32], "key {i} is all zeroes");
        for (j, (key2, wrapped2)) in keys.iter().enumerate().skip(i + 1) {
            assert_ne!(*key.0, *key2.0, "keys {i} and {j} are equal");
            assert_ne!(wrapped, wrapped2, "wrapped keys {i} and {j} are equal");
        }
    }
    // Each still unwraps to its own key.
    for (i, (key, wrapped)) in keys.iter().enumerate() {
        let ctx = if i < 4 { &ctx } else { &other };
        let back = provider.unwrap_data_key(wrapped, ctx).await;
        assert_eq!(*back.expect("unwrap").0, *key.0, "key {i}");
    }
}

/// Unwrapping under any context but the one the key was generated for fails.
async fn other_contexts(provider: &dyn KeyProvider) {
    let ctx = context();
    let (key, wrapped) = generate(provider, &ctx).await;
    let neighbour = context();
    let others = [
        (
            "another tenant",
            EncryptionContext {
                tenant: neighbour.tenant.clone(),
                ..ctx.clone()
            },
        ),
        (
            "another database",
            EncryptionContext {
                database: neighbour.database.clone(),
                ..ctx.clone()
            },
        ),
        (
            "another collection",
            EncryptionContext {
                collection: neighbour.collection,
                ..ctx.clone()
            },
        ),
        (
            "tenant and database swapped",
            EncryptionContext {
                tenant: ctx.database.clone(),
                database: ctx.tenant.clone(),
                ..ctx.clone()
            },
        ),
        (
            "a tenant in upper case",
            EncryptionContext {
                tenant: ctx.tenant.to_uppercase(),
                ..ctx.clone()
            },
        ),
        (
            "a longer database name",
            EncryptionContext {
                database: format!("{}x", ctx.database),
                ..ctx.clone()
            },
        ),
        (
            "a shorter tenant name",
            EncryptionContext {
                tenant: ctx.tenant[..ctx.tenant.len() - 1].to_owned(),
                ..ctx.clone()
            },
        ),
        ("everything else", neighbour),
    ];
    for (what, other) in &others {
        assert_denied(provider.unwrap_data_key(&wrapped, other).await, what);
    }
    // The refusals change nothing for the right context.
    let back = provider.unwrap_data_key(&wrapped, &ctx).await;
    assert_eq!(*back.expect("unwrap after refusals").0, *key.0);
}

/// A wrapped key changed in any way fails to unwrap.
async fn tampered_blobs(provider: &dyn KeyProvider) {
    let ctx = context();
    let (key, wrapped) = generate(provider, &ctx).await;
    for at in 0..wrapped.len() {
        for flip in [0x01, 0x80] {
            let mut tampered = wrapped.clone();
            tampered[at] ^= flip;
            let what = format!("byte {at} of {} flipped with {flip:#04x}", wrapped.len());
            assert_denied(provider.unwrap_data_key(&tampered, &ctx).await, &what);
        }
    }
    let n = wrapped.len();
    let mut extended = wrapped.clone();
    extended.push(0);
    for (what, blob) in [
        ("the last byte cut off", &wrapped[..n - 1]),
        ("the first byte cut off", &wrapped[1..]),
        ("cut in half", &wrapped[..n / 2]),
        ("a byte appended", &extended[..]),
        ("an empty blob", &[][..]),
    ] {
        assert_denied(provider.unwrap_data_key(blob, &ctx).await, what);
    }
    // The original is still fine.
    let back = provider.unwrap_data_key(&wrapped, &ctx).await;
    assert_eq!(*back.expect("unwrap the original").0, *key.0);
}

/// A key wrapped under one master key does not unwrap under another, either way.
async fn other_master_key_refused(provider: &dyn KeyProvider, other: &dyn KeyProvider) {
    let ctx = context();
    let (key, wrapped) = generate(provider, &ctx).await;
    let (other_key, other_wrapped) = generate(other, &ctx).await;
    assert_ne!(*key.0, *other_key.0);
    assert_denied(
        other.unwrap_data_key(&wrapped, &ctx).await,
        "the other master key unwrapping this one's key",
    );
    assert_denied(
        provider.unwrap_data_key(&other_wrapped, &ctx).await,
        "this master key unwrapping the other's key",
    );
    // Each still unwraps its own.
    let back = other.unwrap_data_key(&other_wrapped, &ctx).await;
    assert_eq!(*back.expect("the other unwraps its own").0, *other_key.0);
    let back = provider.unwrap_data_key(&wrapped, &ctx).await;
    assert_eq!(*back.expect("unwrap its own").0, *key.0);
}

/// Many callers at once, each on a collection of its own.
async fn concurrent_use(provider: &dyn KeyProvider, same_master_key: &dyn KeyProvider) {
    let contexts: Vec<EncryptionContext> = (0..16).map(|_| context()).collect();
    let generated = join_all(contexts.iter().map(|ctx| generate(provider, ctx))).await;
    let unwrapped = join_all(
        contexts
            .iter()
            .zip(&generated)
            .map(|(ctx, (_, wrapped))| same_master_key.unwrap_data_key(wrapped, ctx)),
    )
    .await;
    for (i, ((key, _), back)) in generated.iter().zip(unwrapped).enumerate() {
        assert_eq!(
            *back.expect("concurrent unwrap").0,
            *key.0,
            "collection {i}"
        );
    }
    let mut keys: Vec<[u8; 32]> = generated.iter().map(|(k, _)| *k.0).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        keys.len(),
        contexts.len(),
        "concurrent calls made equal keys"
    );
}
