//! The job controller: runs pods from the template until `completions` succeed (or, with no
//! completions, until one does), `parallelism` at a time; Indexed jobs give each pod its
//! completion index. Finished pods are counted durably as upstream does: each pod carries the
//! `batch.kubernetes.io/job-tracking` finalizer, a finished pod's uid is first recorded in
//! `status.uncountedTerminatedPods`, then its finalizer removed, then it moves to the
//! succeeded/failed counts, so no pod is counted twice or lost.
//!
//! A job fails past its backoffLimit, its activeDeadlineSeconds, or a podFailurePolicy FailJob
//! rule. With backoffLimitPerIndex (Indexed jobs) each index counts its own failures: the pod
//! replacing a failed one carries the index's count in the
//! `batch.kubernetes.io/job-index-failure-count` annotation (the failed pod keeps its finalizer
//! until then, so the count cannot be lost) and waits out the index's own back-off; an index
//! past its limit, or hit by a FailIndex rule, goes into `status.failedIndexes` and does not
//! run again; the job fails past maxFailedIndexes, or once every index has succeeded or
//! failed. A successPolicy rule met by the succeeded indexes ends an Indexed job early.
//!
//! As upstream since v1.31, a job that ends first gets the interim FailureTarget or
//! SuccessCriteriaMet condition, its remaining pods go, and only once none is left does it get
//! Failed or Complete.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::Informers;
use crate::replicaset::Expectations;
use crate::util::{self, Error, drive, is_status};

pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
/// On each pod of an index (with backoffLimitPerIndex): the index's counted failures so far.
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
/// Beside it: the index's failures a podFailurePolicy Ignore rule excused.
pub const INDEX_IGNORED_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";
/// Upstream's pod failure back-off: 10 s, doubling, at most 6 minutes.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
    expectations: Expectations,
    /// Per job: the failed count last seen and when it rose (for the back-off).
    failures: Mutex<HashMap<String, (i32, std::time::Instant)>>,
    events: kelp_client::events::Recorder,
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let jobs = informers.jobs.store();
    let controller = Controller::for_stream(informers.jobs.changes(), informers.jobs.store())
        .owns_stream(informers.pods.changes())
        // An orphan wakes the jobs whose selector matches it (upstream's getPodJobs), which
        // adopt it.
        .watches_stream(informers.pods.changes(), move |pod: Pod| {
            if util::controller_of(&pod.metadata).is_some() {
                return Vec::new();
            }
            jobs.state()
                .iter()
                .filter(|j| selects(j, &pod))
                .map(|j| ObjectRef::from_obj(&**j))
                .collect::<Vec<_>>()
        });
    let orphans = release_orphans(client.clone(), informers.clone());
    let ctx = Arc::new(Ctx {
        events: kelp_client::events::Recorder::spawn(
            client.clone(),
            "job-controller",
            String::new(),
        ),
        client,
        informers,
        expectations: Expectations::default(),
        failures: Mutex::new(HashMap::new()),
    });
    tokio::select! {
        r = drive("job", controller, reconcile, ctx) => r,
        () = orphans => Err(anyhow::anyhow!("the job controller's orphan pod watch ended")),
    }
}

/// Takes the tracking finalizer off pods no unfinished job will count: orphans, and pods of
/// a job that is gone or finished (upstream's syncOrphanPod), so that they can go.
async fn release_orphans(client: kube::Client, informers: Arc<Informers>) {
    let jobs = informers.jobs.store();
    let mut changes = std::pin::pin!(informers.pods.changes());
    while let Some(change) = changes.next().await {
        let Ok(pod) = change else { continue };
        if !has_finalizer(&pod) {
            continue;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        match util::controller_of(&pod.metadata) {
            Some(r) => {
                if r.kind != "Job" || r.api_version != "batch/v1" {
                    continue;
                }
                let job = jobs.get(&ObjectRef::new(&r.name).within(&ns));
                if job.is_some_and(|j| {
                    j.metadata.uid.as_deref() == Some(r.uid.as_str()) && !is_finished(&j)
                }) {
                    continue;
                }
            }
            // An orphan some job selects is that job's to adopt.
            None => {
                if jobs
                    .state()
                    .iter()
                    .any(|j| !is_finished(j) && selects(j, &pod))
                {
                    continue;
                }
            }
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        if let Err(e) = patch_finalizer_out(&api, &pod).await {
            tracing::debug!(pod = %pod.name_any(), error = %e, "job: tracking finalizer not removed");
        }
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now()),
        last_transition_time: Some(now()),
    }
}

fn has_condition(status: &JobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Sets a condition, keeping its transition time when the status is unchanged.
fn set_condition(status: &mut JobStatus, c: JobCondition) {
    let list = status.conditions.get_or_insert_default();
    match list.iter_mut().find(|o| o.type_ == c.type_) {
        Some(o) if o.status == c.status => {
            o.reason = c.reason;
            o.message = c.message;
        }
        Some(o) => *o = c,
        None => list.push(c),
    }
}

/// Whether the job's selector takes in the pod (of its namespace).
fn selects(job: &Job, pod: &Pod) -> bool {
    let selector = job.spec.as_ref().and_then(|s| s.selector.as_ref());
    job.metadata.namespace == pod.metadata.namespace
        && selector.is_some()
        && util::selects(selector, pod.metadata.labels.as_ref())
}

fn is_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| has_condition(s, "Complete") || has_condition(s, "Failed"))
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
}

