//! [sig-apps] CronJob controller tests (test/e2e/apps/cronjob.go): the concurrency policies,
//! suspension, catching up after missed schedules, the active list and the history limits.
//! ("should support CronJob API operations" is ported in apps.rs.)
//!
//! Every cronjob here runs on upstream's "*/1 * * * ?" schedule, so each test waits on the
//! minute-granular cron clock. Upstream waits up to cronJobTimeout (5 minutes) for anything;
//! here a wait for one firing gets the minute plus a margin, a wait for two firings two
//! minutes plus a margin, and a check that something does NOT happen watches for a little
//! over a minute (so it spans at least one firing), keeping each test within the run's
//! per-test limit. Each test's comment says what it shortened.
//!
//! On `kelp simulate` nodes no containers run: a pod that does not restart finishes after the
//! N seconds of its `sleep N` (upstream's sleepCommand keeps a job active for 5 minutes, longer
//! than any test here), or after a second, Failed when its command is `/bin/false`
//! (upstream's failureCommand) and Succeeded otherwise (`/bin/true`, successCommand).
//!
//! The tests run alongside the rest of the suite: each looks only at its own namespace.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::{Value, json};

use super::tests;
use crate::framework::from;
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    let mut list = tests![
        "[sig-apps] CronJob should schedule multiple jobs concurrently" => cronjob_allow_concurrent,
        "[sig-apps] CronJob should not schedule jobs when suspended [Slow]" => cronjob_suspended,
        "[sig-apps] CronJob should not schedule new jobs when ForbidConcurrent [Slow]" => cronjob_forbid_concurrent,
        "[sig-apps] CronJob should replace jobs when ReplaceConcurrent" => cronjob_replace_concurrent,
        "[sig-apps] CronJob should be able to schedule after more than 100 missed schedule" => cronjob_many_missed,
        "[sig-apps] CronJob should remove from active list jobs that have been deleted" => cronjob_deleted_job_not_active,
        "[sig-apps] CronJob should delete successful finished jobs with limit of one successful job" => cronjob_successful_history_limit,
        "[sig-apps] CronJob should delete failed finished jobs with limit of one job" => cronjob_failed_history_limit,
    ];
    // They spend their time waiting on the cron clock and look only at their own namespaces:
    // they run beside the other tests.
    for test in &mut list {
        test.clocked = true;
    }
    list
}

/// framework.Poll: how often upstream's cronjob waits look.
const POLL: Duration = Duration::from_secs(2);
/// A wait for the next firing of an every-minute schedule (and what follows from it): the
/// minute, plus a margin for the controllers. Upstream's is cronJobTimeout, 5 minutes.
const ONE_FIRING: Duration = Duration::from_secs(75);
/// A wait for two firings of an every-minute schedule. Upstream's is cronJobTimeout.
const TWO_FIRINGS: Duration = Duration::from_secs(150);
/// How long a test watches for something that must not happen: over a minute, so the window
/// holds at least one firing (and the controller's reaction to it). Upstream's is
/// cronJobTimeout.
const QUIET: Duration = Duration::from_secs(65);
/// ensureHistoryLimits' wait for the first finished job: a firing, and for a failing job its
/// two pods with the job controller's 10 s back-off between them (upstream's is
/// cronJobTimeout).
const FINISHED_WAIT: Duration = Duration::from_secs(90);
/// A wait on the garbage collector, for a job's pods (upstream's is 10 minutes, then 20).
const GC_WAIT: Duration = Duration::from_secs(30);
/// waitForJobNotActive: the controller notices a deleted job (upstream's is cronJobTimeout).
const NOT_ACTIVE_WAIT: Duration = Duration::from_secs(30);
/// waitForEventWithReason's own timeout, upstream's 30 seconds.
const EVENT_WAIT: Duration = Duration::from_secs(30);

/// The every-minute schedule of every cronjob here.
const EVERY_MINUTE: &str = "*/1 * * * ?";
/// imageutils.BusyBox; on simulated nodes any image runs.
const BUSYBOX: &str = "busybox:1.37";

