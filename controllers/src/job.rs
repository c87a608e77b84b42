//! The job controller: runs pods from the template until `completions` succeed (or, with no
//! completions, until one does), `parallelism` at a time; Indexed jobs give each pod its
//! completion index. Finished pods are counted durably as upstream does: each pod carries the
//! `batch.kubernetes.io/job-tracking` finalizer, a finished pod's uid is first recorded in
//! `status.uncountedTerminatedPods`, then its finalizer removed, then it moves to the
//! succeeded/failed counts, so no pod is counted twice or lost. A job fails past its
//! backoffLimit, its activeDeadlineSeconds, or a podFailurePolicy FailJob rule.

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
const BURST: usize = 16;
/// Upstream's pod failure back-off: 10 s, doubling, at most 6 minutes.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
    expectations: Expectations,
    /// Per job: the failed count last seen and when it rose (for the back-off).
    failures: Mutex<HashMap<String, (i32, std::time::Instant)>>,
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

fn index_of(pod: &Pod) -> Option<i32> {
    pod.annotations()
        .get(INDEX_KEY)
        .and_then(|i| i.parse().ok())
}

/// "0-2,4": upstream's compact form of a set of indexes.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = vec![];
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    set.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    set.insert(i);
                }
            }
        }
    }
    set
}

/// What a podFailurePolicy says of a failed pod: the first matching rule's action, and the
/// message a FailJob rule gives the job.
fn failure_action(job: &Job, pod: &Pod) -> (String, String) {
    let rules = job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.as_ref())
        .map(|p| p.rules.clone())
        .unwrap_or_default();
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        if let Some(codes) = &rule.on_exit_codes {
            let hit = statuses.iter().find(|c| {
                if codes.container_name.as_deref().is_some_and(|n| n != c.name) {
                    return false;
                }
                let Some(code) = c
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                else {
                    return false;
                };
                let listed = codes.values.contains(&code);
                match codes.operator.as_str() {
                    "In" => listed,
                    "NotIn" => !listed && code != 0,
                    _ => false,
                }
            });
            if let Some(c) = hit {
                let code = c
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map_or(0, |t| t.exit_code);
                let message = format!(
                    "Container {} for pod {}/{} failed with exit code {code} matching {} rule at index {i}",
                    c.name,
                    pod.namespace().unwrap_or_default(),
                    pod.name_any(),
                    rule.action
                );
                return (rule.action.clone(), message);
            }
        }
        for p in rule.on_pod_conditions.iter().flatten() {
            let hit = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == p.type_ && c.status == p.status);
            if hit {
                let message = format!(
                    "Pod {}/{} has condition {} matching {} rule at index {i}",
                    pod.namespace().unwrap_or_default(),
                    pod.name_any(),
                    p.type_,
                    rule.action
                );
                return (rule.action.clone(), message);
            }
        }
    }
    ("Count".into(), String::new())
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

