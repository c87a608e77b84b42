//! API and admission tests of workload and node kinds: PodDisruptionBudgets
//! (test/e2e/apps/disruption.go), the Job lifecycle (test/e2e/apps/job.go),
//! ReplicationController scale and quota failure (test/e2e/apps/rc.go), LimitRange defaults
//! (test/e2e/scheduling/limit_range.go), PriorityClass endpoints
//! (test/e2e/scheduling/preemption.go), the Node lifecycle (test/e2e/node/node_lifecycle.go),
//! RuntimeClasses (test/e2e/common/node/runtimeclass.go), the QOS class
//! (test/e2e/node/pods.go) and sysctl validation (test/e2e/common/node/sysctl.go).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, Node, Pod, ReplicationController, ResourceQuota, ResourceRequirements,
};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};

use super::apps::{compare_resource_version, ensure_valid_resource_version, same_quantity};
use super::tests;
use crate::framework::{api_error, eventually};
use crate::framework::{from, is_ready, retry_on_conflict};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-apps] DisruptionController Listing PodDisruptionBudgets for all namespaces should list and delete a collection of PodDisruptionBudgets" => pdb_list_and_delete_collection,
        "[sig-apps] DisruptionController should create a PodDisruptionBudget" => pdb_create,
        "[sig-apps] DisruptionController should update/patch PodDisruptionBudget status" => pdb_update_patch_status,
        "[sig-apps] Job should manage the lifecycle of a job" => job_lifecycle,
        "[sig-apps] ReplicationController should get and update a ReplicationController scale" => rc_scale,
        "[sig-apps] ReplicationController should surface a failure condition on a common issue like exceeded quota" => rc_quota_failure,
        "[sig-scheduling] LimitRange should create a LimitRange with defaults and ensure pod has those defaults applied." => limitrange_defaults,
        "[sig-scheduling] SchedulerPreemption [Serial] PriorityClass endpoints verify PriorityClass endpoints can be operated with different HTTP methods" => priorityclass_endpoints,
        "[sig-node] Node Lifecycle should run through the lifecycle of a node" => node_lifecycle,
        "[sig-node] RuntimeClass should reject a Pod requesting a non-existent RuntimeClass [NodeConformance]" => runtimeclass_nonexistent,
        "[sig-node] RuntimeClass should reject a Pod requesting a deleted RuntimeClass [NodeConformance]" => runtimeclass_deleted,
        "[sig-node] RuntimeClass should support RuntimeClasses API operations" => runtimeclass_api,
        "[sig-node] Pods Extended Pods Set QOS Class should be set on Pods with matching resource requests and limits for memory and cpu" => pod_qos_class,
        "[sig-node] Sysctls [LinuxOnly] [NodeConformance] should reject invalid sysctls" => sysctls_invalid,
    ]
}

/// How long a wait on a controller (or on the API) may take; upstream's are longer (its
/// schedulingTimeout is ten minutes), this run's tests have three minutes in all.
const WAIT: Duration = Duration::from_secs(60);

/// How long waitForJobEvent watches for an event it tolerates missing (upstream's
/// PodStartShort, two minutes, shortened to fit the test's time).
const JOB_EVENT_WAIT: Duration = Duration::from_secs(30);

/// The images of upstream's fixtures, by the short names the other ports use.
const PAUSE: &str = "pause";
const BUSYBOX: &str = "busybox";
const AGNHOST: &str = "agnhost:2.52";
const HTTPD: &str = "httpd:2.4";

type ResourceList = BTreeMap<String, Quantity>;

/// A random UUID's text (upstream's uuid.NewUUID / uuid.New).
fn uuid() -> String {
    let hex = |n: usize| -> String {
        (0..n)
            .map(|_| char::from_digit(rand::random::<u32>() % 16, 16).unwrap_or('0'))
            .collect()
    };
    format!("{}-{}-{}-{}-{}", hex(8), hex(4), hex(4), hex(4), hex(12))
}

// ---------------------------------------------------------------------------------------------
// test/e2e/apps/disruption.go

fn int_or_string(v: Option<&IntOrString>) -> String {
    match v {
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => String::new(),
    }
}

fn min_available(pdb: &PodDisruptionBudget) -> String {
    int_or_string(pdb.spec.as_ref().and_then(|s| s.min_available.as_ref()))
}

/// createPDBMinAvailableOrDie: a budget selecting foo=bar, then waitForPdbToBeProcessed.
async fn create_pdb_min_available(
    api: &Api<PodDisruptionBudget>,
    name: &str,
    min_available: Value,
    labels: Value,
) -> anyhow::Result<()> {
    let pdb: PodDisruptionBudget = from(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": {"matchLabels": {"foo": "bar"}}, "minAvailable": min_available},
    }))?;
    api.create(&PostParams::default(), &pdb)
        .await
        .with_context(|| {
            format!("Waiting for the pdb {name} to be created with minAvailable {min_available}")
        })?;
    wait_for_pdb_processed(api, name).await
}

/// waitForPdbToBeProcessed: the budget's status.observedGeneration has caught up.
async fn wait_for_pdb_processed(api: &Api<PodDisruptionBudget>, name: &str) -> anyhow::Result<()> {
    eventually(WAIT, &format!("the pdb {name} to be processed"), || async {
        let pdb = api.get(name).await?;
        let observed = pdb
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .unwrap_or(0);
        Ok((observed >= pdb.metadata.generation.unwrap_or(0)).then_some(()))
    })
    .await
}

/// updatePDBOrDie: GET, change, PUT (the object, or with `status` its /status), retried on
/// conflicts; then waitForPdbToBeProcessed.
async fn update_pdb(
    api: &Api<PodDisruptionBudget>,
    name: &str,
    status: bool,
    change: impl Fn(&mut PodDisruptionBudget),
) -> anyhow::Result<PodDisruptionBudget> {
    let updated = retry_on_conflict(|| async {
        let mut pdb = api.get(name).await?;
        change(&mut pdb);
        if status {
            api.replace_status(name, &PostParams::default(), &pdb).await
        } else {
            api.replace(name, &PostParams::default(), &pdb).await
        }
    })
    .await
    .with_context(|| format!("Waiting for the PDB update to be processed ({name})"))?;
    wait_for_pdb_processed(api, name).await?;
    Ok(updated)
}

