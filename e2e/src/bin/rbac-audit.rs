//! The chart's RBAC against what the operator really called, run by `make test` after the
//! tests: every request the operator's ServiceAccount (the tests' release) made since
//! `--since` is read from the API server's audit log (e2e/cluster/up logs every
//! ServiceAccount's requests at Metadata level) and compared with the rules the chart renders
//! (its ClusterRole and its leader-election Role).
//!
//! Fails when the operator called something no rule grants, or when a rule grants a verb that
//! the whole suite never saw the operator use: a grant nobody uses goes. The few grants used
//! only on rare paths are listed in `RARE`, each with the path that uses it.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use modelship_e2e::{helm, operator, repo_root};
use serde_json::Value;

/// Checks the chart's RBAC rules against the operator's calls in the API server's audit log.
#[derive(Parser)]
struct Args {
    /// Only requests received at or after this time count (RFC 3339).
    #[arg(long)]
    since: jiff::Timestamp,
    /// The API server's audit log.
    #[arg(long)]
    audit_log: Option<PathBuf>,
}

/// (API group, resource[/subresource], verb).
type Grant = (String, String, String);

/// Grants that a whole test run may not exercise, with the code path that needs each.
const RARE: &[(&str, &str, &str, &str)] = &[
    (
        "batch",
        "jobs",
        "get",
        "a stage Job's name already exists when the Job is created (409): whose Job is it",
    ),
    (
        "gateway.networking.k8s.io",
        "httproutes",
        "delete",
        "spec.traffic.provider changed from GatewayAPI: the HTTPRoute left behind is deleted",
    ),
    (
        "networking.istio.io",
        "virtualservices",
        "delete",
        "spec.traffic.provider changed from Istio: the VirtualService left behind is deleted",
    ),
    (
        "events.k8s.io",
        "events",
        "patch",
        "an event repeated within the recorder's series window is patched, not created again",
    ),
];