/// Upstream's commands: sleepCommand (the job stays active), successCommand and
/// failureCommand (the pod completes at once).
const SLEEP_COMMAND: &[&str] = &["sleep", "300"];
const SUCCESS_COMMAND: &[&str] = &["/bin/true"];
const FAILURE_COMMAND: &[&str] = &["/bin/false"];

// ---------------------------------------------------------------------------------------------
// Helpers

/// wait.PollUntilContextTimeout with framework.Poll: `check` every POLL until it gives Some,
/// for at most `timeout`; an error from `check` ends the wait.
async fn poll<T, F, Fut>(timeout: Duration, what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    crate::framework::eventually_every(POLL, timeout, what, check).await
}

/// gomega.Consistently with framework.Poll: `check` every POLL for `window`; its first error
/// ends it.
async fn consistently<F, Fut>(window: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let deadline = tokio::time::Instant::now() + window;
    loop {
        check().await?;
        if tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// newTestCronJob, as JSON to adjust before it is made: parallelism, completions and
/// backoffLimit 1, a busybox container "c" with an emptyDir at /data, restartPolicy
/// OnFailure; `command` and the history limits only when given.
fn new_test_cron_job(
    name: &str,
    schedule: &str,
    concurrency_policy: &str,
    command: Option<&[&str]>,
    successful_jobs_history_limit: Option<i32>,
    failed_jobs_history_limit: Option<i32>,
) -> Value {
    let mut container = json!({
        "name": "c",
        "image": BUSYBOX,
        "volumeMounts": [{"mountPath": "/data", "name": "data"}],
    });
    if let Some(command) = command {
        container["command"] = json!(command);
    }
    let mut cj = json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": concurrency_policy,
            "jobTemplate": {"spec": {
                "parallelism": 1,
                "completions": 1,
                "backoffLimit": 1,
                "template": {"spec": {
                    "restartPolicy": "OnFailure",
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "containers": [container],
                }},
            }},
        },
    });
    if let Some(limit) = successful_jobs_history_limit {
        cj["spec"]["successfulJobsHistoryLimit"] = json!(limit);
    }
    if let Some(limit) = failed_jobs_history_limit {
        cj["spec"]["failedJobsHistoryLimit"] = json!(limit);
    }
    cj
}

/// createCronJob.
async fn create_cron_job(ctx: &Ctx, cj: Value) -> anyhow::Result<CronJob> {
    let api: Api<CronJob> = ctx.namespaced();
    Ok(api.create(&PostParams::default(), &from(cj)?).await?)
}

/// deleteCronJob: with background propagation, so its jobs and their pods go too.
async fn delete_cron_job(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let api: Api<CronJob> = ctx.namespaced();
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    api.delete(name, &params).await?;
    Ok(())
}

/// The names in a cronjob's status.active.
fn active_names(cj: &CronJob) -> Vec<String> {
    cj.status
        .as_ref()
        .and_then(|s| s.active.as_ref())
        .into_iter()
        .flatten()
        .map(|r| r.name.clone().unwrap_or_default())
        .collect()
}

/// jobutil.IsJobFinished: a Complete or Failed condition that is True.
fn is_job_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

/// filterActiveJobs: the jobs not finished, and the finished ones.
fn filter_active_jobs(jobs: &[Job]) -> (Vec<&Job>, Vec<&Job>) {
    jobs.iter().partition(|j| !is_job_finished(j))
}

fn names(jobs: &[&Job]) -> Vec<String> {
    jobs.iter().map(|j| j.name_any()).collect()
}

/// The jobs of the test's namespace.
async fn list_jobs(ctx: &Ctx) -> anyhow::Result<Vec<Job>> {
    let api: Api<Job> = ctx.namespaced();
    Ok(api.list(&ListParams::default()).await?.items)
}

