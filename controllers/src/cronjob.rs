//! The cronjob controller (upstream's cronjob_controllerv2): at each time the schedule names
//! (in `spec.timeZone`, UTC by default) it creates a Job from the template, named
//! `<cronjob>-<minutes since the epoch>` so that a retry never makes two; honours suspend,
//! startingDeadlineSeconds and the concurrency policy (Allow, Forbid, Replace); tracks the
//! active jobs and the last schedule and success times; and keeps only the last
//! successfulJobsHistoryLimit / failedJobsHistoryLimit finished jobs.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use croner::Cron;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kelp_client::events::Recorder;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::{Resource, ResourceExt};

use crate::Informers;
use crate::util::{self, Error, drive, is_status};

pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream stops counting missed start times here (and says so).
const MAX_MISSED: usize = 100;

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
    events: Recorder,
}

impl Ctx {
    fn event(&self, cj: &CronJob, type_: &'static str, reason: &str, message: String) {
        self.events
            .record(cj.object_ref(&()), type_, reason, "", message);
    }
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let controller =
        Controller::for_stream(informers.cronjobs.changes(), informers.cronjobs.store())
            .owns_stream(informers.jobs.changes());
    let events = Recorder::spawn(client.clone(), "cronjob-controller", String::new());
    let ctx = Arc::new(Ctx {
        client,
        informers,
        events,
    });
    drive("cronjob", controller, reconcile, ctx).await
}

/// A schedule in a time zone: the cron pattern is matched against the zone's wall clock.
pub struct Schedule {
    cron: Cron,
    tz: jiff::tz::TimeZone,
}

impl Schedule {
    pub fn parse(schedule: &str, zone: Option<&str>) -> Result<Schedule, String> {
        let tz = match zone {
            Some(z) => {
                jiff::tz::TimeZone::get(z).map_err(|e| format!("unknown time zone {z}: {e}"))?
            }
            None => jiff::tz::TimeZone::UTC,
        };
        let cron = Cron::from_str(schedule.trim()).map_err(|e| e.to_string())?;
        Ok(Schedule { cron, tz })
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: jiff::Timestamp) -> Option<jiff::Timestamp> {
        // The wall clock of the zone, as if it were UTC, is what the pattern matches.
        let civil = t.to_zoned(self.tz.clone()).datetime();
        let wall = chrono::NaiveDate::from_ymd_opt(
            civil.year().into(),
            civil.month() as u32,
            civil.day() as u32,
        )?
        .and_hms_opt(
            civil.hour() as u32,
            civil.minute() as u32,
            civil.second() as u32,
        )?
        .and_utc();
        let next = self.cron.find_next_occurrence(&wall, false).ok()?;
        let civil_next = jiff::civil::DateTime::from_str(
            &next.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string(),
        )
        .ok()?;
        let zoned = self.tz.to_ambiguous_zoned(civil_next).compatible().ok()?;
        let ts = zoned.timestamp();
        // A gap (DST) can map back before t; step past it.
        if ts <= t {
            self.next_after(t + jiff::SignedDuration::from_mins(1))
        } else {
            Some(ts)
        }
    }

    /// The scheduled times in (after, now], at most MAX_MISSED + 1 (the last is the latest).
    pub fn missed(
        &self,
        after: jiff::Timestamp,
        now: jiff::Timestamp,
    ) -> (Option<jiff::Timestamp>, usize) {
        let mut latest = None;
        let mut count = 0;
        let mut t = after;
        while let Some(next) = self.next_after(t) {
            if next > now {
                break;
            }
            latest = Some(next);
            count += 1;
            t = next;
            if count > MAX_MISSED {
                // Jump near now: only the most recent one is run.
                let back = now - jiff::SignedDuration::from_mins(1);
                if back > t {
                    t = back;
                }
            }
        }
        (latest, count)
    }
}

