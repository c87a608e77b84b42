//! The endpointslice mirroring controller (upstream's endpointslicemirroring): Endpoints that
//! a user keeps by hand for a Service without a selector are mirrored into EndpointSlices,
//! so that consumers of slices (the proxy among them) see them. One slice per subset and
//! address family, the addresses ready and the notReadyAddresses not, the Endpoints' labels
//! and annotations carried over, owned by the Endpoints (the garbage collector removes the
//! slices with it). Endpoints labelled `endpointslice.kubernetes.io/skip-mirror: "true"` (the
//! endpoints controller's own) and those of services with a selector are not mirrored, and
//! slices mirrored earlier for them are removed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;

use crate::Informers;
use crate::endpoints::{MANAGED_BY_LABEL, SERVICE_NAME_LABEL, SKIP_MIRROR, write_slices};
use crate::util::{self, Error, drive};

pub const MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";
/// Upstream mirrors at most this many addresses of a subset
/// (--mirroring-max-endpoints-per-subset).
const MAX_PER_SUBSET: usize = 1000;
/// What is not carried over from the Endpoints (upstream's mirroring skips these).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let controller =
        Controller::for_stream(informers.endpoints.changes(), informers.endpoints.store())
            .owns_stream(informers.mirrored_slices.changes())
            // A service's selector decides whether its Endpoints are mirrored.
            .watches_stream(informers.services.changes(), |svc: Service| {
                Some(
                    ObjectRef::<Endpoints>::new(&svc.name_any())
                        .within(&svc.namespace().unwrap_or_default()),
                )
            });
    drive(
        "endpointslicemirroring",
        controller,
        reconcile,
        Arc::new(Ctx { client, informers }),
    )
    .await
}

/// Whether these Endpoints are a user's for a selector-less service.
fn mirrored(ep: &Endpoints, svc: Option<&Service>) -> bool {
    let selectorless = svc.is_some_and(|s| {
        s.spec
            .as_ref()
            .and_then(|sp| sp.selector.as_ref())
            .is_none_or(|sel| sel.is_empty())
    });
    selectorless
        && ep.metadata.deletion_timestamp.is_none()
        && ep.labels().get(SKIP_MIRROR).map(String::as_str) != Some("true")
}

async fn reconcile(ep: Arc<Endpoints>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = ep.namespace().unwrap_or_default();
    let name = ep.name_any();
    let svc = ctx
        .informers
        .services
        .store()
        .get(&ObjectRef::new(&name).within(&ns));
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let existing: Vec<Arc<EndpointSlice>> = ctx
        .informers
        .mirrored_slices
        .store()
        .state()
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|s| s.labels().get(SERVICE_NAME_LABEL) == Some(&name))
        .collect();
    let wanted = if mirrored(&ep, svc.as_deref()) {
        slices_of(&ep)
    } else {
        Vec::new()
    };
    let store = ctx.informers.mirrored_slices.store();
    if !write_slices(&api, &store, existing, wanted).await? {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    Ok(Action::await_change())
}

/// The slices mirroring the Endpoints: per subset, one per address family present (subsets
/// with the same ports share).
fn slices_of(ep: &Endpoints) -> Vec<EndpointSlice> {
    let name = ep.name_any();
    let mut labels: BTreeMap<String, String> = ep.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let annotations: BTreeMap<String, String> = ep
        .annotations()
        .iter()
        .filter(|(k, _)| k.as_str() != LAST_APPLIED && k.as_str() != TRIGGER_TIME)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // (ports, address type) -> endpoints, in the subsets' order.
    let mut groups: Vec<(Group, Vec<Endpoint>)> = Vec::new();
    for subset in ep.subsets.iter().flatten() {
        let mut ports: Vec<SlicePort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| SlicePort {
                // Always named, "" for an unnamed port, as upstream writes it.
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        ports.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
        let addresses = subset
            .addresses
            .iter()
            .flatten()
            .map(|a| (a, true))
            .chain(
                subset
                    .not_ready_addresses
                    .iter()
                    .flatten()
                    .map(|a| (a, false)),
            )
            .take(MAX_PER_SUBSET);
        for (address, ready) in addresses {
            let Some(family) = family(&address.ip) else {
                continue;
            };
            let key = (ports.clone(), family);
            let endpoint = endpoint(address, ready);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, list)) => {
                    if !list.iter().any(|e| e.addresses == endpoint.addresses) {
                        list.push(endpoint);
                    }
                }
                None => groups.push((key, vec![endpoint])),
            }
        }
    }
    groups
        .into_iter()
        .map(|((ports, family), endpoints)| EndpointSlice {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}-")),
                namespace: ep.metadata.namespace.clone(),
                labels: Some(labels.clone()),
                annotations: (!annotations.is_empty()).then(|| annotations.clone()),
                owner_references: Some(vec![util::controller_ref(ep)]),
                ..Default::default()
            },
            address_type: family.into(),
            endpoints,
            ports: Some(ports),
        })
        .collect()
}

