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
    assert_eq!(
        [&rows[1][..4], &rows[1][5..]].concat(),
        ["web", "0/2", "0", "0", "nginx", "nginx:1.27", "app=web"]
    );
    k(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":3},"status":{"replicas":9}}"#,
    ]);
    let status =
        r#"{"status":{"replicas":3,"readyReplicas":3,"updatedReplicas":3,"availableReplicas":3}}"#;
    assert_eq!(
        k(&[
            "patch",
            "deployment",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            status
        ]),
        "deployment.apps/web patched\n"
    );
    assert_eq!(
        k(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.metadata.generation} {.spec.replicas} {.status.readyReplicas} {.spec.template.spec.restartPolicy}"
        ]),
        "2 3 3 Always"
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
    assert_eq!(k(&["get", "pods"]), "");

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
        "configmap/app\nconfigmap/page-0\nconfigmap/page-1\nconfigmap/page-2\nconfigmap/page-3\nconfigmap/page-4\n"
    );
    let all = ok(&["get", "configmaps", "-A"]);
    let rows: Vec<Vec<&str>> = all
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAMESPACE", "NAME", "DATA", "AGE"]);
    assert_eq!(rows.iter().filter(|r| r[0] == ns).count(), 6, "{all}");

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

    let resources = ok(&["api-resources", "--no-headers"]);
    assert!(
        resources
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["configmaps", "cm", "v1", "true", "ConfigMap"]),
        "{resources}"
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
