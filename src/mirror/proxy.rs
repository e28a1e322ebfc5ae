//! The client path: every request goes to stable and the client gets stable's answer; a
//! sampled request is also handed to the background mirror (see `shadow.rs`).
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::http::uri::{self, PathAndQuery};
use hyper::{Request, Response, StatusCode, Uri};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::args::{Config, Upstream};
use super::body::{Captured, ClientBody, Collected, Pending, Tap, UpstreamBody, collect_bounded};
use super::breaker::Breaker;
use super::budget::Budget;
use super::compare::{Outcome, Pointer};
use super::grpc;
use super::headers::{SHADOW_HEADER, shadow_headers, strip_hop_by_hop};
use super::metrics::{Code, DropReason, Metrics, Track};
use super::sample::{Decision, Sampler};
use super::shadow;
use super::upstream;

/// Everything a request needs, shared by the connections of one worker thread. The limits,
/// the breaker and the metrics are shared by all workers; the upstream connections are each
/// worker's own, so a request never waits on another thread's event loop.
pub struct Router {
    pub(super) config: Config,
    pub(super) metrics: Arc<Metrics>,
    sampler: Sampler,
    stable_client: upstream::Client<UpstreamBody>,
    /// Present when there is a shadow.
    pub(super) shadow_client: Option<upstream::Client<Full<Bytes>>>,
    in_flight: Arc<Semaphore>,
    /// The memory every copy's bodies draw on.
    pub(super) budget: Budget,
    pub(super) breaker: Arc<Breaker>,
    /// `config.pointers`, parsed once.
    pub(super) pointers: Vec<Pointer>,
}

impl Router {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Self {
        let sampler = if config.shadow.is_some() {
            Sampler::new(config.mirror_percent)
        } else {
            Sampler::new(0.0)
        };
        Router {
            stable_client: stable_client(&config),
            shadow_client: shadow_client(&config),
            pointers: config.pointers.iter().map(|p| Pointer::parse(p)).collect(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            budget: Budget::new(config.max_copy_bytes),
            breaker: Arc::new(Breaker::new(
                config.shadow_failures_before_pause,
                config.shadow_pause,
            )),
            sampler,
            metrics,
            config,
        }
    }

    /// The router for another worker thread: the same limits, breaker and metrics, its own
    /// upstream connections.
    pub fn worker(&self) -> Self {
        Router {
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            sampler: self.sampler,
            stable_client: stable_client(&self.config),
            shadow_client: shadow_client(&self.config),
            in_flight: self.in_flight.clone(),
            budget: self.budget.clone(),
            breaker: self.breaker.clone(),
            pointers: self.pointers.clone(),
        }
    }

    /// Answers one client request.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<ClientBody>, Infallible> {
        let (mut parts, body) = request.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        // Each upstream gets its own Host, as a client calling it directly would send.
        parts.headers.remove(header::HOST);

        // A client cannot make stable believe a request is a mirrored copy.
        parts.headers.remove(SHADOW_HEADER);

        let decision = self.sampler.by_request_id(
            parts
                .headers
                .get(&self.config.request_id_header)
                .map(HeaderValue::as_bytes),
        );
        // Whether a copy can be sent at all is known before the body is read: a request is
        // buffered only when a copy of it will be sent (or, sampled by its content, may be).
        let slot = match decision {
            Decision::Skip => None,
            Decision::Mirror | Decision::NeedsBody => self.copy_slot(decision),
        };
        let Some(slot) = slot else {
            return Ok(self
                .forward(parts, UpstreamBody::streamed(body), None)
                .await);
        };
        let collected = tokio::time::timeout(
            self.config.request_body_timeout,
            collect_bounded(body, self.config.max_body_bytes),
        )
        .await;
        let (body, copy) = match collected {
            Ok(Ok(Collected::Complete { body, trailers })) => {
                let mirror = decision == Decision::Mirror || self.sampled_by_content(&parts, &body);
                let copy = mirror.then(|| body.clone());
                (UpstreamBody::buffered(body, trailers), copy)
            }
            Ok(Ok(Collected::TooLarge { prefix, rest })) => {
                // Decide on the first `limit` bytes, so the same request is judged the same way.
                let head = &prefix[..prefix.len().min(self.config.max_body_bytes)];
                if decision == Decision::Mirror || self.sampled_by_content(&parts, head) {
                    self.metrics.dropped(DropReason::BodyTooLarge);
                }
                (UpstreamBody::chained(prefix, rest), None)
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "reading the request body");
                return Ok(plain(
                    StatusCode::BAD_REQUEST,
                    "could not read the request body\n",
                ));
            }
            Err(_) => {
                tracing::debug!(timeout = ?self.config.request_body_timeout, "reading the request body timed out");
                return Ok(plain(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time\n",
                ));
            }
        };

