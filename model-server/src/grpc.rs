//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), on a listener of
//! its own speaking HTTP/2 cleartext: `ModelInfer` runs the same model, knobs and metrics as
//! `/predict`; `ServerLive`, `ServerReady` and `ModelReady` answer true.
//!
//! `ModelInfer` takes one FP32 input of shape `[N, features]`, typed (`fp32_contents`) or raw
//! (`raw_input_contents`), and answers `score` (FP32 `[N]`) and `label` (BYTES `[N]`) in the
//! form the request used. Every answer is HTTP 200 `application/grpc` with the status in the
//! trailers: 3 for a malformed request, 8 for one over the size limit, 12 for an unknown
//! method or a compressed message, 13 for an injected error.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::combinators::WithTrailers;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use modelship_oip::prost::Message;
use modelship_oip::proto::{
    InferOutputTensor, InferTensorContents, ModelInferRequest, ModelInferResponse,
    ModelReadyRequest, ModelReadyResponse, SERVICE, ServerLiveRequest, ServerLiveResponse,
    ServerReadyRequest, ServerReadyResponse,
};
use modelship_oip::{DecodeError, decode_unary, encode_frame};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::App;

/// The largest request message taken, gRPC's usual default.
const MAX_MESSAGE: usize = 4 << 20;

/// gRPC status codes this endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    Ok = 0,
    InvalidArgument = 3,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
}