/// patchPDBOrDie: the budget read through /status, a merge patch made from it, sent to the
/// object (or with `status` to its /status), retried on conflicts; then
/// waitForPdbToBeProcessed.
async fn patch_pdb(
    api: &Api<PodDisruptionBudget>,
    name: &str,
    status: bool,
    make: impl Fn(&PodDisruptionBudget) -> Value,
) -> anyhow::Result<PodDisruptionBudget> {
    let patched = retry_on_conflict(|| async {
        let old = api.get_status(name).await?;
        let patch = make(&old);
        if status {
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        } else {
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
    })
    .await
    .with_context(|| format!("Waiting for the pdb update to be processed ({name})"))?;
    wait_for_pdb_processed(api, name).await?;
    Ok(patched)
}

/// deletePDBOrDie: deleted, then gone.
async fn delete_pdb(api: &Api<PodDisruptionBudget>, name: &str) -> anyhow::Result<()> {
    api.delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("Deleting pdb {name}"))?;
    eventually(WAIT, &format!("the pdb {name} to be deleted"), || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// listPDBs: exactly the budgets named, with the label selector.
async fn list_pdbs(
    api: &Api<PodDisruptionBudget>,
    where_: &str,
    selector: &str,
    expected: &[&str],
) -> anyhow::Result<()> {
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .with_context(|| format!("Listing PDB set in {where_}"))?;
    ensure!(
        list.items.len() == expected.len(),
        "Expecting {} PDBs returned in {where_}, got {}",
        expected.len(),
        list.items.len()
    );
    let mut names: Vec<String> = list.items.iter().map(|p| p.name_any()).collect();
    names.sort();
    let mut want: Vec<String> = expected.iter().map(|n| n.to_string()).collect();
    want.sort();
    ensure!(
        names == want,
        "Expecting returned PDBs '{want:?}' in {where_}, got {names:?}"
    );
    Ok(())
}

/// createPodsOrDie: pods pod-0.. labelled foo=bar.
async fn create_pods(ctx: &Ctx, n: usize) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    for i in 0..n {
        let name = format!("pod-{i}");
        let pod: Pod = from(json!({
            "metadata": {"name": name, "labels": {"foo": "bar"}},
            "spec": {"containers": [{"name": "donothing", "image": PAUSE}], "restartPolicy": "Always"},
        }))?;
        pods.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("Creating pod {name:?} in namespace {:?}", ctx.namespace))?;
    }
    Ok(())
}

/// waitForPodsOrDie: at least `n` pods foo=bar, `n` of them Ready and not being deleted.
async fn wait_for_pods(ctx: &Ctx, n: usize) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    eventually(WAIT, &format!("{n} pods to be ready"), || async {
        let list = pods.list(&ListParams::default().labels("foo=bar")).await?;
        let ready = list
            .items
            .iter()
            .filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
            .count();
        Ok((list.items.len() >= n && ready >= n).then_some(()))
    })
    .await
    .with_context(|| {
        format!(
            "Waiting for pods in namespace {:?} to be ready",
            ctx.namespace
        )
    })
}

/// locateRunningPod: a pod of the namespace Ready and not being deleted.
async fn locate_running_pod(ctx: &Ctx) -> anyhow::Result<Pod> {
    let pods: Api<Pod> = ctx.namespaced();
    eventually(WAIT, "a running pod", || async {
        let list = pods.list(&ListParams::default()).await?;
        Ok(list
            .items
            .into_iter()
            .find(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none()))
    })
    .await
}

/// disruption.go "Listing PodDisruptionBudgets for all namespaces should list and delete a
/// collection of PodDisruptionBudgets": two budgets here and one in a second namespace (the
/// test's "anotherFramework"), listed across namespaces and in this one, then this
/// namespace's deleted as a collection.
async fn pdb_list_and_delete_collection(ctx: Ctx) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = ctx.cluster();
    let other = ctx.unique("e2e-disruption-2");
    let ns: Namespace = from(json!({
        "metadata": {"name": other, "labels": {"e2e-framework": "kelp-conformance"}}
    }))?;
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .context("creating the second namespace")?;
    let result = async {
        let special = json!({"foo_pdb": "bar_pdb"});
        let selector = "foo_pdb=bar_pdb";
        let api: Api<PodDisruptionBudget> = ctx.namespaced();
        let other_api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &other);
        create_pdb_min_available(&api, "foo", json!(2), special.clone()).await?;
        create_pdb_min_available(&api, "foo2", json!("1%"), special.clone()).await?;
        create_pdb_min_available(&other_api, "foo3", json!(2), special.clone()).await?;

        // listing a collection of PDBs across all namespaces
        let all: Api<PodDisruptionBudget> = ctx.all();
        list_pdbs(&all, "all namespaces", selector, &["foo", "foo2", "foo3"]).await?;

        // listing a collection of PDBs in the test's namespace
        let here = format!("namespace {}", ctx.namespace);
        list_pdbs(&api, &here, selector, &["foo", "foo2"]).await?;

        // deletePDBCollection: every budget of the namespace, then none listed.
        api.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .with_context(|| format!("Deleting PDB set in {here}"))?;
        eventually(WAIT, "the PDB collection to be deleted", || async {
            Ok(api
                .list(&ListParams::default())
                .await?
                .items
                .is_empty()
                .then_some(()))
        })
        .await
        .with_context(|| format!("Waiting for the PDB collection to be deleted in {here}"))
    }
    .await;
    let _ = namespaces.delete(&other, &DeleteParams::default()).await;
    result
}

/// disruption.go "should create a PodDisruptionBudget": create, update, patch, delete.
async fn pdb_create(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<PodDisruptionBudget> = ctx.namespaced();
    // creating the pdb
    create_pdb_min_available(&api, "foo", json!("1%"), json!({"foo": "bar"})).await?;

    // updating the pdb
    let updated = update_pdb(&api, "foo", false, |pdb| {
        pdb.spec.get_or_insert_default().min_available = Some(IntOrString::String("2%".into()));
    })
    .await?;
    let got = min_available(&updated);
    ensure!(
        got == "2%",
        "the updated pdb's minAvailable is {got:?}, not \"2%\""
    );

    // patching the pdb
    let patched = patch_pdb(
        &api,
        "foo",
        false,
        |_| json!({"spec": {"minAvailable": "3%"}}),
    )
    .await?;
    let got = min_available(&patched);
    ensure!(
        got == "3%",
        "the patched pdb's minAvailable is {got:?}, not \"3%\""
    );

    delete_pdb(&api, "foo").await
}

