//! Mirroring through a Gateway API HTTPRoute or an Istio VirtualService. Their types are not
//! compiled in (the `gateway-api` crate is built on another kube version, Istio has no
//! maintained crate); they are applied as dynamic objects. Only the built-in router compares
//! the shadow's answers; these providers mirror and discard them.
use super::desired::{LABEL_DEPLOYMENT, LABEL_MANAGED_BY, MANAGED_BY, Track, track_name};
use crate::api::{ModelDeployment, TrafficProvider};
use crate::apply::{apply_params, is_subset, needs_apply, with_hash};
use kube::api::{Api, DynamicObject, Patch};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::pinned_kind;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

/// The kind each provider manages.
pub fn provider_kind(provider: TrafficProvider) -> Option<GroupVersionKind> {
    match provider {
        TrafficProvider::Builtin => None,
        TrafficProvider::GatewayApi => Some(GroupVersionKind::gvk(
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
        )),
        TrafficProvider::Istio => Some(GroupVersionKind::gvk(
            "networking.istio.io",
            "v1",
            "VirtualService",
        )),
    }
}

fn metadata(md: &ModelDeployment) -> Value {
    json!({
        "name": md.name_any(),
        "namespace": md.namespace(),
        "labels": {LABEL_DEPLOYMENT: md.name_any(), LABEL_MANAGED_BY: MANAGED_BY},
        "ownerReferences": [md.controller_owner_ref(&()).unwrap_or_default()],
    })
}

/// Splits a percentage into a Gateway API fraction when it is not whole.
fn mirror_share(percent: f64) -> Value {
    if percent.fract() == 0.0 {
        json!({"percent": percent as i64})
    } else {
        json!({"fraction": {"numerator": (percent * 1000.0).round() as i64, "denominator": 100_000}})
    }
}

/// The HTTPRoute: all requests to stable, a share mirrored to the shadow while one runs.
pub fn http_route(md: &ModelDeployment, shadowing: bool) -> Value {
    let spec = &md.spec;
    let gw = spec.traffic.gateway_api.clone();
    let parents: Vec<Value> = gw
        .as_ref()
        .map(|g| {
            g.parent_refs
                .iter()
                .map(|p| {
                    let mut v = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": p.name});
                    if let Some(ns) = &p.namespace {
                        v["namespace"] = json!(ns);
                    }
                    if let Some(s) = &p.section_name {
                        v["sectionName"] = json!(s);
                    }
                    v
                })
                .collect()
        })
        .unwrap_or_default();
    let mut rule = json!({
        "backendRefs": [{"name": track_name(md, Track::Stable), "port": spec.service_port}],
    });
    if shadowing {
        let mut mirror = json!({"backendRef": {"name": track_name(md, Track::Shadow), "port": spec.service_port}});
        if spec.shadow.mirror_percent < 100.0
            && let (Some(m), Value::Object(share)) = (
                mirror.as_object_mut(),
                mirror_share(spec.shadow.mirror_percent),
            )
        {
            m.extend(share);
        }
        rule["filters"] = json!([{"type": "RequestMirror", "requestMirror": mirror}]);
    }
    let mut route_spec = json!({"parentRefs": parents, "rules": [rule]});
    if let Some(g) = gw
        && !g.hostnames.is_empty()
    {
        route_spec["hostnames"] = json!(g.hostnames);
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata(md),
        "spec": route_spec,
    })
}

fn host(md: &ModelDeployment, name: &str) -> String {
    format!(
        "{name}.{}.svc.cluster.local",
        md.namespace().unwrap_or_default()
    )
}

