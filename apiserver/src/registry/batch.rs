//! `batch/v1`: jobs and cron jobs.

use k8s_openapi::api::batch::v1 as batch;
use serde_json::{Value, json};

use super::cells::{self, AGE, col, text, wide};
use super::{Resource, Status, defaults};
use crate::typed::typed;

/// The most indexes a per-index job or a success policy may name (upstream's
/// maxParallelismForIndexedJob and maxFailedIndexesForIndexedJob).
const MAX_INDEXES: i64 = 100_000;
/// The most rules a success policy may have.
const MAX_SUCCESS_RULES: usize = 20;

/// Upstream's validateJobSpec for the per-index back-off and the success policy: both need
/// an Indexed job, maxFailedIndexes needs backoffLimitPerIndex and stays within completions,
/// FailIndex needs backoffLimitPerIndex, a success policy has 1 to 20 rules, each naming
/// indexes below completions and/or a count no larger than they allow.
fn job_rules(o: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut bad = |field: &str, message: String| out.push((field.to_string(), message));
    let int = |p: &str| o.pointer(p).and_then(Value::as_i64);
    let indexed = o.pointer("/spec/completionMode").and_then(Value::as_str) == Some("Indexed");
    let completions = int("/spec/completions");
    let per_index = int("/spec/backoffLimitPerIndex");
    if let Some(limit) = per_index {
        if !indexed {
            bad(
                "spec.backoffLimitPerIndex",
                "Forbidden: requires indexed completion mode".into(),
            );
        }
        if limit < 0 {
            bad(
                "spec.backoffLimitPerIndex",
                format!("Invalid value: {limit}: must be greater than or equal to 0"),
            );
        }
        if let Some(c) = completions.filter(|c| *c > MAX_INDEXES) {
            bad(
                "spec.completions",
                format!(
                    "Invalid value: {c}: must be less than or equal to {MAX_INDEXES} when backoffLimitPerIndex is specified"
                ),
            );
        }
    }
    if let Some(max) = int("/spec/maxFailedIndexes") {
        if per_index.is_none() {
            bad(
                "spec.backoffLimitPerIndex",
                "Required value: when maxFailedIndexes is specified".into(),
            );
        }
        if max < 0 {
            bad(
                "spec.maxFailedIndexes",
                format!("Invalid value: {max}: must be greater than or equal to 0"),
            );
        } else if max > MAX_INDEXES {
            bad(
                "spec.maxFailedIndexes",
                format!("Invalid value: {max}: must be less than or equal to {MAX_INDEXES}"),
            );
        } else if completions.is_some_and(|c| max > c) {
            bad(
                "spec.maxFailedIndexes",
                format!("Invalid value: {max}: must be less than or equal to completions"),
            );
        }
    }
    let rules = o
        .pointer("/spec/podFailurePolicy/rules")
        .and_then(Value::as_array);
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        if rule.get("action").and_then(Value::as_str) == Some("FailIndex") && per_index.is_none() {
            bad(
                &format!("spec.podFailurePolicy.rules[{i}].action"),
                "Forbidden: requires the backoffLimitPerIndex to be set".into(),
            );
        }
    }
    let Some(policy) = o.pointer("/spec/successPolicy").filter(|p| !p.is_null()) else {
        return out;
    };
    if !indexed {
        let mode = o
            .pointer("/spec/completionMode")
            .and_then(Value::as_str)
            .unwrap_or("NonIndexed");
        bad(
            "spec.completionMode",
            format!("Invalid value: {mode:?}: requires indexed completion mode"),
        );
    }
    let rules = policy
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if rules.is_empty() {
        bad("spec.successPolicy.rules", "Required value".into());
    } else if rules.len() > MAX_SUCCESS_RULES {
        bad(
            "spec.successPolicy.rules",
            format!(
                "Too many: {}: must have at most {MAX_SUCCESS_RULES} items",
                rules.len()
            ),
        );
    }
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("spec.successPolicy.rules[{i}]");
        let indexes = rule.get("succeededIndexes").and_then(Value::as_str);
        let count = rule.get("succeededCount").and_then(Value::as_i64);
        if indexes.is_none() && count.is_none() {
            bad(
                &field,
                "Required value: at least one of succeededCount or succeededIndexes must be specified".into(),
            );
        }
        let mut listed: Option<i64> = None;
        if let Some(text) = indexes {
            match index_count(text, completions.unwrap_or(0)) {
                Ok(n) => listed = Some(n),
                Err(e) => bad(
                    &format!("{field}.succeededIndexes"),
                    format!("Invalid value: {text:?}: error parsing succeededIndexes: {e}"),
                ),
            }
        }
        if let Some(n) = count {
            if n < 0 {
                bad(
                    &format!("{field}.succeededCount"),
                    format!("Invalid value: {n}: must be greater than or equal to 0"),
                );
            } else if let Some(c) = completions.filter(|c| n > *c) {
                bad(
                    &format!("{field}.succeededCount"),
                    format!(
                        "Invalid value: {n}: must be less than or equal to {c} (the number of specified completions)"
                    ),
                );
            } else if let Some(l) = listed.filter(|l| n > *l) {
                bad(
                    &format!("{field}.succeededCount"),
                    format!(
                        "Invalid value: {n}: must be less than or equal to {l} (the number of indexes in the specified succeededIndexes field)"
                    ),
                );
            }
        }
    }
    out
}

