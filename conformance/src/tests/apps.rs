//! [sig-apps], [sig-scheduling] and the workload parts of [sig-api-machinery]: tests that
//! need the control loops and nodes (test/e2e/apps, test/e2e/scheduling,
//! test/e2e/apimachinery/garbage_collector.go, resource_quota.go, namespace.go). On Kelp the
//! nodes are `kelp simulate` ones.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, Pod, ReplicationController, ResourceQuota, ResourceQuotaStatus, Secret,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy, WatchEvent,
    WatchParams,
};
use serde_json::json;

use super::tests;
use crate::framework::from;
use crate::framework::{Events, api_error, eventually};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-apps] Deployment RollingUpdateDeployment should delete old pods and create new ones" => rolling_update_deployment,
        "[sig-apps] Deployment RecreateDeployment should delete old pods and create new ones" => recreate_deployment,
        "[sig-apps] ReplicaSet should adopt matching pods on creation and release no longer matching pods" => replicaset_adopt_release,
        "[sig-apps] ReplicaSet Replicaset should have a working scale subresource" => replicaset_scale,
        "[sig-apps] ReplicationController should adopt matching pods on creation" => rc_adopt,
        "[sig-apps] ReplicationController should release no longer matching pods" => rc_release,
        "[sig-apps] Job should delete a job" => job_delete,
        "[sig-apps] Job should create pods for an Indexed job with completion indexes and specified hostname" => job_indexed,
        "[sig-apps] CronJob should support CronJob API operations" => cronjob_api,
        "[sig-apps] Daemon set [Serial] should run and stop simple daemon" => daemonset_simple,
        "[sig-apps] Daemon set [Serial] should update pod when spec was updated and update strategy is RollingUpdate" => daemonset_rolling,
        "[sig-apps] StatefulSet Basic StatefulSet functionality [StatefulSetBasic] should have a working scale subresource" => statefulset_scale,
        "[sig-apps] DisruptionController should observe PodDisruptionBudget status updated" => pdb_status,
        "[sig-apps] DisruptionController should block an eviction until the PDB is updated to allow it" => pdb_blocks_eviction,
        "[sig-api-machinery] Garbage collector should delete RS created by deployment when not orphaning" => gc_deployment_cascade,
        "[sig-api-machinery] Garbage collector should orphan RS created by deployment when deleteOptions.PropagationPolicy is Orphan" => gc_deployment_orphan,
        "[sig-api-machinery] Garbage collector should delete pods created by rc when not orphaning" => gc_rc_cascade,
        "[sig-api-machinery] Garbage collector should orphan pods created by rc if delete options say so" => gc_rc_orphan,
        "[sig-api-machinery] ResourceQuota should create a ResourceQuota and capture the life of a configMap." => quota_configmap,
        "[sig-api-machinery] ResourceQuota should create a ResourceQuota and capture the life of a secret." => quota_secret,
        "[sig-api-machinery] ResourceQuota should create a ResourceQuota and ensure its status is promptly calculated." => quota_status_promptly,
        "[sig-api-machinery] ResourceQuota should manage the lifecycle of a ResourceQuota" => quota_lifecycle,
        "[sig-api-machinery] ResourceQuota should apply changes to a resourcequota status" => quota_status_changes,
        "[sig-api-machinery] Namespaces [Serial] should ensure that all pods are removed when a namespace is deleted" => namespace_removes_pods,
        "[sig-api-machinery] Namespaces [Serial] should ensure that all services are removed when a namespace is deleted" => namespace_removes_services,
        "[sig-scheduling] SchedulerPredicates [Serial] validates that NodeSelector is respected if not matching" => selector_not_matching,
        "[sig-scheduling] SchedulerPredicates [Serial] validates that NodeSelector is respected if matching" => selector_matching,
    ]
}

const WAIT: Duration = Duration::from_secs(90);

fn template(labels: serde_json::Value, image: &str) -> serde_json::Value {
    json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "httpd", "image": image}]}})
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

async fn pods_with(ctx: &Ctx, selector: &str) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = ctx.namespaced();
    Ok(pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items)
}

/// Waits until `n` pods of the selector are Running (none being deleted).
async fn running(ctx: &Ctx, selector: &str, n: usize) -> anyhow::Result<Vec<Pod>> {
    eventually(WAIT, &format!("{n} running pods {selector}"), || async {
        let pods = pods_with(ctx, selector).await?;
        let live: Vec<Pod> = pods
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        Ok((live.len() == n && live.iter().all(|p| phase(p) == "Running")).then_some(live))
    })
    .await
}

async fn deployment_complete(api: &Api<Deployment>, name: &str) -> anyhow::Result<Deployment> {
    eventually(WAIT, &format!("deployment {name} complete"), || async {
        let d = api.get(name).await?;
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let s = d.status.clone().unwrap_or_default();
        let done = s.observed_generation >= d.metadata.generation
            && s.updated_replicas == Some(want)
            && s.available_replicas == Some(want)
            && s.replicas == Some(want);
        Ok(done.then_some(d))
    })
    .await
}

/// test/e2e/apps/deployment.go testRollingUpdateDeployment
async fn rolling_update_deployment(ctx: Ctx) -> anyhow::Result<()> {
    let labels = json!({"name": "sample-pod", "pod": "httpd"});
    let rss: Api<ReplicaSet> = ctx.namespaced();
    let rs = from(json!({
        "metadata": {"name": "test-rolling-update-controller", "annotations": {"deployment.kubernetes.io/revision": "3546343826724305832"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template(labels.clone(), "httpd:2.4")}
    }))?;
    rss.create(&PostParams::default(), &rs).await?;
    running(&ctx, "name=sample-pod", 1).await?;
    let deployments: Api<Deployment> = ctx.namespaced();
    let d = from(json!({
        "metadata": {"name": "test-rolling-update-deployment"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate"},
            "template": template(json!({"name": "sample-pod", "pod": "httpd"}), "agnhost:2.52")}
    }))?;
    deployments.create(&PostParams::default(), &d).await?;
    let d = deployment_complete(&deployments, "test-rolling-update-deployment").await?;
    let revision = d
        .annotations()
        .get("deployment.kubernetes.io/revision")
        .cloned();
    ensure!(
        revision.as_deref() == Some("3546343826724305833"),
        "the deployment's revision is {revision:?}, not the adopted ReplicaSet's plus one"
    );
    // The old ReplicaSet is adopted and scaled to zero; the new one has the pod.
    let old = rss.get("test-rolling-update-controller").await?;
    ensure!(
        old.owner_references()
            .iter()
            .any(|o| o.kind == "Deployment" && o.controller == Some(true)),
        "the old ReplicaSet was not adopted"
    );
    eventually(WAIT, "the old ReplicaSet scaled down", || async {
        let old = rss.get("test-rolling-update-controller").await?;
        Ok((old.spec.and_then(|s| s.replicas) == Some(0)).then_some(()))
    })
    .await?;
    let all = rss.list(&ListParams::default()).await?.items;
    ensure!(all.len() == 2, "{} ReplicaSets, expected 2", all.len());
    Ok(())
}

/// test/e2e/apps/deployment.go testRecreateDeployment: no new pod runs beside an old one.
async fn recreate_deployment(ctx: Ctx) -> anyhow::Result<()> {
    let labels = json!({"name": "sample-pod-3"});
    let deployments: Api<Deployment> = ctx.namespaced();
    let d = from(json!({
        "metadata": {"name": "test-recreate-deployment"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "strategy": {"type": "Recreate"},
            "template": template(labels.clone(), "agnhost:2.52")}
    }))?;
    deployments.create(&PostParams::default(), &d).await?;
    deployment_complete(&deployments, "test-recreate-deployment").await?;
    let old: BTreeSet<String> = pods_with(&ctx, "name=sample-pod-3")
        .await?
        .iter()
        .map(|p| p.name_any())
        .collect();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "httpd", "image": "httpd:2.4"}]}}}});
    deployments
        .patch(
            "test-recreate-deployment",
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await?;
    // Watch: while an old pod exists, no new pod may exist.
    eventually(WAIT, "the recreated pod", || async {
        let pods = pods_with(&ctx, "name=sample-pod-3").await?;
        let old_left = pods.iter().filter(|p| old.contains(&p.name_any())).count();
        let new: Vec<&Pod> = pods
            .iter()
            .filter(|p| !old.contains(&p.name_any()))
            .collect();
        if old_left > 0 && !new.is_empty() {
            bail!(
                "a new pod {} exists while {old_left} old pods do",
                new[0].name_any()
            );
        }
        Ok((old_left == 0 && new.len() == 1 && phase(new[0]) == "Running").then_some(()))
    })
    .await?;
    deployment_complete(&deployments, "test-recreate-deployment").await?;
    Ok(())
}

