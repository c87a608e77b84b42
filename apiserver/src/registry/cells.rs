//! Table cells as upstream's printers compute them (pkg/printers/internalversion/printers.go).

use serde_json::{Value, json};

use super::Column;

pub fn text(o: &Value, pointer: &str) -> String {
    match o.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

pub fn int(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

pub fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn list<'a>(o: &'a Value, pointer: &str) -> &'a [Value] {
    o.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Comma-separated `field` of each element of the list at `pointer`.
pub fn joined(o: &Value, pointer: &str, field: &str) -> String {
    list(o, pointer)
        .iter()
        .map(|c| text(c, field))
        .collect::<Vec<_>>()
        .join(",")
}

/// A label selector as `k=v,k2 in (a,b)`.
pub fn selector(o: &Value, pointer: &str) -> String {
    let Some(sel) = o.pointer(pointer) else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    for e in list(sel, "/matchExpressions") {
        let values = e.get("values").and_then(Value::as_array).map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        });
        let key = text(e, "/key");
        parts.push(match text(e, "/operator").as_str() {
            "In" => format!("{key} in ({})", values.unwrap_or_default()),
            "NotIn" => format!("{key} notin ({})", values.unwrap_or_default()),
            "Exists" => key,
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    or_none(parts.join(","))
}

/// A map selector (services, daemonset node selectors) as `k=v,k2=v2`.
pub fn map(o: &Value, pointer: &str) -> String {
    let pairs: Vec<String> = o
        .pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    or_none(pairs.join(","))
}

/// Number of keys of the maps at these fields.
pub fn count(o: &Value, fields: &[&str]) -> Value {
    json!(
        fields
            .iter()
            .map(|f| o.get(*f).and_then(Value::as_object).map_or(0, |m| m.len()))
            .sum::<usize>()
    )
}

pub const fn col(
    name: &'static str,
    description: &'static str,
    cell: fn(&Value) -> Value,
) -> Column {
    Column {
        name,
        kind: "string",
        description,
        priority: 0,
        cell,
    }
}

pub const fn wide(
    name: &'static str,
    description: &'static str,
    cell: fn(&Value) -> Value,
) -> Column {
    Column {
        name,
        kind: "string",
        description,
        priority: 1,
        cell,
    }
}

pub const AGE: Column = col(
    "Age",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
    |o| json!(crate::object::age(o)),
);

/// Upstream's column for kinds without a printer of their own.
pub const CREATED_AT: Column = col("Created At", "When the object was created.", |o| {
    json!(text(o, "/metadata/creationTimestamp"))
});

/// The Containers, Images and Selector wide columns of the workload kinds.
pub const WORKLOAD_WIDE: [Column; 3] = [
    wide(
        "Containers",
        "Names of each container in the template.",
        |o| json!(joined(o, "/spec/template/spec/containers", "/name")),
    ),
    wide(
        "Images",
        "Images referenced by each container in the template.",
        |o| json!(joined(o, "/spec/template/spec/containers", "/image")),
    ),
    wide("Selector", "Label selector for pods.", |o| {
        json!(selector(o, "/spec/selector"))
    }),
];

/// Upstream's pod Status column (printPod): the phase or the pod's reason; while
/// initializing `Init:<reason>` or `Init:N/M`; then the reason of the first container that
/// is waiting or terminated (`Completed` back to `Running` while another still runs);
/// `Terminating` once deletion started on a pod that has not finished.
pub fn pod_status(o: &Value) -> String {
    let mut reason = text(o, "/status/phase");
    let pod_reason = text(o, "/status/reason");
    if !pod_reason.is_empty() {
        reason = pod_reason.clone();
    }
    let conditions = list(o, "/status/conditions");
    if conditions
        .iter()
        .any(|c| text(c, "/type") == "PodScheduled" && text(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let init_specs = list(o, "/spec/initContainers");
    let restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| text(c, "/name") == name && text(c, "/restartPolicy") == "Always")
    };
    let inits = list(o, "/status/initContainerStatuses");
    let mut initializing = false;
    for (i, c) in inits.iter().enumerate() {
        let terminated = c.pointer("/state/terminated");
        let waiting = text(c, "/state/waiting/reason");
        if terminated.is_some() && int(c, "/state/terminated/exitCode") == 0 {
            continue;
        }
        if restartable(&text(c, "/name")) && c.get("started") == Some(&json!(true)) {
            continue;
        }
        initializing = true;
        reason = if terminated.is_some() {
            let r = text(c, "/state/terminated/reason");
            if !r.is_empty() {
                format!("Init:{r}")
            } else if int(c, "/state/terminated/signal") != 0 {
                format!("Init:Signal:{}", int(c, "/state/terminated/signal"))
            } else {
                format!("Init:ExitCode:{}", int(c, "/state/terminated/exitCode"))
            }
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            format!("Init:{waiting}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        break;
    }
    let initialized = conditions
        .iter()
        .any(|c| text(c, "/type") == "Initialized" && text(c, "/status") == "True");
    if !initializing || initialized {
        let mut running = false;
        for c in list(o, "/status/containerStatuses").iter().rev() {
            let waiting = text(c, "/state/waiting/reason");
            let terminated = c.pointer("/state/terminated");
            let terminated_reason = text(c, "/state/terminated/reason");
            if !waiting.is_empty() {
                reason = waiting;
            } else if terminated.is_some() && !terminated_reason.is_empty() {
                reason = terminated_reason;
            } else if terminated.is_some() {
                reason = match int(c, "/state/terminated/signal") {
                    0 => format!("ExitCode:{}", int(c, "/state/terminated/exitCode")),
                    signal => format!("Signal:{signal}"),
                };
            } else if c.get("ready") == Some(&json!(true)) && c.pointer("/state/running").is_some()
            {
                running = true;
            }
        }
        if reason == "Completed" && running {
            let ready = conditions
                .iter()
                .any(|c| text(c, "/type") == "Ready" && text(c, "/status") == "True");
            reason = if ready { "Running" } else { "NotReady" }.into();
        }
    }
    let deleting = o.pointer("/metadata/deletionTimestamp").is_some();
    let phase = text(o, "/status/phase");
    if deleting && pod_reason == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && !matches!(phase.as_str(), "Succeeded" | "Failed") {
        reason = "Terminating".into();
    }
    or_unknown(reason)
}

fn or_unknown(s: String) -> String {
    if s.is_empty() { "Unknown".into() } else { s }
}

pub fn pod_ready(o: &Value) -> String {
    let total = list(o, "/spec/containers").len();
    let ready = list(o, "/status/containerStatuses")
        .iter()
        .filter(|c| c.get("ready") == Some(&json!(true)))
        .count();
    format!("{ready}/{total}")
}

pub fn pod_restarts(o: &Value) -> String {
    list(o, "/status/containerStatuses")
        .iter()
        .map(|c| int(c, "/restartCount"))
        .sum::<i64>()
        .to_string()
}

/// `80/TCP,443:30443/TCP`
pub fn service_ports(o: &Value) -> String {
    let ports: Vec<String> = list(o, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = or_default(text(p, "/protocol"), "TCP");
            match int(p, "/nodePort") {
                0 => format!("{}/{proto}", int(p, "/port")),
                n => format!("{}:{n}/{proto}", int(p, "/port")),
            }
        })
        .collect();
    or_none(ports.join(","))
}

pub fn or_default(s: String, d: &str) -> String {
    if s.is_empty() { d.into() } else { s }
}

/// `Ready`, `NotReady` or `Unknown`, with `,SchedulingDisabled` when cordoned.
pub fn node_status(o: &Value) -> String {
    let ready = list(o, "/status/conditions")
        .iter()
        .find(|c| text(c, "/type") == "Ready")
        .map(|c| text(c, "/status"));
    let mut s = match ready.as_deref() {
        Some("True") => "Ready".to_string(),
        // False and Unknown alike (upstream's printNode); no condition at all is Unknown.
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
        s.push_str(",SchedulingDisabled");
    }
    s
}

pub fn node_roles(o: &Value) -> String {
    let roles: Vec<&str> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    or_none(roles.join(","))
}

pub fn node_address(o: &Value, kind: &str) -> String {
    or_none(
        list(o, "/status/addresses")
            .iter()
            .filter(|a| text(a, "/type") == kind)
            .map(|a| text(a, "/address"))
            .next()
            .unwrap_or_default(),
    )
}

/// The job's Status column (1.33): Complete, Failed, Suspended, Running, or the terminating state.
pub fn job_status(o: &Value) -> String {
    for (kind, shown) in [
        ("Complete", "Complete"),
        ("Failed", "Failed"),
        ("Suspended", "Suspended"),
        ("FailureTarget", "FailureTarget"),
        ("SuccessCriteriaMet", "SuccessCriteriaMet"),
    ] {
        if list(o, "/status/conditions")
            .iter()
            .any(|c| text(c, "/type") == kind && text(c, "/status") == "True")
        {
            return shown.into();
        }
    }
    "Running".into()
}

/// Succeeded out of completions (`3/5`), or `n/1 of m` forms upstream prints for parallel jobs
/// without completions.
pub fn job_completions(o: &Value) -> String {
    let succeeded = int(o, "/status/succeeded");
    match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = o
                .pointer("/spec/parallelism")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    }
}

/// Time between start and completion (or now), as upstream's HumanDuration prints it.
pub fn job_duration(o: &Value) -> String {
    let parse = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    };
    match parse("/status/startTime") {
        Some(start) => {
            let end = parse("/status/completionTime").unwrap_or_else(jiff::Timestamp::now);
            crate::object::human_duration(end.as_second() - start.as_second())
        }
        None => String::new(),
    }
}

pub fn last_schedule(o: &Value) -> String {
    match o
        .pointer("/status/lastScheduleTime")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    {
        Some(t) => {
            crate::object::human_duration(jiff::Timestamp::now().as_second() - t.as_second())
        }
        None => "<none>".into(),
    }
}

/// The HorizontalPodAutoscaler columns, for the v2 form and the v1 form alike.
pub const HPA: [Column; 6] = [
    col("Reference", "The scaled object.", |o| {
        json!(format!(
            "{}/{}",
            text(o, "/spec/scaleTargetRef/kind"),
            text(o, "/spec/scaleTargetRef/name")
        ))
    }),
    col("Targets", "Current and target metrics.", |o| {
        json!(hpa_targets(o))
    }),
    col("MinPods", "Lower replica limit.", |o| {
        json!(
            o.pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        )
    }),
    col("MaxPods", "Upper replica limit.", |o| {
        json!(int(o, "/spec/maxReplicas"))
    }),
    col("Replicas", "Current replicas.", |o| {
        json!(int(o, "/status/currentReplicas"))
    }),
    AGE,
];

/// Upstream's HPA Targets column (formatHPAMetrics): `cpu: 40%/50%` per resource metric,
/// `<unknown>` for what status does not report yet, `<none>` without metrics; v1's single
/// CPU target reads the same.
fn hpa_targets(o: &Value) -> String {
    if let Some(t) = o
        .pointer("/spec/targetCPUUtilizationPercentage")
        .and_then(Value::as_i64)
    {
        let now = o
            .pointer("/status/currentCPUUtilizationPercentage")
            .and_then(Value::as_i64)
            .map_or("<unknown>".to_string(), |c| format!("{c}%"));
        return format!("cpu: {now}/{t}%");
    }
    let current = list(o, "/status/currentMetrics");
    let shown: Vec<String> = list(o, "/spec/metrics")
        .iter()
        .map(|m| {
            let kind = text(m, "/type");
            let source = match kind.as_str() {
                "Resource" => "resource",
                "ContainerResource" => "containerResource",
                "Pods" => "pods",
                "Object" => "object",
                "External" => "external",
                _ => "",
            };
            let name = match source {
                "resource" | "containerResource" => text(m, &format!("/{source}/name")),
                _ => text(m, &format!("/{source}/metric/name")),
            };
            let now = current
                .iter()
                .find(|c| {
                    text(c, "/type") == kind && {
                        let cn = match source {
                            "resource" | "containerResource" => text(c, &format!("/{source}/name")),
                            _ => text(c, &format!("/{source}/metric/name")),
                        };
                        cn == name
                    }
                })
                .map(|c| &c[source]["current"]);
            let target = &m[source]["target"];
            match target.get("averageUtilization").and_then(Value::as_i64) {
                Some(t) => {
                    let now = now
                        .and_then(|c| c.get("averageUtilization"))
                        .and_then(Value::as_i64)
                        .map_or("<unknown>".to_string(), |c| format!("{c}%"));
                    format!("{name}: {now}/{t}%")
                }
                None => {
                    let field = if target.get("averageValue").is_some() {
                        "averageValue"
                    } else {
                        "value"
                    };
                    let now = now
                        .and_then(|c| c.get(field))
                        .map_or("<unknown>".to_string(), |c| text(c, ""));
                    format!("{name}: {now}/{}", text(target, &format!("/{field}")))
                }
            }
        })
        .collect();
    if shown.is_empty() {
        return "<none>".into();
    }
    match shown.len() {
        n if n > 2 => format!("{} + {} more...", shown[..2].join(", "), n - 2),
        _ => shown.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_print_ready_status_and_restarts() {
        let pod = json!({
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        });
        assert_eq!(
            (pod_ready(&pod), pod_status(&pod), pod_restarts(&pod)),
            ("1/2".into(), "CrashLoopBackOff".into(), "3".into())
        );
        assert_eq!(
            pod_status(&json!({"status": {"phase": "Pending"}})),
            "Pending"
        );
    }

    #[test]
    fn selectors_ports_and_nodes_print_as_upstream() {
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}}});
        assert_eq!(selector(&d, "/spec/selector"), "app=web,tier in (a,b)");
        let svc = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443}]}});
        assert_eq!(service_ports(&svc), "80/TCP,443:30443/TCP");
        let node = json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}, "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(
            (node_status(&node), node_roles(&node)),
            ("Ready,SchedulingDisabled".into(), "control-plane".into())
        );
    }

    #[test]
    fn pod_and_node_status_as_kubectl_prints_them() {
        let pod = |status: Value, deleting: bool| {
            let mut p =
                json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "status": status});
            if deleting {
                p["metadata"] = json!({"deletionTimestamp": "2026-01-01T00:00:00Z"});
            }
            p
        };
        let done = json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]});
        assert_eq!(pod_status(&pod(done.clone(), false)), "Completed");
        assert_eq!(pod_status(&pod(done, true)), "Completed");
        let one_left = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "b", "ready": true, "state": {"running": {}}}]});
        assert_eq!(pod_status(&pod(one_left, false)), "NotReady");
        let crashing = json!({"phase": "Running", "containerStatuses": [
            {"name": "a", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]});
        assert_eq!(
            pod_status(&pod(crashing.clone(), false)),
            "CrashLoopBackOff"
        );
        assert_eq!(pod_status(&pod(crashing, true)), "Terminating");
        let init = json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "i", "state": {"waiting": {"reason": "PodInitializing"}}}]});
        let mut p = pod(init, false);
        p["spec"]["initContainers"] = json!([{"name": "i"}]);
        assert_eq!(pod_status(&p), "Init:0/1");
        let unknown = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(node_status(&unknown), "NotReady");
        assert_eq!(node_status(&json!({})), "Unknown");
    }
}
