//! Upstream's RBAC bootstrap policy (the roles and bindings every cluster starts with), read
//! from `bootstrap-policy.txt`: a compact transcription of upstream's
//! `plugin/pkg/auth/authorizer/rbac/bootstrappolicy`. Every object carries the
//! `kubernetes.io/bootstrapping: rbac-defaults` label and the autoupdate annotation, as
//! upstream's do.

use serde_json::{Map, Value, json};

const POLICY: &str = include_str!("bootstrap-policy.txt");
const RBAC_V1: &str = "rbac.authorization.k8s.io/v1";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// Reconciliation leaves an object alone when this annotation is "false".
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// The bootstrap objects in upstream's order: cluster roles, cluster role bindings, roles,
/// role bindings.
pub fn objects() -> Vec<Value> {
    parse(POLICY).expect("the bootstrap policy parses")
}

fn metadata(name: &str, namespace: Option<&str>, labels: Map<String, Value>) -> Value {
    let mut labels = labels;
    labels.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    let mut meta = json!({
        "name": name,
        "labels": labels,
        "annotations": {AUTOUPDATE: "true"},
    });
    if let Some(ns) = namespace {
        meta["namespace"] = json!(ns);
    }
    meta
}

fn items(field: &str) -> Vec<String> {
    match field {
        "-" => Vec::new(),
        f => f
            .split(',')
            .map(|s| {
                if s == "\"\"" {
                    String::new()
                } else {
                    s.to_string()
                }
            })
            .collect(),
    }
}

fn subjects(field: &str) -> Result<Value, String> {
    let mut out = Vec::new();
    if field == "-" {
        return Ok(Value::Array(out));
    }
    for s in field.split(',') {
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| format!("subject {s:?} has no kind"))?;
        out.push(match kind {
            "ServiceAccount" => {
                let (ns, name) = name
                    .split_once('/')
                    .ok_or_else(|| format!("service account {name:?} has no namespace"))?;
                json!({"kind": "ServiceAccount", "name": name, "namespace": ns})
            }
            "User" | "Group" => json!({"kind": kind, "apiGroup": RBAC_GROUP, "name": name}),
            _ => return Err(format!("unknown subject kind {kind:?}")),
        });
    }
    Ok(Value::Array(out))
}

fn parse(text: &str) -> Result<Vec<Value>, String> {
    let mut out: Vec<Value> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("bootstrap-policy.txt:{}: {m}", n + 1);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["clusterrole", name, options @ ..] => {
                let mut labels = Map::new();
                let mut aggregation = None;
                for opt in options {
                    if let Some(to) = opt.strip_prefix("aggregate-to=") {
                        for t in to.split(',') {
                            labels.insert(
                                format!("rbac.authorization.k8s.io/aggregate-to-{t}"),
                                json!("true"),
                            );
                        }
                    } else if let Some(kv) = opt.strip_prefix("label=") {
                        let (k, v) = kv
                            .split_once('=')
                            .ok_or_else(|| err(format!("label {kv}")))?;
                        labels.insert(k.into(), json!(v));
                    } else if let Some(sel) = opt.strip_prefix("aggregation=") {
                        let selectors: Vec<Value> = sel
                            .split(';')
                            .map(|s| {
                                let labels: Map<String, Value> = s
                                    .split('&')
                                    .filter_map(|kv| kv.split_once('='))
                                    .map(|(k, v)| (k.to_string(), json!(v)))
                                    .collect();
                                json!({"matchLabels": labels})
                            })
                            .collect();
                        aggregation = Some(json!({"clusterRoleSelectors": selectors}));
                    } else {
                        return Err(err(format!("unknown option {opt}")));
                    }
                }
                let mut role = json!({
                    "apiVersion": RBAC_V1,
                    "kind": "ClusterRole",
                    "metadata": metadata(name, None, labels),
                    "rules": [],
                });
                if let Some(a) = aggregation {
                    role["aggregationRule"] = a;
                }
                out.push(role);
            }
            ["role", ns, name] => out.push(json!({
                "apiVersion": RBAC_V1,
                "kind": "Role",
                "metadata": metadata(name, Some(ns), Map::new()),
                "rules": [],
            })),
            ["rule", verbs, groups, resources, names @ ..] if names.len() <= 1 => {
                let mut rule = json!({
                    "verbs": items(verbs),
                    "apiGroups": items(groups),
                    "resources": items(resources),
                });
                if let Some(names) = names.first() {
                    rule["resourceNames"] = json!(items(names));
                }
                push_rule(&mut out, rule).map_err(err)?;
            }
            ["url", verbs, urls] => {
                let rule = json!({"verbs": items(verbs), "nonResourceURLs": items(urls)});
                push_rule(&mut out, rule).map_err(err)?;
            }
            ["clusterrolebinding", name, role, subs] => out.push(json!({
                "apiVersion": RBAC_V1,
                "kind": "ClusterRoleBinding",
                "metadata": metadata(name, None, Map::new()),
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
                "subjects": subjects(subs).map_err(err)?,
            })),
            ["rolebinding", ns, name, role, subs] => {
                let (kind, role) = role
                    .split_once(':')
                    .ok_or_else(|| err(format!("role reference {role}")))?;
                out.push(json!({
                    "apiVersion": RBAC_V1,
                    "kind": "RoleBinding",
                    "metadata": metadata(name, Some(ns), Map::new()),
                    "roleRef": {"apiGroup": RBAC_GROUP, "kind": kind, "name": role},
                    "subjects": subjects(subs).map_err(err)?,
                }));
            }
            _ => return Err(err(format!("cannot read {line:?}"))),
        }
    }
    Ok(out)
}

fn push_rule(out: &mut [Value], rule: Value) -> Result<(), String> {
    match out.last_mut() {
        Some(role) if role.get("rules").is_some() && role.get("aggregationRule").is_none() => {
            if let Some(rules) = role["rules"].as_array_mut() {
                rules.push(rule);
            }
            Ok(())
        }
        _ => Err("a rule outside a role (or in an aggregated one)".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_has_upstreams_core_roles_and_bindings() {
        let objects = objects();
        let find = |kind: &str, name: &str| {
            objects
                .iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("{kind} {name}"))
        };
        let admin = find("ClusterRole", "cluster-admin");
        assert_eq!(admin["rules"][0]["verbs"], json!(["*"]));
        assert_eq!(admin["rules"][1]["nonResourceURLs"], json!(["*"]));
        assert!(find("ClusterRole", "edit")["aggregationRule"].is_object());
        let masters = find("ClusterRoleBinding", "cluster-admin");
        assert_eq!(masters["subjects"][0]["name"], "system:masters");
        let public = find("ClusterRoleBinding", "system:public-info-viewer");
        assert_eq!(public["subjects"].as_array().unwrap().len(), 2);
        for o in &objects {
            assert_eq!(
                o["metadata"]["labels"]["kubernetes.io/bootstrapping"],
                "rbac-defaults"
            );
        }
        assert!(parse("  rule get \"\" pods\n").is_err());
        assert!(parse("clusterrole x\n  rule get \"\" pods a,b\n").is_ok());
    }
}
