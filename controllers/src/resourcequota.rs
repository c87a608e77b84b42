//! The resourcequota controller: each ResourceQuota's `status.used`, recounted from what is
//! in its namespace (admission adds what it lets in; this brings deletions and everything
//! else back into the count), for the resources its `spec.hard` names, with its scopes, by
//! the same evaluators admission uses. `count/<resource>.<group>` works for any served
//! resource (found by discovery).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota, ResourceQuotaStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;
use kelp_admission::quantity::Quantity;
use kelp_admission::quota;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::{ApiResource, Discovery};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Mutex;

use crate::Informers;
use crate::util::{Error, drive, is_status};

const RESYNC: Duration = Duration::from_secs(10);

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
    /// (group, plural) → resource, from discovery (refreshed when a name is unknown).
    resources: Mutex<BTreeMap<(String, String), ApiResource>>,
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let i = informers.clone();
    // As upstream's replenishment: a pod's quotas are recounted when it gives usage back
    // (deleted, terminating or finished). New pods were counted by admission, and a recount
    // from a pod cache that has not seen them yet would hand their usage out again.
    // A quota is recounted when its limits change (or were never recorded), not when its
    // usage does: admission writes that as it admits.
    let quotas = informers.quotas.changes().filter(|q| {
        let recount = match q {
            Ok(q) => {
                q.spec.as_ref().and_then(|s| s.hard.as_ref())
                    != q.status.as_ref().and_then(|s| s.hard.as_ref())
            }
            Err(_) => true,
        };
        std::future::ready(recount)
    });
    // And every quota is recounted every RESYNC, which brings what admission cannot see
    // (deleted config maps, secrets, services) back into the count.
    let ticks = futures::stream::unfold((), |()| async {
        tokio::time::sleep(RESYNC).await;
        Some(((), ()))
    });
    let controller = Controller::for_stream(quotas, informers.quotas.store())
        .reconcile_all_on(ticks)
        .watches_stream(informers.pods.changes(), move |pod: Pod| {
            let finished = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Succeeded" || p == "Failed");
            let gone = i.pods.store().get(&ObjectRef::from_obj(&pod)).is_none();
            if !(gone || finished || pod.metadata.deletion_timestamp.is_some()) {
                return Vec::new();
            }
            let ns = pod.metadata.namespace.clone();
            i.quotas
                .store()
                .state()
                .iter()
                .filter(|q| q.metadata.namespace == ns)
                .map(|q| ObjectRef::from_obj(&**q))
                .collect::<Vec<_>>()
        });
    let ctx = Arc::new(Ctx {
        client,
        informers,
        resources: Mutex::new(BTreeMap::new()),
    });
    drive("resourcequota", controller, reconcile, ctx).await
}

/// The (group, plural) a quota'd resource name is counted over.
fn counted_over(name: &str) -> Option<(String, String)> {
    let core = |p: &str| Some((String::new(), p.to_string()));
    match name {
        "pods" | "cpu" | "memory" | "ephemeral-storage" => core("pods"),
        n if n.starts_with("requests.") && n != "requests.storage" => core("pods"),
        n if n.starts_with("limits.") => core("pods"),
        "services" | "services.nodeports" | "services.loadbalancers" => core("services"),
        "requests.storage" | "persistentvolumeclaims" => core("persistentvolumeclaims"),
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => core(name),
        n => {
            let counted = n.strip_prefix("count/")?;
            match counted.split_once('.') {
                Some((plural, group)) => Some((group.to_string(), plural.to_string())),
                None => core(counted),
            }
        }
    }
}

async fn resource(ctx: &Ctx, group: &str, plural: &str) -> Result<Option<ApiResource>, Error> {
    let key = (group.to_string(), plural.to_string());
    let mut known = ctx.resources.lock().await;
    if !known.contains_key(&key) {
        let discovery = Discovery::new(ctx.client.clone()).run().await?;
        for g in discovery.groups() {
            for (r, _) in g.recommended_resources() {
                known.insert((r.group.clone(), r.plural.clone()), r);
            }
        }
    }
    Ok(known.get(&key).cloned())
}

async fn reconcile(rq: Arc<ResourceQuota>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = rq.namespace().unwrap_or_default();
    let hard = rq
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let quota_json = serde_json::to_value(&*rq)?;
    let over: BTreeSet<(String, String)> = hard.keys().filter_map(|k| counted_over(k)).collect();
    let mut used: BTreeMap<String, Quantity> =
        hard.keys().map(|k| (k.clone(), Quantity::zero())).collect();
    for (group, plural) in over {
        let objects: Vec<serde_json::Value> = if group.is_empty() && plural == "pods" {
            ctx.informers
                .pods
                .store()
                .state()
                .iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
                .filter_map(|p| serde_json::to_value(&**p).ok())
                .collect()
        } else {
            let Some(ar) = resource(&ctx, &group, &plural).await? else {
                continue;
            };
            let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
            api.list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect()
        };
        for obj in objects {
            if !quota::in_scope(&quota_json, &plural, &obj) {
                continue;
            }
            for (name, amount) in quota::usage(&group, &plural, &obj) {
                if let Some(total) = used.get_mut(&name) {
                    *total = *total + amount;
                }
            }
        }
    }
    let status = ResourceQuotaStatus {
        hard: Some(hard),
        used: Some(
            used.into_iter()
                .map(|(k, v)| (k, KQuantity(v.to_string())))
                .collect(),
        ),
    };
    if rq.status.as_ref() != Some(&status) {
        let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &ns);
        let mut updated = (*rq).clone();
        updated.status = Some(status);
        match api
            .replace_status(&rq.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => {
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}
