//! The operator's foundation against the real control plane: the stable path of a
//! ModelDeployment, the CRDs' validation, garbage collection, and leader election. The
//! operator runs as a local process under the chart's ServiceAccount.
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use modelship::api::{ModelDeployment, ModelDeploymentSpec};
use modelship_e2e::operator::{self, Options};
use modelship_e2e::{client, kubectl, test_namespace, wait_for};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

fn model_uri(file: &str) -> String {
    format!(
        "file://{}",
        modelship_e2e::repo_root()
            .join("model-server/models")
            .join(file)
            .display()
    )
}

fn spec(version: &str, replicas: i32) -> ModelDeploymentSpec {
    serde_json::from_value(json!({
        "model": {"version": version, "artifact": model_uri("churn-v1.json")},
        "replicas": replicas,
        "template": {"spec": {"containers": [{"name": "server", "image": "model-server:e2e", "ports": [{"containerPort": 8080}]}]}},
    }))
    .expect("a valid spec")
}

async fn create(
    client: &Client,
    ns: &str,
    name: &str,
    spec: ModelDeploymentSpec,
) -> ModelDeployment {
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &ModelDeployment::new(name, spec))
        .await
        .expect("creating a ModelDeployment")
}

fn is_ready(md: &ModelDeployment) -> bool {
    md.status
        .as_ref()
        .and_then(|s| s.condition("Ready"))
        .is_some_and(|c| c.status == "True")
}

async fn wait_ready(api: &Api<ModelDeployment>, name: &str) -> ModelDeployment {
    wait_for(
        &format!("ModelDeployment {name} to be Ready"),
        TIMEOUT,
        || async { Ok(api.get_opt(name).await?.filter(is_ready)) },
    )
    .await
}

fn available(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
        })
}

