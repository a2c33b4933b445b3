//! JSON Web Tokens from an identity provider (OAuth2/OIDC) or, for local use, signed
//! with a shared HS256 secret.
//!
//! What is checked, and why:
//! - The algorithm comes from an allow-list fixed by the configuration — RS256 and ES256
//!   for keys from a JWKS, HS256 only for a configured secret — so `none` and HS/RS
//!   confusion (an HMAC token "signed" with a public key) are refused before any
//!   signature check.
//! - Keys come only from the configured JWKS file or URL (by `kid`); `jku`, `x5u` and any
//!   other key location in the token are ignored: the only URL ever fetched is the
//!   configured one. A JWKS URL is fetched when the verifier is made and again at most
//!   once every [`JWKS_REFRESH`] (when a token is verified after that long, so a rotated
//!   key is picked up; a token naming an unknown `kid` does not fetch sooner). A failed
//!   refresh keeps the keys already known.
//! - `iss` and `aud` must equal the configured ones; `exp` is required and must be a
//!   number in the future.
//! - Grants come from the `chroma_grants` claim: `PATTERN:ACTIONS` strings as for API
//!   keys. A token without it may do nothing. An optional `chroma_row_filter` claim (a
//!   `where` document) limits the records the caller sees and writes, as a key's
//!   `row_filter` does; an invalid one makes the token invalid.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::grants::Grant;
use super::rows::RowFilter;
use super::{denied, Principal};
use crate::error::{Error, Result};

/// The shortest time between two fetches of a JWKS URL.
pub const JWKS_REFRESH: Duration = Duration::from_secs(300);

/// The largest JWKS document accepted from a URL.
pub const JWKS_MAX_BYTES: usize = 1 << 20;

/// How long one fetch of a JWKS URL may take.
const JWKS_TIMEOUT: Duration = Duration::from_secs(10);

/// Public keys by `kid`.
type KeyList = Vec<(Option<String>, Jwk)>;

/// Where a token's signature is checked against.
#[derive(Clone)]
enum Keys {
    /// Public keys of an identity provider; RS256 and ES256 tokens.
    Jwks(KeyList),
    /// The same, fetched from a URL and refreshed.
    Remote(Arc<RemoteJwks>),
    /// A shared secret; HS256 tokens only (local use).
    Secret(DecodingKey),
}

/// A JWKS URL, the keys last fetched from it and when.
struct RemoteJwks {
    url: reqwest::Url,
    client: reqwest::Client,
    every: Duration,
    /// The keys and the time of the last fetch (successful or not).
    state: RwLock<(Arc<KeyList>, Instant)>,
    /// Held while fetching, so concurrent requests fetch once.
    fetching: tokio::sync::Mutex<()>,
}

