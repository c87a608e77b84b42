//! The endpoints and endpointslice controllers: for every Service with a selector, the pods
//! it selects (those with an IP, not finished) become its Endpoints (ready addresses and
//! notReadyAddresses) and its EndpointSlices (`kubernetes.io/service-name`, conditions ready,
//! serving, terminating), with each service port's targetPort resolved against the pod's
//! container ports. Endpoints of services that are gone are removed; slices are owned by
//! their service, so the garbage collector removes them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;

use crate::Informers;
use crate::util::{self, Error, drive, is_status};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Upstream's endpoints controller marks what it manages so the mirroring controller skips it.
pub const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// How often every service is looked at again (pods whose labels moved away, say).
const RESYNC: Duration = Duration::from_secs(30);

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
}

/// The services a pod's change may concern: those of its namespace that select it.
fn services_of(informers: &Informers, pod: &Pod) -> Vec<ObjectRef<Service>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    informers
        .services
        .store()
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|s| {
            let selector = s.spec.as_ref().and_then(|sp| sp.selector.as_ref());
            selector.is_some_and(|sel| {
                !sel.is_empty() && sel.iter().all(|(k, v)| pod.labels().get(k) == Some(v))
            })
        })
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

pub async fn run(
    endpoints_client: kube::Client,
    slices_client: kube::Client,
    informers: Arc<Informers>,
) -> anyhow::Result<()> {
    let make = |client: kube::Client| {
        let i = informers.clone();
        let controller =
            Controller::for_stream(informers.services.changes(), informers.services.store())
                .watches_stream(informers.pods.changes(), move |pod: Pod| {
                    services_of(&i, &pod)
                });
        (
            controller,
            Arc::new(Ctx {
                client,
                informers: informers.clone(),
            }),
        )
    };
    let (endpoints, ectx) = make(endpoints_client.clone());
    let (slices, sctx) = make(slices_client);
    // A managed slice changed or deleted by someone else brings its service back at once, as
    // upstream's controller reacts to slice events (not only at the next resync).
    let slices = slices.watches_stream(
        informers.endpointslices.changes(),
        |slice: EndpointSlice| {
            let managed =
                slice.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY);
            let service = slice.labels().get(SERVICE_NAME_LABEL).cloned();
            match (managed, service, slice.namespace()) {
                (true, Some(name), Some(ns)) => Some(ObjectRef::<Service>::new(&name).within(&ns)),
                _ => None,
            }
        },
    );
    let orphans = remove_orphans(endpoints_client, informers.clone());
    tokio::select! {
        r = drive("endpoints", endpoints, reconcile_endpoints, ectx) => r,
        r = drive("endpointslice", slices, reconcile_slices, sctx) => r,
        r = orphans => r,
    }
}

/// A service port resolved for one pod: (name, port, protocol).
type Ports = Vec<(Option<String>, i32, String)>;

/// One selected pod with what both controllers publish of it.
struct Member {
    pod: Arc<Pod>,
    ip: String,
    ready: bool,
    terminating: bool,
    ports: Ports,
}

