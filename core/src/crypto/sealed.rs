//! Objects that carry their own wrapped data key: what the engine writes outside any
//! collection's data (bulk ingest's copies of rejected files, their error reports and the
//! ledger of handled files). Each gets a fresh data key from the key provider, bound to
//! the tenant and database its path names, so nothing is written in plaintext and
//! reading one needs the key provider (KMS on AWS), as for collections.
//!
//! Layout (version 1), integers big-endian:
//!
//! ```text
//! magic "CHS1" (4) | context length u32 | context: tenant NUL database (UTF-8)
//!   | wrapped key length u32 | wrapped key | envelope (see `envelope`; its associated
//!   data is the object's key)
//! ```
//!
//! The data key's encryption context is {tenant, database, collection: the nil UUID}.

use uuid::Uuid;

use super::{envelope, EncryptionContext, KeyProvider};
use crate::error::{Error, Result};

const MAGIC: [u8; 4] = *b"CHS1";
/// The most bytes a header's context or wrapped key may declare.
const MAX_PART: usize = 64 * 1024;

fn context(tenant: &str, database: &str) -> EncryptionContext {
    EncryptionContext {
        tenant: tenant.to_owned(),
        database: database.to_owned(),
        collection: Uuid::nil(),
    }
}

fn corrupt(object: &str, what: &str) -> Error {
    Error::internal(format!("sealed object {object} is corrupt: {what}"))
}

/// Encrypts `plaintext` for storage at `object` under a new data key bound to `tenant`
/// and `database`.
pub async fn seal(
    keys: &dyn KeyProvider,
    tenant: &str,
    database: &str,
    object: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    if tenant.contains('\0') {
        return Err(Error::invalid("tenant names cannot contain NUL"));
    }
    let (key, wrapped) = keys.generate_data_key(&context(tenant, database)).await?;
    let ctx = format!("{tenant}\0{database}");
    let sealed = envelope::encrypt(&key, object.as_bytes(), plaintext);
    let mut out = Vec::with_capacity(12 + ctx.len() + wrapped.len() + sealed.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(ctx.len() as u32).to_be_bytes());
    out.extend_from_slice(ctx.as_bytes());
    out.extend_from_slice(&(wrapped.len() as u32).to_be_bytes());
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Decrypts what [`seal`] wrote at `object`. A damaged object or one moved to another
/// key is an `Internal` error; a refused key, `PermissionDenied`.
pub async fn open(keys: &dyn KeyProvider, object: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    let rest = bytes
        .strip_prefix(&MAGIC)
        .ok_or_else(|| corrupt(object, "not a sealed object"))?;
    let (ctx, rest) = part(object, rest, "context")?;
    let (wrapped, sealed) = part(object, rest, "wrapped key")?;
    let ctx = std::str::from_utf8(ctx).map_err(|_| corrupt(object, "context"))?;
    let (tenant, database) = ctx
        .split_once('\0')
        .ok_or_else(|| corrupt(object, "context"))?;
    let key = keys
        .unwrap_data_key(wrapped, &context(tenant, database))
        .await?;
    envelope::decrypt(&key, object.as_bytes(), sealed)
}

/// A length-prefixed part of the header, and what follows it.
fn part<'a>(object: &str, bytes: &'a [u8], what: &str) -> Result<(&'a [u8], &'a [u8])> {
    let len = bytes
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| corrupt(object, what))?;
    if len > MAX_PART || bytes.len() < 4 + len {
        return Err(corrupt(object, what));
    }
    Ok((&bytes[4..4 + len], &bytes[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::local::LocalKeyProvider;
    use crate::error::ErrorCode;

    #[tokio::test]
    async fn round_trips_and_refuses_anything_else() {
        let keys = LocalKeyProvider::from_bytes([3u8; 32]);
        let object = "ingest-failed/t/d/c/file.jsonl";
        let sealed = seal(&keys, "t", "d", object, b"secret records")
            .await
            .unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"), "no plaintext");
        assert_eq!(
            open(&keys, object, &sealed).await.unwrap(),
            b"secret records"
        );
        // Moved to another key.
        let e = open(&keys, "ingest-failed/t/d/c/other", &sealed)
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Internal);
        // Another tenant named in the header: the data key does not unwrap.
        let mut moved = sealed.clone();
        let at = 8;
        moved[at] = b'u';
        assert!(open(&keys, object, &moved).await.is_err());
        // Another master key.
        let other = LocalKeyProvider::from_bytes([4u8; 32]);
        assert!(open(&other, object, &sealed).await.is_err());
        // Damage anywhere, truncation, garbage.
        for cut in [0, 3, 7, 12, sealed.len() - 1] {
            assert!(
                open(&keys, object, &sealed[..cut]).await.is_err(),
                "cut {cut}"
            );
        }
        let mut flipped = sealed.clone();
        let last = flipped.len() - 5;
        flipped[last] ^= 1;
        assert!(open(&keys, object, &flipped).await.is_err());
        assert!(open(&keys, object, b"{\"plain\": \"json\"}").await.is_err());
    }
}
