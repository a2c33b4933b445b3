//! The AWS deployment run as one process: S3, DynamoDB and KMS configured from the
//! environment, compaction in the background of the same process.

use anyhow::Context;
use chroma_core::aws::provision::{self, InitRequest};
use chroma_core::aws::{AwsBackends, AwsConfig};

use crate::assemble::Backends;
use crate::AwsInitArgs;

/// What an engine over `aws` uses: its catalog and key provider, and S3 as every server
/// reads it ([`AwsBackends::served_store`]).
pub fn backends(aws: &AwsBackends) -> Backends {
    Backends {
        catalog: aws.catalog.clone(),
        store: aws.served_store(),
        key_provider: aws.key_provider.clone(),
    }
}

/// The AWS backends named by the environment, for `chroma run --backend aws` and the
/// other commands; fails at once, naming what is missing, when the configuration is
/// incomplete or the catalog is unreachable.
pub async fn connect() -> anyhow::Result<Backends> {
    let config = AwsConfig::from_env()?;
    let backends = AwsBackends::connect(&config).await;
    // Two conditional writes, so a wrong table prefix or missing credentials show up at
    // start-up instead of on the first request, and a fresh SAM deployment gets Chroma's
    // default tenant and database.
    backends.catalog.ensure_defaults().await.with_context(|| {
        format!(
            "cannot write the catalog in DynamoDB (tables {}*); did `chroma aws init` or \
             the SAM deployment create them?",
            config.table_prefix
        )
    })?;
    tracing::info!(
        bucket = %config.bucket,
        prefix = %config.prefix,
        table_prefix = %config.table_prefix,
        endpoint = config.endpoint_url.as_deref().unwrap_or("aws"),
        "serving from S3, DynamoDB and KMS"
    );
    Ok(self::backends(&backends))
}

/// `chroma aws init`: creates what is missing, reports it on standard error and prints
/// the environment as `export` lines on standard output.
pub async fn init(args: AwsInitArgs) -> anyhow::Result<()> {
    let report = provision::init(InitRequest {
        bucket: args.bucket,
        prefix: args.prefix,
        table_prefix: args.table_prefix,
        kms_key_id: args.kms_key_id,
        compaction_queue: args.compaction_queue,
        region: std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .ok(),
        endpoint_url: std::env::var("AWS_ENDPOINT_URL").ok(),
    })
    .await
    .context("cannot create the AWS resources")?;
    if report.created.is_empty() {
        eprintln!("everything already exists");
    }
    for created in &report.created {
        eprintln!("created {created}");
    }
    println!("export CHROMA_BACKEND=aws");
    for (name, value) in report.config.to_env() {
        println!("export {name}={}", shell_quote(&value));
    }
    Ok(())
}

/// Quotes a value for a POSIX shell when it holds anything but safe characters.
fn shell_quote(value: &str) -> String {
    let safe = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c));
    if safe {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(
            shell_quote("arn:aws:kms:us-east-1:1:key/ab-c"),
            "arn:aws:kms:us-east-1:1:key/ab-c"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
