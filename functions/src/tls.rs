//! HTTPS for `chroma run --tls-cert … --tls-key …`: rustls (TLS 1.2 and 1.3 only, its
//! safe default cipher suites), HTTP/1.1 over it, graceful shutdown like plain HTTP.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(30);

/// Loads the certificate chain and key; fails naming the file that is wrong.
pub async fn config(cert: &Path, key: &Path) -> anyhow::Result<RustlsConfig> {
    RustlsConfig::from_pem_file(cert, key)
        .await
        .with_context(|| {
            format!(
                "cannot load the TLS certificate {} and key {} (PEM files expected)",
                cert.display(),
                key.display()
            )
        })
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: RustlsConfig,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let handle = axum_server::Handle::new();
    let on_signal = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_signal.graceful_shutdown(Some(DRAIN));
    });
    let listener = listener
        .into_std()
        .context("cannot hand over the listener")?;
    axum_server::from_tcp_rustls(listener, tls)
        .context("cannot serve TLS on the listener")?
        .handle(handle)
        .serve(router.into_make_service())
        .await
        .context("server failed")
}
