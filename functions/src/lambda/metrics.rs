//! The functions' metrics (every figure of [`chroma_core::metrics`]) as CloudWatch
//! Embedded Metric Format records: written to the function's log (stdout) after each
//! invocation, from which CloudWatch extracts them as metrics of the namespace
//! `CHROMA_METRICS_NAMESPACE` (the template sets `Chroma/<stack name>`; default
//! `Chroma`), with the dimension `function` and each metric's labels as further
//! dimensions.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use axum::middleware::Next;
use axum::response::Response;
use metrics_cloudwatch_embedded::{Builder, Collector};

use super::Function;

static COLLECTOR: OnceLock<&'static Collector> = OnceLock::new();

/// The namespace metrics go to when `CHROMA_METRICS_NAMESPACE` is unset or empty.
pub const DEFAULT_NAMESPACE: &str = "Chroma";

/// Installs the EMF recorder for `function` (once per process).
pub fn init(function: Function) {
    if COLLECTOR.get().is_some() {
        return;
    }
    let namespace = std::env::var("CHROMA_METRICS_NAMESPACE")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    match Builder::new()
        .cloudwatch_namespace(namespace)
        .with_dimension("function", function.name())
        .init()
    {
        Ok(collector) => {
            chroma_core::metrics::describe();
            let _ = COLLECTOR.set(collector);
        }
        Err(e) => tracing::warn!(error = %e, "metrics are off: cannot install the recorder"),
    }
}

/// Writes what was recorded since the last flush as EMF records, one JSON line each.
pub fn flush() {
    flush_to(&mut std::io::stdout().lock());
}

/// [`flush`] to `out`.
pub fn flush_to(out: &mut impl std::io::Write) {
    if let Some(collector) = COLLECTOR.get() {
        if let Err(e) = collector.flush(out) {
            tracing::warn!(error = %e, "cannot write metrics");
        }
    }
}

/// Middleware of the HTTP functions: flushes after each request.
pub async fn flush_after(request: Request<Body>, next: Next) -> Response {
    let response = next.run(request).await;
    flush();
    response
}