/// waitForActiveJobs: at least `active` jobs in the cronjob's status.active.
async fn wait_for_active_jobs(
    ctx: &Ctx,
    name: &str,
    active: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<CronJob> = ctx.namespaced();
    poll(
        timeout,
        &format!("{active} active jobs of cronjob {name:?}"),
        || async {
            let cj = api.get(name).await?;
            Ok((active_names(&cj).len() >= active).then_some(()))
        },
    )
    .await
}

/// waitForJobNotActive: the job gone from the cronjob's status.active.
async fn wait_for_job_not_active(
    ctx: &Ctx,
    cron_job: &str,
    job: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<CronJob> = ctx.namespaced();
    poll(
        timeout,
        &format!("job {job:?} out of the active list of cronjob {cron_job:?}"),
        || async {
            let cj = api.get(cron_job).await?;
            Ok((!active_names(&cj).iter().any(|n| n == job)).then_some(()))
        },
    )
    .await
}

/// waitForJobToDisappear: the job no longer among the finished jobs listed.
async fn wait_for_job_to_disappear(
    ctx: &Ctx,
    target: &Job,
    timeout: Duration,
) -> anyhow::Result<()> {
    let name = target.name_any();
    poll(timeout, &format!("job {name:?} to disappear"), || async {
        let jobs = list_jobs(ctx).await?;
        let (_, finished) = filter_active_jobs(&jobs);
        Ok((!finished.iter().any(|j| j.name_any() == name)).then_some(()))
    })
    .await
}

/// waitForJobsPodToDisappear: no pod labelled controller-uid=<the job's uid> left.
async fn wait_for_jobs_pod_to_disappear(
    ctx: &Ctx,
    target: &Job,
    timeout: Duration,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    let selector = format!("controller-uid={}", target.uid().unwrap_or_default());
    poll(
        timeout,
        &format!("the pods of job {:?} to disappear", target.name_any()),
        || async {
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            Ok(list.items.is_empty().then_some(()))
        },
    )
    .await
}

/// waitForJobReplaced: the only job not being deleted is another than `previous`; more than
/// one such job is an error at once.
async fn wait_for_job_replaced(ctx: &Ctx, previous: &str, timeout: Duration) -> anyhow::Result<()> {
    poll(
        timeout,
        &format!("job {previous:?} to be replaced"),
        || async {
            let jobs = list_jobs(ctx).await?;
            // Jobs pending deletion are passed over: their deletion is asynchronous.
            let alive: Vec<&Job> = jobs
                .iter()
                .filter(|j| j.metadata.deletion_timestamp.is_none())
                .collect();
            match alive.as_slice() {
                [] => Ok(None),
                [only] => Ok((only.name_any() != previous).then_some(())),
                _ => bail!(
                    "more than one job is running: {:?}",
                    names(&jobs.iter().collect::<Vec<_>>())
                ),
            }
        },
    )
    .await
}

/// waitForAnyFinishedJob: some job of the namespace finished.
async fn wait_for_any_finished_job(ctx: &Ctx, timeout: Duration) -> anyhow::Result<()> {
    poll(timeout, "a finished job", || async {
        Ok(list_jobs(ctx)
            .await?
            .iter()
            .any(is_job_finished)
            .then_some(()))
    })
    .await
}

/// waitForEventWithReason: an event about the cronjob (Events.Search: by its kind, name,
/// namespace and uid) with one of the reasons, within upstream's 30 seconds.
async fn wait_for_event_with_reason(
    ctx: &Ctx,
    cron_job: &str,
    reasons: &[&str],
) -> anyhow::Result<()> {
    let cron_jobs: Api<CronJob> = ctx.namespaced();
    let events: Api<Event> = ctx.namespaced();
    poll(
        EVENT_WAIT,
        &format!("an event with reason in {reasons:?} about cronjob {cron_job:?}"),
        || async {
            let cj = cron_jobs.get(cron_job).await?;
            let fields = format!(
                "involvedObject.kind=CronJob,involvedObject.name={},involvedObject.namespace={},\
                 involvedObject.uid={}",
                cj.name_any(),
                ctx.namespace,
                cj.uid().unwrap_or_default()
            );
            let list = events.list(&ListParams::default().fields(&fields)).await?;
            Ok(list
                .items
                .iter()
                .any(|e| e.reason.as_deref().is_some_and(|r| reasons.contains(&r)))
                .then_some(()))
        },
    )
    .await
}

