//! The operator's HTTP endpoints: `/metrics`, `/livez`, `/readyz`.
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Which parts of the operator are ready. The leader is ready once every watched kind has been
/// listed in full; a standby replica, which watches nothing, is ready at once.
#[derive(Clone, Default)]
pub struct Readiness {
    parts: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

impl Readiness {
    /// Registers a part that is not ready yet.
    pub fn expect(&self, part: &'static str) {
        self.parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(part, false);
    }

    pub fn set_ready(&self, part: &'static str) {
        self.parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(part, true);
    }

    /// The parts still waiting; empty when ready.
    pub fn waiting(&self) -> Vec<&'static str> {
        self.parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, r)| !**r)
            .map(|(k, _)| *k)
            .collect()
    }
}

/// Resolves once a reflector store has its first full list. `Store::wait_until_ready` wakes
/// only its latest waiter, and the controller itself waits on its own store, so poll.
pub async fn until_ready<K>(store: &kube::runtime::reflector::Store<K>)
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(Ok(())) = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            store.wait_until_ready(),
        )
        .await
        {
            return;
        }
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    readiness: Readiness,
}

async fn render_metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let waiting = s.readiness.waiting();
    if waiting.is_empty() {
        (StatusCode::OK, "ok\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "waiting for the first full list of: {}\n",
                waiting.join(", ")
            ),
        )
    }
}

/// Binds the admin listener; fails at once when the address is taken.
pub async fn bind(addr: SocketAddr) -> crate::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::Error::Config(format!(
            "cannot listen on {addr} for /metrics, /livez and /readyz: {e}"
        ))
    })
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(AdminState { metrics, readiness });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_part_is() {
        let r = Readiness::default();
        assert!(r.waiting().is_empty());
        r.expect("deployment");
        r.expect("pipeline");
        r.set_ready("pipeline");
        assert_eq!(r.waiting(), vec!["deployment"]);
        r.set_ready("deployment");
        assert!(r.waiting().is_empty());
    }
}
