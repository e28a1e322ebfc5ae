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

/// On the provider's object whose mirroring settings the installed CRD refused: why, and
/// the hash of the refused object, so the refusal is remembered until the spec changes.
pub const REFUSED: &str = "modelship.io/mirroring-refused";
pub const REFUSED_HASH: &str = "modelship.io/mirroring-refused-hash";
/// When the refusal was last confirmed: the setting is tried again (the CRD may have been
/// upgraded since) at most once per [`RECHECK`].
pub const REFUSED_AT: &str = "modelship.io/mirroring-refused-at";

/// How soon a provider that is not installed, or refused a setting, is looked at again.
pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// The provider's object as the cluster holds it, read before anything is written.
pub enum Route {
    /// The built-in router carries traffic: no provider object.
    Builtin,
    /// The provider's kind is not served by this cluster.
    NotInstalled(GroupVersionKind),
    /// The kind is served (as `resource`); `live` is the object, if it exists.
    Served {
        gvk: GroupVersionKind,
        resource: Box<ApiResource>,
        live: Option<Value>,
    },
}

/// Reads the provider's object (discovery, then one GET); writes nothing.
pub async fn observe(client: &Client, md: &ModelDeployment) -> Result<Route, crate::Error> {
    let Some(gvk) = provider_kind(md.spec.traffic.provider) else {
        return Ok(Route::Builtin);
    };
    let (ar, _caps): (ApiResource, _) = match pinned_kind(client, &gvk).await {
        Ok(found) => found,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Route::NotInstalled(gvk)),
        Err(kube::Error::Discovery(_)) => return Ok(Route::NotInstalled(gvk)),
        Err(e) => return Err(e.into()),
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &md.namespace().unwrap_or_default(), &ar);
    let live = match api.get_opt(&md.name_any()).await? {
        Some(obj) => Some(serde_json::to_value(&obj)?),
        None => None,
    };
    Ok(Route::Served {
        gvk,
        resource: Box::new(ar),
        live,
    })
}

/// The refusal to touch the provider's object of `md`'s name when it exists and `md` did not
/// create it (no owner reference with `md`'s uid): someone else's route, left untouched. Pure.
pub fn taken(md: &ModelDeployment, route: &Route) -> Option<crate::Error> {
    let Route::Served {
        gvk,
        live: Some(live),
        ..
    } = route
    else {
        return None;
    };
    let ours = live["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| md.meta().uid.as_deref().is_some_and(|uid| r["uid"] == uid))
        });
    (!ours).then(|| {
        crate::reconciler::not_owned::<ModelDeployment>(
            &gvk.kind,
            &md.namespace().unwrap_or_default(),
            &md.name_any(),
        )
    })
}

/// The provider's object for `md`, stamped with its hash.
fn desired(md: &ModelDeployment, shadowing: bool) -> Value {
    with_hash(match md.spec.traffic.provider {
        TrafficProvider::GatewayApi => http_route(md, shadowing),
        _ => virtual_service(md, shadowing),
    })
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// The refusal recorded on `live` for exactly the object `desired`, if any.
fn refusal<'a>(desired: &Value, live: Option<&'a Value>) -> Option<&'a str> {
    let live = live?;
    let hash = annotation(desired, crate::apply::SPEC_HASH)?;
    (annotation(live, REFUSED_HASH) == Some(hash))
        .then(|| annotation(live, REFUSED))
        .flatten()
}

/// What the `TrafficConfigured` condition says, from what [`observe`] read: the object as it
/// will be once [`converge`] applied it, or the refusal the server gave for this very object.
/// Pure.
pub fn state(md: &ModelDeployment, route: &Route, shadowing: bool) -> Result<String, TrafficError> {
    match route {
        Route::Builtin => Ok("the built-in router carries traffic and compares the shadow's answers with production's".into()),
        Route::NotInstalled(gvk) => Err(not_installed(gvk)),
        Route::Served { gvk, live, .. } => served_state(md, gvk, live.as_ref(), shadowing),
    }
}