/// The pod's completion index (upstream's getCompletionIndex: none when absent or negative).
fn index_of(pod: &Pod) -> Option<i32> {
    pod.annotations()
        .get(INDEX_KEY)
        .and_then(|i| i.parse().ok())
        .filter(|i| *i >= 0)
}

/// The pod's completion index when the job has it (below `completions`).
fn valid_index(pod: &Pod, completions: i32) -> Option<i32> {
    index_of(pod).filter(|i| *i < completions)
}

/// "0-2,4,6,7": upstream's compact form of a set of indexes (orderedIntervals.String), where a
/// run of two is written as a pair, not a range.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = vec![];
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(match end - start {
            0 => start.to_string(),
            1 => format!("{start},{end}"),
            _ => format!("{start}-{end}"),
        });
    }
    out.join(",")
}

/// The indexes below `completions` the compact form lists (upstream's parseIndexesFromString:
/// a corrupt interval is skipped, the list ends at the first interval past the completions).
pub fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let Ok(first) = first.parse::<i32>() else {
            continue;
        };
        if first >= completions {
            break;
        }
        let Ok(last) = last.parse::<i32>() else {
            continue;
        };
        set.extend(first..=last.min(completions - 1));
    }
    set
}

/// What a podFailurePolicy says of a failed pod (upstream's matchPodFailurePolicy).
#[derive(Debug, PartialEq)]
enum FailureAction {
    /// Counted towards the back-off limits (also when no rule matches).
    Count,
    /// Not counted.
    Ignore,
    /// The job fails, with this message.
    FailJob(String),
    /// The pod's index fails at once (with backoffLimitPerIndex); the failure counts.
    FailIndex,
}

impl FailureAction {
    fn counts(&self) -> bool {
        *self != FailureAction::Ignore
    }
}

/// The first podFailurePolicy rule the failed pod matches: by a non-zero exit code of an app
/// container, else of an init container, or by one of its conditions.
fn failure_action(job: &Job, pod: &Pod) -> FailureAction {
    let Some(policy) = job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.as_ref())
    else {
        return FailureAction::Count;
    };
    let status = pod.status.clone().unwrap_or_default();
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    for (i, rule) in policy.rules.iter().enumerate() {
        let message = if let Some(codes) = &rule.on_exit_codes {
            let hit = status
                .container_statuses
                .iter()
                .flatten()
                .chain(status.init_container_statuses.iter().flatten())
                .find_map(|c| {
                    let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
                    if code == 0 || codes.container_name.as_deref().is_some_and(|n| n != c.name) {
                        return None;
                    }
                    let listed = codes.values.contains(&code);
                    let matched = match codes.operator.as_str() {
                        "In" => listed,
                        "NotIn" => !listed,
                        _ => false,
                    };
                    matched.then(|| {
                        format!(
                            "Container {} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}",
                            c.name, rule.action
                        )
                    })
                });
            let Some(message) = hit else { continue };
            message
        } else if let Some(patterns) = &rule.on_pod_conditions {
            let hit = status.conditions.iter().flatten().find(|c| {
                patterns
                    .iter()
                    .any(|p| p.type_ == c.type_ && p.status == c.status)
            });
            let Some(c) = hit else { continue };
            format!(
                "Pod {ns}/{name} has condition {} matching {} rule at index {i}",
                c.type_, rule.action
            )
        } else {
            continue;
        };
        match rule.action.as_str() {
            "Ignore" => return FailureAction::Ignore,
            "Count" => return FailureAction::Count,
            "FailJob" => return FailureAction::FailJob(message),
            "FailIndex" => return FailureAction::FailIndex,
            // An action this controller does not know leaves the pod to the next rule, as
            // upstream's switch does.
            _ => {}
        }
    }
    FailureAction::Count
}

/// A pod being deleted that has not finished (upstream's terminating pods).
fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some() && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// Upstream's pastBackoffLimitOnFailure: with restartPolicy OnFailure a failing container is
/// restarted in its pod rather than the pod replaced, so the restarts of the pods still
/// pending or running count against backoffLimit (any restart, when it is 0).
fn past_backoff_limit_on_failure(job: &Job, pods: &[Arc<Pod>]) -> bool {
    let Some(spec) = job.spec.as_ref() else {
        return false;
    };
    if spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        != Some("OnFailure")
    {
        return false;
    }
    let restarts: i32 = pods
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    match spec.backoff_limit.unwrap_or(6) {
        0 => restarts > 0,
        limit => restarts >= limit,
    }
}

/// Upstream's onlyReplaceFailedPods: with podReplacementPolicy Failed (which a
/// podFailurePolicy implies) a pod is failed only once in the Failed phase.
fn only_replace_failed(job: &Job) -> bool {
    job.spec.as_ref().is_some_and(|s| {
        s.pod_replacement_policy.as_deref() == Some("Failed") || s.pod_failure_policy.is_some()
    })
}