/// test/e2e/apps/replica_set.go testRSAdoptMatchingAndReleaseNotMatching
async fn replicaset_adopt_release(ctx: Ctx) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    let name = "pod-adoption-release";
    pods.create(
        &PostParams::default(),
        &from(json!({
            "metadata": {"name": name, "labels": {"name": name}},
            "spec": {"containers": [{"name": name, "image": "httpd:2.4"}]}
        }))?,
    )
    .await?;
    running(&ctx, &format!("name={name}"), 1).await?;
    let rss: Api<ReplicaSet> = ctx.namespaced();
    rss.create(&PostParams::default(), &from(json!({
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"name": name}}, "template": template(json!({"name": name}), "httpd:2.4")}
    }))?)
    .await?;
    let rs_uid = rss.get(name).await?.uid().unwrap_or_default();
    eventually(WAIT, "the orphan pod adopted", || async {
        let p = pods.get(name).await?;
        Ok(p.owner_references()
            .iter()
            .any(|o| o.uid == rs_uid && o.controller == Some(true))
            .then_some(()))
    })
    .await?;
    // Relabelled, the pod is released and replaced.
    let patch = json!({"metadata": {"labels": {"name": "not-matching-name"}}});
    pods.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    eventually(WAIT, "the pod released", || async {
        let p = pods.get(name).await?;
        Ok(p.owner_references()
            .iter()
            .all(|o| o.uid != rs_uid)
            .then_some(()))
    })
    .await?;
    running(&ctx, &format!("name={name}"), 1).await?;
    Ok(())
}

/// test/e2e/apps/replica_set.go testRSScaleSubresources
async fn replicaset_scale(ctx: Ctx) -> anyhow::Result<()> {
    let rss: Api<ReplicaSet> = ctx.namespaced();
    let name = "test-rs";
    rss.create(&PostParams::default(), &from(json!({
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"name": "sample-pod"}}, "template": template(json!({"name": "sample-pod"}), "httpd:2.4")}
    }))?)
    .await?;
    running(&ctx, "name=sample-pod", 1).await?;
    let scale: Scale = rss.get_scale(name).await?;
    ensure!(
        scale.spec.as_ref().and_then(|s| s.replicas) == Some(1),
        "scale {scale:?}"
    );
    update_scale(&rss, name).await?;
    let rs = rss.get(name).await?;
    ensure!(
        rs.spec.and_then(|s| s.replicas) == Some(2),
        "the ReplicaSet did not scale"
    );
    rss.patch_scale(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await?;
    let rs = rss.get(name).await?;
    ensure!(
        rs.spec.and_then(|s| s.replicas) == Some(4),
        "the scale patch did not apply"
    );
    running(&ctx, "name=sample-pod", 4).await?;
    Ok(())
}

/// Sets the scale to 2 replicas, retrying on conflict (a status write may land between the
/// read and the update).
async fn update_scale<K>(api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for _ in 0..5 {
        let mut scale = api.get_scale(name).await?;
        scale.spec.get_or_insert_default().replicas = Some(2);
        match api
            .replace_scale(name, &PostParams::default(), &scale)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("the scale update kept conflicting")
}

fn job(name: &str, extra: serde_json::Value) -> anyhow::Result<Job> {
    let mut spec = json!({
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    from(json!({"metadata": {"name": name}, "spec": spec}))
}

/// test/e2e/apps/job.go "should delete a job"
async fn job_delete(ctx: Ctx) -> anyhow::Result<()> {
    let jobs: Api<Job> = ctx.namespaced();
    jobs.create(
        &PostParams::default(),
        &job("foo", json!({"parallelism": 2, "completions": 4}))?,
    )
    .await?;
    eventually(WAIT, "two active pods", || async {
        let j = jobs.get("foo").await?;
        Ok((j.status.and_then(|s| s.active) == Some(2)).then_some(()))
    })
    .await?;
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    jobs.delete("foo", &params).await?;
    eventually(WAIT, "the job and its pods gone", || async {
        let gone = jobs.get_opt("foo").await?.is_none();
        let pods = pods_with(&ctx, "job-name=foo").await?;
        Ok((gone && pods.is_empty()).then_some(()))
    })
    .await
}

/// test/e2e/apps/job.go Indexed job
async fn job_indexed(ctx: Ctx) -> anyhow::Result<()> {
    let jobs: Api<Job> = ctx.namespaced();
    let spec = json!({"parallelism": 2, "completions": 4, "completionMode": "Indexed",
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "exit 0"]}]}}});
    jobs.create(&PostParams::default(), &job("indexed-job", spec)?)
        .await?;
    eventually(WAIT, "the job complete", || async {
        let j = jobs.get("indexed-job").await?;
        let done = j
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True");
        Ok(done.then_some(()))
    })
    .await?;
    let pods = pods_with(&ctx, "job-name=indexed-job").await?;
    let mut seen = BTreeSet::new();
    for p in pods.iter().filter(|p| phase(p) == "Succeeded") {
        let index = p
            .annotations()
            .get("batch.kubernetes.io/job-completion-index")
            .cloned()
            .context("no completion index")?;
        let hostname = p
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .unwrap_or_default();
        ensure!(
            hostname == format!("indexed-job-{index}"),
            "pod {} hostname {hostname}",
            p.name_any()
        );
        seen.insert(index);
    }
    ensure!(
        seen == BTreeSet::from(["0".into(), "1".into(), "2".into(), "3".into()]),
        "succeeded indexes {seen:?}"
    );
    let j = jobs.get("indexed-job").await?;
    ensure!(
        j.status.and_then(|s| s.completed_indexes).as_deref() == Some("0-3"),
        "completedIndexes"
    );
    Ok(())
}