/// What one mirrored slice holds in common: its ports and address type.
type Group = (Vec<SlicePort>, &'static str);

fn family(ip: &str) -> Option<&'static str> {
    match ip.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(_) => Some("IPv4"),
        std::net::IpAddr::V6(_) => Some("IPv6"),
    }
}

fn endpoint(address: &EndpointAddress, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![address.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..Default::default()
        }),
        hostname: address.hostname.clone().filter(|h| !h.is_empty()),
        node_name: address.node_name.clone(),
        target_ref: address.target_ref.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subsets_become_slices_per_ports_and_family() {
        let ep: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "ext", "namespace": "ns", "uid": "u1",
                "labels": {"team": "a"},
                "annotations": {LAST_APPLIED: "{}", "note": "kept"}},
            "subsets": [
                {"addresses": [{"ip": "10.1.2.3", "hostname": "one"}, {"ip": "fd00::1"}],
                 "notReadyAddresses": [{"ip": "10.1.2.4"}, {"ip": "not-an-ip"}],
                 "ports": [{"name": "http", "port": 80}]},
                {"addresses": [{"ip": "10.1.2.5"}], "ports": [{"name": "http", "port": 80}]},
            ],
        }))
        .unwrap();
        let slices = slices_of(&ep);
        assert_eq!(slices.len(), 2);
        let v4 = &slices[0];
        assert_eq!(v4.address_type, "IPv4");
        let ips: Vec<(&str, Option<bool>)> = v4
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses[0].as_str(),
                    e.conditions.as_ref().unwrap().ready,
                )
            })
            .collect();
        assert_eq!(
            ips,
            [
                ("10.1.2.3", Some(true)),
                ("10.1.2.4", Some(false)),
                ("10.1.2.5", Some(true))
            ]
        );
        assert_eq!(v4.endpoints[0].hostname.as_deref(), Some("one"));
        let labels = v4.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "ext");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels["team"], "a");
        let annotations = v4.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["note"]);
        assert_eq!(
            v4.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Endpoints"
        );
        assert_eq!(slices[1].address_type, "IPv6");
        assert_eq!(slices[1].endpoints[0].addresses, ["fd00::1"]);
    }

    #[test]
    fn only_a_selectorless_services_own_endpoints_are_mirrored() {
        let ep: Endpoints = serde_json::from_value(json!({"metadata": {"name": "ext"}})).unwrap();
        let selectorless: Service =
            serde_json::from_value(json!({"spec": {"ports": [{"port": 80}]}})).unwrap();
        let selecting: Service =
            serde_json::from_value(json!({"spec": {"selector": {"app": "x"}}})).unwrap();
        assert!(mirrored(&ep, Some(&selectorless)));
        assert!(!mirrored(&ep, Some(&selecting)));
        assert!(!mirrored(&ep, None));
        let skipped: Endpoints = serde_json::from_value(
            json!({"metadata": {"name": "ext", "labels": {SKIP_MIRROR: "true"}}}),
        )
        .unwrap();
        assert!(!mirrored(&skipped, Some(&selectorless)));
    }
}
