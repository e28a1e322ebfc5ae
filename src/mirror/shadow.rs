//! The background mirror: sends the copy to the shadow, waits for both answers (each within
//! its own timeout), compares them and records the result. Nothing here is on a client's path.
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::body::{Captured, Collected, collect_bounded};
use super::budget::{Metered, MeteredError, Reservation};
use super::compare::{Answer, for_each_prediction, judge};
use super::grpc::{self, Grpc};
use super::metrics::{Code, DropReason, Track};
use super::proxy::Router;

/// The shadow's answer as the mirror saw it.
enum ShadowAnswer {
    Complete {
        status: u16,
        body: Bytes,
        _reserved: Reservation,
        grpc: Option<Grpc>,
    },
    TooLarge,
    Failed,
}

/// What a copy holds until its comparison ends, given back when dropped: its place among
/// the copies in flight, and the memory reserved for its request.
pub struct Held {
    pub _slot: OwnedSemaphorePermit,
    pub _request: Reservation,
}

/// Runs one mirrored request to completion.
pub async fn mirror(
    router: Arc<Router>,
    request: Request<Full<Bytes>>,
    stable: oneshot::Receiver<Captured>,
    _held: Held,
) {
    let metrics = &router.metrics;
    metrics.in_flight().inc();
    let config = &router.config;
    let oip = grpc::is_model_infer(request.uri().path());
    let shadow = async {
        let start = Instant::now();
        let call = async {
            let Some(client) = router.shadow_client.as_ref() else {
                return Err(Code::Error);
            };
            let response = match client.request(request).await {
                Ok(response) => {
                    router.breaker.success();
                    response
                }
                Err(error) => {
                    if error.is_connect() {
                        router.breaker.failure();
                    }
                    tracing::debug!(%error, "shadow request failed");
                    return Err(Code::Error);
                }
            };
            // Timed to the response head, as stable is, so the two tracks' latencies compare.
            let head = start.elapsed().as_secs_f64();
            let status = response.status().as_u16();
            let mut grpc = Grpc::of(response.headers());
            let mut body = Metered::new(response.into_body(), router.budget.reservation());
            match collect_bounded(&mut body, config.max_body_bytes).await {
                Ok(Collected::Complete {
                    body: bytes,
                    trailers,
                }) => {
                    if let (Some(grpc), Some(trailers)) = (grpc.as_mut(), trailers.as_ref()) {
                        grpc.trailers(trailers);
                    }
                    Ok((
                        status,
                        head,
                        ShadowAnswer::Complete {
                            status,
                            body: bytes,
                            grpc,
                            _reserved: body.into_reservation(),
                        },
                    ))
                }
                Ok(Collected::TooLarge { .. }) => Ok((status, head, ShadowAnswer::TooLarge)),
                Err(MeteredError::Exhausted) => {
                    metrics.dropped(DropReason::MemoryLimit);
                    Ok((status, head, ShadowAnswer::TooLarge))
                }
                Err(MeteredError::Body(error)) => {
                    tracing::debug!(%error, "reading the shadow's answer");
                    Err(Code::Error)
                }
            }
        };
        let (code, seconds, answer) = match tokio::time::timeout(config.shadow_timeout, call).await
        {
            Ok(Ok((status, head, answer))) => {
                // A gRPC answer counts with the HTTP status of its gRPC status.
                let code = match &answer {
                    ShadowAnswer::Complete {
                        grpc: Some(grpc), ..
                    } if status == 200 => grpc
                        .status
                        .map_or(Code::Error, |s| Code::Status(grpc::http_equivalent(s))),
                    _ => Code::Status(status),
                };
                (code, head, answer)
            }
            Ok(Err(code)) => (code, start.elapsed().as_secs_f64(), ShadowAnswer::Failed),
            Err(_) => (
                Code::Timeout,
                start.elapsed().as_secs_f64(),
                ShadowAnswer::Failed,
            ),
        };
        metrics.request(Track::Shadow, code, seconds);
        answer
    };
    // Stable's body reaches the mirror once the client has received it; a client that never
    // reads it must not hold a mirror slot for ever.
    let stable = async {
        match tokio::time::timeout(config.stable_timeout, stable).await {
            Ok(Ok(captured)) => captured,
            _ => Captured::Failed,
        }
    };
    let (shadow, stable) = tokio::join!(shadow, stable);

    let stable_grpc = match &stable {
        Captured::Complete { grpc, .. } => *grpc,
        _ => None,
    };
    let shadow_grpc = match &shadow {
        ShadowAnswer::Complete { grpc, .. } => *grpc,
        _ => None,
    };
    let stable = match &stable {
        Captured::Complete { status, body, .. } => Answer::Response {
            status: *status,
            body,
        },
        Captured::TooLarge => Answer::TooLarge,
        Captured::Failed => Answer::Failed,
    };
    let shadow = match &shadow {
        ShadowAnswer::Complete { status, body, .. } => Answer::Response {
            status: *status,
            body,
        },
        ShadowAnswer::TooLarge => Answer::TooLarge,
        ShadowAnswer::Failed => Answer::Failed,
    };
    let judgement = match stable_grpc {
        Some(_) => grpc::judge(
            (stable, stable_grpc),
            (shadow, shadow_grpc),
            config.tolerance,
            oip,
            |track, p| metrics.prediction(track, p),
        ),
        None => judge(stable, shadow, &router.pointers, config.tolerance),
    };
    if let Some(outcome) = judgement.outcome {
        metrics.comparison(outcome);
    }
    for diff in judgement.abs_diffs.as_slice() {
        metrics.abs_diff(*diff);
    }
    if let Some(document) = &judgement.stable {
        for_each_prediction(document, &router.pointers, |p| {
            metrics.prediction(Track::Stable, p)
        });
    }
    if let Some(document) = &judgement.shadow {
        for_each_prediction(document, &router.pointers, |p| {
            metrics.prediction(Track::Shadow, p)
        });
    }
    metrics.in_flight().dec();
}
