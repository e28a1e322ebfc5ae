//! No privilege escalation through the operator: with `--default-service-account`, a
//! namespace's workloads are written as that ServiceAccount of the namespace, so the
//! namespace's RBAC decides what the operator may create there. The operator runs as a local
//! process under the chart's ServiceAccount, whose ClusterRole grants only `impersonate` on
//! serviceaccounts for this.
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use modelship::api::{ModelDeployment, ModelDeploymentSpec};
use modelship_e2e::operator::{self, Options};
use modelship_e2e::{client, test_namespace, wait_for};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);
/// RBAC is not watched: a granted right is noticed at the next recheck (every 15 s), then
/// the Deployments roll out.
const GRANTED_TIMEOUT: Duration = Duration::from_secs(120);

const TENANT: &str = "modelship-tenant";
const NAME: &str = "churn";

fn spec() -> ModelDeploymentSpec {
    let uri = format!(
        "file://{}",
        modelship_e2e::repo_root()
            .join("model-server/models/churn-v1.json")
            .display()
    );
    serde_json::from_value(json!({
        "model": {"version": "churn-v1", "artifact": uri},
        "replicas": 1,
        "template": {"spec": {"containers": [{"name": "server", "image": "model-server:e2e", "ports": [{"containerPort": 8080}]}]}},
    }))
    .expect("a valid spec")
}

/// What a tenant that may not create pods has: Services, and the reads a namespace member
/// usually gets, but no Deployments (nor anything else that makes pods).
fn tenant_rules(with_deployments: bool) -> Value {
    let mut rules = vec![json!({
        "apiGroups": [""],
        "resources": ["services"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    })];
    if with_deployments {
        rules.push(json!({
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "verbs": ["get", "list", "create", "patch", "delete"],
        }));
    }
    json!(rules)
}

fn role(ns: &str, with_deployments: bool) -> Role {
    serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": TENANT, "namespace": ns},
        "rules": tenant_rules(with_deployments),
    }))
    .expect("a valid Role")
}

fn ready(md: &ModelDeployment) -> Option<&modelship::api::Condition> {
    md.status.as_ref().and_then(|s| s.condition("Ready"))
}

#[tokio::test]
async fn a_tenant_whose_service_account_may_not_create_deployments_gets_none() {
    let client = client().await;
    let ns = test_namespace(&client, "impersonation").await;
    let name = ns.name().to_string();

    // The tenant's ServiceAccount may write Services but not Deployments.
    let accounts: Api<ServiceAccount> = ns.api();
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": TENANT}})).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("creating the tenant's ServiceAccount");
    let roles: Api<Role> = ns.api();
    roles
        .create(&PostParams::default(), &role(&name, false))
        .await
        .expect("creating the tenant's Role");
    let bindings: Api<RoleBinding> = ns.api();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": TENANT},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": TENANT},
        "subjects": [{"kind": "ServiceAccount", "name": TENANT, "namespace": name}],
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("creating the tenant's RoleBinding");

    let _operator = operator::start_with(
        &name,
        Options {
            name: "operator-impersonation".into(),
            args: vec![format!("--default-service-account={TENANT}")],
            ..Options::default()
        },
    )
    .await;
    let mds: Api<ModelDeployment> = ns.api();
    mds.create(&PostParams::default(), &ModelDeployment::new(NAME, spec()))
        .await
        .expect("creating a ModelDeployment");

    // Refused by the namespace's RBAC, and said so: in status and in a Warning event.
    let md = wait_for(
        "the ModelDeployment to be refused as its ServiceAccount",
        TIMEOUT,
        || async {
            Ok(mds
                .get_opt(NAME)
                .await?
                .filter(|md| ready(md).is_some_and(|c| c.reason == "Forbidden")))
        },
    )
    .await;
    let condition = ready(&md).unwrap();
    assert_eq!(condition.status, "False");
    let account_ref = format!("ServiceAccount {name}/{TENANT} may not");
    assert!(
        condition.message.contains(&account_ref) && condition.message.contains("deployments.apps"),
        "the condition names the ServiceAccount and what it may not do: {}",
        condition.message
    );
    let events: Api<Event> = ns.api();
    let event = wait_for("a Forbidden event", TIMEOUT, || async {
        Ok(events
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("Forbidden")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(NAME)
            }))
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(
        event
            .note
            .as_deref()
            .is_some_and(|n| n.contains(&account_ref)),
        "{:?}",
        event.note
    );
    let deployments: Api<Deployment> = ns.api();
    let made = deployments.list(&Default::default()).await.unwrap().items;
    assert!(
        made.is_empty(),
        "no Deployment was created with the operator's own rights: {:?}",
        made.iter()
            .map(|d| d.metadata.name.clone())
            .collect::<Vec<_>>()
    );

    // The namespace's administrator grants Deployments: the ModelDeployment becomes Ready.
    roles
        .patch(
            TENANT,
            &PatchParams::default(),
            &Patch::Merge(json!({"rules": tenant_rules(true)})),
        )
        .await
        .expect("granting Deployments to the tenant");
    wait_for(
        "the ModelDeployment to be Ready once its ServiceAccount may create Deployments",
        GRANTED_TIMEOUT,
        || async {
            Ok(mds
                .get_opt(NAME)
                .await?
                .filter(|md| ready(md).is_some_and(|c| c.status == "True")))
        },
    )
    .await;
    assert!(
        deployments
            .get_opt(&format!("{NAME}-stable"))
            .await
            .unwrap()
            .is_some(),
        "the stable Deployment, created as the ServiceAccount"
    );
    ns.delete().await;
}