/// metav1.LabelSelectorAsSelector(...).String().
fn selector_string(selector: &LabelSelector) -> anyhow::Result<String> {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => bail!("unknown label selector operator {other:?}"),
        });
    }
    Ok(parts.join(","))
}

/// e2eresource.DeleteResourceAndWaitForGC for a Job: its pods (by the job's selector) listed,
/// the job deleted with background propagation, then a wait for its pods to become inactive
/// and then to be gone. A job already gone is no error.
async fn delete_job_and_wait_for_gc(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let jobs: Api<Job> = ctx.namespaced();
    let pods: Api<Pod> = ctx.namespaced();
    let Some(job) = jobs.get_opt(name).await? else {
        return Ok(());
    };
    let selector = job
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .map(selector_string)
        .transpose()?
        .unwrap_or_default();
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match jobs.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => bail!("failed to delete object with non-retriable error: {e}"),
    }
    let list = || async {
        anyhow::Ok(
            pods.list(&ListParams::default().labels(&selector))
                .await?
                .items,
        )
    };
    // e2epod.FilterActivePods: not Succeeded or Failed, and not being deleted.
    poll(
        GC_WAIT,
        &format!("the pods of job {name:?} inactive"),
        || async {
            let active = list().await?.iter().any(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
                    && p.metadata.deletion_timestamp.is_none()
            });
            Ok((!active).then_some(()))
        },
    )
    .await
    .with_context(|| format!("error while waiting for pods to become inactive {name}"))?;
    poll(
        GC_WAIT,
        &format!("the pods of job {name:?} gone"),
        || async { Ok(list().await?.is_empty().then_some(())) },
    )
    .await
    .with_context(|| format!("error while waiting for pods gone {name}"))
}

/// The cronjob's status.active holds exactly one job; its name.
fn exactly_one_active(cj: &CronJob) -> anyhow::Result<String> {
    let active = active_names(cj);
    match active.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected exactly 1 job in the status.active of cronjob {:?}, got {}: {active:?}",
            cj.name_any(),
            active.len()
        ),
    }
}

/// Exactly one of the namespace's jobs is not finished.
async fn exactly_one_running_job(ctx: &Ctx) -> anyhow::Result<Vec<Job>> {
    let jobs = list_jobs(ctx)
        .await
        .with_context(|| format!("Failed to list jobs in namespace {}", ctx.namespace))?;
    let (active, finished) = filter_active_jobs(&jobs);
    ensure!(
        active.len() == 1,
        "expected exactly 1 running job in namespace {}, got {}: active {:?}, finished {:?}",
        ctx.namespace,
        active.len(),
        names(&active),
        names(&finished)
    );
    Ok(jobs)
}

// ---------------------------------------------------------------------------------------------
// test/e2e/apps/cronjob.go

/// cronjob.go "should schedule multiple jobs concurrently". Shortened: the wait for two
/// active jobs is 150 s (two firings and a margin), not 5 minutes.
async fn cronjob_allow_concurrent(ctx: Ctx) -> anyhow::Result<()> {
    // Creating a cronjob
    let cj = new_test_cron_job(
        "concurrent",
        EVERY_MINUTE,
        "Allow",
        Some(SLEEP_COMMAND),
        None,
        None,
    );
    let cj = create_cron_job(&ctx, cj)
        .await
        .with_context(|| format!("Failed to create CronJob in namespace {}", ctx.namespace))?;
    let name = cj.name_any();

    // Ensuring more than one job is running at a time
    wait_for_active_jobs(&ctx, &name, 2, TWO_FIRINGS)
        .await
        .with_context(|| {
            format!(
                "Failed to wait for active jobs in CronJob {name} in namespace {}",
                ctx.namespace
            )
        })?;

    // Ensuring at least two running jobs exists by listing jobs explicitly
    let jobs = list_jobs(&ctx)
        .await
        .with_context(|| format!("Failed to list jobs in namespace {}", ctx.namespace))?;
    let (active, finished) = filter_active_jobs(&jobs);
    ensure!(
        active.len() >= 2,
        "expected at least 2 running jobs in namespace {}, got {}: active {:?}, finished {:?}",
        ctx.namespace,
        active.len(),
        names(&active),
        names(&finished)
    );

    // Removing cronjob
    delete_cron_job(&ctx, &name).await.with_context(|| {
        format!(
            "Failed to delete CronJob {name} in namespace {}",
            ctx.namespace
        )
    })
}

