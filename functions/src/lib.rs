//! The `chroma` command line: `run` serves the HTTP API over a local data directory (or,
//! built with the `aws` feature, over S3, DynamoDB and KMS), `compact` compacts its
//! collections (also while a server uses them), `import` upserts local Parquet or JSON
//! Lines files into a collection, `export` writes one out in that format, `keys` manages API keys, `ingest failures` reads what
//! bulk ingest rejected, `aws init` creates AWS resources.
//!
//! Configuration is read once here, from flags or their environment variables, and
//! passed on as values.

#[cfg(feature = "aws")]
pub mod aws;
pub mod export;
pub mod import;
pub mod import_chroma;
pub mod ingest;
pub mod keys;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod local;
pub mod progress;
pub mod tls;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chroma_core::api::rate_limit::RateLimits;
use chroma_core::api::{self, ApiConfig, AppState};
use chroma_core::auth::jwt::JwtVerifier;
use chroma_core::auth::Authenticator;
use chroma_core::engine::{Merge, Stop, SweepReport};
use clap::{Args, Parser, Subcommand, ValueEnum};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "chroma",
    version,
    about = "A Chroma-compatible embedding database"
)]
pub struct Cli {
    /// Log format (logs go to standard error).
    #[arg(
        long,
        env = "CHROMA_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API over a local data directory.
    Run(RunArgs),
    /// Compact (fold logs into segments and merge segments of) collections.
    Compact(CompactArgs),
    /// Validate local Parquet or JSON Lines files and upsert them into a collection.
    Import(import::ImportArgs),
    /// Write a collection into a new directory as Parquet or JSON Lines files that
    /// `import` and bulk ingest read back.
    Export(export::ExportArgs),
    /// API keys: create, list, revoke.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Bulk ingest from the object store: rejected files and their reports.
    #[command(subcommand)]
    Ingest(ingest::IngestCommand),
    /// AWS resources of a deployment (needs a build with the `aws` feature).
    #[command(subcommand)]
    Aws(AwsCommand),
}

#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Create the bucket, tables and KMS key where missing (for emulators and trials; SAM
    /// creates them in a real deployment) and print the environment to use, as
    /// `export NAME=value` lines: `eval "$(chroma aws init)"`.
    Init(AwsInitArgs),
}

#[derive(Debug, Clone, Args)]
pub struct AwsInitArgs {
    /// The S3 bucket for data.
    #[arg(long, env = "CHROMA_BUCKET", default_value = "chroma-data")]
    pub bucket: String,
    /// Prefix of every object key in the bucket.
    #[arg(long, env = "CHROMA_PREFIX", default_value = "")]
    pub prefix: String,
    /// Prefix of the DynamoDB table names.
    #[arg(long, env = "CHROMA_TABLE_PREFIX", default_value = "chroma-")]
    pub table_prefix: String,
    /// An existing KMS key (id, ARN or alias); default: the key aliased
    /// `alias/{table-prefix}data`, created if missing.
    #[arg(long, env = "CHROMA_KMS_KEY_ID")]
    pub kms_key_id: Option<String>,
    /// Also create this FIFO queue (name ending in .fifo) for compaction requests.
    #[arg(long)]
    pub compaction_queue: Option<String>,
}

/// Where a deployment keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// A data directory: SQLite catalog, object files, master key file.
    Local,
    /// S3, DynamoDB and KMS, configured by CHROMA_BUCKET, CHROMA_TABLE_PREFIX,
    /// CHROMA_KMS_KEY_ID (and AWS_REGION, AWS_ENDPOINT_URL for emulators).
    Aws,
}

/// Where the data and its master key are.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Where the data is kept.
    #[arg(long, env = "CHROMA_BACKEND", value_enum, default_value = "local")]
    pub backend: Backend,
    /// Data directory: `catalog.sqlite3` and `objects/` are kept in it.
    #[arg(long, env = "CHROMA_PATH", default_value = "./chroma")]
    pub path: PathBuf,
    /// Master key file (kept outside the data directory). Without it the key comes from
    /// CHROMA_MASTER_KEY, else from a key file generated in the user's config directory.
    #[arg(long, env = "CHROMA_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

/// A collection named on the command line.
#[derive(Debug, Clone, Args)]
pub struct CollectionArgs {
    /// The collection's tenant.
    #[arg(long, default_value = "default_tenant")]
    pub tenant: String,
    /// The collection's database.
    #[arg(long, default_value = "default_database")]
    pub database: String,
    /// The collection (by name); it must exist.
    #[arg(long)]
    pub collection: String,
}