/// Upstream's isPodFailed: in the Failed phase, or else deleted before it finished (an orphan
/// that will never reach the Failed phase).
fn is_pod_failed(job: &Job, pod: &Pod) -> bool {
    match phase(pod) {
        "Failed" => true,
        "Succeeded" => false,
        _ => !only_replace_failed(job) && pod.metadata.deletion_timestamp.is_some(),
    }
}

/// A failure-count annotation's value: 0 when absent or not a non-negative int32 (upstream's
/// parseInt32).
fn failure_count(pod: &Pod, key: &str) -> i32 {
    pod.annotations()
        .get(key)
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|n| *n >= 0)
        .unwrap_or(0)
}

/// Upstream's getIndexAbsoluteFailureCount: the index's failures so far, ignored ones too.
fn absolute_failures(pod: &Pod) -> i32 {
    failure_count(pod, INDEX_FAILURE_COUNT)
        .saturating_add(failure_count(pod, INDEX_IGNORED_FAILURE_COUNT))
}

/// Upstream's isIndexFailed: the failed pod's index is done for, by a FailIndex rule or as a
/// counted failure of a pod that already carried `limit` failures of its index.
fn is_index_failed(job: &Job, pod: &Pod, limit: i32) -> bool {
    if !is_pod_failed(job, pod) {
        return false;
    }
    match failure_action(job, pod) {
        FailureAction::FailIndex => true,
        FailureAction::Ignore => false,
        _ => failure_count(pod, INDEX_FAILURE_COUNT) >= limit,
    }
}

/// The failure counts the replacement of a failed pod carries (upstream's
/// getNewIndexFailureCounts): its own plus its failure, as counted or as ignored.
fn next_failure_counts(job: &Job, replaced: Option<&Pod>) -> (i32, i32) {
    let Some(p) = replaced else { return (0, 0) };
    let count = failure_count(p, INDEX_FAILURE_COUNT);
    let ignored = failure_count(p, INDEX_IGNORED_FAILURE_COUNT);
    if failure_action(job, p).counts() {
        (count.saturating_add(1), ignored)
    } else {
        (count, ignored.saturating_add(1))
    }
}

/// When the pod finished (upstream's getFinishedTime): its containers' last exit, else when it
/// stopped being Ready, else when it was deleted, else when it was made.
fn finished_at(pod: &Pod) -> jiff::Timestamp {
    let status = pod.status.as_ref();
    let exits = status
        .and_then(|s| s.container_statuses.as_ref())
        .filter(|list| !list.is_empty())
        .and_then(|list| {
            list.iter()
                .map(|c| {
                    c.state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .and_then(|t| t.finished_at.as_ref())
                        .map(|t| t.0)
                })
                .collect::<Option<Vec<_>>>()
        })
        .and_then(|times| times.into_iter().max());
    let unready = || {
        status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "Ready" && c.status == "False")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
    };
    let deleted = || {
        pod.metadata.deletion_timestamp.as_ref().map(|t| {
            t.0 - jiff::SignedDuration::from_secs(
                pod.metadata.deletion_grace_period_seconds.unwrap_or(0),
            )
        })
    };
    exits
        .or_else(unready)
        .or_else(deleted)
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// The pod failure back-off after `failures` failures: 10 s, doubling, capped.
fn backoff_delay(failures: i32) -> Duration {
    (BACKOFF_BASE * 2u32.saturating_pow((failures - 1).clamp(0, 10) as u32)).min(BACKOFF_MAX)
}

/// How long an index still waits before it runs again (upstream's getRemainingTimePerIndex):
/// its last failed pod's failures set the delay, counted from when that pod finished.
fn index_backoff(last_failed: Option<&Arc<Pod>>) -> Duration {
    let Some(p) = last_failed else {
        return Duration::ZERO;
    };
    let delay = backoff_delay(absolute_failures(p).saturating_add(1));
    let elapsed = jiff::Timestamp::now().duration_since(finished_at(p));
    if elapsed.is_negative() {
        delay
    } else {
        delay.saturating_sub(elapsed.unsigned_abs())
    }
}

/// Upstream's getPodsWithDelayedDeletionPerIndex: for each index still to run again, its
/// latest failed pod, which keeps its finalizer until a replacement exists so that the
/// replacement can take the index's failure counts on.
fn delayed_per_index(
    job: &Job,
    pods: &[Arc<Pod>],
    completions: i32,
    done: &BTreeSet<i32>,
    active: &BTreeSet<i32>,
) -> HashMap<i32, Arc<Pod>> {
    let mut delayed: HashMap<i32, Arc<Pod>> = HashMap::new();
    for p in pods
        .iter()
        .filter(|p| has_finalizer(p) && is_pod_failed(job, p))
    {
        let Some(i) = valid_index(p, completions) else {
            continue;
        };
        if done.contains(&i) || active.contains(&i) {
            continue;
        }
        let later = delayed.get(&i).is_none_or(|last| {
            absolute_failures(last) <= absolute_failures(p) && finished_at(p) >= finished_at(last)
        });
        if later {
            delayed.insert(i, p.clone());
        }
    }
    delayed
}