/// cronjob.go "should not schedule jobs when suspended". Shortened: status.active is watched
/// for 65 s (one firing at least), not 5 minutes.
async fn cronjob_suspended(ctx: Ctx) -> anyhow::Result<()> {
    // Creating a suspended cronjob
    let mut cj = new_test_cron_job(
        "suspended",
        EVERY_MINUTE,
        "Allow",
        Some(SLEEP_COMMAND),
        None,
        None,
    );
    cj["spec"]["suspend"] = json!(true);
    let cj = create_cron_job(&ctx, cj)
        .await
        .with_context(|| format!("Failed to create CronJob in namespace {}", ctx.namespace))?;
    let name = cj.name_any();

    // Ensuring no jobs are scheduled
    let api: Api<CronJob> = ctx.namespaced();
    consistently(QUIET, || async {
        let cj = api.get(&name).await?;
        let active = active_names(&cj);
        ensure!(
            active.is_empty(),
            "expected the suspended cronjob {name:?} to have no active jobs, got {active:?}"
        );
        Ok(())
    })
    .await?;

    // Ensuring no job exists by listing jobs explicitly
    let jobs = list_jobs(&ctx)
        .await
        .with_context(|| format!("Failed to list jobs in namespace {}", ctx.namespace))?;
    ensure!(
        jobs.is_empty(),
        "expected no jobs in namespace {}, got {:?}",
        ctx.namespace,
        names(&jobs.iter().collect::<Vec<_>>())
    );

    // Removing cronjob
    delete_cron_job(&ctx, &name).await.with_context(|| {
        format!(
            "Failed to delete CronJob {name} in namespace {}",
            ctx.namespace
        )
    })
}

/// cronjob.go "should not schedule new jobs when ForbidConcurrent". Shortened: the wait for
/// the first job is 75 s, not 5 minutes. "Ensuring no more jobs are scheduled" watches
/// status.active for 65 s (one more firing at least) and fails when it ever holds two jobs:
/// upstream's gomega.Eventually over that condition passes at its first look, the check it
/// replaced (waiting 5 minutes for two active jobs, which must time out) is what this keeps,
/// over a shorter window.
async fn cronjob_forbid_concurrent(ctx: Ctx) -> anyhow::Result<()> {
    // Creating a ForbidConcurrent cronjob
    let cj = new_test_cron_job(
        "forbid",
        EVERY_MINUTE,
        "Forbid",
        Some(SLEEP_COMMAND),
        None,
        None,
    );
    let cj = create_cron_job(&ctx, cj)
        .await
        .with_context(|| format!("Failed to create CronJob in namespace {}", ctx.namespace))?;
    let name = cj.name_any();

    // Ensuring a job is scheduled
    wait_for_active_jobs(&ctx, &name, 1, ONE_FIRING)
        .await
        .with_context(|| format!("Failed to schedule CronJob {name}"))?;

    // Ensuring exactly one is scheduled
    let api: Api<CronJob> = ctx.namespaced();
    let cj = api
        .get(&name)
        .await
        .with_context(|| format!("Failed to get CronJob {name}"))?;
    exactly_one_active(&cj)?;

    // Ensuring exactly one running job exists by listing jobs explicitly
    exactly_one_running_job(&ctx).await?;

    // Ensuring no more jobs are scheduled
    consistently(QUIET, || async {
        let cj = api.get(&name).await?;
        let active = active_names(&cj).len();
        ensure!(active < 2, "unexpected active job number: {active}");
        Ok(())
    })
    .await?;

    // Removing cronjob
    delete_cron_job(&ctx, &name).await.with_context(|| {
        format!(
            "Failed to delete CronJob {name} in namespace {}",
            ctx.namespace
        )
    })
}

