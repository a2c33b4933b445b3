//! API keys: `{id}.{secret}`, where the id (`ck` and 16 hex digits) is public and names
//! the key in listings and logs, and the secret is 256 random bits (base64url).
//!
//! Only the SHA-256 digest of the secret is stored. The secret has full entropy, so a
//! fast digest is as strong as a slow password hash and cheap enough for every request;
//! the comparison is constant-time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::catalog::ApiKeyRecord;
use crate::error::{Error, Result};

const ID_PREFIX: &str = "ck";
const ID_HEX_DIGITS: usize = 16;

/// A freshly minted key: the record to store, and the full key to hand out once.
#[derive(Debug)]
pub struct NewKey {
    pub record: ApiKeyRecord,
    /// `{id}.{secret}`: shown once, never stored.
    pub key: Zeroizing<String>,
}

/// Mints a key with these grants (already validated by the caller).
pub fn mint(
    name: Option<String>,
    grants: Vec<String>,
    row_filter: Option<serde_json::Value>,
    now_ms: u64,
    expires_at_ms: Option<u64>,
) -> NewKey {
    let mut rng = rand::thread_rng();
    let mut id_bytes = [0u8; ID_HEX_DIGITS / 2];
    rng.fill_bytes(&mut id_bytes);
    let id = format!(
        "{ID_PREFIX}{}",
        id_bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut secret = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(secret.as_mut());
    let key = Zeroizing::new(format!("{id}.{}", URL_SAFE_NO_PAD.encode(secret.as_ref())));
    NewKey {
        record: ApiKeyRecord {
            id,
            name,
            digest: digest(secret.as_ref()).to_vec(),
            grants,
            row_filter,
            created_at_ms: now_ms,
            expires_at_ms,
            revoked_at_ms: None,
        },
        key,
    }
}

/// A key as presented by a client, split into its public id and its secret.
#[derive(Debug)]
pub struct PresentedKey {
    pub id: String,
    secret: Zeroizing<Vec<u8>>,
}

impl PresentedKey {
    /// Splits `{id}.{secret}`; `None` if it does not have that shape.
    pub fn parse(key: &str) -> Option<Self> {
        let (id, secret) = key.split_once('.')?;
        let hex = id.strip_prefix(ID_PREFIX)?;
        if hex.len() != ID_HEX_DIGITS || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let secret = Zeroizing::new(URL_SAFE_NO_PAD.decode(secret).ok()?);
        (secret.len() == 32).then(|| Self {
            id: id.to_owned(),
            secret,
        })
    }

    /// Whether the secret matches the stored digest (constant time).
    pub fn matches(&self, record: &ApiKeyRecord) -> bool {
        let d = digest(&self.secret);
        record.digest.len() == d.len() && bool::from(d.as_slice().ct_eq(&record.digest))
    }
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Checks a key id given on a command line or in a path.
pub fn validate_key_id(id: &str) -> Result<()> {
    let ok = id
        .strip_prefix(ID_PREFIX)
        .is_some_and(|h| h.len() == ID_HEX_DIGITS && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid key id {id:?}: expected 'ck' and 16 hex digits"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_verify_and_others_do_not() {
        let new = mint(Some("ci".into()), vec!["*/*/*:read".into()], None, 1, None);
        let presented = PresentedKey::parse(&new.key).expect("parses");
        assert_eq!(presented.id, new.record.id);
        assert!(presented.matches(&new.record));
        validate_key_id(&new.record.id).unwrap();
        assert!(!new.record.digest.is_empty());
        assert!(!new
            .key
            .contains(&URL_SAFE_NO_PAD.encode(&new.record.digest)));

        let other = mint(None, vec![], None, 1, None);
        // The right id with another key's secret.
        let (_, secret) = other.key.split_once('.').unwrap();
        let forged = PresentedKey::parse(&format!("{}.{secret}", new.record.id)).unwrap();
        assert!(!forged.matches(&new.record));
    }

    #[test]
    fn rejects_malformed_keys() {
        let new = mint(None, vec![], None, 1, None);
        let (id, secret) = new.key.split_once('.').unwrap();
        for bad in [
            String::new(),
            "nodot".to_owned(),
            format!("{id}."),
            format!("{id}.{}", &secret[..20]),
            format!("xx{}.{secret}", &id[2..]),
            format!("{}.{secret}", &id[..10]),
            format!("{id}.{secret}!"),
        ] {
            assert!(PresentedKey::parse(&bad).is_none(), "{bad}");
        }
        assert!(validate_key_id("ck123").is_err());
    }
}
