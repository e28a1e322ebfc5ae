//! Smoke tests of the local control plane: the behaviour that modelship's end-to-end
//! tests rely on (controllers, KWOK stages, termination messages, CRDs, server-side
//! apply, RBAC, pinned clients).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerStateTerminated, Pod, Secret, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client};
use modelship_e2e::{
    TestNamespace, client, client_from_kubeconfig, helm, kubectl, pinned_version, run_dir,
    service_account_kubeconfig, test_namespace, wait_for,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

fn deployment(name: &str, replicas: i32, pod_annotations: Value) -> Deployment {
    from_json(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name }, "annotations": pod_annotations },
                "spec": { "containers": [{ "name": "server", "image": "registry.invalid/model-server:1" }] }
            }
        }
    }))
}

fn job(name: &str, pod_annotations: Value, spec: Value) -> Job {
    let mut job = json!({
        "metadata": { "name": name },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": { "annotations": pod_annotations },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{ "name": "main", "image": "registry.invalid/train:1" }]
                }
            }
        }
    });
    if let (Some(target), Some(extra)) = (job["spec"].as_object_mut(), spec.as_object()) {
        target.extend(extra.clone());
    }
    from_json(job)
}

async fn pods_of(ns: &TestNamespace, selector: &str) -> Vec<Pod> {
    ns.api::<Pod>()
        .list(&ListParams::default().labels(selector))
        .await
        .expect("listing pods")
        .items
}

/// The terminated state of a finished pod's only container.
fn terminated(pod: &Pod) -> ContainerStateTerminated {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .unwrap_or_else(|| panic!("pod {:?} has no terminated container", pod.metadata.name))
}

/// Waits until the Job has condition `kind` (Complete or Failed) and returns the Job.
async fn wait_for_job(jobs: &Api<Job>, name: &str, kind: &str) -> Job {
    wait_for(&format!("job {name} {kind}"), TIMEOUT, || async {
        let job = jobs.get(name).await?;
        let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
        let done =
            conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"));
        Ok(done.then_some(job))
    })
    .await
}

fn job_condition_reason(job: &Job, kind: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)?
        .reason
        .clone()
}

#[tokio::test]
async fn deployment_becomes_available_and_replaces_a_deleted_pod() {
    let client = client().await;
    let ns = test_namespace(&client, "smoke-deployment").await;
    let deployments: Api<Deployment> = ns.api();
    deployments
        .create(&PostParams::default(), &deployment("web", 3, json!({})))
        .await
        .unwrap();

    let available = || async {
        let d = deployments.get("web").await?;
        let status = d.status.unwrap_or_default();
        let available = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True");
        Ok((available && status.available_replicas == Some(3)).then_some(()))
    };
    wait_for(
        "deployment web Available with 3 replicas",
        TIMEOUT,
        available,
    )
    .await;

    let pods = pods_of(&ns, "app=web").await;
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(
            pod.spec
                .as_ref()
                .unwrap()
                .node_name
                .as_deref()
                .unwrap()
                .starts_with("kwok-node-")
        );
        assert!(status.pod_ip.is_some(), "KWOK gives pods an IP");
        assert!(
            status
                .conditions
                .as_ref()
                .unwrap()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
    }

    // A deleted pod goes away and its ReplicaSet replaces it.
    let victim = pods[0].metadata.name.clone().unwrap();
    ns.api::<Pod>()
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(&format!("pod {victim} to be replaced"), TIMEOUT, || async {
        let pods = pods_of(&ns, "app=web").await;
        let gone = pods
            .iter()
            .all(|p| p.metadata.name.as_deref() != Some(victim.as_str()));
        let ready = pods
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        Ok((gone && ready == 3).then_some(()))
    })
    .await;
    wait_for("deployment web Available again", TIMEOUT, available).await;
    ns.delete().await;
}

