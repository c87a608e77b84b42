//! The replicaset controller: keeps `spec.replicas` active pods from the template, adopts
//! orphans its selector matches and releases pods it no longer matches, and reports the
//! counts in status. Creations and deletions it is waiting to see are its expectations:
//! until the pod cache shows them it does not count again (no duplicate pods).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kelp_client::events::Recorder;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use crate::Informers;
use crate::util::{self, Error, drive, is_status};

/// How many pod writes one reconcile has in flight.
/// How long an unobserved creation or deletion is waited for before counting again.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(60);

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
    expectations: Expectations,
    events: Recorder,
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let controller = Controller::for_stream(
        informers.replicasets.changes(),
        informers.replicasets.store(),
    )
    .owns_stream(informers.pods.changes());
    let ctx = Arc::new(Ctx {
        events: Recorder::spawn(client.clone(), "replicaset-controller", String::new()),
        client,
        informers,
        expectations: Expectations::default(),
    });
    drive("replicaset", controller, reconcile, ctx).await
}

/// Pods a controller made or deleted and has not yet seen in its cache, per owner.
#[derive(Default)]
pub struct Expectations(Mutex<HashMap<String, Pending>>);

struct Pending {
    adds: HashSet<String>,
    deletes: HashSet<String>,
    since: Instant,
}

impl Expectations {
    /// Whether the cache shows everything expected for `key` (or the wait timed out).
    pub fn satisfied(
        &self,
        key: &str,
        ns: &str,
        pods: &kube::runtime::reflector::Store<Pod>,
    ) -> bool {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = all.get(key) else { return true };
        let seen = |name: &String| pods.get(&ObjectRef::new(name).within(ns));
        let done = p.since.elapsed() > EXPECTATION_TIMEOUT
            || (p.adds.iter().all(|n| seen(n).is_some())
                && p.deletes
                    .iter()
                    .all(|n| seen(n).is_none_or(|p| p.metadata.deletion_timestamp.is_some())));
        if done {
            all.remove(key);
        }
        done
    }

    pub fn expect(&self, key: &str, adds: Vec<String>, deletes: Vec<String>) {
        if adds.is_empty() && deletes.is_empty() {
            return;
        }
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(
            key.to_string(),
            Pending {
                adds: adds.into_iter().collect(),
                deletes: deletes.into_iter().collect(),
                since: Instant::now(),
            },
        );
    }
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let owner = Owner::ReplicaSet(rs.clone());
    sync(
        rs,
        owner,
        &ctx.client,
        &ctx.informers,
        &ctx.expectations,
        &ctx.events,
    )
    .await
}

/// What owns the pods: a ReplicaSet, or a ReplicationController seen as one (the same
/// controller logic, upstream shares it too).
pub(crate) enum Owner {
    ReplicaSet(Arc<ReplicaSet>),
    ReplicationController(Arc<k8s_openapi::api::core::v1::ReplicationController>),
}

impl Owner {
    fn object_ref(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        match self {
            Owner::ReplicaSet(rs) => rs.object_ref(&()),
            Owner::ReplicationController(rc) => rc.object_ref(&()),
        }
    }