/// cronjob.go "should replace jobs when ReplaceConcurrent". Shortened: the waits for the
/// first job and for its replacement are 75 s each (a firing and a margin), not 5 minutes.
async fn cronjob_replace_concurrent(ctx: Ctx) -> anyhow::Result<()> {
    // Creating a ReplaceConcurrent cronjob
    let cj = new_test_cron_job(
        "replace",
        EVERY_MINUTE,
        "Replace",
        Some(SLEEP_COMMAND),
        None,
        None,
    );
    let cj = create_cron_job(&ctx, cj)
        .await
        .with_context(|| format!("Failed to create CronJob in namespace {}", ctx.namespace))?;
    let name = cj.name_any();

    // Ensuring a job is scheduled
    wait_for_active_jobs(&ctx, &name, 1, ONE_FIRING)
        .await
        .with_context(|| {
            format!(
                "Failed to schedule CronJob {name} in namespace {}",
                ctx.namespace
            )
        })?;

    // Ensuring exactly one is scheduled
    let api: Api<CronJob> = ctx.namespaced();
    let cj = api
        .get(&name)
        .await
        .with_context(|| format!("Failed to get CronJob {name}"))?;
    exactly_one_active(&cj)?;

    // Ensuring exactly one running job exists by listing jobs explicitly
    let jobs = exactly_one_running_job(&ctx)
        .await
        .with_context(|| format!("Failed to list the jobs in namespace {}", ctx.namespace))?;

    // Ensuring the job is replaced with a new one
    let first = jobs
        .first()
        .map(|j| j.name_any())
        .ok_or_else(|| anyhow!("no job listed in namespace {}", ctx.namespace))?;
    wait_for_job_replaced(&ctx, &first, ONE_FIRING)
        .await
        .with_context(|| {
            format!(
                "Failed to replace CronJob {first} in namespace {}",
                ctx.namespace
            )
        })?;

    // Removing cronjob
    delete_cron_job(&ctx, &name).await.with_context(|| {
        format!(
            "Failed to delete CronJob {name} in namespace {}",
            ctx.namespace
        )
    })
}

/// cronjob.go "should be able to schedule after more than 100 missed schedule". Upstream puts
/// a creationTimestamp 99 days back and a status.lastScheduleTime a day after it in the
/// object it creates; the API server drops both (it sets creationTimestamp itself, and a
/// status starts empty), so here the same lastScheduleTime is then also written through the
/// status subresource, which leaves the controller ~141,000 missed start times behind: it
/// must still start the most recent one. Shortened: the wait for the job is 75 s, not 5
/// minutes.
async fn cronjob_many_missed(ctx: Ctx) -> anyhow::Result<()> {
    // Creating a cronjob
    let mut cj = new_test_cron_job(
        "concurrent",
        EVERY_MINUTE,
        "Forbid",
        Some(SLEEP_COMMAND),
        None,
        None,
    );
    // To the second: what survives the wire.
    let now = Timestamp::from_second(Timestamp::now().as_second())?;
    let creation_time = now.checked_sub(SignedDuration::from_hours(99 * 24))?;
    let last_schedule_time = creation_time.checked_add(SignedDuration::from_hours(24))?;
    cj["metadata"]["creationTimestamp"] = json!(Time(creation_time));
    cj["status"] = json!({"lastScheduleTime": Time(last_schedule_time)});
    let cj = create_cron_job(&ctx, cj)
        .await
        .with_context(|| format!("Failed to create CronJob in namespace {}", ctx.namespace))?;
    let name = cj.name_any();

    // The status the create dropped, through /status.
    let api: Api<CronJob> = ctx.namespaced();
    let patched = api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastScheduleTime": Time(last_schedule_time)}})),
        )
        .await
        .with_context(|| format!("Failed to patch the status of CronJob {name}"))?;
    let got = patched
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .map(|t| t.0);
    ensure!(
        got == Some(last_schedule_time),
        "patched cronjob {name:?} should have lastScheduleTime {last_schedule_time}, got {got:?}"
    );

    // Ensuring one job is running
    wait_for_active_jobs(&ctx, &name, 1, ONE_FIRING)
        .await
        .with_context(|| {
            format!(
                "Failed to wait for active jobs in CronJob {name} in namespace {}",
                ctx.namespace
            )
        })?;

    // Ensuring at least one running jobs exists by listing jobs explicitly
    let jobs = list_jobs(&ctx)
        .await
        .with_context(|| format!("Failed to list the CronJobs in namespace {}", ctx.namespace))?;
    let (active, finished) = filter_active_jobs(&jobs);
    ensure!(
        !active.is_empty(),
        "expected a running job in namespace {}, got none (finished: {:?})",
        ctx.namespace,
        names(&finished)
    );

    // Removing cronjob
    delete_cron_job(&ctx, &name).await.with_context(|| {
        format!(
            "Failed to delete CronJob {name} in namespace {}",
            ctx.namespace
        )
    })
}