        let captured = copy.and_then(|copy| self.start_mirror(&parts, copy, slot));
        Ok(self.forward(parts, body, captured).await)
    }

    fn sampled_by_content(&self, parts: &Parts, body: &[u8]) -> bool {
        let path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        self.sampler
            .by_content(parts.method.as_str().as_bytes(), path.as_bytes(), body)
    }

    /// A place for one more copy, unless the shadow is paused or too many copies are in
    /// flight. Drops are counted only for requests known to be sampled (`Mirror`): one
    /// sampled by its content is not read to find out.
    fn copy_slot(&self, decision: Decision) -> Option<OwnedSemaphorePermit> {
        self.config.shadow.as_ref()?;
        let known = decision == Decision::Mirror;
        if !self.breaker.allows() {
            // The shadow is down: that is what the comparison says, without trying again.
            if known {
                self.metrics.dropped(DropReason::ShadowUnavailable);
                self.metrics.comparison(Outcome::ShadowError);
            }
            return None;
        }
        match self.in_flight.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                if known {
                    self.metrics.dropped(DropReason::InFlightLimit);
                }
                None
            }
        }
    }

    /// Starts the background copy in `slot`, unless the copies' memory budget cannot hold
    /// its request. Returns where the client path reports stable's answer.
    fn start_mirror(
        self: &Arc<Self>,
        parts: &Parts,
        body: Bytes,
        slot: OwnedSemaphorePermit,
    ) -> Option<oneshot::Sender<Captured>> {
        let shadow = self.config.shadow.as_ref()?;
        let mut reservation = self.budget.reservation();
        if !reservation.grow(body.len()) {
            self.metrics.dropped(DropReason::MemoryLimit);
            return None;
        }
        let uri = match upstream_uri(shadow, parts.uri.path_and_query()) {
            Ok(uri) => uri,
            Err(error) => {
                tracing::debug!(%error, "building the shadow URI");
                return None;
            }
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = shadow_headers(&parts.headers, &self.config.strip_headers);
        let (tx, rx) = oneshot::channel();
        // Boxed: the copy's future is a few KiB, moved once into the box instead of several
        // times on its way into the task.
        tokio::spawn(Box::pin(shadow::mirror(
            self.clone(),
            request,
            rx,
            shadow::Held {
                _slot: slot,
                _request: reservation,
            },
        )));
        Some(tx)
    }

    async fn forward(
        &self,
        mut parts: Parts,
        body: UpstreamBody,
        captured: Option<oneshot::Sender<Captured>>,
    ) -> Response<ClientBody> {
        parts.uri = match upstream_uri(&self.config.stable, parts.uri.path_and_query()) {
            Ok(uri) => uri,
            Err(error) => {
                tracing::debug!(%error, "building the stable URI");
                return plain(StatusCode::BAD_REQUEST, "bad request target\n");
            }
        };
        let start = Instant::now();
        let sent = tokio::time::timeout(
            self.config.stable_timeout,
            self.stable_client.request(Request::from_parts(parts, body)),
        )
        .await;
        let elapsed = start.elapsed().as_secs_f64();
        let failed = |captured: Option<oneshot::Sender<Captured>>, code, status, message| {
            self.metrics.request(Track::Stable, code, elapsed);
            if let Some(tx) = captured {
                let _ = tx.send(Captured::Failed);
            }
            plain(status, message)
        };
        match sent {
            Ok(Ok(response)) => {
                let status = response.status();
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers, false);
                let grpc = grpc::Grpc::of(&parts.headers);
                // A gRPC answer's status is in its trailers (unless it came without a body):
                // it is counted once they have streamed to the client.
                let pending = match grpc {
                    Some(grpc::Grpc { status: Some(code) }) if status == StatusCode::OK => {
                        let code = Code::Status(grpc::http_equivalent(code));
                        self.metrics.request(Track::Stable, code, elapsed);
                        None
                    }
                    Some(_) if status == StatusCode::OK => {
                        Some(Pending::new(self.metrics.clone(), Track::Stable, elapsed))
                    }
                    _ => {
                        let code = Code::Status(status.as_u16());
                        self.metrics.request(Track::Stable, code, elapsed);
                        None
                    }
                };
                let tap = captured.map(|tx| {
                    Tap::new(
                        status.as_u16(),
                        self.config.max_body_bytes,
                        self.budget.reservation(),
                        tx,
                    )
                    .grpc(grpc)
                });
                let body = ClientBody::upstream(body, tap).counting(pending);
                Response::from_parts(parts, body)
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "stable request failed");
                failed(
                    captured,
                    Code::Error,
                    StatusCode::BAD_GATEWAY,
                    "stable upstream unavailable\n",
                )
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.config.stable_timeout, "stable request timed out");
                failed(
                    captured,
                    Code::Timeout,
                    StatusCode::GATEWAY_TIMEOUT,
                    "stable upstream timed out\n",
                )
            }
        }
    }
}