    fn reference(&self) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        match self {
            Owner::ReplicaSet(rs) => util::controller_ref(&**rs),
            Owner::ReplicationController(rc) => util::controller_ref(&**rc),
        }
    }

    /// Writes the counts; a conflict or a vanished owner is left to the next event.
    async fn write_status(
        &self,
        client: &kube::Client,
        status: ReplicaSetStatus,
    ) -> anyhow::Result<()> {
        let result = match self {
            Owner::ReplicaSet(rs) => {
                let api: Api<ReplicaSet> =
                    Api::namespaced(client.clone(), &rs.namespace().unwrap_or_default());
                let mut updated = (**rs).clone();
                updated.status = Some(status);
                api.replace_status(&rs.name_any(), &PostParams::default(), &updated)
                    .await
                    .map(|_| ())
            }
            Owner::ReplicationController(rc) => {
                use k8s_openapi::api::core::v1::{
                    ReplicationController, ReplicationControllerCondition,
                    ReplicationControllerStatus,
                };
                let api: Api<ReplicationController> =
                    Api::namespaced(client.clone(), &rc.namespace().unwrap_or_default());
                let mut updated = (**rc).clone();
                updated.status = Some(ReplicationControllerStatus {
                    replicas: status.replicas,
                    fully_labeled_replicas: status.fully_labeled_replicas,
                    ready_replicas: status.ready_replicas,
                    available_replicas: status.available_replicas,
                    observed_generation: status.observed_generation,
                    conditions: status.conditions.map(|cs| {
                        cs.into_iter()
                            .map(|c| ReplicationControllerCondition {
                                type_: c.type_,
                                status: c.status,
                                reason: c.reason,
                                message: c.message,
                                last_transition_time: c.last_transition_time,
                            })
                            .collect()
                    }),
                });
                api.replace_status(&rc.name_any(), &PostParams::default(), &updated)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// One owner's reconcile; `rs` is the owner as a ReplicaSet.
pub(crate) async fn sync(
    rs: Arc<ReplicaSet>,
    owner: Owner,
    client: &kube::Client,
    informers: &Informers,
    expectations: &Expectations,
    events: &Recorder,
) -> Result<Action, Error> {
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = rs.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", rs.name_any());
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let store = informers.pods.store();
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    for pod in store.state() {
        if pod.metadata.namespace.as_deref() != Some(&ns) {
            continue;
        }
        let matches = util::selects(Some(&spec.selector), pod.metadata.labels.as_ref());
        match util::controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    owned.push(pod);
                } else {
                    util::release(&pods_api, &pod, &uid).await?;
                }
            }
            None if matches
                && util::is_active(&pod)
                && util::adopt(&pods_api, &pod, owner.reference()).await? =>
            {
                owned.push(pod);
            }
            _ => {}
        }
    }
    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| util::is_active(p)).collect();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    let mut failure = None;
    let report = util::Report {
        events,
        regarding: owner.object_ref(),
    };
    if expectations.satisfied(&key, &ns, &store) {
        if active.len() < want {
            let template = spec.template.clone().unwrap_or_default();
            let pod = Pod {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{}-", rs.name_any())),
                    namespace: Some(ns.clone()),
                    labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                    annotations: template
                        .metadata
                        .as_ref()
                        .and_then(|m| m.annotations.clone()),
                    owner_references: Some(vec![owner.reference()]),
                    ..Default::default()
                },
                spec: template.spec.clone(),
                ..Default::default()
            };
            let (made, errors) = util::create_pods(
                &pods_api,
                std::iter::repeat_n(pod, want - active.len()),
                &report,
            )
            .await;
            if let Some(e) = errors.last() {
                failure = Some(util::api_message(e));
            }
            expectations.expect(&key, made, vec![]);
        } else if active.len() > want {
            let mut doomed = active.clone();
            doomed.sort_by_key(|p| deletion_rank(p));
            doomed.truncate(active.len() - want);
            let names: Vec<String> = doomed.iter().map(|p| p.name_any()).collect();
            if let Some(e) = util::delete_pods(&pods_api, names.clone(), &report)
                .await
                .last()
            {
                failure = Some(util::api_message(e));
            }
            expectations.expect(&key, vec![], names);
        }
    }
    let next = update_status(client, &rs, &owner, &active, failure.as_deref()).await?;
    if failure.is_some() {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    Ok(next.map(Action::requeue).unwrap_or_else(|| {
        if expectations.satisfied(&key, &ns, &store) {
            Action::await_change()
        } else {
            Action::requeue(Duration::from_secs(1))
        }
    }))
}

/// Which pods go first when scaling down (upstream's ActivePods order): unscheduled before
/// scheduled, pending before running, not ready before ready, the newest first.
fn deletion_rank(pod: &Pod) -> (bool, u8, bool, std::cmp::Reverse<Option<jiff::Timestamp>>) {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        scheduled,
        phase,
        util::ready_since(pod).is_some(),
        std::cmp::Reverse(created),
    )
}

/// Writes the replica counts (when they changed); returns when to look again for pods that
/// are about to become available.
async fn update_status(
    client: &kube::Client,
    rs: &ReplicaSet,
    owner: &Owner,
    active: &[&Arc<Pod>],
    failure: Option<&str>,
) -> anyhow::Result<Option<Duration>> {
    let spec = rs.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut next: Option<Duration> = None;
    let mut available = 0;
    for p in active {
        match util::available(p, min_ready) {
            Ok(()) => available += 1,
            Err(Some(wait)) => next = Some(next.map_or(wait, |n| n.min(wait))),
            Err(None) => {}
        }
    }
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions: Vec<_> = old
        .conditions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "ReplicaFailure")
        .collect();
    if let Some(message) = failure {
        conditions.push(k8s_openapi::api::apps::v1::ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            message: Some(message.into()),
            last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::now(),
            )),
        });
    }
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(
            active
                .iter()
                .filter(|p| {
                    let labels = p.metadata.labels.clone().unwrap_or_default();
                    template_labels
                        .iter()
                        .all(|(k, v)| labels.get(k) == Some(v))
                })
                .count() as i32,
        ),
        ready_replicas: Some(
            active
                .iter()
                .filter(|p| util::ready_since(p).is_some())
                .count() as i32,
        ),
        available_replicas: Some(available),
        observed_generation: rs.metadata.generation,
        conditions: if conditions.is_empty() {
            None
        } else {
            Some(conditions)
        },
        ..Default::default()
    };
    let same = |a: &ReplicaSetStatus, b: &ReplicaSetStatus| {
        a.replicas == b.replicas
            && a.fully_labeled_replicas.unwrap_or(0) == b.fully_labeled_replicas.unwrap_or(0)
            && a.ready_replicas.unwrap_or(0) == b.ready_replicas.unwrap_or(0)
            && a.available_replicas.unwrap_or(0) == b.available_replicas.unwrap_or(0)
            && a.observed_generation == b.observed_generation
            && a.conditions.as_ref().map(Vec::len) == b.conditions.as_ref().map(Vec::len)
    };
    if !same(&old, &status) {
        owner.write_status(client, status).await?;
    }
    Ok(next)
}
