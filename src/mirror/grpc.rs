//! gRPC answers: telling them apart, their status, and their comparison.
//!
//! A gRPC answer succeeded only with HTTP status 200 and `grpc-status: 0`, found in the
//! trailers or, for a trailers-only answer, in the headers. A unary answer's body is one
//! length-prefixed message (a 1-byte compression flag and a 4-byte big-endian length).
//!
//! Answers of the Open Inference Protocol's `ModelInfer` (KServe, Triton, MLServer) are
//! decoded and compared output by output (`modelship_oip::compare`): matched by name, the
//! same shape and datatype, numbers within the tolerance, the rest exactly; an answer that
//! does not decode is `uncomparable`. The outputs' values are recorded as each track's
//! predictions. Other methods are compared by their messages' bytes.
//!
//! Outcomes, as for JSON (see `compare`): stable failed, did not succeed, or sent a body that
//! is not one uncompressed message: `uncomparable`; the shadow failed or did not succeed:
//! `shadow_error`; its body too large or not one uncompressed message: `uncomparable`;
//! otherwise `match` or `mismatch`.
use hyper::HeaderMap;
use hyper::header::{self, HeaderName};

use modelship_oip::prost::Message;
use modelship_oip::proto::ModelInferResponse;
use modelship_oip::{Value, for_each_output_value, unary_payload};

use super::compare::{Answer, DiffSink, Diffs, Judgement, MAX_DIFFS, Outcome, Prediction};
use super::metrics::Track;

/// The path of the Open Inference Protocol's inference call.
const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
/// Output values recorded per answer as predictions.
const MAX_PREDICTIONS: usize = 4096;

/// The HTTP status of the same meaning as a gRPC status (the mapping of gRPC's
/// `http-grpc-status-mapping.md` read backwards, as grpc-gateway does), so that a gRPC error
/// counts in `modelship_mirror_requests_total{code}` like an HTTP one and the error-rate
/// queries (`code!~"[1-4].."`) see it.
pub fn http_equivalent(status: u32) -> u16 {
    match status {
        0 => 200,
        1 => 499,          // CANCELLED
        3 | 9 | 11 => 400, // INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
        4 => 504,          // DEADLINE_EXCEEDED
        5 => 404,          // NOT_FOUND
        6 | 10 => 409,     // ALREADY_EXISTS, ABORTED
        7 => 403,          // PERMISSION_DENIED
        8 => 429,          // RESOURCE_EXHAUSTED
        12 => 501,         // UNIMPLEMENTED
        14 => 503,         // UNAVAILABLE
        16 => 401,         // UNAUTHENTICATED
        _ => 500,          // UNKNOWN, INTERNAL, DATA_LOSS and codes gRPC does not define
    }
}

/// Whether a request path calls the Open Inference Protocol's `ModelInfer`.
pub fn is_model_infer(path: &str) -> bool {
    path.ends_with(MODEL_INFER)
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Whether a message is gRPC, by its content type (`application/grpc`, `application/grpc+proto`
/// and the like; not gRPC-Web, which is another protocol).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let value = value.trim();
            value
                .get(..16)
                .is_some_and(|head| head.eq_ignore_ascii_case("application/grpc"))
                && matches!(value.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// The `grpc-status` in `headers`, if there is a valid one.
pub fn status(headers: &HeaderMap) -> Option<u32> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// What the router learns of a gRPC answer besides its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grpc {
    /// `grpc-status`, once seen.
    pub status: Option<u32>,
}

impl Grpc {
    /// `Some` for a gRPC answer, with the status of a trailers-only answer if it is one.
    pub fn of(headers: &HeaderMap) -> Option<Grpc> {
        is_grpc(headers).then(|| Grpc {
            status: status(headers),
        })
    }

    /// Takes the status from the answer's trailers.
    pub fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(status) = status(trailers) {
            self.status = Some(status);
        }
    }

    fn is_ok(self) -> bool {
        self.status == Some(0)
    }
}

/// The message of a unary gRPC body: exactly one uncompressed length-prefixed message (the
/// body's length bounds it).
fn unary_message(body: &[u8]) -> Option<&[u8]> {
    unary_payload(body, body.len()).ok()
}

/// The body of a successful gRPC answer: HTTP status 200 and `grpc-status: 0`.
fn succeeded<'a>(answer: Answer<'a>, grpc: Option<Grpc>) -> Option<&'a [u8]> {
    match answer {
        Answer::Response { status: 200, body } if grpc.is_some_and(Grpc::is_ok) => Some(body),
        _ => None,
    }
}