/// cronjob.go "should remove from active list jobs that have been deleted". Shortened: the
/// wait for the first job is 75 s, those on the garbage collector 30 s each (upstream's 10
/// and 20 minutes), and the one for the job to leave the active list 30 s (upstream's
/// cronJobTimeout); the wait for the MissingJob event keeps upstream's 30 s.
async fn cronjob_deleted_job_not_active(ctx: Ctx) -> anyhow::Result<()> {
    // Creating a ForbidConcurrent cronjob
    let cj = new_test_cron_job(
        "forbid",
        EVERY_MINUTE,
        "Forbid",
        Some(SLEEP_COMMAND),
        None,
        None,
    );
    let cj = create_cron_job(&ctx, cj)
        .await
        .with_context(|| format!("Failed to create CronJob in namespace {}", ctx.namespace))?;
    let name = cj.name_any();

    // Ensuring a job is scheduled
    wait_for_active_jobs(&ctx, &name, 1, ONE_FIRING)
        .await
        .with_context(|| {
            format!(
                "Failed to ensure a {name} cronjob is scheduled in namespace {}",
                ctx.namespace
            )
        })?;

    // Ensuring exactly one is scheduled
    let api: Api<CronJob> = ctx.namespaced();
    let cj = api.get(&name).await.with_context(|| {
        format!(
            "Failed to ensure exactly one {name} cronjob is scheduled in namespace {}",
            ctx.namespace
        )
    })?;
    let job = exactly_one_active(&cj)?;

    // Deleting the job
    delete_job_and_wait_for_gc(&ctx, &job).await?;

    // Ensuring job was deleted
    let jobs: Api<Job> = ctx.namespaced();
    match jobs.get(&job).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => bail!(
            "Failed to delete {name} cronjob in namespace {}: getting job {job:?} should end \
             in NotFound, got {e}",
            ctx.namespace
        ),
        Ok(_) => bail!(
            "Failed to delete {name} cronjob in namespace {}: job {job:?} is still there",
            ctx.namespace
        ),
    }

    // Ensuring the job is not in the cronjob active list
    wait_for_job_not_active(&ctx, &name, &job, NOT_ACTIVE_WAIT)
        .await
        .with_context(|| {
            format!(
                "Failed to ensure the {name} cronjob is not in active list in namespace {}",
                ctx.namespace
            )
        })?;

    // Ensuring MissingJob event has occurred
    wait_for_event_with_reason(&ctx, &name, &["MissingJob"])
        .await
        .with_context(|| {
            format!(
                "Failed to ensure missing job event has occurred for {name} cronjob in \
                 namespace {}",
                ctx.namespace
            )
        })?;

    // Removing cronjob
    delete_cron_job(&ctx, &name).await.with_context(|| {
        format!(
            "Failed to remove {name} cronjob in namespace {}",
            ctx.namespace
        )
    })
}

