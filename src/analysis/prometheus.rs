//! Queries over the Prometheus HTTP API, through `prometheus-http-query`, with the answer read
//! under a size cap and a deadline: the query and the URL come from users, and one
//! unaggregated query or a hostile endpoint must not exhaust the memory every tenant shares.
use super::verdict::Reading;
use crate::metrics::QueryError;
use prometheus_http_query::error::{Error as PromError, PrometheusError, PrometheusErrorType};
use prometheus_http_query::response::{Data, PromqlResult};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest answer read by default: a few thousand series, far more than a judged number or a
/// histogram's buckets need.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

/// Where measurements come from. Prometheus in production; a fake in unit tests.
pub trait MetricsSource: Send + Sync {
    /// A query that returns one number.
    fn query(&self, promql: String) -> impl std::future::Future<Output = Reading> + Send;
    /// A query that returns a histogram's buckets, one series per `le`.
    fn histogram(&self, promql: String) -> impl std::future::Future<Output = Reading> + Send;
}

/// How much of Prometheus one query may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// For the whole exchange, the body included.
    pub timeout: Duration,
    pub max_response_bytes: u64,
}

/// A Prometheus server.
#[derive(Clone)]
pub struct Prometheus {
    client: prometheus_http_query::Client,
    limits: Limits,
    metrics: Option<crate::metrics::Metrics>,
}

impl Prometheus {
    pub fn new(url: &str, limits: Limits) -> Result<Self, crate::Error> {
        // No total timeout here: `instant` puts one deadline around the whole exchange.
        let http = reqwest::Client::builder()
            .connect_timeout(limits.timeout)
            .build()
            .map_err(|e| {
                crate::Error::Config(format!("building the Prometheus HTTP client: {e}"))
            })?;
        let client = prometheus_http_query::Client::from(http, url)
            .map_err(|e| crate::Error::Config(format!("Prometheus URL {url:?}: {e}")))?;
        Ok(Self {
            client,
            limits,
            metrics: None,
        })
    }
}

