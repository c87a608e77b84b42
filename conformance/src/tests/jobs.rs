//! [sig-apps] Job conformance tests of test/e2e/apps/job.go (v1.33) on pod failure policies,
//! success policies, per-index back-off limits and local restarts. (The Job tests of
//! deletion, indexes, adoption, status and lifecycle are ported in apps.rs,
//! apps_controllers.rs and apps_api.rs.)
//!
//! On `kelp simulate` nodes no containers run, so the simulated kubelet decides how a pod
//! ends: `sh -c "exit N"` exits N, a command it cannot read exits 0. Where upstream's container
//! script picks its exit code from JOB_COMPLETION_INDEX (failOddSucceedEven), the job's pod
//! template also carries `kelp.dev/simulate-exit-code-by-index`, which gives each completion
//! index the same fate; upstream's command stays as it is.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use rand::Rng;
use serde_json::{Value, json};

use super::tests;
use crate::framework::{eventually, from, random_ready_schedulable_node};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-apps] Job should allow to use the pod failure policy on exit code to fail the job early" => pod_failure_policy_fail_job,
        "[sig-apps] Job with successPolicy should succeeded when all indexes succeeded" => success_policy_all_indexes,
        "[sig-apps] Job with successPolicy succeededIndexes rule should succeeded even when some indexes remain pending" => success_policy_succeeded_indexes,
        "[sig-apps] Job with successPolicy succeededCount rule should succeeded even when some indexes remain pending" => success_policy_succeeded_count,
        "[sig-apps] Job should execute all indexes despite some failing when using backoffLimitPerIndex" => backoff_limit_per_index,
        "[sig-apps] Job should terminate job execution when the number of failed indexes exceeds maxFailedIndexes" => max_failed_indexes,
        "[sig-apps] Job should mark indexes as failed when the FailIndex action is matched in podFailurePolicy" => fail_index_action,
        "[sig-apps] Job should run a job to completion when tasks sometimes fail and are locally restarted" => fail_once_locally_restarted,
    ]
}

/// How long one wait on the job controller may take (upstream's JobTimeout is 15 minutes; a
/// test here has three in all).
const WAIT: Duration = Duration::from_secs(60);

/// Upstream's imageutils BusyBox; on simulated nodes any image runs.
const BUSYBOX: &str = "busybox:1.37";

/// The simulated kubelet's annotation of exit codes by completion index (`"1=1,3=1"`).
const SIMULATE_EXIT_CODE_BY_INDEX: &str = "kelp.dev/simulate-exit-code-by-index";
/// The simulated kubelet's annotation of the exit code of every pod.
const SIMULATE_EXIT_CODE: &str = "kelp.dev/simulate-exit-code";

/// e2ejob's JobSelectorKey: the label of the template, which GetJobPods selects on.
const JOB_SELECTOR_KEY: &str = "job";

/// The upstream default of backoffLimit, which the tests pass explicitly.
const DEFAULT_BACKOFF_LIMIT: i32 = 6;

// ---------------------------------------------------------------------------------------------
// test/e2e/framework/job: fixtures and waits

/// e2ejob.NewTestJob: a job whose pods do one of upstream's behaviours.
fn new_test_job(
    behavior: &str,
    name: &str,
    restart_policy: &str,
    parallelism: i32,
    completions: i32,
    backoff_limit: i32,
) -> Value {
    new_test_job_on_node(
        behavior,
        name,
        restart_policy,
        parallelism,
        completions,
        backoff_limit,
        None,
    )
}