/// disruption.go "should update/patch PodDisruptionBudget status": a running pod put in
/// status.disruptedPods by an update of /status, then taken out by a merge patch of it.
async fn pdb_update_patch_status(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<PodDisruptionBudget> = ctx.namespaced();
    create_pdb_min_available(&api, "foo", json!(1), json!({"foo": "bar"})).await?;

    // Updating PodDisruptionBudget status. The pod has to exist, or the controller drops it.
    create_pods(&ctx, 1).await?;
    wait_for_pods(&ctx, 1).await?;
    let pod = locate_running_pod(&ctx).await?.name_any();
    update_pdb(&api, "foo", true, |pdb| {
        pdb.status.get_or_insert_default().disrupted_pods = Some(BTreeMap::from([(
            pod.clone(),
            Time(k8s_openapi::jiff::Timestamp::now()),
        )]));
    })
    .await?;
    // fetch again to make sure the update from API was effective
    let updated = api.get_status("foo").await?;
    let disrupted = updated
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    ensure!(
        disrupted.contains_key(&pod),
        "Expecting the DisruptedPods have {pod}, got {:?}",
        disrupted.keys().collect::<Vec<_>>()
    );

    // Patching PodDisruptionBudget status: the merge patch from the status read to one with
    // no disruptedPods (an empty map is omitted, so the field is nulled).
    let patched = patch_pdb(
        &api,
        "foo",
        true,
        |_| json!({"status": {"disruptedPods": null}}),
    )
    .await?;
    let left = patched
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    ensure!(
        left.is_empty(),
        "Expecting the PodDisruptionBudget's be empty, got {:?}",
        left.keys().collect::<Vec<_>>()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/apps/job.go

fn job_condition(j: &Job, type_: &str, reason: Option<&str>) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == type_
                && c.status == "True"
                && reason.is_none_or(|r| c.reason.as_deref() == Some(r))
        })
}

/// waitForJobEvent: watches the jobs of the label selector from `rv` until an event `done`
/// accepts. Event delivery is not guaranteed, so a miss (or a failed watch) is no failure.
async fn wait_for_job_event(
    jobs: &Api<Job>,
    selector: &str,
    rv: &str,
    done: impl Fn(&WatchEvent<Job>) -> bool,
) {
    let watch = async {
        let mut events = jobs
            .watch(&WatchParams::default().labels(selector), rv)
            .await?
            .boxed();
        while let Some(event) = events.next().await {
            if done(&event?) {
                return anyhow::Ok(true);
            }
        }
        anyhow::Ok(false)
    };
    // We missed the event: upstream logs the job and goes on.
    let _ = tokio::time::timeout(JOB_EVENT_WAIT, watch).await;
}

/// e2ejob.WaitForJobComplete: `completions` pods succeeded (a Failed job stops the wait),
/// then the Complete condition with `reason`.
async fn wait_for_job_complete(
    jobs: &Api<Job>,
    name: &str,
    reason: &str,
    completions: i32,
) -> anyhow::Result<()> {
    eventually(
        WAIT,
        &format!("job {name} to have {completions} successful pods"),
        || async {
            let j = jobs.get(name).await?;
            if job_condition(&j, "Failed", None) {
                bail!(
                    "job failed while waiting for its completion: {:?}",
                    j.status
                );
            }
            let succeeded = j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0);
            Ok((succeeded == completions).then_some(()))
        },
    )
    .await?;
    eventually(
        WAIT,
        &format!("job {name} to reach the expected condition \"Complete\" with reason {reason:?}"),
        || async {
            let j = jobs.get(name).await?;
            Ok(job_condition(&j, "Complete", Some(reason)).then_some(()))
        },
    )
    .await
}

/// job.go "should manage the lifecycle of a job": a suspended job patched, updated (and so
/// resumed), listed, run to completion and deleted as a collection, with the watch
/// following along.
async fn job_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let job_name = ctx.unique("e2e");
    let selector = format!("e2e-job-label={job_name}");
    let ns = ctx.namespace.clone();
    let jobs: Api<Job> = ctx.namespaced();
    let jobs_list = jobs
        .list(&ListParams::default().labels(&selector))
        .await
        .context("failed to list Job")?;
    let list_rv = jobs_list
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();

    // Creating a suspended job: e2ejob.NewTestJob("succeed", ..., Never, 2, 4, nil, 6).
    let job: Job = from(json!({
        "metadata": {"name": job_name, "labels": {"e2e-job-label": job_name}},
        "spec": {
            "parallelism": 2,
            "completions": 4,
            "backoffLimit": 6,
            "manualSelector": false,
            "suspend": true,
            "template": {
                "metadata": {"labels": {"job": job_name}},
                "spec": {
                    "restartPolicy": "Never",
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "containers": [{
                        "name": "c",
                        "image": BUSYBOX,
                        "command": ["/bin/sh", "-c", "exit 0"],
                        "volumeMounts": [{"mountPath": "/data", "name": "data"}],
                        "securityContext": {},
                    }],
                },
            },
        },
    }))?;
    let job = jobs
        .create(&PostParams::default(), &job)
        .await
        .with_context(|| format!("failed to create job in namespace: {ns}"))?;
    ensure_valid_resource_version(job.metadata.resource_version.as_deref())?;

    // Patching the Job
    let patched = jobs
        .patch(
            &job_name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {&job_name: "patched"}}})),
        )
        .await
        .with_context(|| format!("failed to patch Job {job_name} in namespace {ns}"))?;
    ensure!(
        compare_resource_version(
            job.metadata.resource_version.as_deref().unwrap_or(""),
            patched.metadata.resource_version.as_deref().unwrap_or("")
        )? == std::cmp::Ordering::Less,
        "patched object should have a larger resource version"
    );

    // Watching for Job to be patched
    wait_for_job_event(&jobs, &selector, &list_rv, |e| match e {
        WatchEvent::Modified(j) => {
            j.name_any() == job_name
                && j.namespace().as_deref() == Some(ns.as_str())
                && j.labels().get(&job_name).map(String::as_str) == Some("patched")
        }
        _ => false,
    })
    .await;
    ensure!(
        patched.labels().get(&job_name).map(String::as_str) == Some("patched"),
        "Did not find job label for this job. Current labels: {:?}",
        patched.labels()
    );

    // Updating the job: resumed, and annotated.
    let (fetched, updated) = retry_on_conflict(|| async {
        let mut j = jobs.get(&job_name).await?;
        let fetched = j.clone();
        j.spec.get_or_insert_default().suspend = Some(false);
        j.annotations_mut().insert("updated".into(), "true".into());
        let updated = jobs.replace(&job_name, &PostParams::default(), &j).await?;
        Ok::<_, kube::Error>((fetched, updated))
    })
    .await
    .with_context(|| format!("failed to update job in namespace: {ns}"))?;

    // Watching for Job to be updated
    let fetched_rv = fetched
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    wait_for_job_event(&jobs, &selector, &fetched_rv, |e| match e {
        WatchEvent::Modified(j) => {
            j.name_any() == job_name
                && j.namespace().as_deref() == Some(ns.as_str())
                && j.annotations().get("updated").map(String::as_str) == Some("true")
        }
        _ => false,
    })
    .await;
    ensure!(
        updated.annotations().get("updated").map(String::as_str) == Some("true"),
        "updated Job should have the applied annotation"
    );

    // Listing all Jobs with LabelSelector
    let all_jobs: Api<Job> = ctx.all();
    let listed = all_jobs
        .list(&ListParams::default().labels(&selector))
        .await
        .context("Failed to list job.")?;
    ensure!(listed.items.len() == 1, "Failed to find job {job_name}");

    // Waiting for job to complete
    wait_for_job_complete(&jobs, &job_name, "CompletionsReached", 4)
        .await
        .with_context(|| format!("failed to ensure job completion in namespace: {ns}"))?;

    // Delete a job collection with a labelselector
    jobs.delete_collection(
        &DeleteParams::background(),
        &ListParams::default().labels(&selector),
    )
    .await
    .with_context(|| format!("failed to delete job {job_name} in namespace: {ns}"))?;

    // Watching for Job to be deleted
    let updated_rv = updated
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    wait_for_job_event(&jobs, &selector, &updated_rv, |e| match e {
        WatchEvent::Deleted(j) => {
            j.name_any() == job_name
                && j.namespace().as_deref() == Some(ns.as_str())
                && j.labels().get("e2e-job-label") == Some(&job_name)
        }
        _ => false,
    })
    .await;

    // Relist jobs to confirm deletion
    let listed = all_jobs
        .list(&ListParams::default().labels(&selector))
        .await
        .context("Failed to list job.")?;
    ensure!(listed.items.is_empty(), "Found job {job_name}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/apps/rc.go

/// newRC: `replicas` webserver pods labelled name=<name> (the selector defaulted from them).
fn new_rc(name: &str, replicas: i32) -> anyhow::Result<ReplicationController> {
    from(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"labels": {"name": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "httpd", "image": HTTPD}],
                },
            },
        },
    }))
}