fn served_state(
    md: &ModelDeployment,
    gvk: &GroupVersionKind,
    live: Option<&Value>,
    shadowing: bool,
) -> Result<String, TrafficError> {
    if let Some(detail) = refusal(&desired(md, shadowing), live) {
        return Err((
            "SettingNotSupported".into(),
            format!(
                "the installed {} CRD cannot hold the mirroring settings (mirrorPercent {} needs a newer CRD: {detail}); mirroring is off until it is upgraded or the setting changed",
                gvk.kind, md.spec.shadow.mirror_percent
            ),
        ));
    }
    Ok(format!(
        "{} {}/{} routes to stable{}; the shadow's answers are not compared with this provider",
        gvk.kind,
        md.namespace().unwrap_or_default(),
        md.name_any(),
        if shadowing {
            format!(
                " and mirrors {}% to the shadow",
                md.spec.shadow.mirror_percent
            )
        } else {
            String::new()
        }
    ))
}

/// Whether the object `desired` should be applied to `live` now: it differs (the hash, so a
/// field the operator stopped setting is removed too, or someone edited what it sets), and
/// if the server refused exactly this object, the refusal is at least [`RECHECK`] old. Pure.
fn apply_due(desired: &Value, live: Option<&Value>, now: jiff::Timestamp) -> bool {
    if !needs_apply(desired, live) {
        return false;
    }
    if refusal(desired, live).is_none() {
        return true;
    }
    let refused_at = live
        .and_then(|l| annotation(l, REFUSED_AT))
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    refused_at.is_none_or(|at| now.duration_since(at).unsigned_abs().ge(&RECHECK))
}

