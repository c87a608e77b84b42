//! Defaulting as upstream's SetDefaults functions do it (pkg/apis/*/v1/defaults.go), for the
//! fields users see in `kubectl get -o yaml`.

use serde_json::{Value, json};

/// Sets `obj[key]` when it is missing or null.
pub fn set(obj: &mut Value, key: &str, value: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj[key] = value;
    }
}

fn each(obj: &mut Value, key: &str, f: impl Fn(&mut Value)) {
    if let Some(Value::Array(items)) = obj.get_mut(key) {
        items.iter_mut().for_each(f);
    }
}

fn container(c: &mut Value) {
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    // The tag is after the last '/', and a digest pins the image.
    let last = image.rsplit('/').next().unwrap_or("");
    let latest = !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"));
    set(
        c,
        "imagePullPolicy",
        json!(if latest { "Always" } else { "IfNotPresent" }),
    );
    set(c, "resources", json!({}));
    each(c, "ports", |p| set(p, "protocol", json!("TCP")));
}

/// A PodSpec's defaults (SetDefaults_PodSpec and its containers').
pub fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "schedulerName", json!("default-scheduler"));
    set(spec, "securityContext", json!({}));
    each(spec, "containers", container);
    each(spec, "initContainers", container);
}

pub fn pod(o: &mut Value) {
    if let Some(spec) = o.get_mut("spec") {
        pod_spec(spec);
        set(spec, "enableServiceLinks", json!(true));
        // priority and preemptionPolicy come from the Priority admission plugin.
    }
}

/// The pod template of a workload (`spec.template.spec`).
pub fn template(o: &mut Value) {
    if let Some(spec) = o.pointer_mut("/spec/template/spec") {
        pod_spec(spec);
    }
}

pub fn deployment(o: &mut Value) {
    template(o);
    let Some(spec) = o.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set(spec, "replicas", json!(1));
    set(spec, "revisionHistoryLimit", json!(10));
    set(spec, "progressDeadlineSeconds", json!(600));
    set(spec, "strategy", json!({"type": "RollingUpdate"}));
    if spec.pointer("/strategy/type") == Some(&json!("RollingUpdate")) {
        let strategy = &mut spec["strategy"];
        set(strategy, "rollingUpdate", json!({}));
        set(
            &mut strategy["rollingUpdate"],
            "maxUnavailable",
            json!("25%"),
        );
        set(&mut strategy["rollingUpdate"], "maxSurge", json!("25%"));
    }
}

pub fn replica_set(o: &mut Value) {
    template(o);
    if let Some(spec) = o.get_mut("spec").filter(|s| s.is_object()) {
        set(spec, "replicas", json!(1));
    }
}

pub fn stateful_set(o: &mut Value) {
    template(o);
    let Some(spec) = o.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set(spec, "replicas", json!(1));
    set(spec, "podManagementPolicy", json!("OrderedReady"));
    set(spec, "revisionHistoryLimit", json!(10));
    set(
        spec,
        "updateStrategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
    );
    set(
        spec,
        "persistentVolumeClaimRetentionPolicy",
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
    );
}

pub fn daemon_set(o: &mut Value) {
    template(o);
    let Some(spec) = o.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set(spec, "revisionHistoryLimit", json!(10));
    set(
        spec,
        "updateStrategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
    );
}

pub fn job(o: &mut Value) {
    if let Some(spec) = o.pointer_mut("/spec/template/spec") {
        pod_spec(spec);
        // Jobs' pods must not restart forever; upstream requires Never or OnFailure.
    }
    let Some(spec) = o.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    // A job with neither completions nor parallelism runs one pod to one completion; one
    // with only a parallelism is a work queue (upstream's SetDefaults_Job).
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec["completions"] = json!(1);
    }
    set(spec, "parallelism", json!(1));
    let per_index = spec
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null());
    set(
        spec,
        "backoffLimit",
        json!(if per_index { i32::MAX } else { 6 }),
    );
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    let failure_policy = spec.get("podFailurePolicy").is_some_and(|v| !v.is_null());
    set(
        spec,
        "podReplacementPolicy",
        json!(if failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    // A pod condition pattern without a status means True.
    if let Some(Value::Array(rules)) = spec.pointer_mut("/podFailurePolicy/rules") {
        for rule in rules {
            if let Some(Value::Array(patterns)) = rule.get_mut("onPodConditions") {
                for p in patterns {
                    set(p, "status", json!("True"));
                }
            }
        }
    }
    // Upstream's generateSelector: unless the user manages the selector, the job selects its
    // pods by its uid, and its template carries the labels (the legacy ones too).
    let uid = o
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let manual = o.pointer("/spec/manualSelector") == Some(&json!(true));
    if let (Some(uid), Some(name), false, None) = (uid, name, manual, o.pointer("/spec/selector")) {
        o["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        let template = &mut o["spec"]["template"];
        if !template.is_object() {
            *template = json!({});
        }
        if !template.get("metadata").is_some_and(Value::is_object) {
            template["metadata"] = json!({});
        }
        let meta = &mut template["metadata"];
        if !meta.get("labels").is_some_and(Value::is_object) {
            meta["labels"] = json!({});
        }
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            meta["labels"][k] = json!(v);
        }
    }
}

pub fn cron_job(o: &mut Value) {
    if let Some(spec) = o.pointer_mut("/spec/jobTemplate/spec/template/spec") {
        pod_spec(spec);
    }
    let Some(spec) = o.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set(spec, "concurrencyPolicy", json!("Allow"));
    set(spec, "suspend", json!(false));
    set(spec, "successfulJobsHistoryLimit", json!(3));
    set(spec, "failedJobsHistoryLimit", json!(1));
}

pub fn service(o: &mut Value) {
    let Some(spec) = o.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    set(spec, "internalTrafficPolicy", json!("Cluster"));
    each(spec, "ports", |p| {
        set(p, "protocol", json!("TCP"));
        if p.get("targetPort").is_none() {
            p["targetPort"] = p.get("port").cloned().unwrap_or(Value::Null);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_gets_upstreams_defaults() {
        let mut plain = json!({"spec": {"template": {"spec": {"containers": []}}}});
        job(&mut plain);
        assert_eq!(
            (
                &plain["spec"]["completions"],
                &plain["spec"]["parallelism"],
                &plain["spec"]["backoffLimit"]
            ),
            (&json!(1), &json!(1), &json!(6))
        );
        assert_eq!(plain["spec"]["podReplacementPolicy"], "TerminatingOrFailed");
        // A work queue keeps its completions unset; a per-index job has no job-wide limit.
        let mut queue = json!({"spec": {"parallelism": 1, "backoffLimitPerIndex": 2,
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}}});
        job(&mut queue);
        assert_eq!(queue["spec"].get("completions"), None);
        assert_eq!(queue["spec"]["backoffLimit"], i32::MAX);
        assert_eq!(queue["spec"]["podReplacementPolicy"], "Failed");
        assert_eq!(
            queue["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"],
            "True"
        );
    }

    #[test]
    fn a_deployment_gets_upstreams_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "nginx"}, {"name": "b", "image": "registry:5000/app:1.2", "ports": [{"containerPort": 80}]}]}}}});
        deployment(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            (
                c[0]["imagePullPolicy"].as_str(),
                c[1]["imagePullPolicy"].as_str()
            ),
            (Some("Always"), Some("IfNotPresent"))
        );
        assert_eq!(c[1]["ports"][0]["protocol"], "TCP");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn explicit_values_are_kept() {
        let mut d = json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}}});
        deployment(&mut d);
        assert_eq!(d["spec"]["replicas"], 0);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    }
}