/// checkReplicationControllerStatusReplicaCount, polled for a minute.
async fn wait_rc_status_replicas(
    rcs: &Api<ReplicationController>,
    name: &str,
    quantity: i32,
) -> anyhow::Result<()> {
    eventually(
        WAIT,
        &format!("{quantity} replicas for {name:?} replication controller"),
        || async {
            let rc = rcs.get(name).await?;
            let replicas = rc.status.as_ref().map_or(0, |s| s.replicas);
            Ok((replicas == quantity).then_some(()))
        },
    )
    .await
    .context("failed to confirm the quantity of ReplicationController replicas")
}

/// rc.go "should get and update a ReplicationController scale"
async fn rc_scale(ctx: Ctx) -> anyhow::Result<()> {
    let rcs: Api<ReplicationController> = ctx.namespaced();
    let name = ctx.unique("e2e-rc");
    rcs.create(&PostParams::default(), &new_rc(&name, 1)?)
        .await
        .context("Failed to create ReplicationController")?;
    wait_rc_status_replicas(&rcs, &name, 1).await?;

    // Getting scale subresource for ReplicationController
    let mut scale = rcs
        .get_scale(&name)
        .await
        .context("Failed to get scale subresource")?;
    let current = scale.status.as_ref().map_or(0, |s| s.replicas);
    ensure!(
        current == 1,
        "Failed to get the current replica count: {current}"
    );

    // Updating a scale subresource, unconditionally (no resource version).
    scale.metadata.resource_version = None;
    scale.spec.get_or_insert_default().replicas = Some(2);
    rcs.replace_scale(&name, &PostParams::default(), &scale)
        .await
        .context("Failed to update scale subresource")?;

    // Verifying replicas where modified for replication controller
    wait_rc_status_replicas(&rcs, &name, 2).await
}

fn has_rc_condition(rc: &ReplicationController, type_: &str) -> bool {
    rc.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_))
}

fn rc_conditions(rc: &ReplicationController) -> String {
    format!(
        "{:?}",
        rc.status.as_ref().and_then(|s| s.conditions.as_ref())
    )
}

/// Waits, for a minute, until the controller has seen `generation` and the ReplicaFailure
/// condition is there (`present`) or not.
async fn wait_rc_failure_condition(
    rcs: &Api<ReplicationController>,
    name: &str,
    generation: i64,
    present: bool,
) -> anyhow::Result<()> {
    let waited = eventually(WAIT, "the rc's failure condition", || async {
        let rc = rcs.get(name).await?;
        let observed = rc
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .unwrap_or(0);
        if generation > observed {
            return Ok(None);
        }
        Ok((has_rc_condition(&rc, "ReplicaFailure") == present).then_some(()))
    })
    .await;
    if waited.is_err() {
        let conditions = match rcs.get(name).await {
            Ok(rc) => rc_conditions(&rc),
            Err(e) => e.to_string(),
        };
        if present {
            bail!("rc manager never added the failure condition for rc {name:?}: {conditions}");
        }
        bail!("rc manager never removed the failure condition for rc {name:?}: {conditions}");
    }
    Ok(())
}

/// updateReplicationControllerWithRetries: GET, change, PUT, every 10ms for up to a minute
/// until the PUT succeeds.
async fn update_rc_with_retries(
    rcs: &Api<ReplicationController>,
    name: &str,
    change: impl Fn(&mut ReplicationController),
) -> anyhow::Result<ReplicationController> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut rc = rcs.get(name).await?;
        change(&mut rc);
        let err = match rcs.replace(name, &PostParams::default(), &rc).await {
            Ok(updated) => return Ok(updated),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("couldn't apply the provided updated to rc {name:?}: {err}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// rc.go testReplicationControllerConditionCheck: a quota of two pods, a controller wanting
/// three gets ReplicaFailure; scaled down to two, it loses it.
async fn rc_quota_failure(ctx: Ctx) -> anyhow::Result<()> {
    let name = "condition-test";
    // Creating quota that allows only two pods to run in the current namespace
    let quotas: Api<ResourceQuota> = ctx.namespaced();
    let quota: ResourceQuota = from(json!({
        "metadata": {"name": name},
        "spec": {"hard": {"pods": "2"}},
    }))?;
    quotas.create(&PostParams::default(), &quota).await?;
    eventually(WAIT, "the quota's status", || async {
        let q = quotas.get(name).await?;
        let hard = q
            .status
            .as_ref()
            .and_then(|s| s.hard.as_ref())
            .and_then(|h| h.get("pods"))
            .map_or("0", |q| q.0.as_str())
            .to_string();
        Ok(same_quantity(&hard, "2").then_some(()))
    })
    .await
    .with_context(|| format!("resource quota {name:?} never synced"))?;

    // Creating rc that asks for more than the allowed pod quota
    let rcs: Api<ReplicationController> = ctx.namespaced();
    let rc = rcs
        .create(&PostParams::default(), &new_rc(name, 3)?)
        .await?;

    // Checking rc has the desired failure condition set
    wait_rc_failure_condition(&rcs, name, rc.metadata.generation.unwrap_or(0), true).await?;

    // Scaling down rc to satisfy pod quota
    let rc = update_rc_with_retries(&rcs, name, |rc| {
        rc.spec.get_or_insert_default().replicas = Some(2);
    })
    .await?;

    // Checking rc has no failure condition set
    wait_rc_failure_condition(&rcs, name, rc.metadata.generation.unwrap_or(0), false).await
}

// ---------------------------------------------------------------------------------------------
// test/e2e/scheduling/limit_range.go

/// getResourceList: cpu, memory and ephemeral-storage, those given.
fn resource_list(cpu: &str, memory: &str, ephemeral_storage: &str) -> ResourceList {
    [
        ("cpu", cpu),
        ("memory", memory),
        ("ephemeral-storage", ephemeral_storage),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
    .collect()
}

/// A resource list as the Go client sends it: an empty one is omitted.
fn list_json(list: &ResourceList) -> Value {
    if list.is_empty() {
        Value::Null
    } else {
        json!(list)
    }
}

/// newTestPod: a pause container with these requests and limits.
fn new_test_pod(name: &str, requests: &ResourceList, limits: &ResourceList) -> anyhow::Result<Pod> {
    let mut resources = serde_json::Map::new();
    if !requests.is_empty() {
        resources.insert("requests".into(), json!(requests));
    }
    if !limits.is_empty() {
        resources.insert("limits".into(), json!(limits));
    }
    from(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "pause", "image": PAUSE, "resources": resources}]},
    }))
}

