//! The real kubectl 1.32 and 1.33 against `kelp server`, on SQLite and on PostgreSQL. Each step
//! checks what kubectl prints.

mod support;

use kelp_testkit::PgCluster;
use support::KelpServer;

fn configmap(name: &str, color: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","labels":{{"app":"web"}}}},"data":{{"color":"{color}"}}}}"#
    )
}

/// Stops a `kubectl get -w` and returns what it printed.
fn stop(mut watcher: std::process::Child) -> String {
    let _ = watcher.kill();
    String::from_utf8(watcher.wait_with_output().unwrap().stdout).unwrap()
}

fn session(server: &KelpServer, v: &str) {
    let ok = |args: &[&str]| {
        let out = server.kubectl(v, args);
        assert!(out.ok, "kubectl {v} {args:?} failed: {}", out.stderr);
        out.stdout
    };
    let with_stdin = |args: &[&str], input: &str| {
        let out = server.kubectl_with_stdin(v, args, Some(input));
        assert!(out.ok, "kubectl {v} {args:?} failed: {}", out.stderr);
        out.stdout
    };

    let version = ok(&["version", "-o", "json"]);
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert_eq!(version["serverVersion"]["minor"], "33");
    assert!(
        version["serverVersion"]["gitVersion"]
            .as_str()
            .unwrap()
            .starts_with("v1.33.")
    );
    assert_eq!(ok(&["get", "--raw", "/readyz"]), "ok");

    let namespaces = ok(&["get", "namespaces"]);
    let lines: Vec<&str> = namespaces.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STATUS", "AGE"]
    );
    let system: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().take(2).collect())
        .filter(|row: &Vec<&str>| row[0] == "default" || row[0].starts_with("kube-"))
        .collect();
    assert_eq!(
        system,
        [
            ["default", "Active"],
            ["kube-node-lease", "Active"],
            ["kube-public", "Active"],
            ["kube-system", "Active"]
        ]
    );

    let metrics = ok(&["get", "--raw", "/metrics"]);
    assert!(
        metrics.lines().any(|l| l.starts_with(r#"apiserver_request_total{verb="LIST",group="",version="v1",resource="namespaces",code="200"}"#)),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kelp_storage_revision ")),
        "{metrics}"
    );

    let info = ok(&["cluster-info"]);
    assert!(
        info.contains("Kubernetes control plane")
            && info.contains("is running at https://127.0.0.1:"),
        "{info}"
    );
    let versions = ok(&["api-versions"]);
    for gv in ["v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1"] {
        assert!(versions.lines().any(|l| l == gv), "{versions}");
    }

    // Generators send protobuf bodies.
    let gns = format!("gen-{}", v.replace('.', "-"));
    assert_eq!(
        ok(&["create", "namespace", &gns]),
        format!("namespace/{gns} created\n")
    );
    assert_eq!(
        ok(&[
            "create",
            "configmap",
            "settings",
            "-n",
            &gns,
            "--from-literal=mode=fast",
            "--from-literal=level=3"
        ]),
        "configmap/settings created\n"
    );
    assert_eq!(
        ok(&[
            "create",
            "secret",
            "generic",
            "token",
            "-n",
            &gns,
            "--from-literal=key=s3cr3t"
        ]),
        "secret/token created\n"
    );
    assert_eq!(
        ok(&["create", "serviceaccount", "robot", "-n", &gns]),
        "serviceaccount/robot created\n"
    );
    assert_eq!(
        ok(&[
            "get",
            "configmap",
            "settings",
            "-n",
            &gns,
            "-o",
            "jsonpath={.data}"
        ]),
        r#"{"level":"3","mode":"fast"}"#
    );
    assert_eq!(
        ok(&[
            "get",
            "secret",
            "token",
            "-n",
            &gns,
            "-o",
            "jsonpath={.type} {.data.key}"
        ]),
        "Opaque czNjcjN0"
    );
    let secrets = ok(&["get", "secrets", "-n", &gns]);
    let rows: Vec<Vec<&str>> = secrets
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(&rows[1][..3], ["token", "Opaque", "1"]);
    let dup = server.kubectl(v, &["create", "namespace", &gns]);
    assert_eq!(
        dup.stderr.trim(),
        format!("Error from server (AlreadyExists): namespaces \"{gns}\" already exists")
    );

    // Workloads and other groups, created by generators; status goes through /status and
    // only spec changes count as generations.
    let k = |args: &[&str]| {
        let mut all = vec!["-n", gns.as_str()];
        all.extend(args);
        ok(&all)
    };
    assert_eq!(
        k(&[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=2"
        ]),
        "deployment.apps/web created\n"
    );
    let table = k(&["get", "deployments", "-o", "wide"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    // No node runs its pods here: none is ready (the controllers' counters are checked
    // where simulated nodes run them).
    assert_eq!(
        [&rows[1][..2], &rows[1][5..]].concat(),
        ["web", "0/2", "nginx", "nginx:1.27", "app=web"]
    );
    k(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":3},"status":{"replicas":9}}"#,
    ]);
    // Status is written through /status only (a Service's load balancer: no controller
    // of Kelp's writes it).
    assert_eq!(
        k(&["create", "service", "loadbalancer", "lb", "--tcp=80:8080"]),
        "service/lb created\n"
    );
    let status = r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.7"}]}}}"#;
    assert_eq!(
        k(&[
            "patch",
            "service",
            "lb",
            "--subresource=status",
            "--type=merge",
            "-p",
            status
        ]),
        "service/lb patched\n"
    );
    // A write to the object itself leaves its status alone.
    k(&[
        "patch",
        "service",
        "lb",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":"edge"}},"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.8"}]}}}"#,
    ]);
    assert_eq!(
        k(&[
            "get",
            "service",
            "lb",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}"
        ]),
        "192.0.2.7"
    );
    assert_eq!(
        k(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.metadata.generation} {.spec.replicas} {.spec.template.spec.restartPolicy}"
        ]),
        "2 3 Always"
    );
    // Strategic merge patches merge containers by name: set image, edit, apply.
    assert_eq!(
        k(&["set", "image", "deployment/web", "nginx=nginx:1.28"]),
        "deployment.apps/web image updated\n"
    );
    let edited = server.kubectl_env(
        v,
        &["-n", &gns, "edit", "deployment", "web"],
        &[
            ("EDITOR", "sed -i -e 's/replicas: 3/replicas: 4/'"),
            ("KUBE_EDITOR", ""),
        ],
    );
    assert!(edited.ok, "{}", edited.stderr);
    assert_eq!(edited.stdout, "deployment.apps/web edited\n");
    let fields = "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} \
                  {.spec.template.spec.containers[0].imagePullPolicy} {.metadata.generation}";
    assert_eq!(
        k(&["get", "deployment", "web", "-o", fields]),
        "4 nginx:1.28 IfNotPresent 4"
    );
    let manifest = |image: &str, sidecar: bool| {
        let side = if sidecar {
            r#",{"name":"side","image":"busybox"}"#
        } else {
            ""
        };
        format!(
            r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"api"}},"spec":{{"replicas":1,"selector":{{"matchLabels":{{"app":"api"}}}},"template":{{"metadata":{{"labels":{{"app":"api"}}}},"spec":{{"containers":[{{"name":"api","image":"{image}","ports":[{{"containerPort":8080}}]}}{side}]}}}}}}}}"#
        )
    };
    let apply = |m: String| {
        let out = server.kubectl_with_stdin(v, &["-n", &gns, "apply", "-f", "-"], Some(&m));
        assert!(out.ok, "{}", out.stderr);
        out.stdout
    };
    assert_eq!(
        apply(manifest("api:1", true)),
        "deployment.apps/api created\n"
    );
    assert_eq!(
        apply(manifest("api:2", false)),
        "deployment.apps/api configured\n"
    );
    let fields = "jsonpath={.spec.template.spec.containers[*].name} {.spec.template.spec.containers[0].image} \
                  {.spec.template.spec.containers[0].ports[0].containerPort}";
    assert_eq!(
        k(&["get", "deployment", "api", "-o", fields]),
        "api api:2 8080"
    );
    // kubectl autoscale writes autoscaling/v2 (protobuf); autoscaling/v1 serves the same
    // object converted, as upstream does.
    assert_eq!(
        k(&[
            "autoscale",
            "deployment",
            "api",
            "--min=1",
            "--max=3",
            "--cpu-percent=50"
        ]),
        "horizontalpodautoscaler.autoscaling/api autoscaled\n"
    );
    let hpa = k(&["get", "hpa", "api"]);
    let rows: Vec<Vec<&str>> = hpa
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ]
    );
    assert_eq!(
        &rows[1][..6],
        ["api", "Deployment/api", "cpu:", "<unknown>/50%", "1", "3"]
    );
    // REPLICAS: 0 until the autoscaler's first look, then the deployment's count.
    assert!(rows[1][6].parse::<u32>().is_ok(), "{hpa}");
    assert_eq!(
        k(&[
            "get",
            "hpa",
            "api",
            "-o",
            "jsonpath={.apiVersion} {.spec.metrics[0].resource.target.averageUtilization}"
        ]),
        "autoscaling/v2 50"
    );
    let v1: serde_json::Value = serde_json::from_str(&ok(&[
        "get",
        "--raw",
        &format!("/apis/autoscaling/v1/namespaces/{gns}/horizontalpodautoscalers/api"),
    ]))
    .unwrap();
    assert_eq!(
        (
            &v1["apiVersion"],
            &v1["spec"]["targetCPUUtilizationPercentage"]
        ),
        (&serde_json::json!("autoscaling/v1"), &serde_json::json!(50))
    );
    assert_eq!(
        k(&["delete", "hpa", "api"]),
        "horizontalpodautoscaler.autoscaling \"api\" deleted\n"
    );
    // The scale subresource, as kubectl scale uses it.
    assert_eq!(
        k(&["scale", "deployment", "api", "--replicas=2"]),
        "deployment.apps/api scaled\n"
    );
    let scale: serde_json::Value = serde_json::from_str(&ok(&[
        "get",
        "--raw",
        &format!("/apis/apps/v1/namespaces/{gns}/deployments/api/scale"),
    ]))
    .unwrap();
    assert_eq!(
        (
            scale["kind"].as_str(),
            scale["spec"]["replicas"].as_i64(),
            scale["status"]["selector"].as_str()
        ),
        (Some("Scale"), Some(2), Some("app=api"))
    );
    let refused = server.kubectl(
        v,
        &[
            "-n",
            &gns,
            "scale",
            "deployment",
            "api",
            "--replicas=1",
            "--current-replicas=5",
        ],
    );
    assert!(
        !refused.ok && refused.stderr.contains("Expected replicas to be 5, was 2"),
        "{}",
        refused.stderr
    );

    assert_eq!(
        k(&[
            "create",
            "job",
            "once",
            "--image=busybox",
            "--",
            "echo",
            "hi"
        ]),
        "job.batch/once created\n"
    );
    assert_eq!(
        k(&[
            "create",
            "cronjob",
            "tick",
            "--image=busybox",
            "--schedule=*/5 * * * *",
            "--",
            "date"
        ]),
        "cronjob.batch/tick created\n"
    );
    assert_eq!(
        k(&[
            "create",
            "role",
            "reader",
            "--verb=get,list",
            "--resource=pods"
        ]),
        "role.rbac.authorization.k8s.io/reader created\n"
    );
    assert_eq!(
        k(&[
            "create",
            "rolebinding",
            "rb",
            "--role=reader",
            "--user=alice"
        ]),
        "rolebinding.rbac.authorization.k8s.io/rb created\n"
    );
    // auth can-i as admin (system:masters), and for alice through the binding just made.
    assert_eq!(k(&["auth", "can-i", "delete", "nodes"]), "yes\n");
    assert_eq!(k(&["auth", "can-i", "list", "pods", "--as=alice"]), "yes\n");
    let denied = server.kubectl(
        v,
        &["-n", &gns, "auth", "can-i", "delete", "pods", "--as=alice"],
    );
    assert_eq!((denied.ok, denied.stdout.as_str()), (false, "no\n"));
    assert_eq!(
        k(&["create", "quota", "q", "--hard=pods=10,requests.cpu=2"]),
        "resourcequota/q created\n"
    );
    let listing = k(&["get", "jobs,cronjobs,rolebindings"]);
    assert!(
        listing.contains("job.batch/once   Running   0/1"),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "cronjob.batch/tick",
                    "*/5",
                    "*",
                    "*",
                    "*",
                    "*",
                    "<none>",
                    "False",
                    "0",
                    "<none>",
                    "0s"
                ])
            || listing.contains("cronjob.batch/tick   */5 * * * *"),
        "{listing}"
    );
    assert!(
        listing.contains("rolebinding.rbac.authorization.k8s.io/rb   Role/reader"),
        "{listing}"
    );
    let pc = format!("high-{}", v.replace('.', "-"));
    assert_eq!(
        ok(&["create", "priorityclass", &pc, "--value=1000"]),
        format!("priorityclass.scheduling.k8s.io/{pc} created\n")
    );
    // The controllers made the deployments' pods; with no node they wait unscheduled.
    let pods = k(&["get", "pods", "--no-headers"]);
    assert!(
        pods.lines().any(|l| l.starts_with("web-")) && pods.lines().any(|l| l.starts_with("api-")),
        "{pods}"
    );
    assert!(
        pods.lines()
            .all(|l| l.split_whitespace().nth(2) == Some("Pending")),
        "{pods}"
    );

    let ns = format!("team-{}", v.replace('.', "-"));
    assert_eq!(
        with_stdin(
            &["create", "-f", "-"],
            &format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{ns}"}}}}"#)
        ),
        format!("namespace/{ns} created\n")
    );
    assert_eq!(
        with_stdin(&["create", "-n", &ns, "-f", "-"], &configmap("app", "blue")),
        "configmap/app created\n"
    );
    assert_eq!(
        ok(&[
            "get",
            "-n",
            &ns,
            "configmap",
            "app",
            "-o",
            "jsonpath={.data.color}"
        ]),
        "blue"
    );
    let table = ok(&["get", "-n", &ns, "configmaps"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(&rows[1][..2], ["app", "1"]);

    // A second create is refused as upstream refuses it.
    let dup = server.kubectl_with_stdin(
        v,
        &["create", "-n", &ns, "-f", "-"],
        Some(&configmap("app", "red")),
    );
    assert!(!dup.ok);
    assert_eq!(
        dup.stderr.trim(),
        "Error from server (AlreadyExists): error when creating \"STDIN\": configmaps \"app\" already exists"
    );

    assert_eq!(
        with_stdin(
            &["replace", "-n", &ns, "-f", "-"],
            &configmap("app", "green")
        ),
        "configmap/app replaced\n"
    );
    let yaml = ok(&["get", "-n", &ns, "configmap", "app", "-o", "yaml"]);
    assert!(
        yaml.contains("color: green") && yaml.contains(&format!("namespace: {ns}")),
        "{yaml}"
    );

    // Client-side apply: the first apply on an object made by create warns and records the
    // annotation; a changed manifest is sent as a strategic merge patch.
    let applied = server.kubectl_with_stdin(
        v,
        &["apply", "-n", &ns, "-f", "-"],
        Some(&configmap("app", "green")),
    );
    assert!(applied.ok, "{}", applied.stderr);
    assert_eq!(applied.stdout, "configmap/app configured\n");
    assert!(
        applied
            .stderr
            .contains("missing the kubectl.kubernetes.io/last-applied-configuration annotation")
    );
    assert_eq!(
        with_stdin(&["apply", "-n", &ns, "-f", "-"], &configmap("app", "green")),
        "configmap/app unchanged\n"
    );
    assert_eq!(
        with_stdin(&["apply", "-n", &ns, "-f", "-"], &configmap("app", "teal")),
        "configmap/app configured\n"
    );
    assert_eq!(
        ok(&[
            "get",
            "-n",
            &ns,
            "configmap",
            "app",
            "-o",
            "jsonpath={.data.color}"
        ]),
        "teal"
    );

    // Field validation: strict by default for manifests, a warning when asked.
    let unknown =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"typo"},"dta":{"a":"b"}}"#;
    let strict = server.kubectl_with_stdin(v, &["create", "-n", &ns, "-f", "-"], Some(unknown));
    assert!(!strict.ok);
    assert_eq!(
        strict.stderr.trim(),
        "Error from server (BadRequest): error when creating \"STDIN\": ConfigMap in version \"v1\" cannot be \
         handled as a ConfigMap: strict decoding error: unknown field \"dta\""
    );
    let warned = server.kubectl_with_stdin(
        v,
        &["create", "-n", &ns, "-f", "-", "--validate=warn"],
        Some(unknown),
    );
    assert!(warned.ok, "{}", warned.stderr);
    assert_eq!(warned.stderr.trim(), "Warning: unknown field \"dta\"");
    assert_eq!(
        ok(&[
            "get",
            "-n",
            &ns,
            "configmap",
            "typo",
            "-o",
            "jsonpath={.dta}{.metadata.name}"
        ]),
        "typo"
    );
    assert_eq!(
        ok(&["delete", "-n", &ns, "configmap", "typo"]),
        "configmap \"typo\" deleted\n"
    );

    // A workload's selector is required and must match its template's labels.
    let mismatched = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"odd"},"spec":{"selector":{"matchLabels":{"app":"y"}},"template":{"metadata":{"labels":{"app":"x"}},"spec":{"containers":[{"name":"a","image":"x"}]}}}}"#;
    let refused = server.kubectl_with_stdin(v, &["create", "-n", &ns, "-f", "-"], Some(mismatched));
    assert!(!refused.ok);
    assert_eq!(
        refused.stderr.trim(),
        "The Deployment \"odd\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"
    );
    let unselected = mismatched.replace(r#""selector":{"matchLabels":{"app":"y"}},"#, "");
    let refused = server.kubectl_with_stdin(
        v,
        &["create", "-n", &ns, "-f", "-", "--validate=false"],
        Some(&unselected),
    );
    assert_eq!(
        refused.stderr.trim(),
        "The Deployment \"odd\" is invalid: spec.selector: Required value"
    );

    // A container may not request more than it limits.
    let greedy = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"greedy"},"spec":{"containers":[{"name":"a","image":"x","resources":{"requests":{"cpu":"2"},"limits":{"cpu":"1"}}}]}}"#;
    let refused = server.kubectl_with_stdin(v, &["create", "-n", &ns, "-f", "-"], Some(greedy));
    assert_eq!(
        refused.stderr.trim(),
        "The Pod \"greedy\" is invalid: spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"
    );

    let explained = ok(&["explain", "configmap.data"]);
    assert!(
        explained.contains("KIND:       ConfigMap")
            && explained.contains("FIELD: data <map[string]string>"),
        "{explained}"
    );
    assert!(
        explained.contains("Data contains the configuration data."),
        "{explained}"
    );

    // label and annotate send merge patches; patch sends strategic (default), merge and JSON
    // patches.
    assert_eq!(
        ok(&["label", "-n", &ns, "configmap", "app", "tier=front"]),
        "configmap/app labeled\n"
    );
    assert_eq!(
        ok(&["annotate", "-n", &ns, "configmap", "app", "note=hi"]),
        "configmap/app annotated\n"
    );
    let patch = |kind: &str, p: &str| {
        ok(&[
            "patch",
            "-n",
            &ns,
            "configmap",
            "app",
            "--type",
            kind,
            "-p",
            p,
        ])
    };
    assert_eq!(
        patch("merge", r#"{"data":{"size":"L"}}"#),
        "configmap/app patched\n"
    );
    assert_eq!(
        patch("strategic", r#"{"data":{"shape":"round","color":null}}"#),
        "configmap/app patched\n"
    );
    assert_eq!(
        patch(
            "json",
            r#"[{"op":"replace","path":"/data/size","value":"XL"}]"#
        ),
        "configmap/app patched\n"
    );
    assert_eq!(
        ok(&[
            "get",
            "-n",
            &ns,
            "configmap",
            "app",
            "-o",
            "jsonpath={.metadata.labels.tier} {.metadata.annotations.note} {.data}"
        ]),
        r#"front hi {"shape":"round","size":"XL"}"#
    );
    let failed = server.kubectl(
        v,
        &[
            "patch",
            "-n",
            &ns,
            "configmap",
            "app",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/data/size","value":"S"}]"#,
        ],
    );
    assert!(
        !failed.ok && failed.stderr.contains("The request is invalid"),
        "{}",
        failed.stderr
    );
    assert_eq!(
        ok(&["label", "-n", &ns, "configmap", "app", "tier-"]),
        "configmap/app unlabeled\n"
    );

    // A replace that names a stale resourceVersion is a conflict.
    let stale = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"app","resourceVersion":"1"},"data":{}}"#;
    let conflict = server.kubectl_with_stdin(v, &["replace", "-n", &ns, "-f", "-"], Some(stale));
    assert!(!conflict.ok);
    assert_eq!(
        conflict.stderr.trim(),
        "Error from server (Conflict): error when replacing \"STDIN\": Operation cannot be fulfilled on configmaps \"app\": \
         the object has been modified; please apply your changes to the latest version and try again"
    );

    // Paging: kubectl follows continue tokens with --chunk-size.
    for i in 0..5 {
        with_stdin(
            &["create", "-n", &ns, "-f", "-"],
            &configmap(&format!("page-{i}"), "x"),
        );
    }
    let names = ok(&[
        "get",
        "-n",
        &ns,
        "configmaps",
        "--chunk-size=2",
        "-o",
        "name",
    ]);
    assert_eq!(
        names,
        "configmap/app\nconfigmap/kube-root-ca.crt\nconfigmap/page-0\nconfigmap/page-1\nconfigmap/page-2\nconfigmap/page-3\nconfigmap/page-4\n"
    );
    let all = ok(&["get", "configmaps", "-A"]);
    let rows: Vec<Vec<&str>> = all
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAMESPACE", "NAME", "DATA", "AGE"]);
    // Six of the test's and the root CA bundle the publisher puts in every namespace.
    assert_eq!(rows.iter().filter(|r| r[0] == ns).count(), 7, "{all}");

    // Services get ClusterIPs (and NodePorts) from the service network; `kubernetes` has the first.
    let svc = ok(&[
        "get",
        "service",
        "kubernetes",
        "-n",
        "default",
        "--no-headers",
    ]);
    assert_eq!(
        svc.split_whitespace().take(5).collect::<Vec<_>>(),
        ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"]
    );
    let np_name = format!("np-{}", v.replace('.', "-"));
    assert_eq!(
        ok(&[
            "create",
            "service",
            "nodeport",
            &np_name,
            "--tcp=80:8080",
            "-n",
            &ns
        ]),
        format!("service/{np_name} created\n")
    );
    let row = ok(&["get", "service", &np_name, "-n", &ns, "--no-headers"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "NodePort");
    assert!(cells[2].starts_with("10.96."), "{row}");
    let port: u16 = cells[4]
        .strip_prefix("80:")
        .and_then(|p| p.strip_suffix("/TCP"))
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert!((30000..=32767).contains(&port), "{row}");

    // Selectors, on lists and on watches.
    for (i, tier) in ["front", "back", "front"].iter().enumerate() {
        ok(&[
            "label",
            "-n",
            &ns,
            "configmap",
            &format!("page-{i}"),
            &format!("tier={tier}"),
        ]);
    }
    assert_eq!(
        ok(&["get", "-n", &ns, "cm", "-l", "tier=front", "-o", "name"]),
        "configmap/page-0\nconfigmap/page-2\n"
    );
    assert_eq!(
        ok(&[
            "get",
            "-n",
            &ns,
            "cm",
            "-l",
            "tier in (back),app=web",
            "-o",
            "name"
        ]),
        "configmap/page-1\n"
    );
    assert_eq!(
        ok(&[
            "get",
            "-n",
            &ns,
            "cm",
            "-l",
            "!tier",
            "--chunk-size=1",
            "-o",
            "name"
        ]),
        "configmap/app\nconfigmap/kube-root-ca.crt\nconfigmap/page-3\nconfigmap/page-4\n"
    );
    assert_eq!(
        ok(&[
            "get",
            "-n",
            &ns,
            "cm",
            "--field-selector",
            "metadata.name=page-4",
            "-o",
            "name"
        ]),
        "configmap/page-4\n"
    );
    let unsupported = server.kubectl(v, &["get", "-n", &ns, "cm", "--field-selector", "spec.x=1"]);
    assert!(
        unsupported
            .stderr
            .contains("field label not supported: spec.x"),
        "{}",
        unsupported.stderr
    );

    let watcher = server.kubectl_spawn(
        v,
        &[
            "get",
            "-n",
            &ns,
            "cm",
            "-w",
            "-l",
            "tier=front",
            "-o",
            "name",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(700));
    ok(&["label", "-n", &ns, "configmap", "page-3", "tier=front"]);
    ok(&[
        "label",
        "-n",
        &ns,
        "configmap",
        "page-0",
        "tier=back",
        "--overwrite",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let watched = stop(watcher);
    // The initial state, then page-3 joining and page-0 leaving the selection.
    assert_eq!(
        watched,
        "configmap/page-0\nconfigmap/page-2\nconfigmap/page-3\nconfigmap/page-0\n"
    );

    // get -w prints Table rows as the objects change.
    let watcher = server.kubectl_spawn(v, &["get", "-n", &ns, "cm", "page-4", "-w"]);
    std::thread::sleep(std::time::Duration::from_millis(700));
    ok(&["label", "-n", &ns, "configmap", "page-4", "watched=yes"]);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let watched = stop(watcher);
    let rows: Vec<Vec<&str>> = watched
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "DATA", "AGE"], "{watched}");
    assert_eq!(rows.len(), 3, "the current row and the change: {watched}");
    assert!(
        rows[1..].iter().all(|r| r[..2] == ["page-4", "1"]),
        "{watched}"
    );

    // Finalizers hold a deletion; wait --for=delete sees it finish.
    let held = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","finalizers":["example.com/keep"]}}"#;
    with_stdin(&["create", "-n", &ns, "-f", "-"], held);
    assert_eq!(
        ok(&["delete", "-n", &ns, "configmap", "held", "--wait=false"]),
        "configmap \"held\" deleted\n"
    );
    assert!(
        !ok(&[
            "get",
            "-n",
            &ns,
            "configmap",
            "held",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}"
        ])
        .is_empty()
    );
    let waiter = server.kubectl_spawn(
        v,
        &[
            "wait",
            "-n",
            &ns,
            "--for=delete",
            "configmap/held",
            "--timeout=30s",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let remove = r#"[{"op":"remove","path":"/metadata/finalizers"}]"#;
    ok(&[
        "patch",
        "-n",
        &ns,
        "configmap",
        "held",
        "--type=json",
        "-p",
        remove,
    ]);
    let waited = waiter.wait_with_output().unwrap();
    assert!(
        waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&waited.stdout),
        "configmap/held condition met\n"
    );

    // Multi-document YAML, custom columns, describe, wait --for=jsonpath, delete --all.
    let docs = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: doc-1\ndata:\n  num: \"1\"\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: doc-2\ndata:\n  num: \"2\"\n";
    assert_eq!(
        with_stdin(&["create", "-n", &ns, "-f", "-"], docs),
        "configmap/doc-1 created\nconfigmap/doc-2 created\n"
    );
    let columns = ok(&[
        "get",
        "-n",
        &ns,
        "cm",
        "doc-1",
        "doc-2",
        "-o",
        "custom-columns=NAME:.metadata.name,N:.data.num",
    ]);
    assert_eq!(
        columns
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        [["NAME", "N"], ["doc-1", "1"], ["doc-2", "2"]]
    );
    let described = ok(&["describe", "-n", &ns, "configmap", "doc-1"]);
    assert!(
        described.contains("Name:         doc-1")
            && described.contains(&format!("Namespace:    {ns}")),
        "{described}"
    );
    let waiter = server.kubectl_spawn(
        v,
        &[
            "wait",
            "-n",
            &ns,
            "--for=jsonpath={.data.num}=3",
            "configmap/doc-1",
            "--timeout=30s",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    ok(&[
        "patch",
        "-n",
        &ns,
        "configmap",
        "doc-1",
        "--type=merge",
        "-p",
        r#"{"data":{"num":"3"}}"#,
    ]);
    let waited = waiter.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&waited.stdout),
        "configmap/doc-1 condition met\n"
    );

    // delete -l removes what the selector matches.
    assert_eq!(
        ok(&["delete", "-n", &ns, "configmap", "-l", "tier=back"]),
        "configmap \"page-0\" deleted\nconfigmap \"page-1\" deleted\n"
    );

    assert_eq!(
        ok(&["delete", "-n", &ns, "configmap", "app"]),
        "configmap \"app\" deleted\n"
    );
    let gone = server.kubectl(v, &["get", "-n", &ns, "configmap", "app"]);
    assert!(!gone.ok);
    assert_eq!(
        gone.stderr.trim(),
        "Error from server (NotFound): configmaps \"app\" not found"
    );

    let missing_ns = server.kubectl_with_stdin(
        v,
        &["create", "-n", "nowhere", "-f", "-"],
        Some(&configmap("x", "y")),
    );
    assert!(!missing_ns.ok);
    assert!(
        missing_ns
            .stderr
            .contains("namespaces \"nowhere\" not found"),
        "{}",
        missing_ns.stderr
    );

    let bad = server.kubectl_with_stdin(
        v,
        &["create", "-n", &ns, "-f", "-"],
        Some(&configmap("Bad_Name", "y")),
    );
    assert!(!bad.ok);
    assert!(
        bad.stderr
            .contains("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value"),
        "{}",
        bad.stderr
    );

    let all_deleted = ok(&["delete", "-n", &ns, "configmaps", "--all"]);
    assert!(
        all_deleted.lines().count() >= 2 && all_deleted.lines().all(|l| l.ends_with(" deleted")),
        "{all_deleted}"
    );
    // The root-CA publisher puts kube-root-ca.crt back, as upstream's does; nothing else is left.
    assert_eq!(
        server
            .kubectl(
                v,
                &[
                    "get",
                    "-n",
                    &ns,
                    "configmaps",
                    "--field-selector",
                    "metadata.name!=kube-root-ca.crt"
                ]
            )
            .stderr
            .trim(),
        format!("No resources found in {ns} namespace.")
    );

    // apply --prune lists every allow-listed kind with the selector and deletes what the
    // manifest no longer holds.
    let demo = |name: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","labels":{{"app":"demo"}}}}}}"#
        )
    };
    // Two JSON documents in a row, as kubectl reads a JSON stream.
    let both = format!("{}\n{}\n", demo("keep"), demo("drop"));
    with_stdin(&["apply", "-n", &ns, "-f", "-"], &both);
    let pruned = server.kubectl_with_stdin(
        v,
        &["apply", "-n", &ns, "--prune", "-l", "app=demo", "-f", "-"],
        Some(&demo("keep")),
    );
    assert!(pruned.ok, "{}", pruned.stderr);
    assert_eq!(
        pruned.stdout,
        "configmap/keep unchanged\nconfigmap/drop pruned\n"
    );
    assert_eq!(
        ok(&["get", "-n", &ns, "cm", "-l", "app=demo", "-o", "name"]),
        "configmap/keep\n"
    );

    server_side_apply(server, v, &ns);
    custom_resources(server, v, &ns);

    // The other GA groups are served too.
    let rc = format!("gvisor-{}", v.replace('.', "-"));
    let runtime_class = format!(
        r#"{{"apiVersion":"node.k8s.io/v1","kind":"RuntimeClass","metadata":{{"name":"{rc}"}},"handler":"runsc"}}"#
    );
    assert_eq!(
        with_stdin(&["create", "-f", "-"], &runtime_class),
        format!("runtimeclass.node.k8s.io/{rc} created\n")
    );
    let row = ok(&["get", "runtimeclass", &rc, "--no-headers"]);
    assert_eq!(
        row.split_whitespace().take(2).collect::<Vec<_>>(),
        [rc.as_str(), "runsc"]
    );
    for kind in [
        "crd",
        "hpa",
        "csr",
        "flowschemas",
        "validatingwebhookconfigurations",
        "csidrivers",
    ] {
        let out = server.kubectl(v, &["get", kind, "-A"]);
        assert!(
            out.ok && out.stderr.trim() == "No resources found",
            "{kind}: {}",
            out.stderr
        );
    }

    let resources = ok(&["api-resources", "--no-headers"]);
    assert!(
        resources
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["configmaps", "cm", "v1", "true", "ConfigMap"]),
        "{resources}"
    );
}