/// test/e2e/apps/cronjob.go "should support CronJob API operations"
async fn cronjob_api(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<CronJob> = ctx.namespaced();
    let cj = |name: &str| -> anyhow::Result<CronJob> {
        from(
            json!({"metadata": {"name": name, "labels": {"special-label": "e2e"}},
            "spec": {"schedule": "@hourly", "concurrencyPolicy": "Allow",
                "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
        )
    };
    for n in ["e2e-cj-1", "e2e-cj-2", "e2e-cj-3"] {
        api.create(&PostParams::default(), &cj(n)?).await?;
    }
    let got = api.get("e2e-cj-1").await?;
    ensure!(got.spec.as_ref().map(|s| s.schedule.as_str()) == Some("@hourly"));
    let list = api
        .list(&ListParams::default().labels("special-label=e2e"))
        .await?;
    ensure!(list.items.len() == 3, "listed {}", list.items.len());
    let all: Api<CronJob> = ctx.all();
    ensure!(
        all.list(&ListParams::default().labels("special-label=e2e"))
            .await?
            .items
            .len()
            >= 3
    );
    let patched = api
        .patch(
            "e2e-cj-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"patched": "true"}}})),
        )
        .await?;
    ensure!(patched.annotations().get("patched").map(String::as_str) == Some("true"));
    let mut updated = patched.clone();
    updated
        .annotations_mut()
        .insert("updated".into(), "true".into());
    let updated = api
        .replace("e2e-cj-1", &PostParams::default(), &updated)
        .await?;
    ensure!(updated.annotations().get("updated").map(String::as_str) == Some("true"));
    // The status subresource.
    let now = "2026-01-01T00:00:00Z";
    let status = api
        .patch_status(
            "e2e-cj-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastScheduleTime": now}})),
        )
        .await?;
    ensure!(
        status.status.and_then(|s| s.last_schedule_time).is_some(),
        "status patch"
    );
    api.delete("e2e-cj-1", &DeleteParams::default()).await?;
    ensure!(
        api.get_opt("e2e-cj-1").await?.is_none(),
        "still there after delete"
    );
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("special-label=e2e"),
    )
    .await?;
    eventually(WAIT, "the collection deleted", || async {
        Ok(api
            .list(&ListParams::default().labels("special-label=e2e"))
            .await?
            .items
            .is_empty()
            .then_some(()))
    })
    .await
}

/// The nodes daemon pods may run on: untainted for NoSchedule/NoExecute.
async fn schedulable_nodes(ctx: &Ctx) -> anyhow::Result<Vec<String>> {
    let nodes: Api<Node> = ctx.all();
    Ok(nodes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_none_or(|t| t.iter().all(|t| t.effect == "PreferNoSchedule"))
        })
        .map(|n| n.name_any())
        .collect())
}

async fn daemon_pods_on(
    ctx: &Ctx,
    selector: &str,
    nodes: &[String],
    image: Option<&str>,
) -> anyhow::Result<()> {
    eventually(WAIT, "a daemon pod on every node", || async {
        let pods = pods_with(ctx, selector).await?;
        let mut on: Vec<String> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && phase(p) == "Running")
            .filter(|p| {
                image.is_none_or(|i| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.containers.first())
                        .and_then(|c| c.image.as_deref())
                        == Some(i)
                })
            })
            .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
            .collect();
        on.sort();
        let mut want = nodes.to_vec();
        want.sort();
        Ok((on == want).then_some(()))
    })
    .await
}

/// test/e2e/apps/daemon_set.go "should run and stop simple daemon"
async fn daemonset_simple(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<DaemonSet> = ctx.namespaced();
    let labels = json!({"daemonset-name": "daemon-set"});
    api.create(&PostParams::default(), &from(json!({
        "metadata": {"name": "daemon-set"},
        "spec": {"selector": {"matchLabels": labels}, "template": template(labels.clone(), "httpd:2.4")}
    }))?)
    .await?;
    let nodes = schedulable_nodes(&ctx).await?;
    ensure!(!nodes.is_empty(), "no schedulable nodes");
    daemon_pods_on(&ctx, "daemonset-name=daemon-set", &nodes, None).await?;
    // A deleted daemon pod is revived.
    let pods: Api<Pod> = ctx.namespaced();
    let victim = pods_with(&ctx, "daemonset-name=daemon-set")
        .await?
        .remove(0);
    pods.delete(&victim.name_any(), &DeleteParams::default())
        .await?;
    daemon_pods_on(&ctx, "daemonset-name=daemon-set", &nodes, None).await?;
    Ok(())
}

/// test/e2e/apps/daemon_set.go "should update pod when spec was updated and update strategy
/// is RollingUpdate"
async fn daemonset_rolling(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<DaemonSet> = ctx.namespaced();
    let labels = json!({"daemonset-name": "daemon-set"});
    api.create(&PostParams::default(), &from(json!({
        "metadata": {"name": "daemon-set"},
        "spec": {"selector": {"matchLabels": labels}, "updateStrategy": {"type": "RollingUpdate"}, "template": template(labels.clone(), "httpd:2.4")}
    }))?)
    .await?;
    let nodes = schedulable_nodes(&ctx).await?;
    daemon_pods_on(&ctx, "daemonset-name=daemon-set", &nodes, Some("httpd:2.4")).await?;
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "httpd", "image": "agnhost:2.52"}]}}}});
    api.patch(
        "daemon-set",
        &PatchParams::default(),
        &Patch::Strategic(&patch),
    )
    .await?;
    daemon_pods_on(
        &ctx,
        "daemonset-name=daemon-set",
        &nodes,
        Some("agnhost:2.52"),
    )
    .await?;
    eventually(WAIT, "the daemon set's status", || async {
        let ds = api.get("daemon-set").await?;
        let s = ds.status.clone().unwrap_or_default();
        let n = nodes.len() as i32;
        Ok((s.updated_number_scheduled == Some(n)
            && s.number_available == Some(n)
            && s.desired_number_scheduled == n)
            .then_some(()))
    })
    .await
}