/// cronjob.go "should delete successful finished jobs with limit of one successful job".
/// Shortened as ensureHistoryLimits says.
async fn cronjob_successful_history_limit(ctx: Ctx) -> anyhow::Result<()> {
    // Creating an AllowConcurrent cronjob with custom history limit
    let cj = new_test_cron_job(
        "successful-jobs-history-limit",
        EVERY_MINUTE,
        "Allow",
        Some(SUCCESS_COMMAND),
        Some(1),
        Some(0),
    );
    ensure_history_limits(&ctx, cj).await
}

/// cronjob.go "should delete failed finished jobs with limit of one job". Shortened as
/// ensureHistoryLimits says.
async fn cronjob_failed_history_limit(ctx: Ctx) -> anyhow::Result<()> {
    // Creating an AllowConcurrent cronjob with custom history limit
    let cj = new_test_cron_job(
        "failed-jobs-history-limit",
        EVERY_MINUTE,
        "Allow",
        Some(FAILURE_COMMAND),
        Some(0),
        Some(1),
    );
    ensure_history_limits(&ctx, cj).await
}

/// ensureHistoryLimits: a job finishes, and goes once the next one has finished, leaving one
/// finished job. Shortened: the wait for the first finished job is 90 s (a firing, and a
/// failing job's two pods with the job controller's 10 s back-off between them), the one for
/// it to go 75 s (the next firing, and that job finishing), the one for its pods 30 s; all
/// upstream's are cronJobTimeout, 5 minutes.
async fn ensure_history_limits(ctx: &Ctx, cj: Value) -> anyhow::Result<()> {
    let ns = &ctx.namespace;
    let cj = create_cron_job(ctx, cj).await.with_context(|| {
        format!(
            "Failed to create allowconcurrent cronjob with custom history limits in namespace {ns}"
        )
    })?;
    let name = cj.name_any();

    // Job is going to complete instantly: do not check for an active job as we are most
    // likely to miss it.

    // Ensuring a finished job exists
    wait_for_any_finished_job(ctx, FINISHED_WAIT)
        .await
        .with_context(|| format!("Failed to ensure a finished cronjob exists in namespace {ns}"))?;

    // Ensuring a finished job exists by listing jobs explicitly
    let jobs = list_jobs(ctx).await.with_context(|| {
        format!(
            "Failed to ensure a finished cronjob exists by listing jobs explicitly in \
             namespace {ns}"
        )
    })?;
    let (active, finished) = filter_active_jobs(&jobs);
    ensure!(
        finished.len() == 1,
        "Expected one finished job in namespace {ns}; activeJobs={:?}; finishedJobs={:?}",
        names(&active),
        names(&finished)
    );
    let first = finished[0].clone();

    // Job should get deleted when the next job finishes the next minute
    // Ensuring this job and its pods does not exist anymore
    wait_for_job_to_disappear(ctx, &first, ONE_FIRING)
        .await
        .with_context(|| {
            format!("Failed to ensure that job does not exists anymore in namespace {ns}")
        })?;
    wait_for_jobs_pod_to_disappear(ctx, &first, GC_WAIT)
        .await
        .with_context(|| {
            format!("Failed to ensure that pods for job does not exists anymore in namespace {ns}")
        })?;

    // Ensuring there is 1 finished job by listing jobs explicitly
    let jobs = list_jobs(ctx).await.with_context(|| {
        format!(
            "Failed to ensure there is one finished job by listing job explicitly in namespace {ns}"
        )
    })?;
    let (active, finished) = filter_active_jobs(&jobs);
    ensure!(
        finished.len() == 1,
        "Expected one finished job in namespace {ns}; activeJobs={:?}; finishedJobs={:?}",
        names(&active),
        names(&finished)
    );

    // Removing cronjob
    delete_cron_job(ctx, &name)
        .await
        .with_context(|| format!("Failed to remove the {name} cronjob in namespace {ns}"))
}
