//! Admission through the real kubectl: PodSecurity by namespace labels, Priority,
//! DefaultTolerationSeconds and NamespaceLifecycle.

mod support;

use support::KelpServer;

#[test]
fn admission_plugins_change_and_refuse_what_upstreams_do() {
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(&dir.path().join("data"), &[]);
    for v in ["1.32", "1.33"] {
        let run = |args: &[&str]| server.kubectl(v, args);
        let ok = |args: &[&str]| {
            let out = run(args);
            assert!(out.ok, "kubectl {v} {args:?}: {}", out.stderr);
            out
        };
        let ns = format!("secure-{}", v.replace('.', "-"));
        ok(&["create", "namespace", &ns]);
        ok(&[
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=restricted",
        ]);

        // PodSecurity: a privileged pod is refused with upstream's message...
        let refused = run(&["run", "p", "--image=nginx", "--privileged", "-n", &ns]);
        assert!(!refused.ok);
        assert_eq!(
            refused.stderr.trim(),
            "Error from server (Forbidden): pods \"p\" is forbidden: violates PodSecurity \"restricted:latest\": \
             privileged (container \"p\" must not set securityContext.privileged=true), \
             allowPrivilegeEscalation != false (container \"p\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"p\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"p\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"p\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        // ...a restricted one is admitted...
        let compliant = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"good"},"spec":{
            "securityContext":{"runAsNonRoot":true,"seccompProfile":{"type":"RuntimeDefault"}},
            "containers":[{"name":"app","image":"nginx","securityContext":{
                "allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}}]}}"#;
        let created =
            server.kubectl_with_stdin(v, &["create", "-n", &ns, "-f", "-"], Some(compliant));
        assert!(created.ok, "{}", created.stderr);
        assert_eq!(created.stdout.trim(), "pod/good created");
        // ...and a deployment whose pods would be refused is created with a warning.
        let deployment = ok(&["create", "deployment", "web", "--image=nginx", "-n", &ns]);
        assert_eq!(deployment.stdout.trim(), "deployment.apps/web created");
        assert!(
            deployment.stderr.starts_with(
                "Warning: would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"nginx\""
            ),
            "{}",
            deployment.stderr
        );
        // An unknown level is refused on the namespace itself.
        let bad = run(&[
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=bogus",
            "--overwrite",
        ]);
        assert!(!bad.ok);
        assert!(
            bad.stderr.contains(&format!(
                "Namespace \"{ns}\" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"bogus\": must be one of privileged, baseline, restricted"
            )),
            "{}",
            bad.stderr
        );

        // DefaultTolerationSeconds and Priority on a plain pod.
        let pod = format!("plain-{}", v.replace('.', "-"));
        ok(&["run", &pod, "--image=nginx"]);
        let spec = ok(&[
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={range .spec.tolerations[*]}{.key}={.tolerationSeconds} {end}{.spec.priority} {.spec.preemptionPolicy}",
        ]);
        assert_eq!(
            spec.stdout,
            "node.kubernetes.io/not-ready=300 node.kubernetes.io/unreachable=300 0 PreemptLowerPriority"
        );
        let critical = ok(&[
            "run",
            &format!("critical-{pod}"),
            "--image=nginx",
            "-n",
            "kube-system",
            "--overrides={\"spec\":{\"priorityClassName\":\"system-cluster-critical\"}}",
        ]);
        assert!(critical.ok);
        let priority = ok(&[
            "get",
            "pod",
            &format!("critical-{pod}"),
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.priority}",
        ]);
        assert_eq!(priority.stdout, "2000000000");
        let missing = run(&[
            "run",
            "nope",
            "--image=nginx",
            "--overrides={\"spec\":{\"priorityClassName\":\"nope\"}}",
        ]);
        assert_eq!(
            missing.stderr.trim(),
            "Error from server (Forbidden): pods \"nope\" is forbidden: no PriorityClass with name nope was found"
        );

        // NamespaceLifecycle: the system namespaces stay; a terminating one takes nothing new.
        let kept = run(&["delete", "namespace", "default"]);
        assert_eq!(
            kept.stderr.trim(),
            "Error from server (Forbidden): namespaces \"default\" is forbidden: this namespace may not be deleted"
        );
        let doomed = format!("doomed-{}", v.replace('.', "-"));
        let held = format!(
            r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{doomed}","finalizers":["example.com/hold"]}}}}"#
        );
        assert!(
            server
                .kubectl_with_stdin(v, &["create", "-f", "-"], Some(&held))
                .ok
        );
        ok(&["delete", "namespace", &doomed, "--wait=false"]);
        let late = run(&["create", "configmap", "late", "-n", &doomed]);
        assert!(!late.ok);
        assert!(
            late.stderr.contains(&format!(
                "configmaps \"late\" is forbidden: unable to create new content in namespace {doomed} because it is being terminated"
            )),
            "{}",
            late.stderr
        );
        ok(&[
            "patch",
            "namespace",
            &doomed,
            "--type=merge",
            "-p",
            "{\"metadata\":{\"finalizers\":null}}",
        ]);
    }
}

#[test]
fn quota_admits_no_more_than_its_hard_limit_even_with_20_concurrent_creators() {
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(&dir.path().join("data"), &[]);
    let v = "1.33";
    let ok = |args: &[&str]| {
        let out = server.kubectl(v, args);
        assert!(out.ok, "kubectl {args:?}: {}", out.stderr);
        out.stdout
    };
    ok(&["create", "namespace", "q"]);
    ok(&["create", "quota", "cm", "--hard=configmaps=5", "-n", "q"]);
    // The quota controller counts what is there: the namespace's kube-root-ca.crt (the
    // root-CA publisher's) is one of the five.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let used = ok(&[
            "get",
            "quota",
            "cm",
            "-n",
            "q",
            "-o",
            "jsonpath={.status.used.configmaps}",
        ]);
        if used == "1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "quota usage: {used:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    let outcomes: Vec<support::Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let server = &server;
                s.spawn(move || {
                    server.kubectl(v, &["create", "configmap", &format!("c{i}"), "-n", "q"])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let admitted = outcomes.iter().filter(|o| o.ok).count();
    assert_eq!(
        admitted, 4,
        "exactly the four left of the quota's five are admitted"
    );
    for refused in outcomes.iter().filter(|o| !o.ok) {
        assert!(
            refused.stderr.contains(
                "is forbidden: exceeded quota: cm, requested: configmaps=1, used: configmaps=5, limited: configmaps=5"
            ),
            "{}",
            refused.stderr
        );
    }
    assert_eq!(
        ok(&["get", "configmaps", "-n", "q", "-o", "name"])
            .lines()
            .filter(|l| l.contains("/c"))
            .count(),
        4
    );
    assert_eq!(
        ok(&[
            "get",
            "quota",
            "cm",
            "-n",
            "q",
            "-o",
            "jsonpath={.status.used.configmaps}"
        ]),
        "5"
    );

    // Compute quotas need every container to say what it requests.
    ok(&[
        "create",
        "quota",
        "compute",
        "--hard=requests.cpu=1",
        "-n",
        "q",
    ]);
    ok(&[
        "patch",
        "resourcequota",
        "compute",
        "-n",
        "q",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"hard":{"requests.cpu":"1"},"used":{"requests.cpu":"0"}}}"#,
    ]);
    let bare = server.kubectl(v, &["run", "bare", "--image=nginx", "-n", "q"]);
    assert!(
        bare.stderr.contains(
            "pods \"bare\" is forbidden: failed quota: compute: must specify requests.cpu for: bare"
        ),
        "{}",
        bare.stderr
    );
    let pod = |name: &str, cpu: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"containers":[{{"name":"app","image":"nginx","resources":{{"requests":{{"cpu":"{cpu}"}}}}}}]}}}}"#
        )
    };
    assert!(
        server
            .kubectl_with_stdin(
                v,
                &["create", "-n", "q", "-f", "-"],
                Some(&pod("small", "600m"))
            )
            .ok
    );
    let big = server.kubectl_with_stdin(
        v,
        &["create", "-n", "q", "-f", "-"],
        Some(&pod("big", "500m")),
    );
    assert!(
        big.stderr.contains("exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=600m, limited: requests.cpu=1"),
        "{}",
        big.stderr
    );
    assert_eq!(
        ok(&[
            "get",
            "quota",
            "compute",
            "-n",
            "q",
            "-o",
            "jsonpath={.status.used.requests\\.cpu}"
        ]),
        "600m"
    );
}

