//! [sig-network] and [sig-storage] API tests: the kubernetes Service and its endpoints
//! (test/e2e/network/apiserver.go), Endpoints and EndpointSlices (endpoints.go,
//! endpointslice.go), Ingresses and IngressClasses (ingress.go, ingressclass.go), Services
//! (service.go), and the storage.k8s.io kinds, PersistentVolumes and their claims
//! (test/e2e/storage/csi_inline.go, csi_node.go, csistoragecapacity.go, storageclass.go,
//! persistent_volumes.go, volume_attachment.go).
//!
//! Cluster-scoped objects a test makes are deleted by the test, whatever its outcome.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Endpoints, Node, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimCondition,
    Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{
    Ingress, IngressClass, IngressLoadBalancerIngress, IngressLoadBalancerStatus,
};
use k8s_openapi::api::storage::v1::{
    CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::flowcontrol::{compare_resource_versions, valid_resource_version};
use super::tests;
use crate::framework::from;
use crate::framework::{Events, api_discovered, api_error, eventually};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-network] API Server should provide secure master service" => secure_master_service,
        "[sig-network] API Server should have Endpoints and EndpointSlices pointing to API Server" => apiserver_endpoints,
        "[sig-network] EndpointSlice should create and delete EndpointSlices for a Service with a selector that matches no pods" => endpointslices_for_empty_service,
        "[sig-network] EndpointSlice should support creating EndpointSlice API operations" => endpointslice_api,
        "[sig-network] EndpointSliceMirroring should mirror a custom Endpoints resource through create update and delete" => endpointslice_mirroring,
        "[sig-network] Endpoints should test the lifecycle of an Endpoint" => endpoint_lifecycle,
        "[sig-network] EndpointsController should create and delete Endpoints for a Service with a selector that matches no pods" => endpoints_for_empty_service,
        "[sig-network] Ingress API should support creating Ingress API operations" => ingress_api,
        "[sig-network] IngressClass API should support creating IngressClass API operations" => ingressclass_api,
        "[sig-network] Services should complete a service status lifecycle" => service_status_lifecycle,
        "[sig-network] Services should delete a collection of services" => service_collection,
        "[sig-network] Services should find a service from listing all namespaces" => service_in_all_namespaces,
        "[sig-storage] CSIInlineVolumes should run through the lifecycle of a CSIDriver" => csidriver_lifecycle,
        "[sig-storage] CSINodes CSI Conformance should run through the lifecycle of a csinode" => csinode_lifecycle,
        "[sig-storage] CSIStorageCapacity should support CSIStorageCapacities API operations" => csistoragecapacity_api,
        "[sig-storage] PersistentVolumes CSI Conformance should apply changes to a pv/pvc status" => pv_pvc_status,
        "[sig-storage] PersistentVolumes CSI Conformance should run through the lifecycle of a PV and a PVC" => pv_pvc_lifecycle,
        "[sig-storage] StorageClasses CSI Conformance should run through the lifecycle of a StorageClass" => storageclass_lifecycle,
        "[sig-storage] VolumeAttachment Conformance should apply changes to a volumeattachment status" => volumeattachment_status,
        "[sig-storage] VolumeAttachment Conformance should run through the lifecycle of a VolumeAttachment" => volumeattachment_lifecycle,
    ]
}

/// wait.ForeverTestTimeout: what upstream gives one watch event, or a controller's result.
const FOREVER: Duration = Duration::from_secs(30);
/// service.go's svcReadyTimeout.
const SVC_READY: Duration = Duration::from_secs(60);
/// How long a deletion the garbage collector carries out may take (upstream allows 90s; the
/// suite's ceiling for controller results is a minute).
const GC_WAIT: Duration = Duration::from_secs(60);
/// e2epv.VolumeSelectorKey: the label that keeps a test's PVs its own.
const VOLUME_SELECTOR_KEY: &str = "e2e-pv-pool";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

/// What the generic helpers need of a kind.
trait Obj:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
}

impl<K> Obj for K where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
        + Send
        + Sync
        + 'static
{
}

/// apimachinery's utilrand.String: `n` characters of its alphabet.
fn rand_string(n: usize) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| char::from(ALPHANUMS[rand::random_range(0..ALPHANUMS.len())]))
        .collect()
}

/// uuid.NewUUID's shape: 32 random hex digits, 8-4-4-4-12.
fn uuid() -> String {
    let h = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.reason == "NotFound")
}

fn label_is(o: &impl Resource, key: &str, value: &str) -> bool {
    o.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
        == Some(value)
}

fn annotation_is(o: &impl Resource, key: &str, value: &str) -> bool {
    o.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        == Some(value)
}

fn rv(o: &impl Resource) -> String {
    o.meta().resource_version.clone().unwrap_or_default()
}

/// resourceversion.CompareResourceVersion(before, after) == -1.
fn larger_resource_version(before: &impl Resource, after: &impl Resource) -> anyhow::Result<()> {
    let order = compare_resource_versions(&rv(before), &rv(after))?;
    ensure!(
        order == Ordering::Less,
        "patched object should have a larger resource version: {:?} then {:?}",
        rv(before),
        rv(after)
    );
    Ok(())
}

/// client-go's RetryOnConflict with DefaultRetry (five tries, 10ms apart): GET, change, then
/// PUT the object (or, with `status`, its /status).
async fn update_retrying<K: Obj>(
    api: &Api<K>,
    name: &str,
    status: bool,
    change: impl Fn(&mut K),
) -> Result<K, kube::Error> {
    let mut tries = 0;
    loop {
        let mut obj = api.get(name).await?;
        change(&mut obj);
        let result = if status {
            api.replace_status(name, &PostParams::default(), &obj).await
        } else {
            api.replace(name, &PostParams::default(), &obj).await
        };
        match result {
            Err(kube::Error::Api(e)) if e.code == 409 && tries < 4 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

/// watchtools.Until over a ListWatch of `api` with the label selector: watches from `since`,
/// watching again from the last version seen when the stream ends (client-go's
/// RetryWatcher), until `done` accepts an event (its type, ADDED, MODIFIED or DELETED, and
/// object), for up to `timeout`.
async fn until<K: Obj>(
    api: &Api<K>,
    selector: &str,
    since: &str,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&str, &K) -> bool,
) -> anyhow::Result<K> {
    ensure!(
        !since.is_empty() && since != "0",
        "no resource version to watch for {what} from ({since:?})"
    );
    let wp = WatchParams::default().labels(selector).disable_bookmarks();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = since.to_string();
    let mut events: Events<K> = api.watch(&wp, &last).await?.boxed();
    loop {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .map_err(|_| anyhow!("timed out after {timeout:?} waiting for {what}"))?;
        let Some(event) = next else {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            events = api.watch(&wp, &last).await?.boxed();
            continue;
        };
        let (kind, obj) = match event? {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            WatchEvent::Bookmark(b) => {
                last = b.metadata.resource_version;
                continue;
            }
            WatchEvent::Error(e) => {
                bail!("watching for {what}: {} {} {}", e.code, e.reason, e.message)
            }
        };
        if let Some(v) = obj.meta().resource_version.clone() {
            last = v;
        }
        if done(kind, &obj) {
            return Ok(obj);
        }
    }
}

/// The API-operations tests' wait for the watch: every event must be a MODIFIED one, each
/// within wait.ForeverTestTimeout, until one carries the `patched: "true"` annotation.
async fn await_patched<K: Obj>(events: &mut Events<K>) -> anyhow::Result<()> {
    loop {
        let next = tokio::time::timeout(FOREVER, events.next())
            .await
            .map_err(|_| anyhow!("timed out waiting for watch event"))?;
        let Some(event) = next else {
            bail!("watch channel should not close");
        };
        match event? {
            WatchEvent::Modified(o) if annotation_is(&o, "patched", "true") => return Ok(()),
            WatchEvent::Modified(_) => {}
            other => bail!("expected a MODIFIED event, got {other:?}"),
        }
    }
}

/// The storage lifecycle tests' confirmation: within 30 seconds, listing with the selector
/// ("" for none) finds nothing.
async fn eventually_none<K: Obj>(api: &Api<K>, selector: &str, what: &str) -> anyhow::Result<()> {
    let lp = if selector.is_empty() {
        ListParams::default()
    } else {
        ListParams::default().labels(selector)
    };
    let deadline = tokio::time::Instant::now() + FOREVER;
    loop {
        let found = match api.list(&lp).await {
            Ok(list) => list.items.iter().map(|o| o.name_any()).collect::<Vec<_>>(),
            Err(kube::Error::Api(e)) if e.code >= 500 || e.code == 429 => {
                vec![format!("(listing: {})", e.message)]
            }
            Err(e) => return Err(anyhow!(e).context(format!("failed to list {what}"))),
        };
        if found.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "Timeout while waiting to confirm {what} deletion: expected it to be deleted, found {found:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes the named cluster-scoped objects, passing over those already gone.
async fn delete_all<K: Obj>(api: &Api<K>, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(anyhow!(e).context(format!("deleting {name}"))),
        }
    }
    Ok(())
}

/// The test's result, then its cleanup's: a failed cleanup fails a test that passed.
fn with_cleanup(result: anyhow::Result<()>, cleanup: anyhow::Result<()>) -> anyhow::Result<()> {
    result?;
    cleanup.context("cleaning up the test's cluster-scoped objects")
}

// ---------------------------------------------------------------------------------------
// test/e2e/network/apiserver.go
// ---------------------------------------------------------------------------------------

async fn secure_master_service(ctx: Ctx) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), "default");
    services
        .get("kubernetes")
        .await
        .context("failed to fetch the service object for the service named kubernetes")?;
    Ok(())
}

