//! The Open Inference Protocol over REST: `POST /v2/models/{name}/infer` with one FP32 input
//! of shape `[N, features]` (`data` flat or nested) answers outputs `score` (FP32 `[N]`) and
//! `label` (BYTES `[N]`), from the same model, knobs and metrics as `/predict`.
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::{App, alter_key, error};

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InputTensor>,
}

#[derive(Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    /// Flat, or nested as the shape.
    data: serde_json::Value,
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: (Output<f32>, Output<&'a str>),
}

#[derive(Serialize)]
struct Output<T> {
    name: &'static str,
    datatype: &'static str,
    shape: [usize; 1],
    data: Vec<T>,
}

/// Appends the numbers of `data`, however nested; `false` on anything else.
fn flatten(data: &serde_json::Value, out: &mut Vec<f64>) -> bool {
    match data {
        serde_json::Value::Number(n) => n.as_f64().map(|x| out.push(x)).is_some(),
        serde_json::Value::Array(items) => items.iter().all(|item| flatten(item, out)),
        _ => false,
    }
}

/// The instances of a request, flat, `features` values each.
fn instances(request: &InferRequest, features: usize) -> Result<Vec<f64>, String> {
    let [input] = request.inputs.as_slice() else {
        return Err(crate::input::not_one(request.inputs.len(), features));
    };
    let count = crate::input::fp32_count(&input.name, &input.datatype, &input.shape, features)?;
    let mut values = Vec::new();
    if !flatten(&input.data, &mut values) {
        return Err("input data must hold numbers only".into());
    }
    if values.len() != count {
        return Err(format!(
            "input shape {:?} holds {count} values, the data has {}",
            input.shape,
            values.len()
        ));
    }
    Ok(values)
}

pub(crate) async fn infer(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let start = Instant::now();
    let response = answer(&app, &name, &headers, &body).await;
    app.metrics
        .observe(response.status(), start.elapsed().as_secs_f64());
    response
}

async fn answer(app: &App, name: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let Ok(knobs) = app.degrade().await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "injected error");
    };
    let request: InferRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("not an inference request: {e}"),
            );
        }
    };
    let features = app.model.inputs();
    let values = match instances(&request, features) {
        Ok(values) => values,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let predictions = match app.predict_all(
        values.chunks_exact(features),
        alter_key(headers, body),
        &knobs,
    ) {
        Ok(predictions) => predictions,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let n = predictions.len();
    Json(InferResponse {
        model_name: name,
        model_version: &app.version,
        id: request.id,
        outputs: (
            Output {
                name: "score",
                datatype: "FP32",
                shape: [n],
                data: predictions.iter().map(|p| p.score as f32).collect(),
            },
            Output {
                name: "label",
                datatype: "BYTES",
                shape: [n],
                data: predictions.iter().map(|p| p.label).collect(),
            },
        ),
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{app, calm};

    async fn call(app: &App, request: serde_json::Value) -> (StatusCode, serde_json::Value) {
        let response = answer(
            app,
            "churn",
            &HeaderMap::new(),
            request.to_string().as_bytes(),
        )
        .await;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn infer_answers_what_predict_answers() {
        let app = app(calm());
        let instances = [[0.0, 0.0, 0.0], [1.5, -0.25, 3.0], [-2.0, 1.0, 0.5]];
        let flat: Vec<f64> = instances.iter().flatten().copied().collect();
        let mut answers = Vec::new();
        for data in [serde_json::json!(instances), serde_json::json!(flat)] {
            let (status, body) = call(
                &app,
                serde_json::json!({"id": "r-1", "inputs": [{"name": "x", "shape": [3, 3], "datatype": "FP32", "data": data}]}),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["model_name"], "churn");
            assert_eq!(body["model_version"], "v1");
            assert_eq!(body["id"], "r-1");
            let outputs = &body["outputs"];
            assert_eq!(outputs[0]["name"], "score");
            assert_eq!(outputs[0]["datatype"], "FP32");
            assert_eq!(outputs[0]["shape"], serde_json::json!([3]));
            assert_eq!(outputs[1]["name"], "label");
            assert_eq!(outputs[1]["datatype"], "BYTES");
            for (i, instance) in instances.iter().enumerate() {
                let p = app.model.predict(instance).unwrap();
                // FP32 in JSON: the shortest decimal that reads back as the same f32.
                assert_eq!(
                    outputs[0]["data"][i].as_f64().unwrap() as f32,
                    p.score as f32
                );
                assert_eq!(outputs[1]["data"][i], p.label);
            }
            answers.push(body);
        }
        assert_eq!(answers[0], answers[1], "flat and nested data alike");
    }

    #[tokio::test]
    async fn bad_requests() {
        let app = app(calm());
        let input = |shape: serde_json::Value, datatype: &str, data: serde_json::Value| serde_json::json!({"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]});
        for request in [
            serde_json::json!({"instances": [[1, 2, 3]]}),
            serde_json::json!({"inputs": []}),
            input(
                serde_json::json!([1, 3]),
                "INT32",
                serde_json::json!([1, 2, 3]),
            ),
            input(serde_json::json!([3]), "FP32", serde_json::json!([1, 2, 3])),
            input(serde_json::json!([1, 2]), "FP32", serde_json::json!([1, 2])),
            input(
                serde_json::json!([2, 3]),
                "FP32",
                serde_json::json!([1, 2, 3]),
            ),
            input(
                serde_json::json!([-1, 3]),
                "FP32",
                serde_json::json!([1, 2, 3]),
            ),
            input(
                serde_json::json!([1, 3]),
                "FP32",
                serde_json::json!([1, "2", 3]),
            ),
        ] {
            let (status, body) = call(&app, request.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{request}");
            assert!(body["error"].is_string(), "{body}");
        }
    }
}