/// Repeats `attempt` (50 times, 100 ms apart) until it gives something: what a policy does
/// once the watch cache has handed it to admission.
fn in_force<T>(what: &str, mut attempt: impl FnMut() -> Option<T>) -> T {
    for _ in 0..50 {
        if let Some(done) = attempt() {
            return done;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out: {what}");
}

#[test]
fn validating_admission_policies_deny_and_warn_by_their_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(&dir.path().join("data"), &[]);
    let v = "1.33";
    let ok = |args: &[&str]| {
        let out = server.kubectl(v, args);
        assert!(out.ok, "kubectl {args:?}: {}", out.stderr);
        out
    };
    let apply = |yaml: &str| {
        let out = server.kubectl_with_stdin(v, &["create", "-f", "-"], Some(yaml));
        assert!(out.ok, "{}", out.stderr);
    };
    ok(&["create", "namespace", "vap"]);
    ok(&["label", "namespace", "vap", "env=test"]);
    ok(&[
        "create",
        "configmap",
        "limits",
        "-n",
        "vap",
        "--from-literal=maxReplicas=2",
    ]);
    apply(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: replicas-limit}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}
  matchConditions:
  - name: not-exempt
    expression: "object.metadata.name != 'app-exempt'"
  validations:
  - expression: "object.spec.replicas <= 5"
    message: "replicas must be no greater than 5"
  - expression: "object.metadata.name.startsWith('app-')"
    messageExpression: "'name ' + object.metadata.name + ' must start with app-'"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: replicas-limit-binding}