async fn apiserver_endpoints(ctx: Ctx) -> anyhow::Result<()> {
    let (namespace, name) = ("default", "kubernetes");
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let svc = services.get(name).await.context(
        "error obtaining API server \"kubernetes\" Service resource on \"default\" namespace",
    )?;

    let endpoints_api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), namespace);
    let endpoints = endpoints_api.get(name).await.context(
        "error obtaining API server \"kubernetes\" Endpoint resource on \"default\" namespace",
    )?;
    let subsets = endpoints.subsets.clone().unwrap_or_default();
    ensure!(
        !subsets.is_empty(),
        "Expected at least 1 subset in endpoints, got {}: {subsets:?}",
        subsets.len()
    );
    let mut ep_addresses = BTreeSet::new();
    let mut ep_ports = BTreeSet::new();
    for subset in &subsets {
        for a in subset
            .addresses
            .iter()
            .flatten()
            .chain(subset.not_ready_addresses.iter().flatten())
        {
            ep_addresses.insert(a.ip.clone());
        }
        for p in subset.ports.iter().flatten() {
            ep_ports.insert(p.port);
        }
    }

    let slices_api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), namespace);
    let slices = slices_api
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={name}")))
        .await
        .context(
            "error obtaining API server \"kubernetes\" EndpointSlice resource on \"default\" namespace",
        )?;
    ensure!(
        !slices.items.is_empty(),
        "Expected at least 1 EndpointSlice, got {}: {subsets:?}",
        subsets.len()
    );

    // The Endpoints are single stack, of the cluster's primary family (the framework takes it
    // from the kubernetes Service's ClusterIP); slices of the other family are passed over.
    let ipv6 = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_ipv6());
    let address_type = if ipv6 { "IPv6" } else { "IPv4" };
    let mut slice_addresses = BTreeSet::new();
    let mut slice_ports = BTreeSet::new();
    for slice in slices
        .items
        .iter()
        .filter(|s| s.address_type == address_type)
    {
        for e in &slice.endpoints {
            slice_addresses.extend(e.addresses.iter().cloned());
        }
        for p in slice.ports.iter().flatten() {
            if let Some(port) = p.port {
                slice_ports.insert(port);
            }
        }
    }
    ensure!(
        slice_addresses == ep_addresses,
        "EndpointSlice addresses do not match Endpoints addresses: {slice_addresses:?} and {ep_addresses:?}"
    );
    ensure!(
        slice_ports == ep_ports,
        "EndpointSlice ports do not match Endpoints ports: {slice_ports:?} and {ep_ports:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// test/e2e/network/endpointslice.go and endpoints.go
// ---------------------------------------------------------------------------------------

/// The Service both "empty Service" tests create: a selector nothing matches.
fn empty_selector_service() -> anyhow::Result<Service> {
    from(json!({
        "metadata": {"name": "example-empty-selector"},
        "spec": {
            "selector": {"does-not-match-anything": "endpoints-and-endpoint-slices-should-still-be-created"},
            "ports": [{"name": "example", "port": 80, "protocol": "TCP"}],
        },
    }))
}

async fn endpointslices_for_empty_service(ctx: Ctx) -> anyhow::Result<()> {
    let services: Api<Service> = ctx.namespaced();
    let slices: Api<EndpointSlice> = ctx.namespaced();
    let svc = services
        .create(&PostParams::default(), &empty_selector_service()?)
        .await
        .context("error creating Service")?;
    let (ns, name) = (ctx.namespace.clone(), svc.name_any());
    let by_service = ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={name}"));

    // Expect an EndpointSlice to be created.
    let slice = eventually(FOREVER, "an EndpointSlice for the Service", || async {
        let list = slices.list(&by_service).await?;
        Ok(list.items.into_iter().next())
    })
    .await
    .with_context(|| format!("No EndpointSlice found for Service {ns}/{name}"))?;

    // Ensure it has the expected values.
    match slice.labels().get(MANAGED_BY_LABEL) {
        None => bail!(
            "Expected EndpointSlice to have {MANAGED_BY_LABEL} label, got {:?}",
            slice.labels()
        ),
        Some(v) if v != "endpointslice-controller.k8s.io" => bail!(
            "Expected EndpointSlice to have {MANAGED_BY_LABEL} label with endpointslice-controller.k8s.io value, got {v}"
        ),
        Some(_) => {}
    }
    ensure!(
        slice.endpoints.is_empty(),
        "Expected EndpointSlice to have 0 endpoints, got {}: {:?}",
        slice.endpoints.len(),
        slice.endpoints
    );

    services
        .delete(&name, &DeleteParams::default())
        .await
        .context("error deleting Service")?;

    // Expect the EndpointSlice to go with the Service (the garbage collector's work).
    eventually(
        GC_WAIT,
        "the Service's EndpointSlices to be deleted",
        || async {
            let list = slices.list(&by_service).await?;
            Ok(list.items.is_empty().then_some(()))
        },
    )
    .await
    .with_context(|| {
        format!("EndpointSlice resource not deleted after Service {ns}/{name} was deleted")
    })?;
    Ok(())
}

async fn endpoints_for_empty_service(ctx: Ctx) -> anyhow::Result<()> {
    let services: Api<Service> = ctx.namespaced();
    let endpoints: Api<Endpoints> = ctx.namespaced();
    let svc = services
        .create(&PostParams::default(), &empty_selector_service()?)
        .await
        .context("error creating Service")?;
    let (ns, name) = (ctx.namespace.clone(), svc.name_any());

    // Expect the Endpoints to be created (errors, NotFound among them, are polled over).
    eventually(FOREVER, "the Service's Endpoints", || async {
        Ok(endpoints.get(&name).await.ok().map(|_| ()))
    })
    .await
    .with_context(|| format!("No Endpoints found for Service {ns}/{name}"))?;

    services
        .delete(&name, &DeleteParams::default())
        .await
        .context("error deleting Service")?;

    // Expect the Endpoints to be deleted with the Service.
    eventually(FOREVER, "the Service's Endpoints to be deleted", || async {
        match endpoints.get(&name).await {
            Err(e) if is_not_found(&e) => Ok(Some(())),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(None),
        }
    })
    .await
    .with_context(|| {
        format!("Endpoints resource not deleted after Service {ns}/{name} was deleted")
    })?;
    Ok(())
}

async fn endpointslice_api(ctx: Ctx) -> anyhow::Result<()> {
    let unique = ctx.namespace.clone();
    let api: Api<EndpointSlice> = ctx.namespaced();
    let label = format!("special-label={unique}");
    let by_label = ListParams::default().labels(&label);
    let template: EndpointSlice = from(json!({
        "metadata": {"generateName": "e2e-example-ing", "labels": {"special-label": unique}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["1.2.3.4", "5.6.7.8"]},
            {"addresses": ["2.2.3.4", "6.6.7.8"]},
        ],
    }))?;

    api_discovered(
        &ctx,
        "discovery.k8s.io",
        "v1",
        &["endpointslices"],
        "discovery",
    )
    .await?;

    // creating
    let pp = PostParams::default();
    api.create(&pp, &template).await.context("creating")?;
    api.create(&pp, &template).await.context("creating")?;
    let created = api.create(&pp, &template).await.context("creating")?;
    let name = created.name_any();

    // getting
    let queried = api.get(&name).await.context("getting")?;
    ensure!(
        queried.uid() == created.uid(),
        "the read uid {:?} is not the created {:?}",
        queried.uid(),
        created.uid()
    );
    valid_resource_version(&queried)?;

    // listing
    let list = api.list(&by_label).await.context("listing")?;
    ensure!(
        list.items.len() == 3,
        "filtered list should have 3 items, has {}",
        list.items.len()
    );

    // watching
    let list_rv = list.metadata.resource_version.clone().unwrap_or_default();
    let wp = WatchParams::default().labels(&label).disable_bookmarks();
    let mut events: Events<EndpointSlice> =
        api.watch(&wp, &list_rv).await.context("watching")?.boxed();

    // cluster-wide listing and watching
    let cluster: Api<EndpointSlice> = ctx.all();
    let cluster_list = cluster
        .list(&by_label)
        .await
        .context("cluster-wide listing")?;
    ensure!(
        cluster_list.items.len() == 3,
        "filtered list should have 3 items, has {}",
        cluster_list.items.len()
    );
    let cluster_watch = cluster
        .watch(&wp, &list_rv)
        .await
        .context("cluster-wide watching")?;
    drop(cluster_watch);

    // patching
    let patched = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"patched": "true"}}})),
        )
        .await
        .context("patching")?;
    ensure!(
        annotation_is(&patched, "patched", "true"),
        "patched object should have the applied annotation: {:?}",
        patched.annotations()
    );
    larger_resource_version(&created, &patched)?;

    // updating
    let updated = update_retrying(&api, &name, false, |o: &mut EndpointSlice| {
        o.annotations_mut().insert("updated".into(), "true".into());
    })
    .await
    .context("updating")?;
    ensure!(
        annotation_is(&updated, "updated", "true"),
        "updated object should have the applied annotation: {:?}",
        updated.annotations()
    );

    await_patched(&mut events).await?;
    drop(events);

    // deleting
    api.delete(&name, &DeleteParams::default())
        .await
        .context("deleting")?;
    let gone = api_error(api.get(&name).await)?;
    ensure!(
        gone.code == 404 || gone.reason == "NotFound",
        "expected 404, got {gone:?}"
    );
    let list = api.list(&by_label).await.context("listing")?;
    ensure!(
        list.items.len() == 2,
        "filtered list should have 2 items, has {}",
        list.items.len()
    );
    ensure!(
        !list.items.iter().any(|e| e.name_any() == name),
        "listing after deleting createdEPS"
    );

    // deleting a collection
    api.delete_collection(&DeleteParams::default(), &by_label)
        .await
        .context("deleting a collection")?;
    let list = api.list(&by_label).await.context("listing")?;
    ensure!(
        list.items.is_empty(),
        "filtered list should have 0 items, has {}",
        list.items.len()
    );
    Ok(())
}

