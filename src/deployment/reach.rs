//! What a ModelDeployment's route may reach outside its own namespace. Pure.
//!
//! A VirtualService may name any host of the mesh and attach to any Gateway, and an HTTPRoute
//! may name a Gateway of another namespace: from namespace A, a route could take traffic meant
//! for namespace B's Service or publish a model on a shared public gateway. RBAC cannot see
//! inside the route the operator writes for a user, so the operator refuses hosts and gateways
//! outside the ModelDeployment's namespace unless the administrator allowed them by flag.

/// The administrator's exceptions (`--allowed-external-hosts`, `--allowed-gateways`) and the
/// cluster's DNS domain.
#[derive(Clone, Debug, PartialEq)]
pub struct Reach {
    /// Hosts a VirtualService may name outside its namespace: exact names, or `*.domain`
    /// for every name under `domain`.
    pub allowed_hosts: Vec<String>,
    /// Gateways outside the namespace a route may attach to, as `<namespace>/<name>`, or
    /// `<namespace>/*` for every Gateway of a namespace.
    pub allowed_gateways: Vec<String>,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
}

impl Default for Reach {
    fn default() -> Self {
        Reach {
            allowed_hosts: Vec::new(),
            allowed_gateways: Vec::new(),
            cluster_domain: "cluster.local".into(),
        }
    }
}

impl Reach {
    /// Whether a VirtualService in `ns` may name `host`: a Service of `ns` (short name, or
    /// `<service>.<ns>[.svc[.<domain>]]`), or a host the administrator allowed. Anything else,
    /// another namespace's Service, an outside name or a wildcard, is refused.
    pub fn host_allowed(&self, ns: &str, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.allowed_hosts.iter().any(|a| matches_host(a, &host)) {
            return true;
        }
        if host.contains('*') {
            return false;
        }
        let labels: Vec<&str> = host.split('.').collect();
        let domain: Vec<&str> = self.cluster_domain.split('.').collect();
        match labels.as_slice() {
            // Istio reads a short name in the VirtualService's own namespace.
            [_service] => true,
            [_service, n] | [_service, n, "svc"] => *n == ns,
            [_service, n, "svc", rest @ ..] => *n == ns && rest == domain.as_slice(),
            _ => false,
        }
    }

    /// Whether a route in `ns` may attach to the Gateway `gateway_ns`/`name`.
    pub fn gateway_allowed(&self, ns: &str, gateway_ns: &str, name: &str) -> bool {
        gateway_ns == ns
            || self
                .allowed_gateways
                .iter()
                .any(|a| a == &format!("{gateway_ns}/{name}") || a == &format!("{gateway_ns}/*"))
    }

    /// Whether a VirtualService in `ns` may name the Istio gateway `gateway`: `mesh` (the
    /// sidecars), a Gateway of `ns` (`name` or `ns/name`), or one the administrator allowed.
    pub fn istio_gateway_allowed(&self, ns: &str, gateway: &str) -> bool {
        match gateway.split_once('/') {
            None if gateway == "mesh" => true,
            // A name with dots is a host-style reference to any namespace's Gateway.
            None => !gateway.contains('.'),
            Some((gateway_ns, name)) => self.gateway_allowed(ns, gateway_ns, name),
        }
    }
}

/// `*.example.com` matches every name under `example.com`; anything else matches itself.
fn matches_host(allowed: &str, host: &str) -> bool {
    let allowed = allowed.trim_end_matches('.').to_ascii_lowercase();
    match allowed.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => allowed == host,
    }
}