/// Why one query got no data. Folded into a `Reading` and a metric label, never propagated.
#[derive(Debug)]
pub enum Failure {
    /// Sending failed, or Prometheus answered with an error of its own.
    Api(PromError),
    /// The connection failed while the body was read.
    Body(reqwest::Error),
    /// The answer is larger than this many bytes.
    TooLarge(u64),
    /// No complete answer within this time.
    TimedOut(Duration),
    /// An answer that is not the query API's JSON, e.g. a proxy's error page.
    Malformed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Api(e) => e.fmt(f),
            Failure::Body(_) => f.write_str("reading the answer failed"),
            Failure::TooLarge(limit) => write!(
                f,
                "the answer exceeded {limit} bytes (the operator's --prometheus-max-response-bytes); aggregate the query to fewer series, for example with sum or avg"
            ),
            Failure::TimedOut(t) => write!(
                f,
                "no complete answer within {} (the operator's --prometheus-timeout)",
                humantime::format_duration(*t)
            ),
            Failure::Malformed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Api(e) => e.source(),
            Failure::Body(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a query got no result, as a bounded metric label; `None` for a result.
pub fn query_error(result: &Result<Data, Failure>) -> Option<QueryError> {
    let e = result.as_ref().err()?;
    Some(match e {
        Failure::Api(PromError::Prometheus(e)) => match e.error_type() {
            PrometheusErrorType::BadData => QueryError::Rejected,
            PrometheusErrorType::Timeout | PrometheusErrorType::Canceled => QueryError::Timeout,
            _ => QueryError::ServerError,
        },
        Failure::Api(PromError::Client(c)) => match c.inner() {
            Some(r) if r.is_timeout() => QueryError::Timeout,
            Some(r) if r.is_connect() => QueryError::Unreachable,
            _ => QueryError::BadResponse,
        },
        Failure::Body(r) if r.is_timeout() => QueryError::Timeout,
        Failure::TooLarge(_) => QueryError::TooLarge,
        Failure::TimedOut(_) => QueryError::Timeout,
        Failure::Api(_) | Failure::Body(_) | Failure::Malformed(_) => QueryError::BadResponse,
    })
}

/// Turns the query API's answer into a reading of one number.
pub fn reading_from(result: Result<Data, Failure>) -> Reading {
    match result {
        Ok(Data::Scalar(s)) => Reading::Value(s.value()),
        Ok(Data::Vector(v)) => match v.as_slice() {
            [] => Reading::Empty,
            [one] => Reading::Value(one.sample().value()),
            many => Reading::Invalid(format!(
                "the query returned {} series; aggregate it to one number (for example with sum)",
                many.len()
            )),
        },
        Ok(Data::Matrix(_)) => {
            Reading::Invalid("the query returned a range vector; it must return one number".into())
        }
        Err(Failure::Api(PromError::Prometheus(e)))
            if e.error_type() == PrometheusErrorType::BadData =>
        {
            Reading::Invalid(e.to_string())
        }
        Err(Failure::Api(PromError::Prometheus(e))) => Reading::Unavailable(e.to_string()),
        Err(e) => Reading::Unavailable(error_chain(&e)),
    }
}

/// Turns the query API's answer into a histogram's buckets: one series per `le` label.
pub fn buckets_from(result: Result<Data, Failure>) -> Reading {
    match result {
        Ok(Data::Vector(v)) if v.is_empty() => Reading::Empty,
        Ok(Data::Vector(v)) => {
            let mut buckets = Vec::with_capacity(v.len());
            for sample in &v {
                let le = sample.metric().get("le").map(|le| match le.as_str() {
                    "+Inf" | "Inf" | "inf" => Ok(f64::INFINITY),
                    other => other.parse::<f64>(),
                });
                match le {
                    Some(Ok(le)) => buckets.push((le, sample.sample().value())),
                    _ => {
                        return Reading::Invalid(
                            "a Quantile test's query must return one series per `le` bucket and nothing else, for example sum by (le) (increase(x_bucket[{{window}}]))".into(),
                        );
                    }
                }
            }
            Reading::Buckets(buckets)
        }
        Ok(Data::Scalar(_)) => Reading::Invalid(
            "a Quantile test's query returned one number; it must return one series per `le` bucket".into(),
        ),
        other => reading_from(other),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = c.source();
    }
    s
}

impl Prometheus {
    async fn instant(&self, promql: String) -> Result<Data, Failure> {
        // The deadline covers the body too: a server that trickles an answer forever is
        // as slow as one that never answers.
        let result = tokio::time::timeout(self.limits.timeout, self.fetch(promql))
            .await
            .unwrap_or(Err(Failure::TimedOut(self.limits.timeout)));
        if let Some(m) = &self.metrics {
            m.prometheus_queried(query_error(&result));
        }
        result
    }

    /// Sends the instant query and reads the answer, at most `max_response_bytes` of it.
    async fn fetch(&self, promql: String) -> Result<Data, Failure> {
        let response = self
            .client
            .query(promql)
            .get_raw()
            .await
            .map_err(Failure::Api)?;
        let status = response.status();
        if !is_json(response.headers()) {
            return Err(Failure::Malformed(format!(
                "HTTP {status}, and the answer is not the query API's JSON"
            )));
        }
        let body = read_capped(response, self.limits.max_response_bytes).await?;
        parse(&body)
    }
}

fn is_json(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads the body chunk by chunk and gives up as soon as it would pass `limit` bytes, so an
/// endless body costs at most `limit` plus one chunk.
async fn read_capped(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, Failure> {
    let announced = response.content_length().unwrap_or(0);
    if announced > limit {
        return Err(Failure::TooLarge(limit));
    }
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(Failure::Body)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(Failure::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The query API's envelope: `data` on success, Prometheus's own error otherwise.
#[derive(serde::Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum Envelope {
    Success { data: PromqlResult },
    Error(PrometheusError),
}

fn parse(body: &[u8]) -> Result<Data, Failure> {
    match serde_json::from_slice(body) {
        Ok(Envelope::Success { data }) => Ok(data.into_inner().0),
        Ok(Envelope::Error(e)) => Err(Failure::Api(PromError::Prometheus(e))),
        Err(e) => Err(Failure::Malformed(format!(
            "the answer is not the query API's JSON: {e}"
        ))),
    }
}

impl MetricsSource for Prometheus {
    async fn query(&self, promql: String) -> Reading {
        reading_from(self.instant(promql).await)
    }

    async fn histogram(&self, promql: String) -> Reading {
        buckets_from(self.instant(promql).await)
    }
}

/// How long a URL's client is kept unused: longer than any sensible measurement interval, so
/// that only URLs no ModelDeployment names any more go.
pub const CLIENT_IDLE: Duration = Duration::from_secs(15 * 60);

/// Most clients kept at once, whatever the URLs asked for: each holds a connection pool.
pub const MAX_CLIENTS: usize = 64;

/// Prometheus clients by URL, so each ModelDeployment may name its own server without a new
/// connection pool per reconcile. Bounded: a client unused for `CLIENT_IDLE` is dropped, and
/// past `MAX_CLIENTS` the least recently used goes.
pub struct Clients {
    limits: Limits,
    by_url: Mutex<HashMap<String, Cached>>,
    metrics: Option<crate::metrics::Metrics>,
    /// `MAX_CLIENTS`; smaller in tests, where each client costs a TLS configuration.
    capacity: usize,
}

struct Cached {
    client: Prometheus,
    used: Instant,
}

impl Clients {
    pub fn new(timeout: Duration) -> Self {
        Self {
            limits: Limits {
                timeout,
                max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            },
            by_url: Mutex::new(HashMap::new()),
            metrics: None,
            capacity: MAX_CLIENTS,
        }
    }

    /// Reads at most `bytes` of each answer.
    pub fn max_response_bytes(mut self, bytes: u64) -> Self {
        self.limits.max_response_bytes = bytes;
        self
    }

    /// Counts the queries that fail, and whether Prometheus answered, in `metrics`.
    pub fn counted_in(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn get(&self, url: &str) -> Result<Prometheus, crate::Error> {
        self.get_at(url, Instant::now())
    }

    /// `get` as of `now`: the clock is a parameter so that tests need not wait.
    fn get_at(&self, url: &str, now: Instant) -> Result<Prometheus, crate::Error> {
        let mut map = self.by_url.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, c| now.saturating_duration_since(c.used) < CLIENT_IDLE);
        if let Some(c) = map.get_mut(url) {
            c.used = now;
            return Ok(c.client.clone());
        }
        let mut client = Prometheus::new(url, self.limits)?;
        client.metrics = self.metrics.clone();
        if map.len() >= self.capacity {
            evict_least_recently_used(&mut map);
        }
        map.insert(
            url.to_string(),
            Cached {
                client: client.clone(),
                used: now,
            },
        );
        Ok(client)
    }

    /// Clients held.
    pub fn len(&self) -> usize {
        self.by_url.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn evict_least_recently_used(map: &mut HashMap<String, Cached>) {
    let oldest = map
        .iter()
        .min_by_key(|(_, c)| c.used)
        .map(|(url, _)| url.clone());
    if let Some(url) = oldest {
        map.remove(&url);
    }
}

/// The Prometheus URLs a ModelDeployment may name (`--allowed-prometheus-urls`), as URL
/// prefixes; none allows any.
#[derive(Clone, Debug, Default)]
pub struct AllowedUrls(Vec<reqwest::Url>);

impl AllowedUrls {
    pub fn new(prefixes: Vec<reqwest::Url>) -> Self {
        Self(prefixes)
    }

    /// Whether `url` lies under one of the prefixes: same scheme, host and port, and a path
    /// under the prefix's at a `/` boundary, so that `http://prom` does not allow
    /// `http://prom.evil` nor `/api` allow `/apiary`.
    pub fn allows(&self, url: &str) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Ok(url) = reqwest::Url::parse(url) else {
            return false;
        };
        self.0.iter().any(|prefix| under(prefix, &url))
    }
}

impl std::fmt::Display for AllowedUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<&str> = self.0.iter().map(reqwest::Url::as_str).collect();
        f.write_str(&list.join(", "))
    }
}

fn under(prefix: &reqwest::Url, url: &reqwest::Url) -> bool {
    let base = prefix.path().trim_end_matches('/');
    url.scheme() == prefix.scheme()
        && url.host_str() == prefix.host_str()
        && url.port_or_known_default() == prefix.port_or_known_default()
        && url
            .path()
            .strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers every request on a free local port with `status` and `body`, or never when
    /// `status` is 0. Returns the URL.
    async fn server(status: u16, body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    if status == 0 {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn each_query_counts_why_it_failed_and_whether_prometheus_answered() {
        // The client is built with TLS support, whose provider main.rs installs.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let m = Metrics::new();
        let clients = Clients::new(Duration::from_millis(300)).counted_in(m.clone());
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let answered = server(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        )
        .await;
        let refused = server(
            400,
            r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
        )
        .await;
        let silent = server(0, "").await;
        let reachable = || m.prometheus_reachable.with_label_values::<&str>(&[]).get();
        let errors = |reason: &str| m.prometheus_query_errors.with_label_values(&[reason]).get();
        let query = |url: String| {
            let c = clients.get(&url).unwrap();
            async move { c.query("up".into()).await }
        };

        assert!(matches!(query(closed).await, Reading::Unavailable(_)));
        assert_eq!((errors("unreachable"), reachable()), (1, 0));
        assert!(matches!(query(refused).await, Reading::Invalid(_)));
        assert_eq!((errors("rejected"), reachable()), (1, 1));
        assert!(matches!(query(silent).await, Reading::Unavailable(_)));
        assert_eq!((errors("timeout"), reachable()), (1, 0));
        assert!(matches!(query(answered).await, Reading::Empty));
        assert_eq!(reachable(), 1);
        assert_eq!(errors("server_error") + errors("bad_response"), 0);
    }

    /// Serves every connection on a free local port with `respond`, and reports on the
    /// returned channel each time a connection ends. Returns the URL.
    async fn hyper_server<B>(
        respond: fn() -> hyper::Response<B>,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<()>)
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (ended, ends) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let ended = ended.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| async move {
                        Ok::<_, std::convert::Infallible>(respond())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                        .await;
                    let _ = ended.send(());
                });
            }
        });
        (url, ends)
    }

    type Frames = std::pin::Pin<
        Box<
            dyn futures::Stream<
                    Item = Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
                > + Send,
        >,
    >;

    fn json(
        body: http_body_util::StreamBody<Frames>,
    ) -> hyper::Response<http_body_util::StreamBody<Frames>> {
        hyper::Response::builder()
            .header("content-type", "application/json")
            .body(body)
            .unwrap()
    }

    /// The start of a vector answer, then one series after another, forever: what
    /// `{__name__=~".+"}` looks like from a large Prometheus, or a hostile endpoint.
    fn endless() -> hyper::Response<http_body_util::StreamBody<Frames>> {
        use futures::StreamExt;
        let head = futures::stream::once(async {
            Ok(hyper::body::Frame::data(bytes::Bytes::from_static(
                br#"{"status":"success","data":{"resultType":"vector","result":["#,
            )))
        });
        let series = futures::stream::repeat_with(|| {
            Ok(hyper::body::Frame::data(bytes::Bytes::from_static(
                br#"{"metric":{"__name__":"up","job":"a-rather-long-job-name"},"value":[1,"1"]},"#,
            )))
        });
        json(http_body_util::StreamBody::new(head.chain(series).boxed()))
    }

    /// The start of an answer, then nothing, without ever closing.
    fn unfinished() -> hyper::Response<http_body_util::StreamBody<Frames>> {
        use futures::StreamExt;
        let head = futures::stream::once(async {
            Ok(hyper::body::Frame::data(bytes::Bytes::from_static(
                br#"{"status":"success","data":{"#,
            )))
        });
        json(http_body_util::StreamBody::new(
            head.chain(futures::stream::pending()).boxed(),
        ))
    }

    /// Announces a body far larger than the cap, then sends none of it.
    fn announced_too_large() -> hyper::Response<http_body_util::StreamBody<Frames>> {
        let mut r = json(http_body_util::StreamBody::new(Box::pin(
            futures::stream::pending(),
        )));
        r.headers_mut().insert(
            "content-length",
            hyper::header::HeaderValue::from_static("104857600"),
        );
        r
    }

    fn unavailable(reading: Reading) -> String {
        match reading {
            Reading::Unavailable(why) => why,
            other => panic!("expected an unavailable reading, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_endless_answer_is_cut_at_the_cap_and_makes_the_measurement_inconclusive() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let m = Metrics::new();
        // A timeout far beyond the test: only the cap can end the query.
        let clients = Clients::new(Duration::from_secs(120))
            .max_response_bytes(64 * 1024)
            .counted_in(m.clone());
        let (url, mut ends) = hyper_server(endless).await;
        let prometheus = clients.get(&url).unwrap();

        let why = unavailable(prometheus.query("up".into()).await);
        assert!(why.contains("exceeded 65536 bytes"), "{why}");
        assert!(why.contains("aggregate the query"), "{why}");
        let errors = |reason: &str| m.prometheus_query_errors.with_label_values(&[reason]).get();
        assert_eq!((errors("too_large"), errors("timeout")), (1, 0));
        // The operator hung up rather than read on: the server's connection ends.
        tokio::time::timeout(Duration::from_secs(60), ends.recv())
            .await
            .expect("the client closes the connection once over the cap");

        // Through the histogram path too, where the inconclusive reason reaches the status.
        let judged = crate::analysis::verdict::judge(
            &serde_json::from_value(serde_json::json!({"name": "err", "query": "up"})).unwrap(),
            None,
            &crate::analysis::verdict::Readings {
                value: prometheus.histogram("up".into()).await,
                reference: None,
                samples: None,
                reference_samples: None,
            },
            None,
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(judged.verdict, Some(crate::api::Verdict::Inconclusive));
        let message = judged.message.unwrap();
        assert!(message.contains("exceeded 65536 bytes"), "{message}");
    }

    #[tokio::test]
    async fn an_announced_length_over_the_cap_is_refused_before_reading() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let clients = Clients::new(Duration::from_secs(120)).max_response_bytes(64 * 1024);
        let (url, _ends) = hyper_server(announced_too_large).await;
        // The body never comes: only the Content-Length check can answer.
        let why = unavailable(clients.get(&url).unwrap().query("up".into()).await);
        assert!(why.contains("exceeded 65536 bytes"), "{why}");
    }

    #[tokio::test]
    async fn an_answer_that_never_finishes_hits_the_timeout() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let m = Metrics::new();
        let clients = Clients::new(Duration::from_millis(300)).counted_in(m.clone());
        let (url, _ends) = hyper_server(unfinished).await;
        let why = unavailable(clients.get(&url).unwrap().query("up".into()).await);
        assert!(why.contains("no complete answer within 300ms"), "{why}");
        let errors = |reason: &str| m.prometheus_query_errors.with_label_values(&[reason]).get();
        assert_eq!(errors("timeout"), 1);
    }

    #[test]
    fn clients_of_urls_unused_for_a_while_are_dropped() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let clients = Clients::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let min = |m: u64| t0 + Duration::from_secs(60 * m);
        clients.get_at("http://a:9090", min(0)).unwrap();
        clients.get_at("http://b:9090", min(0)).unwrap();
        clients.get_at("http://a:9090", min(10)).unwrap();
        assert_eq!(clients.len(), 2);
        // b was last used 16 minutes ago, a 6: b goes on the next lookup.
        clients.get_at("http://c:9090", min(16)).unwrap();
        let mut held: Vec<String> = clients.by_url.lock().unwrap().keys().cloned().collect();
        held.sort();
        assert_eq!(held, ["http://a:9090", "http://c:9090"]);
        // Much later, a lookup of anything leaves only that.
        clients.get_at("http://c:9090", min(60)).unwrap();
        assert_eq!(clients.len(), 1);
    }

    #[test]
    fn distinct_urls_cannot_grow_the_cache_past_its_cap() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cap = 4;
        let clients = Clients {
            capacity: cap,
            ..Clients::new(Duration::from_secs(1))
        };
        let t0 = Instant::now();
        let url = |i: usize| format!("http://p{i}:9090");
        let ms = |i: usize| t0 + Duration::from_millis(i as u64);
        for i in 0..cap {
            clients.get_at(&url(i), ms(i)).unwrap();
        }
        // p0 is used again: the least recently used is now p1, and it goes first.
        clients.get_at(&url(0), ms(cap)).unwrap();
        clients.get_at(&url(cap), ms(cap + 1)).unwrap();
        assert_eq!(clients.len(), cap);
        assert!(!clients.by_url.lock().unwrap().contains_key(&url(1)));
        assert!(clients.by_url.lock().unwrap().contains_key(&url(0)));
        // A stream of distinct URLs, all within the idle time, never holds more than the cap.
        for i in cap + 1..10 * cap {
            clients.get_at(&url(i), ms(cap + 1 + i)).unwrap();
            assert_eq!(clients.len(), cap);
        }
        let mut held: Vec<String> = clients.by_url.lock().unwrap().keys().cloned().collect();
        held.sort();
        let mut newest: Vec<String> = (9 * cap..10 * cap).map(url).collect();
        newest.sort();
        assert_eq!(held, newest, "the most recently used stay");
    }