async fn endpoint_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let ns = ctx.namespace.clone();
    let name = "testservice";
    let label = "test-endpoint-static=true";
    let api: Api<Endpoints> = ctx.namespaced();
    let all: Api<Endpoints> = ctx.all();
    let by_label = ListParams::default().labels(label);
    // Upstream's watch conditions also compare the object's name with itself.
    let is_static = |e: &Endpoints| label_is(e, "test-endpoint-static", "true");

    let list = all
        .list(&by_label)
        .await
        .context("failed to list Endpoints")?;

    // creating an Endpoint
    let template: Endpoints = from(json!({
        "metadata": {"name": name, "labels": {"test-endpoint-static": "true"}},
        "subsets": [{
            "addresses": [{"ip": "10.0.0.24"}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        }],
    }))?;
    let created = api
        .create(&PostParams::default(), &template)
        .await
        .context("failed to create Endpoint")?;
    valid_resource_version(&created)?;

    // waiting for available Endpoint
    until(
        &api,
        label,
        list.metadata.resource_version.as_deref().unwrap_or(""),
        FOREVER,
        "the Endpoint to be added",
        |kind, e| kind == "ADDED" && is_static(e),
    )
    .await
    .context("failed to see ADDED event")?;

    // listing all Endpoints
    let list = all
        .list(&by_label)
        .await
        .context("failed to list Endpoints")?;
    let Some(mut found) = list
        .items
        .iter()
        .find(|e| e.name_any() == name && e.namespace().as_deref() == Some(ns.as_str()))
        .cloned()
    else {
        bail!("unable to find Endpoint Service in list of Endpoints");
    };

    // updating the Endpoint
    found
        .labels_mut()
        .insert("test-service".into(), "updated".into());
    api.replace(name, &PostParams::default(), &found)
        .await
        .context("failed to update Endpoint with new label")?;
    until(
        &api,
        label,
        list.metadata.resource_version.as_deref().unwrap_or(""),
        FOREVER,
        "the Endpoint to be updated",
        |kind, e| kind == "MODIFIED" && is_static(e),
    )
    .await
    .context("failed to see MODIFIED event")?;

    // fetching the Endpoint
    let endpoints = api.get(name).await.context("failed to fetch Endpoint")?;
    ensure!(
        label_is(&found, "test-service", "updated"),
        "failed to update Endpoint {name} in namespace {ns} label not updated"
    );

    // patching the Endpoint
    let patch = json!({
        "metadata": {"labels": {"test-service": "patched"}},
        "subsets": [{
            "addresses": [{"ip": "10.0.0.25"}],
            "ports": [{"name": "http-test", "port": 8080}],
        }],
    });
    let patched = api
        .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .context("failed to patch Endpoint")?;
    larger_resource_version(&created, &patched)?;
    until(
        &api,
        label,
        &rv(&endpoints),
        FOREVER,
        "the Endpoint to be patched",
        |kind, e| kind == "MODIFIED" && is_static(e),
    )
    .await
    .context("failed to see MODIFIED event")?;

    // fetching the Endpoint
    let endpoints = api.get(name).await.context("failed to fetch Endpoint")?;
    ensure!(
        label_is(&endpoints, "test-service", "patched"),
        "failed to patch Endpoint with Label: {:?}",
        endpoints.labels()
    );
    let subset = endpoints
        .subsets
        .as_ref()
        .and_then(|s| s.first())
        .ok_or_else(|| anyhow!("failed to patch Endpoint: no subsets in {endpoints:?}"))?;
    let address = subset
        .addresses
        .as_ref()
        .and_then(|a| a.first())
        .ok_or_else(|| anyhow!("failed to patch Endpoint: no addresses in {subset:?}"))?;
    let port = subset
        .ports
        .as_ref()
        .and_then(|p| p.first())
        .ok_or_else(|| anyhow!("failed to patch Endpoint: no ports in {subset:?}"))?;
    ensure!(
        address.ip == "10.0.0.25",
        "failed to patch Endpoint: the address is {}",
        address.ip
    );
    ensure!(
        port.name.as_deref() == Some("http-test"),
        "failed to patch Endpoint: the port's name is {:?}",
        port.name
    );
    ensure!(
        port.port == 8080,
        "failed to patch Endpoint: the port is {}",
        port.port
    );

    // deleting the Endpoint by Collection
    api.delete_collection(&DeleteParams::default(), &by_label)
        .await
        .context("failed to delete Endpoint by Collection")?;

    // waiting for Endpoint deletion
    until(
        &api,
        label,
        &rv(&endpoints),
        FOREVER,
        "the Endpoint to be deleted",
        |kind, e| kind == "DELETED" && is_static(e),
    )
    .await
    .context("failed to see DELETED event")?;

    // fetching the Endpoint
    ensure!(
        api.get(name).await.is_err(),
        "should not be able to fetch Endpoint"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// test/e2e/network/ingress.go and ingressclass.go
// ---------------------------------------------------------------------------------------

fn lb_status(ip: &str) -> IngressLoadBalancerStatus {
    IngressLoadBalancerStatus {
        ingress: Some(vec![IngressLoadBalancerIngress {
            ip: Some(ip.into()),
            ..Default::default()
        }]),
    }
}

fn load_balancer(ing: &Ingress) -> IngressLoadBalancerStatus {
    ing.status
        .as_ref()
        .and_then(|s| s.load_balancer.clone())
        .unwrap_or_default()
}

fn expect_finalizer(ing: &Ingress, step: &str) -> anyhow::Result<()> {
    ensure!(
        ing.metadata.deletion_timestamp.is_some(),
        "expected deletionTimestamp, got nil on step: {step:?}, ingress: {ing:?}"
    );
    ensure!(
        !ing.finalizers().is_empty(),
        "expected finalizers on ingress, got none on step: {step:?}, ingress: {ing:?}"
    );
    Ok(())
}

async fn ingress_api(ctx: Ctx) -> anyhow::Result<()> {
    let ns = ctx.namespace.clone();
    let api: Api<Ingress> = ctx.namespaced();
    let label = format!("special-label={ns}");
    let by_label = ListParams::default().labels(&label);
    let ingress = |host: &str| -> anyhow::Result<Ingress> {
        from(json!({
            "metadata": {"generateName": "e2e-example-ing", "labels": {"special-label": ns}},
            "spec": {
                "defaultBackend": {"service": {"name": "default-backend", "port": {"number": 8080}}},
                "rules": [{
                    "host": host,
                    "http": {"paths": [{
                        "path": "/",
                        "pathType": "ImplementationSpecific",
                        "backend": {"service": {"name": "test-backend", "port": {"number": 8080}}},
                    }]},
                }],
            },
            "status": {"loadBalancer": {}},
        }))
    };
    let (ingress1, ingress2, ingress3) = (
        ingress("host1.bar.com")?,
        ingress("host2.bar.com")?,
        ingress("host3.bar.com")?,
    );

    api_discovered(
        &ctx,
        "networking.k8s.io",
        "v1",
        &["ingresses"],
        "networking",
    )
    .await?;

    // creating
    let pp = PostParams::default();
    api.create(&pp, &ingress1).await.context("creating")?;
    api.create(&pp, &ingress2).await.context("creating")?;
    let created = api.create(&pp, &ingress3).await.context("creating")?;
    let name = created.name_any();

    // getting
    let gotten = api.get(&name).await.context("getting")?;
    ensure!(
        gotten.uid() == created.uid(),
        "the read uid {:?} is not the created {:?}",
        gotten.uid(),
        created.uid()
    );

    // listing
    let list = api.list(&by_label).await.context("listing")?;
    ensure!(
        list.items.len() == 3,
        "filtered list should have 3 items, has {}",
        list.items.len()
    );

    // watching
    let list_rv = list.metadata.resource_version.clone().unwrap_or_default();
    let wp = WatchParams::default().labels(&label).disable_bookmarks();
    let mut events: Events<Ingress> = api.watch(&wp, &list_rv).await.context("watching")?.boxed();

    // cluster-wide listing and watching
    let cluster: Api<Ingress> = ctx.all();
    let cluster_list = cluster
        .list(&by_label)
        .await
        .context("cluster-wide listing")?;
    ensure!(
        cluster_list.items.len() == 3,
        "filtered list should have 3 items, has {}",
        cluster_list.items.len()
    );
    let cluster_watch = cluster
        .watch(&wp, &list_rv)
        .await
        .context("cluster-wide watching")?;
    drop(cluster_watch);

    // patching
    let patched = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"patched": "true"}}})),
        )
        .await
        .context("patching")?;
    ensure!(
        annotation_is(&patched, "patched", "true"),
        "patched object should have the applied annotation: {:?}",
        patched.annotations()
    );

    // updating
    let updated = update_retrying(&api, &name, false, |o: &mut Ingress| {
        o.annotations_mut().insert("updated".into(), "true".into());
    })
    .await
    .context("updating")?;
    ensure!(
        annotation_is(&updated, "updated", "true"),
        "updated object should have the applied annotation: {:?}",
        updated.annotations()
    );

    await_patched(&mut events).await?;
    drop(events);

    // patching /status
    let patch = json!({
        "metadata": {"annotations": {"patchedstatus": "true"}},
        "status": {"loadBalancer": {"ingress": [{"ip": "169.1.1.1"}]}},
    });
    let patched_status = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .context("patching /status")?;
    ensure!(
        load_balancer(&patched_status) == lb_status("169.1.1.1"),
        "patched object should have the applied loadBalancer status: {:?}",
        patched_status.status
    );
    ensure!(
        annotation_is(&patched_status, "patchedstatus", "true"),
        "patched object should have the applied annotation: {:?}",
        patched_status.annotations()
    );

    // updating /status
    let updated_status = update_retrying(&api, &name, true, |o: &mut Ingress| {
        o.status.get_or_insert_default().load_balancer = Some(lb_status("169.1.1.2"));
    })
    .await
    .context("updating /status")?;
    ensure!(
        load_balancer(&updated_status) == lb_status("169.1.1.2"),
        "updated object expected to have updated loadbalancer status {:?}, got {:?}",
        lb_status("169.1.1.2"),
        updated_status.status
    );

    // get /status
    let status: Value = ctx
        .get_json(&format!(
            "/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/{name}/status"
        ))
        .await
        .context("get /status")?;
    ensure!(
        status["metadata"]["uid"].as_str() == created.uid().as_deref(),
        "createdIngress.UID: {:?} expected to match statusUID: {}",
        created.uid(),
        status["metadata"]["uid"]
    );

    // deleting: with an ingress controller's finalizers the ingress may stay, being deleted
    api.delete(&name, &DeleteParams::default())
        .await
        .context("deleting")?;
    match api.get(&name).await {
        Ok(ing) => expect_finalizer(&ing, "deleting createdIngress")?,
        Err(e) if is_not_found(&e) => {}
        Err(e) => bail!("expected 404, got {e}"),
    }
    let list = api.list(&by_label).await.context("listing")?;
    ensure!(
        list.items.len() <= 3,
        "filtered list should have <= 3 items, has {}",
        list.items.len()
    );
    for ing in list.items.iter().filter(|i| i.name_any() == name) {
        expect_finalizer(ing, "listing after deleting createdIngress")?;
    }

    // deleting a collection
    api.delete_collection(&DeleteParams::default(), &by_label)
        .await
        .context("deleting a collection")?;
    let list = api.list(&by_label).await.context("listing")?;
    ensure!(
        list.items.len() <= 3,
        "filtered list should have <= 3 items, has {}",
        list.items.len()
    );
    for ing in &list.items {
        expect_finalizer(ing, "deleting ingress collection")?;
    }
    Ok(())
}

/// ingressclass.go's createIngressClass, not a default class.
fn ingress_class(name: &str, unique: &str) -> anyhow::Result<IngressClass> {
    from(json!({
        "metadata": {"name": name, "labels": {"ingressclass": unique, "special-label": "generic"}},
        "spec": {"controller": "example.com/controller"},
    }))
}

async fn ingressclass_api(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<IngressClass> = ctx.cluster();
    let label = format!("ingressclass={}", ctx.namespace);
    let result = ingressclass_operations(&ctx, &api, &label).await;
    let cleanup = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&label),
        )
        .await
        .map(|_| ())
        .map_err(anyhow::Error::from);
    with_cleanup(result, cleanup)
}

