//! The Helm chart: it lints, its plain-manifest rendering is committed, every ClusterRole rule
//! says why it exists, and the ServiceAccount it creates can do what the operator needs and
//! nothing more.
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use modelship_e2e::{helm, operator, repo_root};

#[tokio::test]
async fn the_chart_lints_and_renders_the_committed_plain_manifests() {
    let chart = repo_root().join("charts/modelship");
    let mut lint = helm();
    lint.args(["lint", "--strict"]).arg(&chart).args([
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "modelPodMonitor.enabled=true",
    ]);
    modelship_e2e::output_of(lint).await;
    let mut template = helm();
    template.args(["template", "modelship"]).arg(&chart).args([
        "--namespace",
        "modelship-system",
        "--include-crds",
    ]);
    let rendered = modelship_e2e::output_of(template).await;
    let committed = std::fs::read_to_string(repo_root().join("config/manifests/modelship.yaml"))
        .expect("config/manifests/modelship.yaml");
    let body: String = committed
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        body == rendered,
        "config/manifests/modelship.yaml is out of date with the chart: run `make manifests` and commit it"
    );
}

#[tokio::test]
async fn every_cluster_role_rule_carries_a_comment() {
    let text =
        std::fs::read_to_string(repo_root().join("charts/modelship/templates/clusterrole.yaml"))
            .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let rules: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("- apiGroups:"))
        .map(|(i, _)| i)
        .collect();
    assert!(rules.len() >= 8, "{} rules", rules.len());
    for i in rules {
        assert!(
            lines[i - 1].trim_start().starts_with('#'),
            "the rule at line {} has no comment saying why",
            i + 1
        );
    }
}

#[tokio::test]
async fn the_operator_service_account_gets_what_it_uses_and_no_more() {
    operator::install().await;
    let client = modelship_e2e::client().await;
    let reviews: Api<SubjectAccessReview> = Api::all(client);
    let ns = operator::RELEASE_NAMESPACE;
    // Asked of the authorizer directly, so a kind whose CRD is not installed can be asked too.
    let can = |verb: &'static str, resource: &'static str, namespace: &'static str| {
        let reviews = reviews.clone();
        async move {
            let (resource, subresource) = match resource.split_once('/') {
                Some((r, s)) => (r, Some(s.to_string())),
                None => (resource, None),
            };
            let (resource, group) = resource.split_once('.').unwrap_or((resource, ""));
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(format!(
                        "system:serviceaccount:{ns}:{}",
                        operator::SERVICE_ACCOUNT
                    )),
                    groups: Some(vec![
                        "system:serviceaccounts".into(),
                        format!("system:serviceaccounts:{ns}"),
                        "system:authenticated".into(),
                    ]),
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some(verb.into()),
                        group: Some(group.into()),
                        resource: Some(resource.into()),
                        subresource,
                        namespace: Some(namespace.into()),
                        ..ResourceAttributes::default()
                    }),
                    ..SubjectAccessReviewSpec::default()
                },
                ..SubjectAccessReview::default()
            };
            let answer = reviews
                .create(&PostParams::default(), &review)
                .await
                .expect("a SubjectAccessReview");
            answer.status.is_some_and(|s| s.allowed)
        }
    };
    for (verb, resource) in [
        ("watch", "modeldeployments.modelship.io"),
        ("patch", "modeldeployments.modelship.io/status"),
        ("patch", "modelpipelines.modelship.io/status"),
        ("create", "deployments.apps"),
        ("delete", "services"),
        ("create", "jobs.batch"),
        ("list", "pods"),
        ("watch", "configmaps"),
        ("create", "events.events.k8s.io"),
        ("patch", "httproutes.gateway.networking.k8s.io"),
        ("patch", "virtualservices.networking.istio.io"),
    ] {
        assert!(
            can(verb, resource, "default").await,
            "the operator needs to {verb} {resource}"
        );
    }
    for (verb, resource) in [
        ("update", "modeldeployments.modelship.io"),
        ("patch", "modelpipelines.modelship.io"),
        ("get", "secrets"),
        ("create", "pods"),
        // Jobs are created, never updated: their template is immutable.
        ("patch", "jobs.batch"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "leases.coordination.k8s.io"),
        ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ] {
        assert!(
            !can(verb, resource, "default").await,
            "the operator must not {verb} {resource}"
        );
    }
    // Leases only in its own namespace, for leader election.
    assert!(can("patch", "leases.coordination.k8s.io", "modelship-system").await);
}