fn stable_client(config: &Config) -> upstream::Client<UpstreamBody> {
    upstream::Client::new(
        config.stable.authority.clone(),
        config.connect_timeout,
        config.stable_protocol,
    )
}

fn shadow_client(config: &Config) -> Option<upstream::Client<Full<Bytes>>> {
    config.shadow.as_ref().map(|shadow| {
        upstream::Client::new(
            shadow.authority.clone(),
            config.connect_timeout,
            config.shadow_protocol,
        )
    })
}

/// A short plain-text answer made by the router itself.
fn plain(status: StatusCode, message: &'static str) -> Response<ClientBody> {
    let mut response = Response::new(ClientBody::full(Bytes::from_static(message.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The upstream URI for a request target: the upstream's scheme and authority, its path
/// prefix, then the request's path and query.
pub fn upstream_uri(
    upstream: &Upstream,
    target: Option<&PathAndQuery>,
) -> Result<Uri, hyper::http::Error> {
    let mut parts = uri::Parts::default();
    parts.scheme = Some(upstream.scheme.clone());
    parts.authority = Some(upstream.authority.clone());
    parts.path_and_query = Some(match (upstream.prefix.is_empty(), target) {
        (true, Some(target)) => target.clone(),
        (true, None) => PathAndQuery::from_static("/"),
        (false, target) => PathAndQuery::try_from(format!(
            "{}{}",
            upstream.prefix,
            target.map_or("/", PathAndQuery::as_str)
        ))?,
    });
    Ok(Uri::from_parts(parts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        let uri: Uri = url.parse().unwrap();
        Upstream {
            scheme: uri.scheme().unwrap().clone(),
            authority: uri.authority().unwrap().clone(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        }
    }

    #[test]
    fn uris_keep_path_and_query() {
        let target = PathAndQuery::from_static("/predict?x=1");
        assert_eq!(
            upstream_uri(&upstream("http://s:80"), Some(&target)).unwrap(),
            "http://s:80/predict?x=1"
        );
        assert_eq!(
            upstream_uri(&upstream("http://s:80/"), None).unwrap(),
            "http://s:80/"
        );
        assert_eq!(
            upstream_uri(&upstream("http://s/v1/"), Some(&target)).unwrap(),
            "http://s/v1/predict?x=1"
        );
    }
}
