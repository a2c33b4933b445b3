//! Encryption at rest: the key provider port (wraps per-collection data keys) and the
//! envelope format every stored object is written in.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod envelope;
pub mod local;
pub mod sealed;

use async_trait::async_trait;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::Result;

/// A collection's 256-bit data key, in memory only; zeroed on drop.
#[derive(Clone)]
pub struct DataKey(pub Zeroizing<[u8; 32]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// What a wrapped data key is bound to: unwrapping it under another context fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionContext {
    pub tenant: String,
    pub database: String,
    pub collection: Uuid,
}

impl EncryptionContext {
    /// A canonical byte encoding, used as associated data.
    pub fn to_aad(&self) -> Vec<u8> {
        format!(
            "tenant={}\u{0}database={}\u{0}collection={}",
            self.tenant, self.database, self.collection
        )
        .into_bytes()
    }
}

/// Wraps and unwraps data keys.
///
/// Contract: `unwrap(generate_data_key(ctx).1, ctx)` returns the same key; unwrapping
/// with any other context, a tampered blob, or after the master key changed fails with
/// `PermissionDenied` (never returns a wrong key).
#[async_trait]
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// A fresh random data key and its wrapped form.
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<(DataKey, Vec<u8>)>;
    async fn unwrap_data_key(&self, wrapped: &[u8], ctx: &EncryptionContext) -> Result<DataKey>;
}