impl CollectionArgs {
    /// `name` in the default tenant and database.
    pub fn named(name: &str) -> Self {
        Self {
            tenant: "default_tenant".into(),
            database: "default_database".into(),
            collection: name.into(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Address to listen on (loopback by default).
    #[arg(long, env = "CHROMA_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (the chosen address is printed).
    #[arg(long, env = "CHROMA_PORT", default_value_t = 8000)]
    pub port: u16,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Serve HTTPS (TLS 1.2 or 1.3) with this PEM certificate chain ...
    #[arg(long, env = "CHROMA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// ... and this PEM private key.
    #[arg(long, env = "CHROMA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

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

#[derive(Debug, Clone, Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Only this collection (by UUID); default: every collection.
    #[arg(long, env = "CHROMA_COLLECTION")]
    pub collection: Option<Uuid>,
}

/// Parses the command line, runs the command, reports a failure on standard error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    chroma_core::engine::tune_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Compact(args) => compact(args).await,
            Command::Import(args) => import::run(args).await,
            Command::Export(args) => export::run(args).await,
            Command::Keys(command) => keys::run(command).await,
            Command::Ingest(command) => ingest::run(command).await,
            Command::Aws(AwsCommand::Init(args)) => aws_init(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs on standard error: colours only when it is a terminal (a file, a pipe or
/// CloudWatch gets plain text), or JSON.
pub(crate) fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// `chroma run`: serves until SIGINT or SIGTERM, then finishes in-flight requests.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    if !args.api.auth && !is_loopback(&args.host) {
        anyhow::bail!(
            "refusing to serve {} without authentication: anyone who can reach it could read \
             and change every collection. Start with --auth (and create a key with `chroma keys \
             create`), or listen on a loopback address such as 127.0.0.1",
            args.host
        );
    }
    chroma_core::metrics::install_prometheus();
    let opened = open(&args.storage).await?;
    let background = opened
        .engine
        .spawn_background(opened.jobs.clone(), opened.receiver);
    let config = api_config(&args.api, &opened.engine).await?;
    let router = api::router(AppState::new(opened.engine.clone(), config));

    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, backend = ?args.storage.backend, auth = args.api.auth, tls = args.tls_cert.is_some(), allow_reset = args.api.allow_reset, knn_index = %args.api.knn_index, "listening");
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = tls::config(cert, key).await?;
            // Scripts and tests read the address from this line.
            println!("listening on https://{addr}");
            tls::serve(listener, tls, router, shutdown_signal()).await?;
        }
        _ => {
            println!("listening on http://{addr}");
            api::serve(listener, router, shutdown_signal())
                .await
                .context("server failed")?;
        }
    }
    // Background work stops (a running build within about a second, committing nothing)
    // and must not hold the process up.
    opened.engine.shutdown();
    if tokio::time::timeout(Duration::from_secs(5), background)
        .await
        .is_err()
    {
        tracing::warn!("background work did not stop within 5 s");
    }
    tracing::info!("stopped");
    Ok(())
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

/// Whether `host` names only this machine: a loopback IP or `localhost`.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// `chroma compact`: folds every log and merges every collection's segments into one
/// (or one collection's), and collects garbage. A collection that fails does not stop the
/// others; the command then fails naming them.
pub async fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let opened = open(&args.storage).await?;
    let engine = opened.engine.clone();
    let report = match args.collection {
        Some(id) => {
            let r = engine
                .compact(id, Merge::All)
                .await
                .with_context(|| format!("compacting {id}"))?;
            let collected = engine
                .collect_garbage(id)
                .await
                .with_context(|| format!("collecting the garbage of {id}"))?;
            SweepReport {
                collections: 1,
                folded_batches: r.folded_batches,
                folded_ops: r.folded_ops,
                merged_segments: r.merged_segments,
                collected_objects: collected,
                failures: Vec::new(),
            }
        }
        None => {
            let mut progress = progress::Progress::new("compacted collections", None);
            let report = engine
                .sweep(Merge::All, &Stop::never(), &mut |done, total| {
                    progress.set_total(total as u64);
                    progress.set(done as u64);
                })
                .await;
            match &report {
                Ok(_) => progress.finish(),
                Err(_) => progress.abandon(),
            }
            report.context("listing collections")?
        }
    };
    println!(
        "compacted {} collections: {} log batches ({} ops) folded, {} segments merged, {} objects collected",
        report.collections,
        report.folded_batches,
        report.folded_ops,
        report.merged_segments,
        report.collected_objects
    );
    drop(opened.receiver);
    if !report.failures.is_empty() {
        for (id, e) in &report.failures {
            eprintln!("{id}: {e}");
        }
        anyhow::bail!("{} collections failed", report.failures.len());
    }
    Ok(())
}

/// An engine over the chosen backend, with its in-process compaction queue.
pub async fn open(storage: &StorageArgs) -> anyhow::Result<local::Opened> {
    match storage.backend {
        Backend::Local => {
            let local = local::open(&storage.path, storage.master_key_file.as_deref())?;
            let removed = local
                .store
                .remove_stale_temp_files(Duration::from_secs(3600))
                .await?;
            if removed > 0 {
                tracing::info!(
                    removed,
                    "removed temporary files left by interrupted writes"
                );
            }
            Ok(local.opened)
        }
        Backend::Aws => open_aws().await,
    }
}

#[cfg(feature = "aws")]
async fn open_aws() -> anyhow::Result<local::Opened> {
    aws::open().await
}

#[cfg(not(feature = "aws"))]
async fn open_aws() -> anyhow::Result<local::Opened> {
    anyhow::bail!(NO_AWS)
}

#[cfg(not(feature = "aws"))]
pub(crate) const NO_AWS: &str = "this build of chroma has no AWS support: rebuild it with \
    `cargo build --release -p chroma-functions --features aws`";

/// `chroma aws init`: prints `export NAME=value` lines on standard output.
#[cfg(feature = "aws")]
async fn aws_init(args: AwsInitArgs) -> anyhow::Result<()> {
    aws::init(args).await
}

#[cfg(not(feature = "aws"))]
async fn aws_init(_args: AwsInitArgs) -> anyhow::Result<()> {
    anyhow::bail!(NO_AWS)
}
