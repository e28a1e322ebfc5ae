//! Harness for modelship's end-to-end tests, against the real local control plane
//! (`e2e/cluster/up`) and Prometheus (`e2e/prometheus/up`) that `make test` starts.
//!
//! - [`client`]: an admin `kube::Client`; [`service_account_kubeconfig`]: a kubeconfig
//!   that acts as a ServiceAccount (to run the operator with its chart's RBAC).
//! - [`test_namespace`]: a fresh namespace per test.
//! - [`wait_for`]: poll with a deadline; tests never sleep to synchronise.
//! - [`kubectl`], [`helm`]: the pinned clients that match the server; [`kubectl_modelship`]:
//!   the workspace's kubectl plugin.
//! - [`Process`]: a local process (the operator, the router, a model server) that logs
//!   to `e2e/.run/` and is killed when dropped.
//! - [`prom`]: register scrape targets, query Prometheus, stop and start it.
//! - [`http_client`]: a `reqwest::Client` that works in the workspace build.
//! - [`operator`]: the chart installed for its RBAC and `modelship run` as a local process
//!   under the chart's ServiceAccount.
//! - [`pods`]: local processes standing for a ModelDeployment's pods (model servers and
//!   the router), following its Deployments and scraped by Prometheus.
//! - [`node`]: the real node (`e2e/cluster/node-up`): namespaces whose pods run there as real
//!   containers of the locally built images.
//! - [`churn`]: the example ML project (examples/churn-model) as a ModelPipeline of real pods,
//!   the ModelDeployment that follows it and the volume its artifacts live on.
//!
//! The cluster is never optional: when it is not up, [`client`] panics and says how
//! to start it. See `e2e/README.md`.

pub mod churn;
mod cluster;
pub mod node;
pub mod operator;
pub mod pods;
mod process;
pub mod prom;
mod wait;

use std::net::TcpListener;
use std::path::PathBuf;

pub use cluster::{
    E2E_LABEL, TestNamespace, client, client_from_kubeconfig, helm, kubeconfig_path, kubectl,
    kubectl_modelship, service_account_kubeconfig, test_namespace, test_namespace_with,
};
pub use process::Process;
pub use wait::{wait_for, wait_for_interval};

/// Runs `cmd` and returns its standard output; panics with both outputs when it fails.
pub async fn output_of(mut cmd: tokio::process::Command) -> String {
    let out = cmd.output().await.expect("running a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sum of the samples in Prometheus text `metrics` whose series starts with `prefix` (a
/// metric name, or a name with its first labels: `modelship_child_applies_total{kind="Deployment"`).
pub fn sum_samples(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The root of the repository (the workspace). Read at run time (cargo sets
/// `CARGO_MANIFEST_DIR` for the test binaries it runs), so a binary built from
/// another checkout in a shared target directory still uses this checkout.
pub fn repo_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("e2e/ has a parent directory")
        .to_path_buf()
}

/// `e2e/.run/`: logs and files that tests write (git-ignored). Created on first use.
pub fn run_dir() -> PathBuf {
    let dir = repo_root().join("e2e/.run");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// Path of a workspace binary built by cargo (`cargo build --workspace --bins`, which
/// `make test` runs first): `<target dir>/<profile>/<name>`, found next to the running
/// test executable, so it honours `CARGO_TARGET_DIR` and the profile.
///
/// Panics when the binary is missing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running executable");
    // Tests run from <target>/<profile>/deps/<test>-<hash>; binaries (the demo) from
    // <target>/<profile>/<name>.
    let dir = exe.parent().expect("the executable lives in a directory");
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "binary {name} not found at {}: build it with `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

/// A version pinned in `e2e/cluster/versions.env`, e.g. `pinned_version("KUBERNETES_VERSION")`
/// is `"v1.36.5"`. Panics when the name is not there.
pub fn pinned_version(name: &str) -> String {
    let path = repo_root().join("e2e/cluster/versions.env");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.split_once('='))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_else(|| panic!("{name} is not set in {}", path.display()))
}

/// Installs ring as the process's rustls crypto provider, unless one is installed already.
///
/// In the workspace build, `reqwest` has rustls without a default provider (feature
/// unification with the operator's crate), so `reqwest::Client::new()` panics ("No rustls
/// crypto provider is configured") until a provider is installed. [`http_client`] calls this.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A `reqwest::Client` for tests (talking to local processes, Prometheus, ...).
///
/// Use this rather than `reqwest::Client::new()`, which panics in the workspace build (see
/// [`install_crypto_provider`]). Make one per test: a client's pooled connections belong to
/// the tokio runtime of the test that made them.
pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::new()
}

/// The wall-clock time as seconds since the epoch, to the millisecond: what test messages are
/// stamped with, to line them up with the components' logs.
pub fn now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("[{:.3}]", t.as_secs_f64())
}

/// The name of the running test (libtest names each test's thread after it), for file names.
pub(crate) fn test_name() -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("test");
    let name = if name == "main" { "test" } else { name };
    name.replace("::", "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_versions_are_read_from_versions_env() {
        assert!(pinned_version("KUBERNETES_VERSION").starts_with("v1.36."));
        assert!(pinned_version("HELM_VERSION").starts_with("v3."));
    }

    #[test]
    #[should_panic(expected = "NO_SUCH_VERSION is not set")]
    fn a_missing_pin_panics() {
        pinned_version("NO_SUCH_VERSION");
    }

    #[test]
    fn free_ports_can_be_bound() {
        let port = free_port();
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    }

    #[test]
    fn test_name_is_the_thread_name() {
        assert!(
            test_name().contains("test_name_is_the_thread_name"),
            "{}",
            test_name()
        );
    }
}