async fn ingressclass_operations(
    ctx: &Ctx,
    api: &Api<IngressClass>,
    label: &str,
) -> anyhow::Result<()> {
    let by_label = ListParams::default().labels(label);
    api_discovered(
        ctx,
        "networking.k8s.io",
        "v1",
        &["ingressclasses"],
        "networking",
    )
    .await?;

    // creating
    let pp = PostParams::default();
    let class1 = api
        .create(&pp, &ingress_class("ingressclass1", &ctx.namespace)?)
        .await
        .context("creating")?;
    api.create(&pp, &ingress_class("ingressclass2", &ctx.namespace)?)
        .await
        .context("creating")?;
    api.create(&pp, &ingress_class("ingressclass3", &ctx.namespace)?)
        .await
        .context("creating")?;
    let name = class1.name_any();

    // getting
    let gotten = api.get(&name).await.context("getting")?;
    ensure!(
        gotten.uid() == class1.uid(),
        "the read uid {:?} is not the created {:?}",
        gotten.uid(),
        class1.uid()
    );

    // listing
    let list = api
        .list(&ListParams::default().labels("special-label=generic"))
        .await
        .context("listing")?;
    ensure!(
        list.items.len() == 3,
        "filtered list should have 3 items, has {}",
        list.items.len()
    );

    // watching
    let mut events: Events<IngressClass> = api
        .watch(
            &WatchParams::default().labels(label).disable_bookmarks(),
            list.metadata.resource_version.as_deref().unwrap_or(""),
        )
        .await
        .context("watching")?
        .boxed();

    // patching
    let patched = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"patched": "true"}}})),
        )
        .await
        .context("patching")?;
    ensure!(
        annotation_is(&patched, "patched", "true"),
        "patched object should have the applied annotation: {:?}",
        patched.annotations()
    );

    // updating
    let mut to_update = patched.clone();
    to_update
        .annotations_mut()
        .insert("updated".into(), "true".into());
    let updated = api
        .replace(&name, &PostParams::default(), &to_update)
        .await
        .context("updating")?;
    ensure!(
        annotation_is(&updated, "updated", "true"),
        "updated object should have the applied annotation: {:?}",
        updated.annotations()
    );

    await_patched(&mut events).await?;
    drop(events);

    // deleting
    api.delete(&name, &DeleteParams::default())
        .await
        .context("deleting")?;
    let gone = api_error(api.get(&name).await)?;
    ensure!(
        gone.code == 404 || gone.reason == "NotFound",
        "expected 404, got {gone:?}"
    );
    let list = api.list(&by_label).await.context("listing")?;
    ensure!(
        list.items.len() == 2,
        "filtered list should have 2 items, has {}",
        list.items.len()
    );

    // deleting a collection
    api.delete_collection(&DeleteParams::default(), &by_label)
        .await
        .context("deleting a collection")?;
    let list = api.list(&by_label).await.context("listing")?;
    ensure!(
        list.items.is_empty(),
        "filtered list should have 0 items, has {}",
        list.items.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// test/e2e/network/service.go
// ---------------------------------------------------------------------------------------

async fn service_status_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let ns = ctx.namespace.clone();
    let api: Api<Service> = ctx.namespaced();
    let all: Api<Service> = ctx.all();
    let name = format!("test-service-{}", rand_string(5));
    let label = "test-service-static=true";

    let list = all
        .list(&ListParams::default().labels(label))
        .await
        .context("failed to list Services")?;
    let list_rv = list.metadata.resource_version.clone().unwrap_or_default();
    let ours = |s: &Service| s.name_any() == name && s.namespace().as_deref() == Some(ns.as_str());

    // creating a Service
    let service: Service = from(json!({
        "metadata": {"name": name, "labels": {"test-service-static": "true"}},
        "spec": {
            "type": "LoadBalancer",
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 80}],
            "loadBalancerClass": "example.com/internal-vip",
        },
    }))?;
    api.create(&PostParams::default(), &service)
        .await
        .context("failed to create Service")?;

    // watching for the Service to be added
    until(
        &api,
        label,
        &list_rv,
        SVC_READY,
        "the Service to be added",
        |_, s| ours(s) && label_is(s, "test-service-static", "true"),
    )
    .await
    .with_context(|| format!("Failed to locate Service {name} in namespace {ns}"))?;

    // Getting /status
    let _status: Service = ctx
        .get_json(&format!("/api/v1/namespaces/{ns}/services/{name}/status"))
        .await
        .with_context(|| {
            format!("Failed to fetch ServiceStatus of Service {name} in namespace {ns}")
        })?;

    // patching the ServiceStatus
    let patch = json!({
        "metadata": {"annotations": {"patchedstatus": "true"}},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}},
    });
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .context("Could not patch service status")?;

    // watching for the Service to be patched
    until(
        &api,
        label,
        &list_rv,
        SVC_READY,
        "the Service's status to be patched",
        |_, s| ours(s) && annotation_is(s, "patchedstatus", "true"),
    )
    .await
    .with_context(|| format!("failed to locate Service {name} in namespace {ns}"))?;

    // updating the ServiceStatus (upstream leaves lastTransitionTime zero, which Go sends as
    // null; the typed client here needs one, so the condition carries the present time)
    update_retrying(&api, &name, true, |s: &mut Service| {
        s.status
            .get_or_insert_default()
            .conditions
            .get_or_insert_default()
            .push(Condition {
                type_: "StatusUpdate".into(),
                status: "True".into(),
                reason: "E2E".into(),
                message: "Set from e2e test".into(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
                observed_generation: None,
            });
    })
    .await
    .context("Failed to UpdateStatus")?;

    // watching for the Service to be updated: its first condition must be the new one
    until(
        &api,
        label,
        &list_rv,
        SVC_READY,
        "the Service's status to be updated",
        |_, s| {
            let first = s
                .status
                .as_ref()
                .and_then(|st| st.conditions.as_ref())
                .and_then(|c| c.first());
            ours(s)
                && annotation_is(s, "patchedstatus", "true")
                && first.is_some_and(|c| {
                    c.type_ == "StatusUpdate"
                        && c.reason == "E2E"
                        && c.message == "Set from e2e test"
                })
        },
    )
    .await
    .with_context(|| format!("failed to locate Service {name} in namespace {ns}"))?;

    // patching the service: the body is what Go's json.Marshal makes of a Service holding
    // only the label (its zero-valued creationTimestamp, spec and status included)
    let patch = json!({
        "metadata": {"creationTimestamp": null, "labels": {"test-service": "patched"}},
        "spec": {},
        "status": {"loadBalancer": {}},
    });
    api.patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .context("failed to patch service")?;

    // watching for the Service to be patched
    until(
        &api,
        label,
        &list_rv,
        SVC_READY,
        "the Service to be patched",
        |_, s| ours(s) && label_is(s, "test-service", "patched"),
    )
    .await
    .with_context(|| format!("failed to locate Service {name} in namespace {ns}"))?;

    // deleting the service
    api.delete(&name, &DeleteParams::default())
        .await
        .context("failed to delete the Service")?;

    // watching for the Service to be deleted
    until(
        &api,
        label,
        &list_rv,
        SVC_READY,
        "the Service to be deleted",
        |kind, s| kind == "DELETED" && ours(s) && label_is(s, "test-service-static", "true"),
    )
    .await
    .with_context(|| format!("failed to delete Service {name} in namespace {ns}"))?;
    Ok(())
}

async fn service_collection(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<Service> = ctx.namespaced();
    let services = [
        (format!("e2e-svc-a-{}", rand_string(5)), "delete", 8001),
        (format!("e2e-svc-b-{}", rand_string(5)), "delete", 8002),
        (format!("e2e-svc-c-{}", rand_string(5)), "keep", 8003),
    ];

    // creating a collection of services
    for (name, label, port) in &services {
        let svc: Service = from(json!({
            "metadata": {"name": name, "labels": {"e2e-test-service": label}},
            "spec": {
                "type": "ClusterIP",
                "ports": [{"name": "http", "protocol": "TCP", "port": port, "targetPort": port}],
            },
        }))?;
        api.create(&PostParams::default(), &svc)
            .await
            .context("failed to create Service")?;
    }
    let list = api
        .list(&ListParams::default())
        .await
        .context("failed to list Services")?;
    ensure!(
        list.items.len() == 3,
        "Required count of services out of sync: {} services",
        list.items.len()
    );

    // deleting service collection
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("e2e-test-service=delete"),
    )
    .await
    .context("failed to delete service collection")?;
    let list = api
        .list(&ListParams::default())
        .await
        .context("failed to list Services")?;
    ensure!(
        list.items.len() == 1,
        "Required count of services out of sync: {} services",
        list.items.len()
    );
    Ok(())
}

async fn service_in_all_namespaces(ctx: Ctx) -> anyhow::Result<()> {
    let all: Api<Service> = ctx.all();
    let services = all
        .list(&ListParams::default())
        .await
        .context("fetching services")?;
    let found = services
        .items
        .iter()
        .any(|s| s.name_any() == "kubernetes" && s.namespace().as_deref() == Some("default"));
    ensure!(
        found,
        "could not find service 'kubernetes' in service list in all namespaces"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// test/e2e/storage/csi_inline.go
// ---------------------------------------------------------------------------------------

async fn csidriver_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<CSIDriver> = ctx.cluster();
    let label = format!("e2e-test={}", ctx.namespace);
    let result = csidriver_steps(&ctx, &api, &label).await;
    let cleanup = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&label),
        )
        .await
        .map(|_| ())
        .map_err(anyhow::Error::from);
    with_cleanup(result, cleanup)
}

/// A CSIDriver must be gone, or be going.
async fn expect_driver_deleted(api: &Api<CSIDriver>, name: &str) -> anyhow::Result<()> {
    match api.get(name).await {
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => bail!("expected 404, got {e}"),
        Ok(d) if d.metadata.deletion_timestamp.is_some() => Ok(()),
        Ok(d) => bail!(
            "CSIDriver should have been deleted or have DeletionTimestamp, but instead got: {d:?}"
        ),
    }
}

