//! Who is calling ([`Authenticator`] → [`Principal`]) and what they may do
//! ([`grants`]).
//!
//! Credentials are API keys ([`api_keys`]) or, when configured, JWTs ([`jwt`]), sent as
//! `Authorization: Bearer <credential>` or `X-Chroma-Token: <credential>`. A verified key is cached for [`KEY_CACHE_TTL`], which bounds
//! how long a revoked key keeps working; unknown keys are never cached, so a key created
//! while the server runs works at once.

pub mod api_keys;
pub mod audit;
pub mod delegation;
pub mod grants;
#[cfg(feature = "jwt")]
pub mod jwt;
pub mod rows;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::catalog::{ApiKeyRecord, Catalog};
use crate::error::{Error, ErrorCode, Result};
use api_keys::PresentedKey;
use grants::{Action, Grant};
use rows::RowFilter;

/// How long a verified key is trusted without asking the catalog again: a revocation
/// takes effect within this bound.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

/// The most keys kept in the cache.
const KEY_CACHE_ENTRIES: usize = 10_000;

/// An authenticated caller and its grants.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `key:{id}` for API keys, `local` when authentication is off.
    pub id: String,
    pub grants: Vec<Grant>,
    /// Records outside it are invisible to the caller's reads and refused to its writes
    /// (see [`rows`]).
    pub row_filter: Option<RowFilter>,
}

impl Principal {
    /// The caller of a server without authentication (loopback only): may do anything.
    pub fn local() -> Self {
        Self {
            id: "local".to_owned(),
            grants: vec![Grant::parse("*/*/*:read,write,admin").expect("valid grant")],
            row_filter: None,
        }
    }

    pub fn allows(
        &self,
        action: Action,
        tenant: &str,
        database: Option<&str>,
        collection: Option<&str>,
    ) -> bool {
        self.grants
            .iter()
            .any(|g| g.allows(action, tenant, database, collection))
    }

    /// Whether some grant allows `action` on everything under `tenant`/`database`.
    pub fn allows_everything_under(
        &self,
        action: Action,
        tenant: Option<&str>,
        database: Option<&str>,
    ) -> bool {
        self.grants
            .iter()
            .any(|g| g.allows_everything_under(action, tenant, database))
    }

    /// `PermissionDenied` naming the action and resource unless allowed.
    pub fn require(
        &self,
        action: Action,
        tenant: &str,
        database: Option<&str>,
        collection: Option<&str>,
    ) -> Result<()> {
        if self.allows(action, tenant, database, collection) {
            return Ok(());
        }
        let resource = resource_name(tenant, database, collection);
        Err(Error::new(
            ErrorCode::PermissionDenied,
            format!("{action} on {resource} is not granted"),
        ))
    }

    /// Whether every grant in `wanted` is within one of this caller's admin grants.
    pub fn may_delegate(&self, wanted: &[Grant]) -> bool {
        wanted.iter().all(|w| {
            self.grants
                .iter()
                .any(|g| g.allows_action(Action::Admin) && w.within(g))
        })
    }
}

/// Verifies credentials against the API keys in the catalog.
#[derive(Debug)]
pub struct Authenticator {
    catalog: Arc<dyn Catalog>,
    cache: Mutex<HashMap<String, CachedKey>>,
    ttl: Duration,
    #[cfg(feature = "jwt")]
    jwt: Option<jwt::JwtVerifier>,
}

/// A key as verified: its record and the principal derived from it once (grants parsed
/// when fetched, not on every request).
#[derive(Debug, Clone)]
struct CachedKey {
    at: Instant,
    record: ApiKeyRecord,
    principal: Principal,
}

impl CachedKey {
    fn new(record: ApiKeyRecord) -> Result<Self> {
        let grants = record
            .grants
            .iter()
            .map(|g| Grant::parse(g))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| Error::internal(format!("stored key {} has {e}", record.id)))?;
        let row_filter = record
            .row_filter
            .as_ref()
            .map(RowFilter::parse)
            .transpose()
            .map_err(|e| Error::internal(format!("stored key {} has {e}", record.id)))?;
        let principal = Principal {
            id: format!("key:{}", record.id),
            grants,
            row_filter,
        };
        Ok(Self {
            at: Instant::now(),
            record,
            principal,
        })
    }
}

