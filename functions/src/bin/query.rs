//! The `query` Lambda function: API Gateway read routes (query, get, count, listings).
//! Decoded segments stay in memory across warm invocations, raw objects in `/tmp`.

use chroma_functions::lambda::{self, http, Deployment, Function};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda::init_logging();
    let deployment = Deployment::from_env(Function::Query).await?;
    let router = http::router(&deployment, &http::api_args_from_env()?).await?;
    http::serve(router).await
}
