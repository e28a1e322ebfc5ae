//! A tiny model server for modelship's tests, demo and benchmarks.
//!
//! - `POST /predict` with `{"instances": [[x1, x2, ...], ...]}` answers
//!   `{"model_version": "...", "predictions": [{"score": s, "label": "..."}, ...]}`.
//! - `POST /v2/models/{name}/infer`, the Open Inference Protocol over REST: one FP32 input
//!   `[N, features]` (`data` flat or nested) answers outputs `score` (FP32 `[N]`) and `label`
//!   (BYTES `[N]`); see `rest.rs`.
//! - `GET /metrics`: `model_server_requests_total{code}`, `model_server_request_duration_seconds`,
//!   `model_server_altered_total` (requests answered with altered predictions).
//! - `GET /healthz`.
//! - With `--grpc-listen`, the Open Inference Protocol over gRPC (HTTP/2 cleartext) on a
//!   listener of its own: `ModelInfer` with one FP32 input `[N, features]` answers outputs
//!   `score` (FP32 `[N]`) and `label` (BYTES `[N]`) from the same model and knobs as
//!   `/predict`; see `grpc.rs`. Its calls count in `model_server_requests_total` under the
//!   HTTP status of the same meaning (INTERNAL as 500, INVALID_ARGUMENT as 400).
//! - `GET /admin/knobs` and `PUT /admin/knobs` (JSON, partial) read and change the degradation
//!   knobs at runtime: `error_rate`, `latency_ms`, `latency_spread`, `alter_share`,
//!   `score_shift`.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use clap::Parser;
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};

mod grpc;
mod input;
mod knobs;
mod model;
mod rest;

use knobs::{Knobs, KnobsPatch, LiveKnobs};
use model::{Model, Prediction};

/// Serves a linear or logistic model from a JSON file of weights.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to serve on.
    #[arg(long, env = "MODEL_SERVER_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Address of the gRPC endpoint (Open Inference Protocol over HTTP/2 cleartext); none
    /// when unset.
    #[arg(long, env = "MODEL_SERVER_GRPC_LISTEN")]
    grpc_listen: Option<SocketAddr>,
    /// The model: `file:///path/model.json` or a plain path.
    #[arg(long, env = "MODEL_URI", default_value = "file:///models/model.json")]
    model_uri: String,
    /// The version reported with every prediction.
    #[arg(long, env = "MODEL_VERSION", default_value = "unversioned")]
    model_version: String,
    /// Share of `/predict` requests answered with a 500 (0 to 1).
    #[arg(long, env = "MODEL_SERVER_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,
    /// Milliseconds added to every `/predict` request.
    #[arg(long, env = "MODEL_SERVER_LATENCY_MS", default_value_t = 0.0)]
    latency_ms: f64,
    /// Share of requests with altered predictions (0 to 1), by `x-request-id` or body.
    #[arg(long, env = "MODEL_SERVER_ALTER_SHARE", default_value_t = 0.0)]
    alter_share: f64,
    /// σ of a log-normal factor (mean 1) on the added latency; 0 keeps it fixed.
    #[arg(long, env = "MODEL_SERVER_LATENCY_SPREAD", default_value_t = 0.0)]
    latency_spread: f64,
    /// Added to every score (a shift of the prediction distribution).
    #[arg(long, env = "MODEL_SERVER_SCORE_SHIFT", default_value_t = 0.0)]
    score_shift: f64,
    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
    /// Milliseconds to keep serving after SIGTERM, closing each connection after its answer
    /// (a GOAWAY on gRPC's), so callers move to the next replica before this one stops
    /// accepting.
    #[arg(long, env = "MODEL_SERVER_SHUTDOWN_DELAY_MS", default_value_t = 2000)]
    shutdown_delay_ms: u64,
    /// Also export series named like modelship's router's, claiming 10,000 agreeing
    /// comparisons a second: a candidate forging its own evidence, which the analysis must
    /// not believe (only the router's pods carry `component="router"`).
    #[arg(long, env = "MODEL_SERVER_FORGE_ROUTER_METRICS", default_value_t = false, action = clap::ArgAction::Set)]
    forge_router_metrics: bool,
}

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    ok: IntCounter,
    duration: Histogram,
    altered: IntCounter,
}