/// Upstream's matchSuccessPolicy: "Matched rules at index N" for the first rule the succeeded
/// indexes meet — all its succeededIndexes, or succeededCount of them, or (with no indexes)
/// succeededCount indexes of any.
fn match_success_policy(job: &Job, completions: i32, succeeded: &BTreeSet<i32>) -> Option<String> {
    let policy = job.spec.as_ref()?.success_policy.as_ref()?;
    if succeeded.is_empty() {
        return None;
    }
    let enough = |n: usize, count: i32| count >= 0 && n >= count as usize;
    for (i, rule) in policy.rules.iter().enumerate() {
        let met = match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(indexes), count) => {
                let required = parse_indexes(indexes, completions);
                if required.is_empty() {
                    continue;
                }
                let hits = required.intersection(succeeded).count();
                hits == required.len() || count.is_some_and(|c| enough(hits, c))
            }
            (None, Some(count)) => enough(succeeded.len(), count),
            (None, None) => false,
        };
        if met {
            return Some(format!("Matched rules at index {i}"));
        }
    }
    None
}

/// Where a job ends once it has its interim condition: SuccessCriteriaMet leads to Complete,
/// FailureTarget to Failed, with the interim condition's reason and message.
struct Finish {
    failed: bool,
    reason: String,
    message: String,
}