impl RemoteJwks {
    async fn new(url: &str, every: Duration) -> Result<Self> {
        let url = jwks_url(url)?;
        let client = https_client(JWKS_TIMEOUT)?;
        let keys = fetch_jwks(&client, &url).await?;
        Ok(Self {
            url,
            client,
            every,
            state: RwLock::new((Arc::new(keys), Instant::now())),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    fn read(&self) -> (Arc<KeyList>, Instant) {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        (s.0.clone(), s.1)
    }

    /// The current keys, fetched again first if the last fetch is at least `every` old.
    async fn keys(&self) -> Arc<KeyList> {
        let (keys, at) = self.read();
        if at.elapsed() < self.every {
            return keys;
        }
        let _guard = self.fetching.lock().await;
        let (keys, at) = self.read();
        if at.elapsed() < self.every {
            // Another request fetched meanwhile.
            return keys;
        }
        let fetched = fetch_jwks(&self.client, &self.url).await;
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match fetched {
            Ok(fresh) => state.0 = Arc::new(fresh),
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS refresh failed; keeping the known keys");
            }
        }
        state.1 = Instant::now();
        state.0.clone()
    }
}

/// A JWKS URL: https, or http to a loopback address only (keys fetched in the clear from
/// elsewhere could be replaced on the way).
fn jwks_url(url: &str) -> Result<reqwest::Url> {
    let bad = |why: &str| Error::invalid(format!("JWKS URL {url:?}: {why}"));
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let host = parsed.host_str().ok_or_else(|| bad("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        "http" => Err(bad("must be https (http only to a loopback address)")),
        other => Err(bad(&format!("unsupported scheme {other:?}"))),
    }
}

/// An HTTP client verifying server certificates against the system's roots, with the
/// project's TLS provider (aws-lc-rs) and no redirects.
fn https_client(timeout: Duration) -> Result<reqwest::Client> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::internal(format!("HTTP client: {e}")))
}

/// Fetches and parses a JWKS document (at most [`JWKS_MAX_BYTES`]).
async fn fetch_jwks(client: &reqwest::Client, url: &reqwest::Url) -> Result<KeyList> {
    let failed = |why: String| Error::unavailable(format!("cannot fetch JWKS from {url}: {why}"));
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
        if body.len() + chunk.len() > JWKS_MAX_BYTES {
            return Err(failed(format!("larger than {JWKS_MAX_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    parse_jwks(&body)
}

/// The keys of a JWKS document (`{"keys": [...]}`), at least one.
fn parse_jwks(json: &[u8]) -> Result<KeyList> {
    let set: JwkSet = serde_json::from_slice(json)
        .map_err(|e| Error::invalid(format!("invalid JWKS document: {e}")))?;
    if set.keys.is_empty() {
        return Err(Error::invalid("the JWKS document has no keys"));
    }
    Ok(set
        .keys
        .into_iter()
        .map(|k| (k.common.key_id.clone(), k))
        .collect())
}

/// The key a token names by `kid`; without one, the only key.
fn find_key<'a>(keys: &'a KeyList, kid: Option<&str>) -> Option<&'a Jwk> {
    match kid {
        Some(kid) => keys.iter().find(|(k, _)| k.as_deref() == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
    .map(|(_, jwk)| jwk)
}

/// Verifies JWTs against a configured issuer, audience and keys.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Keys,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.keys {
            Keys::Jwks(k) => format!("jwks ({} keys)", k.len()),
            Keys::Remote(r) => format!("jwks from {}", r.url),
            Keys::Secret(_) => "hs256 secret".to_owned(),
        };
        f.debug_struct("JwtVerifier")
            .field("keys", &kind)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    chroma_grants: Vec<String>,
    chroma_row_filter: Option<serde_json::Value>,
}

impl JwtVerifier {
    /// Keys from a JWKS document (`{"keys": [...]}`), e.g. a provider's
    /// `.well-known/jwks.json` saved to a file.
    pub fn from_jwks(jwks_json: &str, issuer: &str, audience: &str) -> Result<Self> {
        Self::new(
            Keys::Jwks(parse_jwks(jwks_json.as_bytes())?),
            issuer,
            audience,
        )
    }

    /// Keys fetched from a provider's JWKS URL (https; http only to a loopback address)
    /// now, and again at most once every [`JWKS_REFRESH`].
    pub async fn from_jwks_url(url: &str, issuer: &str, audience: &str) -> Result<Self> {
        Self::from_jwks_url_every(url, JWKS_REFRESH, issuer, audience).await
    }

    /// [`Self::from_jwks_url`] with another shortest time between fetches.
    pub async fn from_jwks_url_every(
        url: &str,
        every: Duration,
        issuer: &str,
        audience: &str,
    ) -> Result<Self> {
        let remote = RemoteJwks::new(url, every).await?;
        Self::new(Keys::Remote(Arc::new(remote)), issuer, audience)
    }

    pub fn from_jwks_file(path: &Path, issuer: &str, audience: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(format!("cannot read JWKS file {}: {e}", path.display()))
        })?;
        Self::from_jwks(&text, issuer, audience)
    }

    /// HS256 with a shared secret of at least 32 bytes.
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Result<Self> {
        if secret.len() < 32 {
            return Err(Error::invalid(
                "the JWT secret must be at least 32 bytes long",
            ));
        }
        Self::new(
            Keys::Secret(DecodingKey::from_secret(secret)),
            issuer,
            audience,
        )
    }

    fn new(keys: Keys, issuer: &str, audience: &str) -> Result<Self> {
        if issuer.is_empty() || audience.is_empty() {
            return Err(Error::invalid(
                "JWT verification needs both an issuer and an audience",
            ));
        }
        Ok(Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// The caller a valid token names; `Unauthenticated` for anything else.
    pub async fn verify(&self, token: &str) -> Result<Principal> {
        let header = decode_header(token).map_err(|_| denied())?;
        let (key, algorithm) = match &self.keys {
            Keys::Secret(key) => {
                if header.alg != Algorithm::HS256 {
                    return Err(denied());
                }
                (key.clone(), Algorithm::HS256)
            }
            Keys::Jwks(_) | Keys::Remote(_) => {
                if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
                    return Err(denied());
                }
                let kid = header.kid.as_deref();
                let key = match &self.keys {
                    Keys::Remote(r) => find_key(&*r.keys().await, kid).map(DecodingKey::from_jwk),
                    Keys::Jwks(keys) => find_key(keys, kid).map(DecodingKey::from_jwk),
                    Keys::Secret(_) => None,
                };
                (key.ok_or_else(denied)?.map_err(|_| denied())?, header.alg)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_exp = true;
        validation.leeway = 30;
        let data = decode::<Claims>(token, &key, &validation).map_err(|_| denied())?;
        let grants = data
            .claims
            .chroma_grants
            .iter()
            .map(|g| Grant::parse(g))
            .collect::<Result<Vec<_>>>()
            .map_err(|_| denied())?;
        let row_filter = data
            .claims
            .chroma_row_filter
            .as_ref()
            .map(RowFilter::parse)
            .transpose()
            .map_err(|_| denied())?;
        Ok(Principal {
            id: format!("jwt:{}", data.claims.sub.unwrap_or_default()),
            grants,
            row_filter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::{json, Value};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        crate::clock::now_ms() / 1000
    }

    fn claims() -> Value {
        json!({"sub": "alice", "iss": "https://idp", "aud": "chroma", "exp": now() + 600,
               "chroma_grants": ["acme/*/*:read"]})
    }

    fn hs(claims: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[tokio::test]
    async fn accepts_a_valid_hs256_token_with_its_grants() {
        let v = JwtVerifier::hs256(SECRET, "https://idp", "chroma").unwrap();
        let p = v.verify(&hs(&claims())).await.unwrap();
        assert_eq!(p.id, "jwt:alice");
        assert!(p.allows(super::super::grants::Action::Read, "acme", Some("db"), None));
        assert!(!p.allows(
            super::super::grants::Action::Write,
            "acme",
            Some("db"),
            None
        ));
    }

    #[tokio::test]
    async fn refuses_bad_claims_and_algorithms() {
        let v = JwtVerifier::hs256(SECRET, "https://idp", "chroma").unwrap();
        let mut cases: Vec<(&str, String)> = Vec::new();
        for (what, patch) in [
            ("wrong issuer", json!({"iss": "https://evil"})),
            ("wrong audience", json!({"aud": "other"})),
            ("expired", json!({"exp": now() - 3600})),
            ("string exp", json!({"exp": (now() + 600).to_string()})),
            ("bad grant", json!({"chroma_grants": ["acme:read"]})),
        ] {
            let mut c = claims();
            c.as_object_mut()
                .unwrap()
                .extend(patch.as_object().unwrap().clone());
            cases.push((what, hs(&c)));
        }
        let mut no_exp = claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        cases.push(("missing exp", hs(&no_exp)));
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims())
        );
        cases.push(("alg none", none));
        let other_secret = encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(b"another secret, also 32 bytes!!!"),
        )
        .unwrap();
        cases.push(("wrong secret", other_secret));
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &claims(),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        cases.push(("HS512 not allowed", hs512));
        cases.push(("garbage", "a.b.c".to_owned()));
        for (what, token) in cases {
            let e = v.verify(&token).await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::Unauthenticated, "{what}");
        }
        assert!(JwtVerifier::hs256(b"short", "i", "a").is_err());
    }

    /// An ES256 key pair: (PKCS#8 for signing, its public JWK).
    fn es256_key(kid: &str) -> (Vec<u8>, Value) {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        assert_eq!(point[0], 4, "uncompressed point");
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                         "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                         "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
        (pkcs8.as_ref().to_vec(), jwk)
    }

    fn es(pkcs8: &[u8], kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, &EncodingKey::from_ec_der(pkcs8)).unwrap()
    }

    #[tokio::test]
    async fn verifies_es256_against_the_configured_jwks_only() {
        let (k1, jwk1) = es256_key("k1");
        let (k2, _) = es256_key("k2");
        let jwks = json!({"keys": [jwk1.clone()]}).to_string();
        let v = JwtVerifier::from_jwks(&jwks, "https://idp", "chroma").unwrap();
        assert_eq!(
            v.verify(&es(&k1, Some("k1"), &claims())).await.unwrap().id,
            "jwt:alice"
        );

        // Unknown kid, or the right kid with another key's signature.
        assert!(v.verify(&es(&k2, Some("k2"), &claims())).await.is_err());
        assert!(v.verify(&es(&k2, Some("k1"), &claims())).await.is_err());
        // A token naming its own key location is not followed (and nothing is fetched).
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k2".into());
        header.jku = Some("http://127.0.0.1:1/jwks.json".into());
        let with_jku = encode(&header, &claims(), &EncodingKey::from_ec_der(&k2)).unwrap();
        assert!(v.verify(&with_jku).await.is_err());
        // Algorithm confusion: HS256 "signed" with the public key material.
        let public = serde_json::to_vec(&jwk1).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let confused = encode(&header, &claims(), &EncodingKey::from_secret(&public)).unwrap();
        assert!(v.verify(&confused).await.is_err());
        let x = URL_SAFE_NO_PAD.decode(jwk1["x"].as_str().unwrap()).unwrap();
        let confused = encode(&header, &claims(), &EncodingKey::from_secret(&x)).unwrap();
        assert!(v.verify(&confused).await.is_err());
    }

    #[tokio::test]
    async fn a_row_filter_claim_is_carried_and_checked() {
        let v = JwtVerifier::hs256(SECRET, "https://idp", "chroma").unwrap();
        let mut c = claims();
        c["chroma_row_filter"] = json!({"team": "a"});
        let p = v.verify(&hs(&c)).await.unwrap();
        assert_eq!(
            p.row_filter,
            Some(RowFilter::parse(&json!({"team": "a"})).unwrap())
        );
        assert_eq!(v.verify(&hs(&claims())).await.unwrap().row_filter, None);
        c["chroma_row_filter"] = json!({"team": {"$bogus": 1}});
        let e = v.verify(&hs(&c)).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unauthenticated);
    }

    #[test]
    fn jwks_urls_must_be_https_except_on_loopback() {
        for ok in [
            "https://idp.example/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9/jwks",
        ] {
            jwks_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://idp.example/jwks",
            "http://10.0.0.1/jwks",
            "ftp://idp.example/jwks",
            "file:///etc/jwks.json",
            "not a url",
        ] {
            let e = jwks_url(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{bad}");
            assert!(e.message().contains("JWKS URL"), "{e}");
        }
    }

    /// Serves `doc` at `/jwks` on a loopback port, counting requests.
    async fn jwks_server(doc: Arc<RwLock<Value>>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let body = doc.read().unwrap().clone();
                async move { axum::Json(body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/jwks"), hits)
    }

    #[tokio::test]
    async fn jwks_url_is_fetched_at_start_and_refreshed_only_after_the_interval() {
        use std::sync::atomic::Ordering;
        let (k1, jwk1) = es256_key("k1");
        let (k2, jwk2) = es256_key("k2");
        let doc = Arc::new(RwLock::new(json!({"keys": [jwk1.clone()]})));
        let (url, hits) = jwks_server(doc.clone()).await;
        let every = Duration::from_millis(300);
        let v = JwtVerifier::from_jwks_url_every(&url, every, "https://idp", "chroma")
            .await
            .unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched at start");
        let good = es(&k1, Some("k1"), &claims());
        assert_eq!(v.verify(&good).await.unwrap().id, "jwt:alice");

        // The provider rotates in k2; within the interval, a k2 token (unknown kid) is
        // refused without another fetch, however often it is tried.
        *doc.write().unwrap() = json!({"keys": [jwk1, jwk2]});
        let rotated = es(&k2, Some("k2"), &claims());
        for _ in 0..5 {
            assert!(v.verify(&rotated).await.is_err());
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // After the interval, one fetch picks the new key up.
        tokio::time::sleep(every + Duration::from_millis(50)).await;
        assert_eq!(v.verify(&rotated).await.unwrap().id, "jwt:alice");
        assert_eq!(v.verify(&good).await.unwrap().id, "jwt:alice");
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        // A failed refresh keeps the known keys.
        *doc.write().unwrap() = json!({"keys": "not keys"});
        tokio::time::sleep(every + Duration::from_millis(50)).await;
        assert_eq!(v.verify(&good).await.unwrap().id, "jwt:alice");
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_unreachable_or_bad_jwks_url_fails_at_start() {
        let doc = Arc::new(RwLock::new(json!({"keys": []})));
        let (url, _) = jwks_server(doc).await;
        let e = JwtVerifier::from_jwks_url(&url, "https://idp", "chroma")
            .await
            .unwrap_err();
        assert!(e.message().contains("no keys"), "{e}");
        let missing = url.replace("/jwks", "/nothing");
        let e = JwtVerifier::from_jwks_url(&missing, "https://idp", "chroma")
            .await
            .unwrap_err();
        assert!(e.message().contains("HTTP 404"), "{e}");
    }
}