#[tokio::test]
async fn a_sample_gets_an_available_stable_deployment_and_becomes_ready() {
    let client = client().await;
    let ns = test_namespace(&client, "stable").await;
    let _operator = operator::start(ns.name()).await;
    create(&client, ns.name(), "churn", spec("churn-v1", 2)).await;
    let mds: Api<ModelDeployment> = ns.api();
    let md = wait_ready(&mds, "churn").await;
    let status = md.status.unwrap();
    assert_eq!(status.phase.map(|p| p.as_str()), Some("Stable"));
    assert_eq!(status.stable.unwrap().version, "churn-v1");
    assert_eq!(status.observed_generation, md.metadata.generation);
    for c in ["Ready", "Progressing", "Degraded"] {
        assert!(
            status.conditions.iter().any(|x| x.type_ == c),
            "condition {c} is set"
        );
    }

    // kubectl wait works on the condition, as a platform engineer would use it.
    let out = kubectl()
        .args([
            "wait",
            "--for=condition=Ready",
            "--timeout=30s",
            "-n",
            ns.name(),
            "modeldeployment/churn",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let deployments: Api<Deployment> = ns.api();
    let stable = deployments.get("churn-stable").await.unwrap();
    assert!(available(&stable));
    let template = stable.spec.unwrap().template;
    let labels = template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["modelship.io/deployment"], "churn");
    assert_eq!(labels["modelship.io/track"], "stable");
    assert_eq!(labels["modelship.io/version"], "churn-v1");
    let env = template.spec.unwrap().containers[0].env.clone().unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "MODEL_VERSION" && e.value.as_deref() == Some("churn-v1"))
    );
    assert!(env.iter().any(|e| e.name == "MODEL_URI"
        && e.value.as_deref() == Some(model_uri("churn-v1.json").as_str())));
    let owner = &stable.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("ModelDeployment", "churn", Some(true))
    );

    // Clients call <name>, in front of the router.
    let services: Api<Service> = ns.api();
    let front = services.get("churn").await.unwrap();
    assert_eq!(
        front.spec.unwrap().selector.unwrap()["modelship.io/component"],
        "router"
    );
    assert!(services.get("churn-stable").await.is_ok());
    assert!(available(&deployments.get("churn-router").await.unwrap()));

    // `kubectl get modelship` lists the resource with its columns.
    let out = kubectl()
        .args(["get", "modelship", "-n", ns.name()])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("modeldeployment.modelship.io/churn")
            && text.contains("Stable")
            && text.contains("churn-v1"),
        "{text}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn children_are_restored_rescaled_and_garbage_collected() {
    let client = client().await;
    let ns = test_namespace(&client, "children").await;
    let _operator = operator::start(ns.name()).await;
    create(&client, ns.name(), "churn", spec("churn-v1", 1)).await;
    let mds: Api<ModelDeployment> = ns.api();
    wait_ready(&mds, "churn").await;
    let deployments: Api<Deployment> = ns.api();

    // A deleted child comes back.
    let before = deployments.get("churn-stable").await.unwrap().uid();
    deployments
        .delete("churn-stable", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the deleted stable Deployment to be recreated",
        TIMEOUT,
        || async {
            Ok(deployments
                .get_opt("churn-stable")
                .await?
                .filter(|d| d.uid() != before && available(d)))
        },
    )
    .await;

    // A hand edit of what the operator owns is undone.
    let edit = json!({"spec": {"replicas": 4}});
    deployments
        .patch(
            "churn-stable",
            &PatchParams::default(),
            &Patch::Merge(&edit),
        )
        .await
        .unwrap();
    wait_for(
        "the hand-scaled Deployment to return to 1 replica",
        TIMEOUT,
        || async {
            Ok(deployments
                .get("churn-stable")
                .await?
                .spec
                .and_then(|s| s.replicas)
                .filter(|r| *r == 1))
        },
    )
    .await;

    // A changed replica count in the spec is applied.
    let change = json!({"spec": {"replicas": 3}});
    mds.patch("churn", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    wait_for(
        "the stable Deployment to have 3 available replicas",
        TIMEOUT,
        || async {
            Ok(deployments
                .get("churn-stable")
                .await?
                .status
                .and_then(|s| s.available_replicas)
                .filter(|r| *r == 3))
        },
    )
    .await;
    wait_for(
        "observedGeneration to catch up and Ready",
        TIMEOUT,
        || async {
            Ok(mds.get("churn").await.ok().filter(|m| {
                m.status.as_ref().and_then(|s| s.observed_generation) == m.metadata.generation
                    && is_ready(m)
            }))
        },
    )
    .await;

    // Deleting the ModelDeployment garbage-collects every child.
    mds.delete("churn", &DeleteParams::default()).await.unwrap();
    let services: Api<Service> = ns.api();
    wait_for("the children to be garbage-collected", TIMEOUT, || async {
        let d = deployments.list(&Default::default()).await?.items.len();
        let s = services.list(&Default::default()).await?.items.len();
        Ok((d == 0 && s == 0).then_some(()))
    })
    .await;
    ns.delete().await;
}

