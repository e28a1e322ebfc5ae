//! The built-in mirroring router (`modelship mirror`).
//!
//! Every client request goes to the stable track and the client gets stable's answer,
//! streamed. A deterministic sample of requests is also copied to the shadow track in the
//! background, within bounds (body size, requests in flight, a timeout) that drop the copy
//! rather than slow a client. The two answers are compared at JSON pointers and the results,
//! with each track's predictions, are exported as Prometheus metrics.
//!
//! One module per concern: `args` (flags and validation), `sample` (which requests are
//! mirrored), `headers` (what is forwarded and what the copy loses), `body` (bounded reading,
//! and the copy of stable's answer taken while it streams), `proxy` (the client path),
//! `shadow` (the background copy), `breaker` (pausing copies to an unreachable shadow), `budget`
//! (the memory copies may hold), `compare` (the comparison rules), `metrics`, `server`
//! (listeners and shutdown), `upstream` (the HTTP/1.1 or h2c client for each track), `grpc`
//! (gRPC answers: status and comparison).
//!
//! Clients speak HTTP/1.1 or h2c on the same port; each track is spoken to in its own protocol
//! (`--stable-protocol`, `--shadow-protocol`).
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

mod args;
mod body;
mod breaker;
mod budget;
pub mod compare;
mod grpc;
mod headers;
mod metrics;
mod proxy;
mod sample;
mod server;
mod shadow;
mod upstream;

pub use args::{Config, MirrorArgs, invalid_escape};
pub use headers::{CREDENTIAL_HEADERS, SHADOW_HEADER};

use crate::Error;

/// Runs the router until `shutdown` resolves.
pub async fn run(
    args: MirrorArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let config = args.validate()?;
    let listener = TcpListener::bind(config.listen).await?;
    let metrics_listener = TcpListener::bind(config.metrics_listen).await?;
    serve(config, listener, metrics_listener, shutdown).await
}

/// Runs the router on listeners already bound (tests bind port 0 and read the address).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    metrics_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let metrics = Arc::new(
        metrics::Metrics::new(&config.prediction_buckets, config.max_labels)
            .map_err(|e| Error::Config(format!("registering metrics: {e}")))?,
    );
    tracing::info!(
        listen = %listener.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        stable = %config.stable.authority,
        shadow = config.shadow.as_ref().map(|s| s.authority.as_str()),
        mirror_percent = config.mirror_percent,
        workers = config.workers,
        pointers = ?config.pointers,
        "mirroring router started"
    );
    let drain = config.shutdown_timeout;
    let delay = config.shutdown_delay;
    let workers = config.workers;
    let closing = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let router = proxy::Router::new(config, metrics.clone());
    let ready = Arc::new(AtomicBool::new(true));
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = tokio::spawn(server::serve_metrics(
        metrics_listener,
        metrics,
        ready.clone(),
        async move {
            let _ = metrics_stopped.await;
        },
    ));

    // One thread per worker, each with a single-threaded event loop accepting on its own copy
    // of the listening socket, as nginx's worker processes do: a request's tasks, its
    // connections to the tracks and its wake-ups stay on one thread, with nothing stolen
    // between threads and no thread woken to look for work.
    let listener = listener.into_std()?;
    let (stop, stopping) = watch::channel(false);
    let mut finished = Vec::with_capacity(workers);
    for index in 0..workers {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let worker_listener = {
            let _context = runtime.enter();
            TcpListener::from_std(listener.try_clone()?)?
        };
        let router = Arc::new(router.worker());
        let (closing, connections) = (closing.clone(), connections.clone());
        let mut stopping = stopping.clone();
        let (done, worker_finished) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("mirror-worker-{index}"))
            .spawn(move || {
                runtime.block_on(server::serve_clients(
                    worker_listener,
                    router,
                    async move {
                        let _ = stopping.wait_for(|stop| *stop).await;
                    },
                    drain,
                    closing,
                    connections,
                ));
                let _ = done.send(());
            })?;
        finished.push(worker_finished);
    }
    drop((listener, router, stopping));

    shutdown.await;
    // Not ready from the first moment of shutdown, so endpoints stop sending traffic here;
    // keep serving meanwhile, closing each connection after its answer so clients reconnect
    // elsewhere instead of racing a closed socket.
    ready.store(false, Ordering::Relaxed);
    closing.store(true, Ordering::Relaxed);
    tracing::info!(
        ?delay,
        "shutting down: unready, closing connections after each answer"
    );
    tokio::time::sleep(delay).await;
    let _ = stop.send(true);
    for worker in finished {
        // An error means the worker's thread ended without saying so: it is gone either way.
        let _ = worker.await;
    }
    let _ = stop_metrics.send(());
    match metrics_server.await {
        Ok(result) => result?,
        Err(error) => tracing::warn!(%error, "metrics server task"),
    }
    tracing::info!("mirroring router stopped");
    Ok(())
}

#[cfg(test)]
mod tests;