#[tokio::test]
async fn ready_false_annotation_keeps_pods_unready() {
    let client = client().await;
    let ns = test_namespace(&client, "smoke-unready").await;
    let deployments: Api<Deployment> = ns.api();
    let annotations = json!({ "kwok.modelship.io/ready": "false" });
    deployments
        .create(
            &PostParams::default(),
            &deployment("broken", 1, annotations),
        )
        .await
        .unwrap();

    let pod = wait_for("pod of deployment broken Running", TIMEOUT, || async {
        let pods = pods_of(&ns, "app=broken").await;
        Ok(pods
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
    })
    .await;
    let ready = pod
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    let status = deployments
        .get("broken")
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    assert_eq!(status.available_replicas.unwrap_or(0), 0);
    ns.delete().await;
}

#[tokio::test]
async fn job_completes_and_leaves_its_termination_message() {
    let client = client().await;
    let ns = test_namespace(&client, "smoke-job").await;
    let jobs: Api<Job> = ns.api();
    let message =
        r#"{"schemaVersion":1,"metrics":{"f1":0.91,"rmse":0.25},"artifactDigest":"sha256:0a1b"}"#;
    let pp = PostParams::default();
    jobs.create(
        &pp,
        &job(
            "train",
            json!({ "kwok.modelship.io/message": message }),
            json!({}),
        ),
    )
    .await
    .unwrap();
    // No annotation at all: a Job's pod succeeds with exit code 0 and no message.
    jobs.create(&pp, &job("plain", json!({}), json!({})))
        .await
        .unwrap();

    for (name, want_message) in [("train", Some(message)), ("plain", None)] {
        let done = wait_for_job(&jobs, name, "Complete").await;
        assert_eq!(done.status.unwrap().succeeded, Some(1));
        let pods = pods_of(&ns, &format!("batch.kubernetes.io/job-name={name}")).await;
        assert_eq!(pods.len(), 1, "job {name} ran one pod");
        assert_eq!(
            pods[0].status.as_ref().unwrap().phase.as_deref(),
            Some("Succeeded")
        );
        let state = terminated(&pods[0]);
        assert_eq!(state.exit_code, 0);
        assert_eq!(state.reason.as_deref(), Some("Completed"));
        assert_eq!(state.message.as_deref(), want_message);
    }
    ns.delete().await;
}

#[tokio::test]
async fn job_fails_with_the_chosen_exit_code_and_message() {
    let client = client().await;
    let ns = test_namespace(&client, "smoke-job-fail").await;
    let jobs: Api<Job> = ns.api();
    let message = "data schema mismatch: column \"age\" is missing";
    let annotations =
        json!({ "kwok.modelship.io/exit-code": "2", "kwok.modelship.io/message": message });
    jobs.create(
        &PostParams::default(),
        &job("validate", annotations, json!({})),
    )
    .await
    .unwrap();

    let failed = wait_for_job(&jobs, "validate", "Failed").await;
    assert_eq!(
        job_condition_reason(&failed, "Failed").as_deref(),
        Some("BackoffLimitExceeded")
    );
    let pods = pods_of(&ns, "batch.kubernetes.io/job-name=validate").await;
    assert_eq!(pods.len(), 1);
    assert_eq!(
        pods[0].status.as_ref().unwrap().phase.as_deref(),
        Some("Failed")
    );
    let state = terminated(&pods[0]);
    assert_eq!(state.exit_code, 2);
    assert_eq!(state.reason.as_deref(), Some("Error"));
    assert_eq!(state.message.as_deref(), Some(message));
    ns.delete().await;
}

#[tokio::test]
async fn pod_failure_policy_stops_retries_on_exit_code_3_only() {
    let client = client().await;
    let ns = test_namespace(&client, "smoke-failure-policy").await;
    let jobs: Api<Job> = ns.api();
    // Exit code 3 means "check failed, do not retry": fail the Job at once.
    let policy = json!({
        "backoffLimit": 1,
        "podFailurePolicy": { "rules": [
            { "action": "FailJob", "onExitCodes": { "containerName": "main", "operator": "In", "values": [3] } }
        ]}
    });
    let gate = r#"{"schemaVersion":1,"failedGates":["f1"]}"#;
    let pp = PostParams::default();
    let annotations =
        json!({ "kwok.modelship.io/exit-code": "3", "kwok.modelship.io/message": gate });
    jobs.create(&pp, &job("evaluate", annotations, policy.clone()))
        .await
        .unwrap();
    // Any other failure (a crash) is retried up to backoffLimit.
    let annotations =
        json!({ "kwok.modelship.io/exit-code": "1", "kwok.modelship.io/message": "crash" });
    jobs.create(&pp, &job("crash", annotations, policy))
        .await
        .unwrap();

    let failed = wait_for_job(&jobs, "evaluate", "Failed").await;
    assert_eq!(
        job_condition_reason(&failed, "Failed").as_deref(),
        Some("PodFailurePolicy")
    );
    let pods = pods_of(&ns, "batch.kubernetes.io/job-name=evaluate").await;
    assert_eq!(pods.len(), 1, "no retry after exit code 3");
    let state = terminated(&pods[0]);
    assert_eq!((state.exit_code, state.message.as_deref()), (3, Some(gate)));

    let crashed = wait_for_job(&jobs, "crash", "Failed").await;
    assert_eq!(
        job_condition_reason(&crashed, "Failed").as_deref(),
        Some("BackoffLimitExceeded")
    );
    let pods = pods_of(&ns, "batch.kubernetes.io/job-name=crash").await;
    assert_eq!(
        pods.len(),
        2,
        "exit code 1 is retried once (backoffLimit 1)"
    );
    ns.delete().await;
}

#[tokio::test]
async fn delay_annotation_keeps_a_job_running_until_it_is_deleted() {
    let client = client().await;
    let ns = test_namespace(&client, "smoke-job-delay").await;
    let jobs: Api<Job> = ns.api();
    let pp = PostParams::default();
    jobs.create(
        &pp,
        &job(
            "long",
            json!({ "kwok.modelship.io/delay": "1h" }),
            json!({}),
        ),
    )
    .await
    .unwrap();
    jobs.create(&pp, &job("short", json!({}), json!({})))
        .await
        .unwrap();

    wait_for_job(&jobs, "short", "Complete").await;
    // Both pods started together; the short one has finished, the long one still runs.
    let long = wait_for("pod of job long Running", TIMEOUT, || async {
        let pods = pods_of(&ns, "batch.kubernetes.io/job-name=long").await;
        Ok(pods
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
    })
    .await;
    let job = jobs.get("long").await.unwrap();
    assert_eq!(job.status.unwrap().active, Some(1));

    // Deleting the Job deletes its running pod (KWOK's pod-delete stage).
    let background = DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Background),
        ..Default::default()
    };
    jobs.delete("long", &background).await.unwrap();
    let name = long.metadata.name.unwrap();
    wait_for(&format!("pod {name} deleted"), TIMEOUT, || async {
        Ok(ns
            .api::<Pod>()
            .get_opt(&name)
            .await?
            .is_none()
            .then_some(()))
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn crd_with_server_side_apply_and_status_subresource() {
    let client = client().await;
    let ns = test_namespace(&client, "smoke-crd").await;
    // CRDs are cluster-wide: a group of this test's own.
    let group = format!("{}.e2e.modelship.io", ns.name());
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = from_json(json!({
        "metadata": { "name": format!("widgets.{group}") },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": { "type": "object", "properties": {
                            "size": { "type": "integer", "minimum": 1 },
                            "color": { "type": "string" }
                        }},
                        "status": { "type": "object", "properties": {
                            "phase": { "type": "string" },
                            "observedSize": { "type": "integer" }
                        }}
                    }
                }}
            }]
        }
    }));
    let crd_name = crd.metadata.name.clone().unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    wait_for(&format!("CRD {crd_name} Established"), TIMEOUT, || async {
        let crd = crds.get(&crd_name).await?;
        let established = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        Ok(established.then_some(()))
    })
    .await;

    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &resource);
    let apply = |manager: &str, force: bool, spec: Value| {
        let mut params = PatchParams::apply(manager);
        params.force = force;
        let object = json!({ "apiVersion": format!("{group}/v1"), "kind": "Widget", "metadata": { "name": "w" }, "spec": spec });
        let widgets = widgets.clone();
        async move { widgets.patch("w", &params, &Patch::Apply(object)).await }
    };
    // The API is served as soon as the CRD is Established, but discovery may lag: poll.
    wait_for("widget w created by server-side apply", TIMEOUT, || async {
        Ok(Some(
            apply("modelship-e2e", false, json!({ "size": 1, "color": "red" })).await?,
        ))
    })
    .await;
    let changed = apply("modelship-e2e", false, json!({ "size": 2, "color": "red" }))
        .await
        .unwrap();
    assert_eq!(changed.data["spec"]["size"], 2);
    let managers: Vec<String> = changed
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"modelship-e2e".to_string()),
        "managers: {managers:?}"
    );

    // Another manager conflicts on a field it does not own, unless it forces.
    match apply("someone-else", false, json!({ "color": "blue" })).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{e:?}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let forced = apply("someone-else", true, json!({ "color": "blue" }))
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["color"], "blue");
    assert_eq!(forced.data["spec"]["size"], 2);

    // Status is a subresource: written through /status, ignored on the main resource.
    let status = json!({ "status": { "phase": "Ready", "observedSize": 2 } });
    let updated = widgets
        .patch_status("w", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(updated.data["status"]["phase"], "Ready");
    let ignored = json!({ "status": { "phase": "Hacked" } });
    widgets
        .patch("w", &PatchParams::default(), &Patch::Merge(&ignored))
        .await
        .unwrap();
    let got = widgets.get("w").await.unwrap();
    assert_eq!(got.data["status"]["phase"], "Ready");
    assert_eq!(got.data["status"]["observedSize"], 2);

    ns.delete().await;
    crds.delete(&crd_name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn service_account_gets_only_what_its_role_grants() {
    let client = client().await;
    let ns = test_namespace(&client, "smoke-rbac").await;
    let pp = PostParams::default();
    let sa: ServiceAccount = from_json(json!({ "metadata": { "name": "reader" } }));
    ns.api::<ServiceAccount>().create(&pp, &sa).await.unwrap();
    let role: Role = from_json(json!({
        "metadata": { "name": "configmap-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"] }]
    }));
    ns.api::<Role>().create(&pp, &role).await.unwrap();
    let binding: RoleBinding = from_json(json!({
        "metadata": { "name": "reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": ns.name() }]
    }));
    ns.api::<RoleBinding>().create(&pp, &binding).await.unwrap();
    let cm: ConfigMap =
        from_json(json!({ "metadata": { "name": "settings" }, "data": { "k": "v" } }));
    ns.api::<ConfigMap>().create(&pp, &cm).await.unwrap();

    let kubeconfig = service_account_kubeconfig(&client, ns.name(), "reader").await;
    let reader: Client = client_from_kubeconfig(&kubeconfig).await.unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(reader.clone(), ns.name());
    // Allowed (RBAC's informer may take a moment to see the new binding).
    let listed = wait_for("reader may list configmaps", TIMEOUT, || async {
        Ok(Some(configmaps.list(&ListParams::default()).await?))
    })
    .await;
    assert!(
        listed
            .items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("settings"))
    );
    assert_eq!(
        configmaps.get("settings").await.unwrap().data.unwrap()["k"],
        "v"
    );

    // Denied: verbs, resources and namespaces the Role does not grant.
    let forbidden = |result: Result<(), kube::Error>, what: &str| match result {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    };
    let new_cm: ConfigMap = from_json(json!({ "metadata": { "name": "other" } }));
    forbidden(
        configmaps.create(&pp, &new_cm).await.map(|_| ()),
        "create configmap",
    );
    forbidden(
        configmaps
            .delete("settings", &DeleteParams::default())
            .await
            .map(|_| ()),
        "delete configmap",
    );
    let secrets: Api<Secret> = Api::namespaced(reader.clone(), ns.name());
    forbidden(
        secrets.list(&ListParams::default()).await.map(|_| ()),
        "list secrets",
    );
    let elsewhere: Api<ConfigMap> = Api::namespaced(reader.clone(), "default");
    forbidden(
        elsewhere.list(&ListParams::default()).await.map(|_| ()),
        "list configmaps in default",
    );

    // The pinned kubectl agrees, acting as the ServiceAccount.
    let can_i = |verb: &'static str, resource: &'static str| {
        let kubeconfig = kubeconfig.clone();
        async move {
            let out = kubectl()
                .env("KUBECONFIG", &kubeconfig)
                .args(["auth", "can-i", verb, resource])
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    };
    assert_eq!(can_i("list", "configmaps").await, "yes");
    assert_eq!(can_i("create", "configmaps").await, "no");
    ns.delete().await;
}

