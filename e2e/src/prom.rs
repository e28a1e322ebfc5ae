//! The local Prometheus (`e2e/prometheus/up`): scrape targets registered by tests
//! through file-based service discovery, PromQL over the HTTP API, stop and start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::json;

use crate::{repo_root, wait_for};

/// The job name Prometheus gives every registered target.
pub const JOB: &str = "modelship-e2e";

/// Prometheus's base URL: `$MODELSHIP_PROMETHEUS_URL`, or
/// `http://127.0.0.1:${MODELSHIP_PROMETHEUS_PORT:-19090}`.
pub fn url() -> String {
    if let Ok(url) = std::env::var("MODELSHIP_PROMETHEUS_URL") {
        return url.trim_end_matches('/').to_string();
    }
    let port = std::env::var("MODELSHIP_PROMETHEUS_PORT").unwrap_or_else(|_| "19090".into());
    format!("http://127.0.0.1:{port}")
}

fn targets_dir() -> PathBuf {
    repo_root().join("e2e/.prometheus/targets")
}

/// A scrape target registered with [`register_target`]; dropping it unregisters it.
pub struct Target {
    path: PathBuf,
    /// `host:port` that Prometheus scrapes (at `/metrics`).
    pub address: String,
    /// The labels its series carry (besides `job` and `instance`).
    pub labels: BTreeMap<String, String>,
}

/// Registers `address` (`host:port`, scraped at `/metrics` every second) with the given
/// labels, e.g. `namespace`, `deployment`, `track`, `version`, by writing
/// `e2e/.prometheus/targets/<name>.json`. Prometheus picks it up within a second or two;
/// see [`wait_until_scraped`].
pub fn register_target(name: &str, address: &str, labels: &BTreeMap<String, String>) -> Target {
    let dir = targets_dir();
    assert!(
        dir.is_dir(),
        "Prometheus is not up ({} does not exist): run `make test` (or `e2e/prometheus/up`) first",
        dir.display()
    );
    let path = dir.join(format!("{name}.json"));
    let body = json!([{ "targets": [address], "labels": labels }]);
    // Write then rename, so that Prometheus never reads half a file.
    let tmp = dir.join(format!(".{name}.json.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&body).expect("serialisable"),
    )
    .and_then(|()| std::fs::rename(&tmp, &path))
    .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    Target {
        path,
        address: address.to_string(),
        labels: labels.clone(),
    }
}

impl Target {
    /// A PromQL label matcher for this target's series: `{instance="…",k="v",…}`.
    pub fn selector(&self) -> String {
        let mut matchers = BTreeMap::new();
        matchers.insert("instance".to_string(), self.address.clone());
        matchers.insert("job".to_string(), JOB.to_string());
        matchers.extend(self.labels.clone());
        let inner: Vec<String> = matchers
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        format!("{{{}}}", inner.join(","))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Sample>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Sample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

fn parse_value(s: &str) -> anyhow::Result<f64> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse().with_context(|| format!("sample value {s:?}")),
    }
}

/// Runs an instant PromQL query over the HTTP API (`/api/v1/query`) and returns each
/// series' labels and value. A scalar result comes back as one sample without labels.
pub async fn query(promql: &str) -> anyhow::Result<Vec<(BTreeMap<String, String>, f64)>> {
    let response = crate::http_client()
        .get(format!("{}/api/v1/query", url()))
        .query(&[("query", promql)])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("querying Prometheus at {}", url()))?;
    let http_status = response.status();
    let body: Response = response
        .json()
        .await
        .with_context(|| format!("decoding Prometheus's answer ({http_status}) to {promql:?}"))?;
    if body.status != "success" {
        bail!(
            "Prometheus rejected {promql:?}: {}",
            body.error.unwrap_or_default()
        );
    }
    match body.data {
        Some(Data::Vector(samples)) => samples
            .into_iter()
            .map(|s| Ok((s.metric, parse_value(&s.value.1)?)))
            .collect(),
        Some(Data::Scalar((_, v))) => Ok(vec![(BTreeMap::new(), parse_value(&v)?)]),
        Some(Data::Matrix(_) | Data::String(_)) => {
            bail!("{promql:?} is not an instant vector or scalar")
        }
        None => bail!("Prometheus answered {promql:?} without data"),
    }
}

/// Waits until Prometheus has scraped `target` successfully (`up{…} == 1`) and returns
/// the labels of its `up` series.
pub async fn wait_until_scraped(target: &Target, timeout: Duration) -> BTreeMap<String, String> {
    let promql = format!("up{} == 1", target.selector());
    wait_for(
        &format!("Prometheus to scrape {}", target.address),
        timeout,
        || async {
            Ok(query(&promql)
                .await?
                .into_iter()
                .next()
                .map(|(labels, _)| labels))
        },
    )
    .await
}

/// True when Prometheus answers `/-/ready`.
pub async fn is_ready() -> bool {
    let response = crate::http_client()
        .get(format!("{}/-/ready", url()))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    matches!(response, Ok(r) if r.status().is_success())
}

async fn script(args: &[&str]) {
    let script = repo_root().join(args[0]);
    let output = tokio::process::Command::new(&script)
        .args(&args[1..])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Stops Prometheus (`e2e/prometheus/down --keep`), keeping its data and the
/// registered targets, so that a test can see how the operator copes without it.
pub async fn stop() {
    script(&["e2e/prometheus/down", "--keep"]).await;
}

/// Starts Prometheus again (`e2e/prometheus/up`) and waits until it is ready.
pub async fn start() {
    script(&["e2e/prometheus/up"]).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_quotes_label_values_and_lets_labels_override_defaults() {
        let labels = BTreeMap::from([
            ("deployment".to_string(), "say \"hi\"\\".to_string()),
            ("job".to_string(), "custom".to_string()),
        ]);
        let target = Target {
            path: PathBuf::from("/nonexistent"),
            address: "127.0.0.1:1".into(),
            labels,
        };
        assert_eq!(
            target.selector(),
            r#"{deployment="say \"hi\"\\",instance="127.0.0.1:1",job="custom"}"#
        );
    }

    #[test]
    fn sample_values_include_special_floats() {
        assert_eq!(parse_value("1.5").unwrap(), 1.5);
        assert!(parse_value("NaN").unwrap().is_nan());
        assert_eq!(parse_value("+Inf").unwrap(), f64::INFINITY);
        assert_eq!(parse_value("-Inf").unwrap(), f64::NEG_INFINITY);
        assert!(parse_value("x").is_err());
    }

    #[test]
    fn vector_answers_decode() {
        let body: Response = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},"value":[1.5,"2"]}]}}"#,
        )
        .unwrap();
        let Some(Data::Vector(samples)) = body.data else {
            panic!("not a vector")
        };
        assert_eq!(samples[0].metric["a"], "b");
        assert_eq!(samples[0].value.1, "2");
    }
}
