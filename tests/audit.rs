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
    // A policy that only audits (and warns, which tells when it is in force).
    let policy = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: color-audit}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}
  validations:
  - expression: "!has(object.data) || !('color' in object.data)"
    message: colors are audited
  auditAnnotations:
  - key: color
    valueExpression: "has(object.data) && 'color' in object.data ? object.data.color : null"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: color-audit}
spec:
  policyName: color-audit
  validationActions: [Warn, Audit]
"#;
    let out = server.kubectl_with_stdin(v, &["create", "-f", "-"], Some(policy));
    assert!(out.ok, "{}", out.stderr);
    let in_force = (0..50).any(|i| {
        let name = format!("probe-{i}");
        let out = server.kubectl(
            v,
            &["create", "configmap", &name, "--from-literal=color=red"],
        );
        assert!(out.ok, "{}", out.stderr);
        out.stderr.contains("colors are audited")
    });
    assert!(in_force, "the policy never warned");
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
    // PodSecurity's audit mode: the violation goes to the audit log, the pod is admitted.
    ok(&["create", "namespace", "audited"]);
    ok(&[
        "label",
        "namespace",
        "audited",
        "pod-security.kubernetes.io/audit=restricted",
    ]);
    ok(&["run", "loose", "--image=busybox", "-n", "audited"]);
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
    let cm = events
        .iter()
        .find(|e| e["verb"] == "create" && e["objectRef"]["name"] == "settings")
        .expect("the settings configmap's event");
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
    // The policy's audit annotation and its Audit action's failure record.
    assert_eq!(cm["annotations"]["color-audit/color"], "blue");
    let failures: Value = serde_json::from_str(
        cm["annotations"]["validation.policy.admission.k8s.io/validation_failure"]
            .as_str()
            .expect("a validation failure annotation"),
    )
    .unwrap();
    assert_eq!(
        failures,
        serde_json::json!([{"message": "colors are audited", "policy": "color-audit", "binding": "color-audit", "expressionIndex": 0, "validationActions": ["Warn", "Audit"]}])
    );
    let secret = find("create", "secrets");
    assert_eq!(secret["level"], "Metadata");
    assert!(secret.get("requestObject").is_none() && secret.get("responseObject").is_none());
    assert!(
        !events
            .iter()
            .any(|e| e["verb"] == "list" && e["objectRef"]["resource"] == "pods"),
        "level None"
    );
    let loose = events
        .iter()
        .find(|e| e["verb"] == "create" && e["objectRef"]["resource"] == "pods")
        .expect("the pod's create event");
    assert_eq!(
        loose["annotations"]["pod-security.kubernetes.io/enforce-policy"],
        "privileged:latest"
    );
    let violations = loose["annotations"]["pod-security.kubernetes.io/audit-violations"]
        .as_str()
        .expect("an audit-violations annotation");
    assert!(
        violations.starts_with(
            "would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"
        ),
        "{violations}"
    );
    let denied = events
        .iter()
        .find(|e| e["verb"] == "create" && e["impersonatedUser"]["username"] == "mallory")
        .expect("the refused impersonated create");
    assert_eq!(denied["impersonatedUser"]["username"], "mallory");
    assert_eq!(denied["responseStatus"]["code"], 403);
    assert_eq!(denied["responseStatus"]["reason"], "Forbidden");
    assert_eq!(
        denied["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
}