/// equalResourceList: the same resources in the same amounts, both ways.
fn equal_resource_list(
    expected: &ResourceList,
    actual: Option<&ResourceList>,
) -> anyhow::Result<()> {
    let empty = ResourceList::new();
    let actual = actual.unwrap_or(&empty);
    let amount = |q: Option<&Quantity>| q.map_or("0".to_string(), |q| q.0.clone());
    for (k, v) in expected {
        let found = actual.get(k);
        if !found.is_some_and(|a| same_quantity(&v.0, &a.0)) {
            bail!("resource {k} expected {} actual {}", v.0, amount(found));
        }
    }
    for (k, v) in actual {
        let wanted = expected.get(k);
        if !wanted.is_some_and(|e| same_quantity(&e.0, &v.0)) {
            bail!("resource {k} expected {} actual {}", amount(wanted), v.0);
        }
    }
    Ok(())
}

/// equalResourceRequirement: requests, then limits.
fn equal_resource_requirement(
    requests: &ResourceList,
    limits: &ResourceList,
    actual: Option<&ResourceRequirements>,
) -> anyhow::Result<()> {
    equal_resource_list(requests, actual.and_then(|r| r.requests.as_ref()))?;
    equal_resource_list(limits, actual.and_then(|r| r.limits.as_ref()))
}

/// Every container of the pod has these requests and limits.
fn pod_has_requirements(
    pod: &Pod,
    requests: &ResourceList,
    limits: &ResourceList,
) -> anyhow::Result<()> {
    for c in pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
    {
        equal_resource_requirement(requests, limits, c.resources.as_ref()).with_context(|| {
            format!(
                "Pod {} does not have the expected requirements: {:?}",
                pod.name_any(),
                c.resources
            )
        })?;
    }
    Ok(())
}