/// The hosts and gateways of `md`'s route that `reach` refuses, as one message naming each
/// and the flag that would allow it; `Ok` when none is.
pub fn check(md: &crate::api::ModelDeployment, reach: &Reach) -> Result<(), String> {
    use crate::api::TrafficProvider;
    use kube::ResourceExt;
    let ns = md.namespace().unwrap_or_default();
    let traffic = &md.spec.traffic;
    let mut refused = Vec::new();
    match traffic.provider {
        TrafficProvider::Istio => {
            if let Some(istio) = &traffic.istio {
                for host in istio.hosts.iter().filter(|h| !reach.host_allowed(&ns, h)) {
                    refused.push(format!(
                        "spec.traffic.istio.hosts: {host:?} is outside namespace {ns} (allow it with --allowed-external-hosts)"
                    ));
                }
                for gateway in istio
                    .gateways
                    .iter()
                    .filter(|g| !reach.istio_gateway_allowed(&ns, g))
                {
                    refused.push(format!(
                        "spec.traffic.istio.gateways: {gateway:?} is outside namespace {ns} (allow it with --allowed-gateways)"
                    ));
                }
            }
        }
        TrafficProvider::GatewayApi => {
            if let Some(gateway_api) = &traffic.gateway_api {
                for parent in &gateway_api.parent_refs {
                    let parent_ns = parent.namespace.as_deref().unwrap_or(&ns);
                    if !reach.gateway_allowed(&ns, parent_ns, &parent.name) {
                        refused.push(format!(
                            "spec.traffic.gatewayAPI.parentRefs: Gateway {parent_ns}/{} is outside namespace {ns} (allow it with --allowed-gateways)",
                            parent.name
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the route would reach beyond this namespace, which the operator's settings do not allow: {}",
            refused.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GatewayApiSpec, GatewayParentRef, IstioSpec, TrafficProvider};
    use crate::deployment::testing::sample;

    #[test]
    fn hosts_of_the_own_namespace_are_allowed_and_others_refused() {
        let r = Reach::default();
        for host in [
            "fraud",
            "fraud.models",
            "fraud.models.svc",
            "fraud.models.svc.cluster.local",
            "FRAUD.models.svc.cluster.local.",
        ] {
            assert!(r.host_allowed("models", host), "{host}");
        }
        for host in [
            "payments.billing",
            "payments.billing.svc.cluster.local",
            "fraud.models.svc.other.domain",
            "api.example.com",
            "*",
            "*.models.svc.cluster.local",
        ] {
            assert!(!r.host_allowed("models", host), "{host}");
        }
    }

    #[test]
    fn the_administrator_allows_names_and_domains() {
        let r = Reach {
            allowed_hosts: vec!["fraud.example.com".into(), "*.models.example.com".into()],
            ..Reach::default()
        };
        assert!(r.host_allowed("models", "fraud.example.com"));
        assert!(r.host_allowed("models", "a.models.example.com"));
        assert!(r.host_allowed("models", "a.b.models.example.com"));
        assert!(
            !r.host_allowed("models", "models.example.com"),
            "the domain itself is not under it"
        );
        assert!(!r.host_allowed("models", "evilmodels.example.com"));
        assert!(!r.host_allowed("models", "other.example.com"));
    }

    #[test]
    fn gateways_of_other_namespaces_need_the_administrator() {
        let r = Reach::default();
        assert!(r.istio_gateway_allowed("models", "mesh"));
        assert!(r.istio_gateway_allowed("models", "edge"));
        assert!(r.istio_gateway_allowed("models", "models/edge"));
        assert!(!r.istio_gateway_allowed("models", "istio-system/public"));
        assert!(!r.istio_gateway_allowed("models", "public.istio-system.svc.cluster.local"));
        assert!(!r.gateway_allowed("models", "infra", "edge"));
        let r = Reach {
            allowed_gateways: vec!["infra/edge".into(), "shared/*".into()],
            ..Reach::default()
        };
        assert!(r.gateway_allowed("models", "infra", "edge"));
        assert!(r.gateway_allowed("models", "shared", "any"));
        assert!(!r.gateway_allowed("models", "infra", "admin"));
        assert!(r.istio_gateway_allowed("models", "infra/edge"));
    }

    #[test]
    fn check_names_each_refused_host_and_gateway_and_the_flag() {
        let mut md = sample();
        md.spec.traffic.provider = TrafficProvider::Istio;
        md.spec.traffic.istio = Some(IstioSpec {
            hosts: vec!["fraud".into(), "payments.billing.svc.cluster.local".into()],
            gateways: vec!["mesh".into(), "istio-system/public".into()],
        });
        let err = check(&md, &Reach::default()).unwrap_err();
        assert!(err.contains("\"payments.billing.svc.cluster.local\" is outside namespace models (allow it with --allowed-external-hosts)"), "{err}");
        assert!(err.contains("\"istio-system/public\" is outside namespace models (allow it with --allowed-gateways)"), "{err}");
        assert!(!err.contains("\"fraud\""), "{err}");

        md.spec.traffic.provider = TrafficProvider::GatewayApi;
        md.spec.traffic.gateway_api = Some(GatewayApiSpec {
            parent_refs: vec![
                GatewayParentRef {
                    name: "own".into(),
                    namespace: None,
                    section_name: None,
                },
                GatewayParentRef {
                    name: "edge".into(),
                    namespace: Some("infra".into()),
                    section_name: None,
                },
            ],
            hostnames: vec![],
        });
        let err = check(&md, &Reach::default()).unwrap_err();
        assert!(
            err.contains("Gateway infra/edge is outside namespace models"),
            "{err}"
        );
        assert!(!err.contains("own"), "{err}");
        let allowed = Reach {
            allowed_gateways: vec!["infra/edge".into()],
            ..Reach::default()
        };
        assert_eq!(check(&md, &allowed), Ok(()));

        md.spec.traffic.provider = TrafficProvider::Builtin;
        assert_eq!(check(&md, &Reach::default()), Ok(()));
    }
}
