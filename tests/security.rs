//! The security pipeline through the real kubectl: client certificates from `kelp kubeconfig`,
//! static and service-account tokens, RBAC with the bootstrap policy, escalation prevention,
//! impersonation and the reviews behind `kubectl auth`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::{KelpServer, Output};

const TOKENS: &str = "static-token-bob,bob,1002,\"ops,audit\"\n";

struct Cluster {
    server: KelpServer,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.csv");
        std::fs::write(&tokens, TOKENS).unwrap();
        let server = KelpServer::start(
            &dir.path().join("data"),
            &["--token-auth-file", tokens.to_str().unwrap()],
        );
        Cluster { server, dir }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn admin(&self, args: &[&str]) -> String {
        let out = self.server.kubectl("1.33", args);
        assert!(out.ok, "kubectl {args:?} failed: {}", out.stderr);
        out.stdout
    }

    /// A kubeconfig from `kelp kubeconfig` for this user and groups.
    fn user(&self, name: &str, groups: &[&str]) -> PathBuf {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kelp"));
        cmd.args(["kubeconfig", "--data-dir"]).arg(self.data());
        cmd.args(["--user", name]);
        for g in groups {
            cmd.args(["--group", g]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }

    /// A kubeconfig that presents a bearer token (no certificate).
    fn token(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        self.server
            .write_kubeconfig(&path, &format!("    token: {token}"));
        path
    }

    /// A kubeconfig without credentials the server knows: basic auth, which (as upstream)
    /// leaves a request anonymous. (With no user at all kubectl prompts for one.)
    fn anonymous(&self) -> PathBuf {
        let path = self.dir.path().join("anonymous.kubeconfig");
        self.server
            .write_kubeconfig(&path, "    username: nobody\n    password: nothing");
        path
    }

    fn kubectl(&self, config: &Path, v: &str, args: &[&str]) -> Output {
        self.server.kubectl_as(config, v, args)
    }
}

fn forbidden(out: &Output, message: &str) {
    assert!(!out.ok, "expected a refusal, got {:?}", out.stdout);
    assert!(
        out.stderr.contains(message),
        "{:?} lacks {message:?}",
        out.stderr
    );
}

/// kubectl's table output with runs of spaces as one.
fn squashed(out: &Output) -> String {
    out.stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A token that stopped authenticating gets 401 once the API server's token cache lets it go:
/// as upstream, a token's user is kept for 10 s after it authenticated (TokenSuccessCacheTTL).
fn unauthorized_after_cache(c: &Cluster, config: &Path, v: &str) {
    let since = std::time::Instant::now();
    loop {
        let out = c.kubectl(config, v, &["auth", "whoami"]);
        if !out.ok || since.elapsed() > std::time::Duration::from_secs(15) {
            return unauthorized(&out);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn unauthorized(out: &Output) {
    assert!(!out.ok, "expected 401, got {:?}", out.stdout);
    assert!(
        out.stderr.contains("Unauthorized"),
        "expected Unauthorized: {:?}",
        out.stderr
    );
}

#[test]
fn rbac_decides_what_each_user_may_do_and_can_i_says_so() {
    let c = Cluster::start();
    c.admin(&["create", "namespace", "dev"]);
    c.admin(&[
        "create",
        "rolebinding",
        "dev-edit",
        "--clusterrole=edit",
        "--group=dev",
        "-n",
        "dev",
    ]);
    c.admin(&["create", "serviceaccount", "builder", "-n", "dev"]);
    c.admin(&[
        "create",
        "rolebinding",
        "builder-view",
        "--clusterrole=view",
        "--serviceaccount=dev:builder",
        "-n",
        "dev",
    ]);
    let alice = c.user("alice", &["dev"]);
    let token = c.admin(&["create", "token", "builder", "-n", "dev"]);
    let builder = c.token("builder", token.trim());

    for v in ["1.32", "1.33"] {
        let who = c.kubectl(&alice, v, &["auth", "whoami"]);
        assert!(who.ok, "{}", who.stderr);
        let rows: Vec<Vec<&str>> = who
            .stdout
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["ATTRIBUTE", "VALUE"]);
        assert_eq!(rows[1], ["Username", "alice"]);
        assert_eq!(rows[2], ["Groups", "[dev", "system:authenticated]"]);

        let name = format!("web-{}", v.replace('.', "-"));
        let created = c.kubectl(
            &alice,
            v,
            &["create", "deployment", &name, "--image=nginx", "-n", "dev"],
        );
        assert!(created.ok, "{}", created.stderr);
        assert_eq!(
            created.stdout.trim(),
            format!("deployment.apps/{name} created")
        );
        forbidden(
            &c.kubectl(
                &alice,
                v,
                &[
                    "create",
                    "deployment",
                    &name,
                    "--image=nginx",
                    "-n",
                    "default",
                ],
            ),
            "deployments.apps is forbidden: User \"alice\" cannot create resource \"deployments\" in API group \"apps\" in the namespace \"default\"",
        );
        forbidden(
            &c.kubectl(&alice, v, &["get", "secrets", "-A"]),
            "secrets is forbidden: User \"alice\" cannot list resource \"secrets\" in API group \"\" at the cluster scope",
        );
        let sa = c.kubectl(
            &builder,
            v,
            &["get", "deployments", "-n", "dev", "-o", "name"],
        );
        assert!(sa.ok, "{}", sa.stderr);
        assert!(
            sa.stdout.contains(&format!("deployment.apps/{name}")),
            "{}",
            sa.stdout
        );
        forbidden(
            &c.kubectl(&builder, v, &["delete", "deployment", &name, "-n", "dev"]),
            "deployments.apps \"web",
        );
    }

    // can-i for admin, alice, the service account and anonymous (impersonated by the admin,
    // since anonymous may not ask): (args, admin, alice, builder, anonymous).
    let matrix: &[(&[&str], [bool; 4])] = &[
        (
            &["create", "deployments", "-n", "dev"],
            [true, true, false, false],
        ),
        (&["get", "pods", "-n", "dev"], [true, true, true, false]),
        (&["delete", "pods", "-n", "dev"], [true, true, false, false]),
        (&["get", "secrets", "-n", "dev"], [true, true, false, false]),
        (&["list", "secrets", "-A"], [true, false, false, false]),
        (
            &["create", "deployments", "-n", "default"],
            [true, false, false, false],
        ),
        (&["get", "nodes"], [true, false, false, false]),
        (&["create", "clusterroles"], [true, false, false, false]),
        (&["get", "/healthz"], [true, true, true, true]),
        (&["get", "/api"], [true, true, true, false]),
        (
            &["create", "selfsubjectaccessreviews"],
            [true, true, true, false],
        ),
    ];
    let admin = c.server.kubeconfig.clone();
    for (args, expected) in matrix {
        for (who, config, allowed) in [
            ("admin", &admin, expected[0]),
            ("alice", &alice, expected[1]),
            ("builder", &builder, expected[2]),
        ] {
            let mut full = vec!["auth", "can-i"];
            full.extend_from_slice(args);
            let out = c.kubectl(config, "1.33", &full);
            let answer = if allowed { "yes" } else { "no" };
            assert_eq!(
                out.stdout.trim(),
                answer,
                "{who} can-i {args:?}: {}",
                out.stderr
            );
            assert_eq!(out.ok, allowed, "{who}: exit status of can-i {args:?}");
        }
        // Anonymous may not ask for itself: the admin asks with a SubjectAccessReview.
        let (verb, rest) = (args[0], &args[1..]);
        let mut attributes = match rest[0].strip_prefix('/') {
            Some(_) => json!({"nonResourceAttributes": {"verb": verb, "path": rest[0]}}),
            None => json!({"resourceAttributes": {"verb": verb, "resource": rest[0]}}),
        };
        if let Some(ns) = rest.iter().position(|a| *a == "-n").map(|i| rest[i + 1]) {
            attributes["resourceAttributes"]["namespace"] = json!(ns);
        }
        if rest[0] == "deployments" {
            attributes["resourceAttributes"]["group"] = json!("apps");
        }
        if rest[0] == "clusterroles" {
            attributes["resourceAttributes"]["group"] = json!("rbac.authorization.k8s.io");
        }
        if rest[0] == "selfsubjectaccessreviews" {
            attributes["resourceAttributes"]["group"] = json!("authorization.k8s.io");
        }
        let mut spec = attributes;
        spec["user"] = json!("system:anonymous");
        spec["groups"] = json!(["system:unauthenticated"]);
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
        });
        let out = c.server.kubectl_with_stdin(
            "1.33",
            &["create", "-f", "-", "-o", "jsonpath={.status.allowed}"],
            Some(&review.to_string()),
        );
        assert!(out.ok, "{}", out.stderr);
        assert_eq!(
            out.stdout,
            expected[3].to_string(),
            "anonymous may {args:?}"
        );
    }

    // can-i --list: the rules of edit in dev, as kubectl prints them.
    let list = c.kubectl(&alice, "1.33", &["auth", "can-i", "--list", "-n", "dev"]);
    assert!(list.ok, "{}", list.stderr);
    let header: Vec<&str> = list
        .stdout
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .filter(|s| !s.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        ["Resources", "Non-Resource URLs", "Resource Names", "Verbs"]
    );
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with("deployments.apps ")
                && l.contains("[create delete deletecollection patch update get list watch]")),
        "{}",
        list.stdout
    );

    // Anonymous: the public health and version paths only.
    let anonymous = c.anonymous();
    let healthz = c.kubectl(&anonymous, "1.33", &["get", "--raw", "/healthz"]);
    assert_eq!(
        (healthz.ok, healthz.stdout.as_str()),
        (true, "ok"),
        "{}",
        healthz.stderr
    );
    forbidden(
        &c.kubectl(&anonymous, "1.33", &["get", "--raw", "/api/v1/namespaces"]),
        "namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope",
    );
}

#[test]
fn escalation_needs_the_rules_or_bind_and_impersonation_needs_impersonate() {
    let c = Cluster::start();
    c.admin(&["create", "namespace", "dev"]);
    c.admin(&[
        "create",
        "rolebinding",
        "alice-admin",
        "--clusterrole=admin",
        "--user=alice",
        "-n",
        "dev",
    ]);
    let alice = c.user("alice", &[]);
    let v = "1.33";

    // A role with rules alice holds in dev is fine; one with more is refused, with upstream's
    // message.
    let ok = c.kubectl(
        &alice,
        v,
        &[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list",
            "--resource=pods",
            "-n",
            "dev",
        ],
    );
    assert!(ok.ok, "{}", ok.stderr);
    forbidden(
        &c.kubectl(
            &alice,
            v,
            &[
                "create",
                "role",
                "node-reader",
                "--verb=get",
                "--resource=nodes",
                "-n",
                "dev",
            ],
        ),
        "roles.rbac.authorization.k8s.io \"node-reader\" is forbidden: user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}",
    );
    forbidden(
        &c.kubectl(
            &alice,
            v,
            &[
                "create",
                "rolebinding",
                "root",
                "--clusterrole=cluster-admin",
                "--user=alice",
                "-n",
                "dev",
            ],
        ),
        "rolebindings.rbac.authorization.k8s.io \"root\" is forbidden: user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:",
    );
    // Binding a role she holds works.
    let ok = c.kubectl(
        &alice,
        v,
        &[
            "create",
            "rolebinding",
            "readers",
            "--role=pod-reader",
            "--group=readers",
            "-n",
            "dev",
        ],
    );
    assert!(ok.ok, "{}", ok.stderr);

    // With bind on cluster-admin, the binding is allowed.
    c.admin(&[
        "create",
        "role",
        "binder",
        "--verb=bind",
        "--resource=clusterroles.rbac.authorization.k8s.io",
        "--resource-name=cluster-admin",
        "-n",
        "dev",
    ]);
    c.admin(&[
        "create",
        "rolebinding",
        "alice-binder",
        "--role=binder",
        "--user=alice",
        "-n",
        "dev",
    ]);
    let bound = c.kubectl(
        &alice,
        v,
        &[
            "create",
            "rolebinding",
            "root",
            "--clusterrole=cluster-admin",
            "--user=alice",
            "-n",
            "dev",
        ],
    );
    assert!(bound.ok, "{}", bound.stderr);
    assert_eq!(
        bound.stdout.trim(),
        "rolebinding.rbac.authorization.k8s.io/root created"
    );

    // Impersonation needs the impersonate verb.
    forbidden(
        &c.kubectl(&alice, v, &["get", "pods", "-n", "dev", "--as=bob"]),
        "users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
    );
    let admin = c.server.kubeconfig.clone();
    let who = c.kubectl(
        &admin,
        v,
        &["auth", "whoami", "--as=carol", "--as-group=qa"],
    );
    assert!(who.ok, "{}", who.stderr);
    assert!(squashed(&who).contains("Username carol"), "{}", who.stdout);
    assert!(
        squashed(&who).contains("[qa system:authenticated]"),
        "{}",
        who.stdout
    );
    forbidden(
        &c.kubectl(&admin, v, &["get", "pods", "-n", "dev", "--as=carol"]),
        "pods is forbidden: User \"carol\" cannot list resource \"pods\" in API group \"\" in the namespace \"dev\"",
    );
}

#[test]
fn tokens_authenticate_until_they_expire_or_their_pod_is_gone_and_bad_credentials_get_401() {
    let c = Cluster::start();
    let v = "1.33";
    c.admin(&["create", "namespace", "dev"]);
    c.admin(&["create", "serviceaccount", "builder", "-n", "dev"]);
    c.admin(&["run", "worker", "--image=busybox", "-n", "dev"]);
    let pod_token = c.admin(&[
        "create",
        "token",
        "builder",
        "-n",
        "dev",
        "--bound-object-kind=Pod",
        "--bound-object-name=worker",
        "--duration=10m",
    ]);
    let bound = c.token("bound", pod_token.trim());
    let who = c.kubectl(&bound, v, &["auth", "whoami"]);
    assert!(who.ok, "{}", who.stderr);
    assert!(
        squashed(&who).contains("Username system:serviceaccount:dev:builder"),
        "{}",
        who.stdout
    );
    assert!(
        squashed(&who)
            .contains("[system:serviceaccounts system:serviceaccounts:dev system:authenticated]"),
        "{}",
        who.stdout
    );
    assert!(
        squashed(&who).contains("Extra: authentication.kubernetes.io/pod-name [worker]"),
        "{}",
        who.stdout
    );

    // The TokenReview of the same token names the same user.
    let review = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": pod_token.trim()},
    });
    let out = c.server.kubectl_with_stdin(
        v,
        &["create", "-f", "-", "-o", "json"],
        Some(&review.to_string()),
    );
    assert!(out.ok, "{}", out.stderr);
    let reviewed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(reviewed["status"]["authenticated"], true);
    assert_eq!(
        reviewed["status"]["user"]["username"],
        "system:serviceaccount:dev:builder"
    );
    assert_eq!(
        reviewed["status"]["audiences"],
        json!(["https://kubernetes.default.svc.cluster.local"])
    );

    // Service accounts may read the issuer's discovery documents.
    let discovery = c.kubectl(
        &bound,
        v,
        &["get", "--raw", "/.well-known/openid-configuration"],
    );
    assert!(discovery.ok, "{}", discovery.stderr);
    let discovery: serde_json::Value = serde_json::from_str(&discovery.stdout).unwrap();
    assert_eq!(
        discovery["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    let jwks = c.kubectl(&bound, v, &["get", "--raw", "/openid/v1/jwks"]);
    assert!(jwks.stdout.contains("\"alg\":\"ES256\""), "{}", jwks.stdout);

    // Gone with its pod.
    c.admin(&["delete", "pod", "worker", "-n", "dev", "--wait"]);
    unauthorized_after_cache(&c, &bound, v);

    // Expired, and signed by another key: 401. The signing key is in the data dir.
    let key = std::fs::read_to_string(c.data().join("pki/sa.key")).unwrap();
    let ours = kelp_auth::serviceaccount::ServiceAccountKeys::from_pem(
        &key,
        kelp_auth::serviceaccount::DEFAULT_ISSUER,
    )
    .unwrap();
    let uid = c.admin(&[
        "get",
        "sa",
        "builder",
        "-n",
        "dev",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let spec = |issued_at: i64| kelp_auth::serviceaccount::TokenSpec {
        namespace: "dev",
        service_account: kelp_auth::serviceaccount::ObjectRef {
            name: "builder".into(),
            uid: uid.clone(),
        },
        audiences: &ours.audiences,
        issued_at,
        expiration_seconds: 600,
        pod: None,
        secret: None,
        node: None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (fresh, _) = ours.issue(&spec(now));
    let who = c.kubectl(&c.token("fresh", &fresh), v, &["auth", "whoami"]);
    assert!(
        who.ok,
        "a token signed by the data dir's key works: {}",
        who.stderr
    );
    let (expired, _) = ours.issue(&spec(now - 3600));
    unauthorized(&c.kubectl(
        &c.token("expired", &expired),
        v,
        &["get", "pods", "-n", "dev"],
    ));
    let elsewhere = tempfile::tempdir().unwrap();
    let theirs = kelp_auth::serviceaccount::ServiceAccountKeys::load_or_create(
        elsewhere.path(),
        kelp_auth::serviceaccount::DEFAULT_ISSUER,
    )
    .unwrap();
    let (foreign, _) = theirs.issue(&spec(now));
    unauthorized(&c.kubectl(
        &c.token("foreign", &foreign),
        v,
        &["get", "pods", "-n", "dev"],
    ));

    // Bootstrap tokens: a kube-system secret of type bootstrap.kubernetes.io/token.
    c.admin(&[
        "create",
        "secret",
        "generic",
        "bootstrap-token-abcdef",
        "-n",
        "kube-system",
        "--type=bootstrap.kubernetes.io/token",
        "--from-literal=token-id=abcdef",
        "--from-literal=token-secret=0123456789abcdef",
        "--from-literal=usage-bootstrap-authentication=true",
        "--from-literal=auth-extra-groups=system:bootstrappers:kubeadm:default-node-token",
    ]);
    let joiner = c.token("joiner", "abcdef.0123456789abcdef");
    let who = c.kubectl(&joiner, v, &["auth", "whoami"]);
    assert!(who.ok, "{}", who.stderr);
    assert!(
        squashed(&who).contains("Username system:bootstrap:abcdef"),
        "{}",
        who.stdout
    );
    assert!(
        squashed(&who).contains("[system:bootstrappers system:bootstrappers:kubeadm:default-node-token system:authenticated]"),
        "{}",
        who.stdout
    );
    unauthorized(&c.kubectl(
        &c.token("wrong", "abcdef.0000000000000000"),
        v,
        &["auth", "whoami"],
    ));
    c.admin(&[
        "create",
        "secret",
        "generic",
        "bootstrap-token-expire",
        "-n",
        "kube-system",
        "--type=bootstrap.kubernetes.io/token",
        "--from-literal=token-id=expire",
        "--from-literal=token-secret=0123456789abcdef",
        "--from-literal=usage-bootstrap-authentication=true",
        "--from-literal=expiration=2020-01-01T00:00:00Z",
    ]);
    unauthorized(&c.kubectl(
        &c.token("late", "expire.0123456789abcdef"),
        v,
        &["auth", "whoami"],
    ));

    // The static token file.
    let bob = c.token("bob", "static-token-bob");
    let who = c.kubectl(&bob, v, &["auth", "whoami"]);
    assert!(who.ok, "{}", who.stderr);
    assert!(squashed(&who).contains("Username bob"), "{}", who.stdout);
    assert!(squashed(&who).contains("UID 1002"), "{}", who.stdout);
    assert!(
        squashed(&who).contains("[ops audit system:authenticated]"),
        "{}",
        who.stdout
    );
    unauthorized(&c.kubectl(&c.token("unknown", "no-such-token"), v, &["get", "pods"]));

    // Certificates from another CA, or expired ones: 401, and the server keeps serving.
    let other = kelp_auth::Pki::load_or_create(elsewhere.path()).unwrap();
    let write_cert = |name: &str, creds: kelp_auth::Credentials| {
        let path = c.dir.path().join(format!("{name}.kubeconfig"));
        let config = kelp_auth::kubeconfig(
            &c.server.url,
            &std::fs::read_to_string(c.data().join("pki/ca.crt")).unwrap(),
            name,
            &creds,
        );
        std::fs::write(&path, config).unwrap();
        path
    };
    let mallory = write_cert(
        "mallory",
        other.client("mallory", &["system:masters"]).unwrap(),
    );
    unauthorized(&c.kubectl(&mallory, v, &["get", "pods"]));
    let ours_pki = kelp_auth::Pki::load_or_create(&c.data()).unwrap();
    let stale = write_cert(
        "stale",
        ours_pki
            .client_valid("stale", &["system:masters"], (2020, 1, 1), (2021, 1, 1))
            .unwrap(),
    );
    unauthorized(&c.kubectl(&stale, v, &["get", "pods"]));
    assert_eq!(c.admin(&["get", "--raw", "/readyz"]), "ok");
}

#[test]
fn kubelets_reach_only_what_their_pods_need_and_write_only_their_own() {
    let c = Cluster::start();
    let v = "1.33";
    let n1 = c.user("system:node:n1", &["system:nodes"]);
    let node = |name: &str| {
        format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}"}}}}"#)
    };
    let create_as = |config: &Path, obj: &str| {
        let path = c.dir.path().join("obj.json");
        std::fs::write(&path, obj).unwrap();
        c.kubectl(config, v, &["create", "-f", path.to_str().unwrap()])
    };
    let own = create_as(&n1, &node("n1"));
    assert!(own.ok, "{}", own.stderr);
    forbidden(
        &create_as(&n1, &node("n2")),
        "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\"",
    );

    c.admin(&[
        "create",
        "secret",
        "generic",
        "mounted",
        "--from-literal=k=v",
    ]);
    c.admin(&[
        "create",
        "secret",
        "generic",
        "elsewhere",
        "--from-literal=k=v",
    ]);
    let pod = |name: &str, node: &str, secret: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"nodeName":"{node}","containers":[{{"name":"c","image":"nginx"}}],"volumes":[{{"name":"s","secret":{{"secretName":"{secret}"}}}}]}}}}"#
        )
    };
    let admin = c.server.kubeconfig.clone();
    assert!(create_as(&admin, &pod("here", "n1", "mounted")).ok);
    assert!(create_as(&admin, &pod("there", "n2", "elsewhere")).ok);

    let got = c.kubectl(&n1, v, &["get", "secret", "mounted", "-o", "name"]);
    assert_eq!(got.stdout.trim(), "secret/mounted", "{}", got.stderr);
    forbidden(
        &c.kubectl(&n1, v, &["get", "secret", "elsewhere"]),
        "secrets \"elsewhere\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\"",
    );
    forbidden(
        &c.kubectl(&n1, v, &["get", "secrets"]),
        "cannot list resource \"secrets\"",
    );
    // The system:node rules: pods may be read.
    let pods = c.kubectl(&n1, v, &["get", "pods", "-o", "name"]);
    assert!(
        pods.ok && pods.stdout.contains("pod/here"),
        "{}",
        pods.stderr
    );

    // Its own lease only.
    let lease = |name: &str| {
        format!(
            r#"{{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{{"name":"{name}","namespace":"kube-node-lease"}},"spec":{{"holderIdentity":"{name}"}}}}"#
        )
    };
    assert!(create_as(&n1, &lease("n1")).ok);
    forbidden(
        &create_as(&n1, &lease("n2")),
        "can only access node lease with the same name as the requesting node",
    );

    // Only mirror pods, and only the status of its own pods.
    forbidden(
        &create_as(&n1, &pod("sneaky", "n1", "mounted")),
        "pod does not have \"kubernetes.io/config.mirror\" annotation, node \"n1\" can only create mirror pods",
    );
    // (kubectl patch --subresource reads pods/status first, which kubelets may not: the
    // status is replaced, as a kubelet's status manager writes it.)
    let status = |name: &str| {
        let current = c.admin(&["get", "pod", name, "-o", "json"]);
        let mut pod: serde_json::Value = serde_json::from_str(&current).unwrap();
        pod["status"]["phase"] = json!("Running");
        let path = c.dir.path().join("status.json");
        std::fs::write(&path, pod.to_string()).unwrap();
        c.kubectl(
            &n1,
            v,
            &[
                "replace",
                "--subresource=status",
                "-f",
                path.to_str().unwrap(),
            ],
        )
    };
    let patched = status("here");
    assert!(patched.ok, "{}", patched.stderr);
    forbidden(
        &status("there"),
        "node \"n1\" can only update pod status for pods with spec.nodeName set to itself",
    );
}