/// limit_range.go "should create a LimitRange with defaults and ensure pod has those
/// defaults applied."
async fn limitrange_defaults(ctx: Ctx) -> anyhow::Result<()> {
    let limit_ranges: Api<LimitRange> = ctx.namespaced();
    let pods: Api<Pod> = ctx.namespaced();

    // Creating a LimitRange
    let min = resource_list("50m", "100Mi", "100Gi");
    let max = resource_list("500m", "500Mi", "500Gi");
    let default_limit = resource_list("500m", "500Mi", "500Gi");
    let default_request = resource_list("100m", "200Mi", "200Gi");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let value = format!("{nanos}{}", uuid());
    let limit_range: LimitRange = from(json!({
        "metadata": {"name": "limit-range", "labels": {"time": value}},
        "spec": {"limits": [{
            "type": "Container",
            "min": list_json(&min),
            "max": list_json(&max),
            "default": list_json(&default_limit),
            "defaultRequest": list_json(&default_request),
        }]},
    }))?;

    // Setting up watch
    let selector = format!("time={value}");
    let listed = limit_ranges
        .list(&ListParams::default().labels(&selector))
        .await
        .context("failed to query for limitRanges")?;
    ensure!(
        listed.items.is_empty(),
        "{} limitRanges already carry the label",
        listed.items.len()
    );
    let rv = listed.metadata.resource_version.clone().unwrap_or_default();
    let mut events = limit_ranges
        .watch(
            &WatchParams::default().labels(&selector).disable_bookmarks(),
            if rv.is_empty() { "0" } else { &rv },
        )
        .await?
        .boxed();

    // Submitting a LimitRange
    let limit_range = limit_ranges
        .create(&PostParams::default(), &limit_range)
        .await?;

    // Verifying LimitRange creation was observed: the first event is its ADDED.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .map_err(|_| anyhow!("Timeout while waiting for LimitRange creation"))?;
        match next {
            Some(Ok(WatchEvent::Added(_))) => break,
            Some(Ok(WatchEvent::Bookmark(_))) => {}
            Some(Ok(other)) => bail!("Failed to observe limitRange creation : {other:?}"),
            Some(Err(e)) => bail!("Failed to observe limitRange creation : {e}"),
            None => bail!("Failed to observe limitRange creation : the watch closed"),
        }
    }
    drop(events);

    // Fetching the LimitRange to ensure it has proper values
    let mut limit_range = limit_ranges.get(&limit_range.name_any()).await?;
    let item = limit_range
        .spec
        .as_ref()
        .and_then(|s| s.limits.first())
        .context("the LimitRange has no limits")?;
    equal_resource_list(&default_request, item.default_request.as_ref())?;
    equal_resource_list(&default_limit, item.default.as_ref())?;

    // Creating a Pod with no resource requirements
    let pod = new_test_pod(
        "pod-no-resources",
        &ResourceList::new(),
        &ResourceList::new(),
    )?;
    let pod = pods.create(&PostParams::default(), &pod).await?;

    // Ensuring Pod has resource requirements applied from LimitRange
    let pod = pods.get(&pod.name_any()).await?;
    pod_has_requirements(&pod, &default_request, &default_limit)?;

    // Creating a Pod with partial resource requirements
    let pod = new_test_pod(
        "pod-partial-resources",
        &resource_list("", "150Mi", "150Gi"),
        &resource_list("300m", "", ""),
    )?;
    let pod = pods.create(&PostParams::default(), &pod).await?;

    // Ensuring Pod has merged resource requirements applied from LimitRange: a limit without
    // a request makes the request, so the default request only fills what has no limit.
    let pod = pods.get(&pod.name_any()).await?;
    pod_has_requirements(
        &pod,
        &resource_list("300m", "150Mi", "150Gi"),
        &resource_list("300m", "500Mi", "500Gi"),
    )?;

    // Failing to create a Pod with less than min resources
    let pod = new_test_pod(
        "pfpod",
        &resource_list("10m", "50Mi", "50Gi"),
        &ResourceList::new(),
    )?;
    ensure!(
        pods.create(&PostParams::default(), &pod).await.is_err(),
        "a pod with less than min resources was created"
    );

    // Failing to create a Pod with more than max resources
    let pod = new_test_pod(
        "pfpod",
        &resource_list("600m", "600Mi", "600Gi"),
        &ResourceList::new(),
    )?;
    ensure!(
        pods.create(&PostParams::default(), &pod).await.is_err(),
        "a pod with more than max resources was created"
    );

    // Updating a LimitRange
    let new_min = resource_list("9m", "49Mi", "49Gi");
    if let Some(item) = limit_range.spec.as_mut().and_then(|s| s.limits.first_mut()) {
        item.min = Some(new_min.clone());
    }
    let limit_range = limit_ranges
        .replace(
            &limit_range.name_any(),
            &PostParams::default(),
            &limit_range,
        )
        .await?;

    // Verifying LimitRange updating is effective (every 2s, for 20s, not at once)
    let mut effective = false;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let lr = limit_ranges.get(&limit_range.name_any()).await?;
        let min = lr
            .spec
            .as_ref()
            .and_then(|s| s.limits.first())
            .and_then(|i| i.min.as_ref());
        if equal_resource_list(&new_min, min).is_ok() {
            effective = true;
            break;
        }
    }
    ensure!(effective, "the LimitRange's new min never showed");

    // Creating a Pod with less than former min resources
    let pod = new_test_pod(
        "pfpod",
        &resource_list("10m", "50Mi", "50Gi"),
        &ResourceList::new(),
    )?;
    pods.create(&PostParams::default(), &pod).await?;

    // Failing to create a Pod with more than max resources
    let pod = new_test_pod(
        "pfpod",
        &resource_list("600m", "600Mi", "600Gi"),
        &ResourceList::new(),
    )?;
    ensure!(
        pods.create(&PostParams::default(), &pod).await.is_err(),
        "a pod with more than max resources was created"
    );

    // Deleting a LimitRange
    let grace = DeleteParams {
        grace_period_seconds: Some(30),
        ..DeleteParams::default()
    };
    limit_ranges.delete(&limit_range.name_any(), &grace).await?;

    // Verifying the LimitRange was deleted (every 5s, not at once)
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Ok(list) = limit_ranges.list(&ListParams::default()).await
            && list.items.is_empty()
        {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the LimitRange has not been deleted");
        }
    }

    // Creating a Pod with more than former max resources: retried every 5s for 30s, as the
    // admission plugin may still hold the deleted LimitRange for a while.
    let pod = new_test_pod(
        "pfpod2",
        &resource_list("600m", "600Mi", "600Gi"),
        &ResourceList::new(),
    )?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(anyhow::Error::from(e)
                    .context("creating a pod with more than the former max resources"));
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(5)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// test/e2e/scheduling/preemption.go

/// preemption.go "PriorityClass endpoints verify PriorityClass endpoints can be operated with
/// different HTTP methods": p1 and p2 made first (the BeforeEach), deleted by their label
/// after (the AfterEach).
async fn priorityclass_endpoints(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<PriorityClass> = ctx.cluster();
    let test_uuid = uuid();
    let selector = format!("e2e={test_uuid}");
    let result = async {
        // Create 2 PriorityClass: p1, p2.
        let mut pcs = Vec::new();
        for i in 1..=2 {
            let name = format!("p{i}");
            let pc: PriorityClass = from(json!({
                "metadata": {"name": name, "labels": {"e2e": test_uuid}},
                "value": i,
            }))?;
            match api.create(&PostParams::default(), &pc).await {
                Ok(pc) => pcs.push(pc),
                // Upstream tolerates an existing one (its test then runs on what it gets).
                Err(kube::Error::Api(e)) if e.reason == "AlreadyExists" => {
                    pcs.push(api.get(&name).await?)
                }
                Err(e) => bail!("expected 'alreadyExists' as error, got instead: {e}"),
            }
        }

        // 1. Patch/Update on immutable fields will fail.
        let patch = json!({"value": pcs[0].value * 10});
        let patched = api
            .patch(
                &pcs[0].name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await;
        ensure!(
            patched.is_err(),
            "expect a patch error on an immutable field"
        );
        let mut copy = pcs[1].clone();
        copy.value *= 10;
        let updated = api
            .replace(&pcs[1].name_any(), &PostParams::default(), &copy)
            .await;
        ensure!(
            updated.is_err(),
            "expect an update error on an immutable field"
        );

        // 2. Patch/Update on mutable fields will succeed.
        let new_desc = "updated description";
        api.patch(
            &pcs[0].name_any(),
            &PatchParams::default(),
            &Patch::Strategic(json!({"description": new_desc})),
        )
        .await?;
        let mut copy = pcs[1].clone();
        copy.description = Some(new_desc.into());
        api.replace(&pcs[1].name_any(), &PostParams::default(), &copy)
            .await?;

        // 3. List existing PriorityClasses.
        api.list(&ListParams::default()).await?;

        // 4. Verify fields of updated PriorityClasses.
        for pc in &pcs {
            let live = api.get(&pc.name_any()).await?;
            ensure!(
                live.value == pc.value,
                "{}: value {} (expected {})",
                pc.name_any(),
                live.value,
                pc.value
            );
            ensure!(
                live.description.as_deref() == Some(new_desc),
                "{}: description {:?} (expected {new_desc:?})",
                pc.name_any(),
                live.description
            );
            ensure_valid_resource_version(live.metadata.resource_version.as_deref())?;
            ensure!(
                compare_resource_version(
                    pc.metadata.resource_version.as_deref().unwrap_or(""),
                    live.metadata.resource_version.as_deref().unwrap_or("")
                )? == std::cmp::Ordering::Less,
                "changed object should have a larger resource version"
            );
        }
        anyhow::Ok(())
    }
    .await;
    // Collection deletion on created PriorityClasses.
    let cleanup = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&selector),
        )
        .await;
    result?;
    cleanup.context("deleting the test's PriorityClasses")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/node/node_lifecycle.go