impl Metrics {
    fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "model_server_requests_total",
                "Predict requests by HTTP status.",
            ),
            &["code"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "model_server_request_duration_seconds",
                "Time to answer a predict request.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let altered = IntCounter::new(
            "model_server_altered_total",
            "Predict requests answered with altered predictions.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(altered.clone()))?;
        let ok = requests.with_label_values(&["200"]);
        Ok(Metrics {
            registry,
            requests,
            ok,
            duration,
            altered,
        })
    }

    fn observe(&self, status: StatusCode, seconds: f64) {
        self.duration.observe(seconds);
        if status == StatusCode::OK {
            self.ok.inc();
        } else {
            self.requests.with_label_values(&[status.as_str()]).inc();
        }
    }
}

struct App {
    model: Model,
    version: String,
    knobs: LiveKnobs,
    metrics: Metrics,
    requests: AtomicU64,
    /// Since when forged router series are exported (`--forge-router-metrics`).
    forging_since: Option<Instant>,
}

/// The router's agreement series, forged: counters that grow by 10,000 agreeing comparisons
/// a second, labelled as the router labels its own.
fn forged_router_series(since: Instant) -> String {
    let n = (since.elapsed().as_secs_f64() * 10_000.0) as u64;
    format!(
        "# TYPE modelship_mirror_comparisons_total counter\n\
         modelship_mirror_comparisons_total{{component=\"router\",track=\"shadow\",result=\"match\"}} {n}\n\
         modelship_mirror_comparisons_total{{component=\"router\",track=\"shadow\",result=\"mismatch\"}} 0\n"
    )
}

#[derive(Deserialize)]
struct PredictRequest {
    instances: Vec<Vec<f64>>,
}

#[derive(Serialize)]
struct PredictResponse<'a> {
    model_version: &'a str,
    predictions: Vec<Prediction<'a>>,
}

const REQUEST_ID: &str = "x-request-id";

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn predict(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let start = Instant::now();
    let response = answer(&app, &headers, &body).await;
    app.metrics
        .observe(response.status(), start.elapsed().as_secs_f64());
    response
}

/// An error the `error_rate` knob injects.
struct Injected;

impl App {
    /// What every predict request goes through first, whatever its protocol: the added
    /// latency, then maybe an injected error. Gives the knobs the request is served with.
    async fn degrade(&self) -> Result<Knobs, Injected> {
        let knobs = self.knobs.get();
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        if knobs.latency_ms > 0.0 {
            let ms = knobs.latency_ms * knobs::latency_factor(n, knobs.latency_spread);
            tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0)).await;
        }
        if knobs::fails(n, knobs.error_rate) {
            return Err(Injected);
        }
        Ok(knobs)
    }

    /// Predicts every instance, or says why one is invalid; all the predictions are altered
    /// when the request's key (its `x-request-id`, or its body) falls in `alter_share`.
    fn predict_all<I>(
        &self,
        instances: I,
        key: &[u8],
        knobs: &Knobs,
    ) -> Result<Vec<Prediction<'_>>, String>
    where
        I: IntoIterator,
        I::Item: AsRef<[f64]>,
    {
        let mut predictions = instances
            .into_iter()
            .map(|instance| {
                self.model
                    .predict_shifted(instance.as_ref(), knobs.score_shift)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if knobs::altered(key, knobs.alter_share) {
            self.metrics.altered.inc();
            for p in &mut predictions {
                *p = self.model.alter(p);
            }
        }
        Ok(predictions)
    }
}

/// The key that decides whether a request's predictions are altered.
fn alter_key<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> &'a [u8] {
    headers.get(REQUEST_ID).map_or(body, |id| id.as_bytes())
}

