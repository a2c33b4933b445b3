//! The `compact` Lambda function: compaction requests from the FIFO queue and the
//! scheduled sweep (compaction, garbage collection).

use std::sync::Arc;

use chroma_functions::lambda::{self, compact, Deployment, Function};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let deployment = Arc::new(Deployment::from_env(Function::Compact).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let deployment = deployment.clone();
        async move {
            let deadline =
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.context.deadline);
            let outcome = compact::handle_until(&deployment, event.payload, Some(deadline)).await;
            lambda::metrics::flush();
            Ok::<_, lambda_runtime::Error>(outcome?)
        }
    }))
    .await
}
