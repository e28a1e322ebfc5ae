//! Queries over the Prometheus HTTP API, through `prometheus-http-query`.
use super::verdict::Reading;
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
        Ok(Self { client })
    }
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
        self.client
            .query(promql)
            .get()
            .await
            .map(|r| r.data().clone())
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
}

impl Clients {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            by_url: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, url: &str) -> Result<Prometheus, crate::Error> {
        let mut map = self.by_url.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(url) {
            return Ok(c.clone());
        }
        let c = Prometheus::new(url, self.timeout)?;
        map.insert(url.to_string(), c.clone());
        Ok(c)
    }
}