fn resolve_port(pod: &Pod, target: Option<&IntOrString>, port: i32) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// The pods a service selects, or None for a service without a selector (its endpoints are
/// someone else's).
fn members(svc: &Service, informers: &Informers) -> Option<Vec<Member>> {
    let spec = svc.spec.as_ref()?;
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    let ns = svc.namespace().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let mut out = vec![];
    for pod in informers.pods.store().state() {
        if pod.metadata.namespace.as_deref() != Some(ns.as_str())
            || !selector.iter().all(|(k, v)| pod.labels().get(k) == Some(v))
        {
            continue;
        }
        let status = pod.status.as_ref();
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let Some(ip) = status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let ready = publish || (util::ready_since(&pod).is_some() && !terminating);
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let port = resolve_port(&pod, p.target_port.as_ref(), p.port)?;
                Some((
                    p.name.clone(),
                    port,
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        out.push(Member {
            pod,
            ip,
            ready,
            terminating,
            ports,
        });
    }
    out.sort_by(|a, b| a.ip.cmp(&b.ip));
    Some(out)
}

fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .node_name
        .clone()
        .filter(|n| !n.is_empty())
}

/// A pod's hostname in the service's DNS (set when its subdomain is the service).
fn hostname(pod: &Pod, svc: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    (spec.subdomain.as_deref() == Some(svc))
        .then(|| spec.hostname.clone())
        .flatten()
}

async fn reconcile_endpoints(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(members) = members(&svc, &ctx.informers) else {
        return Ok(Action::await_change());
    };
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    // Pods by their resolved port set: one subset each.
    let mut subsets: BTreeMap<Ports, EndpointSubset> = BTreeMap::new();
    for m in members.iter().filter(|m| !m.terminating || m.ready) {
        let subset = subsets
            .entry(m.ports.clone())
            .or_insert_with(|| EndpointSubset {
                ports: Some(
                    m.ports
                        .iter()
                        .map(|(n, p, proto)| EndpointPort {
                            name: n.clone(),
                            port: *p,
                            protocol: Some(proto.clone()),
                            app_protocol: None,
                        })
                        .collect(),
                )
                .filter(|p: &Vec<EndpointPort>| !p.is_empty()),
                ..Default::default()
            });
        let address = EndpointAddress {
            ip: m.ip.clone(),
            hostname: hostname(&m.pod, &name),
            node_name: node_name(&m.pod),
            target_ref: Some(target_ref(&m.pod)),
        };
        let list = if m.ready {
            subset.addresses.get_or_insert_default()
        } else {
            subset.not_ready_addresses.get_or_insert_default()
        };
        list.push(address);
    }
    let subsets: Vec<EndpointSubset> = subsets.into_values().collect();
    let mut labels = svc.labels().clone();
    labels.insert(SKIP_MIRROR.into(), "true".into());
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = ctx
        .informers
        .endpoints
        .store()
        .get(&ObjectRef::new(&name).within(&ns));
    let subsets = (!subsets.is_empty()).then_some(subsets);
    match existing {
        Some(e) if e.subsets == subsets && e.metadata.labels.as_ref() == Some(&labels) => {}
        Some(e) => {
            let mut updated = (*e).clone();
            updated.subsets = subsets;
            updated.metadata.labels = Some(labels);
            match api.replace(&name, &PostParams::default(), &updated).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 409) => {
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        None => {
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    ..Default::default()
                },
                subsets,
            };
            match api.create(&PostParams::default(), &ep).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 409) => {
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Action::requeue(RESYNC))
}

async fn reconcile_slices(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(members) = members(&svc, &ctx.informers) else {
        return Ok(Action::await_change());
    };
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    // One slice per resolved port set.
    let mut wanted: BTreeMap<Ports, Vec<Endpoint>> = BTreeMap::new();
    for m in &members {
        wanted.entry(m.ports.clone()).or_default().push(Endpoint {
            addresses: vec![m.ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(m.ready),
                serving: Some(util::ready_since(&m.pod).is_some() || m.ready),
                terminating: Some(m.terminating),
            }),
            hostname: hostname(&m.pod, &name),
            node_name: node_name(&m.pod),
            target_ref: Some(target_ref(&m.pod)),
            ..Default::default()
        });
    }
    if wanted.is_empty() {
        // A service with no endpoints still has one placeholder slice: no endpoints and,
        // as upstream's, no ports.
        wanted.insert(Ports::default(), vec![]);
    }
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let existing: Vec<Arc<EndpointSlice>> = ctx
        .informers
        .endpointslices
        .store()
        .state()
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|s| s.labels().get(SERVICE_NAME_LABEL) == Some(&name))
        .filter(|s| util::controller_of(&s.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    let mut labels = svc.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let slices = wanted
        .into_iter()
        .map(|(ports, endpoints)| EndpointSlice {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}-")),
                namespace: Some(ns.clone()),
                labels: Some(labels.clone()),
                owner_references: Some(vec![util::controller_ref(&*svc)]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(
                ports
                    .into_iter()
                    .map(|(n, p, proto)| SlicePort {
                        // Always named, "" for an unnamed port, as upstream writes it
                        // (kubectl describe service reads the name unchecked).
                        name: Some(n.unwrap_or_default()),
                        port: Some(p),
                        protocol: Some(proto),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        })
        .collect();
    let store = ctx.informers.endpointslices.store();
    if !write_slices(&api, &store, existing, slices).await? {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    Ok(Action::requeue(RESYNC))
}

/// Makes a service's slices the wanted ones: existing slices (in name order) are reused in
/// turn — replaced where their endpoints, ports, labels or address type differ — wanted ones
/// left over are created, existing ones left over deleted. Then waits (briefly) for `store`
/// to show those writes, so that the next pass does not act on a cache that predates them
/// (upstream's EndpointSliceTracker; without it a pass right after a create would create the
/// slice again). False when a write lost a race (look again shortly).
pub(crate) async fn write_slices(
    api: &Api<EndpointSlice>,
    store: &kube::runtime::reflector::Store<EndpointSlice>,
    mut existing: Vec<Arc<EndpointSlice>>,
    wanted: Vec<EndpointSlice>,
) -> Result<bool, Error> {
    existing.sort_by_key(|s| s.name_any());
    let mut reuse = existing.into_iter();
    let mut written = Written::default();
    for slice in wanted {
        match reuse.next() {
            Some(old) => {
                if old.endpoints == slice.endpoints
                    && old.ports == slice.ports
                    && old.metadata.labels == slice.metadata.labels
                    && old.metadata.annotations == slice.metadata.annotations
                    && old.address_type == slice.address_type
                {
                    continue;
                }
                // The address type cannot change: such a slice is replaced by a new one.
                if old.address_type != slice.address_type {
                    delete_slice(api, &old).await?;
                    written.gone(&old);
                    written.saved(api.create(&PostParams::default(), &slice).await?);
                    continue;
                }
                let mut updated = (*old).clone();
                updated.endpoints = slice.endpoints;
                updated.ports = slice.ports;
                updated.metadata.labels = slice.metadata.labels;
                updated.metadata.annotations = slice.metadata.annotations;
                match api
                    .replace(&old.name_any(), &PostParams::default(), &updated)
                    .await
                {
                    Ok(saved) => written.saved(saved),
                    Err(e) if is_status(&e, 409) || is_status(&e, 404) => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
            }
            None => {
                written.saved(api.create(&PostParams::default(), &slice).await?);
            }
        }
    }
    for extra in reuse {
        delete_slice(api, &extra).await?;
        written.gone(&extra);
    }
    written.settle(store).await;
    Ok(true)
}

/// The slices one pass wrote: (namespace, name, resourceVersion) saved, (namespace, name)
/// deleted.
#[derive(Default)]
struct Written {
    saved: Vec<(String, String, u64)>,
    deleted: Vec<(String, String)>,
}

impl Written {
    fn gone(&mut self, slice: &EndpointSlice) {
        self.deleted
            .push((slice.namespace().unwrap_or_default(), slice.name_any()));
    }

    fn saved(&mut self, slice: EndpointSlice) {
        let rv = slice
            .resource_version()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.saved
            .push((slice.namespace().unwrap_or_default(), slice.name_any(), rv));
    }

    /// Waits up to 2 s for the store to hold every saved slice at its version or later, and
    /// none of the deleted ones (generated names never come back).
    async fn settle(&self, store: &kube::runtime::reflector::Store<EndpointSlice>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let caught_up = || {
            self.saved.iter().all(|(ns, name, rv)| {
                store
                    .get(&ObjectRef::new(name).within(ns))
                    .and_then(|s| s.resource_version()?.parse::<u64>().ok())
                    .is_some_and(|seen| seen >= *rv)
            }) && self
                .deleted
                .iter()
                .all(|(ns, name)| store.get(&ObjectRef::new(name).within(ns)).is_none())
        };
        while !caught_up() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn delete_slice(api: &Api<EndpointSlice>, slice: &EndpointSlice) -> Result<(), Error> {
    match api
        .delete(&slice.name_any(), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Endpoints this controller made whose service is gone.
async fn remove_orphans(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let services = informers.services.store();
        for ep in informers.endpoints.store().state() {
            if ep.labels().get(SKIP_MIRROR).map(String::as_str) != Some("true") {
                continue;
            }
            let ns = ep.namespace().unwrap_or_default();
            if services
                .get(&ObjectRef::new(&ep.name_any()).within(&ns))
                .is_none()
            {
                let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
                match api.delete(&ep.name_any(), &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => tracing::debug!(error = %e, "removing orphaned endpoints"),
                }
            }
        }
    }
}