/// `kubectl apply --server-side`: managed fields, conflicts with other managers and
/// `--force-conflicts`, fields a manager stops applying, the upgrade from client-side apply,
/// and server dry runs.
fn server_side_apply(server: &KelpServer, v: &str, ns: &str) {
    let ssa = |args: &[&str], manifest: &str| {
        let mut all = vec!["apply", "--server-side", "-n", ns, "-f", "-"];
        all.extend_from_slice(args);
        server.kubectl_with_stdin(v, &all, Some(manifest))
    };
    let get = |args: &[&str]| {
        let mut all = vec!["get", "-n", ns];
        all.extend_from_slice(args);
        let out = server.kubectl(v, &all);
        assert!(out.ok, "kubectl {v} {all:?}: {}", out.stderr);
        out.stdout
    };
    let deployment = |replicas: u32, labels: &str| {
        format!(
            r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"ssa-web","labels":{{{labels}}}}},
            "spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"ssa"}}}},
            "template":{{"metadata":{{"labels":{{"app":"ssa"}}}},"spec":{{"containers":[{{"name":"web","image":"nginx:1.27"}}]}}}}}}}}"#
        )
    };
    let created = ssa(&[], &deployment(2, r#""app":"ssa","tier":"front""#));
    assert!(created.ok, "{}", created.stderr);
    assert_eq!(
        created.stdout,
        "deployment.apps/ssa-web serverside-applied\n"
    );
    let managed: serde_json::Value = serde_json::from_str(&get(&[
        "deployment",
        "ssa-web",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields}",
    ]))
    .unwrap();
    // The deployment controller's writes (revision annotation, status) are its own entries.
    let appliers: Vec<&serde_json::Value> = managed
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["manager"] != "kube-controller-manager")
        .collect();
    assert_eq!(appliers.len(), 1, "{managed}");
    assert_eq!(
        (&appliers[0]["manager"], &appliers[0]["operation"]),
        (&serde_json::json!("kubectl"), &serde_json::json!("Apply"))
    );
    let fields = &appliers[0]["fieldsV1"];
    assert_eq!(fields["f:spec"]["f:replicas"], serde_json::json!({}));
    assert_eq!(
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:image"],
        serde_json::json!({}),
        "{fields}"
    );
    // Defaults the server filled in belong to nobody.
    assert!(fields["f:spec"].get("f:strategy").is_none(), "{fields}");
    // kubectl shows no managed fields unless asked.
    assert!(!get(&["deployment", "ssa-web", "-o", "yaml"]).contains("managedFields"));

    // kubectl scale takes spec.replicas through the scale subresource; applying the old count
    // again conflicts with it, and --force-conflicts takes it back.
    let scaled = server.kubectl(
        v,
        &["scale", "-n", ns, "deployment/ssa-web", "--replicas=3"],
    );
    assert!(scaled.ok, "{}", scaled.stderr);
    let conflict = ssa(&[], &deployment(2, r#""app":"ssa","tier":"front""#));
    assert!(!conflict.ok);
    assert!(
        conflict.stderr.starts_with(&format!(
            "error: Apply failed with 1 conflict: conflict with \"kubectl.{v}\" with subresource \"scale\" using apps/v1: .spec.replicas\n"
        )),
        "{}",
        conflict.stderr
    );
    assert!(
        conflict.stderr.contains("--force-conflicts"),
        "{}",
        conflict.stderr
    );
    assert_eq!(
        get(&["deployment", "ssa-web", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    // Without the tier label: the applier removes what it no longer applies.
    let forced = ssa(&["--force-conflicts"], &deployment(2, r#""app":"ssa""#));
    assert!(forced.ok, "{}", forced.stderr);
    assert_eq!(
        forced.stdout,
        "deployment.apps/ssa-web serverside-applied\n"
    );
    assert_eq!(
        get(&[
            "deployment",
            "ssa-web",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.labels}"
        ]),
        r#"2 {"app":"ssa"}"#
    );
    assert_eq!(
        get(&[
            "deployment",
            "ssa-web",
            "--show-managed-fields",
            "-o",
            r#"jsonpath={.metadata.managedFields[?(@.manager!="kube-controller-manager")].manager}"#
        ]),
        "kubectl"
    );

    // Two appliers: a field the other owns with another value conflicts.
    let cm = |color: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"ssa-cm"}},"data":{{"color":"{color}"}}}}"#
        )
    };
    assert!(ssa(&["--field-manager=ci"], &cm("red")).ok);
    let theirs = ssa(&[], &cm("blue"));
    assert!(
        theirs.stderr.starts_with(
            "error: Apply failed with 1 conflict: conflict with \"ci\": .data.color\n"
        ),
        "{}",
        theirs.stderr
    );
    // The same value is shared.
    assert!(ssa(&[], &cm("red")).ok);
    // Applying it unchanged writes nothing.
    let rv = get(&["cm", "ssa-cm", "-o", "jsonpath={.metadata.resourceVersion}"]);
    assert!(ssa(&[], &cm("red")).ok);
    assert_eq!(
        get(&["cm", "ssa-cm", "-o", "jsonpath={.metadata.resourceVersion}"]),
        rv
    );
    assert_eq!(
        get(&[
            "cm",
            "ssa-cm",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}"
        ]),
        "ci kubectl"
    );
    // A server dry run reports the apply and changes nothing.
    let dry = ssa(&["--force-conflicts", "--dry-run=server"], &cm("blue"));
    assert!(dry.ok, "{}", dry.stderr);
    assert_eq!(
        dry.stdout,
        "configmap/ssa-cm serverside-applied (server dry run)\n"
    );
    assert_eq!(
        get(&["cm", "ssa-cm", "-o", "jsonpath={.data.color}"]),
        "red"
    );

    // From client-side to server-side apply: the fields kubectl applied before move to the
    // server-side manager without a conflict, and the annotation follows.
    let csa = server.kubectl_with_stdin(
        v,
        &["apply", "-n", ns, "-f", "-"],
        Some(&cm("green").replace("ssa-cm", "csa-cm")),
    );
    assert!(csa.ok, "{}", csa.stderr);
    let upgraded = ssa(&[], &cm("teal").replace("ssa-cm", "csa-cm"));
    assert!(upgraded.ok, "{}", upgraded.stderr);
    assert_eq!(upgraded.stdout, "configmap/csa-cm serverside-applied\n");
    let annotation = get(&[
        "cm",
        "csa-cm",
        "-o",
        r"jsonpath={.data.color} {.metadata.annotations.kubectl\.kubernetes\.io/last-applied-configuration}",
    ]);
    assert!(
        annotation.starts_with("teal {") && annotation.contains(r#""color":"teal""#),
        "{annotation}"
    );
}