/// test/e2e/apps/statefulset.go "should have a working scale subresource"
async fn statefulset_scale(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<StatefulSet> = ctx.namespaced();
    let labels = json!({"foo": "bar", "baz": "blah"});
    api.create(&PostParams::default(), &from(json!({
        "metadata": {"name": "ss"},
        "spec": {"replicas": 1, "serviceName": "test", "selector": {"matchLabels": labels}, "template": template(labels.clone(), "httpd:2.4")}
    }))?)
    .await?;
    running(&ctx, "foo=bar", 1).await?;
    // Upstream's WaitForStatusReadyReplicas: the controller's status write is in.
    eventually(WAIT, "the set's ready replicas", || async {
        let s = api.get("ss").await?.status.unwrap_or_default();
        Ok((s.ready_replicas == Some(1)).then_some(()))
    })
    .await?;
    let scale: Scale = api.get_scale("ss").await?;
    ensure!(
        scale.spec.as_ref().and_then(|s| s.replicas) == Some(1),
        "scale {scale:?}"
    );
    update_scale(&api, "ss").await?;
    ensure!(
        api.get("ss").await?.spec.and_then(|s| s.replicas) == Some(2),
        "not scaled"
    );
    api.patch_scale(
        "ss",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await?;
    ensure!(
        api.get("ss").await?.spec.and_then(|s| s.replicas) == Some(4),
        "scale patch"
    );
    let pods = running(&ctx, "foo=bar", 4).await?;
    let mut names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    names.sort();
    ensure!(names == ["ss-0", "ss-1", "ss-2", "ss-3"], "pods {names:?}");
    Ok(())
}

async fn pdb(ctx: &Ctx, name: &str, spec: serde_json::Value) -> anyhow::Result<()> {
    let api: Api<PodDisruptionBudget> = ctx.namespaced();
    api.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": name}, "spec": spec}))?,
    )
    .await?;
    Ok(())
}

async fn pdb_processed(ctx: &Ctx, name: &str) -> anyhow::Result<PodDisruptionBudget> {
    let api: Api<PodDisruptionBudget> = ctx.namespaced();
    eventually(WAIT, "the budget processed", || async {
        let b = api.get(name).await?;
        let seen = b.status.as_ref().and_then(|s| s.observed_generation) >= b.metadata.generation;
        Ok(seen.then_some(b))
    })
    .await
}

fn simple_pods(n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            json!({"metadata": {"name": format!("pod-{i}"), "labels": {"foo": "bar"}},
            "spec": {"containers": [{"name": "donothing", "image": "busybox"}]}})
        })
        .collect()
}

/// test/e2e/apps/disruption.go "should observe PodDisruptionBudget status updated"
async fn pdb_status(ctx: Ctx) -> anyhow::Result<()> {
    pdb(
        &ctx,
        "foo",
        json!({"selector": {"matchLabels": {"foo": "bar"}}, "minAvailable": 1}),
    )
    .await?;
    let pods: Api<Pod> = ctx.namespaced();
    for p in simple_pods(3) {
        pods.create(&PostParams::default(), &from(p)?).await?;
    }
    running(&ctx, "foo=bar", 3).await?;
    let api: Api<PodDisruptionBudget> = ctx.namespaced();
    eventually(WAIT, "disruptions allowed", || async {
        let s = api.get("foo").await?.status.unwrap_or_default();
        Ok((s.disruptions_allowed == 2
            && s.current_healthy == 3
            && s.desired_healthy == 1
            && s.expected_pods == 3)
            .then_some(()))
    })
    .await?;
    pdb_processed(&ctx, "foo").await?;
    Ok(())
}

/// test/e2e/apps/disruption.go "should block an eviction until the PDB is updated to allow it"
async fn pdb_blocks_eviction(ctx: Ctx) -> anyhow::Result<()> {
    pdb(
        &ctx,
        "foo",
        json!({"selector": {"matchLabels": {"foo": "bar"}}, "minAvailable": 3}),
    )
    .await?;
    let pods: Api<Pod> = ctx.namespaced();
    for p in simple_pods(3) {
        pods.create(&PostParams::default(), &from(p)?).await?;
    }
    running(&ctx, "foo=bar", 3).await?;
    let api: Api<PodDisruptionBudget> = ctx.namespaced();
    eventually(WAIT, "the budget counting three healthy", || async {
        let s = api.get("foo").await?.status.unwrap_or_default();
        Ok((s.current_healthy == 3 && s.disruptions_allowed == 0).then_some(()))
    })
    .await?;
    let eviction = |name: &str| json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ctx.namespace}});
    let path = format!("/api/v1/namespaces/{}/pods/pod-0/eviction", ctx.namespace);
    let post = |body: serde_json::Value| {
        ctx.request(
            "POST",
            &path,
            "application/json",
            "application/json",
            body.to_string().into_bytes(),
        )
    };
    let refused = post(eviction("pod-0")).await?;
    ensure!(
        refused.status == 429,
        "eviction answered {}: {}",
        refused.status,
        String::from_utf8_lossy(&refused.body)
    );
    // Updated to allow one, the eviction goes through.
    api.patch(
        "foo",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minAvailable": 2}})),
    )
    .await?;
    eventually(WAIT, "one disruption allowed", || async {
        let s = api.get("foo").await?.status.unwrap_or_default();
        Ok((s.disruptions_allowed == 1).then_some(()))
    })
    .await?;
    let allowed = post(eviction("pod-0")).await?;
    ensure!(
        allowed.status == 201,
        "eviction answered {}: {}",
        allowed.status,
        String::from_utf8_lossy(&allowed.body)
    );
    Ok(())
}

async fn deployment_with_rs(ctx: &Ctx, name: &str) -> anyhow::Result<Api<Deployment>> {
    let deployments: Api<Deployment> = ctx.namespaced();
    let labels = json!({"app": name});
    deployments
        .create(&PostParams::default(), &from(json!({
            "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": template(labels.clone(), "httpd:2.4")}
        }))?)
        .await?;
    let rss: Api<ReplicaSet> = ctx.namespaced();
    eventually(WAIT, "the deployment's ReplicaSet", || async {
        Ok((!rss.list(&ListParams::default()).await?.items.is_empty()).then_some(()))
    })
    .await?;
    Ok(deployments)
}

/// test/e2e/apimachinery/garbage_collector.go "should delete RS created by deployment when
/// not orphaning"
async fn gc_deployment_cascade(ctx: Ctx) -> anyhow::Result<()> {
    let deployments = deployment_with_rs(&ctx, "simpletest-deployment").await?;
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    deployments.delete("simpletest-deployment", &params).await?;
    let rss: Api<ReplicaSet> = ctx.namespaced();
    eventually(WAIT, "the ReplicaSet and pods collected", || async {
        let rs = rss.list(&ListParams::default()).await?.items;
        let pods = pods_with(&ctx, "app=simpletest-deployment").await?;
        Ok((rs.is_empty() && pods.is_empty()).then_some(()))
    })
    .await
}