/// How many indexes "0,2-4" names, each below `completions`, in increasing order without
/// overlaps (upstream's parseIndexesFromString as the validation uses it).
fn index_count(text: &str, completions: i64) -> Result<i64, String> {
    let mut last: i64 = -1;
    let mut total = 0;
    for part in text.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let parse = |x: &str| {
            x.trim()
                .parse::<i64>()
                .map_err(|_| format!("cannot convert string to integer for index: {x:?}"))
        };
        let (a, b) = (parse(a)?, parse(b)?);
        if a > b {
            return Err(format!(
                "the fist index {a} of the interval must be less than or equal to the last index {b}"
            ));
        }
        if a <= last {
            return Err(format!("overlapping or out of order intervals at {part:?}"));
        }
        if b >= completions {
            return Err(format!("too large index: {b:?}"));
        }
        total += b - a + 1;
        last = b;
    }
    Ok(total)
}

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
        validate: job_rules,
        delete_finalizers: &[],
        custom: None,
        conversion: None,
        verbs: super::VERBS,
        deprecation: None,
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
        deprecation: None,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(o: Value) -> Vec<String> {
        job_rules(&o).into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn per_index_and_success_policy_rules_are_upstreams() {
        let indexed = |extra: Value| {
            let mut spec = json!({"completionMode": "Indexed", "completions": 5});
            for (k, v) in extra.as_object().unwrap() {
                spec[k] = v.clone();
            }
            json!({"spec": spec})
        };
        assert!(
            fields(indexed(
                json!({"backoffLimitPerIndex": 1, "maxFailedIndexes": 2})
            ))
            .is_empty()
        );
        assert_eq!(
            fields(json!({"spec": {"backoffLimitPerIndex": 1}})),
            ["spec.backoffLimitPerIndex"]
        );
        assert_eq!(
            fields(indexed(json!({"maxFailedIndexes": 6}))),
            ["spec.backoffLimitPerIndex", "spec.maxFailedIndexes"]
        );
        assert_eq!(
            fields(indexed(
                json!({"podFailurePolicy": {"rules": [{"action": "FailIndex"}]}})
            )),
            ["spec.podFailurePolicy.rules[0].action"]
        );
        let policy = |rules: Value| indexed(json!({"successPolicy": {"rules": rules}}));
        assert!(
            fields(policy(
                json!([{"succeededIndexes": "0,2-4", "succeededCount": 2}])
            ))
            .is_empty()
        );
        assert_eq!(fields(policy(json!([]))), ["spec.successPolicy.rules"]);
        assert_eq!(fields(policy(json!([{}]))), ["spec.successPolicy.rules[0]"]);
        assert_eq!(
            fields(policy(
                json!([{"succeededIndexes": "3-1"}, {"succeededIndexes": "0-5"}])
            )),
            [
                "spec.successPolicy.rules[0].succeededIndexes",
                "spec.successPolicy.rules[1].succeededIndexes"
            ]
        );
        assert_eq!(
            fields(policy(
                json!([{"succeededIndexes": "0-1", "succeededCount": 3}])
            )),
            ["spec.successPolicy.rules[0].succeededCount"]
        );
        assert_eq!(
            fields(
                json!({"spec": {"completions": 2, "successPolicy": {"rules": [{"succeededCount": 1}]}}})
            ),
            ["spec.completionMode"]
        );
    }
}
