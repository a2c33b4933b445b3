//! The `ingest` Lambda function: API Gateway write and admin routes.

use chroma_functions::lambda::{self, http, Deployment, Function};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda::init_logging();
    let deployment = Deployment::from_env(Function::Ingest).await?;
    let router = http::router(&deployment, &http::api_args_from_env()?).await?;
    http::serve(router).await
}
