//! The local control plane: clients, namespaces, the pinned kubectl and helm.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

use crate::{repo_root, run_dir, wait_for};

/// Label on every namespace that [`test_namespace`] creates.
pub const E2E_LABEL: &str = "modelship.io/e2e";

const NOT_UP: &str = "the local cluster is not up: run `make test` (or `e2e/cluster/up`) first";

/// The admin kubeconfig: `$MODELSHIP_E2E_KUBECONFIG`, or `e2e/.cluster/kubeconfig`
/// written by `e2e/cluster/up`.
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os("MODELSHIP_E2E_KUBECONFIG") {
        Some(path) => PathBuf::from(path),
        None => repo_root().join("e2e/.cluster/kubeconfig"),
    }
}

/// A client that acts as the cluster admin (a client certificate in `system:masters`).
///
/// Panics, saying to run `make test` or `e2e/cluster/up`, when the cluster is not up:
/// end-to-end tests never skip.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    assert!(
        path.is_file(),
        "{NOT_UP} ({} does not exist)",
        path.display()
    );
    let client = client_from_kubeconfig(&path)
        .await
        .unwrap_or_else(|e| panic!("{NOT_UP}: {e:#}"));
    if let Err(e) = client.apiserver_version().await {
        panic!(
            "{NOT_UP}: the API server in {} does not answer: {e}",
            path.display()
        );
    }
    client
}

/// A client from any kubeconfig file, e.g. one from [`service_account_kubeconfig`].
pub async fn client_from_kubeconfig(path: &Path) -> anyhow::Result<Client> {
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A namespace of its own for one test, labelled `modelship.io/e2e=true`.
///
/// Call [`TestNamespace::delete`] at the end of the test; if the test panics first,
/// dropping it deletes the namespace without waiting.
pub struct TestNamespace {
    /// The namespace's (generated) name.
    pub name: String,
    client: Client,
    deleted: bool,
}

/// Creates a namespace named `<prefix>-<random suffix>` and waits until its `default`
/// ServiceAccount exists (ServiceAccount admission rejects pods until then).
/// `prefix` is a DNS label: lowercase letters, digits and `-`, at most 57 characters.
pub async fn test_namespace(client: &Client, prefix: &str) -> TestNamespace {
    test_namespace_with(client, prefix, json!({}), json!({})).await
}

/// [`test_namespace`] with more labels and annotations (JSON objects of strings).
pub async fn test_namespace_with(
    client: &Client,
    prefix: &str,
    labels: serde_json::Value,
    annotations: serde_json::Value,
) -> TestNamespace {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut all_labels = json!({ E2E_LABEL: "true" });
    if let (Some(all), Some(more)) = (all_labels.as_object_mut(), labels.as_object()) {
        all.extend(more.clone());
    }
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {
            "generateName": format!("{prefix}-"),
            "labels": all_labels,
            "annotations": annotations,
        }
    }))
    .expect("valid Namespace");
    let created = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating a namespace {prefix}-*: {e}"));
    let name = created
        .metadata
        .name
        .expect("the server names the namespace");
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_for(
        &format!("the default ServiceAccount in namespace {name}"),
        Duration::from_secs(30),
        || async { Ok(service_accounts.get_opt("default").await?.map(|_| ())) },
    )
    .await;
    TestNamespace {
        name,
        client: client.clone(),
        deleted: false,
    }
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An `Api` for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace (its objects go with it) and waits until it is gone.
    pub async fn delete(mut self) {
        self.deleted = true;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces
            .delete(&self.name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) => panic!("deleting namespace {}: {e}", self.name),
        }
        let name = self.name.clone();
        wait_for(
            &format!("namespace {name} to be deleted"),
            Duration::from_secs(60),
            || async { Ok(namespaces.get_opt(&name).await?.is_none().then_some(())) },
        )
        .await;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // A failed test: start the deletion with the pinned kubectl (no runtime needed here).
        delete_without_waiting("namespace", &self.name);
    }
}

/// Starts deleting object `kind`/`name` with the pinned kubectl and does not wait: the
/// clean-up of a failed test, from a `Drop` that has no runtime to call the API with.
pub(crate) fn delete_without_waiting(kind: &str, name: &str) {
    let _ = std::process::Command::new(kubectl_path())
        .env("KUBECONFIG", kubeconfig_path())
        .args(["delete", kind, name, "--wait=false", "--ignore-not-found"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

fn kubectl_path() -> PathBuf {
    repo_root().join("e2e/.cluster/bin/kubectl")
}

/// The pinned kubectl (`e2e/.cluster/bin/kubectl`) with `KUBECONFIG` set to the admin kubeconfig.
pub fn kubectl() -> tokio::process::Command {
    let path = kubectl_path();
    assert!(
        path.exists(),
        "{NOT_UP} ({} does not exist)",
        path.display()
    );
    let mut cmd = tokio::process::Command::new(path);
    cmd.env("KUBECONFIG", kubeconfig_path()).kill_on_drop(true);
    cmd
}

/// The workspace's `kubectl-modelship` plugin (`target/<profile>/kubectl-modelship`, built
/// by `cargo build --workspace --bins`) with `KUBECONFIG` set to the admin kubeconfig: what
/// `kubectl modelship` runs.
pub fn kubectl_modelship() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(crate::binary("kubectl-modelship"));
    cmd.env("KUBECONFIG", kubeconfig_path()).kill_on_drop(true);
    cmd
}

/// The pinned helm (`e2e/.cluster/bin/helm`) with `KUBECONFIG` set to the admin kubeconfig
/// and its cache, config and data under `e2e/.run/helm/`.
pub fn helm() -> tokio::process::Command {
    let path = repo_root().join("e2e/.cluster/bin/helm");
    assert!(
        path.exists(),
        "{NOT_UP} ({} does not exist)",
        path.display()
    );
    let home = run_dir().join("helm");
    let mut cmd = tokio::process::Command::new(path);
    cmd.env("KUBECONFIG", kubeconfig_path())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .kill_on_drop(true);
    cmd
}

/// Writes a kubeconfig that authenticates as ServiceAccount `service_account` in
/// `namespace`, with a one-hour token from the TokenRequest API, and returns its path
/// (`e2e/.run/<namespace>-<service_account>.kubeconfig`). Use it to run the operator
/// with the RBAC its chart grants rather than as admin.
pub async fn service_account_kubeconfig(
    client: &Client,
    namespace: &str,
    service_account: &str,
) -> PathBuf {
    let admin = Kubeconfig::read_from(kubeconfig_path()).expect("reading the admin kubeconfig");
    let cluster = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .expect("the admin kubeconfig names a cluster");
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = service_accounts
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("requesting a token for {namespace}/{service_account}: {e}"))
        .status
        .expect("a TokenRequest answer has a status")
        .token;
    let user = format!("system:serviceaccount:{namespace}:{service_account}");
    // JSON is YAML: kubectl and kube read it as a kubeconfig.
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "modelship-e2e", "cluster": {
            "server": cluster.server,
            "certificate-authority-data": cluster.certificate_authority_data,
        }}],
        "users": [{ "name": user, "user": { "token": token } }],
        "contexts": [{ "name": "modelship-e2e", "context": {
            "cluster": "modelship-e2e", "user": user, "namespace": namespace,
        }}],
        "current-context": "modelship-e2e",
    });
    let path = run_dir().join(format!("{namespace}-{service_account}.kubeconfig"));
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&kubeconfig).expect("serialisable"),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}