/// With `watchNamespace`, the operator's rules are granted in that namespace alone: a Role and
/// a RoleBinding there, and no cluster-wide grant at all.
#[tokio::test]
async fn a_namespaced_operator_gets_a_role_in_its_namespace_and_no_cluster_role() {
    let chart = repo_root().join("charts/modelship");
    let mut template = helm();
    template.args(["template", "modelship"]).arg(&chart).args([
        "--namespace",
        "modelship-system",
        "--set",
        "watchNamespace=team-a",
    ]);
    let rendered = modelship_e2e::output_of(template).await;
    let docs: Vec<serde_json::Value> = rendered
        .split("\n---")
        .filter_map(|d| serde_yaml_ng::from_str::<serde_json::Value>(d).ok())
        .filter(|d| d.is_object())
        .collect();
    let kinds: Vec<(String, String)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or_default().to_string(),
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert!(
        !kinds
            .iter()
            .any(|(k, _)| k == "ClusterRole" || k == "ClusterRoleBinding"),
        "{kinds:?}"
    );
    let role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "team-a")
        .unwrap_or_else(|| panic!("a Role in team-a: {kinds:?}"));
    let resources: Vec<&str> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_array().unwrap())
        .filter_map(|r| r.as_str())
        .collect();
    for needed in [
        "modeldeployments",
        "deployments",
        "services",
        "jobs",
        "pods",
    ] {
        assert!(resources.contains(&needed), "{needed}: {resources:?}");
    }
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == "team-a")
        .unwrap_or_else(|| panic!("a RoleBinding in team-a: {kinds:?}"));
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["subjects"][0]["namespace"], "modelship-system");
}

/// The optional PrometheusRule and dashboard ConfigMap render as valid objects, with the
/// values they take: every alert has a severity, a summary and a description; the ConfigMap
/// has the sidecar's label and the dashboard file as valid JSON.
#[tokio::test]
async fn the_alerts_and_the_dashboard_render_when_enabled() {
    let chart = repo_root().join("charts/modelship");
    let mut lint = helm();
    lint.args(["lint", "--strict"]).arg(&chart).args([
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "grafanaDashboard.enabled=true",
    ]);
    modelship_e2e::output_of(lint).await;
    let mut template = helm();
    template.args(["template", "modelship"]).arg(&chart).args([
        "--namespace",
        "modelship-system",
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.additionalAlertLabels.team=ml",
        "--set",
        "prometheusRule.rules.pipelineFailing.failures=5",
        "--set",
        "prometheusRule.rules.candidateWaiting.enabled=false",
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "grafanaDashboard.label=dashboards",
        "--set",
        "grafanaDashboard.labelValue=modelship",
    ]);
    let rendered = modelship_e2e::output_of(template).await;
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&rendered)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .filter(|d: &serde_json::Value| !d.is_null())
        .collect();
    let of_kind = |kind: &str| {
        let found: Vec<&serde_json::Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "one {kind} in:\n{rendered}");
        found[0]
    };

    let rule = of_kind("PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let alerts: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(
        alerts,
        [
            "ModelshipVersionRolledBack",
            "ModelshipShadowRejected",
            "ModelshipAnalysisInconclusive",
            "ModelshipPrometheusUnreachable",
            "ModelshipReconcileErrors",
            "ModelshipPipelineFailing",
        ],
        "the alerts, without the one turned off"
    );
    for r in rules {
        assert!(r["labels"]["severity"].is_string(), "{r}");
        assert_eq!(r["labels"]["team"], "ml", "{r}");
        for a in ["summary", "description"] {
            assert!(
                r["annotations"][a].as_str().is_some_and(|s| s.len() > 20),
                "{a}: {r}"
            );
        }
    }
    let failing = rules
        .iter()
        .find(|r| r["alert"] == "ModelshipPipelineFailing")
        .unwrap();
    assert!(
        failing["expr"].as_str().unwrap().ends_with(">= 5"),
        "{failing}"
    );

    let config_map = of_kind("ConfigMap");
    assert_eq!(config_map["metadata"]["labels"]["dashboards"], "modelship");
    let json = config_map["data"]["modelship.json"].as_str().unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(json).expect("the dashboard's JSON");
    let file = std::fs::read_to_string(chart.join("dashboards/modelship.json")).unwrap();
    assert_eq!(
        dashboard,
        serde_json::from_str::<serde_json::Value>(&file).unwrap()
    );
    assert!(dashboard["panels"].as_array().unwrap().len() > 10);
}