impl Code {
    /// The HTTP status of the same meaning, for `model_server_requests_total{code}`, so that
    /// one error-rate query (`code=~"5.."`) covers both protocols.
    fn http_equivalent(self) -> StatusCode {
        match self {
            Code::Ok => StatusCode::OK,
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A failed call: its code and message.
#[derive(Debug)]
struct Status {
    code: Code,
    message: String,
}

impl Status {
    fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }
}

impl From<DecodeError> for Status {
    fn from(e: DecodeError) -> Status {
        let code = match e {
            DecodeError::TooLarge { .. } => Code::ResourceExhausted,
            // This server takes no compressed message (it announces no grpc-accept-encoding).
            DecodeError::Compressed => Code::Unimplemented,
            _ => Code::InvalidArgument,
        };
        Status::new(code, e.to_string())
    }
}

/// One frame, then the status in the trailers.
type GrpcBody =
    WithTrailers<Full<Bytes>, std::future::Ready<Option<Result<HeaderMap, Infallible>>>>;

/// `grpc-message` is percent-encoded: printable ASCII but `%` goes as is.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn reply(result: Result<Bytes, Status>) -> Response<GrpcBody> {
    let (frame, code, message) = match result {
        Ok(frame) => (frame, Code::Ok, String::new()),
        Err(status) => (Bytes::new(), status.code, status.message),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code as u16));
    if !message.is_empty()
        && let Ok(value) = HeaderValue::from_str(&percent_encode(&message))
    {
        trailers.insert("grpc-message", value);
    }
    let mut response =
        Response::new(Full::new(frame).with_trailers(std::future::ready(Some(Ok(trailers)))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// Reads a request's body, at most one frame of `MAX_MESSAGE` bytes.
async fn read_body(body: Incoming) -> Result<Bytes, Status> {
    match Limited::new(body, modelship_oip::FRAME_HEADER_LEN + MAX_MESSAGE)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Status::new(
            Code::ResourceExhausted,
            format!("request over {MAX_MESSAGE} bytes"),
        )),
        Err(e) => Err(Status::new(
            Code::InvalidArgument,
            format!("reading the request: {e}"),
        )),
    }
}

/// Decodes a request and answers it with `answer`, a health call's fixed answer.
async fn unary<Req, Resp>(body: Incoming, answer: impl FnOnce(Req) -> Resp) -> Result<Bytes, Status>
where
    Req: Message + Default,
    Resp: Message,
{
    let body = read_body(body).await?;
    let request: Req = decode_unary(&body, MAX_MESSAGE)?;
    Ok(encode_frame(&answer(request)))
}

async fn handle(
    app: Arc<App>,
    request: Request<Incoming>,
) -> Result<Response<GrpcBody>, Infallible> {
    let method = request
        .uri()
        .path()
        .strip_prefix('/')
        .and_then(|path| path.strip_prefix(SERVICE))
        .and_then(|path| path.strip_prefix('/'))
        .unwrap_or_default()
        .to_owned();
    let (parts, body) = request.into_parts();
    let result = match method.as_str() {
        "ModelInfer" => {
            let start = Instant::now();
            let result = model_infer(&app, &parts.headers, body).await;
            let code = result.as_ref().map_or_else(|s| s.code, |_| Code::Ok);
            app.metrics
                .observe(code.http_equivalent(), start.elapsed().as_secs_f64());
            result
        }
        "ServerLive" => {
            unary(body, |_: ServerLiveRequest| ServerLiveResponse {
                live: true,
            })
            .await
        }
        "ServerReady" => {
            unary(body, |_: ServerReadyRequest| ServerReadyResponse {
                ready: true,
            })
            .await
        }
        "ModelReady" => {
            unary(body, |_: ModelReadyRequest| ModelReadyResponse {
                ready: true,
            })
            .await
        }
        _ => Err(Status::new(
            Code::Unimplemented,
            format!("unknown method {}", parts.uri.path()),
        )),
    };
    Ok(reply(result))
}

/// The instances of a request, flat, `features` values each: its one input, FP32
/// `[N, features]`, typed or raw.
fn instances(request: &ModelInferRequest, features: usize) -> Result<Vec<f64>, String> {
    let [input] = request.inputs.as_slice() else {
        return Err(crate::input::not_one(request.inputs.len(), features));
    };
    let count = crate::input::fp32_count(&input.name, &input.datatype, &input.shape, features)?;
    let (values, whole): (Vec<f64>, bool) = match request.raw_input_contents.first() {
        Some(raw) => {
            let (floats, rest) = raw.as_chunks::<4>();
            let values = floats
                .iter()
                .map(|b| f64::from(f32::from_le_bytes(*b)))
                .collect();
            (values, rest.is_empty())
        }
        None => {
            let values = input
                .contents
                .as_ref()
                .map(|c| c.fp32_contents.iter().map(|&x| f64::from(x)).collect())
                .unwrap_or_default();
            (values, true)
        }
    };
    if values.len() != count || !whole {
        return Err(format!(
            "input shape {:?} holds {count} values, the input has {}",
            input.shape,
            values.len()
        ));
    }
    Ok(values)
}

async fn model_infer(app: &App, headers: &HeaderMap, body: Incoming) -> Result<Bytes, Status> {
    let body = read_body(body).await?;
    let Ok(knobs) = app.degrade().await else {
        return Err(Status::new(Code::Internal, "injected error"));
    };
    let request: ModelInferRequest = decode_unary(&body, MAX_MESSAGE)?;
    let features = app.model.inputs();
    let values =
        instances(&request, features).map_err(|e| Status::new(Code::InvalidArgument, e))?;
    let predictions = app
        .predict_all(
            values.chunks_exact(features),
            crate::alter_key(headers, &body),
            &knobs,
        )
        .map_err(|e| Status::new(Code::InvalidArgument, e))?;

    let n = predictions.len() as i64;
    let scores: Vec<f32> = predictions.iter().map(|p| p.score as f32).collect();
    let labels: Vec<Vec<u8>> = predictions
        .iter()
        .map(|p| p.label.as_bytes().to_vec())
        .collect();
    let output = |name: &str, datatype: &str| InferOutputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: vec![n],
        ..Default::default()
    };
    let mut score = output("score", "FP32");
    let mut label = output("label", "BYTES");
    // Answer in the form asked: raw buffers for a raw request, typed contents otherwise.
    let raw_output_contents = if request.raw_input_contents.is_empty() {
        score.contents = Some(InferTensorContents {
            fp32_contents: scores,
            ..Default::default()
        });
        label.contents = Some(InferTensorContents {
            bytes_contents: labels,
            ..Default::default()
        });
        Vec::new()
    } else {
        let scores = scores.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut raw_labels = Vec::new();
        for l in &labels {
            // Labels come from the model file: far below 4 GiB.
            raw_labels.extend((l.len() as u32).to_le_bytes());
            raw_labels.extend_from_slice(l);
        }
        vec![scores, raw_labels]
    };
    Ok(encode_frame(&ModelInferResponse {
        model_name: request.model_name,
        model_version: app.version.clone(),
        id: request.id,
        outputs: vec![score, label],
        raw_output_contents,
        ..Default::default()
    }))
}

