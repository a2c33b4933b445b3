//! JSON Web Tokens from an identity provider (OAuth2/OIDC) or, for local use, signed
//! with a shared HS256 secret.
//!
//! What is checked, and why:
//! - The algorithm comes from an allow-list fixed by the configuration — RS256 and ES256
//!   for keys from a JWKS, HS256 only for a configured secret — so `none` and HS/RS
//!   confusion (an HMAC token "signed" with a public key) are refused before any
//!   signature check.
//! - Keys come only from the configured JWKS file (by `kid`); `jku`, `x5u` and any other
//!   key location in the token are ignored, and nothing is ever fetched because of a
//!   token.
//! - `iss` and `aud` must equal the configured ones; `exp` is required and must be a
//!   number in the future.
//! - Grants come from the `chroma_grants` claim: `PATTERN:ACTIONS` strings as for API
//!   keys. A token without it may do nothing.

use std::path::Path;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::grants::Grant;
use super::{denied, Principal};
use crate::error::{Error, Result};

/// Where a token's signature is checked against.
#[derive(Clone)]
enum Keys {
    /// Public keys of an identity provider; RS256 and ES256 tokens.
    Jwks(Vec<(Option<String>, Jwk)>),
    /// A shared secret; HS256 tokens only (local use).
    Secret(DecodingKey),
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
}

impl JwtVerifier {
    /// Keys from a JWKS document (`{"keys": [...]}`), e.g. a provider's
    /// `.well-known/jwks.json` saved to a file.
    pub fn from_jwks(jwks_json: &str, issuer: &str, audience: &str) -> Result<Self> {
        let set: JwkSet = serde_json::from_str(jwks_json)
            .map_err(|e| Error::invalid(format!("invalid JWKS document: {e}")))?;
        if set.keys.is_empty() {
            return Err(Error::invalid("the JWKS document has no keys"));
        }
        let keys = set
            .keys
            .into_iter()
            .map(|k| (k.common.key_id.clone(), k))
            .collect();
        Self::new(Keys::Jwks(keys), issuer, audience)
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
    pub fn verify(&self, token: &str) -> Result<Principal> {
        let header = decode_header(token).map_err(|_| denied())?;
        let (key, algorithm) = match &self.keys {
            Keys::Secret(key) => {
                if header.alg != Algorithm::HS256 {
                    return Err(denied());
                }
                (key.clone(), Algorithm::HS256)
            }
            Keys::Jwks(keys) => {
                if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
                    return Err(denied());
                }
                let jwk = match &header.kid {
                    Some(kid) => keys.iter().find(|(k, _)| k.as_deref() == Some(kid)),
                    None if keys.len() == 1 => keys.first(),
                    None => None,
                }
                .map(|(_, jwk)| jwk)
                .ok_or_else(denied)?;
                (
                    DecodingKey::from_jwk(jwk).map_err(|_| denied())?,
                    header.alg,
                )
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
        Ok(Principal {
            id: format!("jwt:{}", data.claims.sub.unwrap_or_default()),
            grants,
            row_filter: None,
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
        crate::engine::now_ms() / 1000
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

    #[test]
    fn accepts_a_valid_hs256_token_with_its_grants() {
        let v = JwtVerifier::hs256(SECRET, "https://idp", "chroma").unwrap();
        let p = v.verify(&hs(&claims())).unwrap();
        assert_eq!(p.id, "jwt:alice");
        assert!(p.allows(super::super::grants::Action::Read, "acme", Some("db"), None));
        assert!(!p.allows(
            super::super::grants::Action::Write,
            "acme",
            Some("db"),
            None
        ));
    }

    #[test]
    fn refuses_bad_claims_and_algorithms() {
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
            let e = v.verify(&token).unwrap_err();
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

    #[test]
    fn verifies_es256_against_the_configured_jwks_only() {
        let (k1, jwk1) = es256_key("k1");
        let (k2, _) = es256_key("k2");
        let jwks = json!({"keys": [jwk1.clone()]}).to_string();
        let v = JwtVerifier::from_jwks(&jwks, "https://idp", "chroma").unwrap();
        assert_eq!(
            v.verify(&es(&k1, Some("k1"), &claims())).unwrap().id,
            "jwt:alice"
        );

        // Unknown kid, or the right kid with another key's signature.
        assert!(v.verify(&es(&k2, Some("k2"), &claims())).is_err());
        assert!(v.verify(&es(&k2, Some("k1"), &claims())).is_err());
        // A token naming its own key location is not followed (and nothing is fetched).
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k2".into());
        header.jku = Some("http://127.0.0.1:1/jwks.json".into());
        let with_jku = encode(&header, &claims(), &EncodingKey::from_ec_der(&k2)).unwrap();
        assert!(v.verify(&with_jku).is_err());
        // Algorithm confusion: HS256 "signed" with the public key material.
        let public = serde_json::to_vec(&jwk1).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let confused = encode(&header, &claims(), &EncodingKey::from_secret(&public)).unwrap();
        assert!(v.verify(&confused).is_err());
        let x = URL_SAFE_NO_PAD.decode(jwk1["x"].as_str().unwrap()).unwrap();
        let confused = encode(&header, &claims(), &EncodingKey::from_secret(&x)).unwrap();
        assert!(v.verify(&confused).is_err());
    }
}
