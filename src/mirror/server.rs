//! Listeners: the client-facing HTTP/1.1 server with graceful shutdown, and the small
//! server for `/metrics`, `/livez` and `/readyz`.
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::Encoder;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::metrics::Metrics;
use super::proxy::Router;

/// Serves clients until `shutdown` resolves, then stops accepting, lets in-flight requests
/// finish (closing idle keep-alive connections at once) for at most `drain`, and returns.
pub async fn serve_clients(
    listener: TcpListener,
    router: Arc<Router>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    closing: Arc<AtomicBool>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(router.config.header_timeout);
    // A connection is accepted only with a place for it: past the limit, clients wait in the
    // kernel's listen backlog instead of each costing the router a task and buffers.
    let connections = Arc::new(Semaphore::new(router.config.max_connections));
    // Each connection holds a receiver; `closed()` on the sender resolves when all are gone.
    let (stop, stopping) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let place = tokio::select! {
            () = &mut shutdown => break,
            place = connections.clone().acquire_owned() => place,
        };
        let Ok(place) = place else { break };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "setting TCP_NODELAY");
        }
        let router = router.clone();
        let closing = closing.clone();
        let mut stopping = stopping.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let _place = place;
            let service = service_fn(move |request| {
                let (router, closing) = (router.clone(), closing.clone());
                async move {
                    let mut response = router.handle(request).await?;
                    if closing.load(Ordering::Relaxed) {
                        response.headers_mut().insert(
                            header::CONNECTION,
                            header::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "client connection");
            }
        });
    }
    drop(listener);
    drop(stopping);
    let _ = stop.send(());
    tracing::info!("stopped accepting; draining in-flight requests");
    if tokio::time::timeout(drain, stop.closed()).await.is_err() {
        tracing::warn!(
            ?drain,
            "in-flight requests still running after the drain timeout"
        );
    }
}

#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

/// Serves `/metrics`, `/livez` and `/readyz` until `shutdown` resolves. `/readyz` follows `ready`.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(render))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Health { metrics, ready });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn render(State(health): State<Health>) -> impl IntoResponse {
    let encoder = prometheus::TextEncoder::new();
    let mut body = Vec::with_capacity(16 * 1024);
    match encoder.encode(&health.metrics.registry().gather(), &mut body) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}