spec:
  policyName: replicas-limit
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {matchLabels: {env: test}}
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: max-from-params}
spec:
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}
  validations:
  - expression: "object.spec.replicas <= int(params.data.maxReplicas)"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: max-warn}
spec:
  policyName: max-from-params
  validationActions: [Warn]
  paramRef: {name: limits, parameterNotFoundAction: Allow}
"#,
    );
    // The policies apply once the watch cache has them.
    let refused = in_force("the policy refused the deployment", || {
        let out = server.kubectl(
            v,
            &[
                "create",
                "deployment",
                "app-big",
                "--image=nginx",
                "--replicas=7",
                "-n",
                "vap",
            ],
        );
        if !out.ok {
            return Some(out);
        }
        ok(&["delete", "deployment", "app-big", "-n", "vap"]);
        None
    });
    assert!(
        refused.stderr.contains(
            "ValidatingAdmissionPolicy 'replicas-limit' with binding 'replicas-limit-binding' denied request: replicas must be no greater than 5"
        ),
        "{}",
        refused.stderr
    );
    let named = server.kubectl(
        v,
        &["create", "deployment", "web", "--image=nginx", "-n", "vap"],
    );
    assert!(
        named
            .stderr
            .contains("denied request: name web must start with app-"),
        "{}",
        named.stderr
    );
    // A match condition that does not hold leaves the object to other policies.
    ok(&[
        "create",
        "deployment",
        "app-exempt",
        "--image=nginx",
        "--replicas=7",
        "-n",
        "vap",
    ]);
    // Outside the binding's namespaces the Deny binding does not apply.
    ok(&["create", "namespace", "other"]);
    ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "-n",
        "other",
    ]);
    // The Warn binding reads its limit from the ConfigMap it names.
    let warned = ok(&[
        "create",
        "deployment",
        "app-three",
        "--image=nginx",
        "--replicas=3",
        "-n",
        "vap",
    ]);
    assert_eq!(warned.stdout.trim(), "deployment.apps/app-three created");
    assert_eq!(
        warned.stderr.trim(),
        "Warning: Validation failed for ValidatingAdmissionPolicy 'max-from-params' with binding 'max-warn': failed expression: object.spec.replicas <= int(params.data.maxReplicas)"
    );
    let quiet = ok(&[
        "create",
        "deployment",
        "app-one",
        "--image=nginx",
        "--replicas=1",
        "-n",
        "vap",
    ]);
    assert_eq!(quiet.stderr, "");

    // Deletes are admitted too: the object is null, the one deleted is oldObject; variables
    // build on each other.
    apply(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: keep-protected}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [DELETE], resources: [configmaps]}
  variables:
  - name: labels
    expression: "has(oldObject.metadata.labels) ? oldObject.metadata.labels : {}"
  - name: protected
    expression: "object == null && 'protected' in variables.labels && variables.labels['protected'] == 'true'"
  validations:
  - expression: "!variables.protected"
    messageExpression: "'configmap ' + oldObject.metadata.name + ' is protected'"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: keep-protected-binding}
spec:
  policyName: keep-protected
  validationActions: [Deny]