#[tokio::test]
async fn pinned_clients_match_the_server() {
    let client = client().await;
    let want = pinned_version("KUBERNETES_VERSION");
    let server = client.apiserver_version().await.unwrap();
    assert_eq!(server.git_version, want, "/version of the API server");
    assert_eq!(server.git_tree_state, "clean");

    let out = kubectl()
        .args(["version", "-o", "json"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let versions: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(versions["clientVersion"]["gitVersion"], want.as_str());
    assert_eq!(versions["serverVersion"]["gitVersion"], want.as_str());

    let out = helm()
        .args(["version", "--template", "{{ .Version }}"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        pinned_version("HELM_VERSION")
    );
}

#[tokio::test]
async fn helm_installs_a_chart_that_requires_the_pinned_kubernetes() {
    let client = client().await;
    let ns = test_namespace(&client, "smoke-helm").await;
    let chart = run_dir().join(format!("{}-chart", ns.name()));
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    // kubeVersion is checked against the server's /version, so the stamped version matters.
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: smoke\nversion: 0.1.0\nkubeVersion: \">=1.36.0-0\"\n",
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    )
    .unwrap();
    std::fs::write(chart.join("values.yaml"), "greeting: hello\n").unwrap();

    let out = helm()
        .args(["install", "smoke"])
        .arg(&chart)
        .args([
            "--namespace",
            ns.name(),
            "--set",
            "greeting=ahoy",
            "--wait",
            "--timeout",
            "60s",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cm = ns.api::<ConfigMap>().get("smoke-settings").await.unwrap();
    assert_eq!(cm.data.unwrap()["greeting"], "ahoy");
    let labels: BTreeMap<String, String> = cm.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("Helm")
    );
    std::fs::remove_dir_all(&chart).unwrap();
    ns.delete().await;
}