    #[test]
    fn allowed_urls_match_scheme_host_port_and_path_at_a_boundary() {
        let allowed = AllowedUrls::new(vec![
            reqwest::Url::parse("http://prometheus.monitoring.svc:9090").unwrap(),
            reqwest::Url::parse("https://thanos.example.com/tenant-a/").unwrap(),
        ]);
        for ok in [
            "http://prometheus.monitoring.svc:9090",
            "http://prometheus.monitoring.svc:9090/",
            "http://PROMETHEUS.monitoring.svc:9090/prefix",
            "https://thanos.example.com/tenant-a",
            "https://thanos.example.com:443/tenant-a/api",
        ] {
            assert!(allowed.allows(ok), "{ok}");
        }
        for refused in [
            "http://prometheus.monitoring.svc:9091",
            "https://prometheus.monitoring.svc:9090",
            "http://prometheus.monitoring.svc.evil.com:9090",
            "http://evil.com:9090/http://prometheus.monitoring.svc:9090",
            "http://prometheus.monitoring.svc:9090@evil.com",
            "https://thanos.example.com/tenant-ab",
            "https://thanos.example.com/tenant-a/../tenant-b",
            "https://thanos.example.com/",
            "not a url",
        ] {
            assert!(!allowed.allows(refused), "{refused}");
        }
        assert!(
            AllowedUrls::default().allows("http://anything:1"),
            "empty allows any"
        );
    }
}