/// The VirtualService: all requests to stable, a share mirrored to the shadow while one runs.
pub fn virtual_service(md: &ModelDeployment, shadowing: bool) -> Value {
    let spec = &md.spec;
    let istio = spec.traffic.istio.clone().unwrap_or(crate::api::IstioSpec {
        hosts: vec![],
        gateways: vec![],
    });
    let hosts = if istio.hosts.is_empty() {
        vec![host(md, &md.name_any())]
    } else {
        istio.hosts.clone()
    };
    let mut route = json!({
        "route": [{"destination": {"host": host(md, &track_name(md, Track::Stable)), "port": {"number": spec.service_port}}}],
    });
    if shadowing {
        route["mirror"] = json!({"host": host(md, &track_name(md, Track::Shadow)), "port": {"number": spec.service_port}});
        route["mirrorPercentage"] = json!({"value": spec.shadow.mirror_percent});
    }
    let mut vs = json!({"hosts": hosts, "http": [route]});
    if !istio.gateways.is_empty() {
        vs["gateways"] = json!(istio.gateways);
    }
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata(md),
        "spec": vs,
    })
}

/// Why the provider's object could not be set up: a condition reason and a message.
pub type TrafficError = (String, String);

/// Applies the provider's object (unless unchanged) and checks that the server kept every
/// setting. Returns a short description for the `TrafficConfigured` condition.
pub async fn ensure(
    client: &Client,
    md: &ModelDeployment,
    shadowing: bool,
) -> Result<Result<String, TrafficError>, crate::Error> {
    let provider = md.spec.traffic.provider;
    let Some(gvk) = provider_kind(provider) else {
        return Ok(Ok("the built-in router carries traffic and compares the shadow's answers with production's".into()));
    };
    let (ar, _caps): (ApiResource, _) = match pinned_kind(client, &gvk).await {
        Ok(found) => found,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Err(not_installed(&gvk))),
        Err(kube::Error::Discovery(_)) => return Ok(Err(not_installed(&gvk))),
        Err(e) => return Err(e.into()),
    };
    let desired = match provider {
        TrafficProvider::GatewayApi => http_route(md, shadowing),
        _ => virtual_service(md, shadowing),
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &md.namespace().unwrap_or_default(), &ar);
    let name = md.name_any();
    let desired = with_hash(desired);
    let live = match api.get_opt(&name).await? {
        Some(obj) => Some(serde_json::to_value(&obj)?),
        None => None,
    };
    // Unchanged means: the same spec as last applied (the hash, so a field the operator stopped
    // setting is removed too) and nobody edited what it sets.
    let unchanged = !needs_apply(&desired, live.as_ref());
    let params = apply_params();
    let refused = if unchanged {
        None
    } else {
        match api.patch(&name, &params, &Patch::Apply(&desired)).await {
            // Server-side apply refuses a field the installed CRD does not declare.
            Err(kube::Error::Api(s)) if s.message.contains("field not declared in schema") => {
                Some(s.message)
            }
            Err(e) => return Err(e.into()),
            // A schema that prunes instead drops the field silently.
            Ok(applied) => (!is_subset(&desired["spec"], &serde_json::to_value(applied)?["spec"]))
                .then(|| "the server dropped part of the spec".to_string()),
        }
    };
    if let Some(detail) = refused {
        let fallback = with_hash(match provider {
            TrafficProvider::GatewayApi => http_route(md, false),
            _ => virtual_service(md, false),
        });
        api.patch(&name, &params, &Patch::Apply(&fallback)).await?;
        return Ok(Err((
            "SettingNotSupported".into(),
            format!(
                "the installed {} CRD cannot hold the mirroring settings (mirrorPercent {} needs a newer CRD: {detail}); mirroring is off until it is upgraded or the setting changed",
                gvk.kind, md.spec.shadow.mirror_percent
            ),
        )));
    }
    Ok(Ok(format!(
        "{} {}/{} routes to stable{}; the shadow's answers are not compared with this provider",
        gvk.kind,
        md.namespace().unwrap_or_default(),
        name,
        if shadowing {
            format!(
                " and mirrors {}% to the shadow",
                md.spec.shadow.mirror_percent
            )
        } else {
            String::new()
        }
    )))
}

fn not_installed(gvk: &GroupVersionKind) -> TrafficError {
    (
        "ProviderNotInstalled".into(),
        format!(
            "{}.{}/{} is not served by this cluster: install its CRDs or choose another spec.traffic.provider",
            gvk.kind, gvk.group, gvk.version
        ),
    )
}

