//! The chart's Grafana dashboard against the real Prometheus: with a ModelDeployment whose
//! router mirrors traffic to a shadow that gets promoted, and the operator scraped like the
//! chart's ServiceMonitor does, every panel's query parses and the ModelDeployment's and the
//! operator's panels return series for it.
mod common;

use std::collections::BTreeMap;

use common::{NAME, TIMEOUT, World};
use modelship::api::DeploymentPhase;
use modelship_e2e::{prom, repo_root, wait_for};
use serde_json::{Value, json};

/// Each panel's title and query, from the dashboard file the chart ships.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            out.push((
                panel["title"].as_str().unwrap().to_string(),
                expr.to_string(),
            ));
        }
    }
    out
}

/// Grafana's substitutions: the template variables (the pipeline's name is any: no pipeline
/// runs here), and the rate window it would choose for a 1 s scrape interval (at least four
/// scrapes; one minute here).
fn substitute(expr: &str, namespace: &str) -> String {
    expr.replace("$namespace", namespace)
        .replace("$name", NAME)
        .replace("$pipeline", NAME)
        .replace("$__rate_interval", "1m")
}

#[tokio::test]
async fn every_dashboard_query_parses_and_returns_the_running_deployments_series() {
    let path = repo_root().join("charts/modelship/dashboards/modelship.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let queries = panel_queries(&dashboard);
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            panel["type"] == "row" || panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "a panel without a query: {}",
            panel["title"]
        );
    }

    let world = World::stable("dashboard", json!({}), &[]).await;
    let ns = world.ns.name().to_string();
    // The operator's /metrics as the ServiceMonitor scrapes it (honorLabels: the analysis
    // series keep the ModelDeployment's namespace).
    let operator = prom::register_target(
        &format!("{ns}-operator"),
        world.operator.admin.trim_start_matches("http://"),
        &BTreeMap::new(),
    );
    prom::wait_until_scraped(&operator, TIMEOUT).await;
    let traffic = world.pods.drive(40);
    // A candidate that agrees with production is shadowed, compared and promoted: every
    // deployment series the dashboard shows exists by the bake.
    world.set_model("churn-v2", "churn-v1.json").await;
    world.wait_phase(DeploymentPhase::Baking).await;

    // The variables' queries (label_values(metric, label)) list this ModelDeployment.
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(query) = variable["definition"].as_str() else {
            continue;
        };
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{query}: not label_values(metric, label)"));
        let (metric, label) = inner.rsplit_once(',').unwrap();
        // No ModelPipeline here: the pipeline variable has nothing to offer.
        if metric.contains("modelship_pipeline_") {
            continue;
        }
        let (metric, label) = (substitute(metric.trim(), &ns), label.trim().to_string());
        let want = if label == "namespace" {
            ns.clone()
        } else {
            NAME.to_string()
        };
        let promql = format!("count by ({label}) ({metric})");
        wait_for(
            &format!("variable {} to offer {want}", variable["name"]),
            TIMEOUT,
            || async {
                Ok(prom::query(&promql)
                    .await?
                    .iter()
                    .any(|(l, _)| l.get(&label) == Some(&want))
                    .then_some(()))
            },
        )
        .await;
    }

    for (title, expr) in &queries {
        let promql = substitute(expr, &ns);
        assert!(
            !promql.contains('$'),
            "{title}: unsubstituted variable in {promql}"
        );
        // Prometheus is up, so an error is the query's: it fails at once.
        let first = prom::query(&promql)
            .await
            .unwrap_or_else(|e| panic!("{title}: {e:#}"));
        // No ModelPipeline runs in this test, so the pipeline counters (created on first use)
        // have no series: their panels are checked to parse only.
        if expr.contains("modelship_pipeline_") {
            continue;
        }
        if first.is_empty() {
            wait_for(
                &format!("{title}: series for {promql}"),
                TIMEOUT,
                || async { Ok(Some(prom::query(&promql).await?).filter(|s| !s.is_empty())) },
            )
            .await;
        }
    }
    eprintln!(
        "{} {} dashboard queries parse; all but the pipeline panels' return series for {ns}/{NAME}",
        modelship_e2e::now(),
        queries.len()
    );
    drop((operator, traffic));
    world.ns.delete().await;
}
