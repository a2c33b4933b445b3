//! The `chroma` command line: its definition (the clap structs of every command and
//! their flags) and its entry point, which parses it, sets up logging and runs the
//! command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use uuid::Uuid;

#[cfg(feature = "aws")]
use crate::aws;
use crate::compact::compact;
use crate::serve::run;
#[cfg(not(feature = "aws"))]
use crate::NO_AWS;
use crate::{api_keys, export, import, ingest, ApiArgs};

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
    Keys(api_keys::KeysCommand),
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
            Command::Keys(command) => api_keys::run(command).await,
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

/// `chroma aws init`: prints `export NAME=value` lines on standard output.
#[cfg(feature = "aws")]
async fn aws_init(args: AwsInitArgs) -> anyhow::Result<()> {
    aws::init(args).await
}

#[cfg(not(feature = "aws"))]
async fn aws_init(_args: AwsInitArgs) -> anyhow::Result<()> {
    anyhow::bail!(NO_AWS)
}