async fn csidriver_steps(ctx: &Ctx, api: &Api<CSIDriver>, label: &str) -> anyhow::Result<()> {
    let unique = &ctx.namespace;
    // One driver for ephemeral volumes only, one for both kinds.
    let driver1: CSIDriver = from(json!({
        "metadata": {"name": format!("inline-driver-{}", uuid()), "labels": {"e2e-test": unique}},
        "spec": {"volumeLifecycleModes": ["Ephemeral"], "fsGroupPolicy": "ReadWriteOnceWithFSType"},
    }))?;
    let driver2: CSIDriver = from(json!({
        "metadata": {"name": format!("inline-driver-{}", uuid()), "labels": {"e2e-test": unique}},
        "spec": {
            "volumeLifecycleModes": ["Persistent", "Ephemeral"],
            "fsGroupPolicy": "ReadWriteOnceWithFSType",
        },
    }))?;

    // Creating two CSIDrivers
    let pp = PostParams::default();
    let created1 = api
        .create(&pp, &driver1)
        .await
        .context("Failed to create first CSIDriver")?;
    let created2 = api
        .create(&pp, &driver2)
        .await
        .context("Failed to create second CSIDriver")?;
    let again = api_error(api.create(&pp, &driver1).await)?;
    ensure!(
        again.code == 409 && again.reason == "AlreadyExists",
        "expected 409, got {again:?}"
    );
    let (name1, name2) = (created1.name_any(), created2.name_any());

    // Getting both
    let retrieved1 = api
        .get(&name1)
        .await
        .with_context(|| format!("Failed to get CSIDriver {name1:?}"))?;
    ensure!(
        retrieved1.uid() == created1.uid(),
        "the read uid {:?} is not the created {:?}",
        retrieved1.uid(),
        created1.uid()
    );
    let retrieved2 = api
        .get(&name2)
        .await
        .with_context(|| format!("Failed to get CSIDriver {name2:?}"))?;
    ensure!(
        retrieved2.uid() == created2.uid(),
        "the read uid {:?} is not the created {:?}",
        retrieved2.uid(),
        created2.uid()
    );

    // Patching the second
    let patched = api
        .patch(
            &name2,
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {&name2: "patched"}}})),
        )
        .await
        .with_context(|| format!("failed to patch CSIDriver {name2:?}"))?;
    ensure!(
        patched
            .labels()
            .get(&name2)
            .is_some_and(|v| v.contains("patched")),
        "Checking that patched label has been applied: {:?}",
        patched.labels()
    );

    // Updating the second
    let updated = update_retrying(api, &name2, false, |d: &mut CSIDriver| {
        d.labels_mut().insert(name2.clone(), "updated".into());
    })
    .await
    .with_context(|| format!("failed to update CSIDriver {name2:?}"))?;
    ensure!(
        updated
            .labels()
            .get(&name2)
            .is_some_and(|v| v.contains("updated")),
        "Checking that updated label has been applied: {:?}",
        updated.labels()
    );

    // Listing all CSIDrivers with the labelSelector
    let list = api
        .list(&ListParams::default().labels(label))
        .await
        .with_context(|| {
            format!("Failed to list all CSIDrivers with the labelSelector {label:?}")
        })?;
    ensure!(
        list.items.len() == 2,
        "filtered list should have 2 items, got: {:?}",
        list.items.iter().map(|d| d.name_any()).collect::<Vec<_>>()
    );

    // Deleting the first, and confirming it
    api.delete(&name1, &DeleteParams::default())
        .await
        .with_context(|| format!("Failed to delete CSIDriver {name1:?}"))?;
    expect_driver_deleted(api, &name1).await?;

    // Deleting the second via DeleteCollection, and confirming it
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&format!("{name2}=updated")),
    )
    .await
    .with_context(|| format!("Failed to delete CSIDriver {name2:?}"))?;
    expect_driver_deleted(api, &name2).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// test/e2e/storage/csi_node.go
// ---------------------------------------------------------------------------------------

async fn csinode_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<CSINode> = ctx.cluster();
    let names = [
        format!("e2e-csinode-{}", rand_string(5)),
        format!("e2e-csinode-{}", rand_string(5)),
    ];
    let result = csinode_steps(&api, &names[0], &names[1]).await;
    let cleanup = delete_all(&api, &names).await;
    with_cleanup(result, cleanup)
}

async fn csinode_steps(api: &Api<CSINode>, initial: &str, replacement: &str) -> anyhow::Result<()> {
    // Creating initial csiNode
    let csinode: CSINode = from(json!({"metadata": {"name": initial}}))?;
    let created = api
        .create(&PostParams::default(), &csinode)
        .await
        .with_context(|| format!("failed to create csiNode {initial:?}"))?;
    valid_resource_version(&created)?;

    // Getting initial csiNode
    let retrieved = api
        .get(initial)
        .await
        .with_context(|| format!("Failed to retrieve csiNode {initial:?}"))?;
    ensure!(
        retrieved.name_any() == created.name_any(),
        "Checking that the retrieved name has been found: {}",
        retrieved.name_any()
    );

    // Patching initial csiNode
    let patched = api
        .patch(
            initial,
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {initial: "patched"}}})),
        )
        .await
        .with_context(|| format!("Failed to patch csiNode {initial:?}"))?;
    ensure!(
        label_is(&patched, initial, "patched"),
        "Checking that patched label has been applied: {:?}",
        patched.labels()
    );
    larger_resource_version(&created, &patched)?;

    // Listing csiNodes with the patched label
    let patched_selector = format!("{initial}=patched");
    let list = api
        .list(&ListParams::default().labels(&patched_selector))
        .await
        .context("failed to list csiNodes")?;
    ensure!(
        list.items.len() == 1,
        "expected 1 csiNode, got {}",
        list.items.len()
    );

    // Delete initial csiNode, and confirm it
    api.delete(initial, &DeleteParams::default())
        .await
        .with_context(|| format!("failed to delete csiNode {initial:?}"))?;
    eventually_none(api, &patched_selector, &format!("CSINode {initial:?}")).await?;

    // Creating replacement csiNode
    let csinode: CSINode = from(json!({"metadata": {"name": replacement}}))?;
    let second = api
        .create(&PostParams::default(), &csinode)
        .await
        .with_context(|| format!("failed to create csiNode {replacement:?}"))?;

    // Getting replacement csiNode
    let retrieved = api
        .get(&second.name_any())
        .await
        .with_context(|| format!("Failed to retrieve CSINode {replacement:?}"))?;
    ensure!(
        retrieved.name_any() == second.name_any(),
        "Checking that the retrieved name has been found: {}",
        retrieved.name_any()
    );

    // Updating replacement csiNode
    let updated = update_retrying(api, replacement, false, |n: &mut CSINode| {
        n.metadata.labels = Some([(replacement.to_string(), "updated".to_string())].into());
    })
    .await
    .with_context(|| format!("failed to update {replacement:?}"))?;
    ensure!(
        label_is(&updated, replacement, "updated"),
        "Checking that updated label has been applied: {:?}",
        updated.labels()
    );

    // DeleteCollection of CSINodes with the updated label, and confirm it
    let updated_selector = format!("{replacement}=updated");
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&updated_selector),
    )
    .await
    .context("failed to delete csiNode Collection")?;
    eventually_none(api, &updated_selector, &format!("CSINode {replacement:?}")).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// test/e2e/storage/csistoragecapacity.go
// ---------------------------------------------------------------------------------------

/// expectWatchResult: reads until an ADDED event, or a MODIFIED one with the patched or the
/// updated annotation, each event within wait.ForeverTestTimeout.
async fn expect_watch_result(
    kind: &str,
    events: &mut Events<CSIStorageCapacity>,
) -> anyhow::Result<()> {
    let (mut added, mut patched, mut updated) = (false, false, false);
    while !(added || patched || updated) {
        let next = tokio::time::timeout(FOREVER, events.next())
            .await
            .map_err(|_| anyhow!("{kind}: timed out waiting for watch event"))?;
        let Some(event) = next else {
            bail!("{kind}: watch channel should not close");
        };
        match event? {
            WatchEvent::Modified(o) => {
                if annotation_is(&o, "patched", "true") {
                    patched = true;
                } else if annotation_is(&o, "updated", "true") {
                    updated = true;
                }
            }
            WatchEvent::Added(_) => added = true,
            _ => {}
        }
    }
    Ok(())
}