/// e2ejob.NewTestJobOnNode: NewTestJob with its pods held to one node (by its hostname label);
/// failOnce then keeps its marker file in a hostPath directory of that node.
fn new_test_job_on_node(
    behavior: &str,
    name: &str,
    restart_policy: &str,
    parallelism: i32,
    completions: i32,
    backoff_limit: i32,
    node: Option<&str>,
) -> Value {
    let mut job = json!({
        "metadata": {"name": name},
        "spec": {
            "parallelism": parallelism,
            "completions": completions,
            "backoffLimit": backoff_limit,
            "manualSelector": false,
            "template": {
                "metadata": {"labels": {JOB_SELECTOR_KEY: name}},
                "spec": {
                    "restartPolicy": restart_policy,
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "containers": [{
                        "name": "c",
                        "image": BUSYBOX,
                        "volumeMounts": [{"mountPath": "/data", "name": "data"}],
                        "securityContext": {},
                    }],
                },
            },
        },
    });
    if let Some(node) = node {
        job["spec"]["template"]["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": node});
    }
    match behavior {
        "fail" => container(&mut job)["command"] = json!(["/bin/sh", "-c", "exit 1"]),
        "succeed" => container(&mut job)["command"] = json!(["/bin/sh", "-c", "exit 0"]),
        "failOddSucceedEven" => {
            container(&mut job)["command"] = json!(["sh", "-c"]);
            container(&mut job)["args"] = json!([
                "\n\tif [ $(expr ${JOB_COMPLETION_INDEX} % 2) -ne 0 ]; then\n\t\texit 1\n\telse\n\t\texit 0\n\tfi\n\t"
            ]);
            // Simulated pods run no script: the odd indexes are told to exit 1 as it would.
            let odd: Vec<String> = (0..completions)
                .filter(|i| i % 2 == 1)
                .map(|i| format!("{i}=1"))
                .collect();
            job["spec"]["template"]["metadata"]["annotations"] =
                json!({SIMULATE_EXIT_CODE_BY_INDEX: odd.join(",")});
        }
        "failOnce" => {
            // Fails the first time (no marker file yet), succeeds once the marker is there.
            if node.is_some() {
                setup_host_path_directory(&mut job);
            }
            container(&mut job)["command"] = json!(["/bin/sh", "-c"]);
            container(&mut job)["args"] = json!([
                "\n\tif [[ -r /data/foo ]]\n\tthen\n\t\texit 0\n\telse\n\t\ttouch /data/foo\n\t\texit 1\n\tfi\n"
            ]);
        }
        // "succeeded" and others: no command, the image's own (which exits 0).
        _ => {}
    }
    job
}

/// The job's (only) container.
fn container(job: &mut Value) -> &mut Value {
    &mut job["spec"]["template"]["spec"]["containers"][0]
}

/// setupHostPathDirectory: the data volume becomes a fresh hostPath directory of the node,
/// written by a privileged container, so the marker file outlives the pod.
fn setup_host_path_directory(job: &mut Value) {
    let dir = format!("/tmp/job-e2e/{}", random_string(10));
    job["spec"]["template"]["spec"]["volumes"][0] =
        json!({"name": "data", "hostPath": {"path": dir, "type": "DirectoryOrCreate"}});
    container(job)["securityContext"]["privileged"] = json!(true);
}

/// utilrand.String: `n` characters of upstream's alphabet.
fn random_string(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// e2ejob.CreateJob
async fn create_job(ctx: &Ctx, job: Value) -> anyhow::Result<Job> {
    let jobs: Api<Job> = ctx.namespaced();
    jobs.create(&PostParams::default(), &from(job)?)
        .await
        .with_context(|| format!("failed to create job in namespace: {}", ctx.namespace))
}

/// e2ejob.GetJob
async fn get_job(ctx: &Ctx, name: &str) -> anyhow::Result<Job> {
    let jobs: Api<Job> = ctx.namespaced();
    jobs.get(name)
        .await
        .context("failed to retrieve latest job object")
}

/// The job has a condition of this type with status True.
fn has_condition(job: &Job, type_: &str) -> bool {
    conditions(job).any(|c| c.type_ == type_ && c.status == "True")
}

fn conditions(job: &Job) -> impl Iterator<Item = &JobCondition> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
}

/// e2ejob.WaitForJobCondition: a condition of the type with status True, and (when given) the
/// reason.
async fn wait_for_job_condition(
    ctx: &Ctx,
    name: &str,
    type_: &str,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    let jobs: Api<Job> = ctx.namespaced();
    eventually(
        WAIT,
        &format!(
            "job {name:?} to reach the expected condition {type_:?} with reason {:?}",
            reason.unwrap_or("<nil>")
        ),
        || async {
            let j = jobs.get(name).await?;
            let found = conditions(&j).any(|c| {
                c.type_ == type_
                    && c.status == "True"
                    && reason.is_none_or(|r| c.reason.as_deref() == Some(r))
            });
            Ok(found.then_some(()))
        },
    )
    .await
}