/// Removes the object of a provider no longer chosen.
pub async fn remove_others(client: &Client, md: &ModelDeployment) -> Result<(), crate::Error> {
    for provider in [TrafficProvider::GatewayApi, TrafficProvider::Istio] {
        if provider == md.spec.traffic.provider {
            continue;
        }
        let Some(gvk) = provider_kind(provider) else {
            continue;
        };
        let Ok((ar, _)) = pinned_kind(client, &gvk).await else {
            continue;
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &md.namespace().unwrap_or_default(), &ar);
        if let Some(obj) = api.get_opt(&md.name_any()).await?
            && obj
                .owner_references()
                .iter()
                .any(|o| Some(&o.uid) == md.meta().uid.as_ref())
        {
            api.delete(&md.name_any(), &Default::default()).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GatewayApiSpec, GatewayParentRef, IstioSpec};
    use crate::deployment::testing::sample;

    #[test]
    fn http_route_mirrors_a_share_only_while_shadowing() {
        let mut md = sample();
        md.spec.traffic.provider = TrafficProvider::GatewayApi;
        md.spec.traffic.gateway_api = Some(GatewayApiSpec {
            parent_refs: vec![GatewayParentRef {
                name: "edge".into(),
                namespace: Some("infra".into()),
                section_name: None,
            }],
            hostnames: vec!["fraud.example.com".into()],
        });
        md.spec.shadow.mirror_percent = 25.0;
        let r = http_route(&md, true);
        assert_eq!(r["spec"]["parentRefs"][0]["namespace"], "infra");
        assert_eq!(
            r["spec"]["rules"][0]["backendRefs"][0]["name"],
            "fraud-stable"
        );
        let mirror = &r["spec"]["rules"][0]["filters"][0]["requestMirror"];
        assert_eq!(mirror["backendRef"]["name"], "fraud-shadow");
        assert_eq!(mirror["percent"], 25);
        assert!(
            http_route(&md, false)["spec"]["rules"][0]
                .get("filters")
                .is_none()
        );
        md.spec.shadow.mirror_percent = 12.5;
        let f =
            &http_route(&md, true)["spec"]["rules"][0]["filters"][0]["requestMirror"]["fraction"];
        assert_eq!(
            (f["numerator"].as_i64(), f["denominator"].as_i64()),
            (Some(12500), Some(100000))
        );
    }

    #[test]
    fn a_spec_without_the_mirror_has_another_hash() {
        let mut md = sample();
        md.spec.traffic.provider = TrafficProvider::Istio;
        let with = with_hash(virtual_service(&md, true));
        let without = with_hash(virtual_service(&md, false));
        // What the plain spec still sets is all in the mirrored one: only the hash tells them apart.
        assert!(is_subset(&without["spec"], &with["spec"]));
        assert!(!is_subset(&without, &with));
        assert_eq!(
            with_hash(virtual_service(&md, true)),
            with,
            "the hash is stable"
        );
    }

    #[test]
    fn virtual_service_mirrors_with_a_percentage() {
        let mut md = sample();
        md.spec.traffic.provider = TrafficProvider::Istio;
        md.spec.traffic.istio = Some(IstioSpec {
            hosts: vec![],
            gateways: vec!["mesh".into()],
        });
        md.spec.shadow.mirror_percent = 10.0;
        let vs = virtual_service(&md, true);
        assert_eq!(vs["spec"]["hosts"][0], "fraud.models.svc.cluster.local");
        assert_eq!(
            vs["spec"]["http"][0]["route"][0]["destination"]["host"],
            "fraud-stable.models.svc.cluster.local"
        );
        assert_eq!(
            vs["spec"]["http"][0]["mirror"]["host"],
            "fraud-shadow.models.svc.cluster.local"
        );
        assert_eq!(vs["spec"]["http"][0]["mirrorPercentage"]["value"], 10.0);
        assert_eq!(
            vs["metadata"]["ownerReferences"][0]["kind"],
            "ModelDeployment"
        );
    }
}
