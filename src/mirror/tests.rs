//! In-process tests of the whole router: a fast stable and a slow, dead or disagreeing
//! shadow, each a local HTTP server on a free port; clients and upstreams speak HTTP/1.1,
//! h2c or gRPC.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{MirrorArgs, serve};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: MirrorArgs,
}

#[derive(Clone, Default)]
struct Upstream {
    delay: Duration,
    label: &'static str,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

async fn predict(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 2], String) {
    upstream.seen.lock().unwrap().push(headers);
    tokio::time::sleep(upstream.delay).await;
    let echo = String::from_utf8_lossy(&body).into_owned();
    (
        StatusCode::CREATED,
        [("content-type", "application/json"), ("x-upstream", "yes")],
        format!(
            r#"{{"predictions":[{{"label":"{}","score":0.75}}],"echo":{}}}"#,
            upstream.label,
            serde_json::Value::String(echo)
        ),
    )
}

async fn start_upstream(upstream: Upstream) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/predict", post(predict))
        .with_state(upstream);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A port nothing listens on.
async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

struct Running {
    addr: SocketAddr,
    metrics: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), crate::Error>>,
}

async fn start_router(flags: &[String]) -> Running {
    let cli =
        Cli::try_parse_from(std::iter::once("mirror".to_owned()).chain(flags.iter().cloned()))
            .unwrap();
    let config = cli.args.validate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = metrics_listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(config, listener, metrics_listener, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        metrics,
        stop: Some(stop),
        done,
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn post_predict(
    addr: SocketAddr,
    body: &'static str,
    headers: &[(&'static str, &'static str)],
) -> (u16, HeaderMap, Bytes, Duration) {
    let mut request =
        Request::post(format!("http://{addr}/predict")).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let start = Instant::now();
    let response = client()
        .request(
            request
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body, start.elapsed())
}

async fn metrics_text(addr: SocketAddr) -> String {
    let response = client()
        .get(format!("http://{addr}/metrics").parse().unwrap())
        .await
        .unwrap();
    String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

/// The value of one sample line, e.g. `modelship_mirror_comparisons_total{result="match"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Polls the metrics until `series` reaches `at_least`, within a deadline.
async fn wait_for_metric(addr: SocketAddr, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics_text(addr).await;
        if sample(&text, series).is_some_and(|v| v >= at_least) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn flags(stable: SocketAddr, shadow: Option<SocketAddr>, extra: &[&str]) -> Vec<String> {
    let mut flags = vec![format!("--stable=http://{stable}")];
    if let Some(shadow) = shadow {
        flags.push(format!("--shadow=http://{shadow}"));
    }
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

const BODY: &str = r#"{"instances":[[1,2]]}"#;

#[tokio::test]
async fn client_gets_stable_answer_unchanged_and_undelayed_by_a_slow_shadow() {
    let stable = Upstream {
        label: "a",
        ..Default::default()
    };
    let shadow = Upstream {
        label: "a",
        delay: Duration::from_millis(1500),
        ..Default::default()
    };
    let stable_addr = start_upstream(stable.clone()).await;
    let shadow_addr = start_upstream(shadow.clone()).await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--compare-pointer=/predictions"],
    ))
    .await;

    let (direct_status, direct_headers, direct_body, _) =
        post_predict(stable_addr, BODY, &[]).await;
    let (status, headers, body, elapsed) = post_predict(
        router.addr,
        BODY,
        &[
            ("authorization", "Bearer secret"),
            ("cookie", "c=1"),
            ("x-request-id", "r1"),
        ],
    )
    .await;
    assert!(
        elapsed < Duration::from_millis(1000),
        "the client waited for the shadow: {elapsed:?}"
    );
    assert_eq!(status, direct_status);
    assert_eq!(body, direct_body);
    assert_eq!(headers.get("x-upstream").unwrap(), "yes");
    assert_eq!(
        headers.get("content-type"),
        direct_headers.get("content-type")
    );

    // The copy reaches the shadow without credentials, marked, and agrees.
    let text = wait_for_metric(
        router.metrics,
        r#"modelship_mirror_comparisons_total{result="match"}"#,
        1.0,
    )
    .await;
    let shadow_seen = shadow.seen.lock().unwrap()[0].clone();
    assert!(shadow_seen.get("authorization").is_none());
    assert!(shadow_seen.get("cookie").is_none());
    assert_eq!(shadow_seen.get("x-modelship-shadow").unwrap(), "1");
    assert_eq!(shadow_seen.get("x-request-id").unwrap(), "r1");
    let stable_seen = stable.seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(stable_seen.get("authorization").unwrap(), "Bearer secret");
    assert!(stable_seen.get("x-modelship-shadow").is_none());
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_requests_total{code="201",track="stable"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_requests_total{code="201",track="shadow"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_prediction_label_total{label="a",track="shadow"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_prediction_value_count{track="stable"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_dead_shadow_changes_nothing_for_clients_and_counts_as_shadow_error() {
    let stable_addr = start_upstream(Upstream {
        label: "a",
        ..Default::default()
    })
    .await;
    let router = start_router(&flags(
        stable_addr,
        Some(dead_address().await),
        &["--compare-pointer=/predictions"],
    ))
    .await;
    let (_, _, direct_body, _) = post_predict(stable_addr, BODY, &[]).await;
    for _ in 0..20 {
        let (status, _, body, _) = post_predict(router.addr, BODY, &[]).await;
        assert_eq!(status, 201);
        assert_eq!(body, direct_body);
    }
    let text = wait_for_metric(
        router.metrics,
        r#"modelship_mirror_comparisons_total{result="shadow_error"}"#,
        20.0,
    )
    .await;
    // After five connection failures (the default) copies pause and count without a try.
    let tried = sample(
        &text,
        r#"modelship_mirror_requests_total{code="error",track="shadow"}"#,
    )
    .unwrap_or_default();
    let paused = sample(
        &text,
        r#"modelship_mirror_dropped_total{reason="shadow_unavailable"}"#,
    )
    .unwrap_or_default();
    assert!(tried >= 5.0 && paused >= 1.0, "{text}");
    assert_eq!(tried + paused, 20.0, "{text}");
}

#[tokio::test]
async fn a_shadow_past_its_timeout_is_a_shadow_error() {
    let stable_addr = start_upstream(Upstream {
        label: "a",
        ..Default::default()
    })
    .await;
    let shadow_addr = start_upstream(Upstream {
        label: "a",
        delay: Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--shadow-timeout=100ms"],
    ))
    .await;
    let (_, _, _, elapsed) = post_predict(router.addr, BODY, &[]).await;
    assert!(elapsed < Duration::from_millis(1000));
    let text = wait_for_metric(
        router.metrics,
        r#"modelship_mirror_comparisons_total{result="shadow_error"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_requests_total{code="timeout",track="shadow"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn disagreement_is_a_mismatch() {
    let stable_addr = start_upstream(Upstream {
        label: "a",
        ..Default::default()
    })
    .await;
    let shadow_addr = start_upstream(Upstream {
        label: "b",
        ..Default::default()
    })
    .await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--compare-pointer=/predictions"],
    ))
    .await;
    post_predict(router.addr, BODY, &[]).await;
    let text = wait_for_metric(
        router.metrics,
        r#"modelship_mirror_comparisons_total{result="mismatch"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_prediction_label_total{label="a",track="stable"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_prediction_label_total{label="b",track="shadow"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"modelship_mirror_abs_diff_count"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn bounds_drop_copies_and_count_them() {
    let stable = Upstream {
        label: "a",
        ..Default::default()
    };
    let shadow = Upstream {
        label: "a",
        ..Default::default()
    };
    let stable_addr = start_upstream(stable.clone()).await;
    let shadow_addr = start_upstream(shadow.clone()).await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--max-body-bytes=8"],
    ))
    .await;
    let (status, _, body, _) = post_predict(router.addr, BODY, &[]).await;
    assert_eq!(status, 201);
    assert!(
        String::from_utf8_lossy(&body).contains(r#"\"instances\""#),
        "stable got the whole body: {body:?}"
    );
    wait_for_metric(
        router.metrics,
        r#"modelship_mirror_dropped_total{reason="body_too_large"}"#,
        1.0,
    )
    .await;
    assert!(shadow.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn no_shadow_no_mirror() {
    let stable_addr = start_upstream(Upstream {
        label: "a",
        ..Default::default()
    })
    .await;
    let router = start_router(&flags(stable_addr, None, &[])).await;
    let (status, _, _, _) = post_predict(router.addr, BODY, &[]).await;
    assert_eq!(status, 201);
    let text = metrics_text(router.metrics).await;
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_requests_total{code="201",track="stable"}"#
        ),
        Some(1.0)
    );
    assert!(
        !text.contains(r#"track="shadow"}"#)
            || sample(
                &text,
                r#"modelship_mirror_request_duration_seconds_count{track="shadow"}"#
            ) == Some(0.0)
    );
}

#[tokio::test]
async fn sampling_by_request_id_mirrors_the_share() {
    let stable_addr = start_upstream(Upstream {
        label: "a",
        ..Default::default()
    })
    .await;
    let shadow = Upstream {
        label: "a",
        ..Default::default()
    };
    let shadow_addr = start_upstream(shadow.clone()).await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--mirror-percent=50"],
    ))
    .await;
    let ids: Vec<&'static str> = (0..200)
        .map(|i| &*Box::leak(format!("id-{i}").into_boxed_str()))
        .collect();
    for id in &ids {
        post_predict(router.addr, BODY, &[("x-request-id", id)]).await;
    }
    let expected = ids
        .iter()
        .filter(|id| {
            super::sample::Sampler::new(50.0).by_request_id(Some(id.as_bytes()))
                == super::sample::Decision::Mirror
        })
        .count();
    assert!((60..140).contains(&expected), "{expected}");
    wait_for_metric(
        router.metrics,
        r#"modelship_mirror_comparisons_total{result="match"}"#,
        expected as f64,
    )
    .await;
    let mut mirrored: Vec<String> = shadow
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|h| h.get("x-request-id").unwrap().to_str().unwrap().to_owned())
        .collect();
    mirrored.sort();
    let mut wanted: Vec<String> = ids
        .iter()
        .filter(|id| {
            super::sample::Sampler::new(50.0).by_request_id(Some(id.as_bytes()))
                == super::sample::Decision::Mirror
        })
        .map(|id| id.to_string())
        .collect();
    wanted.sort();
    assert_eq!(mirrored, wanted);
}

#[tokio::test]
async fn stable_down_is_a_bad_gateway() {
    let router = start_router(&flags(dead_address().await, None, &[])).await;
    let (status, _, _, _) = post_predict(router.addr, BODY, &[]).await;
    assert_eq!(status, 502);
    let text = metrics_text(router.metrics).await;
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_requests_total{code="error",track="stable"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let stable = Upstream {
        label: "a",
        delay: Duration::from_millis(300),
        ..Default::default()
    };
    let stable_addr = start_upstream(stable.clone()).await;
    let mut router = start_router(&flags(stable_addr, None, &[])).await;
    let addr = router.addr;
    let in_flight = tokio::spawn(async move { post_predict(addr, BODY, &[]).await });
    // Shut down once the request is with stable.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stable.seen.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the request never reached stable"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    router.stop.take().unwrap().send(()).unwrap();
    let (status, _, _, _) = in_flight.await.unwrap();
    assert_eq!(status, 201);
    tokio::time::timeout(Duration::from_secs(5), router.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// What a hyper-served test upstream answers.
#[derive(Clone, Copy)]
enum Reply {
    /// `predict`'s JSON answer with this label.
    Json(&'static str),
    /// A unary gRPC answer: this message, then `grpc-status` in the trailers.
    Grpc(&'static [u8], &'static str),
    /// A gRPC error without a message, its `grpc-status` in the headers.
    GrpcStatusOnly(&'static str),
}

/// A test upstream served by hyper on either protocol, recording each request's version and
/// headers.
#[derive(Clone)]
struct Served {
    reply: Reply,
    seen: Arc<Mutex<Vec<(Version, HeaderMap)>>>,
}

impl Served {
    fn new(reply: Reply) -> Self {
        Served {
            reply,
            seen: Arc::default(),
        }
    }

    fn seen(&self) -> Vec<(Version, HeaderMap)> {
        self.seen.lock().unwrap().clone()
    }
}

type Frames =
    StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

async fn start_served(upstream: Served) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let upstream = upstream.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await?.to_bytes();
                        upstream
                            .seen
                            .lock()
                            .unwrap()
                            .push((parts.version, parts.headers));
                        let mut status_header = None;
                        let (content_type, frames) = match upstream.reply {
                            Reply::Json(label) => (
                                "application/json",
                                vec![Frame::data(Bytes::from(format!(
                                    r#"{{"predictions":[{{"label":"{label}","score":0.75}}],"echo":{}}}"#,
                                    serde_json::Value::String(
                                        String::from_utf8_lossy(&body).into_owned()
                                    )
                                )))],
                            ),
                            Reply::Grpc(message, status) => {
                                let mut trailers = HeaderMap::new();
                                trailers.insert("grpc-status", status.parse().unwrap());
                                (
                                    "application/grpc",
                                    vec![
                                        Frame::data(Bytes::from(grpc_frame(message))),
                                        Frame::trailers(trailers),
                                    ],
                                )
                            }
                            Reply::GrpcStatusOnly(status) => {
                                status_header = Some(status);
                                ("application/grpc", vec![])
                            }
                        };
                        let frames: Vec<Result<_, Infallible>> =
                            frames.into_iter().map(Ok).collect();
                        let mut response =
                            hyper::Response::new(StreamBody::new(futures::stream::iter(frames)));
                        response
                            .headers_mut()
                            .insert("content-type", content_type.parse().unwrap());
                        if let Some(status) = status_header {
                            response
                                .headers_mut()
                                .insert("grpc-status", status.parse().unwrap());
                        }
                        Ok::<hyper::Response<Frames>, hyper::Error>(response)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A gRPC length-prefixed message, uncompressed.
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// A client that speaks HTTP/2 with prior knowledge.
fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

#[tokio::test]
async fn h2c_clients_get_stables_answer_over_either_upstream_protocol() {
    for protocol in ["h2c", "http1"] {
        let stable = Served::new(Reply::Json("a"));
        let stable_addr = start_served(stable.clone()).await;
        let router = start_router(&flags(
            stable_addr,
            None,
            &[&format!("--stable-protocol={protocol}")],
        ))
        .await;
        let response = h2c_client()
            .request(
                Request::post(format!("http://{}/predict", router.addr))
                    .header("content-type", "application/json")
                    .header("te", "trailers")
                    .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.version(), Version::HTTP_2, "{protocol}");
        assert_eq!(response.status(), 200, "{protocol}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains(r#""label":"a""#),
            "{protocol}: {body:?}"
        );
        let seen = stable.seen();
        let expected = if protocol == "h2c" {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        assert_eq!(seen.len(), 1, "{protocol}");
        assert_eq!(seen[0].0, expected, "{protocol}");
        // `te: trailers` is for HTTP/2 peers only.
        assert_eq!(
            seen[0].1.get("te").is_some(),
            protocol == "h2c",
            "{protocol}"
        );
    }
}

#[tokio::test]
async fn http1_clients_reach_h2c_tracks() {
    let stable = Served::new(Reply::Json("a"));
    let shadow = Served::new(Reply::Json("a"));
    let stable_addr = start_served(stable.clone()).await;
    let shadow_addr = start_served(shadow.clone()).await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &[
            "--stable-protocol=h2c",
            "--shadow-protocol=h2c",
            "--compare-pointer=/predictions",
        ],
    ))
    .await;
    for _ in 0..3 {
        let (status, _, body, _) = post_predict(
            router.addr,
            BODY,
            &[("connection", "keep-alive"), ("te", "gzip")],
        )
        .await;
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains(r#""label":"a""#));
    }
    wait_for_metric(
        router.metrics,
        r#"modelship_mirror_comparisons_total{result="match"}"#,
        3.0,
    )
    .await;
    for (version, headers) in stable.seen().into_iter().chain(shadow.seen()) {
        assert_eq!(version, Version::HTTP_2);
        for name in [
            "connection",
            "keep-alive",
            "te",
            "transfer-encoding",
            "host",
        ] {
            assert!(headers.get(name).is_none(), "{name} reached an HTTP/2 peer");
        }
    }
}

#[tokio::test]
async fn an_h2c_upgrade_request_gets_stables_answer_in_http1() {
    let stable = Upstream {
        label: "a",
        ..Default::default()
    };
    let stable_addr = start_upstream(stable.clone()).await;
    let router = start_router(&flags(stable_addr, None, &[])).await;
    let (_, _, direct_body, _) = post_predict(stable_addr, BODY, &[]).await;
    // Written by hand: HTTP clients may treat `Upgrade` themselves.
    let mut stream = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let request = format!(
        "POST /predict HTTP/1.1\r\nHost: router\r\n\
         Connection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the router kept the connection open")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201 "), "{answer}");
    assert!(
        answer.ends_with(std::str::from_utf8(&direct_body).unwrap()),
        "{answer}"
    );
    let (head, _) = answer.split_once("\r\n\r\n").unwrap();
    assert!(!head.to_ascii_lowercase().contains("upgrade"), "{head}");
    let seen = stable.seen.lock().unwrap().last().unwrap().clone();
    assert!(seen.get("upgrade").is_none());
    assert!(seen.get("http2-settings").is_none());
}

/// Calls a unary method through the router as a gRPC client does.
async fn grpc_call(addr: SocketAddr, message: &[u8]) -> (u16, Bytes, Option<HeaderMap>) {
    let response = h2c_client()
        .request(
            // Not the Open Inference Protocol's method: these messages compare byte for byte.
            Request::post(format!("http://{addr}/pkg.Predictor/Predict"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from(grpc_frame(message))))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (status, collected.to_bytes(), trailers)
}

#[tokio::test]
async fn grpc_calls_keep_their_trailers_and_are_compared_by_status_and_message() {
    const ANSWER: &[u8] = b"\x0a\x05model";
    for (shadow_reply, result) in [
        (Reply::Grpc(ANSWER, "0"), "match"),
        (Reply::Grpc(b"\x0a\x05other", "0"), "mismatch"),
        (Reply::Grpc(ANSWER, "13"), "shadow_error"),
    ] {
        let stable = Served::new(Reply::Grpc(ANSWER, "0"));
        let shadow = Served::new(shadow_reply);
        let stable_addr = start_served(stable.clone()).await;
        let shadow_addr = start_served(shadow.clone()).await;
        let router = start_router(&flags(
            stable_addr,
            Some(shadow_addr),
            &["--stable-protocol=h2c", "--shadow-protocol=h2c"],
        ))
        .await;
        let (status, body, trailers) = grpc_call(router.addr, b"\x0a\x03req").await;
        assert_eq!(status, 200);
        assert_eq!(body, grpc_frame(ANSWER));
        assert_eq!(trailers.expect("trailers").get("grpc-status").unwrap(), "0");
        let text = wait_for_metric(
            router.metrics,
            &format!(r#"modelship_mirror_comparisons_total{{result="{result}"}}"#),
            1.0,
        )
        .await;
        for other in ["match", "mismatch", "shadow_error", "uncomparable"] {
            if other != result {
                let series = format!(r#"modelship_mirror_comparisons_total{{result="{other}"}}"#);
                assert_eq!(sample(&text, &series).unwrap_or_default(), 0.0, "{text}");
            }
        }
        // Requests count with the HTTP status of their gRPC status, so that the error-rate
        // queries see gRPC errors.
        let shadow_code = if result == "shadow_error" {
            "500"
        } else {
            "200"
        };
        for (track, code) in [("stable", "200"), ("shadow", shadow_code)] {
            let series =
                format!(r#"modelship_mirror_requests_total{{code="{code}",track="{track}"}}"#);
            assert_eq!(sample(&text, &series), Some(1.0), "{series}:\n{text}");
        }
        let (version, headers) = shadow.seen().pop().expect("the shadow got the copy");
        assert_eq!(version, Version::HTTP_2);
        assert_eq!(headers.get("x-modelship-shadow").unwrap(), "1");
        assert_eq!(headers.get("te").unwrap(), "trailers");
        assert_eq!(headers.get("content-type").unwrap(), "application/grpc");
        let (_, headers) = stable.seen().pop().unwrap();
        assert_eq!(headers.get("te").unwrap(), "trailers");
    }
}

#[tokio::test]
async fn while_closing_an_h2c_connection_gets_a_goaway_after_an_answer() {
    let stable_addr = start_upstream(Upstream {
        label: "a",
        ..Default::default()
    })
    .await;
    let mut router = start_router(&flags(stable_addr, None, &["--shutdown-delay=30s"])).await;
    let stream = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let closed = tokio::spawn(connection);
    let addr = router.addr;
    let request = || {
        Request::post(format!("http://{addr}/predict"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .unwrap()
    };
    assert_eq!(sender.send_request(request()).await.unwrap().status(), 201);

    router.stop.take().unwrap().send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = client()
            .get(format!("http://{}/readyz", router.metrics).parse().unwrap())
            .await
            .unwrap();
        if response.status() == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "the router never became unready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still served while closing, without `Connection: close` (an HTTP/2 client would reject
    // the answer), then the connection closes long before the shutdown delay is over.
    let response = sender.send_request(request()).await.unwrap();
    assert_eq!(response.status(), 201);
    assert!(response.headers().get("connection").is_none());
    response.into_body().collect().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the connection is still open")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_grpc_error_of_stable_reaches_the_client_and_is_uncomparable() {
    let stable_addr = start_served(Served::new(Reply::GrpcStatusOnly("5"))).await;
    let shadow_addr = start_served(Served::new(Reply::Grpc(b"\x0a\x01a", "0"))).await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--stable-protocol=h2c", "--shadow-protocol=h2c"],
    ))
    .await;
    let response = h2c_client()
        .request(
            Request::post(format!("http://{}/pkg.Service/Method", router.addr))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from(grpc_frame(b"\x0a\x01q"))))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("grpc-status").unwrap(), "5");
    assert!(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    let text = wait_for_metric(
        router.metrics,
        r#"modelship_mirror_comparisons_total{result="uncomparable"}"#,
        1.0,
    )
    .await;
    // NOT_FOUND, counted as HTTP's.
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_requests_total{code="404",track="stable"}"#
        ),
        Some(1.0),
        "{text}"
    );
}
mod abuse;
