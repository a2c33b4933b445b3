//! The HTTP API's settings ([`ApiArgs`]): the flags of `chroma run`, read by the Lambda
//! functions from the same environment variables, and the [`ApiConfig`] (with its
//! authenticator) built from them.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use chroma_core::api::rate_limit::RateLimits;
use chroma_core::api::{self, ApiConfig};
use chroma_core::auth::jwt::JwtVerifier;
use chroma_core::auth::Authenticator;
use clap::Args;

/// How the HTTP API treats requests: the same flags for `chroma run` and, through their
/// environment variables, for the Lambda functions.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Let `POST /api/v2/reset` delete everything.
    #[arg(long, env = "CHROMA_ALLOW_RESET")]
    pub allow_reset: bool,
    /// The default vector index, as Chroma's server setting: `hnsw` answers as local
    /// Chroma 1.5.9 (SPANN configurations become HNSW, sparse indexes are refused), `spann`
    /// as Chroma's cloud (SPANN configurations kept and echoed, and driving the index).
    #[arg(
        long,
        env = "CHROMA_KNN_INDEX",
        default_value = "hnsw",
        value_name = "hnsw|spann"
    )]
    pub knn_index: chroma_core::model::KnnIndex,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, env = "CHROMA_MAX_BODY_BYTES", default_value_t = api::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Require an API key (`chroma keys create`) on every route but heartbeat and version.
    /// Without it the server only listens on loopback addresses.
    #[arg(long, env = "CHROMA_AUTH")]
    pub auth: bool,
    /// Requests per second allowed per API key (bursts of twice as many); 0: no limit.
    #[arg(long, env = "CHROMA_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,
    /// Also accept JWTs with this issuer (`iss`) ...
    #[arg(long, env = "CHROMA_JWT_ISSUER", requires = "jwt_audience")]
    pub jwt_issuer: Option<String>,
    /// ... and audience (`aud`) ...
    #[arg(long, env = "CHROMA_JWT_AUDIENCE", requires = "jwt_issuer")]
    pub jwt_audience: Option<String>,
    /// ... signed (RS256/ES256) by a key of this JWKS file ...
    #[arg(
        long,
        env = "CHROMA_JWT_JWKS_FILE",
        conflicts_with_all = ["jwt_hs256_secret_file", "jwt_jwks_url"]
    )]
    pub jwt_jwks_file: Option<PathBuf>,
    /// ... or of the JWKS at this URL (https; http only to a loopback address), fetched at
    /// start and again at most every 5 minutes ...
    #[arg(
        long,
        env = "CHROMA_JWT_JWKS_URL",
        conflicts_with = "jwt_hs256_secret_file"
    )]
    pub jwt_jwks_url: Option<String>,
    /// ... or (local use) HS256 with the secret in this file (at least 32 bytes).
    #[arg(long, env = "CHROMA_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
}

/// The HTTP layer's settings from its flags.
pub async fn api_config(
    args: &ApiArgs,
    engine: &chroma_core::engine::Engine,
) -> anyhow::Result<ApiConfig> {
    Ok(ApiConfig {
        allow_reset: args.allow_reset,
        max_body_bytes: args.max_body_bytes,
        knn_index: args.knn_index,
        auth: authenticator(args, engine).await?,
        rate_limits: NonZeroU32::new(args.rate_limit).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not zero"));
            Arc::new(RateLimits::new(rate, burst))
        }),
        ..ApiConfig::default()
    })
}

/// API keys from the catalog, and JWTs when an issuer is configured; `None` without
/// `--auth`.
async fn authenticator(
    args: &ApiArgs,
    engine: &chroma_core::engine::Engine,
) -> anyhow::Result<Option<Arc<Authenticator>>> {
    let jwt_configured = args.jwt_issuer.is_some()
        || args.jwt_jwks_file.is_some()
        || args.jwt_jwks_url.is_some()
        || args.jwt_hs256_secret_file.is_some();
    if !args.auth {
        if jwt_configured {
            anyhow::bail!("the --jwt-* options need --auth");
        }
        return Ok(None);
    }
    let mut auth = Authenticator::new(engine.catalog().clone());
    if let (Some(issuer), Some(audience)) = (&args.jwt_issuer, &args.jwt_audience) {
        let keys = (
            &args.jwt_jwks_file,
            &args.jwt_jwks_url,
            &args.jwt_hs256_secret_file,
        );
        let verifier = match keys {
            (Some(jwks), None, None) => JwtVerifier::from_jwks_file(jwks, issuer, audience)?,
            (None, Some(url), None) => JwtVerifier::from_jwks_url(url, issuer, audience).await?,
            (None, None, Some(secret)) => {
                let secret = zeroize::Zeroizing::new(std::fs::read(secret).with_context(|| {
                    format!("cannot read the JWT secret file {}", secret.display())
                })?);
                JwtVerifier::hs256(secret.trim_ascii(), issuer, audience)?
            }
            _ => anyhow::bail!(
                "JWTs need the keys to check them with: --jwt-jwks-file, --jwt-jwks-url or --jwt-hs256-secret-file"
            ),
        };
        auth = auth.with_jwt(verifier);
    } else if jwt_configured {
        anyhow::bail!("JWTs need both --jwt-issuer and --jwt-audience");
    }
    Ok(Some(Arc::new(auth)))
}