/// test/e2e/apimachinery/garbage_collector.go "should orphan RS created by deployment when
/// deleteOptions.PropagationPolicy is Orphan"
async fn gc_deployment_orphan(ctx: Ctx) -> anyhow::Result<()> {
    let deployments = deployment_with_rs(&ctx, "simpletest-deployment").await?;
    deployments
        .delete("simpletest-deployment", &DeleteParams::orphan())
        .await?;
    eventually(WAIT, "the deployment gone", || async {
        Ok(deployments
            .get_opt("simpletest-deployment")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    // For a while, the ReplicaSet stays, its owner reference removed.
    let rss: Api<ReplicaSet> = ctx.namespaced();
    eventually(WAIT, "the ReplicaSet orphaned", || async {
        let rs = rss.list(&ListParams::default()).await?.items;
        Ok((rs.len() == 1 && rs[0].owner_references().is_empty()).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        rss.list(&ListParams::default()).await?.items.len() == 1,
        "the orphan was collected"
    );
    Ok(())
}

/// Creates a quota once the namespace's existing objects are counted; returns its api.
async fn counted_quota(ctx: &Ctx, hard: serde_json::Value) -> anyhow::Result<Api<ResourceQuota>> {
    let api: Api<ResourceQuota> = ctx.namespaced();
    api.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": "test-quota"}, "spec": {"hard": hard}}))?,
    )
    .await?;
    eventually(WAIT, "the quota's usage calculated", || async {
        let q = api.get("test-quota").await?;
        Ok(q.status.and_then(|s| s.used).map(|_| ()))
    })
    .await?;
    Ok(api)
}

async fn used(api: &Api<ResourceQuota>, resource: &str) -> anyhow::Result<String> {
    let q = api.get("test-quota").await?;
    Ok(q.status
        .and_then(|s| s.used)
        .and_then(|u| u.get(resource).map(|q| q.0.clone()))
        .unwrap_or_default())
}

async fn quota_life<K>(ctx: Ctx, resource: &str, object: serde_json::Value) -> anyhow::Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    // The namespace's root CA configmap first (it would count against a configmaps quota
    // once published).
    let configmaps: Api<ConfigMap> = ctx.namespaced();
    eventually(WAIT, "kube-root-ca.crt published", || async {
        Ok(configmaps.get_opt("kube-root-ca.crt").await?.map(|_| ()))
    })
    .await?;
    let api = counted_quota(&ctx, json!({resource: "10"})).await?;
    let before: i64 = used(&api, resource).await?.parse().unwrap_or(0);
    let objects: Api<K> = ctx.namespaced();
    objects
        .create(&PostParams::default(), &from(object)?)
        .await?;
    eventually(WAIT, "the object counted", || async {
        Ok((used(&api, resource).await? == (before + 1).to_string()).then_some(()))
    })
    .await?;
    objects
        .delete("test-object", &DeleteParams::default())
        .await?;
    eventually(WAIT, "the usage released", || async {
        Ok((used(&api, resource).await? == before.to_string()).then_some(()))
    })
    .await
}

/// test/e2e/apimachinery/resource_quota.go "capture the life of a configMap"
async fn quota_configmap(ctx: Ctx) -> anyhow::Result<()> {
    quota_life::<ConfigMap>(
        ctx,
        "configmaps",
        json!({"metadata": {"name": "test-object"}, "data": {"a": "b"}}),
    )
    .await
}

/// test/e2e/apimachinery/resource_quota.go "capture the life of a secret"
async fn quota_secret(ctx: Ctx) -> anyhow::Result<()> {
    quota_life::<Secret>(
        ctx,
        "secrets",
        json!({"metadata": {"name": "test-object"}, "data": {"a": "Yg=="}}),
    )
    .await
}

/// The quota tests' resource lists (a ResourceQuota's spec.hard, status.hard, status.used).
type ResourceList = std::collections::BTreeMap<String, Quantity>;

/// A quantity's amount in billionths of a unit, for comparing amounts as resource.Quantity's
/// Cmp does ("1Gi" and "1024Mi" are the same); None if it does not parse.
fn quantity_nanos(q: &str) -> Option<i128> {
    let q = q.trim();
    let (negative, rest) = match q.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, q.strip_prefix('+').unwrap_or(q)),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let mut value: i128 = format!("{whole}{fraction}").parse().ok()?;
    let (binary, exponent): (u32, i32) = match suffix {
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "" => (0, 0),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        other => (0, other.strip_prefix(['e', 'E'])?.parse().ok()?),
    };
    value = value.checked_mul(1i128.checked_shl(binary)?)?;
    let mut scale = i64::from(exponent) + 9 - i64::try_from(fraction.len()).ok()?;
    if scale < -40 {
        return Some(0);
    }
    while scale > 0 {
        value = value.checked_mul(10)?;
        scale -= 1;
    }
    while scale < 0 {
        value /= 10;
        scale += 1;
    }
    Some(if negative { -value } else { value })
}

/// Two quantities are the same amount (Cmp == 0); ones that do not parse must be equal text.
pub(super) fn same_quantity(a: &str, b: &str) -> bool {
    match (quantity_nanos(a), quantity_nanos(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// A list's amount of a resource; zero when absent (as ResourceList.Cpu() and Memory() give).
fn amount<'a>(list: Option<&'a ResourceList>, name: &str) -> &'a str {
    list.and_then(|l| l.get(name)).map_or("0", |q| q.0.as_str())
}

fn amount_is(list: Option<&ResourceList>, name: &str, want: &str) -> bool {
    same_quantity(amount(list, name), want)
}

/// apiequality.Semantic.DeepEqual of resource lists: the same names with the same amounts
/// (an absent list is an empty one).
fn same_resources(a: Option<&ResourceList>, b: Option<&ResourceList>) -> bool {
    let empty = ResourceList::new();
    let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| same_quantity(&v.0, &w.0)))
}

fn spec_hard(q: &ResourceQuota) -> Option<&ResourceList> {
    q.spec.as_ref().and_then(|s| s.hard.as_ref())
}

fn status_hard(q: &ResourceQuota) -> Option<&ResourceList> {
    q.status.as_ref().and_then(|s| s.hard.as_ref())
}

/// resourceversion.CompareResourceVersion: both must be integers without leading zeros.
pub(super) fn compare_resource_version(a: &str, b: &str) -> anyhow::Result<std::cmp::Ordering> {
    let well_formed =
        |s: &str| !s.is_empty() && !s.starts_with('0') && s.bytes().all(|c| c.is_ascii_digit());
    ensure!(well_formed(a), "resource version is not well formed: {a}");
    ensure!(well_formed(b), "resource version is not well formed: {b}");
    Ok(a.len().cmp(&b.len()).then_with(|| a.cmp(b)))
}

/// HaveValidResourceVersion: a non-zero unsigned integer of at most 128 bits.
pub(super) fn ensure_valid_resource_version(rv: Option<&str>) -> anyhow::Result<()> {
    let rv = rv.unwrap_or("");
    let value: u128 = rv.parse().map_err(|_| {
        anyhow::anyhow!("Expected resource version to be a valid uint128, but got {rv:?}")
    })?;
    ensure!(
        value != 0,
        "the resource version {rv:?} is zero which is not valid"
    );
    Ok(())
}

/// resource_quota.go's countResourceQuota: the namespace's quotas, once their number held for
/// five polls a second apart (for at most 30s).
pub(crate) async fn count_resource_quota(api: &Api<ResourceQuota>) -> anyhow::Result<usize> {
    let (mut found, mut unchanged) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n = api.list(&ListParams::default()).await?.items.len();
        if n == found {
            unchanged += 1;
            if unchanged > 4 {
                return Ok(found);
            }
        } else {
            unchanged = 0;
            found = n;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the number of ResourceQuotas did not settle in 30s");
        }
    }
}