/// Polls kubectl until `done` accepts its output (20 s at most).
fn wait_for(c: &Cluster, args: &[&str], what: &str, done: impl Fn(&Output) -> bool) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = c.server.kubectl("1.33", args);
        if done(&out) {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {} {}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn pods_run_as_service_accounts_with_mounted_tokens_and_token_secrets_are_filled() {
    let c = Cluster::start();
    let v = "1.33";
    c.admin(&["create", "namespace", "team"]);
    // ServiceAccount admission: the default account and the projected token volume.
    c.admin(&["run", "app", "--image=busybox", "-n", "team"]);
    let pod: serde_json::Value =
        serde_json::from_str(&c.admin(&["get", "pod", "app", "-n", "team", "-o", "json"])).unwrap();
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    let volume = &pod["spec"]["volumes"][0];
    let volume_name = volume["name"].as_str().unwrap();
    assert!(
        volume_name.starts_with("kube-api-access-") && volume_name.len() == 21,
        "{volume}"
    );
    assert_eq!(
        volume["projected"]["sources"],
        json!([
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ])
    );
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": volume_name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}])
    );
    // A missing account refuses the pod, as upstream words it.
    let ghost = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "haunted", "namespace": "team"},
        "spec": {"serviceAccountName": "ghost", "containers": [{"name": "c", "image": "busybox"}]},
    });
    let out = c
        .server
        .kubectl_with_stdin(v, &["create", "-f", "-"], Some(&ghost.to_string()));
    forbidden(
        &out,
        "pods \"haunted\" is forbidden: error looking up service account team/ghost: serviceaccount \"ghost\" not found",
    );
    // Mountable secrets, when the account enforces them.
    c.admin(&["create", "serviceaccount", "strict", "-n", "team"]);
    c.admin(&[
        "annotate",
        "serviceaccount",
        "strict",
        "-n",
        "team",
        "kubernetes.io/enforce-mountable-secrets=true",
    ]);
    let mut leaky = ghost.clone();
    leaky["metadata"]["name"] = json!("leaky");
    leaky["spec"]["serviceAccountName"] = json!("strict");
    leaky["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "other"}}]);
    let out = c
        .server
        .kubectl_with_stdin(v, &["create", "-f", "-"], Some(&leaky.to_string()));
    forbidden(
        &out,
        "pods \"leaky\" is forbidden: volume with secret.secretName=\"other\" is not allowed because service account strict does not reference that secret",
    );

    // A token secret must name its account.
    let unnamed = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "unnamed", "namespace": "team"},
    });
    let out = c
        .server
        .kubectl_with_stdin(v, &["create", "-f", "-"], Some(&unnamed.to_string()));
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("metadata.annotations[kubernetes.io/service-account.name]: Required value"),
        "{}",
        out.stderr
    );

    // The tokens controller fills a token secret; the token authenticates as the account.
    c.admin(&["create", "serviceaccount", "builder", "-n", "team"]);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "builder-token", "namespace": "team",
                     "annotations": {"kubernetes.io/service-account.name": "builder"}},
    });
    let out = c
        .server
        .kubectl_with_stdin(v, &["create", "-f", "-"], Some(&secret.to_string()));
    assert!(out.ok, "{}", out.stderr);
    let filled = wait_for(
        &c,
        &["get", "secret", "builder-token", "-n", "team", "-o", "json"],
        "the token secret to be filled",
        |out| out.stdout.contains("\"token\""),
    );
    let filled: serde_json::Value = serde_json::from_str(&filled.stdout).unwrap();
    let decode = |key: &str| {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(filled["data"][key].as_str().unwrap())
            .unwrap();
        String::from_utf8(bytes).unwrap()
    };
    assert_eq!(decode("namespace"), "team");
    assert_eq!(
        decode("ca.crt"),
        std::fs::read_to_string(c.data().join("pki/ca.crt")).unwrap()
    );
    let sa_uid = c.admin(&[
        "get",
        "sa",
        "builder",
        "-n",
        "team",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    assert_eq!(
        filled["metadata"]["annotations"]["kubernetes.io/service-account.uid"],
        json!(sa_uid)
    );
    let legacy = c.token("legacy", &decode("token"));
    let who = c.kubectl(&legacy, v, &["auth", "whoami"]);
    assert!(who.ok, "{}", who.stderr);
    assert!(
        squashed(&who).contains("Username system:serviceaccount:team:builder"),
        "{}",
        who.stdout
    );
    // The account deleted: its token secret goes, and the token stops working.
    c.admin(&["delete", "serviceaccount", "builder", "-n", "team"]);
    wait_for(
        &c,
        &["get", "secret", "builder-token", "-n", "team"],
        "the token secret to be deleted",
        |out| out.stderr.contains("NotFound"),
    );
    unauthorized_after_cache(&c, &legacy, v);
}

#[test]
fn bootstrap_roles_aggregate_and_survive_restarts_without_losing_user_edits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = KelpServer::start(&data, &[]);
    let ok = |server: &KelpServer, args: &[&str]| {
        let out = server.kubectl("1.33", args);
        assert!(out.ok, "kubectl {args:?}: {}", out.stderr);
        out.stdout
    };
    let apply = |server: &KelpServer, yaml: &str| {
        let out = server.kubectl_with_stdin("1.33", &["apply", "-f", "-"], Some(yaml));
        assert!(out.ok, "{}", out.stderr);
    };
    // Aggregation: a role labelled aggregate-to-edit lends its rules to `edit`, and whoever
    // holds edit may do what it grants.
    apply(
        &server,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: widgets-edit\n  labels: {rbac.authorization.k8s.io/aggregate-to-edit: \"true\"}\nrules:\n- {apiGroups: [example.com], resources: [widgets], verbs: [get, list]}\n",
    );
    ok(&server, &["create", "namespace", "dev"]);
    ok(
        &server,
        &[
            "create",
            "rolebinding",
            "alice-edit",
            "--clusterrole=edit",
            "--user=alice",
            "-n",
            "dev",
        ],
    );
    // (kubectl's can-i sends a resource it cannot discover without its group: ask directly.)
    let review = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"alice","resourceAttributes":{"namespace":"dev","verb":"list","group":"example.com","resource":"widgets"}}}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let allowed = server.kubectl_with_stdin(
            "1.33",
            &["create", "-f", "-", "-o", "jsonpath={.status.allowed}"],
            Some(review),
        );
        if allowed.stdout.trim() == "true" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "edit never aggregated widgets-edit: {} {}",
            allowed.stdout,
            allowed.stderr
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let edit = ok(&server, &["get", "clusterrole", "edit", "-o", "json"]);
    assert!(edit.contains("\"widgets\""), "{edit}");

    // User edits to bootstrap roles: an added rule stays; a role marked autoupdate=false
    // keeps what the user left; a deleted bootstrap role comes back at the next start.
    ok(
        &server,
        &[
            "patch",
            "clusterrole",
            "system:basic-user",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/rules/-","value":{"apiGroups":[""],"resources":["configmaps"],"verbs":["get"]}}]"#,
        ],
    );
    ok(
        &server,
        &[
            "annotate",
            "--overwrite",
            "clusterrole",
            "system:public-info-viewer",
            "rbac.authorization.kubernetes.io/autoupdate=false",
        ],
    );
    ok(
        &server,
        &[
            "patch",
            "clusterrole",
            "system:public-info-viewer",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/rules","value":[{"nonResourceURLs":["/version"],"verbs":["get"]}]}]"#,
        ],
    );
    ok(&server, &["delete", "clusterrole", "system:heapster"]);
    server.stop();
    let server = KelpServer::start(&data, &[]);
    let basic: serde_json::Value = serde_json::from_str(&ok(
        &server,
        &["get", "clusterrole", "system:basic-user", "-o", "json"],
    ))
    .unwrap();
    let rules = basic["rules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["resources"] == json!(["configmaps"])),
        "the user's rule was dropped: {rules:?}"
    );
    assert!(
        rules
            .iter()
            .any(|r| r["resources"]
                == json!(["selfsubjectaccessreviews", "selfsubjectrulesreviews"])),
        "the bootstrap rule is missing: {rules:?}"
    );
    let info: serde_json::Value = serde_json::from_str(&ok(
        &server,
        &[
            "get",
            "clusterrole",
            "system:public-info-viewer",
            "-o",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(
        info["rules"],
        json!([{"nonResourceURLs": ["/version"], "verbs": ["get"]}]),
        "autoupdate=false is left as the user made it"
    );
    ok(&server, &["get", "clusterrole", "system:heapster"]);
}