/// Applies the provider's object when [`apply_due`], after the status was written like every
/// other child, with `writer`'s identity. When the installed CRD cannot hold the mirroring
/// settings, routes to stable alone and records the refusal on the object. Returns whether
/// [`state`] now reads differently from `route`.
pub async fn converge(
    md: &ModelDeployment,
    writer: &crate::tenancy::Writer,
    route: &Route,
    shadowing: bool,
    now: jiff::Timestamp,
) -> Result<bool, crate::Error> {
    let Route::Served { resource, live, .. } = route else {
        return Ok(false);
    };
    let api: Api<DynamicObject> = Api::namespaced_with(
        writer.client().clone(),
        &md.namespace().unwrap_or_default(),
        resource.as_ref(),
    );
    let desired = desired(md, shadowing);
    if !apply_due(&desired, live.as_ref(), now) {
        return Ok(false);
    }
    let name = md.name_any();
    let params = apply_params();
    let refused = match api.patch(&name, &params, &Patch::Apply(&desired)).await {
        // Server-side apply refuses a field the installed CRD does not declare.
        Err(kube::Error::Api(s)) if s.message.contains("field not declared in schema") => {
            Some(s.message)
        }
        Err(e) => return Err(writer.error(e)),
        // A schema that prunes instead drops the field silently.
        Ok(applied) => (!is_subset(&desired["spec"], &serde_json::to_value(applied)?["spec"]))
            .then(|| "the server dropped part of the spec".to_string()),
    };
    let was_refused = refusal(&desired, live.as_ref()).is_some();
    let Some(detail) = refused else {
        // The refusal recorded for this object is gone with the apply (the CRD was upgraded).
        return Ok(was_refused);
    };
    let mut fallback = self::desired(md, false);
    if let Some(hash) = annotation(&desired, crate::apply::SPEC_HASH) {
        fallback["metadata"]["annotations"][REFUSED] = json!(detail);
        fallback["metadata"]["annotations"][REFUSED_HASH] = json!(hash);
        fallback["metadata"]["annotations"][REFUSED_AT] = json!(now.to_string());
    }
    api.patch(&name, &params, &Patch::Apply(&fallback))
        .await
        .map_err(|e| writer.error(e))?;
    Ok(!was_refused)
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

/// Removes the object of a provider no longer chosen: read with the operator's `client`,
/// deleted with `writer`'s identity.
pub async fn remove_others(
    client: &Client,
    writer: &crate::tenancy::Writer,
    md: &ModelDeployment,
) -> Result<(), crate::Error> {
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
            let ns = md.namespace().unwrap_or_default();
            let api: Api<DynamicObject> = Api::namespaced_with(writer.client().clone(), &ns, &ar);
            api.delete(&md.name_any(), &Default::default())
                .await
                .map_err(|e| writer.error(e))?;
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
    fn a_refusal_is_reported_for_the_refused_object_only() {
        let mut md = sample();
        md.spec.traffic.provider = TrafficProvider::GatewayApi;
        md.spec.shadow.mirror_percent = 12.5;
        let gvk = provider_kind(md.spec.traffic.provider).unwrap();
        // Before anything was applied the condition says what the route will do.
        let fresh = served_state(&md, &gvk, None, true).unwrap();
        assert!(fresh.contains("mirrors 12.5% to the shadow"), "{fresh}");
        // The fallback as converge writes it after a refusal of the mirrored route.
        let refused = desired(&md, true);
        let mut live = desired(&md, false);
        live["metadata"]["annotations"][REFUSED] = json!("field not declared in schema");
        live["metadata"]["annotations"][REFUSED_HASH] =
            refused["metadata"]["annotations"][crate::apply::SPEC_HASH].clone();
        let (reason, message) = served_state(&md, &gvk, Some(&live), true).unwrap_err();
        assert_eq!(reason, "SettingNotSupported");
        assert!(
            message.contains("field not declared in schema"),
            "{message}"
        );
        assert!(refusal(&refused, Some(&live)).is_some());
        // Another setting is another object: tried again, not reported as refused.
        md.spec.shadow.mirror_percent = 25.0;
        assert!(served_state(&md, &gvk, Some(&live), true).is_ok());
        assert!(refusal(&desired(&md, true), Some(&live)).is_none());
        // Without a shadow the fallback is the desired route itself.
        assert!(!needs_apply(&desired(&md, false), Some(&live)));
    }

    #[test]
    fn a_refused_setting_is_tried_again_once_per_recheck() {
        let mut md = sample();
        md.spec.traffic.provider = TrafficProvider::GatewayApi;
        md.spec.shadow.mirror_percent = 12.5;
        let refused = desired(&md, true);
        let at: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let mut live = desired(&md, false);
        live["metadata"]["annotations"][REFUSED] = json!("field not declared in schema");
        live["metadata"]["annotations"][REFUSED_HASH] =
            refused["metadata"]["annotations"][crate::apply::SPEC_HASH].clone();
        live["metadata"]["annotations"][REFUSED_AT] = json!(at.to_string());
        let later = |secs: i64| at + jiff::SignedDuration::from_secs(secs);
        assert!(!apply_due(&refused, Some(&live), later(3)));
        assert!(
            apply_due(&refused, Some(&live), later(10)),
            "the CRD may have been upgraded"
        );
        // A new object, or none yet, is applied at once.
        assert!(apply_due(&refused, None, later(0)));
        md.spec.shadow.mirror_percent = 25.0;
        assert!(apply_due(&desired(&md, true), Some(&live), later(1)));
        // The fallback itself is not applied again.
        assert!(!apply_due(&desired(&md, false), Some(&live), later(60)));
    }

    #[test]
    fn a_missing_provider_is_named() {
        let md = sample();
        let gvk = provider_kind(TrafficProvider::Istio).unwrap();
        let (reason, message) = state(&md, &Route::NotInstalled(gvk), false).unwrap_err();
        assert_eq!(reason, "ProviderNotInstalled");
        assert!(
            message.contains("VirtualService.networking.istio.io/v1"),
            "{message}"
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