/// resource_quota.go's waitForResourceQuota: the quota's status.used has these amounts (its
/// other entries aside). A failed GET is retried, as Eventually does.
async fn wait_for_resource_quota(
    api: &Api<ResourceQuota>,
    name: &str,
    used: &[(&str, String)],
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let last = match api.get(name).await {
            Ok(q) => {
                let have = q.status.as_ref().and_then(|s| s.used.as_ref());
                let matches = have.is_some_and(|have| {
                    used.iter().all(|(k, v)| {
                        have.get(*k)
                            .is_some_and(|actual| same_quantity(&actual.0, v))
                    })
                });
                if matches {
                    return Ok(());
                }
                format!("{:?}", q.status)
            }
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("ResourceQuota {name} did not get status.used entries {used:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// resource_quota.go's newTestResourceQuota.
fn new_test_resource_quota(name: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {"hard": {
        "pods": "5",
        "services": "10",
        "services.nodeports": "1",
        "services.loadbalancers": "1",
        "replicationcontrollers": "10",
        "resourcequotas": "1",
        "cpu": "1",
        "memory": "500Mi",
        "configmaps": "10",
        "secrets": "10",
        "persistentvolumeclaims": "10",
        "requests.storage": "10Gi",
        "ephemeral-storage": "50Gi",
        "gold.storageclass.storage.k8s.io/persistentvolumeclaims": "10",
        "gold.storageclass.storage.k8s.io/requests.storage": "10Gi",
        "count/replicasets.apps": "5",
        "requests.example.com/dongle": "3",
    }}})
}

/// test/e2e/apimachinery/resource_quota.go "ensure its status is promptly calculated"
async fn quota_status_promptly(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<ResourceQuota> = ctx.namespaced();
    let existing = count_resource_quota(&api).await?;
    let name = "test-quota";
    api.create(
        &PostParams::default(),
        &from(new_test_resource_quota(name))?,
    )
    .await?;
    let result = wait_for_resource_quota(
        &api,
        name,
        &[("resourcequotas", (existing + 1).to_string())],
    )
    .await;
    let _ = api.delete(name, &DeleteParams::default()).await;
    result
}

/// test/e2e/apimachinery/resource_quota.go "should manage the lifecycle of a ResourceQuota"
async fn quota_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<ResourceQuota> = ctx.namespaced();
    let name = ctx.unique("e2e-quota");
    let selector = format!("e2e-rq-label={name}");
    api.create(
        &PostParams::default(),
        &from(
            json!({"metadata": {"name": name, "labels": {"e2e-rq-label": name}},
            "spec": {"hard": {"cpu": "1", "memory": "500Mi"}}}),
        )?,
    )
    .await?;
    let got = api.get(&name).await?;
    ensure!(
        amount_is(spec_hard(&got), "cpu", "1"),
        "Hard cpu value for ResourceQuota {name:?} is {} not 1",
        amount(spec_hard(&got), "cpu")
    );
    ensure!(
        amount_is(spec_hard(&got), "memory", "500Mi"),
        "Hard memory value for ResourceQuota {name:?} is {} not 500Mi",
        amount(spec_hard(&got), "memory")
    );
    ensure_valid_resource_version(got.metadata.resource_version.as_deref())?;

    // Across all namespaces.
    let listed = ctx
        .all::<ResourceQuota>()
        .list(&ListParams::default().labels(&selector))
        .await
        .context("Failed to list ResourceQuotas")?;
    ensure!(
        listed.items.len() == 1,
        "Failed to find ResourceQuota {name}: {} listed",
        listed.items.len()
    );

    let label_key = name.as_str();
    let patched = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {label_key: "patched"}},
                "spec": {"hard": {"memory": "750Mi"}}})),
        )
        .await
        .with_context(|| {
            format!(
                "failed to patch ResourceQuota {name} in namespace {}",
                ctx.namespace
            )
        })?;
    let labels = patched.metadata.labels.clone().unwrap_or_default();
    ensure!(
        labels.get(&name).map(String::as_str) == Some("patched"),
        "Failed to find the label for this ResourceQuota. Current labels: {labels:?}"
    );
    ensure!(
        amount_is(spec_hard(&patched), "memory", "750Mi"),
        "Hard memory value for ResourceQuota {name:?} is {} not 750Mi.",
        amount(spec_hard(&patched), "memory")
    );
    let listed_rv = listed.items[0]
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("");
    let patched_rv = patched.metadata.resource_version.as_deref().unwrap_or("");
    ensure!(
        compare_resource_version(listed_rv, patched_rv)? == std::cmp::Ordering::Less,
        "patched object should have a larger resource version ({patched_rv} after {listed_rv})"
    );

    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&selector),
    )
    .await?;
    let gone = api_error(api.get(&name).await).context("Expected `not found` error")?;
    ensure!(
        gone.code == 404,
        "Expected `not found` error, got: {gone:?}"
    );
    Ok(())
}

/// A watch of the namespace's quotas with the label selector, from `rv` (watchtools.Until's
/// ListWatch, which needs a resource version to start from).
async fn watch_quotas(
    api: &Api<ResourceQuota>,
    selector: &str,
    rv: &str,
) -> anyhow::Result<Events<ResourceQuota>> {
    ensure!(
        !rv.is_empty() && rv != "0",
        "the list gave no resource version to watch from ({rv:?})"
    );
    Ok(api
        .watch(&WatchParams::default().labels(selector), rv)
        .await?
        .boxed())
}

/// watchtools.Until: reads events until one's quota meets `done`, for up to a minute.
async fn watch_until(
    events: &mut Events<ResourceQuota>,
    done: impl Fn(&ResourceQuota) -> bool,
) -> anyhow::Result<ResourceQuota> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .map_err(|_| anyhow::anyhow!("timed out waiting for the condition"))?;
        match next {
            None => bail!("the watch closed before the condition was met"),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(WatchEvent::Error(e))) => bail!("the watch failed: {e:?}"),
            Some(Ok(WatchEvent::Bookmark(_))) => {}
            Some(Ok(WatchEvent::Added(q) | WatchEvent::Modified(q) | WatchEvent::Deleted(q))) => {
                if done(&q) {
                    return Ok(q);
                }
            }
        }
    }
}

/// The resource version of a list of the quotas with the label selector, in all namespaces.
async fn quotas_list_rv(ctx: &Ctx, selector: &str) -> anyhow::Result<String> {
    Ok(ctx
        .all::<ResourceQuota>()
        .list(&ListParams::default().labels(selector))
        .await
        .context("failed to list ResourceQuotas")?
        .metadata
        .resource_version
        .unwrap_or_default())
}

