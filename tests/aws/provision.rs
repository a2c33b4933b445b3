//! `chroma aws init`'s provisioning: creates what is missing, nothing the second time.

use chroma_core::aws::provision::{init, InitRequest};
use chroma_core::ErrorCode;

use super::common;

fn request(name: &str) -> InitRequest {
    InitRequest {
        bucket: name.to_owned(),
        prefix: String::new(),
        table_prefix: format!("{name}-"),
        kms_key_id: None,
        compaction_queue: Some(format!("{name}-compaction.fifo")),
        region: Some("us-east-1".to_owned()),
        endpoint_url: Some(common::endpoint()),
    }
}

#[tokio::test]
async fn creates_what_is_missing_once() {
    let name = common::unique("init");
    let first = init(request(&name)).await.expect("first init");
    let created = first.created.join("\n");
    for what in ["KMS key", "S3 bucket", "DynamoDB table"] {
        assert!(created.contains(what), "{what} not created: {created}");
    }
    assert!(first.config.kms_key_id.starts_with("arn:aws:kms:"));
    assert!(first.config.compaction_queue_url.is_some());

    let second = init(request(&name)).await.expect("second init");
    assert!(second.created.is_empty(), "{:?}", second.created);
    assert_eq!(
        second.config, first.config,
        "the same key, bucket, tables and queue"
    );
}

#[tokio::test]
async fn refuses_bad_names_naming_them() {
    let name = common::unique("init");
    let mut bad = request(&name);
    bad.compaction_queue = Some("not-fifo".to_owned());
    let e = init(bad).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.message().contains(".fifo"), "{e}");

    let mut bad = request(&name);
    bad.bucket = "Not_A_Bucket".to_owned();
    let e = init(bad).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.message().contains("CHROMA_BUCKET"), "{e}");
}