/// A CustomResourceDefinition and its custom resources end to end: the definition is served
/// and established, kubectl validates against its published schema, prints its columns,
/// patches, scales, explains and applies, and deleting it takes its objects along.
fn custom_resources(server: &KelpServer, v: &str, ns: &str) {
    let ok = |args: &[&str]| {
        let out = server.kubectl(v, args);
        assert!(out.ok, "kubectl {v} {args:?} failed: {}", out.stderr);
        out.stdout
    };
    let with_stdin = |args: &[&str], input: &str| {
        let out = server.kubectl_with_stdin(v, args, Some(input));
        assert!(out.ok, "kubectl {v} {args:?} failed: {}", out.stderr);
        out.stdout
    };
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    selectableFields: [{jsonPath: .spec.image}, {jsonPath: .spec.replicas}]
    additionalPrinterColumns:
    - {name: Spec, type: string, jsonPath: .spec.cronSpec}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the cron tab runs.
            required: [cronSpec]
            properties:
              cronSpec: {type: string, description: When it runs.}
              image: {type: string}
              replicas: {type: integer, minimum: 0, maximum: 10, default: 1, description: How many run at once.}
          status:
            type: object
            properties:
              replicas: {type: integer}
"#;
    assert_eq!(
        with_stdin(&["apply", "-f", "-"], crd),
        "customresourcedefinition.apiextensions.k8s.io/crontabs.stable.example.com created\n"
    );
    assert_eq!(
        ok(&[
            "wait",
            "--for=condition=established",
            "--timeout=20s",
            "crd/crontabs.stable.example.com"
        ]),
        "customresourcedefinition.apiextensions.k8s.io/crontabs.stable.example.com condition met\n"
    );
    let resources = ok(&[
        "api-resources",
        "--api-group=stable.example.com",
        "--no-headers",
    ]);
    assert_eq!(
        resources.split_whitespace().collect::<Vec<_>>(),
        ["crontabs", "ct", "stable.example.com/v1", "true", "CronTab"]
    );

    let tab = |name: &str, extra: &str| {
        format!(
            "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: {name}\nspec:\n  cronSpec: \"*/5 * * * *\"\n  image: cron:1\n{extra}"
        )
    };
    // kubectl validates strictly against the published schema.
    let bogus = server.kubectl_with_stdin(
        v,
        &["create", "-n", ns, "-f", "-"],
        Some(&tab("bad", "  bogus: 1\n")),
    );
    assert!(!bogus.ok);
    assert!(
        bogus
            .stderr
            .contains(r#"strict decoding error: unknown field "spec.bogus""#),
        "{}",
        bogus.stderr
    );
    let invalid = server.kubectl_with_stdin(
        v,
        &["create", "-n", ns, "-f", "-"],
        Some(&tab("bad", "  replicas: 11\n")),
    );
    assert!(
        invalid.stderr.contains(
            "The CronTab \"bad\" is invalid: spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"
        ),
        "{}",
        invalid.stderr
    );
    assert_eq!(
        with_stdin(&["create", "-n", ns, "-f", "-"], &tab("nightly", "")),
        "crontab.stable.example.com/nightly created\n"
    );
    let table = ok(&["get", "-n", ns, "crontabs"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "SPEC", "REPLICAS", "AGE"]);
    assert_eq!(&lines[1][..6], ["nightly", "*/5", "*", "*", "*", "*"]);
    assert_eq!(
        lines[1][6], "1",
        "replicas defaulted by the schema: {table}"
    );

    assert_eq!(
        ok(&[
            "patch",
            "-n",
            ns,
            "ct",
            "nightly",
            "--type=merge",
            "-p",
            r#"{"spec":{"image":"cron:2"}}"#
        ]),
        "crontab.stable.example.com/nightly patched\n"
    );
    assert_eq!(
        ok(&["scale", "-n", ns, "ct", "nightly", "--replicas=3"]),
        "crontab.stable.example.com/nightly scaled\n"
    );
    assert_eq!(
        ok(&[
            "get",
            "-n",
            ns,
            "ct",
            "nightly",
            "-o",
            "jsonpath={.spec.image} {.spec.replicas}"
        ]),
        "cron:2 3"
    );
    // The version's selectable fields select (an integer by its text); others are refused.
    assert_eq!(
        ok(&[
            "get",
            "-n",
            ns,
            "ct",
            "--field-selector",
            "spec.image=cron:2,spec.replicas=3",
            "-o",
            "name"
        ]),
        "crontab.stable.example.com/nightly\n"
    );
    assert_eq!(
        ok(&[
            "get",
            "-n",
            ns,
            "ct",
            "--field-selector",
            "spec.replicas=4",
            "-o",
            "name"
        ]),
        ""
    );
    let unselectable = server.kubectl(
        v,
        &["get", "-n", ns, "ct", "--field-selector", "spec.cronSpec=x"],
    );
    assert!(
        !unselectable.ok
            && unselectable
                .stderr
                .contains("field label not supported: spec.cronSpec"),
        "{}",
        unselectable.stderr
    );
    let explained = ok(&["explain", "crontabs.spec.replicas"]);
    assert!(
        explained.contains("FIELD: replicas <integer>")
            && explained.contains("How many run at once."),
        "{explained}"
    );
    // Client-side apply of a custom resource is a merge patch; server-side apply works too.
    let applied = server.kubectl_with_stdin(
        v,
        &["apply", "-n", ns, "-f", "-"],
        Some(&tab("nightly", "  replicas: 2\n")),
    );
    assert!(applied.ok, "{}", applied.stderr);
    assert_eq!(
        applied.stdout,
        "crontab.stable.example.com/nightly configured\n"
    );
    assert_eq!(
        with_stdin(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-n",
                ns,
                "-f",
                "-"
            ],
            &tab("weekly", "  replicas: 4\n")
        ),
        "crontab.stable.example.com/weekly serverside-applied\n"
    );
    assert_eq!(
        ok(&["get", "-n", ns, "ct", "-o", "name"]),
        "crontab.stable.example.com/nightly\ncrontab.stable.example.com/weekly\n"
    );

    // A definition wanting a name another of its group holds is not accepted, nor served,
    // until the holder goes.
    let rival = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: tabs.stable.example.com\nspec:\n  group: stable.example.com\n  scope: Namespaced\n  names: {plural: tabs, kind: CronTab}\n  versions:\n  - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}\n";
    with_stdin(&["create", "-f", "-"], rival);
    let condition = |t: &str| {
        format!(
            "jsonpath={{.status.conditions[?(@.type==\"{t}\")].reason}}: {{.status.conditions[?(@.type==\"{t}\")].message}}"
        )
    };
    let names_accepted = condition("NamesAccepted");
    let rival_status = [
        "get",
        "crd",
        "tabs.stable.example.com",
        "-o",
        names_accepted.as_str(),
    ];
    let mut seen = String::new();
    for _ in 0..100 {
        seen = ok(&rival_status);
        if !seen.trim().ends_with(':') {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(seen, "ListKindConflict: \"CronTabList\" is already in use");
    assert_eq!(
        ok(&[
            "get",
            "crd",
            "tabs.stable.example.com",
            "-o",
            &condition("Established")
        ]),
        "NotAccepted: not all names are accepted"
    );
    let unserved = server.kubectl(
        v,
        &[
            "get",
            "--raw",
            "/apis/stable.example.com/v1/namespaces/default/tabs",
        ],
    );
    assert!(!unserved.ok, "{}", unserved.stdout);

    // Deleting the definition takes its objects with it; one held by a finalizer keeps the
    // definition Terminating, still served but refusing creates, until the finalizer goes.
    ok(&[
        "patch",
        "-n",
        ns,
        "ct",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    assert_eq!(
        ok(&[
            "delete",
            "crd",
            "crontabs.stable.example.com",
            "--wait=false"
        ]),
        "customresourcedefinition.apiextensions.k8s.io \"crontabs.stable.example.com\" deleted\n"
    );
    let eventually = |args: &[&str], want: &str| {
        let mut last = String::new();
        for _ in 0..100 {
            last = ok(args);
            if last == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("kubectl {args:?}: {last:?}, wanted {want:?}");
    };
    eventually(
        &[
            "get",
            "crd",
            "crontabs.stable.example.com",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Terminating\")].reason}",
        ],
        "InstanceDeletionInProgress",
    );
    eventually(
        &["get", "-n", ns, "ct", "-o", "name"],
        "crontab.stable.example.com/nightly\n",
    );
    let refused = server.kubectl_with_stdin(
        v,
        &["create", "-n", ns, "-f", "-"],
        Some(&tab("monthly", "")),
    );
    assert!(!refused.ok);
    assert_eq!(
        refused.stderr.trim(),
        "Error from server (MethodNotAllowed): error when creating \"STDIN\": create not allowed while custom resource definition is terminating"
    );
    ok(&[
        "patch",
        "-n",
        ns,
        "ct",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    ok(&[
        "wait",
        "--for=delete",
        "crd/crontabs.stable.example.com",
        "--timeout=60s",
    ]);
    // Its names free, the rival takes them.
    ok(&[
        "wait",
        "--for=condition=established",
        "--timeout=20s",
        "crd/tabs.stable.example.com",
    ]);
    assert_eq!(
        ok(&[
            "get",
            "crd",
            "tabs.stable.example.com",
            "-o",
            names_accepted.as_str()
        ]),
        "NoConflicts: no conflicts found"
    );
    ok(&["delete", "crd", "tabs.stable.example.com"]);
    // kubectl's discovery cache may still name the type; either way it is not found.
    let gone = server.kubectl(v, &["get", "-n", ns, "crontabs"]);
    assert!(!gone.ok);
    assert!(
        gone.stderr.contains("the server doesn't have a resource type \"crontabs\"")
            || gone.stderr.contains(
                "Unable to list \"stable.example.com/v1, Resource=crontabs\": the server could not find the requested resource"
            ),
        "{}",
        gone.stderr
    );
}

#[test]
fn kubectl_drives_kelp_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(dir.path(), &[]);
    session(&server, "1.32");
    session(&server, "1.33");
}

#[test]
fn kubectl_drives_kelp_on_postgres() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(dir.path(), &["--datastore-endpoint", &pg.url()]);
    assert!(
        server.ready_line.contains("datastore postgres://"),
        "{}",
        server.ready_line
    );
    session(&server, "1.32");
    session(&server, "1.33");
}
