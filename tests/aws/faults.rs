//! The engine on S3, DynamoDB and KMS with every 7th call of each kind failing.

use chroma_core::aws::provision::{init, InitRequest};
use chroma_core::aws::AwsBackends;
use chroma_tests::faults::acknowledged_writes_survive;

use super::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_write_is_lost_and_no_manifest_names_a_missing_object() {
    let name = common::unique("faults");
    let report = init(InitRequest {
        bucket: name.clone(),
        prefix: "deploy/".to_owned(),
        table_prefix: format!("{name}-"),
        kms_key_id: None,
        compaction_queue: None,
        region: Some("us-east-1".to_owned()),
        endpoint_url: Some(common::endpoint()),
    })
    .await
    .expect("provision");
    let b = AwsBackends::connect(&report.config).await;
    let injected = acknowledged_writes_survive(b.store, b.catalog, b.key_provider, 7).await;
    assert!(injected > 20, "only {injected} faults injected");
}
