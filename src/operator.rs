//! `modelship run`: both controllers behind leader election, and the admin endpoints.
use crate::admin::{self, Readiness};
use crate::caches::Caches;
use crate::context::{Settings, Shared};
use crate::metrics::Metrics;
use crate::scope::Scope;
use crate::{Error, Result, analysis, deployment, pipeline};
use futures::FutureExt;
use kube::Client;
use kube::runtime::events::Reporter;
use kube_lease_manager::LeaseManagerBuilder;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Flags of `modelship run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Watch only this namespace; all namespaces when unset.
    #[arg(long, env = "MODELSHIP_NAMESPACE")]
    pub namespace: Option<String>,

    /// Address of `/metrics`, `/livez` and `/readyz`.
    #[arg(long, env = "MODELSHIP_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,

    /// Prometheus queried by analyses whose ModelDeployment names none.
    #[arg(
        long,
        env = "MODELSHIP_PROMETHEUS_URL",
        default_value = "http://prometheus-operated.monitoring.svc:9090",
        value_parser = parse_prometheus_url
    )]
    pub prometheus_url: String,

    /// Longest a Prometheus query may take, reading the whole answer included, before the
    /// measurement is inconclusive.
    #[arg(long, env = "MODELSHIP_PROMETHEUS_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub prometheus_timeout: Duration,

    /// Largest Prometheus answer read, in bytes; a larger one makes the measurement
    /// inconclusive. Bounds what one unaggregated query costs the operator's memory.
    #[arg(long, env = "MODELSHIP_PROMETHEUS_MAX_RESPONSE_BYTES", default_value_t = analysis::prometheus::DEFAULT_MAX_RESPONSE_BYTES, value_parser = clap::value_parser!(u64).range(1024..))]
    pub prometheus_max_response_bytes: u64,

    /// Comma-separated URL prefixes that a ModelDeployment's spec.analysis.prometheusUrl must
    /// fall under; empty allows any. `--prometheus-url` is always allowed.
    #[arg(long, env = "MODELSHIP_ALLOWED_PROMETHEUS_URLS", value_delimiter = ',', value_parser = parse_allowed_prefix)]
    pub allowed_prometheus_urls: Vec<reqwest::Url>,

    /// Image of the built-in router (`modelship mirror`); normally the operator's own image.
    #[arg(long, env = "MODELSHIP_ROUTER_IMAGE", default_value = concat!("ghcr.io/modelship/modelship:", env!("CARGO_PKG_VERSION")))]
    pub router_image: String,

    /// How often an object that waits for nothing is looked at again.
    #[arg(long, env = "MODELSHIP_RESYNC", default_value = "5m", value_parser = parse_duration)]
    pub resync: Duration,

    /// Reconciliations each controller runs at once. Bounded, so that thousands of objects
    /// created together queue here rather than at the API server.
    #[arg(long, env = "MODELSHIP_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Host names outside a ModelDeployment's namespace that its Istio VirtualService may
    /// name, comma-separated: exact names, or `*.example.com` for every name under a domain.
    /// Empty: only the namespace's own Services (safe in a shared cluster).
    #[arg(
        long,
        env = "MODELSHIP_ALLOWED_EXTERNAL_HOSTS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_external_hosts: Vec<String>,

    /// Gateways outside a ModelDeployment's namespace that its route (Istio or Gateway API)
    /// may attach to, comma-separated `<namespace>/<name>` or `<namespace>/*`. Empty: only
    /// Gateways of its own namespace (and Istio's `mesh`).
    #[arg(
        long,
        env = "MODELSHIP_ALLOWED_GATEWAYS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_gateways: Vec<String>,

    /// A ServiceAccount, by name, of each ModelDeployment's and ModelPipeline's own namespace
    /// that the operator impersonates to write their workloads (Deployments, Services, Jobs,
    /// routes) when the object names none in spec.serviceAccountName: the namespace's RBAC
    /// then decides what may be created. Empty: the operator writes with its own rights,
    /// unless an object names one. The setting for shared clusters.
    #[arg(
        long,
        env = "MODELSHIP_DEFAULT_SERVICE_ACCOUNT",
        default_value = "",
        value_parser = parse_service_account
    )]
    pub default_service_account: String,

    /// The cluster's DNS domain, for telling a Service host of the namespace from others.
    #[arg(
        long,
        env = "MODELSHIP_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// Elect a leader among replicas on a Lease; only the leader acts.
    #[arg(long, env = "MODELSHIP_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Name of the leader Lease.
    #[arg(long, env = "MODELSHIP_LEASE_NAME", default_value = "modelship")]
    pub lease_name: String,

    /// Namespace of the leader Lease; default: the operator's own namespace.
    #[arg(long, env = "MODELSHIP_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a lease lasts without renewal, in seconds.
    #[arg(long, env = "MODELSHIP_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration: u64,

    /// How long before expiry the leader renews, in seconds.
    #[arg(long, env = "MODELSHIP_LEASE_GRACE", default_value_t = 5)]
    pub lease_grace: u64,

    /// This replica's identity in the Lease and in events; default: the pod name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    crate::deployment::validate::parse_duration("duration", s)
}

/// A Prometheus URL the analysis can query: refused at start-up, where the person who set it
/// looks, rather than at the first measurement.
fn parse_prometheus_url(s: &str) -> std::result::Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| {
        format!("not a URL ({e}); for example http://prometheus.monitoring.svc:9090")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("give an http:// or https:// URL with a host, for example http://prometheus.monitoring.svc:9090".into());
    }
    Ok(s.to_string())
}

/// One entry of `--allowed-prometheus-urls`: a URL as `--prometheus-url` takes it.
fn parse_allowed_prefix(s: &str) -> std::result::Result<reqwest::Url, String> {
    let s = parse_prometheus_url(s.trim())?;
    reqwest::Url::parse(&s).map_err(|e| e.to_string())
}

/// A ServiceAccount name (a DNS-1123 subdomain), or empty for none.
fn parse_service_account(s: &str) -> std::result::Result<String, String> {
    let s = s.trim();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.is_empty() || (s.len() <= 253 && s.split('.').all(label_ok)) {
        Ok(s.to_string())
    } else {
        Err("a ServiceAccount name: lower-case letters, digits, '-' and '.', for example modelship-tenant".into())
    }
}

/// The namespace the operator runs in, from its service account.
fn own_namespace(client: &Client) -> String {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| client.default_namespace().to_string())
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "modelship".into());
    format!("{host}-{}", std::process::id())
}

/// Runs the operator until `shutdown` resolves.
pub async fn run(
    args: RunArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| Error::Config(format!("no usable Kubernetes configuration: {e}")))?;
    // Kept: the clients that impersonate tenants' ServiceAccounts are built from it.
    let connect = crate::tenancy::connect_from(config.clone());
    let client = Client::try_from(config)
        .map_err(|e| Error::Config(format!("no usable Kubernetes configuration: {e}")))?;
    let metrics = Metrics::new();
    let readiness = Readiness::default();
    let stop = CancellationToken::new();

    let listener = admin::bind(args.admin_listen).await?;
    let admin_stop = stop.clone();
    let admin = tokio::spawn(admin::serve(
        listener,
        metrics.clone(),
        readiness.clone(),
        async move { admin_stop.cancelled().await },
    ));
    tokio::spawn(crate::memory::release_periodically());
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        signal_stop.cancel();
    });

    let identity = args.identity.clone().unwrap_or_else(default_identity);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), %identity, namespace = ?args.namespace, "starting");
    let result = if args.leader_elect {
        lead(
            &args,
            client,
            connect,
            &identity,
            metrics,
            readiness,
            stop.clone(),
        )
        .await
    } else {
        controllers(
            &args,
            client,
            connect,
            &identity,
            metrics,
            readiness,
            stop.clone(),
        )
        .await;
        Ok(())
    };
    stop.cancel();
    let _ = admin.await;
    result
}

/// Waits for the lease, runs the controllers while holding it, and exits when it is lost:
/// a replica that lost the lease might still act on stale state, so it stops and is restarted.
async fn lead(
    args: &RunArgs,
    client: Client,
    connect: crate::tenancy::Connect,
    identity: &str,
    metrics: Metrics,
    readiness: Readiness,
    stop: CancellationToken,
) -> Result<()> {
    let lease_namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| own_namespace(&client));
    let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&lease_namespace)
        .with_identity(identity)
        .with_duration(args.lease_duration)
        .with_grace(args.lease_grace)
        .with_field_manager(crate::apply::FIELD_MANAGER)
        .build()
        .await
        .map_err(|e| Error::Lease(e.to_string()))?;
    let (mut leader, task) = manager.watch().await;
    tracing::info!(lease = %format!("{lease_namespace}/{}", args.lease_name), "waiting for the leader lease");
    loop {
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => {
                drop(leader);
                let _ = task.await;
                return Ok(());
            }
            changed = leader.changed() => {
                if changed.is_err() {
                    return Err(Error::Lease("the lease watcher stopped".into()));
                }
            }
        }
    }
    tracing::info!("acquired the leader lease; starting the controllers");
    // Not ready until the controllers have listed everything, from the moment we lead.
    expect_parts(&readiness);
    metrics.leader.set(1);

    let lost = CancellationToken::new();
    let run_stop = CancellationToken::new();
    let watch_stop = run_stop.clone();
    let watch_lost = lost.clone();
    let outer = stop.clone();
    let mut watch_leader = leader.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = outer.cancelled() => {}
            _ = async {
                while watch_leader.changed().await.is_ok() {
                    if !*watch_leader.borrow_and_update() {
                        break;
                    }
                }
            } => watch_lost.cancel(),
        }
        watch_stop.cancel();
    });
    controllers(
        args,
        client,
        connect,
        identity,
        metrics.clone(),
        readiness,
        run_stop,
    )
    .await;
    metrics.leader.set(0);
    // Releasing the lease lets a standby take over at once.
    drop(leader);
    let _ = task.await;
    if lost.is_cancelled() {
        return Err(Error::Lease("lost the leader lease".into()));
    }
    Ok(())
}

fn expect_parts(readiness: &Readiness) {
    readiness.expect("modeldeployments");
    readiness.expect("modelpipelines");
}

async fn controllers(
    args: &RunArgs,
    client: Client,
    connect: crate::tenancy::Connect,
    identity: &str,
    metrics: Metrics,
    readiness: Readiness,
    stop: CancellationToken,
) {
    expect_parts(&readiness);
    let scope = Scope {
        namespace: args.namespace.clone(),
    };
    let settings = Settings {
        router_image: args.router_image.clone(),
        prometheus_url: args.prometheus_url.clone(),
        allowed_prometheus_urls: analysis::prometheus::AllowedUrls::new(
            args.allowed_prometheus_urls.clone(),
        ),
        resync: args.resync,
        concurrency: args.concurrency,
        reach: crate::deployment::reach::Reach {
            allowed_hosts: non_empty(&args.allowed_external_hosts),
            allowed_gateways: non_empty(&args.allowed_gateways),
            cluster_domain: args.cluster_domain.clone(),
        },
        default_service_account: Some(args.default_service_account.clone())
            .filter(|s| !s.is_empty()),
    };
    if let Some(account) = &settings.default_service_account {
        tracing::info!(%account, "writing workloads as each namespace's ServiceAccount");
    }
    let reporter = |controller: &str| Reporter {
        controller: format!("modelship-{controller}"),
        instance: Some(identity.to_string()),
    };
    // Each kind is watched once, into one cache both controllers read.
    let mut caches = Caches::new(&scope, &client);
    let deployments = deployment::run(
        &mut caches,
        Shared::new(
            client.clone(),
            reporter("deployment"),
            metrics.clone(),
            settings.clone(),
        )
        .impersonating(connect.clone()),
        analysis::prometheus::Clients::new(args.prometheus_timeout)
            .max_response_bytes(args.prometheus_max_response_bytes)
            .counted_in(metrics.clone()),
        readiness.clone(),
        stop.clone().cancelled_owned(),
    );
    let pipelines = pipeline::run(
        &mut caches,
        client.clone(),
        Shared::new(client, reporter("pipeline"), metrics, settings).impersonating(connect),
        readiness,
        stop.cancelled_owned(),
    );
    // The watches end with the controllers.
    let controllers = futures::future::join(deployments.boxed(), pipelines.boxed());
    futures::pin_mut!(controllers);
    let watches = caches.run().boxed();
    futures::future::select(controllers, watches).await;
}

/// A comma-separated flag's entries without the empty ones (`""`, the default, is none).
fn non_empty(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_prometheus_url;

    #[test]
    fn a_prometheus_url_the_analysis_cannot_use_is_refused_at_start_up() {
        assert!(parse_prometheus_url("http://prometheus.monitoring.svc:9090").is_ok());
        assert!(parse_prometheus_url("https://prom.example.com/prefix").is_ok());
        for bad in [
            "prometheus:9090",
            "prometheus.monitoring.svc",
            "ftp://prometheus:9090",
            "http://",
            "",
        ] {
            let e = parse_prometheus_url(bad).expect_err(bad);
            assert!(
                e.contains("http://prometheus.monitoring.svc:9090"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_prometheus_bounds_have_defaults_and_the_allowed_urls_are_checked() {
        use clap::Parser;
        #[derive(Parser)]
        struct Run {
            #[command(flatten)]
            args: super::RunArgs,
        }
        let defaults = Run::try_parse_from(["run"]).unwrap().args;
        assert_eq!(defaults.prometheus_max_response_bytes, 4 * 1024 * 1024);
        assert!(
            defaults.allowed_prometheus_urls.is_empty(),
            "any URL by default"
        );

        let set = Run::try_parse_from([
            "run",
            "--prometheus-max-response-bytes=65536",
            "--allowed-prometheus-urls=http://prom-a:9090, https://thanos.example.com/tenant-a",
        ])
        .unwrap()
        .args;
        assert_eq!(set.prometheus_max_response_bytes, 65536);
        let urls: Vec<&str> = set
            .allowed_prometheus_urls
            .iter()
            .map(|u| u.as_str())
            .collect();
        assert_eq!(
            urls,
            ["http://prom-a:9090/", "https://thanos.example.com/tenant-a"]
        );
        for bad in [
            "--allowed-prometheus-urls=prom-a:9090",
            "--prometheus-max-response-bytes=10",
        ] {
            assert!(Run::try_parse_from(["run", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_service_account_is_impersonated_by_default_and_a_bad_name_is_refused() {
        use clap::Parser;
        #[derive(Parser)]
        struct Run {
            #[command(flatten)]
            args: super::RunArgs,
        }
        let defaults = Run::try_parse_from(["run"]).unwrap().args;
        assert_eq!(defaults.default_service_account, "", "off by default");
        let set = Run::try_parse_from(["run", "--default-service-account=modelship-tenant"])
            .unwrap()
            .args;
        assert_eq!(set.default_service_account, "modelship-tenant");
        for bad in [
            "Tenant",
            "-tenant",
            "tenant-",
            "a..b",
            "system:serviceaccount:x:y",
        ] {
            let flag = format!("--default-service-account={bad}");
            assert!(
                Run::try_parse_from(["run", flag.as_str()]).is_err(),
                "{bad}"
            );
        }
    }

    /// Both controllers over one set of caches: each kind is listed once, not once per
    /// controller that reads it.
    #[tokio::test]
    async fn each_kind_is_listed_once_for_both_controllers() {
        use crate::admin::Readiness;
        use crate::caches::Caches;
        use crate::scope::Scope;
        use crate::{deployment, mock_api, pipeline};
        use futures::FutureExt;
        use std::time::Duration;

        fn empty_list(method: &str, _path: &str) -> mock_api::Answer {
            (method == "GET").then(|| {
                let list = serde_json::json!({
                    "apiVersion": "v1", "kind": "List",
                    "metadata": {"resourceVersion": "1"}, "items": [],
                });
                (200, list)
            })
        }
        let (client, sent) = mock_api::client(serde_json::Value::Null, empty_list);
        let mut caches = Caches::new(&Scope::default(), &client);
        let readiness = Readiness::default();
        let deployments = deployment::run(
            &mut caches,
            mock_api::shared(client.clone(), "deployment"),
            crate::analysis::prometheus::Clients::new(Duration::from_secs(1)),
            readiness.clone(),
            futures::future::pending(),
        );
        let pipelines = pipeline::run(
            &mut caches,
            client.clone(),
            mock_api::shared(client, "pipeline"),
            readiness,
            futures::future::pending(),
        );
        let running = tokio::spawn(async move {
            let controllers = futures::future::join(deployments.boxed(), pipelines.boxed());
            futures::future::select(controllers, caches.run().boxed()).await;
        });
        let lists = || -> Vec<String> {
            sent.lock()
                .unwrap()
                .iter()
                .filter(|s| s.method == "GET" && !s.uri.contains("watch=true"))
                .map(|s| s.uri.split('?').next().unwrap_or_default().to_string())
                .collect()
        };
        let kinds = [
            "/apis/modelship.io/v1alpha1/modeldeployments",
            "/apis/modelship.io/v1alpha1/modelpipelines",
            "/apis/apps/v1/deployments",
            "/api/v1/services",
            "/apis/batch/v1/jobs",
            "/api/v1/pods",
            "/api/v1/configmaps",
        ];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while lists().len() < kinds.len() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "lists sent: {:?}",
                lists()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut listed = lists();
        listed.sort();
        let mut expected: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
        expected.sort();
        // A watch that failed re-lists only after its backoff (at least 800 ms): the first
        // lists are one per kind.
        assert_eq!(listed[..kinds.len()], expected[..]);
        running.abort();
    }
}