fn finished(job: &Job) -> Option<&'static str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    for c in conditions {
        if c.status == "True" {
            match c.type_.as_str() {
                "Complete" => return Some("Complete"),
                "Failed" => return Some("Failed"),
                _ => {}
            }
        }
    }
    None
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cj.namespace().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let spec = cj.spec.clone().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let mut jobs: Vec<Arc<Job>> = ctx
        .informers
        .jobs
        .store()
        .state()
        .into_iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(&ns))
        .filter(|j| util::controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let old = cj.status.clone().unwrap_or_default();
    let mut status = CronJobStatus {
        active: None,
        last_schedule_time: old.last_schedule_time.clone(),
        last_successful_time: old.last_successful_time.clone(),
    };
    let mut active = vec![];
    for j in &jobs {
        match finished(j) {
            None => active.push(reference(j)),
            Some("Complete") => {
                let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
                if let Some(done) = done
                    && status
                        .last_successful_time
                        .as_ref()
                        .is_none_or(|t| t.0 < done.0)
                {
                    status.last_successful_time = Some(done);
                }
            }
            Some(_) => {}
        }
    }
    // Jobs the status calls active that the cache does not hold: too new for the cache (kept),
    // finished, or gone (upstream's MissingJob).
    for r in old.active.iter().flatten() {
        if jobs.iter().any(|j| j.metadata.uid == r.uid) {
            continue;
        }
        let Some(name) = r.name.as_deref() else {
            continue;
        };
        match jobs_api.get_opt(name).await? {
            Some(j) if j.metadata.uid == r.uid => {
                if finished(&j).is_none() {
                    active.push(reference(&j));
                }
            }
            _ => ctx.event(
                &cj,
                "Normal",
                "MissingJob",
                format!("Active job went missing: {name}"),
            ),
        }
    }

    // History limits: the oldest finished jobs beyond the limits go.
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&Arc<Job>> = jobs.iter().filter(|j| finished(j) == Some(kind)).collect();
        let extra = done.len().saturating_sub(limit.max(0) as usize);
        for j in done.into_iter().take(extra) {
            delete_job(&jobs_api, j).await?;
        }
    }

    let schedule = match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(cronjob = %cj.name_any(), error = %e, "unparseable schedule");
            status.active = (!active.is_empty()).then_some(active);
            write_status(&ctx.client, &cj, old, status).await?;
            return Ok(Action::await_change());
        }
    };
    let now = jiff::Timestamp::now();
    let since = status
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or(cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let next_wait = |from: jiff::Timestamp| {
        schedule
            .next_after(from)
            .map(|n| n.duration_since(now).unsigned_abs() + Duration::from_millis(100))
    };
    if spec.suspend.unwrap_or(false) {
        status.active = (!active.is_empty()).then_some(active);
        write_status(&ctx.client, &cj, old, status).await?;
        return Ok(Action::await_change());
    }
    let (latest, missed) = schedule.missed(since, now);
    let Some(scheduled) = latest else {
        status.active = (!active.is_empty()).then_some(active);
        write_status(&ctx.client, &cj, old, status).await?;
        return Ok(next_wait(now)
            .map(Action::requeue)
            .unwrap_or_else(Action::await_change));
    };
    if missed > MAX_MISSED {
        tracing::info!(cronjob = %cj.name_any(), missed, "too many missed start times; running only the most recent");
    }
    // This start was made already: by a pass whose status write the cronjob in the cache
    // does not show yet (upstream's inActiveListByName / lastScheduleTime check). Without this,
    // Replace would delete the job it had just created.
    let name = format!("{}-{}", cj.name_any(), scheduled.as_second() / 60);
    if jobs
        .iter()
        .any(|j| j.metadata.name.as_deref() == Some(name.as_str()))
        || active
            .iter()
            .any(|r| r.name.as_deref() == Some(name.as_str()))
    {
        status.last_schedule_time = Some(Time(scheduled));
        status.active = (!active.is_empty()).then_some(active);
        write_status(&ctx.client, &cj, old, status).await?;
        return Ok(next_wait(now)
            .map(Action::requeue)
            .unwrap_or_else(Action::await_change));
    }
    let too_late = spec
        .starting_deadline_seconds
        .is_some_and(|d| scheduled + jiff::SignedDuration::from_secs(d) < now);
    let forbidden = spec.concurrency_policy.as_deref() == Some("Forbid") && !active.is_empty();
    if too_late || forbidden {
        // This start is skipped; with Forbid it is retried while still in its deadline.
        if too_late {
            status.last_schedule_time = Some(Time(scheduled));
        }
        status.active = (!active.is_empty()).then_some(active);
        write_status(&ctx.client, &cj, old, status).await?;
        let wait = if forbidden && !too_late {
            Some(Duration::from_secs(1))
        } else {
            next_wait(now)
        };
        return Ok(wait
            .map(Action::requeue)
            .unwrap_or_else(Action::await_change));
    }
    if spec.concurrency_policy.as_deref() == Some("Replace") {
        for j in jobs.iter().filter(|j| finished(j).is_none()) {
            delete_job(&jobs_api, j).await?;
        }
        active.clear();
    }
    let template = spec.job_template;
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_AT.into(),
        scheduled
            .to_zoned(schedule.tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
    );
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![util::controller_ref(&*cj)]),
            ..Default::default()
        },
        spec: template.spec,
        ..Default::default()
    };
    match jobs_api.create(&PostParams::default(), &job).await {
        Ok(created) => {
            ctx.event(
                &cj,
                "Normal",
                "SuccessfulCreate",
                format!("Created job {name}"),
            );
            active.push(reference(&created));
        }
        // Made already (a retry after the status write failed): it is in the cache soon.
        Err(e) if is_status(&e, 409) => {}
        Err(e) => return Err(e.into()),
    }
    status.last_schedule_time = Some(Time(scheduled));
    status.active = (!active.is_empty()).then_some(active);
    write_status(&ctx.client, &cj, old, status).await?;
    Ok(next_wait(now)
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

async fn delete_job(api: &Api<Job>, job: &Job) -> Result<(), Error> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match api.delete(&job.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn write_status(
    client: &kube::Client,
    cj: &CronJob,
    old: CronJobStatus,
    status: CronJobStatus,
) -> Result<(), Error> {
    let same = |a: &Option<Vec<ObjectReference>>, b: &Option<Vec<ObjectReference>>| {
        let names = |l: &Option<Vec<ObjectReference>>| -> Vec<Option<String>> {
            l.iter().flatten().map(|r| r.uid.clone()).collect()
        };
        names(a) == names(b)
    };
    if same(&old.active, &status.active)
        && old.last_schedule_time == status.last_schedule_time
        && old.last_successful_time == status.last_successful_time
    {
        return Ok(());
    }
    let api: Api<CronJob> = Api::namespaced(client.clone(), &cj.namespace().unwrap_or_default());
    let mut updated = cj.clone();
    updated.status = Some(status);
    match api
        .replace_status(&cj.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn schedules_in_utc_and_in_a_zone() {
        let s = Schedule::parse("*/15 * * * *", None).expect("parse");
        assert_eq!(
            s.next_after(ts("2026-01-01T10:07:00Z")),
            Some(ts("2026-01-01T10:15:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-01-01T10:15:00Z")),
            Some(ts("2026-01-01T10:30:00Z"))
        );
        let (latest, n) = s.missed(ts("2026-01-01T10:00:00Z"), ts("2026-01-01T11:05:00Z"));
        assert_eq!((latest, n), (Some(ts("2026-01-01T11:00:00Z")), 4));
        // 09:00 in New York is 14:00 UTC in winter.
        let ny = Schedule::parse("0 9 * * *", Some("America/New_York")).expect("parse");
        assert_eq!(
            ny.next_after(ts("2026-01-05T12:00:00Z")),
            Some(ts("2026-01-05T14:00:00Z"))
        );
        assert!(Schedule::parse("not a schedule", None).is_err());
        assert!(Schedule::parse("* * * * *", Some("Mars/Olympus")).is_err());
        let hourly = Schedule::parse("@hourly", None).expect("parse");
        assert_eq!(
            hourly.next_after(ts("2026-01-01T10:07:00Z")),
            Some(ts("2026-01-01T11:00:00Z"))
        );
    }
}