impl Authenticator {
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self::with_ttl(catalog, KEY_CACHE_TTL)
    }

    pub fn with_ttl(catalog: Arc<dyn Catalog>, ttl: Duration) -> Self {
        Self {
            catalog,
            cache: Mutex::new(HashMap::new()),
            ttl,
            #[cfg(feature = "jwt")]
            jwt: None,
        }
    }

    /// Also accepts JWTs this verifier accepts.
    #[cfg(feature = "jwt")]
    pub fn with_jwt(mut self, verifier: jwt::JwtVerifier) -> Self {
        self.jwt = Some(verifier);
        self
    }

    /// The caller presenting `credential` at `now_ms`; `Unauthenticated` for a malformed,
    /// unknown, wrong, revoked or expired key — all with the same message, so a caller
    /// learns nothing about which.
    pub async fn authenticate(&self, credential: &str, now_ms: u64) -> Result<Principal> {
        // A JWT has three dot-separated parts; an API key two.
        if credential.matches('.').count() == 2 {
            #[cfg(feature = "jwt")]
            if let Some(v) = &self.jwt {
                return v.verify(credential).await;
            }
            return Err(denied());
        }
        let presented = PresentedKey::parse(credential).ok_or_else(denied)?;
        let (entry, fresh) = match self.cached(&presented.id) {
            Some(entry) => (entry, false),
            None => {
                let record = match self.catalog.get_api_key(&presented.id).await {
                    Ok(r) => r,
                    Err(e) if e.code() == ErrorCode::NotFound => return Err(denied()),
                    Err(e) => return Err(e),
                };
                (CachedKey::new(record)?, true)
            }
        };
        let record = &entry.record;
        if !presented.matches(record) {
            return Err(denied());
        }
        if record.revoked_at_ms.is_some() || record.expires_at_ms.is_some_and(|t| t <= now_ms) {
            return Err(denied());
        }
        let principal = entry.principal.clone();
        if fresh {
            // Only keys presented with their secret are cached.
            self.remember(entry);
        }
        Ok(principal)
    }

    /// Forgets a key at once (after this process revoked it).
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn cached(&self, id: &str) -> Option<CachedKey> {
        let cache = self.lock();
        let entry = cache.get(id)?;
        (entry.at.elapsed() < self.ttl).then(|| entry.clone())
    }

    fn remember(&self, entry: CachedKey) {
        if self.ttl.is_zero() {
            return;
        }
        let mut cache = self.lock();
        if cache.len() >= KEY_CACHE_ENTRIES {
            let ttl = self.ttl;
            cache.retain(|_, e| e.at.elapsed() < ttl);
            if cache.len() >= KEY_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(entry.record.id.clone(), entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedKey>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `tenant[/database[/collection]]`, as resources are named in messages and audit records.
pub fn resource_name(tenant: &str, database: Option<&str>, collection: Option<&str>) -> String {
    [Some(tenant), database, collection]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("/")
}

/// The one answer to every bad credential, so a caller learns nothing about which.
pub fn denied() -> Error {
    Error::new(
        ErrorCode::Unauthenticated,
        "missing, malformed, unknown, revoked or expired credentials",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::sqlite::SqliteCatalog;

    async fn setup(ttl: Duration) -> (Arc<dyn Catalog>, Authenticator) {
        let catalog: Arc<dyn Catalog> = Arc::new(SqliteCatalog::in_memory().unwrap());
        let auth = Authenticator::with_ttl(catalog.clone(), ttl);
        (catalog, auth)
    }

    #[tokio::test]
    async fn accepts_valid_keys_only() {
        let (catalog, auth) = setup(KEY_CACHE_TTL).await;
        let key = api_keys::mint(
            None,
            vec!["acme/*/*:read".into()],
            None,
            1_000,
            Some(10_000),
        );
        catalog.create_api_key(&key.record).await.unwrap();
        let p = auth.authenticate(&key.key, 2_000).await.unwrap();
        assert_eq!(p.id, format!("key:{}", key.record.id));
        assert!(p.allows(Action::Read, "acme", Some("db"), Some("c")));
        assert!(!p.allows(Action::Write, "acme", Some("db"), Some("c")));

        let expired = auth.authenticate(&key.key, 10_000).await.unwrap_err();
        let unknown = api_keys::mint(None, vec![], None, 1, None);
        let unknown = auth.authenticate(&unknown.key, 2_000).await.unwrap_err();
        let malformed = auth
            .authenticate("Bearer nonsense", 2_000)
            .await
            .unwrap_err();
        let (id, _) = key.key.split_once('.').unwrap();
        let other = api_keys::mint(None, vec![], None, 1, None);
        let (_, secret) = other.key.split_once('.').unwrap();
        let wrong = auth
            .authenticate(&format!("{id}.{secret}"), 2_000)
            .await
            .unwrap_err();
        for e in [&expired, &unknown, &malformed, &wrong] {
            assert_eq!(e.code(), ErrorCode::Unauthenticated);
            assert_eq!(e.message(), malformed.message(), "identical failures");
        }
    }

    #[tokio::test]
    async fn revocation_takes_effect_within_the_cache_bound() {
        let (catalog, cached) = setup(Duration::from_millis(200)).await;
        let key = api_keys::mint(None, vec!["*/*/*:read".into()], None, 1, None);
        catalog.create_api_key(&key.record).await.unwrap();
        cached.authenticate(&key.key, 2).await.unwrap();
        catalog.revoke_api_key(&key.record.id, 3).await.unwrap();
        // A fresh authenticator (another process) refuses at once ...
        let uncached = Authenticator::with_ttl(catalog.clone(), KEY_CACHE_TTL);
        assert!(uncached.authenticate(&key.key, 4).await.is_err());
        // ... the one that cached it, once the bound has passed.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(cached.authenticate(&key.key, 5).await.is_err());
    }

    #[test]
    fn delegation_stays_within_admin_grants() {
        let p = Principal {
            id: "key:x".into(),
            grants: vec![
                Grant::parse("acme/*/*:read,write,admin").unwrap(),
                Grant::parse("*/*/*:read").unwrap(),
            ],
            row_filter: None,
        };
        assert!(p.may_delegate(&[Grant::parse("acme/prod/*:read,write").unwrap()]));
        // Reading everything is granted, but not as an admin grant.
        assert!(!p.may_delegate(&[Grant::parse("*/*/*:read").unwrap()]));
        assert!(Principal::local().may_delegate(&[Grant::parse("*/*/*:admin").unwrap()]));
        let e = p
            .require(Action::Write, "other", Some("db"), None)
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::PermissionDenied);
        assert!(e.message().contains("other/db"), "{e}");
    }
}