/// test/e2e/apimachinery/resource_quota.go "should apply changes to a resourcequota status"
async fn quota_status_changes(ctx: Ctx) -> anyhow::Result<()> {
    let ns = ctx.namespace.clone();
    let api: Api<ResourceQuota> = ctx.namespaced();
    let name = ctx.unique("e2e-rq-status");
    let selector = format!("e2e-rq-label={name}");
    let rv = quotas_list_rv(&ctx, &selector).await?;
    api.create(
        &PostParams::default(),
        &from(
            json!({"metadata": {"name": name, "labels": {"e2e-rq-label": name}},
            "spec": {"hard": {"cpu": "500m", "memory": "500Mi"}}}),
        )?,
    )
    .await?;
    let result = async {
        let initial = api.get(&name).await?;
        ensure!(
            amount_is(spec_hard(&initial), "cpu", "500m"),
            "Hard cpu value for ResourceQuota {name:?} is {} not 500m.",
            amount(spec_hard(&initial), "cpu")
        );
        ensure!(
            amount_is(spec_hard(&initial), "memory", "500Mi"),
            "Hard memory value for ResourceQuota {name:?} is {} not 500Mi.",
            amount(spec_hard(&initial), "memory")
        );
        let is_ours = |q: &ResourceQuota| {
            q.metadata.name.as_deref() == Some(name.as_str())
                && q.metadata.namespace.as_deref() == Some(ns.as_str())
        };

        // Update /status with the hard limits (RetryOnConflict's five tries).
        let hard_limits = spec_hard(&initial).cloned().unwrap_or_default();
        let mut tries = 0;
        let updated = loop {
            let mut q = api
                .get(&name)
                .await
                .with_context(|| format!("Unable to get ResourceQuota {name:?}"))?;
            q.status = Some(ResourceQuotaStatus {
                hard: Some(hard_limits.clone()),
                used: None,
            });
            match api.replace_status(&name, &PostParams::default(), &q).await {
                Ok(updated) => break updated,
                Err(kube::Error::Api(e)) if e.code == 409 && tries < 4 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => {
                    return Err(anyhow::Error::from(e).context("Failed to update resourceQuota"));
                }
            }
        };
        let mut events = watch_quotas(&api, &selector, &rv).await?;
        watch_until(&mut events, |q| {
            is_ours(q) && same_resources(status_hard(q), spec_hard(&updated))
        })
        .await
        .with_context(|| format!("failed to locate ResourceQuota {name:?} in namespace {ns:?}"))?;

        // Patch spec.hard, then /status to match it.
        let rv = quotas_list_rv(&ctx, &selector).await?;
        let x = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"hard": {"cpu": "1", "memory": "1Gi"}}})),
            )
            .await
            .with_context(|| format!("Could not patch resourcequota {name:?}"))?;
        let hard_limits = spec_hard(&x).cloned().unwrap_or_default();
        let patched = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(json!({"status": {"hard": hard_limits}})),
            )
            .await?;
        let mut events = watch_quotas(&api, &selector, &rv).await?;
        watch_until(&mut events, |q| {
            is_ours(q) && same_resources(status_hard(q), spec_hard(&patched))
        })
        .await
        .with_context(|| format!("failed to locate ResourceQuota {name:?} in namespace {ns:?}"))?;

        // GET /status.
        let rq = api
            .get_status(&name)
            .await
            .with_context(|| format!("Getting the status of the resource quota {name:?}"))?;
        ensure!(
            amount_is(status_hard(&rq), "cpu", "1"),
            "Hard cpu value for ResourceQuota {name:?} is {} not 1.",
            amount(status_hard(&rq), "cpu")
        );
        ensure!(
            amount_is(status_hard(&rq), "memory", "1Gi"),
            "Hard memory value for ResourceQuota {name:?} is {} not 1Gi.",
            amount(status_hard(&rq), "memory")
        );

        // Repatch /status away from the spec.
        let rv = quotas_list_rv(&ctx, &selector).await?;
        let repatched = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(json!({"status": {"hard": {"cpu": "2", "memory": "2Gi"}}})),
            )
            .await?;
        ensure!(
            amount_is(status_hard(&repatched), "cpu", "2"),
            "Hard cpu value for ResourceQuota {name:?} is {} not 2.",
            amount(status_hard(&repatched), "cpu")
        );
        ensure!(
            amount_is(status_hard(&repatched), "memory", "2Gi"),
            "Hard memory value for ResourceQuota {name:?} is {} not 2Gi.",
            amount(status_hard(&repatched), "memory")
        );
        let mut events = watch_quotas(&api, &selector, &rv).await?;
        watch_until(&mut events, |q| {
            is_ours(q)
                && amount_is(status_hard(q), "cpu", "2")
                && amount_is(status_hard(q), "memory", "2Gi")
        })
        .await
        .with_context(|| format!("failed to locate ResourceQuota {name:?} in namespace {ns:?}"))?;

        // The spec is unchanged, and the controller puts status.hard back to it. Upstream
        // allows six minutes (its controller only resyncs every five); here two, within the
        // run's per-test limit.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let last = match api.get(&name).await {
                Ok(q) => {
                    let (spec, status) = (spec_hard(&q), status_hard(&q));
                    if same_quantity(amount(spec, "cpu"), amount(status, "cpu"))
                        && amount_is(status, "cpu", "1")
                        && amount_is(status, "memory", "1Gi")
                    {
                        break;
                    }
                    format!("spec {spec:?}, status {status:?}")
                }
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!("Error waiting for ResourceQuota {name:?} to reset its Status: {last}");
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        anyhow::Ok(())
    }
    .await;
    let _ = api.delete(&name, &DeleteParams::default()).await;
    result
}

/// test/e2e/scheduling/predicates.go: a nodeSelector no node matches leaves the pod pending
/// with FailedScheduling.
async fn selector_not_matching(ctx: Ctx) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    pods.create(&PostParams::default(), &from(json!({
        "metadata": {"name": "restricted-pod"},
        "spec": {"nodeSelector": {"label": "nonempty"}, "containers": [{"name": "c", "image": "pause"}]}
    }))?)
    .await?;
    let events: Api<Event> = ctx.namespaced();
    let message = eventually(WAIT, "a FailedScheduling event", || async {
        let list = events
            .list(
                &ListParams::default()
                    .fields("reason=FailedScheduling,involvedObject.name=restricted-pod"),
            )
            .await?;
        Ok(list.items.into_iter().next().and_then(|e| e.message))
    })
    .await?;
    ensure!(
        message.contains("didn't match Pod's node affinity/selector"),
        "{message}"
    );
    let p = pods.get("restricted-pod").await?;
    ensure!(
        p.spec.and_then(|s| s.node_name).is_none(),
        "the pod was scheduled"
    );
    Ok(())
}

/// test/e2e/scheduling/predicates.go: a pod selecting a node's new label runs there.
async fn selector_matching(ctx: Ctx) -> anyhow::Result<()> {
    let nodes = schedulable_nodes(&ctx).await?;
    let node = nodes.first().context("no schedulable node")?.clone();
    let key = format!(
        "kubernetes.io/e2e-{}",
        ctx.unique("label").trim_start_matches("label-")
    );
    let node_api: Api<Node> = ctx.all();
    node_api
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {&key: "42"}}})),
        )
        .await?;
    let pods: Api<Pod> = ctx.namespaced();
    let result = async {
        pods.create(&PostParams::default(), &from(json!({
            "metadata": {"name": "with-labels"},
            "spec": {"nodeSelector": {&key: "42"}, "containers": [{"name": "c", "image": "pause"}]}
        }))?)
        .await?;
        let p = running(&ctx, "!nonexistent", 1).await?;
        let on = p[0]
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        ensure!(on == node, "ran on {on}, not {node}");
        anyhow::Ok(())
    }
    .await;
    let _ = node_api
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {&key: null}}})),
        )
        .await;
    result
}

