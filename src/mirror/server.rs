//! Listeners: the client-facing server with graceful shutdown, and the small server for
//! `/metrics`, `/livez` and `/readyz`.
//!
//! The client-facing port speaks HTTP/1.1 and HTTP/2 cleartext with prior knowledge (h2c,
//! RFC 9113 section 3.3), told apart by the HTTP/2 connection preface, so gRPC clients and
//! HTTP/1.1 clients share it. The HTTP/1.1 `Upgrade: h2c` mechanism (RFC 7540 section 3.2,
//! deprecated by RFC 9113 section 3.1) is not offered: such a request is answered in HTTP/1.1 as
//! if it had no `Upgrade` header, as RFC 7540 allows a server to do, and the header, being
//! hop-by-hop, is not forwarded.
//!
//! While shutting down, an HTTP/1.1 answer carries `Connection: close`; an HTTP/2 connection
//! gets a GOAWAY instead (the header is forbidden in HTTP/2).
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::Version;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::Encoder;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};

use super::metrics::Metrics;
use super::proxy::Router;

/// Serves clients until `shutdown` resolves, then stops accepting, lets in-flight requests
/// finish (closing idle keep-alive connections at once) for at most `drain`, and returns.
/// Each worker thread runs one, on its own copy of the listening socket; `connections` is
/// shared by all.
pub async fn serve_clients(
    listener: TcpListener,
    router: Arc<Router>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    closing: Arc<AtomicBool>,
    connections: Arc<Semaphore>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(router.config.header_timeout);
    builder.http2().timer(TokioTimer::new());
    // A connection is accepted only with a place for it: past the limit, clients wait in the
    // kernel's listen backlog instead of each costing the router a task and buffers.
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
            // HTTP/2's `Connection: close`: a GOAWAY once an answer is sent while closing.
            let goaway = Arc::new(Notify::new());
            let answered = goaway.clone();
            let service = service_fn(move |request| {
                let (router, closing, answered) =
                    (router.clone(), closing.clone(), answered.clone());
                async move {
                    let http1 = request.version() < Version::HTTP_2;
                    let mut response = router.handle(request).await?;
                    // The answer is in the client's protocol, whatever stable spoke.
                    *response.version_mut() = if http1 {
                        Version::HTTP_11
                    } else {
                        Version::HTTP_2
                    };
                    if closing.load(Ordering::Relaxed) {
                        if http1 {
                            response.headers_mut().insert(
                                header::CONNECTION,
                                header::HeaderValue::from_static("close"),
                            );
                        } else {
                            answered.notify_one();
                        }
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
                () = goaway.notified() => {
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