/// Removes the finalizer from and deletes the pods (scale-down, suspension, a finished job).
async fn remove_pods(api: &Api<Pod>, pods: &[Arc<Pod>]) -> Result<Vec<String>, Error> {
    let results: Vec<Result<String, kube::Error>> = futures::stream::iter(pods.iter().cloned())
        .map(|p| {
            let api = api.clone();
            async move {
                patch_finalizer_out(&api, &p).await?;
                match api.delete(&p.name_any(), &DeleteParams::default()).await {
                    Ok(_) => Ok(p.name_any()),
                    Err(e) if is_status(&e, 404) => Ok(p.name_any()),
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(BURST)
        .collect()
        .await;
    let mut names = vec![];
    for r in results {
        names.push(r?);
    }
    Ok(names)
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = job.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", job.name_any());
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let spec = job.spec.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
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
    let finished = has_condition(&status, "Complete") || has_condition(&status, "Failed");
    if going {
        // Going: let its pods go too.
        for p in pods.iter().filter(|p| has_finalizer(p)) {
            patch_finalizer_out(&pods_api, p).await?;
        }
        return Ok(Action::await_change());
    }

    // 1. Record newly finished pods as uncounted, durably, before touching them.
    let uncounted = status.uncounted_terminated_pods.get_or_insert_default();
    let mut recorded: BTreeSet<String> = uncounted
        .succeeded
        .iter()
        .flatten()
        .chain(uncounted.failed.iter().flatten())
        .cloned()
        .collect();
    let mut changed = false;
    for p in &pods {
        let puid = p.metadata.uid.clone().unwrap_or_default();
        if !has_finalizer(p) || recorded.contains(&puid) {
            continue;
        }
        let list = match phase(p) {
            "Succeeded" => uncounted.succeeded.get_or_insert_default(),
            "Failed" => uncounted.failed.get_or_insert_default(),
            _ => continue,
        };
        list.push(puid.clone());
        recorded.insert(puid);
        changed = true;
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
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let mut completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
    let mut fail_job: Option<(String, String)> = None;
    let uncounted = std::mem::take(&mut status.uncounted_terminated_pods).unwrap_or_default();
    for puid in uncounted.succeeded.iter().flatten() {
        status.succeeded = Some(status.succeeded.unwrap_or(0) + 1);
        if let Some(i) = by_uid.get(puid).and_then(|p| index_of(p)) {
            completed.insert(i);
        }
    }
    for puid in uncounted.failed.iter().flatten() {
        let (action, message) = by_uid
            .get(puid)
            .map(|p| failure_action(&job, p))
            .unwrap_or_else(|| ("Count".into(), String::new()));
        match action.as_str() {
            "Ignore" => {}
            "FailJob" => {
                status.failed = Some(status.failed.unwrap_or(0) + 1);
                fail_job.get_or_insert(("PodFailurePolicy".into(), message));
            }
            _ => status.failed = Some(status.failed.unwrap_or(0) + 1),
        }
    }
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
    if indexed {
        status.completed_indexes = Some(format_indexes(&completed));
    }
    let succeeded = status.succeeded.unwrap_or(0);
    let failed = status.failed.unwrap_or(0);

    let active: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), "Succeeded" | "Failed")
        })
        .cloned()
        .collect();
    let terminating = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some() && !matches!(phase(p), "Succeeded" | "Failed")
        })
        .count() as i32;
    let mut next: Option<Duration> = None;

    if !finished {
        // Failure: the pod failure policy, the back-off limit, the deadline.
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        if fail_job.is_none() && failed > backoff_limit {
            fail_job = Some((
                "BackoffLimitExceeded".into(),
                "Job has reached the specified backoff limit".into(),
            ));
        }
        if fail_job.is_none()
            && let (Some(deadline), Some(start)) =
                (spec.active_deadline_seconds, &status.start_time)
            && !spec.suspend.unwrap_or(false)
        {
            let ends = start.0 + jiff::SignedDuration::from_secs(deadline);
            let now = jiff::Timestamp::now();
            if ends <= now {
                fail_job = Some((
                    "DeadlineExceeded".into(),
                    "Job was active longer than specified deadline".into(),
                ));
            } else {
                next = Some(ends.duration_since(now).unsigned_abs());
            }
        }
        let done = match spec.completions {
            _ if indexed => {
                let n = spec.completions.unwrap_or(0);
                (0..n).all(|i| completed.contains(&i))
            }
            Some(n) => succeeded >= n,
            None => succeeded > 0 && active.is_empty(),
        };
        if let Some((reason, message)) = fail_job {
            remove_pods(&pods_api, &active).await?;
            set_condition(
                &mut status,
                condition("FailureTarget", "True", &reason, &message),
            );
            set_condition(&mut status, condition("Failed", "True", &reason, &message));
            status.active = Some(0);
            status.ready = Some(0);
            status.terminating = Some(terminating);
            write_status(&ctx.client, &job, status).await?;
            return Ok(Action::await_change());
        }
        if done {
            remove_pods(&pods_api, &active).await?;
            let message = "Reached expected number of succeeded pods";
            set_condition(
                &mut status,
                condition("SuccessCriteriaMet", "True", "CompletionsReached", message),
            );
            set_condition(
                &mut status,
                condition("Complete", "True", "CompletionsReached", message),
            );
            status.completion_time = Some(now());
            status.active = Some(0);
            status.ready = Some(0);
            status.terminating = Some(terminating);
            write_status(&ctx.client, &job, status).await?;
            return Ok(Action::await_change());
        }

        // Suspension.
        let suspended = spec.suspend.unwrap_or(false);
        if suspended {
            if !active.is_empty() {
                remove_pods(&pods_api, &active).await?;
            }
            if !has_condition(&status, "Suspended") {
                set_condition(
                    &mut status,
                    condition("Suspended", "True", "JobSuspended", "Job suspended"),
                );
            }
        } else {
            if has_condition(&status, "Suspended") {
                set_condition(
                    &mut status,
                    condition("Suspended", "False", "JobResumed", "Job resumed"),
                );
                status.start_time = None;
            }
            if status.start_time.is_none() {
                status.start_time = Some(now());
                if let Some(deadline) = spec.active_deadline_seconds {
                    next = Some(Duration::from_secs(deadline.max(0) as u64));
                }
            }
        }

        // How many should run, and which indexes.
        let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
        let want = if suspended {
            0
        } else if indexed {
            let n = spec.completions.unwrap_or(0);
            let pending = (0..n).filter(|i| !completed.contains(i)).count();
            parallelism.min(pending)
        } else {
            match spec.completions {
                Some(n) => parallelism.min((n - succeeded).max(0) as usize),
                None if succeeded > 0 => 0,
                None => parallelism,
            }
        };
        if ctx.expectations.satisfied(&key, &ns, &store) && !suspended {
            if active.len() > want {
                let mut extra = active.clone();
                extra.sort_by_key(|p| {
                    std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0))
                });
                extra.truncate(active.len() - want);
                let names = remove_pods(&pods_api, &extra).await?;
                ctx.expectations.expect(&key, vec![], names);
            } else if active.len() < want {
                // After failures, new pods wait out the back-off.
                let wait = {
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
                        let delay = (BACKOFF_BASE
                            * 2u32.saturating_pow((failed - 1).min(10) as u32))
                        .min(BACKOFF_MAX);
                        delay.saturating_sub(entry.1.elapsed())
                    }
                };
                if !wait.is_zero() {
                    next = Some(next.map_or(wait, |n| n.min(wait)));
                } else {
                    let indexes: Vec<Option<i32>> = if indexed {
                        let running: BTreeSet<i32> =
                            active.iter().filter_map(|p| index_of(p)).collect();
                        (0..spec.completions.unwrap_or(0))
                            .filter(|i| !completed.contains(i) && !running.contains(i))
                            .take(want - active.len())
                            .map(Some)
                            .collect()
                    } else {
                        vec![None; want - active.len()]
                    };
                    let post = PostParams::default();
                    let results: Vec<_> = futures::stream::iter(indexes)
                        .map(|i| {
                            let pod = pod_for(&job, i);
                            let api = pods_api.clone();
                            let post = post.clone();
                            async move { api.create(&post, &pod).await }
                        })
                        .buffer_unordered(BURST)
                        .collect()
                        .await;
                    let mut made = vec![];
                    let mut failure = None;
                    for r in results {
                        match r {
                            Ok(p) => made.push(p.name_any()),
                            Err(e) => failure = Some(e),
                        }
                    }
                    ctx.expectations.expect(&key, made, vec![]);
                    if let Some(e) = failure {
                        tracing::debug!(job = %key, error = %e, "creating a pod");
                        next = Some(Duration::from_secs(2));
                    }
                }
            }
        }
    } else {
        // Finished: nothing more runs.
        remove_pods(&pods_api, &active).await?;
    }
    status.active = Some(active.len() as i32);
    status.ready = Some(
        active
            .iter()
            .filter(|p| util::ready_since(p).is_some())
            .count() as i32,
    );
    status.terminating = Some(terminating);
    if status.succeeded == Some(0) {
        status.succeeded = None;
    }
    if status.failed == Some(0) {
        status.failed = None;
    }
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
/// given its index (annotation, label, hostname, JOB_COMPLETION_INDEX).
fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let spec = job.spec.clone().unwrap_or_default();
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

    #[test]
    fn completed_indexes_in_upstreams_compact_form() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format_indexes(&set), "0-2,4,6-7");
        assert_eq!(parse_indexes("0-2,4,6-7"), set);
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }
}