fn rc(
    name: &str,
    replicas: i32,
    labels: serde_json::Value,
) -> anyhow::Result<ReplicationController> {
    from(json!({"metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": labels, "template": template(labels.clone(), "httpd:2.4")}}))
}

/// test/e2e/apps/rc.go testRCAdoptMatchingOrphans
async fn rc_adopt(ctx: Ctx) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    pods.create(
        &PostParams::default(),
        &from(json!({
            "metadata": {"name": "pod-adoption", "labels": {"name": "pod-adoption"}},
            "spec": {"containers": [{"name": "pod-adoption", "image": "httpd:2.4"}]}
        }))?,
    )
    .await?;
    running(&ctx, "name=pod-adoption", 1).await?;
    let rcs: Api<ReplicationController> = ctx.namespaced();
    rcs.create(
        &PostParams::default(),
        &rc("pod-adoption", 1, json!({"name": "pod-adoption"}))?,
    )
    .await?;
    let uid = rcs.get("pod-adoption").await?.uid().unwrap_or_default();
    eventually(WAIT, "the orphan adopted", || async {
        let p = pods.get("pod-adoption").await?;
        Ok(p.owner_references()
            .iter()
            .any(|o| {
                o.uid == uid && o.kind == "ReplicationController" && o.controller == Some(true)
            })
            .then_some(()))
    })
    .await?;
    // Adopted, it is the one replica: no other pod is made.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        pods_with(&ctx, "name=pod-adoption").await?.len() == 1,
        "a second pod was made"
    );
    Ok(())
}

/// test/e2e/apps/rc.go testRCReleaseControlledNotMatching
async fn rc_release(ctx: Ctx) -> anyhow::Result<()> {
    let rcs: Api<ReplicationController> = ctx.namespaced();
    rcs.create(
        &PostParams::default(),
        &rc("pod-release", 1, json!({"name": "pod-release"}))?,
    )
    .await?;
    let pod = running(&ctx, "name=pod-release", 1).await?.remove(0);
    let uid = rcs.get("pod-release").await?.uid().unwrap_or_default();
    let pods: Api<Pod> = ctx.namespaced();
    pods.patch(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(json!({"metadata": {"labels": {"name": "not-matching-name"}}})),
    )
    .await?;
    eventually(WAIT, "the pod released", || async {
        let p = pods.get(&pod.name_any()).await?;
        Ok(p.owner_references()
            .iter()
            .all(|o| o.uid != uid)
            .then_some(()))
    })
    .await?;
    running(&ctx, "name=pod-release", 1).await?;
    eventually(WAIT, "the controller's status", || async {
        let s = rcs.get("pod-release").await?.status.unwrap_or_default();
        Ok((s.replicas == 1 && s.ready_replicas == Some(1)).then_some(()))
    })
    .await
}

/// test/e2e/apimachinery/garbage_collector.go "should delete pods created by rc when not
/// orphaning"
async fn gc_rc_cascade(ctx: Ctx) -> anyhow::Result<()> {
    let rcs: Api<ReplicationController> = ctx.namespaced();
    rcs.create(
        &PostParams::default(),
        &rc("simpletest.rc", 2, json!({"app": "gc-test"}))?,
    )
    .await?;
    running(&ctx, "app=gc-test", 2).await?;
    rcs.delete("simpletest.rc", &DeleteParams::background())
        .await?;
    eventually(WAIT, "the rc's pods collected", || async {
        Ok(pods_with(&ctx, "app=gc-test")
            .await?
            .is_empty()
            .then_some(()))
    })
    .await
}

/// test/e2e/apimachinery/garbage_collector.go "should orphan pods created by rc if delete
/// options say so"
async fn gc_rc_orphan(ctx: Ctx) -> anyhow::Result<()> {
    let rcs: Api<ReplicationController> = ctx.namespaced();
    rcs.create(
        &PostParams::default(),
        &rc("simpletest.rc", 2, json!({"app": "gc-test"}))?,
    )
    .await?;
    running(&ctx, "app=gc-test", 2).await?;
    rcs.delete("simpletest.rc", &DeleteParams::orphan()).await?;
    eventually(WAIT, "the rc gone", || async {
        Ok(rcs.get_opt("simpletest.rc").await?.is_none().then_some(()))
    })
    .await?;
    eventually(WAIT, "the pods orphaned", || async {
        let pods = pods_with(&ctx, "app=gc-test").await?;
        Ok((pods.len() == 2 && pods.iter().all(|p| p.owner_references().is_empty())).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        pods_with(&ctx, "app=gc-test").await?.len() == 2,
        "orphaned pods were collected"
    );
    Ok(())
}

/// A namespace of the test's own making (upstream's CreateNamespace "nsdeletetest"), gone
/// once deleted with its content.
async fn doomed_namespace(ctx: &Ctx) -> anyhow::Result<String> {
    let name = ctx.unique("nsdeletetest");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = ctx.all();
    namespaces
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": name}}))?,
        )
        .await?;
    Ok(name)
}

async fn delete_namespace(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = ctx.all();
    namespaces.delete(name, &DeleteParams::default()).await?;
    eventually(WAIT, "the namespace removed", || async {
        Ok(namespaces.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// test/e2e/apimachinery/namespace.go ensurePodsAreRemovedWhenNamespaceIsDeleted
async fn namespace_removes_pods(ctx: Ctx) -> anyhow::Result<()> {
    let ns = doomed_namespace(&ctx).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &from(json!({
            "metadata": {"name": "test-pod"},
            "spec": {"containers": [{"name": "nginx", "image": "pause"}]}
        }))?,
    )
    .await?;
    eventually(WAIT, "the pod running", || async {
        Ok((phase(&pods.get("test-pod").await?) == "Running").then_some(()))
    })
    .await?;
    delete_namespace(&ctx, &ns).await?;
    // Recreated, the namespace is empty.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = ctx.all();
    namespaces
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let left = pods.list(&ListParams::default()).await?.items.len();
    delete_namespace(&ctx, &ns).await?;
    ensure!(left == 0, "{left} pods survived the namespace");
    Ok(())
}

/// test/e2e/apimachinery/namespace.go ensureServicesAreRemovedWhenNamespaceIsDeleted
async fn namespace_removes_services(ctx: Ctx) -> anyhow::Result<()> {
    let ns = doomed_namespace(&ctx).await?;
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(ctx.client.clone(), &ns);
    services
        .create(&PostParams::default(), &from(json!({
            "metadata": {"name": "test-service"},
            "spec": {"selector": {"foo": "bar", "baz": "blah"}, "ports": [{"port": 80, "targetPort": 80}]}
        }))?)
        .await?;
    delete_namespace(&ctx, &ns).await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = ctx.all();
    namespaces
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let left = services.get_opt("test-service").await?;
    delete_namespace(&ctx, &ns).await?;
    ensure!(left.is_none(), "the service survived the namespace");
    Ok(())
}