/// Serves gRPC on `listener` until the process ends. Once `closing` turns true, every
/// connection, new ones too, is told to go away (GOAWAY) and closes after the calls under way,
/// so callers move to another replica while this one still answers.
pub(crate) async fn serve(listener: TcpListener, app: Arc<App>, closing: watch::Receiver<bool>) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "accepting a gRPC connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY");
        }
        let app = app.clone();
        let mut closing = closing.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(app.clone(), request));
            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service);
            let mut connection = std::pin::pin!(connection);
            let closed = async move {
                if closing.wait_for(|closing| *closing).await.is_err() {
                    // No one is left to say so: serve until the process ends.
                    std::future::pending::<()>().await;
                }
            };
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = closed => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "gRPC connection");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::http::Method;
    use modelship_oip::proto::InferInputTensor;
    use modelship_oip::{Value, compare, for_each_output_value};

    use super::*;
    use crate::knobs::Knobs;
    use crate::testing::{app, calm};

    async fn start(app: Arc<App>) -> SocketAddr {
        start_closable(app, watch::channel(false).1).await
    }

    async fn start_closable(app: Arc<App>, closing: watch::Receiver<bool>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, app, closing));
        addr
    }

    /// The answer's body, grpc-status and grpc-message.
    struct Answer {
        body: Bytes,
        status: Option<String>,
        message: Option<String>,
    }

    /// One unary call over a fresh h2c connection.
    async fn call(addr: SocketAddr, method: &str, body: Bytes, request_id: Option<&str>) -> Answer {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}/{SERVICE}/{method}"))
            .header(header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers");
        if let Some(id) = request_id {
            request = request.header(crate::REQUEST_ID, id);
        }
        let response = sender
            .send_request(request.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/grpc");
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let text = |name: &str| trailers.get(name).map(|v| v.to_str().unwrap().to_owned());
        Answer {
            status: text("grpc-status"),
            message: text("grpc-message"),
            body: collected.to_bytes(),
        }
    }

    const INSTANCES: [[f32; 3]; 4] = [
        [0.0, 0.0, 0.0],
        [1.5, -0.25, 3.0],
        [-2.0, 1.0, 0.5],
        [0.125, 0.75, -1.0],
    ];

    fn infer_request(raw: bool) -> ModelInferRequest {
        let values: Vec<f32> = INSTANCES.iter().flatten().copied().collect();
        let mut input = InferInputTensor {
            name: "features".into(),
            datatype: "FP32".into(),
            shape: vec![INSTANCES.len() as i64, 3],
            ..Default::default()
        };
        let mut request = ModelInferRequest {
            model_name: "churn".into(),
            id: "r-1".into(),
            ..Default::default()
        };
        if raw {
            request.raw_input_contents =
                vec![values.iter().flat_map(|x| x.to_le_bytes()).collect()];
        } else {
            input.contents = Some(InferTensorContents {
                fp32_contents: values,
                ..Default::default()
            });
        }
        request.inputs = vec![input];
        request
    }

    /// What `/predict` answers for the same instances: (score, label) pairs.
    async fn predict(app: &App, request_id: &str) -> Vec<(f64, String)> {
        let json = serde_json::json!({ "instances": INSTANCES }).to_string();
        let mut headers = HeaderMap::new();
        headers.insert(
            crate::REQUEST_ID,
            HeaderValue::from_str(request_id).unwrap(),
        );
        let response = crate::answer(app, &headers, json.as_bytes()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        value["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["score"].as_f64().unwrap(),
                    p["label"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn scores_and_labels(response: &ModelInferResponse) -> Vec<(f64, String)> {
        let (mut scores, mut labels) = (Vec::new(), Vec::new());
        for_each_output_value(response, usize::MAX, |name, value| match (name, value) {
            ("score", Value::Number(x)) => scores.push(x),
            ("label", Value::Bytes(b)) => labels.push(String::from_utf8(b.to_vec()).unwrap()),
            other => panic!("unexpected {other:?}"),
        });
        scores.into_iter().zip(labels).collect()
    }

    #[tokio::test]
    async fn model_infer_answers_what_predict_answers() {
        // Half the requests altered: the same request id must be altered alike on both paths.
        let app = app(Knobs {
            alter_share: 0.5,
            ..calm()
        });
        let addr = start(app.clone()).await;
        let mut answers = Vec::new();
        for (raw, id) in [
            (false, "a"),
            (true, "a"),
            (false, "b"),
            (false, "c"),
            (true, "d"),
        ] {
            let answer = call(
                addr,
                "ModelInfer",
                encode_frame(&infer_request(raw)),
                Some(id),
            )
            .await;
            assert_eq!(answer.status.as_deref(), Some("0"), "{:?}", answer.message);
            let response: ModelInferResponse = decode_unary(&answer.body, MAX_MESSAGE).unwrap();
            assert_eq!(response.raw_output_contents.is_empty(), !raw);
            assert_eq!(
                (response.id.as_str(), response.model_version.as_str()),
                ("r-1", "v1")
            );
            let expected = predict(&app, id).await;
            let got = scores_and_labels(&response);
            assert_eq!(got.len(), INSTANCES.len());
            for ((score, label), (want_score, want_label)) in got.iter().zip(&expected) {
                assert_eq!(*score, f64::from(*want_score as f32));
                assert_eq!(label, want_label);
            }
            answers.push(response);
        }
        // The typed and raw answers to the same request compare equal.
        assert!(compare(&answers[0], &answers[1], 0.0, 8).agree);
        // `answer` is /predict's handler body; only its caller counts requests.
        let requests = app.metrics.requests.with_label_values(&["200"]).get();
        assert_eq!(requests, 5);
        let altered = app.metrics.altered.get();
        assert!(
            altered > 0 && altered < 10,
            "ids chosen to cover both cases: {altered}"
        );
    }

    #[tokio::test]
    async fn malformed_unknown_and_failing_calls() {
        let app = app(calm());
        let addr = start(app.clone()).await;
        // Not a message.
        let answer = call(
            addr,
            "ModelInfer",
            Bytes::from_static(&[0, 0, 0, 0, 2, 0x0f, 0]),
            None,
        )
        .await;
        assert_eq!(answer.status.as_deref(), Some("3"));
        assert!(answer.body.is_empty());
        // Not a frame.
        let answer = call(addr, "ModelInfer", Bytes::from_static(b"{}"), None).await;
        assert_eq!(answer.status.as_deref(), Some("3"));
        // A valid message, but the wrong tensor.
        let mut wrong = infer_request(false);
        wrong.inputs[0].shape = vec![4, 2];
        let answer = call(addr, "ModelInfer", encode_frame(&wrong), None).await;
        assert_eq!(answer.status.as_deref(), Some("3"));
        assert!(answer.message.unwrap().contains("features"));
        let mut short = infer_request(true);
        short.raw_input_contents[0].pop();
        let answer = call(addr, "ModelInfer", encode_frame(&short), None).await;
        assert_eq!(answer.status.as_deref(), Some("3"));
        let mut two = infer_request(false);
        two.inputs.push(two.inputs[0].clone());
        let answer = call(addr, "ModelInfer", encode_frame(&two), None).await;
        assert_eq!(answer.status.as_deref(), Some("3"));
        // A frame that says 5 MiB: over the limit, whatever follows.
        let answer = call(
            addr,
            "ModelInfer",
            Bytes::from_static(&[0, 0, 0x50, 0, 0]),
            None,
        )
        .await;
        assert_eq!(answer.status.as_deref(), Some("8"));
        let mut compressed = encode_frame(&infer_request(false)).to_vec();
        compressed[0] = 1;
        let answer = call(addr, "ModelInfer", compressed.into(), None).await;
        assert_eq!(answer.status.as_deref(), Some("12"));
        let answer = call(
            addr,
            "ModelMetadata",
            encode_frame(&ModelReadyRequest::default()),
            None,
        )
        .await;
        assert_eq!(answer.status.as_deref(), Some("12"));
        assert_eq!(
            app.metrics.requests.with_label_values(&["400"]).get(),
            5,
            "malformed ModelInfer calls are counted"
        );
        // Health calls.
        let answer = call(
            addr,
            "ServerLive",
            encode_frame(&ServerLiveRequest {}),
            None,
        )
        .await;
        assert_eq!(answer.status.as_deref(), Some("0"));
        let live: ServerLiveResponse = decode_unary(&answer.body, 16).unwrap();
        assert!(live.live);
        let answer = call(
            addr,
            "ServerReady",
            encode_frame(&ServerReadyRequest {}),
            None,
        )
        .await;
        assert!(
            decode_unary::<ServerReadyResponse>(&answer.body, 16)
                .unwrap()
                .ready
        );
        let request = ModelReadyRequest {
            name: "churn".into(),
            version: String::new(),
        };
        let answer = call(addr, "ModelReady", encode_frame(&request), None).await;
        assert!(
            decode_unary::<ModelReadyResponse>(&answer.body, 16)
                .unwrap()
                .ready
        );

        // Injected errors are INTERNAL.
        app.knobs.set(Knobs {
            error_rate: 1.0,
            ..calm()
        });
        let answer = call(
            addr,
            "ModelInfer",
            encode_frame(&infer_request(false)),
            None,
        )
        .await;
        assert_eq!(answer.status.as_deref(), Some("13"));
        assert_eq!(answer.message.as_deref(), Some("injected error"));
        assert_eq!(app.metrics.requests.with_label_values(&["500"]).get(), 1);
    }

    #[tokio::test]
    async fn closing_sends_connections_away() {
        let closing = watch::Sender::new(false);
        let addr = start_closable(app(calm()), closing.subscribe()).await;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        let connection = tokio::spawn(connection);
        let live = || {
            Request::post(format!("http://{addr}/{SERVICE}/ServerLive"))
                .header(header::CONTENT_TYPE, "application/grpc")
                .body(Full::new(encode_frame(&ServerLiveRequest {})))
                .unwrap()
        };
        let response = sender.send_request(live()).await.unwrap();
        response.into_body().collect().await.unwrap();
        closing.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), connection)
            .await
            .expect("the server closes the connection")
            .unwrap()
            .unwrap();
        assert!(sender.send_request(live()).await.is_err());
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(percent_encode("50% off: é"), "50%25 off: %C3%A9");
    }
}
