//! `chroma run`: serves the HTTP API (over HTTP or HTTPS) until a signal, refusing to
//! listen beyond loopback without authentication.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use chroma_core::api::{self, AppState};

use crate::{api_config, open, tls, RunArgs};

/// `chroma run`: serves until SIGINT or SIGTERM, then finishes in-flight requests.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    if !args.api.auth && !is_loopback(&args.host) {
        anyhow::bail!(
            "refusing to serve {} without authentication: anyone who can reach it could read \
             and change every collection. Start with --auth (and create a key with `chroma keys \
             create`), or listen on a loopback address such as 127.0.0.1",
            args.host
        );
    }
    chroma_core::metrics::install_prometheus();
    let opened = open(&args.storage).await?;
    let background = opened.engine.spawn_background(opened.compaction_requests);
    let config = api_config(&args.api, &opened.engine).await?;
    let router = api::router(AppState::new(opened.engine.clone(), config));

    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, backend = ?args.storage.backend, auth = args.api.auth, tls = args.tls_cert.is_some(), allow_reset = args.api.allow_reset, knn_index = %args.api.knn_index, "listening");
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = tls::config(cert, key).await?;
            // Scripts and tests read the address from this line.
            println!("listening on https://{addr}");
            tls::serve(listener, tls, router, shutdown_signal()).await?;
        }
        _ => {
            println!("listening on http://{addr}");
            api::serve(listener, router, shutdown_signal())
                .await
                .context("server failed")?;
        }
    }
    // Background work stops (a running build within about a second, committing nothing)
    // and must not hold the process up.
    opened.engine.shutdown();
    if tokio::time::timeout(Duration::from_secs(5), background)
        .await
        .is_err()
    {
        tracing::warn!("background work did not stop within 5 s");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Whether `host` names only this machine: a loopback IP or `localhost`.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