"#,
    );
    ok(&["create", "configmap", "precious", "-n", "vap"]);
    ok(&[
        "label",
        "configmap",
        "precious",
        "-n",
        "vap",
        "protected=true",
    ]);
    ok(&["create", "configmap", "plain", "-n", "vap"]);
    let refused = in_force("the policy refused the delete", || {
        let out = server.kubectl(v, &["delete", "configmap", "precious", "-n", "vap"]);
        if !out.ok {
            return Some(out);
        }
        ok(&["create", "configmap", "precious", "-n", "vap"]);
        ok(&[
            "label",
            "configmap",
            "precious",
            "-n",
            "vap",
            "protected=true",
        ]);
        None
    });
    assert!(
        refused.stderr.contains("(Forbidden)")
            && refused.stderr.contains(
                "ValidatingAdmissionPolicy 'keep-protected' with binding 'keep-protected-binding' denied request: configmap precious is protected"
            ),
        "{}",
        refused.stderr
    );
    ok(&["get", "configmap", "precious", "-n", "vap"]);
    // Deleting them all (one by one, as kubectl does) spares it.
    let all = server.kubectl(v, &["delete", "configmaps", "--all", "-n", "vap"]);
    assert!(
        !all.ok && all.stderr.contains("configmap precious is protected"),
        "{}",
        all.stderr
    );
    ok(&["get", "configmap", "precious", "-n", "vap"]);
    ok(&["label", "configmap", "precious", "-n", "vap", "protected-"]);
    ok(&["delete", "configmap", "precious", "-n", "vap"]);

    // A delete's warnings reach kubectl.
    apply(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: warn-noisy}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [DELETE], resources: [configmaps]}
  validations:
  - expression: "oldObject.metadata.name != 'noisy'"
    message: noisy is going
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: warn-noisy}
spec:
  policyName: warn-noisy
  validationActions: [Warn]
"#,
    );
    let warned = in_force("the delete was warned about", || {
        ok(&["create", "configmap", "noisy", "-n", "vap"]);
        let out = ok(&["delete", "configmap", "noisy", "-n", "vap"]);
        (!out.stderr.is_empty()).then_some(out)
    });
    assert_eq!(
        warned.stderr.trim(),
        "Warning: Validation failed for ValidatingAdmissionPolicy 'warn-noisy' with binding 'warn-noisy': noisy is going"
    );
}

#[test]
fn limit_ranges_default_and_bound_container_resources() {
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(&dir.path().join("data"), &[]);
    let v = "1.33";
    let ok = |args: &[&str]| {
        let out = server.kubectl(v, args);
        assert!(out.ok, "kubectl {args:?}: {}", out.stderr);
        out.stdout
    };
    ok(&["create", "namespace", "limited"]);
    let range = r#"{"apiVersion":"v1","kind":"LimitRange","metadata":{"name":"defaults"},"spec":{"limits":[
        {"type":"Container","default":{"cpu":"500m","memory":"256Mi"},"defaultRequest":{"cpu":"100m"},"max":{"cpu":"1"}}]}}"#;
    let created =
        server.kubectl_with_stdin(v, &["create", "-n", "limited", "-f", "-"], Some(range));
    assert!(created.ok, "{}", created.stderr);
    // The cache has the LimitRange once a list shows it.
    assert!(ok(&["get", "limitrange", "-n", "limited", "-o", "name"]).contains("defaults"));
    ok(&["run", "web", "--image=nginx", "-n", "limited"]);
    let resources = ok(&[
        "get",
        "pod",
        "web",
        "-n",
        "limited",
        "-o",
        "jsonpath={.spec.containers[0].resources.requests.cpu} {.spec.containers[0].resources.limits.cpu} {.spec.containers[0].resources.limits.memory}",
    ]);
    assert_eq!(resources, "100m 500m 256Mi");
    let note = ok(&[
        "get",
        "pod",
        "web",
        "-n",
        "limited",
        "-o",
        "jsonpath={.metadata.annotations.kubernetes\\.io/limit-ranger}",
    ]);
    assert_eq!(
        note,
        "LimitRanger plugin set: cpu, memory request for container web; cpu, memory limit for container web"
    );
    let big = server.kubectl(v, &["run", "big", "--image=nginx", "-n", "limited", "--overrides={\"spec\":{\"containers\":[{\"name\":\"big\",\"image\":\"nginx\",\"resources\":{\"limits\":{\"cpu\":\"2\"}}}]}}"]);
    assert!(!big.ok);
    assert!(
        big.stderr.contains(
            "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        ),
        "{}",
        big.stderr
    );
}