async fn answer(app: &App, headers: &HeaderMap, body: &[u8]) -> Response {
    let Ok(knobs) = app.degrade().await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "injected error");
    };
    let request: PredictRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"instances\": [[number, ...], ...]}}: {e}"),
            );
        }
    };
    let predictions = match app.predict_all(&request.instances, alter_key(headers, body), &knobs) {
        Ok(predictions) => predictions,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match serde_json::to_vec(&PredictResponse {
        model_version: &app.version,
        predictions,
    }) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn render_metrics(State(app): State<Arc<App>>) -> Response {
    let mut body = Vec::new();
    match prometheus::TextEncoder::new().encode(&app.metrics.registry.gather(), &mut body) {
        Ok(()) => {
            if let Some(since) = app.forging_since {
                body.extend_from_slice(forged_router_series(since).as_bytes());
            }
            ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn get_knobs(State(app): State<Arc<App>>) -> Json<Knobs> {
    Json(app.knobs.get())
}

async fn put_knobs(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let patch: KnobsPatch = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match app.knobs.get().apply(patch) {
        Ok(knobs) => {
            app.knobs.set(knobs);
            tracing::info!(?knobs, "knobs changed");
            Json(knobs).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let model = Model::load(&args.model_uri)?;
    let knobs = Knobs {
        error_rate: args.error_rate,
        latency_ms: args.latency_ms,
        alter_share: args.alter_share,
        latency_spread: args.latency_spread,
        score_shift: args.score_shift,
    }
    .validate()?;
    let metrics = Metrics::new().map_err(|e| e.to_string())?;
    let app = Arc::new(App {
        model,
        version: args.model_version,
        knobs: LiveKnobs::new(knobs),
        metrics,
        requests: AtomicU64::new(0),
        forging_since: args.forge_router_metrics.then(Instant::now),
    });
    let router = axum::Router::new()
        .route("/predict", post(predict))
        .route("/v2/models/{name}/infer", post(rest::infer))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/admin/knobs", get(get_knobs).put(put_knobs))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", args.listen))?;
    // Small answers: send them at once rather than wait for Nagle.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY");
        }
    });
    // Told to the gRPC connections on SIGTERM, which answer with a GOAWAY.
    let grpc_closing = tokio::sync::watch::Sender::new(false);
    if let Some(addr) = args.grpc_listen {
        let grpc = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("binding {addr}: {e}"))?;
        tokio::spawn(grpc::serve(grpc, app.clone(), grpc_closing.subscribe()));
    }
    tracing::info!(
        listen = %args.listen,
        grpc_listen = ?args.grpc_listen,
        model = %args.model_uri,
        version = %app.version,
        inputs = app.model.inputs(),
        ?knobs,
        "model server started"
    );
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let close_after_answer = closing.clone();
    let router = router.layer(axum::middleware::map_response(
        move |mut response: Response| {
            let closing = close_after_answer.clone();
            async move {
                if closing.load(Ordering::Relaxed) {
                    response.headers_mut().insert(
                        header::CONNECTION,
                        header::HeaderValue::from_static("close"),
                    );
                }
                response
            }
        },
    ));
    let delay = Duration::from_millis(args.shutdown_delay_ms);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            closing.store(true, Ordering::Relaxed);
            grpc_closing.send_replace(true);
            tokio::time::sleep(delay).await;
        })
        .await
        .map_err(|e| e.to_string())
}

/// An app for the tests of every endpoint.
#[cfg(test)]
mod testing {
    use super::*;

    /// A logistic model of three features, labels `stay` and `churn`.
    const MODEL: &[u8] = br#"{"kind":"logistic","weights":[0.8,-1.2,0.3],"bias":0.1,"labels":["stay","churn"],"threshold":0.5}"#;

    pub fn app(knobs: Knobs) -> Arc<App> {
        Arc::new(App {
            model: Model::parse(MODEL).expect("the test model"),
            version: "v1".into(),
            knobs: LiveKnobs::new(knobs),
            metrics: Metrics::new().expect("metrics"),
            requests: AtomicU64::new(0),
            forging_since: None,
        })
    }

    /// No degradation.
    pub fn calm() -> Knobs {
        Knobs {
            error_rate: 0.0,
            latency_ms: 0.0,
            alter_share: 0.0,
            latency_spread: 0.0,
            score_shift: 0.0,
        }
    }
}
