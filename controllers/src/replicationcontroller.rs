//! The replicationcontroller controller: a ReplicationController is run as the ReplicaSet
//! it would be (its map selector as matchLabels, the same template and counts), through the
//! replicaset controller's logic, owning its pods as itself.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    ReplicaSet, ReplicaSetCondition, ReplicaSetSpec, ReplicaSetStatus,
};
use k8s_openapi::api::core::v1::ReplicationController;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::controller::{Action, Controller};

use crate::Informers;
use crate::replicaset::{Expectations, Owner, sync};
use crate::util::{Error, drive};

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
    expectations: Expectations,
    events: kelp_client::events::Recorder,
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let controller = Controller::for_stream(
        informers.replicationcontrollers.changes(),
        informers.replicationcontrollers.store(),
    )
    .owns_stream(informers.pods.changes());
    let ctx = Arc::new(Ctx {
        events: kelp_client::events::Recorder::spawn(
            client.clone(),
            "replication-controller",
            String::new(),
        ),
        client,
        informers,
        expectations: Expectations::default(),
    });
    drive("replicationcontroller", controller, reconcile, ctx).await
}

/// The ReplicaSet a ReplicationController amounts to (an empty selector is the template's
/// labels, as upstream defaults it).
fn as_replicaset(rc: &ReplicationController) -> ReplicaSet {
    let spec = rc.spec.clone().unwrap_or_default();
    let selector = spec
        .selector
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| spec.template.as_ref()?.metadata.as_ref()?.labels.clone());
    let status = rc.status.clone().map(|s| ReplicaSetStatus {
        replicas: s.replicas,
        fully_labeled_replicas: s.fully_labeled_replicas,
        ready_replicas: s.ready_replicas,
        available_replicas: s.available_replicas,
        observed_generation: s.observed_generation,
        conditions: s.conditions.map(|cs| {
            cs.into_iter()
                .map(|c| ReplicaSetCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    last_transition_time: c.last_transition_time,
                })
                .collect()
        }),
        terminating_replicas: None,
    });
    ReplicaSet {
        metadata: rc.metadata.clone(),
        spec: Some(ReplicaSetSpec {
            replicas: spec.replicas,
            min_ready_seconds: spec.min_ready_seconds,
            selector: LabelSelector {
                match_labels: selector,
                match_expressions: None,
            },
            template: spec.template,
        }),
        status,
    }
}

async fn reconcile(rc: Arc<ReplicationController>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let rs = Arc::new(as_replicaset(&rc));
    sync(
        rs,
        Owner::ReplicationController(rc),
        &ctx.client,
        &ctx.informers,
        &ctx.expectations,
        &ctx.events,
    )
    .await
}
