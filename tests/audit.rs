//! The audit log: `kelp server --audit-policy-file --audit-log-path` writes audit.k8s.io/v1
//! Events at the level the policy's first matching rule gives.

mod support;

use serde_json::Value;
use support::KelpServer;

const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: RequestResponse
  resources: [{group: "", resources: [configmaps]}]
- level: Metadata
  resources: [{group: "", resources: [secrets]}]
- level: Metadata
  verbs: [create, delete]
- level: None
"#;

#[test]
fn requests_are_audited_at_their_policy_level() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    let log = dir.path().join("audit.log");
    std::fs::write(&policy, POLICY).unwrap();
    let server = KelpServer::start(
        &dir.path().join("data"),
        &[
            "--audit-policy-file",
            policy.to_str().unwrap(),
            "--audit-log-path",
            log.to_str().unwrap(),
        ],
    );
    let v = "1.33";
    let ok = |args: &[&str]| {
        let out = server.kubectl(v, args);
        assert!(out.ok, "kubectl {args:?}: {}", out.stderr);
    };
    ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=color=blue",
    ]);
    ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=audit-must-not-hold-this",
    ]);
    ok(&["get", "pods"]);
    let refused = server.kubectl(v, &["create", "namespace", "nope", "--as=mallory"]);
    assert!(!refused.ok);
    server.stop();

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("audit-must-not-hold-this"),
        "secret values stay out at Metadata level"
    );
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e["kind"] == "Event" && e["apiVersion"] == "audit.k8s.io/v1")
    );
    assert!(
        events.iter().all(|e| e["stage"] != "RequestReceived"),
        "omitted stage"
    );
    let find = |verb: &str, resource: &str| {
        events
            .iter()
            .find(|e| e["verb"] == verb && e["objectRef"]["resource"] == resource)
            .unwrap_or_else(|| panic!("no {verb} {resource} event in {text}"))
    };
    let cm = find("create", "configmaps");
    assert_eq!(cm["level"], "RequestResponse");
    assert_eq!(cm["stage"], "ResponseComplete");
    assert_eq!(cm["user"]["username"], "system:admin");
    assert_eq!(cm["sourceIPs"][0], "127.0.0.1");
    assert!(cm["userAgent"].as_str().unwrap().starts_with("kubectl"));
    assert_eq!(cm["objectRef"]["namespace"], "default");
    assert_eq!(cm["requestObject"]["data"]["color"], "blue");
    assert_eq!(cm["responseObject"]["metadata"]["name"], "settings");
    assert_eq!(cm["responseStatus"]["code"], 201);
    assert_eq!(cm["annotations"]["authorization.k8s.io/decision"], "allow");
    assert!(cm["auditID"].as_str().is_some_and(|id| id.len() == 36));
    let secret = find("create", "secrets");
    assert_eq!(secret["level"], "Metadata");
    assert!(secret.get("requestObject").is_none() && secret.get("responseObject").is_none());
    assert!(
        !events
            .iter()
            .any(|e| e["verb"] == "list" && e["objectRef"]["resource"] == "pods"),
        "level None"
    );
    let denied = find("create", "namespaces");
    assert_eq!(denied["impersonatedUser"]["username"], "mallory");
    assert_eq!(denied["responseStatus"]["code"], 403);
    assert_eq!(denied["responseStatus"]["reason"], "Forbidden");
    assert_eq!(
        denied["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
}