/// The stable Deployment's container named `server`.
async fn server_container(deployments: &Api<Deployment>) -> serde_json::Value {
    let d = deployments
        .get("churn-stable")
        .await
        .expect("the stable Deployment");
    let d = serde_json::to_value(d).expect("a Deployment as JSON");
    d.pointer("/spec/template/spec/containers")
        .and_then(|cs| cs.as_array())
        .and_then(|cs| cs.iter().find(|c| c["name"] == "server"))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_removed_template_field_reaches_the_deployment_and_converged_children_are_not_rewritten()
{
    let client = client().await;
    let ns = test_namespace(&client, "drift").await;
    // A short resync, so the operator reconciles often while nothing changes.
    let operator = operator::start_with(
        ns.name(),
        Options {
            resync: "1s".into(),
            ..Options::default()
        },
    )
    .await;
    let mut with_extra = spec("churn-v1", 1);
    with_extra.template = serde_json::from_value(json!({"spec": {"containers": [{
        "name": "server", "image": "model-server:e2e", "ports": [{"containerPort": 8080}],
        "env": [{"name": "EXTRA", "value": "1"}],
        // Stored by the API server as 500m: a value written another way is not a change.
        "resources": {"requests": {"cpu": "0.5"}},
    }]}}))
    .unwrap();
    create(&client, ns.name(), "churn", with_extra).await;
    let mds: Api<ModelDeployment> = ns.api();
    wait_ready(&mds, "churn").await;
    let deployments: Api<Deployment> = ns.api();
    let server = server_container(&deployments).await;
    assert!(
        server["env"]
            .as_array()
            .is_some_and(|env| env.iter().any(|e| e["name"] == "EXTRA")),
        "{server}"
    );
    assert_eq!(server["resources"]["requests"]["cpu"], "500m");

    // Converged: reconciles go on (resync), writes of children do not.
    let applies = r#"modelship_child_applies_total{"#;
    let reconciles = r#"modelship_reconciles_total{controller="deployment"}"#;
    let writes_before = operator.metric_sum(applies).await;
    let reconciles_before = operator.metric_sum(reconciles).await;
    wait_for("five more reconciliations", TIMEOUT, || async {
        Ok((operator.metric_sum(reconciles).await >= reconciles_before + 5.0).then_some(()))
    })
    .await;
    assert_eq!(
        operator.metric_sum(applies).await,
        writes_before,
        "a converged ModelDeployment's children were written again"
    );

    // The env var removed from the template leaves the live Deployment.
    let without = json!({"spec": {"template": {"spec": {"containers": [{
        "name": "server", "image": "model-server:e2e", "ports": [{"containerPort": 8080}],
        "resources": {"requests": {"cpu": "0.5"}},
    }]}}}});
    mds.patch("churn", &PatchParams::default(), &Patch::Merge(&without))
        .await
        .unwrap();
    wait_for(
        "the removed env var to leave the stable Deployment",
        TIMEOUT,
        || async {
            let server = server_container(&deployments).await;
            let names: Vec<_> = server["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["name"].as_str())
                .collect();
            Ok((!names.contains(&"EXTRA") && names.contains(&"MODEL_URI")).then_some(()))
        },
    )
    .await;
    ns.delete().await;
}

async fn rejected(api: &Api<ModelDeployment>, body: serde_json::Value) -> String {
    let obj: ModelDeployment = match serde_json::from_value(body.clone()) {
        Ok(o) => o,
        Err(e) => panic!("test object does not parse: {e}: {body}"),
    };
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => panic!("the API server accepted {body}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn the_api_server_rejects_invalid_specs_with_clear_messages() {
    let client = client().await;
    let ns = test_namespace(&client, "cel").await;
    let api: Api<ModelDeployment> = ns.api();
    let template = json!({"spec": {"containers": [{"name": "server", "image": "x"}]}});
    let base = |spec: serde_json::Value| json!({"apiVersion": "modelship.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "bad"}, "spec": spec});

    let both = rejected(
        &api,
        base(json!({"model": {"version": "v1", "artifact": "s3://m/v1"}, "modelFrom": {"pipeline": "p"}, "template": template})),
    )
    .await;
    assert!(both.contains("set exactly one of spec.model (a fixed version) and spec.modelFrom (follow a ModelPipeline)"), "{both}");

    let neither = rejected(&api, base(json!({"template": template}))).await;
    assert!(
        neither.contains("set exactly one of spec.model"),
        "{neither}"
    );

    let bounds = rejected(
        &api,
        base(
            json!({"model": {"version": "v1", "artifact": "s3://m/v1"}, "template": template,
            "analysis": {"metrics": [{"name": "err", "query": "x", "min": 2.0, "max": 1.0}]}}),
        ),
    )
    .await;
    assert!(bounds.contains("min must not be above max"), "{bounds}");

    let percent = rejected(
        &api,
        base(json!({"model": {"version": "v1", "artifact": "s3://m/v1"}, "template": template, "shadow": {"mirrorPercent": 150.0}})),
    )
    .await;
    assert!(
        percent.contains("spec.shadow.mirrorPercent") && percent.contains("100"),
        "{percent}"
    );

    let duration = rejected(
        &api,
        base(json!({"model": {"version": "v1", "artifact": "s3://m/v1"}, "template": template, "analysis": {"interval": "soon"}})),
    )
    .await;
    assert!(duration.contains("spec.analysis.interval"), "{duration}");

    let too_often = rejected(
        &api,
        base(json!({"model": {"version": "v1", "artifact": "s3://m/v1"}, "template": template, "analysis": {"interval": "500ms"}})),
    )
    .await;
    assert!(
        too_often.contains("spec.analysis.interval must be at least 1s"),
        "{too_often}"
    );
    let too_long = rejected(
        &api,
        base(json!({"model": {"version": "v1", "artifact": "s3://m/v1"}, "template": template, "analysis": {"window": "25h"}})),
    )
    .await;
    assert!(
        too_long.contains("spec.analysis.window must be at most 24h"),
        "{too_long}"
    );

    let version = rejected(
        &api,
        base(
            json!({"model": {"version": "v1 beta", "artifact": "s3://m/v1"}, "template": template}),
        ),
    )
    .await;
    assert!(version.contains("spec.model.version"), "{version}");

    let no_track = rejected(
        &api,
        base(json!({"model": {"version": "v1", "artifact": "s3://m/v1"}, "template": template,
            "analysis": {"metrics": [{"name": "err", "query": "sum(x)", "relativeToStable": {"maxIncreasePercent": 10.0}}]}})),
    )
    .await;
    assert!(no_track.contains("must select the track"), "{no_track}");

    // A name the Services derived from it could not have.
    let mut dotted =
        base(json!({"model": {"version": "v1", "artifact": "s3://m/v1"}, "template": template}));
    dotted["metadata"]["name"] = json!("fraud.v2");
    let dotted = rejected(&api, dotted).await;
    assert!(
        dotted.contains("metadata.name must be a DNS label"),
        "{dotted}"
    );

    // Replica counts that would let one tenant take the cluster's capacity.
    let many = rejected(
        &api,
        base(
            json!({"model": {"version": "v1", "artifact": "s3://m/v1"}, "template": template,
            "shadow": {"replicas": 5000}}),
        ),
    )
    .await;
    assert!(
        many.contains("spec.shadow.replicas") && many.contains("1000"),
        "{many}"
    );

    // Router settings the router itself would refuse at start-up.
    let no_timeout = rejected(
        &api,
        base(
            json!({"model": {"version": "v1", "artifact": "s3://m/v1"}, "template": template,
            "traffic": {"router": {"shadowTimeout": "0s"}}}),
        ),
    )
    .await;
    assert!(
        no_timeout.contains("shadowTimeout must be greater than zero"),
        "{no_timeout}"
    );
    for pointer in ["/a,b", "/a~2", "predictions"] {
        let message = rejected(
            &api,
            base(
                json!({"model": {"version": "v1", "artifact": "s3://m/v1"}, "template": template,
                "shadow": {"compare": {"pointers": [pointer]}}}),
            ),
        )
        .await;
        assert!(
            message.contains("must be a JSON pointer"),
            "{pointer}: {message}"
        );
    }
    // A header name the router could not strip (or that would split its flag).
    for header in ["X Api Key", "a,b", ""] {
        let message = rejected(
            &api,
            base(
                json!({"model": {"version": "v1", "artifact": "s3://m/v1"}, "template": template,
                "shadow": {"stripHeaders": [header]}}),
            ),
        )
        .await;
        assert!(
            message.contains("spec.shadow.stripHeaders"),
            "{header:?}: {message}"
        );
    }
    ns.delete().await;
}

#[tokio::test]
async fn a_spec_the_schema_cannot_catch_gets_a_condition_and_an_event() {
    let client = client().await;
    let ns = test_namespace(&client, "invalid").await;
    let operator = operator::start(ns.name()).await;
    let mut s = spec("churn-v1", 1);
    s.container = Some("sidecar".into());
    create(&client, ns.name(), "churn", s).await;
    let mds: Api<ModelDeployment> = ns.api();
    let md = wait_for("the InvalidSpec condition", TIMEOUT, || async {
        Ok(mds
            .get("churn")
            .await?
            .status
            .and_then(|s| s.condition("Ready").cloned())
            .filter(|c| c.reason == "InvalidSpec"))
    })
    .await;
    assert_eq!(md.status, "False");
    assert!(md.message.contains("\"sidecar\""), "{}", md.message);
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let event = wait_for("an InvalidSpec event", TIMEOUT, || async {
        Ok(events
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("InvalidSpec")))
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.note.unwrap_or_default().contains("sidecar"));
    assert_eq!(
        event.regarding.and_then(|r| r.name).as_deref(),
        Some("churn")
    );
    let deployments: Api<Deployment> = ns.api();
    assert!(
        deployments
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing is deployed from an invalid spec"
    );
    // It waits for a change instead of retrying: the error counter stays at zero.
    let metrics = operator.metrics().await;
    assert!(
        !metrics.contains("modelship_reconcile_errors_total{controller=\"deployment\""),
        "{metrics}"
    );

    // Fixing the spec is all it takes.
    let fix = json!({"spec": {"container": "server"}});
    mds.patch("churn", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap();
    wait_ready(&mds, "churn").await;
    ns.delete().await;
}

#[tokio::test]
async fn a_child_name_someone_else_holds_is_reported_and_their_object_left_untouched() {
    let client = client().await;
    let ns = test_namespace(&client, "taken").await;
    let _operator = operator::start(ns.name()).await;
    // A team's own Service that happens to have the stable track's name.
    let services: Api<Service> = ns.api();
    let theirs: Service = serde_json::from_value(json!({
        "metadata": {"name": "churn-stable", "labels": {"team": "payments"}},
        "spec": {"selector": {"app": "payments"}, "ports": [{"port": 80, "targetPort": 9000}]},
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();

    create(&client, ns.name(), "churn", spec("churn-v1", 1)).await;
    let mds: Api<ModelDeployment> = ns.api();
    let ready = wait_for("the NameTaken condition", TIMEOUT, || async {
        Ok(mds
            .get("churn")
            .await?
            .status
            .and_then(|s| s.condition("Ready").cloned())
            .filter(|c| c.reason == "NameTaken"))
    })
    .await;
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains(&format!(
            "Service {}/churn-stable already exists and was not created by this ModelDeployment",
            ns.name()
        )),
        "{}",
        ready.message
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let event = wait_for("a NameTaken event", TIMEOUT, || async {
        Ok(events
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("NameTaken")))
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.note.unwrap_or_default().contains("churn-stable"));

    // Their Service is as they made it: selector, labels, no owner to garbage-collect it.
    let live = services.get("churn-stable").await.unwrap();
    assert_eq!(
        live.spec.and_then(|s| s.selector),
        Some([("app".to_string(), "payments".to_string())].into())
    );
    assert_eq!(
        live.metadata.labels,
        Some([("team".to_string(), "payments".to_string())].into())
    );
    assert!(
        live.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );

    // Once they free the name, the ModelDeployment proceeds on its own.
    services
        .delete("churn-stable", &DeleteParams::default())
        .await
        .unwrap();
    wait_ready(&mds, "churn").await;
    ns.delete().await;
}

#[tokio::test]
async fn a_second_replica_stays_passive_until_the_leader_dies() {
    let client = client().await;
    let ns = test_namespace(&client, "leader").await;
    let mut first = operator::start_with(
        ns.name(),
        Options {
            name: "first".into(),
            ..Options::default()
        },
    )
    .await;
    let second = operator::start_with(
        ns.name(),
        Options {
            name: "second".into(),
            wait_ready: false,
            ..Options::default()
        },
    )
    .await;
    create(&client, ns.name(), "one", spec("churn-v1", 1)).await;
    let mds: Api<ModelDeployment> = ns.api();
    wait_ready(&mds, "one").await;
    // The standby did nothing: it never reconciled and does not lead.
    assert!(!second.is_leader().await);
    assert!(
        !second
            .metrics()
            .await
            .contains("modelship_reconciles_total"),
        "the standby reconciled"
    );
    assert!(
        first
            .metrics()
            .await
            .contains("modelship_reconciles_total{controller=\"deployment\"}")
    );

    // The leader crashes without releasing the lease; the standby takes over when it expires.
    first.kill();
    wait_for(
        "the standby to take the lease",
        Duration::from_secs(30),
        || async { Ok(second.is_leader().await.then_some(())) },
    )
    .await;
    create(&client, ns.name(), "two", spec("churn-v1", 1)).await;
    wait_ready(&mds, "two").await;
    assert!(
        second
            .metrics()
            .await
            .contains("modelship_reconciles_total{controller=\"deployment\"}")
    );
    ns.delete().await;
}