async fn csistoragecapacity_api(ctx: Ctx) -> anyhow::Result<()> {
    let unique = ctx.namespace.clone();
    let api: Api<CSIStorageCapacity> = ctx.namespaced();
    let all: Api<CSIStorageCapacity> = ctx.all();
    let label = format!("test={unique}");
    let by_label = ListParams::default().labels(&label);
    // The storage class is a fictional one.
    let capacity = |suffix: &str| -> anyhow::Result<CSIStorageCapacity> {
        from(json!({
            "metadata": {"name": format!("{unique}{suffix}"), "labels": {"test": unique}},
            "storageClassName": "e2e.example.com",
        }))
    };
    let (csc, csc2, csc3) = (capacity("-csc1")?, capacity("-csc2")?, capacity("-csc3")?);

    api_discovered(
        &ctx,
        "storage.k8s.io",
        "v1",
        &["csistoragecapacities"],
        "CSIStorageCapacity",
    )
    .await?;

    // creating
    let pp = PostParams::default();
    let created = api.create(&pp, &csc).await.context("creating")?;
    let again = api_error(api.create(&pp, &csc).await)?;
    ensure!(
        again.code == 409 && again.reason == "AlreadyExists",
        "expected 409, got {again:?}"
    );
    api.create(&pp, &csc2).await.context("creating")?;

    // watching, in the namespace and across namespaces, from now
    let wp = WatchParams::default().labels(&label).disable_bookmarks();
    let mut in_namespace: Events<CSIStorageCapacity> =
        api.watch(&wp, "").await.context("watching")?.boxed();
    let mut across: Events<CSIStorageCapacity> =
        all.watch(&wp, "").await.context("watching")?.boxed();

    // one added for the watches
    api.create(&pp, &csc3).await.context("creating")?;

    // getting
    let name = created.name_any();
    let gotten = api.get(&name).await.context("getting")?;
    ensure!(
        gotten.uid() == created.uid(),
        "the read uid {:?} is not the created {:?}",
        gotten.uid(),
        created.uid()
    );
    valid_resource_version(&gotten)?;

    // listing in namespace, and across namespaces
    let names = |l: &[CSIStorageCapacity]| l.iter().map(|c| c.name_any()).collect::<Vec<_>>();
    let list = api.list(&by_label).await.context("listing in namespace")?;
    ensure!(
        list.items.len() == 3,
        "filtered list should have 3 items, got: {:?}",
        names(list.items.as_slice())
    );
    let list = all
        .list(&by_label)
        .await
        .context("listing across namespaces")?;
    ensure!(
        list.items.len() == 3,
        "filtered list should have 3 items, got: {:?}",
        names(list.items.as_slice())
    );

    // patching
    let patched = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"patched": "true"}}})),
        )
        .await
        .context("patching")?;
    ensure!(
        annotation_is(&patched, "patched", "true"),
        "patched object should have the applied annotation: {:?}",
        patched.annotations()
    );
    larger_resource_version(&created, &patched)?;

    // updating
    let mut to_update = patched.clone();
    to_update
        .annotations_mut()
        .insert("updated".into(), "true".into());
    let updated = api
        .replace(&name, &PostParams::default(), &to_update)
        .await
        .context("updating")?;
    ensure!(
        annotation_is(&updated, "updated", "true"),
        "updated object should have the applied annotation: {:?}",
        updated.annotations()
    );

    expect_watch_result("in namespace", &mut in_namespace).await?;
    drop(in_namespace);
    expect_watch_result("across namespace", &mut across).await?;
    drop(across);

    // deleting: the object is gone, or kept by a finalizer (and may yet go before the list)
    api.delete(&name, &DeleteParams::default())
        .await
        .context("deleting")?;
    let min = 2;
    let mut max = min;
    match api.get(&name).await {
        Err(e) if is_not_found(&e) => {}
        Err(e) => bail!("expected 404, got {e}"),
        Ok(c) if c.metadata.deletion_timestamp.is_some() && !c.finalizers().is_empty() => {
            max += 1;
        }
        Ok(c) => bail!(
            "CSIStorageCapacitity should have been deleted or have DeletionTimestamp and Finalizers, but instead got: {c:?}"
        ),
    }
    let list = api.list(&by_label).await.context("listing")?;
    ensure!(
        (min..=max).contains(&list.items.len()),
        "expected <= {max} and >= {min} remaining CSIStorageCapacity objects, got {}: {:?}",
        list.items.len(),
        names(list.items.as_slice())
    );

    // deleting a collection: what remains must be held back by a finalizer only
    api.delete_collection(&DeleteParams::default(), &by_label)
        .await
        .context("deleting a collection")?;
    let list = api.list(&by_label).await.context("listing")?;
    for c in &list.items {
        ensure!(
            c.metadata.deletion_timestamp.is_some() && !c.finalizers().is_empty(),
            "CSIStorageCapacity should have been deleted or have DeletionTimestamp and Finalizers, but instead got: {c:?}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// test/e2e/storage/persistent_volumes.go ("CSI Conformance")
// ---------------------------------------------------------------------------------------

/// e2epv.MakePersistentVolume with the tests' config: named after the namespace, labelled
/// into the namespace's pool, of the namespace's storage class, a CSI volume of `driver`.
fn make_pv(ns: &str, driver: &str, handle: &str) -> anyhow::Result<PersistentVolume> {
    let prefix = format!("{ns}-");
    from(json!({
        "metadata": {
            "generateName": prefix,
            "labels": {VOLUME_SELECTOR_KEY: ns},
            "annotations": {"pv.beta.kubernetes.io/gid": "777"},
        },
        "spec": {
            "persistentVolumeReclaimPolicy": "Retain",
            "capacity": {"storage": "2Gi"},
            "csi": {"driver": driver, "volumeHandle": handle},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": ns,
        },
    }))
}

/// e2epv.MakePersistentVolumeClaim with the tests' config: of the namespace's storage class.
fn make_pvc(ns: &str) -> anyhow::Result<PersistentVolumeClaim> {
    from(json!({
        "metadata": {"generateName": "pvc-", "namespace": ns},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "2Gi"}},
            "storageClassName": ns,
        },
    }))
}

/// e2epv.CreatePVsPVCs with one of each: the PV, then the claim.
async fn create_pv_pvc(
    pvs: &Api<PersistentVolume>,
    pvcs: &Api<PersistentVolumeClaim>,
    pv: &PersistentVolume,
    pvc: &PersistentVolumeClaim,
) -> anyhow::Result<(PersistentVolume, PersistentVolumeClaim)> {
    let pv = pvs
        .create(&PostParams::default(), pv)
        .await
        .context("Failed to create the requested storage resources: PV Create API error")?;
    let pvc = pvcs
        .create(&PostParams::default(), pvc)
        .await
        .context("Failed to create the requested storage resources: PVC Create API error")?;
    Ok((pv, pvc))
}

/// The AfterEach's PVPVCMapCleanup: the namespace's pool of PVs (its claims go with it).
async fn delete_pool(pvs: &Api<PersistentVolume>, vol_label: &str) -> anyhow::Result<()> {
    pvs.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(vol_label),
    )
    .await
    .map(|_| ())
    .context("AfterEach: Failed to delete 1 or more PVs")
}

async fn pv_pvc_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let pvs: Api<PersistentVolume> = ctx.cluster();
    let vol_label = format!("{VOLUME_SELECTOR_KEY}={}", ctx.namespace);
    let result = pv_pvc_lifecycle_steps(&ctx, &pvs, &vol_label).await;
    let cleanup = delete_pool(&pvs, &vol_label).await;
    with_cleanup(result, cleanup)
}

async fn pv_pvc_lifecycle_steps(
    ctx: &Ctx,
    pvs: &Api<PersistentVolume>,
    vol_label: &str,
) -> anyhow::Result<()> {
    let ns = &ctx.namespace;
    let pvcs: Api<PersistentVolumeClaim> = ctx.namespaced();
    let all_pvcs: Api<PersistentVolumeClaim> = ctx.all();

    // Creating initial PV and PVC: the PV names a CSIDriver that is never created.
    let driver = format!("inline-driver-{}", uuid());
    let pv_template = make_pv(ns, &driver, "e2e-conformance")?;
    let pvc_template = make_pvc(ns)?;
    create_pv_pvc(pvs, &pvcs, &pv_template, &pvc_template).await?;

    // Listing all PVs with the labelSelector
    let list = pvs
        .list(&ListParams::default().labels(vol_label))
        .await
        .with_context(|| format!("Failed to list PVs with the labelSelector: {vol_label:?}"))?;
    ensure!(
        list.items.len() == 1,
        "expected 1 PV, got {}",
        list.items.len()
    );
    let initial_pv = list.items[0].clone();
    valid_resource_version(&initial_pv)?;

    // Listing PVCs in the namespace
    let list = pvcs
        .list(&ListParams::default())
        .await
        .context("Failed to list PVCs")?;
    ensure!(
        list.items.len() == 1,
        "expected 1 PVC, got {}",
        list.items.len()
    );
    let initial_pvc = list.items[0].clone();
    valid_resource_version(&initial_pvc)?;

    // Patching the PV
    let pv_name = initial_pv.name_any();
    let patched_pv = pvs
        .patch(
            &pv_name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {&pv_name: "patched"}}})),
        )
        .await
        .with_context(|| format!("Failed to patch PV {pv_name:?}"))?;
    ensure!(
        label_is(&patched_pv, &pv_name, "patched"),
        "Checking that patched label has been applied: {:?}",
        patched_pv.labels()
    );
    larger_resource_version(&initial_pv, &patched_pv)?;

    // Patching the PVC
    let pvc_name = initial_pvc.name_any();
    let patched_pvc = pvcs
        .patch(
            &pvc_name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {&pvc_name: "patched"}}})),
        )
        .await
        .with_context(|| format!("Failed to patch PVC {pvc_name:?}"))?;
    ensure!(
        label_is(&patched_pvc, &pvc_name, "patched"),
        "Checking that patched label has been applied: {:?}",
        patched_pvc.labels()
    );
    larger_resource_version(&initial_pvc, &patched_pvc)?;

    // Getting the PV and the PVC
    let retrieved_pv = pvs
        .get(&pv_name)
        .await
        .with_context(|| format!("Failed to get PV {pv_name:?}"))?;
    ensure!(
        retrieved_pv.uid() == patched_pv.uid(),
        "the read uid {:?} is not the patched {:?}",
        retrieved_pv.uid(),
        patched_pv.uid()
    );
    let retrieved_pvc = pvcs
        .get(&pvc_name)
        .await
        .with_context(|| format!("Failed to get PVC {pvc_name:?}"))?;
    ensure!(
        retrieved_pvc.uid() == patched_pvc.uid(),
        "the read uid {:?} is not the patched {:?}",
        retrieved_pvc.uid(),
        patched_pvc.uid()
    );

    // Deleting the PVC, and confirming it: the namespace then has no claims
    pvcs.delete(&pvc_name, &DeleteParams::default())
        .await
        .with_context(|| format!("Failed to delete PVC {pvc_name:?}"))?;
    eventually_none(&pvcs, "", &format!("PVC {pvc_name:?}")).await?;

    // Deleting the PV, and confirming it
    pvs.delete(&pv_name, &DeleteParams::default())
        .await
        .with_context(|| format!("Failed to delete PV {pv_name:?}"))?;
    eventually_none(pvs, vol_label, &format!("PV {pv_name:?}")).await?;

    // Recreating another PV & PVC
    let (pv, pvc) = create_pv_pvc(pvs, &pvcs, &pv_template, &pvc_template).await?;
    let (pv_name, pvc_name) = (pv.name_any(), pvc.name_any());

    // Updating the PV
    let updated_pv = update_retrying(pvs, &pv_name, false, |p: &mut PersistentVolume| {
        p.labels_mut().insert(pv_name.clone(), "updated".into());
    })
    .await
    .with_context(|| format!("failed to update PV {pv_name:?}"))?;
    ensure!(
        label_is(&updated_pv, &pv_name, "updated"),
        "Checking that updated label has been applied: {:?}",
        updated_pv.labels()
    );

    // Updating the PVC
    let updated_pvc = update_retrying(&pvcs, &pvc_name, false, |p: &mut PersistentVolumeClaim| {
        p.metadata.labels = Some([(pvc_name.clone(), "updated".to_string())].into());
    })
    .await
    .with_context(|| format!("failed to update PVC {pvc_name:?}"))?;
    ensure!(
        label_is(&updated_pvc, &pvc_name, "updated"),
        "Checking that updated label has been applied: {:?}",
        updated_pvc.labels()
    );

    // Listing PVCs in all namespaces with the labelSelector
    let pvc_selector = format!("{pvc_name}=updated");
    let list = all_pvcs
        .list(&ListParams::default().labels(&pvc_selector))
        .await
        .with_context(|| {
            format!(
                "Failed to list PVCs in all namespaces with the labelSelector: {pvc_selector:?}"
            )
        })?;
    ensure!(
        list.items.len() == 1,
        "expected 1 PVC, got {}",
        list.items.len()
    );

    // Deleting the PVC via DeleteCollection, and confirming it
    pvcs.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&pvc_selector),
    )
    .await
    .with_context(|| format!("Failed to delete PVC {pvc_name:?}"))?;
    eventually_none(&pvcs, &pvc_selector, &format!("PVC {pvc_name:?}")).await?;

    // Deleting the PV via DeleteCollection, and confirming it
    let pv_selector = format!("{pv_name}=updated");
    pvs.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&pv_selector),
    )
    .await
    .with_context(|| format!("Failed to delete PV {pv_name:?}"))?;
    eventually_none(pvs, &pv_selector, &format!("PV {pv_name:?}")).await?;
    Ok(())
}