fn grants(rules: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rules.as_array().into_iter().flatten() {
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                for verb in strings("verbs") {
                    out.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}

/// The operator's calls in `log` since `since`: how many of each grant it needed.
fn calls(log: &str, user: &str, since: jiff::Timestamp) -> anyhow::Result<BTreeMap<Grant, u64>> {
    let mut out = BTreeMap::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let event: Value = serde_json::from_str(line).context("an audit event")?;
        if event["user"]["username"] != user {
            continue;
        }
        let at: jiff::Timestamp = event["requestReceivedTimestamp"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .context("requestReceivedTimestamp")?;
        if at < since || event["objectRef"].is_null() {
            // Before this run, or discovery (not a resource).
            continue;
        }
        let object = &event["objectRef"];
        let grant = if event["impersonatedUser"].is_object() {
            // Authorized against the impersonated ServiceAccount; the operator itself needed
            // only the right to impersonate it.
            ("".into(), "serviceaccounts".into(), "impersonate".into())
        } else {
            let mut resource = object["resource"].as_str().unwrap_or_default().to_string();
            if let Some(sub) = object["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            (
                object["apiGroup"].as_str().unwrap_or_default().to_string(),
                resource,
                event["verb"].as_str().unwrap_or_default().to_string(),
            )
        };
        // A server-side apply that creates the object (201) is also authorized as `create`.
        if grant.2 == "patch" && event["responseStatus"]["code"] == 201 {
            let created = (grant.0.clone(), grant.1.clone(), "create".to_string());
            *out.entry(created).or_insert(0) += 1;
        }
        *out.entry(grant).or_insert(0) += 1;
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = args
        .audit_log
        .unwrap_or_else(|| repo_root().join("e2e/.cluster/logs/audit.log"));
    let log = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {}: the cluster was started without its audit log; start it anew (e2e/cluster/down, then make test)",
            path.display()
        )
    })?;

    let mut template = helm();
    template
        .args(["template", operator::RELEASE])
        .arg(repo_root().join("charts/modelship"))
        .args(["--namespace", operator::RELEASE_NAMESPACE]);
    let rendered = modelship_e2e::output_of(template).await;
    let mut granted = BTreeSet::new();
    for doc in rendered.split("\n---") {
        let Ok(doc) = serde_yaml_ng::from_str::<Value>(doc) else {
            continue;
        };
        if doc["kind"] == "ClusterRole" || doc["kind"] == "Role" {
            granted.extend(grants(&doc["rules"]));
        }
    }
    if granted.is_empty() {
        bail!("the chart renders no RBAC rules");
    }

    let user = format!(
        "system:serviceaccount:{}:{}",
        operator::RELEASE_NAMESPACE,
        operator::SERVICE_ACCOUNT
    );
    let called = calls(&log, &user, args.since)?;
    if called.is_empty() {
        bail!(
            "no request of {user} since {} in {}",
            args.since,
            path.display()
        );
    }

    println!(
        "rbac-audit: the chart's rules against {user}'s requests since {}",
        args.since
    );
    let mut failures = Vec::new();
    for ((group, resource, verb), n) in &called {
        if !granted.contains(&(group.clone(), resource.clone(), verb.clone())) {
            failures.push(format!(
                "called {verb} {resource} (group {group:?}) {n} times, which no rule grants"
            ));
        }
    }
    for grant @ (group, resource, verb) in &granted {
        let n = called.get(grant).copied().unwrap_or(0);
        let rare = RARE
            .iter()
            .find(|(g, r, v, _)| g == group && r == resource && v == verb);
        let note = match (n, rare) {
            (0, Some((_, _, _, why))) => format!("not called (rare path: {why})"),
            (0, None) => {
                failures.push(format!(
                    "the chart grants {verb} {resource} (group {group:?}), which the operator never called: remove it, or name the path that needs it in RARE"
                ));
                "NEVER CALLED".to_string()
            }
            (n, _) => format!("{n} calls"),
        };
        println!("  {group:>24} {resource:<32} {verb:<12} {note}");
    }
    if failures.is_empty() {
        println!(
            "rbac-audit: ok: {} grants, each used by the operator or named as a rare path; every call granted",
            granted.len()
        );
        Ok(())
    } else {
        for f in &failures {
            println!("rbac-audit: FAILED: {f}");
        }
        bail!("{} RBAC mismatches", failures.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_count_the_operators_requests_since_the_start_only() {
        let since: jiff::Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let event = |user: &str, at: &str, verb: &str, object: Value, imp: bool| {
            let mut e = serde_json::json!({
                "user": {"username": user}, "requestReceivedTimestamp": at,
                "verb": verb, "objectRef": object,
            });
            if imp {
                e["impersonatedUser"] =
                    serde_json::json!({"username": "system:serviceaccount:t:a"});
            }
            e.to_string()
        };
        let op = "system:serviceaccount:modelship-system:modelship";
        let log = [
            event(op, "2026-12-03T10:00:01Z", "patch", serde_json::json!({"apiGroup": "apps", "resource": "deployments"}), false),
            event(op, "2026-12-03T10:00:01Z", "patch", serde_json::json!({"resource": "services"}), false)
                .replace("\"verb\"", "\"responseStatus\":{\"code\":201},\"verb\""),
            event(op, "2026-12-03T10:00:02Z", "patch", serde_json::json!({"apiGroup": "modelship.io", "resource": "modeldeployments", "subresource": "status"}), false),
            event(op, "2026-12-03T10:00:03Z", "create", serde_json::json!({"apiGroup": "batch", "resource": "jobs"}), true),
            event(op, "2026-12-03T09:59:59Z", "delete", serde_json::json!({"resource": "services"}), false),
            event("someone", "2026-12-03T10:00:04Z", "get", serde_json::json!({"resource": "secrets"}), false),
            event(op, "2026-12-03T10:00:05Z", "get", Value::Null, false),
        ]
        .join("\n");
        let c = calls(&log, op, since).unwrap();
        let keys: Vec<String> = c.keys().map(|(g, r, v)| format!("{g}/{r}/{v}")).collect();
        assert_eq!(
            keys,
            [
                "/serviceaccounts/impersonate",
                "/services/create",
                "/services/patch",
                "apps/deployments/patch",
                "modelship.io/modeldeployments/status/patch",
            ]
        );
    }
}