impl Finish {
    fn failure(reason: &str, message: &str) -> Finish {
        Finish {
            failed: true,
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn success(reason: &str, message: &str) -> Finish {
        Finish {
            failed: false,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// The interim condition the job carries while its pods go.
    fn interim(&self) -> JobCondition {
        let type_ = if self.failed {
            "FailureTarget"
        } else {
            "SuccessCriteriaMet"
        };
        condition(type_, "True", &self.reason, &self.message)
    }

    /// The final condition, once no pod of the job is left.
    fn last(&self) -> JobCondition {
        let type_ = if self.failed { "Failed" } else { "Complete" };
        condition(type_, "True", &self.reason, &self.message)
    }

    /// The end the job's interim condition names (SuccessCriteriaMet first, as upstream's
    /// syncJob looks).
    fn of(status: &JobStatus) -> Option<Finish> {
        for (type_, failed) in [("SuccessCriteriaMet", false), ("FailureTarget", true)] {
            let found = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == type_ && c.status == "True");
            if let Some(c) = found {
                return Some(Finish {
                    failed,
                    reason: c.reason.clone().unwrap_or_default(),
                    message: c.message.clone().unwrap_or_default(),
                });
            }
        }
        None
    }
}

async fn patch_finalizer_out(api: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    let finalizers: Vec<&String> = pod
        .finalizers()
        .iter()
        .filter(|f| *f != TRACKING_FINALIZER)
        .collect();
    // None left: the field goes (as upstream, which never stores an empty list).
    let finalizers = if finalizers.is_empty() {
        json!(null)
    } else {
        json!(finalizers)
    };
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": pod.metadata.resource_version}});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn write_status(client: &kube::Client, job: &Job, status: JobStatus) -> Result<bool, Error> {
    if job.status.as_ref() == Some(&status) {
        return Ok(true);
    }
    let api: Api<Job> = Api::namespaced(client.clone(), &job.namespace().unwrap_or_default());
    let mut updated = job.clone();
    updated.status = Some(status);
    match api
        .replace_status(&job.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The pod counts the status shows; zero succeeded and failed counts are left out, as
/// upstream's omitempty leaves them.
fn set_counts(status: &mut JobStatus, active: i32, ready: i32, terminating: i32) {
    status.active = Some(active);
    status.ready = Some(ready);
    status.terminating = Some(terminating);
    if status.succeeded == Some(0) {
        status.succeeded = None;
    }
    if status.failed == Some(0) {
        status.failed = None;
    }
}

/// Deletes the pods. With `release` their tracking finalizer goes first: pods that will not be
/// counted (scale-down, suspension, a job that succeeded; upstream's deleteJobPods). Without,
/// it stays until they are counted as failed (a failing job; upstream's deleteActivePods).
async fn delete_pods(
    api: &Api<Pod>,
    report: &util::Report<'_>,
    pods: &[Arc<Pod>],
    release: bool,
) -> Result<Vec<String>, Error> {
    let results: Vec<Result<String, kube::Error>> = futures::stream::iter(pods.iter().cloned())
        .map(|p| {
            let api = api.clone();
            async move {
                if release {
                    patch_finalizer_out(&api, &p).await?;
                }
                match api.delete(&p.name_any(), &DeleteParams::default()).await {
                    Ok(_) => {
                        report.deleted(&p.name_any());
                        Ok(p.name_any())
                    }
                    Err(e) if is_status(&e, 404) => Ok(p.name_any()),
                    Err(e) => {
                        report.not_deleted(&e);
                        Err(e)
                    }
                }
            }
        })
        .buffer_unordered(util::BURST)
        .collect()
        .await;
    let mut names = vec![];
    for r in results {
        names.push(r?);
    }
    Ok(names)
}

/// Upstream's syncJob and trackJobStatusAndRemoveFinalizers, one durable step a pass: finished
/// pods are recorded, then counted, then the job's end is judged (interim condition, its pods
/// deleted), then once none is left it gets its final condition; else its pods are managed.
async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = job.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", job.name_any());
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let spec = job.spec.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let report = util::Report {
        events: &ctx.events,
        regarding: kube::Resource::object_ref(&*job, &()),
    };
    let store = ctx.informers.pods.store();
    let going = job.metadata.deletion_timestamp.is_some();
    // Upstream's ClaimPods: orphans the selector matches are adopted, owned pods it no longer
    // matches are released.
    let mut pods: Vec<Arc<Pod>> = Vec::new();
    for p in store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(&ns))
    {
        let matches = spec.selector.is_none()
            || util::selects(spec.selector.as_ref(), p.metadata.labels.as_ref());
        match util::controller_of(&p.metadata) {
            Some(r) if r.uid == uid && (matches || going) => pods.push(p),
            Some(r) if r.uid == uid => util::release(&pods_api, &p, &uid).await?,
            None if matches
                && !going
                && spec.selector.is_some()
                && p.metadata.deletion_timestamp.is_none()
                && util::adopt(&pods_api, &p, util::controller_ref(&*job)).await? =>
            {
                pods.push(p)
            }
            _ => {}
        }
    }
    let mut status = job.status.clone().unwrap_or_default();
    if going {
        // Going: let its pods go too.
        for p in pods.iter().filter(|p| has_finalizer(p)) {
            patch_finalizer_out(&pods_api, p).await?;
        }
        return Ok(Action::await_change());
    }
    let active: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| util::is_active(p))
        .cloned()
        .collect();
    let terminating = pods.iter().filter(|p| is_terminating(p)).count() as i32;
    if is_finished(&job) {
        // Finished: nothing more runs.
        delete_pods(&pods_api, &report, &active, true).await?;
        return Ok(Action::await_change());
    }

    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions.unwrap_or(0);
    let per_index = indexed && spec.backoff_limit_per_index.is_some();
    let finish = Finish::of(&status);
    let failing = finish.as_ref().is_some_and(|f| f.failed);

    // Upstream's calculateSucceededIndexes and calculateFailedIndexes: the indexes the status
    // records, and those of finished pods not counted yet.
    let mut completed: BTreeSet<i32> = BTreeSet::new();
    let mut failed_indexes: BTreeSet<i32> = BTreeSet::new();
    if indexed {
        completed = parse_indexes(
            status.completed_indexes.as_deref().unwrap_or(""),
            completions,
        );
        if per_index {
            failed_indexes =
                parse_indexes(status.failed_indexes.as_deref().unwrap_or(""), completions);
        }
        let limit = spec.backoff_limit_per_index.unwrap_or(0);
        for p in pods.iter().filter(|p| has_finalizer(p)) {
            let Some(i) = valid_index(p, completions) else {
                continue;
            };
            if phase(p) == "Succeeded" {
                completed.insert(i);
            } else if per_index && is_index_failed(&job, p, limit) {
                failed_indexes.insert(i);
            }
        }
    }
    let delayed = if per_index && finish.is_none() {
        let done: BTreeSet<i32> = completed.union(&failed_indexes).copied().collect();
        let running: BTreeSet<i32> = active
            .iter()
            .filter_map(|p| valid_index(p, completions))
            .collect();
        delayed_per_index(&job, &pods, completions, &done, &running)
    } else {
        HashMap::new()
    };

    // 1. Record newly finished pods as uncounted, durably, before touching them; the indexes
    // they finished are recorded with them.
    let uncounted = status.uncounted_terminated_pods.get_or_insert_default();
    let mut recorded: BTreeSet<String> = uncounted
        .succeeded
        .iter()
        .flatten()
        .chain(uncounted.failed.iter().flatten())
        .cloned()
        .collect();
    let mut changed = false;
    // A job that met its success criteria lets its unfinished pods go, uncounted.
    let mut release: Vec<Arc<Pod>> = Vec::new();
    for p in &pods {
        let puid = p.metadata.uid.clone().unwrap_or_default();
        if !has_finalizer(p) || recorded.contains(&puid) {
            continue;
        }
        let list = if phase(p) == "Succeeded" {
            uncounted.succeeded.get_or_insert_default()
        } else if failing || is_pod_failed(&job, p) {
            // A failing job counts each pod that did not succeed as failed (upstream's
            // trackJobStatusAndRemoveFinalizers). A failed pod whose index runs again keeps its
            // finalizer until its replacement exists (upstream's canRemoveFinalizer).
            if delayed.values().any(|d| d.metadata.uid == p.metadata.uid) {
                continue;
            }
            uncounted.failed.get_or_insert_default()
        } else {
            if finish.is_some() {
                release.push(p.clone());
            }
            continue;
        };
        list.push(puid.clone());
        recorded.insert(puid);
        changed = true;
    }
    if indexed {
        let formatted = format_indexes(&completed);
        changed |= status.completed_indexes.as_deref().unwrap_or("") != formatted;
        status.completed_indexes = Some(formatted);
        if per_index {
            let formatted = format_indexes(&failed_indexes);
            changed |= status.failed_indexes.as_deref() != Some(formatted.as_str());
            status.failed_indexes = Some(formatted);
        }
    }
    if changed {
        if !write_status(&ctx.client, &job, status.clone()).await? {
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        return Ok(Action::requeue(Duration::from_millis(50)));
    }
    // 2. Their finalizers go; 3. they move to the counts.
    let by_uid: HashMap<String, &Arc<Pod>> = pods
        .iter()
        .map(|p| (p.metadata.uid.clone().unwrap_or_default(), p))
        .collect();
    for puid in &recorded {
        if let Some(p) = by_uid.get(puid)
            && has_finalizer(p)
        {
            patch_finalizer_out(&pods_api, p).await?;
        }
    }
    let uncounted = std::mem::take(&mut status.uncounted_terminated_pods).unwrap_or_default();
    // An Indexed job counts its completed indexes (recorded above), not its pods.
    let succeeded = if indexed {
        completed.len() as i32
    } else {
        status.succeeded.unwrap_or(0) + uncounted.succeeded.iter().flatten().count() as i32
    };
    let mut failed = status.failed.unwrap_or(0);
    for puid in uncounted.failed.iter().flatten() {
        if by_uid
            .get(puid)
            .is_none_or(|p| failure_action(&job, p).counts())
        {
            failed += 1;
        }
    }
    status.succeeded = Some(succeeded);
    status.failed = Some(failed);
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());

    // 4. Finishing: what still runs goes, and once no pod is left running or terminating the
    // job gets its final condition (upstream's enactJobFinished).
    if let Some(f) = &finish {
        delete_pods(&pods_api, &report, &active, !f.failed).await?;
        for p in release
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
        {
            patch_finalizer_out(&pods_api, p).await?;
        }
        if active.is_empty() && terminating == 0 {
            set_condition(&mut status, f.last());
            if !f.failed {
                status.completion_time = Some(now());
            }
            set_counts(&mut status, 0, 0, 0);
            // Upstream's recordJobFinished, once the final condition is written.
            if write_status(&ctx.client, &job, status).await? {
                if f.failed {
                    report.event("Warning", &f.reason, f.message.clone());
                } else {
                    report.event("Normal", "Completed", "Job completed".into());
                }
            }
            return Ok(Action::await_change());
        }
        set_counts(&mut status, 0, 0, terminating + active.len() as i32);
        write_status(&ctx.client, &job, status).await?;
        return Ok(Action::requeue(Duration::from_millis(500)));
    }

    // 5. The job's end, in upstream's syncJob order: a podFailurePolicy FailJob rule, the
    // back-off limit, the deadline, the failed indexes, the success policy, the completions.
    let satisfied = ctx.expectations.satisfied(&key, &ns, &store);
    let suspended = spec.suspend.unwrap_or(false);
    let mut next: Option<Duration> = None;
    let mut end =
        pods.iter()
            .filter(|p| is_pod_failed(&job, p))
            .find_map(|p| match failure_action(&job, p) {
                FailureAction::FailJob(message) => {
                    Some(Finish::failure("PodFailurePolicy", &message))
                }
                _ => None,
            });
    // With backoffLimitPerIndex the job-wide limit is upstream's default MaxInt32.
    let backoff_limit = spec
        .backoff_limit
        .unwrap_or(if per_index { i32::MAX } else { 6 });
    if end.is_none() && (failed > backoff_limit || past_backoff_limit_on_failure(&job, &pods)) {
        end = Some(Finish::failure(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ));
    }
    if end.is_none()
        && let (Some(deadline), Some(start)) = (spec.active_deadline_seconds, &status.start_time)
        && !suspended
    {
        let ends = start.0 + jiff::SignedDuration::from_secs(deadline);
        let now = jiff::Timestamp::now();
        if ends <= now {
            end = Some(Finish::failure(
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ));
        } else {
            next = Some(ends.duration_since(now).unsigned_abs());
        }
    }
    if end.is_none() && per_index {
        let most = spec.max_failed_indexes.map(i64::from);
        if most.is_some_and(|m| failed_indexes.len() as i64 > m) {
            end = Some(Finish::failure(
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            ));
        } else if !failed_indexes.is_empty()
            && (failed_indexes.len() + completed.len()) as i64 >= i64::from(completions)
        {
            end = Some(Finish::failure("FailedIndexes", "Job has failed indexes"));
        }
    }
    if end.is_none()
        && indexed
        && let Some(message) = match_success_policy(&job, completions, &completed)
    {
        end = Some(Finish::success("SuccessPolicy", &message));
    }
    if end.is_none() {
        let done = match spec.completions {
            _ if indexed => (0..completions).all(|i| completed.contains(&i)),
            Some(n) => succeeded >= n,
            None => succeeded > 0 && active.is_empty(),
        };
        if done {
            end = Some(Finish::success(
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
        }
    }
    if let Some(f) = end {
        delete_pods(&pods_api, &report, &active, !f.failed).await?;
        // Not while pods it made may be missing from the cache: they would escape the count
        // (upstream's syncJob waits for satisfied expectations too).
        if satisfied {
            set_condition(&mut status, f.interim());
        }
        set_counts(&mut status, 0, 0, terminating + active.len() as i32);
        write_status(&ctx.client, &job, status).await?;
        let again = if satisfied { 50 } else { 1000 };
        return Ok(Action::requeue(Duration::from_millis(again)));
    }

    // 6. Suspension.
    if suspended {
        if !active.is_empty() {
            delete_pods(&pods_api, &report, &active, true).await?;
        }
        if !has_condition(&status, "Suspended") {
            set_condition(
                &mut status,
                condition("Suspended", "True", "JobSuspended", "Job suspended"),
            );
            report.event("Normal", "Suspended", "Job suspended".into());
        }
    } else {
        if has_condition(&status, "Suspended") {
            set_condition(
                &mut status,
                condition("Suspended", "False", "JobResumed", "Job resumed"),
            );
            report.event("Normal", "Resumed", "Job resumed".into());
            status.start_time = None;
        }
        if status.start_time.is_none() {
            status.start_time = Some(now());
            if let Some(deadline) = spec.active_deadline_seconds {
                next = Some(Duration::from_secs(deadline.max(0) as u64));
            }
        }
    }

    // 7. How many should run, and which indexes.
    let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
    let pending = |i: &i32| !completed.contains(i) && !failed_indexes.contains(i);
    let want = if suspended {
        0
    } else if indexed {
        parallelism.min((0..completions).filter(pending).count())
    } else {
        match spec.completions {
            Some(n) => parallelism.min((n - succeeded).max(0) as usize),
            None if succeeded > 0 => 0,
            None => parallelism,
        }
    };
    // With podReplacementPolicy Failed, a pod still terminating holds its place until it has
    // failed (upstream's manageJob: terminating pods count against the pods to create).
    let held = if only_replace_failed(&job) {
        terminating as usize
    } else {
        0
    };
    if satisfied && !suspended {
        if active.len() > want {
            let mut extra = active.clone();
            extra.sort_by_key(|p| {
                std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0))
            });
            extra.truncate(active.len() - want);
            let names = delete_pods(&pods_api, &report, &extra, true).await?;
            ctx.expectations.expect(&key, vec![], names);
        } else if active.len() + held < want {
            // After failures, new pods wait out the back-off: the job's, or with
            // backoffLimitPerIndex each index's own (below).
            let wait = if per_index {
                Duration::ZERO
            } else {
                let mut seen = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
                let entry = seen
                    .entry(key.clone())
                    .or_insert((0, std::time::Instant::now()));
                if entry.0 != failed {
                    *entry = (failed, std::time::Instant::now());
                }
                if failed == 0 {
                    Duration::ZERO
                } else {
                    backoff_delay(failed).saturating_sub(entry.1.elapsed())
                }
            };
            if !wait.is_zero() {
                next = Some(next.map_or(wait, |n| n.min(wait)));
            } else {
                let indexes: Vec<Option<i32>> = if indexed {
                    let running: BTreeSet<i32> = active
                        .iter()
                        .chain(pods.iter().filter(|p| held > 0 && is_terminating(p)))
                        .filter_map(|p| index_of(p))
                        .collect();
                    let first: Vec<i32> = (0..completions)
                        .filter(|i| pending(i) && !running.contains(i))
                        .take(want - active.len() - held)
                        .collect();
                    // Upstream's getPodCreationInfoForIndependentIndexes: the indexes out of
                    // their back-off start now; the job comes back for the others.
                    let (ready, waiting): (Vec<i32>, Vec<i32>) = first
                        .into_iter()
                        .partition(|i| index_backoff(delayed.get(i)).is_zero());
                    if let Some(wait) = waiting
                        .iter()
                        .map(|i| index_backoff(delayed.get(i)))
                        .filter(|w| !w.is_zero())
                        .min()
                    {
                        next = Some(next.map_or(wait, |n| n.min(wait)));
                    }
                    ready.into_iter().map(Some).collect()
                } else {
                    vec![None; want - active.len() - held]
                };
                let pods: Vec<Pod> = indexes
                    .into_iter()
                    .map(|i| {
                        let replaced = i.and_then(|i| delayed.get(&i)).map(|p| &**p);
                        pod_for(&job, i, replaced)
                    })
                    .collect();
                let (made, errors) = util::create_pods(&pods_api, pods, &report).await;
                ctx.expectations.expect(&key, made, vec![]);
                if let Some(e) = errors.last() {
                    tracing::debug!(job = %key, error = %e, "creating a pod");
                    next = Some(Duration::from_secs(2));
                }
            }
        }
    }
    let ready = active
        .iter()
        .filter(|p| util::ready_since(p).is_some())
        .count() as i32;
    set_counts(&mut status, active.len() as i32, ready, terminating);
    write_status(&ctx.client, &job, status).await?;
    Ok(next.map(Action::requeue).unwrap_or_else(|| {
        if ctx.expectations.satisfied(&key, &ns, &store) {
            Action::await_change()
        } else {
            Action::requeue(Duration::from_secs(1))
        }
    }))
}

/// A pod from the job's template: owned, tracked by the finalizer, and for Indexed jobs
/// given its index (annotation, label, hostname, JOB_COMPLETION_INDEX) and, with
/// backoffLimitPerIndex, the index's failure counts so far, taken on from the failed pod it
/// replaces (upstream's addIndexFailureCountAnnotation).
fn pod_for(job: &Job, index: Option<i32>, replaced: Option<&Pod>) -> Pod {
    let spec = job.spec.clone().unwrap_or_default();
    let per_index = spec.backoff_limit_per_index.is_some();
    let template = spec.template;
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let mut pod_spec = template.spec.unwrap_or_default();
    let name = job.name_any();
    let mut generate = format!("{name}-");
    if let Some(i) = index {
        labels.insert(INDEX_KEY.into(), i.to_string());
        annotations.insert(INDEX_KEY.into(), i.to_string());
        if per_index {
            let (count, ignored) = next_failure_counts(job, replaced);
            annotations.insert(INDEX_FAILURE_COUNT.into(), count.to_string());
            if ignored > 0 {
                annotations.insert(INDEX_IGNORED_FAILURE_COUNT.into(), ignored.to_string());
            }
        }
        generate = format!("{name}-{i}-");
        pod_spec.hostname = Some(format!("{name}-{i}"));
        let env = EnvVar {
            name: "JOB_COMPLETION_INDEX".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{INDEX_KEY}']"),
                }),
                ..Default::default()
            }),
        };
        for c in pod_spec
            .containers
            .iter_mut()
            .chain(pod_spec.init_containers.iter_mut().flatten())
        {
            let list = c.env.get_or_insert_default();
            if !list.iter().any(|e| e.name == env.name) {
                list.push(env.clone());
            }
        }
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: if annotations.is_empty() {
                None
            } else {
                Some(annotations)
            },
            finalizers: Some(vec![TRACKING_FINALIZER.into()]),
            owner_references: Some(vec![util::controller_ref(job)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j", "namespace": "ns"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn failed_pod(annotations: serde_json::Value, exit_code: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "annotations": annotations},
            "status": {
                "phase": "Failed",
                "containerStatuses": [{
                    "name": "c", "image": "busybox", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"terminated": {"exitCode": exit_code}},
                }],
            },
        }))
        .unwrap()
    }

    fn set(indexes: &[i32]) -> BTreeSet<i32> {
        indexes.iter().copied().collect()
    }

    #[test]
    fn indexes_in_upstreams_compact_form() {
        let indexes = set(&[0, 1, 2, 4, 6, 7]);
        assert_eq!(format_indexes(&indexes), "0-2,4,6,7");
        assert_eq!(parse_indexes("0-2,4,6,7", 10), indexes);
        assert_eq!(parse_indexes("0-2,4,6-7", 10), indexes);
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        // Nothing at or past the completions counts.
        assert_eq!(parse_indexes("1,3-9,12", 5), set(&[1, 3, 4]));
    }

    #[test]
    fn an_index_fails_past_its_backoff_limit_or_by_a_fail_index_rule() {
        let plain = job(json!({
            "completionMode": "Indexed", "completions": 4, "backoffLimitPerIndex": 1,
            "template": {},
        }));
        let first = failed_pod(json!({INDEX_KEY: "1", INDEX_FAILURE_COUNT: "0"}), 1);
        let second = failed_pod(json!({INDEX_KEY: "1", INDEX_FAILURE_COUNT: "1"}), 1);
        assert!(!is_index_failed(&plain, &first, 1));
        assert!(is_index_failed(&plain, &second, 1));
        assert_eq!(next_failure_counts(&plain, None), (0, 0));
        assert_eq!(next_failure_counts(&plain, Some(&first)), (1, 0));

        let policy = job(json!({
            "completionMode": "Indexed", "completions": 4, "backoffLimitPerIndex": 1,
            "template": {},
            "podFailurePolicy": {"rules": [
                {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [42]}},
                {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}},
            ]},
        }));
        let fail_index = failed_pod(json!({INDEX_KEY: "2", INDEX_FAILURE_COUNT: "0"}), 42);
        assert_eq!(
            failure_action(&policy, &fail_index),
            FailureAction::FailIndex
        );
        assert!(is_index_failed(&policy, &fail_index, 1));
        // An ignored failure neither fails the index nor counts; it is kept apart.
        let ignored = failed_pod(json!({INDEX_KEY: "2", INDEX_FAILURE_COUNT: "1"}), 3);
        assert!(!is_index_failed(&policy, &ignored, 1));
        assert_eq!(next_failure_counts(&policy, Some(&ignored)), (1, 1));
    }

    #[test]
    fn each_failure_doubles_the_back_off_up_to_its_cap() {
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(2), Duration::from_secs(20));
        assert_eq!(backoff_delay(30), BACKOFF_MAX);
        assert_eq!(index_backoff(None), Duration::ZERO);
    }

    #[test]
    fn a_success_policy_rule_is_met_by_its_indexes_or_its_count() {
        let j = job(json!({
            "completionMode": "Indexed", "completions": 10, "template": {},
            "successPolicy": {"rules": [
                {"succeededIndexes": "0-2", "succeededCount": 2},
                {"succeededCount": 5},
            ]},
        }));
        assert_eq!(match_success_policy(&j, 10, &set(&[0])), None);
        assert_eq!(
            match_success_policy(&j, 10, &set(&[0, 2])).as_deref(),
            Some("Matched rules at index 0")
        );
        assert_eq!(
            match_success_policy(&j, 10, &set(&[3, 4, 5, 6, 7])).as_deref(),
            Some("Matched rules at index 1")
        );
        let all = job(json!({
            "completionMode": "Indexed", "completions": 10, "template": {},
            "successPolicy": {"rules": [{"succeededIndexes": "1,3-4"}]},
        }));
        assert_eq!(match_success_policy(&all, 10, &set(&[1, 3])), None);
        assert_eq!(
            match_success_policy(&all, 10, &set(&[1, 3, 4])).as_deref(),
            Some("Matched rules at index 0")
        );
    }
}
