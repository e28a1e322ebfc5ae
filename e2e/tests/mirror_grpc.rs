//! gRPC through the router: two model servers answering the Open Inference Protocol's
//! `ModelInfer` over h2c, the candidate altering a share of its answers. Every client gets
//! stable's answer with its `grpc-status`, and the router's comparison (outputs decoded and
//! compared by name, shape, datatype and contents) counts as mismatches the share the
//! candidate altered.
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use modelship_e2e::{Process, binary, free_port, http_client, repo_root, wait_for};
use modelship_oip::proto::model_infer_request::InferInputTensor;
use modelship_oip::proto::{InferTensorContents, ModelInferRequest, ModelInferResponse};
use modelship_oip::{decode_unary, encode_frame};

/// Calls sent through the router.
const CALLS: usize = 400;
/// Share of calls whose answers the candidate alters (decided by request id).
const ALTER_SHARE: f64 = 0.25;
/// About four standard deviations of a binomial share over `CALLS`.
const SHARE_TOLERANCE: f64 = 0.09;
const METHOD: &str = "/inference.GRPCInferenceService/ModelInfer";

fn model_server(version: &str, http_port: u16, grpc_port: u16, alter_share: f64) -> Command {
    let model = repo_root().join("model-server/models/churn-v1.json");
    let mut command = Command::new(binary("model-server"));
    command
        .env("MODEL_URI", format!("file://{}", model.display()))
        .env("MODEL_VERSION", version)
        .env("MODEL_SERVER_LISTEN", format!("127.0.0.1:{http_port}"))
        .env("MODEL_SERVER_GRPC_LISTEN", format!("127.0.0.1:{grpc_port}"))
        .env("MODEL_SERVER_ALTER_SHARE", alter_share.to_string())
        .env("TOKIO_WORKER_THREADS", "1");
    command
}

/// Call `i`: one instance of three features, different for every call.
fn infer_request(i: usize) -> ModelInferRequest {
    let x = i as f32;
    ModelInferRequest {
        model_name: "churn".into(),
        inputs: vec![InferInputTensor {
            name: "instances".into(),
            datatype: "FP32".into(),
            shape: vec![1, 3],
            contents: Some(InferTensorContents {
                fp32_contents: vec![(x * 0.37) % 7.0, (x * 1.3) % 5.0, (i % 4) as f32],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

type H2c = Client<HttpConnector, Full<Bytes>>;

/// One unary call: the decoded answer and its `grpc-status`.
async fn call(client: &H2c, port: u16, i: usize) -> (ModelInferResponse, String) {
    let request = Request::post(format!("http://127.0.0.1:{port}{METHOD}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-request-id", format!("e2e-grpc-{i}"))
        .body(Full::new(encode_frame(&infer_request(i))))
        .expect("a request");
    let response = client.request(request).await.expect("an answer");
    assert_eq!(response.status(), 200, "call {i}");
    let collected = response.into_body().collect().await.expect("a body");
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("absent")
        .to_owned();
    let body = collected.to_bytes();
    let answer = decode_unary(&body, 1 << 20).expect("a ModelInferResponse");
    (answer, status)
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn grpc_calls_are_mirrored_and_their_outputs_compared() {
    let (stable_http, stable_grpc, shadow_http, shadow_grpc) =
        (free_port(), free_port(), free_port(), free_port());
    let (router_port, metrics_port) = (free_port(), free_port());
    let _stable = Process::spawn(
        "grpc-model-v1",
        model_server("v1", stable_http, stable_grpc, 0.0),
    );
    let _candidate = Process::spawn(
        "grpc-model-v2",
        model_server("v2", shadow_http, shadow_grpc, ALTER_SHARE),
    );
    let mut router = Command::new(binary("modelship"));
    router
        .args(["--log-format=text", "mirror"])
        .env(
            "MODELSHIP_MIRROR_LISTEN",
            format!("127.0.0.1:{router_port}"),
        )
        .env(
            "MODELSHIP_MIRROR_METRICS_LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env(
            "MODELSHIP_MIRROR_STABLE",
            format!("http://127.0.0.1:{stable_grpc}"),
        )
        .env(
            "MODELSHIP_MIRROR_SHADOW",
            format!("http://127.0.0.1:{shadow_grpc}"),
        )
        .env("MODELSHIP_MIRROR_STABLE_PROTOCOL", "h2c")
        .env("MODELSHIP_MIRROR_SHADOW_PROTOCOL", "h2c")
        .env("MODELSHIP_MIRROR_TOLERANCE", "0.000001");
    let _router = Process::spawn("grpc-router", router);

    let http = http_client();
    for url in [
        format!("http://127.0.0.1:{stable_http}/healthz"),
        format!("http://127.0.0.1:{shadow_http}/healthz"),
        format!("http://127.0.0.1:{metrics_port}/readyz"),
    ] {
        wait_for(&format!("{url} to answer"), Duration::from_secs(30), || {
            let request = http.get(&url).timeout(Duration::from_secs(1)).send();
            async move {
                Ok(request
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ()))
            }
        })
        .await;
    }

    let client: H2c = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for i in 0..CALLS {
        let (through_router, status) = call(&client, router_port, i).await;
        let (direct, direct_status) = call(&client, stable_grpc, i).await;
        assert_eq!(
            (status.as_str(), direct_status.as_str()),
            ("0", "0"),
            "call {i}"
        );
        assert_eq!(
            through_router, direct,
            "call {i}: the client must get stable's answer"
        );
        assert_eq!(through_router.model_version, "v1");
    }

    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let text = wait_for("every call compared", Duration::from_secs(30), || {
        let request = http.get(&metrics_url).send();
        async move {
            let text = request.await?.text().await?;
            let compared = ["match", "mismatch", "shadow_error", "uncomparable"]
                .iter()
                .map(|r| {
                    sample(
                        &text,
                        &format!(r#"modelship_mirror_comparisons_total{{result="{r}"}}"#),
                    )
                })
                .sum::<f64>();
            Ok((compared >= CALLS as f64).then_some(text))
        }
    })
    .await;
    let count = |result: &str| {
        sample(
            &text,
            &format!(r#"modelship_mirror_comparisons_total{{result="{result}"}}"#),
        )
    };
    assert_eq!(count("shadow_error"), 0.0, "{text}");
    assert_eq!(count("uncomparable"), 0.0, "{text}");
    let share = count("mismatch") / CALLS as f64;
    assert!(
        (share - ALTER_SHARE).abs() <= SHARE_TOLERANCE,
        "mismatch share {share}, the candidate altered {ALTER_SHARE}:\n{text}"
    );
    // The shadow saw the copies as copies, and answered each.
    let shadow_metrics = http
        .get(format!("http://127.0.0.1:{shadow_http}/metrics"))
        .send()
        .await
        .expect("the candidate's metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(
        sample(
            &shadow_metrics,
            r#"model_server_requests_total{code="200"}"#
        ),
        CALLS as f64,
        "{shadow_metrics}"
    );
}