/// node_lifecycle.go "should run through the lifecycle of a node": a fake node, Ready but
/// unschedulable, created, read, patched, listed, updated and deleted.
async fn node_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let nodes: Api<Node> = ctx.cluster();
    let name = ctx.unique("e2e-fake-node");
    let fake: Node = from(json!({
        "metadata": {"name": name},
        "spec": {"unschedulable": true},
        "status": {
            "phase": "Running",
            "conditions": [{
                "status": "True",
                "message": "Set from e2e test",
                "reason": "E2E",
                "type": "Ready",
            }],
        },
    }))?;

    // Create
    let created = nodes
        .create(&PostParams::default(), &fake)
        .await
        .with_context(|| format!("failed to create node {name:?}"))?;
    let result = async {
        ensure!(
            created.name_any() == name,
            "Checking that the node has been created: got {}",
            created.name_any()
        );

        // Getting
        let retrieved = nodes
            .get(&name)
            .await
            .with_context(|| format!("Failed to retrieve Node {name:?}"))?;
        ensure!(
            retrieved.name_any() == name,
            "Checking that the retrieved name has been found: got {}",
            retrieved.name_any()
        );

        // Patching
        let patched = nodes
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(json!({"metadata": {"labels": {&name: "patched"}}})),
            )
            .await
            .with_context(|| format!("Failed to patch {name:?}"))?;
        ensure!(
            patched.labels().get(&name).map(String::as_str) == Some("patched"),
            "Checking that patched label has been applied: {:?}",
            patched.labels()
        );

        // Listing nodes with LabelSelector
        let patched_selector = format!("{name}=patched");
        let listed = nodes
            .list(&ListParams::default().labels(&patched_selector))
            .await
            .context("failed to list nodes")?;
        ensure!(
            listed.items.len() == 1,
            "confirm that the patched node has been found: {} nodes listed",
            listed.items.len()
        );

        // Updating
        let updated = retry_on_conflict(|| async {
            let mut node = nodes.get(&name).await?;
            node.labels_mut().insert(name.clone(), "updated".into());
            nodes.replace(&name, &PostParams::default(), &node).await
        })
        .await
        .with_context(|| format!("failed to update {name:?}"))?;
        ensure!(
            updated.labels().get(&name).map(String::as_str) == Some("updated"),
            "Checking that updated label has been applied: {:?}",
            updated.labels()
        );

        // Delete
        nodes
            .delete(&name, &DeleteParams::default())
            .await
            .context("failed to delete node")?;

        // Confirm deletion (every 5s upstream)
        eventually(WAIT, &format!("node {name} to be gone"), || async {
            Ok(nodes.get_opt(&name).await?.is_none().then_some(()))
        })
        .await
        .context("Timeout while waiting to confirm Node deletion")
    }
    .await;
    if result.is_err() {
        let _ = nodes.delete(&name, &DeleteParams::default()).await;
    }
    result
}

// ---------------------------------------------------------------------------------------------
// test/e2e/common/node/runtimeclass.go

/// e2eruntimeclass.NewRuntimeClassPod
fn runtime_class_pod(runtime_class: &str) -> anyhow::Result<Pod> {
    from(json!({
        "metadata": {"generateName": format!("test-runtimeclass-{runtime_class}-")},
        "spec": {
            "runtimeClassName": runtime_class,
            "containers": [{"name": "test", "image": BUSYBOX, "command": ["true"]}],
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
        },
    }))
}

/// expectPodRejection: the create is refused as Forbidden.
async fn expect_pod_rejection(ctx: &Ctx, pod: Pod) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    match pods.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(e))
            if e.reason == "Forbidden" || (e.reason.is_empty() && e.code == 403) =>
        {
            Ok(())
        }
        Err(e) => bail!("expected forbidden error, got {e:?}"),
        Ok(p) => bail!("should be forbidden: pod {} was created", p.name_any()),
    }
}

/// runtimeclass.go "should reject a Pod requesting a non-existent RuntimeClass"
async fn runtimeclass_nonexistent(ctx: Ctx) -> anyhow::Result<()> {
    let name = format!("{}-nonexistent", ctx.namespace);
    expect_pod_rejection(&ctx, runtime_class_pod(&name)?).await
}

/// runtimeclass.go "should reject a Pod requesting a deleted RuntimeClass"
async fn runtimeclass_deleted(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<RuntimeClass> = ctx.cluster();
    // createRuntimeClass(f, "delete-me", "runc")
    let name = format!("{}-delete-me", ctx.namespace);
    let rc: RuntimeClass = from(json!({"metadata": {"name": name}, "handler": "runc"}))?;
    api.create(&PostParams::default(), &rc)
        .await
        .context("failed to create RuntimeClass resource")?;
    let result = async {
        // Deleting RuntimeClass
        api.delete(&name, &DeleteParams::default())
            .await
            .with_context(|| format!("failed to delete RuntimeClass {name}"))?;
        // Waiting for the RuntimeClass to disappear
        eventually(WAIT, "the RuntimeClass to disappear", || async {
            Ok(api.get_opt(&name).await?.is_none().then_some(()))
        })
        .await?;
        expect_pod_rejection(&ctx, runtime_class_pod(&name)?).await
    }
    .await;
    if result.is_err() {
        let _ = api.delete(&name, &DeleteParams::default()).await;
    }
    result
}

/// runtimeclass.go "should support RuntimeClasses API operations": discovery, then create,
/// watch, get, list, patch, update, delete and deletecollection of three labelled classes
/// (runtimeclasstest.NewRuntimeClass(name, handler), named after the test's namespace, the
/// test's f.UniqueName).
async fn runtimeclass_api(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<RuntimeClass> = ctx.cluster();
    let unique = ctx.namespace.clone();
    let selector = format!("test={unique}");
    let result = runtimeclass_api_operations(&ctx, &api, &unique, &selector).await;
    if result.is_err() {
        let _ = api
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&selector),
            )
            .await;
    }
    result
}

