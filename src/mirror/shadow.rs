//! The background mirror: sends the copy to the shadow, waits for both answers (each within
//! its own timeout), compares them and records the result. Nothing here is on a client's path.
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::body::{Captured, Collected, collect_bounded};
use super::compare::{Answer, for_each_prediction, judge};
use super::metrics::{Code, Track};
use super::proxy::Router;

/// The shadow's answer as the mirror saw it.
enum ShadowAnswer {
    Complete { status: u16, body: Bytes },
    TooLarge,
    Failed,
}

/// Runs one mirrored request to completion. `_permit` bounds how many run at once.
pub async fn mirror(
    router: Arc<Router>,
    request: Request<Full<Bytes>>,
    stable: oneshot::Receiver<Captured>,
    _permit: OwnedSemaphorePermit,
) {
    let metrics = &router.metrics;
    metrics.in_flight().inc();
    let config = &router.config;
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
            match collect_bounded(response.into_body(), config.max_body_bytes).await {
                Ok(Collected::Complete { body, .. }) => {
                    Ok((status, head, ShadowAnswer::Complete { status, body }))
                }
                Ok(Collected::TooLarge { .. }) => Ok((status, head, ShadowAnswer::TooLarge)),
                Err(error) => {
                    tracing::debug!(%error, "reading the shadow's answer");
                    Err(Code::Error)
                }
            }
        };
        let (code, seconds, answer) = match tokio::time::timeout(config.shadow_timeout, call).await
        {
            Ok(Ok((status, head, answer))) => (Code::Status(status), head, answer),
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

    let stable = match &stable {
        Captured::Complete { status, body } => Answer::Response {
            status: *status,
            body,
        },
        Captured::TooLarge => Answer::TooLarge,
        Captured::Failed => Answer::Failed,
    };
    let shadow = match &shadow {
        ShadowAnswer::Complete { status, body } => Answer::Response {
            status: *status,
            body,
        },
        ShadowAnswer::TooLarge => Answer::TooLarge,
        ShadowAnswer::Failed => Answer::Failed,
    };
    let judgement = judge(stable, shadow, &router.pointers, config.tolerance);
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
