//! The service-cidr controller (upstream's pkg/controller/servicecidrs): every ServiceCIDR
//! carries the `networking.k8s.io/service-cidr-finalizer` and is marked Ready, which lets the
//! API server hand out ClusterIPs from it. A ServiceCIDR being deleted keeps its finalizer
//! while an IPAddress the API server allocated lies in it and in no other ServiceCIDR (the
//! IP would be orphaned), marked Ready=False, reason Terminating; once none does, and 10 s
//! after the deletion began (for every API server to stop allocating from it), the finalizer
//! goes.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{IPAddress, ServiceCIDR};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::Informers;
use crate::util::{Error, drive, is_status};

pub const FINALIZER: &str = "networking.k8s.io/service-cidr-finalizer";
/// Upstream's controller name, the field manager of the status it applies.
const MANAGER: &str = "service-cidr-controller";
/// The IPAddresses the API server's allocator made (upstream's ipallocator.ControllerName).
pub const MANAGED_BY: &str = "ipallocator.k8s.io";
/// Upstream's deletionGracePeriod.
const DELETION_GRACE: jiff::SignedDuration = jiff::SignedDuration::from_secs(10);
const BLOCKED: &str = "There are still IPAddresses referencing the ServiceCIDR, please remove them or create a new ServiceCIDR";

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let cidrs = informers.servicecidrs.store();
    let (for_ips, for_cidrs) = (cidrs.clone(), cidrs.clone());
    let controller = Controller::for_stream(informers.servicecidrs.changes(), cidrs)
        // An IPAddress may block, or stop blocking, the deletion of the ServiceCIDRs it is in;
        // a ServiceCIDR added or gone may do so for those it overlaps.
        .watches_stream(informers.ipaddresses.changes(), move |ip: IPAddress| {
            let ip = address(&ip);
            refs(&for_ips, |nets| {
                ip.is_some_and(|ip| nets.iter().any(|n| n.contains(&ip)))
            })
        })
        .watches_stream(informers.servicecidrs.changes(), move |c: ServiceCIDR| {
            let mine = networks(&c);
            refs(&for_cidrs, |nets| {
                nets.iter()
                    .any(|n| mine.iter().any(|m| n.contains(m) || m.contains(n)))
            })
        });
    drive(
        "servicecidrs",
        controller,
        reconcile,
        Arc::new(Ctx { client, informers }),
    )
    .await
}

/// The IP an IPAddress is named by.
fn address(ip: &IPAddress) -> Option<IpAddr> {
    ip.metadata.name.as_deref()?.parse().ok()
}

fn networks(cidr: &ServiceCIDR) -> Vec<IpNet> {
    let listed = cidr.spec.as_ref().and_then(|s| s.cidrs.as_ref());
    listed
        .into_iter()
        .flatten()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// The ServiceCIDRs whose networks `matches`.
fn refs(
    store: &Store<ServiceCIDR>,
    matches: impl Fn(&[IpNet]) -> bool,
) -> Vec<ObjectRef<ServiceCIDR>> {
    store
        .state()
        .iter()
        .filter(|c| matches(&networks(c)))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Whether deleting `cidr` would orphan an IPAddress the API server allocated (upstream's
/// canDeleteCIDR): none can when another ServiceCIDR holds each of its networks; otherwise
/// one does when it lies in `cidr` and in no other ServiceCIDR.
fn orphans(cidr: &ServiceCIDR, ctx: &Ctx) -> bool {
    let name = cidr.name_any();
    let mine = networks(cidr);
    let others: Vec<Vec<IpNet>> = ctx
        .informers
        .servicecidrs
        .store()
        .state()
        .iter()
        .filter(|c| c.name_any() != name)
        .map(|c| networks(c))
        .collect();
    let held_elsewhere = |within: &dyn Fn(&IpNet) -> bool| others.iter().flatten().any(within);
    if mine.iter().all(|m| held_elsewhere(&|n| n.contains(m))) {
        return false;
    }
    ctx.informers.ipaddresses.store().state().iter().any(|ip| {
        let Some(ip) = address(ip) else {
            return false;
        };
        mine.iter().any(|m| m.contains(&ip)) && !held_elsewhere(&|n| n.contains(&ip))
    })
}

/// The Ready condition's status and reason.
fn ready(cidr: &ServiceCIDR) -> Option<(&str, &str)> {
    let conditions = cidr.status.as_ref()?.conditions.as_ref()?;
    let c = conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.as_str(), c.reason.as_str()))
}

/// Applies the Ready condition, as upstream's controller does (forced, as its own manager).
async fn set_ready(
    api: &Api<ServiceCIDR>,
    name: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "ServiceCIDR",
        "metadata": {"name": name},
        "status": {"conditions": [{
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": Time(jiff::Timestamp::now()),
        }]},
    });
    let params = PatchParams::apply(MANAGER).force();
    match api.patch_status(name, &params, &Patch::Apply(patch)).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn patch_finalizers(
    api: &Api<ServiceCIDR>,
    name: &str,
    patch: serde_json::Value,
) -> Result<(), Error> {
    match api
        .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn reconcile(cidr: Arc<ServiceCIDR>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = cidr.name_any();
    let api: Api<ServiceCIDR> = Api::all(ctx.client.clone());
    let finalized = cidr.finalizers().iter().any(|f| f == FINALIZER);
    if let Some(since) = &cidr.metadata.deletion_timestamp {
        if !finalized {
            return Ok(Action::await_change());
        }
        if orphans(&cidr, &ctx) {
            if ready(&cidr) != Some(("False", "Terminating")) {
                set_ready(&api, &name, "False", "Terminating", BLOCKED).await?;
            }
            return Ok(Action::await_change());
        }
        let left = DELETION_GRACE - jiff::Timestamp::now().duration_since(since.0);
        if left.is_positive() {
            return Ok(Action::requeue(left.unsigned_abs()));
        }
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [FINALIZER]}});
        patch_finalizers(&api, &name, patch).await?;
        return Ok(Action::await_change());
    }
    if !finalized {
        patch_finalizers(
            &api,
            &name,
            json!({"metadata": {"finalizers": [FINALIZER]}}),
        )
        .await?;
    }
    if ready(&cidr).map(|(status, _)| status) != Some("True") {
        set_ready(&api, &name, "True", "", "Kubernetes Service CIDR is ready").await?;
    }
    Ok(Action::await_change())
}