async fn runtimeclass_api_operations(
    ctx: &Ctx,
    api: &Api<RuntimeClass>,
    unique: &str,
    selector: &str,
) -> anyhow::Result<()> {
    let make_rc = |name: String, handler: String| -> anyhow::Result<RuntimeClass> {
        from(json!({"metadata": {"name": name, "labels": {"test": unique}}, "handler": handler}))
    };
    let rc = make_rc(
        format!("{unique}-handler"),
        format!("{unique}-conformance-runtime-class"),
    )?;
    let rc2 = make_rc(
        format!("{unique}-handler2"),
        format!("{unique}-conformance-runtime-class2"),
    )?;
    let rc3 = make_rc(
        format!("{unique}-handler3"),
        format!("{unique}-conformance-runtime-class3"),
    )?;
    let has_v1 = |versions: &Value| {
        versions
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["version"] == "v1")
    };

    // getting /apis
    let groups: Value = ctx.get_json("/apis").await?;
    let found = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|g| g["name"] == "node.k8s.io" && has_v1(&g["versions"]));
    ensure!(
        found,
        "expected RuntimeClass API group/version, got {}",
        groups["groups"]
    );

    // getting /apis/node.k8s.io
    let group: Value = ctx.get_json("/apis/node.k8s.io").await?;
    ensure!(
        has_v1(&group["versions"]),
        "expected RuntimeClass API version, got {}",
        group["versions"]
    );

    // getting /apis/node.k8s.io/v1
    let resources: Value = ctx.get_json("/apis/node.k8s.io/v1").await?;
    let found = resources["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["name"] == "runtimeclasses");
    ensure!(
        found,
        "expected runtimeclasses, got {}",
        resources["resources"]
    );

    // creating
    let created = api.create(&PostParams::default(), &rc).await?;
    match api.create(&PostParams::default(), &rc).await {
        Err(kube::Error::Api(e)) if e.reason == "AlreadyExists" => {}
        other => bail!("expected 409, got {other:?}"),
    }
    api.create(&PostParams::default(), &rc2).await?;

    // watching
    let mut events = api
        .watch(&WatchParams::default().labels(selector), "0")
        .await?
        .boxed();

    // added for a watch
    api.create(&PostParams::default(), &rc3).await?;

    // getting
    let gotten = api.get(&created.name_any()).await?;
    ensure!(
        gotten.metadata.uid == created.metadata.uid,
        "got uid {:?}, created {:?}",
        gotten.metadata.uid,
        created.metadata.uid
    );

    // listing
    let listed = api.list(&ListParams::default().labels(selector)).await?;
    ensure!(
        listed.items.len() == 3,
        "filtered list should have 3 items, got {}",
        listed.items.len()
    );

    // patching
    let patched = api
        .patch(
            &created.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"patched": "true"}}})),
        )
        .await?;
    ensure!(
        patched.annotations().get("patched").map(String::as_str) == Some("true"),
        "patched object should have the applied annotation"
    );

    // updating
    let mut to_update = patched.clone();
    to_update
        .annotations_mut()
        .insert("updated".into(), "true".into());
    let updated = api
        .replace(&created.name_any(), &PostParams::default(), &to_update)
        .await?;
    ensure!(
        updated.annotations().get("updated").map(String::as_str) == Some("true"),
        "updated object should have the applied annotation"
    );

    // waiting for watch events with expected annotations (upstream's loop ends at the first
    // of the three it sees)
    let (mut saw_added, mut saw_patched, mut saw_updated) = (false, false, false);
    while !saw_added && !saw_patched && !saw_updated {
        let next = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .map_err(|_| anyhow!("timed out waiting for watch event"))?;
        let Some(event) = next else {
            bail!("watch channel should not close");
        };
        match event? {
            WatchEvent::Modified(watched) => {
                let annotations = watched.annotations();
                if annotations.get("patched").map(String::as_str) == Some("true") {
                    saw_patched = true;
                } else if annotations.get("updated").map(String::as_str) == Some("true") {
                    saw_updated = true;
                }
            }
            WatchEvent::Added(_) => saw_added = true,
            _ => {}
        }
    }
    drop(events);

    // deleting
    api.delete(&created.name_any(), &DeleteParams::default())
        .await?;
    let gone = api_error(api.get(&created.name_any()).await)?;
    ensure!(gone.code == 404, "expected 404, got {gone:?}");
    let listed = api.list(&ListParams::default().labels(selector)).await?;
    ensure!(
        listed.items.len() == 2,
        "filtered list should have 2 items, got {}",
        listed.items.len()
    );

    // deleting a collection
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(selector),
    )
    .await?;
    let listed = api.list(&ListParams::default().labels(selector)).await?;
    ensure!(
        listed.items.is_empty(),
        "filtered list should have 0 items, got {}",
        listed.items.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/node/pods.go

/// pods.go "Pods Set QOS Class should be set on Pods with matching resource requests and
/// limits for memory and cpu": read back right after the create, the pod is Guaranteed.
async fn pod_qos_class(ctx: Ctx) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    let name = format!("pod-qos-class-{}", uuid());
    let pod: Pod = from(json!({
        "metadata": {"name": name, "labels": {"name": name}},
        "spec": {"containers": [{
            "name": "agnhost",
            "image": AGNHOST,
            "args": ["pause"],
            "resources": {
                "limits": {"cpu": "100m", "memory": "100Mi"},
                "requests": {"cpu": "100m", "memory": "100Mi"},
            },
        }]},
    }))?;
    // submitting the pod to kubernetes
    pods.create(&PostParams::default(), &pod).await?;
    // verifying QOS class is set on the pod
    let pod = pods.get(&name).await.context("failed to query for pod")?;
    let qos = pod.status.as_ref().and_then(|s| s.qos_class.clone());
    ensure!(
        qos.as_deref() == Some("Guaranteed"),
        "the pod's QOS class is {qos:?}, not Guaranteed"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/common/node/sysctl.go

/// sysctl.go "should reject invalid sysctls": the two malformed names are refused, the
/// well-formed ones (safe or not) are not named in the error.
async fn sysctls_invalid(ctx: Ctx) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    let pod: Pod = from(json!({
        "metadata": {"name": format!("sysctl-{}", uuid()), "annotations": {}},
        "spec": {
            "containers": [{"name": "test-container", "image": BUSYBOX}],
            "restartPolicy": "Never",
            "securityContext": {"sysctls": [
                {"name": "foo-", "value": "bar"},
                {"name": "kernel.shmmax", "value": "100000000"},
                {"name": "safe-and-unsafe", "value": "100000000"},
                {"name": "bar..", "value": "42"},
            ]},
        },
    }))?;
    // Creating a pod with one valid and two invalid sysctls
    let err = api_error(pods.create(&PostParams::default(), &pod).await)?;
    let message = &err.message;
    ensure!(
        message.contains(r#"Invalid value: "foo-""#),
        "the error does not name \"foo-\": {message}"
    );
    ensure!(
        message.contains(r#"Invalid value: "bar..""#),
        "the error does not name \"bar..\": {message}"
    );
    ensure!(
        !message.contains("safe-and-unsafe"),
        "the error names safe-and-unsafe: {message}"
    );
    ensure!(
        !message.contains("kernel.shmmax"),
        "the error names kernel.shmmax: {message}"
    );
    Ok(())
}