/// Judges a pair of gRPC answers (see the module documentation). With `oip`, the answers
/// are `ModelInfer` responses: compared by output, and their values handed to `predictions`.
pub fn judge(
    stable: (Answer<'_>, Option<Grpc>),
    shadow: (Answer<'_>, Option<Grpc>),
    tolerance: f64,
    oip: bool,
    mut predictions: impl FnMut(Track, Prediction<'_>),
) -> Judgement<'static> {
    let mut abs_diffs = Diffs::default();
    let outcome = match (succeeded(stable.0, stable.1), shadow.0) {
        (None, _) => Outcome::Uncomparable,
        (Some(_), Answer::TooLarge) => Outcome::Uncomparable,
        (Some(stable), shadow_answer) => match succeeded(shadow_answer, shadow.1) {
            None => Outcome::ShadowError,
            Some(shadow) => match (unary_message(stable), unary_message(shadow)) {
                (Some(stable), Some(shadow)) if oip => {
                    let (outcome, diffs) = judge_oip(stable, shadow, tolerance, &mut predictions);
                    diffs.into_iter().for_each(|d| abs_diffs.push(d));
                    outcome
                }
                (Some(stable), Some(shadow)) if stable == shadow => Outcome::Match,
                (Some(_), Some(_)) => Outcome::Mismatch,
                _ => Outcome::Uncomparable,
            },
        },
    };
    Judgement {
        outcome: Some(outcome),
        abs_diffs,
        ..Default::default()
    }
}

/// Compares two `ModelInferResponse` bodies (framed, as received).
fn judge_oip(
    stable: &[u8],
    shadow: &[u8],
    tolerance: f64,
    predictions: &mut impl FnMut(Track, Prediction<'_>),
) -> (Outcome, Vec<f64>) {
    // Messages out of their frames (see `unary_message`).
    let decode = |message: &[u8]| ModelInferResponse::decode(message);
    let stable = match decode(stable) {
        Ok(stable) => stable,
        Err(error) => {
            tracing::debug!(%error, "stable's ModelInfer answer does not decode");
            return (Outcome::Uncomparable, Vec::new());
        }
    };
    record(&stable, Track::Stable, predictions);
    let shadow = match decode(shadow) {
        Ok(shadow) => shadow,
        Err(error) => {
            // Stable's answer was a valid one: the shadow answered something else.
            tracing::debug!(%error, "the shadow's ModelInfer answer does not decode");
            return (Outcome::Mismatch, Vec::new());
        }
    };
    record(&shadow, Track::Shadow, predictions);
    let comparison = modelship_oip::compare(&stable, &shadow, tolerance, MAX_DIFFS);
    let mut diffs = comparison.abs_diffs;
    // A NaN against a number is recorded as infinite by the comparison: not a difference
    // the histogram can hold, and already a mismatch.
    diffs.retain(|d| d.is_finite());
    let outcome = if comparison.agree {
        Outcome::Match
    } else {
        tracing::debug!(reason = comparison.reason, "ModelInfer answers differ");
        Outcome::Mismatch
    };
    (outcome, diffs)
}

fn record(
    response: &ModelInferResponse,
    track: Track,
    predictions: &mut impl FnMut(Track, Prediction<'_>),
) {
    for_each_output_value(response, MAX_PREDICTIONS, |_, value| match value {
        Value::Number(n) => predictions(track, Prediction::Number(n)),
        Value::Bool(b) => predictions(track, Prediction::Bool(b)),
        Value::Bytes(bytes) => {
            if let Ok(label) = std::str::from_utf8(bytes) {
                predictions(track, Prediction::Label(label));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        body
    }

    const OK: Option<Grpc> = Some(Grpc { status: Some(0) });

    #[test]
    fn grpc_by_content_type() {
        for (value, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC; charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/grpc-web+proto", false),
            ("application/json", false),
            ("application/grp", false),
        ] {
            let map = headers(&[("content-type", value)]);
            assert_eq!(is_grpc(&map), grpc, "{value}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn status_from_headers_then_trailers() {
        let mut grpc = Grpc::of(&headers(&[("content-type", "application/grpc")])).unwrap();
        assert_eq!(grpc.status, None);
        grpc.trailers(&headers(&[("grpc-status", "0")]));
        assert_eq!(grpc.status, Some(0));
        // Trailers-only: the status is in the headers.
        let grpc = Grpc::of(&headers(&[
            ("content-type", "application/grpc"),
            ("grpc-status", "13"),
            ("grpc-message", "boom"),
        ]))
        .unwrap();
        assert_eq!(grpc.status, Some(13));
        assert!(Grpc::of(&headers(&[("content-type", "application/json")])).is_none());
        assert_eq!(status(&headers(&[("grpc-status", "x")])), None);
    }

    #[test]
    fn unary_messages() {
        assert_eq!(unary_message(&framed(b"abc")), Some(&b"abc"[..]));
        assert_eq!(unary_message(&framed(b"")), Some(&b""[..]));
        assert_eq!(unary_message(b"\0\0\0"), None);
        // Compressed, cut short, or two messages.
        assert_eq!(unary_message(b"\x01\0\0\0\x01a"), None);
        assert_eq!(unary_message(b"\0\0\0\0\x02a"), None);
        let mut two = framed(b"a");
        two.extend(framed(b"b"));
        assert_eq!(unary_message(&two), None);
    }

    #[test]
    fn judges_status_then_bytes() {
        let a = framed(b"\x0a\x01a");
        let b = framed(b"\x0a\x01b");
        fn ok(body: &[u8]) -> (Answer<'_>, Option<Grpc>) {
            (Answer::Response { status: 200, body }, OK)
        }
        let outcome = |stable, shadow| {
            judge(stable, shadow, 0.0, false, |_, _| {})
                .outcome
                .unwrap()
        };
        assert_eq!(outcome(ok(&a), ok(&a)), Outcome::Match);
        assert_eq!(outcome(ok(&a), ok(&b)), Outcome::Mismatch);
        let failed = Some(Grpc { status: Some(13) });
        let error = (
            Answer::Response {
                status: 200,
                body: &[],
            },
            failed,
        );
        assert_eq!(outcome(ok(&a), error), Outcome::ShadowError);
        assert_eq!(
            outcome(ok(&a), (Answer::Failed, None)),
            Outcome::ShadowError
        );
        // No status at all, or an HTTP error: not a success either.
        let silent = (
            Answer::Response {
                status: 200,
                body: &a[..],
            },
            Some(Grpc { status: None }),
        );
        assert_eq!(outcome(ok(&a), silent), Outcome::ShadowError);
        let http = (
            Answer::Response {
                status: 503,
                body: &a[..],
            },
            OK,
        );
        assert_eq!(outcome(ok(&a), http), Outcome::ShadowError);
        let json = (
            Answer::Response {
                status: 200,
                body: &a[..],
            },
            None,
        );
        assert_eq!(outcome(ok(&a), json), Outcome::ShadowError);
        assert_eq!(
            outcome(ok(&a), (Answer::TooLarge, None)),
            Outcome::Uncomparable
        );
        assert_eq!(outcome(error, ok(&a)), Outcome::Uncomparable);
        assert_eq!(outcome(ok(b"\x01\0\0\0\0"), ok(&a)), Outcome::Uncomparable);
    }

    fn infer_response(scores: &[f32], labels: &[&str]) -> Vec<u8> {
        use modelship_oip::proto::InferTensorContents;
        use modelship_oip::proto::model_infer_response::InferOutputTensor;
        let n = scores.len() as i64;
        let response = ModelInferResponse {
            model_name: "churn".into(),
            model_version: "v1".into(),
            outputs: vec![
                InferOutputTensor {
                    name: "score".into(),
                    datatype: "FP32".into(),
                    shape: vec![n],
                    contents: Some(InferTensorContents {
                        fp32_contents: scores.to_vec(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                InferOutputTensor {
                    name: "label".into(),
                    datatype: "BYTES".into(),
                    shape: vec![n],
                    contents: Some(InferTensorContents {
                        bytes_contents: labels.iter().map(|l| l.as_bytes().to_vec()).collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        modelship_oip::encode_frame(&response).to_vec()
    }

    #[test]
    fn model_infer_answers_compare_by_output() {
        let stable = infer_response(&[0.25, 0.75], &["stay", "churn"]);
        let close = infer_response(&[0.2500001, 0.75], &["stay", "churn"]);
        let moved = infer_response(&[0.25, 0.35], &["stay", "stay"]);
        let judge_oip = |stable: &[u8], shadow: &[u8], tolerance| {
            let mut seen = Vec::new();
            let judgement = judge(
                (
                    Answer::Response {
                        status: 200,
                        body: stable,
                    },
                    OK,
                ),
                (
                    Answer::Response {
                        status: 200,
                        body: shadow,
                    },
                    OK,
                ),
                tolerance,
                true,
                |track, p| seen.push(format!("{}:{p:?}", track.label())),
            );
            (
                judgement.outcome.unwrap(),
                judgement.abs_diffs.as_slice().to_vec(),
                seen,
            )
        };
        let (outcome, diffs, seen) = judge_oip(&stable, &close, 1e-3);
        assert_eq!(outcome, Outcome::Match);
        assert_eq!(diffs.len(), 2);
        assert!(diffs[0] > 0.0 && diffs[0] < 1e-3, "{diffs:?}");
        assert_eq!(seen.len(), 8, "{seen:?}");
        assert!(
            seen.contains(&r#"shadow:Label("churn")"#.to_owned()),
            "{seen:?}"
        );
        // Another model version in the answer is not a disagreement; other outputs are.
        let (outcome, _, _) = judge_oip(&stable, &moved, 1e-3);
        assert_eq!(outcome, Outcome::Mismatch);
        let (outcome, _, _) = judge_oip(&stable, &close, 0.0);
        assert_eq!(outcome, Outcome::Mismatch);
        // Stable's answer is not a ModelInferResponse: nothing can be said.
        let garbage = framed(b"\xff\xff\xff");
        let (outcome, _, _) = judge_oip(&garbage, &stable, 1e-3);
        assert_eq!(outcome, Outcome::Uncomparable);
        // The shadow's is not one while stable's is: it answered something else.
        let (outcome, _, _) = judge_oip(&stable, &garbage, 1e-3);
        assert_eq!(outcome, Outcome::Mismatch);
    }

    #[test]
    fn model_infer_by_path() {
        assert!(is_model_infer("/inference.GRPCInferenceService/ModelInfer"));
        assert!(!is_model_infer(
            "/inference.GRPCInferenceService/ModelReady"
        ));
        assert!(!is_model_infer(
            "/tensorflow.serving.PredictionService/Predict"
        ));
    }

    #[test]
    fn grpc_errors_count_as_http_errors() {
        assert_eq!(http_equivalent(0), 200);
        for server_side in [2, 4, 12, 13, 14, 15, 99] {
            assert!(http_equivalent(server_side) >= 500, "{server_side}");
        }
        for client_side in [3, 5, 7, 8, 16] {
            assert!(
                (400..500).contains(&http_equivalent(client_side)),
                "{client_side}"
            );
        }
    }

    #[test]
    fn rest_answers_of_the_protocol_compare_with_pointers() {
        use super::super::compare::{Pointer, judge as judge_json};
        let stable = br#"{"model_name":"churn","model_version":"v1","outputs":[
            {"name":"score","datatype":"FP32","shape":[2],"data":[0.25,0.75]},
            {"name":"label","datatype":"BYTES","shape":[2],"data":["stay","churn"]}]}"#;
        let close = br#"{"model_name":"churn","model_version":"v2","outputs":[
            {"name":"score","datatype":"FP32","shape":[2],"data":[0.2500001,0.75]},
            {"name":"label","datatype":"BYTES","shape":[2],"data":["stay","churn"]}]}"#;
        let flipped = br#"{"model_name":"churn","model_version":"v2","outputs":[
            {"name":"score","datatype":"FP32","shape":[2],"data":[0.25,0.35]},
            {"name":"label","datatype":"BYTES","shape":[2],"data":["stay","stay"]}]}"#;
        let pointers = [
            Pointer::parse("/outputs/0/data"),
            Pointer::parse("/outputs/1/data"),
        ];
        let outcome = |shadow: &[u8]| {
            judge_json(
                Answer::Response {
                    status: 200,
                    body: stable,
                },
                Answer::Response {
                    status: 200,
                    body: shadow,
                },
                &pointers,
                1e-3,
            )
            .outcome
            .unwrap()
        };
        assert_eq!(outcome(close), Outcome::Match);
        assert_eq!(outcome(flipped), Outcome::Mismatch);
    }
}
