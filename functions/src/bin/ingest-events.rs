//! The `ingest-events` Lambda function: files dropped under `ingest/` in the data bucket,
//! announced by S3 through SQS, are validated and upserted.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use chroma_functions::lambda::{self, ingest_events, Deployment, Function};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let deployment = Arc::new(Deployment::from_env(Function::IngestEvents).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let deployment = deployment.clone();
        async move {
            let outcome = ingest_events::handle(&deployment, event.payload).await;
            lambda::metrics::flush();
            Ok::<_, lambda_runtime::Error>(outcome)
        }
    }))
    .await
}