/// gstruct.MatchElements by type, extras ignored: exactly one condition of `type_`, whose
/// message and reason contain the given texts.
fn expect_claim_condition(
    pvc: &PersistentVolumeClaim,
    type_: &str,
    message: &str,
    reason: &str,
    what: &str,
) -> anyhow::Result<()> {
    let conditions: Vec<&PersistentVolumeClaimCondition> = pvc
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .collect();
    let matching: Vec<&&PersistentVolumeClaimCondition> =
        conditions.iter().filter(|c| c.type_ == type_).collect();
    ensure!(
        matching.len() == 1,
        "{what}: expected one {type_} condition, got {conditions:?}"
    );
    let c = matching[0];
    ensure!(
        c.message.as_deref().unwrap_or("").contains(message)
            && c.reason.as_deref().unwrap_or("").contains(reason),
        "{what}: the {type_} condition is {c:?}"
    );
    Ok(())
}

async fn pv_pvc_status(ctx: Ctx) -> anyhow::Result<()> {
    let pvs: Api<PersistentVolume> = ctx.cluster();
    let vol_label = format!("{VOLUME_SELECTOR_KEY}={}", ctx.namespace);
    let result = pv_pvc_status_steps(&ctx, &pvs, &vol_label).await;
    let cleanup = delete_pool(&pvs, &vol_label).await;
    with_cleanup(result, cleanup)
}

async fn pv_pvc_status_steps(
    ctx: &Ctx,
    pvs: &Api<PersistentVolume>,
    vol_label: &str,
) -> anyhow::Result<()> {
    let ns = &ctx.namespace;
    let pvcs: Api<PersistentVolumeClaim> = ctx.namespaced();

    // Creating initial PV and PVC
    let driver = format!("e2e-driver-{}", uuid());
    create_pv_pvc(
        pvs,
        &pvcs,
        &make_pv(ns, &driver, "e2e-status-conformance")?,
        &make_pvc(ns)?,
    )
    .await?;

    // Listing all PVs with the labelSelector, and the namespace's PVCs
    let list = pvs
        .list(&ListParams::default().labels(vol_label))
        .await
        .with_context(|| format!("Failed to list PVs with the labelSelector: {vol_label:?}"))?;
    ensure!(
        list.items.len() == 1,
        "expected 1 PV, got {}",
        list.items.len()
    );
    let initial_pv = list.items[0].clone();
    let list = pvcs
        .list(&ListParams::default())
        .await
        .context("Failed to list PVCs")?;
    ensure!(
        list.items.len() == 1,
        "expected 1 PVC, got {}",
        list.items.len()
    );
    let initial_pvc = list.items[0].clone();
    let (pv_name, pvc_name) = (initial_pv.name_any(), initial_pvc.name_any());

    // Reading the PVC's status
    let retrieved_pvc: PersistentVolumeClaim = ctx
        .get_json(&format!(
            "/api/v1/namespaces/{ns}/persistentvolumeclaims/{pvc_name}/status"
        ))
        .await
        .with_context(|| {
            format!("Failed to fetch the status of PVC {pvc_name} in namespace {ns}")
        })?;
    let phase = retrieved_pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    ensure!(
        phase == "Pending" || phase == "Bound",
        "Checking that the PVC status has been read: phase {phase:?}"
    );

    // Reading the PV's status
    let retrieved_pv: PersistentVolume = ctx
        .get_json(&format!("/api/v1/persistentvolumes/{pv_name}/status"))
        .await
        .with_context(|| format!("Failed to fetch the status of PV {pv_name}"))?;
    let phase = retrieved_pv
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    ensure!(
        ["Available", "Bound", "Pending"].contains(&phase.as_str()),
        "Checking that the PV status has been read: phase {phase:?}"
    );

    // Patching the PVC's status
    let patch = json!({"status": {"conditions": [{
        "type": "StatusPatched",
        "status": "True",
        "reason": "E2E patchedStatus",
        "message": "Set from e2e test",
    }]}});
    let patched_pvc = pvcs
        .patch_status(&pvc_name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .context("Failed to patch status.")?;
    expect_claim_condition(
        &patched_pvc,
        "StatusPatched",
        "Set from e2e test",
        "E2E patchedStatus",
        "Checking that patched status has been applied",
    )?;

    // Patching the PV's status
    let patch = json!({"status": {"message": "StatusPatched", "reason": "E2E patchStatus"}});
    let patched_pv = pvs
        .patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .with_context(|| format!("Failed to patch {pv_name:?} status."))?;
    let status = patched_pv.status.clone().unwrap_or_default();
    ensure!(
        status.reason.as_deref() == Some("E2E patchStatus"),
        "Checking that patched status has been applied: reason {:?}",
        status.reason
    );
    ensure!(
        status.message.as_deref() == Some("StatusPatched"),
        "Checking that patched status has been applied: message {:?}",
        status.message
    );

    // Updating the PVC's status
    let updated_pvc = update_retrying(&pvcs, &pvc_name, true, |p: &mut PersistentVolumeClaim| {
        p.status
            .get_or_insert_default()
            .conditions
            .get_or_insert_default()
            .push(PersistentVolumeClaimCondition {
                type_: "StatusUpdated".into(),
                status: "True".into(),
                reason: Some("E2E updateStatus".into()),
                message: Some("Set from e2e test".into()),
                ..Default::default()
            });
    })
    .await
    .context("Failed to update status.")?;
    expect_claim_condition(
        &updated_pvc,
        "StatusUpdated",
        "Set from e2e test",
        "E2E updateStatus",
        "Checking that updated status has been applied",
    )?;

    // Updating the PV's status
    let updated_pv = update_retrying(pvs, &pv_name, true, |p: &mut PersistentVolume| {
        let status = p.status.get_or_insert_default();
        status.reason = Some("E2E updateStatus".into());
        status.message = Some("StatusUpdated".into());
    })
    .await
    .context("Failed to update status.")?;
    let status = updated_pv.status.clone().unwrap_or_default();
    ensure!(
        status.reason.as_deref() == Some("E2E updateStatus"),
        "Checking that updated status has been applied: reason {:?}",
        status.reason
    );
    ensure!(
        status.message.as_deref() == Some("StatusUpdated"),
        "Checking that updated status has been applied: message {:?}",
        status.message
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// test/e2e/storage/storageclass.go
// ---------------------------------------------------------------------------------------

async fn storageclass_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<StorageClass> = ctx.cluster();
    let mut created = Vec::new();
    let result = storageclass_steps(&api, &mut created).await;
    let cleanup = delete_all(&api, &created).await;
    with_cleanup(result, cleanup)
}

async fn storageclass_steps(
    api: &Api<StorageClass>,
    created: &mut Vec<String>,
) -> anyhow::Result<()> {
    // Creating a StorageClass
    let initial: StorageClass = from(json!({
        "metadata": {"generateName": "e2e-"},
        "provisioner": "e2e-fake-provisioner",
    }))?;
    let sc = api
        .create(&PostParams::default(), &initial)
        .await
        .context("failed to create the requested StorageClass")?;
    created.push(sc.name_any());
    valid_resource_version(&sc)?;

    // Get the StorageClass
    let name = sc.name_any();
    let retrieved = api
        .get(&name)
        .await
        .with_context(|| format!("failed to get StorageClass {name:?}"))?;

    // Patching the StorageClass
    let patched = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {&name: "patched"}}})),
        )
        .await
        .with_context(|| format!("failed to patch StorageClass {name:?}"))?;
    ensure!(
        label_is(&patched, &name, "patched"),
        "checking that patched label has been applied: {:?}",
        patched.labels()
    );
    larger_resource_version(&retrieved, &patched)?;

    // Delete the StorageClass, and confirm it
    api.delete(&name, &DeleteParams::default())
        .await
        .with_context(|| format!("failed to delete StorageClass {name:?}"))?;
    eventually_none(
        api,
        &format!("{name}=patched"),
        &format!("StorageClass {name:?}"),
    )
    .await?;

    // Create a replacement StorageClass
    let replacement: StorageClass = from(json!({
        "metadata": {"generateName": "e2e-v2-"},
        "provisioner": "e2e-fake-provisioner",
    }))?;
    let sc = api
        .create(&PostParams::default(), &replacement)
        .await
        .context("failed to create replacement StorageClass")?;
    created.push(sc.name_any());
    let name = sc.name_any();

    // Updating the StorageClass
    let updated = update_retrying(api, &name, false, |s: &mut StorageClass| {
        s.metadata.labels = Some([(name.clone(), "updated".to_string())].into());
    })
    .await
    .with_context(|| format!("failed to update StorageClass {name:?}"))?;
    ensure!(
        label_is(&updated, &name, "updated"),
        "checking that updated label has been applied: {:?}",
        updated.labels()
    );

    // Listing all StorageClass with the labelSelector
    let selector = format!("{name}=updated");
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .with_context(|| {
            format!("failed to list StorageClasses with the labelSelector: {selector:?}")
        })?;
    ensure!(
        list.items.len() == 1,
        "expected 1 StorageClass, got {}",
        list.items.len()
    );

    // Deleting the StorageClass via DeleteCollection, and confirm it
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&selector),
    )
    .await
    .with_context(|| format!("failed to delete StorageClass {name:?}"))?;
    eventually_none(api, &selector, &format!("StorageClass {name:?}")).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// test/e2e/storage/volume_attachment.go
// ---------------------------------------------------------------------------------------

/// NewVolumeAttachment: `attacher` e2e-test.storage.k8s.io, the PV by name, the node, and
/// (upstream sets them; the server decides) a uid of the name and an attached status.
fn new_volume_attachment(
    name: &str,
    pv: &str,
    node: &str,
    attached: bool,
) -> anyhow::Result<VolumeAttachment> {
    from(json!({
        "metadata": {"uid": name, "name": name},
        "spec": {
            "attacher": "e2e-test.storage.k8s.io",
            "nodeName": node,
            "source": {"persistentVolumeName": pv},
        },
        "status": {"attached": attached},
    }))
}

/// A node of the cluster, picked at random.
async fn random_node(ctx: &Ctx) -> anyhow::Result<String> {
    let nodes: Api<Node> = ctx.cluster();
    let nodes = nodes
        .list(&ListParams::default())
        .await
        .context("failed to list nodes")?;
    ensure!(!nodes.items.is_empty(), "the cluster has no nodes");
    let i = rand::random_range(0..nodes.items.len());
    Ok(nodes.items[i].name_any())
}

