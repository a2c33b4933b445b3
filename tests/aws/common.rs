//! What every AWS test needs: the emulator's endpoint and a deployment of its own.

use chroma_core::aws::{AwsClients, AwsConfig};

/// The emulator's endpoint; panics with instructions when none is configured.
pub fn endpoint() -> String {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if url.starts_with("http://127.0.0.1:") || url.starts_with("http://localhost:") => {
            url
        }
        Ok(url) => panic!(
            "AWS_ENDPOINT_URL={url} is not a loopback emulator; these tests create and delete \
             resources, so they only run against moto on 127.0.0.1"
        ),
        Err(_) => panic!(
            "the AWS tests need moto's server: run scripts/test.sh, or `source scripts/moto.sh` \
             before cargo test"
        ),
    }
}

/// A fresh lowercase name with this prefix.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// A configuration naming resources no other test uses (the bucket, tables and key are
/// not created here); the KMS key id is left for the test to fill in.
pub fn config() -> AwsConfig {
    AwsConfig {
        bucket: unique("chroma-test"),
        prefix: "deploy/".to_owned(),
        table_prefix: format!("{}-", unique("chroma-test")),
        kms_key_id: String::new(),
        region: Some("us-east-1".to_owned()),
        endpoint_url: Some(endpoint()),
        data_key_ttl: std::time::Duration::from_secs(300),
        compaction_queue_url: None,
    }
}

pub async fn clients(config: &AwsConfig) -> AwsClients {
    AwsClients::connect(config).await
}
