//! The operator under test: the chart installed for its RBAC, and `modelship run` started as a
//! local process that authenticates as the chart's ServiceAccount, never as admin.
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::{
    Process, binary, client, free_port, helm, kubectl, prom, repo_root, service_account_kubeconfig,
    wait_for,
};

/// Namespace and name of the Helm release the tests install.
pub const RELEASE_NAMESPACE: &str = "modelship-system";
pub const RELEASE: &str = "modelship";
/// The chart's ServiceAccount (the release's full name).
pub const SERVICE_ACCOUNT: &str = "modelship";

static INSTALLED: OnceCell<PathBuf> = OnceCell::const_new();

async fn run(what: &str, mut cmd: tokio::process::Command) {
    let out = cmd.output().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Applies the CRDs from `crds/` (server-side, so a changed CRD is updated in a reused
/// cluster), installs or upgrades the chart, and returns a kubeconfig of the chart's
/// ServiceAccount. Done once per test binary.
pub async fn install() -> PathBuf {
    INSTALLED
        .get_or_init(|| async {
            let root = repo_root();
            let mut apply = kubectl();
            apply
                .args(["apply", "--server-side", "--force-conflicts", "-f"])
                .arg(root.join("crds"));
            run("kubectl apply -f crds/", apply).await;
            let mut wait = kubectl();
            wait.args([
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/modeldeployments.modelship.io",
                "crd/modelpipelines.modelship.io",
            ]);
            run("waiting for the CRDs", wait).await;
            let mut install = helm();
            install
                .args(["upgrade", "--install", RELEASE])
                .arg(root.join("charts/modelship"))
                .args([
                    "--namespace",
                    RELEASE_NAMESPACE,
                    "--create-namespace",
                    "--skip-crds",
                ])
                // The operator runs as a local process here; the in-cluster replica is a
                // KWOK pod that does nothing.
                .args(["--set", "replicaCount=0"]);
            run("helm upgrade --install", install).await;
            let client = client().await;
            service_account_kubeconfig(&client, RELEASE_NAMESPACE, SERVICE_ACCOUNT).await
        })
        .await
        .clone()
}

/// How to start the operator.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seconds a lease lasts: short, so a standby takes over quickly.
    pub lease_duration: u64,
    /// Wait for `/readyz` (the leader's caches are filled) before returning.
    pub wait_ready: bool,
    /// A name for the process's log file.
    pub name: String,
    /// `--resync`: how often every object is reconciled without a change.
    pub resync: String,
    /// Extra arguments for `modelship run`.
    pub args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lease_duration: 4,
            wait_ready: true,
            name: "operator".into(),
            resync: "30s".into(),
            args: Vec::new(),
        }
    }
}

/// A running operator process.
pub struct Operator {
    pub process: Process,
    /// Base URL of its `/metrics`, `/livez` and `/readyz`.
    pub admin: String,
}

impl Operator {
    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        crate::http_client()
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("operator /metrics")
            .text()
            .await
            .unwrap_or_default()
    }

    /// The sum of the samples whose series starts with `prefix` (a metric name, or a name
    /// with its first labels: `modelship_child_applies_total{kind="Deployment"`).
    pub async fn metric_sum(&self, prefix: &str) -> f64 {
        crate::sum_samples(&self.metrics().await, prefix)
    }

    /// Whether `/readyz` answers 200.
    pub async fn is_ready(&self) -> bool {
        crate::http_client()
            .get(format!("{}/readyz", self.admin))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Whether it holds the leader lease (its `modelship_leader` gauge is 1).
    pub async fn is_leader(&self) -> bool {
        match crate::http_client()
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
        {
            Ok(r) => r
                .text()
                .await
                .unwrap_or_default()
                .lines()
                .any(|l| l.trim() == "modelship_leader 1"),
            Err(_) => false,
        }
    }

    /// Kills it at once, like a crash: no lease release, no graceful shutdown.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// Starts `modelship run` for `namespace` under the chart's ServiceAccount and waits until it
/// leads with full caches.
pub async fn start(namespace: &str) -> Operator {
    start_with(namespace, Options::default()).await
}

/// Starts `modelship run` for `namespace` with `options`.
pub async fn start_with(namespace: &str, options: Options) -> Operator {
    let kubeconfig = install().await;
    let port = free_port();
    let admin = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(binary("modelship"));
    cmd.arg("run")
        .args(["--namespace", namespace])
        .args(["--admin-listen", &format!("127.0.0.1:{port}")])
        .args(["--lease-namespace", RELEASE_NAMESPACE])
        .args(["--lease-name", &format!("e2e-{namespace}")])
        .args(["--lease-duration", &options.lease_duration.to_string()])
        .args(["--lease-grace", "1"])
        .args(["--prometheus-url", &prom::url()])
        .args(["--prometheus-timeout", "2s"])
        .args(["--router-image", "modelship:e2e"])
        .args(["--resync", &options.resync])
        .args(&options.args)
        .env("KUBECONFIG", &kubeconfig)
        .env("MODELSHIP_LOG_FORMAT", "text")
        .env("MODELSHIP_LOG", "info,modelship=debug")
        .env_remove("POD_NAME");
    let process = Process::spawn(&options.name, cmd);
    let operator = Operator { process, admin };
    if options.wait_ready {
        wait_for(
            "the operator to lead with full caches",
            Duration::from_secs(60),
            || async {
                Ok((operator.is_leader().await && operator.is_ready().await).then_some(()))
            },
        )
        .await;
    } else {
        let url = format!("{}/livez", operator.admin);
        wait_for(
            "the operator to serve /livez",
            Duration::from_secs(60),
            || {
                let url = url.clone();
                async move {
                    Ok(crate::http_client()
                        .get(&url)
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                        .map(|_| ()))
                }
            },
        )
        .await;
    }
    operator
}
