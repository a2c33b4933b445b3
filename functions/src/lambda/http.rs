//! The `query` and `ingest` functions: the shared HTTP router behind API Gateway (HTTP
//! API, payload format 2.0). Which routes reach which function is the template's routing;
//! each function's IAM role allows only what its routes need.

use axum::Router;
use chroma_core::api::response_limit::{LAMBDA_ENVELOPE_BYTES, LAMBDA_MAX_PAYLOAD_BYTES};
use chroma_core::api::{self, AppState};
use clap::Parser;

use super::Deployment;
use crate::ApiArgs;

/// The batch size of Lambda (Chroma Cloud's figure), advertised by `/pre-flight-checks`
/// and enforced: a batch of 300 records of 1,536 dimensions stays well inside the 6 MB
/// request limit.
pub const LAMBDA_BATCH_SIZE: u32 = 300;

/// The HTTP settings of `chroma run`, read from the same environment variables.
#[derive(Debug, Parser)]
#[command(name = "chroma-lambda")]
struct Env {
    #[command(flatten)]
    api: ApiArgs,
}

/// The HTTP settings from the environment. Authentication is always on (API keys, and
/// JWTs when configured); empty variables count as unset, as a template passes them for
/// optional parameters.
pub fn api_args_from_env() -> anyhow::Result<ApiArgs> {
    let mut args = Env::try_parse_from(["chroma-lambda"])
        .map_err(|e| anyhow::anyhow!("function configuration: {e}"))?
        .api;
    args.auth = true;
    let unset_if_empty = |v: &mut Option<String>| {
        if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
            *v = None;
        }
    };
    unset_if_empty(&mut args.jwt_issuer);
    unset_if_empty(&mut args.jwt_audience);
    unset_if_empty(&mut args.jwt_jwks_url);
    for path in [&mut args.jwt_jwks_file, &mut args.jwt_hs256_secret_file] {
        if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            *path = None;
        }
    }
    Ok(args)
}

/// The router a function serves: authentication required, bodies and responses within
/// Lambda's 6 MB payload limit, batches of [`LAMBDA_BATCH_SIZE`] advertised and enforced.
pub async fn router(deployment: &Deployment, args: &ApiArgs) -> anyhow::Result<Router> {
    let mut args = args.clone();
    args.auth = true;
    let mut config = crate::api_config(&args, &deployment.engine).await?;
    config.max_body_bytes = config.max_body_bytes.min(LAMBDA_MAX_PAYLOAD_BYTES);
    config.advertised_batch_size = LAMBDA_BATCH_SIZE;
    config.enforced_batch_size = Some(LAMBDA_BATCH_SIZE);
    config.max_response_bytes = Some(LAMBDA_MAX_PAYLOAD_BYTES - LAMBDA_ENVELOPE_BYTES);
    Ok(api::router(AppState::new(
        deployment.engine.clone(),
        config,
    )))
}

/// Serves API Gateway events until the execution environment is shut down.
/// Each invocation's metrics are written to the log after its response.
pub async fn serve(router: Router) -> Result<(), lambda_http::Error> {
    let router = router.layer(axum::middleware::from_fn(super::metrics::flush_after));
    lambda_http::run(router).await
}
