//! The disruption controller: each PodDisruptionBudget's status from the pods it selects —
//! expectedPods, currentHealthy (Ready, not being deleted), desiredHealthy (minAvailable, or
//! the expected count less maxUnavailable, percentages of the owning controllers' scale) and
//! disruptionsAllowed, which the eviction API spends — with the DisruptionAllowed condition.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;

use crate::Informers;
use crate::util::{self, Error, drive, is_status};

/// Entries of disruptedPods older than this are dropped (upstream's DeletionTimeout).
const DISRUPTED_TIMEOUT: i64 = 120;

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let i = informers.clone();
    let controller = Controller::for_stream(informers.pdbs.changes(), informers.pdbs.store())
        .watches_stream(informers.pods.changes(), move |pod: Pod| {
            let ns = pod.metadata.namespace.clone();
            i.pdbs
                .store()
                .state()
                .iter()
                .filter(|b| b.metadata.namespace == ns)
                .filter(|b| {
                    util::selects(
                        b.spec.as_ref().and_then(|s| s.selector.as_ref()),
                        pod.metadata.labels.as_ref(),
                    )
                })
                .map(|b| ObjectRef::from_obj(&**b))
                .collect::<Vec<_>>()
        });
    drive(
        "disruption",
        controller,
        reconcile,
        Arc::new(Ctx { client, informers }),
    )
    .await
}

/// The replicas the pods' controllers want (Deployments through their ReplicaSets).
fn expected_scale(informers: &Informers, ns: &str, pods: &[Arc<Pod>]) -> i32 {
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0;
    for pod in pods {
        let Some(owner) = util::controller_of(&pod.metadata) else {
            continue;
        };
        if !seen.insert(owner.uid.clone()) {
            continue;
        }
        match owner.kind.as_str() {
            "ReplicaSet" => {
                let rs = informers
                    .replicasets
                    .store()
                    .get(&ObjectRef::new(&owner.name).within(ns));
                let deployment = rs.as_ref().and_then(|rs| {
                    let d = util::controller_of(&rs.metadata).filter(|o| o.kind == "Deployment")?;
                    informers
                        .deployments
                        .store()
                        .get(&ObjectRef::new(&d.name).within(ns))
                });
                total += match (deployment, rs) {
                    (Some(d), _) => d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    (None, Some(rs)) => rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    _ => 0,
                };
            }
            "StatefulSet" => {
                if let Some(s) = informers
                    .statefulsets
                    .store()
                    .get(&ObjectRef::new(&owner.name).within(ns))
                {
                    total += s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                }
            }
            _ => total += 1,
        }
    }
    total
}

fn scaled(v: &IntOrString, total: i32) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let p: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            (p * total as f64 / 100.0).ceil() as i32
        }
    }
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = pdb.namespace().unwrap_or_default();
    let spec = pdb.spec.clone().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = ctx
        .informers
        .pods
        .store()
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(&ns))
        .filter(|p| util::selects(spec.selector.as_ref(), p.metadata.labels.as_ref()))
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .collect();
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && util::ready_since(p).is_some())
        .count() as i32;
    let (expected, desired) = match (&spec.min_available, &spec.max_unavailable) {
        (Some(IntOrString::Int(n)), _) => (pods.len() as i32, *n),
        (Some(pct), _) => {
            let total = expected_scale(&ctx.informers, &ns, &pods);
            (total, scaled(pct, total))
        }
        (None, Some(max)) => {
            let total = expected_scale(&ctx.informers, &ns, &pods);
            (total, (total - scaled(max, total)).max(0))
        }
        (None, None) => (pods.len() as i32, 0),
    };
    let old = pdb.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let disrupted: std::collections::BTreeMap<String, Time> = old
        .disrupted_pods
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, at)| {
            now.duration_since(at.0).as_secs() < DISRUPTED_TIMEOUT
                && pods
                    .iter()
                    .any(|p| &p.name_any() == name && p.metadata.deletion_timestamp.is_none())
        })
        .collect();
    let allowed = (healthy - desired - disrupted.len() as i32).max(0);
    let (status, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let keep = conditions
        .iter()
        .find(|c| c.type_ == "DisruptionAllowed")
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != "DisruptionAllowed");
    conditions.push(Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message: String::new(),
        observed_generation: pdb.metadata.generation,
        last_transition_time: keep.unwrap_or(Time(now)),
    });
    let new = PodDisruptionBudgetStatus {
        conditions: Some(conditions),
        current_healthy: healthy,
        desired_healthy: desired,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        disruptions_allowed: allowed,
        expected_pods: expected,
        observed_generation: pdb.metadata.generation,
    };
    if pdb.status.as_ref() != Some(&new) {
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
        let mut updated = (*pdb).clone();
        updated.status = Some(new);
        match api
            .replace_status(&pdb.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => {
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}