/// e2ejob.WaitForJobComplete: `completions` pods succeeded (a Failed job ends the wait), then
/// the Complete condition with `reason`.
async fn wait_for_job_complete(
    ctx: &Ctx,
    name: &str,
    reason: &str,
    completions: i32,
) -> anyhow::Result<()> {
    let jobs: Api<Job> = ctx.namespaced();
    eventually(
        WAIT,
        &format!("job {name:?} to have {completions} successful pods"),
        || async {
            let j = jobs.get(name).await?;
            if has_condition(&j, "Failed") {
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
    wait_for_job_condition(ctx, name, "Complete", Some(reason)).await
}

/// e2ejob.WaitForJobFailed: the Failed condition (a Complete job ends the wait).
async fn wait_for_job_failed(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let jobs: Api<Job> = ctx.namespaced();
    eventually(WAIT, &format!("job {name:?} to fail"), || async {
        let j = jobs.get(name).await?;
        if has_condition(&j, "Complete") {
            bail!(
                "job completed while waiting for its failure: {:?}",
                j.status
            );
        }
        Ok(has_condition(&j, "Failed").then_some(()))
    })
    .await
}

/// The status counts the tests check, as upstream reads them: the int32 ones 0 when absent,
/// the pointer ones (ready, terminating) as they are.
struct Counts {
    active: i32,
    ready: Option<i32>,
    terminating: Option<i32>,
    failed: i32,
    succeeded: i32,
    completed_indexes: String,
    failed_indexes: Option<String>,
}

fn counts(job: &Job) -> Counts {
    let s = job.status.clone().unwrap_or_default();
    Counts {
        active: s.active.unwrap_or(0),
        ready: s.ready,
        terminating: s.terminating,
        failed: s.failed.unwrap_or(0),
        succeeded: s.succeeded.unwrap_or(0),
        completed_indexes: s.completed_indexes.unwrap_or_default(),
        failed_indexes: s.failed_indexes,
    }
}

/// The checks upstream makes of a job that ended with no pod left: active 0, ready and
/// terminating 0 (set, not absent).
fn ensure_no_pods_left(c: &Counts) -> anyhow::Result<()> {
    ensure!(c.active == 0, "expected status.active 0, got {}", c.active);
    ensure!(
        c.ready == Some(0),
        "expected status.ready 0, got {:?}",
        c.ready
    );
    ensure!(
        c.terminating == Some(0),
        "expected status.terminating 0, got {:?}",
        c.terminating
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/apps/job.go

/// "should allow to use the pod failure policy on exit code to fail the job early": a failOnce
/// job on one node whose podFailurePolicy fails the job on exit code 1.
async fn pod_failure_policy_fail_job(ctx: Ctx) -> anyhow::Result<()> {
    // Looking for a node to schedule job pod
    let node = random_ready_schedulable_node(&ctx).await?.name_any();

    // Creating a job
    let name = "pod-failure-failjob";
    let mut job = new_test_job_on_node(
        "failOnce",
        name,
        "Never",
        2,
        4,
        DEFAULT_BACKOFF_LIMIT,
        Some(node.as_str()),
    );
    job["spec"]["podFailurePolicy"] = json!({"rules": [{
        "action": "FailJob",
        "onExitCodes": {"operator": "In", "values": [1]},
    }]});
    // Simulated pods keep no marker file: they exit 1 as failOnce's first run does.
    job["spec"]["template"]["metadata"]["annotations"] = json!({SIMULATE_EXIT_CODE: "1"});
    create_job(&ctx, job).await?;

    // Ensuring job fails
    wait_for_job_failed(&ctx, name).await.with_context(|| {
        format!(
            "failed to ensure job failure in namespace: {}",
            ctx.namespace
        )
    })
}

/// "with successPolicy should succeeded when all indexes succeeded"
async fn success_policy_all_indexes(ctx: Ctx) -> anyhow::Result<()> {
    let completions = 2;

    // Creating an indexed job with successPolicy
    let name = "with-success-policy-all-index-succeeded";
    let mut job = new_test_job(
        "succeeded",
        name,
        "Never",
        2,
        completions,
        DEFAULT_BACKOFF_LIMIT,
    );
    job["spec"]["completionMode"] = json!("Indexed");
    job["spec"]["successPolicy"] = json!({"rules": [{"succeededCount": 2}]});
    create_job(&ctx, job).await?;

    // Awaiting for the job to have the interim SuccessCriteriaMet with SuccessPolicy reason
    // condition
    wait_for_job_condition(&ctx, name, "SuccessCriteriaMet", Some("SuccessPolicy"))
        .await
        .context(
            "failed to ensure that job has SuccessCriteriaMet with SuccessPolicy reason condition",
        )?;

    // Ensure that the job reaches completions
    wait_for_job_complete(&ctx, name, "SuccessPolicy", completions)
        .await
        .context("failed to ensure that job completed")?;

    // Verifying that the job status to ensure correct final state
    let c = counts(&get_job(&ctx, name).await?);
    ensure_no_pods_left(&c)?;
    ensure!(c.failed == 0, "expected status.failed 0, got {}", c.failed);
    Ok(())
}

/// "with successPolicy succeededIndexes rule should succeeded even when some indexes remain
/// pending"
async fn success_policy_succeeded_indexes(ctx: Ctx) -> anyhow::Result<()> {
    // Creating an indexed job with successPolicy succeededIndexes rule
    let name = "with-success-policy-succeeded-indexed";
    let mut job = new_test_job(
        "failOddSucceedEven",
        name,
        "Never",
        2,
        5,
        DEFAULT_BACKOFF_LIMIT,
    );
    job["spec"]["completionMode"] = json!("Indexed");
    job["spec"]["successPolicy"] = json!({"rules": [{"succeededIndexes": "0"}]});
    create_job(&ctx, job).await?;

    // Awaiting for the job to have the interim SuccessCriteriaMet with SuccessPolicy reason
    // condition
    wait_for_job_condition(&ctx, name, "SuccessCriteriaMet", Some("SuccessPolicy"))
        .await
        .context(
            "failed to ensure that job has SuccessCriteriaMet with SuccessPolicy reason condition",
        )?;

    // Ensure that the job reaches completions
    wait_for_job_complete(&ctx, name, "SuccessPolicy", 1)
        .await
        .context("failed to ensure that job completed")?;

    // Verifying that the only appropriately index succeeded
    let c = counts(&get_job(&ctx, name).await?);
    ensure!(
        c.completed_indexes == "0",
        "expected status.completedIndexes \"0\", got {:?}",
        c.completed_indexes
    );
    ensure_no_pods_left(&c)
}

/// "with successPolicy succeededCount rule should succeeded even when some indexes remain
/// pending"
async fn success_policy_succeeded_count(ctx: Ctx) -> anyhow::Result<()> {
    // Creating an indexed job with successPolicy succeededCount rule
    let name = "with-success-policy-succeeded-count";
    let mut job = new_test_job("failOddSucceedEven", name, "Never", 2, 5, i32::MAX);
    job["spec"]["completionMode"] = json!("Indexed");
    job["spec"]["successPolicy"] = json!({"rules": [{"succeededCount": 1}]});
    create_job(&ctx, job).await?;

    // Awaiting for the job to have the interim SuccessCriteriaMet condition with SuccessPolicy
    // reason
    wait_for_job_condition(&ctx, name, "SuccessCriteriaMet", Some("SuccessPolicy"))
        .await
        .context(
            "failed to ensure that the job has SuccessCriteriaMet condition with SuccessPolicy rule",
        )?;

    // Ensure that the job reaches completions
    wait_for_job_complete(&ctx, name, "SuccessPolicy", 1)
        .await
        .context("failed to ensure that job completed")?;

    // Verifying that the job status to ensure correct final state
    let c = counts(&get_job(&ctx, name).await?);
    ensure!(
        c.completed_indexes == "0",
        "expected status.completedIndexes \"0\", got {:?}",
        c.completed_indexes
    );
    ensure_no_pods_left(&c)
}

/// "should execute all indexes despite some failing when using backoffLimitPerIndex": odd
/// indexes fail twice each (backoffLimitPerIndex 1), even ones succeed.
async fn backoff_limit_per_index(ctx: Ctx) -> anyhow::Result<()> {
    // Creating an indexed job with backoffLimit per index and failing pods
    let name = "with-backoff-limit-per-index";
    let mut job = new_test_job(
        "failOddSucceedEven",
        name,
        "Never",
        2,
        4,
        DEFAULT_BACKOFF_LIMIT,
    );
    job["spec"]
        .as_object_mut()
        .context("job spec")?
        .remove("backoffLimit");
    job["spec"]["backoffLimitPerIndex"] = json!(1);
    job["spec"]["completionMode"] = json!("Indexed");
    create_job(&ctx, job).await?;

    // Awaiting for the job to fail as there are failed indexes
    wait_for_job_failed(&ctx, name).await.with_context(|| {
        format!(
            "failed to ensure job completion in namespace: {}",
            ctx.namespace
        )
    })?;

    // Verifying the Job status fields to ensure all indexes were executed
    let c = counts(&get_job(&ctx, name).await?);
    ensure!(
        c.failed_indexes.as_deref() == Some("1,3"),
        "expected status.failedIndexes \"1,3\", got {:?}",
        c.failed_indexes
    );
    ensure!(
        c.completed_indexes == "0,2",
        "expected status.completedIndexes \"0,2\", got {:?}",
        c.completed_indexes
    );
    ensure!(c.failed == 4, "expected status.failed 4, got {}", c.failed);
    ensure!(
        c.succeeded == 2,
        "expected status.succeeded 2, got {}",
        c.succeeded
    );
    Ok(())
}

/// "should terminate job execution when the number of failed indexes exceeds
/// maxFailedIndexes": one pod at a time, every one failing, no index may fail.
async fn max_failed_indexes(ctx: Ctx) -> anyhow::Result<()> {
    // we use parallelism=1 to make sure in the asserts only one pod was created
    // Creating an indexed job with backoffLimit per index and maxFailedIndexes
    let name = "with-max-failed-indexes";
    let mut job = new_test_job("fail", name, "Never", 1, 4, DEFAULT_BACKOFF_LIMIT);
    job["spec"]
        .as_object_mut()
        .context("job spec")?
        .remove("backoffLimit");
    job["spec"]["backoffLimitPerIndex"] = json!(0);
    job["spec"]["maxFailedIndexes"] = json!(0);
    job["spec"]["completionMode"] = json!("Indexed");
    create_job(&ctx, job).await?;

    // Awaiting for the job to fail as the number of max failed indexes is exceeded
    wait_for_job_failed(&ctx, name).await.with_context(|| {
        format!(
            "failed to ensure job completion in namespace: {}",
            ctx.namespace
        )
    })?;

    // Verifying the Job status fields to ensure early termination of the job
    let c = counts(&get_job(&ctx, name).await?);
    ensure!(
        c.failed_indexes.as_deref() == Some("0"),
        "expected status.failedIndexes \"0\", got {:?}",
        c.failed_indexes
    );
    ensure!(c.failed == 1, "expected status.failed 1, got {}", c.failed);
    Ok(())
}

/// "should mark indexes as failed when the FailIndex action is matched in podFailurePolicy":
/// the odd index fails at once by the FailIndex rule, though backoffLimitPerIndex is 1.
async fn fail_index_action(ctx: Ctx) -> anyhow::Result<()> {
    // Creating an indexed job with failing pods matching the FailIndex action
    let name = "matching-fail-index-action";
    let mut job = new_test_job(
        "failOddSucceedEven",
        name,
        "Never",
        2,
        2,
        DEFAULT_BACKOFF_LIMIT,
    );
    job["spec"]
        .as_object_mut()
        .context("job spec")?
        .remove("backoffLimit");
    job["spec"]["backoffLimitPerIndex"] = json!(1);
    job["spec"]["podFailurePolicy"] = json!({"rules": [{
        "action": "FailIndex",
        "onExitCodes": {"operator": "In", "values": [1]},
    }]});
    job["spec"]["completionMode"] = json!("Indexed");
    create_job(&ctx, job).await?;

    // Awaiting for the job to fail as all indexes are failed
    wait_for_job_failed(&ctx, name).await.with_context(|| {
        format!(
            "failed to ensure job completion in namespace: {}",
            ctx.namespace
        )
    })?;

    // Verifying the Job status fields to ensure the upper indexes didn't execute
    let c = counts(&get_job(&ctx, name).await?);
    ensure!(
        c.failed_indexes.as_deref() == Some("1"),
        "expected status.failedIndexes \"1\", got {:?}",
        c.failed_indexes
    );
    ensure!(
        c.completed_indexes == "0",
        "expected status.completedIndexes \"0\", got {:?}",
        c.completed_indexes
    );
    ensure!(c.failed == 1, "expected status.failed 1, got {}", c.failed);
    ensure!(
        c.succeeded == 1,
        "expected status.succeeded 1, got {}",
        c.succeeded
    );
    Ok(())
}

/// "should run a job to completion when tasks sometimes fail and are locally restarted": one
/// failure, then a success, restarted in place (restartPolicy OnFailure). A simulated pod's
/// container is not restarted: it ends as the restarted one does, Succeeded.
async fn fail_once_locally_restarted(ctx: Ctx) -> anyhow::Result<()> {
    let completions = 4;

    // Creating a job
    let name = "fail-once-local";
    let job = new_test_job(
        "failOnce",
        name,
        "OnFailure",
        2,
        completions,
        DEFAULT_BACKOFF_LIMIT,
    );
    create_job(&ctx, job).await?;

    // Ensuring job reaches completions
    wait_for_job_complete(&ctx, name, "CompletionsReached", completions)
        .await
        .with_context(|| {
            format!(
                "failed to ensure job completion in namespace: {}",
                ctx.namespace
            )
        })
}
