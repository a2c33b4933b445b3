//! The `chroma` command line: `run` serves the HTTP API over a local data directory (or,
//! built with the `aws` feature, over S3, DynamoDB and KMS), `compact` compacts its
//! collections (also while a server uses them), `import` upserts local Parquet or JSON
//! Lines files into a collection, `export` writes one out in that format, `keys` manages API keys (`api_keys`), `ingest failures` reads what
//! bulk ingest rejected, `aws init` creates AWS resources.
//!
//! Configuration is read once here, from flags or their environment variables, and
//! passed on as values.

pub mod api_keys;
mod api_settings;
pub mod assemble;
#[cfg(feature = "aws")]
pub mod aws;
mod cli;
mod compact;
pub mod export;
pub mod import;
pub mod import_chroma;
pub mod ingest;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod local;
pub mod progress;
mod serve;
mod storage;
pub mod tls;

pub use api_settings::{api_config, ApiArgs};
#[cfg(feature = "lambda")]
pub(crate) use cli::init_logging;
pub use cli::{
    main, AwsCommand, AwsInitArgs, Backend, Cli, CollectionArgs, Command, CompactArgs, LogFormat,
    RunArgs, StorageArgs,
};
pub use compact::compact;
pub use serve::run;
pub use storage::open;
#[cfg(not(feature = "aws"))]
pub(crate) use storage::NO_AWS;
