//! `batch/v1`: jobs and cron jobs.

use k8s_openapi::api::batch::v1 as batch;
use serde_json::{Value, json};

use super::cells::{self, AGE, col, text, wide};
use super::{Resource, Status, defaults};
use crate::typed::typed;

pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "batch",
        version: "v1",
        kind: "Job",
        typed: typed::<batch::Job>(),
        plural: "jobs",
        singular: "job",
        namespaced: true,
        short_names: &[],
        categories: &["all"],
        columns: &[
            col("Status", "Status of the job.", |o| {
                json!(cells::job_status(o))
            }),
            col(
                "Completions",
                "The completed pods out of the desired ones.",
                |o| json!(cells::job_completions(o)),
            ),
            col("Duration", "Time required to complete the job.", |o| {
                json!(cells::job_duration(o))
            }),
            AGE,
            wide(
                "Containers",
                "Names of each container in the template.",
                |o| json!(cells::joined(o, "/spec/template/spec/containers", "/name")),
            ),
            wide(
                "Images",
                "Images referenced by each container in the template.",
                |o| json!(cells::joined(o, "/spec/template/spec/containers", "/image")),
            ),
            wide("Selector", "Label selector for pods.", |o| {
                json!(cells::selector(o, "/spec/selector"))
            }),
        ],
        fields: &["status.successful"],
        status: Status::Subresource,
        scale: false,
        generation: true,
        storage: None,
        allocate: None,
        allocations: super::holds_nothing,
        on_update: super::any_update,
        prepare_update: super::prepare_nothing,
        defaults: defaults::job,
        prepare_create: super::no_defaults,
        validate: super::no_rules,
        delete_finalizers: &[],
        custom: None,
        conversion: None,
        verbs: super::VERBS,
    },
    Resource {
        group: "batch",
        version: "v1",
        kind: "CronJob",
        typed: typed::<batch::CronJob>(),
        plural: "cronjobs",
        singular: "cronjob",
        namespaced: true,
        short_names: &["cj"],
        categories: &["all"],
        columns: &[
            col("Schedule", "The schedule in Cron format.", |o| {
                json!(text(o, "/spec/schedule"))
            }),
            col("Timezone", "The time zone of the schedule.", |o| {
                json!(cells::or_none(text(o, "/spec/timeZone")))
            }),
            col("Suspend", "Whether scheduling is suspended.", |o| {
                json!(
                    o.pointer("/spec/suspend")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                        .to_string()
                        .replace("true", "True")
                        .replace("false", "False")
                )
            }),
            col("Active", "The number of running jobs.", |o| {
                json!(
                    o.pointer("/status/active")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len)
                )
            }),
            col("Last Schedule", "When the job was last scheduled.", |o| {
                json!(cells::last_schedule(o))
            }),
            AGE,
            wide(
                "Containers",
                "Names of each container in the template.",
                |o| {
                    json!(cells::joined(
                        o,
                        "/spec/jobTemplate/spec/template/spec/containers",
                        "/name"
                    ))
                },
            ),
            wide(
                "Images",
                "Images referenced by each container in the template.",
                |o| {
                    json!(cells::joined(
                        o,
                        "/spec/jobTemplate/spec/template/spec/containers",
                        "/image"
                    ))
                },
            ),
            wide("Selector", "Label selector for pods.", |o| {
                json!(cells::selector(o, "/spec/jobTemplate/spec/selector"))
            }),
        ],
        fields: &[],
        status: Status::Subresource,
        scale: false,
        generation: true,
        storage: None,
        allocate: None,
        allocations: super::holds_nothing,
        on_update: super::any_update,
        prepare_update: super::prepare_nothing,
        defaults: defaults::cron_job,
        prepare_create: super::no_defaults,
        validate: super::no_rules,
        delete_finalizers: &[],
        custom: None,
        conversion: None,
        verbs: super::VERBS,
    },
];
