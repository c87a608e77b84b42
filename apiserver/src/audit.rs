//! The audit log (upstream's `--audit-policy-file` and `--audit-log-path`): an
//! `audit.k8s.io/v1` Event per request stage, as JSON lines, at the level the first matching
//! rule of the Policy gives (None, Metadata, Request, RequestResponse).

use std::io::Write;
use std::sync::Mutex;

use kelp_auth::UserInfo;
use kelp_auth::rbac::Attributes;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

struct Rule {
    level: Level,
    users: Vec<String>,
    groups: Vec<String>,
    verbs: Vec<String>,
    /// (group, resources, resource names); resources may be `*`, `pods/log`, `*/status`.
    resources: Vec<(String, Vec<String>, Vec<String>)>,
    namespaces: Vec<String>,
    urls: Vec<String>,
    omit_stages: Vec<String>,
}

pub struct Audit {
    rules: Vec<Rule>,
    omit_stages: Vec<String>,
    out: Mutex<Box<dyn Write + Send>>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// What one request looks like to the audit log, filled in as it goes.
pub struct Record {
    pub level: Level,
    omit: Vec<String>,
    event: Value,
}

impl Audit {
    /// Reads the policy; events go to `log` (`-`: standard output), appended.
    pub fn open(policy_path: &std::path::Path, log: &std::path::Path) -> Result<Audit, String> {
        let text = std::fs::read_to_string(policy_path)
            .map_err(|e| format!("{}: {e}", policy_path.display()))?;
        let policy: Value =
            serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", policy_path.display()))?;
        if policy.get("kind").and_then(Value::as_str) != Some("Policy") {
            return Err(format!("{}: not an audit Policy", policy_path.display()));
        }
        let mut rules = Vec::new();
        for (i, r) in policy
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let level = match r.get("level").and_then(Value::as_str).unwrap_or("") {
                "None" => Level::None,
                "Metadata" => Level::Metadata,
                "Request" => Level::Request,
                "RequestResponse" => Level::RequestResponse,
                other => return Err(format!("rules[{i}].level: Unsupported value: {other:?}")),
            };
            let resources = r
                .get("resources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|g| {
                    (
                        g.get("group")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        strings(g.get("resources")),
                        strings(g.get("resourceNames")),
                    )
                })
                .collect();
            rules.push(Rule {
                level,
                users: strings(r.get("users")),
                groups: strings(r.get("userGroups")),
                verbs: strings(r.get("verbs")),
                resources,
                namespaces: strings(r.get("namespaces")),
                urls: strings(r.get("nonResourceURLs")),
                omit_stages: strings(r.get("omitStages")),
            });
        }
        let out: Box<dyn Write + Send> = if log.as_os_str() == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .map_err(|e| format!("{}: {e}", log.display()))?,
            )
        };
        Ok(Audit {
            rules,
            omit_stages: strings(policy.get("omitStages")),
            out: Mutex::new(out),
        })
    }

    fn rule_for(&self, user: &UserInfo, a: &Attributes) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            let user_ok = r.users.is_empty() || r.users.contains(&user.name);
            let group_ok = r.groups.is_empty() || r.groups.iter().any(|g| user.in_group(g));
            let verb_ok = r.verbs.is_empty() || r.verbs.contains(&a.verb);
            let target_ok = if a.resource_request {
                let ns_ok = r.namespaces.is_empty() || r.namespaces.contains(&a.namespace);
                let res_ok = r.resources.is_empty()
                    || r.resources.iter().any(|(group, resources, names)| {
                        let combined = if a.subresource.is_empty() {
                            a.resource.clone()
                        } else {
                            format!("{}/{}", a.resource, a.subresource)
                        };
                        *group == a.api_group
                            && (resources.is_empty()
                                || resources.iter().any(|res| {
                                    res == "*"
                                        || *res == combined
                                        || (!a.subresource.is_empty()
                                            && res.strip_prefix("*/")
                                                == Some(a.subresource.as_str()))
                                        || (a.subresource.is_empty() && res == &a.resource)
                                }))
                            && (names.is_empty() || names.contains(&a.name))
                    });
                r.urls.is_empty() && ns_ok && res_ok
            } else {
                r.resources.is_empty()
                    && r.namespaces.is_empty()
                    && (r.urls.is_empty()
                        || r.urls.iter().any(|u| {
                            u == "*"
                                || *u == a.path
                                || (u.ends_with('*') && a.path.starts_with(u.trim_end_matches('*')))
                        }))
            };
            user_ok && group_ok && verb_ok && target_ok
        })
    }

    /// Starts a request's record (None: not audited), writing its RequestReceived event.
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        &self,
        user: &UserInfo,
        impersonated: Option<&UserInfo>,
        a: &Attributes,
        uri: &str,
        source: Option<std::net::IpAddr>,
        user_agent: &str,
    ) -> Option<Record> {
        let rule = self.rule_for(user, a)?;
        if rule.level == Level::None {
            return None;
        }
        let mut event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": format!("{:?}", rule.level),
            "auditID": uuid::Uuid::new_v4().to_string(),
            "requestURI": uri,
            "verb": a.verb,
            "user": user.to_json(),
            "sourceIPs": source.map(|ip| vec![ip.to_string()]).unwrap_or_default(),
            "userAgent": user_agent,
            "requestReceivedTimestamp": now(),
        });
        if let Some(i) = impersonated {
            event["impersonatedUser"] = i.to_json();
        }
        if a.resource_request {
            let mut reference = json!({"resource": a.resource, "apiVersion": if a.api_group.is_empty() { a.api_version.clone() } else { format!("{}/{}", a.api_group, a.api_version) }});
            if !a.api_group.is_empty() {
                reference["apiGroup"] = json!(a.api_group);
            }
            for (k, v) in [
                ("namespace", &a.namespace),
                ("name", &a.name),
                ("subresource", &a.subresource),
            ] {
                if !v.is_empty() {
                    reference[k] = json!(v);
                }
            }
            event["objectRef"] = reference;
        }
        let mut omit = self.omit_stages.clone();
        omit.extend(rule.omit_stages.iter().cloned());
        let record = Record {
            level: rule.level,
            omit,
            event,
        };
        self.write(&record, "RequestReceived");
        Some(record)
    }

    /// Writes one stage of a record.
    pub fn write(&self, record: &Record, stage: &str) {
        if record.omit.iter().any(|s| s == stage) {
            return;
        }
        let mut event = record.event.clone();
        event["stage"] = json!(stage);
        event["stageTimestamp"] = json!(now());
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = out.write_all(&line).and_then(|_| out.flush()) {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
}

impl Record {
    pub fn annotate(&mut self, key: &str, value: &str) {
        if !self.event["annotations"].is_object() {
            self.event["annotations"] = json!({});
        }
        self.event["annotations"][key] = json!(value);
    }

    pub fn set(&mut self, key: &str, value: Value) {
        self.event[key] = value;
    }

    /// Records the request's object, and names the object reference from it where the URL
    /// did not (a create), as upstream's LogRequestObject does.
    pub fn request_object(&mut self, obj: Value) {
        if let Some(reference) = self
            .event
            .get_mut("objectRef")
            .and_then(Value::as_object_mut)
            && reference.get("name").is_none_or(|n| n.as_str() == Some(""))
            && let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str)
        {
            reference.insert("name".into(), Value::String(name.to_string()));
        }
        self.event["requestObject"] = obj;
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}
