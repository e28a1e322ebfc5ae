//! Queries over the Prometheus HTTP API, through `prometheus-http-query`.
use super::verdict::Reading;
use crate::metrics::QueryError;
use prometheus_http_query::error::{Error as PromError, PrometheusErrorType};
use prometheus_http_query::response::Data;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Where measurements come from. Prometheus in production; a fake in unit tests.
pub trait MetricsSource: Send + Sync {
    /// A query that returns one number.
    fn query(&self, promql: String) -> impl std::future::Future<Output = Reading> + Send;
    /// A query that returns a histogram's buckets, one series per `le`.
    fn histogram(&self, promql: String) -> impl std::future::Future<Output = Reading> + Send;
}

/// A Prometheus server.
#[derive(Clone)]
pub struct Prometheus {
    client: prometheus_http_query::Client,
    metrics: Option<crate::metrics::Metrics>,
}

impl Prometheus {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, crate::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| {
                crate::Error::Config(format!("building the Prometheus HTTP client: {e}"))
            })?;
        let client = prometheus_http_query::Client::from(http, url)
            .map_err(|e| crate::Error::Config(format!("Prometheus URL {url:?}: {e}")))?;
        Ok(Self {
            client,
            metrics: None,
        })
    }
}

/// Why a query got no result, as a bounded metric label; `None` for a result.
pub fn query_error(result: &Result<Data, PromError>) -> Option<QueryError> {
    let e = result.as_ref().err()?;
    Some(match e {
        PromError::Prometheus(e) => match e.error_type() {
            PrometheusErrorType::BadData => QueryError::Rejected,
            PrometheusErrorType::Timeout | PrometheusErrorType::Canceled => QueryError::Timeout,
            _ => QueryError::ServerError,
        },
        PromError::Client(c) => match c.inner() {
            Some(r) if r.is_timeout() => QueryError::Timeout,
            Some(r) if r.is_connect() => QueryError::Unreachable,
            _ => QueryError::BadResponse,
        },
        _ => QueryError::BadResponse,
    })
}

/// Turns the query API's answer into a reading of one number.
pub fn reading_from(result: Result<Data, PromError>) -> Reading {
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
        Err(PromError::Prometheus(e)) if e.error_type() == PrometheusErrorType::BadData => {
            Reading::Invalid(e.to_string())
        }
        Err(PromError::Prometheus(e)) => Reading::Unavailable(e.to_string()),
        Err(e) => Reading::Unavailable(error_chain(&e)),
    }
}

/// Turns the query API's answer into a histogram's buckets: one series per `le` label.
pub fn buckets_from(result: Result<Data, PromError>) -> Reading {
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
    async fn instant(&self, promql: String) -> Result<Data, PromError> {
        let result = self
            .client
            .query(promql)
            .get()
            .await
            .map(|r| r.data().clone());
        if let Some(m) = &self.metrics {
            m.prometheus_queried(query_error(&result));
        }
        result
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

/// Prometheus clients by URL, so each ModelDeployment may name its own server without a new
/// connection pool per reconcile.
#[derive(Default)]
pub struct Clients {
    timeout: Duration,
    by_url: Mutex<HashMap<String, Prometheus>>,
    metrics: Option<crate::metrics::Metrics>,
}

impl Clients {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            by_url: Mutex::new(HashMap::new()),
            metrics: None,
        }
    }

    /// Counts the queries that fail, and whether Prometheus answered, in `metrics`.
    pub fn counted_in(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn get(&self, url: &str) -> Result<Prometheus, crate::Error> {
        let mut map = self.by_url.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(url) {
            return Ok(c.clone());
        }
        let mut c = Prometheus::new(url, self.timeout)?;
        c.metrics = self.metrics.clone();
        map.insert(url.to_string(), c.clone());
        Ok(c)
    }
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
}
