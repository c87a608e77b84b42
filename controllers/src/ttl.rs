//! The ttl-after-finished controller: a Job with `ttlSecondsAfterFinished` is deleted (with
//! its pods, in the foreground) that long after it completed or failed.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};

use crate::Informers;
use crate::util::{Error, drive, is_status};

struct Ctx {
    client: kube::Client,
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let controller = Controller::for_stream(informers.jobs.changes(), informers.jobs.store());
    drive(
        "ttl-after-finished",
        controller,
        reconcile,
        Arc::new(Ctx { client }),
    )
    .await
}

/// When the job finished, if it did.
fn finished_at(job: &Job) -> Option<jiff::Timestamp> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or_else(jiff::Timestamp::now, |t| t.0)
        })
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ttl = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
    let (Some(ttl), Some(at), None) = (ttl, finished_at(&job), &job.metadata.deletion_timestamp)
    else {
        return Ok(Action::await_change());
    };
    let expires = at + jiff::SignedDuration::from_secs(ttl.into());
    let now = jiff::Timestamp::now();
    if expires > now {
        return Ok(Action::requeue(
            expires.duration_since(now).unsigned_abs() + Duration::from_millis(50),
        ));
    }
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&job.name_any(), &params).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}