/// createVolumeAttachment: a VolumeAttachment of a random name on a random node, not
/// attached; its name is recorded for the cleanup.
async fn create_volume_attachment(
    ctx: &Ctx,
    api: &Api<VolumeAttachment>,
    created: &mut Vec<String>,
) -> anyhow::Result<(String, String)> {
    let rand_uid = format!("e2e-{}", rand_string(5));
    let (name, pv) = (format!("va-{rand_uid}"), format!("pv-{rand_uid}"));
    let node = random_node(ctx).await?;
    let va = new_volume_attachment(&name, &pv, &node, false)?;
    let created_va = api
        .create(&PostParams::default(), &va)
        .await
        .with_context(|| format!("failed to create VolumeAttachment {name:?}"))?;
    created.push(created_va.name_any());
    ensure!(
        created_va.name_any() == name,
        "Checking that the created VolumeAttachment has the correct name: {}",
        created_va.name_any()
    );
    Ok((name, node))
}

async fn volumeattachment_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<VolumeAttachment> = ctx.cluster();
    let mut created = Vec::new();
    let result = volumeattachment_lifecycle_steps(&ctx, &api, &mut created).await;
    let cleanup = delete_all(&api, &created).await;
    with_cleanup(result, cleanup)
}

async fn volumeattachment_lifecycle_steps(
    ctx: &Ctx,
    api: &Api<VolumeAttachment>,
    created: &mut Vec<String>,
) -> anyhow::Result<()> {
    let (first, node) = create_volume_attachment(ctx, api, created).await?;

    // Get the VolumeAttachment
    let retrieved = api
        .get(&first)
        .await
        .with_context(|| format!("failed to get VolumeAttachment {first:?} on node {node:?}"))?;
    ensure!(
        retrieved.name_any() == first,
        "Checking that retrieved VolumeAttachment has the correct name: {}",
        retrieved.name_any()
    );
    valid_resource_version(&retrieved)?;

    // Patch the VolumeAttachment
    let patched = api
        .patch(
            &first,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {&first: "patched"}}})),
        )
        .await
        .with_context(|| format!("failed to patch VolumeAttachment {first:?}"))?;
    ensure!(
        label_is(&patched, &first, "patched"),
        "Checking that patched label has been applied: {:?}",
        patched.labels()
    );
    larger_resource_version(&retrieved, &patched)?;

    // List VolumeAttachments with the patched label
    let patched_selector = format!("{first}=patched");
    let list = api
        .list(&ListParams::default().labels(&patched_selector))
        .await
        .context("failed to list VolumeAttachments")?;
    ensure!(
        list.items.len() == 1,
        "expected 1 VolumeAttachment, got {}",
        list.items.len()
    );

    // Delete the VolumeAttachment, and confirm it
    api.delete(&first, &DeleteParams::default())
        .await
        .with_context(|| format!("failed to delete VolumeAttachment {first:?}"))?;
    eventually_none(
        api,
        &patched_selector,
        &format!("VolumeAttachment {first:?}"),
    )
    .await?;

    // Update a second, and a third, VolumeAttachment with the label
    let updated_selector = "va-e2e=updated";
    for _ in 0..2 {
        let (name, node) = create_volume_attachment(ctx, api, created).await?;
        let updated = update_retrying(api, &name, false, |v: &mut VolumeAttachment| {
            v.metadata.labels = Some([("va-e2e".to_string(), "updated".to_string())].into());
        })
        .await
        .with_context(|| format!("failed to update VolumeAttachment {name:?} on node {node:?}"))?;
        ensure!(
            label_is(&updated, "va-e2e", "updated"),
            "Checking that updated label has been applied: {:?}",
            updated.labels()
        );
    }

    // DeleteCollection of VolumeAttachments with the label, and confirm it
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(updated_selector),
    )
    .await
    .context("failed to delete VolumeAttachment collection")?;
    eventually_none(api, updated_selector, "VolumeAttachments").await?;
    Ok(())
}

async fn volumeattachment_status(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<VolumeAttachment> = ctx.cluster();
    let rand_uid = format!("e2e-{}", rand_string(5));
    let names = [format!("va-{rand_uid}")];
    let result =
        volumeattachment_status_steps(&ctx, &api, &names[0], &format!("pv-{rand_uid}")).await;
    let cleanup = delete_all(&api, &names).await;
    with_cleanup(result, cleanup)
}

async fn volumeattachment_status_steps(
    ctx: &Ctx,
    api: &Api<VolumeAttachment>,
    name: &str,
    pv: &str,
) -> anyhow::Result<()> {
    let node = random_node(ctx).await?;
    let attached = |v: &VolumeAttachment| v.status.as_ref().is_some_and(|s| s.attached);

    // Create the VolumeAttachment
    let va = new_volume_attachment(name, pv, &node, false)?;
    let created = api
        .create(&PostParams::default(), &va)
        .await
        .with_context(|| format!("failed to create VolumeAttachment {name:?}"))?;
    ensure!(
        created.name_any() == name,
        "Checking that the created VolumeAttachment has the correct name: {}",
        created.name_any()
    );

    // Patch the VolumeAttachment
    let patched = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {name: "patched"}}})),
        )
        .await
        .with_context(|| format!("failed to patch VolumeAttachment {name:?}"))?;
    ensure!(
        label_is(&patched, name, "patched"),
        "Checking that patched label has been applied: {:?}",
        patched.labels()
    );
    let patched_selector = format!("{name}=patched");

    // Reading its status
    let retrieved: VolumeAttachment = ctx
        .get_json(&format!(
            "/apis/storage.k8s.io/v1/volumeattachments/{name}/status"
        ))
        .await
        .with_context(|| format!("Failed to fetch the status of {name:?} VolumeAttachment"))?;
    ensure!(
        !attached(&retrieved),
        "Checking that the VolumeAttachment status has been read: {:?}",
        retrieved.status
    );

    // Patching its status
    let va_patched = api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"attached": true}})),
        )
        .await
        .context("Failed to patch status.")?;
    ensure!(
        attached(&va_patched),
        "Checking that the VolumeAttachment status has been patched: {:?}",
        va_patched.status
    );

    // Updating its status
    let updated = update_retrying(api, name, true, |v: &mut VolumeAttachment| {
        v.status.get_or_insert_default().attached = false;
    })
    .await
    .context("Failed to update status.")?;
    ensure!(
        !attached(&updated),
        "Checking that the VolumeAttachment status has been updated: {:?}",
        updated.status
    );

    // Delete the VolumeAttachment, and confirm it
    api.delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("failed to delete VolumeAttachment {name:?} on node {node:?}"))?;
    eventually_none(
        api,
        &patched_selector,
        &format!("VolumeAttachment {name:?}"),
    )
    .await?;
    Ok(())
}

/// endpointslicemirroring.go "should mirror a custom Endpoints resource through create update
/// and delete": Endpoints kept by hand for a selector-less service are mirrored into an
/// EndpointSlice, through their creation, an update and their deletion (each within upstream's
/// 12 s).
async fn endpointslice_mirroring(ctx: Ctx) -> anyhow::Result<()> {
    let services: Api<Service> = ctx.namespaced();
    let endpoints_api: Api<Endpoints> = ctx.namespaced();
    let slices: Api<EndpointSlice> = ctx.namespaced();
    let svc = services
        .create(
            &PostParams::default(),
            &from(json!({
                "metadata": {"name": "example-custom-endpoints"},
                "spec": {"ports": [{"name": "example", "port": 80, "protocol": "TCP"}]},
            }))?,
        )
        .await?;
    let name = svc.name_any();
    let mut endpoints: Endpoints = from(json!({
        "metadata": {"name": name},
        "subsets": [{"ports": [{"port": 80}], "addresses": [{"ip": "10.1.2.3"}]}],
    }))?;
    let selector = format!("kubernetes.io/service-name={name}");
    let list = || async {
        anyhow::Ok(
            slices
                .list(&ListParams::default().labels(&selector))
                .await?
                .items,
        )
    };
    // One port 80 and one endpoint of one address, or why not.
    let check = |slice: &EndpointSlice, ip: &str| -> Result<(), String> {
        let ports = slice.ports.as_deref().unwrap_or_default();
        if ports.len() != 1 {
            return Err(format!(
                "Expected EndpointSlice to have 1 Port, got {}",
                ports.len()
            ));
        }
        if ports[0].port != Some(80) {
            return Err(format!("Expected port to be 80, got {:?}", ports[0].port));
        }
        if slice.endpoints.len() != 1 {
            return Err(format!(
                "Expected EndpointSlice to have 1 endpoints, got {}",
                slice.endpoints.len()
            ));
        }
        let addresses = &slice.endpoints[0].addresses;
        if addresses.len() != 1 {
            return Err(format!(
                "Expected EndpointSlice endpoint to have 1 address, got {}",
                addresses.len()
            ));
        }
        if addresses[0] != ip {
            return Err(format!(
                "Expected EndpointSlice to have {ip} as address, got {}",
                addresses[0]
            ));
        }
        Ok(())
    };
    let wait = Duration::from_secs(12);
    let failed = |e: anyhow::Error| {
        anyhow!(
            "Did not find matching EndpointSlice for {}/{name}: {e:#}",
            ctx.namespace
        )
    };

    // Mirroring a new custom Endpoint: every slice made is valid (a second one may appear
    // when the controller's cache lags).
    endpoints = endpoints_api
        .create(&PostParams::default(), &endpoints)
        .await
        .context("Unexpected error creating Endpoints")?;
    eventually(wait, "at least 1 EndpointSlice to exist", || async {
        let items = list().await?;
        for slice in &items {
            check(slice, "10.1.2.3").map_err(|e| anyhow!(e))?;
        }
        Ok((!items.is_empty()).then_some(()))
    })
    .await
    .map_err(failed)?;

    // Mirroring an update to a custom Endpoint.
    if let Some(subset) = endpoints.subsets.as_mut().and_then(|s| s.first_mut()) {
        subset.addresses = Some(vec![from(json!({"ip": "10.2.3.4"}))?]);
    }
    endpoints_api
        .replace(&name, &PostParams::default(), &endpoints)
        .await
        .context("Unexpected error updating Endpoints")?;
    eventually(wait, "1 EndpointSlice with 10.2.3.4", || async {
        let items = list().await?;
        Ok((items.len() == 1 && check(&items[0], "10.2.3.4").is_ok()).then_some(()))
    })
    .await
    .map_err(failed)?;

    // Mirroring deletion of a custom Endpoint.
    endpoints_api
        .delete(&name, &DeleteParams::default())
        .await
        .context("Unexpected error deleting Endpoints")?;
    eventually(wait, "0 EndpointSlices to exist", || async {
        Ok(list().await?.is_empty().then_some(()))
    })
    .await
    .map_err(failed)?;
    Ok(())
}
